//! `dozor report`: a report from the mirror, printed, sent to Telegram or written to a file.

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;

use super::{
    Cli, CmdResult, ReportArgs, ReportFormat, ReportKind, load_config, open_store, select,
};
use crate::ledger::Outcome;
use crate::ledger::action_lines;
use crate::report;
use crate::service::reports::send_report;
use crate::tenant;

pub(crate) async fn report(cli: &Cli, a: &ReportArgs) -> CmdResult {
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
