//! Typed configuration: one TOML file plus `DOZOR__SECTION__KEY` environment overrides.
//!
//! Loading is strict on purpose: an unknown key is an error (a typo in `mode = "on"` must not
//! silently leave a rule off), and every error names the file, the key and what is allowed.
//! Secrets can be written inline, but every secret key also has a `*_file` twin so that the
//! file itself can stay world-readable while the secrets live in root-only files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveTime, Weekday};
use serde::{Deserialize, Serialize};

use crate::domain::calendar::BusinessCalendar;

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that has to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A configuration problem, with where it is and what would be accepted.
#[derive(Debug, thiserror::Error)]
#[error("config error in {}: {message}", self.place())]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub key: Option<String>,
    pub line: Option<usize>,
    pub message: String,
    /// The `DOZOR__*` variable the bad value came from; the file's line would mislead then.
    pub env_var: Option<String>,
}

impl ConfigError {
    /// "FILE, key `K` (line N)", or "environment variable V (key `K`)" for an override.
    fn place(&self) -> String {
        match &self.env_var {
            Some(var) => format!(
                "environment variable {var}{}",
                self.key
                    .as_ref()
                    .map(|k| format!(" (key `{k}`)"))
                    .unwrap_or_default()
            ),
            None => format!(
                "{}{}",
                file_label(&self.file),
                key_label(&self.key, &self.line)
            ),
        }
    }
}

fn file_label(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "<built-in config>".into())
}

fn key_label(key: &Option<String>, line: &Option<usize>) -> String {
    match (key, line) {
        (Some(k), Some(l)) => format!(", key `{k}` (line {l})"),
        (Some(k), None) => format!(", key `{k}`"),
        (None, Some(l)) => format!(", line {l}"),
        (None, None) => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The schema. Every struct denies unknown fields; defaults match config/dozor.example.toml.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the SQLite database and other state live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Thresholds of the self-checks reported to the ops chat.
    #[serde(default)]
    pub selfcheck: crate::server::selfcheck::SelfCheckConfig,
    /// How failing actions are retried before they are parked as `dead`.
    #[serde(default)]
    pub ledger: LedgerConfig,
}

/// Retries of actions that fail transiently (CRM or Telegram errors that may pass) or panic:
/// at most `max_attempts`, waiting `retry_first_secs`, then twice as long each time up to
/// `retry_max_secs`. Then the action is parked as `dead`, reported once to the ops chat and
/// left for `dozor retry KEY`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    pub max_attempts: u32,
    pub retry_first_secs: u64,
    pub retry_max_secs: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        let p = crate::store::RetryPolicy::default();
        LedgerConfig {
            max_attempts: p.max_attempts,
            retry_first_secs: p.first_wait.as_secs(),
            retry_max_secs: p.max_wait.as_secs(),
        }
    }
}

impl LedgerConfig {
    pub fn policy(&self) -> crate::store::RetryPolicy {
        crate::store::RetryPolicy {
            max_attempts: self.max_attempts,
            first_wait: std::time::Duration::from_secs(self.retry_first_secs),
            max_wait: std::time::Duration::from_secs(self.retry_max_secs),
        }
    }
}

/// Several `dozor run` instances on one PostgreSQL database share the tenants through leases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This instance's name in the lease table; default `HOSTNAME:PID`.
    pub instance_id: Option<String>,
    /// Seconds a tenant lease lasts without renewal: a dead instance's tenants are taken over
    /// this long after its last renewal.
    pub lease_ttl_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            instance_id: None,
            lease_ttl_secs: 60,
        }
    }
}

impl ClusterConfig {
    /// The configured instance id, else `HOSTNAME:PID` (unique per process on one host).
    pub fn instance_id(&self) -> String {
        if let Some(id) = &self.instance_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "dozor".into());
        format!("{host}:{}", std::process::id())
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `dozor=debug,sqlx=warn`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` or `postgres://user:pass@host/db`; empty = SQLite file
    /// `dozor.db` under `data_dir`.
    pub url: Option<Secret>,
    pub url_file: Option<PathBuf>,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            url_file: None,
            max_connections: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub enabled: bool,
    /// Address of /healthz, /readyz, /metrics and the webhook receivers.
    pub listen: String,
    /// Connections served at once. At the cap a new connection pushes out the one idle the
    /// longest, or is closed at once when all are busy: the process never runs out of file
    /// descriptors however many clients connect.
    pub max_connections: usize,
    /// Bearer token /metrics asks for (`Authorization: Bearer TOKEN`); none: /metrics is open.
    pub metrics_token: Option<Secret>,
    pub metrics_token_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            enabled: true,
            listen: "127.0.0.1:9187".into(),
            max_connections: 512,
            metrics_token: None,
            metrics_token_file: None,
        }
    }
}

impl ServerConfig {
    /// Most connections `server.max_connections` may allow: far below the 65536 descriptors the
    /// systemd unit gives, leaving room for the database, the clients and the logs.
    pub const MAX_CONNECTIONS: usize = 16_384;

