//! The HTML page of a `DiffReport`: one file with inline CSS and inline SVG, no script,
//! no link, no URL, so that it opens anywhere (a mail attachment, an air-gapped host)
//! and fetches nothing. The numbers are those of `DiffReport::terminal_table`.

use std::fmt::Write as _;

use super::report::{DiffReport, LatencyHistogram, RouteStats, LATENCY_BOUNDS_MS};
use super::DiffOutcome;

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}\
table{border-collapse:collapse;margin:8px 0 16px}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th.route,td.text{text-align:left}\
thead th{background:#f2f2f2}\
td.bad{background:#fde8e8}\
section{border-top:2px solid #ddd;margin-top:24px}\
code{font-size:13px}\
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}";

const PROD_COLOR: &str = "#3b6fb6";
const SHADOW_COLOR: &str = "#e08a2c";

pub(super) fn render(report: &DiffReport) -> String {
    let mut h = String::with_capacity(16 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<title>shadowtap: production vs shadow</title><style>");
    h.push_str(CSS);
    h.push_str("</style></head><body>\n<h1>Production vs shadow responses</h1>\n");
    h.push_str("<table id=\"summary\"><thead><tr><th class=\"route\">route</th>");
    for o in DiffOutcome::ALL {
        let _ = write!(h, "<th>{}</th>", o.label());
    }
    h.push_str("</tr></thead><tbody>\n");
    for (route, stats) in report.routes() {
        counts_row(&mut h, route, stats);
    }
    h.push_str("</tbody></table>\n");
    for (i, (route, stats)) in report.routes().enumerate() {
        let _ = writeln!(
            h,
            "<section id=\"route-{i}\"><h2><code>{}</code></h2>",
            esc(route)
        );
        let top = stats.top_fields(report.config().top_fields);
        if top.is_empty() {
            h.push_str("<p>No differing fields.</p>\n");
        } else {
            h.push_str("<table class=\"fields\"><thead><tr><th class=\"route\">field</th><th>pairs</th><th class=\"route\">example (production → shadow)</th></tr></thead><tbody>\n");
            for (path, f) in top {
                let _ = writeln!(
                    h,
                    "<tr><td class=\"text\"><code>{}</code></td><td>{}</td><td class=\"text\"><code>{}</code></td></tr>",
                    esc(path),
                    f.count,
                    esc(&f.example)
                );
            }
            h.push_str("</tbody></table>\n");
        }
        h.push_str("<h3>Latency (share of pairs per bucket, ms)</h3>\n");
        let _ = writeln!(
            h,
            "<p class=\"legend\"><span style=\"background:{PROD_COLOR}\"></span>production ({} pairs, mean {}) \
             <span style=\"background:{SHADOW_COLOR}\"></span>shadow ({} pairs, mean {})</p>",
            stats.prod_latency.count(),
            mean(&stats.prod_latency),
            stats.shadow_latency.count(),
            mean(&stats.shadow_latency)
        );
        latency_svg(&mut h, &stats.prod_latency, &stats.shadow_latency);
        h.push_str("</section>\n");
    }
    h.push_str("</body></html>\n");
    h
}

fn counts_row(h: &mut String, route: &str, stats: &RouteStats) {
    let _ = write!(
        h,
        "<tr><th class=\"route\"><code>{}</code></th>",
        esc(route)
    );
    for o in DiffOutcome::ALL {
        let n = stats.count(o);
        let class = if n > 0 && o != DiffOutcome::Match {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = write!(h, "<td{class}>{n}</td>");
    }
    h.push_str("</tr>\n");
}

fn mean(hist: &LatencyHistogram) -> String {
    match hist.count() {
        0 => "-".into(),
        n => format!("{:.1} ms", hist.sum_ms / n as f64),
    }
}

/// Both distributions as paired bars per bucket, each side scaled to its own total so
/// the shapes compare whatever the counts.
fn latency_svg(h: &mut String, prod: &LatencyHistogram, shadow: &LatencyHistogram) {
    let buckets = LATENCY_BOUNDS_MS.len() + 1;
    let (w, ht, base, slot) = (40 * buckets + 20, 180, 150, 40);
    let share = |hist: &LatencyHistogram, i: usize| {
        let total = hist.count();
        if total == 0 {
            0.0
        } else {
            hist.counts.get(i).copied().unwrap_or(0) as f64 / total as f64
        }
    };
    let _ = write!(
        h,
        "<svg width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"latency distributions\">\
         <line x1=\"10\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#999\"/>",
        w - 10
    );
    for i in 0..buckets {
        let x = 10 + i * slot;
        for (side, hist, color) in [(0, prod, PROD_COLOR), (1, shadow, SHADOW_COLOR)] {
            let s = share(hist, i);
            let bar = (s * 130.0).round() as usize;
            let _ = write!(
                h,
                "<rect x=\"{}\" y=\"{}\" width=\"16\" height=\"{bar}\" fill=\"{color}\"><title>{:.0}%</title></rect>",
                x + 4 + side * 16,
                base - bar,
                s * 100.0
            );
        }
        let label = LATENCY_BOUNDS_MS.get(i).map_or_else(
            || "more".to_string(),
            |&b| {
                if b >= 1000.0 {
                    format!("≤{}s", b / 1000.0)
                } else {
                    format!("≤{b}")
                }
            },
        );
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{label}</text>",
            x + 20,
            base + 16
        );
    }
    h.push_str("</svg>\n");
}

/// HTML text escaping (also for attribute values).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}
