//! The whole cycle over HTTP against the simulator — sync, rules, ledger — on a real SQLite file
//! and on a real PostgreSQL server, for both CRMs and both telephony services.

mod common;

use dozor::config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor::engine::{CycleOptions, run_cycle};
use dozor::ledger::Outcome;
use dozor::sim::{self, SimOptions, tenant_config::tenant_config};
use dozor::store::Store;
use dozor::tenant;

/// Reads 31 days of telephony: the generated calls span the 30 days before the simulator started.
fn cycle_opts(dry_run: bool) -> CycleOptions {
    CycleOptions {
        dry_run,
        sync: dozor::sync::SyncOptions {
            telephony_initial: std::time::Duration::from_secs(31 * 86_400),
            ..dozor::sync::SyncOptions::default()
        },
    }
}

/// Only `deal_without_task` acts, so the counts below are its alone (the other rules have
/// tests of their own).
fn only_deal_without_task(config: String) -> String {
    common::only_rules(config, &["deal_without_task"])
}

fn sim_opts() -> SimOptions {
    SimOptions {
        seed: 7,
        scale: 1,
        anchor: None,
        enforce_limits: false,
        b24_enterprise: false,
    }
}

async fn full_cycle(db_url: &str, crm: CrmKind, tel: TelephonyKind) {
    let h = sim::start(sim_opts(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = only_deal_without_task(tenant_config(&h, crm, tel, db_url, "ru"));
    let cfg = config::parse(&text, None, None).unwrap().config;
    let t = &cfg.tenants[0];
    let store = Store::open(db_url, 4).await.unwrap();
    let tenant = tenant::connect(t, &store).await.unwrap();
    let (deals, contacts, tasks_before, missing) = {
        let w = h.sim.world();
        (
            w.deals.len() as i64,
            w.contacts.len() as i64,
            w.tasks.len(),
            common::open_deals_without_task(&w),
        )
    };
    assert!(
        !missing.is_empty(),
        "the generated world has open deals without a task"
    );

    let first = run_cycle(&store, &tenant, cycle_opts(false)).await;
    assert!(first.ok(), "first cycle failed: {:?}", first.errors);
    let counts = store.counts("demo").await.unwrap();
    assert_eq!(counts["deals"], deals, "every deal mirrored");
    assert_eq!(counts["contacts"], contacts, "every contact mirrored");
    assert!(counts["calls"] > 0, "calls mirrored");
    // Calltouch tracks calls to tracking numbers: inbound only.
    let calls_in_world = h
        .sim
        .world()
        .calls
        .values()
        .filter(|c| tel == TelephonyKind::Comagic || c.direction == dozor::sim::world::Dir::In)
        .count() as i64;
    assert_eq!(
        counts["calls"], calls_in_world,
        "every call of the last 31 days mirrored"
    );

    // The rule created exactly one task per open deal without a next step.
    let done: Vec<_> = first
        .applied
        .iter()
        .filter(|a| a.rule == "deal_without_task" && matches!(a.outcome, Outcome::Done(_)))
        .collect();
    assert_eq!(done.len(), missing.len());
    {
        let w = h.sim.world();
        assert!(
            common::open_deals_without_task(&w).is_empty(),
            "every open deal has a next step now"
        );
        let marked = w
            .tasks
            .values()
            // amoCRM keeps one task text: the marker lands in the title there.
            .filter(|t| {
                format!("{} {}", t.title, t.description)
                    .contains("[dozor:deal_without_task:demo:deal:")
            })
            .count();
        assert_eq!(marked, missing.len(), "each task carries its ledger marker");
    }

    // Repeated cycles write nothing new.
    for _ in 0..2 {
        let again = run_cycle(&store, &tenant, cycle_opts(false)).await;
        assert!(again.ok(), "{:?}", again.errors);
        let writes = again
            .applied
            .iter()
            .filter(|a| a.crm_write && matches!(a.outcome, Outcome::Done(_)))
            .count();
        assert_eq!(writes, 0, "a repeated cycle must not write again");
    }
    assert_eq!(h.sim.world().tasks.len(), tasks_before + missing.len());
    let rows = store.actions_in_state("demo", "done").await.unwrap();
    let tasks_done = rows
        .iter()
        .filter(|r| r.rule == "deal_without_task")
        .count();
    assert_eq!(tasks_done, missing.len());
    store.close().await;
    h.stop().await;
}

async fn dry_run_writes_nothing(db_url: &str, crm: CrmKind) {
    let h = sim::start(sim_opts(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = only_deal_without_task(tenant_config(&h, crm, TelephonyKind::Comagic, db_url, "en"));
    let cfg = config::parse(&text, None, None).unwrap().config;
    let store = Store::open(db_url, 4).await.unwrap();
    let tenant = tenant::connect(&cfg.tenants[0], &store).await.unwrap();
    let before = h.sim.world().tasks.len();
    let s = run_cycle(&store, &tenant, cycle_opts(true)).await;
    assert!(s.ok(), "{:?}", s.errors);
    let shadow = s
        .applied
        .iter()
        .filter(|a| a.outcome == Outcome::Shadow)
        .count();
    assert!(shadow > 0, "shadow mode reports what it would do");
    assert_eq!(
        h.sim.world().tasks.len(),
        before,
        "shadow mode writes nothing to the CRM"
    );
    assert_eq!(
        store
            .actions_in_state("demo", "shadow")
            .await
            .unwrap()
            .len(),
        shadow
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_and_comagic_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    full_cycle(
        &common::sqlite_url(dir.path()),
        CrmKind::Bitrix24,
        TelephonyKind::Comagic,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_and_calltouch_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    full_cycle(
        &common::sqlite_url(dir.path()),
        CrmKind::Amocrm,
        TelephonyKind::Calltouch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_and_calltouch_on_postgres() {
    if common::pg_skipped() {
        return;
    }
    full_cycle(
        &common::pg_url().await,
        CrmKind::Bitrix24,
        TelephonyKind::Calltouch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_and_comagic_on_postgres() {
    if common::pg_skipped() {
        return;
    }
    full_cycle(
        &common::pg_url().await,
        CrmKind::Amocrm,
        TelephonyKind::Comagic,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_on_either_crm() {
    let dir = tempfile::tempdir().unwrap();
    dry_run_writes_nothing(
        &common::sqlite_url(&dir.path().join("b24")),
        CrmKind::Bitrix24,
    )
    .await;
    dry_run_writes_nothing(
        &common::sqlite_url(&dir.path().join("amo")),
        CrmKind::Amocrm,
    )
    .await;
}
