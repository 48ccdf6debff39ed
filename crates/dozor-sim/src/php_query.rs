//! A query string or form body as PHP reads it (`$_GET`, `$_POST`, `parse_str`) and writes it
//! (`http_build_query`). Bitrix24 and amoCRM both run on PHP, so this is what the real services
//! see of a request: `filter[>ID]=5&select[]=ID&order[ID]=ASC`, batch commands, event
//! deliveries and webhooks.
//!
//! Written from PHP's own rules (`php_register_variable_ex` in `main/php_variables.c`, the
//! `http_build_query` manual page), not from any client's encoder, so that a misreading in a
//! client cannot be mirrored here and pass unnoticed:
//!
//! - leading spaces of a name are dropped; in the part before the first `[`, `.` and ` `
//!   become `_`; a name that is empty there (`=x`, `[a]=x`) is ignored;
//! - `[key]` indexes nest, `[]` appends at the next integer index (one above the largest
//!   integer key so far, 0 in an empty array); a key that is a canonical decimal integer
//!   (`"7"`, `"-3"`, not `"07"` or `"-0"`) is an integer key, so `a[0]` and `a[]` are the same;
//! - a first `[` that is never closed is no index: it and every ` `, `.`, `[` after it become
//!   `_` in the name (`a[b=1` is `a_b`); an unclosed later one, and anything after a `]` that
//!   is not `[`, is ignored;
//! - a later value for the same key replaces the earlier one in its place; a scalar that gets
//!   an index becomes an array;
//! - more than 64 levels of nesting (`max_input_nesting_level`) drop the variable.
//!
//! Arrays come out as JSON the way `json_encode` writes them: a list (keys 0, 1, 2, … in order)
//! as a JSON array, anything else as an object. Every leaf is a string.

use serde_json::{Map, Value};

/// PHP's default `max_input_nesting_level`.
const MAX_NESTING: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Int(i64),
    Str(String),
}

impl Key {
    /// `ZEND_HANDLE_NUMERIC_STR`: a canonical decimal integer in range is an integer key.
    fn from(s: &str) -> Key {
        let digits = s.strip_prefix('-').unwrap_or(s);
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
            && s != "-0";
        match s.parse::<i64>() {
            Ok(n) if canonical => Key::Int(n),
            _ => Key::Str(s.to_string()),
        }
    }

    fn text(&self) -> String {
        match self {
            Key::Int(n) => n.to_string(),
            Key::Str(s) => s.clone(),
        }
    }
}

#[derive(Debug)]
enum Node {
    Str(String),
    Arr(PhpArray),
}

/// An ordered PHP array: entries in insertion order and the next free integer index.
#[derive(Debug, Default)]
struct PhpArray {
    entries: Vec<(Key, Node)>,
    /// `None` until an integer key is used (the next append is then 0).
    next_free: Option<i64>,
}

impl PhpArray {
    fn position(&self, key: &Key) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k == key)
    }

    fn note_key(&mut self, key: &Key) {
        if let Key::Int(n) = key
            && self.next_free.is_none_or(|f| *n >= f)
        {
            self.next_free = Some(n.saturating_add(1));
        }
    }

    /// `zend_symtable_update`: replaces in place or appends.
    fn set(&mut self, key: Key, node: Node) -> &mut Node {
        let at = match self.position(&key) {
            Some(i) => {
                self.entries[i].1 = node;
                i
            }
            None => {
                self.note_key(&key);
                self.entries.push((key, node));
                self.entries.len() - 1
            }
        };
        &mut self.entries[at].1
    }

    /// `zend_hash_next_index_insert`; `None` when that index is taken (at `i64::MAX`).
    fn append(&mut self, node: Node) -> Option<&mut Node> {
        let key = Key::Int(self.next_free.unwrap_or(0));
        if self.position(&key).is_some() {
            return None;
        }
        Some(self.set(key, node))
    }

    /// The array under `key`, made (or a scalar there replaced) when it is not one.
    fn array_at(&mut self, key: Key) -> &mut PhpArray {
        let node = match self.position(&key) {
            Some(i) => &mut self.entries[i].1,
            None => self.set(key, Node::Arr(PhpArray::default())),
        };
        if !matches!(node, Node::Arr(_)) {
            *node = Node::Arr(PhpArray::default());
        }
        match node {
            Node::Arr(a) => a,
            Node::Str(_) => unreachable!("made an array just above"),
        }
    }

    fn to_json(&self) -> Value {
        let is_list = self
            .entries
            .iter()
            .enumerate()
            .all(|(i, (k, _))| i64::try_from(i).is_ok_and(|i| *k == Key::Int(i)));
        if is_list {
            Value::Array(self.entries.iter().map(|(_, n)| n.to_json()).collect())
        } else {
            self.object()
        }
    }

    fn object(&self) -> Value {
        Value::Object(
            self.entries
                .iter()
                .map(|(k, n)| (k.text(), n.to_json()))
                .collect::<Map<String, Value>>(),
        )
    }
}

