//! Fake of the CoMagic Data API v2.0 (JSON-RPC 2.0 over POST `/comagic/v2.0`).
//!
//! Serves `get.calls_report`, `get.employees` and `get.account` over the shared world, with the
//! real envelope (`result.data` + `result.metadata{total_items, limits}`), the JSON-RPC error
//! object (`error{code, message, data{mnemonic, field, value}}`), fields / filter / sort / paging,
//! the 3-month period cap and the per-minute points budget.
//!
//! The account has a time zone (`get.account` → `timezone`, IANA; default Europe/Moscow, set
//! with [`State::set_timezone`]): every date-time it renders (`start_time`, `finish_time`) and
//! every one it is asked for (`date_from`, `date_till`) is that zone's wall clock, with no
//! offset, as the Data API writes them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{Months, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use super::world::{Dir, SimCall, World};
use super::{Credentials, Injected, Sim, SimOptions, System};

/// Date-time format of every CoMagic date parameter and field.
pub const DT_FMT: &str = "%Y-%m-%d %H:%M:%S";

/// Points per minute when limits are enforced.
pub const MINUTE_LIMIT: u32 = 120;
/// Points per day when limits are enforced.
pub const DAY_LIMIT: u32 = 20_000;

struct Budget {
    minute_start: Instant,
    minute_used: u32,
    day_start: Instant,
    day_used: u32,
}

/// Mutable state of the fake: the points budget and test hooks.
pub struct State {
    enforce: bool,
    budget: Mutex<Budget>,
    expired: AtomicBool,
    extra_rows: Mutex<Vec<Value>>,
    /// The account's zone (`get.account` → `timezone`).
    timezone: Mutex<Tz>,
}

impl State {
    pub fn new(opts: &SimOptions, _creds: &Credentials) -> Self {
        State {
            enforce: opts.enforce_limits,
            budget: Mutex::new(Budget {
                minute_start: Instant::now(),
                minute_used: 0,
                day_start: Instant::now(),
                day_used: 0,
            }),
            expired: AtomicBool::new(false),
            extra_rows: Mutex::new(Vec::new()),
            timezone: Mutex::new(chrono_tz::Europe::Moscow),
        }
    }

    /// Moves the account to another zone: its times are rendered and read in it from now on.
    pub fn set_timezone(&self, tz: Tz) {
        *self.timezone.lock().unwrap_or_else(|e| e.into_inner()) = tz;
    }

    /// The account's zone.
    pub fn timezone(&self) -> Tz {
        *self.timezone.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One call session as this account renders it (its times in the account's zone).
    pub fn call_row(&self, w: &World, c: &SimCall) -> Value {
        call_row(w, c, self.timezone())
    }

    /// Raw rows appended verbatim to the first page (offset 0) of every `get.calls_report`
    /// answer: lets tests serve duplicated or malformed records.
    pub fn set_extra_call_rows(&self, rows: Vec<Value>) {
        *self.extra_rows.lock().unwrap_or_else(|e| e.into_inner()) = rows;
    }

    fn limits(&self) -> (u32, u32) {
        if self.enforce {
            (MINUTE_LIMIT, DAY_LIMIT)
        } else {
            (1_000_000, 100_000_000)
        }
    }

    /// Rolls the windows and returns the metadata.limits object (before charging).
    fn limits_json(&self, b: &mut Budget) -> Value {
        let now = Instant::now();
        if now.duration_since(b.minute_start) >= Duration::from_secs(60) {
            b.minute_start = now;
            b.minute_used = 0;
        }
        if now.duration_since(b.day_start) >= Duration::from_secs(86_400) {
            b.day_start = now;
            b.day_used = 0;
        }
        let (ml, dl) = self.limits();
        let minute_reset = 60u64.saturating_sub(now.duration_since(b.minute_start).as_secs());
        let day_reset = 86_400u64.saturating_sub(now.duration_since(b.day_start).as_secs());
        json!({
            "day_limit": dl,
            "day_remaining": dl.saturating_sub(b.day_used),
            "day_reset": day_reset.max(1),
            "minute_limit": ml,
            "minute_remaining": ml.saturating_sub(b.minute_used),
            "minute_reset": minute_reset.max(1),
        })
    }
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new().route("/v2.0", post(rpc)).with_state(sim)
}

/// A JSON-RPC error about to be sent.
struct RpcError {
    code: i64,
    message: String,
    data: Value,
}

fn err(code: i64, mnemonic: &str, message: &str) -> RpcError {
    RpcError {
        code,
        message: message.to_string(),
        data: json!({"mnemonic": mnemonic, "params": {}}),
    }
}

fn param_err(mnemonic: &str, field: &str, value: Value, message: &str) -> RpcError {
    RpcError {
        code: -32602,
        message: message.to_string(),
        data: json!({"mnemonic": mnemonic, "field": field, "value": value, "params": {}}),
    }
}

fn json_response(status: StatusCode, body: &Value, malformed: bool) -> Response {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    if malformed {
        bytes = super::corrupt(&bytes);
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        bytes,
    )
        .into_response()
}

fn error_body(id: &Value, e: RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message, "data": e.data}})
}

