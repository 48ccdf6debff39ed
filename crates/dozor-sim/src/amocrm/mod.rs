//! Fake of the amoCRM API v4 (see shared/api/amocrm.md), served under `/amo`.
//!
//! World `deals` are amoCRM "leads", world `leads` are unsorted items, call activities are call
//! notes plus `incoming_call`/`outgoing_call` events. Everything is rendered from the shared world
//! on each request, so writes by any fake are visible here at once.
//!
//! Transport behaviour copied from the real service: HAL+JSON envelopes with absolute links,
//! 204 with an empty body for empty lists, problem+json errors, OAuth with single-use refresh
//! tokens, 7 requests per second with a plain-text 429 and a 403 lock-out for clients that keep
//! hammering after being throttled.

mod render;
mod write;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::any;
use serde_json::{Value, json};

use super::{Credentials, Injected, Sim, SimOptions, System};
use crate::php_query;

/// The account the fake pretends to be.
pub const ACCOUNT_ID: u64 = 31_337_001;
pub const SUBDOMAIN: &str = "dozorsim";
pub const ACCOUNT_NAME: &str = "Dozor Sim";

/// Requests per second allowed when limits are enforced.
pub const RATE_PER_SEC: usize = 7;
/// 429 answers within [`ABUSE_WINDOW`] that trigger the 403 lock-out.
pub const ABUSE_THRESHOLD: usize = 20;
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// Access-token lifetime in seconds.
pub const TOKEN_TTL: i64 = 86_400;

/// Mutable state of the fake: issued tokens, rate-limit windows, lock-out.
pub struct State {
    tokens: Mutex<Tokens>,
    limits: Mutex<Limits>,
    lockout: Mutex<Duration>,
    /// Loss reasons by name: ids stay stable once handed out.
    reasons: Mutex<BTreeMap<String, u64>>,
    /// Precise events logged by writes through this fake (see `render::events`).
    log: Mutex<Vec<Logged>>,
    /// Whether the account has the API filtering add-on (`is_api_filter_enabled`); off, as on
    /// most accounts (the filters page calls it an alpha open to a limited list of accounts).
    api_filter: std::sync::atomic::AtomicBool,
    /// Whether `query=` search is still served (the filters page says it will be deprecated).
    query_search: std::sync::atomic::AtomicBool,
}

/// Id of the first loss reason.
pub const LOSS_REASON_BASE: u64 = 5_000;

/// An event a write through this fake logged.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub id: String,
    pub kind: String,
    /// `entity_type` as events name it (`lead`, `contact`, `company`, `task`).
    pub entity: &'static str,
    pub entity_id: u64,
    /// The record the event is about (`("task", id)` for task events bound to a lead).
    pub subject: (&'static str, u64),
    pub by: u64,
    pub at: i64,
    pub after: Value,
    pub before: Value,
}

struct Tokens {
    /// Access token → expiry (unix seconds).
    access: HashMap<String, i64>,
    /// Refresh tokens that can still be used (each exactly once).
    refresh: HashSet<String>,
    /// Refresh tokens already used or revoked.
    revoked: HashSet<String>,
    used_codes: HashSet<String>,
    counter: u64,
    refreshes: u64,
    /// The refresh token the latest successful refresh grant consumed.
    last_used_refresh: Option<String>,
}

