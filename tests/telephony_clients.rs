//! The CoMagic and Calltouch clients against the simulator.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use dozor::config::{CalltouchConfig, ComagicConfig, Secret};
use dozor::domain::{Direction, TelephonyKind};
use dozor::http::ErrorKind;
use dozor::telephony::Telephony;
use dozor::telephony::calltouch::Calltouch;
use dozor::telephony::comagic::Comagic;
use dozor_sim::world::{Dir, SimCall, SimEmployee, SimUtm, World};
use dozor_sim::{self as sim, Faults, Sim, SimHandle, SimOptions, System};
use serde_json::json;

const MOSCOW: chrono_tz::Tz = chrono_tz::Europe::Moscow;

fn anchor() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 15, 9, 0, 0).unwrap()
}

fn opts(enforce: bool) -> SimOptions {
    SimOptions {
        enforce_limits: enforce,
        ..common::anchored(11, anchor())
    }
}

async fn start(enforce: bool) -> SimHandle {
    common::start_sim(opts(enforce)).await
}

fn comagic(h: &SimHandle, token: &str) -> Comagic {
    Comagic::new(&common::comagic_config(h.comagic_url(), token), MOSCOW)
}

fn calltouch(h: &SimHandle, site_id: u64, token: &str) -> Calltouch {
    Calltouch::new(
        &CalltouchConfig {
            base_url: h.calltouch_url(),
            site_id,
            client_api_id: Some(Secret::new(token)),
            client_api_id_file: None,
            employees: Default::default(),
        },
        MOSCOW,
    )
}

fn good_comagic(h: &SimHandle) -> Comagic {
    comagic(h, &h.sim.creds.comagic_access_token)
}

fn good_calltouch(h: &SimHandle) -> Calltouch {
    calltouch(
        h,
        h.sim.creds.calltouch_site_id,
        &h.sim.creds.calltouch_client_api_id,
    )
}

fn world_calls(
    h: &SimHandle,
    from: DateTime<Utc>,
    till: DateTime<Utc>,
    inbound_only: bool,
) -> BTreeMap<String, SimCall> {
    let w = h.sim.world();
    w.calls
        .values()
        .filter(|c| c.start >= from && c.start < till)
        .filter(|c| !inbound_only || c.direction == Dir::In)
        .map(|c| (c.id.to_string(), c.clone()))
        .collect()
}

#[tokio::test]
async fn comagic_calls_for_30_days_equal_the_world() {
    let h = start(false).await;
    let client = good_comagic(&h);
    assert_eq!(client.kind(), TelephonyKind::Comagic);
    let from = anchor() - Duration::days(30);
    let till = anchor();
    let calls = client.calls(from, till).await.unwrap();
    let expected = world_calls(&h, from, till, false);
    assert!(expected.len() > 200);
    assert_eq!(calls.len(), expected.len());
    assert!(calls.windows(2).all(|w| w[0].started_at <= w[1].started_at));
    let emp_names: BTreeMap<u64, String> = h
        .sim
        .world()
        .employees
        .iter()
        .map(|e| (e.id, e.full_name.clone()))
        .collect();
    for c in &calls {
        let w = &expected[&c.id];
        assert_eq!(c.provider, TelephonyKind::Comagic);
        assert_eq!(c.started_at, w.start, "call {}", c.id);
        assert_eq!(c.answered, !w.is_lost, "call {}", c.id);
        assert_eq!(c.client_phone, w.client_phone);
        assert_eq!(
            c.direction,
            if w.direction == Dir::In {
                Direction::In
            } else {
                Direction::Out
            }
        );
        assert_eq!(c.talk_s, if w.is_lost { 0 } else { w.talk_s });
        assert_eq!(c.wait_s, w.wait_s);
        assert_eq!(c.virtual_number.as_deref(), Some(w.virtual_number.as_str()));
        assert_eq!(c.employee_id, w.employee_id.map(|e| e.to_string()));
        assert_eq!(
            c.employee_name,
            w.employee_id.map(|e| emp_names[&e].clone())
        );
        assert_eq!(c.recording_url.is_some(), w.has_record);
        assert_eq!(c.utm.source, w.utm.source);
        assert_eq!(c.source.as_deref(), Some(w.source.as_str()));
    }
    // Employees and ping.
    let emps = client.employees().await.unwrap();
    assert_eq!(emps.len(), emp_names.len());
    let world_emps = h.sim.world().employees.clone();
    for (e, w) in emps.iter().zip(world_emps.iter()) {
        assert_eq!(e.id, w.id.to_string());
        assert_eq!(e.name, w.full_name);
        assert_eq!(e.extension.as_deref(), Some(w.extension.as_str()));
    }
    assert!(client.ping().await.unwrap().contains("CoMagic"));
}

#[tokio::test]
async fn comagic_long_periods_are_split_into_3_month_windows() {
    let h = start(false).await;
    let client = good_comagic(&h);
    let from = anchor() - Duration::days(200);
    let till = anchor() + Duration::days(1);
    let calls = client.calls(from, till).await.unwrap();
    assert_eq!(calls.len(), h.sim.world().calls.len());
    let n = h.sim.stats()[&System::Comagic].by_method["get.calls_report"];
    assert_eq!(n, 3, "201 days = 3 windows of at most 89 days");
}

