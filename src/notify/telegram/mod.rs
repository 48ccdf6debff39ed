//! Telegram Bot API client.
//!
//! Requests go out on dozor's own reqwest client (rustls, no redirects, a timeout longer than
//! the long-poll wait) to `telegram.api_url` (the simulator in tests). teloxide gives the typed
//! payloads (HTML parse mode, forum topics, link previews) and the Bot API's error catalogue;
//! the answer is read here, not by teloxide, because teloxide reads a body whole whatever its
//! size: an endless answer would take the daemon's memory with it. This module adds what a
//! daemon needs around the payloads:
//!
//! - every answer is read through `http::read_body` and refused past `http::MAX_BODY`, like
//!   the CRM's and the telephony's, with an error naming the method and the size;
//! - long HTML messages are split on line boundaries into parts of at most 4096 visible
//!   characters, closing and reopening the tags that are open across a cut (`split_message`);
//!   the ledger sends the parts one by one (`Telegram::send_part`) and records its progress so
//!   that a part already delivered is never sent again;
//! - a 429 waits `parameters.retry_after` and resends the same request; 5xx and transport
//!   failures are retried with backoff, a bounded number of times;
//! - messages to one chat are spaced at least a second apart, and a group gets at most 20 a
//!   minute;
//! - errors are [`http::Error`]s. teloxide's own errors print the request URL, which carries
//!   the bot token: every message goes through `Telegram::redact` and URLs through
//!   `redact_url`.
//!
//! A failed call is classified by its description's prefix ("Bad Request", "Forbidden",
//! "Unauthorized", …, as teloxide's [`ApiError`] reads it), the HTTP status filling in where the
//! description says nothing; an unrecognised description is a server-side failure and is
//! retried.

// The shared `http::Error` is what every caller matches on; boxing it for the few synchronous
// helpers would only add noise.
#![allow(clippy::result_large_err)]
mod errors;
mod pacing;
mod split;
#[cfg(test)]
mod tests;

pub use split::escape_html;
pub(crate) use split::split_message;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use teloxide::ApiError;
use teloxide::RequestError;
use teloxide::payloads::{self as tp, SendMessageSetters};
use teloxide::types::{
    BotCommand, ChatId, LinkPreviewOptions, MessageId, ParseMode, ResponseParameters, ThreadId,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Secret, TelegramConfig};
use crate::http::{self, Error, ErrorKind, redact_url};

const SYSTEM: &str = "telegram";
/// Visible characters per message.
pub(crate) const MESSAGE_LIMIT: usize = 4096;
/// Visible characters per caption.
pub(crate) const CAPTION_LIMIT: usize = 1024;
const MAX_ATTEMPTS: u32 = 5;
/// After a request failed for good on a transient error, Telegram counts as down for this long:
/// later sends fail at once (the ledger keeps them for a later cycle) instead of each waiting
/// out its own retries and holding the cycle up for minutes.
const DOWN_FOR: Duration = Duration::from_secs(60);
/// Messages one group may get per [`GROUP_WINDOW`].
const GROUP_PER_WINDOW: usize = 20;
const GROUP_WINDOW: Duration = Duration::from_secs(60);

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// A Telegram user or bot: the bot itself (`getMe`) or the sender of a message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub(crate) first_name: String,
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Chat {
    pub id: i64,
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
}

/// An incoming message (only what commands need).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    pub(crate) message_id: i64,
    pub chat: Chat,
    pub from: Option<User>,
    #[serde(default)]
    pub(crate) date: i64,
    pub text: Option<String>,
    pub message_thread_id: Option<i64>,
}

/// What a send answers: the message sent (only its id is kept).
#[derive(Debug, Deserialize)]
struct SentMessage {
    message_id: i64,
}

/// One update from `getUpdates`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Update {
    pub update_id: i64,
    pub message: Option<Message>,
}

/// A Telegram bot.
pub struct Telegram {
    client: reqwest::Client,
    api_url: String,
    token: Secret,
    /// The latest send slots booked per chat (up to 20).
    last_send: Mutex<HashMap<i64, VecDeque<Instant>>>,
    chat_interval: Duration,
    max_wait: Duration,
    max_attempts: u32,
    /// Set when Telegram last failed for good (see [`DOWN_FOR`]).
    down_until: Mutex<Option<Instant>>,
    /// Largest answer read (see [`http::read_body`]).
    max_body: usize,
    /// Cancelled when dozor stops: pacing and retry waits end, the message is not sent.
    stop: CancellationToken,
}

