//! `dozor run`: the daemon. Every `sync.interval_secs` it runs a cycle per tenant; at each
//! tenant's report time (cron, tenant time zone) it sends the daily report. The health server
//! runs beside it.
//!
//! Stopping: SIGTERM or SIGINT cancels one token that reaches the whole cycle. The sync stops
//! before its next page (each saved page keeps its cursor), the rules before the next rule or
//! action, and every client wait (rate limit, backoff, Retry-After, Telegram pacing) ends at
//! once; scheduled reports and self-checks are not started. A cycle still running
//! [`STOP_GRACE`] after the signal is abandoned (its unfinished actions stay at `intent` and are
//! reconciled at the next start), so the process exits within about 10 s, well inside the
//! unit's `TimeoutStopSec=20`. The tenant leases are renewed until the cycle has really
//! stopped, so a stopping instance never loses its claim on actions still running. A second
//! signal during the stop exits at once.

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures::FutureExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::once::{action_lines, report_key_prefix, send_report, sync_options};
use super::{Cli, CmdResult, load_config, open_store};
use crate::engine::{self, CycleOptions, CycleSummary};
use crate::report;
use crate::server::{self, Health, ServerState, webhooks};
use crate::tenant::{self, Tenant};

/// How long a cycle may go on after a stop request before it is abandoned. Cooperative stops
/// take well under a second; this bounds a request already in flight to a slow remote.
const STOP_GRACE: Duration = Duration::from_secs(8);

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

