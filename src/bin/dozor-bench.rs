//! Sync benchmark: a full initial sync of one CRM from a running simulator into a fresh SQLite
//! mirror, with throughput, request counts against the theoretical minimum, the share of the
//! rate-limit bound reached and the peak RSS of this process.
//!
//! The simulator runs as a separate process (`dozor sim`), so the RSS measured here is the
//! sync's alone. `scripts/bench` starts it, runs this program and prints the comparison table.
//!
//! ```text
//! dozor-bench --crm bitrix24 --sim http://127.0.0.1:8099 [--kinds all|deal,contact,activity]
//!             [--workdir DIR] [--json FILE]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

use dozor::config::{AmocrmConfig, Bitrix24Config, Secret};
use dozor::crm::Crm;
use dozor::crm::amocrm::AmoCrm;
use dozor::crm::bitrix24::Bitrix24;
use dozor::domain::EntityKind;
use dozor::store::Store;
use dozor::sync::{SyncOptions, sync_crm, sync_entity};

const TENANT: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CrmArg {
    Bitrix24,
    Amocrm,
}

impl CrmArg {
    fn system(self) -> &'static str {
        match self {
            CrmArg::Bitrix24 => "bitrix24",
            CrmArg::Amocrm => "amocrm",
        }
    }
}

/// Full-sync benchmark of one CRM against a running `dozor sim`.
#[derive(Debug, Parser)]
#[command(name = "dozor-bench")]
struct Args {
    /// Which CRM to sync
    #[arg(long, value_enum)]
    crm: CrmArg,
    /// Simulator base URL (`http://127.0.0.1:PORT`)
    #[arg(long)]
    sim: String,
    /// `all` = `dozor::sync::sync_crm` (users, stages and every entity kind); or a comma list of
    /// kinds (lead,deal,contact,company,task,activity) synced one by one with `sync_entity`
    #[arg(long, default_value = "all")]
    kinds: String,
    /// Directory for the SQLite mirror (created; default: a fresh one under the temp dir,
    /// removed afterwards)
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Also write the figures as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Give up on the sync after this many seconds
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
}

/// Request counts of one system from `GET /_sim/stats`.
#[derive(Debug, Default, Clone)]
struct Counts {
    requests: u64,
    throttled: u64,
    by_method: BTreeMap<String, u64>,
}

struct SimControl {
    base: String,
    http: reqwest::Client,
}

