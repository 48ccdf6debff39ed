//! Contract: CoMagic Data API v2.0 (JSON-RPC 2.0).
//!
//! Pages, all in the official docs repository github.com/comagic/comagic.github.io:
//! - `data_api/index.html` — "Соглашения", "Лимиты и ограничения", "Обработка ошибок" (error
//!   structure, codes, mnemonics and message texts), "Критерии фильтрации", "Сортировка данных",
//!   "Постраничный вывод", "Мета-параметры", "Общие поля для всех методов";
//! - `data_api/report/get_calls_report/index.html` — request parameters, the response table
//!   (filter / sort / default columns) and the JSON request and response structures;
//! - `data_api/employee/get_employees/index.html` — request and response structures;
//! - `data_api/account/get_account/index.html` — request and response structures.
//!
//! The placeholders of the docs' JSON structures (`"number"`, `"string"`, `"iso8601"`, …) are
//! filled with values of that type; nothing is added that the pages do not show.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use dozor::config::ComagicConfig;
use dozor::domain::{Direction, TelephonyKind};
use dozor::http::ErrorKind;
use dozor::telephony::Telephony;
use dozor::telephony::comagic::Comagic;
use dozor_sim::SimHandle;
use serde_json::{Value, json};

use super::replay::{Answer, Asked, Docs, assert_same_shape};

const TOKEN: &str = "docs-access-token-0123";

/// Request parameters of `get.calls_report` ("Параметры запроса").
const CALLS_REPORT_PARAMS: &[&str] = &[
    "access_token",
    "user_id",
    "limit",
    "offset",
    "filter",
    "fields",
    "sort",
    "date_from",
    "date_till",
    "include_ongoing_calls",
];

/// Top-level columns of `get.calls_report` ("Параметры ответа").
const CALLS_REPORT_COLUMNS: &[&str] = &[
    "id",
    "start_time",
    "finish_time",
    "finish_reason",
    "direction",
    "cpn_region_id",
    "cpn_region_name",
    "cpn_country_name",
    "cpn_country_id",
    "properties",
    "scenario_operations",
    "source",
    "is_lost",
    "communication_number",
    "communication_page_url",
    "contact_phone_number",
    "communication_id",
    "communication_type",
    "wait_duration",
    "total_wait_duration",
    "lost_call_processing_duration",
    "talk_duration",
    "clean_talk_duration",
    "total_duration",
    "postprocess_duration",
    "call_records",
    "wav_call_records",
    "full_record_file_link",
    "voice_mail_records",
    "virtual_phone_number",
    "ua_client_id",
    "ym_client_id",
    "sale_date",
    "sale_cost",
    "is_transfer",
    "search_query",
    "search_engine",
    "referrer_domain",
    "referrer",
    "entrance_page",
    "gclid",
    "yclid",
    "ymclid",
    "ef_id",
    "channel",
    "tags",
    "employees",
    "last_answered_employee_id",
    "last_answered_employee_full_name",
    "last_answered_employee_rating",
    "first_answered_employee_id",
    "first_answered_employee_full_name",
    "last_talked_employee_id",
    "last_talked_employee_full_name",
    "first_talked_employee_id",
    "first_talked_employee_full_name",
    "operator_phone_number",
    "scenario_name",
    "scenario_id",
    "site_domain_name",
    "site_id",
    "campaign_name",
    "campaign_id",
    "visit_other_campaign",
    "auto_call_campaign_name",
    "visitor_id",
    "person_id",
    "visitor_type",
    "visitor_session_id",
    "visits_count",
    "visitor_first_campaign_id",
    "visitor_first_campaign_name",
    "visitor_city",
    "visitor_region",
    "visitor_country",
    "visitor_device",
    "visitor_custom_properties",
    "segments",
    "call_api_request_id",
    "call_api_external_id",
    "contact_id",
    "contact_full_name",
    "utm_source",
    "utm_medium",
    "utm_term",
    "utm_content",
    "utm_campaign",
    "openstat_ad",
    "openstat_campaign",
    "openstat_service",
    "openstat_source",
    "attributes",
    "eq_utm_source",
    "eq_utm_medium",
    "eq_utm_term",
    "eq_utm_content",
    "eq_utm_campaign",
    "eq_utm_referrer",
    "eq_utm_expid",
    "source_id",
    "source_name",
    "source_new",
    "channel_new",
    "channel_code",
    "ext_id",
];

/// Columns of `get.calls_report` marked "Сортировка: да".
const CALLS_REPORT_SORTABLE: &[&str] = &[
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
];

