//! The Telegram client against the simulator.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dozor::config::{Secret, TelegramConfig};
use dozor::http::ErrorKind;
use dozor::notify::telegram::{Telegram, escape_html};
use dozor_sim::telegram::parse_html;
use dozor_sim::{Faults, SimHandle, SimOptions, System};
use serde_json::json;

async fn start(enforce: bool) -> SimHandle {
    common::start_sim(SimOptions {
        enforce_limits: enforce,
        ..common::sim_opts(5)
    })
    .await
}

fn client(h: &SimHandle, token: &str) -> Telegram {
    Telegram::new(&TelegramConfig {
        bot_token: Some(Secret::new(token)),
        bot_token_file: None,
        api_url: h.telegram_url(),
        owner_chat: Some(42),
        head_of_sales_chat: None,
        ops_chat: None,
        report_topic: None,
        managers: BTreeMap::new(),
        allowed_chats: Vec::new(),
    })
}

fn good(h: &SimHandle) -> Telegram {
    client(h, &h.sim.creds.telegram_bot_token)
}

/// A long HTML report: headings, escaped names, and a <pre> table that spans a cut.
fn long_report() -> String {
    let mut s = String::from("<b>Ежедневный отчёт</b>\n\n");
    for i in 0..120 {
        s.push_str(&format!(
            "<i>{}</i>: <b>{}</b> звонков, {} сделок\n",
            escape_html(&format!("Менеджер №{i} <ООО \"Ромашка\" & Co>")),
            i * 3,
            i % 7
        ));
    }
    s.push_str("<pre>");
    for i in 0..150 {
        s.push_str(&format!(
            "{i:>4} | {:<20} | {:>6}\n",
            "строка таблицы",
            i * 17
        ));
    }
    s.push_str("</pre>\n<b>Итого</b>: всё");
    s
}

#[tokio::test]
async fn long_report_arrives_split_in_order_and_valid() {
    let h = start(true).await;
    let tg = good(&h);
    let me = tg.get_me().await.unwrap();
    assert!(me.is_bot);
    let report = long_report();
    let visible = parse_html(&report).unwrap();
    assert!(
        visible.chars().count() > 10_000,
        "{}",
        visible.chars().count()
    );

    let first_id = tg.send_message(-1009876, Some(12), &report).await.unwrap();
    let msgs = h.sim.telegram.messages();
    assert!(msgs.len() >= 3, "{} parts", msgs.len());
    assert_eq!(msgs[0].message_id, first_id);
    let mut parts_visible = Vec::new();
    for w in msgs.windows(2) {
        assert!(w[0].message_id < w[1].message_id);
        assert!(
            w[1].at - w[0].at >= chrono::Duration::milliseconds(800),
            "paced per chat"
        );
    }
    for m in &msgs {
        assert_eq!(m.chat_id, -1009876);
        assert_eq!(m.thread, Some(12));
        assert_eq!(m.parse_mode.as_deref(), Some("HTML"));
        let text = m.text.as_deref().unwrap();
        let v = parse_html(text).expect("each part is valid HTML on its own");
        assert!(v.encode_utf16().count() <= 4096);
        parts_visible.push(v);
    }
    // Nothing lost, nothing reordered: the parts are the report cut at line ends.
    let strip = |s: &str| s.replace('\n', "");
    assert_eq!(strip(&parts_visible.concat()), strip(&visible));
    assert!(parts_visible[0].starts_with("Ежедневный отчёт"));
    assert!(parts_visible.last().unwrap().ends_with("Итого: всё"));
    assert_eq!(h.sim.stats()[&System::Telegram].throttled, 0);
}

#[tokio::test]
async fn photo_arrives() {
    let h = start(false).await;
    let tg = good(&h);
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend_from_slice(&640u32.to_be_bytes());
    png.extend_from_slice(&480u32.to_be_bytes());
    png.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    png.extend(std::iter::repeat_n(0u8, 1000));
    let len = png.len();
    let id = tg
        .send_photo(42, None, png, "<b>Воронка</b> за неделю")
        .await
        .unwrap();
    let m = &h.sim.telegram.messages()[0];
    assert_eq!(m.message_id, id);
    assert_eq!(m.kind, "photo");
    assert_eq!(m.photo_len, Some(len));
    assert_eq!(m.content_type.as_deref(), Some("image/png"));
    assert_eq!(m.text.as_deref(), Some("<b>Воронка</b> за неделю"));
    assert_eq!(m.chat_id, 42);
}

#[tokio::test]
async fn rate_limit_is_honoured_and_delivery_happens_once() {
    let h = start(false).await;
    let tg = good(&h);
    h.sim.set_faults(
        System::Telegram,
        Faults {
            throttle: 1,
            ..Default::default()
        },
    );
    let t0 = Instant::now();
    tg.send_message(42, None, "после <b>паузы</b>")
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "waited retry_after"
    );
    assert_eq!(h.sim.telegram.sent_count(), 1);
    assert_eq!(h.sim.stats()[&System::Telegram].throttled, 1);

    h.sim.set_faults(
        System::Telegram,
        Faults {
            http_5xx: 1,
            ..Default::default()
        },
    );
    tg.send_message(43, None, "после 502").await.unwrap();
    assert_eq!(h.sim.telegram.sent_count(), 2);

    // With the fake enforcing limits (a burst of 3, then 1/s per private chat), the client's
    // own 1 s spacing keeps a run of messages to one chat free of 429s.
    let h = start(true).await;
    let tg = good(&h).with_chat_interval(Duration::from_millis(1000));
    for i in 0..4 {
        tg.send_message(77, None, &format!("сообщение {i}"))
            .await
            .unwrap();
    }
    assert_eq!(h.sim.telegram.sent_count(), 4);
    assert_eq!(h.sim.stats()[&System::Telegram].throttled, 0);

    // Without its own spacing the client runs into the fake's real 429s, waits retry_after and
    // still delivers every message exactly once, in order.
    let fast = good(&h).with_chat_interval(Duration::ZERO);
    for i in 0..5 {
        fast.send_message(88, None, &format!("быстро {i}"))
            .await
            .unwrap();
    }
    assert!(h.sim.stats()[&System::Telegram].throttled >= 1);
    let texts: Vec<String> = h
        .sim
        .telegram
        .messages()
        .into_iter()
        .filter(|m| m.chat_id == 88)
        .filter_map(|m| m.text)
        .collect();
    let want: Vec<String> = (0..5).map(|i| format!("быстро {i}")).collect();
    assert_eq!(texts, want);
}

