//! Waiting for something a test cannot be told about: a condition, a server's readiness.

use std::time::{Duration, Instant};

/// Waits until `ok` holds, polling every 50 ms; panics naming `what` after `limit`. Returns
/// how long it took.
pub async fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not reached in {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Waits (at most 60 s) until `GET {base}/readyz` answers with success.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never became ready");
}
