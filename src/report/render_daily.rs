//! The daily report as Telegram HTML: the day's figures against the day before and the same
//! weekday a week before, the discipline state now, the managers, dozor's own actions and the
//! last sync, one section after another in the order the reader sees them.

use chrono::{Datelike, NaiveDate};

use super::metrics::{Figures, Period};
use super::render::{ActionLine, delta, delta_money, esc, manager_table, money, num1, pct};
use crate::config::Lang;

/// Dynamics against the previous day and the same weekday a week before: `▲3 ▼1`.
fn dyn2(now: usize, day_before: usize, week_before: usize) -> String {
    format!("{} {}", delta(now, day_before), delta(now, week_before))
}

fn weekday(d: NaiveDate, lang: Lang) -> &'static str {
    let i = d.weekday().num_days_from_monday() as usize;
    match lang {
        Lang::Ru => ["пн", "вт", "ср", "чт", "пт", "сб", "вс"][i],
        Lang::En => ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][i],
    }
}

/// Labels in the tenant's language.
struct L {
    title: &'static str,
    leads: &'static str,
    calls: &'static str,
    incoming: &'static str,
    outgoing: &'static str,
    missed: &'static str,
    called_back: &'static str,
    talk: &'static str,
    reaction: &'static str,
    median: &'static str,
    deals: &'static str,
    created: &'static str,
    won: &'static str,
    lost: &'static str,
    revenue: &'static str,
    avg_check: &'static str,
    conversion: &'static str,
    length: &'static str,
    days: &'static str,
    min: &'static str,
    discipline: &'static str,
    waiting_leads: &'static str,
    idle_clients: &'static str,
    open_deals: &'static str,
    no_task: &'static str,
    overdue: &'static str,
    managers: &'static str,
    vs: &'static str,
    actions: &'static str,
    would: &'static str,
    sync: &'static str,
    none: &'static str,
}

const RU: L = L {
    title: "Ежедневный отчёт",
    leads: "Новые лиды",
    calls: "Звонки",
    incoming: "входящие",
    outgoing: "исходящие",
    missed: "пропущено",
    called_back: "перезвонили",
    talk: "разговоры",
    reaction: "Реакция на лид",
    median: "медиана",
    deals: "Сделки",
    created: "создано",
    won: "выиграно",
    lost: "проиграно",
    revenue: "Выручка",
    avg_check: "средний чек",
    conversion: "Конверсия",
    length: "Средняя длительность сделки",
    days: "дн.",
    min: "мин",
    discipline: "Дисциплина сейчас",
    waiting_leads: "Лиды без реакции",
    idle_clients: "Клиенты без активности",
    open_deals: "открытых сделок",
    no_task: "без задачи",
    overdue: "просроченных задач",
    managers: "Менеджеры",
    vs: "к предыдущему дню и к",
    actions: "Действия dozor",
    would: "в теневом режиме",
    sync: "Синхронизация",
    none: "нет",
};

const EN: L = L {
    title: "Daily report",
    leads: "New leads",
    calls: "Calls",
    incoming: "in",
    outgoing: "out",
    missed: "missed",
    called_back: "called back",
    talk: "talk time",
    reaction: "Lead reaction",
    median: "median",
    deals: "Deals",
    created: "created",
    won: "won",
    lost: "lost",
    revenue: "Revenue",
    avg_check: "average check",
    conversion: "Conversion",
    length: "Average deal length",
    days: "days",
    min: "min",
    discipline: "Discipline now",
    waiting_leads: "Leads waiting for a reaction",
    idle_clients: "Clients with no activity",
    open_deals: "open deals",
    no_task: "without a task",
    overdue: "overdue tasks",
    managers: "Managers",
    vs: "vs the previous day and",
    actions: "dozor actions",
    would: "in shadow mode",
    sync: "Sync",
    none: "none",
};

fn labels(lang: Lang) -> &'static L {
    match lang {
        Lang::Ru => &RU,
        Lang::En => &EN,
    }
}

/// Everything a daily report shows.
pub(crate) struct DailyInput<'a> {
    pub(crate) tenant_name: &'a str,
    pub(crate) lang: Lang,
    pub(crate) period: &'a Period,
    pub(crate) today: &'a Figures,
    pub(crate) previous: &'a Figures,
    /// The same weekday a week earlier.
    pub(crate) week_ago: &'a Figures,
    pub(crate) actions: &'a [ActionLine],
    /// (source, ok, items, error)
    pub(crate) sync: &'a [(String, bool, i64, Option<String>)],
}

/// The daily report as Telegram HTML.
pub(crate) fn daily_html(i: &DailyInput) -> String {
    let l = labels(i.lang);
    let mut s = title(i, l);
    s.push_str(&leads(i, l));
    s.push_str(&calls(i, l));
    s.push_str(&deals(i, l));
    s.push_str(&discipline(i.today, l));
    s.push('\n');
    if !i.today.managers.is_empty() {
        s.push_str(&format!("<b>{}</b>\n", l.managers));
        s.push_str(&manager_table(&i.today.managers, i.lang));
    }
    s.push_str(&actions(i.actions, l));
    s.push_str(&sync(i.sync, l));
    s
}

/// The tenant and the day, and what the ▲▼ compare with.
fn title(i: &DailyInput, l: &L) -> String {
    let day = i.period.first_day;
    let week_day = day - chrono::Duration::days(7);
    let mut s = format!(
        "<b>📊 {} — {}</b>\n<i>{} ({})</i>\n",
        l.title,
        esc(i.tenant_name),
        day.format("%d.%m.%Y"),
        weekday(day, i.lang)
    );
    s.push_str(&format!(
        "<i>▲▼ {} {} {}</i>\n\n",
        l.vs,
        weekday(week_day, i.lang),
        week_day.format("%d.%m")
    ));
    s
}

