//! What the client rules (`no_activity`, `dormant`) look at: clients, each whole.
//!
//! A client's decision reads all of it (its deals, contacts, tasks, activities and the calls of
//! its numbers) and its ABC class, which depends on every client's revenue. So each client rule
//! keeps, per client (`rule_clients`), the revenue and class it last computed and the moments the
//! client turns idle or dormant by the clock. A look then takes:
//!
//! - full: every client, a page at a time, after summing every client's revenue once for the
//!   classes;
//! - since its last look: the clients whose records changed (the journal: a deal, task or
//!   activity names its client through its bindings; a number, its owners), the clients that
//!   turned idle or dormant in between, and those whose class changed. When some client's
//!   revenue changed, the classes are computed again over the kept revenues, and every client
//!   whose class moved is looked at too.
//!
//! Each client's working set is closed under shared numbers: a call counts for the last client
//! (in the mirror's order) carrying its number, so every client sharing a number with one of the
//! set is in the set too, and `clients` attributes calls as it does over the whole mirror.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::clients::{Classes, client_of, clients};
use super::scope::{self, GatherArgs, Incremental, PAGE, Page, Scope};
use crate::domain::abc::{Abc, abc};
use crate::domain::{Company, Contact, EntityKind, EntityRef, Ts};
use crate::store::{Changes, ClientFlips, ClientState, Snapshot, Store, StoreError};

/// Clients changed or fallen due since the last look; everything when settings change.
pub const INCREMENTAL: Incremental = Incremental {
    full_after: scope::never,
    gather: scope::Gather::Pages(|a| Box::pin(gather(a))),
};

/// Revenue differences below this are the rounding of a sum, not a change.
const SAME_REVENUE: f64 = 1e-6;

async fn gather(a: GatherArgs<'_>) -> Result<Page, StoreError> {
    let (seeds, next) = match a.scope {
        Scope::Full => {
            if a.after.is_empty() {
                keep_full_revenues(&a).await?;
            }
            let page = a.store.client_candidates(a.tenant, a.after, PAGE).await?;
            let next = scope::next_after(page.len(), page.last().map(key).as_deref());
            (page, next)
        }
        Scope::Delta { since, changes } => (changed(&a, *since, changes).await?, None),
    };
    let seeds = match a.scope {
        // A full look's candidates are clients already: companies, contacts without one.
        Scope::Full => seeds.into_iter().collect(),
        Scope::Delta { .. } => normalise(a.store, a.tenant, seeds).await?,
    };
    let mut set = ClientSet::load(a.store, a.tenant, &scope::base_set(a.base), seeds).await?;
    let mut classes = kept_classes(&a, &set.clients).await?;
    if matches!(a.scope, Scope::Delta { .. }) {
        let moved = revenue_changes(&a, &set, &mut classes).await?;
        let extra: BTreeSet<EntityRef> = moved.difference(&set.clients).cloned().collect();
        if !extra.is_empty() {
            // Their class changed: they are decided again, whole.
            let mut seeds = set.clients.clone();
            seeds.extend(extra);
            set = ClientSet::load(a.store, a.tenant, &scope::base_set(a.base), seeds).await?;
            classes = kept_classes(&a, &set.clients).await?;
        }
    }
    keep_flips(&a, &set, &classes).await?;
    let handovers = super::dormant::handovers(set.handovers(a.store, a.tenant).await?);
    Ok(Page {
        mirror: set.mirror,
        next,
        handovers,
        classes: Some(classes),
    })
}

/// `kind:id` of a client, as `rule_clients` and the page cursor name it.
fn key(e: &EntityRef) -> String {
    format!("{}:{}", e.kind.as_str(), e.id)
}

fn parse_key(k: &str) -> Option<EntityRef> {
    let (kind, id) = k.split_once(':')?;
    Some(EntityRef::new(EntityKind::parse(kind)?, id))
}

