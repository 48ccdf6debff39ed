//! What the reports read from the mirror: the records of a time window, and the discipline state
//! counted by the database.
//!
//! A report never loads the whole mirror: with a million deals that alone takes seconds. It loads
//! the leads, calls and lead activities of its window through the time indexes (the deals only
//! for the weekly funnel; otherwise the database sums them, see `report_sums`), and asks the
//! database for the counts that are about every open deal and task (open deals, deals with no
//! future task, overdue tasks, each per manager), which the indexes of migrations
//! `report_indexes` and `report_covering` answer without reading the records.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use sqlx::Row;

use super::{Op, Result, Store, StoreError, to_secs};
use crate::domain::*;

/// Discipline counts of one manager (or of nobody: the `""` key), as of a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DisciplineCounts {
    pub(crate) open_deals: usize,
    pub(crate) deals_without_task: usize,
    pub(crate) overdue_tasks: usize,
}

/// Discipline counts per responsible user id (`""` for records with nobody responsible).
pub(crate) type Discipline = BTreeMap<String, DisciplineCounts>;

/// Open deals per stage, as of now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageCount {
    pub(crate) pipeline_id: String,
    pub(crate) stage_id: String,
    pub(crate) deals: usize,
    pub(crate) amount: f64,
}

/// A count the database gave (never negative; a negative one counts as none).
pub(super) fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

impl Store {
    async fn load_window<T: DeserializeOwned>(
        &self,
        sql: &str,
        tenant: &str,
        from: Ts,
        to: Ts,
        what: &str,
    ) -> Result<Vec<T>> {
        let rows = sqlx::query(sql)
            .bind(tenant)
            .bind(to_secs(from))
            .bind(to_secs(to))
            .fetch_all(self.pool())
            .await
            .op("reading the mirror for a report")?;
        super::mirror::decode_rows(&rows, what)
    }

    /// Leads created in `[from, to)`.
    pub(crate) async fn leads_created_between(
        &self,
        tenant: &str,
        from: Ts,
        to: Ts,
    ) -> Result<Vec<Lead>> {
        self.load_window(
            "SELECT data FROM leads WHERE tenant = $1 AND created_at >= $2 AND created_at < $3 \
             AND deleted = FALSE ORDER BY created_at",
            tenant,
            from,
            to,
            "lead",
        )
        .await
    }

    /// Deals created or closed in `[from, to)`, each once, read from the indexed columns: the
    /// figures need no title, tags or source, and skipping the JSON (and its time strings)
    /// is most of the cost of a report over a big mirror. `title`, `currency`, `lead_id`,
    /// `source` and `tags` are left empty; `updated_at` is the close (else creation) time.
    pub(crate) async fn deals_between(&self, tenant: &str, from: Ts, to: Ts) -> Result<Vec<Deal>> {
        const COLS: &str = "id, pipeline_id, stage_id, semantics, amount, responsible_id, \
                            contact_id, company_id, created_at, closed_at";
        let mut deals = Vec::new();
        for (i, filter) in [
            "created_at >= $2 AND created_at < $3",
            // A deal both created and closed in the window comes from the first query only.
            "closed_at >= $2 AND closed_at < $3 AND NOT (created_at >= $2 AND created_at < $3)",
        ]
        .iter()
        .enumerate()
        {
            let rows = sqlx::query(&format!(
                "SELECT {COLS} FROM deals WHERE tenant = $1 AND {filter} AND deleted = FALSE"
            ))
            .bind(tenant)
            .bind(to_secs(from))
            .bind(to_secs(to))
            .fetch_all(self.pool())
            .await
            .op(if i == 0 {
                "reading the deals created in a report's window"
            } else {
                "reading the deals closed in a report's window"
            })?;
            for r in rows {
                let semantics: String = r.get(3);
                let created = super::from_secs(r.get(8));
                let closed: Option<i64> = r.get(9);
                let closed = closed.map(super::from_secs);
                deals.push(Deal {
                    id: r.get(0),
                    title: String::new(),
                    pipeline_id: r.get(1),
                    stage_id: r.get(2),
                    semantics: Semantics::parse(&semantics).ok_or_else(|| StoreError::Corrupt {
                        what: "deal in the mirror".into(),
                        message: format!("unknown semantics {semantics:?}"),
                    })?,
                    amount: r.get(4),
                    currency: String::new(),
                    responsible_id: r.get(5),
                    contact_id: r.get(6),
                    company_id: r.get(7),
                    lead_id: None,
                    source: None,
                    tags: Vec::new(),
                    created_at: created,
                    updated_at: closed.unwrap_or(created),
                    closed_at: closed,
                });
            }
        }
        deals.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(deals)
    }

