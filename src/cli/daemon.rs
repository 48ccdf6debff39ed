//! `dozor run`: the daemon. Every `sync.interval_secs` it runs a cycle per tenant; at each
//! tenant's report time (cron, tenant time zone) it sends the daily report. The health server
//! runs beside it. SIGTERM or SIGINT stops it between steps: the cycle in progress finishes its
//! current page and the ledger keeps any half-done action for the next start.

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::watch;

use super::once::{action_lines, send_daily, sync_options};
use super::{Cli, CmdResult, load_config, open_store};
use crate::engine::{self, CycleOptions};
use crate::report;
use crate::server::{self, Health, ServerState};
use crate::tenant::{self, Tenant};

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
    let store = open_store(&c).await?;
    let mut tenants: Vec<Tenant> = Vec::new();
    for t in &c.tenants {
        tenants.push(
            tenant::connect(t, &store)
                .await
                .with_context(|| format!("tenant {}", t.id))?,
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    let server_task = if c.server.enabled {
        let state = ServerState {
            store: store.clone(),
            health: health.clone(),
            stale_after: Duration::from_secs(c.sync.interval_secs * 3 + 60),
            tenants: tenants.iter().map(|t| t.id().to_string()).collect(),
        };
        let listener = tokio::net::TcpListener::bind(&c.server.listen)
            .await
            .with_context(|| format!("cannot listen on {} (server.listen)", c.server.listen))?;
        tracing::info!(listen = %c.server.listen, "health and metrics server listening");
        let mut rx = stop_rx.clone();
        Some(tokio::spawn(async move {
            let _ = axum::serve(listener, server::router(state))
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        }))
    } else {
        None
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stop requested; finishing the current step");
        let _ = stop_tx.send(true);
    });
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
    let mut next_report: Vec<Option<chrono::DateTime<Utc>>> = tenants
        .iter()
        .map(|t| next_fire(&t.cfg.reports.daily, t.tz()))
        .collect();
    loop {
        for (i, t) in tenants.iter().enumerate() {
            if *stop.borrow() {
                break;
            }
            let s = engine::run_cycle(&store, t, opts).await;
            health.record_cycle(&s);
            server::selfcheck::run(&store, t, &s, &c.selfcheck, Some(&c.data_dir), &[]).await;
            if let Some(at) = next_report[i]
                && Utc::now() >= at
            {
                daily_report(&store, t).await;
                next_report[i] = next_fire(&t.cfg.reports.daily, t.tz());
            }
        }
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(c.sync.interval_secs)) => {},
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if let Some(task) = server_task {
        let _ = task.await;
    }
    store.close().await;
    tracing::info!("dozor stopped");
    Ok(ExitCode::SUCCESS)
}

/// Next time a cron expression fires, evaluated in the tenant's time zone.
fn next_fire(expr: &str, tz: chrono_tz::Tz) -> Option<chrono::DateTime<Utc>> {
    let schedule = cron::Schedule::from_str(expr).ok()?;
    schedule.upcoming(tz).next().map(|t| t.with_timezone(&Utc))
}

async fn daily_report(store: &crate::store::Store, t: &Tenant) {
    let now = Utc::now();
    let day = report::local_date(&t.cfg, now) - chrono::Duration::days(1);
    let result = async {
        let actions = action_lines(store, t.id()).await?;
        let rep = report::daily(store, &t.cfg, day, now, &actions).await?;
        send_daily(store, t, &rep).await
    }
    .await;
    match result {
        Ok(outcome) => tracing::info!(tenant = t.id(), %day, ?outcome, "daily report"),
        Err(e) => tracing::error!(tenant = t.id(), %day, error = %e, "daily report failed"),
    }
}
