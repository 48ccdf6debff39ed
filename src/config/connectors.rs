//! The connectors' sections: the CRM (Bitrix24, amoCRM), the telephony (CoMagic, Calltouch)
//! and Telegram. Each denies unknown keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Invalid, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum CrmConfig {
    Bitrix24(Bitrix24Config),
    Amocrm(AmocrmConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bitrix24Plan {
    /// 2 requests/s, burst 50.
    #[default]
    Standard,
    /// 5 requests/s, burst 250.
    Enterprise,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bitrix24Config {
    /// Inbound webhook URL `https://PORTAL/rest/USER_ID/SECRET/` (the simplest set-up).
    pub webhook_url: Option<Secret>,
    pub webhook_url_file: Option<PathBuf>,
    /// For an OAuth application: the portal address `https://PORTAL`.
    pub portal_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub client_secret_file: Option<PathBuf>,
    /// The refresh token obtained at installation; rotated tokens are kept in the database.
    pub refresh_token: Option<Secret>,
    pub refresh_token_file: Option<PathBuf>,
    /// OAuth server (`https://oauth.bitrix.info` or `https://oauth.bitrix24.tech`).
    #[serde(default = "default_b24_oauth")]
    pub oauth_url: String,
    #[serde(default)]
    pub plan: Bitrix24Plan,
    /// Per-method execution budget in seconds per 10 minutes (OPERATION_TIME_LIMIT).
    #[serde(default = "default_operating_budget")]
    pub operating_budget_secs: f64,
    /// A multiple-string user field (`UF_CRM_...`) on deals, contacts and companies where dozor
    /// keeps its flags ("no activity"); Bitrix24 CRM entities have no tags.
    #[serde(default)]
    pub flag_field: Option<String>,
}

impl Bitrix24Config {
    /// An inbound webhook at `url` with every other key at its config-file default (standard
    /// plan, the usual operating budget, no flag field): what a `[tenants.crm]` section holding
    /// only `webhook_url` gives.
    pub fn webhook(url: impl Into<String>) -> Self {
        Self {
            webhook_url: Some(Secret::new(url)),
            webhook_url_file: None,
            portal_url: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            refresh_token: None,
            refresh_token_file: None,
            oauth_url: default_b24_oauth(),
            plan: Bitrix24Plan::default(),
            operating_budget_secs: default_operating_budget(),
            flag_field: None,
        }
    }
}

pub(super) fn default_b24_oauth() -> String {
    "https://oauth.bitrix.info".into()
}

pub(super) fn default_operating_budget() -> f64 {
    480.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmocrmConfig {
    /// `https://SUBDOMAIN.amocrm.ru` (or `.kommo.com`).
    pub base_url: String,
    /// A long-lived token of a private integration (no refresh needed).
    pub long_lived_token: Option<Secret>,
    pub long_lived_token_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub client_secret_file: Option<PathBuf>,
    pub redirect_uri: Option<String>,
    /// The first refresh token; every rotation is stored in the database before use.
    pub refresh_token: Option<Secret>,
    pub refresh_token_file: Option<PathBuf>,
    /// Requests per second (amoCRM allows 7).
    #[serde(default = "default_amo_rps")]
    pub rate_per_sec: u32,
}

pub(super) fn default_amo_rps() -> u32 {
    7
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TelephonyConfig {
    Comagic(ComagicConfig),
    Calltouch(CalltouchConfig),
}

impl TelephonyConfig {
    /// The configured employee → CRM user map (`employees = { "<employee id>" = "<user id>" }`).
    pub(crate) fn employees(&self) -> &BTreeMap<String, String> {
        match self {
            TelephonyConfig::Comagic(c) => &c.employees,
            TelephonyConfig::Calltouch(c) => &c.employees,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComagicConfig {
    #[serde(default = "default_comagic_url")]
    pub base_url: String,
    pub access_token: Option<Secret>,
    pub access_token_file: Option<PathBuf>,
    /// The IANA zone the account's date-times are in. The Data API's times carry no offset;
    /// by default dozor reads the account's own zone (`get.account` → `timezone`), and this
    /// overrides it.
    #[serde(default, deserialize_with = "comagic_zone")]
    pub timezone: Option<chrono_tz::Tz>,
    /// Telephony employee id → CRM user id, for employees the automatic match (full name,
    /// then extension) gets wrong or cannot make.
    #[serde(default)]
    pub employees: BTreeMap<String, String>,
}

/// `telephony.timezone`: an IANA zone name, read when the config is loaded. The error names its
/// key itself: inside the `kind`-tagged telephony table the loader's path stops at the table.
fn comagic_zone<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<chrono_tz::Tz>, D::Error> {
    let Some(z) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    z.trim().parse().map(Some).map_err(|_| {
        serde::de::Error::custom(Invalid::new(
            "timezone",
            format!(
                "`{z}` is not an IANA time zone (e.g. Asia/Yekaterinburg); leave it out to use the CoMagic account's own zone"
            ),
        ))
    })
}

pub(super) fn default_comagic_url() -> String {
    "https://dataapi.comagic.ru/v2.0".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalltouchConfig {
    #[serde(default = "default_calltouch_url")]
    pub base_url: String,
    pub site_id: u64,
    pub client_api_id: Option<Secret>,
    pub client_api_id_file: Option<PathBuf>,
    /// Telephony employee id → CRM user id, for employees the automatic match (full name,
    /// then extension) gets wrong or cannot make.
    #[serde(default)]
    pub employees: BTreeMap<String, String>,
}

pub(super) fn default_calltouch_url() -> String {
    "https://api.calltouch.ru".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    pub bot_token: Option<Secret>,
    pub bot_token_file: Option<PathBuf>,
    #[serde(default = "default_telegram_url")]
    pub api_url: String,
    /// The owner's chat: daily, weekly and monthly reports.
    pub owner_chat: Option<i64>,
    /// The head of sales' chat: alerts and digests.
    pub head_of_sales_chat: Option<i64>,
    /// Operations chat for self-checks (defaults to the owner chat).
    pub ops_chat: Option<i64>,
    /// Forum topic for reports in the owner chat.
    pub report_topic: Option<i64>,
    /// CRM user id → personal chat id, for tasks dozor assigns.
    #[serde(default)]
    pub managers: BTreeMap<String, i64>,
    /// Chats allowed to use bot commands (the configured chats are always allowed).
    #[serde(default)]
    pub allowed_chats: Vec<i64>,
}

pub(super) fn default_telegram_url() -> String {
    "https://api.telegram.org".into()
}
