//! The rules part of a cycle: each rule in order looks at its scope of the mirror (everything a
//! page at a time, or what changed and fell due since its last look, see [`rules::scope`] and
//! [`super::look`]), proposes, and its proposals go through the ledger. A rule that finished its look records a mark (the
//! journal position and clock it saw), so the next cycle starts from there; one cut short by a
//! stop or an error records none and looks again at the same changes.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::look::Look;
use super::view::{Shared, View, call_links, shared};
use super::{Applied, CycleOptions, CycleSummary};
use crate::config::RuleMode;
use crate::domain::Ts;
use crate::ledger::{self, ActionLine, Outcome, Proposal};
use crate::rules::{self, Handover, Rule, RuleContext};
use crate::store::{Snapshot, Store, StoreError};
use crate::tenant::Tenant;

pub(super) async fn apply_rules(
    store: &Store,
    tenant: &Tenant,
    opts: CycleOptions,
    stop: &CancellationToken,
    summary: &mut CycleSummary,
) -> Result<(), StoreError> {
    let tid = tenant.id();
    let now = opts.now.unwrap_or_else(Utc::now);
    let mut shared = shared(store, tid, now).await?;
    let sinks = tenant.sinks();
    let mut complete = true;
    for rule in rules::RULES {
        if stop.is_cancelled() {
            return Ok(());
        }
        let Some((_, mode)) = rules::effective(&tenant.cfg.rules, rule.name, opts.dry_run) else {
            continue;
        };
        if mode == RuleMode::Off {
            // Turned on again later, it looks at everything: the notes since are gone by then.
            store.delete_rule_mark(tid, rule.name).await?;
            continue;
        }
        let (line, whole) = run_rule(
            store,
            tenant,
            rule,
            mode,
            &mut shared,
            &sinks,
            stop,
            summary,
        )
        .await?;
        complete &= whole;
        summary.actions.extend(line);
    }
    if stop.is_cancelled() {
        return Ok(());
    }
    // Notes every rule has read are no longer needed.
    if complete {
        store
            .prune_journal(tid, store.lowest_rule_mark(tid).await?)
            .await?;
    }
    notify_managers(store, tenant, opts, &sinks, summary).await
}

/// One rule over its scope, page by page: its line of outcomes (`None` when it panicked) and
/// whether it looked at all of its scope (a stop or a panic cut it short; no mark then).
#[allow(clippy::too_many_arguments)]
async fn run_rule(
    store: &Store,
    tenant: &Tenant,
    rule: &'static Rule,
    mode: RuleMode,
    shared: &mut Shared,
    sinks: &ledger::Sinks<'_>,
    stop: &CancellationToken,
    summary: &mut CycleSummary,
) -> Result<(Option<ActionLine>, bool), StoreError> {
    let mut line = ActionLine {
        rule: rule.name.to_string(),
        ..ActionLine::default()
    };
    let now = shared.now;
    let started = std::time::Instant::now();
    let mut look = Look::start(store, tenant, rule, mode, shared).await?;
    let mut proposed = 0;
    while let Some(view) = look.next(store, tenant, shared).await? {
        let Some(proposals) = propose(tenant, rule, now, &view, summary) else {
            return Ok((None, false));
        };
        proposed += proposals.len();
        apply(
            store, tenant, rule, mode, sinks, stop, proposals, &mut line, summary,
        )
        .await?;
        if stop.is_cancelled() {
            return Ok((Some(line), false));
        }
    }
    // Where a cycle's time goes, rule by rule (`RUST_LOG=dozor=debug`).
    tracing::debug!(
        tenant = tenant.id(),
        rule = rule.name,
        scope = %look.describe(),
        proposed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rule looked"
    );
    look.finish(store, tenant.id(), shared).await?;
    Ok((Some(line), true))
}

/// The whole mirror, the ledger's view of the last week and the call links built from them: what
/// the reference look (every rule as it was first written) reads. No cycle reads it.
async fn load_whole(store: &Store, tenant: &Tenant, now: Ts) -> Result<View, StoreError> {
    let tid = tenant.id();
    let mirror = Snapshot::load(store, tid).await?;
    let links = call_links(store, tenant, &mirror, now).await;
    let recent = store
        .actions_since(tid, now - chrono::Duration::days(7), 1_000_000)
        .await?;
    let unfinished = recent
        .iter()
        .filter(|r| r.state == "intent" && r.attempts > 0)
        .map(|r| r.key.clone())
        .collect();
    let done = recent
        .into_iter()
        .filter(|r| r.state == "done")
        .filter_map(|r| Some((r.key, r.result?)))
        .collect();
    Ok(View {
        mirror,
        links,
        handovers: handovers(store, tid).await?,
        done,
        unfinished,
        classes: None,
    })
}

/// The rule's proposals from `view`; `None` when it panicked: a rule
/// that panics on a record it did not expect costs its proposals for this cycle, not the cycle.
fn propose(
    tenant: &Tenant,
    rule: &'static Rule,
    now: Ts,
    view: &View,
    summary: &mut CycleSummary,
) -> Option<Vec<Proposal>> {
    let proposals = propose_caught(tenant, rule, now, view);
    if proposals.is_none() {
        tracing::error!(
            tenant = tenant.id(),
            rule = rule.name,
            "rule panicked while proposing; its actions are skipped this cycle"
        );
        summary
            .errors
            .push(format!("rule {} panicked while proposing", rule.name));
    }
    proposals
}

