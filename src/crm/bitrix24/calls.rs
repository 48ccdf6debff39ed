//! Bitrix24 call registration: `telephony.externalcall.*` for an OAuth application, a call
//! activity otherwise, each found again by its marker before it is written twice.

use serde_json::json;

use crate::crm::{CallRecord, Result};
use crate::domain::EntityKind;
use crate::http::ErrorKind;

use super::auth::Auth;
use super::write::{num, owner_type_id};
use super::{Bitrix24, text};

impl Bitrix24 {
    /// The CRM id of a call registered earlier with the same external id.
    pub(super) async fn registered_call(
        &self,
        call: &CallRecord,
        oauth: bool,
    ) -> Result<Option<String>> {
        if oauth {
            let env = self
                .call(
                    "voximplant.statistic.get",
                    &json!({"FILTER": {"EXTERNAL_CALL_ID": call.external_id}, "SORT": "ID", "ORDER": "ASC"}),
                )
                .await?;
            let row = env["result"].as_array().and_then(|r| r.first()).cloned();
            return Ok(row.and_then(|r| {
                r.get("CRM_ACTIVITY_ID")
                    .and_then(text)
                    .filter(|a| !a.is_empty() && a != "0")
                    .or_else(|| r.get("CALL_ID").and_then(text))
            }));
        }
        let env = self
            .call(
                "crm.activity.list",
                &json!({
                    "filter": {"ORIGIN_ID": call.external_id, "TYPE_ID": 2},
                    "select": ["ID"],
                    "order": {"ID": "ASC"},
                    "start": -1,
                }),
            )
            .await?;
        Ok(env["result"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r.get("ID").and_then(text)))
    }

    /// OAuth application: telephony.externalCall.register + finish.
    pub(super) async fn register_external_call(
        &self,
        call: &CallRecord,
        user: &str,
    ) -> Result<String> {
        let mut p = json!({
            "USER_ID": num(user),
            "PHONE_NUMBER": call.phone,
            "TYPE": if call.direction == crate::domain::Direction::Out { 1 } else { 2 },
            "CALL_START_DATE": call.started_at.format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
            "CRM_CREATE": 0,
            "SHOW": 0,
            "EXTERNAL_CALL_ID": call.external_id,
        });
        if let Some(e) = &call.entity {
            let ty = match e.kind {
                EntityKind::Contact => Some("CONTACT"),
                EntityKind::Company => Some("COMPANY"),
                EntityKind::Lead => Some("LEAD"),
                _ => None,
            };
            if let Some(ty) = ty {
                p["CRM_ENTITY_TYPE"] = json!(ty);
                p["CRM_ENTITY_ID"] = num(&e.id);
            }
        }
        let env = self.call("telephony.externalCall.register", &p).await?;
        let call_id = env["result"]
            .get("CALL_ID")
            .and_then(text)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                self.decode("telephony.externalCall.register", "answer has no CALL_ID")
            })?;
        let duration = if call.answered {
            call.duration_s.max(0)
        } else {
            0
        };
        let env = self
            .call(
                "telephony.externalCall.finish",
                &json!({
                    "CALL_ID": call_id,
                    "USER_ID": num(user),
                    "DURATION": duration,
                    "STATUS_CODE": if call.answered { "200" } else { "304" },
                }),
            )
            .await?;
        Ok(env["result"]
            .get("CRM_ACTIVITY_ID")
            .and_then(text)
            .filter(|a| !a.is_empty() && a != "0")
            .unwrap_or(call_id))
    }

    /// Inbound webhook (telephony.* needs an application): a call activity on the timeline.
    pub(super) async fn add_call_activity(&self, call: &CallRecord, user: &str) -> Result<String> {
        let owner = match &call.entity {
            Some(e) if owner_type_id(e.kind).is_some() => e.clone(),
            _ => {
                let found = self.do_find_by_phone(&call.phone).await?;
                [EntityKind::Contact, EntityKind::Company, EntityKind::Lead]
                    .iter()
                    .find_map(|k| found.iter().find(|r| r.kind == *k).cloned())
                    .ok_or_else(|| {
                        self.err(
                            ErrorKind::Permanent,
                            "crm.activity.add",
                            "",
                            "no lead, contact or company has this number: a webhook can put a call only on an existing record",
                        )
                    })?
            }
        };
        let type_id = owner_type_id(owner.kind).unwrap_or(3);
        let incoming = call.direction == crate::domain::Direction::In;
        let subject = match (incoming, call.answered) {
            (true, true) => "Входящий звонок",
            (true, false) => "Пропущенный звонок",
            (false, true) => "Исходящий звонок",
            (false, false) => "Исходящий звонок (без ответа)",
        };
        let duration = if call.answered {
            call.duration_s
                .clamp(0, crate::domain::bounds::MAX_CALL_SECS)
        } else {
            0
        };
        // Checked: a record stored before durations were range-checked must fail this one
        // write, not the process.
        let end = chrono::TimeDelta::try_seconds(duration)
            .and_then(|d| call.started_at.checked_add_signed(d))
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Permanent,
                    "crm.activity.add",
                    "",
                    format!(
                        "call {} has an impossible start or duration",
                        call.external_id
                    ),
                )
            })?;
        let fmt = |t: &crate::domain::Ts| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
        let mut fields = json!({
            "OWNER_TYPE_ID": type_id,
            "OWNER_ID": num(&owner.id),
            "TYPE_ID": 2,
            "DIRECTION": if incoming { 1 } else { 2 },
            "SUBJECT": subject,
            "RESPONSIBLE_ID": num(user),
            "COMMUNICATIONS": [{
                "VALUE": call.phone,
                "ENTITY_ID": num(&owner.id),
                "ENTITY_TYPE_ID": type_id,
            }],
            "START_TIME": fmt(&call.started_at),
            "END_TIME": fmt(&end),
            "COMPLETED": "Y",
            "ORIGIN_ID": call.external_id,
        });
        if let Some(url) = &call.recording_url {
            fields["DESCRIPTION"] = json!(format!("Запись разговора: {url}"));
        }
        let env = self
            .call("crm.activity.add", &json!({"fields": fields}))
            .await?;
        text(&env["result"])
            .filter(|id| id.parse::<u64>().is_ok_and(|n| n > 0))
            .ok_or_else(|| self.decode("crm.activity.add", "answer has no activity id"))
    }

    pub(super) async fn do_register_call(&self, call: &CallRecord) -> Result<String> {
        let oauth = matches!(self.auth, Auth::OAuth(_));
        if let Some(id) = self.registered_call(call, oauth).await? {
            return Ok(id);
        }
        let Some(user) = call.responsible_id.as_deref() else {
            return Err(self.err(
                ErrorKind::Permanent,
                "register_call",
                "",
                "a call needs the responsible user (the employee who talked)",
            ));
        };
        if oauth {
            self.register_external_call(call, user).await
        } else {
            self.add_call_activity(call, user).await
        }
    }
}
