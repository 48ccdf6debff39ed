//! The callback task first. A cycle woken by a push (a CoMagic notification whose call the
//! receiver has just read back and stored) first lets `missed_call` look at the calls of its
//! window as the mirror already has them, and writes the callback tasks of calls the ledger has
//! never seen; the usual cycle (sync, look-ups, every rule) follows. Without it the task waited
//! for the CRM sync's requests and the look-ups of unrelated numbers, paced by the CRM's rate
//! limit: seconds to tens of seconds.
//!
//! The decisions are the rule's own: the same proposal function over the same working set the
//! call rules read (the missed call, every call of its number, the client's records and deals),
//! with the same staff map. What the first look leaves out cannot change a callback task of a
//! known number: the CRM's look-ups only add records for numbers the mirror does not know (and
//! for those `missed_call` proposes nothing here, so the full cycle decides them). The later
//! `missed_call` of the same cycle proposes the same key and the ledger finds it done.
//!
//! It waits for the cycle when the last CRM sync did not finish: rules never see a mirror a sync
//! left half-read. Only keys the ledger has never seen are applied. The rule of the cycle, that
//! rules act only on a freshly synced mirror, is there for reconciliation: a key left at `intent`
//! by a crash is settled by finding its marker in the synced mirror. A key with no row has
//! nothing to reconcile, and one with a row is left to the full cycle, after its sync. So a kill
//! at any point of the first look leaves what the full cycle already handles.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::view::{self, View, employees};
use super::{CycleOptions, CycleSummary};
use crate::config::RuleMode;
use crate::ledger::{ActionLine, Effect, Proposal};
use crate::matching::CallLinks;
use crate::rules;
use crate::store::{Store, StoreError};
use crate::tenant::Tenant;

const RULE: &str = "missed_call";

/// Writes the callback tasks of new missed calls from known numbers (see the module doc).
pub(super) async fn callback_tasks(
    store: &Store,
    tenant: &Tenant,
    opts: CycleOptions,
    stop: &CancellationToken,
    summary: &mut CycleSummary,
) -> Result<(), StoreError> {
    // Shadow and dry runs record, they do not write: nothing to hurry.
    let Some((_, RuleMode::On)) = rules::effective(&tenant.cfg.rules, RULE, opts.dry_run) else {
        return Ok(());
    };
    let Some(rule) = rules::RULES.iter().find(|r| r.name == RULE) else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let tid = tenant.id();
    // The mirror as the last complete CRM sync left it, as the full cycle's rules see it; after
    // a failed or stopped sync (a first one cut short: clients without their deals) the rule
    // waits for the cycle's own sync.
    let crm = tenant.crm.kind().as_str();
    let runs = store.last_sync_runs(tid).await?;
    if !runs.iter().any(|r| r.source == crm && r.ok) {
        return Ok(());
    }
    let now = opts.now.unwrap_or_else(Utc::now);
    let set = rules::recent_calls::load(store, tenant, &view::base(store, tid).await?, now).await?;
    // First with the employees the calls name (no request): most pushes bring nothing new.
    let mut view = View {
        links: CallLinks {
            staff: crate::matching::staff(None, &set.mirror, employees(tenant)).await,
            ..CallLinks::default()
        },
        mirror: set.mirror,
        done: set.done,
        unfinished: set.unfinished,
        ..View::default()
    };
    if new_tasks(store, tenant, rule, now, &view).await?.is_empty() {
        return Ok(());
    }
    view.links.staff = crate::matching::window_staff(
        tenant.telephony.as_deref(),
        employees(tenant),
        &tenant.cfg.rules,
        &view.mirror,
        now,
    )
    .await;
    let proposals = new_tasks(store, tenant, rule, now, &view).await?;
    let n = proposals.len();
    let mut line = ActionLine {
        rule: RULE.into(),
        ..ActionLine::default()
    };
    let sinks = tenant.sinks();
    let mode = RuleMode::On;
    super::evaluate::apply(
        store, tenant, rule, mode, &sinks, stop, proposals, &mut line, summary,
    )
    .await?;
    tracing::info!(
        tenant = tid,
        tasks = n,
        done = line.done,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "callback tasks written before the sync"
    );
    if line.done + line.failed > 0 {
        summary.actions.push(line);
    }
    Ok(())
}

/// The rule's callback tasks over `view` whose keys the ledger has no row for.
async fn new_tasks(
    store: &Store,
    tenant: &Tenant,
    rule: &'static rules::Rule,
    now: crate::domain::Ts,
    view: &View,
) -> Result<Vec<Proposal>, StoreError> {
    // A panic here costs the head start only: the full cycle proposes again and reports it.
    let Some(proposals) = super::evaluate::propose_caught(tenant, rule, now, view) else {
        return Ok(Vec::new());
    };
    let tasks: Vec<Proposal> = proposals
        .into_iter()
        .filter(|p| matches!(p.effect, Effect::CreateTask(_)))
        .collect();
    let keys: Vec<String> = tasks.iter().map(|p| p.key.clone()).collect();
    let known = store.action_states(&keys).await?;
    Ok(tasks
        .into_iter()
        .filter(|p| !known.contains_key(&p.key))
        .collect())
}
