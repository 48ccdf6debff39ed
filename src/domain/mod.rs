//! The normalised domain: what a lead, deal, task or call is, independent of any CRM,
//! plus the two pieces of logic every rule needs: phone numbers and business time.

pub mod abc;
pub mod bounds;
pub mod calendar;
pub mod model;
pub mod phone;
pub mod plural;

pub use model::*;
