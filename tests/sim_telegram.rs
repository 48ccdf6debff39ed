//! Raw HTTP conformance of the Telegram Bot API fake with the fact sheet.

mod common;

use dozor_sim::{Faults, SimHandle, SimOptions, System};
use serde_json::{Value, json};

async fn start(enforce: bool) -> SimHandle {
    common::start_sim(SimOptions {
        enforce_limits: enforce,
        ..common::sim_opts(3)
    })
    .await
}

fn url(h: &SimHandle, method: &str) -> String {
    format!(
        "{}/bot{}/{method}",
        h.telegram_url(),
        h.sim.creds.telegram_bot_token
    )
}

async fn post_json(h: &SimHandle, method: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url(h, method))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A 1x1 PNG.
fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&[8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89]);
    v
}

#[tokio::test]
async fn envelope_get_me_and_wrong_token() {
    let h = start(false).await;
    let (s, v) = post_json(&h, "getMe", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"]["is_bot"], true);
    assert_eq!(v["result"]["id"], 123456789);
    // GET with query string works too, method names are case-insensitive.
    let r = reqwest::get(url(&h, "getme")).await.unwrap();
    assert_eq!(r.status(), 200);

    let bad = format!("{}/bot123456789:WRONG/getMe", h.telegram_url());
    let r = reqwest::get(bad).await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
    // The path segment must start with "bot".
    let r = reqwest::get(format!(
        "{}/{}/getMe",
        h.telegram_url(),
        h.sim.creds.telegram_bot_token
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let (s, v) = post_json(&h, "noSuchMethod", json!({})).await;
    assert_eq!(s, 404);
    assert_eq!(v["ok"], false);
}

#[tokio::test]
async fn send_message_limits_html_and_recording() {
    let h = start(false).await;
    let (s, v) = post_json(
        &h,
        "sendMessage",
        json!({"chat_id": -1001234567890i64, "message_thread_id": 7, "parse_mode": "HTML",
               "text": "<b>Отчёт</b> &amp; <a href=\"https://x.ru/?a=1&amp;b=2\">ссылка</a>\n<pre><code class=\"language-text\">a &lt; b</code></pre>"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["text"], "Отчёт & ссылка\na < b");
    assert_eq!(v["result"]["message_thread_id"], 7);
    assert_eq!(v["result"]["chat"]["id"], -1001234567890i64);

    // 4096 visible characters are fine even with lots of markup; 4097 are not.
    let ok_text = format!("<b>{}</b>", "я".repeat(4096));
    let (s, _) = post_json(
        &h,
        "sendMessage",
        json!({"chat_id": 42, "parse_mode": "HTML", "text": ok_text}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = post_json(
        &h,
        "sendMessage",
        json!({"chat_id": 42, "text": "x".repeat(4097)}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["description"], "Bad Request: message is too long");
    assert_eq!(v["error_code"], 400);
    // Entities count as one character.
    let (s, _) = post_json(
        &h,
        "sendMessage",
        json!({"chat_id": 42, "parse_mode": "HTML", "text": "&lt;".repeat(4096)}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = post_json(&h, "sendMessage", json!({"chat_id": 42, "text": ""})).await;
    assert_eq!(s, 400, "{v}");

    for bad in [
        "line<br>break",
        "<b>bold <i>overlap</b></i>",
        "<b>unclosed",
        "a < b",
        "<div>x</div>",
        "<code><b>x</b></code>",
        "&nbsp;",
        "<span>no class</span>",
    ] {
        let (s, v) = post_json(
            &h,
            "sendMessage",
            json!({"chat_id": 42, "parse_mode": "HTML", "text": bad}),
        )
        .await;
        assert_eq!(s, 400, "{bad}");
        assert!(
            v["description"]
                .as_str()
                .unwrap()
                .starts_with("Bad Request: can't parse entities: "),
            "{bad}: {v}"
        );
    }
    // Without parse_mode the same text is plain.
    let (s, _) = post_json(
        &h,
        "sendMessage",
        json!({"chat_id": 42, "text": "a < b <br>"}),
    )
    .await;
    assert_eq!(s, 200);

    // Form encoding works too.
    let r = reqwest::Client::new()
        .post(url(&h, "sendMessage"))
        .form(&[("chat_id", "42"), ("text", "form body")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Unknown chats.
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/unknown_chats", h.telegram_url()))
        .json(&json!({"chat_id": 555}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, v) = post_json(&h, "sendMessage", json!({"chat_id": 555, "text": "hi"})).await;
    assert_eq!(s, 400);
    assert_eq!(v["description"], "Bad Request: chat not found");

    // Everything accepted is recorded, in order; rejected ones are not.
    let msgs = h.sim.telegram.messages();
    assert_eq!(msgs.len(), 5);
    assert_eq!(h.sim.telegram.sent_count(), 5);
    assert_eq!(msgs[0].chat_id, -1001234567890);
    assert_eq!(msgs[0].thread, Some(7));
    assert_eq!(msgs[0].parse_mode.as_deref(), Some("HTML"));
    assert!(msgs[0].text.as_deref().unwrap().starts_with("<b>Отчёт</b>"));
    assert_eq!(msgs[4].text.as_deref(), Some("form body"));
    let listed: Value = reqwest::get(format!("{}/_sim/messages", h.telegram_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 5);
    let r = reqwest::Client::new()
        .delete(format!("{}/_sim/messages", h.telegram_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(h.sim.telegram.sent_count(), 0);
}

#[tokio::test]
async fn send_photo_multipart() {
    let h = start(false).await;
    let form = reqwest::multipart::Form::new()
        .text("chat_id", "-100777")
        .text("caption", "<b>Воронка</b>")
        .text("parse_mode", "HTML")
        .part(
            "photo",
            reqwest::multipart::Part::bytes(png())
                .file_name("chart.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let r = reqwest::Client::new()
        .post(url(&h, "sendPhoto"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["caption"], "Воронка");
    assert_eq!(v["result"]["photo"][0]["width"], 1);
    let m = &h.sim.telegram.messages()[0];
    assert_eq!(m.kind, "photo");
    assert_eq!(m.photo_len, Some(png().len()));
    assert_eq!(m.content_type.as_deref(), Some("image/png"));
    assert_eq!(m.text.as_deref(), Some("<b>Воронка</b>"));

    // Not an image.
    let form = reqwest::multipart::Form::new().text("chat_id", "1").part(
        "photo",
        reqwest::multipart::Part::bytes(b"%PDF-1.4 not a picture".to_vec()).file_name("x.png"),
    );
    let r = reqwest::Client::new()
        .post(url(&h, "sendPhoto"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Caption over 1024.
    let form = reqwest::multipart::Form::new()
        .text("chat_id", "1")
        .text("caption", "c".repeat(1025))
        .part(
            "photo",
            reqwest::multipart::Part::bytes(png()).file_name("x.png"),
        );
    let r = reqwest::Client::new()
        .post(url(&h, "sendPhoto"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["description"], "Bad Request: message caption is too long");
    // No file at all.
    let (s, _) = post_json(&h, "sendPhoto", json!({"chat_id": 1})).await;
    assert_eq!(s, 400);
    // Documents take any bytes.
    let form = reqwest::multipart::Form::new().text("chat_id", "1").part(
        "document",
        reqwest::multipart::Part::bytes(b"a,b\n1,2\n".to_vec())
            .file_name("report.csv")
            .mime_str("text/csv")
            .unwrap(),
    );
    let r = reqwest::Client::new()
        .post(url(&h, "sendDocument"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.sim.telegram.sent_count(), 2);
    // A file referred to as `attach://<name>` (how teloxide uploads).
    let form = reqwest::multipart::Form::new()
        .text("chat_id", "1")
        .text("photo", "attach://f0")
        .part(
            "f0",
            reqwest::multipart::Part::bytes(png()).file_name("chart.png"),
        );
    let r = reqwest::Client::new()
        .post(url(&h, "sendPhoto"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = h.sim.telegram.messages().pop().unwrap();
    assert_eq!(m.kind, "photo");
    assert_eq!(m.photo_len, Some(png().len()));
    assert_eq!(m.file_name.as_deref(), Some("chart.png"));
}

#[tokio::test]
async fn planned_send_failures() {
    let h = start(false).await;
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/fail_sends", h.telegram_url()))
        .json(&json!({"after_ok": 1, "count": 2, "throttle": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut codes = Vec::new();
    for i in 0..4 {
        let (s, v) = post_json(
            &h,
            "sendMessage",
            json!({"chat_id": 1, "text": format!("m{i}")}),
        )
        .await;
        if s == 502 {
            assert_eq!(v["ok"], false);
        }
        codes.push(s);
    }
    assert_eq!(codes, [200, 502, 502, 200]);
    h.sim.telegram.fail_sends(0, 1, true);
    let (s, v) = post_json(&h, "sendMessage", json!({"chat_id": 1, "text": "x"})).await;
    assert_eq!(s, 429);
    assert_eq!(v["parameters"]["retry_after"], 1);
    assert_eq!(h.sim.telegram.sent_count(), 2);
}

#[tokio::test]
async fn pacing_answers_429_with_retry_after() {
    let h = start(true).await;
    // A group: 20 per minute.
    let mut codes = Vec::new();
    let mut retry = None;
    for i in 0..22 {
        let (s, v) = post_json(
            &h,
            "sendMessage",
            json!({"chat_id": -100500, "text": format!("m{i}")}),
        )
        .await;
        if s == 429 {
            retry = v["parameters"]["retry_after"].as_u64();
            assert!(
                v["description"]
                    .as_str()
                    .unwrap()
                    .starts_with("Too Many Requests: retry after")
            );
        }
        codes.push(s);
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 20);
    assert_eq!(codes[20], 429);
    assert!(retry.unwrap() >= 1);
    // A private chat: a short burst, then one per second.
    let burst = (0..5).map(|i| {
        post_json(
            &h,
            "sendMessage",
            json!({"chat_id": 77, "text": format!("p{i}")}),
        )
    });
    let private: Vec<u16> = futures::future::join_all(burst)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        private.iter().filter(|c| **c == 200).count(),
        3,
        "{private:?}"
    );
    assert!(private.contains(&429), "{private:?}");
    assert_eq!(
        h.sim.telegram.sent_count(),
        20 + private.iter().filter(|c| **c == 200).count()
    );

    // Injected faults.
    h.sim.set_faults(
        System::Telegram,
        Faults {
            http_5xx: 1,
            throttle: 1,
            malformed_json: 1,
            ..Default::default()
        },
    );
    let r = reqwest::get(url(&h, "getMe")).await.unwrap();
    assert_eq!(r.status(), 502);
    let r = reqwest::get(url(&h, "getMe")).await.unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["parameters"]["retry_after"], 1);
    let r = reqwest::get(url(&h, "getMe")).await.unwrap();
    assert!(serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).is_err());
}

#[tokio::test]
async fn get_updates_offsets_long_poll_and_webhook_conflict() {
    let h = start(false).await;
    let a = h
        .sim
        .telegram
        .push_update(json!({"chat_id": 10, "text": "/report", "from_id": 10}));
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/updates", h.telegram_url()))
        .json(&json!({"message": {"chat": {"id": -100, "type": "supergroup"}, "text": "hello", "date": 0}}))
        .send()
        .await
        .unwrap();
    let b = r.json::<Value>().await.unwrap()["update_id"]
        .as_i64()
        .unwrap();
    assert_eq!(b, a + 1);

    let (_, v) = post_json(&h, "getUpdates", json!({})).await;
    let ups = v["result"].as_array().unwrap();
    assert_eq!(ups.len(), 2);
    assert_eq!(ups[0]["update_id"], a);
    assert_eq!(ups[0]["message"]["text"], "/report");
    assert_eq!(ups[0]["message"]["chat"]["id"], 10);
    assert_eq!(ups[0]["message"]["entities"][0]["type"], "bot_command");
    assert_eq!(ups[1]["message"]["chat"]["id"], -100);
    // Without an offset nothing is confirmed.
    let (_, v) = post_json(&h, "getUpdates", json!({"limit": 1})).await;
    assert_eq!(v["result"].as_array().unwrap().len(), 1);
    assert_eq!(v["result"][0]["update_id"], a);
    // offset = last + 1 confirms everything below.
    let (_, v) = post_json(&h, "getUpdates", json!({"offset": a + 1})).await;
    assert_eq!(v["result"].as_array().unwrap().len(), 1);
    assert_eq!(v["result"][0]["update_id"], b);
    let (_, v) = post_json(&h, "getUpdates", json!({"offset": b + 1, "timeout": 0})).await;
    assert!(v["result"].as_array().unwrap().is_empty());

    // Long poll returns as soon as an update arrives.
    let sim2 = h.sim.clone();
    let pusher = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sim2.telegram
            .push_update(json!({"chat_id": 10, "text": "late"}))
    });
    let t0 = std::time::Instant::now();
    let (_, v) = post_json(&h, "getUpdates", json!({"offset": b + 1, "timeout": 10})).await;
    let late = pusher.await.unwrap();
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(v["result"][0]["update_id"], late);
    assert_eq!(v["result"][0]["message"]["text"], "late");
    // And times out empty after `timeout` seconds.
    let t0 = std::time::Instant::now();
    let (_, v) = post_json(&h, "getUpdates", json!({"offset": late + 1, "timeout": 1})).await;
    assert!(v["result"].as_array().unwrap().is_empty());
    assert!(t0.elapsed() >= std::time::Duration::from_millis(900));

    // Webhook set → getUpdates conflicts.
    let (s, _) = post_json(
        &h,
        "setWebhook",
        json!({"url": "http://insecure.example/x"}),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = post_json(
        &h,
        "setWebhook",
        json!({"url": "https://dozor.example/tg", "secret_token": "abc_DEF-1"}),
    )
    .await;
    assert_eq!(s, 200);
    let (_, v) = post_json(&h, "getWebhookInfo", json!({})).await;
    assert_eq!(v["result"]["url"], "https://dozor.example/tg");
    let (s, v) = post_json(&h, "getUpdates", json!({})).await;
    assert_eq!(s, 409);
    assert!(v["description"].as_str().unwrap().starts_with("Conflict"));
    let (s, _) = post_json(&h, "deleteWebhook", json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = post_json(&h, "getUpdates", json!({})).await;
    assert_eq!(s, 200);

    // setMyCommands validates names.
    let (s, _) = post_json(
        &h,
        "setMyCommands",
        json!({"commands": [{"command": "report", "description": "Отчёт"}]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h.sim.telegram.commands().len(), 1);
    let (s, _) = post_json(
        &h,
        "setMyCommands",
        json!({"commands": [{"command": "Report", "description": "x"}]}),
    )
    .await;
    assert_eq!(s, 400);
}
