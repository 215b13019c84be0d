//! Events over time per tool as an SVG, written by hand: stacked bars, one colour per tool
//! (the busiest eight, the rest as "other tools"), time on x in UTC, events per bucket on y.
//! Tool names come from input: they are made terminal-safe (printable ASCII) and bounded, then
//! XML-escaped.

use std::fmt::Write as _;

use super::Summary;
use crate::{clock::rfc3339_micros, escape::terminal_safe};

const WIDTH: f64 = 960.0;
const PLOT_HEIGHT: f64 = 320.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 48.0;
/// Bars at most; the timeseries is widened to fit.
const MAX_BARS: usize = 192;
const SERIES_SHOWN: usize = 8;
/// Okabe-Ito: distinguishable with the common colour vision deficiencies.
const COLOURS: [&str; SERIES_SHOWN] = [
    "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#000000",
];
const OTHER_COLOUR: &str = "#999999";
const NS: u64 = 1_000_000_000;
/// Time between x ticks, seconds: the first that gives at most seven ticks.
const TICK_STEPS_S: [u64; 20] = [
    1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800,
    604_800, 1_209_600, 2_419_200, 31_536_000,
];

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// How much of a time the labels show, from the span they cover.
#[derive(Clone, Copy)]
enum Precision {
    Seconds,
    Minutes,
    Days,
}

impl Precision {
    fn of(span_s: u64, width_s: u64) -> Self {
        if width_s < 60 {
            Precision::Seconds
        } else if span_s > 180 * 86_400 {
            Precision::Days
        } else {
            Precision::Minutes
        }
    }
}

/// `MM-DD HH:MM` of a time, with seconds for short buckets, as a date for long spans.
fn label(ns: u64, precision: Precision) -> String {
    let t = rfc3339_micros(ns);
    match precision {
        Precision::Seconds => format!("{} {}", &t[5..10], &t[11..19]),
        Precision::Minutes => format!("{} {}", &t[5..10], &t[11..16]),
        Precision::Days => t[..10].to_string(),
    }
}

/// `1200`, `25k`, `1.5M`: y labels that fit the margin.
fn count_text(v: u64) -> String {
    match v {
        0..10_000 => v.to_string(),
        10_000..1_000_000 => format!("{}k", v / 1000),
        _ if v.is_multiple_of(1_000_000) => format!("{}M", v / 1_000_000),
        _ => format!("{:.1}M", v as f64 / 1e6),
    }
}

