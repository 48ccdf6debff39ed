//! Read side of the amoCRM fake: HAL lists with filters, ordering and paging, and the renderers
//! that turn world records into amoCRM JSON.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ACCOUNT_ID, ACCOUNT_NAME, Reply, Req, SUBDOMAIN, problem, validation};
use crate::http::php_query;
use crate::sim::Sim;
use crate::sim::world::{
    AMO_PIPELINE_BASE, ActivityType, Dir, LeadStatus, Owner, SimActivity, SimCompany, SimContact,
    SimDeal, SimLead, SimTask, StageKind, World,
};

pub const WON: u64 = 142;
pub const LOST: u64 = 143;
/// Status id of a pipeline's "Неразобранное" column: base + world pipeline id.
pub const UNSORTED_STATUS_BASE: u64 = 6_000_000;
/// Note ids of common notes (world comments have no id): base + index in `world.comments`.
pub const COMMENT_NOTE_BASE: u64 = 800_000_000;
pub const PHONE_FIELD_ID: u64 = 101;
pub const EMAIL_FIELD_ID: u64 = 102;
const LOSS_REASON_BASE: u64 = 5_000;

pub fn ts(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp()
}

/// What a list endpoint allows.
pub struct ListSpec {
    pub key: &'static str,
    pub max_limit: usize,
    pub orders: &'static [&'static str],
}

const LEADS: ListSpec = ListSpec {
    key: "leads",
    max_limit: 250,
    orders: &["created_at", "updated_at", "id"],
};
const CONTACTS: ListSpec = ListSpec {
    key: "contacts",
    max_limit: 250,
    orders: &["updated_at", "id"],
};
const COMPANIES: ListSpec = ListSpec {
    key: "companies",
    max_limit: 250,
    orders: &["updated_at", "id"],
};
const TASKS: ListSpec = ListSpec {
    key: "tasks",
    max_limit: 250,
    orders: &["created_at", "complete_till", "id"],
};
const USERS: ListSpec = ListSpec {
    key: "users",
    max_limit: 250,
    orders: &["id"],
};
const EVENTS: ListSpec = ListSpec {
    key: "events",
    max_limit: 100,
    orders: &["created_at", "id"],
};
const NOTES: ListSpec = ListSpec {
    key: "notes",
    max_limit: 250,
    orders: &["updated_at", "id"],
};
const UNSORTED: ListSpec = ListSpec {
    key: "unsorted",
    max_limit: 250,
    orders: &["created_at", "updated_at"],
};

/// `filter[x]` as a list of strings (`x=1`, `x[]=1`, `x[0]=1`, `x=1,2`).
fn filter_list(v: &Value) -> Vec<String> {
    php_query::as_list(v)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .flat_map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// A range filter: `{from,to}`, `"from,to"` or a single `from`.
fn range(v: &Value) -> Result<(Option<i64>, Option<i64>), String> {
    let p = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| format!("{s:?} is not a unix timestamp"))
    };
    match v {
        Value::Object(m) => {
            let from = m.get("from").and_then(Value::as_str).map(p).transpose()?;
            let to = m.get("to").and_then(Value::as_str).map(p).transpose()?;
            Ok((from, to))
        }
        Value::String(s) => match s.split_once(',') {
            Some((a, b)) => Ok((Some(p(a)?), Some(p(b)?))),
            None => Ok((Some(p(s)?), None)),
        },
        _ => Err("unsupported range".into()),
    }
}

fn key_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Text and phones an item can be found by with `query=`.
fn matches_query(item: &Value, q: &str) -> bool {
    let ql = q.to_lowercase();
    if item["name"]
        .as_str()
        .is_some_and(|n| n.to_lowercase().contains(&ql))
    {
        return true;
    }
    let qd = digits(q);
    let qkey = World::phone_key(q);
    if let Some(cfs) = item["custom_fields_values"].as_array() {
        for cf in cfs {
            for v in cf["values"].as_array().into_iter().flatten() {
                let Some(val) = v["value"].as_str() else {
                    continue;
                };
                if val.to_lowercase().contains(&ql) {
                    return true;
                }
                if qd.len() >= 5 {
                    let vd = digits(val);
                    if vd.contains(&qd) || World::phone_key(val) == qkey {
                        return true;
                    }
                }
            }
        }
    }
    false
}

