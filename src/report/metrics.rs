//! Figures for a period, computed from the mirror in the tenant's time zone.
//!
//! Definitions follow DESIGN.md: conversion = won / (won + lost) over deals closed in the period;
//! deal length = mean calendar days from creation to close of those deals; reaction time = first
//! owner contact after a lead was created, in business minutes.

use std::collections::{BTreeMap, HashMap};

use chrono::{Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;

use crate::domain::calendar::BusinessCalendar;
use crate::domain::*;
pub use crate::store::Snapshot;

/// A half-open time range `[from, to)` with the local date it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub from: Ts,
    pub to: Ts,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
}

impl Period {
    /// One local calendar day in `tz`.
    pub fn day(date: NaiveDate, tz: Tz) -> Period {
        Self::days(date, date, tz)
    }

    /// Local days `first..=last` in `tz`.
    pub fn days(first: NaiveDate, last: NaiveDate, tz: Tz) -> Period {
        let start = |d: NaiveDate| {
            tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
                .earliest()
                .expect("midnight exists")
                .with_timezone(&chrono::Utc)
        };
        Period {
            from: start(first),
            to: start(last + Duration::days(1)),
            first_day: first,
            last_day: last,
        }
    }

    /// The period of the same length just before this one.
    pub fn previous(&self) -> Period {
        let len = self.last_day - self.first_day + Duration::days(1);
        let tz_from = self.from - len;
        Period {
            from: tz_from,
            to: self.from,
            first_day: self.first_day - len,
            last_day: self.last_day - len,
        }
    }

    pub fn contains(&self, t: Ts) -> bool {
        self.from <= t && t < self.to
    }
}

/// One manager's line in the report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ManagerFigures {
    pub user_id: String,
    pub name: String,
    pub calls_in: usize,
    pub calls_out: usize,
    pub missed: usize,
    pub talk_s: i64,
    pub leads: usize,
    pub won: usize,
    pub revenue: f64,
    pub overdue_tasks: usize,
    pub deals_without_task: usize,
}

/// The figures of one period.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Figures {
    pub leads_new: usize,
    pub leads_by_source: BTreeMap<String, usize>,
    pub calls_in: usize,
    pub calls_out: usize,
    /// Incoming calls nobody answered.
    pub calls_missed: usize,
    /// Missed calls followed by an outgoing call to the same number.
    pub calls_called_back: usize,
    pub talk_s: i64,
    pub reaction_median_min: Option<f64>,
    pub reaction_p90_min: Option<f64>,
    pub deals_created: usize,
    pub deals_won: usize,
    pub deals_lost: usize,
    pub revenue: f64,
    pub avg_check: Option<f64>,
    pub conversion_pct: Option<f64>,
    pub avg_deal_days: Option<f64>,
    /// State at the report's moment, not over the period.
    pub open_deals: usize,
    pub deals_without_task: usize,
    pub overdue_tasks: usize,
    /// New leads nobody has contacted: waiting past the yellow / red (alert) threshold.
    pub leads_yellow: usize,
    pub leads_red: usize,
    /// Clients dozor flagged for having no activity (names, for the list in the report).
    pub idle_clients: Vec<String>,
    pub managers: Vec<ManagerFigures>,
}

fn e164(raw: &str) -> Option<String> {
    phone::normalize(raw).ok()
}

/// The figures line of manager `id`, created on first use.
fn slot<'a>(
    per: &'a mut BTreeMap<String, ManagerFigures>,
    names: &HashMap<&str, &str>,
    id: &str,
) -> &'a mut ManagerFigures {
    per.entry(id.to_string()).or_insert_with(|| ManagerFigures {
        user_id: id.to_string(),
        name: names.get(id).copied().unwrap_or(id).to_string(),
        ..ManagerFigures::default()
    })
}

