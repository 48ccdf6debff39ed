//! Sane ranges for numbers and dates that come from outside (APIs, webhooks, the database).
//!
//! Why: chrono panics when a `TimeDelta` or a `DateTime` sum leaves its range, and a single
//! pushed call lasting `1e16` seconds once turned into a panic on every restart. Every external
//! duration and date is checked here, at the edge where it is read, so that everything inside
//! dozor can add and subtract times without checking again. A value outside its range is refused
//! (the mapper names the system, the record and the field), never clamped into a plausible lie,
//! except token lifetimes, where a safe value exists (refresh early).

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::Ts;

/// The longest call dozor believes: a day. Telephony services cut calls far sooner.
pub(crate) const MAX_CALL_SECS: i64 = 86_400;

/// Token lifetimes are kept between a minute and 90 days (CRMs give an hour or a day).
pub(crate) const MIN_TTL_SECS: i64 = 60;
pub(crate) const MAX_TTL_SECS: i64 = 90 * 86_400;

/// The earliest date a CRM or telephony record may carry: 2000-01-01T00:00:00Z.
pub(crate) const MIN_TS_SECS: i64 = 946_684_800;
/// The latest: 2100-01-01T00:00:00Z (deadlines are set years ahead; centuries are junk).
pub(crate) const MAX_TS_SECS: i64 = 4_102_444_800;

/// A number of seconds a call lasted, from the shapes APIs use (integer, float, numeric
/// string). `None` for anything that is not a whole-ish number in `0..=MAX_CALL_SECS`
/// (negative, NaN, infinite, `1e16`, text).
pub(crate) fn call_seconds(v: &serde_json::Value) -> Option<i64> {
    let x = match v {
        serde_json::Value::Number(n) => n.as_i64().map(|i| i as f64).or_else(|| n.as_f64())?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    seconds_in_range(x, MAX_CALL_SECS)
}

/// A call duration field of an API row: absent or null is 0 s; `None` for anything but a
/// duration of 0 s to a day.
pub(crate) fn call_seconds_field(v: Option<&serde_json::Value>) -> Option<i64> {
    match v {
        None | Some(serde_json::Value::Null) => Some(0),
        Some(v) => call_seconds(v),
    }
}

/// `x` rounded to whole seconds when it is finite and within `0..=max`.
pub(crate) fn seconds_in_range(x: f64, max: i64) -> Option<i64> {
    (x.is_finite() && (0.0..=max as f64).contains(&x)).then(|| x.round() as i64)
}

/// A token lifetime (`expires_in`) clamped to `MIN_TTL_SECS..=MAX_TTL_SECS`; a missing or
/// nonsensical value gives `default`.
pub(crate) fn token_ttl(expires_in: Option<i64>, default: i64) -> TimeDelta {
    let secs = expires_in
        .unwrap_or(default)
        .clamp(MIN_TTL_SECS, MAX_TTL_SECS);
    TimeDelta::seconds(secs)
}

/// The date when it lies in `MIN_TS_SECS..MAX_TS_SECS`.
pub(crate) fn ts_in_range(t: Ts) -> Option<Ts> {
    (MIN_TS_SECS..MAX_TS_SECS)
        .contains(&t.timestamp())
        .then_some(t)
}

/// A Unix time in seconds as a date, when it lies in the sane range.
pub(crate) fn from_unix(secs: i64) -> Option<Ts> {
    if !(MIN_TS_SECS..MAX_TS_SECS).contains(&secs) {
        return None;
    }
    Utc.timestamp_opt(secs, 0).single()
}

/// Any date converted to UTC and checked (for parsers that produce an offset date).
pub(crate) fn in_range_utc<Z: TimeZone>(t: DateTime<Z>) -> Option<Ts> {
    ts_in_range(t.with_timezone(&Utc))
}

/// A finite amount of money; NaN and infinities (`"1e400"` parses to infinity) are refused.
pub(crate) fn money(x: f64) -> Option<f64> {
    (x.is_finite() && x.abs() < 1e15).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn call_seconds_accepts_real_durations_and_refuses_the_rest() {
        assert_eq!(call_seconds(&json!(35)), Some(35));
        assert_eq!(call_seconds(&json!("35")), Some(35));
        assert_eq!(call_seconds(&json!(35.4)), Some(35));
        assert_eq!(call_seconds(&json!(0)), Some(0));
        assert_eq!(call_seconds(&json!(86_400)), Some(86_400));
        for bad in [
            json!(86_401),
            json!(-1),
            json!("1e16"),
            json!(1e16),
            json!("NaN"),
            json!("inf"),
            json!("-0.5"),
            json!("двадцать"),
            json!(null),
            json!(true),
            json!([1]),
            json!(u64::MAX),
            json!(i64::MIN),
        ] {
            assert_eq!(call_seconds(&bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_outside_the_sane_range_are_refused() {
        assert!(from_unix(1_764_000_000).is_some());
        for bad in [0, -1, i64::MIN, i64::MAX, 253_402_300_799, MAX_TS_SECS] {
            assert!(from_unix(bad).is_none(), "{bad}");
        }
        let y9999 = Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap();
        assert!(ts_in_range(y9999).is_none());
    }

    #[test]
    fn token_lifetimes_are_clamped() {
        assert_eq!(token_ttl(Some(3600), 1), TimeDelta::seconds(3600));
        assert_eq!(token_ttl(None, 86_400), TimeDelta::seconds(86_400));
        assert_eq!(
            token_ttl(Some(i64::MAX), 1),
            TimeDelta::seconds(MAX_TTL_SECS)
        );
        assert_eq!(token_ttl(Some(-5), 1), TimeDelta::seconds(MIN_TTL_SECS));
    }

    #[test]
    fn money_must_be_finite() {
        assert_eq!(money(1500.5), Some(1500.5));
        assert_eq!(money(f64::NAN), None);
        assert_eq!(money(f64::INFINITY), None);
        assert_eq!(money("1e400".parse().unwrap()), None);
    }
}
