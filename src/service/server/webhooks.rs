//! Webhook receivers: pushes from Bitrix24, amoCRM, CoMagic and Telegram.
//!
//! A push is a hint, not the truth: every receiver authenticates the call, validates the body,
//! records the delivery (so a repeated delivery is processed once), answers at once and does
//! the work in the background. CRM events only wake the tenant's cycle early, which then reads
//! the changed records through the same incremental sync as polling. A CoMagic notification is
//! validated as a whole call, then the call is read back from the CoMagic API by its session id
//! (`get.calls_report`, filter `id`): only what the API confirms is stored in the mirror and
//! can cause CRM writes, then the cycle is woken. Polling keeps running as the safety net for lost pushes
//! (Bitrix24 never retries a failed delivery).
//!
//! Routes (the public base URL is whatever the operator's reverse proxy exposes):
//! - `POST /hooks/bitrix24/{tenant}`: token in the body, `auth[application_token]`;
//! - `POST /hooks/amocrm/{tenant}/{secret}`;
//! - `POST|GET /hooks/comagic/{tenant}/{secret}`;
//! - `POST /hooks/telegram/{tenant}`: token in `X-Telegram-Bot-Api-Secret-Token`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use super::ServerState;
use crate::config::{CrmConfig, Secret, TelephonyConfig, TenantConfig, WebhooksConfig};
use crate::notify::telegram::Update;
use crate::store::Store;
use crate::telephony::comagic::Comagic;

/// Largest body a receiver reads; larger ones get 413. Real pushes are a few KiB.
pub const MAX_BODY: usize = 256 * 1024;

/// Telegram updates queued per tenant before the receiver answers 503 (Telegram then retries).
const TELEGRAM_QUEUE: usize = 256;

/// Deliveries older than this are forgotten (no source re-sends that late).
const DEDUPE_KEEP_SECS: i64 = 7 * 24 * 3600;

/// Per-tenant webhook state: tokens, the cycle's wake-up and the bot's update queue.
struct TenantHooks {
    cfg: WebhooksConfig,
    /// `host[:port]` of the Bitrix24 portal, to compare with `auth[domain]`.
    b24_domain: Option<String>,
    /// amoCRM account subdomain, to compare with `account[subdomain]`.
    amo_subdomain: Option<String>,
    comagic: Option<Arc<Comagic>>,
    wake: Arc<Notify>,
    telegram: Option<mpsc::Sender<Update>>,
}

/// All tenants' receivers, shared by the server's handlers.
#[derive(Default)]
pub struct Hooks {
    tenants: HashMap<String, TenantHooks>,
    /// (tenant, source, outcome) -> deliveries.
    counts: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    /// (tenant, source) -> last accepted delivery.
    last: Mutex<BTreeMap<(String, &'static str), DateTime<Utc>>>,
}

/// What the daemon needs to connect the receivers to the rest: the shared [`Hooks`] for the
/// server, one wake-up per tenant for its cycle loop, and the Telegram update queues.
pub struct Wiring {
    pub hooks: Arc<Hooks>,
    /// tenant -> notified when a push arrives; the daemon runs that tenant's cycle early.
    pub wakes: HashMap<String, Arc<Notify>>,
    /// tenant -> updates received by the Telegram webhook, for the bot's command handling
    /// (the same place long polling would hand them to).
    pub telegram_updates: HashMap<String, mpsc::Receiver<Update>>,
}

impl Hooks {
    /// Builds the receivers of `tenants` and the channels that lead out of them.
    pub fn wire<'a>(tenants: impl IntoIterator<Item = &'a TenantConfig>) -> Wiring {
        let mut hooks = Hooks::default();
        let mut wakes = HashMap::new();
        let mut telegram_updates = HashMap::new();
        for t in tenants {
            let wake = Arc::new(Notify::new());
            wakes.insert(t.id.clone(), wake.clone());
            let tz = t
                .timezone
                .parse::<chrono_tz::Tz>()
                .unwrap_or(chrono_tz::Europe::Moscow);
            let comagic = match &t.telephony {
                Some(TelephonyConfig::Comagic(c)) => Some(Arc::new(Comagic::new(c, tz))),
                _ => None,
            };
            let (b24_domain, amo_subdomain) = match &t.crm {
                CrmConfig::Bitrix24(b) => {
                    let url = b
                        .webhook_url
                        .as_ref()
                        .map(|s| s.expose().to_string())
                        .or_else(|| b.portal_url.clone());
                    (url.as_deref().and_then(host_port), None)
                }
                CrmConfig::Amocrm(a) => (None, amo_subdomain(&a.base_url)),
            };
            let telegram = t.webhooks.telegram_secret.as_ref().map(|_| {
                let (tx, rx) = mpsc::channel(TELEGRAM_QUEUE);
                telegram_updates.insert(t.id.clone(), rx);
                tx
            });
            hooks.tenants.insert(
                t.id.clone(),
                TenantHooks {
                    cfg: t.webhooks.clone(),
                    b24_domain,
                    amo_subdomain,
                    comagic,
                    wake,
                    telegram,
                },
            );
        }
        Wiring {
            hooks: Arc::new(hooks),
            wakes,
            telegram_updates,
        }
    }

