//! PNG charts for the reports, drawn in memory.
//!
//! Everything happens in a byte buffer: no files, and no system fonts — the DejaVu Sans
//! faces are compiled in, so a bare container renders Cyrillic labels and `₽` the same as a
//! desktop does. The functions are pure: figures in, PNG bytes out.

use std::sync::OnceLock;

use chrono::NaiveDate;
use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::config::Lang;
use crate::report::render;

/// One bar's slot on a category axis, in axis units. plotters formats custom key points only
/// on integer axes, so categories sit at multiples of this instead of at 0.0, 1.0, ….
const SLOT: i32 = 100;

/// Axis position of category `i`, saturating far beyond any chart's length.
fn slot(i: usize) -> i32 {
    i32::try_from(i)
        .unwrap_or(i32::MAX)
        .min(i32::MAX / SLOT - 1)
        * SLOT
}

/// Pixel size of every chart: wide enough for labels, and fills a phone screen held sideways
/// or a chat bubble held upright without being scaled down to illegibility.
pub(crate) const WIDTH: u32 = 900;
pub(crate) const HEIGHT: u32 = 500;

/// The family plotters falls back to for its own text (legend, axis labels), so registering
/// under this name covers every piece of text a chart draws.
const FONT: &str = "sans-serif";

/// More bars than this stop being readable at this height: the rest are summed into one.
const MAX_BARS: usize = 16;
/// Label lengths in characters; longer ones are cut with `…` so the plot keeps its width.
const MAX_LABEL_CHARS: usize = 30;
const MAX_TITLE_CHARS: usize = 64;

const TEXT: RGBColor = RGBColor(33, 37, 41);
const MUTED: RGBColor = RGBColor(108, 117, 125);
const GRID: RGBColor = RGBColor(228, 231, 235);
const AXIS: RGBColor = RGBColor(173, 181, 189);
const LEADS: RGBColor = RGBColor(120, 160, 225);
const WON: RGBColor = RGBColor(40, 150, 70);
const FUNNEL: RGBColor = RGBColor(70, 120, 200);
const MANAGERS: RGBColor = RGBColor(230, 140, 40);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ChartError {
    #[error("drawing the {chart} chart: {detail}")]
    Draw { chart: &'static str, detail: String },
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Daily trend, one entry per local day: (date, new leads, deals won). Leads are bars, won
/// deals a line over them; the x axis shows `dd.mm`.
// Long: one plotters drawing (axes, bars, legend, labels) in drawing order on one chart context.
pub(crate) fn trend_png(
    lang: Lang,
    title: &str,
    days: &[(NaiveDate, u64, u64)],
) -> Result<Vec<u8>, ChartError> {
    render("trend", |root| {
        if days.is_empty() {
            return no_data(root, lang, title);
        }
        let n = days.len();
        let top = days.iter().map(|&(_, l, w)| l.max(w)).max().unwrap_or(0);
        // Headroom above the tallest bar for the legend and the value labels.
        let y_top = headroom(top, 1.3);
        // Every `step`-th day is labelled: about a dozen `dd.mm` labels fit the width.
        let step = n.div_ceil(12);
        let ticks: Vec<i32> = (0..n).step_by(step).map(slot).collect();

        let mut chart = ChartBuilder::on(root)
            .caption(fit_title(root, title)?, title_font())
            .margin(20)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (-SLOT / 2..slot(n) - SLOT / 2).with_key_points(ticks),
                0u64..y_top,
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(AXIS)
            .y_labels(10)
            .label_style(font(15).color(&TEXT))
            .x_label_formatter(&|x| {
                usize::try_from(x / SLOT)
                    .ok()
                    .and_then(|i| days.get(i))
                    .map(|(d, _, _)| d.format("%d.%m").to_string())
                    .unwrap_or_default()
            })
            .y_label_formatter(&|v| render::int(*v as i64, lang))
            .draw()?;

        let (leads_label, won_label) = match lang {
            Lang::Ru => ("Новые лиды", "Выигранные сделки"),
            Lang::En => ("New leads", "Deals won"),
        };
        // Bars narrow a little with more days so neighbours never touch.
        // and at most ~50 px wide, so a week or a single day does not look like a wall.
        let half = (if n > 20 { SLOT * 2 / 5 } else { SLOT / 3 }).min(slot(n) * 3 / 80);
        chart
            .draw_series(days.iter().enumerate().map(|(i, &(_, leads, _))| {
                let x = slot(i);
                Rectangle::new([(x - half, 0), (x + half, leads)], LEADS.filled())
            }))?
            .label(leads_label)
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], LEADS.filled()));
        // Numbers over the bars only while they fit side by side.
        if n <= 14 {
            chart.draw_series(days.iter().enumerate().map(|(i, &(_, leads, _))| {
                EmptyElement::at((slot(i), leads))
                    + Text::new(
                        render::int(leads as i64, lang),
                        (0, -4),
                        font(14)
                            .color(&MUTED)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )
            }))?;
        }
        let won_points = days
            .iter()
            .enumerate()
            .map(|(i, &(_, _, won))| (slot(i), won));
        chart
            .draw_series(LineSeries::new(won_points.clone(), WON.stroke_width(3)))?
            .label(won_label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], WON.stroke_width(3)));
        // Dots keep a single day (or an isolated value) visible where a line has no length.
        if n <= 45 {
            chart.draw_series(won_points.map(|p| Circle::new(p, 4, WON.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(GRID)
            .label_font(font(15).color(&TEXT))
            .draw()?;
        Ok(())
    })
}

/// Funnel: stages in order with the number of deals that reached (or are in) each, as
/// horizontal bars, first stage on top. Each bar ends in its count and its share of the first
/// stage. Past [`MAX_BARS`] stages the tail is summed into one "others" bar.
pub(crate) fn funnel_png(
    lang: Lang,
    title: &str,
    stages: &[(String, u64)],
) -> Result<Vec<u8>, ChartError> {
    let rows: Vec<(String, f64)> = stages.iter().map(|(s, c)| (s.clone(), *c as f64)).collect();
    let folded = rows.len() > MAX_BARS;
    let rows = fold_tail(lang, rows);
    let first = rows.first().map(|r| r.1).unwrap_or(0.0);
    let values: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, &(_, c))| {
            let count = render::int(c as i64, lang);
            // A share of the first stage means nothing for a sum of several stages.
            if i == 0 || first <= 0.0 || (folded && i == rows.len() - 1) {
                count
            } else {
                format!("{count} ({:.0}\u{a0}%)", c / first * 100.0)
            }
        })
        .collect();
    render("funnel", |root| {
        hbars(root, lang, title, &rows, &values, FUNNEL)
    })
}

