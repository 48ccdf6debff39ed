//! List semantics shared by every `*.list` method of the fake: filter prefixes, ordering,
//! 50-row pages with `start` offsets (`-1` = no count), and `select`.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use crate::http::php_query::as_list;

pub const PAGE: usize = 50;

pub type Row = Map<String, Value>;

/// What a list call asked for.
#[derive(Debug, Clone, Default)]
pub struct ListReq {
    pub filter: Map<String, Value>,
    /// (field, descending)
    pub order: Vec<(String, bool)>,
    pub start: i64,
    pub select: Vec<String>,
}

/// One page of a list.
pub struct ListOut {
    pub rows: Vec<Row>,
    pub total: u64,
    pub next: Option<u64>,
}

/// Reads `key` or its upper-case twin from the params.
pub fn param<'a>(p: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| p.get(*n))
        .filter(|v| !v.is_null())
}

pub fn parse_req(p: &Value) -> ListReq {
    let filter = match param(p, &["filter", "FILTER"]) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let order = match param(p, &["order", "ORDER"]) {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let desc = scalar(v).eq_ignore_ascii_case("desc");
                (k.clone(), desc)
            })
            .collect(),
        _ => Vec::new(),
    };
    let start = param(p, &["start", "START"])
        .map(|v| scalar(v).trim().parse::<i64>().unwrap_or(0))
        .unwrap_or(0);
    let select = param(p, &["select", "SELECT"])
        .map(|v| as_list(v).iter().map(scalar).collect())
        .unwrap_or_default();
    ListReq {
        filter,
        order,
        start,
        select,
    }
}

/// A JSON scalar as PHP would print it.
pub fn scalar(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(true) => "Y".into(),
        Value::Bool(false) => "N".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses the date shapes Bitrix24 accepts in filters and fields.
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    let msk = FixedOffset::east_opt(3 * 3600)?;
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%d.%m.%Y %H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return msk
                .from_local_datetime(&n)
                .single()
                .map(|d| d.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%d", "%d.%m.%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, f) {
            return msk
                .from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
                .single()
                .map(|d| d.with_timezone(&Utc));
        }
    }
    None
}

fn looks_like_date(s: &str) -> bool {
    s.len() >= 10 && (s.as_bytes()[4] == b'-' || s.as_bytes().get(2) == Some(&b'.'))
}

/// Compares a row value with a filter value: numbers numerically, dates as instants, the rest
/// as strings. `None` = not comparable (unparsable date, empty value against a number).
fn compare(row: &Value, want: &Value) -> Option<Ordering> {
    let a = scalar(row);
    let b = match row {
        Value::Bool(_) => match scalar(want).to_ascii_lowercase().as_str() {
            "true" | "y" | "1" => "Y".to_string(),
            _ => "N".to_string(),
        },
        _ => scalar(want),
    };
    if let (Ok(x), Ok(y)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        return x.partial_cmp(&y);
    }
    if looks_like_date(&a) || looks_like_date(&b) {
        let x = parse_date(&a)?;
        let y = parse_date(&b)?;
        return Some(x.cmp(&y));
    }
    if a.is_empty() && b.trim().parse::<f64>().is_ok() {
        return None;
    }
    Some(a.cmp(&b))
}

fn equals(row: &Value, want: &Value) -> bool {
    match (row, want) {
        (Value::Array(items), _) => items.iter().any(|i| equals(i, want)),
        (_, Value::Array(_) | Value::Object(_)) => as_list(want).iter().any(|w| equals(row, w)),
        _ => compare(row, want) == Some(Ordering::Equal),
    }
}

fn like(row: &Value, pattern: &str, explicit: bool) -> bool {
    let hay = scalar(row).to_lowercase();
    let pat = pattern.to_lowercase();
    if !explicit {
        return hay.contains(&pat);
    }
    let parts: Vec<&str> = pat.split('%').collect();
    let mut pos = 0usize;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            if !hay.starts_with(part) {
                return false;
            }
            pos = part.len();
            continue;
        }
        match hay[pos..].find(part) {
            Some(at) => pos += at + part.len(),
            None => return false,
        }
    }
    match parts.last() {
        Some(last) if !last.is_empty() && parts.len() > 1 => hay.ends_with(last),
        _ => true,
    }
}

const PREFIXES: [&str; 15] = [
    "!=%", "!%=", "!@", "!=", ">=", "<=", "=%", "%=", "!%", "@", "!", ">", "<", "=", "%",
];

/// Splits `>=DATE_MODIFY` into (`>=`, `DATE_MODIFY`).
pub fn split_key(key: &str) -> (&str, &str) {
    for p in PREFIXES {
        if let Some(rest) = key.strip_prefix(p) {
            return (p, rest);
        }
    }
    ("", key)
}

