//! How a failed Bot API call is classified into an [`http::Error`]: teloxide's request errors,
//! the API's own descriptions, the HTTP status where the description says nothing; every
//! message redacted of the bot token.

#![allow(clippy::result_large_err)]

use std::time::Duration;

use teloxide::ApiError;
use teloxide::RequestError;

use crate::http::{Error, ErrorKind, redact_url};

use super::*;

impl Telegram {
    pub(super) fn err(&self, kind: ErrorKind, method: &str, message: impl Into<String>) -> Error {
        let msg: String = message.into();
        Error::new(
            kind,
            SYSTEM,
            method,
            redact_url(&self.url(method)),
            self.redact(&msg),
        )
    }

    /// Maps a teloxide error into a typed error without the token.
    pub(super) fn map_err(&self, method: &str, e: RequestError) -> Error {
        match e {
            RequestError::RetryAfter(s) => {
                let secs = u64::from(s.seconds()).max(1);
                self.err(
                    ErrorKind::RateLimited,
                    method,
                    format!("Too Many Requests: retry after {secs}"),
                )
                .status(429)
                .code("429")
                .retry_after(Duration::from_secs(secs))
            }
            RequestError::MigrateToChatId(to) => self
                .err(
                    ErrorKind::Permanent,
                    method,
                    format!(
                        "Bad Request: group chat was upgraded to a supergroup chat; chat migrated to {}",
                        to.0
                    ),
                )
                .status(400)
                .code("400"),
            RequestError::Api(api) => self.api_err(method, &api),
            RequestError::Network(e) => {
                let mut out = Error::transport(SYSTEM, method, redact_url(&self.url(method)), &e);
                out.message = self.redact(&out.message);
                if let Some(s) = e.status() {
                    out = out.status(s.as_u16());
                }
                out
            }
            // Bodies are decoded by `decode`, never by teloxide: its JSON and I/O errors do not
            // reach here.
            other => self.err(ErrorKind::Transient, method, self.redact(&other.to_string())),
        }
    }

    pub(super) fn api_err(&self, method: &str, api: &ApiError) -> Error {
        let description = match api {
            ApiError::Unknown(s) => s.clone(),
            other => other.to_string(),
        };
        let (kind, status) = match api {
            ApiError::InvalidToken => {
                return self
                    .err(ErrorKind::Auth, method, "bot token refused (Unauthorized)")
                    .status(401)
                    .code("401");
            }
            _ if description.starts_with("Bad Request") => (ErrorKind::Permanent, Some(400)),
            _ if description.starts_with("Forbidden")
                || description.starts_with("Unauthorized:") =>
            {
                (ErrorKind::Permanent, Some(403))
            }
            _ if description.starts_with("Conflict") => (ErrorKind::Permanent, Some(409)),
            _ if description.starts_with("Not Found") => (ErrorKind::Permanent, Some(404)),
            _ if description.starts_with("Too Many Requests") => {
                (ErrorKind::RateLimited, Some(429))
            }
            _ if description.contains("Gateway") || description.contains("Unavailable") => {
                (ErrorKind::Transient, Some(502))
            }
            // Anything else is a server-side failure ("Internal Server Error", …).
            ApiError::Unknown(_) => (ErrorKind::Transient, None),
            _ => (ErrorKind::Permanent, None),
        };
        let mut e = self.err(kind, method, description.trim().to_string());
        if let Some(s) = status {
            e = e.status(s).code(s.to_string());
        }
        if kind == ErrorKind::RateLimited {
            e = e.retry_after(Duration::from_secs(1));
        }
        e
    }
}
