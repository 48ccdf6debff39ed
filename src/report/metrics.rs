//! Figures for a period, computed from the mirror in the tenant's time zone.
//!
//! Definitions follow DESIGN.md: conversion = won / (won + lost) over deals closed in the period;
//! deal length = mean calendar days from creation to close of those deals; reaction time = first
//! owner contact after a lead was created, in business minutes.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{Datelike, Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;

use crate::domain::abc;
use crate::domain::calendar::BusinessCalendar;
use crate::domain::*;
pub use crate::store::Snapshot;
use crate::store::{Discipline, WonRow};

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
    /// Of `missed`, those followed by an outgoing call to the same number.
    pub called_back: usize,
    pub talk_s: i64,
    pub leads: usize,
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
    pub leads_by_source: BTreeMap<String, usize>,
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
    pub leads_reacted: usize,
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

/// Gives every manager line whose user the mirror has no name for (the CRM's users could not
/// be read) a readable one, "сотрудник 17" rather than the bare id.
pub fn name_unnamed(f: &mut Figures, ru: bool) {
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
pub fn channel(l: &Lead) -> String {
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
pub struct Context<'a> {
    pub now: Ts,
    pub cal: &'a BusinessCalendar,
    /// Telephony employee id → CRM user id (the tenant's `employees` map); employees not in it
    /// are matched to users by full name.
    pub employees: &'a BTreeMap<String, String>,
}

/// Computes the figures of `period` from a full mirror snapshot; state figures (open deals,
/// overdue) are as of `now`. The reports use [`period_figures`] and [`apply_discipline`] on the
/// records of their window instead, which is the same arithmetic.
pub fn compute(s: &Snapshot, period: &Period, now: Ts, cal: &BusinessCalendar) -> Figures {
    let none = BTreeMap::new();
    let ctx = Context {
        now,
        cal,
        employees: &none,
    };
    let mut f = period_figures(s, period, &ctx);
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
pub fn apply_discipline(f: &mut Figures, d: &Discipline, users: &[User]) {
    let names: HashMap<&str, &str> = users
        .iter()
        .map(|u| (u.id.as_str(), u.name.as_str()))
        .collect();
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
/// The snapshot needs the users, the leads and deals created or closed in the period, the calls
/// from the period's start to now (a callback may come after the period) and the activities on
/// the period's leads.
pub fn period_figures(s: &Snapshot, period: &Period, ctx: &Context) -> Figures {
    let mut f = Figures::default();
    let user_name: HashMap<&str, &str> = s
        .users
        .iter()
        .map(|u| (u.id.as_str(), u.name.as_str()))
        .collect();
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
            Semantics::Lost => {
                f.deals_lost += 1;
                if let Some(r) = &d.responsible_id {
                    slot(&mut per, &user_name, r).lost += 1;
                }
            }
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
    f.managers = sorted(per);
    f
}

/// Sets each manager's plan % from their revenue over the plan's month so far.
pub fn apply_plans(f: &mut Figures, month: &Figures, plans: &BTreeMap<String, f64>) {
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

/// One step of a pipeline's funnel.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunnelStep {
    pub stage: String,
    /// Deals of the period that reached this stage (are in it, in a later one, or won).
    pub reached: usize,
    /// Share of the previous step's deals that reached this one, %.
    pub from_previous_pct: Option<f64>,
}

/// The funnel of the deals created in `period` in their most used pipeline: (pipeline id, steps).
///
/// The mirror holds each deal's current stage, not its history, so "reached" means "is in this
/// stage or a later one, or won"; a lost deal counts at the first stage only (where it was lost
/// is not known).
pub fn funnel(s: &Snapshot, period: &Period) -> Option<(String, Vec<FunnelStep>)> {
    let deals: Vec<&Deal> = s
        .deals
        .iter()
        .filter(|d| period.contains(d.created_at))
        .collect();
    let mut per_pipeline: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &deals {
        *per_pipeline.entry(d.pipeline_id.as_str()).or_default() += 1;
    }
    let (pipeline, _) = per_pipeline
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
    let mut stages: Vec<&Stage> = s
        .stages
        .iter()
        .filter(|st| st.pipeline_id == *pipeline && st.semantics == Semantics::Open)
        .collect();
    stages.sort_by_key(|st| st.sort);
    if stages.is_empty() {
        return None;
    }
    let rank: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, st)| (st.id.as_str(), i))
        .collect();
    let mut reached = vec![0usize; stages.len() + 1];
    for d in deals.iter().filter(|d| d.pipeline_id == *pipeline) {
        let upto = match d.semantics {
            Semantics::Won => stages.len(),
            Semantics::Lost => 0,
            Semantics::Open => rank.get(d.stage_id.as_str()).copied().unwrap_or(0),
        };
        for r in reached.iter_mut().take(upto + 1) {
            *r += 1;
        }
    }
    let won_label = s
        .stages
        .iter()
        .find(|st| st.pipeline_id == *pipeline && st.semantics == Semantics::Won)
        .map_or_else(|| "WON".to_string(), |st| st.name.clone());
    let names: Vec<String> = stages
        .iter()
        .map(|st| st.name.clone())
        .chain(std::iter::once(won_label))
        .collect();
    let steps = names
        .into_iter()
        .zip(reached.iter())
        .enumerate()
        .map(|(i, (stage, n))| FunnelStep {
            stage,
            reached: *n,
            from_previous_pct: (i > 0 && reached[i - 1] > 0)
                .then(|| *n as f64 * 100.0 / reached[i - 1] as f64),
        })
        .collect();
    Some((pipeline.to_string(), steps))
}

/// A client's ABC/XYZ class over the analysis months.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClientClass {
    pub client: String,
    pub revenue: f64,
    pub abc: abc::Abc,
    pub xyz: abc::Xyz,
}

