//! Bot commands: `/report [day|week|month]`, `/overdue`, `/manager <name>`, `/status`, `/help`.
//!
//! Only the tenant's own chats may use them: the configured chats (owner, head of sales, ops,
//! managers) and `telegram.allowed_chats`. Anyone else gets a polite refusal, once per chat per
//! day (a crowd of strangers must not make the bot a spam source), and is logged by chat and
//! user id at most once a minute, with the count of refusals not logged since; what they wrote
//! is never logged beyond the command itself.
//!
//! What a chat sees depends on whose it is (`Access`): the owner's, the head of sales', the
//! ops chat and `allowed_chats` see the whole team; a manager's personal chat
//! (`telegram.managers`) sees that manager's own figures only — `/report` is their own row of
//! the report, `/overdue` their own tasks, `/manager` their own card — because revenue by
//! manager is not for every manager to read.
//!
//! Commands arrive by long polling (`getUpdates`) or through the Telegram webhook. An update is
//! recognised as already answered by its id, among the last `SEEN_KEEP` ids taken, never by
//! comparing it with the highest id seen: Telegram redelivers an update it got no answer for,
//! and after a week of silence it picks the next id at random, so a lower id is news too (and
//! one forged push with a huge id would otherwise silence the bot for good). The ids taken and
//! the polling offset (last update id + 1, as `getUpdates` requires) are saved in the store as
//! one cursor before the command is answered, so a restart never answers twice (a crash in
//! between loses that one answer rather than repeating it).
//!
//! Parsing and the answers are plain functions of the mirror, tested without Telegram; the
//! polling loop (`run`) is the thin part that talks to it.

mod access;
mod commands;
mod render;

pub use access::access_of;
pub(crate) use access::{Access, Refusals};
pub(crate) use commands::{Command, answer_for, parse};
pub use commands::{commands, refusal};
pub use render::{match_users, overdue};

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::TenantConfig;
use crate::notify::telegram::{Telegram, Update, escape_html};
use crate::report;
use crate::store::{Store, StoreError};

/// The cursor the update offset is saved under: `(tenant, CURSOR_SOURCE, CURSOR_ENTITY)`.
pub(crate) const CURSOR_SOURCE: &str = "telegram";
pub(crate) const CURSOR_ENTITY: &str = "updates";
/// Update ids remembered as taken. Telegram redelivers within hours, a poll after a restart
/// overlaps by at most one batch (100 updates): a thousand covers both with room to spare.
pub(crate) const SEEN_KEEP: usize = 1000;
/// Seconds one `getUpdates` waits for news.
pub(crate) const POLL_TIMEOUT: u32 = 25;

/// The updates taken so far, as saved in the cursor: the next polling offset and the ids taken
/// most recently (oldest first).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct UpdateLog {
    /// `getUpdates` offset: the last update taken + 1.
    pub(crate) next: Option<i64>,
    pub(crate) seen: std::collections::VecDeque<i64>,
}

impl UpdateLog {
    /// Reads a saved cursor: this JSON, or the bare offset older versions saved.
    pub(crate) fn parse(saved: &str) -> UpdateLog {
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

    pub(crate) fn to_cursor(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Records `id` as taken and moves the offset past it; `false` when it was taken before.
    pub(crate) fn take(&mut self, id: i64) -> bool {
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

/// One tenant's bot: its config, its Telegram client and the store.
pub struct Bot {
    pub(crate) cfg: TenantConfig,
    pub tg: Telegram,
    pub(crate) store: Store,
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
    pub(crate) fn access(&self, chat: i64) -> Option<Access> {
        self.cfg
            .telegram
            .as_ref()
            .and_then(|tg| access_of(tg, chat))
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
    pub(crate) async fn update_log(&self) -> Result<UpdateLog, StoreError> {
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
    pub(crate) async fn handle(&self, u: &Update) -> Result<(), BotError> {
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
    pub(crate) async fn run(mut self, stop: CancellationToken) {
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
pub(crate) fn spawn_all(
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
}
