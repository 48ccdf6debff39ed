//! Contract: Telegram Bot API.
//!
//! Page: https://core.telegram.org/bots/api, read as the archived copy in
//! github.com/spontanurlaub/telegram-bot-api-log (file `api`, Bot API 6.9) — sections "Making
//! requests" (the `{ok, result}` / `{ok: false, error_code, description, parameters}`
//! envelope, "All methods in the Bot API are case-insensitive"), "Getting updates" (Update,
//! getUpdates, setWebhook, deleteWebhook), "Available types" (User, Chat, Message, PhotoSize,
//! CallbackQuery, ChatMemberUpdated, ResponseParameters, BotCommand) and "Available methods"
//! (getMe, sendMessage, sendPhoto, setMyCommands). The error descriptions are the ones the
//! Bot API sends ("Too Many Requests: retry after N", "Forbidden: bot was blocked by the
//! user", "Bad Request: chat not found", "Bad Request: message is too long", "Bad Request:
//! group chat was upgraded to a supergroup chat" with `migrate_to_chat_id`, "Conflict:
//! terminated by other getUpdates request…", "Unauthorized"); the page itself documents only
//! the envelope and ResponseParameters, not the texts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dozor::config::{Lang, Secret, TelegramConfig};
use dozor::http::ErrorKind;
use dozor::notify::telegram::Telegram;
use dozor_sim::SimHandle;
use serde_json::{Value, json};

use super::replay::{Answer, Asked, Docs, assert_same_shape};

const TOKEN: &str = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11";

fn client_at(api_url: String, token: &str) -> Telegram {
    Telegram::new(&TelegramConfig {
        bot_token: Some(Secret::new(token)),
        bot_token_file: None,
        api_url,
        owner_chat: Some(42),
        head_of_sales_chat: None,
        ops_chat: None,
        report_topic: None,
        managers: BTreeMap::new(),
        allowed_chats: Vec::new(),
    })
    .with_chat_interval(Duration::ZERO)
}

fn client(docs: &Docs) -> Telegram {
    client_at(docs.base.clone(), TOKEN)
}

/// "Making requests": `{"ok": true, "result": …}`.
fn ok(result: Value) -> Answer {
    Answer::json(json!({"ok": true, "result": result}))
}

