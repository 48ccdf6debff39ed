//! The simulated company: one neutral data set that every fake renders in its own wire format.
//!
//! The Bitrix24 fake shows `leads` as crm.lead and `deals` as crm.deal; the amoCRM fake shows
//! `deals` as its "leads" and `leads` as unsorted items. Both write back into the same world, so a
//! test can check what any client did by looking at the world, whatever API it spoke.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub type Ts = DateTime<Utc>;

/// What a simulated user does in the sales department.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    HeadOfSales,
    Manager,
    Reactivation,
    Marketing,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimUser {
    pub id: u64,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    /// Internal extension, also the CoMagic employee's extension.
    pub extension: String,
    pub role: Role,
    pub active: bool,
}

impl SimUser {
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

/// Where a stage sits in the funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimStage {
    /// Numeric id (Bitrix24 crm.status row ID, amoCRM status id; won = 142 / lost = 143 in amoCRM).
    pub id: u64,
    /// Bitrix24 STATUS_ID code: `NEW`, `WON`, `LOSE` in pipeline 0, `C{n}:NEW` elsewhere.
    pub code: String,
    pub name: String,
    pub sort: i64,
    pub kind: StageKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimPipeline {
    /// Bitrix24 CATEGORY_ID (0 = general) — amoCRM pipeline ids are `AMO_PIPELINE_BASE + id`.
    pub id: u64,
    pub name: String,
    pub is_default: bool,
    pub stages: Vec<SimStage>,
}

/// Offset that turns a world pipeline id into an amoCRM-looking pipeline id.
pub const AMO_PIPELINE_BASE: u64 = 7_000_000;

/// Lead statuses (Bitrix24 crm.lead STATUS_ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    New,
    InProcess,
    Converted,
    Junk,
}

