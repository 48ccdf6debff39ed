//! One cycle for one tenant: sync every source, evaluate the rules, execute their actions.
//!
//! A failing source does not stop the cycle: the CRM being down must not keep missed calls
//! out of the mirror, and the other way round. Failures are logged, recorded as sync runs and
//! returned in the summary.
//!
//! A stop request (the daemon's SIGTERM) does: the sync stops before its next page, the rules
//! before the next rule, and a rule's actions before the next action. Actions already running
//! finish, or, if their client's wait is cut short, stay at `intent` for the next start.

mod evaluate;
mod first;
mod look;
mod view;

pub use evaluate::{Looks, both_looks};

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::ledger::ActionLine;
use crate::ledger::{self, Outcome};
use crate::store::Store;
use crate::sync::{self, SyncOptions, SyncReport};
use crate::tenant::Tenant;

/// How a cycle runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CycleOptions {
    /// Evaluate every rule in shadow mode: nothing is written to the CRM or sent.
    pub dry_run: bool,
    pub sync: SyncOptions,
    /// The moment the rules evaluate at (`None`: the clock). Tests and demos step it.
    pub now: Option<crate::domain::Ts>,
}

/// What started a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The polling interval, a first start, a command.
    Schedule,
    /// A webhook push: a missed call it brought gets its callback task before the sync (see
    /// [`first`]).
    Push,
}

/// What a cycle did.
#[derive(Debug, Clone, Default)]
pub struct CycleSummary {
    pub(crate) tenant: String,
    pub(crate) synced: Vec<SyncReport>,
    /// `source: error` for each source that failed.
    pub errors: Vec<String>,
    /// Systems whose credentials were refused this cycle (`amocrm`, `comagic`, ...).
    pub(crate) auth_failed: Vec<&'static str>,
    pub(crate) actions: Vec<ActionLine>,
    /// Every proposal of this cycle with what happened to it.
    pub applied: Vec<Applied>,
    pub(crate) elapsed: Duration,
    /// A stop request ended the cycle early; what it did is saved and the rest is left for
    /// the next start.
    pub(crate) stopped: bool,
}

/// One proposal and its outcome.
#[derive(Debug, Clone)]
pub struct Applied {
    pub rule: &'static str,
    /// The action writes to the CRM (as opposed to sending a message).
    pub crm_write: bool,
    pub summary: String,
    pub outcome: Outcome,
}

