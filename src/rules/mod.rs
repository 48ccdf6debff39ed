//! Rules: each looks at the mirror and proposes actions; the ledger decides whether and how
//! they run. A rule never writes anything itself and never knows which CRM is behind the mirror.

pub mod call_not_in_crm;
pub mod clients;
pub mod deal_without_task;
pub mod dormant;
pub mod lead_reaction;
pub mod lead_without_deal;
pub mod manager_notify;
pub mod missed_call;
pub mod no_activity;
pub mod overdue_tasks;
pub mod scope;
pub mod three_unanswered;
pub mod unknown_caller;

use crate::config::{
    Lang, MarketingConfig, RolesConfig, RoutingConfig, RuleMode, RuleSettings, RulesConfig,
    TelegramConfig,
};
use crate::domain::calendar::BusinessCalendar;
use crate::domain::{Deal, Ts};
use crate::ledger::Proposal;
use crate::store::Snapshot;

/// What a rule sees.
pub struct RuleContext<'a> {
    pub tenant: &'a str,
    pub now: Ts,
    pub calendar: &'a BusinessCalendar,
    pub lang: Lang,
    pub mirror: &'a Snapshot,
    /// Where alerts go; rules that message people propose nothing without it.
    pub telegram: Option<&'a TelegramConfig>,
    pub roles: &'a RolesConfig,
    /// Who owns an unknown caller's lead.
    pub routing: &'a RoutingConfig,
    /// Every rule's settings (some rules defer to another's numbers).
    pub rules: &'a RulesConfig,
    /// Clients handed over by the dormant rule, oldest first (from the ledger).
    pub handovers: &'a [Handover],
    pub marketing: &'a MarketingConfig,
    /// Results of done actions by key (e.g. the id of a task a rule created), recent ones.
    pub done: &'a std::collections::HashMap<String, String>,
    /// Keys whose write was attempted but whose outcome is unknown (a crash or a lost answer):
    /// a rule whose trigger the write itself removed proposes them again so the ledger can
    /// reconcile them by their marker.
    pub unfinished: &'a std::collections::HashSet<String>,
    /// Telephony employees ↔ CRM users, and CRM answers for numbers the mirror lacks.
    pub calls: &'a crate::matching::CallLinks,
}

/// A done owner change of the dormant rule.
#[derive(Debug, Clone)]
pub struct Handover {
    pub entity: crate::domain::EntityRef,
    pub previous: Option<String>,
    pub at: Ts,
}

/// A rule: a name and a function from the mirror to proposals (each rule reads its own typed
/// settings from `RuleContext::rules`).
pub struct Rule {
    pub name: &'static str,
    pub propose: fn(&RuleContext) -> Vec<Proposal>,
    /// How the rule looks at part of the mirror; `None`: it reads the whole mirror each cycle.
    pub incremental: Option<&'static scope::Incremental>,
}

/// Every implemented rule, in the order they run.
pub const RULES: &[Rule] = &[
    Rule {
        name: "unknown_caller",
        propose: |ctx| unknown_caller::propose(ctx, &ctx.rules.unknown_caller),
        incremental: None,
    },
    Rule {
        name: "call_not_in_crm",
        propose: |ctx| call_not_in_crm::propose(ctx, &ctx.rules.call_not_in_crm),
        incremental: None,
    },
    Rule {
        name: "missed_call",
        propose: |ctx| missed_call::propose(ctx, &ctx.rules.missed_call),
        incremental: None,
    },
    Rule {
        name: "three_unanswered",
        propose: |ctx| three_unanswered::propose(ctx, &ctx.rules.three_unanswered),
        incremental: Some(&three_unanswered::INCREMENTAL),
    },
    Rule {
        name: "lead_without_deal",
        propose: |ctx| lead_without_deal::propose(ctx, &ctx.rules.lead_without_deal),
        incremental: Some(&lead_without_deal::INCREMENTAL),
    },
    Rule {
        name: "deal_without_task",
        propose: |ctx| deal_without_task::propose(ctx, &ctx.rules.deal_without_task),
        incremental: Some(&deal_without_task::INCREMENTAL),
    },
    Rule {
        name: "lead_reaction",
        propose: |ctx| lead_reaction::propose(ctx, &ctx.rules.lead_reaction),
        incremental: Some(&lead_reaction::INCREMENTAL),
    },
    Rule {
        name: "overdue_tasks",
        propose: |ctx| overdue_tasks::propose(ctx, &ctx.rules.overdue_tasks),
        incremental: Some(&overdue_tasks::INCREMENTAL),
    },
    Rule {
        name: "no_activity",
        propose: |ctx| no_activity::propose(ctx, &ctx.rules.no_activity),
        incremental: None,
    },
    Rule {
        name: "dormant",
        propose: |ctx| dormant::propose(ctx, &ctx.rules.dormant),
        incremental: None,
    },
];

/// A rule's config and the mode it runs in this cycle (`dry_run` turns `on` into `shadow`).
pub fn effective<'a>(
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
pub fn in_scope(cfg: &dyn RuleSettings, deal: &Deal) -> bool {
    (cfg.pipelines().is_empty() || cfg.pipelines().contains(&deal.pipeline_id))
        && (cfg.stages().is_empty() || cfg.stages().contains(&deal.stage_id))
}
