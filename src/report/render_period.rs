//! The weekly and monthly reports as Telegram HTML.
//!
//! Weekly: the week's figures against the week before, the funnel of the week's deals by stage,
//! open deals by stage now, and the managers ranked by revenue. Monthly: the month against the
//! month before, manager KPIs with plan %, and the ABC/XYZ matrix of clients over twelve months.

use std::collections::{BTreeMap, HashMap};

use super::metrics::{AbcXyz, Figures, FunnelStep, ManagerFigures, Period};
use super::render::{
    compact_money, delta, delta_money, esc, manager_table, money, num1, pct, pct0,
};
use super::tr;
use crate::config::Lang;
use crate::domain::Stage;
use crate::store::StageCount;

/// Everything the weekly report shows.
pub(crate) struct WeeklyInput<'a> {
    pub(crate) tenant_name: &'a str,
    pub(crate) lang: Lang,
    pub(crate) period: &'a Period,
    pub(crate) week: &'a Figures,
    pub(crate) previous: &'a Figures,
    pub(crate) funnel: Option<&'a [FunnelStep]>,
    pub(crate) open_by_stage: &'a [StageCount],
    pub(crate) stages: &'a [Stage],
}

/// Everything the monthly report shows.
pub(crate) struct MonthlyInput<'a> {
    pub(crate) tenant_name: &'a str,
    pub(crate) lang: Lang,
    pub(crate) period: &'a Period,
    pub(crate) month: &'a Figures,
    pub(crate) previous: &'a Figures,
    pub(crate) abc_xyz: &'a AbcXyz,
    /// `company:ID` / `contact:ID` → name, for the top clients.
    pub(crate) client_names: &'a BTreeMap<String, String>,
}

/// The lines every period report starts with: leads, calls, deals, revenue, conversion.
fn summary(lang: Lang, f: &Figures, p: &Figures, vs: &str) -> String {
    let mut s = format!("<i>▲▼ {vs}</i>\n");
    s.push_str(&format!(
        "<b>{}:</b> {} ({})\n",
        tr(lang, "Новые лиды", "New leads"),
        f.leads_new,
        delta(f.leads_new, p.leads_new)
    ));
    s.push_str(&format!(
        "<b>{}:</b> {} ({}) · {} {} · {} {}\n",
        tr(lang, "Звонки", "Calls"),
        f.calls_in + f.calls_out,
        delta(f.calls_in + f.calls_out, p.calls_in + p.calls_out),
        tr(lang, "пропущено", "missed"),
        f.calls_missed,
        tr(lang, "перезвонили", "called back"),
        f.calls_called_back
    ));
    s.push_str(&format!(
        "<b>{}:</b> {} {} · {} {} ({}) · {} {}\n",
        tr(lang, "Сделки", "Deals"),
        tr(lang, "создано", "created"),
        f.deals_created,
        tr(lang, "выиграно", "won"),
        f.deals_won,
        delta(f.deals_won, p.deals_won),
        tr(lang, "проиграно", "lost"),
        f.deals_lost
    ));
    s.push_str(&format!(
        "<b>{}:</b> {} ({}) · {} {}\n",
        tr(lang, "Выручка", "Revenue"),
        money(f.revenue, lang),
        delta_money(f.revenue, p.revenue, lang),
        tr(lang, "средний чек", "average check"),
        f.avg_check
            .map(|x| money(x, lang))
            .unwrap_or_else(|| "—".into())
    ));
    s.push_str(&format!(
        "<b>{}:</b> {} ({} {}) · {}: {} {}\n",
        tr(lang, "Конверсия", "Conversion"),
        pct(f.conversion_pct, lang),
        tr(lang, "было", "was"),
        pct(p.conversion_pct, lang),
        tr(lang, "длительность сделки", "deal length"),
        num1(f.avg_deal_days, lang),
        tr(lang, "дн.", "days")
    ));
    s.push_str(&format!(
        "<b>{}:</b> {} {} {}, p90 {}\n",
        tr(lang, "Реакция на лид", "Lead reaction"),
        tr(lang, "медиана", "median"),
        f.reaction_median_min
            .map(|m| format!("{m:.0}"))
            .unwrap_or_else(|| "—".into()),
        tr(lang, "мин", "min"),
        f.reaction_p90_min
            .map(|m| format!("{m:.0}"))
            .unwrap_or_else(|| "—".into()),
    ));
    s
}

