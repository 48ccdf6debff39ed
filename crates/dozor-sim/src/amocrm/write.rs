//! Write side of the amoCRM fake: leads, contacts, tasks, notes, calls and unsorted actions.
//! Every write mutates the shared world and stamps `updated_at`.

use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use super::render::{
    COMMENT_NOTE_BASE, LOST, UNSORTED_STATUS_BASE, WON, entity_plural, not_found, status_id,
    uid_to_id,
};
use super::{Reply, Req, problem, validation};
use crate::Sim;
use crate::world::{
    AMO_PIPELINE_BASE, ActivityType, Dir, LeadStatus, Owner, SimActivity, SimContact, SimDeal,
    SimTask, StageKind, World,
};

fn body_items(req: &Req, single: bool) -> Result<Vec<Value>, Reply> {
    let v: Value = serde_json::from_slice(&req.body)
        .map_err(|e| problem(StatusCode::BAD_REQUEST, &format!("Body is not JSON: {e}")))?;
    match v {
        Value::Array(a) if !single => Ok(a),
        Value::Object(_) if single => Ok(vec![v]),
        _ => Err(validation(
            "0",
            "InvalidType",
            "",
            if single {
                "An object is expected"
            } else {
                "An array of objects is expected"
            },
        )),
    }
}

fn rid(item: &Value, i: usize) -> String {
    match &item["request_id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => i.to_string(),
    }
}

fn uint(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn time(v: &Value) -> Option<chrono::DateTime<Utc>> {
    Utc.timestamp_opt(v.as_i64()?, 0).single()
}

/// Resolves an amoCRM (status_id, pipeline_id) into a world (pipeline, stage).
fn resolve_stage(w: &World, status: u64, pipeline: Option<u64>) -> Option<(u64, u64)> {
    let wp = pipeline.map(|p| p.checked_sub(AMO_PIPELINE_BASE));
    let wp = match wp {
        Some(None) => return None,
        Some(Some(p)) => Some(w.pipeline(p)?.id),
        None => None,
    };
    match status {
        WON | LOST => {
            let p = wp.or_else(|| w.pipelines.iter().find(|p| p.is_default).map(|p| p.id))?;
            let kind = if status == WON {
                StageKind::Won
            } else {
                StageKind::Lost
            };
            Some((p, w.stage_of_kind(p, kind)?.id))
        }
        s if (UNSORTED_STATUS_BASE..AMO_PIPELINE_BASE).contains(&s) => {
            let p = s - UNSORTED_STATUS_BASE;
            if wp.is_some_and(|x| x != p) {
                return None;
            }
            Some((p, w.stage_of_kind(p, StageKind::Open)?.id))
        }
        s => {
            let (p, st) = w.stage(s)?;
            if st.kind != StageKind::Open || wp.is_some_and(|x| x != p.id) {
                return None;
            }
            Some((p.id, st.id))
        }
    }
}

fn first_user(w: &World) -> u64 {
    w.users.first().map_or(0, |u| u.id)
}

fn tag_names(item: &Value) -> Option<Vec<String>> {
    item["_embedded"]["tags"].as_array().map(|a| {
        a.iter()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect()
    })
}

/// Logs `entity_tag_added` / `entity_tag_deleted` for a tag list replacement.
fn log_tags(log: &dyn Fn(&str, Value, Value), old: &[String], new: &[String]) {
    for t in new.iter().filter(|t| !old.contains(t)) {
        log("entity_tag_added", json!([{"tag": {"name": t}}]), json!([]));
    }
    for t in old.iter().filter(|t| !new.contains(t)) {
        log(
            "entity_tag_deleted",
            json!([]),
            json!([{"tag": {"name": t}}]),
        );
    }
}

pub fn create_leads(sim: &Sim, req: &Req) -> Reply {
    let items = match body_items(req, false) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut w = sim.world();
    // Validate everything first: a batch is all or nothing.
    let mut plans = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let r = rid(it, i);
        if !it["name"].is_null() && !it["name"].is_string() {
            return validation(
                &r,
                "InvalidType",
                "name",
                "This value should be of type string.",
            );
        }
        let status = uint(&it["status_id"]);
        let pipeline = uint(&it["pipeline_id"]);
        let stage = match status {
            Some(s) => match resolve_stage(&w, s, pipeline) {
                Some(x) => x,
                None => {
                    return validation(
                        &r,
                        "NotSupportedChoice",
                        "status_id",
                        "The value you selected is not a valid choice.",
                    );
                }
            },
            None => {
                let p = match pipeline {
                    Some(p) => p.checked_sub(AMO_PIPELINE_BASE).and_then(|p| w.pipeline(p)),
                    None => w.pipelines.iter().find(|p| p.is_default),
                };
                match p.and_then(|p| w.stage_of_kind(p.id, StageKind::Open).map(|s| (p.id, s.id))) {
                    Some(x) => x,
                    None => {
                        return validation(
                            &r,
                            "NotSupportedChoice",
                            "pipeline_id",
                            "The value you selected is not a valid choice.",
                        );
                    }
                }
            }
        };
        plans.push((r, stage));
    }
    let now = Utc::now();
    let mut out = Vec::new();
    for (it, (r, (pipeline_id, stage_id))) in items.iter().zip(plans) {
        let id = w.next_id();
        let kind = w.stage(stage_id).map_or(StageKind::Open, |(_, s)| s.kind);
        let contact_id = it["_embedded"]["contacts"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|c| uint(&c["id"]));
        let company_id = it["_embedded"]["companies"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|c| uint(&c["id"]));
        let deal = SimDeal {
            id,
            title: it["name"]
                .as_str()
                .map_or_else(|| format!("Сделка #{id}"), str::to_string),
            pipeline_id,
            stage_id,
            amount: it["price"].as_f64().unwrap_or(0.0),
            responsible_id: uint(&it["responsible_user_id"]).unwrap_or_else(|| first_user(&w)),
            contact_id,
            company_id,
            lead_id: None,
            source: "API".into(),
            tags: tag_names(it).unwrap_or_default(),
            loss_reason: None,
            created_at: time(&it["created_at"]).unwrap_or(now),
            updated_at: now,
            closed_at: (kind != StageKind::Open).then_some(now),
        };
        w.deals.insert(id, deal);
        out.push(json!({"id": id, "request_id": r,
            "_links": {"self": {"href": format!("{}/api/v4/leads/{id}", req.base)}}}));
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_links": {"self": {"href": format!("{}/api/v4/leads", req.base)}},
               "_embedded": {"leads": out}}),
    )
}

