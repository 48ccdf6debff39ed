//! The `dozor` binary as an operator runs it: bad configs, `demo`, `check`, `once --dry-run`,
//! `report`, against the simulator over loopback HTTP.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::tenant_config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor_sim::SimOptions;

fn dozor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dozor"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run dozor")
}

async fn dozor_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        dozor(&refs)
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[test]
fn bad_config_names_file_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "bad.toml",
        "[[tenants]]\nid = \"acme\"\n[tenants.crm]\nkind = \"bitrix24\"\nwebhook_url = \"https://a.bitrix24.ru/rest/1/s/\"\nwebhok = 1\n",
    );
    let out = dozor(&["--config", &cfg, "check"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("webhok"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let cfg = write(
        dir.path(),
        "tz.toml",
        "[[tenants]]\nid = \"acme\"\ntimezone = \"Mars/Olympus\"\n[tenants.crm]\nkind = \"bitrix24\"\nwebhook_url = \"https://a.bitrix24.ru/rest/1/s/\"\n",
    );
    let out = dozor(&["--config", &cfg, "once"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tenants[0].timezone") && err.contains("tz.toml"),
        "{err}"
    );

    let cfg = write(dir.path(), "syntax.toml", "[[tenants]\nid = 1\n");
    let out = dozor(&["--config", &cfg, "check"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid TOML") && err.contains("line 1"),
        "{err}"
    );

    let out = dozor(&["--config", "/nonexistent/dozor.toml", "check"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/nonexistent/dozor.toml") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn every_command_has_help() {
    for cmd in [
        "run", "once", "check", "report", "demo", "sim", "audit", "backup",
    ] {
        let out = dozor(&[cmd, "--help"]);
        let (o, _) = text(&out);
        assert!(out.status.success(), "{cmd} --help");
        assert!(o.contains("Usage: dozor"), "{cmd}: {o}");
    }
}

#[test]
fn demo_prints_actions_and_the_report_in_russian() {
    let out = dozor(&["demo"]);
    let (o, e) = text(&out);
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    assert!(o.contains("deal_without_task"), "{o}");
    assert!(o.contains("Ежедневный отчёт"), "{o}");
    assert!(o.contains("дублей в CRM — 0"), "no write landed twice: {o}");
    assert!(o.contains("Отчёт отправлен"), "{o}");
}

#[test]
fn demo_switches_crm_telephony_and_language() {
    let out = dozor(&[
        "demo",
        "--crm",
        "amocrm",
        "--telephony",
        "calltouch",
        "--lang",
        "en",
        "--seed",
        "3",
    ]);
    let (o, e) = text(&out);
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    assert!(o.contains("CRM: amocrm"), "{o}");
    assert!(o.contains("calltouch"), "{o}");
    assert!(o.contains("Daily report"), "{o}");
    assert!(o.contains("duplicates in the CRM — 0"), "{o}");
}

/// A bad `DOZOR__*` override and a tenant without id: exit 2, and the message says where to look
/// (the variable; the tenant by position and name) instead of a misleading line of the file.
#[test]
fn environment_and_tenant_errors_exit_2_and_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[[tenants]]\nid = \"acme\"\n[tenants.crm]\nkind = \"bitrix24\"\n\
                webhook_url = \"https://a.bitrix24.ru/rest/1/s/\"\n[sync]\ninterval_secs = 300\n";
    let cfg = write(dir.path(), "good.toml", good);
    let out = Command::new(env!("CARGO_BIN_EXE_dozor"))
        .args(["--config", &cfg, "check"])
        .env("DOZOR__SYNC__INTERVAL_SECS", "5")
        .output()
        .unwrap();
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("environment variable DOZOR__SYNC__INTERVAL_SECS (key `sync.interval_secs`)"),
        "{e}"
    );
    assert!(!e.contains("line"), "the file's line is not to blame: {e}");

    let cfg = write(
        dir.path(),
        "noid.toml",
        &good.replace("id = \"acme\"\n", "name = \"Acme\"\n"),
    );
    let out = dozor(&["--config", &cfg, "check"]);
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("noid.toml, key `tenants[0].id` (line 1)"), "{e}");
    assert!(e.contains("tenant #1 (name \"Acme\") has no `id`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_system_and_names_the_failing_one() {
    let h = common::start_sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let good = write(
        dir.path(),
        "good.toml",
        &tenant_config(&h, CrmKind::Bitrix24, TelephonyKind::Comagic, &db, "ru"),
    );
    let out = dozor_async(vec!["--config".into(), good.clone(), "check".into()]).await;
    let (o, e) = text(&out);
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    for system in ["database", "bitrix24", "comagic", "telegram"] {
        let line = o
            .lines()
            .find(|l| l.contains(system))
            .unwrap_or_else(|| panic!("no {system} row:\n{o}"));
        assert!(line.contains(" OK "), "{system} not OK:\n{o}");
    }

    // A wrong webhook secret: bitrix24 fails with a hint, the others stay OK, no secret printed.
    let secret = h.sim.creds.b24_webhook_secret.clone();
    let bad_text = std::fs::read_to_string(&good)
        .unwrap()
        .replace(&secret, "wrongsecret123");
    let bad = write(dir.path(), "bad.toml", &bad_text);
    let out = dozor_async(vec!["--config".into(), bad, "check".into()]).await;
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{o}\nstderr:\n{e}");
    let b24 = o.lines().find(|l| l.contains("bitrix24")).unwrap();
    assert!(b24.contains("FAIL") && b24.contains("webhook"), "{o}");
    assert!(
        !o.contains("wrongsecret123") && !e.contains("wrongsecret123"),
        "secret leaked:\n{o}\n{e}"
    );
    let comagic = o.lines().find(|l| l.contains("comagic")).unwrap();
    assert!(comagic.contains(" OK "), "{o}");

    // amoCRM + Calltouch with a wrong Calltouch id.
    let amo = tenant_config(
        &h,
        CrmKind::Amocrm,
        TelephonyKind::Calltouch,
        &common::sqlite_url(&dir.path().join("amo")),
        "en",
    )
    .replace(&h.sim.creds.calltouch_client_api_id, "nope-api-id");
    let amo = write(dir.path(), "amo.toml", &amo);
    let out = dozor_async(vec!["--config".into(), amo, "check".into()]).await;
    let (o, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}");
    assert!(
        o.lines()
            .find(|l| l.contains("amocrm"))
            .unwrap()
            .contains(" OK "),
        "{o}"
    );
    assert!(
        o.lines()
            .find(|l| l.contains("calltouch"))
            .unwrap()
            .contains("FAIL"),
        "{o}"
    );
    assert!(!o.contains("nope-api-id"), "{o}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_dry_run_then_report_and_audit() {
    let h = common::start_sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let cfg = write(
        dir.path(),
        "d.toml",
        &common::rules_on(tenant_config(
            &h,
            CrmKind::Bitrix24,
            TelephonyKind::Comagic,
            &db,
            "ru",
        )),
    );
    let tasks_before = h.sim.world().tasks.len();
    let out = dozor_async(vec![
        "--config".into(),
        cfg.clone(),
        "once".into(),
        "--dry-run".into(),
    ])
    .await;
    let (o, e) = text(&out);
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    assert!(
        o.contains("deal_without_task") && o.contains("would do"),
        "{o}"
    );
    assert_eq!(
        h.sim.world().tasks.len(),
        tasks_before,
        "dry run wrote to the CRM"
    );

    let json = dir.path().join("r.json").display().to_string();
    let out = dozor_async(vec![
        "--config".into(),
        cfg.clone(),
        "report".into(),
        "daily".into(),
        "--format".into(),
        "json".into(),
        "--out".into(),
        json.clone(),
    ])
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["kind"], "daily");
    assert!(v["html"].as_str().unwrap().contains("Ежедневный отчёт"));

    let out = dozor_async(vec![
        "--config".into(),
        cfg,
        "audit".into(),
        "--json".into(),
    ])
    .await;
    let (o, _) = text(&out);
    assert!(out.status.success());
    let shadow = o
        .lines()
        .filter(|l| l.contains("\"state\":\"shadow\""))
        .count();
    assert!(shadow > 0, "{o}");
    h.stop().await;
}

/// Runs dozor with extra environment variables (RUST_LOG) and returns its output.
async fn dozor_env(args: Vec<String>, env: Vec<(&'static str, &'static str)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(&args)
            .envs(env)
            .output()
            .expect("run dozor")
    })
    .await
    .unwrap()
}

/// `once` and `check` at trace level, JSON logs, two tenants covering every connector: no
/// secret from the config, nor any token issued while running, appears in the output. A
/// config readable by others is flagged by `check` until it is `chmod 600`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_output_even_at_trace_level() {
    let opts = SimOptions {
        enforce_limits: false,
        ..SimOptions::default()
    };
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let hooks = "\n[tenants.webhooks]\nbitrix24_token = \"hooktok-b24-application-5501\"\n\
                 amocrm_secret = \"hooktok-amocrm-path-secret-5502\"\n\
                 comagic_secret = \"hooktok-comagic-path-secret-5503\"\n\
                 telegram_secret = \"hooktok-telegram-header-5504\"\n";
    let first = common::only_rules(
        tenant_config(&h, CrmKind::Bitrix24, TelephonyKind::Comagic, &db, "ru"),
        &[],
    ) + hooks;
    let second = common::only_rules(
        tenant_config(&h, CrmKind::Amocrm, TelephonyKind::Calltouch, &db, "en"),
        &[],
    ) + hooks;
    let second = &second[second.find("[[tenants]]").unwrap()..];
    let config_text = format!(
        "{first}\n{}",
        second.replacen("id = \"demo\"", "id = \"demo2\"", 1)
    );
    let cfg = write(dir.path(), "dozor.toml", &config_text);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let c = &h.sim.creds;
    let mut secrets: Vec<String> = vec![
        c.b24_webhook_secret.clone(),
        c.amo_client_secret.clone(),
        c.amo_refresh_token.clone(),
        c.comagic_access_token.clone(),
        c.calltouch_client_api_id.clone(),
        c.telegram_bot_token.clone(),
        // The part after the colon is the bot's secret; the id before it is public.
        c.telegram_bot_token.split(':').nth(1).unwrap().to_string(),
        "hooktok-b24-application-5501".into(),
        "hooktok-amocrm-path-secret-5502".into(),
        "hooktok-comagic-path-secret-5503".into(),
        "hooktok-telegram-header-5504".into(),
    ];
    let mut outputs = Vec::new();
    let once = dozor_env(
        vec![
            "--config".into(),
            cfg.clone(),
            "--log-format".into(),
            "json".into(),
            "once".into(),
        ],
        vec![("RUST_LOG", "trace")],
    )
    .await;
    let (o, e) = text(&once);
    assert!(
        once.status.success(),
        "stdout:\n{o}\nstderr (tail):\n{}",
        &e[e.len().saturating_sub(4000)..]
    );
    assert!(e.lines().count() > 100, "trace logging produced output");
    outputs.push(("once", o, e));
    let check = dozor_env(
        vec!["--config".into(), cfg.clone(), "check".into()],
        vec![("RUST_LOG", "debug")],
    )
    .await;
    let (o, e) = text(&check);
    assert!(check.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    #[cfg(unix)]
    assert!(
        o.contains("warning:") && o.contains("chmod 600") && o.contains("dozor.toml"),
        "check must flag a config readable by others:\n{o}"
    );
    outputs.push(("check", o, e));

    // Tokens issued during the run (amoCRM OAuth) are secrets too.
    let store = dozor::store::Store::open(&db, 1).await.unwrap();
    use dozor::store::TokenStore;
    let issued = store
        .load_token("demo2", "amocrm")
        .await
        .unwrap()
        .expect("amoCRM tokens were stored");
    secrets.push(issued.access_token.expose().to_string());
    secrets.extend(issued.refresh_token.map(|t| t.expose().to_string()));
    store.close().await;

    for (cmd, o, e) in &outputs {
        for s in &secrets {
            assert!(s.len() >= 8, "test secret too short to search for: {s}");
            assert!(!o.contains(s.as_str()), "`{cmd}` stdout shows a secret");
            if let Some(line) = e.lines().find(|l| l.contains(s.as_str())) {
                panic!(
                    "`{cmd}` logs show a secret (…{}…) in:\n{}",
                    &s[..4],
                    line.replace(s.as_str(), "<SECRET>")
                );
            }
        }
    }

    // chmod 600: no warning any more.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = dozor_async(vec!["--config".into(), cfg.clone(), "check".into()]).await;
        let (o, e) = text(&out);
        assert!(out.status.success(), "{o}\n{e}");
        assert!(
            !o.contains("warning:") && !e.contains("chmod 600"),
            "{o}\n{e}"
        );
    }
    h.stop().await;
}

/// `once` with a CRM that refuses every task write: the sync is fine, the writes fail, and the
/// exit status says so (3) with the count in the summary. The refusal is a method-level error
/// in the `{"error","error_description"}` shape of bitrix24/b24restdocs `_includes/error-info.md`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_3_when_an_action_failed() {
    let h = common::start_sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let cfg = write(
        dir.path(),
        "f.toml",
        &common::only_rules(
            tenant_config(&h, CrmKind::Bitrix24, TelephonyKind::Comagic, &db, "ru"),
            &["deal_without_task"],
        ),
    );
    h.sim
        .b24
        .refuse_method("tasks.task.add", 400, "", "Access denied.");
    let out = dozor_async(vec!["--config".into(), cfg, "once".into()]).await;
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(3), "stdout:\n{o}\nstderr:\n{e}");
    let line = o
        .lines()
        .find(|l| l.contains("actions failed:"))
        .unwrap_or_else(|| panic!("no count of failed actions:\n{o}"));
    let n: usize = line.rsplit(' ').next().unwrap().trim().parse().unwrap();
    assert!(n > 0, "{o}");
    assert!(!o.contains("ERROR"), "the sources were read:\n{o}");
    h.stop().await;
}

/// `check` with a webhook created without the `task` scope (bitrix24/b24restdocs
/// `api-reference/common/system/scope.md`): the bitrix24 row fails and names the scope and the
/// rules it blocks, instead of passing and leaving the first sync to fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_missing_bitrix24_scope() {
    let h = common::small_sim(3).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let cfg = write(
        dir.path(),
        "s.toml",
        &tenant_config(&h, CrmKind::Bitrix24, TelephonyKind::Comagic, &db, "ru"),
    );
    h.sim.b24.limit_scopes(&["crm", "user", "telephony"]);
    let out = dozor_async(vec!["--config".into(), cfg, "check".into()]).await;
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{o}\nstderr:\n{e}");
    let b24 = o.lines().find(|l| l.contains("bitrix24")).unwrap();
    assert!(
        b24.contains("FAIL") && b24.contains("scopes missing"),
        "{o}"
    );
    assert!(
        b24.contains("no `task` scope") && b24.contains("deal_without_task"),
        "{o}"
    );
    assert!(!b24.contains("no `crm` scope"), "{o}");
    h.stop().await;
}