impl Node {
    fn to_json(&self) -> Value {
        match self {
            Node::Str(s) => Value::String(s.clone()),
            Node::Arr(a) => a.to_json(),
        }
    }
}

/// Parses a query string (a leading `?` is allowed) or a form body into a JSON object of
/// strings, arrays and objects, as PHP would read it.
pub fn parse(query: &str) -> Value {
    let mut root = PhpArray::default();
    for (name, value) in url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes()) {
        register(&mut root, &name, value.into_owned());
    }
    // The top level is the variable table, never a list.
    root.object()
}

/// One `name=value` pair into `root`, by `php_register_variable_ex`'s rules.
fn register(root: &mut PhpArray, name: &str, value: String) {
    let name = name.trim_start_matches(' ');
    let open = name.find('[');
    let base: String = name[..open.unwrap_or(name.len())]
        .chars()
        .map(|c| if c == ' ' || c == '.' { '_' } else { c })
        .collect();
    if base.is_empty() {
        return;
    }
    // `None` is `[]`.
    let mut indexes: Vec<Option<String>> = Vec::new();
    if let Some(open) = open {
        let mut rest = &name[open..];
        loop {
            if indexes.len() + 1 > MAX_NESTING {
                return;
            }
            let inner = &rest[1..];
            let Some(close) = inner.find(']') else {
                if indexes.is_empty() {
                    let tail: String = inner
                        .chars()
                        .map(|c| if matches!(c, ' ' | '.' | '[') { '_' } else { c })
                        .collect();
                    root.set(Key::from(&format!("{base}_{tail}")), Node::Str(value));
                    return;
                }
                break;
            };
            indexes.push((close > 0).then(|| inner[..close].to_string()));
            rest = &inner[close + 1..];
            if !rest.starts_with('[') {
                break;
            }
        }
    }
    let mut table = root;
    let mut key = Some(base);
    for index in indexes {
        let here = table;
        table = match key {
            Some(k) => here.array_at(Key::from(&k)),
            None => match here.append(Node::Arr(PhpArray::default())) {
                Some(Node::Arr(a)) => a,
                _ => return,
            },
        };
        key = index;
    }
    match key {
        Some(k) => {
            table.set(Key::from(&k), Node::Str(value));
        }
        None => {
            table.append(Node::Str(value));
        }
    }
}

