//! Reports: figures from the mirror, rendered for Telegram and the terminal, with PNG charts.
//!
//! Each report reads only its window of the mirror (see `store::report_rows`): the leads,
//! deals, calls and lead activities of its periods, plus the discipline state counted by the
//! database. The figures themselves are in `metrics`, the layouts in `render_daily` and
//! `render_period` (weekly, monthly) with the formatting they share in `render`, the charts in
//! `charts`.

pub mod calls;
pub(crate) mod charts;
pub mod metrics;
pub mod render;
pub(crate) mod render_daily;
pub(crate) mod render_period;

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate};
use chrono_tz::Tz;

use crate::config::{Lang, TenantConfig};
use crate::domain::Ts;
use crate::domain::calendar::BusinessCalendar;
use crate::store::{DealSums, Snapshot, Store, StoreError};
use metrics::{Context, Figures, Period};
use render::ActionLine;
use render_daily::DailyInput;

/// A rendered report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub kind: &'static str,
    pub(crate) tenant: String,
    pub period_from: NaiveDate,
    pub period_to: NaiveDate,
    /// Telegram HTML.
    pub html: String,
    pub figures: metrics::Figures,
    /// Weekly: the funnel of the week's deals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub funnel: Option<Vec<metrics::FunnelStep>>,
    /// Monthly: the ABC/XYZ matrix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abc_xyz: Option<metrics::AbcXyz>,
    /// PNG charts sent with the report (sendPhoto), in order.
    #[serde(skip)]
    pub charts: Vec<Chart>,
}

/// A rendered chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// File-name stem, e.g. `leads_won_trend`.
    pub name: String,
    /// Caption (Telegram HTML).
    pub(crate) caption: String,
    /// PNG bytes.
    pub png: Vec<u8>,
}

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Daily,
    Weekly,
    Monthly,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Daily => "daily",
            Kind::Weekly => "weekly",
            Kind::Monthly => "monthly",
        }
    }
}

/// A chart, or nothing when it could not be drawn: the report's text matters more than its
/// pictures, so a drawing failure is logged and the report goes out without that chart.
fn chart(name: &str, caption: &str, png: Result<Vec<u8>, charts::ChartError>) -> Option<Chart> {
    match png {
        Ok(png) => Some(Chart {
            name: name.to_string(),
            caption: render::esc(caption),
            png,
        }),
        Err(e) => {
            tracing::warn!(chart = name, error = %e, "chart left out of the report");
            None
        }
    }
}

/// How many days the daily trend chart shows.
const TREND_DAYS: i64 = 14;
/// How many months ABC/XYZ looks back over (the report's month included).
pub(crate) const ABC_MONTHS: u32 = 12;
/// Reactions and callbacks are looked for this long after a period ends.
const FOLLOW_UP_DAYS: i64 = 7;

/// Builds the report of `kind` for the last complete period before `now` (yesterday, last week,
/// last month in the tenant's time zone), or for the period containing `on` when given.
pub async fn build(
    store: &Store,
    t: &TenantConfig,
    kind: Kind,
    on: Option<NaiveDate>,
    now: Ts,
    actions: &[ActionLine],
) -> Result<Report, StoreError> {
    let first = period_start(t, kind, on, now);
    match kind {
        Kind::Daily => daily(store, t, first, now, actions).await,
        Kind::Weekly => weekly(store, t, first, now).await,
        Kind::Monthly => monthly(store, t, first, now).await,
    }
}

/// The first day of the period a `kind` report covers: the one holding `on`, else the last
/// complete one at `now` (yesterday, last week, last month) in the tenant's time zone.
pub(crate) fn period_start(
    t: &TenantConfig,
    kind: Kind,
    on: Option<NaiveDate>,
    now: Ts,
) -> NaiveDate {
    let today = local_date(t, now);
    match kind {
        Kind::Daily => on.unwrap_or(today - Duration::days(1)),
        Kind::Weekly => week_start(on.unwrap_or(today - Duration::days(7))),
        Kind::Monthly => month_start(on.unwrap_or_else(|| month_start(today) - Duration::days(1))),
    }
}

