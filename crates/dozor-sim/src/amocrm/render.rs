//! Read side of the amoCRM fake: HAL lists with filters, ordering and paging, and the renderers
//! that turn world records into amoCRM JSON.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ACCOUNT_ID, ACCOUNT_NAME, Reply, Req, SUBDOMAIN, problem, validation};
use crate::Sim;
use crate::php_query;
use crate::world::{
    AMO_PIPELINE_BASE, ActivityType, Dir, LeadStatus, Owner, SimActivity, SimCompany, SimContact,
    SimDeal, SimLead, SimTask, StageKind, World,
};

pub const WON: u64 = 142;
pub const LOST: u64 = 143;
/// Status id of a pipeline's "Неразобранное" column: base + world pipeline id.
pub const UNSORTED_STATUS_BASE: u64 = 6_000_000;
/// Lead id an unsorted item holds while pending: base + world lead id. The API "Неразобранное"
/// page: the item's lead exists from creation, in the pipeline's unsorted status; accepting
/// moves that same lead on, declining removes it.
pub const PENDING_LEAD_BASE: u64 = 700_000_000;
/// Note ids of common notes (world comments have no id): base + index in `world.comments`.
pub const COMMENT_NOTE_BASE: u64 = 800_000_000;
pub const PHONE_FIELD_ID: u64 = 101;
pub const EMAIL_FIELD_ID: u64 = 102;

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
const LOSS_REASONS: ListSpec = ListSpec {
    key: "loss_reasons",
    max_limit: 250,
    orders: &["id"],
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

/// `limit` and `page` of a list request.
fn paging(req: &Req, spec: &ListSpec) -> Result<(usize, usize), Reply> {
    let q = &req.query;
    let limit = match q.get("limit").and_then(Value::as_str) {
        None => 50,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=spec.max_limit).contains(&n) => n,
            _ => {
                return Err(validation(
                    "0",
                    "InvalidLimit",
                    "limit",
                    &format!("limit must be between 1 and {}", spec.max_limit),
                ));
            }
        },
    };
    let page = match q.get("page").and_then(Value::as_str) {
        None => 1,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(validation(
                    "0",
                    "InvalidPage",
                    "page",
                    "page must be 1 or more",
                ));
            }
        },
    };
    Ok((limit, page))
}

/// `order[field]=asc|desc`, checked against what the list allows.
fn order_of(req: &Req, spec: &ListSpec) -> Result<Option<(String, bool)>, Reply> {
    let mut order: Option<(String, bool)> = None;
    if let Some(o) = req.query.get("order").and_then(Value::as_object) {
        for (field, dir) in o {
            if !spec.orders.contains(&field.as_str()) {
                return Err(validation(
                    "0",
                    "NotSupportedChoice",
                    &format!("order.{field}"),
                    &format!("Ordering by {field} is not supported here"),
                ));
            }
            let desc = match dir.as_str() {
                Some("asc") => false,
                Some("desc") => true,
                _ => {
                    return Err(validation(
                        "0",
                        "NotSupportedChoice",
                        &format!("order.{field}"),
                        "Order must be asc or desc",
                    ));
                }
            };
            order = Some((field.clone(), desc));
        }
    }
    Ok(order)
}

/// The HAL envelope around one page, with `self`/`next`/`prev` links.
fn envelope(
    req: &Req,
    spec: &ListSpec,
    page: usize,
    limit: usize,
    has_next: bool,
    chunk: Vec<Value>,
) -> Reply {
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

/// Filters, orders and pages rendered `items`, and wraps them into the HAL envelope. The
/// general path: every filter and order works, at the cost of rendering every candidate.
fn list(req: &Req, spec: &ListSpec, items: Vec<Value>) -> Reply {
    let (limit, page) = match paging(req, spec) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut items = match apply_filters(&req.query, items) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let order = match order_of(req, spec) {
        Ok(o) => o,
        Err(r) => return r,
    };
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
    envelope(req, spec, page, limit, has_next, chunk)
}

/// What the typed list path needs to know about a record without rendering it.
#[derive(Clone, Copy)]
pub(crate) struct Meta {
    pub id: u64,
    pub created: i64,
    pub updated: i64,
}

/// A `query=` search prepared once per request.
pub(crate) struct Needle {
    lower: String,
    digits: String,
    key: String,
}

impl Needle {
    fn new(q: &str) -> Self {
        Needle {
            lower: q.to_lowercase(),
            digits: digits(q),
            key: World::phone_key(q),
        }
    }

    /// The same match as [`matches_query`], on a record's name, phones and emails.
    fn person(&self, name: &str, phones: &[String], emails: &[String]) -> bool {
        if name.to_lowercase().contains(&self.lower) {
            return true;
        }
        phones.iter().chain(emails).any(|val| {
            val.to_lowercase().contains(&self.lower)
                || (self.digits.len() >= 5
                    && (digits(val).contains(&self.digits) || World::phone_key(val) == self.key))
        })
    }
}

/// `(filter name, its values, the raw filter, record)` → keep?
pub(crate) type ExtraFilter<T> = dyn Fn(&str, &[String], &Value, &T) -> bool;
/// Does a record match `query=`?
pub(crate) type QueryFilter<T> = dyn Fn(&T, &Needle) -> bool;

/// How one list endpoint reads world records without rendering them all.
pub(crate) struct Typed<'x, T> {
    pub meta: &'x dyn Fn(&T) -> Meta,
    /// Filters (besides `id`, `created_at`, `updated_at`) answered on the record itself.
    pub keys: &'x [&'x str],
    /// `(filter name, its values, the raw filter, record)` → keep?
    pub extra: &'x ExtraFilter<T>,
    pub query: Option<&'x QueryFilter<T>>,
    pub render: &'x dyn Fn(&T) -> Value,
}

