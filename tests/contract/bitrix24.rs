//! Contract: Bitrix24 REST (bitrix24/b24restdocs).
//!
//! Client half: a [`Docs`] stand-in answers what the page shows, at `/rest/1/token/…` as an
//! inbound webhook; dozor's client must read it and send the request the page documents.
//! dozor reads lists through `batch` (chained fast paging), so a list page's `result` is
//! served inside the `batch` envelope of `settings/how-to-call-rest-api/batch.md`
//! (`result.result[cmd]`, `result_error`, `result_total`, `result_next`, `result_time`), and
//! the request checked is the command string.
//!
//! Simulator half: the page's request goes to the simulator, whose answer must have the page's
//! shape ([`assert_same_shape`]). Long answers are abridged to their first row or to the keys
//! dozor and the page's field table care about; every value left is the page's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use dozor::config::{Bitrix24Config, Secret};
use dozor::crm::bitrix24::Bitrix24;
use dozor::crm::{Crm, Cursor, NewDeal, NewTask};
use dozor::domain::{EntityKind, EntityRef, Record, Semantics};
use dozor::http::{ErrorKind, Throttle};
use dozor_sim::SimHandle;
use serde_json::{Value, json};

use super::replay::{Answer, Asked, Docs, assert_same_shape};
use crate::common;

// ---------------------------------------------------------------------------------------------
// Payloads transcribed from the pages.

/// `api-reference/common/users/profile.md`, "Response Handling".
fn profile_answer() -> Value {
    json!({
        "result": {
            "ID": "1",
            "ADMIN": true,
            "NAME": "Vadim",
            "LAST_NAME": "Valeev",
            "PERSONAL_GENDER": "",
            "TIME_ZONE": ""
        },
        "time": {
            "start": 1722848182.67776,
            "finish": 1722848182.71787,
            "duration": 0.0401120185852051,
            "processing": 0.00115704536437988,
            "date_start": "2024-08-05T08:56:22+00:00",
            "date_finish": "2024-08-05T08:56:22+00:00",
            "operating": 0
        }
    })
}

/// `api-reference/common/system/scope.md`, "Response Handling".
fn scope_answer() -> Value {
    json!({
        "result": ["department", "entity", "log", "user"],
        "time": {
            "start": 1721993326.41019,
            "finish": 1721993326.44899,
            "duration": 0.0387959480285645,
            "processing": 0.000020980834960937,
            "date_start": "2024-07-26T11:28:46+00:00",
            "date_finish": "2024-07-26T11:28:46+00:00",
            "operating": 0
        }
    })
}

/// `api-reference/user/user-get.md`, "Response Handling".
fn user_get_answer() -> Value {
    json!({
        "result": [
            {
                "ID": "1",
                "ACTIVE": true,
                "NAME": "Vadim",
                "LAST_NAME": "Valeev",
                "SECOND_NAME": "",
                "EMAIL": "v.r.valeev@bitrix.com",
                "LAST_LOGIN": "2024-07-25T13:06:54+00:00",
                "DATE_REGISTER": "2024-07-15T00:00:00+00:00",
                "TIME_ZONE": "",
                "IS_ONLINE": "Y",
                "TIMESTAMP_X": {},
                "LAST_ACTIVITY_DATE": {},
                "PERSONAL_GENDER": "",
                "PERSONAL_WWW": "",
                "PERSONAL_BIRTHDAY": "2018-07-14T00:00:00+00:00",
                "PERSONAL_MOBILE": "",
                "PERSONAL_CITY": "",
                "WORK_PHONE": "",
                "WORK_POSITION": "",
                "UF_EMPLOYMENT_DATE": "",
                "UF_DEPARTMENT": [1],
                "USER_TYPE": "employee"
            },
            {
                "ID": "3",
                "ACTIVE": true,
                "NAME": "John",
                "LAST_NAME": "Smith",
                "EMAIL": "test@gmail.com",
                "LAST_LOGIN": "2024-07-24T09:01:55+00:00",
                "DATE_REGISTER": "2024-07-22T00:00:00+00:00",
                "IS_ONLINE": "N",
                "TIMESTAMP_X": {},
                "LAST_ACTIVITY_DATE": {},
                "PERSONAL_GENDER": "",
                "PERSONAL_BIRTHDAY": "",
                "WORK_POSITION": "",
                "UF_EMPLOYMENT_DATE": "",
                "UF_DEPARTMENT": [1],
                "USER_TYPE": "employee"
            }
        ],
        "total": 2,
        "time": {
            "start": 1721913235.39648,
            "finish": 1721913235.45078,
            "duration": 0.05430006980896,
            "processing": 0.0187909603118897,
            "date_start": "2024-07-25T13:13:55+00:00",
            "date_finish": "2024-07-25T13:13:55+00:00",
            "operating": 0
        }
    })
}

/// `api-reference/crm/deals/crm-deal-list.md`, "Response Handling" (the first two of six rows;
/// the test that reads it serves all six).
fn deal_rows() -> Value {
    json!([
        {"ID": "37", "TITLE": "[A] Deal", "TYPE_ID": "COMPLEX", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW",
         "OPPORTUNITY": "19999.99", "IS_MANUAL_OPPORTUNITY": "Y", "ASSIGNED_BY_ID": "1",
         "DATE_CREATE": "2024-09-02T18:37:18+02:00"},
        {"ID": "38", "TITLE": "[A] Deal", "TYPE_ID": "COMPLEX", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW",
         "OPPORTUNITY": "20000.00", "IS_MANUAL_OPPORTUNITY": "Y", "ASSIGNED_BY_ID": "6",
         "DATE_CREATE": "2024-09-02T18:37:38+02:00"},
        {"ID": "39", "TITLE": "[B] Sale", "TYPE_ID": "COMPLEX", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW",
         "OPPORTUNITY": "12500.00", "IS_MANUAL_OPPORTUNITY": "Y", "ASSIGNED_BY_ID": "1",
         "DATE_CREATE": "2024-04-09T23:11:01+02:00"},
        {"ID": "40", "TITLE": "[B] Deal", "TYPE_ID": "COMPLEX", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW",
         "OPPORTUNITY": "13500.00", "IS_MANUAL_OPPORTUNITY": "Y", "ASSIGNED_BY_ID": "6",
         "DATE_CREATE": "2024-08-08T19:00:14+02:00"},
        {"ID": "41", "TITLE": "[V] Deal", "TYPE_ID": "COMPLEX", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW",
         "OPPORTUNITY": "11500.00", "IS_MANUAL_OPPORTUNITY": "Y", "ASSIGNED_BY_ID": "6",
         "DATE_CREATE": "2024-05-08T09:38:23+02:00"},
        {"ID": "42", "TITLE": "[S] Deal", "TYPE_ID": "COMPLEX", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW",
         "OPPORTUNITY": "18500.00", "IS_MANUAL_OPPORTUNITY": "Y", "ASSIGNED_BY_ID": "6",
         "DATE_CREATE": "2024-07-02T15:38:32+02:00"}
    ])
}

/// The envelope of `crm-deal-list.md` around [`deal_rows`].
fn deal_list_answer() -> Value {
    json!({
        "result": deal_rows(),
        "total": 6,
        "time": {
            "start": 1725292115.026221,
            "finish": 1725292115.907058,
            "duration": 0.8808369636535645,
            "processing": 0.2484450340270996,
            "date_start": "2024-09-02T17:48:35+02:00",
            "date_finish": "2024-09-02T17:48:35+02:00",
            "operating": 0
        }
    })
}

/// `api-reference/crm/leads/crm-lead-list.md`, "Response Handling", first row (address and
/// `UF_*` fields left out).
fn lead_row() -> Value {
    serde_json::from_str(
        r#"{
        "ID": "5", "TITLE": "Lead 1", "HONORIFIC": null, "NAME": "Erasmus", "SECOND_NAME": null,
        "LAST_NAME": "Golden of Ireland", "COMPANY_TITLE": null, "COMPANY_ID": "0",
        "CONTACT_ID": "2069", "IS_RETURN_CUSTOMER": "N", "BIRTHDATE": "", "SOURCE_ID": "CALL",
        "SOURCE_DESCRIPTION": null, "STATUS_ID": "CONVERTED", "STATUS_DESCRIPTION": null,
        "POST": null, "COMMENTS": null, "CURRENCY_ID": "USD", "OPPORTUNITY": "15000.00",
        "IS_MANUAL_OPPORTUNITY": "Y", "HAS_PHONE": "Y", "HAS_EMAIL": "Y", "HAS_IMOL": "N",
        "ASSIGNED_BY_ID": "1", "CREATED_BY_ID": "1", "MODIFY_BY_ID": "1",
        "DATE_CREATE": "2021-05-31T15:10:16+02:00", "DATE_MODIFY": "2021-11-26T18:56:13+02:00",
        "DATE_CLOSED": "2021-07-16T16:43:44+02:00", "STATUS_SEMANTIC_ID": "S", "OPENED": "Y",
        "ORIGINATOR_ID": null, "ORIGIN_ID": null, "MOVED_BY_ID": "1",
        "MOVED_TIME": "2021-07-16T16:43:44+02:00", "UTM_SOURCE": null, "UTM_MEDIUM": null,
        "UTM_CAMPAIGN": null, "UTM_CONTENT": null, "UTM_TERM": null, "LAST_ACTIVITY_BY": "1",
        "LAST_ACTIVITY_TIME": "2021-05-31T15:10:16+02:00"
    }"#,
    )
    .unwrap()
}