/// The 3×3 ABC/XYZ matrix: counts and revenue per cell, plus each client's class.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AbcXyz {
    /// `[abc][xyz]`: clients.
    pub counts: [[usize; 3]; 3],
    /// `[abc][xyz]`: revenue.
    pub revenue: [[f64; 3]; 3],
    pub clients: Vec<ClientClass>,
    pub months: usize,
}

/// ABC by revenue share (80/15/5) and XYZ by the coefficient of variation of monthly revenue
/// (≤ 10 % / ≤ 25 % / more) over the local months `months` (oldest first), from won deals.
pub fn abc_xyz(won: &[WonRow], months: &[NaiveDate], tz: Tz) -> AbcXyz {
    let index: HashMap<(i32, u32), usize> = months
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.year(), m.month()), i))
        .collect();
    let mut monthly: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for w in won {
        let local = w.closed_at.with_timezone(&tz);
        let Some(i) = index.get(&(local.year(), local.month())) else {
            continue;
        };
        monthly
            .entry(w.client.as_str())
            .or_insert_with(|| vec![0.0; months.len()])[*i] += w.amount;
    }
    let totals: Vec<(String, f64)> = monthly
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().sum()))
        .collect();
    let classes = abc::abc(&totals);
    let mut out = AbcXyz {
        months: months.len(),
        ..AbcXyz::default()
    };
    for (client, revenue) in totals {
        let a = classes[&client];
        let x = abc::xyz(&monthly[client.as_str()]).unwrap_or(abc::Xyz::Z);
        out.counts[a as usize][x as usize] += 1;
        out.revenue[a as usize][x as usize] += revenue;
        out.clients.push(ClientClass {
            client,
            revenue,
            abc: a,
            xyz: x,
        });
    }
    out.clients.sort_by(|a, b| {
        b.revenue
            .total_cmp(&a.revenue)
            .then(a.client.cmp(&b.client))
    });
    out
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

    fn lead(id: &str, phone: &str, created: Ts) -> Lead {
        Lead {
            id: id.into(),
            title: id.into(),
            status_id: "NEW".into(),
            semantics: Semantics::Open,
            responsible_id: Some("1".into()),
            source: Some("CALL".into()),
            phones: vec![phone.into()],
            emails: vec![],
            contact_id: None,
            company_id: None,
            amount: 0.0,
            utm: Utm::default(),
            created_at: created,
            updated_at: created,
            closed_at: None,
            deal_id: None,
        }
    }

    fn call(id: &str, phone: &str, dir: Direction, answered: bool, at: Ts) -> Call {
        Call {
            id: id.into(),
            provider: TelephonyKind::Comagic,
            started_at: at,
            direction: dir,
            answered,
            talk_s: if answered { 60 } else { 0 },
            wait_s: 0,
            client_phone: phone.into(),
            virtual_number: None,
            employee_id: Some("e1".into()),
            employee_name: Some("Анна".into()),
            recording_url: None,
            source: None,
            utm: Utm::default(),
        }
    }

    /// Reaction in business minutes (Mon–Fri 9–18 Moscow), by hand:
    /// - lead a: Friday 27.11 17:30, called back Monday 30.11 09:45 → 30 + 45 = 75 min;
    /// - lead b: Tuesday 01.12 10:00, called at 10:20 → 20 min;
    /// - lead c: Tuesday 01.12 11:00, an activity on it at 13:00 → 120 min;
    /// - lead d: Tuesday 01.12 12:00, never contacted → no reaction.
    ///
    /// Over the period 27.11–01.12: median (nearest rank, 2nd of 3) 75, p90 (3rd) 120.
    #[test]
    fn reaction_time_in_business_minutes_by_hand() {
        let msk = |d: u32, h: u32, m: u32| {
            chrono_tz::Europe::Moscow
                .with_ymd_and_hms(2026, if d > 26 { 11 } else { 12 }, d, h, m, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        let dec = |d: u32, h: u32, m: u32| {
            chrono_tz::Europe::Moscow
                .with_ymd_and_hms(2026, 12, d, h, m, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        let s = Snapshot {
            leads: vec![
                lead("a", "+7 900 000-00-01", msk(27, 17, 30)),
                lead("b", "8 (900) 000-00-02", dec(1, 10, 0)),
                lead("c", "+79000000003", dec(1, 11, 0)),
                lead("d", "+79000000004", dec(1, 12, 0)),
            ],
            calls: vec![
                call("1", "79000000001", Direction::Out, true, msk(30, 9, 45)),
                call("2", "+79000000002", Direction::Out, false, dec(1, 10, 20)),
                // An incoming call from d does not count as a reaction.
                call("3", "+79000000004", Direction::In, false, dec(1, 12, 30)),
            ],
            activities: vec![Activity {
                id: "act".into(),
                kind: ActivityKind::Meeting,
                direction: None,
                subject: "встреча".into(),
                entity: Some(EntityRef::new(EntityKind::Lead, "c")),
                responsible_id: Some("1".into()),
                phone: None,
                duration_s: None,
                completed: true,
                external_id: None,
                started_at: dec(1, 13, 0),
                created_at: dec(1, 13, 0),
                updated_at: dec(1, 13, 0),
            }],
            ..Snapshot::default()
        };
        let p = Period::days(
            NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            chrono_tz::Europe::Moscow,
        );
        let cal = BusinessCalendar::moscow_default();
        let f = compute(&s, &p, dec(2, 9, 0), &cal);
        assert_eq!(f.leads_new, 4);
        assert_eq!(f.leads_reacted, 3);
        assert_eq!(f.reaction_median_min, Some(75.0));
        assert_eq!(f.reaction_p90_min, Some(120.0));
        // Calls: 2 out, 1 in missed and never called back.
        assert_eq!((f.calls_out, f.calls_in, f.calls_missed), (2, 1, 1));
        assert_eq!(f.calls_called_back, 0);
        assert_eq!(f.leads_by_source["CALL"], 4);
        assert_eq!(f.leads_by_channel["—"], 4);
    }

    /// ABC/XYZ over four months, by hand. Monthly revenue:
    /// - k1: 100 100 100 100 → total 400, cv 0 → X; k2: 80 120 80 120 → total 400, cv 0.2 → Y;
    /// - k3: 0 0 0 150 → 150, cv √3 → Z; k4: 10 10 10 20 → 50, cv ≈ 0.35 → Z.
    ///
    /// Total 1000; sorted k1 400 (0 → 40 %) A, k2 400 (40 → 80 %) A, k3 150 (80 → 95 %) B,
    /// k4 50 (95 → 100 %) C. A deal closed outside the months is ignored.
    #[test]
    fn abc_xyz_matrix_by_hand() {
        let tz = chrono_tz::Europe::Moscow;
        let months: Vec<NaiveDate> = (8..=11)
            .map(|m| NaiveDate::from_ymd_opt(2026, m, 1).unwrap())
            .collect();
        let at = |m: u32, d: u32| tz.with_ymd_and_hms(2026, m, d, 12, 0, 0).unwrap().to_utc();
        let mut won = Vec::new();
        let mut add = |client: &str, amounts: [f64; 4]| {
            for (i, a) in amounts.iter().enumerate() {
                if *a > 0.0 {
                    won.push(WonRow {
                        client: client.into(),
                        closed_at: at(8 + i as u32, 15),
                        amount: *a,
                    });
                }
            }
        };
        add("company:1", [100.0, 100.0, 100.0, 100.0]);
        add("company:2", [80.0, 120.0, 80.0, 120.0]);
        add("contact:3", [0.0, 0.0, 0.0, 150.0]);
        add("deal:4", [10.0, 10.0, 10.0, 20.0]);
        won.push(WonRow {
            client: "company:1".into(),
            closed_at: at(7, 31),
            amount: 1e6,
        });
        // 1 December 00:30 Moscow is still 30 November in UTC: months are local.
        won.push(WonRow {
            client: "company:1".into(),
            closed_at: tz.with_ymd_and_hms(2026, 12, 1, 0, 30, 0).unwrap().to_utc(),
            amount: 1e6,
        });
        let m = abc_xyz(&won, &months, tz);
        let class = |k: &str| {
            let c = m.clients.iter().find(|c| c.client == k).unwrap();
            (c.abc, c.xyz, c.revenue)
        };
        use abc::{Abc, Xyz};
        assert_eq!(class("company:1"), (Abc::A, Xyz::X, 400.0));
        assert_eq!(class("company:2"), (Abc::A, Xyz::Y, 400.0));
        assert_eq!(class("contact:3"), (Abc::B, Xyz::Z, 150.0));
        assert_eq!(class("deal:4"), (Abc::C, Xyz::Z, 50.0));
        assert_eq!(m.counts, [[1, 1, 0], [0, 0, 1], [0, 0, 1]]);
        assert_eq!(m.revenue[0], [400.0, 400.0, 0.0]);
        assert_eq!(m.revenue[1][2], 150.0);
        assert_eq!(m.months, 4);
        // Sorted by revenue, ties by key.
        assert_eq!(m.clients[0].client, "company:1");
    }

    /// Funnel of stages S1 < S2 < S3 then won, by hand: two deals open at S1, one at S2, one at
    /// S3, one won, one lost. Reached: S1 6, S2 3, S3 2, won 1; step to step 50 %, 66.7 %, 50 %.
    #[test]
    fn funnel_by_hand() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let p = Period::day(day, chrono_tz::Europe::Moscow);
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let stage = |id: &str, sort: i64, sem: Semantics| Stage {
            id: id.into(),
            pipeline_id: "0".into(),
            name: format!("Этап {id}"),
            sort,
            semantics: sem,
        };
        let mut deals = Vec::new();
        for (id, st, sem) in [
            ("1", "S1", Semantics::Open),
            ("2", "S1", Semantics::Open),
            ("3", "S2", Semantics::Open),
            ("4", "S3", Semantics::Open),
            ("5", "WON", Semantics::Won),
            ("6", "LOSE", Semantics::Lost),
        ] {
            let mut d = deal(id, sem, 100.0, at, (sem != Semantics::Open).then_some(at));
            d.stage_id = st.into();
            deals.push(d);
        }
        // A deal of another pipeline and one created the day before are not in the funnel.
        let mut other = deal("7", Semantics::Open, 1.0, at, None);
        other.pipeline_id = "9".into();
        deals.push(other);
        deals.push(deal(
            "8",
            Semantics::Open,
            1.0,
            at - Duration::days(1),
            None,
        ));
        let s = Snapshot {
            stages: vec![
                stage("S1", 10, Semantics::Open),
                stage("S2", 20, Semantics::Open),
                stage("S3", 30, Semantics::Open),
                stage("WON", 40, Semantics::Won),
                stage("LOSE", 50, Semantics::Lost),
            ],
            deals,
            ..Snapshot::default()
        };
        let (pipeline, steps) = funnel(&s, &p).unwrap();
        assert_eq!(pipeline, "0");
        let reached: Vec<usize> = steps.iter().map(|s| s.reached).collect();
        assert_eq!(reached, [6, 3, 2, 1]);
        let pct: Vec<Option<f64>> = steps
            .iter()
            .map(|s| s.from_previous_pct.map(|x| (x * 10.0).round() / 10.0))
            .collect();
        assert_eq!(pct, [None, Some(50.0), Some(66.7), Some(50.0)]);
        assert_eq!(steps[3].stage, "Этап WON");
    }

    #[test]
    fn plan_percent_is_month_revenue_over_plan() {
        let mut f = Figures {
            managers: vec![ManagerFigures {
                user_id: "1".into(),
                name: "Анна".into(),
                ..ManagerFigures::default()
            }],
            ..Figures::default()
        };
        let month = Figures {
            managers: vec![
                ManagerFigures {
                    user_id: "1".into(),
                    name: "Анна".into(),
                    revenue: 4_000.0,
                    ..ManagerFigures::default()
                },
                ManagerFigures {
                    user_id: "2".into(),
                    name: "Борис".into(),
                    revenue: 1_500.0,
                    ..ManagerFigures::default()
                },
            ],
            ..Figures::default()
        };
        let plans = BTreeMap::from([
            ("1".to_string(), 10_000.0),
            ("2".to_string(), 3_000.0),
            ("3".to_string(), 0.0),
        ]);
        apply_plans(&mut f, &month, &plans);
        assert_eq!(f.managers[0].plan_pct, Some(40.0));
        // Борис sold nothing today but has a plan: he gets a line with 50 %.
        let b = f.managers.iter().find(|m| m.user_id == "2").unwrap();
        assert_eq!((b.name.as_str(), b.plan_pct), ("Борис", Some(50.0)));
        assert!(f.managers.iter().all(|m| m.user_id != "3"));
    }

    #[test]
    fn channel_is_utm_source_and_medium() {
        let mut l = lead("a", "+79000000001", Utc::now());
        assert_eq!(channel(&l), "—");
        l.utm.source = Some("yandex".into());
        assert_eq!(channel(&l), "yandex");
        l.utm.medium = Some(" cpc ".into());
        assert_eq!(channel(&l), "yandex / cpc");
    }
}
