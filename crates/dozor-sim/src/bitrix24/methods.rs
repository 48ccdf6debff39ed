//! The REST methods of the fake: each renders or changes the shared world in the legacy wire
//! format (string ids, "Y"/"N", money as "19999.99", dates with +03:00, empty dates as "").

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, FixedOffset, Utc};
use serde_json::{Map, Value, json};

use super::list::{self, Row, param, parse_date, scalar};
use super::{ApiError, AuthKind, Out, PendingCall};
use crate::Sim;
use crate::php_query::as_list;
use crate::world::*;

type Ts = DateTime<Utc>;

fn msk() -> FixedOffset {
    FixedOffset::east_opt(3 * 3600).expect("valid offset")
}

/// `2024-01-15T10:00:00+03:00`
pub fn iso(ts: &Ts) -> String {
    ts.with_timezone(&msk())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

fn iso_or_empty(ts: Option<Ts>) -> Value {
    Value::String(ts.as_ref().map(iso).unwrap_or_default())
}

fn iso_or_null(ts: Option<Ts>) -> Value {
    ts.as_ref()
        .map(iso)
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn id_or_null(id: Option<u64>) -> Value {
    id.map(|i| Value::String(i.to_string()))
        .unwrap_or(Value::Null)
}

fn yn(b: bool) -> &'static str {
    if b { "Y" } else { "N" }
}

fn money(x: f64) -> String {
    format!("{x:.2}")
}

fn opt_str(s: &Option<String>) -> Value {
    s.clone().map(Value::String).unwrap_or(Value::Null)
}

fn multi(owner_id: u64, values: &[String], type_id: &str) -> Value {
    Value::Array(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({
                    "ID": (owner_id * 100 + i as u64 + 1).to_string(),
                    "VALUE_TYPE": if i == 0 { "WORK" } else { "MOBILE" },
                    "VALUE": v,
                    "TYPE_ID": type_id,
                })
            })
            .collect(),
    )
}

pub fn owner_type_id(o: Owner) -> u64 {
    match o {
        Owner::Lead => 1,
        Owner::Deal => 2,
        Owner::Contact => 3,
        Owner::Company => 4,
    }
}

fn owner_from_type_id(t: u64) -> Option<Owner> {
    match t {
        1 => Some(Owner::Lead),
        2 => Some(Owner::Deal),
        3 => Some(Owner::Contact),
        4 => Some(Owner::Company),
        _ => None,
    }
}

fn owner_from_name(s: &str) -> Option<Owner> {
    match s.to_ascii_lowercase().as_str() {
        "lead" => Some(Owner::Lead),
        "deal" => Some(Owner::Deal),
        "contact" => Some(Owner::Contact),
        "company" => Some(Owner::Company),
        _ => None,
    }
}

fn binding_prefix(o: Owner) -> &'static str {
    match o {
        Owner::Lead => "L",
        Owner::Deal => "D",
        Owner::Contact => "C",
        Owner::Company => "CO",
    }
}

fn parse_binding(s: &str) -> Option<(Owner, u64)> {
    let (p, id) = s.split_once('_')?;
    let owner = match p {
        "L" => Owner::Lead,
        "D" => Owner::Deal,
        "C" => Owner::Contact,
        "CO" => Owner::Company,
        _ => return None,
    };
    Some((owner, id.parse().ok()?))
}

fn owner_exists(w: &World, o: Owner, id: u64) -> bool {
    match o {
        Owner::Lead => w.leads.contains_key(&id),
        Owner::Deal => w.deals.contains_key(&id),
        Owner::Contact => w.contacts.contains_key(&id),
        Owner::Company => w.companies.contains_key(&id),
    }
}

fn merge(a: Value, b: Value) -> Row {
    let mut r = to_row(a);
    r.extend(to_row(b));
    r
}

/// Records the world marks as deleted (they answer `Not found` even if still in the maps).
fn deleted(w: &World) -> std::collections::BTreeSet<(Owner, u64)> {
    w.deletions.iter().map(|d| (d.owner, d.id)).collect()
}

fn to_row(v: Value) -> Row {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn lead_semantic(s: LeadStatus) -> &'static str {
    match s {
        LeadStatus::Converted => "S",
        LeadStatus::Junk => "F",
        _ => "P",
    }
}

fn lead_row(l: &SimLead) -> Row {
    let (first, last) = match l.name.split_once(' ') {
        Some((f, r)) => (f.to_string(), Value::String(r.to_string())),
        None => (l.name.clone(), Value::Null),
    };
    let phones: Vec<String> = l.phone.iter().cloned().collect();
    let emails: Vec<String> = l.email.iter().cloned().collect();
    merge(
        json!({
        "ID": l.id.to_string(),
        "TITLE": l.title,
        "HONORIFIC": null,
        "NAME": first,
        "SECOND_NAME": null,
        "LAST_NAME": last,
        "COMPANY_TITLE": null,
        // crm-lead-list.md: a lead without a company answers "0" (and, by the same rule, one
        // without a contact).
        "COMPANY_ID": l.company_id.unwrap_or(0).to_string(),
        "CONTACT_ID": l.contact_id.unwrap_or(0).to_string(),
        "IS_RETURN_CUSTOMER": yn(l.contact_id.is_some() || l.company_id.is_some()),
        "BIRTHDATE": "",
        "SOURCE_ID": l.source,
        "SOURCE_DESCRIPTION": null,
        "STATUS_ID": l.status.code(),
        "STATUS_DESCRIPTION": null,
        "STATUS_SEMANTIC_ID": lead_semantic(l.status),
        "POST": null,
        "CURRENCY_ID": "RUB",
        "OPPORTUNITY": "0.00",
        "IS_MANUAL_OPPORTUNITY": "N",
        "HAS_PHONE": yn(!phones.is_empty()),
        }),
        json!({
        "HAS_EMAIL": yn(!emails.is_empty()),
        "HAS_IMOL": "N",
        "ASSIGNED_BY_ID": l.responsible_id.to_string(),
        "CREATED_BY_ID": l.responsible_id.to_string(),
        "MODIFY_BY_ID": l.responsible_id.to_string(),
        "MOVED_BY_ID": l.responsible_id.to_string(),
        "DATE_CREATE": iso(&l.created_at),
        "DATE_MODIFY": iso(&l.updated_at),
        "MOVED_TIME": iso(&l.updated_at),
        "DATE_CLOSED": iso_or_empty(l.closed_at),
        "OPENED": "Y",
        "COMMENTS": null,
        "ORIGINATOR_ID": null,
        "ORIGIN_ID": null,
        "UTM_SOURCE": opt_str(&l.utm.source),
        "UTM_MEDIUM": opt_str(&l.utm.medium),
        "UTM_CAMPAIGN": opt_str(&l.utm.campaign),
        "UTM_CONTENT": null,
        "UTM_TERM": null,
        // crm-lead-list.md: who touched the lead last, and when.
        "LAST_ACTIVITY_BY": l.responsible_id.to_string(),
        "LAST_ACTIVITY_TIME": iso(&l.updated_at),
        "PHONE": multi(l.id, &phones, "PHONE"),
        "EMAIL": multi(l.id, &emails, "EMAIL"),
        }),
    )
}

fn deal_row(w: &World, d: &SimDeal) -> Row {
    let (code, sem, cat) = match w.stage(d.stage_id) {
        Some((p, s)) => (
            s.code.clone(),
            match s.kind {
                StageKind::Open => "P",
                StageKind::Won => "S",
                StageKind::Lost => "F",
            },
            p.id,
        ),
        None => ("NEW".to_string(), "P", d.pipeline_id),
    };
    merge(
        json!({
        "ID": d.id.to_string(),
        "TITLE": d.title,
        "TYPE_ID": "SALE",
        "CATEGORY_ID": cat.to_string(),
        "STAGE_ID": code,
        "STAGE_SEMANTIC_ID": sem,
        "IS_NEW": "N",
        "IS_RECURRING": "N",
        "IS_RETURN_CUSTOMER": "N",
        "IS_REPEATED_APPROACH": "N",
        "PROBABILITY": null,
        "CURRENCY_ID": "RUB",
        "OPPORTUNITY": money(d.amount),
        "IS_MANUAL_OPPORTUNITY": "N",
        "TAX_VALUE": "0.00",
        "COMPANY_ID": d.company_id.unwrap_or(0).to_string(),
        "CONTACT_ID": id_or_null(d.contact_id),
        "LEAD_ID": id_or_null(d.lead_id),
        "QUOTE_ID": null,
        "BEGINDATE": iso(&d.created_at),
        "CLOSEDATE": iso_or_empty(d.closed_at),
        "OPENED": "Y",
        }),
        json!({
        "CLOSED": yn(sem != "P"),
        "COMMENTS": opt_str(&d.loss_reason),
        "ASSIGNED_BY_ID": d.responsible_id.to_string(),
        "CREATED_BY_ID": d.responsible_id.to_string(),
        "MODIFY_BY_ID": d.responsible_id.to_string(),
        "MOVED_BY_ID": d.responsible_id.to_string(),
        "DATE_CREATE": iso(&d.created_at),
        "DATE_MODIFY": iso(&d.updated_at),
        "MOVED_TIME": iso(&d.updated_at),
        "SOURCE_ID": d.source,
        "SOURCE_DESCRIPTION": null,
        "ADDITIONAL_INFO": null,
        "LOCATION_ID": null,
        "ORIGINATOR_ID": null,
        "ORIGIN_ID": null,
        "UTM_SOURCE": null,
        "UTM_MEDIUM": null,
        "UTM_CAMPAIGN": null,
        "UTM_CONTENT": null,
        "UTM_TERM": null,
        "LAST_ACTIVITY_TIME": iso(&d.updated_at),
        "LAST_ACTIVITY_BY": d.responsible_id.to_string(),
        }),
    )
}

