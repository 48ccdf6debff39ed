//! The report schedule: each tenant's daily, weekly and monthly report at its cron time in the
//! tenant's time zone, and a report whose time passed while the daemon was down sent at start.

use chrono::Utc;
use futures::FutureExt as _;

use super::reports::{report_key_prefix, send_report};
use crate::config::{CronSchedule, TenantConfig};
use crate::ledger::action_lines;
use crate::report;
use crate::tenant::Tenant;

/// Per tenant, the next time each report is due: daily, weekly, monthly. A report whose time
/// passed while the daemon was down (or killed just before sending it) is due now.
pub(crate) async fn first_due(
    store: &crate::store::Store,
    tenants: &[Tenant],
) -> Vec<[Option<chrono::DateTime<Utc>>; 3]> {
    let mut next_report = Vec::new();
    for t in tenants {
        let mut due = REPORT_KINDS.map(|k| next_fire(schedule_of(&t.cfg, k), t.tz()));
        for (k, kind) in REPORT_KINDS.into_iter().enumerate() {
            if let Some(at) = missed_report(store, t, kind, Utc::now()).await {
                tracing::info!(tenant = t.id(), kind = kind.as_str(), scheduled = %at, "report time passed while stopped: sending it now");
                due[k] = Some(at);
            }
        }
        next_report.push(due);
    }
    next_report
}

/// Next time a schedule fires, evaluated in the tenant's time zone; `None` when it never fires
/// again.
pub(crate) fn next_fire(cron: &CronSchedule, tz: chrono_tz::Tz) -> Option<chrono::DateTime<Utc>> {
    cron.schedule()
        .upcoming(tz)
        .next()
        .map(|t| t.with_timezone(&Utc))
}

/// The last time a schedule fired at or before `now`, in the tenant's time zone.
fn last_fire(
    cron: &CronSchedule,
    tz: chrono_tz::Tz,
    now: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    let after = now.with_timezone(&tz) + chrono::Duration::seconds(1);
    cron.schedule()
        .after(&after)
        .next_back()
        .map(|t| t.with_timezone(&Utc))
}

/// The scheduled time of a `kind` report that should have gone out and did not: its last
/// scheduled time has passed, and the ledger holds no report for the period it covers. Only
/// for a tenant that has had this report before: a fresh install starts with the next
/// scheduled one instead of a burst of back reports.
pub(crate) async fn missed_report(
    store: &crate::store::Store,
    t: &Tenant,
    kind: report::Kind,
    now: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    let at = last_fire(schedule_of(&t.cfg, kind), t.tz(), now)?;
    let prefix = report_key_prefix(t.id(), kind.as_str());
    if !store.has_action_with_prefix(t.id(), &prefix).await.ok()? {
        return None;
    }
    let from = report::period_start(&t.cfg, kind, None, at);
    let key = format!("{prefix}{from}");
    match store.action(&key).await {
        Ok(Some(a)) if a.state != "intent" => None,
        // Never recorded, or recorded and not sent yet (the ledger finishes it once).
        Ok(_) => Some(at),
        Err(_) => None,
    }
}

pub(crate) const REPORT_KINDS: [report::Kind; 3] = [
    report::Kind::Daily,
    report::Kind::Weekly,
    report::Kind::Monthly,
];

pub(crate) fn schedule_of(cfg: &TenantConfig, kind: report::Kind) -> &CronSchedule {
    match kind {
        report::Kind::Daily => &cfg.reports.daily,
        report::Kind::Weekly => &cfg.reports.weekly,
        report::Kind::Monthly => &cfg.reports.monthly,
    }
}

/// Builds the report of the last period complete at `at` (its scheduled time) and sends it;
/// the ledger key makes a restart around the scheduled time send it once.
pub(crate) async fn scheduled_report(
    store: &crate::store::Store,
    t: &Tenant,
    kind: report::Kind,
    at: chrono::DateTime<Utc>,
) {
    let result = std::panic::AssertUnwindSafe(async {
        let actions = action_lines(store, t.id()).await?;
        let rep = report::build(store, &t.cfg, kind, None, at, &actions).await?;
        let from = rep.period_from;
        send_report(store, t, &rep).await.map(|o| (from, o))
    })
    .catch_unwind()
    .await;
    match result {
        Ok(Ok((from, outcome))) => {
            tracing::info!(tenant = t.id(), kind = kind.as_str(), %from, ?outcome, "report")
        }
        Ok(Err(e)) => {
            tracing::error!(tenant = t.id(), kind = kind.as_str(), error = %e, "report failed")
        }
        // A report that panics on the data it reads is lost for this period, not the daemon.
        Err(_) => {
            tracing::error!(
                tenant = t.id(),
                kind = kind.as_str(),
                "report panicked; not sent"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cron(expr: &str) -> CronSchedule {
        expr.parse().unwrap()
    }

    #[test]
    fn last_fire_is_the_latest_scheduled_time_not_after_now() {
        let tz = chrono_tz::Europe::Moscow;
        // 09:00 Moscow = 06:00 UTC, every day; dozor starts at 10:30 Moscow.
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 7, 30, 0).unwrap();
        assert_eq!(
            last_fire(&cron("0 0 9 * * *"), tz, now),
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 6, 0, 0).unwrap())
        );
        // Before 09:00 the last one is yesterday's.
        let early = Utc.with_ymd_and_hms(2026, 12, 2, 5, 0, 0).unwrap();
        assert_eq!(
            last_fire(&cron("0 0 9 * * *"), tz, early),
            Some(Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap())
        );
        // Exactly at the time counts as fired.
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 6, 0, 0).unwrap();
        assert_eq!(last_fire(&cron("0 0 9 * * *"), tz, at), Some(at));
        // Weekly on Monday (2026-11-30 was a Monday).
        assert_eq!(
            last_fire(&cron("0 0 9 * * Mon"), tz, now),
            Some(Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap())
        );
    }
}
