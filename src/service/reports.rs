//! Reports the daemon and the commands send: the rule actions of the last day they list, and the
//! sending itself through the ledger (once per period, charts under their own keys).

use anyhow::Context;

use crate::ledger::{self, Effect, Outcome, Proposal};
use crate::report;
use crate::store::Store;
use crate::tenant;

/// The start of the ledger key of every `kind` report of `tenant`; the period's first day
/// completes it (`report:demo:daily:2026-12-01`).
pub(crate) fn report_key_prefix(tenant: &str, kind: &str) -> String {
    format!("report:{tenant}:{kind}:")
}

/// Sends a report to the owner chat through the ledger, so it goes out once per period: the
/// text first, then each chart as a photo under its own key. The outcome is the text's.
pub(crate) async fn send_report(
    store: &Store,
    tenant: &tenant::Tenant,
    rep: &report::Report,
) -> anyhow::Result<Outcome> {
    use base64::Engine as _;
    let tg_cfg = tenant
        .cfg
        .telegram
        .as_ref()
        .context("no [tenants.telegram] section: cannot send")?;
    let to = crate::notify::route(Some(tg_cfg), crate::notify::MessageKind::Report)
        .context("telegram.owner_chat is not set: nowhere to send the report")?;
    let chat = to.chat;
    let key = format!(
        "{}{}",
        report_key_prefix(tenant.id(), rep.kind),
        rep.period_from
    );
    let sinks = tenant.sinks();
    let text = Proposal {
        key: key.clone(),
        rule: "report",
        entity: None,
        summary: format!("{} report {} to chat {chat}", rep.kind, rep.period_from),
        effect: Effect::Telegram {
            chat,
            thread: to.thread,
            html: rep.html.clone(),
        },
    };
    let outcome = ledger::apply(
        store,
        tenant.id(),
        &sinks,
        &text,
        crate::config::RuleMode::On,
    )
    .await?;
    // Charts follow the text even when it failed for now: both are redelivered by later cycles,
    // and a photo never recorded would be lost once the schedule has moved on.
    for c in &rep.charts {
        let photo = Proposal {
            key: format!("{key}:chart:{}", c.name),
            rule: "report",
            entity: None,
            summary: format!(
                "{} report {} chart {} to chat {chat}",
                rep.kind, rep.period_from, c.name
            ),
            effect: Effect::TelegramPhoto {
                chat,
                thread: to.thread,
                caption: c.caption.clone(),
                png_base64: base64::engine::general_purpose::STANDARD.encode(&c.png),
            },
        };
        let o = ledger::apply(
            store,
            tenant.id(),
            &sinks,
            &photo,
            crate::config::RuleMode::On,
        )
        .await?;
        if let Outcome::Retry(e) | Outcome::Failed(e) = &o {
            tracing::warn!(tenant = tenant.id(), chart = %c.name, error = %e, "report chart not sent");
        }
    }
    Ok(outcome)
}
