//! The normalised domain: what a lead, deal, task or call is, independent of any CRM,
//! plus the two pieces of logic every rule needs: phone numbers and business time.

pub mod abc;
pub(crate) mod bounds;
pub(crate) mod calendar;
pub(crate) mod model;
pub mod phone;
pub(crate) mod plural;

pub use model::*;
