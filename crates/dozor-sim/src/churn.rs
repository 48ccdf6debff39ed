//! The world moving on while dozor runs: a sales team's everyday changes, applied on request so
//! a benchmark can time the cycle that follows a known amount of change.
//!
//! Every change touches or creates one record and stamps it with the moment of the change, so
//! the CRMs' incremental reads (`DATE_MODIFY`, `updated_at`) and the telephony's call reports
//! (by start time) show it to the next sync, as they would show a real team's work.

use std::collections::BTreeMap;

use chrono::Duration;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::world::*;

/// The kinds of change, with their share (of 100) of a churn: roughly what a sales team's day
/// consists of in the CRM and the telephony.
const MIX: [(Kind, u32); 6] = [
    (Kind::DealMoved, 25),
    (Kind::Call, 25),
    (Kind::TaskCompleted, 15),
    (Kind::TaskAdded, 15),
    (Kind::LeadAdded, 10),
    (Kind::ContactEdited, 10),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An open deal goes one stage on, or is won or lost (a closed one is reopened when no
    /// deal is open any more).
    DealMoved,
    /// A call in the telephony: incoming or outgoing, some missed, some from unknown numbers.
    Call,
    TaskCompleted,
    /// A next step on an open deal.
    TaskAdded,
    /// A new lead from the site or an ad, nobody has touched yet.
    LeadAdded,
    /// A contact's e-mail or surname corrected.
    ContactEdited,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::DealMoved => "deals_moved",
            Kind::Call => "calls",
            Kind::TaskCompleted => "tasks_completed",
            Kind::TaskAdded => "tasks_added",
            Kind::LeadAdded => "leads_added",
            Kind::ContactEdited => "contacts_edited",
        }
    }
}

/// What one churn did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Churned {
    /// Changes of each kind; they add up to the changes asked for.
    pub made: BTreeMap<&'static str, u32>,
    /// Answered calls the telephony integration also logged on the client's CRM timeline (an
    /// echo of a call change, not a change of its own), as most are in the generated history.
    pub calls_logged_in_crm: u32,
}

/// Applies `changes` changes to `w` at `now`, drawn from `seed` (the same seed on the same
/// world gives the same changes).
pub fn churn(w: &mut World, changes: u32, seed: u64, now: Ts) -> Churned {
    let mut c = Churner::new(w, seed, now);
    for _ in 0..changes {
        let kind = c.roll();
        let made = c.apply(kind);
        *c.done.made.entry(made.name()).or_default() += 1;
    }
    c.done
}

/// The candidates a churn picks from, gathered once so a change costs O(1) at any world size.
struct Churner<'a> {
    w: &'a mut World,
    rng: ChaCha8Rng,
    now: Ts,
    open_deals: Vec<u64>,
    open_tasks: Vec<u64>,
    contacts: Vec<u64>,
    managers: Vec<u64>,
    done: Churned,
}

impl<'a> Churner<'a> {
    fn new(w: &'a mut World, seed: u64, now: Ts) -> Self {
        let open_deals = w
            .deals
            .values()
            .filter(|d| stage_kind(w, d.stage_id) == Some(StageKind::Open))
            .map(|d| d.id)
            .collect();
        let open_tasks = w
            .tasks
            .values()
            .filter(|t| !t.completed)
            .map(|t| t.id)
            .collect();
        let contacts = w.contacts.keys().copied().collect();
        let managers = w.users_with(Role::Manager).map(|u| u.id).collect();
        Churner {
            w,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now,
            open_deals,
            open_tasks,
            contacts,
            managers,
            done: Churned::default(),
        }
    }

    fn roll(&mut self) -> Kind {
        let total: u32 = MIX.iter().map(|(_, share)| share).sum();
        let mut r = self.rng.gen_range(0..total);
        for (kind, share) in MIX {
            if r < share {
                return kind;
            }
            r -= share;
        }
        Kind::Call
    }

    /// Makes one change of `kind`, or of a kind the world allows when it has no candidate for
    /// it (no deal, no open task, no contact): the change made.
    fn apply(&mut self, kind: Kind) -> Kind {
        match kind {
            Kind::DealMoved if self.move_deal() => Kind::DealMoved,
            Kind::TaskCompleted if self.complete_task() => Kind::TaskCompleted,
            Kind::TaskAdded if self.add_task() => Kind::TaskAdded,
            Kind::ContactEdited if self.edit_contact() => Kind::ContactEdited,
            Kind::Call => {
                self.add_call();
                Kind::Call
            }
            _ => {
                self.add_lead();
                Kind::LeadAdded
            }
        }
    }

