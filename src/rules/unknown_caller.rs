//! "Every call lands in the CRM": a call from a number no lead, contact or company carries
//! becomes a lead (Bitrix24 lead; amoCRM unsorted item) with its source and UTM, and the lead's
//! owner gets a first task "contact the new client".
//!
//! The owner comes from `[tenants.routing]`: the virtual number the client dialled, else the
//! call's source or UTM source, else the employee who took the call, else a manager on duty
//! (the first, or in turn). Round robin counts the leads this rule made in the last week, so the
//! turn survives restarts without state of its own.
//!
//! The first task is proposed from the ledger, not together with the lead: it needs the lead's
//! id, which only the done lead action knows, and it is bound to the lead as the mirror shows it
//! (a cycle later), so the task goes to whoever owns the lead by then. Both writes are keyed, so
//! repeated cycles find them done; a crash between the lead's write and its outcome leaves the
//! lead action unfinished, and it is proposed again (though the number is now known) so the
//! ledger reconciles it by phone and records the lead id the task needs. When the call that made
//! the lead was missed, the callback task of `missed_call` is the first task and none is added.
//!
//! Keys: `unknown_caller:{tenant}:phone:{e164}` — one lead per unknown number;
//! `unknown_caller:{tenant}:phone:{e164}:task` — its first task.

use std::collections::{BTreeMap, HashMap};

use super::RuleContext;
use crate::config::{Lang, OnDutyPick, RuleMode, UnknownCallerConfig};
use crate::crm::{NewLead, NewTask};
use crate::domain::{Call, Direction, EntityKind, EntityRef, Semantics, Ts, phone};
use crate::ledger::{Effect, Proposal};
use crate::matching::{PhoneBook, employee_user, number, recent};

/// The key of the lead made for `e164`.
fn lead_key(tenant: &str, e164: &str) -> String {
    format!("unknown_caller:{tenant}:phone:{e164}")
}

pub(crate) fn propose(ctx: &RuleContext, cfg: &UnknownCallerConfig) -> Vec<Proposal> {
    let mut out = leads(ctx, cfg);
    out.extend(first_tasks(ctx, cfg));
    out
}

/// Who owns the lead of a call: the routing config, then the employee; `None` when only the
/// on-duty list can tell (the caller picks from it).
fn routed(ctx: &RuleContext, c: &Call) -> Option<String> {
    let r = ctx.routing;
    c.virtual_number
        .as_deref()
        .and_then(|v| phone::normalize(v).ok())
        .and_then(|v| r.virtual_numbers.get(&v).cloned())
        .or_else(|| c.source.as_deref().and_then(|s| r.by_source(s).cloned()))
        .or_else(|| {
            c.utm
                .source
                .as_deref()
                .and_then(|s| r.by_source(s).cloned())
        })
        .or_else(|| employee_user(ctx.mirror, ctx.calls, c))
}

