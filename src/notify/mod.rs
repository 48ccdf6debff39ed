//! Telegram transport: sending, splitting, pacing ([`telegram`]), and which chat a message goes
//! to ([`route`]). The bot commands live above, in `crate::bot`.

pub mod telegram;

use crate::config::TelegramConfig;

/// What a message is, which decides where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind<'a> {
    /// Daily, weekly and monthly reports: the owner chat, in the report topic when set.
    Report,
    /// Alerts (missed calls not called back, leads waiting): the head of sales.
    Alert,
    /// Digests (overdue tasks): the head of sales.
    Digest,
    /// Escalations past the head of sales (long-overdue tasks): the owner.
    Escalation,
    /// Notices about tasks dozor gave a manager (CRM user id): that manager's personal chat.
    TaskNotice { manager: &'a str },
    /// Self-checks (sync health, credentials near expiry): the ops chat, else the owner chat.
    SelfCheck,
}

/// A destination: chat and forum topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub chat: i64,
    pub thread: Option<i64>,
}

/// Where a message of `kind` goes for a tenant, or `None` when the chat is not configured.
pub fn route(tg: Option<&TelegramConfig>, kind: MessageKind<'_>) -> Option<Route> {
    let tg = tg?;
    let plain = |chat: Option<i64>| chat.map(|chat| Route { chat, thread: None });
    match kind {
        MessageKind::Report => tg.owner_chat.map(|chat| Route {
            chat,
            thread: tg.report_topic,
        }),
        MessageKind::Alert | MessageKind::Digest => plain(tg.head_of_sales_chat),
        MessageKind::Escalation => plain(tg.owner_chat),
        MessageKind::TaskNotice { manager } => plain(tg.managers.get(manager).copied()),
        MessageKind::SelfCheck => plain(tg.ops_chat.or(tg.owner_chat)),
    }
}