/// Managers ranked by revenue: `1. Name — 12 345 ₽, won 3, conv. 60 %`.
fn ranking(lang: Lang, managers: &[ManagerFigures]) -> String {
    let mut ranked: Vec<&ManagerFigures> = managers.iter().collect();
    ranked.sort_by(|a, b| {
        b.revenue
            .total_cmp(&a.revenue)
            .then(b.won.cmp(&a.won))
            .then(a.name.cmp(&b.name))
    });
    let mut s = String::new();
    for (n, m) in ranked.iter().enumerate() {
        // Medals only for revenue: a podium of zeroes says nothing.
        let medal = match n {
            0 if m.revenue > 0.0 => "🥇",
            1 if m.revenue > 0.0 => "🥈",
            2 if m.revenue > 0.0 => "🥉",
            _ => "▫️",
        };
        let closed = m.won + m.lost;
        let conv = (closed > 0).then(|| m.won as f64 * 100.0 / closed as f64);
        s.push_str(&format!(
            "{medal} {}. {} — {} · {} {} · {} {}\n",
            n + 1,
            esc(&m.name),
            money(m.revenue, lang),
            tr(lang, "выиграно", "won"),
            m.won,
            tr(lang, "конв.", "conv."),
            pct0(conv)
        ));
    }
    s
}

/// A heading, the ranking and the table; nothing without managers.
fn managers_section(lang: Lang, heading: &str, managers: &[ManagerFigures]) -> String {
    if managers.is_empty() {
        return String::new();
    }
    format!(
        "<b>{heading}</b>\n{}{}",
        ranking(lang, managers),
        manager_table(managers, lang)
    )
}

/// The weekly report as Telegram HTML.
pub(crate) fn weekly_html(i: &WeeklyInput) -> String {
    let lang = i.lang;
    let mut s = format!(
        "<b>📅 {} — {}</b>\n<i>{} – {}</i>\n",
        tr(lang, "Недельный отчёт", "Weekly report"),
        esc(i.tenant_name),
        i.period.first_day.format("%d.%m"),
        i.period.last_day.format("%d.%m.%Y"),
    );
    s.push_str(&summary(
        lang,
        i.week,
        i.previous,
        tr(lang, "к прошлой неделе", "vs the week before"),
    ));
    s.push('\n');
    if let Some(steps) = i.funnel {
        s.push_str(&funnel_section(lang, steps));
    }
    if !i.open_by_stage.is_empty() {
        s.push_str(&open_by_stage_section(lang, i.open_by_stage, i.stages));
    }
    s.push_str(&managers_section(
        lang,
        tr(lang, "Рейтинг менеджеров", "Manager ranking"),
        &i.week.managers,
    ));
    s.push_str(&format!(
        "<b>{}:</b> {} {}, {} {} · {} {}\n",
        tr(lang, "Дисциплина сейчас", "Discipline now"),
        i.week.open_deals,
        tr(lang, "открытых сделок", "open deals"),
        i.week.deals_without_task,
        tr(lang, "без задачи", "without a task"),
        i.week.overdue_tasks,
        tr(lang, "просроченных задач", "overdue tasks"),
    ));
    s
}

/// The funnel of the week's deals: each step, the deals that reached it and the share of the
/// step before.
fn funnel_section(lang: Lang, steps: &[FunnelStep]) -> String {
    let mut s = format!(
        "<b>{}</b>\n<pre>",
        tr(lang, "Воронка сделок недели", "Funnel of the week's deals")
    );
    for st in steps {
        s.push_str(&format!(
            "{:<16} {:>5} {:>5}\n",
            esc(&clip(&st.stage, 16)),
            st.reached,
            st.from_previous_pct
                .map(|p| format!("{p:.0}%"))
                .unwrap_or_default()
        ));
    }
    s.push_str("</pre>\n");
    s
}

/// Open deals now by stage, in each pipeline's stage order (at most 30 rows): count and amount.
fn open_by_stage_section(lang: Lang, open_by_stage: &[StageCount], stages: &[Stage]) -> String {
    let names: HashMap<(&str, &str), (&str, i64)> = stages
        .iter()
        .map(|st| {
            (
                (st.pipeline_id.as_str(), st.id.as_str()),
                (st.name.as_str(), st.sort),
            )
        })
        .collect();
    let mut rows: Vec<(i64, String, &StageCount)> = open_by_stage
        .iter()
        .map(|c| {
            let (name, sort) = names
                .get(&(c.pipeline_id.as_str(), c.stage_id.as_str()))
                .copied()
                .unwrap_or((c.stage_id.as_str(), i64::MAX));
            (sort, name.to_string(), c)
        })
        .collect();
    rows.sort_by(|a, b| {
        a.2.pipeline_id
            .cmp(&b.2.pipeline_id)
            .then(a.0.cmp(&b.0))
            .then(a.1.cmp(&b.1))
    });
    let mut s = format!(
        "<b>{}</b>\n<pre>",
        tr(lang, "Открытые сделки по этапам", "Open deals by stage")
    );
    let mut pipeline = None;
    for (_, name, c) in rows.iter().take(30) {
        if pipeline.is_some_and(|p| p != c.pipeline_id.as_str()) {
            s.push('\n');
        }
        pipeline = Some(c.pipeline_id.as_str());
        s.push_str(&format!(
            "{:<16} {:>6} {:>7}\n",
            esc(&clip(name, 16)),
            c.deals,
            compact_money(c.amount, lang)
        ));
    }
    s.push_str("</pre>\n");
    s
}