/// `api-reference/crm/contacts/crm-contact-list.md`, "Response Handling", first row.
fn contact_row() -> Value {
    json!({
        "ID": "75", "NAME": "Anastasia", "LAST_NAME": "Ilyina", "EXPORT": "Y",
        "ASSIGNED_BY_ID": "6", "DATE_CREATE": "2024-02-26T00:00:00+02:00",
        "EMAIL": [{"ID": "215", "VALUE_TYPE": "WORK", "VALUE": "special-for@example.com", "TYPE_ID": "EMAIL"}]
    })
}

/// `api-reference/crm/companies/crm-company-list.md`, "Response Handling" (the whole answer).
fn company_list_answer() -> Value {
    json!({
        "result": [{
            "TITLE": "Crossroads", "ASSIGNED_BY_ID": "811", "ID": "2919",
            "PHONE": [{"ID": "8303", "VALUE_TYPE": "WORK", "VALUE": "+19998887766", "TYPE_ID": "PHONE"}]
        }],
        "total": 1,
        "time": {
            "start": 1769498859,
            "finish": 1769498859.948139,
            "duration": 0.948138952255249,
            "processing": 0,
            "date_start": "2026-01-27T10:27:39+01:00",
            "date_finish": "2026-01-27T10:27:39+01:00",
            "operating_reset_at": 1769499459,
            "operating": 0.1621239185333252
        }
    })
}

/// `api-reference/crm/timeline/activities/activity-base/crm-activity-list.md`, "Response
/// Handling", first row (the `RESULT_*` fields left out).
fn activity_row() -> Value {
    serde_json::from_str(
        r#"{
        "ID": "20", "OWNER_ID": "15", "OWNER_TYPE_ID": "3", "TYPE_ID": "2",
        "PROVIDER_ID": "VOXIMPLANT_CALL", "PROVIDER_TYPE_ID": "CALL", "PROVIDER_GROUP_ID": null,
        "ASSOCIATED_ENTITY_ID": "0", "SUBJECT": "Outgoing call Klaus Weber",
        "CREATED": "2020-09-27T13:26:55+03:00", "LAST_UPDATED": "2021-03-21T20:28:24+03:00",
        "START_TIME": "2020-09-27T13:25:00+03:00", "END_TIME": "2020-09-27T19:25:00+03:00",
        "DEADLINE": "2020-09-27T13:25:00+03:00", "COMPLETED": "Y", "STATUS": "2",
        "RESPONSIBLE_ID": "505", "PRIORITY": "2", "NOTIFY_TYPE": "1", "NOTIFY_VALUE": "15",
        "DESCRIPTION": "", "DESCRIPTION_TYPE": "1", "DIRECTION": "2", "LOCATION": "",
        "SETTINGS": [], "ORIGINATOR_ID": null, "ORIGIN_ID": null, "AUTHOR_ID": "505",
        "EDITOR_ID": "505", "PROVIDER_PARAMS": [], "PROVIDER_DATA": null
    }"#,
    )
    .unwrap()
}

/// `api-reference/tasks/tasks-task-list.md`, "Response Handling" (`counter` and `tags` left
/// out).
fn task_list_result() -> Value {
    json!({
        "tasks": [{
            "id": "8017",
            "title": "Task Example",
            "description": "Task description with [B]formatting[/B]",
            "deadline": "2025-10-24T19:00:00+02:00",
            "createdDate": "2025-06-04T16:15:55+02:00",
            "responsibleId": "547",
            "priority": "2",
            "mark": "",
            "descriptionInBbcode": "Y",
            "lengthDeadline": "1",
            "status": "2",
            "auditors": ["13", "103"],
            "accomplices": [],
            "group": [],
            "responsible": {
                "id": "547",
                "name": "Maria",
                "link": "/company/personal/user/547/",
                "icon": "/bitrix/images/tasks/default_avatar.png",
                "workPosition": "Tester"
            },
            "accomplicesData": [],
            "auditorsData": {
                "13": {"id": "13", "name": "John Smith", "link": "/company/personal/user/13/",
                       "icon": "https://mysite.com/b17053/resize_cache/209/c0120a8d7c10d63c83e32398d1ec4d9e/main/c8dd225a1c6ea0a25722d01644b90fe4/8b.jpg",
                       "workPosition": "System Administrator"}
            },
            "taskRequireResult": "Y",
            "taskHasOpenResult": "N",
            "taskHasResult": "Y",
            "timeElapsed": null,
            "subStatus": "2"
        }]
    })
}

/// `api-reference/crm/status/crm-status-list.md`, "Response Handling": the first stage, the
/// success one and the failure one of the eight.
fn status_rows() -> Value {
    json!([
        {"ID": "101", "ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "NEW", "NAME": "New", "NAME_INIT": "New",
         "SORT": "10", "SYSTEM": "Y", "CATEGORY_ID": null, "COLOR": "#39A8EF", "SEMANTICS": null,
         "EXTRA": {"SEMANTICS": "process", "COLOR": "#39A8EF"}},
        {"ID": "111", "ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "WON", "NAME": "Deal successful",
         "NAME_INIT": "Deal successful", "SORT": "60", "SYSTEM": "Y", "CATEGORY_ID": null,
         "COLOR": "#7BD500", "SEMANTICS": "S", "EXTRA": {"SEMANTICS": "success", "COLOR": "#7BD500"}},
        {"ID": "113", "ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "LOSE", "NAME": "Deal failed",
         "NAME_INIT": "Deal failed", "SORT": "70", "SYSTEM": "Y", "CATEGORY_ID": null,
         "COLOR": "#FF5752", "SEMANTICS": "F", "EXTRA": {"SEMANTICS": "failure", "COLOR": "#FF5752"}}
    ])
}

/// `api-reference/crm/universal/category/crm-category-list.md`, "Response Handling": the
/// `result` (two of the four pipelines: one custom, the general one).
fn category_result() -> Value {
    json!({
        "categories": [
            {"id": 9, "name": "Funnel with Original Name", "sort": 200, "entityTypeId": 2,
             "isDefault": "N", "originId": "", "originatorId": ""},
            {"id": 0, "name": "General", "sort": 300, "entityTypeId": 2, "isDefault": "Y"}
        ]
    })
}

/// The `time` of the batch answer in `settings/how-to-call-rest-api/batch.md`.
fn batch_time() -> Value {
    json!({
        "start": 1724916859.421475,
        "finish": 1724916859.471588,
        "duration": 0.05011296272277832,
        "processing": 0.010200977325439453,
        "date_start": "2024-08-29T10:34:19+03:00",
        "date_finish": "2024-08-29T10:34:19+03:00"
    })
}