/// "Making requests": `{"ok": false, "error_code": …, "description": …}` (+ `parameters`).
fn failed(status: u16, description: &str, parameters: Option<Value>) -> Answer {
    let mut body = json!({"ok": false, "error_code": status, "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    Answer::status_json(status, body)
}

/// A Message as the page's "Message" table has it for a message the bot sent to a group:
/// `message_id`, `from` (User: `id`, `is_bot`, `first_name`, `username`), `date`, `chat`
/// (Chat: `id`, `type`, `title`) and `text`; optional fields absent.
fn docs_message(chat_id: i64, text: &str) -> Value {
    json!({
        "message_id": 777,
        "from": {"id": 123456, "is_bot": true, "first_name": "Dozor", "username": "dozor_bot"},
        "chat": {"id": chat_id, "type": "supergroup", "title": "Отдел продаж"},
        "date": 1_773_216_000,
        "text": text
    })
}

/// The method a request went to: `/bot<token>/METHOD_NAME` ("Making requests").
fn method_of(a: &Asked) -> String {
    a.path().rsplit('/').next().unwrap_or_default().to_string()
}

/// "Making requests": `https://api.telegram.org/bot<token>/METHOD_NAME`, POST with an
/// application/json body; sendMessage's `chat_id`, `text`, `parse_mode` and
/// `message_thread_id` ("for forum supergroups only"); "On success, the sent Message is
/// returned" and its `message_id` is what dozor keeps.
#[tokio::test]
async fn send_message_request_and_answer() {
    let docs =
        Docs::start(|a| ok(docs_message(a.json()["chat_id"].as_i64().unwrap(), "Отчёт"))).await;
    let id = client(&docs)
        .send_message(-1_001_234_567_890, Some(15), "<b>Отчёт</b> за день")
        .await
        .unwrap();
    assert_eq!(id, 777);
    let a = &docs.asked()[0];
    assert_eq!(a.method, "POST");
    assert_eq!(a.path(), format!("/bot{TOKEN}/sendMessage"));
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body = a.json();
    assert_eq!(body["chat_id"], -1_001_234_567_890i64);
    assert_eq!(body["text"], "<b>Отчёт</b> за день");
    assert_eq!(body["parse_mode"], "HTML");
    assert_eq!(body["message_thread_id"], 15);
}

/// sendMessage: `text` is "1-4096 characters after entities parsing". A longer report goes
/// out as several sendMessage calls, each within the limit, in order.
#[tokio::test]
async fn long_text_is_sent_in_parts_within_4096_characters() {
    let docs = Docs::start(|a| ok(docs_message(42, a.json()["text"].as_str().unwrap()))).await;
    let line = "Менеджер: 12 звонков, 3 сделки\n";
    let html = line.repeat(400);
    client(&docs).send_message(42, None, &html).await.unwrap();
    let asked = docs.asked();
    assert!(asked.len() >= 3, "{}", asked.len());
    let mut joined = String::new();
    for a in &asked {
        let text = a.json()["text"].as_str().unwrap().to_string();
        assert!(text.encode_utf16().count() <= 4096);
        assert!(!text.trim().is_empty());
        joined.push_str(&text);
    }
    assert_eq!(joined.matches("Менеджер").count(), 400);
}

/// sendPhoto: "multipart/form-data (use to upload files)"; `photo` as an InputFile,
/// `chat_id`, `caption` ("0-1024 characters after entities parsing"), `parse_mode`,
/// `message_thread_id`. The answer is a Message whose `photo` is an "Array of PhotoSize"
/// (`file_id`, `file_unique_id`, `width`, `height`, `file_size`).
#[tokio::test]
async fn send_photo_is_a_multipart_upload() {
    let docs = Docs::start(|_| {
        let mut m = docs_message(42, "");
        m.as_object_mut().unwrap().remove("text");
        m["photo"] = json!([
            {"file_id": "AgAC-small", "file_unique_id": "AQAD-s", "width": 90, "height": 60, "file_size": 1200},
            {"file_id": "AgAC-big", "file_unique_id": "AQAD-b", "width": 800, "height": 533, "file_size": 40000}
        ]);
        m["caption"] = json!("Воронка за неделю");
        ok(m)
    })
    .await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0".to_vec();
    let id = client(&docs)
        .send_photo(42, Some(7), png, "<b>Воронка</b> за неделю")
        .await
        .unwrap();
    assert_eq!(id, 777);
    let a = &docs.asked()[0];
    assert_eq!(method_of(a), "sendPhoto");
    let ct = a.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("multipart/form-data"), "{ct}");
    let body = String::from_utf8_lossy(&a.body);
    for part in [
        "chat_id",
        "photo",
        "caption",
        "parse_mode",
        "message_thread_id",
    ] {
        assert!(body.contains(&format!("name=\"{part}\"")), "no {part} part");
    }
    assert!(body.contains("filename=\"chart.png\""));
    assert!(body.contains("<b>Воронка</b> за неделю"));
}

/// Updates of every kind the Update table lists that a sales bot meets: a command message, an
/// `edited_message`, a `callback_query` (CallbackQuery: `id`, `from`, `chat_instance`,
/// `data`), a `my_chat_member` (ChatMemberUpdated: the bot blocked in a private chat) and a
/// forum-topic message without `from` and `text` (`sender_chat`, `photo`).
fn documented_updates() -> Value {
    json!([
        {"update_id": 500, "message": {
            "message_id": 10, "date": 1_773_216_000,
            "from": {"id": 1001, "is_bot": false, "first_name": "Ольга", "language_code": "ru"},
            "chat": {"id": 1001, "type": "private", "first_name": "Ольга"},
            "text": "/report week",
            "entities": [{"type": "bot_command", "offset": 0, "length": 7}]}},
        {"update_id": 501, "edited_message": {
            "message_id": 10, "date": 1_773_216_000, "edit_date": 1_773_216_060,
            "chat": {"id": 1001, "type": "private"}, "text": "/report day"}},
        {"update_id": 502, "callback_query": {
            "id": "4382bfdwdsb323b2d9", "chat_instance": "-1234",
            "from": {"id": 1001, "is_bot": false, "first_name": "Ольга"},
            "data": "approve:1"}},
        {"update_id": 503, "my_chat_member": {
            "chat": {"id": 1001, "type": "private"},
            "from": {"id": 1001, "is_bot": false, "first_name": "Ольга"},
            "date": 1_773_216_100,
            "old_chat_member": {"status": "member", "user": {"id": 123456, "is_bot": true, "first_name": "Dozor"}},
            "new_chat_member": {"status": "kicked", "until_date": 0, "user": {"id": 123456, "is_bot": true, "first_name": "Dozor"}}}},
        {"update_id": 504, "message": {
            "message_id": 11, "date": 1_773_216_200,
            "sender_chat": {"id": -1_001_234_567_890i64, "type": "channel", "title": "Новости"},
            "chat": {"id": -1_001_234_567_890i64, "type": "supergroup", "title": "Отдел продаж", "is_forum": true},
            "message_thread_id": 3, "is_topic_message": true,
            "photo": [{"file_id": "x", "file_unique_id": "y", "width": 1, "height": 1}]}}
    ])
}

/// getUpdates: `offset` ("greater by one than the highest among the identifiers of previously
/// received updates"), `timeout`, `allowed_updates`; "Returns an Array of Update objects".
/// The Update table: "At most one of the optional parameters can be present" — besides
/// `message` an update may carry `edited_message`, `callback_query`, `my_chat_member`, …; and
/// in a Message `from` is optional ("empty for messages sent to channels") and so is `text`.
/// Every update is returned with its id (so the offset moves past it); only messages are read.
#[tokio::test]
async fn get_updates_reads_every_documented_update_kind() {
    let docs = Docs::start(|_| ok(documented_updates())).await;
    let updates = client(&docs).get_updates(Some(500), 30).await.unwrap();
    let ids: Vec<i64> = updates.iter().map(|u| u.update_id).collect();
    assert_eq!(ids, [500, 501, 502, 503, 504]);
    let m = updates[0].message.as_ref().unwrap();
    assert_eq!(m.text.as_deref(), Some("/report week"));
    assert_eq!(m.chat.id, 1001);
    assert_eq!(m.from.as_ref().unwrap().id, 1001);
    assert!(updates[1].message.is_none() && updates[2].message.is_none());
    let m = updates[4].message.as_ref().unwrap();
    assert!(m.from.is_none() && m.text.is_none());
    assert_eq!(m.message_thread_id, Some(3));
    let body = docs.asked()[0].json();
    assert_eq!(method_of(&docs.asked()[0]), "getUpdates");
    assert_eq!(body["offset"], 500);
    assert!(body["timeout"].as_u64().unwrap() > 0, "long polling");
    assert!(
        body["allowed_updates"]
            .as_array()
            .unwrap()
            .contains(&json!("message"))
    );
}

/// getMe: "Returns basic information about the bot in form of a User object" — `id`,
/// `is_bot`, `first_name` required, the rest optional and absent here.
#[tokio::test]
async fn get_me_reads_a_user_with_only_the_required_fields() {
    let docs =
        Docs::start(|_| ok(json!({"id": 123456, "is_bot": true, "first_name": "Dozor"}))).await;
    let me = client(&docs).get_me().await.unwrap();
    assert_eq!(me.id, 123456);
    assert!(me.is_bot);
    assert_eq!(me.username, None);
    assert_eq!(method_of(&docs.asked()[0]), "getMe");
}

/// setMyCommands: `commands` Array of BotCommand — `command` "1-32 characters. Can contain
/// only lowercase English letters, digits and underscores", `description` "1-256
/// characters"; at most 100. "Returns True on success."
#[tokio::test]
async fn set_my_commands_sends_valid_bot_commands() {
    let docs = Docs::start(|_| ok(json!(true))).await;
    let tg = client(&docs);
    for lang in [Lang::Ru, Lang::En] {
        tg.set_my_commands(&dozor::bot::commands(lang))
            .await
            .unwrap();
    }
    for a in docs.asked() {
        assert_eq!(method_of(&a), "setMyCommands");
        let cmds = a.json()["commands"].as_array().unwrap().clone();
        assert!(!cmds.is_empty() && cmds.len() <= 100);
        for c in cmds {
            let name = c["command"].as_str().unwrap();
            assert!((1..=32).contains(&name.len()), "{name}");
            assert!(
                name.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                "{name}"
            );
            let d = c["description"].as_str().unwrap().chars().count();
            assert!((1..=256).contains(&d));
        }
    }
}

/// deleteWebhook: "Use this method to remove webhook integration if you decide to switch back
/// to getUpdates. Returns True on success."
#[tokio::test]
async fn delete_webhook_reads_true() {
    let docs = Docs::start(|_| ok(json!(true))).await;
    client(&docs).delete_webhook().await.unwrap();
    assert_eq!(method_of(&docs.asked()[0]), "deleteWebhook");
}

/// ResponseParameters `retry_after`: "In case of exceeding flood control, the number of
/// seconds left to wait before the request can be repeated". 429 "Too Many Requests: retry
/// after 1" → dozor waits a second and repeats the same request.
#[tokio::test]
async fn flood_control_waits_retry_after_and_repeats() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let docs = Docs::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            failed(
                429,
                "Too Many Requests: retry after 1",
                Some(json!({"retry_after": 1})),
            )
        } else {
            ok(docs_message(42, "Отчёт"))
        }
    })
    .await;
    let t0 = Instant::now();
    client(&docs).send_message(42, None, "Отчёт").await.unwrap();
    let asked = docs.asked();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0].body, asked[1].body, "the same request");
    assert!(t0.elapsed() >= Duration::from_millis(950));
}

