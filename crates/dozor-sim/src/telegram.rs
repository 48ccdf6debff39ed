//! Fake of the Telegram Bot API (`/telegram/bot{TOKEN}/{method}`).
//!
//! Accepts JSON, form and multipart bodies (and query strings), answers with the real envelope
//! (`{"ok":true,"result":…}` / `{"ok":false,"error_code":…,"description":…,"parameters":…}`),
//! validates HTML parse mode like the real server (allowed tags, nesting, entities; 4096 visible
//! characters), checks uploaded photos by their magic bytes, paces messages per chat and keeps
//! every accepted message for tests to inspect.
//!
//! Control endpoints: `GET /telegram/_sim/messages`, `DELETE /telegram/_sim/messages`,
//! `POST /telegram/_sim/updates` (inject an update), `POST /telegram/_sim/unknown_chats`
//! (`{"chat_id":…}`: that chat answers "chat not found" from now on), `POST
//! /telegram/_sim/fail_sends` (`{"after_ok":…, "count":…, "throttle":…}`, see
//! [`State::fail_sends`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use super::{Credentials, Injected, Sim, SimOptions, System};

/// Visible characters (UTF-16 code units) a message may have.
pub const MESSAGE_LIMIT: usize = 4096;
/// Visible characters a caption may have.
pub const CAPTION_LIMIT: usize = 1024;
/// Messages per minute to one group chat.
pub const GROUP_PER_MINUTE: usize = 20;
/// Burst of messages one private chat may get before the 1/s pace applies.
pub const PRIVATE_BURST: usize = 3;

/// One message, photo or document the fake accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    pub message_id: i64,
    pub chat_id: i64,
    pub thread: Option<i64>,
    /// `message`, `photo` or `document`.
    pub kind: String,
    /// Text of a message or caption of a photo/document, as sent (markup included).
    pub text: Option<String>,
    pub parse_mode: Option<String>,
    /// Size of the uploaded file in bytes.
    pub photo_len: Option<usize>,
    /// `image/png`, `image/jpeg` (detected from the bytes) or the document's declared type.
    pub content_type: Option<String>,
    pub file_name: Option<String>,
    pub at: DateTime<Utc>,
}

struct Inner {
    messages: Vec<SentMessage>,
    next_message_id: i64,
    updates: VecDeque<Value>,
    next_update_id: i64,
    webhook: Option<(String, Option<String>)>,
    unknown_chats: HashSet<i64>,
    /// Recent send instants per chat, for pacing.
    recent: HashMap<i64, VecDeque<Instant>>,
    /// Private-chat token buckets: (tokens, last refill).
    buckets: HashMap<i64, (f64, Instant)>,
    commands: Vec<Value>,
    /// Sends still accepted before [`State::fail_sends`] starts failing, and how many fail.
    fail_after: usize,
    failing: u32,
    fail_throttle: bool,
}

/// Mutable state of the fake.
pub struct State {
    enforce: bool,
    bot_id: i64,
    inner: Mutex<Inner>,
    notify: Notify,
}

