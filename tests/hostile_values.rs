//! Extreme values in every field that carries a number or a date, fed to every mapper and
//! webhook parser: nothing panics, and whatever maps lies in its sane range (a call lasts 0 s
//! to a day, dates fall in 2000–2099, money is finite). The values are the ones that broke
//! things or could: `1e16` seconds, `-1`, `NaN` and `inf` strings, year 9999, i64 and u64
//! extremes.

mod common;

use chrono::Datelike;
use common::tenant_config;
use dozor::crm::amocrm::fuzzing as amo;
use dozor::crm::bitrix24::fuzzing as b24;
use dozor::domain::{CrmKind, EntityKind, Record, TelephonyKind};
use dozor::service::server::webhooks::fuzzing as hooks;
use dozor::telephony::calltouch::fuzzing as calltouch;
use dozor::telephony::comagic::fuzzing as comagic;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Hostile values as JSON: numbers, numeric strings and junk.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("1e16")),
        Just(json!(1e16)),
        Just(json!(-1)),
        Just(json!("-1")),
        Just(json!("NaN")),
        Just(json!("nan")),
        Just(json!("inf")),
        Just(json!("-inf")),
        Just(json!("1e400")),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(1.7976931348623157e308)),
        Just(json!(253_402_300_799i64)), // 9999-12-31T23:59:59Z
        Just(json!("9999-12-31 23:59:59")),
        Just(json!("9999-12-31T23:59:59+03:00")),
        Just(json!("31/12/9999 23:59:59")),
        Just(json!("0000-01-01T00:00:00+00:00")),
        Just(json!("1969-12-31T23:59:59Z")),
        Just(json!("")),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|x| json!(x.to_string())),
        "[0-9eE+.-]{1,24}".prop_map(|s| json!(s)),
    ]
}

fn sane_year(t: &chrono::DateTime<chrono::Utc>) -> bool {
    (2000..2100).contains(&t.year())
}

fn comagic_row(field: &str, v: &Value) -> Value {
    let mut row = json!({
        "id": 77001,
        "start_time": "2026-11-24 12:00:00",
        "direction": "in",
        "is_lost": false,
        "talk_duration": 35,
        "wait_duration": 5,
        "contact_phone_number": "79991234567",
    });
    row[field] = v.clone();
    json!({"jsonrpc": "2.0", "id": 1, "result": {"data": [row]}})
}

fn calltouch_record(field: &str, v: &Value) -> Value {
    let mut r = json!({
        "callId": 5001,
        "timestamp": 1_764_000_000,
        "date": "24/11/2026 12:00:00",
        "successful": true,
        "duration": 35,
        "waitingConnect": 5,
        "callerNumber": "79991234567",
    });
    r[field] = v.clone();
    json!({"records": [r]})
}

fn b24_deal(field: &str, v: &Value) -> Value {
    let mut row = json!({
        "ID": "101",
        "TITLE": "Поставка",
        "STAGE_ID": "NEW",
        "OPPORTUNITY": "150000.00",
        "DATE_CREATE": "2026-11-20T10:00:00+03:00",
        "DATE_MODIFY": "2026-11-24T10:00:00+03:00",
        "CLOSEDATE": "2026-12-20T00:00:00+03:00",
    });
    row[field] = v.clone();
    row
}

fn b24_call(field: &str, v: &Value) -> Value {
    let mut row = json!({
        "ID": "501",
        "TYPE_ID": "2",
        "PROVIDER_ID": "VOXIMPLANT_CALL",
        "DIRECTION": "1",
        "SUBJECT": "Входящий звонок",
        "CREATED": "2026-11-24T10:00:00+03:00",
        "LAST_UPDATED": "2026-11-24T10:05:00+03:00",
        "START_TIME": "2026-11-24T10:00:00+03:00",
        "END_TIME": "2026-11-24T10:03:00+03:00",
    });
    row[field] = v.clone();
    row
}

fn amo_lead(field: &str, v: &Value) -> Value {
    let mut lead = json!({
        "id": 3001,
        "name": "Сделка",
        "price": 1000,
        "status_id": 142,
        "pipeline_id": 7,
        "created_at": 1_764_000_000,
        "updated_at": 1_764_000_100,
        "closed_at": 1_764_000_200,
    });
    lead[field] = v.clone();
    lead
}

