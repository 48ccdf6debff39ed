//! Bot commands: `/report [day|week|month]`, `/overdue`, `/manager <name>`, `/status`, `/help`.
//!
//! Only the tenant's own chats may use them: the configured chats (owner, head of sales, ops,
//! managers) and `telegram.allowed_chats`. Anyone else gets a polite refusal, once per chat per
//! day (a crowd of strangers must not make the bot a spam source), and is logged by chat and
//! user id at most once a minute, with the count of refusals not logged since; what they wrote
//! is never logged beyond the command itself.
//!
//! What a chat sees depends on whose it is ([`Access`]): the owner's, the head of sales', the
//! ops chat and `allowed_chats` see the whole team; a manager's personal chat
//! (`telegram.managers`) sees that manager's own figures only — `/report` is their own row of
//! the report, `/overdue` their own tasks, `/manager` their own card — because revenue by
//! manager is not for every manager to read.
//!
//! Commands arrive by long polling (`getUpdates`) or through the Telegram webhook. An update is
//! recognised as already answered by its id, among the last [`SEEN_KEEP`] ids taken, never by
//! comparing it with the highest id seen: Telegram redelivers an update it got no answer for,
//! and after a week of silence it picks the next id at random, so a lower id is news too (and
//! one forged push with a huge id would otherwise silence the bot for good). The ids taken and
//! the polling offset (last update id + 1, as `getUpdates` requires) are saved in the store as
//! one cursor before the command is answered, so a restart never answers twice (a crash in
//! between loses that one answer rather than repeating it).
//!
//! Parsing and the answers are plain functions of the mirror, tested without Telegram; the
//! polling loop ([`run`]) is the thin part that talks to it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::telegram::{Telegram, Update, escape_html};
use crate::config::{Lang, TenantConfig};
use crate::domain::{Semantics, Ts};
use crate::report::{self, Kind};
use crate::store::{Snapshot, Store, StoreError};

/// The cursor the update offset is saved under: `(tenant, CURSOR_SOURCE, CURSOR_ENTITY)`.
pub const CURSOR_SOURCE: &str = "telegram";
pub const CURSOR_ENTITY: &str = "updates";
/// Update ids remembered as taken. Telegram redelivers within hours, a poll after a restart
/// overlaps by at most one batch (100 updates): a thousand covers both with room to spare.
pub const SEEN_KEEP: usize = 1000;
/// Seconds one `getUpdates` waits for news.
pub const POLL_TIMEOUT: u32 = 25;
/// Chats remembered as refused today; past it, new strangers get no answer at all (silence is
/// the safe side of a flood).
const REFUSED_KEEP: usize = 10_000;
/// Refusals are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// Overdue tasks listed per manager in `/overdue`.
const OVERDUE_PER_MANAGER: usize = 10;

/// A command a chat sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Report(Kind),
    Overdue,
    /// A (part of a) manager's name; empty when none was given.
    Manager(String),
    Status,
    Help,
    /// A command this bot does not know (the name, without arguments).
    Unknown(String),
}

impl Command {
    /// The command's name, for logs.
    pub fn name(&self) -> &str {
        match self {
            Command::Report(_) => "report",
            Command::Overdue => "overdue",
            Command::Manager(_) => "manager",
            Command::Status => "status",
            Command::Help => "help",
            Command::Unknown(n) => n,
        }
    }
}

/// The command list for `setMyCommands`, in the tenant's language.
pub fn commands(lang: Lang) -> Vec<(&'static str, &'static str)> {
    match lang {
        Lang::Ru => vec![
            ("report", "Отчёт: /report day | week | month"),
            ("overdue", "Просроченные задачи по менеджерам"),
            ("manager", "Показатели менеджера: /manager Иванов"),
            ("status", "Состояние синхронизации и очереди"),
            ("help", "Список команд"),
        ],
        Lang::En => vec![
            ("report", "Report: /report day | week | month"),
            ("overdue", "Overdue tasks by manager"),
            ("manager", "A manager's figures: /manager Smith"),
            ("status", "Sync health and pending messages"),
            ("help", "List of commands"),
        ],
    }
}

