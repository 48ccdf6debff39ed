//! Writing to a CRM: every write the rules make lands in the world as asked and reads back
//! through the connector.

use chrono::{TimeZone, Utc};
use dozor::crm::{Crm, Cursor, NewContact, NewDeal, NewLead, NewTask};
use dozor::domain::{EntityKind, EntityRef, Record, Semantics, Utm};
use dozor::http::ErrorKind;
use dozor_sim::SimHandle;
use dozor_sim::world::{LeadStatus, Owner, SimStage, StageKind};

use crate::common::crm::{CrmCase, full_pass, two_users};

for_each_crm!(
    creates_leads,
    creates_contacts_and_deals,
    creates_deals_in_a_named_stage,
    creates_tasks_and_comments,
    hands_records_to_another_user,
    moves_and_closes_deals_as_lost,
    flags_are_added_and_removed,
    completes_tasks_with_a_result,
);

impl CrmCase {
    /// The connector's id of a world stage: its code on Bitrix24, its status id on amoCRM.
    fn stage_key(self, s: &SimStage) -> String {
        match self {
            CrmCase::Bitrix24 => s.code.clone(),
            CrmCase::Amocrm => s.id.to_string(),
        }
    }

    /// A deal's amount as the CRM keeps it: amoCRM prices are whole roubles.
    fn kept_amount(self, amount: f64) -> f64 {
        match self {
            CrmCase::Bitrix24 => amount,
            CrmCase::Amocrm => amount.trunc(),
        }
    }

    /// Whether the comment given with a new lead or deal becomes a note on its timeline
    /// (amoCRM) rather than a field of the record (Bitrix24 `COMMENTS`, which the simulator
    /// does not keep).
    fn comment_is_a_note(self) -> bool {
        self == CrmCase::Amocrm
    }

    /// Whether a new deal keeps the lead it came from (amoCRM deals are leads themselves).
    fn deal_keeps_its_lead(self) -> bool {
        self == CrmCase::Bitrix24
    }

    /// Kinds a record of which can be handed to another user.
    fn handed_over(self) -> &'static [EntityKind] {
        match self {
            CrmCase::Bitrix24 => &[
                EntityKind::Lead,
                EntityKind::Deal,
                EntityKind::Contact,
                EntityKind::Company,
                EntityKind::Task,
            ],
            CrmCase::Amocrm => &[
                EntityKind::Deal,
                EntityKind::Contact,
                EntityKind::Company,
                EntityKind::Task,
            ],
        }
    }
}

fn has_comment(h: &SimHandle, owner: Owner, id: u64, text: &str) -> bool {
    h.sim
        .world()
        .comments
        .iter()
        .any(|(o, i, t, _)| *o == owner && *i == id && t.contains(text))
}

/// Everything of `kind` changed in the last five minutes, read through the connector.
async fn recent(c: &dyn Crm, kind: EntityKind) -> Vec<Record> {
    let since = Cursor {
        since: Some(Utc::now() - chrono::Duration::minutes(5)),
        ..Cursor::default()
    };
    full_pass(c, kind, since).await.0
}

async fn creates_leads(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    let (user, _) = two_users(&h);

    let lead = c
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
            comment: "[dozor:ledger-1]".into(),
        })
        .await
        .unwrap();
    let lead_id = crm.world_id(&lead);
    {
        let w = h.sim.world();
        let l = &w.leads[&lead_id];
        assert_eq!(l.title, "Звонок с +79990001122");
        assert_eq!(l.name, "Олег");
        assert_eq!(l.phone.as_deref(), Some("+79990001122"));
        assert_eq!(l.source, "CALL");
        assert_eq!(l.status, LeadStatus::New);
        assert_eq!(l.responsible_id, user);
        assert_eq!(l.utm.source.as_deref(), Some("yandex"));
        assert_eq!(l.utm.campaign.as_deref(), Some("spring"));
    }
    if crm.comment_is_a_note() {
        assert!(has_comment(&h, Owner::Lead, lead_id, "[dozor:ledger-1]"));
    }

    // A form request, nobody responsible: its UTM reads back through the connector.
    let form = c
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
    {
        let w = h.sim.world();
        let l = &w.leads[&crm.world_id(&form)];
        assert_eq!(l.source, "WEB");
        assert_eq!(l.title, "Заявка с сайта");
        assert_eq!(l.utm.source.as_deref(), Some("yandex"));
        assert_eq!(l.utm.campaign.as_deref(), Some("spring"));
    }
    let leads = recent(c.as_ref(), EntityKind::Lead).await;
    let Some(Record::Lead(back)) = leads.iter().find(|r| r.id() == form) else {
        panic!("the new lead reads back");
    };
    assert_eq!(back.utm.source.as_deref(), Some("yandex"));
}

