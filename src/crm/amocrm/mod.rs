//! amoCRM API v4 connector: OAuth2 with single-use refresh tokens, or a long-lived token.
//!
//! Mapping: amoCRM "leads" are deals, unsorted items are leads, call notes of leads, contacts
//! and companies are activities. Reads page with `filter[updated_at][from]` and
//! `order[id]=asc`, 250 per page; the cursor position is the page number (for deals,
//! contacts, companies and tasks with the run it belongs to, see [`paging`]: records deleted
//! between two pages would otherwise hide the record at the next page boundary).
//!
//! Accounts without the API filtering add-on: the filters page
//! (https://www.amocrm.ru/developers/content/crm_platform/filters-api) says filtering leads,
//! contacts and companies is an alpha open to a limited list of accounts, and
//! `GET /api/v4/account?with=is_api_filter_enabled` tells whether this account is one of them.
//! Without it `filter[updated_at]` is not applied and every read would be the whole list, so
//! deals, contacts and companies are read newest first (`order[updated_at]=desc`) and the pass
//! ends at the first record older than the cursor. The flag is read once and again after each
//! directory refresh. Tasks and notes are filtered on their own pages and keep the filter.
//!
//! Why `id` and not `updated_at` order: with page-number paging, a record that changes during a
//! pass moves to the end of an `updated_at`-ordered list, every later record shifts back by one
//! and the record at the page boundary is never read — and since the next pass starts at the
//! newest change it stays lost. In `id` order a change keeps its place; records that enter the
//! filter mid-pass only shift the rest forward, which gives duplicates (harmless, deduped by id)
//! instead of gaps.
//!
//! Transport rules from the fact sheet: one limiter per account, a 429 pauses every request of
//! this client for at least a second (doubling), a 403 anti-abuse lock-out is waited out a few
//! times, 5xx are retried with backoff, 204 is an empty page.
//!
//! Token rules: a refresh token works once. Refreshes are serialised by one async mutex per
//! client; a task that waited on it re-reads the stored token instead of refreshing again. The new
//! pair is saved through the [`TokenStore`] before the new access token is used. A refresh the
//! server refuses (revoked, invalid) switches the client off with an auth error until it is
//! re-authorised, instead of hammering the token endpoint.

// The shared `http::Error` is large by design (it names method and URL); boxing it here alone
// would make this connector differ from the others.
#![allow(clippy::result_large_err)]

mod auth;
mod changes;
mod map;
mod paging;
mod write;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use crate::config::AmocrmConfig;
use crate::crm::{CallRecord, Crm, Cursor, NewContact, NewDeal, NewLead, NewTask, Page, Result};
use crate::domain::{CrmKind, EntityKind, EntityRef, Lead, Pipeline, Record, Ts, User, phone};
use crate::http::{Error, ErrorKind, Limiter, MAX_BODY, Throttle, backoff, read_body, redact_url};
use crate::store::TokenStore;
use crate::telemetry::Observe as _;
use tokio_util::sync::CancellationToken;

use auth::Auth;
use paging::{PagePos, Traces};

const SYSTEM: &str = "amocrm";
/// The request period is this much longer than 1/`rate_per_sec`.
const RATE_MARGIN: f64 = 1.03;
/// The largest page amoCRM serves for leads, contacts, companies, tasks, notes and unsorted.
pub const PAGE_LIMIT: u32 = 250;
/// Attempts for one request on 5xx / transport errors (429s are waited out by [`Throttle`]).
const MAX_ATTEMPTS: u32 = 6;
/// How often a 403 (anti-abuse lock-out) is waited out before giving up.
const MAX_LOCKOUT_WAITS: u32 = 3;
/// Entities whose call notes are activities, in the order a pass reads them.
const NOTE_ENTITIES: [&str; 3] = ["leads", "contacts", "companies"];

/// Timing knobs (tests shorten them).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Waits after 429s: doubling from `throttle.first`, every request of the client paused.
    pub throttle: Throttle,
    /// First wait after a 403 lock-out; grows linearly.
    pub lockout_wait: Duration,
    pub timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            // The fact sheet: back off at least 1 s on a 429, exponentially.
            throttle: Throttle::default(),
            lockout_wait: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        }
    }
}

/// One amoCRM account.
pub struct AmoCrm {
    base: String,
    host: String,
    http: reqwest::Client,
    limiter: Limiter,
    auth: Auth,
    tuning: Tuning,
    /// Every request waits until this moment (set by a 429: stop all workers of the account).
    paused_until: Mutex<Option<tokio::time::Instant>>,
    currency: Mutex<String>,
    /// Page boundaries of the passes under way (where to go back to after a deletion).
    traces: Traces,
    /// `is_api_filter_enabled` of the account, once read; `None` until then and after a
    /// directory refresh.
    api_filter: Mutex<Option<bool>>,
    /// The pipelines' "unsorted" statuses (`type` 1), from the last pipelines answer: every
    /// page of unsorted items is judged against them without asking again.
    unsorted_statuses: Mutex<Option<std::collections::HashSet<u64>>>,
    /// Cancelled when dozor stops: every wait (429 pause, lock-out, backoff) ends.
    stop: CancellationToken,
}

