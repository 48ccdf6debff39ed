//! `dozor retry KEY`: gives a `dead` (or `failed`) action a fresh retry budget and tries it
//! once now, through the ledger as any other attempt: after the attempts already made the
//! ledger first looks for the action's marker in the CRM, so a write that did land is not
//! made twice.

use std::process::ExitCode;

use anyhow::Context;

use super::select;
use super::{Cli, CmdResult, RetryArgs, load_config, open_store};
use crate::config::RuleMode;
use crate::ledger::{self, Outcome, Proposal};
use crate::tenant;

pub(crate) async fn retry(cli: &Cli, a: &RetryArgs) -> CmdResult {
    let loaded = load_config(cli)?;
    let tenants = select(&loaded.config, a.tenant.as_deref())?;
    let store = open_store(cli, &loaded.config).await?;
    let Some(row) = store.action(&a.key).await? else {
        eprintln!(
            "no action has the key `{}`: copy it from `dozor audit --state dead`",
            a.key
        );
        return Ok(ExitCode::from(1));
    };
    let Some(t) = tenants.into_iter().find(|t| t.id == row.tenant) else {
        eprintln!(
            "action `{}` belongs to tenant `{}`, which is not configured here",
            a.key, row.tenant
        );
        return Ok(ExitCode::from(1));
    };
    if !matches!(row.state.as_str(), "dead" | "failed") {
        eprintln!(
            "action `{}` is `{}`, not dead or failed: nothing to retry",
            a.key, row.state
        );
        return Ok(ExitCode::from(1));
    }
    let p = Proposal::stored(&row, "retry")
        .with_context(|| format!("action {} has an unreadable payload", row.key))?;
    let Some(revived) = store.revive_action(&row.key).await? else {
        eprintln!(
            "action `{}` changed meanwhile; look again with `dozor audit`",
            a.key
        );
        return Ok(ExitCode::from(1));
    };
    tracing::info!(key = %revived.key, attempts = revived.attempts, "action revived by hand");
    let tenant = tenant::connect(t, &store)
        .await
        .with_context(|| format!("tenant {}", t.id))?;
    let sinks = tenant.sinks();
    let outcome = ledger::apply(&store, &t.id, &sinks, &p, RuleMode::On).await?;
    let summary = if p.summary.is_empty() {
        p.key.as_str()
    } else {
        p.summary.as_str()
    };
    match outcome {
        Outcome::Done(id) => println!("done: {summary} (CRM/Telegram id {id})"),
        Outcome::AlreadyDone => {
            println!("already done: its marker was found, nothing written again: {summary}")
        }
        Outcome::Retry(e) => {
            println!("failed again, will be retried by the daemon: {e}");
            return Ok(ExitCode::from(1));
        }
        Outcome::Failed(e) | Outcome::Dead(e) => {
            eprintln!("failed: {e}");
            return Ok(ExitCode::from(1));
        }
        Outcome::Shadow | Outcome::Skipped | Outcome::Deferred => {
            eprintln!("not tried: another instance holds the action; see `dozor audit`");
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}