pub fn update_leads(sim: &Sim, req: &Req, path_id: Option<u64>) -> Reply {
    let items = match body_items(req, path_id.is_some()) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut w = sim.world();
    let mut plans = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let r = rid(it, i);
        let Some(id) = path_id.or_else(|| uint(&it["id"])) else {
            return validation(&r, "NotBlank", "id", "This value should not be blank.");
        };
        let Some(deal) = w.deals.get(&id) else {
            return not_found(&format!("Lead {id}"));
        };
        let stage = match uint(&it["status_id"]) {
            Some(s) => {
                let pipeline =
                    uint(&it["pipeline_id"]).or(Some(AMO_PIPELINE_BASE + deal.pipeline_id));
                match resolve_stage(&w, s, pipeline) {
                    Some(x) => Some(x),
                    None => {
                        return validation(
                            &r,
                            "NotSupportedChoice",
                            "status_id",
                            "The value you selected is not a valid choice.",
                        );
                    }
                }
            }
            None => None,
        };
        if let Some(lr) = uint(&it["loss_reason_id"])
            && sim.amo.reason_name(lr).is_none()
        {
            return validation(
                &r,
                "NotSupportedChoice",
                "loss_reason_id",
                "The value you selected is not a valid choice.",
            );
        }
        plans.push((r, id, stage));
    }
    let now = Utc::now();
    let mut out = Vec::new();
    for (it, (r, id, stage)) in items.iter().zip(plans) {
        let kind_of = |w: &World, s: u64| w.stage(s).map_or(StageKind::Open, |(_, st)| st.kind);
        let new_kind = stage.map(|(_, s)| kind_of(&w, s));
        let old_status = w
            .deals
            .get(&id)
            .map(|d| (status_id(&w, d.stage_id), d.pipeline_id));
        let new_status = stage.map(|(p, s)| (status_id(&w, s), p));
        let Some(d) = w.deals.get_mut(&id) else {
            continue;
        };
        let at = now.timestamp();
        let by = d.responsible_id;
        let log = |kind: &str, after: Value, before: Value| {
            sim.amo
                .log_event(kind, "lead", id, ("lead", id), by, at, after, before);
        };
        if let Some(n) = it["name"].as_str()
            && d.title != n
        {
            log(
                "name_field_changed",
                json!([{"name_field_value": {"name": n}}]),
                json!([{"name_field_value": {"name": d.title}}]),
            );
            d.title = n.to_string();
        }
        if let Some(p) = it["price"].as_f64()
            && d.amount != p
        {
            log(
                "sale_field_changed",
                json!([{"sale_field_value": {"sale": p}}]),
                json!([{"sale_field_value": {"sale": d.amount}}]),
            );
            d.amount = p;
        }
        if let Some(u) = uint(&it["responsible_user_id"])
            && d.responsible_id != u
        {
            log(
                "entity_responsible_changed",
                json!([{"responsible_user": {"id": u}}]),
                json!([{"responsible_user": {"id": d.responsible_id}}]),
            );
            d.responsible_id = u;
        }
        if let Some(t) = tag_names(it) {
            log_tags(&log, &d.tags, &t);
            d.tags = t;
        }
        if let Some(lr) = uint(&it["loss_reason_id"]) {
            d.loss_reason = sim.amo.reason_name(lr);
        }
        if let (Some((p, s)), Some(kind)) = (stage, new_kind) {
            d.pipeline_id = p;
            d.stage_id = s;
            d.closed_at = match kind {
                StageKind::Open => None,
                _ => Some(d.closed_at.unwrap_or(now)),
            };
            if let (Some((os, op)), Some((ns, np))) = (old_status, new_status)
                && (os, op) != (ns, np)
            {
                log(
                    "lead_status_changed",
                    json!([{"lead_status": {"id": ns, "pipeline_id": AMO_PIPELINE_BASE + np}}]),
                    json!([{"lead_status": {"id": os, "pipeline_id": AMO_PIPELINE_BASE + op}}]),
                );
            }
        }
        d.updated_at = now;
        out.push(
            json!({"id": id, "updated_at": now.timestamp(), "request_id": r,
            "_links": {"self": {"href": format!("{}/api/v4/leads/{id}", req.base)}}}),
        );
    }
    if path_id.is_some() {
        return Reply::Hal(
            StatusCode::OK,
            out.into_iter().next().unwrap_or(Value::Null),
        );
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_links": {"self": {"href": format!("{}/api/v4/leads", req.base)}},
               "_embedded": {"leads": out}}),
    )
}

