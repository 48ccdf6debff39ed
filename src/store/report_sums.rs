//! Sums the reports ask the database for over many deals: the deals created and closed per
//! local day, and the won revenue per client and month for ABC/XYZ. Time buckets are the
//! caller's bound parameters (the tenant's local days or months), so no SQL needs a time zone.

use sqlx::Row;

use super::report_rows::count;
use super::{Op, Result, Store, StoreError, to_secs};
use crate::domain::*;

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

impl Store {
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
}
