//! The interface to telephony services (CoMagic, Calltouch), in domain terms.

pub mod calltouch;
pub mod comagic;
mod lenient;
mod retry;

use async_trait::async_trait;

use crate::domain::{Call, Employee, TelephonyKind, Ts};

pub(crate) type Result<T> = std::result::Result<T, crate::http::Error>;

/// A telephony account as dozor sees it.
#[async_trait]
pub trait Telephony: Send + Sync {
    fn kind(&self) -> TelephonyKind;

    /// The account's name for humans and logs (CoMagic host, Calltouch site id).
    fn account(&self) -> String;

    /// Checks the credentials with one cheap call; returns a short description of the account.
    async fn ping(&self) -> Result<String>;

    /// The people who answer calls (for matching them to CRM users).
    async fn employees(&self) -> Result<Vec<Employee>>;

    /// Every call session that started in `[from, till)`, oldest first.
    async fn calls(&self, from: Ts, till: Ts) -> Result<Vec<Call>>;
}