/// The command methods of a `batch` request, by key.
fn commands(asked: &Asked) -> Vec<(String, String)> {
    asked.json()["cmd"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A `batch` answer in the shape of `batch.md` ("Response Handling"): every command answered
/// with `result_of(command)`; the empty maps as PHP writes them, `[]`.
fn batch_answer(asked: &Asked, result_of: impl Fn(&str) -> Value) -> Answer {
    let mut result = serde_json::Map::new();
    for (k, c) in commands(asked) {
        result.insert(k, result_of(&c));
    }
    Answer::json(json!({
        "result": {
            "result": result,
            "result_error": [],
            "result_total": [],
            "result_next": [],
            "result_time": []
        },
        "time": batch_time()
    }))
}

// ---------------------------------------------------------------------------------------------
// Client helpers.

fn cfg(url: &str) -> Bitrix24Config {
    common::b24_webhook(url)
}

async fn client(docs: &Docs) -> Bitrix24 {
    Bitrix24::new(
        "t1",
        &cfg(&format!("{}/rest/1/token/", docs.base)),
        Arc::new(common::MemTokens::default()),
    )
    .await
    .unwrap()
    .with_throttle(Throttle {
        first: Duration::from_millis(20),
        cap: Duration::from_millis(100),
        budget: Duration::from_secs(2),
    })
}

/// The REST method a request named (`/rest/1/token/user.get.json` → `user.get`).
fn method_of(a: &Asked) -> String {
    let last = a.path().rsplit('/').next().unwrap_or_default();
    last.trim_end_matches(".json").to_string()
}

/// The first page of `kind` read by the client from a stand-in that serves `rows` (the page's
/// `result`) for every command of the batch.
async fn read_kind(kind: EntityKind, rows: Value) -> (Vec<Record>, bool, Vec<Asked>) {
    let docs = Docs::start(move |a| batch_answer(a, |_| rows.clone())).await;
    let c = client(&docs).await;
    let page = c.fetch_page(kind, &Cursor::default()).await.unwrap();
    (page.records, page.done, docs.asked())
}

/// The first command of the one batch the client sent, decoded (`+` and `%xx`).
fn first_command(asked: &[Asked]) -> String {
    assert_eq!(asked.len(), 1, "one batch request");
    assert_eq!(method_of(&asked[0]), "batch");
    assert_eq!(asked[0].method, "POST");
    assert_eq!(asked[0].json()["halt"], json!(0));
    let cmds = commands(&asked[0]);
    let (_, c) = cmds
        .iter()
        .find(|(k, _)| k.ends_with("00"))
        .expect("a first command");
    urlencoding_decode(c)
}

fn urlencoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ts(s: &str) -> dozor::domain::Ts {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&Utc)
}

// ---------------------------------------------------------------------------------------------
// Client half.

/// `api-reference/common/users/profile.md` and `api-reference/common/system/scope.md`: `check`
/// asks `profile`, then `scope`; with the scope page's example (`department, entity, log,
/// user`) it names the two missing scopes dozor needs, not `user`.
#[tokio::test]
async fn client_reads_profile_and_scope() {
    let docs = Docs::start(|a| match method_of(a).as_str() {
        "profile" => Answer::json(profile_answer()),
        "scope" => Answer::json(scope_answer()),
        m => panic!("unexpected method {m}"),
    })
    .await;
    let c = client(&docs).await;
    let e = c.ping().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert_eq!(e.code.as_deref(), Some("insufficient_scope"));
    let m = e.to_string();
    assert!(
        m.contains("no `crm` scope") && m.contains("no `task` scope"),
        "{m}"
    );
    assert!(!m.contains("no `user` scope"), "{m}");
    assert!(!m.contains("/1/token/"), "secret leaked: {m}");
    let asked = docs.asked();
    let methods: Vec<String> = asked.iter().map(method_of).collect();
    assert_eq!(methods, ["profile", "scope"]);
    assert!(asked.iter().all(|a| a.method == "POST"));
    assert!(
        asked[0].path().starts_with("/rest/1/token/"),
        "{}",
        asked[0].uri
    );
}

/// `api-reference/user/user-get.md`: the employees with `ACTIVE` a real boolean, `TIMESTAMP_X`
/// an empty object; the request sorts by ID (`sort`/`order` strings) and pages with `start`.
#[tokio::test]
async fn client_reads_user_get() {
    let docs = Docs::start(|_| Answer::json(user_get_answer())).await;
    let c = client(&docs).await;
    let users = c.users().await.unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0].id, "1");
    assert_eq!(users[0].name, "Vadim Valeev");
    assert_eq!(users[0].email.as_deref(), Some("v.r.valeev@bitrix.com"));
    assert!(users[0].active);
    assert_eq!(
        (users[1].id.as_str(), users[1].name.as_str()),
        ("3", "John Smith")
    );
    let asked = docs.asked();
    assert_eq!(asked.len(), 1, "no `next`: one page");
    assert_eq!(method_of(&asked[0]), "user.get");
    let body = asked[0].json();
    assert_eq!(body["sort"], json!("ID"));
    assert_eq!(body["order"], json!("ASC"));
    assert_eq!(body["start"], json!(0));
}

/// `api-reference/crm/deals/crm-deal-list.md` (the six rows) inside the `batch` envelope of
/// `settings/how-to-call-rest-api/batch.md`: ids and amounts read from strings, the pipeline
/// from `CATEGORY_ID`, the creation time with its offset; fewer than 50 rows end the pass.
/// The command orders by ID, pages with `start=-1` and `>ID`.
#[tokio::test]
async fn client_reads_crm_deal_list() {
    let (records, done, asked) = read_kind(EntityKind::Deal, deal_rows()).await;
    assert!(done);
    assert_eq!(records.len(), 6);
    let Record::Deal(d) = &records[0] else {
        panic!("{:?}", records[0]);
    };
    assert_eq!(d.id, "37");
    assert_eq!(d.title, "[A] Deal");
    assert_eq!(d.amount, 19999.99);
    assert_eq!(d.pipeline_id, "1");
    assert_eq!(d.stage_id, "C1:NEW");
    assert_eq!(d.responsible_id.as_deref(), Some("1"));
    assert_eq!(d.created_at, ts("2024-09-02T18:37:18+02:00"));
    let cmd = first_command(&asked);
    assert!(cmd.starts_with("crm.deal.list?"), "{cmd}");
    for part in ["order[ID]=ASC", "filter[>ID]=0", "start=-1", "select[]="] {
        assert!(cmd.contains(part), "{part} missing in {cmd}");
    }
}

/// `api-reference/crm/leads/crm-lead-list.md`: a converted lead (`STATUS_SEMANTIC_ID` `S`),
/// `COMPANY_ID` `"0"` meaning none, `null` UTM fields; the command selects `PHONE` and `EMAIL`
/// explicitly (`*` does not return multi-fields).
#[tokio::test]
async fn client_reads_crm_lead_list() {
    let (records, done, asked) = read_kind(EntityKind::Lead, json!([lead_row()])).await;
    assert!(done);
    let Record::Lead(l) = &records[0] else {
        panic!("{records:?}");
    };
    assert_eq!(l.id, "5");
    assert_eq!(l.responsible_id.as_deref(), Some("1"));
    assert_eq!(l.created_at, ts("2021-05-31T15:10:16+02:00"));
    assert_eq!(l.updated_at, ts("2021-11-26T18:56:13+02:00"));
    let cmd = first_command(&asked);
    assert!(cmd.starts_with("crm.lead.list?"), "{cmd}");
    for part in [
        "select[]=PHONE",
        "select[]=EMAIL",
        "filter[>ID]=0",
        "order[ID]=ASC",
    ] {
        assert!(cmd.contains(part), "{part} missing in {cmd}");
    }
}

/// `api-reference/crm/contacts/crm-contact-list.md`: a contact with an `EMAIL` multi-field
/// and no `DATE_MODIFY` in its selection.
#[tokio::test]
async fn client_reads_crm_contact_list() {
    let (records, done, asked) = read_kind(EntityKind::Contact, json!([contact_row()])).await;
    assert!(done);
    let Record::Contact(c) = &records[0] else {
        panic!("{records:?}");
    };
    assert_eq!(c.id, "75");
    assert!(
        c.name.contains("Anastasia") && c.name.contains("Ilyina"),
        "{c:?}"
    );
    assert_eq!(c.responsible_id.as_deref(), Some("6"));
    let cmd = first_command(&asked);
    assert!(cmd.starts_with("crm.contact.list?"), "{cmd}");
    assert!(cmd.contains("select[]=PHONE"), "{cmd}");
}

/// `api-reference/crm/companies/crm-company-list.md`: the page's row (its request selected
/// only `TITLE`, `ASSIGNED_BY_ID`, `PHONE`) has no date at all: the client cannot place it in
/// time, refuses that row alone and still ends the pass; the command itself selects `*` (the
/// dates) and `PHONE`.
#[tokio::test]
async fn client_reads_crm_company_list() {
    let rows = company_list_answer()["result"].clone();
    let (records, done, asked) = read_kind(EntityKind::Company, rows).await;
    assert!(done);
    assert!(records.is_empty(), "{records:?}");
    let cmd = first_command(&asked);
    assert!(cmd.starts_with("crm.company.list?"), "{cmd}");
    assert!(
        cmd.contains("select[]=*") && cmd.contains("select[]=PHONE"),
        "{cmd}"
    );
}

