//! What only the Bitrix24 connector does, against the simulator over real HTTP: its mapping,
//! the portal's bucket and operating budget, a renamed portal, CRM to-dos and tokens refreshed
//! ahead of expiry. What both CRMs owe is in `crm_contract`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use dozor::config::{Bitrix24Config, Bitrix24Plan};
use dozor::crm::bitrix24::Bitrix24;
use dozor::crm::{Crm, Cursor};
use dozor::domain::{ActivityKind, EntityKind, EntityRef, Record, Semantics};
use dozor::store::{Store, TokenStore};
use dozor_sim::world::*;
use dozor_sim::{SimHandle, SimOptions, System};

fn opts() -> SimOptions {
    common::anchored(11, common::march_noon())
}

fn oauth_cfg(h: &SimHandle, refresh: &str) -> Bitrix24Config {
    Bitrix24Config {
        plan: Bitrix24Plan::Standard,
        ..common::b24_oauth(h, refresh)
    }
}

async fn client(h: &SimHandle) -> Bitrix24 {
    Bitrix24::new(
        "t1",
        &common::b24_webhook(h.b24_webhook_url()),
        Arc::new(common::MemTokens::default()),
    )
    .await
    .unwrap()
}

/// Reads a whole pass; returns the records and the final cursor.
async fn fetch_all(c: &Bitrix24, kind: EntityKind) -> (Vec<Record>, Cursor) {
    let mut cursor = Cursor::default();
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = c.fetch_page(kind, &cursor).await.unwrap();
        out.extend(page.records);
        cursor = page.next;
        if page.done {
            assert!(cursor.position.is_none());
            return (out, cursor);
        }
        assert!(cursor.position.is_some());
    }
    panic!("no end of pass");
}

fn owner_ref((o, id): (Owner, u64)) -> EntityRef {
    let k = match o {
        Owner::Lead => EntityKind::Lead,
        Owner::Deal => EntityKind::Deal,
        Owner::Contact => EntityKind::Contact,
        Owner::Company => EntityKind::Company,
    };
    EntityRef::new(k, id.to_string())
}

async fn start_world(w: World) -> SimHandle {
    common::serve_world(opts(), w).await
}

