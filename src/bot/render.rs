//! The answers' text: overdue tasks, a manager's card, the status, a manager's own report line.

use std::collections::BTreeMap;

use crate::config::{Lang, TenantConfig};
use crate::domain::{Semantics, Ts};
use crate::notify::telegram::escape_html;
use crate::report;
use crate::store::{Snapshot, Store, StoreError};

/// Overdue tasks listed per manager in `/overdue`.
const OVERDUE_PER_MANAGER: usize = 10;

pub(super) fn tz_of(cfg: &TenantConfig) -> chrono_tz::Tz {
    cfg.business_calendar.tz
}

/// `/overdue`: open tasks past their deadline, grouped by manager (most overdue first).
pub fn overdue(snap: &Snapshot, lang: Lang, tz: chrono_tz::Tz, now: Ts) -> String {
    let ru = lang == Lang::Ru;
    let names = crate::domain::User::names(&snap.users);
    let mut by: BTreeMap<String, Vec<&crate::domain::Task>> = BTreeMap::new();
    for t in snap.tasks.iter().filter(|t| t.is_overdue(now)) {
        let who = t
            .responsible_id
            .as_deref()
            .map(|id| crate::domain::User::name_in(&names, id, ru))
            .unwrap_or_else(|| {
                if ru {
                    "без ответственного"
                } else {
                    "unassigned"
                }
                .into()
            });
        by.entry(who).or_default().push(t);
    }
    if by.is_empty() {
        return if ru {
            "✅ Просроченных задач нет.".into()
        } else {
            "✅ No overdue tasks.".into()
        };
    }
    let total: usize = by.values().map(Vec::len).sum();
    let mut groups: Vec<(String, Vec<&crate::domain::Task>)> = by.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let mut s = if ru {
        format!("<b>Просроченные задачи: {total}</b>\n")
    } else {
        format!("<b>Overdue tasks: {total}</b>\n")
    };
    for (who, mut tasks) in groups {
        tasks.sort_by_key(|t| t.deadline);
        s.push_str(&format!(
            "\n<b>{}</b> — {}\n",
            escape_html(&who),
            tasks.len()
        ));
        for t in tasks.iter().take(OVERDUE_PER_MANAGER) {
            let due = t
                .deadline
                .map(|d| d.with_timezone(&tz).format("%d.%m %H:%M").to_string())
                .unwrap_or_default();
            s.push_str(&format!("• {due} {}\n", escape_html(&t.title)));
        }
        if tasks.len() > OVERDUE_PER_MANAGER {
            let more = tasks.len() - OVERDUE_PER_MANAGER;
            s.push_str(&if ru {
                format!("… и ещё {more}\n")
            } else {
                format!("… and {more} more\n")
            });
        }
    }
    s
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Users whose name matches `query`: an exact name, else names containing it, else names with
/// a word within a typo or two of it.
pub fn match_users<'a>(snap: &'a Snapshot, query: &str) -> Vec<&'a crate::domain::User> {
    let q = query.trim().to_lowercase();
    if q.is_empty() {
        return Vec::new();
    }
    let exact: Vec<_> = snap
        .users
        .iter()
        .filter(|u| u.name.to_lowercase() == q)
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    let contains: Vec<_> = snap
        .users
        .iter()
        .filter(|u| u.name.to_lowercase().contains(&q))
        .collect();
    if !contains.is_empty() {
        return contains;
    }
    let allowed = if q.chars().count() >= 6 { 2 } else { 1 };
    snap.users
        .iter()
        .filter(|u| {
            u.name
                .to_lowercase()
                .split_whitespace()
                .any(|w| levenshtein(w, &q) <= allowed)
        })
        .collect()
}