impl LeadStatus {
    pub fn code(self) -> &'static str {
        match self {
            LeadStatus::New => "NEW",
            LeadStatus::InProcess => "IN_PROCESS",
            LeadStatus::Converted => "CONVERTED",
            LeadStatus::Junk => "JUNK",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimUtm {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimLead {
    pub id: u64,
    pub title: String,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Bitrix24 SOURCE_ID: CALL, WEB, EMAIL, ADVERTISING, PARTNER, RECOMMENDATION, OTHER.
    pub source: String,
    pub status: LeadStatus,
    pub responsible_id: u64,
    pub contact_id: Option<u64>,
    pub company_id: Option<u64>,
    pub utm: SimUtm,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub closed_at: Option<Ts>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimDeal {
    pub id: u64,
    pub title: String,
    pub pipeline_id: u64,
    /// Id of a stage of `pipeline_id`.
    pub stage_id: u64,
    pub amount: f64,
    pub responsible_id: u64,
    pub contact_id: Option<u64>,
    pub company_id: Option<u64>,
    pub lead_id: Option<u64>,
    pub source: String,
    pub tags: Vec<String>,
    /// Loss reason text when closed as lost.
    pub loss_reason: Option<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub closed_at: Option<Ts>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimContact {
    pub id: u64,
    pub first_name: String,
    pub last_name: String,
    /// Phones as a person typed them (deliberately in mixed shapes).
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    pub company_id: Option<u64>,
    pub responsible_id: u64,
    pub tags: Vec<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

impl SimContact {
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimCompany {
    pub id: u64,
    pub title: String,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    pub responsible_id: u64,
    pub tags: Vec<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// The kind of record a task or activity is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    Lead,
    Deal,
    Contact,
    Company,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimTask {
    pub id: u64,
    pub title: String,
    pub description: String,
    pub responsible_id: u64,
    pub created_by: u64,
    pub deadline: Option<Ts>,
    pub completed: bool,
    /// Result text written when completed (amoCRM `result.text`).
    pub result: Option<String>,
    pub binding: Option<(Owner, u64)>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub closed_at: Option<Ts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityType {
    Meeting,
    Call,
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    In,
    Out,
}

/// A communication on a CRM timeline (Bitrix24 crm.activity; amoCRM call note + event).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimActivity {
    pub id: u64,
    pub kind: ActivityType,
    pub direction: Dir,
    pub subject: String,
    pub owner: (Owner, u64),
    pub responsible_id: u64,
    pub phone: Option<String>,
    /// Talk seconds for calls (0 = not answered).
    pub duration_s: i64,
    pub completed: bool,
    /// Telephony call id when the call was registered by an integration.
    pub external_id: Option<String>,
    pub start: Ts,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// A telephony employee (CoMagic `get.employees`; Calltouch shows only the name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimEmployee {
    pub id: u64,
    pub full_name: String,
    pub extension: String,
    /// The CRM user this employee is (ground truth for matching tests).
    pub user_id: u64,
}

/// One call session as the telephony service recorded it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimCall {
    pub id: u64,
    pub start: Ts,
    pub direction: Dir,
    /// Nobody talked.
    pub is_lost: bool,
    pub talk_s: i64,
    pub wait_s: i64,
    /// The client's number in the digits-only shape telephony exports use (`79991234567`).
    pub client_phone: String,
    pub virtual_number: String,
    pub employee_id: Option<u64>,
    /// `call_tracking`, `va`, `sitephone`, ...
    pub source: String,
    pub utm: SimUtm,
    pub has_record: bool,
}

/// A record deleted from the CRM (amoCRM `*_deleted` events; Bitrix24 reads answer Not found).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deletion {
    pub owner: Owner,
    pub id: u64,
    pub at: Ts,
}

/// The simulated company.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct World {
    pub seed: u64,
    pub scale: u32,
    /// The moment the data was generated around ("now" of the scenario).
    pub anchor: Option<Ts>,
    pub users: Vec<SimUser>,
    pub pipelines: Vec<SimPipeline>,
    pub leads: BTreeMap<u64, SimLead>,
    pub deals: BTreeMap<u64, SimDeal>,
    pub contacts: BTreeMap<u64, SimContact>,
    pub companies: BTreeMap<u64, SimCompany>,
    pub tasks: BTreeMap<u64, SimTask>,
    pub activities: BTreeMap<u64, SimActivity>,
    pub employees: Vec<SimEmployee>,
    pub calls: BTreeMap<u64, SimCall>,
    pub deletions: Vec<Deletion>,
    /// Timeline comments / common notes: (owner, id, text, at).
    pub comments: Vec<(Owner, u64, String, Ts)>,
    pub next_id: u64,
}

impl World {
    /// Deletes a record as the CRM would: it leaves every list and a deletion is logged (amoCRM
    /// `*_deleted` events). False when there was no such record.
    pub fn delete(&mut self, owner: Owner, id: u64, at: Ts) -> bool {
        let existed = match owner {
            Owner::Lead => self.leads.remove(&id).is_some(),
            Owner::Deal => self.deals.remove(&id).is_some(),
            Owner::Contact => self.contacts.remove(&id).is_some(),
            Owner::Company => self.companies.remove(&id).is_some(),
        };
        if existed {
            self.deletions.push(Deletion { owner, id, at });
        }
        existed
    }

    /// A fresh id, unique across every entity kind (so ids never collide in tests).
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Makes sure ids handed out later are above `id` (used by the generator).
    pub fn reserve_id(&mut self, id: u64) {
        self.next_id = self.next_id.max(id);
    }

    pub fn user(&self, id: u64) -> Option<&SimUser> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn users_with(&self, role: Role) -> impl Iterator<Item = &SimUser> {
        self.users.iter().filter(move |u| u.role == role)
    }

    pub fn pipeline(&self, id: u64) -> Option<&SimPipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }

    /// The stage with this id in any pipeline, with its pipeline.
    pub fn stage(&self, stage_id: u64) -> Option<(&SimPipeline, &SimStage)> {
        self.pipelines
            .iter()
            .find_map(|p| p.stages.iter().find(|s| s.id == stage_id).map(|s| (p, s)))
    }

    /// The stage with this Bitrix24 STATUS_ID code.
    pub fn stage_by_code(&self, code: &str) -> Option<(&SimPipeline, &SimStage)> {
        self.pipelines
            .iter()
            .find_map(|p| p.stages.iter().find(|s| s.code == code).map(|s| (p, s)))
    }

    /// First stage of `kind` in a pipeline (its "won" or "lost" stage, or its first open stage).
    pub fn stage_of_kind(&self, pipeline_id: u64, kind: StageKind) -> Option<&SimStage> {
        self.pipeline(pipeline_id)?
            .stages
            .iter()
            .find(|s| s.kind == kind)
    }

    /// Digits of a phone string, with a Russian 8 prefix turned into 7 (how the fakes compare
    /// phones, as the real services do after their own normalisation).
    pub fn phone_key(raw: &str) -> String {
        let d: String = raw.chars().filter(|c| c.is_ascii_digit()).collect();
        match d.len() {
            11 if d.starts_with('8') => format!("7{}", &d[1..]),
            10 => format!("7{d}"),
            _ => d,
        }
    }

    /// Records matching a phone: (owner kind, id) for leads, contacts and companies.
    pub fn find_by_phone(&self, raw: &str) -> Vec<(Owner, u64)> {
        let key = Self::phone_key(raw);
        let mut out = Vec::new();
        for l in self.leads.values() {
            if l.phone
                .as_deref()
                .is_some_and(|p| Self::phone_key(p) == key)
            {
                out.push((Owner::Lead, l.id));
            }
        }
        for c in self.contacts.values() {
            if c.phones.iter().any(|p| Self::phone_key(p) == key) {
                out.push((Owner::Contact, c.id));
            }
        }
        for c in self.companies.values() {
            if c.phones.iter().any(|p| Self::phone_key(p) == key) {
                out.push((Owner::Company, c.id));
            }
        }
        out
    }
}
