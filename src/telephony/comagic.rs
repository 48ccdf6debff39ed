//! CoMagic Data API v2.0 client (JSON-RPC).
//!
//! `calls()` reads `get.calls_report` in windows of at most 89 days (3 months), pages with `limit=10000`,
//! and when the offset would pass the API's 100 000 cap it restarts the window at the start time
//! of the last row it got. The API's date-times (`start_time`, `date_from`, `date_till`) carry no
//! offset: they are the account's wall clock. The account's zone is read from `get.account`
//! (once, then again every [`ZONE_REFRESH`]), unless the config names one; the tenant's zone is
//! the last resort, used only while the account has not said (or says nothing). The points budget in `metadata.limits` is respected: when
//! `minute_remaining` reaches 0 the client pauses until `minute_reset`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Result, Telephony, lenient};
use crate::config::{ComagicConfig, Secret};
use crate::domain::{Call, Direction, Employee, TelephonyKind, Ts, Utm, bounds};
use crate::http::{self, Error, ErrorKind, redact_url};
use crate::server::metrics::Observe as _;

const SYSTEM: &str = "comagic";
const DT_FMT: &str = "%Y-%m-%d %H:%M:%S";
/// Rows per page (the API maximum).
const PAGE: u64 = 10_000;
/// The API refuses offsets above this.
const MAX_OFFSET: u64 = 100_000;
/// Longest period one request covers. The API allows 3 calendar months, which can be as short
/// as 89 days (February to April), so 89 days always fits.
const MAX_WINDOW_DAYS: i64 = 89;
const MAX_ATTEMPTS: u32 = 5;
/// How far back a notified call is looked for when it is confirmed.
const CONFIRM_DAYS: i64 = 3;
/// How long the account's zone, once read, is trusted before `get.account` is asked again
/// (accounts change zone rarely; a daily read costs one point).
pub const ZONE_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// Where the zone of the API's date-times comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    /// `telephony.timezone` in the config.
    Config,
    /// `get.account` → `timezone`.
    Account,
    /// The tenant's zone: the account has not been asked yet, or named no zone.
    Tenant,
}

impl std::fmt::Display for ZoneSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ZoneSource::Config => "telephony.timezone in the config",
            ZoneSource::Account => "the CoMagic account's zone",
            ZoneSource::Tenant => "the tenant's zone; the account named none",
        })
    }
}

/// The zone in use, and when the account was last asked for it.
#[derive(Debug, Clone, Copy)]
struct Zone {
    tz: Tz,
    source: ZoneSource,
    read_at: Option<Instant>,
}

const CALL_FIELDS: &[&str] = &[
    "id",
    "start_time",
    "direction",
    "is_lost",
    "talk_duration",
    "wait_duration",
    "contact_phone_number",
    "virtual_phone_number",
    "employees",
    "first_answered_employee_id",
    "first_answered_employee_full_name",
    "call_records",
    "full_record_file_link",
    "communication_id",
    "source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
];

/// A CoMagic (or UIS / CallGear: same API) account.
pub struct Comagic {
    http: reqwest::Client,
    url: String,
    token: Secret,
    /// The zone the API's date-times are read and written in (see [`Comagic::zone`]).
    zone: Mutex<Zone>,
    /// How long the account's zone is trusted once read.
    zone_refresh: Duration,
    /// The tenant's zone: the last resort when the account names none.
    tenant_tz: Tz,
    seq: AtomicU64,
    /// Do not send before this instant (spent minute budget).
    pause_until: Mutex<Option<Instant>>,
    /// Longest wait honoured for a rate-limit hint.
    max_wait: Duration,
    page: u64,
    max_offset: u64,
    /// Cancelled when dozor stops: no further page is asked for and every wait ends.
    stop: CancellationToken,
}