fn field_values(item: &Value, code: &str) -> Vec<String> {
    item["custom_fields_values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|cf| cf["field_code"].as_str() == Some(code))
        .flat_map(|cf| cf["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v["value"].as_str().map(str::to_string))
        .collect()
}

pub fn create_contacts(sim: &Sim, req: &Req) -> Reply {
    let items = match body_items(req, false) {
        Ok(i) => i,
        Err(r) => return r,
    };
    for (i, it) in items.iter().enumerate() {
        if it["name"].is_null() && it["first_name"].is_null() && it["last_name"].is_null() {
            return validation(
                &rid(it, i),
                "NotBlank",
                "name",
                "This value should not be blank.",
            );
        }
    }
    let mut w = sim.world();
    let now = Utc::now();
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let id = w.next_id();
        let (first, last) = match (it["first_name"].as_str(), it["last_name"].as_str()) {
            (None, None) => {
                let name = it["name"].as_str().unwrap_or("");
                match name.split_once(' ') {
                    Some((a, b)) => (a.to_string(), b.to_string()),
                    None => (name.to_string(), String::new()),
                }
            }
            (a, b) => (a.unwrap_or("").to_string(), b.unwrap_or("").to_string()),
        };
        let contact = SimContact {
            id,
            first_name: first,
            last_name: last,
            phones: field_values(it, "PHONE"),
            emails: field_values(it, "EMAIL"),
            company_id: None,
            responsible_id: uint(&it["responsible_user_id"]).unwrap_or_else(|| first_user(&w)),
            tags: tag_names(it).unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        w.contacts.insert(id, contact);
        out.push(json!({"id": id, "request_id": rid(it, i),
            "_links": {"self": {"href": format!("{}/api/v4/contacts/{id}", req.base)}}}));
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_links": {"self": {"href": format!("{}/api/v4/contacts", req.base)}},
               "_embedded": {"contacts": out}}),
    )
}

fn owner_of(entity_type: &str) -> Option<Owner> {
    match entity_type {
        "leads" => Some(Owner::Deal),
        "contacts" => Some(Owner::Contact),
        "companies" => Some(Owner::Company),
        _ => None,
    }
}

fn exists(w: &World, o: Owner, id: u64) -> bool {
    match o {
        Owner::Deal => w.deals.contains_key(&id),
        Owner::Contact => w.contacts.contains_key(&id),
        Owner::Company => w.companies.contains_key(&id),
        Owner::Lead => w.leads.contains_key(&id),
    }
}

pub fn create_tasks(sim: &Sim, req: &Req) -> Reply {
    let items = match body_items(req, false) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut w = sim.world();
    let mut plans = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let r = rid(it, i);
        let Some(text) = it["text"].as_str().filter(|t| !t.is_empty()) else {
            return validation(&r, "NotBlank", "text", "This value should not be blank.");
        };
        let Some(till) = time(&it["complete_till"]) else {
            return validation(
                &r,
                "NotBlank",
                "complete_till",
                "This value should not be blank.",
            );
        };
        let binding = match (it["entity_type"].as_str(), uint(&it["entity_id"])) {
            (Some(t), Some(id)) => match owner_of(t) {
                Some(o) if exists(&w, o, id) => Some((o, id)),
                _ => {
                    return validation(
                        &r,
                        "NotSupportedChoice",
                        "entity_id",
                        "The entity does not exist.",
                    );
                }
            },
            _ => None,
        };
        plans.push((r, text.to_string(), till, binding));
    }
    let now = Utc::now();
    let mut out = Vec::new();
    for (it, (r, text, till, binding)) in items.iter().zip(plans) {
        let id = w.next_id();
        let resp = uint(&it["responsible_user_id"]).unwrap_or_else(|| first_user(&w));
        w.tasks.insert(
            id,
            SimTask {
                id,
                title: text,
                description: String::new(),
                responsible_id: resp,
                created_by: uint(&it["created_by"]).unwrap_or(0),
                deadline: Some(till),
                completed: it["is_completed"].as_bool().unwrap_or(false),
                result: None,
                binding,
                created_at: now,
                updated_at: now,
                closed_at: None,
            },
        );
        out.push(json!({"id": id, "request_id": r,
            "_links": {"self": {"href": format!("{}/api/v4/tasks/{id}", req.base)}}}));
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_links": {"self": {"href": format!("{}/api/v4/tasks", req.base)}},
               "_embedded": {"tasks": out}}),
    )
}

