//! Webhook receivers: a lost call pushed by CoMagic becomes a callback task in the CRM within
//! two seconds (the daemon binary against the simulator, with a one-hour poll interval); wrong
//! tokens, malformed and oversized bodies are refused without recording anything; repeated
//! deliveries are processed once.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};
use common::{Daemon, tenant_config};
use dozor::config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor::service::server::webhooks::Hooks;
use dozor::service::server::{self, Health, ServerState};
use dozor::store::Store;
use dozor_sim::world::{Dir, SimCall, World};
use dozor_sim::{self as sim, SimOptions};
use serde_json::{Value, json};

const COMAGIC_SECRET: &str = "comagic-hook-secret-0123456789";
const AMO_SECRET: &str = "amocrm-hook-secret-0123456789";
const B24_TOKEN: &str = "b24-application-token-xyz";
const TG_SECRET: &str = "telegram-hook-secret";

async fn cycles(client: &reqwest::Client, base: &str) -> String {
    let m = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    m.lines()
        .find(|l| l.starts_with("dozor_cycles_total{tenant=\"demo\",ok=\"true\"}"))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_call_notification_becomes_a_callback_task_within_two_seconds() {
    let opts = SimOptions {
        enforce_limits: false,
        ..SimOptions::default()
    };
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let tenant = tenant_config(
        &h,
        CrmKind::Bitrix24,
        TelephonyKind::Comagic,
        &common::sqlite_url(dir.path()),
        "ru",
    );
    let mut cfg = common::only_rules(
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[sync]\ninterval_secs = 3600\n{tenant}"),
        &["missed_call"],
    );
    cfg.push_str(&format!(
        "\n[tenants.webhooks]\ncomagic_secret = \"{COMAGIC_SECRET}\"\ntelegram_secret = \"{TG_SECRET}\"\n"
    ));
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, cfg).unwrap();
    // The operator pointed Telegram at the receiver (as `setWebhook` with a secret_token does).
    let r = reqwest::Client::new()
        .post(format!(
            "{}/bot{}/setWebhook",
            h.telegram_url(),
            h.sim.creds.telegram_bot_token
        ))
        .json(
            &json!({"url": "https://dozor.example/hooks/telegram/demo", "secret_token": TG_SECRET}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // Trace-level JSON logs go to a file, searched for the path secret at the end.
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dozor"))
        .args([
            "--config",
            &path.display().to_string(),
            "--log-format",
            "json",
            "run",
        ])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    common::wait_ready(&client, &base).await;
    assert!(
        cycles(&client, &base).await.ends_with(" 1"),
        "one cycle at start"
    );

    // A lost call from a known client's number (so the callback task has an owner), as
    // CoMagic recorded it: the notification only says which call to read back.
    let (call_id, phone) = {
        let mut w = h.sim.world();
        let phone = w
            .contacts
            .values()
            .find(|c| !c.phones.is_empty())
            .map(|c| World::phone_key(&c.phones[0]))
            .unwrap();
        let id = w.next_id();
        w.calls.insert(
            id,
            SimCall {
                id,
                start: Utc::now() - chrono::Duration::seconds(40),
                direction: Dir::In,
                is_lost: true,
                talk_s: 0,
                wait_s: 35,
                client_phone: phone.clone(),
                virtual_number: "74951234567".into(),
                employee_id: None,
                source: "call_tracking".into(),
                utm: Default::default(),
                has_record: false,
            },
        );
        (id, phone)
    };
    let start_time = Utc::now()
        .with_timezone(&chrono_tz::Europe::Moscow)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let body = json!({
        "notification_mnemonic": "lost_call",
        "call_session_id": call_id,
        "direction": "in",
        "start_time": start_time,
        "contact_phone_number": phone,
        "virtual_phone_number": "74951234567",
        "employee_id": null,
        "talk_time_duration": 0,
        "total_time_duration": 35,
        "notification_time": start_time,
    });
    let url = format!("{base}/hooks/comagic/demo/{COMAGIC_SECRET}");
    let marker = format!("missed_call:demo:comagic:{call_id}:task");
    let tasks_with_marker = || {
        h.sim
            .world()
            .tasks
            .values()
            .filter(|t| format!("{} {}", t.title, t.description).contains(&marker))
            .count()
    };
    assert_eq!(tasks_with_marker(), 0);

    let sent = Instant::now();
    let r = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let answered = sent.elapsed();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "accepted");
    assert!(
        answered < Duration::from_millis(500),
        "answered in {answered:?}"
    );
    while tasks_with_marker() == 0 {
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "no callback task within 2 s of the notification"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = sent.elapsed();
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    eprintln!("notification -> callback task in {elapsed:?}");

    // The same delivery again: acknowledged, not processed (no second cycle, no second task).
    let until = Instant::now() + Duration::from_secs(5);
    while !cycles(&client, &base).await.ends_with(" 2") {
        assert!(Instant::now() < until, "the woken cycle did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "duplicate");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        cycles(&client, &base).await.ends_with(" 2"),
        "a duplicate must not wake the cycle"
    );
    assert_eq!(tasks_with_marker(), 1);

    // A wrong secret is refused and logged without the secret that was tried.
    let r = client
        .post(format!(
            "{base}/hooks/comagic/demo/guessed-secret-0000000001"
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A bot command pushed by the Telegram webhook is answered (the bot does not poll then),
    // once, even when Telegram delivers the update again.
    let update = json!({
        "update_id": 700_000_001,
        "message": {
            "message_id": 11,
            "date": Utc::now().timestamp(),
            "chat": {"id": dozor_sim::tenant_config::OWNER_CHAT, "type": "private"},
            "from": {"id": 5_000_001, "is_bot": false, "first_name": "Owner"},
            "text": "/help"
        }
    });
    let help_replies = || {
        h.sim
            .telegram
            .messages()
            .iter()
            .filter(|m| m.chat_id == dozor_sim::tenant_config::OWNER_CHAT)
            .filter(|m| m.text.as_deref().is_some_and(|t| t.contains("/overdue")))
            .count()
    };
    for _ in 0..2 {
        let r = client
            .post(format!("{base}/hooks/telegram/demo"))
            .header("X-Telegram-Bot-Api-Secret-Token", TG_SECRET)
            .json(&update)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let until = Instant::now() + Duration::from_secs(10);
    while help_replies() == 0 {
        assert!(Instant::now() < until, "the pushed /help was not answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(help_replies(), 1, "answered once");
    assert!(
        h.sim.telegram.webhook_url().is_some(),
        "the bot leaves the operator's webhook in place"
    );
    drop(daemon);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("webhook delivery refused"),
        "refusal not logged"
    );
    assert!(
        !logs.contains(COMAGIC_SECRET),
        "the webhook secret is in the logs"
    );
    assert!(
        !logs.contains("guessed-secret-0000000001"),
        "a tried secret is in the logs"
    );
    h.stop().await;
}

/// A server with every receiver on, in process, over a fresh SQLite store.
struct Fixture {
    base: String,
    store: Store,
    hooks: Arc<Hooks>,
    wake: Arc<tokio::sync::Notify>,
    updates: tokio::sync::mpsc::Receiver<dozor::notify::telegram::Update>,
    sim: sim::SimHandle,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    // CoMagic is the simulator's: a notification is confirmed by reading the call back.
    let sim = common::small_sim(1).await;
    let text = format!(
        "[database]\nurl = \"{db}\"\n\n[[tenants]]\nid = \"acme\"\n\n[tenants.crm]\nkind = \"bitrix24\"\n\
         webhook_url = \"https://example.bitrix24.ru/rest/1/xxxxxxxx/\"\n\n[tenants.telephony]\n\
         kind = \"comagic\"\nbase_url = \"{}\"\naccess_token = \"{}\"\n\n[tenants.webhooks]\nbitrix24_token = \"{B24_TOKEN}\"\n\
         amocrm_secret = \"{AMO_SECRET}\"\ncomagic_secret = \"{COMAGIC_SECRET}\"\ntelegram_secret = \"{TG_SECRET}\"\n",
        sim.comagic_url(),
        sim.sim.creds.comagic_access_token
    );
    let cfg = config::parse(&text, None, None).unwrap().config;
    let store = Store::open(&db, 2).await.unwrap();
    let mut wiring = Hooks::wire(&cfg.tenants);
    let state = ServerState {
        store: store.clone(),
        health: Arc::new(Health::default()),
        stale_after: Duration::from_secs(600),
        tenants: vec!["acme".into()],
        hooks: wiring.hooks.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, server::router(state)).await.unwrap();
    });
    Fixture {
        base: format!("http://{addr}"),
        store,
        hooks: wiring.hooks.clone(),
        wake: wiring.wakes["acme"].clone(),
        updates: wiring.telegram_updates.remove("acme").unwrap(),
        sim,
        _dir: dir,
    }
}

impl Fixture {
    async fn deliveries(&self) -> i64 {
        use sqlx::Row;
        sqlx::query("SELECT COUNT(*) AS n FROM webhook_deliveries")
            .fetch_one(self.store.pool())
            .await
            .unwrap()
            .get::<i64, _>("n")
    }

    async fn woken(&self) -> bool {
        tokio::time::timeout(Duration::from_millis(100), self.wake.notified())
            .await
            .is_ok()
    }
}

fn b24_form(token: &str, event: &str, id: &str, ts: &str) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    if !event.is_empty() {
        s.append_pair("event", event);
    }
    s.append_pair("event_handler_id", "975");
    if !id.is_empty() {
        s.append_pair("data[FIELDS][ID]", id);
    }
    s.append_pair("ts", ts);
    s.append_pair("auth[domain]", "example.bitrix24.ru");
    s.append_pair("auth[client_endpoint]", "https://example.bitrix24.ru/rest/");
    s.append_pair("auth[member_id]", "a223c6b3710f85df22e9377d6c4f7553");
    if !token.is_empty() {
        s.append_pair("auth[application_token]", token);
    }
    s.finish()
}

fn comagic_body(id: u64) -> Value {
    json!({
        "notification_mnemonic": "lost_call",
        "call_session_id": id,
        "direction": "in",
        "start_time": "2026-11-24 12:00:00",
        "contact_phone_number": "79991234567",
        "talk_time_duration": 0,
        "notification_time": "2026-11-24 12:00:40",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_refuse_bad_tokens_bodies_and_duplicates() {
    let mut f = fixture().await;
    let c = reqwest::Client::new();
    let form = |body: String| {
        c.post(format!("{}/hooks/bitrix24/acme", f.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };

    // Wrong or missing tokens: 401/403, nothing recorded, no cycle woken, no call stored.
    let r = form(b24_form("wrong", "ONCRMDEALUPDATE", "662", "1724140800"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = form(b24_form("", "ONCRMDEALUPDATE", "662", "1724140800"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!(
            "{}/hooks/amocrm/acme/wrong-secret-000000000",
            f.base
        ))
        .body("leads[add][0][id]=1&account[subdomain]=acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(format!("{}/hooks/comagic/acme/{AMO_SECRET}", f.base))
        .json(&comagic_body(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another receiver's secret is wrong here");
    let r = c
        .post(format!("{}/hooks/telegram/acme", f.base))
        .json(&json!({"update_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{}/hooks/telegram/acme", f.base))
        .header("X-Telegram-Bot-Api-Secret-Token", "nope")
        .json(&json!({"update_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(!body.contains(TG_SECRET), "{body}");
    let r = c
        .post(format!("{}/hooks/comagic/nobody/{COMAGIC_SECRET}", f.base))
        .json(&comagic_body(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "unknown tenant");
    assert_eq!(f.deliveries().await, 0);
    assert!(
        !f.woken().await,
        "refused deliveries must not wake the cycle"
    );
    assert!(f.store.calls("acme").await.unwrap().is_empty());
    assert!(f.updates.try_recv().is_err());

    // Malformed bodies: 400 naming the field.
    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (
            form(b24_form(B24_TOKEN, "", "662", "1724140800")),
            "`event`",
        ),
        (
            form(b24_form(B24_TOKEN, "ONCRMDEALUPDATE", "", "1724140800")),
            "`data[FIELDS][ID]`",
        ),
        (
            c.post(format!("{}/hooks/amocrm/acme/{AMO_SECRET}", f.base))
                .body("leads[add][0][name]=1"),
            "`leads[add][0][id]`",
        ),
        (
            c.post(format!("{}/hooks/amocrm/acme/{AMO_SECRET}", f.base))
                .body("unsorted[add][0][uid]=a%20b&account[subdomain]=acme"),
            "`unsorted[add][0][uid]`",
        ),
        (
            c.post(format!("{}/hooks/amocrm/acme/{AMO_SECRET}", f.base))
                .body("leads[add][0][id]=abc&account[subdomain]=acme"),
            "`leads[add][0][id]`",
        ),
        (
            c.post(format!("{}/hooks/comagic/acme/{COMAGIC_SECRET}", f.base))
                .json(&json!({"notification_mnemonic": "lost_call", "direction": "in"})),
            "`call_session_id`",
        ),
        (
            c.post(format!("{}/hooks/comagic/acme/{COMAGIC_SECRET}", f.base))
                .json(&{
                    let mut b = comagic_body(5);
                    b["start_time"] = json!("yesterday");
                    b
                }),
            "start_time",
        ),
        (
            c.post(format!("{}/hooks/comagic/acme/{COMAGIC_SECRET}", f.base))
                .body("{not json"),
            "JSON",
        ),
        (
            c.post(format!("{}/hooks/telegram/acme", f.base))
                .header("X-Telegram-Bot-Api-Secret-Token", TG_SECRET)
                .json(&json!({"message": {}})),
            "`update_id`",
        ),
    ];
    for (req, field) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400);
        let msg = r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains(field), "`{msg}` does not name {field}");
    }
    assert_eq!(f.deliveries().await, 0);
    assert!(!f.woken().await);

    // Oversized: 413.
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(300 * 1024));
    let r = c
        .post(format!("{}/hooks/comagic/acme/{COMAGIC_SECRET}", f.base))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(f.deliveries().await, 0);

    // Valid deliveries are accepted once; repeats are acknowledged as duplicates.
    for expect in ["accepted", "duplicate"] {
        let r = form(b24_form(B24_TOKEN, "onCrmDealUpdate", "662", "1724140800"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], expect);
        assert_eq!(f.woken().await, expect == "accepted");
    }
    for expect in ["accepted", "duplicate"] {
        let r = c
            .post(format!("{}/hooks/amocrm/acme/{AMO_SECRET}", f.base))
            .body(
                "leads[update][0][id]=123&leads[update][0][updated_at]=1724140800\
                 &contacts[add][0][id]=7&account[subdomain]=acme&account[id]=1",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], expect);
        assert_eq!(f.woken().await, expect == "accepted");
    }
    // The docs' own lead example carries no account block; an unsorted item accepted in the
    // interface arrives as a deletion keyed by uid: both are taken.
    for body in [AMO_DOC_LEAD_STATUS, AMO_DOC_UNSORTED_ACCEPT] {
        for expect in ["accepted", "duplicate"] {
            let r = c
                .post(format!("{}/hooks/amocrm/acme/{AMO_SECRET}", f.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.json::<Value>().await.unwrap()["status"], expect);
            assert_eq!(f.woken().await, expect == "accepted");
        }
    }
    for expect in ["accepted", "duplicate"] {
        let r = c
            .post(format!("{}/hooks/telegram/acme", f.base))
            .header("X-Telegram-Bot-Api-Secret-Token", TG_SECRET)
            .json(&json!({"update_id": 77, "message": {"message_id": 1, "chat": {"id": 5, "type": "private"}, "date": 0, "text": "/status"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], expect);
    }
    let u = f
        .updates
        .try_recv()
        .expect("the update reached the bot queue");
    assert_eq!(u.update_id, 77);
    assert!(
        f.updates.try_recv().is_err(),
        "the duplicate was not queued"
    );

    // A CoMagic lost call is read back from the API and stored as the API has it (here with
    // a start time and number other than the notification's: the API wins).
    let started = (Utc::now() - chrono::Duration::minutes(3))
        .with_nanosecond(0)
        .unwrap();
    f.sim.sim.world().calls.insert(
        4242,
        SimCall {
            id: 4242,
            start: started,
            direction: Dir::In,
            is_lost: true,
            talk_s: 0,
            wait_s: 20,
            client_phone: "79990000042".into(),
            virtual_number: "74951234567".into(),
            employee_id: None,
            source: "call_tracking".into(),
            utm: Default::default(),
            has_record: false,
        },
    );
    for expect in ["accepted", "duplicate"] {
        let r = c
            .post(format!("{}/hooks/comagic/acme/{COMAGIC_SECRET}", f.base))
            .json(&comagic_body(4242))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], expect);
    }
    let until = Instant::now() + Duration::from_secs(5);
    while !f.woken().await {
        assert!(
            Instant::now() < until,
            "the confirmed call did not wake the cycle"
        );
    }
    let calls = f.store.calls("acme").await.unwrap();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.id, "4242");
    assert!(!call.answered);
    assert_eq!(call.direction, dozor::domain::Direction::In);
    assert_eq!(call.client_phone, "79990000042");
    assert_eq!(call.started_at, started);
    assert!(!f.woken().await, "the duplicate did not wake it again");

    // A notification of a call CoMagic does not know (a forged push with a valid secret) is
    // acknowledged, and nothing enters the mirror or wakes the cycle.
    let r = c
        .post(format!("{}/hooks/comagic/acme/{COMAGIC_SECRET}", f.base))
        .json(&comagic_body(990_001))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !f.woken().await,
        "an unconfirmed notification woke the cycle"
    );
    assert_eq!(f.store.calls("acme").await.unwrap().len(), 1);

    // Two more amoCRM deliveries than before: the docs' lead example and an accepted unsorted item.
    assert_eq!(f.deliveries().await, 7);
    let counts = f.hooks.counts();
    let n = |src: &str, outcome: &str| {
        counts
            .iter()
            .find(|((t, s, o), _)| t == "acme" && s == src && o == outcome)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(n("bitrix24", "duplicate"), 1);
    assert_eq!(n("telegram", "forbidden"), 1);
    assert!(f.hooks.last_delivery("acme", "comagic").is_some());
}

#[test]
fn webhook_tokens_are_validated_and_read_from_files() {
    let base = "[[tenants]]\nid = \"acme\"\n\n[tenants.crm]\nkind = \"bitrix24\"\n\
                webhook_url = \"https://example.bitrix24.ru/rest/1/xxxxxxxx/\"\n\n[tenants.webhooks]\n";
    let err = config::parse(&format!("{base}amocrm_secret = \"short\"\n"), None, None)
        .expect_err("a guessable path secret is refused");
    assert_eq!(
        err.key.as_deref(),
        Some("tenants[0].webhooks.amocrm_secret")
    );
    let err = config::parse(
        &format!("{base}telegram_secret = \"has spaces in it\"\n"),
        None,
        None,
    )
    .expect_err("Telegram refuses such a secret_token");
    assert_eq!(
        err.key.as_deref(),
        Some("tenants[0].webhooks.telegram_secret")
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("comagic_secret");
    std::fs::write(&file, format!("{COMAGIC_SECRET}\n")).unwrap();
    let c = config::parse(
        &format!("{base}comagic_secret_file = \"{}\"\n", file.display()),
        None,
        None,
    )
    .unwrap()
    .config;
    assert_eq!(
        c.tenants[0]
            .webhooks
            .comagic_secret
            .as_ref()
            .map(|s| s.expose()),
        Some(COMAGIC_SECRET)
    );

    // Inline tokens in a group-readable file are flagged, with the fix; 0600 is fine.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("dozor.toml");
        std::fs::write(&path, format!("{base}bitrix24_token = \"{B24_TOKEN}\"\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let w = config::permission_warning(&path).expect("group-readable secrets are flagged");
        assert!(
            w.contains("chmod 600") && w.contains("dozor.toml") && w.contains("bitrix24_token"),
            "{w}"
        );
        assert!(!w.contains(B24_TOKEN), "{w}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(config::permission_warning(&path), None);
    }
}

/// A renamed portal posts its events from the new address (`auth[domain]`, with the event
/// shape of bitrix24/b24restdocs `_includes/auth-params-in-events.md`); once dozor has learnt
/// the move from the portal's redirect (`settings/how-to-call-rest-api/change-domen.md`),
/// they are accepted, the application token authenticating them. Before, and from any
/// other address, they stay refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_the_moved_portal_address_are_accepted() {
    let f = fixture().await;
    let c = reqwest::Client::new();
    let post = |domain: &str, id: &str| {
        c.post(format!("{}/hooks/bitrix24/acme", f.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                b24_form(B24_TOKEN, "ONCRMDEALUPDATE", id, "1724140800")
                    .replace("example.bitrix24.ru", domain),
            )
            .send()
    };
    assert_eq!(
        post("renamed.bitrix24.ru", "662").await.unwrap().status(),
        403
    );
    dozor::crm::bitrix24::moved::save(
        &f.store,
        "acme",
        "https://example.bitrix24.ru",
        "https://renamed.bitrix24.ru",
    )
    .await
    .unwrap();
    assert_eq!(
        post("renamed.bitrix24.ru", "663").await.unwrap().status(),
        200
    );
    assert_eq!(
        post("example.bitrix24.ru", "664").await.unwrap().status(),
        200
    );
    assert_eq!(
        post("other.bitrix24.ru", "665").await.unwrap().status(),
        403
    );
    assert_eq!(f.deliveries().await, 2);
    f.sim.stop().await;
}

// amoCRM webhook bodies as the webhooks format page describes them
// (https://www.amocrm.ru/developers/content/crm_platform/webhooks-format): form-urlencoded,
// `{entity: {action: {0: {fields}}}}` for additions and changes, `{entity: {delete: [{id}]}}` for
// deletions, unsorted items keyed by `uid` with the accept / decline action on deletion.

/// The page's lead status example (ids, fields and custom fields as printed there), without
/// the account block, as the page prints it.
const AMO_DOC_LEAD_STATUS: &str = "leads%5Bstatus%5D%5B0%5D%5Bid%5D=25399013\
    &leads%5Bstatus%5D%5B0%5D%5Bname%5D=Lead+title\
    &leads%5Bstatus%5D%5B0%5D%5Bold_status_id%5D=7039101\
    &leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=142\
    &leads%5Bstatus%5D%5B0%5D%5Bprice%5D=0\
    &leads%5Bstatus%5D%5B0%5D%5Bresponsible_user_id%5D=123123\
    &leads%5Bstatus%5D%5B0%5D%5Blast_modified%5D=1413554372\
    &leads%5Bstatus%5D%5B0%5D%5Bmodified_user_id%5D=123123\
    &leads%5Bstatus%5D%5B0%5D%5Bcreated_user_id%5D=123123\
    &leads%5Bstatus%5D%5B0%5D%5Bdate_create%5D=1413554349\
    &leads%5Bstatus%5D%5B0%5D%5Baccount_id%5D=7039099\
    &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B0%5D%5Bid%5D=427183\
    &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B0%5D%5Bname%5D=Checkbox+custom+field\
    &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B0%5D%5Bvalues%5D%5B0%5D=1\
    &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B1%5D%5Bid%5D=427271\
    &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B1%5D%5Bname%5D=Date+custom+field\
    &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B1%5D%5Bvalues%5D%5B0%5D=1412380800\
    &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B2%5D%5Bid%5D=427661\
    &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B2%5D%5Bname%5D=Text+custom+field\
    &leads%5Bstatus%5D%5B0%5D%5Bcustom_fields%5D%5B2%5D%5Bvalues%5D%5B0%5D=%D0%92%D0%B0%D0%BB%D0%B5%D1%80%D0%B0";

/// An unsorted item accepted in the interface: a deletion keyed by `uid`, with the action and
/// the lead it became (the uid is the one on the unsorted API page's list example).
const AMO_DOC_UNSORTED_ACCEPT: &str = "unsorted[delete][0][action]=accept\
    &unsorted[delete][0][uid]=98fb033cefde74f5de1a5d3980a2a2d108037\
    &unsorted[delete][0][category]=sip\
    &unsorted[delete][0][created_at]=1592989616\
    &unsorted[delete][0][modified_user_id]=504141\
    &unsorted[delete][0][accept_result][leads][0]=25399013\
    &account[subdomain]=acme&account[id]=7039099\
    &account[_links][self]=https%3A%2F%2Facme.amocrm.ru";

#[test]
fn amocrm_documented_webhook_shapes_are_accepted() {
    use dozor::service::server::webhooks::fuzzing::amocrm;
    let account = "&account[subdomain]=acme&account[id]=7039099\
                   &account[_links][self]=https%3A%2F%2Facme.amocrm.ru";
    let with_account = |b: &str| format!("{b}{account}");
    let cases: Vec<(String, &str)> = vec![
        (AMO_DOC_LEAD_STATUS.to_string(), "leads:status:25399013"),
        (with_account(AMO_DOC_LEAD_STATUS), "leads:status:25399013"),
        (
            with_account(
                "leads[add][0][id]=25399014&leads[add][0][name]=Lead&leads[add][0][status_id]=7039101\
                 &leads[add][0][pipeline_id]=3104455&leads[add][0][date_create]=1413554349\
                 &leads[add][0][created_at]=1413554349&leads[add][0][account_id]=7039099",
            ),
            "leads:add:25399014",
        ),
        (
            "leads[update][0][id]=25399013&leads[update][0][status_id]=142\
             &leads[update][0][old_status_id]=7039101&leads[update][0][updated_at]=1413554372\
             &leads[update][0][custom_fields][0][id]=427183\
             &leads[update][0][custom_fields][0][values][0][value]=1\
             &leads[update][0][custom_fields][0][values][0][enum]=1240656"
                .to_string(),
            "leads:update:25399013",
        ),
        // Deletions: only the id (and for leads where it was).
        (
            "leads[delete][0][id]=25399013&leads[delete][0][status_id]=142\
             &leads[delete][0][pipeline_id]=3104455&contacts[delete][0][id]=7044\
             &contacts[delete][0][type]=contact"
                .to_string(),
            "contacts:delete:7044,leads:delete:25399013",
        ),
        (
            with_account(
                "contacts[add][0][id]=7044&contacts[add][0][name]=Ivan&contacts[add][0][type]=contact\
                 &contacts[add][0][responsible_user_id]=123123&contacts[add][0][date_create]=1413554349\
                 &contacts[add][0][custom_fields][0][id]=66192&contacts[add][0][custom_fields][0][code]=PHONE\
                 &contacts[add][0][custom_fields][0][values][0][value]=%2B79991234567\
                 &contacts[add][0][custom_fields][0][values][0][enum]=193200\
                 &contacts[add][0][linked_leads_id][25399013]=25399013",
            ),
            "contacts:add:7044",
        ),
        (
            "contacts[update][0][id]=7044&contacts[update][0][type]=company\
             &contacts[update][0][last_modified]=1413554372"
                .to_string(),
            "contacts:update:7044",
        ),
        (
            with_account(
                "task[add][0][id]=56981&task[add][0][element_id]=25399013&task[add][0][element_type]=2\
                 &task[add][0][task_type]=1&task[add][0][text]=%D0%9F%D0%B5%D1%80%D0%B5%D0%B7%D0%B2%D0%BE%D0%BD%D0%B8%D1%82%D1%8C\
                 &task[add][0][status]=0&task[add][0][complete_till]=1575910423\
                 &task[add][0][responsible_user_id]=123123&task[add][0][date_create]=1575910123",
            ),
            "task:add:56981",
        ),
        (
            "task[update][0][id]=56981&task[update][0][status]=1&task[update][0][action_close]=1\
             &task[update][0][last_modified]=1576767989&task[delete][0][id]=56982"
                .to_string(),
            "task:delete:56982,task:update:56981",
        ),
        // A note added to a lead (the page lists it among the events; its fields are nested
        // once more under `note`, the lead in `element_id`).
        (
            with_account(
                "leads[note][0][note][id]=71009&leads[note][0][note][element_id]=25399013\
                 &leads[note][0][note][element_type]=2&leads[note][0][note][note_type]=4\
                 &leads[note][0][note][text]=%D0%9F%D0%B5%D1%80%D0%B5%D0%B7%D0%B2%D0%BE%D0%BD%D0%B8%D1%82%D1%8C\
                 &leads[note][0][note][created_at]=1413554372",
            ),
            "leads:note:25399013",
        ),
        // Unsorted: keyed by uid; the contact nested in `data` is not an entity of its own.
        (
            with_account(
                "unsorted[add][0][uid]=98fb033cefde74f5de1a5d3980a2a2d108037\
                 &unsorted[add][0][source]=sip&unsorted[add][0][source_uid]=a1fee7c0fc436088e64ba2e8822ba2b3\
                 &unsorted[add][0][category]=sip&unsorted[add][0][source_data][from]=79991234567\
                 &unsorted[add][0][source_data][service]=sip.telephony&unsorted[add][0][date_create]=1592989616\
                 &unsorted[add][0][data][contacts][0][id]=7044&unsorted[add][0][pipeline_id]=3104455\
                 &unsorted[add][0][lead_id]=25399013&unsorted[add][0][account_id]=7039099",
            ),
            "unsorted:add:98fb033cefde74f5de1a5d3980a2a2d108037",
        ),
        (
            "unsorted[update][0][uid]=98fb033cefde74f5de1a5d3980a2a2d108037\
             &unsorted[update][0][category]=sip&unsorted[update][0][date_create]=1592989616"
                .to_string(),
            "unsorted:update:98fb033cefde74f5de1a5d3980a2a2d108037",
        ),
        (
            AMO_DOC_UNSORTED_ACCEPT.to_string(),
            "unsorted:accept:98fb033cefde74f5de1a5d3980a2a2d108037",
        ),
        (
            "unsorted[delete][0][action]=decline&unsorted[delete][0][uid]=98fb033cefde74f5de1a5d3980a2a2d108037\
             &unsorted[delete][0][category]=forms&unsorted[delete][0][created_at]=1592989616\
             &unsorted[delete][0][modified_user_id]=504141\
             &unsorted[delete][0][decline_result][leads][0]=25399013"
                .to_string(),
            "unsorted:decline:98fb033cefde74f5de1a5d3980a2a2d108037",
        ),
    ];
    for (body, expect) in cases {
        assert_eq!(amocrm(body.as_bytes()).as_deref(), Ok(expect), "{body}");
    }
    // Still refused: another account, no entity at all, a non-numeric id.
    let refused = [
        (
            "leads[add][0][id]=1&account[subdomain]=other",
            "not this tenant's account",
        ),
        (
            "account[subdomain]=acme&account[id]=1",
            "no entity in the body",
        ),
        (
            "leads[status][0][id]=1e3",
            "`leads[status][0][id]` must be a number",
        ),
        (
            "leads[note][0][note][id]=5&leads[note][0][note][element_id]=x",
            "`leads[note][0][note][element_id]` must be a number",
        ),
    ];
    for (body, why) in refused {
        let e = amocrm(body.as_bytes()).expect_err(body);
        assert!(e.contains(why), "`{e}` does not say {why}");
    }
}
