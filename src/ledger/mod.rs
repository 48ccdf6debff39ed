//! The action ledger: every side effect (CRM write, Telegram message) happens exactly once.
//!
//! An action has a deterministic key (`rule:tenant:entity:window`), so proposing it again in a
//! later cycle finds the existing row instead of writing twice. The sequence is
//! intent (row inserted) → attempt (attempts + 1, committed *before* the remote call) → outcome
//! (done / failed). A row left at `intent` with attempts > 0 means the process died or the call
//! failed after the attempt was recorded: the outcome is unknown, so before trying again the
//! ledger looks for the action's marker (`[dozor:KEY]`, carried in the task description or
//! comment) in the freshly synced mirror, and only writes when it is not there.
//!
//! Telegram messages have no marker to look up. They are sent part by part (long messages are
//! split at 4096 characters) and the ids of the parts delivered are recorded after each one, so
//! a retry sends only what is missing. A transient failure (network, 5xx, 429 beyond the
//! client's retry budget) leaves the row at `intent`, and every later cycle first calls
//! [`redeliver_telegram`], which finishes such messages once.
//!
//! The ledger's `actions` table is dozor's audit trail: every side effect it proposed or made is
//! a row there (rule, entity, mode, attempts, outcome, error, times), shadow runs included, and
//! `dozor audit` reads it. There is no second log to keep in step with it.

mod batch;
pub mod dead;
mod lines;
mod redeliver;

pub use batch::apply_all;
pub(crate) use lines::action_lines;
pub use redeliver::redeliver_telegram;

use serde::{Deserialize, Serialize};

use crate::config::RuleMode;
use crate::crm::{CallRecord, Crm, NewDeal, NewLead, NewTask};
use crate::domain::EntityRef;
use crate::http::ErrorKind;
use crate::notify::telegram::Telegram;
use crate::store::{ActionRow, Store, StoreError};

/// Counts of actions by rule for reports and cycle summaries (done, shadow, failed).
#[derive(Debug, Clone, Default)]
pub struct ActionLine {
    pub(crate) rule: String,
    pub(crate) done: usize,
    pub(crate) shadow: usize,
    pub(crate) failed: usize,
}

/// What an action does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    CreateTask(NewTask),
    Comment {
        entity: EntityRef,
        text: String,
    },
    /// A Telegram message (HTML), split by the client when long.
    Telegram {
        chat: i64,
        thread: Option<i64>,
        html: String,
    },
    /// A picture (PNG chart) with an HTML caption. The PNG travels base64-encoded in the
    /// ledger row, so a photo that could not be sent is redelivered as it was drawn.
    TelegramPhoto {
        chat: i64,
        thread: Option<i64>,
        caption: String,
        png_base64: String,
    },
    /// Hand a record to another user; `previous` is kept so `dozor revert` can hand it back.
    SetResponsible {
        entity: EntityRef,
        user_id: String,
        previous: Option<String>,
    },
    /// Add and remove flags (tags).
    UpdateTags {
        entity: EntityRef,
        add: Vec<String>,
        remove: Vec<String>,
    },
    CreateLead(NewLead),
    CreateDeal(NewDeal),
    /// Put a telephony call on the CRM timeline (connectors skip calls already there).
    RegisterCall(CallRecord),
    CloseDealLost {
        deal_id: String,
        reason: String,
    },
    CompleteTask {
        task_id: String,
        result: String,
    },
}

impl Effect {
    fn kind(&self) -> &'static str {
        match self {
            Effect::CreateTask(_) => "create_task",
            Effect::Comment { .. } => "comment",
            Effect::Telegram { .. } => "telegram",
            Effect::TelegramPhoto { .. } => "telegram_photo",
            Effect::SetResponsible { .. } => "set_responsible",
            Effect::UpdateTags { .. } => "update_tags",
            Effect::CreateLead(_) => "create_lead",
            Effect::CreateDeal(_) => "create_deal",
            Effect::RegisterCall(_) => "register_call",
            Effect::CloseDealLost { .. } => "close_deal_lost",
            Effect::CompleteTask { .. } => "complete_task",
        }
    }
}

