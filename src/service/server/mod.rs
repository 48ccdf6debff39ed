//! The HTTP server beside the daemon: /healthz (process alive), /readyz (database reachable and
//! the last cycle fresh), /metrics (Prometheus text format), and the webhook receivers under /hooks/.
//! It listens on loopback by default: metrics name tenants and should not be public.

pub mod listen;
pub mod webhooks;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::store::Store;

pub mod metrics;

/// What the daemon reports to the server as it runs.
#[derive(Default)]
pub struct Health {
    inner: Mutex<HealthInner>,
}

#[derive(Default)]
struct HealthInner {
    /// tenant -> (finished at, ok, duration)
    last_cycle: BTreeMap<String, (Instant, bool, Duration)>,
    cycles_total: BTreeMap<(String, bool), u64>,
    /// (tenant, source) -> items synced in total
    synced_items: BTreeMap<(String, String), u64>,
}

impl Health {
    pub fn record_cycle(&self, s: &crate::engine::CycleSummary) {
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        h.last_cycle
            .insert(s.tenant.clone(), (Instant::now(), s.ok(), s.elapsed));
        *h.cycles_total
            .entry((s.tenant.clone(), s.ok()))
            .or_default() += 1;
        for r in &s.synced {
            *h.synced_items
                .entry((s.tenant.clone(), r.source.clone()))
                .or_default() += r.total() as u64;
        }
    }
}

/// Shared server state.
#[derive(Clone)]
pub struct ServerState {
    pub store: Store,
    pub health: Arc<Health>,
    /// A cycle older than this makes /readyz fail.
    pub stale_after: Duration,
    pub tenants: Vec<String>,
    /// Webhook receivers (see [`webhooks`]).
    pub hooks: Arc<webhooks::Hooks>,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(webhooks::routes())
        .with_state(state)
}

/// The daemon's app: [`router`], with /metrics behind `token` when one is configured.
pub fn app(state: ServerState, token: Option<crate::config::Secret>) -> Router {
    let app = router(state);
    match token {
        Some(token) => app.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let token = token.clone();
                async move { metrics_gate(&token, req, next).await }
            },
        )),
        None => app,
    }
}

/// Lets a /metrics request through only with `Authorization: Bearer TOKEN`; other paths pass.
async fn metrics_gate(
    token: &crate::config::Secret,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.uri().path() != "/metrics" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = presented
        .is_some_and(|p| webhooks::constant_time_eq(p.as_bytes(), token.expose().as_bytes()));
    if ok {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
        "/metrics needs `Authorization: Bearer TOKEN` (server.metrics_token)\n",
    )
        .into_response()
}

async fn readyz(State(s): State<ServerState>) -> impl IntoResponse {
    if let Err(e) = s.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}\n"));
    }
    let h = s.health.inner.lock().unwrap_or_else(|e| e.into_inner());
    for t in &s.tenants {
        match h.last_cycle.get(t) {
            None => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{t}: no cycle finished yet\n"),
                );
            }
            Some((at, _, _)) if at.elapsed() > s.stale_after => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{t}: last cycle {} s ago\n", at.elapsed().as_secs()),
                );
            }
            _ => {}
        }
    }
    (StatusCode::OK, "ready\n".to_string())
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(s): State<ServerState>) -> impl IntoResponse {
    let mut out = String::new();
    {
        let h = s.health.inner.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP dozor_cycles_total Finished cycles by tenant and outcome.\n# TYPE dozor_cycles_total counter\n");
        for ((t, ok), n) in &h.cycles_total {
            let _ = writeln!(
                out,
                "dozor_cycles_total{{tenant=\"{}\",ok=\"{ok}\"}} {n}",
                label(t)
            );
        }
        out.push_str("# HELP dozor_cycle_duration_seconds Duration of the last cycle.\n# TYPE dozor_cycle_duration_seconds gauge\n");
        for (t, (_, _, d)) in &h.last_cycle {
            let _ = writeln!(
                out,
                "dozor_cycle_duration_seconds{{tenant=\"{}\"}} {:.3}",
                label(t),
                d.as_secs_f64()
            );
        }
        out.push_str("# HELP dozor_cycle_age_seconds Seconds since the last cycle finished.\n# TYPE dozor_cycle_age_seconds gauge\n");
        for (t, (at, _, _)) in &h.last_cycle {
            let _ = writeln!(
                out,
                "dozor_cycle_age_seconds{{tenant=\"{}\"}} {}",
                label(t),
                at.elapsed().as_secs()
            );
        }
        out.push_str("# HELP dozor_synced_items_total Records saved to the mirror.\n# TYPE dozor_synced_items_total counter\n");
        for ((t, src), n) in &h.synced_items {
            let _ = writeln!(
                out,
                "dozor_synced_items_total{{tenant=\"{}\",source=\"{}\"}} {n}",
                label(t),
                label(src)
            );
        }
    }
    out.push_str("# HELP dozor_last_sync_timestamp_seconds Start of the last sync run per source.\n# TYPE dozor_last_sync_timestamp_seconds gauge\n");
    out.push_str("# HELP dozor_last_sync_ok Whether the last sync run per source succeeded.\n# TYPE dozor_last_sync_ok gauge\n");
    for t in &s.tenants {
        if let Ok(runs) = s.store.last_sync_runs(t).await {
            for r in runs {
                let _ = writeln!(
                    out,
                    "dozor_last_sync_timestamp_seconds{{tenant=\"{}\",source=\"{}\"}} {}",
                    label(t),
                    label(&r.source),
                    r.started_at.timestamp()
                );
                let _ = writeln!(
                    out,
                    "dozor_last_sync_ok{{tenant=\"{}\",source=\"{}\"}} {}",
                    label(t),
                    label(&r.source),
                    u8::from(r.ok)
                );
            }
        }
    }
    crate::telemetry::render_process(&mut out);
    metrics::render_store(&s.store, &s.tenants, &mut out).await;
    ([("content-type", "text/plain; version=0.0.4")], out)
}

/// Binds `config.server.listen` and serves the daemon's app on it until `stop` is cancelled.
pub async fn start(
    c: &crate::config::Config,
    state: ServerState,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context as _;
    if let Some(w) = c.server.exposure_warning() {
        tracing::warn!("{w}");
    }
    let nofile = listen::raise_nofile_limit();
    let listener = tokio::net::TcpListener::bind(&c.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", c.server.listen))?;
    tracing::info!(listen = %c.server.listen, max_connections = c.server.max_connections, open_files_limit = nofile, metrics_token = c.server.metrics_token.is_some(), "health and metrics server listening");
    let app = app(state, c.server.metrics_token.clone());
    let conns = Arc::new(listen::Connections::new(c.server.max_connections));
    Ok(tokio::spawn(listen::serve(listener, app, conns, stop)))
}