#[tokio::test]
async fn calltouch_calls_for_30_days_equal_the_world() {
    let h = start(false).await;
    let client = good_calltouch(&h);
    assert_eq!(client.kind(), TelephonyKind::Calltouch);
    let from = anchor() - Duration::days(30);
    let till = anchor();
    let calls = client.calls(from, till).await.unwrap();
    let expected = world_calls(&h, from, till, true);
    assert!(expected.len() > 100);
    assert_eq!(calls.len(), expected.len());
    for c in &calls {
        let w = &expected[&c.id];
        assert_eq!(c.provider, TelephonyKind::Calltouch);
        assert_eq!(c.started_at, w.start);
        assert_eq!(c.answered, !w.is_lost);
        assert_eq!(c.client_phone, w.client_phone);
        assert_eq!(c.direction, Direction::In);
        assert_eq!(c.recording_url, None, "callUrl is not a recording");
        assert_eq!(c.virtual_number.as_deref(), Some(w.virtual_number.as_str()));
        assert_eq!(c.utm.source, w.utm.source);
    }
    // One request per account-local day (31 Moscow dates touched by 30 days).
    let n = h.sim.stats()[&System::Calltouch].by_method["calls-diary/calls"];
    assert_eq!(n, 31);
    let names = client.employees().await.unwrap();
    let expected_names: std::collections::BTreeSet<String> = {
        let w = h.sim.world();
        let emps: BTreeMap<u64, String> = w
            .employees
            .iter()
            .map(|e| (e.id, e.full_name.clone()))
            .collect();
        expected
            .values()
            .filter_map(|c| c.employee_id)
            .map(|e| emps[&e].clone())
            .collect()
    };
    let got: std::collections::BTreeSet<String> = names.into_iter().map(|e| e.name).collect();
    assert_eq!(got, expected_names);
    assert!(client.ping().await.unwrap().contains("Calltouch"));
}

/// A world with one employee and one call at a known instant.
fn tiny_world(start: DateTime<Utc>) -> World {
    let mut w = World::default();
    w.employees.push(SimEmployee {
        id: 501,
        full_name: "Анна Петрова".into(),
        extension: "101".into(),
        user_id: 1,
    });
    w.calls.insert(
        9001,
        SimCall {
            id: 9001,
            start,
            direction: Dir::In,
            is_lost: false,
            talk_s: 125,
            wait_s: 7,
            client_phone: "79991234567".into(),
            virtual_number: "74951234567".into(),
            employee_id: Some(501),
            source: "call_tracking".into(),
            utm: SimUtm {
                source: Some("yandex".into()),
                medium: Some("cpc".into()),
                campaign: Some("spring".into()),
            },
            has_record: true,
        },
    );
    w.reserve_id(10_000);
    w
}

#[tokio::test]
async fn moscow_wall_clock_converts_exactly() {
    // 21:30 UTC is 00:30 the next day in Moscow: the date boundary differs between the zones.
    let at = Utc.with_ymd_and_hms(2026, 3, 10, 21, 30, 0).unwrap();
    let h = sim::start_with(
        Sim::with_world(opts(false), tiny_world(at)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let from = at - Duration::minutes(30);
    let till = at + Duration::minutes(30);

    let c = good_comagic(&h).calls(from, till).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].id, "9001");
    assert_eq!(c[0].started_at, at);
    assert_eq!(c[0].talk_s, 125);
    assert_eq!(c[0].employee_name.as_deref(), Some("Анна Петрова"));
    assert!(
        c[0].recording_url
            .as_deref()
            .unwrap()
            .starts_with("https://")
    );
    // The window is half-open: a window ending at the call's instant misses it.
    assert!(good_comagic(&h).calls(from, at).await.unwrap().is_empty());
    assert_eq!(good_comagic(&h).calls(at, till).await.unwrap().len(), 1);

    let ct = good_calltouch(&h);
    let c = ct.calls(from, till).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].started_at, at);
    assert_eq!(c[0].employee_name.as_deref(), Some("Анна Петрова"));
    // Without `timestamp` the Moscow `date` string is used; booleans may be strings.
    h.sim.calltouch.set_extra_call_records(vec![json!({
        "callId": "9100",
        "date": "11/03/2026 00:45:00",
        "successful": "true",
        "duration": "30",
        "callerNumber": "79990000001",
        "manager": "",
        "callUrl": "https://example-shop.ru/x"
    })]);
    let c = ct.calls(from, till).await.unwrap();
    assert_eq!(c.len(), 2);
    let extra = c.iter().find(|c| c.id == "9100").unwrap();
    assert_eq!(
        extra.started_at,
        Utc.with_ymd_and_hms(2026, 3, 10, 21, 45, 0).unwrap()
    );
    assert!(extra.answered);
    assert_eq!(extra.talk_s, 30);
    assert_eq!(extra.employee_name, None);
    assert_eq!(extra.recording_url, None);
}