impl State {
    pub fn new(opts: &SimOptions, creds: &Credentials) -> Self {
        let bot_id = creds
            .telegram_bot_token
            .split(':')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        State {
            enforce: opts.enforce_limits,
            bot_id,
            inner: Mutex::new(Inner {
                messages: Vec::new(),
                next_message_id: 1,
                updates: VecDeque::new(),
                next_update_id: 100_000_001,
                webhook: None,
                unknown_chats: HashSet::new(),
                recent: HashMap::new(),
                buckets: HashMap::new(),
                commands: Vec::new(),
                fail_after: 0,
                failing: 0,
                fail_throttle: false,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many messages and photos the fake has accepted.
    pub fn sent_count(&self) -> usize {
        self.lock().messages.len()
    }

    /// Every accepted message, oldest first.
    pub fn messages(&self) -> Vec<SentMessage> {
        self.lock().messages.clone()
    }

    pub fn clear_messages(&self) {
        self.lock().messages.clear();
    }

    /// Queues an update for `getUpdates`. `update` is a Telegram Update without `update_id`, or
    /// the shortcut `{"chat_id":…, "text":…, "from_id":…}`. Returns the assigned update_id.
    pub fn push_update(&self, update: Value) -> i64 {
        let mut update = if update.get("chat_id").is_some() && update.get("message").is_none() {
            let chat_id = update["chat_id"].as_i64().unwrap_or(0);
            let from_id = update["from_id"].as_i64().unwrap_or(chat_id.abs());
            let text = update["text"].as_str().unwrap_or_default().to_string();
            let chat_type = if chat_id < 0 { "supergroup" } else { "private" };
            let mut msg = json!({
                "date": Utc::now().timestamp(),
                "chat": {"id": chat_id, "type": chat_type},
                "from": {"id": from_id, "is_bot": false, "first_name": "User", "username": format!("user{from_id}")},
                "text": text,
            });
            if let Some(t) = update.get("message_thread_id").and_then(Value::as_i64) {
                msg["message_thread_id"] = json!(t);
            }
            if text.starts_with('/') {
                let len = text
                    .split_whitespace()
                    .next()
                    .map(|c| c.encode_utf16().count())
                    .unwrap_or(0);
                msg["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
            }
            json!({"message": msg})
        } else {
            update
        };
        let id = {
            let mut g = self.lock();
            let id = g.next_update_id;
            g.next_update_id += 1;
            if let Some(m) = update.get_mut("message").and_then(Value::as_object_mut)
                && !m.contains_key("message_id")
            {
                m.insert("message_id".into(), json!(g.next_message_id));
                g.next_message_id += 1;
            }
            update["update_id"] = json!(id);
            g.updates.push_back(update);
            id
        };
        self.notify.notify_waiters();
        id
    }

    /// After accepting `after_ok` more sends (messages, photos, documents), fails the next
    /// `count` send requests: with 429 `retry_after: 1` when `throttle`, else with 502. Lets a
    /// test cut a multi-part message in the middle. `fail_sends(0, 0, _)` clears it.
    pub fn fail_sends(&self, after_ok: usize, count: u32, throttle: bool) {
        let mut g = self.lock();
        g.fail_after = after_ok;
        g.failing = count;
        g.fail_throttle = throttle;
    }

    /// The planned failure for this send, if any (see [`State::fail_sends`]).
    fn planned_failure(&self) -> Option<TgError> {
        let mut g = self.lock();
        if g.failing == 0 {
            return None;
        }
        if g.fail_after > 0 {
            g.fail_after -= 1;
            return None;
        }
        g.failing -= 1;
        Some(if g.fail_throttle {
            TgError {
                status: 429,
                description: "Too Many Requests: retry after 1".into(),
                parameters: Some(json!({"retry_after": 1})),
            }
        } else {
            TgError {
                status: 502,
                description: "Bad Gateway".into(),
                parameters: None,
            }
        })
    }

    /// Makes `chat_id` answer "chat not found".
    pub fn mark_chat_unknown(&self, chat_id: i64) {
        self.lock().unknown_chats.insert(chat_id);
    }

    /// The URL of the webhook, if one is set.
    pub fn webhook_url(&self) -> Option<String> {
        self.lock().webhook.as_ref().map(|w| w.0.clone())
    }

    /// The commands last set with setMyCommands.
    pub fn commands(&self) -> Vec<Value> {
        self.lock().commands.clone()
    }

    /// `Some(retry_after)` when one more message to `chat_id` now breaks the pace.
    fn pace(&self, g: &mut Inner, chat_id: i64) -> Option<u64> {
        if !self.enforce {
            return None;
        }
        let now = Instant::now();
        let q = g.recent.entry(chat_id).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            q.pop_front();
        }
        if chat_id < 0 {
            if q.len() >= GROUP_PER_MINUTE {
                let oldest = q.front().copied().unwrap_or(now);
                let wait = Duration::from_secs(60).saturating_sub(now.duration_since(oldest));
                return Some(wait.as_secs().max(1));
            }
            q.push_back(now);
        } else {
            // Token bucket: PRIVATE_BURST messages, refilled at one per second.
            let (tokens, last) = g
                .buckets
                .entry(chat_id)
                .or_insert((PRIVATE_BURST as f64, now));
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64()).min(PRIVATE_BURST as f64);
            *last = now;
            if *tokens < 1.0 {
                return Some(1);
            }
            *tokens -= 1.0;
        }
        None
    }
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/_sim/messages", get(list_messages).delete(clear_messages))
        .route("/_sim/updates", post(inject_update))
        .route("/_sim/unknown_chats", post(unknown_chat))
        .route("/_sim/fail_sends", post(fail_sends))
        .route("/{bot_token}/{method}", any(bot_method))
        .with_state(sim)
}

async fn list_messages(AxState(sim): AxState<Arc<Sim>>) -> Response {
    axum::Json(sim.telegram.messages()).into_response()
}

async fn clear_messages(AxState(sim): AxState<Arc<Sim>>) -> StatusCode {
    sim.telegram.clear_messages();
    StatusCode::NO_CONTENT
}

async fn inject_update(AxState(sim): AxState<Arc<Sim>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v.is_object() => {
            let id = sim.telegram.push_update(v);
            axum::Json(json!({"update_id": id})).into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "body must be a JSON object").into_response(),
    }
}

async fn unknown_chat(AxState(sim): AxState<Arc<Sim>>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match v.get("chat_id").and_then(Value::as_i64) {
        Some(id) => {
            sim.telegram.mark_chat_unknown(id);
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::BAD_REQUEST, "need {\"chat_id\": <int>}").into_response(),
    }
}

async fn fail_sends(AxState(sim): AxState<Arc<Sim>>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (
        v.get("after_ok").and_then(Value::as_u64),
        v.get("count").and_then(Value::as_u64),
    ) {
        (Some(after_ok), Some(count)) => {
            let throttle = v.get("throttle").and_then(Value::as_bool).unwrap_or(false);
            sim.telegram.fail_sends(
                after_ok as usize,
                u32::try_from(count).unwrap_or(u32::MAX),
                throttle,
            );
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "need {\"after_ok\": <int>, \"count\": <int>, \"throttle\": <bool>}",
        )
            .into_response(),
    }
}

/// A failed call, in the Bot API envelope.
struct TgError {
    status: u16,
    description: String,
    parameters: Option<Value>,
}

fn bad(description: impl Into<String>) -> TgError {
    TgError {
        status: 400,
        description: format!("Bad Request: {}", description.into()),
        parameters: None,
    }
}

fn respond(status: u16, body: &Value, malformed: bool) -> Response {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    if malformed {
        bytes = super::corrupt(&bytes);
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

fn error_response(e: TgError) -> Response {
    let mut body = json!({"ok": false, "error_code": e.status, "description": e.description});
    if let Some(p) = e.parameters {
        body["parameters"] = p;
    }
    respond(e.status, &body, false)
}

/// An uploaded file part.
struct Upload {
    file_name: Option<String>,
    content_type: Option<String>,
    bytes: Bytes,
}

/// Request parameters from the query string and the body, whatever its encoding.
#[derive(Default)]
struct Params {
    values: Map<String, Value>,
    files: HashMap<String, Upload>,
}

impl Params {
    fn str(&self, k: &str) -> Option<String> {
        match self.values.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    fn i64(&self, k: &str) -> Result<Option<i64>, TgError> {
        match self.values.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| bad(format!("invalid {k}"))),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("invalid {k} specified"))),
            Some(_) => Err(bad(format!("invalid {k}"))),
        }
    }

    /// A JSON-typed parameter sent as JSON or as a JSON-serialised string (form / multipart).
    fn json(&self, k: &str) -> Option<Value> {
        match self.values.get(k)? {
            Value::String(s) => serde_json::from_str(s).ok(),
            other => Some(other.clone()),
        }
    }
}

async fn read_params(req: Request) -> Result<Params, TgError> {
    let mut p = Params::default();
    if let Some(q) = req.uri().query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            p.values
                .insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ctype.starts_with("multipart/form-data") {
        let mut mp = axum::extract::Multipart::from_request(req, &())
            .await
            .map_err(|_| bad("invalid multipart body"))?;
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|_| bad("invalid multipart body"))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let file_name = field.file_name().map(str::to_string);
            let content_type = field.content_type().map(str::to_string);
            let bytes = field
                .bytes()
                .await
                .map_err(|_| bad("invalid multipart body"))?;
            if file_name.is_some() {
                p.files.insert(
                    name,
                    Upload {
                        file_name,
                        content_type,
                        bytes,
                    },
                );
            } else {
                p.values.insert(
                    name,
                    Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                );
            }
        }
        return Ok(p);
    }
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024)
        .await
        .map_err(|_| bad("request body is too big"))?;
    if body.is_empty() {
        return Ok(p);
    }
    if ctype.starts_with("application/json") {
        let v: Value = serde_json::from_slice(&body).map_err(|_| bad("invalid JSON body"))?;
        let Value::Object(o) = v else {
            return Err(bad("JSON body must be an object"));
        };
        p.values.extend(o);
    } else if ctype.starts_with("application/x-www-form-urlencoded") {
        for (k, v) in url::form_urlencoded::parse(&body) {
            p.values
                .insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    Ok(p)
}

async fn bot_method(
    AxState(sim): AxState<Arc<Sim>>,
    Path((bot_token, method)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Some(token) = bot_token.strip_prefix("bot") else {
        return error_response(TgError {
            status: 404,
            description: "Not Found".into(),
            parameters: None,
        });
    };
    let method = method.to_ascii_lowercase();
    let injected = sim.on_request(System::Telegram, &method).await;
    if token != sim.creds.telegram_bot_token {
        return error_response(TgError {
            status: 401,
            description: "Unauthorized".into(),
            parameters: None,
        });
    }
    match injected {
        Injected::Http5xx => {
            return error_response(TgError {
                status: 502,
                description: "Bad Gateway".into(),
                parameters: None,
            });
        }
        Injected::Throttle => {
            return error_response(TgError {
                status: 429,
                description: "Too Many Requests: retry after 1".into(),
                parameters: Some(json!({"retry_after": 1})),
            });
        }
        _ => {}
    }
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(e) => return error_response(e),
    };
    let result = match method.as_str() {
        "getme" => Ok(get_me(&sim)),
        "sendmessage" => send_message(&sim, &params),
        "sendphoto" => send_file(&sim, &params, "photo"),
        "senddocument" => send_file(&sim, &params, "document"),
        "getupdates" => get_updates(&sim, &params).await,
        "setwebhook" => set_webhook(&sim, &params),
        "deletewebhook" => {
            let drop_pending = params
                .str("drop_pending_updates")
                .is_some_and(|s| s == "true");
            let mut g = sim.telegram.lock();
            g.webhook = None;
            if drop_pending {
                g.updates.clear();
            }
            Ok(json!(true))
        }
        "getwebhookinfo" => {
            let g = sim.telegram.lock();
            Ok(json!({
                "url": g.webhook.as_ref().map(|w| w.0.clone()).unwrap_or_default(),
                "has_custom_certificate": false,
                "pending_update_count": g.updates.len(),
                "max_connections": 40,
            }))
        }
        "setmycommands" => set_my_commands(&sim, &params),
        "getmycommands" => Ok(Value::Array(sim.telegram.commands())),
        _ => Err(TgError {
            status: 404,
            description: "Not Found: method not found".into(),
            parameters: None,
        }),
    };
    match result {
        Ok(r) => respond(
            200,
            &json!({"ok": true, "result": r}),
            injected == Injected::Malformed,
        ),
        Err(e) => {
            if e.status == 429 {
                sim.count_throttled(System::Telegram);
            }
            error_response(e)
        }
    }
}

fn get_me(sim: &Sim) -> Value {
    json!({
        "id": sim.telegram.bot_id,
        "is_bot": true,
        "first_name": "Dozor",
        "username": "dozor_sim_bot",
        "can_join_groups": true,
        "can_read_all_group_messages": false,
        "supports_inline_queries": false,
        "can_connect_to_business": false,
        "has_main_web_app": false,
    })
}

fn chat_of(sim: &Sim, params: &Params) -> Result<i64, TgError> {
    let chat_id = match params.values.get("chat_id") {
        None | Some(Value::Null) => return Err(bad("chat_id is empty")),
        Some(Value::String(s)) if s.starts_with('@') => return Err(bad("chat not found")),
        _ => params
            .i64("chat_id")?
            .ok_or_else(|| bad("chat_id is empty"))?,
    };
    if sim.telegram.lock().unknown_chats.contains(&chat_id) {
        return Err(bad("chat not found"));
    }
    Ok(chat_id)
}

/// Visible length of `text` under `parse_mode`, or the parse error.
fn visible_len(text: &str, parse_mode: Option<&str>) -> Result<usize, TgError> {
    match parse_mode.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => Ok(text.encode_utf16().count()),
        Some("html") => parse_html(text)
            .map(|v| v.encode_utf16().count())
            .map_err(|e| bad(format!("can't parse entities: {e}"))),
        Some("markdown") | Some("markdownv2") => Ok(text.encode_utf16().count()),
        Some(other) => Err(bad(format!("unsupported parse_mode \"{other}\""))),
    }
}

