//! CoMagic call reads: windows of at most [`MAX_WINDOW_DAYS`], pages of [`PAGE`] rows, and a
//! restart of the window at the last row's time when the offset would pass the API's cap; and
//! the look-up of one notified call.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use chrono_tz::Tz;
use serde_json::{Value, json};

use crate::domain::{Call, Ts};
use crate::http::ErrorKind;
use crate::telephony::{Result, lenient};

use super::map::CALL_FIELDS;
use super::zone::to_local;
use super::{Comagic, DT_FMT, SYSTEM};

/// Rows per page (the API maximum).
pub(super) const PAGE: u64 = 10_000;

/// The API refuses offsets above this.
pub(super) const MAX_OFFSET: u64 = 100_000;

/// Longest period one request covers. The API allows 3 calendar months, which can be as short
/// as 89 days (February to April), so 89 days always fits.
pub(super) const MAX_WINDOW_DAYS: i64 = 89;

/// How far back a notified call is looked for when it is confirmed.
pub(super) const CONFIRM_DAYS: i64 = 3;

impl Comagic {
    /// The call session `id` as `get.calls_report` reports it, looked for among the calls
    /// that started in the `CONFIRM_DAYS` before `now` (filter `id`, as the docs advise for
    /// confirming a notification). `None` when the API does not know it, or its row is unusable
    /// (refused with a warning naming the field).
    pub async fn call_by_id(&self, id: &str, now: Ts) -> Result<Option<Call>> {
        let Ok(numeric) = id.parse::<u64>() else {
            return Ok(None);
        };
        let (tz, _) = self.zone().await?;
        let params = json!({
            "date_from": to_local(now - chrono::Duration::days(CONFIRM_DAYS), tz).format(DT_FMT).to_string(),
            "date_till": to_local(now + chrono::Duration::minutes(1), tz).format(DT_FMT).to_string(),
            "fields": CALL_FIELDS,
            "filter": {"field": "id", "operator": "=", "value": numeric},
            "limit": 10,
            "offset": 0,
        });
        let result = self.rpc("get.calls_report", params).await?;
        let rows = result
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // Only the row with this id counts, whatever else an answer carries.
        let Some(row) = rows
            .iter()
            .find(|r| lenient::id(r.get("id")).as_deref() == Some(id))
        else {
            return Ok(None);
        };
        match self.map_call_in(row, tz) {
            Ok(c) => Ok(Some(c)),
            Err((id, why)) => {
                tracing::warn!(system = SYSTEM, call_id = %id, reason = why, "call refused");
                Ok(None)
            }
        }
    }

    /// Every call in one window of at most 89 days (`[from, till)`), into `out`; the window is
    /// asked for, and the rows read, in the account's zone `tz`.
    // Long: one paging loop whose restart at the offset cap moves the window start and the offset
    // together.
    pub(super) async fn calls_window(
        &self,
        from: Ts,
        till: Ts,
        tz: Tz,
        out: &mut BTreeMap<String, Call>,
    ) -> Result<()> {
        // The API takes whole seconds, both ends inclusive: the last second that starts
        // before `till`.
        let last = if till.timestamp_subsec_nanos() > 0 {
            till
        } else {
            till - chrono::Duration::seconds(1)
        };
        let till_s = to_local(last, tz).format(DT_FMT).to_string();
        let mut start = to_local(from, tz);
        let mut offset = 0u64;
        loop {
            let params = json!({
                "date_from": start.format(DT_FMT).to_string(),
                "date_till": till_s,
                "fields": CALL_FIELDS,
                "sort": [{"field": "start_time", "order": "asc"}],
                "limit": self.page,
                "offset": offset,
            });
            let result = self.rpc("get.calls_report", params).await?;
            let rows = result
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = result
                .pointer("/metadata/total_items")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let mut last_start: Option<NaiveDateTime> = None;
            for row in &rows {
                if let Some(s) = row.get("start_time").and_then(Value::as_str)
                    && let Ok(n) = NaiveDateTime::parse_from_str(s.trim(), DT_FMT)
                {
                    last_start = Some(last_start.map_or(n, |l: NaiveDateTime| l.max(n)));
                }
                match self.map_call_in(row, tz) {
                    Ok(c) => {
                        if c.started_at >= from && c.started_at < till {
                            // Window restarts re-read rows on purpose; the newest copy wins.
                            if out.contains_key(&c.id) {
                                tracing::debug!(system = SYSTEM, call_id = %c.id, "call row read twice; keeping the newest");
                            }
                            out.insert(c.id.clone(), c);
                        }
                    }
                    Err((id, why)) => {
                        tracing::warn!(system = SYSTEM, call_id = %id, reason = why, "skipping call row");
                    }
                }
            }
            let next = offset + self.page;
            if rows.is_empty() || next >= total {
                return Ok(());
            }
            if next > self.max_offset {
                // Restart the window at the last row seen; duplicates are dropped by id.
                match last_start {
                    Some(ls) if ls > start => {
                        start = ls;
                        offset = 0;
                    }
                    _ => {
                        return Err(self.err(
                            ErrorKind::Permanent,
                            "get.calls_report",
                            "more calls within one second than one window can page through",
                        ));
                    }
                }
            } else {
                offset = next;
            }
        }
    }
}
