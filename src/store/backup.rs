//! `dozor backup`: a consistent copy of the SQLite database while dozor runs.
//!
//! `VACUUM INTO` reads the database in one read transaction (WAL lets the daemon go on writing)
//! and writes a compact, self-contained copy. The copy carries the install id, so once copied
//! over the database it matches the marker file in data_dir again.

use std::path::{Path, PathBuf};

use super::files;
use super::{Backend, Op, Result, Store, StoreError};

impl Store {
    /// Writes a consistent copy of the SQLite database to `dest` (mode 0600) and returns its
    /// size in bytes. An existing `dest` is replaced only with `overwrite`; the copy is built
    /// in a temporary file beside it, so `dest` is never left half written.
    pub(crate) async fn backup_to(&self, dest: &Path, overwrite: bool) -> Result<u64> {
        if self.backend != Backend::Sqlite {
            return Err(backup_error(
                dest,
                "dozor copies SQLite databases only; back PostgreSQL up with pg_dump".into(),
            ));
        }
        if !overwrite && dest.exists() {
            return Err(exists(dest));
        }
        let dir = files::parent_dir(dest);
        if !dir.is_dir() {
            return Err(backup_error(
                dest,
                format!(
                    "the directory {} does not exist; create it or choose another path",
                    dir.display()
                ),
            ));
        }
        let tmp = files::sibling(dest, &format!(".partial-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        // VACUUM INTO accepts an empty existing file: creating it first makes it 0600.
        files::create_private(&tmp)
            .map_err(|e| backup_error(dest, format!("cannot create {} ({e})", tmp.display())))?;
        let copied = self
            .vacuum_into(&tmp)
            .await
            .and_then(|()| place(&tmp, dest, overwrite));
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        copied?;
        files::sync_dir(dest);
        std::fs::metadata(dest)
            .map(|m| m.len())
            .map_err(|e| backup_error(dest, format!("cannot be read back ({e})")))
    }

    async fn vacuum_into(&self, tmp: &Path) -> Result<()> {
        let Some(target) = tmp.to_str() else {
            return Err(backup_error(
                tmp,
                "the path is not valid UTF-8: choose a plain path".into(),
            ));
        };
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await
            .op("copying the database (VACUUM INTO)")?;
        std::fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| backup_error(tmp, format!("cannot be synced to disk ({e})")))
    }
}

/// Moves the finished copy to `dest`: `rename` replaces (with `overwrite`), `hard_link` fails
/// if `dest` appeared meanwhile, so an existing file is never lost by accident.
fn place(tmp: &Path, dest: &Path, overwrite: bool) -> Result<()> {
    if overwrite {
        return std::fs::rename(tmp, dest)
            .map_err(|e| backup_error(dest, format!("cannot be written ({e})")));
    }
    match std::fs::hard_link(tmp, dest) {
        Ok(()) => {
            let _ = std::fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists(dest)),
        Err(e) => Err(backup_error(dest, format!("cannot be written ({e})"))),
    }
}

fn exists(dest: &Path) -> StoreError {
    backup_error(
        dest,
        "the file exists; choose another path or add --force to replace it".into(),
    )
}

fn backup_error(path: &Path, problem: String) -> StoreError {
    StoreError::Backup {
        path: PathBuf::from(path),
        problem,
    }
}
