//! What the call rules share: which CRM record a phone number belongs to, who owns it, and
//! which telephony employee is which CRM user.

use std::collections::HashMap;

use crate::domain::{Call, EntityKind, EntityRef, Semantics, Ts, phone};
use crate::store::Snapshot;

/// Phone (E.164) → the leads, contacts and companies that carry it, from the mirror.
pub struct PhoneBook<'a> {
    m: &'a Snapshot,
    by_phone: HashMap<String, Vec<EntityRef>>,
}

impl<'a> PhoneBook<'a> {
    pub fn new(m: &'a Snapshot) -> Self {
        let mut by_phone: HashMap<String, Vec<EntityRef>> = HashMap::new();
        let mut add = |phones: &[String], e: EntityRef| {
            for p in phones.iter().filter_map(|p| phone::normalize(p).ok()) {
                let v = by_phone.entry(p).or_default();
                if !v.contains(&e) {
                    v.push(e.clone());
                }
            }
        };
        for c in &m.contacts {
            add(&c.phones, EntityRef::new(EntityKind::Contact, c.id.clone()));
        }
        for c in &m.companies {
            add(&c.phones, EntityRef::new(EntityKind::Company, c.id.clone()));
        }
        for l in &m.leads {
            add(&l.phones, EntityRef::new(EntityKind::Lead, l.id.clone()));
        }
        PhoneBook { m, by_phone }
    }

    /// Records with this number: contacts and companies first, then leads.
    pub fn find(&self, e164: &str) -> &[EntityRef] {
        self.by_phone.get(e164).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Where a call with this number belongs: the client's single open deal when there is one
    /// (as amoCRM itself attaches calls), else the client, else the lead.
    pub fn binding(&self, e164: &str) -> Option<EntityRef> {
        let found = self.find(e164);
        let client = found
            .iter()
            .find(|e| matches!(e.kind, EntityKind::Contact | EntityKind::Company))
            .or_else(|| found.first())?;
        let open: Vec<&str> = self
            .m
            .deals
            .iter()
            .filter(|d| d.semantics == Semantics::Open)
            .filter(|d| match client.kind {
                EntityKind::Contact => d.contact_id.as_deref() == Some(client.id.as_str()),
                EntityKind::Company => d.company_id.as_deref() == Some(client.id.as_str()),
                _ => false,
            })
            .map(|d| d.id.as_str())
            .collect();
        match open.as_slice() {
            [one] => Some(EntityRef::new(EntityKind::Deal, *one)),
            _ => Some(client.clone()),
        }
    }

    /// The responsible user of a record in the mirror.
    pub fn owner(&self, e: &EntityRef) -> Option<String> {
        let m = self.m;
        match e.kind {
            EntityKind::Deal => m
                .deals
                .iter()
                .find(|x| x.id == e.id)?
                .responsible_id
                .clone(),
            EntityKind::Contact => m
                .contacts
                .iter()
                .find(|x| x.id == e.id)?
                .responsible_id
                .clone(),
            EntityKind::Company => m
                .companies
                .iter()
                .find(|x| x.id == e.id)?
                .responsible_id
                .clone(),
            EntityKind::Lead => m
                .leads
                .iter()
                .find(|x| x.id == e.id)?
                .responsible_id
                .clone(),
            _ => None,
        }
    }
}

/// The CRM user a telephony employee is, by name (case-insensitive).
pub fn employee_user(m: &Snapshot, call: &Call) -> Option<String> {
    let name = call.employee_name.as_ref()?.trim().to_lowercase();
    m.users
        .iter()
        .find(|u| u.name.trim().to_lowercase() == name)
        .map(|u| u.id.clone())
}

/// Calls that started in the last `hours` before `now`.
pub fn recent(m: &Snapshot, now: Ts, hours: f64) -> impl Iterator<Item = &Call> {
    let from = now - chrono::Duration::minutes((hours * 60.0) as i64);
    m.calls
        .iter()
        .filter(move |c| c.started_at >= from && c.started_at <= now)
}

/// A call's number in E.164, or `None` for junk (logged once by the caller).
pub fn number(call: &Call) -> Option<String> {
    match phone::normalize(&call.client_phone) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::debug!(call = %call.id, phone = %call.client_phone, error = %e, "call number skipped");
            None
        }
    }
}
