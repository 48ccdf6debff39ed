//! The process-wide metrics counters: low in the house, every layer may emit, none imports up.
//!
//! The request paths bump them as they run (requests by system, method and status, rate-limit
//! waits, Bitrix24 operating time, the re-auth flag). They live in one `static` behind a mutex:
//! every connector reaches them without threading a handle through its constructor, and a lock
//! held for a map update costs nothing next to an HTTP request. The gauges read from the store
//! at scrape time live with the server (`service::server::metrics`).
//!
//! Labels carry method names and paths with their ids replaced, never URLs, query strings or
//! anything that could hold a secret.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Systems whose OAuth tokens the store may hold.
pub const OAUTH_SYSTEMS: [&str; 2] = ["amocrm", "bitrix24"];

struct Inner {
    /// (system, method, status) -> requests
    requests: BTreeMap<(&'static str, String, String), u64>,
    /// system -> (waits, seconds waited)
    rate_limit_waits: BTreeMap<&'static str, (u64, f64)>,
    /// (tenant, method) -> Bitrix24 `time.operating` last reported
    operating: BTreeMap<(String, String), f64>,
    /// (tenant, system) -> re-authorisation required
    reauth: BTreeMap<(String, &'static str), bool>,
}

static REGISTRY: Mutex<Inner> = Mutex::new(Inner {
    requests: BTreeMap::new(),
    rate_limit_waits: BTreeMap::new(),
    operating: BTreeMap::new(),
    reauth: BTreeMap::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Inner> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A method label safe for metrics: the query string dropped, numeric and long opaque path
/// segments replaced by `{id}` (`PATCH /api/v4/leads/123` → `PATCH /api/v4/leads/{id}`), at
/// most 80 characters.
pub fn method_label(method: &str) -> String {
    let method = method.split(['?', '#']).next().unwrap_or("");
    let mut out = String::with_capacity(method.len());
    for (i, part) in method.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let opaque = !part.is_empty()
            && (part.chars().all(|c| c.is_ascii_digit())
                || (part.len() > 24 && !part.contains(' ')));
        out.push_str(if opaque { "{id}" } else { part });
    }
    out.truncate(80);
    out
}

/// Counts one HTTP request: `status` is the HTTP status, or `error` when no answer came.
pub fn record_request(system: &'static str, method: &str, status: Option<u16>) {
    let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
    *registry()
        .requests
        .entry((system, method_label(method), status))
        .or_default() += 1;
}

/// Counts a request where it is sent: `client.get(url).send().await.observe(SYSTEM, method)`.
pub trait Observe {
    fn observe(self, system: &'static str, method: &str) -> Self;
}

impl Observe for reqwest::Result<reqwest::Response> {
    fn observe(self, system: &'static str, method: &str) -> Self {
        record_request(
            system,
            method,
            self.as_ref().ok().map(|r| r.status().as_u16()),
        );
        self
    }
}

/// Counts one wait for a rate limiter (or a server's Retry-After) and how long it took.
pub fn record_rate_limit_wait(system: &'static str, waited: Duration) {
    let mut r = registry();
    let e = r.rate_limit_waits.entry(system).or_default();
    e.0 += 1;
    e.1 += waited.as_secs_f64();
}

/// The operating time Bitrix24 reported for `method` in its current window.
pub fn set_bitrix24_operating(tenant: &str, method: &str, seconds: f64) {
    registry()
        .operating
        .insert((tenant.to_string(), method_label(method)), seconds);
}

/// Marks whether `system` of `tenant` needs a person to re-authorise the integration.
pub fn set_reauth_required(tenant: &str, system: &'static str, required: bool) {
    registry()
        .reauth
        .insert((tenant.to_string(), system), required);
}

/// Systems of `tenant` known to need re-authorisation now.
pub fn reauth_required(tenant: &str) -> Vec<&'static str> {
    registry()
        .reauth
        .iter()
        .filter(|((t, _), v)| t == tenant && **v)
        .map(|((_, s), _)| *s)
        .collect()
}

/// Every (tenant, system) re-authorisation flag set so far.
pub fn reauth_flags() -> BTreeMap<(String, &'static str), bool> {
    registry().reauth.clone()
}

pub(crate) fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends the in-process counters.
pub fn render_process(out: &mut String) {
    let r = registry();
    header(
        out,
        "dozor_http_requests_total",
        "counter",
        "Requests to remote systems by system, method and HTTP status (error: no answer).",
    );
    for ((system, method, status), n) in &r.requests {
        let _ = writeln!(
            out,
            "dozor_http_requests_total{{system=\"{system}\",method=\"{}\",status=\"{status}\"}} {n}",
            label(method)
        );
    }
    header(
        out,
        "dozor_rate_limit_waits_total",
        "counter",
        "Requests that had to wait for the rate limiter.",
    );
    for (system, (n, _)) in &r.rate_limit_waits {
        let _ = writeln!(
            out,
            "dozor_rate_limit_waits_total{{system=\"{system}\"}} {n}"
        );
    }
    header(
        out,
        "dozor_rate_limit_wait_seconds_total",
        "counter",
        "Seconds spent waiting for the rate limiter.",
    );
    for (system, (_, secs)) in &r.rate_limit_waits {
        let _ = writeln!(
            out,
            "dozor_rate_limit_wait_seconds_total{{system=\"{system}\"}} {secs:.3}"
        );
    }
    header(
        out,
        "dozor_bitrix24_operating_seconds",
        "gauge",
        "Bitrix24 time.operating of a method in its current 10-minute window.",
    );
    for ((tenant, method), secs) in &r.operating {
        let _ = writeln!(
            out,
            "dozor_bitrix24_operating_seconds{{tenant=\"{}\",method=\"{}\"}} {secs:.3}",
            label(tenant),
            label(method)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_hide_ids_and_queries() {
        assert_eq!(
            method_label("PATCH /api/v4/leads/123"),
            "PATCH /api/v4/leads/{id}"
        );
        assert_eq!(
            method_label("GET /api/v4/leads?page=2"),
            "GET /api/v4/leads"
        );
        assert_eq!(method_label("crm.deal.list"), "crm.deal.list");
        assert_eq!(
            method_label("POST /bot123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAA/sendMessage"),
            "POST /{id}/sendMessage"
        );
    }
}
