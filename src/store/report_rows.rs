//! What the reports read from the mirror: the records of a time window, and the discipline state
//! counted by the database.
//!
//! A report never loads the whole mirror: with a million deals that alone takes seconds. It loads
//! the leads, deals, calls and lead activities of its window through the time indexes, and asks
//! the database for the counts that are about every open deal and task (open deals, deals with
//! no future task, overdue tasks, each per manager), which the indexes of migration
//! `report_indexes` answer without reading the records.

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

/// The revenue of the deals one client won in one month, for ABC/XYZ.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClientMonth {
    /// `company:ID`, else `contact:ID`, else `deal:ID` (a client the CRM never named).
    pub(crate) client: String,
    /// The month, counted from the oldest (0).
    pub(crate) month: usize,
    pub(crate) revenue: f64,
}

/// The deals created in a window and the deals closed in it, summed per bucket of time (the
/// tenant's local days, their starts computed by the caller): what the deal figures and the
/// daily series need, without a row per deal.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DealSums {
    /// The start of each bucket, then the end of the last.
    pub(crate) bounds: Vec<Ts>,
    /// Deals created per bucket (`bounds.len() - 1` of them, or none).
    pub(crate) created: Vec<usize>,
    /// Deals closed won or lost, per bucket, responsible user and outcome.
    pub(crate) closed: Vec<ClosedSum>,
}

/// The deals one responsible user (or nobody) closed with one outcome in one bucket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClosedSum {
    /// Index into [`DealSums::bounds`]: the bucket starting there.
    pub(crate) bucket: usize,
    pub(crate) responsible_id: Option<String>,
    pub(crate) won: bool,
    pub(crate) deals: usize,
    pub(crate) amount: f64,
    /// Σ calendar days (UTC dates) from creation to close.
    pub(crate) days: i64,
}

/// SQL for the bucket of `col` among buckets `lo..hi`, the start of bucket `k` (`k ≥ 1`) being
/// parameter `$(first_param + k - 1)`: a balanced tree of comparisons, so a row costs
/// log₂(buckets) of them rather than one per bucket.
fn bucket_sql(col: &str, lo: usize, hi: usize, first_param: usize) -> String {
    if hi <= lo + 1 {
        return lo.to_string();
    }
    let mid = (lo + hi) / 2;
    format!(
        "CASE WHEN {col} < ${} THEN {} ELSE {} END",
        first_param + mid - 1,
        bucket_sql(col, lo, mid, first_param),
        bucket_sql(col, mid, hi, first_param)
    )
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds a bucketed query's parameters: `$1` the tenant, `$2` and `$3` the first and the last of
/// `bounds`, `$4...` the bounds between them (the starts of the buckets after the first).
fn bind_buckets<'q>(q: AnyQuery<'q>, tenant: &str, bounds: &[Ts]) -> AnyQuery<'q> {
    let (Some(first), Some(end)) = (bounds.first(), bounds.last()) else {
        return q;
    };
    let mut q = q
        .bind(tenant.to_string())
        .bind(to_secs(*first))
        .bind(to_secs(*end));
    for b in bounds.iter().skip(1).take(bounds.len().saturating_sub(2)) {
        q = q.bind(to_secs(*b));
    }
    q
}

/// SQL for the UTC day number of unix seconds in `col`, rounded down for times before 1970
/// too (SQL's integer division rounds towards zero), as the figures count days in Rust.
fn utc_day_sql(col: &str) -> String {
    format!("(({col} - ((({col} % 86400) + 86400) % 86400)) / 86400)")
}

/// Open deals per stage, as of now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageCount {
    pub(crate) pipeline_id: String,
    pub(crate) stage_id: String,
    pub(crate) deals: usize,
    pub(crate) amount: f64,
}

