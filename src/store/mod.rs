//! Persistence with sqlx: SQLite by default (one file, WAL), PostgreSQL for several instances.
//!
//! Both run the same embedded migrations through sqlx's `Any` driver, so every query here is
//! written once in the SQL both understand (`$1` placeholders, `ON CONFLICT ... DO UPDATE`).
//! Times are stored as UTC unix seconds.

mod actions;
mod audit;
pub mod cursors;
mod leases;
mod mirror;
mod report_rows;
mod tokens;

pub use actions::ActionRow;
pub use audit::AuditEntry;
pub use leases::Lease;
pub use mirror::{MirrorCounts, Snapshot};
pub use report_rows::{Discipline, DisciplineCounts, StageCount, WonRow};
pub use tokens::{TokenSet, TokenStore};

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A storage failure, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the disk holding the database is full (while {op}): free space on the file system of \
         data_dir or database.url; nothing was lost, dozor resumes where it stopped"
    )]
    DiskFull {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database error while {op}: {source}")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored data is not valid ({what}): {message}")]
    Corrupt { what: String, message: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Adds the operation name to a sqlx error.
pub(crate) trait Op<T> {
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> Op<T> for std::result::Result<T, sqlx::Error> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|source| {
            if is_disk_full(&source) {
                StoreError::DiskFull { op, source }
            } else {
                StoreError::Query { op, source }
            }
        })
    }
}

/// SQLITE_FULL (13), or PostgreSQL's disk_full (53100), or the OS saying so.
fn is_disk_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            matches!(d.code().as_deref(), Some("13") | Some("53100"))
                || d.message().contains("database or disk is full")
        }
        sqlx::Error::Io(io) => io.raw_os_error() == Some(28), // ENOSPC
        _ => false,
    }
}

/// The database handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The daemon instance using this handle when tenants are leased (`dozor run`): the ledger
    /// then claims an action only while this instance holds the tenant's lease.
    holder: Option<std::sync::Arc<str>>,
    /// How the ledger retries actions through this handle (`[ledger]` in the config).
    retry: RetryPolicy,
}

/// How the ledger retries an action that failed transiently or panicked: at most
/// `max_attempts` attempts, waiting `first_wait`, then twice as long each time up to
/// `max_wait`; after that the action is parked as `dead` and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_wait: Duration,
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            first_wait: Duration::from_secs(60),
            max_wait: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failed attempt (1-based).
    pub fn wait(&self, failures: u32) -> Duration {
        let doubled = self
            .first_wait
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled.min(self.max_wait)
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations");

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let safe_url = redact_db_url(url);
        let mut connect_url = url.to_string();
        if backend == Backend::Sqlite {
            if let Some(path) = sqlite_path(url)
                && let Some(dir) = Path::new(&path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                    url: safe_url.clone(),
                    source: sqlx::Error::Io(e),
                })?;
            }
            if !connect_url.contains("mode=") {
                connect_url.push_str(if connect_url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite {
                max_connections.clamp(1, 4)
            } else {
                max_connections
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers (reports) run while the sync writes; busy_timeout makes
                        // concurrent writers wait instead of failing.
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                        conn.execute("PRAGMA synchronous=NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys=ON").await?;
                        // 16 MiB of page cache per connection (the default is 2 MiB): a
                        // report re-reads index pages that would otherwise be copied in from
                        // the OS cache again and again.
                        conn.execute("PRAGMA cache_size=-16384").await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(|source| StoreError::Open {
                url: safe_url,
                source,
            })?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(source) if is_disk_full(&source) => {
                StoreError::DiskFull {
                    op: "creating the schema",
                    source,
                }
            }
            e => StoreError::Migrate(e),
        })?;
        Ok(Store {
            pool,
            backend,
            holder: None,
            retry: RetryPolicy::default(),
        })
    }

    /// This handle, retrying ledger actions under `policy`.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Store {
        self.retry = policy;
        self
    }

    /// How the ledger retries actions through this handle.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// This handle, for the daemon instance `id`: actions are claimed only under its leases.
    pub fn with_holder(mut self, id: &str) -> Store {
        self.holder = Some(id.into());
        self
    }

    /// The lease holder this handle acts for, if any.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Checks the database answers (for /readyz and `dozor check`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .op("pinging the database")?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The file path of a `sqlite:` URL.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_string())
}

/// A database URL with its password replaced by `***`.
pub fn redact_db_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

pub(crate) fn to_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

pub(crate) fn from_secs(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0).single().unwrap_or_default()
}

pub(crate) fn now_secs() -> i64 {
    Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_password_is_hidden() {
        assert_eq!(
            redact_db_url("postgres://dozor:hunter2@localhost/dozor"),
            "postgres://dozor:***@localhost/dozor"
        );
        assert_eq!(
            sqlite_path("sqlite://data/dozor.db?mode=rwc").as_deref(),
            Some("data/dozor.db")
        );
    }
}
