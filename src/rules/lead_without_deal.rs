//! "No lead without a deal": an open lead older than `after_minutes` with no deal made from it
//! gets one (same owner, contact and company). Its first task follows from `deal_without_task`
//! on the next cycle, once the new deal is in the mirror. Only leads from the last
//! `lookback_hours` are acted on, so a first run does not flood the CRM with old leads.
//!
//! Key: `lead_without_deal:{tenant}:lead:{id}`.

use std::collections::HashSet;

use chrono::Duration;

use super::RuleContext;
use crate::config::{Lang, LeadWithoutDealConfig};
use crate::crm::NewDeal;
use crate::domain::{EntityKind, EntityRef, Semantics};
use crate::ledger::{Effect, Proposal};

pub(crate) fn propose(ctx: &RuleContext, cfg: &LeadWithoutDealConfig) -> Vec<Proposal> {
    let m = ctx.mirror;
    let with_deal: HashSet<&str> = m
        .deals
        .iter()
        .filter_map(|d| d.lead_id.as_deref())
        .collect();
    let after = Duration::minutes(cfg.after_minutes as i64);
    let lookback = Duration::minutes((cfg.lookback_hours * 60.0) as i64);
    let ru = ctx.lang == Lang::Ru;
    m.leads
        .iter()
        .filter(|l| l.semantics == Semantics::Open && !with_deal.contains(l.id.as_str()))
        .filter(|l| ctx.now - l.created_at >= after && ctx.now - l.created_at <= lookback)
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