/// `api-reference/crm/timeline/activities/activity-base/crm-activity-list.md`: an outgoing
/// (`DIRECTION` 2) call (`TYPE_ID` 2, `VOXIMPLANT_CALL`) on contact 15, done; the command
/// selects `COMMUNICATIONS` and watches `LAST_UPDATED`.
#[tokio::test]
async fn client_reads_crm_activity_list() {
    let (records, done, asked) = read_kind(EntityKind::Activity, json!([activity_row()])).await;
    assert!(done);
    let Record::Activity(a) = &records[0] else {
        panic!("{records:?}");
    };
    assert_eq!(a.id, "20");
    assert_eq!(a.responsible_id.as_deref(), Some("505"));
    assert_eq!(a.updated_at, ts("2021-03-21T20:28:24+03:00"));
    assert_eq!(a.entity, Some(EntityRef::new(EntityKind::Contact, "15")));
    assert_eq!(a.direction, Some(dozor::domain::Direction::Out));
    let cmd = first_command(&asked);
    assert!(cmd.starts_with("crm.activity.list?"), "{cmd}");
    assert!(cmd.contains("select[]=COMMUNICATIONS"), "{cmd}");
}

/// `api-reference/tasks/tasks-task-list.md`: the rows sit under `result.tasks`, keys are
/// camelCase, `auditorsData` an id-keyed object and `accomplicesData` `[]`; the command uses
/// UPPER_CASE input keys and no `start=-1` (not a documented fast-paging method).
#[tokio::test]
async fn client_reads_tasks_task_list() {
    let (records, done, asked) = read_kind(EntityKind::Task, task_list_result()).await;
    assert!(done);
    let Record::Task(t) = &records[0] else {
        panic!("{records:?}");
    };
    assert_eq!(t.id, "8017");
    assert_eq!(t.title, "Task Example");
    assert_eq!(t.responsible_id.as_deref(), Some("547"));
    assert_eq!(t.deadline, Some(ts("2025-10-24T19:00:00+02:00")));
    let cmd = first_command(&asked);
    assert!(cmd.starts_with("tasks.task.list?"), "{cmd}");
    for part in ["select[]=RESPONSIBLE_ID", "order[ID]=ASC", "filter[>ID]=0"] {
        assert!(cmd.contains(part), "{part} missing in {cmd}");
    }
    assert!(!cmd.contains("start=-1"), "{cmd}");
}

/// `api-reference/crm/universal/category/crm-category-list.md` (`result.categories`, int ids,
/// `isDefault` Y/N) and `api-reference/crm/status/crm-status-list.md` (`SEMANTICS` null / S /
/// F): the pipelines with their stages, the won and lost ones known; the stages of pipeline 9
/// are asked with `ENTITY_ID` `DEAL_STAGE_9`.
#[tokio::test]
async fn client_reads_categories_and_statuses() {
    let docs = Docs::start(|a| {
        batch_answer(a, |c| {
            if c.starts_with("crm.category.list") {
                category_result()
            } else {
                status_rows()
            }
        })
    })
    .await;
    let c = client(&docs).await;
    let pipelines = c.pipelines().await.unwrap();
    let general = pipelines.iter().find(|p| p.id == "0").expect("pipeline 0");
    assert!(general.is_default);
    assert_eq!(general.name, "General");
    let nine = pipelines.iter().find(|p| p.id == "9").expect("pipeline 9");
    assert_eq!(nine.name, "Funnel with Original Name");
    let sem = |id: &str| {
        general
            .stages
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.semantics)
    };
    assert_eq!(sem("NEW"), Some(Semantics::Open));
    assert_eq!(sem("WON"), Some(Semantics::Won));
    assert_eq!(sem("LOSE"), Some(Semantics::Lost));
    let all: Vec<String> = docs
        .asked()
        .iter()
        .flat_map(commands)
        .map(|(_, c)| urlencoding_decode(&c))
        .collect();
    assert!(
        all.iter()
            .any(|c| c.starts_with("crm.category.list?entityTypeId=2")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|c| c.starts_with("crm.status.list?")
                && c.contains("filter[ENTITY_ID]=DEAL_STAGE_9")),
        "{all:?}"
    );
}

