//! Bitrix24 connector writes, the one-request change probe and the id sweep, against the
//! simulator over real HTTP.

mod common;

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use dozor::config::Bitrix24Config;
use dozor::crm::bitrix24::Bitrix24;
use dozor::crm::{CallRecord, Crm, Cursor, NewContact, NewDeal, NewLead};
use dozor::domain::{Direction, EntityKind, EntityRef, Record, Utm};
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

#[tokio::test]
async fn creates_leads_deals_and_contacts() {
    let h = start().await;
    let c = client(&h, None).await;
    let user = other_user(&h, 1);

    let lead_id = c
        .create_lead(&NewLead {
            title: "Звонок с +79990001122".into(),
            name: "Олег".into(),
            phone: Some("+79990001122".into()),
            source: "CALL".into(),
            utm: Utm {
                source: Some("yandex".into()),
                medium: Some("cpc".into()),
                campaign: Some("spring".into()),
                ..Utm::default()
            },
            responsible_id: Some(user.to_string()),
            comment: "dozor:ledger-1".into(),
        })
        .await
        .unwrap();
    {
        let w = h.sim.world();
        let l = &w.leads[&lead_id.parse::<u64>().unwrap()];
        assert_eq!(l.title, "Звонок с +79990001122");
        assert_eq!(l.name, "Олег");
        assert_eq!(l.phone.as_deref(), Some("+79990001122"));
        assert_eq!(l.source, "CALL");
        assert_eq!(l.responsible_id, user);
        assert_eq!(l.utm.source.as_deref(), Some("yandex"));
        assert_eq!(l.utm.campaign.as_deref(), Some("spring"));
    }

    // No pipeline given: the default pipeline's first stage.
    let contact_id = c
        .create_contact(&NewContact {
            name: "Ирина Смирнова".into(),
            phone: "+79995556677".into(),
            responsible_id: Some(user.to_string()),
        })
        .await
        .unwrap();
    let deal_id = c
        .create_deal(&NewDeal {
            title: "Повторный заказ".into(),
            pipeline_id: None,
            stage_id: None,
            responsible_id: Some(user.to_string()),
            contact_id: Some(contact_id.clone()),
            company_id: None,
            lead_id: Some(lead_id.clone()),
            amount: 15000.5,
            comment: "dozor:ledger-2".into(),
        })
        .await
        .unwrap();
    {
        let w = h.sim.world();
        let ct = &w.contacts[&contact_id.parse::<u64>().unwrap()];
        assert_eq!(ct.first_name, "Ирина");
        assert_eq!(ct.last_name, "Смирнова");
        assert_eq!(ct.phones, vec!["+79995556677".to_string()]);
        assert_eq!(ct.responsible_id, user);
        let d = &w.deals[&deal_id.parse::<u64>().unwrap()];
        let default = w.pipelines.iter().find(|p| p.is_default).unwrap();
        assert_eq!(d.pipeline_id, default.id);
        let first_open = default
            .stages
            .iter()
            .find(|s| s.kind == StageKind::Open)
            .unwrap();
        assert_eq!(d.stage_id, first_open.id);
        assert_eq!(d.amount, 15000.5);
        assert_eq!(d.contact_id, contact_id.parse().ok());
        assert_eq!(d.lead_id, lead_id.parse().ok());
        assert_eq!(d.responsible_id, user);
    }

    // An explicit pipeline and stage.
    let (pid, stage_code) = {
        let w = h.sim.world();
        let p = w.pipelines.iter().find(|p| p.id != 0).unwrap();
        (
            p.id,
            p.stages
                .iter()
                .filter(|s| s.kind == StageKind::Open)
                .nth(1)
                .unwrap()
                .code
                .clone(),
        )
    };
    let deal2 = c
        .create_deal(&NewDeal {
            title: "Во второй воронке".into(),
            pipeline_id: Some(pid.to_string()),
            stage_id: Some(stage_code.clone()),
            responsible_id: None,
            contact_id: None,
            company_id: None,
            lead_id: None,
            amount: 0.0,
            comment: String::new(),
        })
        .await
        .unwrap();
    let w = h.sim.world();
    let d = &w.deals[&deal2.parse::<u64>().unwrap()];
    assert_eq!(d.pipeline_id, pid);
    assert_eq!(w.stage(d.stage_id).unwrap().1.code, stage_code);
}

