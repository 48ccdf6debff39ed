use super::comagic::*;
use super::*;

#[test]
fn secrets_compare_only_when_equal() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abd", b"abc"));
    assert!(!constant_time_eq(b"ab", b"abc"));
    assert!(!constant_time_eq(b"abcd", b"abc"));
    assert!(!constant_time_eq(b"", b""));
}

#[test]
fn events_are_classified() {
    assert_eq!(classify("lost_call"), Some(CallEvent::Lost));
    assert_eq!(classify("call_finished"), Some(CallEvent::End));
    assert_eq!(classify("callended"), Some(CallEvent::End));
    assert_eq!(classify("incoming_call"), Some(CallEvent::Start));
    assert_eq!(classify("call_answered"), Some(CallEvent::Answered));
    assert_eq!(classify("sms"), None);
}

#[test]
fn digest_separates_parts() {
    assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
    assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
    assert_eq!(digest(&["x"]).len(), 32);
}

#[test]
fn amo_subdomain_only_for_amo_hosts() {
    assert_eq!(
        amo_subdomain("https://acme.amocrm.ru"),
        Some("acme".to_string())
    );
    assert_eq!(amo_subdomain("http://127.0.0.1:8080/amo"), None);
}

/// What a refused body may be told: each names the field or the shape that is wrong.
const CLEAR: [&str; 8] = [
    "missing field `",
    "field `",
    "no entity in the body",
    "account[subdomain] is not this tenant's account",
    "body must be a JSON object",
    "body is not valid JSON",
    "cannot read the call: ",
    "not a Telegram update: ",
];

