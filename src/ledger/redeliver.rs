//! Telegram messages an earlier cycle could not deliver, sent again once.

use super::{Outcome, Proposal, Sinks, apply};
use crate::config::RuleMode;
use crate::store::{Store, StoreError};

/// Telegram messages older than this are not redelivered: the news is stale.
const REDELIVER_WITHIN_DAYS: i64 = 3;

/// Sends again the Telegram messages an earlier cycle failed to deliver (a transient error left
/// them at `intent`), each exactly once: the parts already delivered are skipped. Call it once
/// per cycle, before the rules propose new actions.
pub async fn redeliver_telegram(
    store: &Store,
    tenant: &str,
    sinks: &Sinks<'_>,
) -> Result<Vec<(String, Outcome)>, StoreError> {
    let since = chrono::Utc::now() - chrono::Duration::days(REDELIVER_WITHIN_DAYS);
    let mut out = Vec::new();
    for r in store.undelivered_messages(tenant, since).await? {
        let Ok(p) = Proposal::stored(&r, "redelivery") else {
            continue;
        };
        let outcome = apply(store, tenant, sinks, &p, RuleMode::On).await?;
        tracing::info!(tenant, key = %r.key, ?outcome, "telegram message redelivered");
        out.push((r.key, outcome));
    }
    Ok(out)
}