fn amo_note(v: &Value) -> Value {
    json!({
        "id": 9001,
        "entity_id": 3001,
        "note_type": "call_in",
        "params": {"uniq": "abc", "duration": v, "phone": "79991234567"},
        "created_at": 1_764_000_000,
        "updated_at": 1_764_000_000,
    })
}

fn comagic_push(field: &str, v: &Value) -> Vec<u8> {
    let mut body = json!({
        "notification_mnemonic": "call_end",
        "call_session_id": 4242,
        "direction": "in",
        "start_time": "2026-11-24 12:00:00",
        "contact_phone_number": "79991234567",
        "talk_time_duration": 35,
        "total_time_duration": 40,
    });
    body[field] = v.clone();
    serde_json::to_vec(&body).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn comagic_rows_map_only_sane_calls(
        field in prop::sample::select(vec!["talk_duration", "wait_duration", "start_time", "id"]),
        v in hostile(),
    ) {
        let c = comagic::client();
        let answer = serde_json::to_vec(&comagic_row(field, &v)).unwrap();
        for call in comagic::calls_report(&c, &answer) {
            prop_assert_eq!(call.insane_field(), None, "{} = {}", field, v);
        }
    }

    #[test]
    fn calltouch_records_map_only_sane_calls(
        field in prop::sample::select(vec!["duration", "waitingConnect", "timestamp", "date"]),
        v in hostile(),
    ) {
        let c = calltouch::client();
        let answer = serde_json::to_vec(&calltouch_record(field, &v)).unwrap();
        for call in calltouch::calls_diary(&c, &answer) {
            prop_assert_eq!(call.insane_field(), None, "{} = {}", field, v);
        }
    }

    #[test]
    fn bitrix24_rows_carry_only_sane_dates_and_amounts(
        field in prop::sample::select(vec!["DATE_CREATE", "DATE_MODIFY", "CLOSEDATE", "OPPORTUNITY"]),
        call_field in prop::sample::select(vec!["START_TIME", "END_TIME", "CREATED", "LAST_UPDATED"]),
        v in hostile(),
    ) {
        if let Ok(Some(Record::Deal(d))) = b24::record(EntityKind::Deal, &b24_deal(field, &v)) {
            prop_assert!(sane_year(&d.created_at) && sane_year(&d.updated_at), "{} = {}", field, v);
            prop_assert!(d.closed_at.is_none_or(|t| sane_year(&t)));
            prop_assert!(d.amount.is_finite() && d.amount.abs() < 1e15, "{} = {}", field, v);
        }
        if let Ok(Some(Record::Activity(a))) = b24::record(EntityKind::Activity, &b24_call(call_field, &v)) {
            prop_assert!(sane_year(&a.started_at), "{} = {}", call_field, v);
            prop_assert!(a.duration_s.is_none_or(|d| (0..=86_400).contains(&d)), "{} = {}", call_field, v);
        }
        let answer = serde_json::to_vec(&json!({"result": [b24_deal(field, &v), b24_call(call_field, &v)]})).unwrap();
        let _ = b24::parse_answer(&answer);
    }

    #[test]
    fn amocrm_items_carry_only_sane_dates_amounts_and_durations(
        field in prop::sample::select(vec!["created_at", "updated_at", "closed_at", "price"]),
        v in hostile(),
    ) {
        if let Ok(d) = amo::deal(&amo_lead(field, &v)) {
            prop_assert!(sane_year(&d.created_at) && sane_year(&d.updated_at), "{} = {}", field, v);
            prop_assert!(d.closed_at.is_none_or(|t| sane_year(&t)));
            prop_assert!(d.amount.is_finite() && d.amount.abs() < 1e15, "{} = {}", field, v);
        }
        if let Ok(Some(a)) = amo::call_note(&amo_note(&v)) {
            prop_assert!(a.duration_s.is_none_or(|d| (0..=86_400).contains(&d)), "duration = {}", v);
        }
        let answer = serde_json::to_vec(&json!({"_embedded": {"leads": [amo_lead(field, &v)], "notes": [amo_note(&v)]}})).unwrap();
        let _ = amo::parse_answer(&answer);
    }

    #[test]
    fn comagic_pushes_with_hostile_values_are_refused_or_sane(
        field in prop::sample::select(vec!["talk_time_duration", "total_time_duration", "start_time", "call_session_id"]),
        v in hostile(),
    ) {
        let c = hooks::comagic_client();
        let body = comagic_push(field, &v);
        match hooks::comagic(&c, &body, None) {
            Ok(d) => prop_assert!(d.contains("end")),
            Err(msg) => prop_assert!(!msg.is_empty()),
        }
        // The same values as a query string (GET notifications).
        let query = format!("notification_mnemonic=call_end&call_session_id=4242&direction=in&start_time=2026-11-24%2012:00:00&contact_phone_number=79991234567&{field}={}",
            url::form_urlencoded::byte_serialize(v.to_string().trim_matches('"').as_bytes()).collect::<String>());
        let _ = hooks::comagic(&c, b"", Some(&query));
    }
}