/// An action a rule proposes.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub key: String,
    pub rule: &'static str,
    pub entity: Option<EntityRef>,
    pub effect: Effect,
    /// One line for humans ("task for Иванов: deal 123").
    pub summary: String,
}

impl Proposal {
    /// The proposal a stored action was recorded from, proposed again under `rule`: its key, its
    /// effect and its summary as [`row`] wrote them.
    pub(crate) fn stored(r: &ActionRow, rule: &'static str) -> serde_json::Result<Proposal> {
        Ok(Proposal {
            key: r.key.clone(),
            rule,
            entity: None,
            effect: Effect::stored(r)?,
            summary: r.payload["summary"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }
}

impl Effect {
    /// The effect a stored action was recorded with.
    pub(crate) fn stored(r: &ActionRow) -> serde_json::Result<Effect> {
        serde_json::from_value(r.payload["effect"].clone())
    }
}

/// The marker that identifies an action's write in the CRM.
pub(crate) fn marker(key: &str) -> String {
    format!("[dozor:{key}]")
}

/// What happened to a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written now; the CRM's id of what was created.
    Done(String),
    /// Found already done (by an earlier cycle, or by its marker after a crash).
    AlreadyDone,
    /// Recorded in shadow mode; nothing written.
    Shadow,
    /// Will be tried again after its backoff (transient error, or a panic contained).
    Retry(String),
    /// Refused for good; recorded with the reason.
    Failed(String),
    /// Failed as many times as the retry policy allows: parked as `dead` now, reported once
    /// to the ops chat, tried again only by `dozor retry KEY`.
    Dead(String),
    /// Waiting for its backoff to pass, or parked as `dead` earlier: nothing done now.
    Deferred,
    /// The rule is off.
    Skipped,
}

fn row(tenant: &str, p: &Proposal, state: &str) -> ActionRow {
    let now = chrono::Utc::now();
    ActionRow {
        key: p.key.clone(),
        tenant: tenant.to_string(),
        rule: p.rule.to_string(),
        kind: p.effect.kind().to_string(),
        entity_kind: p.entity.as_ref().map(|e| e.kind.as_str().to_string()),
        entity_id: p.entity.as_ref().map(|e| e.id.clone()),
        payload: serde_json::json!({"effect": p.effect, "summary": p.summary}),
        state: state.to_string(),
        attempts: 0,
        result: None,
        error: None,
        created_at: now,
        updated_at: now,
        retry_at: None,
        budget_from: 0,
    }
}

/// Where effects land.
pub struct Sinks<'a> {
    pub crm: &'a dyn Crm,
    pub telegram: Option<&'a Telegram>,
}

/// Whether applying `p` in `mode` would do anything now (write, send, or record a shadow
/// action), or only meet its key settled: done, failed or dead, already shadowed in shadow mode,
/// or waiting for a retry that is not yet due.
pub async fn would_act(store: &Store, p: &Proposal, mode: RuleMode) -> Result<bool, StoreError> {
    would_act_key(store, &p.key, mode).await
}

/// [`would_act`] for a proposal with this key.
pub async fn would_act_key(store: &Store, key: &str, mode: RuleMode) -> Result<bool, StoreError> {
    let Some(r) = store.action(key).await? else {
        return Ok(mode != RuleMode::Off);
    };
    Ok(match (mode, r.state.as_str()) {
        (RuleMode::Off, _) | (RuleMode::Shadow, _) => false,
        (RuleMode::On, "done" | "failed" | "dead") => false,
        (RuleMode::On, "intent") => r.retry_at.is_none_or(|at| at <= chrono::Utc::now()),
        (RuleMode::On, _) => true,
    })
}

/// Applies one proposal under `mode`.
// Long: the mode switch and the intent, execute, outcome steps of one action kept together: their
// order is the exactly-once contract.
pub async fn apply(
    store: &Store,
    tenant: &str,
    sinks: &Sinks<'_>,
    p: &Proposal,
    mode: RuleMode,
) -> Result<Outcome, StoreError> {
    match mode {
        RuleMode::Off => Ok(Outcome::Skipped),
        RuleMode::Shadow => {
            let r = store.insert_action(&row(tenant, p, "shadow")).await?;
            Ok(if r.state == "done" {
                Outcome::AlreadyDone
            } else {
                Outcome::Shadow
            })
        }
        RuleMode::On => {
            let r = store.insert_action(&row(tenant, p, "intent")).await?;
            match r.state.as_str() {
                "done" => return Ok(Outcome::AlreadyDone),
                "failed" => return Ok(Outcome::Failed(r.error.unwrap_or_default())),
                "dead" => return Ok(Outcome::Deferred),
                "intent" if r.retry_at.is_some_and(|at| at > chrono::Utc::now()) => {
                    return Ok(Outcome::Deferred);
                }
                "intent" if r.attempts > 0 => {
                    // Outcome unknown: the write may have reached the CRM before a crash.
                    if let Some(id) = find_marker(store, tenant, p, r.created_at).await? {
                        store
                            .set_action_state(&p.key, "done", Some(&id), None, false)
                            .await?;
                        tracing::info!(key = %p.key, id, "action reconciled: found its marker, not writing again");
                        return Ok(Outcome::AlreadyDone);
                    }
                }
                _ => {}
            }
            if !store.claim_action(&p.key, tenant, r.attempts).await? {
                // Another instance claimed it first, or this one lost the tenant's lease: the
                // holder finishes (or reconciles) it.
                tracing::info!(key = %p.key, "action claimed elsewhere; leaving it to the tenant's holder");
                return Ok(Outcome::Skipped);
            }
            if let Effect::Telegram { .. } = &p.effect {
                // The message as first recorded: a later proposal under the same key may word
                // it differently, and the parts already delivered belong to the first wording.
                let effect = Effect::stored(&r)
                    .ok()
                    .filter(|e| matches!(e, Effect::Telegram { .. }))
                    .unwrap_or_else(|| p.effect.clone());
                if let Effect::Telegram { chat, thread, html } = &effect {
                    let delivery = deliver_telegram(
                        store,
                        sinks,
                        &r,
                        r.result.as_deref(),
                        *chat,
                        *thread,
                        html,
                    );
                    return match contain(delivery).await {
                        Ok(outcome) => outcome,
                        Err(panic) => retry_or_bury(store, &r, &panic).await,
                    };
                }
            }
            match contain(execute(sinks, p)).await {
                Ok(Ok(id)) => {
                    store
                        .set_action_state(&p.key, "done", Some(&id), None, false)
                        .await?;
                    Ok(Outcome::Done(id))
                }
                Ok(Err(e)) if e.not_sent() => defer_unsent(store, &r, &e).await,
                Ok(Err(e)) if is_transient(&e) => retry_or_bury(store, &r, &e.to_string()).await,
                Ok(Err(e)) => {
                    let msg = e.to_string();
                    store
                        .set_action_state(&p.key, "failed", None, Some(&msg), false)
                        .await?;
                    Ok(Outcome::Failed(msg))
                }
                Err(panic) => retry_or_bury(store, &r, &panic).await,
            }
        }
    }
}

/// Runs one action's effect with a panic contained to it: a poisoned record must cost one
/// action, never the process (under systemd a panic at every start is a crash loop). The
/// panic's message comes back as the error.
async fn contain<T>(effect: impl std::future::Future<Output = T>) -> Result<T, String> {
    use futures::FutureExt as _;
    std::panic::AssertUnwindSafe(effect)
        .catch_unwind()
        .await
        .map_err(|payload| {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            format!("the action panicked: {what}")
        })
}

/// A request the client refused without sending (Telegram known to be down): tried again by
/// the next cycle, and not counted against the retry budget, so an outage does not use up the
/// attempts of every message queued behind it. No backoff is stored: the client's own pause
/// spaces the real requests, and a restarted process (which forgot it) tries at once.
async fn defer_unsent(
    store: &Store,
    r: &ActionRow,
    e: &crate::http::Error,
) -> Result<Outcome, StoreError> {
    store
        .defer_action(&r.key, &e.to_string(), None, false)
        .await?;
    Ok(Outcome::Retry(e.to_string()))
}

/// After a failed attempt that may succeed later: schedules the next one on the doubling
/// backoff, or parks the action as `dead` once the retry budget is spent. `r` is the row as it
/// was before this attempt was claimed.
async fn retry_or_bury(store: &Store, r: &ActionRow, msg: &str) -> Result<Outcome, StoreError> {
    let policy = store.retry_policy();
    // This attempt counted (claim_action added it), so the budget used is one more than read.
    let failures = u32::try_from(r.attempts + 1 - r.budget_from).unwrap_or(u32::MAX);
    if failures >= policy.max_attempts {
        let msg = format!("{msg} (gave up after {failures} attempts)");
        store
            .set_action_state(&r.key, "dead", None, Some(&msg), false)
            .await?;
        tracing::error!(key = %r.key, error = %msg, "action parked as dead");
        return Ok(Outcome::Dead(msg));
    }
    let wait = chrono::Duration::from_std(policy.wait(failures))
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    store
        .defer_action(&r.key, msg, Some(chrono::Utc::now() + wait), true)
        .await?;
    Ok(Outcome::Retry(msg.to_string()))
}

/// What `result` holds while a long message is being delivered: the ids of the parts sent.
const PARTS_SENT: &str = "parts_sent:";

fn parts_sent(result: Option<&str>) -> Vec<i64> {
    result
        .and_then(|r| r.strip_prefix(PARTS_SENT))
        .map(|ids| ids.split(',').filter_map(|i| i.parse().ok()).collect())
        .unwrap_or_default()
}

fn is_transient(e: &crate::http::Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::RateLimited | ErrorKind::Transient | ErrorKind::Decode
    )
}