/// New leads, by source and by advertising channel.
fn leads(i: &DailyInput, l: &L) -> String {
    let (f, p, w) = (i.today, i.previous, i.week_ago);
    let mut s = format!(
        "<b>{}:</b> {} ({})\n",
        l.leads,
        f.leads_new,
        dyn2(f.leads_new, p.leads_new, w.leads_new)
    );
    if !f.leads_by_source.is_empty() {
        let parts: Vec<String> = f
            .leads_by_source
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect();
        s.push_str(&format!("  {}\n", parts.join(" · ")));
    }
    let channels: Vec<String> = f
        .leads_by_channel
        .iter()
        .filter(|(k, _)| k.as_str() != "—")
        .map(|(k, v)| format!("{} {v}", esc(k)))
        .collect();
    if !channels.is_empty() {
        s.push_str(&format!("  UTM: {}\n", channels.join(" · ")));
    }
    s
}

/// Calls in, out, missed and called back, talk time, and the reaction to new leads.
fn calls(i: &DailyInput, l: &L) -> String {
    let (f, p, w) = (i.today, i.previous, i.week_ago);
    let mut s = format!(
        "<b>{}:</b> {} {} / {} {} ({}) · {} {} ({}) · {} {} · {} {} {}\n",
        l.calls,
        f.calls_in,
        l.incoming,
        f.calls_out,
        l.outgoing,
        dyn2(
            f.calls_in + f.calls_out,
            p.calls_in + p.calls_out,
            w.calls_in + w.calls_out
        ),
        l.missed,
        f.calls_missed,
        dyn2(f.calls_missed, p.calls_missed, w.calls_missed),
        l.called_back,
        f.calls_called_back,
        l.talk,
        f.talk_s / 60,
        l.min
    );
    s.push_str(&format!(
        "<b>{}:</b> {} {} {}, p90 {} {}\n",
        l.reaction,
        l.median,
        num1(f.reaction_median_min, i.lang),
        l.min,
        num1(f.reaction_p90_min, i.lang),
        l.min
    ));
    s
}

/// Deals created, won and lost, revenue and average check, conversion and deal length.
fn deals(i: &DailyInput, l: &L) -> String {
    let (f, p, w) = (i.today, i.previous, i.week_ago);
    let mut s = format!(
        "<b>{}:</b> {} {} · {} {} ({}) · {} {}\n",
        l.deals,
        l.created,
        f.deals_created,
        l.won,
        f.deals_won,
        dyn2(f.deals_won, p.deals_won, w.deals_won),
        l.lost,
        f.deals_lost
    );
    s.push_str(&format!(
        "<b>{}:</b> {} ({} {}) · {} {}\n",
        l.revenue,
        money(f.revenue, i.lang),
        delta_money(f.revenue, p.revenue, i.lang),
        delta_money(f.revenue, w.revenue, i.lang),
        l.avg_check,
        f.avg_check
            .map(|x| money(x, i.lang))
            .unwrap_or_else(|| "—".into())
    ));
    s.push_str(&format!(
        "<b>{}:</b> {} · {}: {} {}\n\n",
        l.conversion,
        pct(f.conversion_pct, i.lang),
        l.length,
        num1(f.avg_deal_days, i.lang),
        l.days
    ));
    s
}

/// The state now: open deals, deals without a task, overdue tasks, waiting leads, idle clients.
fn discipline(f: &Figures, l: &L) -> String {
    let mut s = format!(
        "<b>{}:</b> {} {}, {} {} · {} {}\n",
        l.discipline,
        f.open_deals,
        l.open_deals,
        f.deals_without_task,
        l.no_task,
        f.overdue_tasks,
        l.overdue
    );
    s.push_str(&format!(
        "{}: 🟨 {} · 🟥 {}\n",
        l.waiting_leads, f.leads_yellow, f.leads_red
    ));
    if !f.idle_clients.is_empty() {
        let shown: Vec<String> = f.idle_clients.iter().take(10).map(|n| esc(n)).collect();
        let more = f.idle_clients.len().saturating_sub(shown.len());
        s.push_str(&format!(
            "{} ({}): {}{}\n",
            l.idle_clients,
            f.idle_clients.len(),
            shown.join(", "),
            if more > 0 {
                format!(" … +{more}")
            } else {
                String::new()
            }
        ));
    }
    s
}

/// dozor's own actions of the day by rule: done, would have done in shadow mode, failed.
fn actions(actions: &[ActionLine], l: &L) -> String {
    let mut s = format!("<b>{}:</b>", l.actions);
    if actions.is_empty() {
        s.push_str(&format!(" {}\n", l.none));
        return s;
    }
    s.push('\n');
    for a in actions {
        s.push_str(&format!("  {} — {}", esc(&a.rule), a.done));
        if a.shadow > 0 {
            s.push_str(&format!(" (+{} {})", a.shadow, l.would));
        }
        if a.failed > 0 {
            s.push_str(&format!(" ⚠ {}", a.failed));
        }
        s.push('\n');
    }
    s
}

/// The last sync of each source: ok or not, and how many records it read; nothing without one.
fn sync(sync: &[(String, bool, i64, Option<String>)], l: &L) -> String {
    if sync.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = sync
        .iter()
        .map(|(src, ok, items, _)| {
            format!("{} {} ({})", esc(src), if *ok { "✓" } else { "✗" }, items)
        })
        .collect();
    format!("<b>{}:</b> {}\n", l.sync, parts.join(" · "))
}
