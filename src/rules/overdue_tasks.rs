//! "Nothing overdue goes unseen": open tasks past their deadline reach the head of sales as one
//! digest per window, grouped by manager, oldest first; tasks overdue for more than
//! `escalate_days` also reach the owner, once a day. A task that was done since drops out of the
//! next digest by itself, because the digest is built from the freshly synced mirror.
//!
//! Keys: `overdue_tasks:{tenant}:digest:{date}T{window}` where the window is `realert_hours`
//! long, and `overdue_tasks:{tenant}:escalation:{date}`.

use std::collections::BTreeMap;

use chrono::{Duration, Timelike};

use super::RuleContext;
use super::scope::{self, GatherArgs, Incremental, Page};
use crate::config::{Lang, OverdueTasksConfig};
use crate::domain::{Task, Ts};
use crate::ledger::{Effect, Proposal};
use crate::notify::telegram::escape_html as esc;
use crate::notify::{MessageKind, route};
use crate::store::StoreError;

/// A digest of every overdue task, read only while the window's digest or the day's escalation
/// is not yet settled in the ledger: once a window's digest is out, the rest of the window needs
/// no look at all.
pub const INCREMENTAL: Incremental = Incremental {
    full_after: scope::never,
    gather: scope::Gather::Pages(|a| Box::pin(gather(a))),
};

async fn gather(a: GatherArgs<'_>) -> Result<Page, StoreError> {
    let (digest, escalation) = keys(a.tenant, a.now, a.calendar.tz, &a.rules.overdue_tasks);
    let mut mirror = scope::base_set(a.base);
    if scope::any_unsettled(&a, &[digest, escalation]).await? {
        mirror.tasks = a.store.overdue_tasks(a.tenant, a.now).await?;
    }
    Ok(Page {
        mirror,
        ..Page::default()
    })
}

/// The keys of the digest of the current window and of the day's escalation.
fn keys(tenant: &str, now: Ts, tz: chrono_tz::Tz, cfg: &OverdueTasksConfig) -> (String, String) {
    let local = now.with_timezone(&tz);
    let day = local.date_naive();
    let realert = cfg.realert_hours.max(1.0) as u32;
    let window = local.hour() / realert;
    (
        format!("overdue_tasks:{tenant}:digest:{day}T{window}"),
        format!("overdue_tasks:{tenant}:escalation:{day}"),
    )
}

/// Telegram messages stay far below the 4096-character limit: the rest is summarised.
const MAX_LINES: usize = 40;

pub(crate) fn propose(ctx: &RuleContext, cfg: &OverdueTasksConfig) -> Vec<Proposal> {
    let Some(tg) = ctx.telegram else {
        return Vec::new();
    };
    let overdue: Vec<&Task> = ctx
        .mirror
        .tasks
        .iter()
        .filter(|t| t.is_overdue(ctx.now))
        .collect();
    if overdue.is_empty() {
        return Vec::new();
    }
    let (digest_key, escalation_key) = keys(ctx.tenant, ctx.now, ctx.calendar.tz, cfg);
    let mut out = Vec::new();
    if let Some(to) = route(Some(tg), MessageKind::Digest) {
        out.push(Proposal {
            key: digest_key,
            rule: "overdue_tasks",
            entity: None,
            summary: format!(
                "digest of {} overdue task(s) to the head of sales",
                overdue.len()
            ),
            effect: Effect::Telegram {
                chat: to.chat,
                thread: to.thread,
                html: digest(ctx, &overdue, false),
            },
        });
    }
    let escalate_after = Duration::hours((cfg.escalate_days * 24.0) as i64);
    let old: Vec<&Task> = overdue
        .iter()
        .copied()
        .filter(|t| t.deadline.is_some_and(|d| ctx.now - d > escalate_after))
        .collect();
    if let (Some(to), false) = (route(Some(tg), MessageKind::Escalation), old.is_empty()) {
        out.push(Proposal {
            key: escalation_key,
            rule: "overdue_tasks",
            entity: None,
            summary: format!(
                "escalation of {} long-overdue task(s) to the owner",
                old.len()
            ),
            effect: Effect::Telegram {
                chat: to.chat,
                thread: to.thread,
                html: digest(ctx, &old, true),
            },
        });
    }
    out
}

fn digest(ctx: &RuleContext, tasks: &[&Task], escalation: bool) -> String {
    let names = crate::domain::User::names(&ctx.mirror.users);
    let ru = ctx.lang == Lang::Ru;
    let mut by_manager: BTreeMap<String, Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        let who = t
            .responsible_id
            .as_deref()
            .map(|id| crate::domain::User::name_in(&names, id, ru))
            .unwrap_or_else(|| "—".into());
        by_manager.entry(who).or_default().push(t);
    }
    let mut s = match (escalation, ru) {
        (false, true) => format!("<b>⏰ Просроченные задачи: {}</b>\n", tasks.len()),
        (false, false) => format!("<b>⏰ Overdue tasks: {}</b>\n", tasks.len()),
        (true, true) => format!(
            "<b>🚨 Задачи просрочены больше чем на срок эскалации: {}</b>\n",
            tasks.len()
        ),
        (true, false) => format!(
            "<b>🚨 Tasks overdue beyond the escalation limit: {}</b>\n",
            tasks.len()
        ),
    };
    let mut lines = 0;
    for (who, mut list) in by_manager {
        // Ties in a fixed order, however the tasks were read.
        list.sort_by(|a, b| {
            (a.deadline, a.created_at, &a.id).cmp(&(b.deadline, b.created_at, &b.id))
        });
        s.push_str(&format!("\n<b>{}</b> — {}\n", esc(&who), list.len()));
        for t in list {
            if lines >= MAX_LINES {
                continue;
            }
            lines += 1;
            let late = t.deadline.map(|d| ctx.now - d).unwrap_or_default();
            let late = if late.num_days() > 0 {
                format!("{} {}", late.num_days(), if ru { "дн." } else { "d" })
            } else {
                format!("{} {}", late.num_hours(), if ru { "ч" } else { "h" })
            };
            s.push_str(&format!("• {} ({late})\n", esc(&t.title)));
        }
    }
    if lines < tasks.len() {
        s.push_str(&format!(
            "\n{} {}\n",
            if ru { "… и ещё" } else { "… and" },
            tasks.len() - lines
        ));
    }
    s
}
