//! The rules' settings: one struct per rule, each with the settings every rule has (`mode`,
//! `pipelines`, `stages`) and its own numbers, defaults from the methodology (DESIGN.md).
//!
//! Each struct denies unknown keys, so `sla_minuts = 15` under `[tenants.rules.missed_call]` is
//! an error naming the file, the key and its line, never a silently ignored setting; and a rule
//! reads its numbers as fields, so a misspelt name in the code does not compile.

use serde::{Deserialize, Deserializer, Serialize};

/// Whether a rule acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    /// Not evaluated.
    Off,
    /// Evaluated and reported ("would have created 14 tasks"), nothing written.
    Shadow,
    /// Evaluated and acted on.
    On,
}

/// The largest number a rule setting takes.
pub(crate) const MAX_RULE_PARAM: f64 = 1_000_000.0;

/// What every rule's settings offer, whatever its own numbers are.
pub trait RuleSettings: std::fmt::Debug {
    fn mode(&self) -> RuleMode;
    fn set_mode(&mut self, mode: RuleMode);
    /// Pipelines the rule applies to (empty = all).
    fn pipelines(&self) -> &[String];
    /// Stages the rule applies to (empty = all).
    fn stages(&self) -> &[String];
    /// The rule's own numbers by name, in the order they are declared.
    fn params(&self) -> Vec<(&'static str, f64)>;
}

/// A rule number: minutes, hours, days or a count. Bounded, because numbers far beyond any real
/// setting would overflow the time arithmetic the rules do with them.
fn rule_number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let n = f64::deserialize(d)?;
    if n.is_finite() && (0.0..=MAX_RULE_PARAM).contains(&n) {
        Ok(n)
    } else {
        Err(serde::de::Error::custom(format!(
            "must be a number from 0 to {MAX_RULE_PARAM}, got {n}"
        )))
    }
}

/// One rule's settings struct: the common keys, the rule's numbers with their defaults, and
/// its [`RuleSettings`] implementation.
macro_rules! rule_settings {
    ($(#[$doc:meta])* $name:ident, mode = $mode:ident { $($(#[$fdoc:meta])* $field:ident = $default:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            pub mode: RuleMode,
            /// Pipelines the rule applies to (empty = all).
            pub pipelines: Vec<String>,
            /// Stages the rule applies to (empty = all).
            pub stages: Vec<String>,
            $($(#[$fdoc])* #[serde(deserialize_with = "rule_number")] pub $field: f64,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    mode: RuleMode::$mode,
                    pipelines: Vec::new(),
                    stages: Vec::new(),
                    $($field: $default,)*
                }
            }
        }

        impl RuleSettings for $name {
            fn mode(&self) -> RuleMode {
                self.mode
            }
            fn set_mode(&mut self, mode: RuleMode) {
                self.mode = mode;
            }
            fn pipelines(&self) -> &[String] {
                &self.pipelines
            }
            fn stages(&self) -> &[String] {
                &self.stages
            }
            fn params(&self) -> Vec<(&'static str, f64)> {
                vec![$((stringify!($field), self.$field)),*]
            }
        }
    };
}

// Every rule that writes (CRM changes or Telegram messages) starts in `shadow`: a first install
// with no `[tenants.rules.*]` sections must only report what it would do, never change a
// client's CRM before someone has reviewed the shadow output and switched a rule `on`.
// `client_without_deal` creates deals for every active client, so it stays `off` until asked.

rule_settings! {
    /// A call from a number not in the CRM: a lead for it, then a first task.
    UnknownCallerConfig, mode = Shadow {
        /// How far back calls are looked at.
        lookback_hours = 24.0,
        /// Deadline of the first task on the new lead.
        first_task_minutes = 15.0,
    }
}

rule_settings! {
    /// A call missing from the CRM timeline: registered there.
    CallNotInCrmConfig, mode = Shadow {
        lookback_hours = 24.0,
    }
}

rule_settings! {
    /// A lead left without a deal: a deal and a first task.
    LeadWithoutDealConfig, mode = Shadow {
        /// A lead this old with no deal and no owner action gets one.
        after_minutes = 15.0,
        /// Leads older than this are left alone.
        lookback_hours = 72.0,
    }
}

rule_settings! {
    /// An unanswered incoming call: a callback task within the SLA (business minutes).
    MissedCallConfig, mode = Shadow {
        sla_minutes = 15.0,
        lookback_hours = 24.0,
    }
}

rule_settings! {
    /// A new lead with no call or activity by its owner: yellow, then an alert to the head of sales.
    LeadReactionConfig, mode = Shadow {
        yellow_minutes = 15.0,
        alert_minutes = 30.0,
    }
}

rule_settings! {
    /// An open deal with no open future task: a "next step" task.
    DealWithoutTaskConfig, mode = Shadow {}
}

rule_settings! {
    /// Overdue tasks: a digest per head of sales, re-alerted and escalated.
    OverdueTasksConfig, mode = Shadow {
        realert_hours = 4.0,
        escalate_days = 3.0,
    }
}

