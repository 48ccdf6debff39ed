//! The simulator: stateful fakes of Bitrix24, amoCRM, CoMagic, Calltouch and the Telegram Bot API,
//! served by one axum server on loopback and filled by a seeded generator.
//!
//! Each fake lives under its own path prefix so one port serves all five and requests can be
//! counted per system:
//!
//! | system    | base URL a client is given                      |
//! |-----------|-------------------------------------------------|
//! | Bitrix24  | `{base}/b24/rest/1/{secret}/` (webhook), `{base}/b24` (OAuth portal) |
//! | amoCRM    | `{base}/amo`                                   |
//! | CoMagic   | `{base}/comagic/v2.0`                          |
//! | Calltouch | `{base}/calltouch`                             |
//! | Telegram  | `{base}/telegram`                              |
//!
//! Control endpoints (`/_sim/...`) set faults, read request counts, inspect the world and move it
//! on (see `control`).

pub mod amocrm;
pub mod bitrix24;
pub mod calltouch;
pub mod churn;
pub mod comagic;
mod control;
pub mod generate;
pub mod php_query;
pub mod telegram;
pub mod tenant_config;
pub mod urls;
pub mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use world::World;

/// The systems the simulator fakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Bitrix24,
    Amocrm,
    Comagic,
    Calltouch,
    Telegram,
}

impl System {
    pub const ALL: [System; 5] = [
        System::Bitrix24,
        System::Amocrm,
        System::Comagic,
        System::Calltouch,
        System::Telegram,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            System::Bitrix24 => "bitrix24",
            System::Amocrm => "amocrm",
            System::Comagic => "comagic",
            System::Calltouch => "calltouch",
            System::Telegram => "telegram",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// How the simulator is started.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    pub scale: u32,
    /// The scenario's "now"; the real clock when `None`.
    pub anchor: Option<chrono::DateTime<chrono::Utc>>,
    /// Enforce the real services' rate limits (Bitrix24 2 req/s burst 50, amoCRM 7 req/s, ...).
    pub enforce_limits: bool,
    /// Bitrix24 Enterprise plan limits (5 req/s, burst 250) instead of the standard ones.
    pub b24_enterprise: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 1,
            scale: 1,
            anchor: None,
            enforce_limits: true,
            b24_enterprise: false,
        }
    }
}

/// The credentials the fakes accept. Fixed so that tests, `dozor demo` and `dozor sim` users
/// know them; `dozor sim` prints them at start.
#[derive(Debug, Clone, Serialize)]
pub struct Credentials {
    pub b24_webhook_user: u64,
    pub b24_webhook_secret: String,
    pub b24_client_id: String,
    pub b24_client_secret: String,
    pub b24_refresh_token: String,
    /// Token that authenticates outbound event deliveries (`auth[application_token]`).
    pub b24_application_token: String,
    pub amo_client_id: String,
    pub amo_client_secret: String,
    pub amo_redirect_uri: String,
    pub amo_refresh_token: String,
    pub amo_long_lived_token: String,
    pub comagic_access_token: String,
    pub calltouch_site_id: u64,
    pub calltouch_client_api_id: String,
    pub telegram_bot_token: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            b24_webhook_user: 1,
            b24_webhook_secret: "sim4webhook8secret".into(),
            b24_client_id: "local.sim0000000001".into(),
            b24_client_secret: "sim-b24-client-secret".into(),
            b24_refresh_token: "sim-b24-refresh-0".into(),
            b24_application_token: "sim-b24-app-token".into(),
            amo_client_id: "00000000-0000-4000-8000-000000000001".into(),
            amo_client_secret: "sim-amo-client-secret".into(),
            amo_redirect_uri: "https://dozor.example/oauth/amocrm".into(),
            amo_refresh_token: "def50200sim-refresh-0".into(),
            amo_long_lived_token: "sim-amo-long-lived-token".into(),
            comagic_access_token: "sim-comagic-access-token".into(),
            calltouch_site_id: 51234,
            calltouch_client_api_id: "sim-calltouch-api-id".into(),
            telegram_bot_token: "123456789:SIMtelegramBotTokenAAAAAAAAAAAAAAAA".into(),
        }
    }
}

