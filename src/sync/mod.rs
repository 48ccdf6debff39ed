//! Incremental sync of sources into the mirror.
//!
//! CRM: for each entity kind, read pages from the stored cursor and save each page together with
//! the cursor that follows it, in one transaction. A crash between pages therefore resumes at the
//! first unsaved page; nothing is skipped and re-reading a page only re-upserts the same rows.
//! When a pass ends, the next one starts `overlap` before the newest change it saw, so records
//! written while the pass ran are read again rather than missed.
//!
//! Telephony: calls are read by time window from the end of the last window minus the overlap;
//! calls are keyed by the provider's id, so the overlap never duplicates a call.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::crm::{Crm, Cursor};
use crate::domain::{EntityKind, Ts};
use crate::store::cursors::SyncRun;
use crate::store::{Store, StoreError};
use crate::telephony::Telephony;

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync of {source_name} {entity}: {error}")]
    Remote {
        source_name: String,
        entity: String,
        #[source]
        error: crate::http::Error,
    },
    #[error("sync of {source_name} {entity}: {error}")]
    Store {
        source_name: String,
        entity: String,
        #[source]
        error: StoreError,
    },
}

/// What one sync of one source did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub source: String,
    /// Records saved per entity kind (re-read overlap included).
    pub items: BTreeMap<String, usize>,
    pub elapsed: Duration,
}

impl SyncReport {
    pub fn total(&self) -> usize {
        self.items.values().sum()
    }
}

/// Sync settings.
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    pub overlap: Duration,
    /// How far back the first telephony sync reads.
    pub telephony_initial: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            overlap: Duration::from_secs(120),
            telephony_initial: Duration::from_secs(30 * 86_400),
        }
    }
}

fn store_err(source: &str, entity: &str) -> impl FnOnce(StoreError) -> SyncError {
    let (source_name, entity) = (source.to_string(), entity.to_string());
    move |error| SyncError::Store {
        source_name,
        entity,
        error,
    }
}

fn remote_err(source: &str, entity: &str) -> impl FnOnce(crate::http::Error) -> SyncError {
    let (source_name, entity) = (source.to_string(), entity.to_string());
    move |error| SyncError::Remote {
        source_name,
        entity,
        error,
    }
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::seconds(0))
}

/// Brings the mirror of `crm` up to date for `tenant`.
pub async fn sync_crm(
    store: &Store,
    tenant: &str,
    crm: &dyn Crm,
    opts: SyncOptions,
) -> Result<SyncReport, SyncError> {
    let source = crm.kind().as_str();
    let started = Instant::now();
    let started_at = Utc::now();
    let result = sync_crm_inner(store, tenant, crm, opts).await;
    let mut run = SyncRun {
        source: source.to_string(),
        started_at,
        finished_at: Some(Utc::now()),
        ok: result.is_ok(),
        items: 0,
        error: result.as_ref().err().map(|e| e.to_string()),
    };
    if let Ok(items) = &result {
        run.items = items.values().sum::<usize>() as i64;
    }
    store
        .record_sync_run(tenant, &run)
        .await
        .map_err(store_err(source, "runs"))?;
    Ok(SyncReport {
        source: source.to_string(),
        items: result?,
        elapsed: started.elapsed(),
    })
}

async fn sync_crm_inner(
    store: &Store,
    tenant: &str,
    crm: &dyn Crm,
    opts: SyncOptions,
) -> Result<BTreeMap<String, usize>, SyncError> {
    let source = crm.kind().as_str();
    let mut items = BTreeMap::new();
    let users = crm.users().await.map_err(remote_err(source, "users"))?;
    store
        .upsert_users(tenant, &users)
        .await
        .map_err(store_err(source, "users"))?;
    items.insert("users".to_string(), users.len());
    let pipelines = crm
        .pipelines()
        .await
        .map_err(remote_err(source, "stages"))?;
    store
        .upsert_pipelines(tenant, &pipelines)
        .await
        .map_err(store_err(source, "stages"))?;
    items.insert(
        "stages".to_string(),
        pipelines.iter().map(|p| p.stages.len()).sum(),
    );
    for entity in EntityKind::ALL {
        let n = sync_entity(store, tenant, crm, entity, opts).await?;
        items.insert(entity.as_str().to_string(), n);
    }
    Ok(items)
}

/// Reads one entity kind from its cursor to the end of the pass.
pub async fn sync_entity(
    store: &Store,
    tenant: &str,
    crm: &dyn Crm,
    entity: EntityKind,
    opts: SyncOptions,
) -> Result<usize, SyncError> {
    let source = crm.kind().as_str();
    let name = entity.as_str();
    let mut cursor: Cursor = match store
        .cursor(tenant, source, name)
        .await
        .map_err(store_err(source, name))?
    {
        Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(tenant, source, entity = name, error = %e, "stored cursor unreadable; reading everything again");
            Cursor::default()
        }),
        None => Cursor::default(),
    };
    let mut saved = 0usize;
    let mut pages = 0usize;
    loop {
        let page = crm
            .fetch_page(entity, &cursor)
            .await
            .map_err(remote_err(source, name))?;
        pages += 1;
        let next = if page.done {
            Cursor {
                since: page
                    .next
                    .high_water
                    .map(|h| h - chrono_dur(opts.overlap))
                    .or(cursor.since),
                position: None,
                high_water: None,
            }
        } else {
            page.next.clone()
        };
        let text = serde_json::to_string(&next).expect("cursor serialises");
        store
            .save_page(tenant, source, entity, &page.records, &text)
            .await
            .map_err(store_err(source, name))?;
        saved += page.records.len();
        if pages.is_multiple_of(20) {
            tracing::info!(
                tenant,
                source,
                entity = name,
                saved,
                pages,
                "sync in progress"
            );
        }
        if page.done {
            break;
        }
        cursor = next;
    }
    tracing::debug!(tenant, source, entity = name, saved, pages, "entity synced");
    Ok(saved)
}

/// Reads new and updated calls of `tel` into the mirror.
pub async fn sync_telephony(
    store: &Store,
    tenant: &str,
    tel: &dyn Telephony,
    opts: SyncOptions,
    now: Ts,
) -> Result<SyncReport, SyncError> {
    let source = tel.kind().as_str();
    let started = Instant::now();
    let started_at = Utc::now();
    let result = async {
        let from = match store
            .cursor(tenant, source, "calls")
            .await
            .map_err(store_err(source, "calls"))?
        {
            Some(text) => serde_json::from_str::<Ts>(&text)
                .map(|t| t - chrono_dur(opts.overlap))
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
    .await;
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
