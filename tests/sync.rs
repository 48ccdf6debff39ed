//! Incremental sync over HTTP against the simulator: an idle cycle costs one request per
//! source, changes and deletions reach the mirror, and a sync cut off mid-way resumes where it
//! stopped without losing or doubling anything.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::tenant_config;
use dozor::config;
use dozor::crm::Crm;
use dozor::domain::{CrmKind, EntityKind, TelephonyKind};
use dozor::store::Store;
use dozor::sync::{SyncOptions, sync_crm};
use dozor::tenant;
use dozor_sim::world::{Deletion, Owner};
use dozor_sim::{Faults, SimHandle, SimOptions, System};

fn sim_opts() -> SimOptions {
    common::sim_opts(5)
}

async fn setup(crm: CrmKind, dir: &std::path::Path) -> (SimHandle, Store, Arc<dyn Crm>) {
    let h = common::start_sim(sim_opts()).await;
    connect(h, crm, dir).await
}

async fn connect(
    h: SimHandle,
    crm: CrmKind,
    dir: &std::path::Path,
) -> (SimHandle, Store, Arc<dyn Crm>) {
    let db = common::sqlite_url(dir);
    let mut text = common::rules_on(tenant_config(&h, crm, TelephonyKind::Comagic, &db, "ru"));
    if crm == CrmKind::Amocrm {
        let c = &h.sim.creds;
        text = text.replace(
            &format!("refresh_token = \"{}\"", c.amo_refresh_token),
            &format!(
                "refresh_token = \"{}\"\nrate_per_sec = 7",
                c.amo_refresh_token
            ),
        );
    }
    let cfg = config::parse(&text, None, None).unwrap().config;
    let store = Store::open(&db, 4).await.unwrap();
    let t = tenant::connect(&cfg.tenants[0], &store).await.unwrap();
    (h, store, t.crm.clone())
}

fn requests(h: &SimHandle, system: System) -> u64 {
    h.sim.stats().get(&system).map(|s| s.requests).unwrap_or(0)
}

async fn idle_cycle_costs_one_request(crm: CrmKind, system: System) {
    idle_cycle_on(crm, system, true).await;
}