#[tokio::test]
async fn full_fetch_matches_world_and_counts_requests() {
    let h = common::start_sim(opts()).await;
    let c = client(&h).await;
    assert_eq!(c.account(), h.addr.to_string());
    h.sim.reset_stats();
    let mut got = HashMap::new();
    let mut all = Vec::new();
    for kind in EntityKind::ALL {
        let (recs, cur) = fetch_all(&c, kind).await;
        assert!(cur.high_water.is_some(), "{kind:?}");
        assert!(recs.iter().all(|r| r.entity_kind() == kind));
        got.insert(kind, recs.len());
        all.extend(recs);
    }
    let requests = h.sim.stats()[&System::Bitrix24].requests;
    eprintln!("full fetch of a scale-1 world: {requests} HTTP requests, counts {got:?}");
    let w = h.sim.world().clone();
    assert_eq!(got[&EntityKind::Lead], w.leads.len());
    assert_eq!(got[&EntityKind::Deal], w.deals.len());
    assert_eq!(got[&EntityKind::Contact], w.contacts.len());
    assert_eq!(got[&EntityKind::Company], w.companies.len());
    assert_eq!(got[&EntityKind::Task], w.tasks.len());
    assert_eq!(got[&EntityKind::Activity], w.activities.len());
    assert_eq!(requests, 6, "one batch request per entity kind");

    // Spot-check the mapping against the world.
    for r in &all {
        match r {
            Record::Deal(d) => {
                let sd = &w.deals[&d.id.parse::<u64>().unwrap()];
                let (p, s) = w.stage(sd.stage_id).unwrap();
                assert_eq!(d.stage_id, s.code);
                assert_eq!(d.pipeline_id, p.id.to_string());
                let sem = match s.kind {
                    StageKind::Open => Semantics::Open,
                    StageKind::Won => Semantics::Won,
                    StageKind::Lost => Semantics::Lost,
                };
                assert_eq!(d.semantics, sem);
                assert!((d.amount - sd.amount).abs() < 0.005);
                assert_eq!(d.updated_at.timestamp(), sd.updated_at.timestamp());
                assert_eq!(d.closed_at.is_some(), sd.closed_at.is_some());
                assert_eq!(d.contact_id, sd.contact_id.map(|x| x.to_string()));
            }
            Record::Contact(ct) => {
                let sc = &w.contacts[&ct.id.parse::<u64>().unwrap()];
                assert_eq!(ct.phones, sc.phones);
                assert_eq!(ct.emails, sc.emails);
                assert_eq!(ct.name, sc.full_name());
            }
            Record::Lead(l) => {
                let sl = &w.leads[&l.id.parse::<u64>().unwrap()];
                assert_eq!(l.status_id, sl.status.code());
                assert_eq!(l.phones, sl.phone.iter().cloned().collect::<Vec<_>>());
                assert_eq!(l.utm.source, sl.utm.source);
            }
            Record::Task(t) => {
                let st = &w.tasks[&t.id.parse::<u64>().unwrap()];
                assert_eq!(t.completed, st.completed);
                assert_eq!(t.entity, st.binding.map(owner_ref));
                assert_eq!(
                    t.deadline.map(|d| d.timestamp()),
                    st.deadline.map(|d| d.timestamp())
                );
            }
            Record::Activity(a) => {
                let sa = &w.activities[&a.id.parse::<u64>().unwrap()];
                let kind = match sa.kind {
                    ActivityType::Call => ActivityKind::Call,
                    ActivityType::Email => ActivityKind::Email,
                    ActivityType::Meeting => ActivityKind::Meeting,
                };
                assert_eq!(a.kind, kind);
                if kind == ActivityKind::Call {
                    assert_eq!(a.duration_s, Some(sa.duration_s));
                    assert_eq!(a.phone, sa.phone);
                }
                assert_eq!(a.entity, Some(owner_ref(sa.owner)));
                assert_eq!(a.external_id, sa.external_id);
            }
            Record::Company(_) => {}
        }
    }

    // Users, pipelines, ping, comments.
    let users = c.users().await.unwrap();
    assert_eq!(users.len(), w.users.len());
    let u0 = &w.users[0];
    let first = users.iter().find(|u| u.id == u0.id.to_string()).unwrap();
    assert_eq!(first.extension.as_deref(), Some(u0.extension.as_str()));
    let pipes = c.pipelines().await.unwrap();
    assert_eq!(pipes.len(), w.pipelines.len() + 1);
    let repeat = pipes.iter().find(|p| p.id == "1").unwrap();
    assert_eq!(
        repeat
            .stages
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        vec!["C1:NEW", "C1:PREPARATION", "C1:WON", "C1:LOSE"]
    );
    assert_eq!(repeat.stages[2].semantics, Semantics::Won);
    let leads = pipes.iter().find(|p| p.id == "leads").unwrap();
    assert!(
        leads
            .stages
            .iter()
            .any(|s| s.id == "JUNK" && s.semantics == Semantics::Lost)
    );
    let me = c.ping().await.unwrap();
    assert_eq!(me, format!("{} (id {})", u0.full_name(), u0.id));
    let deal_id = *w.deals.keys().next().unwrap();
    let cid = c
        .add_comment(
            &EntityRef::new(EntityKind::Deal, deal_id.to_string()),
            "проверка",
        )
        .await
        .unwrap();
    assert!(!cid.is_empty());
    assert!(
        h.sim
            .world()
            .comments
            .iter()
            .any(|(o, id, t, _)| *o == Owner::Deal && *id == deal_id && t == "проверка")
    );
}

#[tokio::test]
async fn client_limiter_keeps_under_the_portal_bucket() {
    let mut o = opts();
    o.enforce_limits = true;
    let h = common::serve_world(o, common::contacts_world(3)).await;
    let mut cfg = common::b24_webhook(h.b24_webhook_url());
    cfg.plan = Bitrix24Plan::Standard;
    let c = Arc::new(
        Bitrix24::new("t1", &cfg, Arc::new(common::MemTokens::default()))
            .await
            .unwrap(),
    );
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..56)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.ping().await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // 50 at once, then 2 per second.
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let stats = h.sim.stats()[&System::Bitrix24].clone();
    assert!(stats.throttled <= 2, "{stats:?}");
}