    /// The wake-up of `tenant`'s cycle.
    pub fn wake(&self, tenant: &str) -> Option<Arc<Notify>> {
        self.tenants.get(tenant).map(|t| t.wake.clone())
    }

    /// Deliveries by (tenant, source, outcome): accepted, duplicate, unauthorized, forbidden,
    /// bad_request, too_large, unavailable.
    pub fn counts(&self) -> Vec<((String, String, String), u64)> {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .map(|((t, s, o), n)| ((t.clone(), s.to_string(), o.to_string()), *n))
            .collect()
    }

    /// When `source` last delivered an accepted push for `tenant` (since the process started).
    pub fn last_delivery(&self, tenant: &str, source: &str) -> Option<DateTime<Utc>> {
        let l = self.last.lock().unwrap_or_else(|e| e.into_inner());
        l.iter()
            .find(|((t, s), _)| t == tenant && *s == source)
            .map(|(_, at)| *at)
    }

    fn count(&self, tenant: &str, source: &'static str, outcome: &'static str) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((tenant.to_string(), source, outcome)).or_default() += 1;
        if outcome == "accepted" {
            let mut l = self.last.lock().unwrap_or_else(|e| e.into_inner());
            l.insert((tenant.to_string(), source), Utc::now());
        }
    }
}

/// The receivers' routes; merged into the server's router.
pub fn routes() -> Router<ServerState> {
    Router::new()
        .route("/hooks/bitrix24/{tenant}", post(bitrix24))
        .route("/hooks/amocrm/{tenant}/{secret}", post(amocrm))
        .route(
            "/hooks/comagic/{tenant}/{secret}",
            post(comagic).get(comagic),
        )
        .route("/hooks/telegram/{tenant}", post(telegram))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Why a delivery was refused; the body says what to fix, never a token.
#[derive(Debug)]
enum Reject {
    NotFound,
    Unauthorized(&'static str),
    Forbidden(&'static str),
    BadRequest(String),
    TooLarge,
    Unavailable(&'static str),
    Internal,
}

impl Reject {
    fn outcome(&self) -> &'static str {
        match self {
            Reject::NotFound => "not_found",
            Reject::Unauthorized(_) => "unauthorized",
            Reject::Forbidden(_) => "forbidden",
            Reject::BadRequest(_) => "bad_request",
            Reject::TooLarge => "too_large",
            Reject::Unavailable(_) => "unavailable",
            Reject::Internal => "error",
        }
    }
}

impl Reject {
    /// The status and the message the caller gets.
    fn answer(self) -> (StatusCode, String) {
        match self {
            Reject::NotFound => (StatusCode::NOT_FOUND, "no such webhook".to_string()),
            Reject::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.to_string()),
            Reject::Forbidden(m) => (StatusCode::FORBIDDEN, m.to_string()),
            Reject::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Reject::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {MAX_BODY} bytes"),
            ),
            Reject::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.to_string()),
            Reject::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not record the delivery".to_string(),
            ),
        }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let (status, message) = self.answer();
        (status, axum::Json(json!({ "error": message }))).into_response()
    }
}

fn bad(message: impl Into<String>) -> Reject {
    Reject::BadRequest(message.into())
}

fn missing(field: &str) -> Reject {
    bad(format!("missing field `{field}`"))
}

/// A delivery that passed validation, ready to be recorded.
struct Delivery {
    source: &'static str,
    event: String,
    entity: String,
    ts: String,
}

/// Runs one receiver: counts and logs the outcome, answers 200 with `accepted` or `duplicate`.
async fn finish(
    s: &ServerState,
    tenant: &str,
    source: &'static str,
    result: Result<(&'static str, String), Reject>,
) -> Response {
    match result {
        Ok((outcome, detail)) => {
            s.hooks.count(tenant, source, outcome);
            tracing::debug!(tenant, source, outcome, %detail, "webhook delivery");
            (
                StatusCode::OK,
                axum::Json(json!({ "status": outcome, "detail": detail })),
            )
                .into_response()
        }
        Err(r) => {
            // Unknown tenants are not counted: the path is the caller's to choose.
            if !matches!(r, Reject::NotFound) {
                s.hooks.count(tenant, source, r.outcome());
            }
            match &r {
                Reject::Unauthorized(why) | Reject::Forbidden(why) => {
                    tracing::warn!(tenant, source, reason = why, "webhook delivery refused");
                }
                Reject::BadRequest(why) => {
                    tracing::warn!(tenant, source, reason = %why, "malformed webhook delivery");
                }
                other => {
                    tracing::info!(
                        tenant,
                        source,
                        outcome = other.outcome(),
                        "webhook delivery not taken"
                    );
                }
            }
            r.into_response()
        }
    }
}

fn hooks_of<'a>(s: &'a ServerState, tenant: &str) -> Result<&'a TenantHooks, Reject> {
    s.hooks.tenants.get(tenant).ok_or(Reject::NotFound)
}

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Reject> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Reject::TooLarge
        } else {
            bad(format!("cannot read the body: {}", e.body_text()))
        }
    })
}

/// Compares a presented secret with the configured one in time independent of where they
/// differ.
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= p ^ e;
    }
    std::hint::black_box(diff) == 0
}

