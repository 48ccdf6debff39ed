//! A deterministic, seeded generator of a realistic sales department.
//!
//! The same seed, scale and anchor always give the same world. Scale 1 is a small firm (about
//! 200 contacts and deals); the data grows linearly, so scale 500 gives the 100 000-deal data set
//! the sync benchmark needs. Besides the everyday noise it plants every situation a rule looks for:
//! open deals without a task, overdue tasks, fresh leads nobody took, missed calls, calls from
//! unknown numbers, clients called three times without an answer, idle and dormant clients.

use chrono::{Duration, Timelike};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::world::*;

const FIRST_NAMES: &[&str] = &[
    "Иван",
    "Алексей",
    "Дмитрий",
    "Сергей",
    "Андрей",
    "Михаил",
    "Николай",
    "Павел",
    "Ольга",
    "Анна",
    "Елена",
    "Мария",
    "Наталья",
    "Татьяна",
    "Ирина",
    "Светлана",
    "Юлия",
    "Виктор",
];
const LAST_NAMES: &[&str] = &[
    "Иванов",
    "Смирнов",
    "Кузнецов",
    "Попов",
    "Васильев",
    "Петров",
    "Соколов",
    "Михайлов",
    "Новиков",
    "Фёдоров",
    "Морозов",
    "Волков",
    "Алексеев",
    "Лебедев",
    "Семёнов",
    "Егоров",
];
const COMPANY_WORDS: &[&str] = &[
    "Альфа",
    "Вектор",
    "Гранит",
    "Техносфера",
    "СтройИнвест",
    "Меридиан",
    "Спектр",
    "Логистик",
    "Прогресс",
    "Северсталь-Сервис",
    "Орион",
    "Континент",
    "Эталон",
    "Импульс",
];
const LEAD_SOURCES: &[&str] = &[
    "CALL",
    "CALL",
    "WEB",
    "WEB",
    "EMAIL",
    "ADVERTISING",
    "PARTNER",
    "RECOMMENDATION",
];
const UTM_SOURCES: &[&str] = &["yandex", "google", "vk", "avito", "2gis"];

/// What kind of client a contact is in the scenario.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Profile {
    /// Orders often and a lot (ABC class A).
    Top,
    Regular,
    /// One order, long ago.
    OneTime,
    /// Used to order, nothing for over half a year, nothing open.
    Dormant,
    /// Never ordered.
    Zero,
}

/// Generates the world around `anchor` (the scenario's "now").
pub fn generate(seed: u64, scale: u32, anchor: Ts) -> World {
    let scale = scale.max(1);
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(seed),
        w: World {
            seed,
            scale,
            anchor: Some(anchor),
            ..World::default()
        },
        now: anchor.with_nanosecond(0).unwrap_or(anchor),
    };
    g.users(scale);
    g.pipelines();
    g.companies_and_contacts(scale);
    g.deals_and_tasks(scale);
    g.leads(scale);
    g.activities(scale);
    g.calls(scale);
    g.w
}

struct Gen {
    rng: ChaCha8Rng,
    w: World,
    now: Ts,
}

