//! One pass over an entity kind: pages read from the stored cursor, each saved with the cursor
//! that follows it in one transaction, and the pass recorded as done when it reaches the end.

use std::time::Duration;

use chrono::{Timelike, Utc};
use tokio_util::sync::CancellationToken;

use crate::crm::{Crm, Cursor};
use crate::domain::{EntityKind, Ts};
use crate::store::Store;

use super::progress::Progress;
use super::{SyncError, SyncOptions, chrono_dur, remote_err, store_err};

/// Whether the periodic step `name` last ran longer than `every` ago (or never).
pub(super) async fn due(
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

pub(super) async fn mark_done(
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

pub(super) async fn load_cursor(
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
pub(super) struct Pass<'a> {
    pub(super) entity: EntityKind,
    pub(super) opts: SyncOptions,
    pub(super) pass_start: Ts,
    pub(super) stop: &'a CancellationToken,
}

/// The watermark after a complete pass that started at `pass_start`: everything modified before
/// the pass started has been read, so the next pass starts there, less the overlap that absorbs
/// clock skew between dozor and the CRM. Never moves backwards.
pub(super) fn advance(current: Option<Ts>, pass_start: Ts, opts: SyncOptions) -> Option<Ts> {
    // CRM timestamps have whole seconds: a change in the same second as the pass start must
    // still be newer than the watermark, so floor it and step one more second back.
    let start = pass_start - chrono_dur(opts.overlap);
    let candidate = start.with_nanosecond(0).unwrap_or(start) - chrono::Duration::seconds(1);
    Some(current.map_or(candidate, |c| c.max(candidate)))
}

/// Saves `first` (when the probe already read it) and every following page of the pass, each
/// page in one transaction with the cursor after it. Stops before a page once `pass.stop` is
/// cancelled: the cursor saved with the last page is where the next start resumes.
pub(super) async fn run_pass(
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
