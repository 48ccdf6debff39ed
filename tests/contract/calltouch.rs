//! Contract: Calltouch calls journal ("Журнал звонков", `calls-diary/calls`).
//!
//! Pages:
//! - https://www.calltouch.ru/support/api-metod-vygruzki-zhurnala-zvonkov/ ("Выгрузка журнала
//!   звонков"): GET, "Формат результатов выборки: JSONMapObject", the standard one-day request
//!   `https://api.calltouch.ru/calls-service/RestAPI/{ID Вашего сайта}/calls-diary/calls?
//!   clientApiId={токен}&dateFrom=29/11/2016&dateTo=29/11/2016` ("дата во входных параметрах
//!   dateFrom и dateTo должна быть одинаковой") and its answer `[{call1},{call2},{call3},...]`.
//!   Only the beginning of that page could be read (the stored copy stops after the one-day
//!   answer); the rest is taken from Calltouch's own field descriptions as the SDK
//!   github.com/mg-realcom/calltouch-sdk transcribes them:
//! - `client.go`: the paged request (`page`, `limit=1000`, dates `02/01/2006` = dd/mm/yyyy,
//!   the `with…`/`…Only` flags) and the paged answer `{page, pageTotal, pageSize,
//!   recordsTotal, records}`;
//! - `entity.go`: the call record (`callId`, `date`, `duration`, `callerNumber`, …, with the
//!   page's Russian descriptions as comments).
//!
//! The error answers are not documented on any page reached: those tests pin dozor's reading
//! of plain HTTP statuses and say so.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use dozor::config::{CalltouchConfig, Secret};
use dozor::domain::{Direction, TelephonyKind};
use dozor::http::ErrorKind;
use dozor::telephony::Telephony;
use dozor::telephony::calltouch::Calltouch;
use dozor_sim::SimHandle;
use serde_json::{Value, json};

use super::replay::{Answer, Asked, Docs, assert_same_shape};

const TOKEN: &str = "docs-client-api-id-4567";
const SITE: u64 = 54321;

fn client(docs: &Docs) -> Calltouch {
    Calltouch::new(
        &CalltouchConfig {
            base_url: docs.base.clone(),
            site_id: SITE,
            client_api_id: Some(Secret::new(TOKEN)),
            client_api_id_file: None,
            employees: Default::default(),
        },
        chrono_tz::Europe::Moscow,
    )
}

/// One call record with every field of `Call` in entity.go filled (values of the Go types;
/// the `*`-pointer fields, which the SDK allows to be absent, as the plain value). No
/// `timestamp`: entity.go has none.
fn docs_record() -> Value {
    json!({
        "callId": 81234,
        "callphase": "callcompleted",
        "attribution": 1,
        "callTags": [{"category": "Качество", "type": "manual", "names": ["Целевой"]}],
        "date": "11/03/2026 10:30:00",
        "duration": 120,
        "callerNumber": "79991234567",
        "redirectNumber": "74951110041",
        "phoneNumber": "74951234567",
        "manager": "Иванова Анна",
        "successful": true,
        "uniqueCall": true,
        "targetCall": true,
        "uniqTargetCall": true,
        "callbackCall": false,
        "city": "Москва",
        "source": "yandex",
        "medium": "cpc",
        "keyword": "диван",
        "url": "https://example.ru/",
        "callUrl": "https://example.ru/catalog/divany",
        "ref": "https://yandex.ru/",
        "hostname": "example.ru",
        "utmSource": "yandex",
        "utmMedium": "cpc",
        "utmCampaign": "spring",
        "utmContent": "banner",
        "utmTerm": "диван",
        "sessionId": 550001,
        "ctCallerId": "ct-caller-1",
        "clientId": "1234567890.1700000000",
        "yaClientId": "1700000000123456789",
        "sipCallId": "sip-81234",
        "userAgent": "Mozilla/5.0",
        "ip": "203.0.113.5",
        "waitingConnect": 7,
        "callReferenceId": "pbx-1",
        "orders": [],
        "ctClientId": 3001,
        "ctGlobalId": 4001,
        "subPoolName": "Основной пул",
        "statusDetails": "Успешный звонок"
    })
}

/// The paged answer of client.go `CallReport`.
fn paged(page: u64, page_total: u64, records_total: u64, records: Vec<Value>) -> Answer {
    Answer::json(
        json!({"page": page, "pageTotal": page_total, "pageSize": 1000,
                        "recordsTotal": records_total, "records": records}),
    )
}

