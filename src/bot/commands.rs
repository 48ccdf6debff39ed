//! The commands: parsing a message, the command list, and the answer to each command.

use super::access::Access;
use super::render::{manager, overdue, own_manager, personal_report, status, tz_of};
use crate::config::{Lang, TenantConfig};
use crate::domain::Ts;
use crate::notify::telegram::escape_html;
use crate::report::{self, Kind};
use crate::store::{Snapshot, Store, StoreError};

/// A command a chat sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
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
    pub(crate) fn name(&self) -> &str {
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
pub(crate) fn parse(text: &str, bot_username: Option<&str>) -> Option<Command> {
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
pub(crate) struct Reply {
    pub(crate) html: String,
    pub(crate) photos: Vec<(Vec<u8>, String)>,
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
pub(crate) fn help(lang: Lang) -> String {
    let mut s = match lang {
        Lang::Ru => String::from("<b>Команды</b>\n"),
        Lang::En => String::from("<b>Commands</b>\n"),
    };
    for (c, d) in commands(lang) {
        s.push_str(&format!("/{c} — {}\n", escape_html(d)));
    }
    s
}

/// The answer to `cmd` for a chat with `access`.
pub(crate) async fn answer_for(
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
                Access::All => crate::ledger::action_lines(store, &cfg.id).await?,
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
}