async fn rpc(AxState(sim): AxState<Arc<Sim>>, body: Bytes) -> Response {
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            sim.on_request(System::Comagic, "<parse_error>").await;
            let e = err(
                -32700,
                "parse_error",
                "Invalid JSON was received by the server.",
            );
            return json_response(StatusCode::OK, &error_body(&Value::Null, e), false);
        }
    };
    let Some(obj) = parsed.as_object() else {
        sim.on_request(System::Comagic, "<invalid_request>").await;
        let e = if parsed.is_array() {
            err(
                -32099,
                "batch_opreations_not_supported",
                "Batch operations not supported",
            )
        } else {
            err(-32600, "invalid_request", INVALID_REQUEST)
        };
        return json_response(StatusCode::OK, &error_body(&Value::Null, e), false);
    };
    let method = obj
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("<none>")
        .to_string();
    let injected = sim.on_request(System::Comagic, &method).await;
    let Some(id) = obj.get("id").cloned().filter(|v| !v.is_null()) else {
        let e = err(
            -32099,
            "notifications_not_supported",
            "Notifications not supported",
        );
        return json_response(StatusCode::OK, &error_body(&Value::Null, e), false);
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || method == "<none>" {
        let e = err(-32600, "invalid_request", INVALID_REQUEST);
        return json_response(StatusCode::OK, &error_body(&id, e), false);
    }
    match injected {
        Injected::Http5xx => {
            let e = err(
                -32603,
                "internal_error",
                "Internal error, contact the support service",
            );
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &error_body(&id, e),
                false,
            );
        }
        Injected::Throttle => {
            let mut e = err(
                -32029,
                "limit_exceeded",
                &limit_message("minute", MINUTE_LIMIT),
            );
            e.data["metadata"] = json!({"limits": {"minute_reset": 1, "minute_remaining": 0}});
            return json_response(StatusCode::OK, &error_body(&id, e), false);
        }
        _ => {}
    }
    let malformed = injected == Injected::Malformed;
    let empty = Map::new();
    let params = obj
        .get("params")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    match handle(&sim, &method, params) {
        Ok(body) => json_response(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": id, "result": body}),
            malformed,
        ),
        Err(e) => json_response(StatusCode::OK, &error_body(&id, e), false),
    }
}