fn assert_clear(parser: &str, input: &[u8], r: &Result<String, String>) {
    if let Err(m) = r {
        assert!(
            CLEAR.iter().any(|p| m.starts_with(p)),
            "{parser}: unclear error {m:?} for {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// Every receiver's parser over one input; a panic fails the test by itself.
fn all_parsers(c: &Comagic, input: &[u8]) -> [Result<String, String>; 5] {
    let r = [
        fuzzing::bitrix24(input),
        fuzzing::amocrm(input),
        fuzzing::comagic(c, input, None),
        fuzzing::comagic(c, b"", std::str::from_utf8(input).ok()),
        fuzzing::telegram(input),
    ];
    for (name, r) in ["bitrix24", "amocrm", "comagic", "comagic query", "telegram"]
        .iter()
        .zip(&r)
    {
        assert_clear(name, input, r);
    }
    r
}

/// Seeded garbage: raw bytes, and bodies assembled from the pieces real pushes are made of
/// (bracketed keys, escapes, JSON punctuation, digits, Cyrillic), so the parsers get past
/// their first check. None may panic, and every refusal must say what is wrong.
#[test]
fn webhook_parsers_survive_garbage_with_clear_errors() {
    use rand::{Rng, SeedableRng};
    const PIECES: [&str; 40] = [
        "event=",
        "ONCRMDEALUPDATE",
        "data[FIELDS][ID]=",
        "data[FIELDS_AFTER][ID]=",
        "auth[application_token]=",
        "auth[domain]=",
        "ts=",
        "leads[add][0][id]=",
        "contacts[update][1][id]=",
        "task[delete][0][id]=",
        "[last_modified]=",
        "account[subdomain]=",
        "acme",
        "account[id]=",
        "&",
        "=",
        "[",
        "]",
        "%",
        "%ZZ",
        "%D0%9F",
        "+",
        "{",
        "}",
        "\"",
        ":",
        ",",
        "[]",
        "null",
        "true",
        "-1",
        "12345",
        "1e400",
        "999999999999999999999999",
        "\"notification_mnemonic\":\"lost_call\"",
        "\"call_session_id\":",
        "\"update_id\":",
        "\"message\":{",
        "звонок",
        "\u{0}",
    ];
    let c = fuzzing::comagic_client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20_260_101);
    let mut refused = 0;
    for i in 0..600 {
        let input: Vec<u8> = if i % 3 == 0 {
            let n = rng.gen_range(0..200);
            (0..n).map(|_| rng.r#gen::<u8>()).collect()
        } else {
            let n = rng.gen_range(0..24);
            (0..n)
                .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
                .collect::<String>()
                .into_bytes()
        };
        refused += all_parsers(&c, &input)
            .iter()
            .filter(|r| r.is_err())
            .count();
    }
    assert!(refused > 2000, "garbage is refused: {refused}");
}

fn err(r: Result<String, String>) -> String {
    r.expect_err("refused")
}

/// Hand-written Bitrix24 bodies that are almost right: each is refused with the field to fix.
#[test]
fn malformed_bitrix24_bodies_name_what_is_wrong() {
    assert_eq!(
        err(fuzzing::bitrix24(b"data[FIELDS][ID]=1&ts=1")),
        "missing field `event`"
    );
    assert_eq!(
        err(fuzzing::bitrix24(
            b"event=ONCRMDEALADD&data[FIELDS][ID]=1;DROP&ts=1"
        )),
        "field `data[FIELDS][ID]` must be a number"
    );
    assert_eq!(
        err(fuzzing::bitrix24(
            b"event=ONCRMDEALADD&data%5BFIELDS%5D%5BID%5D=7"
        )),
        "missing field `ts`"
    );
    assert_eq!(
        fuzzing::bitrix24(b"event=onCrmDealAdd&data%5BFIELDS%5D%5BID%5D=7&ts=1700000000"),
        Ok("ONCRMDEALADD 7".to_string())
    );
}

/// Hand-written amoCRM bodies that are almost right: each is refused with the field to fix.
#[test]
fn malformed_amocrm_bodies_name_what_is_wrong() {
    assert_eq!(
        err(fuzzing::amocrm(b"unsorted[add][0][uid]=5;DROP")),
        "field `unsorted[add][0][uid]` must be an unsorted item's uid (1 to 128 letters, digits, `-`, `_`, `:` or `.`)"
    );
    assert_eq!(
        err(fuzzing::amocrm(
            b"unsorted[delete][0][uid]=ab12&unsorted[delete][0][action]=Accept!"
        )),
        "field `unsorted[delete][0][action]` must name what ended the unsorted item (accept, decline, link)"
    );
    assert_eq!(
        err(fuzzing::amocrm(
            b"account[subdomain]=other&leads[add][0][id]=5"
        )),
        "account[subdomain] is not this tenant's account"
    );
    assert_eq!(
        err(fuzzing::amocrm(
            b"account[subdomain]=acme&leads[add][0][id]=x"
        )),
        "field `leads[add][0][id]` must be a number"
    );
    assert!(
        err(fuzzing::amocrm(
            b"account[subdomain]=acme&leads[add][0][name]=x"
        ))
        .starts_with("no entity in the body")
    );
}

/// Hand-written CoMagic and Telegram bodies that are almost right: each is refused with the
/// field to fix.
#[test]
fn malformed_comagic_and_telegram_bodies_name_what_is_wrong() {
    let c = fuzzing::comagic_client();
    assert!(
        err(fuzzing::comagic(&c, b"{\"call_session_id\": 1", None))
            .starts_with("body is not valid JSON")
    );
    assert_eq!(
        err(fuzzing::comagic(
            &c,
            b"{\"notification_mnemonic\": \"sms\"}",
            None
        )),
        "field `notification_mnemonic` must name a call start, answer, end or lost call"
    );
    assert_eq!(
        err(fuzzing::comagic(
            &c,
            br#"{"notification_mnemonic":"lost_call","call_session_id":"12a"}"#,
            None
        )),
        "field `call_session_id` must be a number"
    );
    assert_eq!(
        err(fuzzing::comagic(
            &c,
            b"",
            Some(
                "notification_mnemonic=call_end&call_session_id=9&direction=in&start_time=2026-01-01%2010:00:00&contact_phone_number=79001234567&talk_time_duration=abc"
            )
        )),
        "field `talk_time_duration` must be a number of seconds from 0 to 86400"
    );
    assert_eq!(
        err(fuzzing::telegram(br#"{"update_id": "1"}"#)),
        "field `update_id` must be an integer"
    );
    assert_eq!(err(fuzzing::telegram(b"{}")), "missing field `update_id`");
    assert!(err(fuzzing::telegram(b"\xff\xfe")).starts_with("body is not valid JSON"));
    assert!(
        err(fuzzing::telegram(br#"{"update_id": 1, "message": 5}"#))
            .starts_with("not a Telegram update: ")
    );
}
