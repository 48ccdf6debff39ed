//! CoMagic notifications: `POST|GET /hooks/comagic/{tenant}/{secret}`; the call is read back
//! from the CoMagic API by its session id before it enters the mirror.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{
    Delivery, Reject, bad, body_of, check_secret, finish, form, hooks_of, missing, record,
};
use crate::service::server::ServerState;
use crate::store::Store;
use crate::telephony::comagic::Comagic;

/// What a CoMagic notification says happened to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallEvent {
    /// Ringing: not yet answered nor missed, so nothing to store.
    Start,
    Answered,
    End,
    Lost,
}

pub(super) fn classify(event: &str) -> Option<CallEvent> {
    let e = event.to_ascii_lowercase();
    if ["lost", "missed", "miss", "unanswered", "no_answer"]
        .iter()
        .any(|w| e.contains(w))
    {
        Some(CallEvent::Lost)
    } else if ["end", "finish", "complete", "hangup"]
        .iter()
        .any(|w| e.contains(w))
    {
        Some(CallEvent::End)
    } else if e.contains("answer") || e.contains("talk") {
        Some(CallEvent::Answered)
    } else if ["start", "incoming", "outgoing", "begin", "ring"]
        .iter()
        .any(|w| e.contains(w))
    {
        Some(CallEvent::Start)
    } else {
        None
    }
}

/// The notification's fields, from a JSON body, a form body or the query string.
pub(super) fn comagic_fields(
    body: &[u8],
    query: Option<&str>,
) -> Result<BTreeMap<String, Value>, Reject> {
    let trimmed = body.trim_ascii();
    if trimmed.first() == Some(&b'{') {
        match serde_json::from_slice::<Value>(trimmed) {
            Ok(Value::Object(m)) => Ok(m.into_iter().collect()),
            Ok(_) => Err(bad("body must be a JSON object")),
            Err(e) => Err(bad(format!("body is not valid JSON: {e}"))),
        }
    } else if !trimmed.is_empty() {
        Ok(form(trimmed)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect())
    } else {
        Ok(form(query.unwrap_or_default().as_bytes())
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect())
    }
}

pub(super) fn field_text(f: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    match f.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A duration field of a call: absent, or 0 s to a day.
pub(super) fn field_int(f: &BTreeMap<String, Value>, key: &str) -> Result<Option<i64>, Reject> {
    match f.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => crate::domain::bounds::call_seconds(v)
            .map(Some)
            .ok_or_else(|| {
                bad(format!(
                    "field `{key}` must be a number of seconds from 0 to 86400"
                ))
            }),
    }
}

/// Turns a notification into a `get.calls_report` row, so the poller's mapping reads it.
pub(super) fn comagic_row(f: &BTreeMap<String, Value>, event: CallEvent) -> Result<Value, Reject> {
    let id = field_text(f, "call_session_id").ok_or_else(|| missing("call_session_id"))?;
    if !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("field `call_session_id` must be a number"));
    }
    let direction = match field_text(f, "direction").map(|d| d.to_ascii_lowercase()) {
        Some(d) if ["in", "incoming", "inbound"].contains(&d.as_str()) => "in",
        Some(d) if ["out", "outgoing", "outbound"].contains(&d.as_str()) => "out",
        Some(_) => return Err(bad("field `direction` must be `in` or `out`")),
        None if event == CallEvent::Lost => "in",
        None => return Err(missing("direction")),
    };
    let start = field_text(f, "start_time").ok_or_else(|| missing("start_time"))?;
    let phone =
        field_text(f, "contact_phone_number").ok_or_else(|| missing("contact_phone_number"))?;
    let talk = field_int(f, "talk_time_duration")?;
    let total = field_int(f, "total_time_duration")?;
    let is_lost = match field_text(f, "is_lost").map(|v| v.to_ascii_lowercase()) {
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" => false,
        Some(_) => return Err(bad("field `is_lost` must be true or false")),
        None => match event {
            CallEvent::Lost => true,
            CallEvent::Answered => false,
            CallEvent::End => match talk {
                Some(t) => t == 0,
                None => return Err(missing("talk_time_duration")),
            },
            CallEvent::Start => unreachable!("start events are not stored"),
        },
    };
    let talk = talk.unwrap_or(0);
    let wait = total.map(|t| (t - talk).max(0)).unwrap_or(0);
    let mut row = json!({
        "id": id,
        "start_time": start,
        "direction": direction,
        "is_lost": is_lost,
        "talk_duration": talk,
        "wait_duration": wait,
        "contact_phone_number": phone,
        "virtual_phone_number": field_text(f, "virtual_phone_number"),
        "source": field_text(f, "call_source"),
    });
    if let Some(emp) = field_text(f, "employee_id").filter(|e| e != "null" && e != "0") {
        row["employees"] = json!([{
            "employee_id": emp,
            "employee_full_name": field_text(f, "employee_full_name"),
            "is_answered": !is_lost,
            "is_talked": !is_lost && talk > 0,
        }]);
    }
    Ok(row)
}

