//! The rules' settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// Settings every rule has.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub mode: RuleMode,
    /// Pipelines the rule applies to (empty = all).
    #[serde(default)]
    pub pipelines: Vec<String>,
    /// Stages the rule applies to (empty = all).
    #[serde(default)]
    pub stages: Vec<String>,
    /// Rule-specific numbers (minutes, hours, days), see the example config.
    #[serde(flatten)]
    pub params: BTreeMap<String, f64>,
}

impl RuleConfig {
    fn with(mode: RuleMode, params: &[(&str, f64)]) -> Self {
        RuleConfig {
            mode,
            pipelines: Vec::new(),
            stages: Vec::new(),
            params: params.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    /// A number of this rule, or the built-in default when unset.
    pub fn param(&self, name: &str) -> f64 {
        self.params.get(name).copied().unwrap_or(0.0)
    }
}

/// The largest number a rule setting takes.
pub const MAX_RULE_PARAM: f64 = 1_000_000.0;

/// Every rule with the methodology's defaults (DESIGN.md). Omitted rules keep their defaults;
/// a rule's omitted numbers keep theirs.
#[derive(Debug, Clone)]
pub struct RulesConfig(pub BTreeMap<String, RuleConfig>);

/// Rule names, default modes and default numbers.
///
/// Every rule that writes (CRM changes or Telegram messages) starts in `shadow`: a first install
/// with no `[tenants.rules.*]` sections must only report what it would do, never change a
/// client's CRM before someone has reviewed the shadow output and switched a rule `on`.
/// `client_without_deal` creates deals for every active client, so it stays `off` until asked.
pub fn rule_defaults() -> BTreeMap<String, RuleConfig> {
    use RuleMode::*;
    [
        (
            "unknown_caller",
            RuleConfig::with(
                Shadow,
                &[("lookback_hours", 24.0), ("first_task_minutes", 15.0)],
            ),
        ),
        (
            "call_not_in_crm",
            RuleConfig::with(Shadow, &[("lookback_hours", 24.0)]),
        ),
        (
            "lead_without_deal",
            RuleConfig::with(Shadow, &[("after_minutes", 15.0), ("lookback_hours", 72.0)]),
        ),
        (
            "missed_call",
            RuleConfig::with(Shadow, &[("sla_minutes", 15.0), ("lookback_hours", 24.0)]),
        ),
        (
            "lead_reaction",
            RuleConfig::with(Shadow, &[("yellow_minutes", 15.0), ("alert_minutes", 30.0)]),
        ),
        ("deal_without_task", RuleConfig::with(Shadow, &[])),
        (
            "overdue_tasks",
            RuleConfig::with(Shadow, &[("realert_hours", 4.0), ("escalate_days", 3.0)]),
        ),
        (
            "no_activity",
            RuleConfig::with(Shadow, &[("top_days", 30.0), ("other_days", 90.0)]),
        ),
        (
            "dormant",
            RuleConfig::with(
                Shadow,
                &[
                    ("top_days", 60.0),
                    ("other_days", 180.0),
                    ("one_time_days", 90.0),
                ],
            ),
        ),
        ("client_without_deal", RuleConfig::with(Off, &[])),
        ("unpaid_invoice", RuleConfig::with(Shadow, &[("days", 2.0)])),
        (
            "three_unanswered",
            RuleConfig::with(Shadow, &[("attempts", 3.0)]),
        ),
        ("manager_notify", RuleConfig::with(Shadow, &[])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl RulesConfig {
    /// The names of the rules in `mode`, in name order.
    pub fn in_mode(&self, mode: RuleMode) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, r)| r.mode == mode)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// One line for the start-up log: which rules act, which only report, which are off, so
    /// nobody has to read the config to know whether dozor is writing to the CRM.
    pub fn summary(&self, tenant: &str, dry_run: bool) -> String {
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
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig(rule_defaults())
    }
}

impl<'de> Deserialize<'de> for RulesConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // No deny_unknown_fields here: serde cannot combine it with flatten, so unknown keys land
        // in `params` and are refused below with the list of allowed ones.
        #[derive(Deserialize)]
        struct Partial {
            mode: Option<RuleMode>,
            #[serde(default)]
            pipelines: Vec<String>,
            #[serde(default)]
            stages: Vec<String>,
            #[serde(flatten)]
            params: BTreeMap<String, serde_json::Value>,
        }
        let given: BTreeMap<String, Partial> = BTreeMap::deserialize(d)?;
        let mut rules = rule_defaults();
        for (name, p) in given {
            let Some(rule) = rules.get_mut(&name) else {
                let known = rule_defaults().into_keys().collect::<Vec<_>>().join(", ");
                return Err(D::Error::custom(format!(
                    "unknown rule `{name}`; known rules: {known}"
                )));
            };
            for (k, v) in p.params {
                if !rule.params.contains_key(&k) {
                    let allowed: Vec<String> = rule.params.keys().cloned().collect();
                    return Err(D::Error::custom(format!(
                        "rule `{name}` has no setting `{k}`; allowed: mode, pipelines, stages{}{}",
                        if allowed.is_empty() { "" } else { ", " },
                        allowed.join(", ")
                    )));
                }
                let n = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
                match n {
                    // Bounded: minutes, hours, days and counts far beyond any real setting
                    // would overflow the time arithmetic the rules do with them.
                    Some(n) if n.is_finite() && (0.0..=MAX_RULE_PARAM).contains(&n) => {
                        rule.params.insert(k, n);
                    }
                    _ => {
                        return Err(D::Error::custom(format!(
                            "rule `{name}` setting `{k}` must be a number from 0 to {MAX_RULE_PARAM}, got {v}"
                        )));
                    }
                }
            }
            if let Some(m) = p.mode {
                rule.mode = m;
            }
            rule.pipelines = p.pipelines;
            rule.stages = p.stages;
        }
        Ok(RulesConfig(rules))
    }
}