pub fn update_tasks(sim: &Sim, req: &Req, path_id: Option<u64>) -> Reply {
    let items = match body_items(req, path_id.is_some()) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut w = sim.world();
    for (i, it) in items.iter().enumerate() {
        let Some(id) = path_id.or_else(|| uint(&it["id"])) else {
            return validation(
                &rid(it, i),
                "NotBlank",
                "id",
                "This value should not be blank.",
            );
        };
        if !w.tasks.contains_key(&id) {
            return not_found(&format!("Task {id}"));
        }
    }
    let now = Utc::now();
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let id = path_id.or_else(|| uint(&it["id"])).unwrap_or(0);
        let Some(t) = w.tasks.get_mut(&id) else {
            continue;
        };
        if let Some(text) = it["text"].as_str() {
            t.title = text.to_string();
            t.description.clear();
        }
        if let Some(till) = time(&it["complete_till"]) {
            t.deadline = Some(till);
        }
        let (ent, eid) = t.binding.map_or(("task", t.id), |(o, x)| {
            (super::render::entity_singular(o), x)
        });
        let at = now.timestamp();
        if let Some(u) = uint(&it["responsible_user_id"])
            && t.responsible_id != u
        {
            sim.amo.log_event(
                "entity_responsible_changed",
                "task",
                id,
                ("task", id),
                t.responsible_id,
                at,
                json!([{"responsible_user": {"id": u}}]),
                json!([{"responsible_user": {"id": t.responsible_id}}]),
            );
            t.responsible_id = u;
        }
        if let Some(r) = it["result"]["text"].as_str() {
            t.result = Some(r.to_string());
        }
        if let Some(done) = it["is_completed"].as_bool() {
            if done && !t.completed {
                t.closed_at = Some(now);
                sim.amo.log_event(
                    "task_completed",
                    ent,
                    eid,
                    ("task", id),
                    t.responsible_id,
                    at,
                    json!([{"task": {"id": id, "result": t.result}}]),
                    json!([]),
                );
            }
            if !done {
                t.closed_at = None;
            }
            t.completed = done;
        }
        t.updated_at = now;
        out.push(
            json!({"id": id, "updated_at": now.timestamp(), "request_id": rid(it, i),
            "_links": {"self": {"href": format!("{}/api/v4/tasks/{id}", req.base)}}}),
        );
    }
    if path_id.is_some() {
        return Reply::Hal(
            StatusCode::OK,
            out.into_iter().next().unwrap_or(Value::Null),
        );
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_links": {"self": {"href": format!("{}/api/v4/tasks", req.base)}},
               "_embedded": {"tasks": out}}),
    )
}

pub fn create_notes(sim: &Sim, req: &Req, entity: &str, path_id: Option<u64>) -> Reply {
    let items = match body_items(req, false) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Some(owner) = owner_of(entity) else {
        return problem(StatusCode::NOT_FOUND, "Unknown entity");
    };
    let mut w = sim.world();
    for (i, it) in items.iter().enumerate() {
        let r = rid(it, i);
        let Some(eid) = path_id.or_else(|| uint(&it["entity_id"])) else {
            return validation(
                &r,
                "NotBlank",
                "entity_id",
                "This value should not be blank.",
            );
        };
        let held = eid
            .checked_sub(super::render::PENDING_LEAD_BASE)
            .is_some_and(|item| w.leads.contains_key(&item));
        if !(exists(&w, owner, eid)
            || (owner == Owner::Deal && (held || w.leads.contains_key(&eid))))
        {
            return validation(&r, "NotFound", "entity_id", "The entity does not exist.");
        }
        match it["note_type"].as_str() {
            Some("common") if it["params"]["text"].is_string() => {}
            Some("call_in" | "call_out") if it["params"]["phone"].is_string() => {}
            Some("common" | "call_in" | "call_out") => {
                return validation(&r, "NotBlank", "params", "Required params are missing.");
            }
            _ => {
                return validation(
                    &r,
                    "NotSupportedChoice",
                    "note_type",
                    "The value you selected is not a valid choice.",
                );
            }
        }
    }
    let now = Utc::now();
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let mut eid = path_id.or_else(|| uint(&it["entity_id"])).unwrap_or(0);
        // The lead a pending unsorted item holds: the note belongs to that item.
        let owner = if owner == Owner::Deal && !w.deals.contains_key(&eid) {
            if let Some(item) = eid.checked_sub(super::render::PENDING_LEAD_BASE)
                && w.leads.contains_key(&item)
            {
                eid = item;
            }
            Owner::Lead
        } else {
            owner
        };
        let p = &it["params"];
        let id = if it["note_type"] == "common" {
            w.comments.push((
                owner,
                eid,
                p["text"].as_str().unwrap_or("").to_string(),
                now,
            ));
            COMMENT_NOTE_BASE + (w.comments.len() - 1) as u64
        } else {
            let resp = uint(&it["responsible_user_id"])
                .or_else(|| uint(&p["call_responsible"]))
                .unwrap_or_else(|| first_user(&w));
            let id = w.next_id();
            w.activities.insert(
                id,
                SimActivity {
                    id,
                    kind: ActivityType::Call,
                    direction: if it["note_type"] == "call_in" {
                        Dir::In
                    } else {
                        Dir::Out
                    },
                    subject: "Звонок".into(),
                    owner: (owner, eid),
                    responsible_id: resp,
                    phone: p["phone"].as_str().map(str::to_string),
                    duration_s: p["duration"].as_i64().unwrap_or(0),
                    completed: true,
                    external_id: p["uniq"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                    start: time(&it["created_at"]).unwrap_or(now),
                    created_at: now,
                    updated_at: now,
                },
            );
            id
        };
        touch(&mut w, owner, eid, now);
        out.push(json!({"id": id, "entity_id": eid, "request_id": rid(it, i),
            "_links": {"self": {"href": format!("{}/api/v4/{entity}/{eid}/notes/{id}", req.base)}}}));
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_links": {"self": {"href": format!("{}/api/v4/{entity}/notes", req.base)}},
               "_embedded": {"notes": out}}),
    )
}

