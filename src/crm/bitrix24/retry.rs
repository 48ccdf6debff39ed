//! When a failed Bitrix24 call is tried again: rate limits are waited out, other transient
//! failures get a few attempts with backoff. Shared by the transport, the token refresh, the
//! change probe and the paging, which all retry the same way.

use std::time::Duration;

use crate::http::{self, Error, ErrorKind, backoff};

/// Retries of transient failures before giving up (rate limits follow [`http::Throttle`]).
pub(super) const MAX_RETRIES: u32 = 5;

/// How long to wait before retrying after `e`; `None` when it must not be retried. Rate
/// limits are waited out by `refusals` however many there are; other transient failures get
/// [`MAX_RETRIES`] attempts with backoff.
pub(super) fn retry_wait(
    e: &Error,
    attempt: &mut u32,
    refusals: &mut http::Refusals,
) -> Option<Duration> {
    if e.kind == ErrorKind::RateLimited {
        return refusals.next(e.retry_after);
    }
    if !e.is_retryable() || *attempt >= MAX_RETRIES {
        return None;
    }
    let wait = e.retry_after.unwrap_or_else(|| backoff(*attempt));
    *attempt += 1;
    Some(wait)
}
