//! "A new lead is taken to work fast": a lead nobody has contacted is yellow after
//! `yellow_minutes` and reaches the head of sales after `alert_minutes` of business time.
//! Alerts go out as one digest per hour window, not one message per lead.
//!
//! Contacted = an outgoing call to one of the lead's numbers, or any activity on the lead, after
//! it was created; a lead that left its first status (taken to work, converted, junk) is done.
//!
//! Key: `lead_reaction:{tenant}:digest:{date}T{hour}`.

use std::collections::{HashMap, HashSet};

use chrono::Timelike;

use super::RuleContext;
use super::scope::{self, GatherArgs, Incremental, Page};
use crate::config::{Lang, LeadReactionConfig};
use crate::domain::{Direction, EntityKind, Lead, Semantics, Ts, phone};
use crate::ledger::{Effect, Proposal};
use crate::notify::telegram::escape_html as esc;
use crate::notify::{MessageKind, route};
use crate::store::StoreError;

/// Every open lead with its calls and activities, read only while the hour's digest is not yet
/// settled in the ledger.
pub const INCREMENTAL: Incremental = Incremental {
    full_after: scope::never,
    gather: scope::Gather::Pages(|a| Box::pin(gather(a))),
};

async fn gather(a: GatherArgs<'_>) -> Result<Page, StoreError> {
    let mut mirror = scope::base_set(a.base);
    if !scope::any_unsettled(&a, &[key(a.tenant, a.now, a.calendar.tz)]).await? {
        return Ok(Page {
            mirror,
            ..Page::default()
        });
    }
    let (s, t) = (a.store, a.tenant);
    let leads = s.open_leads(t).await?;
    let ids: Vec<String> = leads.iter().map(|l| l.id.clone()).collect();
    let phones = s.phones_of(t, EntityKind::Lead, &ids).await?;
    if let Some(first) = leads.iter().map(|l| l.created_at).min() {
        mirror.calls = s.calls_of_phones(t, &phones, first).await?;
    }
    mirror.activities = s.activities_of(t, EntityKind::Lead, &ids).await?;
    mirror.leads = leads;
    Ok(Page {
        mirror,
        ..Page::default()
    })
}

/// The key of the current hour's digest.
fn key(tenant: &str, now: Ts, tz: chrono_tz::Tz) -> String {
    let local = now.with_timezone(&tz);
    format!(
        "lead_reaction:{tenant}:digest:{}T{}",
        local.date_naive(),
        local.hour()
    )
}

/// Who was contacted since when: outgoing calls by number and activities by lead, indexed once
/// so that checking every lead costs one lookup each, not a pass over all calls.
pub(crate) struct Contacts<'a> {
    mirror: &'a crate::store::Snapshot,
    out_calls: HashMap<String, Vec<crate::domain::Ts>>,
    lead_touches: HashMap<&'a str, Vec<crate::domain::Ts>>,
}

impl<'a> Contacts<'a> {
    pub(crate) fn new(mirror: &'a crate::store::Snapshot) -> Self {
        let mut out_calls: HashMap<String, Vec<crate::domain::Ts>> = HashMap::new();
        for c in mirror
            .calls
            .iter()
            .filter(|c| c.direction == Direction::Out)
        {
            if let Ok(p) = phone::normalize(&c.client_phone) {
                out_calls.entry(p).or_default().push(c.started_at);
            }
        }
        let mut lead_touches: HashMap<&str, Vec<crate::domain::Ts>> = HashMap::new();
        for a in &mirror.activities {
            if let Some(e) = &a.entity
                && e.kind == EntityKind::Lead
            {
                lead_touches
                    .entry(e.id.as_str())
                    .or_default()
                    .push(a.started_at);
            }
        }
        Contacts {
            mirror,
            out_calls,
            lead_touches,
        }
    }

    /// How long `lead` has waited, in business minutes, if nobody has contacted it yet.
    pub(crate) fn waiting(
        &self,
        calendar: &crate::domain::calendar::BusinessCalendar,
        now: crate::domain::Ts,
        lead: &Lead,
    ) -> Option<i64> {
        if lead.semantics != Semantics::Open || !is_first_status(self.mirror, lead) {
            return None;
        }
        let since = |ts: &Vec<crate::domain::Ts>| ts.iter().any(|t| *t >= lead.created_at);
        let called = lead
            .phones
            .iter()
            .filter_map(|p| phone::normalize(p).ok())
            .collect::<HashSet<String>>()
            .iter()
            .any(|p| self.out_calls.get(p).is_some_and(since));
        let touched = self.lead_touches.get(lead.id.as_str()).is_some_and(since);
        if called || touched {
            return None;
        }
        Some(calendar.business_minutes_between(lead.created_at, now))
    }
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

pub(crate) fn propose(ctx: &RuleContext, cfg: &LeadReactionConfig) -> Vec<Proposal> {
    let Some(to) = route(ctx.telegram, MessageKind::Alert) else {
        return Vec::new();
    };
    let alert = cfg.alert_minutes as i64;
    let contacts = Contacts::new(ctx.mirror);
    let mut late: Vec<(&Lead, i64)> = ctx
        .mirror
        .leads
        .iter()
        .filter_map(|l| contacts.waiting(ctx.calendar, ctx.now, l).map(|m| (l, m)))
        .filter(|(_, m)| *m >= alert)
        .collect();
    if late.is_empty() {
        return Vec::new();
    }
    late.sort_by(|(a, _), (b, _)| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
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
    let names = crate::domain::User::names(&ctx.mirror.users);
    for (l, m) in late.iter().take(40) {
        let who = l
            .responsible_id
            .as_deref()
            .map(|id| crate::domain::User::name_in(&names, id, ru))
            .unwrap_or_else(|| "—".into());
        html.push_str(&format!(
            "• {} — {} ({m} {})\n",
            esc(&l.title),
            esc(&who),
            if ru { "мин" } else { "min" }
        ));
    }
    vec![Proposal {
        key: key(ctx.tenant, ctx.now, ctx.calendar.tz),
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
