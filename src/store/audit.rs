//! The audit log: what dozor did and saw, newest last.

use serde::Serialize;
use sqlx::Row;

use super::{Op, Result, Store, from_secs, to_secs};
use crate::domain::Ts;

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: Ts,
    pub kind: String,
    pub message: String,
    pub data: serde_json::Value,
}

impl Store {
    pub async fn audit(
        &self,
        tenant: &str,
        kind: &str,
        message: &str,
        data: serde_json::Value,
    ) -> Result<()> {
        let at = chrono::Utc::now();
        let id = format!(
            "{}-{}-{:08x}",
            at.timestamp_micros(),
            tenant,
            rand::random::<u32>()
        );
        sqlx::query("INSERT INTO audit_log (id, tenant, at, kind, message, data) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(tenant)
            .bind(to_secs(at))
            .bind(kind)
            .bind(message)
            .bind(data.to_string())
            .execute(self.pool())
            .await
            .op("writing the audit log")?;
        Ok(())
    }

    pub async fn audit_entries(&self, tenant: &str, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT at, kind, message, data FROM audit_log WHERE tenant = $1 ORDER BY id DESC LIMIT $2")
            .bind(tenant)
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .op("reading the audit log")?;
        let mut out: Vec<AuditEntry> = rows
            .iter()
            .map(|r| AuditEntry {
                at: from_secs(r.get(0)),
                kind: r.get(1),
                message: r.get(2),
                data: serde_json::from_str(&r.get::<String, _>(3)).unwrap_or_default(),
            })
            .collect();
        out.reverse();
        Ok(out)
    }
}
