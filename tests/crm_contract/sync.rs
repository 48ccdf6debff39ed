//! The sync over a connected tenant: the first sync mirrors the world, an idle cycle costs one
//! request, changes and deletions reach the mirror, and a sync cut off mid-way resumes where it
//! stopped without losing or doubling anything.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dozor::crm::Crm;
use dozor::domain::EntityKind;
use dozor::store::Store;
use dozor::sync::{SyncOptions, sync_crm};
use dozor_sim::world::{Deletion, LeadStatus, Owner, World};
use dozor_sim::{Faults, SimHandle};

use crate::common;
use crate::common::crm::CrmCase;

for_each_crm!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    first_sync_counts_match_the_world,
    idle_cycle_costs_one_request,
    deletions_reach_the_mirror,
    cut_off_sync_resumes,
    deletions_between_pages_of_the_first_sync,
);

/// Deletions made between two list requests of the first sync: after which request of which
/// method, and how many syncs it takes until the mirror has them.
struct FirstSyncShift {
    method: &'static str,
    after: u64,
    syncs: usize,
}

impl CrmCase {
    /// How many of the world's leads the CRM lists: amoCRM lists the unsorted items still
    /// awaiting a decision.
    fn listed_leads(self, w: &World) -> usize {
        match self {
            CrmCase::Bitrix24 => w.leads.len(),
            CrmCase::Amocrm => w
                .leads
                .values()
                .filter(|l| matches!(l.status, LeadStatus::New | LeadStatus::InProcess))
                .count(),
        }
    }

    /// What a cycle after one deal changed may ask of the list it changed in: on amoCRM one
    /// page of deals and one question about the leads of the pending unsorted items (a
    /// changed deal may be one of them accepted).
    fn changed_cycle(self) -> (&'static str, u64) {
        match self {
            CrmCase::Bitrix24 => ("batch", 1),
            CrmCase::Amocrm => ("GET /api/v4/leads", 2),
        }
    }

    fn first_sync_shift(self) -> FirstSyncShift {
        match self {
            // Two batches read the pipelines, the third is the probe with the first deal
            // pages. `>ID` paging skips nothing; the deletions themselves are found by the
            // next sweep.
            CrmCase::Bitrix24 => FirstSyncShift {
                method: "batch",
                after: 3,
                syncs: 2,
            },
            // The pass notices the deletions itself (and re-reads from page 1): one sync
            // suffices.
            CrmCase::Amocrm => FirstSyncShift {
                method: "GET /api/v4/leads",
                after: 1,
                syncs: 1,
            },
        }
    }
}

/// The company every sync scenario starts from, generated on the real clock.
fn company() -> dozor_sim::SimOptions {
    common::sim_opts(5)
}

async fn connect(crm: CrmCase, dir: &std::path::Path) -> (SimHandle, Store, Arc<dyn Crm>) {
    let h = common::start_sim(company()).await;
    let (store, c) = crm.tenant(&h, dir).await;
    (h, store, c)
}

fn requests(crm: CrmCase, h: &SimHandle) -> u64 {
    h.sim
        .stats()
        .get(&crm.system())
        .map(|s| s.requests)
        .unwrap_or(0)
}

async fn first_sync_counts_match_the_world(crm: CrmCase) {
    let dir = tempfile::tempdir().unwrap();
    let (h, store, c) = connect(crm, dir.path()).await;
    let r = sync_crm(&store, "demo", c.as_ref(), SyncOptions::default())
        .await
        .unwrap();
    {
        let w = h.sim.world();
        assert_eq!(r.items["deal"], w.deals.len());
        assert_eq!(r.items["contact"], w.contacts.len());
        assert_eq!(r.items["company"], w.companies.len());
        assert_eq!(r.items["lead"], crm.listed_leads(&w));
        assert_eq!(r.items["users"], w.users.len());
    }
    for kind in [EntityKind::Activity, EntityKind::Task] {
        assert!(r.items[kind.as_str()] > 0, "{kind:?}");
    }
    h.stop().await;
}

async fn idle_cycle_costs_one_request(crm: CrmCase) {
    idle_cycle_on(crm, true).await;
}

/// Without the API filtering add-on an amoCRM account does not apply `filter[updated_at]`
/// (filters page, https://www.amocrm.ru/developers/content/crm_platform/filters-api): the
/// idle cycle must not come to cost more for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_idle_cycle_without_the_filter_add_on() {
    idle_cycle_on(CrmCase::Amocrm, false).await;
}

/// `filter_add_on`: whether an amoCRM account has the API filtering add-on.
async fn idle_cycle_on(crm: CrmCase, filter_add_on: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (h, store, c) = connect(crm, dir.path()).await;
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
        requests(crm, &h),
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
    h.sim.reset_stats();
    let changed = sync_crm(&store, "demo", c.as_ref(), opts).await.unwrap();
    let deals = store.deals("demo").await.unwrap();
    let d = deals.iter().find(|d| d.id == deal_id.to_string()).unwrap();
    assert_eq!(d.title, "Изменённая сделка");
    // The change alone is read (and the record at the watermark), not the whole list.
    let read = changed.items.get("deal").copied().unwrap_or(0);
    assert!((1..=2).contains(&read), "{:?}", changed.items);
    let (method, most) = crm.changed_cycle();
    let stats = h.sim.stats()[&crm.system()].clone();
    assert!(stats.by_method[method] <= most, "{stats:?}");
    h.stop().await;
}

async fn deletions_reach_the_mirror(crm: CrmCase) {
    let dir = tempfile::tempdir().unwrap();
    let (h, store, c) = connect(crm, dir.path()).await;
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

async fn cut_off_sync_resumes(crm: CrmCase) {
    let dir = tempfile::tempdir().unwrap();
    let (h, store, c) = connect(crm, dir.path()).await;
    let system = crm.system();
    // Let a few requests through, then fail every request until the client gives up.
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

/// Deletes deals between two list requests of the first sync: every deal that still exists
/// reaches the mirror and the deleted ones end up marked deleted.
async fn deletions_between_pages_of_the_first_sync(crm: CrmCase) {
    let shift = crm.first_sync_shift();
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
    let h = common::serve_world(company(), world).await;
    // The first deals by id are on the first page either CRM returns.
    let gone: Vec<u64> = h.sim.world().deals.keys().take(4).copied().collect();
    h.sim
        .after_requests(crm.system(), shift.method, shift.after, {
            let gone = gone.clone();
            move |w| {
                for id in gone {
                    assert!(w.delete(Owner::Deal, id, Utc::now()));
                }
            }
        });
    let (store, c) = crm.tenant(&h, dir.path()).await;
    let opts = SyncOptions {
        deletion_sweep: Duration::from_secs(0),
        ..SyncOptions::default()
    };
    let gone: Vec<String> = gone.iter().map(u64::to_string).collect();
    let mut mirrored = BTreeSet::new();
    for n in 0..shift.syncs {
        sync_crm(&store, "demo", c.as_ref(), opts).await.unwrap();
        mirrored = store
            .deals("demo")
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        if n + 1 < shift.syncs {
            // Read before they were deleted: the deletion fell between two pages.
            assert!(gone.iter().all(|id| mirrored.contains(id)), "{gone:?}");
        }
    }
    let world: BTreeSet<String> = h.sim.world().deals.keys().map(u64::to_string).collect();
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
