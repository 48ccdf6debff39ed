//! What only Bitrix24 writes and reads: CRM to-dos, flags in a user field, calls through the
//! telephony methods of an application, a first pass through the change probe and the id
//! sweep, against the simulator over real HTTP. What both CRMs owe is in `crm_contract`.

mod common;

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use dozor::config::Bitrix24Config;
use dozor::crm::bitrix24::Bitrix24;
use dozor::crm::{CallRecord, Crm, Cursor};
use dozor::domain::{Direction, EntityKind, EntityRef};
use dozor::http::ErrorKind;
use dozor_sim::world::*;
use dozor_sim::{SimHandle, SimOptions, System};

const FLAGS: &str = "UF_CRM_DOZOR_FLAGS";

fn opts() -> SimOptions {
    common::anchored(11, common::march_noon())
}

fn webhook_cfg(h: &SimHandle, flag_field: Option<&str>) -> Bitrix24Config {
    Bitrix24Config {
        flag_field: flag_field.map(str::to_string),
        ..common::b24_webhook(h.b24_webhook_url())
    }
}

fn oauth_cfg(h: &SimHandle) -> Bitrix24Config {
    common::b24_oauth(h, &h.sim.creds.b24_refresh_token)
}

async fn start() -> SimHandle {
    common::start_sim(opts()).await
}

async fn client(h: &SimHandle, flag_field: Option<&str>) -> Bitrix24 {
    Bitrix24::new(
        "t1",
        &webhook_cfg(h, flag_field),
        Arc::new(common::MemTokens::default()),
    )
    .await
    .unwrap()
}

fn requests(h: &SimHandle) -> u64 {
    h.sim
        .stats()
        .get(&System::Bitrix24)
        .map_or(0, |s| s.requests)
}

/// Some manager of the generated world other than `not`.
fn other_user(h: &SimHandle, not: u64) -> u64 {
    h.sim
        .world()
        .users
        .iter()
        .find(|u| u.id != not && u.active)
        .unwrap()
        .id
}

