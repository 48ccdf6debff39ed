//! Scale-out: several `dozor run` instances on one PostgreSQL database share the tenants through
//! leases. Each tenant is held by exactly one instance; when an instance dies, its tenants are
//! taken over once its lease expires, and no CRM write is made twice.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tenant_config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor::store::{Lease, Store};
use dozor_sim::SimHandle;

const TTL_SECS: u64 = 3;

/// The `[[tenants]]` block of a simulator's tenant config, renamed to `id`.
fn tenant_block(h: &SimHandle, crm: CrmKind, tel: TelephonyKind, id: &str) -> String {
    let full = common::rules_on(tenant_config(h, crm, tel, "unused", "ru"));
    let mut block = full[full.find("[[tenants]]").unwrap()..]
        .replace("id = \"demo\"", &format!("id = \"{id}\""));
    if crm == CrmKind::Amocrm {
        // A long-lived token: the OAuth refresh chain of one tenant is not what is under test.
        let c = &h.sim.creds;
        for k in [
            format!("client_id = \"{}\"\n", c.amo_client_id),
            format!("client_secret = \"{}\"\n", c.amo_client_secret),
            format!("redirect_uri = \"{}\"\n", c.amo_redirect_uri),
        ] {
            block = block.replace(&k, "");
        }
        block = block.replace(
            &format!("refresh_token = \"{}\"", c.amo_refresh_token),
            &format!("long_lived_token = \"{}\"", c.amo_long_lived_token),
        );
    }
    block
}