// Long: one candidate loop whose checks (known number, employee, existing lead, source and UTM)
// read the same call.
fn leads(ctx: &RuleContext, cfg: &UnknownCallerConfig) -> Vec<Proposal> {
    let book = PhoneBook::with_links(ctx.mirror, ctx.calls);
    let mut first: BTreeMap<String, &Call> = BTreeMap::new();
    for c in
        recent(ctx.mirror, ctx.now, cfg.lookback_hours).filter(|c| c.direction == Direction::In)
    {
        let Some(p) = number(c) else { continue };
        let unknown =
            book.find(&p).is_empty() || ctx.unfinished.contains(&lead_key(ctx.tenant, &p));
        if unknown && !ctx.calls.unresolved.contains(&p) {
            first
                .entry(p)
                .and_modify(|x| {
                    // Calls of the same second by id, whichever way they were read.
                    if (c.started_at, &c.id) < (x.started_at, &x.id) {
                        *x = c;
                    }
                })
                .or_insert(c);
        }
    }
    // Round robin continues from the number of leads made lately.
    let prefix = format!("unknown_caller:{}:phone:", ctx.tenant);
    let made = ctx
        .done
        .keys()
        .filter(|k| k.strip_prefix(&prefix).is_some_and(|p| !p.contains(':')))
        .count();
    // In call order, so the turn follows the order the clients called in.
    let mut first: Vec<(String, &Call)> = first.into_iter().collect();
    first.sort_by(|a, b| a.1.started_at.cmp(&b.1.started_at).then(a.0.cmp(&b.0)));
    let duty = &ctx.roles.on_duty;
    let mut turn = made;
    let ru = ctx.lang == Lang::Ru;
    first
        .into_iter()
        .map(|(p, c)| {
            let responsible = routed(ctx, c).or_else(|| match ctx.routing.on_duty {
                OnDutyPick::First => duty.first().cloned(),
                OnDutyPick::RoundRobin if duty.is_empty() => None,
                OnDutyPick::RoundRobin => {
                    let who = duty[turn % duty.len()].clone();
                    turn += 1;
                    Some(who)
                }
            });
            let at = c
                .started_at
                .with_timezone(&ctx.calendar.tz)
                .format("%d.%m.%Y %H:%M");
            Proposal {
                key: lead_key(ctx.tenant, &p),
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

/// A first task for each lead this rule made that the mirror now shows open, due
/// `first_task_minutes` of business time after the lead was created.
// Long: the two indexes of the look (leads by id, each number's first missed call) are built
// beside the one loop that reads them.
fn first_tasks(ctx: &RuleContext, cfg: &UnknownCallerConfig) -> Vec<Proposal> {
    let prefix = format!("unknown_caller:{}:phone:", ctx.tenant);
    let lookback = chrono::Duration::minutes((cfg.lookback_hours * 60.0) as i64);
    let sla = cfg.first_task_minutes as i64;
    let missed_rule_on = ctx.rules.missed_call.mode != RuleMode::Off;
    let ru = ctx.lang == Lang::Ru;
    let mut made: Vec<(&str, &String)> = ctx
        .done
        .iter()
        .filter_map(|(k, lead_id)| {
            let p = k.strip_prefix(&prefix)?;
            (!p.contains(':')).then_some((p, lead_id))
        })
        .collect();
    made.sort();
    // Indexed once: each made lead below looks up its record and its number's first missed call.
    let leads: HashMap<&str, &crate::domain::Lead> = ctx
        .mirror
        .leads
        .iter()
        .map(|l| (l.id.as_str(), l))
        .collect();
    let mut first_missed: HashMap<String, Ts> = HashMap::new();
    for c in ctx
        .mirror
        .calls
        .iter()
        .filter(|c| c.direction == Direction::In && !c.answered)
    {
        if let Some(n) = number(c) {
            let t = first_missed.entry(n).or_insert(c.started_at);
            *t = (*t).min(c.started_at);
        }
    }
    made.into_iter()
        .filter_map(|(p, lead_id)| {
            // Not in the mirror yet: the next cycle's sync brings it.
            let lead = *leads.get(lead_id.as_str())?;
            if lead.semantics != Semantics::Open || ctx.now - lead.created_at > lookback {
                return None;
            }
            // The calls that made the lead: a missed one already has its callback task.
            let missed = first_missed.get(p).is_some_and(|t| *t <= lead.created_at);
            if missed && missed_rule_on {
                return None;
            }
            let responsible = lead.responsible_id.clone()?;
            let (title, description) = if ru {
                (
                    "Связаться с новым клиентом".to_string(),
                    format!(
                        "Новый клиент позвонил с {p}, лид «{}». Свяжитесь с ним в течение {sla} мин рабочего времени и запланируйте следующий шаг.",
                        lead.title
                    ),
                )
            } else {
                (
                    "Contact the new client".to_string(),
                    format!(
                        "A new client called from {p}, lead \"{}\". Contact them within {sla} business minutes and plan the next step.",
                        lead.title
                    ),
                )
            };
            let entity = EntityRef::new(EntityKind::Lead, lead.id.clone());
            Some(Proposal {
                key: format!("{}:task", lead_key(ctx.tenant, p)),
                rule: "unknown_caller",
                entity: Some(entity.clone()),
                summary: format!("new lead {} from {p} → first task for {responsible}", lead.id),
                effect: Effect::CreateTask(NewTask {
                    title,
                    description,
                    responsible_id: responsible,
                    deadline: ctx.calendar.add_business_minutes(lead.created_at, sla),
                    entity: Some(entity),
                }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MarketingConfig, RolesConfig, RoutingConfig, RulesConfig};
    use crate::domain::calendar::BusinessCalendar;
    use crate::domain::{Lead, TelephonyKind, Utm};
    use crate::store::Snapshot;
    use chrono::{Duration, TimeZone, Utc};
    use std::collections::{HashMap, HashSet};

    fn call(id: &str, phone: &str, virtual_number: &str, source: &str, utm: Option<&str>) -> Call {
        Call {
            id: id.into(),
            provider: TelephonyKind::Comagic,
            started_at: Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap(),
            direction: Direction::In,
            answered: true,
            talk_s: 30,
            wait_s: 2,
            client_phone: phone.into(),
            virtual_number: Some(virtual_number.into()),
            employee_id: None,
            employee_name: None,
            recording_url: None,
            source: Some(source.into()),
            utm: Utm {
                source: utm.map(String::from),
                ..Utm::default()
            },
        }
    }

    struct Fixture {
        cal: BusinessCalendar,
        roles: RolesConfig,
        routing: RoutingConfig,
        rules: RulesConfig,
        marketing: MarketingConfig,
        done: HashMap<String, String>,
        unfinished: HashSet<String>,
        links: crate::matching::CallLinks,
    }

    impl Fixture {
        fn new(routing: RoutingConfig) -> Self {
            Fixture {
                cal: BusinessCalendar::moscow_default(),
                roles: RolesConfig {
                    on_duty: vec!["5".into(), "6".into()],
                    ..RolesConfig::default()
                },
                routing,
                rules: RulesConfig::default(),
                marketing: MarketingConfig::default(),
                done: HashMap::new(),
                unfinished: HashSet::new(),
                links: Default::default(),
            }
        }

        fn run(&self, mirror: &Snapshot) -> Vec<Proposal> {
            let ctx = RuleContext {
                tenant: "t",
                now: Utc.with_ymd_and_hms(2026, 11, 24, 8, 30, 0).unwrap(),
                calendar: &self.cal,
                lang: Lang::Ru,
                mirror,
                telegram: None,
                roles: &self.roles,
                routing: &self.routing,
                rules: &self.rules,
                handovers: &[],
                marketing: &self.marketing,
                done: &self.done,
                unfinished: &self.unfinished,
                calls: &self.links,
                classes: None,
            };
            propose(&ctx, &self.rules.unknown_caller)
        }
    }

    fn owners(p: &[Proposal]) -> Vec<(String, Option<String>)> {
        p.iter()
            .filter_map(|p| match &p.effect {
                Effect::CreateLead(l) => Some((l.phone.clone()?, l.responsible_id.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn leads_are_routed_by_virtual_number_then_source_then_on_duty_in_turn() {
        let routing = RoutingConfig {
            virtual_numbers: [("+74951110000".to_string(), "11".to_string())].into(),
            sources: [("yandex".to_string(), "12".to_string())].into(),
            on_duty: OnDutyPick::RoundRobin,
        };
        let mut fx = Fixture::new(routing);
        let mut calls = vec![
            call("1", "79990000001", "74951110000", "va", Some("yandex")),
            call("2", "79990000002", "74952220000", "Yandex", None),
            call("3", "79990000003", "74952220000", "va", Some("YANDEX")),
            call("4", "79990000004", "74952220000", "va", None),
            call("5", "79990000005", "74952220000", "va", None),
            call("6", "79990000006", "74952220000", "va", None),
        ];
        for (i, c) in calls.iter_mut().enumerate() {
            c.started_at += Duration::minutes(i as i64);
        }
        let mirror = Snapshot {
            calls,
            ..Snapshot::default()
        };
        let got = owners(&fx.run(&mirror));
        let want = [
            ("+79990000001", "11"),
            ("+79990000002", "12"),
            ("+79990000003", "12"),
            ("+79990000004", "5"),
            ("+79990000005", "6"),
            ("+79990000006", "5"),
        ];
        assert_eq!(
            got,
            want.map(|(p, u)| (p.to_string(), Some(u.to_string())))
                .to_vec()
        );
        // One lead made earlier: the turn starts one further.
        fx.done.insert("t:other".into(), "x".into());
        fx.done
            .insert("unknown_caller:t:phone:+79990000099".into(), "77".into());
        let got = owners(&fx.run(&mirror));
        assert_eq!(got[3].1.as_deref(), Some("6"));
        // First on duty when not in turn.
        fx.routing.on_duty = OnDutyPick::First;
        let got = owners(&fx.run(&mirror));
        assert!(
            got[3..].iter().all(|(_, u)| u.as_deref() == Some("5")),
            "{got:?}"
        );
    }

    #[test]
    fn the_first_task_waits_for_the_lead_and_goes_to_its_owner() {
        let mut fx = Fixture::new(RoutingConfig::default());
        let c = call("1", "79990000001", "74951110000", "va", None);
        let key = "unknown_caller:t:phone:+79990000001";
        fx.done.insert(key.into(), "501".into());
        // Done, but the lead is not in the mirror yet: no task, and the number stays unknown.
        let mut mirror = Snapshot {
            calls: vec![c.clone()],
            ..Snapshot::default()
        };
        let p = fx.run(&mirror);
        assert!(p.iter().all(|p| !p.key.ends_with(":task")), "{p:?}");
        // Synced: the task goes to the lead's owner as the CRM has it.
        mirror.leads.push(Lead {
            id: "501".into(),
            title: "Входящий звонок +79990000001".into(),
            status_id: "NEW".into(),
            semantics: Semantics::Open,
            responsible_id: Some("9".into()),
            source: Some("CALL".into()),
            phones: vec!["+79990000001".into()],
            emails: vec![],
            contact_id: None,
            company_id: None,
            amount: 0.0,
            utm: Utm::default(),
            // Tuesday 11:05 MSK.
            created_at: c.started_at + Duration::minutes(5),
            updated_at: c.started_at + Duration::minutes(5),
            closed_at: None,
            deal_id: None,
        });
        let p = fx.run(&mirror);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, format!("{key}:task"));
        let Effect::CreateTask(t) = &p[0].effect else {
            panic!("{p:?}")
        };
        assert_eq!(t.title, "Связаться с новым клиентом");
        assert_eq!(t.responsible_id, "9");
        assert_eq!(t.entity, Some(EntityRef::new(EntityKind::Lead, "501")));
        assert_eq!(t.deadline, c.started_at + Duration::minutes(20));
        // A lead write whose outcome was lost is proposed again for the ledger to reconcile.
        fx.done.clear();
        fx.unfinished.insert(key.into());
        let p = fx.run(&mirror);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, key);
        // The call was missed: the callback task is the first task.
        fx.unfinished.clear();
        fx.done.insert(key.into(), "501".into());
        mirror.calls[0].answered = false;
        assert!(fx.run(&mirror).is_empty());
    }
}