/// A renamed portal: a server whose every request is answered 302 to the same method at the
/// simulator's webhook address. Returns its webhook URL and a count of the requests it had.
async fn renamed_portal(h: &SimHandle) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let target = h.b24_webhook_url();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let t = target.clone();
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let method = uri.path().rsplit('/').next().unwrap_or("").to_string();
            (
                axum::http::StatusCode::FOUND,
                [(axum::http::header::LOCATION, format!("{t}{method}"))],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let old = format!(
        "http://{addr}/b24/rest/1/{}/",
        h.sim.creds.b24_webhook_secret
    );
    (old, hits)
}

#[tokio::test]
async fn renamed_portal_is_followed_without_losing_the_body() {
    let h = start_world(common::contacts_world(3)).await;
    let (old, _) = renamed_portal(&h).await;
    let c = Bitrix24::new(
        "t1",
        &common::b24_webhook(&old),
        Arc::new(common::MemTokens::default()),
    )
    .await
    .unwrap();
    // A batch POST: its parameters must arrive at the new address.
    let (recs, _) = fetch_all(&c, EntityKind::Contact).await;
    assert_eq!(recs.len(), 3);
}

/// bitrix24/b24restdocs `settings/how-to-call-rest-api/change-domen.md`: the old address
/// answers 302 with `Location` = the new address plus the method path; the client re-posts
/// the body there, keeps the new address ("retain endpoint on your side") in the store, and
/// goes there directly from then on, after a restart too; `check` says so.
#[tokio::test]
async fn renamed_portal_is_remembered_across_requests_and_restarts() {
    use std::sync::atomic::Ordering;
    let h = start_world(common::contacts_world(3)).await;
    let (old, hits) = renamed_portal(&h).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&common::sqlite_url(dir.path()), 2)
        .await
        .unwrap();
    let tokens: Arc<dyn TokenStore> = Arc::new(store.clone());
    let c = Bitrix24::new("t1", &common::b24_webhook(&old), tokens.clone())
        .await
        .unwrap();
    let (recs, _) = fetch_all(&c, EntityKind::Contact).await;
    assert_eq!(recs.len(), 3);
    let (recs, _) = fetch_all(&c, EntityKind::Contact).await;
    assert_eq!(recs.len(), 3);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the old address is asked once"
    );

    // A restart: the stored address is used at once, and `check` names it.
    let again = Bitrix24::new("t1", &common::b24_webhook(&old), tokens)
        .await
        .unwrap();
    let who = again.ping().await.unwrap();
    let new_host = url::Url::parse(&h.b24_webhook_url()).unwrap();
    let new_host = format!(
        "{}:{}",
        new_host.host_str().unwrap(),
        new_host.port().unwrap()
    );
    assert!(
        who.contains(&format!("the portal moved to {new_host}")),
        "{who}"
    );
    assert!(!who.contains(&h.sim.creds.b24_webhook_secret), "{who}");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "{who}");
}

