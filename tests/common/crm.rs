//! One CRM under test, so that a scenario both connectors must pass is written once and run
//! for Bitrix24 and amoCRM, each with its own figures.

use std::sync::Arc;
use std::time::Duration;

use dozor::crm::amocrm::{AmoCrm, Tuning};
use dozor::crm::bitrix24::Bitrix24;
use dozor::crm::{Crm, Cursor};
use dozor::domain::{EntityKind, Record};
use dozor::http::Throttle;
use dozor::store::Store;
use dozor_sim::world::World;
use dozor_sim::{SimHandle, SimOptions, System};

/// The CRM a shared scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrmCase {
    Bitrix24,
    Amocrm,
}

impl CrmCase {
    /// The simulated system that answers this CRM's requests.
    pub fn system(self) -> System {
        match self {
            CrmCase::Bitrix24 => System::Bitrix24,
            CrmCase::Amocrm => System::Amocrm,
        }
    }

    /// The simulator options of this CRM's connector suite.
    pub fn opts(self) -> SimOptions {
        match self {
            CrmCase::Bitrix24 => super::anchored(11, super::march_noon()),
            CrmCase::Amocrm => super::sim_opts(3),
        }
    }

    /// The kind of record the bulk world holds: contacts on Bitrix24 (paged by `>ID` in
    /// batches), deals on amoCRM (paged by page number).
    pub fn bulk_kind(self) -> EntityKind {
        match self {
            CrmCase::Bitrix24 => EntityKind::Contact,
            CrmCase::Amocrm => EntityKind::Deal,
        }
    }

    /// A world of one user and `n` records of [`Self::bulk_kind`].
    pub fn bulk_world(self, n: usize) -> World {
        match self {
            CrmCase::Bitrix24 => super::contacts_world(n),
            CrmCase::Amocrm => super::deals_world(n),
        }
    }

    /// The simulator serving [`Self::bulk_world`] of `n` records.
    pub async fn start_bulk(self, n: usize) -> SimHandle {
        super::serve_world(self.opts(), self.bulk_world(n)).await
    }

    /// The connector on the simulator (Bitrix24 by webhook, amoCRM by long-lived token), its
    /// tokens in `store`, throttled answers waited out by `throttle`.
    pub async fn client(
        self,
        h: &SimHandle,
        store: Arc<Store>,
        throttle: Throttle,
    ) -> Box<dyn Crm> {
        match self {
            CrmCase::Bitrix24 => Box::new(
                Bitrix24::new("t1", &super::b24_webhook(h.b24_webhook_url()), store)
                    .await
                    .unwrap()
                    .with_throttle(throttle),
            ),
            CrmCase::Amocrm => Box::new(
                AmoCrm::new("t1", &super::amo_sim(h), store)
                    .await
                    .unwrap()
                    .with_tuning(Tuning {
                        throttle,
                        ..Tuning::default()
                    }),
            ),
        }
    }

    /// How many records of [`Self::bulk_kind`] the mirror in `store` holds.
    pub async fn mirrored(self, store: &Store) -> usize {
        match self {
            CrmCase::Bitrix24 => store.contacts("t1").await.unwrap().len(),
            CrmCase::Amocrm => store.deals("t1").await.unwrap().len(),
        }
    }
}

/// Throttle waits short enough for a test: 20 ms doubling to 160 ms, a minute in all.
pub fn quick_throttle() -> Throttle {
    Throttle {
        first: Duration::from_millis(20),
        cap: Duration::from_millis(160),
        budget: Duration::from_secs(60),
    }
}

/// Reads every page of `kind` from `from`; returns the records, the number of pages and the
/// final cursor.
pub async fn full_pass(
    c: &dyn Crm,
    kind: EntityKind,
    from: Cursor,
) -> (Vec<Record>, usize, Cursor) {
    let mut cursor = from;
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = c.fetch_page(kind, &cursor).await.unwrap();
        pages += 1;
        out.extend(page.records);
        cursor = page.next;
        if page.done {
            return (out, pages, cursor);
        }
        assert!(pages < 100, "runaway paging");
    }
}
