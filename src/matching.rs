//! Call matching, shared by the call rules and the reports: which CRM record a phone number
//! belongs to, who owns it, and which telephony employee is which CRM user. It reads the mirror
//! and asks the CRM and the telephony, so it sits above them and below both rules and report.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::config::{RuleMode, RulesConfig};
use crate::crm::Crm;
use crate::domain::{Call, Direction, Employee, EntityKind, EntityRef, Semantics, Ts, User, phone};
use crate::store::Snapshot;
use crate::telephony::Telephony;

mod lookups;

pub(crate) use lookups::Memory;

/// Phone (E.164) → the leads, contacts and companies that carry it, from the mirror.
pub(crate) struct PhoneBook<'a> {
    m: &'a Snapshot,
    by_phone: HashMap<String, Vec<EntityRef>>,
}

impl<'a> PhoneBook<'a> {
    /// The mirror's numbers plus what the CRM answered this cycle for numbers the mirror did not
    /// know (records created after the last sync).
    pub(crate) fn with_links(m: &'a Snapshot, links: &CallLinks) -> Self {
        let mut book = PhoneBook::new(m);
        for (p, found) in &links.crm_phones {
            let v = book.by_phone.entry(p.clone()).or_default();
            for e in found {
                if !v.contains(e) {
                    v.push(e.clone());
                }
            }
        }
        book
    }

    pub(crate) fn new(m: &'a Snapshot) -> Self {
        let mut by_phone: HashMap<String, Vec<EntityRef>> = HashMap::new();
        let mut add = |phones: &[String], e: EntityRef| {
            for p in phones.iter().filter_map(|p| phone::normalize(p).ok()) {
                let v = by_phone.entry(p).or_default();
                if !v.contains(&e) {
                    v.push(e.clone());
                }
            }
        };
        for c in &m.contacts {
            add(&c.phones, EntityRef::new(EntityKind::Contact, c.id.clone()));
        }
        for c in &m.companies {
            add(&c.phones, EntityRef::new(EntityKind::Company, c.id.clone()));
        }
        for l in &m.leads {
            add(&l.phones, EntityRef::new(EntityKind::Lead, l.id.clone()));
        }
        PhoneBook { m, by_phone }
    }

    /// Records with this number: contacts and companies first, then leads.
    pub(crate) fn find(&self, e164: &str) -> &[EntityRef] {
        self.by_phone.get(e164).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Where a call with this number belongs: the client's single open deal when there is one
    /// (as amoCRM itself attaches calls), else the client, else the lead.
    pub(crate) fn binding(&self, e164: &str) -> Option<EntityRef> {
        let found = self.find(e164);
        let client = found
            .iter()
            .find(|e| matches!(e.kind, EntityKind::Contact | EntityKind::Company))
            .or_else(|| found.first())?;
        let open: Vec<&str> = self
            .m
            .deals
            .iter()
            .filter(|d| d.semantics == Semantics::Open)
            .filter(|d| match client.kind {
                EntityKind::Contact => d.contact_id.as_deref() == Some(client.id.as_str()),
                EntityKind::Company => d.company_id.as_deref() == Some(client.id.as_str()),
                _ => false,
            })
            .map(|d| d.id.as_str())
            .collect();
        match open.as_slice() {
            [one] => Some(EntityRef::new(EntityKind::Deal, *one)),
            _ => Some(client.clone()),
        }
    }

    /// The responsible user of a record in the mirror.
    pub(crate) fn owner(&self, e: &EntityRef) -> Option<String> {
        let m = self.m;
        match e.kind {
            EntityKind::Deal => m
                .deals
                .iter()
                .find(|x| x.id == e.id)?
                .responsible_id
                .clone(),
            EntityKind::Contact => m
                .contacts
                .iter()
                .find(|x| x.id == e.id)?
                .responsible_id
                .clone(),
            EntityKind::Company => m
                .companies
                .iter()
                .find(|x| x.id == e.id)?
                .responsible_id
                .clone(),
            EntityKind::Lead => m
                .leads
                .iter()
                .find(|x| x.id == e.id)?
                .responsible_id
                .clone(),
            _ => None,
        }
    }
}

/// The CRM user who took `call`: the employee's configured or matched user (see [`StaffMap`]),
/// else, for an employee the map has not seen, a unique full-name match in the mirror.
pub(crate) fn employee_user(m: &Snapshot, links: &CallLinks, call: &Call) -> Option<String> {
    if let Some(id) = &call.employee_id
        && let Some(link) = links.staff.get(id)
    {
        return link.user_id.clone();
    }
    let name = name_key(call.employee_name.as_deref()?);
    unique(m.users.iter().filter(|u| name_key(&u.name) == name))
}

/// How a telephony employee was tied to a CRM user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// `employees` in the tenant's telephony config.
    Config,
    /// The same full name (case, `ё`, punctuation and word order ignored), one user only.
    Name,
    /// The same internal extension.
    Extension,
    Unmatched,
}