fn check_secret(presented: Option<&str>, expected: &Secret) -> Result<(), Reject> {
    match presented {
        None | Some("") => Err(Reject::Unauthorized("missing token")),
        Some(p) if constant_time_eq(p.as_bytes(), expected.expose().as_bytes()) => Ok(()),
        Some(_) => Err(Reject::Forbidden("wrong token")),
    }
}

/// Remembers a delivery; `false` when the same one was seen before.
async fn record(store: &Store, tenant: &str, d: &Delivery) -> Result<bool, Reject> {
    let hash = digest(&[tenant, d.source, &d.event, &d.entity, &d.ts]);
    let now = Utc::now().timestamp();
    let inserted = sqlx::query(
        "INSERT INTO webhook_deliveries (hash, tenant, source, event, entity, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(hash)
    .bind(tenant)
    .bind(d.source)
    .bind(d.event.clone())
    .bind(d.entity.clone())
    .bind(now)
    .execute(store.pool())
    .await
    .map_err(|e| {
        tracing::error!(tenant, source = d.source, error = %e, "cannot record a webhook delivery");
        Reject::Internal
    })?
    .rows_affected()
        > 0;
    if inserted && now % 64 == 0 {
        // Now and then, forget old deliveries.
        let _ = sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < $1")
            .bind(now - DEDUPE_KEEP_SECS)
            .execute(store.pool())
            .await;
    }
    Ok(inserted)
}

async fn forget(store: &Store, tenant: &str, d: &Delivery) {
    let hash = digest(&[tenant, d.source, &d.event, &d.entity, &d.ts]);
    let _ = sqlx::query("DELETE FROM webhook_deliveries WHERE hash = $1")
        .bind(hash)
        .execute(store.pool())
        .await;
}

/// A 128-bit FNV-1a digest (two 64-bit lanes) of the parts, as hex. Collisions only matter
/// for deduplication, where a 128-bit space is ample.
fn digest(parts: &[&str]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0x1f)) {
            a = (a ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            b = (b ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    format!("{a:016x}{b:016x}")
}

/// PHP-bracket form fields (`data[FIELDS][ID]=1`) as key -> value (first value wins).
fn form(body: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

fn host_port(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// `acme` for `https://acme.amocrm.ru`; `None` for other hosts (a proxy, the simulator).
fn amo_subdomain(base_url: &str) -> Option<String> {
    let u = url::Url::parse(base_url).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    let (sub, rest) = host.split_once('.')?;
    ["amocrm.ru", "amocrm.com", "kommo.com"]
        .contains(&rest)
        .then(|| sub.to_string())
}

fn wake(h: &TenantHooks) {
    h.wake.notify_one();
}

// ---------------------------------------------------------------------------------------------
// Bitrix24

/// The delivery a Bitrix24 event form describes (`event`, `data[FIELDS][ID]`, `ts`), once its
/// token has been checked. Pure, so the fuzz target reaches it without the HTTP layer.
fn bitrix24_delivery(f: &BTreeMap<String, String>) -> Result<Delivery, Reject> {
    let event = f
        .get("event")
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| missing("event"))?
        .to_ascii_uppercase();
    let entity = [
        "data[FIELDS][ID]",
        "data[FIELDS_AFTER][ID]",
        "data[FIELDS_BEFORE][ID]",
    ]
    .iter()
    .find_map(|k| f.get(*k).filter(|v| !v.is_empty()))
    .ok_or_else(|| missing("data[FIELDS][ID]"))?
    .clone();
    if !entity.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("field `data[FIELDS][ID]` must be a number"));
    }
    let ts = f
        .get("ts")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("ts"))?
        .clone();
    Ok(Delivery {
        source: "bitrix24",
        event,
        entity,
        ts,
    })
}

/// Whether `domain` is where the tenant's portal moved (as the connector learnt from the
/// portal's redirect): a renamed portal posts its events from the new address, and the
/// application token, checked before, is what authenticates them.
async fn moved_to(store: &crate::store::Store, tenant: &str, domain: &str) -> bool {
    crate::crm::bitrix24::moved::load(store, tenant)
        .await
        .and_then(|o| host_port(&o))
        .is_some_and(|h| h.eq_ignore_ascii_case(domain))
}

async fn bitrix24(
    State(s): State<ServerState>,
    Path(tenant): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let h = hooks_of(&s, &tenant)?;
        let token = h.cfg.bitrix24_token.as_ref().ok_or(Reject::NotFound)?;
        let body = body_of(body)?;
        let f = form(&body);
        check_secret(f.get("auth[application_token]").map(String::as_str), token)?;
        if let (Some(expected), Some(domain)) = (&h.b24_domain, f.get("auth[domain]"))
            && !domain.eq_ignore_ascii_case(expected)
            && !moved_to(&s.store, &tenant, domain).await
        {
            return Err(Reject::Forbidden(
                "auth[domain] is not this tenant's portal",
            ));
        }
        let d = bitrix24_delivery(&f)?;
        if !record(&s.store, &tenant, &d).await? {
            return Ok(("duplicate", format!("{} {}", d.event, d.entity)));
        }
        wake(h);
        Ok(("accepted", format!("{} {}", d.event, d.entity)))
    }
    .await;
    finish(&s, &tenant, "bitrix24", result).await
}

