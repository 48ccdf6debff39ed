//! Managers hear about the tasks dozor gives them: one personal Telegram message per manager
//! per cycle listing the new tasks, for managers whose chat is configured
//! (`[tenants.telegram.managers]`).
//!
//! This rule reads the ledger rather than the mirror: the tasks to announce are the `create_task`
//! actions done in the last two days that no earlier message covered. The message key is a hash
//! of the covered task keys, and after it is sent each covered task gets a `notified:` row, so a
//! restart neither loses an announcement nor sends the same list twice.

use chrono::{Duration, Utc};

use crate::config::{Lang, RuleMode, TelegramConfig};
use crate::crm::NewTask;
use crate::ledger::{self, Effect, Outcome, Proposal, Sinks};
use crate::notify::telegram::escape_html as esc;
use crate::notify::{MessageKind, route};
use crate::store::{ActionRow, Store, StoreError};

/// FNV-1a: a stable hash (unlike std's, it never changes between Rust versions).
pub(crate) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Sends the announcements; returns the outcomes for the cycle summary.
// Long: one loop over announcements with its ledger bookkeeping (intent, send, outcome) kept
// together so the exactly-once order is visible.
pub(crate) async fn run(
    store: &Store,
    tenant: &str,
    tg: Option<&TelegramConfig>,
    lang: Lang,
    sinks: &Sinks<'_>,
    mode: RuleMode,
) -> Result<Vec<(Proposal, Outcome)>, StoreError> {
    let Some(tg) = tg.filter(|t| !t.managers.is_empty()) else {
        return Ok(Vec::new());
    };
    if mode == RuleMode::Off {
        return Ok(Vec::new());
    }
    // Only tasks not yet announced: the cost follows the new tasks, not the ledger.
    let rows = store
        .unannounced_tasks(tenant, Utc::now() - Duration::days(2))
        .await?;
    let mut by_user: std::collections::BTreeMap<String, Vec<(ActionRow, NewTask)>> =
        Default::default();
    for r in rows {
        let Ok(Effect::CreateTask(task)) = Effect::stored(&r) else {
            continue;
        };
        if !tg.managers.contains_key(&task.responsible_id) {
            continue;
        }
        by_user
            .entry(task.responsible_id.clone())
            .or_default()
            .push((r, task));
    }
    let mut out = Vec::new();
    let ru = lang == Lang::Ru;
    for (user, tasks) in by_user {
        let Some(to) = route(Some(tg), MessageKind::TaskNotice { manager: &user }) else {
            continue;
        };
        let keys: Vec<&str> = tasks.iter().map(|(r, _)| r.key.as_str()).collect();
        let mut html = if ru {
            format!("<b>📌 Новые задачи от dozor: {}</b>\n", tasks.len())
        } else {
            format!("<b>📌 New tasks from dozor: {}</b>\n", tasks.len())
        };
        for (_, t) in tasks.iter().take(30) {
            html.push_str(&format!(
                "• {} — {}\n",
                esc(&t.title),
                t.deadline.format("%d.%m %H:%M UTC")
            ));
        }
        if tasks.len() > 30 {
            html.push_str(&format!("… +{}\n", tasks.len() - 30));
        }
        let p = Proposal {
            key: format!(
                "manager_notify:{tenant}:{user}:{:016x}",
                fnv(&keys.join("\n"))
            ),
            rule: "manager_notify",
            entity: None,
            summary: format!("{} new task(s) announced to user {user}", tasks.len()),
            effect: Effect::Telegram {
                chat: to.chat,
                thread: to.thread,
                html,
            },
        };
        let outcome = ledger::apply(store, tenant, sinks, &p, mode).await?;
        if matches!(outcome, Outcome::Done(_) | Outcome::AlreadyDone) {
            for (r, _) in &tasks {
                let now = Utc::now();
                store
                    .insert_action(&ActionRow {
                        key: format!("notified:{}", r.key),
                        tenant: tenant.to_string(),
                        rule: "manager_notify".into(),
                        kind: "note".into(),
                        entity_kind: r.entity_kind.clone(),
                        entity_id: r.entity_id.clone(),
                        payload: serde_json::json!({"message": p.key}),
                        state: "done".into(),
                        attempts: 0,
                        result: None,
                        error: None,
                        created_at: now,
                        updated_at: now,
                        retry_at: None,
                        budget_from: 0,
                    })
                    .await?;
            }
        }
        out.push((p, outcome));
    }
    Ok(out)
}