fn contact_row(c: &SimContact) -> Row {
    merge(
        json!({
        "ID": c.id.to_string(),
        "HONORIFIC": null,
        "NAME": c.first_name,
        "SECOND_NAME": null,
        "LAST_NAME": c.last_name,
        "PHOTO": null,
        "BIRTHDATE": "",
        "TYPE_ID": "CLIENT",
        "SOURCE_ID": "SELF",
        "SOURCE_DESCRIPTION": null,
        "POST": null,
        "COMMENTS": null,
        "OPENED": "Y",
        "EXPORT": "Y",
        "HAS_PHONE": yn(!c.phones.is_empty()),
        "HAS_EMAIL": yn(!c.emails.is_empty()),
        }),
        json!({
        "HAS_IMOL": "N",
        "ASSIGNED_BY_ID": c.responsible_id.to_string(),
        "CREATED_BY_ID": c.responsible_id.to_string(),
        "MODIFY_BY_ID": c.responsible_id.to_string(),
        "DATE_CREATE": iso(&c.created_at),
        "DATE_MODIFY": iso(&c.updated_at),
        "COMPANY_ID": id_or_null(c.company_id),
        "LEAD_ID": null,
        "ORIGINATOR_ID": null,
        "ORIGIN_ID": null,
        "UTM_SOURCE": null,
        "UTM_MEDIUM": null,
        "UTM_CAMPAIGN": null,
        "UTM_CONTENT": null,
        "UTM_TERM": null,
        "PHONE": multi(c.id, &c.phones, "PHONE"),
        "EMAIL": multi(c.id, &c.emails, "EMAIL"),
        }),
    )
}

fn company_row(c: &SimCompany) -> Row {
    to_row(json!({
        "ID": c.id.to_string(),
        "TITLE": c.title,
        "COMPANY_TYPE": "CUSTOMER",
        "LOGO": null,
        "ADDRESS": null,
        "INDUSTRY": "IT",
        "EMPLOYEES": "EMPLOYEES_1",
        "CURRENCY_ID": "RUB",
        "REVENUE": "0.00",
        "OPENED": "Y",
        "COMMENTS": null,
        "HAS_PHONE": yn(!c.phones.is_empty()),
        "HAS_EMAIL": yn(!c.emails.is_empty()),
        "HAS_IMOL": "N",
        "IS_MY_COMPANY": "N",
        "ASSIGNED_BY_ID": c.responsible_id.to_string(),
        "CREATED_BY_ID": c.responsible_id.to_string(),
        "MODIFY_BY_ID": c.responsible_id.to_string(),
        "DATE_CREATE": iso(&c.created_at),
        "DATE_MODIFY": iso(&c.updated_at),
        "ORIGINATOR_ID": null,
        "ORIGIN_ID": null,
        "UTM_SOURCE": null,
        "UTM_MEDIUM": null,
        "UTM_CAMPAIGN": null,
        "UTM_CONTENT": null,
        "UTM_TERM": null,
        "PHONE": multi(c.id, &c.phones, "PHONE"),
        "EMAIL": multi(c.id, &c.emails, "EMAIL"),
    }))
}

fn activity_row(a: &SimActivity) -> Row {
    let (type_id, provider, provider_type) = match a.kind {
        ActivityType::Meeting => ("1", "CRM_MEETING", "MEETING"),
        ActivityType::Call => ("2", "VOXIMPLANT_CALL", "CALL"),
        ActivityType::Email => ("4", "CRM_EMAIL", "EMAIL"),
    };
    let end = a.start + Duration::seconds(a.duration_s.max(0));
    let comms: Vec<Value> = a
        .phone
        .iter()
        .map(|p| {
            json!({
                "ID": (a.id * 10).to_string(),
                "TYPE": "PHONE",
                "VALUE": p,
                "ENTITY_ID": a.owner.1.to_string(),
                "ENTITY_TYPE_ID": owner_type_id(a.owner.0).to_string(),
            })
        })
        .collect();
    merge(
        json!({
        "ID": a.id.to_string(),
        "OWNER_ID": a.owner.1.to_string(),
        "OWNER_TYPE_ID": owner_type_id(a.owner.0).to_string(),
        "TYPE_ID": type_id,
        "PROVIDER_ID": provider,
        "PROVIDER_TYPE_ID": provider_type,
        "PROVIDER_GROUP_ID": null,
        "PROVIDER_PARAMS": [],
        "PROVIDER_DATA": null,
        "ASSOCIATED_ENTITY_ID": "0",
        "SUBJECT": a.subject,
        "CREATED": iso(&a.created_at),
        "LAST_UPDATED": iso(&a.updated_at),
        "START_TIME": iso(&a.start),
        "END_TIME": iso(&end),
        "DEADLINE": iso(&a.start),
        "COMPLETED": yn(a.completed),
        }),
        json!({
        "STATUS": if a.completed { "2" } else { "1" },
        "RESPONSIBLE_ID": a.responsible_id.to_string(),
        "PRIORITY": "2",
        "NOTIFY_TYPE": "0",
        "NOTIFY_VALUE": "0",
        "DESCRIPTION": "",
        "DESCRIPTION_TYPE": "1",
        "DIRECTION": match a.direction { Dir::In => "1", Dir::Out => "2" },
        "LOCATION": "",
        "SETTINGS": [],
        "ORIGINATOR_ID": null,
        "ORIGIN_ID": a.external_id,
        "AUTHOR_ID": a.responsible_id.to_string(),
        "EDITOR_ID": a.responsible_id.to_string(),
        "COMMUNICATIONS": comms,
        "FILES": [],
        }),
    )
}

/// A to-do created by `crm.activity.todo.add` (kept as a world task, shown as an activity).
fn todo_row(t: &SimTask) -> Row {
    let (ot, oid) = t
        .binding
        .map(|(o, id)| (owner_type_id(o), id))
        .unwrap_or((2, 0));
    let deadline = t.deadline.unwrap_or(t.created_at);
    merge(
        json!({
        "ID": t.id.to_string(),
        "OWNER_ID": oid.to_string(),
        "OWNER_TYPE_ID": ot.to_string(),
        "TYPE_ID": "6",
        "PROVIDER_ID": "CRM_TODO",
        "PROVIDER_TYPE_ID": "TODO",
        "PROVIDER_GROUP_ID": null,
        "PROVIDER_PARAMS": [],
        "PROVIDER_DATA": null,
        "ASSOCIATED_ENTITY_ID": "0",
        "SUBJECT": t.title,
        "CREATED": iso(&t.created_at),
        "LAST_UPDATED": iso(&t.updated_at),
        "START_TIME": iso(&t.created_at),
        "END_TIME": iso(&deadline),
        "DEADLINE": iso(&deadline),
        "COMPLETED": yn(t.completed),
        }),
        json!({
        "STATUS": if t.completed { "2" } else { "1" },
        "RESPONSIBLE_ID": t.responsible_id.to_string(),
        "PRIORITY": "2",
        "NOTIFY_TYPE": "0",
        "NOTIFY_VALUE": "0",
        "DESCRIPTION": t.description,
        "DESCRIPTION_TYPE": "1",
        "DIRECTION": "0",
        "LOCATION": "",
        "SETTINGS": [],
        "ORIGINATOR_ID": null,
        "ORIGIN_ID": null,
        "AUTHOR_ID": t.created_by.to_string(),
        "EDITOR_ID": t.created_by.to_string(),
        "COMMUNICATIONS": [],
        "FILES": [],
        }),
    )
}

