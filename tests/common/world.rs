//! Starting the simulator: the options most tests use and the start on a loopback port.

use chrono::{DateTime, TimeZone, Utc};
use dozor_sim::{Sim, SimHandle, SimOptions};

/// A small company (scale 1) from `seed`, on the real clock, rate limits off.
pub fn sim_opts(seed: u64) -> SimOptions {
    SimOptions {
        seed,
        scale: 1,
        anchor: None,
        enforce_limits: false,
        b24_enterprise: false,
    }
}

/// [`sim_opts`] with the scenario's "now" at `anchor`.
pub fn anchored(seed: u64, anchor: DateTime<Utc>) -> SimOptions {
    SimOptions {
        anchor: Some(anchor),
        ..sim_opts(seed)
    }
}

/// The fixed "now" of the Bitrix24 scenarios: 2 March 2026, noon UTC.
pub fn march_noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap()
}

/// The simulator with `opts`, on a free loopback port.
pub async fn start_sim(opts: SimOptions) -> SimHandle {
    dozor_sim::start(opts, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The simulator serving `world`, on a free loopback port.
pub async fn serve_world(opts: SimOptions, world: dozor_sim::world::World) -> SimHandle {
    dozor_sim::start_with(Sim::with_world(opts, world), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A small simulated company (scale 1) with rate limits off, on a free loopback port.
pub async fn small_sim(seed: u64) -> SimHandle {
    start_sim(sim_opts(seed)).await
}
