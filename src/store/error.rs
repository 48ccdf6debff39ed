//! What can go wrong in the store, said so that an operator knows what to do, and the
//! [`Op`] helper that names the operation a database error happened in.

use std::path::PathBuf;

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
    pub(crate) fn needs_operator(&self) -> bool {
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
pub(super) fn is_disk_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            matches!(d.code().as_deref(), Some("13") | Some("53100"))
                || d.message().contains("database or disk is full")
        }
        sqlx::Error::Io(io) => io.raw_os_error() == Some(28), // ENOSPC
        _ => false,
    }
}