    fn move_deal(&mut self) -> bool {
        let now = self.now;
        if self.open_deals.is_empty() {
            return self.reopen_deal();
        }
        let i = self.rng.gen_range(0..self.open_deals.len());
        let id = self.open_deals[i];
        let Some((pipeline_id, stage_id)) =
            self.w.deals.get(&id).map(|d| (d.pipeline_id, d.stage_id))
        else {
            self.open_deals.swap_remove(i);
            return false;
        };
        let stages = self
            .w
            .pipeline(pipeline_id)
            .map(|p| p.stages.clone())
            .unwrap_or_default();
        let next_open = stages
            .iter()
            .filter(|s| s.kind == StageKind::Open)
            .skip_while(|s| s.id != stage_id)
            .nth(1)
            .map(|s| s.id);
        let roll = self.rng.gen_range(0..100);
        let (to, kind) = match next_open {
            Some(next) if roll < 70 => (Some(next), StageKind::Open),
            _ if roll < 85 => (None, StageKind::Won),
            _ => (None, StageKind::Lost),
        };
        let to = to.or_else(|| stages.iter().find(|s| s.kind == kind).map(|s| s.id));
        let (Some(to), Some(d)) = (to, self.w.deals.get_mut(&id)) else {
            return false;
        };
        d.stage_id = to;
        d.updated_at = now;
        if kind != StageKind::Open {
            d.closed_at = Some(now);
            d.loss_reason = (kind == StageKind::Lost).then(|| "Выбрали другого поставщика".into());
            self.open_deals.swap_remove(i);
        }
        true
    }

    /// Every deal is closed: a client comes back and a closed deal goes to its pipeline's first
    /// stage again.
    fn reopen_deal(&mut self) -> bool {
        let ids: Vec<u64> = self.w.deals.keys().copied().collect();
        let Some(&id) = ids.choose(&mut self.rng) else {
            return false;
        };
        let now = self.now;
        let first = self.w.deals.get(&id).and_then(|d| {
            self.w
                .stage_of_kind(d.pipeline_id, StageKind::Open)
                .map(|s| s.id)
        });
        let (Some(first), Some(d)) = (first, self.w.deals.get_mut(&id)) else {
            return false;
        };
        d.stage_id = first;
        d.closed_at = None;
        d.loss_reason = None;
        d.updated_at = now;
        self.open_deals.push(id);
        true
    }

    fn complete_task(&mut self) -> bool {
        while !self.open_tasks.is_empty() {
            let i = self.rng.gen_range(0..self.open_tasks.len());
            let id = self.open_tasks.swap_remove(i);
            if let Some(t) = self.w.tasks.get_mut(&id).filter(|t| !t.completed) {
                t.completed = true;
                t.result = Some("Созвонились, договорились о встрече".into());
                t.closed_at = Some(self.now);
                t.updated_at = self.now;
                return true;
            }
        }
        false
    }

    fn add_task(&mut self) -> bool {
        let Some(&deal_id) = self.open_deals.choose(&mut self.rng) else {
            return false;
        };
        let Some(resp) = self.w.deals.get(&deal_id).map(|d| d.responsible_id) else {
            return false;
        };
        let head = self
            .w
            .users_with(Role::HeadOfSales)
            .next()
            .map_or(resp, |u| u.id);
        let title = if self.rng.gen_bool(0.5) {
            "Позвонить клиенту"
        } else {
            "Отправить КП"
        };
        let deadline = self.now + Duration::hours(self.rng.gen_range(2..72));
        let id = self.w.next_id();
        self.w.tasks.insert(
            id,
            SimTask {
                id,
                title: title.into(),
                description: String::new(),
                responsible_id: resp,
                created_by: head,
                deadline: Some(deadline),
                completed: false,
                result: None,
                binding: Some((Owner::Deal, deal_id)),
                created_at: self.now,
                updated_at: self.now,
                closed_at: None,
            },
        );
        self.open_tasks.push(id);
        true
    }

    fn edit_contact(&mut self) -> bool {
        let Some(&id) = self.contacts.choose(&mut self.rng) else {
            return false;
        };
        let n = self.rng.gen_range(1..1000);
        let Some(c) = self.w.contacts.get_mut(&id) else {
            return false;
        };
        c.emails = vec![format!("client{id}.{n}@example.ru")];
        c.updated_at = self.now;
        true
    }

