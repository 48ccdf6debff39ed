//! Bitrix24 writes: adds and updates of leads, deals, contacts, tasks, comments, responsible,
//! stages and dozor's flags.

use serde_json::{Map, Value, json};

use crate::crm::{NewContact, NewDeal, NewLead, NewTask, Result};
use crate::domain::{EntityKind, EntityRef, Pipeline};
use crate::http::ErrorKind;

use super::paging::flag_values;
use super::{Bitrix24, map, text};

/// An id as a JSON number when it is one.
pub(super) fn num(id: &str) -> Value {
    id.trim()
        .parse::<u64>()
        .map(|n| json!(n))
        .unwrap_or_else(|_| json!(id))
}

/// `crm.{name}.*` of a CRM entity kind.
pub(super) fn crm_name(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Lead => "lead",
        EntityKind::Deal => "deal",
        EntityKind::Contact => "contact",
        EntityKind::Company => "company",
        EntityKind::Task => "task",
        EntityKind::Activity => "activity",
    }
}

pub(super) fn owner_type_id(kind: EntityKind) -> Option<u64> {
    match kind {
        EntityKind::Lead => Some(1),
        EntityKind::Deal => Some(2),
        EntityKind::Contact => Some(3),
        EntityKind::Company => Some(4),
        _ => None,
    }
}

