//! Persistence with sqlx: SQLite by default (one file, WAL), PostgreSQL for several instances.
//!
//! Both run the same embedded migrations through sqlx's `Any` driver, so every query here is
//! written once in the SQL both understand (`$1` placeholders, `ON CONFLICT ... DO UPDATE`).
//! Times are stored as UTC unix seconds.

mod actions;
mod audit;
mod backup;
pub mod cursors;
mod files;
mod install;
mod leases;
mod mirror;
mod report_rows;
mod tokens;

pub use actions::ActionRow;
pub use audit::AuditEntry;
pub use install::MARKER_FILE;
pub use leases::Lease;
pub use mirror::{MirrorCounts, Snapshot};
pub use report_rows::{Discipline, DisciplineCounts, StageCount, WonRow};
pub use tokens::{TokenSet, TokenStore};

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Row};

use install::{MarkerFile, Mismatch, Plan};

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
    #[error("{key} {}: {problem}; {hint}", path.display())]
    DataDir {
        key: &'static str,
        path: PathBuf,
        problem: String,
        hint: String,
    },
    #[error("install marker {}: {problem}", path.display())]
    Marker { path: PathBuf, problem: String },
    #[error(
        "the database {db} {state}, but {} says this data_dir has already run dozor (install \
         id {file_id}): the database looks lost or replaced, and starting afresh would repeat \
         every task, message and report already made. Restore the latest backup ({restore}), \
         or start over on purpose: add --reinitialise-database to the command (e.g. \
         `dozor run --reinitialise-database`)",
        marker.display()
    )]
    Replaced {
        db: String,
        marker: PathBuf,
        file_id: String,
        state: String,
        restore: String,
    },
    #[error(
        "the database file {} (key `{key}`) is damaged: {cause}. Stop every dozor using it, \
         then restore the latest backup (copy the file `dozor backup` wrote to {}), or start \
         over with --reinitialise-database, which moves the damaged file aside (to \
         {}.damaged-TIME) and begins an empty database",
        path.display(),
        path.display(),
        path.display()
    )]
    Damaged {
        path: PathBuf,
        key: &'static str,
        cause: String,
    },
    #[error(
        "cannot open the database file {} (key `{key}`): {cause}; check that the user dozor \
         runs as may read and write it",
        path.display()
    )]
    SqliteOpen {
        path: PathBuf,
        key: &'static str,
        cause: String,
    },
    #[error("backup {}: {problem}", path.display())]
    Backup { path: PathBuf, problem: String },
}

impl StoreError {
    /// True when an operator has to act on a path, a file or a damaged or replaced database:
    /// the command then exits 2, like a config error, rather than 1 (a runtime failure).
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            StoreError::DataDir { .. }
                | StoreError::Marker { .. }
                | StoreError::Replaced { .. }
                | StoreError::Damaged { .. }
                | StoreError::SqliteOpen { .. }
                | StoreError::Backup { .. }
        )
    }
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
    /// marker (see [`install`]) before anything is written to it.
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

/// Where the install marker is kept: beside a SQLite file, in data_dir for PostgreSQL, nowhere
/// for an in-memory SQLite database.
fn marker_file(
    o: &OpenOptions,
    backend: Backend,
    sqlite_file: Option<&Path>,
) -> Result<Option<MarkerFile>> {
    if !o.install_marker {
        return Ok(None);
    }
    match (sqlite_file, &o.data_dir) {
        (Some(db), _) => Ok(Some(MarkerFile::in_dir(files::parent_dir(db)))),
        (None, Some(dir)) if backend == Backend::Postgres => {
            files::ensure_dir(dir, "data_dir")?;
            Ok(Some(MarkerFile::in_dir(dir)))
        }
        (None, _) => Ok(None),
    }
}

