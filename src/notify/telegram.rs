//! Telegram Bot API client.
//!
//! Plain reqwest against `{api_url}/bot{TOKEN}/{method}`. Long HTML messages are split on line
//! boundaries into parts of at most 4096 visible characters, closing and reopening the tags that
//! are open across a cut. A 429 waits `parameters.retry_after` and resends the same request; 5xx
//! and transport failures are retried with backoff; messages to one chat are spaced at least a
//! second apart. The token is part of every URL and is never printed: URLs go through
//! [`redact_url`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::{Secret, TelegramConfig};
use crate::http::{self, Error, ErrorKind, redact_url};
use crate::server::metrics::Observe as _;

const SYSTEM: &str = "telegram";
/// Visible characters per message.
pub const MESSAGE_LIMIT: usize = 4096;
/// Visible characters per caption.
pub const CAPTION_LIMIT: usize = 1024;
const MAX_ATTEMPTS: u32 = 5;
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

/// One update from `getUpdates`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Update {
    pub update_id: i64,
    pub message: Option<Message>,
}

/// A Telegram bot.
pub struct Telegram {
    http: reqwest::Client,
    api_url: String,
    token: Secret,
    /// The latest send slots booked per chat (up to 20).
    last_send: Mutex<HashMap<i64, VecDeque<Instant>>>,
    chat_interval: Duration,
    max_wait: Duration,
}

