//! Phone numbers to E.164.
//!
//! CRM fields and telephony exports hold numbers in every shape people type: `8 (999) 123-45-67`,
//! `+7 999 1234567 доб. 12`, `9991234567`. Matching a caller to a client only works on one
//! canonical form, so everything is reduced to `+<digits>` here, and junk is named as junk.
//!
//! Why not libphonenumber (the `phonenumber` crate, 0.3.10 with metadata 9.0.33): tried on the
//! inputs of the tests here and 3,646 generated ones (Russian numbers in every written shape,
//! eight foreign country codes with `+` and `00`), parsing with RU as the default region. Its
//! results differ where ours are relied on:
//! - parsing alone: 1,208 of 3,646 differ, 318 of them Russian. It takes the trunk `8` off after
//!   the country code (`+7 816 975-21-62` → `+7169752162`, a digit lost; `8 800 555 35 35` →
//!   `+7005553535`), reads `00375…` as a Russian number (`+700375…`, RU's prefix is `810`),
//!   refuses extensions written `доб.` / `вн.`, and accepts `123` as `+7123`;
//! - with its validation on top: 2,955 differ, 1,513 of them Russian-shaped. Most of those are
//!   generated area codes no operator holds, which validation is for; but it also refuses what
//!   it mangled above (`8 800 …`) and test numbers such as `+7 000 000-00-01`, and
//!   a number in a range allotted after the metadata was cut would stop matching its calls.
//!
//! Keeping our rules on top would mean undoing most of what it does. Cost per number over 10⁶
//! (10⁵ for the crate), release build, same inputs, two runs on a shared 2-core machine: ours
//! 1.2-2.0 µs, the crate's parse 3.1-5.0 µs, parse and validation 39-43 µs. Cheap enough at
//! write time either way, so the results decided it (`normalising_cost` below prints ours;
//! unoptimised it is 19-27 µs). dozor keeps its own rules: a number is `+`, a country code that
//! does not start with 0, 10-15 digits in all; Russian trunk and national forms become +7;
//! anything else is refused with the reason.

use std::fmt;

/// Why a string is not a usable phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneError {
    /// No digits at all (empty, "нет", "-").
    NoDigits,
    /// Digits that cannot form a number (too short, too long, wrong country shape).
    BadLength(usize),
    /// The number would start with 0: no country code can be read from it.
    NoCountry,
}

impl fmt::Display for PhoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhoneError::NoDigits => write!(f, "not a phone number: no digits"),
            PhoneError::BadLength(n) => write!(
                f,
                "not a phone number: {n} digits (expected 11-15 with the country code, \
                 or 10 for a Russian number without it)"
            ),
            PhoneError::NoCountry => write!(
                f,
                "not a phone number: it starts with 0 and has no country code"
            ),
        }
    }
}

impl std::error::Error for PhoneError {}

