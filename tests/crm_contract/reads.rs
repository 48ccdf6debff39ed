//! Reading a CRM: a pass over every page, an incremental read of what changed, a pass that
//! records are deleted under, the one-request change probe and a number's owners.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use dozor::crm::Cursor;
use dozor::domain::{EntityKind, EntityRef, Record};

use crate::common::crm::{CrmCase, after_pass, full_pass, newest, one_number_world};

for_each_crm!(
    incremental_reads_see_only_the_change,
    paging_edges,
    deletions_between_pages_skip_nothing,
    idle_change_probe_is_one_request,
    find_by_phone_in_any_shape,
);

/// How a pass over a number of records is read: the records, its pages and its requests.
type PassCost = (usize, usize, u64);

/// A pass over records deleted under it: which records go, after which request, what the
/// pass costs by method and in all, and what a later pass without deletions costs.
struct Shift {
    list_method: &'static str,
    after: u64,
    gone: std::ops::Range<usize>,
    by_method: &'static [(&'static str, u64)],
    requests: u64,
    clean: (usize, u64),
}

impl CrmCase {
    /// Whether a pass's last cursor carries its watermark in `since` (amoCRM) or leaves
    /// `since` as it was for the sync to move (Bitrix24).
    fn pass_moves_since(self) -> bool {
        self == CrmCase::Amocrm
    }

    /// Passes over bulk worlds at the edges of a page. Bitrix24 chains 50 lists of 50 in one
    /// batch; amoCRM reads 250 a page, asks for the unsorted statuses with the first page that
    /// has records and, after a pass of several pages, for deletions made meanwhile.
    fn paging(self) -> &'static [PassCost] {
        match self {
            CrmCase::Bitrix24 => &[(0, 1, 1), (50, 1, 1), (51, 1, 1), (2600, 2, 2)],
            CrmCase::Amocrm => &[(0, 1, 1), (250, 1, 2), (251, 2, 4)],
        }
    }

    /// Whether the position after the first page of a pass says where the second starts: the
    /// last id read (Bitrix24) or page 2 of a run that started on page 1 (amoCRM).
    fn resumes_at(self, position: &str, last_id: &str) -> bool {
        match self {
            CrmCase::Bitrix24 => position == last_id,
            CrmCase::Amocrm => position.starts_with("2/1@"),
        }
    }

    fn shift(self) -> Shift {
        match self {
            // `>ID` paging continues after the last id read, not at an offset: records deleted
            // behind the pass move nothing it has still to read.
            CrmCase::Bitrix24 => Shift {
                list_method: "batch",
                after: 1,
                gone: 100..105,
                by_method: &[("batch", 2)],
                requests: 2,
                clean: (2, 2),
            },
            // Once page 2 has been read, three of its deals are deleted: every later deal moves
            // back three places, and page 3 by number starts three deals too late. Three pages,
            // one deletion query, pages 2 and 3 again, one more (empty) deletion query.
            CrmCase::Amocrm => Shift {
                list_method: "GET /api/v4/leads",
                after: 2,
                gone: 260..263,
                by_method: &[("GET /api/v4/leads", 5), ("GET /api/v4/events", 2)],
                requests: 8,
                clean: (3, 4),
            },
        }
    }

    /// The stats key of the change probe.
    fn probe_method(self) -> &'static str {
        match self {
            CrmCase::Bitrix24 => "batch",
            CrmCase::Amocrm => "GET /api/v4/events",
        }
    }

    /// What a probe that finds one changed contact asks. amoCRM reads the contacts the events
    /// name, and the first incremental read asks once whether the account filters by
    /// `updated_at` (`GET /api/v4/account?with=is_api_filter_enabled`).
    fn probe_with_a_change(self) -> &'static [(&'static str, u64)] {
        match self {
            CrmCase::Bitrix24 => &[("batch", 1)],
            CrmCase::Amocrm => &[
                ("GET /api/v4/events", 1),
                ("GET /api/v4/account", 1),
                ("GET /api/v4/contacts", 1),
            ],
        }
    }

    /// Which holders of a number a lookup finds: amoCRM searches contacts and companies only
    /// (its leads are unsorted items).
    fn phone_owners(self) -> &'static [EntityKind] {
        match self {
            CrmCase::Bitrix24 => &[EntityKind::Contact, EntityKind::Lead, EntityKind::Company],
            CrmCase::Amocrm => &[EntityKind::Contact, EntityKind::Company],
        }
    }
}

