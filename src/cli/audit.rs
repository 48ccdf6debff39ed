//! `dozor audit`: what dozor did, by time, rule, entity and outcome.

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;

use super::{AuditArgs, Cli, CmdResult, load_config, open_store, select};
use crate::config::ConfigError;

/// The states a ledger row can be in.
const STATES: [&str; 5] = ["intent", "shadow", "done", "failed", "dead"];

pub(crate) async fn audit(cli: &Cli, a: &AuditArgs) -> CmdResult {
    let loaded = load_config(cli)?;
    let tenants = select(&loaded.config, a.tenant.as_deref())?;
    if let Some(state) = &a.state
        && !STATES.contains(&state.as_str())
    {
        return Err(super::Failure::Config(ConfigError {
            file: None,
            key: Some("--state".into()),
            line: None,
            env_var: None,
            message: format!("unknown state `{state}`; one of: {}", STATES.join(", ")),
        }));
    }
    let store = open_store(cli, &loaded.config).await?;
    for t in tenants {
        let since = a
            .since
            .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let entity = a
            .entity
            .as_deref()
            .map(|e| e.split_once(':').unwrap_or((e, "")));
        let rows: Vec<_> = store
            .actions_since(&t.id, since, i64::MAX)
            .await?
            .into_iter()
            .filter(|r| a.rule.as_ref().is_none_or(|x| &r.rule == x))
            .filter(|r| a.state.as_ref().is_none_or(|x| &r.state == x))
            .filter(|r| {
                entity.is_none_or(|(k, id)| {
                    r.entity_kind.as_deref() == Some(k) && r.entity_id.as_deref() == Some(id)
                })
            })
            .collect();
        let skip = rows.len().saturating_sub(a.limit.max(1) as usize);
        let rows = &rows[skip..];
        if a.json {
            for r in rows {
                println!(
                    "{}",
                    serde_json::to_string(r).context("serialising an action")?
                );
            }
            continue;
        }
        println!("tenant {}: {} action(s)", t.id, rows.len());
        for r in rows {
            println!(
                "{}  {:<18} {:<8} {:<6} {}{}",
                r.created_at.format("%Y-%m-%d %H:%M:%S"),
                r.rule,
                r.state,
                r.attempts,
                r.payload["summary"].as_str().unwrap_or(&r.key),
                r.error
                    .as_ref()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            );
            // What `dozor retry` needs.
            if r.state == "dead" || r.state == "failed" {
                println!("    key: {}", r.key);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