fn touch(w: &mut World, o: Owner, id: u64, now: chrono::DateTime<Utc>) {
    match o {
        Owner::Deal => {
            if let Some(d) = w.deals.get_mut(&id) {
                d.updated_at = now;
            }
        }
        Owner::Contact => {
            if let Some(c) = w.contacts.get_mut(&id) {
                c.updated_at = now;
            }
        }
        Owner::Company => {
            if let Some(c) = w.companies.get_mut(&id) {
                c.updated_at = now;
            }
        }
        Owner::Lead => {}
    }
}

/// `POST /api/v4/calls`: attaches each call to the record that owns its phone; calls whose phone
/// matches nobody are not created and come back in `_embedded.errors`.
pub fn calls(sim: &Sim, req: &Req) -> Reply {
    let items = match body_items(req, false) {
        Ok(i) => i,
        Err(r) => return r,
    };
    for (i, it) in items.iter().enumerate() {
        let r = rid(it, i);
        if !matches!(it["direction"].as_str(), Some("inbound" | "outbound")) {
            return validation(
                &r,
                "NotSupportedChoice",
                "direction",
                "The value you selected is not a valid choice.",
            );
        }
        if it["duration"].as_i64().is_none() {
            return validation(
                &r,
                "NotBlank",
                "duration",
                "This value should not be blank.",
            );
        }
        if it["source"].as_str().is_none_or(str::is_empty) {
            return validation(&r, "NotBlank", "source", "This value should not be blank.");
        }
    }
    let mut w = sim.world();
    let now = Utc::now();
    let mut created = Vec::new();
    let mut errors = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let r = rid(it, i);
        // A call already logged with this uniq is answered, not logged twice.
        if let Some(uniq) = it["uniq"].as_str().filter(|u| !u.is_empty())
            && let Some(a) = w
                .activities
                .values()
                .find(|a| a.kind == ActivityType::Call && a.external_id.as_deref() == Some(uniq))
        {
            created.push(json!({"id": a.id, "entity_id": a.owner.1,
                                "entity_type": entity_plural(a.owner.0), "request_id": r}));
            continue;
        }
        let phone = it["phone"].as_str().unwrap_or("");
        let owners: Vec<(Owner, u64)> = w
            .find_by_phone(phone)
            .into_iter()
            .filter(|(o, _)| matches!(o, Owner::Contact | Owner::Company))
            .collect();
        let Some(&(o, oid)) = owners.first().filter(|_| !phone.is_empty()) else {
            errors.push(json!({"request_id": r, "code": "EntityNotFound",
                               "detail": "No contact or company has this phone number"}));
            continue;
        };
        // A single open deal of that contact/company takes the call.
        let open: Vec<u64> = w
            .deals
            .values()
            .filter(|d| match o {
                Owner::Contact => d.contact_id == Some(oid),
                _ => d.company_id == Some(oid),
            })
            .filter(|d| {
                w.stage(d.stage_id)
                    .is_some_and(|(_, s)| s.kind == StageKind::Open)
            })
            .map(|d| d.id)
            .collect();
        let owner = if open.len() == 1 {
            (Owner::Deal, open[0])
        } else {
            (o, oid)
        };
        let resp = uint(&it["responsible_user_id"])
            .or_else(|| uint(&it["call_responsible"]))
            .unwrap_or_else(|| first_user(&w));
        let id = w.next_id();
        let start = time(&it["created_at"]).unwrap_or(now);
        w.activities.insert(
            id,
            SimActivity {
                id,
                kind: ActivityType::Call,
                direction: if it["direction"] == "inbound" {
                    Dir::In
                } else {
                    Dir::Out
                },
                subject: it["call_result"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("Звонок")
                    .to_string(),
                owner,
                responsible_id: resp,
                phone: Some(phone.to_string()),
                duration_s: it["duration"].as_i64().unwrap_or(0),
                completed: true,
                external_id: it["uniq"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                start,
                created_at: now,
                updated_at: now,
            },
        );
        touch(&mut w, owner.0, owner.1, now);
        // The answer parameters of the "add calls" page
        // (https://developers.kommo.com/reference/add-calls): the note id, the entity it went
        // to, the account, the request id and the entity model under `_embedded`.
        created.push(json!({"id": id, "entity_id": owner.1,
                            "entity_type": entity_plural(owner.0), "account_id": super::ACCOUNT_ID,
                            "request_id": r, "_embedded": {"entity": {"id": owner.1}}}));
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_links": {"self": {"href": format!("{}/api/v4/calls", req.base)}},
               "_embedded": {"calls": created, "errors": errors}}),
    )
}