impl Report {
    /// The terminal view.
    pub(crate) fn plain(&self) -> String {
        render::to_plain(&self.html)
    }
}

/// The tenant's time zone (parsed when the config was loaded).
pub(crate) fn tz_of(t: &TenantConfig) -> Tz {
    t.business_calendar.tz
}

/// The local date of `now` in the tenant's time zone.
pub(crate) fn local_date(t: &TenantConfig, now: Ts) -> NaiveDate {
    now.with_timezone(&tz_of(t)).date_naive()
}

/// Monday of the week of `d`.
pub(crate) fn week_start(d: NaiveDate) -> NaiveDate {
    d - Duration::days(d.weekday().num_days_from_monday() as i64)
}

/// The first day of the month of `d`.
pub(crate) fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).expect("day 1 exists")
}

/// The first day of the month `n` months before the month of `d` (negative: after).
fn months_back(d: NaiveDate, n: i32) -> NaiveDate {
    let m = d.year() * 12 + d.month0() as i32 - n;
    NaiveDate::from_ymd_opt(m.div_euclid(12), m.rem_euclid(12) as u32 + 1, 1).expect("valid month")
}

/// What the figures are computed with, from the tenant's config: its business calendar and
/// its telephony employee map.
struct Inputs {
    cal: BusinessCalendar,
    employees: BTreeMap<String, String>,
}

impl Inputs {
    fn of(t: &TenantConfig) -> Self {
        Inputs {
            cal: t.business_calendar.clone(),
            employees: t
                .telephony
                .as_ref()
                .map(|x| x.employees().clone())
                .unwrap_or_default(),
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            cal: &self.cal,
            employees: &self.employees,
        }
    }
}

/// The records of local days `first..=last`, plus the follow-ups (calls, lead activities) up to
/// a week after, never past `now`; and the deals of those days summed per local day, by the
/// database unless `deal_rows` asks for the deal records too (the weekly funnel follows each
/// deal's stage), then summed from them.
async fn window(
    store: &Store,
    t: &TenantConfig,
    first: NaiveDate,
    last: NaiveDate,
    now: Ts,
    deal_rows: bool,
) -> Result<(Snapshot, DealSums), StoreError> {
    let tz = tz_of(t);
    let p = Period::days(first, last, tz);
    let to = p.to.min(now).max(p.from);
    let follow = (p.to + Duration::days(FOLLOW_UP_DAYS)).min(now).max(to);
    // Each local day's start, then the end of the last day.
    let bounds: Vec<Ts> = first
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|d| Period::day(d, tz).from)
        .chain([p.to])
        .collect();
    let deals = if deal_rows {
        store.deals_between(&t.id, p.from, to).await?
    } else {
        Vec::new()
    };
    let sums = if deal_rows {
        metrics::deal_sums(&deals, &bounds, to)
    } else {
        store.deal_sums(&t.id, &bounds, to).await?
    };
    let snap = Snapshot {
        users: store.users(&t.id).await?,
        stages: store.stages(&t.id).await?,
        leads: store.leads_created_between(&t.id, p.from, to).await?,
        deals,
        calls: store.calls_between(&t.id, p.from, follow).await?,
        activities: store.lead_activities_between(&t.id, p.from, follow).await?,
        ..Snapshot::default()
    };
    Ok((snap, sums))
}