/// Sends a Telegram message part by part, recording after each part which ones went out, so
/// that a retry after a failure (or a crash) sends only the parts not delivered yet.
async fn deliver_telegram(
    store: &Store,
    sinks: &Sinks<'_>,
    r: &ActionRow,
    progress: Option<&str>,
    chat: i64,
    thread: Option<i64>,
    html: &str,
) -> Result<Outcome, StoreError> {
    let key = r.key.as_str();
    let fail = |msg: String| async move {
        store
            .set_action_state(key, "failed", None, Some(&msg), false)
            .await?;
        Ok::<_, StoreError>(Outcome::Failed(msg))
    };
    let Some(tg) = sinks.telegram else {
        return fail(NO_TELEGRAM.into()).await;
    };
    let parts = Telegram::parts(html);
    if parts.is_empty() {
        return fail("message text is empty".into()).await;
    }
    let mut sent = parts_sent(progress);
    while sent.len() < parts.len() {
        match tg.send_part(chat, thread, &parts[sent.len()]).await {
            Ok(id) => {
                sent.push(id);
                if sent.len() < parts.len() {
                    let ids: Vec<String> = sent.iter().map(i64::to_string).collect();
                    let progress = format!("{PARTS_SENT}{}", ids.join(","));
                    store
                        .set_action_state(key, "intent", Some(&progress), None, false)
                        .await?;
                }
            }
            Err(e) => {
                let msg = if sent.is_empty() {
                    e.to_string()
                } else {
                    format!("{e} (after {} of {} parts)", sent.len(), parts.len())
                };
                if e.not_sent() {
                    return defer_unsent(store, r, &e).await;
                }
                if is_transient(&e) {
                    return retry_or_bury(store, r, &msg).await;
                }
                return fail(msg).await;
            }
        }
    }
    let id = sent[0].to_string();
    store
        .set_action_state(key, "done", Some(&id), None, false)
        .await?;
    Ok(Outcome::Done(id))
}

