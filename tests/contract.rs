//! Contract tests transcribed from the official documentation of each system dozor talks to.
//!
//! Every test names the page its payload comes from. Two halves per connector:
//! - **client**: a [`replay::Docs`] server on loopback answers exactly what the page shows (answers
//!   and error bodies, verbatim apart from filled-in placeholders), and dozor's client must read it;
//! - **simulator**: the request the page shows is sent to our simulator, which must answer in the
//!   page's shape. Where the page and the simulator disagreed, the simulator was changed.
//!
//! Pages are cited by repository path (bitrix24/b24restdocs, comagic/comagic.github.io) or by URL
//! (amoCRM developer docs, Calltouch API pages, Telegram Bot API).

// The docs' answers are transcribed whole; the longest outgrow `json!`'s default depth.
#![recursion_limit = "512"]

mod common;

mod contract {
    pub mod amocrm;
    pub mod bitrix24;
    pub mod calltouch;
    pub mod comagic;
    #[allow(dead_code)]
    pub mod replay;
    pub mod telegram;
}
