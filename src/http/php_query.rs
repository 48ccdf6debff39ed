//! JSON to PHP bracket syntax (`filter[>ID]=5&select[]=ID&order[ID]=ASC`), and lists read
//! back from what PHP serialises as either an array or an object keyed `0`, `1`, ….
//!
//! The Bitrix24 client writes its `batch` commands and list queries through [`build`]. Nothing in
//! dozor needs to read the syntax: the webhook receivers look their few bracketed fields up by
//! name. The simulator has its own reading, written from PHP's rules
//! (crates/dozor-sim/src/php_query.rs), so a mistake here cannot be mirrored there.
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

use serde_json::Value;

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
pub(crate) fn as_list(v: &Value) -> Vec<Value> {
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
    fn builds_a_bitrix_list_command() {
        let v = json!({"filter":{">=DATE_MODIFY":"2024-01-15T10:00:00+03:00"},"select":["ID","TITLE"],"start":"-1"});
        assert_eq!(
            build(&v),
            "filter%5B%3E%3DDATE_MODIFY%5D=2024-01-15T10%3A00%3A00%2B03%3A00\
             &select%5B%5D=ID&select%5B%5D=TITLE&start=-1"
        );
    }

    #[test]
    fn builds_multi_fields_indexed_and_booleans_as_php_reads_them() {
        let v = json!({"fields":{"PHONE":[{"VALUE":"+7999","VALUE_TYPE":"WORK"}],"OPENED":true,"X":false}});
        assert_eq!(
            build(&v),
            "fields%5BOPENED%5D=1&fields%5BPHONE%5D%5B0%5D%5BVALUE%5D=%2B7999\
             &fields%5BPHONE%5D%5B0%5D%5BVALUE_TYPE%5D=WORK&fields%5BX%5D=0"
        );
    }

    #[test]
    fn lists_from_indexed_keys() {
        let v = json!({"status": {"1": {"id": "2"}, "0": {"id": "1"}}});
        let items = as_list(&v["status"]);
        assert_eq!(items.len(), 2);
        assert_eq!(items[1]["id"], "2");
        assert_eq!(as_list(&json!(["a"])), vec![json!("a")]);
        assert!(as_list(&Value::Null).is_empty());
    }
}
