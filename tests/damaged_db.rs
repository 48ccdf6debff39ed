//! A damaged, emptied or swapped database, as the `dozor` binary meets it on a real data_dir:
//! refused with a way out instead of being taken for a fresh install (which would repeat every
//! task and message), a corrupt file failing at once with SQLite's own words, `dozor backup`
//! while the daemon runs, and private file modes whatever the umask.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::tenant_config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor::store::Store;

/// Runs `dozor ARGS` under umask 022 (the usual login umask) and returns its output.
async fn dozor(args: &[&str]) -> Output {
    let mut cmd = umask_022(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run dozor"))
        .await
        .unwrap()
}

fn umask_022(args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_dozor"))
        .args(args)
        .env_remove("RUST_LOG");
    cmd
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A data_dir-based config (the installed layout: the database is data_dir/dozor.db) for the
/// simulator behind `h`, written to `dir/dozor.toml`; returns the config path.
fn write_config(h: &dozor_sim::SimHandle, dir: &Path, data_dir: &Path, extra: &str) -> String {
    let placeholder = "sqlite:///unused.db";
    let body = tenant_config(
        h,
        CrmKind::Bitrix24,
        TelephonyKind::Comagic,
        placeholder,
        "ru",
    )
    .replacen(
        &format!("[database]\nurl = \"{placeholder}\"\n"),
        &format!("data_dir = \"{}\"\n{extra}\n", data_dir.display()),
        1,
    );
    assert!(body.starts_with("data_dir"), "{body}");
    // The rules write here: what a lost database would make them write twice.
    let body = common::rules_on(body);
    let path = dir.join("dozor.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// What the simulator has received: CRM tasks and Telegram messages.
fn writes(h: &dozor_sim::SimHandle) -> (usize, usize) {
    (h.sim.world().tasks.len(), h.sim.telegram.messages().len())
}

/// The restore README.md describes (dozor stopped): the backup over the database, and the
/// database's `-wal`/`-shm` removed.
fn restore(backup: impl AsRef<Path>, db: &Path) {
    std::fs::copy(backup, db).unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

fn marker(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("install-id"))
        .unwrap()
        .trim()
        .to_string()
}

/// The observed failure: a dozor.db truncated to 0 bytes after a first run was taken for a
/// fresh install and every task and digest was made again. Now it is refused (exit 2, nothing
/// written, the file left as it is), a backup copied over it runs on without writing anything
/// twice, and `--reinitialise-database` starts over on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_database_is_refused_until_restored_or_reinitialised() {
    let h = common::small_sim(61).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("dozor.db");
    let cfg = write_config(&h, dir.path(), &data, "");
    let out = dozor(&["--config", &cfg, "once"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let first = writes(&h);
    assert!(first.0 > 0 && first.1 > 0, "the first run wrote: {first:?}");
    let id = marker(&data);

    let backup = dir.path().join("dozor-backup.db");
    let b = backup.display().to_string();
    let out = dozor(&["--config", &cfg, "backup", &b]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("backup written") && stdout(&out).contains(&id));
    assert_eq!(mode(&backup), 0o600);
    let out = dozor(&["--config", &cfg, "backup", &b]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = dozor(&["--config", &cfg, "backup", &b, "--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let live = db.display().to_string();
    let out = dozor(&["--config", &cfg, "backup", &live, "--force"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the database itself"),
        "{}",
        stderr(&out)
    );

    std::fs::File::create(&db).unwrap(); // truncated to 0 bytes
    let out = dozor(&["--config", &cfg, "once"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for part in [
        db.display().to_string(),
        "install-id".into(),
        "lost or replaced".into(),
        "dozor backup".into(),
        "--reinitialise-database".into(),
    ] {
        assert!(err.contains(&part), "no `{part}` in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        writes(&h),
        first,
        "a refused start wrote to the CRM or Telegram"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "the file was touched"
    );
    // `audit`, `check` and the daemon open the store the same way.
    for cmd in ["audit", "check", "run"] {
        let out = dozor(&["--config", &cfg, cmd]).await;
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
    }
    assert_eq!(
        writes(&h),
        first,
        "a refused start wrote to the CRM or Telegram"
    );

    // The restore the error describes: copy the backup over the database.
    restore(&backup, &db);
    let out = dozor(&["--config", &cfg, "once"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(marker(&data), id);
    assert!(common::written_twice(&h.sim.world()).is_empty());
    assert!(common::telegram_doubles(&h.sim).is_empty());

    // Starting over on purpose: a new install id, and the run goes through.
    std::fs::File::create(&db).unwrap();
    let out = dozor(&["--config", &cfg, "--reinitialise-database", "once"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("starts over"), "{}", stderr(&out));
    assert_ne!(marker(&data), id);
    h.stop().await;
}

/// A garbage file and a half-truncated one fail within 2 s (not after 30 s of pool retries),
/// naming the file, the key `data_dir` and SQLite's cause, exit 2. `--reinitialise-database`
/// moves the damaged file aside and starts an empty database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_file_fails_fast_naming_data_dir_and_the_cause() {
    let h = common::small_sim(62).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("dozor.db");
    let cfg = write_config(&h, dir.path(), &data, "");

    std::fs::create_dir_all(&data).unwrap();
    let garbage: Vec<u8> = (0..65_536u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&db, garbage).unwrap();
    let started = Instant::now();
    let out = dozor(&["--config", &cfg, "once"]).await;
    let took = started.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {err}");
    assert!(
        err.contains("`data_dir`")
            && err.contains(&db.display().to_string())
            && err.contains("file is not a database"),
        "{err}"
    );
    assert!(!err.contains("pool timed out"), "{err}");

    // A real database cut in half.
    std::fs::remove_dir_all(&data).unwrap();
    let out = dozor(&["--config", &cfg, "once"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 64 * 1024, "a database worth cutting: {len} B");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let started = Instant::now();
    let out = dozor(&["--config", &cfg, "once"]).await;
    let took = started.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {err}");
    assert!(
        err.contains("`data_dir`")
            && err.contains(&db.display().to_string())
            && err.contains("malformed"),
        "{err}"
    );

    let (tasks, _) = writes(&h);
    let out = dozor(&["--config", &cfg, "--reinitialise-database", "audit"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let aside: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("dozor.db.damaged-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::metadata(&aside[0]).unwrap().len(), len / 2);
    assert_eq!(writes(&h).0, tasks);
    h.stop().await;
}

/// `dozor backup` while `dozor run` holds the database: the copy opens, holds the same ledger
/// and mirror as the database, and, copied over it, is accepted by its install marker. While
/// the daemon runs under umask 022, data_dir is 0700 and every database file 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_the_daemon_runs_restores_with_the_same_rows() {
    let h = common::small_sim(63).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state/dozor");
    let db = data.join("dozor.db");
    let port = common::free_port();
    let cfg = write_config(
        &h,
        dir.path(),
        &data,
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[sync]\ninterval_secs = 3600\n"),
    );
    let mut child = umask_022(&["--config", &cfg, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "/readyz never ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(mode(&data), 0o700);
    for f in ["dozor.db", "dozor.db-wal", "dozor.db-shm", "install-id"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }

    let backup = dir.path().join("backup.db");
    let out = dozor(&["--config", &cfg, "backup", &backup.display().to_string()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&backup), 0o600);
    let (status, err) = common::terminate(&mut child).await;
    assert!(status.success(), "{err}");

    let rows = |url: String| async move {
        let s = Store::open(&url, 1).await.unwrap();
        let mut out = Vec::new();
        for sql in [
            "SELECT key || ' ' || state FROM actions ORDER BY key",
            "SELECT CAST(COUNT(*) AS TEXT) FROM deals",
            "SELECT CAST(COUNT(*) AS TEXT) FROM tasks",
            "SELECT install_id FROM install",
        ] {
            let v: Vec<(String,)> = sqlx::query_as(sql).fetch_all(s.pool()).await.unwrap();
            out.push(v);
        }
        s.close().await;
        out
    };
    let live = rows(format!("sqlite://{}", db.display())).await;
    let copy = rows(format!("sqlite://{}", backup.display())).await;
    assert!(live[0].len() > 1, "the daemon recorded actions");
    assert_eq!(live, copy);

    // Restore as documented: the copy over the database, and dozor accepts it.
    restore(&backup, &db);
    let out = dozor(&["--config", &cfg, "audit"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    h.stop().await;
}

/// data_dir problems exit 2 naming `data_dir` and the path; looser modes left from before are
/// tightened with a warning; a lost marker file is written again from the database; a
/// database from before install markers is adopted; another installation's is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_problems_modes_and_marker_cases() {
    let h = common::small_sim(64).await;
    let dir = tempfile::tempdir().unwrap();

    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let cfg = write_config(&h, dir.path(), &file, "");
    let out = dozor(&["--config", &cfg, "audit"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("data_dir") && err.contains("a-file") && err.contains("not a directory"),
        "{err}"
    );
    let cfg = write_config(&h, dir.path(), &file.join("sub"), "");
    let out = dozor(&["--config", &cfg, "audit"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("data_dir") && err.contains("a-file/sub") && err.contains("cannot be created"),
        "{err}"
    );

    let data = dir.path().join("data");
    let db = data.join("dozor.db");
    let cfg = write_config(&h, dir.path(), &data, "");
    let out = dozor(&["--config", &cfg, "audit"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&data.join("install-id")), 0o600);
    let id = marker(&data);

    // Modes loosened by hand (or by an older version): tightened, with a warning.
    for (p, m) in [
        (&data, 0o755),
        (&db, 0o644),
        (&data.join("install-id"), 0o644),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let out = dozor(&["--config", &cfg, "audit"]).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("readable by other users"), "{err}");
    assert_eq!(
        (mode(&data), mode(&db), mode(&data.join("install-id"))),
        (0o700, 0o600, 0o600)
    );

    // The marker file lost: written again from the database.
    std::fs::remove_file(data.join("install-id")).unwrap();
    let out = dozor(&["--config", &cfg, "audit"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(marker(&data), id);

    // A database from before install markers (no id, no file): adopted with a new id.
    let url = format!("sqlite://{}", db.display());
    let s = Store::open(&url, 1).await.unwrap();
    sqlx::query("DELETE FROM install")
        .execute(s.pool())
        .await
        .unwrap();
    s.close().await;
    std::fs::remove_file(data.join("install-id")).unwrap();
    let out = dozor(&["--config", &cfg, "audit"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let adopted = marker(&data);
    assert_ne!(adopted, id);
    let s = Store::open(&url, 1).await.unwrap();
    assert_eq!(s.install_id().await.unwrap(), Some(adopted.clone()));
    s.close().await;

    // Another installation's database copied in: refused, the file named.
    let other = dir.path().join("other");
    let other_cfg_dir = dir.path().join("other-cfg");
    std::fs::create_dir_all(&other_cfg_dir).unwrap();
    let other_cfg = write_config(&h, &other_cfg_dir, &other, "");
    let out = dozor(&["--config", &other_cfg, "audit"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let other_backup = dir.path().join("other-backup.db").display().to_string();
    let out = dozor(&["--config", &other_cfg, "backup", &other_backup]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    restore(&other_backup, &db);
    let out = dozor(&["--config", &cfg, "audit"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("another installation") && err.contains(&marker(&other)),
        "{err}"
    );
    // Starting over keeps that database and makes the marker follow it.
    let out = dozor(&["--config", &cfg, "--reinitialise-database", "audit"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(marker(&data), marker(&other));
    h.stop().await;
}

/// On PostgreSQL `dozor backup` points to pg_dump, with the URL's password hidden, exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_on_postgres_points_to_pg_dump() {
    let h = common::small_sim(65).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = tenant_config(
        &h,
        CrmKind::Bitrix24,
        TelephonyKind::Comagic,
        "postgres://dozor:hunter2secret@127.0.0.1:1/dozor",
        "ru",
    );
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = dozor(&[
        "--config",
        &path.display().to_string(),
        "backup",
        "/tmp/never-written.db",
    ])
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pg_dump") && err.contains("dozor:***@127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains("hunter2secret"), "{err}");
    h.stop().await;
}

/// On PostgreSQL the install marker lives in data_dir: a second instance's data_dir learns the
/// id from the database; a new, empty database behind a data_dir that has run is refused; a
/// deliberate start over is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_marker_on_postgres() {
    use dozor::store::{OpenOptions, StoreError};
    if common::pg_skipped() {
        eprintln!("DOZOR_SKIP_PG=1: skipping the PostgreSQL install-marker test");
        return;
    }
    let url = common::pg_url().await;
    let dir = tempfile::tempdir().unwrap();
    let options = |data: &Path, reinitialise: bool| OpenOptions {
        install_marker: true,
        data_dir: Some(data.to_path_buf()),
        key: "database.url",
        reinitialise,
        ..OpenOptions::new(2)
    };
    let first = dir.path().join("first");
    let s = Store::open_with(&url, &options(&first, false))
        .await
        .unwrap();
    let id = s.install_id().await.unwrap().expect("an install id");
    s.close().await;
    assert_eq!(marker(&first), id);
    assert_eq!(mode(&first), 0o700);
    assert_eq!(mode(&first.join("install-id")), 0o600);
    let s = Store::open_with(&url, &options(&first, false))
        .await
        .unwrap();
    s.close().await;

    // Another instance on the same database: its data_dir takes the database's id.
    let second = dir.path().join("second");
    let s = Store::open_with(&url, &options(&second, false))
        .await
        .unwrap();
    s.close().await;
    assert_eq!(marker(&second), id);

    // The first data_dir pointed at a new, empty database: refused, nothing created there.
    let empty = common::pg_url().await;
    let Err(e) = Store::open_with(&empty, &options(&first, false)).await else {
        panic!("an empty database behind a data_dir that has run was accepted");
    };
    assert!(matches!(e, StoreError::Replaced { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("missing or empty") && msg.contains("pg_restore") && msg.contains(&id),
        "{msg}"
    );
    assert!(!msg.contains(&url), "{msg}");
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&empty).await.unwrap();
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_eq!(tables, 0, "the refused database was written to");

    let s = Store::open_with(&empty, &options(&first, true))
        .await
        .unwrap();
    let new_id = s.install_id().await.unwrap().unwrap();
    s.close().await;
    assert_eq!(marker(&first), new_id);
    assert_ne!(new_id, id);
}
