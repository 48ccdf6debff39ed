//! Persistence with sqlx: SQLite by default (one file, WAL), PostgreSQL for several instances.
//!
//! Both run the same embedded migrations through sqlx's `Any` driver, so every query here is
//! written once in the SQL both understand (`$1` placeholders, `ON CONFLICT ... DO UPDATE`).
//! Times are stored as UTC unix seconds.

mod actions;
mod backup;
pub mod cursors;
mod error;
mod files;
mod in_list;
mod install;
mod leases;
mod lookups;
mod mirror;
mod open;
mod report_rows;
mod report_sums;
mod tokens;

pub use actions::ActionRow;
use error::Op;
pub use error::{Result, StoreError};
pub use leases::Lease;
pub(crate) use lookups::Remembered;
pub use mirror::Snapshot;
pub(crate) use mirror::{Changes, ClientFlips, ClientState, RuleMark};
pub use open::redact_db_url;
pub(crate) use open::sqlite_path;
use open::{
    apply_plan, check_sqlite, connect, describe_db, marker_file, migrate, prepare_sqlite_file,
    restore_hint, with_create_mode,
};
pub(crate) use report_rows::{Discipline, StageCount};
pub(crate) use report_sums::{ClientMonth, ClosedSum, DealSums};
pub use tokens::{TokenSet, TokenStore};

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::AnyPool;
use sqlx::any::install_default_drivers;

use install::{MarkerFile, Mismatch, Plan};

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
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

/// How a command opens the store (see [`Store::open_with`]).
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub max_connections: u32,
    /// Keep the install marker (commands do; tools and tests that open a database directly
    /// do not). A SQLite database keeps it beside its file.
    pub install_marker: bool,
    /// data_dir: where the install marker of a PostgreSQL database is kept (created 0700 when
    /// missing).
    pub data_dir: Option<PathBuf>,
    /// The config key naming the database, for errors: `data_dir` or `database.url`.
    pub key: &'static str,
    /// Start over on purpose (`--reinitialise-database`): a missing or empty database is
    /// initialised anew, a damaged SQLite file is moved aside, another installation's database
    /// is kept and the marker made to follow it. Nothing is deleted.
    pub reinitialise: bool,
}

impl OpenOptions {
    /// How dozor's commands open the database of config `c`: with the install marker in its
    /// data_dir, errors naming the key that chose the database.
    pub fn for_config(c: &crate::config::Config, reinitialise: bool) -> OpenOptions {
        OpenOptions {
            max_connections: c.database.max_connections,
            install_marker: true,
            data_dir: Some(c.data_dir.clone()),
            key: if c.database.url.is_some() {
                "database.url"
            } else {
                "data_dir"
            },
            reinitialise,
        }
    }

    pub fn new(max_connections: u32) -> OpenOptions {
        OpenOptions {
            max_connections,
            install_marker: false,
            data_dir: None,
            key: "database.url",
            reinitialise: false,
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store> {
        Store::open_with(url, &OpenOptions::new(max_connections)).await
    }

    /// Opens the database at `url` as a command does: checks data_dir and file modes, fails at
    /// once on a damaged SQLite file, and refuses a database that does not match its install
    /// marker (see `install`) before anything is written to it.
    pub async fn open_with(url: &str, o: &OpenOptions) -> Result<Store> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let sqlite_file = match backend {
            Backend::Sqlite => sqlite_path(url).map(PathBuf::from),
            Backend::Postgres => None,
        };
        if let Some(db) = &sqlite_file {
            files::ensure_dir(files::parent_dir(db), o.key)?;
        }
        let marker = marker_file(o, backend, sqlite_file.as_deref())?;
        let file_id = match &marker {
            Some(m) => m.read(o.reinitialise)?,
            None => None,
        };
        // The marker file and its id, when this data_dir has run dozor before.
        let known = marker.as_ref().zip(file_id.as_deref());
        let refuse = |(marker, id): (&MarkerFile, &str), m: Mismatch| {
            install::refusal(marker, id, &describe_db(url), restore_hint(url), &m)
        };
        let connect_url = with_create_mode(url, backend);
        if let Some(path) = &sqlite_file {
            if let Some(known) = prepare_sqlite_file(path, o, known)? {
                return Err(refuse(known, Mismatch::Empty));
            }
            check_sqlite(&connect_url, path, o).await?;
        }
        let pool = connect(&connect_url, backend, o.max_connections, redact_db_url(url)).await?;
        let state = install::inspect(&pool, backend).await?;
        let plan = install::plan(file_id.as_deref(), &state, o.reinitialise);
        if let (Plan::Refuse(m), Some(known)) = (&plan, known) {
            pool.close().await;
            return Err(refuse(known, m.clone()));
        }
        migrate(&pool).await?;
        mirror::upgrade(&pool).await?;
        apply_plan(&pool, plan, marker.as_ref(), o.reinitialise).await?;
        if let Some(path) = &sqlite_file {
            for f in files::sqlite_files(path) {
                files::tighten(&f, files::FILE_MODE);
            }
        }
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
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// This handle, for the daemon instance `id`: actions are claimed only under its leases.
    pub fn with_holder(mut self, id: &str) -> Store {
        self.holder = Some(id.into());
        self
    }

    /// The lease holder this handle acts for, if any.
    pub(crate) fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Keeps the query planner's statistics current. SQLite plans without them pick a scan of a
    /// wide covering index over the narrow index an `IN (…)` list needs (measured: every
    /// working-set read of a cycle scanned its table); `PRAGMA optimize` analyzes, with a row
    /// sample, only the tables never analyzed or that grew or shrank many times over, so it costs
    /// nothing most cycles. PostgreSQL's autovacuum keeps its own.
    pub async fn refresh_planner_stats(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA optimize=0x10002")
                .execute(&self.pool)
                .await
                .op("refreshing the query planner's statistics")?;
        }
        Ok(())
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

pub(crate) fn to_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

pub(crate) fn from_secs(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0).single().unwrap_or_default()
}

pub(crate) fn now_secs() -> i64 {
    Utc::now().timestamp()
}
