//! Any bytes as a webhook body of each source (Bitrix24 and amoCRM forms, a CoMagic
//! notification as JSON, form or query string, a Telegram update): parsing never panics, an
//! accepted Bitrix24 event names a numeric entity, and every refusal says what is wrong.
#![no_main]

use std::sync::LazyLock;

use dozor::service::server::webhooks::fuzzing;
use dozor::telephony::comagic::Comagic;
use libfuzzer_sys::fuzz_target;

static CLIENT: LazyLock<Comagic> = LazyLock::new(fuzzing::comagic_client);

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = fuzzing::bitrix24(data) {
        let entity = d.rsplit(' ').next().unwrap_or_default();
        assert!(entity.bytes().all(|b| b.is_ascii_digit()), "{d}");
    }
    let results = [
        fuzzing::bitrix24(data),
        fuzzing::amocrm(data),
        fuzzing::comagic(&CLIENT, data, None),
        fuzzing::comagic(&CLIENT, b"", std::str::from_utf8(data).ok()),
        fuzzing::telegram(data),
    ];
    for r in results {
        if let Err(m) = r {
            assert!(!m.is_empty());
        }
    }
});
