//! What only the amoCRM connector does, against the simulator over real HTTP: its mapping, the
//! account's rate limit and lockout, a revoked integration, the unsorted lifecycle, page-number
//! passes over records that change between pages, reads with and without the filtering add-on
//! and a refused search. What both CRMs owe is in `crm_contract`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dozor::crm::amocrm::AmoCrm;
use dozor::crm::{CallRecord, Crm, Cursor};
use dozor::domain::{Direction, EntityKind, EntityRef, Record, Semantics};
use dozor::http::ErrorKind;
use dozor::store::Store;
use dozor_sim::world::{ActivityType, LeadStatus, Owner, StageKind, World};
use dozor_sim::{SimHandle, SimOptions, System};
use serde_json::json;

const TOKEN_METHOD: &str = "POST /oauth2/access_token";

fn opts() -> SimOptions {
    common::sim_opts(3)
}

async fn start() -> SimHandle {
    common::start_sim(opts()).await
}

async fn start_world(w: World) -> SimHandle {
    common::serve_world(opts(), w).await
}

async fn store(dir: &tempfile::TempDir) -> Arc<Store> {
    let path = dir.path().join("dozor.db");
    Arc::new(
        Store::open(&format!("sqlite://{}", path.display()), 4)
            .await
            .unwrap(),
    )
}

/// The connector with the simulator's long-lived token, its tokens in a store in `dir`.
async fn client(h: &SimHandle, dir: &tempfile::TempDir) -> AmoCrm {
    AmoCrm::new("t1", &common::amo_sim(h), store(dir).await)
        .await
        .unwrap()
}

fn token_calls(h: &SimHandle) -> u64 {
    h.sim
        .stats()
        .get(&System::Amocrm)
        .and_then(|s| s.by_method.get(TOKEN_METHOD).copied())
        .unwrap_or(0)
}

#[tokio::test]
async fn full_fetch_matches_the_world() {
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&h, &dir).await;
    h.sim.reset_stats();
    assert_eq!(c.ping().await.unwrap(), "Dozor Sim (dozorsim)");
    assert!(c.account().starts_with("127.0.0.1:"));
    let users = c.users().await.unwrap();
    let pipelines = c.pipelines().await.unwrap();
    let mut counts = std::collections::BTreeMap::new();
    let mut all = Vec::new();
    for kind in EntityKind::ALL {
        let (records, _, cursor) = common::crm::full_pass(&c, kind, Cursor::default()).await;
        assert!(records.iter().all(|r| r.entity_kind() == kind));
        assert!(cursor.position.is_none());
        counts.insert(kind, records.len());
        all.extend(records);
    }
    let requests = h.sim.stats()[&System::Amocrm].requests;
    println!("full fetch of a scale-1 world: {requests} HTTP requests, counts {counts:?}");

    let w = h.sim.world();
    assert_eq!(users.len(), w.users.len());
    assert_eq!(pipelines.len(), w.pipelines.len() + 1);
    let main = pipelines.iter().find(|p| p.is_default).unwrap();
    assert!(
        main.stages
            .iter()
            .any(|s| s.id == "142" && s.semantics == Semantics::Won)
    );
    assert!(
        main.stages
            .iter()
            .any(|s| s.id == "143" && s.semantics == Semantics::Lost)
    );
    assert_eq!(counts[&EntityKind::Deal], w.deals.len());
    assert_eq!(counts[&EntityKind::Contact], w.contacts.len());
    assert_eq!(counts[&EntityKind::Company], w.companies.len());
    assert_eq!(counts[&EntityKind::Task], w.tasks.len());
    let calls = w
        .activities
        .values()
        .filter(|a| a.kind == ActivityType::Call && a.owner.0 != Owner::Lead)
        .count();
    assert_eq!(counts[&EntityKind::Activity], calls);
    // The unsorted list holds the items awaiting a decision only.
    let unsorted = w
        .leads
        .values()
        .filter(|l| matches!(l.status, LeadStatus::New | LeadStatus::InProcess))
        .count();
    assert_eq!(counts[&EntityKind::Lead], unsorted);

    // Spot checks of the mapping against the world.
    let won_world = w
        .deals
        .values()
        .filter(|d| w.stage(d.stage_id).unwrap().1.kind == StageKind::Won)
        .count();
    let mut won = 0;
    for r in &all {
        match r {
            Record::Deal(d) => {
                let sd = &w.deals[&d.id.parse::<u64>().unwrap()];
                assert_eq!(d.title, sd.title);
                assert_eq!(d.contact_id, sd.contact_id.map(|x| x.to_string()));
                assert_eq!(d.closed_at.is_some(), sd.closed_at.is_some());
                if d.semantics == Semantics::Won {
                    won += 1;
                    assert_eq!(d.stage_id, "142");
                }
            }
            Record::Contact(ct) => {
                let sc = &w.contacts[&ct.id.parse::<u64>().unwrap()];
                assert_eq!(ct.phones, sc.phones);
                assert_eq!(ct.emails, sc.emails);
                assert_eq!(ct.company_id, sc.company_id.map(|x| x.to_string()));
            }
            Record::Task(t) => {
                let st = &w.tasks[&t.id.parse::<u64>().unwrap()];
                assert_eq!(t.completed, st.completed);
                if let Some((Owner::Deal, id)) = st.binding {
                    assert_eq!(
                        t.entity,
                        Some(EntityRef::new(EntityKind::Deal, id.to_string()))
                    );
                }
            }
            Record::Activity(a) => {
                let sa = &w.activities[&a.id.parse::<u64>().unwrap()];
                assert_eq!(a.external_id, sa.external_id);
                assert_eq!(a.duration_s, Some(sa.duration_s));
                assert_eq!(a.phone, sa.phone);
            }
            _ => {}
        }
    }
    assert_eq!(won, won_world);
    assert!(requests >= 10, "{requests}");
}

