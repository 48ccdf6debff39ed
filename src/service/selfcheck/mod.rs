//! Self-checks: after every cycle each tenant's operational health is evaluated, and a problem
//! is reported to the ops chat once when it appears and once more ("cleared") when it goes away.
//!
//! Why the state lives in the store and the messages go through the ledger: the daemon is
//! restarted by systemd, killed by OOM, upgraded. A check raised before a restart must not be
//! raised again after it (the `selfchecks` table remembers it), and a crash between sending a
//! message and recording that it was sent must not send it twice (the message is a ledger action
//! with a deterministic key, `selfcheck:TENANT:CHECK:raised:N`, recorded before it is sent; the
//! state is written only after the ledger says the message went out, so a crash in between
//! replays the same key and the ledger answers "already done").
//!
//! The checks: the CRM needs re-authorisation (refresh refused) or its refresh token is near
//! its 3-month expiry; the telephony refuses its credentials; a source has not synced for
//! several cycles; the ledger backlog grows; the disk holding `data_dir` is nearly full; and
//! webhook deliveries stopped (reported by the webhook receiver through [`Problem::webhooks_stopped`]).

mod webhook_watch;
pub(crate) use webhook_watch::WebhookWatch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::Utc;
use futures::FutureExt as _;
use sqlx::Row;

pub use crate::config::SelfCheckConfig;
use crate::config::{Lang, RuleMode};
use crate::engine::CycleSummary;
use crate::ledger::{self, Effect, Outcome, Proposal};
use crate::notify::telegram::escape_html as esc;
use crate::service::server::metrics;
use crate::store::{Store, TokenStore};
use crate::tenant::Tenant;

/// The ledger rule name of self-check messages.
pub(crate) const RULE: &str = "selfcheck";

/// What a self-check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The CRM refused a token refresh (or has no token): a person must re-authorise.
    Reauth,
    /// The stored refresh token is older than `token_warn_days`.
    TokenAge,
    /// The telephony refused its credentials.
    TelephonyAuth,
    /// A source has not synced for `stale_cycles` cycles.
    Stale,
    /// More ledger intents without an outcome than `ledger_backlog`.
    Backlog,
    /// The disk holding `data_dir` is nearly full.
    Disk,
    /// Webhook deliveries from a source stopped. The webhook receiver knows when deliveries
    /// last arrived and how often they should: it builds the problem with
    /// [`Problem::webhooks_stopped`] and passes it to [`run`] in `extra`; raising, clearing and
    /// persistence are then the same as for every other check.
    WebhooksStopped,
}

impl Check {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Check::Reauth => "reauth",
            Check::TokenAge => "token_age",
            Check::TelephonyAuth => "telephony_auth",
            Check::Stale => "stale",
            Check::Backlog => "backlog",
            Check::Disk => "disk",
            Check::WebhooksStopped => "webhooks_stopped",
        }
    }
}

/// A problem found now.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub check: Check,
    /// The system or source concerned (`amocrm`, `comagic`), or `data_dir`, `ledger`.
    pub(crate) subject: String,
    /// One line for the ops chat, in the tenant's language (HTML-escaped).
    pub text: String,
}

impl Problem {
    /// `check:subject`, the identity a raise and its clear share.
    pub fn id(&self) -> String {
        format!("{}:{}", self.check.as_str(), self.subject)
    }

    /// Webhook deliveries from `source` stopped `silent_mins` minutes ago.
    pub fn webhooks_stopped(source: &str, silent_mins: u64, lang: Lang) -> Problem {
        let s = esc(system_name(source));
        match lang {
            Lang::Ru => Problem {
                check: Check::WebhooksStopped,
                subject: source.to_string(),
                text: format!(
                    "вебхуки от {s} не приходят уже {silent_mins} мин.: изменения приходят только с опросом. Проверьте настройки вебхуков в {s}."
                ),
            },
            Lang::En => Problem {
                check: Check::WebhooksStopped,
                subject: source.to_string(),
                text: format!(
                    "no webhook from {s} for {silent_mins} min: changes arrive only by polling. Check the webhook settings in {s}."
                ),
            },
        }
    }
}

/// A message sent (or due) because a check changed state.
#[derive(Debug, Clone)]
pub struct Transition {
    pub id: String,
    /// true: raised; false: cleared.
    pub raised: bool,
}

