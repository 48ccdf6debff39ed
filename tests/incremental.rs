//! Rules that look only at what changed decide exactly as the reference look at the whole
//! mirror: on generated worlds (both CRMs, both telephonies, SQLite and PostgreSQL, several
//! seeds), through a sequence of cycles in which the sales team changes the CRM, calls come in
//! and the clock moves on (past task deadlines and day boundaries), every action the
//! incremental look proposes that the ledger would act on is one the reference proposes, with
//! the same effect, and none the reference would act on is missing.

mod common;

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use dozor::config::{self, RuleMode};
use dozor::domain::{CrmKind, TelephonyKind, Ts};
use dozor::engine::{CycleOptions, both_looks, run_cycle};
use dozor::ledger::{self, Proposal};
use dozor::store::Store;
use dozor::tenant::{self, Tenant};
use dozor_sim::world::{Dir, Owner, SimCall, SimTask, SimUtm, StageKind, World};
use rand::rngs::StdRng as ChaCha8Rng;
use rand::seq::IteratorRandom;
use rand::{Rng, SeedableRng};

/// Cycles per scenario.
const STEPS: usize = 8;

#[tokio::test]
async fn bitrix24_comagic_sqlite() {
    same_decisions(
        CrmKind::Bitrix24,
        TelephonyKind::Comagic,
        3,
        Db::Sqlite,
        RuleMode::On,
    )
    .await;
}

#[tokio::test]
async fn amocrm_calltouch_sqlite() {
    same_decisions(
        CrmKind::Amocrm,
        TelephonyKind::Calltouch,
        5,
        Db::Sqlite,
        RuleMode::On,
    )
    .await;
}

/// In shadow nothing is written, so violations stay and the reference proposes them again every
/// cycle; the incremental look proposes what changed or fell due.
#[tokio::test]
async fn bitrix24_calltouch_sqlite_shadow() {
    same_decisions(
        CrmKind::Bitrix24,
        TelephonyKind::Calltouch,
        11,
        Db::Sqlite,
        RuleMode::Shadow,
    )
    .await;
}

#[tokio::test]
async fn amocrm_comagic_sqlite_shadow() {
    same_decisions(
        CrmKind::Amocrm,
        TelephonyKind::Comagic,
        13,
        Db::Sqlite,
        RuleMode::Shadow,
    )
    .await;
}

#[tokio::test]
async fn amocrm_comagic_postgres() {
    if common::pg_skipped() {
        return;
    }
    same_decisions(
        CrmKind::Amocrm,
        TelephonyKind::Comagic,
        7,
        Db::Postgres,
        RuleMode::On,
    )
    .await;
}

#[tokio::test]
async fn bitrix24_calltouch_postgres_shadow() {
    if common::pg_skipped() {
        return;
    }
    same_decisions(
        CrmKind::Bitrix24,
        TelephonyKind::Calltouch,
        17,
        Db::Postgres,
        RuleMode::Shadow,
    )
    .await;
}

#[derive(Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