async fn add_todo(h: &SimHandle, deal: u64) -> u64 {
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{}crm.activity.todo.add", h.b24_webhook_url()))
        .json(&serde_json::json!({"ownerTypeId": 2, "ownerId": deal,
            "deadline": "2026-03-05T15:00:00", "title": "Перезвонить", "responsibleId": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["result"]["id"].as_u64().unwrap()
}

/// A CRM to-do (`todo-N`, a crm.activity) is a task to the rules: it is handed over like one,
/// and completing it closes the to-do and puts the result on its deal's timeline.
#[tokio::test]
async fn crm_todos_are_handed_over_and_completed() {
    let h = start().await;
    let c = client(&h, None).await;
    let deal = *h.sim.world().deals.keys().next().unwrap();
    let user = other_user(&h, 1);
    let todo = add_todo(&h, deal).await;
    c.set_responsible(
        &EntityRef::new(EntityKind::Task, format!("todo-{todo}")),
        &user.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(h.sim.world().tasks[&todo].responsible_id, user);
    c.complete_task(&format!("todo-{todo}"), "Дозвонились")
        .await
        .unwrap();
    let w = h.sim.world();
    assert!(w.tasks[&todo].completed);
    assert!(
        w.comments
            .iter()
            .any(|(o, id, text, _)| *o == Owner::Deal && *id == deal && text == "Дозвонились")
    );
}

/// Bitrix24 has no tags: flags live in the user field `crm.flag_field` names, which leads do
/// not have.
#[tokio::test]
async fn flags_need_the_configured_user_field() {
    let h = start().await;
    // Without a flag field: a clear, permanent error.
    let plain = client(&h, None).await;
    let deal = *h.sim.world().deals.keys().next().unwrap();
    let e = plain
        .update_tags(
            &EntityRef::new(EntityKind::Deal, deal.to_string()),
            &["no_activity".into()],
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("crm.flag_field"), "{}", e.message);
    assert!(h.sim.world().deals[&deal].tags.is_empty());

    let c = client(&h, Some(FLAGS)).await;
    let e = c
        .update_tags(&EntityRef::new(EntityKind::Lead, "1"), &["x".into()], &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
}

fn call(external: &str, phone: &str, entity: Option<EntityRef>, user: u64) -> CallRecord {
    CallRecord {
        external_id: external.into(),
        direction: Direction::In,
        phone: phone.into(),
        started_at: Utc.with_ymd_and_hms(2026, 3, 2, 9, 30, 0).unwrap(),
        duration_s: 95,
        answered: true,
        responsible_id: Some(user.to_string()),
        recording_url: None,
        entity,
    }
}

#[tokio::test]
async fn oauth_registers_external_calls_once() {
    let h = start().await;
    let c = Bitrix24::new("t1", &oauth_cfg(&h), Arc::new(common::MemTokens::default()))
        .await
        .unwrap();
    let contact = *h.sim.world().contacts.keys().next().unwrap();
    let user = other_user(&h, 0);
    let before = h.sim.world().activities.len();
    let mut rec = call(
        "cm-2001",
        "+79993334455",
        Some(EntityRef::new(EntityKind::Contact, contact.to_string())),
        user,
    );
    rec.direction = Direction::Out;
    let id = c.register_call(&rec).await.unwrap();
    let stats = h.sim.stats()[&System::Bitrix24].by_method.clone();
    assert_eq!(stats.get("telephony.externalcall.register"), Some(&1));
    assert_eq!(stats.get("telephony.externalcall.finish"), Some(&1));
    {
        let w = h.sim.world();
        assert_eq!(w.activities.len(), before + 1);
        let a = &w.activities[&id.parse::<u64>().unwrap()];
        assert_eq!(a.owner, (Owner::Contact, contact));
        assert_eq!(a.direction, Dir::Out);
        assert_eq!(a.duration_s, 95);
        assert_eq!(a.external_id.as_deref(), Some("cm-2001"));
    }
    assert_eq!(c.register_call(&rec).await.unwrap(), id);
    assert_eq!(h.sim.world().activities.len(), before + 1);
    assert_eq!(h.sim.b24.finished_calls(), 1);
    let stats = h.sim.stats()[&System::Bitrix24].by_method.clone();
    assert_eq!(stats.get("telephony.externalcall.register"), Some(&1));

    // A missed call.
    let mut missed = call(
        "cm-2002",
        "+79993334455",
        Some(EntityRef::new(EntityKind::Contact, contact.to_string())),
        user,
    );
    missed.answered = false;
    let id2 = c.register_call(&missed).await.unwrap();
    assert_eq!(
        h.sim.world().activities[&id2.parse::<u64>().unwrap()].duration_s,
        0
    );
}

fn all_cursors(since: Option<Ts>) -> Vec<(EntityKind, Cursor)> {
    EntityKind::ALL
        .iter()
        .map(|k| {
            (
                *k,
                Cursor {
                    since,
                    ..Cursor::default()
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn change_probe_pages_continue_with_fetch_page() {
    // 500 contacts and nothing else: a first pass over every kind.
    let t0 = Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap();
    let w = common::contacts_world(500);
    let h = common::serve_world(opts(), w).await;
    let c = client(&h, None).await;
    h.sim.reset_stats();
    let changes = c.fetch_changes(&all_cursors(None)).await.unwrap();
    assert_eq!(requests(&h), 1);
    assert_eq!(changes.len(), 1);
    let (kind, page) = &changes[0];
    assert_eq!(*kind, EntityKind::Contact);
    // 6 kinds share 50 commands: 8 pages of 50 each.
    assert_eq!(page.records.len(), 400);
    assert!(!page.done);
    assert_eq!(page.next.position.as_deref(), Some("500"));
    let rest = c.fetch_page(EntityKind::Contact, &page.next).await.unwrap();
    assert!(rest.done);
    assert_eq!(rest.records.len(), 100);
    assert_eq!(rest.records[0].id().to_string(), "501");
    assert_eq!(rest.next.high_water, Some(t0 + Duration::seconds(499)));
}

#[tokio::test]
async fn existing_ids_miss_deleted_records() {
    let h = start().await;
    let c = client(&h, None).await;
    let (gone, n_deals) = {
        let mut w = h.sim.world();
        let gone = *w.deals.keys().nth(5).unwrap();
        w.deletions.push(Deletion {
            owner: Owner::Deal,
            id: gone,
            at: Utc::now(),
        });
        (gone, w.deals.len())
    };
    h.sim.reset_stats();
    let ids = c.existing_ids(EntityKind::Deal).await.unwrap().unwrap();
    assert_eq!(requests(&h), 1, "up to 2,500 ids in one batch");
    assert_eq!(ids.len(), n_deals - 1);
    assert!(!ids.contains(&gone.to_string()));
    {
        let w = h.sim.world();
        for id in w.deals.keys().filter(|id| **id != gone) {
            assert!(ids.contains(&id.to_string()));
        }
    }

    // Tasks include CRM to-dos as `todo-N`.
    let deal = *h.sim.world().deals.keys().next().unwrap();
    let todo = add_todo(&h, deal).await;
    let tasks = c.existing_ids(EntityKind::Task).await.unwrap().unwrap();
    assert!(tasks.contains(&format!("todo-{todo}")));
    assert_eq!(tasks.len(), h.sim.world().tasks.len());
    let acts = c.existing_ids(EntityKind::Activity).await.unwrap().unwrap();
    assert!(acts.len() >= h.sim.world().activities.len());
}
