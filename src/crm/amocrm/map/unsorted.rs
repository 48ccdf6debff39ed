//! amoCRM unsorted items («Неразобранное») as leads: their wire form, where each stands
//! (pending, accepted into a deal, declined) and the lead it becomes.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::{Lead, Pipeline, Semantics, Stage, Ts, Utm};

use super::{CustomField, MapResult, Ref, decode, field_values, opt_ts, ts, uid};

#[derive(Debug, Deserialize)]
pub(crate) struct WireUnsorted {
    pub(crate) uid: String,
    #[serde(default)]
    pub(crate) category: Option<String>,
    pub(crate) created_at: i64,
    #[serde(default)]
    pub(crate) updated_at: Option<i64>,
    #[serde(default)]
    pub(crate) responsible_user_id: Option<u64>,
    #[serde(default)]
    pub(crate) metadata: Value,
    #[serde(rename = "_embedded", default)]
    pub(crate) embedded: Option<UnsortedEmbedded>,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct UnsortedEmbedded {
    #[serde(default)]
    pub(crate) contacts: Option<Vec<WireUnsortedContact>>,
    #[serde(default)]
    pub(crate) companies: Option<Vec<Ref>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireUnsortedContact {
    #[serde(default)]
    pub(crate) id: Option<u64>,
    #[serde(default)]
    pub(crate) custom_fields_values: Option<Vec<CustomField>>,
}

/// Unsorted statuses as a pseudo pipeline (`leads`): waiting, accepted into a deal, declined.
pub(crate) const UNSORTED_OPEN: &str = "unsorted";

pub(crate) const UNSORTED_ACCEPTED: &str = "accepted";

pub(crate) const UNSORTED_DECLINED: &str = "declined";

/// Where an unsorted item stands. The API "Неразобранное" page: every item holds its lead
/// (`_embedded.leads`, one object) from creation, in the pipeline's unsorted status (the status
/// of `type` 1); «Принять» moves that lead to the next status, «Отклонить» removes it from the
/// pipeline. So holding a lead says nothing: the lead's status does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnsortedState {
    Pending,
    Accepted,
    Declined,
}

/// The id of the lead an unsorted item holds.
pub(crate) fn unsorted_lead_id(v: &Value) -> Option<u64> {
    v["_embedded"]["leads"]
        .as_array()?
        .iter()
        .find_map(|l| l["id"].as_u64())
}

/// The state an item's lead tells: still in an unsorted status (`unsorted_statuses`, the
/// statuses of `type` 1 in `/api/v4/leads/pipelines`) is pending, any other status accepted,
/// a lead the API no longer returns declined.
pub(crate) fn unsorted_state(
    lead: Option<&Value>,
    unsorted_statuses: &std::collections::HashSet<u64>,
) -> UnsortedState {
    match lead.map(|l| l["status_id"].as_u64()) {
        None => UnsortedState::Declined,
        Some(Some(s)) if !unsorted_statuses.contains(&s) => UnsortedState::Accepted,
        Some(_) => UnsortedState::Pending,
    }
}

/// The statuses of `type` 1 (the unsorted column) in a `/api/v4/leads/pipelines` answer.
pub(crate) fn unsorted_statuses(pipelines: &Value) -> std::collections::HashSet<u64> {
    let none = Vec::new();
    pipelines["_embedded"]["pipelines"]
        .as_array()
        .unwrap_or(&none)
        .iter()
        .flat_map(|p| p["_embedded"]["statuses"].as_array().unwrap_or(&none))
        .filter(|s| s["type"].as_u64() == Some(1))
        .filter_map(|s| s["id"].as_u64())
        .collect()
}

pub(crate) fn lead_pipeline() -> Pipeline {
    let stage = |id: &str, name: &str, sort, semantics| Stage {
        id: id.into(),
        pipeline_id: "leads".into(),
        name: name.into(),
        sort,
        semantics,
    };
    Pipeline {
        id: "leads".into(),
        name: "Неразобранное".into(),
        is_default: false,
        stages: vec![
            stage(UNSORTED_OPEN, "Неразобранное", 10, Semantics::Open),
            stage(UNSORTED_ACCEPTED, "Принято", 20, Semantics::Won),
            stage(UNSORTED_DECLINED, "Отклонено", 30, Semantics::Lost),
        ],
    }
}

/// The updated_at of an unsorted item (amoCRM may send only created_at).
pub(crate) fn unsorted_updated(v: &Value) -> Option<i64> {
    v["updated_at"]
        .as_i64()
        .or_else(|| v["created_at"].as_i64())
}

/// An unsorted item as listed: its lead in the unsorted status, so pending.
pub(crate) fn unsorted(v: &Value) -> MapResult<Lead> {
    unsorted_in(v, UnsortedState::Pending)
}

pub(super) fn state_status(state: UnsortedState) -> (&'static str, Semantics) {
    match state {
        UnsortedState::Pending => (UNSORTED_OPEN, Semantics::Open),
        UnsortedState::Accepted => (UNSORTED_ACCEPTED, Semantics::Won),
        UnsortedState::Declined => (UNSORTED_DECLINED, Semantics::Lost),
    }
}

/// A mirrored pending lead once its item was decided: accepted, its lead (`lead`, as
/// `GET /api/v4/leads` returns it) is now a deal with the same id, closed as a lead when that
/// lead last changed; declined, the lead is gone (`None`), closed `now`.
pub(crate) fn decided(
    pending: &Lead,
    state: UnsortedState,
    lead: Option<&Value>,
    now: Ts,
) -> MapResult<Lead> {
    let (status, semantics) = state_status(state);
    let at = match lead.and_then(|l| l["updated_at"].as_i64()) {
        Some(secs) => ts(secs)?,
        None => now,
    }
    .max(pending.updated_at);
    Ok(Lead {
        status_id: status.into(),
        semantics,
        closed_at: (state != UnsortedState::Pending).then_some(at),
        updated_at: at,
        deal_id: match state {
            UnsortedState::Declined => None,
            _ => pending.deal_id.clone(),
        },
        ..pending.clone()
    })
}

/// An unsorted item whose state its lead told.
// Long: one field of the item's metadata after another into one lead (phones, e-mails, title,
// UTM from the referer).
pub(crate) fn unsorted_in(v: &Value, state: UnsortedState) -> MapResult<Lead> {
    let u: WireUnsorted = decode(v)?;
    let m = &u.metadata;
    let s = |k: &str| match &m[k] {
        Value::String(x) if !x.is_empty() => Some(x.clone()),
        Value::Number(x) => Some(x.to_string()),
        _ => None,
    };
    let emb = u.embedded.unwrap_or_default();
    let mut phones: Vec<String> = s("phone").into_iter().collect();
    let mut emails = Vec::new();
    for c in emb.contacts.iter().flatten() {
        for p in field_values(&c.custom_fields_values, "PHONE") {
            if !phones.contains(&p) {
                phones.push(p);
            }
        }
        emails.extend(field_values(&c.custom_fields_values, "EMAIL"));
    }
    let category = u.category.unwrap_or_default();
    let title = s("form_name")
        .or_else(|| s("from").map(|f| format!("Звонок: {f}")))
        .or_else(|| s("phone").map(|p| format!("Звонок с {p}")))
        .unwrap_or_else(|| u.uid.clone());
    let mut utm = Utm::default();
    if let Some(referer) = s("referer")
        && let Ok(url) = url::Url::parse(&referer)
    {
        for (k, v) in url.query_pairs() {
            let v = Some(v.into_owned());
            match k.as_ref() {
                "utm_source" => utm.source = v,
                "utm_medium" => utm.medium = v,
                "utm_campaign" => utm.campaign = v,
                "utm_content" => utm.content = v,
                "utm_term" => utm.term = v,
                _ => {}
            }
        }
    }
    let responsible = uid(u.responsible_user_id).or_else(|| match &m["call_responsible"] {
        Value::Number(x) => uid(x.as_u64()),
        _ => None,
    });
    let created = ts(u.created_at)?;
    let (status, semantics) = state_status(state);
    Ok(Lead {
        id: u.uid.clone(),
        title,
        status_id: status.into(),
        semantics,
        responsible_id: responsible,
        source: Some(
            match category.as_str() {
                "sip" => "CALL",
                "forms" => "WEB",
                "mail" => "EMAIL",
                "chats" => "CHAT",
                other => other,
            }
            .to_string(),
        ),
        phones,
        emails,
        contact_id: emb
            .contacts
            .iter()
            .flatten()
            .find_map(|c| c.id)
            .map(|x| x.to_string()),
        company_id: emb
            .companies
            .iter()
            .flatten()
            .find_map(|c| c.id)
            .map(|x| x.to_string()),
        amount: 0.0,
        utm,
        created_at: created,
        updated_at: opt_ts(u.updated_at)?.unwrap_or(created),
        closed_at: None,
        deal_id: unsorted_lead_id(v).map(|id| id.to_string()),
    })
}
