//! Helpers shared by integration tests: database URLs for the store on both backends.
//!
//! PostgreSQL tests need a server. `scripts/test` starts a throwaway one and exports its admin
//! URL as `DOZOR_TEST_PG_URL`; every call to [`pg_url`] creates a fresh database on it, so tests
//! can run in parallel and run again without stepping on earlier schemas.

#![allow(dead_code)]

pub mod config;
pub mod crm;
pub mod wait;
pub mod world;

#[allow(unused_imports)]
pub use config::*;
#[allow(unused_imports)]
pub use wait::*;
#[allow(unused_imports)]
pub use world::*;

use std::path::Path;

use sqlx::Connection;

/// The environment variable holding the admin URL of a test PostgreSQL server.
pub const PG_ENV: &str = "DOZOR_TEST_PG_URL";

/// True when PostgreSQL tests are switched off explicitly with `DOZOR_SKIP_PG=1`.
pub fn pg_skipped() -> bool {
    std::env::var("DOZOR_SKIP_PG").is_ok_and(|v| v == "1")
}

/// Creates a fresh, empty database `dozor_test_<random>` on the test server and returns its URL.
///
/// Panics (failing the test) when `DOZOR_TEST_PG_URL` is unset: a PostgreSQL test that quietly
/// passes without a server proves nothing. Check [`pg_skipped`] first to honour `DOZOR_SKIP_PG=1`.
pub async fn pg_url() -> String {
    let admin = std::env::var(PG_ENV).unwrap_or_else(|_| {
        panic!(
            "{PG_ENV} is not set. Run the tests with `scripts/test` (it starts a throwaway \
             PostgreSQL and sets {PG_ENV}), point {PG_ENV} at a server where this user may \
             CREATE DATABASE, or set DOZOR_SKIP_PG=1 to skip the PostgreSQL tests."
        )
    });
    let mut url = url::Url::parse(&admin).unwrap_or_else(|e| {
        panic!("{PG_ENV} is not a URL ({e}): use postgres://USER@HOST:PORT/DB")
    });
    let name = format!("dozor_test_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to {PG_ENV} ({}): {e}; is the server running?",
                dozor::store::redact_db_url(&admin)
            )
        });
    // The name is generated above (hex digits only), so formatting it into SQL is safe.
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
    conn.close().await.ok();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A SQLite database file inside `dir` (usually a `tempfile::tempdir()`).
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("dozor.db").display())
}

/// Switches the rules in `keep` `on` and every other rule `off`, so a test sees only its rules'
/// actions. Rules start in shadow by default: a test that expects writes says so here.
pub fn only_rules(config: String, keep: &[&str]) -> String {
    use dozor::config::RuleMode;
    dozor::config::RulesConfig::NAMES
        .iter()
        .fold(config, |text, rule| {
            let mode = if keep.contains(rule) {
                RuleMode::On
            } else {
                RuleMode::Off
            };
            with_rule_mode(&text, rule, mode)
        })
}

/// Switches `on` every rule that is not `off` by default (they start in shadow), for tests of
/// the whole product acting on the simulator.
pub fn rules_on(config: String) -> String {
    use dozor::config::{RuleMode, RulesConfig};
    RulesConfig::default()
        .iter()
        .into_iter()
        .filter(|(_, r)| r.mode() != RuleMode::Off)
        .fold(config, |t, (name, _)| {
            with_rule_mode(&t, name, RuleMode::On)
        })
}