impl Comagic {
    /// A client for the account of `cfg`; `tenant_tz` is used only until the account names its
    /// zone (or when it names none), and never when the config sets `timezone`.
    pub fn new(cfg: &ComagicConfig, tenant_tz: Tz) -> Self {
        let zone = match cfg.timezone_override() {
            Some(tz) => Zone {
                tz,
                source: ZoneSource::Config,
                read_at: None,
            },
            None => Zone {
                tz: tenant_tz,
                source: ZoneSource::Tenant,
                read_at: None,
            },
        };
        Comagic {
            http: http::client(Duration::from_secs(120)),
            url: cfg.base_url.trim_end_matches('/').to_string(),
            token: cfg.access_token.clone().unwrap_or_default(),
            zone: Mutex::new(zone),
            zone_refresh: ZONE_REFRESH,
            tenant_tz,
            seq: AtomicU64::new(1),
            pause_until: Mutex::new(None),
            max_wait: Duration::from_secs(65),
            page: PAGE,
            max_offset: MAX_OFFSET,
            stop: CancellationToken::new(),
        }
    }

    /// Ends every wait of this client, and the paging, once `stop` is cancelled.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Overrides how long the account's zone is trusted (tests exercise the re-read this way).
    #[doc(hidden)]
    pub fn with_zone_refresh(mut self, every: Duration) -> Self {
        self.zone_refresh = every;
        self
    }

    /// Overrides the page size and the offset cap (tests exercise the window restart with a
    /// small world this way).
    #[doc(hidden)]
    pub fn with_paging(mut self, page: u64, max_offset: u64) -> Self {
        self.page = page.clamp(1, PAGE);
        self.max_offset = max_offset.min(MAX_OFFSET);
        self
    }

    fn err(&self, kind: ErrorKind, method: &str, message: impl Into<String>) -> Error {
        let msg: String = message.into();
        let token = self.token.expose();
        let msg = if token.is_empty() {
            msg
        } else {
            msg.replace(token, "***")
        };
        Error::new(kind, SYSTEM, method, redact_url(&self.url), msg)
    }

    /// Waits while the minute budget is spent; an error once dozor is stopping, so a page
    /// loop ends before its next page.
    async fn wait_budget(&self, method: &str) -> Result<()> {
        let until = *self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
        let t = until.unwrap_or_else(Instant::now);
        http::pause_until(t, &self.stop)
            .await
            .map_err(|s| s.error(SYSTEM, method, redact_url(&self.url)))
    }

