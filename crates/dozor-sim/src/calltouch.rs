//! Fake of the Calltouch reporting API (`/calltouch/calls-service/RestAPI/...`).
//!
//! `GET {siteId}/calls-diary/calls` renders the world's inbound calls (Calltouch is call
//! tracking: it sees calls to tracking numbers, not the managers' outbound dialling) either as a
//! bare array (one day, no paging) or as a paged object; `GET requests` renders the world's web
//! leads with month-first dates. Auth is the `clientApiId` query parameter; a foreign siteId is
//! refused with 403; more than 5 requests per second answer 429 with `Retry-After`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{NaiveDate, TimeZone};
use chrono_tz::Europe::Moscow;
use serde_json::{Value, json};

use super::world::{Dir, SimCall, SimLead, World};
use super::{Credentials, Injected, Sim, SimOptions, System};

/// Requests per second one client IP may send.
pub const REQUESTS_PER_SECOND: usize = 5;

/// Mutable state of the fake: the rate window and test hooks.
pub struct State {
    enforce: bool,
    window: Mutex<VecDeque<Instant>>,
    extra_records: Mutex<Vec<Value>>,
}

impl State {
    pub fn new(opts: &SimOptions, _creds: &Credentials) -> Self {
        State {
            enforce: opts.enforce_limits,
            window: Mutex::new(VecDeque::new()),
            extra_records: Mutex::new(Vec::new()),
        }
    }

    /// Raw records appended verbatim to every calls-diary answer (first page in paged mode):
    /// lets tests serve duplicated or malformed records.
    pub fn set_extra_call_records(&self, records: Vec<Value>) {
        *self.extra_records.lock().unwrap_or_else(|e| e.into_inner()) = records;
    }

    /// `Some(retry_after)` when this request exceeds the per-second budget.
    fn throttle(&self) -> Option<u64> {
        if !self.enforce {
            return None;
        }
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        while w
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            w.pop_front();
        }
        if w.len() >= REQUESTS_PER_SECOND {
            return Some(1);
        }
        w.push_back(now);
        None
    }
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route(
            "/calls-service/RestAPI/{site_id}/calls-diary/calls",
            get(calls_diary),
        )
        .route("/calls-service/RestAPI/requests", get(requests))
        .with_state(sim)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&json!({"error": message, "status": status.as_u16()}))
            .unwrap_or_default(),
    )
        .into_response()
}

fn ok(body: &Value, malformed: bool) -> Response {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    if malformed {
        bytes = super::corrupt(&bytes);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        bytes,
    )
        .into_response()
}

/// Common gate: counting, injected faults, rate limit, clientApiId. `Err` is the response.
async fn gate(
    sim: &Sim,
    method: &str,
    q: &HashMap<String, String>,
) -> Result<Injected, Box<Response>> {
    let injected = sim.on_request(System::Calltouch, method).await;
    match injected {
        Injected::Http5xx => {
            return Err(Box::new(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            )));
        }
        Injected::Throttle => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return Err(Box::new(r));
        }
        _ => {}
    }
    if let Some(after) = sim.calltouch.throttle() {
        sim.count_throttled(System::Calltouch);
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(after));
        return Err(Box::new(r));
    }
    if q.get("clientApiId").map(String::as_str) != Some(sim.creds.calltouch_client_api_id.as_str())
    {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "Invalid clientApiId",
        )));
    }
    Ok(injected)
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