/// `q`-quantile (0..=1) of sorted values, nearest-rank.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Computes the figures of `period`; state figures (open deals, overdue) are as of `now`.
pub fn compute(s: &Snapshot, period: &Period, now: Ts, cal: &BusinessCalendar) -> Figures {
    let mut f = Figures::default();
    let user_name: HashMap<&str, &str> = s
        .users
        .iter()
        .map(|u| (u.id.as_str(), u.name.as_str()))
        .collect();
    let mut per: BTreeMap<String, ManagerFigures> = BTreeMap::new();

    // Calls, attributed to managers by employee name.
    let by_name: HashMap<String, &str> = s
        .users
        .iter()
        .map(|u| (u.name.to_lowercase(), u.id.as_str()))
        .collect();
    let mut outgoing_after: HashMap<String, Vec<Ts>> = HashMap::new();
    for c in &s.calls {
        if c.direction == Direction::Out
            && let Some(p) = e164(&c.client_phone)
        {
            outgoing_after.entry(p).or_default().push(c.started_at);
        }
    }
    for c in s.calls.iter().filter(|c| period.contains(c.started_at)) {
        let who = c
            .employee_name
            .as_ref()
            .and_then(|n| by_name.get(&n.to_lowercase()).copied());
        match c.direction {
            Direction::In => f.calls_in += 1,
            Direction::Out => f.calls_out += 1,
        }
        f.talk_s += c.talk_s;
        let missed = c.direction == Direction::In && !c.answered;
        let called_back = missed
            && e164(&c.client_phone).is_some_and(|p| {
                outgoing_after
                    .get(&p)
                    .is_some_and(|ts| ts.iter().any(|t| *t > c.started_at))
            });
        if missed {
            f.calls_missed += 1;
        }
        if called_back {
            f.calls_called_back += 1;
        }
        if let Some(id) = who {
            let mm = slot(&mut per, &user_name, id);
            match c.direction {
                Direction::In => mm.calls_in += 1,
                Direction::Out => mm.calls_out += 1,
            }
            mm.talk_s += c.talk_s;
            if missed {
                mm.missed += 1;
            }
        }
    }

    // Leads and reaction time: first outgoing call to the lead's number, or first activity on it.
    let mut reactions = Vec::new();
    for l in s.leads.iter().filter(|l| period.contains(l.created_at)) {
        f.leads_new += 1;
        *f.leads_by_source
            .entry(l.source.clone().unwrap_or_else(|| "OTHER".into()))
            .or_default() += 1;
        if let Some(r) = &l.responsible_id {
            slot(&mut per, &user_name, r).leads += 1;
        }
        let first_call = l
            .phones
            .iter()
            .filter_map(|p| e164(p))
            .filter_map(|p| outgoing_after.get(&p))
            .flatten()
            .filter(|t| **t >= l.created_at)
            .min()
            .copied();
        let first_activity = s
            .activities
            .iter()
            .filter(|a| {
                a.entity
                    .as_ref()
                    .is_some_and(|e| e.kind == EntityKind::Lead && e.id == l.id)
            })
            .map(|a| a.started_at)
            .filter(|t| *t >= l.created_at)
            .min();
        if let Some(first) = [first_call, first_activity].into_iter().flatten().min() {
            reactions.push(cal.business_minutes_between(l.created_at, first) as f64);
        }
    }
    reactions.sort_by(|a, b| a.total_cmp(b));
    f.reaction_median_min = quantile(&reactions, 0.5);
    f.reaction_p90_min = quantile(&reactions, 0.9);

    // Deals.
    let mut length_days = 0i64;
    for d in &s.deals {
        if period.contains(d.created_at) {
            f.deals_created += 1;
        }
        let Some(closed) = d.closed_at.filter(|t| period.contains(*t)) else {
            continue;
        };
        match d.semantics {
            Semantics::Won => {
                f.deals_won += 1;
                f.revenue += d.amount;
                if let Some(r) = &d.responsible_id {
                    let mm = slot(&mut per, &user_name, r);
                    mm.won += 1;
                    mm.revenue += d.amount;
                }
            }
            Semantics::Lost => f.deals_lost += 1,
            Semantics::Open => continue,
        }
        length_days += (closed.date_naive() - d.created_at.date_naive()).num_days();
    }
    let closed = f.deals_won + f.deals_lost;
    if closed > 0 {
        f.conversion_pct = Some(f.deals_won as f64 * 100.0 / closed as f64);
        f.avg_deal_days = Some(length_days as f64 / closed as f64);
    }
    if f.deals_won > 0 {
        f.avg_check = Some(f.revenue / f.deals_won as f64);
    }

    // Discipline state as of now.
    let mut has_future_task: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for t in &s.tasks {
        if t.completed {
            continue;
        }
        if t.is_overdue(now) {
            f.overdue_tasks += 1;
            if let Some(r) = &t.responsible_id {
                slot(&mut per, &user_name, r).overdue_tasks += 1;
            }
        } else if let Some(e) = &t.entity
            && e.kind == EntityKind::Deal
        {
            has_future_task.insert(e.id.as_str());
        }
    }
    for d in s.deals.iter().filter(|d| d.semantics == Semantics::Open) {
        f.open_deals += 1;
        if !has_future_task.contains(d.id.as_str()) {
            f.deals_without_task += 1;
            if let Some(r) = &d.responsible_id {
                slot(&mut per, &user_name, r).deals_without_task += 1;
            }
        }
    }
    let mut managers: Vec<ManagerFigures> = per.into_values().collect();
    managers.sort_by(|a, b| b.revenue.total_cmp(&a.revenue).then(a.name.cmp(&b.name)));
    f.managers = managers;
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn deal(id: &str, sem: Semantics, amount: f64, created: Ts, closed: Option<Ts>) -> Deal {
        Deal {
            id: id.into(),
            title: id.into(),
            pipeline_id: "0".into(),
            stage_id: "S".into(),
            semantics: sem,
            amount,
            currency: "RUB".into(),
            responsible_id: Some("1".into()),
            contact_id: None,
            company_id: None,
            lead_id: None,
            source: None,
            tags: vec![],
            created_at: created,
            updated_at: created,
            closed_at: closed,
        }
    }

    #[test]
    fn conversion_and_deal_length_by_hand() {
        let tz = chrono_tz::Europe::Moscow;
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let p = Period::day(day, tz);
        let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap();
        let s = Snapshot {
            users: vec![User {
                id: "1".into(),
                name: "Анна".into(),
                email: None,
                extension: None,
                active: true,
            }],
            deals: vec![
                // Won on the day after 3 days: counts.
                deal("a", Semantics::Won, 1000.0, at(20, 10), Some(at(23, 10))),
                // Won on the day after 10 days: counts.
                deal("b", Semantics::Won, 3000.0, at(13, 10), Some(at(23, 12))),
                // Lost on the day after 1 day: counts.
                deal("c", Semantics::Lost, 500.0, at(22, 10), Some(at(23, 9))),
                // Won the day before: does not count.
                deal("d", Semantics::Won, 9999.0, at(1, 10), Some(at(22, 10))),
                // Open, no task.
                deal("e", Semantics::Open, 10.0, at(23, 10), None),
            ],
            ..Snapshot::default()
        };
        let f = compute(&s, &p, at(24, 6), &BusinessCalendar::moscow_default());
        assert_eq!(f.deals_won, 2);
        assert_eq!(f.deals_lost, 1);
        assert_eq!(f.revenue, 4000.0);
        assert_eq!(
            f.conversion_pct.map(|x| (x * 100.0).round() / 100.0),
            Some(66.67)
        );
        assert_eq!(f.avg_deal_days, Some((3.0 + 10.0 + 1.0) / 3.0));
        assert_eq!(f.avg_check, Some(2000.0));
        assert_eq!(f.deals_created, 1);
        assert_eq!(f.deals_without_task, 1);
        assert_eq!(f.managers[0].won, 2);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(quantile(&v, 0.5), Some(5.0));
        assert_eq!(quantile(&v, 0.9), Some(9.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
