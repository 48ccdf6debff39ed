//! Entry points for the fuzz targets in `fuzz/`: each receiver's reading of a body, without the
//! HTTP layer, the token check or the store. `Ok` is what an accepted delivery is recorded as
//! (`event entity`), `Err` the message the receiver would answer with.

use super::amocrm::amocrm_delivery;
use super::bitrix24::bitrix24_delivery;
use super::comagic::comagic_delivery;
use super::telegram::telegram_delivery;
use super::{Reject, form};
use crate::telephony::comagic::Comagic;

/// A CoMagic mapper that is never used for requests (building one is not free: reuse it).
pub fn comagic_client() -> Comagic {
    crate::telephony::comagic::fuzzing::client()
}

fn message(r: Reject) -> String {
    r.answer().1
}

/// A Bitrix24 event form (`event=ONCRMDEALUPDATE&data[FIELDS][ID]=1&ts=...`).
pub fn bitrix24(body: &[u8]) -> Result<String, String> {
    bitrix24_delivery(&form(body))
        .map(|d| format!("{} {}", d.event, d.entity))
        .map_err(message)
}

/// An amoCRM webhook form (`leads[add][0][id]=1&account[subdomain]=acme`), for a tenant
/// whose account is `acme`.
pub fn amocrm(body: &[u8]) -> Result<String, String> {
    amocrm_delivery(&form(body), Some("acme"))
        .map(|d| d.entity)
        .map_err(message)
}

/// A CoMagic notification as a body (JSON or form) or, with an empty body, a query string.
pub fn comagic(mapper: &Comagic, body: &[u8], query: Option<&str>) -> Result<String, String> {
    comagic_delivery(mapper, body, query)
        .map(|(d, _)| format!("{} {}", d.event, d.entity))
        .map_err(message)
}

/// A Telegram update (JSON).
pub fn telegram(body: &[u8]) -> Result<String, String> {
    telegram_delivery(body)
        .map(|(d, _)| format!("{} {}", d.event, d.entity))
        .map_err(message)
}
