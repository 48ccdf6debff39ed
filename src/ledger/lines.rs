//! What dozor did lately, a line per rule, for the reports and the bot.

use super::ActionLine;
use crate::store::{Store, StoreError};

/// What dozor did in the last 24 hours, a line per rule (done, shadow, failed). Reports are not
/// rule actions, and `note` rows are bookkeeping (announced tasks): neither is counted.
pub(crate) async fn action_lines(
    store: &Store,
    tenant: &str,
) -> Result<Vec<ActionLine>, StoreError> {
    let rows = store
        .actions_since(
            tenant,
            chrono::Utc::now() - chrono::Duration::days(1),
            100_000,
        )
        .await?;
    let mut by_rule: std::collections::BTreeMap<String, ActionLine> = Default::default();
    for r in rows
        .iter()
        .filter(|r| r.rule != "report" && r.kind != "note")
    {
        let line = by_rule.entry(r.rule.clone()).or_insert_with(|| ActionLine {
            rule: r.rule.clone(),
            ..ActionLine::default()
        });
        match r.state.as_str() {
            "done" => line.done += 1,
            "shadow" => line.shadow += 1,
            "failed" => line.failed += 1,
            _ => {}
        }
    }
    Ok(by_rule.into_values().collect())
}