/// Misbehaviour to inject into one system. Counters are consumed request by request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Extra latency added to every request, in milliseconds.
    pub latency_ms: u64,
    /// The next N requests answer a 5xx error (500, or the system's own overload error).
    pub http_5xx: u32,
    /// The next N requests answer the system's rate-limit error (B24 503 QUERY_LIMIT_EXCEEDED,
    /// amoCRM 429, CoMagic -32029, Calltouch 429, Telegram 429 with retry_after).
    pub throttle: u32,
    /// Invalidate every access token issued so far (clients must refresh or fail with auth).
    pub expire_tokens: bool,
    /// The next N successful responses have a truncated, unparsable JSON body.
    pub malformed_json: u32,
    /// An outage: while set, every request answers a 5xx error (counters are not consumed).
    pub down: bool,
    /// While set, this share of requests (0–100 %, spread evenly) answers the rate-limit
    /// error: a storm that lasts, not a burst a few retries get through.
    pub throttle_percent: u32,
    /// The next N requests get an answer that never ends: `200`, a JSON opening, then padding
    /// streamed without a Content-Length until the client hangs up (or 256 MiB). Served in
    /// front of the fake (the request is not counted): a runaway proxy or endpoint.
    pub oversized: u32,
}

/// What a fake must do to the request it is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    None,
    Http5xx,
    Throttle,
    /// Serve normally, but corrupt the body (see [`corrupt`]).
    Malformed,
}

/// A change to the world a test schedules between two requests (see [`Sim::after_requests`]).
pub type WorldEdit = Box<dyn FnOnce(&mut World) + Send>;

/// A scheduled [`WorldEdit`]: runs when the request after the `after`-th matching one arrives.
struct Hook {
    system: System,
    /// The stats key to count (`GET /api/v4/leads`, `batch`, ...).
    method: String,
    after: u64,
    seen: u64,
    edit: Option<WorldEdit>,
}

/// Per-system request counts, by method (Bitrix24 method, amoCRM path, JSON-RPC method...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub by_method: BTreeMap<String, u64>,
    /// Requests refused by the rate limit (real or injected).
    pub throttled: u64,
}

/// The shared state behind every fake.
pub struct Sim {
    pub opts: SimOptions,
    pub creds: Credentials,
    world: Mutex<World>,
    faults: Mutex<BTreeMap<System, Faults>>,
    stats: Mutex<BTreeMap<System, Stats>>,
    hooks: Mutex<Vec<Hook>>,
    pub b24: bitrix24::State,
    pub amo: amocrm::State,
    pub comagic: comagic::State,
    pub calltouch: calltouch::State,
    pub telegram: telegram::State,
}

impl Sim {
    pub fn new(opts: SimOptions) -> Arc<Sim> {
        let anchor = opts.anchor.unwrap_or_else(chrono::Utc::now);
        let world = generate::generate(opts.seed, opts.scale, anchor);
        Self::with_world(opts, world)
    }

    pub fn with_world(opts: SimOptions, world: World) -> Arc<Sim> {
        let creds = Credentials::default();
        Arc::new(Sim {
            b24: bitrix24::State::new(&opts, &creds),
            amo: amocrm::State::new(&opts, &creds),
            comagic: comagic::State::new(&opts, &creds),
            calltouch: calltouch::State::new(&opts, &creds),
            telegram: telegram::State::new(&opts, &creds),
            opts,
            creds,
            world: Mutex::new(world),
            faults: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(BTreeMap::new()),
            hooks: Mutex::new(Vec::new()),
        })
    }