/// Tasks are filtered on UPPER keys and answered in camelCase.
fn task_row(t: &SimTask, now: Ts) -> Row {
    let overdue = !t.completed && t.deadline.is_some_and(|d| d < now);
    let real = if t.completed { "5" } else { "2" };
    let uf: Vec<String> = t
        .binding
        .iter()
        .map(|(o, id)| format!("{}_{id}", binding_prefix(*o)))
        .collect();
    to_row(json!({
        "ID": t.id.to_string(),
        "PARENT_ID": null,
        "TITLE": t.title,
        "DESCRIPTION": t.description,
        "MARK": null,
        "PRIORITY": "1",
        "STATUS": if overdue { "-1" } else { real },
        "REAL_STATUS": real,
        "SUB_STATUS": if overdue { "-1" } else { real },
        "MULTITASK": "N",
        "GROUP_ID": "0",
        "STAGE_ID": "0",
        "CREATED_BY": t.created_by.to_string(),
        "CREATED_DATE": iso(&t.created_at),
        "RESPONSIBLE_ID": t.responsible_id.to_string(),
        "CHANGED_BY": t.created_by.to_string(),
        "CHANGED_DATE": iso(&t.updated_at),
        "STATUS_CHANGED_DATE": iso(&t.updated_at),
        "CLOSED_BY": if t.completed { Value::String(t.responsible_id.to_string()) } else { Value::Null },
        "CLOSED_DATE": iso_or_null(t.closed_at),
        "ACTIVITY_DATE": iso(&t.updated_at),
        "DEADLINE": iso_or_null(t.deadline),
        "UF_CRM_TASK": uf,
        "AUDITORS_DATA": [],
        "ACCOMPLICES_DATA": [],
        "GROUP": [],
    }))
}

fn task_out(row: &Row, select: &[String]) -> Value {
    let all = select.is_empty() || select.iter().any(|s| s == "*");
    let mut out = Map::new();
    for (k, v) in row {
        let keep = k == "ID"
            || (all && !k.starts_with("UF_"))
            || select.iter().any(|s| s.eq_ignore_ascii_case(k));
        if keep {
            out.insert(list::camel(k), v.clone());
        }
    }
    Value::Object(out)
}

fn all_task_fields() -> Vec<String> {
    vec!["*".into(), "UF_CRM_TASK".into()]
}

fn user_row(u: &SimUser) -> Row {
    let position = match u.role {
        Role::Owner => "Генеральный директор",
        Role::HeadOfSales => "Руководитель отдела продаж",
        Role::Manager => "Менеджер по продажам",
        Role::Reactivation => "Менеджер по работе с базой",
        Role::Marketing => "Маркетолог",
    };
    to_row(json!({
        "ID": u.id.to_string(),
        "XML_ID": format!("sim{}", u.id),
        "ACTIVE": u.active,
        "NAME": u.first_name,
        "LAST_NAME": u.last_name,
        "SECOND_NAME": "",
        "EMAIL": u.email,
        "PERSONAL_GENDER": "",
        "PERSONAL_MOBILE": "",
        "WORK_PHONE": "",
        "WORK_POSITION": position,
        "UF_DEPARTMENT": [1],
        "UF_PHONE_INNER": u.extension,
        "IS_ONLINE": "N",
        "TIME_ZONE_OFFSET": "10800",
        "USER_TYPE": "employee",
    }))
}

struct StatusDef {
    id: u64,
    entity: String,
    code: String,
    name: String,
    sort: i64,
    category: Option<u64>,
    semantics: Option<StageKind>,
}

