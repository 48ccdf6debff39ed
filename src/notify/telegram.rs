//! Telegram Bot API client.
//!
//! Requests go out on dozor's own reqwest client (rustls, no redirects, a timeout longer than
//! the long-poll wait) to `telegram.api_url` (the simulator in tests). teloxide gives the typed
//! payloads (HTML parse mode, forum topics, link previews) and the Bot API's error catalogue;
//! the answer is read here, not by teloxide, because teloxide reads a body whole whatever its
//! size: an endless answer would take the daemon's memory with it. This module adds what a
//! daemon needs around the payloads:
//!
//! - every answer is read through [`http::read_body`] and refused past [`http::MAX_BODY`], like
//!   the CRM's and the telephony's, with an error naming the method and the size;
//! - long HTML messages are split on line boundaries into parts of at most 4096 visible
//!   characters, closing and reopening the tags that are open across a cut ([`split_message`]);
//!   the ledger sends the parts one by one ([`Telegram::send_part`]) and records its progress so
//!   that a part already delivered is never sent again;
//! - a 429 waits `parameters.retry_after` and resends the same request; 5xx and transport
//!   failures are retried with backoff, a bounded number of times;
//! - messages to one chat are spaced at least a second apart, and a group gets at most 20 a
//!   minute;
//! - errors are [`http::Error`]s. teloxide's own errors print the request URL, which carries
//!   the bot token: every message goes through [`Telegram::redact`] and URLs through
//!   [`redact_url`].
//!
//! A failed call is classified by its description's prefix ("Bad Request", "Forbidden",
//! "Unauthorized", …, as teloxide's [`ApiError`] reads it), the HTTP status filling in where the
//! description says nothing; an unrecognised description is a server-side failure and is
//! retried.

// The shared `http::Error` is what every caller matches on; boxing it for the few synchronous
// helpers would only add noise.
#![allow(clippy::result_large_err)]

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
pub const MESSAGE_LIMIT: usize = 4096;
/// Visible characters per caption.
pub const CAPTION_LIMIT: usize = 1024;
const MAX_ATTEMPTS: u32 = 5;
/// After a request failed for good on a transient error, Telegram counts as down for this long:
/// later sends fail at once (the ledger keeps them for a later cycle) instead of each waiting
/// out its own retries and holding the cycle up for minutes.
const DOWN_FOR: Duration = Duration::from_secs(60);
/// Messages one group may get per [`GROUP_WINDOW`].
const GROUP_PER_WINDOW: usize = 20;
const GROUP_WINDOW: Duration = Duration::from_secs(60);

pub type Result<T> = std::result::Result<T, Error>;

/// The bot itself (`getMe`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BotUser {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Chat {
    pub id: i64,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct From {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    pub username: Option<String>,
}

