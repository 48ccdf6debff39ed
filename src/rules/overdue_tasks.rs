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
use crate::config::{Lang, OverdueTasksConfig};
use crate::domain::Task;
use crate::ledger::{Effect, Proposal};
use crate::notify::telegram::escape_html as esc;
use crate::notify::{MessageKind, route};

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
    let local = ctx.now.with_timezone(&ctx.calendar.tz);
    let day = local.date_naive();
    let realert = cfg.realert_hours.max(1.0) as u32;
    let window = local.hour() / realert;
    let mut out = Vec::new();
    if let Some(to) = route(Some(tg), MessageKind::Digest) {
        out.push(Proposal {
            key: format!("overdue_tasks:{}:digest:{day}T{window}", ctx.tenant),
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
            key: format!("overdue_tasks:{}:escalation:{day}", ctx.tenant),
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
        list.sort_by_key(|t| t.deadline);
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