// ---------------------------------------------------------------------------------------------
// amoCRM

/// The groups amoCRM posts (`leads[add][0][id]`, `contacts[update][0][id]`, `task[add][0][id]`).
const AMO_GROUPS: [&str; 8] = [
    "leads",
    "contacts",
    "companies",
    "customers",
    "task",
    "tasks",
    "unsorted",
    "catalogs",
];

/// The delivery an amoCRM webhook form describes: every entity `group[action][n][id]` names
/// (`group[action][n][uid]` for unsorted items, whose key is a string), with its change time.
/// The `account[...]` block is optional (the docs' own examples omit it; the secret in the
/// address authenticates the delivery); when present it must name the tenant's account.
/// `expected_subdomain` is the tenant's account, when its address tells it.
/// Pure, so the fuzz target reaches it without the HTTP layer.
fn amocrm_delivery(
    f: &BTreeMap<String, String>,
    expected_subdomain: Option<&str>,
) -> Result<Delivery, Reject> {
    let sub = f.get("account[subdomain]").filter(|v| !v.is_empty());
    if let (Some(expected), Some(sub)) = (expected_subdomain, sub)
        && !sub.eq_ignore_ascii_case(expected)
    {
        return Err(Reject::Forbidden(
            "account[subdomain] is not this tenant's account",
        ));
    }
    let mut items: Vec<String> = Vec::new();
    for (k, v) in f {
        if let Some(item) = amo_item(f, k, v)? {
            items.push(item);
        }
    }
    if items.is_empty() {
        return Err(bad(
            "no entity in the body: expected fields like `leads[add][0][id]` or `unsorted[add][0][uid]`",
        ));
    }
    items.sort();
    let events: Vec<&str> = items
        .iter()
        .map(|i| i.split('@').next().unwrap_or(i))
        .collect();
    Ok(Delivery {
        source: "amocrm",
        event: events
            .iter()
            .map(|e| e.rsplit_once(':').map_or(*e, |x| x.0))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(","),
        entity: events.join(","),
        ts: items.join(","),
    })
}

/// `group:action:key@time` for a field naming an entity (`leads[status][0][id]`,
/// `unsorted[delete][0][uid]`), `None` for any other field (nested custom fields, names, the
/// account block). An unsorted deletion is named by what ended it (`unsorted:accept:UID`).
fn amo_item(f: &BTreeMap<String, String>, k: &str, v: &str) -> Result<Option<String>, Reject> {
    let Some((rest, field)) = k
        .strip_suffix("][id]")
        .map(|r| (r, "id"))
        .or_else(|| k.strip_suffix("][uid]").map(|r| (r, "uid")))
    else {
        return Ok(None);
    };
    let parts: Vec<&str> = rest.split(['[', ']']).filter(|p| !p.is_empty()).collect();
    // A note added to an entity nests the note once more (`leads[note][0][note][id]`, with the
    // entity in `[element_id]`): it names that entity.
    let (group, action, n, note) = match parts.as_slice() {
        [group, action, n] => (group, action, n, false),
        [group, action, n, last] if *action == "note" && *last == "note" => {
            (group, action, n, true)
        }
        _ => return Ok(None),
    };
    if !AMO_GROUPS.contains(group) || !n.chars().all(|c| c.is_ascii_digit()) {
        return Ok(None);
    }
    // Unsorted items are keyed by their uid; any other entity by its numeric id.
    match (*group == "unsorted", field) {
        (true, "uid") if is_amo_uid(v) => {}
        (true, "uid") => {
            return Err(bad(format!(
                "field `{k}` must be an unsorted item's uid (1 to 128 letters, digits, `-`, `_`, `:` or `.`)"
            )));
        }
        (false, "id") if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) => {}
        (false, "id") => return Err(bad(format!("field `{k}` must be a number"))),
        _ => return Ok(None),
    }
    let prefix = format!("{group}[{action}][{n}]");
    if note {
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(format!("field `{k}` must be a number")));
        }
        let entity = f
            .get(&format!("{prefix}[note][element_id]"))
            .map_or(v, String::as_str);
        if entity.is_empty() || !entity.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(format!(
                "field `{prefix}[note][element_id]` must be a number"
            )));
        }
        let ts = f
            .get(&format!("{prefix}[note][created_at]"))
            .or_else(|| f.get(&format!("{prefix}[note][date_create]")))
            .map_or("", String::as_str);
        return Ok(Some(format!("{group}:note:{entity}@{ts}")));
    }
    let action = if *group == "unsorted" && *action == "delete" {
        match f.get(&format!("{prefix}[action]")) {
            None => "delete",
            Some(a) if is_amo_word(a) => a.as_str(),
            Some(_) => {
                return Err(bad(format!(
                    "field `{prefix}[action]` must name what ended the unsorted item (accept, decline, link)"
                )));
            }
        }
    } else {
        action
    };
    let ts = ["last_modified", "updated_at", "date_create", "created_at"]
        .iter()
        .find_map(|t| f.get(&format!("{prefix}[{t}]")))
        .map_or("", String::as_str);
    Ok(Some(format!("{group}:{action}:{v}@{ts}")))
}

/// An unsorted item's uid as amoCRM writes it (hex, or `amojo:...` style for chats).
fn is_amo_uid(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
}