fn apply_filters(q: &Value, items: Vec<Value>) -> Result<Vec<Value>, Reply> {
    let mut items = items;
    if let Some(f) = q.get("filter").and_then(Value::as_object) {
        for (name, v) in f {
            let list_on = |field: &'static str, items: Vec<Value>| {
                let wanted = filter_list(v);
                items
                    .into_iter()
                    .filter(|i| wanted.contains(&key_str(&i[field])))
                    .collect::<Vec<_>>()
            };
            items = match name.as_str() {
                "id" => list_on("id", items),
                "responsible_user_id" => list_on("responsible_user_id", items),
                "entity_id" => list_on("entity_id", items),
                "entity_type" => list_on("entity_type", items),
                "entity" => list_on("entity_type", items),
                "type" => list_on("type", items),
                "note_type" => list_on("note_type", items),
                "pipeline_id" => list_on("pipeline_id", items),
                "category" => list_on("category", items),
                "uid" => list_on("uid", items),
                "created_by" => list_on("created_by", items),
                "is_completed" => {
                    let want = matches!(v.as_str(), Some("1" | "true"));
                    items
                        .into_iter()
                        .filter(|i| i["is_completed"].as_bool() == Some(want))
                        .collect()
                }
                "name" => {
                    let n = v.as_str().unwrap_or("").to_lowercase();
                    items
                        .into_iter()
                        .filter(|i| {
                            i["name"]
                                .as_str()
                                .is_some_and(|x| x.to_lowercase().contains(&n))
                        })
                        .collect()
                }
                field @ ("updated_at" | "created_at" | "closed_at" | "complete_till") => {
                    let (from, to) = range(v).map_err(|e| {
                        validation("0", "InvalidType", &format!("filter.{field}"), &e)
                    })?;
                    items
                        .into_iter()
                        .filter(|i| {
                            let Some(t) = i[field].as_i64() else {
                                return false;
                            };
                            from.is_none_or(|f| t >= f) && to.is_none_or(|x| t <= x)
                        })
                        .collect()
                }
                _ => items,
            };
        }
    }
    if let Some(query) = q.get("query").and_then(Value::as_str)
        && !query.trim().is_empty()
    {
        items.retain(|i| matches_query(i, query.trim()));
    }
    Ok(items)
}

fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => key_str(a).cmp(&key_str(b)),
    }
}

/// Filters, orders and pages `items`, and wraps them into the HAL envelope.
fn list(req: &Req, spec: &ListSpec, items: Vec<Value>) -> Reply {
    let q = &req.query;
    let limit = match q.get("limit").and_then(Value::as_str) {
        None => 50,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=spec.max_limit).contains(&n) => n,
            _ => {
                return validation(
                    "0",
                    "InvalidLimit",
                    "limit",
                    &format!("limit must be between 1 and {}", spec.max_limit),
                );
            }
        },
    };
    let page = match q.get("page").and_then(Value::as_str) {
        None => 1,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => return validation("0", "InvalidPage", "page", "page must be 1 or more"),
        },
    };
    let mut items = match apply_filters(q, items) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut order: Option<(String, bool)> = None;
    if let Some(o) = q.get("order").and_then(Value::as_object) {
        for (field, dir) in o {
            if !spec.orders.contains(&field.as_str()) {
                return validation(
                    "0",
                    "NotSupportedChoice",
                    &format!("order.{field}"),
                    &format!("Ordering by {field} is not supported here"),
                );
            }
            let desc = match dir.as_str() {
                Some("asc") => false,
                Some("desc") => true,
                _ => {
                    return validation(
                        "0",
                        "NotSupportedChoice",
                        &format!("order.{field}"),
                        "Order must be asc or desc",
                    );
                }
            };
            order = Some((field.clone(), desc));
        }
    }
    let id_field = if spec.key == "unsorted" { "uid" } else { "id" };
    let (field, desc) = order.unwrap_or_else(|| (id_field.to_string(), false));
    items.sort_by(|a, b| {
        let o =
            cmp_values(&a[&field], &b[&field]).then_with(|| cmp_values(&a[id_field], &b[id_field]));
        if desc { o.reverse() } else { o }
    });
    let start = (page - 1).saturating_mul(limit);
    if start >= items.len() {
        return Reply::Empty;
    }
    let has_next = items.len() > start + limit;
    let chunk: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    let href = |p: usize| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(req.raw_query.as_bytes()) {
            if k != "page" && k != "limit" {
                ser.append_pair(&k, &v);
            }
        }
        ser.append_pair("page", &p.to_string());
        ser.append_pair("limit", &limit.to_string());
        json!({"href": format!("{}{}?{}", req.base, req.path, ser.finish())})
    };
    let mut links = serde_json::Map::new();
    links.insert("self".into(), href(page));
    if has_next {
        links.insert("next".into(), href(page + 1));
    }
    if page > 1 {
        links.insert("prev".into(), href(page - 1));
    }
    Reply::Hal(
        StatusCode::OK,
        json!({"_page": page, "_links": links, "_embedded": {spec.key: chunk}}),
    )
}

