//! Crash safety: `dozor once` killed with SIGKILL at random points, 50 times in a row, then run
//! to completion. Every intended CRM write must exist exactly once: none lost, none doubled.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use dozor::domain::{CrmKind, TelephonyKind};
use dozor::sim::world::Owner;
use dozor::sim::{self, SimOptions, tenant_config::tenant_config};
use rand::{Rng, SeedableRng};

async fn kill_and_restart(crm: CrmKind, trials: usize, seed: u64) {
    let opts = SimOptions {
        seed: 11,
        scale: 1,
        anchor: None,
        enforce_limits: false,
        b24_enterprise: false,
    };
    let h = sim::start(opts, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg_text = tenant_config(
        &h,
        crm,
        TelephonyKind::Comagic,
        &common::sqlite_url(dir.path()),
        "ru",
    );
    if crm == CrmKind::Amocrm {
        // A kill inside the few milliseconds between amoCRM answering a refresh and the new
        // single-use token being stored would break the token chain (re-auth required); that
        // case has its own test in crm_amocrm. Here the CRM writes are what is under test.
        let c = &h.sim.creds;
        cfg_text = cfg_text
            .replace(&format!("client_id = \"{}\"\n", c.amo_client_id), "")
            .replace(
                &format!("client_secret = \"{}\"\n", c.amo_client_secret),
                "",
            )
            .replace(&format!("redirect_uri = \"{}\"\n", c.amo_redirect_uri), "")
            .replace(
                &format!("refresh_token = \"{}\"", c.amo_refresh_token),
                &format!("long_lived_token = \"{}\"", c.amo_long_lived_token),
            );
    }
    let cfg = dir.path().join("dozor.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let cfg = cfg.display().to_string();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut killed = 0;
    for _ in 0..trials {
        let delay = Duration::from_millis(rng.gen_range(0..1200));
        let mut child = Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(["--config", &cfg, "once"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(delay).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
    }
    // Two last runs to completion: the first finishes whatever was left, the second the
    // follow-ups it set in motion (tasks for deals that lead_without_deal created).
    for _ in 0..2 {
        let cfg2 = cfg.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_dozor"))
                .args(["--config", &cfg2, "once"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "final run failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let w = h.sim.world();
    // Every ledger marker and every registered call appears once in the CRM.
    let mut markers: BTreeMap<String, usize> = BTreeMap::new();
    for t in w.tasks.values() {
        let text = format!("{} {}", t.title, t.description);
        for part in text.split("[dozor:").skip(1) {
            *markers
                .entry(part.split(']').next().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for a in w.activities.values() {
        if let Some(x) = &a.external_id {
            *markers.entry(format!("call {x}")).or_default() += 1;
        }
    }
    for l in w
        .leads
        .values()
        .filter(|l| l.title.starts_with("Входящий звонок"))
    {
        *markers.entry(format!("lead {}", l.title)).or_default() += 1;
    }
    let twice: Vec<_> = markers.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written twice: {twice:?}");
    let mut per_deal: BTreeMap<u64, usize> = BTreeMap::new();
    for t in w.tasks.values() {
        if format!("{} {}", t.title, t.description).contains("[dozor:deal_without_task:") {
            let Some((Owner::Deal, id)) = t.binding else {
                panic!("a dozor task without its deal binding: {t:?}");
            };
            *per_deal.entry(id).or_default() += 1;
        }
    }
    let doubled: Vec<_> = per_deal.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "tasks written twice after {killed} kills: {doubled:?}"
    );
    assert!(!per_deal.is_empty(), "the rule did its work");
    // None lost: every open deal has a next step now.
    let now = chrono::Utc::now();
    let open_without = w
        .deals
        .values()
        .filter(|d| {
            w.pipeline(d.pipeline_id)
                .and_then(|p| p.stages.iter().find(|s| s.id == d.stage_id))
                .is_some_and(|s| s.kind == dozor::sim::world::StageKind::Open)
        })
        .filter(|d| {
            !w.tasks.values().any(|t| {
                !t.completed
                    && t.binding == Some((Owner::Deal, d.id))
                    && t.deadline.is_none_or(|x| x >= now)
            })
        })
        .count();
    assert_eq!(open_without, 0, "an intended task was lost");
    eprintln!(
        "{crm:?}: {trials} trials, {killed} killed mid-run, {} tasks, 0 duplicates, 0 lost",
        per_deal.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_50_times_bitrix24() {
    kill_and_restart(CrmKind::Bitrix24, 50, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_50_times_amocrm() {
    kill_and_restart(CrmKind::Amocrm, 50, 2).await;
}

/// amoCRM with OAuth: the access token is invalidated at a random moment of each run (the
/// fake forgets its access tokens, so the client must refresh mid-run), and the run is killed
/// with SIGKILL at another random moment, often around the refresh. After every kill the
/// stored refresh token must be one amoCRM still accepts, and a later run must authenticate
/// without "re-authorisation required"; no write may be doubled.
///
/// One gap no client can close: amoCRM retires the old refresh token when it answers, so a
/// kill after the answer left amoCRM but before the store's commit loses both tokens. The
/// client keeps that gap to reading one small body and one upsert; the test reports it if a
/// kill ever lands there (and re-authorises, as a person would) and allows it at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_around_amocrm_token_rotation() {
    use dozor::sim::{Faults, System};
    use dozor::store::{Store, TokenSet, TokenStore};

    let opts = SimOptions {
        seed: 5,
        scale: 1,
        anchor: None,
        enforce_limits: false,
        b24_enterprise: false,
    };
    let h = sim::start(opts, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db_url = common::sqlite_url(dir.path());
    let cfg_text = common::only_rules(
        tenant_config(&h, CrmKind::Amocrm, TelephonyKind::Comagic, &db_url, "ru"),
        &["deal_without_task"],
    );
    let cfg = dir.path().join("dozor.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let cfg = cfg.display().to_string();
    let stored = || async {
        let store = Store::open(&db_url, 1).await.unwrap();
        let t = store.load_token("demo", "amocrm").await.unwrap();
        store.close().await;
        t
    };
    let chain_ok = |t: &Option<TokenSet>| match t {
        Some(t) => t
            .refresh_token
            .as_ref()
            .is_some_and(|r| h.sim.amo.refresh_token_valid(r.expose())),
        None => h
            .sim
            .amo
            .refresh_token_valid(&h.sim.creds.amo_refresh_token),
    };
    let started = std::time::Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (mut killed, mut lost, mut trials) = (0, 0, 0);
    while trials < 30 && started.elapsed() < Duration::from_secs(25) {
        trials += 1;
        let grants = h.sim.amo.token_grants();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(["--config", &cfg, "once"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        h.sim.set_faults(
            System::Amocrm,
            Faults {
                expire_tokens: true,
                ..Faults::default()
            },
        );
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        h.sim.set_faults(System::Amocrm, Faults::default());
        let t = stored().await;
        if !chain_ok(&t) {
            // Only a refresh answered during this run can have been lost in flight.
            assert!(
                h.sim.amo.token_grants() > grants,
                "trial {trials}: the stored refresh token is refused although no refresh happened"
            );
            lost += 1;
            eprintln!("trial {trials}: killed between amoCRM's token answer and the commit");
            let store = Store::open(&db_url, 1).await.unwrap();
            let grant: serde_json::Value = reqwest::Client::new()
                .post(format!("{}/oauth2/access_token", h.amo_url()))
                .json(&serde_json::json!({
                    "client_id": h.sim.creds.amo_client_id,
                    "client_secret": h.sim.creds.amo_client_secret,
                    "grant_type": "authorization_code",
                    "code": format!("consent-{trials}"),
                    "redirect_uri": h.sim.creds.amo_redirect_uri,
                }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let now = chrono::Utc::now();
            store
                .save_token(
                    "demo",
                    "amocrm",
                    &TokenSet {
                        access_token: dozor::config::Secret::new(
                            grant["access_token"].as_str().unwrap(),
                        ),
                        refresh_token: Some(dozor::config::Secret::new(
                            grant["refresh_token"].as_str().unwrap(),
                        )),
                        expires_at: Some(now + chrono::Duration::hours(1)),
                        refreshed_at: Some(now),
                        extra: serde_json::json!({}),
                    },
                )
                .await
                .unwrap();
            store.close().await;
        }
    }
    assert!(lost <= 1, "{lost} of {trials} kills broke the token chain");
    // A fresh run with an expired access token authenticates with the stored refresh token.
    h.sim.set_faults(
        System::Amocrm,
        Faults {
            expire_tokens: true,
            ..Faults::default()
        },
    );
    let grants = h.sim.amo.token_grants();
    let cfg2 = cfg.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(["--config", &cfg2, "once"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "final run failed: {err}");
    assert!(!err.contains("re-authorisation required"), "{err}");
    assert!(h.sim.amo.token_grants() > grants, "the final run refreshed");
    assert!(chain_ok(&stored().await));
    // Nothing written twice.
    let w = h.sim.world();
    let mut markers: BTreeMap<String, usize> = BTreeMap::new();
    for t in w.tasks.values() {
        let text = format!("{} {}", t.title, t.description);
        for part in text.split("[dozor:").skip(1) {
            *markers
                .entry(part.split(']').next().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let twice: Vec<_> = markers.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written twice: {twice:?}");
    assert!(!markers.is_empty(), "the rule did its work");
    eprintln!(
        "amoCRM OAuth: {trials} trials, {killed} killed mid-run, {} token grants, {lost} lost in flight, {} markers, 0 duplicates",
        h.sim.amo.token_grants(),
        markers.len()
    );
}
