//! The whole cycle over HTTP against the simulator — sync, rules, ledger — on a real SQLite file
//! and on a real PostgreSQL server, for both CRMs and both telephony services.

mod common;

use chrono::Utc;
use common::tenant_config;
use dozor::config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor::engine::{CycleOptions, run_cycle};
use dozor::ledger::Outcome;
use dozor::store::Store;
use dozor::tenant;
use dozor_sim::SimOptions;

/// Reads 31 days of telephony: the generated calls span the 30 days before the simulator started.
fn cycle_opts(dry_run: bool) -> CycleOptions {
    CycleOptions {
        dry_run,
        sync: dozor::sync::SyncOptions {
            telephony_initial: std::time::Duration::from_secs(31 * 86_400),
            ..dozor::sync::SyncOptions::default()
        },
        now: None,
    }
}

/// Only `deal_without_task` acts, so the counts below are its alone (the other rules have
/// tests of their own).
fn only_deal_without_task(config: String) -> String {
    common::only_rules(config, &["deal_without_task"])
}

fn sim_opts() -> SimOptions {
    common::sim_opts(7)
}

async fn full_cycle(db_url: &str, crm: CrmKind, tel: TelephonyKind) {
    let h = common::start_sim(sim_opts()).await;
    let text = only_deal_without_task(tenant_config(&h, crm, tel, db_url, "ru"));
    let cfg = config::parse(&text, None, None).unwrap().config;
    let t = &cfg.tenants[0];
    let store = Store::open(db_url, 4).await.unwrap();
    let tenant = tenant::connect(t, &store).await.unwrap();
    let (deals, contacts, tasks_before, missing) = {
        let w = h.sim.world();
        (
            w.deals.len() as i64,
            w.contacts.len() as i64,
            w.tasks.len(),
            common::open_deals_without_task(&w),
        )
    };
    assert!(
        !missing.is_empty(),
        "the generated world has open deals without a task"
    );

    let first = run_cycle(&store, &tenant, cycle_opts(false)).await;
    assert!(first.ok(), "first cycle failed: {:?}", first.errors);
    let counts = store.counts("demo").await.unwrap();
    assert_eq!(counts["deals"], deals, "every deal mirrored");
    assert_eq!(counts["contacts"], contacts, "every contact mirrored");
    assert!(counts["calls"] > 0, "calls mirrored");
    // Calltouch tracks calls to tracking numbers: inbound only.
    let calls_in_world = h
        .sim
        .world()
        .calls
        .values()
        .filter(|c| tel == TelephonyKind::Comagic || c.direction == dozor_sim::world::Dir::In)
        .count() as i64;
    assert_eq!(
        counts["calls"], calls_in_world,
        "every call of the last 31 days mirrored"
    );

    // The rule created exactly one task per open deal without a next step.
    let done: Vec<_> = first
        .applied
        .iter()
        .filter(|a| a.rule == "deal_without_task" && matches!(a.outcome, Outcome::Done(_)))
        .collect();
    assert_eq!(done.len(), missing.len());
    {
        let w = h.sim.world();
        assert!(
            common::open_deals_without_task(&w).is_empty(),
            "every open deal has a next step now"
        );
        let marked = w
            .tasks
            .values()
            // amoCRM keeps one task text: the marker lands in the title there.
            .filter(|t| {
                format!("{} {}", t.title, t.description)
                    .contains("[dozor:deal_without_task:demo:deal:")
            })
            .count();
        assert_eq!(marked, missing.len(), "each task carries its ledger marker");
    }

    // Repeated cycles write nothing new.
    for _ in 0..2 {
        let again = run_cycle(&store, &tenant, cycle_opts(false)).await;
        assert!(again.ok(), "{:?}", again.errors);
        let writes = again
            .applied
            .iter()
            .filter(|a| a.crm_write && matches!(a.outcome, Outcome::Done(_)))
            .count();
        assert_eq!(writes, 0, "a repeated cycle must not write again");
    }
    assert_eq!(h.sim.world().tasks.len(), tasks_before + missing.len());
    let rows = store.actions_in_state("demo", "done").await.unwrap();
    let tasks_done = rows
        .iter()
        .filter(|r| r.rule == "deal_without_task")
        .count();
    assert_eq!(tasks_done, missing.len());
    store.close().await;
    h.stop().await;
}