    /// The world, locked. Keep the guard short: never hold it across an await.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_faults(&self, system: System, faults: Faults) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(system, faults);
    }

    pub fn faults(&self, system: System) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&system)
            .cloned()
            .unwrap_or_default()
    }

    /// Schedules `edit` to run on the world once `after` requests with stats key `method` have
    /// reached `system`, just before the next such request is served. Tests use it to change
    /// the CRM between two pages of one pass (a record deleted after page 1 was read), which a
    /// fault counter cannot express.
    pub fn after_requests(
        &self,
        system: System,
        method: &str,
        after: u64,
        edit: impl FnOnce(&mut World) + Send + 'static,
    ) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Hook {
                system,
                method: method.to_string(),
                after,
                seen: 0,
                edit: Some(Box::new(edit)),
            });
    }

    /// Runs the hooks due at this request; each runs once.
    fn run_hooks(&self, system: System, method: &str) {
        let due: Vec<WorldEdit> = {
            let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
            let due = hooks
                .iter_mut()
                .filter(|h| h.system == system && h.method == method)
                .filter_map(|h| {
                    let now_due = h.seen == h.after;
                    h.seen += 1;
                    if now_due { h.edit.take() } else { None }
                })
                .collect();
            hooks.retain(|h| h.edit.is_some());
            due
        };
        for edit in due {
            edit(&mut self.world());
        }
    }

    /// Called by a fake at the start of each request: counts it, runs due world edits, sleeps
    /// the injected latency and says which injected failure (if any) this request gets.
    pub async fn on_request(&self, system: System, method: &str) -> Injected {
        let n = {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            let s = stats.entry(system).or_default();
            s.requests += 1;
            *s.by_method.entry(method.to_string()).or_default() += 1;
            s.requests
        };
        self.run_hooks(system, method);
        let (latency, injected) = {
            let mut all = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            let f = all.entry(system).or_default();
            let injected = if f.down {
                Injected::Http5xx
            } else if f.http_5xx > 0 {
                f.http_5xx -= 1;
                Injected::Http5xx
            } else if f.throttle > 0 {
                f.throttle -= 1;
                Injected::Throttle
            } else if f.throttle_percent > 0
                && n * u64::from(f.throttle_percent.min(100)) / 100
                    != (n - 1) * u64::from(f.throttle_percent.min(100)) / 100
            {
                // The n-th request is refused when it moves floor(n × share) on: an even spread.
                Injected::Throttle
            } else if f.malformed_json > 0 {
                f.malformed_json -= 1;
                Injected::Malformed
            } else {
                Injected::None
            };
            (f.latency_ms, injected)
        };
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if injected == Injected::Throttle {
            self.count_throttled(system);
        }
        injected
    }

    /// Records a request refused by a rate limit.
    pub fn count_throttled(&self, system: System) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.entry(system).or_default().throttled += 1;
    }

    /// True once after `expire_tokens` was set for `system`: the fake then forgets its tokens.
    pub fn take_expire_tokens(&self, system: System) -> bool {
        let mut all = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let f = all.entry(system).or_default();
        std::mem::take(&mut f.expire_tokens)
    }

    pub fn stats(&self) -> BTreeMap<System, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn reset_stats(&self) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Cuts a JSON body in half so that it no longer parses (the `malformed_json` fault).
pub fn corrupt(body: &[u8]) -> Vec<u8> {
    let keep = (body.len() / 2).max(1).min(body.len());
    body[..keep].to_vec()
}

/// The full router: every fake under its prefix plus the control endpoints.
pub fn router(sim: Arc<Sim>) -> Router {
    let control = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/faults/{system}", post(set_faults).get(get_faults))
        .route("/stats", get(get_stats).delete(reset_stats))
        .route("/credentials", get(get_credentials))
        .route("/summary", get(summary))
        .route("/tenant_config", get(control::tenant_config))
        .route("/world/churn", post(control::churn))
        .route("/world/missed_call", post(control::missed_call))
        .route("/world/tasks", get(control::tasks))
        .with_state(sim.clone());
    let apis = Router::new()
        .nest("/b24", bitrix24::router(sim.clone()))
        .nest("/amo", amocrm::router(sim.clone()))
        .nest("/comagic", comagic::router(sim.clone()))
        .nest("/calltouch", calltouch::router(sim.clone()))
        .nest("/telegram", telegram::router(sim.clone()))
        .layer(axum::middleware::from_fn_with_state(sim, oversize));
    Router::new().nest("/_sim", control).merge(apis)
}

