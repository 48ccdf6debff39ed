//! Fake of the Bitrix24 REST API (see shared/api/bitrix24.md), over the shared [`World`].
//!
//! * inbound webhook: `/b24/rest/{user}/{secret}/{method}[.json]`
//! * OAuth application: `/b24/rest/{method}` with `auth=ACCESS_TOKEN`, tokens from
//!   `/b24/oauth/token/?grant_type=refresh_token&...` (a new refresh token every time)
//! * parameters as JSON, form-urlencoded or query string (PHP brackets)
//! * the real envelope (`result`, `total`, `next`, `time`), 50-row pages, `batch` with
//!   `$result[...]` references, the leaky bucket and per-method operating time when limits are on.
//!
//! [`World`]: crate::World

mod list;
mod methods;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Credentials, Injected, Sim, SimOptions, System};
use crate::php_query;

pub use methods::iso;

/// Access tokens live this long.
pub const ACCESS_TTL_SECS: i64 = 3600;
/// Per-method operating budget over the rolling window.
pub const OPERATING_LIMIT_SECS: f64 = 480.0;
const OPERATING_WINDOW_SECS: f64 = 600.0;
/// Simulated execution cost: per call and per returned row (a real portal spends about 5 ms
/// on a fast-paged list call plus a fraction of a millisecond per row).
const COST_BASE: f64 = 0.005;
const COST_PER_ROW: f64 = 0.0002;

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Webhook,
    OAuth,
}

/// A method-level or system error in the `{"error","error_description"}` shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub description: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, description: &str) -> Self {
        ApiError {
            status,
            code: code.into(),
            description: description.into(),
        }
    }

    /// A CRM method error: empty code, meaning only in the text, HTTP 400.
    pub fn method(description: &str) -> Self {
        Self::new(400, "", description)
    }

    fn body(&self) -> Value {
        json!({"error": self.code, "error_description": self.description})
    }
}

/// What a method returned.
pub struct Out {
    pub result: Value,
    pub total: Option<u64>,
    pub next: Option<u64>,
    /// Rows produced (drives the simulated processing cost).
    pub rows: usize,
}

/// A call registered by `telephony.externalCall.register`, waiting for `finish`.
#[derive(Debug, Clone)]
pub struct PendingCall {
    pub user_id: u64,
    pub phone: String,
    pub incoming: bool,
    pub start: DateTime<Utc>,
    pub owner: Option<(super::world::Owner, u64)>,
    pub external_id: Option<String>,
}

struct Tokens {
    /// access token → (expires unix ts, revoked)
    access: HashMap<String, (i64, bool)>,
    refresh: String,
    issued: u64,
    /// The refresh token the latest successful refresh consumed.
    last_used_refresh: Option<String>,
}

/// Operating-time charges of one method in the rolling window: (unix ts, seconds), and their sum.
type Window = (VecDeque<(f64, f64)>, f64);

struct Bucket {
    level: f64,
    at: Instant,
}

/// Mutable state of the fake (tokens, rate limiter, operating time, pending calls).
pub struct State {
    tokens: Mutex<Tokens>,
    bucket: Mutex<Bucket>,
    /// method → (charges in the window as (unix ts, seconds), their sum)
    operating: Mutex<HashMap<String, Window>>,
    calls: Mutex<HashMap<String, PendingCall>>,
    todos: Mutex<BTreeSet<u64>>,
    /// The `UF_CRM_*` field name last written as the flag field (shown by `*.get`).
    flag_name: Mutex<Option<String>>,
    /// Finished external calls as `voximplant.statistic.get` rows.
    call_stats: Mutex<Vec<Map<String, Value>>>,
    /// Scopes the webhook or application was granted (`None`: every scope).
    scopes: Mutex<Option<BTreeSet<String>>>,
    /// Methods refused with a given error, like a webhook whose user lacks a right.
    refused: Mutex<HashMap<String, ApiError>>,
    drain_per_sec: f64,
    threshold: f64,
}

/// Every scope the fake portal has (what `scope` with `full: true` answers).
pub const ALL_SCOPES: [&str; 5] = ["crm", "task", "user", "telephony", "department"];

