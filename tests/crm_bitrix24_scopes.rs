//! Bitrix24 credentials with some scopes missing: `check` names them and what they block, the
//! sync mirrors every kind it may read and reports the others, and a refusal is classified the
//! same inside a `batch` as on a direct call. Against the simulator over loopback HTTP, with a
//! real SQLite file.
//!
//! Docs (bitrix24/b24restdocs): `api-reference/common/system/scope.md` (the `scope` method and
//! its answer), `settings/how-to-call-rest-api/batch.md` ("Error Example (halt = 0)": each
//! refused command in `result_error` as `{"error":"insufficient_scope","error_description":""}`),
//! `_includes/system-errors.md` (`insufficient_scope`, HTTP 403, "The request requires higher
//! privileges than provided by the webhook token").

mod common;

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use dozor::config::Bitrix24Config;
use dozor::crm::bitrix24::Bitrix24;
use dozor::crm::{Crm, NewTask};
use dozor::domain::{EntityKind, EntityRef};
use dozor::http::ErrorKind;
use dozor::store::Store;
use dozor::sync::{SyncError, SyncOptions, sync_crm};
use dozor_sim::SimHandle;

fn cfg(h: &SimHandle) -> Bitrix24Config {
    common::b24_webhook(h.b24_webhook_url())
}

async fn client(h: &SimHandle) -> Bitrix24 {
    Bitrix24::new("t1", &cfg(h), Arc::new(common::MemTokens::default()))
        .await
        .unwrap()
}

/// The scope-method example of `scope.md` lists `department, entity, log, user`: a webhook
/// created like that passes `profile` but lacks crm and task; `ping` (what `check` runs) says so.
#[tokio::test]
async fn ping_names_every_missing_scope() {
    let h = common::small_sim(5).await;
    let c = client(&h).await;
    let who = c.ping().await.unwrap();
    assert!(!who.contains("warning"), "{who}");

    h.sim
        .b24
        .limit_scopes(&["department", "entity", "log", "user"]);
    let e = c.ping().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert_eq!(e.code.as_deref(), Some("insufficient_scope"));
    let m = e.to_string();
    assert!(
        m.contains("no `crm` scope") && m.contains("no `task` scope"),
        "{m}"
    );
    assert!(
        m.contains("deal_without_task") && m.contains("overdue_tasks"),
        "{m}"
    );
    assert!(
        !m.contains(&h.sim.creds.b24_webhook_secret),
        "secret leaked: {m}"
    );

    // telephony is optional: a warning naming what falls back.
    h.sim.b24.limit_scopes(&["crm", "task", "user"]);
    let who = c.ping().await.unwrap();
    assert!(who.contains("warning: no `telephony` scope"), "{who}");
    h.stop().await;
}

/// A webhook without `task`: every other kind is mirrored, tasks are reported as a source
/// error naming the kind, the scope and the rules it blocks; the run is recorded failed, so
/// the stale-source self-check sees it. Once the scope is ticked, tasks arrive.
#[tokio::test]
async fn sync_mirrors_every_permitted_kind_and_reports_the_refused_one() {
    let h = common::small_sim(6).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&common::sqlite_url(dir.path()), 2)
        .await
        .unwrap();
    let c = client(&h).await;
    h.sim
        .b24
        .limit_scopes(&["crm", "user", "department", "telephony"]);
    let err = sync_crm(&store, "t1", &c, SyncOptions::default())
        .await
        .expect_err("tasks refused");
    let SyncError::Remote { entity, error, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(entity, "task", "{err}");
    assert_eq!(error.code.as_deref(), Some("insufficient_scope"), "{err}");
    let m = err.to_string();
    assert!(
        m.contains("`task` scope") && m.contains("deal_without_task"),
        "{m}"
    );
    assert!(
        !m.contains(&h.sim.creds.b24_webhook_secret),
        "secret leaked: {m}"
    );
    assert!(
        !store.deals("t1").await.unwrap().is_empty(),
        "deals not mirrored"
    );
    assert!(
        store
            .tasks("t1")
            .await
            .unwrap()
            .iter()
            .all(|t| t.id.starts_with("todo-"))
    );
    let runs = store.last_sync_runs("t1").await.unwrap();
    let run = runs.iter().find(|r| r.source == "bitrix24").unwrap();
    assert!(
        !run.ok && run.error.as_deref().is_some_and(|e| e.contains("task")),
        "{run:?}"
    );

    h.sim
        .b24
        .limit_scopes(&["crm", "task", "user", "department", "telephony"]);
    sync_crm(&store, "t1", &c, SyncOptions::default())
        .await
        .unwrap();
    assert!(
        store
            .tasks("t1")
            .await
            .unwrap()
            .iter()
            .any(|t| !t.id.starts_with("todo-")),
        "tasks mirrored once the scope is granted"
    );
    h.stop().await;
}

