//! Where each fake of a simulator served at `base` (`http://127.0.0.1:PORT`) is reached: what a
//! [`SimHandle`](super::SimHandle) hands to tests and what the served tenant config points at.

use super::Credentials;

/// Bitrix24 inbound-webhook URL (ends with `/`).
pub fn b24_webhook(base: &str, c: &Credentials) -> String {
    format!(
        "{base}/b24/rest/{}/{}/",
        c.b24_webhook_user, c.b24_webhook_secret
    )
}

/// The Bitrix24 portal address (OAuth apps call `{portal}/rest/{method}`).
pub fn b24_portal(base: &str) -> String {
    format!("{base}/b24")
}

pub fn amo(base: &str) -> String {
    format!("{base}/amo")
}

pub fn comagic(base: &str) -> String {
    format!("{base}/comagic/v2.0")
}

pub fn calltouch(base: &str) -> String {
    format!("{base}/calltouch")
}

pub fn telegram(base: &str) -> String {
    format!("{base}/telegram")
}
