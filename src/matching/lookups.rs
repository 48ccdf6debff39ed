//! Asking the CRM about numbers the mirror lacks, once: each answer ("these records carry it",
//! or "none does") is remembered in the store and reused by later cycles while it can still be
//! right, so a number that keeps calling is not asked about again every cycle.
//!
//! When an answer is reused. The mirror is what the rules trust; a look-up only covers the gap
//! between the CRM and the mirror's last sync, and it is made only for numbers the mirror does
//! not know (a number the mirror knows is never looked up, remembered or not).
//!
//! - **"Not in the CRM"** is reused for [`NOT_FOUND_FOR`] (24 h). The CRM's answer lists every
//!   lead, contact and company carrying the number at that moment (`crm.duplicate.findbycomm`,
//!   `api-reference/crm/duplicates/crm-duplicate-find-by-comm.md`). A record given the number
//!   later is a change the incremental sync reads, so from the next cycle on the mirror knows
//!   the number and the answer is no longer consulted; the answer can only mislead about a record
//!   created between the sync and the rules, the same gap a fresh look-up leaves between the
//!   answer and the write. The 24 h bound is for a sync that missed a record.
//! - **"Found"** is reused while the mirror holds none of the records it named (they were
//!   created after the last sync, which brings them next), for at most [`FOUND_FOR`] (1 h).
//!   Once the mirror holds one and still does not know the number, that record no longer
//!   carries it: the answer is stale and the number is asked again; a record that an hour of
//!   syncs did not bring was likely deleted.
//!
//! An answer from a clock ahead of the cycle's (tests step the clock back) is not trusted.
//! Losing the table costs requests, never a decision: it is only a cache.

use std::collections::HashMap;

use chrono::Duration;

use super::{CRM_LOOKUPS_PER_CYCLE, CallLinks};
use crate::crm::Crm;
use crate::domain::{EntityRef, Ts};
use crate::store::{Remembered, Store};

/// How long "not in the CRM" is reused.
pub(crate) const NOT_FOUND_FOR: Duration = Duration::hours(24);
/// How long "found" is reused while the mirror holds none of the found records.
pub(crate) const FOUND_FOR: Duration = Duration::hours(1);

/// Where answers are remembered: the store and the tenant.
#[derive(Clone, Copy)]
pub(crate) struct Memory<'a> {
    pub(crate) store: &'a Store,
    pub(crate) tenant: &'a str,
}

/// What a cycle's look-ups cost, for its log.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Asked {
    pub(crate) remembered: usize,
    pub(crate) asked: usize,
    pub(crate) left: usize,
}

/// Fills `links` with the CRM's answers for `unknown` (sorted, deduplicated numbers the mirror
/// lacks): remembered ones still good, then at most [`CRM_LOOKUPS_PER_CYCLE`] asked (and
/// remembered); numbers neither answered nor asked are `unresolved` for this cycle.
pub(crate) async fn answer(
    crm: &dyn Crm,
    memory: Option<Memory<'_>>,
    unknown: Vec<String>,
    now: Ts,
    links: &mut CallLinks,
) -> Asked {
    let mut asked = Asked::default();
    let good = match memory {
        Some(m) => still_good(m, &unknown, now).await,
        None => HashMap::new(),
    };
    for p in unknown {
        if let Some(found) = good.get(&p) {
            asked.remembered += 1;
            if !found.is_empty() {
                links.crm_phones.insert(p, found.clone());
            }
            continue;
        }
        if asked.asked >= CRM_LOOKUPS_PER_CYCLE {
            asked.left += 1;
            links.unresolved.insert(p);
            continue;
        }
        asked.asked += 1;
        match crm.find_by_phone(&p).await {
            Ok(found) => {
                if !found.is_empty() {
                    tracing::info!(phone = %p, records = found.len(), "number found in the CRM, not yet in the mirror");
                }
                if let Some(m) = memory {
                    let answer = Remembered {
                        found: found.clone(),
                        asked_at: now,
                    };
                    if let Err(e) = m.store.remember_lookup(m.tenant, &p, &answer).await {
                        // Only a cache: the number is asked again next cycle.
                        tracing::warn!(phone = %p, error = %e, "CRM answer not remembered");
                    }
                }
                if !found.is_empty() {
                    links.crm_phones.insert(p, found);
                }
            }
            Err(e) => {
                tracing::warn!(phone = %p, error = %e, "CRM lookup failed; the caller waits for the next cycle");
                links.unresolved.insert(p);
            }
        }
    }
    asked
}

/// The remembered answers for `phones` that can still be reused at `now` (see the module doc).
/// A store that cannot be read costs requests, not the cycle.
async fn still_good(m: Memory<'_>, phones: &[String], now: Ts) -> HashMap<String, Vec<EntityRef>> {
    let remembered = match m.store.remembered_lookups(m.tenant, phones).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "remembered CRM answers not read; asking again");
            return HashMap::new();
        }
    };
    let named: Vec<EntityRef> = remembered
        .values()
        .flat_map(|r| r.found.iter().cloned())
        .collect();
    let held = if named.is_empty() {
        Default::default()
    } else {
        match m.store.mirrored(m.tenant, &named).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "mirror not read for remembered CRM answers; asking again");
                return HashMap::new();
            }
        }
    };
    remembered
        .into_iter()
        .filter(|(_, r)| {
            let age = now - r.asked_at;
            if age < Duration::zero() {
                return false;
            }
            if r.found.is_empty() {
                age < NOT_FOUND_FOR
            } else {
                age < FOUND_FOR && !r.found.iter().any(|e| held.contains(e))
            }
        })
        .map(|(p, r)| (p, r.found))
        .collect()
}