/// Columns of `get.calls_report` marked "Ответ по умолчанию: да".
const CALLS_REPORT_DEFAULT: &[&str] = &[
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

/// The response structure of get_calls_report/index.html ("JSON структура ответа"), every
/// placeholder filled with a value of its type. One inbound answered call of 2026-03-11
/// 10:30:00 (account wall clock).
fn docs_calls_row() -> Value {
    json!({
        "id": 2911,
        "start_time": "2026-03-11 10:30:00",
        "finish_time": "2026-03-11 10:32:05",
        "virtual_phone_number": "74951234567",
        "is_transfer": false,
        "finish_reason": "subscriber_disconnects",
        "direction": "in",
        "source": "call_tracking",
        "communication_number": 1,
        "communication_page_url": "https://example.ru/contacts",
        "communication_id": 88001,
        "communication_type": "call",
        "is_lost": false,
        "cpn_region_id": 77,
        "cpn_region_name": "Москва",
        "cpn_country_name": "Россия",
        "cpn_country_id": "643",
        "wait_duration": 5,
        "total_wait_duration": 7,
        "lost_call_processing_duration": 0,
        "talk_duration": 120,
        "clean_talk_duration": 118,
        "total_duration": 125,
        "postprocess_duration": 0,
        "ua_client_id": "1234567890.1700000000",
        "ym_client_id": "1700000000123456789",
        "sale_date": "2026-03-12 12:00:00",
        "sale_cost": 15000,
        "search_query": "купить диван",
        "search_engine": "yandex",
        "referrer_domain": "yandex.ru",
        "referrer": "https://yandex.ru/",
        "entrance_page": "https://example.ru/",
        "gclid": "g-1",
        "yclid": "y-1",
        "ymclid": "ym-1",
        "ef_id": "ef-1",
        "channel": "paid",
        "site_id": 3101,
        "site_domain_name": "example.ru",
        "campaign_id": 9101,
        "campaign_name": "Основная кампания",
        "auto_call_campaign_name": "Обзвон",
        "visit_other_campaign": false,
        "visitor_id": 5001,
        "person_id": 6001,
        "visitor_type": "Новый",
        "visitor_session_id": 7001,
        "visits_count": 3,
        "visitor_first_campaign_id": 9101,
        "visitor_first_campaign_name": "Основная кампания",
        "visitor_city": "Москва",
        "visitor_region": "Москва",
        "visitor_country": "Россия",
        "visitor_device": "desktop",
        "last_answered_employee_id": 41,
        "last_answered_employee_full_name": "Иванова Анна",
        "last_answered_employee_rating": 5,
        "first_answered_employee_id": 41,
        "first_answered_employee_full_name": "Иванова Анна",
        "scenario_id": 7001,
        "scenario_name": "Основной сценарий",
        "call_api_external_id": "ext-1",
        "call_api_request_id": 1,
        "contact_phone_number": "79991234567",
        "contact_full_name": "Петров Пётр",
        "contact_id": 801,
        "utm_source": "yandex",
        "utm_medium": "cpc",
        "utm_term": "диван",
        "utm_content": "banner",
        "utm_campaign": "spring",
        "openstat_ad": "a",
        "openstat_campaign": "c",
        "openstat_service": "s",
        "openstat_source": "src",
        "eq_utm_source": "yandex",
        "eq_utm_medium": "cpc",
        "eq_utm_term": "диван",
        "eq_utm_content": "banner",
        "eq_utm_campaign": "spring",
        "eq_utm_referrer": "https://yandex.ru/",
        "eq_utm_expid": "e",
        "attributes": ["primary"],
        "call_records": ["f3a9c2"],
        "voice_mail_records": [],
        "tags": [{
            "tag_id": 1,
            "tag_name": "Целевой",
            "tag_type": "manual",
            "tag_change_time": "2026-03-11 10:40:00",
            "tag_user_id": 2,
            "tag_user_login": "admin",
            "tag_employee_id": 41,
            "tag_employee_full_name": "Иванова Анна"
        }],
        "visitor_custom_properties": [{"property_name": "cart", "property_value": "1"}],
        "segments": [{"segment_id": 1, "segment_name": "Новые"}],
        "employees": [{"employee_id": 41, "employee_full_name": "Иванова Анна", "is_answered": true}],
        "operator_phone_number": "74951110041",
        "scenario_operations": [{"name": "Переадресация", "id": 3}],
        "source_id": 11,
        "source_name": "Яндекс.Директ",
        "source_new": "Реклама",
        "channel_new": "Платный",
        "channel_code": "paid",
        "ext_id": "crm-1",
        "properties": "Перезвоните после обеда"
    })
}

/// A JSON-RPC answer to `asked` ("Общие поля для всех методов": the answer carries the
/// request's `id`).
fn result(asked: &Asked, result: Value) -> Answer {
    Answer::json(json!({"jsonrpc": "2.0", "id": asked.json()["id"], "result": result}))
}

/// A JSON-RPC error to `asked`, in the "JSON структура ошибки" of data_api/index.html.
fn error(asked: &Asked, code: i64, message: &str, data: Value) -> Answer {
    Answer::json(json!({"jsonrpc": "2.0", "id": asked.json()["id"],
                        "error": {"code": code, "message": message, "data": data}}))
}

/// A client for the stand-in; the account zone comes from the config (no `get.account`).
fn client(docs: &Docs) -> Comagic {
    Comagic::new(
        &ComagicConfig {
            timezone: Some(chrono_tz::Europe::Moscow),
            ..crate::common::comagic_config(format!("{}/v2.0", docs.base), TOKEN)
        },
        chrono_tz::Europe::Moscow,
    )
}

fn is_api_datetime(s: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok() && s.len() == 19
}

fn march(day: u32, h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, h, 0, 0).unwrap()
}

