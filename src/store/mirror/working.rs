//! Indexed reads for rules that look at part of the mirror: records by id, a client's deals, a
//! deal's open tasks, the owners and calls of a number, and the candidates of a full look read
//! a page at a time. Each answers from an index; none reads a table whole.

use sqlx::Row;

use crate::domain::*;
use crate::store::{Op, Result, Store, to_secs};

use super::{decode_rows, sane_calls, table};
use crate::store::in_list::Bind;

fn text(s: &str) -> Bind {
    Bind::Text(s.to_string())
}

impl Store {
    /// Rows of `kind` (not deleted) with these ids, decoded.
    async fn by_ids<T: serde::de::DeserializeOwned>(
        &self,
        tenant: &str,
        kind: EntityKind,
        ids: &[String],
    ) -> Result<Vec<T>> {
        let sql = format!(
            "SELECT data FROM {} WHERE tenant = $1 AND deleted = FALSE AND id IN ({{in}}) ORDER BY id",
            table(kind)
        );
        let rows = self
            .rows_in(&sql, &[text(tenant)], ids, "reading records by id")
            .await?;
        decode_rows(&rows, kind.as_str())
    }

    pub async fn deals_by_ids(&self, tenant: &str, ids: &[String]) -> Result<Vec<Deal>> {
        self.by_ids(tenant, EntityKind::Deal, ids).await
    }

    pub async fn leads_by_ids(&self, tenant: &str, ids: &[String]) -> Result<Vec<Lead>> {
        self.by_ids(tenant, EntityKind::Lead, ids).await
    }

    pub async fn tasks_by_ids(&self, tenant: &str, ids: &[String]) -> Result<Vec<Task>> {
        self.by_ids(tenant, EntityKind::Task, ids).await
    }

    pub async fn contacts_by_ids(&self, tenant: &str, ids: &[String]) -> Result<Vec<Contact>> {
        self.by_ids(tenant, EntityKind::Contact, ids).await
    }

    pub async fn companies_by_ids(&self, tenant: &str, ids: &[String]) -> Result<Vec<Company>> {
        self.by_ids(tenant, EntityKind::Company, ids).await
    }

    /// Open tasks (not deleted) bound to records of `kind` with these ids.
    pub async fn open_tasks_of(
        &self,
        tenant: &str,
        kind: EntityKind,
        ids: &[String],
    ) -> Result<Vec<Task>> {
        let sql = "SELECT data FROM tasks WHERE tenant = $1 AND entity_kind = $2 AND entity_id IN ({in}) \
                   AND completed = FALSE AND deleted = FALSE ORDER BY id";
        let fixed = [text(tenant), text(kind.as_str())];
        let rows = self.rows_in(sql, &fixed, ids, "reading open tasks").await?;
        decode_rows(&rows, "task")
    }