#[tokio::test]
async fn malformed_and_duplicated_rows_are_skipped_without_losing_the_rest() {
    let h = start(false).await;
    let from = anchor() - Duration::days(30);
    let till = anchor();
    let expected = world_calls(&h, from, till, false);
    let (dup_row, dup_rec) = {
        let w = h.sim.world();
        let c = w
            .calls
            .values()
            .find(|c| c.start >= from && c.direction == Dir::In)
            .unwrap();
        (
            h.sim.comagic.call_row(&w, c),
            sim::calltouch::call_record(&w, c, h.sim.creds.calltouch_site_id),
        )
    };
    h.sim.comagic.set_extra_call_rows(vec![
        dup_row.clone(),
        json!({"id": 777_000_001u64, "start_time": "not a time", "direction": "in", "is_lost": false}),
        json!({"start_time": "2026-06-10 10:00:00", "direction": "in", "is_lost": false}),
        json!({"id": 777_000_002u64, "start_time": "2026-06-10 10:00:00", "direction": "sideways", "is_lost": false}),
    ]);
    let calls = good_comagic(&h).calls(from, till).await.unwrap();
    assert_eq!(calls.len(), expected.len());
    let ids: std::collections::BTreeSet<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), calls.len());
    assert!(ids.iter().all(|id| expected.contains_key(*id)));

    let mut broken = dup_rec.clone();
    broken["callId"] = json!(888_000_001u64);
    broken["timestamp"] = json!("yesterday");
    broken["date"] = json!("31/31/2026 99:00:00");
    let mut no_status = dup_rec.clone();
    no_status["callId"] = json!(888_000_002u64);
    no_status.as_object_mut().unwrap().remove("successful");
    h.sim
        .calltouch
        .set_extra_call_records(vec![dup_rec.clone(), broken, no_status]);
    let expected_in = world_calls(&h, from, till, true);
    let calls = good_calltouch(&h).calls(from, till).await.unwrap();
    assert_eq!(calls.len(), expected_in.len());
    assert!(calls.iter().all(|c| expected_in.contains_key(&c.id)));
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let h = start(false).await;
    let from = anchor() - Duration::days(10);
    let till = anchor();
    h.sim.set_faults(
        System::Comagic,
        Faults {
            http_5xx: 1,
            throttle: 2,
            ..Default::default()
        },
    );
    let calls = good_comagic(&h).calls(from, till).await.unwrap();
    assert_eq!(calls.len(), world_calls(&h, from, till, false).len());
    assert_eq!(h.sim.stats()[&System::Comagic].throttled, 2);
    h.sim.set_faults(
        System::Comagic,
        Faults {
            malformed_json: 1,
            ..Default::default()
        },
    );
    let calls = good_comagic(&h).calls(from, till).await.unwrap();
    assert_eq!(calls.len(), world_calls(&h, from, till, false).len());

    h.sim.set_faults(
        System::Calltouch,
        Faults {
            http_5xx: 1,
            throttle: 1,
            malformed_json: 1,
            ..Default::default()
        },
    );
    let from = anchor() - Duration::days(3);
    let calls = good_calltouch(&h).calls(from, till).await.unwrap();
    assert_eq!(calls.len(), world_calls(&h, from, till, true).len());
    assert_eq!(h.sim.stats()[&System::Calltouch].throttled, 1);
}

#[tokio::test]
async fn calltouch_paces_itself_under_the_real_limit() {
    let h = start(true).await;
    let from = anchor() - Duration::days(6);
    let till = anchor();
    let calls = good_calltouch(&h).calls(from, till).await.unwrap();
    assert_eq!(calls.len(), world_calls(&h, from, till, true).len());
    let s = &h.sim.stats()[&System::Calltouch];
    assert_eq!(s.by_method["calls-diary/calls"] - s.throttled, 7);
}

#[tokio::test]
async fn bad_credentials_give_auth_errors_without_the_secret() {
    let h = start(false).await;
    let secret = "very-secret-comagic-key-123";
    let e = comagic(&h, secret)
        .calls(anchor() - Duration::days(1), anchor())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.code.as_deref(), Some("access_token_invalid"));
    assert!(!e.to_string().contains(secret), "{e}");
    assert!(!format!("{e:?}").contains(secret));
    let e = comagic(&h, secret).ping().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);

    let secret = "very-secret-calltouch-id-456";
    let e = calltouch(&h, h.sim.creds.calltouch_site_id, secret)
        .calls(anchor() - Duration::days(1), anchor())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.status, Some(401));
    assert!(!e.to_string().contains(secret), "{e}");
    assert!(!format!("{e:?}").contains(secret));
    let e = calltouch(&h, 1, &h.sim.creds.calltouch_client_api_id)
        .ping()
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.status, Some(403));
    assert!(!e.to_string().contains(&h.sim.creds.calltouch_client_api_id));
}