/// The same `insufficient_scope` refusal of `tasks.task.add` is one error whether the write
/// went out alone (HTTP 403) or inside a batch with others (`result_error`, empty text).
#[tokio::test]
async fn a_write_refused_for_scope_is_the_same_error_alone_and_in_a_batch() {
    let h = common::small_sim(7).await;
    let c = client(&h).await;
    let (deal, resp) = {
        let w = h.sim.world();
        let d = w.deals.values().next().unwrap();
        (d.id, d.responsible_id)
    };
    h.sim.b24.limit_scopes(&["crm", "user"]);
    let task = |n: u32| NewTask {
        title: format!("Позвонить клиенту {n}"),
        description: format!("[dozor:k{n}]"),
        responsible_id: resp.to_string(),
        deadline: Utc.with_ymd_and_hms(2026, 3, 3, 15, 0, 0).unwrap(),
        entity: Some(EntityRef::new(EntityKind::Deal, deal.to_string())),
    };
    let alone = c.create_task(&task(0)).await.unwrap_err();
    let (t1, t2) = (task(1), task(2));
    let (a, b) = tokio::join!(c.create_task(&t1), c.create_task(&t2));
    for inside in [a.unwrap_err(), b.unwrap_err()] {
        assert_eq!(inside.kind, alone.kind, "{inside} vs {alone}");
        assert_eq!(inside.code, alone.code);
    }
    assert_eq!(alone.kind, ErrorKind::Auth, "{alone}");
    assert_eq!(alone.code.as_deref(), Some("insufficient_scope"));
    let batches = h.sim.stats()[&dozor_sim::System::Bitrix24]
        .by_method
        .get("batch")
        .copied();
    assert!(batches.unwrap_or(0) >= 1, "the pair went out as one batch");
    h.stop().await;
}