/// All filter conditions AND-ed.
pub fn matches(row: &Row, filter: &Map<String, Value>) -> bool {
    filter.iter().all(|(key, want)| {
        if key.eq_ignore_ascii_case("BINDINGS") {
            // Activities: any of the given owner bindings.
            return as_list(want).iter().any(|b| {
                let null = Value::Null;
                ["OWNER_TYPE_ID", "OWNER_ID"].iter().all(|k| {
                    b.get(*k)
                        .is_none_or(|v| equals(row.get(*k).unwrap_or(&null), v))
                })
            });
        }
        let (op, field) = split_key(key);
        let field = field.to_ascii_uppercase();
        let null = Value::Null;
        let v = row.get(&field).unwrap_or(&null);
        match op {
            "" | "=" => equals(v, want),
            "!" | "!=" => !equals(v, want),
            ">" => compare(v, want) == Some(Ordering::Greater),
            ">=" => matches!(compare(v, want), Some(Ordering::Greater | Ordering::Equal)),
            "<" => compare(v, want) == Some(Ordering::Less),
            "<=" => matches!(compare(v, want), Some(Ordering::Less | Ordering::Equal)),
            "@" => as_list(want).iter().any(|w| equals(v, w)),
            "!@" => !as_list(want).iter().any(|w| equals(v, w)),
            "%" => like(v, &scalar(want), false),
            "=%" | "%=" => like(v, &scalar(want), true),
            "!%" => !like(v, &scalar(want), false),
            _ => !like(v, &scalar(want), true),
        }
    })
}

fn sort_rows(rows: &mut [Row], order: &[(String, bool)]) {
    let null = Value::Null;
    rows.sort_by(|a, b| {
        for (field, desc) in order {
            let f = field.to_ascii_uppercase();
            let x = a.get(&f).unwrap_or(&null);
            let y = b.get(&f).unwrap_or(&null);
            let o = compare(x, y).unwrap_or(Ordering::Equal);
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        let x = a.get("ID").map(scalar).and_then(|s| s.parse::<u64>().ok());
        let y = b.get("ID").map(scalar).and_then(|s| s.parse::<u64>().ok());
        x.cmp(&y)
    });
}

/// Keeps the selected fields. `*` (or no select) means every plain field except the ones in
/// `explicit_only` (multi-fields, COMMUNICATIONS) and user fields; those come only when named.
pub fn project(row: &Row, select: &[String], explicit_only: &[&str]) -> Row {
    let all = select.is_empty() || select.iter().any(|s| s == "*");
    let named = |k: &str| select.iter().any(|s| s.eq_ignore_ascii_case(k));
    row.iter()
        .filter(|(k, _)| {
            if k.as_str() == "ID" || named(k) {
                return true;
            }
            all && !explicit_only.contains(&k.as_str()) && !k.starts_with("UF_")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Filters, orders and pages `rows` the way `crm.*.list` does.
pub fn run(mut rows: Vec<Row>, req: &ListReq, default_desc: bool) -> ListOut {
    rows.retain(|r| matches(r, &req.filter));
    let order = if req.order.is_empty() {
        vec![("ID".to_string(), default_desc)]
    } else {
        req.order.clone()
    };
    sort_rows(&mut rows, &order);
    let count = rows.len();
    if req.start < 0 {
        rows.truncate(PAGE);
        return ListOut {
            rows,
            total: 0,
            next: None,
        };
    }
    let start = (req.start as usize).min(count);
    let end = (start + PAGE).min(count);
    let page: Vec<Row> = rows.drain(start..end).collect();
    ListOut {
        rows: page,
        total: count as u64,
        next: (end < count).then_some(end as u64),
    }
}

/// `RESPONSIBLE_ID` → `responsibleId` (tasks answer in camelCase).
pub fn camel(key: &str) -> String {
    let mut out = String::new();
    for (i, part) in key.split('_').enumerate() {
        let lower = part.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&lower);
        } else {
            let mut c = lower.chars();
            if let Some(f) = c.next() {
                out.push(f.to_ascii_uppercase());
                out.extend(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn prefixes_and_dates() {
        let r = row(
            json!({"ID":"15","DATE_MODIFY":"2024-01-15T10:00:00+03:00","STAGE_ID":"C1:WON","TITLE":"Big deal"}),
        );
        let f = |v: Value| matches(&r, v.as_object().unwrap());
        assert!(f(json!({">ID": 10})));
        assert!(!f(json!({">ID": "15"})));
        assert!(f(json!({">=ID": "15", "<=ID": 15})));
        assert!(f(json!({">=DATE_MODIFY": "2024-01-15T07:00:00Z"})));
        assert!(!f(json!({">DATE_MODIFY": "2024-01-15T10:00:00+03:00"})));
        assert!(!f(json!({">DATE_MODIFY": "garbage-date"})));
        assert!(f(json!({"=STAGE_ID": "C1:WON", "!STAGE_ID": "C1:LOSE"})));
        assert!(f(json!({"@ID": ["1", "15"]})));
        assert!(f(json!({"!@ID": [1, 2]})));
        assert!(f(json!({"%TITLE": "big"})));
        assert!(f(json!({"=%TITLE": "Big%"})));
        assert!(!f(json!({"!%TITLE": "deal"})));
        let a = row(json!({"ID":"3","OWNER_TYPE_ID":"2","OWNER_ID":"5"}));
        let bind = |v: Value| matches(&a, v.as_object().unwrap());
        assert!(bind(
            json!({"BINDINGS": [{"OWNER_TYPE_ID": 2, "OWNER_ID": 5}]})
        ));
        assert!(!bind(
            json!({"BINDINGS": [{"OWNER_TYPE_ID": 3, "OWNER_ID": 5}]})
        ));
    }

    #[test]
    fn camel_case() {
        assert_eq!(camel("UF_CRM_TASK"), "ufCrmTask");
        assert_eq!(camel("ID"), "id");
        assert_eq!(camel("CHANGED_DATE"), "changedDate");
    }
}