/// An action word (`accept`, `decline`, `link`): short, lower-case letters and `_`.
fn is_amo_word(v: &str) -> bool {
    (1..=32).contains(&v.len()) && v.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

async fn amocrm(
    State(s): State<ServerState>,
    Path((tenant, secret)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let h = hooks_of(&s, &tenant)?;
        let expected = h.cfg.amocrm_secret.as_ref().ok_or(Reject::NotFound)?;
        check_secret(Some(&secret), expected)?;
        let body = body_of(body)?;
        let f = form(&body);
        let d = amocrm_delivery(&f, h.amo_subdomain.as_deref())?;
        if !record(&s.store, &tenant, &d).await? {
            return Ok(("duplicate", d.entity));
        }
        wake(h);
        Ok(("accepted", d.entity))
    }
    .await;
    finish(&s, &tenant, "amocrm", result).await
}

// ---------------------------------------------------------------------------------------------
// CoMagic

/// What a CoMagic notification says happened to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallEvent {
    /// Ringing: not yet answered nor missed, so nothing to store.
    Start,
    Answered,
    End,
    Lost,
}

fn classify(event: &str) -> Option<CallEvent> {
    let e = event.to_ascii_lowercase();
    if ["lost", "missed", "miss", "unanswered", "no_answer"]
        .iter()
        .any(|w| e.contains(w))
    {
        Some(CallEvent::Lost)
    } else if ["end", "finish", "complete", "hangup"]
        .iter()
        .any(|w| e.contains(w))
    {
        Some(CallEvent::End)
    } else if e.contains("answer") || e.contains("talk") {
        Some(CallEvent::Answered)
    } else if ["start", "incoming", "outgoing", "begin", "ring"]
        .iter()
        .any(|w| e.contains(w))
    {
        Some(CallEvent::Start)
    } else {
        None
    }
}

/// The notification's fields, from a JSON body, a form body or the query string.
fn comagic_fields(body: &[u8], query: Option<&str>) -> Result<BTreeMap<String, Value>, Reject> {
    let trimmed = body.trim_ascii();
    if trimmed.first() == Some(&b'{') {
        match serde_json::from_slice::<Value>(trimmed) {
            Ok(Value::Object(m)) => Ok(m.into_iter().collect()),
            Ok(_) => Err(bad("body must be a JSON object")),
            Err(e) => Err(bad(format!("body is not valid JSON: {e}"))),
        }
    } else if !trimmed.is_empty() {
        Ok(form(trimmed)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect())
    } else {
        Ok(form(query.unwrap_or_default().as_bytes())
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect())
    }
}

fn field_text(f: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    match f.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A duration field of a call: absent, or 0 s to a day.
fn field_int(f: &BTreeMap<String, Value>, key: &str) -> Result<Option<i64>, Reject> {
    match f.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => crate::domain::bounds::call_seconds(v)
            .map(Some)
            .ok_or_else(|| {
                bad(format!(
                    "field `{key}` must be a number of seconds from 0 to 86400"
                ))
            }),
    }
}

/// Turns a notification into a `get.calls_report` row, so the poller's mapping reads it.
fn comagic_row(f: &BTreeMap<String, Value>, event: CallEvent) -> Result<Value, Reject> {
    let id = field_text(f, "call_session_id").ok_or_else(|| missing("call_session_id"))?;
    if !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("field `call_session_id` must be a number"));
    }
    let direction = match field_text(f, "direction").map(|d| d.to_ascii_lowercase()) {
        Some(d) if ["in", "incoming", "inbound"].contains(&d.as_str()) => "in",
        Some(d) if ["out", "outgoing", "outbound"].contains(&d.as_str()) => "out",
        Some(_) => return Err(bad("field `direction` must be `in` or `out`")),
        None if event == CallEvent::Lost => "in",
        None => return Err(missing("direction")),
    };
    let start = field_text(f, "start_time").ok_or_else(|| missing("start_time"))?;
    let phone =
        field_text(f, "contact_phone_number").ok_or_else(|| missing("contact_phone_number"))?;
    let talk = field_int(f, "talk_time_duration")?;
    let total = field_int(f, "total_time_duration")?;
    let is_lost = match field_text(f, "is_lost").map(|v| v.to_ascii_lowercase()) {
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" => false,
        Some(_) => return Err(bad("field `is_lost` must be true or false")),
        None => match event {
            CallEvent::Lost => true,
            CallEvent::Answered => false,
            CallEvent::End => match talk {
                Some(t) => t == 0,
                None => return Err(missing("talk_time_duration")),
            },
            CallEvent::Start => unreachable!("start events are not stored"),
        },
    };
    let talk = talk.unwrap_or(0);
    let wait = total.map(|t| (t - talk).max(0)).unwrap_or(0);
    let mut row = json!({
        "id": id,
        "start_time": start,
        "direction": direction,
        "is_lost": is_lost,
        "talk_duration": talk,
        "wait_duration": wait,
        "contact_phone_number": phone,
        "virtual_phone_number": field_text(f, "virtual_phone_number"),
        "source": field_text(f, "call_source"),
    });
    if let Some(emp) = field_text(f, "employee_id").filter(|e| e != "null" && e != "0") {
        row["employees"] = json!([{
            "employee_id": emp,
            "employee_full_name": field_text(f, "employee_full_name"),
            "is_answered": !is_lost,
            "is_talked": !is_lost && talk > 0,
        }]);
    }
    Ok(row)
}

