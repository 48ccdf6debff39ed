//! Calls on the CRM timeline: a call is put on the record it names, or on a holder of its
//! number, once however often it is sent.

use chrono::Utc;
use dozor::crm::CallRecord;
use dozor::domain::{Direction, EntityKind, EntityRef};
use dozor::http::ErrorKind;
use dozor_sim::world::{ActivityType, Dir, Owner};

use crate::common::crm::{CrmCase, two_users};

for_each_crm!(registers_calls_once);

/// What the CRM does with a call from a number nobody has, given no record to put it on.
enum UnknownCaller {
    /// Refused: the call cannot be placed (a Bitrix24 webhook, without telephony.*).
    Refused,
    /// A contact with the number is created and holds the call (amoCRM logs calls on
    /// contacts).
    NewContact,
}

impl CrmCase {
    fn unknown_caller(self) -> UnknownCaller {
        match self {
            CrmCase::Bitrix24 => UnknownCaller::Refused,
            CrmCase::Amocrm => UnknownCaller::NewContact,
        }
    }

    /// A call's number as the CRM keeps it: amoCRM is sent the digits alone.
    fn kept_phone(self, e164: &str) -> String {
        match self {
            CrmCase::Bitrix24 => e164.to_string(),
            CrmCase::Amocrm => e164.chars().filter(char::is_ascii_digit).collect(),
        }
    }

    /// The stats key of the request that puts a call on the timeline.
    fn call_write(self) -> &'static str {
        match self {
            CrmCase::Bitrix24 => "crm.activity.add",
            CrmCase::Amocrm => "POST /api/v4/calls",
        }
    }
}

fn call(external: &str, phone: &str, entity: Option<EntityRef>, user: u64) -> CallRecord {
    CallRecord {
        external_id: external.into(),
        direction: Direction::In,
        phone: phone.into(),
        started_at: Utc::now() - chrono::Duration::minutes(3),
        duration_s: 95,
        answered: true,
        responsible_id: Some(user.to_string()),
        recording_url: Some("https://rec.example/100500.mp3".into()),
        entity,
    }
}

// Long: a call on a named record, its repeat, a call placed by number, a missed one and one
// from a number nobody has are one story of the same timeline.
async fn registers_calls_once(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    let (contact, phone) = {
        let w = h.sim.world();
        let ct = w.contacts.values().find(|c| !c.phones.is_empty()).unwrap();
        (ct.id, ct.phones[0].clone())
    };
    let (user, _) = two_users(&h);
    let before = h.sim.world().activities.len();
    let on_contact = Some(EntityRef::new(EntityKind::Contact, contact.to_string()));
    let rec = call("cm-1001", &phone, on_contact.clone(), user);
    let id = c.register_call(&rec).await.unwrap();
    {
        let w = h.sim.world();
        assert_eq!(w.activities.len(), before + 1);
        let a = &w.activities[&id.parse::<u64>().unwrap()];
        assert_eq!(a.kind, ActivityType::Call);
        assert_eq!(a.direction, Dir::In);
        assert_eq!(a.owner, (Owner::Contact, contact));
        assert_eq!(a.external_id.as_deref(), Some("cm-1001"));
        assert_eq!(a.phone, Some(crm.kept_phone(&phone)));
        assert_eq!(a.duration_s, 95);
        assert_eq!(a.responsible_id, user);
        assert!(a.completed);
    }
    // A repeat returns the same id and writes nothing.
    h.sim.reset_stats();
    assert_eq!(c.register_call(&rec).await.unwrap(), id);
    assert_eq!(h.sim.world().activities.len(), before + 1);
    let stats = h.sim.stats()[&crm.system()].clone();
    assert!(!stats.by_method.contains_key(crm.call_write()), "{stats:?}");

    // No record named: placed on a holder of the number.
    let id2 = c
        .register_call(&call("cm-1002", &phone, None, user))
        .await
        .unwrap();
    assert_ne!(id2, id);
    let owner = h.sim.world().activities[&id2.parse::<u64>().unwrap()].owner;
    assert!(h.sim.world().find_by_phone(&phone).contains(&owner));

    // A missed call, outgoing: no talk time.
    let missed = CallRecord {
        external_id: "cm-1003".into(),
        answered: false,
        duration_s: 0,
        direction: Direction::Out,
        ..rec.clone()
    };
    let id3 = c.register_call(&missed).await.unwrap();
    let a = h.sim.world().activities[&id3.parse::<u64>().unwrap()].clone();
    assert_eq!(
        (a.owner, a.direction, a.duration_s),
        ((Owner::Contact, contact), Dir::Out, 0)
    );

    // Nobody has the number.
    let stranger = "+79997770011";
    assert!(h.sim.world().find_by_phone(stranger).is_empty());
    let unknown = call("cm-1004", stranger, None, user);
    let result = c.register_call(&unknown).await;
    match crm.unknown_caller() {
        UnknownCaller::Refused => {
            assert_eq!(result.unwrap_err().kind, ErrorKind::Permanent);
            assert_eq!(h.sim.world().activities.len(), before + 3);
        }
        UnknownCaller::NewContact => {
            let id4 = result.unwrap();
            let owners = h.sim.world().find_by_phone(stranger);
            assert_eq!(owners.len(), 1, "one contact was created");
            assert_eq!(owners[0].0, Owner::Contact);
            let a = h.sim.world().activities[&id4.parse::<u64>().unwrap()].clone();
            assert_eq!(a.owner, owners[0]);
            // Sent again: the same call on the same contact, no second contact.
            assert_eq!(c.register_call(&unknown).await.unwrap(), id4);
            assert_eq!(h.sim.world().find_by_phone(stranger), owners);
            assert_eq!(h.sim.world().activities.len(), before + 4);
        }
    }
}