/// Values of a custom field by `field_code` on a request item (PHONE, EMAIL, UTM_SOURCE...).
fn first_field(item: &Value, code: &str) -> Option<String> {
    field_values(item, code).into_iter().next()
}

/// The first call metadata field of the unsorted page's "add call" example
/// (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api#unsorted-add-sip) that
/// is missing or blank. `link` may be left out (a call without a recording); the phone may be a
/// number, as in the example.
fn missing_call_metadata(m: &Value) -> Option<&'static str> {
    let blank = |v: &Value| match v {
        Value::String(s) => s.trim().is_empty(),
        Value::Number(_) => false,
        _ => true,
    };
    [
        ("from", "metadata.from"),
        ("phone", "metadata.phone"),
        ("called_at", "metadata.called_at"),
        ("duration", "metadata.duration"),
        ("service_code", "metadata.service_code"),
        ("uniq", "metadata.uniq"),
    ]
    .into_iter()
    .find(|(k, _)| blank(&m[*k]))
    .map(|(_, path)| path)
    .or_else(|| {
        (!m["is_call_event_needed"].is_null() && !m["is_call_event_needed"].is_boolean())
            .then_some("metadata.is_call_event_needed")
    })
}

/// `POST /api/v4/leads/unsorted/{sip|forms}`: one world lead per item. The item's
/// `_embedded.leads[0]` gives the title, responsible and UTM fields (`UTM_SOURCE`,
/// `UTM_MEDIUM`, `UTM_CAMPAIGN`), `_embedded.contacts[0]` the person's name and phone.
pub fn unsorted_create(sim: &Sim, req: &Req, category: &str) -> Reply {
    let items = match body_items(req, false) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let sip = category == "sip";
    for (i, it) in items.iter().enumerate() {
        let r = rid(it, i);
        if it["source_uid"].as_str().is_none_or(str::is_empty) {
            return validation(
                &r,
                "NotBlank",
                "source_uid",
                "This value should not be blank.",
            );
        }
        if let Some(path) = sip
            .then(|| missing_call_metadata(&it["metadata"]))
            .flatten()
        {
            return validation(&r, "NotBlank", path, "This value should not be blank.");
        }
        if !sip && it["metadata"]["form_id"].as_str().is_none_or(str::is_empty) {
            return validation(
                &r,
                "NotBlank",
                "metadata.form_id",
                "This value should not be blank.",
            );
        }
    }
    let mut w = sim.world();
    let now = Utc::now();
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let id = w.next_id();
        let m = &it["metadata"];
        let lead = &it["_embedded"]["leads"][0];
        let contact = &it["_embedded"]["contacts"][0];
        let phone = match &m["phone"] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => first_field(contact, "PHONE"),
        };
        let resp = uint(&lead["responsible_user_id"])
            .or_else(|| uint(&m["call_responsible"]))
            .unwrap_or_else(|| first_user(&w));
        let name = contact["name"]
            .as_str()
            .or_else(|| m["from"].as_str())
            .unwrap_or("")
            .to_string();
        let title = lead["name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "{}: {}",
                    it["source_name"].as_str().unwrap_or("Заявка"),
                    phone.as_deref().unwrap_or("")
                )
            });
        w.leads.insert(
            id,
            crate::world::SimLead {
                id,
                title,
                name,
                phone,
                email: first_field(contact, "EMAIL"),
                source: if sip { "CALL" } else { "WEB" }.into(),
                status: LeadStatus::New,
                responsible_id: resp,
                contact_id: None,
                company_id: None,
                utm: crate::world::SimUtm {
                    source: first_field(lead, "UTM_SOURCE"),
                    medium: first_field(lead, "UTM_MEDIUM"),
                    campaign: first_field(lead, "UTM_CAMPAIGN"),
                },
                created_at: time(&it["created_at"]).unwrap_or(now),
                updated_at: now,
                closed_at: None,
            },
        );
        // The unsorted page's metadata table: `is_call_event_needed` "is not returned by the
        // API but may be passed; when true, an incoming call event is added to the card" — the
        // card of the item's lead, which keeps it once accepted (same id).
        if sip && m["is_call_event_needed"].as_bool() == Some(true) {
            let note = w.next_id();
            let card = super::render::PENDING_LEAD_BASE + id;
            let duration = m["duration"].as_i64().unwrap_or(0).max(0);
            let at = time(&m["called_at"]).unwrap_or(now);
            let phone = w.leads.get(&id).and_then(|l| l.phone.clone());
            w.activities.insert(
                note,
                SimActivity {
                    id: note,
                    kind: ActivityType::Call,
                    direction: Dir::In,
                    subject: "Входящий звонок".into(),
                    owner: (Owner::Deal, card),
                    responsible_id: resp,
                    phone,
                    duration_s: duration,
                    completed: true,
                    external_id: m["uniq"]
                        .as_str()
                        .filter(|u| !u.is_empty())
                        .map(str::to_string),
                    start: at,
                    created_at: now,
                    updated_at: now,
                },
            );
        }
        out.push(
            json!({"uid": format!("unsorted-{id}"), "request_id": rid(it, i),
                        "_embedded": {"leads": [{"id": super::render::PENDING_LEAD_BASE + id}],
                                      "contacts": []}}),
        );
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_total_items": out.len(), "_embedded": {"unsorted": out}}),
    )
}