/// The delivery a CoMagic notification describes, and the call it carries (none for a call
/// that is only ringing), mapped by the poller's own mapping. The notification comes as a JSON
/// object, a form body or a query string. Pure, so the fuzz target reaches it without the HTTP
/// layer.
fn comagic_delivery(
    mapper: &Comagic,
    body: &[u8],
    query: Option<&str>,
) -> Result<(Delivery, Option<crate::domain::Call>), Reject> {
    let f = comagic_fields(body, query)?;
    let event_name = field_text(&f, "notification_mnemonic")
        .or_else(|| field_text(&f, "event"))
        .ok_or_else(|| missing("notification_mnemonic"))?;
    let event = classify(&event_name).ok_or_else(|| {
        bad("field `notification_mnemonic` must name a call start, answer, end or lost call")
    })?;
    let id = field_text(&f, "call_session_id").ok_or_else(|| missing("call_session_id"))?;
    let call = if event == CallEvent::Start {
        None
    } else {
        let row = comagic_row(&f, event)?;
        Some(mapper.map_call(&row).map_err(|(_, why)| {
            bad(format!(
                "cannot read the call: {why} (field `{}`)",
                why.rsplit(' ').next().unwrap_or(why)
            ))
        })?)
    };
    let ts = field_text(&f, "notification_timestamp")
        .or_else(|| field_text(&f, "notification_time"))
        .or_else(|| field_text(&f, "start_time"))
        .unwrap_or_default();
    let d = Delivery {
        source: "comagic",
        event: format!("{event:?}").to_ascii_lowercase(),
        entity: id,
        ts,
    };
    Ok((d, call))
}

async fn comagic(
    State(s): State<ServerState>,
    Path((tenant, secret)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let h = hooks_of(&s, &tenant)?;
        let expected = h.cfg.comagic_secret.as_ref().ok_or(Reject::NotFound)?;
        check_secret(Some(&secret), expected)?;
        let Some(mapper) = h.comagic.clone() else {
            return Err(Reject::NotFound);
        };
        let body = body_of(body)?;
        let (d, call) = comagic_delivery(&mapper, &body, query.as_deref())?;
        let id = d.entity.clone();
        if !record(&s.store, &tenant, &d).await? {
            return Ok(("duplicate", format!("{} {id}", d.event)));
        }
        if call.is_some() {
            tokio::spawn(confirm_call(
                s.store.clone(),
                mapper,
                h.wake.clone(),
                tenant.clone(),
                id.clone(),
            ));
        }
        Ok(("accepted", format!("{} {id}", d.event)))
    }
    .await;
    finish(&s, &tenant, "comagic", result).await
}

/// Reads the notified call from the CoMagic API and stores what the API says, then wakes the
/// tenant's cycle. The notification itself is never stored: anyone who learns the path secret
/// could otherwise put any number in the mirror and have dozor create leads and tasks for it.
async fn confirm_call(
    store: Store,
    api: Arc<Comagic>,
    wake: Arc<Notify>,
    tenant: String,
    id: String,
) {
    match api.call_by_id(&id, Utc::now()).await {
        Ok(Some(call)) => match store.upsert_calls(&tenant, &[call]).await {
            Ok(()) => wake.notify_one(),
            Err(e) => {
                tracing::error!(tenant = %tenant, call_id = %id, error = %e, "cannot store a confirmed call; polling will pick it up");
            }
        },
        Ok(None) => {
            tracing::warn!(tenant = %tenant, source = "comagic", call_id = %id, "notified call is not in the CoMagic API; nothing stored");
        }
        Err(e) => {
            // The API is unreachable now: the next polling cycle reads the call if it exists.
            tracing::warn!(tenant = %tenant, call_id = %id, error = %e, "cannot confirm a notified call now; polling will read it");
            wake.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Telegram

/// The delivery a Telegram update describes (its `update_id`) and the update itself. Pure, so
/// the fuzz target reaches it without the HTTP layer.
fn telegram_delivery(body: &[u8]) -> Result<(Delivery, Update), Reject> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not valid JSON: {e}")))?;
    let id = value
        .get("update_id")
        .ok_or_else(|| missing("update_id"))?
        .as_i64()
        .ok_or_else(|| bad("field `update_id` must be an integer"))?;
    let update: Update =
        serde_json::from_value(value).map_err(|e| bad(format!("not a Telegram update: {e}")))?;
    let d = Delivery {
        source: "telegram",
        event: "update".into(),
        entity: id.to_string(),
        ts: String::new(),
    };
    Ok((d, update))
}

async fn telegram(
    State(s): State<ServerState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let h = hooks_of(&s, &tenant)?;
        let expected = h.cfg.telegram_secret.as_ref().ok_or(Reject::NotFound)?;
        let presented = headers
            .get("x-telegram-bot-api-secret-token")
            .and_then(|v| v.to_str().ok());
        check_secret(presented, expected)?;
        let body = body_of(body)?;
        let (d, update) = telegram_delivery(&body)?;
        let id = d.entity.clone();
        if !record(&s.store, &tenant, &d).await? {
            return Ok(("duplicate", format!("update {id}")));
        }
        if let Some(tx) = &h.telegram {
            match tx.try_send(update) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Let Telegram deliver it again later.
                    forget(&s.store, &tenant, &d).await;
                    return Err(Reject::Unavailable("update queue full; retry later"));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::warn!(tenant = %tenant, update_id = id, "no bot is reading updates; update dropped");
                }
            }
        }
        Ok(("accepted", format!("update {id}")))
    }
    .await;
    finish(&s, &tenant, "telegram", result).await
}

