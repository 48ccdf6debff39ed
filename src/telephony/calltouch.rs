//! Calltouch calls-diary client.
//!
//! Calls are read one account-local day per request in paged mode (`page` + `limit=1000`,
//! `dd/mm/yyyy` dates), looping until `pageTotal`. `timestamp` is preferred over the
//! `date` string; booleans may arrive as strings. `callUrl` is the web page the visitor was on,
//! not a recording, so calls carry no recording URL. Requests are paced at 5 per second and a
//! 429 waits for its `Retry-After`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use serde_json::Value;

use super::retry::retry_wait;
use super::{Result, Telephony, lenient};
use crate::config::{CalltouchConfig, Secret};
use crate::domain::{Call, Direction, Employee, TelephonyKind, Ts, Utm, bounds};
use crate::http::{self, Error, ErrorKind, Limiter, redact_url};
use crate::telemetry::Observe as _;
use tokio_util::sync::CancellationToken;

const SYSTEM: &str = "calltouch";
const PAGE_LIMIT: u32 = 1000;
const METHOD: &str = "GET calls-diary/calls";

/// One Calltouch cabinet (siteId) read with one clientApiId.
pub struct Calltouch {
    http: reqwest::Client,
    base: String,
    site_id: u64,
    token: Secret,
    tz: Tz,
    limiter: Limiter,
    managers: Mutex<BTreeSet<String>>,
    max_wait: Duration,
    /// Cancelled when dozor stops: no further page is asked for and every wait ends.
    stop: CancellationToken,
}

impl Calltouch {
    pub fn new(cfg: &CalltouchConfig, tz: Tz) -> Self {
        Calltouch {
            http: http::client(Duration::from_secs(60)),
            base: cfg.base_url.trim_end_matches('/').to_string(),
            site_id: cfg.site_id,
            token: cfg.client_api_id.clone().unwrap_or_default(),
            tz,
            limiter: Limiter::new(5, 1).for_system("calltouch"),
            managers: Mutex::new(BTreeSet::new()),
            max_wait: Duration::from_secs(60),
            stop: CancellationToken::new(),
        }
    }

    /// Ends every wait of this client, and the paging, once `stop` is cancelled.
    pub(crate) fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    fn url(&self, day: NaiveDate, page: u32, limit: u32) -> String {
        let d = day.format("%d/%m/%Y").to_string();
        let mut u = url::Url::parse(&format!(
            "{}/calls-service/RestAPI/{}/calls-diary/calls",
            self.base, self.site_id
        ))
        .expect("base_url is validated by config");
        u.query_pairs_mut()
            .append_pair("clientApiId", self.token.expose())
            .append_pair("dateFrom", &d)
            .append_pair("dateTo", &d)
            .append_pair("page", &page.to_string())
            .append_pair("limit", &limit.to_string());
        u.to_string()
    }

    fn err(&self, kind: ErrorKind, url: &str, message: impl Into<String>) -> Error {
        let msg: String = message.into();
        let token = self.token.expose();
        let msg = if token.is_empty() {
            msg
        } else {
            msg.replace(token, "***")
        };
        Error::new(kind, SYSTEM, METHOD, redact_url(url), msg)
    }