/// Reads a command from a message text. `bot_username` strips the `@bot` suffix groups add;
/// a command addressed to another bot is not ours (`None`), nor is text that is no command.
pub fn parse(text: &str, bot_username: Option<&str>) -> Option<Command> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let (head, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let (name, addressed) = match head.split_once('@') {
        Some((n, to)) => (n, Some(to)),
        None => (head, None),
    };
    if let (Some(to), Some(me)) = (addressed, bot_username)
        && !to.eq_ignore_ascii_case(me)
    {
        return None;
    }
    let name = name.to_ascii_lowercase();
    Some(match name.as_str() {
        "report" => match args.split_whitespace().next().map(str::to_lowercase) {
            None => Command::Report(Kind::Daily),
            Some(a) => match a.as_str() {
                "day" | "daily" | "день" | "d" => Command::Report(Kind::Daily),
                "week" | "weekly" | "неделя" | "w" => Command::Report(Kind::Weekly),
                "month" | "monthly" | "месяц" | "m" => Command::Report(Kind::Monthly),
                _ => Command::Unknown("report".into()),
            },
        },
        "overdue" => Command::Overdue,
        "manager" => Command::Manager(args.to_string()),
        "status" => Command::Status,
        "help" | "start" => Command::Help,
        _ => Command::Unknown(name),
    })
}

/// What the bot answers: HTML, then photos (PNG, caption).
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub html: String,
    pub photos: Vec<(Vec<u8>, String)>,
}

impl Reply {
    fn text(html: String) -> Reply {
        Reply {
            html,
            photos: Vec::new(),
        }
    }
}

/// The polite refusal for chats that are not the tenant's.
pub fn refusal(lang: Lang) -> String {
    match lang {
        Lang::Ru => "Извините, этот бот отвечает только в чатах компании. Если вам нужен доступ, попросите администратора добавить этот чат в настройки.".into(),
        Lang::En => "Sorry, this bot answers only in the company's chats. If you need access, ask the administrator to add this chat to the configuration.".into(),
    }
}

/// `/help`.
pub fn help(lang: Lang) -> String {
    let mut s = match lang {
        Lang::Ru => String::from("<b>Команды</b>\n"),
        Lang::En => String::from("<b>Commands</b>\n"),
    };
    for (c, d) in commands(lang) {
        s.push_str(&format!("/{c} — {}\n", escape_html(d)));
    }
    s
}

fn tz_of(cfg: &TenantConfig) -> chrono_tz::Tz {
    cfg.business_calendar.tz
}

fn user_names(snap: &Snapshot) -> BTreeMap<&str, &str> {
    snap.users
        .iter()
        .map(|u| (u.id.as_str(), u.name.as_str()))
        .collect()
}