async fn same_decisions(crm: CrmKind, tel: TelephonyKind, seed: u64, db: Db, mode: RuleMode) {
    let dry_run = mode == RuleMode::Shadow;
    let h = common::start_sim(common::sim_opts(seed)).await;
    let dir = tempfile::tempdir().unwrap();
    let url = match db {
        Db::Sqlite => common::sqlite_url(dir.path()),
        Db::Postgres => common::pg_url().await,
    };
    let text = common::rules_on(common::tenant_config(&h, crm, tel, &url, "ru"));
    let cfg = config::parse(&text, None, None).unwrap().config;
    let store = Store::open(&url, 4).await.unwrap();
    let tenant = tenant::connect(&cfg.tenants[0], &store).await.unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut clock = Utc::now();
    let mut compared = BTreeMap::<&str, (usize, usize, usize)>::new();
    for step in 0..STEPS {
        sync(&store, &tenant, clock).await;
        for look in both_looks(&store, &tenant, dry_run, clock).await.unwrap() {
            let inc = actionable(&store, &look.incremental, mode).await;
            let reference = actionable(&store, &look.reference, mode).await;
            assert_eq!(
                inc.keys().collect::<Vec<_>>(),
                reference.keys().collect::<Vec<_>>(),
                "{crm:?} step {step} at {clock}: {} decided differently",
                look.rule
            );
            assert_eq!(inc, reference, "{crm:?} step {step}: {} effects", look.rule);
            // What the incremental look proposes beyond that is what the reference proposes too.
            let all: BTreeMap<_, _> = look.reference.iter().map(|p| (&p.key, p)).collect();
            for p in &look.incremental {
                let r = all.get(&p.key).unwrap_or_else(|| {
                    panic!("step {step}: {} proposed {} alone", look.rule, p.key)
                });
                assert_eq!(effect(p), effect(r), "step {step}: {}", p.key);
            }
            println!(
                "step {step}: {}: {} actionable; {} proposed incrementally, {} by the reference",
                look.rule,
                inc.len(),
                look.incremental.len(),
                look.reference.len()
            );
            let c = compared.entry(look.rule).or_default();
            c.0 += inc.len();
            c.1 += look.incremental.len();
            c.2 += look.reference.len();
        }
        let opts = CycleOptions {
            now: Some(clock),
            dry_run,
            ..CycleOptions::default()
        };
        let s = run_cycle(&store, &tenant, opts).await;
        assert!(s.ok(), "step {step}: {:?}", s.errors);
        churn(&mut h.sim.world(), &mut rng, clock);
        // Mostly minutes to hours within a day, sometimes days: deadlines pass, days roll over.
        clock += if step % 3 == 2 {
            Duration::minutes(rng.gen_range(24 * 60..3 * 24 * 60))
        } else {
            Duration::minutes(rng.gen_range(5..180))
        };
    }
    for (rule, (acted, looked, all)) in &compared {
        println!(
            "{crm:?}/{tel:?}: {rule}: {acted} actionable, {looked} proposed incrementally, {all} by the reference"
        );
    }
    // Calltouch tracks incoming calls only: no unanswered outgoing ones to count there.
    let busy: Vec<&str> = match tel {
        TelephonyKind::Comagic => vec![
            "dormant",
            "no_activity",
            "deal_without_task",
            "three_unanswered",
            "overdue_tasks",
            "lead_reaction",
            "lead_without_deal",
            "missed_call",
            "call_not_in_crm",
        ],
        TelephonyKind::Calltouch => vec![
            "dormant",
            "no_activity",
            "deal_without_task",
            "overdue_tasks",
            "lead_reaction",
            "lead_without_deal",
        ],
    };
    for rule in busy {
        assert!(
            compared.get(rule).is_some_and(|(acted, _, _)| *acted > 0),
            "the scenario gave {rule} something to do: {compared:?}"
        );
    }
    // In shadow the incremental looks were partial: the reference re-proposed what the ledger
    // had.
    if dry_run {
        assert!(
            compared.values().any(|(_, looked, all)| looked < all),
            "{compared:?}"
        );
    }
}

/// Both syncs, the telephony one up to the scenario's clock.
async fn sync(store: &Store, t: &Tenant, clock: Ts) {
    let opts = dozor::sync::SyncOptions {
        telephony_initial: std::time::Duration::from_secs(31 * 86_400),
        ..Default::default()
    };
    dozor::sync::sync_crm(store, t.id(), t.crm.as_ref(), opts)
        .await
        .unwrap();
    if let Some(tel) = t.telephony.as_deref() {
        dozor::sync::sync_telephony(store, t.id(), tel, opts, clock)
            .await
            .unwrap();
    }
}

/// The proposals the ledger would act on in `mode`, by key.
async fn actionable(store: &Store, ps: &[Proposal], mode: RuleMode) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in ps {
        if ledger::would_act(store, p, mode).await.unwrap() {
            out.insert(p.key.clone(), effect(p));
        }
    }
    out
}