/// data_api/index.html "Соглашения" (POST, `Content-Type: application/json; charset=UTF-8`,
/// date-times `YYYY-MM-DD hh:mm:ss`), "Общие поля для всех методов" (`jsonrpc` "2.0", `id`,
/// `method`, `params`) and get_calls_report/index.html "Параметры запроса": dozor's request
/// uses only documented parameters, documented columns, a sortable sort column and the
/// paging bounds of "Постраничный вывод" (limit ≤ 10 000, offset ≤ 100 000).
#[tokio::test]
async fn calls_report_request_has_the_documented_shape() {
    let docs =
        Docs::start(|a| result(a, json!({"metadata": {"total_items": 0}, "data": []}))).await;
    let calls = client(&docs)
        .calls(march(10, 21), march(11, 21))
        .await
        .unwrap();
    assert!(calls.is_empty());
    let asked = docs.asked();
    assert_eq!(asked.len(), 1);
    let a = &asked[0];
    assert_eq!(a.method, "POST");
    assert_eq!(a.path(), "/v2.0");
    assert_eq!(
        a.headers["content-type"].to_str().unwrap(),
        "application/json; charset=UTF-8"
    );
    let body = a.json();
    assert_eq!(body["jsonrpc"], "2.0");
    assert!(body["id"].is_string() || body["id"].is_number(), "{body}");
    assert_eq!(body["method"], "get.calls_report");
    let params = body["params"].as_object().unwrap();
    for k in params.keys() {
        assert!(
            CALLS_REPORT_PARAMS.contains(&k.as_str()),
            "undocumented parameter {k}"
        );
    }
    assert_eq!(params["access_token"], TOKEN);
    // Moscow wall clock of [2026-03-10 21:00Z, 2026-03-11 21:00Z), both ends inclusive.
    assert_eq!(params["date_from"], "2026-03-11 00:00:00");
    assert_eq!(params["date_till"], "2026-03-11 23:59:59");
    assert!(is_api_datetime(params["date_from"].as_str().unwrap()));
    for f in params["fields"].as_array().unwrap() {
        let f = f.as_str().unwrap();
        assert!(CALLS_REPORT_COLUMNS.contains(&f), "undocumented column {f}");
    }
    for s in params["sort"].as_array().unwrap() {
        let f = s["field"].as_str().unwrap();
        assert!(CALLS_REPORT_SORTABLE.contains(&f), "{f} is not sortable");
        assert!(matches!(s["order"].as_str(), Some("asc" | "desc") | None));
    }
    let limit = params["limit"].as_u64().unwrap();
    assert!((1..=10_000).contains(&limit), "{limit}");
    assert!(params["offset"].as_u64().unwrap() <= 100_000);
}

/// get_calls_report/index.html "JSON структура ответа", every column filled: dozor reads the
/// call session (id, start in the account's wall clock, direction, `is_lost`, durations,
/// numbers, the first answering employee, UTM) and builds the recording link the page gives
/// for `call_records`: `https://app.comagic.ru/system/media/talk/{communication_id}/{id}/`.
#[tokio::test]
async fn documented_calls_report_row_is_read() {
    let docs = Docs::start(|a| {
        result(
            a,
            json!({"metadata": {"total_items": 1}, "data": [docs_calls_row()]}),
        )
    })
    .await;
    let calls = client(&docs)
        .calls(march(10, 21), march(11, 21))
        .await
        .unwrap();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.id, "2911");
    assert_eq!(c.provider, TelephonyKind::Comagic);
    assert_eq!(
        c.started_at,
        Utc.with_ymd_and_hms(2026, 3, 11, 7, 30, 0).unwrap()
    );
    assert_eq!(c.direction, Direction::In);
    assert!(c.answered);
    assert_eq!((c.talk_s, c.wait_s), (120, 5));
    assert_eq!(c.client_phone, "79991234567");
    assert_eq!(c.virtual_number.as_deref(), Some("74951234567"));
    assert_eq!(c.employee_id.as_deref(), Some("41"));
    assert_eq!(c.employee_name.as_deref(), Some("Иванова Анна"));
    assert_eq!(
        c.recording_url.as_deref(),
        Some("https://app.comagic.ru/system/media/talk/88001/f3a9c2/")
    );
    assert_eq!(c.source.as_deref(), Some("call_tracking"));
    assert_eq!(c.utm.source.as_deref(), Some("yandex"));
    assert_eq!(c.utm.term.as_deref(), Some("диван"));
}

/// data_api/index.html "Соглашения": "Пустые поля всегда возвращаются в ответе со значением
/// null. В случае массива возвращается пустой массив". A lost call with nobody answering has
/// null employees' columns, null durations and UTM, and empty arrays: it is read, not refused.
#[tokio::test]
async fn empty_columns_are_null_and_the_row_is_still_read() {
    let docs = Docs::start(|a| {
        let mut row = docs_calls_row();
        for k in [
            "first_answered_employee_id",
            "first_answered_employee_full_name",
            "last_answered_employee_id",
            "last_answered_employee_full_name",
            "last_answered_employee_rating",
            "operator_phone_number",
            "talk_duration",
            "clean_talk_duration",
            "wait_duration",
            "utm_source",
            "utm_medium",
            "utm_term",
            "utm_content",
            "utm_campaign",
            "contact_full_name",
            "contact_id",
        ] {
            row[k] = Value::Null;
        }
        row["is_lost"] = json!(true);
        row["employees"] = json!([]);
        row["call_records"] = json!([]);
        row["tags"] = json!([]);
        result(a, json!({"metadata": {"total_items": 1}, "data": [row]}))
    })
    .await;
    let calls = client(&docs)
        .calls(march(10, 21), march(11, 21))
        .await
        .unwrap();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert!(!c.answered);
    assert_eq!((c.talk_s, c.wait_s), (0, 0));
    assert_eq!(c.employee_id, None);
    assert_eq!(c.recording_url, None);
    assert_eq!(c.utm.source, None);
}