async fn calls_diary(
    AxState(sim): AxState<Arc<Sim>>,
    Path(site_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let injected = match gate(&sim, "calls-diary/calls", &q).await {
        Ok(i) => i,
        Err(r) => return *r,
    };
    if site_id != sim.creds.calltouch_site_id.to_string() {
        return error(StatusCode::FORBIDDEN, "Access to the site is denied");
    }
    let parse = |k: &str| {
        q.get(k)
            .and_then(|s| NaiveDate::parse_from_str(s, "%d/%m/%Y").ok())
    };
    let (Some(from), Some(to)) = (parse("dateFrom"), parse("dateTo")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "dateFrom and dateTo are required as dd/mm/yyyy",
        );
    };
    if to < from {
        return error(StatusCode::BAD_REQUEST, "dateTo is earlier than dateFrom");
    }
    let paging = match (q.get("page"), q.get("limit")) {
        (None, None) => None,
        (Some(p), Some(l)) => match (p.parse::<u64>(), l.parse::<u64>()) {
            (Ok(p), Ok(l)) if p >= 1 && (1..=1000).contains(&l) => Some((p, l)),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "page must be >= 1 and limit 1..1000",
                );
            }
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "page and limit must be given together",
            );
        }
    };
    if paging.is_none() && from != to {
        return error(
            StatusCode::BAD_REQUEST,
            "Without page and limit only one day may be requested (dateFrom must equal dateTo)",
        );
    }
    let with_tags = flag(&q, "withCallTags");
    let with_orders = flag(&q, "withOrders");
    let mut records: Vec<Value> = {
        let w = sim.world();
        let mut calls: Vec<&SimCall> = w
            .calls
            .values()
            .filter(|c| c.direction == Dir::In)
            .filter(|c| {
                let d = c.start.with_timezone(&Moscow).date_naive();
                d >= from && d <= to
            })
            .collect();
        calls.sort_by_key(|c| (c.start, c.id));
        calls
            .into_iter()
            .map(|c| {
                let mut r = call_record(&w, c, sim.creds.calltouch_site_id);
                if with_tags {
                    r["callTags"] = json!([]);
                }
                if with_orders {
                    r["orders"] = json!([]);
                }
                r
            })
            .collect()
    };
    let extra = sim
        .calltouch
        .extra_records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let malformed = injected == Injected::Malformed;
    match paging {
        None => {
            records.extend(extra);
            ok(&Value::Array(records), malformed)
        }
        Some((page, limit)) => {
            let total = records.len() as u64;
            let page_total = total.div_ceil(limit);
            let mut slice: Vec<Value> = records
                .into_iter()
                .skip(((page - 1) * limit) as usize)
                .take(limit as usize)
                .collect();
            if page == 1 {
                slice.extend(extra);
            }
            ok(
                &json!({
                    "page": page,
                    "pageTotal": page_total,
                    "pageSize": limit,
                    "recordsTotal": total,
                    "records": slice,
                }),
                malformed,
            )
        }
    }
}

/// Moscow wall-clock `dd/mm/yyyy HH:mm:ss` of a UTC instant.
pub fn render_date(ts: chrono::DateTime<chrono::Utc>) -> String {
    ts.with_timezone(&Moscow)
        .format("%d/%m/%Y %H:%M:%S")
        .to_string()
}