fn chat_json(chat_id: i64) -> Value {
    if chat_id < 0 {
        json!({"id": chat_id, "type": "supergroup", "title": "Simulated group"})
    } else {
        json!({"id": chat_id, "type": "private", "first_name": "User"})
    }
}

fn send_message(sim: &Sim, params: &Params) -> Result<Value, TgError> {
    let chat_id = chat_of(sim, params)?;
    if let Some(e) = sim.telegram.planned_failure() {
        return Err(e);
    }
    let thread = params.i64("message_thread_id")?;
    let text = params.str("text").unwrap_or_default();
    let parse_mode = params.str("parse_mode");
    let len = visible_len(&text, parse_mode.as_deref())?;
    if len == 0 || text.trim().is_empty() {
        return Err(bad("message text is empty"));
    }
    if len > MESSAGE_LIMIT {
        return Err(bad("message is too long"));
    }
    let mut g = sim.telegram.lock();
    if let Some(after) = sim.telegram.pace(&mut g, chat_id) {
        return Err(TgError {
            status: 429,
            description: format!("Too Many Requests: retry after {after}"),
            parameters: Some(json!({"retry_after": after})),
        });
    }
    let message_id = g.next_message_id;
    g.next_message_id += 1;
    let now = Utc::now();
    g.messages.push(SentMessage {
        message_id,
        chat_id,
        thread,
        kind: "message".into(),
        text: Some(text.clone()),
        parse_mode,
        photo_len: None,
        content_type: None,
        file_name: None,
        at: now,
    });
    let visible = match g.messages.last().and_then(|m| m.parse_mode.clone()) {
        Some(pm) if pm.eq_ignore_ascii_case("html") => parse_html(&text).unwrap_or_default(),
        _ => text,
    };
    let mut msg = json!({
        "message_id": message_id,
        "from": {"id": sim.telegram.bot_id, "is_bot": true, "first_name": "Dozor", "username": "dozor_sim_bot"},
        "chat": chat_json(chat_id),
        "date": now.timestamp(),
        "text": visible,
    });
    if let Some(t) = thread {
        msg["message_thread_id"] = json!(t);
        msg["is_topic_message"] = json!(true);
    }
    Ok(msg)
}

