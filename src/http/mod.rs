//! What every remote client shares: one error type that names the system, method and URL (never
//! a secret), a rate limiter per remote account, retry backoff, and the reqwest client settings.

pub mod php_query;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

/// What went wrong, in the terms a caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Credentials refused (bad webhook secret, revoked or expired token). Fix config or re-auth.
    Auth,
    /// The remote asks us to slow down; retry after the hinted delay.
    RateLimited,
    /// A temporary failure (5xx, timeout, connection reset); retry with backoff.
    Transient,
    /// The request itself is wrong or refused (4xx, method-level error); retrying won't help.
    Permanent,
    /// The answer could not be understood (malformed JSON, unexpected shape).
    Decode,
}

/// An error talking to a remote system, safe to log: the URL has its secrets stripped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{system} {method} {url}: {message}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct Error {
    pub kind: ErrorKind,
    /// `bitrix24`, `amocrm`, `comagic`, `calltouch`, `telegram`.
    pub(crate) system: &'static str,
    /// API method or path (`crm.deal.list`, `GET /api/v4/leads`).
    pub method: String,
    /// Request URL with every secret replaced by `***`.
    pub(crate) url: String,
    pub status: Option<u16>,
    /// The remote's own error code (`QUERY_LIMIT_EXCEEDED`, `invalid_grant`, `-32001`...).
    pub code: Option<String>,
    pub message: String,
    /// Server-suggested wait before retrying.
    pub retry_after: Option<Duration>,
}

/// The error code of a request refused before it was sent (see [`Error::not_sent`]).
pub(crate) const NOT_SENT: &str = "not_sent";

impl Error {
    pub(crate) fn new(
        kind: ErrorKind,
        system: &'static str,
        method: impl Into<String>,
        url: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error {
            kind,
            system,
            method: method.into(),
            url: url.into(),
            status: None,
            code: None,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub(crate) fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub(crate) fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    /// The request was never sent (a client refused it locally, e.g. while the service is
    /// known to be down): a retry may follow, and this did not count as an attempt.
    pub(crate) fn not_sent(&self) -> bool {
        self.code.as_deref() == Some(NOT_SENT)
    }

    /// Worth retrying automatically.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::RateLimited | ErrorKind::Transient)
    }

    /// Maps a reqwest transport error (connect, timeout, body) into a transient error.
    pub(crate) fn transport(
        system: &'static str,
        method: impl Into<String>,
        url: impl Into<String>,
        e: &reqwest::Error,
    ) -> Self {
        // reqwest's Display includes the URL; print only the cause chain without it.
        let kind = if e.is_decode() {
            ErrorKind::Decode
        } else {
            ErrorKind::Transient
        };
        let msg = e.without_url_ref();
        Error::new(kind, system, method, url, format!("transport error: {msg}"))
    }
}

/// Largest answer body read from a remote API. The biggest real answers (a Bitrix24 batch of 50
/// pages of 50 records, an amoCRM page of 250 leads with contacts) are a few MiB; a body beyond
/// this is a broken proxy or a runaway endpoint, and holding it whole could take the daemon's
/// memory with it.
pub(crate) const MAX_BODY: usize = 32 << 20;

/// Reads the body of `resp`, refusing it as soon as it is known to exceed `limit` bytes (from
/// Content-Length, or while streaming when the length is not announced). The refusal is a
/// `Decode` error naming the size, the method and the (redacted) URL; nothing past the limit is
/// buffered.
pub(crate) async fn read_body(
    mut resp: reqwest::Response,
    limit: usize,
    system: &'static str,
    method: &str,
    url: &str,
) -> Result<Vec<u8>, Error> {
    let status = resp.status().as_u16();
    let too_big = |seen: String| {
        Error::new(
            ErrorKind::Decode,
            system,
            method,
            url,
            format!(
                "answer of {seen} refused: larger than the {} MiB limit",
                limit >> 20
            ),
        )
        .status(status)
    };
    if let Some(n) = resp.content_length()
        && n > limit as u64
    {
        return Err(too_big(format!("{n} bytes")));
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::transport(system, method, url, &e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_big(format!("over {} bytes", body.len() + chunk.len())));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Lets reqwest errors be printed without their URL (which may hold a secret).
trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut msg = String::new();
        let mut cur: Option<&dyn std::error::Error> = Some(self);
        let mut first = true;
        while let Some(e) = cur {
            let text = e.to_string();
            // The top-level reqwest message is "error sending request for url (...)"; skip it.
            if !(first && text.contains("for url")) {
                if !msg.is_empty() {
                    msg.push_str(": ");
                }
                msg.push_str(&text);
            }
            first = false;
            cur = e.source();
        }
        if msg.is_empty() {
            "request failed".into()
        } else {
            msg
        }
    }
}

/// Replaces the secrets in `url` with `***`: the secret path segment of a Bitrix24 webhook
/// (`/rest/1/SECRET/`), a Telegram bot token (`/botTOKEN/`) and any query parameter whose name
/// suggests a credential.
pub(crate) fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "<unparsable url>".into();
    };
    let segments: Vec<String> = u
        .path_segments()
        .map(|s| s.map(str::to_string).collect())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(segments.len());
    let mut i = 0;
    while i < segments.len() {
        let s = &segments[i];
        if s == "rest"
            && i + 2 < segments.len()
            && segments[i + 1].chars().all(|c| c.is_ascii_digit())
            && !segments[i + 1].is_empty()
        {
            out.push(s.clone());
            out.push(segments[i + 1].clone());
            out.push("***".into());
            i += 3;
            continue;
        }
        if s.starts_with("bot") && s.contains(':') {
            out.push("bot***".into());
        } else {
            out.push(s.clone());
        }
        i += 1;
    }
    u.set_path(&out.join("/"));
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let lk = k.to_lowercase();
            let secret = [
                "token",
                "secret",
                "auth",
                "key",
                "password",
                "clientapiid",
                "code",
            ]
            .iter()
            .any(|w| lk.contains(w));
            (
                k.into_owned(),
                if secret { "***".into() } else { v.into_owned() },
            )
        })
        .collect();
    if pairs.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string().replace("%2A%2A%2A", "***")
}