fn with(req: &Req) -> Vec<String> {
    req.query.get("with").map(filter_list).unwrap_or_default()
}

fn self_link(base: &str, path: &str, id: impl std::fmt::Display) -> Value {
    json!({"self": {"href": format!("{base}/api/v4/{path}/{id}")}})
}

fn tag_id(name: &str) -> u64 {
    name.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    }) % 1_000_000
}

fn tags(names: &[String]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"id": tag_id(n), "name": n, "color": null}))
            .collect(),
    )
}

/// Phones and emails as multitext custom fields; null when there are none.
pub fn contact_fields(phones: &[String], emails: &[String]) -> Value {
    let mut out = Vec::new();
    if !phones.is_empty() {
        let values: Vec<Value> = phones
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (enum_id, code) = if i == 0 { (201, "WORK") } else { (202, "MOB") };
                json!({"value": p, "enum_id": enum_id, "enum_code": code})
            })
            .collect();
        out.push(
            json!({"field_id": PHONE_FIELD_ID, "field_name": "Телефон", "field_code": "PHONE",
                        "field_type": "multitext", "values": values}),
        );
    }
    if !emails.is_empty() {
        let values: Vec<Value> = emails
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (enum_id, code) = if i == 0 { (301, "WORK") } else { (302, "PRIV") };
                json!({"value": e, "enum_id": enum_id, "enum_code": code})
            })
            .collect();
        out.push(
            json!({"field_id": EMAIL_FIELD_ID, "field_name": "Email", "field_code": "EMAIL",
                        "field_type": "multitext", "values": values}),
        );
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Array(out)
    }
}

fn loss_reasons(w: &World) -> BTreeMap<String, u64> {
    let mut names: Vec<&String> = w
        .deals
        .values()
        .filter_map(|d| d.loss_reason.as_ref())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), LOSS_REASON_BASE + i as u64))
        .collect()
}

/// A world stage id rendered as an amoCRM status id (142/143 for won/lost).
pub fn status_id(w: &World, stage_id: u64) -> u64 {
    match w.stage(stage_id).map(|(_, s)| s.kind) {
        Some(StageKind::Won) => WON,
        Some(StageKind::Lost) => LOST,
        _ => stage_id,
    }
}