rule_settings! {
    /// A client with no activity for N days (TOP clients sooner): flagged, listed, a task.
    NoActivityConfig, mode = Shadow {
        top_days = 30.0,
        other_days = 90.0,
    }
}

rule_settings! {
    /// A client with no order for N days: handed to the reactivation manager.
    DormantConfig, mode = Shadow {
        top_days = 60.0,
        other_days = 180.0,
        /// Days after the only order of a one-time buyer.
        one_time_days = 90.0,
    }
}

rule_settings! {
    /// An active client with no open deal: a repeat-order deal.
    ClientWithoutDealConfig, mode = Off {}
}

rule_settings! {
    /// A deal in the invoice stage for N days: a task to the manager.
    UnpaidInvoiceConfig, mode = Shadow {
        days = 2.0,
    }
}

rule_settings! {
    /// N outgoing attempts with no answer: the deal is closed and the client goes to marketing.
    ThreeUnansweredConfig, mode = Shadow {
        attempts = 3.0,
    }
}

rule_settings! {
    /// Personal Telegram messages announcing the tasks dozor created.
    ManagerNotifyConfig, mode = Shadow {}
}

/// Every rule's settings struct, by name; the names are listed in alphabetical order, the
/// order logs and summaries show them in.
macro_rules! rules_config {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// Every rule with the methodology's defaults (DESIGN.md). Omitted rules keep their
        /// defaults; a rule's omitted numbers keep theirs.
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct RulesConfig {
            $(pub $field: $ty,)*
        }

        impl RulesConfig {
            /// Every rule's name, in name order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Every rule's settings with its name, in name order.
            pub fn iter(&self) -> Vec<(&'static str, &dyn RuleSettings)> {
                vec![$((stringify!($field), &self.$field as &dyn RuleSettings)),*]
            }

            /// A rule's settings by name.
            pub fn get(&self, name: &str) -> Option<&dyn RuleSettings> {
                match name {
                    $(stringify!($field) => Some(&self.$field),)*
                    _ => None,
                }
            }

            /// A rule's settings by name, to change.
            pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut dyn RuleSettings> {
                match name {
                    $(stringify!($field) => Some(&mut self.$field),)*
                    _ => None,
                }
            }
        }
    };
}

rules_config! {
    call_not_in_crm: CallNotInCrmConfig,
    client_without_deal: ClientWithoutDealConfig,
    deal_without_task: DealWithoutTaskConfig,
    dormant: DormantConfig,
    lead_reaction: LeadReactionConfig,
    lead_without_deal: LeadWithoutDealConfig,
    manager_notify: ManagerNotifyConfig,
    missed_call: MissedCallConfig,
    no_activity: NoActivityConfig,
    overdue_tasks: OverdueTasksConfig,
    three_unanswered: ThreeUnansweredConfig,
    unknown_caller: UnknownCallerConfig,
    unpaid_invoice: UnpaidInvoiceConfig,
}

impl RulesConfig {
    /// The names of the rules in `mode`, in name order.
    pub fn in_mode(&self, mode: RuleMode) -> Vec<&'static str> {
        self.iter()
            .into_iter()
            .filter(|(_, r)| r.mode() == mode)
            .map(|(n, _)| n)
            .collect()
    }

    /// One line for the start-up log: which rules act, which only report, which are off, so
    /// nobody has to read the config to know whether dozor is writing to the CRM.
    pub(crate) fn summary(&self, tenant: &str, dry_run: bool) -> String {
        let list = |mode| match self.in_mode(mode) {
            v if v.is_empty() => "none".to_string(),
            v => v.join(", "),
        };
        let mut line = format!(
            "tenant {tenant}: rules on (write to the CRM and Telegram): {}; in shadow (report what they would do, write nothing): {}; off: {}",
            list(RuleMode::On),
            list(RuleMode::Shadow),
            list(RuleMode::Off)
        );
        if dry_run {
            line.push_str(" (--dry-run: every rule runs in shadow this time)");
        } else if !self.in_mode(RuleMode::Shadow).is_empty() {
            line.push_str(
                "; review the shadow output with `dozor audit --state shadow`, then set mode = \"on\" in [tenants.rules.NAME]",
            );
        }
        line
    }

    /// The message for an unknown key under `rules`: `rule` is the rule whose table holds
    /// `key`, or `None` when `key` is itself meant as a rule's name. It says what is allowed.
    pub(crate) fn unknown_key_message(rule: Option<&str>, key: &str) -> String {
        let defaults = RulesConfig::default();
        match rule.and_then(|r| defaults.get(r).map(|s| (r, s))) {
            None => format!(
                "unknown rule `{key}`; known rules: {}",
                RulesConfig::NAMES.join(", ")
            ),
            Some((name, settings)) => {
                let allowed: Vec<&str> = ["mode", "pipelines", "stages"]
                    .into_iter()
                    .chain(settings.params().into_iter().map(|(p, _)| p))
                    .collect();
                format!(
                    "rule `{name}` has no setting `{key}`; allowed: {}",
                    allowed.join(", ")
                )
            }
        }
    }
}