fn query(a: &Asked) -> std::collections::HashMap<String, String> {
    url::Url::parse(&format!("http://x{}", a.uri))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn day(d: u32) -> chrono::DateTime<Utc> {
    // Moscow midnight of 2026-03-d.
    Utc.with_ymd_and_hms(2026, 3, d, 0, 0, 0).unwrap() - chrono::Duration::hours(3)
}

/// The calls-diary page: `GET …/calls-service/RestAPI/{siteId}/calls-diary/calls`,
/// `clientApiId` in the query, `dateFrom`/`dateTo` as dd/mm/yyyy and equal for one day;
/// client.go adds `page` (from 1) and `limit=1000`.
#[tokio::test]
async fn calls_diary_request_has_the_documented_shape() {
    let docs = Docs::start(|_| paged(1, 1, 0, vec![])).await;
    let calls = client(&docs).calls(day(11), day(12)).await.unwrap();
    assert!(calls.is_empty());
    let asked = docs.asked();
    assert_eq!(asked.len(), 1);
    let a = &asked[0];
    assert_eq!(a.method, "GET");
    assert_eq!(
        a.path(),
        format!("/calls-service/RestAPI/{SITE}/calls-diary/calls")
    );
    let q = query(a);
    assert_eq!(q["clientApiId"], TOKEN);
    assert_eq!(q["dateFrom"], "11/03/2026");
    assert_eq!(q["dateTo"], "11/03/2026");
    assert_eq!(q["page"], "1");
    let limit: u32 = q["limit"].parse().unwrap();
    assert!((1..=1000).contains(&limit));
    assert!(a.body.is_empty());
}

/// entity.go `Call`, every field filled: dozor reads `callId`, `date` (dd/mm/yyyy HH:mm:ss,
/// the cabinet's wall clock) when there is no `timestamp`, `successful`, `duration`,
/// `waitingConnect`, `callerNumber`, `phoneNumber` ("Номер, на который звонили"), `manager`
/// and the UTM tags; `callUrl` is "Адрес страницы, находясь на которой, посетитель совершил
/// звонок" — a web page, never taken for a recording.
#[tokio::test]
async fn documented_record_is_read() {
    let docs = Docs::start(|_| paged(1, 1, 1, vec![docs_record()])).await;
    let calls = client(&docs).calls(day(11), day(12)).await.unwrap();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.id, "81234");
    assert_eq!(c.provider, TelephonyKind::Calltouch);
    assert_eq!(
        c.started_at,
        Utc.with_ymd_and_hms(2026, 3, 11, 7, 30, 0).unwrap()
    );
    assert_eq!(c.direction, Direction::In);
    assert!(c.answered);
    assert_eq!((c.talk_s, c.wait_s), (120, 7));
    assert_eq!(c.client_phone, "79991234567");
    assert_eq!(c.virtual_number.as_deref(), Some("74951234567"));
    assert_eq!(c.employee_name.as_deref(), Some("Иванова Анна"));
    assert_eq!(c.recording_url, None);
    assert_eq!(c.utm.source.as_deref(), Some("yandex"));
    assert_eq!(c.utm.campaign.as_deref(), Some("spring"));
    assert_eq!(c.utm.term.as_deref(), Some("диван"));
}

/// The calls-diary page's one-day answer is a bare array, `[{call1},{call2},{call3},...]`:
/// read like the paged one.
#[tokio::test]
async fn the_one_day_bare_array_answer_is_read() {
    let docs = Docs::start(|_| {
        let mut second = docs_record();
        second["callId"] = json!(81235);
        second["successful"] = json!(false);
        second["duration"] = json!(0);
        second["date"] = json!("11/03/2026 11:00:00");
        Answer::json(json!([docs_record(), second]))
    })
    .await;
    let calls = client(&docs).calls(day(11), day(12)).await.unwrap();
    assert_eq!(calls.len(), 2);
    assert!(calls[0].answered && !calls[1].answered);
    assert_eq!(docs.asked().len(), 1);
}