/// The delivery a CoMagic notification describes, and the call it carries (none for a call
/// that is only ringing), mapped by the poller's own mapping. The notification comes as a JSON
/// object, a form body or a query string. Pure, so the fuzz target reaches it without the HTTP
/// layer.
pub(super) fn comagic_delivery(
    mapper: &Comagic,
    body: &[u8],
    query: Option<&str>,
) -> Result<(Delivery, Option<crate::domain::Call>), Reject> {
    let f = comagic_fields(body, query)?;
    let event_name = field_text(&f, "notification_mnemonic")
        .or_else(|| field_text(&f, "event"))
        .ok_or_else(|| missing("notification_mnemonic"))?;
    let event = classify(&event_name).ok_or_else(|| {
        bad("field `notification_mnemonic` must name a call start, answer, end or lost call")
    })?;
    let id = field_text(&f, "call_session_id").ok_or_else(|| missing("call_session_id"))?;
    let call = if event == CallEvent::Start {
        None
    } else {
        let row = comagic_row(&f, event)?;
        Some(mapper.map_call(&row).map_err(|(_, why)| {
            bad(format!(
                "cannot read the call: {why} (field `{}`)",
                why.rsplit(' ').next().unwrap_or(why)
            ))
        })?)
    };
    let ts = field_text(&f, "notification_timestamp")
        .or_else(|| field_text(&f, "notification_time"))
        .or_else(|| field_text(&f, "start_time"))
        .unwrap_or_default();
    let d = Delivery {
        source: "comagic",
        event: format!("{event:?}").to_ascii_lowercase(),
        entity: id,
        ts,
    };
    Ok((d, call))
}

pub(super) async fn comagic(
    State(s): State<ServerState>,
    Path((tenant, secret)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let h = hooks_of(&s, &tenant)?;
        let expected = h.cfg.comagic_secret.as_ref().ok_or(Reject::NotFound)?;
        check_secret(Some(&secret), expected)?;
        let Some(mapper) = h.comagic.clone() else {
            return Err(Reject::NotFound);
        };
        let body = body_of(body)?;
        let (d, call) = comagic_delivery(&mapper, &body, query.as_deref())?;
        let id = d.entity.clone();
        if !record(&s.store, &tenant, &d).await? {
            return Ok(("duplicate", format!("{} {id}", d.event)));
        }
        if call.is_some() {
            tokio::spawn(confirm_call(
                s.store.clone(),
                mapper,
                h.wake.clone(),
                tenant.clone(),
                id.clone(),
            ));
        }
        Ok(("accepted", format!("{} {id}", d.event)))
    }
    .await;
    finish(&s, &tenant, "comagic", result).await
}

/// Reads the notified call from the CoMagic API and stores what the API says, then wakes the
/// tenant's cycle. The notification itself is never stored: anyone who learns the path secret
/// could otherwise put any number in the mirror and have dozor create leads and tasks for it.
pub(super) async fn confirm_call(
    store: Store,
    api: Arc<Comagic>,
    wake: Arc<Notify>,
    tenant: String,
    id: String,
) {
    match api.call_by_id(&id, Utc::now()).await {
        Ok(Some(call)) => match store.upsert_calls(&tenant, &[call]).await {
            Ok(()) => wake.notify_one(),
            Err(e) => {
                tracing::error!(tenant = %tenant, call_id = %id, error = %e, "cannot store a confirmed call; polling will pick it up");
            }
        },
        Ok(None) => {
            tracing::warn!(tenant = %tenant, source = "comagic", call_id = %id, "notified call is not in the CoMagic API; nothing stored");
        }
        Err(e) => {
            // The API is unreachable now: the next polling cycle reads the call if it exists.
            tracing::warn!(tenant = %tenant, call_id = %id, error = %e, "cannot confirm a notified call now; polling will read it");
            wake.notify_one();
        }
    }
}
