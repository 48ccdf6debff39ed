//! Any bytes as a CoMagic `get.calls_report` answer: mapping never panics, and every call that
//! maps has an id and sane durations and date.
#![no_main]

use std::sync::LazyLock;

use dozor::telephony::comagic::{Comagic, fuzzing};
use libfuzzer_sys::fuzz_target;

static CLIENT: LazyLock<Comagic> = LazyLock::new(fuzzing::client);

fuzz_target!(|data: &[u8]| {
    for call in fuzzing::calls_report(&CLIENT, data) {
        assert!(!call.id.is_empty());
        // Durations and dates out of their sane range are refused, never mapped.
        assert_eq!(call.insane_field(), None);
    }
});
