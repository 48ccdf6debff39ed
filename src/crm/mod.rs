//! The one interface rules and sync use to talk to a CRM, whichever CRM it is.
//!
//! Everything here is in domain terms; `bitrix24/` and `amocrm/` translate to their wire formats.
//! Paging is cursor-based so a sync can stop after any page (crash, shutdown) and resume there.

pub mod amocrm;
pub mod bitrix24;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{CrmKind, EntityKind, EntityRef, Lead, Pipeline, Record, Ts, User};

pub type Result<T> = std::result::Result<T, crate::http::Error>;

/// Where an incremental read of one entity kind stands. Stored after every page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Read records modified at or after this moment (`None` = everything).
    pub since: Option<Ts>,
    /// Connector-specific position inside the current pass (Bitrix24: last ID; amoCRM: page).
    pub position: Option<String>,
    /// The newest modification time seen in the current pass; becomes `since` when it ends.
    pub high_water: Option<Ts>,
}

/// One page of an incremental read.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<Record>,
    /// Where to continue. When `done`, `next.position` is `None` and `next.high_water` holds the
    /// newest modification time of the whole pass.
    pub next: Cursor,
    /// The pass has reached the end: nothing more to read until records change again.
    pub done: bool,
    /// Ids of records of this kind deleted in the CRM, for connectors with a deletion feed
    /// (amoCRM events). Connectors without one answer [`Crm::existing_ids`] instead.
    pub deleted: Vec<String>,
}

/// A task dozor asks the CRM to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    pub title: String,
    /// Carries the action ledger's marker so a crashed write can be found again.
    pub description: String,
    pub responsible_id: String,
    pub deadline: Ts,
    pub entity: Option<EntityRef>,
}

/// A lead dozor creates (an unknown caller, a form request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewLead {
    pub title: String,
    /// The person's name as far as it is known.
    pub name: String,
    /// E.164 (`+79991234567`).
    pub phone: Option<String>,
    /// Source code in dozor's terms: `CALL`, `WEB`, `EMAIL`, `OTHER`.
    pub source: String,
    pub utm: crate::domain::Utm,
    pub responsible_id: Option<String>,
    /// Free text; carries the ledger marker.
    pub comment: String,
}

/// A deal dozor creates (a lead without a deal, a repeat order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDeal {
    pub title: String,
    /// `None` = the default pipeline and its first stage.
    pub pipeline_id: Option<String>,
    pub stage_id: Option<String>,
    pub responsible_id: Option<String>,
    pub contact_id: Option<String>,
    pub company_id: Option<String>,
    pub lead_id: Option<String>,
    pub amount: f64,
    /// Free text; carries the ledger marker.
    pub comment: String,
}

/// A contact dozor creates (amoCRM only logs calls for numbers that belong to a contact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewContact {
    pub name: String,
    /// E.164.
    pub phone: String,
    pub responsible_id: Option<String>,
}

/// A telephony call to put on the CRM timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The telephony call id: the CRM stores it so the call is never registered twice.
    pub external_id: String,
    pub direction: crate::domain::Direction,
    /// The client's number, E.164.
    pub phone: String,
    pub started_at: Ts,
    /// Talk seconds (0 = not answered).
    pub duration_s: i64,
    pub answered: bool,
    pub responsible_id: Option<String>,
    pub recording_url: Option<String>,
    /// Where to attach it when known (a contact, company, lead or deal).
    pub entity: Option<EntityRef>,
}

/// A CRM account as dozor sees it.
#[async_trait]
pub trait Crm: Send + Sync {
    fn kind(&self) -> CrmKind;

    /// The account's name for humans and logs: portal host or amoCRM subdomain.
    fn account(&self) -> String;

    /// Checks the credentials with one cheap call; returns who we are authenticated as.
    async fn ping(&self) -> Result<String>;

    async fn users(&self) -> Result<Vec<User>>;

    /// Deal pipelines with their stages, plus the lead statuses as a pipeline with id `leads`.
    async fn pipelines(&self) -> Result<Vec<Pipeline>>;

    /// The next page of records of `entity` changed since `cursor.since`.
    async fn fetch_page(&self, entity: EntityKind, cursor: &Cursor) -> Result<Page>;