fn deal_json(
    w: &World,
    d: &SimDeal,
    base: &str,
    with: &[String],
    reasons: &BTreeMap<String, u64>,
) -> Value {
    let status = status_id(w, d.stage_id);
    let loss_id = (status == LOST)
        .then(|| d.loss_reason.as_ref().and_then(|r| reasons.get(r)))
        .flatten();
    let mut emb = serde_json::Map::new();
    emb.insert("tags".into(), tags(&d.tags));
    emb.insert(
        "companies".into(),
        Value::Array(d.company_id.map(|c| json!({"id": c})).into_iter().collect()),
    );
    if with.iter().any(|x| x == "contacts") {
        emb.insert(
            "contacts".into(),
            Value::Array(
                d.contact_id
                    .map(|c| json!({"id": c, "is_main": true, "_links": self_link(base, "contacts", c)}))
                    .into_iter()
                    .collect(),
            ),
        );
    }
    if with.iter().any(|x| x == "loss_reason") {
        emb.insert(
            "loss_reason".into(),
            Value::Array(
                loss_id
                    .map(|id| json!({"id": id, "name": d.loss_reason}))
                    .into_iter()
                    .collect(),
            ),
        );
    }
    json!({
        "id": d.id, "name": d.title, "price": d.amount.round() as i64,
        "responsible_user_id": d.responsible_id, "group_id": 0, "status_id": status,
        "pipeline_id": AMO_PIPELINE_BASE + d.pipeline_id, "loss_reason_id": loss_id,
        "source_id": null, "created_by": 0, "updated_by": 0,
        "created_at": ts(d.created_at), "updated_at": ts(d.updated_at),
        "closed_at": d.closed_at.map(ts), "closest_task_at": null, "is_deleted": false,
        "custom_fields_values": null, "score": null, "account_id": ACCOUNT_ID,
        "labor_cost": null,
        "_links": self_link(base, "leads", d.id), "_embedded": emb,
    })
}

fn contact_json(w: &World, c: &SimContact, base: &str, with: &[String]) -> Value {
    let mut emb = serde_json::Map::new();
    emb.insert("tags".into(), tags(&c.tags));
    emb.insert(
        "companies".into(),
        Value::Array(
            c.company_id
                .map(|x| json!({"id": x, "_links": self_link(base, "companies", x)}))
                .into_iter()
                .collect(),
        ),
    );
    if with.iter().any(|x| x == "leads") {
        emb.insert(
            "leads".into(),
            Value::Array(
                w.deals
                    .values()
                    .filter(|d| d.contact_id == Some(c.id))
                    .map(|d| json!({"id": d.id, "_links": self_link(base, "leads", d.id)}))
                    .collect(),
            ),
        );
    }
    json!({
        "id": c.id, "name": c.full_name(), "first_name": c.first_name, "last_name": c.last_name,
        "responsible_user_id": c.responsible_id, "group_id": 0, "created_by": 0, "updated_by": 0,
        "created_at": ts(c.created_at), "updated_at": ts(c.updated_at),
        "closest_task_at": null, "is_deleted": false, "is_unsorted": false,
        "custom_fields_values": contact_fields(&c.phones, &c.emails), "account_id": ACCOUNT_ID,
        "_links": self_link(base, "contacts", c.id), "_embedded": emb,
    })
}

fn company_json(c: &SimCompany, base: &str) -> Value {
    json!({
        "id": c.id, "name": c.title, "responsible_user_id": c.responsible_id, "group_id": 0,
        "created_by": 0, "updated_by": 0, "created_at": ts(c.created_at),
        "updated_at": ts(c.updated_at), "closest_task_at": null, "is_deleted": false,
        "custom_fields_values": contact_fields(&c.phones, &c.emails), "account_id": ACCOUNT_ID,
        "_links": self_link(base, "companies", c.id),
        "_embedded": {"tags": tags(&c.tags)},
    })
}

/// amoCRM entity type (plural, as tasks and notes name it) of a world owner.
pub fn entity_plural(o: Owner) -> Option<&'static str> {
    match o {
        Owner::Deal => Some("leads"),
        Owner::Contact => Some("contacts"),
        Owner::Company => Some("companies"),
        Owner::Lead => None,
    }
}

fn entity_singular(o: Owner) -> &'static str {
    match o {
        Owner::Deal => "lead",
        Owner::Contact => "contact",
        Owner::Company => "company",
        Owner::Lead => "unsorted",
    }
}

pub fn task_text(t: &SimTask) -> String {
    if t.description.is_empty() {
        t.title.clone()
    } else {
        format!("{}\n{}", t.title, t.description)
    }
}