#[tokio::test]
async fn revoked_refresh_stops_the_client() {
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let initial = h.sim.creds.amo_refresh_token.clone();
    // Someone else used the refresh token first.
    let cr = &h.sim.creds;
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/access_token", h.amo_url()))
        .json(
            &json!({"client_id": cr.amo_client_id, "client_secret": cr.amo_client_secret,
                      "grant_type": "refresh_token", "refresh_token": initial,
                      "redirect_uri": cr.amo_redirect_uri}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c = AmoCrm::new("t1", &common::amo_oauth(&h, &initial), store(&dir).await)
        .await
        .unwrap();
    let e = c.ping().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    let text = e.to_string();
    assert!(text.contains("re-authorisation required"), "{text}");
    assert!(text.contains("revoked"), "{text}");
    assert!(!text.contains(&initial), "{text}");
    assert!(!text.contains(&cr.amo_client_secret), "{text}");
    assert!(c.needs_reauth());
    assert_eq!(token_calls(&h), 2);
    for _ in 0..3 {
        let e = c
            .fetch_page(EntityKind::Deal, &Cursor::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth);
        assert!(e.message.contains("re-authorisation required"));
    }
    assert_eq!(token_calls(&h), 2, "no further refresh attempts");
}

#[tokio::test]
async fn rate_limit_is_respected_with_limits_on() {
    let mut o = opts();
    o.enforce_limits = true;
    let h = common::serve_world(o, common::deals_world(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(client(&h, &dir).await);
    // The unsorted statuses come with the pipelines (a directory read), once.
    c.pipelines().await.unwrap();
    // 16 calls from 4 tasks: the client's own limiter keeps under 7 rps.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..4 {
                c.fetch_page(EntityKind::Deal, &Cursor::default())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = &h.sim.stats()[&System::Amocrm];
    assert_eq!(stats.requests - stats.throttled, 17);
    assert!(stats.throttled <= 2, "throttled {}", stats.throttled);
}

#[tokio::test]
async fn lockout_403_is_waited_out() {
    let mut o = opts();
    o.enforce_limits = true;
    let h = common::serve_world(o, common::deals_world(3)).await;
    h.sim.amo.set_lockout(Duration::from_millis(1500));
    // Another program on the same account hammers until the account is locked.
    let http = reqwest::Client::new();
    let url = format!("{}/api/v4/account", h.amo_url());
    let mut locked = false;
    for _ in 0..60 {
        let r = http
            .get(&url)
            .bearer_auth(&h.sim.creds.amo_long_lived_token)
            .send()
            .await
            .unwrap();
        if r.status() == 403 {
            locked = true;
            break;
        }
    }
    assert!(locked);
    let dir = tempfile::tempdir().unwrap();
    let c = client(&h, &dir).await;
    let page = c
        .fetch_page(EntityKind::Deal, &Cursor::default())
        .await
        .unwrap();
    assert_eq!(page.records.len(), 3);
}

#[tokio::test]
async fn changes_during_a_pass_leave_no_gaps() {
    let h = start_world(common::deals_world(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&h, &dir).await;
    let p1 = c
        .fetch_page(EntityKind::Deal, &Cursor::default())
        .await
        .unwrap();
    assert_eq!(p1.records.len(), 250);
    // Records already read change while the pass is between pages.
    {
        let mut w = h.sim.world();
        for r in p1.records.iter().take(5) {
            let d = w.deals.get_mut(&r.id().parse::<u64>().unwrap()).unwrap();
            d.updated_at = Utc::now();
        }
    }
    let p2 = c.fetch_page(EntityKind::Deal, &p1.next).await.unwrap();
    assert!(p2.done);
    let seen: std::collections::BTreeSet<String> = p1
        .records
        .iter()
        .chain(&p2.records)
        .map(|r| r.id().to_string())
        .collect();
    assert_eq!(seen.len(), 300, "every deal read once at least");
    // The changes made behind the pass are picked up by the next one.
    let (next_pass, _, _) = common::crm::full_pass(&c, EntityKind::Deal, p2.next.clone()).await;
    let changed: Vec<&str> = p1.records.iter().take(5).map(|r| r.id()).collect();
    for id in &changed {
        assert!(next_pass.iter().any(|r| r.id() == *id), "{id} missed");
    }
    assert!(next_pass.len() <= 6, "{}", next_pass.len());
}

/// Per the API "Неразобранное" page (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api)
/// unsorted is a system status of the pipeline: every item holds its lead from creation, in the
/// pipeline's unsorted status (listed by `GET /api/v4/leads` like any lead), until it is
/// accepted («Принять» moves the lead to the next status) or declined («Отклонить» deletes it).
/// The unsorted list holds only items awaiting a decision, so the client reads their outcome
/// from the leads they hold.
#[tokio::test]
async fn unsorted_items_are_pending_until_accepted() {
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&h, &dir).await;
    let leads_of = |records: Vec<Record>| -> Vec<dozor::domain::Lead> {
        records
            .into_iter()
            .filter_map(|r| match r {
                Record::Lead(l) => Some(l),
                _ => None,
            })
            .collect()
    };
    let (records, _, _) = common::crm::full_pass(&c, EntityKind::Lead, Cursor::default()).await;
    let open = leads_of(records);
    let pending: Vec<String> = {
        let w = h.sim.world();
        w.leads
            .values()
            .filter(|l| matches!(l.status, LeadStatus::New | LeadStatus::InProcess))
            .map(|l| format!("unsorted-{}", l.id))
            .collect()
    };
    assert!(pending.len() >= 3, "the world has pending items");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(open.iter().map(|l| l.id.clone()).collect()),
        sorted(pending.clone())
    );
    assert!(open.iter().all(|l| l.semantics == Semantics::Open));
    assert!(
        open.iter().all(|l| l.deal_id.is_some()),
        "each holds its lead"
    );
    // Nothing decided yet.
    assert!(c.lead_outcomes(&open).await.unwrap().is_empty());

    // The leads of pending items are listed with the other leads, in the unsorted status, and
    // are not mirrored as deals.
    let (deals, _, _) = common::crm::full_pass(&c, EntityKind::Deal, Cursor::default()).await;
    let held: Vec<String> = open.iter().filter_map(|l| l.deal_id.clone()).collect();
    assert!(
        deals.iter().all(|d| !held.contains(&d.id().to_string())),
        "pending leads are not deals"
    );
    let http = reqwest::Client::new();
    let token = h.sim.creds.amo_long_lived_token.clone();
    let base = h.amo_url();
    let listed: serde_json::Value = http
        .get(format!(
            "{base}/api/v4/leads?limit=250&filter[id][]={}",
            held[0]
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["_embedded"]["leads"][0]["id"].to_string(),
        held[0],
        "{listed}"
    );

    // Accept the first, decline the second: both leave the unsorted list.
    let r = http
        .post(format!(
            "{base}/api/v4/leads/unsorted/{}/accept",
            open[0].id
        ))
        .bearer_auth(&token)
        .json(&json!({"user_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let accepted: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        accepted["_embedded"]["leads"][0]["id"].to_string(),
        held[0],
        "the same lead moves on"
    );
    let r = http
        .delete(format!(
            "{base}/api/v4/leads/unsorted/{}/decline",
            open[1].id
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (records, _, _) = common::crm::full_pass(&c, EntityKind::Lead, Cursor::default()).await;
    let still: Vec<String> = leads_of(records).into_iter().map(|l| l.id).collect();
    let left: Vec<String> = pending
        .iter()
        .filter(|u| **u != open[0].id && **u != open[1].id)
        .cloned()
        .collect();
    assert_eq!(sorted(still), sorted(left));

    // Their outcome comes from the leads they held.
    let decided = c.lead_outcomes(&open).await.unwrap();
    assert_eq!(decided.len(), 2, "{decided:?}");
    let won = decided.iter().find(|l| l.id == open[0].id).unwrap();
    assert_eq!(won.semantics, Semantics::Won);
    assert_eq!(won.deal_id.as_deref(), Some(held[0].as_str()));
    assert!(won.closed_at.is_some());
    let lost = decided.iter().find(|l| l.id == open[1].id).unwrap();
    assert_eq!(lost.semantics, Semantics::Lost);
    assert!(lost.closed_at.is_some());

    // The accepted lead now reads as a deal.
    let (deals, _, _) = common::crm::full_pass(&c, EntityKind::Deal, Cursor::default()).await;
    assert!(deals.iter().any(|d| d.id() == held[0]));
}

/// The unsorted lifecycle through the sync: a pending item is an open lead (not a deal); once
/// accepted in amoCRM the next sync marks the lead accepted and mirrors its deal, once declined
/// the lead is lost; cycles with nothing changed stay at one request.
#[tokio::test]
async fn the_sync_follows_unsorted_items_to_their_outcome() {
    use dozor::sync::{SyncOptions, sync_crm};
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let st = store(&dir).await;
    let c = AmoCrm::new("t1", &common::amo_sim(&h), st.clone())
        .await
        .unwrap();
    let opts = SyncOptions {
        overlap: Duration::from_secs(0),
        ..SyncOptions::default()
    };
    sync_crm(&st, "t1", &c, opts).await.unwrap();
    let lead = |id: &str| {
        let st = st.clone();
        let id = id.to_string();
        async move {
            st.leads("t1")
                .await
                .unwrap()
                .into_iter()
                .find(|l| l.id == id)
                .unwrap()
        }
    };
    let open = st.open_leads("t1").await.unwrap();
    assert!(open.len() >= 2);
    let (a, d) = (open[0].clone(), open[1].clone());
    let a_deal = a.deal_id.clone().unwrap();
    let deals = st.deals("t1").await.unwrap();
    assert!(
        deals
            .iter()
            .all(|x| Some(&x.id) != a.deal_id.as_ref() && Some(&x.id) != d.deal_id.as_ref()),
        "pending leads are not mirrored as deals"
    );

    // Idle: one request.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sync_crm(&st, "t1", &c, opts).await.unwrap();
    h.sim.reset_stats();
    sync_crm(&st, "t1", &c, opts).await.unwrap();
    assert_eq!(
        h.sim.stats()[&System::Amocrm].requests,
        1,
        "{:?}",
        h.sim.stats()
    );

    // Accepted in amoCRM.
    let http = reqwest::Client::new();
    let token = h.sim.creds.amo_long_lived_token.clone();
    let base = h.amo_url();
    let r = http
        .post(format!("{base}/api/v4/leads/unsorted/{}/accept", a.id))
        .bearer_auth(&token)
        .json(&json!({"user_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = sync_crm(&st, "t1", &c, opts).await.unwrap();
    let l = lead(&a.id).await;
    assert_eq!(
        (l.status_id.as_str(), l.semantics),
        ("accepted", Semantics::Won),
        "{:?}",
        report.items
    );
    assert_eq!(l.deal_id.as_deref(), Some(a_deal.as_str()));
    let deal = st
        .deals("t1")
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.id == a_deal)
        .expect("the accepted lead is mirrored as a deal");
    assert_eq!(deal.semantics, Semantics::Open);
    assert_eq!(
        lead(&d.id).await.semantics,
        Semantics::Open,
        "the other waits"
    );

    // Declined in amoCRM.
    let r = http
        .delete(format!("{base}/api/v4/leads/unsorted/{}/decline", d.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sync_crm(&st, "t1", &c, opts).await.unwrap();
    let l = lead(&d.id).await;
    assert_eq!(
        (l.status_id.as_str(), l.semantics),
        ("declined", Semantics::Lost)
    );
    // Written once: the accepted lead keeps its outcome.
    assert_eq!(lead(&a.id).await.semantics, Semantics::Won);

    // And idle again: one request.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sync_crm(&st, "t1", &c, opts).await.unwrap();
    h.sim.reset_stats();
    sync_crm(&st, "t1", &c, opts).await.unwrap();
    assert_eq!(
        h.sim.stats()[&System::Amocrm].requests,
        1,
        "{:?}",
        h.sim.stats()
    );
}

/// Incremental reads on both kinds of account. The filters page
/// (https://www.amocrm.ru/developers/content/crm_platform/filters-api) makes `filter[updated_at]`
/// an alpha add-on; `GET /api/v4/account?with=is_api_filter_enabled` (account parameters page,
/// https://www.amocrm.com/developers/content/api_v4/account-parameters/) says which kind this
/// is. Without it changes are read newest first and the pass ends at the cursor: the cost stays
/// the changes, not the whole list. The flag is read once, and again after a directory refresh.
#[tokio::test]
async fn incremental_reads_with_and_without_the_filter_add_on() {
    for add_on in [true, false] {
        let h = start_world(common::deals_world(600)).await;
        h.sim.amo.set_api_filter(add_on);
        let dir = tempfile::tempdir().unwrap();
        let c = client(&h, &dir).await;
        let (all, pages, cursor) =
            common::crm::full_pass(&c, EntityKind::Deal, Cursor::default()).await;
        assert_eq!((all.len(), pages), (600, 3), "add-on {add_on}");
        let since = cursor.since.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let change = |ids: Vec<u64>| {
            let mut w = h.sim.world();
            for id in &ids {
                w.deals.get_mut(id).unwrap().updated_at = Utc::now();
            }
            ids
        };
        let ids: Vec<u64> = h.sim.world().deals.keys().copied().collect();
        let changed = change(vec![ids[10], ids[400]]);
        h.sim.reset_stats();
        let (delta, pages, next) = common::crm::full_pass(&c, EntityKind::Deal, cursor).await;
        assert_eq!(pages, 1, "add-on {add_on}");
        for id in &changed {
            assert!(
                delta.iter().any(|r| r.id() == id.to_string()),
                "{id} missed"
            );
        }
        // The changes, plus the record exactly at the watermark (`from` is inclusive).
        assert!(
            delta
                .iter()
                .all(|r| changed.iter().any(|id| r.id() == id.to_string())
                    || r.updated_at() == since),
            "add-on {add_on}: {} records",
            delta.len()
        );
        let stats = h.sim.stats()[&System::Amocrm].clone();
        assert_eq!(stats.by_method["GET /api/v4/account"], 1, "{stats:?}");
        assert_eq!(stats.by_method["GET /api/v4/leads"], 1, "{stats:?}");

        // The flag is cached: the next read costs its page alone. Many changes newest first
        // span pages and still stop at the cursor.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let many = change(ids[100..400].to_vec());
        h.sim.reset_stats();
        let (delta, pages, next) = common::crm::full_pass(&c, EntityKind::Deal, next).await;
        let ids: std::collections::BTreeSet<String> =
            delta.iter().map(|r| r.id().to_string()).collect();
        for id in &many {
            assert!(ids.contains(&id.to_string()), "{id} missed");
        }
        assert!(ids.len() <= 302, "add-on {add_on}: {} read", ids.len());
        assert_eq!(pages, 2, "add-on {add_on}");
        let stats = h.sim.stats()[&System::Amocrm].clone();
        assert!(
            !stats.by_method.contains_key("GET /api/v4/account"),
            "{stats:?}"
        );
        assert_eq!(stats.by_method["GET /api/v4/leads"], 2, "{stats:?}");

        // A directory refresh reads the flag again before the next incremental read.
        c.pipelines().await.unwrap();
        h.sim.amo.set_api_filter(!add_on);
        h.sim.reset_stats();
        let (delta, _, _) = common::crm::full_pass(&c, EntityKind::Deal, next).await;
        assert!(delta.len() <= 300, "{}", delta.len());
        let stats = h.sim.stats()[&System::Amocrm].clone();
        assert_eq!(stats.by_method["GET /api/v4/account"], 1, "{stats:?}");
    }
}

/// `query` "will be deprecated soon" (filters page,
/// https://www.amocrm.ru/developers/content/crm_platform/filters-api). Once the account refuses
/// it (a 400 with `validation-errors` naming `query`, the error shape of the errors page
/// https://www.amocrm.com/developers/content/api/errors), a number lookup finds
/// nothing instead of failing (the mirror's phone index answers first) and logging a call still
/// works: amoCRM finds the number's owners itself.
#[tokio::test]
async fn a_refused_query_search_fails_no_lookup_and_no_call() {
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&h, &dir).await;
    let (contact, phone) = {
        let w = h.sim.world();
        let ct = w.contacts.values().next().unwrap();
        (ct.id, ct.phones[0].clone())
    };
    let e164 = dozor::domain::phone::normalize(&phone).unwrap();
    h.sim.amo.set_query_search(false);
    let r = reqwest::Client::new()
        .get(format!("{}/api/v4/contacts?query=123", h.amo_url()))
        .bearer_auth(&h.sim.creds.amo_long_lived_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["validation-errors"][0]["errors"][0]["path"], "query");

    assert_eq!(c.find_by_phone(&e164).await.unwrap(), vec![]);
    let call = CallRecord {
        external_id: "cm-refused-query-1".into(),
        direction: Direction::In,
        phone: e164.clone(),
        started_at: Utc::now() - chrono::Duration::minutes(5),
        duration_s: 42,
        answered: true,
        responsible_id: None,
        recording_url: None,
        entity: Some(EntityRef::new(EntityKind::Contact, contact.to_string())),
    };
    let id = c.register_call(&call).await.unwrap();
    assert!(!id.is_empty());
    h.sim.amo.set_query_search(true);
    let found = c.find_by_phone(&e164).await.unwrap();
    assert!(found.contains(&EntityRef::new(EntityKind::Contact, contact.to_string())));
}
