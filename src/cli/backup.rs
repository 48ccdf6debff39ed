//! `dozor backup PATH`: a consistent copy of the SQLite database, taken while dozor runs, so
//! ops have something to restore when the disk or an operator damages the database.

use std::path::Path;
use std::process::ExitCode;

use super::{BackupArgs, Cli, CmdResult, Failure, load_config, open_store};
use crate::store;

pub(crate) async fn backup(cli: &Cli, a: &BackupArgs) -> CmdResult {
    let loaded = load_config(cli)?;
    let c = &loaded.config;
    let url = c.database_url();
    let Some(db) = store::sqlite_path(&url) else {
        return Err(Failure::Operator(anyhow::anyhow!(
            "dozor backup copies SQLite databases; this config keeps its data in PostgreSQL \
             (database.url = {}): back it up with pg_dump, e.g. `pg_dump --format=custom \
             --file={} DATABASE_URL`, and restore with pg_restore",
            store::redact_db_url(&url),
            a.path.display()
        )));
    };
    if is_same_file(&a.path, Path::new(&db)) {
        return Err(Failure::Operator(anyhow::anyhow!(
            "backup {}: that is the database itself; write the backup to another file",
            a.path.display()
        )));
    }
    let store = open_store(cli, c).await?;
    let copied = store.backup_to(&a.path, a.force).await;
    let install_id = store.install_id().await;
    store.close().await;
    let bytes = copied?;
    println!(
        "backup written: {} ({:.1} MiB, install id {})",
        a.path.display(),
        bytes as f64 / (1024.0 * 1024.0),
        install_id?.unwrap_or_else(|| "-".into())
    );
    println!(
        "to restore: stop dozor (systemctl stop dozor), copy the backup over {db} and delete \
         {db}-wal and {db}-shm if they exist, then start dozor (systemctl start dozor)"
    );
    Ok(ExitCode::SUCCESS)
}

/// True when both paths name one existing file (replacing the live database with `--force`
/// would pull it from under a running daemon).
fn is_same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
