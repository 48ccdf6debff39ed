//! `dozor once`: one sync and rules cycle for every tenant, a summary, and the exit status.

use std::process::ExitCode;

use anyhow::Context;

use super::{Cli, CmdResult, OnceArgs, load_config, log_rule_modes, open_store, select};
use crate::engine::{self, CycleOptions, CycleSummary};
use crate::ledger::Outcome;
use crate::tenant;

/// Prints a cycle's summary for humans.
pub(crate) fn print_summary(s: &CycleSummary, dry_run: bool) {
    println!(
        "tenant {} — cycle in {:.1} s",
        s.tenant,
        s.elapsed.as_secs_f64()
    );
    for r in &s.synced {
        let parts: Vec<String> = r.items.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "  sync {:<10} {:>6} records ({}) in {:.1} s",
            r.source,
            r.total(),
            parts.join(", "),
            r.elapsed.as_secs_f64()
        );
    }
    for e in &s.errors {
        println!("  ERROR {e}");
    }
    if s.actions.is_empty() {
        println!("  rules: none ran");
    }
    let failed = failed_actions(s);
    if failed > 0 {
        println!("  actions failed: {failed}");
    }
    for a in &s.actions {
        let verb = if dry_run { "would do" } else { "done" };
        println!(
            "  rule {:<20} {verb} {}, shadow {}, failed {}",
            a.rule,
            if dry_run { a.shadow } else { a.done },
            if dry_run { 0 } else { a.shadow },
            a.failed
        );
    }
}

pub(crate) async fn once(cli: &Cli, a: &OnceArgs) -> CmdResult {
    let loaded = load_config(cli)?;
    let tenants = select(&loaded.config, a.tenant.as_deref())?;
    log_rule_modes(&tenants, a.dry_run);
    let store = open_store(cli, &loaded.config).await?;
    let opts = CycleOptions {
        dry_run: a.dry_run,
        sync: engine::sync_options(&loaded.config),
        now: None,
    };
    let mut failed = false;
    let mut actions_failed = 0;
    for t in tenants {
        let tenant = tenant::connect(t, &store)
            .await
            .with_context(|| format!("tenant {}", t.id))?;
        let s = engine::run_cycle(&store, &tenant, opts).await;
        print_summary(&s, a.dry_run);
        failed |= !s.ok();
        actions_failed += failed_actions(&s);
    }
    if actions_failed > 0 {
        println!("{actions_failed} action(s) failed this cycle: see `dozor audit` (exit status 3)");
    }
    Ok(once_exit(failed, actions_failed))
}

/// Actions of a cycle that did not get done: refused for good, parked dead, or waiting for a
/// retry after a transient error. A cron job must see them, not a clean exit.
pub(crate) fn failed_actions(s: &CycleSummary) -> usize {
    s.applied
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                Outcome::Failed(_) | Outcome::Retry(_) | Outcome::Dead(_)
            )
        })
        .count()
}

/// Exit status of `once`: 1 when a source failed (the cycle itself is incomplete), else 3 when
/// any action failed, else 0.
fn once_exit(source_failed: bool, actions_failed: usize) -> ExitCode {
    if source_failed {
        ExitCode::from(1)
    } else if actions_failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