    /// A warning when metrics are reachable from other hosts without a token; `None` when
    /// the server is off, listens on loopback, or /metrics asks for a token.
    pub fn exposure_warning(&self) -> Option<String> {
        let addr = self.listen.parse::<std::net::SocketAddr>().ok()?;
        if !self.enabled || addr.ip().is_loopback() || self.metrics_token.is_some() {
            return None;
        }
        Some(format!(
            "server.listen is {} (not loopback) and /metrics has no token: anyone who reaches \
             this address reads tenant names and figures; set server.metrics_token_file, or \
             listen on 127.0.0.1 behind a proxy",
            self.listen
        ))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Seconds between polling cycles.
    pub interval_secs: u64,
    /// Each incremental read starts this many seconds before the last one's newest change, so
    /// records saved while a page was being read are not missed.
    pub overlap_secs: u64,
    /// How many days of telephony history the first sync reads.
    pub telephony_initial_days: u32,
    /// Seconds between re-reads of users and pipelines.
    pub directory_refresh_secs: u64,
    /// Seconds between deletion sweeps of CRMs without a deletion feed.
    pub deletion_sweep_secs: u64,
    /// Each telephony read starts this many seconds before the previous one ended.
    pub telephony_overlap_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval_secs: 300,
            overlap_secs: 120,
            telephony_initial_days: 30,
            directory_refresh_secs: 3600,
            deletion_sweep_secs: 6 * 3600,
            telephony_overlap_secs: 2 * 3600,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Ru,
    En,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Short stable name: lowercase letters, digits, `-` and `_`. Used in ledger keys.
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_tz")]
    pub timezone: String,
    #[serde(default)]
    pub lang: Lang,
    pub crm: CrmConfig,
    #[serde(default)]
    pub telephony: Option<TelephonyConfig>,
    #[serde(default)]
    pub telegram: Option<TelegramConfig>,
    #[serde(default)]
    pub calendar: CalendarConfig,
    #[serde(default)]
    pub reports: ReportsConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub roles: RolesConfig,
    /// Who gets the lead of an unknown caller.
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub marketing: MarketingConfig,
    /// Tokens of the webhook receivers; a receiver without its token stays off.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Accept plain `http://` to a host other than this one for this tenant's CRM, telephony
    /// and Telegram URLs, which all carry secrets. Off: such a URL is refused at load.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// Secrets that authenticate pushes from the CRM, the telephony and Telegram. Each receiver is
/// enabled by setting its token (inline or in a `*_file`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Bitrix24 outgoing webhook / app `application_token` (sent as `auth[application_token]`).
    pub bitrix24_token: Option<Secret>,
    pub bitrix24_token_file: Option<PathBuf>,
    /// Secret path segment of the amoCRM webhook URL.
    pub amocrm_secret: Option<Secret>,
    pub amocrm_secret_file: Option<PathBuf>,
    /// Secret path segment of the CoMagic notification URL.
    pub comagic_secret: Option<Secret>,
    pub comagic_secret_file: Option<PathBuf>,
    /// `secret_token` given to Telegram's setWebhook (header X-Telegram-Bot-Api-Secret-Token).
    pub telegram_secret: Option<Secret>,
    pub telegram_secret_file: Option<PathBuf>,
}

/// How clients are handed to marketing (after three unanswered calls).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketingConfig {
    /// The flag (amoCRM tag; Bitrix24 `flag_field` value) that puts a client into retargeting.
    pub retarget_tag: String,
}

impl Default for MarketingConfig {
    fn default() -> Self {
        MarketingConfig {
            retarget_tag: "ретаргетинг".into(),
        }
    }
}

/// Who does what in the sales department, by CRM user id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// Takes over dormant clients ("нулевые") with their deals and tasks.
    pub reactivation_manager: Option<String>,
    /// Managers on duty for missed calls from clients without an owner, in order.
    #[serde(default)]
    pub on_duty: Vec<String>,
    /// CRM users whose clients dozor never reassigns (e.g. the owner's own accounts).
    #[serde(default)]
    pub protected: Vec<String>,
}

/// How an on-duty manager is picked when routing falls through to `roles.on_duty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDutyPick {
    /// Always the first manager on the list (the others stand in when it is changed).
    #[default]
    First,
    /// In turn: each new lead goes to the next manager on the list.
    RoundRobin,
}

/// Who owns the lead dozor creates for an unknown caller. The first match wins: the virtual
/// number the client dialled, then the call's source, then its UTM source, then the employee
/// who took the call, then a manager on duty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Virtual number (any spelling; stored in E.164 after loading) → CRM user id.
    #[serde(default)]
    pub virtual_numbers: BTreeMap<String, String>,
    /// Call source or UTM source (case-insensitive; stored lowercase after loading) → CRM user id.
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    #[serde(default)]
    pub on_duty: OnDutyPick,
}

impl RoutingConfig {
    /// Checks the routes and brings their keys to the form calls are compared in (E.164,
    /// lowercase). Errors name the key under `routing` that is wrong.
    fn normalize(&mut self) -> Result<(), (String, String)> {
        let mut numbers = BTreeMap::new();
        for (raw, user) in &self.virtual_numbers {
            let key = format!("routing.virtual_numbers.\"{raw}\"");
            let e164 = crate::domain::phone::normalize(raw).map_err(|e| {
                (
                    key.clone(),
                    format!("`{raw}` is not a phone number ({e}); write the virtual number as the client dials it, e.g. \"+7 495 123-45-67\""),
                )
            })?;
            check_user(&key, user)?;
            if numbers.insert(e164.clone(), user.clone()).is_some() {
                return Err((
                    key,
                    format!("{e164} is routed twice (two spellings of one number)"),
                ));
            }
        }
        self.virtual_numbers = numbers;
        let mut sources = BTreeMap::new();
        for (raw, user) in &self.sources {
            let key = format!("routing.sources.\"{raw}\"");
            let source = raw.trim().to_lowercase();
            if source.is_empty() {
                return Err((key, "the source must not be empty".into()));
            }
            check_user(&key, user)?;
            if sources.insert(source.clone(), user.clone()).is_some() {
                return Err((
                    key,
                    format!(
                        "source `{source}` is routed twice (sources are compared case-insensitively)"
                    ),
                ));
            }
        }
        self.sources = sources;
        Ok(())
    }

    /// The user a source (call source or UTM source) is routed to.
    pub fn by_source(&self, source: &str) -> Option<&String> {
        self.sources.get(&source.trim().to_lowercase())
    }
}

fn check_user(key: &str, user: &str) -> Result<(), (String, String)> {
    if user.trim().is_empty() {
        return Err((key.into(), "the CRM user id must not be empty".into()));
    }
    Ok(())
}

fn default_tz() -> String {
    "Europe/Moscow".into()
}

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

fn default_b24_oauth() -> String {
    "https://oauth.bitrix.info".into()
}

