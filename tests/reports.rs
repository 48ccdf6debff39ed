//! Reports over a hand-built mirror (a real SQLite file, and PostgreSQL when the test server is
//! there) with hand-computed figures; the daily report and its chart delivered to the
//! simulator's Telegram fake once; charts that are valid PNG images; long reports split.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use common::tenant_config;
use dozor::config;
use dozor::domain::abc::{Abc, Xyz};
use dozor::domain::*;
use dozor::report::{self, Kind, metrics};
use dozor::store::{Snapshot, Store};
use dozor_sim::tenant_config::OWNER_CHAT;

/// The day the daily report covers: Monday 23 November 2026 (Moscow).
fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
}

fn msk(d: NaiveDate, h: u32, m: u32) -> Ts {
    chrono_tz::Europe::Moscow
        .from_local_datetime(&d.and_hms_opt(h, m, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// The report is built the next morning at 09:00.
fn now() -> Ts {
    msk(day() + Duration::days(1), 9, 0)
}

fn user(id: &str, name: &str) -> User {
    User {
        id: id.into(),
        name: name.into(),
        email: None,
        extension: None,
        active: true,
    }
}

struct D<'a> {
    id: &'a str,
    stage: &'a str,
    sem: Semantics,
    amount: f64,
    who: &'a str,
    created: Ts,
    closed: Option<Ts>,
    company: Option<&'a str>,
    contact: Option<&'a str>,
}

fn deal(d: D) -> Record {
    Record::Deal(Deal {
        id: d.id.into(),
        title: format!("Сделка {}", d.id),
        pipeline_id: "0".into(),
        stage_id: d.stage.into(),
        semantics: d.sem,
        amount: d.amount,
        currency: "RUB".into(),
        responsible_id: Some(d.who.into()),
        contact_id: d.contact.map(Into::into),
        company_id: d.company.map(Into::into),
        lead_id: None,
        source: None,
        tags: vec![],
        created_at: d.created,
        updated_at: d.closed.unwrap_or(d.created),
        closed_at: d.closed,
    })
}

fn task(id: &str, deal: &str, who: &str, deadline: Ts) -> Record {
    Record::Task(Task {
        id: id.into(),
        title: "Позвонить".into(),
        description: String::new(),
        responsible_id: Some(who.into()),
        deadline: Some(deadline),
        completed: false,
        completed_at: None,
        entity: Some(EntityRef::new(EntityKind::Deal, deal)),
        created_at: msk(day(), 8, 0),
        updated_at: msk(day(), 8, 0),
    })
}

fn lead(id: &str, phone: &str, created: Ts) -> Record {
    Record::Lead(Lead {
        id: id.into(),
        title: format!("Лид {id}"),
        status_id: "NEW".into(),
        semantics: Semantics::Open,
        responsible_id: Some("1".into()),
        source: Some("CALL".into()),
        phones: vec![phone.into()],
        emails: vec![],
        contact_id: None,
        company_id: None,
        amount: 0.0,
        utm: Utm {
            source: Some("yandex".into()),
            medium: Some("cpc".into()),
            ..Utm::default()
        },
        created_at: created,
        updated_at: created,
        closed_at: None,
        deal_id: None,
    })
}

fn call(id: &str, dir: Direction, answered: bool, at: Ts) -> Call {
    Call {
        id: id.into(),
        provider: TelephonyKind::Comagic,
        started_at: at,
        direction: dir,
        answered,
        talk_s: if answered { 90 } else { 0 },
        wait_s: 0,
        client_phone: "+7 (900) 111-22-33".into(),
        virtual_number: None,
        employee_id: Some("e1".into()),
        employee_name: Some("Анна Смирнова".into()),
        recording_url: None,
        source: None,
        utm: Utm::default(),
    }
}

/// The hand-built mirror. By hand, for Monday 23.11 (Moscow), as of Tuesday 09:00:
/// - won on the day: a (Анна, 1 000 ₽, created 3 days before), b (Борис, 3 000 ₽, 10 days);
///   lost: c (Анна, 1 day) → won 2, lost 1, revenue 4 000, conversion 66.7 %,
///   deal length (3 + 10 + 1) / 3 = 4.67 days, average check 2 000;
/// - the day before: d won (Анна, 9 999 ₽); the same weekday a week before: h won (Анна, 500);
/// - created on the day: e (open, Анна, no task) → deals created 1;
/// - open now: e (no task), f (Борис, a task due tomorrow), g (Борис, only an overdue task)
///   → 3 open, 2 without a next step (e, g), 1 overdue task (Борис);
/// - calls: a missed incoming call at 10:00, an outgoing one to the same number at 10:30
///   (Анна) → 1 in, 1 out, 1 missed, 1 called back, talk 90 s;
/// - leads: L1 at 10:00 with that number (reaction 30 business minutes); L2 at 16:00 never
///   contacted: 2 h on Monday + nothing on Tuesday before 09:00 = 120 business minutes, past
///   the 30-minute alert → red;
/// - plan: Анна 10 000 ₽ a month; November to the 23rd she won a + d + h = 11 499 → 115 %.
async fn fill(store: &Store) {
    let t = "demo";
    let d = day();
    store
        .upsert_users(
            t,
            &[user("1", "Анна Смирнова"), user("2", "Борис Кузнецов")],
        )
        .await
        .unwrap();
    let stage = |id: &str, sort: i64, sem: Semantics| Stage {
        id: id.into(),
        pipeline_id: "0".into(),
        name: match id {
            "S1" => "Новая",
            "S2" => "Переговоры",
            "WON" => "Успешно",
            _ => "Провал",
        }
        .into(),
        sort,
        semantics: sem,
    };
    store
        .upsert_pipelines(
            t,
            &[Pipeline {
                id: "0".into(),
                name: "Продажи".into(),
                is_default: true,
                stages: vec![
                    stage("S1", 10, Semantics::Open),
                    stage("S2", 20, Semantics::Open),
                    stage("WON", 30, Semantics::Won),
                    stage("LOSE", 40, Semantics::Lost),
                ],
            }],
        )
        .await
        .unwrap();
    let days = |n: i64| d - Duration::days(n);
    let deals = vec![
        deal(D {
            id: "a",
            stage: "WON",
            sem: Semantics::Won,
            amount: 1000.0,
            who: "1",
            created: msk(days(3), 11, 0),
            closed: Some(msk(d, 12, 0)),
            company: Some("c1"),
            contact: None,
        }),
        deal(D {
            id: "b",
            stage: "WON",
            sem: Semantics::Won,
            amount: 3000.0,
            who: "2",
            created: msk(days(10), 11, 0),
            closed: Some(msk(d, 13, 0)),
            company: Some("c2"),
            contact: None,
        }),
        deal(D {
            id: "c",
            stage: "LOSE",
            sem: Semantics::Lost,
            amount: 700.0,
            who: "1",
            created: msk(days(1), 11, 0),
            closed: Some(msk(d, 14, 0)),
            company: None,
            contact: Some("p3"),
        }),
        deal(D {
            id: "d",
            stage: "WON",
            sem: Semantics::Won,
            amount: 9999.0,
            who: "1",
            created: msk(days(5), 11, 0),
            closed: Some(msk(days(1), 12, 0)),
            company: None,
            contact: Some("p3"),
        }),
        deal(D {
            id: "h",
            stage: "WON",
            sem: Semantics::Won,
            amount: 500.0,
            who: "1",
            created: msk(days(9), 11, 0),
            closed: Some(msk(days(7), 12, 0)),
            company: Some("c1"),
            contact: None,
        }),
        deal(D {
            id: "e",
            stage: "S1",
            sem: Semantics::Open,
            amount: 100.0,
            who: "1",
            created: msk(d, 15, 0),
            closed: None,
            company: None,
            contact: None,
        }),
        deal(D {
            id: "f",
            stage: "S2",
            sem: Semantics::Open,
            amount: 200.0,
            who: "2",
            created: msk(days(20), 11, 0),
            closed: None,
            company: None,
            contact: None,
        }),
        deal(D {
            id: "g",
            stage: "S1",
            sem: Semantics::Open,
            amount: 300.0,
            who: "2",
            created: msk(days(30), 11, 0),
            closed: None,
            company: None,
            contact: None,
        }),
    ];
    store
        .save_page(t, "crm", EntityKind::Deal, &deals, &[], "{}")
        .await
        .unwrap();
    let tasks = vec![
        task("t1", "f", "2", now() + Duration::days(1)),
        task("t2", "g", "2", now() - Duration::days(2)),
    ];
    store
        .save_page(t, "crm", EntityKind::Task, &tasks, &[], "{}")
        .await
        .unwrap();
    let leads = vec![
        lead("L1", "89001112233", msk(d, 10, 0)),
        lead("L2", "+79005556677", msk(d, 16, 0)),
    ];
    store
        .save_page(t, "crm", EntityKind::Lead, &leads, &[], "{}")
        .await
        .unwrap();
    store
        .upsert_calls(
            t,
            &[
                call("k1", Direction::In, false, msk(d, 9, 59)),
                call("k2", Direction::Out, true, msk(d, 10, 30)),
            ],
        )
        .await
        .unwrap();
}

fn config_text(db_url: &str, h: &dozor_sim::SimHandle) -> String {
    let mut text = common::rules_on(tenant_config(
        h,
        CrmKind::Bitrix24,
        TelephonyKind::Comagic,
        db_url,
        "ru",
    ));
    text.push_str("\n[tenants.reports.plans]\n\"1\" = 10000\n");
    text
}

async fn figures_by_hand(db_url: &str) {
    let h = common::small_sim(3).await;
    let cfg = config::parse(&config_text(db_url, &h), None, None)
        .unwrap()
        .config;
    let t = &cfg.tenants[0];
    let store = Store::open(db_url, 2).await.unwrap();
    fill(&store).await;

    let rep = report::build(&store, t, Kind::Daily, Some(day()), now(), &[])
        .await
        .unwrap();
    let f = &rep.figures;
    assert_eq!((f.deals_won, f.deals_lost, f.deals_created), (2, 1, 1));
    assert_eq!(f.revenue, 4000.0);
    assert_eq!(f.avg_check, Some(2000.0));
    assert_eq!(f.conversion_pct.map(|x| (x * 10.0).round()), Some(667.0));
    assert_eq!(f.avg_deal_days.map(|x| (x * 100.0).round()), Some(467.0));
    assert_eq!(
        (f.open_deals, f.deals_without_task, f.overdue_tasks),
        (3, 2, 1)
    );
    assert_eq!(
        (f.calls_in, f.calls_out, f.calls_missed, f.calls_called_back),
        (1, 1, 1, 1)
    );
    assert_eq!(f.talk_s, 90);
    assert_eq!(f.leads_new, 2);
    assert_eq!(f.leads_by_channel["yandex / cpc"], 2);
    assert_eq!(f.reaction_median_min, Some(30.0));
    assert_eq!((f.leads_yellow, f.leads_red), (0, 1));
    let anna = f.managers.iter().find(|m| m.user_id == "1").unwrap();
    assert_eq!((anna.won, anna.lost, anna.revenue), (1, 1, 1000.0));
    assert_eq!((anna.calls_in, anna.calls_out, anna.missed), (1, 1, 1));
    assert_eq!(anna.called_back, 1);
    assert_eq!((anna.open_deals, anna.deals_without_task), (1, 1));
    assert_eq!(anna.plan_pct.map(|p| p.round()), Some(115.0));
    let boris = f.managers.iter().find(|m| m.user_id == "2").unwrap();
    assert_eq!(
        (boris.won, boris.revenue, boris.plan_pct),
        (1, 3000.0, None)
    );
    assert_eq!(
        (
            boris.open_deals,
            boris.deals_without_task,
            boris.overdue_tasks
        ),
        (2, 1, 1)
    );
    // Dynamics: the day before d was won (▼1 deal), a week before h (▲1).
    assert!(rep.html.contains("выиграно 2 (▲1 ▲1)"), "{}", rep.html);
    assert!(rep.html.contains("4\u{a0}000\u{a0}₽"), "{}", rep.html);
    assert!(rep.html.contains("пн 16.11"), "{}", rep.html);

    // The database counts the discipline state as the rules' own arithmetic does.
    let snap = Snapshot::load(&store, "demo").await.unwrap();
    assert_eq!(
        store.discipline("demo", now()).await.unwrap(),
        metrics::discipline_of(&snap, now())
    );

    // Weekly: the week of 16–22 November; its funnel as computed on the whole mirror.
    let week = report::build(&store, t, Kind::Weekly, None, now(), &[])
        .await
        .unwrap();
    assert_eq!(
        (week.period_from, week.period_to),
        (
            NaiveDate::from_ymd_opt(2026, 11, 16).unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
        )
    );
    // Won that week: d (9 999) and h (500).
    assert_eq!(week.figures.deals_won, 2);
    assert_eq!(week.figures.revenue, 10_499.0);
    let tz = chrono_tz::Europe::Moscow;
    let whole = metrics::funnel(
        &snap,
        &metrics::Period::days(week.period_from, week.period_to, tz),
    );
    assert_eq!(week.funnel, whole.map(|(_, s)| s));
    assert!(week.html.contains("Рейтинг менеджеров"), "{}", week.html);

    // Monthly, November: ABC/XYZ over twelve months. Won: contact p3 9 999 (d), company c2
    // 3 000 (b), company c1 1 000 + 500 (a, h): total 14 499. p3 starts at 0 % → A, c2 at 69 %
    // → A, c1 at 89.6 % → B. One month of revenue in twelve: all Z.
    let month = report::build(&store, t, Kind::Monthly, Some(day()), now(), &[])
        .await
        .unwrap();
    let m = month.abc_xyz.as_ref().unwrap();
    assert_eq!(m.months, 12);
    let class: BTreeMap<&str, (Abc, Xyz)> = m
        .clients
        .iter()
        .map(|c| (c.client.as_str(), (c.abc, c.xyz)))
        .collect();
    assert_eq!(class["contact:p3"], (Abc::A, Xyz::Z));
    assert_eq!(class["company:c2"], (Abc::A, Xyz::Z));
    assert_eq!(class["company:c1"], (Abc::B, Xyz::Z));
    assert_eq!(m.counts, [[0, 0, 2], [0, 0, 1], [0, 0, 0]]);
    assert_eq!(m.revenue[0][2], 12_999.0);
    assert_eq!(month.figures.revenue, 14_499.0);
    assert!(month.html.contains("ABC/XYZ"), "{}", month.html);
    assert!(month.html.contains("ноябрь 2026"), "{}", month.html);

    // Every chart is a PNG image that decodes, with something drawn on it.
    for r in [&rep, &week, &month] {
        assert!(!r.charts.is_empty(), "{} report has no chart", r.kind);
        for c in &r.charts {
            let img = image::load_from_memory_with_format(&c.png, image::ImageFormat::Png)
                .unwrap_or_else(|e| panic!("{} chart {} is not a PNG: {e}", r.kind, c.name))
                .to_rgb8();
            assert!(img.width() >= 400 && img.height() >= 200, "{}", c.name);
            let first = img.get_pixel(0, 0);
            assert!(img.pixels().any(|p| p != first), "{} is blank", c.name);
        }
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_by_hand_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    figures_by_hand(&common::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_by_hand_on_postgres() {
    if common::pg_skipped() {
        eprintln!("DOZOR_SKIP_PG=1: skipped");
        return;
    }
    figures_by_hand(&common::pg_url().await).await;
}

fn dozor(cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dozor"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_report_and_chart_reach_telegram_once() {
    let h = common::small_sim(4).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let cfg = dir.path().join("dozor.toml");
    std::fs::write(&cfg, config_text(&db, &h)).unwrap();
    let store = Store::open(&db, 2).await.unwrap();
    fill(&store).await;
    store.close().await;
    h.sim.telegram.clear_messages();

    let date = day().to_string();
    for round in 0..2 {
        let out = dozor(&cfg, &["report", "daily", "--send", "--date", &date]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = if round == 0 { "sent" } else { "already sent" };
        assert!(stdout.contains(want), "round {round}: {stdout}");
    }
    let sent = h.sim.telegram.messages();
    let texts: Vec<_> = sent.iter().filter(|m| m.kind == "message").collect();
    let photos: Vec<_> = sent.iter().filter(|m| m.kind == "photo").collect();
    assert_eq!(texts.len(), 1, "{sent:?}");
    assert_eq!(photos.len(), 1, "{sent:?}");
    assert!(sent.iter().all(|m| m.chat_id == OWNER_CHAT));
    assert!(
        texts[0]
            .text
            .as_deref()
            .unwrap()
            .contains("Ежедневный отчёт")
    );
    assert_eq!(photos[0].content_type.as_deref(), Some("image/png"));
    assert!(photos[0].photo_len.unwrap() > 1000);
    // The text went out before the chart.
    assert!(texts[0].message_id < photos[0].message_id);

    // The same report as files: HTML and its chart beside it.
    let html = dir.path().join("daily.html");
    let out = dozor(
        &cfg,
        &[
            "report",
            "monthly",
            "--date",
            &date,
            "--format",
            "html",
            "--out",
            html.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&html).unwrap();
    assert!(written.contains("Месячный отчёт"), "{written}");
    let png = std::fs::read(dir.path().join("daily-leads_won_trend.png")).unwrap();
    image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
    // Printing needs no Telegram at all.
    let out = dozor(&cfg, &["report", "weekly", "--print", "--date", &date]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Недельный отчёт"),
        "{stdout}"
    );
    assert_eq!(h.sim.telegram.messages().len(), sent.len());
}

/// A report far over Telegram's 4096 characters (two hundred managers) arrives as several
/// messages, each within the limit and valid HTML (the fake rejects broken markup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_report_is_split_on_line_boundaries() {
    let h = common::small_sim(5).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let cfg = dir.path().join("dozor.toml");
    std::fs::write(&cfg, config_text(&db, &h)).unwrap();
    let store = Store::open(&db, 2).await.unwrap();
    fill(&store).await;
    let users: Vec<User> = (100..300)
        .map(|i| user(&i.to_string(), &format!("М{i} Петров")))
        .collect();
    store.upsert_users("demo", &users).await.unwrap();
    let deals: Vec<Record> = (100..300)
        .map(|i| {
            deal(D {
                id: &format!("x{i}"),
                stage: "WON",
                sem: Semantics::Won,
                amount: 1000.0 + i as f64,
                who: &i.to_string(),
                created: msk(day(), 9, 0),
                closed: Some(msk(day(), 17, 0)),
                company: None,
                contact: None,
            })
        })
        .collect();
    store
        .save_page("demo", "crm", EntityKind::Deal, &deals, &[], "{}")
        .await
        .unwrap();
    store.close().await;
    h.sim.telegram.clear_messages();
    let out = dozor(
        &cfg,
        &["report", "daily", "--send", "--date", &day().to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let texts: Vec<String> = h
        .sim
        .telegram
        .messages()
        .into_iter()
        .filter(|m| m.kind == "message")
        .filter_map(|m| m.text)
        .collect();
    assert!(texts.len() >= 2, "{} parts", texts.len());
    for t in &texts {
        let visible = dozor_sim::telegram::parse_html(t).unwrap();
        assert!(visible.chars().count() <= 4096);
        assert!(!t.starts_with('\n') && !t.ends_with(' '), "{t:?}");
    }
    let all: String = texts
        .iter()
        .map(|t| dozor_sim::telegram::parse_html(t).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    for i in 100..300 {
        assert!(
            all.contains(&format!("М{i} ")),
            "manager {i} lost in the split"
        );
    }
}

/// The zone of the generated ABC/XYZ mirror: far from UTC and with summer time, so local months
/// and UTC months part by 7 or 8 hours.
const GEN_TZ: chrono_tz::Tz = chrono_tz::America::Los_Angeles;

/// A generated mirror for the ABC/XYZ matrix: 3 000 deals (most of them won) over fourteen
/// months around November 2026, closed at random moments and, for a third of them, within a day
/// of a local month boundary (on either side of it in local time and in UTC); clients by
/// company, by contact, by neither (and empty ids, which name nobody); amounts in quarters of a
/// rouble, so sums do not depend on the order they are added in.
async fn fill_generated(store: &Store) {
    use rand::{Rng, SeedableRng};
    let t = "gen";
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let local = |d: NaiveDate| {
        GEN_TZ
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    };
    let first = NaiveDate::from_ymd_opt(2025, 10, 1).unwrap();
    let start = local(first);
    let end = local(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
    let boundaries: Vec<Ts> = (0..15)
        .map(|i| local(first.checked_add_months(chrono::Months::new(i)).unwrap()))
        .collect();
    let contacts: Vec<Record> = (1..=150)
        .map(|i| {
            Record::Contact(Contact {
                id: i.to_string(),
                name: format!("Клиент {i}"),
                phones: vec![],
                emails: vec![],
                company_id: None,
                responsible_id: Some("1".into()),
                tags: vec![],
                created_at: start,
                updated_at: start,
            })
        })
        .collect();
    store
        .save_page(t, "crm", EntityKind::Contact, &contacts, &[], "{}")
        .await
        .unwrap();
    let mut deals = Vec::new();
    for i in 0..3_000 {
        let closed = if rng.gen_bool(1.0 / 3.0) {
            boundaries[rng.gen_range(0..boundaries.len())]
                + Duration::minutes(rng.gen_range(-24 * 60..24 * 60))
        } else {
            start - Duration::days(20)
                + Duration::seconds(rng.gen_range(0..(end - start).num_seconds() + 40 * 86_400))
        };
        let sem = match rng.gen_range(0..10) {
            0 => Semantics::Lost,
            1 => Semantics::Open,
            _ => Semantics::Won,
        };
        let company = match rng.gen_range(0..10) {
            0..=3 => Some(format!("co{}", rng.gen_range(1..=40))),
            4 => Some(String::new()),
            _ => None,
        };
        let contact = match rng.gen_range(0..10) {
            0..=6 => Some(rng.gen_range(1..=160).to_string()),
            7 => Some(String::new()),
            _ => None,
        };
        let id = format!("g{i}");
        deals.push(Record::Deal(Deal {
            id: id.clone(),
            title: format!("Сделка {id}"),
            pipeline_id: "0".into(),
            stage_id: "S".into(),
            semantics: sem,
            amount: rng.gen_range(1..400_000) as f64 / 4.0,
            currency: "RUB".into(),
            responsible_id: Some(rng.gen_range(1..=3).to_string()),
            contact_id: contact,
            company_id: company,
            lead_id: None,
            source: None,
            tags: vec![],
            created_at: closed - Duration::days(3),
            updated_at: closed,
            closed_at: (sem != Semantics::Open).then_some(closed),
        }));
    }
    // Regular clients: one deal a month on the last local evening, already the next month in
    // UTC, with revenue varying by k/40 around 10 000 (X, Y or Z by k).
    for k in 0..20 {
        for (j, b) in boundaries.iter().enumerate().take(15).skip(2) {
            let closed = *b - Duration::minutes(30 + 17 * k as i64);
            let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
            let id = format!("r{k}m{j}");
            deals.push(Record::Deal(Deal {
                id: id.clone(),
                title: format!("Сделка {id}"),
                pipeline_id: "0".into(),
                stage_id: "S".into(),
                semantics: Semantics::Won,
                amount: 10_000.0 + sign * k as f64 * 250.0,
                currency: "RUB".into(),
                responsible_id: Some("1".into()),
                contact_id: Some((k + 1).to_string()),
                company_id: (k % 2 == 0).then(|| format!("reg{k}")),
                lead_id: None,
                source: None,
                tags: vec![],
                created_at: closed - Duration::days(3),
                updated_at: closed,
                closed_at: Some(closed),
            }));
        }
    }
    for page in deals.chunks(500) {
        store
            .save_page(t, "crm", EntityKind::Deal, page, &[], "{}")
            .await
            .unwrap();
    }
}

/// The monthly report of November 2026 over the generated mirror, and its ABC/XYZ matrix as
/// JSON, equal byte for byte to the renderings stored in `tests/golden/` (made by summing won
/// deals per client and local month in Rust, before the database did it).
async fn monthly_matches_golden(db_url: &str) {
    let text = format!(
        "[database]\nurl = \"{db_url}\"\n\n[[tenants]]\nid = \"gen\"\nname = \"ООО «Эталон»\"\n\
         timezone = \"America/Los_Angeles\"\n\n[tenants.crm]\nkind = \"bitrix24\"\n\
         webhook_url = \"https://gen.bitrix24.ru/rest/1/goldensecret/\"\n"
    );
    let cfg = config::parse(&text, None, None).unwrap().config;
    let store = Store::open(db_url, 2).await.unwrap();
    fill_generated(&store).await;
    let now = GEN_TZ
        .with_ymd_and_hms(2026, 11, 24, 9, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let month = report::build(
        &store,
        &cfg.tenants[0],
        Kind::Monthly,
        Some(day()),
        now,
        &[],
    )
    .await
    .unwrap();
    let matrix = serde_json::to_string_pretty(month.abc_xyz.as_ref().unwrap()).unwrap() + "\n";
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    if std::env::var("DOZOR_WRITE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(&golden).unwrap();
        std::fs::write(golden.join("monthly_generated.html"), &month.html).unwrap();
        std::fs::write(golden.join("monthly_generated_abc_xyz.json"), &matrix).unwrap();
    }
    assert!(month.abc_xyz.as_ref().unwrap().clients.len() > 100);
    assert_eq!(
        month.html,
        include_str!("golden/monthly_generated.html"),
        "the monthly report differs from tests/golden/monthly_generated.html"
    );
    assert_eq!(
        matrix,
        include_str!("golden/monthly_generated_abc_xyz.json"),
        "the ABC/XYZ matrix differs from tests/golden/monthly_generated_abc_xyz.json"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_over_generated_mirror_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    monthly_matches_golden(&common::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_over_generated_mirror_on_postgres() {
    if common::pg_skipped() {
        eprintln!("DOZOR_SKIP_PG=1: skipped");
        return;
    }
    monthly_matches_golden(&common::pg_url().await).await;
}
