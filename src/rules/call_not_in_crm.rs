//! "Every call lands in the CRM": a telephony call whose number belongs to a CRM record but that
//! the CRM timeline does not show (no activity with its call id) is registered there, with its
//! direction, duration and recording. Calls from unknown numbers wait for `unknown_caller` to
//! create their lead, then are registered on the next cycle.
//!
//! Key: `call_not_in_crm:{tenant}:{provider}:{call id}`.

use std::collections::HashSet;

use super::RuleContext;
use crate::config::CallNotInCrmConfig;
use crate::crm::CallRecord;
use crate::ledger::{Effect, Proposal};
use crate::matching::{PhoneBook, employee_user, number, recent};

pub(crate) fn propose(ctx: &RuleContext, cfg: &CallNotInCrmConfig) -> Vec<Proposal> {
    let book = PhoneBook::with_links(ctx.mirror, ctx.calls);
    let known: HashSet<&str> = ctx
        .mirror
        .activities
        .iter()
        .filter_map(|a| a.external_id.as_deref())
        .collect();
    recent(ctx.mirror, ctx.now, cfg.lookback_hours)
        .filter(|c| !known.contains(c.id.as_str()))
        .filter_map(|c| {
            let p = number(c)?;
            let entity = book.binding(&p)?;
            // A record the CRM found after the last sync has no owner in the mirror yet: the
            // manager on duty stands in (Bitrix24 needs someone to register a call under).
            let responsible = employee_user(ctx.mirror, ctx.calls, c)
                .or_else(|| book.owner(&entity))
                .or_else(|| ctx.roles.on_duty.first().cloned());
            Some(Proposal {
                key: format!(
                    "call_not_in_crm:{}:{}:{}",
                    ctx.tenant,
                    c.provider.as_str(),
                    c.id
                ),
                rule: "call_not_in_crm",
                entity: Some(entity.clone()),
                summary: format!(
                    "call {} ({}) → {}:{}",
                    c.id,
                    p,
                    entity.kind.as_str(),
                    entity.id
                ),
                effect: Effect::RegisterCall(CallRecord {
                    external_id: c.id.clone(),
                    direction: c.direction,
                    phone: p,
                    started_at: c.started_at,
                    duration_s: c.talk_s,
                    answered: c.answered,
                    responsible_id: responsible,
                    recording_url: c.recording_url.clone(),
                    entity: Some(entity),
                }),
            })
        })
        .collect()
}
