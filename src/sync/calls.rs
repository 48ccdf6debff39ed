//! Telephony sync: calls read by time window from the end of the last window minus the
//! overlap, keyed by the provider's id so the overlap never duplicates a call.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::domain::Ts;
use crate::store::Store;
use crate::store::cursors::SyncRun;
use crate::telephony::Telephony;

use super::{
    SyncError, SyncOptions, SyncReport, check, chrono_dur, remote_err, stopped_if, store_err,
};

/// Reads new and updated calls of `tel` into the mirror.
pub async fn sync_telephony(
    store: &Store,
    tenant: &str,
    tel: &dyn Telephony,
    opts: SyncOptions,
    now: Ts,
) -> Result<SyncReport, SyncError> {
    sync_telephony_until(store, tenant, tel, opts, now, &CancellationToken::new()).await
}

/// [`sync_telephony`] that does not start once `stop` is cancelled. The client itself stops
/// paging (its `stop` is the same token); the calls read so far are then read again at the
/// next start (the cursor moves only after a complete read).
pub(crate) async fn sync_telephony_until(
    store: &Store,
    tenant: &str,
    tel: &dyn Telephony,
    opts: SyncOptions,
    now: Ts,
    stop: &CancellationToken,
) -> Result<SyncReport, SyncError> {
    let source = tel.kind().as_str();
    let started = Instant::now();
    let started_at = Utc::now();
    let result = async {
        check(stop, source)?;
        let from = match store
            .cursor(tenant, source, "calls")
            .await
            .map_err(store_err(source, "calls"))?
        {
            Some(text) => serde_json::from_str::<Ts>(&text)
                .map(|t| t - chrono_dur(opts.telephony_overlap))
                .unwrap_or(now - chrono_dur(opts.telephony_initial)),
            None => now - chrono_dur(opts.telephony_initial),
        };
        let calls = tel
            .calls(from, now)
            .await
            .map_err(remote_err(source, "calls"))?;
        store
            .upsert_calls(tenant, &calls)
            .await
            .map_err(store_err(source, "calls"))?;
        store
            .put_cursor(
                tenant,
                source,
                "calls",
                &serde_json::to_string(&now).expect("time serialises"),
            )
            .await
            .map_err(store_err(source, "calls"))?;
        Ok::<usize, SyncError>(calls.len())
    }
    .await
    .map_err(|e| stopped_if(e, source, stop));
    let run = SyncRun {
        source: source.to_string(),
        started_at,
        finished_at: Some(Utc::now()),
        ok: result.is_ok(),
        items: *result.as_ref().unwrap_or(&0) as i64,
        error: result.as_ref().err().map(|e| e.to_string()),
    };
    store
        .record_sync_run(tenant, &run)
        .await
        .map_err(store_err(source, "runs"))?;
    let n = result?;
    Ok(SyncReport {
        source: source.to_string(),
        items: BTreeMap::from([("calls".to_string(), n)]),
        elapsed: started.elapsed(),
    })
}
