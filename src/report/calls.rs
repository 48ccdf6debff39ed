//! Call reconciliation: for one day, the calls the telephony recorded against the calls the CRM
//! timeline shows, and the list of those that never reached the CRM.
//!
//! A telephony call counts as "in the CRM" when a CRM activity carries its call id (what dozor's
//! `call_not_in_crm` rule and most telephony integrations write), when an activity carries the
//! rule's ledger marker, or when a call activity with the same number started within
//! `TIME_SLACK_MINUTES` of it (an integration that registered the call without its id). Each
//! CRM activity accounts for one telephony call at most.

use std::collections::{HashMap, HashSet};

use chrono::{NaiveDate, TimeZone};
use serde::Serialize;

use crate::config::{RuleMode, RulesConfig};
use crate::domain::{ActivityKind, Call, Direction, Ts, phone};
use crate::matching::PhoneBook;
use crate::store::{Snapshot, Store, StoreError};

/// How far apart a telephony call and a CRM call activity with the same number may start and
/// still be the same call.
pub(crate) const TIME_SLACK_MINUTES: i64 = 5;

/// How a telephony call was found in the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FoundBy {
    CallId,
    Marker,
    TimeAndPhone,
}

/// One day's reconciliation.
#[derive(Debug, Clone, Serialize)]
pub struct CallsReport {
    pub(crate) tenant: String,
    pub(crate) date: NaiveDate,
    /// The tenant's time zone: the day's bounds and the times shown.
    pub(crate) timezone: String,
    /// Calls the telephony recorded that day (tenant's time zone).
    pub telephony_calls: usize,
    /// Call activities in the CRM timeline that day.
    pub(crate) crm_calls: usize,
    /// Telephony calls found in the CRM, by how they were found.
    pub matched_by_call_id: usize,
    pub(crate) matched_by_marker: usize,
    pub matched_by_time_and_phone: usize,
    /// The mode of the `call_not_in_crm` rule: `on` registers the missing calls itself.
    pub rule_mode: String,
    /// Telephony calls the CRM does not show, oldest first.
    pub missing: Vec<MissingCall>,
}

/// A telephony call the CRM timeline does not show.
#[derive(Debug, Clone, Serialize)]
pub struct MissingCall {
    pub id: String,
    pub(crate) provider: String,
    pub(crate) started_at: Ts,
    pub(crate) direction: Direction,
    /// The number as the provider sent it.
    pub(crate) phone: String,
    pub(crate) answered: bool,
    pub(crate) talk_s: i64,
    pub(crate) employee: Option<String>,
    /// The number belongs to a lead, contact or company in the mirror, so `call_not_in_crm` can
    /// register the call; otherwise `unknown_caller` first creates a lead for it.
    pub known_number: bool,
    /// The ledger state of the rule's action for this call (`done`, `pending`, `failed`, ...),
    /// `None` when the rule has not proposed it.
    pub(crate) action: Option<String>,
    /// What happens to it, for humans.
    pub fix: String,
}

impl CallsReport {
    pub fn matched(&self) -> usize {
        self.matched_by_call_id + self.matched_by_marker + self.matched_by_time_and_phone
    }

    /// The report for the terminal.
    pub fn plain(&self) -> String {
        let mut out = format!(
            "{}: calls on {}\ntelephony: {}  in CRM: {} (by call id {}, by marker {}, by time and number {})  CRM call activities: {}\nnever reached the CRM: {}  (call_not_in_crm: {})\n",
            self.tenant,
            self.date,
            self.telephony_calls,
            self.matched(),
            self.matched_by_call_id,
            self.matched_by_marker,
            self.matched_by_time_and_phone,
            self.crm_calls,
            self.missing.len(),
            self.rule_mode,
        );
        for m in &self.missing {
            let at = match self.timezone.parse::<chrono_tz::Tz>() {
                Ok(tz) => m
                    .started_at
                    .with_timezone(&tz)
                    .format("%d.%m.%Y %H:%M:%S")
                    .to_string(),
                Err(_) => m.started_at.format("%d.%m.%Y %H:%M:%S UTC").to_string(),
            };
            out.push_str(&format!(
                "  {at} {} #{} {} {} {}{} — {}\n",
                m.provider,
                m.id,
                match m.direction {
                    Direction::In => "in",
                    Direction::Out => "out",
                },
                if m.phone.is_empty() { "-" } else { &m.phone },
                if m.answered {
                    format!("{} s", m.talk_s)
                } else {
                    "missed".into()
                },
                m.employee
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                m.fix
            ));
        }
        out
    }
}

