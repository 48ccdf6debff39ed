//! Figures for a period, computed from the mirror in the tenant's time zone.
//!
//! Definitions follow DESIGN.md: conversion = won / (won + lost) over deals closed in the period;
//! deal length = mean calendar days from creation to close of those deals; reaction time = first
//! owner contact after a lead was created, in business minutes.

mod abc_xyz;
mod deals;
mod funnel;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;

use crate::domain::calendar::BusinessCalendar;
use crate::domain::*;
pub(crate) use crate::store::Snapshot;
use crate::store::{DealSums, Discipline};

pub(crate) use abc_xyz::{AbcXyz, abc_xyz};
pub(crate) use deals::deal_sums;
pub(crate) use funnel::FunnelStep;
pub use funnel::funnel;

/// A half-open time range `[from, to)` with the local date it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub(crate) from: Ts,
    pub(crate) to: Ts,
    pub(crate) first_day: NaiveDate,
    pub(crate) last_day: NaiveDate,
}

impl Period {
    /// One local calendar day in `tz`.
    pub(crate) fn day(date: NaiveDate, tz: Tz) -> Period {
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
    pub(crate) fn previous(&self) -> Period {
        let len = self.last_day - self.first_day + Duration::days(1);
        let tz_from = self.from - len;
        Period {
            from: tz_from,
            to: self.from,
            first_day: self.first_day - len,
            last_day: self.last_day - len,
        }
    }

    pub(crate) fn contains(&self, t: Ts) -> bool {
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
    /// Of `missed`, those followed by an outgoing call to the same number.
    pub called_back: usize,
    pub(crate) talk_s: i64,
    pub(crate) leads: usize,
    pub won: usize,
    pub lost: usize,
    pub revenue: f64,
    /// Revenue against the monthly plan (`reports.plans`), month to date; None without a plan.
    pub plan_pct: Option<f64>,
    pub open_deals: usize,
    pub overdue_tasks: usize,
    pub deals_without_task: usize,
}

/// The figures of one period.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Figures {
    pub leads_new: usize,
    /// By the CRM's source field (CALL, WEB, ...; `OTHER` when empty).
    pub(crate) leads_by_source: BTreeMap<String, usize>,
    /// By advertising channel: `utm_source / utm_medium`, or `—` without UTM marks.
    pub leads_by_channel: BTreeMap<String, usize>,
    pub calls_in: usize,
    pub calls_out: usize,
    /// Incoming calls nobody answered.
    pub calls_missed: usize,
    /// Missed calls followed by an outgoing call to the same number.
    pub calls_called_back: usize,
    pub talk_s: i64,
    /// Leads of the period that were contacted, and reaction quantiles in business minutes.
    pub(crate) leads_reacted: usize,
    pub reaction_median_min: Option<f64>,
    pub(crate) reaction_p90_min: Option<f64>,
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
    pub(crate) idle_clients: Vec<String>,
    pub managers: Vec<ManagerFigures>,
}

fn e164(raw: &str) -> Option<String> {
    phone::normalize(raw).ok()
}

/// Gives every manager line whose user the mirror has no name for (the CRM's users could not
/// be read) a readable one, "сотрудник 17" rather than the bare id.
pub(crate) fn name_unnamed(f: &mut Figures, ru: bool) {
    for m in &mut f.managers {
        if m.name.trim().is_empty() || m.name == m.user_id {
            m.name = crate::domain::User::unnamed(&m.user_id, ru);
        }
    }
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

/// The channel of a lead: its UTM source and medium.
pub(crate) fn channel(l: &Lead) -> String {
    fn part(x: &Option<String>) -> Option<&str> {
        x.as_deref().map(str::trim).filter(|x| !x.is_empty())
    }
    match (part(&l.utm.source), part(&l.utm.medium)) {
        (Some(s), Some(m)) => format!("{s} / {m}"),
        (Some(s), None) => s.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => "—".to_string(),
    }
}

/// What the figures are computed with besides the records.
pub(crate) struct Context<'a> {
    pub(crate) cal: &'a BusinessCalendar,
    /// Telephony employee id → CRM user id (the tenant's `employees` map); employees not in it
    /// are matched to users by full name.
    pub(crate) employees: &'a BTreeMap<String, String>,
}

/// Computes the figures of `period` from a full mirror snapshot; state figures (open deals,
/// overdue) are as of `now`. The reports use [`period_figures`] and [`apply_discipline`] on the
/// records of their window instead, which is the same arithmetic.
pub(crate) fn compute(s: &Snapshot, period: &Period, now: Ts, cal: &BusinessCalendar) -> Figures {
    let none = BTreeMap::new();
    let ctx = Context {
        cal,
        employees: &none,
    };
    let deals = deal_sums(&s.deals, &[period.from, period.to], period.to);
    let mut f = period_figures(s, &deals, period, &ctx);
    apply_discipline(&mut f, &discipline_of(s, now), &s.users);
    f
}

/// The discipline state of a snapshot, counted like [`crate::store::Store::discipline`] counts
/// it in the database.
pub fn discipline_of(s: &Snapshot, now: Ts) -> Discipline {
    let mut out = Discipline::new();
    let mut has_future_task: HashSet<&str> = HashSet::new();
    for t in s.tasks.iter().filter(|t| !t.completed) {
        if t.is_overdue(now) {
            out.entry(t.responsible_id.clone().unwrap_or_default())
                .or_default()
                .overdue_tasks += 1;
        } else if let Some(e) = &t.entity
            && e.kind == EntityKind::Deal
        {
            has_future_task.insert(e.id.as_str());
        }
    }
    for d in s.deals.iter().filter(|d| d.semantics == Semantics::Open) {
        let e = out
            .entry(d.responsible_id.clone().unwrap_or_default())
            .or_default();
        e.open_deals += 1;
        if !has_future_task.contains(d.id.as_str()) {
            e.deals_without_task += 1;
        }
    }
    out
}

/// Adds the discipline state (totals and per manager) to the figures.
pub(crate) fn apply_discipline(f: &mut Figures, d: &Discipline, users: &[User]) {
    let names = User::names(users);
    let mut per: BTreeMap<String, ManagerFigures> = std::mem::take(&mut f.managers)
        .into_iter()
        .map(|m| (m.user_id.clone(), m))
        .collect();
    for (who, c) in d {
        f.open_deals += c.open_deals;
        f.deals_without_task += c.deals_without_task;
        f.overdue_tasks += c.overdue_tasks;
        if who.is_empty() {
            continue;
        }
        let mm = slot(&mut per, &names, who);
        mm.open_deals += c.open_deals;
        mm.deals_without_task += c.deals_without_task;
        mm.overdue_tasks += c.overdue_tasks;
    }
    f.managers = sorted(per);
}

fn sorted(per: BTreeMap<String, ManagerFigures>) -> Vec<ManagerFigures> {
    let mut managers: Vec<ManagerFigures> = per.into_values().collect();
    managers.sort_by(|a, b| b.revenue.total_cmp(&a.revenue).then(a.name.cmp(&b.name)));
    managers
}

/// The CRM user who took a call: the configured employee map, else a unique full-name match.
fn call_user<'a>(
    c: &Call,
    employees: &'a BTreeMap<String, String>,
    by_name: &HashMap<String, Option<&'a str>>,
) -> Option<&'a str> {
    if let Some(id) = &c.employee_id
        && let Some(user) = employees.get(id)
    {
        return Some(user.as_str());
    }
    let key = crate::matching::name_key(c.employee_name.as_deref()?);
    by_name.get(&key).copied().flatten()
}

