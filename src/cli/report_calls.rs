//! `dozor report calls`: which of a day's telephony calls never reached the CRM.

use std::process::ExitCode;

use anyhow::Context;
use chrono::{Duration, Utc};

use super::{Cli, CmdResult, ReportArgs, ReportFormat, load_config, open_store, select};
use crate::report;

pub(crate) async fn report_calls(cli: &Cli, a: &ReportArgs) -> CmdResult {
    if a.send {
        return Err(anyhow::anyhow!(
            "the calls report is not sent to Telegram; print it, or write it with --format json --out FILE"
        )
        .into());
    }
    let loaded = load_config(cli)?;
    let tenants = select(&loaded.config, a.tenant.as_deref())?;
    let store = open_store(cli, &loaded.config).await?;
    let mut reports = Vec::new();
    for t in tenants {
        let day = a
            .date
            .unwrap_or_else(|| report::local_date(t, Utc::now()) - Duration::days(1));
        reports.push(
            report::calls::build(&store, t, day)
                .await
                .with_context(|| format!("tenant {}", t.id))?,
        );
    }
    match (a.format, &a.out) {
        (Some(fmt), Some(out)) => {
            let text = match fmt {
                ReportFormat::Json => {
                    serde_json::to_string_pretty(&reports).context("serialising the report")?
                }
                ReportFormat::Html | ReportFormat::Md => reports
                    .iter()
                    .map(|r| r.plain())
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
            for r in &reports {
                println!(
                    "{}: calls report for {} written to {} ({} of {} calls not in the CRM)",
                    r.tenant,
                    r.date,
                    out.display(),
                    r.missing.len(),
                    r.telephony_calls
                );
            }
        }
        _ => {
            for r in &reports {
                println!("{}", r.plain());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
