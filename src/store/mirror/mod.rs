//! The mirror: the CRM and telephony records dozor has read, in domain form.
//!
//! Each row keeps the columns rules and reports filter on, plus `data`, the whole record as JSON,
//! so reading a record back never depends on a column list kept in sync by hand.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Row};

mod clients;
mod journal;
mod reads;
mod upgrade;
mod working;

pub(crate) use clients::{ClientFlips, ClientState};
pub use journal::{Changes, RuleMark};
pub use reads::Snapshot;
pub(super) use upgrade::upgrade;

use crate::domain::phone;
use crate::domain::*;
use crate::store::{Op, Result, Store, now_secs, to_secs};

type Q<'a> = Query<'a, Any, AnyArguments<'a>>;

fn json<T: serde::Serialize>(x: &T) -> String {
    serde_json::to_string(x).expect("domain records serialise")
}

fn entity_cols(e: &Option<EntityRef>) -> (Option<String>, Option<String>) {
    match e {
        Some(r) => (Some(r.kind.as_str().to_string()), Some(r.id.clone())),
        None => (None, None),
    }
}

/// Builds the upsert for one record.
// Long: one arm per table, each its SQL and binds; they read best side by side and change
// together with the migrations.
fn upsert(tenant: &str, r: &Record) -> Q<'static> {
    let t = tenant.to_string();
    match r {
        Record::Lead(x) => sqlx::query(
            "INSERT INTO leads (tenant, id, status_id, semantics, responsible_id, source, created_at, updated_at, closed_at, deleted, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE, $10) \
             ON CONFLICT (tenant, id) DO UPDATE SET status_id = excluded.status_id, semantics = excluded.semantics, \
             responsible_id = excluded.responsible_id, source = excluded.source, created_at = excluded.created_at, \
             updated_at = excluded.updated_at, closed_at = excluded.closed_at, deleted = FALSE, data = excluded.data",
        )
        .bind(t)
        .bind(x.id.clone())
        .bind(x.status_id.clone())
        .bind(x.semantics.as_str())
        .bind(x.responsible_id.clone())
        .bind(x.source.clone())
        .bind(to_secs(x.created_at))
        .bind(to_secs(x.updated_at))
        .bind(x.closed_at.map(to_secs))
        .bind(json(x)),
        Record::Deal(x) => sqlx::query(
            "INSERT INTO deals (tenant, id, pipeline_id, stage_id, semantics, amount, responsible_id, contact_id, company_id, created_at, updated_at, closed_at, deleted, data, lead_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, FALSE, $13, $14) \
             ON CONFLICT (tenant, id) DO UPDATE SET pipeline_id = excluded.pipeline_id, stage_id = excluded.stage_id, \
             semantics = excluded.semantics, amount = excluded.amount, responsible_id = excluded.responsible_id, \
             contact_id = excluded.contact_id, company_id = excluded.company_id, created_at = excluded.created_at, \
             updated_at = excluded.updated_at, closed_at = excluded.closed_at, deleted = FALSE, data = excluded.data, \
             lead_id = excluded.lead_id",
        )
        .bind(t)
        .bind(x.id.clone())
        .bind(x.pipeline_id.clone())
        .bind(x.stage_id.clone())
        .bind(x.semantics.as_str())
        .bind(x.amount)
        .bind(x.responsible_id.clone())
        .bind(x.contact_id.clone())
        .bind(x.company_id.clone())
        .bind(to_secs(x.created_at))
        .bind(to_secs(x.updated_at))
        .bind(x.closed_at.map(to_secs))
        .bind(json(x))
        .bind(x.lead_id.clone()),
        Record::Contact(x) => sqlx::query(
            "INSERT INTO contacts (tenant, id, responsible_id, company_id, created_at, updated_at, deleted, data) \
             VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7) \
             ON CONFLICT (tenant, id) DO UPDATE SET responsible_id = excluded.responsible_id, company_id = excluded.company_id, \
             created_at = excluded.created_at, updated_at = excluded.updated_at, deleted = FALSE, data = excluded.data",
        )
        .bind(t)
        .bind(x.id.clone())
        .bind(x.responsible_id.clone())
        .bind(x.company_id.clone())
        .bind(to_secs(x.created_at))
        .bind(to_secs(x.updated_at))
        .bind(json(x)),
        Record::Company(x) => sqlx::query(
            "INSERT INTO companies (tenant, id, responsible_id, created_at, updated_at, deleted, data) \
             VALUES ($1, $2, $3, $4, $5, FALSE, $6) \
             ON CONFLICT (tenant, id) DO UPDATE SET responsible_id = excluded.responsible_id, \
             created_at = excluded.created_at, updated_at = excluded.updated_at, deleted = FALSE, data = excluded.data",
        )
        .bind(t)
        .bind(x.id.clone())
        .bind(x.responsible_id.clone())
        .bind(to_secs(x.created_at))
        .bind(to_secs(x.updated_at))
        .bind(json(x)),
        Record::Task(x) => {
            let (ek, eid) = entity_cols(&x.entity);
            sqlx::query(
                "INSERT INTO tasks (tenant, id, responsible_id, deadline, completed, entity_kind, entity_id, created_at, updated_at, deleted, data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE, $10) \
                 ON CONFLICT (tenant, id) DO UPDATE SET responsible_id = excluded.responsible_id, deadline = excluded.deadline, \
                 completed = excluded.completed, entity_kind = excluded.entity_kind, entity_id = excluded.entity_id, \
                 created_at = excluded.created_at, updated_at = excluded.updated_at, deleted = FALSE, data = excluded.data",
            )
            .bind(t)
            .bind(x.id.clone())
            .bind(x.responsible_id.clone())
            .bind(x.deadline.map(to_secs))
            .bind(x.completed)
            .bind(ek)
            .bind(eid)
            .bind(to_secs(x.created_at))
            .bind(to_secs(x.updated_at))
            .bind(json(x))
        }
        Record::Activity(x) => {
            let (ek, eid) = entity_cols(&x.entity);
            sqlx::query(
                "INSERT INTO activities (tenant, id, kind, direction, entity_kind, entity_id, responsible_id, external_id, started_at, updated_at, deleted, data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, FALSE, $11) \
                 ON CONFLICT (tenant, id) DO UPDATE SET kind = excluded.kind, direction = excluded.direction, \
                 entity_kind = excluded.entity_kind, entity_id = excluded.entity_id, responsible_id = excluded.responsible_id, \
                 external_id = excluded.external_id, started_at = excluded.started_at, updated_at = excluded.updated_at, \
                 deleted = FALSE, data = excluded.data",
            )
            .bind(t)
            .bind(x.id.clone())
            .bind(x.kind.as_str())
            .bind(x.direction.map(|d| d.as_str()))
            .bind(ek)
            .bind(eid)
            .bind(x.responsible_id.clone())
            .bind(x.external_id.clone())
            .bind(to_secs(x.started_at))
            .bind(to_secs(x.updated_at))
            .bind(json(x))
        }
    }
}