/// An incoming message (only what commands need).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    pub message_id: i64,
    pub chat: Chat,
    pub from: Option<From>,
    #[serde(default)]
    pub date: i64,
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
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Waits until `t` unless dozor stops first (then `method` was not sent).
    async fn wait_until(&self, t: Instant, method: &str) -> Result<()> {
        http::pause_until(t, &self.stop)
            .await
            .map_err(|s| s.error(SYSTEM, method, redact_url(&self.url(method))))
    }

    /// Changes the largest answer read (default [`http::MAX_BODY`]).
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The API host, for tables and logs (the token is never part of it).
    pub fn account(&self) -> String {
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
    pub fn redact(&self, s: &str) -> String {
        let token = self.token.expose();
        if token.is_empty() {
            s.to_string()
        } else {
            s.replace(token, "***")
        }
    }

    fn err(&self, kind: ErrorKind, method: &str, message: impl Into<String>) -> Error {
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
    fn map_err(&self, method: &str, e: RequestError) -> Error {
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

    fn api_err(&self, method: &str, api: &ApiError) -> Error {
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

    /// Waits until the next message to `chat_id` keeps the per-chat pace, and books the slot:
    /// at least `chat_interval` between messages to one chat, and for groups and channels
    /// (negative ids) no more than 20 messages in any 60 s.
    async fn pace(&self, chat_id: i64, method: &str) -> Result<()> {
        self.wait_until(self.book(chat_id), method).await
    }

    /// Books the next send slot for `chat_id` (see [`Self::pace`]).
    fn book(&self, chat_id: i64) -> Instant {
        let mut m = self.last_send.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let q = m.entry(chat_id).or_default();
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= GROUP_WINDOW)
            && q.len() > 1
        {
            q.pop_front();
        }
        let mut slot = now;
        if let Some(last) = q.back() {
            slot = slot.max(*last + self.chat_interval);
        }
        if chat_id < 0 && q.len() >= GROUP_PER_WINDOW {
            let oldest = q[q.len() - GROUP_PER_WINDOW];
            slot = slot.max(oldest + GROUP_WINDOW);
        }
        q.push_back(slot);
        while q.len() > GROUP_PER_WINDOW {
            q.pop_front();
        }
        slot
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
    pub async fn get_me(&self) -> Result<BotUser> {
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
    pub async fn send_part(&self, chat_id: i64, thread: Option<i64>, html: &str) -> Result<i64> {
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

/// Escapes text for HTML parse mode (`&`, `<`, `>`, `"`).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Tok {
    /// An opening tag: name and the raw tag text.
    Open(String, String),
    Close(String),
    /// Visible text (a character or an entity) and its UTF-16 length.
    Text(String, usize),
    Newline,
}

fn tokenize(html: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        if rest.starts_with('<')
            && let Some(end) = rest.find('>')
        {
            let raw = &rest[..=end];
            let inner = &raw[1..raw.len() - 1];
            if let Some(name) = inner.strip_prefix('/') {
                out.push(Tok::Close(name.trim().to_ascii_lowercase()));
            } else {
                let name_end = inner
                    .find(|c: char| c.is_whitespace() || c == '/')
                    .unwrap_or(inner.len());
                out.push(Tok::Open(
                    inner[..name_end].to_ascii_lowercase(),
                    raw.to_string(),
                ));
            }
            i += end + 1;
            continue;
        }
        if rest.starts_with('&')
            && let Some(semi) = rest[1..].find(';')
            && semi > 0
            && semi <= 10
            && rest[1..=semi]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '#')
        {
            out.push(Tok::Text(rest[..semi + 2].to_string(), 1));
            i += semi + 2;
            continue;
        }
        let c = rest.chars().next().expect("in bounds");
        if c == '\n' {
            out.push(Tok::Newline);
        } else {
            out.push(Tok::Text(c.to_string(), c.len_utf16()));
        }
        i += c.len_utf8();
    }
    out
}

struct Splitter {
    limit: usize,
    parts: Vec<String>,
    cur: String,
    cur_len: usize,
    has_content: bool,
    stack: Vec<(String, String)>,
}

impl Splitter {
    fn push(&mut self, t: &Tok) {
        match t {
            Tok::Open(name, raw) => {
                self.cur.push_str(raw);
                self.stack.push((name.clone(), raw.clone()));
                self.has_content = true;
            }
            Tok::Close(name) => {
                self.cur.push_str(&format!("</{name}>"));
                if let Some(pos) = self.stack.iter().rposition(|(n, _)| n == name) {
                    self.stack.remove(pos);
                }
            }
            Tok::Text(s, n) => {
                self.cur.push_str(s);
                self.cur_len += n;
                self.has_content = true;
            }
            Tok::Newline => {
                self.cur.push('\n');
                self.cur_len += 1;
            }
        }
    }

    fn flush(&mut self) {
        let mut part = std::mem::take(&mut self.cur);
        // Drop trailing newlines before closing the open tags.
        while part.ends_with('\n') {
            part.pop();
        }
        for (name, _) in self.stack.iter().rev() {
            part.push_str(&format!("</{name}>"));
        }
        let visible_any = tokenize(&part)
            .iter()
            .any(|t| matches!(t, Tok::Text(s, _) if !s.trim().is_empty()));
        if visible_any {
            self.parts.push(part);
        }
        self.cur = self.stack.iter().map(|(_, raw)| raw.as_str()).collect();
        self.cur_len = 0;
        self.has_content = false;
    }
}

/// Splits Telegram HTML into parts of at most `limit` visible characters (UTF-16 units), on line
/// boundaries where possible. A cut never falls inside a tag or an entity: the tags open at the
/// cut are closed at the end of one part and reopened at the start of the next, so every part is
/// valid HTML on its own. Lines longer than `limit` are cut between characters.
pub fn split_message(html: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(1);
    let toks = tokenize(html);
    let mut lines: Vec<Vec<Tok>> = vec![Vec::new()];
    for t in toks {
        if matches!(t, Tok::Newline) {
            lines.push(Vec::new());
        } else if let Some(l) = lines.last_mut() {
            l.push(t);
        }
    }
    let mut s = Splitter {
        limit,
        parts: Vec::new(),
        cur: String::new(),
        cur_len: 0,
        has_content: false,
        stack: Vec::new(),
    };
    for line in &lines {
        let line_len: usize = line
            .iter()
            .map(|t| if let Tok::Text(_, n) = t { *n } else { 0 })
            .sum();
        let sep = usize::from(s.has_content);
        if s.cur_len + sep + line_len <= s.limit {
            if sep == 1 {
                s.push(&Tok::Newline);
            }
            for t in line {
                s.push(t);
            }
            continue;
        }
        if s.cur_len > 0 {
            s.flush();
        } else if sep == 1 {
            s.push(&Tok::Newline);
        }
        for t in line {
            if let Tok::Text(_, n) = t
                && s.cur_len + n > s.limit
                && s.cur_len > 0
            {
                s.flush();
            }
            s.push(t);
        }
    }
    s.flush();
    s.parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible(part: &str) -> usize {
        tokenize(part)
            .iter()
            .map(|t| match t {
                Tok::Text(_, n) => *n,
                Tok::Newline => 1,
                _ => 0,
            })
            .sum()
    }

    fn balanced(part: &str) -> bool {
        let mut st = Vec::new();
        for t in tokenize(part) {
            match t {
                Tok::Open(n, _) => st.push(n),
                Tok::Close(n) if st.pop().as_deref() != Some(n.as_str()) => return false,
                _ => {}
            }
        }
        st.is_empty()
    }

    #[test]
    fn short_message_is_one_part() {
        assert_eq!(
            split_message("<b>hi</b>\nthere", 4096),
            vec!["<b>hi</b>\nthere"]
        );
    }

    #[test]
    fn splits_on_lines_and_keeps_tags_balanced() {
        let line = format!("<b>{}</b> {}", "x".repeat(30), "y".repeat(60));
        let html: Vec<String> = (0..50).map(|_| line.clone()).collect();
        let html = format!("<i>{}</i>", html.join("\n"));
        let parts = split_message(&html, 500);
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(visible(p) <= 500, "{}", visible(p));
            assert!(balanced(p), "{p}");
            assert!(p.starts_with("<i>"), "{p}");
        }
        let total: usize = parts.iter().map(|p| visible(p)).sum();
        // Every line survives; only the newlines at the cuts are dropped.
        assert_eq!(total + parts.len() - 1, visible(&html));
    }

    #[test]
    fn long_line_is_cut_between_characters_not_inside_entities() {
        let html = format!("<b>{}</b>", "a&amp;".repeat(100));
        let parts = split_message(&html, 33);
        for p in &parts {
            assert!(visible(p) <= 33);
            assert!(balanced(p));
            assert!(!p.contains("&am<") && !p.ends_with('&'));
        }
        let joined: String = parts
            .iter()
            .map(|p| p.replace("<b>", "").replace("</b>", ""))
            .collect();
        assert_eq!(joined, "a&amp;".repeat(100));
    }

    #[tokio::test]
    async fn groups_get_at_most_20_messages_a_minute() {
        let tg = Telegram::new(&TelegramConfig {
            bot_token: Some(Secret::new("1:x")),
            bot_token_file: None,
            api_url: "http://127.0.0.1:1".into(),
            owner_chat: None,
            head_of_sales_chat: None,
            ops_chat: None,
            report_topic: None,
            managers: Default::default(),
            allowed_chats: Vec::new(),
        })
        .with_chat_interval(Duration::from_millis(100));
        let t0 = Instant::now();
        let group: Vec<Instant> = (0..21).map(|_| tg.book(-100)).collect();
        assert!(group[19] - t0 < Duration::from_secs(3));
        assert!(group[20] - t0 >= Duration::from_secs(60));
        assert!(
            group
                .windows(2)
                .all(|w| w[1] - w[0] >= Duration::from_millis(100))
        );
        let private: Vec<Instant> = (0..21).map(|_| tg.book(5)).collect();
        assert!(private[20] - t0 < Duration::from_secs(3));
    }

    fn offline(token: &str) -> Telegram {
        Telegram::new(&TelegramConfig {
            bot_token: Some(Secret::new(token)),
            bot_token_file: None,
            api_url: "http://127.0.0.1:1/tg".into(),
            owner_chat: None,
            head_of_sales_chat: None,
            ops_chat: None,
            report_topic: None,
            managers: Default::default(),
            allowed_chats: Vec::new(),
        })
        .with_max_attempts(1)
    }

    #[test]
    fn teloxide_errors_map_to_kinds() {
        let tg = offline("1:tok");
        let e = tg.map_err(
            "sendMessage",
            RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(7)),
        );
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(e.status, Some(429));
        let api = |s: &str| RequestError::Api(ApiError::Unknown(s.into()));
        let e = tg.map_err("sendMessage", api("Bad Gateway"));
        assert_eq!((e.kind, e.status), (ErrorKind::Transient, Some(502)));
        let e = tg.map_err("sendMessage", api("Internal Server Error"));
        assert_eq!(e.kind, ErrorKind::Transient);
        let e = tg.map_err("sendMessage", api("Bad Request: message thread not found"));
        assert_eq!((e.kind, e.status), (ErrorKind::Permanent, Some(400)));
        let e = tg.map_err("sendMessage", RequestError::Api(ApiError::BotBlocked));
        assert_eq!((e.kind, e.status), (ErrorKind::Permanent, Some(403)));
        let e = tg.map_err("getMe", RequestError::Api(ApiError::InvalidToken));
        assert_eq!((e.kind, e.status), (ErrorKind::Auth, Some(401)));
        let e = tg.map_err(
            "sendMessage",
            RequestError::MigrateToChatId(ChatId(-1001234567890)),
        );
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(e.message.contains("-1001234567890"));
    }

    #[tokio::test]
    async fn network_errors_are_transient_and_hide_the_token() {
        let tg = offline("123:SecretTokenValue");
        let e = tg.send_message(5, Some(3), "hi").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("SecretTokenValue"), "{shown}");
        assert!(e.url.starts_with("http://127.0.0.1:1/tg/bot"), "{}", e.url);
    }

    #[test]
    fn escape() {
        assert_eq!(escape_html("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
    }

    #[test]
    fn empty_gives_no_parts() {
        assert!(split_message("", 10).is_empty());
        assert!(split_message("<b></b>\n", 10).is_empty());
    }
}
