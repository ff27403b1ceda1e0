//! Charts as SVG written on the server: no script, no library, and every bar labelled
//! with its name and value, so nothing needs a legend.

use maud::{html, Markup, PreEscaped};

/// One bar: its name, its value, and the value as it should be written.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub shown: String,
}

const WIDTH: f64 = 640.0;
const LABEL_W: f64 = 170.0;
const VALUE_W: f64 = 90.0;
const ROW_H: f64 = 24.0;

/// Horizontal bars, largest scale first: name on the left, value on the right.
pub fn bars(title: &str, bars: &[Bar]) -> Markup {
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max);
    let height = ROW_H * bars.len().max(1) as f64 + 8.0;
    let span = WIDTH - LABEL_W - VALUE_W;
    html! {
        figure.chart {
            figcaption { (title) }
            @if bars.is_empty() {
                p.empty { "Nothing in this period." }
            } @else {
                svg viewBox={"0 0 " (WIDTH) " " (height)} role="img" aria-label=(summary(title, bars)) {
                    @for (i, b) in bars.iter().enumerate() {
                        @let y = 4.0 + i as f64 * ROW_H;
                        @let w = if max > 0.0 { (b.value / max * span).max(1.0) } else { 1.0 };
                        text x=(LABEL_W - 8.0) y=(y + 16.0) text-anchor="end" { (b.label) }
                        rect.bar x=(LABEL_W) y=(y + 3.0) width=(fmt(w)) height=(ROW_H - 6.0) {
                            title { (b.label) ": " (b.shown) }
                        }
                        text x=(LABEL_W + w + 6.0) y=(y + 16.0) { (b.shown) }
                    }
                }
            }
        }
    }
}

/// One column of a column chart, split into labelled parts (e.g. completed, failed).
pub struct Column {
    pub label: String,
    pub parts: Vec<(&'static str, f64)>,
    pub shown: String,
}

/// Vertical columns over time, each stacked from its parts; the parts' names are written
/// in the caption next to their colour swatch, and each column carries its total.
pub fn columns(title: &str, parts: &[&'static str], cols: &[Column]) -> Markup {
    let max = cols
        .iter()
        .map(|c| c.parts.iter().map(|p| p.1).sum::<f64>())
        .fold(0.0, f64::max);
    let (h, top, bottom) = (180.0, 18.0, 22.0);
    let plot = h - top - bottom;
    // Room on both sides for the first and last columns' centred labels.
    let pad = 28.0;
    let slot = (WIDTH - 2.0 * pad) / cols.len().max(1) as f64;
    let every = (cols.len() / 8).max(1);
    html! {
        figure.chart {
            figcaption {
                (title)
                @if parts.len() > 1 {
                    @for (i, p) in parts.iter().enumerate() {
                        " " span class={"swatch part-" (i)} aria-hidden="true" {} " " (p)
                    }
                }
            }
            @if cols.iter().all(|c| c.parts.iter().all(|p| p.1 == 0.0)) {
                p.empty { "Nothing in this period." }
            } @else {
                svg viewBox={"0 0 " (WIDTH) " " (h)} role="img" aria-label=(title) {
                    @for (i, c) in cols.iter().enumerate() {
                        @let x = pad + i as f64 * slot;
                        @let total: f64 = c.parts.iter().map(|p| p.1).sum();
                        @let mut base = h - bottom;
                        @for (k, (name, v)) in c.parts.iter().enumerate() {
                            @let ph = if max > 0.0 { v / max * plot } else { 0.0 };
                            @let y = { base -= ph; base };
                            @if ph > 0.0 {
                                rect class={"part-" (k)} x=(fmt(x + slot * 0.15)) y=(fmt(y)) width=(fmt(slot * 0.7)) height=(fmt(ph)) {
                                    title { (c.label) ", " (name) ": " (v) }
                                }
                            }
                        }
                        @if total > 0.0 {
                            text.value x=(fmt(x + slot / 2.0)) y=(fmt(base - 4.0)) text-anchor="middle" { (c.shown) }
                        }
                        @if i % every == 0 {
                            text.axis x=(fmt(x + slot / 2.0)) y=(h - 6.0) text-anchor="middle" { (c.label) }
                        }
                    }
                }
            }
        }
    }
}

fn summary(title: &str, bars: &[Bar]) -> String {
    let parts: Vec<String> = bars
        .iter()
        .map(|b| format!("{} {}", b.label, b.shown))
        .collect();
    format!("{title}: {}", parts.join(", "))
}

fn fmt(v: f64) -> PreEscaped<String> {
    PreEscaped(format!("{v:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bar_is_written_with_its_name_and_value() {
        let svg = bars(
            "Spend",
            &[
                Bar {
                    label: "anyfast".into(),
                    value: 2.0,
                    shown: "$2.00".into(),
                },
                Bar {
                    label: "kkiai".into(),
                    value: 1.0,
                    shown: "$1.00".into(),
                },
            ],
        )
        .into_string();
        for text in ["anyfast", "$2.00", "kkiai", "$1.00"] {
            assert!(
                svg.contains(&format!(">{text}<")),
                "{text} missing in {svg}"
            );
        }
        assert!(svg.contains("aria-label=\"Spend: anyfast $2.00, kkiai $1.00\""));
    }
}