/// The pushed value that once crash-looped the daemon is refused with a message naming it.
#[test]
fn the_crash_loop_push_is_refused_naming_its_field() {
    let c = hooks::comagic_client();
    let body = comagic_push("talk_time_duration", &json!("1e16"));
    let err = hooks::comagic(&c, &body, None).unwrap_err();
    assert!(err.contains("talk_time_duration"), "{err}");
    // ... and the same value polled from the API is refused, not stored.
    let answer = serde_json::to_vec(&comagic_row("talk_duration", &json!(1e16))).unwrap();
    assert!(comagic::calls_report(&comagic::client(), &answer).is_empty());
}

/// Webhook parsers fed hostile values in every Bitrix24, amoCRM and Telegram field that holds
/// a number: no panic, every refusal says why.
#[test]
fn other_receivers_refuse_hostile_numbers_with_a_reason() {
    for v in ["1e16", "-1", "NaN", "99999999999999999999999", "9999-12-31"] {
        let b24 =
            format!("event=ONCRMDEALUPDATE&data[FIELDS][ID]={v}&ts={v}&auth[application_token]=x");
        if let Err(msg) = hooks::bitrix24(b24.as_bytes()) {
            assert!(!msg.is_empty());
        }
        let amo = format!(
            "leads[update][0][id]={v}&leads[update][0][updated_at]={v}&account[subdomain]=acme"
        );
        if let Err(msg) = hooks::amocrm(amo.as_bytes()) {
            assert!(!msg.is_empty());
        }
        let tg = format!(
            "{{\"update_id\": {v}, \"message\": {{\"message_id\": {v}, \"date\": {v}, \"chat\": {{\"id\": {v}, \"type\": \"private\"}}, \"text\": \"/help\"}}}}"
        );
        if let Err(msg) = hooks::telegram(tg.as_bytes()) {
            assert!(!msg.is_empty());
        }
    }
}

/// A record whose date is in year 9999 is refused alone: the sync goes on, every other record
/// is mirrored, on both CRMs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_crm_record_is_refused_alone_and_the_sync_goes_on() {
    use chrono::TimeZone;
    for kind in [CrmKind::Bitrix24, CrmKind::Amocrm] {
        let h = common::small_sim(3).await;
        let y9999 = chrono::Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap();
        let (poisoned, total) = {
            let mut w = h.sim.world();
            let id = *w.deals.keys().nth(3).unwrap();
            let d = w.deals.get_mut(&id).unwrap();
            d.created_at = y9999;
            d.updated_at = y9999;
            (id, w.deals.len())
        };
        let dir = tempfile::tempdir().unwrap();
        let db = common::sqlite_url(dir.path());
        let text = tenant_config(&h, kind, TelephonyKind::Comagic, &db, "ru");
        let cfg = dozor::config::parse(&text, None, None).unwrap().config;
        let store = dozor::store::Store::open(&db, 2).await.unwrap();
        let tenant = dozor::tenant::connect(&cfg.tenants[0], &store)
            .await
            .unwrap();
        let report = dozor::sync::sync_crm(
            &store,
            "demo",
            tenant.crm.as_ref(),
            dozor::sync::SyncOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: the sync stopped: {e}"));
        assert!(report.total() > 0);
        let deals = store.deals("demo").await.unwrap();
        assert!(
            deals.iter().all(|d| d.id != poisoned.to_string()),
            "{kind:?}: the poisoned deal was mirrored"
        );
        assert_eq!(
            deals.len(),
            total - 1,
            "{kind:?}: every other deal is mirrored"
        );
        h.stop().await;
    }
}