// Long: one match arm per effect kind, each a short call to its sink with the marker; their list is
// the reference.
async fn execute(sinks: &Sinks<'_>, p: &Proposal) -> Result<String, crate::http::Error> {
    let mark = marker(&p.key);
    let crm = sinks.crm;
    match &p.effect {
        Effect::CreateTask(t) => {
            let mut t = t.clone();
            if !t.description.contains(&mark) {
                t.description = format!("{}\n\n{mark}", t.description)
                    .trim_start()
                    .to_string();
            }
            crm.create_task(&t).await
        }
        Effect::Comment { entity, text } => {
            let text = format!("{text}\n{mark}");
            crm.add_comment(entity, &text).await
        }
        // Both are idempotent: redoing one whose outcome was lost in a crash changes nothing.
        Effect::SetResponsible {
            entity, user_id, ..
        } => crm
            .set_responsible(entity, user_id)
            .await
            .map(|()| format!("{}:{} -> {user_id}", entity.kind.as_str(), entity.id)),
        Effect::UpdateTags {
            entity,
            add,
            remove,
        } => crm
            .update_tags(entity, add, remove)
            .await
            .map(|()| format!("{}:{}", entity.kind.as_str(), entity.id)),
        Effect::CreateLead(l) => {
            let mut l = l.clone();
            l.comment = format!("{}\n{mark}", l.comment).trim_start().to_string();
            crm.create_lead(&l).await
        }
        Effect::CreateDeal(d) => {
            let mut d = d.clone();
            d.comment = format!("{}\n{mark}", d.comment).trim_start().to_string();
            crm.create_deal(&d).await
        }
        Effect::RegisterCall(c) => crm.register_call(c).await,
        Effect::CloseDealLost { deal_id, reason } => crm
            .close_deal_lost(deal_id, reason)
            .await
            .map(|()| format!("deal:{deal_id}")),
        Effect::CompleteTask { task_id, result } => crm
            .complete_task(task_id, result)
            .await
            .map(|()| format!("task:{task_id}")),
        Effect::TelegramPhoto {
            chat,
            thread,
            caption,
            png_base64,
        } => {
            use base64::Engine as _;
            let png = base64::engine::general_purpose::STANDARD
                .decode(png_base64)
                .map_err(|e| {
                    refused(
                        "sendPhoto",
                        format!("the chart in the ledger is not valid base64: {e}"),
                    )
                })?;
            match sinks.telegram {
                Some(tg) => tg
                    .send_photo(*chat, *thread, png, caption)
                    .await
                    .map(|id| id.to_string()),
                None => Err(refused("sendPhoto", NO_TELEGRAM)),
            }
        }
        // Sent part by part by `deliver_telegram`, which records its progress.
        Effect::Telegram { chat, thread, html } => match sinks.telegram {
            Some(tg) => tg
                .send_message(*chat, *thread, html)
                .await
                .map(|id| id.to_string()),
            None => Err(refused("sendMessage", NO_TELEGRAM)),
        },
    }
}