/// `/manager <name>`: one manager's figures now (calls since local midnight).
pub(crate) fn manager(snap: &Snapshot, cfg: &TenantConfig, query: &str, now: Ts) -> String {
    let ru = cfg.lang == Lang::Ru;
    if query.trim().is_empty() {
        return if ru {
            "Укажите имя: <code>/manager Иванов</code>".into()
        } else {
            "Give a name: <code>/manager Smith</code>".into()
        };
    }
    let found = match_users(snap, query);
    let u = match found.as_slice() {
        [] => {
            return if ru {
                format!("Менеджер «{}» не найден.", escape_html(query))
            } else {
                format!("No manager matches “{}”.", escape_html(query))
            };
        }
        [u] => *u,
        many => {
            let mut s = if ru {
                format!(
                    "«{}» — несколько совпадений, уточните:\n",
                    escape_html(query)
                )
            } else {
                format!(
                    "“{}” matches several people; which one?\n",
                    escape_html(query)
                )
            };
            for u in many.iter().take(20) {
                s.push_str(&format!("• {}\n", escape_html(&u.name)));
            }
            return s;
        }
    };
    manager_card(snap, cfg, u, now)
}

/// `/manager` in a manager's personal chat: their own card, whatever name was asked for (with
/// a word on why when it was someone else's).
pub(super) fn own_manager(
    snap: &Snapshot,
    cfg: &TenantConfig,
    user_id: &str,
    query: &str,
    now: Ts,
) -> String {
    let ru = cfg.lang == Lang::Ru;
    let Some(me) = snap.users.iter().find(|u| u.id == user_id) else {
        return if ru {
            "Ваших данных пока нет в зеркале CRM.".into()
        } else {
            "Your data is not in the CRM mirror yet.".into()
        };
    };
    let asked_other =
        !query.trim().is_empty() && !match_users(snap, query).iter().any(|u| u.id == me.id);
    let card = manager_card(snap, cfg, me, now);
    if asked_other {
        let note = if ru {
            "В личном чате видны только ваши показатели."
        } else {
            "A personal chat shows only your own figures."
        };
        format!("{note}\n\n{card}")
    } else {
        card
    }
}

/// One manager's figures now (calls since local midnight).
fn manager_card(snap: &Snapshot, cfg: &TenantConfig, u: &crate::domain::User, now: Ts) -> String {
    let ru = cfg.lang == Lang::Ru;
    let tz = tz_of(cfg);
    let cal = cfg.business_calendar.clone();
    let today = report::local_date(cfg, now);
    let period = report::metrics::Period::day(today, tz);
    let f = report::metrics::compute(snap, &period, now, &cal);
    let m = f
        .managers
        .iter()
        .find(|m| m.user_id == u.id)
        .cloned()
        .unwrap_or_default();
    let open = snap
        .deals
        .iter()
        .filter(|d| d.semantics == Semantics::Open && d.responsible_id.as_deref() == Some(&u.id))
        .count();
    let calls = m.calls_in + m.calls_out;
    if ru {
        format!(
            "<b>{}</b>\nОткрытых сделок: {open}\nСделок без задачи: {}\nПросроченных задач: {}\nЗвонков сегодня: {calls} (входящих {}, исходящих {}, пропущено {})",
            escape_html(&u.name),
            m.deals_without_task,
            m.overdue_tasks,
            m.calls_in,
            m.calls_out,
            m.missed
        )
    } else {
        format!(
            "<b>{}</b>\nOpen deals: {open}\nDeals without a task: {}\nOverdue tasks: {}\nCalls today: {calls} (in {}, out {}, missed {})",
            escape_html(&u.name),
            m.deals_without_task,
            m.overdue_tasks,
            m.calls_in,
            m.calls_out,
            m.missed
        )
    }
}

