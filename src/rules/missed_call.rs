//! A missed incoming call becomes a callback task for the client's manager (else the employee
//! who missed it, else the manager on duty), due `sla_minutes` of business time after the call:
//! a call at 21:00 on Friday is due on Monday morning. A callback (an outgoing call to the number,
//! or an answered call from it) closes the loop: the task is completed with a comment. Calls not
//! called back by their deadline reach the head of sales in one digest per hour.
//!
//! Keys: `missed_call:{tenant}:{provider}:{id}:task`, `...:closed`, and
//! `missed_call:{tenant}:escalation:{date}T{hour}`.

use std::collections::HashMap;

use chrono::{Datelike, Timelike};

use super::RuleContext;
use crate::config::{Lang, MissedCallConfig};
use crate::crm::NewTask;
use crate::domain::{Call, Direction, Ts};
use crate::ledger::{Effect, Proposal};
use crate::matching::{PhoneBook, employee_user, number, recent};
use crate::notify::telegram::escape_html as esc;
use crate::notify::{MessageKind, route};

/// The moments each number was called back or answered (outgoing calls, answered calls),
/// oldest first: built once per look, so finding a missed call's callback does not walk every
/// call (and normalise its number) again for each missed call.
fn callbacks(calls: &[Call]) -> HashMap<String, Vec<Ts>> {
    let mut by: HashMap<String, Vec<Ts>> = HashMap::new();
    for x in calls
        .iter()
        .filter(|x| x.direction == Direction::Out || x.answered)
    {
        if let Some(p) = number(x) {
            by.entry(p).or_default().push(x.started_at);
        }
    }
    for ts in by.values_mut() {
        ts.sort();
    }
    by
}

/// When the missed call `c` from `e164` was called back, if it was.
fn callback(callbacks: &HashMap<String, Vec<Ts>>, c: &Call, e164: &str) -> Option<Ts> {
    let ts = callbacks.get(e164)?;
    ts.get(ts.partition_point(|t| *t <= c.started_at)).copied()
}