/// `filter_add_on`: whether an amoCRM account has the API filtering add-on (without it
/// `filter[updated_at]` is not applied, see the filters page
/// https://www.amocrm.ru/developers/content/crm_platform/filters-api).
async fn idle_cycle_on(crm: CrmKind, system: System, filter_add_on: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (h, store, c) = setup(crm, dir.path()).await;
    h.sim.amo.set_api_filter(filter_add_on);
    let opts = SyncOptions::default();
    let first = sync_crm(&store, "demo", c.as_ref(), opts).await.unwrap();
    assert!(first.total() > 500, "{:?}", first.items);
    // Let the overlap window pass beyond every record, then sync twice with nothing changed.
    let opts = SyncOptions {
        overlap: Duration::from_secs(0),
        ..opts
    };
    sync_crm(&store, "demo", c.as_ref(), opts).await.unwrap();
    h.sim.reset_stats();
    let idle = sync_crm(&store, "demo", c.as_ref(), opts).await.unwrap();
    assert_eq!(
        requests(&h, system),
        1,
        "idle cycle requests: {:?}",
        h.sim.stats()
    );
    // At most the record at the watermark itself is read again (`>=` on a one-second clock).
    assert!(idle.items.values().all(|n| *n <= 1), "{:?}", idle.items);

    // One changed deal: it (and only what changed) comes back.
    let deal_id = {
        let mut w = h.sim.world();
        let d = w.deals.values_mut().next().unwrap();
        d.title = "Изменённая сделка".into();
        d.updated_at = Utc::now();
        d.id
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let changed = sync_crm(&store, "demo", c.as_ref(), opts).await.unwrap();
    assert!(
        changed.items.get("deal").copied().unwrap_or(0) >= 1,
        "{:?}",
        changed.items
    );
    let deals = store.deals("demo").await.unwrap();
    let d = deals.iter().find(|d| d.id == deal_id.to_string()).unwrap();
    assert_eq!(d.title, "Изменённая сделка");
    if crm == CrmKind::Amocrm {
        // The change alone is read (and the record at the watermark), not the whole list.
        assert!(changed.items["deal"] <= 2, "{:?}", changed.items);
        // One page of deals, and one question about the leads of the pending unsorted items
        // (a changed deal may be one of them accepted).
        let stats = h.sim.stats()[&system].clone();
        assert!(stats.by_method["GET /api/v4/leads"] <= 2, "{stats:?}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_idle_cycle_is_one_batch() {
    idle_cycle_costs_one_request(CrmKind::Bitrix24, System::Bitrix24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_idle_cycle_is_one_events_query() {
    idle_cycle_costs_one_request(CrmKind::Amocrm, System::Amocrm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_idle_cycle_is_one_events_query_without_the_filter_add_on() {
    idle_cycle_on(CrmKind::Amocrm, System::Amocrm, false).await;
}

async fn deletions_reach_the_mirror(crm: CrmKind) {
    let dir = tempfile::tempdir().unwrap();
    let (h, store, c) = setup(crm, dir.path()).await;
    let opts = SyncOptions {
        deletion_sweep: Duration::from_secs(0),
        ..SyncOptions::default()
    };
    sync_crm(&store, "demo", c.as_ref(), opts).await.unwrap();
    let before = store.deals("demo").await.unwrap().len();
    let gone = {
        let mut w = h.sim.world();
        let id = *w.deals.keys().nth(3).unwrap();
        w.deals.remove(&id);
        w.deletions.push(Deletion {
            owner: Owner::Deal,
            id,
            at: Utc::now(),
        });
        id
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sync_crm(&store, "demo", c.as_ref(), opts).await.unwrap();
    let deals = store.deals("demo").await.unwrap();
    assert_eq!(deals.len(), before - 1, "the deleted deal left the mirror");
    assert!(deals.iter().all(|d| d.id != gone.to_string()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_deletions_found_by_the_sweep() {
    deletions_reach_the_mirror(CrmKind::Bitrix24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_deletions_arrive_with_events() {
    deletions_reach_the_mirror(CrmKind::Amocrm).await;
}

async fn cut_off_sync_resumes(crm: CrmKind, system: System) {
    let dir = tempfile::tempdir().unwrap();
    let (h, store, c) = setup(crm, dir.path()).await;
    // Let a few requests through, then fail every request until the client gives up.
    h.sim.set_faults(
        system,
        Faults {
            http_5xx: 0,
            ..Faults::default()
        },
    );
    let mut failed = false;
    for allowed in [2u64, 4, 6] {
        h.sim.reset_stats();
        let stop = tokio::spawn({
            let sim = h.sim.clone();
            async move {
                loop {
                    let n = sim.stats().get(&system).map(|s| s.requests).unwrap_or(0);
                    if n >= allowed {
                        sim.set_faults(
                            system,
                            Faults {
                                http_5xx: 10_000,
                                ..Faults::default()
                            },
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let r = sync_crm(&store, "demo", c.as_ref(), SyncOptions::default()).await;
        stop.abort();
        h.sim.set_faults(system, Faults::default());
        failed |= r.is_err();
    }
    assert!(failed, "the injected outage interrupted at least one sync");
    sync_crm(&store, "demo", c.as_ref(), SyncOptions::default())
        .await
        .unwrap();
    let counts = store.counts("demo").await.unwrap();
    let world = {
        let w = h.sim.world();
        (
            w.deals.len() as i64,
            w.contacts.len() as i64,
            w.companies.len() as i64,
        )
    };
    assert_eq!(
        (counts["deals"], counts["contacts"], counts["companies"]),
        world
    );
    let runs = store.last_sync_runs("demo").await.unwrap();
    assert!(runs.iter().any(|r| r.ok), "{runs:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_sync_resumes_after_an_outage() {
    cut_off_sync_resumes(CrmKind::Bitrix24, System::Bitrix24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_sync_resumes_after_an_outage() {
    cut_off_sync_resumes(CrmKind::Amocrm, System::Amocrm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_counts_match_the_world_for_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (h, store, c) = setup(CrmKind::Bitrix24, dir.path()).await;
    let r = sync_crm(&store, "demo", c.as_ref(), SyncOptions::default())
        .await
        .unwrap();
    {
        let w = h.sim.world();
        assert_eq!(r.items["deal"], w.deals.len());
        assert_eq!(r.items["contact"], w.contacts.len());
        assert_eq!(r.items["company"], w.companies.len());
        assert_eq!(r.items["lead"], w.leads.len());
        assert_eq!(r.items["users"], w.users.len());
    }
    for kind in [EntityKind::Activity, EntityKind::Task] {
        assert!(r.items[kind.as_str()] > 0, "{kind:?}");
    }
    h.stop().await;
}

/// Deletes deals between two list requests of the first sync: every deal that still exists
/// reaches the mirror and the deleted ones end up marked deleted.
/// The deletions run once `after` requests `method` have been served.
async fn deletions_between_pages_of_the_first_sync(
    crm: CrmKind,
    method: &str,
    after: u64,
    syncs: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    // The generated firm padded to 600 deals: several amoCRM pages (250) and more deals than
    // the first Bitrix24 batch reads (7 chained pages of 50 beside the other kinds).
    let mut world = dozor_sim::generate::generate(5, 1, Utc::now());
    let template = world.deals.values().next().unwrap().clone();
    while world.deals.len() < 600 {
        let id = world.next_id();
        let mut d = template.clone();
        d.id = id;
        d.title = format!("Сделка {id}");
        world.deals.insert(id, d);
    }
    let h = common::serve_world(sim_opts(), world).await;
    // The first deals by id are on the first page either CRM returns.
    let gone: Vec<u64> = h.sim.world().deals.keys().take(4).copied().collect();
    h.sim.after_requests(
        if crm == CrmKind::Amocrm {
            System::Amocrm
        } else {
            System::Bitrix24
        },
        method,
        after,
        {
            let gone = gone.clone();
            move |w| {
                for id in gone {
                    assert!(w.delete(Owner::Deal, id, Utc::now()));
                }
            }
        },
    );
    let (h, store, c) = connect(h, crm, dir.path()).await;
    let opts = SyncOptions {
        deletion_sweep: Duration::from_secs(0),
        ..SyncOptions::default()
    };
    let gone: Vec<String> = gone.iter().map(u64::to_string).collect();
    let mut mirrored = std::collections::BTreeSet::new();
    for n in 0..syncs {
        sync_crm(&store, "demo", c.as_ref(), opts).await.unwrap();
        mirrored = store
            .deals("demo")
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        if n + 1 < syncs {
            // Read before they were deleted: the deletion fell between two pages.
            assert!(gone.iter().all(|id| mirrored.contains(id)), "{gone:?}");
        }
    }
    let world: std::collections::BTreeSet<String> =
        h.sim.world().deals.keys().map(u64::to_string).collect();
    assert_eq!(world.len(), 596);
    let missing: Vec<&String> = world.difference(&mirrored).collect();
    assert!(missing.is_empty(), "deals never mirrored: {missing:?}");
    let stale: Vec<&String> = mirrored.difference(&world).collect();
    assert!(
        stale.is_empty(),
        "deleted deals still live in the mirror: {stale:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_deletions_between_pages_of_the_first_sync() {
    // The pass notices the deletions itself (and re-reads from page 1): one sync suffices.
    deletions_between_pages_of_the_first_sync(CrmKind::Amocrm, "GET /api/v4/leads", 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_deletions_between_pages_of_the_first_sync() {
    // Two batches read the pipelines, the third is the probe with the first deal pages.
    // `>ID` paging skips nothing; the deletions themselves are found by the next sweep.
    deletions_between_pages_of_the_first_sync(CrmKind::Bitrix24, "batch", 3, 2).await;
}