/// Each manager's revenue from the first of `day`'s month to `day` included, for plan %.
async fn month_to_date(
    store: &Store,
    t: &TenantConfig,
    day: NaiveDate,
    snap: &Snapshot,
) -> Result<Figures, StoreError> {
    let p = Period::days(month_start(day), day, tz_of(t));
    let names = crate::domain::User::names(&snap.users);
    let managers = store
        .won_by_manager(&t.id, p.from, p.to)
        .await?
        .into_iter()
        .filter(|(id, _)| !id.is_empty())
        .map(|(id, revenue)| metrics::ManagerFigures {
            name: crate::domain::User::name_in(&names, &id, t.lang == Lang::Ru),
            user_id: id,
            revenue,
            ..metrics::ManagerFigures::default()
        })
        .collect();
    Ok(Figures {
        managers,
        ..Figures::default()
    })
}

/// Leads created and deals won per local day of `days`.
pub(crate) fn daily_series(
    snap: &Snapshot,
    deals: &DealSums,
    days: &[NaiveDate],
    tz: Tz,
) -> Vec<(NaiveDate, u64, u64)> {
    let index: BTreeMap<NaiveDate, usize> = days.iter().enumerate().map(|(i, d)| (*d, i)).collect();
    let mut out: Vec<(NaiveDate, u64, u64)> = days.iter().map(|d| (*d, 0, 0)).collect();
    for l in &snap.leads {
        if let Some(i) = index.get(&l.created_at.with_timezone(&tz).date_naive()) {
            out[*i].1 += 1;
        }
    }
    // A bucket is a local day: its start names it.
    for c in deals.closed.iter().filter(|c| c.won) {
        if let Some(start) = deals.bounds.get(c.bucket)
            && let Some(i) = index.get(&start.with_timezone(&tz).date_naive())
        {
            out[*i].2 += c.deals as u64;
        }
    }
    out
}

/// Builds the daily report of `day` (normally yesterday) as of `now`.
// Long: one query per report section, gathered into the input the renderer takes; each is a few
// lines.
pub(crate) async fn daily(
    store: &Store,
    t: &TenantConfig,
    day: NaiveDate,
    now: Ts,
    actions: &[ActionLine],
) -> Result<Report, StoreError> {
    let tz = tz_of(t);
    let inputs = Inputs::of(t);
    let ctx = inputs.context();
    let first = day - Duration::days(TREND_DAYS - 1);
    let (snap, deals) = window(store, t, first, day, now, false).await?;
    let period = Period::day(day, tz);
    let mut today = metrics::period_figures(&snap, &deals, &period, &ctx);
    metrics::apply_discipline(
        &mut today,
        &store.discipline(&t.id, now).await?,
        &snap.users,
    );
    let month = month_to_date(store, t, day, &snap).await?;
    metrics::apply_plans(&mut today, &month, &t.reports.plans);
    // The discipline state the rules act on, as of now, over the leads of the window.
    let reaction = &t.rules.lead_reaction;
    let (yellow, red) = (
        reaction.yellow_minutes as i64,
        reaction.alert_minutes as i64,
    );
    let contacts = crate::rules::lead_reaction::Contacts::new(&snap);
    for l in &snap.leads {
        match contacts.waiting(&inputs.cal, now, l) {
            Some(m) if m >= red => today.leads_red += 1,
            Some(m) if m >= yellow => today.leads_yellow += 1,
            _ => {}
        }
    }
    today.idle_clients = store
        .flagged_clients(&t.id, crate::rules::no_activity::FLAG)
        .await?;
    let mut previous = metrics::period_figures(
        &snap,
        &deals,
        &Period::day(day - Duration::days(1), tz),
        &ctx,
    );
    let mut week_ago = metrics::period_figures(
        &snap,
        &deals,
        &Period::day(day - Duration::days(7), tz),
        &ctx,
    );
    let sync: Vec<(String, bool, i64, Option<String>)> = store
        .last_sync_runs(&t.id)
        .await?
        .into_iter()
        .map(|r| (r.source, r.ok, r.items, r.error))
        .collect();
    let ru = t.lang == Lang::Ru;
    for f in [&mut today, &mut previous, &mut week_ago] {
        metrics::name_unnamed(f, ru);
    }
    let html = render_daily::daily_html(&DailyInput {
        tenant_name: &t.name,
        lang: t.lang,
        period: &period,
        today: &today,
        previous: &previous,
        week_ago: &week_ago,
        actions,
        sync: &sync,
    });
    let days: Vec<NaiveDate> = (0..TREND_DAYS)
        .map(|i| day - Duration::days(TREND_DAYS - 1 - i))
        .collect();
    let series = daily_series(&snap, &deals, &days, tz);
    let title = tr(t.lang, "Лиды и выигранные сделки", "Leads and deals won");
    let caption = format!("{} — {} {}", title, TREND_DAYS, tr(t.lang, "дн.", "days"));
    let trend = chart(
        "leads_won_trend",
        &caption,
        charts::trend_png(t.lang, title, &series),
    );
    Ok(Report {
        kind: "daily",
        tenant: t.id.clone(),
        period_from: day,
        period_to: day,
        html,
        figures: today,
        funnel: None,
        abc_xyz: None,
        charts: trend.into_iter().collect(),
    })
}

