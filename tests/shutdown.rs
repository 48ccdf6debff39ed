//! `dozor run` stopped by SIGTERM in the middle of a cycle, as systemd stops it: it exits 0
//! within 10 s whether the cycle is syncing or applying actions, keeps its tenant lease to the
//! end (no "action claimed elsewhere"), and the next start resumes where it stopped without
//! writing anything twice.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tenant_config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor_sim::{Faults, SimHandle, SimOptions, System};

/// The stop time the daemon must keep (the unit allows 20 s).
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// A config for the simulator behind `h`, every rule in `mode` (whatever the built-in defaults),
/// a 10 s polling interval and no HTTP server.
fn config(h: &SimHandle, dir: &Path, db: &str, mode: &str) -> PathBuf {
    // A long-lived token: two data dirs share the fake's account, and an OAuth refresh in one
    // would retire the refresh token the other holds.
    let tenant = tenant_config(h, CrmKind::Amocrm, TelephonyKind::Comagic, db, "ru").replace(
        "kind = \"amocrm\"\n",
        &format!(
            "kind = \"amocrm\"\nlong_lived_token = \"{}\"\n",
            h.sim.creds.amo_long_lived_token
        ),
    );
    let mut cfg = format!(
        "data_dir = \"{}\"\n[server]\nenabled = false\n[sync]\ninterval_secs = 10\n{tenant}",
        dir.display(),
    );
    for rule in dozor::config::RulesConfig::NAMES {
        cfg.push_str(&format!("\n[tenants.rules.{rule}]\nmode = \"{mode}\"\n"));
    }
    let path = dir.join("dozor.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Starts `dozor run` (or the given command) with its JSON log in `log`: a file, not a pipe,
/// so a chatty run cannot block on a full pipe while the test is not reading it.
fn spawn(config: &Path, log: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dozor"))
        .args([
            "--config",
            &config.display().to_string(),
            "--log-format",
            "json",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Sends SIGTERM and waits for the exit; returns the status and how long the stop took.
async fn sigterm(child: &mut Child) -> (std::process::ExitStatus, Duration) {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let at = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, at.elapsed());
        }
        if at.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("still running 60 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Records the first cycle in `log` saved to the mirror (its "cycle finished" line).
fn synced_items(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "cycle finished")
        .and_then(|v| v["items"].as_u64())
        .unwrap_or_else(|| panic!("no cycle finished line:\n{log}"))
}

/// amoCRM requests that read CRM lists (sync pages and lookups), by the fake's count.
fn list_reads(h: &SimHandle) -> u64 {
    h.sim
        .stats()
        .get(&System::Amocrm)
        .map(|s| {
            s.by_method
                .iter()
                .filter(|(m, _)| m.starts_with("GET /api/v4/") && !m.contains("{id}"))
                .map(|(_, n)| n)
                .sum()
        })
        .unwrap_or(0)
}

/// amoCRM requests that write (tasks, leads, notes, deals...).
fn writes(h: &SimHandle) -> u64 {
    h.sim
        .stats()
        .get(&System::Amocrm)
        .map(|s| {
            s.by_method
                .iter()
                .filter(|(m, _)| !m.starts_with("GET ") && !m.contains("oauth"))
                .map(|(_, n)| n)
                .sum()
        })
        .unwrap_or(0)
}

/// Runs `dozor run` until its first cycle has finished, then stops it; returns its log.
async fn run_one_cycle(cfg: &Path, log: &Path) -> String {
    let mut child = spawn(cfg, log, &["run"]);
    common::wait_for(Duration::from_secs(120), "the cycle finishes", || {
        read(log).contains("cycle finished")
    })
    .await;
    let (status, _) = sigterm(&mut child).await;
    let text = read(log);
    assert!(status.success(), "exit {status:?}\n{text}");
    text
}

fn assert_clean_stop(text: &str) {
    assert!(text.contains("dozor stopped"), "{text}");
    assert!(
        !text.contains("claimed elsewhere"),
        "the lease was lost while the cycle stopped:\n{text}"
    );
}

/// SIGTERM while the first sync is reading pages: exit 0 within 10 s, the pages read so far
/// saved; the next start reads only what was not saved (fewer records than a full first sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_first_sync_stops_within_10_s_and_the_next_start_resumes() {
    // Scale 4: about 30 list pages, enough to stop after the probe and in the middle of a pass.
    let opts = SimOptions {
        seed: 17,
        scale: 4,
        ..SimOptions::default()
    };
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();

    // What a complete first sync reads, in a data dir of its own, rules off (nothing written).
    let full_dir = dir.path().join("full");
    std::fs::create_dir(&full_dir).unwrap();
    let full_cfg = config(&h, &full_dir, &common::sqlite_url(&full_dir), "off");
    let full_log = run_one_cycle(&full_cfg, &full_dir.join("run.log")).await;
    let full = list_reads(&h);
    assert!(
        full >= 20,
        "the world is too small to stop mid-sync: {full} pages"
    );
    let full_items = synced_items(&full_log);
    h.sim.reset_stats();

    // Slow pages, so the first sync is well under way, and far from done, when the signal comes.
    h.sim.set_faults(
        System::Amocrm,
        Faults {
            latency_ms: 400,
            ..Faults::default()
        },
    );
    let cfg = config(&h, dir.path(), &common::sqlite_url(dir.path()), "on");
    let log = dir.path().join("run1.log");
    let mut child = spawn(&cfg, &log, &["run"]);
    // Past the probe (users, pipelines, the first page of each kind), inside the passes.
    common::wait_for(
        Duration::from_secs(60),
        "the first sync reads pages",
        || list_reads(&h) >= full / 2,
    )
    .await;
    let (status, took) = sigterm(&mut child).await;
    let text = read(&log);
    assert!(status.success(), "exit {status:?}\n{text}");
    assert!(took < STOP_WITHIN, "stopped after {took:?}\n{text}");
    assert_clean_stop(&text);
    let first = list_reads(&h);
    assert!(
        first < full,
        "the first run read everything ({first} of {full}): nothing was interrupted"
    );
    assert!(
        text.contains("CRM sync stopped; it resumes from the saved cursors"),
        "the sync did not stop at a page boundary:\n{text}"
    );
    assert_eq!(writes(&h), 0, "no rule ran before the sync finished");
    eprintln!("sync phase: stopped {took:?} after SIGTERM, {first} of {full} list pages read");

    // The next start resumes from the saved cursors (rules off: this is about the sync; the
    // rule phase has its own test below).
    h.sim.set_faults(System::Amocrm, Faults::default());
    let cfg = config(&h, dir.path(), &common::sqlite_url(dir.path()), "off");
    let text = run_one_cycle(&cfg, &dir.path().join("run2.log")).await;
    assert_clean_stop(&text);
    // The records saved before the stop are not read again (beyond the usual overlap).
    let second = synced_items(&text);
    assert!(
        second < full_items,
        "the second start read {second} records, a full first sync reads {full_items}"
    );
    eprintln!("resumed: {second} records read (full first sync: {full_items})");
    h.stop().await;
}

/// SIGTERM while the rules' actions are being written to a slow CRM: exit 0 within 10 s, no
/// "action claimed elsewhere", and the next start finishes the work without a double write or
/// a double message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_rule_phase_stops_within_10_s_without_losing_the_lease() {
    let opts = SimOptions {
        seed: 23,
        ..SimOptions::default()
    };
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&h, dir.path(), &common::sqlite_url(dir.path()), "on");
    let log = dir.path().join("run1.log");
    let mut child = spawn(&cfg, &log, &["run"]);
    common::wait_for(Duration::from_secs(120), "the rules start writing", || {
        writes(&h) > 0
    })
    .await;
    // Every write and message now takes 3 s: the phase would run for minutes.
    let slow = Faults {
        latency_ms: 3000,
        ..Faults::default()
    };
    h.sim.set_faults(System::Amocrm, slow.clone());
    h.sim.set_faults(System::Telegram, slow);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, took) = sigterm(&mut child).await;
    let text = read(&log);
    assert!(status.success(), "exit {status:?}\n{text}");
    assert!(took < STOP_WITHIN, "stopped after {took:?}\n{text}");
    assert_clean_stop(&text);
    assert!(
        text.contains("\"stopped\":true"),
        "the cycle was not interrupted by the signal:\n{text}"
    );
    eprintln!("rule phase: stopped {took:?} after SIGTERM");

    h.sim.set_faults(System::Amocrm, Faults::default());
    h.sim.set_faults(System::Telegram, Faults::default());
    let text = run_one_cycle(&cfg, &dir.path().join("run2.log")).await;
    assert_clean_stop(&text);
    let twice = common::written_twice(&h.sim.world());
    assert!(twice.is_empty(), "written twice: {twice:?}");
    let doubles = common::telegram_doubles(&h.sim);
    assert!(doubles.is_empty(), "sent twice: {doubles:?}");
    h.stop().await;
}