    /// A call that ended a moment ago: mostly with a known client (a contact's number, the
    /// contact's manager on the line), some from numbers the CRM does not know. Like the
    /// generated history, six answered calls with a known client in ten are also logged on the
    /// contact's timeline by the telephony integration.
    fn add_call(&mut self) {
        let known = self
            .contacts
            .choose(&mut self.rng)
            .and_then(|id| self.w.contacts.get(id))
            .filter(|_| self.rng.gen_bool(0.85))
            .and_then(|c| Some((c.id, World::phone_key(c.phones.first()?), c.responsible_id)));
        let (phone, resp) = match &known {
            Some((_, phone, resp)) => (phone.clone(), Some(*resp)),
            None => (
                format!("79{:09}", self.rng.gen_range(0..1_000_000_000u64)),
                None,
            ),
        };
        let direction = if resp.is_none() || self.rng.gen_bool(0.6) {
            Dir::In
        } else {
            Dir::Out
        };
        let employee_id = resp
            .and_then(|r| self.w.employees.iter().find(|e| e.user_id == r))
            .or_else(|| self.w.employees.choose(&mut self.rng))
            .map(|e| e.id);
        let is_lost = self.rng.gen_bool(0.2);
        let wait_s = self.rng.gen_range(2..40);
        let talk_s = if is_lost {
            0
        } else {
            self.rng.gen_range(15..1200)
        };
        // Calls reach the report when they end, so the whole call lies before the change.
        let start = self.now - Duration::seconds(wait_s + talk_s + self.rng.gen_range(0..60));
        let call = SimCall {
            id: self.w.next_id(),
            start,
            direction,
            is_lost,
            talk_s,
            wait_s,
            client_phone: phone,
            virtual_number: "74951234567".into(),
            employee_id,
            source: if direction == Dir::In {
                "call_tracking".into()
            } else {
                "va".into()
            },
            utm: SimUtm::default(),
            has_record: !is_lost,
        };
        if let Some((contact_id, _, resp)) = known.filter(|_| !is_lost)
            && self.rng.gen_bool(0.6)
        {
            self.log_call(&call, contact_id, resp);
        }
        self.w.calls.insert(call.id, call);
    }

    /// The entry the telephony integration writes on the timeline of contact `contact_id`
    /// (whose manager is `resp`) for `call`.
    fn log_call(&mut self, call: &SimCall, contact_id: u64, resp: u64) {
        let id = self.w.next_id();
        self.w.activities.insert(
            id,
            SimActivity {
                id,
                kind: ActivityType::Call,
                direction: call.direction,
                subject: "Звонок".into(),
                owner: (Owner::Contact, contact_id),
                responsible_id: resp,
                phone: Some(call.client_phone.clone()),
                duration_s: call.talk_s,
                completed: true,
                external_id: Some(call.id.to_string()),
                start: call.start,
                created_at: self.now,
                updated_at: self.now,
            },
        );
        self.done.calls_logged_in_crm += 1;
    }

    fn add_lead(&mut self) {
        let resp = self.managers.choose(&mut self.rng).copied().unwrap_or(1);
        let id = self.w.next_id();
        let phone = format!("+79{:09}", self.rng.gen_range(0..1_000_000_000u64));
        let utm = SimUtm {
            source: Some("yandex".into()),
            medium: Some("cpc".into()),
            campaign: Some(format!("campaign_{}", self.rng.gen_range(1..6))),
        };
        self.w.leads.insert(
            id,
            SimLead {
                id,
                title: "Заявка с сайта".into(),
                name: "Посетитель сайта".into(),
                phone: Some(phone),
                email: None,
                source: "WEB".into(),
                status: LeadStatus::New,
                responsible_id: resp,
                contact_id: None,
                company_id: None,
                utm,
                created_at: self.now,
                updated_at: self.now,
                closed_at: None,
            },
        );
    }
}

fn stage_kind(w: &World, stage_id: u64) -> Option<StageKind> {
    w.stage(stage_id).map(|(_, s)| s.kind)
}

/// A missed incoming call that just ended, from the number of a known client: one contact's
/// own number, shared with no other record, so the callback task has exactly one owner.
#[derive(Debug, Clone)]
pub struct MissedCall {
    pub call_id: u64,
    pub contact_id: u64,
    /// Digits, as the telephony reports it (`79991234567`).
    pub phone: String,
}

