//! Write side of the amoCRM fake: leads, contacts, tasks, notes, calls and unsorted actions.
//! Every write mutates the shared world and stamps `updated_at`.

use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use super::render::{
    COMMENT_NOTE_BASE, LOST, UNSORTED_STATUS_BASE, WON, entity_plural, not_found, uid_to_id,
};
use super::{Reply, Req, problem, validation};
use crate::sim::Sim;
use crate::sim::world::{
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
        plans.push((r, id, stage));
    }
    let now = Utc::now();
    let mut out = Vec::new();
    for (it, (r, id, stage)) in items.iter().zip(plans) {
        let kind_of = |w: &World, s: u64| w.stage(s).map_or(StageKind::Open, |(_, st)| st.kind);
        let new_kind = stage.map(|(_, s)| kind_of(&w, s));
        let Some(d) = w.deals.get_mut(&id) else {
            continue;
        };
        if let Some(n) = it["name"].as_str() {
            d.title = n.to_string();
        }
        if let Some(p) = it["price"].as_f64() {
            d.amount = p;
        }
        if let Some(u) = uint(&it["responsible_user_id"]) {
            d.responsible_id = u;
        }
        if let Some(t) = tag_names(it) {
            d.tags = t;
        }
        if let (Some((p, s)), Some(kind)) = (stage, new_kind) {
            d.pipeline_id = p;
            d.stage_id = s;
            d.closed_at = match kind {
                StageKind::Open => None,
                _ => Some(d.closed_at.unwrap_or(now)),
            };
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
        if let Some(u) = uint(&it["responsible_user_id"]) {
            t.responsible_id = u;
        }
        if let Some(r) = it["result"]["text"].as_str() {
            t.result = Some(r.to_string());
        }
        if let Some(done) = it["is_completed"].as_bool() {
            if done && !t.completed {
                t.closed_at = Some(now);
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
        if !exists(&w, owner, eid) {
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
        let eid = path_id.or_else(|| uint(&it["entity_id"])).unwrap_or(0);
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
        created.push(json!({"id": id, "entity_id": owner.1,
                            "entity_type": entity_plural(owner.0), "request_id": r}));
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_links": {"self": {"href": format!("{}/api/v4/calls", req.base)}},
               "_embedded": {"calls": created, "errors": errors}}),
    )
}

pub fn unsorted_sip(sim: &Sim, req: &Req) -> Reply {
    let items = match body_items(req, false) {
        Ok(i) => i,
        Err(r) => return r,
    };
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
        if it["metadata"]["phone"].as_str().is_none() && it["metadata"]["phone"].as_u64().is_none()
        {
            return validation(
                &r,
                "NotBlank",
                "metadata.phone",
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
        let phone = m["phone"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| m["phone"].to_string());
        let resp = uint(&m["call_responsible"]).unwrap_or_else(|| first_user(&w));
        let name = m["from"].as_str().unwrap_or("").to_string();
        w.leads.insert(
            id,
            crate::sim::world::SimLead {
                id,
                title: it["source_name"]
                    .as_str()
                    .map_or_else(|| format!("Звонок от {phone}"), |s| format!("{s}: {phone}")),
                name,
                phone: Some(phone),
                email: None,
                source: "CALL".into(),
                status: LeadStatus::New,
                responsible_id: resp,
                contact_id: None,
                company_id: None,
                utm: Default::default(),
                created_at: time(&it["created_at"]).unwrap_or(now),
                updated_at: now,
                closed_at: None,
            },
        );
        out.push(
            json!({"uid": format!("unsorted-{id}"), "request_id": rid(it, i),
                        "_embedded": {"leads": [], "contacts": []}}),
        );
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_total_items": out.len(), "_embedded": {"unsorted": out}}),
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
    let deal_id = w.next_id();
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
    Reply::Hal(
        StatusCode::OK,
        json!({"uid": uid, "account_id": super::ACCOUNT_ID, "_embedded": {}}),
    )
}