/// data_api/index.html "Постраничный вывод" (`offset` from which `limit` rows are returned)
/// and "Мета-параметры" (`metadata.total_items`, `metadata.limits`, and `api_version` on a
/// deprecated version): dozor pages by `offset` until `total_items` and reads the deprecation
/// object without failing.
#[tokio::test]
async fn pages_follow_total_items() {
    let docs = Docs::start(|a| {
        let offset = a.json()["params"]["offset"].as_u64().unwrap_or(0);
        let rows: Vec<Value> = (offset..(offset + 10).min(25))
            .map(|i| {
                let mut r = docs_calls_row();
                r["id"] = json!(3000 + i);
                r["start_time"] = json!(format!("2026-03-11 10:{:02}:00", i));
                r
            })
            .collect();
        result(
            a,
            json!({"metadata": {
                       "api_version": {"current_version_deprecated": true,
                                       "current_version": "2.0", "latest_version": "2.1"},
                       "limits": {"day_limit": 10000, "day_remaining": 9000, "day_reset": 3600,
                                  "minute_limit": 100, "minute_remaining": 90, "minute_reset": 30},
                       "total_items": 25},
                   "data": rows}),
        )
    })
    .await;
    let calls = client(&docs)
        .with_paging(10, 100_000)
        .calls(march(10, 21), march(11, 21))
        .await
        .unwrap();
    assert_eq!(calls.len(), 25);
    let asked = docs.asked();
    let pages: Vec<(u64, u64)> = asked
        .iter()
        .map(|a| {
            let p = &a.json()["params"];
            (p["offset"].as_u64().unwrap(), p["limit"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(pages, vec![(0, 10), (10, 10), (20, 10)]);
}

/// data_api/index.html "Список ошибок для методов с глаголом get": "Max value of requested
/// date interval is 3 months" (`date_interval_limit_reached`). A 200-day read is asked for in
/// windows no longer than three calendar months, meeting exactly.
#[tokio::test]
async fn long_periods_are_asked_in_windows_of_at_most_3_months() {
    let docs =
        Docs::start(|a| result(a, json!({"metadata": {"total_items": 0}, "data": []}))).await;
    let from = Utc.with_ymd_and_hms(2025, 11, 1, 0, 0, 0).unwrap();
    client(&docs)
        .calls(from, from + chrono::Duration::days(200))
        .await
        .unwrap();
    let asked = docs.asked();
    assert!(asked.len() >= 3);
    let dt = |v: &Value| {
        chrono::NaiveDateTime::parse_from_str(v.as_str().unwrap(), "%Y-%m-%d %H:%M:%S").unwrap()
    };
    let mut prev_till = None;
    for a in &asked {
        let p = &a.json()["params"];
        let (f, t) = (dt(&p["date_from"]), dt(&p["date_till"]));
        assert!(
            t <= f.checked_add_months(chrono::Months::new(3)).unwrap(),
            "{f} .. {t}"
        );
        if let Some(pt) = prev_till {
            assert_eq!(f, pt + chrono::Duration::seconds(1), "windows meet");
        }
        prev_till = Some(t);
    }
}

/// data_api/index.html "Список ошибок общих для всех методов": -32001 `access_token_expired`
/// ("Access token has been expired"), `access_token_blocked` ("Access token has been
/// blocked"), `access_token_invalid` ("Access token is invalid"); -32003 `ip_not_whitelisted`
/// ("Your IP {ip} is not whitelisted") and `forbidden` ("Permission denied"). Each is an
/// authentication error, asked once (no retry), naming the mnemonic and never the key.
#[tokio::test]
async fn auth_and_permission_errors_are_not_retried() {
    let cases = [
        (
            -32001,
            "access_token_expired",
            "Access token has been expired",
        ),
        (
            -32001,
            "access_token_blocked",
            "Access token has been blocked",
        ),
        (-32001, "access_token_invalid", "Access token is invalid"),
        (
            -32003,
            "ip_not_whitelisted",
            "Your IP 203.0.113.7 is not whitelisted",
        ),
        (-32003, "forbidden", "Permission denied"),
    ];
    for (code, mnemonic, message) in cases {
        let docs = Docs::start(move |a| {
            error(
                a,
                code,
                message,
                json!({"mnemonic": mnemonic, "params": {}}),
            )
        })
        .await;
        let e = client(&docs)
            .calls(march(10, 21), march(11, 21))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth, "{mnemonic}: {e}");
        let shown = e.to_string();
        assert!(shown.contains(mnemonic), "{shown}");
        assert!(!shown.contains(TOKEN), "{shown}");
        assert_eq!(docs.asked().len(), 1, "{mnemonic} is not retried");
    }
}

/// data_api/index.html: -32602 `invalid_parameter_value` ("Invalid parameter value") with
/// `data.field` naming the parameter ("Вложенные параметры отображаются через разделитель
/// точка") and `data.value` what was sent. A permanent error naming the field, asked once.
#[tokio::test]
async fn invalid_parameter_is_permanent_and_names_the_field() {
    let docs = Docs::start(|a| {
        error(
            a,
            -32602,
            "Invalid parameter value",
            json!({"mnemonic": "invalid_parameter_value", "field": "date_from",
                   "value": "15.01.2024", "params": {},
                   "extended_helper": "https://comagic.github.io/data_api/", "metadata": {}}),
        )
    })
    .await;
    let e = client(&docs)
        .calls(march(10, 21), march(11, 21))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    let shown = e.to_string();
    assert!(
        shown.contains("invalid_parameter_value") && shown.contains("date_from"),
        "{shown}"
    );
    assert_eq!(docs.asked().len(), 1);
}

/// data_api/index.html: -32029 `limit_exceeded` ("Limit per {limit_type} has been exceeded.
/// Value of current limit per {limit_type} is {limit_max_value}"), with the limits in the
/// error's meta-parameters ("Присутствуют как в ошибочном, так и в успешном ответе";
/// `error.data.metadata` in the error structure). dozor waits `minute_reset` and asks again.
#[tokio::test]
async fn limit_exceeded_waits_for_the_minute_reset() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let docs = Docs::start(move |a| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            error(
                a,
                -32029,
                "Limit per minute has been exceeded. Value of current limit per minute is 100",
                json!({"mnemonic": "limit_exceeded",
                       "params": {"limit_type": "minute", "limit_max_value": 100},
                       "metadata": {"limits": {"day_limit": 10000, "day_remaining": 5000,
                                               "day_reset": 3600, "minute_limit": 100,
                                               "minute_remaining": 0, "minute_reset": 1}}}),
            )
        } else {
            result(
                a,
                json!({"metadata": {"total_items": 1}, "data": [docs_calls_row()]}),
            )
        }
    })
    .await;
    let t0 = Instant::now();
    let calls = client(&docs)
        .calls(march(10, 21), march(11, 21))
        .await
        .unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(docs.asked().len(), 2);
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
}