    /// Telephony calls started in `[from, to)`.
    pub(crate) async fn calls_between(&self, tenant: &str, from: Ts, to: Ts) -> Result<Vec<Call>> {
        self.load_window(
            "SELECT data FROM calls WHERE tenant = $1 AND started_at >= $2 AND started_at < $3 \
             ORDER BY started_at",
            tenant,
            from,
            to,
            "call",
        )
        .await
        .map(super::mirror::sane_calls)
    }

    /// Activities on leads started in `[from, to)` (a lead's first contact, for reaction time),
    /// read from the columns of the `activities_lead_started` index alone: the figures need
    /// which lead and when, and decoding each record's JSON cost more than the rest.
    /// `subject` is left empty, `phone`, `duration_s` and `responsible_id` unset, `completed`
    /// true; `created_at` and `updated_at` are the start.
    pub(crate) async fn lead_activities_between(
        &self,
        tenant: &str,
        from: Ts,
        to: Ts,
    ) -> Result<Vec<Activity>> {
        let rows = sqlx::query(
            "SELECT id, kind, direction, entity_id, started_at FROM activities \
             WHERE tenant = $1 AND entity_kind = 'lead' AND started_at >= $2 AND started_at < $3 \
             AND deleted = FALSE ORDER BY started_at",
        )
        .bind(tenant)
        .bind(to_secs(from))
        .bind(to_secs(to))
        .fetch_all(self.pool())
        .await
        .op("reading the activities on leads for a report")?;
        Ok(rows
            .iter()
            .map(|r| {
                let kind: String = r.get(1);
                let direction: Option<String> = r.get(2);
                let lead: Option<String> = r.get(3);
                let at = super::from_secs(r.get(4));
                Activity {
                    id: r.get(0),
                    kind: [
                        ActivityKind::Call,
                        ActivityKind::Meeting,
                        ActivityKind::Email,
                        ActivityKind::Message,
                    ]
                    .into_iter()
                    .find(|k| k.as_str() == kind)
                    .unwrap_or(ActivityKind::Other),
                    direction: match direction.as_deref() {
                        Some("in") => Some(Direction::In),
                        Some("out") => Some(Direction::Out),
                        _ => None,
                    },
                    subject: String::new(),
                    entity: lead.map(|id| EntityRef::new(EntityKind::Lead, id)),
                    responsible_id: None,
                    phone: None,
                    duration_s: None,
                    completed: true,
                    external_id: None,
                    started_at: at,
                    created_at: at,
                    updated_at: at,
                }
            })
            .collect())
    }

    /// Open deals, deals with no open task due now or later, and overdue tasks, per manager.
    /// Same definitions as the rules: a task is overdue when open and past its deadline; a
    /// deal has a next step when an open task on it is not overdue (or has no deadline).
    ///
    /// Both counts come from indexes alone (`deals_open`, `tasks_open_due`). The deals with a
    /// next step are one uncorrelated set, built once and probed per open deal: asking the
    /// tasks of each deal in turn read the task index all over for every deal and cost
    /// seconds over a million deals.
    pub async fn discipline(&self, tenant: &str, now: Ts) -> Result<Discipline> {
        let now = to_secs(now);
        let mut out = Discipline::new();
        let rows = sqlx::query(
            "SELECT COALESCE(d.responsible_id, ''), COUNT(*), \
                SUM(CASE WHEN d.id IN (SELECT t.entity_id FROM tasks t WHERE t.tenant = $1 \
                    AND t.completed = FALSE AND t.deleted = FALSE \
                    AND (t.deadline IS NULL OR t.deadline >= $2) AND t.entity_kind = 'deal') \
                THEN 0 ELSE 1 END) \
             FROM deals d WHERE d.tenant = $1 AND d.semantics = 'open' AND d.deleted = FALSE \
             GROUP BY COALESCE(d.responsible_id, '')",
        )
        .bind(tenant)
        .bind(now)
        .fetch_all(self.pool())
        .await
        .op("counting open deals without a task")?;
        for r in rows {
            let e = out.entry(r.get::<String, _>(0)).or_default();
            e.open_deals = count(r.get(1));
            e.deals_without_task = count(r.get(2));
        }
        let rows = sqlx::query(
            "SELECT COALESCE(responsible_id, ''), COUNT(*) FROM tasks WHERE tenant = $1 \
             AND completed = FALSE AND deleted = FALSE AND deadline < $2 \
             GROUP BY COALESCE(responsible_id, '')",
        )
        .bind(tenant)
        .bind(now)
        .fetch_all(self.pool())
        .await
        .op("counting overdue tasks")?;
        for r in rows {
            out.entry(r.get::<String, _>(0)).or_default().overdue_tasks = count(r.get(1));
        }
        Ok(out)
    }

