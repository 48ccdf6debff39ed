//! CoMagic JSON-RPC transport: one call with its retries, the points budget of
//! `metadata.limits` (a spent minute budget pauses the client until `minute_reset`), and the
//! API's error objects turned into errors that say what to do.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::http::{self, Error, ErrorKind, redact_url};
use crate::telemetry::Observe as _;
use crate::telephony::Result;

use super::{Comagic, SYSTEM};
use crate::telephony::retry::retry_wait;

impl Comagic {
    /// Waits while the minute budget is spent; an error once dozor is stopping, so a page
    /// loop ends before its next page.
    pub(super) async fn wait_budget(&self, method: &str) -> Result<()> {
        let until = *self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
        let t = until.unwrap_or_else(Instant::now);
        http::pause_until(t, &self.stop)
            .await
            .map_err(|s| s.error(SYSTEM, method, redact_url(&self.url)))
    }

    pub(super) fn note_limits(&self, limits: &Value) {
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
    pub(super) async fn rpc(&self, method: &str, mut params: Value) -> Result<Value> {
        params["access_token"] = json!(self.token.expose());
        let mut attempt = 0;
        loop {
            self.wait_budget(method).await?;
            match self.rpc_once(method, &params).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let Some(wait) = retry_wait(&e, attempt, self.max_wait) else {
                        return Err(e);
                    };
                    tracing::warn!(system = SYSTEM, method, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
                    http::pause(wait, &self.stop)
                        .await
                        .map_err(|s| s.error(SYSTEM, method, redact_url(&self.url)))?;
                    attempt += 1;
                }
            }
        }
    }

    pub(super) async fn rpc_once(&self, method: &str, params: &Value) -> Result<Value> {
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

    pub(super) fn rpc_error(&self, method: &str, status: u16, e: &Value) -> Error {
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
}
