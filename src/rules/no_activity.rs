//! "No client is forgotten": a client with no call, meeting, e-mail or completed task for
//! `top_days` (ABC class A) or `other_days` is flagged (tag `FLAG`), listed in reports, and its
//! owner gets a "contact the client" task. Dormant clients are left to the dormant rule. The flag
//! is removed once the client has activity again.
//!
//! Keys: `no_activity:{tenant}:{kind}:{id}:{last activity date}:{flag|task}` (once per idle
//! spell) and `...:{date}:clear`.

use super::RuleContext;
use super::clients::clients;
use super::dormant::is_dormant;
use crate::config::{Lang, NoActivityConfig};
use crate::crm::NewTask;
use crate::domain::EntityKind;
use crate::ledger::{Effect, Proposal};

/// The flag dozor puts on idle clients.
pub const FLAG: &str = "dozor:нет активности";

// Long: one candidate loop whose checks (class threshold, last activity, flag, task) read the same
// client state.
pub(crate) fn propose(ctx: &RuleContext, cfg: &NoActivityConfig) -> Vec<Proposal> {
    let dormant_cfg = &ctx.rules.dormant;
    let tags_of = |kind: EntityKind, id: &str| -> Vec<String> {
        match kind {
            EntityKind::Contact => ctx
                .mirror
                .contacts
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.tags.clone()),
            EntityKind::Company => ctx
                .mirror
                .companies
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.tags.clone()),
            _ => None,
        }
        .unwrap_or_default()
    };
    let mut out = Vec::new();
    for c in clients(ctx.mirror, ctx.classes) {
        if dormant_cfg.mode != crate::config::RuleMode::Off && is_dormant(&c, dormant_cfg, ctx.now)
        {
            continue;
        }
        let since = c.last_activity.unwrap_or(c.created_at);
        let idle = ctx.now > c.idle_after(cfg);
        let spell = since.with_timezone(&ctx.calendar.tz).date_naive();
        let base = format!(
            "no_activity:{}:{}:{}:{spell}",
            ctx.tenant,
            c.entity.kind.as_str(),
            c.entity.id
        );
        let flagged = tags_of(c.entity.kind, &c.entity.id)
            .iter()
            .any(|t| t == FLAG);
        if !idle {
            if flagged {
                out.push(Proposal {
                    key: format!("{base}:clear"),
                    rule: "no_activity",
                    entity: Some(c.entity.clone()),
                    summary: format!("«{}» active again: flag removed", c.name),
                    effect: Effect::UpdateTags {
                        entity: c.entity.clone(),
                        add: vec![],
                        remove: vec![FLAG.to_string()],
                    },
                });
            }
            continue;
        }
        if !flagged {
            out.push(Proposal {
                key: format!("{base}:flag"),
                rule: "no_activity",
                entity: Some(c.entity.clone()),
                summary: format!("«{}» idle since {spell}: flagged", c.name),
                effect: Effect::UpdateTags {
                    entity: c.entity.clone(),
                    add: vec![FLAG.to_string()],
                    remove: vec![],
                },
            });
        }
        let Some(owner) = c.responsible_id.clone() else {
            continue;
        };
        let ru = ctx.lang == Lang::Ru;
        out.push(Proposal {
            key: format!("{base}:task"),
            rule: "no_activity",
            entity: Some(c.entity.clone()),
            summary: format!("«{}» idle since {spell}: task for {owner}", c.name),
            effect: Effect::CreateTask(NewTask {
                title: if ru {
                    format!("Связаться с клиентом «{}»", c.name)
                } else {
                    format!("Contact client \"{}\"", c.name)
                },
                description: if ru {
                    format!(
                        "С клиентом не было контактов с {} (класс {:?}).",
                        spell.format("%d.%m.%Y"),
                        c.class
                    )
                } else {
                    format!(
                        "No contact with this client since {spell} (class {:?}).",
                        c.class
                    )
                },
                responsible_id: owner,
                deadline: ctx.calendar.next_business_day(ctx.now, 60),
                entity: Some(c.entity.clone()),
            }),
        });
    }
    out
}