/// The clients whose records changed after the last look, and those that fell due since.
async fn changed(
    a: &GatherArgs<'_>,
    since: Ts,
    changes: &Changes,
) -> Result<Vec<EntityRef>, StoreError> {
    let (s, t) = (a.store, a.tenant);
    let mut refs: Vec<EntityRef> = Vec::new();
    for kind in [EntityKind::Company, EntityKind::Contact] {
        refs.extend(changes.ids(kind).map(|id| EntityRef::new(kind, id.clone())));
    }
    let mut deals: Vec<String> = changes.ids(EntityKind::Deal).cloned().collect();
    for kind in [EntityKind::Task, EntityKind::Activity] {
        let ids: Vec<String> = changes.ids(kind).cloned().collect();
        for e in s.bindings_of(t, kind, &ids).await? {
            match e.kind {
                EntityKind::Deal => deals.push(e.id),
                _ => refs.push(e),
            }
        }
    }
    refs.extend(s.bindings_of(t, EntityKind::Deal, &deals).await?);
    let phones: Vec<String> = changes.phones.iter().cloned().collect();
    refs.extend(s.owners_of_phones(t, &phones).await?);
    for k in s.rule_clients_due(t, a.rule, since, a.now).await? {
        refs.extend(parse_key(&k));
    }
    Ok(refs)
}

/// The clients these records stand for: a company; a contact's company, or the contact when it
/// has none. Other kinds stand for no client.
async fn normalise(
    store: &Store,
    tenant: &str,
    refs: Vec<EntityRef>,
) -> Result<BTreeSet<EntityRef>, StoreError> {
    let mut out = BTreeSet::new();
    let mut contacts = Vec::new();
    for e in refs {
        match e.kind {
            EntityKind::Company => {
                out.insert(e);
            }
            EntityKind::Contact => contacts.push(e.id),
            _ => {}
        }
    }
    contacts.sort();
    contacts.dedup();
    let companies: HashMap<String, Option<String>> = store
        .companies_of_contacts(tenant, &contacts)
        .await?
        .into_iter()
        .collect();
    for id in contacts {
        out.insert(match companies.get(&id).cloned().flatten() {
            Some(company) => EntityRef::new(EntityKind::Company, company),
            None => EntityRef::new(EntityKind::Contact, id),
        });
    }
    Ok(out)
}

/// A full look starts afresh: every client's lifetime revenue, summed from the won deals as
/// `clients` sums it, and the classes over them.
async fn keep_full_revenues(a: &GatherArgs<'_>) -> Result<(), StoreError> {
    let (s, t) = (a.store, a.tenant);
    s.clear_rule_clients(t, a.rule).await?;
    let won = s.won_deal_bindings(t).await?;
    let mut contacts: Vec<String> = won.iter().filter_map(|w| w.0.clone()).collect();
    contacts.sort();
    contacts.dedup();
    // Known contacts (not deleted) and their companies: a deal's client is found as `clients`
    // finds it over the whole mirror.
    let live = s.existing_ids(t, EntityKind::Contact, &contacts).await?;
    let company_of: HashMap<String, Option<String>> = s
        .companies_of_contacts(t, &contacts)
        .await?
        .into_iter()
        .filter(|(id, _)| live.contains(id))
        .collect();
    let mut revenue: BTreeMap<EntityRef, f64> = BTreeMap::new();
    for (contact, company, amount) in &won {
        let of = |c: &str| company_of.get(c).cloned().flatten();
        if let Some(client) = client_of(company.as_deref(), contact.as_deref(), of) {
            *revenue.entry(client).or_default() += amount;
        }
    }
    // Only clients in the mirror count.
    let mut exists = HashSet::new();
    for kind in [EntityKind::Company, EntityKind::Contact] {
        let ids: Vec<String> = revenue
            .keys()
            .filter(|e| e.kind == kind)
            .map(|e| e.id.clone())
            .collect();
        for id in s.existing_ids(t, kind, &ids).await? {
            exists.insert(EntityRef::new(kind, id));
        }
    }
    revenue.retain(|e, _| exists.contains(e));
    let revenue: Vec<(EntityRef, f64)> = revenue.into_iter().collect();
    let classes = abc(&revenue);
    let states: Vec<ClientState> = revenue
        .iter()
        .map(|(e, r)| ClientState {
            client: key(e),
            revenue: *r,
            class: class_name(classes.get(e).copied().unwrap_or(Abc::C)),
        })
        .collect();
    s.set_rule_client_states(t, a.rule, &states, None).await
}

fn class_name(c: Abc) -> String {
    format!("{c:?}")
}

fn parse_class(s: &str) -> Abc {
    match s {
        "A" => Abc::A,
        "B" => Abc::B,
        _ => Abc::C,
    }
}