/// The phones of a record that carries any, normalised; junk is skipped.
fn phones_of(r: &Record) -> Option<&[String]> {
    match r {
        Record::Lead(x) => Some(&x.phones),
        Record::Contact(x) => Some(&x.phones),
        Record::Company(x) => Some(&x.phones),
        _ => None,
    }
}

/// What a written record touches besides itself, as it is now: the neighbours it is bound to and
/// its numbers (what it touched before the write comes from [`journal::before_write`]).
fn after_write(r: &Record, out: &mut Changes) {
    let mut bind = |kind, id: &Option<String>| {
        if let Some(id) = id {
            out.entity(kind, id.clone());
        }
    };
    match r {
        Record::Deal(x) => {
            bind(EntityKind::Contact, &x.contact_id);
            bind(EntityKind::Company, &x.company_id);
        }
        Record::Contact(x) => bind(EntityKind::Company, &x.company_id),
        Record::Task(x) => out_entity(out, &x.entity),
        Record::Activity(x) => out_entity(out, &x.entity),
        Record::Lead(_) | Record::Company(_) => {}
    }
    if let Some(phones) = phones_of(r) {
        out.phones
            .extend(phones.iter().filter_map(|p| phone::normalize(p).ok()));
    }
}

fn out_entity(out: &mut Changes, e: &Option<EntityRef>) {
    if let Some(e) = e {
        out.entity_ref(e);
    }
}

