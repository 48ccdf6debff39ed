//! amoCRM transport: one request through the account's limiter, with the waits the fact sheet
//! asks for (429, the 403 anti-abuse lock-out, 5xx), the token refresh on a 401, and the
//! answer's problem details turned into an error that names method and URL.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::crm::Result;
use crate::http::{Error, ErrorKind, MAX_BODY, backoff, read_body, redact_url};
use crate::telemetry::Observe as _;

use super::{AmoCrm, MAX_ATTEMPTS, SYSTEM};

/// How often a 403 (anti-abuse lock-out) is waited out before giving up.
pub(super) const MAX_LOCKOUT_WAITS: u32 = 3;

/// Turns a non-2xx answer into an error; problem+json gives code and detail, other bodies
/// (the plain-text 429, HTML 502) only the status.
pub(super) fn problem_error(c: &AmoCrm, status: u16, label: &str, url: &str, body: &[u8]) -> Error {
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

impl AmoCrm {
    /// Waits out a pause set by a 429 or lock-out, then for the rate limiter.
    pub(super) async fn wait_turn(&self, label: &str, url: &str) -> Result<()> {
        let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        let stopped = |s: crate::http::Stopped| s.error(SYSTEM, label, redact_url(url));
        if let Some(t) = until {
            crate::http::pause_until(t, &self.stop)
                .await
                .map_err(stopped)?;
        }
        self.limiter.acquire(&self.stop).await.map_err(stopped)
    }

    pub(super) fn pause(&self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none_or(|x| x < until) {
            *p = Some(until);
        }
    }

    /// One API call with limits, retries and token handling. `Ok(None)` is a 204.
    // Long: one retry loop whose arms are the fact sheet's answers (429, 403 lock-out, 401 refresh,
    // 5xx, 204); the counters the arms share live in the loop.
    pub(super) async fn call(
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

    pub(super) async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Option<Value>> {
        self.call(Method::GET, path, query, None).await
    }

    /// What an item of a list page mapped to. An item that cannot be read (a date in year
    /// 9999, a field of the wrong shape) is refused alone (`None`), with a warning naming it: one poisoned record must not stop the
    /// sync of every other. Without an id it cannot be named or skipped, so the page fails.
    pub(super) fn readable<T>(
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

    pub(super) fn decode_err(&self, path: &str, msg: String) -> Error {
        self.err(
            ErrorKind::Decode,
            &format!("GET {path}"),
            &format!("{}{path}", self.base),
            format!("unexpected record shape {msg}"),
        )
    }
}
