//! Faults a deployment lives through: the CRM down for a while, Telegram down, tokens expiring in
//! the middle of a cycle, slow and malformed responses, a full disk. After each, nothing is lost
//! and nothing is written twice.
//!
//! The defaults keep the suite quick; `scripts/chaos` runs the same tests at full length
//! (`DOZOR_CHAOS_OUTAGE_SECS=600`: a ten-minute CRM outage) together with the SIGKILL trials.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::tenant_config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor_sim::world::{Owner, SimDeal, StageKind, World};
use dozor_sim::{Faults, SimHandle, System};

fn outage_secs() -> u64 {
    std::env::var("DOZOR_CHAOS_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// Writes the simulator's tenant config (plus `extra` at the top) into `dir`.
fn write_config(h: &SimHandle, crm: CrmKind, dir: &Path, db: &str, extra: &str) -> String {
    let cfg = format!(
        "{extra}\n{}",
        common::rules_on(tenant_config(h, crm, TelephonyKind::Comagic, db, "ru"))
    );
    let path = dir.join("dozor.toml");
    std::fs::write(&path, cfg).unwrap();
    path.display().to_string()
}

/// Runs follow each other within seconds here: a failed action is tried again by the next run,
/// not after the minute the ledger waits by default.
const RETRY_AT_ONCE: &str = "[ledger]\nretry_first_secs = 1\nretry_max_secs = 1\n";

/// A small simulator and a SQLite-backed config for it in a fresh directory.
async fn setup(seed: u64, crm: CrmKind) -> (SimHandle, tempfile::TempDir, String) {
    let h = common::small_sim(seed).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        &h,
        crm,
        dir.path(),
        &common::sqlite_url(dir.path()),
        RETRY_AT_ONCE,
    );
    (h, dir, cfg)
}

async fn once(cfg: &str) -> Output {
    let cfg = cfg.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(["--config", &cfg, "once"])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A new open deal with no task, added to the CRM while dozor is not looking.
fn add_deal(w: &mut World, title: &str) -> u64 {
    let template = w
        .deals
        .values()
        .find(|d| {
            w.stage_of_kind(d.pipeline_id, StageKind::Open)
                .is_some_and(|s| s.id == d.stage_id)
        })
        .cloned()
        .expect("the generated world has an open deal");
    let id = w.next_id();
    let now = chrono::Utc::now();
    w.deals.insert(
        id,
        SimDeal {
            id,
            title: title.into(),
            tags: Vec::new(),
            loss_reason: None,
            created_at: now,
            updated_at: now,
            closed_at: None,
            lead_id: None,
            ..template
        },
    );
    id
}

fn set_down(h: &SimHandle, system: System, down: bool) {
    let mut f = h.sim.faults(system);
    f.down = down;
    h.sim.set_faults(system, f);
}

fn spawn_daemon(cfg: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dozor"))
        .args(["--config", cfg, "--log-format", "json", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn assert_clean(h: &SimHandle, what: &str) {
    let w = h.sim.world();
    let twice = common::written_twice(&w);
    assert!(twice.is_empty(), "{what}: written twice: {twice:?}");
    let lost = common::open_deals_without_task(&w);
    assert!(
        lost.is_empty(),
        "{what}: open deals left without a next step: {lost:?}"
    );
}

/// The daemon keeps running through a CRM outage; new work that piled up meanwhile is done once
/// the CRM is back, and nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_outage_then_back() {
    for crm in [CrmKind::Bitrix24, CrmKind::Amocrm] {
        let h = common::small_sim(31).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(
            &h,
            crm,
            dir.path(),
            &common::sqlite_url(dir.path()),
            "[server]\nenabled = false\n[sync]\ninterval_secs = 10\n",
        );
        let mut daemon = spawn_daemon(&cfg);
        common::wait_for(Duration::from_secs(90), "first cycle's work", || {
            common::open_deals_without_task(&h.sim.world()).is_empty()
        })
        .await;
        let system = match crm {
            CrmKind::Bitrix24 => System::Bitrix24,
            CrmKind::Amocrm => System::Amocrm,
        };
        set_down(&h, system, true);
        let outage = Duration::from_secs(outage_secs());
        // Work arrives while the CRM API is down (the CRM's own UI keeps working).
        let deal = add_deal(&mut h.sim.world(), "Заказ во время сбоя");
        tokio::time::sleep(outage).await;
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon died during the outage"
        );
        set_down(&h, system, false);
        let caught_up =
            common::wait_for(Duration::from_secs(90), "backlog after the outage", || {
                let w = h.sim.world();
                w.tasks
                    .values()
                    .any(|t| t.binding == Some((Owner::Deal, deal)) && !t.completed)
            })
            .await;
        // Leads that aged past the lead-without-deal threshold during a long outage get their
        // deals in the first cycle after it, and those deals their tasks in the next one.
        common::wait_for(
            Duration::from_secs(60),
            "follow-ups after the outage",
            || common::open_deals_without_task(&h.sim.world()).is_empty(),
        )
        .await;
        assert_clean(&h, &format!("{crm:?} outage"));
        let _ = Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status();
        assert!(daemon.wait().unwrap().success());
        eprintln!(
            "{crm:?}: CRM down {outage:?}, daemon survived, backlog done {caught_up:?} after recovery, 0 duplicates, 0 lost"
        );
    }
}

/// Telegram down: messages wait in the ledger and are delivered once it is back, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_down_then_back() {
    let (h, dir, cfg) = setup(32, CrmKind::Bitrix24).await;
    set_down(&h, System::Telegram, true);
    let o = once(&cfg).await;
    assert!(
        h.sim.telegram.messages().is_empty(),
        "nothing can be delivered while Telegram is down"
    );
    let store = dozor::store::Store::open(&common::sqlite_url(dir.path()), 1)
        .await
        .unwrap();
    let pending: Vec<_> = store
        .actions_in_state("demo", "intent")
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == "telegram")
        .collect();
    assert!(
        !pending.is_empty(),
        "messages wait in the ledger: {}",
        text(&o)
    );
    set_down(&h, System::Telegram, false);
    for _ in 0..3 {
        let o = once(&cfg).await;
        assert!(o.status.success(), "{}", text(&o));
    }
    let delivered = h.sim.telegram.messages().len();
    let doubles = common::telegram_doubles(&h.sim);
    assert!(doubles.is_empty(), "sent twice: {doubles:?}");
    let still: Vec<String> = store
        .actions_in_state("demo", "intent")
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == "telegram")
        .map(|a| a.key)
        .collect();
    assert!(still.is_empty(), "messages never delivered: {still:?}");
    assert_clean(&h, "telegram outage");
    eprintln!(
        "Telegram down for one run: {} messages held, {delivered} delivered after, 0 twice",
        pending.len()
    );
}

