//! A poisoned action costs that action, never the process: an effect that panics is recorded
//! with its error and retried on the backoff a bounded number of times, then parked as `dead`,
//! reported once to the ops chat, and tried again by hand (`revive_action`, what `dozor retry`
//! does) once the cause is gone. Runs against the simulator (Bitrix24 and Telegram fakes) over
//! HTTP, with a real SQLite file; the only thing not real is the panic, injected by a wrapper
//! around the real Bitrix24 client.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use common::tenant_config;
use dozor::config::{self, Lang, RuleMode};
use dozor::crm::{
    CallRecord, Crm, Cursor, NewContact, NewDeal, NewLead, NewTask, Page, Result as CrmResult,
};
use dozor::domain::{CrmKind, EntityKind, EntityRef, Pipeline, TelephonyKind, User};
use dozor::ledger::{self, Effect, Outcome, Proposal};
use dozor::store::{RetryPolicy, Store};
use dozor_sim::tenant_config::OWNER_CHAT;

/// The real client, except that `create_task` panics while `poisoned` is set.
struct Poisoned {
    inner: Arc<dyn Crm>,
    poisoned: AtomicBool,
}

#[async_trait]
impl Crm for Poisoned {
    fn kind(&self) -> dozor::domain::CrmKind {
        self.inner.kind()
    }
    fn account(&self) -> String {
        self.inner.account()
    }
    async fn ping(&self) -> CrmResult<String> {
        self.inner.ping().await
    }
    async fn users(&self) -> CrmResult<Vec<User>> {
        self.inner.users().await
    }
    async fn pipelines(&self) -> CrmResult<Vec<Pipeline>> {
        self.inner.pipelines().await
    }
    async fn fetch_page(&self, entity: EntityKind, cursor: &Cursor) -> CrmResult<Page> {
        self.inner.fetch_page(entity, cursor).await
    }
    async fn find_by_phone(&self, e164: &str) -> CrmResult<Vec<EntityRef>> {
        self.inner.find_by_phone(e164).await
    }
    async fn create_task(&self, task: &NewTask) -> CrmResult<String> {
        if self.poisoned.load(Ordering::SeqCst) {
            // What an unchecked conversion of a hostile value does.
            let secs: i64 = "10000000000000000".parse().unwrap();
            let _ = task.deadline + chrono::Duration::seconds(secs);
        }
        self.inner.create_task(task).await
    }
    async fn add_comment(&self, entity: &EntityRef, text: &str) -> CrmResult<String> {
        self.inner.add_comment(entity, text).await
    }
    async fn create_lead(&self, lead: &NewLead) -> CrmResult<String> {
        self.inner.create_lead(lead).await
    }
    async fn create_deal(&self, deal: &NewDeal) -> CrmResult<String> {
        self.inner.create_deal(deal).await
    }
    async fn create_contact(&self, contact: &NewContact) -> CrmResult<String> {
        self.inner.create_contact(contact).await
    }
    async fn set_responsible(&self, entity: &EntityRef, user_id: &str) -> CrmResult<()> {
        self.inner.set_responsible(entity, user_id).await
    }
    async fn move_deal(&self, deal_id: &str, stage_id: &str) -> CrmResult<()> {
        self.inner.move_deal(deal_id, stage_id).await
    }
    async fn close_deal_lost(&self, deal_id: &str, reason: &str) -> CrmResult<()> {
        self.inner.close_deal_lost(deal_id, reason).await
    }
    async fn update_tags(
        &self,
        entity: &EntityRef,
        add: &[String],
        remove: &[String],
    ) -> CrmResult<()> {
        self.inner.update_tags(entity, add, remove).await
    }
    async fn complete_task(&self, task_id: &str, result: &str) -> CrmResult<()> {
        self.inner.complete_task(task_id, result).await
    }
    async fn register_call(&self, call: &CallRecord) -> CrmResult<String> {
        self.inner.register_call(call).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_action_is_retried_then_parked_dead_reported_once_and_retried_by_hand() {
    let h = common::small_sim(1).await;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path());
    let text = tenant_config(&h, CrmKind::Bitrix24, TelephonyKind::Comagic, &db, "ru");
    let cfg = config::parse(&text, None, None).unwrap().config;
    let policy = RetryPolicy {
        max_attempts: 3,
        first_wait: Duration::ZERO,
        max_wait: Duration::ZERO,
    };
    let store = Store::open(&db, 2).await.unwrap().with_retry(policy);
    let tenant = dozor::tenant::connect(&cfg.tenants[0], &store)
        .await
        .unwrap();
    let crm = Poisoned {
        inner: tenant.crm.clone(),
        poisoned: AtomicBool::new(true),
    };
    let sinks = ledger::Sinks {
        crm: &crm,
        telegram: tenant.telegram.as_ref(),
    };
    let deal = h.sim.world().deals.keys().next().copied().unwrap();
    let responsible = h.sim.world().deals[&deal].responsible_id.to_string();
    let key = format!("deal_without_task:demo:deal:{deal}:2026-12-06");
    let p = Proposal {
        key: key.clone(),
        rule: "deal_without_task",
        entity: Some(EntityRef::new(EntityKind::Deal, deal.to_string())),
        effect: Effect::CreateTask(NewTask {
            title: "Следующий шаг".into(),
            description: String::new(),
            responsible_id: responsible,
            deadline: Utc::now() + chrono::Duration::days(1),
            entity: Some(EntityRef::new(EntityKind::Deal, deal.to_string())),
        }),
        summary: format!("deal {deal} → task"),
    };
    let tasks_for = |marker: &str| {
        h.sim
            .world()
            .tasks
            .values()
            .filter(|t| t.description.contains(marker))
            .count()
    };

    // Two panics are contained and scheduled for another try; the third parks the action.
    for attempt in 1..=2 {
        let o = ledger::apply(&store, "demo", &sinks, &p, RuleMode::On)
            .await
            .unwrap();
        assert!(
            matches!(&o, Outcome::Retry(e) if e.contains("panicked")),
            "attempt {attempt}: {o:?}"
        );
    }
    let o = ledger::apply(&store, "demo", &sinks, &p, RuleMode::On)
        .await
        .unwrap();
    assert!(
        matches!(&o, Outcome::Dead(e) if e.contains("3 attempts")),
        "{o:?}"
    );
    let row = store.action(&key).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("dead", 3));
    assert!(row.error.unwrap().contains("panicked"));
    // Proposed again by a later cycle: nothing is tried.
    let o = ledger::apply(&store, "demo", &sinks, &p, RuleMode::On)
        .await
        .unwrap();
    assert_eq!(o, Outcome::Deferred);
    assert_eq!(store.action(&key).await.unwrap().unwrap().attempts, 3);
    assert_eq!(tasks_for(&key), 0);

