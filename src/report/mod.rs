//! Reports: figures from the mirror, rendered for Telegram and the terminal.

pub mod calls;
pub mod charts;
pub mod metrics;
pub mod render;

use chrono::{Duration, NaiveDate};

use crate::config::TenantConfig;
use crate::domain::Ts;
use crate::store::{Store, StoreError};
use metrics::{Period, Snapshot};
use render::{ActionLine, DailyInput};

/// A rendered report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub kind: &'static str,
    pub tenant: String,
    pub period_from: NaiveDate,
    pub period_to: NaiveDate,
    /// Telegram HTML.
    pub html: String,
    pub figures: metrics::Figures,
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
    pub caption: String,
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
    let day = on.unwrap_or_else(|| local_date(t, now) - Duration::days(1));
    match kind {
        Kind::Daily => daily(store, t, day, now, actions).await,
        // Weekly and monthly reports are built on the same figures; until they have their own
        // layout they fall back to the daily one.
        Kind::Weekly | Kind::Monthly => daily(store, t, day, now, actions).await,
    }
}

impl Report {
    /// The terminal view.
    pub fn plain(&self) -> String {
        render::to_plain(&self.html)
    }
}

/// The local date of `now` in the tenant's time zone.
pub fn local_date(t: &TenantConfig, now: Ts) -> NaiveDate {
    let tz: chrono_tz::Tz = t.timezone.parse().unwrap_or(chrono_tz::Europe::Moscow);
    now.with_timezone(&tz).date_naive()
}

/// Builds the daily report of `day` (normally yesterday) as of `now`.
pub async fn daily(
    store: &Store,
    t: &TenantConfig,
    day: NaiveDate,
    now: Ts,
    actions: &[ActionLine],
) -> Result<Report, StoreError> {
    let tz: chrono_tz::Tz = t.timezone.parse().unwrap_or(chrono_tz::Europe::Moscow);
    let cal = crate::config::calendar_of(t)
        .unwrap_or_else(|_| crate::domain::calendar::BusinessCalendar::moscow_default());
    let snap = Snapshot::load(store, &t.id).await?;
    let period = Period::day(day, tz);
    let mut today = metrics::compute(&snap, &period, now, &cal);
    // The discipline state the rules act on, as of now.
    let reaction = &t.rules.0["lead_reaction"];
    let (yellow, red) = (
        reaction.param("yellow_minutes") as i64,
        reaction.param("alert_minutes") as i64,
    );
    for l in &snap.leads {
        match crate::rules::lead_reaction::waiting(&snap, &cal, now, l) {
            Some(m) if m >= red => today.leads_red += 1,
            Some(m) if m >= yellow => today.leads_yellow += 1,
            _ => {}
        }
    }
    let flag = crate::rules::no_activity::FLAG;
    today.idle_clients = snap
        .companies
        .iter()
        .filter(|c| c.tags.iter().any(|x| x == flag))
        .map(|c| c.name.clone())
        .chain(
            snap.contacts
                .iter()
                .filter(|c| c.tags.iter().any(|x| x == flag))
                .map(|c| c.name.clone()),
        )
        .collect();
    let previous = metrics::compute(&snap, &Period::day(day - Duration::days(1), tz), now, &cal);
    let sync: Vec<(String, bool, i64, Option<String>)> = store
        .last_sync_runs(&t.id)
        .await?
        .into_iter()
        .map(|r| (r.source, r.ok, r.items, r.error))
        .collect();
    let html = render::daily_html(&DailyInput {
        tenant_name: &t.name,
        lang: t.lang,
        period: &period,
        today: &today,
        previous: &previous,
        actions,
        sync: &sync,
    });
    Ok(Report {
        kind: "daily",
        tenant: t.id.clone(),
        period_from: day,
        period_to: day,
        html,
        figures: today,
        charts: Vec::new(),
    })
}