/// ResponseParameters `migrate_to_chat_id`: "The group has been migrated to a supergroup with
/// the specified identifier" (up to 52 significant bits). The error names the new id.
#[tokio::test]
async fn migrated_group_names_the_new_chat_id() {
    let docs = Docs::start(|_| {
        failed(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            Some(json!({"migrate_to_chat_id": -1_001_234_567_890i64})),
        )
    })
    .await;
    let e = client(&docs)
        .send_message(-4_512_345, None, "Отчёт")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert_eq!(e.status, Some(400));
    assert!(e.to_string().contains("-1001234567890"), "{e}");
    assert_eq!(docs.asked().len(), 1);
}

/// The error envelope ("ok equals false and the error is explained in the description") for
/// the refusals a reporting bot meets: blocked by the user (403), unknown chat (400), text
/// too long (400), a second poller (409). Each is permanent, asked once, and keeps the
/// description.
#[tokio::test]
async fn documented_refusals_are_permanent_and_not_retried() {
    let cases = [
        (403, "Forbidden: bot was blocked by the user"),
        (403, "Forbidden: bot was kicked from the group chat"),
        (400, "Bad Request: chat not found"),
        (400, "Bad Request: message is too long"),
        (
            400,
            "Bad Request: can't parse entities: Unsupported start tag \"br\" at byte offset 5",
        ),
    ];
    for (status, description) in cases {
        let docs = Docs::start(move |_| failed(status, description, None)).await;
        let e = client(&docs)
            .send_message(42, None, "Отчёт")
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{description}: {e}");
        assert_eq!(e.status, Some(status), "{description}");
        assert!(
            e.to_string()
                .contains(description.split(':').nth(1).unwrap().trim()),
            "{e}"
        );
        assert!(!e.to_string().contains(TOKEN), "{e}");
        assert_eq!(docs.asked().len(), 1, "{description}");
    }
    let docs = Docs::start(|_| {
        failed(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
            None,
        )
    })
    .await;
    let e = client(&docs).get_updates(None, 1).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert_eq!(e.status, Some(409));
}

