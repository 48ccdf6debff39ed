//! The working set the call rules share (`unknown_caller`, `call_not_in_crm`, `missed_call`):
//! their candidates are the calls of their look-back window, so what they read is bounded by the
//! clock, not by the mirror. Read once per cycle and closed under what the three decide by:
//!
//! - every call of the window, and every call (earlier or later) of their numbers and of the
//!   numbers whose leads `unknown_caller` made: callbacks, and the missed call that made a lead;
//! - the leads, contacts and companies carrying those numbers, and the deals of those clients
//!   (where a call belongs, who owns it);
//! - the CRM's timeline entries logging the window's calls;
//! - from the ledger, the week's done and unfinished actions the three look up, the leads made
//!   for unknown callers, and the callback tasks created.
//!
//! Call links (the staff map, the CRM's answers for numbers the mirror lacks) are built from it
//! as from the whole mirror, since the window's calls and their numbers' records are all here.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::Duration;

use crate::domain::{EntityKind, Ts};
use crate::matching::call_lookback;
use crate::store::{Snapshot, Store, StoreError};
use crate::tenant::Tenant;

/// The shared working set, with the ledger's view the call rules read.
pub(crate) struct RecentCalls {
    pub(crate) mirror: Snapshot,
    pub(crate) done: HashMap<String, String>,
    pub(crate) unfinished: HashSet<String>,
}

/// How far back the rules' view of the ledger reaches, as the whole-mirror look's does.
const LEDGER_DAYS: i64 = 7;

// Long: one read after another, each taking its ids from the ones before; the order is the
// closure the module doc describes.
pub(crate) async fn load(
    store: &Store,
    tenant: &Tenant,
    base: &Snapshot,
    now: Ts,
) -> Result<RecentCalls, StoreError> {
    let t = tenant.id();
    let mut mirror = crate::rules::scope::base_set(base);
    let hours = call_lookback(&tenant.cfg.rules);
    let since = now - Duration::days(LEDGER_DAYS);
    let lead_prefix = format!("unknown_caller:{t}:phone:");
    let mut done = store.done_with_prefix(t, &lead_prefix, since).await?;
    let unfinished = store.unfinished_with_prefix(t, &lead_prefix, since).await?;
    if hours <= 0.0 {
        return Ok(RecentCalls {
            mirror,
            done,
            unfinished,
        });
    }
    let from = now - Duration::minutes((hours * 60.0) as i64) - Duration::seconds(1);
    let window = store.calls_started_between(t, from, now).await?;
    // Numbers of the window, and of the leads made for unknown callers (their first tasks).
    let mut numbers: BTreeSet<String> = window.iter().filter_map(crate::matching::number).collect();
    let mut lead_ids = Vec::new();
    for (key, lead) in &done {
        if let Some(p) = key.strip_prefix(&lead_prefix).filter(|p| !p.contains(':')) {
            numbers.insert(p.to_string());
            lead_ids.push(lead.clone());
        }
    }
    let numbers: Vec<String> = numbers.into_iter().collect();
    let ids: Vec<String> = window.iter().map(|c| c.id.clone()).collect();
    mirror.activities = store.activities_with_external_ids(t, &ids).await?;
    let callback_keys: Vec<String> = window
        .iter()
        .map(|c| format!("missed_call:{t}:{}:{}:task", c.provider.as_str(), c.id))
        .collect();
    let callbacks = store.done_results(t, &callback_keys, since).await?;
    let task_ids: Vec<String> = callbacks.values().cloned().collect();
    done.extend(callbacks);
    mirror.tasks = store.tasks_by_ids(t, &task_ids).await?;
    mirror.calls = store
        .calls_of_phones(t, &numbers, chrono::DateTime::UNIX_EPOCH)
        .await?;
    // Calls without a usable number are candidates too (the rules skip them).
    let have: HashSet<(String, String)> = mirror
        .calls
        .iter()
        .map(|c| (c.provider.as_str().to_string(), c.id.clone()))
        .collect();
    mirror.calls.extend(
        window
            .into_iter()
            .filter(|c| !have.contains(&(c.provider.as_str().to_string(), c.id.clone()))),
    );
    mirror
        .calls
        .sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
    let owners = store.owners_of_phones(t, &numbers).await?;
    let of = |k: EntityKind| -> Vec<String> {
        owners
            .iter()
            .filter(|e| e.kind == k)
            .map(|e| e.id.clone())
            .collect()
    };
    let (contacts, companies) = (of(EntityKind::Contact), of(EntityKind::Company));
    lead_ids.extend(of(EntityKind::Lead));
    lead_ids.sort();
    lead_ids.dedup();
    mirror.leads = store.leads_by_ids(t, &lead_ids).await?;
    let deal_ids = store.deal_ids_of_clients(t, &contacts, &companies).await?;
    mirror.deals = store.deals_by_ids(t, &deal_ids).await?;
    mirror.contacts = store.contacts_by_ids(t, &contacts).await?;
    mirror.companies = store.companies_by_ids(t, &companies).await?;
    Ok(RecentCalls {
        mirror,
        done,
        unfinished,
    })
}