#[tokio::test]
async fn comagic_restarts_the_window_when_the_offset_cap_is_reached() {
    let h = start(false).await;
    let from = anchor() - Duration::days(30);
    let till = anchor();
    // 20-row pages with the offset capped at 60: about 300 calls need several restarts.
    let client = good_comagic(&h).with_paging(20, 60);
    let calls = client.calls(from, till).await.unwrap();
    let expected = world_calls(&h, from, till, false);
    assert!(expected.len() > 200);
    assert_eq!(calls.len(), expected.len());
    assert!(calls.iter().all(|c| expected.contains_key(&c.id)));
    let n = h.sim.stats()[&System::Comagic].by_method["get.calls_report"];
    assert!(n as usize >= expected.len() / 20, "{n} requests");
}

/// Captures log lines of the current thread (the tests below run on one thread).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || me.clone())
            .finish();
        tracing::subscriber::set_default(sub)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Syncs `tel` into a fresh SQLite mirror and returns the stored calls.
async fn synced(tel: &dyn Telephony, now: DateTime<Utc>) -> Vec<dozor::domain::Call> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dozor.db").display());
    let store = dozor::store::Store::open(&url, 2).await.unwrap();
    let report =
        dozor::sync::sync_telephony(&store, "t", tel, dozor::sync::SyncOptions::default(), now)
            .await
            .unwrap();
    assert!(report.total() > 0);
    store.calls("t").await.unwrap()
}

/// One batch per provider holding a record with missing fields, records with odd phone values
/// and a duplicated id: each bad one is logged with its call id and skipped or repaired, and
/// the rest of the batch reaches the mirror.
#[tokio::test(flavor = "current_thread")]
async fn bad_records_are_logged_and_the_rest_of_the_batch_is_stored() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let h = start(false).await;
    let till = anchor();
    let from = till - Duration::days(30);
    let (row, rec) = {
        let w = h.sim.world();
        let c = w
            .calls
            .values()
            .find(|c| c.start >= from + Duration::days(1) && c.direction == Dir::In)
            .unwrap();
        (
            h.sim.comagic.call_row(&w, c),
            sim::calltouch::call_record(&w, c, h.sim.creds.calltouch_site_id),
        )
    };

    // CoMagic.
    let mut no_time = row.clone();
    no_time["id"] = json!(777_100_001u64);
    no_time.as_object_mut().unwrap().remove("start_time");
    let mut odd_text = row.clone();
    odd_text["id"] = json!(777_100_002u64);
    odd_text["contact_phone_number"] = json!("скрыт / 8 (9");
    let mut odd_shape = row.clone();
    odd_shape["id"] = json!(777_100_003u64);
    odd_shape["contact_phone_number"] = json!({"number": "79990001122"});
    let mut duplicate = row.clone();
    duplicate["talk_duration"] = json!(1);
    h.sim
        .comagic
        .set_extra_call_rows(vec![no_time, odd_text, odd_shape, duplicate]);
    let expected = world_calls(&h, from, till, false);
    let calls = synced(&good_comagic(&h), till).await;
    let ids: std::collections::BTreeSet<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), calls.len(), "one row per call id");
    assert_eq!(
        calls.len(),
        expected.len() + 2,
        "the rest of the batch is stored"
    );
    assert!(expected.keys().all(|id| ids.contains(id.as_str())));
    assert!(
        !ids.contains("777100001"),
        "a call without a start time is skipped"
    );
    let odd = calls.iter().find(|c| c.id == "777100002").unwrap();
    assert_eq!(odd.client_phone, "скрыт / 8 (9", "kept as sent");
    assert!(dozor::domain::phone::normalize(&odd.client_phone).is_err());
    let shaped = calls.iter().find(|c| c.id == "777100003").unwrap();
    assert_eq!(shaped.client_phone, "", "repaired: kept without a number");
    let log = logs.text();
    assert!(
        log.contains("777100001") && log.contains("start_time"),
        "{log}"
    );
    assert!(
        log.contains("777100003") && log.contains("contact_phone_number"),
        "{log}"
    );

    // Calltouch.
    let mut no_status = rec.clone();
    no_status["callId"] = json!(888_100_001u64);
    no_status.as_object_mut().unwrap().remove("successful");
    let mut odd_text = rec.clone();
    odd_text["callId"] = json!(888_100_002u64);
    odd_text["callerNumber"] = json!("  +7 (999) 12-34-567 доб 9 ");
    let mut odd_shape = rec.clone();
    odd_shape["callId"] = json!(888_100_003u64);
    odd_shape["callerNumber"] = json!(["79990001122"]);
    let mut duplicate = rec.clone();
    duplicate["duration"] = json!(1);
    h.sim
        .calltouch
        .set_extra_call_records(vec![no_status, odd_text, odd_shape, duplicate]);
    let expected = world_calls(&h, from, till, true);
    let calls = synced(&good_calltouch(&h), till).await;
    let ids: std::collections::BTreeSet<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), calls.len(), "one row per call id");
    assert_eq!(
        calls.len(),
        expected.len() + 2,
        "the rest of the batch is stored"
    );
    assert!(
        !ids.contains("888100001"),
        "a call without a status is skipped"
    );
    let odd = calls.iter().find(|c| c.id == "888100002").unwrap();
    assert_eq!(
        dozor::domain::phone::normalize(&odd.client_phone).as_deref(),
        Ok("+79991234567"),
        "an odd but real number still normalises"
    );
    let shaped = calls.iter().find(|c| c.id == "888100003").unwrap();
    assert_eq!(shaped.client_phone, "");
    let dup_id = rec["callId"].to_string().trim_matches('"').to_string();
    assert!(
        calls.iter().any(|c| c.id == dup_id),
        "a duplicated id is stored once"
    );
    let log = logs.text();
    for needle in ["888100001", "successful", "888100003", "callerNumber"] {
        assert!(log.contains(needle), "{needle} not logged: {log}");
    }
    assert!(
        log.contains(&dup_id) && log.contains("duplicated callId"),
        "{log}"
    );
    h.stop().await;
}

