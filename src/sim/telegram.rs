//! Fake of the telegram API (see ../shared/api/). Filled in by its own module work.

use std::sync::Arc;

use axum::Router;

use super::{Credentials, Sim, SimOptions};

/// Mutable state of the fake (tokens, rate limiter, recorded traffic).
pub struct State {}

impl State {
    pub fn new(_opts: &SimOptions, _creds: &Credentials) -> Self {
        State {}
    }
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new().with_state(sim)
}

impl State {
    /// How many messages and photos the fake has accepted.
    pub fn sent_count(&self) -> usize {
        0
    }
}