fn table(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Lead => "leads",
        EntityKind::Deal => "deals",
        EntityKind::Contact => "contacts",
        EntityKind::Company => "companies",
        EntityKind::Task => "tasks",
        EntityKind::Activity => "activities",
    }
}

/// Decodes the `data` column (the first) of mirror rows into records of kind `what`. A row
/// that does not decode (damaged by hand, or written by a dozor that stored other shapes) is
/// skipped with a warning: one bad record must not stop every rule and report of its tenant.
pub(super) fn decode_rows<T: DeserializeOwned>(
    rows: &[sqlx::any::AnyRow],
    what: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let decoded = r
            .try_get::<String, _>(0)
            .map_err(|e| e.to_string())
            .and_then(|data| serde_json::from_str(&data).map_err(|e| e.to_string()));
        match decoded {
            Ok(v) => out.push(v),
            Err(e) => {
                tracing::warn!(record = what, error = %e, "skipping a mirror row that does not decode")
            }
        }
    }
    Ok(out)
}

/// Calls whose numbers are outside the sane ranges (stored before they were checked at the
/// edge) are skipped with a warning, so no rule or report computes with them.
pub(super) fn sane_calls(calls: Vec<Call>) -> Vec<Call> {
    calls
        .into_iter()
        .filter(|c| match c.insane_field() {
            None => true,
            Some(field) => {
                tracing::warn!(provider = c.provider.as_str(), call_id = %c.id, field, "skipping a stored call with an out-of-range value");
                false
            }
        })
        .collect()
}

/// How many rows the mirror holds, per table.
pub(crate) type MirrorCounts = BTreeMap<String, i64>;

impl Store {
    /// Upserts records in one transaction (and their phone index), then stores `cursor` for
    /// `(source, entity)` in the same transaction: a crash leaves either the page and its cursor
    /// or neither, so a resumed sync never skips a page.
    pub async fn save_page(
        &self,
        tenant: &str,
        source: &str,
        entity: EntityKind,
        records: &[Record],
        deleted: &[String],
        cursor: &str,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await.op("starting a transaction")?;
        let journal = Self::journal_on(&mut tx, tenant).await?;
        let mut changes = Changes::default();
        if journal {
            let ids: Vec<&str> = records
                .iter()
                .map(Record::id)
                .chain(deleted.iter().map(String::as_str))
                .collect();
            journal::before_write(&mut tx, tenant, entity, &ids, &mut changes).await?;
            for id in &ids {
                changes.entity(entity, *id);
            }
            for r in records {
                after_write(r, &mut changes);
            }
        }
        let delete_sql = format!(
            "UPDATE {} SET deleted = TRUE WHERE tenant = $1 AND id = $2",
            table(entity)
        );
        for id in deleted {
            sqlx::query(&delete_sql)
                .bind(tenant)
                .bind(id.clone())
                .execute(&mut *tx)
                .await
                .op("marking a record deleted")?;
        }
        for r in records {
            upsert(tenant, r)
                .execute(&mut *tx)
                .await
                .op("saving a record")?;
            if let Some(phones) = phones_of(r) {
                let kind = r.entity_kind().as_str();
                sqlx::query(
                    "DELETE FROM phones WHERE tenant = $1 AND entity_kind = $2 AND entity_id = $3",
                )
                .bind(tenant)
                .bind(kind)
                .bind(r.id())
                .execute(&mut *tx)
                .await
                .op("indexing phones")?;
                let mut seen = std::collections::BTreeSet::new();
                for p in phones {
                    if let Ok(e164) = phone::normalize(p)
                        && seen.insert(e164.clone())
                    {
                        sqlx::query("INSERT INTO phones (tenant, e164, entity_kind, entity_id) VALUES ($1, $2, $3, $4)")
                            .bind(tenant)
                            .bind(e164)
                            .bind(kind)
                            .bind(r.id())
                            .execute(&mut *tx)
                            .await
                            .op("indexing phones")?;
                    }
                }
            }
        }
        Self::journal_in(&mut tx, tenant, &changes).await?;
        Self::put_cursor_in(&mut tx, tenant, source, entity.as_str(), cursor).await?;
        tx.commit().await.op("committing a page")?;
        Ok(())
    }

