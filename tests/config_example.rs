//! The shipped example config must load, document every rule, and broken variants of it must
//! fail with an error that names the file and the key. Pointed at the simulator, it must write
//! nothing on its first run: every rule that writes ships in shadow.

mod common;

use std::path::{Path, PathBuf};

use dozor::config::{self, ConfigError, CrmConfig, RuleMode, RulesConfig, TelephonyConfig, load};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dozor.example.toml")
}

fn example_text() -> String {
    std::fs::read_to_string(example_path()).expect("config/dozor.example.toml is readable")
}

/// Writes `text` as `name` in `dir` and loads it through the same path the binary uses.
fn load_text(dir: &Path, name: &str, text: &str) -> Result<config::Loaded, ConfigError> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    load(&path)
}

/// Replaces exactly one occurrence of `from`, so a test cannot silently edit nothing.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur exactly once in the example"
    );
    text.replacen(from, to, 1)
}

/// Loads a broken variant and checks the error names the file and the key.
fn expect_error(text: &str, key: &str) -> ConfigError {
    let dir = tempfile::tempdir().unwrap();
    let err = load_text(dir.path(), "broken.toml", text).expect_err("broken config must not load");
    let shown = err.to_string();
    eprintln!("{shown}");
    assert_eq!(
        err.file.as_deref(),
        Some(dir.path().join("broken.toml").as_path()),
        "{shown}"
    );
    assert!(shown.contains("broken.toml"), "file not named: {shown}");
    assert!(shown.contains(key), "key `{key}` not named: {shown}");
    err
}

#[test]
fn example_loads_and_validates() {
    let loaded = load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.file.as_deref(), Some(example_path().as_path()));
    let c = loaded.config;
    assert_eq!(c.tenants.len(), 1);
    let t = &c.tenants[0];
    assert_eq!(t.id, "acme");
    assert_eq!(t.timezone, "Europe/Moscow");
    match &t.crm {
        CrmConfig::Bitrix24(b) => {
            assert_eq!(
                b.webhook_url.as_ref().map(|s| s.expose()),
                Some("https://example.bitrix24.ru/rest/1/xxxxxxxx/")
            );
            assert_eq!(b.operating_budget_secs, 480.0);
        }
        other => panic!("example's active CRM must be Bitrix24, got {other:?}"),
    }
    assert!(matches!(t.telephony, Some(TelephonyConfig::Comagic(_))));
    let tg = t.telegram.as_ref().expect("telegram section");
    assert_eq!(tg.managers.get("7"), Some(&222222222));
    assert_eq!(tg.allowed_chats, vec![111111111, 222222222]);
    assert_eq!(t.reports.plans.get("1"), Some(&1500000.0));
    assert_eq!(t.calendar.holidays.len(), 3);
    config::calendar_of(t).expect("calendar builds");
}

#[test]
fn example_rule_values_equal_the_defaults() {
    let c = load(&example_path()).unwrap().config;
    let rules = &c.tenants[0].rules;
    let defaults = RulesConfig::default();
    for (name, default) in defaults.iter() {
        let r = rules.get(name).unwrap();
        assert_eq!(
            r.mode(),
            default.mode(),
            "rule {name}: example mode differs from default"
        );
        assert_eq!(
            r.params(),
            default.params(),
            "rule {name}: example numbers differ"
        );
    }
    assert_eq!(rules.client_without_deal.mode, RuleMode::Off);
}

/// A careless first install must not write: every rule that writes defaults to shadow, in the
/// built-in defaults and in the shipped example alike.
#[test]
fn every_writing_rule_ships_in_shadow() {
    let example = load(&example_path()).unwrap().config;
    for (name, default) in RulesConfig::default().iter() {
        let expected = if name == "client_without_deal" {
            RuleMode::Off
        } else {
            RuleMode::Shadow
        };
        assert_eq!(default.mode(), expected, "built-in default of {name}");
        assert_eq!(
            example.tenants[0].rules.get(name).unwrap().mode(),
            expected,
            "example's mode of {name}"
        );
    }
    assert!(
        !example_text().contains("mode = \"on\"\n"),
        "the example switches no rule on"
    );
}