fn spawn_instance(cfg: &str, id: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dozor"))
        .args(["--config", cfg, "--log-format", "json", "run"])
        .env("DOZOR__CLUSTER__INSTANCE_ID", id)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn live(leases: &[Lease]) -> Vec<&Lease> {
    let now = chrono::Utc::now();
    leases.iter().filter(|l| l.expires_at > now).collect()
}

/// Waits until `ok` holds for the lease table, or panics after `limit` with what it saw.
async fn wait_leases(store: &Store, limit: Duration, what: &str, ok: impl Fn(&[Lease]) -> bool) {
    let start = Instant::now();
    loop {
        let leases = store.leases().await.unwrap();
        if ok(&leases) {
            return;
        }
        if start.elapsed() > limit {
            panic!("{what} not reached in {limit:?}; leases: {leases:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_tenants_and_take_over_a_dead_one() {
    if common::pg_skipped() {
        eprintln!("DOZOR_SKIP_PG=1: skipping the PostgreSQL scale-out test");
        return;
    }
    let db = common::pg_url().await;
    let sims = [
        (
            common::small_sim(21).await,
            CrmKind::Bitrix24,
            TelephonyKind::Comagic,
        ),
        (
            common::small_sim(22).await,
            CrmKind::Amocrm,
            TelephonyKind::Calltouch,
        ),
        (
            common::small_sim(23).await,
            CrmKind::Bitrix24,
            TelephonyKind::Calltouch,
        ),
    ];
    let ids = ["t1", "t2", "t3"];
    let dir = tempfile::tempdir().unwrap();
    // The install marker of a PostgreSQL database lives in data_dir.
    let mut cfg = format!(
        "data_dir = \"{}\"\n[database]\nurl = \"{db}\"\n[server]\nenabled = false\n[sync]\ninterval_secs = 10\n\
         [cluster]\nlease_ttl_secs = {TTL_SECS}\n\n",
        dir.path().display()
    );
    for ((h, crm, tel), id) in sims.iter().zip(ids) {
        cfg.push_str(&tenant_block(h, *crm, *tel, id));
        cfg.push('\n');
    }
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, cfg).unwrap();
    let path = path.display().to_string();
    let store = Store::open(&db, 2).await.unwrap();

    let mut children: Vec<(String, Child)> = Vec::new();
    for i in 1..=3 {
        let id = format!("i{i}");
        children.push((id.clone(), spawn_instance(&path, &id)));
        // Staggered starts: the first instance takes everything, the later ones get their
        // share handed over.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Every tenant held, by three different instances (one each).
    wait_leases(
        &store,
        Duration::from_secs(90),
        "one tenant per instance",
        |l| {
            let l = live(l);
            let holders: std::collections::BTreeSet<_> =
                l.iter().map(|x| x.holder.as_str()).collect();
            l.len() == 3 && holders.len() == 3
        },
    )
    .await;
    // Let every tenant finish a first cycle (its ledger has done actions).
    let start = Instant::now();
    for id in ids {
        loop {
            let done = store.actions_in_state(id, "done").await.unwrap().len();
            if done > 0 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "tenant {id} never completed an action"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // Kill the holder of t1 outright.
    let victim = live(&store.leases().await.unwrap())
        .into_iter()
        .find(|l| l.tenant == "t1")
        .unwrap()
        .holder
        .clone();
    let before = store.leases().await.unwrap();
    let epoch_before = before.iter().find(|l| l.tenant == "t1").unwrap().epoch;
    let idx = children.iter().position(|(id, _)| *id == victim).unwrap();
    let (_, mut dead) = children.remove(idx);
    dead.kill().unwrap(); // SIGKILL: no release, no goodbye
    dead.wait().unwrap();
    let killed_at = Instant::now();
    let killed_wall = chrono::Utc::now();
    wait_leases(&store, Duration::from_secs(30), "takeover of t1", |l| {
        live(l)
            .iter()
            .any(|x| x.tenant == "t1" && x.holder != victim)
    })
    .await;
    let takeover = killed_at.elapsed();
    let after = store.leases().await.unwrap();
    let t1 = after.iter().find(|l| l.tenant == "t1").unwrap();
    assert!(t1.epoch > epoch_before, "a new holder bumps the epoch");
    // The lease lasts TTL seconds after its last renewal; the others look every TTL/10.
    assert!(
        takeover <= Duration::from_millis(TTL_SECS * 1000 + 1500),
        "t1 taken over after {takeover:?}, TTL is {TTL_SECS} s"
    );
    // No tenant is left with the dead instance, and each is held once.
    wait_leases(
        &store,
        Duration::from_secs(30),
        "all tenants with the living",
        |l| {
            let l = live(l);
            l.len() == 3 && l.iter().all(|x| x.holder != victim)
        },
    )
    .await;
    // The new holder runs t1's cycle: wait for a sync run that started after the kill.
    let start = Instant::now();
    loop {
        let runs = store.last_sync_runs("t1").await.unwrap();
        if runs
            .iter()
            .any(|r| r.started_at >= killed_wall && r.finished_at.is_some())
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the new holder never ran t1: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Stop the rest gracefully: they hand their leases back.
    for (_, c) in &mut children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for (id, c) in &mut children {
        let status = c.wait().unwrap();
        assert!(status.success(), "instance {id} stopped with {status}");
    }
    assert!(
        live(&store.leases().await.unwrap()).is_empty(),
        "leases released on stop"
    );

    for ((h, crm, _), id) in sims.iter().zip(ids) {
        let twice = common::written_twice(&h.sim.world());
        assert!(twice.is_empty(), "{id} ({crm:?}): written twice: {twice:?}");
    }
    eprintln!(
        "3 instances, 3 tenants; {victim} killed; t1 taken over in {takeover:?}; 0 duplicates"
    );
}

/// The lease and the ledger's claim on both backends: a live lease excludes others, an expired
/// one passes on with a new epoch, and an instance that lost its lease cannot claim an action.
async fn lease_semantics(url: &str) {
    let store = Store::open(url, 2).await.unwrap();
    let ttl = Duration::from_millis(400);
    let a = store.clone().with_holder("a");
    let b = store.clone().with_holder("b");
    assert_eq!(a.acquire_lease("t", "a", ttl).await.unwrap(), Some(1));
    assert_eq!(
        b.acquire_lease("t", "b", ttl).await.unwrap(),
        None,
        "held by a"
    );
    assert_eq!(
        a.acquire_lease("t", "a", ttl).await.unwrap(),
        Some(1),
        "renewal keeps the epoch"
    );
    assert_eq!(a.renew_leases("a", ttl).await.unwrap(), 1);

    // An action pending for tenant t.
    let row = dozor::store::ActionRow {
        key: "rule:t:x".into(),
        tenant: "t".into(),
        rule: "rule".into(),
        kind: "comment".into(),
        entity_kind: None,
        entity_id: None,
        payload: serde_json::json!({}),
        state: "intent".into(),
        attempts: 0,
        result: None,
        error: None,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        retry_at: None,
        budget_from: 0,
    };
    let r = a.insert_action(&row).await.unwrap();
    assert!(
        !b.claim_action(&r.key, "t", r.attempts).await.unwrap(),
        "b holds no lease"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    // a's lease expired: b takes it over with a new epoch, and a can no longer claim.
    assert_eq!(b.acquire_lease("t", "b", ttl).await.unwrap(), Some(2));
    assert!(
        !a.claim_action(&r.key, "t", r.attempts).await.unwrap(),
        "a lost its lease"
    );
    assert!(b.claim_action(&r.key, "t", r.attempts).await.unwrap());
    // A second claim with the same view of the row loses: the attempt was counted.
    assert!(!b.claim_action(&r.key, "t", r.attempts).await.unwrap());
    assert_eq!(
        a.renew_leases("a", ttl).await.unwrap(),
        0,
        "nothing left to renew"
    );
    b.release_lease("t", "b").await.unwrap();
    assert_eq!(
        a.acquire_lease("t", "a", ttl).await.unwrap(),
        Some(3),
        "released: free at once"
    );
    // Heartbeats count the live instances.
    assert_eq!(a.heartbeat("a", Duration::from_secs(5)).await.unwrap(), 1);
    assert_eq!(b.heartbeat("b", Duration::from_secs(5)).await.unwrap(), 2);
    b.forget_instance("b").await.unwrap();
    assert_eq!(a.heartbeat("a", Duration::from_secs(5)).await.unwrap(), 1);
}

#[tokio::test]
async fn leases_and_claims_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    lease_semantics(&common::sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn leases_and_claims_on_postgres() {
    if common::pg_skipped() {
        eprintln!("DOZOR_SKIP_PG=1: skipping");
        return;
    }
    lease_semantics(&common::pg_url().await).await;
}