/// Detects PNG / JPEG by magic bytes; returns the MIME type and, for PNG, the dimensions.
pub fn sniff_image(b: &[u8]) -> Option<(&'static str, u32, u32)> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        let (w, h) = if b.len() >= 24 {
            (
                u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
                u32::from_be_bytes([b[20], b[21], b[22], b[23]]),
            )
        } else {
            (0, 0)
        };
        return Some(("image/png", w, h));
    }
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(("image/jpeg", 0, 0));
    }
    None
}

fn send_file(sim: &Sim, params: &Params, field: &str) -> Result<Value, TgError> {
    let chat_id = chat_of(sim, params)?;
    if let Some(e) = sim.telegram.planned_failure() {
        return Err(e);
    }
    let thread = params.i64("message_thread_id")?;
    let caption = params.str("caption");
    let parse_mode = params.str("parse_mode");
    if let Some(c) = &caption
        && visible_len(c, parse_mode.as_deref())? > CAPTION_LIMIT
    {
        return Err(bad("message caption is too long"));
    }
    // The file is either the part named after the parameter, or a part the parameter refers
    // to as `attach://<name>`.
    let attached = params
        .str(field)
        .and_then(|v| v.strip_prefix("attach://").map(str::to_string));
    let upload = match &attached {
        Some(name) => params.files.get(name),
        None => params.files.get(field),
    };
    let Some(upload) = upload else {
        return Err(bad(format!("there is no {field} in the request")));
    };
    let (content_type, file_json) = if field == "photo" {
        if upload.bytes.len() > 10 * 1024 * 1024 {
            return Err(bad("file is too big"));
        }
        let Some((mime, w, h)) = sniff_image(&upload.bytes) else {
            return Err(bad("IMAGE_PROCESS_FAILED"));
        };
        if w > 0 && h > 0 && (w + h > 10_000 || w.max(h) / w.min(h).max(1) > 20) {
            return Err(bad("PHOTO_INVALID_DIMENSIONS"));
        }
        let size = upload.bytes.len();
        (
            mime.to_string(),
            json!({"photo": [{
                "file_id": format!("AgAC-sim-{size}"),
                "file_unique_id": format!("sim{size}"),
                "width": w, "height": h, "file_size": size,
            }]}),
        )
    } else {
        if upload.bytes.len() > 50 * 1024 * 1024 {
            return Err(bad("file is too big"));
        }
        let ct = upload
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        (
            ct.clone(),
            json!({"document": {
                "file_id": format!("BQAC-sim-{}", upload.bytes.len()),
                "file_unique_id": format!("sim{}", upload.bytes.len()),
                "file_name": upload.file_name.clone().unwrap_or_else(|| "file".into()),
                "mime_type": ct,
                "file_size": upload.bytes.len(),
            }}),
        )
    };
    let mut g = sim.telegram.lock();
    if let Some(after) = sim.telegram.pace(&mut g, chat_id) {
        return Err(TgError {
            status: 429,
            description: format!("Too Many Requests: retry after {after}"),
            parameters: Some(json!({"retry_after": after})),
        });
    }
    let message_id = g.next_message_id;
    g.next_message_id += 1;
    let now = Utc::now();
    g.messages.push(SentMessage {
        message_id,
        chat_id,
        thread,
        kind: field.to_string(),
        text: caption.clone(),
        parse_mode: parse_mode.clone(),
        photo_len: Some(upload.bytes.len()),
        content_type: Some(content_type),
        file_name: upload.file_name.clone(),
        at: now,
    });
    let mut msg = json!({
        "message_id": message_id,
        "from": {"id": sim.telegram.bot_id, "is_bot": true, "first_name": "Dozor", "username": "dozor_sim_bot"},
        "chat": chat_json(chat_id),
        "date": now.timestamp(),
    });
    if let (Some(a), Value::Object(b)) = (msg.as_object_mut(), file_json) {
        a.extend(b);
    }
    if let Some(c) = caption {
        let visible = match parse_mode.as_deref() {
            Some(pm) if pm.eq_ignore_ascii_case("html") => parse_html(&c).unwrap_or_default(),
            _ => c,
        };
        msg["caption"] = json!(visible);
    }
    if let Some(t) = thread {
        msg["message_thread_id"] = json!(t);
    }
    Ok(msg)
}