fn system_name(s: &str) -> &str {
    match s {
        "amocrm" => "amoCRM",
        "bitrix24" => "Bitrix24",
        "comagic" => "CoMagic",
        "calltouch" => "Calltouch",
        other => other,
    }
}

/// Free and total bytes of the file system holding `path` (`statvfs`).
///
/// `libc` is used directly: it is one call, the crate is already built as a dependency of
/// tokio, and `nix` or `fs4` would add a crate for it.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data, for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = if st.f_frsize > 0 {
        st.f_frsize as u64
    } else {
        st.f_bsize as u64
    };
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// The problems of `tenant` after the cycle `summary`.
// Long: one check after another (credentials, sync, backlog, disk), each a few lines producing a
// Problem; their list is the reference.
pub async fn evaluate(
    store: &Store,
    tenant: &Tenant,
    summary: &CycleSummary,
    cfg: &SelfCheckConfig,
    data_dir: Option<&Path>,
) -> Vec<Problem> {
    let lang = tenant.cfg.lang;
    let ru = lang == Lang::Ru;
    let mut out = Vec::new();
    let tid = tenant.id();

    // CRM credentials.
    let crm = tenant.crm.kind().as_str();
    let crm_static: &'static str = match crm {
        "amocrm" => "amocrm",
        _ => "bitrix24",
    };
    let reauth = crate::telemetry::reauth_required(tid).contains(&crm_static)
        || summary.auth_failed.contains(&crm_static);
    // Keep the metric in step with what the cycle saw (webhook or long-lived token refused).
    if summary.auth_failed.contains(&crm_static) {
        crate::telemetry::set_reauth_required(tid, crm_static, true);
    } else if summary.errors.is_empty() || summary.synced.iter().any(|r| r.source == crm) {
        crate::telemetry::set_reauth_required(tid, crm_static, false);
    }
    let n = esc(system_name(crm));
    if reauth {
        out.push(Problem {
            check: Check::Reauth,
            subject: crm.to_string(),
            text: if ru {
                format!(
                    "{n} отклоняет доступ: нужна повторная авторизация интеграции (токен отозван или истёк). До этого CRM не синхронизируется и правила не работают."
                )
            } else {
                format!(
                    "{n} refuses access: the integration must be re-authorised (token revoked or expired). Until then the CRM is not synced and no rule runs."
                )
            },
        });
    } else if let Ok(Some(t)) = store.load_token(tid, crm).await
        && t.refresh_token.is_some()
        && let Some(at) = t.refreshed_at
    {
        let days = (Utc::now() - at).num_days();
        if days >= i64::from(cfg.token_warn_days) {
            out.push(Problem {
                check: Check::TokenAge,
                subject: crm.to_string(),
                text: if ru {
                    format!(
                        "токен обновления {n} не обновлялся {days} дн.; через 3 месяца без обновления он истечёт и понадобится повторная авторизация."
                    )
                } else {
                    format!(
                        "the {n} refresh token was last renewed {days} days ago; after 3 months it expires and the integration must be re-authorised."
                    )
                },
            });
        }
    }

    // Telephony credentials.
    let mut auth_reported: BTreeSet<String> = BTreeSet::from([crm.to_string()]);
    if let Some(tel) = &tenant.telephony {
        let sys = tel.kind().as_str();
        if summary.auth_failed.contains(&sys) {
            let n = esc(system_name(sys));
            auth_reported.insert(sys.to_string());
            out.push(Problem {
                check: Check::TelephonyAuth,
                subject: sys.to_string(),
                text: if ru {
                    format!(
                        "телефония {n} отклоняет ключ доступа: звонки не загружаются. Проверьте ключ в настройках."
                    )
                } else {
                    format!(
                        "the {n} telephony refuses its credentials: calls are not loaded. Check the key in the config."
                    )
                },
            });
        }
    }

    // Sources that stopped syncing (credential problems are reported above, not twice).
    if cfg.stale_cycles > 0
        && let Ok(sources) = stale_sources(store, tid, cfg.stale_cycles).await
    {
        for (source, error) in sources {
            if auth_reported.contains(&source) || (reauth && source == crm) {
                continue;
            }
            let n = esc(system_name(&source));
            let k = cfg.stale_cycles;
            let why = error
                .map(|e| format!(": {}", esc(&e.chars().take(200).collect::<String>())))
                .unwrap_or_default();
            out.push(Problem {
                check: Check::Stale,
                subject: source.clone(),
                text: if ru {
                    format!("{n} не синхронизируется {k} циклов подряд{why}")
                } else {
                    format!("{n} has not synced for {k} cycles in a row{why}")
                },
            });
        }
    }

    // Ledger backlog.
    if let Ok(pending) = metrics::ledger_pending(store, tid).await
        && pending > cfg.ledger_backlog
    {
        let t = cfg.ledger_backlog;
        out.push(Problem {
            check: Check::Backlog,
            subject: "ledger".into(),
            text: if ru {
                format!(
                    "в журнале действий {pending} незавершённых действий (порог {t}): CRM или Telegram не принимают записи."
                )
            } else {
                format!(
                    "{pending} actions in the ledger have no outcome (threshold {t}): the CRM or Telegram is not accepting writes."
                )
            },
        });
    }

    // Disk space of data_dir.
    if let Some(dir) = data_dir
        && let Some((free, total)) = disk_space(dir)
        && total > 0
    {
        let free_mib = free / (1024 * 1024);
        let pct = free as f64 * 100.0 / total as f64;
        if pct < cfg.disk_min_free_percent || free_mib < cfg.disk_min_free_mib {
            let d = esc(&dir.display().to_string());
            out.push(Problem {
                check: Check::Disk,
                subject: "data_dir".into(),
                text: if ru {
                    format!(
                        "на диске с данными ({d}) свободно {free_mib} МиБ ({pct:.1} %): база перестанет записываться, когда место кончится."
                    )
                } else {
                    format!(
                        "the data disk ({d}) has {free_mib} MiB free ({pct:.1} %): the database stops writing when it runs out."
                    )
                },
            });
        }
    }
    out
}