fn ids(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.id().to_string()).collect()
}

/// Checks the cursor a pass from `from` ended with: the newest change read is its high water,
/// and `since` moved to it or stayed, as the CRM does.
fn assert_ended(crm: CrmCase, from: &Cursor, ended: &Cursor, records: &[Record]) {
    let newest = records.iter().map(Record::updated_at).max();
    assert_eq!(ended.high_water, newest.max(from.high_water));
    let since = if crm.pass_moves_since() {
        ended.high_water.or(from.since)
    } else {
        from.since
    };
    assert_eq!(ended.since, since, "{crm:?}");
}

async fn incremental_reads_see_only_the_change(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    let (all, _, ended) = full_pass(c.as_ref(), EntityKind::Deal, Cursor::default()).await;
    assert_eq!(all.len(), h.sim.world().deals.len());
    assert_ended(crm, &Cursor::default(), &ended, &all);
    let since = ended.high_water.expect("a watermark after a full pass");
    let (tasks, _, tended) = full_pass(c.as_ref(), EntityKind::Task, Cursor::default()).await;
    assert_eq!(tasks.len(), h.sim.world().tasks.len());
    let tsince = tended.high_water.unwrap() + chrono::Duration::seconds(1);

    // Nothing changed: only records at the watermark itself come back (the lower bound is
    // inclusive), and none after it.
    let from = after_pass(&ended);
    let (idle, pages, _) = full_pass(c.as_ref(), EntityKind::Deal, from.clone()).await;
    assert_eq!(pages, 1);
    assert!(idle.iter().all(|r| r.updated_at() == since), "{idle:?}");
    let later = Cursor {
        since: Some(since + chrono::Duration::seconds(1)),
        ..Cursor::default()
    };
    let (none, _, _) = full_pass(c.as_ref(), EntityKind::Deal, later.clone()).await;
    assert!(none.is_empty(), "nothing changed yet: {}", none.len());

    // Clocks have whole seconds: the change falls in a second after the watermark's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (changed, task) = {
        let mut w = h.sim.world();
        let id = *w.deals.keys().nth(17).unwrap();
        let d = w.deals.get_mut(&id).unwrap();
        d.title = "Изменена".into();
        d.updated_at = Utc::now();
        let tid = *w.tasks.keys().next().unwrap();
        let t = w.tasks.get_mut(&tid).unwrap();
        t.completed = true;
        t.updated_at = Utc::now();
        (id.to_string(), tid.to_string())
    };
    let (delta, pages, next) = full_pass(c.as_ref(), EntityKind::Deal, from.clone()).await;
    assert_eq!(pages, 1);
    for r in &delta {
        assert!(
            r.id() == changed || r.updated_at() == since,
            "unexpected record {} at {}",
            r.id(),
            r.updated_at()
        );
    }
    assert!(delta.len() < all.len() / 4, "{}", delta.len());
    let Some(Record::Deal(d)) = delta.iter().find(|r| r.id() == changed) else {
        panic!("the changed deal comes back: {:?}", ids(&delta));
    };
    assert_eq!(d.title, "Изменена");
    assert!(next.high_water.unwrap() > since);
    assert_ended(crm, &from, &next, &delta);
    let (only, _, _) = full_pass(c.as_ref(), EntityKind::Deal, later).await;
    assert_eq!(ids(&only), vec![changed]);

    // A changed task comes back the same way (Bitrix24: tasks.task.list's CHANGED_DATE).
    let from = Cursor {
        since: Some(tsince),
        ..Cursor::default()
    };
    let (recs, _, _) = full_pass(c.as_ref(), EntityKind::Task, from).await;
    assert_eq!(ids(&recs), vec![task]);
}

