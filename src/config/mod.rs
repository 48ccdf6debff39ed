//! Typed configuration: one TOML file plus `DOZOR__SECTION__KEY` environment overrides.
//!
//! Loading is strict on purpose: an unknown key is an error (a typo in `mode = "on"` must not
//! silently leave a rule off), and every error names the file, the key and what is allowed.
//! Secrets can be written inline, but every secret key also has a `*_file` twin so that the
//! file itself can stay world-readable while the secrets live in root-only files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod connectors;
mod errors;
mod load;
mod rules;
mod secrets;
mod tenant;
mod validate;

pub use connectors::*;
pub use errors::*;
pub use load::*;
pub use rules::*;
pub use secrets::*;
pub use tenant::*;
use validate::*;

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
    pub(crate) cluster: ClusterConfig,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Thresholds of the self-checks reported to the ops chat.
    #[serde(default)]
    pub(crate) selfcheck: SelfCheckConfig,
    /// How failing actions are retried before they are parked as `dead`.
    #[serde(default)]
    pub(crate) ledger: LedgerConfig,
}

/// Retries of actions that fail transiently (CRM or Telegram errors that may pass) or panic:
/// at most `max_attempts`, waiting `retry_first_secs`, then twice as long each time up to
/// `retry_max_secs`. Then the action is parked as `dead`, reported once to the ops chat and
/// left for `dozor retry KEY`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LedgerConfig {
    pub(crate) max_attempts: u32,
    pub(crate) retry_first_secs: u64,
    pub(crate) retry_max_secs: u64,
}

/// The same as the store's `RetryPolicy::default()` (a test in `cli::common` holds them equal):
/// the config is read below the store and does not import it.
impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            max_attempts: 8,
            retry_first_secs: 60,
            retry_max_secs: 3600,
        }
    }
}

/// Several `dozor run` instances on one PostgreSQL database share the tenants through leases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterConfig {
    /// This instance's name in the lease table; default `HOSTNAME:PID`.
    pub(crate) instance_id: Option<String>,
    /// Seconds a tenant lease lasts without renewal: a dead instance's tenants are taken over
    /// this long after its last renewal.
    pub(crate) lease_ttl_secs: u64,
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
    pub(crate) fn instance_id(&self) -> String {
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
    pub(crate) level: String,
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
    pub(crate) url_file: Option<PathBuf>,
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
    pub(crate) enabled: bool,
    /// Address of /healthz, /readyz, /metrics and the webhook receivers.
    pub(crate) listen: String,
    /// Connections served at once. At the cap a new connection pushes out the one idle the
    /// longest, or is closed at once when all are busy: the process never runs out of file
    /// descriptors however many clients connect.
    pub max_connections: usize,
    /// Bearer token /metrics asks for (`Authorization: Bearer TOKEN`); none: /metrics is open.
    pub metrics_token: Option<Secret>,
    pub(crate) metrics_token_file: Option<PathBuf>,
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
    pub(crate) const MAX_CONNECTIONS: usize = 16_384;

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
    pub(crate) overlap_secs: u64,
    /// How many days of telephony history the first sync reads.
    pub(crate) telephony_initial_days: u32,
    /// Seconds between re-reads of users and pipelines.
    pub(crate) directory_refresh_secs: u64,
    /// Seconds between deletion sweeps of CRMs without a deletion feed.
    pub(crate) deletion_sweep_secs: u64,
    /// Each telephony read starts this many seconds before the previous one ended.
    pub(crate) telephony_overlap_secs: u64,
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
mod tests;

/// Thresholds (`[selfcheck]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfCheckConfig {
    pub enabled: bool,
    /// Warn when the stored refresh token is this many days old (amoCRM and Bitrix24 refresh
    /// tokens expire after about 3 months without use).
    pub token_warn_days: u32,
    /// A source whose last this-many sync runs all failed is reported.
    pub stale_cycles: u32,
    /// Ledger intents without a final outcome above this are reported.
    pub ledger_backlog: i64,
    /// The disk holding `data_dir` is reported below this share of free space...
    pub disk_min_free_percent: f64,
    /// ...or below this many MiB free.
    pub disk_min_free_mib: u64,
}

impl Default for SelfCheckConfig {
    fn default() -> Self {
        SelfCheckConfig {
            enabled: true,
            token_warn_days: 80,
            stale_cycles: 3,
            ledger_backlog: 100,
            disk_min_free_percent: 5.0,
            disk_min_free_mib: 500,
        }
    }
}