/// Sources of `tenant` whose last `n` sync runs all failed, with the last error.
async fn stale_sources(
    store: &Store,
    tenant: &str,
    n: u32,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    let sources: Vec<String> =
        sqlx::query("SELECT DISTINCT source FROM sync_runs WHERE tenant = $1 ORDER BY source")
            .bind(tenant)
            .fetch_all(store.pool())
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    let mut out = Vec::new();
    for source in sources {
        let rows = sqlx::query(
            "SELECT CAST(ok AS INTEGER), error FROM sync_runs WHERE tenant = $1 AND source = $2 ORDER BY started_at DESC, id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(&source)
        .bind(i64::from(n))
        .fetch_all(store.pool())
        .await?;
        if rows.len() as u32 >= n && rows.iter().all(|r| r.get::<i64, _>(0) == 0) {
            out.push((source, rows[0].get::<Option<String>, _>(1)));
        }
    }
    Ok(out)
}

/// Raised/seq per check id, as stored.
async fn load_state(
    store: &Store,
    tenant: &str,
) -> Result<BTreeMap<String, (bool, i64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT check_id, raised, seq FROM selfchecks WHERE tenant = $1")
        .bind(tenant)
        .fetch_all(store.pool())
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get::<i64, _>(1) != 0, r.get(2))))
        .collect())
}

async fn save_state(
    store: &Store,
    tenant: &str,
    id: &str,
    raised: bool,
    seq: i64,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO selfchecks (tenant, check_id, raised, seq, detail, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant, check_id) DO UPDATE SET raised = excluded.raised, seq = excluded.seq, \
         detail = excluded.detail, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(id)
    .bind(i64::from(raised))
    .bind(seq)
    .bind(detail)
    .bind(Utc::now().timestamp())
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Evaluates the checks of `tenant` after `summary` (plus `extra` problems found elsewhere,
/// e.g. [`Problem::webhooks_stopped`]) and sends what changed to the ops chat. Never fails the
/// cycle: errors are logged.
pub async fn run(
    store: &Store,
    tenant: &Tenant,
    summary: &CycleSummary,
    cfg: &SelfCheckConfig,
    data_dir: Option<&Path>,
    extra: &[Problem],
) -> Vec<Transition> {
    if !cfg.enabled {
        return Vec::new();
    }
    let mut problems = evaluate(store, tenant, summary, cfg, data_dir).await;
    problems.extend(extra.iter().cloned());
    match notify(store, tenant, &problems).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(tenant = tenant.id(), error = %e, "self-check state not saved");
            Vec::new()
        }
    }
}

