//! The one interface rules and sync use to talk to a CRM, whichever CRM it is.
//!
//! Everything here is in domain terms; `bitrix24/` and `amocrm/` translate to their wire formats.
//! Paging is cursor-based so a sync can stop after any page (crash, shutdown) and resume there.

pub mod amocrm;
pub mod bitrix24;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{CrmKind, EntityKind, EntityRef, Pipeline, Record, Ts, User};

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
}
