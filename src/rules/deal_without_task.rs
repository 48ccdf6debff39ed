//! "No deal without a next step": an open deal with no open task due now or later gets a
//! "next step" task for its responsible manager, due the next business day.
//!
//! Key: `deal_without_task:{tenant}:deal:{id}:{local date}` — at most one task per deal per day,
//! and none once the created task shows up in the mirror (the deal then has a future task).

use std::collections::{BTreeSet, HashSet};

use super::scope::{self, GatherArgs, Incremental, PAGE, Page, Scope};
use super::{RuleContext, in_scope};
use crate::config::{DealWithoutTaskConfig, Lang};
use crate::crm::NewTask;
use crate::domain::{EntityKind, EntityRef, Semantics};
use crate::ledger::{Effect, Proposal};
use crate::store::StoreError;

/// Candidates: open deals with no task surely ahead (a full look, once a day, as keys roll over
/// daily); since the last look, deals that changed or whose tasks changed, and deals whose
/// last task fell due.
pub const INCREMENTAL: Incremental = Incremental {
    full_after: scope::new_day,
    gather: scope::Gather::Pages(|a| Box::pin(gather(a))),
};

async fn gather(a: GatherArgs<'_>) -> Result<Page, StoreError> {
    let (deals, next) = match a.scope {
        Scope::Full => {
            let deals = a
                .store
                .open_deals_without_next_step(a.tenant, a.now, a.after, PAGE)
                .await?;
            let next = scope::next_after(deals.len(), deals.last().map(|d| d.id.as_str()));
            (deals, next)
        }
        Scope::Delta { since, changes } => {
            let mut ids: BTreeSet<String> = changes.ids(EntityKind::Deal).cloned().collect();
            ids.extend(
                a.store
                    .deals_with_tasks_due(a.tenant, *since, a.now)
                    .await?,
            );
            let ids: Vec<String> = ids.into_iter().collect();
            (a.store.deals_by_ids(a.tenant, &ids).await?, None)
        }
    };
    let ids: Vec<String> = deals.iter().map(|d| d.id.clone()).collect();
    let mut mirror = scope::base_set(a.base);
    mirror.tasks = a
        .store
        .open_tasks_of(a.tenant, EntityKind::Deal, &ids)
        .await?;
    mirror.deals = deals;
    Ok(Page {
        mirror,
        next,
        ..Page::default()
    })
}

pub(crate) fn propose(ctx: &RuleContext, cfg: &DealWithoutTaskConfig) -> Vec<Proposal> {
    let m = ctx.mirror;
    // Deals that already have a next step: an open task bound to them, due now or later (or
    // with no deadline at all, which managers use for "ongoing").
    let covered: HashSet<&str> = m
        .tasks
        .iter()
        .filter(|t| !t.completed && t.deadline.is_none_or(|d| d >= ctx.now))
        .filter_map(|t| t.entity.as_ref())
        .filter(|e| e.kind == EntityKind::Deal)
        .map(|e| e.id.as_str())
        .collect();
    let day = ctx.now.with_timezone(&ctx.calendar.tz).date_naive();
    let due = ctx.calendar.next_business_day(ctx.now, 60);
    m.deals
        .iter()
        .filter(|d| d.semantics == Semantics::Open && in_scope(cfg, d))
        .filter(|d| !covered.contains(d.id.as_str()))
        .filter_map(|d| {
            let responsible = d.responsible_id.clone()?;
            let (title, description) = match ctx.lang {
                Lang::Ru => (
                    format!("Следующий шаг по сделке «{}»", d.title),
                    "У открытой сделки нет запланированной задачи. Свяжитесь с клиентом и запланируйте следующий шаг.".to_string(),
                ),
                Lang::En => (
                    format!("Next step for deal \"{}\"", d.title),
                    "This open deal has no scheduled task. Contact the client and plan the next step.".to_string(),
                ),
            };
            Some(Proposal {
                key: format!("deal_without_task:{}:deal:{}:{day}", ctx.tenant, d.id),
                rule: "deal_without_task",
                entity: Some(EntityRef::new(EntityKind::Deal, d.id.clone())),
                summary: format!("deal {} «{}» → task for user {responsible}", d.id, d.title),
                effect: Effect::CreateTask(NewTask {
                    title,
                    description,
                    responsible_id: responsible,
                    deadline: due,
                    entity: Some(EntityRef::new(EntityKind::Deal, d.id.clone())),
                }),
            })
        })
        .collect()
}