fn default_operating_budget() -> f64 {
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

fn default_amo_rps() -> u32 {
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
    pub fn employees(&self) -> &BTreeMap<String, String> {
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
    /// overrides it (validated when the config is loaded).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Telephony employee id → CRM user id, for employees the automatic match (full name,
    /// then extension) gets wrong or cannot make.
    #[serde(default)]
    pub employees: BTreeMap<String, String>,
}

impl ComagicConfig {
    /// The configured zone override, once validated (`None` when absent or invalid).
    pub fn timezone_override(&self) -> Option<chrono_tz::Tz> {
        self.timezone.as_deref().and_then(|z| z.trim().parse().ok())
    }
}

fn default_comagic_url() -> String {
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

fn default_calltouch_url() -> String {
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

fn default_telegram_url() -> String {
    "https://api.telegram.org".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarConfig {
    /// Working hours, `HH:MM-HH:MM` in the tenant's time zone.
    pub work_hours: String,
    /// Working days: `mon`..`sun`.
    pub work_days: Vec<String>,
    /// Non-working dates, `YYYY-MM-DD`.
    pub holidays: Vec<String>,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            work_hours: "09:00-18:00".into(),
            work_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            holidays: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// Cron expressions (sec min hour day month weekday) in the tenant's time zone.
    pub daily: String,
    pub weekly: String,
    pub monthly: String,
    /// Monthly revenue plan per CRM user id, for plan %.
    pub plans: BTreeMap<String, f64>,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            daily: "0 0 9 * * *".into(),
            weekly: "0 0 9 * * Mon".into(),
            monthly: "0 0 9 1 * *".into(),
            plans: BTreeMap::new(),
        }
    }
}

/// Whether a rule acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    /// Not evaluated.
    Off,
    /// Evaluated and reported ("would have created 14 tasks"), nothing written.
    Shadow,
    /// Evaluated and acted on.
    On,
}

/// Settings every rule has.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub mode: RuleMode,
    /// Pipelines the rule applies to (empty = all).
    #[serde(default)]
    pub pipelines: Vec<String>,
    /// Stages the rule applies to (empty = all).
    #[serde(default)]
    pub stages: Vec<String>,
    /// Rule-specific numbers (minutes, hours, days), see the example config.
    #[serde(flatten)]
    pub params: BTreeMap<String, f64>,
}

impl RuleConfig {
    fn with(mode: RuleMode, params: &[(&str, f64)]) -> Self {
        RuleConfig {
            mode,
            pipelines: Vec::new(),
            stages: Vec::new(),
            params: params.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    /// A number of this rule, or the built-in default when unset.
    pub fn param(&self, name: &str) -> f64 {
        self.params.get(name).copied().unwrap_or(0.0)
    }
}

/// The largest number a rule setting takes.
pub const MAX_RULE_PARAM: f64 = 1_000_000.0;

/// Every rule with the methodology's defaults (DESIGN.md). Omitted rules keep their defaults;
/// a rule's omitted numbers keep theirs.
#[derive(Debug, Clone)]
pub struct RulesConfig(pub BTreeMap<String, RuleConfig>);

/// Rule names, default modes and default numbers.
///
/// Every rule that writes (CRM changes or Telegram messages) starts in `shadow`: a first install
/// with no `[tenants.rules.*]` sections must only report what it would do, never change a
/// client's CRM before someone has reviewed the shadow output and switched a rule `on`.
/// `client_without_deal` creates deals for every active client, so it stays `off` until asked.
pub fn rule_defaults() -> BTreeMap<String, RuleConfig> {
    use RuleMode::*;
    [
        (
            "unknown_caller",
            RuleConfig::with(
                Shadow,
                &[("lookback_hours", 24.0), ("first_task_minutes", 15.0)],
            ),
        ),
        (
            "call_not_in_crm",
            RuleConfig::with(Shadow, &[("lookback_hours", 24.0)]),
        ),
        (
            "lead_without_deal",
            RuleConfig::with(Shadow, &[("after_minutes", 15.0), ("lookback_hours", 72.0)]),
        ),
        (
            "missed_call",
            RuleConfig::with(Shadow, &[("sla_minutes", 15.0), ("lookback_hours", 24.0)]),
        ),
        (
            "lead_reaction",
            RuleConfig::with(Shadow, &[("yellow_minutes", 15.0), ("alert_minutes", 30.0)]),
        ),
        ("deal_without_task", RuleConfig::with(Shadow, &[])),
        (
            "overdue_tasks",
            RuleConfig::with(Shadow, &[("realert_hours", 4.0), ("escalate_days", 3.0)]),
        ),
        (
            "no_activity",
            RuleConfig::with(Shadow, &[("top_days", 30.0), ("other_days", 90.0)]),
        ),
        (
            "dormant",
            RuleConfig::with(
                Shadow,
                &[
                    ("top_days", 60.0),
                    ("other_days", 180.0),
                    ("one_time_days", 90.0),
                ],
            ),
        ),
        ("client_without_deal", RuleConfig::with(Off, &[])),
        ("unpaid_invoice", RuleConfig::with(Shadow, &[("days", 2.0)])),
        (
            "three_unanswered",
            RuleConfig::with(Shadow, &[("attempts", 3.0)]),
        ),
        ("manager_notify", RuleConfig::with(Shadow, &[])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl RulesConfig {
    /// The names of the rules in `mode`, in name order.
    pub fn in_mode(&self, mode: RuleMode) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, r)| r.mode == mode)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// One line for the start-up log: which rules act, which only report, which are off, so
    /// nobody has to read the config to know whether dozor is writing to the CRM.
    pub fn summary(&self, tenant: &str, dry_run: bool) -> String {
        let list = |mode| match self.in_mode(mode) {
            v if v.is_empty() => "none".to_string(),
            v => v.join(", "),
        };
        let mut line = format!(
            "tenant {tenant}: rules on (write to the CRM and Telegram): {}; in shadow (report what they would do, write nothing): {}; off: {}",
            list(RuleMode::On),
            list(RuleMode::Shadow),
            list(RuleMode::Off)
        );
        if dry_run {
            line.push_str(" (--dry-run: every rule runs in shadow this time)");
        } else if !self.in_mode(RuleMode::Shadow).is_empty() {
            line.push_str(
                "; review the shadow output with `dozor audit --state shadow`, then set mode = \"on\" in [tenants.rules.NAME]",
            );
        }
        line
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig(rule_defaults())
    }
}

impl<'de> Deserialize<'de> for RulesConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // No deny_unknown_fields here: serde cannot combine it with flatten, so unknown keys land
        // in `params` and are refused below with the list of allowed ones.
        #[derive(Deserialize)]
        struct Partial {
            mode: Option<RuleMode>,
            #[serde(default)]
            pipelines: Vec<String>,
            #[serde(default)]
            stages: Vec<String>,
            #[serde(flatten)]
            params: BTreeMap<String, serde_json::Value>,
        }
        let given: BTreeMap<String, Partial> = BTreeMap::deserialize(d)?;
        let mut rules = rule_defaults();
        for (name, p) in given {
            let Some(rule) = rules.get_mut(&name) else {
                let known = rule_defaults().into_keys().collect::<Vec<_>>().join(", ");
                return Err(D::Error::custom(format!(
                    "unknown rule `{name}`; known rules: {known}"
                )));
            };
            for (k, v) in p.params {
                if !rule.params.contains_key(&k) {
                    let allowed: Vec<String> = rule.params.keys().cloned().collect();
                    return Err(D::Error::custom(format!(
                        "rule `{name}` has no setting `{k}`; allowed: mode, pipelines, stages{}{}",
                        if allowed.is_empty() { "" } else { ", " },
                        allowed.join(", ")
                    )));
                }
                let n = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
                match n {
                    // Bounded: minutes, hours, days and counts far beyond any real setting
                    // would overflow the time arithmetic the rules do with them.
                    Some(n) if n.is_finite() && (0.0..=MAX_RULE_PARAM).contains(&n) => {
                        rule.params.insert(k, n);
                    }
                    _ => {
                        return Err(D::Error::custom(format!(
                            "rule `{name}` setting `{k}` must be a number from 0 to {MAX_RULE_PARAM}, got {v}"
                        )));
                    }
                }
            }
            if let Some(m) = p.mode {
                rule.mode = m;
            }
            rule.pipelines = p.pipelines;
            rule.stages = p.stages;
        }
        Ok(RulesConfig(rules))
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------------------------

/// Where `--config` is looked for when not given.
pub const DEFAULT_PATHS: [&str; 2] = ["./config/dozor.toml", "/etc/dozor/dozor.toml"];

/// A loaded, validated configuration and the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
    /// Risks the config accepts but ops should see (logged at start, printed by `dozor check`).
    pub warnings: Vec<String>,
}

/// Finds the config file: the given path, else the first default path that exists.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        if !p.exists() {
            return Err(ConfigError {
                file: Some(p.to_path_buf()),
                key: None,
                line: None,
                env_var: None,
                message: "file not found (check --config)".into(),
            });
        }
        return Ok(p.to_path_buf());
    }
    DEFAULT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| ConfigError {
            file: None,
            key: None,
            line: None,
            env_var: None,
            message: format!(
                "no config file: looked for {}; pass --config PATH or copy config/dozor.example.toml",
                DEFAULT_PATHS.join(" and ")
            ),
        })
}

