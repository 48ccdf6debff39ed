//! A tenant config pointing at a running simulator: what `dozor demo` and the tests use, and
//! what `dozor sim` users can copy. Only the TOML text: reading and checking it is the
//! product's job, through the same parser as any config file.

use super::{Sim, SimHandle, urls};

/// The CRM the config points the tenant at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrmKind {
    Bitrix24,
    Amocrm,
}

/// The telephony the config points the tenant at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelephonyKind {
    Comagic,
    Calltouch,
}

/// Chats the simulated tenant reports to (the Telegram fake accepts any chat id).
pub const OWNER_CHAT: i64 = 100_001;
pub const HEAD_OF_SALES_CHAT: i64 = 100_002;

impl CrmKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bitrix24" => Some(CrmKind::Bitrix24),
            "amocrm" => Some(CrmKind::Amocrm),
            _ => None,
        }
    }
}

impl TelephonyKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "comagic" => Some(TelephonyKind::Comagic),
            "calltouch" => Some(TelephonyKind::Calltouch),
            _ => None,
        }
    }
}

/// A complete config file (database + one tenant `demo`) for the simulator behind `h`.
/// `lang` is `ru` or `en`.
pub fn tenant_config(
    h: &SimHandle,
    crm: CrmKind,
    tel: TelephonyKind,
    db_url: &str,
    lang: &str,
) -> String {
    tenant_config_at(&h.base_url(), &h.sim, crm, tel, db_url, lang)
}

/// [`tenant_config`] for the simulator `sim` served at `base` (`http://127.0.0.1:PORT`): what
/// `GET /_sim/tenant_config` answers to a simulator running as its own process.
pub fn tenant_config_at(
    base: &str,
    sim: &Sim,
    crm: CrmKind,
    tel: TelephonyKind,
    db_url: &str,
    lang: &str,
) -> String {
    let c = &sim.creds;
    let reactivation = sim
        .world()
        .users_with(super::world::Role::Reactivation)
        .next()
        .map(|u| u.id.to_string())
        .unwrap_or_default();
    // Personal chats for the managers (the Telegram fake accepts any chat id).
    let managers: String = sim
        .world()
        .users_with(super::world::Role::Manager)
        .map(|u| format!("\"{}\" = {}\n", u.id, 200_000 + u.id))
        .collect();
    let crm = match crm {
        CrmKind::Bitrix24 => format!(
            "kind = \"bitrix24\"\nwebhook_url = \"{}\"\nflag_field = \"UF_CRM_DOZOR_FLAGS\"\n",
            urls::b24_webhook(base, c)
        ),
        CrmKind::Amocrm => format!(
            "kind = \"amocrm\"\nbase_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\nredirect_uri = \"{}\"\nrefresh_token = \"{}\"\n",
            urls::amo(base),
            c.amo_client_id,
            c.amo_client_secret,
            c.amo_redirect_uri,
            c.amo_refresh_token
        ),
    };
    let tel = match tel {
        TelephonyKind::Comagic => format!(
            "kind = \"comagic\"\nbase_url = \"{}\"\naccess_token = \"{}\"\n",
            urls::comagic(base),
            c.comagic_access_token
        ),
        TelephonyKind::Calltouch => format!(
            "kind = \"calltouch\"\nbase_url = \"{}\"\nsite_id = {}\nclient_api_id = \"{}\"\n",
            urls::calltouch(base),
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
        urls::telegram(base)
    )
}