/// Revenue per manager (name, roubles) as horizontal bars, largest on top, each ending in the
/// sum (`12 345 ₽`). Past [`MAX_BARS`] managers the smallest are summed into "others".
pub(crate) fn managers_png(
    lang: Lang,
    title: &str,
    rows: &[(String, f64)],
) -> Result<Vec<u8>, ChartError> {
    let mut rows: Vec<(String, f64)> = rows
        .iter()
        .map(|(name, v)| (name.clone(), if v.is_finite() { *v } else { 0.0 }))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let rows = fold_tail(lang, rows);
    let values: Vec<String> = rows.iter().map(|r| render::money(r.1, lang)).collect();
    render("managers", |root| {
        hbars(root, lang, title, &rows, &values, MANAGERS)
    })
}

/// Keeps the first `MAX_BARS - 1` rows and sums the rest into one, when there are too many.
fn fold_tail(lang: Lang, mut rows: Vec<(String, f64)>) -> Vec<(String, f64)> {
    if rows.len() <= MAX_BARS {
        return rows;
    }
    let tail = rows.split_off(MAX_BARS - 1);
    let sum = tail.iter().map(|r| r.1).sum();
    let label = match lang {
        Lang::Ru => format!("прочие ({})", tail.len()),
        Lang::En => format!("others ({})", tail.len()),
    };
    rows.push((label, sum));
    rows
}

/// Horizontal bars with the labels on the left and `values` printed at the bar ends.
// Long: labels and values are measured, then drawn on one chart context; the measurements set
// the layout.
fn hbars(
    root: &Area<'_>,
    lang: Lang,
    title: &str,
    rows: &[(String, f64)],
    values: &[String],
    color: RGBColor,
) -> DrawResult {
    if rows.is_empty() {
        return no_data(root, lang, title);
    }
    let n = rows.len();
    // Smaller text once the bars get thin, so labels don't run into each other.
    let size = if n > 10 { 14 } else { 16 };
    // Labels take at most a third of the width; the bars need the rest.
    let max_label_w = WIDTH / 3 - 16;
    let labels = rows
        .iter()
        .map(|r| fit(root, &r.0, MAX_LABEL_CHARS, &font(size), max_label_w))
        .collect::<Result<Vec<_>, _>>()?;
    let label_w = labels
        .iter()
        .map(|l| root.estimate_text_size(l, &font(size)).map(|(w, _)| w))
        .try_fold(0, |acc, w| w.map(|w| acc.max(w)))?;
    let value_w = values
        .iter()
        .map(|v| root.estimate_text_size(v, &font(size)).map(|(w, _)| w))
        .try_fold(0, |acc, w| w.map(|w| acc.max(w)))?;
    // Negative values (refunds) would need an axis through the middle; they are drawn as empty
    // bars but keep their printed value.
    let max = rows.iter().map(|r| r.1.max(0.0)).fold(0.0, f64::max);
    let label_area = label_w + 16;
    // The widest value label must fit to the right of the longest bar.
    let plot_w = (WIDTH - 40 - label_area) as f64;
    let room = (value_w + 16) as f64 / plot_w;
    let x_top = if max > 0.0 {
        max / (1.0 - room.min(0.6))
    } else {
        1.0
    };
    // Row i is drawn at y = n-1-i so the first row sits on top.
    let y_of = |i: usize| slot(n - 1 - i);
    let ticks: Vec<i32> = (0..n).map(slot).collect();

    let mut chart = ChartBuilder::on(root)
        .caption(fit_title(root, title)?, title_font())
        .margin(20)
        .y_label_area_size(label_area)
        .build_cartesian_2d(
            0.0..x_top,
            (-SLOT / 2..slot(n) - SLOT / 2).with_key_points(ticks),
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .axis_style(AXIS)
        .y_label_style(font(size).color(&TEXT))
        .y_label_formatter(&|y| {
            usize::try_from(y / SLOT)
                .ok()
                .and_then(|k| n.checked_sub(1 + k))
                .and_then(|i| labels.get(i).cloned())
                .unwrap_or_default()
        })
        .draw()?;

    // Bars at most ~60 px thick: two managers should not look like two walls.
    let half = (SLOT * 9 / 25).min(slot(n) * 7 / 100);
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        let y = y_of(i);
        Rectangle::new([(0.0, y - half), (r.1.max(0.0), y + half)], color.filled())
    }))?;
    chart.draw_series(rows.iter().zip(values).enumerate().map(|(i, (r, v))| {
        let y = y_of(i);
        EmptyElement::at((r.1.max(0.0), y))
            + Text::new(
                v.clone(),
                (6, 0),
                font(size)
                    .color(&TEXT)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
    }))?;
    Ok(())
}