/// Loads and validates the config file at `path` with `DOZOR__*` environment overrides.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_path_buf()),
        key: None,
        line: None,
        env_var: None,
        message: format!("cannot read: {e}"),
    })?;
    let env = config::Environment::with_prefix("DOZOR")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true);
    let mut loaded = parse(&text, Some(path), Some(env))?;
    loaded.file = Some(path.to_path_buf());
    Ok(loaded)
}

/// Parses config text (used by `load`, by `dozor demo` and by tests).
pub fn parse(
    text: &str,
    file: Option<&Path>,
    env: Option<config::Environment>,
) -> Result<Loaded, ConfigError> {
    // The keys the environment sets: an error about one of them names the variable, because
    // the file's line (if the file has the key at all) is not where the bad value is.
    let env_keys = match &env {
        Some(env) => env_override_keys(env).map_err(|message| ConfigError {
            file: file.map(Path::to_path_buf),
            key: None,
            line: None,
            message,
            env_var: None,
        })?,
        None => BTreeMap::new(),
    };
    let err = |key: Option<String>, message: String| match key
        .as_deref()
        .and_then(|k| env_keys.get(k))
    {
        Some(var) => ConfigError {
            file: file.map(Path::to_path_buf),
            env_var: Some(var.clone()),
            key,
            line: None,
            message: if message.starts_with("unknown field") {
                format!(
                    "{message}; fix the variable's name (DOZOR__SECTION__KEY, double underscores) or unset it"
                )
            } else {
                message
            },
        },
        None => ConfigError {
            file: file.map(Path::to_path_buf),
            line: key.as_deref().and_then(|k| locate_key(text, k)),
            key,
            message,
            env_var: None,
        },
    };
    // Syntax first, with toml's own line/column message.
    let table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map(|s| text[..s.start].lines().count().max(1));
            return Err(ConfigError {
                file: file.map(Path::to_path_buf),
                key: None,
                line,
                message: format!("invalid TOML: {}", e.message()),
                env_var: None,
            });
        }
    };
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    if let Some(env) = env {
        builder = builder.add_source(env);
    }
    let built = builder.build().map_err(|e| err(None, e.to_string()))?;
    let config: Config = serde_path_to_error::deserialize(built).map_err(|e| {
        let path = e.path().to_string();
        let path = (path != "." && !path.is_empty()).then_some(path);
        let inner = e.into_inner().to_string();
        match missing_field(&inner) {
            Some(field) => missing_key_error(text, &table, path.as_deref(), field, &err),
            None => err(path, clean_serde_message(&inner)),
        }
    })?;
    let mut config = config;
    validate(&mut config).map_err(|(key, msg)| err(Some(key), msg))?;
    let warnings = insecure_http_check(&config).map_err(|(key, msg)| err(Some(key), msg))?;
    Ok(Loaded {
        config,
        file: None,
        warnings,
    })
}

/// The dotted keys the `DOZOR__*` environment sets, each with the variable's name as an operator
/// writes it (`sync.interval_secs` → `DOZOR__SYNC__INTERVAL_SECS`).
fn env_override_keys(env: &config::Environment) -> Result<BTreeMap<String, String>, String> {
    use config::Source;
    let keys = env.collect().map_err(|_| {
        // The crate's message quotes the raw value, which may be a secret (a database URL).
        "an environment variable DOZOR__* is not valid UTF-8: fix or unset it (`env | grep ^DOZOR__`)"
            .to_string()
    })?;
    Ok(keys
        .into_keys()
        .map(|k| {
            let var = format!("DOZOR__{}", k.replace('.', "__").to_uppercase());
            (k, var)
        })
        .collect())
}

/// The field of a "missing configuration field" error from the config crate, which writes the
/// whole path glued together (`"tenants[1]id"`, `"tenants[0].crm.kind"`): its last segment.
fn missing_field(msg: &str) -> Option<&str> {
    let rest = msg
        .strip_prefix("missing configuration field \"")
        .or_else(|| msg.strip_prefix("missing field `"))?;
    let path = rest.split(['"', '`']).next()?;
    path.rsplit(['.', ']']).next().filter(|f| !f.is_empty())
}

