//! Indexed reads the client rules build their working sets from (a client's contacts, its
//! records' bindings, the candidates of a full look a page at a time), and what those rules keep
//! about each client between cycles (`rule_clients`: revenue, ABC class, when it turns idle or
//! dormant by the clock).

use sqlx::Row;

use crate::domain::*;
use crate::store::in_list::Bind;
use crate::store::{Op, Result, Store, to_secs};

use super::decode_rows;

/// Rows per multi-row write: at most five binds each, far below SQLite's variable limit.
const CHUNK: usize = 300;

fn text(s: &str) -> Bind {
    Bind::Text(s.to_string())
}

/// What a client rule keeps about one client (`client` is `company:ID` or `contact:ID`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientState {
    pub client: String,
    pub revenue: f64,
    pub class: String,
}

/// When a client turns idle or dormant by the clock (`None`: not by the clock alone).
#[derive(Debug, Clone)]
pub struct ClientFlips {
    pub client: String,
    pub idle_at: Option<Ts>,
    pub dormant_at: Option<Ts>,
}

impl Store {
    /// Each of these contacts (deleted ones too) with its company, if it has one.
    pub async fn companies_of_contacts(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<(String, Option<String>)>> {
        let sql = "SELECT id, company_id FROM contacts WHERE tenant = $1 AND id IN ({in})";
        let rows = self
            .rows_in(sql, &[text(tenant)], ids, "reading contacts' companies")
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The contacts (not deleted) of these companies, by id.
    pub async fn contacts_of_companies(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<Contact>> {
        let sql = "SELECT data FROM contacts WHERE tenant = $1 AND deleted = FALSE \
                   AND company_id IN ({in}) ORDER BY id";
        let rows = self
            .rows_in(sql, &[text(tenant)], ids, "reading a company's contacts")
            .await?;
        let mut out: Vec<Contact> = decode_rows(&rows, "contact")?;
        // One statement per chunk: the order holds within a chunk only.
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The records these deals, tasks or activities (deleted ones too) are bound to: a deal's
    /// contact and company, a task's or activity's record.
    pub async fn bindings_of(
        &self,
        tenant: &str,
        kind: EntityKind,
        ids: &[String],
    ) -> Result<Vec<EntityRef>> {
        let (table, cols) = match kind {
            EntityKind::Deal => ("deals", "'contact', contact_id, 'company', company_id"),
            EntityKind::Task => ("tasks", "entity_kind, entity_id, NULL, NULL"),
            EntityKind::Activity => ("activities", "entity_kind, entity_id, NULL, NULL"),
            _ => return Ok(Vec::new()),
        };
        let sql = format!("SELECT {cols} FROM {table} WHERE tenant = $1 AND id IN ({{in}})");
        let rows = self
            .rows_in(&sql, &[text(tenant)], ids, "reading records' bindings")
            .await?;
        let mut out = Vec::new();
        for r in rows {
            for (k, i) in [(0, 1), (2, 3)] {
                let kind: Option<String> = r.get(k);
                let id: Option<String> = r.get(i);
                if let (Some(kind), Some(id)) = (kind.as_deref().and_then(EntityKind::parse), id) {
                    out.push(EntityRef::new(kind, id));
                }
            }
        }
        Ok(out)
    }

    /// Tasks (not deleted, open or completed) bound to records of `kind` with these ids.
    pub async fn tasks_of(
        &self,
        tenant: &str,
        kind: EntityKind,
        ids: &[String],
    ) -> Result<Vec<Task>> {
        let sql = "SELECT data FROM tasks WHERE tenant = $1 AND entity_kind = $2 \
                   AND entity_id IN ({in}) AND deleted = FALSE";
        let fixed = [text(tenant), text(kind.as_str())];
        let rows = self.rows_in(sql, &fixed, ids, "reading tasks").await?;
        decode_rows(&rows, "task")
    }

    /// A page of the records that may be clients: companies, then contacts without a company
    /// (not deleted), by id, after `after` (`kind:id`, empty for the first page).
    pub async fn client_candidates(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<EntityRef>> {
        let (kind, id) = after.split_once(':').unwrap_or(("", ""));
        let mut out = Vec::new();
        if kind != "contact" {
            let rows = sqlx::query(
                "SELECT id FROM companies WHERE tenant = $1 AND deleted = FALSE AND id > $2 \
                 ORDER BY id LIMIT $3",
            )
            .bind(tenant)
            .bind(id)
            .bind(limit as i64)
            .fetch_all(self.pool())
            .await
            .op("reading companies")?;
            out.extend(
                rows.iter()
                    .map(|r| EntityRef::new(EntityKind::Company, r.get::<String, _>(0))),
            );
        }
        if out.len() < limit {
            let after = if kind == "contact" { id } else { "" };
            let rows = sqlx::query(
                "SELECT id FROM contacts WHERE tenant = $1 AND deleted = FALSE AND id > $2 \
                 AND company_id IS NULL ORDER BY id LIMIT $3",
            )
            .bind(tenant)
            .bind(after)
            .bind((limit - out.len()) as i64)
            .fetch_all(self.pool())
            .await
            .op("reading contacts")?;
            out.extend(
                rows.iter()
                    .map(|r| EntityRef::new(EntityKind::Contact, r.get::<String, _>(0))),
            );
        }
        Ok(out)
    }

    /// Contact, company and amount of every won deal (not deleted): what lifetime revenues are
    /// summed from.
    pub async fn won_deal_bindings(
        &self,
        tenant: &str,
    ) -> Result<Vec<(Option<String>, Option<String>, f64)>> {
        let rows = sqlx::query(
            "SELECT contact_id, company_id, amount FROM deals WHERE tenant = $1 \
             AND semantics = 'won' AND deleted = FALSE",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await
        .op("reading won deals")?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Which of these ids of `kind` are in the mirror (not deleted).
    pub async fn existing_ids(
        &self,
        tenant: &str,
        kind: EntityKind,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let sql = format!(
            "SELECT id FROM {} WHERE tenant = $1 AND deleted = FALSE AND id IN ({{in}})",
            super::table(kind)
        );
        let rows = self
            .rows_in(&sql, &[text(tenant)], ids, "reading records by id")
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Forgets what `rule` kept about the tenant's clients (before a full look).
    pub async fn clear_rule_clients(&self, tenant: &str, rule: &str) -> Result<()> {
        sqlx::query("DELETE FROM rule_clients WHERE tenant = $1 AND rule = $2")
            .bind(tenant)
            .bind(rule)
            .execute(self.pool())
            .await
            .op("clearing the client rules' state")?;
        Ok(())
    }

    /// What `rule` keeps about these clients (those it has a row for).
    pub async fn rule_client_states(
        &self,
        tenant: &str,
        rule: &str,
        clients: &[String],
    ) -> Result<Vec<ClientState>> {
        let sql = "SELECT client, revenue, class FROM rule_clients WHERE tenant = $1 AND rule = $2 \
                   AND client IN ({in})";
        let rows = self
            .rows_in(
                sql,
                &[text(tenant), text(rule)],
                clients,
                "reading client states",
            )
            .await?;
        Ok(rows.iter().map(state).collect())
    }

    /// Every client `rule` keeps with revenue or a class other than C: what ABC is computed
    /// over.
    pub async fn rule_client_revenues(&self, tenant: &str, rule: &str) -> Result<Vec<ClientState>> {
        let rows = sqlx::query(
            "SELECT client, revenue, class FROM rule_clients WHERE tenant = $1 AND rule = $2 \
             AND (revenue > 0 OR class <> 'C')",
        )
        .bind(tenant)
        .bind(rule)
        .fetch_all(self.pool())
        .await
        .op("reading client revenues")?;
        Ok(rows.iter().map(state).collect())
    }

    /// Sets clients' revenue and class; `class_at` is noted for each (a class that changed).
    pub async fn set_rule_client_states(
        &self,
        tenant: &str,
        rule: &str,
        states: &[ClientState],
        class_at: Option<Ts>,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await.op("saving client states")?;
        for chunk in states.chunks(CHUNK) {
            let sql = upsert(
                "client, revenue, class, class_at",
                chunk.len(),
                "revenue = excluded.revenue, class = excluded.class, \
                 class_at = COALESCE(excluded.class_at, rule_clients.class_at)",
            );
            let mut q = sqlx::query(&sql).bind(tenant).bind(rule);
            for s in chunk {
                q = q
                    .bind(s.client.clone())
                    .bind(s.revenue)
                    .bind(s.class.clone())
                    .bind(class_at.map(to_secs));
            }
            q.execute(&mut *tx).await.op("saving client states")?;
        }
        tx.commit().await.op("saving client states")?;
        Ok(())
    }

    /// Sets when clients turn idle or dormant by the clock.
    pub async fn set_rule_client_flips(
        &self,
        tenant: &str,
        rule: &str,
        flips: &[ClientFlips],
    ) -> Result<()> {
        let mut tx = self.pool().begin().await.op("saving client states")?;
        for chunk in flips.chunks(CHUNK) {
            let sql = upsert(
                "client, idle_at, dormant_at",
                chunk.len(),
                "idle_at = excluded.idle_at, dormant_at = excluded.dormant_at",
            );
            let mut q = sqlx::query(&sql).bind(tenant).bind(rule);
            for f in chunk {
                q = q
                    .bind(f.client.clone())
                    .bind(f.idle_at.map(to_secs))
                    .bind(f.dormant_at.map(to_secs));
            }
            q.execute(&mut *tx).await.op("saving client states")?;
        }
        tx.commit().await.op("saving client states")?;
        Ok(())
    }

    /// Clients that turned idle or dormant, or changed class, in `[from, to]` (whole seconds).
    pub async fn rule_clients_due(
        &self,
        tenant: &str,
        rule: &str,
        from: Ts,
        to: Ts,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for col in ["idle_at", "dormant_at", "class_at"] {
            let rows = sqlx::query(&format!(
                "SELECT client FROM rule_clients WHERE tenant = $1 AND rule = $2 \
                 AND {col} >= $3 AND {col} <= $4"
            ))
            .bind(tenant)
            .bind(rule)
            .bind(to_secs(from))
            .bind(to_secs(to))
            .fetch_all(self.pool())
            .await
            .op("reading clients falling due")?;
            out.extend(rows.iter().map(|r| r.get::<String, _>(0)));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn state(r: &sqlx::any::AnyRow) -> ClientState {
    ClientState {
        client: r.get(0),
        revenue: r.get(1),
        class: r.get(2),
    }
}

/// A multi-row upsert into `rule_clients` of `n` rows of `cols` (after tenant and rule).
fn upsert(cols: &str, n: usize, set: &str) -> String {
    let width = cols.split(',').count();
    let mut sql = format!("INSERT INTO rule_clients (tenant, rule, {cols}) VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        let marks: Vec<String> = (0..width)
            .map(|j| format!("${}", 3 + i * width + j))
            .collect();
        sql.push_str(&format!("($1, $2, {})", marks.join(", ")));
    }
    sql.push_str(&format!(
        " ON CONFLICT (tenant, rule, client) DO UPDATE SET {set}"
    ));
    sql
}