    /// Open deals (not deleted) with no open task that is surely still ahead at `now`: one due
    /// after `now`'s second or with no deadline. A page of at most `limit`, by id after `after`.
    /// Deals with a task due within `now`'s own second are included; the rule decides them.
    pub async fn open_deals_without_next_step(
        &self,
        tenant: &str,
        now: Ts,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Deal>> {
        let rows = sqlx::query(
            "SELECT d.data FROM deals d WHERE d.tenant = $1 AND d.semantics = 'open' AND d.deleted = FALSE \
             AND d.id > $2 AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.tenant = d.tenant \
             AND t.entity_kind = 'deal' AND t.entity_id = d.id AND t.completed = FALSE \
             AND t.deleted = FALSE AND (t.deadline IS NULL OR t.deadline > $3)) \
             ORDER BY d.id LIMIT $4",
        )
        .bind(tenant)
        .bind(after)
        .bind(to_secs(now))
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await
        .op("reading deals without a next step")?;
        decode_rows(&rows, "deal")
    }

    /// Open deals (not deleted) that have a contact or a company, a page by id after `after`.
    pub async fn open_deals_with_client(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Deal>> {
        let rows = sqlx::query(
            "SELECT data FROM deals WHERE tenant = $1 AND semantics = 'open' AND deleted = FALSE \
             AND id > $2 AND (contact_id IS NOT NULL OR company_id IS NOT NULL) ORDER BY id LIMIT $3",
        )
        .bind(tenant)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await
        .op("reading open deals")?;
        decode_rows(&rows, "deal")
    }

    /// Ids of deals bound to an open task (not deleted) whose deadline lies in `[from, to]`
    /// (whole seconds, both ends included).
    pub async fn deals_with_tasks_due(
        &self,
        tenant: &str,
        from: Ts,
        to: Ts,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT entity_id FROM tasks WHERE tenant = $1 AND completed = FALSE \
             AND deleted = FALSE AND deadline >= $2 AND deadline <= $3 AND entity_kind = 'deal'",
        )
        .bind(tenant)
        .bind(to_secs(from))
        .bind(to_secs(to))
        .fetch_all(self.pool())
        .await
        .op("reading tasks falling due")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Ids of the deals (deleted ones too: the rule decides) bound to these contacts or companies.
    pub async fn deal_ids_of_clients(
        &self,
        tenant: &str,
        contacts: &[String],
        companies: &[String],
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (col, ids) in [("contact_id", contacts), ("company_id", companies)] {
            let sql = format!("SELECT id FROM deals WHERE tenant = $1 AND {col} IN ({{in}})");
            let rows = self
                .rows_in(&sql, &[text(tenant)], ids, "reading a client's deals")
                .await?;
            out.extend(rows.iter().map(|r| r.get::<String, _>(0)));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The records (of any kind the phone index holds) that carry these numbers.
    pub async fn owners_of_phones(
        &self,
        tenant: &str,
        phones: &[String],
    ) -> Result<Vec<EntityRef>> {
        let sql = "SELECT entity_kind, entity_id FROM phones WHERE tenant = $1 AND e164 IN ({in})";
        let rows = self
            .rows_in(sql, &[text(tenant)], phones, "reading a number's owners")
            .await?;
        let mut out: Vec<EntityRef> = rows
            .iter()
            .filter_map(|r| {
                Some(EntityRef::new(
                    EntityKind::parse(&r.get::<String, _>(0))?,
                    r.get::<String, _>(1),
                ))
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The numbers (E.164) the phone index holds for records of `kind` with these ids.
    pub async fn phones_of(
        &self,
        tenant: &str,
        kind: EntityKind,
        ids: &[String],
    ) -> Result<Vec<String>> {
        let sql = "SELECT e164 FROM phones WHERE tenant = $1 AND entity_kind = $2 AND entity_id IN ({in})";
        let fixed = [text(tenant), text(kind.as_str())];
        let rows = self.rows_in(sql, &fixed, ids, "reading numbers").await?;
        let mut out: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Calls with these client numbers that started at or after `since`, oldest first.
    pub async fn calls_of_phones(
        &self,
        tenant: &str,
        phones: &[String],
        since: Ts,
    ) -> Result<Vec<Call>> {
        let sql = "SELECT data FROM calls WHERE tenant = $1 AND started_at >= $2 AND client_e164 IN ({in})";
        let fixed = [text(tenant), Bind::Int(to_secs(since))];
        let rows = self
            .rows_in(sql, &fixed, phones, "reading a number's calls")
            .await?;
        let mut out = sane_calls(decode_rows(&rows, "call")?);
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Open tasks (not deleted) due at or before `now`'s second: every overdue task, and those
    /// due within that second, which the rule decides.
    pub async fn overdue_tasks(&self, tenant: &str, now: Ts) -> Result<Vec<Task>> {
        let rows = sqlx::query(
            "SELECT data FROM tasks WHERE tenant = $1 AND completed = FALSE AND deadline <= $2 \
             AND deleted = FALSE ORDER BY created_at",
        )
        .bind(tenant)
        .bind(to_secs(now))
        .fetch_all(self.pool())
        .await
        .op("reading overdue tasks")?;
        decode_rows(&rows, "task")
    }

    /// Activities (not deleted) bound to records of `kind` with these ids.
    pub async fn activities_of(
        &self,
        tenant: &str,
        kind: EntityKind,
        ids: &[String],
    ) -> Result<Vec<Activity>> {
        let sql = "SELECT data FROM activities WHERE tenant = $1 AND entity_kind = $2 AND entity_id IN ({in}) \
                   AND deleted = FALSE ORDER BY started_at";
        let fixed = [text(tenant), text(kind.as_str())];
        let rows = self.rows_in(sql, &fixed, ids, "reading activities").await?;
        decode_rows(&rows, "activity")
    }

    /// Open leads (not deleted) created in `[from, to]`, oldest first.
    pub async fn open_leads_created_between(
        &self,
        tenant: &str,
        from: Ts,
        to: Ts,
    ) -> Result<Vec<Lead>> {
        let rows = sqlx::query(
            "SELECT data FROM leads WHERE tenant = $1 AND semantics = 'open' AND deleted = FALSE \
             AND created_at >= $2 AND created_at <= $3 ORDER BY created_at",
        )
        .bind(tenant)
        .bind(to_secs(from))
        .bind(to_secs(to))
        .fetch_all(self.pool())
        .await
        .op("reading new leads")?;
        decode_rows(&rows, "lead")
    }

    /// Deals (not deleted) made from these leads.
    pub async fn deals_of_leads(&self, tenant: &str, leads: &[String]) -> Result<Vec<Deal>> {
        let sql =
            "SELECT data FROM deals WHERE tenant = $1 AND deleted = FALSE AND lead_id IN ({in})";
        let rows = self
            .rows_in(sql, &[text(tenant)], leads, "reading deals of leads")
            .await?;
        decode_rows(&rows, "deal")
    }

    /// Calls that started in `[from, to]` (whole seconds), oldest first.
    pub async fn calls_started_between(&self, tenant: &str, from: Ts, to: Ts) -> Result<Vec<Call>> {
        let rows = sqlx::query(
            "SELECT data FROM calls WHERE tenant = $1 AND started_at >= $2 AND started_at <= $3 \
             ORDER BY started_at",
        )
        .bind(tenant)
        .bind(to_secs(from))
        .bind(to_secs(to))
        .fetch_all(self.pool())
        .await
        .op("reading recent calls")?;
        Ok(sane_calls(decode_rows(&rows, "call")?))
    }

    /// Activities (not deleted) that record these telephony call ids.
    pub async fn activities_with_external_ids(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<Activity>> {
        let sql = "SELECT data FROM activities WHERE tenant = $1 AND deleted = FALSE AND external_id IN ({in})";
        let rows = self
            .rows_in(sql, &[text(tenant)], ids, "reading logged calls")
            .await?;
        decode_rows(&rows, "activity")
    }
}
