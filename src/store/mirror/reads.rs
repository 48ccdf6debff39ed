//! Reading the mirror back: each kind of record for a tenant, the counts, the whole mirror as a
//! [`Snapshot`], and the look-ups the ledger asks when it reconciles a write whose outcome is
//! unknown.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use sqlx::Row;

use crate::domain::*;
use crate::store::{Op, Result, Store, to_secs};

use super::{MirrorCounts, decode_rows, sane_calls};

impl Store {
    async fn load_json<T: DeserializeOwned>(
        &self,
        sql: &str,
        tenant: &str,
        what: &str,
    ) -> Result<Vec<T>> {
        let rows = sqlx::query(sql)
            .bind(tenant)
            .fetch_all(self.pool())
            .await
            .op("reading the mirror")?;
        decode_rows(&rows, what)
    }

    pub async fn users(&self, tenant: &str) -> Result<Vec<User>> {
        self.load_json(
            "SELECT data FROM users WHERE tenant = $1 ORDER BY id",
            tenant,
            "user",
        )
        .await
    }

    pub async fn stages(&self, tenant: &str) -> Result<Vec<Stage>> {
        let rows = sqlx::query(
            "SELECT pipeline_id, id, name, sort, semantics FROM stages WHERE tenant = $1 ORDER BY pipeline_id, sort",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await
        .op("reading stages")?;
        Ok(rows
            .iter()
            .map(|r| Stage {
                pipeline_id: r.get(0),
                id: r.get(1),
                name: r.get(2),
                sort: r.get(3),
                semantics: Semantics::parse(&r.get::<String, _>(4)).unwrap_or(Semantics::Open),
            })
            .collect())
    }

    pub async fn leads(&self, tenant: &str) -> Result<Vec<Lead>> {
        self.load_json(
            "SELECT data FROM leads WHERE tenant = $1 AND deleted = FALSE ORDER BY created_at",
            tenant,
            "lead",
        )
        .await
    }

    /// The leads still open (not yet taken into a deal or rejected), oldest first.
    pub async fn open_leads(&self, tenant: &str) -> Result<Vec<Lead>> {
        self.load_json(
            "SELECT data FROM leads WHERE tenant = $1 AND semantics = 'open' AND deleted = FALSE ORDER BY created_at",
            tenant,
            "lead",
        )
        .await
    }

    pub async fn deals(&self, tenant: &str) -> Result<Vec<Deal>> {
        self.load_json(
            "SELECT data FROM deals WHERE tenant = $1 AND deleted = FALSE ORDER BY created_at",
            tenant,
            "deal",
        )
        .await
    }

    pub async fn contacts(&self, tenant: &str) -> Result<Vec<Contact>> {
        self.load_json(
            "SELECT data FROM contacts WHERE tenant = $1 AND deleted = FALSE ORDER BY id",
            tenant,
            "contact",
        )
        .await
    }

    pub(crate) async fn companies(&self, tenant: &str) -> Result<Vec<Company>> {
        self.load_json(
            "SELECT data FROM companies WHERE tenant = $1 AND deleted = FALSE ORDER BY id",
            tenant,
            "company",
        )
        .await
    }

    pub async fn tasks(&self, tenant: &str) -> Result<Vec<Task>> {
        self.load_json(
            "SELECT data FROM tasks WHERE tenant = $1 AND deleted = FALSE ORDER BY created_at",
            tenant,
            "task",
        )
        .await
    }

    pub(crate) async fn activities(&self, tenant: &str) -> Result<Vec<Activity>> {
        self.load_json(
            "SELECT data FROM activities WHERE tenant = $1 AND deleted = FALSE ORDER BY started_at",
            tenant,
            "activity",
        )
        .await
    }

    pub async fn calls(&self, tenant: &str) -> Result<Vec<Call>> {
        self.load_json(
            "SELECT data FROM calls WHERE tenant = $1 ORDER BY started_at",
            tenant,
            "call",
        )
        .await
        .map(sane_calls)
    }

    /// Row counts of the mirror tables for one tenant.
    pub async fn counts(&self, tenant: &str) -> Result<MirrorCounts> {
        let mut out = BTreeMap::new();
        for t in [
            "users",
            "stages",
            "leads",
            "deals",
            "contacts",
            "companies",
            "tasks",
            "activities",
            "calls",
        ] {
            let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {t} WHERE tenant = $1"))
                .bind(tenant)
                .fetch_one(self.pool())
                .await
                .op("counting rows")?
                .get(0);
            out.insert(t.to_string(), n);
        }
        Ok(out)
    }
}

impl Store {
    /// The id of a task whose text carries `marker` (ledger reconciliation).
    pub(crate) async fn find_task_with_marker(
        &self,
        tenant: &str,
        marker: &str,
    ) -> Result<Option<String>> {
        // The marker is JSON-escaped inside `data` exactly as written (it has no quotes or
        // backslashes), so a substring match on the stored JSON finds it.
        let pattern = format!("%{}%", marker.replace('%', "").replace('_', "\\_"));
        let row = sqlx::query(
            "SELECT id FROM tasks WHERE tenant = $1 AND data LIKE $2 ESCAPE '\\' LIMIT 1",
        )
        .bind(tenant)
        .bind(pattern)
        .fetch_optional(self.pool())
        .await
        .op("looking for an action marker")?;
        Ok(row.map(|r| r.get(0)))
    }
}

/// The mirror of one tenant loaded into memory: what rules and reports work on.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub users: Vec<User>,
    pub(crate) stages: Vec<Stage>,
    pub(crate) leads: Vec<Lead>,
    pub(crate) deals: Vec<Deal>,
    pub contacts: Vec<Contact>,
    pub(crate) companies: Vec<Company>,
    pub tasks: Vec<Task>,
    pub(crate) activities: Vec<Activity>,
    pub calls: Vec<Call>,
}