/// The key `call_not_in_crm` gives its action for `call` (see `rules::call_not_in_crm`).
pub(crate) fn rule_key(tenant: &str, call: &Call) -> String {
    format!(
        "call_not_in_crm:{tenant}:{}:{}",
        call.provider.as_str(),
        call.id
    )
}

/// Reconciles the calls of `date` (in `tz`) in the mirror. `actions` maps ledger keys of the
/// `call_not_in_crm` rule to their state.
// Long: the matching passes (by id, by marker, by time and number) must run in order over the same
// working sets.
pub(crate) fn reconcile(
    tenant: &str,
    m: &Snapshot,
    date: NaiveDate,
    tz: chrono_tz::Tz,
    rules: &RulesConfig,
    actions: &HashMap<String, String>,
) -> CallsReport {
    let (from, till) = day_bounds(date, tz);
    let in_day = |t: &Ts| *t >= from && *t < till;
    let slack = chrono::Duration::minutes(TIME_SLACK_MINUTES);
    let mut calls: Vec<&Call> = m.calls.iter().filter(|c| in_day(&c.started_at)).collect();
    calls.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
    // CRM call activities near the day (the slack reaches over midnight).
    let acts: Vec<(usize, &crate::domain::Activity)> = m
        .activities
        .iter()
        .enumerate()
        .filter(|(_, a)| a.kind == ActivityKind::Call)
        .filter(|(_, a)| a.started_at >= from - slack && a.started_at < till + slack)
        .collect();
    let crm_calls = acts.iter().filter(|(_, a)| in_day(&a.started_at)).count();
    let by_id: HashMap<&str, usize> = m
        .activities
        .iter()
        .enumerate()
        .filter_map(|(i, a)| Some((a.external_id.as_deref()?, i)))
        .collect();
    let mut used: HashSet<usize> = HashSet::new();
    let mut found: HashMap<&str, FoundBy> = HashMap::new();
    // Pass 1: call id and marker (exact), so a fuzzy match never steals an exact one.
    for c in &calls {
        if let Some(&i) = by_id.get(c.id.as_str()) {
            used.insert(i);
            found.insert(&c.id, FoundBy::CallId);
            continue;
        }
        let marker = crate::ledger::marker(&rule_key(tenant, c));
        if let Some(i) = m
            .activities
            .iter()
            .position(|a| a.subject.contains(&marker))
        {
            used.insert(i);
            found.insert(&c.id, FoundBy::Marker);
        }
    }
    // Pass 2: same number, close in time, the nearest unused activity.
    for c in &calls {
        if found.contains_key(c.id.as_str()) {
            continue;
        }
        let Ok(p) = phone::normalize(&c.client_phone) else {
            continue;
        };
        let best = acts
            .iter()
            .filter(|(i, a)| !used.contains(i) && a.external_id.is_none())
            .filter(|(_, a)| {
                a.phone
                    .as_deref()
                    .and_then(|x| phone::normalize(x).ok())
                    .is_some_and(|x| x == p)
            })
            .filter(|(_, a)| (a.started_at - c.started_at).abs() <= slack)
            .min_by_key(|(_, a)| (a.started_at - c.started_at).abs());
        if let Some((i, _)) = best {
            used.insert(*i);
            found.insert(&c.id, FoundBy::TimeAndPhone);
        }
    }
    let count = |by: FoundBy| found.values().filter(|f| **f == by).count();
    let mode = rules.call_not_in_crm.mode;
    let book = PhoneBook::new(m);
    let missing = calls
        .iter()
        .filter(|c| !found.contains_key(c.id.as_str()))
        .map(|c| {
            let known = phone::normalize(&c.client_phone)
                .ok()
                .is_some_and(|p| !book.find(&p).is_empty());
            let action = actions.get(&rule_key(tenant, c)).cloned();
            let fix = match (mode, known, action.as_deref()) {
                (_, _, Some("done")) => {
                    "registered by call_not_in_crm; visible after the next sync".to_string()
                }
                (_, _, Some(state)) => format!("call_not_in_crm action {state}"),
                (RuleMode::On, true, None) => {
                    "call_not_in_crm registers it in the next cycle".into()
                }
                (RuleMode::On, false, None) if c.client_phone.trim().is_empty() => {
                    "no number: cannot be attached to a client".into()
                }
                (RuleMode::On, false, None) => {
                    "unknown number: unknown_caller creates a lead, then the call is registered"
                        .into()
                }
                (RuleMode::Shadow, _, None) => {
                    "call_not_in_crm is in shadow mode: not registered until its mode is \"on\""
                        .into()
                }
                (RuleMode::Off, _, None) => {
                    "call_not_in_crm is off: register it by hand or turn the rule on".into()
                }
            };
            MissingCall {
                id: c.id.clone(),
                provider: c.provider.as_str().to_string(),
                started_at: c.started_at,
                direction: c.direction,
                phone: c.client_phone.clone(),
                answered: c.answered,
                talk_s: c.talk_s,
                employee: c.employee_name.clone().or_else(|| c.employee_id.clone()),
                known_number: known,
                action,
                fix,
            }
        })
        .collect();
    CallsReport {
        tenant: tenant.to_string(),
        date,
        timezone: tz.name().to_string(),
        telephony_calls: calls.len(),
        crm_calls,
        matched_by_call_id: count(FoundBy::CallId),
        matched_by_marker: count(FoundBy::Marker),
        matched_by_time_and_phone: count(FoundBy::TimeAndPhone),
        rule_mode: match mode {
            RuleMode::On => "on",
            RuleMode::Shadow => "shadow",
            RuleMode::Off => "off",
        }
        .to_string(),
        missing,
    }
}