/// The scope a method belongs to (`None`: basic methods every caller may use). From the
/// method pages of bitrix24/b24restdocs ("> Scope: ..." at the top of each page).
pub fn scope_of(method: &str) -> Option<&'static str> {
    let m = method.to_ascii_lowercase();
    if m.starts_with("crm.") {
        Some("crm")
    } else if m.starts_with("tasks.") || m.starts_with("task.") {
        Some("task")
    } else if m.starts_with("telephony.") || m.starts_with("voximplant.") {
        Some("telephony")
    } else if m.starts_with("user.") {
        Some("user")
    } else if m.starts_with("department.") {
        Some("department")
    } else {
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> f64 {
    Utc::now().timestamp_micros() as f64 / 1e6
}

impl State {
    pub fn new(opts: &SimOptions, creds: &Credentials) -> Self {
        let (drain, threshold) = if opts.b24_enterprise {
            (5.0, 250.0)
        } else {
            (2.0, 50.0)
        };
        State {
            tokens: Mutex::new(Tokens {
                access: HashMap::new(),
                refresh: creds.b24_refresh_token.clone(),
                issued: 0,
                last_used_refresh: None,
            }),
            bucket: Mutex::new(Bucket {
                level: 0.0,
                at: Instant::now(),
            }),
            operating: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            todos: Mutex::new(BTreeSet::new()),
            flag_name: Mutex::new(None),
            call_stats: Mutex::new(Vec::new()),
            scopes: Mutex::new(None),
            refused: Mutex::new(HashMap::new()),
            drain_per_sec: drain,
            threshold,
        }
    }

    /// Grants only `scopes` from now on, like a webhook created with some boxes unticked.
    pub fn limit_scopes(&self, scopes: &[&str]) {
        *lock(&self.scopes) = Some(scopes.iter().map(|s| s.to_string()).collect());
    }

    /// Answers every later call of `method` (direct or inside a batch) with this error.
    pub fn refuse_method(&self, method: &str, status: u16, code: &str, description: &str) {
        lock(&self.refused).insert(
            method.to_ascii_lowercase(),
            ApiError::new(status, code, description),
        );
    }

    /// The granted scopes, as the `scope` method lists them (basic is never listed).
    pub fn granted_scopes(&self) -> Vec<String> {
        match &*lock(&self.scopes) {
            Some(s) => s.iter().cloned().collect(),
            None => ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `insufficient_scope` when `method` needs a scope not granted
    /// (`_includes/system-errors.md`: HTTP 403, text naming the webhook or the access token).
    fn check_scope(&self, auth: AuthKind, method: &str) -> Result<(), ApiError> {
        let Some(needed) = scope_of(method) else {
            return Ok(());
        };
        // `user.get` also serves the narrower `user_basic` and `user_brief` scopes
        // (`api-reference/user/user-get.md`, "Scope: user, user_brief, user_basic").
        let narrower: &[&str] = if needed == "user" {
            &["user_basic", "user_brief"]
        } else {
            &[]
        };
        if lock(&self.scopes)
            .as_ref()
            .is_none_or(|s| s.contains(needed) || narrower.iter().any(|n| s.contains(*n)))
        {
            return Ok(());
        }
        let by = match auth {
            AuthKind::Webhook => "webhook token",
            AuthKind::OAuth => "access token",
        };
        Err(ApiError::new(
            403,
            "insufficient_scope",
            &format!("The request requires higher privileges than provided by the {by}"),
        ))
    }

    /// The refresh token the fake currently accepts.
    pub fn current_refresh_token(&self) -> String {
        lock(&self.tokens).refresh.clone()
    }

    /// The refresh token that the latest successful refresh consumed.
    pub fn last_used_refresh_token(&self) -> Option<String> {
        lock(&self.tokens).last_used_refresh.clone()
    }

    /// Number of token refreshes served.
    pub fn refresh_count(&self) -> u64 {
        lock(&self.tokens).issued
    }

    fn todos(&self) -> BTreeSet<u64> {
        lock(&self.todos).clone()
    }

    fn flag_name(&self) -> Option<String> {
        lock(&self.flag_name).clone()
    }

    fn set_flag_name(&self, name: &str) {
        *lock(&self.flag_name) = Some(name.to_string());
    }

    fn call_stats(&self) -> Vec<Map<String, Value>> {
        lock(&self.call_stats).clone()
    }

    fn push_call_stat(&self, row: Map<String, Value>) {
        lock(&self.call_stats).push(row);
    }

    /// Statistics rows of finished external calls.
    pub fn finished_calls(&self) -> usize {
        lock(&self.call_stats).len()
    }

    fn add_todo(&self, id: u64) {
        lock(&self.todos).insert(id);
    }

    fn register_call(&self, call: PendingCall) -> String {
        let mut calls = lock(&self.calls);
        let id = format!(
            "externalCall.{:032x}",
            (calls.len() as u128 + 1) * 0x9e37_79b9_7f4a_7c15 + Utc::now().timestamp() as u128
        );
        calls.insert(id.clone(), call);
        id
    }

    fn take_call(&self, id: &str) -> Option<PendingCall> {
        lock(&self.calls).remove(id)
    }

    /// Leaky bucket: +1 per request, drains continuously; refuses above the threshold.
    fn admit(&self) -> bool {
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        let drained = now.duration_since(b.at).as_secs_f64() * self.drain_per_sec;
        b.level = (b.level - drained).max(0.0);
        b.at = now;
        if b.level + 1.0 > self.threshold {
            return false;
        }
        b.level += 1.0;
        true
    }

    /// (operating seconds in the window, unix ts when the oldest entry drops).
    fn operating(&self, method: &str) -> (f64, i64) {
        let mut all = lock(&self.operating);
        let now = unix_now();
        let (q, sum) = all.entry(method.to_string()).or_default();
        while let Some((t, secs)) = q.front().copied() {
            if t + OPERATING_WINDOW_SECS >= now {
                break;
            }
            *sum -= secs;
            q.pop_front();
        }
        if q.is_empty() {
            *sum = 0.0;
        }
        let reset = q.front().map_or(now, |(t, _)| t + OPERATING_WINDOW_SECS);
        (sum.max(0.0), reset.ceil() as i64)
    }

    fn charge(&self, method: &str, secs: f64) {
        let mut all = lock(&self.operating);
        let (q, sum) = all.entry(method.to_string()).or_default();
        q.push_back((unix_now(), secs));
        *sum += secs;
    }

    /// Adds operating time to a method (tests drive OPERATION_TIME_LIMIT with it).
    pub fn charge_operating(&self, method: &str, secs: f64) {
        self.charge(&method.to_ascii_lowercase(), secs);
    }

    /// Adds operating time spent `ago` seconds back, so that it leaves the 10-minute window
    /// (and `operating_reset_at` falls) `OPERATING_WINDOW_SECS - ago` seconds from now: tests
    /// see a method reach its budget and recover without waiting ten minutes.
    pub fn charge_operating_ago(&self, method: &str, secs: f64, ago: f64) {
        let mut all = lock(&self.operating);
        let (q, sum) = all.entry(method.to_ascii_lowercase()).or_default();
        let at = unix_now() - ago.clamp(0.0, OPERATING_WINDOW_SECS);
        // The window is kept in time order: the oldest entry is the next to drop.
        let pos = q.iter().position(|(t, _)| *t > at).unwrap_or(q.len());
        q.insert(pos, (at, secs));
        *sum += secs;
    }

    fn check_token(&self, sim: &Sim, token: &str) -> Result<(), ApiError> {
        let mut t = lock(&self.tokens);
        if sim.take_expire_tokens(System::Bitrix24) {
            for v in t.access.values_mut() {
                v.1 = true;
            }
        }
        match t.access.get(token) {
            None => Err(ApiError::new(
                401,
                "invalid_token",
                "The access token provided is invalid.",
            )),
            Some((exp, revoked)) if *revoked || *exp <= Utc::now().timestamp() => {
                Err(ApiError::new(
                    401,
                    "expired_token",
                    "The access token provided has expired.",
                ))
            }
            Some(_) => Ok(()),
        }
    }
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/rest/{*path}", any(rest))
        .route("/oauth/token", get(token))
        .route("/oauth/token/", get(token))
        .with_state(sim)
}

fn json_response(status: u16, body: &Value, malformed: bool) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let bytes = if malformed {
        super::corrupt(&bytes)
    } else {
        bytes
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        bytes,
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.status, &e.body(), false)
}

fn injected_error(injected: Injected) -> Option<ApiError> {
    match injected {
        Injected::Http5xx => Some(ApiError::new(
            500,
            "INTERNAL_SERVER_ERROR",
            "Internal server error",
        )),
        Injected::Throttle => Some(ApiError::new(
            503,
            "QUERY_LIMIT_EXCEEDED",
            "Too many requests",
        )),
        _ => None,
    }
}

fn time_block(start: f64, processing: f64, operating: f64, reset_at: i64) -> Value {
    let finish = unix_now().max(start);
    let ds = DateTime::from_timestamp_micros((start * 1e6) as i64).unwrap_or_else(Utc::now);
    let df = DateTime::from_timestamp_micros((finish * 1e6) as i64).unwrap_or_else(Utc::now);
    json!({
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": processing,
        "date_start": iso(&ds),
        "date_finish": iso(&df),
        "operating_reset_at": reset_at,
        "operating": (operating * 1e4).round() / 1e4,
    })
}

/// Parameters from the query string merged with a JSON or form body.
fn parse_params(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let mut params = query.map(php_query::parse).unwrap_or_else(|| json!({}));
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace());
    if let Some(first) = trimmed {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let parsed = if ct.contains("json") || body[first] == b'{' || body[first] == b'[' {
            serde_json::from_slice::<Value>(body).map_err(|_| {
                ApiError::new(400, "INVALID_REQUEST", "Invalid JSON in request body")
            })?
        } else {
            php_query::parse(&String::from_utf8_lossy(body))
        };
        if let (Value::Object(p), Value::Object(b)) = (&mut params, parsed) {
            p.extend(b);
        }
    }
    Ok(params)
}

/// The order of `cmd` keys as sent (serde_json maps are sorted, batch commands are not).
fn cmd_order(query: Option<&str>, body: &[u8]) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a map or a list")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut s: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while s.next_element::<serde::de::IgnoredAny>()?.is_some() {
                        keys.push(keys.len().to_string());
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_any(V)
        }
    }
    #[derive(Deserialize)]
    struct Top {
        cmd: Option<Keys>,
    }
    if let Ok(top) = serde_json::from_slice::<Top>(body)
        && let Some(keys) = top.cmd
    {
        return keys.0;
    }
    let mut keys: Vec<String> = Vec::new();
    let text = String::from_utf8_lossy(body);
    for src in [query.unwrap_or(""), text.as_ref()] {
        for (k, _) in url::form_urlencoded::parse(src.as_bytes()) {
            if let Some(rest) = k.strip_prefix("cmd[")
                && let Some(end) = rest.find(']')
            {
                let key = rest[..end].to_string();
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
    }
    keys
}

fn normalize_method(raw: &str) -> String {
    let m = raw.trim_matches('/');
    let m = m.strip_suffix(".json").unwrap_or(m);
    m.to_ascii_lowercase()
}

async fn rest(
    AxState(sim): AxState<Arc<Sim>>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (webhook, raw_method) = match segs.as_slice() {
        [m] => (None, *m),
        [u, s, m] => (Some((*u, *s)), *m),
        _ => {
            return error_response(&ApiError::new(
                404,
                "ERROR_METHOD_NOT_FOUND",
                "Method not found!",
            ));
        }
    };
    let method = normalize_method(raw_method);
    let injected = sim.on_request(System::Bitrix24, &method).await;
    if let Some(e) = injected_error(injected) {
        return error_response(&e);
    }
    let mut params = match parse_params(query.as_deref(), &headers, &body) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let auth = match webhook {
        Some((user, secret)) => {
            // `_includes/system-errors.md`: no active webhook with this user and secret.
            if user != sim.creds.b24_webhook_user.to_string()
                || secret != sim.creds.b24_webhook_secret
            {
                // `_includes/system-errors.md`: an unknown webhook code is NO_AUTH_FOUND, 401
                // (INVALID_CREDENTIALS, 403, is a known user lacking permissions).
                return error_response(&ApiError::new(
                    401,
                    "NO_AUTH_FOUND",
                    "Wrong authorization data",
                ));
            }
            AuthKind::Webhook
        }
        None => {
            let token = params
                .as_object_mut()
                .and_then(|m| m.remove("auth"))
                .map(|v| list::scalar(&v))
                .unwrap_or_default();
            if token.is_empty() {
                return error_response(&ApiError::new(
                    401,
                    "NO_AUTH_FOUND",
                    "Wrong authorization data",
                ));
            }
            if let Err(e) = sim.b24.check_token(&sim, &token) {
                return error_response(&e);
            }
            AuthKind::OAuth
        }
    };
    if sim.opts.enforce_limits && !sim.b24.admit() {
        sim.count_throttled(System::Bitrix24);
        return error_response(&ApiError::new(
            503,
            "QUERY_LIMIT_EXCEEDED",
            "Too many requests",
        ));
    }
    let start = unix_now();
    let malformed = injected == Injected::Malformed;
    if method == "batch" {
        let order = cmd_order(query.as_deref(), &body);
        return match batch(&sim, auth, &params, &order) {
            Ok(result) => {
                let body = json!({"result": result, "time": time_block(start, COST_BASE, 0.0, start.ceil() as i64)});
                json_response(200, &body, malformed)
            }
            Err(e) => error_response(&e),
        };
    }
    match run_one(&sim, auth, &method, &params, start) {
        Ok((out, time)) => {
            let mut body = Map::new();
            body.insert("result".into(), out.result);
            if let Some(n) = out.next {
                body.insert("next".into(), json!(n));
            }
            if let Some(t) = out.total {
                body.insert("total".into(), json!(t));
            }
            body.insert("time".into(), time);
            json_response(200, &Value::Object(body), malformed)
        }
        Err(e) => error_response(&e),
    }
}

/// Runs one method with the operating-time accounting; returns its output and `time` block.
fn run_one(
    sim: &Sim,
    auth: AuthKind,
    method: &str,
    params: &Value,
    start: f64,
) -> Result<(Out, Value), ApiError> {
    if sim.opts.enforce_limits {
        let (used, _) = sim.b24.operating(method);
        if used > OPERATING_LIMIT_SECS {
            return Err(ApiError::new(
                429,
                "OPERATION_TIME_LIMIT",
                "Method is blocked due to operation time limit.",
            ));
        }
    }
    sim.b24.check_scope(auth, method)?;
    if let Some(e) = lock(&sim.b24.refused).get(method) {
        return Err(e.clone());
    }
    let out = methods::call(sim, auth, method, params)?;
    let cost = COST_BASE + COST_PER_ROW * out.rows as f64;
    sim.b24.charge(method, cost);
    let (used, reset) = sim.b24.operating(method);
    Ok((out, time_block(start, cost, used, reset)))
}

fn empty_as_list(m: Map<String, Value>) -> Value {
    if m.is_empty() {
        Value::Array(vec![])
    } else {
        Value::Object(m)
    }
}

fn batch(sim: &Sim, auth: AuthKind, params: &Value, order: &[String]) -> Result<Value, ApiError> {
    let cmd = list::param(params, &["cmd", "CMD"])
        .cloned()
        .unwrap_or(Value::Null);
    let mut cmds: Vec<(String, String)> = match &cmd {
        Value::Object(m) => {
            let mut v: Vec<(String, String)> = order
                .iter()
                .filter_map(|k| m.get(k).map(|c| (k.clone(), list::scalar(c))))
                .collect();
            for (k, c) in m {
                if !v.iter().any(|(x, _)| x == k) {
                    v.push((k.clone(), list::scalar(c)));
                }
            }
            v
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, c)| (i.to_string(), list::scalar(c)))
            .collect(),
        _ => Vec::new(),
    };
    if cmds.len() > 50 {
        return Err(ApiError::new(
            400,
            "ERROR_BATCH_LENGTH_EXCEEDED",
            "Max batch length exceeded",
        ));
    }
    for (_, c) in &cmds {
        let m = normalize_method(c.split('?').next().unwrap_or(""));
        if m == "batch" || m.starts_with("disk.") {
            return Err(ApiError::new(
                405,
                "ERROR_BATCH_METHOD_NOT_ALLOWED",
                "Method is not allowed for batch usage",
            ));
        }
    }
    let halt = list::param(params, &["halt", "HALT"])
        .map(list::scalar)
        .is_some_and(|h| matches!(h.as_str(), "1" | "Y" | "true"));
    let mut result = Map::new();
    let mut errors = Map::new();
    let mut totals = Map::new();
    let mut nexts = Map::new();
    let mut times = Map::new();
    for (key, c) in cmds.drain(..) {
        let (m, q) = c.split_once('?').unwrap_or((c.as_str(), ""));
        let method = normalize_method(m);
        let mut p = php_query::parse(q);
        let start = unix_now();
        // A method outside the granted scopes is refused before its parameters are looked at
        // (batch.md: a chained command whose reference cannot resolve still says
        // insufficient_scope).
        let outcome = sim
            .b24
            .check_scope(auth, &method)
            .and_then(|()| {
                substitute(&mut p, &result)
                    .map_err(|r| ApiError::method(&format!("Unresolved reference {r}")))
            })
            .and_then(|()| run_one(sim, auth, &method, &p, start));
        match outcome {
            Ok((out, time)) => {
                result.insert(key.clone(), out.result);
                if let Some(t) = out.total {
                    totals.insert(key.clone(), json!(t));
                }
                if let Some(n) = out.next {
                    nexts.insert(key.clone(), json!(n));
                }
                times.insert(key, time);
            }
            Err(mut e) => {
                // settings/how-to-call-rest-api/batch.md: a refused scope inside a batch comes
                // back with an empty description.
                if e.code == "insufficient_scope" {
                    e.description.clear();
                }
                errors.insert(key, e.body());
                if halt {
                    break;
                }
            }
        }
    }
    Ok(json!({
        "result": empty_as_list(result),
        "result_error": empty_as_list(errors),
        "result_total": empty_as_list(totals),
        "result_next": empty_as_list(nexts),
        "result_time": empty_as_list(times),
    }))
}