    // The ops chat (the owner chat here) hears about it once, whatever the number of cycles.
    let ops_messages = || {
        h.sim
            .telegram
            .messages()
            .iter()
            .filter(|m| m.chat_id == OWNER_CHAT)
            .filter(|m| m.text.as_deref().is_some_and(|t| t.contains(&key)))
            .count()
    };
    let to = ledger::dead::Audience {
        chat: Some(OWNER_CHAT),
        label: "ООО «Демо»",
        lang: Lang::Ru,
    };
    for _ in 0..3 {
        ledger::dead::report(&store, "demo", &to, &sinks)
            .await
            .unwrap();
    }
    assert_eq!(ops_messages(), 1);
    let text = h
        .sim
        .telegram
        .messages()
        .iter()
        .find_map(|m| m.text.clone().filter(|t| t.contains(&key)))
        .unwrap();
    assert!(
        text.contains("перестал повторять 1 действие — его не удалось выполнить"),
        "{text}"
    );
    assert!(text.contains("dozor retry"), "{text}");
    eprintln!("ops message:\n{text}");

    // The cause is fixed; retried by hand, the task is written once.
    crm.poisoned.store(false, Ordering::SeqCst);
    let revived = store.revive_action(&key).await.unwrap().unwrap();
    assert_eq!((revived.state.as_str(), revived.budget_from), ("intent", 3));
    let o = ledger::apply(&store, "demo", &sinks, &p, RuleMode::On)
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Done(_)), "{o:?}");
    assert_eq!(tasks_for(&key), 1);
    assert!(
        store.revive_action(&key).await.unwrap().is_none(),
        "done is not revived"
    );
    h.stop().await;
}

/// Backoff doubles from the first wait up to the cap, and a transient failure waits for it.
#[test]
fn backoff_doubles_up_to_the_cap() {
    let p = RetryPolicy {
        max_attempts: 8,
        first_wait: Duration::from_secs(60),
        max_wait: Duration::from_secs(3600),
    };
    let waits: Vec<u64> = (1..=8).map(|n| p.wait(n).as_secs()).collect();
    assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
    assert_eq!(p.wait(u32::MAX).as_secs(), 3600);
}
