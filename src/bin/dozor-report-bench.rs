//! Report benchmark: how long building the daily, weekly and monthly reports takes over a big
//! mirror (default: 1 000 000 deals in a SQLite file, or in a PostgreSQL database with `--pg`),
//! and the peak RSS of the process.
//!
//! The mirror is generated once into `--db` (reused when it already holds the same numbers),
//! spread over four years before the report day: deals (92 % closed), their clients, tasks,
//! leads, lead activities and telephony calls. Each report is then built `--runs` times from a
//! fresh connection pool (so no run profits from the previous run's statements) and the
//! fastest, median and slowest times are printed.
//!
//! ```text
//! dozor-report-bench [--deals 1000000] [--db FILE | --pg URL] [--runs 5] [--json FILE]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{NaiveDate, TimeZone, Utc};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde_json::json;

use dozor::domain::*;
use dozor::report::{self, Kind};
use dozor::store::Store;

const TENANT: &str = "bench";
const MANAGERS: usize = 25;
const YEARS_DAYS: i64 = 4 * 365;
const BATCH: usize = 5_000;

/// Report build times over a big generated mirror.
#[derive(Debug, Parser)]
#[command(name = "dozor-report-bench")]
struct Args {
    /// Deals in the mirror (clients, tasks, leads and calls scale with it)
    #[arg(long, default_value_t = 1_000_000)]
    deals: usize,
    /// SQLite file for the mirror (default: under the temp dir, kept for the next run)
    #[arg(long, conflicts_with = "pg")]
    db: Option<PathBuf>,
    /// PostgreSQL database for the mirror instead of SQLite (postgres://USER@HOST:PORT/DB);
    /// like the file, it is kept and reused when it holds a mirror of the same size
    #[arg(long)]
    pg: Option<String>,
    /// Builds of each report
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Also write the figures as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The report day: the benchmark is reproducible whatever the date it runs on.
fn report_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).expect("valid date")
}

fn now() -> Ts {
    chrono_tz::Europe::Moscow
        .with_ymd_and_hms(2026, 11, 24, 9, 0, 0)
        .single()
        .expect("valid time")
        .with_timezone(&Utc)
}

