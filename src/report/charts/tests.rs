use super::*;

fn decode(png: &[u8]) -> image::RgbImage {
    image::load_from_memory(png).expect("a valid PNG").to_rgb8()
}

/// Right size, and something drawn on it: not one flat colour.
fn assert_drawn(png: &[u8]) -> image::RgbImage {
    let img = decode(png);
    assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
    let first = *img.get_pixel(0, 0);
    assert!(img.pixels().any(|p| *p != first), "a blank image");
    img
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 1).unwrap() + chrono::Duration::days(d as i64)
}

fn stages(names: &[&str]) -> Vec<(String, u64)> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), 100 / (i as u64 + 1)))
        .collect()
}

#[test]
fn trend_draws_normal_empty_and_edge_inputs() {
    let month: Vec<_> = (0..31)
        .map(|d| (day(d), (d as u64 * 7) % 23, d as u64 % 5))
        .collect();
    for lang in [Lang::Ru, Lang::En] {
        assert_drawn(&trend_png(lang, "Лиды и сделки", &month).unwrap());
        assert_drawn(&trend_png(lang, "Empty", &[]).unwrap());
        assert_drawn(&trend_png(lang, "One", &[(day(0), 3, 1)]).unwrap());
        assert_drawn(&trend_png(lang, "Zero", &[(day(0), 0, 0), (day(1), 0, 0)]).unwrap());
    }
    let huge: Vec<_> = (0..400)
        .map(|d| (day(d), u64::MAX / 4, u64::MAX / 8))
        .collect();
    assert_drawn(&trend_png(Lang::En, &"long title ".repeat(20), &huge).unwrap());
}

#[test]
fn funnel_draws_normal_empty_and_edge_inputs() {
    let normal = stages(&["Новая", "Квалификация", "Переговоры", "Договор", "Оплата"]);
    assert_drawn(&funnel_png(Lang::Ru, "Воронка", &normal).unwrap());
    assert_drawn(&funnel_png(Lang::En, "Funnel", &[]).unwrap());
    let zeros = vec![("A".to_string(), 0), ("B".to_string(), 0)];
    assert_drawn(&funnel_png(Lang::Ru, "Zero", &zeros).unwrap());
    let long = vec![(
        "Очень длинное название этапа воронки продаж, которое не влезет".repeat(3),
        5,
    )];
    assert_drawn(&funnel_png(Lang::Ru, "Long", &long).unwrap());
    let many: Vec<_> = (0..40).map(|i| (format!("Этап {i}"), 40 - i)).collect();
    assert_drawn(&funnel_png(Lang::En, "Many", &many).unwrap());
}

#[test]
fn managers_draws_normal_empty_and_edge_inputs() {
    let rows = vec![
        ("Иванова Мария".to_string(), 1_234_567.0),
        ("Петров Пётр".to_string(), 98_765.4),
        ("Smith".to_string(), 0.0),
    ];
    for lang in [Lang::Ru, Lang::En] {
        assert_drawn(&managers_png(lang, "Выручка", &rows).unwrap());
        assert_drawn(&managers_png(lang, "Выручка", &[]).unwrap());
    }
    let odd = vec![
        ("".to_string(), f64::NAN),
        ("Refund\nline".to_string(), -500.0),
        ("Inf".to_string(), f64::INFINITY),
    ];
    assert_drawn(&managers_png(Lang::En, "Odd", &odd).unwrap());
    let zeros = vec![("A".to_string(), 0.0)];
    assert_drawn(&managers_png(Lang::Ru, "Zero", &zeros).unwrap());
}

#[test]
fn many_rows_keep_the_top_and_sum_the_rest() {
    let rows: Vec<(String, f64)> = (1..=30).map(|i| (format!("m{i}"), i as f64)).collect();
    let folded = fold_tail(Lang::Ru, rows);
    assert_eq!(folded.len(), MAX_BARS);
    assert_eq!(folded[0], ("m1".to_string(), 1.0));
    assert_eq!(folded[MAX_BARS - 1].0, "прочие (15)");
    assert_eq!(folded[MAX_BARS - 1].1, (16..=30).sum::<i32>() as f64);
    let few: Vec<(String, f64)> = (0..MAX_BARS).map(|i| (i.to_string(), 1.0)).collect();
    assert_eq!(fold_tail(Lang::En, few).len(), MAX_BARS);
}

#[test]
fn long_labels_are_cut_on_one_line() {
    assert_eq!(clip("Иванова", 30), "Иванова");
    assert_eq!(clip("  ", 30), "—");
    assert_eq!(clip("a\nb", 30), "a b");
    let cut = clip(&"Я".repeat(100), 30);
    assert_eq!(cut.chars().count(), 30);
    assert!(cut.ends_with('…'));
}

#[test]
fn cyrillic_text_renders_as_glyphs() {
    // A missing glyph would draw as the same fallback box for every letter, leaving the
    // two charts identical; different letters must give different pixels.
    let a = funnel_png(Lang::Ru, "Воронка", &stages(&["Переговоры", "Договор"])).unwrap();
    let b = funnel_png(Lang::Ru, "Воронка", &stages(&["Квалификац", "Оплатаааа"])).unwrap();
    assert_ne!(assert_drawn(&a), assert_drawn(&b));
}

#[test]
fn rouble_sign_has_a_glyph() {
    let draw = |s: &'static str| {
        render("test", |root| {
            root.draw(&Text::new(s, (100, 100), font(40)))?;
            Ok(())
        })
        .unwrap()
    };
    // U+E000 is a private-use code point no font maps: it shows the fallback glyph.
    let missing = decode(&draw("\u{e000}"));
    assert_ne!(decode(&draw("₽")), missing);
    assert_ne!(decode(&draw("Ж")), missing);
}

/// Writes one sample of each chart to /tmp for a look by eye:
/// `cargo test --lib report::charts -- --ignored`.
#[test]
#[ignore]
fn write_samples() {
    let month: Vec<_> = (0..30)
        .map(|d| (day(d), 8 + (d as u64 * 7) % 13, (d as u64 * 3) % 6))
        .collect();
    let funnel = vec![
        ("Новая заявка".to_string(), 412),
        ("Квалификация".to_string(), 268),
        (
            "Переговоры с лицом, принимающим решение о закупке".to_string(),
            131,
        ),
        ("Договор".to_string(), 57),
        ("Оплата".to_string(), 41),
    ];
    let managers: Vec<(String, f64)> = (0..22)
        .map(|i| {
            (
                format!("Менеджер Фамилия-{i}"),
                2_500_000.0 / (i as f64 + 1.0),
            )
        })
        .collect();
    let out = [
        (
            "trend",
            trend_png(Lang::Ru, "Лиды и выигранные сделки, март", &month),
        ),
        ("funnel", funnel_png(Lang::Ru, "Воронка продаж", &funnel)),
        (
            "managers",
            managers_png(Lang::Ru, "Выручка по менеджерам", &managers),
        ),
        (
            "managers-en",
            managers_png(Lang::En, "Revenue by manager", &managers[..4]),
        ),
        (
            "empty",
            trend_png(Lang::Ru, "Лиды и выигранные сделки", &[]),
        ),
        (
            "trend-week",
            trend_png(Lang::En, "Leads and deals won", &month[..7]),
        ),
    ];
    for (name, png) in out {
        std::fs::write(format!("/tmp/chart-{name}.png"), png.unwrap()).unwrap();
    }
}
