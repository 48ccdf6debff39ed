//! Tenant leases for running several daemons on one database.
//!
//! A lease is a row `(tenant, holder, expires_at)`. Acquiring is one conditional upsert: it
//! succeeds when the row is free, already ours, or expired; so two instances can never both
//! believe they hold a live lease. Times are milliseconds of the instances' clocks, which must
//! be kept in sync (NTP) to well under the lease TTL.
//!
//! The ledger checks the lease again when it claims an action (see `Store::claim_action`), so an
//! instance that stalled past its lease cannot start a write its successor may also make.

use std::time::Duration;

use sqlx::Row;

use super::{Op, Result, Store};
use crate::domain::Ts;

/// One lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub tenant: String,
    pub holder: String,
    pub epoch: i64,
    pub(crate) acquired_at: Ts,
    pub expires_at: Ts,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn from_ms(ms: i64) -> Ts {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Store {
    /// Takes or renews the lease on `tenant` for `ttl`. Returns the lease epoch when `holder`
    /// holds it afterwards, `None` when another instance holds a live lease.
    pub async fn acquire_lease(
        &self,
        tenant: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<i64>> {
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        // Both SQLite and PostgreSQL evaluate the SET expressions against the old row, so the
        // CASEs see the previous holder.
        sqlx::query(
            "INSERT INTO leases (tenant, holder, epoch, acquired_at, expires_at) \
             VALUES ($1, $2, 1, $3, $4) \
             ON CONFLICT (tenant) DO UPDATE SET \
               epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch ELSE leases.epoch + 1 END, \
               acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END, \
               holder = excluded.holder, \
               expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $3",
        )
        .bind(tenant)
        .bind(holder)
        .bind(now)
        .bind(expires)
        .execute(self.pool())
        .await
        .op("acquiring a tenant lease")?;
        let row = sqlx::query("SELECT holder, epoch, expires_at FROM leases WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(self.pool())
            .await
            .op("reading a tenant lease")?;
        Ok(row.and_then(|r| {
            let h: String = r.get(0);
            let exp: i64 = r.get(2);
            (h == holder && exp > now).then(|| r.get::<i64, _>(1))
        }))
    }

    /// Extends every live lease `holder` has; returns how many it still holds. Run more often
    /// than the TTL so a long cycle (an initial sync can take minutes) keeps its tenant.
    pub async fn renew_leases(&self, holder: &str, ttl: Duration) -> Result<u64> {
        let now = now_ms();
        let r =
            sqlx::query("UPDATE leases SET expires_at = $1 WHERE holder = $2 AND expires_at > $3")
                .bind(now + ttl.as_millis() as i64)
                .bind(holder)
                .bind(now)
                .execute(self.pool())
                .await
                .op("renewing tenant leases")?;
        Ok(r.rows_affected())
    }

    /// Gives a lease up at once (graceful stop, rebalancing), so another instance need not wait
    /// for it to expire.
    pub async fn release_lease(&self, tenant: &str, holder: &str) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE tenant = $1 AND holder = $2")
            .bind(tenant)
            .bind(holder)
            .execute(self.pool())
            .await
            .op("releasing a tenant lease")?;
        Ok(())
    }

    /// All leases, live or not, by tenant.
    pub async fn leases(&self) -> Result<Vec<Lease>> {
        let rows = sqlx::query(
            "SELECT tenant, holder, epoch, acquired_at, expires_at FROM leases ORDER BY tenant",
        )
        .fetch_all(self.pool())
        .await
        .op("listing tenant leases")?;
        Ok(rows
            .iter()
            .map(|r| Lease {
                tenant: r.get(0),
                holder: r.get(1),
                epoch: r.get(2),
                acquired_at: from_ms(r.get(3)),
                expires_at: from_ms(r.get(4)),
            })
            .collect())
    }

    /// Records that instance `id` is alive and returns how many instances were seen within
    /// `ttl` (itself included).
    pub async fn heartbeat(&self, id: &str, ttl: Duration) -> Result<usize> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO instances (id, seen_at, started_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await
        .op("recording an instance heartbeat")?;
        let since = now - ttl.as_millis() as i64;
        // Forget instances gone for long, so the table does not grow with every restart.
        sqlx::query("DELETE FROM instances WHERE seen_at < $1")
            .bind(now - 24 * 3600 * 1000)
            .execute(self.pool())
            .await
            .op("forgetting old instances")?;
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM instances WHERE seen_at >= $1")
            .bind(since)
            .fetch_one(self.pool())
            .await
            .op("counting live instances")?
            .get(0);
        Ok(n.max(1) as usize)
    }

    /// Removes this instance's heartbeat (graceful stop).
    pub async fn forget_instance(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .op("removing an instance heartbeat")?;
        Ok(())
    }
}
