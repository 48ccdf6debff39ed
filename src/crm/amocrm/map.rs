//! amoCRM wire records and their mapping into the domain model.
//!
//! Wire structs are lenient (unknown fields ignored, optional fields defaulted) but the fields a
//! record cannot exist without (`id`, timestamps) are required, so a changed payload surfaces as
//! a decode error instead of silently empty records.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::{
    Activity, ActivityKind, Company, Contact, Deal, Direction, EntityKind, EntityRef, Lead,
    Pipeline, Semantics, Stage, Task, Ts, User, Utm,
};

pub const WON: u64 = 142;
pub const LOST: u64 = 143;

pub type MapResult<T> = Result<T, String>;

pub fn ts(secs: i64) -> MapResult<Ts> {
    crate::domain::bounds::from_unix(secs)
        .ok_or_else(|| format!("timestamp {secs} is outside 2000-2099"))
}

fn opt_ts(secs: Option<i64>) -> MapResult<Option<Ts>> {
    secs.filter(|s| *s > 0).map(ts).transpose()
}

/// Deserialises one item, naming the failing field path.
pub fn decode<T: for<'de> Deserialize<'de>>(v: &Value) -> MapResult<T> {
    serde_path_to_error::deserialize(v).map_err(|e| format!("at {}: {}", e.path(), e.inner()))
}

