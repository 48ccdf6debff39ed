use super::*;
use abc_xyz::{WonRow, monthly_sums};
use chrono::Utc;

fn deal(id: &str, sem: Semantics, amount: f64, created: Ts, closed: Option<Ts>) -> Deal {
    Deal {
        id: id.into(),
        title: id.into(),
        pipeline_id: "0".into(),
        stage_id: "S".into(),
        semantics: sem,
        amount,
        currency: "RUB".into(),
        responsible_id: Some("1".into()),
        contact_id: None,
        company_id: None,
        lead_id: None,
        source: None,
        tags: vec![],
        created_at: created,
        updated_at: created,
        closed_at: closed,
    }
}

#[test]
fn conversion_and_deal_length_by_hand() {
    let tz = chrono_tz::Europe::Moscow;
    let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let p = Period::day(day, tz);
    let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap();
    let s = Snapshot {
        users: vec![User {
            id: "1".into(),
            name: "Анна".into(),
            email: None,
            extension: None,
            active: true,
        }],
        deals: vec![
            // Won on the day after 3 days: counts.
            deal("a", Semantics::Won, 1000.0, at(20, 10), Some(at(23, 10))),
            // Won on the day after 10 days: counts.
            deal("b", Semantics::Won, 3000.0, at(13, 10), Some(at(23, 12))),
            // Lost on the day after 1 day: counts.
            deal("c", Semantics::Lost, 500.0, at(22, 10), Some(at(23, 9))),
            // Won the day before: does not count.
            deal("d", Semantics::Won, 9999.0, at(1, 10), Some(at(22, 10))),
            // Open, no task.
            deal("e", Semantics::Open, 10.0, at(23, 10), None),
        ],
        ..Snapshot::default()
    };
    let f = compute(&s, &p, at(24, 6), &BusinessCalendar::moscow_default());
    assert_eq!(f.deals_won, 2);
    assert_eq!(f.deals_lost, 1);
    assert_eq!(f.revenue, 4000.0);
    assert_eq!(
        f.conversion_pct.map(|x| (x * 100.0).round() / 100.0),
        Some(66.67)
    );
    assert_eq!(f.avg_deal_days, Some((3.0 + 10.0 + 1.0) / 3.0));
    assert_eq!(f.avg_check, Some(2000.0));
    assert_eq!(f.deals_created, 1);
    assert_eq!(f.deals_without_task, 1);
    assert_eq!(f.managers[0].won, 2);
}

#[test]
fn quantiles_are_nearest_rank() {
    let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
    assert_eq!(quantile(&v, 0.5), Some(5.0));
    assert_eq!(quantile(&v, 0.9), Some(9.0));
    assert_eq!(quantile(&[], 0.5), None);
}

fn lead(id: &str, phone: &str, created: Ts) -> Lead {
    Lead {
        id: id.into(),
        title: id.into(),
        status_id: "NEW".into(),
        semantics: Semantics::Open,
        responsible_id: Some("1".into()),
        source: Some("CALL".into()),
        phones: vec![phone.into()],
        emails: vec![],
        contact_id: None,
        company_id: None,
        amount: 0.0,
        utm: Utm::default(),
        created_at: created,
        updated_at: created,
        closed_at: None,
        deal_id: None,
    }
}

fn call(id: &str, phone: &str, dir: Direction, answered: bool, at: Ts) -> Call {
    Call {
        id: id.into(),
        provider: TelephonyKind::Comagic,
        started_at: at,
        direction: dir,
        answered,
        talk_s: if answered { 60 } else { 0 },
        wait_s: 0,
        client_phone: phone.into(),
        virtual_number: None,
        employee_id: Some("e1".into()),
        employee_name: Some("Анна".into()),
        recording_url: None,
        source: None,
        utm: Utm::default(),
    }
}