async fn dry_run_writes_nothing(db_url: &str, crm: CrmKind) {
    let h = common::start_sim(sim_opts()).await;
    let text = only_deal_without_task(tenant_config(&h, crm, TelephonyKind::Comagic, db_url, "en"));
    let cfg = config::parse(&text, None, None).unwrap().config;
    let store = Store::open(db_url, 4).await.unwrap();
    let tenant = tenant::connect(&cfg.tenants[0], &store).await.unwrap();
    let before = h.sim.world().tasks.len();
    let s = run_cycle(&store, &tenant, cycle_opts(true)).await;
    assert!(s.ok(), "{:?}", s.errors);
    let shadow = s
        .applied
        .iter()
        .filter(|a| a.outcome == Outcome::Shadow)
        .count();
    assert!(shadow > 0, "shadow mode reports what it would do");
    assert_eq!(
        h.sim.world().tasks.len(),
        before,
        "shadow mode writes nothing to the CRM"
    );
    assert_eq!(
        store
            .actions_in_state("demo", "shadow")
            .await
            .unwrap()
            .len(),
        shadow
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_and_comagic_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    full_cycle(
        &common::sqlite_url(dir.path()),
        CrmKind::Bitrix24,
        TelephonyKind::Comagic,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_and_calltouch_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    full_cycle(
        &common::sqlite_url(dir.path()),
        CrmKind::Amocrm,
        TelephonyKind::Calltouch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_and_calltouch_on_postgres() {
    if common::pg_skipped() {
        return;
    }
    full_cycle(
        &common::pg_url().await,
        CrmKind::Bitrix24,
        TelephonyKind::Calltouch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_and_comagic_on_postgres() {
    if common::pg_skipped() {
        return;
    }
    full_cycle(
        &common::pg_url().await,
        CrmKind::Amocrm,
        TelephonyKind::Comagic,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_on_either_crm() {
    let dir = tempfile::tempdir().unwrap();
    dry_run_writes_nothing(
        &common::sqlite_url(&dir.path().join("b24")),
        CrmKind::Bitrix24,
    )
    .await;
    dry_run_writes_nothing(
        &common::sqlite_url(&dir.path().join("amo")),
        CrmKind::Amocrm,
    )
    .await;
}

/// amoCRM refuses the refresh token: one "re-authorise" message to the ops chat, however many
/// cycles and restarts follow; after re-authorisation one "resolved" message, then silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfcheck_reauth_raised_once_and_cleared_once_across_restarts() {
    use dozor::service::selfcheck::{self, SelfCheckConfig};
    use dozor::store::{TokenSet, TokenStore};
    use dozor_sim::tenant_config::OWNER_CHAT;

    let h = common::start_sim(sim_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = common::sqlite_url(dir.path());
    let text = common::only_rules(
        tenant_config(&h, CrmKind::Amocrm, TelephonyKind::Comagic, &db_url, "ru"),
        &[],
    );
    let cfg = config::parse(&text, None, None).unwrap().config;
    let t = &cfg.tenants[0];
    // No disk threshold (where the disk is not what is tested): the machine's own free space
    // must not decide the other checks.
    let checks = SelfCheckConfig {
        disk_min_free_percent: 0.0,
        disk_min_free_mib: 0,
        ..SelfCheckConfig::default()
    };
    let ops_messages = || {
        h.sim
            .telegram
            .messages()
            .into_iter()
            .filter(|m| m.chat_id == OWNER_CHAT)
            .filter_map(|m| m.text)
            .filter(|t| t.contains("amoCRM"))
            .collect::<Vec<_>>()
    };
    // One cycle + self-checks, as the daemon runs them; returns the transitions.
    async fn cycle(
        store: &Store,
        tenant: &dozor::tenant::Tenant,
        checks: &SelfCheckConfig,
        dir: &std::path::Path,
    ) -> Vec<selfcheck::Transition> {
        let s = run_cycle(store, tenant, cycle_opts(false)).await;
        selfcheck::run(store, tenant, &s, checks, Some(dir), &[]).await
    }

    let store = Store::open(&db_url, 4).await.unwrap();
    let tenant = tenant::connect(t, &store).await.unwrap();
    let tr = cycle(&store, &tenant, &checks, dir.path()).await;
    assert!(tr.iter().all(|t| !t.id.contains("amocrm")), "{tr:?}");
    assert!(ops_messages().is_empty());

    // The account owner disconnects the integration; the access token runs out.
    h.sim.amo.revoke_refresh_tokens();
    h.sim.amo.expire_access_tokens();
    for _ in 0..3 {
        cycle(&store, &tenant, &checks, dir.path()).await;
    }
    let msgs = ops_messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains("повторная авторизация"), "{msgs:?}");
    let raised = store
        .action("selfcheck:demo:reauth:amocrm:raised:1")
        .await
        .unwrap()
        .expect("the message is a ledger action");
    assert_eq!(raised.state, "done");

    // Restart: a new store handle and new clients; the stored token is still the refused one.
    drop(tenant);
    store.close().await;
    let store = Store::open(&db_url, 4).await.unwrap();
    let tenant = tenant::connect(t, &store).await.unwrap();
    for _ in 0..2 {
        cycle(&store, &tenant, &checks, dir.path()).await;
    }
    assert_eq!(ops_messages().len(), 1, "raised again after a restart");

    // Someone re-authorises: a new pair from an authorization code lands in the token store.
    let grant: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/oauth2/access_token", h.amo_url()))
        .json(&serde_json::json!({
            "client_id": h.sim.creds.amo_client_id,
            "client_secret": h.sim.creds.amo_client_secret,
            "grant_type": "authorization_code",
            "code": "fresh-consent",
            "redirect_uri": h.sim.creds.amo_redirect_uri,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = Utc::now();
    store
        .save_token(
            "demo",
            "amocrm",
            &TokenSet {
                access_token: config::Secret::new(grant["access_token"].as_str().unwrap()),
                refresh_token: Some(config::Secret::new(
                    grant["refresh_token"].as_str().unwrap(),
                )),
                expires_at: Some(now + chrono::Duration::hours(1)),
                refreshed_at: Some(now),
                extra: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    // The running client picks the new token up without a restart.
    let tr = cycle(&store, &tenant, &checks, dir.path()).await;
    assert!(
        tr.iter().any(|t| t.id == "reauth:amocrm" && !t.raised),
        "{tr:?}"
    );
    for _ in 0..2 {
        cycle(&store, &tenant, &checks, dir.path()).await;
    }
    let msgs = ops_messages();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[1].contains("устранено"), "{msgs:?}");
    assert!(dozor::telemetry::reauth_required("demo").is_empty());
    h.stop().await;
}

/// A source failing three cycles in a row and a ledger backlog over its threshold are reported
/// in the tenant's language (English here), each once, and cleared once when they recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfcheck_stale_source_and_backlog_in_english() {
    use dozor::service::selfcheck::{self, Check, SelfCheckConfig};
    use dozor::store::cursors::SyncRun;

    let h = common::start_sim(sim_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = common::sqlite_url(dir.path());
    let text = common::only_rules(
        tenant_config(
            &h,
            CrmKind::Bitrix24,
            TelephonyKind::Calltouch,
            &db_url,
            "en",
        ),
        &[],
    );
    let cfg = config::parse(&text, None, None).unwrap().config;
    let store = Store::open(&db_url, 4).await.unwrap();
    let tenant = tenant::connect(&cfg.tenants[0], &store).await.unwrap();
    // No disk threshold: the machine's own free space must not decide this test.
    let checks = SelfCheckConfig {
        ledger_backlog: 0,
        disk_min_free_percent: 0.0,
        disk_min_free_mib: 0,
        ..SelfCheckConfig::default()
    };
    let summary = run_cycle(&store, &tenant, cycle_opts(false)).await;
    assert!(summary.ok(), "{:?}", summary.errors);
    let none = selfcheck::evaluate(&store, &tenant, &summary, &checks, Some(dir.path())).await;
    assert!(none.is_empty(), "{none:?}");

    // Three failed Calltouch runs (the last one newest) and one action stuck in `intent`.
    let base = Utc::now();
    for i in 0..3 {
        store
            .record_sync_run(
                "demo",
                &SyncRun {
                    source: "calltouch".into(),
                    started_at: base + chrono::Duration::seconds(i + 1),
                    finished_at: Some(base + chrono::Duration::seconds(i + 1)),
                    ok: false,
                    items: 0,
                    error: Some("calltouch GET calls-diary/calls: HTTP 502".into()),
                },
            )
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO actions (key, tenant, rule, kind, payload, state, attempts, created_at, updated_at) \
         VALUES ('stuck', 'demo', 'deal_without_task', 'create_task', '{}', 'intent', 1, 0, 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let problems = selfcheck::evaluate(&store, &tenant, &summary, &checks, Some(dir.path())).await;
    let ids: Vec<String> = problems.iter().map(|p| p.id()).collect();
    assert_eq!(
        ids,
        vec!["stale:calltouch", "backlog:ledger"],
        "{problems:?}"
    );
    let stale = problems.iter().find(|p| p.check == Check::Stale).unwrap();
    assert!(
        stale.text.contains("Calltouch has not synced for 3 cycles in a row: calltouch GET calls-diary/calls: HTTP 502"),
        "{}",
        stale.text
    );
    let mut sent = 0;
    for _ in 0..2 {
        let tr = selfcheck::notify(&store, &tenant, &problems).await.unwrap();
        sent += tr.len();
    }
    assert_eq!(sent, 2, "each problem raised once");

    // Both recover: a good run, and the stuck action reaches an outcome.
    store
        .record_sync_run(
            "demo",
            &SyncRun {
                source: "calltouch".into(),
                started_at: base + chrono::Duration::seconds(10),
                finished_at: Some(base + chrono::Duration::seconds(10)),
                ok: true,
                items: 1,
                error: None,
            },
        )
        .await
        .unwrap();
    store
        .set_action_state("stuck", "done", Some("1"), None, false)
        .await
        .unwrap();
    let mut cleared = Vec::new();
    for _ in 0..2 {
        let tr = selfcheck::run(&store, &tenant, &summary, &checks, Some(dir.path()), &[]).await;
        cleared.extend(tr);
    }
    assert_eq!(cleared.len(), 2, "{cleared:?}");
    assert!(cleared.iter().all(|t| !t.raised));
    let texts: Vec<String> = h
        .sim
        .telegram
        .messages()
        .into_iter()
        .filter(|m| m.chat_id == dozor_sim::tenant_config::OWNER_CHAT)
        .filter_map(|m| m.text)
        .filter(|t| t.starts_with("⚠️") || t.starts_with("✅"))
        .collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("resolved: Calltouch syncs again")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("resolved: the action backlog is cleared")),
        "{texts:?}"
    );
    // The hook for webhook deliveries builds a problem the same machinery raises.
    let hook = selfcheck::Problem::webhooks_stopped("bitrix24", 45, config::Lang::En);
    assert_eq!(hook.id(), "webhooks_stopped:bitrix24");
    assert!(hook.text.contains("45 min"));
    h.stop().await;
}

/// Each transition as (check id, raised).
fn changes(tr: &[dozor::service::selfcheck::Transition]) -> Vec<(&str, bool)> {
    tr.iter().map(|t| (t.id.as_str(), t.raised)).collect()
}

/// The other self-checks, each raised once and cleared once, through the same store and ledger
/// the daemon uses: CoMagic refusing its key (fixed in the config, the tenant reconnected, as
/// after a restart), the amoCRM refresh token near its 3-month expiry (renewed by the next
/// refresh), the data disk below its threshold (the real `statvfs` of the data directory), and
/// webhook deliveries stopped (the receiver's problem passed in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfcheck_telephony_token_age_disk_and_webhooks_raise_and_clear() {
    use dozor::service::selfcheck::{self, Problem, SelfCheckConfig};
    use dozor::store::TokenStore;
    use dozor_sim::tenant_config::OWNER_CHAT;

    let h = common::start_sim(sim_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = common::sqlite_url(dir.path());
    let good = common::only_rules(
        tenant_config(&h, CrmKind::Amocrm, TelephonyKind::Comagic, &db_url, "ru"),
        &[],
    );
    let key = h.sim.creds.comagic_access_token.clone();
    let bad = good.replace(&key, "revoked-key-0000");
    let connect = |text: String| {
        let store_url = db_url.clone();
        async move {
            let cfg = config::parse(&text, None, None).unwrap().config;
            let store = Store::open(&store_url, 4).await.unwrap();
            let tenant = tenant::connect(&cfg.tenants[0], &store).await.unwrap();
            (store, tenant)
        }
    };
    let ops = || {
        h.sim
            .telegram
            .messages()
            .into_iter()
            .filter(|m| m.chat_id == OWNER_CHAT)
            .filter_map(|m| m.text)
            .filter(|t| t.starts_with("⚠️") || t.starts_with("✅"))
            .collect::<Vec<_>>()
    };
    // No disk threshold (where the disk is not what is tested): the machine's own free space
    // must not decide the other checks.
    let checks = SelfCheckConfig {
        disk_min_free_percent: 0.0,
        disk_min_free_mib: 0,
        ..SelfCheckConfig::default()
    };
    let cycle = |store: Store,
                 tenant: std::sync::Arc<dozor::tenant::Tenant>,
                 checks: SelfCheckConfig,
                 extra: Vec<Problem>| {
        let dir = dir.path().to_path_buf();
        async move {
            let s = run_cycle(&store, &tenant, cycle_opts(false)).await;
            selfcheck::run(&store, &tenant, &s, &checks, Some(&dir), &extra).await
        }
    };

    // CoMagic refuses the key: raised once over two cycles, the CRM side untouched.
    let (store, tenant) = connect(bad).await;
    let tenant = std::sync::Arc::new(tenant);
    let mut tr = Vec::new();
    for _ in 0..2 {
        tr.extend(cycle(store.clone(), tenant.clone(), checks.clone(), vec![]).await);
    }
    let ids = changes(&tr);
    assert_eq!(ids, vec![("telephony_auth:comagic", true)], "{tr:?}");
    let msgs = ops();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains("телефония CoMagic отклоняет ключ"),
        "{msgs:?}"
    );
    // The key is fixed in the config; the daemon restarts.
    drop(tenant);
    store.close().await;
    let (store, tenant) = connect(good).await;
    let tenant = std::sync::Arc::new(tenant);
    let tr = cycle(store.clone(), tenant.clone(), checks.clone(), vec![]).await;
    let ids = changes(&tr);
    assert_eq!(ids, vec![("telephony_auth:comagic", false)], "{tr:?}");
    assert!(
        ops()[1].contains("доступ к телефонии CoMagic восстановлен"),
        "{:?}",
        ops()
    );

    // The refresh token was last renewed 85 days ago (the access token still valid).
    let mut t = store.load_token("demo", "amocrm").await.unwrap().unwrap();
    t.refreshed_at = Some(Utc::now() - chrono::Duration::days(85));
    store.save_token("demo", "amocrm", &t).await.unwrap();
    let mut tr = Vec::new();
    for _ in 0..2 {
        tr.extend(cycle(store.clone(), tenant.clone(), checks.clone(), vec![]).await);
    }
    let ids = changes(&tr);
    assert_eq!(ids, vec![("token_age:amocrm", true)], "{tr:?}");
    assert!(ops()[2].contains("не обновлялся 85 дн."), "{:?}", ops());
    // The access token runs out; the client refreshes and the pair is new.
    h.sim.amo.expire_access_tokens();
    let tr = cycle(store.clone(), tenant.clone(), checks.clone(), vec![]).await;
    let ids = changes(&tr);
    assert_eq!(ids, vec![("token_age:amocrm", false)], "{tr:?}");
    assert!(ops()[3].contains("токен amoCRM обновлён"), "{:?}", ops());

    // The data disk: a threshold above what any real disk has free raises it, no threshold
    // clears it.
    let (free, total) = selfcheck::disk_space(dir.path()).expect("statvfs of the data dir");
    assert!(total > 0 && free <= total);
    let full = SelfCheckConfig {
        disk_min_free_mib: total / (1024 * 1024) + 1,
        ..checks.clone()
    };
    let mut tr = Vec::new();
    for _ in 0..2 {
        tr.extend(cycle(store.clone(), tenant.clone(), full.clone(), vec![]).await);
    }
    let ids = changes(&tr);
    assert_eq!(ids, vec![("disk:data_dir", true)], "{tr:?}");
    assert!(
        ops()[4].contains("на диске с данными") && ops()[4].contains("МиБ"),
        "{:?}",
        ops()
    );
    let tr = cycle(store.clone(), tenant.clone(), checks.clone(), vec![]).await;
    let ids = changes(&tr);
    assert_eq!(ids, vec![("disk:data_dir", false)], "{tr:?}");

    // Webhook deliveries stopped, as the receiver reports them, then resumed.
    let hook = vec![Problem::webhooks_stopped("amocrm", 75, config::Lang::Ru)];
    let mut tr = Vec::new();
    for _ in 0..2 {
        tr.extend(cycle(store.clone(), tenant.clone(), checks.clone(), hook.clone()).await);
    }
    let ids = changes(&tr);
    assert_eq!(ids, vec![("webhooks_stopped:amocrm", true)], "{tr:?}");
    let tr = cycle(store.clone(), tenant.clone(), checks.clone(), vec![]).await;
    let ids = changes(&tr);
    assert_eq!(ids, vec![("webhooks_stopped:amocrm", false)], "{tr:?}");

    let msgs = ops();
    assert_eq!(msgs.len(), 8, "each raised once and cleared once: {msgs:?}");
    assert!(
        msgs[6].contains("вебхуки от amoCRM не приходят уже 75 мин."),
        "{msgs:?}"
    );
    assert!(
        msgs[7].contains("вебхуки от amoCRM снова приходят"),
        "{msgs:?}"
    );
    h.stop().await;
}