#[test]
fn example_mentions_every_rule_and_its_numbers() {
    let text = example_text();
    for (name, rule) in RulesConfig::default().iter() {
        let header = format!("[tenants.rules.{name}]");
        let start = text
            .find(&header)
            .unwrap_or_else(|| panic!("rule `{name}` is missing from the example"));
        let section = &text[start + header.len()..];
        let section = &section[..section.find("\n[").unwrap_or(section.len())];
        assert!(
            section.contains("mode = "),
            "rule `{name}` has no mode line"
        );
        for (param, _) in rule.params() {
            assert!(
                section.contains(&format!("\n{param} = ")),
                "rule `{name}`: setting `{param}` is not shown"
            );
        }
    }
}

/// Every key of the schema appears in the example, active or commented out, so operators can
/// find each one there.
#[test]
fn example_documents_every_key() {
    let text = example_text();
    let keys = [
        "data_dir",
        "format",
        "level",
        "url",
        "url_file",
        "max_connections",
        "enabled",
        "listen",
        "interval_secs",
        "overlap_secs",
        "telephony_initial_days",
        "id",
        "name",
        "timezone",
        "lang",
        "kind",
        // Bitrix24
        "webhook_url",
        "webhook_url_file",
        "portal_url",
        "client_id",
        "client_secret",
        "client_secret_file",
        "refresh_token",
        "refresh_token_file",
        "oauth_url",
        "plan",
        "operating_budget_secs",
        // amoCRM
        "base_url",
        "long_lived_token",
        "long_lived_token_file",
        "redirect_uri",
        "rate_per_sec",
        // telephony
        "access_token",
        "access_token_file",
        "site_id",
        "client_api_id",
        "client_api_id_file",
        "employees",
        // telegram
        "bot_token",
        "bot_token_file",
        "api_url",
        "owner_chat",
        "head_of_sales_chat",
        "ops_chat",
        "report_topic",
        "allowed_chats",
        // webhooks
        "bitrix24_token",
        "bitrix24_token_file",
        "amocrm_secret",
        "amocrm_secret_file",
        "comagic_secret",
        "comagic_secret_file",
        "telegram_secret",
        "telegram_secret_file",
        // calendar, reports
        "work_hours",
        "work_days",
        "holidays",
        "daily",
        "weekly",
        "monthly",
        // routing
        "on_duty",
        // rules
        "mode",
        "pipelines",
        "stages",
    ];
    let assigned = |k: &str| {
        text.lines().any(|l| {
            let l = l.trim_start().trim_start_matches('#').trim_start();
            l.strip_prefix(k)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    for k in keys {
        assert!(assigned(k), "key `{k}` is not shown in the example");
    }
    for table in [
        "[log]",
        "[database]",
        "[server]",
        "[sync]",
        "[[tenants]]",
        "[tenants.crm]",
        "[tenants.telephony]",
        "[tenants.telegram]",
        "[tenants.telegram.managers]",
        "[tenants.webhooks]",
        "[tenants.calendar]",
        "[tenants.reports]",
        "[tenants.reports.plans]",
        "[tenants.routing]",
        "[tenants.routing.virtual_numbers]",
        "[tenants.routing.sources]",
    ] {
        assert!(text.contains(table), "table {table} is missing");
    }
    assert!(text.contains("kind = \"amocrm\""));
    assert!(text.contains("kind = \"calltouch\""));
    assert!(text.contains("DOZOR__DATABASE__URL"));
}

/// The commented-out alternatives are valid too: uncommenting them gives a loadable config.
#[test]
fn commented_alternatives_load() {
    let text = example_text();
    let dir = tempfile::tempdir().unwrap();

    // amoCRM with a long-lived token, Calltouch telephony.
    let crm_start = text.find("[tenants.crm]\nkind = \"bitrix24\"").unwrap();
    let crm_end = text.find("# --- amoCRM").unwrap();
    let amo = "[tenants.crm]\nkind = \"amocrm\"\nbase_url = \"https://example.amocrm.ru\"\n\
               long_lived_token = \"placeholder-long-lived-token\"\nrate_per_sec = 7\n\n";
    let mut variant = format!("{}{}{}", &text[..crm_start], amo, &text[crm_end..]);
    let tel_start = variant
        .find("[tenants.telephony]\nkind = \"comagic\"")
        .unwrap();
    let tel_end = variant.find("# --- Calltouch").unwrap();
    let ct = "[tenants.telephony]\nkind = \"calltouch\"\nbase_url = \"https://api.calltouch.ru\"\n\
              site_id = 12345\nclient_api_id = \"placeholder-client-api-id\"\n\n";
    variant = format!("{}{}{}", &variant[..tel_start], ct, &variant[tel_end..]);
    let c = load_text(dir.path(), "amo.toml", &variant)
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    assert!(matches!(c.tenants[0].crm, CrmConfig::Amocrm(_)));
    assert!(matches!(
        c.tenants[0].telephony,
        Some(TelephonyConfig::Calltouch(_))
    ));

    // Bitrix24 OAuth with secrets in files.
    let secret = dir.path().join("client_secret");
    std::fs::write(&secret, "placeholder-client-secret\n").unwrap();
    let oauth = format!(
        "portal_url = \"https://example.bitrix24.ru\"\nclient_id = \"local.0123456789abcd.12345678\"\n\
         client_secret_file = \"{}\"\nrefresh_token = \"placeholder-refresh-token\"",
        secret.display()
    );
    let variant = replace_once(
        &text,
        "webhook_url = \"https://example.bitrix24.ru/rest/1/xxxxxxxx/\"",
        &oauth,
    );
    let c = load_text(dir.path(), "oauth.toml", &variant)
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    let CrmConfig::Bitrix24(b) = &c.tenants[0].crm else {
        panic!("bitrix24 expected")
    };
    assert_eq!(
        b.client_secret.as_ref().map(|s| s.expose()),
        Some("placeholder-client-secret"),
        "the *_file secret is read and trimmed"
    );
}

/// `DOZOR__SECTION__KEY` variables override the file (as documented in the example).
#[test]
fn environment_overrides_the_file() {
    let env: std::collections::HashMap<String, String> = [
        (
            "DOZOR__DATABASE__URL",
            "postgres://dozor:pw@127.0.0.1:5432/dozor",
        ),
        ("DOZOR__SYNC__INTERVAL_SECS", "60"),
        ("DOZOR__DATA_DIR", "/var/lib/dozor"),
        ("DOZOR__LOG__FORMAT", "json"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let source = ::config::Environment::with_prefix("DOZOR")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .source(Some(env));
    let c = config::parse(&example_text(), Some(&example_path()), Some(source))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    assert_eq!(c.database_url(), "postgres://dozor:pw@127.0.0.1:5432/dozor");
    assert_eq!(c.sync.interval_secs, 60);
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/dozor"));
    assert_eq!(c.log.format, config::LogFormat::Json);
    assert_eq!(c.tenants.len(), 1, "tenants from the file survive");
}

#[test]
fn unknown_key_is_named() {
    let text = replace_once(&example_text(), "overlap_secs = 120", "overlap_sec = 120");
    let e = expect_error(&text, "overlap_sec");
    assert!(e.to_string().contains("sync"), "{e}");
}

#[test]
fn unknown_rule_setting_is_named() {
    let text = replace_once(&example_text(), "sla_minutes = 15", "sla_minute = 15");
    let e = expect_error(&text, "sla_minute");
    assert!(e.to_string().contains("tenants[0].rules"), "{e}");
}

#[test]
fn wrong_type_is_named() {
    let text = replace_once(
        &example_text(),
        "interval_secs = 300",
        "interval_secs = \"often\"",
    );
    let e = expect_error(&text, "sync.interval_secs");
    assert_eq!(e.key.as_deref(), Some("sync.interval_secs"));
}

#[test]
fn bad_timezone_is_named() {
    let text = replace_once(
        &example_text(),
        "timezone = \"Europe/Moscow\"",
        "timezone = \"Europe/Atlantis\"",
    );
    let e = expect_error(&text, "tenants[0].timezone");
    assert!(e.to_string().contains("Europe/Atlantis"), "{e}");
    assert!(e.line.is_some(), "the line is reported: {e}");
}

#[test]
fn bad_url_is_named() {
    let text = replace_once(
        &example_text(),
        "webhook_url = \"https://example.bitrix24.ru/rest/1/xxxxxxxx/\"",
        "webhook_url = \"example.bitrix24.ru rest\"",
    );
    let e = expect_error(&text, "tenants[0].crm.webhook_url");
    assert!(e.to_string().contains("URL"), "{e}");

    let text = replace_once(
        &example_text(),
        "api_url = \"https://api.telegram.org\"",
        "api_url = \"ftp://api.telegram.org\"",
    );
    expect_error(&text, "tenants[0].telegram.api_url");
}

#[test]
fn routing_is_loaded_normalised_and_checked() {
    let c = load(&example_path()).unwrap().config;
    let r = &c.tenants[0].routing;
    assert_eq!(r.on_duty, config::OnDutyPick::First);
    assert_eq!(
        r.virtual_numbers.get("+74951234567").map(String::as_str),
        Some("5")
    );
    assert_eq!(r.by_source("Yandex").map(String::as_str), Some("6"));

    let text = replace_once(
        &example_text(),
        "\"+7 (495) 123-45-67\" = \"5\"",
        "\"not a number\" = \"5\"",
    );
    let e = expect_error(&text, "tenants[0].routing.virtual_numbers.\"not a number\"");
    assert!(e.to_string().contains("not a phone number"), "{e}");
    assert!(e.line.is_some(), "the line is reported: {e}");

    let text = replace_once(
        &example_text(),
        "\"+7 (495) 123-45-67\" = \"5\"",
        "\"+7 (495) 123-45-67\" = \"5\"\n\"84951234567\" = \"6\"",
    );
    let e = expect_error(&text, "tenants[0].routing.virtual_numbers");
    assert!(e.to_string().contains("routed twice"), "{e}");

    let text = replace_once(
        &example_text(),
        "on_duty = \"first\"",
        "on_duty = \"random\"",
    );
    expect_error(&text, "tenants[0].routing.on_duty");

    let text = replace_once(&example_text(), "\"yandex\" = \"6\"", "\"yandex\" = \"\"");
    let e = expect_error(&text, "tenants[0].routing.sources.\"yandex\"");
    assert!(e.to_string().contains("must not be empty"), "{e}");
}

#[test]
fn secret_and_secret_file_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "123456:ABC-from-file").unwrap();
    let text = replace_once(
        &example_text(),
        "# bot_token_file = \"/run/credentials/dozor.service/telegram_bot_token\"",
        &format!("bot_token_file = \"{}\"", file.display()),
    );
    let e = expect_error(&text, "tenants[0].telegram.bot_token");
    assert!(e.to_string().contains("not both"), "{e}");
}

#[test]
fn missing_secret_file_is_named() {
    let text = replace_once(
        &example_text(),
        "access_token = \"placeholder-comagic-token\"",
        "access_token_file = \"/nonexistent/dozor/comagic_token\"",
    );
    let e = expect_error(&text, "tenants[0].telephony.access_token_file");
    assert!(
        e.to_string().contains("/nonexistent/dozor/comagic_token"),
        "{e}"
    );
}

#[test]
fn errors_do_not_leak_secrets() {
    // A bad value next to a secret: the message must not echo the secret.
    let text = replace_once(
        &example_text(),
        "listen = \"127.0.0.1:9187\"",
        "listen = \"nowhere\"",
    );
    let e = expect_error(&text, "server.listen");
    let shown = e.to_string();
    assert!(!shown.contains("xxxxxxxx"), "{shown}");
    assert!(!shown.contains("ABC-placeholder"), "{shown}");
}

/// Every `DOZOR__*` line of deploy/dozor.env.example (commented or not) is a valid override.
#[test]
fn env_example_overrides_are_valid() {
    let env_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/dozor.env.example"),
    )
    .unwrap();
    let vars: std::collections::HashMap<String, String> = env_text
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter(|l| l.starts_with("DOZOR__"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(vars.len() >= 8, "env example shows the overrides: {vars:?}");
    let source = ::config::Environment::with_prefix("DOZOR")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .source(Some(vars));
    let c = config::parse(&example_text(), Some(&example_path()), Some(source))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    assert!(c.database_url().starts_with("postgres://"));
    assert_eq!(c.database.max_connections, 16);
}

/// deploy/install.sh installs a config that loads, with the state directory of the unit.
#[test]
fn installed_config_loads() {
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/install.sh"))
        .arg("--root")
        .arg(root.path())
        .arg("/bin/true")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let etc = root.path().join("etc/dozor");
    let c = load(&etc.join("dozor.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/dozor"));
    let rules = &c.tenants[0].rules;
    assert!(
        rules.in_mode(RuleMode::On).is_empty(),
        "the installed config switches no rule on: {:?}",
        rules.in_mode(RuleMode::On)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("dozor audit --state shadow"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&etc), 0o750);
        assert_eq!(mode(&etc.join("dozor.toml")), 0o640);
        assert_eq!(mode(&etc.join("dozor.env")), 0o600);
    }
    assert!(
        root.path()
            .join("etc/systemd/system/dozor.service")
            .exists()
    );
    assert!(root.path().join("usr/local/bin/dozor").exists());
}

/// The shipped example with its systems pointed at the simulator `h` and its data in `dir`.
fn example_for_sim(h: &dozor_sim::SimHandle, dir: &Path) -> String {
    let c = &h.sim.creds;
    let mut text = example_text();
    for (from, to) in [
        (
            "data_dir = \"./data\"".to_string(),
            format!("data_dir = \"{}\"", dir.display()),
        ),
        (
            "webhook_url = \"https://example.bitrix24.ru/rest/1/xxxxxxxx/\"".into(),
            format!("webhook_url = \"{}\"", h.b24_webhook_url()),
        ),
        (
            "base_url = \"https://dataapi.comagic.ru/v2.0\"".into(),
            format!("base_url = \"{}\"", h.comagic_url()),
        ),
        (
            "access_token = \"placeholder-comagic-token\"".into(),
            format!("access_token = \"{}\"", c.comagic_access_token),
        ),
        (
            "bot_token = \"123456:ABC-placeholder\"".into(),
            format!("bot_token = \"{}\"", c.telegram_bot_token),
        ),
        (
            "api_url = \"https://api.telegram.org\"".into(),
            format!("api_url = \"{}\"", h.telegram_url()),
        ),
    ] {
        text = replace_once(&text, &from, &to);
    }
    text
}

/// Runs `dozor once` on the config at `path` as an operator would, against the simulator `h`,
/// and checks it wrote nothing: the CRM world is unchanged, no rule sent a Telegram message, and
/// the ledger holds only `shadow` rows (some: the rules did run). Returns what dozor logged.
async fn first_run_writes_nothing(h: &dozor_sim::SimHandle, path: &Path, db: &Path) -> String {
    let world_before = serde_json::to_value(&*h.sim.world()).unwrap();
    let args = vec![
        "--config".to_string(),
        path.display().to_string(),
        "once".to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run dozor")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let world_after = serde_json::to_value(&*h.sim.world()).unwrap();
    assert!(
        world_before == world_after,
        "the first run changed the CRM:\n{stdout}"
    );
    let sent: Vec<String> = h
        .sim
        .telegram
        .messages()
        .iter()
        .map(|m| m.text.clone().unwrap_or_default())
        .collect();
    assert!(
        sent.is_empty(),
        "the first run sent Telegram messages: {sent:?}"
    );
    let store = dozor::store::Store::open(&format!("sqlite://{}", db.display()), 1)
        .await
        .unwrap();
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM actions GROUP BY state ORDER BY state")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        states.len(),
        1,
        "only shadow rows in the ledger: {states:?}"
    );
    assert_eq!(states[0].0, "shadow", "{states:?}");
    assert!(states[0].1 > 0, "the rules ran: {states:?}");
    eprintln!("ledger after the first run: {states:?}\n{stdout}");
    stderr
}

/// Observed: the example (every rule `on`), installed as is and pointed at a portal, wrote to
/// the CRM on its first cycle. Now its first run only records what the rules would do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_example_writes_nothing_on_its_first_run() {
    let h = common::small_sim(12).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, example_for_sim(&h, dir.path())).unwrap();
    let log = first_run_writes_nothing(&h, &path, &dir.path().join("dozor.db")).await;
    // One line at start says which rules write and which only report.
    let line = log
        .lines()
        .find(|l| l.contains("tenant acme: rules on"))
        .unwrap_or_else(|| panic!("no rule-mode line in the log:\n{log}"));
    assert!(
        line.contains("rules on (write to the CRM and Telegram): none"),
        "{line}"
    );
    assert!(
        line.contains("deal_without_task") && line.contains("missed_call"),
        "{line}"
    );
    assert!(line.contains("off: client_without_deal"), "{line}");
    assert!(line.contains("dozor audit --state shadow"), "{line}");
    h.stop().await;
}

/// Observed: a config with no `[tenants.rules.*]` section at all wrote 1,623 changes on a
/// scale-20 simulator. The built-in defaults now keep every writing rule in shadow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_without_rules_writes_nothing() {
    use dozor::domain::{CrmKind, TelephonyKind};
    let h = common::small_sim(13).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dozor.db");
    let text = common::tenant_config(
        &h,
        CrmKind::Bitrix24,
        TelephonyKind::Comagic,
        &format!("sqlite://{}", db.display()),
        "ru",
    );
    assert!(!text.contains("[tenants.rules."), "no rules section");
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, text).unwrap();
    let log = first_run_writes_nothing(&h, &path, &db).await;
    assert!(
        log.contains("tenant demo: rules on (write to the CRM and Telegram): none"),
        "{log}"
    );
    h.stop().await;
}