#[derive(Debug, Deserialize, Default)]
pub struct Ref {
    pub id: Option<u64>,
    #[serde(default)]
    pub is_main: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct Tag {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct CustomField {
    #[serde(default)]
    pub field_code: Option<String>,
    #[serde(default)]
    pub values: Option<Vec<CustomValue>>,
}

#[derive(Debug, Deserialize)]
pub struct CustomValue {
    #[serde(default)]
    pub value: Value,
}

/// Values of the multitext field with `field_code` (PHONE, EMAIL).
pub fn field_values(cfs: &Option<Vec<CustomField>>, code: &str) -> Vec<String> {
    cfs.iter()
        .flatten()
        .filter(|cf| cf.field_code.as_deref() == Some(code))
        .flat_map(|cf| cf.values.iter().flatten())
        .filter_map(|v| match &v.value {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Deserialize, Default)]
pub struct Embedded {
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
    #[serde(default)]
    pub contacts: Option<Vec<Ref>>,
    #[serde(default)]
    pub companies: Option<Vec<Ref>>,
}

fn tag_names(e: &Option<Embedded>) -> Vec<String> {
    e.as_ref()
        .and_then(|e| e.tags.as_ref())
        .map(|t| t.iter().map(|t| t.name.clone()).collect())
        .unwrap_or_default()
}

fn first_company(e: &Option<Embedded>) -> Option<String> {
    e.as_ref()?
        .companies
        .as_ref()?
        .iter()
        .find_map(|c| c.id)
        .map(|id| id.to_string())
}

fn main_contact(e: &Option<Embedded>) -> Option<String> {
    let contacts = e.as_ref()?.contacts.as_ref()?;
    contacts
        .iter()
        .find(|c| c.is_main == Some(true) && c.id.is_some())
        .or_else(|| contacts.iter().find(|c| c.id.is_some()))
        .and_then(|c| c.id)
        .map(|id| id.to_string())
}

fn uid(v: Option<u64>) -> Option<String> {
    v.filter(|x| *x > 0).map(|x| x.to_string())
}

#[derive(Debug, Deserialize)]
pub struct WireLead {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub responsible_user_id: Option<u64>,
    pub status_id: u64,
    pub pipeline_id: u64,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub closed_at: Option<i64>,
    #[serde(rename = "_embedded", default)]
    pub embedded: Option<Embedded>,
}

pub fn semantics(status_id: u64) -> Semantics {
    match status_id {
        WON => Semantics::Won,
        LOST => Semantics::Lost,
        _ => Semantics::Open,
    }
}

pub fn deal(v: &Value, currency: &str) -> MapResult<Deal> {
    let l: WireLead = decode(v)?;
    Ok(Deal {
        id: l.id.to_string(),
        title: l.name.unwrap_or_default(),
        pipeline_id: l.pipeline_id.to_string(),
        stage_id: l.status_id.to_string(),
        semantics: semantics(l.status_id),
        amount: l
            .price
            .and_then(crate::domain::bounds::money)
            .unwrap_or(0.0),
        currency: currency.to_string(),
        responsible_id: uid(l.responsible_user_id),
        contact_id: main_contact(&l.embedded),
        company_id: first_company(&l.embedded),
        lead_id: None,
        source: None,
        tags: tag_names(&l.embedded),
        created_at: ts(l.created_at)?,
        updated_at: ts(l.updated_at)?,
        closed_at: opt_ts(l.closed_at)?,
    })
}

#[derive(Debug, Deserialize)]
pub struct WirePerson {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub responsible_user_id: Option<u64>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub custom_fields_values: Option<Vec<CustomField>>,
    #[serde(rename = "_embedded", default)]
    pub embedded: Option<Embedded>,
}

impl WirePerson {
    fn display_name(&self) -> String {
        match self.name.as_deref().filter(|n| !n.trim().is_empty()) {
            Some(n) => n.to_string(),
            None => [self.first_name.as_deref(), self.last_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

pub fn contact(v: &Value) -> MapResult<Contact> {
    let c: WirePerson = decode(v)?;
    Ok(Contact {
        id: c.id.to_string(),
        name: c.display_name(),
        phones: field_values(&c.custom_fields_values, "PHONE"),
        emails: field_values(&c.custom_fields_values, "EMAIL"),
        company_id: first_company(&c.embedded),
        responsible_id: uid(c.responsible_user_id),
        tags: tag_names(&c.embedded),
        created_at: ts(c.created_at)?,
        updated_at: ts(c.updated_at)?,
    })
}

pub fn company(v: &Value) -> MapResult<Company> {
    let c: WirePerson = decode(v)?;
    Ok(Company {
        id: c.id.to_string(),
        name: c.display_name(),
        phones: field_values(&c.custom_fields_values, "PHONE"),
        emails: field_values(&c.custom_fields_values, "EMAIL"),
        responsible_id: uid(c.responsible_user_id),
        tags: tag_names(&c.embedded),
        created_at: ts(c.created_at)?,
        updated_at: ts(c.updated_at)?,
    })
}

/// `leads`/`contacts`/`companies` (tasks and notes) to a domain kind.
pub fn entity_kind(plural: &str) -> Option<EntityKind> {
    match plural {
        "leads" | "lead" => Some(EntityKind::Deal),
        "contacts" | "contact" => Some(EntityKind::Contact),
        "companies" | "company" => Some(EntityKind::Company),
        _ => None,
    }
}

/// The amoCRM entity path segment for a domain kind, when amoCRM has one.
pub fn entity_plural(kind: EntityKind) -> Option<&'static str> {
    match kind {
        EntityKind::Deal => Some("leads"),
        EntityKind::Contact => Some("contacts"),
        EntityKind::Company => Some("companies"),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
pub struct WireTask {
    pub id: u64,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub entity_id: Option<u64>,
    #[serde(default)]
    pub entity_type: Option<String>,
    #[serde(default)]
    pub responsible_user_id: Option<u64>,
    #[serde(default)]
    pub complete_till: Option<i64>,
    #[serde(default)]
    pub is_completed: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn task(v: &Value) -> MapResult<Task> {
    let t: WireTask = decode(v)?;
    let text = t.text.unwrap_or_default();
    let (title, description) = match text.split_once('\n') {
        Some((a, b)) => (a.trim().to_string(), b.trim().to_string()),
        None => (text.trim().to_string(), String::new()),
    };
    let entity = match (t.entity_type.as_deref().and_then(entity_kind), t.entity_id) {
        (Some(kind), Some(id)) if id > 0 => Some(EntityRef::new(kind, id.to_string())),
        _ => None,
    };
    let updated = ts(t.updated_at)?;
    Ok(Task {
        id: t.id.to_string(),
        title,
        description,
        responsible_id: uid(t.responsible_user_id),
        deadline: opt_ts(t.complete_till)?,
        completed: t.is_completed,
        // amoCRM keeps no completion time; the last change is the closest thing.
        completed_at: t.is_completed.then_some(updated),
        entity,
        created_at: ts(t.created_at)?,
        updated_at: updated,
    })
}

#[derive(Debug, Deserialize)]
pub struct WireNote {
    pub id: u64,
    pub entity_id: u64,
    pub note_type: String,
    #[serde(default)]
    pub params: Value,
    #[serde(default)]
    pub responsible_user_id: Option<u64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A call note as an activity; other note types give `None`.
pub fn call_note(v: &Value, entity: &str) -> MapResult<Option<Activity>> {
    let n: WireNote = decode(v)?;
    let direction = match n.note_type.as_str() {
        "call_in" => Direction::In,
        "call_out" => Direction::Out,
        _ => return Ok(None),
    };
    let p = &n.params;
    let text = |k: &str| match &p[k] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(x) => Some(x.to_string()),
        _ => None,
    };
    let duration = match &p["duration"] {
        Value::Null => None,
        v => Some(crate::domain::bounds::call_seconds(v).ok_or_else(|| {
            format!(
                "note {}: params.duration is not a duration of 0 s to 1 day",
                n.id
            )
        })?),
    };
    let responsible = uid(n.responsible_user_id).or_else(|| match &p["call_responsible"] {
        Value::Number(x) => x.as_u64().and_then(|x| uid(Some(x))),
        _ => None,
    });
    let created = ts(n.created_at)?;
    Ok(Some(Activity {
        id: n.id.to_string(),
        kind: ActivityKind::Call,
        direction: Some(direction),
        subject: text("call_result").unwrap_or_else(|| "Звонок".into()),
        entity: entity_kind(entity).map(|k| EntityRef::new(k, n.entity_id.to_string())),
        responsible_id: responsible,
        phone: text("phone"),
        duration_s: duration,
        completed: true,
        external_id: text("uniq"),
        started_at: created,
        created_at: created,
        updated_at: ts(n.updated_at)?,
    }))
}

#[derive(Debug, Deserialize)]
pub struct WireUnsorted {
    pub uid: String,
    #[serde(default)]
    pub category: Option<String>,
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub responsible_user_id: Option<u64>,
    #[serde(default)]
    pub metadata: Value,
    #[serde(rename = "_embedded", default)]
    pub embedded: Option<UnsortedEmbedded>,
}

#[derive(Debug, Deserialize, Default)]
pub struct UnsortedEmbedded {
    #[serde(default)]
    pub contacts: Option<Vec<WireUnsortedContact>>,
    #[serde(default)]
    pub companies: Option<Vec<Ref>>,
}

#[derive(Debug, Deserialize)]
pub struct WireUnsortedContact {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub custom_fields_values: Option<Vec<CustomField>>,
}

/// Unsorted statuses as a pseudo pipeline (`leads`): waiting, accepted into a deal, declined.
pub const UNSORTED_OPEN: &str = "unsorted";
pub const UNSORTED_ACCEPTED: &str = "accepted";
pub const UNSORTED_DECLINED: &str = "declined";

/// Where an unsorted item stands. The API "Неразобранное" page: every item holds its lead
/// (`_embedded.leads`, one object) from creation, in the pipeline's unsorted status (the status
/// of `type` 1); «Принять» moves that lead to the next status, «Отклонить» removes it from the
/// pipeline. So holding a lead says nothing: the lead's status does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsortedState {
    Pending,
    Accepted,
    Declined,
}

/// The id of the lead an unsorted item holds.
pub fn unsorted_lead_id(v: &Value) -> Option<u64> {
    v["_embedded"]["leads"]
        .as_array()?
        .iter()
        .find_map(|l| l["id"].as_u64())
}

/// The state an item's lead tells: still in an unsorted status (`unsorted_statuses`, the
/// statuses of `type` 1 in `/api/v4/leads/pipelines`) is pending, any other status accepted,
/// a lead the API no longer returns declined.
pub fn unsorted_state(
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
pub fn unsorted_statuses(pipelines: &Value) -> std::collections::HashSet<u64> {
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

pub fn lead_pipeline() -> Pipeline {
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
pub fn unsorted_updated(v: &Value) -> Option<i64> {
    v["updated_at"]
        .as_i64()
        .or_else(|| v["created_at"].as_i64())
}

/// An unsorted item as listed: its lead in the unsorted status, so pending.
pub fn unsorted(v: &Value) -> MapResult<Lead> {
    unsorted_in(v, UnsortedState::Pending)
}

fn state_status(state: UnsortedState) -> (&'static str, Semantics) {
    match state {
        UnsortedState::Pending => (UNSORTED_OPEN, Semantics::Open),
        UnsortedState::Accepted => (UNSORTED_ACCEPTED, Semantics::Won),
        UnsortedState::Declined => (UNSORTED_DECLINED, Semantics::Lost),
    }
}

/// A mirrored pending lead once its item was decided: accepted, its lead (`lead`, as
/// `GET /api/v4/leads` returns it) is now a deal with the same id, closed as a lead when that
/// lead last changed; declined, the lead is gone (`None`), closed `now`.
pub fn decided(
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
pub fn unsorted_in(v: &Value, state: UnsortedState) -> MapResult<Lead> {
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

#[derive(Debug, Deserialize)]
pub struct WireUser {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub rights: Value,
}

pub fn user(v: &Value) -> MapResult<User> {
    let u: WireUser = decode(v)?;
    Ok(User {
        id: u.id.to_string(),
        name: u.name.unwrap_or_default(),
        email: u.email.filter(|e| !e.is_empty()),
        extension: None,
        active: u.rights["is_active"].as_bool().unwrap_or(true),
    })
}

#[derive(Debug, Deserialize)]
pub struct WirePipeline {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub is_main: bool,
    #[serde(rename = "_embedded", default)]
    pub embedded: Option<PipelineEmbedded>,
}

#[derive(Debug, Deserialize, Default)]
pub struct PipelineEmbedded {
    #[serde(default)]
    pub statuses: Vec<WireStatus>,
}

#[derive(Debug, Deserialize)]
pub struct WireStatus {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub sort: Option<i64>,
}

pub fn pipeline(v: &Value) -> MapResult<Pipeline> {
    let p: WirePipeline = decode(v)?;
    let pid = p.id.to_string();
    let stages = p
        .embedded
        .unwrap_or_default()
        .statuses
        .into_iter()
        .map(|s| Stage {
            id: s.id.to_string(),
            pipeline_id: pid.clone(),
            name: s.name.unwrap_or_default(),
            sort: s.sort.unwrap_or(0),
            semantics: semantics(s.id),
        })
        .collect();
    Ok(Pipeline {
        id: pid,
        name: p.name.unwrap_or_default(),
        is_default: p.is_main,
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn won_and_lost_statuses() {
        let v = json!({"id": 1, "name": "x", "status_id": 142, "pipeline_id": 7000000,
                       "created_at": 1700000000, "updated_at": 1700000100, "closed_at": 1700000100,
                       "custom_fields_values": null,
                       "_embedded": {"tags": [{"id": 1, "name": "vip"}], "companies": [{"id": 9}],
                                     "contacts": [{"id": 5, "is_main": false}, {"id": 6, "is_main": true}]}});
        let d = deal(&v, "RUB").unwrap();
        assert_eq!(d.semantics, Semantics::Won);
        assert_eq!(d.contact_id.as_deref(), Some("6"));
        assert_eq!(d.company_id.as_deref(), Some("9"));
        assert_eq!(d.tags, vec!["vip".to_string()]);
        assert!(d.closed_at.is_some());
    }

    #[test]
    fn missing_id_is_a_decode_error() {
        let err = contact(&json!({"name": "x", "created_at": 1, "updated_at": 2})).unwrap_err();
        assert!(err.contains("id"), "{err}");
    }

    /// An item of the list example on the API "Неразобранное" / "Incoming leads" page
    /// (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api,
    /// https://www.amocrm.com/developers/content/api_v4/incoming-leads/): it holds its lead
    /// (236768) from creation. Where it stands is what that lead's status says, with the
    /// unsorted column read from a pipelines answer shaped as on the pipelines page
    /// (https://www.amocrm.ru/developers/content/crm_platform/leads_pipelines: `type` 1).
    #[test]
    fn documented_unsorted_item_is_pending_until_its_lead_moves_on() {
        let item = json!({
            "uid": "5af9dedb6f2c6a29eaac6ee37fc75ffbb66e139e4603bdd0e14e39d4b319",
            "source_uid": null, "source_name": null, "category": "forms",
            "pipeline_id": 6950551, "created_at": 1686819152,
            "metadata": {"form_id": "1115559", "form_name": "Form #1686818993",
                "form_page": "Site request #1115559 from form «Form #1686818993»",
                "ip": "212.46.197.210", "form_sent_at": "1686819152",
                "referer": "https://devteam.kommo.com/", "visitor_uid": null},
            "account_id": 31361463, "_links": {"self": {"href": "LINK"}},
            "_embedded": {
                "contacts": [{"id": 583338, "_links": {"self": {"href": "https://devteam.kommo.com/api/v4/contacts/583338"}}}],
                "leads": [{"id": 236768, "_links": {"self": {"href": "https://devteam.kommo.com/api/v4/leads/236768"}}}],
                "companies": []
            }
        });
        let pipelines = json!({"_total_items": 1, "_embedded": {"pipelines": [{
            "id": 6950551, "name": "Воронка", "sort": 1, "is_main": true, "is_unsorted_on": true,
            "is_archive": false, "account_id": 31361463,
            "_embedded": {"statuses": [
                {"id": 58560479, "name": "Неразобранное", "sort": 10, "is_editable": false,
                 "pipeline_id": 6950551, "color": "#c1c1c1", "type": 1, "account_id": 31361463},
                {"id": 58560483, "name": "Первичный контакт", "sort": 20, "is_editable": true,
                 "pipeline_id": 6950551, "color": "#99ccff", "type": 0, "account_id": 31361463},
                {"id": 142, "name": "Успешно реализовано", "sort": 10000, "is_editable": false,
                 "pipeline_id": 6950551, "color": "#CCFF66", "type": 0, "account_id": 31361463},
                {"id": 143, "name": "Закрыто и не реализовано", "sort": 11000,
                 "is_editable": false, "pipeline_id": 6950551, "color": "#D5D8DB", "type": 0,
                 "account_id": 31361463}
            ]}
        }]}});
        let column = unsorted_statuses(&pipelines);
        assert_eq!(column, [58560479].into_iter().collect());
        assert_eq!(unsorted_lead_id(&item), Some(236768));
        let lead = |status: u64| json!({"id": 236768, "status_id": status, "pipeline_id": 6950551});

        // Listed, holding a lead: pending, not won.
        let l = unsorted(&item).unwrap();
        assert_eq!(
            (l.status_id.as_str(), l.semantics),
            (UNSORTED_OPEN, Semantics::Open)
        );
        assert_eq!(l.contact_id.as_deref(), Some("583338"));
        assert_eq!(l.source.as_deref(), Some("WEB"));
        let pending = unsorted_state(Some(&lead(58560479)), &column);
        assert_eq!(pending, UnsortedState::Pending);
        assert_eq!(
            unsorted_in(&item, pending).unwrap().semantics,
            Semantics::Open
        );

        // Accepted: the lead moved on (to the next status, or later to won or lost).
        for status in [58560483, 142, 143] {
            let s = unsorted_state(Some(&lead(status)), &column);
            assert_eq!(s, UnsortedState::Accepted, "status {status}");
            let l = unsorted_in(&item, s).unwrap();
            assert_eq!(
                (l.status_id.as_str(), l.semantics),
                (UNSORTED_ACCEPTED, Semantics::Won)
            );
        }

        // Declined: the lead is no longer there.
        let s = unsorted_state(None, &column);
        assert_eq!(s, UnsortedState::Declined);
        let l = unsorted_in(&item, s).unwrap();
        assert_eq!(
            (l.status_id.as_str(), l.semantics),
            (UNSORTED_DECLINED, Semantics::Lost)
        );
        assert!(
            lead_pipeline()
                .stages
                .iter()
                .any(|st| st.id == UNSORTED_DECLINED)
        );
    }
}
