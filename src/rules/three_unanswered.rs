//! After `attempts` (3) outgoing calls to a deal's client with no conversation in between, the
//! deal is closed as lost ("не дозвонились"), the client is flagged for marketing retargeting, and
//! the manager is told (when their chat is configured).
//!
//! Keys: `three_unanswered:{tenant}:deal:{id}:{close|retarget|notify}`.

use std::collections::HashSet;

use super::RuleContext;
use crate::config::{Lang, ThreeUnansweredConfig};
use crate::domain::{Direction, EntityKind, EntityRef, Semantics, phone};
use crate::ledger::{Effect, Proposal};
use crate::matching::number;
use crate::notify::telegram::escape_html as esc;
use crate::notify::{MessageKind, route};

/// The loss reason dozor writes.
pub(crate) const REASON_RU: &str = "не дозвонились";

// Long: one candidate loop whose checks (attempts, answered call between, deal state, retargeting)
// read the same deal and call list.
pub(crate) fn propose(ctx: &RuleContext, cfg: &ThreeUnansweredConfig) -> Vec<Proposal> {
    let m = ctx.mirror;
    let attempts = cfg.attempts.max(1.0) as usize;
    let ru = ctx.lang == Lang::Ru;
    let mut out = Vec::new();
    for d in m
        .deals
        .iter()
        .filter(|d| d.semantics == Semantics::Open && super::in_scope(cfg, d))
    {
        let (client, phones): (Option<EntityRef>, HashSet<String>) = if let Some(c) = d
            .contact_id
            .as_ref()
            .and_then(|id| m.contacts.iter().find(|c| &c.id == id))
        {
            (
                Some(EntityRef::new(EntityKind::Contact, c.id.clone())),
                c.phones
                    .iter()
                    .filter_map(|p| phone::normalize(p).ok())
                    .collect(),
            )
        } else if let Some(c) = d
            .company_id
            .as_ref()
            .and_then(|id| m.companies.iter().find(|c| &c.id == id))
        {
            (
                Some(EntityRef::new(EntityKind::Company, c.id.clone())),
                c.phones
                    .iter()
                    .filter_map(|p| phone::normalize(p).ok())
                    .collect(),
            )
        } else {
            (None, HashSet::new())
        };
        if phones.is_empty() {
            continue;
        }
        let mut calls: Vec<_> = m
            .calls
            .iter()
            .filter(|c| c.started_at >= d.created_at)
            .filter(|c| number(c).is_some_and(|p| phones.contains(&p)))
            .collect();
        calls.sort_by_key(|c| c.started_at);
        // Unanswered outgoing attempts since the last conversation.
        let since_talk = calls
            .iter()
            .rev()
            .take_while(|c| !c.answered)
            .filter(|c| c.direction == Direction::Out)
            .count();
        if since_talk < attempts {
            continue;
        }
        let base = format!("three_unanswered:{}:deal:{}", ctx.tenant, d.id);
        out.push(Proposal {
            key: format!("{base}:close"),
            rule: "three_unanswered",
            entity: Some(EntityRef::new(EntityKind::Deal, d.id.clone())),
            summary: format!(
                "deal {} «{}»: {since_talk} unanswered calls → lost",
                d.id, d.title
            ),
            effect: Effect::CloseDealLost {
                deal_id: d.id.clone(),
                reason: if ru {
                    REASON_RU.to_string()
                } else {
                    "could not reach the client".to_string()
                },
            },
        });
        if let Some(client) = client {
            out.push(Proposal {
                key: format!("{base}:retarget"),
                rule: "three_unanswered",
                entity: Some(client.clone()),
                summary: format!(
                    "{}:{} → marketing retargeting",
                    client.kind.as_str(),
                    client.id
                ),
                effect: Effect::UpdateTags {
                    entity: client,
                    add: vec![ctx.marketing.retarget_tag.clone()],
                    remove: vec![],
                },
            });
        }
        let to = d
            .responsible_id
            .as_ref()
            .and_then(|r| route(ctx.telegram, MessageKind::TaskNotice { manager: r }));
        if let Some(to) = to {
            let html = if ru {
                format!(
                    "<b>Сделка «{}» закрыта</b>: {since_talk} звонка без ответа. Клиент передан в ретаргетинг.",
                    esc(&d.title)
                )
            } else {
                format!(
                    "<b>Deal \"{}\" closed</b>: {since_talk} calls unanswered. The client went to retargeting.",
                    esc(&d.title)
                )
            };
            out.push(Proposal {
                key: format!("{base}:notify"),
                rule: "three_unanswered",
                entity: Some(EntityRef::new(EntityKind::Deal, d.id.clone())),
                summary: format!("manager told about deal {}", d.id),
                effect: Effect::Telegram {
                    chat: to.chat,
                    thread: to.thread,
                    html,
                },
            });
        }
    }
    out
}
