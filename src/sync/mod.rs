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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};
use tokio_util::sync::CancellationToken;

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
pub async fn sync_crm_until(
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
    // Directories the credentials may not read (a webhook without the `user` scope): the rest
    // is mirrored and they are reported with the refused kinds at the end.
    let mut refused_dirs: Vec<(&str, crate::http::Error)> = Vec::new();
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
    // Leads decided where the CRM's lead list no longer shows them (amoCRM: an accepted or
    // declined unsorted item leaves its list): asked about only in cycles where deals or leads
    // changed (an accept moves a deal, a decline deletes one), so an idle cycle stays one
    // request, and only for the leads the mirror still holds open.
    if crm.leads_leave_their_list()
        && changes
            .iter()
            .any(|(k, _)| matches!(k, EntityKind::Deal | EntityKind::Lead))
    {
        check(stop, source)?;
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
    }
    // Kinds the probe found unchanged are up to date as of the probe: move their watermark so
    // the next probe does not look further back than it must.
    for (kind, cursor) in &cursors {
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

    // Deletion sweep for CRMs that report deletions only by absence.
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
    let refused = refused_dirs
        .into_iter()
        .chain(refused.into_iter().map(|(k, e)| (k.as_str(), e)));
    refused_error(source, refused)?;
    Ok(items)
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

/// Whether the periodic step `name` last ran longer than `every` ago (or never).
async fn due(
    store: &Store,
    tenant: &str,
    source: &str,
    name: &str,
    every: Duration,
    now: Ts,
) -> Result<bool, SyncError> {
    let last = store
        .cursor(tenant, source, name)
        .await
        .map_err(store_err(source, name))?
        .and_then(|t| serde_json::from_str::<Ts>(&t).ok());
    Ok(last.is_none_or(|t| now - t >= chrono_dur(every)))
}

async fn mark_done(
    store: &Store,
    tenant: &str,
    source: &str,
    name: &str,
    now: Ts,
) -> Result<(), SyncError> {
    store
        .put_cursor(
            tenant,
            source,
            name,
            &serde_json::to_string(&now).expect("time serialises"),
        )
        .await
        .map_err(store_err(source, name))
}

async fn load_cursor(
    store: &Store,
    tenant: &str,
    source: &str,
    entity: EntityKind,
) -> Result<Cursor, SyncError> {
    let name = entity.as_str();
    Ok(match store
        .cursor(tenant, source, name)
        .await
        .map_err(store_err(source, name))?
    {
        Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(tenant, source, entity = name, error = %e, "stored cursor unreadable; reading everything again");
            Cursor::default()
        }),
        None => Cursor::default(),
    })
}

/// Reads one entity kind from its cursor to the end of the pass.
pub async fn sync_entity(
    store: &Store,
    tenant: &str,
    crm: &dyn Crm,
    entity: EntityKind,
    opts: SyncOptions,
) -> Result<usize, SyncError> {
    let cursor = load_cursor(store, tenant, crm.kind().as_str(), entity).await?;
    let pass = Pass {
        entity,
        opts,
        pass_start: Utc::now(),
        stop: &CancellationToken::new(),
    };
    run_pass(store, tenant, crm, &pass, cursor, None).await
}

/// What one pass over an entity kind reads, and when it stops.
struct Pass<'a> {
    entity: EntityKind,
    opts: SyncOptions,
    pass_start: Ts,
    stop: &'a CancellationToken,
}

/// The watermark after a complete pass that started at `pass_start`: everything modified before
/// the pass started has been read, so the next pass starts there, less the overlap that absorbs
/// clock skew between dozor and the CRM. Never moves backwards.
fn advance(current: Option<Ts>, pass_start: Ts, opts: SyncOptions) -> Option<Ts> {
    // CRM timestamps have whole seconds: a change in the same second as the pass start must
    // still be newer than the watermark, so floor it and step one more second back.
    let start = pass_start - chrono_dur(opts.overlap);
    let candidate = start.with_nanosecond(0).unwrap_or(start) - chrono::Duration::seconds(1);
    Some(current.map_or(candidate, |c| c.max(candidate)))
}

/// Saves `first` (when the probe already read it) and every following page of the pass, each
/// page in one transaction with the cursor after it. Stops before a page once `pass.stop` is
/// cancelled: the cursor saved with the last page is where the next start resumes.
async fn run_pass(
    store: &Store,
    tenant: &str,
    crm: &dyn Crm,
    pass: &Pass<'_>,
    mut cursor: Cursor,
    mut first: Option<crate::crm::Page>,
) -> Result<usize, SyncError> {
    let Pass {
        entity,
        opts,
        pass_start,
        stop,
    } = *pass;
    let source = crm.kind().as_str();
    let name = entity.as_str();
    // A pass resumed from a stored mid-pass cursor began before this process: records changed
    // behind its position since then are only covered by the newest change it saw.
    let fresh = cursor.position.is_none();
    let progress = Progress::new(source, name);
    let mut saved = 0usize;
    let mut pages = 0usize;
    loop {
        let page = match first.take() {
            Some(p) => p,
            None if stop.is_cancelled() => {
                progress.finish(saved, pages);
                tracing::info!(
                    tenant,
                    source,
                    entity = name,
                    saved,
                    pages,
                    "sync stopped between pages; it resumes here at the next start"
                );
                return Err(SyncError::Stopped {
                    source_name: source.to_string(),
                });
            }
            None => crm
                .fetch_page(entity, &cursor)
                .await
                .map_err(remote_err(source, name))?,
        };
        pages += 1;
        let next = if page.done {
            let since = if fresh {
                advance(cursor.since, pass_start, opts)
            } else {
                page.next
                    .high_water
                    .map(|h| h - chrono_dur(opts.overlap))
                    .or(cursor.since)
            };
            Cursor {
                since,
                position: None,
                high_water: None,
            }
        } else {
            page.next.clone()
        };
        let text = serde_json::to_string(&next).expect("cursor serialises");
        store
            .save_page(tenant, source, entity, &page.records, &page.deleted, &text)
            .await
            .map_err(store_err(source, name))?;
        saved += page.records.len();
        progress.update(saved, pages);
        if page.done {
            break;
        }
        cursor = next;
    }
    progress.finish(saved, pages);
    Ok(saved)
}

/// Progress of a long read: a live line on a terminal, a log line every 20 pages otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    source: &'static str,
    entity: &'static str,
}

impl Progress {
    fn new(source: &'static str, entity: &'static str) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix} {msg} [{elapsed}, {per_sec}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.set_prefix(format!("{source} {entity}"));
            b
        });
        Progress {
            bar,
            source,
            entity,
        }
    }

    fn update(&self, saved: usize, pages: usize) {
        match &self.bar {
            Some(b) => {
                b.set_position(saved as u64);
                b.set_message(format!("{saved} records, {pages} pages"));
            }
            None if pages.is_multiple_of(20) => {
                tracing::info!(
                    source = self.source,
                    entity = self.entity,
                    saved,
                    pages,
                    "sync in progress"
                );
            }
            None => {}
        }
    }

    fn finish(&self, saved: usize, pages: usize) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        tracing::debug!(
            source = self.source,
            entity = self.entity,
            saved,
            pages,
            "entity synced"
        );
    }
}

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
pub async fn sync_telephony_until(
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