async fn paging_edges(crm: CrmCase) {
    let kind = crm.bulk_kind();
    for &(n, pages_expected, requests) in crm.paging() {
        let h = crm.start_bulk(n).await;
        let c = crm.plain_client(&h).await;
        h.sim.reset_stats();
        let (recs, pages, ended) = full_pass(c.as_ref(), kind, Cursor::default()).await;
        assert_eq!(recs.len(), n, "world of {n}");
        let distinct: BTreeSet<&str> = recs.iter().map(Record::id).collect();
        assert_eq!(distinct.len(), n, "no duplicates for {n}");
        assert_eq!(pages, pages_expected, "pages for {n}");
        assert_eq!(ended.high_water.is_some(), n > 0, "{n}");
        assert_ended(crm, &Cursor::default(), &ended, &recs);
        let stats = h.sim.stats()[&crm.system()].clone();
        assert_eq!(stats.requests, requests, "requests for {n}: {stats:?}");
        // Kinds the world has none of: one request each, done at once.
        let page = c
            .fetch_page(EntityKind::Company, &Cursor::default())
            .await
            .unwrap();
        assert!(page.done && page.records.is_empty(), "{n}");
    }

    // A pass resumes from the stored position, by a client started afresh.
    let n = crm.page_size() + 100;
    let h = crm.start_bulk(n).await;
    let first = crm
        .plain_client(&h)
        .await
        .fetch_page(kind, &Cursor::default())
        .await
        .unwrap();
    assert!(!first.done);
    assert_eq!(first.records.len(), crm.page_size());
    let last_id = first.records.last().unwrap().id().to_string();
    let position = first.next.position.clone().unwrap();
    assert!(
        crm.resumes_at(&position, &last_id),
        "{position} after {last_id}"
    );
    let second = crm
        .plain_client(&h)
        .await
        .fetch_page(kind, &first.next)
        .await
        .unwrap();
    assert!(second.done);
    assert_eq!(second.records.len(), 100);
    let read: BTreeSet<&str> = first
        .records
        .iter()
        .chain(&second.records)
        .map(Record::id)
        .collect();
    assert_eq!(read.len(), n);
}

async fn deletions_between_pages_skip_nothing(crm: CrmCase) {
    let want = crm.shift();
    let n = crm.several_pages();
    let kind = crm.bulk_kind();
    let h = crm.start_bulk(n).await;
    let c = crm.plain_client(&h).await;
    let all = crm.bulk_ids(&h);
    let gone: Vec<u64> = all[want.gone.clone()].to_vec();
    // The first records of the page after the deletions: where a shift would hide them.
    let boundary = (want.gone.start / crm.page_size() + 1) * crm.page_size();
    let hidden: Vec<u64> = all[boundary..boundary + gone.len()].to_vec();
    let owner = crm.bulk_owner();
    h.sim
        .after_requests(crm.system(), want.list_method, want.after, {
            let gone = gone.clone();
            move |w| {
                for id in gone {
                    assert!(w.delete(owner, id, Utc::now()));
                }
            }
        });
    h.sim.reset_stats();
    let mut cursor = Cursor::default();
    let mut seen = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    for _ in 0..20 {
        let page = c.fetch_page(kind, &cursor).await.unwrap();
        seen.extend(page.records.iter().map(|r| r.id().parse::<u64>().unwrap()));
        deleted.extend(page.deleted.iter().map(|id| id.parse::<u64>().unwrap()));
        cursor = page.next;
        if page.done {
            break;
        }
    }
    assert!(cursor.position.is_none(), "the pass ended");
    for id in &hidden {
        assert!(
            seen.contains(id),
            "record {id} at the page boundary was skipped"
        );
    }
    let world: BTreeSet<u64> = crm.bulk_ids(&h).into_iter().collect();
    assert_eq!(world.len(), n - gone.len());
    assert!(world.is_subset(&seen), "{:?}", world.difference(&seen));
    assert!(
        gone.iter().all(|id| seen.contains(id)),
        "read before the deletion"
    );
    assert_eq!(seen.len(), n);
    let stats = h.sim.stats()[&crm.system()].clone();
    for (method, count) in want.by_method {
        assert_eq!(stats.by_method[*method], *count, "{method}: {stats:?}");
    }
    assert_eq!(stats.requests, want.requests, "{stats:?}");
    // A CRM with a deletion feed reports the deletions with the pass; one without answers
    // the ids that still exist, for the sync's sweep.
    match c.existing_ids(kind).await.unwrap() {
        None => assert_eq!(
            deleted,
            gone.iter().copied().collect(),
            "deletions reported"
        ),
        Some(live) => {
            assert!(deleted.is_empty(), "{deleted:?}");
            let live: BTreeSet<u64> = live.iter().map(|id| id.parse().unwrap()).collect();
            assert_eq!(live, world);
        }
    }

    // Without deletions a pass costs its pages (and on amoCRM one deletion query). Deletion
    // times have whole seconds: wait for the next one so the old deletions are not new.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.sim.reset_stats();
    let (records, pages, _) = full_pass(c.as_ref(), kind, Cursor::default()).await;
    assert_eq!((records.len(), pages), (world.len(), want.clean.0));
    assert_eq!(h.sim.stats()[&crm.system()].requests, want.clean.1);
}

