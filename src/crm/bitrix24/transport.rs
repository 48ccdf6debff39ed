//! Bitrix24 transport: one request with its retries, the per-method operating-time budget,
//! error classification, the portal's moved address, and single-record calls coalesced into
//! one `batch`.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::crm::Result;
use crate::http::{self, Error, ErrorKind, redact_url};
use crate::telemetry::Observe as _;

use super::auth::Auth;
use super::retry::retry_wait;
use super::{Bitrix24, SYSTEM, as_map, host_of, moved, reset_ts, text};

/// Longest wait for an operating-time reset.
pub(super) const MAX_OPERATING_WAIT: Duration = Duration::from_secs(600);

/// A single-record call waiting for the next `batch`.
pub(super) struct Queued {
    method: String,
    params: Value,
    reply: tokio::sync::oneshot::Sender<Result<Value>>,
}

/// How long the first queued call waits for others to join its batch.
pub(super) const COALESCE_WINDOW: std::time::Duration = std::time::Duration::from_millis(15);

/// Single-record reads and writes that may travel inside a `batch` (list calls page
/// themselves, and telephony.* registration needs the application context of a direct call).
pub(super) fn coalescible(method: &str) -> bool {
    !method.starts_with("telephony.")
        && [".add", ".update", ".get", ".complete"]
            .iter()
            .any(|s| method.ends_with(s))
}

impl Bitrix24 {
    /// Waits while `method` is at its operating-time budget.
    pub(super) async fn respect_budget(&self, method: &str) -> Result<()> {
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

    pub(super) fn note_time(&self, method: &str, time: Option<&Value>) {
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

    pub(super) fn operating_wait(&self, method: &str) -> Duration {
        let ops = self.operating.lock().unwrap_or_else(|e| e.into_inner());
        let secs = ops
            .get(method)
            .map(|(_, r)| r - Utc::now().timestamp())
            .filter(|s| *s > 0)
            .unwrap_or(60);
        Duration::from_secs(secs as u64).min(MAX_OPERATING_WAIT)
    }

    /// Turns an `{"error": ...}` answer into a typed error.
    pub(super) fn classify(
        &self,
        method: &str,
        url: &str,
        status: Option<u16>,
        body: &Value,
    ) -> Error {
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
    pub(super) fn current(&self, url: &str) -> String {
        match &*self.moved.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(to) => moved::rebase(url, to),
            None => url.to_string(),
        }
    }

    /// After a redirect from `from` to `to`: when the origin changed, use the new one from now
    /// on and store it, saying so once.
    pub(super) async fn remember_move(&self, from: &str, to: &str) {
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
    pub(super) async fn send_once(
        &self,
        method: &str,
        url: &str,
        shown: &str,
        body: &Value,
    ) -> Result<Value> {
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
    pub(super) async fn call(&self, method: &str, params: &Value) -> Result<Value> {
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
    pub(super) async fn flush(&self, mut chunk: Vec<Queued>) {
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
    pub(super) fn command_error(&self, method: &str, e: &Value) -> Error {
        let url = self.shown_url(method);
        self.classify(method, &url, None, e)
    }

    /// Calls a REST method and returns the whole envelope (`result`, `total`, `next`, `time`).
    pub(super) async fn call_direct(&self, method: &str, params: &Value) -> Result<Value> {
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

    /// `batch` with ordered commands; returns (result, result_error) maps.
    pub(super) async fn batch(
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
}