impl MatchedBy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MatchedBy::Config => "config",
            MatchedBy::Name => "name",
            MatchedBy::Extension => "extension",
            MatchedBy::Unmatched => "unmatched",
        }
    }
}

/// One telephony employee and the CRM user they are.
#[derive(Debug, Clone, PartialEq)]
pub struct StaffLink {
    pub employee: Employee,
    pub user_id: Option<String>,
    pub by: MatchedBy,
}

/// Telephony employees ↔ CRM users: the config first, then full name, then extension.
#[derive(Debug, Clone, Default)]
pub struct StaffMap {
    /// Ordered by employee id.
    pub links: Vec<StaffLink>,
    /// Config entries that name an employee or a user nobody knows, for `dozor check`.
    pub warnings: Vec<String>,
}

impl StaffMap {
    pub fn build(
        employees: &[Employee],
        users: &[User],
        configured: &BTreeMap<String, String>,
    ) -> StaffMap {
        let mut map = StaffMap::default();
        let user_ids: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
        let employee_ids: HashSet<&str> = employees.iter().map(|e| e.id.as_str()).collect();
        for (emp, user) in configured {
            if !employee_ids.contains(emp.as_str()) {
                map.warnings.push(format!(
                    "telephony.employees: employee {emp:?} is not a telephony employee"
                ));
            }
            if !user_ids.contains(user.as_str()) {
                map.warnings.push(format!(
                    "telephony.employees: employee {emp:?} maps to user {user:?}, which is not a CRM user"
                ));
            }
        }
        // Inactive users are matched only when no active one fits.
        let mut users: Vec<&User> = users.iter().collect();
        users.sort_by_key(|u| !u.active);
        for e in employees {
            let (user_id, by) = if let Some(u) = configured.get(&e.id) {
                (Some(u.clone()), MatchedBy::Config)
            } else if let Some(u) = by_name(&users, &e.name) {
                (Some(u), MatchedBy::Name)
            } else if let Some(u) = e.extension.as_deref().and_then(|x| by_extension(&users, x)) {
                (Some(u), MatchedBy::Extension)
            } else {
                (None, MatchedBy::Unmatched)
            };
            map.links.push(StaffLink {
                employee: e.clone(),
                user_id,
                by,
            });
        }
        map.links.sort_by(|a, b| a.employee.id.cmp(&b.employee.id));
        map.links.dedup_by(|a, b| a.employee.id == b.employee.id);
        map
    }

    /// The map for humans (`dozor check`): one line per employee, then the warnings.
    pub fn lines(&self, users: &[User]) -> Vec<String> {
        let name_of = |id: &str| {
            users
                .iter()
                .find(|u| u.id == id)
                .map(|u| format!(" {}", u.name))
                .unwrap_or_default()
        };
        let mut out: Vec<String> = self
            .links
            .iter()
            .map(|l| {
                let e = &l.employee;
                let ext = e
                    .extension
                    .as_deref()
                    .map(|x| format!(" (ext {x})"))
                    .unwrap_or_default();
                let user = match &l.user_id {
                    Some(u) => format!("user {u}{}", name_of(u)),
                    None => "no CRM user".to_string(),
                };
                format!("{} {}{ext} → {user} [{}]", e.id, e.name, l.by.as_str())
            })
            .collect();
        out.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        out
    }

    pub(crate) fn get(&self, employee_id: &str) -> Option<&StaffLink> {
        self.links
            .binary_search_by(|l| l.employee.id.as_str().cmp(employee_id))
            .ok()
            .map(|i| &self.links[i])
    }
}

/// A full name reduced for comparison: lowercase, `ё` as `е`, letters and digits only, words
/// sorted (telephony often writes "Фамилия Имя", CRMs "Имя Фамилия").
pub fn name_key(name: &str) -> String {
    let cleaned: String = name
        .to_lowercase()
        .replace('ё', "е")
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    words.sort_unstable();
    words.join(" ")
}

