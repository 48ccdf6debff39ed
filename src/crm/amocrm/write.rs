//! amoCRM writes: unsorted items, deals, contacts, responsible users, stages, loss, tags,
//! task completion and call logging.

use reqwest::Method;
use serde_json::{Value, json};

use super::{AmoCrm, map};
use crate::crm::{CallRecord, Crm, NewContact, NewDeal, NewLead, Result};
use crate::domain::{Direction, EntityKind, EntityRef};
use crate::http::{Error, ErrorKind};

/// Status id of "Закрыто и не реализовано" in every pipeline.
const LOST: u64 = 143;
const WON: u64 = 142;
/// Entity ids per notes query when looking for an already logged call.
const NOTE_IDS_PER_QUERY: usize = 50;

fn phone_field(phone: &str) -> Value {
    json!([{"field_code": "PHONE", "values": [{"value": phone, "enum_code": "WORK"}]}])
}

/// A stable identifier for a created item, so a repeated write can be recognised.
fn uniq_of(parts: &[&str]) -> String {
    let h = parts
        .iter()
        .flat_map(|p| p.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("dozor-{h:016x}")
}

/// The refused items of a `POST /api/v4/calls` answer in words: `item R: CODE detail` for each
/// entry of `errors` (top level or under `_embedded`), with the field path when one is given.
/// A 400 with `validation-errors` never gets here: the transport reads it (with paths) itself.
fn call_errors(v: &Value) -> String {
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
    fn bad(&self, label: &str, path: &str, msg: impl Into<String>) -> Error {
        self.err(
            ErrorKind::Permanent,
            label,
            &format!("{}{path}", self.base),
            msg,
        )
    }

    fn num(&self, label: &str, what: &str, s: &str) -> Result<u64> {
        s.trim().parse().map_err(|_| {
            self.bad(
                label,
                "",
                format!("{what} {s:?} is not a numeric amoCRM id"),
            )
        })
    }

    /// The path segment of an entity that has a responsible user.
    fn plural(&self, label: &str, kind: EntityKind, tasks: bool) -> Result<&'static str> {
        match kind {
            EntityKind::Task if tasks => Ok("tasks"),
            k => map::entity_plural(k).ok_or_else(|| {
                self.bad(
                    label,
                    "",
                    format!("amoCRM cannot do this on a {}", k.as_str()),
                )
            }),
        }
    }

    async fn patch_one(&self, path: &str, body: Value) -> Result<()> {
        self.call(Method::PATCH, path, &[], Some(&body)).await?;
        Ok(())
    }

    /// One record by id; 204 (unknown id) is a permanent error.
    async fn get_one(&self, path: &str, query: &[(String, String)]) -> Result<Value> {
        self.get(path, query)
            .await?
            .ok_or_else(|| self.bad(&format!("GET {path}"), path, "no such record"))
    }

    pub(super) async fn do_create_lead(&self, lead: &NewLead) -> Result<String> {
        let phone = lead.phone.as_deref().filter(|p| !p.is_empty());
        // Calls go to the "sip" category; forms and anything without a number to "forms".
        let sip = !lead.source.eq_ignore_ascii_case("WEB") && phone.is_some();
        let path = format!(
            "/api/v4/leads/unsorted/{}",
            if sip { "sip" } else { "forms" }
        );
        let label = format!("POST {path}");
        let now = chrono::Utc::now().timestamp();
        let uniq = uniq_of(&[&lead.title, phone.unwrap_or(""), &lead.comment]);
        let mut lead_obj = json!({"name": lead.title, "_embedded": {"tags": [{"name": "dozor"}]}});
        let utm: Vec<Value> = [
            ("UTM_SOURCE", &lead.utm.source),
            ("UTM_MEDIUM", &lead.utm.medium),
            ("UTM_CAMPAIGN", &lead.utm.campaign),
            ("UTM_CONTENT", &lead.utm.content),
            ("UTM_TERM", &lead.utm.term),
        ]
        .into_iter()
        .filter_map(|(code, v)| {
            v.as_ref()
                .map(|v| json!({"field_code": code, "values": [{"value": v}]}))
        })
        .collect();
        if !utm.is_empty() {
            lead_obj["custom_fields_values"] = Value::Array(utm);
        }
        let responsible = match &lead.responsible_id {
            Some(r) => Some(self.num(&label, "responsible id", r)?),
            None => None,
        };
        if let Some(r) = responsible {
            lead_obj["responsible_user_id"] = json!(r);
        }
        let name = if lead.name.trim().is_empty() {
            phone.unwrap_or("Клиент").to_string()
        } else {
            lead.name.clone()
        };
        let mut contact = json!({"name": name});
        if let Some(p) = phone {
            contact["custom_fields_values"] = phone_field(p);
        }
        let metadata = if sip {
            // Every field of the unsorted page's "add call" example
            // (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api#unsorted-add-sip);
            // `is_call_event_needed` puts the call into the card's feed.
            let mut m = json!({"from": phone, "phone": phone, "called_at": now, "duration": 0,
                               "link": "", "service_code": "dozor", "uniq": uniq,
                               "is_call_event_needed": true});
            if let Some(r) = responsible {
                m["call_responsible"] = json!(r);
            }
            m
        } else {
            json!({"form_id": "dozor", "form_name": lead.title, "form_page": "dozor",
                   "ip": "127.0.0.1", "form_sent_at": now, "referer": ""})
        };
        let item = json!({"source_name": "dozor", "source_uid": uniq, "created_at": now,
                          "metadata": metadata, "request_id": "0",
                          "_embedded": {"leads": [lead_obj], "contacts": [contact]}});
        let v = self
            .call(Method::POST, &path, &[], Some(&json!([item])))
            .await?;
        let first = v.as_ref().map(|v| &v["_embedded"]["unsorted"][0]);
        let uid = first
            .and_then(|u| u["uid"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Decode,
                    &label,
                    &format!("{}{path}", self.base),
                    "answer has no _embedded.unsorted[0].uid",
                )
            })?;
        // The comment (with its marker) goes on the item's lead as a common note.
        let lead_id = first.and_then(|u| u["_embedded"]["leads"][0]["id"].as_u64());
        if let Some(id) = lead_id
            && !lead.comment.trim().is_empty()
        {
            let npath = format!("/api/v4/leads/{id}/notes");
            let body = json!([{"note_type": "common", "params": {"text": lead.comment},
                               "request_id": "0"}]);
            self.call(Method::POST, &npath, &[], Some(&body)).await?;
        }
        Ok(uid)
    }

    pub(super) async fn do_create_deal(&self, deal: &NewDeal) -> Result<String> {
        let path = "/api/v4/leads";
        let label = format!("POST {path}");
        let mut item = json!({"name": deal.title, "price": deal.amount.round() as i64,
                              "request_id": "0"});
        let pipeline = deal
            .pipeline_id
            .as_deref()
            .filter(|p| *p != "leads" && !p.is_empty());
        if let Some(p) = pipeline {
            item["pipeline_id"] = json!(self.num(&label, "pipeline id", p)?);
        }
        if let Some(s) = deal.stage_id.as_deref().filter(|s| !s.is_empty()) {
            item["status_id"] = json!(self.num(&label, "stage id", s)?);
        }
        if let Some(r) = &deal.responsible_id {
            item["responsible_user_id"] = json!(self.num(&label, "responsible id", r)?);
        }
        let mut emb = serde_json::Map::new();
        if let Some(c) = &deal.contact_id {
            emb.insert(
                "contacts".into(),
                json!([{"id": self.num(&label, "contact id", c)?, "is_main": true}]),
            );
        }
        if let Some(c) = &deal.company_id {
            emb.insert(
                "companies".into(),
                json!([{"id": self.num(&label, "company id", c)?}]),
            );
        }
        if !emb.is_empty() {
            item["_embedded"] = Value::Object(emb);
        }
        let v = self
            .call(Method::POST, path, &[], Some(&json!([item])))
            .await?;
        let id = super::created_id(self, v.as_ref(), "leads", path)?;
        if !deal.comment.trim().is_empty() {
            self.add_comment(&EntityRef::new(EntityKind::Deal, id.clone()), &deal.comment)
                .await?;
        }
        Ok(id)
    }

    pub(super) async fn do_create_contact(&self, c: &NewContact) -> Result<String> {
        let path = "/api/v4/contacts";
        let label = format!("POST {path}");
        let mut item = json!({"name": c.name, "custom_fields_values": phone_field(&c.phone),
                              "request_id": "0"});
        if let Some(r) = &c.responsible_id {
            item["responsible_user_id"] = json!(self.num(&label, "responsible id", r)?);
        }
        let v = self
            .call(Method::POST, path, &[], Some(&json!([item])))
            .await?;
        super::created_id(self, v.as_ref(), "contacts", path)
    }

    pub(super) async fn do_set_responsible(&self, entity: &EntityRef, user: &str) -> Result<()> {
        let label = "PATCH responsible_user_id";
        let plural = self.plural(label, entity.kind, true)?;
        let id = self.num(label, "entity id", &entity.id)?;
        let user = self.num(label, "user id", user)?;
        self.patch_one(
            &format!("/api/v4/{plural}/{id}"),
            json!({"responsible_user_id": user}),
        )
        .await
    }

    /// The pipeline a deal is in.
    async fn deal_pipeline(&self, id: u64) -> Result<u64> {
        let path = format!("/api/v4/leads/{id}");
        let v = self.get_one(&path, &[]).await?;
        v["pipeline_id"]
            .as_u64()
            .ok_or_else(|| self.decode_err(&path, "(lead without pipeline_id)".into()))
    }

    pub(super) async fn do_move_deal(&self, deal: &str, stage: &str) -> Result<()> {
        let label = "PATCH /api/v4/leads/{id}";
        let id = self.num(label, "deal id", deal)?;
        let status = self.num(label, "stage id", stage)?;
        // 142/143 exist in every pipeline: they keep the deal's own pipeline. Other statuses
        // belong to exactly one pipeline.
        let pipeline = if status == WON || status == LOST {
            self.deal_pipeline(id).await?
        } else {
            let pipelines = self.pipelines().await?;
            pipelines
                .iter()
                .find(|p| p.id != "leads" && p.stages.iter().any(|s| s.id == stage.trim()))
                .and_then(|p| p.id.parse().ok())
                .ok_or_else(|| self.bad(label, "", format!("no pipeline has status {status}")))?
        };
        self.patch_one(
            &format!("/api/v4/leads/{id}"),
            json!({"status_id": status, "pipeline_id": pipeline}),
        )
        .await
    }

    /// The id of the loss reason called `name`, created when missing; `None` when the account
    /// does not let us read or create loss reasons.
    async fn loss_reason(&self, name: &str) -> Result<Option<u64>> {
        let path = "/api/v4/leads/loss_reasons";
        let wanted = name.trim().to_lowercase();
        let q = vec![("limit".to_string(), "250".to_string())];
        match self.list_page(path, "loss_reasons", &q).await {
            Ok((items, _)) => {
                if let Some(id) = items.iter().find_map(|r| {
                    (r["name"].as_str().map(|n| n.trim().to_lowercase()) == Some(wanted.clone()))
                        .then(|| r["id"].as_u64())
                        .flatten()
                }) {
                    return Ok(Some(id));
                }
            }
            Err(e) if e.kind == ErrorKind::Permanent => {
                tracing::warn!(system = super::SYSTEM, error = %e, "loss reasons unavailable");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let body = json!([{"name": name.trim(), "request_id": "0"}]);
        match self.call(Method::POST, path, &[], Some(&body)).await {
            Ok(v) => Ok(v.and_then(|v| v["_embedded"]["loss_reasons"][0]["id"].as_u64())),
            Err(e) if e.kind == ErrorKind::Permanent => {
                tracing::warn!(system = super::SYSTEM, error = %e, "cannot create loss reason");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn do_close_deal_lost(&self, deal: &str, reason: &str) -> Result<()> {
        let label = "PATCH /api/v4/leads/{id}";
        let id = self.num(label, "deal id", deal)?;
        let pipeline = self.deal_pipeline(id).await?;
        let mut body = json!({"status_id": LOST, "pipeline_id": pipeline});
        if !reason.trim().is_empty()
            && let Some(r) = self.loss_reason(reason).await?
        {
            body["loss_reason_id"] = json!(r);
        }
        self.patch_one(&format!("/api/v4/leads/{id}"), body).await?;
        let text = if reason.trim().is_empty() {
            "Сделка закрыта как нереализованная".to_string()
        } else {
            format!("Сделка закрыта как нереализованная: {reason}")
        };
        self.add_comment(&EntityRef::new(EntityKind::Deal, id.to_string()), &text)
            .await?;
        Ok(())
    }

    pub(super) async fn do_update_tags(
        &self,
        entity: &EntityRef,
        add: &[String],
        remove: &[String],
    ) -> Result<()> {
        let label = "PATCH tags";
        let plural = self.plural(label, entity.kind, false)?;
        let id = self.num(label, "entity id", &entity.id)?;
        let path = format!("/api/v4/{plural}/{id}");
        // A PATCH with tags replaces the list: start from what is there now.
        let v = self.get_one(&path, &[]).await?;
        let current: Vec<String> = v["_embedded"]["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect();
        let mut next: Vec<String> = current
            .iter()
            .filter(|t| !remove.iter().any(|r| r.eq_ignore_ascii_case(t)))
            .cloned()
            .collect();
        for a in add {
            if !a.trim().is_empty() && !next.iter().any(|t| t.eq_ignore_ascii_case(a)) {
                next.push(a.trim().to_string());
            }
        }
        if next == current {
            return Ok(());
        }
        let tags: Vec<Value> = next.iter().map(|n| json!({"name": n})).collect();
        self.patch_one(&path, json!({"_embedded": {"tags": tags}}))
            .await
    }

    pub(super) async fn do_complete_task(&self, task: &str, result: &str) -> Result<()> {
        let id = self.num("PATCH /api/v4/tasks/{id}", "task id", task)?;
        self.patch_one(
            &format!("/api/v4/tasks/{id}"),
            json!({"is_completed": true, "result": {"text": result}}),
        )
        .await
    }

    /// Contacts and companies with this phone (contacts with their deals).
    async fn phone_owners(&self, e164: &str) -> Result<Vec<(EntityKind, u64, Vec<u64>)>> {
        let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
        if digits.len() < 10 {
            return Ok(Vec::new());
        }
        let needle = digits[digits.len() - 10..].to_string();
        let mut out = Vec::new();
        for (path, key, kind) in [
            ("/api/v4/contacts", "contacts", EntityKind::Contact),
            ("/api/v4/companies", "companies", EntityKind::Company),
        ] {
            let mut q = vec![
                ("query".to_string(), needle.clone()),
                ("limit".to_string(), "50".to_string()),
            ];
            if kind == EntityKind::Contact {
                q.push(("with".into(), "leads".into()));
            }
            // Without search the call is still logged: amoCRM itself finds the number's
            // owners when it logs a call; only the duplicate check is narrower.
            let Some((items, _)) = self.search_page(path, key, &q).await? else {
                break;
            };
            for v in &items {
                let rec: map::WirePerson = map::decode(v).map_err(|e| self.decode_err(path, e))?;
                let hit = map::field_values(&rec.custom_fields_values, "PHONE")
                    .iter()
                    .any(|p| {
                        p.chars()
                            .filter(char::is_ascii_digit)
                            .collect::<String>()
                            .ends_with(&needle)
                    });
                if hit {
                    let leads = v["_embedded"]["leads"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|l| l["id"].as_u64())
                        .collect();
                    out.push((kind, rec.id, leads));
                }
            }
        }
        Ok(out)
    }

    /// The id of a call note with `params.uniq == uniq` on any of these entities.
    async fn find_call_note(&self, plural: &str, ids: &[u64], uniq: &str) -> Result<Option<u64>> {
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