/// Entry points for the fuzz targets in `fuzz/`: each receiver's reading of a body, without the
/// HTTP layer, the token check or the store. `Ok` is what an accepted delivery is recorded as
/// (`event entity`), `Err` the message the receiver would answer with.
#[doc(hidden)]
pub mod fuzzing {
    use super::telegram_delivery;
    use super::{Reject, amocrm_delivery, bitrix24_delivery, comagic_delivery, form};
    use crate::telephony::comagic::Comagic;

    /// A CoMagic mapper that is never used for requests (building one is not free: reuse it).
    pub fn comagic_client() -> Comagic {
        crate::telephony::comagic::fuzzing::client()
    }

    fn message(r: Reject) -> String {
        r.answer().1
    }

    /// A Bitrix24 event form (`event=ONCRMDEALUPDATE&data[FIELDS][ID]=1&ts=...`).
    pub fn bitrix24(body: &[u8]) -> Result<String, String> {
        bitrix24_delivery(&form(body))
            .map(|d| format!("{} {}", d.event, d.entity))
            .map_err(message)
    }

    /// An amoCRM webhook form (`leads[add][0][id]=1&account[subdomain]=acme`), for a tenant
    /// whose account is `acme`.
    pub fn amocrm(body: &[u8]) -> Result<String, String> {
        amocrm_delivery(&form(body), Some("acme"))
            .map(|d| d.entity)
            .map_err(message)
    }

    /// A CoMagic notification as a body (JSON or form) or, with an empty body, a query string.
    pub fn comagic(mapper: &Comagic, body: &[u8], query: Option<&str>) -> Result<String, String> {
        comagic_delivery(mapper, body, query)
            .map(|(d, _)| format!("{} {}", d.event, d.entity))
            .map_err(message)
    }