/// `settings/how-to-call-rest-api/batch.md`, "Error example (halt = 0)": HTTP 200, `result`
/// `[]` and each refused command in `result_error` with an empty description. The read fails
/// as a refusal for lack of a scope, not as a malformed answer.
#[tokio::test]
async fn client_reads_batch_result_error() {
    let docs = Docs::start(|a| {
        let mut errors = serde_json::Map::new();
        for (k, _) in commands(a) {
            errors.insert(
                k,
                json!({"error": "insufficient_scope", "error_description": ""}),
            );
        }
        Answer::json(json!({
            "result": {
                "result": [],
                "result_error": errors,
                "result_total": [],
                "result_next": [],
                "result_time": []
            },
            "time": {
                "start": 1724916638.077564,
                "finish": 1724916638.132399,
                "duration": 0.05483508110046387,
                "processing": 0.0017969608306884766,
                "date_start": "2024-08-29T10:30:38+03:00",
                "date_finish": "2024-08-29T10:30:38+03:00"
            }
        }))
    })
    .await;
    let c = client(&docs).await;
    let e = c
        .fetch_page(EntityKind::Deal, &Cursor::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert_eq!(e.code.as_deref(), Some("insufficient_scope"));
    assert_eq!(e.method, "crm.deal.list");
}

/// `settings/how-to-call-rest-api/batch.md`, "Response Handling": `result_total` and
/// `result_next` per command, `result_time` per command. A full first page of 50 chained rows
/// makes the client follow on with the next command's rows; `result_time` without
/// `operating` is accepted.
#[tokio::test]
async fn client_reads_batch_result_total_and_next() {
    // 50 deals shaped like the page's first row, ids 37..86, then the page's six again (ids
    // 87..92) for the second command.
    let row = deal_rows()[0].clone();
    let docs = Docs::start(move |a| {
        let mut result = serde_json::Map::new();
        let mut total = serde_json::Map::new();
        let mut next = serde_json::Map::new();
        let mut times = serde_json::Map::new();
        for (i, (k, _)) in commands(a).into_iter().enumerate().take(2) {
            let n = if i == 0 { 50 } else { 6 };
            let rows: Vec<Value> = (0..n)
                .map(|j| {
                    let mut r = row.clone();
                    r["ID"] = json!((37 + i * 50 + j).to_string());
                    r
                })
                .collect();
            result.insert(k.clone(), Value::Array(rows));
            total.insert(k.clone(), json!(56));
            if i == 0 {
                next.insert(k.clone(), json!(50));
            }
            times.insert(
                k,
                json!({
                    "start": 1724916859.46156,
                    "finish": 1724916859.464775,
                    "duration": 0.0032150745391845703,
                    "processing": 0.003075838088989258,
                    "date_start": "2024-08-29T10:34:19+03:00",
                    "date_finish": "2024-08-29T10:34:19+03:00"
                }),
            );
        }
        Answer::json(json!({
            "result": {
                "result": result,
                "result_error": [],
                "result_total": total,
                "result_next": next,
                "result_time": times
            },
            "time": batch_time()
        }))
    })
    .await;
    let c = client(&docs).await;
    let page = c
        .fetch_page(EntityKind::Deal, &Cursor::default())
        .await
        .unwrap();
    assert_eq!(page.records.len(), 56);
    assert!(page.done);
    let cmds = commands(&docs.asked()[0]);
    let second = urlencoding_decode(&cmds[1].1);
    assert!(
        second.contains("filter[>ID]=$result[p00][49][ID]"),
        "{second}"
    );
}

/// `api-reference/crm/deals/crm-deal-add.md`: the answer is the new id as a number (`394`);
/// the request carries `fields` with `TITLE`, `STAGE_ID`, `CATEGORY_ID`, `OPPORTUNITY`.
#[tokio::test]
async fn client_reads_crm_deal_add() {
    let docs = Docs::start(|_| {
        Answer::json(json!({
            "result": 394,
            "time": {
                "start": 1725013197.635808,
                "finish": 1725013198.580873,
                "duration": 0.9450650215148926,
                "processing": 0.6822988986968994,
                "date_start": "2024-08-30T12:19:57+02:00",
                "date_finish": "2024-08-30T12:19:58+02:00",
                "operating": 0
            }
        }))
    })
    .await;
    let c = client(&docs).await;
    let id = c
        .create_deal(&NewDeal {
            title: "Повторный заказ".into(),
            pipeline_id: Some("1".into()),
            stage_id: Some("C1:NEW".into()),
            responsible_id: Some("6".into()),
            contact_id: None,
            company_id: None,
            lead_id: None,
            amount: 19999.99,
            comment: "[dozor:k1]".into(),
        })
        .await
        .unwrap();
    assert_eq!(id, "394");
    let asked = docs.asked();
    assert_eq!(asked.len(), 1);
    assert_eq!(method_of(&asked[0]), "crm.deal.add");
    let f = &asked[0].json()["fields"];
    assert_eq!(f["TITLE"], json!("Повторный заказ"));
    assert_eq!(f["STAGE_ID"], json!("C1:NEW"));
    assert_eq!(f["CATEGORY_ID"], json!(1));
    assert_eq!(f["ASSIGNED_BY_ID"], json!(6));
    assert_eq!(f["OPPORTUNITY"], json!("19999.99"));
}

/// `api-reference/tasks/tasks-task-add.md`: the answer nests the task under `result.task`
/// with a string `id` (`"3711"`); the request has `fields` with UPPER_CASE `TITLE`,
/// `RESPONSIBLE_ID`, `DEADLINE` and the CRM binding in `UF_CRM_TASK` (`D_<id>`).
#[tokio::test]
async fn client_reads_tasks_task_add() {
    let docs = Docs::start(|_| {
        Answer::json(json!({
            "result": {"task": {
                "id": "3711", "parentId": null, "title": "task for test", "description": "",
                "priority": "1", "createdBy": "1", "createdDate": "2024-11-02T10:06:08+02:00",
                "responsibleId": "1", "changedBy": "1", "changedDate": "2024-11-02T10:06:08+02:00",
                "closedDate": null, "deadline": null, "status": "2", "auditors": [],
                "accomplices": [], "checklist": [], "group": [], "accomplicesData": [],
                "auditorsData": []
            }},
            "time": {
                "start": 1730534768.046843,
                "finish": 1730534768.385657,
                "duration": 0.33881402015686035,
                "processing": 0.31316208839416504,
                "date_start": "2024-11-02T10:06:08+02:00",
                "date_finish": "2024-11-02T10:06:08+02:00",
                "operating": 0
            }
        }))
    })
    .await;
    let c = client(&docs).await;
    let id = c
        .create_task(&NewTask {
            title: "task for test".into(),
            description: "[dozor:k2]".into(),
            responsible_id: "1".into(),
            deadline: Utc.with_ymd_and_hms(2025, 12, 31, 20, 59, 59).unwrap(),
            entity: Some(EntityRef::new(EntityKind::Deal, "10")),
        })
        .await
        .unwrap();
    assert_eq!(id, "3711");
    let asked = docs.asked();
    assert_eq!(method_of(&asked[0]), "tasks.task.add");
    let f = &asked[0].json()["fields"];
    assert_eq!(f["TITLE"], json!("task for test"));
    assert_eq!(f["RESPONSIBLE_ID"], json!("1"));
    assert_eq!(f["UF_CRM_TASK"], json!(["D_10"]));
    let deadline = f["DEADLINE"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(deadline).unwrap(),
        Utc.with_ymd_and_hms(2025, 12, 31, 20, 59, 59).unwrap()
    );
}

/// `api-reference/crm/timeline/comments/crm-timeline-comment-add.md`: the answer is the
/// comment id (`999`); the request uses lowercase `fields` with `ENTITY_ID`, `ENTITY_TYPE`
/// (`deal`) and `COMMENT`.
#[tokio::test]
async fn client_reads_crm_timeline_comment_add() {
    let docs = Docs::start(|_| {
        Answer::json(json!({
            "result": 999,
            "time": {
                "start": 1715091541.642592,
                "finish": 1715091541.730599,
                "duration": 0.08800697326660156,
                "date_start": "2024-05-03T17:19:01+03:00",
                "date_finish": "2024-05-03T17:19:01+03:00",
                "operating": 0
            }
        }))
    })
    .await;
    let c = client(&docs).await;
    let id = c
        .add_comment(&EntityRef::new(EntityKind::Deal, "123"), "Клиент передан")
        .await
        .unwrap();
    assert_eq!(id, "999");
    let asked = docs.asked();
    assert_eq!(method_of(&asked[0]), "crm.timeline.comment.add");
    let body = asked[0].json();
    assert!(body.get("FIELDS").is_none(), "{body}");
    assert_eq!(
        body["fields"],
        json!({"ENTITY_ID": 123, "ENTITY_TYPE": "deal", "COMMENT": "Клиент передан"})
    );
}

/// `api-reference/crm/duplicates/crm-duplicate-find-by-comm.md`: `{"CONTACT":[275,2297]}`,
/// int ids; the request has `type` `PHONE` and the number in `values` (at most 20).
#[tokio::test]
async fn client_reads_crm_duplicate_findbycomm() {
    let docs = Docs::start(|_| {
        Answer::json(json!({
            "result": {"CONTACT": [275, 2297]},
            "time": {
                "start": 1750684060.672785,
                "finish": 1750684060.724903,
                "duration": 0.05211806297302246,
                "processing": 0.018191099166870117,
                "date_start": "2025-06-23T16:07:40+03:00",
                "date_finish": "2025-06-23T16:07:40+03:00",
                "operating_reset_at": 1750684660,
                "operating": 0
            }
        }))
    })
    .await;
    let c = client(&docs).await;
    let found = c.find_by_phone("+79991234567").await.unwrap();
    assert_eq!(
        found,
        [
            EntityRef::new(EntityKind::Contact, "275"),
            EntityRef::new(EntityKind::Contact, "2297")
        ]
    );
    let body = docs.asked()[0].json();
    assert_eq!(body["type"], json!("PHONE"));
    let values = body["values"].as_array().unwrap();
    assert!(values.contains(&json!("+79991234567")), "{body}");
    assert!(values.len() <= 20);
}

/// `api-reference/telephony/telephony-external-call-register.md`: the answer's `CALL_ID` (a
/// string), `CRM_CREATED_LEAD` null, `CRM_CREATED_ENTITIES` `[]`, `CRM_ENTITY_ID` a number.
/// Only an application may call it; the OAuth client reads the `CALL_ID` and finishes the
/// call with it (`telephony-external-call-finish.md` answer, `CRM_ACTIVITY_ID`).
#[tokio::test]
async fn client_reads_telephony_externalcall_register() {
    let (docs, c) = app_client(|method| match method {
        // `voximplant-statistic-get.md`: no row has this EXTERNAL_CALL_ID yet.
        "voximplant.statistic.get" => Answer::json(json!({"result": [], "total": 0})),
        "telephony.externalcall.register" => Answer::json(docs_external_call_register()),
        "telephony.externalcall.finish" => Answer::json(docs_external_call_finish()),
        other => panic!("unexpected method {other}"),
    })
    .await;
    let id = c.register_call(&docs_call()).await.unwrap();
    assert_eq!(id, "7943");
    let asked = docs.asked();
    let reg = asked
        .iter()
        .find(|a| method_of(a).eq_ignore_ascii_case("telephony.externalCall.register"))
        .expect("register asked");
    let p = reg.json();
    assert_eq!(p["PHONE_NUMBER"], json!("+79991234567"));
    assert_eq!(p["TYPE"], json!(2));
    assert_eq!(p["EXTERNAL_CALL_ID"], json!("comagic-1"));
    assert_eq!(p["CRM_ENTITY_TYPE"], json!("CONTACT"));
    let fin = asked
        .iter()
        .find(|a| method_of(a).eq_ignore_ascii_case("telephony.externalCall.finish"))
        .expect("finish asked");
    assert_eq!(
        fin.json()["CALL_ID"],
        json!("externalCall.716f1cb73def9700a23842adf9c4c568.1773130779")
    );
}

/// An application (OAuth) client on a stand-in: the token answer of `settings/oauth/index.md`,
/// its `client_endpoint` placeholder filled in with the stand-in's own address; every REST
/// method (lower-cased) answered by `answer`.
async fn app_client(answer: fn(&str) -> Answer) -> (Docs, Bitrix24) {
    let base = Arc::new(std::sync::OnceLock::<String>::new());
    let endpoint = base.clone();
    let docs = Docs::start(move |a| {
        if a.path().starts_with("/oauth/token") {
            return Answer::json(json!({
                "access_token": "s1morf609228iwyjjpvfv6wsvuja4p8u",
                "expires": 1731764501,
                "expires_in": 3600,
                "scope": "app",
                "domain": "oauth.bitrix.info",
                "server_endpoint": "https://oauth.bitrix.info/rest/",
                "status": "L",
                "client_endpoint": format!("{}/rest/", endpoint.get().unwrap()),
                "member_id": "bc8ad33e5fb0e3b2d4c1e75e5f7ae4e3",
                "user_id": 1,
                "refresh_token": "4s386p3q0tr8dy89xvmt96234v3dljg8"
            }));
        }
        answer(&method_of(a).to_ascii_lowercase())
    })
    .await;
    base.set(docs.base.clone()).unwrap();
    let c = Bitrix24::new(
        "t1",
        &Bitrix24Config {
            webhook_url: None,
            portal_url: Some(docs.base.clone()),
            client_id: Some("local.app".into()),
            client_secret: Some(Secret::new("secret")),
            refresh_token: Some(Secret::new("4s386p3q0tr8dy89xvmt96234v3dljg8")),
            oauth_url: docs.base.clone(),
            ..cfg("")
        },
        Arc::new(common::MemTokens::default()),
    )
    .await
    .unwrap();
    (docs, c)
}

/// The call of the telephony pages' examples: incoming, 95 s, contact 797, manager 1269.
fn docs_call() -> dozor::crm::CallRecord {
    dozor::crm::CallRecord {
        external_id: "comagic-1".into(),
        phone: "+79991234567".into(),
        direction: dozor::domain::Direction::In,
        started_at: Utc.with_ymd_and_hms(2026, 3, 10, 8, 19, 38).unwrap(),
        duration_s: 95,
        answered: true,
        responsible_id: Some("1269".into()),
        entity: Some(EntityRef::new(EntityKind::Contact, "797")),
        recording_url: None,
    }
}

/// The answer of `api-reference/telephony/telephony-external-call-register.md`.
fn docs_external_call_register() -> serde_json::Value {
    json!({
        "result": {
            "CALL_ID": "externalCall.716f1cb73def9700a23842adf9c4c568.1773130779",
            "CRM_CREATED_LEAD": null,
            "CRM_CREATED_ENTITIES": [],
            "CRM_ENTITY_TYPE": "CONTACT",
            "CRM_ENTITY_ID": 797
        },
        "time": {
            "start": 1773130778,
            "finish": 1773130779.120838,
            "duration": 1.120837926864624,
            "processing": 1,
            "date_start": "2026-03-10T11:19:38+03:00",
            "date_finish": "2026-03-10T11:19:39+03:00",
            "operating_reset_at": 1773131378,
            "operating": 0.22185301780700684
        }
    })
}

/// The answer of `api-reference/telephony/telephony-external-call-finish.md` ("Response
/// Handling"), verbatim: `CRM_ACTIVITY_ID` is a number there.
fn docs_external_call_finish() -> serde_json::Value {
    json!({
        "result": {
            "CALL_ID": "externalCall.716f1cb73def9700a23842adf9c4c568.1773130779",
            "EXTERNAL_CALL_ID": null,
            "PORTAL_USER_ID": 1269,
            "PHONE_NUMBER": "19062195047",
            "PORTAL_NUMBER": "3",
            "INCOMING": "2",
            "CALL_DURATION": 95,
            "CALL_START_DATE": {},
            "CALL_STATUS": 1,
            "CALL_VOTE": 5,
            "COST": 0,
            "COST_CURRENCY": "",
            "CALL_FAILED_CODE": "200",
            "CALL_FAILED_REASON": "",
            "REST_APP_ID": "3",
            "REST_APP_NAME": "REST API Documentation",
            "CRM_ACTIVITY_ID": 7943,
            "COMMENT": null,
            "CRM_ENTITY_TYPE": "CONTACT",
            "CRM_ENTITY_ID": 797,
            "ID": 7
        },
        "time": {
            "start": 1773132478,
            "finish": 1773132480.301376,
            "duration": 2.3013761043548584,
            "processing": 2,
            "date_start": "2026-03-10T11:47:58+01:00",
            "date_finish": "2026-03-10T11:48:00+01:00",
            "operating_reset_at": 1773133078,
            "operating": 1.4118058681488037
        }
    })
}

/// `api-reference/telephony/voximplant/voximplant-statistic-get.md` ("Response Handling"), its
/// second row, with `EXTERNAL_CALL_ID` filled in with the id dozor registered the call under: a
/// call registered before a crash is found by that id and not registered again.
#[tokio::test]
async fn client_finds_a_registered_call_in_voximplant_statistic_get() {
    let (docs, c) = app_client(|method| match method {
        "voximplant.statistic.get" => Answer::json(json!({
            "result": [{
                "ID": "7",
                "PORTAL_USER_ID": "1269",
                "PORTAL_NUMBER": "3",
                "PHONE_NUMBER": "19061234568",
                "CALL_ID": "externalCall.716f1cb73def9700a23842adf9c4c568.1773130779",
                "EXTERNAL_CALL_ID": "comagic-1",
                "CALL_CATEGORY": "external",
                "CALL_LOG": null,
                "CALL_DURATION": "95",
                "CALL_START_DATE": "2026-03-10T11:19:38+01:00",
                "CALL_RECORD_URL": null,
                "CALL_VOTE": "5",
                "COST": "0.0000",
                "COST_CURRENCY": "",
                "CALL_FAILED_CODE": "200",
                "CALL_FAILED_REASON": "",
                "CRM_ENTITY_TYPE": "CONTACT",
                "CRM_ENTITY_ID": "797",
                "CRM_ACTIVITY_ID": "7943",
                "REST_APP_ID": "3",
                "REST_APP_NAME": "REST API Documentation",
                "TRANSCRIPT_ID": "1",
                "TRANSCRIPT_PENDING": "N",
                "SESSION_ID": null,
                "REDIAL_ATTEMPT": null,
                "COMMENT": null,
                "RECORD_DURATION": null,
                "RECORD_FILE_ID": 9079,
                "CALL_TYPE": "2"
            }],
            "total": 1,
            "time": {
                "start": 1773141841,
                "finish": 1773141841.595178,
                "duration": 0.5951778888702393,
                "processing": 0,
                "date_start": "2026-03-10T14:24:01+01:00",
                "date_finish": "2026-03-10T14:24:01+01:00",
                "operating_reset_at": 1773142441,
                "operating": 0
            }
        })),
        other => panic!("a registered call is not registered again: {other}"),
    })
    .await;
    let id = c.register_call(&docs_call()).await.unwrap();
    assert_eq!(id, "7943");
    let stat = docs
        .asked()
        .into_iter()
        .find(|a| method_of(a).eq_ignore_ascii_case("voximplant.statistic.get"))
        .expect("statistic asked");
    assert_eq!(
        stat.json()["FILTER"]["EXTERNAL_CALL_ID"],
        json!("comagic-1")
    );
}

/// One error body of `_includes/system-errors.md` (code, "Error Message" column as the
/// description) with the status the page gives it.
fn system_error(status: u16, code: &str, message: &str) -> Answer {
    Answer::status_json(status, json!({"error": code, "error_description": message}))
}

/// What `profile` gets when the stand-in always answers `answer`, and how many requests it took.
async fn profile_error(answer: Answer) -> (dozor::http::Error, usize) {
    let docs = Docs::start(move |_| answer.clone()).await;
    let c = client(&docs).await;
    let e = c.ping().await.unwrap_err();
    (e, docs.asked().len())
}

/// `_includes/system-errors.md`: the credential errors, each with its page status, are
/// authorisation failures the operator must fix: not retried, no secret in the text.
/// `NO_AUTH_FOUND` 401 "Wrong authorization data", `INVALID_CREDENTIALS` 403, `insufficient_scope`
/// 403, `expired_token` 401 (a webhook has nothing to refresh), `user_access_error` 403.
#[tokio::test]
async fn client_reads_credential_errors() {
    for (status, code, message) in [
        (401, "NO_AUTH_FOUND", "Wrong authorization data"),
        (403, "INVALID_CREDENTIALS", "Invalid request credentials"),
        (
            403,
            "insufficient_scope",
            "The request requires higher privileges than provided by the webhook token",
        ),
        (
            401,
            "expired_token",
            "The access token provided has expired",
        ),
        (
            403,
            "user_access_error",
            "The user does not have access to the application",
        ),
    ] {
        let (e, n) = profile_error(system_error(status, code, message)).await;
        assert_eq!(e.kind, ErrorKind::Auth, "{code}: {e}");
        assert_eq!(e.code.as_deref(), Some(code));
        assert_eq!(e.status, Some(status));
        assert_eq!(n, 1, "{code} retried");
        let m = e.to_string();
        assert!(m.contains(message), "{m}");
        assert!(!m.contains("/1/token/"), "secret leaked: {m}");
    }
}

/// `_includes/system-errors.md`: `ACCESS_DENIED` 403 ("REST API is available only on
/// commercial plans"), `OVERLOAD_LIMIT` 503 (a manual block: retrying only prolongs it),
/// `PORTAL_DELETED` 500: permanent, asked once. `api-reference/rest-v3.md`:
/// `ERROR_METHOD_NOT_FOUND` 404, also permanent.
#[tokio::test]
async fn client_reads_permanent_errors() {
    for (status, code, message) in [
        (
            403,
            "ACCESS_DENIED",
            "REST API is available only on commercial plans",
        ),
        (503, "OVERLOAD_LIMIT", "REST API is blocked due to overload"),
        (500, "PORTAL_DELETED", "Portal was deleted"),
        (404, "ERROR_METHOD_NOT_FOUND", "Method not found"),
    ] {
        let (e, n) = profile_error(system_error(status, code, message)).await;
        assert_eq!(e.kind, ErrorKind::Permanent, "{code}: {e}");
        assert_eq!(e.code.as_deref(), Some(code));
        assert_eq!(e.status, Some(status));
        assert_eq!(n, 1, "{code} retried");
    }
}

/// `_includes/system-errors.md` (`QUERY_LIMIT_EXCEEDED` 503 "Too many requests") and
/// `limits.md` ("retry calls with increasing delay"): the refused call is repeated after a
/// pause and the answer that follows is read.
#[tokio::test]
async fn client_waits_out_query_limit_exceeded() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let docs = Docs::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) < 2 {
            system_error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        } else {
            Answer::json(user_get_answer())
        }
    })
    .await;
    let c = client(&docs).await;
    let users = c.users().await.unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(n.load(Ordering::SeqCst), 3);
    // Always refused: a rate-limit error once the wait budget is spent.
    let docs =
        Docs::start(|_| system_error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")).await;
    let e = client(&docs).await.users().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::RateLimited, "{e}");
    assert_eq!(
        (e.status, e.code.as_deref()),
        (Some(503), Some("QUERY_LIMIT_EXCEEDED"))
    );
}

