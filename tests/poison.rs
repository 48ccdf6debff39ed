//! The daemon meets poison and stays up: a CoMagic notification carrying `1e16` seconds of
//! talk (the push that once crash-looped dozor) is refused naming its field; the same value
//! served by the CoMagic API is refused with a warning naming system, call and field; an
//! action that keeps failing (Telegram down) is parked as `dead`, shown by
//! `dozor audit --state dead`, reported once to the ops chat when Telegram is back, and sent by
//! `dozor retry KEY`. /healthz answers throughout. The real binary against the simulator.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Daemon, tenant_config};
use dozor::domain::{CrmKind, TelephonyKind};
use dozor_sim::tenant_config::{HEAD_OF_SALES_CHAT, OWNER_CHAT};
use dozor_sim::{Faults, System};
use serde_json::{Value, json};

const COMAGIC_SECRET: &str = "comagic-hook-secret-0123456789";
const POISON_CALL: u64 = 880_001;

fn dozor(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dozor"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Keys `dozor audit --state dead` lists.
fn dead_keys(config: &Path) -> Vec<String> {
    let (_, out, _) = dozor(config, &["audit", "--state", "dead"]);
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("key: "))
        .map(str::to_string)
        .collect()
}

fn messages_with(h: &dozor_sim::SimHandle, chat: i64, text: &str) -> usize {
    h.sim
        .telegram
        .messages()
        .iter()
        .filter(|m| m.chat_id == chat)
        .filter(|m| m.text.as_deref().is_some_and(|t| t.contains(text)))
        .count()
}

/// SIGTERM, then wait for a clean exit.
async fn stop(d: &mut Daemon) {
    let pid = d.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = d.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "no stop within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_refused_and_a_dead_action_is_parked_reported_once_and_retried() {
    let h = common::small_sim(5).await;
    h.sim.set_faults(
        System::Telegram,
        Faults {
            down: true,
            ..Faults::default()
        },
    );
    // The CoMagic API itself serves a call lasting 1e16 seconds.
    let local_now = Utc::now()
        .with_timezone(&chrono_tz::Europe::Moscow)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    h.sim.comagic.set_extra_call_rows(vec![json!({
        "id": POISON_CALL,
        "start_time": local_now,
        "direction": "in",
        "is_lost": false,
        "talk_duration": 1e16,
        "wait_duration": 3,
        "contact_phone_number": "79990001122",
    })]);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let tenant = tenant_config(
        &h,
        CrmKind::Bitrix24,
        TelephonyKind::Comagic,
        &common::sqlite_url(dir.path()),
        "ru",
    );
    let mut cfg = common::only_rules(
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[sync]\ninterval_secs = 10\n{tenant}"),
        &["overdue_tasks"],
    );
    cfg.push_str(&format!(
        "\n[tenants.webhooks]\ncomagic_secret = \"{COMAGIC_SECRET}\"\n\
         [ledger]\nmax_attempts = 1\nretry_first_secs = 1\nretry_max_secs = 1\n"
    ));
    let config = dir.path().join("dozor.toml");
    std::fs::write(&config, cfg).unwrap();
    let log_path = dir.path().join("daemon.log");
    let start = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        Daemon(
            Command::new(env!("CARGO_BIN_EXE_dozor"))
                .arg("--config")
                .arg(&config)
                .args(["--log-format", "json", "run"])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        )
    };
    let mut daemon = start();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let alive = |d: &mut Daemon| d.0.try_wait().unwrap().is_none();

    // The notification with the poison value is refused at the door, naming the field.
    let hook = format!("{base}/hooks/comagic/demo/{COMAGIC_SECRET}");
    let push = |talk: Value| {
        json!({
            "notification_mnemonic": "call_end",
            "call_session_id": POISON_CALL,
            "direction": "in",
            "start_time": local_now,
            "contact_phone_number": "79990001122",
            "talk_time_duration": talk,
            "total_time_duration": 60,
        })
    };
    let until = Instant::now() + Duration::from_secs(60);
    let r = loop {
        if let Ok(r) = client.post(&hook).json(&push(json!("1e16"))).send().await {
            break r;
        }
        assert!(Instant::now() < until, "the server never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("talk_time_duration"),
        "{body}"
    );
    // A plausible notification of the same call: the API's answer is what counts, and it
    // is refused too.
    let r = client
        .post(&hook)
        .json(&push(json!(60)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Telegram is down: the head of sales' digest fails and, with one attempt allowed, dies.
    let until = Instant::now() + Duration::from_secs(90);
    let dead = loop {
        let keys = dead_keys(&config);
        if let Some(k) = keys.iter().find(|k| k.starts_with("overdue_tasks:")) {
            break k.clone();
        }
        assert!(alive(&mut daemon), "the daemon died");
        assert!(Instant::now() < until, "no action was parked as dead");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(alive(&mut daemon));

    // Telegram is back and dozor restarted (its Telegram client forgets the outage): the
    // ops chat (the owner chat here) hears about the dead action once.
    stop(&mut daemon).await;
    h.sim.set_faults(System::Telegram, Faults::default());
    let mut daemon = start();
    let until = Instant::now() + Duration::from_secs(60);
    while messages_with(&h, OWNER_CHAT, "перестал повторять") == 0 {
        assert!(alive(&mut daemon), "the daemon died");
        if Instant::now() > until {
            let (_, audit, _) = dozor(&config, &["audit", "--limit", "40"]);
            let logs = std::fs::read_to_string(&log_path).unwrap();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            panic!(
                "no ops message about the dead action\n{audit}\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        messages_with(&h, OWNER_CHAT, &dead) >= 1,
        "the message names the key"
    );
    // Another cycle (the interval is 10 s) neither repeats the report nor the digest.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(messages_with(&h, OWNER_CHAT, "перестал повторять"), 1);
    let digests_before = h
        .sim
        .telegram
        .messages()
        .iter()
        .filter(|m| m.chat_id == HEAD_OF_SALES_CHAT)
        .count();

    // Ops retry it by hand: the digest goes out, once.
    let (ok, out, err) = dozor(&config, &["retry", &dead]);
    assert!(ok, "retry failed: {out}{err}");
    assert!(out.starts_with("done"), "{out}");
    let digests_after = h
        .sim
        .telegram
        .messages()
        .iter()
        .filter(|m| m.chat_id == HEAD_OF_SALES_CHAT)
        .count();
    assert_eq!(digests_after, digests_before + 1);
    let (ok, _, err) = dozor(&config, &["retry", &dead]);
    assert!(!ok && err.contains("not dead or failed"), "{err}");
    assert!(!dead_keys(&config).contains(&dead));

    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(alive(&mut daemon));
    stop(&mut daemon).await;
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains(&POISON_CALL.to_string())
            && logs.contains("talk_duration is not a duration of 0 s to 1 day"),
        "the refused API row is not named in the log"
    );
    assert!(!logs.contains("panicked"), "a panic in the log");
    assert!(
        !logs.contains(COMAGIC_SECRET),
        "the webhook secret is in the log"
    );
    h.stop().await;
}