/// A refused token: 401 "Unauthorized". An authentication error whose text never holds the
/// token (which is part of every request URL).
#[tokio::test]
async fn unauthorized_is_an_auth_error_without_the_token() {
    let docs = Docs::start(|_| failed(401, "Unauthorized", None)).await;
    let e = client(&docs).get_me().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.status, Some(401));
    assert!(!format!("{e} {e:?}").contains("ABC-DEF1234ghIkl"), "{e:?}");
    assert_eq!(docs.asked().len(), 1);
}

/// A server-side failure (5xx with the error envelope) is asked again, and the answer after
/// it is used.
#[tokio::test]
async fn server_errors_are_retried() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let docs = Docs::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            failed(502, "Bad Gateway", None)
        } else {
            ok(docs_message(42, "Отчёт"))
        }
    })
    .await;
    assert_eq!(
        client(&docs).send_message(42, None, "Отчёт").await.unwrap(),
        777
    );
    assert_eq!(docs.asked().len(), 2);
}

/// setWebhook: "Whenever there is an update for the bot, we will send an HTTPS POST request
/// to the specified URL, containing a JSON-serialized Update". dozor's webhook receiver
/// accepts every documented update kind, the ones it does not act on included, by its
/// `update_id`; it never refuses an update for a documented optional field being absent.
#[test]
fn webhook_deliveries_of_every_documented_update_are_accepted() {
    for u in documented_updates().as_array().unwrap() {
        let got = dozor::service::server::webhooks::fuzzing::telegram(u.to_string().as_bytes());
        assert_eq!(got, Ok(format!("update {}", u["update_id"])), "{u}");
    }
}

