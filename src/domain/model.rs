//! The normalised CRM and telephony model.
//!
//! Every connector maps its own payloads into these types and rules only ever see these types,
//! so a rule written once works the same on Bitrix24 and amoCRM. Identifiers are kept as strings
//! because Bitrix24 sends string ids and amoCRM integer ids: a string holds both without loss.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A point in time, always UTC inside dozor (tenant time zones apply only at the edges).
pub type Ts = DateTime<Utc>;

/// Which CRM a tenant runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrmKind {
    Bitrix24,
    Amocrm,
}

impl CrmKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CrmKind::Bitrix24 => "bitrix24",
            CrmKind::Amocrm => "amocrm",
        }
    }
}

/// Which telephony service a tenant uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelephonyKind {
    Comagic,
    Calltouch,
}

impl TelephonyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TelephonyKind::Comagic => "comagic",
            TelephonyKind::Calltouch => "calltouch",
        }
    }
}

/// The kinds of CRM record the mirror holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    Lead,
    Deal,
    Contact,
    Company,
    Task,
    Activity,
}

impl EntityKind {
    pub const ALL: [EntityKind; 6] = [
        EntityKind::Lead,
        EntityKind::Deal,
        EntityKind::Contact,
        EntityKind::Company,
        EntityKind::Task,
        EntityKind::Activity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Lead => "lead",
            EntityKind::Deal => "deal",
            EntityKind::Contact => "contact",
            EntityKind::Company => "company",
            EntityKind::Task => "task",
            EntityKind::Activity => "activity",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A reference to a CRM record that tasks, activities and calls can be bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityRef {
    pub(crate) kind: EntityKind,
    pub id: String,
}

impl EntityRef {
    pub fn new(kind: EntityKind, id: impl Into<String>) -> Self {
        EntityRef {
            kind,
            id: id.into(),
        }
    }
}

/// A CRM user (manager, head of sales, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    /// Internal phone extension, used to match telephony employees.
    pub extension: Option<String>,
    pub active: bool,
}

impl User {
    /// How a message names user `id` when the mirror has no name for it: the CRM's users could
    /// not be read (a Bitrix24 webhook without the `user` scope) or not yet, or the user has no
    /// name. Never the bare id: the reader sees "сотрудник 17", not "17".
    pub(crate) fn unnamed(id: &str, ru: bool) -> String {
        match (ru, id.trim().is_empty()) {
            (true, false) => format!("сотрудник {}", id.trim()),
            (true, true) => "сотрудник".into(),
            (false, false) => format!("employee {}", id.trim()),
            (false, true) => "employee".into(),
        }
    }

    /// The users' names by id: the map messages and figures look people up in.
    pub(crate) fn names(users: &[User]) -> HashMap<&str, &str> {
        users
            .iter()
            .map(|u| (u.id.as_str(), u.name.as_str()))
            .collect()
    }

    /// The name of user `id` from `names` (see [`User::names`]), else [`User::unnamed`].
    pub(crate) fn name_in(names: &HashMap<&str, &str>, id: &str, ru: bool) -> String {
        match names.get(id) {
            Some(n) if !n.trim().is_empty() => n.to_string(),
            _ => Self::unnamed(id, ru),
        }
    }
}

/// Where a stage sits in the funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Semantics {
    /// Still in progress.
    Open,
    /// Closed successfully (deal won, lead converted).
    Won,
    /// Closed unsuccessfully (deal lost, lead junk).
    Lost,
}

impl Semantics {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Semantics::Open => "open",
            Semantics::Won => "won",
            Semantics::Lost => "lost",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Semantics::Open),
            "won" => Some(Semantics::Won),
            "lost" => Some(Semantics::Lost),
            _ => None,
        }
    }
}

/// A sales pipeline (Bitrix24 deal category, amoCRM pipeline) with its stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    pub is_default: bool,
    pub stages: Vec<Stage>,
}

/// A stage of a pipeline, or a lead status (pipeline id `leads`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub id: String,
    pub pipeline_id: String,
    pub name: String,
    pub sort: i64,
    pub semantics: Semantics,
}

/// Marketing attribution carried by leads and calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Utm {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub content: Option<String>,
    pub term: Option<String>,
}

/// An incoming request not yet qualified into a deal (Bitrix24 lead, amoCRM unsorted item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    pub id: String,
    pub title: String,
    pub status_id: String,
    pub semantics: Semantics,
    pub responsible_id: Option<String>,
    /// Source code as the CRM names it (CALL, WEB, ...).
    pub source: Option<String>,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    pub contact_id: Option<String>,
    pub company_id: Option<String>,
    pub amount: f64,
    pub utm: Utm,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub closed_at: Option<Ts>,
    /// The CRM's deal record this lead lives in or became, when the CRM keeps one from the
    /// start (amoCRM: the lead an unsorted item holds, in the pipeline's unsorted status until
    /// the item is accepted); `None` where leads are records of their own (Bitrix24).
    #[serde(default)]
    pub deal_id: Option<String>,
}

