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

/// User 1 of the hand-made worlds: Анна Петрова, extension 101, in `role`.
pub fn anna(role: dozor_sim::world::Role) -> dozor_sim::world::SimUser {
    dozor_sim::world::SimUser {
        id: 1,
        first_name: "Анна".into(),
        last_name: "Петрова".into(),
        email: "a@example.ru".into(),
        extension: "101".into(),
        role,
        active: true,
    }
}

/// `n` contacts of [`anna`] (the owner), created on 10 January 2026 and changed a second apart.
pub fn contacts_world(n: usize) -> dozor_sim::world::World {
    use dozor_sim::world::{Role, SimContact, World};
    let t0 = Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap();
    let mut w = World {
        next_id: 100,
        ..World::default()
    };
    w.users.push(anna(Role::Owner));
    for i in 0..n {
        let id = w.next_id();
        w.contacts.insert(
            id,
            SimContact {
                id,
                first_name: format!("C{i}"),
                last_name: "Test".into(),
                phones: vec![format!("+7999{:07}", i)],
                emails: vec![],
                company_id: None,
                responsible_id: 1,
                tags: vec![],
                created_at: t0,
                updated_at: t0 + chrono::Duration::seconds(i as i64),
            },
        );
    }
    w
}

/// `n` open deals of [`anna`] (a manager) in one pipeline (open, won and lost stages), created a
/// second apart from 1 January 2026.
pub fn deals_world(n: usize) -> dozor_sim::world::World {
    use dozor_sim::world::{Role, SimDeal, World};
    let mut w = World::default();
    w.users.push(anna(Role::Manager));
    w.pipelines.push(sales_pipeline());
    w.reserve_id(10_000);
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for i in 0..n {
        let id = w.next_id();
        let at = base + chrono::Duration::seconds(i as i64);
        w.deals.insert(
            id,
            SimDeal {
                id,
                title: format!("Сделка {i}"),
                pipeline_id: 0,
                stage_id: 1001,
                amount: 100.0,
                responsible_id: 1,
                contact_id: None,
                company_id: None,
                lead_id: None,
                source: "WEB".into(),
                tags: vec![],
                loss_reason: None,
                created_at: at,
                updated_at: at,
                closed_at: None,
            },
        );
    }
    w
}

/// Pipeline 0, «Продажи», the default: stages 1001 (open), 1002 (won) and 1003 (lost).
pub fn sales_pipeline() -> dozor_sim::world::SimPipeline {
    use dozor_sim::world::{SimPipeline, SimStage, StageKind};
    let stage = |id, kind| SimStage {
        id,
        code: format!("S{id}"),
        name: format!("Этап {id}"),
        sort: id as i64,
        kind,
    };
    SimPipeline {
        id: 0,
        name: "Продажи".into(),
        is_default: true,
        stages: vec![
            stage(1001, StageKind::Open),
            stage(1002, StageKind::Won),
            stage(1003, StageKind::Lost),
        ],
    }
}