impl SimControl {
    fn new(base: &str) -> Self {
        SimControl {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ok = self
                .http
                .get(format!("{}/_sim/health", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("simulator at {} not healthy within {within:?}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn summary(&self) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/_sim/summary", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    async fn reset_stats(&self) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/_sim/stats", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn stats(&self, system: &str) -> anyhow::Result<Counts> {
        let v: Value = self
            .http
            .get(format!("{}/_sim/stats", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let s = &v[system];
        Ok(Counts {
            requests: s["requests"].as_u64().unwrap_or(0),
            throttled: s["throttled"].as_u64().unwrap_or(0),
            by_method: s["by_method"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// Peak resident set size of this process in KiB (`VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// The fewest requests that can read `rows` (records per kind) plus the directories.
///
/// Bitrix24: a list page is 50 rows and fast ID paging ends on a short page, so a kind of `n`
/// rows needs `floor(n/50) + 1` list calls; directories need `ceil(users/50)` `user.get` calls,
/// one `crm.category.list` and one `crm.status.list` per pipeline (lead statuses included);
/// every call can travel in a `batch` of 50, so the minimum is
/// `ceil((list calls + directory calls) / 50)` HTTP requests.
///
/// amoCRM: 250 rows per page, no batching: `max(1, ceil(n/250))` pages per list (activities are
/// call notes of three entity types: at least `max(3, ceil(n/250))`), plus `ceil(users/250)`
/// user pages and one pipelines request.
fn minimum_requests(
    crm: CrmArg,
    rows: &BTreeMap<String, u64>,
    users: Option<u64>,
    pipelines: Option<u64>,
) -> (u64, String) {
    match crm {
        CrmArg::Bitrix24 => {
            let list_calls: u64 = rows
                .iter()
                .filter(|(k, _)| EntityKind::parse(k).is_some())
                .map(|(_, n)| n / 50 + 1)
                .sum();
            let dir = match (users, pipelines) {
                (Some(u), Some(p)) => div_ceil(u.max(1), 50) + 1 + p,
                _ => 0,
            };
            (
                div_ceil(list_calls + dir, 50),
                format!(
                    "ceil((sum_kinds(floor(rows/50)+1) = {list_calls} list calls + {dir} directory calls) / 50 per batch)"
                ),
            )
        }
        CrmArg::Amocrm => {
            let pages: u64 = rows
                .iter()
                .filter(|(k, _)| EntityKind::parse(k).is_some())
                .map(|(k, n)| {
                    if k == "activity" {
                        div_ceil(*n, 250).max(3)
                    } else {
                        div_ceil(*n, 250).max(1)
                    }
                })
                .sum();
            let dir = match users {
                Some(u) => div_ceil(u.max(1), 250) + 1,
                None => 0,
            };
            (
                pages + dir,
                format!(
                    "sum_kinds(max(1, ceil(rows/250))) (activity: max(3, ...)) = {pages} pages + {dir} directory requests"
                ),
            )
        }
    }
}

/// Seconds the rate limit needs at least for `requests` requests.
fn bound_secs(crm: CrmArg, requests: u64) -> f64 {
    match crm {
        // Leaky bucket: 50 requests at once, then 2 per second.
        CrmArg::Bitrix24 => requests.saturating_sub(50) as f64 / 2.0,
        // 7 requests per second.
        CrmArg::Amocrm => requests as f64 / 7.0,
    }
}

fn rate_rule(crm: CrmArg) -> &'static str {
    match crm {
        CrmArg::Bitrix24 => "Bitrix24 standard plan: burst 50, then 2 req/s -> max(0, R-50)/2 s",
        CrmArg::Amocrm => "amoCRM: 7 req/s -> R/7 s",
    }
}

async fn build_crm(crm: CrmArg, sim: &str, store: &Store) -> anyhow::Result<Box<dyn Crm>> {
    let tokens: Arc<dyn dozor::store::TokenStore> = Arc::new(store.clone());
    let creds = dozor_sim::Credentials::default();
    Ok(match crm {
        CrmArg::Bitrix24 => {
            let cfg = Bitrix24Config::webhook(format!(
                "{sim}/b24/rest/{}/{}/",
                creds.b24_webhook_user, creds.b24_webhook_secret
            ));
            Box::new(
                Bitrix24::new(TENANT, &cfg, tokens)
                    .await
                    .context("Bitrix24 connector")?,
            )
        }
        CrmArg::Amocrm => {
            let cfg = AmocrmConfig {
                base_url: format!("{sim}/amo"),
                long_lived_token: Some(Secret::new(creds.amo_long_lived_token.clone())),
                long_lived_token_file: None,
                client_id: None,
                client_secret: None,
                client_secret_file: None,
                redirect_uri: None,
                refresh_token: None,
                refresh_token_file: None,
                rate_per_sec: 7,
            };
            Box::new(
                AmoCrm::new(TENANT, &cfg, tokens)
                    .await
                    .context("amoCRM connector")?,
            )
        }
    })
}

fn parse_kinds(s: &str) -> anyhow::Result<Option<Vec<EntityKind>>> {
    if s == "all" {
        return Ok(None);
    }
    s.split(',')
        .map(|k| {
            EntityKind::parse(k.trim()).with_context(|| {
                format!("unknown kind {k:?} (lead, deal, contact, company, task, activity)")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Some)
}

// Long: a benchmark script: set up, time each phase, collect the figures into one JSON; phases
// share the timing state.
async fn run(args: Args) -> anyhow::Result<Value> {
    let kinds = parse_kinds(&args.kinds)?;
    let sim = SimControl::new(&args.sim);
    sim.wait_healthy(Duration::from_secs(60)).await?;
    let world = sim.summary().await?;

    let (workdir, remove_after) = match &args.workdir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("dozor-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&workdir)
        .with_context(|| format!("cannot create {}", workdir.display()))?;
    let db = workdir.join("mirror.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let store = Store::open(&format!("sqlite://{}", db.display()), 4)
        .await
        .context("opening the mirror")?;
    let crm = build_crm(args.crm, &sim.base, &store).await?;
    let system = args.crm.system();

    // What the daemon does at start; not part of the measured sync.
    let who = crm.ping().await.context("ping")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.reset_stats().await?;

    let limit = Duration::from_secs(args.timeout_secs);
    let started = Instant::now();
    let mut per_kind_secs: BTreeMap<String, f64> = BTreeMap::new();
    let mut per_kind_requests: BTreeMap<String, u64> = BTreeMap::new();
    let items: BTreeMap<String, usize> = match &kinds {
        None => {
            let report = tokio::time::timeout(
                limit,
                sync_crm(&store, TENANT, crm.as_ref(), SyncOptions::default()),
            )
            .await
            .map_err(|_| anyhow::anyhow!("sync did not finish within {limit:?}"))??;
            report.items
        }
        Some(kinds) => {
            let mut out = BTreeMap::new();
            for kind in kinds {
                let t = Instant::now();
                let before = sim.stats(system).await?.requests;
                let n = tokio::time::timeout(
                    limit.saturating_sub(started.elapsed()),
                    sync_entity(&store, TENANT, crm.as_ref(), *kind, SyncOptions::default()),
                )
                .await
                .map_err(|_| anyhow::anyhow!("sync did not finish within {limit:?}"))??;
                per_kind_secs.insert(kind.as_str().into(), t.elapsed().as_secs_f64());
                per_kind_requests.insert(
                    kind.as_str().into(),
                    sim.stats(system).await?.requests - before,
                );
                out.insert(kind.as_str().to_string(), n);
            }
            out
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let counts = sim.stats(system).await?;
    let peak_rss = peak_rss_kib();

    let mirror = store.counts(TENANT).await.context("counting the mirror")?;
    store.close().await;
    let db_bytes: u64 = ["", "-wal"]
        .iter()
        .map(|s| file_size(Path::new(&format!("{}{s}", db.display()))))
        .sum();

    let entity_items: u64 = items
        .iter()
        .filter(|(k, _)| EntityKind::parse(k).is_some())
        .map(|(_, n)| *n as u64)
        .sum();
    let total_items: u64 = items.values().map(|n| *n as u64).sum();
    let rows: BTreeMap<String, u64> = items.iter().map(|(k, v)| (k.clone(), *v as u64)).collect();
    let mirror_rows: i64 = items
        .keys()
        .filter_map(|k| {
            let table = match k.as_str() {
                "activity" => "activities".to_string(),
                "company" => "companies".to_string(),
                "users" | "stages" => k.clone(),
                other => format!("{other}s"),
            };
            mirror.get(&table).copied()
        })
        .sum();
    let (users, pipelines) = if kinds.is_none() {
        // Lead statuses count as one more status list (Bitrix24) / are built in (amoCRM).
        let p = world["pipelines"].as_u64().map(|p| p + 1);
        (items.get("users").map(|n| *n as u64), p)
    } else {
        (None, None)
    };
    let (min_requests, min_formula) = minimum_requests(args.crm, &rows, users, pipelines);
    let bound_min = bound_secs(args.crm, min_requests);
    let bound_actual = bound_secs(args.crm, counts.requests);
    let share = |b: f64| if elapsed > 0.0 { b / elapsed } else { 0.0 };

    let out = json!({
        "tool": "dozor",
        "crm": system,
        "account": who,
        "kinds": args.kinds,
        "world": world,
        "elapsed_s": elapsed,
        "items": items,
        "items_total": total_items,
        "entity_items": entity_items,
        "items_per_s": total_items as f64 / elapsed.max(1e-9),
        "per_kind_s": per_kind_secs,
        "per_kind_requests": per_kind_requests,
        "requests": counts.requests,
        "throttled": counts.throttled,
        "by_method": counts.by_method,
        "min_requests": min_requests,
        "min_formula": min_formula,
        "requests_ratio": counts.requests as f64 / (min_requests.max(1) as f64),
        "rate_rule": rate_rule(args.crm),
        "bound_s_min_requests": bound_min,
        "bound_items_per_s": if bound_min > 0.0 { Some(total_items as f64 / bound_min) } else { None },
        "bound_share": share(bound_min),
        "bound_s_actual_requests": bound_actual,
        "bound_share_actual_requests": share(bound_actual),
        "peak_rss_kib": peak_rss,
        "mirror_rows": mirror_rows,
        "mirror_counts": mirror,
        "sqlite_bytes": db_bytes,
    });
    if remove_after {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    Ok(out)
}

fn print_report(v: &Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    println!(
        "dozor sync benchmark: {} ({}), kinds: {}",
        v["crm"].as_str().unwrap_or(""),
        v["account"].as_str().unwrap_or(""),
        v["kinds"].as_str().unwrap_or("")
    );
    println!("  elapsed              {:.1} s", f("elapsed_s"));
    if let Some(items) = v["items"].as_object() {
        for (k, n) in items {
            let extra = match (v["per_kind_s"].get(k), v["per_kind_requests"].get(k)) {
                (Some(s), Some(r)) => format!(
                    "   ({:.1} s, {} requests)",
                    s.as_f64().unwrap_or(0.0),
                    r.as_u64().unwrap_or(0)
                ),
                _ => String::new(),
            };
            println!("  items {k:<14} {}{extra}", n.as_u64().unwrap_or(0));
        }
    }
    println!("  items total          {}", u("items_total"));
    println!("  items/s              {:.0}", f("items_per_s"));
    println!(
        "  requests             {} ({} throttled)",
        u("requests"),
        u("throttled")
    );
    println!(
        "  minimum requests     {}   = {}",
        u("min_requests"),
        v["min_formula"].as_str().unwrap_or("")
    );
    println!("  requests / minimum   {:.2}", f("requests_ratio"));
    println!(
        "  rate limit           {}",
        v["rate_rule"].as_str().unwrap_or("")
    );
    match v["bound_items_per_s"].as_f64() {
        Some(b) => println!(
            "  rate-limit bound     {:.1} s for the minimum requests = {b:.0} items/s; reached {:.0}%",
            f("bound_s_min_requests"),
            100.0 * f("bound_share")
        ),
        None => println!("  rate-limit bound     none (the minimum fits in the burst)"),
    }
    println!(
        "  bound for the requests actually made: {:.1} s; reached {:.0}%",
        f("bound_s_actual_requests"),
        100.0 * f("bound_share_actual_requests")
    );
    println!(
        "  peak RSS             {:.1} MiB",
        u("peak_rss_kib") as f64 / 1024.0
    );
    println!(
        "  mirror rows          {} (items {})",
        u("mirror_rows"),
        u("items_total")
    );
    println!(
        "  SQLite size          {:.1} MiB",
        u("sqlite_bytes") as f64 / 1_048_576.0
    );
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let json_path = args.json.clone();
    match run(args).await {
        Ok(v) => {
            print_report(&v);
            if let Some(p) = json_path
                && let Err(e) =
                    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap_or_default())
            {
                eprintln!("dozor-bench: cannot write {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
            let mirror = v["mirror_rows"].as_u64().unwrap_or(0);
            if mirror != v["items_total"].as_u64().unwrap_or(0) {
                eprintln!(
                    "dozor-bench: the mirror holds {mirror} rows, the sync reported {} items",
                    v["items_total"]
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dozor-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