/// A token-bucket limiter for one remote account (governor, direct, not keyed).
#[derive(Clone)]
pub(crate) struct Limiter {
    inner: Arc<RateLimiter<NotKeyed, InMemoryState, DefaultClock>>,
    /// The system named in the rate-limit wait metrics.
    system: &'static str,
}

impl Limiter {
    /// `per_second` sustained with bursts of `burst`.
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).expect("non-zero");
        let burst = NonZeroU32::new(burst.max(1)).expect("non-zero");
        Limiter {
            inner: Arc::new(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            )),
            system: "other",
        }
    }

    /// One request every `period`, with bursts of `burst`. For a server that counts requests
    /// in a sliding one-second window, a period a little longer than 1/limit keeps network
    /// jitter from landing one request too many in a window (each such 429 costs a pause).
    pub(crate) fn with_period(period: Duration, burst: u32) -> Self {
        let burst = NonZeroU32::new(burst.max(1)).expect("non-zero");
        let quota = Quota::with_period(period.max(Duration::from_millis(1)))
            .expect("non-zero period")
            .allow_burst(burst);
        Limiter {
            inner: Arc::new(RateLimiter::direct(quota)),
            system: "other",
        }
    }

    /// Names the system this limiter guards in the metrics (`dozor_rate_limit_waits_total`).
    pub(crate) fn for_system(mut self, system: &'static str) -> Self {
        self.system = system;
        self
    }

    /// Waits until one more request is allowed, or until `stop` is cancelled (then nothing may
    /// be sent). A wait is counted in the metrics.
    pub(crate) async fn acquire(&self, stop: &CancellationToken) -> Result<(), Stopped> {
        if stop.is_cancelled() {
            return Err(Stopped);
        }
        if self.inner.check().is_ok() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        tokio::select! {
            _ = self.inner.until_ready() => {}
            _ = stop.cancelled() => return Err(Stopped),
        }
        crate::telemetry::record_rate_limit_wait(self.system, started.elapsed());
        Ok(())
    }
}

/// A wait was cut short because dozor is stopping: the request it preceded was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped;

impl Stopped {
    /// The error the caller returns instead of sending. `Transient`, so an action whose write
    /// was not sent stays at `intent` and the next start sends it. `url` must be redacted.
    pub(crate) fn error(
        self,
        system: &'static str,
        method: impl Into<String>,
        url: impl Into<String>,
    ) -> Error {
        Error::new(
            ErrorKind::Transient,
            system,
            method,
            url,
            "not sent: dozor is stopping",
        )
        // Not the action's fault: it must not use up an attempt of its retry budget.
        .code(NOT_SENT)
    }
}

/// Sleeps `d` (a rate-limit pause, a retry backoff, a Retry-After), or less when `stop` is
/// cancelled first: a stopping daemon must not sit out a 30 s backoff. Every client waits
/// through this (or [`pause_until`]) rather than `tokio::time::sleep`.
pub(crate) async fn pause(d: Duration, stop: &CancellationToken) -> Result<(), Stopped> {
    pause_until(tokio::time::Instant::now() + d, stop).await
}

/// [`pause`] until the instant `t`.
pub(crate) async fn pause_until(
    t: tokio::time::Instant,
    stop: &CancellationToken,
) -> Result<(), Stopped> {
    if stop.is_cancelled() {
        return Err(Stopped);
    }
    tokio::select! {
        _ = tokio::time::sleep_until(t) => Ok(()),
        _ = stop.cancelled() => Err(Stopped),
    }
}