/// A count the database gave (never negative; a negative one counts as none).
fn count(n: i64) -> usize {
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

    /// The deals created and the deals closed in `[bounds[0], bounds[last])`, summed per bucket
    /// `[bounds[i], bounds[i + 1])` by the database from the `deals_created` and `deals_closed`
    /// indexes alone: a report over a big mirror read tens of thousands of rows for a few
    /// dozen sums. Closed deals count when won or lost (as the figures count them).
    ///
    /// `cut` is the report's moment: deals created from it on are left out, and so are deals
    /// closed from it on unless created in the window before it. That is what the reports
    /// counted when they read the deals created or closed in the window up to `cut` and then
    /// counted the closes of each period (a close stamped later than the report's moment is
    /// only in data written by hand or by a clock ahead of ours).
    // Long: two aggregate queries over the same buckets, each with its checks of what the
    // database returned.
    pub(crate) async fn deal_sums(&self, tenant: &str, bounds: &[Ts], cut: Ts) -> Result<DealSums> {
        let buckets = bounds.len().saturating_sub(1);
        let mut out = DealSums {
            bounds: bounds.to_vec(),
            created: vec![0; buckets],
            closed: Vec::new(),
        };
        if buckets == 0 {
            return Ok(out);
        }
        let bucket = |r: &sqlx::any::AnyRow| -> Result<usize> {
            let b: i64 = r.get(0);
            usize::try_from(b)
                .ok()
                .filter(|b| *b < buckets)
                .ok_or_else(|| StoreError::Corrupt {
                    what: "deals per day".into(),
                    message: format!("bucket {b} of {buckets}"),
                })
        };
        // The bucket starts after the first are $4..., the cut the parameter after them.
        let cut_param = format!("${}", buckets + 3);
        let created = format!(
            "SELECT CAST({} AS BIGINT), COUNT(*) FROM deals WHERE tenant = $1 \
             AND created_at >= $2 AND created_at < $3 AND created_at < {cut_param} \
             AND deleted = FALSE GROUP BY 1",
            bucket_sql("created_at", 0, buckets, 4)
        );
        let rows = bind_buckets(sqlx::query(&created), tenant, bounds)
            .bind(to_secs(cut))
            .fetch_all(self.pool())
            .await
            .op("counting the deals created per day")?;
        for r in &rows {
            out.created[bucket(r)?] += count(r.get(1));
        }
        let closed = format!(
            "SELECT CAST({} AS BIGINT), responsible_id, semantics, COUNT(*), SUM(amount), \
                CAST(SUM({} - {}) AS BIGINT) \
             FROM deals WHERE tenant = $1 AND closed_at >= $2 AND closed_at < $3 \
             AND (closed_at < {cut_param} OR (created_at >= $2 AND created_at < {cut_param})) \
             AND deleted = FALSE AND semantics IN ('won', 'lost') GROUP BY 1, 2, 3",
            bucket_sql("closed_at", 0, buckets, 4),
            utc_day_sql("closed_at"),
            utc_day_sql("created_at")
        );
        let rows = bind_buckets(sqlx::query(&closed), tenant, bounds)
            .bind(to_secs(cut))
            .fetch_all(self.pool())
            .await
            .op("summing the deals closed per day")?;
        for r in &rows {
            out.closed.push(ClosedSum {
                bucket: bucket(r)?,
                responsible_id: r.get(1),
                won: r.get::<String, _>(2) == "won",
                deals: count(r.get(3)),
                amount: r.try_get::<f64, _>(4).unwrap_or(0.0),
                days: r.try_get::<i64, _>(5).unwrap_or(0),
            });
        }
        // One order on every database (they sort NULL differently), so sums over the buckets
        // add up in the same order.
        out.closed.sort_by(|a, b| {
            (a.bucket, &a.responsible_id, a.won).cmp(&(b.bucket, &b.responsible_id, b.won))
        });
        Ok(out)
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

    /// Revenue of won deals per client and month, summed by the database: month `i` is
    /// `[bounds[i], bounds[i + 1])` (the tenant's local months, their starts computed by the
    /// caller), so the deals are bucketed by bound parameters and no SQL needs a time zone. The
    /// client is the deal's company, else its contact, else the deal itself (empty ids name
    /// nobody). The rows come from the `deals_closed` index alone (migration `report_indexes`).
    /// Groups with no deal have no row; the order is unspecified.
    pub(crate) async fn won_by_client_month(
        &self,
        tenant: &str,
        bounds: &[Ts],
    ) -> Result<Vec<ClientMonth>> {
        if bounds.len() < 2 {
            return Ok(Vec::new());
        }
        let months = bounds.len() - 1;
        let sql = format!(
            "SELECT CASE WHEN company_id <> '' THEN 'company:' || company_id \
                WHEN contact_id <> '' THEN 'contact:' || contact_id ELSE 'deal:' || id END, \
                CAST({} AS BIGINT), SUM(amount) \
             FROM deals WHERE tenant = $1 AND semantics = 'won' AND deleted = FALSE \
             AND closed_at >= $2 AND closed_at < $3 GROUP BY 1, 2",
            bucket_sql("closed_at", 0, months, 4)
        );
        let q = bind_buckets(sqlx::query(&sql), tenant, bounds);
        let rows = q
            .fetch_all(self.pool())
            .await
            .op("summing won deals per client and month")?;
        rows.iter()
            .map(|r| {
                let month: i64 = r.get(1);
                Ok(ClientMonth {
                    client: r.get(0),
                    month: usize::try_from(month).map_err(|_| StoreError::Corrupt {
                        what: "won deals per month".into(),
                        message: format!("month {month}"),
                    })?,
                    revenue: r.try_get::<f64, _>(2).unwrap_or(0.0),
                })
            })
            .collect()
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