fn config_text(db_url: &str) -> String {
    let plans: String = (1..=MANAGERS)
        .map(|i| format!("\"{i}\" = 3000000\n"))
        .collect();
    format!(
        "[database]\nurl = \"{db_url}\"\n\n[[tenants]]\nid = \"{TENANT}\"\nname = \"ООО «Бенчмарк»\"\n\n\
         [tenants.crm]\nkind = \"bitrix24\"\nwebhook_url = \"https://bench.bitrix24.ru/rest/1/benchmarksecret/\"\n\n\
         [tenants.reports.plans]\n{plans}"
    )
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

// Long: a seeded generator writing each entity kind in turn with the same rng; split, the seed
// order would be spread over helpers.
async fn generate(store: &Store, deals: usize) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let end = now();
    let start = end - chrono::Duration::days(YEARS_DAYS);
    let span = (end - start).num_seconds();
    let at =
        |rng: &mut rand::rngs::StdRng| start + chrono::Duration::seconds(rng.gen_range(0..span));
    let users: Vec<User> = (1..=MANAGERS)
        .map(|i| User {
            id: i.to_string(),
            name: format!("Менеджер {i:02} Иванов"),
            email: None,
            extension: Some(format!("{}", 100 + i)),
            active: true,
        })
        .collect();
    store.upsert_users(TENANT, &users).await?;
    let stages = [
        "NEW",
        "PREPARATION",
        "PREPAYMENT_INVOICE",
        "EXECUTING",
        "WON",
        "LOSE",
    ];
    let pipeline = Pipeline {
        id: "0".into(),
        name: "Продажи".into(),
        is_default: true,
        stages: stages
            .iter()
            .enumerate()
            .map(|(i, id)| Stage {
                id: id.to_string(),
                pipeline_id: "0".into(),
                name: [
                    "Новая",
                    "Подготовка",
                    "Счёт",
                    "В работе",
                    "Успешно",
                    "Провал",
                ][i]
                    .into(),
                sort: (i as i64 + 1) * 10,
                semantics: match *id {
                    "WON" => Semantics::Won,
                    "LOSE" => Semantics::Lost,
                    _ => Semantics::Open,
                },
            })
            .collect(),
    };
    store.upsert_pipelines(TENANT, &[pipeline]).await?;
    let clients = (deals / 5).max(1);
    let who = |rng: &mut rand::rngs::StdRng| Some(rng.gen_range(1..=MANAGERS).to_string());
    let phone = |i: usize| {
        format!(
            "+7 9{:02} {:03}-{:02}-{:02}",
            i % 100,
            (i / 100) % 1000,
            (i / 7) % 100,
            i % 97
        )
    };
    // Clients: contacts with phones, a company for every fourth.
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..clients {
        let created = at(&mut rng);
        batch.push(Record::Contact(Contact {
            id: format!("{}", i + 1),
            name: format!("Клиент {i}"),
            phones: vec![phone(i)],
            emails: vec![],
            company_id: (i % 4 == 0).then(|| format!("{}", i / 4 + 1)),
            responsible_id: who(&mut rng),
            tags: vec![],
            created_at: created,
            updated_at: created,
        }));
        if batch.len() == BATCH || i + 1 == clients {
            store
                .save_page(TENANT, "crm", EntityKind::Contact, &batch, &[], "{}")
                .await?;
            batch.clear();
        }
    }
    // Deals, and tasks: open deals mostly have one (a fifth of those overdue), closed deals
    // have a completed one.
    let mut tasks = Vec::with_capacity(BATCH);
    let mut task_id = 0u64;
    for i in 0..deals {
        let created = at(&mut rng);
        let roll: f64 = rng.r#gen();
        let (stage, sem) = if roll < 0.08 {
            (stages[rng.gen_range(0..4)], Semantics::Open)
        } else if roll < 0.43 {
            ("WON", Semantics::Won)
        } else {
            ("LOSE", Semantics::Lost)
        };
        let closed = (sem != Semantics::Open).then(|| {
            (created + chrono::Duration::hours(rng.gen_range(1..24 * 60)))
                .min(end - chrono::Duration::minutes(1))
        });
        let client = rng.gen_range(0..clients);
        let owner = who(&mut rng);
        batch.push(Record::Deal(Deal {
            id: format!("{}", i + 1),
            title: format!("Сделка №{}", i + 1),
            pipeline_id: "0".into(),
            stage_id: stage.into(),
            semantics: sem,
            amount: (rng.gen_range(5..500) * 1000) as f64,
            currency: "RUB".into(),
            responsible_id: owner.clone(),
            contact_id: Some(format!("{}", client + 1)),
            company_id: (client % 4 == 0).then(|| format!("{}", client / 4 + 1)),
            lead_id: None,
            source: None,
            tags: vec![],
            created_at: created,
            updated_at: closed.unwrap_or(created),
            closed_at: closed,
        }));
        let with_task = sem != Semantics::Open || rng.gen_bool(0.8);
        if with_task {
            task_id += 1;
            let deadline = if sem == Semantics::Open {
                end + chrono::Duration::hours(rng.gen_range(-24 * 10..24 * 30))
            } else {
                closed.unwrap_or(created)
            };
            tasks.push(Record::Task(Task {
                id: task_id.to_string(),
                title: "Следующий шаг".into(),
                description: String::new(),
                responsible_id: owner,
                deadline: Some(deadline),
                completed: sem != Semantics::Open,
                completed_at: closed,
                entity: Some(EntityRef::new(EntityKind::Deal, format!("{}", i + 1))),
                created_at: created,
                updated_at: created,
            }));
        }
        if batch.len() == BATCH || i + 1 == deals {
            store
                .save_page(TENANT, "crm", EntityKind::Deal, &batch, &[], "{}")
                .await?;
            store
                .save_page(TENANT, "crm", EntityKind::Task, &tasks, &[], "{}")
                .await?;
            batch.clear();
            tasks.clear();
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!("  {} deals written", i + 1);
        }
    }
    // Leads (a fifth of the deals), each with a first activity for most.
    let leads = (deals / 5).max(1);
    let mut acts = Vec::with_capacity(BATCH);
    for i in 0..leads {
        let created = at(&mut rng);
        batch.push(Record::Lead(Lead {
            id: format!("{}", i + 1),
            title: format!("Заявка {}", i + 1),
            status_id: if created > end - chrono::Duration::days(2) {
                "NEW"
            } else {
                "CONVERTED"
            }
            .into(),
            semantics: Semantics::Open,
            responsible_id: who(&mut rng),
            source: Some(["CALL", "WEB", "EMAIL"][i % 3].into()),
            phones: vec![phone(clients + i)],
            emails: vec![],
            contact_id: None,
            company_id: None,
            amount: 0.0,
            utm: Utm {
                source: Some(["yandex", "google", "vk"][i % 3].into()),
                medium: Some("cpc".into()),
                ..Utm::default()
            },
            created_at: created,
            updated_at: created,
            closed_at: None,
            deal_id: None,
        }));
        if rng.gen_bool(0.9) {
            let t = created + chrono::Duration::minutes(rng.gen_range(1..600));
            acts.push(Record::Activity(Activity {
                id: format!("{}", i + 1),
                kind: ActivityKind::Call,
                direction: Some(Direction::Out),
                subject: "Звонок".into(),
                entity: Some(EntityRef::new(EntityKind::Lead, format!("{}", i + 1))),
                responsible_id: None,
                phone: None,
                duration_s: Some(60),
                completed: true,
                external_id: None,
                started_at: t,
                created_at: t,
                updated_at: t,
            }));
        }
        if batch.len() == BATCH || i + 1 == leads {
            store
                .save_page(TENANT, "crm", EntityKind::Lead, &batch, &[], "{}")
                .await?;
            store
                .save_page(TENANT, "crm", EntityKind::Activity, &acts, &[], "{}")
                .await?;
            batch.clear();
            acts.clear();
        }
    }
    // Calls: half as many as deals.
    let mut calls = Vec::with_capacity(BATCH);
    let n_calls = deals / 2;
    for i in 0..n_calls {
        let dir = if rng.gen_bool(0.5) {
            Direction::In
        } else {
            Direction::Out
        };
        let answered = rng.gen_bool(0.85);
        let m = rng.gen_range(1..=MANAGERS);
        calls.push(Call {
            id: format!("{}", i + 1),
            provider: TelephonyKind::Comagic,
            started_at: at(&mut rng),
            direction: dir,
            answered,
            talk_s: if answered { rng.gen_range(10..600) } else { 0 },
            wait_s: 5,
            client_phone: phone(rng.gen_range(0..clients)),
            virtual_number: None,
            employee_id: Some(format!("e{m}")),
            employee_name: Some(format!("Менеджер {m:02} Иванов")),
            recording_url: None,
            source: None,
            utm: Utm::default(),
        });
        if calls.len() == BATCH || i + 1 == n_calls {
            store.upsert_calls(TENANT, &calls).await?;
            calls.clear();
        }
    }
    Ok(())
}

