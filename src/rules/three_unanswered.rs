//! After `attempts` (3) outgoing calls to a deal's client with no conversation in between, the
//! deal is closed as lost ("не дозвонились"), the client is flagged for marketing retargeting, and
//! the manager is told (when their chat is configured).
//!
//! Keys: `three_unanswered:{tenant}:deal:{id}:{close|retarget|notify}`.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::RuleContext;
use super::scope::{self, GatherArgs, Incremental, PAGE, Page, Scope};
use crate::config::{Lang, ThreeUnansweredConfig};
use crate::domain::{Call, Direction, EntityKind, EntityRef, Semantics, phone};
use crate::ledger::{Effect, Proposal};
use crate::matching::number;
use crate::notify::telegram::escape_html as esc;
use crate::notify::{MessageKind, route};
use crate::store::StoreError;

/// Candidates: open deals with a client (a full look); since the last look, deals that changed,
/// deals of clients that changed, and deals of clients whose numbers had calls. Each comes with
/// its contact, company and every call of their numbers since the deal was created.
pub const INCREMENTAL: Incremental = Incremental {
    full_after: scope::never,
    gather: scope::Gather::Pages(|a| Box::pin(gather(a))),
};

async fn gather(a: GatherArgs<'_>) -> Result<Page, StoreError> {
    let (s, t) = (a.store, a.tenant);
    let (deals, next) = match a.scope {
        Scope::Full => {
            let deals = s.open_deals_with_client(t, a.after, PAGE).await?;
            let next = scope::next_after(deals.len(), deals.last().map(|d| d.id.as_str()));
            (deals, next)
        }
        Scope::Delta { changes, .. } => {
            let mut contacts: BTreeSet<String> =
                changes.ids(EntityKind::Contact).cloned().collect();
            let mut companies: BTreeSet<String> =
                changes.ids(EntityKind::Company).cloned().collect();
            let phones: Vec<String> = changes.phones.iter().cloned().collect();
            for e in s.owners_of_phones(t, &phones).await? {
                match e.kind {
                    EntityKind::Contact => contacts.insert(e.id),
                    EntityKind::Company => companies.insert(e.id),
                    _ => false,
                };
            }
            let contacts: Vec<String> = contacts.into_iter().collect();
            let companies: Vec<String> = companies.into_iter().collect();
            let mut ids: BTreeSet<String> = changes.ids(EntityKind::Deal).cloned().collect();
            ids.extend(s.deal_ids_of_clients(t, &contacts, &companies).await?);
            let ids: Vec<String> = ids.into_iter().collect();
            (s.deals_by_ids(t, &ids).await?, None)
        }
    };
    let mut mirror = scope::base_set(a.base);
    let ids = |f: fn(&crate::domain::Deal) -> Option<&String>| -> Vec<String> {
        let set: BTreeSet<&String> = deals.iter().filter_map(f).collect();
        set.into_iter().cloned().collect()
    };
    let (contact_ids, company_ids) = (
        ids(|d| d.contact_id.as_ref()),
        ids(|d| d.company_id.as_ref()),
    );
    mirror.contacts = s.contacts_by_ids(t, &contact_ids).await?;
    mirror.companies = s.companies_by_ids(t, &company_ids).await?;
    let mut phones = s.phones_of(t, EntityKind::Contact, &contact_ids).await?;
    phones.extend(s.phones_of(t, EntityKind::Company, &company_ids).await?);
    phones.sort();
    phones.dedup();
    if let Some(first) = deals.iter().map(|d| d.created_at).min() {
        mirror.calls = s.calls_of_phones(t, &phones, first).await?;
    }
    mirror.deals = deals;
    Ok(Page {
        mirror,
        next,
        ..Page::default()
    })
}

/// The loss reason dozor writes.
pub(crate) const REASON_RU: &str = "не дозвонились";

// Long: one candidate loop whose checks (attempts, answered call between, deal state, retargeting)
// read the same deal and call list.
pub(crate) fn propose(ctx: &RuleContext, cfg: &ThreeUnansweredConfig) -> Vec<Proposal> {
    let m = ctx.mirror;
    let attempts = cfg.attempts.max(1.0) as usize;
    let ru = ctx.lang == Lang::Ru;
    let mut out = Vec::new();
    let contacts: HashMap<&str, &crate::domain::Contact> =
        m.contacts.iter().map(|c| (c.id.as_str(), c)).collect();
    let companies: HashMap<&str, &crate::domain::Company> =
        m.companies.iter().map(|c| (c.id.as_str(), c)).collect();
    // Each call's number normalised once, calls grouped by it.
    let mut by_number: HashMap<String, Vec<&Call>> = HashMap::new();
    for c in &m.calls {
        if let Some(p) = number(c) {
            by_number.entry(p).or_default().push(c);
        }
    }
    for d in m
        .deals
        .iter()
        .filter(|d| d.semantics == Semantics::Open && super::in_scope(cfg, d))
    {
        let (client, phones): (Option<EntityRef>, HashSet<String>) =
            if let Some(c) = d.contact_id.as_deref().and_then(|id| contacts.get(id)) {
                (
                    Some(EntityRef::new(EntityKind::Contact, c.id.clone())),
                    c.phones
                        .iter()
                        .filter_map(|p| phone::normalize(p).ok())
                        .collect(),
                )
            } else if let Some(c) = d.company_id.as_deref().and_then(|id| companies.get(id)) {
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
        let mut calls: Vec<&Call> = phones
            .iter()
            .filter_map(|p| by_number.get(p))
            .flatten()
            .copied()
            .filter(|c| c.started_at >= d.created_at)
            .collect();
        // Calls of the same second in a fixed order, whichever way they were read.
        calls.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
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