/// Telephony employees are tied to CRM users by config, then full name, then extension; the
/// map `dozor check` prints says which, and config entries naming nobody are warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn employees_map_to_crm_users_by_config_name_and_extension() {
    use dozor::matching::{MatchedBy, StaffMap, name_key};
    let h = start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("dozor.db").display());
    let text = dozor_sim::tenant_config::tenant_config(
        &h,
        dozor_sim::tenant_config::CrmKind::Bitrix24,
        dozor_sim::tenant_config::TelephonyKind::Comagic,
        &db,
        "ru",
    );
    let cfg = dozor::config::parse(&text, None, None).unwrap().config;
    let store = dozor::store::Store::open(&db, 2).await.unwrap();
    let tenant = dozor::tenant::connect(&cfg.tenants[0], &store)
        .await
        .unwrap();
    let truth: BTreeMap<String, String> = h
        .sim
        .world()
        .employees
        .iter()
        .map(|e| (e.id.to_string(), e.user_id.to_string()))
        .collect();
    assert!(truth.len() >= 3);
    // One employee is written surname first, one under a name nobody in the CRM has (only the
    // extension ties them), one is overridden in config.
    let ids: Vec<String> = truth.keys().cloned().collect();
    {
        let mut w = h.sim.world();
        let e = &mut w.employees[0];
        let mut words: Vec<&str> = e.full_name.split(' ').collect();
        words.reverse();
        e.full_name = words.join("  ").to_uppercase();
        w.employees[1].full_name = "Оператор линии 2".into();
    }
    let users = tenant.crm.users().await.unwrap();
    let employees = good_comagic(&h).employees().await.unwrap();
    assert_eq!(employees.len(), truth.len());
    let other_user = users
        .iter()
        .find(|u| Some(&u.id) != truth.get(&ids[2]))
        .unwrap()
        .id
        .clone();
    let configured: BTreeMap<String, String> = [
        (ids[2].clone(), other_user.clone()),
        ("999999".to_string(), "424242".to_string()),
    ]
    .into();
    let map = StaffMap::build(&employees, &users, &configured);
    for link in &map.links {
        let id = &link.employee.id;
        let want = if *id == ids[2] {
            other_user.clone()
        } else {
            truth[id].clone()
        };
        assert_eq!(link.user_id.as_deref(), Some(want.as_str()), "{link:?}");
        let by = if *id == ids[2] {
            MatchedBy::Config
        } else if *id == ids[1] {
            MatchedBy::Extension
        } else {
            MatchedBy::Name
        };
        assert_eq!(link.by, by, "{link:?}");
    }
    assert_eq!(map.warnings.len(), 2, "{:?}", map.warnings);
    assert!(map.warnings.iter().any(|w| w.contains("\"999999\"")));
    assert!(map.warnings.iter().any(|w| w.contains("\"424242\"")));
    let lines = map.lines(&users).join("\n");
    assert!(
        lines.contains("[config]") && lines.contains("[name]") && lines.contains("[extension]"),
        "{lines}"
    );
    assert!(lines.contains("warning: telephony.employees"), "{lines}");
    assert_eq!(name_key("Пётр  ИВАНОВ-"), name_key("Иванов Петр"));

    // Without a user of the same name or extension an employee stays unmatched.
    let map = StaffMap::build(&employees, &[], &BTreeMap::new());
    assert!(
        map.links
            .iter()
            .all(|l| l.by == MatchedBy::Unmatched && l.user_id.is_none())
    );
    h.stop().await;
}

/// `dozor check` prints each telephony employee with its CRM user and how they were matched,
/// and warns about configured ids nobody knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_employee_map() {
    let h = start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("dozor.db").display());
    let (first_employee, first_user) = {
        let w = h.sim.world();
        (w.employees[0].id, w.employees[0].user_id)
    };
    let text = dozor_sim::tenant_config::tenant_config(
        &h,
        dozor_sim::tenant_config::CrmKind::Bitrix24,
        dozor_sim::tenant_config::TelephonyKind::Comagic,
        &db,
        "en",
    )
    .replacen(
        "kind = \"comagic\"\n",
        &format!("kind = \"comagic\"\nemployees = {{ \"{first_employee}\" = \"{first_user}\", \"31337\" = \"1\" }}\n"),
        1,
    );
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, text).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(["--config", path.to_str().unwrap(), "check"])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{o}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(o.contains("telephony employees of demo"), "{o}");
    let line = o
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{first_employee} ")))
        .unwrap_or_else(|| panic!("{o}"));
    assert!(
        line.contains(&format!("user {first_user}")) && line.ends_with("[config]"),
        "{line}"
    );
    assert!(
        o.lines().filter(|l| l.ends_with("[name]")).count() >= 2,
        "{o}"
    );
    assert!(
        o.contains("warning: telephony.employees: employee \"31337\""),
        "{o}"
    );
    h.stop().await;
}

