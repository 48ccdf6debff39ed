//! A CRM that refuses its answers: the connector waits refusals out.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dozor::crm::Cursor;
use dozor::store::Store;
use dozor_sim::Faults;

use crate::common;
use crate::common::crm::{CrmCase, full_pass, quick_throttle};

for_each_crm!(rate_limit_storm_is_waited_out_and_the_sync_completes);

/// What a storm costs each CRM: how many records, passes in the half-refused phase, pages a
/// pass (where the suite counted them), requests answered and refusals expected there.
struct Storm {
    records: usize,
    passes: usize,
    pages: Option<usize>,
    answered: u64,
    refused: RangeInclusive<u64>,
}

impl CrmCase {
    fn storm(self) -> Storm {
        match self {
            // 2,600 contacts: two batch requests a pass, five passes.
            CrmCase::Bitrix24 => Storm {
                records: 2600,
                passes: 5,
                pages: None,
                answered: 10,
                refused: 9..=10,
            },
            // 600 deals: three pages and the deletion query, one pass.
            CrmCase::Amocrm => Storm {
                records: 600,
                passes: 1,
                pages: Some(3),
                answered: 4,
                refused: 3..=4,
            },
        }
    }
}

async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<Store> {
    Arc::new(
        Store::open(&common::sqlite_url(dir.path()), 4)
            .await
            .unwrap(),
    )
}

async fn rate_limit_storm_is_waited_out_and_the_sync_completes(crm: CrmCase) {
    let want = crm.storm();
    let h = crm.start_bulk(want.records).await;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let c = crm.client(&h, store.clone(), quick_throttle()).await;
    let kind = crm.bulk_kind();
    // Twenty refusals in a row (QUERY_LIMIT_EXCEEDED, 429): far more than a fixed retry count
    // survives.
    h.sim.set_faults(
        crm.system(),
        Faults {
            throttle: 20,
            ..Faults::default()
        },
    );
    h.sim.reset_stats();
    let started = Instant::now();
    let report = dozor::sync::sync_crm(&store, "t1", c.as_ref(), Default::default())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.items[kind.as_str()], want.records);
    assert_eq!(crm.mirrored(&store).await, want.records);
    let stats = h.sim.stats()[&crm.system()].clone();
    assert_eq!(stats.throttled, 20);
    // Waits doubled to their cap: 20 + 40 + 80 + 17 × 160 ms; a client that did not back off
    // would have gone through the refusals at once.
    assert!(elapsed >= Duration::from_millis(2800), "{elapsed:?}");
    println!(
        "{crm:?} storm of 20: {} requests ({} refused), {elapsed:?}",
        stats.requests, stats.throttled
    );

    // Then half of all requests refused for a while: every pass still completes, and each
    // refusal costs exactly one more request, after a pause.
    h.sim.set_faults(
        crm.system(),
        Faults {
            throttle_percent: 50,
            ..Faults::default()
        },
    );
    h.sim.reset_stats();
    let started = Instant::now();
    for _ in 0..want.passes {
        let (records, pages, _) = full_pass(c.as_ref(), kind, Cursor::default()).await;
        assert_eq!(records.len(), want.records);
        if let Some(p) = want.pages {
            assert_eq!(pages, p);
        }
    }
    let stats = h.sim.stats()[&crm.system()].clone();
    assert_eq!(stats.requests - stats.throttled, want.answered, "{stats:?}");
    assert!(want.refused.contains(&stats.throttled), "{stats:?}");
    assert!(started.elapsed() >= Duration::from_millis(20 * stats.throttled));
}