fn width_text(s: u64) -> String {
    match s {
        s if s.is_multiple_of(86_400) => format!("{} d", s / 86_400),
        s if s.is_multiple_of(3600) => format!("{} h", s / 3600),
        s if s.is_multiple_of(60) => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// A round step (1, 2 or 5 times a power of ten) for about `target` gridlines up to `max`.
fn nice_step(max: u64, target: u64) -> u64 {
    let raw = max.div_ceil(target.max(1)).max(1);
    let mut p = 1;
    while p * 10 <= raw {
        p *= 10;
    }
    [1, 2, 5, 10]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10 * p)
}

/// The SVG document.
pub fn svg(summary: &Summary) -> String {
    let ts = summary.timeseries.with_at_most(MAX_BARS);
    let shown: Vec<(String, usize)> = summary
        .tools
        .iter()
        .take(SERIES_SHOWN)
        .map(|t| (terminal_safe(&t.name, 40), t.series))
        .collect();
    let shown_series: Vec<usize> = shown.iter().map(|(_, s)| *s).collect();
    let bars = ts.len();
    // Counts per bar: the shown series, then the rest.
    let mut stacks: Vec<Vec<u64>> = vec![vec![0; shown.len() + 1]; bars];
    for series in 0..ts.series_count() {
        let slot = shown_series
            .iter()
            .position(|s| *s == series)
            .unwrap_or(shown.len());
        for (i, n) in ts.series(series).iter().enumerate() {
            stacks[i][slot] += u64::from(*n);
        }
    }
    let has_other = stacks.iter().any(|s| s[shown.len()] > 0);
    let legend: Vec<(String, &str)> = shown
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.clone(), COLOURS[i]))
        .chain(has_other.then(|| ("other tools".to_string(), OTHER_COLOUR)))
        .collect();
    let legend_rows = legend.len().div_ceil(4).max(1);
    let height = TOP + PLOT_HEIGHT + 56.0 + 22.0 * legend_rows as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let bottom = TOP + PLOT_HEIGHT;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" \
         font-size=\"12\">"
    );
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    let span_s = bars as u64 * ts.width_s();
    let precision = Precision::of(span_s, ts.width_s());
    let title = if summary.events == 0 {
        "No events".to_string()
    } else {
        let full = |ns: u64| {
            let t = rfc3339_micros(ns);
            format!("{} {}", &t[..10], &t[11..16])
        };
        format!(
            "{} events per {} by tool, {} to {} UTC",
            summary.events,
            width_text(ts.width_s()),
            full(ts.origin_ns()),
            full(ts.origin_ns().saturating_add(span_s * NS)),
        )
    };
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"28\" font-size=\"16\" font-weight=\"bold\">{}</text>",
        xml(&title)
    );
    let max = stacks
        .iter()
        .map(|s| s.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let step = nice_step(max, 5);
    let y_top = max.div_ceil(step) * step;
    let y = |v: u64| bottom - PLOT_HEIGHT * v as f64 / y_top as f64;
    // Grid and y labels.
    let mut v = 0;
    while v <= y_top {
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#dddddd\"/>\
             <text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{4}</text>",
            y(v),
            LEFT + plot_w,
            LEFT - 6.0,
            y(v) + 4.0,
            count_text(v)
        );
        v += step;
    }
    let _ = writeln!(
        out,
        "<text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">events per {}</text>",
        TOP + PLOT_HEIGHT / 2.0,
        width_text(ts.width_s())
    );
    // Bars.
    if bars > 0 {
        let bw = plot_w / bars as f64;
        for (i, stack) in stacks.iter().enumerate() {
            let x = LEFT + i as f64 * bw;
            let mut base = 0;
            for (slot, n) in stack.iter().enumerate() {
                if *n == 0 {
                    continue;
                }
                let colour = COLOURS
                    .get(slot)
                    .filter(|_| slot < shown.len())
                    .unwrap_or(&OTHER_COLOUR);
                let (y1, y0) = (y(base + n), y(base));
                let _ = writeln!(
                    out,
                    "<rect x=\"{x:.2}\" y=\"{y1:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{colour}\"/>",
                    (bw - if bw > 3.0 { 1.0 } else { 0.0 }).max(0.5),
                    y0 - y1
                );
                base += n;
            }
        }
        // X ticks on round times (whole minutes, hours, days), about six of them.
        let width_ns = ts.width_s() * NS;
        let start = ts.origin_ns();
        // Saturating: times come from input, up to the end of u64 nanoseconds (year 2554).
        let end = start.saturating_add(bars as u64 * width_ns);
        let step_s = TICK_STEPS_S
            .iter()
            .copied()
            .find(|s| *s * 7 >= span_s)
            .unwrap_or(span_s.max(1));
        let step = step_s * NS;
        let mut t = start.div_ceil(step) * step;
        while t <= end {
            let x = LEFT + (t - start) as f64 / width_ns as f64 * bw;
            // A label at the axis' end ends there rather than past the picture's edge.
            let anchor = if LEFT + plot_w - x < 48.0 {
                "end"
            } else {
                "middle"
            };
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{bottom}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#333333\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
                bottom + 5.0,
                bottom + 20.0,
                xml(&label(t, precision))
            );
            let Some(next) = t.checked_add(step) else {
                break;
            };
            t = next;
        }
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#333333\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"#333333\"/>",
        LEFT + plot_w
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time (UTC)</text>",
        LEFT + plot_w / 2.0,
        bottom + 38.0
    );
    // Legend.
    for (i, (name, colour)) in legend.iter().enumerate() {
        let x = LEFT + (i % 4) as f64 * (plot_w / 4.0);
        let ly = bottom + 56.0 + (i / 4) as f64 * 22.0;
        let _ = writeln!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>",
            ly - 10.0,
            x + 18.0,
            xml(name)
        );
    }
    out.push_str("</svg>\n");
    out
}