/// `http_build_query`: nested arrays and objects as `a[b][0]=…`, keys and values encoded as
/// `urlencode` does (space as `+`, everything but letters, digits and `-_.` as `%XX`), `true` as
/// `1`, `false` as `0`, `null` left out.
pub fn build(value: &Value) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    match value {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| flatten(k.clone(), v, &mut pairs)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(i.to_string(), v, &mut pairs)),
        _ => {}
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn flatten(name: String, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| flatten(format!("{name}[{k}]"), v, out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(format!("{name}[{i}]"), v, out)),
        Value::Null => {}
        Value::Bool(b) => out.push((name, if *b { "1" } else { "0" }.to_string())),
        Value::Number(n) => out.push((name, n.to_string())),
        Value::String(s) => out.push((name, s.clone())),
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A value meant as a list: an array as is, an object's values by integer key (PHP keeps
/// insertion order; a JSON object has lost it, so `a[1]`, `a[2]` come in key order, other keys
/// after them), a scalar as a one-item list, nothing for `null`.
pub fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(m) => {
            let mut items: Vec<(Option<i64>, &Value)> =
                m.iter().map(|(k, v)| (k.parse::<i64>().ok(), v)).collect();
            items.sort_by_key(|(k, _)| (k.is_none(), *k));
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
    fn bitrix24_list_command() {
        let v = parse("filter[>ID]=0&order[ID]=ASC&select[]=ID&select[]=CONTACT_ID&start=-1");
        assert_eq!(
            v,
            json!({"filter":{">ID":"0"},"order":{"ID":"ASC"},"select":["ID","CONTACT_ID"],"start":"-1"})
        );
    }

    #[test]
    fn event_delivery_with_encoded_brackets() {
        let v = parse(
            "event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D=662&auth%5Bapplication_token%5D=t",
        );
        assert_eq!(v["data"]["FIELDS"]["ID"], "662");
        assert_eq!(v["auth"]["application_token"], "t");
    }

    #[test]
    fn explicit_and_appended_integer_keys_are_one_array() {
        assert_eq!(parse("a[0]=x&a[1]=y"), parse("a[]=x&a[]=y"));
        assert_eq!(parse("a[0]=x&a[1]=y")["a"], json!(["x", "y"]));
        // An append goes one above the largest integer key.
        assert_eq!(
            parse("a[]=x&a[5]=y&a[]=z")["a"],
            json!({"0":"x","5":"y","6":"z"})
        );
        assert_eq!(parse("a[3]=x&a[]=y")["a"], json!({"3":"x","4":"y"}));
        // Keys that are not canonical integers stay strings; the array is then no list.
        assert_eq!(parse("a[0]=x&a[01]=y")["a"], json!({"0":"x","01":"y"}));
        assert_eq!(parse("a[-0]=x")["a"], json!({"-0":"x"}));
        assert_eq!(parse("a[1]=x&a[0]=y")["a"], json!({"0":"y","1":"x"}));
    }

    #[test]
    fn nested_lists_of_objects() {
        let v = parse("leads[status][0][id]=1&leads[status][1][id]=2&f[PHONE][][VALUE]=+7");
        assert_eq!(v["leads"]["status"], json!([{"id":"1"},{"id":"2"}]));
        // `[]` followed by an index makes a new element each time.
        assert_eq!(v["f"]["PHONE"], json!([{"VALUE":" 7"}]));
        let v = parse("f[PHONE][][VALUE]=1&f[PHONE][][VALUE]=2");
        assert_eq!(v["f"]["PHONE"], json!([{"VALUE":"1"},{"VALUE":"2"}]));
    }

    #[test]
    fn later_values_replace_earlier_ones() {
        assert_eq!(parse("a=1&a=2"), json!({"a":"2"}));
        assert_eq!(parse("a=1&a[b]=2"), json!({"a":{"b":"2"}}));
        assert_eq!(parse("a[b]=2&a=1"), json!({"a":"1"}));
        assert_eq!(
            parse("a[x]=1&a[y]=2&a[x]=3"),
            json!({"a":{"x":"3","y":"2"}})
        );
    }

    #[test]
    fn names_as_php_mangles_them() {
        assert_eq!(
            parse("a.b=1&c d=2&%20e=3"),
            json!({"a_b":"1","c_d":"2","e":"3"})
        );
        // Only the part before the first bracket is mangled.
        assert_eq!(parse("f[a.b]=1"), json!({"f":{"a.b":"1"}}));
        // No name, no variable.
        assert_eq!(parse("=1&[a]=2&a=3"), json!({"a":"3"}));
        // An unclosed first bracket is part of the name.
        assert_eq!(parse("a[b.c[d=1"), json!({"a_b_c_d":"1"}));
        // An unclosed later bracket, or text after `]`, is ignored.
        assert_eq!(
            parse("a[b][c=1&x[y]z=2"),
            json!({"a":{"b":"1"},"x":{"y":"2"}})
        );
        // A bracket inside an index is part of the key.
        assert_eq!(parse("a[b[c]]=1"), json!({"a":{"b[c":"1"}}));
    }

    #[test]
    fn nesting_beyond_the_limit_drops_the_variable() {
        let deep = |n: usize| format!("a{}=1", "[x]".repeat(n));
        assert!(parse(&deep(64))["a"].is_object());
        assert_eq!(parse(&format!("{}&b=2", deep(65))), json!({"b":"2"}));
    }

    #[test]
    fn top_level_is_an_object_even_for_integer_names() {
        assert_eq!(parse("0=a&1=b"), json!({"0":"a","1":"b"}));
        assert_eq!(parse(""), json!({}));
        assert_eq!(parse("?a=1&flag"), json!({"a":"1","flag":""}));
    }

    #[test]
    fn builds_what_http_build_query_builds() {
        let v = json!({"filter":{">=DATE_MODIFY":"2024-01-15T10:00:00+03:00"},
                       "select":["ID","TITLE"],"n":5,"y":true,"no":false,"gone":null,"s":"a b~*"});
        assert_eq!(
            build(&v),
            "filter%5B%3E%3DDATE_MODIFY%5D=2024-01-15T10%3A00%3A00%2B03%3A00&n=5&no=0\
             &s=a+b%7E%2A&select%5B0%5D=ID&select%5B1%5D=TITLE&y=1"
        );
        assert_eq!(
            parse(&build(&v)),
            json!({"filter":{">=DATE_MODIFY":"2024-01-15T10:00:00+03:00"},
                   "select":["ID","TITLE"],"n":"5","y":"1","no":"0","s":"a b~*"})
        );
    }

    #[test]
    fn lists_from_any_shape() {
        assert_eq!(as_list(&json!(["a", "b"])), vec![json!("a"), json!("b")]);
        assert_eq!(
            as_list(&json!({"10":"c","2":"b","x":"z"})),
            vec![json!("b"), json!("c"), json!("z")]
        );
        assert_eq!(as_list(&json!("a")), vec![json!("a")]);
        assert!(as_list(&Value::Null).is_empty());
    }
}