fn handle(sim: &Sim, method: &str, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let allowed: &[&str] = match method {
        "get.calls_report" => &[
            "access_token",
            "date_from",
            "date_till",
            "limit",
            "offset",
            "filter",
            "fields",
            "sort",
            "user_id",
            "include_ongoing_calls",
        ],
        "get.employees" => &[
            "access_token",
            "limit",
            "offset",
            "filter",
            "fields",
            "sort",
            "user_id",
        ],
        "get.account" => &["access_token", "user_id"],
        _ => {
            return Err(err(
                -32601,
                "method_not_found",
                "The method does not exist / is not available",
            ));
        }
    };
    if sim.take_expire_tokens(System::Comagic) {
        sim.comagic.expired.store(true, Ordering::SeqCst);
    }
    match params.get("access_token").and_then(Value::as_str) {
        None => {
            return Err(param_err(
                "required_parameter_missed",
                "access_token",
                Value::Null,
                REQUIRED_MISSED,
            ));
        }
        Some(t) if t != sim.creds.comagic_access_token => {
            return Err(err(
                -32001,
                "access_token_invalid",
                "Access token is invalid",
            ));
        }
        Some(_) if sim.comagic.expired.load(Ordering::SeqCst) => {
            return Err(err(
                -32001,
                "access_token_expired",
                "Access token has been expired",
            ));
        }
        Some(_) => {}
    }
    if let Some(k) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(param_err(
            "unexpected_parameters",
            k,
            Value::String(k.clone()),
            UNEXPECTED,
        ));
    }
    // Points: a successful call costs one; refuse when the minute or day budget is spent.
    {
        let mut b = sim.comagic.budget.lock().unwrap_or_else(|e| e.into_inner());
        let limits = sim.comagic.limits_json(&mut b);
        let (ml, dl) = sim.comagic.limits();
        if sim.comagic.enforce && (b.minute_used >= ml || b.day_used >= dl) {
            drop(b);
            sim.count_throttled(System::Comagic);
            let (kind, max) = if limits["minute_remaining"] == 0 {
                ("minute", ml)
            } else {
                ("day", dl)
            };
            let mut e = err(-32029, "limit_exceeded", &limit_message(kind, max));
            e.data["metadata"] = json!({ "limits": limits });
            return Err(e);
        }
    }
    let (data, total) = match method {
        "get.calls_report" => calls_report(sim, params)?,
        "get.employees" => employees(sim, params)?,
        // https://github.com/comagic/comagic.github.io data_api/account/get_account/index.html:
        // app_id, name, timezone (IANA zoneinfo), balance.
        _ => (
            vec![json!({
                "app_id": 104_857,
                "name": "Simulated sales department",
                "timezone": sim.comagic.timezone().name(),
                "balance": 1500.0,
            })],
            1,
        ),
    };
    let mut b = sim.comagic.budget.lock().unwrap_or_else(|e| e.into_inner());
    b.minute_used += 1;
    b.day_used += 1;
    let limits = sim.comagic.limits_json(&mut b);
    Ok(json!({"data": data, "metadata": {"total_items": total, "limits": limits}}))
}

fn parse_dt(params: &Map<String, Value>, field: &str) -> Result<NaiveDateTime, RpcError> {
    let v = params.get(field).ok_or_else(|| {
        param_err(
            "required_parameter_missed",
            field,
            Value::Null,
            REQUIRED_MISSED,
        )
    })?;
    v.as_str()
        .and_then(|s| NaiveDateTime::parse_from_str(s, DT_FMT).ok())
        .ok_or_else(|| param_err("invalid_parameter_value", field, v.clone(), INVALID_VALUE))
}

/// Wall time in `tz` of a UTC instant, truncated to seconds.
pub fn local(ts: chrono::DateTime<chrono::Utc>, tz: Tz) -> NaiveDateTime {
    let n = ts.with_timezone(&tz).naive_local();
    n - chrono::Duration::nanoseconds(n.and_utc().timestamp_subsec_nanos() as i64)
}

fn fmt_local(ts: chrono::DateTime<chrono::Utc>, tz: Tz) -> String {
    local(ts, tz).format(DT_FMT).to_string()
}

/// Columns `get.calls_report` returns when `fields` is not given: those
/// data_api/report/get_calls_report/index.html marks "Ответ по умолчанию: да".
const CALLS_DEFAULT_FIELDS: &[&str] = &[
    "id",
    "start_time",
    "finish_time",
    "finish_reason",
    "direction",
    "cpn_region_id",
    "cpn_region_name",
    "cpn_country_name",
    "cpn_country_id",
    "source",
    "is_lost",
    "contact_phone_number",
    "communication_id",
    "communication_type",
    "wait_duration",
    "total_wait_duration",
    "talk_duration",
    "clean_talk_duration",
    "total_duration",
    "call_records",
    "wav_call_records",
    "full_record_file_link",
    "virtual_phone_number",
];

/// Columns that cannot be filtered on (no "Фильтрация: да" on the method's page: the calls
/// report's and the employees' list; every other column can).
const NOT_FILTERABLE: &[&str] = &[
    "start_time",
    "finish_time",
    "communication_page_url",
    "communication_type",
    "call_records",
    "wav_call_records",
    "full_record_file_link",
    "voice_mail_records",
    "ua_client_id",
    "ym_client_id",
    "ymclid",
    "properties",
    "visit_other_campaign",
    "patronymic",
    "operator",
];