/// Before SQLite touches the file: a new file is created 0600
/// (SQLite would make it 0644, and its `-wal`/`-shm` follow its mode). A missing or empty file
/// where the marker says dozor has run is not touched: `known` is handed back to be refused.
fn prepare_sqlite_file<'a>(
    path: &Path,
    o: &OpenOptions,
    known: Option<(&'a MarkerFile, &'a str)>,
) -> Result<Option<(&'a MarkerFile, &'a str)>> {
    let len = std::fs::metadata(path).map(|m| m.len()).ok();
    if known.is_some() && !o.reinitialise && len.unwrap_or(0) == 0 {
        return Ok(known);
    }
    // SQLite would rebuild an empty file from a leftover `-wal`: starting over must not.
    if o.reinitialise && len.unwrap_or(0) == 0 && files::sibling(path, "-wal").exists() {
        let aside = move_aside(path, o.key)?;
        tracing::warn!(
            "--reinitialise-database: the journal left beside the empty database {} was moved \
             to {}-wal",
            path.display(),
            aside.display()
        );
        return Ok(None);
    }
    if len.is_none() {
        match files::create_private(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StoreError::SqliteOpen {
                    path: path.to_path_buf(),
                    key: o.key,
                    cause: format!("cannot create it ({e})"),
                });
            }
        }
    }
    files::tighten(path, files::FILE_MODE);
    Ok(None)
}

/// Opens one connection and runs `PRAGMA quick_check`, so a garbage or truncated file fails at
/// once with SQLite's own words instead of after the pool's 30 s of retries. With
/// `reinitialise`, a damaged file is moved aside and an empty one takes its place.
async fn check_sqlite(connect_url: &str, path: &Path, o: &OpenOptions) -> Result<()> {
    match quick_check(connect_url, path, o.key).await {
        Err(StoreError::Damaged { cause, .. }) if o.reinitialise => {
            let aside = move_aside(path, o.key)?;
            tracing::warn!(
                "--reinitialise-database: the damaged database {} ({cause}) was moved to {}; \
                 starting an empty database",
                path.display(),
                aside.display()
            );
            Ok(())
        }
        other => other,
    }
}

async fn quick_check(connect_url: &str, path: &Path, key: &'static str) -> Result<()> {
    let failed = |e: sqlx::Error| sqlite_failure(e, path, key);
    // Read-only: the check never writes, not even the checkpoint SQLite makes when the last
    // connection closes, so a damaged file is moved aside (or left for ops) as it was found.
    // It reads every page (about 0.5 s per 200 MB): not a "slow statement" worth a warning.
    let options = AnyConnectOptions::from_str(&with_mode(connect_url, "ro"))
        .map_err(failed)?
        .disable_statement_logging();
    let mut conn = AnyConnection::connect_with(&options)
        .await
        .map_err(failed)?;
    let problems = quick_check_rows(&mut conn).await;
    // Closed here, not dropped: a dropped connection closes in the background, and SQLite
    // removing its `-wal`/`-shm` then would race with moving a damaged file aside.
    conn.close().await.ok();
    let problems = problems.map_err(failed)?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(StoreError::Damaged {
        path: path.to_path_buf(),
        key,
        cause: format!(
            "database disk image is malformed (quick_check: {})",
            problems.join("; ")
        ),
    })
}

/// The first problems `PRAGMA quick_check` finds; empty when it answers `ok`.
async fn quick_check_rows(
    conn: &mut AnyConnection,
) -> std::result::Result<Vec<String>, sqlx::Error> {
    // A daemon may be writing: wait for its lock rather than fail.
    conn.execute("PRAGMA busy_timeout=10000").await?;
    let rows = sqlx::query("PRAGMA quick_check")
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .filter(|line| line != "ok")
        .take(3)
        .collect())
}

/// SQLITE_NOTADB (26) and SQLITE_CORRUPT (11) say the file is damaged; anything else is a
/// file dozor cannot open (permissions, a directory in its place).
fn sqlite_failure(e: sqlx::Error, path: &Path, key: &'static str) -> StoreError {
    let path = path.to_path_buf();
    match &e {
        sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("26") | Some("11")) => {
            StoreError::Damaged {
                path,
                key,
                cause: d.message().to_string(),
            }
        }
        sqlx::Error::Database(d) => StoreError::SqliteOpen {
            path,
            key,
            cause: d.message().to_string(),
        },
        _ => StoreError::SqliteOpen {
            path,
            key,
            cause: e.to_string(),
        },
    }
}

