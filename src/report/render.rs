//! Rendering figures as Telegram HTML (the only markup Telegram's HTML mode accepts: `<b>`,
//! `<i>`, `<pre>`, no `<br>`) and as plain text for the terminal.

use super::metrics::ManagerFigures;
use crate::config::Lang;
pub(crate) use crate::ledger::ActionLine;
pub(crate) use crate::notify::telegram::escape_html as esc;

/// Strips tags and decodes the four entities: the terminal view of a Telegram HTML message.
pub(crate) fn to_plain(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// `12 345` (ru) or `12,345` (en).
pub(crate) fn int(n: i64, lang: Lang) -> String {
    let digits = n.unsigned_abs().to_string();
    let sep = match lang {
        Lang::Ru => '\u{a0}',
        Lang::En => ',',
    };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `12 345 ₽`.
pub fn money(x: f64, lang: Lang) -> String {
    format!("{}\u{a0}₽", int(x.round() as i64, lang))
}

/// A number with one decimal in the locale: `66,7` (ru) or `66.7` (en); `—` when absent.
pub(crate) fn num1(x: Option<f64>, lang: Lang) -> String {
    match x {
        Some(v) => {
            let s = format!("{v:.1}");
            match lang {
                Lang::Ru => s.replace('.', ","),
                Lang::En => s,
            }
        }
        None => "—".into(),
    }
}

/// `66,7 %` (ru) or `66.7 %` (en); `—` when absent.
pub(crate) fn pct(x: Option<f64>, lang: Lang) -> String {
    match x {
        Some(_) => format!("{}\u{a0}%", num1(x, lang)),
        None => "—".into(),
    }
}

/// `▲3`, `▼2` or `=` against a previous value.
pub(crate) fn delta(now: usize, before: usize) -> String {
    match now.cmp(&before) {
        std::cmp::Ordering::Greater => format!("▲{}", now - before),
        std::cmp::Ordering::Less => format!("▼{}", before - now),
        std::cmp::Ordering::Equal => "=".into(),
    }
}

/// `▲12 345 ₽` or `▼…` against a previous amount, compact.
pub(crate) fn delta_money(now: f64, before: f64, lang: Lang) -> String {
    let d = (now - before).round();
    if d > 0.0 {
        format!("▲{}", compact_money(d, lang))
    } else if d < 0.0 {
        format!("▼{}", compact_money(-d, lang))
    } else {
        "=".into()
    }
}

/// Money in at most about six characters, for tables on a phone: `950`, `345к`, `1,2М`.
pub(crate) fn compact_money(x: f64, lang: Lang) -> String {
    let (k, m, dec) = match lang {
        Lang::Ru => ("к", "М", ','),
        Lang::En => ("k", "M", '.'),
    };
    let a = x.abs();
    let sign = if x < 0.0 { "-" } else { "" };
    if a < 1_000.0 {
        format!("{sign}{}", a.round())
    } else if a < 1_000_000.0 {
        format!("{sign}{}{k}", (a / 1_000.0).round())
    } else if a < 10_000_000.0 {
        format!(
            "{sign}{}{m}",
            format!("{:.1}", a / 1_000_000.0).replace('.', &dec.to_string())
        )
    } else {
        format!("{sign}{}{m}", (a / 1_000_000.0).round())
    }
}

/// `95 %` or `—`.
pub(crate) fn pct0(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "—".into())
}

/// The per-manager table: a `<pre>` block no wider than a phone shows without wrapping (36
/// characters), with a legend.
/// Columns: calls (missed/called back), won, revenue, plan %, overdue tasks, deals without task.
pub(crate) fn manager_table(managers: &[ManagerFigures], lang: Lang) -> String {
    let (hn, hc, hw, hr, hp, ho, legend) = match lang {
        Lang::Ru => (
            "Менеджер",
            "Зв",
            "Вы",
            "Выруч",
            "План",
            "П/Б",
            "Зв — звонки, Вы — выиграно, П/Б — просрочено / сделок без задачи",
        ),
        Lang::En => (
            "Manager",
            "Cls",
            "Won",
            "Rev",
            "Plan",
            "O/N",
            "Cls — calls, O/N — overdue tasks / deals without a task",
        ),
    };
    let mut s = String::from("<pre>");
    s.push_str(&format!(
        "{:<10} {:>3} {:>3} {:>5} {:>4} {:>5}\n",
        hn, hc, hw, hr, hp, ho
    ));
    for m in managers {
        let name = short_name(&m.name, 10);
        s.push_str(&format!(
            "{:<10} {:>3} {:>3} {:>5} {:>4} {:>5}\n",
            esc(&name),
            m.calls_in + m.calls_out,
            m.won,
            compact_money(m.revenue, lang),
            pct0(m.plan_pct),
            format!("{}/{}", m.overdue_tasks, m.deals_without_task)
        ));
    }
    s.push_str("</pre>\n");
    s.push_str(&format!("<i>{legend}</i>\n"));
    s
}

/// A name cut to `width` characters: `Иванова Мария` → `Иванова М.`, else truncated with `…`.
pub(crate) fn short_name(name: &str, width: usize) -> String {
    let name = name.trim();
    if name.chars().count() <= width {
        return name.to_string();
    }
    // "сотрудник 1234" (a user the mirror has no name for) keeps its number whole: an initial
    // of it would name another employee.
    if let Some((word, number)) = name.rsplit_once(' ')
        && !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit())
    {
        let abbr: String = word.chars().take(4).collect();
        let candidate = format!("{abbr}. {number}");
        if candidate.chars().count() <= width {
            return candidate;
        }
        if number.chars().count() < width {
            return format!("№{number}");
        }
    }
    let mut words = name.split_whitespace();
    if let (Some(first), Some(second)) = (words.next(), words.next()) {
        let initial: String = second.chars().take(1).collect();
        let candidate = format!("{first} {initial}.");
        if candidate.chars().count() <= width {
            return candidate;
        }
    }
    let cut: String = name.chars().take(width - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Width of the manager table, in characters: what a phone shows of a `<pre>` block without
    /// wrapping (about 36 monospace characters on a 360 px wide screen).
    const TABLE_WIDTH: usize = 36;

    #[test]
    fn an_unnamed_employee_keeps_the_number_in_a_narrow_column() {
        assert_eq!(short_name("сотрудник 17", 10), "сотр. 17");
        assert_eq!(short_name("employee 1234", 10), "empl. 1234");
        assert_eq!(short_name("сотрудник 123456", 10), "№123456");
        assert_eq!(short_name("Анна Петрова", 10), "Анна П.");
    }

    #[test]
    fn numbers_follow_the_locale() {
        assert_eq!(int(12345, Lang::Ru), "12\u{a0}345");
        assert_eq!(int(1234567, Lang::En), "1,234,567");
        assert_eq!(int(-5, Lang::En), "-5");
        assert_eq!(money(12345.4, Lang::Ru), "12\u{a0}345\u{a0}₽");
        assert_eq!(pct(Some(200.0 / 3.0), Lang::Ru), "66,7\u{a0}%");
        assert_eq!(pct(Some(200.0 / 3.0), Lang::En), "66.7\u{a0}%");
        assert_eq!(num1(None, Lang::Ru), "—");
    }

    #[test]
    fn plain_text_drops_markup() {
        assert_eq!(to_plain("<b>a &lt;b&gt;</b> &amp; c"), "a <b> & c");
        assert_eq!(esc("a<b>&"), "a&lt;b&gt;&amp;");
    }

    #[test]
    fn manager_table_fits_a_phone() {
        let m = ManagerFigures {
            user_id: "1".into(),
            name: "Константинопольская Александра".into(),
            calls_in: 120,
            calls_out: 345,
            won: 17,
            revenue: 12_345_678.0,
            plan_pct: Some(123.4),
            overdue_tasks: 12,
            deals_without_task: 140,
            ..ManagerFigures::default()
        };
        for lang in [Lang::Ru, Lang::En] {
            let t = manager_table(std::slice::from_ref(&m), lang);
            let pre = t
                .split("<pre>")
                .nth(1)
                .unwrap()
                .split("</pre>")
                .next()
                .unwrap();
            for line in pre.lines() {
                assert!(line.chars().count() <= TABLE_WIDTH, "{line:?}");
            }
            assert!(pre.contains("Константи…"), "{pre}");
        }
        assert_eq!(short_name("Иванова Мария", 10), "Иванова М.");
        assert_eq!(short_name("Пётр", 10), "Пётр");
        assert_eq!(compact_money(12_345_678.0, Lang::Ru), "12М");
        assert_eq!(compact_money(1_234_567.0, Lang::Ru), "1,2М");
        assert_eq!(compact_money(1_234_567.0, Lang::En), "1.2M");
        assert_eq!(compact_money(345_100.0, Lang::En), "345k");
        assert_eq!(compact_money(950.0, Lang::Ru), "950");
    }
}