fn effect(p: &Proposal) -> String {
    serde_json::to_string(&p.effect).unwrap()
}

/// What a sales team does between two cycles: tasks done, added, moved to another deal and
/// deleted; deals won, lost and re-bound to another contact; numbers edited; calls made and
/// missed, several unanswered in a row to one client. CRM records change at the real time (the
/// CRM's change feed follows it), calls and deadlines at the scenario's clock.
fn churn(w: &mut World, rng: &mut ChaCha8Rng, clock: Ts) {
    let now = Utc::now();
    // Every round a client's call is missed: the callback rule always has a case.
    missed_call(w, rng, clock);
    for _ in 0..rng.gen_range(3..12) {
        match rng.gen_range(0..14) {
            0 => complete_task(w, rng, now),
            1 => add_task(w, rng, clock),
            2 => move_task(w, rng, now),
            3 => close_deal(w, rng, now),
            4 => rebind_deal(w, rng, now),
            5 => edit_phone(w, rng, now),
            6 => unanswered_calls(w, rng, clock),
            7 => answered_call(w, rng, clock),
            8 => missed_call(w, rng, clock),
            9 => unknown_caller(w, rng, clock),
            10 => move_contact(w, rng, now),
            11 => big_order(w, rng, now),
            12 => share_phone(w, rng, now),
            _ => delete_task_binding(w, rng, now),
        }
    }
}

fn open_deal(w: &World, rng: &mut ChaCha8Rng) -> Option<u64> {
    w.deals
        .values()
        .filter(|d| {
            w.stage(d.stage_id)
                .is_some_and(|(_, s)| s.kind == StageKind::Open)
        })
        .map(|d| d.id)
        .choose(rng)
}

fn complete_task(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    if let Some(t) = w.tasks.values_mut().filter(|t| !t.completed).choose(rng) {
        t.completed = true;
        t.closed_at = Some(now);
        t.updated_at = now;
    }
}

fn add_task(w: &mut World, rng: &mut ChaCha8Rng, clock: Ts) {
    let Some(deal) = open_deal(w, rng) else {
        return;
    };
    let now = Utc::now();
    let responsible = w.deals[&deal].responsible_id;
    let id = w.next_id();
    let deadline = clock + Duration::minutes(rng.gen_range(10..3 * 24 * 60));
    w.tasks.insert(
        id,
        SimTask {
            id,
            title: "Перезвонить".into(),
            description: String::new(),
            responsible_id: responsible,
            created_by: responsible,
            deadline: Some(deadline),
            completed: false,
            result: None,
            binding: Some((Owner::Deal, deal)),
            created_at: now,
            updated_at: now,
            closed_at: None,
        },
    );
}

fn move_task(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    let Some(to) = open_deal(w, rng) else { return };
    if let Some(t) = w
        .tasks
        .values_mut()
        .filter(|t| !t.completed && matches!(t.binding, Some((Owner::Deal, _))))
        .choose(rng)
    {
        t.binding = Some((Owner::Deal, to));
        t.updated_at = now;
    }
}

/// A task taken off its deal (bound to nothing): the deal loses its next step.
fn delete_task_binding(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    if let Some(t) = w
        .tasks
        .values_mut()
        .filter(|t| !t.completed && t.binding.is_some())
        .choose(rng)
    {
        t.completed = true;
        t.closed_at = Some(now);
        t.updated_at = now;
    }
}

fn close_deal(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    let Some(id) = open_deal(w, rng) else { return };
    let pipeline = w.deals[&id].pipeline_id;
    let kind = if rng.gen_bool(0.5) {
        StageKind::Won
    } else {
        StageKind::Lost
    };
    let Some(stage) = w.stage_of_kind(pipeline, kind).map(|s| s.id) else {
        return;
    };
    let d = w.deals.get_mut(&id).unwrap();
    d.stage_id = stage;
    d.closed_at = Some(now);
    d.updated_at = now;
}

