//! amoCRM API v4 connector: OAuth2 with single-use refresh tokens, or a long-lived token.
//!
//! Mapping: amoCRM "leads" are deals, unsorted items are leads, call notes of leads, contacts
//! and companies are activities. Reads page with `filter[updated_at][from]` and
//! `order[id]=asc`, 250 per page; the cursor position is the page number (for deals,
//! contacts, companies and tasks with the run it belongs to, see `paging`: records deleted
//! between two pages would otherwise hide the record at the next page boundary).
//!
//! Accounts without the API filtering add-on: the filters page
//! (<https://www.amocrm.ru/developers/content/crm_platform/filters-api>) says filtering leads,
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
//!
//! One file per role: `auth` (tokens), `transport` (one request and its waits), `reads`
//! (list pages, directory, phone search), `paging` (repair of page shifts), `changes`
//! (events), [`write`] (adds and updates), `calls` (call logging), `map` (amoCRM fields to
//! the domain).

// The shared `http::Error` is large by design (it names method and URL); boxing it here alone
// would make this connector differ from the others.
#![allow(clippy::result_large_err)]

mod auth;
mod calls;
mod changes;
mod map;
mod paging;
mod reads;
mod transport;
mod write;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::config::AmocrmConfig;
use crate::crm::{CallRecord, Crm, Cursor, NewContact, NewDeal, NewLead, NewTask, Page, Result};
use crate::domain::{CrmKind, EntityKind, EntityRef, Lead, Pipeline, User};
use crate::http::{Error, ErrorKind, Limiter, Throttle, redact_url};
use crate::store::TokenStore;
use tokio_util::sync::CancellationToken;

use auth::Auth;
use paging::Traces;

const SYSTEM: &str = "amocrm";
/// The request period is this much longer than 1/`rate_per_sec`.
const RATE_MARGIN: f64 = 1.03;
/// The largest page amoCRM serves for leads, contacts, companies, tasks, notes and unsorted.
pub(crate) const PAGE_LIMIT: u32 = 250;
/// Attempts for one request on 5xx / transport errors (429s are waited out by [`Throttle`]).
const MAX_ATTEMPTS: u32 = 6;

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
    pub(crate) fn with_stop(mut self, stop: CancellationToken) -> Self {
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
        self.do_users().await
    }

    async fn pipelines(&self) -> Result<Vec<Pipeline>> {
        self.do_pipelines().await
    }

    async fn fetch_page(&self, entity: EntityKind, cursor: &Cursor) -> Result<Page> {
        self.do_fetch_page(entity, cursor).await
    }

    async fn find_by_phone(&self, e164: &str) -> Result<Vec<EntityRef>> {
        self.do_find_by_phone(e164).await
    }

    async fn create_task(&self, task: &NewTask) -> Result<String> {
        self.do_create_task(task).await
    }

    async fn add_comment(&self, entity: &EntityRef, text: &str) -> Result<String> {
        self.do_add_comment(entity, text).await
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

    use crate::domain::{Activity, Deal};

    /// One lead (a deal in dozor's terms) through the mapper, as the sync maps it.
    pub fn deal(v: &Value) -> Result<Deal, String> {
        super::map::deal(v, "RUB")
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
