//! The HTTP server beside the daemon: /healthz (process alive), /readyz (database reachable and
//! the last cycle fresh), /metrics (OpenMetrics text), and the webhook receivers under /hooks/.
//! It listens on loopback by default: metrics name tenants and should not be public.

pub(crate) mod listen;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::store::Store;

pub(crate) mod metrics;

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
    pub(crate) fn record_cycle(&self, s: &crate::engine::CycleSummary) {
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
pub(crate) fn app(state: ServerState, token: Option<crate::config::Secret>) -> Router {
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

async fn metrics(State(s): State<ServerState>) -> impl IntoResponse {
    let out = metrics::render(&s.store, &s.health, &s.tenants).await;
    ([("content-type", metrics::CONTENT_TYPE)], out)
}

/// Binds `config.server.listen` and serves the daemon's app on it until `stop` is cancelled.
pub(crate) async fn start(
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