/// The error for a required key left out: which table lacks it, where that table starts, and
/// what to write. A tenant is named by its position and name, since it has no id to go by.
fn missing_key_error(
    text: &str,
    table: &toml::Table,
    path: Option<&str>,
    field: &str,
    err: &dyn Fn(Option<String>, String) -> ConfigError,
) -> ConfigError {
    let key = match path {
        Some(p) => format!("{p}.{field}"),
        None => field.to_string(),
    };
    let tenant = path.and_then(tenant_index);
    let mut e = err(
        Some(key.clone()),
        format!("the required key `{field}` is missing"),
    );
    let Some(i) = tenant else {
        return e;
    };
    let block = tenant_label(table, i);
    e.message = match (path, field) {
        (Some(p), "id") if p == format!("tenants[{i}]") => format!(
            "{block} has no `id`: add a line `id = \"{}\"` under its [[tenants]] header (lowercase letters, digits, `-` and `_`; unique; part of every action-ledger key, so do not change it once dozor has run)",
            suggested_id(table, i)
        ),
        (Some(p), "crm") if p == format!("tenants[{i}]") => format!(
            "{block} has no [tenants.crm] section: add one with `kind = \"bitrix24\"` or `kind = \"amocrm\"` (see config/dozor.example.toml)"
        ),
        _ => format!("{block}: the required key `{field}` is missing"),
    };
    if e.env_var.is_none() && path == Some(format!("tenants[{i}]").as_str()) {
        e.line = tenant_header_line(text, i);
    }
    e
}

