//! `dozor run` as systemd runs it: serves /healthz, /readyz and /metrics after its first cycle,
//! and stops cleanly (exit 0) on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tenant_config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor_sim::SimOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_health_and_stops_on_sigterm() {
    let opts = SimOptions {
        enforce_limits: false,
        ..SimOptions::default()
    };
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[sync]\ninterval_secs = 10\n{}",
        common::rules_on(tenant_config(
            &h,
            CrmKind::Bitrix24,
            TelephonyKind::Comagic,
            &common::sqlite_url(dir.path()),
            "ru"
        ))
    );
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dozor"))
        .args([
            "--config",
            &path.display().to_string(),
            "--log-format",
            "json",
            "run",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    common::wait_ready(&client, &base).await;
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert!(health.status().is_success());
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("dozor_cycles_total{tenant=\"demo\",ok=\"true\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dozor_last_sync_ok{tenant=\"demo\",source=\"bitrix24\"} 1"),
        "{metrics}"
    );
    // The operational series after one cycle against the simulator.
    let series = |prefix: &str| -> Vec<(String, f64)> {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| {
                let (name, v) = l.rsplit_once(' ')?;
                Some((name.to_string(), v.parse().ok()?))
            })
            .collect()
    };
    let b24 =
        series("dozor_http_requests_total{system=\"bitrix24\",method=\"batch\",status=\"200\"}");
    assert!(b24.len() == 1 && b24[0].1 >= 1.0, "{metrics}");
    assert!(
        !series("dozor_http_requests_total{system=\"comagic\"").is_empty(),
        "{metrics}"
    );
    assert!(
        !series("dozor_http_requests_total{system=\"telegram\"").is_empty(),
        "{metrics}"
    );
    assert!(
        !series("dozor_bitrix24_operating_seconds{tenant=\"demo\",method=").is_empty(),
        "{metrics}"
    );
    // The OpenMetrics encoding leaves out a family with no series yet: no rate-limit wait and
    // no OAuth token in this run (the unit tests of `telemetry` pin those names).
    for name in [
        "dozor_reauth_required",
        "dozor_http_requests",
        "dozor_cycles",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name}\n{metrics}"
        );
    }
    let synced =
        series("dozor_last_successful_sync_timestamp_seconds{tenant=\"demo\",source=\"bitrix24\"}");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        synced.len() == 1 && (now - synced[0].1).abs() < 300.0,
        "{metrics}"
    );
    assert_eq!(
        series("dozor_ledger_pending{tenant=\"demo\"}"),
        vec![("dozor_ledger_pending{tenant=\"demo\"}".to_string(), 0.0)],
        "{metrics}"
    );
    let done: f64 = series("dozor_actions{tenant=\"demo\",rule=")
        .iter()
        .filter(|(n, _)| n.contains("state=\"done\""))
        .map(|(_, v)| v)
        .sum();
    assert!(done >= 1.0, "the rules acted: {metrics}");
    assert!(
        series("dozor_cycle_duration_seconds{tenant=\"demo\"}").len() == 1,
        "{metrics}"
    );
    // Labels name methods, never URLs or secrets.
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert!(!metrics.contains("http://"), "{metrics}");
    assert!(
        !metrics.contains(h.sim.creds.b24_webhook_secret.as_str()),
        "{metrics}"
    );

    let (status, err) = common::terminate(&mut child).await;
    assert!(status.success(), "exit {status:?}\n{err}");
    // JSON logs, one object per line, and no secret in them.
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    assert!(err.contains("dozor stopped"), "{err}");
    // One line at start says which rules write (all here: the config switches them on).
    let modes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("tenant demo: rules on"))
        .collect();
    assert_eq!(modes.len(), 1, "{err}");
    assert!(
        modes[0].contains("deal_without_task")
            && modes[0].contains("in shadow (report what they would do, write nothing): none"),
        "{}",
        modes[0]
    );
    for secret in [
        &h.sim.creds.b24_webhook_secret,
        &h.sim.creds.comagic_access_token,
        &h.sim.creds.telegram_bot_token,
    ] {
        assert!(!err.contains(secret.as_str()), "secret in logs");
    }
    h.stop().await;
}

/// The daily report's time (09:00 Moscow) passed while dozor was stopped: a tenant that has had
/// daily reports before gets the one it missed as soon as the daemon starts, for the period that
/// report would have covered, recorded in the ledger under its usual key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sends_the_daily_report_missed_while_stopped() {
    use chrono::{Duration as Days, Timelike, Utc};
    use dozor::store::Store;

    let h = common::small_sim(41).await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = common::sqlite_url(dir.path());
    let cfg = format!(
        "[server]\nenabled = false\n[sync]\ninterval_secs = 10\n{}",
        common::rules_on(tenant_config(
            &h,
            CrmKind::Bitrix24,
            TelephonyKind::Comagic,
            &db_url,
            "ru"
        ))
    );
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, cfg).unwrap();
    // An earlier daily report, long ago: this tenant gets daily reports.
    let store = Store::open(&db_url, 1).await.unwrap();
    sqlx::query(
        "INSERT INTO actions (key, tenant, rule, kind, payload, state, attempts, created_at, updated_at) \
         VALUES ('report:demo:daily:2026-01-05', 'demo', 'report', 'telegram', '{}', 'done', 1, 0, 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    // The period of the last 09:00 Moscow that has passed.
    let moscow = Utc::now().with_timezone(&chrono_tz::Europe::Moscow);
    let fired = if moscow.hour() >= 9 {
        moscow.date_naive()
    } else {
        moscow.date_naive() - Days::days(1)
    };
    let key = format!("report:demo:daily:{}", fired - Days::days(1));
    let mut child = Command::new(env!("CARGO_BIN_EXE_dozor"))
        .args(["--config", &path.display().to_string(), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut state = None;
    while start.elapsed() < Duration::from_secs(90) {
        state = store.action(&key).await.unwrap().map(|a| a.state);
        if state.as_deref() == Some("done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, stderr) = common::terminate(&mut child).await;
    assert_eq!(state.as_deref(), Some("done"), "{key} not sent: {stderr}");
    assert!(status.success(), "{stderr}");
    let reports = h
        .sim
        .telegram
        .messages()
        .into_iter()
        .filter(|m| m.chat_id == dozor_sim::tenant_config::OWNER_CHAT && m.kind == "message")
        .filter(|m| {
            m.text.as_deref().is_some_and(|t| {
                t.contains(&(fired - Days::days(1)).format("%d.%m.%Y").to_string())
            })
        })
        .count();
    assert_eq!(reports, 1, "the missed report, once");
    store.close().await;
}