impl CycleSummary {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Runs one cycle for `tenant`. A panic anywhere in it (a record no connector or rule
/// expected) ends this cycle with an error in the summary; the daemon, its server and the
/// other tenants go on, and the next cycle starts afresh.
pub async fn run_cycle(store: &Store, tenant: &Tenant, opts: CycleOptions) -> CycleSummary {
    let stop = CancellationToken::new();
    run_cycle_until(store, tenant, opts, Trigger::Schedule, &stop).await
}

/// [`run_cycle`] that ends early, with its work so far saved, once `stop` is cancelled.
pub(crate) async fn run_cycle_until(
    store: &Store,
    tenant: &Tenant,
    opts: CycleOptions,
    trigger: Trigger,
    stop: &CancellationToken,
) -> CycleSummary {
    use futures::FutureExt as _;
    let started = Instant::now();
    match std::panic::AssertUnwindSafe(cycle(store, tenant, opts, trigger, stop))
        .catch_unwind()
        .await
    {
        Ok(summary) => summary,
        Err(_) => {
            tracing::error!(
                tenant = tenant.id(),
                "cycle panicked; it is abandoned and the next one starts afresh"
            );
            CycleSummary {
                tenant: tenant.id().to_string(),
                errors: vec!["the cycle panicked (see the log)".into()],
                elapsed: started.elapsed(),
                ..CycleSummary::default()
            }
        }
    }
}

// Long: the cycle's steps in their order (first look, CRM, telephony, redelivery, rules, dead
// actions), each a call with its failure handling, so the order can be read in one place.
async fn cycle(
    store: &Store,
    tenant: &Tenant,
    opts: CycleOptions,
    trigger: Trigger,
    stop: &CancellationToken,
) -> CycleSummary {
    let started = Instant::now();
    let mut summary = CycleSummary {
        tenant: tenant.id().to_string(),
        ..CycleSummary::default()
    };
    if trigger == Trigger::Push
        && !stop.is_cancelled()
        && let Err(e) = first::callback_tasks(store, tenant, opts, stop, &mut summary).await
    {
        // The full cycle below proposes the same tasks again.
        tracing::warn!(tenant = tenant.id(), error = %e, "callback tasks not written before the sync");
    }
    let crm = tenant.crm.as_ref();
    let crm_synced = match sync::sync_crm_until(store, tenant.id(), crm, opts.sync, stop).await {
        Ok(r) => {
            tracing::info!(
                tenant = tenant.id(),
                items = r.total(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "CRM synced"
            );
            summary.synced.push(r);
            true
        }
        Err(sync::SyncError::Stopped { .. }) => {
            tracing::info!(
                tenant = tenant.id(),
                "CRM sync stopped; it resumes from the saved cursors at the next start"
            );
            false
        }
        Err(e) => {
            tracing::error!(tenant = tenant.id(), error = %e, "CRM sync failed");
            note_auth_failure(&mut summary, &e);
            summary.errors.push(e.to_string());
            false
        }
    };
    if let Some(tel) = tenant.telephony.as_ref().filter(|_| !stop.is_cancelled()) {
        let now = opts.now.unwrap_or_else(Utc::now);
        match sync::sync_telephony_until(store, tenant.id(), tel.as_ref(), opts.sync, now, stop)
            .await
        {
            Ok(r) => summary.synced.push(r),
            Err(sync::SyncError::Stopped { .. }) => {}
            Err(e) => {
                tracing::error!(tenant = tenant.id(), error = %e, "telephony sync failed");
                note_auth_failure(&mut summary, &e);
                summary.errors.push(e.to_string());
            }
        }
    }
    if !opts.dry_run && !stop.is_cancelled() {
        redeliver(store, tenant, &mut summary).await;
    }
    // Rules act only on a freshly synced mirror: after a crash the ledger's reconciliation
    // looks for markers in it, and a stale mirror would hide what was already written.
    if stop.is_cancelled() {
        tracing::info!(tenant = tenant.id(), "cycle stopped: dozor is stopping");
    } else if crm_synced {
        // The rules' reads are planned from statistics, which a first sync makes worth having.
        if let Err(e) = store.refresh_planner_stats().await {
            tracing::warn!(tenant = tenant.id(), error = %e, "planner statistics not refreshed");
        }
        if let Err(e) = evaluate::apply_rules(store, tenant, opts, stop, &mut summary).await {
            tracing::error!(tenant = tenant.id(), error = %e, "rules stopped");
            summary.errors.push(e.to_string());
        }
    } else {
        tracing::warn!(
            tenant = tenant.id(),
            "rules skipped: the CRM mirror is not fresh"
        );
    }
    if !opts.dry_run {
        report_dead(store, tenant, &mut summary).await;
    }
    summary.elapsed = started.elapsed();
    summary.stopped = stop.is_cancelled();
    tracing::info!(
        tenant = tenant.id(),
        items = summary.synced.iter().map(|s| s.total()).sum::<usize>(),
        errors = summary.errors.len(),
        stopped = summary.stopped,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "cycle finished"
    );
    summary
}

/// Delivers the Telegram messages earlier cycles could not send (see
/// [`ledger::redeliver_telegram`]).
async fn redeliver(store: &Store, tenant: &Tenant, summary: &mut CycleSummary) {
    let Some(tg) = tenant.telegram.as_ref() else {
        return;
    };
    let sinks = ledger::Sinks {
        crm: tenant.crm.as_ref(),
        telegram: Some(tg),
    };
    match ledger::redeliver_telegram(store, tenant.id(), &sinks).await {
        Ok(sent) => summary
            .applied
            .extend(sent.into_iter().map(|(key, outcome)| Applied {
                rule: "redelivery",
                crm_write: false,
                summary: key,
                outcome,
            })),
        Err(e) => {
            tracing::error!(tenant = tenant.id(), error = %e, "redelivery stopped");
            summary.errors.push(e.to_string());
        }
    }
}

/// Tells the ops chat, once, about actions this or an earlier cycle parked as `dead`.
async fn report_dead(store: &Store, tenant: &Tenant, summary: &mut CycleSummary) {
    let sinks = tenant.sinks();
    let to = ledger::dead::Audience {
        chat: tenant.ops_chat(),
        label: tenant.label(),
        lang: tenant.cfg.lang,
    };
    match ledger::dead::report(store, tenant.id(), &to, &sinks).await {
        Ok(sent) => summary
            .applied
            .extend(sent.into_iter().map(|outcome| Applied {
                rule: ledger::dead::RULE,
                crm_write: false,
                summary: "dead actions reported".into(),
                outcome,
            })),
        Err(e) => {
            tracing::error!(tenant = tenant.id(), error = %e, "dead actions not reported");
            summary.errors.push(e.to_string());
        }
    }
}

/// Records a sync stopped by refused credentials (for the self-checks).
fn note_auth_failure(summary: &mut CycleSummary, e: &sync::SyncError) {
    if let sync::SyncError::Remote { error, .. } = e
        && error.kind == crate::http::ErrorKind::Auth
    {
        summary.auth_failed.push(error.system);
    }
}

/// The sync options of the config's `[sync]` section.
pub fn sync_options(c: &crate::config::Config) -> crate::sync::SyncOptions {
    crate::sync::SyncOptions {
        overlap: std::time::Duration::from_secs(c.sync.overlap_secs),
        telephony_initial: std::time::Duration::from_secs(
            u64::from(c.sync.telephony_initial_days) * 86_400,
        ),
        directory_refresh: std::time::Duration::from_secs(c.sync.directory_refresh_secs),
        deletion_sweep: std::time::Duration::from_secs(c.sync.deletion_sweep_secs),
        telephony_overlap: std::time::Duration::from_secs(c.sync.telephony_overlap_secs),
    }
}