/// `POST /api/v4/leads/loss_reasons`: `[{"name": ...}]`; an existing name keeps its id.
pub fn create_loss_reasons(sim: &Sim, req: &Req) -> Reply {
    let items = match body_items(req, false) {
        Ok(i) => i,
        Err(r) => return r,
    };
    for (i, it) in items.iter().enumerate() {
        if it["name"].as_str().is_none_or(|n| n.trim().is_empty()) {
            return validation(
                &rid(it, i),
                "NotBlank",
                "name",
                "This value should not be blank.",
            );
        }
    }
    let out: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let name = it["name"].as_str().unwrap_or("").trim();
            let id = sim.amo.reason_id(name);
            json!({"id": id, "name": name, "request_id": rid(it, i),
                   "_links": {"self": {"href": format!("{}/api/v4/leads/loss_reasons/{id}", req.base)}}})
        })
        .collect();
    Reply::Hal(StatusCode::OK, json!({"_embedded": {"loss_reasons": out}}))
}

/// `PATCH /api/v4/{contacts|companies}` (array) or `/{id}` (object): name, responsible, tags
/// (the list is replaced), PHONE/EMAIL custom fields.
pub fn update_people(sim: &Sim, req: &Req, entity: &str, path_id: Option<u64>) -> Reply {
    let items = match body_items(req, path_id.is_some()) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let contact = entity == "contacts";
    let singular = if contact { "contact" } else { "company" };
    let mut w = sim.world();
    for (i, it) in items.iter().enumerate() {
        let Some(id) = path_id.or_else(|| uint(&it["id"])) else {
            return validation(
                &rid(it, i),
                "NotBlank",
                "id",
                "This value should not be blank.",
            );
        };
        let found = if contact {
            w.contacts.contains_key(&id)
        } else {
            w.companies.contains_key(&id)
        };
        if !found {
            return not_found(&format!("{singular} {id}"));
        }
    }
    let now = Utc::now();
    let at = now.timestamp();
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let id = path_id.or_else(|| uint(&it["id"])).unwrap_or(0);
        let phones = it["custom_fields_values"]
            .is_array()
            .then(|| (field_values(it, "PHONE"), field_values(it, "EMAIL")));
        let (name, resp, tags, ph, em, upd) = if contact {
            let Some(c) = w.contacts.get_mut(&id) else {
                continue;
            };
            (
                c.full_name(),
                &mut c.responsible_id,
                &mut c.tags,
                &mut c.phones,
                &mut c.emails,
                &mut c.updated_at,
            )
        } else {
            let Some(c) = w.companies.get_mut(&id) else {
                continue;
            };
            (
                c.title.clone(),
                &mut c.responsible_id,
                &mut c.tags,
                &mut c.phones,
                &mut c.emails,
                &mut c.updated_at,
            )
        };
        let by = *resp;
        let log = |kind: &str, after: Value, before: Value| {
            sim.amo
                .log_event(kind, singular, id, (singular, id), by, at, after, before);
        };
        if let Some(u) = uint(&it["responsible_user_id"])
            && *resp != u
        {
            log(
                "entity_responsible_changed",
                json!([{"responsible_user": {"id": u}}]),
                json!([{"responsible_user": {"id": *resp}}]),
            );
            *resp = u;
        }
        if let Some(t) = tag_names(it) {
            log_tags(&log, tags, &t);
            *tags = t;
        }
        if let Some((p, e)) = phones {
            if !p.is_empty() {
                *ph = p;
            }
            if !e.is_empty() {
                *em = e;
            }
            log("custom_field_value_changed", json!([]), json!([]));
        }
        *upd = now;
        let new_name = it["name"].as_str().filter(|n| *n != name);
        if let Some(n) = new_name {
            log(
                "name_field_changed",
                json!([{"name_field_value": {"name": n}}]),
                json!([{"name_field_value": {"name": name}}]),
            );
            if contact {
                if let Some(c) = w.contacts.get_mut(&id) {
                    let (a, b) = n.split_once(' ').unwrap_or((n, ""));
                    c.first_name = a.to_string();
                    c.last_name = b.to_string();
                }
            } else if let Some(c) = w.companies.get_mut(&id) {
                c.title = n.to_string();
            }
        }
        out.push(json!({"id": id, "updated_at": at, "request_id": rid(it, i),
            "_links": {"self": {"href": format!("{}/api/v4/{entity}/{id}", req.base)}}}));
    }
    if path_id.is_some() {
        return Reply::Hal(
            StatusCode::OK,
            out.into_iter().next().unwrap_or(Value::Null),
        );
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_links": {"self": {"href": format!("{}/api/v4/{entity}", req.base)}},
               "_embedded": {entity: out}}),
    )
}

