//! What only amoCRM writes and reads: loss reasons, deletions and writes told by the events
//! log, and the simulator's page latency in a big account, over real HTTP. What both CRMs owe
//! is in `crm_contract`.

mod common;

use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use dozor::config::AmocrmConfig;
use dozor::crm::amocrm::AmoCrm;
use dozor::crm::{Crm, Cursor};
use dozor::domain::{EntityKind, EntityRef};
use dozor::store::Store;
use dozor_sim::world::{Deletion, Owner, StageKind};
use dozor_sim::{SimHandle, SimOptions, System};

fn opts(scale: u32) -> SimOptions {
    SimOptions {
        seed: 5,
        scale,
        // Generated records lie in the past, so "now" changes are newer than any of them.
        anchor: Some(Utc::now() - Duration::hours(2)),
        enforce_limits: false,
        b24_enterprise: false,
    }
}

async fn client(h: &SimHandle, dir: &tempfile::TempDir) -> AmoCrm {
    let cfg = AmocrmConfig {
        rate_per_sec: 1000,
        ..common::amo_sim(h)
    };
    let path = dir.path().join("dozor.db");
    let store = Arc::new(
        Store::open(&format!("sqlite://{}", path.display()), 4)
            .await
            .unwrap(),
    );
    AmoCrm::new("t1", &cfg, store).await.unwrap()
}

fn requests(h: &SimHandle) -> u64 {
    h.sim.stats().get(&System::Amocrm).map_or(0, |s| s.requests)
}