    /// Leads, contacts and companies whose phone is `e164` (`+79991234567`).
    async fn find_by_phone(&self, e164: &str) -> Result<Vec<EntityRef>>;

    /// Creates a task; returns its id.
    async fn create_task(&self, task: &NewTask) -> Result<String>;

    /// Adds a timeline comment (Bitrix24) or a common note (amoCRM); returns its id.
    async fn add_comment(&self, entity: &EntityRef, text: &str) -> Result<String>;

    /// First pages of every kind in `cursors` that may have changed, in as few requests as the
    /// CRM allows: an idle cycle (nothing changed) must cost at most one request (Bitrix24: one
    /// `batch`; amoCRM: one events query). Kinds left out of the answer are unchanged; a page
    /// that is not `done` is continued with [`Crm::fetch_page`].
    async fn fetch_changes(
        &self,
        cursors: &[(EntityKind, Cursor)],
    ) -> Result<Vec<(EntityKind, Page)>> {
        let mut out = Vec::with_capacity(cursors.len());
        for (kind, cursor) in cursors {
            out.push((*kind, self.fetch_page(*kind, cursor).await?));
        }
        Ok(out)
    }

    /// Kinds the last [`Crm::fetch_changes`] could not read because the credentials lack a
    /// permission (a Bitrix24 scope), each with the refusal. They were left out of its answer;
    /// the sync mirrors every other kind and then reports these.
    fn refused_kinds(&self) -> Vec<(EntityKind, crate::http::Error)> {
        Vec::new()
    }

    /// Whether `e` (from [`Crm::users`] or [`Crm::pipelines`]) refuses the call because the
    /// credentials lack a permission (a Bitrix24 scope). The sync then mirrors everything else
    /// and reports it, as for [`Crm::refused_kinds`]; any other error stops the sync.
    fn is_refusal(&self, _e: &crate::http::Error) -> bool {
        false
    }

    /// Every id of `entity` that still exists, for CRMs without a deletion feed (the sync marks
    /// the rest of the mirror deleted). `None`: deletions arrive in [`Page::deleted`] instead.
    async fn existing_ids(&self, _entity: EntityKind) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    /// Whether a lead leaves the CRM's lead list once it is decided, so that reading the list
    /// never shows the outcome (amoCRM: an unsorted item leaves `/api/v4/leads/unsorted` when it
    /// is accepted or declined). The sync then asks [`Crm::lead_outcomes`] about the leads the
    /// mirror holds open, in cycles where deals or leads changed.
    fn leads_leave_their_list(&self) -> bool {
        false
    }

    /// The leads of `open` (open in the mirror) that the CRM now reports decided, each with its
    /// new status, semantics and close time; leads still pending are left out. Only called
    /// when [`Crm::leads_leave_their_list`] says so.
    async fn lead_outcomes(&self, _open: &[Lead]) -> Result<Vec<Lead>> {
        Ok(Vec::new())
    }

    /// Creates a lead (Bitrix24 lead; amoCRM unsorted item); returns its id.
    async fn create_lead(&self, lead: &NewLead) -> Result<String>;

    /// Creates a deal; returns its id.
    async fn create_deal(&self, deal: &NewDeal) -> Result<String>;

    /// Creates a contact; returns its id.
    async fn create_contact(&self, contact: &NewContact) -> Result<String>;

    /// Hands a lead, deal, contact, company or task to another user.
    async fn set_responsible(&self, entity: &EntityRef, user_id: &str) -> Result<()>;

    /// Moves a deal to another stage of its pipeline.
    async fn move_deal(&self, deal_id: &str, stage_id: &str) -> Result<()>;

    /// Closes a deal as lost with a reason ("не дозвонились").
    async fn close_deal_lost(&self, deal_id: &str, reason: &str) -> Result<()>;

    /// Adds and removes flags (amoCRM tags; Bitrix24 the configured `flag_field`).
    async fn update_tags(
        &self,
        entity: &EntityRef,
        add: &[String],
        remove: &[String],
    ) -> Result<()>;

    /// Marks a task done with a result text.
    async fn complete_task(&self, task_id: &str, result: &str) -> Result<()>;

    /// Puts a telephony call on the CRM timeline; returns the CRM's id of the call record.
    async fn register_call(&self, call: &CallRecord) -> Result<String>;
}