fn task_json(t: &SimTask, base: &str) -> Value {
    let (etype, eid) = match t
        .binding
        .and_then(|(o, id)| entity_plural(o).map(|p| (p, id)))
    {
        Some((p, id)) => (json!(p), json!(id)),
        None => (Value::Null, Value::Null),
    };
    json!({
        "id": t.id, "created_by": t.created_by, "updated_by": t.created_by,
        "created_at": ts(t.created_at), "updated_at": ts(t.updated_at),
        "responsible_user_id": t.responsible_id, "group_id": 0,
        "entity_id": eid, "entity_type": etype, "duration": 0,
        "is_completed": t.completed, "task_type_id": 1, "text": task_text(t),
        "result": t.result.as_ref().map_or(json!([]), |r| json!({"text": r})),
        "complete_till": ts(t.deadline.unwrap_or(t.created_at)),
        "account_id": ACCOUNT_ID, "_links": self_link(base, "tasks", t.id),
    })
}

fn call_note_json(a: &SimActivity, base: &str) -> Option<Value> {
    if a.kind != ActivityType::Call {
        return None;
    }
    let ent = entity_plural(a.owner.0)?;
    let note_type = match a.direction {
        Dir::In => "call_in",
        Dir::Out => "call_out",
    };
    Some(json!({
        "id": a.id, "entity_id": a.owner.1, "created_by": a.responsible_id,
        "updated_by": a.responsible_id, "created_at": ts(a.created_at),
        "updated_at": ts(a.updated_at), "responsible_user_id": a.responsible_id, "group_id": 0,
        "note_type": note_type,
        "params": {
            "uniq": a.external_id.clone().unwrap_or_default(), "duration": a.duration_s,
            "source": "sim-telephony", "link": null, "phone": a.phone.clone().unwrap_or_default(),
            "call_result": a.subject, "call_status": if a.duration_s > 0 { 4 } else { 6 },
            "call_responsible": a.responsible_id,
        },
        "account_id": ACCOUNT_ID,
        "_links": {"self": {"href": format!("{base}/api/v4/{ent}/{}/notes/{}", a.owner.1, a.id)}},
    }))
}

fn unsorted_uid(id: u64) -> String {
    format!("unsorted-{id}")
}

pub fn uid_to_id(uid: &str) -> Option<u64> {
    uid.strip_prefix("unsorted-")?.parse().ok()
}

fn unsorted_json(w: &World, l: &SimLead, base: &str) -> Value {
    let default_pipeline = w
        .pipelines
        .iter()
        .find(|p| p.is_default)
        .map_or(0, |p| p.id);
    let sip = l.source == "CALL";
    let metadata = if sip {
        json!({"from": l.name, "phone": l.phone, "called_at": ts(l.created_at), "duration": 0,
               "link": null, "service_code": "sim-telephony", "uniq": format!("sim-call-{}", l.id),
               "call_responsible": l.responsible_id, "is_call_event_needed": true})
    } else {
        let mut referer = url::form_urlencoded::Serializer::new(String::new());
        if let Some(s) = &l.utm.source {
            referer.append_pair("utm_source", s);
        }
        if let Some(s) = &l.utm.medium {
            referer.append_pair("utm_medium", s);
        }
        if let Some(s) = &l.utm.campaign {
            referer.append_pair("utm_campaign", s);
        }
        json!({"form_id": "sim-form", "form_name": l.title, "form_page": "https://example.ru/",
               "ip": "127.0.0.1", "form_sent_at": ts(l.created_at),
               "referer": format!("https://example.ru/?{}", referer.finish())})
    };
    let accepted: Vec<Value> = if l.status == LeadStatus::Converted {
        w.deals
            .values()
            .filter(|d| d.lead_id == Some(l.id))
            .map(|d| json!({"id": d.id, "name": d.title, "_links": self_link(base, "leads", d.id)}))
            .collect()
    } else {
        Vec::new()
    };
    let mut contacts: Vec<Value> = Vec::new();
    if let Some(c) = l.contact_id {
        contacts.push(json!({"id": c, "_links": self_link(base, "contacts", c)}));
    } else if l.phone.is_some() || l.email.is_some() {
        // An unsorted item carries the contact it would create on accept.
        let phones: Vec<String> = l.phone.iter().cloned().collect();
        let emails: Vec<String> = l.email.iter().cloned().collect();
        contacts.push(json!({"id": null, "name": l.name,
                             "custom_fields_values": contact_fields(&phones, &emails)}));
    }
    json!({
        "uid": unsorted_uid(l.id), "source_uid": format!("sim-{}", l.source.to_lowercase()),
        "source_name": if sip { "Телефония" } else { "Сайт" },
        "category": if sip { "sip" } else { "forms" },
        "pipeline_id": AMO_PIPELINE_BASE + default_pipeline,
        "created_at": ts(l.created_at), "updated_at": ts(l.updated_at),
        "responsible_user_id": l.responsible_id,
        "metadata": metadata, "account_id": ACCOUNT_ID,
        "_links": {"self": {"href": format!("{base}/api/v4/leads/unsorted/{}", unsorted_uid(l.id))}},
        "_embedded": {"leads": accepted, "contacts": contacts,
                      "companies": l.company_id.map(|c| vec![json!({"id": c})]).unwrap_or_default()},
    })
}

