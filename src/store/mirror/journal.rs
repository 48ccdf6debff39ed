//! The mirror's change journal and the rules' marks in it.
//!
//! A rule that looked at the mirror at journal position `n` needs, next cycle, only what was
//! written after `n` (plus what fell due by the clock). Every transaction that writes mirror rows
//! takes the tenant's next sequence number and notes under it each record it touched and each
//! record whose rules read the touched one: a task's deal, a deal's contact and company, a
//! contact's company, the phone numbers of a record or a call, as they were before the write and
//! after it (a task moved from one deal to another changes both deals).
//!
//! Until some rule has a mark the journal is not written: the first evaluation looks at
//! everything anyway, and a first sync of a million records should not write a million notes.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;

use crate::domain::{EntityKind, EntityRef, Ts};
use crate::store::{Op, Result, Store, from_secs, to_secs};

use crate::store::in_list::{Bind, rows_in};

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// Rows per multi-row statement: four binds each, far below SQLite's variable limit.
const CHUNK: usize = 400;

/// What one write touched: records by kind and id, phone numbers, calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub entities: BTreeMap<EntityKind, BTreeSet<String>>,
    /// E.164 numbers whose owners or calls changed.
    pub phones: BTreeSet<String>,
    /// Calls as `provider:id`.
    pub calls: BTreeSet<String>,
}

impl Changes {
    pub fn entity(&mut self, kind: EntityKind, id: impl Into<String>) {
        self.entities.entry(kind).or_default().insert(id.into());
    }

    pub fn entity_ref(&mut self, e: &EntityRef) {
        self.entity(e.kind, e.id.clone());
    }

    /// The ids of `kind` that changed.
    pub fn ids(&self, kind: EntityKind) -> impl Iterator<Item = &String> {
        self.entities.get(&kind).into_iter().flatten()
    }

    /// How many records, numbers and calls changed.
    pub fn len(&self) -> usize {
        self.entities.values().map(BTreeSet::len).sum::<usize>()
            + self.phones.len()
            + self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.values().all(BTreeSet::is_empty)
            && self.phones.is_empty()
            && self.calls.is_empty()
    }

    pub fn merge(&mut self, other: Changes) {
        for (k, ids) in other.entities {
            self.entities.entry(k).or_default().extend(ids);
        }
        self.phones.extend(other.phones);
        self.calls.extend(other.calls);
    }

    fn rows(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        for (k, ids) in &self.entities {
            out.extend(ids.iter().map(|id| (k.as_str(), id.as_str())));
        }
        out.extend(self.phones.iter().map(|p| ("phone", p.as_str())));
        out.extend(self.calls.iter().map(|c| ("call", c.as_str())));
        out
    }

    fn add_row(&mut self, kind: &str, key: String) {
        match kind {
            "phone" => {
                self.phones.insert(key);
            }
            "call" => {
                self.calls.insert(key);
            }
            k => {
                if let Some(kind) = EntityKind::parse(k) {
                    self.entity(kind, key);
                }
            }
        }
    }
}

/// Where a rule's last complete evaluation stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMark {
    /// The journal position it had seen.
    pub seq: i64,
    /// The clock it ran at.
    pub at: Ts,
    /// A digest of the settings it ran with.
    pub settings: String,
}

