//! amoCRM wire records and their mapping into the domain model.
//!
//! Wire structs are lenient (unknown fields ignored, optional fields defaulted) but the fields a
//! record cannot exist without (`id`, timestamps) are required, so a changed payload surfaces as
//! a decode error instead of silently empty records.

mod unsorted;

use serde::Deserialize;
use serde_json::Value;

use crate::domain::{
    Activity, ActivityKind, Company, Contact, Deal, Direction, EntityKind, EntityRef, Pipeline,
    Semantics, Stage, Task, Ts, User,
};

pub(crate) const WON: u64 = 142;
pub(crate) const LOST: u64 = 143;

pub(crate) use unsorted::*;

pub(crate) type MapResult<T> = Result<T, String>;

pub(crate) fn ts(secs: i64) -> MapResult<Ts> {
    crate::domain::bounds::from_unix(secs)
        .ok_or_else(|| format!("timestamp {secs} is outside 2000-2099"))
}

fn opt_ts(secs: Option<i64>) -> MapResult<Option<Ts>> {
    secs.filter(|s| *s > 0).map(ts).transpose()
}

/// Deserialises one item, naming the failing field path.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(v: &Value) -> MapResult<T> {
    serde_path_to_error::deserialize(v).map_err(|e| format!("at {}: {}", e.path(), e.inner()))
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct Ref {
    pub(crate) id: Option<u64>,
    #[serde(default)]
    pub(crate) is_main: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Tag {
    pub(crate) name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CustomField {
    #[serde(default)]
    pub(crate) field_code: Option<String>,
    #[serde(default)]
    pub(crate) values: Option<Vec<CustomValue>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CustomValue {
    #[serde(default)]
    pub(crate) value: Value,
}

/// Values of the multitext field with `field_code` (PHONE, EMAIL).
pub(crate) fn field_values(cfs: &Option<Vec<CustomField>>, code: &str) -> Vec<String> {
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
pub(crate) struct Embedded {
    #[serde(default)]
    pub(crate) tags: Option<Vec<Tag>>,
    #[serde(default)]
    pub(crate) contacts: Option<Vec<Ref>>,
    #[serde(default)]
    pub(crate) companies: Option<Vec<Ref>>,
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
pub(crate) struct WireLead {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) price: Option<f64>,
    #[serde(default)]
    pub(crate) responsible_user_id: Option<u64>,
    pub(crate) status_id: u64,
    pub(crate) pipeline_id: u64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    #[serde(default)]
    pub(crate) closed_at: Option<i64>,
    #[serde(rename = "_embedded", default)]
    pub(crate) embedded: Option<Embedded>,
}

pub(crate) fn semantics(status_id: u64) -> Semantics {
    match status_id {
        WON => Semantics::Won,
        LOST => Semantics::Lost,
        _ => Semantics::Open,
    }
}

pub(crate) fn deal(v: &Value, currency: &str) -> MapResult<Deal> {
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
pub(crate) struct WirePerson {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) first_name: Option<String>,
    #[serde(default)]
    pub(crate) last_name: Option<String>,
    #[serde(default)]
    pub(crate) responsible_user_id: Option<u64>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    #[serde(default)]
    pub(crate) custom_fields_values: Option<Vec<CustomField>>,
    #[serde(rename = "_embedded", default)]
    pub(crate) embedded: Option<Embedded>,
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

pub(crate) fn contact(v: &Value) -> MapResult<Contact> {
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

pub(crate) fn company(v: &Value) -> MapResult<Company> {
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
pub(crate) fn entity_kind(plural: &str) -> Option<EntityKind> {
    match plural {
        "leads" | "lead" => Some(EntityKind::Deal),
        "contacts" | "contact" => Some(EntityKind::Contact),
        "companies" | "company" => Some(EntityKind::Company),
        _ => None,
    }
}

/// The amoCRM entity path segment for a domain kind, when amoCRM has one.
pub(crate) fn entity_plural(kind: EntityKind) -> Option<&'static str> {
    match kind {
        EntityKind::Deal => Some("leads"),
        EntityKind::Contact => Some("contacts"),
        EntityKind::Company => Some("companies"),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireTask {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) entity_id: Option<u64>,
    #[serde(default)]
    pub(crate) entity_type: Option<String>,
    #[serde(default)]
    pub(crate) responsible_user_id: Option<u64>,
    #[serde(default)]
    pub(crate) complete_till: Option<i64>,
    #[serde(default)]
    pub(crate) is_completed: bool,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

pub(crate) fn task(v: &Value) -> MapResult<Task> {
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
pub(crate) struct WireNote {
    pub(crate) id: u64,
    pub(crate) entity_id: u64,
    pub(crate) note_type: String,
    #[serde(default)]
    pub(crate) params: Value,
    #[serde(default)]
    pub(crate) responsible_user_id: Option<u64>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

/// A call note as an activity; other note types give `None`.
pub(crate) fn call_note(v: &Value, entity: &str) -> MapResult<Option<Activity>> {
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
pub(crate) struct WireUser {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) email: Option<String>,
    #[serde(default)]
    pub(crate) rights: Value,
}

pub(crate) fn user(v: &Value) -> MapResult<User> {
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
pub(crate) struct WirePipeline {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) is_main: bool,
    #[serde(rename = "_embedded", default)]
    pub(crate) embedded: Option<PipelineEmbedded>,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct PipelineEmbedded {
    #[serde(default)]
    pub(crate) statuses: Vec<WireStatus>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireStatus {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) sort: Option<i64>,
}

pub(crate) fn pipeline(v: &Value) -> MapResult<Pipeline> {
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
mod tests;