pub async fn run(cli: &Cli) -> CmdResult {
    let loaded = load_config(cli)?;
    let c = loaded.config;
    super::log_rule_modes(&c.tenants.iter().collect::<Vec<_>>(), false);
    let instance = c.cluster.instance_id();
    let ttl = Duration::from_secs(c.cluster.lease_ttl_secs);
    let store = open_store(cli, &c).await?.with_holder(&instance);
    // Cancelled on the stop signal; every client of every tenant watches it.
    let cancel = CancellationToken::new();
    let mut tenants: Vec<Tenant> = Vec::new();
    for t in &c.tenants {
        tenants.push(
            tenant::connect_until(t, &store, cancel.clone())
                .await
                .with_context(|| format!("tenant {}", t.id))?,
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    // Webhook pushes wake a tenant's cycle early; polling stays the safety net.
    let wiring = webhooks::Hooks::wire(&c.tenants);
    let wakes: Vec<Arc<tokio::sync::Notify>> = tenants
        .iter()
        .map(|t| wiring.wakes[t.id()].clone())
        .collect();
    let server_task = if c.server.enabled {
        let state = ServerState {
            store: store.clone(),
            health: health.clone(),
            stale_after: Duration::from_secs(c.sync.interval_secs * 3 + 60),
            tenants: tenants.iter().map(|t| t.id().to_string()).collect(),
            hooks: wiring.hooks.clone(),
        };
        if let Some(w) = c.server.exposure_warning() {
            tracing::warn!("{w}");
        }
        let nofile = server::listen::raise_nofile_limit();
        let listener = tokio::net::TcpListener::bind(&c.server.listen)
            .await
            .with_context(|| format!("cannot listen on {} (server.listen)", c.server.listen))?;
        tracing::info!(listen = %c.server.listen, max_connections = c.server.max_connections, open_files_limit = nofile, metrics_token = c.server.metrics_token.is_some(), "health and metrics server listening");
        let app = server::app(state, c.server.metrics_token.clone());
        let conns = Arc::new(server::listen::Connections::new(c.server.max_connections));
        Some(tokio::spawn(server::listen::serve(
            listener,
            app,
            conns,
            stop_rx.clone(),
        )))
    } else {
        None
    };
    // Bot commands: one long-polling task per tenant with a bot token.
    let bots = crate::notify::bot::spawn_all(&c.tenants, &store, &stop_rx, wiring.telegram_updates);
    spawn_stop_on_signal(stop_tx, cancel.clone());
    tracing::info!(
        tenants = tenants.len(),
        interval_secs = c.sync.interval_secs,
        "dozor running"
    );
    let opts = CycleOptions {
        dry_run: false,
        sync: sync_options(&c),
    };
    let mut stop = stop_rx.clone();
    // Per tenant, the next time each report is due: daily, weekly, monthly. A report whose
    // time passed while the daemon was down (or killed just before sending it) is due now.
    let mut next_report: Vec<[Option<chrono::DateTime<Utc>>; 3]> = Vec::new();
    for t in &tenants {
        let mut due = REPORT_KINDS.map(|k| next_fire(schedule_of(&t.cfg, k), t.tz()));
        for (k, kind) in REPORT_KINDS.into_iter().enumerate() {
            if let Some(at) = missed_report(&store, t, kind, Utc::now()).await {
                tracing::info!(tenant = t.id(), kind = kind.as_str(), scheduled = %at, "report time passed while stopped: sending it now");
                due[k] = Some(at);
            }
        }
        next_report.push(due);
    }
    // Stopped only after the loop: a cycle winding down still holds its tenants' leases.
    let renewer_stop = CancellationToken::new();
    let renewer = spawn_lease_renewer(store.clone(), instance.clone(), ttl, renewer_stop.clone());
    let interval = Duration::from_secs(c.sync.interval_secs);
    // Tenants held by others are looked at every tick (a tenth of the lease TTL) so a dead
    // holder's tenants are taken over soon after its lease expires, not a polling interval later.
    let tick = interval.min(ttl / 10).max(Duration::from_millis(200));
    let mut held = vec![false; tenants.len()];
    let mut webhook_watch = server::selfcheck::WebhookWatch::new(Utc::now());
    let wiring_hooks = wiring.hooks.clone();
    let mut last_run: Vec<Option<std::time::Instant>> = vec![None; tenants.len()];
    tracing::info!(instance = %instance, lease_ttl_secs = ttl.as_secs(), "tenant leases");
    let mut woken: Vec<bool> = vec![false; tenants.len()];
    loop {
        // Each instance takes at most its fair share of the tenants, so a cluster spreads them.
        let live = store.heartbeat(&instance, ttl).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot record the instance heartbeat");
            1
        });
        let share = tenants.len().div_ceil(live);
        for (i, t) in tenants.iter().enumerate() {
            if *stop.borrow() {
                break;
            }
            // A webhook push wakes its tenant early; polling stays the safety net.
            if !woken[i] && last_run[i].is_some_and(|at| at.elapsed() < interval) {
                continue;
            }
            woken[i] = false;
            if !held[i] && held.iter().filter(|h| **h).count() >= share {
                continue;
            }
            match store.acquire_lease(t.id(), &instance, ttl).await {
                Ok(Some(epoch)) => {
                    if !held[i] {
                        tracing::info!(tenant = t.id(), epoch, "tenant lease taken");
                        held[i] = true;
                    }
                }
                Ok(None) => {
                    if held[i] {
                        tracing::warn!(tenant = t.id(), "tenant lease lost to another instance");
                    }
                    held[i] = false;
                    continue;
                }
                Err(e) => {
                    tracing::error!(tenant = t.id(), error = %e, "cannot take the tenant lease");
                    continue;
                }
            }
            let step = async {
                let s = engine::run_cycle_until(&store, t, opts, &cancel).await;
                last_run[i] = Some(std::time::Instant::now());
                health.record_cycle(&s);
                if s.stopped {
                    return;
                }
                after_cycle(&store, t, &s, &c, &mut webhook_watch, &wiring_hooks).await;
                for (k, kind) in REPORT_KINDS.into_iter().enumerate() {
                    if cancel.is_cancelled() {
                        return;
                    }
                    if let Some(at) = next_report[i][k]
                        && Utc::now() >= at
                    {
                        scheduled_report(&store, t, kind, at).await;
                        next_report[i][k] = next_fire(schedule_of(&t.cfg, kind), t.tz());
                    }
                }
            };
            if !within_grace(step, &cancel).await {
                tracing::warn!(
                    tenant = t.id(),
                    grace_secs = STOP_GRACE.as_secs(),
                    "the cycle did not stop in time and was abandoned; its unfinished actions stay at intent and are reconciled at the next start"
                );
            }
        }
        if *stop.borrow() {
            break;
        }
        // Over its share (another instance joined): hand one tenant back between cycles.
        if held.iter().filter(|h| **h).count() > share
            && let Some(i) = held.iter().rposition(|h| *h)
        {
            match store.release_lease(tenants[i].id(), &instance).await {
                Ok(()) => {
                    tracing::info!(tenant = tenants[i].id(), live, "tenant lease handed over");
                    held[i] = false;
                }
                Err(e) => tracing::warn!(error = %e, "cannot release a tenant lease"),
            }
        }
        // A push during a cycle left a permit in its Notify, so it is not lost. A push for a
        // tenant another instance holds is left to that instance's polling.
        let any_wake = async {
            if wakes.is_empty() {
                std::future::pending::<usize>().await
            } else {
                futures::future::select_all(wakes.iter().map(|w| Box::pin(w.notified())))
                    .await
                    .1
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {},
            i = any_wake => woken[i] = true,
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    renewer_stop.cancel();
    let _ = renewer.await;
    for (i, t) in tenants.iter().enumerate() {
        if held[i]
            && let Err(e) = store.release_lease(t.id(), &instance).await
        {
            tracing::warn!(tenant = t.id(), error = %e, "cannot release the tenant lease");
        }
    }
    if let Err(e) = store.forget_instance(&instance).await {
        tracing::warn!(error = %e, "cannot remove the instance heartbeat");
    }
    if let Some(task) = server_task {
        let _ = task.await;
    }
    for bot in bots {
        let _ = bot.await;
    }
    store.close().await;
    tracing::info!("dozor stopped");
    Ok(ExitCode::SUCCESS)
}

/// On the first SIGTERM/SIGINT: tells the server and the bots (`stop_tx`) and the cycle
/// (`cancel`) to stop. On a second one: exits at once, status 1 (the ledger finishes at the
/// next start whatever was cut short).
fn spawn_stop_on_signal(stop_tx: watch::Sender<bool>, cancel: CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(
            grace_secs = STOP_GRACE.as_secs(),
            "stop requested: ending the current cycle; a second signal exits at once"
        );
        let _ = stop_tx.send(true);
        cancel.cancel();
        shutdown_signal().await;
        tracing::warn!("second stop signal: exiting now");
        std::process::exit(1);
    });
}

/// Runs `step` to its end, or until [`STOP_GRACE`] after `cancel`; `false` if it was abandoned.
async fn within_grace(
    step: impl std::future::Future<Output = ()>,
    cancel: &CancellationToken,
) -> bool {
    let deadline = async {
        cancel.cancelled().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        _ = step => true,
        _ = deadline => false,
    }
}

/// The self-checks after a complete cycle (webhook silence, sync failures, dead credentials).
async fn after_cycle(
    store: &crate::store::Store,
    t: &Tenant,
    s: &CycleSummary,
    c: &crate::config::Config,
    webhook_watch: &mut server::selfcheck::WebhookWatch,
    hooks: &webhooks::Hooks,
) {
    let silent = webhook_watch.after_cycle(
        &t.cfg,
        s,
        |source| hooks.last_delivery(t.id(), source),
        Utc::now(),
    );
    // A panic in a check costs this round of checks, not the daemon.
    let checks = server::selfcheck::run(store, t, s, &c.selfcheck, Some(&c.data_dir), &silent);
    if std::panic::AssertUnwindSafe(checks)
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::error!(
            tenant = t.id(),
            "self-checks panicked; they run again after the next cycle"
        );
    }
}