    async fn get_once(&self, url: &str) -> Result<Value> {
        self.limiter
            .acquire(&self.stop)
            .await
            .map_err(|s| s.error(SYSTEM, METHOD, redact_url(url)))?;
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .observe(SYSTEM, METHOD)
            .map_err(|e| Error::transport(SYSTEM, METHOD, redact_url(url), &e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        let bytes = crate::http::read_body(
            resp,
            crate::http::MAX_BODY,
            SYSTEM,
            METHOD,
            &redact_url(url),
        )
        .await?;
        if status != 200 {
            let body: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            let (kind, what) = match status {
                401 => (ErrorKind::Auth, "clientApiId refused"),
                403 => (ErrorKind::Auth, "no access to this siteId"),
                429 => (ErrorKind::RateLimited, "too many requests"),
                s if s >= 500 => (ErrorKind::Transient, "server error"),
                _ => (ErrorKind::Permanent, "request refused"),
            };
            let mut e = self
                .err(kind, url, format!("{what}: {}", body.trim()))
                .status(status);
            if kind == ErrorKind::RateLimited {
                e = e.retry_after(Duration::from_secs(retry_after.unwrap_or(1).max(1)));
            }
            return Err(e);
        }
        serde_json::from_slice(&bytes).map_err(|_| {
            self.err(ErrorKind::Decode, url, "response is not valid JSON")
                .status(status)
        })
    }

    async fn get(&self, url: &str) -> Result<Value> {
        let mut attempt = 0;
        loop {
            match self.get_once(url).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let Some(wait) = retry_wait(&e, attempt, self.max_wait) else {
                        return Err(e);
                    };
                    tracing::warn!(system = SYSTEM, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
                    http::pause(wait, &self.stop)
                        .await
                        .map_err(|s| s.error(SYSTEM, METHOD, redact_url(url)))?;
                    attempt += 1;
                }
            }
        }
    }

    /// Every record of one account-local day.
    async fn day(&self, day: NaiveDate) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut page = 1u32;
        loop {
            let url = self.url(day, page, PAGE_LIMIT);
            let v = self.get(&url).await?;
            let (records, page_total) = match v {
                Value::Array(a) => (a, 1),
                Value::Object(mut o) => {
                    let total = o.get("pageTotal").and_then(lenient::uint).unwrap_or(1);
                    let recs = match o.remove("records") {
                        Some(Value::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    (recs, total)
                }
                _ => {
                    return Err(self.err(ErrorKind::Decode, &url, "unexpected response shape"));
                }
            };
            let empty = records.is_empty();
            out.extend(records);
            if empty || u64::from(page) >= page_total {
                return Ok(out);
            }
            page += 1;
        }
    }

    fn parse_local(&self, s: &str) -> Option<Ts> {
        let s = s.trim();
        let n = NaiveDateTime::parse_from_str(s, "%d/%m/%Y %H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%d/%m/%Y %k:%M:%S"))
            .ok()?;
        self.tz
            .from_local_datetime(&n)
            .earliest()
            .and_then(bounds::in_range_utc)
    }

    /// Maps one calls-diary record; `Err((id, reason))` when it is unusable.
    fn map_call(&self, r: &Value) -> std::result::Result<Call, (String, &'static str)> {
        let id = match r.get("callId") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return Err(("?".into(), "missing callId")),
        };
        let bad = |why: &'static str| (id.clone(), why);
        let started_at = match lenient::int(r.get("timestamp")) {
            Some(ts) if ts > 0 => {
                // Seconds, or milliseconds on some exports.
                let secs = if ts > 100_000_000_000 { ts / 1000 } else { ts };
                bounds::from_unix(secs)
            }
            _ => None,
        }
        .or_else(|| {
            r.get("date")
                .and_then(Value::as_str)
                .and_then(|s| self.parse_local(s))
        })
        .ok_or_else(|| bad("timestamp/date missing, unparsable or outside 2000-2099"))?;
        // An empty `successful` is a call that did not succeed, not a broken row.
        let answered = match r.get("successful") {
            Some(Value::String(s)) if s.trim().is_empty() => false,
            v => lenient::flag(v).ok_or_else(|| bad("missing successful"))?,
        };
        let client_phone = match r.get("callerNumber") {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Null) | None => String::new(),
            // The call happened even if its number came in an odd shape: keep it without one.
            Some(other) => {
                tracing::warn!(system = SYSTEM, call_id = %id, value = %other, "odd callerNumber; call kept without a number");
                String::new()
            }
        };
        let manager = lenient::text(r.get("manager"));
        Ok(Call {
            id: id.clone(),
            provider: TelephonyKind::Calltouch,
            started_at,
            direction: Direction::In,
            answered,
            talk_s: bounds::call_seconds_field(r.get("duration"))
                .ok_or_else(|| bad("duration is not a duration of 0 s to 1 day"))?,
            wait_s: bounds::call_seconds_field(r.get("waitingConnect"))
                .ok_or_else(|| bad("waitingConnect is not a duration of 0 s to 1 day"))?,
            client_phone,
            virtual_number: lenient::text(r.get("phoneNumber")),
            employee_id: manager.clone(),
            employee_name: manager,
            recording_url: None,
            source: lenient::text(r.get("source")),
            utm: Utm {
                source: lenient::text(r.get("utmSource")),
                medium: lenient::text(r.get("utmMedium")),
                campaign: lenient::text(r.get("utmCampaign")),
                content: lenient::text(r.get("utmContent")),
                term: lenient::text(r.get("utmTerm")),
            },
        })
    }
}