/// How a request's parameters travel: JSON, or multipart for uploads.
enum Params {
    Json(Vec<u8>),
    Form(reqwest::multipart::Form),
}

/// The Bot API's answer envelope: `result` when `ok`, else `description` and `parameters`.
#[derive(Deserialize)]
struct Envelope<T> {
    ok: bool,
    result: Option<T>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

impl Telegram {
    pub fn new(cfg: &TelegramConfig) -> Self {
        let api_url = cfg.api_url.trim_end_matches('/').to_string();
        let token = cfg.bot_token.clone().unwrap_or_default();
        // Validated with the config; a bad URL here fails every call with a clear error.
        if let Err(e) = url::Url::parse(&api_url) {
            tracing::error!(system = SYSTEM, api_url = %redact_url(&api_url), error = %e, "telegram.api_url is not a URL");
        }
        Telegram {
            client: http::client(Duration::from_secs(75)),
            api_url,
            token,
            last_send: Mutex::new(HashMap::new()),
            chat_interval: Duration::from_secs(1),
            max_wait: Duration::from_secs(120),
            max_attempts: MAX_ATTEMPTS,
            down_until: Mutex::new(None),
            max_body: http::MAX_BODY,
            stop: CancellationToken::new(),
        }
    }

    /// Ends every wait of this client early once `stop` is cancelled.
    pub(crate) fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Waits until `t` unless dozor stops first (then `method` was not sent).
    async fn wait_until(&self, t: Instant, method: &str) -> Result<()> {
        http::pause_until(t, &self.stop)
            .await
            .map_err(|s| s.error(SYSTEM, method, redact_url(&self.url(method))))
    }

