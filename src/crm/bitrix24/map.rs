//! Bitrix24 wire rows → domain records. Lenient where Bitrix24 is inconsistent: ids as strings
//! or numbers, `""`/null for empty dates and references, `[]` for empty maps.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use serde_json::Value;

use super::text;
use crate::domain::*;

/// How one entity kind is listed.
pub(crate) struct ListSpec {
    pub(crate) method: &'static str,
    /// Modification-time filter field.
    pub(crate) date_field: &'static str,
    /// Id field in filter/order (UPPER) and in answer rows.
    pub(crate) id_field: &'static str,
    pub(crate) row_id: &'static str,
    pub(crate) select: Vec<String>,
    /// The list sits under this key of `result` (`tasks.task.list` → `tasks`).
    pub(crate) wrapped: Option<&'static str>,
    /// Supports `start=-1` (no COUNT query).
    pub(crate) fast: bool,
}

impl ListSpec {
    pub(crate) fn of(kind: EntityKind) -> Self {
        let crm = |method, select: Vec<&'static str>| ListSpec {
            method,
            date_field: "DATE_MODIFY",
            id_field: "ID",
            row_id: "ID",
            select: select.into_iter().map(String::from).collect(),
            wrapped: None,
            fast: true,
        };
        match kind {
            EntityKind::Lead => crm("crm.lead.list", vec!["*", "PHONE", "EMAIL"]),
            EntityKind::Deal => crm("crm.deal.list", vec!["*"]),
            EntityKind::Contact => crm("crm.contact.list", vec!["*", "PHONE", "EMAIL"]),
            EntityKind::Company => crm("crm.company.list", vec!["*", "PHONE", "EMAIL"]),
            EntityKind::Activity => ListSpec {
                date_field: "LAST_UPDATED",
                ..crm("crm.activity.list", vec!["*", "COMMUNICATIONS"])
            },
            EntityKind::Task => ListSpec {
                method: "tasks.task.list",
                date_field: "CHANGED_DATE",
                id_field: "ID",
                row_id: "id",
                select: vec![
                    "ID",
                    "TITLE",
                    "DESCRIPTION",
                    "RESPONSIBLE_ID",
                    "CREATED_BY",
                    "DEADLINE",
                    "STATUS",
                    "REAL_STATUS",
                    "CREATED_DATE",
                    "CHANGED_DATE",
                    "CLOSED_DATE",
                    "UF_CRM_TASK",
                ]
                .into_iter()
                .map(String::from)
                .collect(),
                wrapped: Some("tasks"),
                fast: false,
            },
        }
    }
}

/// Parses the date shapes Bitrix24 sends; `""` and junk are `None`.
pub(crate) fn parse_ts(s: &str) -> Option<Ts> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return bounds::in_range_utc(d);
    }
    if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%z") {
        return bounds::in_range_utc(d);
    }
    // Locale strings without an offset: portal time, assumed Moscow.
    let msk = FixedOffset::east_opt(3 * 3600)?;
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%d.%m.%Y %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return msk
                .from_local_datetime(&n)
                .single()
                .and_then(bounds::in_range_utc);
        }
    }
    None
}

fn s(row: &Value, k: &str) -> Option<String> {
    row.get(k).and_then(text).filter(|s| !s.is_empty())
}

/// A reference id: `null`, `""` and `"0"` mean none.
fn rid(row: &Value, k: &str) -> Option<String> {
    s(row, k).filter(|v| v != "0")
}

fn ts(row: &Value, k: &str) -> Option<Ts> {
    row.get(k).and_then(Value::as_str).and_then(parse_ts)
}

fn yes(row: &Value, k: &str) -> bool {
    match row.get(k) {
        Some(Value::Bool(b)) => *b,
        Some(v) => text(v).is_some_and(|t| matches!(t.as_str(), "Y" | "1" | "true")),
        None => false,
    }
}

fn money(row: &Value, k: &str) -> f64 {
    s(row, k)
        .and_then(|v| v.trim().parse().ok())
        .and_then(bounds::money)
        .unwrap_or(0.0)
}

