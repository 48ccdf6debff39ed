//! List semantics shared by every `*.list` method of the fake: filter prefixes, ordering,
//! 50-row pages with `start` offsets (`-1` = no count), and `select`.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use crate::php_query::as_list;

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
pub fn project(row: Row, select: &[String], explicit_only: &[&str]) -> Row {
    let all = select.is_empty() || select.iter().any(|s| s == "*");
    if all
        && row
            .keys()
            .all(|k| !explicit_only.contains(&k.as_str()) && !k.starts_with("UF_"))
    {
        return row;
    }
    let named = |k: &str| select.iter().any(|s| s.eq_ignore_ascii_case(k));
    row.into_iter()
        .filter(|(k, _)| {
            if k.as_str() == "ID" || named(k) {
                return true;
            }
            all && !explicit_only.contains(&k.as_str()) && !k.starts_with("UF_")
        })
        .collect()
}

/// The part of a filter that can be decided on a record's id and modification time alone, so
/// that a list walks only the id range it needs and builds rows only for candidates.
#[derive(Debug, Clone)]
pub struct Pre {
    /// Inclusive id bounds.
    pub lo: u64,
    pub hi: u64,
    /// (operator, instant) conditions on the modification-time field.
    dates: Vec<(&'static str, DateTime<Utc>)>,
    /// Nothing can match (empty id range, unparsable date).
    pub impossible: bool,
    /// The filter holds nothing else: the pre-check alone decides a match.
    pub exact: bool,
}

impl Pre {
    pub fn new(filter: &Map<String, Value>, date_field: &str) -> Pre {
        let mut pre = Pre {
            lo: 0,
            hi: u64::MAX,
            dates: Vec::new(),
            impossible: false,
            exact: true,
        };
        for (key, want) in filter {
            let (op, field) = split_key(key);
            let field = field.to_ascii_uppercase();
            if field == "ID" {
                let Ok(v) = scalar(want).trim().parse::<u64>() else {
                    pre.exact = false;
                    continue;
                };
                match op {
                    ">" => match v.checked_add(1) {
                        Some(x) => pre.lo = pre.lo.max(x),
                        None => pre.impossible = true,
                    },
                    ">=" => pre.lo = pre.lo.max(v),
                    "<" => match v.checked_sub(1) {
                        Some(x) => pre.hi = pre.hi.min(x),
                        None => pre.impossible = true,
                    },
                    "<=" => pre.hi = pre.hi.min(v),
                    "" | "=" => {
                        pre.lo = pre.lo.max(v);
                        pre.hi = pre.hi.min(v);
                    }
                    _ => pre.exact = false,
                }
            } else if field == date_field {
                let op: &'static str = match op {
                    ">" => ">",
                    ">=" => ">=",
                    "<" => "<",
                    "<=" => "<=",
                    _ => {
                        pre.exact = false;
                        continue;
                    }
                };
                match parse_date(&scalar(want)) {
                    Some(t) => pre.dates.push((op, t)),
                    None => pre.impossible = true,
                }
            } else {
                pre.exact = false;
            }
        }
        if pre.lo > pre.hi {
            pre.impossible = true;
        }
        pre
    }

    /// The inclusive id range to walk.
    pub fn range(&self) -> std::ops::RangeInclusive<u64> {
        self.lo..=self.hi
    }

    /// Whether a record passes the id and date conditions (dates compare at the one-second
    /// precision rows are rendered with).
    pub fn pass(&self, id: u64, updated: DateTime<Utc>) -> bool {
        if self.impossible || id < self.lo || id > self.hi {
            return false;
        }
        let t = DateTime::from_timestamp(updated.timestamp(), 0).unwrap_or(updated);
        self.dates.iter().all(|(op, want)| match *op {
            ">" => t > *want,
            ">=" => t >= *want,
            "<" => t < *want,
            _ => t <= *want,
        })
    }
}

/// `Some(descending)` when a list is ordered by ID alone (or by default), else `None`.
pub fn id_order(req: &ListReq, default_desc: bool) -> Option<bool> {
    match req.order.as_slice() {
        [] => Some(default_desc),
        [(f, desc)] if f.eq_ignore_ascii_case("ID") => Some(*desc),
        _ => None,
    }
}

/// Pages `items` (ids with modification times, already in the requested ID order) without
/// building rows for records the page does not need. `row_of` renders one record.
pub fn scan(
    req: &ListReq,
    pre: &Pre,
    items: impl Iterator<Item = (u64, DateTime<Utc>)>,
    row_of: impl Fn(u64) -> Option<Row>,
) -> ListOut {
    let mut candidates = items.filter(|(id, up)| pre.pass(*id, *up));
    let mut rows = Vec::new();
    if pre.impossible {
        return ListOut {
            rows,
            total: 0,
            next: None,
        };
    }
    if req.start < 0 {
        for (id, _) in candidates.by_ref() {
            if let Some(r) = row_of(id)
                && (pre.exact || matches(&r, &req.filter))
            {
                rows.push(r);
                if rows.len() == PAGE {
                    break;
                }
            }
        }
        return ListOut {
            rows,
            total: 0,
            next: None,
        };
    }
    let start = req.start as usize;
    let mut n = 0usize;
    for (id, _) in candidates {
        let in_page = n >= start && n < start + PAGE;
        if pre.exact && !in_page {
            n += 1;
            continue;
        }
        let Some(r) = row_of(id) else { continue };
        if !pre.exact && !matches(&r, &req.filter) {
            continue;
        }
        if in_page {
            rows.push(r);
        }
        n += 1;
    }
    ListOut {
        rows,
        total: n as u64,
        next: (start + PAGE < n).then_some((start + PAGE) as u64),
    }
}

/// Merges two ascending (or, with `desc`, descending) id streams.
pub fn merge_ids<A, B>(a: A, b: B, desc: bool) -> impl Iterator<Item = (u64, DateTime<Utc>)>
where
    A: Iterator<Item = (u64, DateTime<Utc>)>,
    B: Iterator<Item = (u64, DateTime<Utc>)>,
{
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) => {
            if (x.0 < y.0) != desc {
                a.next()
            } else {
                b.next()
            }
        }
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
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