pub fn account(_sim: &Sim) -> Reply {
    Reply::Hal(
        StatusCode::OK,
        json!({"id": ACCOUNT_ID, "name": ACCOUNT_NAME, "subdomain": SUBDOMAIN,
               "created_at": 1_600_000_000, "created_by": 0, "updated_at": 1_600_000_000,
               "updated_by": 0, "current_user_id": 1, "country": "RU", "currency": "RUB",
               "currency_symbol": "₽", "customers_mode": "disabled", "is_unsorted_on": true,
               "mobile_feature_version": 0, "is_loss_reason_enabled": true,
               "is_helpbot_enabled": false, "is_technical_account": false,
               "contact_name_display_order": 1, "_links": {"self": {"href": "/api/v4/account"}}}),
    )
}

pub fn users(sim: &Sim, req: &Req) -> Reply {
    let items: Vec<Value> = {
        let w = sim.world();
        w.users
            .iter()
            .map(|u| {
                json!({"id": u.id, "name": u.full_name(), "email": u.email, "lang": "ru",
                       "rights": {"is_admin": u.role == crate::sim::world::Role::Owner,
                                  "is_free": false, "is_active": u.active,
                                  "group_id": null, "role_id": null},
                       "_links": self_link(&req.base, "users", u.id)})
            })
            .collect()
    };
    list(req, &USERS, items)
}

pub fn pipelines(sim: &Sim, req: &Req) -> Reply {
    let w = sim.world();
    let items: Vec<Value> = w
        .pipelines
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let pid = AMO_PIPELINE_BASE + p.id;
            let mut statuses = vec![json!({
                "id": UNSORTED_STATUS_BASE + p.id, "name": "Неразобранное", "sort": 10,
                "is_editable": false, "pipeline_id": pid, "color": "#c1c1c1", "type": 1,
                "account_id": ACCOUNT_ID})];
            for s in &p.stages {
                let (id, sort, editable) = match s.kind {
                    StageKind::Open => (s.id, 20 + s.sort, true),
                    StageKind::Won => (WON, 10_000, false),
                    StageKind::Lost => (LOST, 11_000, false),
                };
                statuses.push(json!({"id": id, "name": s.name, "sort": sort,
                    "is_editable": editable, "pipeline_id": pid, "color": "#99ccff", "type": 0,
                    "account_id": ACCOUNT_ID,
                    "_links": {"self": {"href": format!("{}/api/v4/leads/pipelines/{pid}/statuses/{id}", req.base)}}}));
            }
            json!({"id": pid, "name": p.name, "sort": (i as i64 + 1) * 10, "is_main": p.is_default,
                   "is_unsorted_on": true, "is_archive": false, "account_id": ACCOUNT_ID,
                   "_links": self_link(&req.base, "leads/pipelines", pid),
                   "_embedded": {"statuses": statuses}})
        })
        .collect();
    Reply::Hal(
        StatusCode::OK,
        json!({"_total_items": items.len(),
               "_links": {"self": {"href": format!("{}/api/v4/leads/pipelines", req.base)}},
               "_embedded": {"pipelines": items}}),
    )
}