/// The environment source `load` uses, with `vars` instead of the process environment.
fn env_source(vars: &[(&str, &str)]) -> ::config::Environment {
    ::config::Environment::with_prefix("DOZOR")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .source(Some(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
}

/// Observed: `DOZOR__SYNC__INTERVAL_SECS=bad` was reported at the file's `interval_secs` line,
/// where the value is fine. The error names the variable and no line.
#[test]
fn environment_override_errors_name_the_variable() {
    for (var, value, key, what) in [
        (
            "DOZOR__SYNC__INTERVAL_SECS",
            "often",
            "sync.interval_secs",
            "invalid type",
        ),
        (
            "DOZOR__SYNC__INTERVAL_SECS",
            "5",
            "sync.interval_secs",
            "at least 10 seconds",
        ),
        (
            "DOZOR__SYNC__INTERVL",
            "60",
            "sync.intervl",
            "fix the variable's name",
        ),
        (
            "DOZOR__DATABASE__URL",
            "mysql://u:topsecretpw@db/dozor",
            "database.url",
            "must start with",
        ),
    ] {
        let e = config::parse(
            &example_text(),
            Some(&example_path()),
            Some(env_source(&[(var, value)])),
        )
        .expect_err("a bad override must not load");
        let shown = e.to_string();
        eprintln!("{shown}");
        assert_eq!(e.env_var.as_deref(), Some(var), "{shown}");
        assert_eq!(e.key.as_deref(), Some(key), "{shown}");
        assert_eq!(e.line, None, "no line of the file is to blame: {shown}");
        assert!(
            shown.starts_with(&format!(
                "config error in environment variable {var} (key `{key}`)"
            )),
            "{shown}"
        );
        assert!(shown.contains(what), "{shown}");
        assert!(!shown.contains("topsecretpw"), "{shown}");
    }
    // A bad value in the file is still reported at its line.
    let e = expect_error(
        &replace_once(&example_text(), "interval_secs = 300", "interval_secs = 5"),
        "sync.interval_secs",
    );
    assert_eq!(e.env_var, None);
    assert!(e.line.is_some(), "{e}");
}

/// Observed: a tenant without `id` read `missing configuration field "tenants[0]id"`. It now says
/// which tenant (position, name), where its block starts and what to add.
#[test]
fn tenant_without_id_is_named_by_position_and_name() {
    let second = "\n[[tenants]]\nname = \"Beta Sales\"\n[tenants.crm]\nkind = \"bitrix24\"\n\
                  webhook_url = \"https://beta.bitrix24.ru/rest/1/betasecret/\"\n";
    let text = format!("{}{second}", example_text());
    let header_line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[tenants]]")
        .nth(1)
        .map(|(i, _)| i + 1)
        .unwrap();
    let e = expect_error(&text, "tenants[1].id");
    let shown = e.to_string();
    assert_eq!(e.line, Some(header_line), "{shown}");
    assert!(shown.contains("tenant #2 (name \"Beta Sales\")"), "{shown}");
    assert!(
        shown.contains("add a line `id = \"beta-sales\"`"),
        "{shown}"
    );
    assert!(!shown.contains("betasecret"), "{shown}");

    // The only tenant, without a name either.
    let text = replace_once(&example_text(), "id = \"acme\"\n", "");
    let text = replace_once(&text, "name = \"Acme Trading\"\n", "");
    let e = expect_error(&text, "tenants[0].id");
    assert!(
        e.to_string().contains("tenant #1 (it has no name either)"),
        "{e}"
    );
    assert!(e.to_string().contains("id = \"tenant1\""), "{e}");

    // An id that is there but unusable names the tenant too.
    let text = replace_once(&example_text(), "id = \"acme\"\n", "id = \"Acme Corp\"\n");
    let e = expect_error(&text, "tenants[0].id");
    assert!(
        e.to_string().contains("tenant #1 (name \"Acme Trading\")"),
        "{e}"
    );
}

/// An error in the second tenant points at the second tenant's line, not the first one's.
#[test]
fn errors_in_a_later_tenant_point_at_its_line() {
    let second = "\n[[tenants]]\nid = \"beta\"\ntimezone = \"Mars/Olympus\"\n[tenants.crm]\n\
                  kind = \"bitrix24\"\nwebhook_url = \"https://beta.bitrix24.ru/rest/1/s/\"\n";
    let text = format!("{}{second}", example_text());
    let line = text
        .lines()
        .position(|l| l.contains("Mars/Olympus"))
        .unwrap()
        + 1;
    let e = expect_error(&text, "tenants[1].timezone");
    assert_eq!(e.line, Some(line), "{e}");
}

/// Observed: a `webhook_url` that failed to parse was echoed whole, secret included.
#[test]
fn a_bad_webhook_url_is_not_echoed() {
    for bad in [
        "https//portal.example.ru/rest/1/SUPERSECRET42/",
        "https://portal.example.ru:99999/rest/1/SUPERSECRET42/",
        "portal.example.ru/rest/1/SUPERSECRET42/",
        "https://portal.example.ru/hook/1/SUPERSECRET42/",
        "https://portal.example.ru/rest/admin/SUPERSECRET42/",
        "https://portal.example.ru/rest/1/",
    ] {
        let text = replace_once(
            &example_text(),
            "webhook_url = \"https://example.bitrix24.ru/rest/1/xxxxxxxx/\"",
            &format!("webhook_url = \"{bad}\""),
        );
        let e = expect_error(&text, "tenants[0].crm.webhook_url");
        assert!(!e.to_string().contains("SUPERSECRET42"), "{e}");
        assert!(e.line.is_some(), "{e}");
    }
    // A URL that is not itself a secret may carry `user:password@`: not echoed either.
    let text = replace_once(
        &example_text(),
        "base_url = \"https://dataapi.comagic.ru/v2.0\"",
        "base_url = \"https://ops:hunter2pw@data api.comagic.ru/v2.0\"",
    );
    let e = expect_error(&text, "tenants[0].telephony.base_url");
    assert!(!e.to_string().contains("hunter2pw"), "{e}");
}

/// A secret-bearing URL in plain http:// to another host is refused unless the tenant allows
/// it; then it loads with a warning. Loopback (the simulator, a local proxy) is fine.
#[test]
fn plain_http_with_a_secret_is_refused_unless_allowed() {
    let webhook = "webhook_url = \"https://example.bitrix24.ru/rest/1/xxxxxxxx/\"";
    let insecure = replace_once(
        &example_text(),
        webhook,
        "webhook_url = \"http://portal.example.ru/rest/1/SUPERSECRET42/\"",
    );
    let e = expect_error(&insecure, "tenants[0].crm.webhook_url");
    let shown = e.to_string();
    assert!(
        shown.contains("http://") && shown.contains("portal.example.ru"),
        "{shown}"
    );
    assert!(shown.contains("allow_insecure_http = true"), "{shown}");
    assert!(!shown.contains("SUPERSECRET42"), "{shown}");

    for (from, to, key) in [
        (
            "api_url = \"https://api.telegram.org\"",
            "api_url = \"http://10.0.0.5:8081\"",
            "tenants[0].telegram.api_url",
        ),
        (
            "base_url = \"https://dataapi.comagic.ru/v2.0\"",
            "base_url = \"http://dataapi.comagic.ru/v2.0\"",
            "tenants[0].telephony.base_url",
        ),
        (
            "oauth_url = \"https://oauth.bitrix.info\"",
            "oauth_url = \"http://oauth.bitrix.info\"",
            "tenants[0].crm.oauth_url",
        ),
    ] {
        expect_error(&replace_once(&example_text(), from, to), key);
    }

    let dir = tempfile::tempdir().unwrap();
    let allowed = replace_once(
        &insecure,
        "allow_insecure_http = false",
        "allow_insecure_http = true",
    );
    let loaded = load_text(dir.path(), "allowed.toml", &allowed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let w = &loaded.warnings[0];
    assert!(
        w.contains("tenants[0].crm.webhook_url") && w.contains("portal.example.ru"),
        "{w}"
    );
    assert!(!w.contains("SUPERSECRET42"), "{w}");

    for local in ["127.0.0.1:8080", "localhost", "[::1]:9000"] {
        let text = replace_once(
            &example_text(),
            webhook,
            &format!("webhook_url = \"http://{local}/rest/1/s/\""),
        );
        let loaded = load_text(dir.path(), "local.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
    let example = load(&example_path()).unwrap();
    assert!(example.warnings.is_empty(), "{:?}", example.warnings);
}

/// A table that lacks what it needs is reported at its header line.
#[test]
fn an_incomplete_table_is_reported_at_its_header() {
    let text = replace_once(
        &example_text(),
        "webhook_url = \"https://example.bitrix24.ru/rest/1/xxxxxxxx/\"",
        "",
    );
    let e = expect_error(&text, "tenants[0].crm");
    let header = text
        .lines()
        .position(|l| l == "[tenants.crm]")
        .map(|i| i + 1);
    assert_eq!(e.line, header, "{e}");
    assert!(e.to_string().contains("missing: portal_url"), "{e}");
}

/// The test helpers' text edit of a rule's mode, read back through the product's parser.
#[test]
fn rule_mode_is_set_in_place_or_appended() {
    let text = "[[tenants]]\nid = \"a\"\n[tenants.rules.missed_call]\nsla_minutes = 5\nmode = \"shadow\"\n[tenants.roles]\n";
    let t = common::with_rule_mode(text, "missed_call", RuleMode::On);
    assert_eq!(
        t,
        "[[tenants]]\nid = \"a\"\n[tenants.rules.missed_call]\nmode = \"on\"\nsla_minutes = 5\n[tenants.roles]\n"
    );
    let t = common::with_rule_mode(&t, "dormant", RuleMode::Off);
    assert!(
        t.ends_with("[tenants.rules.dormant]\nmode = \"off\"\n"),
        "{t}"
    );
    let parsed = config::parse(
        &format!(
            "{}[tenants.crm]\nkind = \"bitrix24\"\nwebhook_url = \"https://a.bitrix24.ru/rest/1/s/\"\n",
            common::rules_on(text.to_string()).replace("[tenants.roles]\n", "")
        ),
        None,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rules = &parsed.config.tenants[0].rules;
    assert_eq!(rules.missed_call.mode, RuleMode::On);
    assert_eq!(rules.missed_call.sla_minutes, 5.0);
    assert_eq!(rules.client_without_deal.mode, RuleMode::Off);
    assert!(rules.in_mode(RuleMode::Shadow).is_empty());
}