/// The `oversized` fault: answers in place of the fake with a body that does not end.
async fn oversize(
    State(sim): State<Arc<Sim>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let prefix = req.uri().path().split('/').nth(1).unwrap_or_default();
    let system = match prefix {
        "b24" => Some(System::Bitrix24),
        "amo" => Some(System::Amocrm),
        "comagic" => Some(System::Comagic),
        "calltouch" => Some(System::Calltouch),
        "telegram" => Some(System::Telegram),
        _ => None,
    };
    let fire = system.is_some_and(|s| {
        let mut all = sim.faults.lock().unwrap_or_else(|e| e.into_inner());
        let f = all.entry(s).or_default();
        let fire = f.oversized > 0;
        f.oversized = f.oversized.saturating_sub(1);
        fire
    });
    if !fire {
        return next.run(req).await;
    }
    const CHUNK: usize = 1 << 20;
    let pad = bytes::Bytes::from(vec![b' '; CHUNK]);
    let head = bytes::Bytes::from_static(b"{\"result\": [");
    let body = futures::stream::iter(
        std::iter::once(head)
            .chain(std::iter::repeat_n(pad, 256))
            .map(Ok::<_, std::convert::Infallible>),
    );
    axum::response::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(body))
        .unwrap_or_default()
}

async fn set_faults(
    State(sim): State<Arc<Sim>>,
    Path(system): Path<String>,
    Json(faults): Json<Faults>,
) -> Result<Json<Faults>, (axum::http::StatusCode, String)> {
    let system = System::parse(&system).ok_or_else(|| {
        (
            axum::http::StatusCode::NOT_FOUND,
            format!(
                "unknown system {system:?}: use bitrix24, amocrm, comagic, calltouch or telegram"
            ),
        )
    })?;
    sim.set_faults(system, faults.clone());
    Ok(Json(faults))
}

async fn get_faults(
    State(sim): State<Arc<Sim>>,
    Path(system): Path<String>,
) -> Result<Json<Faults>, axum::http::StatusCode> {
    let system = System::parse(&system).ok_or(axum::http::StatusCode::NOT_FOUND)?;
    Ok(Json(sim.faults(system)))
}

async fn get_stats(State(sim): State<Arc<Sim>>) -> Json<BTreeMap<System, Stats>> {
    Json(sim.stats())
}

async fn reset_stats(State(sim): State<Arc<Sim>>) -> axum::http::StatusCode {
    sim.reset_stats();
    axum::http::StatusCode::NO_CONTENT
}

async fn get_credentials(State(sim): State<Arc<Sim>>) -> Json<Credentials> {
    Json(sim.creds.clone())
}

async fn summary(State(sim): State<Arc<Sim>>) -> Json<serde_json::Value> {
    let w = sim.world();
    Json(serde_json::json!({
        "seed": w.seed,
        "scale": w.scale,
        "users": w.users.len(),
        "pipelines": w.pipelines.len(),
        "leads": w.leads.len(),
        "deals": w.deals.len(),
        "contacts": w.contacts.len(),
        "companies": w.companies.len(),
        "tasks": w.tasks.len(),
        "activities": w.activities.len(),
        "calls": w.calls.len(),
        "telegram_messages": sim.telegram.sent_count(),
    }))
}

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub sim: Arc<Sim>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bitrix24 inbound-webhook URL (ends with `/`).
    pub fn b24_webhook_url(&self) -> String {
        urls::b24_webhook(&self.base_url(), &self.sim.creds)
    }

    /// The Bitrix24 portal address (OAuth apps call `{portal}/rest/{method}`).
    pub fn b24_portal_url(&self) -> String {
        urls::b24_portal(&self.base_url())
    }

    pub fn amo_url(&self) -> String {
        urls::amo(&self.base_url())
    }

    pub fn comagic_url(&self) -> String {
        urls::comagic(&self.base_url())
    }

    pub fn calltouch_url(&self) -> String {
        urls::calltouch(&self.base_url())
    }

    pub fn telegram_url(&self) -> String {
        urls::telegram(&self.base_url())
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the simulator on `addr` (port 0 = any free port) and returns once it accepts requests.
pub async fn start(opts: SimOptions, addr: SocketAddr) -> std::io::Result<SimHandle> {
    start_with(Sim::new(opts), addr).await
}

/// Starts a simulator around an existing state (tests build worlds by hand).
pub async fn start_with(sim: Arc<Sim>, addr: SocketAddr) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let app = router(sim.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimHandle {
        addr,
        sim,
        shutdown: Some(tx),
        task: Some(task),
    })
}
