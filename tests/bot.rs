//! Bot commands and message delivery through the simulator's Telegram fake: allowlisted chats
//! get answers, others a refusal; a restart does not answer again; a message whose send failed
//! is delivered by a later cycle exactly once, without repeating parts already delivered.

mod common;

use std::time::Duration;

use common::tenant_config;
use dozor::bot::{self, Bot};
use dozor::config::{self, TenantConfig};
use dozor::domain::{CrmKind, TelephonyKind};
use dozor::engine::{CycleOptions, run_cycle};
use dozor::ledger::{self, Effect, Outcome, Proposal};
use dozor::notify::telegram::{Telegram, escape_html};
use dozor::notify::{MessageKind, Route, route};
use dozor::store::{Snapshot, Store};
use dozor::tenant::{self, Tenant};
use dozor_sim::telegram::{SentMessage, parse_html};
use dozor_sim::tenant_config::{HEAD_OF_SALES_CHAT, OWNER_CHAT};
use dozor_sim::{self as sim, SimHandle, SimOptions};
use serde_json::json;

const STRANGER: i64 = 555_000_111;

fn cycle_opts() -> CycleOptions {
    CycleOptions {
        dry_run: false,
        sync: dozor::sync::SyncOptions {
            telephony_initial: Duration::from_secs(31 * 86_400),
            ..dozor::sync::SyncOptions::default()
        },
        now: None,
    }
}

struct Setup {
    h: SimHandle,
    cfg: TenantConfig,
    store: Store,
    tenant: Tenant,
    _dir: tempfile::TempDir,
}

