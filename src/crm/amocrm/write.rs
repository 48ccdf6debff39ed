//! amoCRM writes: unsorted items, deals, contacts, responsible users, stages, loss, tags and
//! task completion (call logging is in [`super::calls`]).

use reqwest::Method;
use serde_json::{Value, json};

use super::{AmoCrm, created_id, map};
use crate::crm::{Crm, NewContact, NewDeal, NewLead, NewTask, Result};
use crate::domain::{EntityKind, EntityRef};
use crate::http::{Error, ErrorKind};

/// Status id of "Закрыто и не реализовано" in every pipeline.
const LOST: u64 = 143;
const WON: u64 = 142;

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

impl AmoCrm {
    pub(super) fn bad(&self, label: &str, path: &str, msg: impl Into<String>) -> Error {
        self.err(
            ErrorKind::Permanent,
            label,
            &format!("{}{path}", self.base),
            msg,
        )
    }

    pub(super) fn num(&self, label: &str, what: &str, s: &str) -> Result<u64> {
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

    // Long: builds one unsorted item (lead, contact, UTM, metadata) as one JSON body and posts it.
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
}

impl AmoCrm {
    pub(super) async fn do_create_task(&self, task: &NewTask) -> Result<String> {
        let path = "/api/v4/tasks";
        let url = format!("{}{path}", self.base);
        let bad = |m: String| self.err(ErrorKind::Permanent, &format!("POST {path}"), &url, m);
        let responsible: u64 = task.responsible_id.parse().map_err(|_| {
            bad(format!(
                "responsible id {:?} is not numeric",
                task.responsible_id
            ))
        })?;
        let text = if task.description.is_empty() {
            task.title.clone()
        } else {
            format!("{}\n{}", task.title, task.description)
        };
        let mut item = json!({
            "text": text, "complete_till": task.deadline.timestamp(), "task_type_id": 1,
            "responsible_user_id": responsible, "request_id": "0",
        });
        if let Some(ent) = &task.entity
            && let Some(plural) = map::entity_plural(ent.kind)
        {
            let id: u64 = ent
                .id
                .parse()
                .map_err(|_| bad(format!("entity id {:?} is not numeric", ent.id)))?;
            item["entity_type"] = json!(plural);
            item["entity_id"] = json!(id);
        }
        let v = self
            .call(Method::POST, path, &[], Some(&json!([item])))
            .await?;
        created_id(self, v.as_ref(), "tasks", path)
    }

    pub(super) async fn do_add_comment(&self, entity: &EntityRef, text: &str) -> Result<String> {
        let Some(plural) = map::entity_plural(entity.kind) else {
            return Err(self.err(
                ErrorKind::Permanent,
                "POST notes",
                &self.base,
                format!("amoCRM has no notes on {}", entity.kind.as_str()),
            ));
        };
        let path = format!("/api/v4/{plural}/notes");
        let id: u64 = entity.id.parse().map_err(|_| {
            self.err(
                ErrorKind::Permanent,
                &format!("POST {path}"),
                &format!("{}{path}", self.base),
                format!("entity id {:?} is not numeric", entity.id),
            )
        })?;
        let body = json!([{"entity_id": id, "note_type": "common", "params": {"text": text},
                           "request_id": "0"}]);
        let v = self.call(Method::POST, &path, &[], Some(&body)).await?;
        created_id(self, v.as_ref(), "notes", &path)
    }
}