/// The id of the only user in `it`, or of the first active one when several share the key
/// only because of inactive duplicates; `None` when the match is ambiguous.
fn unique<'u>(it: impl Iterator<Item = &'u User>) -> Option<String> {
    let found: Vec<&User> = it.collect();
    let active: Vec<&&User> = found.iter().filter(|u| u.active).collect();
    match (found.as_slice(), active.as_slice()) {
        ([one], _) => Some(one.id.clone()),
        (_, [one]) => Some(one.id.clone()),
        _ => None,
    }
}

fn by_name(users: &[&User], name: &str) -> Option<String> {
    let key = name_key(name);
    if key.is_empty() {
        return None;
    }
    unique(users.iter().copied().filter(|u| name_key(&u.name) == key))
}

fn by_extension(users: &[&User], ext: &str) -> Option<String> {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let want = digits(ext);
    if want.is_empty() {
        return None;
    }
    unique(
        users
            .iter()
            .copied()
            .filter(|u| u.extension.as_deref().is_some_and(|x| digits(x) == want)),
    )
}

/// What the call rules know besides the mirror, gathered once per cycle.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallLinks {
    pub(crate) staff: StaffMap,
    /// E.164 → records the CRM itself found for numbers of recent calls the mirror does not
    /// know (created after the last sync), so they get no duplicate lead.
    pub(crate) crm_phones: HashMap<String, Vec<EntityRef>>,
    /// Numbers the CRM could not be asked about this cycle: no lead is created for them until
    /// a later cycle can tell.
    pub(crate) unresolved: HashSet<String>,
}

/// At most this many unknown numbers are looked up in the CRM per cycle (the rest wait).
pub(crate) const CRM_LOOKUPS_PER_CYCLE: usize = 50;

/// The employees the telephony service names, plus any only seen on calls.
pub(crate) async fn staff(
    telephony: Option<&dyn Telephony>,
    m: &Snapshot,
    configured: &BTreeMap<String, String>,
) -> StaffMap {
    let mut employees = match telephony {
        Some(t) => t.employees().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "telephony employees not read; matching by call data");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let mut seen: HashSet<String> = employees.iter().map(|e| e.id.clone()).collect();
    for c in &m.calls {
        if let Some(id) = &c.employee_id
            && seen.insert(id.clone())
        {
            employees.push(Employee {
                id: id.clone(),
                name: c.employee_name.clone().unwrap_or_default(),
                extension: None,
            });
        }
    }
    StaffMap::build(&employees, &m.users, configured)
}

/// The staff map for the call rules' window: the telephony's employee list is read (a request)
/// only when recent calls name an employee.
pub(crate) async fn window_staff(
    telephony: Option<&dyn Telephony>,
    configured: &BTreeMap<String, String>,
    rules: &RulesConfig,
    m: &Snapshot,
    now: Ts,
) -> StaffMap {
    let lookback = call_lookback(rules);
    let asks = lookback > 0.0 && recent(m, now, lookback).any(|c| c.employee_id.is_some());
    staff(telephony.filter(|_| asks), m, configured).await
}

/// Builds the cycle's [`CallLinks`]: the staff map, and the CRM's answer for every recent
/// inbound number the mirror does not know (only while a rule that would act on it is enabled),
/// remembered in `memory` and reused from it (see [`lookups`]).
pub(crate) async fn links(
    crm: &dyn Crm,
    memory: Option<Memory<'_>>,
    telephony: Option<&dyn Telephony>,
    configured: &BTreeMap<String, String>,
    rules: &RulesConfig,
    m: &Snapshot,
    now: Ts,
) -> CallLinks {
    let started = std::time::Instant::now();
    let lookback = call_lookback(rules);
    let mut links = CallLinks {
        staff: window_staff(telephony, configured, rules, m, now).await,
        ..CallLinks::default()
    };
    if lookback <= 0.0 {
        return links;
    }
    let book = PhoneBook::new(m);
    let mut unknown: Vec<String> = recent(m, now, lookback)
        .filter(|c| c.direction == Direction::In)
        .filter_map(|c| phone::normalize(&c.client_phone).ok())
        .filter(|p| book.find(p).is_empty())
        .collect();
    unknown.sort();
    unknown.dedup();
    let asked = lookups::answer(crm, memory, unknown, now, &mut links).await;
    tracing::info!(
        remembered = asked.remembered,
        asked = asked.asked,
        left = asked.left,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "CRM look-ups of numbers the mirror lacks"
    );
    links
}

