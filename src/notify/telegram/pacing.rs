//! Pacing: messages to one chat at least `chat_interval` apart, a group or channel at most 20
//! messages in any 60 s.

#![allow(clippy::result_large_err)]

use tokio::time::Instant;

use super::*;

impl Telegram {
    /// Waits until the next message to `chat_id` keeps the per-chat pace, and books the slot:
    /// at least `chat_interval` between messages to one chat, and for groups and channels
    /// (negative ids) no more than 20 messages in any 60 s.
    pub(super) async fn pace(&self, chat_id: i64, method: &str) -> Result<()> {
        self.wait_until(self.book(chat_id), method).await
    }

    /// Books the next send slot for `chat_id` (see [`Self::pace`]).
    pub(super) fn book(&self, chat_id: i64) -> Instant {
        let mut m = self.last_send.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let q = m.entry(chat_id).or_default();
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= GROUP_WINDOW)
            && q.len() > 1
        {
            q.pop_front();
        }
        let mut slot = now;
        if let Some(last) = q.back() {
            slot = slot.max(*last + self.chat_interval);
        }
        if chat_id < 0 && q.len() >= GROUP_PER_WINDOW {
            let oldest = q[q.len() - GROUP_PER_WINDOW];
            slot = slot.max(oldest + GROUP_WINDOW);
        }
        q.push_back(slot);
        while q.len() > GROUP_PER_WINDOW {
            q.pop_front();
        }
        slot
    }
}
