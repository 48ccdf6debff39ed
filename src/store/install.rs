//! The install marker: how dozor tells its own database from a lost, emptied or swapped one.
//!
//! The first time a database is initialised dozor picks a random install id and keeps it twice:
//! in the database (table `install`) and in the file `install-id` beside the SQLite database
//! file (in data_dir unless `database.url` puts it elsewhere; for PostgreSQL, in data_dir).
//! A database that
//! is missing or empty while the file exists, or that holds another id, is refused: taken for
//! a fresh install it would repeat every task, message and report its lost ledger remembered.
//! Ops restore a backup (which carries the id) or start over on purpose with
//! `--reinitialise-database`.

use std::path::{Path, PathBuf};

use sqlx::{AnyPool, Row};

use super::files;
use super::{Backend, Op, Result, StoreError, now_secs};

/// The name of the marker file, beside the SQLite database file or in data_dir.
pub(crate) const MARKER_FILE: &str = "install-id";

/// What the database holds, seen before migrations run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DbState {
    /// No table at all: a new, missing (SQLite creates it) or emptied database.
    Empty,
    /// dozor's (or some) schema, with the install id when it has one.
    Schema { install_id: Option<String> },
}

/// What to do with the marker after looking at the file and the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The file and the database agree.
    Keep,
    /// A new install (or a pre-marker database being adopted, or a deliberate start over):
    /// give the database an id and write it to the file.
    Initialise,
    /// The database knows its id but the file is gone: write the file again.
    RestoreFile(String),
    /// The file says this data_dir has run dozor, the database does not match.
    Refuse(Mismatch),
}

/// Why the database does not match the marker file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// The database has no table at all (missing, 0 bytes, or emptied).
    Empty,
    /// The database has a schema but no install id: a copy from before install ids.
    NoId,
    /// The database belongs to another installation.
    Other(String),
}

/// Decides from the marker file's id, the database state and `--reinitialise-database`.
pub(crate) fn plan(file: Option<&str>, db: &DbState, reinitialise: bool) -> Plan {
    match (file, db) {
        (None, DbState::Empty) => Plan::Initialise,
        (None, DbState::Schema { install_id: None }) => Plan::Initialise,
        (
            None,
            DbState::Schema {
                install_id: Some(id),
            },
        ) => Plan::RestoreFile(id.clone()),
        (
            Some(f),
            DbState::Schema {
                install_id: Some(id),
            },
        ) if f == id => Plan::Keep,
        // Starting over keeps whatever database is there and makes the file follow it: dozor
        // never deletes data on its own.
        (
            Some(_),
            DbState::Schema {
                install_id: Some(id),
            },
        ) if reinitialise => Plan::RestoreFile(id.clone()),
        (Some(_), _) if reinitialise => Plan::Initialise,
        (Some(_), DbState::Empty) => Plan::Refuse(Mismatch::Empty),
        (Some(_), DbState::Schema { install_id: None }) => Plan::Refuse(Mismatch::NoId),
        (
            Some(_),
            DbState::Schema {
                install_id: Some(id),
            },
        ) => Plan::Refuse(Mismatch::Other(id.clone())),
    }
}

/// The marker file.
#[derive(Debug, Clone)]
pub(crate) struct MarkerFile {
    pub(crate) path: PathBuf,
}

impl MarkerFile {
    pub(crate) fn in_dir(dir: &Path) -> MarkerFile {
        MarkerFile {
            path: dir.join(MARKER_FILE),
        }
    }

    /// The id in the file; `None` when there is no file, or, with `reinitialise`, when the
    /// file holds no valid id (it is then written again from the database).
    pub(crate) fn read(&self, reinitialise: bool) -> Result<Option<String>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(format!("cannot be read ({e})"))),
        };
        let id = text.trim();
        if !valid_id(id) && reinitialise {
            tracing::warn!(
                "--reinitialise-database: install marker {} holds no valid id; replacing it",
                self.path.display()
            );
            return Ok(None);
        }
        if !valid_id(id) {
            return Err(self.error(
                "does not hold an install id (32 hexadecimal digits); restore it from the \
                 database with `--reinitialise-database`, which keeps the database as it is"
                    .into(),
            ));
        }
        files::tighten(&self.path, files::FILE_MODE);
        Ok(Some(id.to_string()))
    }

    pub(crate) fn write(&self, id: &str) -> Result<()> {
        files::write_private(&self.path, format!("{id}\n").as_bytes())
            .map_err(|e| self.error(format!("cannot be written ({e})")))
    }

    fn error(&self, problem: String) -> StoreError {
        StoreError::Marker {
            path: self.path.clone(),
            problem,
        }
    }
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new random install id: 128 bits in hex.
pub(crate) fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Looks at the database before migrations run.
pub(crate) async fn inspect(pool: &AnyPool, backend: Backend) -> Result<DbState> {
    let sql = match backend {
        Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
             WHERE table_schema = current_schema()"
        }
    };
    let tables: Vec<String> = sqlx::query(sql)
        .fetch_all(pool)
        .await
        .op("listing the database's tables")?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<std::result::Result<_, _>>()
        .op("listing the database's tables")?;
    if tables.is_empty() {
        return Ok(DbState::Empty);
    }
    let install_id = if tables.iter().any(|t| t == "install") {
        stored_id(pool).await?
    } else {
        None
    };
    Ok(DbState::Schema { install_id })
}