async fn creates_contacts_and_deals(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    let (user, _) = two_users(&h);
    let lead_id = *h.sim.world().leads.keys().next().unwrap();
    let lead = lead_id.to_string();

    // No pipeline given: the default pipeline's first open stage.
    let contact = c
        .create_contact(&NewContact {
            name: "Ирина Смирнова".into(),
            phone: "+79995556677".into(),
            responsible_id: Some(user.to_string()),
        })
        .await
        .unwrap();
    let deal = c
        .create_deal(&NewDeal {
            title: "Повторный заказ".into(),
            pipeline_id: None,
            stage_id: None,
            responsible_id: Some(user.to_string()),
            contact_id: Some(contact.clone()),
            company_id: None,
            lead_id: Some(lead.clone()),
            amount: 15000.4,
            comment: "[dozor:ledger-2]".into(),
        })
        .await
        .unwrap();
    let deal_id = crm.world_id(&deal);
    {
        let w = h.sim.world();
        let ct = &w.contacts[&crm.world_id(&contact)];
        assert_eq!(ct.first_name, "Ирина");
        assert_eq!(ct.last_name, "Смирнова");
        assert_eq!(ct.phones, vec!["+79995556677".to_string()]);
        assert_eq!(ct.responsible_id, user);
        let d = &w.deals[&deal_id];
        assert_eq!(d.title, "Повторный заказ");
        let default = w.pipelines.iter().find(|p| p.is_default).unwrap();
        assert_eq!(d.pipeline_id, default.id);
        let first_open = default.stages.iter().find(|s| s.kind == StageKind::Open);
        assert_eq!(d.stage_id, first_open.unwrap().id);
        assert_eq!(d.amount, crm.kept_amount(15000.4));
        assert_eq!(d.contact_id, Some(crm.world_id(&contact)));
        assert_eq!(d.responsible_id, user);
        if crm.deal_keeps_its_lead() {
            assert_eq!(d.lead_id, Some(lead_id));
        }
    }
    if crm.comment_is_a_note() {
        assert!(has_comment(&h, Owner::Deal, deal_id, "[dozor:ledger-2]"));
    }
}

/// A pipeline and stage named as the connector lists them.
async fn creates_deals_in_a_named_stage(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    let pipelines = c.pipelines().await.unwrap();
    let other = pipelines
        .iter()
        .find(|p| !p.is_default && p.id != "leads")
        .expect("a second deal pipeline");
    let stage = other
        .stages
        .iter()
        .filter(|s| s.semantics == Semantics::Open)
        .nth(1)
        .unwrap();
    let deal2 = c
        .create_deal(&NewDeal {
            title: "Во второй воронке".into(),
            pipeline_id: Some(other.id.clone()),
            stage_id: Some(stage.id.clone()),
            responsible_id: None,
            contact_id: None,
            company_id: None,
            lead_id: None,
            amount: 0.0,
            comment: String::new(),
        })
        .await
        .unwrap();
    {
        let w = h.sim.world();
        let (p, s) = w.stage(w.deals[&crm.world_id(&deal2)].stage_id).unwrap();
        assert!(!p.is_default);
        assert_eq!(crm.stage_key(s), stage.id);
    }
    let deals = recent(c.as_ref(), EntityKind::Deal).await;
    let Some(Record::Deal(back)) = deals.iter().find(|r| r.id() == deal2) else {
        panic!("the new deal reads back");
    };
    assert_eq!((&back.pipeline_id, &back.stage_id), (&other.id, &stage.id));
}

async fn creates_tasks_and_comments(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    let (deal, resp, contact) = {
        let w = h.sim.world();
        let d = w.deals.values().next().unwrap();
        (d.id, d.responsible_id, *w.contacts.keys().next().unwrap())
    };
    let deadline = Utc
        .timestamp_opt(Utc::now().timestamp() + 2 * 3600, 0)
        .unwrap();
    let id = c
        .create_task(&NewTask {
            title: "Позвонить клиенту".into(),
            description: "Создано автоматически [dozor:abc123]".into(),
            responsible_id: resp.to_string(),
            deadline,
            entity: Some(EntityRef::new(EntityKind::Deal, deal.to_string())),
        })
        .await
        .unwrap();
    {
        let w = h.sim.world();
        let t = &w.tasks[&crm.world_id(&id)];
        assert_eq!(t.binding, Some((Owner::Deal, deal)));
        // Wherever the CRM keeps it, the ledger's marker is on the task.
        assert!(
            format!("{} {}", t.title, t.description).contains("[dozor:abc123]"),
            "{t:?}"
        );
        assert_eq!(t.responsible_id, resp);
        assert_eq!(t.deadline, Some(deadline));
    }
    // The task reads back as it was written.
    let (tasks, _, _) = full_pass(c.as_ref(), EntityKind::Task, Cursor::default()).await;
    let Some(Record::Task(t)) = tasks.iter().find(|r| r.id() == id) else {
        panic!("the new task reads back");
    };
    assert_eq!(t.title, "Позвонить клиенту");
    assert_eq!(t.description, "Создано автоматически [dozor:abc123]");

    for (kind, owner, at) in [
        (EntityKind::Deal, Owner::Deal, deal),
        (EntityKind::Contact, Owner::Contact, contact),
    ] {
        let note = c
            .add_comment(&EntityRef::new(kind, at.to_string()), "проверка")
            .await
            .unwrap();
        assert!(!note.is_empty());
        assert!(has_comment(&h, owner, at, "проверка"), "{kind:?}");
    }
}

