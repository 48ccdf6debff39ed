//! Rows of the action ledger. The logic (what a state means, when to retry) is in `ledger/`.

use serde::Serialize;
use sqlx::Row;

use super::in_list::Bind;
use super::{Op, Result, Store, from_secs, now_secs};
use crate::domain::{EntityKind, EntityRef, Ts};

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
    /// Not tried again before this (a transient failure's backoff).
    pub retry_at: Option<Ts>,
    /// The attempt count at which the current retry budget started.
    pub budget_from: i64,
}

const INSERT_COLS: &str = "key, tenant, rule, kind, entity_kind, entity_id, payload, state, attempts, result, error, created_at, updated_at";
const COLS: &str = "key, tenant, rule, kind, entity_kind, entity_id, payload, state, attempts, result, error, created_at, updated_at, retry_at, budget_from";

/// Decodes a ledger row; a damaged one (wrong types, NULLs) is an error naming its key, never
/// a panic.
fn from_row(r: &sqlx::any::AnyRow) -> super::Result<ActionRow> {
    let corrupt = |e: sqlx::Error| super::StoreError::Corrupt {
        what: format!(
            "action {}",
            r.try_get::<String, _>(0).unwrap_or_else(|_| "?".into())
        ),
        message: e.to_string(),
    };
    Ok(ActionRow {
        key: r.try_get(0).map_err(corrupt)?,
        tenant: r.try_get(1).map_err(corrupt)?,
        rule: r.try_get(2).map_err(corrupt)?,
        kind: r.try_get(3).map_err(corrupt)?,
        entity_kind: r.try_get(4).map_err(corrupt)?,
        entity_id: r.try_get(5).map_err(corrupt)?,
        payload: serde_json::from_str(&r.try_get::<String, _>(6).map_err(corrupt)?)
            .unwrap_or_default(),
        state: r.try_get(7).map_err(corrupt)?,
        attempts: r.try_get(8).map_err(corrupt)?,
        result: r.try_get(9).map_err(corrupt)?,
        error: r.try_get(10).map_err(corrupt)?,
        created_at: from_secs(r.try_get(11).map_err(corrupt)?),
        updated_at: from_secs(r.try_get(12).map_err(corrupt)?),
        retry_at: r
            .try_get::<Option<i64>, _>(13)
            .map_err(corrupt)?
            .map(from_secs),
        budget_from: r.try_get(14).map_err(corrupt)?,
    })
}

fn from_rows(rows: &[sqlx::any::AnyRow]) -> super::Result<Vec<ActionRow>> {
    rows.iter().map(from_row).collect()
}

impl Store {
    /// Inserts the row unless its key exists; returns the row as stored (new or existing).
    pub async fn insert_action(&self, a: &ActionRow) -> Result<ActionRow> {
        self.insert_actions(std::slice::from_ref(a)).await?;
        self.action(&a.key)
            .await?
            .ok_or_else(|| super::StoreError::Corrupt {
                what: format!("action {}", a.key),
                message: "missing right after insert".into(),
            })
    }

    /// The state of each of these keys the ledger holds.
    pub(crate) async fn action_states(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, String>> {
        let rows = self
            .rows_in(
                "SELECT key, state FROM actions WHERE key IN ({in})",
                &[],
                keys,
                "reading actions' states",
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Records new actions in one transaction; a key already held is left as it is.
    pub(crate) async fn insert_actions(&self, rows: &[ActionRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = now_secs();
        let mut tx = self.pool().begin().await.op("recording actions")?;
        // Ten binds a row, far below SQLite's variable limit.
        for chunk in rows.chunks(100) {
            let mut sql = format!("INSERT INTO actions ({INSERT_COLS}) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let b = i * 10;
                let p: Vec<String> = (1..=10).map(|k| format!("${}", b + k)).collect();
                sql.push_str(&format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, 0, NULL, NULL, {}, {})",
                    p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]
                ));
            }
            sql.push_str(" ON CONFLICT (key) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for a in chunk {
                q = q
                    .bind(a.key.clone())
                    .bind(a.tenant.clone())
                    .bind(a.rule.clone())
                    .bind(a.kind.clone())
                    .bind(a.entity_kind.clone())
                    .bind(a.entity_id.clone())
                    .bind(a.payload.to_string())
                    .bind(a.state.clone())
                    .bind(now)
                    .bind(now);
            }
            q.execute(&mut *tx).await.op("recording actions")?;
        }
        tx.commit().await.op("recording actions")?;
        Ok(())
    }

    pub async fn action(&self, key: &str) -> Result<Option<ActionRow>> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM actions WHERE key = $1"))
            .bind(key)
            .fetch_optional(self.pool())
            .await
            .op("reading an action")?;
        row.as_ref().map(from_row).transpose()
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

    /// Records a failed attempt that may be tried again: not before `retry_at` when given.
    /// An attempt refused before anything was sent (`counted` false) does not use up the retry
    /// budget: the budget's start moves with it.
    pub(crate) async fn defer_action(
        &self,
        key: &str,
        error: &str,
        retry_at: Option<Ts>,
        counted: bool,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE actions SET state = 'intent', error = $1, retry_at = $2, updated_at = $3, \
             budget_from = budget_from + $4 WHERE key = $5",
        )
        .bind(error)
        .bind(retry_at.map(|t| t.timestamp()))
        .bind(now_secs())
        .bind(i64::from(!counted))
        .bind(key)
        .execute(self.pool())
        .await
        .op("deferring an action")?;
        Ok(())
    }