fn status_rows(w: &World) -> Vec<Row> {
    let mut defs = Vec::new();
    for p in &w.pipelines {
        let entity = if p.id == 0 {
            "DEAL_STAGE".to_string()
        } else {
            format!("DEAL_STAGE_{}", p.id)
        };
        for s in &p.stages {
            defs.push(StatusDef {
                id: s.id,
                entity: entity.clone(),
                code: s.code.clone(),
                name: s.name.clone(),
                sort: s.sort,
                category: Some(p.id),
                semantics: Some(s.kind),
            });
        }
    }
    let leads = [
        ("NEW", "Не обработан", StageKind::Open),
        ("IN_PROCESS", "В работе", StageKind::Open),
        ("PROCESSED", "Обработан", StageKind::Open),
        ("CONVERTED", "Качественный лид", StageKind::Won),
        ("JUNK", "Некачественный лид", StageKind::Lost),
    ];
    for (i, (code, name, kind)) in leads.into_iter().enumerate() {
        defs.push(StatusDef {
            id: 501 + i as u64,
            entity: "STATUS".into(),
            code: code.into(),
            name: name.into(),
            sort: 10 * (i as i64 + 1),
            category: None,
            semantics: Some(kind),
        });
    }
    let sources = [
        ("CALL", "Звонок"),
        ("EMAIL", "Электронная почта"),
        ("WEB", "Веб-сайт"),
        ("ADVERTISING", "Реклама"),
        ("PARTNER", "Существующий клиент"),
        ("RECOMMENDATION", "По рекомендации"),
        ("OTHER", "Другое"),
    ];
    for (i, (code, name)) in sources.into_iter().enumerate() {
        defs.push(StatusDef {
            id: 601 + i as u64,
            entity: "SOURCE".into(),
            code: code.into(),
            name: name.into(),
            sort: 10 * (i as i64 + 1),
            category: None,
            semantics: None,
        });
    }
    defs.into_iter()
        .map(|d| {
            let system = matches!(d.code.rsplit(':').next(), Some("NEW" | "WON" | "LOSE"))
                || matches!(d.code.as_str(), "CONVERTED" | "JUNK");
            let mut row = to_row(json!({
                "ID": d.id.to_string(),
                "ENTITY_ID": d.entity,
                "STATUS_ID": d.code,
                "NAME": d.name,
                "NAME_INIT": if system { Value::String(d.name.clone()) } else { Value::String(String::new()) },
                "SORT": d.sort.to_string(),
                "SYSTEM": yn(system),
                "CATEGORY_ID": d.category.map(|c| c.to_string()),
                "COLOR": "#39A8EF",
                "SEMANTICS": match d.semantics {
                    Some(StageKind::Won) => Value::String("S".into()),
                    Some(StageKind::Lost) => Value::String("F".into()),
                    _ => Value::Null,
                },
            }));
            if let Some(k) = d.semantics {
                row.insert(
                    "EXTRA".into(),
                    json!({
                        "SEMANTICS": match k {
                            StageKind::Open => "process",
                            StageKind::Won => "success",
                            StageKind::Lost => "failure",
                        },
                        "COLOR": "#39A8EF",
                    }),
                );
            }
            row
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Parameter helpers
// ---------------------------------------------------------------------------------------------

fn fields(p: &Value) -> Map<String, Value> {
    match param(p, &["fields", "FIELDS"]) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

fn fstr(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).filter(|v| !v.is_null()).map(scalar)
}

fn fu64(m: &Map<String, Value>, k: &str) -> Option<u64> {
    fstr(m, k).and_then(|s| s.trim().parse().ok())
}

fn pu64(p: &Value, names: &[&str]) -> Option<u64> {
    param(p, names).and_then(|v| scalar(v).trim().parse().ok())
}

fn yes(v: Option<String>) -> Option<bool> {
    v.map(|s| matches!(s.to_ascii_uppercase().as_str(), "Y" | "1" | "TRUE"))
}

/// Applies a PHONE/EMAIL multi-field update: item with ID overwrites that value, `DELETE: Y` or
/// an empty VALUE removes it, an item without ID is appended.
fn apply_multi(owner_id: u64, current: &mut Vec<String>, items: &Value) {
    let mut slots: Vec<Option<String>> = current.iter().cloned().map(Some).collect();
    for item in as_list(items) {
        let value = item.get("VALUE").map(scalar).unwrap_or_default();
        let delete = item
            .get("DELETE")
            .map(scalar)
            .is_some_and(|d| d.eq_ignore_ascii_case("Y"));
        let idx = item
            .get("ID")
            .map(scalar)
            .and_then(|s| s.parse::<u64>().ok())
            .and_then(|id| id.checked_sub(owner_id * 100 + 1))
            .map(|i| i as usize)
            .filter(|i| *i < slots.len());
        match idx {
            Some(i) if delete || value.is_empty() => slots[i] = None,
            Some(i) => slots[i] = Some(value),
            None if !value.is_empty() && !delete => slots.push(Some(value)),
            None => {}
        }
    }
    *current = slots.into_iter().flatten().collect();
}

fn list_out(out: list::ListOut, select: &[String], explicit_only: &[&str]) -> Out {
    let n = out.rows.len();
    Out {
        result: Value::Array(
            out.rows
                .into_iter()
                .map(|r| Value::Object(list::project(r, select, explicit_only)))
                .collect(),
        ),
        total: Some(out.total),
        next: out.next,
        rows: n,
    }
}

fn single(v: Value) -> Out {
    Out {
        result: v,
        total: None,
        next: None,
        rows: 1,
    }
}

const MULTI: &[&str] = &["PHONE", "EMAIL", "WEB", "IM"];
const ACT_EXPLICIT: &[&str] = &["COMMUNICATIONS", "FILES"];

fn get_id(p: &Value) -> Result<u64, ApiError> {
    pu64(p, &["id", "ID"]).ok_or_else(|| ApiError::method("ID is not defined or invalid."))
}

fn not_found() -> ApiError {
    ApiError::method("Not found")
}

/// The ids (with modification times) of a map inside the pre-check's id range, in ID order.
fn keys<'a, T>(
    m: &'a BTreeMap<u64, T>,
    pre: &list::Pre,
    desc: bool,
    updated: fn(&T) -> Ts,
) -> Box<dyn Iterator<Item = (u64, Ts)> + 'a> {
    if pre.impossible {
        return Box::new(std::iter::empty());
    }
    let it = m.range(pre.range()).map(move |(id, v)| (*id, updated(v)));
    if desc {
        Box::new(it.rev())
    } else {
        Box::new(it)
    }
}

/// Adds the flag field values (world `tags`) under every `UF_CRM_*` name in `names`.
fn with_flags(mut row: Row, tags: &[String], names: &[String]) -> Row {
    for n in names {
        row.insert(n.clone(), json!(tags));
    }
    row
}

/// `crm.{deal,lead,contact,company,activity}.list`: walks only the id range the filter allows
/// and renders rows only for candidates, so chained fast-paging pages stay cheap at any size.
fn crm_list(sim: &Sim, method: &str, p: &Value) -> Result<Out, ApiError> {
    let req = list::parse_req(p);
    let flags: Vec<String> = req
        .select
        .iter()
        .filter(|s| s.to_ascii_uppercase().starts_with("UF_CRM_"))
        .map(|s| s.to_ascii_uppercase())
        .collect();
    let activity = method == "crm.activity.list";
    let date_field = if activity {
        "LAST_UPDATED"
    } else {
        "DATE_MODIFY"
    };
    let pre = list::Pre::new(&req.filter, date_field);
    // Indexed activity lookups: by ORIGIN_ID, and to-dos only.
    let eq = |field: &str| {
        req.filter
            .iter()
            .find(|(k, _)| {
                let (op, f) = list::split_key(k);
                matches!(op, "" | "=") && f.eq_ignore_ascii_case(field)
            })
            .map(|(_, v)| scalar(v))
    };
    let origin = eq("ORIGIN_ID");
    let todo_only = eq("PROVIDER_ID").is_some_and(|p| p == "CRM_TODO");
    let todos = if activity {
        sim.b24.todos()
    } else {
        Default::default()
    };
    let w = sim.world();
    let gone = deleted(&w);
    let owner = match method {
        "crm.deal.list" => Owner::Deal,
        "crm.lead.list" => Owner::Lead,
        "crm.contact.list" => Owner::Contact,
        _ => Owner::Company,
    };
    let alive = |id: &(u64, Ts)| activity || !gone.contains(&(owner, id.0));
    let row_of = |id: u64| -> Option<Row> {
        match method {
            "crm.deal.list" => w
                .deals
                .get(&id)
                .map(|d| with_flags(deal_row(&w, d), &d.tags, &flags)),
            "crm.lead.list" => w.leads.get(&id).map(lead_row),
            "crm.contact.list" => w
                .contacts
                .get(&id)
                .map(|c| with_flags(contact_row(c), &c.tags, &flags)),
            "crm.company.list" => w
                .companies
                .get(&id)
                .map(|c| with_flags(company_row(c), &c.tags, &flags)),
            _ => match w.activities.get(&id) {
                Some(a) => Some(activity_row(a)),
                None => todos
                    .contains(&id)
                    .then(|| w.tasks.get(&id).map(todo_row))
                    .flatten(),
            },
        }
    };
    let items = |desc: bool| -> Box<dyn Iterator<Item = (u64, Ts)> + '_> {
        match method {
            "crm.deal.list" => keys(&w.deals, &pre, desc, |d| d.updated_at),
            "crm.lead.list" => keys(&w.leads, &pre, desc, |l| l.updated_at),
            "crm.contact.list" => keys(&w.contacts, &pre, desc, |c| c.updated_at),
            "crm.company.list" => keys(&w.companies, &pre, desc, |c| c.updated_at),
            _ => {
                let mut t: Vec<(u64, Ts)> = todos
                    .iter()
                    .filter(|id| pre.range().contains(id))
                    .filter_map(|id| w.tasks.get(id).map(|t| (*id, t.updated_at)))
                    .collect();
                if desc {
                    t.reverse();
                }
                if todo_only {
                    return Box::new(t.into_iter());
                }
                let acts = keys(&w.activities, &pre, desc, |a| a.updated_at);
                match &origin {
                    Some(o) => {
                        let o = o.clone();
                        let wr: &World = &w;
                        Box::new(acts.filter(move |(id, _)| {
                            wr.activities
                                .get(id)
                                .is_some_and(|a| a.external_id.as_deref() == Some(o.as_str()))
                        }))
                    }
                    None => Box::new(list::merge_ids(acts, t.into_iter(), desc)),
                }
            }
        }
    };
    let out = match list::id_order(&req, false) {
        Some(desc) => list::scan(&req, &pre, items(desc).filter(alive), row_of),
        None => {
            let rows: Vec<Row> = items(false)
                .filter(alive)
                .filter(|(id, up)| pre.pass(*id, *up))
                .filter_map(|(id, _)| row_of(id))
                .collect();
            list::run(rows, &req, false)
        }
    };
    let explicit = if activity { ACT_EXPLICIT } else { MULTI };
    Ok(list_out(out, &req.select, explicit))
}

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