impl Gen {
    fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
        xs[self.rng.gen_range(0..xs.len())]
    }

    fn ago_days(&mut self, lo: i64, hi: i64) -> Ts {
        let secs = self.rng.gen_range(lo * 86_400..=hi.max(lo) * 86_400);
        self.now - Duration::seconds(secs)
    }

    fn phone_digits(&mut self) -> String {
        format!("79{:09}", self.rng.gen_range(0..1_000_000_000u64))
    }

    /// The same number in one of the shapes people type into a CRM.
    fn typed(&mut self, digits: &str) -> String {
        let d = &digits[1..]; // ten digits after the country code
        match self.rng.gen_range(0..6) {
            0 => format!("+7{d}"),
            1 => format!("8 ({}) {}-{}-{}", &d[0..3], &d[3..6], &d[6..8], &d[8..10]),
            2 => format!("+7 {} {} {} {}", &d[0..3], &d[3..6], &d[6..8], &d[8..10]),
            3 => format!("8{d}"),
            4 => format!("7{d}"),
            _ => format!("+7 ({}) {}-{}{}", &d[0..3], &d[3..6], &d[6..8], &d[8..10]),
        }
    }

    fn managers(&self) -> Vec<u64> {
        self.w.users_with(Role::Manager).map(|u| u.id).collect()
    }

    fn users(&mut self, scale: u32) {
        let managers = 4 + scale.min(16) as usize;
        let mut roles = vec![
            Role::Owner,
            Role::HeadOfSales,
            Role::Reactivation,
            Role::Marketing,
        ];
        roles.extend(std::iter::repeat_n(Role::Manager, managers));
        for (i, role) in roles.into_iter().enumerate() {
            let id = self.w.next_id();
            let first = FIRST_NAMES[i % FIRST_NAMES.len()].to_string();
            let last = LAST_NAMES[(i * 7 + 3) % LAST_NAMES.len()].to_string();
            self.w.users.push(SimUser {
                id,
                email: format!("user{id}@example.ru"),
                extension: format!("{}", 100 + id),
                first_name: first,
                last_name: last,
                role,
                active: true,
            });
        }
        // Telephony knows the people who answer phones: managers and the head of sales.
        let staff: Vec<(u64, String, String)> = self
            .w
            .users
            .iter()
            .filter(|u| {
                matches!(
                    u.role,
                    Role::Manager | Role::HeadOfSales | Role::Reactivation
                )
            })
            .map(|u| (u.id, u.full_name(), u.extension.clone()))
            .collect();
        for (user_id, name, ext) in staff {
            self.w.employees.push(SimEmployee {
                id: 50_000 + user_id,
                full_name: name,
                extension: ext,
                user_id,
            });
        }
    }

    fn pipelines(&mut self) {
        let mut id = 1000;
        let mut stage = |code: &str, name: &str, sort: i64, kind: StageKind| {
            id += 1;
            SimStage {
                id,
                code: code.into(),
                name: name.into(),
                sort,
                kind,
            }
        };
        let general = vec![
            stage("NEW", "Новая", 10, StageKind::Open),
            stage("PREPARATION", "Подготовка документов", 20, StageKind::Open),
            stage(
                "PREPAYMENT_INVOICE",
                "Счёт на предоплату",
                30,
                StageKind::Open,
            ),
            stage("EXECUTING", "В работе", 40, StageKind::Open),
            stage("WON", "Сделка успешна", 50, StageKind::Won),
            stage("LOSE", "Сделка провалена", 60, StageKind::Lost),
        ];
        let repeat = vec![
            stage("C1:NEW", "Новый заказ", 10, StageKind::Open),
            stage("C1:PREPARATION", "Согласование", 20, StageKind::Open),
            stage("C1:WON", "Заказ выполнен", 30, StageKind::Won),
            stage("C1:LOSE", "Отказ", 40, StageKind::Lost),
        ];
        self.w.pipelines = vec![
            SimPipeline {
                id: 0,
                name: "Продажи".into(),
                is_default: true,
                stages: general,
            },
            SimPipeline {
                id: 1,
                name: "Повторные продажи".into(),
                is_default: false,
                stages: repeat,
            },
        ];
        // Keep entity ids clear of stage ids.
        self.w.reserve_id(10_000);
    }

    fn companies_and_contacts(&mut self, scale: u32) {
        let managers = self.managers();
        for _ in 0..40 * scale {
            let id = self.w.next_id();
            let digits = self.phone_digits();
            let phone = self.typed(&digits);
            let title = format!(
                "ООО «{} {}»",
                self.pick(COMPANY_WORDS),
                self.rng.gen_range(1..100)
            );
            let created = self.ago_days(200, 900);
            let resp = *managers.choose(&mut self.rng).expect("managers exist");
            self.w.companies.insert(
                id,
                SimCompany {
                    id,
                    title,
                    phones: vec![phone],
                    emails: vec![format!("office{id}@example.ru")],
                    responsible_id: resp,
                    tags: vec![],
                    created_at: created,
                    updated_at: created + Duration::days(self.rng.gen_range(0..100)),
                },
            );
        }
        let company_ids: Vec<u64> = self.w.companies.keys().copied().collect();
        for _ in 0..200 * scale {
            let id = self.w.next_id();
            let digits = self.phone_digits();
            let mut phones = vec![self.typed(&digits)];
            if self.rng.gen_bool(0.1) {
                let second = self.phone_digits();
                phones.push(self.typed(&second));
            }
            let created = self.ago_days(30, 900);
            let resp = *managers.choose(&mut self.rng).expect("managers exist");
            let company_id = if self.rng.gen_bool(0.4) {
                company_ids.choose(&mut self.rng).copied()
            } else {
                None
            };
            let first = self.pick(FIRST_NAMES).to_string();
            let last = self.pick(LAST_NAMES).to_string();
            self.w.contacts.insert(
                id,
                SimContact {
                    id,
                    first_name: first,
                    last_name: last,
                    phones,
                    emails: vec![format!("client{id}@example.ru")],
                    company_id,
                    responsible_id: resp,
                    tags: vec![],
                    created_at: created,
                    updated_at: created + Duration::days(self.rng.gen_range(0..30)),
                },
            );
        }
    }

    fn profile(&mut self, i: usize) -> Profile {
        // The first contacts get fixed profiles so that every scenario exists even at scale 1.
        match i % 100 {
            0..=12 => Profile::Top,
            13..=19 => Profile::Dormant,
            20..=27 => Profile::OneTime,
            28..=37 => Profile::Zero,
            _ => Profile::Regular,
        }
    }

    fn deals_and_tasks(&mut self, scale: u32) {
        let contacts: Vec<(u64, Option<u64>, u64)> = self
            .w
            .contacts
            .values()
            .map(|c| (c.id, c.company_id, c.responsible_id))
            .collect();
        let target = 200 * scale as usize;
        let mut made = 0usize;
        let mut i = 0usize;
        while made < target {
            let (contact_id, company_id, resp) = contacts[i % contacts.len()];
            let profile = self.profile(i % contacts.len());
            i += 1;
            let deals_here = match profile {
                Profile::Top => 3,
                Profile::Regular => 1 + (i % 2),
                Profile::OneTime | Profile::Dormant => 1,
                Profile::Zero => 0,
            };
            for n in 0..deals_here {
                if made >= target {
                    break;
                }
                made += 1;
                self.deal(contact_id, company_id, resp, profile, n);
            }
            if i > contacts.len() * 8 {
                break; // every contact has had its share; stop rather than loop forever
            }
        }
    }

    fn deal(&mut self, contact_id: u64, company_id: Option<u64>, resp: u64, p: Profile, n: usize) {
        let id = self.w.next_id();
        let pipeline_id = if n > 0 { 1 } else { 0 };
        let (created, kind) = match p {
            Profile::Dormant => (self.ago_days(250, 600), StageKind::Won),
            Profile::OneTime => (self.ago_days(100, 150), StageKind::Won),
            _ => {
                let created = self.ago_days(0, 200);
                let roll = self.rng.gen_range(0..100);
                let kind = if roll < 35 {
                    StageKind::Won
                } else if roll < 55 {
                    StageKind::Lost
                } else {
                    StageKind::Open
                };
                (created, kind)
            }
        };
        let stages: Vec<SimStage> = self
            .w
            .pipeline(pipeline_id)
            .expect("pipeline exists")
            .stages
            .iter()
            .filter(|s| s.kind == kind)
            .cloned()
            .collect();
        let stage = stages.choose(&mut self.rng).expect("stage exists").clone();
        let closed_at = (kind != StageKind::Open).then(|| {
            let len = Duration::days(self.rng.gen_range(1..40));
            (created + len).min(self.now - Duration::hours(1))
        });
        let amount = match p {
            Profile::Top => self.rng.gen_range(300..3000) as f64 * 100.0,
            _ => self.rng.gen_range(50..600) as f64 * 100.0,
        };
        let updated = closed_at.unwrap_or(created + Duration::hours(self.rng.gen_range(1..72)));
        let source = self.pick(LEAD_SOURCES).to_string();
        self.w.deals.insert(
            id,
            SimDeal {
                id,
                title: format!("Сделка №{id}"),
                pipeline_id,
                stage_id: stage.id,
                amount,
                responsible_id: resp,
                contact_id: Some(contact_id),
                company_id,
                lead_id: None,
                source,
                tags: vec![],
                loss_reason: (kind == StageKind::Lost).then(|| "Дорого".to_string()),
                created_at: created,
                updated_at: updated.min(self.now),
                closed_at,
            },
        );
        // Tasks: most open deals have a next step, some have only overdue ones, some none.
        if kind == StageKind::Open {
            let roll = self.rng.gen_range(0..100);
            if roll < 60 {
                let due = self.now + Duration::hours(self.rng.gen_range(2..96));
                self.task(resp, Owner::Deal, id, "Позвонить клиенту", Some(due), false);
            } else if roll < 80 {
                let due = self.now - Duration::hours(self.rng.gen_range(2..24 * 10));
                self.task(resp, Owner::Deal, id, "Отправить КП", Some(due), false);
            } // else: an open deal without a next step
        }
        // Past work, completed.
        let done_at = created + Duration::hours(self.rng.gen_range(1..48));
        if done_at < self.now {
            self.task(
                resp,
                Owner::Deal,
                id,
                "Первичный звонок",
                Some(done_at),
                true,
            );
        }
    }

    fn task(
        &mut self,
        resp: u64,
        owner: Owner,
        owner_id: u64,
        title: &str,
        due: Option<Ts>,
        done: bool,
    ) {
        let id = self.w.next_id();
        let created =
            due.map_or(self.now, |d| d.min(self.now)) - Duration::hours(self.rng.gen_range(1..72));
        let head = self
            .w
            .users_with(Role::HeadOfSales)
            .next()
            .map_or(1, |u| u.id);
        self.w.tasks.insert(
            id,
            SimTask {
                id,
                title: title.to_string(),
                description: String::new(),
                responsible_id: resp,
                created_by: head,
                deadline: due,
                completed: done,
                result: done.then(|| "Сделано".to_string()),
                binding: Some((owner, owner_id)),
                created_at: created,
                updated_at: if done {
                    due.unwrap_or(created).min(self.now)
                } else {
                    created
                },
                closed_at: if done {
                    due.map(|d| d.min(self.now))
                } else {
                    None
                },
            },
        );
    }

    fn leads(&mut self, scale: u32) {
        let managers = self.managers();
        for i in 0..150 * scale as usize {
            let id = self.w.next_id();
            let digits = self.phone_digits();
            let phone = self.typed(&digits);
            let resp = *managers.choose(&mut self.rng).expect("managers exist");
            // Every tenth lead is fresh (the last two hours) and nobody has touched it yet.
            let fresh = i % 10 == 0;
            let created = if fresh {
                self.now - Duration::minutes(self.rng.gen_range(5..120))
            } else {
                self.ago_days(1, 60)
            };
            let status = if fresh {
                LeadStatus::New
            } else {
                match self.rng.gen_range(0..100) {
                    0..=49 => LeadStatus::Converted,
                    50..=69 => LeadStatus::Junk,
                    70..=84 => LeadStatus::InProcess,
                    _ => LeadStatus::New,
                }
            };
            let closed_at = matches!(status, LeadStatus::Converted | LeadStatus::Junk)
                .then(|| (created + Duration::hours(self.rng.gen_range(1..48))).min(self.now));
            let utm = if self.rng.gen_bool(0.6) {
                SimUtm {
                    source: Some(self.pick(UTM_SOURCES).to_string()),
                    medium: Some("cpc".into()),
                    campaign: Some(format!("campaign_{}", self.rng.gen_range(1..6))),
                }
            } else {
                SimUtm::default()
            };
            let first = self.pick(FIRST_NAMES).to_string();
            let source = self.pick(LEAD_SOURCES).to_string();
            self.w.leads.insert(
                id,
                SimLead {
                    id,
                    title: format!("Заявка от {first}"),
                    name: first,
                    phone: Some(phone),
                    email: None,
                    source,
                    status,
                    responsible_id: resp,
                    contact_id: None,
                    company_id: None,
                    utm,
                    created_at: created,
                    updated_at: closed_at.unwrap_or(created),
                    closed_at,
                },
            );
        }
    }

    fn activities(&mut self, scale: u32) {
        let deals: Vec<(u64, u64, Option<u64>, Ts)> = self
            .w
            .deals
            .values()
            .map(|d| (d.id, d.responsible_id, d.contact_id, d.created_at))
            .collect();
        if deals.is_empty() {
            return;
        }
        for _ in 0..400 * scale {
            let (deal_id, resp, contact_id, created) = deals[self.rng.gen_range(0..deals.len())];
            let phone = contact_id
                .and_then(|c| self.w.contacts.get(&c))
                .and_then(|c| c.phones.first().cloned());
            let id = self.w.next_id();
            let kind = match self.rng.gen_range(0..10) {
                0..=6 => ActivityType::Call,
                7..=8 => ActivityType::Email,
                _ => ActivityType::Meeting,
            };
            let span = (self.now - created).num_seconds().max(60);
            let start = created + Duration::seconds(self.rng.gen_range(0..span));
            let direction = if self.rng.gen_bool(0.5) {
                Dir::In
            } else {
                Dir::Out
            };
            let duration_s = if kind == ActivityType::Call && self.rng.gen_bool(0.8) {
                self.rng.gen_range(20..900)
            } else {
                0
            };
            self.w.activities.insert(
                id,
                SimActivity {
                    id,
                    kind,
                    direction,
                    subject: match kind {
                        ActivityType::Call => "Звонок".into(),
                        ActivityType::Email => "Письмо".into(),
                        ActivityType::Meeting => "Встреча".into(),
                    },
                    owner: (Owner::Deal, deal_id),
                    responsible_id: resp,
                    phone,
                    duration_s,
                    completed: true,
                    external_id: None,
                    start,
                    created_at: start,
                    updated_at: start,
                },
            );
        }
    }

    fn calls(&mut self, scale: u32) {
        let employees: Vec<(u64, u64)> =
            self.w.employees.iter().map(|e| (e.id, e.user_id)).collect();
        let contacts: Vec<(u64, String, u64)> = self
            .w
            .contacts
            .values()
            .filter_map(|c| Some((c.id, World::phone_key(c.phones.first()?), c.responsible_id)))
            .collect();
        let virtuals = ["74951234567", "74957654321", "78123334455"];
        for _ in 0..300 * scale {
            let id = self.w.next_id();
            let start = self.now - Duration::seconds(self.rng.gen_range(60..30 * 86_400));
            let unknown = self.rng.gen_bool(0.15);
            let (client_phone, resp) = if unknown {
                (self.phone_digits(), None)
            } else {
                let (_, p, r) = contacts[self.rng.gen_range(0..contacts.len())].clone();
                (p, Some(r))
            };
            let direction = if unknown || self.rng.gen_bool(0.6) {
                Dir::In
            } else {
                Dir::Out
            };
            let is_lost = self.rng.gen_bool(0.2);
            let employee_id = employees
                .iter()
                .find(|(_, u)| Some(*u) == resp)
                .or_else(|| employees.choose(&mut self.rng))
                .map(|(e, _)| *e);
            self.push_call(
                id,
                start,
                direction,
                is_lost,
                client_phone,
                virtuals[id as usize % 3],
                employee_id,
            );
        }
        self.three_unanswered(scale);
        // Most answered calls from known clients already reached the CRM timeline.
        let known: Vec<(u64, String, Ts, Dir, i64)> = self
            .w
            .calls
            .values()
            .filter(|c| !c.is_lost)
            .map(|c| (c.id, c.client_phone.clone(), c.start, c.direction, c.talk_s))
            .collect();
        // One phone index instead of a scan of every record per call: at scale 500 the scan
        // would cost 10^10 comparisons. Same precedence as `World::find_by_phone`.
        let mut index: std::collections::HashMap<String, (Owner, u64)> = Default::default();
        for l in self.w.leads.values() {
            if let Some(p) = &l.phone {
                index
                    .entry(World::phone_key(p))
                    .or_insert((Owner::Lead, l.id));
            }
        }
        for c in self.w.contacts.values() {
            for p in &c.phones {
                index
                    .entry(World::phone_key(p))
                    .or_insert((Owner::Contact, c.id));
            }
        }
        for c in self.w.companies.values() {
            for p in &c.phones {
                index
                    .entry(World::phone_key(p))
                    .or_insert((Owner::Company, c.id));
            }
        }
        for (call_id, phone, start, dir, talk) in known {
            if !self.rng.gen_bool(0.6) {
                continue;
            }
            let Some(&(owner, owner_id)) = index.get(&World::phone_key(&phone)) else {
                continue;
            };
            let resp = match owner {
                Owner::Contact => self.w.contacts[&owner_id].responsible_id,
                Owner::Company => self.w.companies[&owner_id].responsible_id,
                _ => continue,
            };
            let id = self.w.next_id();
            self.w.activities.insert(
                id,
                SimActivity {
                    id,
                    kind: ActivityType::Call,
                    direction: dir,
                    subject: "Звонок".into(),
                    owner: (owner, owner_id),
                    responsible_id: resp,
                    phone: Some(phone),
                    duration_s: talk,
                    completed: true,
                    external_id: Some(call_id.to_string()),
                    start,
                    created_at: start,
                    updated_at: start,
                },
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push_call(
        &mut self,
        id: u64,
        start: Ts,
        direction: Dir,
        is_lost: bool,
        client_phone: String,
        virtual_number: &str,
        employee_id: Option<u64>,
    ) {
        let talk_s = if is_lost {
            0
        } else {
            self.rng.gen_range(15..1200)
        };
        let utm = if direction == Dir::In && self.rng.gen_bool(0.5) {
            SimUtm {
                source: Some(self.pick(UTM_SOURCES).to_string()),
                medium: Some("cpc".into()),
                campaign: Some("calls".into()),
            }
        } else {
            SimUtm::default()
        };
        self.w.calls.insert(
            id,
            SimCall {
                id,
                start,
                direction,
                is_lost,
                talk_s,
                wait_s: self.rng.gen_range(2..40),
                client_phone,
                virtual_number: virtual_number.to_string(),
                employee_id,
                source: if direction == Dir::In {
                    "call_tracking".into()
                } else {
                    "va".into()
                },
                utm,
                has_record: !is_lost,
            },
        );
    }

    /// Clients of open deals that the manager called three times in a row without an answer.
    fn three_unanswered(&mut self, scale: u32) {
        let open: Vec<(u64, u64)> = self
            .w
            .deals
            .values()
            .filter(|d| {
                self.w
                    .pipeline(d.pipeline_id)
                    .and_then(|p| p.stages.iter().find(|s| s.id == d.stage_id))
                    .is_some_and(|s| s.kind == StageKind::Open)
            })
            .filter_map(|d| Some((d.contact_id?, d.responsible_id)))
            .take(3 * scale as usize)
            .collect();
        for (contact_id, resp) in open {
            let Some(phone) = self.w.contacts[&contact_id]
                .phones
                .first()
                .map(|p| World::phone_key(p))
            else {
                continue;
            };
            let employee_id = self
                .w
                .employees
                .iter()
                .find(|e| e.user_id == resp)
                .map(|e| e.id);
            for k in 0..3 {
                let id = self.w.next_id();
                let start = self.now - Duration::hours(72 - 24 * k)
                    + Duration::minutes(self.rng.gen_range(0..60));
                self.push_call(
                    id,
                    start,
                    Dir::Out,
                    true,
                    phone.clone(),
                    "74951234567",
                    employee_id,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn same_seed_same_world() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap();
        let a = serde_json::to_string(&generate(7, 1, at)).unwrap();
        let b = serde_json::to_string(&generate(7, 1, at)).unwrap();
        let c = serde_json::to_string(&generate(8, 1, at)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_scenario_is_planted() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap();
        let w = generate(1, 1, at);
        assert!(w.users_with(Role::HeadOfSales).count() == 1);
        assert!(w.users_with(Role::Reactivation).count() == 1);
        assert!(w.deals.len() >= 150, "deals: {}", w.deals.len());
        let open_without_task = w
            .deals
            .values()
            .filter(|d| {
                w.stage(d.stage_id)
                    .is_some_and(|(_, s)| s.kind == StageKind::Open)
            })
            .filter(|d| {
                !w.tasks
                    .values()
                    .any(|t| !t.completed && t.binding == Some((Owner::Deal, d.id)))
            })
            .count();
        assert!(open_without_task > 0);
        assert!(
            w.tasks
                .values()
                .any(|t| !t.completed && t.deadline.is_some_and(|d| d < at))
        );
        assert!(
            w.leads
                .values()
                .any(|l| l.status == LeadStatus::New && at - l.created_at < Duration::hours(2))
        );
        assert!(
            w.calls
                .values()
                .any(|c| c.is_lost && c.direction == Dir::In)
        );
        assert!(
            w.calls
                .values()
                .any(|c| w.find_by_phone(&c.client_phone).is_empty())
        );
        assert!(w.activities.values().any(|a| a.external_id.is_some()));
    }
}
