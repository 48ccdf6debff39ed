//! The single-entry-point rules over HTTP against the simulator, on both CRMs and both
//! telephony services: unknown callers become one lead each, calls reach the CRM timeline once,
//! missed calls get one callback task that a callback closes, and three unanswered calls close
//! the deal — however many cycles run. Also: routing and the first task of an unknown caller's
//! lead, deadlines in business hours, deals for leads without one, and telephony records that
//! change after they were first read.

mod common;

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use common::tenant_config;
use dozor::config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor::engine::{CycleOptions, run_cycle};
use dozor::ledger::Outcome;
use dozor::store::Store;
use dozor::tenant;
use dozor_sim::world::{Dir, SimCall, StageKind, World};
use dozor_sim::{self as sim, SimOptions};

/// Round-the-clock business hours so SLA arithmetic does not depend on when the test runs.
const ALWAYS_OPEN: &str = "\n[tenants.calendar]\nwork_hours = \"00:00-23:59\"\nwork_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n";

fn phone_key(p: &str) -> String {
    World::phone_key(p)
}

async fn call_rules(crm: CrmKind, tel: TelephonyKind) {
    let opts = common::sim_opts(33);
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    // The calendar table must belong to the tenant: insert it before the CRM section.
    let text = common::rules_on(tenant_config(&h, crm, tel, &db, "ru").replacen(
        "\n[tenants.roles]",
        &format!("{ALWAYS_OPEN}\n[tenants.roles]"),
        1,
    ));
    let cfg = config::parse(&text, None, None).unwrap().config;
    let store = Store::open(&db, 4).await.unwrap();
    let tenant = tenant::connect(&cfg.tenants[0], &store).await.unwrap();

    // A missed call from a known client an hour ago (past its 15-minute SLA), not called back.
    let (missed_id, missed_phone) = {
        let mut w = h.sim.world();
        let contact = w
            .contacts
            .values()
            .find(|c| !c.phones.is_empty())
            .unwrap()
            .clone();
        let id = w.next_id();
        let phone = phone_key(&contact.phones[0]);
        let employee = w.employees.first().map(|e| e.id);
        w.calls.insert(
            id,
            SimCall {
                id,
                start: Utc::now() - Duration::hours(1),
                direction: Dir::In,
                is_lost: true,
                talk_s: 0,
                wait_s: 40,
                client_phone: phone.clone(),
                virtual_number: "74951234567".into(),
                employee_id: employee,
                source: "call_tracking".into(),
                utm: Default::default(),
                has_record: false,
            },
        );
        (id, phone)
    };

    let first = run_cycle(&store, &tenant, CycleOptions::default()).await;
    assert!(first.ok(), "{:?}", first.errors);
    let failed: Vec<_> = first
        .applied
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Failed(_) | Outcome::Retry(_)))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let count = |rule: &str| {
        first
            .applied
            .iter()
            .filter(|a| a.rule == rule && matches!(a.outcome, Outcome::Done(_)))
            .count()
    };
    if tel == TelephonyKind::Comagic {
        // Calltouch records only inbound calls, so no outgoing attempts to count there.
        assert!(
            count("three_unanswered") > 0,
            "three unanswered calls closed deals"
        );
    }
    assert!(count("unknown_caller") > 0, "unknown callers became leads");
    assert!(count("call_not_in_crm") > 0, "calls were registered");
    assert!(count("missed_call") > 0, "missed calls got callback tasks");

    // Ten more cycles: nothing is written twice.
    for _ in 0..10 {
        let again = run_cycle(&store, &tenant, CycleOptions::default()).await;
        assert!(again.ok(), "{:?}", again.errors);
    }
    let created: Vec<_> = store_rows(&store, "unknown_caller").await;
    {
        let w = h.sim.world();
        let mut leads_per_phone: BTreeMap<String, usize> = BTreeMap::new();
        for l in w.leads.values() {
            if let Some(p) = &l.phone {
                *leads_per_phone.entry(phone_key(p)).or_default() += 1;
            }
        }
        for key in &created {
            if key.ends_with(":task") {
                // A lead's first task: written once.
                assert_eq!(
                    tasks_with_marker(&w, key).len(),
                    1,
                    "one first task for {key}"
                );
                continue;
            }
            let phone = key.rsplit(':').next().unwrap();
            assert_eq!(
                leads_per_phone.get(&phone_key(phone)).copied(),
                Some(1),
                "one lead for {phone}"
            );
        }
        let mut per_external: BTreeMap<&str, usize> = BTreeMap::new();
        for a in w.activities.values() {
            if let Some(x) = &a.external_id {
                *per_external.entry(x.as_str()).or_default() += 1;
            }
        }
        let doubled: Vec<_> = per_external.iter().filter(|(_, n)| **n > 1).collect();
        assert!(doubled.is_empty(), "calls registered twice: {doubled:?}");
        let callbacks = w
            .tasks
            .values()
            .filter(|t| {
                format!("{} {}", t.title, t.description).contains(&format!(
                    "missed_call:demo:{}:{missed_id}:task",
                    tel.as_str()
                ))
            })
            .count();
        assert_eq!(callbacks, 1, "one callback task for the missed call");
        if tel == TelephonyKind::Comagic {
            let lost = w.stage_of_kind(0, StageKind::Lost).map(|s| s.id);
            let closed = w
                .deals
                .values()
                .filter(|d| {
                    d.loss_reason.as_deref() == Some("не дозвонились") || Some(d.stage_id) == lost
                })
                .count();
            assert!(closed > 0);
        }
    }
    // The head of sales heard about the call not returned in time.
    let escalated = h
        .sim
        .telegram
        .messages()
        .iter()
        .any(|m| format!("{m:?}").contains("Не перезвонили в срок"));
    assert!(escalated, "escalation digest sent");

    // A callback after the deadline closes the loop: the task is completed. CoMagic reports
    // the manager's outgoing call; Calltouch records inbound calls only, so there the client
    // calling again and being answered is the callback.
    {
        {
            let mut w = h.sim.world();
            let id = w.next_id();
            w.calls.insert(
                id,
                SimCall {
                    id,
                    start: Utc::now() - Duration::minutes(5),
                    direction: if tel == TelephonyKind::Comagic {
                        Dir::Out
                    } else {
                        Dir::In
                    },
                    is_lost: false,
                    talk_s: 95,
                    wait_s: 5,
                    client_phone: missed_phone.clone(),
                    virtual_number: "74951234567".into(),
                    employee_id: None,
                    source: "va".into(),
                    utm: Default::default(),
                    has_record: true,
                },
            );
        }
        let closed = run_cycle(&store, &tenant, CycleOptions::default()).await;
        assert!(
            closed.applied.iter().any(|a| a.rule == "missed_call"
                && a.summary.contains("called back")
                && matches!(a.outcome, Outcome::Done(_))),
            "{:?}",
            closed.applied
        );
        let w = h.sim.world();
        let task = w
            .tasks
            .values()
            .find(|t| {
                format!("{} {}", t.title, t.description).contains(&format!(
                    "missed_call:demo:{}:{missed_id}:task",
                    tel.as_str()
                ))
            })
            .unwrap();
        assert!(task.completed, "callback task completed");
    }
    h.stop().await;
}

