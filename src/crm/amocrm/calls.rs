//! amoCRM call logging: `POST /api/v4/calls` to the contact or company with the number, after
//! a look for a call note already logged under the same identifier (a repeated write after a
//! crash must not log the call twice).

use reqwest::Method;
use serde_json::{Value, json};

use crate::crm::{CallRecord, NewContact, Result};
use crate::domain::{Direction, EntityKind};

use super::AmoCrm;

/// Entity ids per notes query when looking for an already logged call.
pub(super) const NOTE_IDS_PER_QUERY: usize = 50;

/// The refused items of a `POST /api/v4/calls` answer in words: `item R: CODE detail` for each
/// entry of `errors` (top level or under `_embedded`), with the field path when one is given.
/// A 400 with `validation-errors` never gets here: the transport reads it (with paths) itself.
pub(super) fn call_errors(v: &Value) -> String {
    let lists = [&v["errors"], &v["_embedded"]["errors"]];
    let parts: Vec<String> = lists
        .iter()
        .filter_map(|l| l.as_array())
        .flatten()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or("").trim().to_string();
            let rid = match &e["request_id"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => "?".into(),
            };
            let what = [text("code"), text("path"), text("detail"), text("title")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            format!("item {rid}: {what}")
        })
        .collect();
    if parts.is_empty() {
        "the answer lists no created call and no error".into()
    } else {
        parts.join("; ")
    }
}

impl AmoCrm {
    /// Contacts and companies with this phone (contacts with their deals). Without search the
    /// call is still logged: amoCRM itself finds the number's owners when it logs a call; only
    /// the duplicate check is narrower.
    pub(super) async fn phone_owners(
        &self,
        e164: &str,
    ) -> Result<Vec<(EntityKind, u64, Vec<u64>)>> {
        let found = self
            .search_phone(e164, true, |p, last_ten| {
                p.chars()
                    .filter(char::is_ascii_digit)
                    .collect::<String>()
                    .ends_with(last_ten)
            })
            .await?;
        Ok(found
            .into_iter()
            .map(|(kind, id, v)| {
                let leads = v["_embedded"]["leads"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["id"].as_u64())
                    .collect();
                (kind, id, leads)
            })
            .collect())
    }

    /// The id of a call note with `params.uniq == uniq` on any of these entities.
    pub(super) async fn find_call_note(
        &self,
        plural: &str,
        ids: &[u64],
        uniq: &str,
    ) -> Result<Option<u64>> {
        let path = format!("/api/v4/{plural}/notes");
        for chunk in ids.chunks(NOTE_IDS_PER_QUERY) {
            for page in 1..=20u32 {
                let mut q: Vec<(String, String)> = chunk
                    .iter()
                    .map(|id| ("filter[entity_id][]".to_string(), id.to_string()))
                    .collect();
                q.push(("filter[note_type][]".into(), "call_in".into()));
                q.push(("filter[note_type][]".into(), "call_out".into()));
                q.push(("limit".into(), "250".into()));
                q.push(("page".into(), page.to_string()));
                let (items, more) = self.list_page(&path, "notes", &q).await?;
                if let Some(id) = items
                    .iter()
                    .find(|n| n["params"]["uniq"].as_str() == Some(uniq))
                    .and_then(|n| n["id"].as_u64())
                {
                    return Ok(Some(id));
                }
                if !more {
                    break;
                }
            }
        }
        Ok(None)
    }

    // Long: one idempotent sequence (owners of the number, a look for the call already logged, the
    // post and its answer) whose steps share the owners found first.
    pub(super) async fn do_register_call(&self, call: &CallRecord) -> Result<String> {
        let path = "/api/v4/calls";
        let label = format!("POST {path}");
        let digits: String = call.phone.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return Err(self.bad(
                &label,
                path,
                "a call without a phone number cannot be logged",
            ));
        }
        let responsible = match &call.responsible_id {
            Some(r) => Some(self.num(&label, "responsible id", r)?),
            None => None,
        };
        // Already logged? Look at the call notes of everything that owns the number.
        let mut leads: Vec<u64> = Vec::new();
        let mut contacts: Vec<u64> = Vec::new();
        let mut companies: Vec<u64> = Vec::new();
        if let Some(e) = &call.entity
            && let Ok(id) = e.id.parse::<u64>()
        {
            match e.kind {
                EntityKind::Deal => leads.push(id),
                EntityKind::Contact => contacts.push(id),
                EntityKind::Company => companies.push(id),
                _ => {}
            }
        }
        for (kind, id, deals) in self.phone_owners(&call.phone).await? {
            match kind {
                EntityKind::Contact => contacts.push(id),
                _ => companies.push(id),
            }
            leads.extend(deals);
        }
        for (plural, ids) in [
            ("leads", &mut leads),
            ("contacts", &mut contacts),
            ("companies", &mut companies),
        ] {
            ids.sort_unstable();
            ids.dedup();
            if !ids.is_empty()
                && let Some(id) = self.find_call_note(plural, ids, &call.external_id).await?
            {
                return Ok(id.to_string());
            }
        }
        let mut item = json!({
            "direction": match call.direction { Direction::In => "inbound", Direction::Out => "outbound" },
            "uniq": call.external_id, "duration": call.duration_s.max(0), "source": "dozor",
            "phone": digits, "created_at": call.started_at.timestamp(),
            "call_status": if call.answered { 4 } else { 6 },
            "call_result": if call.answered { "Разговор состоялся" } else { "Не дозвонился" },
            "request_id": "0",
        });
        if let Some(link) = &call.recording_url {
            item["link"] = json!(link);
        }
        if let Some(r) = responsible {
            item["call_responsible"] = json!(r);
            item["responsible_user_id"] = json!(r);
        }
        let body = json!([item]);
        for attempt in 0..2 {
            let v = self.call(Method::POST, path, &[], Some(&body)).await?;
            let created = v.as_ref().and_then(|v| {
                v["_embedded"]["calls"]
                    .as_array()?
                    .iter()
                    .find(|c| c["request_id"].as_str().is_none_or(|r| r == "0") && c["id"].is_u64())
                    .and_then(|c| c["id"].as_u64())
            });
            if let Some(id) = created {
                return Ok(id.to_string());
            }
            if attempt == 0 {
                // amoCRM logs calls only for numbers that belong to a contact or company.
                tracing::info!(
                    system = super::SYSTEM,
                    "call number unknown to amoCRM, creating a contact"
                );
                self.do_create_contact(&NewContact {
                    name: call.phone.clone(),
                    phone: call.phone.clone(),
                    responsible_id: call.responsible_id.clone(),
                })
                .await?;
            } else {
                let detail = v.as_ref().map(call_errors).unwrap_or_default();
                return Err(self.bad(
                    &label,
                    path,
                    format!("amoCRM did not log the call: {detail}"),
                ));
            }
        }
        Err(self.bad(&label, path, "amoCRM did not log the call"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_calls_are_named_by_item_code_and_detail() {
        let v = json!({"_total_items": 0, "_embedded": {"calls": [], "errors": [
            {"request_id": "0", "code": "EntityNotFound",
             "detail": "No contact or company has this phone number"}]}});
        assert_eq!(
            call_errors(&v),
            "item 0: EntityNotFound No contact or company has this phone number"
        );
        let v = json!({"errors": [{"request_id": 2, "path": "phone", "title": "Bad phone"}]});
        assert_eq!(call_errors(&v), "item 2: phone Bad phone");
        assert_eq!(
            call_errors(&json!({"_embedded": {"calls": []}})),
            "the answer lists no created call and no error"
        );
    }
}