/// Columns that can be sorted on ("Сортировка: да" on get_calls_report and get_employees).
const SORTABLE: &[&str] = &[
    "start_time",
    "finish_reason",
    "direction",
    "cpn_region_id",
    "cpn_region_name",
    "cpn_country_name",
    "cpn_country_id",
    "source",
    "is_lost",
    "communication_number",
    "lost_call_processing_duration",
    "virtual_phone_number",
    "sale_date",
    "sale_cost",
    "is_transfer",
    "scenario_id",
    "site_id",
    "campaign_id",
    "auto_call_campaign_name",
    "visitor_id",
    "visitor_type",
    "visitor_device",
    "source_id",
    "source_name",
    "source_new",
    "channel_new",
    "channel_code",
    "ext_id",
    "login",
    "first_name",
    "last_name",
    "patronymic",
    "full_name",
    "calls_available",
];

// Message texts of data_api/index.html "Обработка ошибок".
const INVALID_REQUEST: &str = "Invalid Request The JSON sent is not a valid Request object";
const REQUIRED_MISSED: &str = "The required parameter has been missed";
const INVALID_VALUE: &str = "Invalid parameter value";
const UNEXPECTED: &str = "Unexpected method parameter(s)";
const WRONG_TYPE: &str = "Data supplied is of wrong type";

/// The `limit_exceeded` message: "Limit per {limit_type} has been exceeded. Value of current
/// limit per {limit_type} is {limit_max_value}".
fn limit_message(kind: &str, max: u32) -> String {
    format!("Limit per {kind} has been exceeded. Value of current limit per {kind} is {max}")
}