/// amoCRM keeps a lost deal's reason as one of the account's loss reasons: a reason is
/// created the first time it is given and found again (whatever its case) afterwards.
#[tokio::test]
async fn a_loss_reason_is_created_once_and_reused() {
    let h = common::start_sim(opts(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&h, &dir).await;
    let open: Vec<u64> = {
        let w = h.sim.world();
        w.deals
            .values()
            .filter(|d| w.stage(d.stage_id).unwrap().1.kind == StageKind::Open)
            .map(|d| d.id)
            .take(2)
            .collect()
    };
    c.close_deal_lost(&open[0].to_string(), "не дозвонились")
        .await
        .unwrap();
    {
        let w = h.sim.world();
        let d = &w.deals[&open[0]];
        assert_eq!(w.stage(d.stage_id).unwrap().1.kind, StageKind::Lost);
        assert_eq!(d.loss_reason.as_deref(), Some("не дозвонились"));
    }
    let reasons_before = h.sim.amo.reasons().len();
    c.close_deal_lost(&open[1].to_string(), "Не дозвонились")
        .await
        .unwrap();
    assert_eq!(h.sim.amo.reasons().len(), reasons_before);
    let reason = h.sim.world().deals[&open[1]].loss_reason.clone();
    assert_eq!(reason.as_deref(), Some("не дозвонились"));
}

/// amoCRM's probe is the events log, which also tells deletions: a deleted deal comes back as
/// a deletion without a page read, once. A write through the API is an event like any other,
/// and kinds never synced are read without asking the log.
// Long: the deletion, its cursor and the write through the API are one sequence of probes.
#[tokio::test]
async fn the_change_probe_reports_deletions_and_writes() {
    let h = common::start_sim(opts(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&h, &dir).await;
    let t0 = Utc::now();
    let cursors: Vec<(EntityKind, Cursor)> = EntityKind::ALL
        .iter()
        .map(|k| {
            let cursor = Cursor {
                since: Some(t0),
                position: None,
                high_water: Some(t0),
            };
            (*k, cursor)
        })
        .collect();

    // A deal is deleted: it arrives in Page::deleted of the deals.
    let did = {
        let mut w = h.sim.world();
        let id = *w.deals.keys().next().unwrap();
        w.deals.remove(&id);
        w.deletions.push(Deletion {
            owner: Owner::Deal,
            id,
            at: Utc::now() + Duration::seconds(2),
        });
        id
    };
    h.sim.reset_stats();
    let out = c.fetch_changes(&cursors).await.unwrap();
    let kinds_out: Vec<EntityKind> = out.iter().map(|x| x.0).collect();
    assert_eq!(kinds_out, vec![EntityKind::Deal], "{kinds_out:?}");
    assert_eq!(out[0].1.deleted, vec![did.to_string()]);
    assert!(out[0].1.records.is_empty());
    assert_eq!(requests(&h), 1, "deletions only: no page read");
    // The deletion is not reported again with the returned cursor.
    let after: Vec<(EntityKind, Cursor)> = cursors
        .iter()
        .map(|(k, cur)| {
            if *k == EntityKind::Deal {
                (*k, out[0].1.next.clone())
            } else {
                (*k, cur.clone())
            }
        })
        .collect();
    let out = c.fetch_changes(&after).await.unwrap();
    assert!(
        out.iter()
            .all(|(k, p)| *k != EntityKind::Deal || p.deleted.is_empty())
    );

    // A write through the API (responsible change) is seen as a deal change; first-sync
    // cursors are read without a probe.
    let deal = *h.sim.world().deals.keys().nth(3).unwrap();
    let user = h.sim.world().users[2].id;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let t1 = Utc::now() - Duration::seconds(1);
    c.set_responsible(
        &EntityRef::new(EntityKind::Deal, deal.to_string()),
        &user.to_string(),
    )
    .await
    .unwrap();
    let cur = |since| Cursor {
        since,
        position: None,
        high_water: since,
    };
    h.sim.reset_stats();
    let out = c
        .fetch_changes(&[
            (EntityKind::Deal, cur(Some(t1))),
            (EntityKind::Task, cur(Some(t1))),
            (EntityKind::Company, cur(None)),
        ])
        .await
        .unwrap();
    let kinds_out: Vec<EntityKind> = out.iter().map(|x| x.0).collect();
    assert_eq!(kinds_out, vec![EntityKind::Deal, EntityKind::Company]);
    assert!(out[0].1.records.iter().any(|r| r.id() == deal.to_string()));
    assert!(!out[1].1.records.is_empty());
}

/// A 250-row page of a scale-500 world (100k deals, 100k contacts, 200k activities).
#[tokio::test]
#[ignore = "builds a 100k-record world; run with --ignored (release recommended)"]
async fn big_world_page_latency() {
    let h = common::start_sim(opts(500)).await;
    {
        let w = h.sim.world();
        eprintln!(
            "deals {} contacts {} activities {}",
            w.deals.len(),
            w.contacts.len(),
            w.activities.len()
        );
        assert!(w.deals.len() >= 100_000);
    }
    let http = reqwest::Client::new();
    let since = (Utc::now() - Duration::days(30)).timestamp();
    let token = h.sim.creds.amo_long_lived_token.clone();
    let mut worst = std::time::Duration::ZERO;
    for (path, key) in [
        ("leads", "leads"),
        ("contacts", "contacts"),
        ("contacts/notes", "notes"),
    ] {
        for page in [1, 50, 200] {
            let url = format!(
                "{}/api/v4/{path}?filter[updated_at][from]={since}&order[id]=asc&limit=250&page={page}",
                h.amo_url()
            );
            let t = Instant::now();
            let resp = http.get(&url).bearer_auth(&token).send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap();
            let took = t.elapsed();
            worst = worst.max(took);
            eprintln!(
                "{path} page {page}: {status} {} bytes in {took:?}",
                body.len()
            );
            if status == 200 {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(v["_embedded"][key].as_array().unwrap().len() <= 250);
            }
        }
    }
    let t = Instant::now();
    let resp = http
        .get(format!(
            "{}/api/v4/events?filter[created_at][from]={}&limit=100",
            h.amo_url(),
            Utc::now().timestamp()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    eprintln!("idle events probe: {} in {:?}", resp.status(), t.elapsed());
    eprintln!("worst page: {worst:?}");
    assert!(
        worst < std::time::Duration::from_millis(if cfg!(debug_assertions) { 500 } else { 50 })
    );
}