pub fn leads(sim: &Sim, req: &Req) -> Reply {
    let with = with(req);
    let items: Vec<Value> = {
        let w = sim.world();
        let reasons = loss_reasons(&w);
        w.deals
            .values()
            .map(|d| deal_json(&w, d, &req.base, &with, &reasons))
            .collect()
    };
    list(req, &LEADS, items)
}

pub fn lead_one(sim: &Sim, req: &Req, id: u64) -> Reply {
    let w = sim.world();
    match w.deals.get(&id) {
        Some(d) => Reply::Hal(
            StatusCode::OK,
            deal_json(&w, d, &req.base, &with(req), &loss_reasons(&w)),
        ),
        None => Reply::Empty,
    }
}

pub fn contacts(sim: &Sim, req: &Req) -> Reply {
    let with = with(req);
    let items: Vec<Value> = {
        let w = sim.world();
        w.contacts
            .values()
            .map(|c| contact_json(&w, c, &req.base, &with))
            .collect()
    };
    list(req, &CONTACTS, items)
}

pub fn contact_one(sim: &Sim, req: &Req, id: u64) -> Reply {
    let w = sim.world();
    match w.contacts.get(&id) {
        Some(c) => Reply::Hal(StatusCode::OK, contact_json(&w, c, &req.base, &with(req))),
        None => Reply::Empty,
    }
}

pub fn companies(sim: &Sim, req: &Req) -> Reply {
    let items: Vec<Value> = {
        let w = sim.world();
        w.companies
            .values()
            .map(|c| company_json(c, &req.base))
            .collect()
    };
    list(req, &COMPANIES, items)
}

pub fn company_one(sim: &Sim, req: &Req, id: u64) -> Reply {
    let w = sim.world();
    match w.companies.get(&id) {
        Some(c) => Reply::Hal(StatusCode::OK, company_json(c, &req.base)),
        None => Reply::Empty,
    }
}

pub fn tasks(sim: &Sim, req: &Req) -> Reply {
    let items: Vec<Value> = {
        let w = sim.world();
        w.tasks.values().map(|t| task_json(t, &req.base)).collect()
    };
    list(req, &TASKS, items)
}

pub fn notes(sim: &Sim, req: &Req, entity: &str, entity_id: Option<u64>) -> Reply {
    let items: Vec<Value> = {
        let w = sim.world();
        let mut out: Vec<Value> = w
            .activities
            .values()
            .filter(|a| entity_plural(a.owner.0) == Some(entity))
            .filter(|a| entity_id.is_none_or(|id| a.owner.1 == id))
            .filter_map(|a| call_note_json(a, &req.base))
            .collect();
        for (i, (owner, oid, text, at)) in w.comments.iter().enumerate() {
            if entity_plural(*owner) != Some(entity) || entity_id.is_some_and(|id| id != *oid) {
                continue;
            }
            let id = COMMENT_NOTE_BASE + i as u64;
            out.push(json!({
                "id": id, "entity_id": oid, "created_by": 0, "updated_by": 0,
                "created_at": ts(*at), "updated_at": ts(*at), "responsible_user_id": 0,
                "group_id": 0, "note_type": "common", "params": {"text": text},
                "account_id": ACCOUNT_ID,
                "_links": {"self": {"href": format!("{}/api/v4/{entity}/{oid}/notes/{id}", req.base)}},
            }));
        }
        out
    };
    list(req, &NOTES, items)
}

pub fn unsorted(sim: &Sim, req: &Req) -> Reply {
    let items: Vec<Value> = {
        let w = sim.world();
        w.leads
            .values()
            .filter(|l| l.status != LeadStatus::Junk)
            .map(|l| unsorted_json(&w, l, &req.base))
            .collect()
    };
    list(req, &UNSORTED, items)
}

fn event(
    id: String,
    kind: &str,
    entity: &str,
    entity_id: u64,
    by: u64,
    at: i64,
    after: Value,
) -> Value {
    json!({"id": id, "type": kind, "entity_id": entity_id, "entity_type": entity,
           "created_by": by, "created_at": at, "value_after": after, "value_before": [],
           "account_id": ACCOUNT_ID, "_links": {"self": {"href": format!("/api/v4/events/{id}")}}})
}