async fn get_updates(sim: &Sim, params: &Params) -> Result<Value, TgError> {
    if sim.telegram.lock().webhook.is_some() {
        return Err(TgError {
            status: 409,
            description: "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first".into(),
            parameters: None,
        });
    }
    let offset = params.i64("offset")?;
    let limit = params.i64("limit")?.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = params.i64("timeout")?.unwrap_or(0).clamp(0, 50) as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = sim.telegram.notify.notified();
        {
            let mut g = sim.telegram.lock();
            match offset {
                Some(o) if o < 0 => {
                    let keep = o.unsigned_abs() as usize;
                    while g.updates.len() > keep {
                        g.updates.pop_front();
                    }
                }
                Some(o) => {
                    while g
                        .updates
                        .front()
                        .is_some_and(|u| u["update_id"].as_i64().unwrap_or(0) < o)
                    {
                        g.updates.pop_front();
                    }
                }
                None => {}
            }
            if !g.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                let out: Vec<Value> = g.updates.iter().take(limit).cloned().collect();
                return Ok(Value::Array(out));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok(json!([]));
        }
    }
}

fn set_webhook(sim: &Sim, params: &Params) -> Result<Value, TgError> {
    let url = params.str("url").unwrap_or_default();
    let secret = params.str("secret_token");
    if let Some(s) = &secret
        && (s.is_empty()
            || s.len() > 256
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return Err(bad("secret token contains unallowed characters"));
    }
    let mut g = sim.telegram.lock();
    if url.is_empty() {
        g.webhook = None;
        return Ok(json!(true));
    }
    if !url.starts_with("https://") {
        return Err(bad(
            "bad webhook: An HTTPS URL must be provided for webhook",
        ));
    }
    if params
        .str("drop_pending_updates")
        .is_some_and(|s| s == "true")
    {
        g.updates.clear();
    }
    g.webhook = Some((url, secret));
    Ok(json!(true))
}

