//! Reports: figures from the mirror, rendered for Telegram and the terminal.
