//! The CoMagic and Calltouch clients against the simulator.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use dozor::config::{CalltouchConfig, ComagicConfig, Secret};
use dozor::domain::{Direction, TelephonyKind};
use dozor::http::ErrorKind;
use dozor::sim::world::{Dir, SimCall, SimEmployee, SimUtm, World};
use dozor::sim::{self, Faults, Sim, SimHandle, SimOptions, System};
use dozor::telephony::Telephony;
use dozor::telephony::calltouch::Calltouch;
use dozor::telephony::comagic::Comagic;
use serde_json::json;

const MOSCOW: chrono_tz::Tz = chrono_tz::Europe::Moscow;

fn anchor() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 15, 9, 0, 0).unwrap()
}

fn opts(enforce: bool) -> SimOptions {
    SimOptions {
        seed: 11,
        scale: 1,
        anchor: Some(anchor()),
        enforce_limits: enforce,
        b24_enterprise: false,
    }
}

async fn start(enforce: bool) -> SimHandle {
    sim::start(opts(enforce), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn comagic(h: &SimHandle, token: &str) -> Comagic {
    Comagic::new(
        &ComagicConfig {
            base_url: h.comagic_url(),
            access_token: Some(Secret::new(token)),
            access_token_file: None,
            employees: Default::default(),
        },
        MOSCOW,
    )
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
            sim::comagic::call_row(&w, c),
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
            sim::comagic::call_row(&w, c),
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
    use dozor::rules::calls::{MatchedBy, StaffMap, name_key};
    let h = start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("dozor.db").display());
    let text = dozor::sim::tenant_config::tenant_config(
        &h,
        dozor::domain::CrmKind::Bitrix24,
        TelephonyKind::Comagic,
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
    let text = dozor::sim::tenant_config::tenant_config(
        &h,
        dozor::domain::CrmKind::Bitrix24,
        TelephonyKind::Comagic,
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