async fn store_rows(store: &Store, rule: &str) -> Vec<String> {
    store
        .actions_in_state("demo", "done")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.rule == rule)
        .map(|r| r.key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_with_comagic() {
    call_rules(CrmKind::Bitrix24, TelephonyKind::Comagic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_with_calltouch() {
    call_rules(CrmKind::Amocrm, TelephonyKind::Calltouch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_with_comagic() {
    call_rules(CrmKind::Amocrm, TelephonyKind::Comagic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_with_calltouch() {
    call_rules(CrmKind::Bitrix24, TelephonyKind::Calltouch).await;
}

/// A contact created in the CRM after the last sync calls in: the CRM is asked before the
/// caller is treated as unknown, so no duplicate lead appears and the call lands on the contact.
async fn contact_after_sync(crm: CrmKind, tel: TelephonyKind) {
    let opts = common::sim_opts(41);
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let text = common::rules_on(tenant_config(&h, crm, tel, &db, "ru"));
    let cfg = config::parse(&text, None, None).unwrap().config;
    let store = Store::open(&db, 4).await.unwrap();
    let tenant = tenant::connect(&cfg.tenants[0], &store).await.unwrap();
    let first = run_cycle(&store, &tenant, CycleOptions::default()).await;
    assert!(first.ok(), "{:?}", first.errors);

    // The new contact's record carries an old modification time, so the incremental sync does
    // not bring it into the mirror: only a direct CRM lookup can find it.
    let typed = "8 (912) 345-67-89";
    let e164 = "+79123456789";
    let (contact_id, call_id) = {
        let mut w = h.sim.world();
        let mut contact = w.contacts.values().next().unwrap().clone();
        let contact_id = w.next_id();
        contact.id = contact_id;
        contact.first_name = "Поздний".into();
        contact.last_name = "Клиент".into();
        contact.phones = vec![typed.into()];
        contact.company_id = None;
        contact.created_at = Utc::now() - Duration::days(40);
        contact.updated_at = contact.created_at;
        w.contacts.insert(contact_id, contact);
        let call_id = w.next_id();
        let employee = w.employees.first().map(|e| e.id);
        w.calls.insert(
            call_id,
            SimCall {
                id: call_id,
                start: Utc::now() - Duration::minutes(20),
                direction: Dir::In,
                is_lost: false,
                talk_s: 61,
                wait_s: 4,
                client_phone: "79123456789".into(),
                virtual_number: "74951234567".into(),
                employee_id: employee,
                source: "call_tracking".into(),
                utm: Default::default(),
                has_record: false,
            },
        );
        (contact_id, call_id)
    };
    let leads_before = h.sim.world().leads.len();
    let second = run_cycle(&store, &tenant, CycleOptions::default()).await;
    assert!(second.ok(), "{:?}", second.errors);
    let mirror = dozor::store::Snapshot::load(&store, "demo").await.unwrap();
    assert!(
        !mirror
            .contacts
            .iter()
            .any(|c| c.id == contact_id.to_string()),
        "the contact must still be missing from the mirror for this test to mean anything"
    );
    assert!(
        !second
            .applied
            .iter()
            .any(|a| a.rule == "unknown_caller" && a.summary.contains(e164)),
        "no lead for a number the CRM knows: {:?}",
        second.applied
    );
    let registered = second.applied.iter().find(|a| {
        a.rule == "call_not_in_crm" && a.summary.starts_with(&format!("call {call_id} "))
    });
    let registered = registered.unwrap_or_else(|| panic!("call not matched: {:?}", second.applied));
    assert!(
        registered
            .summary
            .ends_with(&format!("contact:{contact_id}")),
        "{}",
        registered.summary
    );
    assert!(
        matches!(registered.outcome, Outcome::Done(_)),
        "{registered:?}"
    );
    {
        let w = h.sim.world();
        let new_leads: Vec<_> = w
            .leads
            .values()
            .filter(|l| {
                l.phone
                    .as_deref()
                    .is_some_and(|p| phone_key(p) == "79123456789")
            })
            .collect();
        assert!(new_leads.is_empty(), "duplicate lead: {new_leads:?}");
        assert!(w.leads.len() >= leads_before);
        assert!(
            w.activities
                .values()
                .any(|a| a.external_id.as_deref() == Some(call_id.to_string().as_str())),
            "the call reached the CRM timeline"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_asks_the_crm_before_creating_a_lead() {
    contact_after_sync(CrmKind::Bitrix24, TelephonyKind::Comagic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_asks_the_crm_before_creating_a_lead() {
    contact_after_sync(CrmKind::Amocrm, TelephonyKind::Calltouch).await;
}

/// `dozor report calls`: a day's telephony calls against the CRM timeline. Calls that never
/// reached the CRM are listed while `call_not_in_crm` is off, and gone once it has run.
async fn reconciliation(crm: CrmKind, tel: TelephonyKind) {
    use dozor_sim::world::{ActivityType, Owner, SimActivity};
    let opts = common::sim_opts(52);
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let base = tenant_config(&h, crm, tel, &db, "ru");
    let off = config::parse(&common::only_rules(base.clone(), &[]), None, None)
        .unwrap()
        .config;
    let on_text = common::only_rules(base, &["call_not_in_crm"]);
    let on = config::parse(&on_text, None, None).unwrap().config;
    let store = Store::open(&db, 4).await.unwrap();

    let t0 = Utc::now() - Duration::minutes(10);
    let day = t0.with_timezone(&chrono_tz::Europe::Moscow).date_naive();
    let (known, unknown, by_time) = {
        let mut w = h.sim.world();
        let phones: Vec<(u64, String)> = w
            .contacts
            .values()
            .filter(|c| !c.phones.is_empty())
            .take(4)
            .map(|c| (c.id, c.phones[0].clone()))
            .collect();
        let employee = w.employees.first().map(|e| e.id);
        let add = |w: &mut World, phone: &str, s: i64| {
            let id = w.next_id();
            w.calls.insert(
                id,
                SimCall {
                    id,
                    start: t0 + Duration::seconds(s),
                    direction: Dir::In,
                    is_lost: false,
                    talk_s: 40,
                    wait_s: 3,
                    client_phone: phone_key(phone),
                    virtual_number: "74951234567".into(),
                    employee_id: employee,
                    source: "call_tracking".into(),
                    utm: Default::default(),
                    has_record: false,
                },
            );
            id.to_string()
        };
        let known: Vec<String> = phones[..3]
            .iter()
            .enumerate()
            .map(|(i, (_, p))| add(&mut w, p, i as i64))
            .collect();
        let unknown = add(&mut w, "79120000017", 4);
        // The CRM's own integration logged this one without the call id, 90 s later.
        let by_time = add(&mut w, &phones[3].1, 5);
        let id = w.next_id();
        let responsible = w.users[0].id;
        w.activities.insert(
            id,
            SimActivity {
                id,
                kind: ActivityType::Call,
                direction: Dir::In,
                subject: "Входящий звонок".into(),
                owner: (Owner::Contact, phones[3].0),
                responsible_id: responsible,
                phone: Some(phones[3].1.clone()),
                duration_s: 40,
                completed: true,
                external_id: None,
                start: t0 + Duration::seconds(95),
                created_at: t0 + Duration::seconds(100),
                updated_at: t0 + Duration::seconds(100),
            },
        );
        (known, unknown, by_time)
    };

    let tenant_off = tenant::connect(&off.tenants[0], &store).await.unwrap();
    let first = run_cycle(&store, &tenant_off, CycleOptions::default()).await;
    assert!(first.ok(), "{:?}", first.errors);
    let rep = dozor::report::calls::build(&store, &off.tenants[0], day)
        .await
        .unwrap();
    let missing: Vec<&str> = rep.missing.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(rep.rule_mode, "off");
    assert!(rep.telephony_calls >= 5, "{rep:?}");
    assert_eq!(rep.telephony_calls, rep.matched() + rep.missing.len());
    for id in known.iter().chain([&unknown]) {
        assert!(
            missing.contains(&id.as_str()),
            "{id} listed: {}",
            rep.plain()
        );
    }
    // Logged by the CRM without the call id: found by number and time.
    assert!(!missing.contains(&by_time.as_str()), "{}", rep.plain());
    assert!(rep.matched_by_time_and_phone >= 1, "{}", rep.plain());
    let k = rep.missing.iter().find(|m| m.id == known[0]).unwrap();
    assert!(k.known_number && k.fix.contains("off"), "{k:?}");
    let u = rep.missing.iter().find(|m| m.id == unknown).unwrap();
    assert!(!u.known_number);

    // The rule on: the known numbers' calls are registered and, once synced, matched by id.
    let tenant_on = tenant::connect(&on.tenants[0], &store).await.unwrap();
    for _ in 0..2 {
        let cycle = run_cycle(&store, &tenant_on, CycleOptions::default()).await;
        assert!(cycle.ok(), "{:?}", cycle.errors);
    }
    let rep = dozor::report::calls::build(&store, &on.tenants[0], day)
        .await
        .unwrap();
    let missing: Vec<&str> = rep.missing.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(rep.rule_mode, "on");
    for id in &known {
        assert!(
            !missing.contains(&id.as_str()),
            "{id} fixed: {}",
            rep.plain()
        );
    }
    assert!(rep.matched_by_call_id >= 3, "{}", rep.plain());
    assert!(
        missing.contains(&unknown.as_str()),
        "no lead, no record: {}",
        rep.plain()
    );

    // The same through the command line, as JSON.
    let cfg_path = dir.path().join("dozor.toml");
    std::fs::write(&cfg_path, &on_text).unwrap();
    let out_path = dir.path().join("calls.json");
    let args: Vec<String> = [
        "--config",
        cfg_path.to_str().unwrap(),
        "report",
        "calls",
        "--date",
        &day.to_string(),
        "--tenant",
        "demo",
        "--format",
        "json",
        "--out",
        out_path.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(json[0]["tenant"], "demo");
    assert_eq!(json[0]["date"], day.to_string());
    assert_eq!(json[0]["telephony_calls"], rep.telephony_calls);
    let ids: Vec<&str> = json[0]["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&unknown.as_str()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_report_bitrix24_with_comagic() {
    reconciliation(CrmKind::Bitrix24, TelephonyKind::Comagic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_report_amocrm_with_calltouch() {
    reconciliation(CrmKind::Amocrm, TelephonyKind::Calltouch).await;
}

/// Starts the simulator and returns it with a config for `crm`/`tel` whose rules are all off
/// but `rules`. `tables` sees the seeded world and returns what goes before the roles table
/// (calendar, routing, rule settings) and the keys to add to the roles table.
async fn setup(
    seed: u64,
    crm: CrmKind,
    tel: TelephonyKind,
    rules: &[&str],
    tables: impl FnOnce(&World) -> (String, String),
) -> (sim::SimHandle, tempfile::TempDir, Store, tenant::Tenant) {
    let opts = SimOptions {
        seed,
        scale: 1,
        anchor: None,
        enforce_limits: false,
        b24_enterprise: false,
    };
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let (before, roles) = tables(&h.sim.world());
    let text = tenant_config(&h, crm, tel, &db, "ru").replacen(
        "\n[tenants.roles]\n",
        &format!("{before}\n[tenants.roles]\n{roles}"),
        1,
    );
    let text = common::only_rules(text, rules);
    let cfg = config::parse(&text, None, None)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .config;
    let store = Store::open(&db, 4).await.unwrap();
    let tenant = tenant::connect(&cfg.tenants[0], &store).await.unwrap();
    (h, dir, store, tenant)
}

fn answered_call(
    id: u64,
    start: chrono::DateTime<Utc>,
    phone: &str,
    virtual_number: &str,
) -> SimCall {
    SimCall {
        id,
        start,
        direction: Dir::In,
        is_lost: false,
        talk_s: 48,
        wait_s: 3,
        client_phone: phone.into(),
        virtual_number: virtual_number.into(),
        employee_id: None,
        source: "va".into(),
        utm: Default::default(),
        has_record: false,
    }
}

/// Tasks in the CRM whose text carries the ledger marker of `key`.
fn tasks_with_marker<'w>(w: &'w World, key: &str) -> Vec<&'w dozor_sim::world::SimTask> {
    let mark = format!("[dozor:{key}]");
    w.tasks
        .values()
        .filter(|t| format!("{} {}", t.title, t.description).contains(&mark))
        .collect()
}

async fn cycle_ok(store: &Store, tenant: &tenant::Tenant) -> dozor::engine::CycleSummary {
    let c = run_cycle(store, tenant, CycleOptions::default()).await;
    assert!(c.ok(), "{:?}", c.errors);
    let failed: Vec<_> = c
        .applied
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Failed(_) | Outcome::Retry(_)))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    c
}

/// Unknown callers' leads go to the user the routing config names (virtual number, then UTM
/// source), else to the managers on duty in turn; each lead's owner then gets exactly one first
/// task, however many cycles run.
async fn unknown_caller_routing(crm: CrmKind, tel: TelephonyKind) {
    let mut managers = Vec::new();
    let (h, _dir, store, tenant) = setup(61, crm, tel, &["unknown_caller"], |w| {
        managers = w
            .users_with(dozor_sim::world::Role::Manager)
            .map(|u| u.id)
            .collect();
        assert!(managers.len() >= 2, "{managers:?}");
        let m = |i: usize| managers[i % managers.len()];
        let before = format!(
            "{ALWAYS_OPEN}\n[tenants.routing]\non_duty = \"round_robin\"\n\n\
             [tenants.routing.virtual_numbers]\n\"+7 (495) 777-00-01\" = \"{}\"\n\n\
             [tenants.routing.sources]\n\"Yandex\" = \"{}\"\n",
            m(0),
            m(1)
        );
        (before, format!("on_duty = [\"{}\", \"{}\"]\n", m(2), m(3)))
    })
    .await;
    let m = |i: usize| managers[i % managers.len()];
    // Only these calls are recent, so the on-duty turn is predictable.
    let now = Utc::now();
    let phones = ["79120000101", "79120000102", "79120000103", "79120000104"];
    {
        let mut w = h.sim.world();
        w.calls.retain(|_, c| c.start < now - Duration::days(2));
        let virtuals = ["74957770001", "74950000000", "74950000000", "74950000000"];
        for (i, (p, v)) in phones.iter().zip(virtuals).enumerate() {
            let id = w.next_id();
            let mut c = answered_call(id, now - Duration::minutes(30 - i as i64), p, v);
            if i == 1 {
                c.utm.source = Some("yandex".into());
            }
            w.calls.insert(id, c);
        }
    }
    let want = [m(0), m(1), m(2), m(3)];
    let first = cycle_ok(&store, &tenant).await;
    assert_eq!(
        first
            .applied
            .iter()
            .filter(|a| a.rule == "unknown_caller" && matches!(a.outcome, Outcome::Done(_)))
            .count(),
        4,
        "{:?}",
        first.applied
    );
    for _ in 0..6 {
        cycle_ok(&store, &tenant).await;
    }
    {
        let w = h.sim.world();
        for (p, owner) in phones.iter().zip(want) {
            let leads: Vec<_> = w
                .leads
                .values()
                .filter(|l| l.phone.as_deref().is_some_and(|x| phone_key(x) == *p))
                .collect();
            assert_eq!(leads.len(), 1, "one lead for {p}: {leads:?}");
            assert_eq!(leads[0].responsible_id, owner, "owner of the lead for {p}");
            let tasks = tasks_with_marker(&w, &format!("unknown_caller:demo:phone:+{p}:task"));
            assert_eq!(tasks.len(), 1, "one first task for {p}");
            let t = tasks[0];
            // amoCRM keeps a task as one text: title first.
            assert!(
                t.title.starts_with("Связаться с новым клиентом"),
                "{}",
                t.title
            );
            assert_eq!(
                t.responsible_id, owner,
                "first task for {p} goes to the lead's owner"
            );
            assert!(!t.completed);
            // Always-open calendar: 15 minutes after the lead was created.
            let due = t.deadline.expect("the first task has a deadline");
            let sla = due - leads[0].created_at;
            assert!(
                sla >= Duration::minutes(14) && sla <= Duration::minutes(16),
                "due {due}, lead created {}",
                leads[0].created_at
            );
            if crm == CrmKind::Bitrix24 {
                assert_eq!(
                    t.binding,
                    Some((dozor_sim::world::Owner::Lead, leads[0].id)),
                    "bound to the lead"
                );
            }
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_unknown_caller_lead_is_routed_and_gets_one_first_task() {
    unknown_caller_routing(CrmKind::Bitrix24, TelephonyKind::Comagic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_unknown_caller_lead_is_routed_and_gets_one_first_task() {
    unknown_caller_routing(CrmKind::Amocrm, TelephonyKind::Calltouch).await;
}

/// The last Friday 21:00 in Moscow before `now`, and the Monday 09:15 after it.
fn friday_night_and_monday_sla(
    now: chrono::DateTime<Utc>,
) -> (chrono::DateTime<Utc>, chrono::DateTime<Utc>) {
    use chrono::{Datelike, TimeZone, Weekday};
    let tz = chrono_tz::Europe::Moscow;
    let mut day = now.with_timezone(&tz).date_naive();
    loop {
        if day.weekday() == Weekday::Fri {
            let at = tz
                .from_local_datetime(&day.and_hms_opt(21, 0, 0).unwrap())
                .unwrap()
                .with_timezone(&Utc);
            if at < now - Duration::minutes(10) {
                let monday = day + Duration::days(3);
                let due = tz
                    .from_local_datetime(&monday.and_hms_opt(9, 15, 0).unwrap())
                    .unwrap()
                    .with_timezone(&Utc);
                return (at, due);
            }
        }
        day -= Duration::days(1);
    }
}

/// With the tenant's real calendar (09:00–18:00, Monday to Friday, Moscow), a call missed at
/// 21:00 on a Friday gets a callback task whose deadline in the CRM is Monday 09:15: the SLA
/// counts business minutes only.
async fn business_hours(crm: CrmKind, tel: TelephonyKind) {
    let (call_at, due) = friday_night_and_monday_sla(Utc::now());
    let (h, _dir, store, tenant) = setup(71, crm, tel, &["missed_call"], |_| {
        // The Friday may be up to a week ago; the default window is a day.
        (
            "\n[tenants.calendar]\nwork_hours = \"09:00-18:00\"\nwork_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\n\n\
             [tenants.rules.missed_call]\nsla_minutes = 15\nlookback_hours = 200\n"
                .to_string(),
            String::new(),
        )
    })
    .await;
    let (call_id, phone) = {
        let mut w = h.sim.world();
        // A client whose number no other call uses, so nothing counts as a callback.
        let used: std::collections::HashSet<String> =
            w.calls.values().map(|c| c.client_phone.clone()).collect();
        let contact = w
            .contacts
            .values()
            .find(|c| {
                c.phones
                    .first()
                    .is_some_and(|p| !used.contains(&phone_key(p)))
            })
            .unwrap()
            .clone();
        let id = w.next_id();
        let phone = phone_key(&contact.phones[0]);
        let mut c = answered_call(id, call_at, &phone, "74951234567");
        c.is_lost = true;
        c.talk_s = 0;
        w.calls.insert(id, c);
        (id, phone)
    };
    for _ in 0..3 {
        cycle_ok(&store, &tenant).await;
    }
    {
        let w = h.sim.world();
        let tasks = tasks_with_marker(
            &w,
            &format!("missed_call:demo:{}:{call_id}:task", tel.as_str()),
        );
        assert_eq!(tasks.len(), 1, "one callback task for {phone}");
        let deadline = tasks[0].deadline.expect("the callback task has a deadline");
        assert!(
            (deadline - due).num_seconds().abs() <= 60,
            "call at {call_at} (Friday 21:00 MSK) is due {due} (Monday 09:15 MSK), the CRM has {deadline}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_friday_night_missed_call_is_due_monday_morning() {
    business_hours(CrmKind::Bitrix24, TelephonyKind::Comagic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_friday_night_missed_call_is_due_monday_morning() {
    business_hours(CrmKind::Amocrm, TelephonyKind::Calltouch).await;
}

/// An open lead with no deal after `after_minutes` gets exactly one deal, and (with
/// deal_without_task on) that deal exactly one first task, over many cycles.
async fn lead_without_deal(crm: CrmKind) {
    use dozor_sim::world::{LeadStatus, SimLead};
    let (h, _dir, store, tenant) = setup(
        81,
        crm,
        TelephonyKind::Comagic,
        &["lead_without_deal", "deal_without_task"],
        |_| (ALWAYS_OPEN.to_string(), String::new()),
    )
    .await;
    let title = "Заявка с сайта: проверка сделки 4471";
    let lead_id = {
        let mut w = h.sim.world();
        let id = w.next_id();
        let owner = w
            .users_with(dozor_sim::world::Role::Manager)
            .next()
            .unwrap()
            .id;
        let at = Utc::now() - Duration::minutes(40);
        w.leads.insert(
            id,
            SimLead {
                id,
                title: title.into(),
                name: "Проверка Сделки".into(),
                phone: Some("+7 912 000-44-71".into()),
                email: None,
                source: "WEB".into(),
                status: LeadStatus::New,
                responsible_id: owner,
                contact_id: None,
                company_id: None,
                utm: Default::default(),
                created_at: at,
                updated_at: at,
                closed_at: None,
            },
        );
        id
    };
    for _ in 0..8 {
        cycle_ok(&store, &tenant).await;
    }
    {
        let w = h.sim.world();
        // Bitrix24 keeps the lead link; amoCRM does not, and the deal carries the lead's title.
        let deals: Vec<_> = w
            .deals
            .values()
            .filter(|d| match crm {
                CrmKind::Bitrix24 => d.lead_id == Some(lead_id),
                CrmKind::Amocrm => d.title == title,
            })
            .collect();
        assert_eq!(deals.len(), 1, "one deal for the lead: {deals:?}");
        let lead = &w.leads[&lead_id];
        assert_eq!(deals[0].responsible_id, lead.responsible_id);
        let tasks: Vec<_> = w
            .tasks
            .values()
            .filter(|t| {
                t.binding == Some((dozor_sim::world::Owner::Deal, deals[0].id))
                    && format!("{} {}", t.title, t.description).contains(&format!(
                        "[dozor:deal_without_task:demo:deal:{}:",
                        deals[0].id
                    ))
            })
            .collect();
        assert_eq!(tasks.len(), 1, "one first task for the new deal: {tasks:?}");
        assert_eq!(tasks[0].responsible_id, lead.responsible_id);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_lead_without_deal_gets_one_deal_and_one_task() {
    lead_without_deal(CrmKind::Bitrix24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_lead_without_deal_gets_one_deal_and_one_task() {
    lead_without_deal(CrmKind::Amocrm).await;
}

/// A call first reported missed (and, on CoMagic, without a recording) and later changed by the
/// telephony service is updated in the mirror on the next cycle, not kept as first seen nor
/// stored twice.
async fn late_records(tel: TelephonyKind) {
    let (h, _dir, store, tenant) = setup(91, CrmKind::Bitrix24, tel, &[], |_| {
        (String::new(), String::new())
    })
    .await;
    let call_id = {
        let mut w = h.sim.world();
        let id = w.next_id();
        let mut c = answered_call(
            id,
            Utc::now() - Duration::minutes(12),
            "79120005501",
            "74951234567",
        );
        c.is_lost = true;
        c.talk_s = 0;
        w.calls.insert(id, c);
        id
    };
    let stored = |m: &dozor::store::Snapshot| {
        let found: Vec<_> = m
            .calls
            .iter()
            .filter(|c| c.id == call_id.to_string())
            .cloned()
            .collect();
        assert_eq!(found.len(), 1, "the call is stored once: {found:?}");
        found[0].clone()
    };
    cycle_ok(&store, &tenant).await;
    let before = stored(&dozor::store::Snapshot::load(&store, "demo").await.unwrap());
    assert!(!before.answered);
    assert_eq!(before.talk_s, 0);
    assert_eq!(before.recording_url, None);
    {
        let mut w = h.sim.world();
        let c = w.calls.get_mut(&call_id).unwrap();
        c.is_lost = false;
        c.talk_s = 75;
        c.has_record = true;
    }
    cycle_ok(&store, &tenant).await;
    let after = stored(&dozor::store::Snapshot::load(&store, "demo").await.unwrap());
    assert!(after.answered, "{after:?}");
    assert_eq!(after.talk_s, 75);
    if tel == TelephonyKind::Comagic {
        assert!(
            after.recording_url.is_some(),
            "the recording that appeared later is stored: {after:?}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comagic_late_status_and_recording_update_the_stored_call() {
    late_records(TelephonyKind::Comagic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calltouch_late_status_updates_the_stored_call() {
    late_records(TelephonyKind::Calltouch).await;
}