/// Reaction in business minutes (Mon–Fri 9–18 Moscow), by hand:
/// - lead a: Friday 27.11 17:30, called back Monday 30.11 09:45 → 30 + 45 = 75 min;
/// - lead b: Tuesday 01.12 10:00, called at 10:20 → 20 min;
/// - lead c: Tuesday 01.12 11:00, an activity on it at 13:00 → 120 min;
/// - lead d: Tuesday 01.12 12:00, never contacted → no reaction.
///
/// Over the period 27.11–01.12: median (nearest rank, 2nd of 3) 75, p90 (3rd) 120.
#[test]
fn reaction_time_in_business_minutes_by_hand() {
    let msk = |d: u32, h: u32, m: u32| {
        chrono_tz::Europe::Moscow
            .with_ymd_and_hms(2026, if d > 26 { 11 } else { 12 }, d, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    let dec = |d: u32, h: u32, m: u32| {
        chrono_tz::Europe::Moscow
            .with_ymd_and_hms(2026, 12, d, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    let s = Snapshot {
        leads: vec![
            lead("a", "+7 900 000-00-01", msk(27, 17, 30)),
            lead("b", "8 (900) 000-00-02", dec(1, 10, 0)),
            lead("c", "+79000000003", dec(1, 11, 0)),
            lead("d", "+79000000004", dec(1, 12, 0)),
        ],
        calls: vec![
            call("1", "79000000001", Direction::Out, true, msk(30, 9, 45)),
            call("2", "+79000000002", Direction::Out, false, dec(1, 10, 20)),
            // An incoming call from d does not count as a reaction.
            call("3", "+79000000004", Direction::In, false, dec(1, 12, 30)),
        ],
        activities: vec![Activity {
            id: "act".into(),
            kind: ActivityKind::Meeting,
            direction: None,
            subject: "встреча".into(),
            entity: Some(EntityRef::new(EntityKind::Lead, "c")),
            responsible_id: Some("1".into()),
            phone: None,
            duration_s: None,
            completed: true,
            external_id: None,
            started_at: dec(1, 13, 0),
            created_at: dec(1, 13, 0),
            updated_at: dec(1, 13, 0),
        }],
        ..Snapshot::default()
    };
    let p = Period::days(
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
        NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        chrono_tz::Europe::Moscow,
    );
    let cal = BusinessCalendar::moscow_default();
    let f = compute(&s, &p, dec(2, 9, 0), &cal);
    assert_eq!(f.leads_new, 4);
    assert_eq!(f.leads_reacted, 3);
    assert_eq!(f.reaction_median_min, Some(75.0));
    assert_eq!(f.reaction_p90_min, Some(120.0));
    // Calls: 2 out, 1 in missed and never called back.
    assert_eq!((f.calls_out, f.calls_in, f.calls_missed), (2, 1, 1));
    assert_eq!(f.calls_called_back, 0);
    assert_eq!(f.leads_by_source["CALL"], 4);
    assert_eq!(f.leads_by_channel["—"], 4);
}

/// ABC/XYZ over four months, by hand. Monthly revenue:
/// - k1: 100 100 100 100 → total 400, cv 0 → X; k2: 80 120 80 120 → total 400, cv 0.2 → Y;
/// - k3: 0 0 0 150 → 150, cv √3 → Z; k4: 10 10 10 20 → 50, cv ≈ 0.35 → Z.
///
/// Total 1000; sorted k1 400 (0 → 40 %) A, k2 400 (40 → 80 %) A, k3 150 (80 → 95 %) B,
/// k4 50 (95 → 100 %) C. A deal closed outside the months is ignored.
#[test]
fn abc_xyz_matrix_by_hand() {
    let tz = chrono_tz::Europe::Moscow;
    let months: Vec<NaiveDate> = (8..=11)
        .map(|m| NaiveDate::from_ymd_opt(2026, m, 1).unwrap())
        .collect();
    let at = |m: u32, d: u32| tz.with_ymd_and_hms(2026, m, d, 12, 0, 0).unwrap().to_utc();
    let mut won = Vec::new();
    let mut add = |client: &str, amounts: [f64; 4]| {
        for (i, a) in amounts.iter().enumerate() {
            if *a > 0.0 {
                won.push(WonRow {
                    client: client.into(),
                    closed_at: at(8 + i as u32, 15),
                    amount: *a,
                });
            }
        }
    };
    add("company:1", [100.0, 100.0, 100.0, 100.0]);
    add("company:2", [80.0, 120.0, 80.0, 120.0]);
    add("contact:3", [0.0, 0.0, 0.0, 150.0]);
    add("deal:4", [10.0, 10.0, 10.0, 20.0]);
    won.push(WonRow {
        client: "company:1".into(),
        closed_at: at(7, 31),
        amount: 1e6,
    });
    // 1 December 00:30 Moscow is still 30 November in UTC: months are local.
    won.push(WonRow {
        client: "company:1".into(),
        closed_at: tz.with_ymd_and_hms(2026, 12, 1, 0, 30, 0).unwrap().to_utc(),
        amount: 1e6,
    });
    let m = abc_xyz(&monthly_sums(&won, &months, tz), months.len());
    let class = |k: &str| {
        let c = m.clients.iter().find(|c| c.client == k).unwrap();
        (c.abc, c.xyz, c.revenue)
    };
    use abc::{Abc, Xyz};
    assert_eq!(class("company:1"), (Abc::A, Xyz::X, 400.0));
    assert_eq!(class("company:2"), (Abc::A, Xyz::Y, 400.0));
    assert_eq!(class("contact:3"), (Abc::B, Xyz::Z, 150.0));
    assert_eq!(class("deal:4"), (Abc::C, Xyz::Z, 50.0));
    assert_eq!(m.counts, [[1, 1, 0], [0, 0, 1], [0, 0, 1]]);
    assert_eq!(m.revenue[0], [400.0, 400.0, 0.0]);
    assert_eq!(m.revenue[1][2], 150.0);
    assert_eq!(m.months, 4);
    // Sorted by revenue, ties by key.
    assert_eq!(m.clients[0].client, "company:1");
}

/// Funnel of stages S1 < S2 < S3 then won, by hand: two deals open at S1, one at S2, one at
/// S3, one won, one lost. Reached: S1 6, S2 3, S3 2, won 1; step to step 50 %, 66.7 %, 50 %.
#[test]
fn funnel_by_hand() {
    let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let p = Period::day(day, chrono_tz::Europe::Moscow);
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
    let stage = |id: &str, sort: i64, sem: Semantics| Stage {
        id: id.into(),
        pipeline_id: "0".into(),
        name: format!("Этап {id}"),
        sort,
        semantics: sem,
    };
    let mut deals = Vec::new();
    for (id, st, sem) in [
        ("1", "S1", Semantics::Open),
        ("2", "S1", Semantics::Open),
        ("3", "S2", Semantics::Open),
        ("4", "S3", Semantics::Open),
        ("5", "WON", Semantics::Won),
        ("6", "LOSE", Semantics::Lost),
    ] {
        let mut d = deal(id, sem, 100.0, at, (sem != Semantics::Open).then_some(at));
        d.stage_id = st.into();
        deals.push(d);
    }
    // A deal of another pipeline and one created the day before are not in the funnel.
    let mut other = deal("7", Semantics::Open, 1.0, at, None);
    other.pipeline_id = "9".into();
    deals.push(other);
    deals.push(deal(
        "8",
        Semantics::Open,
        1.0,
        at - Duration::days(1),
        None,
    ));
    let s = Snapshot {
        stages: vec![
            stage("S1", 10, Semantics::Open),
            stage("S2", 20, Semantics::Open),
            stage("S3", 30, Semantics::Open),
            stage("WON", 40, Semantics::Won),
            stage("LOSE", 50, Semantics::Lost),
        ],
        deals,
        ..Snapshot::default()
    };
    let (pipeline, steps) = funnel(&s, &p).unwrap();
    assert_eq!(pipeline, "0");
    let reached: Vec<usize> = steps.iter().map(|s| s.reached).collect();
    assert_eq!(reached, [6, 3, 2, 1]);
    let pct: Vec<Option<f64>> = steps
        .iter()
        .map(|s| s.from_previous_pct.map(|x| (x * 10.0).round() / 10.0))
        .collect();
    assert_eq!(pct, [None, Some(50.0), Some(66.7), Some(50.0)]);
    assert_eq!(steps[3].stage, "Этап WON");
}

#[test]
fn plan_percent_is_month_revenue_over_plan() {
    let mut f = Figures {
        managers: vec![ManagerFigures {
            user_id: "1".into(),
            name: "Анна".into(),
            ..ManagerFigures::default()
        }],
        ..Figures::default()
    };
    let month = Figures {
        managers: vec![
            ManagerFigures {
                user_id: "1".into(),
                name: "Анна".into(),
                revenue: 4_000.0,
                ..ManagerFigures::default()
            },
            ManagerFigures {
                user_id: "2".into(),
                name: "Борис".into(),
                revenue: 1_500.0,
                ..ManagerFigures::default()
            },
        ],
        ..Figures::default()
    };
    let plans = BTreeMap::from([
        ("1".to_string(), 10_000.0),
        ("2".to_string(), 3_000.0),
        ("3".to_string(), 0.0),
    ]);
    apply_plans(&mut f, &month, &plans);
    assert_eq!(f.managers[0].plan_pct, Some(40.0));
    // Борис sold nothing today but has a plan: he gets a line with 50 %.
    let b = f.managers.iter().find(|m| m.user_id == "2").unwrap();
    assert_eq!((b.name.as_str(), b.plan_pct), ("Борис", Some(50.0)));
    assert!(f.managers.iter().all(|m| m.user_id != "3"));
}

#[test]
fn channel_is_utm_source_and_medium() {
    let mut l = lead("a", "+79000000001", Utc::now());
    assert_eq!(channel(&l), "—");
    l.utm.source = Some("yandex".into());
    assert_eq!(channel(&l), "yandex");
    l.utm.medium = Some(" cpc ".into());
    assert_eq!(channel(&l), "yandex / cpc");
}