#[derive(Default)]
struct Limits {
    recent: VecDeque<Instant>,
    throttled: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl State {
    pub fn new(_opts: &SimOptions, creds: &Credentials) -> Self {
        State {
            tokens: Mutex::new(Tokens {
                access: HashMap::new(),
                refresh: HashSet::from([creds.amo_refresh_token.clone()]),
                revoked: HashSet::new(),
                used_codes: HashSet::new(),
                counter: 0,
                refreshes: 0,
                last_used_refresh: None,
            }),
            limits: Mutex::new(Limits::default()),
            lockout: Mutex::new(Duration::from_secs(2)),
            reasons: Mutex::new(BTreeMap::new()),
            log: Mutex::new(Vec::new()),
            api_filter: std::sync::atomic::AtomicBool::new(false),
            query_search: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Gives the account the API filtering add-on or takes it away. The filters page
    /// (<https://www.amocrm.ru/developers/content/crm_platform/filters-api>) calls the feature an
    /// alpha open to a limited list of accounts; without it the fake ignores the filters the
    /// page lists for leads, contacts and companies, as such accounts do.
    pub fn set_api_filter(&self, enabled: bool) {
        self.api_filter
            .store(enabled, std::sync::atomic::Ordering::Relaxed);
    }

    /// Serves `query=` search or refuses it. The filters page marks `query` "will be deprecated
    /// soon" without saying how its end will look; the fake refuses it the way the API refuses
    /// any parameter it does not know: a 400 with `validation-errors` naming it.
    pub fn set_query_search(&self, served: bool) {
        self.query_search
            .store(served, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the account has the API filtering add-on.
    pub fn api_filter(&self) -> bool {
        self.api_filter.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The id of a loss reason, registering the name on first use.
    pub fn reason_id(&self, name: &str) -> u64 {
        let mut r = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = r.get(name) {
            return *id;
        }
        let id = LOSS_REASON_BASE + r.len() as u64;
        r.insert(name.to_string(), id);
        id
    }

    /// The name of a loss reason id.
    pub fn reason_name(&self, id: u64) -> Option<String> {
        self.reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.clone())
    }

    /// Every known loss reason as (name, id), by id.
    pub fn reasons(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort_by_key(|x| x.1);
        v
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn log_event(
        &self,
        kind: &str,
        entity: &'static str,
        entity_id: u64,
        subject: (&'static str, u64),
        by: u64,
        at: i64,
        after: Value,
        before: Value,
    ) {
        let mut l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let id = format!("01lg{:016x}", l.len() + 1);
        l.push(Logged {
            id,
            kind: kind.to_string(),
            entity,
            entity_id,
            subject,
            by,
            at,
            after,
            before,
        });
    }

    pub(crate) fn logged(&self) -> Vec<Logged> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How long the 403 lock-out lasts once a client is caught hammering.
    pub fn set_lockout(&self, d: Duration) {
        *self.lockout.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// Successful token grants (authorization_code and refresh_token) so far.
    pub fn token_grants(&self) -> u64 {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refreshes
    }

    /// The refresh token that the latest successful refresh grant consumed.
    pub fn last_used_refresh_token(&self) -> Option<String> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_used_refresh
            .clone()
    }

    /// True while `token` is an unused refresh token.
    pub fn refresh_token_valid(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refresh
            .contains(token)
    }

    /// Revokes every refresh token (the account owner disconnected the integration).
    pub fn revoke_refresh_tokens(&self) {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<String> = t.refresh.drain().collect();
        t.revoked.extend(all);
    }

    /// Forgets every issued access token (as the `expire_tokens` fault does).
    pub fn expire_access_tokens(&self) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .access
            .clear();
    }

    fn lockout(&self) -> Duration {
        *self.lockout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rate-limit verdict for one request: None = go on.
    fn check_limits(&self) -> Option<StatusCode> {
        let now = Instant::now();
        let lockout = self.lockout();
        let mut l = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = l.locked_until {
            if now < until {
                return Some(StatusCode::FORBIDDEN);
            }
            l.locked_until = None;
            l.throttled.clear();
        }
        while l
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            l.recent.pop_front();
        }
        while l
            .throttled
            .front()
            .is_some_and(|t| now.duration_since(*t) >= ABUSE_WINDOW)
        {
            l.throttled.pop_front();
        }
        if l.recent.len() >= RATE_PER_SEC {
            l.throttled.push_back(now);
            if l.throttled.len() > ABUSE_THRESHOLD {
                l.locked_until = Some(now + lockout);
                return Some(StatusCode::FORBIDDEN);
            }
            return Some(StatusCode::TOO_MANY_REQUESTS);
        }
        l.recent.push_back(now);
        None
    }

    fn issue(&self, t: &mut Tokens) -> Value {
        t.counter += 1;
        t.refreshes += 1;
        let now = chrono::Utc::now().timestamp();
        let exp = now + TOKEN_TTL;
        let header = b64url(br#"{"typ":"JWT","alg":"RS256"}"#);
        let claims = json!({
            "aud": "sim", "jti": format!("sim-{}", t.counter), "iat": now, "nbf": now, "exp": exp,
            "sub": "1", "account_id": ACCOUNT_ID, "base_domain": "amocrm.ru",
            "api_domain": "api-b.amocrm.ru", "scopes": ["crm", "notifications"]
        });
        let access = format!(
            "{header}.{}.{}",
            b64url(claims.to_string().as_bytes()),
            b64url(format!("sig{}-{now}", t.counter).as_bytes())
        );
        let refresh = format!("def50200{:016x}{:08x}", now as u64 ^ 0x5eed, t.counter);
        t.access.insert(access.clone(), exp);
        t.refresh.insert(refresh.clone());
        json!({"token_type":"Bearer","expires_in":TOKEN_TTL,"access_token":access,
               "refresh_token":refresh,"server_time":now})
    }
}

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new().route("/{*rest}", any(handle)).with_state(sim)
}

/// What a handler answers before transport concerns (faults, content types) are applied.
pub(crate) enum Reply {
    Hal(StatusCode, Value),
    Empty,
    Problem(StatusCode, Value),
}

pub(crate) fn problem(status: StatusCode, detail: &str) -> Reply {
    let title = status.canonical_reason().unwrap_or("Error");
    Reply::Problem(
        status,
        json!({"title": title, "type": format!("https://httpstatus.es/{}", status.as_u16()),
               "status": status.as_u16(), "detail": detail}),
    )
}

/// A 400 with `validation-errors` for one batch item (or the query).
pub(crate) fn validation(request_id: &str, code: &str, path: &str, detail: &str) -> Reply {
    Reply::Problem(
        StatusCode::BAD_REQUEST,
        json!({"validation-errors":[{"request_id": request_id, "errors":[{"code": code, "path": path, "detail": detail}]}],
               "title":"Bad Request","type":"https://httpstatus.es/400","status":400,
               "detail":"Request validation failed"}),
    )
}

/// The request as handlers see it.
pub(crate) struct Req {
    pub method: Method,
    pub segs: Vec<String>,
    pub query: Value,
    pub raw_query: String,
    /// `http://host/amo`
    pub base: String,
    pub path: String,
    pub body: Bytes,
}

fn stats_key(method: &Method, path: &str) -> String {
    let norm: Vec<String> = path
        .split('/')
        .map(|s| {
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
                "{id}".to_string()
            } else if s.starts_with("unsorted-") {
                "{uid}".to_string()
            } else {
                s.to_string()
            }
        })
        .collect();
    format!("{method} {}", norm.join("/"))
}

async fn handle(
    AxState(sim): AxState<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let injected = sim
        .on_request(System::Amocrm, &stats_key(&method, &path))
        .await;
    if sim.take_expire_tokens(System::Amocrm) {
        sim.amo.expire_access_tokens();
    }
    if sim.opts.enforce_limits
        && let Some(status) = sim.amo.check_limits()
    {
        sim.count_throttled(System::Amocrm);
        return if status == StatusCode::TOO_MANY_REQUESTS {
            plain(status, "Too Many Requests")
        } else {
            respond(
                problem(
                    StatusCode::FORBIDDEN,
                    "Access temporarily blocked: too many requests",
                ),
                false,
            )
        };
    }
    match injected {
        Injected::Http5xx => {
            return if path.len().is_multiple_of(2) {
                plain(
                    StatusCode::BAD_GATEWAY,
                    "<html><body><h1>502 Bad Gateway</h1></body></html>",
                )
            } else {
                respond(
                    problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Service temporarily unavailable",
                    ),
                    false,
                )
            };
        }
        Injected::Throttle => return plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
        _ => {}
    }
    let malformed = injected == Injected::Malformed;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let raw_query = uri.query().unwrap_or("").to_string();
    let req = Req {
        method,
        segs: path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        query: php_query::parse(&raw_query),
        raw_query,
        base: format!("http://{host}/amo"),
        path,
        body,
    };
    if req.segs.first().map(String::as_str) == Some("oauth2") {
        return respond(oauth(&sim, &req), malformed);
    }
    if let Err(reply) = authorize(&sim, &headers) {
        return respond(reply, false);
    }
    respond(dispatch(&sim, &req), malformed)
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(text))
        .expect("static response")
}

fn respond(reply: Reply, malformed: bool) -> Response {
    let (status, ctype, body) = match reply {
        Reply::Empty => {
            return Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Body::empty())
                .expect("static response");
        }
        Reply::Hal(s, v) => (s, "application/hal+json", v),
        Reply::Problem(s, v) => (s, "application/problem+json", v),
    };
    let mut bytes = serde_json::to_vec(&body).expect("json serialises");
    if malformed {
        bytes = super::corrupt(&bytes);
    }
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .header("x-request-id", format!("sim-{}", bytes.len()))
        .body(Body::from(bytes))
        .expect("response")
}

fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), Reply> {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    else {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "Authorization header is missing",
        ));
    };
    let Some(token) = auth.strip_prefix("Bearer ") else {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "Authorization type must be Bearer",
        ));
    };
    if token == sim.creds.amo_long_lived_token {
        return Ok(());
    }
    let t = sim.amo.tokens.lock().unwrap_or_else(|e| e.into_inner());
    match t.access.get(token) {
        Some(exp) if *exp > chrono::Utc::now().timestamp() => Ok(()),
        Some(_) => Err(problem(
            StatusCode::UNAUTHORIZED,
            "Access token has expired",
        )),
        None => Err(problem(
            StatusCode::UNAUTHORIZED,
            "Access token is invalid or revoked",
        )),
    }
}

