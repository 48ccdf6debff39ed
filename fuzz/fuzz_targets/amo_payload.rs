//! Any bytes as an amoCRM API v4 answer: the mappers never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dozor::crm::amocrm::fuzzing::parse_answer(data);
});