    pub async fn upsert_users(&self, tenant: &str, users: &[User]) -> Result<()> {
        let mut tx = self.pool().begin().await.op("starting a transaction")?;
        let now = now_secs();
        for u in users {
            sqlx::query(
                "INSERT INTO users (tenant, id, name, extension, active, data, synced_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant, id) DO UPDATE SET name = excluded.name, extension = excluded.extension, \
                 active = excluded.active, data = excluded.data, synced_at = excluded.synced_at",
            )
            .bind(tenant)
            .bind(u.id.clone())
            .bind(u.name.clone())
            .bind(u.extension.clone())
            .bind(u.active)
            .bind(json(u))
            .bind(now)
            .execute(&mut *tx)
            .await
            .op("saving users")?;
        }
        tx.commit().await.op("saving users")?;
        Ok(())
    }

    pub async fn upsert_pipelines(&self, tenant: &str, pipelines: &[Pipeline]) -> Result<()> {
        let mut tx = self.pool().begin().await.op("starting a transaction")?;
        let now = now_secs();
        for p in pipelines {
            for s in &p.stages {
                sqlx::query(
                    "INSERT INTO stages (tenant, pipeline_id, id, pipeline_name, name, sort, semantics, synced_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (tenant, pipeline_id, id) DO UPDATE SET pipeline_name = excluded.pipeline_name, \
                     name = excluded.name, sort = excluded.sort, semantics = excluded.semantics, synced_at = excluded.synced_at",
                )
                .bind(tenant)
                .bind(p.id.clone())
                .bind(s.id.clone())
                .bind(p.name.clone())
                .bind(s.name.clone())
                .bind(s.sort)
                .bind(s.semantics.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .op("saving stages")?;
            }
        }
        tx.commit().await.op("saving stages")?;
        Ok(())
    }

    /// Stores calls, replacing earlier versions of the same provider call id (late status
    /// changes and recordings update the row instead of adding one).
    pub async fn upsert_calls(&self, tenant: &str, calls: &[Call]) -> Result<()> {
        let mut tx = self.pool().begin().await.op("starting a transaction")?;
        let journal = Self::journal_on(&mut tx, tenant).await?;
        let mut changes = Changes::default();
        if journal {
            let mut by_provider: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for c in calls {
                by_provider
                    .entry(c.provider.as_str())
                    .or_default()
                    .push(c.id.as_str());
            }
            for (provider, ids) in &by_provider {
                journal::calls_before_write(&mut tx, tenant, provider, ids, &mut changes).await?;
            }
        }
        for c in calls {
            if let Some(field) = c.insane_field() {
                tracing::warn!(tenant, provider = c.provider.as_str(), call_id = %c.id, field, "call refused: value out of range");
                continue;
            }
            let e164 = phone::normalize(&c.client_phone).ok();
            if journal {
                changes
                    .calls
                    .insert(format!("{}:{}", c.provider.as_str(), c.id));
                changes.phones.extend(e164.clone());
            }
            sqlx::query(
                "INSERT INTO calls (tenant, provider, id, started_at, direction, answered, talk_s, client_e164, employee_id, data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (tenant, provider, id) DO UPDATE SET started_at = excluded.started_at, direction = excluded.direction, \
                 answered = excluded.answered, talk_s = excluded.talk_s, client_e164 = excluded.client_e164, \
                 employee_id = excluded.employee_id, data = excluded.data",
            )
            .bind(tenant)
            .bind(c.provider.as_str())
            .bind(c.id.clone())
            .bind(to_secs(c.started_at))
            .bind(c.direction.as_str())
            .bind(c.answered)
            .bind(c.talk_s)
            .bind(e164)
            .bind(c.employee_id.clone())
            .bind(json(c))
            .execute(&mut *tx)
            .await
            .op("saving calls")?;
        }
        Self::journal_in(&mut tx, tenant, &changes).await?;
        tx.commit().await.op("saving calls")?;
        Ok(())
    }

    /// Marks records as deleted in the CRM (kept for history, hidden from rules).
    /// Marks deleted every mirrored record of `kind` whose id is not in `present` (the result
    /// of a deletion sweep); returns how many were marked.
    pub(crate) async fn mark_missing_deleted(
        &self,
        tenant: &str,
        kind: EntityKind,
        present: &[String],
    ) -> Result<usize> {
        let present: std::collections::HashSet<&str> = present.iter().map(String::as_str).collect();
        let rows = sqlx::query(&format!(
            "SELECT id FROM {} WHERE tenant = $1 AND deleted = FALSE",
            table(kind)
        ))
        .bind(tenant)
        .fetch_all(self.pool())
        .await
        .op("reading mirrored ids")?;
        let missing: Vec<String> = rows
            .iter()
            .map(|r| r.get::<String, _>(0))
            .filter(|id| !present.contains(id.as_str()))
            .collect();
        let sql = format!(
            "UPDATE {} SET deleted = TRUE WHERE tenant = $1 AND id = $2",
            table(kind)
        );
        let mut tx = self.pool().begin().await.op("starting a transaction")?;
        let mut changes = Changes::default();
        if Self::journal_on(&mut tx, tenant).await? {
            let ids: Vec<&str> = missing.iter().map(String::as_str).collect();
            journal::before_write(&mut tx, tenant, kind, &ids, &mut changes).await?;
            for id in &ids {
                changes.entity(kind, *id);
            }
        }
        for id in &missing {
            sqlx::query(&sql)
                .bind(tenant)
                .bind(id.clone())
                .execute(&mut *tx)
                .await
                .op("marking a record deleted")?;
        }
        Self::journal_in(&mut tx, tenant, &changes).await?;
        tx.commit().await.op("marking records deleted")?;
        Ok(missing.len())
    }

    /// Records the outcome of leads the CRM decided where its lead list no longer shows them
    /// (see `Crm::lead_outcomes`): the status columns and the stored record, in one transaction,
    /// and only for rows still open, so the same outcome is written once and a repeat changes
    /// nothing. Returns how many rows changed.
    pub(crate) async fn settle_leads(&self, tenant: &str, decided: &[Lead]) -> Result<usize> {
        if decided.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool().begin().await.op("starting a transaction")?;
        let journal = Self::journal_on(&mut tx, tenant).await?;
        let mut changes = Changes::default();
        let mut changed = 0usize;
        for l in decided {
            let done = sqlx::query(
                "UPDATE leads SET status_id = $3, semantics = $4, closed_at = $5, updated_at = $6, data = $7 \
                 WHERE tenant = $1 AND id = $2 AND semantics = 'open'",
            )
            .bind(tenant)
            .bind(l.id.clone())
            .bind(l.status_id.clone())
            .bind(l.semantics.as_str())
            .bind(l.closed_at.map(to_secs))
            .bind(to_secs(l.updated_at))
            .bind(json(l))
            .execute(&mut *tx)
            .await
            .op("recording the outcome of a lead")?;
            if journal && done.rows_affected() > 0 {
                changes.entity(EntityKind::Lead, l.id.clone());
            }
            changed += done.rows_affected() as usize;
        }
        Self::journal_in(&mut tx, tenant, &changes).await?;
        tx.commit().await.op("committing lead outcomes")?;
        Ok(changed)
    }
}