/// client.go: pages are asked for from `page=1` until `page == pageTotal`, `recordsTotal`
/// counting all of them.
#[tokio::test]
async fn pages_are_followed_until_page_total() {
    let docs = Docs::start(|a| {
        let page: u64 = query(a)["page"].parse().unwrap();
        let mut r = docs_record();
        r["callId"] = json!(90000 + page);
        r["date"] = json!(format!("11/03/2026 1{page}:00:00"));
        paged(page, 3, 3, vec![r])
    })
    .await;
    let calls = client(&docs).calls(day(11), day(12)).await.unwrap();
    assert_eq!(calls.len(), 3);
    let pages: Vec<String> = docs
        .asked()
        .iter()
        .map(|a| query(a)["page"].clone())
        .collect();
    assert_eq!(pages, ["1", "2", "3"]);
}

/// An empty day: `records` is an empty list (`pageTotal` 0) — no further page is asked for.
#[tokio::test]
async fn an_empty_day_ends_after_one_request() {
    let docs = Docs::start(|_| paged(1, 0, 0, vec![])).await;
    assert!(
        client(&docs)
            .calls(day(11), day(12))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(docs.asked().len(), 1);
}

/// The calls-diary page: one day per request ("по умолчанию … выборка статистики по звонкам
/// возможна только за один день"). Three days are three requests, one per date.
#[tokio::test]
async fn each_day_is_asked_for_on_its_own() {
    let docs = Docs::start(|_| paged(1, 1, 0, vec![])).await;
    client(&docs).calls(day(9), day(12)).await.unwrap();
    let days: Vec<(String, String)> = docs
        .asked()
        .iter()
        .map(|a| {
            let q = query(a);
            (q["dateFrom"].clone(), q["dateTo"].clone())
        })
        .collect();
    assert_eq!(
        days,
        [
            ("09/03/2026".to_string(), "09/03/2026".to_string()),
            ("10/03/2026".into(), "10/03/2026".into()),
            ("11/03/2026".into(), "11/03/2026".into()),
        ]
    );
}

/// entity.go types the flags as booleans, but older exports (the fact sheet's sources) send
/// "true"/"false" strings; and `manager` is "often empty" (assigned only through the API).
/// Both are read.
#[tokio::test]
async fn string_flags_and_an_empty_manager_are_read() {
    let docs = Docs::start(|_| {
        let mut r = docs_record();
        r["successful"] = json!("false");
        r["uniqueCall"] = json!("True");
        r["manager"] = json!("");
        paged(1, 1, 1, vec![r])
    })
    .await;
    let calls = client(&docs).calls(day(11), day(12)).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert!(!calls[0].answered);
    assert_eq!(calls[0].employee_name, None);
}

/// Undocumented error answers (no page reached shows one): a 429 with `Retry-After` is waited
/// out and asked again.
#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let docs = Docs::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Answer::text(429, "Too Many Requests").header("Retry-After", "1")
        } else {
            paged(1, 1, 1, vec![docs_record()])
        }
    })
    .await;
    let t0 = Instant::now();
    let calls = client(&docs).calls(day(11), day(12)).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(docs.asked().len(), 2);
    assert!(t0.elapsed() >= Duration::from_millis(950));
}

/// Undocumented error answers: 401 (token refused) and 403 (no access to the siteId) are
/// authentication errors, asked once, and the token in the URL never reaches the message; a
/// 400 (e.g. a bad date) is permanent; a 5xx is asked again.
#[tokio::test]
async fn error_statuses_are_classified_and_the_token_is_hidden() {
    for (status, kind, tries) in [
        (401, ErrorKind::Auth, 1),
        (403, ErrorKind::Auth, 1),
        (400, ErrorKind::Permanent, 1),
    ] {
        let docs = Docs::start(move |_| Answer::text(status, "refused")).await;
        let e = client(&docs).calls(day(11), day(12)).await.unwrap_err();
        assert_eq!(e.kind, kind, "{status}: {e}");
        assert_eq!(e.status, Some(status));
        assert!(!e.to_string().contains(TOKEN), "{e}");
        assert_eq!(docs.asked().len(), tries, "{status}");
    }
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let docs = Docs::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Answer::text(502, "Bad Gateway")
        } else {
            paged(1, 1, 1, vec![docs_record()])
        }
    })
    .await;
    assert_eq!(
        client(&docs).calls(day(11), day(12)).await.unwrap().len(),
        1
    );
    assert_eq!(docs.asked().len(), 2);
}

// ---- the simulator answers the documented requests in the documented shape ----

async fn sim() -> SimHandle {
    crate::common::small_sim(41).await
}

