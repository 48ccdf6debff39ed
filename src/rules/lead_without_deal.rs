//! "No lead without a deal": an open lead older than `after_minutes` with no deal made from it
//! gets one (same owner, contact and company). Its first task follows from `deal_without_task`
//! on the next cycle, once the new deal is in the mirror. Only leads from the last
//! `lookback_hours` are acted on, so a first run does not flood the CRM with old leads.
//!
//! Key: `lead_without_deal:{tenant}:lead:{id}`.

use std::collections::HashSet;

use chrono::Duration;

use super::RuleContext;
use super::scope::{self, GatherArgs, Incremental, Page};
use crate::config::{Lang, LeadWithoutDealConfig};
use crate::crm::NewDeal;
use crate::domain::{EntityKind, EntityRef, Semantics};
use crate::ledger::{Effect, Proposal};
use crate::store::StoreError;

/// The candidates are bounded by the clock, not by what changed: open leads created between
/// `lookback_hours` and `after_minutes` ago, each with the deals made from it.
pub const INCREMENTAL: Incremental = Incremental {
    full_after: scope::never,
    gather: scope::Gather::Pages(|a| Box::pin(gather(a))),
};

async fn gather(a: GatherArgs<'_>) -> Result<Page, StoreError> {
    let cfg = &a.rules.lead_without_deal;
    let (from, to) = window(a.now, cfg);
    // A second either side: stored times are whole seconds, the rule compares exact ones.
    let leads = a
        .store
        .open_leads_created_between(
            a.tenant,
            from - Duration::seconds(1),
            to + Duration::seconds(1),
        )
        .await?;
    let ids: Vec<String> = leads.iter().map(|l| l.id.clone()).collect();
    let mut mirror = scope::base_set(a.base);
    mirror.deals = a.store.deals_of_leads(a.tenant, &ids).await?;
    mirror.leads = leads;
    Ok(Page {
        mirror,
        ..Page::default()
    })
}

/// Leads created in this span are acted on.
fn window(
    now: crate::domain::Ts,
    cfg: &LeadWithoutDealConfig,
) -> (crate::domain::Ts, crate::domain::Ts) {
    let after = Duration::minutes(cfg.after_minutes as i64);
    let lookback = Duration::minutes((cfg.lookback_hours * 60.0) as i64);
    (now - lookback, now - after)
}

pub(crate) fn propose(ctx: &RuleContext, cfg: &LeadWithoutDealConfig) -> Vec<Proposal> {
    let m = ctx.mirror;
    let with_deal: HashSet<&str> = m
        .deals
        .iter()
        .filter_map(|d| d.lead_id.as_deref())
        .collect();
    let (from, to) = window(ctx.now, cfg);
    let ru = ctx.lang == Lang::Ru;
    m.leads
        .iter()
        .filter(|l| l.semantics == Semantics::Open && !with_deal.contains(l.id.as_str()))
        .filter(|l| l.created_at >= from && l.created_at <= to)
        .map(|l| Proposal {
            key: format!("lead_without_deal:{}:lead:{}", ctx.tenant, l.id),
            rule: "lead_without_deal",
            entity: Some(EntityRef::new(EntityKind::Lead, l.id.clone())),
            summary: format!("lead {} «{}» → deal", l.id, l.title),
            effect: Effect::CreateDeal(NewDeal {
                title: l.title.clone(),
                pipeline_id: None,
                stage_id: None,
                responsible_id: l.responsible_id.clone(),
                contact_id: l.contact_id.clone(),
                company_id: l.company_id.clone(),
                lead_id: Some(l.id.clone()),
                amount: l.amount,
                comment: if ru {
                    "Сделка создана по лиду без сделки.".into()
                } else {
                    "Deal created for a lead that had none.".into()
                },
            }),
        })
        .collect()
}
