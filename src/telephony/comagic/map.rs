//! CoMagic call rows (`get.calls_report`) to domain calls: the fields asked for, the answering
//! employee, the recording link and the UTM marks.

use chrono_tz::Tz;
use serde_json::Value;

use crate::domain::{Call, Direction, TelephonyKind, Utm, bounds};
use crate::telephony::lenient;

use super::zone::parse_local;
use super::{Comagic, SYSTEM};

pub(super) const CALL_FIELDS: &[&str] = &[
    "id",
    "start_time",
    "direction",
    "is_lost",
    "talk_duration",
    "wait_duration",
    "contact_phone_number",
    "virtual_phone_number",
    "employees",
    "first_answered_employee_id",
    "first_answered_employee_full_name",
    "call_records",
    "full_record_file_link",
    "communication_id",
    "source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
];

impl Comagic {
    pub(super) fn record_host(&self) -> &'static str {
        if self.url.contains("uiscom") {
            "app.uiscom.ru"
        } else if self.url.contains("callgear") {
            "app.callgear.com"
        } else {
            "app.comagic.ru"
        }
    }

    /// Maps one `get.calls_report` row; `Err((call id, reason))` when it is unusable. The
    /// notification receiver maps pushed calls through it too, so both paths agree.
    /// Times are read in the zone in use now (see [`Comagic::zone`]).
    pub fn map_call(&self, row: &Value) -> std::result::Result<Call, (String, &'static str)> {
        self.map_call_in(row, self.current_zone().tz)
    }

    /// [`Comagic::map_call`] with `start_time` read in `tz`.
    // Long: one field of the call row after another, each with its own leniency; the row is refused
    // with its id at the first bad field.
    pub(super) fn map_call_in(
        &self,
        row: &Value,
        tz: Tz,
    ) -> std::result::Result<Call, (String, &'static str)> {
        let id = match row.get("id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(("?".into(), "missing id")),
        };
        let bad = |why: &'static str| (id.clone(), why);
        let started_at = row
            .get("start_time")
            .and_then(Value::as_str)
            .and_then(|s| parse_local(s, tz))
            .ok_or_else(|| bad("start_time missing, unparsable or outside 2000-2099"))?;
        let direction = match row.get("direction").and_then(Value::as_str) {
            Some("in") => Direction::In,
            Some("out") => Direction::Out,
            _ => return Err(bad("unknown direction")),
        };
        let is_lost = lenient::flag(row.get("is_lost")).ok_or_else(|| bad("missing is_lost"))?;
        let talk_s = bounds::call_seconds_field(row.get("talk_duration"))
            .ok_or_else(|| bad("talk_duration is not a duration of 0 s to 1 day"))?;
        let wait_s = bounds::call_seconds_field(row.get("wait_duration"))
            .ok_or_else(|| bad("wait_duration is not a duration of 0 s to 1 day"))?;
        let client_phone = match row.get("contact_phone_number") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Null) | None => String::new(),
            // The call happened even if its number came in an odd shape: keep it without one.
            Some(other) => {
                tracing::warn!(system = SYSTEM, call_id = %id, value = %other, "odd contact_phone_number; call kept without a number");
                String::new()
            }
        };
        let (mut employee_id, mut employee_name) = (
            lenient::id(row.get("first_answered_employee_id")),
            lenient::text(row.get("first_answered_employee_full_name")),
        );
        if employee_id.is_none()
            && let Some(list) = row.get("employees").and_then(Value::as_array)
        {
            let pick = list
                .iter()
                .find(|e| lenient::flag(e.get("is_talked")) == Some(true))
                .or_else(|| {
                    list.iter()
                        .find(|e| lenient::flag(e.get("is_answered")) == Some(true))
                })
                .or_else(|| list.first());
            if let Some(e) = pick {
                employee_id = lenient::id(e.get("employee_id"));
                employee_name = lenient::text(e.get("employee_full_name"));
            }
        }
        let recording_url = lenient::text(row.get("full_record_file_link")).or_else(|| {
            let rec = row
                .get("call_records")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|r| lenient::id(Some(r)))?;
            let comm = lenient::id(row.get("communication_id")).unwrap_or_else(|| id.clone());
            Some(format!(
                "https://{}/system/media/talk/{comm}/{rec}/",
                self.record_host()
            ))
        });
        Ok(Call {
            id: id.clone(),
            provider: TelephonyKind::Comagic,
            started_at,
            direction,
            answered: !is_lost,
            talk_s,
            wait_s,
            client_phone,
            virtual_number: lenient::text(row.get("virtual_phone_number")),
            employee_id,
            employee_name,
            recording_url,
            source: lenient::text(row.get("source")),
            utm: Utm {
                source: lenient::text(row.get("utm_source")),
                medium: lenient::text(row.get("utm_medium")),
                campaign: lenient::text(row.get("utm_campaign")),
                content: lenient::text(row.get("utm_content")),
                term: lenient::text(row.get("utm_term")),
            },
        })
    }
}