/// `text` with `rule` in `mode`: the `mode` line of its `[tenants.rules.RULE]` section is
/// replaced (or added under the header), else the section is appended. For configs of one
/// tenant, as the simulator's `tenant_config` writes them.
pub fn with_rule_mode(text: &str, rule: &str, mode: dozor::config::RuleMode) -> String {
    use dozor::config::RuleMode;
    let header = format!("[tenants.rules.{rule}]");
    let name = match mode {
        RuleMode::Off => "off",
        RuleMode::Shadow => "shadow",
        RuleMode::On => "on",
    };
    let mode_line = format!("mode = \"{name}\"");
    let Some(at) = text.find(&header) else {
        return format!("{text}\n{header}\n{mode_line}\n");
    };
    let body_start = at + header.len();
    let body_end = text[body_start..]
        .find("\n[")
        .map_or(text.len(), |i| body_start + i);
    // The header's own line end comes first; every other line but an old `mode` stays.
    let kept: String = text[body_start..body_end]
        .lines()
        .skip(1)
        .filter(|l| {
            !l.trim_start()
                .strip_prefix("mode")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|l| format!("\n{l}"))
        .collect();
    let after = &text[body_end..];
    let end = if after.is_empty() { "\n" } else { "" };
    format!("{}\n{mode_line}{kept}{end}{after}", &text[..body_start])
}

/// The simulator's tenant config for the product's CRM and telephony kinds.
pub fn tenant_config(
    h: &dozor_sim::SimHandle,
    crm: dozor::domain::CrmKind,
    tel: dozor::domain::TelephonyKind,
    db_url: &str,
    lang: &str,
) -> String {
    use dozor::domain::{CrmKind, TelephonyKind};
    use dozor_sim::tenant_config as sim;
    let crm = match crm {
        CrmKind::Bitrix24 => sim::CrmKind::Bitrix24,
        CrmKind::Amocrm => sim::CrmKind::Amocrm,
    };
    let tel = match tel {
        TelephonyKind::Comagic => sim::TelephonyKind::Comagic,
        TelephonyKind::Calltouch => sim::TelephonyKind::Calltouch,
    };
    sim::tenant_config(h, crm, tel, db_url, lang)
}

/// A token store in memory, for connector tests that are not about token persistence (those
/// use a real SQLite file through `dozor::store::Store`).
#[derive(Default)]
pub struct MemTokens(
    std::sync::Mutex<std::collections::HashMap<(String, String), dozor::store::TokenSet>>,
);

#[async_trait::async_trait]
impl dozor::store::TokenStore for MemTokens {
    async fn load_token(
        &self,
        tenant: &str,
        system: &str,
    ) -> dozor::store::Result<Option<dozor::store::TokenSet>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&(tenant.into(), system.into()))
            .cloned())
    }

    async fn save_token(
        &self,
        tenant: &str,
        system: &str,
        t: &dozor::store::TokenSet,
    ) -> dozor::store::Result<()> {
        self.0
            .lock()
            .unwrap()
            .insert((tenant.into(), system.into()), t.clone());
        Ok(())
    }
}

/// CRM writes dozor made more than once in a simulated world: ledger markers in tasks, calls
/// registered by provider id, leads created for unknown callers. Empty when nothing is doubled.
pub fn written_twice(w: &dozor_sim::world::World) -> Vec<(String, usize)> {
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    for t in w.tasks.values() {
        let text = format!("{} {}", t.title, t.description);
        for part in text.split("[dozor:").skip(1) {
            *seen
                .entry(part.split(']').next().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    for a in w.activities.values() {
        if let Some(x) = &a.external_id {
            *seen.entry(format!("call {x}")).or_default() += 1;
        }
    }
    for l in w
        .leads
        .values()
        .filter(|l| l.title.starts_with("Входящий звонок"))
    {
        *seen.entry(format!("lead {}", l.title)).or_default() += 1;
    }
    seen.into_iter().filter(|(_, n)| *n > 1).collect()
}

/// Telegram messages the fake received more than once (same chat, same text), with a count.
pub fn telegram_doubles(sim: &dozor_sim::Sim) -> Vec<(i64, String, usize)> {
    let mut seen: std::collections::BTreeMap<(i64, String), usize> = Default::default();
    for m in sim.telegram.messages() {
        // A photo is told apart by its caption and size (charts carry no caption).
        let what = format!(
            "{}{}",
            m.text.clone().unwrap_or_default(),
            m.photo_len
                .map(|n| format!(" [{} {n} B]", m.kind))
                .unwrap_or_default()
        );
        *seen.entry((m.chat_id, what)).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((chat, text), n)| (chat, text.chars().take(80).collect(), n))
        .collect()
}

/// Open deals of the world with no open task due now or later: the "no deal without a next
/// step" rule's work not done, or lost.
pub fn open_deals_without_task(w: &dozor_sim::world::World) -> std::collections::HashSet<u64> {
    use dozor_sim::world::{Owner, StageKind};
    let now = chrono::Utc::now();
    let covered: std::collections::HashSet<u64> = w
        .tasks
        .values()
        .filter(|t| !t.completed && t.deadline.is_none_or(|d| d >= now))
        .filter_map(|t| match t.binding {
            Some((Owner::Deal, id)) => Some(id),
            _ => None,
        })
        .collect();
    w.deals
        .values()
        .filter(|d| {
            w.pipeline(d.pipeline_id)
                .and_then(|p| p.stages.iter().find(|s| s.id == d.stage_id))
                .is_some_and(|s| s.kind == StageKind::Open)
        })
        .filter(|d| !covered.contains(&d.id))
        .map(|d| d.id)
        .collect()
}

/// A loopback TCP port free at the time of the call, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends SIGTERM to `child` and waits (at most 20 s) for it to exit; returns its status and
/// what it wrote to stderr (which must be piped).
pub async fn terminate(child: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopped = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(20),
            "did not stop within 20 s of SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status, err)
}

/// Watches the resident high-water mark (VmHWM) of process `pid` until it is gone or a zombie;
/// join the handle for the peak in KiB.
pub fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak_kib = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(v) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            {
                peak_kib = v;
            }
            if status.contains("State:\tZ") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        peak_kib
    })
}

/// A daemon process, killed (SIGKILL: a crash, not a clean stop) when the test ends or fails
/// half-way.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
