//! The call rules against the CRM's pace, with the daemon binary against the simulator over
//! HTTP: a missed call pushed by CoMagic gets its callback task before the cycle asks the CRM
//! anything else (no sync batch, no number look-up ahead of `tasks.task.add`), and the CRM's
//! answers about numbers the mirror lacks (`crm.duplicate.findbycomm`) are asked once: not again
//! in the next cycle, nor after the daemon is killed and started again on the same database.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use common::{Daemon, tenant_config};
use dozor::config::RuleMode;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor_sim::world::{Dir, SimCall, World};
use dozor_sim::{SimHandle, SimOptions, System};
use serde_json::{Value, json};

const SECRET: &str = "comagic-hook-secret-0123456789";
const LOOKUP: &str = "crm.duplicate.findbycomm";

fn start(config: &std::path::Path) -> Daemon {
    Daemon(
        Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(["--config", &config.display().to_string(), "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Finished cycles of the tenant, from the daemon's metrics.
async fn cycles(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(r) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("dozor_cycles_total{tenant=\"demo\",ok=\"true\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

async fn wait_cycles(client: &reqwest::Client, base: &str, n: u64) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while cycles(client, base).await < n {
        assert!(
            std::time::Instant::now() < until,
            "cycle {n} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lookups(h: &SimHandle) -> u64 {
    h.sim
        .stats()
        .get(&System::Bitrix24)
        .and_then(|s| s.by_method.get(LOOKUP).copied())
        .unwrap_or(0)
}

fn call(id: u64, phone: &str, lost: bool) -> SimCall {
    SimCall {
        id,
        start: Utc::now() - chrono::Duration::seconds(60),
        direction: Dir::In,
        is_lost: lost,
        talk_s: if lost { 0 } else { 42 },
        wait_s: 20,
        client_phone: phone.into(),
        virtual_number: "74951234567".into(),
        employee_id: None,
        source: "call_tracking".into(),
        utm: Default::default(),
        has_record: false,
    }
}

/// Records a missed call from a known client's number and pushes its CoMagic notification;
/// returns the ledger key its callback task carries.
async fn push_missed_call(h: &SimHandle, client: &reqwest::Client, base: &str) -> String {
    let (id, phone) = {
        let mut w = h.sim.world();
        let phone = w
            .contacts
            .values()
            .find(|c| !c.phones.is_empty())
            .map(|c| World::phone_key(&c.phones[0]))
            .unwrap();
        let id = w.next_id();
        w.calls.insert(id, call(id, &phone, true));
        (id, phone)
    };
    let at = Utc::now()
        .with_timezone(&chrono_tz::Europe::Moscow)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let body = json!({
        "notification_mnemonic": "lost_call",
        "call_session_id": id,
        "direction": "in",
        "start_time": at,
        "contact_phone_number": phone,
        "virtual_phone_number": "74951234567",
        "talk_time_duration": 0,
        "total_time_duration": 20,
        "notification_time": at,
    });
    let r = client
        .post(format!("{base}/hooks/comagic/demo/{SECRET}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "accepted");
    format!("missed_call:demo:comagic:{id}:task")
}

/// Bitrix24 requests by method at the moment `tasks.task.add` for `marker` arrives (before it
/// is served), kept by a simulator hook.
type Before = Arc<Mutex<Option<std::collections::BTreeMap<String, u64>>>>;

fn watch_task_add(h: &SimHandle) -> Before {
    let seen: Before = Arc::default();
    let (sim, out) = (h.sim.clone(), seen.clone());
    h.sim
        .after_requests(System::Bitrix24, "tasks.task.add", 0, move |_| {
            let stats = sim
                .stats()
                .get(&System::Bitrix24)
                .cloned()
                .unwrap_or_default();
            *out.lock().unwrap() = Some(stats.by_method);
        });
    seen
}

async fn wait_task(h: &SimHandle, marker: &str) {
    let has = || {
        h.sim
            .world()
            .tasks
            .values()
            .any(|t| format!("{} {}", t.title, t.description).contains(marker))
    };
    common::wait_for(Duration::from_secs(30), "the callback task", has).await;
}

fn b24_requests(h: &SimHandle) -> std::collections::BTreeMap<String, u64> {
    h.sim
        .stats()
        .get(&System::Bitrix24)
        .map(|s| s.by_method.clone())
        .unwrap_or_default()
}

/// What the CRM was asked after `pushed` (its requests when the call was pushed) and before the
/// callback task: nothing.
fn assert_task_first(before: &Before, pushed: &std::collections::BTreeMap<String, u64>) {
    let asked = before.lock().unwrap().clone().expect("the task was added");
    let others: Vec<_> = asked
        .iter()
        // The simulator counts a request before its hooks run: the task's own is in.
        .map(|(m, n)| (m, n - u64::from(m == "tasks.task.add")))
        .filter(|(m, n)| pushed.get(m.as_str()).copied().unwrap_or(0) != *n)
        .collect();
    assert!(
        others.is_empty(),
        "the CRM was asked {others:?} before the callback task"
    );
}

// Long: one daemon's life and its restart, step by step, each step's requests counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_task_goes_first_and_numbers_are_asked_once() {
    let opts = SimOptions {
        enforce_limits: false,
        ..common::sim_opts(11)
    };
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let tenant = tenant_config(
        &h,
        CrmKind::Bitrix24,
        TelephonyKind::Comagic,
        &common::sqlite_url(dir.path()),
        "ru",
    );
    let cfg = common::only_rules(
        // One instance id across the restart: it takes its own tenant's lease back at once.
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[sync]\ninterval_secs = 3600\n\
             [cluster]\ninstance_id = \"calls\"\n{tenant}"
        ),
        &["missed_call", "unknown_caller"],
    );
    // Unknown callers get no lead, so their numbers stay unknown and keep being candidates.
    let mut cfg = common::with_rule_mode(&cfg, "unknown_caller", RuleMode::Shadow);
    cfg.push_str(&format!(
        "\n[tenants.webhooks]\ncomagic_secret = \"{SECRET}\"\n"
    ));
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, cfg).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let daemon = start(&path);
    common::wait_ready(&client, &base).await;
    wait_cycles(&client, &base, 1).await;

    // Calls from five numbers no CRM record carries, which the next cycle's sync brings.
    let unknown: Vec<String> = (0..5).map(|i| format!("7900555{i:04}")).collect();
    {
        let mut w = h.sim.world();
        let known = |p: &str| {
            let has = |phones: &[String]| phones.iter().any(|x| World::phone_key(x) == p);
            w.contacts.values().any(|c| has(&c.phones))
                || w.companies.values().any(|c| has(&c.phones))
                || w.leads
                    .values()
                    .any(|l| l.phone.iter().any(|x| World::phone_key(x) == p))
        };
        assert!(!unknown.iter().any(|p| known(p)));
        for p in &unknown {
            let id = w.next_id();
            w.calls.insert(id, call(id, p, false));
        }
    }
    h.sim.reset_stats();
    let pushed = b24_requests(&h);
    let before = watch_task_add(&h);
    let marker = push_missed_call(&h, &client, &base).await;
    wait_task(&h, &marker).await;
    wait_cycles(&client, &base, 2).await;
    // (c) The task was the first Bitrix24 request; the sync and the look-ups came after it.
    assert_task_first(&before, &pushed);
    assert!(
        lookups(&h) >= unknown.len() as u64,
        "the cycle went on to look the new numbers up"
    );
    let asked = lookups(&h);

    // (a) The next cycle (woken by another push) asks about none of them again.
    let pushed = b24_requests(&h);
    let before = watch_task_add(&h);
    let marker = push_missed_call(&h, &client, &base).await;
    wait_task(&h, &marker).await;
    wait_cycles(&client, &base, 3).await;
    assert_task_first(&before, &pushed);
    assert_eq!(lookups(&h), asked, "remembered answers are not asked again");

    // (b) Killed and started again on the same database: still remembered.
    drop(daemon);
    let _daemon = start(&path);
    common::wait_ready(&client, &base).await;
    wait_cycles(&client, &base, 1).await;
    assert_eq!(lookups(&h), asked, "remembered answers survive a restart");
    h.stop().await;
}

/// Bitrix24 look-ups made by one cycle of `tenant` on `store`.
async fn cycle_lookups(
    h: &SimHandle,
    store: &dozor::store::Store,
    t: &dozor::tenant::Tenant,
) -> u64 {
    let before = lookups(h);
    let s = dozor::engine::run_cycle(store, t, dozor::engine::CycleOptions::default()).await;
    assert!(s.ok(), "{:?}", s.errors);
    lookups(h) - before
}

/// "Found" is reused while the mirror lacks the found record, and asked again once the mirror
/// holds the record without the number (it was taken off it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_found_answer_is_asked_again_once_the_mirror_shows_the_record_without_the_number() {
    let h = common::start_sim(common::sim_opts(12)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let text = tenant_config(&h, CrmKind::Bitrix24, TelephonyKind::Comagic, &db, "ru");
    let text = common::only_rules(text, &["unknown_caller"]);
    let text = common::with_rule_mode(&text, "unknown_caller", RuleMode::Shadow);
    let cfg = dozor::config::parse(&text, None, None).unwrap().config;
    let store = dozor::store::Store::open(&db, 2).await.unwrap();
    let t = dozor::tenant::connect(&cfg.tenants[0], &store)
        .await
        .unwrap();
    cycle_lookups(&h, &store, &t).await;

    // A client the sync will not read (changed before its cursor) carries a number that calls.
    let number = "79005559999";
    let contact = {
        let mut w = h.sim.world();
        let mut c = w.contacts.values().next().unwrap().clone();
        c.id = w.next_id();
        c.phones = vec![format!("+{number}")];
        c.created_at = Utc::now() - chrono::Duration::days(2);
        c.updated_at = c.created_at;
        w.contacts.insert(c.id, c.clone());
        let id = w.next_id();
        w.calls.insert(id, call(id, number, false));
        c.id
    };
    assert_eq!(
        cycle_lookups(&h, &store, &t).await,
        1,
        "the new number is asked"
    );
    assert_eq!(
        cycle_lookups(&h, &store, &t).await,
        0,
        "the found record is remembered"
    );

    // The number is taken off the record: the sync brings the record without it.
    {
        let mut w = h.sim.world();
        let c = w.contacts.get_mut(&contact).unwrap();
        c.phones = vec!["+79005550000".into()];
        c.updated_at = Utc::now();
    }
    assert_eq!(
        cycle_lookups(&h, &store, &t).await,
        1,
        "a stale answer is asked again"
    );
    assert_eq!(
        cycle_lookups(&h, &store, &t).await,
        0,
        "'not in the CRM' is remembered"
    );
    h.stop().await;
}

/// "Not in the CRM" is reused for a day, then asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_found_answer_is_asked_again_after_a_day() {
    let h = common::start_sim(common::sim_opts(13)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let text = tenant_config(&h, CrmKind::Bitrix24, TelephonyKind::Comagic, &db, "ru");
    let text = common::only_rules(text, &["unknown_caller"]);
    let text = common::with_rule_mode(&text, "unknown_caller", RuleMode::Shadow);
    // Two days back: the call stays a candidate past the day.
    let header = "[tenants.rules.unknown_caller]\nmode = \"shadow\"";
    assert!(text.contains(header), "{text}");
    let text = text.replace(header, &format!("{header}\nlookback_hours = 48.0"));
    let cfg = dozor::config::parse(&text, None, None).unwrap().config;
    let store = dozor::store::Store::open(&db, 2).await.unwrap();
    let t = dozor::tenant::connect(&cfg.tenants[0], &store)
        .await
        .unwrap();
    let start = Utc::now();
    let at = |minutes: i64| dozor::engine::CycleOptions {
        now: Some(start + chrono::Duration::minutes(minutes)),
        ..dozor::engine::CycleOptions::default()
    };
    let run = |opts| {
        let (h, store, t) = (&h, &store, &t);
        async move {
            let before = lookups(h);
            let s = dozor::engine::run_cycle(store, t, opts).await;
            assert!(s.ok(), "{:?}", s.errors);
            lookups(h) - before
        }
    };
    run(at(0)).await;
    {
        let mut w = h.sim.world();
        let id = w.next_id();
        w.calls.insert(id, call(id, "79005558888", false));
    }
    assert_eq!(run(at(1)).await, 1, "the new number is asked");
    assert_eq!(run(at(23 * 60)).await, 0, "within the day: remembered");
    let again = run(at(25 * 60)).await;
    assert!(again >= 1, "after the day: asked again");
    assert_eq!(run(at(26 * 60)).await, 0, "and remembered again");
    h.stop().await;
}