/// `3` from `tenants[3]` or `tenants[3].crm`.
fn tenant_index(path: &str) -> Option<usize> {
    path.strip_prefix("tenants[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

/// "tenant #2 (name "Beta")": how a person finds the block in the file.
fn tenant_label(table: &toml::Table, i: usize) -> String {
    let name = table
        .get("tenants")
        .and_then(|t| t.as_array())
        .and_then(|a| a.get(i))
        .and_then(|t| t.get("name"))
        .and_then(|n| n.as_str());
    match name {
        Some(n) => format!("tenant #{} (name \"{n}\")", i + 1),
        None => format!("tenant #{} (it has no name either)", i + 1),
    }
}

/// An id for the example line: the tenant's name when it makes a valid id, else a placeholder.
fn suggested_id(table: &toml::Table, i: usize) -> String {
    let name = table
        .get("tenants")
        .and_then(|t| t.as_array())
        .and_then(|a| a.get(i))
        .and_then(|t| t.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    id_from_name(name).unwrap_or_else(|| format!("tenant{}", i + 1))
}

/// "Beta Sales" → "beta-sales"; `None` when the name makes no valid id (Cyrillic, punctuation).
fn id_from_name(name: &str) -> Option<String> {
    let slug: String = name
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .collect();
    valid_tenant_id(&slug).then_some(slug)
}

fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The 1-based line of the `[[tenants]]` header of tenant `i` (0-based).
fn tenant_header_line(text: &str, i: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[tenants]]")
        .nth(i)
        .map(|(n, _)| n + 1)
}

/// serde's messages end with "for key `x`" or "in ..." from the config crate; the key is
/// reported separately, so keep only the core.
fn clean_serde_message(msg: &str) -> String {
    let msg = msg.split(" for key `").next().unwrap_or(msg);
    msg.split(" in TOML").next().unwrap_or(msg).to_string()
}

/// The line where the last segment of a dotted key is assigned (best effort, for messages).
/// A key under `tenants[i]` is looked for inside that tenant's block only, so an error in the
/// second tenant does not point at the first one's line.
fn locate_key(text: &str, key: &str) -> Option<usize> {
    // A quoted last segment (`routing.sources."yandex.direct"`) may hold dots itself.
    let quoted = key
        .strip_suffix('"')
        .and_then(|k| k.rfind('"').map(|i| &key[i..]));
    let last = match quoted {
        Some(q) => q,
        None => key.rsplit('.').next()?.split('[').next()?,
    };
    let (from, to) = match tenant_index(key) {
        Some(i) => (
            tenant_header_line(text, i)?,
            tenant_header_line(text, i + 1).unwrap_or(usize::MAX),
        ),
        None => (0, usize::MAX),
    };
    // A table is found by its header, written without the list indexes: `[tenants.crm]`.
    let header = format!("[{}]", strip_indexes(key));
    text.lines()
        .enumerate()
        .skip(from)
        .take_while(|(n, _)| n + 1 < to)
        .find(|(_, l)| {
            let t = l.trim_start();
            t.strip_prefix(last)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || t.trim_end() == header
        })
        .map(|(n, _)| n + 1)
}

/// `tenants[0].crm` → `tenants.crm`.
fn strip_indexes(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut depth = 0usize;
    for c in key.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Keys whose inline value is a secret (their `*_file` twins are not).
const SECRET_KEYS: [&str; 13] = [
    "url",
    "webhook_url",
    "client_secret",
    "refresh_token",
    "long_lived_token",
    "access_token",
    "client_api_id",
    "bot_token",
    "bitrix24_token",
    "amocrm_secret",
    "comagic_secret",
    "telegram_secret",
    "metrics_token",
];

/// A warning when the config file at `path` holds secrets inline and its group or other users
/// may read it; `None` when it is fine. The daemon logs it at start and `dozor check` prints it.
pub fn permission_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o044 == 0 {
            return None;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let inline: Vec<&str> = SECRET_KEYS
            .iter()
            .copied()
            .filter(|k| {
                text.lines().any(|l| {
                    let t = l.trim_start();
                    t.strip_prefix(k).is_some_and(|rest| {
                        let v = rest.trim_start();
                        // `url` is a secret only as a database URL with a password.
                        v.starts_with('=') && (*k != "url" || v.contains("://") && v.contains('@'))
                    })
                })
            })
            .collect();
        if inline.is_empty() {
            return None;
        }
        Some(format!(
            "config file {} holds secrets inline ({}) and is readable by {} (mode {:o}): run `chmod 600 {}` or move the secrets to *_file keys",
            path.display(),
            inline.join(", "),
            if mode & 0o004 != 0 {
                "all users"
            } else {
                "its group"
            },
            mode & 0o777,
            path.display()
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Reads a secret given inline or in a file; exactly one of the two may be set.
fn secret(
    inline: &mut Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<(), (String, String)> {
    match (inline.as_ref(), file) {
        (Some(_), Some(_)) => Err((
            key.to_string(),
            format!("set either `{key}` or `{key}_file`, not both"),
        )),
        (None, Some(f)) => {
            let s = std::fs::read_to_string(f).map_err(|e| {
                (
                    format!("{key}_file"),
                    format!("cannot read secret file {}: {e}", f.display()),
                )
            })?;
            let s = s.trim().to_string();
            if s.is_empty() {
                return Err((
                    format!("{key}_file"),
                    format!("secret file {} is empty", f.display()),
                ));
            }
            *inline = Some(Secret(s));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Fails naming every `(key, present)` that is absent: "`what` (missing: a, b)".
fn require_all(key: &str, what: &str, keys: &[(&str, bool)]) -> Result<(), (String, String)> {
    let missing: Vec<&str> = keys.iter().filter(|(_, ok)| !ok).map(|(n, _)| *n).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err((
            key.to_string(),
            format!("{what} (missing: {})", missing.join(", ")),
        ))
    }
}

fn require_url(value: &str, key: &str) -> Result<(), (String, String)> {
    check_url(value, key, false)
}

/// Like [`require_url`] for a URL that is itself a secret (a Bitrix24 webhook URL): an error
/// never echoes it, since config errors end up in terminals, tickets and journald.
fn require_secret_url(value: &str, key: &str) -> Result<(), (String, String)> {
    check_url(value, key, true)
}

/// `…/rest/USER_ID/SECRET/…` with a numeric user id and a secret: the shape every request and
/// `http::redact_url` rely on (a URL of another shape would reach logs unredacted).
fn webhook_shape_ok(value: &str) -> bool {
    let Ok(u) = url::Url::parse(value) else {
        return false;
    };
    let segments: Vec<&str> = u.path_segments().map(|s| s.collect()).unwrap_or_default();
    segments.windows(3).any(|w| {
        w[0] == "rest"
            && !w[1].is_empty()
            && w[1].chars().all(|c| c.is_ascii_digit())
            && !w[2].is_empty()
    })
}

fn check_url(value: &str, key: &str, secret: bool) -> Result<(), (String, String)> {
    let shown = || {
        // `user:password@` would be a secret in any URL.
        if secret || value.contains('@') {
            "; the value is not shown, as it holds a secret".to_string()
        } else {
            format!(": `{value}`")
        }
    };
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(()),
        Ok(u) => Err((
            key.into(),
            format!("must be an http(s) URL, got scheme `{}`", u.scheme()),
        )),
        Err(e) => Err((key.into(), format!("not a URL ({e}){}", shown()))),
    }
}

/// The server's connection cap and its /metrics token (inline or from its file).
fn validate_server(s: &mut ServerConfig) -> Result<(), (String, String)> {
    secret(
        &mut s.metrics_token,
        &s.metrics_token_file,
        "server.metrics_token",
    )?;
    if s.metrics_token
        .as_ref()
        .is_some_and(|t| t.expose().trim().is_empty())
    {
        return Err((
            "server.metrics_token".into(),
            "is empty: set a token (e.g. `openssl rand -hex 32`) or remove the key".into(),
        ));
    }
    if !(1..=ServerConfig::MAX_CONNECTIONS).contains(&s.max_connections) {
        return Err((
            "server.max_connections".into(),
            format!(
                "must be 1 to {}, got {}",
                ServerConfig::MAX_CONNECTIONS,
                s.max_connections
            ),
        ));
    }
    Ok(())
}

/// The URLs of a tenant that carry a secret when dozor calls them: (key, URL, what travels).
fn secret_bearing_urls(t: &TenantConfig) -> Vec<(&'static str, &str, &'static str)> {
    let mut urls = Vec::new();
    match &t.crm {
        CrmConfig::Bitrix24(b) => {
            if let Some(w) = &b.webhook_url {
                urls.push(("crm.webhook_url", w.expose(), "the webhook secret"));
            }
            if let Some(p) = &b.portal_url {
                urls.push(("crm.portal_url", p.as_str(), "the OAuth access token"));
            }
            urls.push((
                "crm.oauth_url",
                b.oauth_url.as_str(),
                "the client secret and refresh token",
            ));
        }
        CrmConfig::Amocrm(a) => {
            urls.push(("crm.base_url", a.base_url.as_str(), "the access token"))
        }
    }
    match &t.telephony {
        Some(TelephonyConfig::Comagic(m)) => urls.push((
            "telephony.base_url",
            m.base_url.as_str(),
            "the access token",
        )),
        Some(TelephonyConfig::Calltouch(m)) => urls.push((
            "telephony.base_url",
            m.base_url.as_str(),
            "the API key (clientApiId)",
        )),
        None => {}
    }
    if let Some(tg) = &t.telegram {
        urls.push(("telegram.api_url", tg.api_url.as_str(), "the bot token"));
    }
    urls
}

/// The host of a plain `http://` URL that leaves this machine; `None` for https, loopback and
/// anything unparsable (already refused by `validate`).
fn plain_http_host(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if u.scheme() != "http" {
        return None;
    }
    let loopback = match u.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    (!loopback).then(|| u.host_str().unwrap_or_default().to_string())
}

/// Refuses a secret-bearing URL that is plain `http://` to another host, where anyone on the
/// path can read the secret, unless the tenant says `allow_insecure_http = true`; then it is
/// accepted with a warning for the log and `dozor check`.
fn insecure_http_check(c: &Config) -> Result<Vec<String>, (String, String)> {
    let mut warnings = Vec::new();
    for (i, t) in c.tenants.iter().enumerate() {
        for (key, url, what) in secret_bearing_urls(t) {
            let Some(host) = plain_http_host(url) else {
                continue;
            };
            let key = format!("tenants[{i}].{key}");
            if !t.allow_insecure_http {
                return Err((
                    key,
                    format!(
                        "plain http:// to {host} would send {what} unencrypted: use https://, or, only if the network to {host} is trusted (a VPN, the same LAN), set `allow_insecure_http = true` in this tenant's [[tenants]] block"
                    ),
                ));
            }
            warnings.push(format!(
                "{key}: plain http:// to {host} sends {what} unencrypted (allowed by tenants[{i}].allow_insecure_http = true); switch to https:// when you can"
            ));
        }
    }
    Ok(warnings)
}

/// Semantic checks that types alone cannot express, and secret files resolved.
fn validate(c: &mut Config) -> Result<(), (String, String)> {
    secret(&mut c.database.url, &c.database.url_file, "database.url")?;
    if let Some(u) = &c.database.url {
        let u = u.expose();
        if !(u.starts_with("sqlite:")
            || u.starts_with("postgres://")
            || u.starts_with("postgresql://"))
        {
            return Err((
                "database.url".into(),
                "must start with sqlite:, postgres:// or postgresql://".into(),
            ));
        }
    }
    if c.database.max_connections == 0 {
        return Err((
            "database.max_connections".into(),
            "must be at least 1".into(),
        ));
    }
    validate_server(&mut c.server)?;
    if c.server.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err((
            "server.listen".into(),
            format!(
                "must be IP:PORT (e.g. 127.0.0.1:9187), got `{}`",
                c.server.listen
            ),
        ));
    }
    if !(1..=100).contains(&c.ledger.max_attempts) {
        return Err((
            "ledger.max_attempts".into(),
            format!("must be 1 to 100, got {}", c.ledger.max_attempts),
        ));
    }
    if !(1..=86_400).contains(&c.ledger.retry_first_secs)
        || !(c.ledger.retry_first_secs..=7 * 86_400).contains(&c.ledger.retry_max_secs)
    {
        return Err((
            "ledger.retry_first_secs".into(),
            "retry_first_secs must be 1 s to 1 day and retry_max_secs from retry_first_secs to 7 days"
                .into(),
        ));
    }
    if c.cluster.lease_ttl_secs < 3 {
        return Err((
            "cluster.lease_ttl_secs".into(),
            "must be at least 3 seconds".into(),
        ));
    }
    if let Some(id) = &c.cluster.instance_id
        && id.trim().is_empty()
    {
        return Err((
            "cluster.instance_id".into(),
            "must not be empty (leave it out for HOSTNAME:PID)".into(),
        ));
    }
    if c.sync.interval_secs < 10 {
        return Err((
            "sync.interval_secs".into(),
            "must be at least 10 seconds".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in c.tenants.iter_mut().enumerate() {
        let k = |s: &str| format!("tenants[{i}].{s}");
        if !valid_tenant_id(&t.id) {
            let who = match t.name.as_str() {
                "" => format!("tenant #{}", i + 1),
                name => format!("tenant #{} (name \"{name}\")", i + 1),
            };
            return Err((
                k("id"),
                format!(
                    "{who}: `{}` is not a valid id: use lowercase letters, digits, `-` and `_`, e.g. `id = \"{}\"`",
                    t.id,
                    id_from_name(&t.id)
                        .or_else(|| id_from_name(&t.name))
                        .unwrap_or_else(|| "sales".into())
                ),
            ));
        }
        if !seen.insert(t.id.clone()) {
            return Err((k("id"), format!("`{}` is used by two tenants", t.id)));
        }
        if t.name.is_empty() {
            t.name = t.id.clone();
        }
        if t.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err((
                k("timezone"),
                format!(
                    "`{}` is not an IANA time zone (e.g. Europe/Moscow)",
                    t.timezone
                ),
            ));
        }
        calendar_of(t).map_err(|(key, m)| (k(&key), m))?;
        t.routing.normalize().map_err(|(key, m)| (k(&key), m))?;
        for (name, expr) in [
            ("daily", &t.reports.daily),
            ("weekly", &t.reports.weekly),
            ("monthly", &t.reports.monthly),
        ] {
            if let Err(e) = expr.parse::<cron::Schedule>() {
                return Err((
                    k(&format!("reports.{name}")),
                    format!(
                        "`{expr}` is not a cron expression (sec min hour day month weekday): {e}"
                    ),
                ));
            }
        }
        match &mut t.crm {
            CrmConfig::Bitrix24(b) => {
                secret(
                    &mut b.webhook_url,
                    &b.webhook_url_file,
                    &k("crm.webhook_url"),
                )?;
                secret(
                    &mut b.client_secret,
                    &b.client_secret_file,
                    &k("crm.client_secret"),
                )?;
                secret(
                    &mut b.refresh_token,
                    &b.refresh_token_file,
                    &k("crm.refresh_token"),
                )?;
                if let Some(w) = &b.webhook_url {
                    require_secret_url(w.expose(), &k("crm.webhook_url"))?;
                    if !webhook_shape_ok(w.expose()) {
                        return Err((
                            k("crm.webhook_url"),
                            "must look like https://PORTAL/rest/USER_ID/SECRET/ with a numeric USER_ID, as Bitrix24 shows it for the inbound webhook (the value is not shown, as it holds a secret)".into(),
                        ));
                    }
                } else {
                    require_all(
                        &k("crm"),
                        "Bitrix24 needs `webhook_url`, or an OAuth application",
                        &[
                            ("portal_url", b.portal_url.is_some()),
                            ("client_id", b.client_id.is_some()),
                            ("client_secret", b.client_secret.is_some()),
                            ("refresh_token", b.refresh_token.is_some()),
                        ],
                    )?;
                    require_url(
                        b.portal_url.as_deref().unwrap_or_default(),
                        &k("crm.portal_url"),
                    )?;
                }
                require_url(&b.oauth_url, &k("crm.oauth_url"))?;
                if b.operating_budget_secs.is_nan() || b.operating_budget_secs <= 0.0 {
                    return Err((k("crm.operating_budget_secs"), "must be positive".into()));
                }
            }
            CrmConfig::Amocrm(a) => {
                require_url(&a.base_url, &k("crm.base_url"))?;
                secret(
                    &mut a.long_lived_token,
                    &a.long_lived_token_file,
                    &k("crm.long_lived_token"),
                )?;
                secret(
                    &mut a.client_secret,
                    &a.client_secret_file,
                    &k("crm.client_secret"),
                )?;
                secret(
                    &mut a.refresh_token,
                    &a.refresh_token_file,
                    &k("crm.refresh_token"),
                )?;
                if a.long_lived_token.is_none() {
                    require_all(
                        &k("crm"),
                        "amoCRM needs `long_lived_token`, or OAuth",
                        &[
                            ("client_id", a.client_id.is_some()),
                            ("client_secret", a.client_secret.is_some()),
                            ("redirect_uri", a.redirect_uri.is_some()),
                            ("refresh_token", a.refresh_token.is_some()),
                        ],
                    )?;
                }
                if a.rate_per_sec == 0 || a.rate_per_sec > 7 {
                    return Err((
                        k("crm.rate_per_sec"),
                        format!("must be 1..=7 (amoCRM's limit), got {}", a.rate_per_sec),
                    ));
                }
            }
        }
        match &mut t.telephony {
            Some(TelephonyConfig::Comagic(m)) => {
                require_url(&m.base_url, &k("telephony.base_url"))?;
                secret(
                    &mut m.access_token,
                    &m.access_token_file,
                    &k("telephony.access_token"),
                )?;
                if m.access_token.is_none() {
                    return Err((
                        k("telephony.access_token"),
                        "CoMagic needs an access token".into(),
                    ));
                }
                if let Some(z) = &m.timezone
                    && z.trim().parse::<chrono_tz::Tz>().is_err()
                {
                    return Err((
                        k("telephony.timezone"),
                        format!(
                            "`{z}` is not an IANA time zone (e.g. Asia/Yekaterinburg); leave it out to use the CoMagic account's own zone"
                        ),
                    ));
                }
            }
            Some(TelephonyConfig::Calltouch(m)) => {
                require_url(&m.base_url, &k("telephony.base_url"))?;
                secret(
                    &mut m.client_api_id,
                    &m.client_api_id_file,
                    &k("telephony.client_api_id"),
                )?;
                if m.client_api_id.is_none() {
                    return Err((
                        k("telephony.client_api_id"),
                        "Calltouch needs clientApiId".into(),
                    ));
                }
            }
            None => {}
        }
        validate_webhooks(&mut t.webhooks, &k)?;
        if let Some(tg) = &mut t.telegram {
            require_url(&tg.api_url, &k("telegram.api_url"))?;
            secret(
                &mut tg.bot_token,
                &tg.bot_token_file,
                &k("telegram.bot_token"),
            )?;
            match &tg.bot_token {
                None => return Err((k("telegram.bot_token"), "a bot token is required".into())),
                Some(tok) if !tok.expose().contains(':') => {
                    return Err((
                        k("telegram.bot_token"),
                        "does not look like a bot token (expected 123456:ABC...)".into(),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Resolves the webhook secrets and checks they can travel where they are used: a URL path
/// segment (amoCRM, CoMagic) or Telegram's `secret_token` header.
fn validate_webhooks(
    w: &mut WebhooksConfig,
    k: &dyn Fn(&str) -> String,
) -> Result<(), (String, String)> {
    secret(
        &mut w.bitrix24_token,
        &w.bitrix24_token_file,
        &k("webhooks.bitrix24_token"),
    )?;
    secret(
        &mut w.amocrm_secret,
        &w.amocrm_secret_file,
        &k("webhooks.amocrm_secret"),
    )?;
    secret(
        &mut w.comagic_secret,
        &w.comagic_secret_file,
        &k("webhooks.comagic_secret"),
    )?;
    secret(
        &mut w.telegram_secret,
        &w.telegram_secret_file,
        &k("webhooks.telegram_secret"),
    )?;
    let token_chars = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if let Some(t) = &w.bitrix24_token
        && t.expose().trim().is_empty()
    {
        return Err((k("webhooks.bitrix24_token"), "must not be empty".into()));
    }
    for (name, value) in [
        ("amocrm_secret", &w.amocrm_secret),
        ("comagic_secret", &w.comagic_secret),
    ] {
        if let Some(v) = value
            && (v.expose().len() < 16 || v.expose().len() > 256 || !token_chars(v.expose()))
        {
            return Err((
                k(&format!("webhooks.{name}")),
                "must be 16-256 characters of A-Z a-z 0-9 _ - (it is part of a URL); generate one with `openssl rand -hex 24`".into(),
            ));
        }
    }
    if let Some(v) = &w.telegram_secret
        && (v.expose().is_empty() || v.expose().len() > 256 || !token_chars(v.expose()))
    {
        return Err((
            k("webhooks.telegram_secret"),
            "must be 1-256 characters of A-Z a-z 0-9 _ - (Telegram's secret_token rules)".into(),
        ));
    }
    Ok(())
}

fn parse_hm(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()
}

/// The tenant's business calendar, or the key that is wrong.
pub fn calendar_of(t: &TenantConfig) -> Result<BusinessCalendar, (String, String)> {
    let tz: chrono_tz::Tz = t.timezone.parse().map_err(|_| {
        (
            "timezone".to_string(),
            format!("unknown time zone `{}`", t.timezone),
        )
    })?;
    let bad_hours = || {
        (
            "calendar.work_hours".to_string(),
            format!(
                "`{}`: expected HH:MM-HH:MM with start before end",
                t.calendar.work_hours
            ),
        )
    };
    let (a, b) = t
        .calendar
        .work_hours
        .split_once('-')
        .ok_or_else(bad_hours)?;
    let (start, end) = (
        parse_hm(a).ok_or_else(bad_hours)?,
        parse_hm(b).ok_or_else(bad_hours)?,
    );
    if start >= end {
        return Err(bad_hours());
    }
    let mut work_days = Vec::new();
    for (i, d) in t.calendar.work_days.iter().enumerate() {
        let wd: Weekday = d.parse().map_err(|_| {
            (
                format!("calendar.work_days[{i}]"),
                format!("`{d}`: use mon, tue, wed, thu, fri, sat, sun"),
            )
        })?;
        work_days.push(wd);
    }
    if work_days.is_empty() {
        return Err((
            "calendar.work_days".into(),
            "at least one working day is needed".into(),
        ));
    }
    let mut holidays = Vec::new();
    for (i, h) in t.calendar.holidays.iter().enumerate() {
        holidays.push(NaiveDate::parse_from_str(h, "%Y-%m-%d").map_err(|_| {
            (
                format!("calendar.holidays[{i}]"),
                format!("`{h}`: expected YYYY-MM-DD"),
            )
        })?);
    }
    Ok(BusinessCalendar {
        tz,
        start,
        end,
        work_days,
        holidays,
    })
}

impl Config {
    /// The database URL in effect: the configured one, or a SQLite file under `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(u) => u.expose().to_string(),
            None => format!("sqlite://{}", self.data_dir.join("dozor.db").display()),
        }
    }
}

#[cfg(test)]
mod tests {
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
        let text = format!(
            "{MINIMAL}\n[tenants.rules.missed_call]\nmode = \"shadow\"\nsla_minutes = 20\n"
        );
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
}
