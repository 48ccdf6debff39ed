//! Any bytes as a Bitrix24 REST answer: the row mappers never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dozor::crm::bitrix24::fuzzing::parse_answer(data);
});
