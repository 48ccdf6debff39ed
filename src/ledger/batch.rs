//! A rule's proposals through the ledger together: the keys it already holds are read in one
//! query, and a shadow look's new rows written in one transaction. A rule re-proposes what its
//! scope holds each cycle (the call rules their whole window), so taking the database's write
//! lock once per proposal made the ledger, not the rules, the cost of a cycle.

use std::collections::HashMap;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Outcome, Proposal, Sinks, apply, row};
use crate::config::RuleMode;
use crate::store::{Store, StoreError};

/// Actions of one rule run at once: they have independent keys, the connectors coalesce
/// concurrent writes (Bitrix24 `batch`) and their rate limiters keep the pace.
const CONCURRENCY: usize = 16;

/// Applies `proposals` under `mode`, as [`apply`] would one by one: the same outcome for each,
/// in order. A stop takes no new action; those already running finish (the ledger has them).
pub async fn apply_all(
    store: &Store,
    tenant: &str,
    sinks: &Sinks<'_>,
    proposals: Vec<Proposal>,
    mode: RuleMode,
    stop: &CancellationToken,
) -> Result<Vec<(Proposal, Outcome)>, StoreError> {
    let keys: Vec<String> = proposals.iter().map(|p| p.key.clone()).collect();
    let held = store.action_states(&keys).await?;
    match mode {
        RuleMode::Off => Ok(proposals
            .into_iter()
            .map(|p| (p, Outcome::Skipped))
            .collect()),
        RuleMode::Shadow => shadow(store, tenant, proposals, &held).await,
        RuleMode::On => {
            // A done key stays done: no write lock taken to learn it again.
            let done = |p: &Proposal| held.get(&p.key).is_some_and(|s| s == "done");
            let applied: Vec<_> =
                futures::stream::iter(proposals.into_iter().map(|p| async move {
                    let outcome = if done(&p) {
                        Ok(Outcome::AlreadyDone)
                    } else {
                        apply(store, tenant, sinks, &p, mode).await
                    };
                    (p, outcome)
                }))
                .take_until(stop.cancelled())
                .buffered(CONCURRENCY)
                .collect()
                .await;
            applied.into_iter().map(|(p, o)| Ok((p, o?))).collect()
        }
    }
}

/// Shadow: a held key is reported as before (done, or already noted in shadow); the new ones are
/// noted together.
async fn shadow(
    store: &Store,
    tenant: &str,
    proposals: Vec<Proposal>,
    held: &HashMap<String, String>,
) -> Result<Vec<(Proposal, Outcome)>, StoreError> {
    let fresh: Vec<_> = proposals
        .iter()
        .filter(|p| !held.contains_key(&p.key))
        .map(|p| row(tenant, p, "shadow"))
        .collect();
    store.insert_actions(&fresh).await?;
    Ok(proposals
        .into_iter()
        .map(|p| {
            let outcome = if held.get(&p.key).is_some_and(|s| s == "done") {
                Outcome::AlreadyDone
            } else {
                Outcome::Shadow
            };
            (p, outcome)
        })
        .collect())
}
