//! dozor: keeps a sales department's CRM honest.
//!
//! Data flows one way: sources (CRM, telephony, webhooks) are synced into a local mirror,
//! rules read the mirror and propose actions, the ledger executes each action exactly once,
//! and reports read the mirror and the ledger. See README.md for the operator's view.

pub mod bot;
pub mod cli;
pub mod config;
pub mod crm;
pub mod domain;
pub mod engine;
pub mod http;
pub mod ledger;
pub mod matching;
pub mod notify;
pub mod report;
pub mod rules;
pub mod service;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod telephony;
pub mod tenant;