#[tokio::test]
async fn hands_records_to_another_user() {
    let h = start().await;
    let c = client(&h, None).await;
    let (lead, deal, contact, company, task) = {
        let w = h.sim.world();
        (
            *w.leads.keys().next().unwrap(),
            *w.deals.keys().next().unwrap(),
            *w.contacts.keys().next().unwrap(),
            *w.companies.keys().next().unwrap(),
            *w.tasks.keys().next().unwrap(),
        )
    };
    let current = h.sim.world().deals[&deal].responsible_id;
    let user = other_user(&h, current);
    for (kind, id) in [
        (EntityKind::Lead, lead),
        (EntityKind::Deal, deal),
        (EntityKind::Contact, contact),
        (EntityKind::Company, company),
        (EntityKind::Task, task),
    ] {
        c.set_responsible(&EntityRef::new(kind, id.to_string()), &user.to_string())
            .await
            .unwrap();
    }
    // A CRM to-do (`todo-N`).
    let todo = add_todo(&h, deal).await;
    c.set_responsible(
        &EntityRef::new(EntityKind::Task, format!("todo-{todo}")),
        &user.to_string(),
    )
    .await
    .unwrap();
    {
        let w = h.sim.world();
        assert_eq!(w.leads[&lead].responsible_id, user);
        assert_eq!(w.deals[&deal].responsible_id, user);
        assert_eq!(w.contacts[&contact].responsible_id, user);
        assert_eq!(w.companies[&company].responsible_id, user);
        assert_eq!(w.tasks[&task].responsible_id, user);
        assert_eq!(w.tasks[&todo].responsible_id, user);
    }
    // A record that does not exist is a permanent error.
    let e = c
        .set_responsible(&EntityRef::new(EntityKind::Deal, "999999999"), "1")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
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

#[tokio::test]
async fn moves_and_closes_deals_as_lost() {
    let h = start().await;
    let c = client(&h, None).await;
    // An open deal in a pipeline other than the general one, and one in the general one.
    let (deal_c, deal_0, next_code) = {
        let w = h.sim.world();
        let open = |d: &&SimDeal| w.stage(d.stage_id).unwrap().1.kind == StageKind::Open;
        let dc = w.deals.values().filter(open).find(|d| d.pipeline_id != 0);
        let d0 = w.deals.values().filter(open).find(|d| d.pipeline_id == 0);
        let d0 = d0.unwrap();
        let next = w
            .pipeline(0)
            .unwrap()
            .stages
            .iter()
            .find(|s| s.kind == StageKind::Open && s.id != d0.stage_id)
            .unwrap()
            .code
            .clone();
        (dc.unwrap().id, d0.id, next)
    };
    c.move_deal(&deal_0.to_string(), &next_code).await.unwrap();
    {
        let w = h.sim.world();
        assert_eq!(
            w.stage(w.deals[&deal_0].stage_id).unwrap().1.code,
            next_code
        );
    }

    for deal in [deal_c, deal_0] {
        c.close_deal_lost(&deal.to_string(), "не дозвонились")
            .await
            .unwrap();
        let w = h.sim.world();
        let d = &w.deals[&deal];
        let (p, s) = w.stage(d.stage_id).unwrap();
        assert_eq!(s.kind, StageKind::Lost);
        let want = if p.id == 0 {
            "LOSE".to_string()
        } else {
            format!("C{}:LOSE", p.id)
        };
        assert_eq!(s.code, want);
        assert!(d.closed_at.is_some());
        assert!(
            w.comments.iter().any(|(o, id, text, _)| *o == Owner::Deal
                && *id == deal
                && text.contains("не дозвонились")),
            "the reason is on the timeline"
        );
    }
}

#[tokio::test]
async fn flags_live_in_the_configured_user_field() {
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

    let c = client(&h, Some(FLAGS)).await;
    let contact = *h.sim.world().contacts.keys().next().unwrap();
    h.sim.world().deals.get_mut(&deal).unwrap().tags = vec!["vip".into()];
    let d = EntityRef::new(EntityKind::Deal, deal.to_string());
    c.update_tags(&d, &["no_activity".into(), "stale".into()], &[])
        .await
        .unwrap();
    assert_eq!(
        h.sim.world().deals[&deal].tags,
        vec!["vip", "no_activity", "stale"]
    );
    c.update_tags(&d, &["no_activity".into()], &["stale".into(), "vip".into()])
        .await
        .unwrap();
    assert_eq!(h.sim.world().deals[&deal].tags, vec!["no_activity"]);
    c.update_tags(
        &EntityRef::new(EntityKind::Contact, contact.to_string()),
        &["lost_client".into()],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(h.sim.world().contacts[&contact].tags, vec!["lost_client"]);

    // The flags are read back into the mirror's tags.
    let page = c
        .fetch_page(EntityKind::Deal, &Cursor::default())
        .await
        .unwrap();
    let mirrored = page
        .records
        .iter()
        .find_map(|r| match r {
            Record::Deal(x) if x.id == deal.to_string() => Some(x.tags.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(mirrored, vec!["no_activity"]);

    // Removing the last flag clears the field.
    c.update_tags(&d, &[], &["no_activity".into()])
        .await
        .unwrap();
    assert!(h.sim.world().deals[&deal].tags.is_empty());
    // Leads have no flag field.
    let e = c
        .update_tags(&EntityRef::new(EntityKind::Lead, "1"), &["x".into()], &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
}

#[tokio::test]
async fn completes_tasks_and_todos_with_a_result() {
    let h = start().await;
    let c = client(&h, None).await;
    let task = {
        let w = h.sim.world();
        w.tasks.values().find(|t| !t.completed).unwrap().id
    };
    c.complete_task(&task.to_string(), "Клиент перезвонит в пятницу")
        .await
        .unwrap();
    {
        let w = h.sim.world();
        let t = &w.tasks[&task];
        assert!(t.completed);
        assert!(t.closed_at.is_some());
        assert_eq!(t.result.as_deref(), Some("Клиент перезвонит в пятницу"));
    }
    let deal = *h.sim.world().deals.keys().next().unwrap();
    let todo = add_todo(&h, deal).await;
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
async fn webhook_registers_calls_as_activities_once() {
    let h = start().await;
    let c = client(&h, None).await;
    let (contact, phone) = {
        let w = h.sim.world();
        let ct = w.contacts.values().find(|c| !c.phones.is_empty()).unwrap();
        (ct.id, ct.phones[0].clone())
    };
    let user = other_user(&h, 0);
    let before = h.sim.world().activities.len();
    let rec = call(
        "cm-1001",
        "+79991112233",
        Some(EntityRef::new(EntityKind::Contact, contact.to_string())),
        user,
    );
    let id = c.register_call(&rec).await.unwrap();
    {
        let w = h.sim.world();
        assert_eq!(w.activities.len(), before + 1);
        let a = &w.activities[&id.parse::<u64>().unwrap()];
        assert_eq!(a.kind, ActivityType::Call);
        assert_eq!(a.direction, Dir::In);
        assert_eq!(a.owner, (Owner::Contact, contact));
        assert_eq!(a.external_id.as_deref(), Some("cm-1001"));
        assert_eq!(a.phone.as_deref(), Some("+79991112233"));
        assert_eq!(a.duration_s, 95);
        assert_eq!(a.responsible_id, user);
        assert!(a.completed);
    }
    // A repeat returns the same id and writes nothing.
    assert_eq!(c.register_call(&rec).await.unwrap(), id);
    assert_eq!(h.sim.world().activities.len(), before + 1);

    // No entity: found by phone.
    let id2 = c
        .register_call(&call("cm-1002", &phone, None, user))
        .await
        .unwrap();
    let owner = h.sim.world().activities[&id2.parse::<u64>().unwrap()].owner;
    assert!(h.sim.world().find_by_phone(&phone).contains(&owner));

    // Nobody has the number: a webhook cannot place the call.
    let e = c
        .register_call(&call("cm-1003", "+70000000001", None, user))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
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
