//! Clients as the idle and dormant rules see them: a company, or a contact without a company,
//! with its deals, orders, revenue, ABC class and last activity.

use std::collections::{HashMap, HashSet};

use chrono::Duration;

use crate::config::{DormantConfig, NoActivityConfig};
use crate::domain::abc::{Abc, abc};
use crate::domain::{Direction, EntityKind, EntityRef, Semantics, Ts, phone};
use crate::store::Snapshot;

/// ABC classes of clients computed over the whole mirror, for a snapshot that holds part of it
/// (a class depends on every client's revenue).
pub(crate) type Classes = HashMap<EntityRef, Abc>;

/// One client.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) entity: EntityRef,
    pub(crate) name: String,
    pub(crate) responsible_id: Option<String>,
    pub(crate) created_at: Ts,
    pub(crate) deal_ids: Vec<String>,
    pub(crate) open_deals: usize,
    /// Close times of won deals, oldest first.
    pub(crate) orders: Vec<Ts>,
    pub(crate) revenue: f64,
    pub(crate) class: Abc,
    /// The newest call, meeting, e-mail or completed task (`None` = never).
    pub(crate) last_activity: Option<Ts>,
}

impl Client {
    pub(crate) fn last_order(&self) -> Option<Ts> {
        self.orders.last().copied()
    }

    /// When the client counts as idle (no activity) under `cfg`: strictly after this moment.
    pub(crate) fn idle_after(&self, cfg: &NoActivityConfig) -> Ts {
        let days = if self.class == Abc::A {
            cfg.top_days
        } else {
            cfg.other_days
        };
        self.last_activity.unwrap_or(self.created_at) + days_of(days)
    }

    /// When the client counts as dormant under `cfg`: strictly after this moment; `None` while
    /// it has an open deal or never ordered (a prospect, not a dormant client).
    pub(crate) fn dormant_after(&self, cfg: &DormantConfig) -> Option<Ts> {
        let last = self.last_order()?;
        if self.open_deals > 0 {
            return None;
        }
        let days = if self.class == Abc::A {
            cfg.top_days
        } else if self.orders.len() == 1 {
            cfg.one_time_days
        } else {
            cfg.other_days
        };
        Some(last + days_of(days))
    }
}

/// A threshold in days as the rules count it: whole hours.
fn days_of(days: f64) -> Duration {
    Duration::hours((days * 24.0) as i64)
}

/// The client a deal belongs to: its company, else its contact's company, else its contact.
/// `company_of(contact)` is the contact's company when the contact is known and has one. Whether
/// that client exists is for the caller to check.
pub(crate) fn client_of(
    company: Option<&str>,
    contact: Option<&str>,
    company_of: impl Fn(&str) -> Option<String>,
) -> Option<EntityRef> {
    if let Some(c) = company {
        return Some(EntityRef::new(EntityKind::Company, c));
    }
    let contact = contact?;
    Some(match company_of(contact) {
        Some(company) => EntityRef::new(EntityKind::Company, company),
        None => EntityRef::new(EntityKind::Contact, contact),
    })
}

