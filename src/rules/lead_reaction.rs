//! "A new lead is taken to work fast": a lead nobody has contacted is yellow after
//! `yellow_minutes` and reaches the head of sales after `alert_minutes` of business time.
//! Alerts go out as one digest per hour window, not one message per lead.
//!
//! Contacted = an outgoing call to one of the lead's numbers, or any activity on the lead, after
//! it was created; a lead that left its first status (taken to work, converted, junk) is done.
//!
//! Key: `lead_reaction:{tenant}:digest:{date}T{hour}`.

use std::collections::HashSet;

use chrono::Timelike;

use super::RuleContext;
use crate::config::{Lang, RuleConfig};
use crate::domain::{Direction, EntityKind, Lead, Semantics, phone};
use crate::ledger::{Effect, Proposal};
use crate::notify::{MessageKind, route};
use crate::report::render::esc;

/// How long a lead has waited, in business minutes, if nobody has contacted it yet.
pub fn waiting_minutes(ctx: &RuleContext, lead: &Lead) -> Option<i64> {
    waiting(ctx.mirror, ctx.calendar, ctx.now, lead)
}

/// [`waiting_minutes`] without a rule context, for reports.
pub fn waiting(
    mirror: &crate::store::Snapshot,
    calendar: &crate::domain::calendar::BusinessCalendar,
    now: crate::domain::Ts,
    lead: &Lead,
) -> Option<i64> {
    if lead.semantics != Semantics::Open || !is_first_status(mirror, lead) {
        return None;
    }
    let phones: HashSet<String> = lead
        .phones
        .iter()
        .filter_map(|p| phone::normalize(p).ok())
        .collect();
    let called = mirror.calls.iter().any(|c| {
        c.direction == Direction::Out
            && c.started_at >= lead.created_at
            && phone::normalize(&c.client_phone).is_ok_and(|p| phones.contains(&p))
    });
    let touched = mirror.activities.iter().any(|a| {
        a.started_at >= lead.created_at
            && a.entity
                .as_ref()
                .is_some_and(|e| e.kind == EntityKind::Lead && e.id == lead.id)
    });
    if called || touched {
        return None;
    }
    Some(calendar.business_minutes_between(lead.created_at, now))
}

/// A lead still in the first status of the lead funnel (lowest sort), or `NEW` when the
/// mirror has no lead statuses.
fn is_first_status(mirror: &crate::store::Snapshot, lead: &Lead) -> bool {
    let first = mirror
        .stages
        .iter()
        .filter(|s| s.pipeline_id == "leads")
        .min_by_key(|s| s.sort);
    match first {
        Some(s) => s.id == lead.status_id,
        None => lead.status_id == "NEW",
    }
}

pub fn propose(ctx: &RuleContext, cfg: &RuleConfig) -> Vec<Proposal> {
    let Some(to) = route(ctx.telegram, MessageKind::Alert) else {
        return Vec::new();
    };
    let alert = cfg.param("alert_minutes") as i64;
    let mut late: Vec<(&Lead, i64)> = ctx
        .mirror
        .leads
        .iter()
        .filter_map(|l| waiting_minutes(ctx, l).map(|m| (l, m)))
        .filter(|(_, m)| *m >= alert)
        .collect();
    if late.is_empty() {
        return Vec::new();
    }
    late.sort_by_key(|(l, _)| l.created_at);
    let ru = ctx.lang == Lang::Ru;
    let mut html = if ru {
        format!(
            "<b>🟥 Лиды без реакции дольше {alert} мин: {}</b>\n",
            late.len()
        )
    } else {
        format!(
            "<b>🟥 Leads with no reaction for over {alert} min: {}</b>\n",
            late.len()
        )
    };
    let names: std::collections::HashMap<&str, &str> = ctx
        .mirror
        .users
        .iter()
        .map(|u| (u.id.as_str(), u.name.as_str()))
        .collect();
    for (l, m) in late.iter().take(40) {
        let who = l
            .responsible_id
            .as_deref()
            .map(|id| names.get(id).copied().unwrap_or(id))
            .unwrap_or("—");
        html.push_str(&format!(
            "• {} — {} ({m} {})\n",
            esc(&l.title),
            esc(who),
            if ru { "мин" } else { "min" }
        ));
    }
    let local = ctx.now.with_timezone(&ctx.calendar.tz);
    vec![Proposal {
        key: format!(
            "lead_reaction:{}:digest:{}T{}",
            ctx.tenant,
            local.date_naive(),
            local.hour()
        ),
        rule: "lead_reaction",
        entity: None,
        summary: format!(
            "{} lead(s) waiting over {alert} min → head of sales",
            late.len()
        ),
        effect: Effect::Telegram {
            chat: to.chat,
            thread: to.thread,
            html,
        },
    }]
}