#[tokio::test]
async fn crm_todos_arrive_as_tasks() {
    let h = common::start_sim(opts()).await;
    let c = client(&h).await;
    let deal_id = *h.sim.world().deals.keys().next().unwrap();
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{}crm.activity.todo.add", h.b24_webhook_url()))
        .json(&serde_json::json!({"ownerTypeId": 2, "ownerId": deal_id,
            "deadline": "2026-03-05T15:00:00", "title": "Перезвонить", "responsibleId": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let todo_id = v["result"]["id"].as_u64().unwrap();
    let (recs, _) = fetch_all(&c, EntityKind::Activity).await;
    let todo = recs
        .iter()
        .find_map(|r| match r {
            Record::Task(t) if t.id == format!("todo-{todo_id}") => Some(t.clone()),
            _ => None,
        })
        .expect("the to-do is delivered as a task");
    assert_eq!(todo.title, "Перезвонить");
    assert_eq!(
        todo.entity,
        Some(EntityRef::new(EntityKind::Deal, deal_id.to_string()))
    );
    assert_eq!(
        todo.deadline,
        Some(Utc.with_ymd_and_hms(2026, 3, 5, 12, 0, 0).unwrap())
    );
    // Not duplicated in tasks.task.list.
    let (tasks, _) = fetch_all(&c, EntityKind::Task).await;
    assert!(
        tasks
            .iter()
            .all(|t| !t.id().ends_with(&todo_id.to_string()))
    );
}

async fn sqlite_tokens(dir: &tempfile::TempDir) -> Arc<dyn TokenStore> {
    let url = format!("sqlite://{}", dir.path().join("dozor.db").display());
    Arc::new(Store::open(&url, 4).await.unwrap())
}

fn by_method(h: &SimHandle, method: &str) -> u64 {
    h.sim.stats()[&System::Bitrix24]
        .by_method
        .get(method)
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn oauth_token_near_expiry_is_refreshed_before_use() {
    let h = start_world(common::contacts_world(60)).await;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_tokens(&dir).await;
    let cfg = oauth_cfg(&h, &h.sim.creds.b24_refresh_token);
    Bitrix24::new("t1", &cfg, store.clone())
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    assert_eq!(h.sim.b24.refresh_count(), 1);
    // The stored token expires in 30 s (the portal would still accept it for an hour, so a
    // refresh here can only come from the stored expiry).
    let mut saved = store.load_token("t1", "bitrix24").await.unwrap().unwrap();
    // The pair keeps the portal's REST address the token answer named.
    assert!(
        saved.extra["client_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/b24/rest/")
    );
    saved.expires_at = Some(Utc::now() + Duration::seconds(30));
    store.save_token("t1", "bitrix24", &saved).await.unwrap();

    let c = Bitrix24::new("t1", &cfg, store.clone()).await.unwrap();
    h.sim.reset_stats();
    let start = Cursor::default();
    let (a, b) = tokio::join!(c.ping(), c.fetch_page(EntityKind::Contact, &start));
    a.unwrap();
    assert_eq!(b.unwrap().records.len(), 60);
    assert_eq!(
        h.sim.b24.refresh_count(),
        2,
        "refreshed once, ahead of expiry"
    );
    // Nothing was refused and repeated: one request per call plus the refresh.
    assert_eq!(by_method(&h, "profile"), 1);
    assert_eq!(by_method(&h, "batch"), 1);
    assert_eq!(by_method(&h, "oauth.token"), 1);
    let now_saved = store.load_token("t1", "bitrix24").await.unwrap().unwrap();
    assert_eq!(
        now_saved.refresh_token.as_ref().unwrap().expose(),
        h.sim.b24.current_refresh_token()
    );
    assert!(now_saved.expires_at.unwrap() > Utc::now() + Duration::seconds(3000));
    // A fresh token is not refreshed again.
    c.ping().await.unwrap();
    assert_eq!(h.sim.b24.refresh_count(), 2);
}

#[tokio::test]
async fn operating_budget_pauses_the_method_instead_of_being_refused() {
    let mut o = opts();
    o.enforce_limits = true;
    let h = common::serve_world(o, common::contacts_world(60)).await;
    let c = client(&h).await;
    // 470 s of the 480 s budget, spent 597 s ago: they leave the 10-minute window in 3 s.
    h.sim
        .b24
        .charge_operating_ago("crm.contact.list", 470.0, 597.0);
    let first = c
        .fetch_page(EntityKind::Contact, &Cursor::default())
        .await
        .unwrap();
    assert_eq!(first.records.len(), 60);
    // Now over the budget: the portal would refuse the method until the old time drops out.
    h.sim.b24.charge_operating("crm.contact.list", 15.0);
    h.sim.reset_stats();
    let started = std::time::Instant::now();
    let again = c
        .fetch_page(EntityKind::Contact, &Cursor::default())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(again.records.len(), 60);
    // The client saw `time.operating` near the budget and paused the method until
    // `operating_reset_at`: one request, answered, no OPERATION_TIME_LIMIT refusal.
    let stats = h.sim.stats()[&System::Bitrix24].clone();
    assert_eq!(stats.requests, 1, "{stats:?}");
    assert!(
        elapsed >= std::time::Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
}