const YEKATERINBURG: chrono_tz::Tz = chrono_tz::Asia::Yekaterinburg;

/// A CoMagic client whose config names `zone` (`telephony.timezone`), for a Moscow tenant.
fn comagic_in(h: &SimHandle, zone: chrono_tz::Tz) -> Comagic {
    Comagic::new(
        &ComagicConfig {
            timezone: Some(zone),
            ..common::comagic_config(h.comagic_url(), &h.sim.creds.comagic_access_token)
        },
        MOSCOW,
    )
}

/// `tiny_world` served by a simulator whose CoMagic account lives in `tz`.
async fn tiny_sim_in(at: DateTime<Utc>, tz: chrono_tz::Tz) -> SimHandle {
    let h = sim::start_with(
        Sim::with_world(opts(false), tiny_world(at)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    h.sim.comagic.set_timezone(tz);
    h
}

fn account_reads(h: &SimHandle) -> u64 {
    h.sim.stats()[&System::Comagic]
        .by_method
        .get("get.account")
        .copied()
        .unwrap_or(0)
}

/// The account is in Yekaterinburg (UTC+5), the tenant in Moscow (UTC+3). The Data API writes
/// `start_time` and reads `date_from`/`date_till` as the account's wall clock with no offset
/// (https://github.com/comagic/comagic.github.io data_api/index.html, "Соглашения": every
/// date-time is `YYYY-MM-DD hh:mm:ss`), and `get.account` names the account's zone
/// (data_api/account/get_account/index.html: `timezone`, "Формат IANA zoneinfo"). dozor reads
/// that zone once and both stores the call at its true instant and asks for the newest minutes.
#[tokio::test]
async fn comagic_reads_and_asks_in_the_account_zone_not_the_tenants() {
    // 21:30 UTC: 02:30 on the 11th in Yekaterinburg, 00:30 in Moscow.
    let at = Utc.with_ymd_and_hms(2026, 3, 10, 21, 30, 0).unwrap();
    let h = tiny_sim_in(at, YEKATERINBURG).await;
    {
        let w = h.sim.world();
        let row = h.sim.comagic.call_row(&w, &w.calls[&9001]);
        assert_eq!(row["start_time"], "2026-03-11 02:30:00");
    }
    let client = good_comagic(&h);
    // A window of ten minutes either side: a client asking in Moscow wall time would ask for
    // 00:20..00:40, two hours before the call as the account writes it, and miss it.
    let calls = client
        .calls(at - Duration::minutes(10), at + Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].started_at,
        Utc.with_ymd_and_hms(2026, 3, 10, 21, 30, 0).unwrap()
    );
    assert_eq!(
        client.zone().await.unwrap(),
        (
            YEKATERINBURG,
            dozor::telephony::comagic::ZoneSource::Account
        )
    );
    // The confirmation of a pushed call (the notification receiver's path) asks and reads in
    // the same zone, and so does the receiver's own mapping once the zone is known.
    let confirmed = client
        .call_by_id("9001", at + Duration::minutes(5))
        .await
        .unwrap()
        .expect("the notified call is found");
    assert_eq!(confirmed.started_at, at);
    let row = {
        let w = h.sim.world();
        h.sim.comagic.call_row(&w, &w.calls[&9001])
    };
    assert_eq!(client.map_call(&row).unwrap().started_at, at);
    // The zone is read once, not per request.
    client
        .calls(at - Duration::hours(1), at + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(account_reads(&h), 1);
    // The check line names the zone, where it comes from and the time now in it.
    let ping = client.ping().await.unwrap();
    assert!(
        ping.contains("call times in Asia/Yekaterinburg (the CoMagic account's zone), now "),
        "{ping}"
    );
    h.stop().await;
}

/// `telephony.timezone` in the config wins over the account's own zone: no `get.account` is
/// needed to read calls, and the times are read in the configured zone.
#[tokio::test]
async fn comagic_configured_zone_wins_over_the_account() {
    let at = Utc.with_ymd_and_hms(2026, 3, 10, 21, 30, 0).unwrap();
    // The account says Moscow and writes 00:30; the config says Yekaterinburg, so dozor takes
    // 00:30 as Yekaterinburg time: 19:30 UTC.
    let h = tiny_sim_in(at, MOSCOW).await;
    let client = comagic_in(&h, YEKATERINBURG);
    let calls = client
        .calls(at - Duration::hours(3), at + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].started_at,
        Utc.with_ymd_and_hms(2026, 3, 10, 19, 30, 0).unwrap()
    );
    assert_eq!(
        account_reads(&h),
        0,
        "the configured zone needs no get.account"
    );
    let ping = client.ping().await.unwrap();
    assert!(
        ping.contains("call times in Asia/Yekaterinburg (telephony.timezone in the config)")
            && ping.contains("the account itself says Europe/Moscow"),
        "{ping}"
    );
    // And the other way round: an account in Yekaterinburg read as Moscow (what the tenant's
    // zone used to do) asks two hours too early and misses the newest call.
    let h = tiny_sim_in(at, YEKATERINBURG).await;
    let client = comagic_in(&h, MOSCOW);
    assert!(
        client
            .calls(at - Duration::minutes(10), at + Duration::minutes(10))
            .await
            .unwrap()
            .is_empty()
    );
    h.stop().await;
}

/// A stand-in for the Data API that answers every request with `answer(method)`: for answers
/// transcribed from the docs verbatim, which the simulator does not produce.
async fn docs_server(answer: fn(&str) -> serde_json::Value) -> String {
    use axum::{Json, Router, routing::post};
    let app = Router::new().route(
        "/v2.0",
        post(move |Json(req): Json<serde_json::Value>| async move {
            let mut v = answer(req["method"].as_str().unwrap_or_default());
            v["id"] = req["id"].clone();
            Json(v)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v2.0")
}

fn docs_client(url: String) -> Comagic {
    Comagic::new(&common::comagic_config(url, "docs-token"), MOSCOW)
}

/// The `get.account` answer of https://github.com/comagic/comagic.github.io
/// data_api/account/get_account/index.html ("JSON структура ответа"), its placeholders filled
/// in: `result.meta_data` (sic, not `metadata`) and `data[0]{app_id, name, timezone}`.
fn docs_get_account(timezone: &str) -> serde_json::Value {
    json!({
      "jsonrpc": "2.0",
      "id": "number",
      "result": {
        "meta_data": {},
        "data": [
          {
            "app_id": 104857,
            "name": "ООО Ромашка",
            "timezone": timezone
          }
        ]
      }
    })
}

/// The `get.calls_report` answer shape of data_api/report/get_calls_report/index.html with one
/// row, its `start_time` in the documented `YYYY-MM-DD hh:mm:ss` (data_api/index.html,
/// "Соглашения").
fn docs_calls_report() -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": "number", "result": {
        "data": [{"id": 2911, "start_time": "2026-03-11 02:30:00", "direction": "in",
                  "is_lost": false, "talk_duration": 60, "wait_duration": 5,
                  "contact_phone_number": "79991234567", "employees": []}],
        "metadata": {"total_items": 1}}})
}

