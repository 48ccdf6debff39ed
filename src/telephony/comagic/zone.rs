//! The zone of CoMagic's date-times: they carry no offset, they are the account's wall clock.
//! The zone comes from the config, else from `get.account` (re-read every [`ZONE_REFRESH`]),
//! else the tenant's.

use std::time::Duration;

use chrono::{NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::domain::{Ts, bounds};
use crate::http::ErrorKind;
use crate::telephony::Result;

use super::{Comagic, DT_FMT, SYSTEM};

/// How long the account's zone, once read, is trusted before `get.account` is asked again
/// (accounts change zone rarely; a daily read costs one point).
pub(crate) const ZONE_REFRESH: Duration = Duration::from_secs(24 * 3600);

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
pub(super) struct Zone {
    pub(super) tz: Tz,
    pub(super) source: ZoneSource,
    pub(super) read_at: Option<Instant>,
}

/// The account's wall clock at `ts`, in whole seconds (the API takes no fractions).
pub(super) fn to_local(ts: Ts, tz: Tz) -> NaiveDateTime {
    let n = ts.with_timezone(&tz).naive_local();
    n.with_nanosecond(0).unwrap_or(n)
}

/// An API date-time (`YYYY-MM-DD hh:mm:ss`, the account's wall clock) as an instant. A time
/// that occurs twice (clocks put back) is taken as the earlier; one that never occurs (clocks
/// put forward) is refused.
pub(super) fn parse_local(s: &str, tz: Tz) -> Option<Ts> {
    let n = NaiveDateTime::parse_from_str(s.trim(), DT_FMT).ok()?;
    tz.from_local_datetime(&n)
        .earliest()
        .and_then(bounds::in_range_utc)
}

impl Comagic {
    pub(super) fn current_zone(&self) -> Zone {
        *self.zone.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The zone the API's date-times are in, and where it comes from. Asks `get.account` when
    /// the config sets no zone and the account's was never read or was read more than
    /// `ZONE_REFRESH` ago. When that read fails, a zone read before is kept (with a warning);
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
    pub(super) fn set_account_zone(&self, read: Option<Tz>) -> (Tz, ZoneSource) {
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
    pub(super) async fn read_account(&self) -> Result<Value> {
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
    pub(super) fn account_zone(&self, acc: &Value) -> Result<Option<Tz>> {
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
}