/// `limit` / `offset` ("Постраничный вывод"): a number within `range`, `default` when absent.
fn paging_param(
    params: &Map<String, Value>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, RpcError> {
    match params.get(name) {
        None => Ok(default),
        Some(v) if !v.is_number() => Err(param_err("data_type_error", name, v.clone(), WRONG_TYPE)),
        Some(v) => v
            .as_u64()
            .filter(|n| range.contains(n))
            .ok_or_else(|| param_err("invalid_parameter_value", name, v.clone(), INVALID_VALUE)),
    }
}

/// Columns of get_calls_report/index.html the world does not model: always null.
const UNMODELLED_NULL_COLUMNS: &[&str] = &[
    "cpn_region_id",
    "cpn_region_name",
    "cpn_country_name",
    "cpn_country_id",
    "properties",
    "ua_client_id",
    "ym_client_id",
    "search_engine",
    "referrer_domain",
    "ef_id",
    "auto_call_campaign_name",
    "visitor_type",
    "visitor_session_id",
    "visits_count",
    "visitor_first_campaign_id",
    "visitor_first_campaign_name",
    "visitor_city",
    "visitor_region",
    "visitor_country",
    "visitor_device",
    "call_api_request_id",
    "call_api_external_id",
    "openstat_ad",
    "openstat_campaign",
    "openstat_service",
    "openstat_source",
    "eq_utm_term",
    "eq_utm_content",
    "eq_utm_referrer",
    "eq_utm_expid",
    "source_id",
    "source_name",
    "source_new",
    "channel_new",
    "channel_code",
    "ext_id",
];

/// One call session in the wire shape of `get.calls_report` (every column, default or not),
/// its times the wall clock of the account's zone `tz`.
pub fn call_row(w: &World, c: &SimCall, tz: Tz) -> Value {
    let emp = c
        .employee_id
        .and_then(|id| w.employees.iter().find(|e| e.id == id));
    let answered = !c.is_lost;
    let communication_id = c.id * 10 + 1;
    let record_id = c.id.wrapping_mul(2_654_435_761) % 1_000_000_007;
    let talk = if answered { c.talk_s } else { 0 };
    let finish = c.start + chrono::Duration::seconds(c.wait_s + talk);
    let employees: Vec<Value> = emp
        .map(|e| {
            vec![json!({
                "employee_id": e.id,
                "employee_full_name": e.full_name,
                "is_answered": answered,
                "is_talked": answered,
            })]
        })
        .unwrap_or_default();
    let (ans_id, ans_name) = match (answered, emp) {
        (true, Some(e)) => (json!(e.id), json!(e.full_name)),
        _ => (Value::Null, Value::Null),
    };
    let opt = |s: &Option<String>| s.clone().map(Value::String).unwrap_or(Value::Null);
    let direction = match c.direction {
        Dir::In => "in",
        Dir::Out => "out",
    };
    let mut out = json!({
        "id": c.id,
        "start_time": fmt_local(c.start, tz),
        "finish_time": fmt_local(finish, tz),
        "direction": direction,
        "is_lost": c.is_lost,
        "finish_reason": if answered { "subscriber_disconnects" } else { "no_success_operator_call" },
        "wait_duration": c.wait_s,
        "total_wait_duration": c.wait_s,
        "talk_duration": talk,
        "clean_talk_duration": talk,
        "total_duration": c.wait_s + talk,
        "postprocess_duration": 0,
        "lost_call_processing_duration": Value::Null,
        "contact_phone_number": c.client_phone,
        "virtual_phone_number": c.virtual_number,
        "operator_phone_number": match (answered, emp) { (true, Some(e)) => json!(e.extension), _ => Value::Null },
        "employees": employees,
        "first_answered_employee_id": ans_id,
        "first_answered_employee_full_name": ans_name,
        "last_answered_employee_id": ans_id,
        "last_answered_employee_full_name": ans_name,
        "last_answered_employee_rating": Value::Null,
        "first_talked_employee_id": ans_id,
        "first_talked_employee_full_name": ans_name,
        "last_talked_employee_id": ans_id,
        "last_talked_employee_full_name": ans_name,
    });
    let more = json!({
        "call_records": if c.has_record { vec![format!("{record_id:x}")] } else { vec![] },
        "wav_call_records": if c.has_record { vec![format!("{record_id:x}")] } else { vec![] },
        "full_record_file_link": if c.has_record {
            json!(format!("https://media.comagic.ru/{communication_id}/{record_id:x}"))
        } else { Value::Null },
        "voice_mail_records": [],
        "communication_id": communication_id,
        "communication_number": 1,
        "communication_type": "call",
        "communication_page_url": if c.direction == Dir::In { json!("https://example-shop.ru/catalog") } else { Value::Null },
    });
    let rest = json!({
        "source": c.source,
        "scenario_id": if c.direction == Dir::In { json!(7001) } else { Value::Null },
        "scenario_name": if c.direction == Dir::In { json!("Основной сценарий") } else { Value::Null },
        "site_id": 3101,
        "site_domain_name": "example-shop.ru",
        "campaign_id": 9101,
        "campaign_name": "Основная кампания",
        "channel": if c.utm.source.is_some() { "paid" } else { "direct" },
        "utm_source": opt(&c.utm.source),
        "utm_medium": opt(&c.utm.medium),
        "utm_campaign": opt(&c.utm.campaign),
        "utm_content": Value::Null,
        "utm_term": Value::Null,
        "gclid": Value::Null,
        "yclid": Value::Null,
        "ymclid": Value::Null,
        "search_query": Value::Null,
        "referrer": Value::Null,
        "entrance_page": Value::Null,
        "visitor_id": Value::Null,
        "person_id": Value::Null,
        "contact_id": Value::Null,
        "contact_full_name": Value::Null,
        "tags": [],
        "attributes": if answered { json!(["primary"]) } else { json!(["lost"]) },
        "is_transfer": false,
        "sale_date": Value::Null,
        "sale_cost": Value::Null,
    });
    // The rest of the response structure of get_calls_report/index.html: columns the world
    // does not model, empty the way the docs say empty columns come back (null, [], false).
    let mut unmodelled = json!({
        "scenario_operations": [],
        "visit_other_campaign": false,
        "visitor_custom_properties": [],
        "segments": [],
        "eq_utm_source": opt(&c.utm.source),
        "eq_utm_medium": opt(&c.utm.medium),
        "eq_utm_campaign": opt(&c.utm.campaign),
    });
    if let Some(o) = unmodelled.as_object_mut() {
        for k in UNMODELLED_NULL_COLUMNS {
            o.insert((*k).to_string(), Value::Null);
        }
    }
    for m in [more, rest, unmodelled] {
        if let (Some(a), Value::Object(b)) = (out.as_object_mut(), m) {
            a.extend(b);
        }
    }
    out
}

/// The notification CoMagic POSTs when the call `c` was lost, in the body template the
/// operator sets up for dozor's receiver (README, "Webhooks"): placeholders filled with the
/// call's values, times the wall clock of the account's zone `tz`.
pub fn lost_call_notification(
    w: &World,
    c: &SimCall,
    tz: Tz,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let emp = c
        .employee_id
        .and_then(|id| w.employees.iter().find(|e| e.id == id));
    json!({
        "notification_mnemonic": "lost_call",
        "call_session_id": c.id,
        "direction": if c.direction == Dir::In { "in" } else { "out" },
        "start_time": fmt_local(c.start, tz),
        "contact_phone_number": c.client_phone,
        "virtual_phone_number": c.virtual_number,
        "employee_id": emp.map(|e| e.id.to_string()).unwrap_or_default(),
        "employee_full_name": emp.map(|e| e.full_name.clone()).unwrap_or_default(),
        "talk_time_duration": "0",
        "total_time_duration": c.wait_s.to_string(),
        "notification_time": fmt_local(now, tz),
    })
}

fn calls_report(sim: &Sim, params: &Map<String, Value>) -> Result<(Vec<Value>, u64), RpcError> {
    let from = parse_dt(params, "date_from")?;
    let till = parse_dt(params, "date_till")?;
    if till < from {
        return Err(param_err(
            "invalid_parameters_combination",
            "date_till",
            json!(till.format(DT_FMT).to_string()),
            "The combination of parameters is not permitted",
        ));
    }
    if from
        .checked_add_months(Months::new(3))
        .is_none_or(|m| till > m)
    {
        return Err(param_err(
            "date_interval_limit_reached",
            "date_till",
            json!(till.format(DT_FMT).to_string()),
            "Max value of requested date interval is 3 months",
        ));
    }
    let tz = sim.comagic.timezone();
    let (mut rows, sample) = {
        let w = sim.world();
        let rows: Vec<Value> = w
            .calls
            .values()
            .filter(|c| {
                let l = local(c.start, tz);
                l >= from && l <= till
            })
            .map(|c| call_row(&w, c, tz))
            .collect();
        let sample = call_row(
            &w,
            &SimCall {
                id: 0,
                start: chrono::Utc::now(),
                direction: Dir::In,
                is_lost: false,
                talk_s: 0,
                wait_s: 0,
                client_phone: String::new(),
                virtual_number: String::new(),
                employee_id: None,
                source: String::new(),
                utm: Default::default(),
                has_record: false,
            },
            tz,
        );
        (rows, sample)
    };
    let known: Vec<String> = sample
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let offset_zero = params.get("offset").and_then(Value::as_u64).unwrap_or(0) == 0;
    let (mut data, total) = report(
        &mut rows,
        params,
        &known,
        Some(CALLS_DEFAULT_FIELDS),
        ("start_time", "id"),
    )?;
    if offset_zero {
        let extra = sim
            .comagic
            .extra_rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        data.extend(extra);
    }
    Ok((data, total))
}

fn employees(sim: &Sim, params: &Map<String, Value>) -> Result<(Vec<Value>, u64), RpcError> {
    let mut rows: Vec<Value> = {
        let w = sim.world();
        w.employees
            .iter()
            .map(|e| {
                let mut parts = e.full_name.splitn(2, ' ');
                let first = parts.next().unwrap_or_default();
                let last = parts.next().unwrap_or_default();
                let active = w.user(e.user_id).is_none_or(|u| u.active);
                // The response structure of data_api/employee/get_employees/index.html.
                json!({
                    "id": e.id,
                    "login": format!("employee{}", e.id),
                    "full_name": e.full_name,
                    "first_name": first,
                    "last_name": last,
                    "patronymic": Value::Null,
                    "email": Value::Null,
                    "status": if active { "available" } else { "not_at_work" },
                    "calls_available": active,
                    "allowed_in_call_types": ["internal", "external"],
                    "in_external_allowed_call_directions": ["in", "out"],
                    "in_internal_allowed_call_directions": ["in", "out"],
                    "allowed_out_call_types": ["internal", "external"],
                    "out_external_allowed_call_directions": ["in", "out"],
                    "out_internal_allowed_call_directions": ["in", "out"],
                    "groups": [],
                    "call_recording": "all",
                    "schedule_id": Value::Null,
                    "schedule_name": Value::Null,
                    "coach": {},
                    "phone_numbers": [],
                    "extension": {
                        "extension_phone_number": e.extension,
                        "extension_voice_mail_enabled": false,
                        "extension_queue_enabled": false,
                    },
                    "operator": {},
                })
            })
            .collect()
    };
    let known: Vec<String> = rows
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_else(|| vec!["id".into(), "full_name".into(), "extension".into()]);
    report(&mut rows, params, &known, None, ("id", "id"))
}

/// Filter, sort, page and project a report's rows the way every `get.*` method does; without
/// `fields` the method's `defaults` (every column when `None`) are returned.
fn report(
    rows: &mut Vec<Value>,
    params: &Map<String, Value>,
    known: &[String],
    defaults: Option<&[&str]>,
    default_sort: (&str, &str),
) -> Result<(Vec<Value>, u64), RpcError> {
    let fields: Vec<String> = match params.get("fields") {
        None | Some(Value::Null) => known
            .iter()
            .filter(|f| defaults.is_none_or(|d| d.contains(&f.as_str())))
            .cloned()
            .collect(),
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for f in a {
                let Some(name) = f.as_str().filter(|n| known.iter().any(|k| k == n)) else {
                    return Err(param_err(
                        "unexpected_parameters",
                        "fields",
                        f.clone(),
                        UNEXPECTED,
                    ));
                };
                out.push(name.to_string());
            }
            out
        }
        Some(other) => {
            return Err(param_err(
                "data_type_error",
                "fields",
                other.clone(),
                WRONG_TYPE,
            ));
        }
    };
    let limit = paging_param(params, "limit", 1000, 1..=10_000)?;
    let offset = paging_param(params, "offset", 0, 0..=100_000)?;
    if let Some(f) = params.get("filter").filter(|f| !f.is_null()) {
        check_filter(f, known)?;
        rows.retain(|r| eval_filter(f, r));
    }
    let mut sort: Vec<(String, bool)> = Vec::new();
    match params.get("sort") {
        None | Some(Value::Null) => {
            sort.push((default_sort.0.into(), true));
            sort.push((default_sort.1.into(), true));
        }
        Some(Value::Array(a)) => {
            for s in a {
                let field = s.get("field").and_then(Value::as_str).unwrap_or_default();
                if !known.iter().any(|k| k == field) {
                    return Err(param_err(
                        "unexpected_parameters",
                        "sort.field",
                        json!(field),
                        UNEXPECTED,
                    ));
                }
                if !SORTABLE.contains(&field) {
                    return Err(param_err(
                        "sort_prohibited",
                        "sort.field",
                        json!(field),
                        "Sort by parameter is prohibited",
                    ));
                }
                let asc = match s.get("order").and_then(Value::as_str) {
                    None | Some("asc") => true,
                    Some("desc") => false,
                    Some(o) => {
                        return Err(param_err(
                            "invalid_parameter_value",
                            "sort.order",
                            json!(o),
                            INVALID_VALUE,
                        ));
                    }
                };
                sort.push((field.to_string(), asc));
            }
            sort.push(("id".into(), true));
        }
        Some(other) => {
            return Err(param_err(
                "data_type_error",
                "sort",
                other.clone(),
                WRONG_TYPE,
            ));
        }
    }
    rows.sort_by(|a, b| {
        for (f, asc) in &sort {
            let o = cmp_values(&a[f.as_str()], &b[f.as_str()]);
            let o = if *asc { o } else { o.reverse() };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    let total = rows.len() as u64;
    let data = rows
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|r| {
            let mut o = Map::new();
            for f in &fields {
                o.insert(f.clone(), r[f.as_str()].clone());
            }
            Value::Object(o)
        })
        .collect();
    Ok((data, total))
}

fn cmp_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

const OPERATORS: &[&str] = &[
    "=",
    "!=",
    "<",
    ">",
    "<=",
    ">=",
    "in",
    "not_in",
    "is_null",
    "is_not_null",
    "like",
    "ilike",
    "not_like",
    "not_ilike",
];

fn check_filter(f: &Value, known: &[String]) -> Result<(), RpcError> {
    if let Some(list) = f.get("filters") {
        let Some(list) = list.as_array() else {
            return Err(param_err(
                "data_type_error",
                "filter.filters",
                list.clone(),
                WRONG_TYPE,
            ));
        };
        match f.get("condition").and_then(Value::as_str) {
            Some("and") | Some("or") | None => {}
            Some(c) => {
                return Err(param_err(
                    "invalid_parameter_value",
                    "filter.condition",
                    json!(c),
                    INVALID_VALUE,
                ));
            }
        }
        for sub in list {
            check_filter(sub, known)?;
        }
        return Ok(());
    }
    let field = f.get("field").and_then(Value::as_str).unwrap_or_default();
    if !known.iter().any(|k| k == field) {
        return Err(param_err(
            "unexpected_parameters",
            "filter.field",
            json!(field),
            UNEXPECTED,
        ));
    }
    if NOT_FILTERABLE.contains(&field) {
        return Err(param_err(
            "filter_prohibited",
            "filter.field",
            json!(field),
            "Filter by parameter is prohibited",
        ));
    }
    let op = f
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !OPERATORS.contains(&op) {
        return Err(param_err(
            "invalid_parameter_value",
            "filter.operator",
            json!(op),
            INVALID_VALUE,
        ));
    }
    if matches!(op, "in" | "not_in") && !f.get("value").is_some_and(Value::is_array) {
        return Err(param_err(
            "data_type_error",
            "filter.value",
            f.get("value").cloned().unwrap_or(Value::Null),
            WRONG_TYPE,
        ));
    }
    Ok(())
}

fn like(s: &str, pat: &str) -> bool {
    // `%` matches any run of characters; everything else literally.
    let parts: Vec<&str> = pat.split('%').collect();
    if parts.len() == 1 {
        return s == pat;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else if let Some(pos) = rest.find(p) {
            rest = &rest[pos + p.len()..];
        } else {
            return false;
        }
    }
    true
}

fn eval_filter(f: &Value, row: &Value) -> bool {
    if let Some(list) = f.get("filters").and_then(Value::as_array) {
        let or = f.get("condition").and_then(Value::as_str) == Some("or");
        return if or {
            list.iter().any(|s| eval_filter(s, row))
        } else {
            list.iter().all(|s| eval_filter(s, row))
        };
    }
    let field = f.get("field").and_then(Value::as_str).unwrap_or_default();
    let op = f
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let value = f.get("value").unwrap_or(&Value::Null);
    let have = &row[field];
    let eq = |a: &Value, b: &Value| {
        a == b || cmp_values(a, b) == std::cmp::Ordering::Equal && !a.is_null() && !b.is_null()
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match op {
        "=" => eq(have, value),
        "!=" => !eq(have, value),
        "<" => !have.is_null() && cmp_values(have, value).is_lt(),
        ">" => !have.is_null() && cmp_values(have, value).is_gt(),
        "<=" => !have.is_null() && cmp_values(have, value).is_le(),
        ">=" => !have.is_null() && cmp_values(have, value).is_ge(),
        "in" => value
            .as_array()
            .is_some_and(|a| a.iter().any(|v| eq(have, v))),
        "not_in" => value
            .as_array()
            .is_some_and(|a| !a.iter().any(|v| eq(have, v))),
        "is_null" => have.is_null(),
        "is_not_null" => !have.is_null(),
        "like" => like(&text(have), &text(value)),
        "not_like" => !like(&text(have), &text(value)),
        "ilike" => like(&text(have).to_lowercase(), &text(value).to_lowercase()),
        "not_ilike" => !like(&text(have).to_lowercase(), &text(value).to_lowercase()),
        _ => false,
    }
}

/// The wall-clock string in `tz` of a UTC instant, as this fake renders it.
pub fn render_time(ts: chrono::DateTime<chrono::Utc>, tz: Tz) -> String {
    fmt_local(ts, tz)
}

/// Parses a wall-clock string in `tz` back into UTC (inverse of [`render_time`]).
pub fn parse_time(s: &str, tz: Tz) -> Option<chrono::DateTime<chrono::Utc>> {
    let n = NaiveDateTime::parse_from_str(s, DT_FMT).ok()?;
    tz.from_local_datetime(&n)
        .earliest()
        .map(|t| t.with_timezone(&chrono::Utc))
}
