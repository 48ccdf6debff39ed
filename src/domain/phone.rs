//! Phone numbers to E.164.
//!
//! CRM fields and telephony exports hold numbers in every shape people type: `8 (999) 123-45-67`,
//! `+7 999 1234567 доб. 12`, `9991234567`. Matching a caller to a client only works on one
//! canonical form, so everything is reduced to `+<digits>` here, and junk is named as junk.

use std::fmt;

/// Why a string is not a usable phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneError {
    /// No digits at all (empty, "нет", "-").
    NoDigits,
    /// Digits that cannot form a number (too short, too long, wrong country shape).
    BadLength(usize),
}

impl fmt::Display for PhoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhoneError::NoDigits => write!(f, "not a phone number: no digits"),
            PhoneError::BadLength(n) => {
                write!(f, "not a phone number: {n} digits (expected 10-15)")
            }
        }
    }
}

impl std::error::Error for PhoneError {}

/// Normalises `raw` to E.164 (`+79991234567`). Russian numbers written with a leading 8 or
/// without a country code (10 digits) become +7; extensions (`доб.`, `ext`, `#`, `,`) are dropped.
pub fn normalize(raw: &str) -> Result<String, PhoneError> {
    let main = strip_extension(raw);
    let plus = main.trim_start().starts_with('+') || main.trim_start().starts_with("00");
    let mut digits: String = main.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return Err(PhoneError::NoDigits);
    }
    if main.trim_start().starts_with("00") {
        digits.drain(..2);
    }
    let e164 = match (plus, digits.len(), digits.as_bytes()[0]) {
        // 8 999 ... and 7 999 ... are both Russian trunk forms of +7.
        (false, 11, b'8') | (false, 11, b'7') => format!("7{}", &digits[1..]),
        // 999 123 45 67: a Russian number typed without the country code.
        (false, 10, b'9') | (false, 10, b'3'..=b'8') => format!("7{digits}"),
        (_, 11..=15, _) => digits,
        (true, 10, _) => digits,
        (_, n, _) => return Err(PhoneError::BadLength(n)),
    };
    Ok(format!("+{e164}"))
}

/// Cuts an extension off: everything after `доб`, `ext`, `x`, `#`, `,` or `;`.
fn strip_extension(raw: &str) -> &str {
    let lower = raw.to_lowercase();
    let markers = ["доб", "ext", "вн", "#", ",", ";", " x"];
    let cut = markers
        .iter()
        .filter_map(|m| lower.find(m))
        .min()
        .unwrap_or(lower.len());
    // `lower` and `raw` can differ in byte length only for non-ASCII letters; map the cut back
    // through char positions so the slice is always on a boundary of `raw`.
    let chars_before = lower[..cut].chars().count();
    match raw.char_indices().nth(chars_before) {
        Some((i, _)) => &raw[..i],
        None => raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russian_shapes_become_plus_seven() {
        for raw in [
            "8 (999) 123-45-67",
            "+7 999 123 45 67",
            "79991234567",
            "9991234567",
            "+7(999)1234567 доб. 123",
            "8-999-123-45-67 ext 5",
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok("+79991234567"), "{raw}");
        }
    }

    #[test]
    fn international_numbers_keep_their_country() {
        assert_eq!(
            normalize("+44 20 7946 0958").as_deref(),
            Ok("+442079460958")
        );
        assert_eq!(normalize("00375291234567").as_deref(), Ok("+375291234567"));
    }

    #[test]
    fn junk_is_named() {
        assert_eq!(normalize("нет"), Err(PhoneError::NoDigits));
        assert_eq!(normalize(""), Err(PhoneError::NoDigits));
        assert_eq!(normalize("123"), Err(PhoneError::BadLength(3)));
        assert_eq!(
            normalize("1234567890123456"),
            Err(PhoneError::BadLength(16))
        );
    }
}
