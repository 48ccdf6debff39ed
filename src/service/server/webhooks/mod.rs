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

mod amocrm;
mod bitrix24;
mod comagic;
#[doc(hidden)]
pub mod fuzzing;
mod telegram;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use super::ServerState;
use crate::config::{CrmConfig, Secret, TelephonyConfig, TenantConfig, WebhooksConfig};
use crate::notify::telegram::Update;
use crate::store::Store;
use crate::telephony::comagic::Comagic;
use amocrm::amocrm;
use bitrix24::bitrix24;
use comagic::comagic;
use telegram::telegram;

/// Largest body a receiver reads; larger ones get 413. Real pushes are a few KiB.
pub(crate) const MAX_BODY: usize = 256 * 1024;

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
pub(crate) fn routes() -> Router<ServerState> {
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
pub(crate) fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
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