/// `/status`: each source's last sync, the last cycle, and messages waiting in the ledger.
pub(crate) async fn status(
    store: &Store,
    cfg: &TenantConfig,
    now: Ts,
) -> Result<String, StoreError> {
    let ru = cfg.lang == Lang::Ru;
    let tz = tz_of(cfg);
    let runs = store.last_sync_runs(&cfg.id).await?;
    let pending = store.actions_in_state(&cfg.id, "intent").await?;
    let pending_msgs = pending
        .iter()
        .filter(|r| r.kind.starts_with("telegram"))
        .count();
    let mut s = if ru {
        String::from("<b>Состояние</b>\n")
    } else {
        String::from("<b>Status</b>\n")
    };
    let last = runs.iter().filter_map(|r| r.finished_at).max();
    match last {
        Some(t) => {
            let ago = (now - t).num_minutes().max(0);
            let at = t.with_timezone(&tz).format("%d.%m %H:%M");
            s.push_str(&if ru {
                format!("Последний цикл: {at} ({ago} мин назад)\n")
            } else {
                format!("Last cycle: {at} ({ago} min ago)\n")
            });
        }
        None => s.push_str(if ru {
            "Синхронизации ещё не было\n"
        } else {
            "No sync yet\n"
        }),
    }
    for r in &runs {
        let mark = if r.ok { "✅" } else { "❌" };
        s.push_str(&format!(
            "{mark} {}: {}",
            escape_html(&r.source),
            if ru {
                format!("{} записей", r.items)
            } else {
                format!("{} items", r.items)
            }
        ));
        if let Some(e) = r.error.as_deref().filter(|_| !r.ok) {
            let e: String = e.chars().take(200).collect();
            s.push_str(&format!(" — {}", escape_html(&e)));
        }
        s.push('\n');
    }
    s.push_str(&if ru {
        format!(
            "В очереди: {} действий, из них сообщений: {pending_msgs}\n",
            pending.len()
        )
    } else {
        format!(
            "Pending: {} actions, {pending_msgs} of them messages\n",
            pending.len()
        )
    });
    Ok(s)
}

/// `/report` for a manager's personal chat: their own line of `rep`, nobody else's.
pub(crate) fn personal_report(rep: &report::Report, user_id: &str, lang: Lang) -> String {
    use report::render::{money, num1, pct};
    let ru = lang == Lang::Ru;
    let m = rep
        .figures
        .managers
        .iter()
        .find(|m| m.user_id == user_id)
        .cloned()
        .unwrap_or_default();
    let period = if rep.period_from == rep.period_to {
        rep.period_from.format("%d.%m.%Y").to_string()
    } else {
        format!(
            "{} — {}",
            rep.period_from.format("%d.%m.%Y"),
            rep.period_to.format("%d.%m.%Y")
        )
    };
    let talk = num1(Some(m.talk_s.max(0) as f64 / 60.0), lang);
    let revenue = money(m.revenue, lang);
    let plan = pct(m.plan_pct, lang);
    let who = if m.name.is_empty() {
        String::new()
    } else {
        format!(", {}", escape_html(&m.name))
    };
    let report::metrics::ManagerFigures {
        calls_in,
        calls_out,
        missed,
        called_back,
        leads,
        won,
        lost,
        open_deals,
        deals_without_task,
        overdue_tasks,
        ..
    } = m;
    if ru {
        format!(
            "<b>Ваши показатели{who}</b>\nПериод: {period}\nЗвонков: входящих {calls_in}, исходящих {calls_out}, пропущено {missed} (перезвонили {called_back})\nРазговоры: {talk} мин\nНовых лидов: {leads}\nСделок выиграно: {won}, проиграно: {lost}\nВыручка: {revenue}\nПлан: {plan}\nОткрытых сделок: {open_deals}\nСделок без задачи: {deals_without_task}\nПросроченных задач: {overdue_tasks}"
        )
    } else {
        format!(
            "<b>Your figures{who}</b>\nPeriod: {period}\nCalls: in {calls_in}, out {calls_out}, missed {missed} (called back {called_back})\nTalk time: {talk} min\nNew leads: {leads}\nDeals won: {won}, lost: {lost}\nRevenue: {revenue}\nPlan: {plan}\nOpen deals: {open_deals}\nDeals without a task: {deals_without_task}\nOverdue tasks: {overdue_tasks}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_distance() {
        assert_eq!(levenshtein("иванов", "иванов"), 0);
        assert_eq!(levenshtein("ивонов", "иванов"), 1);
        assert_eq!(levenshtein("", "abc"), 3);
    }
}