/// Replaces `$result[key][0][ID]` references in every string leaf with earlier results.
fn substitute(v: &mut Value, results: &Map<String, Value>) -> Result<(), String> {
    match v {
        Value::Object(m) => m.values_mut().try_for_each(|x| substitute(x, results)),
        Value::Array(a) => a.iter_mut().try_for_each(|x| substitute(x, results)),
        Value::String(s) if s.contains("$result[") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            let mut whole: Option<Value> = None;
            while let Some(at) = rest.find("$result[") {
                out.push_str(&rest[..at]);
                let mut tail = &rest[at + "$result".len()..];
                let mut path = Vec::new();
                while let Some(inner) = tail.strip_prefix('[') {
                    let Some(end) = inner.find(']') else { break };
                    path.push(&inner[..end]);
                    tail = &inner[end + 1..];
                }
                let reference = &rest[at..rest.len() - tail.len()];
                let mut cur = path
                    .first()
                    .and_then(|k| results.get(*k))
                    .ok_or_else(|| reference.to_string())?;
                for seg in path.iter().skip(1) {
                    cur = match cur {
                        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                        Value::Object(m) => m.get(*seg),
                        _ => None,
                    }
                    .ok_or_else(|| reference.to_string())?;
                }
                if at == 0
                    && tail.is_empty()
                    && out.is_empty()
                    && (cur.is_array() || cur.is_object())
                {
                    whole = Some(cur.clone());
                }
                out.push_str(&list::scalar(cur));
                rest = tail;
            }
            out.push_str(rest);
            *v = whole.unwrap_or(Value::String(out));
            Ok(())
        }
        _ => Ok(()),
    }
}