pub fn unsorted_accept(sim: &Sim, req: &Req, uid: &str) -> Reply {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(json!({}));
    let mut w = sim.world();
    let Some(id) = uid_to_id(uid).filter(|id| {
        w.leads
            .get(id)
            .is_some_and(|l| matches!(l.status, LeadStatus::New | LeadStatus::InProcess))
    }) else {
        return not_found(&format!("Unsorted {uid}"));
    };
    let default_p = w
        .pipelines
        .iter()
        .find(|p| p.is_default)
        .map_or(0, |p| p.id);
    let (pipeline_id, stage_id) = match uint(&body["status_id"]) {
        Some(s) => match resolve_stage(&w, s, None) {
            Some(x) => x,
            None => {
                return validation(
                    "0",
                    "NotSupportedChoice",
                    "status_id",
                    "The value you selected is not a valid choice.",
                );
            }
        },
        None => match w.stage_of_kind(default_p, StageKind::Open) {
            Some(s) => (default_p, s.id),
            None => return problem(StatusCode::BAD_REQUEST, "No open status"),
        },
    };
    let now = Utc::now();
    // The lead the item held from creation moves on (same id), out of the unsorted status.
    let deal_id = super::render::PENDING_LEAD_BASE + id;
    let Some(l) = w.leads.get_mut(&id) else {
        return not_found(uid);
    };
    l.status = LeadStatus::Converted;
    l.closed_at = Some(now);
    l.updated_at = now;
    let user = uint(&body["user_id"]).unwrap_or(l.responsible_id);
    let deal = SimDeal {
        id: deal_id,
        title: l.title.clone(),
        pipeline_id,
        stage_id,
        amount: 0.0,
        responsible_id: user,
        contact_id: l.contact_id,
        company_id: l.company_id,
        lead_id: Some(id),
        source: l.source.clone(),
        tags: vec![],
        loss_reason: None,
        created_at: now,
        updated_at: now,
        closed_at: None,
    };
    w.deals.insert(deal_id, deal);
    Reply::Hal(
        StatusCode::OK,
        json!({"uid": uid, "account_id": super::ACCOUNT_ID,
               "_embedded": {"leads": [{"id": deal_id}], "contacts": []}}),
    )
}

pub fn unsorted_decline(sim: &Sim, uid: &str) -> Reply {
    let mut w = sim.world();
    let pipeline = AMO_PIPELINE_BASE
        + w.pipelines
            .iter()
            .find(|p| p.is_default)
            .map_or(0, |p| p.id);
    let Some(l) = uid_to_id(uid).and_then(|id| {
        w.leads
            .get_mut(&id)
            .filter(|l| matches!(l.status, LeadStatus::New | LeadStatus::InProcess))
    }) else {
        return not_found(&format!("Unsorted {uid}"));
    };
    let now = Utc::now();
    l.status = LeadStatus::Junk;
    l.closed_at = Some(now);
    l.updated_at = now;
    // The answer of the "declining incoming leads" page
    // (https://developers.kommo.com/reference/declining-incoming-leads): the item with its
    // category, pipeline, creation time and the contacts, companies and lead it held.
    let category = if l.source == "CALL" { "sip" } else { "forms" };
    let created = l.created_at.timestamp();
    let contacts: Vec<Value> = l.contact_id.map(|c| json!({"id": c})).into_iter().collect();
    let companies: Vec<Value> = l.company_id.map(|c| json!({"id": c})).into_iter().collect();
    let lead = super::render::PENDING_LEAD_BASE + l.id;
    Reply::Hal(
        StatusCode::OK,
        json!({"uid": uid, "category": category, "pipeline_id": pipeline,
               "created_at": created, "account_id": super::ACCOUNT_ID,
               "_embedded": {"contacts": contacts, "companies": companies,
                             "leads": [{"id": lead}]}}),
    )
}