/// The mirror's size on disk in MiB: the SQLite file, else the PostgreSQL database.
async fn size_mib(store: &Store, file: Option<&std::path::Path>) -> f64 {
    let bytes = match file {
        Some(f) => std::fs::metadata(f).map(|m| m.len() as f64).unwrap_or(0.0),
        None => sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
            .fetch_one(store.pool())
            .await
            .map_or(0.0, |n| n as f64),
    };
    bytes / 1048576.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dozor-report-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// Long: a benchmark script: argument checks, generation, timed report runs and the summary in one
// readable sequence.
async fn run(a: Args) -> anyhow::Result<()> {
    if a.deals == 0 || a.runs == 0 {
        bail!("--deals and --runs must be at least 1");
    }
    let db = a
        .db
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("dozor-report-bench-{}.db", a.deals)));
    let (url, place) = match &a.pg {
        Some(url) => (url.clone(), dozor::store::redact_db_url(url)),
        None => (
            format!("sqlite://{}", db.display()),
            db.display().to_string(),
        ),
    };
    let cfg = dozor::config::parse(&config_text(&url), None, None)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the benchmark's tenant config")?
        .config;
    let t = &cfg.tenants[0];
    let store = Store::open(&url, 4).await.context("opening the mirror")?;
    let counts = store.counts(TENANT).await?;
    if counts.get("deals").copied().unwrap_or(0) != a.deals as i64 {
        if counts.values().any(|n| *n > 0) {
            bail!(
                "{place} holds another mirror ({counts:?}); remove it or pass another --db / --pg"
            );
        }
        eprintln!("generating a mirror of {} deals in {place}", a.deals);
        let t0 = Instant::now();
        generate(&store, a.deals).await?;
        // PostgreSQL: VACUUM too, as autovacuum would soon after a bulk load; until then every
        // index-only scan visits the table as well.
        let analyze = if a.pg.is_some() {
            "VACUUM ANALYZE"
        } else {
            "ANALYZE"
        };
        sqlx::query(analyze).execute(store.pool()).await.ok();
        eprintln!("generated in {:.1} s", t0.elapsed().as_secs_f64());
    }
    let counts = store.counts(TENANT).await?;
    let size = size_mib(&store, a.pg.is_none().then_some(db.as_path())).await;
    store.close().await;
    let rss_before = peak_rss_mib();
    let mut results = Vec::new();
    for kind in [Kind::Daily, Kind::Weekly, Kind::Monthly] {
        let mut times: Vec<Duration> = Vec::with_capacity(a.runs);
        let mut last = None;
        for _ in 0..a.runs {
            let store = Store::open(&url, 4).await?;
            let t0 = Instant::now();
            let rep = report::build(&store, t, kind, Some(report_day()), now(), &[]).await?;
            times.push(t0.elapsed());
            store.close().await;
            last = Some(rep);
        }
        times.sort();
        let rep = last.expect("at least one run");
        let f = &rep.figures;
        results.push(json!({
            "report": kind.as_str(),
            "min_ms": times[0].as_secs_f64() * 1e3,
            "median_ms": times[times.len() / 2].as_secs_f64() * 1e3,
            "max_ms": times[times.len() - 1].as_secs_f64() * 1e3,
            "charts": rep.charts.len(),
            "html_chars": rep.html.chars().count(),
            "deals_won": f.deals_won,
            "open_deals": f.open_deals,
            "leads_new": f.leads_new,
        }));
    }
    let peak = peak_rss_mib();
    println!(
        "mirror ({}): {} deals, {} contacts, {} tasks, {} leads, {} activities, {} calls ({size:.0} MiB on disk)",
        if a.pg.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        counts.get("deals").unwrap_or(&0),
        counts.get("contacts").unwrap_or(&0),
        counts.get("tasks").unwrap_or(&0),
        counts.get("leads").unwrap_or(&0),
        counts.get("activities").unwrap_or(&0),
        counts.get("calls").unwrap_or(&0),
    );
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>7} {:>10} {:>10}",
        "report", "min ms", "median ms", "max ms", "charts", "won", "open deals"
    );
    for r in &results {
        println!(
            "{:<8} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>10} {:>10}",
            r["report"].as_str().unwrap_or_default(),
            r["min_ms"].as_f64().unwrap_or_default(),
            r["median_ms"].as_f64().unwrap_or_default(),
            r["max_ms"].as_f64().unwrap_or_default(),
            r["charts"].as_u64().unwrap_or_default(),
            r["deals_won"].as_u64().unwrap_or_default(),
            r["open_deals"].as_u64().unwrap_or_default(),
        );
    }
    println!("peak RSS: {peak:.1} MiB (before the reports: {rss_before:.1} MiB)");
    if let Some(path) = &a.json {
        let doc =
            json!({"deals": a.deals, "mirror": counts, "reports": results, "peak_rss_mib": peak});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
