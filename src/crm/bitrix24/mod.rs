//! Bitrix24 REST connector: inbound webhook or OAuth application.
//!
//! * Every call goes through one plan-sized limiter (Standard 2/s burst 50, Enterprise 5/250).
//! * 503 `QUERY_LIMIT_EXCEEDED` is waited out with doubling pauses however long the storm
//!   lasts (within [`Throttle::budget`]), 5xx are retried a few times; 429
//!   `OPERATION_TIME_LIMIT` waits until `operating_reset_at`; 503 `OVERLOAD_LIMIT` (a block
//!   set by Bitrix24 support) is not retried; each method's `time.operating` is tracked and the method
//!   is paused before it exceeds the configured budget.
//! * OAuth: refreshed when the stored access token is within a minute of its expiry, and on
//!   `expired_token` (then the call is repeated once); one refresh at a time, the new pair is
//!   stored before it is used. The fact sheet warns against refreshing before every call or on
//!   a timer; this refreshes at most once per token lifetime, and only when a call needs it.
//! * Full and incremental reads use fast ID paging (`>ID`, `start=-1`), several pages chained
//!   in one `batch` request with `$result[...]` references.

// `http::Error` is the shared error type of every connector; it is returned by value.
#![allow(clippy::result_large_err)]

mod map;
pub mod moved;
mod scope;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::{CallRecord, Crm, Cursor, NewContact, NewDeal, NewLead, NewTask, Page, Result};
use crate::config::{Bitrix24Config, Bitrix24Plan, Secret};
use crate::domain::{CrmKind, EntityKind, EntityRef, Pipeline, Record, User};
use crate::http::{self, Error, ErrorKind, Limiter, Throttle, backoff, php_query, redact_url};
use crate::store::{TokenSet, TokenStore};
use crate::telemetry::Observe as _;
use tokio_util::sync::CancellationToken;

const SYSTEM: &str = "bitrix24";
/// Retries of transient failures before giving up (rate limits follow [`Throttle`]).
const MAX_RETRIES: u32 = 5;
/// Rows per list page (fixed by Bitrix24).
const PAGE: usize = 50;
/// List pages chained into one `batch` request for a full read / an incremental read.
const PAGES_FULL: usize = 50;
/// Commands per `batch` (fixed by Bitrix24).
const MAX_BATCH: usize = 50;
const PAGES_INCREMENTAL: usize = 3;
/// Longest wait for an operating-time reset.
const MAX_OPERATING_WAIT: Duration = Duration::from_secs(600);

enum Auth {
    Webhook {
        /// `https://PORTAL/rest/USER/SECRET/`
        base: Secret,
    },
    OAuth(Box<OAuth>),
}

struct OAuth {
    portal: String,
    oauth_url: String,
    client_id: String,
    client_secret: Secret,
    initial_refresh: Option<Secret>,
    state: tokio::sync::Mutex<Option<TokenSet>>,
}

/// A Bitrix24 portal.
pub struct Bitrix24 {
    tenant: String,
    host: String,
    http: reqwest::Client,
    auth: Auth,
    limiter: Limiter,
    throttle: Throttle,
    budget: f64,
    /// method → (operating seconds, unix ts when the window resets)
    operating: Mutex<HashMap<String, (f64, i64)>>,
    tokens: Arc<dyn TokenStore>,
    /// `UF_CRM_*` multiple string field holding dozor's flags.
    flag_field: Option<String>,
    /// (pipeline id, first stage) of the default pipeline, once looked up.
    default_stage: tokio::sync::Mutex<Option<(String, String)>>,
    /// Single-record calls waiting to go out together in one `batch`.
    queue: std::sync::Mutex<Vec<Queued>>,
    /// Cancelled when dozor stops: every wait (rate limit, backoff, operating budget) ends.
    stop: CancellationToken,
    /// Kinds the last change probe was refused for lack of a scope, with the refusal.
    refused: std::sync::Mutex<Vec<(EntityKind, Error)>>,
    /// The portal's current origin when it moved from the configured one (see [`moved`]).
    moved: std::sync::Mutex<Option<String>>,
}

/// A single-record call waiting for the next `batch`.
struct Queued {
    method: String,
    params: Value,
    reply: tokio::sync::oneshot::Sender<Result<Value>>,
}

/// How long the first queued call waits for others to join its batch.
const COALESCE_WINDOW: std::time::Duration = std::time::Duration::from_millis(15);

/// Single-record reads and writes that may travel inside a `batch` (list calls page
/// themselves, and telephony.* registration needs the application context of a direct call).
fn coalescible(method: &str) -> bool {
    !method.starts_with("telephony.")
        && [".add", ".update", ".get", ".complete"]
            .iter()
            .any(|s| method.ends_with(s))
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Permanent, SYSTEM, "config", "", message)
}

fn read_secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    what: &str,
) -> Result<Option<Secret>> {
    if let Some(s) = inline.as_ref().filter(|s| !s.is_empty()) {
        return Ok(Some(s.clone()));
    }
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Some(Secret::new(s.trim())))
            .map_err(|e| config_error(format!("cannot read {what} from {}: {e}", path.display()))),
        None => Ok(None),
    }
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}")))
        })
        .unwrap_or_else(|| "<unknown portal>".into())
}

/// A JSON scalar as text (ids arrive as strings or numbers).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "Y".into() } else { "N".into() }),
        _ => None,
    }
}

