//! Bitrix24 events: `POST /hooks/bitrix24/{tenant}`, the token in `auth[application_token]`;
//! an event only wakes the tenant's cycle early.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;

use super::{
    Delivery, Reject, bad, body_of, check_secret, finish, form, hooks_of, host_port, missing,
    record, wake,
};
use crate::service::server::ServerState;

/// The delivery a Bitrix24 event form describes (`event`, `data[FIELDS][ID]`, `ts`), once its
/// token has been checked. Pure, so the fuzz target reaches it without the HTTP layer.
pub(super) fn bitrix24_delivery(f: &BTreeMap<String, String>) -> Result<Delivery, Reject> {
    let event = f
        .get("event")
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| missing("event"))?
        .to_ascii_uppercase();
    let entity = [
        "data[FIELDS][ID]",
        "data[FIELDS_AFTER][ID]",
        "data[FIELDS_BEFORE][ID]",
    ]
    .iter()
    .find_map(|k| f.get(*k).filter(|v| !v.is_empty()))
    .ok_or_else(|| missing("data[FIELDS][ID]"))?
    .clone();
    if !entity.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("field `data[FIELDS][ID]` must be a number"));
    }
    let ts = f
        .get("ts")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("ts"))?
        .clone();
    Ok(Delivery {
        source: "bitrix24",
        event,
        entity,
        ts,
    })
}

/// Whether `domain` is where the tenant's portal moved (as the connector learnt from the
/// portal's redirect): a renamed portal posts its events from the new address, and the
/// application token, checked before, is what authenticates them.
pub(super) async fn moved_to(store: &crate::store::Store, tenant: &str, domain: &str) -> bool {
    crate::crm::bitrix24::moved::load(store, tenant)
        .await
        .and_then(|o| host_port(&o))
        .is_some_and(|h| h.eq_ignore_ascii_case(domain))
}

pub(super) async fn bitrix24(
    State(s): State<ServerState>,
    Path(tenant): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let h = hooks_of(&s, &tenant)?;
        let token = h.cfg.bitrix24_token.as_ref().ok_or(Reject::NotFound)?;
        let body = body_of(body)?;
        let f = form(&body);
        check_secret(f.get("auth[application_token]").map(String::as_str), token)?;
        if let (Some(expected), Some(domain)) = (&h.b24_domain, f.get("auth[domain]"))
            && !domain.eq_ignore_ascii_case(expected)
            && !moved_to(&s.store, &tenant, domain).await
        {
            return Err(Reject::Forbidden(
                "auth[domain] is not this tenant's portal",
            ));
        }
        let d = bitrix24_delivery(&f)?;
        if !record(&s.store, &tenant, &d).await? {
            return Ok(("duplicate", format!("{} {}", d.event, d.entity)));
        }
        wake(h);
        Ok(("accepted", format!("{} {}", d.event, d.entity)))
    }
    .await;
    finish(&s, &tenant, "bitrix24", result).await
}