/// A deal (Bitrix24 deal, amoCRM "lead").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deal {
    pub id: String,
    pub title: String,
    pub pipeline_id: String,
    pub stage_id: String,
    pub semantics: Semantics,
    pub amount: f64,
    pub currency: String,
    pub responsible_id: Option<String>,
    pub contact_id: Option<String>,
    pub company_id: Option<String>,
    pub lead_id: Option<String>,
    pub source: Option<String>,
    pub tags: Vec<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub closed_at: Option<Ts>,
}

/// A person the company sells to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    pub name: String,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    pub company_id: Option<String>,
    pub responsible_id: Option<String>,
    pub tags: Vec<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// An organisation the company sells to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Company {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) phones: Vec<String>,
    pub(crate) emails: Vec<String>,
    pub(crate) responsible_id: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) created_at: Ts,
    pub(crate) updated_at: Ts,
}

/// Something a manager has to do (Bitrix24 task or to-do, amoCRM task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub title: String,
    pub description: String,
    pub responsible_id: Option<String>,
    pub deadline: Option<Ts>,
    pub completed: bool,
    pub completed_at: Option<Ts>,
    pub entity: Option<EntityRef>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

impl Task {
    /// Open and past its deadline at `now`.
    pub fn is_overdue(&self, now: Ts) -> bool {
        !self.completed && self.deadline.is_some_and(|d| d < now)
    }
}

/// What kind of communication an activity records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityKind {
    Call,
    Meeting,
    Email,
    Message,
    Other,
}

impl ActivityKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Call => "call",
            ActivityKind::Meeting => "meeting",
            ActivityKind::Email => "email",
            ActivityKind::Message => "message",
            ActivityKind::Other => "other",
        }
    }
}

/// Direction of a call or message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// A communication recorded on a CRM timeline (Bitrix24 activity, amoCRM call note/event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub id: String,
    pub kind: ActivityKind,
    pub direction: Option<Direction>,
    pub subject: String,
    pub entity: Option<EntityRef>,
    pub responsible_id: Option<String>,
    /// For calls: the other party's number as the CRM stores it.
    pub phone: Option<String>,
    /// For calls: talk time in seconds (0 = not answered).
    pub duration_s: Option<i64>,
    pub completed: bool,
    /// The telephony call id when the CRM knows it (dedupe key for registration).
    pub external_id: Option<String>,
    pub started_at: Ts,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// A telephony employee (CoMagic employee, Calltouch manager name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Employee {
    pub id: String,
    pub name: String,
    pub extension: Option<String>,
}

/// One call session from a telephony service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Provider's call id (CoMagic call session id, Calltouch callId).
    pub id: String,
    pub provider: TelephonyKind,
    pub started_at: Ts,
    pub direction: Direction,
    /// Somebody talked (false = missed / not reached).
    pub answered: bool,
    pub talk_s: i64,
    pub wait_s: i64,
    /// The client's number exactly as the provider sent it.
    pub client_phone: String,
    /// The tracking / virtual number the client dialled.
    pub virtual_number: Option<String>,
    pub employee_id: Option<String>,
    pub employee_name: Option<String>,
    pub recording_url: Option<String>,
    /// Channel or source as the provider names it.
    pub source: Option<String>,
    pub utm: Utm,
}

impl Call {
    /// The first field outside its sane range (see `super::bounds`), if any.
    pub fn insane_field(&self) -> Option<&'static str> {
        use super::bounds;
        if !(0..=bounds::MAX_CALL_SECS).contains(&self.talk_s) {
            Some("talk_s")
        } else if !(0..=bounds::MAX_CALL_SECS).contains(&self.wait_s) {
            Some("wait_s")
        } else if bounds::ts_in_range(self.started_at).is_none() {
            Some("started_at")
        } else {
            None
        }
    }
}

/// Any record the CRM sync can deliver, so one page type carries every entity kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Lead(Lead),
    Deal(Deal),
    Contact(Contact),
    Company(Company),
    Task(Task),
    Activity(Activity),
}

impl Record {
    pub fn entity_kind(&self) -> EntityKind {
        match self {
            Record::Lead(_) => EntityKind::Lead,
            Record::Deal(_) => EntityKind::Deal,
            Record::Contact(_) => EntityKind::Contact,
            Record::Company(_) => EntityKind::Company,
            Record::Task(_) => EntityKind::Task,
            Record::Activity(_) => EntityKind::Activity,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Record::Lead(x) => &x.id,
            Record::Deal(x) => &x.id,
            Record::Contact(x) => &x.id,
            Record::Company(x) => &x.id,
            Record::Task(x) => &x.id,
            Record::Activity(x) => &x.id,
        }
    }

    pub fn updated_at(&self) -> Ts {
        match self {
            Record::Lead(x) => x.updated_at,
            Record::Deal(x) => x.updated_at,
            Record::Contact(x) => x.updated_at,
            Record::Company(x) => x.updated_at,
            Record::Task(x) => x.updated_at,
            Record::Activity(x) => x.updated_at,
        }
    }
}