    /// Gives a `dead` or `failed` action a fresh retry budget: it is pending again, and the
    /// attempts made so far still make the ledger look for its marker before writing. Returns
    /// the row as it now is, or `None` when no such action is dead or failed.
    pub async fn revive_action(&self, key: &str) -> Result<Option<ActionRow>> {
        let r = sqlx::query(
            "UPDATE actions SET state = 'intent', budget_from = attempts, retry_at = NULL, \
             error = NULL, dead_report = NULL, updated_at = $1 \
             WHERE key = $2 AND state IN ('dead', 'failed')",
        )
        .bind(now_secs())
        .bind(key)
        .execute(self.pool())
        .await
        .op("reviving an action")?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        self.action(key).await
    }

    /// Marks every dead action of `tenant` not yet reported as reported by the ops message
    /// `report_key`; returns the dead actions whose report message has not gone out yet
    /// (this one's and any an interrupted cycle left), grouped by report key, oldest first.
    ///
    /// Report messages are ledger actions of rule `report_rule`: one that died itself (the
    /// ops chat unreachable through every retry) is not reported in turn; its rows are handed
    /// to the next report instead.
    pub(crate) async fn dead_to_report(
        &self,
        tenant: &str,
        report_rule: &str,
        report_key: &str,
    ) -> Result<Vec<(String, Vec<ActionRow>)>> {
        sqlx::query(
            "UPDATE actions SET dead_report = NULL WHERE tenant = $1 AND state = 'dead' \
             AND dead_report IN (SELECT key FROM actions WHERE tenant = $1 AND rule = $2 \
             AND state = 'dead')",
        )
        .bind(tenant)
        .bind(report_rule)
        .execute(self.pool())
        .await
        .op("handing dead actions to a new ops report")?;
        sqlx::query(
            "UPDATE actions SET dead_report = $1 WHERE tenant = $2 AND state = 'dead' \
             AND dead_report IS NULL AND rule <> $3",
        )
        .bind(report_key)
        .bind(tenant)
        .bind(report_rule)
        .execute(self.pool())
        .await
        .op("marking dead actions for the ops report")?;
        let rows = sqlx::query(&format!(
            "SELECT {COLS}, dead_report FROM actions a WHERE tenant = $1 AND state = 'dead' \
             AND dead_report IS NOT NULL AND NOT EXISTS (SELECT 1 FROM actions r \
             WHERE r.key = a.dead_report AND r.state IN ('done', 'failed', 'dead')) \
             ORDER BY dead_report, updated_at, key"
        ))
        .bind(tenant)
        .fetch_all(self.pool())
        .await
        .op("listing dead actions to report")?;
        let mut out: Vec<(String, Vec<ActionRow>)> = Vec::new();
        for r in &rows {
            let report: String = r.try_get(15).map_err(|e| super::StoreError::Corrupt {
                what: "dead action report key".into(),
                message: e.to_string(),
            })?;
            let row = from_row(r)?;
            match out.last_mut() {
                Some((k, list)) if *k == report => list.push(row),
                _ => out.push((report, vec![row])),
            }
        }
        Ok(out)
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
    pub(crate) async fn actions_since(
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
        from_rows(&rows)
    }

    /// Whether the tenant has any action whose key starts with `prefix` (LIKE wildcards in
    /// `prefix` are escaped).
    pub(crate) async fn has_action_with_prefix(&self, tenant: &str, prefix: &str) -> Result<bool> {
        let pattern = like_prefix(prefix);
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
        from_rows(&rows)
    }

    /// The records of a rule's actions still at `intent` (waiting for a retry, or with an outcome
    /// lost in a crash): a rule that looks only at what changed looks at these too, so a retry
    /// or a reconciliation never waits for the record to change.
    pub async fn unsettled_entities(&self, tenant: &str, rule: &str) -> Result<Vec<EntityRef>> {
        let rows = sqlx::query(
            "SELECT entity_kind, entity_id FROM actions WHERE tenant = $1 AND rule = $2 \
             AND state = 'intent' AND entity_kind IS NOT NULL AND entity_id IS NOT NULL",
        )
        .bind(tenant)
        .bind(rule)
        .fetch_all(self.pool())
        .await
        .op("listing unsettled actions")?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(EntityRef::new(
                    EntityKind::parse(&r.get::<String, _>(0))?,
                    r.get::<String, _>(1),
                ))
            })
            .collect())
    }

    /// Done task creations since `since` not yet announced to their manager (no
    /// `notified:{key}` row), oldest first.
    pub(crate) async fn unannounced_tasks(
        &self,
        tenant: &str,
        since: Ts,
    ) -> Result<Vec<ActionRow>> {
        self.actions_since_where(
            "actions a WHERE a.tenant = $1 AND a.kind = 'create_task' AND a.state = 'done' \
             AND a.created_at >= $2 \
             AND NOT EXISTS (SELECT 1 FROM actions n WHERE n.key = 'notified:' || a.key) \
             ORDER BY a.created_at, a.key",
            tenant,
            since,
            "listing tasks to announce",
        )
        .await
    }

    /// Telegram messages created since `since` whose delivery was attempted and did not finish
    /// (state `intent`), oldest first.
    pub(crate) async fn undelivered_messages(
        &self,
        tenant: &str,
        since: Ts,
    ) -> Result<Vec<ActionRow>> {
        self.actions_since_where(
            "actions WHERE tenant = $1 AND kind IN ('telegram', 'telegram_photo') \
             AND state = 'intent' AND attempts > 0 AND created_at >= $2 ORDER BY created_at, key",
            tenant,
            since,
            "listing undelivered messages",
        )
        .await
    }

    /// Actions `FROM {from}`, whose `$1` is the tenant and `$2` the moment `since`.
    async fn actions_since_where(
        &self,
        from: &str,
        tenant: &str,
        since: Ts,
        op: &'static str,
    ) -> Result<Vec<ActionRow>> {
        let rows = sqlx::query(&format!("SELECT {COLS} FROM {from}"))
            .bind(tenant)
            .bind(since.timestamp())
            .fetch_all(self.pool())
            .await
            .op(op)?;
        from_rows(&rows)
    }

    /// A rule's done actions of `kind` on records of `entity_kind` with these ids, oldest first
    /// (as [`Store::actions_in_state`] orders them).
    pub(crate) async fn done_on_entities(
        &self,
        tenant: &str,
        rule: &str,
        kind: &str,
        entity_kind: EntityKind,
        ids: &[String],
    ) -> Result<Vec<ActionRow>> {
        let sql = format!(
            "SELECT {COLS} FROM actions WHERE tenant = $1 AND entity_kind = $2 AND rule = $3 \
             AND kind = $4 AND state = 'done' AND entity_id IN ({{in}})"
        );
        let fixed = [
            Bind::Text(tenant.to_string()),
            Bind::Text(entity_kind.as_str().to_string()),
            Bind::Text(rule.to_string()),
            Bind::Text(kind.to_string()),
        ];
        let rows = self
            .rows_in(&sql, &fixed, ids, "reading done actions")
            .await?;
        let mut out = from_rows(&rows)?;
        out.sort_by(|a, b| (a.created_at, &a.key).cmp(&(b.created_at, &b.key)));
        Ok(out)
    }

    /// Done actions created at or after `since` whose key starts with `prefix`: key → result.
    pub async fn done_with_prefix(
        &self,
        tenant: &str,
        prefix: &str,
        since: Ts,
    ) -> Result<std::collections::HashMap<String, String>> {
        let rows = sqlx::query(
            "SELECT key, result FROM actions WHERE tenant = $1 AND key LIKE $2 ESCAPE '\\' \
             AND state = 'done' AND created_at >= $3 AND result IS NOT NULL",
        )
        .bind(tenant)
        .bind(like_prefix(prefix))
        .bind(since.timestamp())
        .fetch_all(self.pool())
        .await
        .op("listing done actions")?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Keys of actions created at or after `since`, starting with `prefix`, whose write was
    /// attempted with an outcome unknown (state `intent`, attempts made).
    pub async fn unfinished_with_prefix(
        &self,
        tenant: &str,
        prefix: &str,
        since: Ts,
    ) -> Result<std::collections::HashSet<String>> {
        let rows = sqlx::query(
            "SELECT key FROM actions WHERE tenant = $1 AND key LIKE $2 ESCAPE '\\' \
             AND state = 'intent' AND attempts > 0 AND created_at >= $3",
        )
        .bind(tenant)
        .bind(like_prefix(prefix))
        .bind(since.timestamp())
        .fetch_all(self.pool())
        .await
        .op("listing unfinished actions")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Results of done actions with these keys created at or after `since`.
    pub async fn done_results(
        &self,
        tenant: &str,
        keys: &[String],
        since: Ts,
    ) -> Result<std::collections::HashMap<String, String>> {
        let sql = "SELECT key, result FROM actions WHERE tenant = $1 AND created_at >= $2 \
                   AND state = 'done' AND result IS NOT NULL AND key IN ({in})";
        let fixed = [Bind::Text(tenant.to_string()), Bind::Int(since.timestamp())];
        let rows = self
            .rows_in(sql, &fixed, keys, "reading done actions")
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// A LIKE pattern matching keys that start with `prefix`, its wildcards escaped.
fn like_prefix(prefix: &str) -> String {
    format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}