async fn token(
    AxState(sim): AxState<Arc<Sim>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let injected = sim.on_request(System::Bitrix24, "oauth.token").await;
    if let Some(e) = injected_error(injected) {
        return error_response(&e);
    }
    let p = php_query::parse(query.as_deref().unwrap_or(""));
    let get = |k: &str| p.get(k).map(list::scalar).unwrap_or_default();
    let oauth_err = |status: u16, code: &str, desc: &str| {
        json_response(
            status,
            &json!({"error": code, "error_description": desc}),
            false,
        )
    };
    if get("client_id") != sim.creds.b24_client_id
        || get("client_secret") != sim.creds.b24_client_secret
    {
        return oauth_err(401, "invalid_client", "Invalid client credentials");
    }
    if get("grant_type") != "refresh_token" {
        return oauth_err(400, "invalid_request", "Unsupported grant_type");
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let mut t = lock(&sim.b24.tokens);
    if get("refresh_token") != t.refresh || t.refresh.is_empty() {
        return oauth_err(400, "invalid_grant", "Invalid refresh token");
    }
    t.issued += 1;
    let n = t.issued;
    let salt = Utc::now().timestamp_subsec_nanos();
    let access = format!("sim-b24-access-{n}-{salt:08x}");
    let refresh = format!("sim-b24-refresh-{n}-{salt:08x}");
    let expires = Utc::now().timestamp() + ACCESS_TTL_SECS;
    t.access.insert(access.clone(), (expires, false));
    t.last_used_refresh = Some(std::mem::replace(&mut t.refresh, refresh.clone()));
    drop(t);
    json_response(
        200,
        &json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires": expires,
            "expires_in": ACCESS_TTL_SECS,
            "client_endpoint": format!("http://{host}/b24/rest/"),
            "server_endpoint": format!("http://{host}/b24/oauth/rest/"),
            "domain": "oauth.bitrix.info",
            "member_id": "sim0000000000000000000000000000b24",
            "scope": "crm,task,user,telephony",
            "status": "L",
            "user_id": 1,
        }),
        injected == Injected::Malformed,
    )
}
