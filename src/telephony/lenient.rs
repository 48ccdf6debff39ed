//! Lenient reading of telephony JSON: CoMagic and Calltouch send the same value as a number in
//! one answer and as a string in the next, booleans as `true`, `"true"` or `"1"`, and empty
//! strings where a value is absent. Both connectors read their rows through these, so a quirk
//! learnt from one provider protects the other.
//!
//! The CRMs have their own readers: Bitrix24's PHP heritage (`"Y"`/`"N"`, `[]` for an empty
//! map, `"0"` for no reference) lives in `crm::bitrix24`, and amoCRM answers are typed serde
//! structs.

use serde_json::Value;

/// An id: a number or a non-empty string, as text.
pub(crate) fn id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A text value, trimmed; a number as its digits; empty or blank means none.
pub(crate) fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A boolean sent as a JSON boolean, a number (0 or not) or the strings `true`/`false`,
/// `1`/`0`, `yes`/`no` (any case, surrounding blanks ignored). An empty string is none: a
/// caller for whom it means "no" says so where it reads the field.
pub(crate) fn flag(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

/// An unsigned integer sent as a number or a numeric string.
pub(crate) fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An integer sent as a number (a fraction is cut), or a numeric string.
pub(crate) fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_are_numbers_or_non_empty_strings() {
        assert_eq!(id(Some(&json!(42))), Some("42".into()));
        assert_eq!(id(Some(&json!("a7"))), Some("a7".into()));
        assert_eq!(id(Some(&json!(""))), None);
        assert_eq!(id(Some(&json!(null))), None);
        assert_eq!(id(None), None);
    }

    #[test]
    fn text_is_trimmed_and_blank_is_none() {
        assert_eq!(text(Some(&json!("  Анна "))), Some("Анна".into()));
        assert_eq!(text(Some(&json!(" "))), None);
        assert_eq!(text(Some(&json!(7))), Some("7".into()));
        assert_eq!(text(Some(&json!(true))), None);
    }

    #[test]
    fn flags_accept_the_spellings_providers_send() {
        for yes in [
            json!(true),
            json!(1),
            json!("true"),
            json!(" TRUE "),
            json!("1"),
            json!("yes"),
        ] {
            assert_eq!(flag(Some(&yes)), Some(true), "{yes}");
        }
        for no in [
            json!(false),
            json!(0),
            json!("false"),
            json!("0"),
            json!("No"),
        ] {
            assert_eq!(flag(Some(&no)), Some(false), "{no}");
        }
        assert_eq!(flag(Some(&json!(""))), None);
        assert_eq!(flag(Some(&json!("maybe"))), None);
        assert_eq!(flag(None), None);
    }

    #[test]
    fn integers_come_as_numbers_or_numeric_strings() {
        assert_eq!(uint(&json!(5)), Some(5));
        assert_eq!(uint(&json!(" 5 ")), Some(5));
        assert_eq!(uint(&json!(-5)), None);
        assert_eq!(int(Some(&json!(1.9))), Some(1));
        assert_eq!(int(Some(&json!("-3"))), Some(-3));
        assert_eq!(int(Some(&json!("x"))), None);
    }
}