/// Renames a damaged database (and its `-wal`/`-shm`) to `NAME.damaged-UNIXTIME[-wal|-shm]`.
fn move_aside(path: &Path, key: &'static str) -> Result<PathBuf> {
    let aside = files::sibling(path, &format!(".damaged-{}", now_secs()));
    let [db, wal, shm] = files::sqlite_files(path);
    let [aside_db, aside_wal, aside_shm] = files::sqlite_files(&aside);
    for (from, to) in [(wal, aside_wal), (shm, aside_shm), (db, aside_db)] {
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|e| StoreError::SqliteOpen {
                path: from.clone(),
                key,
                cause: format!("cannot move it aside to {} ({e})", to.display()),
            })?;
        }
    }
    files::create_private(path).map_err(|e| StoreError::SqliteOpen {
        path: path.to_path_buf(),
        key,
        cause: format!("cannot create it ({e})"),
    })?;
    Ok(aside)
}

/// `url` with `mode=rwc` for SQLite, so a missing file is created.
fn with_create_mode(url: &str, backend: Backend) -> String {
    if backend == Backend::Sqlite && !url.contains("mode=") {
        with_mode(url, "rwc")
    } else {
        url.to_string()
    }
}

/// A `sqlite:` URL with its `mode` parameter set to `mode` (replacing one it has).
fn with_mode(url: &str, mode: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("mode="))
        .map(str::to_string)
        .collect();
    params.push(format!("mode={mode}"));
    format!("{base}?{}", params.join("&"))
}

async fn connect(
    connect_url: &str,
    backend: Backend,
    max_connections: u32,
    safe_url: String,
) -> Result<AnyPool> {
    AnyPoolOptions::new()
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
        .connect(connect_url)
        .await
        .map_err(|source| StoreError::Open {
            url: safe_url,
            source,
        })
}

async fn migrate(pool: &AnyPool) -> Result<()> {
    MIGRATOR.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(source) if is_disk_full(&source) => {
            StoreError::DiskFull {
                op: "creating the schema",
                source,
            }
        }
        e => StoreError::Migrate(e),
    })
}

/// Carries out the marker plan once the schema is in place.
async fn apply_plan(
    pool: &AnyPool,
    plan: Plan,
    marker: Option<&MarkerFile>,
    reinitialise: bool,
) -> Result<()> {
    match plan {
        Plan::Keep | Plan::Refuse(_) => Ok(()),
        Plan::Initialise => {
            let id = install::ensure_db_id(pool).await?;
            if let Some(m) = marker {
                m.write(&id)?;
                if reinitialise {
                    tracing::warn!(
                        "--reinitialise-database: this data_dir starts over with install id \
                         {id} ({})",
                        m.path.display()
                    );
                }
            }
            Ok(())
        }
        Plan::RestoreFile(id) => {
            if let Some(m) = marker {
                m.write(&id)?;
                tracing::warn!(
                    "install marker {} written again from the database (install id {id})",
                    m.path.display()
                );
            }
            Ok(())
        }
    }
}

/// The database for people: the file path of SQLite, the redacted URL of PostgreSQL.
fn describe_db(url: &str) -> String {
    sqlite_path(url).unwrap_or_else(|| redact_db_url(url))
}

/// How a backup is put back, for the refusal.
fn restore_hint(url: &str) -> String {
    match sqlite_path(url) {
        Some(path) => {
            format!("stop dozor, copy the file made by `dozor backup` to {path}, start dozor")
        }
        None => format!(
            "stop dozor, restore the latest pg_dump into {} with pg_restore, start dozor",
            redact_db_url(url)
        ),
    }
}

/// The file path of a `sqlite:` URL.
pub fn sqlite_path(url: &str) -> Option<String> {
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
    fn sqlite_mode_is_set_once() {
        assert_eq!(with_mode("sqlite://a.db", "ro"), "sqlite://a.db?mode=ro");
        assert_eq!(
            with_mode("sqlite://a.db?mode=rwc&cache=shared", "ro"),
            "sqlite://a.db?cache=shared&mode=ro"
        );
        assert_eq!(
            with_create_mode("sqlite://a.db", Backend::Sqlite),
            "sqlite://a.db?mode=rwc"
        );
    }

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