/// Builds the weekly report of the week starting `monday`.
pub(crate) async fn weekly(
    store: &Store,
    t: &TenantConfig,
    monday: NaiveDate,
    now: Ts,
) -> Result<Report, StoreError> {
    let tz = tz_of(t);
    let inputs = Inputs::of(t);
    let ctx = inputs.context();
    let sunday = monday + Duration::days(6);
    let (snap, deals) = window(store, t, monday - Duration::days(7), sunday, now, true).await?;
    let period = Period::days(monday, sunday, tz);
    let mut week = metrics::period_figures(&snap, &deals, &period, &ctx);
    metrics::apply_discipline(&mut week, &store.discipline(&t.id, now).await?, &snap.users);
    // Plans are monthly: plan % is the month's revenue up to the week's last day.
    let month = month_to_date(store, t, sunday, &snap).await?;
    metrics::apply_plans(&mut week, &month, &t.reports.plans);
    let mut previous = metrics::period_figures(&snap, &deals, &period.previous(), &ctx);
    for f in [&mut week, &mut previous] {
        metrics::name_unnamed(f, t.lang == Lang::Ru);
    }
    let funnel = metrics::funnel(&snap, &period);
    let open_by_stage = store.open_deals_by_stage(&t.id).await?;
    let html = render_period::weekly_html(&render_period::WeeklyInput {
        tenant_name: &t.name,
        lang: t.lang,
        period: &period,
        week: &week,
        previous: &previous,
        funnel: funnel.as_ref().map(|(_, s)| s.as_slice()),
        open_by_stage: &open_by_stage,
        stages: &snap.stages,
    });
    let mut out = Vec::new();
    if let Some((_, steps)) = &funnel {
        let title = tr(
            t.lang,
            "Воронка сделок недели",
            "Funnel of the week's deals",
        );
        let rows: Vec<(String, u64)> = steps
            .iter()
            .map(|s| (s.stage.clone(), s.reached as u64))
            .collect();
        out.extend(chart(
            "funnel",
            title,
            charts::funnel_png(t.lang, title, &rows),
        ));
    }
    out.extend(managers_chart(t.lang, &week));
    Ok(Report {
        kind: "weekly",
        tenant: t.id.clone(),
        period_from: monday,
        period_to: sunday,
        html,
        figures: week,
        funnel: funnel.map(|(_, s)| s),
        abc_xyz: None,
        charts: out,
    })
}

