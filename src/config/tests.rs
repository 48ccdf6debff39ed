
use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[[tenants]]
id = "acme"
[tenants.crm]
kind = "bitrix24"
webhook_url = "https://acme.bitrix24.ru/rest/1/secret/"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL, None, None).unwrap().config;
    assert_eq!(c.tenants[0].name, "acme");
    assert_eq!(
        c.tenants[0].rules.0["missed_call"].param("sla_minutes"),
        15.0
    );
    assert_eq!(c.sync.interval_secs, 300);
    assert!(c.database_url().ends_with("data/dozor.db"));
}

#[test]
fn unknown_key_is_named() {
    let text = MINIMAL.replace("kind = \"bitrix24\"", "kind = \"bitrix24\"\nwebhok = 1");
    let e = parse(&text, Some(Path::new("x.toml")), None).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("x.toml"), "{s}");
    assert!(s.contains("webhok"), "{s}");
}

#[test]
fn rule_settings_are_checked() {
    let text =
        format!("{MINIMAL}\n[tenants.rules.missed_call]\nmode = \"shadow\"\nsla_minutes = 20\n");
    let c = parse(&text, None, None).unwrap().config;
    let r = &c.tenants[0].rules.0["missed_call"];
    assert_eq!(r.mode, RuleMode::Shadow);
    assert_eq!(r.param("sla_minutes"), 20.0);
    let bad = format!("{MINIMAL}\n[tenants.rules.missed_call]\nmode = \"maybe\"\n");
    let e = parse(&bad, None, None).unwrap_err().to_string();
    assert!(e.contains("tenants[0].rules"), "{e}");
    let bad = format!("{MINIMAL}\n[tenants.rules.missed_cal]\nmode = \"on\"\n");
    let e = parse(&bad, None, None).unwrap_err().to_string();
    assert!(e.contains("unknown rule `missed_cal`"), "{e}");
}

#[test]
fn secrets_do_not_print() {
    let c = parse(MINIMAL, None, None).unwrap().config;
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("secret/"), "{dbg}");
}