fn oauth(sim: &Sim, req: &Req) -> Reply {
    if req.method != Method::POST || req.segs.get(1).map(String::as_str) != Some("access_token") {
        return problem(StatusCode::NOT_FOUND, "Not found");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return problem(StatusCode::BAD_REQUEST, "Request body must be JSON");
    };
    let bad = |detail: &str, hint: &str| {
        Reply::Problem(
            StatusCode::BAD_REQUEST,
            json!({"title":"Bad Request","type":"https://httpstatus.es/400","status":400,
                   "detail": detail, "hint": hint}),
        )
    };
    let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    if s("client_id") != sim.creds.amo_client_id {
        return Reply::Problem(
            StatusCode::UNAUTHORIZED,
            json!({"title":"Unauthorized","type":"https://httpstatus.es/401","status":401,
                   "detail":"Client authentication failed","hint":"Check client_id"}),
        );
    }
    if s("client_secret") != sim.creds.amo_client_secret {
        return Reply::Problem(
            StatusCode::UNAUTHORIZED,
            json!({"title":"Unauthorized","type":"https://httpstatus.es/401","status":401,
                   "detail":"Client authentication failed","hint":"Check client_secret"}),
        );
    }
    if s("redirect_uri") != sim.creds.amo_redirect_uri {
        return bad(
            "The redirect_uri does not match",
            "redirect_uri must be the one set in the integration",
        );
    }
    let mut t = sim.amo.tokens.lock().unwrap_or_else(|e| e.into_inner());
    match s("grant_type") {
        "refresh_token" => {
            let rt = s("refresh_token");
            if t.refresh.remove(rt) {
                t.revoked.insert(rt.to_string());
                t.last_used_refresh = Some(rt.to_string());
                Reply::Hal(StatusCode::OK, sim.amo.issue(&mut t))
            } else if t.revoked.contains(rt) {
                bad("Refresh token has been revoked", "Token has been revoked")
            } else {
                bad(
                    "Refresh token is invalid",
                    "Cannot decrypt the refresh token",
                )
            }
        }
        "authorization_code" => {
            let code = s("code");
            if code.is_empty() || !t.used_codes.insert(code.to_string()) {
                bad(
                    "Authorization code has been revoked",
                    "Authorization code is invalid or already used",
                )
            } else {
                Reply::Hal(StatusCode::OK, sim.amo.issue(&mut t))
            }
        }
        _ => bad(
            "The authorization grant type is not supported by the authorization server.",
            "Check the grant_type parameter",
        ),
    }
}

