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
    assert_eq!(c.tenants[0].rules.missed_call.sla_minutes, 15.0);
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
    let r = &c.tenants[0].rules.missed_call;
    assert_eq!(r.mode, RuleMode::Shadow);
    assert_eq!(r.sla_minutes, 20.0);
    assert_eq!(
        r.lookback_hours, 24.0,
        "an omitted number keeps its default"
    );
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

/// The error of `text` parsed as the file `dozor.toml`.
fn parse_err(text: &str) -> ConfigError {
    parse(text, Some(Path::new("dozor.toml")), None).unwrap_err()
}

#[test]
fn misspelt_rule_setting_names_file_key_and_line() {
    let text = format!(
        "{MINIMAL}\n[tenants.rules.no_activity]\ntop_days = 20\n\n[tenants.rules.missed_call]\nmode = \"shadow\"\nsla_minuts = 15\n"
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("sla_minuts"))
        .unwrap()
        + 1;
    let e = parse_err(&text);
    assert_eq!(
        e.key.as_deref(),
        Some("tenants[0].rules.missed_call.sla_minuts")
    );
    assert_eq!(e.line, Some(line));
    let s = e.to_string();
    assert!(s.contains("dozor.toml"), "{s}");
    assert!(s.contains(&format!("(line {line})")), "{s}");
    assert!(
        s.contains("rule `missed_call` has no setting `sla_minuts`; allowed: mode, pipelines, stages, sla_minutes, lookback_hours"),
        "{s}"
    );
}

#[test]
fn rule_number_out_of_range_names_its_key_in_its_own_table() {
    // `top_days` is a setting of two rules: the line is the one under [tenants.rules.dormant].
    let text = format!(
        "{MINIMAL}\n[tenants.rules.no_activity]\ntop_days = 20\n\n[tenants.rules.dormant]\ntop_days = -1\n"
    );
    let line = text.lines().position(|l| l == "top_days = -1").unwrap() + 1;
    let e = parse_err(&text);
    assert_eq!(e.key.as_deref(), Some("tenants[0].rules.dormant.top_days"));
    assert_eq!(e.line, Some(line));
    assert!(e.message.contains("must be a number from 0 to"), "{e}");
}

#[test]
fn misspelt_connector_key_names_file_key_and_line() {
    let text = MINIMAL.replace(
        "webhook_url = ",
        "oauth_url = \"https://oauth.bitrix.info\"\nportal_ulr = \"https://acme.bitrix24.ru\"\nwebhook_url = ",
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("portal_ulr"))
        .unwrap()
        + 1;
    let e = parse_err(&text);
    assert_eq!(e.key.as_deref(), Some("tenants[0].crm.portal_ulr"));
    assert_eq!(e.line, Some(line));
    let s = e.to_string();
    assert!(s.contains("dozor.toml"), "{s}");
    assert!(s.contains("unknown field `portal_ulr`"), "{s}");
    let text = format!("{MINIMAL}\n[tenants.telephony]\nkind = \"comagic\"\naccess_tokn = \"x\"\n");
    let line = text
        .lines()
        .position(|l| l.starts_with("access_tokn"))
        .unwrap()
        + 1;
    let e = parse_err(&text);
    assert_eq!(e.key.as_deref(), Some("tenants[0].telephony.access_tokn"));
    assert_eq!(e.line, Some(line));
}

#[test]
fn rules_read_their_defaults_as_fields() {
    let r = RulesConfig::default();
    assert_eq!(r.unknown_caller.lookback_hours, 24.0);
    assert_eq!(r.unknown_caller.first_task_minutes, 15.0);
    assert_eq!(r.lead_without_deal.after_minutes, 15.0);
    assert_eq!(r.lead_without_deal.lookback_hours, 72.0);
    assert_eq!(r.lead_reaction.yellow_minutes, 15.0);
    assert_eq!(r.lead_reaction.alert_minutes, 30.0);
    assert_eq!(r.overdue_tasks.realert_hours, 4.0);
    assert_eq!(r.overdue_tasks.escalate_days, 3.0);
    assert_eq!(
        (r.no_activity.top_days, r.no_activity.other_days),
        (30.0, 90.0)
    );
    assert_eq!(
        (
            r.dormant.top_days,
            r.dormant.other_days,
            r.dormant.one_time_days
        ),
        (60.0, 180.0, 90.0)
    );
    assert_eq!(r.unpaid_invoice.days, 2.0);
    assert_eq!(r.three_unanswered.attempts, 3.0);
    assert_eq!(r.in_mode(RuleMode::Off), vec!["client_without_deal"]);
    assert_eq!(r.iter().len(), RulesConfig::NAMES.len());
}

#[test]
fn bad_cron_expression_names_file_key_and_line() {
    let text = format!(
        "{MINIMAL}\n[tenants.reports]\ndaily = \"0 0 9 * * *\"\nweekly = \"every monday\"\n"
    );
    let line = text.lines().position(|l| l.starts_with("weekly")).unwrap() + 1;
    let e = parse_err(&text);
    assert_eq!(e.key.as_deref(), Some("tenants[0].reports.weekly"));
    assert_eq!(e.line, Some(line));
    let s = e.to_string();
    assert!(s.contains("dozor.toml"), "{s}");
    assert!(
        s.contains("`every monday` is not a cron expression (sec min hour day month weekday)"),
        "{s}"
    );
}

#[test]
fn unknown_comagic_zone_names_file_key_and_line() {
    let text = format!(
        "{MINIMAL}\n[tenants.telephony]\nkind = \"comagic\"\naccess_token = \"x\"\ntimezone = \"Asia/Ekaterinburg-ish\"\n"
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("timezone"))
        .unwrap()
        + 1;
    let e = parse_err(&text);
    assert_eq!(e.key.as_deref(), Some("tenants[0].telephony.timezone"));
    assert_eq!(e.line, Some(line));
    assert!(
        e.message
            .starts_with("`Asia/Ekaterinburg-ish` is not an IANA time zone"),
        "{e}"
    );
    let text = text.replace("Asia/Ekaterinburg-ish", " Asia/Yekaterinburg ");
    let c = parse(&text, None, None).unwrap().config;
    let Some(TelephonyConfig::Comagic(m)) = &c.tenants[0].telephony else {
        panic!("{:?}", c.tenants[0].telephony);
    };
    assert_eq!(m.timezone, Some(chrono_tz::Asia::Yekaterinburg));
}
