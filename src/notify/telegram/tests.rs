use super::split::*;
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