/// `limits.md`, "Resource Intensity Limits": HTTP 429 `OPERATION_TIME_LIMIT` blocks the method
/// until a bucket resets; the error is a rate limit carrying the wait (here longer than the
/// client's wait budget, so it is returned instead of slept through).
#[tokio::test]
async fn client_reads_operation_time_limit() {
    let (e, n) = profile_error(system_error(
        429,
        "OPERATION_TIME_LIMIT",
        "Method is blocked due to operation time limit.",
    ))
    .await;
    assert_eq!(e.kind, ErrorKind::RateLimited, "{e}");
    assert_eq!(
        (e.status, e.code.as_deref()),
        (Some(429), Some("OPERATION_TIME_LIMIT"))
    );
    assert!(
        e.retry_after.is_some_and(|w| w >= Duration::from_secs(1)),
        "{e:?}"
    );
    assert_eq!(n, 1);
}

/// `_includes/system-errors.md`: `INTERNAL_SERVER_ERROR` 500 ("Internal server error") is the
/// server's failure: retried, and the answer after it is read.
#[tokio::test]
async fn client_retries_internal_server_error() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let docs = Docs::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            system_error(500, "INTERNAL_SERVER_ERROR", "Internal server error")
        } else {
            Answer::json(user_get_answer())
        }
    })
    .await;
    let users = client(&docs).await.users().await.unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(n.load(Ordering::SeqCst), 2);
}

