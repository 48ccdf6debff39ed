//! A tenant config pointing at a running simulator: what `dozor demo` and the tests use, and
//! what `dozor sim` users can copy.

use super::SimHandle;
use crate::config::{RuleMode, RulesConfig};
use crate::domain::{CrmKind, TelephonyKind};

/// Chats the simulated tenant reports to (the Telegram fake accepts any chat id).
pub const OWNER_CHAT: i64 = 100_001;
pub const HEAD_OF_SALES_CHAT: i64 = 100_002;

/// A complete config file (database + one tenant `demo`) for the simulator behind `h`.
/// `lang` is `ru` or `en`.
pub fn tenant_config(
    h: &SimHandle,
    crm: CrmKind,
    tel: TelephonyKind,
    db_url: &str,
    lang: &str,
) -> String {
    let c = &h.sim.creds;
    let reactivation = h
        .sim
        .world()
        .users_with(super::world::Role::Reactivation)
        .next()
        .map(|u| u.id.to_string())
        .unwrap_or_default();
    // Personal chats for the managers (the Telegram fake accepts any chat id).
    let managers: String = h
        .sim
        .world()
        .users_with(super::world::Role::Manager)
        .map(|u| format!("\"{}\" = {}\n", u.id, 200_000 + u.id))
        .collect();
    let crm = match crm {
        CrmKind::Bitrix24 => format!(
            "kind = \"bitrix24\"\nwebhook_url = \"{}\"\nflag_field = \"UF_CRM_DOZOR_FLAGS\"\n",
            h.b24_webhook_url()
        ),
        CrmKind::Amocrm => format!(
            "kind = \"amocrm\"\nbase_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\nredirect_uri = \"{}\"\nrefresh_token = \"{}\"\n",
            h.amo_url(),
            c.amo_client_id,
            c.amo_client_secret,
            c.amo_redirect_uri,
            c.amo_refresh_token
        ),
    };
    let tel = match tel {
        TelephonyKind::Comagic => format!(
            "kind = \"comagic\"\nbase_url = \"{}\"\naccess_token = \"{}\"\n",
            h.comagic_url(),
            c.comagic_access_token
        ),
        TelephonyKind::Calltouch => format!(
            "kind = \"calltouch\"\nbase_url = \"{}\"\nsite_id = {}\nclient_api_id = \"{}\"\n",
            h.calltouch_url(),
            c.calltouch_site_id,
            c.calltouch_client_api_id
        ),
    };
    let name = if lang == "en" {
        "Demo Ltd"
    } else {
        "ООО «Демо»"
    };
    format!(
        "[database]\nurl = \"{db_url}\"\n\n[[tenants]]\nid = \"demo\"\nname = \"{name}\"\nlang = \"{lang}\"\n\n\
         [tenants.roles]\nreactivation_manager = \"{reactivation}\"\n\n\
         [tenants.crm]\n{crm}\n[tenants.telephony]\n{tel}\n\
         [tenants.telegram]\nbot_token = \"{}\"\napi_url = \"{}\"\nowner_chat = {OWNER_CHAT}\nhead_of_sales_chat = {HEAD_OF_SALES_CHAT}\n\n\
         [tenants.telegram.managers]\n{managers}",
        c.telegram_bot_token,
        h.telegram_url()
    )
}

/// `text` with `rule` in `mode`: the `mode` line of its `[tenants.rules.RULE]` section is
/// replaced (or added under the header), else the section is appended. For configs of one
/// tenant, as [`tenant_config`] writes them.
pub fn with_rule_mode(text: &str, rule: &str, mode: RuleMode) -> String {
    let header = format!("[tenants.rules.{rule}]");
    let mode_line = format!("mode = \"{}\"", mode_name(mode));
    let Some(at) = text.find(&header) else {
        return format!("{text}\n{header}\n{mode_line}\n");
    };
    let body_start = at + header.len();
    let body_end = text[body_start..]
        .find("\n[")
        .map_or(text.len(), |i| body_start + i);
    // The header's own line end comes first; every other line but an old `mode` stays.
    let kept: String = text[body_start..body_end]
        .lines()
        .skip(1)
        .filter(|l| {
            !l.trim_start()
                .strip_prefix("mode")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|l| format!("\n{l}"))
        .collect();
    let after = &text[body_end..];
    let end = if after.is_empty() { "\n" } else { "" };
    format!("{}\n{mode_line}{kept}{end}{after}", &text[..body_start])
}

/// `text` with every rule that is not `off` by default switched `on`. A real install starts
/// them in shadow; the simulator is no client's CRM, so the demo lets them act.
pub fn rules_on(text: &str) -> String {
    RulesConfig::default()
        .iter()
        .into_iter()
        .filter(|(_, r)| r.mode() != RuleMode::Off)
        .fold(text.to_string(), |t, (name, _)| {
            with_rule_mode(&t, name, RuleMode::On)
        })
}

fn mode_name(mode: RuleMode) -> &'static str {
    match mode {
        RuleMode::Off => "off",
        RuleMode::Shadow => "shadow",
        RuleMode::On => "on",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_mode_is_set_in_place_or_appended() {
        let text = "[[tenants]]\nid = \"a\"\n[tenants.rules.missed_call]\nsla_minutes = 5\nmode = \"shadow\"\n[tenants.roles]\n";
        let t = with_rule_mode(text, "missed_call", RuleMode::On);
        assert_eq!(
            t,
            "[[tenants]]\nid = \"a\"\n[tenants.rules.missed_call]\nmode = \"on\"\nsla_minutes = 5\n[tenants.roles]\n"
        );
        let t = with_rule_mode(&t, "dormant", RuleMode::Off);
        assert!(
            t.ends_with("[tenants.rules.dormant]\nmode = \"off\"\n"),
            "{t}"
        );
        let parsed = crate::config::parse(
            &format!(
                "{}[tenants.crm]\nkind = \"bitrix24\"\nwebhook_url = \"https://a.bitrix24.ru/rest/1/s/\"\n",
                rules_on(text).replace("[tenants.roles]\n", "")
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
}