impl AmoCrm {
    pub async fn new(
        tenant: &str,
        cfg: &AmocrmConfig,
        tokens: Arc<dyn TokenStore>,
    ) -> std::result::Result<Self, Error> {
        let base = cfg.base_url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&base).map_err(|e| {
            Error::new(
                ErrorKind::Permanent,
                SYSTEM,
                "config",
                redact_url(&base),
                format!("crm.base_url is not a URL: {e}"),
            )
        })?;
        let host = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or("")),
            None => parsed.host_str().unwrap_or("").to_string(),
        };
        let auth = match &cfg.long_lived_token {
            Some(t) if !t.is_empty() => Auth::long_lived(t.clone()),
            _ => {
                let missing = |what: &str| {
                    Error::new(
                        ErrorKind::Auth,
                        SYSTEM,
                        "config",
                        redact_url(&base),
                        format!("OAuth needs crm.{what} (or a long_lived_token)"),
                    )
                };
                Auth::oauth(
                    tenant,
                    cfg.client_id.clone().ok_or_else(|| missing("client_id"))?,
                    cfg.client_secret
                        .clone()
                        .ok_or_else(|| missing("client_secret"))?,
                    cfg.redirect_uri
                        .clone()
                        .ok_or_else(|| missing("redirect_uri"))?,
                    cfg.refresh_token.clone(),
                    tokens,
                )
            }
        };
        Ok(AmoCrm {
            base,
            host,
            http: crate::http::client(Tuning::default().timeout),
            // amoCRM counts requests in a sliding second: pace 3 % under the limit so arrival
            // jitter does not turn the 8th request of a window into a 429 and a 1 s pause.
            limiter: Limiter::with_period(
                Duration::from_secs_f64(RATE_MARGIN / f64::from(cfg.rate_per_sec.max(1))),
                1,
            )
            .for_system(SYSTEM),
            auth,
            tuning: Tuning::default(),
            paused_until: Mutex::new(None),
            currency: Mutex::new("RUB".into()),
            traces: Traces::default(),
            api_filter: Mutex::new(None),
            unsorted_statuses: Mutex::new(None),
            stop: CancellationToken::new(),
        })
    }

    /// Ends every wait of this client early once `stop` is cancelled.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Waits `d` before retrying the request `label` to `url`; an error if dozor is stopping.
    async fn wait(&self, d: Duration, label: &str, url: &str) -> Result<()> {
        crate::http::pause(d, &self.stop)
            .await
            .map_err(|s| s.error(SYSTEM, label, redact_url(url)))
    }

    /// Replaces the timing knobs.
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.http = crate::http::client(tuning.timeout);
        self.tuning = tuning;
        self
    }

    /// True once a refresh was refused for good: nothing works until someone re-authorises.
    pub fn needs_reauth(&self) -> bool {
        self.auth.is_dead()
    }

    fn err(&self, kind: ErrorKind, label: &str, url: &str, msg: impl Into<String>) -> Error {
        Error::new(kind, SYSTEM, label, redact_url(url), msg)
    }

    /// Waits out a pause set by a 429 or lock-out, then for the rate limiter.
    async fn wait_turn(&self, label: &str, url: &str) -> Result<()> {
        let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        let stopped = |s: crate::http::Stopped| s.error(SYSTEM, label, redact_url(url));
        if let Some(t) = until {
            crate::http::pause_until(t, &self.stop)
                .await
                .map_err(stopped)?;
        }
        self.limiter.acquire(&self.stop).await.map_err(stopped)
    }

    fn pause(&self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none_or(|x| x < until) {
            *p = Some(until);
        }
    }

    /// One API call with limits, retries and token handling. `Ok(None)` is a 204.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Option<Value>> {
        let mut url = format!("{}{}", self.base, path);
        if !query.is_empty() {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in query {
                ser.append_pair(k, v);
            }
            url.push('?');
            url.push_str(&ser.finish());
        }
        let label = format!("{method} {path}");
        let mut attempt = 0u32;
        let mut refusals = self.tuning.throttle.start();
        let mut lockouts = 0u32;
        // Refresh again if a token refreshed during this call is itself revoked (several
        // revocations in a row happen when an admin re-installs the integration), but not forever.
        let mut refreshes = 0u32;
        loop {
            self.wait_turn(&label, &url).await?;
            let token = self.auth.bearer(self).await?;
            let mut rb = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.expose())
                .header("accept", "application/hal+json, application/json");
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let resp = match rb.send().await.observe(SYSTEM, &label) {
                Ok(r) => r,
                Err(e) => {
                    let err = Error::transport(SYSTEM, &label, redact_url(&url), &e);
                    if err.is_retryable() && attempt + 1 < MAX_ATTEMPTS {
                        self.wait(backoff(attempt), &label, &url).await?;
                        attempt += 1;
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = resp.status().as_u16();
            let request_id = resp
                .headers()
                .get("x-request-id")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string);
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|h| h.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            match status {
                204 => return Ok(None),
                200..=299 => {
                    let bytes =
                        read_body(resp, MAX_BODY, SYSTEM, &label, &redact_url(&url)).await?;
                    if bytes.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    return serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                        self.err(
                            ErrorKind::Decode,
                            &label,
                            &url,
                            format!("answer is not valid JSON: {e}"),
                        )
                    });
                }
                401 if self.auth.can_refresh() && refreshes < 3 => {
                    refreshes += 1;
                    tracing::info!(system = SYSTEM, %label, refreshes, "access token refused, refreshing");
                    self.auth.refresh(self, Some(&token)).await?;
                    continue;
                }
                _ => {}
            }
            let bytes = read_body(resp, MAX_BODY, SYSTEM, &label, &redact_url(&url))
                .await
                .unwrap_or_default();
            let mut err = problem_error(self, status, &label, &url, &bytes);
            match status {
                429 => {
                    if let Some(wait) = refusals.next(retry_after) {
                        tracing::warn!(system = SYSTEM, %label, ?wait, refusals = refusals.count(), "rate limited (429), pausing");
                        self.pause(wait);
                        continue;
                    }
                    err = err.retry_after(self.tuning.throttle.cap);
                }
                403 if lockouts < MAX_LOCKOUT_WAITS => {
                    lockouts += 1;
                    let wait = self.tuning.lockout_wait.saturating_mul(lockouts);
                    tracing::warn!(system = SYSTEM, %label, ?wait, "403 (possible anti-abuse lock-out), waiting");
                    self.pause(wait);
                    continue;
                }
                500..=599 if attempt + 1 < MAX_ATTEMPTS => {
                    tracing::warn!(system = SYSTEM, %label, status, request_id = request_id.as_deref().unwrap_or(""), "server error, retrying");
                    self.wait(backoff(attempt), &label, &url).await?;
                    attempt += 1;
                    continue;
                }
                _ => {}
            }
            return Err(err);
        }
    }

    async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Option<Value>> {
        self.call(Method::GET, path, query, None).await
    }

    /// One page of a HAL list: its items and whether `_links.next` exists.
    async fn list_page(
        &self,
        path: &str,
        key: &str,
        query: &[(String, String)],
    ) -> Result<(Vec<Value>, bool)> {
        let Some(v) = self.get(path, query).await? else {
            return Ok((Vec::new(), false));
        };
        let items = match &v["_embedded"][key] {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            _ => {
                return Err(self.err(
                    ErrorKind::Decode,
                    &format!("GET {path}"),
                    &format!("{}{path}", self.base),
                    format!("_embedded.{key} is not a list"),
                ));
            }
        };
        let has_next = v["_links"]["next"]["href"].is_string();
        Ok((items, has_next))
    }

    /// The open leads (unsorted items) of `open` whose item was accepted or declined, read from
    /// the leads the items hold: `GET /api/v4/leads?filter[id][]=…`, up to [`PAGE_LIMIT`] ids a
    /// request. The unsorted page (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api):
    /// «Принять» moves the item's lead to the next status, «Отклонить» deletes it from the
    /// pipeline; a lead still in an unsorted status (`type` 1) is pending and left out.
    async fn do_lead_outcomes(&self, open: &[Lead]) -> Result<Vec<Lead>> {
        let held: Vec<(u64, &Lead)> = open
            .iter()
            .filter(|l| l.semantics == crate::domain::Semantics::Open)
            .filter_map(|l| Some((l.deal_id.as_deref()?.parse::<u64>().ok()?, l)))
            .collect();
        let mut out = Vec::new();
        if held.is_empty() {
            return Ok(out);
        }
        let unsorted = self.unsorted_statuses().await?;
        let path = "/api/v4/leads";
        for chunk in held.chunks(PAGE_LIMIT as usize) {
            let mut q: Vec<(String, String)> = chunk
                .iter()
                .map(|(id, _)| ("filter[id][]".to_string(), id.to_string()))
                .collect();
            q.push(("limit".to_string(), PAGE_LIMIT.to_string()));
            let (leads, _) = self.list_page(path, "leads", &q).await?;
            let asked: std::collections::HashSet<u64> = chunk.iter().map(|(id, _)| *id).collect();
            let mut by_id: std::collections::HashMap<u64, Value> = leads
                .into_iter()
                .filter_map(|l| l["id"].as_u64().map(|id| (id, l)))
                .collect();
            if by_id.keys().any(|id| !asked.contains(id)) {
                // The account ignored the id filter: a lead missing from this answer says
                // nothing, so each is read by id instead.
                tracing::warn!(
                    system = SYSTEM,
                    "the account ignored filter[id]; reading the leads of unsorted items one by one"
                );
                by_id.clear();
                for (id, _) in chunk {
                    if let Some(l) = self.get(&format!("{path}/{id}"), &[]).await? {
                        by_id.insert(*id, l);
                    }
                }
            }
            let now = chrono::Utc::now();
            for (id, lead) in chunk {
                let found = by_id.get(id);
                let state = map::unsorted_state(found, &unsorted);
                if state == map::UnsortedState::Pending {
                    continue;
                }
                match map::decided(lead, state, found, now) {
                    Ok(l) => out.push(l),
                    Err(why) => {
                        tracing::warn!(system = SYSTEM, lead = %lead.id, reason = %why, "outcome of an unsorted item refused")
                    }
                }
            }
        }
        Ok(out)
    }

    /// The "unsorted" statuses, read with the pipelines once and kept until the next
    /// directory refresh (see [`Crm::pipelines`]).
    async fn unsorted_statuses(&self) -> Result<std::collections::HashSet<u64>> {
        let cached = self
            .unsorted_statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(statuses) = cached {
            return Ok(statuses);
        }
        let pipelines = self.get("/api/v4/leads/pipelines", &[]).await?;
        Ok(self.keep_unsorted_statuses(pipelines.as_ref()))
    }

    fn keep_unsorted_statuses(&self, pipelines: Option<&Value>) -> std::collections::HashSet<u64> {
        let statuses = pipelines.map(map::unsorted_statuses).unwrap_or_default();
        *self
            .unsorted_statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(statuses.clone());
        statuses
    }

    /// What an item of a list page mapped to. An item that cannot be read (a date in year
    /// 9999, a field of the wrong shape) is refused alone (`None`), with a warning naming it: one poisoned record must not stop the
    /// sync of every other. Without an id it cannot be named or skipped, so the page fails.
    fn readable<T>(
        &self,
        path: &str,
        item: &Value,
        mapped: std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        let why = match mapped {
            Ok(record) => return Ok(Some(record)),
            Err(why) => why,
        };
        let id = match &item["id"] {
            Value::Number(n) => Some(n.to_string()),
            _ => item["uid"].as_str().map(str::to_string),
        };
        match id {
            Some(id) => {
                tracing::warn!(system = SYSTEM, path, record = %id, reason = %why, "record refused");
                Ok(None)
            }
            None => Err(self.decode_err(path, why)),
        }
    }

    fn decode_err(&self, path: &str, msg: String) -> Error {
        self.err(
            ErrorKind::Decode,
            &format!("GET {path}"),
            &format!("{}{path}", self.base),
            format!("unexpected record shape {msg}"),
        )
    }

    async fn all_pages(&self, path: &str, key: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for page in 1..=10_000u32 {
            let q = vec![
                ("limit".to_string(), PAGE_LIMIT.to_string()),
                ("page".to_string(), page.to_string()),
            ];
            let (items, next) = self.list_page(path, key, &q).await?;
            out.extend(items);
            if !next {
                break;
            }
        }
        Ok(out)
    }

    /// Whether the account filters leads, contacts and companies by `updated_at` (the
    /// filtering add-on, `is_api_filter_enabled`); read once and cached until the next
    /// directory refresh. An account that does not say is taken as one without it: reading
    /// newest first is right on both kinds, only slower on the other.
    async fn api_filter_enabled(&self) -> Result<bool> {
        if let Some(on) = *self.api_filter.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(on);
        }
        let path = "/api/v4/account";
        let q = [("with".to_string(), "is_api_filter_enabled".to_string())];
        let v = self.get(path, &q).await?;
        let on = v
            .as_ref()
            .and_then(|v| v["is_api_filter_enabled"].as_bool())
            .unwrap_or(false);
        if !on {
            tracing::info!(
                system = SYSTEM,
                "the account has no API filtering add-on: changes of deals, contacts and \
                 companies are read newest first up to the last sync"
            );
        }
        *self.api_filter.lock().unwrap_or_else(|e| e.into_inner()) = Some(on);
        Ok(on)
    }

    /// A `query=` search page, or `None` once the account refuses `query` (the filters page,
    /// https://www.amocrm.ru/developers/content/crm_platform/filters-api, says it "will be
    /// deprecated soon"). The mirror's phone index is asked first; this search only finds
    /// records the mirror has not seen yet, so its end costs freshness, not correctness.
    async fn search_page(
        &self,
        path: &str,
        key: &str,
        query: &[(String, String)],
    ) -> Result<Option<(Vec<Value>, bool)>> {
        match self.list_page(path, key, query).await {
            Ok(page) => Ok(Some(page)),
            Err(e) if search_refused(&e) => {
                tracing::warn!(system = SYSTEM, path, error = %e, "amoCRM refused the query search; numbers are looked up in the mirror only");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn currency(&self) -> String {
        self.currency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn read_page(
        &self,
        path: &str,
        key: &str,
        order: &str,
        extra: &[(&str, &str)],
        cursor: &Cursor,
        page: u32,
    ) -> Result<(Vec<Value>, bool)> {
        let mut q: Vec<(String, String)> = Vec::new();
        if let Some(since) = cursor.since {
            q.push((
                "filter[updated_at][from]".into(),
                since.timestamp().to_string(),
            ));
        }
        q.push((format!("order[{order}]"), "asc".into()));
        self.read_page_with(path, key, q, extra, page).await
    }

    /// One page newest first, without the `updated_at` filter (an account without the
    /// filtering add-on). Items older than `since` are dropped and end the pass: everything
    /// after them is older still.
    async fn read_newest_first(
        &self,
        path: &str,
        key: &str,
        extra: &[(&str, &str)],
        since: i64,
        page: u32,
    ) -> Result<(Vec<Value>, bool)> {
        let q = vec![("order[updated_at]".to_string(), "desc".to_string())];
        let (mut items, more) = self.read_page_with(path, key, q, extra, page).await?;
        let before = items.len();
        // An item without a readable `updated_at` is kept: the mapper refuses it by name.
        items.retain(|v| v["updated_at"].as_i64().is_none_or(|u| u >= since));
        let reached_cursor = items.len() < before;
        Ok((items, more && !reached_cursor))
    }

    async fn read_page_with(
        &self,
        path: &str,
        key: &str,
        mut q: Vec<(String, String)>,
        extra: &[(&str, &str)],
        page: u32,
    ) -> Result<(Vec<Value>, bool)> {
        q.push(("limit".into(), PAGE_LIMIT.to_string()));
        q.push(("page".into(), page.to_string()));
        for (k, v) in extra {
            q.push(((*k).into(), (*v).into()));
        }
        self.list_page(path, key, &q).await
    }

    /// At the last page of a run: asks for deletions of `entity` since the run started and,
    /// when there were any, says where to re-read from (see [`paging`]). The deleted ids go
    /// into `deleted` either way.
    async fn after_last_page(
        &self,
        entity: EntityKind,
        pos: PagePos,
        deleted: &mut Vec<String>,
    ) -> Result<Option<PagePos>> {
        let Some(started) = pos.started.filter(|_| pos.spans_pages()) else {
            return Ok(None);
        };
        let checked_at = chrono::Utc::now().timestamp();
        let gone = self.deleted_since(entity, started).await?;
        deleted.extend(gone.iter().map(u64::to_string));
        let restart = self.traces.with(entity, |t| {
            let new = t.take_new(&gone);
            if new.is_empty() {
                return Ok(None);
            }
            // Newest first, ids say nothing of where a record sat: back to the first page.
            t.restart_page(&new)
                .map(|p| Some(if pos.newest_first { 1 } else { p }))
                .ok_or(new.len())
        });
        match restart {
            Ok(Some(page)) => {
                tracing::info!(
                    system = SYSTEM,
                    entity = entity.as_str(),
                    page,
                    "records deleted during the pass; re-reading from the page they were on"
                );
                Ok(Some(PagePos {
                    page,
                    first: page,
                    started: Some(checked_at),
                    newest_first: pos.newest_first,
                }))
            }
            Ok(None) => Ok(None),
            Err(n) => {
                tracing::warn!(
                    system = SYSTEM,
                    entity = entity.as_str(),
                    deleted = n,
                    "records keep being deleted during the pass; ending it after {} re-reads",
                    paging::MAX_REPAIRS
                );
                Ok(None)
            }
        }
    }
}

/// Turns a non-2xx answer into an error; problem+json gives code and detail, other bodies
/// (the plain-text 429, HTML 502) only the status.
fn problem_error(c: &AmoCrm, status: u16, label: &str, url: &str, body: &[u8]) -> Error {
    let kind = match status {
        401 => ErrorKind::Auth,
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let (code, mut message) = match &parsed {
        Some(p) if p.is_object() => {
            let title = p["title"].as_str().unwrap_or("").to_string();
            let detail = p["detail"].as_str().unwrap_or("").to_string();
            (
                (!title.is_empty()).then_some(title.clone()),
                if detail.is_empty() { title } else { detail },
            )
        }
        _ => (None, String::new()),
    };
    if let Some(errs) = parsed
        .as_ref()
        .and_then(|p| p["validation-errors"].as_array())
    {
        let parts: Vec<String> = errs
            .iter()
            .flat_map(|item| {
                let rid = item["request_id"].as_str().unwrap_or("?").to_string();
                item["errors"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |e| {
                        format!(
                            "item {rid}: {} {} ({})",
                            e["path"].as_str().unwrap_or(""),
                            e["detail"].as_str().unwrap_or(""),
                            e["code"].as_str().unwrap_or("")
                        )
                    })
            })
            .collect();
        if !parts.is_empty() {
            message = format!("{message}: {}", parts.join("; "));
        }
    }
    if message.is_empty() {
        message = match status {
            429 => "rate limit exceeded (429)".into(),
            403 => "forbidden (rights, IP restriction or anti-abuse lock-out)".into(),
            _ => format!("HTTP {status}"),
        };
    }
    let mut e = c.err(kind, label, url, message).status(status);
    if let Some(code) = code {
        e = e.code(code);
    }
    e
}

/// A refusal of the request itself (400, 404, 422: the parameter is gone), not of the
/// credentials, the rate or the server.
fn search_refused(e: &Error) -> bool {
    e.kind == ErrorKind::Permanent && matches!(e.status, Some(400 | 404 | 405 | 422))
}

fn page_of(cursor: &Cursor) -> u32 {
    cursor
        .position
        .as_deref()
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1)
}

fn next_cursor(cursor: &Cursor, records: &[Record], position: Option<String>) -> (Cursor, bool) {
    let newest = records.iter().map(Record::updated_at).max();
    let high_water: Option<Ts> = match (cursor.high_water, newest) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    match position {
        Some(p) => (
            Cursor {
                since: cursor.since,
                position: Some(p),
                high_water,
            },
            false,
        ),
        None => (
            Cursor {
                since: high_water.or(cursor.since),
                position: None,
                high_water,
            },
            true,
        ),
    }
}

#[async_trait]
impl Crm for AmoCrm {
    fn kind(&self) -> CrmKind {
        CrmKind::Amocrm
    }

    fn account(&self) -> String {
        self.host.clone()
    }

    async fn ping(&self) -> Result<String> {
        let path = "/api/v4/account";
        let v = self
            .get(path, &[])
            .await?
            .ok_or_else(|| self.decode_err(path, "(empty account answer)".into()))?;
        let name = v["name"].as_str().unwrap_or("");
        let sub = v["subdomain"].as_str().unwrap_or("");
        if name.is_empty() && sub.is_empty() {
            return Err(self.decode_err(path, "(account without name and subdomain)".into()));
        }
        if let Some(cur) = v["currency"].as_str().filter(|c| !c.is_empty()) {
            *self.currency.lock().unwrap_or_else(|e| e.into_inner()) = cur.to_string();
        }
        Ok(format!("{name} ({sub})"))
    }

    async fn users(&self) -> Result<Vec<User>> {
        let path = "/api/v4/users";
        self.all_pages(path, "users")
            .await?
            .iter()
            .map(|v| map::user(v).map_err(|e| self.decode_err(path, e)))
            .collect()
    }

    async fn pipelines(&self) -> Result<Vec<Pipeline>> {
        // A directory refresh: the filtering add-on may have been switched since; read the
        // flag again before the next incremental read.
        *self.api_filter.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let path = "/api/v4/leads/pipelines";
        let v = self.get(path, &[]).await?;
        self.keep_unsorted_statuses(v.as_ref());
        let items = v
            .as_ref()
            .and_then(|v| v["_embedded"]["pipelines"].as_array())
            .cloned()
            .unwrap_or_default();
        let mut out: Vec<Pipeline> = items
            .iter()
            .map(|p| map::pipeline(p).map_err(|e| self.decode_err(path, e)))
            .collect::<Result<_>>()?;
        out.push(map::lead_pipeline());
        Ok(out)
    }

    async fn fetch_page(&self, entity: EntityKind, cursor: &Cursor) -> Result<Page> {
        let currency = self.currency();
        let mut deleted = Vec::new();
        let (records, position): (Vec<Record>, Option<String>) = match entity {
            EntityKind::Deal | EntityKind::Contact | EntityKind::Company | EntityKind::Task => {
                let (path, key, order, extra): (&str, &str, &str, &[(&str, &str)]) = match entity {
                    EntityKind::Deal => ("/api/v4/leads", "leads", "id", &[("with", "contacts")]),
                    EntityKind::Contact => ("/api/v4/contacts", "contacts", "id", &[]),
                    EntityKind::Company => ("/api/v4/companies", "companies", "id", &[]),
                    _ => ("/api/v4/tasks", "tasks", "id", &[]),
                };
                let since = cursor.since.map(|s| s.timestamp());
                let newest_first = match since {
                    Some(_) if entity != EntityKind::Task => !self.api_filter_enabled().await?,
                    _ => false,
                };
                let pos = match cursor.position.as_deref().and_then(PagePos::parse) {
                    // A pass begun in the other order (the add-on switched) starts over.
                    Some(pos) if pos.newest_first == newest_first => pos,
                    _ => {
                        self.traces.reset(entity);
                        let now = chrono::Utc::now().timestamp();
                        if newest_first {
                            PagePos::start_newest_first(now)
                        } else {
                            PagePos::start(now)
                        }
                    }
                };
                let (items, more) = match since.filter(|_| newest_first) {
                    Some(since) => {
                        self.read_newest_first(path, key, extra, since, pos.page)
                            .await?
                    }
                    None => {
                        self.read_page(path, key, order, extra, cursor, pos.page)
                            .await?
                    }
                };
                self.traces.with(entity, |t| {
                    t.saw_page(pos.page, items.iter().filter_map(|v| v["id"].as_u64()))
                });
                // Leads in an unsorted status are the leads of pending unsorted items (the
                // unsorted page: the status is a system status of the pipeline, its leads
                // listed as any other): mirrored as leads, not as open deals. Once accepted
                // they move on and come back here as deals.
                let pending = if entity == EntityKind::Deal && !items.is_empty() {
                    self.unsorted_statuses().await?
                } else {
                    Default::default()
                };
                let records = items
                    .iter()
                    .filter(|v| {
                        v["status_id"]
                            .as_u64()
                            .is_none_or(|s| !pending.contains(&s))
                    })
                    .filter_map(|v| {
                        let mapped = match entity {
                            EntityKind::Deal => map::deal(v, &currency).map(Record::Deal),
                            EntityKind::Contact => map::contact(v).map(Record::Contact),
                            EntityKind::Company => map::company(v).map(Record::Company),
                            _ => map::task(v).map(Record::Task),
                        };
                        self.readable(path, v, mapped).transpose()
                    })
                    .collect::<Result<Vec<_>>>()?;
                let next = if more {
                    Some(pos.next_page())
                } else {
                    self.after_last_page(entity, pos, &mut deleted).await?
                };
                (records, next.map(|p| p.to_string()))
            }
            EntityKind::Lead => {
                // Unsorted items have no updated_at filter: read by creation and keep the
                // changed ones.
                let path = "/api/v4/leads/unsorted";
                let page = page_of(cursor);
                let q = vec![
                    ("order[created_at]".to_string(), "asc".to_string()),
                    ("limit".to_string(), PAGE_LIMIT.to_string()),
                    ("page".to_string(), page.to_string()),
                ];
                let (items, more) = self.list_page(path, "unsorted", &q).await?;
                let since = cursor.since.map(|s| s.timestamp());
                let changed: Vec<&Value> = items
                    .iter()
                    .filter(|v| {
                        since.is_none_or(|s| map::unsorted_updated(v).is_none_or(|u| u >= s))
                    })
                    .collect();
                // The list holds only items awaiting a decision: each is pending. Accepted and
                // declined ones leave it and are told by `lead_outcomes`.
                let records = changed
                    .into_iter()
                    .filter_map(|v| {
                        let mapped = map::unsorted(v).map(Record::Lead);
                        self.readable(path, v, mapped).transpose()
                    })
                    .collect::<Result<Vec<_>>>()?;
                (records, more.then(|| (page + 1).to_string()))
            }
            EntityKind::Activity => {
                // Position `ENTITY:PAGE` walks the call notes of leads, contacts, companies.
                let (ent_idx, page) =
                    match cursor.position.as_deref().and_then(|p| p.split_once(':')) {
                        Some((e, p)) => (
                            NOTE_ENTITIES.iter().position(|x| *x == e).unwrap_or(0),
                            p.parse::<u32>().ok().filter(|p| *p >= 1).unwrap_or(1),
                        ),
                        None => (0, 1),
                    };
                let ent = NOTE_ENTITIES[ent_idx];
                let path = format!("/api/v4/{ent}/notes");
                let extra = [
                    ("filter[note_type][]", "call_in"),
                    ("filter[note_type][]", "call_out"),
                ];
                let (items, more) = self
                    .read_page(&path, "notes", "id", &extra, cursor, page)
                    .await?;
                let mut records = Vec::new();
                for v in &items {
                    // Notes of other types map to `None`: not mirrored.
                    if let Some(Some(a)) = self.readable(&path, v, map::call_note(v, ent))? {
                        records.push(Record::Activity(a));
                    }
                }
                let position = if more {
                    Some(format!("{ent}:{}", page + 1))
                } else {
                    NOTE_ENTITIES
                        .get(ent_idx + 1)
                        .map(|next| format!("{next}:1"))
                };
                (records, position)
            }
        };
        let (next, done) = next_cursor(cursor, &records, position);
        Ok(Page {
            records,
            next,
            done,
            deleted,
        })
    }

    async fn find_by_phone(&self, e164: &str) -> Result<Vec<EntityRef>> {
        let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
        if digits.len() < 10 {
            return Ok(Vec::new());
        }
        let wanted = phone::normalize(e164).unwrap_or_else(|_| format!("+{digits}"));
        // The last ten digits match however the number was typed (+7, 8, spaces, dashes).
        let needle = digits[digits.len() - 10..].to_string();
        let mut out = Vec::new();
        for (path, key, kind) in [
            ("/api/v4/contacts", "contacts", EntityKind::Contact),
            ("/api/v4/companies", "companies", EntityKind::Company),
        ] {
            let q = vec![
                ("query".to_string(), needle.clone()),
                ("limit".to_string(), "50".to_string()),
            ];
            let Some((items, _)) = self.search_page(path, key, &q).await? else {
                break;
            };
            for v in &items {
                let rec: map::WirePerson = map::decode(v).map_err(|e| self.decode_err(path, e))?;
                let hit = map::field_values(&rec.custom_fields_values, "PHONE")
                    .iter()
                    .any(|p| phone::normalize(p).is_ok_and(|n| n == wanted));
                if hit {
                    out.push(EntityRef::new(kind, rec.id.to_string()));
                }
            }
        }
        Ok(out)
    }

    async fn create_task(&self, task: &NewTask) -> Result<String> {
        let path = "/api/v4/tasks";
        let url = format!("{}{path}", self.base);
        let bad = |m: String| self.err(ErrorKind::Permanent, &format!("POST {path}"), &url, m);
        let responsible: u64 = task.responsible_id.parse().map_err(|_| {
            bad(format!(
                "responsible id {:?} is not numeric",
                task.responsible_id
            ))
        })?;
        let text = if task.description.is_empty() {
            task.title.clone()
        } else {
            format!("{}\n{}", task.title, task.description)
        };
        let mut item = json!({
            "text": text, "complete_till": task.deadline.timestamp(), "task_type_id": 1,
            "responsible_user_id": responsible, "request_id": "0",
        });
        if let Some(ent) = &task.entity
            && let Some(plural) = map::entity_plural(ent.kind)
        {
            let id: u64 = ent
                .id
                .parse()
                .map_err(|_| bad(format!("entity id {:?} is not numeric", ent.id)))?;
            item["entity_type"] = json!(plural);
            item["entity_id"] = json!(id);
        }
        let v = self
            .call(Method::POST, path, &[], Some(&json!([item])))
            .await?;
        created_id(self, v.as_ref(), "tasks", path)
    }

    async fn add_comment(&self, entity: &EntityRef, text: &str) -> Result<String> {
        let Some(plural) = map::entity_plural(entity.kind) else {
            return Err(self.err(
                ErrorKind::Permanent,
                "POST notes",
                &self.base,
                format!("amoCRM has no notes on {}", entity.kind.as_str()),
            ));
        };
        let path = format!("/api/v4/{plural}/notes");
        let id: u64 = entity.id.parse().map_err(|_| {
            self.err(
                ErrorKind::Permanent,
                &format!("POST {path}"),
                &format!("{}{path}", self.base),
                format!("entity id {:?} is not numeric", entity.id),
            )
        })?;
        let body = json!([{"entity_id": id, "note_type": "common", "params": {"text": text},
                           "request_id": "0"}]);
        let v = self.call(Method::POST, &path, &[], Some(&body)).await?;
        created_id(self, v.as_ref(), "notes", &path)
    }

    async fn fetch_changes(
        &self,
        cursors: &[(EntityKind, Cursor)],
    ) -> Result<Vec<(EntityKind, Page)>> {
        self.do_fetch_changes(cursors).await
    }

    fn leads_leave_their_list(&self) -> bool {
        true
    }

    async fn lead_outcomes(&self, open: &[Lead]) -> Result<Vec<Lead>> {
        self.do_lead_outcomes(open).await
    }

    async fn create_lead(&self, lead: &NewLead) -> Result<String> {
        self.do_create_lead(lead).await
    }

    async fn create_deal(&self, deal: &NewDeal) -> Result<String> {
        self.do_create_deal(deal).await
    }

    async fn create_contact(&self, contact: &NewContact) -> Result<String> {
        self.do_create_contact(contact).await
    }

    async fn set_responsible(&self, entity: &EntityRef, user_id: &str) -> Result<()> {
        self.do_set_responsible(entity, user_id).await
    }

    async fn move_deal(&self, deal_id: &str, stage_id: &str) -> Result<()> {
        self.do_move_deal(deal_id, stage_id).await
    }

    async fn close_deal_lost(&self, deal_id: &str, reason: &str) -> Result<()> {
        self.do_close_deal_lost(deal_id, reason).await
    }

    async fn update_tags(
        &self,
        entity: &EntityRef,
        add: &[String],
        remove: &[String],
    ) -> Result<()> {
        self.do_update_tags(entity, add, remove).await
    }

    async fn complete_task(&self, task_id: &str, result: &str) -> Result<()> {
        self.do_complete_task(task_id, result).await
    }

    async fn register_call(&self, call: &CallRecord) -> Result<String> {
        self.do_register_call(call).await
    }
}

fn created_id(c: &AmoCrm, v: Option<&Value>, key: &str, path: &str) -> Result<String> {
    v.and_then(|v| v["_embedded"][key][0]["id"].as_u64())
        .map(|id| id.to_string())
        .ok_or_else(|| {
            c.err(
                ErrorKind::Decode,
                &format!("POST {path}"),
                &format!("{}{path}", c.base),
                format!("answer has no _embedded.{key}[0].id"),
            )
        })
}

/// Entry points for the fuzz targets in `fuzz/`: the pure parsers of amoCRM answers.
#[doc(hidden)]
pub mod fuzzing {
    use serde_json::Value;

    use crate::domain::{Activity, Deal, Task};

    /// One lead (a deal in dozor's terms) through the mapper, as the sync maps it.
    pub fn deal(v: &Value) -> Result<Deal, String> {
        super::map::deal(v, "RUB")
    }

    /// One task through the mapper.
    pub fn task(v: &Value) -> Result<Task, String> {
        super::map::task(v)
    }

    /// One note through the call-note mapper (`None` for other note types).
    pub fn call_note(v: &Value) -> Result<Option<Activity>, String> {
        super::map::call_note(v, "leads")
    }

    /// Reads `bytes` as an API v4 answer and feeds every embedded item (or the answer itself)
    /// through every mapper; returns how many items mapped. Must never panic.
    pub fn parse_answer(bytes: &[u8]) -> usize {
        let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
            return 0;
        };
        let mut items: Vec<Value> = vec![v.clone()];
        if let Some(Value::Object(e)) = v.get("_embedded") {
            for list in e.values() {
                if let Value::Array(a) = list {
                    items.extend(a.iter().cloned());
                }
            }
        }
        let mut ok = 0;
        for it in &items {
            ok += usize::from(super::map::deal(it, "RUB").is_ok());
            ok += usize::from(super::map::contact(it).is_ok());
            ok += usize::from(super::map::company(it).is_ok());
            ok += usize::from(super::map::task(it).is_ok());
            ok += usize::from(super::map::user(it).is_ok());
            ok += usize::from(super::map::pipeline(it).is_ok());
            ok += usize::from(super::map::unsorted(it).is_ok());
            for entity in ["leads", "contacts", "companies"] {
                ok += usize::from(matches!(super::map::call_note(it, entity), Ok(Some(_))));
            }
            let _ = super::map::unsorted_updated(it);
            let kind = it.get("type").and_then(Value::as_str).unwrap_or("");
            let entity = it.get("entity_type").and_then(Value::as_str).unwrap_or("");
            let _ = super::changes::event_kinds(kind, entity);
            let _ = super::map::entity_kind(entity);
        }
        ok
    }
}
