//! The two measurements of the cycle benchmark (`scripts/bench-cycle`) that the `dozor`
//! commands cannot make themselves; the script times everything else with `dozor once`.
//!
//! ```text
//! dozor-cycle-bench sync --config FILE [--json FILE]
//! dozor-cycle-bench webhook --sim URL --dozor URL --secret S [--tenant ID] [--pid PID]
//!                   [--seed K] [--first-cycle-secs N] [--settle-secs N] [--limit-secs N]
//!                   [--json FILE]
//! ```
//!
//! `sync` runs the initial sync alone (the CRM, then the telephony, as a cycle runs them) into
//! the configured database, so its time is reported apart from the first evaluation of the
//! rules, which the next `dozor once` then makes.
//!
//! `webhook` waits until a running `dozor run` has finished its first cycle (and then until its
//! CRM client's rate budget is full again, as for a daemon that has been idle), has the simulator
//! (`dozor sim`, its own process) record a missed incoming call from a known client, pushes the
//! CoMagic notification for it to dozor's receiver and times until the callback task exists in
//! the simulated CRM. Exit status 3 when a limit cut the wait off (the JSON says which).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use dozor::store::{OpenOptions, Store};
use dozor::sync::{SyncReport, sync_crm, sync_telephony};

#[derive(Debug, Parser)]
#[command(name = "dozor-cycle-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The initial sync alone, without the rules, into the configured database
    Sync(SyncArgs),
    /// Missed call pushed by CoMagic → callback task in the CRM, against a running `dozor run`
    Webhook(WebhookArgs),
}