fn rebind_deal(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    let Some(id) = open_deal(w, rng) else { return };
    let Some(contact) = w.contacts.keys().copied().choose(rng) else {
        return;
    };
    let d = w.deals.get_mut(&id).unwrap();
    d.contact_id = Some(contact);
    d.updated_at = now;
}

/// A contact joins another company or leaves its own: its deals change client.
fn move_contact(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    let company = if rng.gen_bool(0.3) {
        None
    } else {
        w.companies.keys().copied().choose(rng)
    };
    if let Some(c) = w.contacts.values_mut().choose(rng) {
        c.company_id = company;
        c.updated_at = now;
    }
}

/// A large won order for some client: its revenue, and so every client's ABC class, moves.
fn big_order(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    let Some(id) = w
        .deals
        .values()
        .filter(|d| d.contact_id.is_some() || d.company_id.is_some())
        .map(|d| d.id)
        .choose(rng)
    else {
        return;
    };
    let pipeline = w.deals[&id].pipeline_id;
    let Some(stage) = w.stage_of_kind(pipeline, StageKind::Won).map(|s| s.id) else {
        return;
    };
    let d = w.deals.get_mut(&id).unwrap();
    d.stage_id = stage;
    d.amount = rng.gen_range(1_000_000..20_000_000) as f64;
    d.closed_at = Some(now);
    d.updated_at = now;
}

/// Two clients share a number: a call to it counts for one of them only.
fn share_phone(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    let from: Vec<String> = w
        .contacts
        .values()
        .choose(rng)
        .map(|c| c.phones.clone())
        .unwrap_or_default();
    if let (Some(p), Some(c)) = (from.first(), w.contacts.values_mut().choose(rng)) {
        c.phones.push(p.clone());
        c.updated_at = now;
    }
}

fn edit_phone(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    let Some(id) = w.contacts.keys().copied().choose(rng) else {
        return;
    };
    let n: u32 = rng.gen_range(1_000_000..9_999_999);
    let c = w.contacts.get_mut(&id).unwrap();
    c.phones = vec![format!("+7 (916) {n}")];
    c.updated_at = now;
}

/// The client's number of an open deal: its contact's first phone.
fn deal_phone(w: &World, rng: &mut ChaCha8Rng) -> Option<String> {
    let deal = open_deal(w, rng)?;
    let contact = w.deals[&deal].contact_id?;
    w.contacts.get(&contact)?.phones.first().cloned()
}

fn unanswered_calls(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    let Some(phone) = deal_phone(w, rng) else {
        return;
    };
    for i in 0..rng.gen_range(2..4) {
        add_call(w, &phone, Dir::Out, false, now - Duration::minutes(30 - i));
    }
}

fn answered_call(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    let Some(phone) = deal_phone(w, rng) else {
        return;
    };
    let dir = if rng.gen_bool(0.5) { Dir::In } else { Dir::Out };
    add_call(w, &phone, dir, true, now - Duration::minutes(10));
}

fn missed_call(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    if let Some(phone) = deal_phone(w, rng) {
        add_call(w, &phone, Dir::In, false, now - Duration::minutes(5));
    }
}

fn unknown_caller(w: &mut World, rng: &mut ChaCha8Rng, now: Ts) {
    let phone = format!("7903{:07}", rng.gen_range(0..10_000_000));
    add_call(
        w,
        &phone,
        Dir::In,
        rng.gen_bool(0.5),
        now - Duration::minutes(3),
    );
}

fn add_call(w: &mut World, phone: &str, direction: Dir, answered: bool, start: Ts) {
    let id = w.next_id();
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let employee = w.employees.first().map(|e| e.id);
    w.calls.insert(
        id,
        SimCall {
            id,
            start,
            direction,
            is_lost: !answered,
            talk_s: if answered { 95 } else { 0 },
            wait_s: 12,
            client_phone: digits,
            virtual_number: "74950000000".into(),
            employee_id: employee,
            source: "va".into(),
            utm: SimUtm::default(),
            has_record: answered,
        },
    );
}
