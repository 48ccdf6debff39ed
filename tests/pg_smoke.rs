//! The store opens, migrates and round-trips a token on both backends.
//!
//! The PostgreSQL half needs `DOZOR_TEST_PG_URL` (set by `scripts/test`); without it the test
//! fails with instructions, unless `DOZOR_SKIP_PG=1` says to skip it.

mod common;

use chrono::{TimeZone, Utc};
use dozor::config::Secret;
use dozor::store::{Backend, Store, TokenSet, TokenStore};
use sqlx::Row;

/// Tables the initial migration creates; each must exist and be queryable.
const TABLES: &[&str] = &[
    "users",
    "stages",
    "leads",
    "deals",
    "contacts",
    "companies",
    "tasks",
    "activities",
    "phones",
    "calls",
    "sync_cursors",
    "sync_runs",
    "tokens",
    "actions",
];

fn migration_files() -> i64 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/migrations");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count() as i64
}

async fn check_store(url: &str, expected: Backend) {
    let store = Store::open(url, 2)
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", dozor::store::redact_db_url(url)));
    assert_eq!(store.backend(), expected);
    store.ping().await.unwrap();

    let applied: i64 = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, migration_files(), "every migration is recorded");
    for table in TABLES {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(store.pool())
            .await
            .unwrap_or_else(|e| panic!("table {table} missing after migrations: {e}"))
            .get(0);
        assert_eq!(n, 0, "table {table} starts empty");
    }

    assert_eq!(store.load_token("acme", "amocrm").await.unwrap(), None);
    let first = TokenSet {
        access_token: Secret::new("access-1"),
        refresh_token: Some(Secret::new("refresh-1")),
        expires_at: Some(Utc.with_ymd_and_hms(2027, 1, 2, 3, 4, 5).unwrap()),
        refreshed_at: Some(Utc.with_ymd_and_hms(2027, 1, 1, 3, 4, 5).unwrap()),
        extra: serde_json::json!({"client_endpoint": "https://example.bitrix24.ru/rest/"}),
    };
    store.save_token("acme", "amocrm", &first).await.unwrap();
    assert_eq!(
        store.load_token("acme", "amocrm").await.unwrap(),
        Some(first.clone())
    );
    // A rotation replaces the pair in place.
    let second = TokenSet {
        access_token: Secret::new("access-2"),
        refresh_token: Some(Secret::new("refresh-2")),
        ..first.clone()
    };
    store.save_token("acme", "amocrm", &second).await.unwrap();
    assert_eq!(
        store.load_token("acme", "amocrm").await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.load_token("other", "amocrm").await.unwrap(), None);
    assert!(store.token_age("acme", "amocrm").await.unwrap().is_some());
    store.close().await;

    // Opening again finds the schema current and the data kept.
    let again = Store::open(url, 2).await.unwrap();
    assert_eq!(
        again.load_token("acme", "amocrm").await.unwrap(),
        Some(second)
    );
    again.close().await;
}

#[tokio::test]
async fn sqlite_store_migrates_and_keeps_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::sqlite_url(dir.path());
    check_store(&url, Backend::Sqlite).await;
    assert!(dir.path().join("dozor.db").exists());
}

#[tokio::test]
async fn postgres_store_migrates_and_keeps_tokens() {
    if common::pg_skipped() {
        eprintln!("DOZOR_SKIP_PG=1: PostgreSQL smoke test skipped");
        return;
    }
    let url = common::pg_url().await;
    check_store(&url, Backend::Postgres).await;
    // A second fresh database is independent of the first.
    let other = common::pg_url().await;
    assert_ne!(url, other);
    let store = Store::open(&other, 2).await.unwrap();
    assert_eq!(store.load_token("acme", "amocrm").await.unwrap(), None);
    store.close().await;
}
