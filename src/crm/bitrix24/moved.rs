//! A renamed portal: the old address answers 301/302 with the new one in `Location`
//! (bitrix24/b24restdocs `settings/how-to-call-rest-api/change-domen.md`). The new address is
//! kept in the store, so every later request (and every later start) goes there directly,
//! and the webhook receiver accepts events from it.
//!
//! Only the origin (`https://host[:port]`) is kept: the path of an inbound webhook carries its
//! secret, and the docs say to keep "the common path up to `/rest/`", which for dozor is the
//! configured path on the new host.

use chrono::Utc;
use serde_json::{Value, json};

use crate::config::Secret;
use crate::store::{TokenSet, TokenStore};

/// Token-store key of the moved address (beside the OAuth tokens under `bitrix24`).
pub(crate) const KEY: &str = "bitrix24.address";

/// `https://host[:port]` of `url`.
pub(super) fn origin(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let o = u.origin();
    o.is_tuple().then(|| o.ascii_serialization())
}

/// `url` with its origin replaced by `to` (path and query kept); `url` unchanged when either
/// does not parse.
pub(super) fn rebase(url: &str, to: &str) -> String {
    let (Ok(mut u), Ok(t)) = (url::Url::parse(url), url::Url::parse(to)) else {
        return url.to_string();
    };
    let moved = u.set_scheme(t.scheme()).is_ok()
        && u.set_host(t.host_str()).is_ok()
        && u.set_port(t.port()).is_ok();
    if moved {
        u.to_string()
    } else {
        url.to_string()
    }
}

/// The stored current origin of `tenant`'s portal, if it moved.
pub(crate) async fn load(tokens: &dyn TokenStore, tenant: &str) -> Option<String> {
    let set = tokens.load_token(tenant, KEY).await.ok()??;
    set.extra
        .get("origin")
        .and_then(Value::as_str)
        .and_then(origin)
}

/// Stores `to` as the current origin of `tenant`'s portal.
pub async fn save(
    tokens: &dyn TokenStore,
    tenant: &str,
    from: &str,
    to: &str,
) -> crate::store::Result<()> {
    let set = TokenSet {
        access_token: Secret::new(""),
        refresh_token: None,
        expires_at: None,
        refreshed_at: Some(Utc::now()),
        extra: json!({"origin": to, "moved_from": from}),
    };
    tokens.save_token(tenant, KEY, &set).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebases_keeping_the_path() {
        assert_eq!(
            origin("https://old.bitrix24.ru/rest/1/s3cr3t/crm.deal.add").as_deref(),
            Some("https://old.bitrix24.ru")
        );
        assert_eq!(
            rebase(
                "https://old.bitrix24.ru/rest/1/s3cr3t/crm.deal.add",
                "https://new.bitrix24.ru"
            ),
            "https://new.bitrix24.ru/rest/1/s3cr3t/crm.deal.add"
        );
        assert_eq!(
            rebase("http://127.0.0.1:1/b24/rest/batch", "http://127.0.0.1:2"),
            "http://127.0.0.1:2/b24/rest/batch"
        );
    }
}
