//! Dormant ("нулевые") clients go to the reactivation manager, and come back when they order.
//!
//! Dormant = no open deal and no order (won deal) for `top_days` (ABC class A), `one_time_days`
//! (clients with exactly one order) or `other_days` (everyone else). The client, its open tasks
//! and a handover note go to `roles.reactivation_manager`, who also gets a reactivation task.
//! Each owner change keeps the previous owner in the ledger, so `dozor revert` can undo it, and
//! when the client orders again it is handed back to that previous manager.
//!
//! Keys: `dormant:{tenant}:{kind}:{id}:{last order date}:{part}` (one handover per dormant
//! spell) and `dormant:{tenant}:{kind}:{id}:return:{won deal id}`.

use super::RuleContext;
use super::clients::{Client, clients, open_tasks};
use crate::config::{DormantConfig, Lang};
use crate::crm::NewTask;
use crate::domain::{EntityKind, EntityRef, Semantics, Ts};
use crate::ledger::{Effect, Proposal};

/// Whether `c` is dormant at `now` under `cfg` (the dormant rule's numbers).
pub(crate) fn is_dormant(c: &Client, cfg: &DormantConfig, now: Ts) -> bool {
    c.dormant_after(cfg).is_some_and(|t| now > t)
}

// Long: one candidate loop whose checks (class, last order, open deals, return to the previous
// manager) read the same client state.
pub(crate) fn propose(ctx: &RuleContext, cfg: &DormantConfig) -> Vec<Proposal> {
    let Some(reactivation) = ctx.roles.reactivation_manager.clone() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let all = clients(ctx.mirror, ctx.classes);
    for c in &all {
        let owner = c.responsible_id.clone();
        if owner.as_deref() == Some(reactivation.as_str()) {
            hand_back(ctx, c, &mut out);
            continue;
        }
        if owner
            .as_ref()
            .is_some_and(|o| ctx.roles.protected.contains(o))
            || !is_dormant(c, cfg, ctx.now)
        {
            continue;
        }
        let spell = c
            .last_order()
            .map(|t| t.with_timezone(&ctx.calendar.tz).date_naive().to_string())
            .unwrap_or_default();
        let base = format!(
            "dormant:{}:{}:{}:{spell}",
            ctx.tenant,
            c.entity.kind.as_str(),
            c.entity.id
        );
        let ru = ctx.lang == Lang::Ru;
        out.push(Proposal {
            key: format!("{base}:owner"),
            rule: "dormant",
            entity: Some(c.entity.clone()),
            summary: format!(
                "{} «{}» → reactivation manager {reactivation}",
                c.entity.kind.as_str(),
                c.name
            ),
            effect: Effect::SetResponsible {
                entity: c.entity.clone(),
                user_id: reactivation.clone(),
                previous: owner.clone(),
            },
        });
        for t in open_tasks(ctx.mirror, c) {
            out.push(Proposal {
                key: format!("{base}:task:{}", t.id),
                rule: "dormant",
                entity: Some(EntityRef::new(EntityKind::Task, t.id.clone())),
                summary: format!("task {} of «{}» → {reactivation}", t.id, c.name),
                effect: Effect::SetResponsible {
                    entity: EntityRef::new(EntityKind::Task, t.id.clone()),
                    user_id: reactivation.clone(),
                    previous: t.responsible_id.clone(),
                },
            });
        }
        let last = c
            .last_order()
            .map(|t| {
                t.with_timezone(&ctx.calendar.tz)
                    .format("%d.%m.%Y")
                    .to_string()
            })
            .unwrap_or_default();
        // The previous owner by name: the note is read in the CRM by people, not by dozor.
        let previous = owner
            .as_deref()
            .map(|id| {
                let name = ctx
                    .mirror
                    .users
                    .iter()
                    .find(|u| u.id == id)
                    .map(|u| u.name.as_str());
                match name {
                    Some(n) if !n.trim().is_empty() => n.to_string(),
                    _ => crate::domain::User::unnamed(id, ru),
                }
            })
            .unwrap_or_else(|| "—".into());
        let note = if ru {
            format!(
                "Клиент передан менеджеру по реактивации: нет заказов с {last}, открытых сделок нет. Предыдущий ответственный: {}.",
                previous
            )
        } else {
            format!(
                "Client handed to the reactivation manager: no orders since {last}, no open deals. Previous owner: {}.",
                previous
            )
        };
        out.push(Proposal {
            key: format!("{base}:note"),
            rule: "dormant",
            entity: Some(c.entity.clone()),
            summary: format!("handover note on «{}»", c.name),
            effect: Effect::Comment {
                entity: c.entity.clone(),
                text: note,
            },
        });
        out.push(Proposal {
            key: format!("{base}:task"),
            rule: "dormant",
            entity: Some(c.entity.clone()),
            summary: format!("reactivation task for «{}»", c.name),
            effect: Effect::CreateTask(NewTask {
                title: if ru {
                    format!("Реактивация клиента «{}»", c.name)
                } else {
                    format!("Reactivate client \"{}\"", c.name)
                },
                description: if ru {
                    format!(
                        "Последний заказ: {last}. Выручка за всё время: {:.0} ₽, класс {:?}.",
                        c.revenue, c.class
                    )
                } else {
                    format!(
                        "Last order: {last}. Lifetime revenue: {:.0} RUB, class {:?}.",
                        c.revenue, c.class
                    )
                },
                responsible_id: reactivation.clone(),
                deadline: ctx.calendar.next_business_day(ctx.now, 60),
                entity: Some(c.entity.clone()),
            }),
        });
    }
    out
}

/// A client the reactivation manager holds that ordered again goes back to its previous owner.
fn hand_back(ctx: &RuleContext, c: &Client, out: &mut Vec<Proposal>) {
    let Some(h) = ctx.handovers.iter().rev().find(|h| h.entity == c.entity) else {
        return;
    };
    let Some(previous) = h.previous.clone() else {
        return;
    };
    // Some CRMs keep only the close *date* (Bitrix24 CLOSEDATE): a deal created after the
    // handover (timestamps have whole seconds: in the same second too) counts as well as one
    // closed after it.
    let won_after = ctx.mirror.deals.iter().find(|d| {
        d.semantics == Semantics::Won
            && c.deal_ids.contains(&d.id)
            && (d.created_at >= h.at || d.closed_at.is_some_and(|t| t > h.at))
    });
    let Some(deal) = won_after else { return };
    out.push(Proposal {
        key: format!(
            "dormant:{}:{}:{}:return:{}",
            ctx.tenant,
            c.entity.kind.as_str(),
            c.entity.id,
            deal.id
        ),
        rule: "dormant",
        entity: Some(c.entity.clone()),
        summary: format!(
            "«{}» ordered again (deal {}) → back to {previous}",
            c.name, deal.id
        ),
        effect: Effect::SetResponsible {
            entity: c.entity.clone(),
            user_id: previous,
            previous: c.responsible_id.clone(),
        },
    });
}

/// The hand-overs among the dormant rule's done owner changes (ledger rows, oldest first).
pub(crate) fn handovers(rows: Vec<crate::store::ActionRow>) -> Vec<super::Handover> {
    rows.into_iter()
        .filter(|r| r.rule == "dormant" && r.kind == "set_responsible" && r.key.ends_with(":owner"))
        .filter_map(|r| match Effect::stored(&r).ok()? {
            Effect::SetResponsible {
                entity, previous, ..
            } => Some(super::Handover {
                entity,
                previous,
                at: r.updated_at,
            }),
            _ => None,
        })
        .collect()
}