    /// A Telegram update (JSON).
    pub fn telegram(body: &[u8]) -> Result<String, String> {
        telegram_delivery(body)
            .map(|(d, _)| format!("{} {}", d.event, d.entity))
            .map_err(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_only_when_equal() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b""));
    }

    #[test]
    fn events_are_classified() {
        assert_eq!(classify("lost_call"), Some(CallEvent::Lost));
        assert_eq!(classify("call_finished"), Some(CallEvent::End));
        assert_eq!(classify("callended"), Some(CallEvent::End));
        assert_eq!(classify("incoming_call"), Some(CallEvent::Start));
        assert_eq!(classify("call_answered"), Some(CallEvent::Answered));
        assert_eq!(classify("sms"), None);
    }

    #[test]
    fn digest_separates_parts() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
        assert_eq!(digest(&["x"]).len(), 32);
    }

    #[test]
    fn amo_subdomain_only_for_amo_hosts() {
        assert_eq!(
            amo_subdomain("https://acme.amocrm.ru"),
            Some("acme".to_string())
        );
        assert_eq!(amo_subdomain("http://127.0.0.1:8080/amo"), None);
    }

    /// What a refused body may be told: each names the field or the shape that is wrong.
    const CLEAR: [&str; 8] = [
        "missing field `",
        "field `",
        "no entity in the body",
        "account[subdomain] is not this tenant's account",
        "body must be a JSON object",
        "body is not valid JSON",
        "cannot read the call: ",
        "not a Telegram update: ",
    ];

    fn assert_clear(parser: &str, input: &[u8], r: &Result<String, String>) {
        if let Err(m) = r {
            assert!(
                CLEAR.iter().any(|p| m.starts_with(p)),
                "{parser}: unclear error {m:?} for {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Every receiver's parser over one input; a panic fails the test by itself.
    fn all_parsers(c: &Comagic, input: &[u8]) -> [Result<String, String>; 5] {
        let r = [
            fuzzing::bitrix24(input),
            fuzzing::amocrm(input),
            fuzzing::comagic(c, input, None),
            fuzzing::comagic(c, b"", std::str::from_utf8(input).ok()),
            fuzzing::telegram(input),
        ];
        for (name, r) in ["bitrix24", "amocrm", "comagic", "comagic query", "telegram"]
            .iter()
            .zip(&r)
        {
            assert_clear(name, input, r);
        }
        r
    }

    /// Seeded garbage: raw bytes, and bodies assembled from the pieces real pushes are made of
    /// (bracketed keys, escapes, JSON punctuation, digits, Cyrillic), so the parsers get past
    /// their first check. None may panic, and every refusal must say what is wrong.
    #[test]
    fn webhook_parsers_survive_garbage_with_clear_errors() {
        use rand::{Rng, SeedableRng};
        const PIECES: [&str; 40] = [
            "event=",
            "ONCRMDEALUPDATE",
            "data[FIELDS][ID]=",
            "data[FIELDS_AFTER][ID]=",
            "auth[application_token]=",
            "auth[domain]=",
            "ts=",
            "leads[add][0][id]=",
            "contacts[update][1][id]=",
            "task[delete][0][id]=",
            "[last_modified]=",
            "account[subdomain]=",
            "acme",
            "account[id]=",
            "&",
            "=",
            "[",
            "]",
            "%",
            "%ZZ",
            "%D0%9F",
            "+",
            "{",
            "}",
            "\"",
            ":",
            ",",
            "[]",
            "null",
            "true",
            "-1",
            "12345",
            "1e400",
            "999999999999999999999999",
            "\"notification_mnemonic\":\"lost_call\"",
            "\"call_session_id\":",
            "\"update_id\":",
            "\"message\":{",
            "звонок",
            "\u{0}",
        ];
        let c = fuzzing::comagic_client();
        let mut rng = rand::rngs::StdRng::seed_from_u64(20_260_101);
        let mut refused = 0;
        for i in 0..600 {
            let input: Vec<u8> = if i % 3 == 0 {
                let n = rng.gen_range(0..200);
                (0..n).map(|_| rng.r#gen::<u8>()).collect()
            } else {
                let n = rng.gen_range(0..24);
                (0..n)
                    .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
                    .collect::<String>()
                    .into_bytes()
            };
            refused += all_parsers(&c, &input)
                .iter()
                .filter(|r| r.is_err())
                .count();
        }
        assert!(refused > 2000, "garbage is refused: {refused}");
    }

    /// Hand-written bodies that are almost right: each is refused with the field to fix.
    #[test]
    fn malformed_webhook_bodies_name_what_is_wrong() {
        let c = fuzzing::comagic_client();
        let err = |r: Result<String, String>| r.expect_err("refused");
        assert_eq!(
            err(fuzzing::bitrix24(b"data[FIELDS][ID]=1&ts=1")),
            "missing field `event`"
        );
        assert_eq!(
            err(fuzzing::bitrix24(
                b"event=ONCRMDEALADD&data[FIELDS][ID]=1;DROP&ts=1"
            )),
            "field `data[FIELDS][ID]` must be a number"
        );
        assert_eq!(
            err(fuzzing::bitrix24(
                b"event=ONCRMDEALADD&data%5BFIELDS%5D%5BID%5D=7"
            )),
            "missing field `ts`"
        );
        assert_eq!(
            fuzzing::bitrix24(b"event=onCrmDealAdd&data%5BFIELDS%5D%5BID%5D=7&ts=1700000000"),
            Ok("ONCRMDEALADD 7".to_string())
        );
        assert_eq!(
            err(fuzzing::amocrm(b"unsorted[add][0][uid]=5;DROP")),
            "field `unsorted[add][0][uid]` must be an unsorted item's uid (1 to 128 letters, digits, `-`, `_`, `:` or `.`)"
        );
        assert_eq!(
            err(fuzzing::amocrm(
                b"unsorted[delete][0][uid]=ab12&unsorted[delete][0][action]=Accept!"
            )),
            "field `unsorted[delete][0][action]` must name what ended the unsorted item (accept, decline, link)"
        );
        assert_eq!(
            err(fuzzing::amocrm(
                b"account[subdomain]=other&leads[add][0][id]=5"
            )),
            "account[subdomain] is not this tenant's account"
        );
        assert_eq!(
            err(fuzzing::amocrm(
                b"account[subdomain]=acme&leads[add][0][id]=x"
            )),
            "field `leads[add][0][id]` must be a number"
        );
        assert!(
            err(fuzzing::amocrm(
                b"account[subdomain]=acme&leads[add][0][name]=x"
            ))
            .starts_with("no entity in the body")
        );
        assert!(
            err(fuzzing::comagic(&c, b"{\"call_session_id\": 1", None))
                .starts_with("body is not valid JSON")
        );
        assert_eq!(
            err(fuzzing::comagic(
                &c,
                b"{\"notification_mnemonic\": \"sms\"}",
                None
            )),
            "field `notification_mnemonic` must name a call start, answer, end or lost call"
        );
        assert_eq!(
            err(fuzzing::comagic(
                &c,
                br#"{"notification_mnemonic":"lost_call","call_session_id":"12a"}"#,
                None
            )),
            "field `call_session_id` must be a number"
        );
        assert_eq!(
            err(fuzzing::comagic(
                &c,
                b"",
                Some(
                    "notification_mnemonic=call_end&call_session_id=9&direction=in&start_time=2026-01-01%2010:00:00&contact_phone_number=79001234567&talk_time_duration=abc"
                )
            )),
            "field `talk_time_duration` must be a number of seconds from 0 to 86400"
        );
        assert_eq!(
            err(fuzzing::telegram(br#"{"update_id": "1"}"#)),
            "field `update_id` must be an integer"
        );
        assert_eq!(err(fuzzing::telegram(b"{}")), "missing field `update_id`");
        assert!(err(fuzzing::telegram(b"\xff\xfe")).starts_with("body is not valid JSON"));
        assert!(
            err(fuzzing::telegram(br#"{"update_id": 1, "message": 5}"#))
                .starts_with("not a Telegram update: ")
        );
    }
}
