//! Telegram updates: `POST /hooks/telegram/{tenant}`, the token in
//! `X-Telegram-Bot-Api-Secret-Token`; updates are queued for the bot.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    Delivery, Reject, bad, body_of, check_secret, finish, forget, hooks_of, missing, record,
};
use crate::notify::telegram::Update;
use crate::service::server::ServerState;

/// The delivery a Telegram update describes (its `update_id`) and the update itself. Pure, so
/// the fuzz target reaches it without the HTTP layer.
pub(super) fn telegram_delivery(body: &[u8]) -> Result<(Delivery, Update), Reject> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not valid JSON: {e}")))?;
    let id = value
        .get("update_id")
        .ok_or_else(|| missing("update_id"))?
        .as_i64()
        .ok_or_else(|| bad("field `update_id` must be an integer"))?;
    let update: Update =
        serde_json::from_value(value).map_err(|e| bad(format!("not a Telegram update: {e}")))?;
    let d = Delivery {
        source: "telegram",
        event: "update".into(),
        entity: id.to_string(),
        ts: String::new(),
    };
    Ok((d, update))
}

pub(super) async fn telegram(
    State(s): State<ServerState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let h = hooks_of(&s, &tenant)?;
        let expected = h.cfg.telegram_secret.as_ref().ok_or(Reject::NotFound)?;
        let presented = headers
            .get("x-telegram-bot-api-secret-token")
            .and_then(|v| v.to_str().ok());
        check_secret(presented, expected)?;
        let body = body_of(body)?;
        let (d, update) = telegram_delivery(&body)?;
        let id = d.entity.clone();
        if !record(&s.store, &tenant, &d).await? {
            return Ok(("duplicate", format!("update {id}")));
        }
        if let Some(tx) = &h.telegram {
            match tx.try_send(update) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Let Telegram deliver it again later.
                    forget(&s.store, &tenant, &d).await;
                    return Err(Reject::Unavailable("update queue full; retry later"));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::warn!(tenant = %tenant, update_id = id, "no bot is reading updates; update dropped");
                }
            }
        }
        Ok(("accepted", format!("update {id}")))
    }
    .await;
    finish(&s, &tenant, "telegram", result).await
}
