//! CoMagic Data API v2.0 client (JSON-RPC).
//!
//! `calls()` reads `get.calls_report` in windows of at most 89 days (3 months), pages with `limit=10000`,
//! and when the offset would pass the API's 100 000 cap it restarts the window at the start time
//! of the last row it got. The API's date-times (`start_time`, `date_from`, `date_till`) carry no
//! offset: they are the account's wall clock. The account's zone is read from `get.account`
//! (once, then again every `ZONE_REFRESH`), unless the config names one; the tenant's zone is
//! the last resort, used only while the account has not said (or says nothing). The points budget in `metadata.limits` is respected: when
//! `minute_remaining` reaches 0 the client pauses until `minute_reset`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_trait::async_trait;
use chrono_tz::Tz;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod map;
mod paging;
mod rpc;
mod zone;

use paging::{MAX_OFFSET, MAX_WINDOW_DAYS, PAGE};
pub(crate) use zone::ZONE_REFRESH;
pub use zone::ZoneSource;
use zone::{Zone, to_local};

use super::{Result, Telephony, lenient};
use crate::config::{ComagicConfig, Secret};
use crate::domain::{Call, Employee, TelephonyKind, Ts};
use crate::http::{self, Error, ErrorKind, redact_url};

const SYSTEM: &str = "comagic";
const DT_FMT: &str = "%Y-%m-%d %H:%M:%S";

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
        let zone = match cfg.timezone {
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
    pub(crate) fn with_stop(mut self, stop: CancellationToken) -> Self {
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
mod tests;

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
