//! Phone normalisation never panics; what it returns is E.164 and normalises to itself.
#![no_main]

use dozor::domain::phone::{is_e164, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    match normalize(&raw) {
        Ok(p) => {
            assert!(is_e164(&p), "{raw:?} -> {p}");
            assert_eq!(normalize(&p).as_deref(), Ok(p.as_str()), "{raw:?}");
        }
        Err(e) => assert!(e.to_string().starts_with("not a phone number")),
    }
});