async fn stored_id(pool: &AnyPool) -> Result<Option<String>> {
    sqlx::query("SELECT install_id FROM install WHERE id = 1")
        .fetch_optional(pool)
        .await
        .op("reading the install id")?
        .map(|r| r.try_get::<String, _>(0))
        .transpose()
        .op("reading the install id")
}

impl super::Store {
    /// The install id the database holds (`None` before the marker was set up).
    pub async fn install_id(&self) -> Result<Option<String>> {
        stored_id(&self.pool).await
    }
}

/// Gives the database an install id unless it has one (another process may have just done it:
/// the first one wins) and returns the id it holds.
pub(crate) async fn ensure_db_id(pool: &AnyPool) -> Result<String> {
    sqlx::query(
        "INSERT INTO install (id, install_id, created_at) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(new_id())
    .bind(now_secs())
    .execute(pool)
    .await
    .op("recording the install id")?;
    stored_id(pool).await?.ok_or_else(|| StoreError::Corrupt {
        what: "install".into(),
        message: "the install id just written is not there".into(),
    })
}

/// The error for a database that does not match the marker file. `db` names the database (a
/// file path or a redacted URL); `restore` says how a backup is put back.
pub(crate) fn refusal(
    marker: &MarkerFile,
    file_id: &str,
    db: &str,
    restore: String,
    m: &Mismatch,
) -> StoreError {
    let state = match m {
        Mismatch::Empty => "is missing or empty".to_string(),
        Mismatch::NoId => "holds no install id (a copy from before dozor kept one)".to_string(),
        Mismatch::Other(id) => format!("belongs to another installation (install id {id})"),
    };
    StoreError::Replaced {
        db: db.to_string(),
        marker: marker.path.clone(),
        file_id: file_id.to_string(),
        state,
        restore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(id: Option<&str>) -> DbState {
        DbState::Schema {
            install_id: id.map(str::to_string),
        }
    }

    #[test]
    fn plan_covers_every_case() {
        assert_eq!(plan(None, &DbState::Empty, false), Plan::Initialise);
        assert_eq!(plan(None, &schema(None), false), Plan::Initialise);
        assert_eq!(
            plan(None, &schema(Some("a")), false),
            Plan::RestoreFile("a".into())
        );
        assert_eq!(plan(Some("a"), &schema(Some("a")), false), Plan::Keep);
        assert_eq!(
            plan(Some("a"), &DbState::Empty, false),
            Plan::Refuse(Mismatch::Empty)
        );
        assert_eq!(
            plan(Some("a"), &schema(None), false),
            Plan::Refuse(Mismatch::NoId)
        );
        assert_eq!(
            plan(Some("a"), &schema(Some("b")), false),
            Plan::Refuse(Mismatch::Other("b".into()))
        );
        assert_eq!(plan(Some("a"), &DbState::Empty, true), Plan::Initialise);
        assert_eq!(plan(Some("a"), &schema(None), true), Plan::Initialise);
        assert_eq!(
            plan(Some("a"), &schema(Some("b")), true),
            Plan::RestoreFile("b".into())
        );
    }

    #[test]
    fn ids_are_128_bit_hex_and_the_file_is_checked() {
        let id = new_id();
        assert!(valid_id(&id), "{id}");
        assert_ne!(id, new_id());
        let tmp = tempfile::tempdir().unwrap();
        let m = MarkerFile::in_dir(tmp.path());
        assert_eq!(m.read(false).unwrap(), None);
        m.write(&id).unwrap();
        assert_eq!(m.read(false).unwrap().as_deref(), Some(id.as_str()));
        std::fs::write(&m.path, "garbage").unwrap();
        let e = m.read(false).unwrap_err().to_string();
        assert!(e.contains("install-id") && e.contains("hexadecimal"), "{e}");
        assert_eq!(m.read(true).unwrap(), None, "starting over replaces it");
    }
}