impl Snapshot {
    pub async fn load(store: &Store, tenant: &str) -> Result<Snapshot> {
        Ok(Snapshot {
            users: store.users(tenant).await?,
            stages: store.stages(tenant).await?,
            leads: store.leads(tenant).await?,
            deals: store.deals(tenant).await?,
            contacts: store.contacts(tenant).await?,
            companies: store.companies(tenant).await?,
            tasks: store.tasks(tenant).await?,
            activities: store.activities(tenant).await?,
            calls: store.calls(tenant).await?,
        })
    }
}

impl Store {
    /// A lead with this phone (E.164) in the mirror (ledger reconciliation of created leads).
    pub(crate) async fn find_lead_by_phone(
        &self,
        tenant: &str,
        e164: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT entity_id FROM phones WHERE tenant = $1 AND e164 = $2 AND entity_kind = 'lead' LIMIT 1",
        )
        .bind(tenant)
        .bind(e164)
        .fetch_optional(self.pool())
        .await
        .op("looking up a lead by phone")?;
        Ok(row.map(|r| r.get(0)))
    }

    /// A deal created from `lead_id`, if the mirror has one.
    pub(crate) async fn find_deal_for_lead(
        &self,
        tenant: &str,
        lead_id: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query("SELECT id FROM deals WHERE tenant = $1 AND lead_id = $2 LIMIT 1")
            .bind(tenant)
            .bind(lead_id)
            .fetch_optional(self.pool())
            .await
            .op("looking up a deal by lead")?;
        Ok(row.map(|r| r.get(0)))
    }
}

impl Store {
    /// A deal with this title and owner created at or after `since` (one minute of clock skew
    /// allowed): how a deal write interrupted by a crash is recognised in CRMs without markers.
    pub(crate) async fn find_deal_created_like(
        &self,
        tenant: &str,
        title: &str,
        responsible: Option<&str>,
        since: Ts,
    ) -> Result<Option<String>> {
        let rows = sqlx::query(
            "SELECT id, data FROM deals WHERE tenant = $1 AND created_at >= $2 ORDER BY created_at",
        )
        .bind(tenant)
        .bind(to_secs(since) - 60)
        .fetch_all(self.pool())
        .await
        .op("looking up a created deal")?;
        for r in rows {
            let data: String = r.get(1);
            if let Ok(d) = serde_json::from_str::<Deal>(&data)
                && d.title == title
                && d.responsible_id.as_deref() == responsible
            {
                return Ok(Some(r.get(0)));
            }
        }
        Ok(None)
    }
}
