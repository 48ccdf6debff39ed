//! "Every call lands in the CRM": a call from a number no lead, contact or company carries
//! becomes a lead (Bitrix24 lead; amoCRM unsorted item) with its source and UTM, owned by the
//! employee who took the call, else the first manager on duty.
//!
//! Key: `unknown_caller:{tenant}:phone:{e164}` — one lead per unknown number.

use std::collections::BTreeMap;

use super::RuleContext;
use super::calls::{PhoneBook, employee_user, number, recent};
use crate::config::{Lang, RuleConfig};
use crate::crm::NewLead;
use crate::domain::{Call, Direction};
use crate::ledger::{Effect, Proposal};

pub fn propose(ctx: &RuleContext, cfg: &RuleConfig) -> Vec<Proposal> {
    let book = PhoneBook::with_links(ctx.mirror, ctx.calls);
    let mut first: BTreeMap<String, &Call> = BTreeMap::new();
    for c in recent(ctx.mirror, ctx.now, cfg.param("lookback_hours"))
        .filter(|c| c.direction == Direction::In)
    {
        let Some(p) = number(c) else { continue };
        if book.find(&p).is_empty() && !ctx.calls.unresolved.contains(&p) {
            first
                .entry(p)
                .and_modify(|x| {
                    if c.started_at < x.started_at {
                        *x = c;
                    }
                })
                .or_insert(c);
        }
    }
    let ru = ctx.lang == Lang::Ru;
    first
        .into_iter()
        .map(|(p, c)| {
            let responsible = employee_user(ctx.mirror, ctx.calls, c)
                .or_else(|| ctx.roles.on_duty.first().cloned());
            let at = c
                .started_at
                .with_timezone(&ctx.calendar.tz)
                .format("%d.%m.%Y %H:%M");
            Proposal {
                key: format!("unknown_caller:{}:phone:{p}", ctx.tenant),
                rule: "unknown_caller",
                entity: None,
                summary: format!("call {} from unknown {p} → lead", c.id),
                effect: Effect::CreateLead(NewLead {
                    title: if ru {
                        format!("Входящий звонок {p}")
                    } else {
                        format!("Incoming call {p}")
                    },
                    name: String::new(),
                    phone: Some(p.clone()),
                    source: "CALL".into(),
                    utm: c.utm.clone(),
                    responsible_id: responsible,
                    comment: if ru {
                        format!(
                            "Звонок {} #{} {at}{}{}",
                            c.provider.as_str(),
                            c.id,
                            c.virtual_number
                                .as_ref()
                                .map(|v| format!(" на {v}"))
                                .unwrap_or_default(),
                            if c.answered {
                                ""
                            } else {
                                " (пропущен)"
                            }
                        )
                    } else {
                        format!(
                            "Call {} #{} {at}{}{}",
                            c.provider.as_str(),
                            c.id,
                            c.virtual_number
                                .as_ref()
                                .map(|v| format!(" to {v}"))
                                .unwrap_or_default(),
                            if c.answered { "" } else { " (missed)" }
                        )
                    },
                }),
            }
        })
        .collect()
}
