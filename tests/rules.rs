//! The client rules end to end on both CRMs: dormant clients handed to the reactivation
//! manager (and back with `dozor revert`, and back again when they order), idle clients flagged.

mod common;

use std::process::Command;

use chrono::Utc;
use common::tenant_config;
use dozor::config;
use dozor::domain::{CrmKind, TelephonyKind};
use dozor::engine::{CycleOptions, run_cycle};
use dozor::ledger::Outcome;
use dozor::rules::no_activity::FLAG;
use dozor::store::Store;
use dozor::tenant;
use dozor_sim::world::{Owner, Role, SimDeal, StageKind};

async fn client_rules(crm: CrmKind) {
    let opts = common::sim_opts(21);
    let h = common::start_sim(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let text = common::only_rules(
        tenant_config(&h, crm, TelephonyKind::Comagic, &db, "ru"),
        &["dormant", "no_activity"],
    );
    let path = dir.path().join("dozor.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = config::parse(&text, None, None).unwrap().config;
    let store = Store::open(&db, 4).await.unwrap();
    let tenant = tenant::connect(&cfg.tenants[0], &store).await.unwrap();
    let reactivation = h
        .sim
        .world()
        .users_with(Role::Reactivation)
        .next()
        .unwrap()
        .id;

    let s = run_cycle(&store, &tenant, CycleOptions::default()).await;
    assert!(s.ok(), "{:?}", s.errors);
    let failed: Vec<_> = s
        .applied
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Failed(_) | Outcome::Retry(_)))
        .collect();
    assert!(failed.is_empty(), "actions failed: {failed:?}");
    let handed: Vec<_> = s
        .applied
        .iter()
        .filter(|a| a.rule == "dormant" && a.summary.contains("reactivation manager"))
        .collect();
    assert!(!handed.is_empty(), "the world has dormant clients");
    let flagged = s
        .applied
        .iter()
        .filter(|a| a.rule == "no_activity" && a.summary.contains("flagged"))
        .count();
    assert!(flagged > 0, "the world has idle clients");

    // The world shows it: dormant clients belong to the reactivation manager, idle ones carry
    // the flag, and each got exactly one task.
    let rows = store.actions_in_state("demo", "done").await.unwrap();
    let owner_rows: Vec<_> = rows.iter().filter(|r| r.key.ends_with(":owner")).collect();
    assert_eq!(owner_rows.len(), handed.len());
    {
        let w = h.sim.world();
        for r in &owner_rows {
            let id: u64 = r.entity_id.as_ref().unwrap().parse().unwrap();
            let owner = match r.entity_kind.as_deref() {
                Some("contact") => w.contacts[&id].responsible_id,
                Some("company") => w.companies[&id].responsible_id,
                other => panic!("unexpected client kind {other:?}"),
            };
            assert_eq!(owner, reactivation, "{}", r.key);
        }
        let tagged = w
            .contacts
            .values()
            .filter(|c| c.tags.iter().any(|t| t == FLAG))
            .count()
            + w.companies
                .values()
                .filter(|c| c.tags.iter().any(|t| t == FLAG))
                .count();
        assert_eq!(tagged, flagged);
    }

    // Nothing twice.
    let again = run_cycle(&store, &tenant, CycleOptions::default()).await;
    let writes: Vec<_> = again
        .applied
        .iter()
        .filter(|a| a.crm_write && matches!(a.outcome, Outcome::Done(_)))
        .collect();
    assert!(writes.is_empty(), "second cycle wrote again: {writes:?}");

    // A handed-over client orders again (a moment later): it goes back to its previous manager.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let first = owner_rows[0];
    let previous = first.payload["effect"]["previous"]
        .as_str()
        .unwrap()
        .to_string();
    let (kind, id) = (
        first.entity_kind.clone().unwrap(),
        first.entity_id.clone().unwrap().parse::<u64>().unwrap(),
    );
    {
        let mut w = h.sim.world();
        let won = w.stage_of_kind(0, StageKind::Won).unwrap().id;
        let deal_id = w.next_id();
        let now = Utc::now();
        let (contact_id, company_id) = if kind == "company" {
            (None, Some(id))
        } else {
            (Some(id), None)
        };
        w.deals.insert(
            deal_id,
            SimDeal {
                id: deal_id,
                title: "Повторный заказ".into(),
                pipeline_id: 0,
                stage_id: won,
                amount: 50_000.0,
                responsible_id: reactivation,
                contact_id,
                company_id,
                lead_id: None,
                source: "CALL".into(),
                tags: vec![],
                loss_reason: None,
                created_at: now,
                updated_at: now,
                closed_at: Some(now),
            },
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let back = run_cycle(&store, &tenant, CycleOptions::default()).await;
    assert!(
        back.applied
            .iter()
            .any(|a| a.summary.contains("ordered again") && matches!(a.outcome, Outcome::Done(_))),
        "{:?}",
        back.applied
    );
    {
        let w = h.sim.world();
        let owner = if kind == "company" {
            w.companies[&id].responsible_id
        } else {
            w.contacts[&id].responsible_id
        };
        assert_eq!(owner.to_string(), previous);
    }

    // `dozor revert` hands another handover back.
    let second = owner_rows[1];
    let prefix = second.key.trim_end_matches(":owner").to_string();
    let prev2 = second.payload["effect"]["previous"]
        .as_str()
        .unwrap()
        .to_string();
    let id2: u64 = second.entity_id.as_ref().unwrap().parse().unwrap();
    let kind2 = second.entity_kind.clone().unwrap();
    let cfg_path = path.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dozor"))
            .args(["--config", &cfg_path, "revert", &prefix])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    {
        let w = h.sim.world();
        let owner = if kind2 == "company" {
            w.companies[&id2].responsible_id
        } else {
            w.contacts[&id2].responsible_id
        };
        assert_eq!(owner.to_string(), prev2, "revert restored the owner");
        let reassigned_tasks = w.tasks.values().filter(|t| {
            !t.completed
                && t.responsible_id == reactivation
                && t.binding
                    == Some((
                        if kind2 == "company" {
                            Owner::Company
                        } else {
                            Owner::Contact
                        },
                        id2,
                    ))
        });
        // Only the reactivation task itself stays with the reactivation manager.
        assert!(reassigned_tasks.count() <= 1);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rules_on_bitrix24() {
    client_rules(CrmKind::Bitrix24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rules_on_amocrm() {
    client_rules(CrmKind::Amocrm).await;
}
