//! The store's files on disk: data_dir and the SQLite database files.
//!
//! They hold OAuth tokens and the action ledger, so data_dir is kept 0700 and every file of the
//! store (the database, its `-wal` and `-shm`, the install marker, a backup) 0600, whatever the
//! process umask. SQLite creates a new database file 0644 and gives its `-wal`/`-shm` the mode
//! of the database file, so the database file is created here, 0600, before SQLite opens it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Result, StoreError};

pub(crate) const DIR_MODE: u32 = 0o700;
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` (0700) when it is missing; otherwise checks it is a directory this user may
/// write, and tightens a mode looser than 0700 (with a warning), unless it is a shared directory
/// like `/tmp` (sticky bit): closing that would break every other program using it, so only a
/// warning says the store should have a directory of its own. `key` is the config key that
/// names it, for the error.
pub(crate) fn ensure_dir(dir: &Path, key: &'static str) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(dir_error(
            key,
            dir,
            "is not a directory".into(),
            "point it at a directory (dozor creates it when it is missing)",
        )),
        Ok(m) if m.permissions().mode() & 0o1000 != 0 => {
            check_writable(dir, key)?;
            tracing::warn!(
                "{} is a directory shared with other users; dozor keeps its files there private \
                 (0600) but leaves the directory as it is: give {key} a directory of its own",
                dir.display()
            );
            Ok(())
        }
        Ok(_) => {
            check_writable(dir, key)?;
            tighten(dir, DIR_MODE);
            Ok(())
        }
        // A missing directory, or a file where a parent directory should be: creating it
        // fails with the reason.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            create_dir(dir, key)
        }
        Err(e) => Err(dir_error(
            key,
            dir,
            format!("cannot be read ({e})"),
            "give the user dozor runs as access to it, or set the key to another directory",
        )),
    }
}

fn create_dir(dir: &Path, key: &'static str) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| {
            dir_error(
                key,
                dir,
                format!("cannot be created ({e})"),
                "create it for the user dozor runs as, or set the key to a directory that user \
                 may write",
            )
        })?;
    // The umask may have taken bits from 0700 (a umask of 0277 would leave dozor unable to
    // write its own directory): set the mode outright.
    set_mode(dir, DIR_MODE);
    Ok(())
}

/// `access(2)` with W_OK|X_OK: the same answer the kernel gives when SQLite creates its files
/// there, including a read-only file system.
fn check_writable(dir: &Path, key: &'static str) -> Result<()> {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return Err(dir_error(
            key,
            dir,
            "contains a NUL byte".into(),
            "set it to a valid path",
        ));
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(dir_error(
        key,
        dir,
        format!("is not writable by this user ({e})"),
        "give the user dozor runs as write access to it (chown), or set the key to another \
         directory",
    ))
}

fn dir_error(key: &'static str, path: &Path, problem: String, hint: &str) -> StoreError {
    StoreError::DataDir {
        key,
        path: path.to_path_buf(),
        problem,
        hint: hint.to_string(),
    }
}

/// Creates the empty file `path` with mode 0600 (whatever the umask); fails if it exists.
pub(crate) fn create_private(path: &Path) -> io::Result<fs::File> {
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Replaces `path` with `contents` atomically (a private temporary file renamed over it).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = sibling(path, &format!(".tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = create_private(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path);
    Ok(())
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The directory of a file (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes a rename or a new file in the directory of `path` durable; best effort.
pub(crate) fn sync_dir(path: &Path) {
    if let Ok(d) = fs::File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
}

/// Tightens the mode of an existing `path` to `mode` when group or others have any access,
/// with a warning naming the file: these files hold tokens. A missing file is left alone.
pub(crate) fn tighten(path: &Path, mode: u32) {
    let Ok(m) = fs::metadata(path) else {
        return;
    };
    let current = m.permissions().mode() & 0o777;
    if current & 0o077 == 0 {
        return;
    }
    tracing::warn!(
        "{} was readable by other users (mode {current:o}); set it to {mode:o}, as it holds \
         OAuth tokens and the action ledger",
        path.display()
    );
    set_mode(path, mode);
}

fn set_mode(path: &Path, mode: u32) {
    if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
        tracing::warn!(
            "cannot set the mode of {} to {mode:o}: {e}; run `chmod {mode:o} {}`",
            path.display(),
            path.display()
        );
    }
}

/// The SQLite database file and the files SQLite keeps beside it.
pub(crate) fn sqlite_files(db: &Path) -> [PathBuf; 3] {
    [db.to_path_buf(), sibling(db, "-wal"), sibling(db, "-shm")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_problems_name_the_key_and_path() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain");
        fs::write(&file, "x").unwrap();
        let e = ensure_dir(&file, "data_dir").unwrap_err().to_string();
        assert!(e.contains("data_dir") && e.contains("plain") && e.contains("not a directory"));
        let under_file = file.join("sub");
        let e = ensure_dir(&under_file, "data_dir").unwrap_err().to_string();
        assert!(
            e.contains("cannot be created") && e.contains("plain/sub"),
            "{e}"
        );
    }

    #[test]
    fn a_shared_directory_is_left_open() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_dir(&shared, "database.url").unwrap();
        let mode = fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
    }

    #[test]
    fn created_private_and_loose_modes_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_dir(&dir, "data_dir").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir, "data_dir").unwrap();
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("install-id");
        write_private(&f, b"x\n").unwrap();
        assert_eq!(mode(&f), 0o600);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        tighten(&f, FILE_MODE);
        assert_eq!(mode(&f), 0o600);
    }
}
