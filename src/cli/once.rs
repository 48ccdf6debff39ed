//! `dozor once`, `dozor report` and `dozor audit`: one-shot commands over the configured tenants.

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;

use super::{
    AuditArgs, Cli, CmdResult, OnceArgs, ReportArgs, ReportFormat, ReportKind, load_config,
    open_store,
};
use crate::config::{Config, ConfigError, TenantConfig};
use crate::engine::{self, CycleOptions, CycleSummary};
use crate::ledger::{self, Effect, Outcome, Proposal};
use crate::report;
use crate::service::reports::{action_lines, send_report};
use crate::tenant;

/// The tenants a command acts on (`--tenant` or all), or a config error naming the unknown id.
pub(crate) fn select<'a>(
    c: &'a Config,
    only: Option<&str>,
) -> Result<Vec<&'a TenantConfig>, ConfigError> {
    match only {
        None => Ok(c.tenants.iter().collect()),
        Some(id) => c
            .tenants
            .iter()
            .find(|t| t.id == id)
            .map(|t| vec![t])
            .ok_or_else(|| ConfigError {
                file: None,
                key: Some("tenants".into()),
                line: None,
                env_var: None,
                message: format!(
                    "no tenant `{id}`; configured: {}",
                    c.tenants
                        .iter()
                        .map(|t| t.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
    }
}

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

pub async fn once(cli: &Cli, a: &OnceArgs) -> CmdResult {
    let loaded = load_config(cli)?;
    let tenants = select(&loaded.config, a.tenant.as_deref())?;
    super::log_rule_modes(&tenants, a.dry_run);
    let store = open_store(cli, &loaded.config).await?;
    let opts = CycleOptions {
        dry_run: a.dry_run,
        sync: engine::sync_options(&loaded.config),
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

pub async fn report(cli: &Cli, a: &ReportArgs) -> CmdResult {
    let loaded = load_config(cli)?;
    let kind = match a.kind {
        ReportKind::Daily => report::Kind::Daily,
        ReportKind::Weekly => report::Kind::Weekly,
        ReportKind::Monthly => report::Kind::Monthly,
        ReportKind::Calls => return super::report_calls::report_calls(cli, a).await,
    };
    let tenants = select(&loaded.config, a.tenant.as_deref())?;
    let store = open_store(cli, &loaded.config).await?;
    let now = Utc::now();
    for t in tenants {
        let actions = action_lines(&store, &t.id).await?;
        let rep = report::build(&store, t, kind, a.date, now, &actions).await?;
        let what = if rep.period_from == rep.period_to {
            format!("{} report for {}", rep.kind, rep.period_from)
        } else {
            format!(
                "{} report for {} – {}",
                rep.kind, rep.period_from, rep.period_to
            )
        };
        if let (Some(fmt), Some(out)) = (a.format, &a.out) {
            let text = match fmt {
                ReportFormat::Html => rep.html.clone(),
                ReportFormat::Md => to_markdown(&rep.html),
                ReportFormat::Json => {
                    serde_json::to_string_pretty(&rep).context("serialising the report")?
                }
            };
            std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
            println!("{}: {what} written to {}", t.id, out.display());
            for c in &rep.charts {
                let path = chart_path(out, &c.name);
                std::fs::write(&path, &c.png)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}: chart written to {}", t.id, path.display());
            }
        } else if a.send {
            let tenant = tenant::connect(t, &store)
                .await
                .with_context(|| format!("tenant {}", t.id))?;
            match send_report(&store, &tenant, &rep).await? {
                Outcome::Done(id) => {
                    println!("{}: {what} sent (message {id})", t.id)
                }
                Outcome::AlreadyDone => {
                    println!("{}: {what} was already sent", t.id)
                }
                Outcome::Retry(e) | Outcome::Failed(e) | Outcome::Dead(e) => {
                    eprintln!("{}: {what} not sent: {e}", t.id);
                    return Ok(ExitCode::from(1));
                }
                Outcome::Deferred => {
                    eprintln!(
                        "{}: {what} is waiting for its next attempt or parked (see `dozor audit --state dead`)",
                        t.id
                    );
                    return Ok(ExitCode::from(1));
                }
                Outcome::Shadow | Outcome::Skipped => {}
            }
        } else {
            println!("{}", rep.plain());
            if !rep.charts.is_empty() {
                let names: Vec<&str> = rep.charts.iter().map(|c| c.name.as_str()).collect();
                println!(
                    "({} chart(s): {}; write them with --format html --out FILE)",
                    names.len(),
                    names.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a chart goes beside the report file: `daily.html` → `daily-leads_won_trend.png`.
fn chart_path(out: &std::path::Path, name: &str) -> std::path::PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    out.with_file_name(format!("{stem}-{name}.png"))
}

/// Telegram HTML to Markdown (bold, italic, preformatted) for `--format md`.
fn to_markdown(html: &str) -> String {
    let md = html
        .replace("<b>", "**")
        .replace("</b>", "**")
        .replace("<i>", "_")
        .replace("</i>", "_")
        .replace("<pre>", "\n```\n")
        .replace("</pre>", "```\n");
    report::render::to_plain(&md)
}

/// The states a ledger row can be in.
const STATES: [&str; 5] = ["intent", "shadow", "done", "failed", "dead"];

pub async fn audit(cli: &Cli, a: &AuditArgs) -> CmdResult {
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

pub async fn revert(cli: &Cli, a: &super::RevertArgs) -> CmdResult {
    let loaded = load_config(cli)?;
    let tenants = select(&loaded.config, a.tenant.as_deref())?;
    let store = open_store(cli, &loaded.config).await?;
    let mut found = 0;
    let mut failed = 0;
    for t in tenants {
        let rows: Vec<_> = store
            .actions_in_state(&t.id, "done")
            .await?
            .into_iter()
            .filter(|r| r.key.starts_with(&a.key) && r.kind == "set_responsible")
            .collect();
        if rows.is_empty() {
            continue;
        }
        let tenant = tenant::connect(t, &store)
            .await
            .with_context(|| format!("tenant {}", t.id))?;
        let sinks = ledger::Sinks {
            crm: tenant.crm.as_ref(),
            telegram: tenant.telegram.as_ref(),
        };
        for r in rows {
            found += 1;
            let effect: Effect = serde_json::from_value(r.payload["effect"].clone())
                .with_context(|| format!("action {} has an unreadable payload", r.key))?;
            let Effect::SetResponsible {
                entity,
                user_id,
                previous: Some(previous),
            } = effect
            else {
                println!("{}: no previous owner recorded, nothing to revert", r.key);
                continue;
            };
            let p = Proposal {
                key: format!("revert:{}", r.key),
                rule: "revert",
                entity: Some(entity.clone()),
                summary: format!("{}:{} back to {previous}", entity.kind.as_str(), entity.id),
                effect: Effect::SetResponsible {
                    entity,
                    user_id: previous,
                    previous: Some(user_id),
                },
            };
            match ledger::apply(&store, &t.id, &sinks, &p, crate::config::RuleMode::On).await? {
                Outcome::Done(_) => println!("reverted {}: {}", r.key, p.summary),
                Outcome::AlreadyDone => println!("{} was already reverted", r.key),
                Outcome::Retry(e) | Outcome::Failed(e) | Outcome::Dead(e) => {
                    failed += 1;
                    eprintln!("could not revert {}: {e}", r.key);
                }
                Outcome::Deferred => {
                    failed += 1;
                    eprintln!(
                        "could not revert {} now: an earlier attempt failed and waits for its next try (see `dozor audit --rule revert`)",
                        r.key
                    );
                }
                Outcome::Shadow | Outcome::Skipped => {}
            }
        }
    }
    if found == 0 {
        eprintln!(
            "no done owner change has a key starting with `{}` (see `dozor audit`)",
            a.key
        );
        return Ok(ExitCode::from(1));
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