/// `text` cut to `width` characters with `…`.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let cut: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

const ABC: [&str; 3] = ["A", "B", "C"];
const XYZ: [&str; 3] = ["X", "Y", "Z"];

/// The monthly report as Telegram HTML.
pub(crate) fn monthly_html(i: &MonthlyInput) -> String {
    let lang = i.lang;
    let month_name = month_name(i.period.first_day, lang);
    let mut s = format!(
        "<b>🗓 {} — {}</b>\n<i>{}</i>\n",
        tr(lang, "Месячный отчёт", "Monthly report"),
        esc(i.tenant_name),
        month_name
    );
    s.push_str(&summary(
        lang,
        i.month,
        i.previous,
        tr(lang, "к прошлому месяцу", "vs the month before"),
    ));
    s.push('\n');
    s.push_str(&managers_section(
        lang,
        tr(lang, "KPI менеджеров", "Manager KPIs"),
        &i.month.managers,
    ));
    s.push_str(&abc_xyz_section(lang, i.abc_xyz));
    s.push_str(&top_clients(lang, i.abc_xyz, i.client_names));
    s
}

/// The ABC/XYZ matrix: clients and revenue per cell, with a legend.
fn abc_xyz_section(lang: Lang, m: &AbcXyz) -> String {
    let mut s = format!(
        "\n<b>ABC/XYZ</b> <i>({} {}, {} {})</i>\n<pre>",
        m.clients.len(),
        tr(lang, "клиентов", "clients"),
        m.months,
        tr(lang, "мес.", "months"),
    );
    s.push_str(&format!(
        "{:<2}{:>11}{:>11}{:>11}\n",
        "", XYZ[0], XYZ[1], XYZ[2]
    ));
    for (a, label) in ABC.iter().enumerate() {
        s.push_str(&format!("{label:<2}"));
        for x in 0..3 {
            let cell = format!(
                "{} {}",
                m.counts[a][x],
                compact_money(m.revenue[a][x], lang)
            );
            s.push_str(&format!("{cell:>11}"));
        }
        s.push('\n');
    }
    s.push_str("</pre>\n");
    s.push_str(&format!(
        "<i>{}</i>\n",
        tr(
            lang,
            "A/B/C — 80/15/5 % выручки; X/Y/Z — разброс помесячной выручки ≤10 % / ≤25 % / больше",
            "A/B/C — 80/15/5 % of revenue; X/Y/Z — monthly revenue variation ≤10 % / ≤25 % / more",
        )
    ));
    s
}

/// The ten clients with the most revenue, with their class; nothing without clients.
fn top_clients(lang: Lang, m: &AbcXyz, client_names: &BTreeMap<String, String>) -> String {
    let top: Vec<String> = m
        .clients
        .iter()
        .take(10)
        .map(|c| {
            let name = client_names
                .get(&c.client)
                .cloned()
                .unwrap_or_else(|| c.client.clone());
            format!(
                "• {} — {} ({}{})",
                esc(&name),
                money(c.revenue, lang),
                ABC[c.abc as usize],
                XYZ[c.xyz as usize]
            )
        })
        .collect();
    if top.is_empty() {
        return String::new();
    }
    format!(
        "<b>{}</b>\n{}\n",
        tr(lang, "Топ клиентов", "Top clients"),
        top.join("\n")
    )
}

fn month_name(d: chrono::NaiveDate, lang: Lang) -> String {
    use chrono::Datelike;
    let i = d.month0() as usize;
    let name = match lang {
        Lang::Ru => [
            "январь",
            "февраль",
            "март",
            "апрель",
            "май",
            "июнь",
            "июль",
            "август",
            "сентябрь",
            "октябрь",
            "ноябрь",
            "декабрь",
        ][i],
        Lang::En => [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ][i],
    };
    format!("{name} {}", d.year())
}
