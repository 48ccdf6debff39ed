//! One rule's look at the mirror in a cycle: its scope (everything, or what changed and fell
//! due since its mark), the views it proposes from (a page of its working set at a time, or
//! the call rules' shared working set), and its new mark once it has seen all of them.

use super::view::{Shared, View, load_recent};
use crate::config::RuleMode;
use crate::rules::Rule;
use crate::rules::scope::{Gather, GatherArgs, Incremental, Scope};
use crate::store::{Changes, RuleMark, Store, StoreError};
use crate::tenant::Tenant;

/// Past this many changed records a rule looks at everything, a page at a time.
const DELTA_LIMIT: usize = 20_000;

/// A rule's look in progress.
pub(super) struct Look {
    rule: &'static Rule,
    mode: RuleMode,
    settings: String,
    /// `None` for the call rules' shared working set (one view, whatever changed).
    scope: Option<Scope>,
    /// Where the next page starts; `None` once the last view was given.
    after: Option<String>,
}

/// A view a look gives: its own page, or the cycle's shared one.
pub(super) enum ViewOf<'s> {
    Own(Box<View>),
    Shared(&'s View),
}

impl std::ops::Deref for ViewOf<'_> {
    type Target = View;
    fn deref(&self) -> &View {
        match self {
            ViewOf::Own(v) => v,
            ViewOf::Shared(v) => v,
        }
    }
}

impl Look {
    pub(super) async fn start(
        store: &Store,
        tenant: &Tenant,
        rule: &'static Rule,
        mode: RuleMode,
        shared: &Shared,
    ) -> Result<Look, StoreError> {
        let settings = settings_digest(tenant, rule, mode);
        let inc = rule.incremental;
        let scope = match inc.gather {
            Gather::RecentCalls => None,
            Gather::Pages(_) => {
                let tz = tenant.calendar.tz;
                Some(scope_for(store, tenant.id(), rule, inc, &settings, shared, tz).await?)
            }
        };
        Ok(Look {
            rule,
            mode,
            settings,
            scope,
            after: Some(String::new()),
        })
    }

    /// The next view to propose from; `None` when the look has seen its whole scope.
    pub(super) async fn next<'s>(
        &mut self,
        store: &Store,
        tenant: &Tenant,
        shared: &'s mut Shared,
    ) -> Result<Option<ViewOf<'s>>, StoreError> {
        let Some(after) = self.after.take() else {
            return Ok(None);
        };
        let (Gather::Pages(pages), Some(scope)) = (&self.rule.incremental.gather, &self.scope)
        else {
            if shared.recent.is_none() {
                shared.recent = Some(load_recent(store, tenant, &shared.base, shared.now).await?);
            }
            return Ok(shared.recent.as_ref().map(ViewOf::Shared));
        };
        let page = pages(GatherArgs {
            store,
            rule: self.rule.name,
            tenant: tenant.id(),
            now: shared.now,
            scope,
            rules: &tenant.cfg.rules,
            calendar: &tenant.calendar,
            mode: self.mode,
            after: &after,
            base: &shared.base,
        })
        .await?;
        self.after = page.next;
        Ok(Some(ViewOf::Own(Box::new(View::of_page(
            page.mirror,
            page.handovers,
            page.classes,
        )))))
    }

    /// What the look covered, for the logs: `full`, `N changes`, or `recent calls`.
    pub(super) fn describe(&self) -> String {
        match &self.scope {
            None => "recent calls".into(),
            Some(Scope::Full) => "full".into(),
            Some(Scope::Delta { changes, .. }) => format!("{} changes", changes.len()),
        }
    }

    /// Records the rule's mark: the next look starts from this cycle's position and clock.
    pub(super) async fn finish(
        self,
        store: &Store,
        tenant: &str,
        shared: &Shared,
    ) -> Result<(), StoreError> {
        let mark = RuleMark {
            seq: shared.head,
            at: shared.now,
            settings: self.settings,
        };
        store.set_rule_mark(tenant, self.rule.name, &mark).await
    }
}

/// The scope of an incremental rule: everything when it has no mark, its settings changed or
/// its keys rolled over; else the journal since its mark and the records of its unsettled
/// actions.
async fn scope_for(
    store: &Store,
    tenant: &str,
    rule: &Rule,
    inc: &Incremental,
    settings: &str,
    shared: &Shared,
    tz: chrono_tz::Tz,
) -> Result<Scope, StoreError> {
    let Some(mark) = store.rule_mark(tenant, rule.name).await? else {
        return Ok(Scope::Full);
    };
    if mark.settings != settings
        || mark.seq > shared.head
        || (inc.full_after)(mark.at, shared.now, tz)
    {
        return Ok(Scope::Full);
    }
    let mut changes = store.changes_between(tenant, mark.seq, shared.head).await?;
    if changes.len() > DELTA_LIMIT {
        // A resync or a mass import: a paged full look costs less than one huge working set.
        return Ok(Scope::Full);
    }
    let mut pending = Changes::default();
    for e in store.unsettled_entities(tenant, rule.name).await? {
        pending.entity_ref(&e);
    }
    changes.merge(pending);
    Ok(Scope::Delta {
        since: mark.at,
        changes,
    })
}

/// What the rule's decisions depend on besides the mirror: its settings, its mode, and the
/// tenant's language, calendar, roles, routing, marketing and chats. A change means a full look.
fn settings_digest(tenant: &Tenant, rule: &Rule, mode: RuleMode) -> String {
    let c = &tenant.cfg;
    let text = format!(
        "{}|{mode:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        rule.name,
        // Every rule's settings: some rules read another's (no_activity skips dormant clients).
        c.rules,
        c.lang,
        tenant.calendar,
        c.roles,
        c.routing,
        c.marketing,
        c.telegram,
    );
    // A stable hash: the same settings give the same digest in every build.
    format!("{:016x}", crate::rules::manager_notify::fnv(&text))
}