/// A webhook without `user` (nor `user_basic`, `user_brief`): `check` names the scope and what
/// it blocks; the sync mirrors every kind and the stages, reports the users as not mirrored
/// (the scope, what it blocks, the fix) and records the run failed. The messages that name
/// managers still build from the empty users table and say "сотрудник N", never a bare id.
/// Once the scope is ticked the users arrive at the next sync, without waiting for the
/// directory refresh interval.
#[tokio::test]
async fn a_missing_user_scope_leaves_the_rest_mirrored() {
    let h = common::small_sim(8).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let store = Store::open(&db, 2).await.unwrap();
    let text = common::tenant_config(
        &h,
        dozor::domain::CrmKind::Bitrix24,
        dozor::domain::TelephonyKind::Comagic,
        &db,
        "ru",
    );
    let cfg = dozor::config::parse(&text, None, None).unwrap().config;
    let t = &cfg.tenants[0];
    let c = client(&h).await;
    h.sim.b24.limit_scopes(&["crm", "task", "telephony"]);

    let e = c.ping().await.unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("no `user` scope") && m.contains("сотрудник N"),
        "{m}"
    );
    assert!(
        !m.contains("no `crm` scope") && !m.contains("no `task` scope"),
        "{m}"
    );

    let err = sync_crm(&store, &t.id, &c, SyncOptions::default())
        .await
        .expect_err("users refused");
    let SyncError::Remote { entity, error, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(entity, "users", "{err}");
    assert_eq!(error.kind, ErrorKind::Auth, "{err}");
    let m = err.to_string();
    assert!(
        m.contains("not mirrored") && m.contains("`user` scope"),
        "{m}"
    );
    assert!(m.contains("managers cannot be named"), "{m}");
    assert!(m.contains("tick the scope"), "{m}");
    assert!(
        !m.contains(&h.sim.creds.b24_webhook_secret),
        "secret leaked: {m}"
    );
    assert!(store.users(&t.id).await.unwrap().is_empty());
    assert!(
        !store.deals(&t.id).await.unwrap().is_empty(),
        "deals not mirrored"
    );
    assert!(
        !store.leads(&t.id).await.unwrap().is_empty(),
        "leads not mirrored"
    );
    assert!(
        store
            .tasks(&t.id)
            .await
            .unwrap()
            .iter()
            .any(|t| !t.id.starts_with("todo-")),
        "tasks not mirrored"
    );
    assert!(
        !store.stages(&t.id).await.unwrap().is_empty(),
        "stages not mirrored"
    );
    let runs = store.last_sync_runs(&t.id).await.unwrap();
    let run = runs.iter().find(|r| r.source == "bitrix24").unwrap();
    assert!(
        !run.ok && run.error.as_deref().is_some_and(|e| e.contains("users")),
        "{run:?}"
    );

    // Names degrade to "сотрудник N": the overdue list and the daily report.
    let now = Utc::now();
    let snap = dozor::store::Snapshot::load(&store, &t.id).await.unwrap();
    let overdue = dozor::bot::overdue(
        &snap,
        dozor::config::Lang::Ru,
        chrono_tz::Europe::Moscow,
        now,
    );
    if snap.tasks.iter().any(|t| t.is_overdue(now)) {
        assert!(overdue.contains("сотрудник "), "{overdue}");
    }
    let mut named = 0;
    for day in 0..3 {
        let on = (now - chrono::Duration::days(day)).date_naive();
        let rep = dozor::report::build(&store, t, dozor::report::Kind::Daily, Some(on), now, &[])
            .await
            .unwrap();
        for m in &rep.figures.managers {
            assert_eq!(m.name, format!("сотрудник {}", m.user_id), "{m:?}");
            named += 1;
        }
        assert!(!rep.html.contains(">сотрудник 1.<"), "{}", rep.html);
    }
    assert!(named > 0, "no manager line in three daily reports");

    // The scope ticked: the users arrive at once.
    h.sim
        .b24
        .limit_scopes(&["crm", "task", "user", "telephony"]);
    sync_crm(&store, &t.id, &c, SyncOptions::default())
        .await
        .unwrap();
    assert!(!store.users(&t.id).await.unwrap().is_empty());
    h.stop().await;
}

/// `api-reference/user/user-get.md` ("Scope: user, user_brief, user_basic"): a webhook granted only
/// the narrower `user_basic` reads the users; `check` passes it and the users are listed.
#[tokio::test]
async fn user_basic_is_enough_to_read_users() {
    let h = common::small_sim(5).await;
    let c = client(&h).await;
    h.sim
        .b24
        .limit_scopes(&["crm", "task", "user_basic", "telephony"]);
    let who = c.ping().await.unwrap();
    assert!(!who.contains("warning"), "{who}");
    let users = c.users().await.unwrap();
    assert!(!users.is_empty());
    h.sim.b24.limit_scopes(&["crm", "task", "telephony"]);
    let e = c.users().await.unwrap_err();
    assert_eq!(e.code.as_deref(), Some("insufficient_scope"), "{e}");
}