/// The rule's proposals from `view`; `None` when it panicked.
pub(super) fn propose_caught(
    tenant: &Tenant,
    rule: &'static Rule,
    now: Ts,
    view: &View,
) -> Option<Vec<Proposal>> {
    let ctx = RuleContext {
        tenant: tenant.id(),
        now,
        calendar: &tenant.calendar,
        lang: tenant.cfg.lang,
        mirror: &view.mirror,
        telegram: tenant.cfg.telegram.as_ref(),
        roles: &tenant.cfg.roles,
        routing: &tenant.cfg.routing,
        rules: &tenant.cfg.rules,
        handovers: &view.handovers,
        marketing: &tenant.cfg.marketing,
        done: &view.done,
        unfinished: &view.unfinished,
        calls: &view.links,
        classes: view.classes.as_ref(),
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (rule.propose)(&ctx))).ok()
}

/// Runs proposals through the ledger, counting outcomes into `line` and the summary.
#[allow(clippy::too_many_arguments)]
pub(super) async fn apply(
    store: &Store,
    tenant: &Tenant,
    rule: &'static Rule,
    mode: RuleMode,
    sinks: &ledger::Sinks<'_>,
    stop: &CancellationToken,
    proposals: Vec<Proposal>,
    line: &mut ActionLine,
    summary: &mut CycleSummary,
) -> Result<(), StoreError> {
    for (p, outcome) in ledger::apply_all(store, tenant.id(), sinks, proposals, mode, stop).await? {
        match &outcome {
            Outcome::Done(_) => line.done += 1,
            Outcome::Shadow => line.shadow += 1,
            Outcome::Failed(e) | Outcome::Retry(e) | Outcome::Dead(e) => {
                line.failed += 1;
                tracing::warn!(tenant = tenant.id(), key = %p.key, error = %e, "action not done");
            }
            Outcome::AlreadyDone | Outcome::Skipped | Outcome::Deferred => {}
        }
        summary.applied.push(Applied {
            rule: rule.name,
            crm_write: !matches!(p.effect, ledger::Effect::Telegram { .. }),
            summary: p.summary.clone(),
            outcome,
        });
    }
    Ok(())
}

/// Announces the tasks just created (and any an interrupted cycle left unannounced).
async fn notify_managers(
    store: &Store,
    tenant: &Tenant,
    opts: CycleOptions,
    sinks: &ledger::Sinks<'_>,
    summary: &mut CycleSummary,
) -> Result<(), StoreError> {
    let Some((_, mode)) = rules::effective(&tenant.cfg.rules, "manager_notify", opts.dry_run)
    else {
        return Ok(());
    };
    let sent = rules::manager_notify::run(
        store,
        tenant.id(),
        tenant.cfg.telegram.as_ref(),
        tenant.cfg.lang,
        sinks,
        mode,
    )
    .await?;
    let mut line = ActionLine {
        rule: "manager_notify".into(),
        ..ActionLine::default()
    };
    for (p, outcome) in sent {
        match &outcome {
            Outcome::Done(_) => line.done += 1,
            Outcome::Shadow => line.shadow += 1,
            Outcome::Failed(_) | Outcome::Retry(_) | Outcome::Dead(_) => line.failed += 1,
            _ => {}
        }
        summary.applied.push(Applied {
            rule: "manager_notify",
            crm_write: false,
            summary: p.summary.clone(),
            outcome,
        });
    }
    if line.done + line.shadow + line.failed > 0 {
        summary.actions.push(line);
    }
    Ok(())
}

/// Owner changes the dormant rule made (from the ledger), oldest first.
async fn handovers(store: &Store, tenant: &str) -> Result<Vec<Handover>, StoreError> {
    Ok(rules::dormant::handovers(
        store.actions_in_state(tenant, "done").await?,
    ))
}

/// One incremental rule's proposals at a moment, both ways: from its mark (what a cycle would
/// propose now) and from the whole mirror (the reference every rule was first written as).
#[derive(Debug)]
pub struct Looks {
    pub rule: &'static str,
    pub incremental: Vec<Proposal>,
    pub reference: Vec<Proposal>,
}

/// [`Looks`] for every incremental rule the tenant runs in `mode` or `dry_run`, at `now`;
/// nothing is applied and no mark moves.
pub async fn both_looks(
    store: &Store,
    tenant: &Tenant,
    dry_run: bool,
    now: Ts,
) -> Result<Vec<Looks>, StoreError> {
    let tid = tenant.id();
    let mut shared = shared(store, tid, now).await?;
    let whole = load_whole(store, tenant, now).await?;
    let mut sink = CycleSummary::default();
    let mut out = Vec::new();
    for rule in rules::RULES {
        let Some((_, mode)) = rules::effective(&tenant.cfg.rules, rule.name, dry_run) else {
            continue;
        };
        if mode == RuleMode::Off {
            continue;
        }
        let mut incremental = Vec::new();
        let mut look = Look::start(store, tenant, rule, mode, &shared).await?;
        while let Some(view) = look.next(store, tenant, &mut shared).await? {
            incremental.extend(propose(tenant, rule, now, &view, &mut sink).unwrap_or_default());
        }
        let reference = propose(tenant, rule, now, &whole, &mut sink).unwrap_or_default();
        out.push(Looks {
            rule: rule.name,
            incremental,
            reference,
        });
    }
    Ok(out)
}