    /// The API host, for tables and logs (the token is never part of it).
    pub(crate) fn account(&self) -> String {
        url::Url::parse(&self.api_url)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}")))
            })
            .unwrap_or_else(|| self.api_url.clone())
    }

    /// Changes the minimum spacing of messages to one chat (default 1 s).
    pub fn with_chat_interval(mut self, d: Duration) -> Self {
        self.chat_interval = d;
        self
    }

    /// Changes how many times one request is tried before its error is returned (default 5).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    fn url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.api_url, self.token.expose())
    }

    /// Removes the bot token from `s`.
    pub(crate) fn redact(&self, s: &str) -> String {
        let token = self.token.expose();
        if token.is_empty() {
            s.to_string()
        } else {
            s.replace(token, "***")
        }
    }

    /// Sends one Bot API request and reads its answer, at most `max_body` bytes of it.
    async fn request<T: DeserializeOwned>(&self, method: &str, params: Params) -> Result<T> {
        let url = self.url(method);
        let req = self.client.post(&url);
        let req = match params {
            Params::Json(body) => req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
            Params::Form(form) => req.multipart(form),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| self.map_err(method, RequestError::Network(std::sync::Arc::new(e))))?;
        let status = resp.status().as_u16();
        let body = http::read_body(resp, self.max_body, SYSTEM, method, &redact_url(&url))
            .await
            .map_err(|mut e| {
                e.message = self.redact(&e.message);
                e
            })?;
        self.decode(method, status, &body)
    }

    /// A JSON payload's body.
    fn json(&self, method: &str, payload: &impl serde::Serialize) -> Result<Vec<u8>> {
        serde_json::to_vec(payload).map_err(|e| {
            self.err(
                ErrorKind::Permanent,
                method,
                format!("cannot encode the request: {e}"),
            )
        })
    }

    /// Reads the Bot API envelope of an answer with HTTP `status`.
    fn decode<T: DeserializeOwned>(&self, method: &str, status: u16, body: &[u8]) -> Result<T> {
        let with_status = |e: Error| {
            if e.status.is_none() && status >= 400 {
                e.status(status)
            } else {
                e
            }
        };
        let env: Envelope<T> = match serde_json::from_slice(body) {
            Ok(env) => env,
            Err(e) => {
                let raw = String::from_utf8_lossy(&body[..body.len().min(512)]);
                // A proxy's HTML error page, a cut-off body or a 5xx without JSON is not an
                // answer from the Bot API: worth another try.
                let kind = if raw.trim_start().starts_with('<') || status >= 500 {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Decode
                };
                let e = self.err(
                    kind,
                    method,
                    format!("response is not a valid Bot API envelope: {e}"),
                );
                return Err(with_status(e));
            }
        };
        if env.ok {
            return env.result.ok_or_else(|| {
                self.err(ErrorKind::Decode, method, "answer is ok but has no result")
            });
        }
        let e = match env.parameters {
            Some(ResponseParameters::RetryAfter(s)) => RequestError::RetryAfter(s),
            Some(ResponseParameters::MigrateToChatId(to)) => RequestError::MigrateToChatId(to),
            None => {
                let description = env.description.unwrap_or_default();
                let api = serde_json::from_value(serde_json::Value::String(description.clone()))
                    .unwrap_or(ApiError::Unknown(description));
                RequestError::Api(api)
            }
        };
        Err(with_status(self.map_err(method, e)))
    }

    /// Runs one request (`send` is called again for each retry): 429 waits `retry_after`, 5xx
    /// and transport failures back off, both a bounded number of times.
    async fn call<T, F, Fut>(&self, method: &str, send: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let down = *self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = down
            && Instant::now() < until
        {
            let left = until.saturating_duration_since(Instant::now());
            return Err(self
                .err(
                    ErrorKind::Transient,
                    method,
                    format!(
                        "Telegram failed moments ago; not trying again for {} s",
                        left.as_secs()
                    ),
                )
                .code(http::NOT_SENT)
                .retry_after(left));
        }
        let mut attempt = 0;
        loop {
            let result = send().await;
            crate::telemetry::record_request(
                SYSTEM,
                method,
                match &result {
                    Ok(_) => Some(200),
                    Err(e) => e.status,
                },
            );
            match result {
                Ok(v) => {
                    *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    return Ok(v);
                }
                Err(e) if e.is_retryable() && attempt + 1 < self.max_attempts => {
                    let wait = e
                        .retry_after
                        .unwrap_or_else(|| http::backoff(attempt))
                        .min(self.max_wait);
                    tracing::warn!(system = SYSTEM, method, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
                    self.wait_until(Instant::now() + wait, method).await?;
                    attempt += 1;
                }
                Err(e) => {
                    if e.is_retryable() {
                        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Instant::now() + DOWN_FOR);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Who the bot is; also checks the token.
    pub async fn get_me(&self) -> Result<User> {
        self.call("getMe", || {
            self.request("getMe", Params::Json(b"{}".to_vec()))
        })
        .await
    }

    /// The parts `send_message` sends for `html`, in order.
    pub fn parts(html: &str) -> Vec<String> {
        split_message(html, MESSAGE_LIMIT)
    }

    /// Sends an HTML message, split into parts of at most 4096 visible characters. Returns the
    /// message id of the first part.
    pub async fn send_message(&self, chat_id: i64, thread: Option<i64>, html: &str) -> Result<i64> {
        let parts = Self::parts(html);
        if parts.is_empty() {
            return Err(self.err(ErrorKind::Permanent, "sendMessage", "message text is empty"));
        }
        let mut first = None;
        for part in &parts {
            let id = self.send_part(chat_id, thread, part).await?;
            first.get_or_insert(id);
        }
        Ok(first.unwrap_or_default())
    }

    /// Sends one part (at most 4096 visible characters, see [`Self::parts`]) as one message.
    pub(crate) async fn send_part(
        &self,
        chat_id: i64,
        thread: Option<i64>,
        html: &str,
    ) -> Result<i64> {
        if html.trim().is_empty() {
            return Err(self.err(ErrorKind::Permanent, "sendMessage", "message text is empty"));
        }
        let thread =
            Self::thread(thread).map_err(|m| self.err(ErrorKind::Permanent, "sendMessage", m))?;
        self.pace(chat_id, "sendMessage").await?;
        let preview = LinkPreviewOptions {
            is_disabled: true,
            url: None,
            prefer_small_media: false,
            prefer_large_media: false,
            show_above_text: false,
        };
        let mut req = tp::SendMessage::new(ChatId(chat_id), html)
            .parse_mode(ParseMode::Html)
            .link_preview_options(preview);
        if let Some(t) = thread {
            req = req.message_thread_id(t);
        }
        let body = self.json("sendMessage", &req)?;
        let msg: SentMessage = self
            .call("sendMessage", || {
                self.request("sendMessage", Params::Json(body.clone()))
            })
            .await?;
        Ok(msg.message_id)
    }

    /// A forum topic id as teloxide types it (message ids are 32-bit); `Err` when out of range.
    fn thread(thread: Option<i64>) -> std::result::Result<Option<ThreadId>, String> {
        match thread.map(i32::try_from) {
            None => Ok(None),
            Some(Ok(t)) => Ok(Some(ThreadId(MessageId(t)))),
            Some(Err(_)) => Err(format!("message_thread_id {thread:?} is out of range")),
        }
    }

    /// Uploads a PNG (or JPEG) chart with an HTML caption (cut to 1024 visible characters).
    pub async fn send_photo(
        &self,
        chat_id: i64,
        thread: Option<i64>,
        png: Vec<u8>,
        caption_html: &str,
    ) -> Result<i64> {
        let caption = split_message(caption_html, CAPTION_LIMIT)
            .into_iter()
            .next()
            .unwrap_or_default();
        let (file_name, mime) = if png.starts_with(&[0xFF, 0xD8, 0xFF]) {
            ("chart.jpg", "image/jpeg")
        } else {
            ("chart.png", "image/png")
        };
        let thread =
            Self::thread(thread).map_err(|m| self.err(ErrorKind::Permanent, "sendPhoto", m))?;
        self.pace(chat_id, "sendPhoto").await?;
        // A multipart form is consumed by sending: built again for each try.
        let form = || {
            let photo = reqwest::multipart::Part::bytes(png.clone())
                .file_name(file_name)
                .mime_str(mime)
                .map_err(|e| {
                    self.err(
                        ErrorKind::Permanent,
                        "sendPhoto",
                        format!("photo part: {e}"),
                    )
                })?;
            let mut form = reqwest::multipart::Form::new()
                .text("chat_id", chat_id.to_string())
                .part("photo", photo);
            if !caption.is_empty() {
                form = form
                    .text("caption", caption.clone())
                    .text("parse_mode", "HTML");
            }
            if let Some(t) = thread {
                form = form.text("message_thread_id", t.0.0.to_string());
            }
            Ok(Params::Form(form))
        };
        let msg: SentMessage = self
            .call("sendPhoto", || async {
                self.request("sendPhoto", form()?).await
            })
            .await?;
        Ok(msg.message_id)
    }

    /// Long-polls for updates (`offset` = last seen update_id + 1, `timeout` seconds).
    pub async fn get_updates(&self, offset: Option<i64>, timeout: u32) -> Result<Vec<Update>> {
        // Built by hand: update ids are 64-bit in the Bot API's own words ("fits in a 64-bit
        // integer"), while teloxide's payload holds a 32-bit offset.
        let mut req = serde_json::json!({
            "timeout": timeout.min(50),
            "allowed_updates": ["message"],
        });
        if let Some(o) = offset {
            req["offset"] = o.into();
        }
        let body = self.json("getUpdates", &req)?;
        let raw: Vec<serde_json::Value> = self
            .call("getUpdates", || {
                self.request("getUpdates", Params::Json(body.clone()))
            })
            .await?;
        Ok(raw.iter().filter_map(Self::update).collect())
    }

    /// One update as commands need it: its id and, when it is a message, the message. An update
    /// without an id is dropped (nothing could answer or skip it); a message that cannot be read
    /// keeps its id so that the offset still advances past it.
    fn update(raw: &serde_json::Value) -> Option<Update> {
        let Some(update_id) = raw.get("update_id").and_then(serde_json::Value::as_i64) else {
            tracing::warn!(system = SYSTEM, "update without an update_id ignored");
            return None;
        };
        let message = raw.get("message").and_then(|m| {
            let parsed = serde_json::from_value::<Message>(m.clone()).ok();
            if parsed.is_none() {
                tracing::warn!(system = SYSTEM, update_id, "update not understood");
            }
            parsed
        });
        Some(Update { update_id, message })
    }

    /// Registers the bot's command list.
    pub async fn set_my_commands(&self, commands: &[(&str, &str)]) -> Result<()> {
        let list: Vec<BotCommand> = commands
            .iter()
            .map(|(c, d)| BotCommand::new(*c, *d))
            .collect();
        let body = self.json("setMyCommands", &tp::SetMyCommands::new(list))?;
        let _: serde_json::Value = self
            .call("setMyCommands", || {
                self.request("setMyCommands", Params::Json(body.clone()))
            })
            .await?;
        Ok(())
    }

    /// Removes a webhook so that long polling works.
    pub async fn delete_webhook(&self) -> Result<()> {
        let _: serde_json::Value = self
            .call("deleteWebhook", || {
                self.request("deleteWebhook", Params::Json(b"{}".to_vec()))
            })
            .await?;
        Ok(())
    }
}