/// Builds the monthly report of the month starting `first`.
// Long: one query per report section, gathered into the input the renderer takes; each is a few
// lines.
pub(crate) async fn monthly(
    store: &Store,
    t: &TenantConfig,
    first: NaiveDate,
    now: Ts,
) -> Result<Report, StoreError> {
    let tz = tz_of(t);
    let inputs = Inputs::of(t);
    let ctx = inputs.context();
    let last = months_back(first, -1) - Duration::days(1);
    let prev_first = months_back(first, 1);
    let (snap, deals) = window(store, t, prev_first, last, now, false).await?;
    let period = Period::days(first, last, tz);
    let mut month = metrics::period_figures(&snap, &deals, &period, &ctx);
    metrics::apply_discipline(
        &mut month,
        &store.discipline(&t.id, now).await?,
        &snap.users,
    );
    let whole_month = month.clone();
    metrics::apply_plans(&mut month, &whole_month, &t.reports.plans);
    let mut previous = metrics::period_figures(
        &snap,
        &deals,
        &Period::days(prev_first, first - Duration::days(1), tz),
        &ctx,
    );
    for f in [&mut month, &mut previous] {
        metrics::name_unnamed(f, t.lang == Lang::Ru);
    }
    // ABC/XYZ over the twelve months that end with this one.
    let months: Vec<NaiveDate> = (0..ABC_MONTHS as i32)
        .rev()
        .map(|i| months_back(first, i))
        .collect();
    // Each month's start, and the end of the last: the database sums by these.
    let bounds: Vec<Ts> = months
        .iter()
        .map(|m| Period::day(*m, tz).from)
        .chain([Period::days(months[0], last, tz).to])
        .collect();
    let sums = store.won_by_client_month(&t.id, &bounds).await?;
    let matrix = metrics::abc_xyz(&sums, months.len());
    let top: Vec<String> = matrix
        .clients
        .iter()
        .take(10)
        .map(|c| c.client.clone())
        .collect();
    let names = store.client_names(&t.id, &top).await?;
    let html = render_period::monthly_html(&render_period::MonthlyInput {
        tenant_name: &t.name,
        lang: t.lang,
        period: &period,
        month: &month,
        previous: &previous,
        abc_xyz: &matrix,
        client_names: &names,
    });
    let days: Vec<NaiveDate> = (0..=(last - first).num_days())
        .map(|i| first + Duration::days(i))
        .collect();
    let series = daily_series(&snap, &deals, &days, tz);
    let title = tr(
        t.lang,
        "Лиды и выигранные сделки по дням",
        "Leads and deals won by day",
    );
    let charts = chart(
        "leads_won_trend",
        title,
        charts::trend_png(t.lang, title, &series),
    )
    .into_iter()
    .chain(managers_chart(t.lang, &month))
    .collect();
    Ok(Report {
        kind: "monthly",
        tenant: t.id.clone(),
        period_from: first,
        period_to: last,
        html,
        figures: month,
        funnel: None,
        abc_xyz: Some(matrix),
        charts,
    })
}

fn managers_chart(lang: Lang, f: &Figures) -> Option<Chart> {
    let title = tr(lang, "Выручка по менеджерам", "Revenue by manager");
    let rows: Vec<(String, f64)> = f
        .managers
        .iter()
        .map(|m| (m.name.clone(), m.revenue))
        .collect();
    chart(
        "managers_revenue",
        title,
        charts::managers_png(lang, title, &rows),
    )
}

/// The Russian or the English text.
pub(crate) fn tr(lang: Lang, ru: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Ru => ru,
        Lang::En => en,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_helpers() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 14).unwrap();
        assert_eq!(week_start(d), NaiveDate::from_ymd_opt(2026, 1, 12).unwrap());
        assert_eq!(month_start(d), NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        assert_eq!(
            months_back(d, 1),
            NaiveDate::from_ymd_opt(2025, 12, 1).unwrap()
        );
        assert_eq!(
            months_back(d, 13),
            NaiveDate::from_ymd_opt(2024, 12, 1).unwrap()
        );
        assert_eq!(
            months_back(d, -1),
            NaiveDate::from_ymd_opt(2026, 2, 1).unwrap()
        );
        assert_eq!(
            months_back(d, 0),
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
        );
    }
}
