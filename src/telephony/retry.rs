//! When a failed telephony request is tried again. CoMagic and Calltouch retry alike: transient
//! failures and unreadable answers (a proxy's error page where JSON was due), a few attempts,
//! waiting what the API asked for or a backoff, never longer than the client's longest wait.

use std::time::Duration;

use crate::http::{self, Error, ErrorKind};

/// Attempts at one request before its error is returned.
pub(super) const MAX_ATTEMPTS: u32 = 5;

/// How long to wait before attempt `attempt + 1` after `e`; `None` when `e` is returned as is.
pub(super) fn retry_wait(e: &Error, attempt: u32, max_wait: Duration) -> Option<Duration> {
    ((e.is_retryable() || e.kind == ErrorKind::Decode) && attempt + 1 < MAX_ATTEMPTS).then(|| {
        e.retry_after
            .unwrap_or_else(|| http::backoff(attempt))
            .min(max_wait)
    })
}
