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
//!
//! One file per role: `auth` (webhook or OAuth tokens), `transport` (one call, its retries
//! and budgets, batching), `paging` (list reads), `changes` (incremental probe), [`write`]
//! (adds and updates), `calls` (call registration), `map` (Bitrix24 fields to the domain).

// `http::Error` is the shared error type of every connector; it is returned by value.
#![allow(clippy::result_large_err)]

mod auth;
mod calls;
mod changes;
mod map;
pub mod moved;
mod paging;
mod retry;
mod scope;
mod transport;
mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use auth::Auth;
use transport::Queued;

use super::{CallRecord, Crm, Cursor, NewContact, NewDeal, NewLead, NewTask, Page, Result};
use crate::config::{Bitrix24Config, Bitrix24Plan};
use crate::domain::{CrmKind, EntityKind, EntityRef, Pipeline, User};
use crate::http::{self, Error, ErrorKind, Limiter, Throttle, redact_url};
use crate::store::TokenStore;
use tokio_util::sync::CancellationToken;

const SYSTEM: &str = "bitrix24";
/// Rows per list page (fixed by Bitrix24).
const PAGE: usize = 50;
/// List pages chained into one `batch` request for a full read / an incremental read.
const PAGES_FULL: usize = 50;
/// Commands per `batch` (fixed by Bitrix24).
const MAX_BATCH: usize = 50;
const PAGES_INCREMENTAL: usize = 3;

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

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Permanent, SYSTEM, "config", "", message)
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
        let (auth, host) = Auth::from_config(tenant, cfg, tokens.as_ref()).await?;
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
    pub(crate) fn with_stop(mut self, stop: CancellationToken) -> Self {
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

    async fn add_comment(&self, entity: &EntityRef, text_: &str) -> Result<String> {
        self.do_add_comment(entity, text_).await
    }

    async fn fetch_changes(
        &self,
        cursors: &[(EntityKind, Cursor)],
    ) -> Result<Vec<(EntityKind, Page)>> {
        self.do_fetch_changes(cursors).await
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
        self.do_existing_ids(entity).await
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

#[cfg(test)]
mod tests;

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
            let Some(rows) = super::paging::list_rows(res, wrapped) else {
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
