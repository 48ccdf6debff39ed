//! Rows of the action ledger. The logic (what a state means, when to retry) is in `ledger/`.

use serde::Serialize;
use sqlx::Row;

use super::{Op, Result, Store, from_secs, now_secs};
use crate::domain::Ts;

/// One ledger row.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRow {
    pub key: String,
    pub tenant: String,
    pub rule: String,
    pub kind: String,
    pub entity_kind: Option<String>,
    pub entity_id: Option<String>,
    pub payload: serde_json::Value,
    pub state: String,
    pub attempts: i64,
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

const COLS: &str = "key, tenant, rule, kind, entity_kind, entity_id, payload, state, attempts, result, error, created_at, updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> ActionRow {
    ActionRow {
        key: r.get(0),
        tenant: r.get(1),
        rule: r.get(2),
        kind: r.get(3),
        entity_kind: r.get(4),
        entity_id: r.get(5),
        payload: serde_json::from_str(&r.get::<String, _>(6)).unwrap_or_default(),
        state: r.get(7),
        attempts: r.get(8),
        result: r.get(9),
        error: r.get(10),
        created_at: from_secs(r.get(11)),
        updated_at: from_secs(r.get(12)),
    }
}

impl Store {
    /// Inserts the row unless its key exists; returns the row as stored (new or existing).
    pub async fn insert_action(&self, a: &ActionRow) -> Result<ActionRow> {
        let now = now_secs();
        sqlx::query(&format!(
            "INSERT INTO actions ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, NULL, NULL, $9, $10) ON CONFLICT (key) DO NOTHING"
        ))
        .bind(a.key.clone())
        .bind(a.tenant.clone())
        .bind(a.rule.clone())
        .bind(a.kind.clone())
        .bind(a.entity_kind.clone())
        .bind(a.entity_id.clone())
        .bind(a.payload.to_string())
        .bind(a.state.clone())
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await
        .op("recording an action")?;
        self.action(&a.key)
            .await?
            .ok_or_else(|| super::StoreError::Corrupt {
                what: format!("action {}", a.key),
                message: "missing right after insert".into(),
            })
    }

    pub async fn action(&self, key: &str) -> Result<Option<ActionRow>> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM actions WHERE key = $1"))
            .bind(key)
            .fetch_optional(self.pool())
            .await
            .op("reading an action")?;
        Ok(row.as_ref().map(from_row))
    }

    /// Moves an action to `state`, counting an attempt when `attempted`.
    pub async fn set_action_state(
        &self,
        key: &str,
        state: &str,
        result: Option<&str>,
        error: Option<&str>,
        attempted: bool,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE actions SET state = $1, result = COALESCE($2, result), error = $3, \
             attempts = attempts + $4, updated_at = $5 WHERE key = $6",
        )
        .bind(state)
        .bind(result)
        .bind(error)
        .bind(i64::from(attempted))
        .bind(now_secs())
        .bind(key)
        .execute(self.pool())
        .await
        .op("updating an action")?;
        Ok(())
    }

    /// Counts an attempt on a pending action before its effect is executed. It succeeds only if
    /// nobody counted one since `seen_attempts` was read and, for a leased handle
    /// (`Store::with_holder`), while this instance still holds the tenant's lease: two instances
    /// can then never both start the same write. True when the action is ours to execute.
    pub async fn claim_action(&self, key: &str, tenant: &str, seen_attempts: i64) -> Result<bool> {
        const CLAIM: &str = "UPDATE actions SET state = 'intent', error = NULL, \
             attempts = attempts + 1, updated_at = $1 \
             WHERE key = $2 AND attempts = $3 AND state IN ('intent', 'shadow')";
        let r =
            match self.holder() {
                None => {
                    sqlx::query(CLAIM)
                        .bind(now_secs())
                        .bind(key)
                        .bind(seen_attempts)
                        .execute(self.pool())
                        .await
                }
                Some(holder) => sqlx::query(&format!(
                    "{CLAIM} AND EXISTS (SELECT 1 FROM leases WHERE tenant = $4 AND holder = $5 \
                     AND expires_at > $6)"
                ))
                .bind(now_secs())
                .bind(key)
                .bind(seen_attempts)
                .bind(tenant)
                .bind(holder)
                .bind(super::leases::now_ms())
                .execute(self.pool())
                .await,
            }
            .op("claiming an action")?;
        Ok(r.rows_affected() == 1)
    }

    /// Actions of a tenant created at or after `since`, oldest first.
    pub async fn actions_since(
        &self,
        tenant: &str,
        since: Ts,
        limit: i64,
    ) -> Result<Vec<ActionRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM actions WHERE tenant = $1 AND created_at >= $2 ORDER BY created_at, key LIMIT $3"
        ))
        .bind(tenant)
        .bind(since.timestamp())
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .op("listing actions")?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// Whether the tenant has any action whose key starts with `prefix` (LIKE wildcards in
    /// `prefix` are escaped).
    pub async fn has_action_with_prefix(&self, tenant: &str, prefix: &str) -> Result<bool> {
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let row = sqlx::query(
            "SELECT 1 FROM actions WHERE tenant = $1 AND key LIKE $2 ESCAPE '\\' LIMIT 1",
        )
        .bind(tenant)
        .bind(pattern)
        .fetch_optional(self.pool())
        .await
        .op("looking for earlier actions")?;
        Ok(row.is_some())
    }

    /// Actions of a tenant in a state (e.g. `intent` left by a crash).
    pub async fn actions_in_state(&self, tenant: &str, state: &str) -> Result<Vec<ActionRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM actions WHERE tenant = $1 AND state = $2 ORDER BY created_at, key"
        ))
        .bind(tenant)
        .bind(state)
        .fetch_all(self.pool())
        .await
        .op("listing actions")?;
        Ok(rows.iter().map(from_row).collect())
    }
}