/// data_api/index.html "Лимиты и ограничения" / "Мета-параметры": `minute_remaining` and
/// `minute_reset` (seconds) come back in every answer. With the minute budget spent, the next
/// page waits for the reset instead of spending a refused request.
#[tokio::test]
async fn spent_minute_budget_delays_the_next_page() {
    let docs = Docs::start(|a| {
        let offset = a.json()["params"]["offset"].as_u64().unwrap_or(0);
        let mut row = docs_calls_row();
        row["id"] = json!(4000 + offset);
        result(
            a,
            json!({"metadata": {"total_items": 2,
                                "limits": {"day_limit": 10000, "day_remaining": 10,
                                           "day_reset": 3600, "minute_limit": 2,
                                           "minute_remaining": 0, "minute_reset": 1}},
                   "data": [row]}),
        )
    })
    .await;
    let t0 = Instant::now();
    let calls = client(&docs)
        .with_paging(1, 100_000)
        .calls(march(10, 21), march(11, 21))
        .await
        .unwrap();
    assert_eq!(calls.len(), 2);
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
}

/// data_api/index.html: -32603 `internal_error` ("Internal error, contact the support
/// service") is a server-side failure: asked again, and the answer after it is used.
#[tokio::test]
async fn internal_error_is_retried() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let docs = Docs::start(move |a| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            error(
                a,
                -32603,
                "Internal error, contact the support service",
                json!({"mnemonic": "internal_error", "params": {}}),
            )
        } else {
            result(
                a,
                json!({"metadata": {"total_items": 1}, "data": [docs_calls_row()]}),
            )
        }
    })
    .await;
    let calls = client(&docs)
        .calls(march(10, 21), march(11, 21))
        .await
        .unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(docs.asked().len(), 2);
}