#[tokio::test]
async fn errors_are_typed_and_never_show_the_token() {
    let h = start(false).await;
    let token = "999999:VerySecretBotTokenValue";
    let e = client(&h, token).get_me().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.status, Some(401));
    assert!(!e.to_string().contains("VerySecretBotTokenValue"), "{e}");
    assert!(!format!("{e:?}").contains("VerySecretBotTokenValue"));
    let e = client(&h, token)
        .send_message(42, None, "x")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(!e.to_string().contains("VerySecretBotTokenValue"));

    // 400 is permanent and carries the description.
    h.sim.telegram.mark_chat_unknown(500);
    let e = good(&h).send_message(500, None, "hi").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("chat not found"), "{e}");
    assert!(!e.to_string().contains(&h.sim.creds.telegram_bot_token));
    let e = good(&h)
        .send_message(42, None, "line<br>break")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("can't parse entities"));
}

#[tokio::test]
async fn updates_are_read_with_offsets() {
    let h = start(false).await;
    let tg = good(&h);
    let id = h.sim.telegram.push_update(
        json!({"chat_id": -100200, "text": "/report@dozor_sim_bot week", "from_id": 5}),
    );
    let ups = tg.get_updates(None, 0).await.unwrap();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].update_id, id);
    let m = ups[0].message.as_ref().unwrap();
    assert_eq!(m.chat.id, -100200);
    assert_eq!(m.from.as_ref().unwrap().id, 5);
    assert_eq!(m.text.as_deref(), Some("/report@dozor_sim_bot week"));
    assert!(tg.get_updates(Some(id + 1), 0).await.unwrap().is_empty());
    tg.set_my_commands(&[("report", "Отчёт"), ("status", "Состояние")])
        .await
        .unwrap();
    assert_eq!(h.sim.telegram.commands().len(), 2);
}

/// An answer that never ends (a runaway proxy) is refused at 32 MiB on every Bot API call, with
/// an error naming the system, the method and the size and no token; once answers are normal
/// again the same client carries on.
#[tokio::test]
async fn endless_answers_are_refused_at_the_body_limit() {
    let h = start(false).await;
    let tg = good(&h).with_max_attempts(1);
    h.sim.set_faults(
        System::Telegram,
        Faults {
            oversized: 3,
            ..Default::default()
        },
    );
    let send = tg.send_message(42, None, "отчёт").await.unwrap_err();
    let poll = tg.get_updates(None, 0).await.unwrap_err();
    let photo = tg
        .send_photo(42, None, vec![0x89, b'P', b'N', b'G'], "график")
        .await
        .unwrap_err();
    for (e, method) in [
        (send, "sendMessage"),
        (poll, "getUpdates"),
        (photo, "sendPhoto"),
    ] {
        let shown = e.to_string();
        assert_eq!(e.kind, ErrorKind::Decode, "{shown}");
        assert_eq!(e.method, method);
        assert!(shown.starts_with(&format!("telegram {method} ")), "{shown}");
        assert!(
            shown.contains("bytes refused: larger than the 32 MiB limit"),
            "{shown}"
        );
        assert!(!shown.contains(&h.sim.creds.telegram_bot_token), "{shown}");
    }
    tg.send_message(42, None, "снова работает").await.unwrap();
    assert_eq!(h.sim.telegram.sent_count(), 1);
}

/// The peak memory of a `dozor check` whose every Telegram answer is endless: the answer is cut
/// off at the limit instead of read whole (695 MB before the cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_telegram_answer_keeps_memory_bounded() {
    use dozor::domain::{CrmKind, TelephonyKind};
    let h = start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("dozor.db").display());
    let cfg = dir.path().join("dozor.toml");
    let text = common::tenant_config(&h, CrmKind::Bitrix24, TelephonyKind::Comagic, &db, "ru");
    std::fs::write(&cfg, text).unwrap();
    h.sim.set_faults(
        System::Telegram,
        Faults {
            oversized: 1000,
            ..Default::default()
        },
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_dozor"))
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // VmHWM is the resident high-water mark so far; read until the process is gone.
    let watcher = common::watch_peak_rss(pid);
    let o = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let peak_mib = watcher.join().unwrap() / 1024;
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.contains("panicked"), "{out}");
    assert!(
        out.contains("getMe") && out.contains("larger than the 32 MiB limit"),
        "the check names the method and the limit: {out}"
    );
    assert!(!out.contains(&h.sim.creds.telegram_bot_token), "{out}");
    assert!(peak_mib < 150, "peak RSS {peak_mib} MiB");
    eprintln!("endless Telegram answer refused at 32 MiB, peak RSS {peak_mib} MiB");
}