impl Store {
    /// Whether writes to the tenant's mirror are noted: once some rule has a mark to read from.
    pub(super) async fn journal_on(tx: &mut Tx<'_>, tenant: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM rule_marks WHERE tenant = $1 LIMIT 1")
                .bind(tenant)
                .fetch_optional(&mut **tx)
                .await
                .op("reading rule marks")?
                .is_some(),
        )
    }

    /// Notes `changes` in the journal inside `tx`, under the tenant's next position.
    pub(super) async fn journal_in(tx: &mut Tx<'_>, tenant: &str, changes: &Changes) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        // Taking the position locks the tenant's row until commit, so positions are committed
        // in order and a mark never skips a write that commits late.
        let seq: i64 = sqlx::query(
            "INSERT INTO mirror_seq (tenant, seq) VALUES ($1, 1) \
             ON CONFLICT (tenant) DO UPDATE SET seq = mirror_seq.seq + 1 RETURNING seq",
        )
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await
        .op("advancing the mirror journal")?
        .get(0);
        for chunk in changes.rows().chunks(CHUNK) {
            let mut sql =
                String::from("INSERT INTO mirror_journal (tenant, seq, kind, key) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let b = i * 4;
                sql.push_str(&format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4));
            }
            let mut q = sqlx::query(&sql);
            for (kind, key) in chunk {
                q = q.bind(tenant).bind(seq).bind(*kind).bind(key.to_string());
            }
            q.execute(&mut **tx)
                .await
                .op("writing the mirror journal")?;
        }
        Ok(())
    }

    /// The tenant's current journal position (0 before the first write).
    pub async fn mirror_head(&self, tenant: &str) -> Result<i64> {
        Ok(sqlx::query("SELECT seq FROM mirror_seq WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(self.pool())
            .await
            .op("reading the mirror journal position")?
            .map_or(0, |r| r.get(0)))
    }

    /// Everything noted after position `after` up to `upto`.
    pub async fn changes_between(&self, tenant: &str, after: i64, upto: i64) -> Result<Changes> {
        let rows = sqlx::query(
            "SELECT kind, key FROM mirror_journal WHERE tenant = $1 AND seq > $2 AND seq <= $3",
        )
        .bind(tenant)
        .bind(after)
        .bind(upto)
        .fetch_all(self.pool())
        .await
        .op("reading the mirror journal")?;
        let mut out = Changes::default();
        for r in rows {
            out.add_row(&r.get::<String, _>(0), r.get(1));
        }
        Ok(out)
    }

    /// Forgets notes at or before `upto`, once every rule has read past them.
    pub async fn prune_journal(&self, tenant: &str, upto: i64) -> Result<()> {
        sqlx::query("DELETE FROM mirror_journal WHERE tenant = $1 AND seq <= $2")
            .bind(tenant)
            .bind(upto)
            .execute(self.pool())
            .await
            .op("pruning the mirror journal")?;
        Ok(())
    }

    pub async fn rule_mark(&self, tenant: &str, rule: &str) -> Result<Option<RuleMark>> {
        let row = sqlx::query(
            "SELECT seq, evaluated_at, settings FROM rule_marks WHERE tenant = $1 AND rule = $2",
        )
        .bind(tenant)
        .bind(rule)
        .fetch_optional(self.pool())
        .await
        .op("reading a rule mark")?;
        Ok(row.map(|r| RuleMark {
            seq: r.get(0),
            at: from_secs(r.get(1)),
            settings: r.get(2),
        }))
    }

    pub async fn set_rule_mark(&self, tenant: &str, rule: &str, mark: &RuleMark) -> Result<()> {
        sqlx::query(
            "INSERT INTO rule_marks (tenant, rule, seq, evaluated_at, settings) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant, rule) DO UPDATE SET seq = excluded.seq, \
             evaluated_at = excluded.evaluated_at, settings = excluded.settings",
        )
        .bind(tenant)
        .bind(rule)
        .bind(mark.seq)
        .bind(to_secs(mark.at))
        .bind(mark.settings.clone())
        .execute(self.pool())
        .await
        .op("saving a rule mark")?;
        Ok(())
    }

    /// The lowest journal position any rule of the tenant has read to (0 without marks).
    pub async fn lowest_rule_mark(&self, tenant: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT MIN(seq) FROM rule_marks WHERE tenant = $1")
                .bind(tenant)
                .fetch_one(self.pool())
                .await
                .op("reading rule marks")?
                .get::<Option<i64>, _>(0)
                .unwrap_or(0),
        )
    }

    pub async fn delete_rule_mark(&self, tenant: &str, rule: &str) -> Result<()> {
        sqlx::query("DELETE FROM rule_marks WHERE tenant = $1 AND rule = $2")
            .bind(tenant)
            .bind(rule)
            .execute(self.pool())
            .await
            .op("deleting a rule mark")?;
        Ok(())
    }

    /// Forgets every rule mark of the tenant: the next evaluation of each rule looks at the
    /// whole mirror (after a restore, or when the mirror was rebuilt).
    pub async fn clear_rule_marks(&self, tenant: &str) -> Result<()> {
        sqlx::query("DELETE FROM rule_marks WHERE tenant = $1")
            .bind(tenant)
            .execute(self.pool())
            .await
            .op("clearing rule marks")?;
        Ok(())
    }
}

/// The records a write is about to replace, as their rules see them: the neighbours they were
/// bound to and the numbers they carried. Read inside the write's transaction, before it.
pub(super) async fn before_write(
    tx: &mut Tx<'_>,
    tenant: &str,
    kind: EntityKind,
    ids: &[&str],
    out: &mut Changes,
) -> Result<()> {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    let tenant_bind = [Bind::Text(tenant.to_string())];
    let bound = match kind {
        EntityKind::Deal => Some(("deals", "contact_id, company_id")),
        EntityKind::Contact => Some(("contacts", "company_id, NULL")),
        EntityKind::Task => Some(("tasks", "entity_kind, entity_id")),
        EntityKind::Activity => Some(("activities", "entity_kind, entity_id")),
        EntityKind::Lead | EntityKind::Company => None,
    };
    if let Some((table, cols)) = bound {
        let sql = format!("SELECT {cols} FROM {table} WHERE tenant = $1 AND id IN ({{in}})");
        for r in rows_in(tx, &sql, &tenant_bind, &ids, "reading replaced records").await? {
            let a: Option<String> = r.get(0);
            let b: Option<String> = r.get(1);
            match kind {
                EntityKind::Deal => {
                    a.into_iter()
                        .for_each(|id| out.entity(EntityKind::Contact, id));
                    b.into_iter()
                        .for_each(|id| out.entity(EntityKind::Company, id));
                }
                EntityKind::Contact => {
                    a.into_iter()
                        .for_each(|id| out.entity(EntityKind::Company, id));
                }
                _ => {
                    if let (Some(k), Some(id)) = (a.as_deref().and_then(EntityKind::parse), b) {
                        out.entity(k, id);
                    }
                }
            }
        }
    }
    if matches!(
        kind,
        EntityKind::Lead | EntityKind::Contact | EntityKind::Company
    ) {
        let sql = "SELECT e164 FROM phones WHERE tenant = $1 AND entity_kind = $2 AND entity_id IN ({in})";
        let fixed = [
            tenant_bind[0].clone(),
            Bind::Text(kind.as_str().to_string()),
        ];
        for r in rows_in(tx, sql, &fixed, &ids, "reading replaced numbers").await? {
            out.phones.insert(r.get(0));
        }
    }
    Ok(())
}

/// The numbers calls had before a write replaces them.
pub(super) async fn calls_before_write(
    tx: &mut Tx<'_>,
    tenant: &str,
    provider: &str,
    ids: &[&str],
    out: &mut Changes,
) -> Result<()> {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    let sql = "SELECT client_e164 FROM calls WHERE tenant = $1 AND provider = $2 AND id IN ({in})";
    let fixed = [
        Bind::Text(tenant.to_string()),
        Bind::Text(provider.to_string()),
    ];
    for r in rows_in(tx, sql, &fixed, &ids, "reading replaced calls").await? {
        if let Some(p) = r.get::<Option<String>, _>(0) {
            out.phones.insert(p);
        }
    }
    Ok(())
}