/// get_employees/index.html: request parameters (`access_token`, `user_id`, `limit`, `offset`,
/// `filter`, `fields`, `sort`) and "JSON структура ответа" with its placeholders filled: the
/// employee's id, `full_name` and `extension.extension_phone_number` are read.
#[tokio::test]
async fn employees_request_and_documented_answer() {
    let docs = Docs::start(|a| {
        result(
            a,
            json!({"metadata": {"total_items": 1}, "data": [{
                "id": 41,
                "first_name": "Анна",
                "login": "anna",
                "last_name": "Иванова",
                "patronymic": "Сергеевна",
                "full_name": "Иванова Анна Сергеевна",
                "email": "anna@example.ru",
                "status": "available",
                "calls_available": true,
                "allowed_in_call_types": ["external"],
                "in_external_allowed_call_directions": ["in"],
                "in_internal_allowed_call_directions": ["in"],
                "allowed_out_call_types": ["external"],
                "out_external_allowed_call_directions": ["out"],
                "out_internal_allowed_call_directions": ["out"],
                "groups": [{"group_id": 1, "group_name": "Продажи"}],
                "call_recording": "all",
                "schedule_id": 1,
                "schedule_name": "Рабочие часы",
                "coach": {"coach_id": 2, "coach_full_name": "Петров Пётр", "coach_always_enabled": false},
                "phone_numbers": [{"phone_id": 1, "phone_number": "79991110041",
                                   "channels_count": 1, "dial_time": 60, "status": "active"}],
                "extension": {"extension_phone_number": "141",
                              "extension_voice_mail_enabled": false,
                              "extension_queue_enabled": false},
                "operator": {"operator_login": "anna", "operator_display_name": "Анна",
                             "operator_position_id": 1, "operator_position_name": "Менеджер",
                             "operator_offline_message_enabled": true,
                             "operator_invite_to_chat_enabled": true,
                             "operator_chat_enabled": true, "operator_chats_available": true,
                             "operator_sites": [{"site_id": 3101, "site_domain_name": "example.ru"}]}
            }]}),
        )
    })
    .await;
    let emps = client(&docs).employees().await.unwrap();
    assert_eq!(emps.len(), 1);
    assert_eq!(emps[0].id, "41");
    assert_eq!(emps[0].name, "Иванова Анна Сергеевна");
    assert_eq!(emps[0].extension.as_deref(), Some("141"));
    let body = docs.asked()[0].json();
    assert_eq!(body["method"], "get.employees");
    let documented = [
        "access_token",
        "user_id",
        "limit",
        "offset",
        "filter",
        "fields",
        "sort",
    ];
    for k in body["params"].as_object().unwrap().keys() {
        assert!(
            documented.contains(&k.as_str()),
            "undocumented parameter {k}"
        );
    }
    let columns = [
        "id",
        "login",
        "first_name",
        "last_name",
        "patronymic",
        "full_name",
        "status",
        "status_id",
        "calls_available",
        "email",
        "groups",
        "phone_numbers",
        "extension",
        "coach",
        "operator",
        "call_recording",
        "schedule_id",
        "schedule_name",
    ];
    for f in body["params"]["fields"].as_array().unwrap() {
        assert!(
            columns.contains(&f.as_str().unwrap()),
            "undocumented column {f}"
        );
    }
}

/// get_calls_report/index.html: `id` is filterable ("Фильтрация: да") and a simple filter is
/// `{"field", "operator", "value"}` (data_api/index.html "Пример JSON структуры простого
/// фильтра"). A pushed call is confirmed with exactly that filter.
#[tokio::test]
async fn a_call_is_confirmed_with_the_documented_id_filter() {
    let docs = Docs::start(|a| {
        result(
            a,
            json!({"metadata": {"total_items": 1}, "data": [docs_calls_row()]}),
        )
    })
    .await;
    let now = Utc.with_ymd_and_hms(2026, 3, 11, 8, 0, 0).unwrap();
    let call = client(&docs)
        .call_by_id("2911", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.id, "2911");
    let p = docs.asked()[0].json()["params"].clone();
    assert_eq!(
        p["filter"],
        json!({"field": "id", "operator": "=", "value": 2911})
    );
    assert!(is_api_datetime(p["date_from"].as_str().unwrap()));
    assert!(is_api_datetime(p["date_till"].as_str().unwrap()));
}

// ---- the simulator answers the documented requests in the documented shape ----

async fn sim() -> SimHandle {
    crate::common::small_sim(31).await
}