/// The fast list path: `items` come in ascending id order (BTreeMap order); filters are checked
/// on the records and only the served page is rendered. `order[id]=asc` walks the map once and
/// stops after the page; other typed orders sort (key, id) pairs, not JSON. Requests the typed
/// path cannot answer (unknown filters, orders on other fields) fall back to [`list`] over the
/// records left after the cheap id/time filters.
pub(crate) fn list_typed<T>(
    req: &Req,
    spec: &ListSpec,
    items: impl Iterator<Item = T>,
    t: &Typed<'_, T>,
) -> Reply {
    let (limit, page) = match paging(req, spec) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let order = match order_of(req, spec) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut ids: Option<Vec<u64>> = None;
    let mut ranges: Vec<(&str, Option<i64>, Option<i64>)> = Vec::new();
    let mut extras: Vec<(&str, Vec<String>, &Value)> = Vec::new();
    let mut fallback = false;
    if let Some(f) = req.query.get("filter").and_then(Value::as_object) {
        for (name, v) in f {
            match name.as_str() {
                "id" => {
                    ids = Some(
                        filter_list(v)
                            .iter()
                            .filter_map(|s| s.parse().ok())
                            .collect(),
                    );
                }
                field @ ("updated_at" | "created_at") => match range(v) {
                    Ok((from, to)) => ranges.push((field, from, to)),
                    Err(e) => {
                        return validation("0", "InvalidType", &format!("filter.{field}"), &e);
                    }
                },
                other if t.keys.contains(&other) => extras.push((other, filter_list(v), v)),
                _ => fallback = true,
            }
        }
    }
    let needle = req
        .query
        .get("query")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(Needle::new);
    if needle.is_some() && t.query.is_none() {
        fallback = true;
    }
    let field = order.as_ref().map_or("id", |(f, _)| f.as_str());
    if !matches!(field, "id" | "created_at" | "updated_at") {
        fallback = true;
    }
    let cheap = |m: &Meta| {
        ids.as_ref().is_none_or(|ids| ids.contains(&m.id))
            && ranges.iter().all(|(f, from, to)| {
                let x = if *f == "updated_at" {
                    m.updated
                } else {
                    m.created
                };
                from.is_none_or(|a| x >= a) && to.is_none_or(|b| x <= b)
            })
    };
    if fallback {
        let rendered: Vec<Value> = items
            .filter(|x| cheap(&(t.meta)(x)))
            .map(|x| (t.render)(&x))
            .collect();
        return list(req, spec, rendered);
    }
    let keep = |x: &T| {
        cheap(&(t.meta)(x))
            && extras.iter().all(|(n, l, v)| (t.extra)(n, l, v, x))
            && needle
                .as_ref()
                .is_none_or(|nd| t.query.is_some_and(|q| q(x, nd)))
    };
    let desc = order.as_ref().is_some_and(|(_, d)| *d);
    let start = (page - 1).saturating_mul(limit);
    let (chunk, has_next): (Vec<T>, bool) = if field == "id" && !desc {
        let mut it = items.filter(|x| keep(x)).skip(start);
        let chunk: Vec<T> = it.by_ref().take(limit).collect();
        (chunk, it.next().is_some())
    } else {
        let mut rows: Vec<(i64, u64, T)> = items
            .filter(|x| keep(x))
            .map(|x| {
                let m = (t.meta)(&x);
                let k = match field {
                    "created_at" => m.created,
                    "updated_at" => m.updated,
                    _ => 0,
                };
                (k, m.id, x)
            })
            .collect();
        rows.sort_unstable_by(|a, b| {
            let o = (a.0, a.1).cmp(&(b.0, b.1));
            if desc { o.reverse() } else { o }
        });
        let has_next = rows.len() > start + limit;
        let chunk = rows
            .into_iter()
            .skip(start)
            .take(limit)
            .map(|r| r.2)
            .collect();
        (chunk, has_next)
    };
    if chunk.is_empty() {
        return Reply::Empty;
    }
    let rendered = chunk.iter().map(|x| (t.render)(x)).collect();
    envelope(req, spec, page, limit, has_next, rendered)
}