async fn hands_records_to_another_user(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    let (first, second) = two_users(&h);
    let w = h.sim.world().clone();
    let records = [
        (EntityKind::Lead, *w.leads.keys().next().unwrap()),
        (EntityKind::Deal, *w.deals.keys().next().unwrap()),
        (EntityKind::Contact, *w.contacts.keys().next().unwrap()),
        (EntityKind::Company, *w.companies.keys().next().unwrap()),
        (EntityKind::Task, *w.tasks.keys().next().unwrap()),
    ];
    let responsible = |kind, id: u64| {
        let w = h.sim.world();
        match kind {
            EntityKind::Lead => w.leads[&id].responsible_id,
            EntityKind::Deal => w.deals[&id].responsible_id,
            EntityKind::Contact => w.contacts[&id].responsible_id,
            EntityKind::Company => w.companies[&id].responsible_id,
            _ => w.tasks[&id].responsible_id,
        }
    };
    for (kind, id) in records {
        if !crm.handed_over().contains(&kind) {
            continue;
        }
        let to = if responsible(kind, id) == first {
            second
        } else {
            first
        };
        c.set_responsible(&EntityRef::new(kind, id.to_string()), &to.to_string())
            .await
            .unwrap();
        assert_eq!(responsible(kind, id), to, "{kind:?}");
    }
    // A record that does not exist, and a call, cannot be handed over: permanent errors.
    for what in [
        EntityRef::new(EntityKind::Deal, "999999999"),
        EntityRef::new(EntityKind::Activity, "1"),
    ] {
        let e = c.set_responsible(&what, "1").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{what:?}: {e}");
    }
}

async fn moves_and_closes_deals_as_lost(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    // An open deal in a pipeline other than the default one, and one in the default one.
    let (other, main, next) = {
        let w = h.sim.world();
        let open =
            |d: &&dozor_sim::world::SimDeal| w.stage(d.stage_id).unwrap().1.kind == StageKind::Open;
        let default = w.pipelines.iter().find(|p| p.is_default).unwrap();
        let other = w.deals.values().filter(open);
        let other = other.clone().find(|d| d.pipeline_id != default.id).unwrap();
        let main = w.deals.values().filter(open);
        let main = main.clone().find(|d| d.pipeline_id == default.id).unwrap();
        let next = default
            .stages
            .iter()
            .find(|s| s.kind == StageKind::Open && s.id != main.stage_id)
            .unwrap();
        (other.id, main.id, next.clone())
    };
    c.move_deal(&main.to_string(), &crm.stage_key(&next))
        .await
        .unwrap();
    assert_eq!(h.sim.world().deals[&main].stage_id, next.id);

    for deal in [other, main] {
        let pipeline = h.sim.world().deals[&deal].pipeline_id;
        c.close_deal_lost(&deal.to_string(), "не дозвонились")
            .await
            .unwrap();
        let w = h.sim.world();
        let d = &w.deals[&deal];
        let (p, s) = w.stage(d.stage_id).unwrap();
        assert_eq!((p.id, s.kind), (pipeline, StageKind::Lost), "{deal}");
        assert!(d.closed_at.is_some());
        drop(w);
        assert!(
            has_comment(&h, Owner::Deal, deal, "не дозвонились"),
            "the reason is on the timeline"
        );
    }
}

async fn flags_are_added_and_removed(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    let (deal, contact) = {
        let mut w = h.sim.world();
        let deal = *w.deals.keys().next().unwrap();
        w.deals.get_mut(&deal).unwrap().tags = vec!["vip".into()];
        (deal, *w.contacts.keys().next().unwrap())
    };
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
    let (deals, _, _) = full_pass(c.as_ref(), EntityKind::Deal, Cursor::default()).await;
    let mirrored = deals.iter().find_map(|r| match r {
        Record::Deal(x) if x.id == deal.to_string() => Some(x.tags.clone()),
        _ => None,
    });
    assert_eq!(mirrored, Some(vec!["no_activity".to_string()]));

    // Removing the last flag clears them.
    c.update_tags(&d, &[], &["no_activity".into()])
        .await
        .unwrap();
    assert!(h.sim.world().deals[&deal].tags.is_empty());
}

async fn completes_tasks_with_a_result(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    let task = {
        let w = h.sim.world();
        w.tasks.values().find(|t| !t.completed).unwrap().id
    };
    c.complete_task(&task.to_string(), "Клиент перезвонит в пятницу")
        .await
        .unwrap();
    let w = h.sim.world();
    let t = &w.tasks[&task];
    assert!(t.completed);
    assert!(t.closed_at.is_some());
    assert_eq!(t.result.as_deref(), Some("Клиент перезвонит в пятницу"));
}