/// The title and a centred "no data": a report for an empty period still gets its picture,
/// which says so instead of an empty frame.
fn no_data(root: &Area<'_>, lang: Lang, title: &str) -> DrawResult {
    let text = match lang {
        Lang::Ru => "нет данных",
        Lang::En => "no data",
    };
    let (w, h) = (WIDTH as i32, HEIGHT as i32);
    root.draw(&Text::new(
        fit_title(root, title)?,
        (w / 2, 20),
        title_font()
            .color(&TEXT)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    root.draw(&Text::new(
        text,
        (w / 2, h / 2),
        font(28)
            .color(&MUTED)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    Ok(())
}

/// Draws on a white canvas of [`WIDTH`]×[`HEIGHT`] and encodes the result as PNG.
fn render(
    chart: &'static str,
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<Vec<u8>, ChartError> {
    let fail = |detail: String| ChartError::Draw { chart, detail };
    fonts().map_err(|e| fail(e.to_string()))?;
    let mut buf = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        draw(&root).map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&buf, WIDTH, HEIGHT, image::ColorType::Rgb8)
        .map_err(|e| fail(format!("encoding PNG: {e}")))?;
    Ok(png)
}

/// Registers the embedded faces with plotters once per process; its font table is global.
fn fonts() -> Result<(), &'static str> {
    static FONTS: OnceLock<Result<(), &'static str>> = OnceLock::new();
    *FONTS.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans font does not parse")?;
        plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
            .map_err(|_| "the embedded DejaVu Sans Bold font does not parse")?;
        Ok(())
    })
}

fn font(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().into()
}

fn title_font() -> TextStyle<'static> {
    // Built with the style from the start: `FontDesc::style` keeps the regular face's glyphs.
    (FONT, 24, FontStyle::Bold).into_font().color(&TEXT)
}

/// A y-axis top `factor` above `max` (at least 1: an all-zero series still gets an axis).
fn headroom(max: u64, factor: f64) -> u64 {
    ((max as f64 * factor).ceil() as u64).max(max.saturating_add(1))
}

/// [`clip`], then shortened further until it is at most `max_px` wide in `style`: a limit in
/// characters alone lets wide letters (Ш, Ж, capitals) run off the image.
fn fit(
    root: &Area<'_>,
    text: &str,
    max_chars: usize,
    style: &TextStyle<'_>,
    max_px: u32,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut s = clip(text, max_chars);
    while root.estimate_text_size(&s, style)?.0 > max_px {
        let mut kept: Vec<char> = s.trim_end_matches('…').chars().collect();
        if kept.len() <= 1 {
            break;
        }
        kept.pop();
        s = kept.into_iter().collect::<String>().trim_end().to_string() + "…";
    }
    Ok(s)
}

fn fit_title(root: &Area<'_>, title: &str) -> Result<String, Box<dyn std::error::Error>> {
    fit(root, title, MAX_TITLE_CHARS, &title_font(), WIDTH - 40)
}

/// One line of at most `max` characters: control characters (a newline in a CRM name) become
/// spaces, and a longer text is cut with `…`.
fn clip(s: &str, max: usize) -> String {
    let s: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.is_empty() {
        return "—".into();
    }
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

#[cfg(test)]
mod tests;