async fn idle_change_probe_is_one_request(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    // Whole seconds, as both CRMs keep modification times.
    let since = newest(&h.sim.world()).timestamp() + 1;
    let since = Utc.timestamp_opt(since, 0).unwrap();
    let cursors: Vec<(EntityKind, Cursor)> = EntityKind::ALL
        .iter()
        .map(|k| {
            let cursor = Cursor {
                since: Some(since),
                ..Cursor::default()
            };
            (*k, cursor)
        })
        .collect();
    h.sim.reset_stats();
    let changes = c.fetch_changes(&cursors).await.unwrap();
    assert!(changes.is_empty(), "nothing changed: {changes:?}");
    let stats = h.sim.stats()[&crm.system()].clone();
    assert_eq!(stats.requests, 1, "{stats:?}");
    assert_eq!(stats.by_method[crm.probe_method()], 1, "{stats:?}");

    // One contact changes: only contacts come back.
    let at = since + chrono::Duration::seconds(30);
    let contact = {
        let mut w = h.sim.world();
        let id = *w.contacts.keys().nth(3).unwrap();
        w.contacts.get_mut(&id).unwrap().updated_at = at;
        id.to_string()
    };
    h.sim.reset_stats();
    let changes = c.fetch_changes(&cursors).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let (kind, page) = &changes[0];
    assert_eq!(*kind, EntityKind::Contact);
    assert!(page.done);
    assert_eq!(ids(&page.records), vec![contact]);
    assert_eq!(page.next.high_water, Some(at));
    let stats = h.sim.stats()[&crm.system()].clone();
    let asked = crm.probe_with_a_change();
    for (method, count) in asked {
        assert_eq!(stats.by_method[*method], *count, "{method}: {stats:?}");
    }
    assert_eq!(
        stats.requests,
        asked.iter().map(|(_, n)| n).sum::<u64>(),
        "{stats:?}"
    );
}

async fn find_by_phone_in_any_shape(crm: CrmCase) {
    let (world, [contact, lead, company]) = one_number_world();
    let h = crm.serve(world).await;
    let c = crm.plain_client(&h).await;
    let mut found = c.find_by_phone("+79123456789").await.unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want: Vec<EntityRef> = [
        (EntityKind::Contact, contact),
        (EntityKind::Lead, lead),
        (EntityKind::Company, company),
    ]
    .into_iter()
    .filter(|(kind, _)| crm.phone_owners().contains(kind))
    .map(|(kind, id)| EntityRef::new(kind, id.to_string()))
    .collect();
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(found, want);
    assert!(c.find_by_phone("+79000000000").await.unwrap().is_empty());
}
