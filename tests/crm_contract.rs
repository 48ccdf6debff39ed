//! Behaviour both CRM connectors owe the sync and the rules, written once and run for Bitrix24
//! and amoCRM against the simulator over real HTTP. Each scenario reads what differs between
//! the two (figures, the world it needs) from `common::crm::CrmCase`; what only one CRM has
//! stays in its own suite.

mod common;

/// Runs each scenario once per CRM: `…::bitrix24::NAME` and `…::amocrm::NAME`, under
/// `#[tokio::test]` or the test attribute given first.
macro_rules! for_each_crm {
    (#[$test:meta] $($scenario:ident),* $(,)?) => {
        mod bitrix24 {
            $(#[$test]
            async fn $scenario() {
                super::$scenario(super::CrmCase::Bitrix24).await
            })*
        }
        mod amocrm {
            $(#[$test]
            async fn $scenario() {
                super::$scenario(super::CrmCase::Amocrm).await
            })*
        }
    };
    ($($scenario:ident),* $(,)?) => {
        for_each_crm!(#[tokio::test] $($scenario),*);
    };
}

mod crm_contract {
    mod auth;
    mod calls;
    mod faults;
    mod reads;
    mod sync;
    mod writes;
}