fn multi(row: &Value, k: &str) -> Vec<String> {
    match row.get(k) {
        Some(v @ (Value::Array(_) | Value::Object(_))) => crate::http::php_query::as_list(v)
            .iter()
            .filter_map(|i| i.get("VALUE").and_then(text))
            .filter(|v| !v.trim().is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// Numeric id of a row (`ID` or `id`, string or number).
pub(crate) fn row_id(row: &Value, key: &str) -> Option<u64> {
    row.get(key)
        .or_else(|| row.get(key.to_ascii_uppercase()))
        .and_then(text)
        .and_then(|t| t.trim().parse().ok())
}

fn required_id(row: &Value, key: &str) -> Result<String, String> {
    row_id(row, key)
        .map(|i| i.to_string())
        .ok_or_else(|| format!("row without a numeric {key}"))
}

/// (created, updated) with `updated` required.
fn times(row: &Value, id: &str, created: &str, updated: &str) -> Result<(Ts, Ts), String> {
    let up = ts(row, updated)
        .or_else(|| ts(row, created))
        .ok_or_else(|| format!("row {id} has no parsable {updated}"))?;
    Ok((ts(row, created).unwrap_or(up), up))
}

fn semantics(code: Option<&str>) -> Semantics {
    match code {
        Some("S") => Semantics::Won,
        Some("F") => Semantics::Lost,
        _ => Semantics::Open,
    }
}

fn utm(row: &Value) -> Utm {
    Utm {
        source: s(row, "UTM_SOURCE"),
        medium: s(row, "UTM_MEDIUM"),
        campaign: s(row, "UTM_CAMPAIGN"),
        content: s(row, "UTM_CONTENT"),
        term: s(row, "UTM_TERM"),
    }
}

fn owner(type_id: Option<String>, id: Option<String>) -> Option<EntityRef> {
    let kind = match type_id?.as_str() {
        "1" => EntityKind::Lead,
        "2" => EntityKind::Deal,
        "3" => EntityKind::Contact,
        "4" => EntityKind::Company,
        _ => return None,
    };
    Some(EntityRef::new(kind, id.filter(|i| i != "0")?))
}

/// `D_123` → deal 123.
fn parse_binding(b: &str) -> Option<EntityRef> {
    let (p, id) = b.split_once('_')?;
    let kind = match p {
        "L" => EntityKind::Lead,
        "D" => EntityKind::Deal,
        "C" => EntityKind::Contact,
        "CO" => EntityKind::Company,
        _ => return None,
    };
    id.parse::<u64>().ok()?;
    Some(EntityRef::new(kind, id))
}

/// deal 123 → `D_123`.
pub(crate) fn binding(e: &EntityRef) -> Option<String> {
    let p = match e.kind {
        EntityKind::Lead => "L",
        EntityKind::Deal => "D",
        EntityKind::Contact => "C",
        EntityKind::Company => "CO",
        _ => return None,
    };
    Some(format!("{p}_{}", e.id))
}

/// Maps a list row; `Ok(None)` for rows dozor does not mirror.
pub(crate) fn record(kind: EntityKind, row: &Value) -> Result<Option<Record>, String> {
    if !row.is_object() {
        return Err("list row is not an object".into());
    }
    Ok(Some(match kind {
        EntityKind::Lead => Record::Lead(lead(row)?),
        EntityKind::Deal => Record::Deal(deal(row)?),
        EntityKind::Contact => Record::Contact(contact(row)?),
        EntityKind::Company => Record::Company(company(row)?),
        EntityKind::Task => Record::Task(task(row)?),
        EntityKind::Activity => return activity(row),
    }))
}

fn lead(row: &Value) -> Result<Lead, String> {
    let id = required_id(row, "ID")?;
    let (created_at, updated_at) = times(row, &id, "DATE_CREATE", "DATE_MODIFY")?;
    let status_id = s(row, "STATUS_ID").unwrap_or_default();
    let sem = match s(row, "STATUS_SEMANTIC_ID") {
        Some(c) => semantics(Some(&c)),
        None => match status_id.as_str() {
            "CONVERTED" => Semantics::Won,
            "JUNK" => Semantics::Lost,
            _ => Semantics::Open,
        },
    };
    Ok(Lead {
        title: s(row, "TITLE").unwrap_or_default(),
        status_id,
        semantics: sem,
        responsible_id: rid(row, "ASSIGNED_BY_ID"),
        source: s(row, "SOURCE_ID"),
        phones: multi(row, "PHONE"),
        emails: multi(row, "EMAIL"),
        contact_id: rid(row, "CONTACT_ID"),
        company_id: rid(row, "COMPANY_ID"),
        amount: money(row, "OPPORTUNITY"),
        utm: utm(row),
        created_at,
        updated_at,
        closed_at: ts(row, "DATE_CLOSED"),
        deal_id: None,
        id,
    })
}

fn deal(row: &Value) -> Result<Deal, String> {
    let id = required_id(row, "ID")?;
    let (created_at, updated_at) = times(row, &id, "DATE_CREATE", "DATE_MODIFY")?;
    let sem = match s(row, "STAGE_SEMANTIC_ID") {
        Some(c) => semantics(Some(&c)),
        None => {
            let stage = s(row, "STAGE_ID").unwrap_or_default();
            if stage.ends_with("WON") {
                Semantics::Won
            } else if stage.ends_with("LOSE") {
                Semantics::Lost
            } else {
                Semantics::Open
            }
        }
    };
    let closed = yes(row, "CLOSED") || sem != Semantics::Open;
    Ok(Deal {
        title: s(row, "TITLE").unwrap_or_default(),
        pipeline_id: s(row, "CATEGORY_ID").unwrap_or_else(|| "0".into()),
        stage_id: s(row, "STAGE_ID").unwrap_or_default(),
        semantics: sem,
        amount: money(row, "OPPORTUNITY"),
        currency: s(row, "CURRENCY_ID").unwrap_or_else(|| "RUB".into()),
        responsible_id: rid(row, "ASSIGNED_BY_ID"),
        contact_id: rid(row, "CONTACT_ID"),
        company_id: rid(row, "COMPANY_ID"),
        lead_id: rid(row, "LEAD_ID"),
        source: s(row, "SOURCE_ID"),
        tags: Vec::new(),
        created_at,
        updated_at,
        closed_at: if closed {
            ts(row, "CLOSEDATE").or(Some(updated_at))
        } else {
            None
        },
        id,
    })
}

fn person_name(row: &Value) -> String {
    ["NAME", "SECOND_NAME", "LAST_NAME"]
        .iter()
        .filter_map(|k| s(row, k))
        .collect::<Vec<_>>()
        .join(" ")
}

fn contact(row: &Value) -> Result<Contact, String> {
    let id = required_id(row, "ID")?;
    let (created_at, updated_at) = times(row, &id, "DATE_CREATE", "DATE_MODIFY")?;
    Ok(Contact {
        name: person_name(row),
        phones: multi(row, "PHONE"),
        emails: multi(row, "EMAIL"),
        company_id: rid(row, "COMPANY_ID"),
        responsible_id: rid(row, "ASSIGNED_BY_ID"),
        tags: Vec::new(),
        created_at,
        updated_at,
        id,
    })
}

fn company(row: &Value) -> Result<Company, String> {
    let id = required_id(row, "ID")?;
    let (created_at, updated_at) = times(row, &id, "DATE_CREATE", "DATE_MODIFY")?;
    Ok(Company {
        name: s(row, "TITLE").unwrap_or_default(),
        phones: multi(row, "PHONE"),
        emails: multi(row, "EMAIL"),
        responsible_id: rid(row, "ASSIGNED_BY_ID"),
        tags: Vec::new(),
        created_at,
        updated_at,
        id,
    })
}

/// tasks.task.list row (camelCase).
fn task(row: &Value) -> Result<Task, String> {
    let id = required_id(row, "id")?;
    let (created_at, updated_at) = times(row, &id, "createdDate", "changedDate")?;
    let status = s(row, "realStatus").or_else(|| s(row, "status"));
    let completed = status.as_deref() == Some("5");
    let entity = row
        .get("ufCrmTask")
        .map(crate::http::php_query::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(text)
        .find_map(|b| parse_binding(&b));
    Ok(Task {
        title: s(row, "title").unwrap_or_default(),
        description: s(row, "description").unwrap_or_default(),
        responsible_id: rid(row, "responsibleId"),
        deadline: ts(row, "deadline"),
        completed,
        completed_at: if completed {
            ts(row, "closedDate").or(Some(updated_at))
        } else {
            None
        },
        entity,
        created_at,
        updated_at,
        id,
    })
}

/// crm.activity.list row: calls, meetings, e-mails; CRM to-dos become tasks.
fn activity(row: &Value) -> Result<Option<Record>, String> {
    let id = required_id(row, "ID")?;
    let (created_at, updated_at) = times(row, &id, "CREATED", "LAST_UPDATED")?;
    let entity = owner(s(row, "OWNER_TYPE_ID"), s(row, "OWNER_ID"));
    let provider = s(row, "PROVIDER_ID").unwrap_or_default();
    let type_id = s(row, "TYPE_ID").unwrap_or_default();
    let completed = yes(row, "COMPLETED");
    if provider == "CRM_TODO" {
        return Ok(Some(Record::Task(Task {
            id: format!("todo-{id}"),
            title: s(row, "SUBJECT").unwrap_or_default(),
            description: s(row, "DESCRIPTION").unwrap_or_default(),
            responsible_id: rid(row, "RESPONSIBLE_ID"),
            deadline: ts(row, "DEADLINE"),
            completed,
            completed_at: completed.then_some(updated_at),
            entity,
            created_at,
            updated_at,
        })));
    }
    let kind = match type_id.as_str() {
        "1" => ActivityKind::Meeting,
        "2" => ActivityKind::Call,
        "4" => ActivityKind::Email,
        // Task-type activities mirror tasks, which are read from tasks.task.list.
        "3" => return Ok(None),
        _ if provider.starts_with("IMOPENLINES") => ActivityKind::Message,
        _ => ActivityKind::Other,
    };
    let direction = match s(row, "DIRECTION").as_deref() {
        Some("1") => Some(Direction::In),
        Some("2") => Some(Direction::Out),
        _ => None,
    };
    let phone = match row.get("COMMUNICATIONS") {
        Some(v @ (Value::Array(_) | Value::Object(_))) => crate::http::php_query::as_list(v)
            .iter()
            .filter(|c| c.get("TYPE").and_then(text).is_none_or(|t| t == "PHONE"))
            .find_map(|c| c.get("VALUE").and_then(text).filter(|v| !v.is_empty())),
        _ => None,
    };
    let started_at = ts(row, "START_TIME").unwrap_or(created_at);
    let duration_s = (kind == ActivityKind::Call)
        .then(|| ts(row, "END_TIME").map(|e| (e - started_at).num_seconds().max(0)))
        .flatten()
        // A call that "lasted" longer than a day is junk in END_TIME, not a call.
        .filter(|d| *d <= bounds::MAX_CALL_SECS);
    Ok(Some(Record::Activity(Activity {
        kind,
        direction,
        subject: s(row, "SUBJECT").unwrap_or_default(),
        entity,
        responsible_id: rid(row, "RESPONSIBLE_ID"),
        phone,
        duration_s,
        completed,
        external_id: s(row, "ORIGIN_ID"),
        started_at,
        created_at,
        updated_at,
        id,
    })))
}

pub(crate) fn user(row: &Value) -> Result<User, String> {
    let id = required_id(row, "ID")?;
    Ok(User {
        name: {
            let n = format!(
                "{} {}",
                s(row, "NAME").unwrap_or_default(),
                s(row, "LAST_NAME").unwrap_or_default()
            );
            let n = n.trim().to_string();
            if n.is_empty() {
                s(row, "EMAIL").unwrap_or_else(|| format!("user {id}"))
            } else {
                n
            }
        },
        email: s(row, "EMAIL"),
        extension: s(row, "UF_PHONE_INNER"),
        active: row.get("ACTIVE").is_none() || yes(row, "ACTIVE"),
        id,
    })
}

/// crm.status.list rows → stages, sorted.
pub(crate) fn stages(pipeline_id: &str, rows: &Value) -> Vec<Stage> {
    let mut out: Vec<Stage> = crate::http::php_query::as_list(rows)
        .iter()
        .filter_map(|r| {
            let id = s(r, "STATUS_ID")?;
            let sem = match s(r, "SEMANTICS").as_deref() {
                Some(c) => semantics(Some(c)),
                None => match r
                    .get("EXTRA")
                    .and_then(|e| e.get("SEMANTICS"))
                    .and_then(text)
                    .as_deref()
                {
                    Some("success") => Semantics::Won,
                    Some("failure") => Semantics::Lost,
                    _ => Semantics::Open,
                },
            };
            Some(Stage {
                id,
                pipeline_id: pipeline_id.to_string(),
                name: s(r, "NAME").unwrap_or_default(),
                sort: s(r, "SORT").and_then(|v| v.parse().ok()).unwrap_or(0),
                semantics: sem,
            })
        })
        .collect();
    out.sort_by_key(|s| s.sort);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lenient_dates_and_ids() {
        assert!(parse_ts("").is_none());
        assert!(parse_ts("2024-01-15T10:00:00+03:00").is_some());
        assert!(parse_ts("24.08.2023 13:19:39").is_some());
        let row = json!({"ID": 7, "TITLE": "x", "DATE_MODIFY": "2024-01-15T10:00:00+03:00",
                         "DATE_CREATE": "", "CLOSED": "N", "STAGE_ID": "C1:NEW", "CATEGORY_ID": 1,
                         "COMPANY_ID": "0", "OPPORTUNITY": "19999.99"});
        let Some(Record::Deal(d)) = record(EntityKind::Deal, &row).unwrap() else {
            panic!("deal expected")
        };
        assert_eq!(d.id, "7");
        assert_eq!(d.pipeline_id, "1");
        assert_eq!(d.company_id, None);
        assert_eq!(d.amount, 19999.99);
        assert_eq!(d.semantics, Semantics::Open);
        assert!(record(EntityKind::Deal, &json!({"ID": "8"})).is_err());
    }
}