/// Records a missed incoming call from a known client at `now`; the client is drawn from
/// `seed`. None when no contact has a number of its own.
pub fn missed_call(w: &mut World, seed: u64, now: Ts) -> Option<MissedCall> {
    let ids: Vec<u64> = w.contacts.keys().copied().collect();
    if ids.is_empty() {
        return None;
    }
    let first = ChaCha8Rng::seed_from_u64(seed).gen_range(0..ids.len());
    let (contact_id, phone, resp) = ids[first..]
        .iter()
        .chain(&ids[..first])
        .filter_map(|id| w.contacts.get(id))
        .filter_map(|c| Some((c.id, World::phone_key(c.phones.first()?), c.responsible_id)))
        .find(|(id, phone, _)| w.find_by_phone(phone) == [(Owner::Contact, *id)])?;
    let employee_id = w.employees.iter().find(|e| e.user_id == resp).map(|e| e.id);
    let call_id = w.next_id();
    let wait_s = 25;
    w.calls.insert(
        call_id,
        SimCall {
            id: call_id,
            start: now - Duration::seconds(wait_s),
            direction: Dir::In,
            is_lost: true,
            talk_s: 0,
            wait_s,
            client_phone: phone.clone(),
            virtual_number: "74951234567".into(),
            employee_id,
            source: "call_tracking".into(),
            utm: SimUtm::default(),
            has_record: false,
        },
    );
    Some(MissedCall {
        call_id,
        contact_id,
        phone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn world() -> (World, Ts) {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap();
        (super::super::generate::generate(3, 1, at), at)
    }

    /// Ids of the records of `after` that are new or differ from `before`, with their update
    /// times (a call's start time).
    fn changed(before: &World, after: &World) -> Vec<(u64, Ts)> {
        fn diff<T: serde::Serialize>(
            b: &BTreeMap<u64, T>,
            a: &BTreeMap<u64, T>,
            at: fn(&T) -> Ts,
        ) -> Vec<(u64, Ts)> {
            let json = |x: &T| serde_json::to_string(x).unwrap();
            a.iter()
                .filter(|(id, x)| b.get(id).is_none_or(|y| json(y) != json(x)))
                .map(|(id, x)| (*id, at(x)))
                .collect()
        }
        [
            diff(&before.deals, &after.deals, |d| d.updated_at),
            diff(&before.leads, &after.leads, |l| l.updated_at),
            diff(&before.contacts, &after.contacts, |c| c.updated_at),
            diff(&before.companies, &after.companies, |c| c.updated_at),
            diff(&before.tasks, &after.tasks, |t| t.updated_at),
            diff(&before.activities, &after.activities, |a| a.updated_at),
            diff(&before.calls, &after.calls, |c| c.start),
        ]
        .concat()
    }

    #[test]
    fn churn_changes_n_records_and_stamps_them_with_the_change() {
        let (mut w, anchor) = world();
        let now = anchor + Duration::minutes(10);
        let before = w.clone();
        let done = churn(&mut w, 500, 9, now);
        let made = &done.made;
        assert_eq!(made.values().sum::<u32>(), 500, "{made:?}");
        // Every kind of change happens in a churn of this size.
        for (kind, _) in MIX {
            assert!(made.get(kind.name()).is_some_and(|n| *n > 0), "{made:?}");
        }
        // Each change is one record (a deal moved twice is one changed deal), plus the calls
        // logged on a timeline, and every changed record carries the time of the change: the
        // incremental sync sees all of them.
        let changed = changed(&before, &w);
        let logged = done.calls_logged_in_crm as usize;
        assert!(logged > 0 && logged < made["calls"] as usize, "{done:?}");
        assert_eq!(w.activities.len() - before.activities.len(), logged);
        assert!(
            changed.len() <= 500 + logged && changed.len() >= 300,
            "{} records changed",
            changed.len()
        );
        for (id, at) in &changed {
            match w.calls.get(id) {
                Some(_) => assert!(*at <= now && *at > now - Duration::hours(1), "call {id}"),
                None => assert_eq!(*at, now, "record {id}"),
            }
        }
        assert_eq!(w.calls.len() - before.calls.len(), made["calls"] as usize);
        assert_eq!(
            w.leads.len() - before.leads.len(),
            made["leads_added"] as usize
        );
        assert_eq!(
            w.tasks.len() - before.tasks.len(),
            made["tasks_added"] as usize
        );
        assert!(w.deals.values().any(|d| d.closed_at == Some(now)));
    }

    #[test]
    fn same_seed_same_churn() {
        let (a, anchor) = world();
        let now = anchor + Duration::minutes(1);
        let (mut a, mut b) = (a.clone(), a);
        churn(&mut a, 200, 4, now);
        churn(&mut b, 200, 4, now);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
    }

    #[test]
    fn churn_keeps_going_when_every_deal_is_closed() {
        let (mut w, anchor) = world();
        let now = anchor + Duration::minutes(1);
        let made = churn(&mut w, 5_000, 1, now).made;
        assert_eq!(made.values().sum::<u32>(), 5_000);
        assert!(made["deals_moved"] > 1_000, "{made:?}");
    }

    #[test]
    fn missed_call_comes_from_one_known_client() {
        let (mut w, anchor) = world();
        let m = missed_call(&mut w, 5, anchor).unwrap();
        let c = &w.calls[&m.call_id];
        assert!(c.is_lost && c.direction == Dir::In && c.start < anchor);
        assert_eq!(c.client_phone, m.phone);
        assert_eq!(w.find_by_phone(&m.phone), [(Owner::Contact, m.contact_id)]);
    }
}