/// One call in the calls-diary wire shape.
pub fn call_record(w: &World, c: &SimCall, site_id: u64) -> Value {
    let emp = c
        .employee_id
        .and_then(|id| w.employees.iter().find(|e| e.id == id));
    let successful = !c.is_lost;
    let unique = !w
        .calls
        .values()
        .any(|o| o.client_phone == c.client_phone && (o.start, o.id) < (c.start, c.id));
    let target = successful && c.talk_s >= 30;
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut out = json!({
        "callId": c.id,
        "date": render_date(c.start),
        "timestamp": c.start.timestamp(),
        "callerNumber": c.client_phone,
        "phoneNumber": c.virtual_number,
        "redirectNumber": emp.map(|e| format!("7495100{:0>4}", e.extension)).unwrap_or_default(),
        "duration": if successful { c.talk_s } else { 0 },
        "waitingConnect": c.wait_s,
        "successful": successful,
        "statusDetails": if successful { "Успешный звонок" } else { "Неотвеченный звонок" },
        "callphase": "callcompleted",
        "attribution": 1,
        "uniqueCall": unique,
        "targetCall": target,
        "uniqTargetCall": unique && target,
        "callbackCall": c.source == "sitephone",
        "manager": emp.map(|e| e.full_name.clone()).unwrap_or_default(),
        "source": c.utm.source.clone().unwrap_or_else(|| "(direct)".into()),
        "medium": c.utm.medium.clone().unwrap_or_else(|| "(none)".into()),
        "keyword": "",
    });
    let more = json!({
        "utmSource": s(&c.utm.source),
        "utmMedium": s(&c.utm.medium),
        "utmCampaign": s(&c.utm.campaign),
        "utmContent": "",
        "utmTerm": "",
        "url": "https://example-shop.ru/",
        "callUrl": format!("https://example-shop.ru/catalog/item-{}", c.id % 97),
        "ref": "",
        "hostname": "example-shop.ru",
        "city": "Москва",
        "ip": "",
        "userAgent": "",
        "device": "desktop",
        "os": "",
        "browser": "",
        "sessionId": c.id * 7 + 3,
        "ctClientId": c.id * 3,
        "ctCallerId": (c.id * 5).to_string(),
        "ctGlobalId": c.id * 11,
        "clientId": "",
        "yaClientId": "",
        "sipCallId": format!("sip-{}", c.id),
        "callReferenceId": "",
        "siteId": site_id,
        "siteName": "example-shop.ru",
        "subPoolName": "Основной пул",
    });
    merge(&mut out, more);
    out
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

/// One web lead in the requests-journal wire shape.
pub fn request_record(l: &SimLead) -> Value {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let phones: Vec<Value> = l
        .phone
        .iter()
        .map(|p| json!({"phoneNumber": World::phone_key(p), "phoneType": "phone"}))
        .collect();
    let contacts: Vec<Value> = l
        .email
        .iter()
        .map(|e| json!({"contactType": "email", "contactValue": e}))
        .collect();
    json!({
        "requestId": l.id,
        "requestNumber": format!("site-{}", l.id),
        "subject": l.title,
        "date": l.created_at.timestamp_millis(),
        "dateStr": render_date(l.created_at),
        "uniqueRequest": true,
        "targetRequest": false,
        "uniqTargetRequest": false,
        "manager": "",
        "client": {"clientId": l.id * 13, "fio": l.name, "phones": phones, "contacts": contacts},
        "session": {
            "sessionId": l.id * 7 + 3,
            "source": l.utm.source.clone().unwrap_or_else(|| "(direct)".into()),
            "medium": l.utm.medium.clone().unwrap_or_else(|| "(none)".into()),
            "utmSource": s(&l.utm.source),
            "utmMedium": s(&l.utm.medium),
            "utmCampaign": s(&l.utm.campaign),
            "utmContent": "",
            "utmTerm": "",
            "city": "Москва",
            "ref": "",
            "url": "https://example-shop.ru/contacts",
        },
        "orders": [],
        "comments": [],
        "RequestTags": [],
    })
}

async fn requests(
    AxState(sim): AxState<Arc<Sim>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let injected = match gate(&sim, "requests", &q).await {
        Ok(i) => i,
        Err(r) => return *r,
    };
    match q.get("siteId") {
        None => return error(StatusCode::BAD_REQUEST, "siteId is required"),
        Some(s) if *s != sim.creds.calltouch_site_id.to_string() => {
            return error(StatusCode::FORBIDDEN, "Access to the site is denied");
        }
        _ => {}
    }
    let parse = |k: &str| {
        q.get(k)
            .and_then(|s| NaiveDate::parse_from_str(s, "%m/%d/%Y").ok())
    };
    let (Some(from), Some(to)) = (parse("dateFrom"), parse("dateTo")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "dateFrom and dateTo are required as mm/dd/yyyy",
        );
    };
    if to < from {
        return error(StatusCode::BAD_REQUEST, "dateTo is earlier than dateFrom");
    }
    let records: Vec<Value> = {
        let w = sim.world();
        let mut leads: Vec<&SimLead> = w
            .leads
            .values()
            .filter(|l| l.source == "WEB")
            .filter(|l| {
                let d = l.created_at.with_timezone(&Moscow).date_naive();
                d >= from && d <= to
            })
            .collect();
        leads.sort_by_key(|l| (l.created_at, l.id));
        leads.into_iter().map(request_record).collect()
    };
    ok(&Value::Array(records), injected == Injected::Malformed)
}

/// Manager names that appear in the inbound calls of a world (what a client can learn).
pub fn manager_names(w: &World) -> BTreeSet<String> {
    w.calls
        .values()
        .filter(|c| c.direction == Dir::In)
        .filter_map(|c| c.employee_id)
        .filter_map(|id| w.employees.iter().find(|e| e.id == id))
        .map(|e| e.full_name.clone())
        .collect()
}

/// Moscow midnight of a date as UTC (for tests that pick whole-day windows).
pub fn moscow_midnight(d: NaiveDate) -> chrono::DateTime<chrono::Utc> {
    Moscow
        .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
        .earliest()
        .expect("Moscow has no gaps")
        .with_timezone(&chrono::Utc)
}