// Long: one candidate loop whose checks (callback made, owner, on-duty, SLA deadline, escalation)
// read the same call and client state.
pub(crate) fn propose(ctx: &RuleContext, cfg: &MissedCallConfig) -> Vec<Proposal> {
    let book = PhoneBook::with_links(ctx.mirror, ctx.calls);
    let called_back = callbacks(&ctx.mirror.calls);
    let ru = ctx.lang == Lang::Ru;
    let sla = cfg.sla_minutes as i64;
    let mut out = Vec::new();
    let mut late = Vec::new();
    for c in recent(ctx.mirror, ctx.now, cfg.lookback_hours) {
        if c.direction != Direction::In || c.answered {
            continue;
        }
        let Some(p) = number(c) else { continue };
        let base = format!(
            "missed_call:{}:{}:{}",
            ctx.tenant,
            c.provider.as_str(),
            c.id
        );
        let due = ctx.calendar.add_business_minutes(c.started_at, sla);
        match callback(&called_back, c, &p) {
            Some(at) => {
                // Close the task this rule created, if it is still open.
                if let Some(task_id) = ctx.done.get(&format!("{base}:task")) {
                    let open = ctx
                        .mirror
                        .tasks
                        .iter()
                        .any(|t| &t.id == task_id && !t.completed);
                    if open {
                        let at = at.with_timezone(&ctx.calendar.tz).format("%d.%m.%Y %H:%M");
                        out.push(Proposal {
                            key: format!("{base}:closed"),
                            rule: "missed_call",
                            entity: None,
                            summary: format!("{p} called back at {at}: task {task_id} closed"),
                            effect: Effect::CompleteTask {
                                task_id: task_id.clone(),
                                result: if ru {
                                    format!("Перезвонили {at}")
                                } else {
                                    format!("Called back {at}")
                                },
                            },
                        });
                    }
                }
            }
            None => {
                let Some(entity) = book.binding(&p) else {
                    continue; // unknown number: its lead comes first (unknown_caller)
                };
                let Some(responsible) = book
                    .owner(&entity)
                    .or_else(|| employee_user(ctx.mirror, ctx.calls, c))
                    .or_else(|| ctx.roles.on_duty.first().cloned())
                else {
                    continue;
                };
                let at = c
                    .started_at
                    .with_timezone(&ctx.calendar.tz)
                    .format("%d.%m.%Y %H:%M");
                out.push(Proposal {
                    key: format!("{base}:task"),
                    rule: "missed_call",
                    entity: Some(entity.clone()),
                    summary: format!("missed call {} from {p} → callback task for {responsible}", c.id),
                    effect: Effect::CreateTask(NewTask {
                        title: if ru { format!("Перезвонить {p}") } else { format!("Call back {p}") },
                        description: if ru {
                            format!("Пропущенный звонок {at}. Перезвонить в течение {sla} мин рабочего времени.")
                        } else {
                            format!("Missed call at {at}. Call back within {sla} business minutes.")
                        },
                        responsible_id: responsible.clone(),
                        deadline: due,
                        entity: Some(entity),
                    }),
                });
                if ctx.now > due {
                    late.push((c, p, responsible, due));
                }
            }
        }
    }
    // Oldest first, calls of the same second by id, whichever way they were read.
    late.sort_by(|a, b| (a.0.started_at, &a.0.id).cmp(&(b.0.started_at, &b.0.id)));
    if let (false, Some(to)) = (late.is_empty(), route(ctx.telegram, MessageKind::Alert)) {
        let names = crate::domain::User::names(&ctx.mirror.users);
        let mut html = if ru {
            format!("<b>📞 Не перезвонили в срок: {}</b>\n", late.len())
        } else {
            format!("<b>📞 Not called back in time: {}</b>\n", late.len())
        };
        for (c, p, who, due) in late.iter().take(40) {
            let at = c
                .started_at
                .with_timezone(&ctx.calendar.tz)
                .format("%d.%m %H:%M");
            let due = due.with_timezone(&ctx.calendar.tz).format("%d.%m %H:%M");
            let who = crate::domain::User::name_in(&names, who, ru);
            html.push_str(&format!(
                "• {p} ({at}) — {} — {} {due}\n",
                esc(&who),
                if ru { "срок" } else { "due" }
            ));
        }
        let local = ctx.now.with_timezone(&ctx.calendar.tz);
        out.push(Proposal {
            key: format!(
                "missed_call:{}:escalation:{}-{:02}-{:02}T{}",
                ctx.tenant,
                local.year(),
                local.month(),
                local.day(),
                local.hour()
            ),
            rule: "missed_call",
            entity: None,
            summary: format!(
                "{} missed call(s) not called back in time → head of sales",
                late.len()
            ),
            effect: Effect::Telegram {
                chat: to.chat,
                thread: to.thread,
                html,
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MarketingConfig, RolesConfig, RulesConfig};
    use crate::domain::calendar::BusinessCalendar;
    use crate::domain::{Contact, TelephonyKind, Utm};
    use crate::store::Snapshot;
    use chrono::{TimeZone, Utc};

    #[test]
    fn friday_night_call_is_due_monday_morning() {
        // Friday 2026-11-20 21:00 MSK = 18:00 UTC; the rule runs on Saturday morning.
        let call_at = Utc.with_ymd_and_hms(2026, 11, 20, 18, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 7, 0, 0).unwrap();
        let mirror = Snapshot {
            contacts: vec![Contact {
                id: "7".into(),
                name: "Иван".into(),
                phones: vec!["8 (999) 123-45-67".into()],
                emails: vec![],
                company_id: None,
                responsible_id: Some("5".into()),
                tags: vec![],
                created_at: call_at,
                updated_at: call_at,
            }],
            calls: vec![Call {
                id: "c1".into(),
                provider: TelephonyKind::Comagic,
                started_at: call_at,
                direction: Direction::In,
                answered: false,
                talk_s: 0,
                wait_s: 30,
                client_phone: "79991234567".into(),
                virtual_number: None,
                employee_id: None,
                employee_name: None,
                recording_url: None,
                source: None,
                utm: Utm::default(),
            }],
            ..Snapshot::default()
        };
        let cal = BusinessCalendar::moscow_default();
        let (roles, rules, marketing, done) = (
            RolesConfig::default(),
            RulesConfig::default(),
            MarketingConfig::default(),
            Default::default(),
        );
        let ctx = RuleContext {
            tenant: "t",
            now,
            calendar: &cal,
            lang: Lang::Ru,
            mirror: &mirror,
            telegram: None,
            roles: &roles,
            routing: &Default::default(),
            rules: &rules,
            handovers: &[],
            marketing: &marketing,
            done: &done,
            unfinished: &Default::default(),
            calls: &Default::default(),
            classes: None,
        };
        let p = propose(&ctx, &rules.missed_call);
        assert_eq!(p.len(), 1, "{p:?}");
        let Effect::CreateTask(t) = &p[0].effect else {
            panic!("{p:?}")
        };
        // Monday 09:15 MSK = 06:15 UTC.
        assert_eq!(
            t.deadline,
            Utc.with_ymd_and_hms(2026, 11, 23, 6, 15, 0).unwrap()
        );
        assert_eq!(t.responsible_id, "5");
        assert_eq!(p[0].key, "missed_call:t:comagic:c1:task");
    }
}