/// Access tokens revoked in the middle of a cycle (amoCRM OAuth, Bitrix24 webhook unaffected):
/// the client refreshes, persists the new pair and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_mid_cycle() {
    let (h, _dir, cfg) = setup(33, CrmKind::Amocrm).await;
    let sim = h.sim.clone();
    // Revoke every issued token a few times while the run is under way.
    let revoker = tokio::spawn(async move {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let mut f = sim.faults(System::Amocrm);
            f.expire_tokens = true;
            sim.set_faults(System::Amocrm, f);
        }
    });
    let o = once(&cfg).await;
    revoker.await.unwrap();
    assert!(o.status.success(), "run with rotating tokens: {}", text(&o));
    let o = once(&cfg).await;
    assert!(o.status.success(), "next run: {}", text(&o));
    assert!(
        !text(&o).contains("re-auth"),
        "the token chain survived: {}",
        text(&o)
    );
    assert_clean(&h, "token rotation");
}

/// Slow responses (1.5 s each) and a burst of malformed bodies: runs finish or stop cleanly with
/// an error naming the method, and the next run completes the work once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_malformed_responses() {
    let (h, _dir, cfg) = setup(34, CrmKind::Bitrix24).await;
    h.sim.set_faults(
        System::Bitrix24,
        Faults {
            latency_ms: 1500,
            malformed_json: 3,
            ..Faults::default()
        },
    );
    let o = once(&cfg).await;
    let out = text(&o);
    assert!(!out.contains("panicked"), "{out}");
    if !o.status.success() {
        assert!(
            out.contains("bitrix24") || out.contains("Bitrix24"),
            "the error names the system: {out}"
        );
    }
    h.sim.set_faults(System::Bitrix24, Faults::default());
    for _ in 0..2 {
        let o = once(&cfg).await;
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_clean(&h, "slow and malformed");
}