// ---- the simulator answers the documented requests in the documented shape ----

async fn sim() -> SimHandle {
    crate::common::small_sim(51).await
}

async fn bot(h: &SimHandle, method: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/bot{}/{method}",
            h.telegram_url(),
            h.sim.creds.telegram_bot_token
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// sendMessage → `{"ok": true, "result": Message}` with the Message fields of the page
/// (`message_id`, `from` User, `chat` Chat, `date`, `text`).
#[tokio::test]
async fn sim_send_message_answers_a_documented_message() {
    let h = sim().await;
    let (status, v) = bot(
        &h,
        "sendMessage",
        json!({"chat_id": -1_001_234_567_890i64, "text": "<b>Отчёт</b>", "parse_mode": "HTML"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_same_shape(
        &json!({"ok": true, "result": docs_message(-1, "Отчёт")}),
        &v,
        "",
    );
    assert_eq!(
        v["result"]["text"], "Отчёт",
        "the text after entities parsing"
    );
    h.stop().await;
}

/// "All methods in the Bot API are case-insensitive": `getme` answers like `getMe`, with a
/// User (`id`, `is_bot`, `first_name`, `username`).
#[tokio::test]
async fn sim_methods_are_case_insensitive_and_get_me_is_a_user() {
    let h = sim().await;
    let docs = json!({"ok": true, "result": {"id": 123456, "is_bot": true,
                                              "first_name": "Dozor", "username": "dozor_bot"}});
    for m in ["getMe", "getme", "GETME"] {
        let (status, v) = bot(&h, m, json!({})).await;
        assert_eq!(status, 200, "{m}: {v}");
        assert_same_shape(&docs, &v, m);
    }
    h.stop().await;
}

/// The error envelope `{"ok": false, "error_code": Integer, "description": String}` for an
/// unknown chat and for a text past 4096 characters.
#[tokio::test]
async fn sim_refusals_use_the_documented_envelope() {
    let h = sim().await;
    let envelope =
        json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"});
    h.sim.telegram.mark_chat_unknown(-777);
    let (status, v) = bot(&h, "sendMessage", json!({"chat_id": -777, "text": "x"})).await;
    assert_eq!(status, 400);
    assert_same_shape(&envelope, &v, "");
    assert_eq!(v["description"], "Bad Request: chat not found");
    let (status, v) = bot(
        &h,
        "sendMessage",
        json!({"chat_id": 42, "text": "ы".repeat(4097)}),
    )
    .await;
    assert_eq!(status, 400);
    assert_same_shape(&envelope, &v, "");
    assert_eq!(v["description"], "Bad Request: message is too long");
    h.stop().await;
}

/// getUpdates after a pushed message → an Array of Update (`update_id` + `message`); with a
/// webhook set, getUpdates is refused ("This method will not work if an outgoing webhook is
/// set up") with 409.
#[tokio::test]
async fn sim_get_updates_answers_documented_updates() {
    let h = sim().await;
    h.sim.telegram.push_update(json!({"message": {
        "message_id": 10, "date": 1_773_216_000,
        "from": {"id": 1001, "is_bot": false, "first_name": "Ольга"},
        "chat": {"id": 1001, "type": "private", "first_name": "Ольга"},
        "text": "/report week"}}));
    let (status, v) = bot(
        &h,
        "getUpdates",
        json!({"timeout": 0, "allowed_updates": ["message"]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let docs = json!({"ok": true, "result": [{"update_id": 500, "message": {
        "message_id": 10, "date": 1_773_216_000,
        "from": {"id": 1001, "is_bot": false, "first_name": "Ольга"},
        "chat": {"id": 1001, "type": "private"}, "text": "/report week"}}]});
    assert_same_shape(&docs, &v, "");
    let (status, v) = bot(
        &h,
        "setWebhook",
        json!({"url": "https://dozor.example.ru/hooks/telegram", "secret_token": "abc_DEF-123"}),
    )
    .await;
    assert_eq!((status, v["result"].clone()), (200, json!(true)));
    let (status, v) = bot(&h, "getUpdates", json!({"timeout": 0})).await;
    assert_eq!(status, 409);
    assert_same_shape(
        &json!({"ok": false, "error_code": 409, "description": "Conflict"}),
        &v,
        "",
    );
    h.stop().await;
}