impl Telegram {
    pub fn new(cfg: &TelegramConfig) -> Self {
        Telegram {
            http: http::client(Duration::from_secs(75)),
            api_url: cfg.api_url.trim_end_matches('/').to_string(),
            token: cfg.bot_token.clone().unwrap_or_default(),
            last_send: Mutex::new(HashMap::new()),
            chat_interval: Duration::from_secs(1),
            max_wait: Duration::from_secs(120),
        }
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

    fn url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.api_url, self.token.expose())
    }

    fn err(&self, kind: ErrorKind, method: &str, message: impl Into<String>) -> Error {
        let msg: String = message.into();
        let token = self.token.expose();
        let msg = if token.is_empty() {
            msg
        } else {
            msg.replace(token, "***")
        };
        Error::new(kind, SYSTEM, method, redact_url(&self.url(method)), msg)
    }

    /// Waits until the next message to `chat_id` keeps the per-chat pace, and books the slot:
    /// at least `chat_interval` between messages to one chat, and for groups and channels
    /// (negative ids) no more than 20 messages in any 60 s.
    async fn pace(&self, chat_id: i64) {
        tokio::time::sleep_until(self.book(chat_id)).await;
    }

    /// Books the next send slot for `chat_id` (see [`Self::pace`]).
    fn book(&self, chat_id: i64) -> Instant {
        {
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
    }

    /// Sends one request built by `build` (called again for each retry) and returns `result`.
    async fn call<F>(&self, method: &str, build: F) -> Result<Value>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        let mut attempt = 0;
        loop {
            match self.call_once(method, &build).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt + 1 < MAX_ATTEMPTS => {
                    let wait = e
                        .retry_after
                        .unwrap_or_else(|| http::backoff(attempt))
                        .min(self.max_wait);
                    tracing::warn!(system = SYSTEM, method, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn call_once<F>(&self, method: &str, build: &F) -> Result<Value>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        let url = self.url(method);
        let resp = build(self.http.post(&url))
            .send()
            .await
            .observe(SYSTEM, method)
            .map_err(|e| Error::transport(SYSTEM, method, redact_url(&url), &e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::transport(SYSTEM, method, redact_url(&url), &e))?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let description = body
            .as_ref()
            .and_then(|b| b.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if status == 200
            && let Some(b) = &body
            && b.get("ok") == Some(&Value::Bool(true))
        {
            return Ok(b.get("result").cloned().unwrap_or(Value::Null));
        }
        let params = body.as_ref().and_then(|b| b.get("parameters"));
        let (kind, msg) = match status {
            200 => (
                ErrorKind::Decode,
                "response is not a valid Bot API envelope".to_string(),
            ),
            401 => (
                ErrorKind::Auth,
                "bot token refused (Unauthorized)".to_string(),
            ),
            429 => (ErrorKind::RateLimited, description.clone()),
            s if s >= 500 => (ErrorKind::Transient, format!("server error {description}")),
            _ => (ErrorKind::Permanent, description.clone()),
        };
        let msg = if msg.is_empty() {
            format!("HTTP {status}")
        } else {
            msg
        };
        let mut e = self
            .err(kind, method, msg.trim().to_string())
            .status(status);
        if let Some(code) = body
            .as_ref()
            .and_then(|b| b.get("error_code"))
            .and_then(Value::as_i64)
        {
            e = e.code(code.to_string());
        }
        if kind == ErrorKind::RateLimited {
            let secs = params
                .and_then(|p| p.get("retry_after"))
                .and_then(Value::as_u64)
                .unwrap_or(1);
            e = e.retry_after(Duration::from_secs(secs.max(1)));
        }
        if let Some(to) = params
            .and_then(|p| p.get("migrate_to_chat_id"))
            .and_then(Value::as_i64)
        {
            e.message = format!("{}; chat migrated to {to}", e.message);
        }
        Err(e)
    }

    /// Who the bot is; also checks the token.
    pub async fn get_me(&self) -> Result<BotUser> {
        let v = self.call("getMe", |r| r).await?;
        serde_json::from_value(v).map_err(|e| {
            self.err(
                ErrorKind::Decode,
                "getMe",
                format!("unexpected getMe result: {e}"),
            )
        })
    }

    /// Sends an HTML message, split into parts of at most 4096 visible characters. Returns the
    /// message id of the first part.
    pub async fn send_message(&self, chat_id: i64, thread: Option<i64>, html: &str) -> Result<i64> {
        let parts = split_message(html, MESSAGE_LIMIT);
        if parts.is_empty() {
            return Err(self.err(ErrorKind::Permanent, "sendMessage", "message text is empty"));
        }
        let mut first = None;
        for part in parts {
            self.pace(chat_id).await;
            let mut body = json!({
                "chat_id": chat_id,
                "text": part,
                "parse_mode": "HTML",
                "link_preview_options": {"is_disabled": true},
            });
            if let Some(t) = thread {
                body["message_thread_id"] = json!(t);
            }
            let v = self.call("sendMessage", |r| r.json(&body)).await?;
            let id = v.get("message_id").and_then(Value::as_i64).ok_or_else(|| {
                self.err(ErrorKind::Decode, "sendMessage", "result has no message_id")
            })?;
            first.get_or_insert(id);
        }
        Ok(first.unwrap_or_default())
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
        self.pace(chat_id).await;
        let v = self
            .call("sendPhoto", |r| {
                let part = reqwest::multipart::Part::bytes(png.clone())
                    .file_name(file_name)
                    .mime_str(mime)
                    .expect("static mime type");
                let mut form = reqwest::multipart::Form::new()
                    .text("chat_id", chat_id.to_string())
                    .part("photo", part);
                if !caption.is_empty() {
                    form = form
                        .text("caption", caption.clone())
                        .text("parse_mode", "HTML");
                }
                if let Some(t) = thread {
                    form = form.text("message_thread_id", t.to_string());
                }
                r.multipart(form)
            })
            .await?;
        v.get("message_id")
            .and_then(Value::as_i64)
            .ok_or_else(|| self.err(ErrorKind::Decode, "sendPhoto", "result has no message_id"))
    }

    /// Long-polls for updates (`offset` = last seen update_id + 1, `timeout` seconds).
    pub async fn get_updates(&self, offset: Option<i64>, timeout: u32) -> Result<Vec<Update>> {
        let mut body = json!({"timeout": timeout.min(50), "allowed_updates": ["message"]});
        if let Some(o) = offset {
            body["offset"] = json!(o);
        }
        let v = self.call("getUpdates", |r| r.json(&body)).await?;
        let Value::Array(items) = v else {
            return Err(self.err(ErrorKind::Decode, "getUpdates", "result is not an array"));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match serde_json::from_value::<Update>(item.clone()) {
                Ok(u) => out.push(u),
                Err(e) => {
                    // Keep the id so the offset still advances past it.
                    match item.get("update_id").and_then(Value::as_i64) {
                        Some(id) => {
                            tracing::warn!(system = SYSTEM, update_id = id, error = %e, "update not understood");
                            out.push(Update {
                                update_id: id,
                                message: None,
                            });
                        }
                        None => tracing::warn!(system = SYSTEM, error = %e, "update without id"),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Registers the bot's command list.
    pub async fn set_my_commands(&self, commands: &[(&str, &str)]) -> Result<()> {
        let list: Vec<Value> = commands
            .iter()
            .map(|(c, d)| json!({"command": c, "description": d}))
            .collect();
        let body = json!({"commands": list});
        self.call("setMyCommands", |r| r.json(&body)).await?;
        Ok(())
    }

    /// Removes a webhook so that long polling works.
    pub async fn delete_webhook(&self) -> Result<()> {
        self.call("deleteWebhook", |r| r.json(&json!({}))).await?;
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
