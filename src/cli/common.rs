//! What the commands share: logging, loading the config, opening the store, choosing tenants,
//! and the failure type every command returns.

use std::process::ExitCode;

use super::{Cli, LogFormatArg};
use crate::config::{self, Config, ConfigError, LogFormat, TenantConfig};
use crate::store::{OpenOptions, RetryPolicy, Store};

/// Sets up tracing on stderr: human-readable or JSON; `RUST_LOG` overrides `level`.
pub(crate) fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A command's failure, already phrased for the user.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad config or usage: exit 2.
    Config(ConfigError),
    /// A path, a file or the database needs an operator (data_dir unusable, a damaged or
    /// replaced database, an existing backup file): exit 2.
    Operator(anyhow::Error),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        if e.needs_operator() {
            Failure::Operator(e.into())
        } else {
            Failure::Runtime(e.into())
        }
    }
}

pub(crate) type CmdResult = Result<ExitCode, Failure>;

/// Loads the config named by `--config` (or found at a default path) and starts logging.
pub(super) fn load_config(cli: &Cli) -> Result<config::Loaded, ConfigError> {
    let path = config::locate(cli.config.as_deref())?;
    let loaded = config::load(&path)?;
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Human) => LogFormat::Human,
        None => loaded.config.log.format,
    };
    init_logging(format, &loaded.config.log.level);
    if let Some(w) = config::permission_warning(&path) {
        tracing::warn!("{w}");
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if loaded.config.tenants.is_empty() {
        return Err(ConfigError {
            file: Some(path),
            key: Some("tenants".into()),
            line: None,
            env_var: None,
            message:
                "no tenant configured: add a [[tenants]] section (see config/dozor.example.toml)"
                    .into(),
        });
    }
    Ok(loaded)
}

/// Logs, once per tenant, which rules write and which are in shadow: the first thing to know
/// about a starting dozor is whether it will change the CRM.
pub(super) fn log_rule_modes(tenants: &[&config::TenantConfig], dry_run: bool) {
    for t in tenants {
        tracing::info!("{}", t.rules.summary(&t.id, dry_run));
    }
}

/// Opens the configured database, with its install marker in data_dir.
pub(super) async fn open_store(
    cli: &Cli,
    c: &config::Config,
) -> Result<Store, crate::store::StoreError> {
    Store::open_with(
        &c.database_url(),
        &OpenOptions::for_config(c, cli.reinitialise_database),
    )
    .await
    .map(|s| s.with_retry(retry_policy(&c.ledger)))
}

/// The tenants a command acts on (`--tenant` or all), or a config error naming the unknown id.
pub(super) fn select<'a>(
    c: &'a Config,
    only: Option<&str>,
) -> Result<Vec<&'a TenantConfig>, ConfigError> {
    match only {
        None => Ok(c.tenants.iter().collect()),
        Some(id) => c
            .tenants
            .iter()
            .find(|t| t.id == id)
            .map(|t| vec![t])
            .ok_or_else(|| ConfigError {
                file: None,
                key: Some("tenants".into()),
                line: None,
                env_var: None,
                message: format!(
                    "no tenant `{id}`; configured: {}",
                    c.tenants
                        .iter()
                        .map(|t| t.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
    }
}

/// The ledger's retry policy from `[ledger]`.
pub(super) fn retry_policy(l: &config::LedgerConfig) -> RetryPolicy {
    RetryPolicy {
        max_attempts: l.max_attempts,
        first_wait: std::time::Duration::from_secs(l.retry_first_secs),
        max_wait: std::time::Duration::from_secs(l.retry_max_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_defaults_are_the_stores() {
        assert_eq!(
            retry_policy(&config::LedgerConfig::default()),
            RetryPolicy::default()
        );
    }
}