/// A `filter[x]` list against one number.
fn in_list(list: &[String], x: u64) -> bool {
    list.iter().any(|s| s.parse::<u64>().ok() == Some(x))
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

/// A world stage id rendered as an amoCRM status id (142/143 for won/lost).
pub fn status_id(w: &World, stage_id: u64) -> u64 {
    match w.stage(stage_id).map(|(_, s)| s.kind) {
        Some(StageKind::Won) => WON,
        Some(StageKind::Lost) => LOST,
        _ => stage_id,
    }
}

fn deal_json(w: &World, d: &SimDeal, base: &str, with: &[String], sim: &Sim) -> Value {
    let status = status_id(w, d.stage_id);
    let loss_id = (status == LOST)
        .then(|| d.loss_reason.as_ref().map(|r| sim.amo.reason_id(r)))
        .flatten();
    let mut emb = serde_json::Map::new();
    emb.insert("tags".into(), tags(&d.tags));
    // Companies with their links, as in the one-lead example of the leads page.
    emb.insert(
        "companies".into(),
        Value::Array(
            d.company_id
                .map(|c| json!({"id": c, "_links": self_link(base, "companies", c)}))
                .into_iter()
                .collect(),
        ),
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

fn contact_json(c: &SimContact, base: &str, leads: Option<&[u64]>) -> Value {
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
    if let Some(leads) = leads {
        emb.insert(
            "leads".into(),
            Value::Array(
                leads
                    .iter()
                    .map(|d| json!({"id": d, "_links": self_link(base, "leads", d)}))
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

pub fn entity_singular(o: Owner) -> &'static str {
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

fn unsorted_json(
    l: &SimLead,
    base: &str,
    default_pipeline: u64,
    by_lead: &HashMap<u64, Vec<&SimDeal>>,
) -> Value {
    let sip = l.source == "CALL";
    let metadata = if sip {
        json!({"from": l.name, "phone": l.phone, "called_at": ts(l.created_at), "duration": 0,
               "link": null, "service_code": "sim-telephony", "uniq": format!("sim-call-{}", l.id),
               "call_responsible": l.responsible_id})
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
        // The keys and types of the forms item on the unsorted page: `form_sent_at` is a
        // string there, `visitor_uid` present (null when unknown).
        json!({"form_id": "sim-form", "form_name": l.title, "form_page": "https://example.ru/",
               "ip": "127.0.0.1", "form_sent_at": ts(l.created_at).to_string(),
               "referer": format!("https://example.ru/?{}", referer.finish()),
               "visitor_uid": null})
    };
    let held: Vec<Value> = if is_pending(l) {
        let id = PENDING_LEAD_BASE + l.id;
        vec![json!({"id": id, "_links": self_link(base, "leads", id)})]
    } else if l.status == LeadStatus::Converted {
        by_lead
            .get(&l.id)
            .into_iter()
            .flatten()
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
        "_embedded": {"leads": held, "contacts": contacts,
                      "companies": l.company_id.map(|c| vec![json!({"id": c})]).unwrap_or_default()},
    })
}

/// `GET /api/v4/account`; `is_api_filter_enabled` only when asked for with `with=` (the account
/// parameters page, https://www.amocrm.com/developers/content/api_v4/account-parameters/,
/// marks it "GET parameter with is required").
pub fn account(sim: &Sim, req: &Req) -> Reply {
    let mut v = json!({"id": ACCOUNT_ID, "name": ACCOUNT_NAME, "subdomain": SUBDOMAIN,
               "created_at": 1_600_000_000, "created_by": 0, "updated_at": 1_600_000_000,
               "updated_by": 0, "current_user_id": 1, "country": "RU", "currency": "RUB",
               "currency_symbol": "₽", "customers_mode": "disabled", "is_unsorted_on": true,
               "mobile_feature_version": 0, "is_loss_reason_enabled": true,
               "is_helpbot_enabled": false, "is_technical_account": false,
               "contact_name_display_order": 1, "_links": {"self": {"href": "/api/v4/account"}}});
    if with(req).iter().any(|w| w == "is_api_filter_enabled") {
        v["is_api_filter_enabled"] = json!(sim.amo.api_filter());
    }
    Reply::Hal(StatusCode::OK, v)
}

pub fn users(sim: &Sim, req: &Req) -> Reply {
    let items: Vec<Value> = {
        let w = sim.world();
        w.users
            .iter()
            .map(|u| {
                json!({"id": u.id, "name": u.full_name(), "email": u.email, "lang": "ru",
                       "rights": {"is_admin": u.role == crate::world::Role::Owner,
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

fn default_pipeline(w: &World) -> u64 {
    w.pipelines
        .iter()
        .find(|p| p.is_default)
        .map_or(0, |p| p.id)
}

fn deal_meta(d: &&SimDeal) -> Meta {
    Meta {
        id: d.id,
        created: ts(d.created_at),
        updated: ts(d.updated_at),
    }
}

fn deal_filter(name: &str, list: &[String], _v: &Value, d: &&SimDeal) -> bool {
    match name {
        "responsible_user_id" => in_list(list, d.responsible_id),
        "pipeline_id" => in_list(list, AMO_PIPELINE_BASE + d.pipeline_id),
        _ => true,
    }
}

fn is_pending(l: &SimLead) -> bool {
    matches!(l.status, LeadStatus::New | LeadStatus::InProcess)
}

/// The pending unsorted item whose lead has this id.
fn pending_of(w: &World, id: u64) -> Option<&SimLead> {
    let lead = id.checked_sub(PENDING_LEAD_BASE)?;
    w.leads.get(&lead).filter(|l| is_pending(l))
}

/// The lead a pending unsorted item holds: in the default pipeline's unsorted status, with
/// `_embedded` as any lead has it (contacts and loss reason only when asked for).
fn pending_lead_json(w: &World, l: &SimLead, base: &str, with: &[String]) -> Value {
    let p = default_pipeline(w);
    let id = PENDING_LEAD_BASE + l.id;
    let mut emb = serde_json::Map::new();
    emb.insert("tags".into(), json!([]));
    emb.insert(
        "companies".into(),
        Value::Array(l.company_id.map(|c| json!({"id": c})).into_iter().collect()),
    );
    if with.iter().any(|x| x == "contacts") {
        emb.insert(
            "contacts".into(),
            Value::Array(
                l.contact_id
                    .map(|c| json!({"id": c, "is_main": true, "_links": self_link(base, "contacts", c)}))
                    .into_iter()
                    .collect(),
            ),
        );
    }
    if with.iter().any(|x| x == "loss_reason") {
        emb.insert("loss_reason".into(), json!([]));
    }
    json!({
        "id": id, "name": l.title, "price": 0, "responsible_user_id": l.responsible_id,
        "group_id": 0, "status_id": UNSORTED_STATUS_BASE + p, "pipeline_id": AMO_PIPELINE_BASE + p,
        "loss_reason_id": null, "source_id": null, "created_by": 0, "updated_by": 0,
        "created_at": ts(l.created_at), "updated_at": ts(l.updated_at), "closed_at": null,
        "closest_task_at": null, "is_deleted": false, "custom_fields_values": null,
        "score": null, "account_id": ACCOUNT_ID, "labor_cost": null,
        "_links": self_link(base, "leads", id), "_embedded": emb,
    })
}

/// A record of `GET /api/v4/leads`: a deal, or the lead a pending unsorted item holds.
#[derive(Clone, Copy)]
enum AmoLead<'a> {
    Deal(&'a SimDeal),
    /// The item and the amoCRM id of the pipeline its lead sits in.
    Pending(&'a SimLead, u64),
}

impl AmoLead<'_> {
    fn meta(&self) -> Meta {
        match self {
            AmoLead::Deal(d) => deal_meta(d),
            AmoLead::Pending(l, _) => Meta {
                id: PENDING_LEAD_BASE + l.id,
                created: ts(l.created_at),
                updated: ts(l.updated_at),
            },
        }
    }
}

/// Deals and the leads of pending unsorted items, merged in id order (both come sorted).
fn all_leads(w: &World) -> impl Iterator<Item = AmoLead<'_>> {
    let dp = AMO_PIPELINE_BASE + default_pipeline(w);
    let mut deals = w.deals.values().peekable();
    let mut pending = w.leads.values().filter(|l| is_pending(l)).peekable();
    std::iter::from_fn(move || match (deals.peek(), pending.peek()) {
        (Some(d), Some(l)) if PENDING_LEAD_BASE + l.id < d.id => {
            pending.next().map(|l| AmoLead::Pending(l, dp))
        }
        (Some(_), _) => deals.next().map(AmoLead::Deal),
        (None, _) => pending.next().map(|l| AmoLead::Pending(l, dp)),
    })
}

/// `GET /api/v4/leads`. The unsorted status is a system status of every pipeline (the
/// unsorted page, https://www.amocrm.ru/developers/content/crm_platform/unsorted-api), so the
/// leads of pending unsorted items are listed with the others, in that status.
pub fn leads(sim: &Sim, req: &Req) -> Reply {
    let with = with(req);
    let w = sim.world();
    let render = |l: &AmoLead| match l {
        AmoLead::Deal(d) => deal_json(&w, d, &req.base, &with, sim),
        AmoLead::Pending(l, _) => pending_lead_json(&w, l, &req.base, &with),
    };
    list_typed(
        req,
        &LEADS,
        all_leads(&w),
        &Typed {
            meta: &|l: &AmoLead| l.meta(),
            keys: &["responsible_user_id", "pipeline_id"],
            extra: &|name, list, v, l: &AmoLead| match l {
                AmoLead::Deal(d) => deal_filter(name, list, v, d),
                AmoLead::Pending(p, pipeline) => match name {
                    "responsible_user_id" => in_list(list, p.responsible_id),
                    "pipeline_id" => in_list(list, *pipeline),
                    _ => true,
                },
            },
            query: Some(&|l: &AmoLead, n: &Needle| match l {
                AmoLead::Deal(d) => n.person(&d.title, &[], &[]),
                AmoLead::Pending(p, _) => n.person(&p.title, &[], &[]),
            }),
            render: &render,
        },
    )
}

pub fn lead_one(sim: &Sim, req: &Req, id: u64) -> Reply {
    let w = sim.world();
    match (w.deals.get(&id), pending_of(&w, id)) {
        (Some(d), _) => Reply::Hal(StatusCode::OK, deal_json(&w, d, &req.base, &with(req), sim)),
        (None, Some(l)) => Reply::Hal(
            StatusCode::OK,
            pending_lead_json(&w, l, &req.base, &with(req)),
        ),
        (None, None) => Reply::Empty,
    }
}

/// Deals of each contact, built only when `with=leads` asks for them.
fn deals_by_contact(w: &World) -> HashMap<u64, Vec<u64>> {
    let mut out: HashMap<u64, Vec<u64>> = HashMap::new();
    for d in w.deals.values() {
        if let Some(c) = d.contact_id {
            out.entry(c).or_default().push(d.id);
        }
    }
    out
}

pub fn contacts(sim: &Sim, req: &Req) -> Reply {
    let with_leads = with(req).iter().any(|x| x == "leads");
    let w = sim.world();
    let index = if with_leads {
        deals_by_contact(&w)
    } else {
        HashMap::new()
    };
    let render = |c: &&SimContact| {
        let leads = with_leads.then(|| index.get(&c.id).map_or(&[][..], Vec::as_slice));
        contact_json(c, &req.base, leads)
    };
    list_typed(
        req,
        &CONTACTS,
        w.contacts.values(),
        &Typed {
            meta: &|c: &&SimContact| Meta {
                id: c.id,
                created: ts(c.created_at),
                updated: ts(c.updated_at),
            },
            keys: &["responsible_user_id"],
            extra: &|_, l, _, c: &&SimContact| in_list(l, c.responsible_id),
            query: Some(&|c: &&SimContact, n: &Needle| {
                n.person(&c.full_name(), &c.phones, &c.emails)
            }),
            render: &render,
        },
    )
}

pub fn contact_one(sim: &Sim, req: &Req, id: u64) -> Reply {
    let w = sim.world();
    match w.contacts.get(&id) {
        Some(c) => {
            let leads: Option<Vec<u64>> = with(req).iter().any(|x| x == "leads").then(|| {
                w.deals
                    .values()
                    .filter(|d| d.contact_id == Some(id))
                    .map(|d| d.id)
                    .collect()
            });
            Reply::Hal(StatusCode::OK, contact_json(c, &req.base, leads.as_deref()))
        }
        None => Reply::Empty,
    }
}

pub fn companies(sim: &Sim, req: &Req) -> Reply {
    let w = sim.world();
    list_typed(
        req,
        &COMPANIES,
        w.companies.values(),
        &Typed {
            meta: &|c: &&SimCompany| Meta {
                id: c.id,
                created: ts(c.created_at),
                updated: ts(c.updated_at),
            },
            keys: &["responsible_user_id"],
            extra: &|_, l, _, c: &&SimCompany| in_list(l, c.responsible_id),
            query: Some(&|c: &&SimCompany, n: &Needle| n.person(&c.title, &c.phones, &c.emails)),
            render: &|c: &&SimCompany| company_json(c, &req.base),
        },
    )
}

pub fn company_one(sim: &Sim, req: &Req, id: u64) -> Reply {
    let w = sim.world();
    match w.companies.get(&id) {
        Some(c) => Reply::Hal(StatusCode::OK, company_json(c, &req.base)),
        None => Reply::Empty,
    }
}

fn task_filter(name: &str, list: &[String], v: &Value, t: &&SimTask) -> bool {
    match name {
        "responsible_user_id" => in_list(list, t.responsible_id),
        "is_completed" => t.completed == matches!(v.as_str(), Some("1" | "true")),
        "entity_type" => t
            .binding
            .and_then(|(o, _)| entity_plural(o))
            .is_some_and(|p| list.iter().any(|x| x == p)),
        "entity_id" => t.binding.is_some_and(|(_, id)| in_list(list, id)),
        _ => true,
    }
}

pub fn tasks(sim: &Sim, req: &Req) -> Reply {
    let w = sim.world();
    list_typed(
        req,
        &TASKS,
        w.tasks.values(),
        &Typed {
            meta: &|t: &&SimTask| Meta {
                id: t.id,
                created: ts(t.created_at),
                updated: ts(t.updated_at),
            },
            keys: &[
                "responsible_user_id",
                "is_completed",
                "entity_type",
                "entity_id",
            ],
            extra: &task_filter,
            query: None,
            render: &|t: &&SimTask| task_json(t, &req.base),
        },
    )
}

/// A note before rendering: a call activity or a world comment (with its index).
#[derive(Clone, Copy)]
enum NoteRef<'a> {
    Call(&'a SimActivity),
    Comment(usize, &'a (Owner, u64, String, crate::world::Ts)),
}

impl NoteRef<'_> {
    fn meta(&self) -> Meta {
        match self {
            NoteRef::Call(a) => Meta {
                id: a.id,
                created: ts(a.created_at),
                updated: ts(a.updated_at),
            },
            NoteRef::Comment(i, (_, _, _, at)) => Meta {
                id: COMMENT_NOTE_BASE + *i as u64,
                created: ts(*at),
                updated: ts(*at),
            },
        }
    }

    fn entity_id(&self) -> u64 {
        match self {
            NoteRef::Call(a) => a.owner.1,
            NoteRef::Comment(_, (_, id, _, _)) => *id,
        }
    }

    fn note_type(&self) -> &'static str {
        match self {
            NoteRef::Call(a) if a.direction == Dir::In => "call_in",
            NoteRef::Call(_) => "call_out",
            NoteRef::Comment(..) => "common",
        }
    }
}

fn comment_note_json(entity: &str, i: usize, oid: u64, text: &str, at: i64, base: &str) -> Value {
    let id = COMMENT_NOTE_BASE + i as u64;
    json!({
        "id": id, "entity_id": oid, "created_by": 0, "updated_by": 0,
        "created_at": at, "updated_at": at, "responsible_user_id": 0,
        "group_id": 0, "note_type": "common", "params": {"text": text},
        "account_id": ACCOUNT_ID,
        "_links": {"self": {"href": format!("{base}/api/v4/{entity}/{oid}/notes/{id}")}},
    })
}

pub fn notes(sim: &Sim, req: &Req, entity: &str, entity_id: Option<u64>) -> Reply {
    let w = sim.world();
    // Activities come first: their ids are below COMMENT_NOTE_BASE, so the chain stays in id
    // order.
    let calls = w
        .activities
        .values()
        .filter(|a| a.kind == ActivityType::Call && entity_plural(a.owner.0) == Some(entity))
        .filter(|a| entity_id.is_none_or(|id| a.owner.1 == id))
        .map(NoteRef::Call);
    let comments = w
        .comments
        .iter()
        .enumerate()
        .filter(|(_, (o, oid, _, _))| {
            entity_plural(*o) == Some(entity) && entity_id.is_none_or(|id| id == *oid)
        })
        .map(|(i, c)| NoteRef::Comment(i, c));
    let render = |n: &NoteRef| match n {
        NoteRef::Call(a) => call_note_json(a, &req.base).unwrap_or(Value::Null),
        NoteRef::Comment(i, (_, oid, text, at)) => {
            comment_note_json(entity, *i, *oid, text, ts(*at), &req.base)
        }
    };
    list_typed(
        req,
        &NOTES,
        calls.chain(comments),
        &Typed {
            meta: &|n: &NoteRef| n.meta(),
            keys: &["note_type", "entity_id"],
            extra: &|name, l, _, n: &NoteRef| match name {
                "note_type" => l.iter().any(|x| x == n.note_type()),
                _ => in_list(l, n.entity_id()),
            },
            query: None,
            render: &render,
        },
    )
}

pub fn unsorted(sim: &Sim, req: &Req) -> Reply {
    let w = sim.world();
    let mut by_lead: HashMap<u64, Vec<&SimDeal>> = HashMap::new();
    for d in w.deals.values() {
        if let Some(l) = d.lead_id {
            by_lead.entry(l).or_default().push(d);
        }
    }
    let dp = default_pipeline(&w);
    // Only items awaiting a decision: an accepted or declined item leaves the list (the
    // unsorted page: the list is what managers still have to sort out).
    let items = w.leads.values().filter(|l| is_pending(l));
    let render = |l: &&SimLead| unsorted_json(l, &req.base, dp, &by_lead);
    if req.query.get("order").is_none() {
        // The default order is by uid (a string): the general path keeps it exact.
        let all: Vec<Value> = items.map(|l| render(&l)).collect();
        return list(req, &UNSORTED, all);
    }
    list_typed(
        req,
        &UNSORTED,
        items,
        &Typed {
            meta: &|l: &&SimLead| Meta {
                id: l.id,
                created: ts(l.created_at),
                updated: ts(l.updated_at),
            },
            keys: &[],
            extra: &|_, _, _, _| true,
            query: None,
            render: &render,
        },
    )
}

/// `GET /api/v4/leads/loss_reasons`: every reason a deal carries plus those created by API.
pub fn loss_reasons(sim: &Sim, req: &Req) -> Reply {
    {
        let w = sim.world();
        for d in w.deals.values() {
            if let Some(r) = &d.loss_reason {
                sim.amo.reason_id(r);
            }
        }
    }
    let items: Vec<Value> = sim
        .amo
        .reasons()
        .into_iter()
        .enumerate()
        .map(|(i, (name, id))| {
            json!({"id": id, "name": name, "sort": (i + 1) * 10, "created_at": 1_600_000_000,
                   "updated_at": 1_600_000_000,
                   "_links": self_link(&req.base, "leads/loss_reasons", id)})
        })
        .collect();
    list(req, &LOSS_REASONS, items)
}

/// One event before rendering.
struct Ev {
    id: String,
    kind: String,
    entity: &'static str,
    entity_id: u64,
    by: u64,
    at: i64,
    after: Value,
    before: Value,
}

impl Ev {
    fn json(&self) -> Value {
        json!({"id": self.id, "type": self.kind, "entity_id": self.entity_id,
               "entity_type": self.entity, "created_by": self.by, "created_at": self.at,
               "value_after": self.after, "value_before": self.before,
               "account_id": ACCOUNT_ID,
               "_links": {"self": {"href": format!("/api/v4/events/{}", self.id)}}})
    }
}

/// `GET /api/v4/events`. The log is derived from the world on each request, so writes made by
/// any fake (or by a test poking the world) show up:
///
/// - `lead_added`, `contact_added`, `company_added`, `task_added`, `unsorted_added` at the
///   record's `created_at`;
/// - `lead_status_changed` at a deal's `closed_at`, `task_completed` at a done task's
///   `closed_at`;
/// - one generic change event at `updated_at` when it is later than `created_at`
///   (`custom_field_value_changed` for deals, contacts and companies, `task_deadline_changed`
///   for tasks, `unsorted_changed` for unsorted items) — unless a write through this fake
///   already logged a precise event for that record at that second;
/// - precise events logged by this fake's own writes (`lead_status_changed`,
///   `entity_responsible_changed`, `entity_tag_added`/`entity_tag_deleted`,
///   `name_field_changed`, `sale_field_changed`, `task_completed`);
/// - `incoming_call`/`outgoing_call` per call note, `common_note_added` per comment;
/// - `lead_deleted`, `contact_deleted`, `company_deleted`, `unsorted_deleted` per deletion.
///
/// Candidates are checked against `filter[created_at]`, `filter[type]` and `filter[entity]`
/// before anything is rendered, so a probe of a big, idle world stays cheap.
pub fn events(sim: &Sim, req: &Req) -> Reply {
    let q = &req.query;
    let (from, to) = match q.get("filter").and_then(|f| f.get("created_at")) {
        Some(v) => match range(v) {
            Ok(r) => r,
            Err(e) => return validation("0", "InvalidType", "filter.created_at", &e),
        },
        None => (None, None),
    };
    let types: Option<Vec<String>> = q.get("filter").and_then(|f| f.get("type")).map(filter_list);
    let entities: Option<Vec<String>> = q
        .get("filter")
        .and_then(|f| f.get("entity"))
        .map(filter_list);
    let logged = sim.amo.logged();
    let w = sim.world();
    let seen: HashSet<(&str, u64, i64)> = logged
        .iter()
        .map(|e| (e.subject.0, e.subject.1, e.at))
        .collect();
    let mut out: Vec<Ev> = Vec::new();
    let mut push =
        |id: String, kind: &str, entity: &'static str, eid: u64, by: u64, at: i64, after: Value| {
            let wanted = from.is_none_or(|f| at >= f)
                && to.is_none_or(|t| at <= t)
                && types.as_ref().is_none_or(|l| l.iter().any(|x| x == kind))
                && entities
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|x| x == entity));
            if wanted {
                out.push(Ev {
                    id,
                    kind: kind.to_string(),
                    entity,
                    entity_id: eid,
                    by,
                    at,
                    after,
                    before: json!([]),
                });
            }
        };
    for d in w.deals.values() {
        let (c, u) = (ts(d.created_at), ts(d.updated_at));
        push(
            format!("01la{:012x}", d.id),
            "lead_added",
            "lead",
            d.id,
            d.responsible_id,
            c,
            json!([]),
        );
        let closed = d.closed_at.map(ts);
        if let Some(cl) = closed.filter(|cl| !seen.contains(&("lead", d.id, *cl))) {
            push(
                format!("01ls{:012x}", d.id),
                "lead_status_changed",
                "lead",
                d.id,
                d.responsible_id,
                cl,
                json!([{"lead_status": {"id": status_id(&w, d.stage_id),
                                         "pipeline_id": AMO_PIPELINE_BASE + d.pipeline_id}}]),
            );
        }
        if u > c && Some(u) != closed && !seen.contains(&("lead", d.id, u)) {
            push(
                format!("01lu{:012x}", d.id),
                "custom_field_value_changed",
                "lead",
                d.id,
                d.responsible_id,
                u,
                json!([]),
            );
        }
    }
    for c in w.contacts.values() {
        let (cr, u) = (ts(c.created_at), ts(c.updated_at));
        push(
            format!("01ca{:012x}", c.id),
            "contact_added",
            "contact",
            c.id,
            c.responsible_id,
            cr,
            json!([]),
        );
        if u > cr && !seen.contains(&("contact", c.id, u)) {
            push(
                format!("01cu{:012x}", c.id),
                "custom_field_value_changed",
                "contact",
                c.id,
                c.responsible_id,
                u,
                json!([]),
            );
        }
    }
    for c in w.companies.values() {
        let (cr, u) = (ts(c.created_at), ts(c.updated_at));
        push(
            format!("01co{:012x}", c.id),
            "company_added",
            "company",
            c.id,
            c.responsible_id,
            cr,
            json!([]),
        );
        if u > cr && !seen.contains(&("company", c.id, u)) {
            push(
                format!("01ou{:012x}", c.id),
                "custom_field_value_changed",
                "company",
                c.id,
                c.responsible_id,
                u,
                json!([]),
            );
        }
    }
    for t in w.tasks.values() {
        let (ent, eid) = t
            .binding
            .map_or(("task", t.id), |(o, id)| (entity_singular(o), id));
        let (cr, u) = (ts(t.created_at), ts(t.updated_at));
        let after = json!([{"task": {"id": t.id}}]);
        push(
            format!("01ta{:012x}", t.id),
            "task_added",
            ent,
            eid,
            t.created_by,
            cr,
            after.clone(),
        );
        let closed = t.closed_at.filter(|_| t.completed).map(ts);
        if let Some(cl) = closed.filter(|cl| !seen.contains(&("task", t.id, *cl))) {
            push(
                format!("01tc{:012x}", t.id),
                "task_completed",
                ent,
                eid,
                t.responsible_id,
                cl,
                after.clone(),
            );
        }
        if u > cr && Some(u) != closed && !seen.contains(&("task", t.id, u)) {
            push(
                format!("01tu{:012x}", t.id),
                "task_deadline_changed",
                ent,
                eid,
                t.responsible_id,
                u,
                after,
            );
        }
    }
    for l in w.leads.values() {
        let (cr, u) = (ts(l.created_at), ts(l.updated_at));
        push(
            format!("01ua{:012x}", l.id),
            "unsorted_added",
            "unsorted",
            l.id,
            l.responsible_id,
            cr,
            json!([]),
        );
        if u > cr {
            push(
                format!("01uu{:012x}", l.id),
                "unsorted_changed",
                "unsorted",
                l.id,
                l.responsible_id,
                u,
                json!([]),
            );
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
        push(
            format!("01nc{:012x}", a.id),
            kind,
            entity_singular(a.owner.0),
            a.owner.1,
            a.responsible_id,
            ts(a.created_at),
            json!([{"note": {"id": a.id}}]),
        );
    }
    for (i, (owner, oid, _, at)) in w.comments.iter().enumerate() {
        let nid = COMMENT_NOTE_BASE + i as u64;
        push(
            format!("01cn{nid:012x}"),
            "common_note_added",
            entity_singular(*owner),
            *oid,
            0,
            ts(*at),
            json!([{"note": {"id": nid}}]),
        );
    }
    for (i, d) in w.deletions.iter().enumerate() {
        let kind = match d.owner {
            Owner::Deal => "lead_deleted",
            Owner::Contact => "contact_deleted",
            Owner::Company => "company_deleted",
            Owner::Lead => "unsorted_deleted",
        };
        push(
            format!("01de{:08x}{:04x}", d.id, i),
            kind,
            entity_singular(d.owner),
            d.id,
            0,
            ts(d.at),
            json!([]),
        );
    }
    drop(w);
    for e in &logged {
        let wanted = from.is_none_or(|f| e.at >= f)
            && to.is_none_or(|t| e.at <= t)
            && types.as_ref().is_none_or(|l| l.contains(&e.kind))
            && entities
                .as_ref()
                .is_none_or(|l| l.iter().any(|x| x == e.entity));
        if wanted {
            out.push(Ev {
                id: e.id.clone(),
                kind: e.kind.clone(),
                entity: e.entity,
                entity_id: e.entity_id,
                by: e.by,
                at: e.at,
                after: e.after.clone(),
                before: e.before.clone(),
            });
        }
    }
    let items: Vec<Value> = out.iter().map(Ev::json).collect();
    // Events are listed oldest first unless ordered otherwise.
    if req.query.get("order").is_none() {
        let mut query = req.query.clone();
        if let Some(m) = query.as_object_mut() {
            m.insert("order".into(), json!({"created_at": "asc"}));
        }
        let req2 = Req {
            method: req.method.clone(),
            segs: Vec::new(),
            query,
            raw_query: req.raw_query.clone(),
            base: req.base.clone(),
            path: req.path.clone(),
            body: Default::default(),
        };
        return list(&req2, &EVENTS, items);
    }
    list(req, &EVENTS, items)
}

/// 404 helper for unknown entities in writes.
pub fn not_found(what: &str) -> Reply {
    problem(StatusCode::NOT_FOUND, &format!("{what} not found"))
}