#[tokio::test]
async fn comagic_docs_get_account_answer_gives_the_zone() {
    let url = docs_server(|m| match m {
        "get.account" => docs_get_account("Asia/Yekaterinburg"),
        _ => docs_calls_report(),
    })
    .await;
    let client = docs_client(url);
    assert_eq!(
        client.zone().await.unwrap(),
        (
            YEKATERINBURG,
            dozor::telephony::comagic::ZoneSource::Account
        )
    );
    let ping = client.ping().await.unwrap();
    assert!(
        ping.starts_with("CoMagic ООО Ромашка (app_id 104857); call times in Asia/Yekaterinburg"),
        "{ping}"
    );
    let from = Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap();
    let calls = client.calls(from, from + Duration::days(2)).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].started_at,
        Utc.with_ymd_and_hms(2026, 3, 10, 21, 30, 0).unwrap()
    );

    // An account that names no zone: the tenant's zone, said so in the check line.
    let url = docs_server(|m| match m {
        "get.account" => docs_get_account(""),
        _ => docs_calls_report(),
    })
    .await;
    let client = docs_client(url);
    assert_eq!(
        client.zone().await.unwrap(),
        (MOSCOW, dozor::telephony::comagic::ZoneSource::Tenant)
    );
    assert!(
        client
            .ping()
            .await
            .unwrap()
            .contains("Europe/Moscow (the tenant's zone; the account named none)")
    );

    // A zone that is not IANA: refused with the value and the config key that fixes it; no
    // call is read in a zone that may be wrong.
    let url = docs_server(|m| match m {
        "get.account" => docs_get_account("UTC+05"),
        _ => docs_calls_report(),
    })
    .await;
    let client = docs_client(url);
    let e = client
        .calls(from, from + Duration::days(2))
        .await
        .unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("get.account")
            && shown.contains("`UTC+05`")
            && shown.contains("telephony.timezone"),
        "{shown}"
    );
    assert!(!shown.contains("docs-token"), "{shown}");
}