/// Whether `s` is E.164 as [`normalize`] writes it: `+`, a non-zero digit, 10-15 digits in all.
pub fn is_e164(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else {
        return false;
    };
    (10..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

/// Normalises `raw` to E.164 (`+79991234567`). Russian numbers written with a leading 8 or 7,
/// or without a country code (10 digits), become +7; `00` and the Russian `8 10` international
/// prefixes become `+`; extensions (`доб.`, `ext`, `вн.`, `x`, `#`, `,`, `;`) are dropped.
pub fn normalize(raw: &str) -> Result<String, PhoneError> {
    let main = strip_extension(raw).trim_start();
    // Whatever comes before the first digit (brackets, spaces, `+`) decides whether the
    // number was written with an international prefix.
    let lead: String = main.chars().take_while(|c| !c.is_ascii_digit()).collect();
    let mut plus = lead.contains('+');
    let mut digits: String = main.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return Err(PhoneError::NoDigits);
    }
    if !plus && digits.starts_with("00") {
        digits.drain(..2);
        plus = true;
    } else if !plus && digits.starts_with("810") && digits.len() >= 13 {
        digits.drain(..3);
        plus = true;
    }
    let n = digits.len();
    let e164 = match (plus, n, digits.as_bytes().first().copied()) {
        (_, 0, _) => return Err(PhoneError::NoDigits),
        // 8 999 ... and 7 999 ... are both Russian trunk forms of +7.
        (false, 11, Some(b'8' | b'7')) => format!("7{}", &digits[1..]),
        // 999 123 45 67: a Russian number typed without the country code.
        (false, 10, Some(b'3'..=b'9')) => format!("7{digits}"),
        (_, 10..=15, Some(b'0')) => return Err(PhoneError::NoCountry),
        (_, 11..=15, _) | (true, 10, _) => digits,
        (_, n, _) => return Err(PhoneError::BadLength(n)),
    };
    Ok(format!("+{e164}"))
}

/// Markers that start an extension, lowercase.
const EXTENSION_MARKERS: [&str; 8] = ["доб", "ext", "вн", "#", ",", ";", " x", "*"];

/// Cuts an extension off: everything from the first marker on, matched without regard to case.
fn strip_extension(raw: &str) -> &str {
    for (i, _) in raw.char_indices() {
        let rest = &raw[i..];
        if EXTENSION_MARKERS.iter().any(|m| starts_with_ci(rest, m)) {
            return &raw[..i];
        }
    }
    raw
}

/// `s` starts with `lower` (a lowercase marker), comparing each character case-insensitively.
fn starts_with_ci(s: &str, lower: &str) -> bool {
    let mut chars = s.chars();
    lower.chars().all(|m| {
        chars
            .next()
            .is_some_and(|c| c == m || c.to_lowercase().eq(std::iter::once(m)))
    })
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
    fn edge_cases_that_used_to_break() {
        // "00" alone used to index past the end of the digits once the prefix was cut.
        assert_eq!(normalize("00"), Err(PhoneError::NoDigits));
        assert_eq!(normalize("+ 00"), Err(PhoneError::BadLength(2)));
        // A leading 0 is no country code; it used to come out as "+0...".
        assert_eq!(normalize("+0123456789012"), Err(PhoneError::NoCountry));
        assert_eq!(normalize("01234567890"), Err(PhoneError::NoCountry));
        // Letters whose lowercase is longer than themselves no longer shift the cut.
        assert_eq!(
            normalize("İİ 8 999 123 45 67 ДОБ 5").as_deref(),
            Ok("+79991234567")
        );
        // The Russian international prefix 8 10.
        assert_eq!(
            normalize("8 10 44 20 7946 0958").as_deref(),
            Ok("+442079460958")
        );
    }

    /// Cost of a normalisation, for the figures in the module doc. Run once in release:
    /// `cargo test --release --lib normalising_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn normalising_cost() {
        let shapes = [
            "8 (999) 123-45-67",
            "+7 999 123 45 67 доб. 12",
            "9991234567",
            "+44 20 7946 0958",
            "00375291234567",
            "нет",
        ];
        let n = 1_000_000;
        let start = std::time::Instant::now();
        let ok = (0..n)
            .filter(|i| normalize(std::hint::black_box(shapes[i % shapes.len()])).is_ok())
            .count();
        let took = start.elapsed();
        println!(
            "{n} numbers in {took:?}: {:.2} µs each ({ok} valid)",
            took.as_secs_f64() * 1e6 / n as f64
        );
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

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A Russian national number: ten digits, the first one a real area/mobile lead digit.
    fn national() -> impl Strategy<Value = String> {
        ("[3-9]", "[0-9]{9}").prop_map(|(a, b)| format!("{a}{b}"))
    }

    /// `n` (ten digits) written the way people write it.
    fn written(n: String) -> impl Strategy<Value = String> {
        let prefix = prop_oneof![
            Just(""),
            Just("8"),
            Just("8 "),
            Just("7"),
            Just("7 "),
            Just("+7"),
            Just("+7 "),
            Just(" +7-"),
            Just("(+7) "),
        ];
        let sep = prop_oneof![Just(""), Just(" "), Just("-"), Just("."), Just(" - ")];
        let ext = prop_oneof![
            Just(String::new()),
            "[0-9]{1,5}".prop_map(|d| format!(" доб. {d}")),
            "[0-9]{1,5}".prop_map(|d| format!(" Доб.{d}")),
            "[0-9]{1,5}".prop_map(|d| format!(" ext {d}")),
            "[0-9]{1,5}".prop_map(|d| format!(" EXT. {d}")),
            "[0-9]{1,5}".prop_map(|d| format!("#{d}")),
            "[0-9]{1,5}".prop_map(|d| format!(" x{d}")),
            "[0-9]{1,5}".prop_map(|d| format!(", вн. {d}")),
        ];
        (prefix, any::<bool>(), sep, ext).prop_map(move |(p, brackets, s, e)| {
            let (a, b, c, d) = (&n[..3], &n[3..6], &n[6..8], &n[8..]);
            let area = if brackets {
                format!("({a})")
            } else {
                a.to_string()
            };
            format!("{p}{area}{s}{b}{s}{c}{s}{d}{e}")
        })
    }

    fn country_code() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("1"),
            Just("44"),
            Just("49"),
            Just("86"),
            Just("375"),
            Just("380"),
            Just("998"),
            Just("971"),
        ]
    }

    proptest! {
        #[test]
        fn every_russian_shape_gives_the_same_e164(
            (n, raw) in national().prop_flat_map(|n| (Just(n.clone()), written(n)))
        ) {
            prop_assert_eq!(normalize(&raw), Ok(format!("+7{n}")), "{}", raw);
        }

        #[test]
        fn normalising_is_idempotent(raw in "\\PC{0,30}") {
            if let Ok(once) = normalize(&raw) {
                prop_assert!(is_e164(&once), "{raw:?} -> {once}");
                prop_assert_eq!(normalize(&once), Ok(once.clone()));
            }
        }

        #[test]
        fn written_numbers_normalise_idempotently(
            raw in national().prop_flat_map(written)
        ) {
            let once = normalize(&raw).unwrap();
            prop_assert_eq!(normalize(&once), Ok(once.clone()));
        }

        #[test]
        fn junk_never_panics_and_is_named(raw in any::<String>()) {
            match normalize(&raw) {
                Ok(p) => prop_assert!(is_e164(&p), "{raw:?} -> {p}"),
                Err(e) => prop_assert!(e.to_string().starts_with("not a phone number")),
            }
        }

        #[test]
        fn text_without_digits_is_not_a_phone(raw in "[^0-9]{0,40}") {
            prop_assert_eq!(normalize(&raw), Err(PhoneError::NoDigits));
        }

        #[test]
        fn international_numbers_keep_their_country_code(
            cc in country_code(),
            rest in "[1-9][0-9]{8,10}",
            intl in prop_oneof![Just("+"), Just("00"), Just("+ "), Just("00 ")],
            sep in prop_oneof![Just(" "), Just("-"), Just(""), Just(".")],
        ) {
            let digits = format!("{cc}{rest}");
            prop_assume!(digits.len() <= 15);
            let (a, b) = rest.split_at(3);
            let raw = format!("{intl}{cc}{sep}{a}{sep}{b}");
            prop_assert_eq!(normalize(&raw), Ok(format!("+{digits}")), "{}", raw);
        }
    }
}