    /// Revenue of deals won in `[from, to)` per responsible user id (`""` for nobody): the
    /// month-to-date fact behind plan %, counted by the database.
    pub(crate) async fn won_by_manager(
        &self,
        tenant: &str,
        from: Ts,
        to: Ts,
    ) -> Result<BTreeMap<String, f64>> {
        let rows = sqlx::query(
            "SELECT COALESCE(responsible_id, ''), SUM(amount) FROM deals WHERE tenant = $1 \
             AND closed_at >= $2 AND closed_at < $3 AND deleted = FALSE AND semantics = 'won' \
             GROUP BY COALESCE(responsible_id, '')",
        )
        .bind(tenant)
        .bind(to_secs(from))
        .bind(to_secs(to))
        .fetch_all(self.pool())
        .await
        .op("summing won deals per manager")?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.try_get::<f64, _>(1).unwrap_or(0.0)))
            .collect())
    }

    /// Open deals per pipeline and stage, as of now.
    pub(crate) async fn open_deals_by_stage(&self, tenant: &str) -> Result<Vec<StageCount>> {
        let rows = sqlx::query(
            "SELECT pipeline_id, stage_id, COUNT(*), SUM(amount) FROM deals WHERE tenant = $1 \
             AND semantics = 'open' AND deleted = FALSE GROUP BY pipeline_id, stage_id \
             ORDER BY pipeline_id, stage_id",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await
        .op("counting open deals by stage")?;
        Ok(rows
            .iter()
            .map(|r| StageCount {
                pipeline_id: r.get(0),
                stage_id: r.get(1),
                deals: r.get::<i64, _>(2) as usize,
                amount: r.try_get::<f64, _>(3).unwrap_or(0.0),
            })
            .collect())
    }

    /// Display names of the given companies and contacts (`company:ID`, `contact:ID` keys).
    pub(crate) async fn client_names(
        &self,
        tenant: &str,
        keys: &[String],
    ) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for key in keys {
            let Some((kind, id)) = key.split_once(':') else {
                continue;
            };
            if let Some(v) = self.client_json(tenant, kind, id).await?
                && let Some(name) = v["name"].as_str()
            {
                out.insert(key.clone(), name.to_string());
            }
        }
        Ok(out)
    }

    /// The mirror record of a company or contact (`kind` = `company` / `contact`), as JSON;
    /// None for other kinds and for records deleted or never seen.
    async fn client_json(
        &self,
        tenant: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>> {
        let table = match kind {
            "company" => "companies",
            "contact" => "contacts",
            _ => return Ok(None),
        };
        let row = sqlx::query(&format!(
            "SELECT data FROM {table} WHERE tenant = $1 AND id = $2 AND deleted = FALSE"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .op("reading a client")?;
        Ok(row.and_then(|r| serde_json::from_str(&r.get::<String, _>(0)).ok()))
    }

    /// Names of the clients that carry `flag` in the mirror. Only dozor's `no_activity` rule
    /// sets the flag, so the candidates are the clients its ledger flagged; the mirror says
    /// whether each still carries it (a manager may have removed it by hand).
    pub(crate) async fn flagged_clients(&self, tenant: &str, flag: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT entity_kind, entity_id FROM actions WHERE tenant = $1 \
             AND rule = 'no_activity' AND kind = 'update_tags' AND entity_id IS NOT NULL",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await
        .op("reading flagged clients")?;
        let mut names = Vec::new();
        for r in rows {
            let kind: Option<String> = r.get(0);
            let id: String = r.get(1);
            let Some(v) = self
                .client_json(tenant, kind.as_deref().unwrap_or_default(), &id)
                .await?
            else {
                continue;
            };
            let flagged = v["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x.as_str() == Some(flag)));
            if flagged && let Some(name) = v["name"].as_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }
}