/// How far back the call rules that are not off look, in hours (0 when all are off).
pub(crate) fn call_lookback(rules: &RulesConfig) -> f64 {
    [
        (
            rules.unknown_caller.mode,
            rules.unknown_caller.lookback_hours,
        ),
        (
            rules.call_not_in_crm.mode,
            rules.call_not_in_crm.lookback_hours,
        ),
        (rules.missed_call.mode, rules.missed_call.lookback_hours),
    ]
    .into_iter()
    .filter(|(mode, _)| *mode != RuleMode::Off)
    .map(|(_, hours)| hours)
    .fold(0.0, f64::max)
}

/// Calls that started in the last `hours` before `now`.
pub(crate) fn recent(m: &Snapshot, now: Ts, hours: f64) -> impl Iterator<Item = &Call> {
    let from = now - chrono::Duration::minutes((hours * 60.0) as i64);
    m.calls
        .iter()
        .filter(move |c| c.started_at >= from && c.started_at <= now)
}

/// A call's number in E.164, or `None` for junk (logged once by the caller).
pub(crate) fn number(call: &Call) -> Option<String> {
    match phone::normalize(&call.client_phone) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::debug!(call = %call.id, phone = %call.client_phone, error = %e, "call number skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TelephonyKind, Utm};
    use chrono::Utc;

    fn user(id: &str, name: &str, ext: Option<&str>) -> User {
        User {
            id: id.into(),
            name: name.into(),
            email: None,
            extension: ext.map(String::from),
            active: true,
        }
    }

    fn call(employee: Option<&str>, name: Option<&str>) -> Call {
        Call {
            id: "1".into(),
            provider: TelephonyKind::Comagic,
            started_at: Utc::now(),
            direction: Direction::In,
            answered: true,
            talk_s: 10,
            wait_s: 1,
            client_phone: "79990000000".into(),
            virtual_number: None,
            employee_id: employee.map(String::from),
            employee_name: name.map(String::from),
            recording_url: None,
            source: None,
            utm: Utm::default(),
        }
    }

    #[test]
    fn the_call_goes_to_the_configured_user_first_then_the_matched_one() {
        let m = Snapshot {
            users: vec![
                user("1", "Анна Петрова", Some("101")),
                user("2", "Пётр Сидоров", Some("102")),
                user("3", "Иван Иванов", None),
                user("4", "Иван Иванов", None),
            ],
            ..Snapshot::default()
        };
        let employees = [
            Employee {
                id: "e1".into(),
                name: "Анна Петрова".into(),
                extension: Some("102".into()),
            },
            Employee {
                id: "e2".into(),
                name: "СИДОРОВ ПЕТР".into(),
                extension: None,
            },
            Employee {
                id: "e3".into(),
                name: "Линия 1".into(),
                extension: Some("101".into()),
            },
            Employee {
                id: "e4".into(),
                name: "Иван Иванов".into(),
                extension: None,
            },
        ];
        let configured: BTreeMap<String, String> = [("e1".to_string(), "2".to_string())].into();
        let links = CallLinks {
            staff: StaffMap::build(&employees, &m.users, &configured),
            ..CallLinks::default()
        };
        let who = |e: Option<&str>, n: Option<&str>| employee_user(&m, &links, &call(e, n));
        assert_eq!(who(Some("e1"), Some("Анна Петрова")).as_deref(), Some("2"));
        assert_eq!(who(Some("e2"), None).as_deref(), Some("2"));
        assert_eq!(who(Some("e3"), Some("Линия 1")).as_deref(), Some("1"));
        // Two users of that name: no guess.
        assert_eq!(who(Some("e4"), Some("Иван Иванов")), None);
        // An employee the map has not seen is matched by name on the spot.
        assert_eq!(who(Some("e9"), Some("петрова анна")).as_deref(), Some("1"));
        assert_eq!(who(None, None), None);
        let by: Vec<MatchedBy> = links.staff.links.iter().map(|l| l.by).collect();
        assert_eq!(
            by,
            [
                MatchedBy::Config,
                MatchedBy::Name,
                MatchedBy::Extension,
                MatchedBy::Unmatched
            ]
        );
    }
}
