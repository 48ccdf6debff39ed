//! PHP bracket syntax (`filter[>ID]=5&select[]=ID&order[ID]=ASC`) to and from JSON.
//!
//! Bitrix24 `batch` commands, Bitrix24 event deliveries and amoCRM webhooks and filters all use
//! it, so the connectors read and write it through this one module. The simulator has its own
//! reading, written from PHP's rules (crates/dozor-sim/src/php_query.rs), so a mistake here
//! cannot be mirrored there.
//!
//! Why not `serde_qs` (1.1.3, tried on the cases of the tests here and of the Bitrix24 contract
//! and simulator tests): it nests brackets and encodes a `batch` command's inner query once more
//! exactly as we do, but no one of its array formats writes what Bitrix24 needs in one query.
//! `Indexed` writes `select[0]=ID` where the docs, and the contract tests transcribed from them,
//! write `select[]=ID`; `EmptyIndexed` writes a multi-field as
//! `fields[PHONE][][VALUE]=…&fields[PHONE][][VALUE_TYPE]=WORK`, which PHP reads as two phones
//! of one field each. [`build`] writes `[]` for scalar items and `[0]`, `[1]` for objects. It
//! also writes booleans as PHP's `1` / `0`, where the crate writes `true` / `false` and PHP
//! reads the string `"false"` as true. Wrapping the crate would mean rewriting the value
//! before it sees it, which is most of the 40 lines it would replace.

use serde_json::{Map, Value};

/// Parses a query string (or a form body) into nested JSON objects and arrays. Every leaf is a
/// string, as PHP would see it. `a[]=1&a[]=2` becomes an array; `a[0]=x&a[1]=y` an object with
/// keys "0" and "1" (callers that expect a list accept both, see [`as_list`]).
pub fn parse(query: &str) -> Value {
    let mut root = Value::Object(Map::new());
    for (k, v) in url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes()) {
        let (head, rest) = match k.find('[') {
            Some(i) => (&k[..i], &k[i..]),
            None => (&k[..], ""),
        };
        let mut path = vec![head.to_string()];
        let mut rest = rest;
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            path.push(stripped[..end].to_string());
            rest = &stripped[end + 1..];
        }
        insert(&mut root, &path, Value::String(v.into_owned()));
    }
    root
}

fn insert(node: &mut Value, path: &[String], leaf: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if first.is_empty() {
        // `[]`: append to an array.
        if !node.is_array() {
            *node = Value::Array(Vec::new());
        }
        let arr = node.as_array_mut().expect("just made an array");
        if rest.is_empty() {
            arr.push(leaf);
        } else {
            let mut child = Value::Object(Map::new());
            insert(&mut child, rest, leaf);
            arr.push(child);
        }
        return;
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    let obj = node.as_object_mut().expect("just made an object");
    if rest.is_empty() {
        obj.insert(first.clone(), leaf);
    } else {
        let child = obj
            .entry(first.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        insert(child, rest, leaf);
    }
}

/// Serialises JSON into PHP bracket syntax, URL-encoding keys and values.
pub fn build(value: &Value) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Value::Object(m) = value {
        for (k, v) in m {
            flatten(k.clone(), v, &mut pairs);
        }
    }
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

fn flatten(prefix: String, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(format!("{prefix}[{k}]"), v, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                if v.is_object() || v.is_array() {
                    flatten(format!("{prefix}[{i}]"), v, out);
                } else {
                    flatten(format!("{prefix}[]"), v, out);
                }
            }
        }
        Value::Null => out.push((prefix, String::new())),
        Value::Bool(b) => out.push((prefix, if *b { "1".into() } else { "0".into() })),
        Value::Number(n) => out.push((prefix, n.to_string())),
        Value::String(s) => out.push((prefix, s.clone())),
    }
}

/// A value that should be a list: an array as is, an object's values in key order (`a[0]`,
/// `a[1]`), a scalar as a one-item list.
pub fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(m) => {
            let mut items: Vec<(&String, &Value)> = m.iter().collect();
            items.sort_by_key(|(k, _)| k.parse::<u64>().unwrap_or(u64::MAX));
            items.into_iter().map(|(_, v)| v.clone()).collect()
        }
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_bitrix_list_command() {
        let v = parse("filter[>ID]=0&order[ID]=ASC&select[]=ID&select[]=CONTACT_ID&start=-1");
        assert_eq!(
            v,
            json!({"filter":{">ID":"0"},"order":{"ID":"ASC"},"select":["ID","CONTACT_ID"],"start":"-1"})
        );
    }

    #[test]
    fn parses_event_delivery() {
        let v = parse(
            "event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D=662&auth%5Bapplication_token%5D=t",
        );
        assert_eq!(v["data"]["FIELDS"]["ID"], "662");
        assert_eq!(v["auth"]["application_token"], "t");
    }

    #[test]
    fn round_trips() {
        let v = json!({"filter":{">=DATE_MODIFY":"2024-01-15T10:00:00+03:00"},"select":["ID","TITLE"],"start":"-1"});
        assert_eq!(parse(&build(&v)), v);
        assert!(
            build(&v).contains("%2B03%3A00"),
            "plus sign must be encoded"
        );
    }

    #[test]
    fn lists_from_indexed_keys() {
        let v = parse("leads[status][0][id]=1&leads[status][1][id]=2");
        let items = as_list(&v["leads"]["status"]);
        assert_eq!(items.len(), 2);
        assert_eq!(items[1]["id"], "2");
    }
}
