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
//!
//! Stopping: the `_until` variants take a cancellation token, checked before every page. A
//! stopped sync returns [`SyncError::Stopped`] with every page read so far saved with its cursor,
//! so the next start resumes at the first page not saved.

mod calls;
mod pass;
mod progress;

pub use calls::sync_telephony;
pub(crate) use calls::sync_telephony_until;
pub use pass::sync_entity;
use pass::{Pass, advance, due, load_cursor, mark_done, run_pass};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::crm::{Crm, Cursor};
use crate::domain::{EntityKind, Ts};
use crate::store::cursors::SyncRun;
use crate::store::{Store, StoreError};

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
    /// dozor is stopping: the pages read so far are saved, the rest is read at the next start.
    #[error("sync of {source_name} stopped before its end: dozor is stopping")]
    Stopped { source_name: String },
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
    /// Users and pipelines change rarely: they are re-read this often, not every cycle.
    pub directory_refresh: Duration,
    /// How often CRMs without a deletion feed (Bitrix24) are swept for deleted records.
    pub deletion_sweep: Duration,
    /// Telephony windows start this long before the last one ended: a call is reported when it
    /// ends (after its start time), and status or recording changes arrive later still.
    pub telephony_overlap: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            overlap: Duration::from_secs(120),
            telephony_initial: Duration::from_secs(30 * 86_400),
            directory_refresh: Duration::from_secs(3600),
            deletion_sweep: Duration::from_secs(6 * 3600),
            telephony_overlap: Duration::from_secs(2 * 3600),
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
    sync_crm_until(store, tenant, crm, opts, &CancellationToken::new()).await
}