fn set_my_commands(sim: &Sim, params: &Params) -> Result<Value, TgError> {
    let Some(Value::Array(cmds)) = params.json("commands") else {
        return Err(bad("parameter \"commands\" is required"));
    };
    if cmds.len() > 100 {
        return Err(bad("too many commands"));
    }
    for c in &cmds {
        let name = c.get("command").and_then(Value::as_str).unwrap_or_default();
        let desc = c
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        {
            return Err(bad("BOT_COMMAND_INVALID"));
        }
        let dl = desc.chars().count();
        if !(1..=256).contains(&dl) {
            return Err(bad("command description must be 1-256 characters"));
        }
    }
    sim.telegram.lock().commands = cmds;
    Ok(json!(true))
}

/// Tags the HTML parse mode accepts.
const ALLOWED_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
    "tg-time",
];

/// Parses Telegram HTML like the Bot API does and returns the visible text, or a description of
/// the first problem (unsupported tag, bad nesting, unclosed tag, unknown entity).
pub fn parse_html(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut stack: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let c = bytes[i];
        if c == b'<' {
            let Some(end_rel) = text[i..].find('>') else {
                return Err(format!("Unclosed start tag at byte offset {i}"));
            };
            let inner = &text[i + 1..i + end_rel];
            if let Some(name) = inner.strip_prefix('/') {
                let name = name.trim().to_ascii_lowercase();
                match stack.pop() {
                    Some(open) if open == name => {}
                    Some(open) => {
                        return Err(format!(
                            "Unmatched end tag at byte offset {i}, expected \"</{open}>\", found \"</{name}>\""
                        ));
                    }
                    None => {
                        return Err(format!(
                            "Unexpected end tag at byte offset {i}: \"</{name}>\""
                        ));
                    }
                }
            } else {
                let name_end = inner
                    .find(|ch: char| ch.is_whitespace() || ch == '/')
                    .unwrap_or(inner.len());
                let name = inner[..name_end].to_ascii_lowercase();
                let attrs = &inner[name_end..];
                if !ALLOWED_TAGS.contains(&name.as_str()) {
                    return Err(format!(
                        "Unsupported start tag \"{name}\" at byte offset {i}"
                    ));
                }
                if name == "span" && !attrs.contains("tg-spoiler") {
                    return Err(format!(
                        "Tag \"span\" must have class \"tg-spoiler\" at byte offset {i}"
                    ));
                }
                if name == "a" && !attrs.contains("href") {
                    return Err(format!("Tag \"a\" must have href at byte offset {i}"));
                }
                if !attrs.matches('"').count().is_multiple_of(2) {
                    return Err(format!("Unclosed attribute value at byte offset {i}"));
                }
                if stack.iter().any(|t| t == "code") {
                    return Err(format!(
                        "Can't use tag \"{name}\" inside \"code\" at byte offset {i}"
                    ));
                }
                if stack.last().is_some_and(|t| t == "pre") && name != "code" {
                    return Err(format!(
                        "Can't use tag \"{name}\" inside \"pre\" at byte offset {i}"
                    ));
                }
                if stack.iter().any(|t| t == "pre") && name != "code" {
                    return Err(format!(
                        "Can't use tag \"{name}\" inside \"pre\" at byte offset {i}"
                    ));
                }
                if (name == "a" || name == "blockquote") && stack.contains(&name) {
                    return Err(format!(
                        "Can't nest tag \"{name}\" in itself at byte offset {i}"
                    ));
                }
                stack.push(name);
            }
            i += end_rel + 1;
        } else if c == b'&' {
            let rest = &text[i + 1..];
            let ent_end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '#'))
                .unwrap_or(rest.len());
            if ent_end > 0 && rest[ent_end..].starts_with(';') {
                let ent = &rest[..ent_end];
                let decoded = match ent {
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "amp" => Some('&'),
                    "quot" => Some('"'),
                    _ if ent.starts_with("#x") || ent.starts_with("#X") => {
                        u32::from_str_radix(&ent[2..], 16)
                            .ok()
                            .and_then(char::from_u32)
                    }
                    _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
                    _ => None,
                };
                match decoded {
                    Some(ch) => {
                        out.push(ch);
                        i += ent_end + 2;
                    }
                    None => {
                        return Err(format!(
                            "Unsupported HTML entity \"&{ent};\" at byte offset {i}"
                        ));
                    }
                }
            } else {
                out.push('&');
                i += 1;
            }
        } else {
            let ch = text[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{open}\""
        ));
    }
    Ok(out)
}
