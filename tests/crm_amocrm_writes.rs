//! amoCRM connector writes and the change probe, against the simulator over real HTTP.

mod common;

use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use dozor::config::AmocrmConfig;
use dozor::crm::amocrm::AmoCrm;
use dozor::crm::{CallRecord, Crm, Cursor, NewContact, NewDeal, NewLead};
use dozor::domain::{Direction, EntityKind, EntityRef, Utm};
use dozor::store::Store;
use dozor_sim::world::{ActivityType, Deletion, LeadStatus, Owner, StageKind};
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

#[tokio::test]
async fn every_write_changes_the_world() {
    let h = common::start_sim(opts(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&h, &dir).await;
    let (user_a, user_b, open_stage, pipeline, other_stage) = {
        let w = h.sim.world();
        let p = w.pipelines.iter().find(|p| p.is_default).unwrap();
        let open: Vec<u64> = p
            .stages
            .iter()
            .filter(|s| s.kind == StageKind::Open)
            .map(|s| s.id)
            .collect();
        (w.users[0].id, w.users[1].id, open[0], p.id, open[1])
    };

    // create_contact
    let contact = c
        .create_contact(&NewContact {
            name: "Иван Новиков".into(),
            phone: "+79990001122".into(),
            responsible_id: Some(user_a.to_string()),
        })
        .await
        .unwrap();
    let contact_id: u64 = contact.parse().unwrap();
    {
        let w = h.sim.world();
        let ct = &w.contacts[&contact_id];
        assert_eq!(ct.phones, vec!["+79990001122".to_string()]);
        assert_eq!(ct.responsible_id, user_a);
        assert_eq!(ct.full_name(), "Иван Новиков");
    }

    // create_deal with a contact link and a comment
    let deal = c
        .create_deal(&NewDeal {
            title: "Повторный заказ".into(),
            pipeline_id: None,
            stage_id: None,
            responsible_id: Some(user_a.to_string()),
            contact_id: Some(contact.clone()),
            company_id: None,
            lead_id: None,
            amount: 1500.4,
            comment: "dozor:marker:deal1".into(),
        })
        .await
        .unwrap();
    let deal_id: u64 = deal.parse().unwrap();
    {
        let w = h.sim.world();
        let d = &w.deals[&deal_id];
        assert_eq!(d.title, "Повторный заказ");
        assert_eq!(d.contact_id, Some(contact_id));
        assert_eq!(d.pipeline_id, pipeline);
        assert_eq!(d.stage_id, open_stage);
        assert_eq!(d.amount, 1500.0);
        assert!(
            w.comments.iter().any(|(o, id, t, _)| *o == Owner::Deal
                && *id == deal_id
                && t == "dozor:marker:deal1")
        );
    }

    // set_responsible on a deal, a contact and a task
    c.set_responsible(
        &EntityRef::new(EntityKind::Deal, deal.clone()),
        &user_b.to_string(),
    )
    .await
    .unwrap();
    c.set_responsible(
        &EntityRef::new(EntityKind::Contact, contact.clone()),
        &user_b.to_string(),
    )
    .await
    .unwrap();
    let task_id = *h.sim.world().tasks.keys().next().unwrap();
    c.set_responsible(
        &EntityRef::new(EntityKind::Task, task_id.to_string()),
        &user_b.to_string(),
    )
    .await
    .unwrap();
    {
        let w = h.sim.world();
        assert_eq!(w.deals[&deal_id].responsible_id, user_b);
        assert_eq!(w.contacts[&contact_id].responsible_id, user_b);
        assert_eq!(w.tasks[&task_id].responsible_id, user_b);
    }
    let err = c
        .set_responsible(&EntityRef::new(EntityKind::Activity, "1"), "1")
        .await
        .unwrap_err();
    assert_eq!(err.kind, dozor::http::ErrorKind::Permanent);

    // move_deal
    c.move_deal(&deal, &other_stage.to_string()).await.unwrap();
    assert_eq!(h.sim.world().deals[&deal_id].stage_id, other_stage);

    // update_tags: add two, then remove one; the rest survives
    c.update_tags(
        &EntityRef::new(EntityKind::Deal, deal.clone()),
        &["vip".into(), "повтор".into()],
        &[],
    )
    .await
    .unwrap();
    c.update_tags(
        &EntityRef::new(EntityKind::Deal, deal.clone()),
        &[],
        &["vip".into()],
    )
    .await
    .unwrap();
    assert_eq!(
        h.sim.world().deals[&deal_id].tags,
        vec!["повтор".to_string()]
    );
    c.update_tags(
        &EntityRef::new(EntityKind::Contact, contact.clone()),
        &["dozor".into()],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        h.sim.world().contacts[&contact_id].tags,
        vec!["dozor".to_string()]
    );

    // close_deal_lost: a loss reason is created once and reused
    c.close_deal_lost(&deal, "не дозвонились").await.unwrap();
    {
        let w = h.sim.world();
        let d = &w.deals[&deal_id];
        let (_, st) = w.stage(d.stage_id).unwrap();
        assert_eq!(st.kind, StageKind::Lost);
        assert_eq!(d.loss_reason.as_deref(), Some("не дозвонились"));
        assert!(d.closed_at.is_some());
        assert!(w.comments.iter().any(|(o, id, t, _)| *o == Owner::Deal
            && *id == deal_id
            && t.contains("не дозвонились")));
    }
    let reasons_before = h.sim.amo.reasons().len();
    let deal2 = c
        .create_deal(&NewDeal {
            title: "Ещё одна".into(),
            pipeline_id: Some((7_000_000 + pipeline).to_string()),
            stage_id: Some(other_stage.to_string()),
            responsible_id: None,
            contact_id: None,
            company_id: None,
            lead_id: None,
            amount: 0.0,
            comment: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        h.sim.world().deals[&deal2.parse::<u64>().unwrap()].stage_id,
        other_stage
    );
    c.close_deal_lost(&deal2, "Не дозвонились").await.unwrap();
    assert_eq!(h.sim.amo.reasons().len(), reasons_before);

    // complete_task
    c.complete_task(&task_id.to_string(), "Дозвонились, договорились о встрече")
        .await
        .unwrap();
    {
        let w = h.sim.world();
        let t = &w.tasks[&task_id];
        assert!(t.completed);
        assert_eq!(
            t.result.as_deref(),
            Some("Дозвонились, договорились о встрече")
        );
    }

    // create_lead: a call (sip) and a web form
    let uid = c
        .create_lead(&NewLead {
            title: "Звонок с незнакомого номера".into(),
            name: "Пётр".into(),
            phone: Some("+79995554433".into()),
            source: "CALL".into(),
            utm: Utm::default(),
            responsible_id: Some(user_a.to_string()),
            comment: "dozor:marker:lead1".into(),
        })
        .await
        .unwrap();
    let lead_id: u64 = uid.strip_prefix("unsorted-").unwrap().parse().unwrap();
    {
        let w = h.sim.world();
        let l = &w.leads[&lead_id];
        assert_eq!(l.status, LeadStatus::New);
        assert_eq!(l.source, "CALL");
        assert_eq!(l.phone.as_deref(), Some("+79995554433"));
        assert_eq!(l.name, "Пётр");
        assert_eq!(l.responsible_id, user_a);
        assert!(
            w.comments.iter().any(|(o, id, t, _)| *o == Owner::Lead
                && *id == lead_id
                && t == "dozor:marker:lead1")
        );
    }
    let uid = c
        .create_lead(&NewLead {
            title: "Заявка с сайта".into(),
            name: "Ольга".into(),
            phone: Some("+79995554400".into()),
            source: "WEB".into(),
            utm: Utm {
                source: Some("yandex".into()),
                campaign: Some("spring".into()),
                ..Utm::default()
            },
            responsible_id: None,
            comment: String::new(),
        })
        .await
        .unwrap();
    let lead_id: u64 = uid.strip_prefix("unsorted-").unwrap().parse().unwrap();
    {
        let w = h.sim.world();
        let l = &w.leads[&lead_id];
        assert_eq!(l.source, "WEB");
        assert_eq!(l.title, "Заявка с сайта");
        assert_eq!(l.utm.source.as_deref(), Some("yandex"));
        assert_eq!(l.utm.campaign.as_deref(), Some("spring"));
    }
    // The lead reads back through the connector with its UTM.
    let page = c
        .fetch_page(
            EntityKind::Lead,
            &Cursor {
                since: Some(Utc::now() - Duration::minutes(5)),
                ..Cursor::default()
            },
        )
        .await
        .unwrap();
    let back = page
        .records
        .iter()
        .find(|r| r.id() == uid)
        .expect("new lead is read back");
    match back {
        dozor::domain::Record::Lead(l) => assert_eq!(l.utm.source.as_deref(), Some("yandex")),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn register_call_creates_the_contact_and_never_logs_twice() {
    let h = common::start_sim(opts(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&h, &dir).await;
    let phone = "+79997770011";
    assert!(h.sim.world().find_by_phone(phone).is_empty());
    let user = h.sim.world().users[0].id;
    let call = CallRecord {
        external_id: "cm-call-100500".into(),
        direction: Direction::In,
        phone: phone.into(),
        started_at: Utc::now() - Duration::minutes(3),
        duration_s: 95,
        answered: true,
        responsible_id: Some(user.to_string()),
        recording_url: Some("https://rec.example/100500.mp3".into()),
        entity: None,
    };
    let id = c.register_call(&call).await.unwrap();
    let (contact, act_count) = {
        let w = h.sim.world();
        let owners = w.find_by_phone(phone);
        assert_eq!(owners.len(), 1, "one contact was created");
        assert_eq!(owners[0].0, Owner::Contact);
        let a = &w.activities[&id.parse::<u64>().unwrap()];
        assert_eq!(a.kind, ActivityType::Call);
        assert_eq!(a.external_id.as_deref(), Some("cm-call-100500"));
        assert_eq!(a.duration_s, 95);
        assert_eq!(a.owner, (Owner::Contact, owners[0].1));
        (owners[0].1, w.activities.len())
    };
    // A repeat gives the same id and no second note.
    h.sim.reset_stats();
    let again = c.register_call(&call).await.unwrap();
    assert_eq!(again, id);
    {
        let w = h.sim.world();
        assert_eq!(w.activities.len(), act_count);
        assert_eq!(w.find_by_phone(phone), vec![(Owner::Contact, contact)]);
    }
    let stats = h.sim.stats();
    let by = &stats[&System::Amocrm].by_method;
    assert!(!by.contains_key("POST /api/v4/calls"), "{by:?}");
    // Even without the pre-check the fake answers a known uniq with the existing call.
    let other = CallRecord {
        external_id: "cm-call-100501".into(),
        answered: false,
        duration_s: 0,
        direction: Direction::Out,
        ..call.clone()
    };
    let id2 = c.register_call(&other).await.unwrap();
    assert_ne!(id2, id);
    let a = h.sim.world().activities[&id2.parse::<u64>().unwrap()].clone();
    assert_eq!(a.owner, (Owner::Contact, contact));
    assert_eq!(a.duration_s, 0);
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