/// Builds the report of `date` for `tenant` from the store.
pub async fn build(
    store: &Store,
    t: &crate::config::TenantConfig,
    date: NaiveDate,
) -> Result<CallsReport, StoreError> {
    let tz = t.business_calendar.tz;
    let m = Snapshot::load(store, &t.id).await?;
    let (from, _) = day_bounds(date, tz);
    let actions: HashMap<String, String> = store
        .actions_since(&t.id, from - chrono::Duration::days(2), 1_000_000)
        .await?
        .into_iter()
        .filter(|r| r.rule == "call_not_in_crm")
        .map(|r| (r.key, r.state))
        .collect();
    Ok(reconcile(&t.id, &m, date, tz, &t.rules, &actions))
}

/// `[start, end)` of a local day in UTC.
fn day_bounds(date: NaiveDate, tz: chrono_tz::Tz) -> (Ts, Ts) {
    let at = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
            .earliest()
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(|| chrono::Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap()))
    };
    (at(date), at(date.succ_opt().unwrap_or(date)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Activity, Contact, TelephonyKind, Utm};
    use chrono::{TimeZone, Utc};

    fn call(id: &str, at: Ts, phone: &str) -> Call {
        Call {
            id: id.into(),
            provider: TelephonyKind::Comagic,
            started_at: at,
            direction: Direction::In,
            answered: true,
            talk_s: 30,
            wait_s: 2,
            client_phone: phone.into(),
            virtual_number: None,
            employee_id: None,
            employee_name: Some("Анна".into()),
            recording_url: None,
            source: None,
            utm: Utm::default(),
        }
    }

    fn activity(id: &str, at: Ts, phone: &str, external: Option<&str>, subject: &str) -> Activity {
        Activity {
            id: id.into(),
            kind: ActivityKind::Call,
            direction: Some(Direction::In),
            subject: subject.into(),
            entity: None,
            responsible_id: None,
            phone: Some(phone.into()),
            duration_s: Some(30),
            completed: true,
            external_id: external.map(String::from),
            started_at: at,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    // Long: one scenario whose fixture is shared by every matching pass it checks.
    fn calls_are_found_by_id_marker_and_time_and_number() {
        // 10:00 MSK on 2026-11-23.
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 7, 0, 0).unwrap();
        let min = chrono::Duration::minutes;
        let m = Snapshot {
            contacts: vec![Contact {
                id: "7".into(),
                name: "Иван".into(),
                phones: vec!["8 (999) 111-11-11".into()],
                emails: vec![],
                company_id: None,
                responsible_id: None,
                tags: vec![],
                created_at: t,
                updated_at: t,
            }],
            calls: vec![
                call("a", t, "79991111111"),
                call("b", t + min(1), "79992222222"),
                call("c", t + min(2), "+7 999 333-33-33"),
                // Same number as "c", but no activity is left for it.
                call("d", t + min(3), "79993333333"),
                call("e", t + min(4), "79991111111"),
                call("f", t + min(5), ""),
                // Another day in Moscow (00:30 on the 24th).
                call(
                    "g",
                    Utc.with_ymd_and_hms(2026, 11, 23, 21, 30, 0).unwrap(),
                    "79991111111",
                ),
            ],
            activities: vec![
                activity("1", t + min(30), "79991111111", Some("a"), "Звонок"),
                activity(
                    "2",
                    t + min(1),
                    "79992222222",
                    None,
                    "Звонок [dozor:call_not_in_crm:t:comagic:b]",
                ),
                activity("3", t + min(3), "8 999 333 33 33", None, "Входящий"),
                // Too far from "e" in time.
                activity("4", t + min(20), "79991111111", None, "Входящий"),
            ],
            ..Snapshot::default()
        };
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let mut rules = RulesConfig::default();
        for name in RulesConfig::NAMES {
            if let Some(r) = rules.get_mut(name) {
                r.set_mode(crate::config::RuleMode::On);
            }
        }
        let actions: HashMap<String, String> = [(
            "call_not_in_crm:t:comagic:e".to_string(),
            "failed".to_string(),
        )]
        .into();
        let r = reconcile("t", &m, day, chrono_tz::Europe::Moscow, &rules, &actions);
        assert_eq!(r.telephony_calls, 6);
        assert_eq!(r.crm_calls, 4);
        assert_eq!(
            (
                r.matched_by_call_id,
                r.matched_by_marker,
                r.matched_by_time_and_phone
            ),
            (1, 1, 1)
        );
        let missing: Vec<&str> = r.missing.iter().map(|m| m.id.as_str()).collect();
        // "c" took activity 3 (one minute away) and "d" gets nothing: one activity, one call.
        assert_eq!(missing, ["d", "e", "f"]);
        assert_eq!(r.rule_mode, "on");
        let e = &r.missing[1];
        assert!(e.known_number);
        assert_eq!(e.action.as_deref(), Some("failed"));
        assert!(
            r.missing[0].fix.contains("unknown_caller"),
            "{:?}",
            r.missing[0]
        );
        assert!(r.missing[2].fix.contains("no number"), "{:?}", r.missing[2]);
        let text = r.plain();
        assert!(text.contains("never reached the CRM: 3"), "{text}");
        assert!(text.contains("#e"), "{text}");
    }
}