/// Runs one method. `method` is lower-case without `.json`.
pub fn call(sim: &Sim, auth: AuthKind, method: &str, p: &Value) -> Result<Out, ApiError> {
    let now = Utc::now();
    match method {
        "crm.status.list" => {
            let req = list::parse_req(p);
            let rows = status_rows(&sim.world());
            let out = list::run(rows, &req, false);
            Ok(list_out(out, &req.select, MULTI))
        }
        "crm.deal.list" | "crm.lead.list" | "crm.contact.list" | "crm.company.list"
        | "crm.activity.list" => crm_list(sim, method, p),
        "crm.deal.get" | "crm.lead.get" | "crm.contact.get" | "crm.company.get" => {
            let id = get_id(p)?;
            let w = sim.world();
            let owner = match method {
                "crm.deal.get" => Owner::Deal,
                "crm.lead.get" => Owner::Lead,
                "crm.contact.get" => Owner::Contact,
                _ => Owner::Company,
            };
            if deleted(&w).contains(&(owner, id)) {
                return Err(not_found());
            }
            let flags: Vec<String> = sim.b24.flag_name().into_iter().collect();
            let row = match method {
                "crm.deal.get" => w
                    .deals
                    .get(&id)
                    .map(|d| with_flags(deal_row(&w, d), &d.tags, &flags)),
                "crm.lead.get" => w.leads.get(&id).map(lead_row),
                "crm.contact.get" => w
                    .contacts
                    .get(&id)
                    .map(|c| with_flags(contact_row(c), &c.tags, &flags)),
                _ => w
                    .companies
                    .get(&id)
                    .map(|c| with_flags(company_row(c), &c.tags, &flags)),
            };
            // `get` returns every field including multi-fields.
            row.map(|r| single(Value::Object(r))).ok_or_else(not_found)
        }
        "crm.deal.add" => deal_add(sim, p, now),
        "crm.deal.update" => deal_update(sim, p, now),
        "crm.lead.add" => lead_add(sim, p, now),
        "crm.lead.update" => lead_update(sim, p, now),
        "crm.contact.add" => contact_add(sim, p, now),
        "crm.contact.update" => contact_update(sim, p, now),
        "crm.company.update" => company_update(sim, p, now),
        "crm.activity.update" => activity_update(sim, p, now),
        "tasks.task.complete" => task_complete(sim, p, now),
        "task.commentitem.add" => task_comment_add(sim, p, now),
        "voximplant.statistic.get" => {
            let mut req = list::parse_req(p);
            req.order = match param(p, &["SORT", "sort"]) {
                Some(v) => {
                    let desc = param(p, &["ORDER", "order"])
                        .map(scalar)
                        .is_some_and(|o| o.eq_ignore_ascii_case("desc"));
                    vec![(scalar(v), desc)]
                }
                None => Vec::new(),
            };
            let out = list::run(sim.b24.call_stats(), &req, false);
            let n = out.rows.len();
            Ok(Out {
                result: Value::Array(out.rows.into_iter().map(Value::Object).collect()),
                total: Some(out.total),
                next: out.next,
                rows: n,
            })
        }
        "crm.category.list" => {
            let et = pu64(p, &["entityTypeId", "ENTITY_TYPE_ID"])
                .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Smart process not found"))?;
            let w = sim.world();
            let cats: Vec<Value> = if et == 2 {
                w.pipelines
                    .iter()
                    .enumerate()
                    .map(|(i, pl)| {
                        json!({
                            "id": pl.id,
                            "name": pl.name,
                            "sort": 100 * (i as i64 + 1),
                            "entityTypeId": 2,
                            "isDefault": yn(pl.is_default),
                            // crm-category-list.md: external ids, "" when none.
                            "originId": "",
                            "originatorId": "",
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let n = cats.len();
            Ok(Out {
                result: json!({"categories": cats}),
                total: Some(n as u64),
                next: None,
                rows: n,
            })
        }
        "crm.activity.add" => activity_add(sim, p, now),
        "crm.activity.todo.add" => todo_add(sim, p, now),
        "crm.timeline.comment.add" => comment_add(sim, p, now),
        "crm.duplicate.findbycomm" => find_by_comm(sim, p),
        "tasks.task.list" => {
            let req = list::parse_req(p);
            let todos = sim.b24.todos();
            let w = sim.world();
            let pre = list::Pre::new(&req.filter, "CHANGED_DATE");
            let row_of = |id: u64| {
                w.tasks
                    .get(&id)
                    .filter(|t| !todos.contains(&t.id))
                    .map(|t| task_row(t, now))
            };
            let out = match list::id_order(&req, true) {
                Some(desc) => {
                    let items = keys(&w.tasks, &pre, desc, |t| t.updated_at)
                        .filter(|(id, _)| !todos.contains(id));
                    list::scan(&req, &pre, items, row_of)
                }
                None => {
                    let rows: Vec<Row> = w
                        .tasks
                        .values()
                        .filter(|t| pre.pass(t.id, t.updated_at))
                        .filter_map(|t| row_of(t.id))
                        .collect();
                    list::run(rows, &req, true)
                }
            };
            let n = out.rows.len();
            let tasks: Vec<Value> = out.rows.iter().map(|r| task_out(r, &req.select)).collect();
            Ok(Out {
                result: json!({"tasks": tasks}),
                total: Some(out.total),
                next: out.next,
                rows: n,
            })
        }
        "tasks.task.get" => {
            let id = pu64(p, &["taskId", "TASKID", "id"])
                .ok_or_else(|| ApiError::new(400, "ERROR_CORE", "Task not found"))?;
            let select = list::parse_req(p).select;
            let todos = sim.b24.todos();
            let w = sim.world();
            let t = w
                .tasks
                .get(&id)
                .filter(|t| !todos.contains(&t.id))
                .ok_or_else(not_found)?;
            Ok(single(
                json!({"task": task_out(&task_row(t, now), &select)}),
            ))
        }
        "tasks.task.add" => task_add(sim, p, now),
        "tasks.task.update" => task_update(sim, p, now),
        "user.get" => {
            let mut req = list::parse_req(p);
            req.order = match param(p, &["sort", "SORT"]) {
                Some(v) => {
                    let desc = param(p, &["order", "ORDER"])
                        .map(scalar)
                        .is_some_and(|o| o.eq_ignore_ascii_case("desc"));
                    vec![(scalar(v), desc)]
                }
                None => Vec::new(),
            };
            let w = sim.world();
            let rows: Vec<Row> = w.users.iter().map(user_row).collect();
            let out = list::run(rows, &req, false);
            // user.get has no select: every field, user fields included.
            let n = out.rows.len();
            Ok(Out {
                result: Value::Array(out.rows.into_iter().map(Value::Object).collect()),
                total: Some(out.total),
                next: out.next,
                rows: n,
            })
        }
        // api-reference/common/system/scope.md: the granted scopes, or with `full` every
        // scope of the portal; basic is never listed.
        "scope" => {
            let full = list::param(p, &["full", "FULL"])
                .map(list::scalar)
                .is_some_and(|f| matches!(f.as_str(), "1" | "true" | "Y"));
            let scopes: Vec<String> = if full {
                super::ALL_SCOPES.iter().map(|s| s.to_string()).collect()
            } else {
                sim.b24.granted_scopes()
            };
            Ok(single(json!(scopes)))
        }
        "profile" => {
            let uid = match auth {
                AuthKind::Webhook => sim.creds.b24_webhook_user,
                AuthKind::OAuth => 1,
            };
            let w = sim.world();
            let u = w.user(uid).ok_or_else(not_found)?;
            Ok(single(json!({
                "ID": u.id.to_string(),
                "ADMIN": u.role == Role::Owner,
                "NAME": u.first_name,
                "LAST_NAME": u.last_name,
                "PERSONAL_GENDER": "",
                "PERSONAL_PHOTO": "",
                "TIME_ZONE": "Europe/Moscow",
                "TIME_ZONE_OFFSET": 10800,
            })))
        }
        "telephony.externalcall.register" | "telephony.externalcall.finish" => {
            if auth == AuthKind::Webhook {
                return Err(ApiError::new(
                    403,
                    "WRONG_AUTH_TYPE",
                    "Current authorization type is denied for this method",
                ));
            }
            if method.ends_with("register") {
                call_register(sim, p, now)
            } else {
                call_finish(sim, p, now)
            }
        }
        _ => Err(ApiError::new(
            404,
            "ERROR_METHOD_NOT_FOUND",
            "Method not found!",
        )),
    }
}

fn deal_add(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let f = fields(p);
    let mut w = sim.world();
    let (pipeline_id, stage_id) = resolve_stage(&w, &f)?;
    let id = w.next_id();
    let kind = w.stage(stage_id).map(|(_, s)| s.kind);
    let mut deal = SimDeal {
        id,
        title: fstr(&f, "TITLE").unwrap_or_else(|| format!("Сделка #{id}")),
        pipeline_id,
        stage_id,
        amount: fstr(&f, "OPPORTUNITY")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0),
        responsible_id: fu64(&f, "ASSIGNED_BY_ID").unwrap_or(1),
        contact_id: fu64(&f, "CONTACT_ID").filter(|x| *x > 0),
        company_id: fu64(&f, "COMPANY_ID").filter(|x| *x > 0),
        lead_id: fu64(&f, "LEAD_ID").filter(|x| *x > 0),
        source: fstr(&f, "SOURCE_ID").unwrap_or_else(|| "OTHER".into()),
        tags: vec![],
        loss_reason: None,
        created_at: now,
        updated_at: now,
        closed_at: (kind != Some(StageKind::Open)).then_some(now),
    };
    apply_flags(sim, &f, &mut deal.tags);
    w.deals.insert(id, deal);
    Ok(single(json!(id)))
}

fn resolve_stage(w: &World, f: &Map<String, Value>) -> Result<(u64, u64), ApiError> {
    if let Some(code) = fstr(f, "STAGE_ID") {
        let (p, s) = w
            .stage_by_code(&code)
            .ok_or_else(|| ApiError::method(&format!("Stage '{code}' not found")))?;
        return Ok((p.id, s.id));
    }
    let cat = fu64(f, "CATEGORY_ID").unwrap_or(0);
    let s = w
        .stage_of_kind(cat, StageKind::Open)
        .ok_or_else(|| ApiError::method("Category not found"))?;
    Ok((cat, s.id))
}

fn deal_update(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let id = get_id(p)?;
    let f = fields(p);
    let mut w = sim.world();
    let stage = if f.contains_key("STAGE_ID") {
        Some(resolve_stage(&w, &f)?)
    } else {
        None
    };
    let kind = stage.and_then(|(_, s)| w.stage(s).map(|(_, st)| st.kind));
    let d = w.deals.get_mut(&id).ok_or_else(not_found)?;
    if let Some(t) = fstr(&f, "TITLE") {
        d.title = t;
    }
    if let Some(a) = fstr(&f, "OPPORTUNITY").and_then(|s| s.parse().ok()) {
        d.amount = a;
    }
    if let Some(r) = fu64(&f, "ASSIGNED_BY_ID") {
        d.responsible_id = r;
    }
    if let Some(c) = fu64(&f, "CONTACT_ID") {
        d.contact_id = (c > 0).then_some(c);
    }
    if let Some(c) = fu64(&f, "COMPANY_ID") {
        d.company_id = (c > 0).then_some(c);
    }
    apply_flags(sim, &f, &mut d.tags);
    if let Some((pl, st)) = stage {
        d.pipeline_id = pl;
        d.stage_id = st;
        d.closed_at = match kind {
            Some(StageKind::Open) | None => None,
            _ => Some(now),
        };
    }
    d.updated_at = now;
    Ok(single(json!(true)))
}

fn lead_status(code: &str) -> Option<LeadStatus> {
    match code {
        "NEW" => Some(LeadStatus::New),
        "IN_PROCESS" | "PROCESSED" => Some(LeadStatus::InProcess),
        "CONVERTED" => Some(LeadStatus::Converted),
        "JUNK" => Some(LeadStatus::Junk),
        _ => None,
    }
}

fn first_value(v: Option<&Value>) -> Option<String> {
    v.map(as_list)?
        .iter()
        .filter_map(|i| i.get("VALUE").map(scalar))
        .find(|s| !s.is_empty())
}

fn lead_add(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let f = fields(p);
    let status = match fstr(&f, "STATUS_ID") {
        Some(c) => lead_status(&c).ok_or_else(|| ApiError::method("Status not found"))?,
        None => LeadStatus::New,
    };
    let mut w = sim.world();
    let id = w.next_id();
    let name = [fstr(&f, "NAME"), fstr(&f, "LAST_NAME")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let lead = SimLead {
        id,
        title: fstr(&f, "TITLE").unwrap_or_else(|| format!("Лид #{id}")),
        name,
        phone: first_value(f.get("PHONE")),
        email: first_value(f.get("EMAIL")),
        source: fstr(&f, "SOURCE_ID").unwrap_or_else(|| "OTHER".into()),
        status,
        responsible_id: fu64(&f, "ASSIGNED_BY_ID").unwrap_or(1),
        contact_id: fu64(&f, "CONTACT_ID").filter(|x| *x > 0),
        company_id: fu64(&f, "COMPANY_ID").filter(|x| *x > 0),
        utm: SimUtm {
            source: fstr(&f, "UTM_SOURCE"),
            medium: fstr(&f, "UTM_MEDIUM"),
            campaign: fstr(&f, "UTM_CAMPAIGN"),
        },
        created_at: now,
        updated_at: now,
        closed_at: matches!(status, LeadStatus::Converted | LeadStatus::Junk).then_some(now),
    };
    w.leads.insert(id, lead);
    Ok(single(json!(id)))
}

fn lead_update(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let id = get_id(p)?;
    let f = fields(p);
    let status = match fstr(&f, "STATUS_ID") {
        Some(c) => Some(lead_status(&c).ok_or_else(|| ApiError::method("Status not found"))?),
        None => None,
    };
    let mut w = sim.world();
    let l = w.leads.get_mut(&id).ok_or_else(not_found)?;
    if let Some(t) = fstr(&f, "TITLE") {
        l.title = t;
    }
    if let Some(s) = status {
        l.status = s;
        l.closed_at = matches!(s, LeadStatus::Converted | LeadStatus::Junk).then_some(now);
    }
    if let Some(r) = fu64(&f, "ASSIGNED_BY_ID") {
        l.responsible_id = r;
    }
    if let Some(items) = f.get("PHONE") {
        let mut phones: Vec<String> = l.phone.iter().cloned().collect();
        apply_multi(l.id, &mut phones, items);
        l.phone = phones.into_iter().next();
    }
    if let Some(c) = fu64(&f, "CONTACT_ID") {
        l.contact_id = (c > 0).then_some(c);
    }
    l.updated_at = now;
    Ok(single(json!(true)))
}

fn contact_add(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let f = fields(p);
    let mut w = sim.world();
    let id = w.next_id();
    let mut phones = Vec::new();
    let mut emails = Vec::new();
    if let Some(v) = f.get("PHONE") {
        apply_multi(id, &mut phones, v);
    }
    if let Some(v) = f.get("EMAIL") {
        apply_multi(id, &mut emails, v);
    }
    let mut c = SimContact {
        id,
        first_name: fstr(&f, "NAME").unwrap_or_default(),
        last_name: fstr(&f, "LAST_NAME").unwrap_or_default(),
        phones,
        emails,
        company_id: fu64(&f, "COMPANY_ID").filter(|x| *x > 0),
        responsible_id: fu64(&f, "ASSIGNED_BY_ID").unwrap_or(1),
        tags: vec![],
        created_at: now,
        updated_at: now,
    };
    apply_flags(sim, &f, &mut c.tags);
    w.contacts.insert(id, c);
    Ok(single(json!(id)))
}

fn contact_update(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let id = get_id(p)?;
    let f = fields(p);
    let mut w = sim.world();
    let c = w.contacts.get_mut(&id).ok_or_else(not_found)?;
    if let Some(n) = fstr(&f, "NAME") {
        c.first_name = n;
    }
    if let Some(n) = fstr(&f, "LAST_NAME") {
        c.last_name = n;
    }
    if let Some(v) = f.get("PHONE") {
        apply_multi(id, &mut c.phones, v);
    }
    if let Some(v) = f.get("EMAIL") {
        apply_multi(id, &mut c.emails, v);
    }
    if let Some(r) = fu64(&f, "ASSIGNED_BY_ID") {
        c.responsible_id = r;
    }
    if let Some(co) = fu64(&f, "COMPANY_ID") {
        c.company_id = (co > 0).then_some(co);
    }
    apply_flags(sim, &f, &mut c.tags);
    c.updated_at = now;
    Ok(single(json!(true)))
}

fn company_update(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let id = get_id(p)?;
    let f = fields(p);
    let mut w = sim.world();
    if deleted(&w).contains(&(Owner::Company, id)) {
        return Err(not_found());
    }
    let c = w.companies.get_mut(&id).ok_or_else(not_found)?;
    if let Some(t) = fstr(&f, "TITLE") {
        c.title = t;
    }
    if let Some(v) = f.get("PHONE") {
        apply_multi(id, &mut c.phones, v);
    }
    if let Some(v) = f.get("EMAIL") {
        apply_multi(id, &mut c.emails, v);
    }
    if let Some(r) = fu64(&f, "ASSIGNED_BY_ID") {
        c.responsible_id = r;
    }
    apply_flags(sim, &f, &mut c.tags);
    c.updated_at = now;
    Ok(single(json!(true)))
}

/// A `UF_CRM_*` multiple string field is where the fake keeps the world record's `tags`.
fn apply_flags(sim: &Sim, f: &Map<String, Value>, tags: &mut Vec<String>) {
    for (k, v) in f {
        let name = k.to_ascii_uppercase();
        if name.starts_with("UF_CRM_") {
            *tags = as_list(v)
                .iter()
                .map(scalar)
                .filter(|s| !s.trim().is_empty())
                .collect();
            sim.b24.set_flag_name(&name);
        }
    }
}

/// `crm.activity.update`: calls and meetings, and the to-dos kept as world tasks.
fn activity_update(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let id = get_id(p)?;
    let f = fields(p);
    let is_todo = sim.b24.todos().contains(&id);
    let mut w = sim.world();
    let resp = fu64(&f, "RESPONSIBLE_ID");
    if let Some(r) = resp
        && w.user(r).is_none()
    {
        return Err(ApiError::method("Responsible user not found"));
    }
    let completed = yes(fstr(&f, "COMPLETED"));
    if let Some(a) = w.activities.get_mut(&id) {
        if let Some(r) = resp {
            a.responsible_id = r;
        }
        if let Some(c) = completed {
            a.completed = c;
        }
        if let Some(s) = fstr(&f, "SUBJECT") {
            a.subject = s;
        }
        a.updated_at = now;
        return Ok(single(json!(true)));
    }
    let t = w
        .tasks
        .get_mut(&id)
        .filter(|_| is_todo)
        .ok_or_else(not_found)?;
    if let Some(r) = resp {
        t.responsible_id = r;
    }
    if let Some(c) = completed {
        t.completed = c;
        t.closed_at = c.then_some(now);
    }
    if let Some(s) = fstr(&f, "SUBJECT") {
        t.title = s;
    }
    if let Some(s) = fstr(&f, "DESCRIPTION") {
        t.description = s;
    }
    t.updated_at = now;
    Ok(single(json!(true)))
}

fn task_complete(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let id = pu64(p, &["taskId", "TASKID", "id"])
        .ok_or_else(|| ApiError::new(400, "ERROR_CORE", "Task not found"))?;
    let todos = sim.b24.todos();
    let mut w = sim.world();
    let t = w
        .tasks
        .get_mut(&id)
        .filter(|t| !todos.contains(&t.id))
        .ok_or_else(|| ApiError::new(400, "ERROR_CORE", "Task not found or not accessible"))?;
    if !t.completed {
        t.completed = true;
        t.closed_at = Some(now);
    }
    t.updated_at = now;
    let out = task_out(&task_row(t, now), &all_task_fields());
    Ok(single(json!({"task": out})))
}

/// `task.commentitem.add` with named parameters `TASKID` and `FIELDS.POST_MESSAGE`.
fn task_comment_add(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let id = pu64(p, &["TASKID", "taskId", "0"])
        .ok_or_else(|| ApiError::new(400, "ERROR_CORE", "Wrong task ID"))?;
    let fields = param(p, &["FIELDS", "fields", "1"])
        .cloned()
        .unwrap_or(Value::Null);
    let text = fields
        .get("POST_MESSAGE")
        .map(scalar)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::new(400, "ERROR_CORE", "POST_MESSAGE is empty"))?;
    let todos = sim.b24.todos();
    let mut w = sim.world();
    let t = w
        .tasks
        .get_mut(&id)
        .filter(|t| !todos.contains(&t.id))
        .ok_or_else(|| ApiError::new(400, "ERROR_CORE", "Task not found or not accessible"))?;
    t.result = Some(text);
    t.updated_at = now;
    let cid = w.next_id();
    Ok(single(json!(cid)))
}

fn activity_add(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let f = fields(p);
    let missing = [
        "OWNER_TYPE_ID",
        "OWNER_ID",
        "TYPE_ID",
        "SUBJECT",
        "RESPONSIBLE_ID",
    ]
    .into_iter()
    .find(|k| fstr(&f, k).is_none_or(|s| s.is_empty()));
    if let Some(k) = missing {
        return Err(ApiError::new(
            400,
            "100",
            &format!("Required field '{k}' is missing"),
        ));
    }
    let owner = fu64(&f, "OWNER_TYPE_ID")
        .and_then(owner_from_type_id)
        .ok_or_else(|| ApiError::method("OWNER_TYPE_ID is not supported"))?;
    let owner_id = fu64(&f, "OWNER_ID").unwrap_or(0);
    let kind = match fu64(&f, "TYPE_ID") {
        Some(1) => ActivityType::Meeting,
        Some(2) => ActivityType::Call,
        Some(4) => ActivityType::Email,
        _ => return Err(ApiError::method("TYPE_ID is not supported")),
    };
    let mut w = sim.world();
    if !owner_exists(&w, owner, owner_id) {
        return Err(ApiError::new(400, "OWNER_NOT_FOUND", "Owner not found"));
    }
    let start = fstr(&f, "START_TIME")
        .and_then(|s| parse_date(&s))
        .unwrap_or(now);
    let end = fstr(&f, "END_TIME").and_then(|s| parse_date(&s));
    let id = w.next_id();
    let a = SimActivity {
        id,
        kind,
        direction: if fu64(&f, "DIRECTION") == Some(2) {
            Dir::Out
        } else {
            Dir::In
        },
        subject: fstr(&f, "SUBJECT").unwrap_or_default(),
        owner: (owner, owner_id),
        responsible_id: fu64(&f, "RESPONSIBLE_ID").unwrap_or(1),
        phone: first_value(f.get("COMMUNICATIONS")),
        duration_s: end.map(|e| (e - start).num_seconds().max(0)).unwrap_or(0),
        completed: yes(fstr(&f, "COMPLETED")).unwrap_or(false),
        external_id: fstr(&f, "ORIGIN_ID"),
        start,
        created_at: now,
        updated_at: now,
    };
    w.activities.insert(id, a);
    Ok(single(json!(id)))
}

fn todo_add(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let ot = pu64(p, &["ownerTypeId"]);
    let oid = pu64(p, &["ownerId"]);
    let deadline = param(p, &["deadline"]).map(scalar);
    let (Some(ot), Some(oid), Some(deadline)) = (ot, oid, deadline) else {
        return Err(ApiError::new(400, "100", "Required parameters are missing"));
    };
    let deadline = parse_date(&deadline)
        .ok_or_else(|| ApiError::new(400, "WRONG_DATETIME_FORMAT", "Wrong datetime format"))?;
    let owner = owner_from_type_id(ot)
        .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Owner type not found"))?;
    let mut w = sim.world();
    if !owner_exists(&w, owner, oid) {
        return Err(ApiError::new(400, "OWNER_NOT_FOUND", "Owner not found"));
    }
    let id = w.next_id();
    let resp = pu64(p, &["responsibleId"]).unwrap_or(1);
    w.tasks.insert(
        id,
        SimTask {
            id,
            title: param(p, &["title"]).map(scalar).unwrap_or_default(),
            description: param(p, &["description"]).map(scalar).unwrap_or_default(),
            responsible_id: resp,
            created_by: resp,
            deadline: Some(deadline),
            completed: false,
            result: None,
            binding: Some((owner, oid)),
            created_at: now,
            updated_at: now,
            closed_at: None,
        },
    );
    drop(w);
    sim.b24.add_todo(id);
    Ok(single(json!({"id": id})))
}

fn comment_add(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    // Only lowercase `fields` is accepted.
    let Some(Value::Object(f)) = p.get("fields") else {
        return Err(ApiError::new(
            400,
            "INVALID_ARG_VALUE",
            "Parameter 'fields' is required",
        ));
    };
    let comment = fstr(f, "COMMENT").unwrap_or_default();
    if comment.trim().is_empty() {
        return Err(ApiError::new(
            400,
            "INVALID_ARG_VALUE",
            "Comment text is empty",
        ));
    }
    let owner = fstr(f, "ENTITY_TYPE")
        .and_then(|s| owner_from_name(&s))
        .ok_or_else(|| ApiError::new(400, "INVALID_ARG_VALUE", "Wrong ENTITY_TYPE"))?;
    let id = fu64(f, "ENTITY_ID").unwrap_or(0);
    let mut w = sim.world();
    if !owner_exists(&w, owner, id) {
        return Err(ApiError::new(400, "OWNER_NOT_FOUND", "Owner not found"));
    }
    w.comments.push((owner, id, comment, now));
    let cid = w.next_id();
    Ok(single(json!(cid)))
}

fn find_by_comm(sim: &Sim, p: &Value) -> Result<Out, ApiError> {
    let kind = param(p, &["type", "TYPE"])
        .map(scalar)
        .unwrap_or_default()
        .to_ascii_uppercase();
    let values: Vec<String> = param(p, &["values", "VALUES"])
        .map(|v| as_list(v).iter().map(scalar).collect())
        .unwrap_or_default();
    if values.is_empty() || values.len() > 20 {
        return Err(ApiError::method(
            "Parameter 'values' must be a non-empty array of up to 20 items",
        ));
    }
    let only = param(p, &["entity_type", "ENTITY_TYPE"]).map(|v| scalar(v).to_ascii_uppercase());
    let w = sim.world();
    let mut hits: Vec<(Owner, u64)> = Vec::new();
    for v in &values {
        let found = match kind.as_str() {
            "PHONE" => w.find_by_phone(v),
            "EMAIL" => {
                let v = v.to_lowercase();
                let mut out = Vec::new();
                out.extend(
                    w.leads
                        .values()
                        .filter(|l| l.email.as_deref().is_some_and(|e| e.to_lowercase() == v))
                        .map(|l| (Owner::Lead, l.id)),
                );
                out.extend(
                    w.contacts
                        .values()
                        .filter(|c| c.emails.iter().any(|e| e.to_lowercase() == v))
                        .map(|c| (Owner::Contact, c.id)),
                );
                out.extend(
                    w.companies
                        .values()
                        .filter(|c| c.emails.iter().any(|e| e.to_lowercase() == v))
                        .map(|c| (Owner::Company, c.id)),
                );
                out
            }
            _ => return Err(ApiError::method("Communication type is not supported")),
        };
        for h in found {
            if !hits.contains(&h) {
                hits.push(h);
            }
        }
    }
    let mut out = Map::new();
    for (owner, name) in [
        (Owner::Lead, "LEAD"),
        (Owner::Contact, "CONTACT"),
        (Owner::Company, "COMPANY"),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let ids: Vec<Value> = hits
            .iter()
            .filter(|(o, _)| *o == owner)
            .map(|(_, id)| json!(id))
            .collect();
        if !ids.is_empty() {
            let full = ids.len() >= 20;
            out.insert(name.into(), Value::Array(ids));
            if full {
                break;
            }
        }
    }
    let n = out.len();
    let result = if out.is_empty() {
        Value::Array(vec![])
    } else {
        Value::Object(out)
    };
    Ok(Out {
        result,
        total: None,
        next: None,
        rows: n,
    })
}

fn task_add(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let f = fields(p);
    let title = fstr(&f, "TITLE").filter(|s| !s.trim().is_empty());
    let resp = fu64(&f, "RESPONSIBLE_ID");
    let (Some(title), Some(resp)) = (title, resp) else {
        return Err(ApiError::new(
            400,
            "ERROR_CORE",
            "TITLE and RESPONSIBLE_ID are required",
        ));
    };
    let binding = f
        .get("UF_CRM_TASK")
        .map(as_list)
        .unwrap_or_default()
        .iter()
        .find_map(|v| parse_binding(&scalar(v)));
    let mut w = sim.world();
    if w.user(resp).is_none() {
        return Err(ApiError::new(
            400,
            "ERROR_CORE",
            "Responsible user not found",
        ));
    }
    let id = w.next_id();
    let t = SimTask {
        id,
        title,
        description: fstr(&f, "DESCRIPTION").unwrap_or_default(),
        responsible_id: resp,
        created_by: fu64(&f, "CREATED_BY").unwrap_or(1),
        deadline: fstr(&f, "DEADLINE").and_then(|s| parse_date(&s)),
        completed: false,
        result: None,
        binding,
        created_at: now,
        updated_at: now,
        closed_at: None,
    };
    let out = task_out(&task_row(&t, now), &all_task_fields());
    w.tasks.insert(id, t);
    Ok(single(json!({"task": out})))
}

fn task_update(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let id = pu64(p, &["taskId", "TASKID", "id"])
        .ok_or_else(|| ApiError::new(400, "ERROR_CORE", "Task not found"))?;
    let f = fields(p);
    let mut w = sim.world();
    let t = w.tasks.get_mut(&id).ok_or_else(not_found)?;
    if let Some(s) = fstr(&f, "TITLE") {
        t.title = s;
    }
    if let Some(s) = fstr(&f, "DESCRIPTION") {
        t.description = s;
    }
    if let Some(r) = fu64(&f, "RESPONSIBLE_ID") {
        t.responsible_id = r;
    }
    if let Some(d) = fstr(&f, "DEADLINE") {
        t.deadline = parse_date(&d);
    }
    if let Some(s) = fu64(&f, "STATUS") {
        t.completed = s == 5;
        t.closed_at = t.completed.then_some(now);
    }
    if let Some(b) = f.get("UF_CRM_TASK") {
        t.binding = as_list(b).iter().find_map(|v| parse_binding(&scalar(v)));
    }
    t.updated_at = now;
    let out = task_out(&task_row(t, now), &all_task_fields());
    Ok(single(json!({"task": out})))
}

fn call_register(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let phone = param(p, &["PHONE_NUMBER"]).map(scalar).unwrap_or_default();
    let ty = pu64(p, &["TYPE"]).unwrap_or(0);
    if phone.is_empty() || !(1..=5).contains(&ty) {
        return Err(ApiError::method("PHONE_NUMBER and TYPE are required"));
    }
    let mut w = sim.world();
    let user_id = match pu64(p, &["USER_ID"]) {
        Some(u) => u,
        None => {
            let inner = param(p, &["USER_PHONE_INNER"]).map(scalar);
            w.users
                .iter()
                .find(|u| Some(&u.extension) == inner.as_ref())
                .map(|u| u.id)
                .ok_or_else(|| ApiError::method("USER_ID or USER_PHONE_INNER is required"))?
        }
    };
    let start = param(p, &["CALL_START_DATE"])
        .and_then(|v| parse_date(&scalar(v)))
        .unwrap_or(now);
    let explicit = param(p, &["CRM_ENTITY_TYPE"])
        .and_then(|v| owner_from_name(&scalar(v)))
        .zip(pu64(p, &["CRM_ENTITY_ID"]));
    let mut created_lead = Value::Null;
    let owner = match explicit.or_else(|| w.find_by_phone(&phone).into_iter().next()) {
        Some(o) => Some(o),
        None if pu64(p, &["CRM_CREATE"]).unwrap_or(1) == 1 => {
            let id = w.next_id();
            w.leads.insert(
                id,
                SimLead {
                    id,
                    title: format!("Звонок с {phone}"),
                    name: String::new(),
                    phone: Some(phone.clone()),
                    email: None,
                    source: "CALL".into(),
                    status: LeadStatus::New,
                    responsible_id: user_id,
                    contact_id: None,
                    company_id: None,
                    utm: SimUtm::default(),
                    created_at: now,
                    updated_at: now,
                    closed_at: None,
                },
            );
            created_lead = json!(id);
            Some((Owner::Lead, id))
        }
        None => None,
    };
    drop(w);
    let external = param(p, &["EXTERNAL_CALL_ID"]).map(scalar);
    let call_id = sim.b24.register_call(PendingCall {
        user_id,
        phone,
        incoming: ty != 1,
        start,
        owner,
        external_id: external,
    });
    let (ety, eid) = match owner {
        Some((o, id)) => (
            Value::String(format!("{o:?}").to_ascii_uppercase()),
            json!(id),
        ),
        None => (Value::Null, Value::Null),
    };
    let entities: Vec<Value> = if created_lead.is_null() {
        vec![]
    } else {
        vec![json!({"ENTITY_TYPE": "LEAD", "ENTITY_ID": created_lead})]
    };
    Ok(single(json!({
        "CALL_ID": call_id,
        "CRM_CREATED_LEAD": created_lead,
        "CRM_CREATED_ENTITIES": entities,
        "CRM_ENTITY_TYPE": ety,
        "CRM_ENTITY_ID": eid,
        "LEAD_CREATION_ERROR": null,
    })))
}

fn call_finish(sim: &Sim, p: &Value, now: Ts) -> Result<Out, ApiError> {
    let call_id = param(p, &["CALL_ID"]).map(scalar).unwrap_or_default();
    let pending = sim
        .b24
        .take_call(&call_id)
        .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Call is not found"))?;
    let duration = pu64(p, &["DURATION"]).unwrap_or(0) as i64;
    let status = param(p, &["STATUS_CODE"]).map(scalar).unwrap_or_else(|| {
        if duration > 0 {
            "200".into()
        } else {
            "304".into()
        }
    });
    let mut w = sim.world();
    let activity_id = match pending.owner {
        Some(owner) => {
            let id = w.next_id();
            w.activities.insert(
                id,
                SimActivity {
                    id,
                    kind: ActivityType::Call,
                    direction: if pending.incoming { Dir::In } else { Dir::Out },
                    subject: if pending.incoming {
                        "Входящий звонок".into()
                    } else {
                        "Исходящий звонок".into()
                    },
                    owner,
                    responsible_id: pending.user_id,
                    phone: Some(pending.phone.clone()),
                    duration_s: duration,
                    completed: true,
                    external_id: Some(pending.external_id.clone().unwrap_or(call_id.clone())),
                    start: pending.start,
                    created_at: now,
                    updated_at: now,
                },
            );
            json!(id)
        }
        None => Value::Null,
    };
    let (ety, eid) = match pending.owner {
        Some((o, id)) => (
            Value::String(format!("{o:?}").to_ascii_uppercase()),
            Value::String(id.to_string()),
        ),
        None => (Value::Null, Value::Null),
    };
    let eid_num = match pending.owner {
        Some((_, id)) => json!(id),
        None => Value::Null,
    };
    let stat_id = w.next_id();
    drop(w);
    sim.b24.push_call_stat(to_row(json!({
        "ID": stat_id.to_string(),
        "CALL_ID": call_id,
        "EXTERNAL_CALL_ID": pending.external_id,
        "PORTAL_USER_ID": pending.user_id.to_string(),
        "PORTAL_NUMBER": "REST_APP",
        "PHONE_NUMBER": pending.phone,
        "CALL_TYPE": if pending.incoming { "2" } else { "1" },
        "CALL_DURATION": duration.to_string(),
        "CALL_START_DATE": iso(&pending.start),
        "CALL_FAILED_CODE": status,
        "CALL_FAILED_REASON": if status == "200" { "Success call" } else { "Missed call" },
        "CALL_RECORD_URL": "",
        "CALL_VOTE": null,
        "COST": "0.0000",
        "COST_CURRENCY": "RUB",
        "CRM_ENTITY_TYPE": ety,
        "CRM_ENTITY_ID": eid,
        "CRM_ACTIVITY_ID": activity_id.as_u64().map(|a| a.to_string()),
        "COMMENT": null,
    })));
    // The answer of `api-reference/telephony/telephony-external-call-finish.md`: numbers where
    // the page has numbers, and `CALL_START_DATE` as the empty object the page shows (a date
    // object serialised without its fields).
    Ok(single(json!({
        "CALL_ID": call_id,
        "EXTERNAL_CALL_ID": pending.external_id,
        "PORTAL_USER_ID": pending.user_id,
        "PHONE_NUMBER": pending.phone,
        "PORTAL_NUMBER": "REST_APP",
        "INCOMING": if pending.incoming { "2" } else { "1" },
        "CALL_DURATION": duration,
        "CALL_START_DATE": {},
        "CALL_STATUS": 1,
        "CALL_VOTE": null,
        "COST": 0,
        "COST_CURRENCY": "RUB",
        "CALL_FAILED_CODE": status,
        "CALL_FAILED_REASON": if status == "200" { "" } else { "Missed call" },
        "REST_APP_ID": "1",
        "REST_APP_NAME": "dozor",
        "CRM_ACTIVITY_ID": activity_id,
        "COMMENT": null,
        "CRM_ENTITY_TYPE": ety,
        "CRM_ENTITY_ID": eid_num,
        "ID": stat_id,
    })))
}
