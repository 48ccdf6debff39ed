//! Sync cursors and the record of sync runs.

use sqlx::Row;

use super::{Op, Result, Store, from_secs, now_secs, to_secs};
use crate::domain::Ts;

/// One sync cycle of one source, for health checks and reports.
#[derive(Debug, Clone)]
pub struct SyncRun {
    pub source: String,
    pub started_at: Ts,
    pub finished_at: Option<Ts>,
    pub ok: bool,
    pub items: i64,
    pub error: Option<String>,
}

impl Store {
    /// The stored cursor of `(tenant, source, entity)`, as the JSON text the sync wrote.
    pub(crate) async fn cursor(
        &self,
        tenant: &str,
        source: &str,
        entity: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT cursor FROM sync_cursors WHERE tenant = $1 AND source = $2 AND entity = $3",
        )
        .bind(tenant)
        .bind(source)
        .bind(entity)
        .fetch_optional(self.pool())
        .await
        .op("reading a sync cursor")?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(crate) async fn put_cursor(
        &self,
        tenant: &str,
        source: &str,
        entity: &str,
        cursor: &str,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await.op("starting a transaction")?;
        Self::put_cursor_in(&mut tx, tenant, source, entity, cursor).await?;
        tx.commit().await.op("saving a sync cursor")?;
        Ok(())
    }

    pub(crate) async fn put_cursor_in(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        tenant: &str,
        source: &str,
        entity: &str,
        cursor: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sync_cursors (tenant, source, entity, cursor, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant, source, entity) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(source)
        .bind(entity)
        .bind(cursor)
        .bind(now_secs())
        .execute(&mut **tx)
        .await
        .op("saving a sync cursor")?;
        Ok(())
    }

    /// Records a finished sync run.
    pub async fn record_sync_run(&self, tenant: &str, run: &SyncRun) -> Result<()> {
        let id = format!(
            "{}-{}-{}",
            tenant,
            run.source,
            run.started_at.timestamp_micros()
        );
        sqlx::query(
            "INSERT INTO sync_runs (id, tenant, source, started_at, finished_at, ok, items, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at, ok = excluded.ok, items = excluded.items, error = excluded.error",
        )
        .bind(id)
        .bind(tenant)
        .bind(run.source.clone())
        .bind(to_secs(run.started_at))
        .bind(run.finished_at.map(to_secs))
        .bind(run.ok)
        .bind(run.items)
        .bind(run.error.clone())
        .execute(self.pool())
        .await
        .op("recording a sync run")?;
        Ok(())
    }

    /// The latest run per source.
    pub async fn last_sync_runs(&self, tenant: &str) -> Result<Vec<SyncRun>> {
        let rows = sqlx::query(
            "SELECT source, started_at, finished_at, CAST(ok AS INTEGER), items, error FROM sync_runs r WHERE tenant = $1 \
             AND started_at = (SELECT MAX(started_at) FROM sync_runs x WHERE x.tenant = r.tenant AND x.source = r.source) \
             ORDER BY source",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await
        .op("reading sync runs")?;
        Ok(rows
            .iter()
            .map(|r| SyncRun {
                source: r.get(0),
                started_at: from_secs(r.get(1)),
                finished_at: r.get::<Option<i64>, _>(2).map(from_secs),
                // sqlx's Any driver cannot decode SQLite BOOLEAN: read it as an integer.
                ok: r.get::<i64, _>(3) != 0,
                items: r.get(4),
                error: r.get(5),
            })
            .collect())
    }
}
