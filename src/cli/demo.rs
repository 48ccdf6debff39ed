//! `dozor demo`: the whole product on simulated data, with no config and no network.
//!
//! Starts the simulator on a free loopback port, writes a tenant config pointing at it (through
//! the same parser as a real config file), then runs two full cycles and the daily report exactly
//! as the daemon would, and prints what happened.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use chrono::{Duration, Utc};

use super::{Cli, CmdResult, CrmArg, DemoArgs, LogFormatArg, TelephonyArg, init_logging};
use crate::config::{self, Lang, LogFormat, RuleMode};
use crate::engine::{self, CycleOptions};
use crate::ledger::Outcome;
use crate::ledger::action_lines;
use crate::report;
use crate::service::reports::send_report;
use crate::store::Store;
use crate::tenant;
use dozor_sim::tenant_config::{CrmKind, OWNER_CHAT, TelephonyKind, tenant_config};
use dozor_sim::{self as sim, SimOptions};

/// Removes the temporary demo directory when the demo ends, however it ends.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

// Long: the demo is a script read top to bottom (start the simulator, configure, run cycles, show
// the outcome); steps depend on the previous ones' state.
pub(crate) async fn demo(cli: &Cli, a: &DemoArgs) -> CmdResult {
    let lang: Lang = a.lang.into();
    let ru = lang == Lang::Ru;
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        _ => LogFormat::Human,
    };
    // The demo narrates itself on stdout; logs only for trouble.
    init_logging(format, "warn");
    let started = Instant::now();
    let (dir, _cleanup) = match &a.data_dir {
        Some(d) => (d.clone(), TempDir(None)),
        None => {
            let d = std::env::temp_dir().join(format!(
                "dozor-demo-{}-{}",
                std::process::id(),
                Utc::now().timestamp_micros()
            ));
            (d.clone(), TempDir(Some(d)))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let db_url = format!("sqlite://{}", dir.join("dozor.db").display());

    let opts = SimOptions {
        seed: a.seed,
        scale: a.scale,
        anchor: None,
        enforce_limits: true,
        b24_enterprise: false,
    };
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let h = sim::start(opts, addr)
        .await
        .context("cannot start the simulator")?;
    let crm = match a.crm {
        CrmArg::Bitrix24 => CrmKind::Bitrix24,
        CrmArg::Amocrm => CrmKind::Amocrm,
    };
    let tel = match a.telephony {
        TelephonyArg::Comagic => TelephonyKind::Comagic,
        TelephonyArg::Calltouch => TelephonyKind::Calltouch,
    };
    let text = tenant_config(&h, crm, tel, &db_url, if ru { "ru" } else { "en" });
    let mut loaded = config::parse(&text, None, None)?;
    // The simulator is nobody's CRM: the demo shows the rules acting, not in shadow.
    let rules = &mut loaded.config.tenants[0].rules;
    for name in config::RulesConfig::NAMES {
        if let Some(r) = rules.get_mut(name)
            && r.mode() != RuleMode::Off
        {
            r.set_mode(RuleMode::On);
        }
    }
    let t = &loaded.config.tenants[0];
    let store = Store::open(&db_url, 4).await?;
    let tenant = tenant::connect(t, &store)
        .await
        .context("connecting the demo tenant")?;

    {
        let w = h.sim.world();
        if ru {
            println!(
                "dozor demo: симулятор на {} (seed {}, масштаб {})",
                h.base_url(),
                a.seed,
                a.scale
            );
            println!(
                "Компания: {} пользователей, {} сделок, {} лидов, {} контактов, {} задач, {} звонков в телефонии",
                w.users.len(),
                w.deals.len(),
                w.leads.len(),
                w.contacts.len(),
                w.tasks.len(),
                w.calls.len()
            );
        } else {
            println!(
                "dozor demo: simulator at {} (seed {}, scale {})",
                h.base_url(),
                a.seed,
                a.scale
            );
            println!(
                "Company: {} users, {} deals, {} leads, {} contacts, {} tasks, {} telephony calls",
                w.users.len(),
                w.deals.len(),
                w.leads.len(),
                w.contacts.len(),
                w.tasks.len(),
                w.calls.len()
            );
        }
    }
    println!(
        "CRM: {} ({}), {}: {}\n",
        tenant.crm.kind().as_str(),
        tenant.crm.account(),
        if ru {
            "телефония"
        } else {
            "telephony"
        },
        tenant
            .telephony
            .as_ref()
            .map(|t| t.kind().as_str())
            .unwrap_or("-")
    );

    let copts = CycleOptions {
        dry_run: false,
        sync: crate::sync::SyncOptions::default(),
        now: None,
    };
    let first = engine::run_cycle(&store, &tenant, copts).await;
    println!(
        "{}",
        if ru {
            "== Цикл 1: синхронизация и правила"
        } else {
            "== Cycle 1: sync and rules"
        }
    );
    for r in &first.synced {
        let parts: Vec<String> = r.items.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "  {:<10} {} ({:.1} s)",
            r.source,
            parts.join(", "),
            r.elapsed.as_secs_f64()
        );
    }
    let stats = h.sim.stats();
    let reqs: Vec<String> = stats
        .iter()
        .map(|(s, st)| format!("{} {}", s.as_str(), st.requests))
        .collect();
    println!(
        "  {}: {}",
        if ru {
            "HTTP-запросов"
        } else {
            "HTTP requests"
        },
        reqs.join(", ")
    );
    for e in &first.errors {
        println!("  {} {e}", if ru { "ОШИБКА" } else { "ERROR" });
    }
    print_actions(&first, ru);

    // A second cycle: what cycle 1 set in motion (tasks for the deals it created, calls of the
    // leads it created) is done now; nothing cycle 1 did is done again.
    let second = engine::run_cycle(&store, &tenant, copts).await;
    let follow_ups = second
        .applied
        .iter()
        .filter(|x| x.crm_write && matches!(x.outcome, Outcome::Done(_)))
        .count();
    let repeats = second
        .applied
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::AlreadyDone))
        .count();
    let duplicates = duplicates_in(&h.sim.world());
    if ru {
        println!(
            "\n== Цикл 2: новых записей в CRM — {follow_ups} (следствия цикла 1); уже сделанных и не повторённых — {repeats}; дублей в CRM — {duplicates}"
        );
    } else {
        println!(
            "\n== Cycle 2: new CRM writes — {follow_ups} (follow-ups of cycle 1); already done and not repeated — {repeats}; duplicates in the CRM — {duplicates}"
        );
    }

    let now = Utc::now();
    let day = report::local_date(t, now) - Duration::days(1);
    let actions = action_lines(&store, &t.id).await?;
    let rep = report::daily(&store, t, day, now, &actions).await?;
    println!(
        "\n== {} ==\n",
        if ru {
            "Ежедневный отчёт (как он уйдёт в Telegram)"
        } else {
            "Daily report (as sent to Telegram)"
        }
    );
    println!("{}", rep.plain());
    match send_report(&store, &tenant, &rep).await {
        Ok(Outcome::Done(id)) => println!(
            "{} {OWNER_CHAT} (message {id}); {}: {}",
            if ru {
                "Отчёт отправлен в чат владельца"
            } else {
                "Report sent to the owner chat"
            },
            if ru {
                "сообщений в Telegram-симуляторе"
            } else {
                "messages in the Telegram fake"
            },
            h.sim.telegram.sent_count()
        ),
        Ok(other) => println!("report: {other:?}"),
        Err(e) => println!(
            "{}: {e:#}",
            if ru {
                "Отчёт не отправлен"
            } else {
                "Report not sent"
            }
        ),
    }
    println!(
        "\n{} {:.1} s",
        if ru {
            "Демо заняло"
        } else {
            "Demo took"
        },
        started.elapsed().as_secs_f64()
    );
    store.close().await;
    h.stop().await;
    Ok(if first.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_actions(s: &engine::CycleSummary, ru: bool) {
    println!(
        "\n{}",
        if ru {
            "== Действия по правилам"
        } else {
            "== Actions by rule"
        }
    );
    let mut by_rule: BTreeMap<&str, Vec<&engine::Applied>> = BTreeMap::new();
    for a in &s.applied {
        by_rule.entry(a.rule).or_default().push(a);
    }
    if by_rule.is_empty() {
        println!(
            "  {}",
            if ru {
                "нарушений не найдено"
            } else {
                "nothing to do"
            }
        );
    }
    for (rule, items) in by_rule {
        let done = items
            .iter()
            .filter(|x| matches!(x.outcome, Outcome::Done(_)))
            .count();
        println!(
            "  {rule}: {} {done} / {}",
            if ru { "выполнено" } else { "done" },
            items.len()
        );
        for x in items.iter().take(5) {
            println!("    - {} → {:?}", x.summary, x.outcome);
        }
        if items.len() > 5 {
            println!(
                "    … {} {}",
                items.len() - 5,
                if ru { "ещё" } else { "more" }
            );
        }
    }
}

/// Writes that landed twice in the simulated CRM: ledger markers found on more than one task,
/// and telephony calls registered more than once. Counted from the CRM's side, not the ledger's.
fn duplicates_in(w: &sim::World) -> usize {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for t in w.tasks.values() {
        let text = format!("{} {}", t.title, t.description);
        for part in text.split("[dozor:").skip(1) {
            if let Some(key) = part.split(']').next() {
                *seen.entry(format!("task {key}")).or_default() += 1;
            }
        }
    }
    for a in w.activities.values() {
        if let Some(x) = &a.external_id {
            *seen.entry(format!("call {x}")).or_default() += 1;
        }
    }
    seen.values().filter(|n| **n > 1).map(|n| n - 1).sum()
}