/// The kept classes of these clients (C for those without revenue).
async fn kept_classes(
    a: &GatherArgs<'_>,
    clients: &BTreeSet<EntityRef>,
) -> Result<Classes, StoreError> {
    let keys: Vec<String> = clients.iter().map(key).collect();
    let mut out: Classes = clients.iter().map(|c| (c.clone(), Abc::C)).collect();
    for s in a.store.rule_client_states(a.tenant, a.rule, &keys).await? {
        if let Some(e) = parse_key(&s.client) {
            out.insert(e, parse_class(&s.class));
        }
    }
    Ok(out)
}

/// Keeps the set's clients' revenues; when one changed, computes every class again and keeps
/// those that moved. Returns the clients whose class moved.
async fn revenue_changes(
    a: &GatherArgs<'_>,
    set: &ClientSet,
    classes: &mut Classes,
) -> Result<BTreeSet<EntityRef>, StoreError> {
    let (s, t) = (a.store, a.tenant);
    let now: HashMap<EntityRef, f64> = clients(&set.mirror, Some(classes))
        .into_iter()
        .map(|c| (c.entity, c.revenue))
        .collect();
    let keys: Vec<String> = set.clients.iter().map(key).collect();
    let kept: HashMap<String, ClientState> = s
        .rule_client_states(t, a.rule, &keys)
        .await?
        .into_iter()
        .map(|st| (st.client.clone(), st))
        .collect();
    let mut updates = Vec::new();
    for c in &set.clients {
        let k = key(c);
        let revenue = now.get(c).copied().unwrap_or(0.0);
        let before = kept.get(&k).map_or(0.0, |st| st.revenue);
        if (revenue - before).abs() > SAME_REVENUE {
            let class = kept
                .get(&k)
                .map_or_else(|| "C".into(), |st| st.class.clone());
            updates.push(ClientState {
                client: k,
                revenue,
                class,
            });
        }
    }
    if updates.is_empty() {
        return Ok(BTreeSet::new());
    }
    s.set_rule_client_states(t, a.rule, &updates, None).await?;
    let all = s.rule_client_revenues(t, a.rule).await?;
    let revenue: Vec<(EntityRef, f64)> = all
        .iter()
        .filter_map(|st| Some((parse_key(&st.client)?, st.revenue)))
        .collect();
    let fresh = abc(&revenue);
    let mut moved = BTreeSet::new();
    let mut changed = Vec::new();
    for st in &all {
        let Some(e) = parse_key(&st.client) else {
            continue;
        };
        let class = fresh.get(&e).copied().unwrap_or(Abc::C);
        if class_name(class) != st.class {
            changed.push(ClientState {
                class: class_name(class),
                ..st.clone()
            });
            moved.insert(e.clone());
        }
        if classes.contains_key(&e) {
            classes.insert(e, class);
        }
    }
    // Noted with the clock: a look cut short after this still finds them by `class_at`.
    s.set_rule_client_states(t, a.rule, &changed, Some(a.now))
        .await?;
    Ok(moved)
}

/// Keeps when each of the set's clients turns idle or dormant by the clock.
async fn keep_flips(
    a: &GatherArgs<'_>,
    set: &ClientSet,
    classes: &Classes,
) -> Result<(), StoreError> {
    let built: HashMap<EntityRef, ClientFlips> = clients(&set.mirror, Some(classes))
        .into_iter()
        .map(|c| {
            let flips = ClientFlips {
                client: key(&c.entity),
                idle_at: Some(c.idle_after(&a.rules.no_activity)),
                dormant_at: c.dormant_after(&a.rules.dormant),
            };
            (c.entity, flips)
        })
        .collect();
    let full = matches!(a.scope, Scope::Full);
    let flips: Vec<ClientFlips> = set
        .clients
        .iter()
        .filter_map(|c| match built.get(c) {
            Some(f) => Some(f.clone()),
            // No longer a client (no deals): nothing falls due; a full look starts empty.
            None if !full => Some(ClientFlips {
                client: key(c),
                idle_at: None,
                dormant_at: None,
            }),
            None => None,
        })
        .collect();
    a.store
        .set_rule_client_flips(a.tenant, a.rule, &flips)
        .await
}

/// Clients with everything `clients` reads about them.
struct ClientSet {
    clients: BTreeSet<EntityRef>,
    mirror: Snapshot,
}

