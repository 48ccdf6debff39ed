//! Any bytes as a Calltouch calls-diary answer: mapping never panics, and every call that maps
//! has an id.
#![no_main]

use std::sync::LazyLock;

use dozor::telephony::calltouch::{Calltouch, fuzzing};
use libfuzzer_sys::fuzz_target;

static CLIENT: LazyLock<Calltouch> = LazyLock::new(fuzzing::client);

fuzz_target!(|data: &[u8]| {
    for call in fuzzing::calls_diary(&CLIENT, data) {
        assert!(!call.id.is_empty());
        // Durations and dates out of their sane range are refused, never mapped.
        assert_eq!(call.insane_field(), None);
    }
});
