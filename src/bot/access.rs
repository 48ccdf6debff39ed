//! Who may ask: the tenant's chats and what each may see, and the polite refusal of strangers
//! (once per chat per day, logged at most once a minute).

use std::time::Duration;

/// Chats remembered as refused today; past it, new strangers get no answer at all (silence is
/// the safe side of a flood).
const REFUSED_KEEP: usize = 10_000;
/// Refusals are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

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

/// The strangers refused today, and when a refusal was last logged.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    day: Option<chrono::NaiveDate>,
    chats: std::collections::HashSet<i64>,
    logged_at: Option<std::time::Instant>,
    unlogged: u64,
}

impl Refusals {
    /// Whether `chat` gets a refusal on local day `today`: the first time that day only.
    pub(crate) fn answer(&mut self, chat: i64, today: chrono::NaiveDate) -> bool {
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
    pub(crate) fn log(&mut self, now: std::time::Instant) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