impl Bitrix24 {
    /// `crm.*.add`: returns the new id.
    pub(super) async fn add(&self, method: &str, fields: Value) -> Result<String> {
        let env = self
            .call(
                method,
                &json!({"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}}),
            )
            .await?;
        text(&env["result"])
            .filter(|id| id.parse::<u64>().is_ok_and(|n| n > 0))
            .ok_or_else(|| self.decode(method, "answer has no new id"))
    }

    /// `crm.*.update`: `result: true` expected.
    pub(super) async fn update(&self, method: &str, params: Value) -> Result<()> {
        let env = self.call(method, &params).await?;
        match &env["result"] {
            Value::Bool(true) => Ok(()),
            v if text(v).is_some_and(|t| t == "Y" || t == "1" || t == "true") => Ok(()),
            _ => Err(self.decode(method, "update was not confirmed")),
        }
    }

    /// The default deal pipeline and its first open stage.
    pub(super) async fn default_first_stage(&self) -> Result<(String, String)> {
        let mut cached = self.default_stage.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let pipelines = self.do_pipelines().await?;
        let deals: Vec<&Pipeline> = pipelines.iter().filter(|p| p.id != "leads").collect();
        let p = deals
            .iter()
            .find(|p| p.is_default)
            .or_else(|| deals.iter().find(|p| p.id == "0"))
            .or(deals.first())
            .ok_or_else(|| self.decode("crm.category.list", "no deal pipelines"))?;
        let stage = p
            .stages
            .iter()
            .find(|s| s.semantics == crate::domain::Semantics::Open)
            .map(|s| s.id.clone())
            .ok_or_else(|| {
                self.decode("crm.status.list", "the default pipeline has no open stage")
            })?;
        let found = (p.id.clone(), stage);
        *cached = Some(found.clone());
        Ok(found)
    }

    pub(super) async fn do_create_task(&self, task: &NewTask) -> Result<String> {
        let mut fields = json!({
            "TITLE": task.title,
            "DESCRIPTION": task.description,
            "RESPONSIBLE_ID": task.responsible_id,
            "DEADLINE": task.deadline.format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
        });
        if let Some(b) = task.entity.as_ref().and_then(map::binding) {
            fields["UF_CRM_TASK"] = json!([b]);
        }
        let env = self
            .call("tasks.task.add", &json!({"fields": fields}))
            .await?;
        env["result"]
            .get("task")
            .and_then(|t| t.get("id").or_else(|| t.get("ID")))
            .and_then(text)
            .ok_or_else(|| self.decode("tasks.task.add", "answer has no task id"))
    }

    pub(super) async fn do_add_comment(&self, entity: &EntityRef, text_: &str) -> Result<String> {
        let ty = match entity.kind {
            EntityKind::Lead => "lead",
            EntityKind::Deal => "deal",
            EntityKind::Contact => "contact",
            EntityKind::Company => "company",
            _ => {
                return Err(self.err(
                    ErrorKind::Permanent,
                    "crm.timeline.comment.add",
                    "",
                    "timeline comments attach to leads, deals, contacts or companies",
                ));
            }
        };
        let id: Value = entity
            .id
            .parse::<u64>()
            .map(|n| json!(n))
            .unwrap_or_else(|_| json!(entity.id));
        let env = self
            .call(
                "crm.timeline.comment.add",
                &json!({"fields": {"ENTITY_ID": id, "ENTITY_TYPE": ty, "COMMENT": text_}}),
            )
            .await?;
        text(&env["result"])
            .ok_or_else(|| self.decode("crm.timeline.comment.add", "answer has no comment id"))
    }

    pub(super) async fn do_create_lead(&self, lead: &NewLead) -> Result<String> {
        let mut fields = json!({
            "TITLE": lead.title,
            "NAME": lead.name,
            "SOURCE_ID": lead.source,
            "COMMENTS": lead.comment,
        });
        if let Some(p) = &lead.phone {
            fields["PHONE"] = json!([{"VALUE": p, "VALUE_TYPE": "WORK"}]);
        }
        if let Some(r) = &lead.responsible_id {
            fields["ASSIGNED_BY_ID"] = num(r);
        }
        for (k, v) in [
            ("UTM_SOURCE", &lead.utm.source),
            ("UTM_MEDIUM", &lead.utm.medium),
            ("UTM_CAMPAIGN", &lead.utm.campaign),
            ("UTM_CONTENT", &lead.utm.content),
            ("UTM_TERM", &lead.utm.term),
        ] {
            if let Some(v) = v {
                fields[k] = json!(v);
            }
        }
        self.add("crm.lead.add", fields).await
    }

    pub(super) async fn do_create_deal(&self, deal: &NewDeal) -> Result<String> {
        let mut fields = json!({
            "TITLE": deal.title,
            "OPPORTUNITY": format!("{:.2}", deal.amount),
            "COMMENTS": deal.comment,
        });
        match (&deal.pipeline_id, &deal.stage_id) {
            (_, Some(stage)) => {
                fields["STAGE_ID"] = json!(stage);
                if let Some(p) = &deal.pipeline_id {
                    fields["CATEGORY_ID"] = num(p);
                }
            }
            (Some(p), None) => fields["CATEGORY_ID"] = num(p),
            (None, None) => {
                let (p, stage) = self.default_first_stage().await?;
                fields["CATEGORY_ID"] = num(&p);
                fields["STAGE_ID"] = json!(stage);
            }
        }
        for (k, v) in [
            ("ASSIGNED_BY_ID", &deal.responsible_id),
            ("CONTACT_ID", &deal.contact_id),
            ("COMPANY_ID", &deal.company_id),
            ("LEAD_ID", &deal.lead_id),
        ] {
            if let Some(v) = v {
                fields[k] = num(v);
            }
        }
        self.add("crm.deal.add", fields).await
    }

    pub(super) async fn do_create_contact(&self, contact: &NewContact) -> Result<String> {
        let name = contact.name.trim();
        let (first, last) = name.split_once(' ').unwrap_or((name, ""));
        let mut fields = json!({
            "NAME": first,
            "PHONE": [{"VALUE": contact.phone, "VALUE_TYPE": "WORK"}],
        });
        if !last.trim().is_empty() {
            fields["LAST_NAME"] = json!(last.trim());
        }
        if let Some(r) = &contact.responsible_id {
            fields["ASSIGNED_BY_ID"] = num(r);
        }
        self.add("crm.contact.add", fields).await
    }

    pub(super) async fn do_set_responsible(&self, entity: &EntityRef, user_id: &str) -> Result<()> {
        let user = num(user_id);
        match entity.kind {
            EntityKind::Task => match entity.id.strip_prefix("todo-") {
                Some(id) => {
                    self.update(
                        "crm.activity.update",
                        json!({"id": num(id), "fields": {"RESPONSIBLE_ID": user}}),
                    )
                    .await
                }
                None => {
                    self.call(
                        "tasks.task.update",
                        &json!({"taskId": num(&entity.id), "fields": {"RESPONSIBLE_ID": user}}),
                    )
                    .await?;
                    Ok(())
                }
            },
            EntityKind::Activity => {
                self.update(
                    "crm.activity.update",
                    json!({"id": num(&entity.id), "fields": {"RESPONSIBLE_ID": user}}),
                )
                .await
            }
            kind => {
                let method = format!("crm.{}.update", crm_name(kind));
                self.update(
                    &method,
                    json!({"id": num(&entity.id), "fields": {"ASSIGNED_BY_ID": user}}),
                )
                .await
            }
        }
    }

    pub(super) async fn do_move_deal(&self, deal_id: &str, stage_id: &str) -> Result<()> {
        self.update(
            "crm.deal.update",
            json!({"id": num(deal_id), "fields": {"STAGE_ID": stage_id}}),
        )
        .await
    }

    pub(super) async fn do_close_deal_lost(&self, deal_id: &str, reason: &str) -> Result<()> {
        let env = self
            .call("crm.deal.get", &json!({"id": num(deal_id)}))
            .await?;
        let cat = env["result"]
            .get("CATEGORY_ID")
            .and_then(text)
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "0".into());
        let current = env["result"].get("STAGE_ID").and_then(text);
        let entity = if cat == "0" {
            "DEAL_STAGE".to_string()
        } else {
            format!("DEAL_STAGE_{cat}")
        };
        let env = self
            .call(
                "crm.status.list",
                &json!({"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}}),
            )
            .await?;
        let lost = map::stages(&cat, &env["result"])
            .into_iter()
            .find(|s| s.semantics == crate::domain::Semantics::Lost)
            .map(|s| s.id)
            .unwrap_or_else(|| {
                if cat == "0" {
                    "LOSE".into()
                } else {
                    format!("C{cat}:LOSE")
                }
            });
        if current.as_deref() != Some(lost.as_str()) {
            self.do_move_deal(deal_id, &lost).await?;
        }
        let note = format!("Сделка закрыта как проигранная. Причина: {reason}");
        self.do_add_comment(&EntityRef::new(EntityKind::Deal, deal_id), &note)
            .await?;
        Ok(())
    }

    pub(super) async fn do_update_tags(
        &self,
        entity: &EntityRef,
        add: &[String],
        remove: &[String],
    ) -> Result<()> {
        let Some(field) = &self.flag_field else {
            return Err(self.err(
                ErrorKind::Permanent,
                "update_tags",
                "",
                "Bitrix24 CRM records have no tags: set crm.flag_field to a multiple string user field (UF_CRM_...) of deals, contacts and companies",
            ));
        };
        if !matches!(
            entity.kind,
            EntityKind::Deal | EntityKind::Contact | EntityKind::Company
        ) {
            return Err(self.err(
                ErrorKind::Permanent,
                "update_tags",
                "",
                format!(
                    "flags are kept on deals, contacts and companies, not on a {}",
                    entity.kind.as_str()
                ),
            ));
        }
        let name = crm_name(entity.kind);
        let list = format!("crm.{name}.list");
        let env = self
            .call(
                &list,
                &json!({"filter": {"ID": num(&entity.id)}, "select": ["ID", field], "start": -1}),
            )
            .await?;
        let row = env["result"]
            .as_array()
            .and_then(|rows| rows.first())
            .cloned()
            .ok_or_else(|| {
                let url = self.shown_url(&list);
                self.err(
                    ErrorKind::Permanent,
                    &list,
                    &url,
                    format!("{name} {} not found", entity.id),
                )
            })?;
        let current = row.get(field.as_str()).map(flag_values).unwrap_or_default();
        let mut next: Vec<String> = current
            .iter()
            .filter(|f| !remove.contains(f))
            .cloned()
            .collect();
        for a in add {
            let a = a.trim();
            if !a.is_empty() && !next.iter().any(|f| f == a) {
                next.push(a.to_string());
            }
        }
        if next == current {
            return Ok(());
        }
        let value = if next.is_empty() {
            json!("")
        } else {
            json!(next)
        };
        let mut fields = Map::new();
        fields.insert(field.clone(), value);
        self.update(
            &format!("crm.{name}.update"),
            json!({"id": num(&entity.id), "fields": fields}),
        )
        .await
    }

    pub(super) async fn do_complete_task(&self, task_id: &str, result: &str) -> Result<()> {
        if let Some(id) = task_id.strip_prefix("todo-") {
            let env = self
                .call(
                    "crm.activity.list",
                    &json!({"filter": {"ID": num(id)}, "select": ["ID", "OWNER_TYPE_ID", "OWNER_ID", "COMPLETED"]}),
                )
                .await?;
            let row = env["result"]
                .as_array()
                .and_then(|r| r.first())
                .cloned()
                .ok_or_else(|| {
                    let url = self.shown_url("crm.activity.list");
                    self.err(
                        ErrorKind::Permanent,
                        "crm.activity.list",
                        &url,
                        format!("to-do {id} not found"),
                    )
                })?;
            if row.get("COMPLETED").and_then(text).as_deref() != Some("Y") {
                self.update(
                    "crm.activity.update",
                    json!({"id": num(id), "fields": {"COMPLETED": "Y"}}),
                )
                .await?;
            }
            let owner = match row.get("OWNER_TYPE_ID").and_then(text).as_deref() {
                Some("1") => Some(EntityKind::Lead),
                Some("2") => Some(EntityKind::Deal),
                Some("3") => Some(EntityKind::Contact),
                Some("4") => Some(EntityKind::Company),
                _ => None,
            };
            let owner_id = row.get("OWNER_ID").and_then(text).filter(|o| o != "0");
            if let (Some(kind), Some(oid), false) = (owner, owner_id, result.trim().is_empty()) {
                self.do_add_comment(&EntityRef::new(kind, oid), result)
                    .await?;
            }
            return Ok(());
        }
        self.call("tasks.task.complete", &json!({"taskId": num(task_id)}))
            .await?;
        if !result.trim().is_empty() {
            self.call(
                "task.commentitem.add",
                &json!({"TASKID": num(task_id), "FIELDS": {"POST_MESSAGE": result}}),
            )
            .await?;
        }
        Ok(())
    }
}