/// Every contact and company that has at least one deal, as a client; classes from `classes`
/// when `m` is part of the mirror, else computed over `m`.
// Long: one pass over deals, contacts and companies building each client in place; split, the
// half-built map would pass between helpers.
pub(crate) fn clients(m: &Snapshot, classes: Option<&Classes>) -> Vec<Client> {
    let mut by: HashMap<EntityRef, Client> = HashMap::new();
    let contact_company: HashMap<&str, Option<&String>> = m
        .contacts
        .iter()
        .map(|c| (c.id.as_str(), c.company_id.as_ref()))
        .collect();
    let company_of = |contact: &str| contact_company.get(contact).copied().flatten().cloned();
    for c in &m.contacts {
        let key = EntityRef::new(EntityKind::Contact, c.id.clone());
        by.insert(
            key.clone(),
            new_client(key, &c.name, &c.responsible_id, c.created_at),
        );
    }
    for c in &m.companies {
        let key = EntityRef::new(EntityKind::Company, c.id.clone());
        by.insert(
            key.clone(),
            new_client(key, &c.name, &c.responsible_id, c.created_at),
        );
    }
    let mut deal_client: HashMap<&str, EntityRef> = HashMap::new();
    for d in &m.deals {
        let Some(key) = client_of(d.company_id.as_deref(), d.contact_id.as_deref(), company_of)
        else {
            continue;
        };
        let Some(cl) = by.get_mut(&key) else { continue };
        cl.deal_ids.push(d.id.clone());
        match d.semantics {
            Semantics::Open => cl.open_deals += 1,
            Semantics::Won => {
                cl.orders.push(d.closed_at.unwrap_or(d.updated_at));
                cl.revenue += d.amount;
            }
            Semantics::Lost => {}
        }
        deal_client.insert(d.id.as_str(), key);
    }
    let mut out: Vec<Client> = by
        .into_values()
        .filter(|c| !c.deal_ids.is_empty())
        .collect();
    let index: HashMap<EntityRef, usize> = out
        .iter()
        .enumerate()
        .map(|(i, c)| (c.entity.clone(), i))
        .collect();
    // Which client an activity or task bound to `e` belongs to.
    let owner = |e: &EntityRef| -> Option<usize> {
        match e.kind {
            EntityKind::Deal => deal_client
                .get(e.id.as_str())
                .and_then(|k| index.get(k).copied()),
            EntityKind::Contact => match contact_company.get(e.id.as_str()).copied().flatten() {
                Some(company) => index
                    .get(&EntityRef::new(EntityKind::Company, company.clone()))
                    .copied(),
                None => index.get(e).copied(),
            },
            EntityKind::Company => index.get(e).copied(),
            _ => None,
        }
    };
    let touch = |i: usize, t: Ts, out: &mut Vec<Client>| {
        let c = &mut out[i];
        if c.last_activity.is_none_or(|x| x < t) {
            c.last_activity = Some(t);
        }
    };
    for a in &m.activities {
        if let Some(i) = a.entity.as_ref().and_then(&owner) {
            touch(i, a.started_at, &mut out);
        }
    }
    for t in m.tasks.iter().filter(|t| t.completed) {
        if let Some(i) = t.entity.as_ref().and_then(&owner) {
            touch(i, t.completed_at.unwrap_or(t.updated_at), &mut out);
        }
    }
    // Telephony calls by phone number (answered calls, and outgoing attempts).
    let mut phone_owner: HashMap<String, usize> = HashMap::new();
    for c in &m.contacts {
        if let Some(i) = owner(&EntityRef::new(EntityKind::Contact, c.id.clone())) {
            for p in c.phones.iter().filter_map(|p| phone::normalize(p).ok()) {
                phone_owner.insert(p, i);
            }
        }
    }
    for c in &m.companies {
        if let Some(&i) = index.get(&EntityRef::new(EntityKind::Company, c.id.clone())) {
            for p in c.phones.iter().filter_map(|p| phone::normalize(p).ok()) {
                phone_owner.insert(p, i);
            }
        }
    }
    for call in m
        .calls
        .iter()
        .filter(|c| c.answered || c.direction == Direction::Out)
    {
        if let Some(&i) = phone::normalize(&call.client_phone)
            .ok()
            .and_then(|p| phone_owner.get(&p))
        {
            touch(i, call.started_at, &mut out);
        }
    }
    let own;
    let classes = match classes {
        Some(given) => given,
        None => {
            own = abc(&out
                .iter()
                .map(|c| (c.entity.clone(), c.revenue))
                .collect::<Vec<_>>());
            &own
        }
    };
    for c in &mut out {
        c.class = classes.get(&c.entity).copied().unwrap_or(Abc::C);
        c.orders.sort();
    }
    out.sort_by(|a, b| {
        a.entity
            .kind
            .cmp(&b.entity.kind)
            .then(a.entity.id.cmp(&b.entity.id))
    });
    out
}

fn new_client(entity: EntityRef, name: &str, resp: &Option<String>, created: Ts) -> Client {
    Client {
        entity,
        name: name.to_string(),
        responsible_id: resp.clone(),
        created_at: created,
        deal_ids: Vec::new(),
        open_deals: 0,
        orders: Vec::new(),
        revenue: 0.0,
        class: Abc::C,
        last_activity: None,
    }
}

/// Open tasks bound to the client or to one of its deals.
pub(crate) fn open_tasks<'a>(m: &'a Snapshot, c: &Client) -> Vec<&'a crate::domain::Task> {
    let deals: HashSet<&str> = c.deal_ids.iter().map(String::as_str).collect();
    m.tasks
        .iter()
        .filter(|t| !t.completed)
        .filter(|t| {
            t.entity.as_ref().is_some_and(|e| {
                *e == c.entity || (e.kind == EntityKind::Deal && deals.contains(e.id.as_str()))
            })
        })
        .collect()
}