/// Filters of the filters page that an account without the add-on does not apply: it answers
/// as if they were not there (the whole list), it does not refuse them.
const ALPHA_FILTERS: [&str; 3] = ["updated_at", "created_at", "closed_at"];

/// `req` as an account without the API filtering add-on reads it.
fn unfiltered(sim: &Sim, req: &Req) -> Req {
    let mut query = req.query.clone();
    if !sim.amo.api_filter()
        && let Some(f) = query.get_mut("filter").and_then(Value::as_object_mut)
    {
        for name in ALPHA_FILTERS {
            f.remove(name);
        }
    }
    Req {
        method: req.method.clone(),
        segs: req.segs.clone(),
        query,
        raw_query: req.raw_query.clone(),
        base: req.base.clone(),
        path: req.path.clone(),
        body: req.body.clone(),
    }
}

fn dispatch(sim: &Sim, req: &Req) -> Reply {
    let segs: Vec<&str> = req.segs.iter().map(String::as_str).collect();
    let Some(rest) = segs.strip_prefix(&["api", "v4"]) else {
        return problem(StatusCode::NOT_FOUND, "Not found");
    };
    if req.method == Method::GET
        && req.query.get("query").is_some()
        && !sim
            .amo
            .query_search
            .load(std::sync::atomic::Ordering::Relaxed)
    {
        return validation(
            "0",
            "NotSupported",
            "query",
            "This parameter is not supported",
        );
    }
    let m = &req.method;
    let id = |s: &str| s.parse::<u64>().ok();
    match (m.as_str(), rest) {
        ("GET", ["account"]) => render::account(sim, req),
        ("GET", ["users"]) => render::users(sim, req),
        ("GET", ["leads", "pipelines"]) => render::pipelines(sim, req),
        ("GET", ["leads", "unsorted"]) => render::unsorted(sim, req),
        ("POST", ["leads", "unsorted", cat @ ("sip" | "forms")]) => {
            write::unsorted_create(sim, req, cat)
        }
        ("GET", ["leads", "loss_reasons"]) => render::loss_reasons(sim, req),
        ("POST", ["leads", "loss_reasons"]) => write::create_loss_reasons(sim, req),
        ("POST", ["leads", "unsorted", uid, "accept"]) => write::unsorted_accept(sim, req, uid),
        ("DELETE", ["leads", "unsorted", uid, "decline"]) => write::unsorted_decline(sim, uid),
        ("GET", ["leads"]) => render::leads(sim, &unfiltered(sim, req)),
        ("POST", ["leads"]) => write::create_leads(sim, req),
        ("PATCH", ["leads"]) => write::update_leads(sim, req, None),
        ("GET", [ent @ ("leads" | "contacts" | "companies"), "notes"]) => {
            render::notes(sim, req, ent, None)
        }
        ("POST", [ent @ ("leads" | "contacts" | "companies"), "notes"]) => {
            write::create_notes(sim, req, ent, None)
        }
        ("GET", [ent @ ("leads" | "contacts" | "companies"), n, "notes"]) if id(n).is_some() => {
            render::notes(sim, req, ent, id(n))
        }
        ("POST", [ent @ ("leads" | "contacts" | "companies"), n, "notes"]) if id(n).is_some() => {
            write::create_notes(sim, req, ent, id(n))
        }
        ("GET", ["leads", n]) if id(n).is_some() => render::lead_one(sim, req, id(n).unwrap_or(0)),
        ("PATCH", ["leads", n]) if id(n).is_some() => write::update_leads(sim, req, id(n)),
        ("GET", ["contacts"]) => render::contacts(sim, &unfiltered(sim, req)),
        ("POST", ["contacts"]) => write::create_contacts(sim, req),
        ("GET", ["contacts", n]) if id(n).is_some() => {
            render::contact_one(sim, req, id(n).unwrap_or(0))
        }
        ("PATCH", [ent @ ("contacts" | "companies")]) => write::update_people(sim, req, ent, None),
        ("PATCH", [ent @ ("contacts" | "companies"), n]) if id(n).is_some() => {
            write::update_people(sim, req, ent, id(n))
        }
        ("GET", ["companies"]) => render::companies(sim, &unfiltered(sim, req)),
        ("GET", ["companies", n]) if id(n).is_some() => {
            render::company_one(sim, req, id(n).unwrap_or(0))
        }
        ("GET", ["tasks"]) => render::tasks(sim, req),
        ("POST", ["tasks"]) => write::create_tasks(sim, req),
        ("PATCH", ["tasks"]) => write::update_tasks(sim, req, None),
        ("PATCH", ["tasks", n]) if id(n).is_some() => write::update_tasks(sim, req, id(n)),
        ("GET", ["events"]) => render::events(sim, req),
        ("POST", ["calls"]) => write::calls(sim, req),
        _ => problem(
            StatusCode::NOT_FOUND,
            &format!("No route for {} {}", req.method, req.path),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_known_values() {
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(b"\xfb\xff"), "-_8");
    }
}
