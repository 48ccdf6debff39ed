//! The process-wide metrics counters: low in the house, every layer may emit, none imports up.
//!
//! The request paths bump them as they run (requests by system, method and status, rate-limit
//! waits, Bitrix24 operating time, the re-auth flag). They are `prometheus-client` families in
//! one `static`: every connector reaches them without threading a handle through its
//! constructor. /metrics registers them with the gauges read at scrape time
//! (`service::server::metrics`) and encodes the lot as OpenMetrics text.
//!
//! Labels carry method names and paths with their ids replaced, never URLs, query strings or
//! anything that could hold a secret.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Systems whose OAuth tokens the store may hold.
pub(crate) const OAUTH_SYSTEMS: [&str; 2] = ["amocrm", "bitrix24"];

/// A series' labels, in the order they are written.
pub(crate) type Labels = Vec<(&'static str, String)>;
/// A counter of seconds.
pub(crate) type SecondsCounter = Counter<f64, AtomicU64>;
/// A gauge of a fractional value (seconds).
pub(crate) type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Default)]
struct Counters {
    /// (system, method, status) -> requests
    requests: Family<Labels, Counter>,
    /// system -> waits
    rate_limit_waits: Family<Labels, Counter>,
    /// system -> seconds waited
    rate_limit_wait_seconds: Family<Labels, SecondsCounter>,
    /// (tenant, method) -> Bitrix24 `time.operating` last reported
    operating: Family<Labels, FloatGauge>,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(Counters::default);

/// (tenant, system) -> re-authorisation required. A map, not a gauge family: the self-checks
/// read it back.
static REAUTH: Mutex<BTreeMap<(String, &'static str), bool>> = Mutex::new(BTreeMap::new());

fn reauth() -> std::sync::MutexGuard<'static, BTreeMap<(String, &'static str), bool>> {
    REAUTH.lock().unwrap_or_else(|e| e.into_inner())
}

/// A method label safe for metrics: the query string dropped, numeric and long opaque path
/// segments replaced by `{id}` (`PATCH /api/v4/leads/123` → `PATCH /api/v4/leads/{id}`), at
/// most 80 characters.
pub(crate) fn method_label(method: &str) -> String {
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
pub(crate) fn record_request(system: &'static str, method: &str, status: Option<u16>) {
    let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
    COUNTERS
        .requests
        .get_or_create(&vec![
            ("system", system.to_string()),
            ("method", method_label(method)),
            ("status", status),
        ])
        .inc();
}

/// Counts a request where it is sent: `client.get(url).send().await.observe(SYSTEM, method)`.
pub(crate) trait Observe {
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
pub(crate) fn record_rate_limit_wait(system: &'static str, waited: Duration) {
    let labels = vec![("system", system.to_string())];
    COUNTERS.rate_limit_waits.get_or_create(&labels).inc();
    COUNTERS
        .rate_limit_wait_seconds
        .get_or_create(&labels)
        .inc_by(waited.as_secs_f64());
}

/// The operating time Bitrix24 reported for `method` in its current window.
pub(crate) fn set_bitrix24_operating(tenant: &str, method: &str, seconds: f64) {
    COUNTERS
        .operating
        .get_or_create(&vec![
            ("tenant", tenant.to_string()),
            ("method", method_label(method)),
        ])
        .set(seconds);
}

/// Marks whether `system` of `tenant` needs a person to re-authorise the integration.
pub(crate) fn set_reauth_required(tenant: &str, system: &'static str, required: bool) {
    reauth().insert((tenant.to_string(), system), required);
}

/// Systems of `tenant` known to need re-authorisation now.
pub fn reauth_required(tenant: &str) -> Vec<&'static str> {
    reauth()
        .iter()
        .filter(|((t, _), v)| t == tenant && **v)
        .map(|((_, s), _)| *s)
        .collect()
}

/// Every (tenant, system) re-authorisation flag set so far.
pub(crate) fn reauth_flags() -> BTreeMap<(String, &'static str), bool> {
    reauth().clone()
}

/// Registers the in-process counters with `registry` (they stay shared: later counts show).
pub(crate) fn register(registry: &mut Registry) {
    let c = &*COUNTERS;
    registry.register(
        "dozor_http_requests",
        "Requests to remote systems by system, method and HTTP status (error: no answer)",
        c.requests.clone(),
    );
    registry.register(
        "dozor_rate_limit_waits",
        "Requests that had to wait for the rate limiter",
        c.rate_limit_waits.clone(),
    );
    registry.register(
        "dozor_rate_limit_wait_seconds",
        "Seconds spent waiting for the rate limiter",
        c.rate_limit_wait_seconds.clone(),
    );
    registry.register(
        "dozor_bitrix24_operating_seconds",
        "Bitrix24 time.operating of a method in its current 10-minute window",
        c.operating.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_names_in_the_openmetrics_text() {
        record_rate_limit_wait("test-system", Duration::from_millis(1500));
        record_request("test-system", "GET /x/123?page=2", Some(200));
        set_bitrix24_operating("test-tenant", "crm.deal.list", 1.5);
        let mut registry = Registry::default();
        register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for line in [
            "# TYPE dozor_rate_limit_waits counter",
            "dozor_rate_limit_waits_total{system=\"test-system\"} 1",
            "dozor_rate_limit_wait_seconds_total{system=\"test-system\"} 1.5",
            "dozor_http_requests_total{system=\"test-system\",method=\"GET /x/{id}\",status=\"200\"} 1",
            "dozor_bitrix24_operating_seconds{tenant=\"test-tenant\",method=\"crm.deal.list\"} 1.5",
        ] {
            assert!(out.contains(line), "{line}\n{out}");
        }
        assert!(out.ends_with("# EOF\n"), "{out}");
    }

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