#[derive(Debug, Args)]
struct SyncArgs {
    /// dozor config file (its first tenant is synced)
    #[arg(long)]
    config: PathBuf,
    /// Also write the figures as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct WebhookArgs {
    /// Simulator base URL (`http://127.0.0.1:PORT`)
    #[arg(long)]
    sim: String,
    /// The daemon's server (`http://127.0.0.1:PORT`, its `server.listen`)
    #[arg(long)]
    dozor: String,
    /// `[tenants.webhooks] comagic_secret` of the daemon's config
    #[arg(long)]
    secret: String,
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// Process id of the daemon: give up at once when it is gone
    #[arg(long)]
    pid: Option<u32>,
    /// Picks the client whose call is missed
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up when the daemon has not finished its first cycle after this many seconds
    #[arg(long, default_value_t = 600)]
    first_cycle_secs: u64,
    /// Seconds to wait after the first cycle before the push: the first cycle's writes spend
    /// the CRM client's request budget (Bitrix24: burst 50 at 2 per second, 25 s to refill),
    /// and a missed call usually finds the daemon idle
    #[arg(long, default_value_t = 0)]
    settle_secs: u64,
    /// Give up when there is no callback task this many seconds after the push
    #[arg(long, default_value_t = 600)]
    limit_secs: u64,
    /// Also write the figures as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dozor-cycle-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (result, json_path) = match cli.command {
        Command::Sync(a) => (rt.block_on(initial_sync(&a)), a.json),
        Command::Webhook(a) => (rt.block_on(webhook(&a)), a.json),
    };
    match result {
        Ok((figures, complete)) => {
            let text = serde_json::to_string_pretty(&figures).unwrap_or_default();
            println!("{text}");
            if let Some(p) = json_path
                && let Err(e) = std::fs::write(&p, text)
            {
                eprintln!("dozor-cycle-bench: cannot write {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
            if complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("dozor-cycle-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn report_json(r: &SyncReport) -> Value {
    json!({
        "source": r.source,
        "items": r.items,
        "records": r.total(),
        "elapsed_s": r.elapsed.as_secs_f64(),
    })
}

/// The store as `dozor once` opens it (install marker included), so the commands that follow
/// take the database as theirs.
async fn open_store(c: &dozor::config::Config) -> anyhow::Result<Store> {
    let opts = OpenOptions::for_config(c, false);
    Ok(Store::open_with(&c.database_url(), &opts).await?)
}

async fn initial_sync(a: &SyncArgs) -> anyhow::Result<(Value, bool)> {
    let loaded = dozor::config::load(&a.config)?;
    let c = &loaded.config;
    let t = c
        .tenants
        .first()
        .with_context(|| format!("{}: no tenant", a.config.display()))?;
    let store = open_store(c).await?;
    let tenant = dozor::tenant::connect(t, &store)
        .await
        .with_context(|| format!("tenant {}", t.id))?;
    let opts = dozor::engine::sync_options(c);
    let started = Instant::now();
    let crm = sync_crm(&store, tenant.id(), tenant.crm.as_ref(), opts).await?;
    let telephony = match tenant.telephony.as_deref() {
        Some(tel) => {
            Some(sync_telephony(&store, tenant.id(), tel, opts, chrono::Utc::now()).await?)
        }
        None => None,
    };
    let elapsed = started.elapsed();
    let records = crm.total() + telephony.as_ref().map_or(0, |r| r.total());
    Ok((
        json!({
            "crm": report_json(&crm),
            "telephony": telephony.as_ref().map(report_json),
            "records": records,
            "elapsed_s": elapsed.as_secs_f64(),
        }),
        true,
    ))
}

/// Cycles the daemon has finished for `tenant`, from its `/metrics`; None while it does not
/// answer yet.
async fn cycles_done(http: &reqwest::Client, base: &str, tenant: &str) -> Option<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    let label = format!("tenant=\"{tenant}\"");
    Some(
        text.lines()
            .filter(|l| l.starts_with("dozor_cycles_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// CPU seconds (user + system) process `pid` has used so far, from `/proc/PID/stat`.
fn cpu_s(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: utime and
    // stime are the 12th and 13th of them, in clock ticks.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
}

fn alive(pid: Option<u32>) -> bool {
    pid.is_none_or(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
}

/// Polls every 20 ms until `f` gives a value, the daemon is gone (an error) or `limit` passed
/// since `since` (None).
async fn poll<T, F, Fut>(
    since: Instant,
    limit: Duration,
    pid: Option<u32>,
    mut f: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = f().await {
            return Ok(Some(v));
        }
        if !alive(pid) {
            bail!("dozor run exited (see its log)");
        }
        if since.elapsed() > limit {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn webhook(a: &WebhookArgs) -> anyhow::Result<(Value, bool)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let sim = a.sim.trim_end_matches('/');
    let dozor = a.dozor.trim_end_matches('/');
    let started = Instant::now();
    let first = Duration::from_secs(a.first_cycle_secs);
    let ready = poll(started, first, a.pid, || async {
        cycles_done(&http, dozor, &a.tenant)
            .await
            .filter(|n| *n >= 1)
    })
    .await?;
    let first_cycle_s = started.elapsed().as_secs_f64();
    if ready.is_none() {
        return Ok((
            json!({"cut_off": "first_cycle", "first_cycle_s": first_cycle_s}),
            false,
        ));
    }
    tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;

    let call: Value = http
        .post(format!("{sim}/_sim/world/missed_call"))
        .json(&json!({"seed": a.seed}))
        .send()
        .await?
        .error_for_status()
        .context("the simulator did not record the missed call")?
        .json()
        .await?;
    let call_id = call["call_id"]
        .as_u64()
        .context("no call_id in the answer")?;
    // Requests the simulator serves from here on are the ones the push caused.
    http.delete(format!("{sim}/_sim/stats"))
        .send()
        .await?
        .error_for_status()?;
    let cpu_before = cpu_s(a.pid);
    let pushed = Instant::now();
    push(&http, dozor, a, &call["notification"]).await?;
    let answered_s = pushed.elapsed().as_secs_f64();
    let task = callback_task(&http, sim, a, call_id, pushed).await?;
    // The daemon's CPU time while the call became a task: what is not waiting (for the CRM's
    // rate limit, the database, the simulator).
    let cpu = cpu_s(a.pid)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let requests: Value = http
        .get(format!("{sim}/_sim/stats"))
        .send()
        .await?
        .json()
        .await?;
    let mut out = json!({
        "first_cycle_s": first_cycle_s,
        "settle_s": a.settle_secs,
        "call_id": call_id,
        "phone": call["phone"],
        "answered_s": answered_s,
        "task_s": pushed.elapsed().as_secs_f64(),
        "cpu_s": cpu,
        "requests": requests,
    });
    let done = task.is_some();
    match task {
        Some(task) => out["task"] = task,
        None => out["cut_off"] = json!("task"),
    }
    Ok((out, done))
}

/// Pushes the CoMagic notification to the daemon's receiver, which must accept it.
async fn push(
    http: &reqwest::Client,
    dozor: &str,
    a: &WebhookArgs,
    notification: &Value,
) -> anyhow::Result<()> {
    let r = http
        .post(format!("{dozor}/hooks/comagic/{}/{}", a.tenant, a.secret))
        .json(notification)
        .send()
        .await?;
    let status = r.status();
    let answer: Value = r.json().await.unwrap_or_default();
    if !status.is_success() || answer["status"] != "accepted" {
        bail!("the receiver answered {status}: {answer}");
    }
    Ok(())
}

/// The task the daemon created for call `call_id`, found in the simulated CRM by the ledger key
/// it carries; None when the limit passed first.
async fn callback_task(
    http: &reqwest::Client,
    sim: &str,
    a: &WebhookArgs,
    call_id: u64,
    pushed: Instant,
) -> anyhow::Result<Option<Value>> {
    let marker = format!("missed_call:{}:comagic:{call_id}:task", a.tenant);
    let limit = Duration::from_secs(a.limit_secs);
    poll(pushed, limit, a.pid, || async {
        let found: Value = http
            .get(format!("{sim}/_sim/world/tasks"))
            .query(&[
                ("after_id", call_id.to_string()),
                ("contains", marker.clone()),
            ])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        found.as_array()?.first().cloned()
    })
    .await
}