async fn sim_rpc(h: &SimHandle, body: &str) -> Value {
    let r = reqwest::Client::new()
        .post(h.comagic_url())
        .header("content-type", "application/json; charset=UTF-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

async fn call(h: &SimHandle, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": "docs-1", "method": method, "params": params});
    sim_rpc(h, &body.to_string()).await
}

fn window(h: &SimHandle) -> (String, String) {
    let now = Utc::now().with_timezone(&chrono_tz::Europe::Moscow);
    let _ = h;
    (
        (now - chrono::Duration::days(80))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        now.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// `docs` with every key the simulator left empty (null, `{}`) emptied as well: "Пустые поля
/// всегда возвращаются в ответе со значением null … в случае объекта возвращается пустой
/// объект" makes any column nullable.
fn nullable_like(docs: &Value, sim: &Value) -> Value {
    match (docs, sim) {
        (Value::Object(d), Value::Object(s)) => Value::Object(
            d.iter()
                .map(|(k, v)| {
                    let v = match s.get(k) {
                        Some(Value::Null) => Value::Null,
                        // "в случае объекта возвращается пустой объект"
                        Some(Value::Object(o)) if o.is_empty() => json!({}),
                        Some(sv) => nullable_like(v, sv),
                        None => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        (Value::Array(d), Value::Array(s)) => match (d.first(), s.first()) {
            (Some(dv), Some(sv)) => Value::Array(vec![nullable_like(dv, sv)]),
            _ => Value::Array(d.clone()),
        },
        _ => docs.clone(),
    }
}

/// get_calls_report/index.html "JSON структура запроса" (every column of the response
/// structure asked for in `fields`) → the simulator answers `result.data[]` rows with every
/// column, of the documented types, and `result.metadata.total_items`.
#[tokio::test]
async fn sim_calls_report_rows_have_the_documented_columns() {
    let h = sim().await;
    let (from, till) = window(&h);
    let fields: Vec<String> = docs_calls_row()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let v = call(
        &h,
        "get.calls_report",
        json!({"access_token": h.sim.creds.comagic_access_token, "user_id": null,
               "offset": 0, "limit": 100, "date_from": from, "date_till": till,
               "filter": {"field": "direction", "operator": "=", "value": "in"},
               "sort": [{"field": "start_time", "order": "asc"}], "fields": fields}),
    )
    .await;
    let data = v["result"]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(!data.is_empty());
    assert!(v["result"]["metadata"]["total_items"].is_u64(), "{v}");
    for row in data.iter().take(20) {
        assert_same_shape(&nullable_like(&docs_calls_row(), row), row, "result/data/0");
        assert_eq!(
            row.as_object().unwrap().len(),
            fields.len(),
            "only the asked columns"
        );
        assert!(is_api_datetime(row["start_time"].as_str().unwrap()));
    }
    h.stop().await;
}

/// data_api/index.html "Отдельный список возвращаемых столбцов": without `fields` "в выводе
/// показываются все поля по умолчанию" — the columns get_calls_report/index.html marks
/// "Ответ по умолчанию: да", and only those.
#[tokio::test]
async fn sim_calls_report_without_fields_gives_the_default_columns() {
    let h = sim().await;
    let (from, till) = window(&h);
    let v = call(
        &h,
        "get.calls_report",
        json!({"access_token": h.sim.creds.comagic_access_token,
               "date_from": from, "date_till": till, "limit": 5}),
    )
    .await;
    let row = &v["result"]["data"][0];
    let mut got: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    got.sort();
    let mut want = CALLS_REPORT_DEFAULT.to_vec();
    want.sort();
    assert_eq!(got, want);
    h.stop().await;
}

/// data_api/index.html "JSON структура ошибки" (`error{code, message, data{mnemonic}}`) and
/// the message texts, codes and mnemonics of its error lists, for requests the page says are
/// refused.
#[tokio::test]
async fn sim_errors_have_the_documented_codes_mnemonics_and_texts() {
    let h = sim().await;
    let token = h.sim.creds.comagic_access_token.clone();
    let (from, till) = window(&h);
    let docs_error = json!({"jsonrpc": "2.0", "id": null,
                            "error": {"code": -32602, "message": "string",
                                      "data": {"mnemonic": "string"}}});
    let good = json!({"access_token": token, "date_from": from, "date_till": till});
    let with = |k: &str, v: Value| {
        let mut p = good.clone();
        p[k] = v;
        json!({"jsonrpc": "2.0", "id": 1, "method": "get.calls_report", "params": p}).to_string()
    };
    let cases: Vec<(String, i64, &str, &str)> = vec![
        (
            "{\"jsonrpc\": \"2.0\", ".into(),
            -32700,
            "parse_error",
            "Invalid JSON was received by the server.",
        ),
        (
            json!([{"jsonrpc": "2.0", "id": 1, "method": "get.account",
                 "params": {"access_token": token}}])
            .to_string(),
            -32099,
            "batch_opreations_not_supported",
            "Batch operations not supported",
        ),
        (
            json!({"jsonrpc": "2.0", "method": "get.account",
                "params": {"access_token": token}})
            .to_string(),
            -32099,
            "notifications_not_supported",
            "Notifications not supported",
        ),
        (
            json!({"jsonrpc": "1.0", "id": 1, "method": "get.account",
                "params": {"access_token": token}})
            .to_string(),
            -32600,
            "invalid_request",
            "Invalid Request The JSON sent is not a valid Request object",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "get.nothing",
                "params": {"access_token": token}})
            .to_string(),
            -32601,
            "method_not_found",
            "The method does not exist / is not available",
        ),
        (
            with("access_token", json!("wrong")),
            -32001,
            "access_token_invalid",
            "Access token is invalid",
        ),
        (
            with("date_from", Value::Null).replace("\"date_from\":null,", ""),
            -32602,
            "required_parameter_missed",
            "The required parameter has been missed",
        ),
        (
            with("colour", json!("red")),
            -32602,
            "unexpected_parameters",
            "Unexpected method parameter(s)",
        ),
        (
            with("fields", json!(["id", "no_such_column"])),
            -32602,
            "unexpected_parameters",
            "Unexpected method parameter(s)",
        ),
        (
            with("sort", json!([{"field": "no_such_column"}])),
            -32602,
            "unexpected_parameters",
            "Unexpected method parameter(s)",
        ),
        (
            with(
                "filter",
                json!({"field": "no_such_column", "operator": "=", "value": 1}),
            ),
            -32602,
            "unexpected_parameters",
            "Unexpected method parameter(s)",
        ),
        (
            with("sort", json!([{"field": "id", "order": "asc"}])),
            -32602,
            "sort_prohibited",
            "Sort by parameter is prohibited",
        ),
        (
            with(
                "filter",
                json!({"field": "start_time", "operator": ">", "value": from}),
            ),
            -32602,
            "filter_prohibited",
            "Filter by parameter is prohibited",
        ),
        (
            with("date_from", json!("15.01.2026")),
            -32602,
            "invalid_parameter_value",
            "Invalid parameter value",
        ),
        (
            with("limit", json!("ten")),
            -32602,
            "data_type_error",
            "Data supplied is of wrong type",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "get.calls_report",
                "params": {"access_token": token, "date_from": "2026-01-01 00:00:00",
                           "date_till": "2026-04-02 00:00:00"}})
            .to_string(),
            -32602,
            "date_interval_limit_reached",
            "Max value of requested date interval is 3 months",
        ),
    ];
    for (body, code, mnemonic, message) in cases {
        let v = sim_rpc(&h, &body).await;
        assert_same_shape(&docs_error, &v, "");
        assert_eq!(v["error"]["code"], code, "{body} → {v}");
        assert_eq!(v["error"]["data"]["mnemonic"], mnemonic, "{body} → {v}");
        assert_eq!(v["error"]["message"], message, "{body} → {v}");
    }
    h.stop().await;
}

/// get_account/index.html "JSON структура ответа": `result.data[]` of `{app_id, name,
/// timezone}`. (The page names the meta object `meta_data`; the general "Мета-параметры"
/// section, which the simulator follows, names it `metadata`: only `data` is compared.)
#[tokio::test]
async fn sim_get_account_has_the_documented_shape() {
    let h = sim().await;
    let v = call(
        &h,
        "get.account",
        json!({"access_token": h.sim.creds.comagic_access_token}),
    )
    .await;
    let docs = json!([{"app_id": 104857, "name": "ООО Ромашка", "timezone": "Europe/Moscow"}]);
    assert_same_shape(&docs, &v["result"]["data"], "result/data");
    assert!(
        v["result"]["data"][0]["timezone"]
            .as_str()
            .unwrap()
            .parse::<chrono_tz::Tz>()
            .is_ok()
    );
    h.stop().await;
}

/// get_employees/index.html "JSON структура ответа" → every column of the structure, of its
/// type, for a request that names them all; `status` within the documented enum.
#[tokio::test]
async fn sim_get_employees_has_the_documented_shape() {
    let h = sim().await;
    let docs_row = json!({
        "id": 41, "first_name": "Анна", "login": "anna", "last_name": "Иванова",
        "patronymic": "Сергеевна", "full_name": "Иванова Анна Сергеевна",
        "email": "anna@example.ru", "status": "available", "calls_available": true,
        "allowed_in_call_types": ["external"], "in_external_allowed_call_directions": ["in"],
        "in_internal_allowed_call_directions": ["in"], "allowed_out_call_types": ["external"],
        "out_external_allowed_call_directions": ["out"],
        "out_internal_allowed_call_directions": ["out"],
        "groups": [{"group_id": 1, "group_name": "Продажи"}],
        "call_recording": "all", "schedule_id": 1, "schedule_name": "Рабочие часы",
        "coach": {"coach_id": 2, "coach_full_name": "Петров Пётр", "coach_always_enabled": false},
        "phone_numbers": [{"phone_id": 1, "phone_number": "79991110041", "channels_count": 1,
                           "dial_time": 60, "status": "active"}],
        "extension": {"extension_phone_number": "141", "extension_voice_mail_enabled": false,
                      "extension_queue_enabled": false},
        "operator": {"operator_login": "anna", "operator_display_name": "Анна",
                     "operator_position_id": 1, "operator_position_name": "Менеджер",
                     "operator_offline_message_enabled": true,
                     "operator_invite_to_chat_enabled": true, "operator_chat_enabled": true,
                     "operator_chats_available": true,
                     "operator_sites": [{"site_id": 3101, "site_domain_name": "example.ru"}]}
    });
    let fields: Vec<&String> = docs_row.as_object().unwrap().keys().collect();
    let v = call(
        &h,
        "get.employees",
        json!({"access_token": h.sim.creds.comagic_access_token, "offset": 0, "limit": 100,
               "fields": fields}),
    )
    .await;
    let data = v["result"]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(!data.is_empty());
    let statuses = [
        "available",
        "break",
        "do_not_disturb",
        "not_at_workplace",
        "not_at_work",
        "unknown",
    ];
    for row in data {
        assert_same_shape(&nullable_like(&docs_row, row), row, "result/data/0");
        assert!(statuses.contains(&row["status"].as_str().unwrap()), "{row}");
        assert!(
            row["extension"]["extension_phone_number"]
                .as_str()
                .unwrap()
                .len()
                <= 5
        );
    }
    h.stop().await;
}

/// data_api/index.html: -32029 `limit_exceeded`, "Limit per {limit_type} has been exceeded.
/// Value of current limit per {limit_type} is {limit_max_value}", and the limits in the
/// meta-parameters of the error.
#[tokio::test]
async fn sim_limit_exceeded_has_the_documented_text() {
    let h = crate::common::start_sim(dozor_sim::SimOptions {
        enforce_limits: true,
        ..crate::common::sim_opts(31)
    })
    .await;
    let token = h.sim.creds.comagic_access_token.clone();
    let limit = dozor_sim::comagic::MINUTE_LIMIT;
    let mut refused = None;
    for _ in 0..=limit {
        let v = call(&h, "get.account", json!({"access_token": token})).await;
        if v.get("error").is_some() {
            refused = Some(v);
            break;
        }
        assert!(v["result"]["metadata"]["limits"]["minute_remaining"].is_u64());
    }
    let v = refused.expect("the minute budget ends");
    assert_eq!(v["error"]["code"], -32029);
    assert_eq!(v["error"]["data"]["mnemonic"], "limit_exceeded");
    assert_eq!(
        v["error"]["message"],
        format!("Limit per minute has been exceeded. Value of current limit per minute is {limit}")
    );
    assert!(
        v["error"]["data"]["metadata"]["limits"]["minute_reset"].is_u64(),
        "{v}"
    );
    h.stop().await;
}
