use super::*;

#[test]
fn spent_minute_budget_pauses_until_reset() {
    let c = Comagic::new(
        &ComagicConfig {
            base_url: "http://127.0.0.1:1/v2.0".into(),
            access_token: Some(Secret::new("t")),
            access_token_file: None,
            timezone: None,
            employees: Default::default(),
        },
        chrono_tz::Europe::Moscow,
    );
    c.note_limits(&json!({"minute_remaining": 5, "minute_reset": 30}));
    assert!(c.pause_until.lock().unwrap().is_none());
    c.note_limits(&json!({"minute_remaining": 0, "minute_reset": 30}));
    let until = c.pause_until.lock().unwrap().expect("paused");
    let d = until - Instant::now();
    assert!(
        d > Duration::from_secs(28) && d <= Duration::from_secs(30),
        "{d:?}"
    );
}

#[test]
fn rows_with_odd_fields_are_rejected_with_their_id() {
    let c = Comagic::new(
        &ComagicConfig {
            base_url: "https://dataapi.uiscom.ru/v2.0".into(),
            access_token: None,
            access_token_file: None,
            timezone: None,
            employees: Default::default(),
        },
        chrono_tz::Europe::Moscow,
    );
    let ok = json!({"id": 5, "start_time": "2026-01-01 03:00:00", "direction": "out",
                    "is_lost": "false", "talk_duration": "12", "contact_phone_number": 79991234567u64,
                    "employees": [{"employee_id": 1, "employee_full_name": "A", "is_answered": false, "is_talked": false},
                                  {"employee_id": 2, "employee_full_name": "B", "is_answered": true, "is_talked": true}],
                    "call_records": ["abc"], "communication_id": 77});
    let call = c.map_call(&ok).unwrap();
    assert_eq!(call.started_at.to_rfc3339(), "2026-01-01T00:00:00+00:00");
    assert_eq!(call.talk_s, 12);
    assert!(call.answered);
    assert_eq!(call.client_phone, "79991234567");
    assert_eq!(call.employee_id.as_deref(), Some("2"));
    assert_eq!(
        call.recording_url.as_deref(),
        Some("https://app.uiscom.ru/system/media/talk/77/abc/")
    );
    let bad = json!({"id": 6, "start_time": "2026-01-01", "direction": "in", "is_lost": false});
    assert_eq!(c.map_call(&bad).unwrap_err().0, "6");
}