const NO_TELEGRAM: &str = "no [tenants.telegram] section configured";

/// A Telegram effect that cannot be carried out at all (retrying would not help).
fn refused(method: &str, why: impl Into<String>) -> crate::http::Error {
    crate::http::Error::new(ErrorKind::Permanent, "telegram", method, "", why)
}

/// Looks for the action's marker in the mirror (synced after the crash).
async fn find_marker(
    store: &Store,
    tenant: &str,
    p: &Proposal,
    intent_at: crate::domain::Ts,
) -> Result<Option<String>, StoreError> {
    match &p.effect {
        Effect::CreateTask(_) => store.find_task_with_marker(tenant, &marker(&p.key)).await,
        // A lead for this number, or a deal for this lead, that appeared in the mirror since the
        // action was first recorded is the write that the crash interrupted.
        Effect::CreateLead(l) => match &l.phone {
            Some(phone) => store.find_lead_by_phone(tenant, phone).await,
            None => Ok(None),
        },
        // CRMs that do not keep the lead link (amoCRM) are matched on title, owner and time.
        Effect::CreateDeal(d) => {
            if let Some(lead) = &d.lead_id
                && let Some(id) = store.find_deal_for_lead(tenant, lead).await?
            {
                return Ok(Some(id));
            }
            store
                .find_deal_created_like(tenant, &d.title, d.responsible_id.as_deref(), intent_at)
                .await
        }
        // Comments and messages cannot be looked up: retry (a duplicate at worst, never a loss).
        // Owner, tag, stage and completion changes are idempotent, and connectors skip calls
        // already registered: doing them again is the reconciliation.
        Effect::Comment { .. }
        | Effect::Telegram { .. }
        | Effect::TelegramPhoto { .. }
        | Effect::SetResponsible { .. }
        | Effect::UpdateTags { .. }
        | Effect::RegisterCall(_)
        | Effect::CloseDealLost { .. }
        | Effect::CompleteTask { .. } => Ok(None),
    }
}
