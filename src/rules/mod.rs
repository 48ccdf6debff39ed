//! Rules: each looks at the mirror and proposes actions; the ledger decides whether and how
//! they run. A rule never writes anything itself and never knows which CRM is behind the mirror.

pub(crate) mod call_not_in_crm;
pub(crate) mod client_scope;
pub(crate) mod clients;
pub(crate) mod deal_without_task;
pub(crate) mod dormant;
pub(crate) mod lead_reaction;
pub(crate) mod lead_without_deal;
pub(crate) mod manager_notify;
pub(crate) mod missed_call;
pub mod no_activity;
pub(crate) mod overdue_tasks;
pub(crate) mod recent_calls;
pub(crate) mod scope;
pub(crate) mod three_unanswered;
pub(crate) mod unknown_caller;

use crate::config::{
    Lang, MarketingConfig, RolesConfig, RoutingConfig, RuleMode, RuleSettings, RulesConfig,
    TelegramConfig,
};
use crate::domain::calendar::BusinessCalendar;
use crate::domain::{Deal, Ts};
use crate::ledger::Proposal;
use crate::store::Snapshot;

/// What a rule sees.
pub(crate) struct RuleContext<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) now: Ts,
    pub(crate) calendar: &'a BusinessCalendar,
    pub(crate) lang: Lang,
    pub(crate) mirror: &'a Snapshot,
    /// Where alerts go; rules that message people propose nothing without it.
    pub(crate) telegram: Option<&'a TelegramConfig>,
    pub(crate) roles: &'a RolesConfig,
    /// Who owns an unknown caller's lead.
    pub(crate) routing: &'a RoutingConfig,
    /// Every rule's settings (some rules defer to another's numbers).
    pub(crate) rules: &'a RulesConfig,
    /// Clients handed over by the dormant rule, oldest first (from the ledger).
    pub(crate) handovers: &'a [Handover],
    pub(crate) marketing: &'a MarketingConfig,
    /// Results of done actions by key (e.g. the id of a task a rule created), recent ones.
    pub(crate) done: &'a std::collections::HashMap<String, String>,
    /// Keys whose write was attempted but whose outcome is unknown (a crash or a lost answer):
    /// a rule whose trigger the write itself removed proposes them again so the ledger can
    /// reconcile them by their marker.
    pub(crate) unfinished: &'a std::collections::HashSet<String>,
    /// Telephony employees ↔ CRM users, and CRM answers for numbers the mirror lacks.
    pub(crate) calls: &'a crate::matching::CallLinks,
    /// Clients' ABC classes over the whole mirror when `mirror` holds part of it.
    pub(crate) classes: Option<&'a clients::Classes>,
}

/// A done owner change of the dormant rule.
#[derive(Debug, Clone)]
pub(crate) struct Handover {
    pub(crate) entity: crate::domain::EntityRef,
    pub(crate) previous: Option<String>,
    pub(crate) at: Ts,
}

/// A rule: a name and a function from the mirror to proposals (each rule reads its own typed
/// settings from `RuleContext::rules`).
pub(crate) struct Rule {
    pub(crate) name: &'static str,
    pub(crate) propose: fn(&RuleContext) -> Vec<Proposal>,
    /// How the rule looks at part of the mirror: what changed and what fell due.
    pub(crate) incremental: &'static scope::Incremental,
}

/// Every implemented rule, in the order they run.
pub(crate) const RULES: &[Rule] = &[
    Rule {
        name: "unknown_caller",
        propose: |ctx| unknown_caller::propose(ctx, &ctx.rules.unknown_caller),
        incremental: &scope::RECENT_CALLS,
    },
    Rule {
        name: "call_not_in_crm",
        propose: |ctx| call_not_in_crm::propose(ctx, &ctx.rules.call_not_in_crm),
        incremental: &scope::RECENT_CALLS,
    },
    Rule {
        name: "missed_call",
        propose: |ctx| missed_call::propose(ctx, &ctx.rules.missed_call),
        incremental: &scope::RECENT_CALLS,
    },
    Rule {
        name: "three_unanswered",
        propose: |ctx| three_unanswered::propose(ctx, &ctx.rules.three_unanswered),
        incremental: &three_unanswered::INCREMENTAL,
    },
    Rule {
        name: "lead_without_deal",
        propose: |ctx| lead_without_deal::propose(ctx, &ctx.rules.lead_without_deal),
        incremental: &lead_without_deal::INCREMENTAL,
    },
    Rule {
        name: "deal_without_task",
        propose: |ctx| deal_without_task::propose(ctx, &ctx.rules.deal_without_task),
        incremental: &deal_without_task::INCREMENTAL,
    },
    Rule {
        name: "lead_reaction",
        propose: |ctx| lead_reaction::propose(ctx, &ctx.rules.lead_reaction),
        incremental: &lead_reaction::INCREMENTAL,
    },
    Rule {
        name: "overdue_tasks",
        propose: |ctx| overdue_tasks::propose(ctx, &ctx.rules.overdue_tasks),
        incremental: &overdue_tasks::INCREMENTAL,
    },
    Rule {
        name: "no_activity",
        propose: |ctx| no_activity::propose(ctx, &ctx.rules.no_activity),
        incremental: &client_scope::INCREMENTAL,
    },
    Rule {
        name: "dormant",
        propose: |ctx| dormant::propose(ctx, &ctx.rules.dormant),
        incremental: &client_scope::INCREMENTAL,
    },
];

/// A rule's config and the mode it runs in this cycle (`dry_run` turns `on` into `shadow`).
pub(crate) fn effective<'a>(
    rules: &'a RulesConfig,
    name: &str,
    dry_run: bool,
) -> Option<(&'a dyn RuleSettings, RuleMode)> {
    let cfg = rules.get(name)?;
    let mode = match (cfg.mode(), dry_run) {
        (RuleMode::On, true) => RuleMode::Shadow,
        (m, _) => m,
    };
    Some((cfg, mode))
}

/// Whether a deal is in the rule's pipeline/stage scope (empty lists = everything).
pub(crate) fn in_scope(cfg: &dyn RuleSettings, deal: &Deal) -> bool {
    (cfg.pipelines().is_empty() || cfg.pipelines().contains(&deal.pipeline_id))
        && (cfg.stages().is_empty() || cfg.stages().contains(&deal.stage_id))
}
