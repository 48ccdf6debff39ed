//! The deal figures a daily report gets from the database's sums per local day add up, over a
//! week, to those the weekly report computes from the week's deal records: in a time zone whose
//! clocks change that week, with closes around midnight, on a real SQLite file and on
//! PostgreSQL.

mod common;

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use dozor::config;
use dozor::domain::*;
use dozor::report::{self, Kind};
use dozor::store::Store;

const TZ: chrono_tz::Tz = chrono_tz::America::Los_Angeles;

/// Monday of the week in which Los Angeles leaves summer time (Sunday 1 November 2026).
fn monday() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, 26).unwrap()
}

fn local(d: NaiveDate, h: u32, m: u32) -> Ts {
    TZ.from_local_datetime(&d.and_hms_opt(h, m, 0).unwrap())
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

/// Deals created and closed around the week's local midnights (either side, so UTC and local
/// dates differ), some open, some with nobody responsible.
async fn fill(store: &Store) {
    let mut deals = Vec::new();
    for i in 0..400i64 {
        let day = monday() + Duration::days(i % 10 - 1);
        let closed = local(day, 0, 0) + Duration::minutes((i * 37) % 180 - 90);
        let semantics = match i % 7 {
            0 => Semantics::Open,
            1 | 2 => Semantics::Lost,
            _ => Semantics::Won,
        };
        deals.push(Record::Deal(Deal {
            id: format!("d{i}"),
            title: format!("Сделка {i}"),
            pipeline_id: "0".into(),
            stage_id: "S".into(),
            semantics,
            // Quarters: every order of adding them up gives the same sum.
            amount: (1 + i * 997 % 40_000) as f64 / 4.0,
            currency: "RUB".into(),
            responsible_id: (i % 5 != 0).then(|| (i % 3 + 1).to_string()),
            contact_id: Some((i % 30).to_string()),
            company_id: None,
            lead_id: None,
            source: None,
            tags: vec![],
            created_at: closed - Duration::hours((i * 13) % 100),
            updated_at: closed,
            closed_at: (semantics != Semantics::Open).then_some(closed),
        }));
    }
    store
        .save_page("days", "crm", EntityKind::Deal, &deals, &[], "{}")
        .await
        .unwrap();
}

/// The deal figures that add up over days: created, won, lost, revenue, and won, lost and
/// revenue per manager.
type DealFigures = (
    usize,
    usize,
    usize,
    f64,
    BTreeMap<String, (usize, usize, f64)>,
);

fn deal_figures(f: &report::metrics::Figures) -> DealFigures {
    let managers = f
        .managers
        .iter()
        .filter(|m| m.won + m.lost > 0)
        .map(|m| (m.user_id.clone(), (m.won, m.lost, m.revenue)))
        .collect();
    (
        f.deals_created,
        f.deals_won,
        f.deals_lost,
        f.revenue,
        managers,
    )
}

async fn days_add_up_to_the_week(db_url: &str) {
    let text = format!(
        "[database]\nurl = \"{db_url}\"\n\n[[tenants]]\nid = \"days\"\nname = \"ООО «Сутки»\"\n\
         timezone = \"America/Los_Angeles\"\n\n[tenants.crm]\nkind = \"bitrix24\"\n\
         webhook_url = \"https://days.bitrix24.ru/rest/1/dayssecret/\"\n"
    );
    let cfg = config::parse(&text, None, None).unwrap().config;
    let t = &cfg.tenants[0];
    let store = Store::open(db_url, 2).await.unwrap();
    fill(&store).await;
    let now = local(monday() + Duration::days(14), 9, 0);
    let week = report::build(&store, t, Kind::Weekly, Some(monday()), now, &[])
        .await
        .unwrap();
    let mut sum: DealFigures = Default::default();
    for i in 0..7 {
        let day = monday() + Duration::days(i);
        let rep = report::build(&store, t, Kind::Daily, Some(day), now, &[])
            .await
            .unwrap();
        let (created, won, lost, revenue, managers) = deal_figures(&rep.figures);
        sum.0 += created;
        sum.1 += won;
        sum.2 += lost;
        sum.3 += revenue;
        for (id, (w, l, r)) in managers {
            let m = sum.4.entry(id).or_default();
            m.0 += w;
            m.1 += l;
            m.2 += r;
        }
    }
    let weekly = deal_figures(&week.figures);
    assert!(weekly.1 > 50 && weekly.2 > 20, "too few closes: {weekly:?}");
    assert_eq!(sum, weekly);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_add_up_to_the_week_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    days_add_up_to_the_week(&common::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_add_up_to_the_week_on_postgres() {
    if common::pg_skipped() {
        eprintln!("DOZOR_SKIP_PG=1: skipped");
        return;
    }
    days_add_up_to_the_week(&common::pg_url().await).await;
}