/// Exponential backoff with a cap: 0.5 s, 1 s, 2 s, ... up to 30 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.min(6));
    Duration::from_millis(ms.min(30_000))
}

/// How a connector waits out rate-limit refusals (Bitrix24 `QUERY_LIMIT_EXCEEDED` and
/// `OPERATION_TIME_LIMIT`, amoCRM 429).
///
/// A refusal says "slow down", not "this request is wrong": a storm of them is waited out
/// instead of failing the sync after a fixed number of attempts. The wait doubles from `first`
/// up to `cap`, so a service that keeps refusing sees fewer and fewer requests, and a server
/// hint (Retry-After, `operating_reset_at`) is honoured when it is longer. One request gives up
/// once it has waited `budget` in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub first: Duration,
    pub cap: Duration,
    pub budget: Duration,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            budget: Duration::from_secs(15 * 60),
        }
    }
}

impl Throttle {
    /// The refusal count of a new request.
    pub(crate) fn start(&self) -> Refusals {
        Refusals {
            policy: *self,
            count: 0,
            waited: Duration::ZERO,
        }
    }
}

/// The rate-limit refusals one request has met so far (see [`Throttle`]).
#[derive(Debug, Clone)]
pub(crate) struct Refusals {
    policy: Throttle,
    count: u32,
    waited: Duration,
}

impl Refusals {
    /// The wait before the next attempt, or `None` once the budget would be exceeded.
    pub(crate) fn next(&mut self, hint: Option<Duration>) -> Option<Duration> {
        let own = self
            .policy
            .first
            .saturating_mul(1u32 << self.count.min(16))
            .min(self.policy.cap);
        let wait = hint.map_or(own, |h| h.max(own));
        if self.waited + wait > self.policy.budget {
            return None;
        }
        self.count += 1;
        self.waited += wait;
        Some(wait)
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }
}

/// The reqwest client every connector uses: rustls, a User-Agent, timeouts, and no automatic
/// redirects (a Bitrix24 portal rename answers 302 and a followed POST would lose its body).
pub(crate) fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("dozor/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client with static settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_doubles_to_its_cap_honours_hints_and_gives_up() {
        let t = Throttle {
            first: Duration::from_millis(100),
            cap: Duration::from_millis(400),
            budget: Duration::from_millis(1500),
        };
        let mut r = t.start();
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        assert_eq!(ms(r.next(None)), Some(100));
        assert_eq!(ms(r.next(None)), Some(200));
        assert_eq!(ms(r.next(None)), Some(400));
        assert_eq!(ms(r.next(Some(Duration::from_millis(500)))), Some(500));
        assert_eq!(
            ms(r.next(None)),
            None,
            "1.2 s waited, 0.4 s more exceeds the budget"
        );
        assert_eq!(r.count(), 4);
    }

    #[tokio::test]
    async fn a_stop_ends_rate_limit_and_backoff_waits_at_once() {
        let stop = CancellationToken::new();
        let limiter = Limiter::with_period(Duration::from_secs(60), 1);
        assert_eq!(limiter.acquire(&stop).await, Ok(()), "the burst");
        let t = std::time::Instant::now();
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.cancel();
        };
        let (waited, ()) = tokio::join!(limiter.acquire(&stop), cancel);
        assert_eq!(waited, Err(Stopped), "next slot is a minute away");
        assert_eq!(
            pause(Duration::from_secs(30), &stop).await,
            Err(Stopped),
            "already stopped: no wait at all"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let fresh = CancellationToken::new();
        assert_eq!(pause(Duration::from_millis(10), &fresh).await, Ok(()));
    }

    #[test]
    fn webhook_secret_is_stripped() {
        let u = redact_url("https://x.bitrix24.ru/rest/1/abc123secret/crm.deal.list.json?start=0");
        assert_eq!(
            u,
            "https://x.bitrix24.ru/rest/1/***/crm.deal.list.json?start=0"
        );
    }

    #[test]
    fn bot_token_and_query_secrets_are_stripped() {
        let u = redact_url("http://127.0.0.1:5/telegram/bot123:ABC/sendMessage");
        assert!(!u.contains("ABC"), "{u}");
        let u = redact_url("https://api.calltouch.ru/x?clientApiId=SECRET&dateFrom=01/01/2024");
        assert!(!u.contains("SECRET"), "{u}");
        assert!(u.contains("dateFrom"), "{u}");
    }

    #[test]
    fn a_password_in_the_url_is_stripped() {
        let u = redact_url("https://ops:hunter2@proxy.example.ru/rest/7/abc/");
        assert_eq!(u, "https://ops:***@proxy.example.ru/rest/7/***/");
    }
}