/// Raises the problems not raised yet and clears the raised ones that are gone.
pub async fn notify(
    store: &Store,
    tenant: &Tenant,
    problems: &[Problem],
) -> Result<Vec<Transition>, Box<dyn std::error::Error + Send + Sync>> {
    let tid = tenant.id();
    let ru = tenant.cfg.lang == Lang::Ru;
    let state = load_state(store, tid).await?;
    let active: BTreeMap<String, &Problem> = problems.iter().map(|p| (p.id(), p)).collect();
    let sinks = tenant.sinks();
    let chat = tenant.ops_chat();
    let name = esc(tenant.label());
    let mut out = Vec::new();

    let mut changes: Vec<(String, bool, i64, String, String)> = Vec::new();
    for (id, p) in &active {
        let (raised, seq) = state.get(id).copied().unwrap_or((false, 0));
        if !raised {
            let html = format!("⚠️ <b>{name}</b>: {}", p.text);
            changes.push((id.clone(), true, seq + 1, html, p.text.clone()));
        }
    }
    for (id, (raised, seq)) in &state {
        if *raised && !active.contains_key(id) {
            let title = cleared_title(id, ru);
            let html = if ru {
                format!("✅ <b>{name}</b>: устранено: {title}")
            } else {
                format!("✅ <b>{name}</b>: resolved: {title}")
            };
            changes.push((id.clone(), false, *seq, html, String::new()));
        }
    }
    for (id, raised, seq, html, detail) in changes {
        let key = format!(
            "{RULE}:{tid}:{id}:{}:{seq}",
            if raised { "raised" } else { "cleared" }
        );
        let outcome = match chat {
            Some(chat) => {
                let p = Proposal {
                    key,
                    rule: RULE,
                    entity: None,
                    effect: Effect::Telegram {
                        chat,
                        thread: None,
                        html,
                    },
                    summary: format!(
                        "self-check {id} {}",
                        if raised { "raised" } else { "cleared" }
                    ),
                };
                ledger::apply(store, tid, &sinks, &p, RuleMode::On).await?
            }
            None => {
                tracing::warn!(tenant = tid, check = %id, raised, "self-check changed; no ops chat configured");
                Outcome::Skipped
            }
        };
        tracing::info!(tenant = tid, check = %id, raised, ?outcome, "self-check");
        // A message that may still go out (transient failure) keeps the state as it was, so
        // the next cycle retries the same key.
        if !matches!(outcome, Outcome::Retry(_)) {
            save_state(store, tid, &id, raised, seq, &detail).await?;
        }
        out.push(Transition { id, raised });
    }
    Ok(out)
}

/// What the "cleared" message names, from the check id alone (the problem is gone, so its
/// text is not at hand).
fn cleared_title(id: &str, ru: bool) -> String {
    let (check, subject) = id.split_once(':').unwrap_or((id, ""));
    let n = esc(system_name(subject));
    match (check, ru) {
        ("reauth", true) => format!("доступ к {n} восстановлен"),
        ("reauth", false) => format!("access to {n} restored"),
        ("token_age", true) => format!("токен {n} обновлён"),
        ("token_age", false) => format!("{n} token renewed"),
        ("telephony_auth", true) => format!("доступ к телефонии {n} восстановлен"),
        ("telephony_auth", false) => format!("{n} telephony accepts its credentials again"),
        ("stale", true) => format!("{n} снова синхронизируется"),
        ("stale", false) => format!("{n} syncs again"),
        ("backlog", true) => "очередь действий разобрана".into(),
        ("backlog", false) => "the action backlog is cleared".into(),
        ("disk", true) => "места на диске с данными достаточно".into(),
        ("disk", false) => "the data disk has enough free space".into(),
        ("webhooks_stopped", true) => format!("вебхуки от {n} снова приходят"),
        ("webhooks_stopped", false) => format!("webhooks from {n} arrive again"),
        (_, _) => esc(id),
    }
}

/// The self-checks after a complete cycle (webhook silence, sync failures, dead credentials).
pub(crate) async fn after_cycle(
    store: &crate::store::Store,
    t: &Tenant,
    s: &CycleSummary,
    c: &crate::config::Config,
    webhook_watch: &mut WebhookWatch,
    hooks: &super::server::webhooks::Hooks,
) {
    let silent = webhook_watch.after_cycle(
        &t.cfg,
        s,
        |source| hooks.last_delivery(t.id(), source),
        Utc::now(),
    );
    // A panic in a check costs this round of checks, not the daemon.
    let checks = run(store, t, s, &c.selfcheck, Some(&c.data_dir), &silent);
    if std::panic::AssertUnwindSafe(checks)
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::error!(
            tenant = t.id(),
            "self-checks panicked; they run again after the next cycle"
        );
    }
}