#[async_trait]
impl Telephony for Calltouch {
    fn kind(&self) -> TelephonyKind {
        TelephonyKind::Calltouch
    }

    fn account(&self) -> String {
        format!("calltouch site {}", self.site_id)
    }

    async fn ping(&self) -> Result<String> {
        let today = chrono::Utc::now().with_timezone(&self.tz).date_naive();
        let url = self.url(today, 1, 1);
        let v = self.get(&url).await?;
        let n = match &v {
            Value::Object(o) => o.get("recordsTotal").and_then(lenient::uint).unwrap_or(0),
            Value::Array(a) => a.len() as u64,
            _ => 0,
        };
        Ok(format!("Calltouch site {}: {n} calls today", self.site_id))
    }

    async fn employees(&self) -> Result<Vec<Employee>> {
        let seen = self
            .managers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if seen {
            // Nothing read yet: learn the names from the last week of calls.
            let now = chrono::Utc::now();
            self.calls(now - chrono::Duration::days(7), now).await?;
        }
        let names = self
            .managers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(names
            .into_iter()
            .map(|n| Employee {
                id: n.clone(),
                name: n,
                extension: None,
            })
            .collect())
    }

    async fn calls(&self, from: Ts, till: Ts) -> Result<Vec<Call>> {
        if till <= from {
            return Ok(Vec::new());
        }
        let first = from.with_timezone(&self.tz).date_naive();
        let last = (till - chrono::Duration::nanoseconds(1))
            .with_timezone(&self.tz)
            .date_naive();
        let mut out: BTreeMap<String, Call> = BTreeMap::new();
        let mut day = first;
        while day <= last {
            for r in self.day(day).await? {
                match self.map_call(&r) {
                    Ok(c) => {
                        if c.started_at >= from && c.started_at < till {
                            if out.contains_key(&c.id) {
                                tracing::warn!(system = SYSTEM, call_id = %c.id, "duplicated callId; keeping the first record");
                                continue;
                            }
                            out.insert(c.id.clone(), c);
                        }
                    }
                    Err((id, why)) => {
                        tracing::warn!(system = SYSTEM, call_id = %id, reason = why, "skipping call record");
                    }
                }
            }
            day = day.succ_opt().expect("date in range");
        }
        {
            let mut m = self.managers.lock().unwrap_or_else(|e| e.into_inner());
            m.extend(out.values().filter_map(|c| c.employee_name.clone()));
        }
        let mut calls: Vec<Call> = out.into_values().collect();
        calls.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(calls)
    }
}

/// Entry points for the fuzz targets in `fuzz/`: the pure part of reading Calltouch answers.
#[doc(hidden)]
pub mod fuzzing {
    use serde_json::Value;

    use super::Calltouch;
    use crate::config::CalltouchConfig;
    use crate::domain::Call;

    /// A client that is never used for requests (building one is not free: reuse it).
    pub fn client() -> Calltouch {
        Calltouch::new(
            &CalltouchConfig {
                base_url: "http://127.0.0.1:9".into(),
                site_id: 1,
                client_api_id: None,
                client_api_id_file: None,
                employees: Default::default(),
            },
            chrono_tz::Europe::Moscow,
        )
    }

    /// Maps every record of a calls-diary answer (`{records: [...]}`, a bare array, or one
    /// record); returns the calls that mapped. Must never panic, whatever `bytes` hold.
    pub fn calls_diary(c: &Calltouch, bytes: &[u8]) -> Vec<Call> {
        let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
            return Vec::new();
        };
        let records: Vec<Value> = match v {
            Value::Array(a) => a,
            Value::Object(ref o) => match o.get("records") {
                Some(Value::Array(a)) => a.clone(),
                _ => vec![v],
            },
            other => vec![other],
        };
        records.iter().filter_map(|r| c.map_call(r).ok()).collect()
    }
}