/// A map that may arrive as `[]` when empty (PHP heritage).
fn as_map(v: Option<&Value>) -> Map<String, Value> {
    match v {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

/// `operating_reset_at` as a unix ts: a number, a numeric string or a datetime string.
fn reset_ts(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_f64().map(|f| f as i64),
        Value::String(s) => s
            .parse::<f64>()
            .ok()
            .map(|f| f as i64)
            .or_else(|| map::parse_ts(s).map(|t| t.timestamp())),
        _ => None,
    }
}

impl Bitrix24 {
    pub async fn new(
        tenant: &str,
        cfg: &Bitrix24Config,
        tokens: Arc<dyn TokenStore>,
    ) -> std::result::Result<Self, http::Error> {
        let webhook = read_secret(&cfg.webhook_url, &cfg.webhook_url_file, "webhook_url")?;
        let (auth, host) = if let Some(w) = webhook {
            let mut base = w.expose().trim().to_string();
            if !base.ends_with('/') {
                base.push('/');
            }
            if url::Url::parse(&base).is_err() {
                return Err(config_error(
                    "webhook_url is not a URL (expected https://PORTAL/rest/USER_ID/SECRET/)",
                ));
            }
            let host = host_of(&base);
            (
                Auth::Webhook {
                    base: Secret::new(base),
                },
                host,
            )
        } else {
            let portal = cfg.portal_url.clone().ok_or_else(|| {
                config_error("set webhook_url, or portal_url + client_id + client_secret for an OAuth application")
            })?;
            let client_id = cfg
                .client_id
                .clone()
                .ok_or_else(|| config_error("OAuth application needs client_id"))?;
            let client_secret =
                read_secret(&cfg.client_secret, &cfg.client_secret_file, "client_secret")?
                    .ok_or_else(|| config_error("OAuth application needs client_secret"))?;
            let initial_refresh =
                read_secret(&cfg.refresh_token, &cfg.refresh_token_file, "refresh_token")?;
            let stored = tokens.load_token(tenant, SYSTEM).await.map_err(|e| {
                Error::new(
                    ErrorKind::Permanent,
                    SYSTEM,
                    "token store",
                    "",
                    format!("cannot load the stored token: {e}"),
                )
            })?;
            if stored.is_none() && initial_refresh.is_none() {
                return Err(config_error(
                    "OAuth application needs refresh_token (none stored yet)",
                ));
            }
            let host = host_of(&portal);
            (
                Auth::OAuth(Box::new(OAuth {
                    portal: portal.trim_end_matches('/').to_string(),
                    oauth_url: cfg.oauth_url.trim_end_matches('/').to_string(),
                    client_id,
                    client_secret,
                    initial_refresh,
                    state: tokio::sync::Mutex::new(stored),
                })),
                host,
            )
        };
        let moved = moved::load(tokens.as_ref(), tenant).await;
        if let Some(to) = &moved {
            tracing::info!(tenant, from = %host, to = %host_of(to), "bitrix24 portal moved earlier: using its new address");
        }
        let (rate, burst) = match cfg.plan {
            Bitrix24Plan::Standard => (2, 50),
            Bitrix24Plan::Enterprise => (5, 250),
        };
        Ok(Bitrix24 {
            tenant: tenant.to_string(),
            host,
            http: http::client(Duration::from_secs(60)),
            auth,
            limiter: Limiter::new(rate, burst).for_system(SYSTEM),
            // The fact sheet: back off from about a second on QUERY_LIMIT_EXCEEDED.
            throttle: Throttle::default(),
            budget: cfg.operating_budget_secs,
            operating: Mutex::new(HashMap::new()),
            tokens,
            flag_field: cfg
                .flag_field
                .as_ref()
                .map(|f| f.trim().to_ascii_uppercase())
                .filter(|f| !f.is_empty()),
            default_stage: tokio::sync::Mutex::new(None),
            queue: std::sync::Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            refused: std::sync::Mutex::new(Vec::new()),
            moved: std::sync::Mutex::new(moved),
        })
    }

    /// Ends every wait of this client early once `stop` is cancelled.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Waits `d` before retrying `method`; an error if dozor is stopping meanwhile.
    async fn wait(&self, d: Duration, method: &str) -> Result<()> {
        http::pause(d, &self.stop)
            .await
            .map_err(|s| s.error(SYSTEM, method, self.shown_url(method)))
    }

    /// Replaces how rate-limit refusals are waited out (tests shorten the waits).
    pub fn with_throttle(mut self, throttle: Throttle) -> Self {
        self.throttle = throttle;
        self
    }

    fn err(&self, kind: ErrorKind, method: &str, url: &str, msg: impl Into<String>) -> Error {
        Error::new(kind, SYSTEM, method, url, msg)
    }

    /// Waits while `method` is at its operating-time budget.
    async fn respect_budget(&self, method: &str) -> Result<()> {
        let wait = {
            let ops = self.operating.lock().unwrap_or_else(|e| e.into_inner());
            match ops.get(method) {
                Some((used, reset)) if *used >= self.budget * 0.95 => {
                    let secs = reset - Utc::now().timestamp();
                    (secs > 0).then(|| Duration::from_secs(secs as u64).min(MAX_OPERATING_WAIT))
                }
                _ => None,
            }
        };
        if let Some(w) = wait {
            tracing::warn!(
                method,
                wait_s = w.as_secs(),
                "bitrix24 operating budget reached, pausing method"
            );
            self.wait(w, method).await?;
            self.operating
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(method);
        }
        Ok(())
    }

    fn note_time(&self, method: &str, time: Option<&Value>) {
        let Some(t) = time else { return };
        let used = t.get("operating").and_then(Value::as_f64);
        let reset = reset_ts(t.get("operating_reset_at"));
        if let Some(used) = used {
            crate::telemetry::set_bitrix24_operating(&self.tenant, method, used);
            self.operating
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(method.to_string(), (used, reset.unwrap_or(0)));
        }
    }

    fn operating_wait(&self, method: &str) -> Duration {
        let ops = self.operating.lock().unwrap_or_else(|e| e.into_inner());
        let secs = ops
            .get(method)
            .map(|(_, r)| r - Utc::now().timestamp())
            .filter(|s| *s > 0)
            .unwrap_or(60);
        Duration::from_secs(secs as u64).min(MAX_OPERATING_WAIT)
    }

    /// Turns an `{"error": ...}` answer into a typed error.
    fn classify(&self, method: &str, url: &str, status: Option<u16>, body: &Value) -> Error {
        let code = body.get("error").and_then(text).unwrap_or_default();
        let desc = body
            .get("error_description")
            .and_then(text)
            .unwrap_or_default();
        let message = match (code.is_empty(), desc.is_empty()) {
            (_, false) => desc.clone(),
            (false, true) => code.clone(),
            (true, true) => "error without description".into(),
        };
        let st = status.unwrap_or(0);
        let kind = match code.as_str() {
            "expired_token"
            | "invalid_token"
            | "NO_AUTH_FOUND"
            | "INVALID_CREDENTIALS"
            | "insufficient_scope"
            | "user_access_error"
            | "invalid_grant"
            | "invalid_client"
            | "PAYMENT_REQUIRED" => ErrorKind::Auth,
            "QUERY_LIMIT_EXCEEDED" | "OPERATION_TIME_LIMIT" => ErrorKind::RateLimited,
            // Set by hand at Bitrix24 support: retrying only prolongs it.
            "OVERLOAD_LIMIT" => ErrorKind::Permanent,
            "INTERNAL_SERVER_ERROR" | "ERROR_UNEXPECTED_ANSWER" => ErrorKind::Transient,
            "PORTAL_DELETED" => ErrorKind::Permanent,
            _ if st == 401 => ErrorKind::Auth,
            _ if st == 503 || st == 429 => ErrorKind::RateLimited,
            _ if st >= 500 => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        };
        let mut e = self.err(kind, method, url, message);
        if let Some(s) = status {
            e = e.status(s);
        }
        if !code.is_empty() {
            e = e.code(code.clone());
        }
        if code == "OPERATION_TIME_LIMIT" {
            e = e.retry_after(self.operating_wait(method));
        }
        e
    }

    /// `url` on the portal's current address.
    fn current(&self, url: &str) -> String {
        match &*self.moved.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(to) => moved::rebase(url, to),
            None => url.to_string(),
        }
    }

    /// After a redirect from `from` to `to`: when the origin changed, use the new one from now
    /// on and store it, saying so once.
    async fn remember_move(&self, from: &str, to: &str) {
        let (Some(old), Some(new)) = (moved::origin(from), moved::origin(to)) else {
            return;
        };
        if old == new {
            return;
        }
        {
            let mut m = self.moved.lock().unwrap_or_else(|e| e.into_inner());
            if m.as_deref() == Some(new.as_str()) {
                return;
            }
            *m = Some(new.clone());
        }
        tracing::warn!(
            tenant = %self.tenant,
            from = %host_of(&old),
            to = %host_of(&new),
            "bitrix24 portal address moved: dozor uses the new address from now on; update crm.webhook_url (or portal_url) in the config"
        );
        if let Err(e) = moved::save(self.tokens.as_ref(), &self.tenant, &old, &new).await {
            tracing::warn!(tenant = %self.tenant, error = %e, "cannot store the moved bitrix24 address; it is learnt again after a restart");
        }
    }

    /// Sends one request and interprets the answer (no retries).
    async fn send_once(&self, method: &str, url: &str, shown: &str, body: &Value) -> Result<Value> {
        // A renamed portal answers 3xx; re-POST to the new address (a followed redirect
        // would turn into a GET and lose the body).
        let mut target = url.to_string();
        let mut hops = 0;
        let resp = loop {
            let resp = self
                .http
                .post(&target)
                .header(reqwest::header::ACCEPT, "application/json")
                .json(body)
                .send()
                .await
                .observe(SYSTEM, method)
                .map_err(|e| Error::transport(SYSTEM, method, shown, &e))?;
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url::Url::parse(&target).ok()?.join(l).ok());
            match location {
                Some(next) if resp.status().is_redirection() && hops < 3 => {
                    tracing::debug!(
                        from = %host_of(&target),
                        to = %host_of(next.as_str()),
                        "bitrix24 portal redirects"
                    );
                    target = next.to_string();
                    hops += 1;
                }
                _ => break resp,
            }
        };
        if hops > 0 {
            self.remember_move(url, &target).await;
        }
        let status = resp.status().as_u16();
        let bytes = http::read_body(resp, http::MAX_BODY, SYSTEM, method, shown).await?;
        let parsed: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) if status >= 500 => {
                return Err(self
                    .err(
                        ErrorKind::Transient,
                        method,
                        shown,
                        format!("server error with unreadable body: {e}"),
                    )
                    .status(status));
            }
            Err(e) => {
                return Err(self
                    .err(
                        ErrorKind::Decode,
                        method,
                        shown,
                        format!("malformed JSON in the answer: {e}"),
                    )
                    .status(status));
            }
        };
        if parsed.get("error").is_some_and(|e| !e.is_null()) || !(200..300).contains(&status) {
            return Err(self.classify(method, shown, Some(status), &parsed));
        }
        if parsed.get("result").is_none() {
            return Err(self
                .err(ErrorKind::Decode, method, shown, "answer has no `result`")
                .status(status));
        }
        Ok(parsed)
    }

    /// Calls a REST method and returns its envelope. Single-record calls made at the same time
    /// (the ledger runs a rule's actions concurrently) are sent together as one `batch` of up to
    /// 50 commands: one request against the portal's 2 req/s instead of fifty.
    async fn call(&self, method: &str, params: &Value) -> Result<Value> {
        if !coalescible(method) {
            return self.call_direct(method, params).await;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        let leader = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push(Queued {
                method: method.to_string(),
                params: params.clone(),
                reply,
            });
            q.len() == 1
        };
        if leader {
            tokio::time::sleep(COALESCE_WINDOW).await;
            loop {
                let chunk: Vec<Queued> = {
                    let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                    if q.is_empty() {
                        break;
                    }
                    let n = q.len().min(50);
                    q.drain(..n).collect()
                };
                self.flush(chunk).await;
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(self.decode(method, "queued call was dropped")))
    }

    /// Sends queued calls: alone when there is one, else as one `batch`.
    async fn flush(&self, mut chunk: Vec<Queued>) {
        if chunk.len() == 1 {
            let q = chunk.pop().expect("one call");
            let r = self.call_direct(&q.method, &q.params).await;
            let _ = q.reply.send(r);
            return;
        }
        let cmds: Vec<(String, String)> = chunk
            .iter()
            .enumerate()
            .map(|(i, q)| {
                (
                    format!("w{i:02}"),
                    format!("{}?{}", q.method, crate::http::php_query::build(&q.params)),
                )
            })
            .collect();
        match self.batch(&cmds).await {
            Ok((results, errors)) => {
                for ((key, _), q) in cmds.iter().zip(chunk) {
                    let r = if let Some(v) = results.get(key) {
                        Ok(json!({ "result": v }))
                    } else if let Some(e) = errors.get(key) {
                        Err(self.command_error(&q.method, e))
                    } else {
                        Err(self.decode(&q.method, "batch answer has no result for the command"))
                    };
                    let _ = q.reply.send(r);
                }
            }
            Err(e) => {
                for q in chunk {
                    let _ = q.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// A failed command inside a batch, as the error the direct call would have given: the
    /// same classification, without the HTTP status a batch does not carry per command.
    fn command_error(&self, method: &str, e: &Value) -> Error {
        let url = self.shown_url(method);
        self.classify(method, &url, None, e)
    }

    /// Calls a REST method and returns the whole envelope (`result`, `total`, `next`, `time`).
    async fn call_direct(&self, method: &str, params: &Value) -> Result<Value> {
        let mut attempt = 0u32;
        let mut refusals = self.throttle.start();
        let mut refreshed = false;
        loop {
            self.respect_budget(method).await?;
            self.limiter
                .acquire(&self.stop)
                .await
                .map_err(|s| s.error(SYSTEM, method, self.shown_url(method)))?;
            let (url, body, token) = self.prepare(method, params).await?;
            let shown = redact_url(&url);
            match self.send_once(method, &url, &shown, &body).await {
                Ok(v) => {
                    self.note_time(method, v.get("time"));
                    return Ok(v);
                }
                Err(e) if e.code.as_deref() == Some("expired_token") && !refreshed => {
                    let Auth::OAuth(o) = &self.auth else {
                        return Err(e);
                    };
                    refreshed = true;
                    self.refresh(o, token.as_deref()).await?;
                }
                Err(e) => match retry_wait(&e, &mut attempt, &mut refusals) {
                    Some(wait) => {
                        tracing::debug!(method, attempt, refusals = refusals.count(), wait_ms = wait.as_millis() as u64, error = %e, "bitrix24 retry");
                        self.wait(wait, method).await?;
                    }
                    None => return Err(e),
                },
            }
        }
    }

    /// URL and body of a call; for OAuth the access token goes into the body, never the URL.
    async fn prepare(
        &self,
        method: &str,
        params: &Value,
    ) -> Result<(String, Value, Option<String>)> {
        match &self.auth {
            Auth::Webhook { base } => Ok((
                self.current(&format!("{}{method}", base.expose())),
                params.clone(),
                None,
            )),
            Auth::OAuth(o) => {
                let current = o.state.lock().await.clone();
                let set = match current {
                    Some(s) if s.is_fresh() => s,
                    Some(s) if !s.access_token.is_empty() => {
                        // About to expire: refresh now rather than have this call refused.
                        match self.refresh(o, Some(s.access_token.expose())).await {
                            Ok(new) => new,
                            // The old token still works for a moment; a refresh the server
                            // refused for good is reported by the reactive path.
                            Err(e)
                                if e.kind != ErrorKind::Auth
                                    && s.expires_at.is_some_and(|t| t > Utc::now()) =>
                            {
                                tracing::warn!(error = %e, "bitrix24 token refresh ahead of expiry failed; using the current token");
                                s
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    _ => self.refresh(o, None).await?,
                };
                let endpoint = set
                    .extra
                    .get("client_endpoint")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}/rest/", o.portal));
                let endpoint = if endpoint.ends_with('/') {
                    endpoint
                } else {
                    format!("{endpoint}/")
                };
                let mut body = match params {
                    Value::Object(m) => m.clone(),
                    _ => Map::new(),
                };
                let token = set.access_token.expose().to_string();
                body.insert("auth".into(), Value::String(token.clone()));
                Ok((
                    self.current(&format!("{endpoint}{method}")),
                    Value::Object(body),
                    Some(token),
                ))
            }
        }
    }

    /// Exchanges the refresh token for a new pair and stores it before anything uses it.
    /// `stale` is the access token the caller found refused or about to expire (`None`: it
    /// found none). Refreshes are single-flight: the state lock is held throughout, and a task
    /// that waited for it takes the pair the previous holder obtained instead of spending the
    /// refresh token again.
    async fn refresh(&self, o: &OAuth, stale: Option<&str>) -> Result<TokenSet> {
        let mut state = o.state.lock().await;
        if let Some(cur) = state.as_ref()
            && cur.is_fresh()
            && stale.is_none_or(|s| cur.access_token.expose() != s)
        {
            return Ok(cur.clone());
        }
        let method = "oauth.token";
        let refresh = state
            .as_ref()
            .and_then(|s| s.refresh_token.clone())
            .or_else(|| o.initial_refresh.clone())
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Auth,
                    method,
                    "",
                    "no refresh token: the Bitrix24 application must be re-authorised",
                )
            })?;
        let mut url = url::Url::parse(&format!("{}/oauth/token/", o.oauth_url))
            .map_err(|e| config_error(format!("oauth_url is not a URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &o.client_id)
            .append_pair("client_secret", o.client_secret.expose())
            .append_pair("refresh_token", refresh.expose());
        let shown = redact_url(url.as_str());
        let mut attempt = 0;
        let mut refusals = self.throttle.start();
        let body = loop {
            let result = async {
                let resp = self
                    .http
                    .get(url.clone())
                    .send()
                    .await
                    .observe(SYSTEM, method)
                    .map_err(|e| Error::transport(SYSTEM, method, &shown, &e))?;
                let status = resp.status().as_u16();
                let bytes = http::read_body(resp, http::MAX_BODY, SYSTEM, method, &shown).await?;
                let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    let kind = if status >= 500 { ErrorKind::Transient } else { ErrorKind::Decode };
                    self.err(kind, method, &shown, format!("malformed token answer: {e}")).status(status)
                })?;
                if v.get("error").is_some_and(|e| !e.is_null()) || !(200..300).contains(&status) {
                    let mut e = self.classify(method, &shown, Some(status), &v);
                    if e.code.as_deref() == Some("invalid_grant") {
                        crate::telemetry::set_reauth_required(&self.tenant, SYSTEM, true);
                        e.kind = ErrorKind::Auth;
                        e.message = "the refresh token was refused (invalid_grant): the Bitrix24 application must be re-authorised".into();
                    }
                    return Err(e);
                }
                Ok(v)
            }
            .await;
            match result {
                Ok(v) => break v,
                Err(e) => match retry_wait(&e, &mut attempt, &mut refusals) {
                    Some(wait) => self.wait(wait, method).await?,
                    None => return Err(e),
                },
            }
        };
        let field = |k: &str| body.get(k).and_then(text).filter(|s| !s.is_empty());
        let (Some(access), Some(new_refresh)) = (field("access_token"), field("refresh_token"))
        else {
            return Err(self.err(
                ErrorKind::Decode,
                method,
                &shown,
                "token answer lacks access_token or refresh_token",
            ));
        };
        let now = Utc::now();
        // A lifetime out of its sane range is clamped: a short one only refreshes early.
        let ttl =
            crate::domain::bounds::token_ttl(body.get("expires_in").and_then(Value::as_i64), 3600);
        let set = TokenSet {
            access_token: Secret::new(access),
            refresh_token: Some(Secret::new(new_refresh)),
            expires_at: Some(now + ttl),
            refreshed_at: Some(now),
            extra: json!({
                "client_endpoint": field("client_endpoint"),
                "member_id": field("member_id"),
                "domain": field("domain"),
            }),
        };
        self.tokens
            .save_token(&self.tenant, SYSTEM, &set)
            .await
            .map_err(|e| {
                self.err(
                    ErrorKind::Permanent,
                    method,
                    &shown,
                    format!("cannot store the refreshed token: {e}"),
                )
            })?;
        crate::telemetry::set_reauth_required(&self.tenant, SYSTEM, false);
        *state = Some(set.clone());
        Ok(set)
    }

    /// `batch` with ordered commands; returns (result, result_error) maps.
    async fn batch(
        &self,
        cmds: &[(String, String)],
    ) -> Result<(Map<String, Value>, Map<String, Value>)> {
        let mut cmd = Map::new();
        for (k, c) in cmds {
            cmd.insert(k.clone(), Value::String(c.clone()));
        }
        for (_, c) in cmds {
            let m = c.split('?').next().unwrap_or("");
            self.respect_budget(m).await?;
        }
        let env = self
            .call_direct("batch", &json!({"halt": 0, "cmd": cmd}))
            .await?;
        let inner = env.get("result").cloned().unwrap_or(Value::Null);
        if !inner.is_object() {
            let url = self.shown_url("batch");
            return Err(self.err(
                ErrorKind::Decode,
                "batch",
                &url,
                "batch answer has no result map",
            ));
        }
        let times = as_map(inner.get("result_time"));
        for (k, c) in cmds {
            let m = c.split('?').next().unwrap_or("");
            self.note_time(m, times.get(k));
        }
        Ok((
            as_map(inner.get("result")),
            as_map(inner.get("result_error")),
        ))
    }

    fn shown_url(&self, method: &str) -> String {
        match &self.auth {
            Auth::Webhook { base } => redact_url(&format!("{}{method}", base.expose())),
            Auth::OAuth(o) => redact_url(&format!("{}/rest/{method}", o.portal)),
        }
    }

    fn decode(&self, method: &str, msg: impl Into<String>) -> Error {
        let url = self.shown_url(method);
        self.err(ErrorKind::Decode, method, &url, msg)
    }

    /// The list spec of a kind, with the flag field selected where flags live.
    fn spec(&self, entity: EntityKind) -> map::ListSpec {
        let mut spec = map::ListSpec::of(entity);
        if let Some(f) = &self.flag_field
            && matches!(
                entity,
                EntityKind::Deal | EntityKind::Contact | EntityKind::Company
            )
        {
            spec.select.push(f.clone());
        }
        spec
    }

    /// `pages` chained list commands (keys `{prefix}00`, `{prefix}01`, ...) continuing `cursor`.
    fn page_cmds(
        &self,
        spec: &map::ListSpec,
        cursor: &Cursor,
        pages: usize,
        prefix: &str,
    ) -> Vec<(String, String)> {
        let last: u64 = cursor
            .position
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let mut filter = Map::new();
        if let Some(since) = cursor.since {
            filter.insert(
                format!(">={}", spec.date_field),
                Value::String(since.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()),
            );
        }
        let mut base = json!({
            "order": {spec.id_field: "ASC"},
            "select": spec.select,
        });
        if spec.fast {
            base["start"] = json!(-1);
        }
        chained_cmds(spec, &base, filter, last, pages, prefix)
    }

    /// Turns the answers of [`Self::page_cmds`] into a page; also says how many rows the first
    /// command returned.
    fn parse_pages(
        &self,
        entity: EntityKind,
        spec: &map::ListSpec,
        cursor: &Cursor,
        cmds: &[(String, String)],
        results: &Map<String, Value>,
        errors: &Map<String, Value>,
    ) -> Result<(Page, usize)> {
        let last: u64 = cursor
            .position
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let mut records = Vec::new();
        let mut position = last;
        let mut high = cursor.high_water;
        let mut done = false;
        let mut first_rows = 0;
        for (i, (key, _)) in cmds.iter().enumerate() {
            if let Some(e) = errors.get(key) {
                if i == 0 {
                    let url = self.shown_url(spec.method);
                    return Err(self.classify(spec.method, &url, None, e));
                }
                break;
            }
            let Some(res) = results.get(key) else {
                if i == 0 {
                    return Err(self.decode(spec.method, "batch answer lacks the first page"));
                }
                break;
            };
            let rows = list_rows(res, spec.wrapped)
                .ok_or_else(|| self.decode(spec.method, "list result is not an array"))?;
            if i == 0 {
                first_rows = rows.len();
            }
            for row in &rows {
                let mapped = match map::record(entity, row) {
                    Ok(m) => m,
                    // A row that cannot be read (a date in year 9999, a field of the wrong
                    // shape) is refused alone: one poisoned record must not stop the sync of
                    // every other. Without an id there is no way past it, so the page fails.
                    Err(why) => match map::row_id(row, spec.row_id) {
                        Some(id) => {
                            tracing::warn!(system = SYSTEM, method = spec.method, record = id, reason = %why, "record refused");
                            position = position.max(id);
                            continue;
                        }
                        None => return Err(self.decode(spec.method, why)),
                    },
                };
                let Some(mut rec) = mapped else {
                    // A row we do not mirror (e.g. a task-type activity); still advance past it.
                    if let Some(id) = map::row_id(row, spec.row_id) {
                        position = position.max(id);
                    }
                    continue;
                };
                let id = map::row_id(row, spec.row_id)
                    .ok_or_else(|| self.decode(spec.method, "row without a numeric id"))?;
                position = position.max(id);
                if let Some(f) = &self.flag_field {
                    let flags = row.get(f.as_str()).map(flag_values).unwrap_or_default();
                    match &mut rec {
                        Record::Deal(d) => d.tags = flags,
                        Record::Contact(c) => c.tags = flags,
                        Record::Company(c) => c.tags = flags,
                        _ => {}
                    }
                }
                let up = rec.updated_at();
                high = Some(high.map_or(up, |h| h.max(up)));
                records.push(rec);
            }
            if rows.len() < PAGE {
                done = true;
                break;
            }
        }
        let next = Cursor {
            since: cursor.since,
            position: (!done).then(|| position.to_string()),
            high_water: high,
        };
        Ok((
            Page {
                records,
                next,
                done,
                deleted: Vec::new(),
            },
            first_rows,
        ))
    }

    /// Reads one batch of chained list pages.
    async fn read_pages(&self, entity: EntityKind, cursor: &Cursor) -> Result<Page> {
        let spec = self.spec(entity);
        let pages = if cursor.since.is_some() {
            PAGES_INCREMENTAL
        } else {
            PAGES_FULL
        };
        let cmds = self.page_cmds(&spec, cursor, pages, "p");
        let (results, errors) = self.batch(&cmds).await?;
        self.parse_pages(entity, &spec, cursor, &cmds, &results, &errors)
            .map(|(page, _)| page)
    }

    /// One `batch` with the first pages of every kind; kinds whose first page is empty are left
    /// out.
    async fn probe_changes(
        &self,
        cursors: &[(EntityKind, Cursor)],
    ) -> Result<Vec<(EntityKind, Page)>> {
        let per = (MAX_BATCH / cursors.len().max(1)).max(1);
        let mut plan = Vec::with_capacity(cursors.len());
        let mut cmds = Vec::new();
        for (i, (kind, cursor)) in cursors.iter().enumerate() {
            let spec = self.spec(*kind);
            let mine = self.page_cmds(&spec, cursor, per, &format!("k{i}p"));
            cmds.extend(mine.iter().cloned());
            plan.push((*kind, cursor, spec, mine));
        }
        let (results, errors) = self.batch(&cmds).await?;
        let mut out = Vec::new();
        for (kind, cursor, spec, mine) in &plan {
            match self.parse_pages(*kind, spec, cursor, mine, &results, &errors) {
                Ok((page, first_rows)) => {
                    if first_rows > 0 {
                        out.push((*kind, page));
                    }
                }
                // One kind the credentials may not read must not keep the others out of the
                // mirror: it is set aside and reported by the sync (see `Crm::refused_kinds`).
                Err(e) if scope::is_refusal(&e) => {
                    let e = scope::kind_refused(*kind, e);
                    tracing::warn!(system = SYSTEM, entity = kind.as_str(), error = %e, "kind not readable with these credentials");
                    self.refused
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((*kind, e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Every id of a list method, 50 chained ID-only pages per `batch`.
    async fn all_ids(
        &self,
        spec: &map::ListSpec,
        extra_filter: Map<String, Value>,
        prefix: &str,
    ) -> Result<Vec<String>> {
        let mut base = json!({
            "order": {spec.id_field: "ASC"},
            "select": [spec.id_field],
        });
        if spec.fast {
            base["start"] = json!(-1);
        }
        let mut ids = Vec::new();
        let mut last = 0u64;
        loop {
            let cmds = chained_cmds(spec, &base, extra_filter.clone(), last, MAX_BATCH, "i");
            let (results, errors) = self.batch(&cmds).await?;
            let mut done = false;
            for (i, (key, _)) in cmds.iter().enumerate() {
                if let Some(e) = errors.get(key) {
                    if i == 0 {
                        let url = self.shown_url(spec.method);
                        return Err(self.classify(spec.method, &url, None, e));
                    }
                    done = true;
                    break;
                }
                let Some(rows) = results.get(key).and_then(|r| list_rows(r, spec.wrapped)) else {
                    return Err(self.decode(spec.method, "list result is not an array"));
                };
                for row in &rows {
                    let id = map::row_id(row, spec.row_id)
                        .ok_or_else(|| self.decode(spec.method, "row without a numeric id"))?;
                    last = last.max(id);
                    ids.push(format!("{prefix}{id}"));
                }
                if rows.len() < PAGE {
                    done = true;
                    break;
                }
            }
            if done {
                return Ok(ids);
            }
        }
    }
}

/// How long to wait before retrying after `e`; `None` when it must not be retried. Rate
/// limits are waited out by `refusals` however many there are; other transient failures get
/// [`MAX_RETRIES`] attempts with backoff.
fn retry_wait(e: &Error, attempt: &mut u32, refusals: &mut http::Refusals) -> Option<Duration> {
    if e.kind == ErrorKind::RateLimited {
        return refusals.next(e.retry_after);
    }
    if !e.is_retryable() || *attempt >= MAX_RETRIES {
        return None;
    }
    let wait = e.retry_after.unwrap_or_else(|| backoff(*attempt));
    *attempt += 1;
    Some(wait)
}

/// Rows of a list answer (`result[]`, or `result.tasks[]` for wrapped lists).
fn list_rows(res: &Value, wrapped: Option<&str>) -> Option<Vec<Value>> {
    let rows = match wrapped {
        Some(w) => res.get(w),
        None => Some(res),
    };
    match rows {
        Some(Value::Array(a)) => Some(a.clone()),
        Some(Value::Object(m)) => Some(m.values().cloned().collect()),
        _ => None,
    }
}

/// Chained fast-paging commands: the first starts after `last`, each next one after the last
/// id of the previous page (`$result[prev][49][ID]`).
fn chained_cmds(
    spec: &map::ListSpec,
    base: &Value,
    filter: Map<String, Value>,
    last: u64,
    pages: usize,
    prefix: &str,
) -> Vec<(String, String)> {
    let mut cmds = Vec::with_capacity(pages);
    for i in 0..pages {
        let key = format!("{prefix}{i:02}");
        let mut p = base.clone();
        let mut f = filter.clone();
        if i == 0 {
            f.insert(format!(">{}", spec.id_field), json!(last));
        }
        p["filter"] = Value::Object(f);
        let mut q = php_query::build(&p);
        if i > 0 {
            let prev = format!("{prefix}{:02}", i - 1);
            let path = match spec.wrapped {
                Some(w) => format!("$result[{prev}][{w}][{}][{}]", PAGE - 1, spec.row_id),
                None => format!("$result[{prev}][{}][{}]", PAGE - 1, spec.row_id),
            };
            q.push_str(&format!("&filter[>{}]={path}", spec.id_field));
        }
        cmds.push((key, format!("{}?{q}", spec.method)));
    }
    cmds
}

/// Values of a multiple string field (`["a","b"]`, `false`/`""`/null when empty).
fn flag_values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(_) | Value::Object(_) => php_query::as_list(v)
            .iter()
            .filter_map(text)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Value::String(s) if !s.trim().is_empty() => vec![s.trim().to_string()],
        _ => Vec::new(),
    }
}

#[async_trait]
impl Crm for Bitrix24 {
    fn kind(&self) -> CrmKind {
        CrmKind::Bitrix24
    }

    fn account(&self) -> String {
        self.host.clone()
    }

    async fn ping(&self) -> Result<String> {
        let env = self.call("profile", &json!({})).await?;
        let r = &env["result"];
        let get = |k: &str| r.get(k).and_then(text).unwrap_or_default();
        let id = get("ID");
        if id.is_empty() {
            return Err(self.decode("profile", "profile answer has no ID"));
        }
        let name = format!("{} {}", get("NAME"), get("LAST_NAME"));
        let mut who = format!("{} (id {id})", name.trim());
        if let Some(to) = self.moved.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            who = format!(
                "{who}; the portal moved to {}: update crm.webhook_url (or portal_url) in the config",
                host_of(&to)
            );
        }
        // `profile` answers whatever the scopes: ask which ones were granted, so a webhook
        // without `task` fails here and not at the first sync.
        let env = self.call("scope", &json!({})).await?;
        let granted: Vec<String> = env["result"]
            .as_array()
            .map(|a| a.iter().filter_map(text).collect())
            .unwrap_or_default();
        let url = self.shown_url("scope");
        scope::verdict(&who, &granted).map_err(|m| {
            self.err(ErrorKind::Auth, "scope", &url, m)
                .code("insufficient_scope")
        })
    }

    async fn users(&self) -> Result<Vec<User>> {
        let mut out = Vec::new();
        let mut start = 0u64;
        loop {
            let env = self
                .call(
                    "user.get",
                    &json!({"sort": "ID", "order": "ASC", "start": start}),
                )
                .await
                .map_err(|e| {
                    if scope::is_refusal(&e) {
                        scope::refused_for("user", e)
                    } else {
                        e
                    }
                })?;
            let Some(rows) = env["result"].as_array() else {
                return Err(self.decode("user.get", "result is not an array"));
            };
            for row in rows {
                out.push(map::user(row).map_err(|m| self.decode("user.get", m))?);
            }
            match env.get("next").and_then(|n| text(n)?.parse::<u64>().ok()) {
                Some(n) if n > start && !rows.is_empty() => start = n,
                _ => break,
            }
        }
        Ok(out)
    }

    async fn pipelines(&self) -> Result<Vec<Pipeline>> {
        let status = |entity: &str| {
            format!(
                "crm.status.list?{}",
                php_query::build(
                    &json!({"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}})
                )
            )
        };
        let cmds = vec![
            (
                "cats".to_string(),
                "crm.category.list?entityTypeId=2".to_string(),
            ),
            ("leads".to_string(), status("STATUS")),
            ("s0".to_string(), status("DEAL_STAGE")),
        ];
        let (res, errs) = self.batch(&cmds).await?;
        if let Some((k, e)) = errs.iter().next() {
            let m = if k == "cats" {
                "crm.category.list"
            } else {
                "crm.status.list"
            };
            let url = self.shown_url(m);
            let e = self.classify(m, &url, None, e);
            return Err(if scope::is_refusal(&e) {
                scope::refused_for("crm", e)
            } else {
                e
            });
        }
        let cats = res
            .get("cats")
            .and_then(|c| c.get("categories"))
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| self.decode("crm.category.list", "no categories in the answer"))?;
        let mut cat_list: Vec<(String, String, bool, i64)> = cats
            .iter()
            .filter_map(|c| {
                let id = c.get("id").and_then(text)?;
                let name = c.get("name").and_then(text).unwrap_or_default();
                let def = c
                    .get("isDefault")
                    .and_then(text)
                    .is_some_and(|d| d == "Y" || d == "true");
                let sort = c
                    .get("sort")
                    .and_then(text)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                Some((id, name, def, sort))
            })
            .collect();
        if !cat_list.iter().any(|c| c.0 == "0") {
            cat_list.insert(0, ("0".into(), "General".into(), true, 0));
        }
        cat_list.sort_by_key(|c| c.3);
        let others: Vec<(String, String)> = cat_list
            .iter()
            .filter(|c| c.0 != "0")
            .map(|c| (format!("s{}", c.0), status(&format!("DEAL_STAGE_{}", c.0))))
            .collect();
        let mut stage_rows: HashMap<String, Value> = HashMap::new();
        stage_rows.insert("0".into(), res.get("s0").cloned().unwrap_or(Value::Null));
        for chunk in others.chunks(50) {
            let (r, e) = self.batch(chunk).await?;
            if let Some((_, e)) = e.iter().next() {
                let url = self.shown_url("crm.status.list");
                return Err(self.classify("crm.status.list", &url, None, e));
            }
            for (k, v) in r {
                stage_rows.insert(k.trim_start_matches('s').to_string(), v);
            }
        }
        let mut out = Vec::new();
        for (id, name, def, _) in &cat_list {
            let rows = stage_rows.get(id).cloned().unwrap_or(Value::Null);
            let stages = map::stages(id, &rows);
            out.push(Pipeline {
                id: id.clone(),
                name: name.clone(),
                is_default: *def,
                stages,
            });
        }
        out.push(Pipeline {
            id: "leads".into(),
            name: "Leads".into(),
            is_default: false,
            stages: map::stages("leads", res.get("leads").unwrap_or(&Value::Null)),
        });
        Ok(out)
    }

    async fn fetch_page(&self, entity: EntityKind, cursor: &Cursor) -> Result<Page> {
        // `batch` itself is retried by `call`; a refused first command (its method over the
        // operating budget, a transient failure inside the batch) is retried here.
        let mut attempt = 0;
        let mut refusals = self.throttle.start();
        loop {
            match self.read_pages(entity, cursor).await {
                Err(e) if e.method != "batch" => {
                    match retry_wait(&e, &mut attempt, &mut refusals) {
                        Some(wait) => self.wait(wait, &e.method).await?,
                        None => return Err(e),
                    }
                }
                other => return other,
            }
        }
    }

    async fn find_by_phone(&self, e164: &str) -> Result<Vec<EntityRef>> {
        let digits: String = e164.chars().filter(|c| c.is_ascii_digit()).collect();
        let mut values = vec![e164.to_string(), digits.clone()];
        if digits.len() == 11 && digits.starts_with('7') {
            values.push(format!("8{}", &digits[1..]));
            values.push(digits[1..].to_string());
        }
        values.dedup();
        let env = self
            .call(
                "crm.duplicate.findbycomm",
                &json!({"type": "PHONE", "values": values}),
            )
            .await?;
        let mut out: Vec<EntityRef> = Vec::new();
        if let Value::Object(m) = &env["result"] {
            for (ty, ids) in m {
                let kind = match ty.as_str() {
                    "LEAD" => EntityKind::Lead,
                    "CONTACT" => EntityKind::Contact,
                    "COMPANY" => EntityKind::Company,
                    _ => continue,
                };
                for id in php_query::as_list(ids) {
                    if let Some(id) = text(&id) {
                        let r = EntityRef::new(kind, id);
                        if !out.contains(&r) {
                            out.push(r);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    async fn create_task(&self, task: &NewTask) -> Result<String> {
        let mut fields = json!({
            "TITLE": task.title,
            "DESCRIPTION": task.description,
            "RESPONSIBLE_ID": task.responsible_id,
            "DEADLINE": task.deadline.format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
        });
        if let Some(b) = task.entity.as_ref().and_then(map::binding) {
            fields["UF_CRM_TASK"] = json!([b]);
        }
        let env = self
            .call("tasks.task.add", &json!({"fields": fields}))
            .await?;
        env["result"]
            .get("task")
            .and_then(|t| t.get("id").or_else(|| t.get("ID")))
            .and_then(text)
            .ok_or_else(|| self.decode("tasks.task.add", "answer has no task id"))
    }

    async fn add_comment(&self, entity: &EntityRef, text_: &str) -> Result<String> {
        let ty = match entity.kind {
            EntityKind::Lead => "lead",
            EntityKind::Deal => "deal",
            EntityKind::Contact => "contact",
            EntityKind::Company => "company",
            _ => {
                return Err(self.err(
                    ErrorKind::Permanent,
                    "crm.timeline.comment.add",
                    "",
                    "timeline comments attach to leads, deals, contacts or companies",
                ));
            }
        };
        let id: Value = entity
            .id
            .parse::<u64>()
            .map(|n| json!(n))
            .unwrap_or_else(|_| json!(entity.id));
        let env = self
            .call(
                "crm.timeline.comment.add",
                &json!({"fields": {"ENTITY_ID": id, "ENTITY_TYPE": ty, "COMMENT": text_}}),
            )
            .await?;
        text(&env["result"])
            .ok_or_else(|| self.decode("crm.timeline.comment.add", "answer has no comment id"))
    }

    async fn fetch_changes(
        &self,
        cursors: &[(EntityKind, Cursor)],
    ) -> Result<Vec<(EntityKind, Page)>> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut out = Vec::new();
        for chunk in cursors.chunks(MAX_BATCH) {
            let mut attempt = 0;
            let mut refusals = self.throttle.start();
            loop {
                match self.probe_changes(chunk).await {
                    Err(e) if e.method != "batch" => {
                        match retry_wait(&e, &mut attempt, &mut refusals) {
                            Some(wait) => self.wait(wait, &e.method).await?,
                            None => return Err(e),
                        }
                    }
                    Err(e) => return Err(e),
                    Ok(pages) => {
                        out.extend(pages);
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    fn refused_kinds(&self) -> Vec<(EntityKind, Error)> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn is_refusal(&self, e: &Error) -> bool {
        scope::is_refusal(e)
    }

    async fn existing_ids(&self, entity: EntityKind) -> Result<Option<Vec<String>>> {
        let spec = map::ListSpec::of(entity);
        let mut ids = self.all_ids(&spec, Map::new(), "").await?;
        if entity == EntityKind::Task {
            // CRM to-dos are mirrored as tasks `todo-N`.
            let todo = map::ListSpec::of(EntityKind::Activity);
            let mut f = Map::new();
            f.insert("PROVIDER_ID".into(), json!("CRM_TODO"));
            ids.extend(self.all_ids(&todo, f, "todo-").await?);
        }
        Ok(Some(ids))
    }

    async fn create_lead(&self, lead: &NewLead) -> Result<String> {
        let mut fields = json!({
            "TITLE": lead.title,
            "NAME": lead.name,
            "SOURCE_ID": lead.source,
            "COMMENTS": lead.comment,
        });
        if let Some(p) = &lead.phone {
            fields["PHONE"] = json!([{"VALUE": p, "VALUE_TYPE": "WORK"}]);
        }
        if let Some(r) = &lead.responsible_id {
            fields["ASSIGNED_BY_ID"] = num(r);
        }
        for (k, v) in [
            ("UTM_SOURCE", &lead.utm.source),
            ("UTM_MEDIUM", &lead.utm.medium),
            ("UTM_CAMPAIGN", &lead.utm.campaign),
            ("UTM_CONTENT", &lead.utm.content),
            ("UTM_TERM", &lead.utm.term),
        ] {
            if let Some(v) = v {
                fields[k] = json!(v);
            }
        }
        self.add("crm.lead.add", fields).await
    }

    async fn create_deal(&self, deal: &NewDeal) -> Result<String> {
        let mut fields = json!({
            "TITLE": deal.title,
            "OPPORTUNITY": format!("{:.2}", deal.amount),
            "COMMENTS": deal.comment,
        });
        match (&deal.pipeline_id, &deal.stage_id) {
            (_, Some(stage)) => {
                fields["STAGE_ID"] = json!(stage);
                if let Some(p) = &deal.pipeline_id {
                    fields["CATEGORY_ID"] = num(p);
                }
            }
            (Some(p), None) => fields["CATEGORY_ID"] = num(p),
            (None, None) => {
                let (p, stage) = self.default_first_stage().await?;
                fields["CATEGORY_ID"] = num(&p);
                fields["STAGE_ID"] = json!(stage);
            }
        }
        for (k, v) in [
            ("ASSIGNED_BY_ID", &deal.responsible_id),
            ("CONTACT_ID", &deal.contact_id),
            ("COMPANY_ID", &deal.company_id),
            ("LEAD_ID", &deal.lead_id),
        ] {
            if let Some(v) = v {
                fields[k] = num(v);
            }
        }
        self.add("crm.deal.add", fields).await
    }

    async fn create_contact(&self, contact: &NewContact) -> Result<String> {
        let name = contact.name.trim();
        let (first, last) = name.split_once(' ').unwrap_or((name, ""));
        let mut fields = json!({
            "NAME": first,
            "PHONE": [{"VALUE": contact.phone, "VALUE_TYPE": "WORK"}],
        });
        if !last.trim().is_empty() {
            fields["LAST_NAME"] = json!(last.trim());
        }
        if let Some(r) = &contact.responsible_id {
            fields["ASSIGNED_BY_ID"] = num(r);
        }
        self.add("crm.contact.add", fields).await
    }

    async fn set_responsible(&self, entity: &EntityRef, user_id: &str) -> Result<()> {
        let user = num(user_id);
        match entity.kind {
            EntityKind::Task => match entity.id.strip_prefix("todo-") {
                Some(id) => {
                    self.update(
                        "crm.activity.update",
                        json!({"id": num(id), "fields": {"RESPONSIBLE_ID": user}}),
                    )
                    .await
                }
                None => {
                    self.call(
                        "tasks.task.update",
                        &json!({"taskId": num(&entity.id), "fields": {"RESPONSIBLE_ID": user}}),
                    )
                    .await?;
                    Ok(())
                }
            },
            EntityKind::Activity => {
                self.update(
                    "crm.activity.update",
                    json!({"id": num(&entity.id), "fields": {"RESPONSIBLE_ID": user}}),
                )
                .await
            }
            kind => {
                let method = format!("crm.{}.update", crm_name(kind));
                self.update(
                    &method,
                    json!({"id": num(&entity.id), "fields": {"ASSIGNED_BY_ID": user}}),
                )
                .await
            }
        }
    }

    async fn move_deal(&self, deal_id: &str, stage_id: &str) -> Result<()> {
        self.update(
            "crm.deal.update",
            json!({"id": num(deal_id), "fields": {"STAGE_ID": stage_id}}),
        )
        .await
    }

    async fn close_deal_lost(&self, deal_id: &str, reason: &str) -> Result<()> {
        let env = self
            .call("crm.deal.get", &json!({"id": num(deal_id)}))
            .await?;
        let cat = env["result"]
            .get("CATEGORY_ID")
            .and_then(text)
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "0".into());
        let current = env["result"].get("STAGE_ID").and_then(text);
        let entity = if cat == "0" {
            "DEAL_STAGE".to_string()
        } else {
            format!("DEAL_STAGE_{cat}")
        };
        let env = self
            .call(
                "crm.status.list",
                &json!({"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}}),
            )
            .await?;
        let lost = map::stages(&cat, &env["result"])
            .into_iter()
            .find(|s| s.semantics == crate::domain::Semantics::Lost)
            .map(|s| s.id)
            .unwrap_or_else(|| {
                if cat == "0" {
                    "LOSE".into()
                } else {
                    format!("C{cat}:LOSE")
                }
            });
        if current.as_deref() != Some(lost.as_str()) {
            self.move_deal(deal_id, &lost).await?;
        }
        let note = format!("Сделка закрыта как проигранная. Причина: {reason}");
        self.add_comment(&EntityRef::new(EntityKind::Deal, deal_id), &note)
            .await?;
        Ok(())
    }

    async fn update_tags(
        &self,
        entity: &EntityRef,
        add: &[String],
        remove: &[String],
    ) -> Result<()> {
        let Some(field) = &self.flag_field else {
            return Err(self.err(
                ErrorKind::Permanent,
                "update_tags",
                "",
                "Bitrix24 CRM records have no tags: set crm.flag_field to a multiple string user field (UF_CRM_...) of deals, contacts and companies",
            ));
        };
        if !matches!(
            entity.kind,
            EntityKind::Deal | EntityKind::Contact | EntityKind::Company
        ) {
            return Err(self.err(
                ErrorKind::Permanent,
                "update_tags",
                "",
                format!(
                    "flags are kept on deals, contacts and companies, not on a {}",
                    entity.kind.as_str()
                ),
            ));
        }
        let name = crm_name(entity.kind);
        let list = format!("crm.{name}.list");
        let env = self
            .call(
                &list,
                &json!({"filter": {"ID": num(&entity.id)}, "select": ["ID", field], "start": -1}),
            )
            .await?;
        let row = env["result"]
            .as_array()
            .and_then(|rows| rows.first())
            .cloned()
            .ok_or_else(|| {
                let url = self.shown_url(&list);
                self.err(
                    ErrorKind::Permanent,
                    &list,
                    &url,
                    format!("{name} {} not found", entity.id),
                )
            })?;
        let current = row.get(field.as_str()).map(flag_values).unwrap_or_default();
        let mut next: Vec<String> = current
            .iter()
            .filter(|f| !remove.contains(f))
            .cloned()
            .collect();
        for a in add {
            let a = a.trim();
            if !a.is_empty() && !next.iter().any(|f| f == a) {
                next.push(a.to_string());
            }
        }
        if next == current {
            return Ok(());
        }
        let value = if next.is_empty() {
            json!("")
        } else {
            json!(next)
        };
        let mut fields = Map::new();
        fields.insert(field.clone(), value);
        self.update(
            &format!("crm.{name}.update"),
            json!({"id": num(&entity.id), "fields": fields}),
        )
        .await
    }

    async fn complete_task(&self, task_id: &str, result: &str) -> Result<()> {
        if let Some(id) = task_id.strip_prefix("todo-") {
            let env = self
                .call(
                    "crm.activity.list",
                    &json!({"filter": {"ID": num(id)}, "select": ["ID", "OWNER_TYPE_ID", "OWNER_ID", "COMPLETED"]}),
                )
                .await?;
            let row = env["result"]
                .as_array()
                .and_then(|r| r.first())
                .cloned()
                .ok_or_else(|| {
                    let url = self.shown_url("crm.activity.list");
                    self.err(
                        ErrorKind::Permanent,
                        "crm.activity.list",
                        &url,
                        format!("to-do {id} not found"),
                    )
                })?;
            if row.get("COMPLETED").and_then(text).as_deref() != Some("Y") {
                self.update(
                    "crm.activity.update",
                    json!({"id": num(id), "fields": {"COMPLETED": "Y"}}),
                )
                .await?;
            }
            let owner = match row.get("OWNER_TYPE_ID").and_then(text).as_deref() {
                Some("1") => Some(EntityKind::Lead),
                Some("2") => Some(EntityKind::Deal),
                Some("3") => Some(EntityKind::Contact),
                Some("4") => Some(EntityKind::Company),
                _ => None,
            };
            let owner_id = row.get("OWNER_ID").and_then(text).filter(|o| o != "0");
            if let (Some(kind), Some(oid), false) = (owner, owner_id, result.trim().is_empty()) {
                self.add_comment(&EntityRef::new(kind, oid), result).await?;
            }
            return Ok(());
        }
        self.call("tasks.task.complete", &json!({"taskId": num(task_id)}))
            .await?;
        if !result.trim().is_empty() {
            self.call(
                "task.commentitem.add",
                &json!({"TASKID": num(task_id), "FIELDS": {"POST_MESSAGE": result}}),
            )
            .await?;
        }
        Ok(())
    }

    async fn register_call(&self, call: &CallRecord) -> Result<String> {
        let oauth = matches!(self.auth, Auth::OAuth(_));
        if let Some(id) = self.registered_call(call, oauth).await? {
            return Ok(id);
        }
        let Some(user) = call.responsible_id.as_deref() else {
            return Err(self.err(
                ErrorKind::Permanent,
                "register_call",
                "",
                "a call needs the responsible user (the employee who talked)",
            ));
        };
        if oauth {
            self.register_external_call(call, user).await
        } else {
            self.add_call_activity(call, user).await
        }
    }
}

/// An id as a JSON number when it is one.
fn num(id: &str) -> Value {
    id.trim()
        .parse::<u64>()
        .map(|n| json!(n))
        .unwrap_or_else(|_| json!(id))
}

/// `crm.{name}.*` of a CRM entity kind.
fn crm_name(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Lead => "lead",
        EntityKind::Deal => "deal",
        EntityKind::Contact => "contact",
        EntityKind::Company => "company",
        EntityKind::Task => "task",
        EntityKind::Activity => "activity",
    }
}

fn owner_type_id(kind: EntityKind) -> Option<u64> {
    match kind {
        EntityKind::Lead => Some(1),
        EntityKind::Deal => Some(2),
        EntityKind::Contact => Some(3),
        EntityKind::Company => Some(4),
        _ => None,
    }
}

impl Bitrix24 {
    /// `crm.*.add`: returns the new id.
    async fn add(&self, method: &str, fields: Value) -> Result<String> {
        let env = self
            .call(
                method,
                &json!({"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}}),
            )
            .await?;
        text(&env["result"])
            .filter(|id| id.parse::<u64>().is_ok_and(|n| n > 0))
            .ok_or_else(|| self.decode(method, "answer has no new id"))
    }

    /// `crm.*.update`: `result: true` expected.
    async fn update(&self, method: &str, params: Value) -> Result<()> {
        let env = self.call(method, &params).await?;
        match &env["result"] {
            Value::Bool(true) => Ok(()),
            v if text(v).is_some_and(|t| t == "Y" || t == "1" || t == "true") => Ok(()),
            _ => Err(self.decode(method, "update was not confirmed")),
        }
    }

    /// The default deal pipeline and its first open stage.
    async fn default_first_stage(&self) -> Result<(String, String)> {
        let mut cached = self.default_stage.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let pipelines = self.pipelines().await?;
        let deals: Vec<&Pipeline> = pipelines.iter().filter(|p| p.id != "leads").collect();
        let p = deals
            .iter()
            .find(|p| p.is_default)
            .or_else(|| deals.iter().find(|p| p.id == "0"))
            .or(deals.first())
            .ok_or_else(|| self.decode("crm.category.list", "no deal pipelines"))?;
        let stage = p
            .stages
            .iter()
            .find(|s| s.semantics == crate::domain::Semantics::Open)
            .map(|s| s.id.clone())
            .ok_or_else(|| {
                self.decode("crm.status.list", "the default pipeline has no open stage")
            })?;
        let found = (p.id.clone(), stage);
        *cached = Some(found.clone());
        Ok(found)
    }

    /// The CRM id of a call registered earlier with the same external id.
    async fn registered_call(&self, call: &CallRecord, oauth: bool) -> Result<Option<String>> {
        if oauth {
            let env = self
                .call(
                    "voximplant.statistic.get",
                    &json!({"FILTER": {"EXTERNAL_CALL_ID": call.external_id}, "SORT": "ID", "ORDER": "ASC"}),
                )
                .await?;
            let row = env["result"].as_array().and_then(|r| r.first()).cloned();
            return Ok(row.and_then(|r| {
                r.get("CRM_ACTIVITY_ID")
                    .and_then(text)
                    .filter(|a| !a.is_empty() && a != "0")
                    .or_else(|| r.get("CALL_ID").and_then(text))
            }));
        }
        let env = self
            .call(
                "crm.activity.list",
                &json!({
                    "filter": {"ORIGIN_ID": call.external_id, "TYPE_ID": 2},
                    "select": ["ID"],
                    "order": {"ID": "ASC"},
                    "start": -1,
                }),
            )
            .await?;
        Ok(env["result"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r.get("ID").and_then(text)))
    }

    /// OAuth application: telephony.externalCall.register + finish.
    async fn register_external_call(&self, call: &CallRecord, user: &str) -> Result<String> {
        let mut p = json!({
            "USER_ID": num(user),
            "PHONE_NUMBER": call.phone,
            "TYPE": if call.direction == crate::domain::Direction::Out { 1 } else { 2 },
            "CALL_START_DATE": call.started_at.format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
            "CRM_CREATE": 0,
            "SHOW": 0,
            "EXTERNAL_CALL_ID": call.external_id,
        });
        if let Some(e) = &call.entity {
            let ty = match e.kind {
                EntityKind::Contact => Some("CONTACT"),
                EntityKind::Company => Some("COMPANY"),
                EntityKind::Lead => Some("LEAD"),
                _ => None,
            };
            if let Some(ty) = ty {
                p["CRM_ENTITY_TYPE"] = json!(ty);
                p["CRM_ENTITY_ID"] = num(&e.id);
            }
        }
        let env = self.call("telephony.externalCall.register", &p).await?;
        let call_id = env["result"]
            .get("CALL_ID")
            .and_then(text)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                self.decode("telephony.externalCall.register", "answer has no CALL_ID")
            })?;
        let duration = if call.answered {
            call.duration_s.max(0)
        } else {
            0
        };
        let env = self
            .call(
                "telephony.externalCall.finish",
                &json!({
                    "CALL_ID": call_id,
                    "USER_ID": num(user),
                    "DURATION": duration,
                    "STATUS_CODE": if call.answered { "200" } else { "304" },
                }),
            )
            .await?;
        Ok(env["result"]
            .get("CRM_ACTIVITY_ID")
            .and_then(text)
            .filter(|a| !a.is_empty() && a != "0")
            .unwrap_or(call_id))
    }

    /// Inbound webhook (telephony.* needs an application): a call activity on the timeline.
    async fn add_call_activity(&self, call: &CallRecord, user: &str) -> Result<String> {
        let owner = match &call.entity {
            Some(e) if owner_type_id(e.kind).is_some() => e.clone(),
            _ => {
                let found = self.find_by_phone(&call.phone).await?;
                [EntityKind::Contact, EntityKind::Company, EntityKind::Lead]
                    .iter()
                    .find_map(|k| found.iter().find(|r| r.kind == *k).cloned())
                    .ok_or_else(|| {
                        self.err(
                            ErrorKind::Permanent,
                            "crm.activity.add",
                            "",
                            "no lead, contact or company has this number: a webhook can put a call only on an existing record",
                        )
                    })?
            }
        };
        let type_id = owner_type_id(owner.kind).unwrap_or(3);
        let incoming = call.direction == crate::domain::Direction::In;
        let subject = match (incoming, call.answered) {
            (true, true) => "Входящий звонок",
            (true, false) => "Пропущенный звонок",
            (false, true) => "Исходящий звонок",
            (false, false) => "Исходящий звонок (без ответа)",
        };
        let duration = if call.answered {
            call.duration_s
                .clamp(0, crate::domain::bounds::MAX_CALL_SECS)
        } else {
            0
        };
        // Checked: a record stored before durations were range-checked must fail this one
        // write, not the process.
        let end = chrono::TimeDelta::try_seconds(duration)
            .and_then(|d| call.started_at.checked_add_signed(d))
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Permanent,
                    "crm.activity.add",
                    "",
                    format!(
                        "call {} has an impossible start or duration",
                        call.external_id
                    ),
                )
            })?;
        let fmt = |t: &crate::domain::Ts| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
        let mut fields = json!({
            "OWNER_TYPE_ID": type_id,
            "OWNER_ID": num(&owner.id),
            "TYPE_ID": 2,
            "DIRECTION": if incoming { 1 } else { 2 },
            "SUBJECT": subject,
            "RESPONSIBLE_ID": num(user),
            "COMMUNICATIONS": [{
                "VALUE": call.phone,
                "ENTITY_ID": num(&owner.id),
                "ENTITY_TYPE_ID": type_id,
            }],
            "START_TIME": fmt(&call.started_at),
            "END_TIME": fmt(&end),
            "COMPLETED": "Y",
            "ORIGIN_ID": call.external_id,
        });
        if let Some(url) = &call.recording_url {
            fields["DESCRIPTION"] = json!(format!("Запись разговора: {url}"));
        }
        let env = self
            .call("crm.activity.add", &json!({"fields": fields}))
            .await?;
        text(&env["result"])
            .filter(|id| id.parse::<u64>().is_ok_and(|n| n > 0))
            .ok_or_else(|| self.decode("crm.activity.add", "answer has no activity id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoTokens;

    #[async_trait]
    impl TokenStore for NoTokens {
        async fn load_token(&self, _: &str, _: &str) -> crate::store::Result<Option<TokenSet>> {
            Ok(None)
        }
        async fn save_token(&self, _: &str, _: &str, _: &TokenSet) -> crate::store::Result<()> {
            Ok(())
        }
    }

    fn cfg(budget: f64) -> Bitrix24Config {
        Bitrix24Config {
            webhook_url: Some(Secret::new("https://x.bitrix24.ru/rest/1/s3cr3t/")),
            webhook_url_file: None,
            portal_url: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            refresh_token: None,
            refresh_token_file: None,
            oauth_url: "https://oauth.bitrix.info".into(),
            plan: Bitrix24Plan::Standard,
            operating_budget_secs: budget,
            flag_field: None,
        }
    }

    #[tokio::test]
    async fn pauses_a_method_at_its_operating_budget() {
        let b = Bitrix24::new("t", &cfg(10.0), Arc::new(NoTokens))
            .await
            .unwrap();
        assert_eq!(b.account(), "x.bitrix24.ru");
        let reset = Utc::now().timestamp() + 2;
        b.note_time(
            "crm.deal.list",
            Some(&json!({"operating": 9.8, "operating_reset_at": reset})),
        );
        b.note_time(
            "crm.lead.list",
            Some(&json!({"operating": 1.0, "operating_reset_at": reset.to_string()})),
        );
        let t = std::time::Instant::now();
        b.respect_budget("crm.lead.list").await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "under budget: no wait"
        );
        b.respect_budget("crm.deal.list").await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "at budget: waits for the reset"
        );
        // After the reset the method runs freely again.
        let t = std::time::Instant::now();
        b.respect_budget("crm.deal.list").await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_stop_ends_the_operating_budget_wait_at_once() {
        let stop = CancellationToken::new();
        let b = Bitrix24::new("t", &cfg(10.0), Arc::new(NoTokens))
            .await
            .unwrap()
            .with_stop(stop.clone());
        let reset = Utc::now().timestamp() + 30;
        b.note_time(
            "crm.deal.list",
            Some(&json!({"operating": 9.8, "operating_reset_at": reset})),
        );
        let t = std::time::Instant::now();
        let waiting = b.respect_budget("crm.deal.list");
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.cancel();
        };
        let (r, ()) = tokio::join!(waiting, cancel);
        let e = r.expect_err("a stop ends the wait with an error");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(e.kind, ErrorKind::Transient, "the action stays at intent");
        assert!(e.to_string().contains("dozor is stopping"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    /// The system errors of bitrix24/b24restdocs `_includes/system-errors.md` (HTTP status, code,
    /// text); PAYMENT_REQUIRED (an unpaid marketplace application) is in our fact sheet but on
    /// no page of that repository, so its text here is a placeholder. A write refused inside a
    /// `batch` carries no HTTP status of its own (`settings/how-to-call-rest-api/batch.md`:
    /// `result_error` holds only `error` and `error_description`, the description often
    /// empty); it must be classified as the same refusal on a direct call.
    #[tokio::test]
    async fn a_refusal_inside_a_batch_is_classified_as_on_a_direct_call() {
        let b = Bitrix24::new("t", &cfg(480.0), Arc::new(NoTokens))
            .await
            .unwrap();
        let documented = [
            (
                401,
                "insufficient_scope",
                "The request requires higher privileges than provided by the webhook token",
            ),
            (401, "INVALID_CREDENTIALS", "Invalid request credentials"),
            (
                401,
                "user_access_error",
                "The user does not have access to the application",
            ),
            (402, "PAYMENT_REQUIRED", ""),
            (
                401,
                "expired_token",
                "The access token provided has expired",
            ),
            (401, "NO_AUTH_FOUND", "Wrong authorization data"),
            (
                429,
                "OPERATION_TIME_LIMIT",
                "Method is blocked due to operation time limit",
            ),
            (503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
            (500, "INTERNAL_SERVER_ERROR", "Internal server error"),
            (400, "", "Access denied."),
        ];
        for (status, code, text) in documented {
            let direct = b.classify(
                "tasks.task.add",
                "https://x.bitrix24.ru/rest/1/***/tasks.task.add",
                Some(status),
                &json!({"error": code, "error_description": text}),
            );
            for desc in [text, ""] {
                let inside = b.command_error(
                    "tasks.task.add",
                    &json!({"error": code, "error_description": desc}),
                );
                assert_eq!(inside.kind, direct.kind, "{code} inside a batch vs direct");
                assert_eq!(inside.code, direct.code, "{code}");
                assert!(!inside.to_string().contains("s3cr3t"), "{inside}");
            }
        }
        for code in [
            "insufficient_scope",
            "INVALID_CREDENTIALS",
            "user_access_error",
            "PAYMENT_REQUIRED",
        ] {
            let e = b.command_error(
                "crm.deal.update",
                &json!({"error": code, "error_description": ""}),
            );
            assert_eq!(
                e.kind,
                ErrorKind::Auth,
                "{code}: the credentials need fixing, not a retry"
            );
        }
    }

    #[test]
    fn reset_at_parses_leniently() {
        assert_eq!(reset_ts(Some(&json!(1724917459))), Some(1724917459));
        assert_eq!(reset_ts(Some(&json!("1724917459"))), Some(1724917459));
        assert!(reset_ts(Some(&json!("2024-08-29T10:44:19+03:00"))).is_some());
        assert_eq!(reset_ts(Some(&json!([]))), None);
    }
}

/// Entry points for the fuzz targets in `fuzz/`: the pure parsers of Bitrix24 answers.
#[doc(hidden)]
pub mod fuzzing {
    use serde_json::Value;

    use crate::domain::{EntityKind, Record};

    /// One list row of `kind` through the row mapper, as the sync maps it.
    pub fn record(kind: EntityKind, row: &Value) -> Result<Option<Record>, String> {
        super::map::record(kind, row)
    }

    /// Reads `bytes` as a REST answer and feeds its rows through every row mapper (records of
    /// each kind, users, stages, timestamps); returns how many rows mapped. Must never panic.
    pub fn parse_answer(bytes: &[u8]) -> usize {
        let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
            return 0;
        };
        let res = v.get("result").unwrap_or(&v);
        let mut ok = 0;
        for wrapped in [None, Some("tasks"), Some("items")] {
            let Some(rows) = super::list_rows(res, wrapped) else {
                continue;
            };
            for row in &rows {
                for kind in EntityKind::ALL {
                    ok += usize::from(matches!(super::map::record(kind, row), Ok(Some(_))));
                }
                ok += usize::from(super::map::user(row).is_ok());
                let _ = super::map::row_id(row, "ID");
                if let Some(s) = row.get("DATE_MODIFY").and_then(Value::as_str) {
                    let _ = super::map::parse_ts(s);
                }
            }
        }
        ok += super::map::stages("0", res).len();
        let _ = crate::http::php_query::as_list(res);
        if let Some(s) = res.as_str() {
            let _ = super::map::parse_ts(s);
        }
        ok
    }
}
