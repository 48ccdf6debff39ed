//! What a rule looks at in a cycle: the whole mirror, or what changed since it last looked plus
//! what fell due since then by the clock.
//!
//! A rule that can look at part of the mirror says how ([`Incremental`]): when it must look at
//! everything again (its keys roll over, e.g. a new day), and how to read a *working set* for a
//! scope: its candidates and everything its decision about each reads, closed under that (a
//! deal with all its open tasks, a client's numbers with all their calls). The rule's own
//! `propose` then runs on the working set as it would on the whole mirror, so both ways decide
//! alike; candidates outside the working set would only repeat proposals the ledger already has.

use futures::future::BoxFuture;

use crate::config::{RuleMode, RulesConfig};
use crate::domain::Ts;
use crate::domain::calendar::BusinessCalendar;
use crate::store::{Changes, Snapshot, Store, StoreError};

/// What a rule looks at this cycle.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Everything: the first evaluation, changed settings, keys that rolled over.
    Full,
    /// What changed after the evaluation at `since` (journal notes and the records of the rule's
    /// unsettled actions), and what fell due in `(since, now]`.
    Delta { since: Ts, changes: Changes },
}

/// Reads one page of a working set.
pub struct GatherArgs<'a> {
    pub store: &'a Store,
    /// The rule the working set is for.
    pub rule: &'static str,
    pub tenant: &'a str,
    pub now: Ts,
    pub scope: &'a Scope,
    pub rules: &'a RulesConfig,
    pub calendar: &'a BusinessCalendar,
    /// The mode the rule runs in: a digest whose key the ledger has settled in it needs no look.
    pub mode: RuleMode,
    /// Where the previous page ended (empty for the first).
    pub after: &'a str,
    /// Users and stages, which every working set carries (they are few).
    pub base: &'a Snapshot,
}

/// A page of a working set and where the next one starts (`None`: the last).
#[derive(Default)]
pub struct Page {
    pub mirror: Snapshot,
    pub next: Option<String>,
    /// The dormant rule's hand-overs of the page's clients, oldest first.
    pub handovers: Vec<super::Handover>,
    /// The page's clients' ABC classes over the whole mirror (for the client rules).
    pub classes: Option<super::clients::Classes>,
}

/// Reads one page of a rule's working set.
pub type Pages = for<'a> fn(GatherArgs<'a>) -> BoxFuture<'a, Result<Page, StoreError>>;

/// Where a rule's working set comes from.
pub enum Gather {
    /// The rule's own reads, page by page.
    Pages(Pages),
    /// The working set the call rules share, read once per cycle (see `recent_calls`).
    RecentCalls,
}

/// How a rule looks at part of the mirror.
pub struct Incremental {
    /// Whether the rule must look at everything though it last looked at `since`.
    pub full_after: fn(since: Ts, now: Ts, tz: chrono_tz::Tz) -> bool,
    pub gather: Gather,
}

/// The call rules: their candidates are the calls of their window, whatever changed.
pub const RECENT_CALLS: Incremental = Incremental {
    full_after: never,
    gather: Gather::RecentCalls,
};

/// Candidates per page of a full look: a working set stays a few megabytes whatever the mirror.
pub const PAGE: usize = 2_000;

/// Keys that roll over each local day.
pub fn new_day(since: Ts, now: Ts, tz: chrono_tz::Tz) -> bool {
    since.with_timezone(&tz).date_naive() != now.with_timezone(&tz).date_naive()
}

/// Keys that never roll over.
pub fn never(_: Ts, _: Ts, _: chrono_tz::Tz) -> bool {
    false
}

/// A working set of the base (users, stages) and nothing else yet.
pub fn base_set(base: &Snapshot) -> Snapshot {
    Snapshot {
        users: base.users.clone(),
        stages: base.stages.clone(),
        ..Snapshot::default()
    }
}

/// The next page's start after a full-look page of `n` candidates ending at `last`.
pub fn next_after(n: usize, last: Option<&str>) -> Option<String> {
    (n >= PAGE).then(|| last.unwrap_or_default().to_string())
}

/// Whether any of a digest's `keys` would still be acted on; when none would, the digest rule
/// needs no working set (the reference would propose them only to meet them settled).
pub async fn any_unsettled(a: &GatherArgs<'_>, keys: &[String]) -> Result<bool, StoreError> {
    for k in keys {
        if crate::ledger::would_act_key(a.store, k, a.mode).await? {
            return Ok(true);
        }
    }
    Ok(false)
}
