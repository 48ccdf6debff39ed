use super::*;
use chrono::Utc;

use crate::store::TokenSet;

struct NoTokens;

#[async_trait]
impl TokenStore for NoTokens {
    async fn load_token(&self, _: &str, _: &str) -> crate::store::Result<Option<TokenSet>> {
        Ok(None)
    }
    async fn save_token(&self, _: &str, _: &str, _: &TokenSet) -> crate::store::Result<()> {
        Ok(())
    }
}

fn cfg(budget: f64) -> Bitrix24Config {
    Bitrix24Config {
        operating_budget_secs: budget,
        ..Bitrix24Config::webhook("https://x.bitrix24.ru/rest/1/s3cr3t/")
    }
}

#[tokio::test]
async fn pauses_a_method_at_its_operating_budget() {
    let b = Bitrix24::new("t", &cfg(10.0), Arc::new(NoTokens))
        .await
        .unwrap();
    assert_eq!(b.account(), "x.bitrix24.ru");
    let reset = Utc::now().timestamp() + 2;
    b.note_time(
        "crm.deal.list",
        Some(&json!({"operating": 9.8, "operating_reset_at": reset})),
    );
    b.note_time(
        "crm.lead.list",
        Some(&json!({"operating": 1.0, "operating_reset_at": reset.to_string()})),
    );
    let t = std::time::Instant::now();
    b.respect_budget("crm.lead.list").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "under budget: no wait"
    );
    b.respect_budget("crm.deal.list").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "at budget: waits for the reset"
    );
    // After the reset the method runs freely again.
    let t = std::time::Instant::now();
    b.respect_budget("crm.deal.list").await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn a_stop_ends_the_operating_budget_wait_at_once() {
    let stop = CancellationToken::new();
    let b = Bitrix24::new("t", &cfg(10.0), Arc::new(NoTokens))
        .await
        .unwrap()
        .with_stop(stop.clone());
    let reset = Utc::now().timestamp() + 30;
    b.note_time(
        "crm.deal.list",
        Some(&json!({"operating": 9.8, "operating_reset_at": reset})),
    );
    let t = std::time::Instant::now();
    let waiting = b.respect_budget("crm.deal.list");
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
    };
    let (r, ()) = tokio::join!(waiting, cancel);
    let e = r.expect_err("a stop ends the wait with an error");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(e.kind, ErrorKind::Transient, "the action stays at intent");
    assert!(e.to_string().contains("dozor is stopping"), "{e}");
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
}

/// The system errors of bitrix24/b24restdocs `_includes/system-errors.md` (HTTP status, code,
/// text); PAYMENT_REQUIRED (an unpaid marketplace application) is in our fact sheet but on
/// no page of that repository, so its text here is a placeholder. A write refused inside a
/// `batch` carries no HTTP status of its own (`settings/how-to-call-rest-api/batch.md`:
/// `result_error` holds only `error` and `error_description`, the description often
/// empty); it must be classified as the same refusal on a direct call.
#[tokio::test]
async fn a_refusal_inside_a_batch_is_classified_as_on_a_direct_call() {
    let b = Bitrix24::new("t", &cfg(480.0), Arc::new(NoTokens))
        .await
        .unwrap();
    let documented = [
        (
            401,
            "insufficient_scope",
            "The request requires higher privileges than provided by the webhook token",
        ),
        (401, "INVALID_CREDENTIALS", "Invalid request credentials"),
        (
            401,
            "user_access_error",
            "The user does not have access to the application",
        ),
        (402, "PAYMENT_REQUIRED", ""),
        (
            401,
            "expired_token",
            "The access token provided has expired",
        ),
        (401, "NO_AUTH_FOUND", "Wrong authorization data"),
        (
            429,
            "OPERATION_TIME_LIMIT",
            "Method is blocked due to operation time limit",
        ),
        (503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
        (500, "INTERNAL_SERVER_ERROR", "Internal server error"),
        (400, "", "Access denied."),
    ];
    for (status, code, text) in documented {
        let direct = b.classify(
            "tasks.task.add",
            "https://x.bitrix24.ru/rest/1/***/tasks.task.add",
            Some(status),
            &json!({"error": code, "error_description": text}),
        );
        for desc in [text, ""] {
            let inside = b.command_error(
                "tasks.task.add",
                &json!({"error": code, "error_description": desc}),
            );
            assert_eq!(inside.kind, direct.kind, "{code} inside a batch vs direct");
            assert_eq!(inside.code, direct.code, "{code}");
            assert!(!inside.to_string().contains("s3cr3t"), "{inside}");
        }
    }
    for code in [
        "insufficient_scope",
        "INVALID_CREDENTIALS",
        "user_access_error",
        "PAYMENT_REQUIRED",
    ] {
        let e = b.command_error(
            "crm.deal.update",
            &json!({"error": code, "error_description": ""}),
        );
        assert_eq!(
            e.kind,
            ErrorKind::Auth,
            "{code}: the credentials need fixing, not a retry"
        );
    }
}

#[test]
fn reset_at_parses_leniently() {
    assert_eq!(reset_ts(Some(&json!(1724917459))), Some(1724917459));
    assert_eq!(reset_ts(Some(&json!("1724917459"))), Some(1724917459));
    assert!(reset_ts(Some(&json!("2024-08-29T10:44:19+03:00"))).is_some());
    assert_eq!(reset_ts(Some(&json!([]))), None);
}