/// `/overdue`: open tasks past their deadline, grouped by manager (most overdue first).
pub fn overdue(snap: &Snapshot, lang: Lang, tz: chrono_tz::Tz, now: Ts) -> String {
    let ru = lang == Lang::Ru;
    let names = user_names(snap);
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
pub fn manager(snap: &Snapshot, cfg: &TenantConfig, query: &str, now: Ts) -> String {
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
fn own_manager(snap: &Snapshot, cfg: &TenantConfig, user_id: &str, query: &str, now: Ts) -> String {
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
pub async fn status(store: &Store, cfg: &TenantConfig, now: Ts) -> Result<String, StoreError> {
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

/// What a chat may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The owner's, the head of sales', the ops chat and `allowed_chats`: the whole team.
    All,
    /// A manager's personal chat: that manager's own figures and tasks (CRM user id).
    Own(String),
}

/// What `chat` may see, or `None` when it is not the tenant's. A chat that is both a team chat
/// and a manager's sees the team.
pub fn access_of(tg: &crate::config::TelegramConfig, chat: i64) -> Option<Access> {
    let team = [tg.owner_chat, tg.head_of_sales_chat, tg.ops_chat]
        .into_iter()
        .flatten()
        .chain(tg.allowed_chats.iter().copied())
        .any(|c| c == chat);
    if team {
        return Some(Access::All);
    }
    tg.managers
        .iter()
        .find(|(_, c)| **c == chat)
        .map(|(user, _)| Access::Own(user.clone()))
}

/// `/report` for a manager's personal chat: their own line of `rep`, nobody else's.
pub fn personal_report(rep: &report::Report, user_id: &str, lang: Lang) -> String {
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

/// The answer to `cmd` for a team chat.
pub async fn answer(
    store: &Store,
    cfg: &TenantConfig,
    cmd: &Command,
    now: Ts,
) -> Result<Reply, StoreError> {
    answer_for(store, cfg, &Access::All, cmd, now).await
}

/// The answer to `cmd` for a chat with `access`.
pub async fn answer_for(
    store: &Store,
    cfg: &TenantConfig,
    access: &Access,
    cmd: &Command,
    now: Ts,
) -> Result<Reply, StoreError> {
    let lang = cfg.lang;
    Ok(match cmd {
        Command::Help => Reply::text(help(lang)),
        Command::Report(kind) => {
            // dozor's own actions appear only in the full report a team chat gets.
            let actions = match access {
                Access::All => report_actions(store, &cfg.id).await?,
                Access::Own(_) => Vec::new(),
            };
            let rep = report::build(store, cfg, *kind, None, now, &actions).await?;
            match access {
                Access::All => Reply {
                    html: rep.html,
                    photos: rep.charts.into_iter().map(|c| (c.png, c.caption)).collect(),
                },
                // The charts compare managers: none for a personal chat.
                Access::Own(user) => Reply::text(personal_report(&rep, user, lang)),
            }
        }
        Command::Overdue => {
            let mut snap = Snapshot::load(store, &cfg.id).await?;
            if let Access::Own(user) = access {
                snap.tasks
                    .retain(|t| t.responsible_id.as_deref() == Some(user.as_str()));
            }
            Reply::text(overdue(&snap, lang, tz_of(cfg), now))
        }
        Command::Manager(q) => {
            let snap = Snapshot::load(store, &cfg.id).await?;
            Reply::text(match access {
                Access::All => manager(&snap, cfg, q, now),
                Access::Own(user) => own_manager(&snap, cfg, user, q, now),
            })
        }
        Command::Status => Reply::text(status(store, cfg, now).await?),
        Command::Unknown(_) => {
            let mut s = match lang {
                Lang::Ru => String::from("Не понял команду.\n\n"),
                Lang::En => String::from("Unknown command.\n\n"),
            };
            s.push_str(&help(lang));
            Reply::text(s)
        }
    })
}

/// The ledger's actions of the last day by rule, for the report's "what dozor did" block.
async fn report_actions(
    store: &Store,
    tenant: &str,
) -> Result<Vec<report::render::ActionLine>, StoreError> {
    let rows = store
        .actions_since(tenant, Utc::now() - chrono::Duration::days(1), 100_000)
        .await?;
    let mut by: BTreeMap<String, report::render::ActionLine> = BTreeMap::new();
    for r in rows {
        let line = by
            .entry(r.rule.clone())
            .or_insert_with(|| report::render::ActionLine {
                rule: r.rule.clone(),
                ..Default::default()
            });
        match r.state.as_str() {
            "done" => line.done += 1,
            "shadow" => line.shadow += 1,
            "failed" => line.failed += 1,
            _ => {}
        }
    }
    Ok(by.into_values().collect())
}

/// The updates taken so far, as saved in the cursor: the next polling offset and the ids taken
/// most recently (oldest first).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpdateLog {
    /// `getUpdates` offset: the last update taken + 1.
    pub next: Option<i64>,
    pub seen: std::collections::VecDeque<i64>,
}

impl UpdateLog {
    /// Reads a saved cursor: this JSON, or the bare offset older versions saved.
    pub fn parse(saved: &str) -> UpdateLog {
        let saved = saved.trim();
        if let Ok(next) = saved.parse::<i64>() {
            return UpdateLog {
                next: Some(next),
                seen: Default::default(),
            };
        }
        serde_json::from_str(saved).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "saved bot update log not understood: starting afresh");
            UpdateLog::default()
        })
    }

    pub fn to_cursor(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Records `id` as taken and moves the offset past it; `false` when it was taken before.
    pub fn take(&mut self, id: i64) -> bool {
        self.next = Some(id.saturating_add(1));
        if self.seen.contains(&id) {
            return false;
        }
        self.seen.push_back(id);
        while self.seen.len() > SEEN_KEEP {
            self.seen.pop_front();
        }
        true
    }
}

/// Errors of the polling loop.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error(transparent)]
    Telegram(#[from] crate::http::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The strangers refused today, and when a refusal was last logged.
#[derive(Debug, Default)]
pub struct Refusals {
    day: Option<chrono::NaiveDate>,
    chats: std::collections::HashSet<i64>,
    logged_at: Option<std::time::Instant>,
    unlogged: u64,
}

impl Refusals {
    /// Whether `chat` gets a refusal on local day `today`: the first time that day only.
    pub fn answer(&mut self, chat: i64, today: chrono::NaiveDate) -> bool {
        if self.day != Some(today) {
            self.day = Some(today);
            self.chats.clear();
        }
        if self.chats.len() >= REFUSED_KEEP {
            return false;
        }
        self.chats.insert(chat)
    }

    /// Whether a refusal at `now` is logged: `Some(refusals left out of the log since the last
    /// line)` at most once a minute, `None` (counted) otherwise.
    pub fn log(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .logged_at
            .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_LOG_EVERY)
        {
            self.unlogged += 1;
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// One tenant's bot: its config, its Telegram client and the store.
pub struct Bot {
    pub cfg: TenantConfig,
    pub tg: Telegram,
    pub store: Store,
    username: Option<String>,
    refusals: std::sync::Mutex<Refusals>,
}

impl Bot {
    /// `None` when the tenant has no Telegram section or no bot token.
    pub fn new(cfg: &TenantConfig, store: Store) -> Option<Bot> {
        let tg_cfg = cfg.telegram.as_ref()?;
        if tg_cfg
            .bot_token
            .as_ref()
            .is_none_or(|t| t.expose().is_empty())
        {
            return None;
        }
        Some(Bot {
            cfg: cfg.clone(),
            tg: Telegram::new(tg_cfg),
            store,
            username: None,
            refusals: Default::default(),
        })
    }

    /// What `chat` may see; `None` when it may not use commands.
    pub fn access(&self, chat: i64) -> Option<Access> {
        self.cfg
            .telegram
            .as_ref()
            .and_then(|tg| access_of(tg, chat))
    }

    /// Whether `chat` may use commands.
    pub fn is_allowed(&self, chat: i64) -> bool {
        self.access(chat).is_some()
    }

    /// Prepares polling: removes a webhook (polling fails while one is set), registers the
    /// command list and learns the bot's username (for `/cmd@bot` in groups).
    pub async fn start(&mut self) -> Result<(), BotError> {
        self.tg.delete_webhook().await?;
        self.prepare().await
    }

    /// Registers the command list and learns the bot's username, leaving any webhook in place.
    async fn prepare(&mut self) -> Result<(), BotError> {
        self.tg.set_my_commands(&commands(self.cfg.lang)).await?;
        self.username = self.tg.get_me().await?.username;
        Ok(())
    }

    /// The updates taken so far.
    pub async fn update_log(&self) -> Result<UpdateLog, StoreError> {
        Ok(self
            .store
            .cursor(&self.cfg.id, CURSOR_SOURCE, CURSOR_ENTITY)
            .await?
            .map(|c| UpdateLog::parse(&c))
            .unwrap_or_default())
    }

    /// The saved offset (next update id to read).
    pub async fn offset(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.update_log().await?.next)
    }

    /// Reads one batch of updates (waiting up to `timeout` s) and answers them. Returns how
    /// many updates were read.
    pub async fn poll_once(&self, timeout: u32) -> Result<usize, BotError> {
        let offset = self.offset().await?;
        let updates = self.tg.get_updates(offset, timeout).await?;
        for u in &updates {
            self.take(u).await?;
        }
        Ok(updates.len())
    }

    /// Answers one update unless it was taken before (Telegram redelivers webhook updates it
    /// got no answer for, and polling may overlap a restart).
    async fn take(&self, u: &Update) -> Result<(), BotError> {
        let mut log = self.update_log().await?;
        let fresh = log.take(u.update_id);
        // Saved before answering: a restart must never answer twice. Saved for a repeat too, so
        // that polling moves past it.
        self.store
            .put_cursor(&self.cfg.id, CURSOR_SOURCE, CURSOR_ENTITY, &log.to_cursor())
            .await?;
        if !fresh {
            tracing::debug!(tenant = %self.cfg.id, update_id = u.update_id, "update already answered");
            return Ok(());
        }
        if let Err(e) = self.handle(u).await {
            tracing::warn!(tenant = %self.cfg.id, update_id = u.update_id, error = %e, "command not answered");
        }
        Ok(())
    }

    /// Answers the updates the Telegram webhook receiver (service::server::webhooks) pushes, instead of
    /// polling: Telegram allows one or the other.
    pub async fn run_pushed(
        mut self,
        mut updates: tokio::sync::mpsc::Receiver<Update>,
        stop: CancellationToken,
    ) {
        loop {
            let u = tokio::select! {
                u = updates.recv() => match u {
                    Some(u) => u,
                    None => return,
                },
                _ = stop.cancelled() => return,
            };
            if self.username.is_none()
                && let Err(e) = self.prepare().await
            {
                tracing::warn!(tenant = %self.cfg.id, error = %e, "cannot register the bot commands");
            }
            // An answer being built or sent when dozor stops is dropped: it is only a reply.
            let result = tokio::select! {
                r = self.take(&u) => r,
                _ = stop.cancelled() => return,
            };
            if let Err(e) = result {
                tracing::warn!(tenant = %self.cfg.id, update_id = u.update_id, error = %e, "update not handled");
            }
        }
    }

    /// Answers one update (nothing for updates that are no command of this bot).
    pub async fn handle(&self, u: &Update) -> Result<(), BotError> {
        let Some(m) = &u.message else {
            return Ok(());
        };
        let Some(cmd) = m
            .text
            .as_deref()
            .and_then(|t| parse(t, self.username.as_deref()))
        else {
            return Ok(());
        };
        let chat = m.chat.id;
        let user = m.from.as_ref().map(|f| f.id);
        let thread = m.message_thread_id;
        let Some(access) = self.access(chat) else {
            return self.refuse(chat, user, thread, &cmd).await;
        };
        tracing::info!(tenant = %self.cfg.id, chat, user, command = cmd.name(), "command");
        let reply = answer_for(&self.store, &self.cfg, &access, &cmd, Utc::now()).await?;
        self.tg.send_message(chat, thread, &reply.html).await?;
        for (png, caption) in reply.photos {
            self.tg.send_photo(chat, thread, png, &caption).await?;
        }
        Ok(())
    }

    /// Refuses a command from a chat that is not the tenant's: answered once per chat per day,
    /// logged at most once a minute.
    async fn refuse(
        &self,
        chat: i64,
        user: Option<i64>,
        thread: Option<i64>,
        cmd: &Command,
    ) -> Result<(), BotError> {
        let today = report::local_date(&self.cfg, Utc::now());
        let (answer, logged) = {
            let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
            (r.answer(chat, today), r.log(std::time::Instant::now()))
        };
        if let Some(not_logged) = logged {
            tracing::warn!(tenant = %self.cfg.id, chat, user, command = cmd.name(), refusals_not_logged = not_logged, "command from a chat that is not allowed: refused");
        }
        if answer {
            self.tg
                .send_message(chat, thread, &escape_html(&refusal(self.cfg.lang)))
                .await?;
        }
        Ok(())
    }

    /// Polls until `stop` is cancelled. Errors are logged and retried with backoff; a token the
    /// API refuses stops the bot (nothing will change until the config does).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let step = async {
                if self.username.is_none() {
                    self.start().await?;
                }
                self.poll_once(POLL_TIMEOUT).await
            };
            let result = tokio::select! {
                r = step => r,
                _ = stop.cancelled() => return,
            };
            match result {
                Ok(_) => failures = 0,
                Err(BotError::Telegram(e)) if e.kind == crate::http::ErrorKind::Auth => {
                    tracing::error!(tenant = %self.cfg.id, error = %e, "bot stopped: check telegram.bot_token");
                    return;
                }
                Err(e) => {
                    let wait = crate::http::backoff(failures).min(Duration::from_secs(60));
                    failures = failures.saturating_add(1);
                    tracing::warn!(tenant = %self.cfg.id, error = %e, wait_ms = wait.as_millis() as u64, "bot polling failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {},
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// Starts the command handling of every tenant with a bot token: fed by the Telegram webhook
/// where one is configured (`pushed` holds its queue), by long polling otherwise. The tasks stop
/// when `stop` is cancelled.
pub fn spawn_all(
    tenants: &[TenantConfig],
    store: &Store,
    stop: &CancellationToken,
    mut pushed: std::collections::HashMap<String, tokio::sync::mpsc::Receiver<Update>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    tenants
        .iter()
        .filter_map(|t| Bot::new(t, store.clone()))
        .map(|bot| match pushed.remove(&bot.cfg.id) {
            Some(rx) => {
                tracing::info!(tenant = %bot.cfg.id, "bot commands: Telegram webhook");
                tokio::spawn(bot.run_pushed(rx, stop.clone()))
            }
            None => {
                tracing::info!(tenant = %bot.cfg.id, "bot commands: polling");
                tokio::spawn(bot.run(stop.clone()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse("/report week", None),
            Some(Command::Report(Kind::Weekly))
        );
        assert_eq!(parse("/report", None), Some(Command::Report(Kind::Daily)));
        assert_eq!(
            parse("/report@dozor_bot month", Some("dozor_bot")),
            Some(Command::Report(Kind::Monthly))
        );
        assert_eq!(parse("/report@other_bot", Some("dozor_bot")), None);
        assert_eq!(
            parse("/manager  Иван Петров ", None),
            Some(Command::Manager("Иван Петров".into()))
        );
        assert_eq!(parse("/STATUS", None), Some(Command::Status));
        assert_eq!(parse("hello", None), None);
        assert_eq!(
            parse("/foo bar", None),
            Some(Command::Unknown("foo".into()))
        );
    }

    #[test]
    fn help_lists_every_command() {
        for lang in [Lang::Ru, Lang::En] {
            let h = help(lang);
            for (c, _) in commands(lang) {
                assert!(h.contains(&format!("/{c}")), "{h}");
            }
        }
    }

    #[test]
    fn a_stranger_is_refused_once_a_day_and_logged_once_a_minute() {
        let mut r = Refusals::default();
        let d1 = chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        let d2 = d1.succ_opt().unwrap();
        assert!(r.answer(1, d1));
        assert!(!r.answer(1, d1));
        assert!(r.answer(2, d1), "another chat gets its own refusal");
        assert!(r.answer(1, d2), "and the same chat again the next day");
        let t0 = std::time::Instant::now();
        assert_eq!(r.log(t0), Some(0));
        for i in 1..52 {
            assert_eq!(r.log(t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(r.log(t0 + Duration::from_secs(61)), Some(51));
        assert_eq!(r.log(t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn refusals_stop_before_memory_grows_without_end() {
        let mut r = Refusals::default();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        let answered = (0..REFUSED_KEEP as i64 + 50)
            .filter(|c| r.answer(*c, d))
            .count();
        assert_eq!(answered, REFUSED_KEEP);
        assert!(r.answer(-1, d.succ_opt().unwrap()));
    }

    #[test]
    fn update_ids_are_remembered_not_compared() {
        let mut log = UpdateLog::parse("41");
        assert_eq!(log.next, Some(41));
        assert!(log.take(40), "an id below the old offset is news");
        assert!(!log.take(40));
        assert!(log.take(1_000_000_000_000));
        assert!(
            log.take(7),
            "after a huge id, a small one is still answered"
        );
        assert_eq!(log.next, Some(8));
        let saved = UpdateLog::parse(&log.to_cursor());
        assert_eq!(saved, log);
        for id in 100..100 + SEEN_KEEP as i64 {
            log.take(id);
        }
        assert_eq!(log.seen.len(), SEEN_KEEP);
        assert_eq!(UpdateLog::parse("not json"), UpdateLog::default());
    }

    #[test]
    fn typo_distance() {
        assert_eq!(levenshtein("иванов", "иванов"), 0);
        assert_eq!(levenshtein("ивонов", "иванов"), 1);
        assert_eq!(levenshtein("", "abc"), 3);
    }
}
