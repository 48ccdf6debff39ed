//! Filling in columns added to the mirror after rows were written: each upgrade runs once per
//! database (remembered in `store_upgrades`), reading the record every row keeps as JSON.

use sqlx::{AnyPool, Row};

use crate::domain::Deal;
use crate::store::{Op, Result, now_secs};

/// Rows per read while filling in.
const BATCH: i64 = 5_000;

/// Runs the upgrades this database has not had yet.
pub(crate) async fn upgrade(pool: &AnyPool) -> Result<()> {
    if !done(pool, "deals.lead_id").await? {
        fill_deal_lead_ids(pool).await?;
        mark(pool, "deals.lead_id").await?;
    }
    Ok(())
}

async fn done(pool: &AnyPool, name: &str) -> Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM store_upgrades WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .op("reading store upgrades")?
        .is_some())
}

async fn mark(pool: &AnyPool, name: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO store_upgrades (name, done_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(now_secs())
    .execute(pool)
    .await
    .op("recording a store upgrade")?;
    Ok(())
}

/// `deals.lead_id` from each deal's record, for deals mirrored before the column existed.
async fn fill_deal_lead_ids(pool: &AnyPool) -> Result<()> {
    let (mut tenant, mut id) = (String::new(), String::new());
    let mut filled = 0usize;
    loop {
        let rows = sqlx::query(
            "SELECT tenant, id, data FROM deals WHERE (tenant > $1 OR (tenant = $1 AND id > $2)) \
             AND data LIKE '%\"lead_id\":\"%' ORDER BY tenant, id LIMIT $3",
        )
        .bind(tenant.clone())
        .bind(id.clone())
        .bind(BATCH)
        .fetch_all(pool)
        .await
        .op("reading deals to upgrade")?;
        let Some(last) = rows.last() else { break };
        (tenant, id) = (last.get(0), last.get(1));
        let mut tx = pool.begin().await.op("starting a transaction")?;
        for r in &rows {
            let Ok(deal) = serde_json::from_str::<Deal>(&r.get::<String, _>(2)) else {
                continue;
            };
            sqlx::query("UPDATE deals SET lead_id = $3 WHERE tenant = $1 AND id = $2")
                .bind(r.get::<String, _>(0))
                .bind(r.get::<String, _>(1))
                .bind(deal.lead_id)
                .execute(&mut *tx)
                .await
                .op("upgrading deals")?;
            filled += 1;
        }
        tx.commit().await.op("upgrading deals")?;
    }
    if filled > 0 {
        tracing::info!(
            deals = filled,
            "deals: the lead each was made from is now indexed"
        );
    }
    Ok(())
}
