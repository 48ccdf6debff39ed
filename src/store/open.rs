//! Opening the database: the SQLite file and its directory checked (modes, integrity, the
//! install marker), a damaged file moved aside, the connection made and the migrations applied.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Row};

use super::error::{Result, StoreError, is_disk_full};
use super::install::{self, MarkerFile, Plan};
use super::{Backend, MIGRATOR, OpenOptions, files, now_secs};

/// Where the install marker is kept: beside a SQLite file, in data_dir for PostgreSQL, nowhere
/// for an in-memory SQLite database.
pub(super) fn marker_file(
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
pub(super) fn prepare_sqlite_file<'a>(
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
pub(super) async fn check_sqlite(connect_url: &str, path: &Path, o: &OpenOptions) -> Result<()> {
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

pub(super) async fn quick_check(connect_url: &str, path: &Path, key: &'static str) -> Result<()> {
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
pub(super) async fn quick_check_rows(
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
pub(super) fn sqlite_failure(e: sqlx::Error, path: &Path, key: &'static str) -> StoreError {
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
pub(super) fn move_aside(path: &Path, key: &'static str) -> Result<PathBuf> {
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
pub(super) fn with_create_mode(url: &str, backend: Backend) -> String {
    if backend == Backend::Sqlite && !url.contains("mode=") {
        with_mode(url, "rwc")
    } else {
        url.to_string()
    }
}

/// A `sqlite:` URL with its `mode` parameter set to `mode` (replacing one it has).
pub(super) fn with_mode(url: &str, mode: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("mode="))
        .map(str::to_string)
        .collect();
    params.push(format!("mode={mode}"));
    format!("{base}?{}", params.join("&"))
}

pub(super) async fn connect(
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

pub(super) async fn migrate(pool: &AnyPool) -> Result<()> {
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
pub(super) async fn apply_plan(
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
pub(super) fn describe_db(url: &str) -> String {
    sqlite_path(url).unwrap_or_else(|| redact_db_url(url))
}

/// How a backup is put back, for the refusal.
pub(super) fn restore_hint(url: &str) -> String {
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
pub(crate) fn sqlite_path(url: &str) -> Option<String> {
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
