//! Telegram Bot API client.