/// A simulator, a tenant with every rule off (so only the messages under test are sent), and
/// a store synced by one cycle.
async fn setup(lang: &str) -> Setup {
    let h = common::start_sim(common::sim_opts(11)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let text = common::only_rules(
        tenant_config(&h, CrmKind::Bitrix24, TelephonyKind::Comagic, &db, lang),
        &[],
    );
    let cfg = config::parse(&text, None, None).unwrap().config.tenants[0].clone();
    // A failed send is tried again by the very next cycle (no backoff), as the tests drive
    // cycles back to back.
    let store = Store::open(&db, 4)
        .await
        .unwrap()
        .with_retry(dozor::store::RetryPolicy {
            max_attempts: 8,
            first_wait: Duration::ZERO,
            max_wait: Duration::ZERO,
        });
    let tenant = tenant::connect(&cfg, &store).await.unwrap();
    let s = run_cycle(&store, &tenant, cycle_opts()).await;
    assert!(s.ok(), "{:?}", s.errors);
    Setup {
        h,
        cfg,
        store,
        tenant,
        _dir: dir,
    }
}

fn to_chat(h: &SimHandle, chat: i64) -> Vec<SentMessage> {
    h.sim
        .telegram
        .messages()
        .into_iter()
        .filter(|m| m.chat_id == chat)
        .collect()
}

fn visible(m: &SentMessage) -> String {
    parse_html(m.text.as_deref().unwrap_or_default()).expect("valid HTML")
}

fn fast_bot(s: &Setup) -> Bot {
    let mut b = Bot::new(&s.cfg, s.store.clone()).expect("bot token configured");
    b.tg = Telegram::new(s.cfg.telegram.as_ref().unwrap()).with_chat_interval(Duration::ZERO);
    b
}

#[tokio::test]
async fn commands_answer_allowed_chats_once_and_refuse_others() {
    let s = setup("ru").await;
    let h = &s.h;
    let mut b = fast_bot(&s);
    b.start().await.unwrap();
    let registered: Vec<String> = h
        .sim
        .telegram
        .commands()
        .iter()
        .map(|c| c["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        registered,
        ["report", "overdue", "manager", "status", "help"]
    );

    let snap = Snapshot::load(&s.store, "demo").await.unwrap();
    let now = chrono::Utc::now();
    let overdue_owner = snap
        .tasks
        .iter()
        .find(|t| t.is_overdue(now) && t.responsible_id.is_some())
        .and_then(|t| t.responsible_id.clone())
        .expect("the generated world has overdue tasks");
    let owner_name = snap
        .users
        .iter()
        .find(|u| u.id == overdue_owner)
        .unwrap()
        .name
        .clone();

    let push = |chat: i64, text: &str| {
        h.sim
            .telegram
            .push_update(json!({"chat_id": chat, "text": text, "from_id": 77}))
    };
    push(OWNER_CHAT, "/report day");
    push(HEAD_OF_SALES_CHAT, "/overdue@dozor_sim_bot");
    push(STRANGER, "/report day");
    push(STRANGER, "/overdue");
    push(OWNER_CHAT, "/help");
    push(OWNER_CHAT, "/status");
    push(OWNER_CHAT, "just talking");
    push(HEAD_OF_SALES_CHAT, &format!("/manager {owner_name}"));
    assert_eq!(b.poll_once(0).await.unwrap(), 8);

    // The owner: the daily report and its chart, then the help, then the status.
    let owner = to_chat(h, OWNER_CHAT);
    assert_eq!(owner.len(), 4, "{owner:?}");
    let report = visible(&owner[0]);
    assert!(report.contains("ООО «Демо»"), "{report}");
    assert_eq!(owner[0].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(owner[1].kind, "photo");
    assert_eq!(owner[1].content_type.as_deref(), Some("image/png"));
    let help = visible(&owner[2]);
    for c in ["/report", "/overdue", "/manager", "/status", "/help"] {
        assert!(help.contains(c), "{help}");
    }
    let status = visible(&owner[3]);
    assert!(status.contains("Последний цикл"), "{status}");
    assert!(status.contains("✅"), "{status}");

    // The head of sales: overdue tasks grouped by manager, then one manager's figures.
    let hos = to_chat(h, HEAD_OF_SALES_CHAT);
    assert_eq!(hos.len(), 2, "{hos:?}");
    let overdue = visible(&hos[0]);
    assert!(overdue.starts_with("Просроченные задачи:"), "{overdue}");
    assert!(overdue.contains(&owner_name), "{overdue}");
    let manager = visible(&hos[1]);
    assert!(manager.starts_with(&owner_name), "{manager}");
    assert!(manager.contains("Просроченных задач: "), "{manager}");
    assert!(!manager.contains("Просроченных задач: 0"), "{manager}");

    // The stranger: one refusal for its two commands (once per chat per day), nothing from the
    // mirror.
    let stranger = to_chat(h, STRANGER);
    assert_eq!(stranger.len(), 1);
    for m in &stranger {
        assert_eq!(visible(m), bot::refusal(dozor::config::Lang::Ru));
        assert!(!visible(m).contains(&owner_name));
    }

    // A restart reads the saved offset: the same updates are not answered again.
    let total = h.sim.telegram.sent_count();
    let mut again = fast_bot(&s);
    again.start().await.unwrap();
    assert_eq!(again.poll_once(0).await.unwrap(), 0);
    assert_eq!(h.sim.telegram.sent_count(), total);
    assert!(again.offset().await.unwrap().is_some());

    // New commands after the restart are answered.
    push(OWNER_CHAT, "/manager zzzz-nobody");
    assert_eq!(again.poll_once(0).await.unwrap(), 1);
    let last = to_chat(h, OWNER_CHAT).pop().unwrap();
    assert!(visible(&last).contains("не найден"), "{}", visible(&last));
}

#[tokio::test]
async fn english_tenant_refuses_in_english_and_lists_candidates() {
    let s = setup("en").await;
    let h = &s.h;
    let b = {
        let mut b = fast_bot(&s);
        b.start().await.unwrap();
        b
    };
    // Two managers share a letter: an ambiguous query lists candidates.
    let snap = Snapshot::load(&s.store, "demo").await.unwrap();
    let letter = snap.users[0].name.chars().next().unwrap().to_string();
    let matching = dozor::bot::match_users(&snap, &letter);
    h.sim
        .telegram
        .push_update(json!({"chat_id": STRANGER, "text": "/status", "from_id": 9}));
    h.sim
        .telegram
        .push_update(json!({"chat_id": OWNER_CHAT, "text": format!("/manager {letter}")}));
    b.poll_once(0).await.unwrap();
    assert_eq!(
        visible(&to_chat(h, STRANGER)[0]),
        bot::refusal(dozor::config::Lang::En)
    );
    let answer = visible(&to_chat(h, OWNER_CHAT)[0]);
    if matching.len() > 1 {
        assert!(answer.contains("matches several people"), "{answer}");
        for u in matching.iter().take(20) {
            assert!(answer.contains(&u.name), "{answer}");
        }
    } else {
        assert!(answer.contains("Open deals:"), "{answer}");
    }
}

#[test]
fn routes_follow_the_message_kind() {
    let mut tg: dozor::config::TelegramConfig = serde_json::from_value(json!({
        "bot_token": "1:x",
        "owner_chat": 1,
        "head_of_sales_chat": 2,
        "report_topic": 9,
        "managers": {"u7": 70},
    }))
    .unwrap();
    let r = |chat, thread| Some(Route { chat, thread });
    assert_eq!(route(Some(&tg), MessageKind::Report), r(1, Some(9)));
    assert_eq!(route(Some(&tg), MessageKind::Alert), r(2, None));
    assert_eq!(route(Some(&tg), MessageKind::Digest), r(2, None));
    assert_eq!(route(Some(&tg), MessageKind::Escalation), r(1, None));
    assert_eq!(
        route(Some(&tg), MessageKind::TaskNotice { manager: "u7" }),
        r(70, None)
    );
    assert_eq!(
        route(Some(&tg), MessageKind::TaskNotice { manager: "u8" }),
        None
    );
    assert_eq!(route(Some(&tg), MessageKind::SelfCheck), r(1, None));
    tg.ops_chat = Some(3);
    assert_eq!(route(Some(&tg), MessageKind::SelfCheck), r(3, None));
    assert_eq!(route(None, MessageKind::Report), None);
    let allowed = |chat| dozor::bot::access_of(&tg, chat).is_some();
    assert!(allowed(1) && allowed(3) && allowed(70));
    assert!(!allowed(STRANGER));
}

/// A report long enough for three parts.
fn long_html() -> String {
    let mut s = String::from("<b>Длинный отчёт</b>\n");
    for i in 0..250 {
        s.push_str(&format!(
            "<i>{}</i>: строка номер {i} с цифрами {}\n",
            escape_html(&format!("Менеджер <{i}>")),
            i * 7
        ));
    }
    s
}

#[tokio::test]
async fn failed_send_is_delivered_by_a_later_cycle_once_without_repeating_parts() {
    let s = setup("ru").await;
    let h = &s.h;
    let html = long_html();
    let parts = Telegram::parts(&html);
    assert_eq!(parts.len(), 3);
    let p = Proposal {
        key: "report:demo:test:long".into(),
        rule: "report",
        entity: None,
        summary: "long report".into(),
        effect: Effect::Telegram {
            chat: OWNER_CHAT,
            thread: Some(7),
            html: html.clone(),
        },
    };
    // The first part goes out, then Telegram keeps answering 429 beyond the retry budget.
    let tg = Telegram::new(s.cfg.telegram.as_ref().unwrap())
        .with_chat_interval(Duration::ZERO)
        .with_max_attempts(2);
    let sinks = ledger::Sinks {
        crm: s.tenant.crm.as_ref(),
        telegram: Some(&tg),
    };
    h.sim.telegram.fail_sends(1, 100, true);
    let out = ledger::apply(&s.store, "demo", &sinks, &p, config::RuleMode::On)
        .await
        .unwrap();
    assert!(
        matches!(out, Outcome::Retry(ref e) if e.contains("after 1 of 3 parts")),
        "{out:?}"
    );
    assert_eq!(to_chat(h, OWNER_CHAT).len(), 1);
    let row = s.store.action(&p.key).await.unwrap().unwrap();
    assert_eq!(row.state, "intent");

    // Still failing (now 502, the service down): the next cycle tries and keeps it pending.
    h.sim.telegram.fail_sends(0, 100, false);
    h.sim
        .set_faults(sim::System::Telegram, sim::Faults::default());
    let short = Telegram::new(s.cfg.telegram.as_ref().unwrap()).with_max_attempts(1);
    let sinks_short = ledger::Sinks {
        crm: s.tenant.crm.as_ref(),
        telegram: Some(&short),
    };
    let pending = ledger::redeliver_telegram(&s.store, "demo", &sinks_short)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert!(matches!(pending[0].1, Outcome::Retry(_)), "{pending:?}");
    assert_eq!(to_chat(h, OWNER_CHAT).len(), 1);

    // Telegram recovers: the next cycle sends the two missing parts, once.
    h.sim.telegram.fail_sends(0, 0, false);
    let summary = run_cycle(&s.store, &s.tenant, cycle_opts()).await;
    let redelivered: Vec<_> = summary
        .applied
        .iter()
        .filter(|a| a.rule == "redelivery")
        .collect();
    assert_eq!(redelivered.len(), 1, "{:?}", summary.applied);
    assert!(matches!(redelivered[0].outcome, Outcome::Done(_)));
    let got = to_chat(h, OWNER_CHAT);
    assert_eq!(got.len(), 3, "{got:#?}");
    for (m, part) in got.iter().zip(&parts) {
        assert_eq!(m.text.as_deref(), Some(part.as_str()));
        assert_eq!(m.thread, Some(7));
    }
    let row = s.store.action(&p.key).await.unwrap().unwrap();
    assert_eq!(row.state, "done");
    assert_eq!(row.result, Some(got[0].message_id.to_string()));

    // Later cycles and a re-proposal of the same key send nothing more.
    let summary = run_cycle(&s.store, &s.tenant, cycle_opts()).await;
    assert!(summary.applied.iter().all(|a| a.rule != "redelivery"));
    let again = ledger::apply(&s.store, "demo", &sinks, &p, config::RuleMode::On)
        .await
        .unwrap();
    assert_eq!(again, Outcome::AlreadyDone);
    assert_eq!(to_chat(h, OWNER_CHAT).len(), 3);
}

/// `dozor run` polls for commands beside its cycles, answers them, logs who asked (never what
/// else they wrote) and stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_answers_commands() {
    use std::process::{Command, Stdio};
    use std::time::Instant;

    let h = common::start_sim(SimOptions {
        enforce_limits: false,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\n[sync]\ninterval_secs = 600\n{}",
        common::free_port(),
        common::only_rules(
            tenant_config(
                &h,
                CrmKind::Bitrix24,
                TelephonyKind::Comagic,
                &common::sqlite_url(dir.path()),
                "ru"
            ),
            &[]
        )
    );
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, cfg).unwrap();
    h.sim
        .telegram
        .push_update(json!({"chat_id": OWNER_CHAT, "text": "/help", "from_id": 5}));
    h.sim.telegram.push_update(
        json!({"chat_id": STRANGER, "text": "/overdue private-words-here", "from_id": 6}),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_dozor"))
        .args([
            "--config",
            &path.display().to_string(),
            "--log-format",
            "json",
            "run",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60)
        && (to_chat(&h, OWNER_CHAT).is_empty() || to_chat(&h, STRANGER).is_empty())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let help = to_chat(&h, OWNER_CHAT);
    assert_eq!(help.len(), 1, "{help:?}");
    assert!(visible(&help[0]).contains("/report"));
    assert_eq!(to_chat(&h, STRANGER).len(), 1);
    assert_eq!(h.sim.telegram.commands().len(), 5);

    let (status, err) = common::terminate(&mut child).await;
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(err.contains("not allowed"), "{err}");
    assert!(err.contains(&STRANGER.to_string()), "{err}");
    assert!(!err.contains("private-words-here"), "{err}");
    assert!(!err.contains(h.sim.creds.telegram_bot_token.as_str()));
    h.stop().await;
}

/// Telegram redelivers an update it got no answer for, and after a week of silence picks ids at
/// random: the bot answers each update once, by its id, whatever ids came before (even one
/// forged push with id 10^12).
#[tokio::test]
async fn pushed_updates_are_answered_once_by_id_whatever_the_order() {
    let s = setup("ru").await;
    let h = &s.h;
    let b = fast_bot(&s);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let stop = tokio_util::sync::CancellationToken::new();
    let stop_tx = stop.clone();
    let task = tokio::spawn(b.run_pushed(rx, stop));
    let update = |id: i64| -> dozor::notify::telegram::Update {
        serde_json::from_value(json!({
            "update_id": id,
            "message": {
                "message_id": id,
                "date": 0,
                "chat": {"id": OWNER_CHAT, "type": "private"},
                "from": {"id": 5, "is_bot": false, "first_name": "Owner"},
                "text": "/help",
            }
        }))
        .unwrap()
    };
    // 500 again is a redelivery; 40 is below everything seen (ids jumped); after 10^12, 7.
    let ids = [500, 500, 40, 1_000_000_000_000, 7, 7];
    for id in ids {
        tx.send(update(id)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while to_chat(h, OWNER_CHAT).len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let any wrongly repeated answer arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = to_chat(h, OWNER_CHAT);
    assert_eq!(
        answers.len(),
        4,
        "one answer per distinct update: {answers:?}"
    );
    assert!(answers.iter().all(|m| visible(m).contains("/report")));
    stop_tx.cancel();
    task.await.unwrap();
    // Polling would go on from the last update taken, as getUpdates requires.
    let again = Bot::new(&s.cfg, s.store.clone()).unwrap();
    assert_eq!(again.offset().await.unwrap(), Some(8));
}

/// A manager's personal chat sees that manager's own figures only; the owner sees everyone's.
#[tokio::test]
async fn a_managers_chat_sees_only_their_own_figures() {
    let s = setup("ru").await;
    let h = &s.h;
    let mut b = fast_bot(&s);
    b.start().await.unwrap();
    let managers = s.cfg.telegram.as_ref().unwrap().managers.clone();
    let snap = Snapshot::load(&s.store, "demo").await.unwrap();
    let name_of = |id: &str| {
        snap.users
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.name.clone())
            .unwrap()
    };
    let now = chrono::Utc::now();
    let full = dozor::report::build(
        &s.store,
        &s.cfg,
        dozor::report::Kind::Monthly,
        None,
        now,
        &[],
    )
    .await
    .unwrap();
    // The manager with the most revenue last month, so that there is something to hide.
    let me = full
        .figures
        .managers
        .iter()
        .filter(|m| managers.contains_key(&m.user_id))
        .max_by(|a, b| a.revenue.total_cmp(&b.revenue))
        .expect("a configured manager in the monthly figures")
        .clone();
    let my_chat = managers[&me.user_id];
    let others: Vec<String> = managers
        .keys()
        .filter(|id| **id != me.user_id)
        .map(|id| name_of(id))
        .collect();
    assert!(!others.is_empty());
    let push = |chat: i64, text: &str| {
        h.sim
            .telegram
            .push_update(json!({"chat_id": chat, "text": text, "from_id": 77}))
    };
    push(my_chat, "/report month");
    push(my_chat, "/overdue");
    push(my_chat, &format!("/manager {}", others[0]));
    push(OWNER_CHAT, "/report month");
    assert_eq!(b.poll_once(0).await.unwrap(), 4);

    let mine = to_chat(h, my_chat);
    assert_eq!(
        mine.len(),
        3,
        "text only, no chart comparing managers: {mine:?}"
    );
    let report = visible(&mine[0]);
    assert!(report.starts_with("Ваши показатели"), "{report}");
    assert!(report.contains(&me.name), "{report}");
    let revenue = dozor::report::render::money(me.revenue, dozor::config::Lang::Ru);
    assert!(report.contains(&format!("Выручка: {revenue}")), "{report}");
    let card = visible(&mine[2]);
    assert!(
        card.starts_with("В личном чате видны только ваши показатели."),
        "{card}"
    );
    assert!(card.contains(&me.name), "{card}");
    for m in &mine {
        let text = visible(m);
        for other in &others {
            assert!(
                !text.contains(other.as_str()),
                "{other} shown to {}: {text}",
                me.name
            );
        }
    }
    // The owner's chat gets the whole report, with the chart comparing managers.
    let owner = to_chat(h, OWNER_CHAT);
    assert!(owner.len() >= 2, "{owner:?}");
    assert!(owner.iter().any(|m| m.kind == "photo"));
}