pub fn events(sim: &Sim, req: &Req) -> Reply {
    let items: Vec<Value> = {
        let w = sim.world();
        let mut out = Vec::new();
        for d in w.deals.values() {
            out.push(event(
                format!("01la{:012x}", d.id),
                "lead_added",
                "lead",
                d.id,
                d.responsible_id,
                ts(d.created_at),
                json!([]),
            ));
            if let Some(closed) = d.closed_at {
                out.push(event(
                    format!("01ls{:012x}", d.id),
                    "lead_status_changed",
                    "lead",
                    d.id,
                    d.responsible_id,
                    ts(closed),
                    json!([{"lead_status": {"id": status_id(&w, d.stage_id),
                                             "pipeline_id": AMO_PIPELINE_BASE + d.pipeline_id}}]),
                ));
            }
        }
        for c in w.contacts.values() {
            out.push(event(
                format!("01ca{:012x}", c.id),
                "contact_added",
                "contact",
                c.id,
                c.responsible_id,
                ts(c.created_at),
                json!([]),
            ));
        }
        for c in w.companies.values() {
            out.push(event(
                format!("01co{:012x}", c.id),
                "company_added",
                "company",
                c.id,
                c.responsible_id,
                ts(c.created_at),
                json!([]),
            ));
        }
        for t in w.tasks.values() {
            let (ent, eid) = t
                .binding
                .map_or(("task", t.id), |(o, id)| (entity_singular(o), id));
            out.push(event(
                format!("01ta{:012x}", t.id),
                "task_added",
                ent,
                eid,
                t.created_by,
                ts(t.created_at),
                json!([{"task": {"id": t.id}}]),
            ));
            if let Some(closed) = t.closed_at.filter(|_| t.completed) {
                out.push(event(
                    format!("01tc{:012x}", t.id),
                    "task_completed",
                    ent,
                    eid,
                    t.responsible_id,
                    ts(closed),
                    json!([{"task": {"id": t.id}}]),
                ));
            }
        }
        for a in w.activities.values() {
            if a.kind != ActivityType::Call || entity_plural(a.owner.0).is_none() {
                continue;
            }
            let kind = match a.direction {
                Dir::In => "incoming_call",
                Dir::Out => "outgoing_call",
            };
            out.push(event(
                format!("01nc{:012x}", a.id),
                kind,
                entity_singular(a.owner.0),
                a.owner.1,
                a.responsible_id,
                ts(a.created_at),
                json!([{"note": {"id": a.id}}]),
            ));
        }
        for (i, (owner, oid, _, at)) in w.comments.iter().enumerate() {
            let nid = COMMENT_NOTE_BASE + i as u64;
            out.push(event(
                format!("01cn{nid:012x}"),
                "common_note_added",
                entity_singular(*owner),
                *oid,
                0,
                ts(*at),
                json!([{"note": {"id": nid}}]),
            ));
        }
        for (i, d) in w.deletions.iter().enumerate() {
            let kind = match d.owner {
                Owner::Deal => "lead_deleted",
                Owner::Contact => "contact_deleted",
                Owner::Company => "company_deleted",
                Owner::Lead => "unsorted_deleted",
            };
            out.push(event(
                format!("01de{:08x}{:04x}", d.id, i),
                kind,
                entity_singular(d.owner),
                d.id,
                0,
                ts(d.at),
                json!([]),
            ));
        }
        out
    };
    // Events are listed oldest first unless ordered otherwise.
    if req.query.get("order").is_none() {
        let mut req2 = Req {
            method: req.method.clone(),
            segs: req.segs.clone(),
            query: req.query.clone(),
            raw_query: req.raw_query.clone(),
            base: req.base.clone(),
            path: req.path.clone(),
            body: req.body.clone(),
        };
        if let Some(m) = req2.query.as_object_mut() {
            m.insert("order".into(), json!({"created_at": "asc"}));
        }
        return list(&req2, &EVENTS, items);
    }
    list(req, &EVENTS, items)
}

/// 404 helper for unknown entities in writes.
pub fn not_found(what: &str) -> Reply {
    problem(StatusCode::NOT_FOUND, &format!("{what} not found"))
}