/// `api-reference/crm/deals/crm-deal-list.md`, "Error Handling": HTTP 400 with an empty
/// `error` and the meaning only in the text ("Access denied."): a permanent error that keeps
/// the text.
#[tokio::test]
async fn client_reads_empty_code_errors() {
    let docs = Docs::start(|_| {
        Answer::status_json(
            400,
            json!({"error": "", "error_description": "Access denied."}),
        )
    })
    .await;
    let e = client(&docs).await.users().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert_eq!(e.status, Some(400));
    assert!(e.to_string().contains("Access denied."), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Simulator half.

async fn sim() -> SimHandle {
    common::small_sim(21).await
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn wh(h: &SimHandle, method: &str, body: Value) -> (u16, Value) {
    post(&format!("{}{method}", h.b24_webhook_url()), body).await
}

/// `api-reference/telephony/telephony-external-call-register.md` and
/// `telephony-external-call-finish.md`: an application registers and finishes a call; the
/// finish answer has the page's fields and types (`CALL_VOTE` null: no vote was sent).
#[tokio::test]
async fn sim_answers_telephony_externalcall_finish() {
    let h = sim().await;
    let c = h.sim.creds.clone();
    let t: Value = reqwest::get(format!(
        "{}/b24/oauth/token/?grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
        h.base_url(),
        c.b24_client_id,
        c.b24_client_secret,
        c.b24_refresh_token
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let access = t["access_token"].as_str().unwrap().to_string();
    let ep = t["client_endpoint"].as_str().unwrap().to_string();
    let contact = h.sim.world().contacts.values().next().unwrap().clone();
    let (st, v) = post(
        &format!("{ep}telephony.externalCall.register"),
        json!({"auth": access, "USER_ID": contact.responsible_id, "PHONE_NUMBER": contact.phones[0],
               "TYPE": 2, "CALL_START_DATE": "2026-03-10T11:19:38+03:00", "EXTERNAL_CALL_ID": "comagic-1"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = post(
        &format!("{ep}telephony.externalCall.finish"),
        json!({"auth": access, "CALL_ID": v["result"]["CALL_ID"], "USER_ID": contact.responsible_id,
               "DURATION": 95, "STATUS_CODE": "200"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let mut docs = docs_external_call_finish();
    docs["result"]["CALL_VOTE"] = Value::Null;
    assert_same_shape(&docs["result"], &v["result"], "result");
}

/// `api-reference/common/users/profile.md` and `api-reference/common/system/scope.md`.
#[tokio::test]
async fn sim_answers_profile_and_scope() {
    let h = sim().await;
    let (st, v) = wh(&h, "profile", json!({})).await;
    assert_eq!(st, 200);
    assert_same_shape(&profile_answer(), &v, "");
    let (st, v) = wh(&h, "scope", json!({})).await;
    assert_eq!(st, 200);
    assert_same_shape(&scope_answer(), &v, "");
    h.stop().await;
}

/// `api-reference/user/user-get.md`: the page's request (`FILTER` `ACTIVE`, string `sort` and
/// `order`) and the answer's fields.
#[tokio::test]
async fn sim_answers_user_get() {
    let h = sim().await;
    let (st, v) = wh(
        &h,
        "user.get",
        json!({"FILTER": {"ACTIVE": true}, "sort": "ID", "order": "ASC"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(!v["result"].as_array().unwrap().is_empty());
    // The keys every employee has (the second row of the page, without the personal ones).
    let mut docs = user_get_answer();
    let row = &mut docs["result"][1];
    for k in [
        "LAST_LOGIN",
        "DATE_REGISTER",
        "IS_ONLINE",
        "TIMESTAMP_X",
        "LAST_ACTIVITY_DATE",
        "PERSONAL_GENDER",
        "PERSONAL_BIRTHDAY",
        "UF_EMPLOYMENT_DATE",
    ] {
        row.as_object_mut().unwrap().remove(k);
    }
    docs["result"] = json!([row.clone()]);
    assert_same_shape(&docs, &v, "");
    h.stop().await;
}

/// `api-reference/crm/deals/crm-deal-list.md`: the page's `SELECT` in UPPER case; the rows
/// carry exactly the selected fields as strings, with `total` and `time`.
#[tokio::test]
async fn sim_answers_crm_deal_list() {
    let h = sim().await;
    let (st, v) = wh(
        &h,
        "crm.deal.list",
        json!({"SELECT": ["ID", "TITLE", "TYPE_ID", "CATEGORY_ID", "STAGE_ID", "OPPORTUNITY",
            "IS_MANUAL_OPPORTUNITY", "ASSIGNED_BY_ID", "DATE_CREATE"],
            "ORDER": {"ID": "ASC"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(!v["result"].as_array().unwrap().is_empty());
    assert_same_shape(&deal_list_answer(), &v, "");
    h.stop().await;
}

/// `api-reference/crm/leads/crm-lead-list.md`: `select` `*` gives the lead fields of the
/// page's row.
#[tokio::test]
async fn sim_answers_crm_lead_list() {
    let h = sim().await;
    let (st, v) = wh(
        &h,
        "crm.lead.list",
        json!({"select": ["*"], "order": {"ID": "ASC"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(!v["result"].as_array().unwrap().is_empty());
    // A lead known by its first name only has no last name: null, like the page's
    // `SECOND_NAME`.
    let mut row = lead_row();
    row["LAST_NAME"] = Value::Null;
    assert_same_shape(&json!({"result": [row]}), &v, "");
    assert!(v["total"].is_number());
    h.stop().await;
}

/// `api-reference/crm/contacts/crm-contact-list.md` and `crm-company-list.md`: the selected
/// fields, multi-fields as arrays of `{ID, VALUE_TYPE, VALUE, TYPE_ID}`.
#[tokio::test]
async fn sim_answers_crm_contact_and_company_list() {
    let h = sim().await;
    let (st, v) = wh(
        &h,
        "crm.contact.list",
        json!({"SELECT": ["ID", "NAME", "LAST_NAME", "EXPORT", "ASSIGNED_BY_ID", "DATE_CREATE", "EMAIL"],
            "FILTER": {"HAS_EMAIL": "Y"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(!v["result"].as_array().unwrap().is_empty(), "{v}");
    assert_same_shape(&json!({"result": [contact_row()]}), &v, "");
    let (st, v) = wh(
        &h,
        "crm.company.list",
        json!({"SELECT": ["TITLE", "ASSIGNED_BY_ID", "PHONE"], "FILTER": {"HAS_PHONE": "Y"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(!v["result"].as_array().unwrap().is_empty(), "{v}");
    assert_same_shape(&company_list_answer(), &v, "");
    h.stop().await;
}

/// `api-reference/crm/timeline/activities/activity-base/crm-activity-list.md`: the page's
/// request (`select` `*` and `COMMUNICATIONS`, `start` 0) on calls.
#[tokio::test]
async fn sim_answers_crm_activity_list() {
    let h = sim().await;
    let (st, v) = wh(
        &h,
        "crm.activity.list",
        json!({"order": {"ID": "DESC"}, "filter": {"TYPE_ID": 2}, "select": ["*", "COMMUNICATIONS"], "start": 0}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(!v["result"].as_array().unwrap().is_empty(), "{v}");
    assert_same_shape(&json!({"result": [activity_row()]}), &v, "");
    h.stop().await;
}

/// `api-reference/tasks/tasks-task-list.md`: `result.tasks[]` with camelCase keys and the
/// top-level `total`, for the select of the page's field list.
#[tokio::test]
async fn sim_answers_tasks_task_list() {
    let h = sim().await;
    let (st, v) = wh(
        &h,
        "tasks.task.list",
        json!({"select": ["ID", "TITLE", "DESCRIPTION", "DEADLINE", "CREATED_DATE", "RESPONSIBLE_ID", "STATUS"],
            "order": {"ID": "ASC"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let docs = json!({"result": {"tasks": [{
        "id": "8017",
        "title": "Task Example",
        "description": "Task description with [B]formatting[/B]",
        "deadline": "2025-10-24T19:00:00+02:00",
        "createdDate": "2025-06-04T16:15:55+02:00",
        "responsibleId": "547",
        "status": "2"
    }]}, "total": 1});
    assert!(!v["result"]["tasks"].as_array().unwrap().is_empty(), "{v}");
    assert_same_shape(&docs, &v, "");
    h.stop().await;
}

/// `api-reference/crm/status/crm-status-list.md` (the page's filter `ENTITY_ID`
/// `DEAL_STAGE`) and `api-reference/crm/universal/category/crm-category-list.md`
/// (`entityTypeId` 2).
#[tokio::test]
async fn sim_answers_crm_status_and_category_list() {
    let h = sim().await;
    let (st, v) = wh(
        &h,
        "crm.status.list",
        json!({"order": {"SORT": "ASC"}, "filter": {"ENTITY_ID": "DEAL_STAGE"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_same_shape(&json!({"result": status_rows(), "total": 8}), &v, "");
    let (st, v) = wh(&h, "crm.category.list", json!({"entityTypeId": 2})).await;
    assert_eq!(st, 200, "{v}");
    assert_same_shape(&json!({"result": category_result(), "total": 4}), &v, "");
    assert!(
        v["result"]["categories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == json!(0) && c["isDefault"] == json!("Y")),
        "{v}"
    );
    h.stop().await;
}

/// `settings/how-to-call-rest-api/batch.md`, "Response Handling": `result.result` per command,
/// `result_total` for a list command, `result_time` per command, `result_error` and
/// `result_next` as `[]` when empty.
#[tokio::test]
async fn sim_answers_batch() {
    let h = sim().await;
    let (st, v) = wh(
        &h,
        "batch",
        json!({"halt": 0, "cmd": {"get_user": "profile", "get_stages": "crm.status.list?filter[ENTITY_ID]=DEAL_STAGE"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let docs = json!({
        "result": {
            "result": {"get_user": {"ID": "1", "NAME": "John", "LAST_NAME": "Doe"},
                       "get_stages": [{"ID": "1", "NAME": "DEMO", "SORT": 500}]},
            "result_error": [],
            "result_total": {"get_stages": 1},
            "result_next": [],
            "result_time": {"get_user": {"start": 1724916859.46156, "finish": 1724916859.464775,
                "duration": 0.0032150745391845703, "processing": 0.003075838088989258,
                "date_start": "2024-08-29T10:34:19+03:00", "date_finish": "2024-08-29T10:34:19+03:00"}}
        },
        "time": batch_time()
    });
    // `SORT` is a string in `crm.status.list` (its own page): compare the stage row by keys.
    let mut docs = docs;
    docs["result"]["result"]["get_stages"][0]["SORT"] = json!("500");
    assert_same_shape(&docs, &v, "");
    h.stop().await;
}

/// `api-reference/crm/deals/crm-deal-add.md` (`result` an integer id) and
/// `api-reference/crm/timeline/comments/crm-timeline-comment-add.md` (`result` an integer
/// comment id), with the pages' request shapes.
#[tokio::test]
async fn sim_answers_crm_deal_add_and_timeline_comment_add() {
    let h = sim().await;
    let (st, v) = wh(
        &h,
        "crm.deal.add",
        json!({"fields": {"TITLE": "Plan sale", "TYPE_ID": "GOODS", "CATEGORY_ID": 0,
            "STAGE_ID": "NEW", "OPPORTUNITY": 5000, "CURRENCY_ID": "RUB", "ASSIGNED_BY_ID": 1},
            "params": {"REGISTER_SONET_EVENT": "N"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_same_shape(
        &json!({"result": 394, "time": {"start": 1.0, "duration": 0.9}}),
        &v,
        "",
    );
    let deal = v["result"].as_u64().unwrap();
    let (st, v) = wh(
        &h,
        "crm.timeline.comment.add",
        json!({"fields": {"ENTITY_ID": deal, "ENTITY_TYPE": "deal", "COMMENT": "New comment was added"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_same_shape(&json!({"result": 999}), &v, "");
    h.stop().await;
}

/// `api-reference/tasks/tasks-task-add.md`: `result.task` with camelCase keys, string ids,
/// `[]` for the empty lists.
#[tokio::test]
async fn sim_answers_tasks_task_add() {
    let h = sim().await;
    let (st, v) = wh(
        &h,
        "tasks.task.add",
        json!({"fields": {"TITLE": "task for test", "RESPONSIBLE_ID": 1}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let docs = json!({"result": {"task": {
        "id": "3711", "title": "task for test", "description": "", "createdBy": "1",
        "createdDate": "2024-11-02T10:06:08+02:00", "responsibleId": "1",
        "changedDate": "2024-11-02T10:06:08+02:00", "status": "2", "deadline": null
    }}});
    assert_same_shape(&docs, &v, "");
    h.stop().await;
}

/// `api-reference/crm/duplicates/crm-duplicate-find-by-comm.md`: the page's request
/// (`entity_type` CONTACT, `type` PHONE, `values`) answers `{"CONTACT":[int…]}` for a known
/// number; its error example for a missing `type` is HTTP 400.
#[tokio::test]
async fn sim_answers_crm_duplicate_findbycomm() {
    let h = sim().await;
    let phone = {
        let w = h.sim.world();
        w.contacts
            .values()
            .find_map(|c| c.phones.first().cloned())
            .expect("a contact with a phone")
    };
    let (st, v) = wh(
        &h,
        "crm.duplicate.findbycomm",
        json!({"entity_type": "CONTACT", "type": "PHONE", "values": [phone]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_same_shape(&json!({"result": {"CONTACT": [275, 2297]}}), &v, "");
    let (st, v) = wh(
        &h,
        "crm.duplicate.findbycomm",
        json!({"entity_type": "CONTACT", "values": ["8976543"]}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_same_shape(
        &json!({"error": "Communication type is not defined", "error_description": "Parameter 'type' is required."}),
        &v,
        "",
    );
    h.stop().await;
}

/// `_includes/system-errors.md`: a webhook code the portal does not know is `NO_AUTH_FOUND`
/// with HTTP 401 ("Invalid access token or webhook code"), and a method outside the webhook's
/// scopes `insufficient_scope` with HTTP 403.
#[tokio::test]
async fn sim_answers_system_errors_with_the_page_status() {
    let h = sim().await;
    let (st, v) = post(
        &format!("{}/b24/rest/1/wrong-secret/profile", h.base_url()),
        json!({}),
    )
    .await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(
        v,
        json!({"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"})
    );
    h.sim.b24.limit_scopes(&["crm"]);
    let (st, v) = wh(&h, "tasks.task.list", json!({})).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["error"], json!("insufficient_scope"));
    assert_eq!(
        v["error_description"],
        json!("The request requires higher privileges than provided by the webhook token")
    );
    h.stop().await;
}
