//! The daemon as a library service: `run` works every tenant until its `shutdown` token is
//! cancelled. Every `sync.interval_secs` it runs a cycle per tenant; at each tenant's report
//! time (cron, tenant time zone) it sends the report. Its parts:
//! - `scheduler`: the report schedule, and reports missed while stopped;
//! - `leases`: which instance works on which tenant, renewed while a cycle runs;
//! - [`selfcheck`]: the operational checks after every cycle;
//! - [`server`]: health, metrics and the webhook receivers; the bots answer beside it.
//!
//! Stopping: cancelling `shutdown` reaches the whole cycle, the server and the bots. The sync
//! stops before its next page (each saved page keeps its cursor), the rules before the next
//! rule or action, and every client wait (rate limit, backoff, Retry-After, Telegram pacing)
//! ends at once; scheduled reports and self-checks are not started. A cycle still running
//! `STOP_GRACE` after the stop is abandoned (its unfinished actions stay at `intent` and are
//! reconciled at the next start), so the process exits within about 10 s, well inside the
//! unit's `TimeoutStopSec=20`. The tenant leases are renewed until the cycle has really
//! stopped, so a stopping instance never loses its claim on actions still running.

pub(crate) mod leases;
pub(crate) mod reports;
pub(crate) mod scheduler;
pub mod selfcheck;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{self, CycleOptions};
use crate::store::Store;
use crate::tenant::{self, Tenant};
use scheduler::{REPORT_KINDS, next_fire, schedule_of, scheduled_report};
use server::{Health, ServerState, webhooks};

/// How long a cycle may go on after a stop request before it is abandoned. Cooperative stops
/// take well under a second; this bounds a request already in flight to a slow remote.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(8);

/// Runs the daemon for every tenant of `c` on `store` (opened with this instance as lease
/// holder) until `shutdown` is cancelled; then releases the leases and closes the store.
// Long: the daemon's top loop with its shutdown handling in one place, so every task's start and
// drain can be read together.
pub(crate) async fn run(
    c: &Config,
    store: Store,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let instance = c.cluster.instance_id();
    let ttl = Duration::from_secs(c.cluster.lease_ttl_secs);
    let mut tenants: Vec<Tenant> = Vec::new();
    for t in &c.tenants {
        tenants.push(
            tenant::connect_until(t, &store, shutdown.clone())
                .await
                .with_context(|| format!("tenant {}", t.id))?,
        );
    }
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
        Some(server::start(c, state, shutdown.clone()).await?)
    } else {
        None
    };
    // Bot commands: one long-polling task per tenant with a bot token.
    let bots = crate::bot::spawn_all(&c.tenants, &store, &shutdown, wiring.telegram_updates);
    tracing::info!(
        tenants = tenants.len(),
        interval_secs = c.sync.interval_secs,
        "dozor running"
    );
    let opts = CycleOptions {
        dry_run: false,
        sync: engine::sync_options(c),
        now: None,
    };
    let mut next_report = scheduler::first_due(&store, &tenants).await;
    // Stopped only after the loop: a cycle winding down still holds its tenants' leases.
    let renewer_stop = CancellationToken::new();
    let renewer = leases::spawn_renewer(store.clone(), instance.clone(), ttl, renewer_stop.clone());
    let interval = Duration::from_secs(c.sync.interval_secs);
    // Tenants held by others are looked at every tick (a tenth of the lease TTL) so a dead
    // holder's tenants are taken over soon after its lease expires, not a polling interval later.
    let tick = interval.min(ttl / 10).max(Duration::from_millis(200));
    let mut held = vec![false; tenants.len()];
    let mut webhook_watch = selfcheck::WebhookWatch::new(Utc::now());
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
            if shutdown.is_cancelled() {
                break;
            }
            // A webhook push wakes its tenant early; polling stays the safety net.
            if !woken[i] && last_run[i].is_some_and(|at| at.elapsed() < interval) {
                continue;
            }
            let trigger = if std::mem::take(&mut woken[i]) {
                engine::Trigger::Push
            } else {
                engine::Trigger::Schedule
            };
            if !held[i] && held.iter().filter(|h| **h).count() >= share {
                continue;
            }
            if !leases::take(&store, t, &instance, ttl, &mut held[i]).await {
                continue;
            }
            let step = async {
                let s = engine::run_cycle_until(&store, t, opts, trigger, &shutdown).await;
                last_run[i] = Some(std::time::Instant::now());
                health.record_cycle(&s);
                if s.stopped {
                    return;
                }
                selfcheck::after_cycle(&store, t, &s, c, &mut webhook_watch, &wiring_hooks).await;
                for (k, kind) in REPORT_KINDS.into_iter().enumerate() {
                    if shutdown.is_cancelled() {
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
            if !within_grace(step, &shutdown).await {
                tracing::warn!(
                    tenant = t.id(),
                    grace_secs = STOP_GRACE.as_secs(),
                    "the cycle did not stop in time and was abandoned; its unfinished actions stay at intent and are reconciled at the next start"
                );
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        leases::hand_back_over_share(&store, &tenants, &instance, &mut held, share, live).await;
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
            _ = shutdown.cancelled() => break,
        }
    }
    renewer_stop.cancel();
    let _ = renewer.await;
    leases::release_all(&store, &tenants, &instance, &held).await;
    if let Some(task) = server_task {
        let _ = task.await;
    }
    for bot in bots {
        let _ = bot.await;
    }
    store.close().await;
    tracing::info!("dozor stopped");
    Ok(())
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
