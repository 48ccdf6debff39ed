//! Fake of the bitrix24 API (see ../shared/api/). Filled in by its own module work.

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