/// Answers that never end (a runaway proxy streaming padding after a JSON opening) from the CRM
/// and the telephony: each is cut off at the body limit with an error naming the system, the
/// method and the size, the run's memory stays bounded, and once the answers are normal again
/// the work is done, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_answers_are_refused() {
    for (crm, system) in [
        (CrmKind::Bitrix24, System::Bitrix24),
        (CrmKind::Amocrm, System::Amocrm),
    ] {
        let (h, _dir, cfg) = setup(35, crm).await;
        for s in [system, System::Comagic] {
            h.sim.set_faults(
                s,
                Faults {
                    oversized: 1000,
                    ..Faults::default()
                },
            );
        }
        let child = Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(["--config", &cfg, "once"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Peak resident memory, read while it runs (VmHWM is the high-water mark so far).
        let pid = child.id();
        let watcher = common::watch_peak_rss(pid);
        let o = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        let peak_mib = watcher.join().unwrap() / 1024;
        let out = text(&o);
        assert!(!out.contains("panicked"), "{out}");
        assert!(
            !o.status.success(),
            "a run that read nothing must not pass: {out}"
        );
        let crm_name = format!("{system:?}").to_lowercase();
        for name in [crm_name.as_str(), "comagic"] {
            assert!(
                out.lines()
                    .any(|l| l.contains(name) && l.contains("larger than the 32 MiB limit")),
                "no size error naming {name}: {out}"
            );
        }
        assert!(
            !out.contains(&h.sim.creds.b24_webhook_secret)
                && !out.contains(&h.sim.creds.comagic_access_token),
            "a secret in the output: {out}"
        );
        assert!(peak_mib < 200, "{crm:?}: peak RSS {peak_mib} MiB");
        for s in [system, System::Comagic] {
            h.sim.set_faults(s, Faults::default());
        }
        for _ in 0..2 {
            let o = once(&cfg).await;
            assert!(o.status.success(), "{}", text(&o));
        }
        assert_clean(&h, &format!("{crm:?} oversized"));
        eprintln!(
            "{crm:?}: endless answers refused at 32 MiB, peak RSS {peak_mib} MiB, work done after"
        );
    }
}

/// A full disk under the SQLite database gives a clear error, not a panic or a silent loss;
/// with space again the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_sqlite() {
    let mnt = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("cannot mount a small tmpfs here (not root?): skipping the disk-full test");
        return;
    }
    let h = common::small_sim(35).await;
    let cfgdir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/dozor.db", mnt.path().display());
    let cfg = write_config(&h, CrmKind::Bitrix24, cfgdir.path(), &db, "");
    let o = once(&cfg).await;
    let out = text(&o);
    // Room again: the same file system grows, the same database carries on.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    assert!(!o.status.success(), "a full disk is a failure: {out}");
    assert!(!out.contains("panicked"), "{out}");
    assert!(
        out.contains("disk holding the database is full"),
        "the error says the disk is full: {out}"
    );
    assert!(grown, "cannot grow the tmpfs");
    for _ in 0..2 {
        let o = once(&cfg).await;
        assert!(o.status.success(), "{}", text(&o));
    }
    let _ = Command::new("umount").arg(mnt.path()).status();
    assert_clean(&h, "disk full");
}