/// Keeps this instance's leases alive while a long cycle runs (an initial sync can take minutes),
/// renewing at a third of the TTL, until `stop` is cancelled (after the last cycle has ended).
fn spawn_lease_renewer(
    store: crate::store::Store,
    instance: String,
    ttl: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ttl / 3) => {},
                _ = stop.cancelled() => return,
            }
            if let Err(e) = store.heartbeat(&instance, ttl).await {
                tracing::warn!(error = %e, "cannot record the instance heartbeat");
            }
            if let Err(e) = store.renew_leases(&instance, ttl).await {
                tracing::warn!(error = %e, "cannot renew tenant leases");
            }
        }
    })
}

/// Next time a cron expression fires, evaluated in the tenant's time zone.
fn next_fire(expr: &str, tz: chrono_tz::Tz) -> Option<chrono::DateTime<Utc>> {
    let schedule = cron::Schedule::from_str(expr).ok()?;
    schedule.upcoming(tz).next().map(|t| t.with_timezone(&Utc))
}

/// The last time a cron expression fired at or before `now`, in the tenant's time zone.
fn last_fire(
    expr: &str,
    tz: chrono_tz::Tz,
    now: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    let schedule = cron::Schedule::from_str(expr).ok()?;
    let after = now.with_timezone(&tz) + chrono::Duration::seconds(1);
    schedule
        .after(&after)
        .next_back()
        .map(|t| t.with_timezone(&Utc))
}

/// The scheduled time of a `kind` report that should have gone out and did not: its last
/// scheduled time has passed, and the ledger holds no report for the period it covers. Only
/// for a tenant that has had this report before: a fresh install starts with the next
/// scheduled one instead of a burst of back reports.
async fn missed_report(
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

const REPORT_KINDS: [report::Kind; 3] = [
    report::Kind::Daily,
    report::Kind::Weekly,
    report::Kind::Monthly,
];

fn schedule_of(cfg: &crate::config::TenantConfig, kind: report::Kind) -> &str {
    match kind {
        report::Kind::Daily => &cfg.reports.daily,
        report::Kind::Weekly => &cfg.reports.weekly,
        report::Kind::Monthly => &cfg.reports.monthly,
    }
}

/// Builds the report of the last period complete at `at` (its scheduled time) and sends it;
/// the ledger key makes a restart around the scheduled time send it once.
async fn scheduled_report(
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

    #[test]
    fn last_fire_is_the_latest_scheduled_time_not_after_now() {
        let tz = chrono_tz::Europe::Moscow;
        // 09:00 Moscow = 06:00 UTC, every day; dozor starts at 10:30 Moscow.
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 7, 30, 0).unwrap();
        assert_eq!(
            last_fire("0 0 9 * * *", tz, now),
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 6, 0, 0).unwrap())
        );
        // Before 09:00 the last one is yesterday's.
        let early = Utc.with_ymd_and_hms(2026, 12, 2, 5, 0, 0).unwrap();
        assert_eq!(
            last_fire("0 0 9 * * *", tz, early),
            Some(Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap())
        );
        // Exactly at the time counts as fired.
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 6, 0, 0).unwrap();
        assert_eq!(last_fire("0 0 9 * * *", tz, at), Some(at));
        // Weekly on Monday (2026-11-30 was a Monday).
        assert_eq!(
            last_fire("0 0 9 * * Mon", tz, now),
            Some(Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap())
        );
        assert_eq!(last_fire("not cron", tz, now), None);
    }
}