/// The figures of `period` that are about the period: leads, calls, reaction, deals, revenue.
/// The snapshot needs the users, the leads created in the period, the calls from the period's
/// start to now (a callback may come after the period) and the activities on the period's
/// leads; `deals` the deals created or closed in the period, summed per local day.
// Long: one pass over calls, then leads and deals, filling the same per-manager table; the
// passes share the name and user look-ups built at the top.
pub(crate) fn period_figures(
    s: &Snapshot,
    deals: &DealSums,
    period: &Period,
    ctx: &Context,
) -> Figures {
    let mut f = Figures::default();
    let user_name = User::names(&s.users);
    let mut per: BTreeMap<String, ManagerFigures> = BTreeMap::new();

    // Full names that more than one user shares match nobody.
    let mut by_name: HashMap<String, Option<&str>> = HashMap::new();
    for u in &s.users {
        by_name
            .entry(crate::matching::name_key(&u.name))
            .and_modify(|v| *v = None)
            .or_insert(Some(u.id.as_str()));
    }
    let mut outgoing_after: HashMap<String, Vec<Ts>> = HashMap::new();
    for c in &s.calls {
        if c.direction == Direction::Out
            && c.started_at >= period.from
            && let Some(p) = e164(&c.client_phone)
        {
            outgoing_after.entry(p).or_default().push(c.started_at);
        }
    }
    for c in s.calls.iter().filter(|c| period.contains(c.started_at)) {
        let who = call_user(c, ctx.employees, &by_name);
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
            if called_back {
                mm.called_back += 1;
            }
        }
    }

    // Leads and reaction time: first outgoing call to the lead's number, or first activity on it.
    let mut first_activity: HashMap<&str, Ts> = HashMap::new();
    for a in &s.activities {
        if let Some(e) = &a.entity
            && e.kind == EntityKind::Lead
        {
            first_activity
                .entry(e.id.as_str())
                .and_modify(|t| *t = (*t).min(a.started_at))
                .or_insert(a.started_at);
        }
    }
    let mut reactions = Vec::new();
    for l in s.leads.iter().filter(|l| period.contains(l.created_at)) {
        f.leads_new += 1;
        *f.leads_by_source
            .entry(
                l.source
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "OTHER".into()),
            )
            .or_default() += 1;
        *f.leads_by_channel.entry(channel(l)).or_default() += 1;
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
        let activity = first_activity
            .get(l.id.as_str())
            .copied()
            .filter(|t| *t >= l.created_at);
        if let Some(first) = [first_call, activity].into_iter().flatten().min() {
            reactions.push(ctx.cal.business_minutes_between(l.created_at, first) as f64);
        }
    }
    reactions.sort_by(|a, b| a.total_cmp(b));
    f.leads_reacted = reactions.len();
    f.reaction_median_min = quantile(&reactions, 0.5);
    f.reaction_p90_min = quantile(&reactions, 0.9);

    // Deals.
    for (i, n) in deals.created.iter().enumerate() {
        if deals::in_period(deals, i, period) {
            f.deals_created += n;
        }
    }
    let mut length_days = 0i64;
    for c in deals
        .closed
        .iter()
        .filter(|c| deals::in_period(deals, c.bucket, period))
    {
        if c.won {
            f.deals_won += c.deals;
            f.revenue += c.amount;
        } else {
            f.deals_lost += c.deals;
        }
        if let Some(r) = &c.responsible_id {
            let mm = slot(&mut per, &user_name, r);
            if c.won {
                mm.won += c.deals;
                mm.revenue += c.amount;
            } else {
                mm.lost += c.deals;
            }
        }
        length_days += c.days;
    }
    let closed = f.deals_won + f.deals_lost;
    if closed > 0 {
        f.conversion_pct = Some(f.deals_won as f64 * 100.0 / closed as f64);
        f.avg_deal_days = Some(length_days as f64 / closed as f64);
    }
    if f.deals_won > 0 {
        f.avg_check = Some(f.revenue / f.deals_won as f64);
    }
    f.managers = sorted(per);
    f
}

/// Sets each manager's plan % from their revenue over the plan's month so far.
pub(crate) fn apply_plans(f: &mut Figures, month: &Figures, plans: &BTreeMap<String, f64>) {
    for m in &mut f.managers {
        if let Some(plan) = plans.get(&m.user_id).filter(|p| **p > 0.0) {
            let fact = month
                .managers
                .iter()
                .find(|x| x.user_id == m.user_id)
                .map_or(0.0, |x| x.revenue);
            m.plan_pct = Some(fact * 100.0 / plan);
        }
    }
    // A manager with a plan and nothing else in the period still gets a line.
    for (id, plan) in plans {
        if *plan > 0.0 && !f.managers.iter().any(|m| &m.user_id == id) {
            let fact = month
                .managers
                .iter()
                .find(|x| &x.user_id == id)
                .map_or(0.0, |x| x.revenue);
            let name = month
                .managers
                .iter()
                .find(|x| &x.user_id == id)
                .map_or_else(|| id.clone(), |x| x.name.clone());
            f.managers.push(ManagerFigures {
                user_id: id.clone(),
                name,
                plan_pct: Some(fact * 100.0 / plan),
                ..ManagerFigures::default()
            });
        }
    }
}

#[cfg(test)]
mod tests;