    fn note_limits(&self, limits: &Value) {
        let remaining = limits.get("minute_remaining").and_then(Value::as_i64);
        let reset = limits
            .get("minute_reset")
            .and_then(Value::as_u64)
            .unwrap_or(60);
        if remaining == Some(0) {
            let d = Duration::from_secs(reset.max(1)).min(self.max_wait);
            *self.pause_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + d);
            tracing::info!(
                system = SYSTEM,
                wait_s = d.as_secs(),
                "minute points budget spent; pausing"
            );
        }
    }

    /// One JSON-RPC call with retries; returns `result`.
    async fn rpc(&self, method: &str, mut params: Value) -> Result<Value> {
        params["access_token"] = json!(self.token.expose());
        let mut attempt = 0;
        loop {
            self.wait_budget(method).await?;
            match self.rpc_once(method, &params).await {
                Ok(v) => return Ok(v),
                Err(e)
                    if (e.is_retryable() || e.kind == ErrorKind::Decode)
                        && attempt + 1 < MAX_ATTEMPTS =>
                {
                    let wait = e
                        .retry_after
                        .unwrap_or_else(|| http::backoff(attempt))
                        .min(self.max_wait);
                    tracing::warn!(system = SYSTEM, method, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
                    http::pause(wait, &self.stop)
                        .await
                        .map_err(|s| s.error(SYSTEM, method, redact_url(&self.url)))?;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn rpc_once(&self, method: &str, params: &Value) -> Result<Value> {
        let id = format!(
            "dozor-{}-{}",
            chrono::Utc::now().timestamp(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let resp = self
            .http
            .post(&self.url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=UTF-8",
            )
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .send()
            .await
            .observe(SYSTEM, method)
            .map_err(|e| Error::transport(SYSTEM, method, redact_url(&self.url), &e))?;
        let status = resp.status().as_u16();
        let bytes = crate::http::read_body(
            resp,
            crate::http::MAX_BODY,
            SYSTEM,
            method,
            &redact_url(&self.url),
        )
        .await?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if let Some(e) = parsed.as_ref().and_then(|v| v.get("error")) {
            return Err(self.rpc_error(method, status, e));
        }
        if status >= 500 {
            return Err(self
                .err(ErrorKind::Transient, method, "server error")
                .status(status));
        }
        if status == 429 {
            return Err(self
                .err(ErrorKind::RateLimited, method, "too many requests")
                .status(status)
                .retry_after(Duration::from_secs(60)));
        }
        let Some(v) = parsed else {
            return Err(self
                .err(ErrorKind::Decode, method, "response is not valid JSON")
                .status(status));
        };
        let Some(result) = v.get("result").cloned() else {
            return Err(self
                .err(
                    ErrorKind::Decode,
                    method,
                    "response has neither result nor error",
                )
                .status(status));
        };
        if let Some(l) = result.pointer("/metadata/limits") {
            self.note_limits(l);
        }
        Ok(result)
    }

    fn rpc_error(&self, method: &str, status: u16, e: &Value) -> Error {
        let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_string();
        let mnemonic = e
            .pointer("/data/mnemonic")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let field = e
            .pointer("/data/field")
            .and_then(Value::as_str)
            .map(|f| format!(" (field {f})"))
            .unwrap_or_default();
        let kind = match code {
            -32029 => ErrorKind::RateLimited,
            -32603 => ErrorKind::Transient,
            -32001 | -32003 => ErrorKind::Auth,
            _ if status >= 500 => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        };
        let mut err = self
            .err(kind, method, format!("{mnemonic}: {message}{field}"))
            .status(status)
            .code(if mnemonic.is_empty() {
                code.to_string()
            } else {
                mnemonic.clone()
            });
        if kind == ErrorKind::RateLimited {
            let reset = e
                .pointer("/data/metadata/limits/minute_reset")
                .and_then(Value::as_u64)
                .unwrap_or(60);
            err = err.retry_after(Duration::from_secs(reset.max(1)));
        }
        err
    }

    fn current_zone(&self) -> Zone {
        *self.zone.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The zone the API's date-times are in, and where it comes from. Asks `get.account` when
    /// the config sets no zone and the account's was never read or was read more than
    /// [`ZONE_REFRESH`] ago. When that read fails, a zone read before is kept (with a warning);
    /// with none read yet the error is returned, so no call is stored or asked for in a zone
    /// that may be wrong.
    pub async fn zone(&self) -> Result<(Tz, ZoneSource)> {
        let z = self.current_zone();
        let fresh = z.read_at.is_some_and(|t| t.elapsed() < self.zone_refresh);
        if z.source == ZoneSource::Config || fresh {
            return Ok((z.tz, z.source));
        }
        let read = match self.read_account().await {
            Ok(acc) => self.account_zone(&acc),
            Err(e) => Err(e),
        };
        match read {
            Ok(read) => Ok(self.set_account_zone(read)),
            Err(e) if z.read_at.is_some() => {
                tracing::warn!(system = SYSTEM, zone = %z.tz, error = %e, "cannot re-read the account's time zone; keeping the one read before");
                Ok((z.tz, z.source))
            }
            Err(e) => Err(e),
        }
    }

    /// Records what `get.account` said about the zone (`None`: it named none).
    fn set_account_zone(&self, read: Option<Tz>) -> (Tz, ZoneSource) {
        let mut z = self.zone.lock().unwrap_or_else(|e| e.into_inner());
        let (tz, source) = match read {
            Some(tz) => (tz, ZoneSource::Account),
            None => (self.tenant_tz, ZoneSource::Tenant),
        };
        if (tz, source) != (z.tz, z.source) || z.read_at.is_none() {
            if source == ZoneSource::Tenant {
                tracing::warn!(system = SYSTEM, zone = %tz, "get.account names no time zone; call times are read in the tenant's zone (set telephony.timezone if that is wrong)");
            } else {
                tracing::info!(system = SYSTEM, zone = %tz, "call times are read in the CoMagic account's time zone");
            }
        }
        *z = Zone {
            tz,
            source,
            read_at: Some(Instant::now()),
        };
        (tz, source)
    }

    /// The account object of `get.account` (`result.data[0]`; a bare object is accepted too).
    async fn read_account(&self) -> Result<Value> {
        let r = self.rpc("get.account", json!({})).await?;
        Ok(match r.get("data") {
            Some(Value::Array(a)) => a.first().cloned().unwrap_or(Value::Null),
            Some(other) => other.clone(),
            None => Value::Null,
        })
    }

    /// The zone an account object names: `Ok(None)` when it names none, an error naming the
    /// value when it is not an IANA zone (the docs promise "Формат IANA zoneinfo").
    // The error is the crate's one HTTP error type, large like everywhere it is returned.
    #[allow(clippy::result_large_err)]
    fn account_zone(&self, acc: &Value) -> Result<Option<Tz>> {
        match acc.get("timezone") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse::<Tz>().map(Some).map_err(|_| {
                self.err(
                    ErrorKind::Permanent,
                    "get.account",
                    format!("the account's timezone `{s}` is not an IANA time zone; set telephony.timezone in the config to the account's zone"),
                )
            }),
            Some(other) => Err(self.err(
                ErrorKind::Decode,
                "get.account",
                format!("timezone must be a string, got {other}"),
            )),
        }
    }

    fn record_host(&self) -> &'static str {
        if self.url.contains("uiscom") {
            "app.uiscom.ru"
        } else if self.url.contains("callgear") {
            "app.callgear.com"
        } else {
            "app.comagic.ru"
        }
    }

    /// Maps one `get.calls_report` row; `Err((call id, reason))` when it is unusable. The
    /// notification receiver maps pushed calls through it too, so both paths agree.
    /// Times are read in the zone in use now (see [`Comagic::zone`]).
    pub fn map_call(&self, row: &Value) -> std::result::Result<Call, (String, &'static str)> {
        self.map_call_in(row, self.current_zone().tz)
    }

    /// [`Comagic::map_call`] with `start_time` read in `tz`.
    fn map_call_in(
        &self,
        row: &Value,
        tz: Tz,
    ) -> std::result::Result<Call, (String, &'static str)> {
        let id = match row.get("id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(("?".into(), "missing id")),
        };
        let bad = |why: &'static str| (id.clone(), why);
        let started_at = row
            .get("start_time")
            .and_then(Value::as_str)
            .and_then(|s| parse_local(s, tz))
            .ok_or_else(|| bad("start_time missing, unparsable or outside 2000-2099"))?;
        let direction = match row.get("direction").and_then(Value::as_str) {
            Some("in") => Direction::In,
            Some("out") => Direction::Out,
            _ => return Err(bad("unknown direction")),
        };
        let is_lost = lenient::flag(row.get("is_lost")).ok_or_else(|| bad("missing is_lost"))?;
        let talk_s = bounds::call_seconds_field(row.get("talk_duration"))
            .ok_or_else(|| bad("talk_duration is not a duration of 0 s to 1 day"))?;
        let wait_s = bounds::call_seconds_field(row.get("wait_duration"))
            .ok_or_else(|| bad("wait_duration is not a duration of 0 s to 1 day"))?;
        let client_phone = match row.get("contact_phone_number") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Null) | None => String::new(),
            // The call happened even if its number came in an odd shape: keep it without one.
            Some(other) => {
                tracing::warn!(system = SYSTEM, call_id = %id, value = %other, "odd contact_phone_number; call kept without a number");
                String::new()
            }
        };
        let (mut employee_id, mut employee_name) = (
            lenient::id(row.get("first_answered_employee_id")),
            lenient::text(row.get("first_answered_employee_full_name")),
        );
        if employee_id.is_none()
            && let Some(list) = row.get("employees").and_then(Value::as_array)
        {
            let pick = list
                .iter()
                .find(|e| lenient::flag(e.get("is_talked")) == Some(true))
                .or_else(|| {
                    list.iter()
                        .find(|e| lenient::flag(e.get("is_answered")) == Some(true))
                })
                .or_else(|| list.first());
            if let Some(e) = pick {
                employee_id = lenient::id(e.get("employee_id"));
                employee_name = lenient::text(e.get("employee_full_name"));
            }
        }
        let recording_url = lenient::text(row.get("full_record_file_link")).or_else(|| {
            let rec = row
                .get("call_records")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|r| lenient::id(Some(r)))?;
            let comm = lenient::id(row.get("communication_id")).unwrap_or_else(|| id.clone());
            Some(format!(
                "https://{}/system/media/talk/{comm}/{rec}/",
                self.record_host()
            ))
        });
        Ok(Call {
            id: id.clone(),
            provider: TelephonyKind::Comagic,
            started_at,
            direction,
            answered: !is_lost,
            talk_s,
            wait_s,
            client_phone,
            virtual_number: lenient::text(row.get("virtual_phone_number")),
            employee_id,
            employee_name,
            recording_url,
            source: lenient::text(row.get("source")),
            utm: Utm {
                source: lenient::text(row.get("utm_source")),
                medium: lenient::text(row.get("utm_medium")),
                campaign: lenient::text(row.get("utm_campaign")),
                content: lenient::text(row.get("utm_content")),
                term: lenient::text(row.get("utm_term")),
            },
        })
    }

    /// The call session `id` as `get.calls_report` reports it, looked for among the calls
    /// that started in the `CONFIRM_DAYS` before `now` (filter `id`, as the docs advise for
    /// confirming a notification). `None` when the API does not know it, or its row is unusable
    /// (refused with a warning naming the field).
    pub async fn call_by_id(&self, id: &str, now: Ts) -> Result<Option<Call>> {
        let Ok(numeric) = id.parse::<u64>() else {
            return Ok(None);
        };
        let (tz, _) = self.zone().await?;
        let params = json!({
            "date_from": to_local(now - chrono::Duration::days(CONFIRM_DAYS), tz).format(DT_FMT).to_string(),
            "date_till": to_local(now + chrono::Duration::minutes(1), tz).format(DT_FMT).to_string(),
            "fields": CALL_FIELDS,
            "filter": {"field": "id", "operator": "=", "value": numeric},
            "limit": 10,
            "offset": 0,
        });
        let result = self.rpc("get.calls_report", params).await?;
        let rows = result
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // Only the row with this id counts, whatever else an answer carries.
        let Some(row) = rows
            .iter()
            .find(|r| lenient::id(r.get("id")).as_deref() == Some(id))
        else {
            return Ok(None);
        };
        match self.map_call_in(row, tz) {
            Ok(c) => Ok(Some(c)),
            Err((id, why)) => {
                tracing::warn!(system = SYSTEM, call_id = %id, reason = why, "call refused");
                Ok(None)
            }
        }
    }

    /// Every call in one window of at most 89 days (`[from, till)`), into `out`; the window is
    /// asked for, and the rows read, in the account's zone `tz`.
    async fn calls_window(
        &self,
        from: Ts,
        till: Ts,
        tz: Tz,
        out: &mut BTreeMap<String, Call>,
    ) -> Result<()> {
        // The API takes whole seconds, both ends inclusive: the last second that starts
        // before `till`.
        let last = if till.timestamp_subsec_nanos() > 0 {
            till
        } else {
            till - chrono::Duration::seconds(1)
        };
        let till_s = to_local(last, tz).format(DT_FMT).to_string();
        let mut start = to_local(from, tz);
        let mut offset = 0u64;
        loop {
            let params = json!({
                "date_from": start.format(DT_FMT).to_string(),
                "date_till": till_s,
                "fields": CALL_FIELDS,
                "sort": [{"field": "start_time", "order": "asc"}],
                "limit": self.page,
                "offset": offset,
            });
            let result = self.rpc("get.calls_report", params).await?;
            let rows = result
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = result
                .pointer("/metadata/total_items")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let mut last_start: Option<NaiveDateTime> = None;
            for row in &rows {
                if let Some(s) = row.get("start_time").and_then(Value::as_str)
                    && let Ok(n) = NaiveDateTime::parse_from_str(s.trim(), DT_FMT)
                {
                    last_start = Some(last_start.map_or(n, |l: NaiveDateTime| l.max(n)));
                }
                match self.map_call_in(row, tz) {
                    Ok(c) => {
                        if c.started_at >= from && c.started_at < till {
                            // Window restarts re-read rows on purpose; the newest copy wins.
                            if out.contains_key(&c.id) {
                                tracing::debug!(system = SYSTEM, call_id = %c.id, "call row read twice; keeping the newest");
                            }
                            out.insert(c.id.clone(), c);
                        }
                    }
                    Err((id, why)) => {
                        tracing::warn!(system = SYSTEM, call_id = %id, reason = why, "skipping call row");
                    }
                }
            }
            let next = offset + self.page;
            if rows.is_empty() || next >= total {
                return Ok(());
            }
            if next > self.max_offset {
                // Restart the window at the last row seen; duplicates are dropped by id.
                match last_start {
                    Some(ls) if ls > start => {
                        start = ls;
                        offset = 0;
                    }
                    _ => {
                        return Err(self.err(
                            ErrorKind::Permanent,
                            "get.calls_report",
                            "more calls within one second than one window can page through",
                        ));
                    }
                }
            } else {
                offset = next;
            }
        }
    }
}

/// The account's wall clock at `ts`, in whole seconds (the API takes no fractions).
fn to_local(ts: Ts, tz: Tz) -> NaiveDateTime {
    let n = ts.with_timezone(&tz).naive_local();
    n.with_nanosecond(0).unwrap_or(n)
}

/// An API date-time (`YYYY-MM-DD hh:mm:ss`, the account's wall clock) as an instant. A time
/// that occurs twice (clocks put back) is taken as the earlier; one that never occurs (clocks
/// put forward) is refused.
fn parse_local(s: &str, tz: Tz) -> Option<Ts> {
    let n = NaiveDateTime::parse_from_str(s.trim(), DT_FMT).ok()?;
    tz.from_local_datetime(&n)
        .earliest()
        .and_then(bounds::in_range_utc)
}

#[async_trait]
impl Telephony for Comagic {
    fn kind(&self) -> TelephonyKind {
        TelephonyKind::Comagic
    }

    fn account(&self) -> String {
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "comagic".into())
    }

    /// Names the account and the zone its call times are read in, with the time now in that
    /// zone: the API reports no current time, so ops compare this with the account's own call
    /// list (a call made just now must show about this time there).
    async fn ping(&self) -> Result<String> {
        let acc = self.read_account().await?;
        let name = lenient::text(acc.get("name")).unwrap_or_else(|| "account".into());
        let app = lenient::id(acc.get("app_id")).unwrap_or_else(|| "?".into());
        let (tz, source) = if self.current_zone().source == ZoneSource::Config {
            (self.current_zone().tz, ZoneSource::Config)
        } else {
            self.set_account_zone(self.account_zone(&acc)?)
        };
        let now = to_local(chrono::Utc::now(), tz).format("%Y-%m-%d %H:%M");
        let mut out = format!(
            "CoMagic {name} (app_id {app}); call times in {tz} ({source}), now {now} there"
        );
        if source == ZoneSource::Config
            && let Ok(Some(acc_tz)) = self.account_zone(&acc)
            && acc_tz != tz
        {
            out.push_str(&format!("; the account itself says {acc_tz}"));
        }
        Ok(out)
    }

    async fn employees(&self) -> Result<Vec<Employee>> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let r = self
                .rpc(
                    "get.employees",
                    json!({"fields": ["id", "full_name", "extension"], "limit": PAGE, "offset": offset}),
                )
                .await?;
            let rows = r
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for row in &rows {
                let Some(id) = lenient::id(row.get("id")) else {
                    tracing::warn!(system = SYSTEM, "skipping employee without id");
                    continue;
                };
                let extension = match row.get("extension") {
                    Some(Value::Object(o)) => lenient::text(o.get("extension_phone_number")),
                    other => lenient::text(other),
                };
                out.push(Employee {
                    name: lenient::text(row.get("full_name")).unwrap_or_else(|| format!("#{id}")),
                    id,
                    extension,
                });
            }
            let total = r
                .pointer("/metadata/total_items")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            offset += PAGE;
            if rows.is_empty() || offset >= total || offset > MAX_OFFSET {
                return Ok(out);
            }
        }
    }

    async fn calls(&self, from: Ts, till: Ts) -> Result<Vec<Call>> {
        let mut out = BTreeMap::new();
        // One zone for the whole read, so its windows meet exactly.
        let (tz, _) = self.zone().await?;
        let mut start = from;
        while start < till {
            let end = (start + chrono::Duration::days(MAX_WINDOW_DAYS)).min(till);
            self.calls_window(start, end, tz, &mut out).await?;
            start = end;
        }
        let mut calls: Vec<Call> = out.into_values().collect();
        calls.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_minute_budget_pauses_until_reset() {
        let c = Comagic::new(
            &ComagicConfig {
                base_url: "http://127.0.0.1:1/v2.0".into(),
                access_token: Some(Secret::new("t")),
                access_token_file: None,
                timezone: None,
                employees: Default::default(),
            },
            chrono_tz::Europe::Moscow,
        );
        c.note_limits(&json!({"minute_remaining": 5, "minute_reset": 30}));
        assert!(c.pause_until.lock().unwrap().is_none());
        c.note_limits(&json!({"minute_remaining": 0, "minute_reset": 30}));
        let until = c.pause_until.lock().unwrap().expect("paused");
        let d = until - Instant::now();
        assert!(
            d > Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }

    #[test]
    fn rows_with_odd_fields_are_rejected_with_their_id() {
        let c = Comagic::new(
            &ComagicConfig {
                base_url: "https://dataapi.uiscom.ru/v2.0".into(),
                access_token: None,
                access_token_file: None,
                timezone: None,
                employees: Default::default(),
            },
            chrono_tz::Europe::Moscow,
        );
        let ok = json!({"id": 5, "start_time": "2026-01-01 03:00:00", "direction": "out",
                        "is_lost": "false", "talk_duration": "12", "contact_phone_number": 79991234567u64,
                        "employees": [{"employee_id": 1, "employee_full_name": "A", "is_answered": false, "is_talked": false},
                                      {"employee_id": 2, "employee_full_name": "B", "is_answered": true, "is_talked": true}],
                        "call_records": ["abc"], "communication_id": 77});
        let call = c.map_call(&ok).unwrap();
        assert_eq!(call.started_at.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(call.talk_s, 12);
        assert!(call.answered);
        assert_eq!(call.client_phone, "79991234567");
        assert_eq!(call.employee_id.as_deref(), Some("2"));
        assert_eq!(
            call.recording_url.as_deref(),
            Some("https://app.uiscom.ru/system/media/talk/77/abc/")
        );
        let bad = json!({"id": 6, "start_time": "2026-01-01", "direction": "in", "is_lost": false});
        assert_eq!(c.map_call(&bad).unwrap_err().0, "6");
    }
}

/// Entry points for the fuzz targets in `fuzz/`: the pure part of reading CoMagic answers.
#[doc(hidden)]
pub mod fuzzing {
    use serde_json::Value;

    use super::Comagic;
    use crate::config::ComagicConfig;
    use crate::domain::Call;

    /// A client that is never used for requests (building one is not free: reuse it).
    pub fn client() -> Comagic {
        Comagic::new(
            &ComagicConfig {
                base_url: "http://127.0.0.1:9".into(),
                access_token: None,
                access_token_file: None,
                timezone: None,
                employees: Default::default(),
            },
            chrono_tz::Europe::Moscow,
        )
    }

    /// Maps every row of a `get.calls_report` answer (JSON-RPC envelope or bare `result`, or a
    /// single row); returns the calls that mapped. Must never panic, whatever `bytes` hold.
    pub fn calls_report(c: &Comagic, bytes: &[u8]) -> Vec<Call> {
        let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
            return Vec::new();
        };
        let rows: Vec<Value> = match v
            .pointer("/result/data")
            .or_else(|| v.get("data"))
            .and_then(Value::as_array)
        {
            Some(rows) => rows.clone(),
            None => vec![v],
        };
        rows.iter().filter_map(|r| c.map_call(r).ok()).collect()
    }
}