impl ClientSet {
    // Long: one read after another, each taking its ids from the ones before; the order is the
    // closure the module doc describes.
    async fn load(
        store: &Store,
        t: &str,
        base: &Snapshot,
        seeds: BTreeSet<EntityRef>,
    ) -> Result<ClientSet, StoreError> {
        let mut clients = seeds.clone();
        let mut companies: BTreeMap<String, Company> = BTreeMap::new();
        let mut contacts: BTreeMap<String, Contact> = BTreeMap::new();
        let mut phones: BTreeSet<String> = BTreeSet::new();
        let mut todo = seeds;
        // Clients sharing a number join the set until no new one does.
        while !todo.is_empty() {
            let ids = |k: EntityKind| -> Vec<String> {
                todo.iter()
                    .filter(|e| e.kind == k)
                    .map(|e| e.id.clone())
                    .collect()
            };
            let (company_ids, contact_ids) = (ids(EntityKind::Company), ids(EntityKind::Contact));
            let mut new_contacts = store.contacts_of_companies(t, &company_ids).await?;
            new_contacts.extend(store.contacts_by_ids(t, &contact_ids).await?);
            new_contacts.retain(|c| !contacts.contains_key(&c.id));
            let mut numbers = store
                .phones_of(t, EntityKind::Company, &company_ids)
                .await?;
            let ids: Vec<String> = new_contacts.iter().map(|c| c.id.clone()).collect();
            numbers.extend(store.phones_of(t, EntityKind::Contact, &ids).await?);
            for c in store.companies_by_ids(t, &company_ids).await? {
                companies.insert(c.id.clone(), c);
            }
            for c in new_contacts {
                contacts.insert(c.id.clone(), c);
            }
            numbers.retain(|n| !phones.contains(n));
            phones.extend(numbers.iter().cloned());
            let owners = store.owners_of_phones(t, &numbers).await?;
            todo = normalise(store, t, owners)
                .await?
                .into_iter()
                .filter(|c| !clients.contains(c))
                .collect();
            clients.extend(todo.iter().cloned());
        }
        let mut mirror = base.clone();
        mirror.companies = companies.into_values().collect();
        mirror.contacts = contacts.into_values().collect();
        let company_ids: Vec<String> = mirror.companies.iter().map(|c| c.id.clone()).collect();
        let contact_ids: Vec<String> = mirror.contacts.iter().map(|c| c.id.clone()).collect();
        let deal_ids = store
            .deal_ids_of_clients(t, &contact_ids, &company_ids)
            .await?;
        mirror.deals = store.deals_by_ids(t, &deal_ids).await?;
        // Only the set's clients' deals: a deal of another company with one of these contacts
        // would make a client of it that the set does not hold whole.
        let company_of: HashMap<&str, Option<&String>> = mirror
            .contacts
            .iter()
            .map(|c| (c.id.as_str(), c.company_id.as_ref()))
            .collect();
        mirror.deals.retain(|d| {
            let of = |c: &str| company_of.get(c).copied().flatten().cloned();
            client_of(d.company_id.as_deref(), d.contact_id.as_deref(), of)
                .is_some_and(|c| clients.contains(&c))
        });
        mirror.deals.sort_by_key(|d| d.created_at);
        let deal_ids: Vec<String> = mirror.deals.iter().map(|d| d.id.clone()).collect();
        for (kind, ids) in [
            (EntityKind::Company, &company_ids),
            (EntityKind::Contact, &contact_ids),
            (EntityKind::Deal, &deal_ids),
        ] {
            mirror.tasks.extend(store.tasks_of(t, kind, ids).await?);
            mirror
                .activities
                .extend(store.activities_of(t, kind, ids).await?);
        }
        let numbers: Vec<String> = phones.into_iter().collect();
        mirror.calls = store
            .calls_of_phones(t, &numbers, chrono::DateTime::UNIX_EPOCH)
            .await?;
        Ok(ClientSet { clients, mirror })
    }

    /// The dormant rule's done owner changes of the set's clients (ledger rows, oldest first).
    async fn handovers(
        &self,
        store: &Store,
        t: &str,
    ) -> Result<Vec<crate::store::ActionRow>, StoreError> {
        let mut rows = Vec::new();
        for kind in [EntityKind::Company, EntityKind::Contact] {
            let ids: Vec<String> = self
                .clients
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.id.clone())
                .collect();
            rows.extend(
                store
                    .done_on_entities(t, "dormant", "set_responsible", kind, &ids)
                    .await?,
            );
        }
        rows.sort_by(|a, b| (a.created_at, &a.key).cmp(&(b.created_at, &b.key)));
        Ok(rows)
    }
}