/// [`sync_crm`] that stops before its next page once `stop` is cancelled.
pub(crate) async fn sync_crm_until(
    store: &Store,
    tenant: &str,
    crm: &dyn Crm,
    opts: SyncOptions,
    stop: &CancellationToken,
) -> Result<SyncReport, SyncError> {
    let source = crm.kind().as_str();
    let started = Instant::now();
    let started_at = Utc::now();
    let result = sync_crm_inner(store, tenant, crm, opts, stop)
        .await
        .map_err(|e| stopped_if(e, source, stop));
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

/// A sync that failed because its client's wait or request was cut short by the stop is a
/// stopped sync, not a remote failure.
fn stopped_if(e: SyncError, source: &str, stop: &CancellationToken) -> SyncError {
    match e {
        SyncError::Remote { .. } if stop.is_cancelled() => SyncError::Stopped {
            source_name: source.to_string(),
        },
        other => other,
    }
}

/// `Err(Stopped)` once `stop` is cancelled: called before every page.
// Same error type as every other step of a sync, so `?` works; it is built once, on the stop.
#[allow(clippy::result_large_err)]
fn check(stop: &CancellationToken, source: &str) -> Result<(), SyncError> {
    if stop.is_cancelled() {
        return Err(SyncError::Stopped {
            source_name: source.to_string(),
        });
    }
    Ok(())
}

async fn sync_crm_inner(
    store: &Store,
    tenant: &str,
    crm: &dyn Crm,
    opts: SyncOptions,
    stop: &CancellationToken,
) -> Result<BTreeMap<String, usize>, SyncError> {
    let source = crm.kind().as_str();
    check(stop, source)?;
    let now = Utc::now();
    let mut items = BTreeMap::new();
    let refused_dirs = refresh_directories(store, tenant, crm, opts, now, &mut items).await?;

    // One probe for every kind (an idle cycle ends here), then each changed kind to its end.
    let mut cursors = Vec::with_capacity(EntityKind::ALL.len());
    for kind in EntityKind::ALL {
        cursors.push((kind, load_cursor(store, tenant, source, kind).await?));
    }
    check(stop, source)?;
    let pass_start = Utc::now();
    let changes = crm
        .fetch_changes(&cursors)
        .await
        .map_err(remote_err(source, "changes"))?;
    let refused = crm.refused_kinds();
    for (kind, first) in &changes {
        let cursor = cursors
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        let pass = Pass {
            entity: *kind,
            opts,
            pass_start,
            stop,
        };
        let n = run_pass(store, tenant, crm, &pass, cursor, Some(first.clone())).await?;
        items.insert(kind.as_str().to_string(), n);
    }
    // Only when deals or leads changed: see [`settle_lead_outcomes`].
    if crm.leads_leave_their_list()
        && changes
            .iter()
            .any(|(k, _)| matches!(k, EntityKind::Deal | EntityKind::Lead))
    {
        check(stop, source)?;
        settle_lead_outcomes(store, tenant, crm, &mut items).await?;
    }
    advance_unchanged(
        store, tenant, source, &cursors, &changes, &refused, pass_start, opts,
    )
    .await?;
    sweep_deletions(store, tenant, crm, opts, now, &refused, stop).await?;
    let refused = refused_dirs
        .into_iter()
        .chain(refused.into_iter().map(|(k, e)| (k.as_str(), e)));
    refused_error(source, refused)?;
    Ok(items)
}

/// Users and pipelines, when their refresh is due. Directories the credentials may not read (a
/// webhook without the `user` scope) are returned, so the rest is mirrored and they are
/// reported with the refused kinds at the end.
async fn refresh_directories(
    store: &Store,
    tenant: &str,
    crm: &dyn Crm,
    opts: SyncOptions,
    now: Ts,
    items: &mut BTreeMap<String, usize>,
) -> Result<Vec<(&'static str, crate::http::Error)>, SyncError> {
    let source = crm.kind().as_str();
    let mut refused_dirs: Vec<(&'static str, crate::http::Error)> = Vec::new();
    if due(
        store,
        tenant,
        source,
        "directories",
        opts.directory_refresh,
        now,
    )
    .await?
    {
        match crm.users().await {
            Ok(users) => {
                store
                    .upsert_users(tenant, &users)
                    .await
                    .map_err(store_err(source, "users"))?;
                items.insert("users".to_string(), users.len());
            }
            Err(e) if crm.is_refusal(&e) => {
                tracing::warn!(tenant, source, error = %e, "users not readable with these credentials");
                refused_dirs.push(("users", e));
            }
            Err(e) => return Err(remote_err(source, "users")(e)),
        }
        match crm.pipelines().await {
            Ok(pipelines) => {
                store
                    .upsert_pipelines(tenant, &pipelines)
                    .await
                    .map_err(store_err(source, "stages"))?;
                items.insert(
                    "stages".to_string(),
                    pipelines.iter().map(|p| p.stages.len()).sum(),
                );
            }
            Err(e) if crm.is_refusal(&e) => {
                tracing::warn!(tenant, source, error = %e, "stages not readable with these credentials");
                refused_dirs.push(("stages", e));
            }
            Err(e) => return Err(remote_err(source, "stages")(e)),
        }
        // A refused directory is asked again next cycle: once the scope is ticked it arrives
        // without waiting for the refresh interval.
        if refused_dirs.is_empty() {
            mark_done(store, tenant, source, "directories", now).await?;
        }
    }
    Ok(refused_dirs)
}

/// Leads decided where the CRM's lead list no longer shows them (amoCRM: an accepted or
/// declined unsorted item leaves its list): asked about only in cycles where deals or leads
/// changed (an accept moves a deal, a decline deletes one), so an idle cycle stays one
/// request, and only for the leads the mirror still holds open.
async fn settle_lead_outcomes(
    store: &Store,
    tenant: &str,
    crm: &dyn Crm,
    items: &mut BTreeMap<String, usize>,
) -> Result<(), SyncError> {
    let source = crm.kind().as_str();
    let open = store
        .open_leads(tenant)
        .await
        .map_err(store_err(source, "leads"))?;
    if !open.is_empty() {
        let decided = crm
            .lead_outcomes(&open)
            .await
            .map_err(remote_err(source, "leads"))?;
        let settled = store
            .settle_leads(tenant, &decided)
            .await
            .map_err(store_err(source, "leads"))?;
        if settled > 0 {
            tracing::info!(tenant, source, settled, "leads decided in the CRM");
            items.insert("lead outcomes".to_string(), settled);
        }
    }
    Ok(())
}

/// Kinds the probe found unchanged are up to date as of the probe: move their watermark so
/// the next probe does not look further back than it must.
#[allow(clippy::too_many_arguments)]
async fn advance_unchanged(
    store: &Store,
    tenant: &str,
    source: &str,
    cursors: &[(EntityKind, Cursor)],
    changes: &[(EntityKind, crate::crm::Page)],
    refused: &[(EntityKind, crate::http::Error)],
    pass_start: Ts,
    opts: SyncOptions,
) -> Result<(), SyncError> {
    for (kind, cursor) in cursors {
        if changes.iter().any(|(k, _)| k == kind)
            || refused.iter().any(|(k, _)| k == kind)
            || cursor.position.is_some()
            || cursor.since.is_none()
        {
            continue;
        }
        let next = Cursor {
            since: advance(cursor.since, pass_start, opts),
            position: None,
            high_water: None,
        };
        if next.since != cursor.since {
            let text = serde_json::to_string(&next).expect("cursor serialises");
            store
                .put_cursor(tenant, source, kind.as_str(), &text)
                .await
                .map_err(store_err(source, kind.as_str()))?;
        }
    }
    Ok(())
}

/// Deletion sweep for CRMs that report deletions only by absence.
async fn sweep_deletions(
    store: &Store,
    tenant: &str,
    crm: &dyn Crm,
    opts: SyncOptions,
    now: Ts,
    refused: &[(EntityKind, crate::http::Error)],
    stop: &CancellationToken,
) -> Result<(), SyncError> {
    let source = crm.kind().as_str();
    for kind in EntityKind::ALL {
        check(stop, source)?;
        if refused.iter().any(|(k, _)| *k == kind) {
            continue;
        }
        let key = format!("sweep:{}", kind.as_str());
        let last = store
            .cursor(tenant, source, &key)
            .await
            .map_err(store_err(source, &key))?;
        let Some(last) = last else {
            // The first full read has just seen everything: start the sweep clock now.
            mark_done(store, tenant, source, &key, now).await?;
            continue;
        };
        let last: Option<Ts> = serde_json::from_str(&last).ok();
        if last.is_some_and(|t| now - t < chrono_dur(opts.deletion_sweep)) {
            continue;
        }
        let Some(present) = crm
            .existing_ids(kind)
            .await
            .map_err(remote_err(source, &key))?
        else {
            break; // this connector has a deletion feed: no sweeps at all
        };
        let gone = store
            .mark_missing_deleted(tenant, kind, &present)
            .await
            .map_err(store_err(source, &key))?;
        if gone > 0 {
            tracing::info!(
                tenant,
                source,
                entity = kind.as_str(),
                gone,
                "deleted in the CRM"
            );
        }
        mark_done(store, tenant, source, &key, now).await?;
    }
    Ok(())
}

/// The directories and kinds the CRM refused to list, as one error naming each and its
/// refusal: everything else is mirrored by now, and the failed run keeps the source marked
/// stale.
#[allow(clippy::result_large_err)]
fn refused_error<'a>(
    source: &str,
    refused: impl IntoIterator<Item = (&'a str, crate::http::Error)>,
) -> Result<(), SyncError> {
    let mut refused = refused.into_iter();
    let Some((kind, mut error)) = refused.next() else {
        return Ok(());
    };
    let mut entity = kind.to_string();
    let mut said = vec![error.message.clone()];
    for (k, e) in refused {
        entity = format!("{entity}, {k}");
        if !said.contains(&e.message) {
            error.message = format!("{}; {}", error.message, e.message);
            said.push(e.message);
        }
    }
    Err(remote_err(source, &entity)(error))
}
