//! The latency-against-fleet-size plot, as a small self-contained SVG.
//!
//! Both axes are logarithmic: fleet sizes go 1, 10, 100, 1000 and latencies span from well under
//! a millisecond to tens of milliseconds. A plotting library would be a heavy dependency for
//! four lines; SVG is text, and this writes it directly.

use std::fmt::Write as _;

/// One line of the plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend label.
    pub label: String,
    /// CSS colour.
    pub colour: &'static str,
    /// Dashed (for p99) or solid (for p50).
    pub dashed: bool,
    /// `(desks, milliseconds)` points, in order of desks.
    pub points: Vec<(f64, f64)>,
}

/// A target drawn as a short red bar: `(desks, milliseconds)`.
pub type Target = (f64, f64);

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 210.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// Renders the plot.
pub fn latency_vs_fleet(title: &str, series: &[Series], targets: &[Target]) -> String {
    let all_y: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(targets.iter().map(|t| t.1))
        .filter(|y| *y > 0.0)
        .collect();
    let all_x: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| *x > 0.0)
        .collect();
    let y_min = all_y.iter().copied().fold(f64::INFINITY, f64::min);
    let y_max = all_y.iter().copied().fold(0.0, f64::max);
    let (y_lo, y_hi) = if all_y.is_empty() {
        (-1.0, 2.0)
    } else {
        (
            y_min.log10().floor(),
            y_max.log10().ceil().max(y_min.log10().floor() + 1.0),
        )
    };
    let x_max = all_x.iter().copied().fold(1000.0, f64::max);
    let (x_lo, x_hi) = (0.0, x_max.log10().ceil().max(1.0));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |desks: f64| LEFT + (desks.max(1.0).log10() - x_lo) / (x_hi - x_lo) * plot_w;
    let y = |ms: f64| TOP + plot_h - (ms.max(1e-9).log10() - y_lo) / (y_hi - y_lo) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Horizontal grid: every decade labelled, 2 and 5 within it faint.
    for decade in (y_lo as i32)..=(y_hi as i32) {
        let base = 10f64.powi(decade);
        let gy = y(base);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#bbb"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            gy + 4.0,
            tick_label(base)
        );
        if decade < y_hi as i32 {
            for minor in [2.0, 5.0] {
                let my = y(base * minor);
                let _ = writeln!(
                    svg,
                    r##"<line x1="{LEFT}" y1="{my:.1}" x2="{:.1}" y2="{my:.1}" stroke="#eee"/>"##,
                    LEFT + plot_w
                );
            }
        }
    }
    // Vertical grid at each decade of desks.
    for decade in (x_lo as i32)..=(x_hi as i32) {
        let desks = 10f64.powi(decade);
        let gx = x(desks);
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{gx:.1}" y="{:.1}" text-anchor="middle">{desks}</text>"#,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">desks watching the namespace (log scale)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">POST → every desk acked, ms (log scale)</text>"#,
        TOP + plot_h / 2.0
    );
    for (desks, ms) in targets {
        let (tx, ty) = (x(*desks), y(*ms));
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#d00" stroke-width="3"/>"##,
            tx - 12.0,
            tx + 12.0
        );
    }
    for line in series {
        let path: Vec<String> = line
            .points
            .iter()
            .map(|(d, ms)| format!("{:.1},{:.1}", x(*d), y(*ms)))
            .collect();
        let dash = if line.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            path.join(" "),
            line.colour
        );
        for (d, ms) in &line.points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
                x(*d),
                y(*ms),
                line.colour
            );
        }
    }
    // Legend.
    let legend_x = LEFT + plot_w + 16.0;
    for (n, line) in series.iter().enumerate() {
        let ly = TOP + 10.0 + n as f64 * 22.0;
        let dash = if line.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
            legend_x + 28.0,
            line.colour
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            legend_x + 36.0,
            ly + 4.0,
            escape(&line.label)
        );
    }
    if !targets.is_empty() {
        let ly = TOP + 10.0 + series.len() as f64 * 22.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{legend_x:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="#d00" stroke-width="3"/>"##,
            legend_x + 28.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">p99 target</text>"#,
            legend_x + 36.0,
            ly + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn tick_label(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_svg_with_every_series_and_target() {
        let series = vec![
            Series {
                label: "bonker-broker p50".to_owned(),
                colour: "#1f77b4",
                dashed: false,
                points: vec![(1.0, 0.5), (10.0, 1.2), (100.0, 4.0), (1000.0, 40.0)],
            },
            Series {
                label: "mosquitto p99 <x>".to_owned(),
                colour: "#ff7f0e",
                dashed: true,
                points: vec![(1.0, 0.9), (1000.0, 60.0)],
            },
        ];
        let svg = latency_vs_fleet("Closed loop", &series, &[(100.0, 10.0), (1000.0, 50.0)]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains("mosquitto p99 &lt;x&gt;"));
        assert!(svg.contains("p99 target"));
        // The y axis spans 0.1 ms to 100 ms: decades labelled.
        assert!(svg.contains(">0.1</text>"));
        assert!(svg.contains(">100</text>"));
    }

    #[test]
    fn an_empty_plot_still_renders() {
        let svg = latency_vs_fleet("nothing", &[], &[]);
        assert!(svg.contains("</svg>"));
    }
}
