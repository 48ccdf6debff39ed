//! What rules propose from in a cycle: the state every rule of the cycle shares (clock, journal
//! position, users and stages, the call rules' working set) and a rule's view of the mirror.

use std::collections::{HashMap, HashSet};

use crate::domain::Ts;
use crate::matching::CallLinks;
use crate::rules::Handover;
use crate::store::{Snapshot, Store, StoreError};
use crate::tenant::Tenant;

/// What every rule of a cycle shares: the clock, the journal position, the base of every working
/// set, and the call rules' working set once one of them asks.
pub(super) struct Shared {
    pub(super) now: Ts,
    pub(super) head: i64,
    pub(super) base: Snapshot,
    /// The call rules' shared working set, read once per cycle.
    pub(super) recent: Option<View>,
}

/// What a rule proposes from: a mirror (whole, or a working set), the call links built from it,
/// and the ledger's view the rule reads (empty for rules that read none).
#[derive(Default)]
pub(super) struct View {
    pub(super) mirror: Snapshot,
    pub(super) links: CallLinks,
    pub(super) handovers: Vec<Handover>,
    pub(super) done: HashMap<String, String>,
    pub(super) unfinished: HashSet<String>,
    pub(super) classes: Option<crate::rules::clients::Classes>,
}

impl View {
    pub(super) fn of_page(
        mirror: Snapshot,
        handovers: Vec<Handover>,
        classes: Option<crate::rules::clients::Classes>,
    ) -> View {
        View {
            mirror,
            handovers,
            classes,
            ..View::default()
        }
    }
}

/// The clock, the journal position and the base of every working set, read once per cycle.
pub(super) async fn shared(store: &Store, tid: &str, now: Ts) -> Result<Shared, StoreError> {
    Ok(Shared {
        now,
        // The position first: whatever is written after it is still ahead of the marks.
        head: store.mirror_head(tid).await?,
        base: base(store, tid).await?,
        recent: None,
    })
}

/// What every working set carries: users and stages (they are few).
pub(super) async fn base(store: &Store, tid: &str) -> Result<Snapshot, StoreError> {
    Ok(Snapshot {
        users: store.users(tid).await?,
        stages: store.stages(tid).await?,
        ..Snapshot::default()
    })
}

/// `[tenants.telephony] employees`, or none.
pub(super) fn employees(tenant: &Tenant) -> &std::collections::BTreeMap<String, String> {
    static NONE: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    tenant
        .cfg
        .telephony
        .as_ref()
        .map_or(&NONE, |t| t.employees())
}

/// The call rules' shared working set and the call links built from it.
pub(super) async fn load_recent(
    store: &Store,
    tenant: &Tenant,
    base: &Snapshot,
    now: Ts,
) -> Result<View, StoreError> {
    let set = crate::rules::recent_calls::load(store, tenant, base, now).await?;
    let links = call_links(store, tenant, &set.mirror, now).await;
    Ok(View {
        mirror: set.mirror,
        links,
        handovers: Vec::new(),
        done: set.done,
        unfinished: set.unfinished,
        classes: None,
    })
}

/// The staff map and the CRM's answers for numbers `mirror` lacks, remembered in the store.
pub(super) async fn call_links(
    store: &Store,
    tenant: &Tenant,
    mirror: &Snapshot,
    now: Ts,
) -> CallLinks {
    let memory = crate::matching::Memory {
        store,
        tenant: tenant.id(),
    };
    crate::matching::links(
        tenant.crm.as_ref(),
        Some(memory),
        tenant.telephony.as_deref(),
        employees(tenant),
        &tenant.cfg.rules,
        mirror,
        now,
    )
    .await
}