/// Some Moscow date of the simulated world's last month, with inbound calls.
fn busy_date(h: &SimHandle) -> String {
    let w = h.sim.world();
    let mut days: std::collections::BTreeMap<String, usize> = Default::default();
    for c in w.calls.values() {
        if c.direction == dozor_sim::world::Dir::In {
            *days
                .entry(
                    c.start
                        .with_timezone(&chrono_tz::Europe::Moscow)
                        .format("%d/%m/%Y")
                        .to_string(),
                )
                .or_default() += 1;
        }
    }
    days.into_iter().max_by_key(|(_, n)| *n).unwrap().0
}

async fn get(h: &SimHandle, query: &str) -> (u16, Value) {
    let url = format!(
        "{}/calls-service/RestAPI/{}/calls-diary/calls?{query}",
        h.calltouch_url(),
        h.sim.creds.calltouch_site_id
    );
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `docs_record()` without the fields the SDK holds only under a `with…` flag
/// (`callTags` ← withCallTags, `orders` ← withOrders).
fn docs_base_record() -> Value {
    let mut r = docs_record();
    let o = r.as_object_mut().unwrap();
    o.remove("callTags");
    o.remove("orders");
    r
}

/// client.go's paged request → the simulator answers `{page, pageTotal, pageSize,
/// recordsTotal, records}` with records in entity.go's shape, dates as dd/mm/yyyy HH:mm:ss.
#[tokio::test]
async fn sim_paged_answer_has_the_documented_shape() {
    let h = sim().await;
    let d = busy_date(&h);
    let token = h.sim.creds.calltouch_client_api_id.clone();
    let (status, v) = get(
        &h,
        &format!("clientApiId={token}&dateFrom={d}&dateTo={d}&page=1&limit=1000"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let docs = json!({"page": 1, "pageTotal": 1, "pageSize": 1000, "recordsTotal": 1,
                      "records": [docs_base_record()]});
    assert_same_shape(&docs, &v, "");
    for r in v["records"].as_array().unwrap() {
        assert_same_shape(&docs_base_record(), r, "records/0");
        let date = r["date"].as_str().unwrap();
        assert!(
            chrono::NaiveDateTime::parse_from_str(date, "%d/%m/%Y %H:%M:%S").is_ok(),
            "{date}"
        );
        assert!(date.starts_with(&d));
    }
    h.stop().await;
}

/// The calls-diary page's standard request (one day, no paging) → a bare array of calls.
#[tokio::test]
async fn sim_one_day_request_answers_a_bare_array() {
    let h = sim().await;
    let d = busy_date(&h);
    let token = h.sim.creds.calltouch_client_api_id.clone();
    let (status, v) = get(&h, &format!("clientApiId={token}&dateFrom={d}&dateTo={d}")).await;
    assert_eq!(status, 200);
    let calls = v.as_array().unwrap_or_else(|| panic!("{v}"));
    assert!(!calls.is_empty());
    assert_same_shape(&json!([docs_base_record()]), &v, "");
    h.stop().await;
}

/// client.go's flags `withCallTags=true` / `withOrders=true` → `callTags` (entity.go `Tag`:
/// `category`, `type`, `names` list) and `orders` arrays on every record.
#[tokio::test]
async fn sim_flags_add_the_documented_arrays() {
    let h = sim().await;
    let d = busy_date(&h);
    let token = h.sim.creds.calltouch_client_api_id.clone();
    let (_, v) = get(
        &h,
        &format!(
            "clientApiId={token}&dateFrom={d}&dateTo={d}&page=1&limit=1000&withCallTags=true&withOrders=true"
        ),
    )
    .await;
    for r in v["records"].as_array().unwrap() {
        assert_same_shape(&docs_record(), r, "records/0");
    }
    h.stop().await;
}

/// The calls-diary page: without paging, "дата во входных параметрах dateFrom и dateTo должна
/// быть одинаковой" — a two-day request without `page`/`limit` is refused; with them it is
/// answered.
#[tokio::test]
async fn sim_refuses_several_days_without_paging() {
    let h = sim().await;
    let token = h.sim.creds.calltouch_client_api_id.clone();
    let (status, _) = get(
        &h,
        &format!("clientApiId={token}&dateFrom=01/03/2026&dateTo=02/03/2026"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, v) = get(
        &h,
        &format!("clientApiId={token}&dateFrom=01/03/2026&dateTo=02/03/2026&page=1&limit=1000"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(v["records"].is_array());
    h.stop().await;
}