/// `dozor check` names the zone call times are read in and the time now there; an unknown
/// `telephony.timezone` is refused naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_comagic_zone_and_refuses_an_unknown_one() {
    let h = start(false).await;
    h.sim.comagic.set_timezone(YEKATERINBURG);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("dozor.db").display());
    let base = dozor_sim::tenant_config::tenant_config(
        &h,
        dozor_sim::tenant_config::CrmKind::Bitrix24,
        dozor_sim::tenant_config::TelephonyKind::Comagic,
        &db,
        "en",
    );
    let run = |text: String| {
        let path = dir.path().join("dozor.toml");
        std::fs::write(&path, text).unwrap();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_dozor"))
                .args(["--config", path.to_str().unwrap(), "check"])
                .env_remove("RUST_LOG")
                .output()
                .unwrap()
        })
    };
    let out = run(base.clone()).await.unwrap();
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{o}");
    let line = o
        .lines()
        .find(|l| l.contains("comagic") && l.contains("OK"))
        .unwrap_or_else(|| panic!("{o}"));
    let now_there = Utc::now()
        .with_timezone(&YEKATERINBURG)
        .format("%Y-%m-%d %H:")
        .to_string();
    assert!(
        line.contains("call times in Asia/Yekaterinburg (the CoMagic account's zone), now ")
            && line.contains(&now_there[..10]),
        "{line}"
    );

    let broken = base.replacen(
        "kind = \"comagic\"\n",
        "kind = \"comagic\"\ntimezone = \"Asia/Ekaterinburg-ish\"\n",
        1,
    );
    let out = run(broken).await.unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("telephony.timezone") && all.contains("Asia/Ekaterinburg-ish"),
        "{all}"
    );
    h.stop().await;
}

/// The account's zone is read again after a while (accounts do move), and a failed re-read
/// keeps the zone read before rather than falling back to the tenant's.
#[tokio::test]
async fn comagic_zone_is_re_read_and_kept_when_the_re_read_fails() {
    let at = Utc.with_ymd_and_hms(2026, 3, 10, 21, 30, 0).unwrap();
    let h = tiny_sim_in(at, YEKATERINBURG).await;
    let client = good_comagic(&h).with_zone_refresh(std::time::Duration::ZERO);
    let source = dozor::telephony::comagic::ZoneSource::Account;
    assert_eq!(client.zone().await.unwrap(), (YEKATERINBURG, source));
    let novosibirsk = chrono_tz::Asia::Novosibirsk;
    h.sim.comagic.set_timezone(novosibirsk);
    assert_eq!(client.zone().await.unwrap(), (novosibirsk, source));
    let calls = client
        .calls(at - Duration::minutes(10), at + Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].started_at, at);
    assert_eq!(account_reads(&h), 3);
    // The account moves again but the key is refused now: the zone read before stays.
    h.sim.comagic.set_timezone(MOSCOW);
    h.sim.set_faults(
        System::Comagic,
        Faults {
            expire_tokens: true,
            ..Faults::default()
        },
    );
    assert_eq!(client.zone().await.unwrap(), (novosibirsk, source));
    assert_eq!(account_reads(&h), 4, "the re-read was tried");
    h.stop().await;
}

/// A CoMagic notification ("уведомление") of a call in a Yekaterinburg account, received for a
/// Moscow tenant: the receiver confirms it with `get.calls_report` in the account's zone and
/// stores the call at its true instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notified_call_is_stored_at_the_instant_the_account_means() {
    use dozor::service::server::{self, Health, ServerState, webhooks::Hooks};
    const SECRET: &str = "comagic-hook-secret-0123456789";
    let at = Utc::now().with_nanosecond(0).unwrap() - Duration::minutes(3);
    let h = tiny_sim_in(at, YEKATERINBURG).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("dozor.db").display());
    let text = format!(
        "[database]\nurl = \"{db}\"\n\n[[tenants]]\nid = \"acme\"\ntimezone = \"Europe/Moscow\"\n\n\
         [tenants.crm]\nkind = \"bitrix24\"\nwebhook_url = \"https://example.bitrix24.ru/rest/1/xxxxxxxx/\"\n\n\
         [tenants.telephony]\nkind = \"comagic\"\nbase_url = \"{}\"\naccess_token = \"{}\"\n\n\
         [tenants.webhooks]\ncomagic_secret = \"{SECRET}\"\n",
        h.comagic_url(),
        h.sim.creds.comagic_access_token
    );
    let cfg = dozor::config::parse(&text, None, None).unwrap().config;
    let store = dozor::store::Store::open(&db, 2).await.unwrap();
    let wiring = Hooks::wire(&cfg.tenants);
    let state = ServerState {
        store: store.clone(),
        health: std::sync::Arc::new(Health::default()),
        stale_after: std::time::Duration::from_secs(600),
        tenants: vec!["acme".into()],
        hooks: wiring.hooks.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server::router(state)).await });

    // The notification carries the account's wall clock, as the account writes it.
    let wall = at
        .with_timezone(&YEKATERINBURG)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/hooks/comagic/acme/{SECRET}"))
        .json(&json!({
            "notification_mnemonic": "call_finished",
            "call_session_id": 9001,
            "direction": "in",
            "start_time": wall,
            "contact_phone_number": "79991234567",
            "talk_time_duration": 125,
            "total_time_duration": 132,
            "notification_time": wall,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let stored = loop {
        let calls = store.calls("acme").await.unwrap();
        if let Some(c) = calls.into_iter().find(|c| c.id == "9001") {
            break c;
        }
        assert!(std::time::Instant::now() < until, "the call was not stored");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(stored.started_at, at);
    assert_eq!(account_reads(&h), 1);
    h.stop().await;
}
