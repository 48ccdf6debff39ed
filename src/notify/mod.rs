//! Where messages go: Telegram.

pub mod telegram;
