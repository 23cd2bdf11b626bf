//! `loadgen report RESULT.json…`: one self-contained HTML page (no scripts, no external assets)
//! with inline SVG charts: the latency percentile spectrum (x = 1/(1−p) on a log axis, every
//! run overlaid), throughput over time and p99 over time, plus a summary table.
//!
//! Chart elements carry stable ids (`chart-spectrum`, `chart-throughput`, `chart-p99`) and one
//! `<polyline class="series">` per plotted series; the headless-browser test relies on them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::results::RunResult;

const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
/// Largest 1/(1−p) shown: p = 99.9999%.
const SPECTRUM_X_MAX: f64 = 1e6;

pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

pub struct Axis {
    pub label: String,
    pub log: bool,
    /// Explicit ticks (value, label); empty = automatic.
    pub ticks: Vec<(f64, String)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn nice_ticks(lo: f64, hi: f64, log: bool) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    if log {
        let mut e = lo.max(1e-9).log10().floor() as i32;
        while 10f64.powi(e) <= hi * 1.0001 && out.len() < 20 {
            let v = 10f64.powi(e);
            if v >= lo * 0.9999 {
                out.push((v, fmt_num(v)));
            }
            e += 1;
        }
        if out.len() < 2 {
            out = vec![(lo, fmt_num(lo)), (hi, fmt_num(hi))];
        }
        return out;
    }
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(mag * 10.0);
    let mut v = (lo / step).ceil() * step;
    while v <= hi + step * 1e-9 {
        out.push((v, fmt_num(v)));
        v += step;
    }
    out
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.3}G", v / 1e9).trim_end_matches('0').trim_end_matches('.').to_string() + ""
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A line chart as an inline `<svg>` element.
pub fn line_chart(id: &str, title: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    let (w, h) = (760.0, 360.0);
    let (ml, mr, mt, mb) = (70.0, 170.0, 30.0, 50.0);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(a, b)| a.is_finite() && b.is_finite() && (!x.log || *a > 0.0) && (!y.log || *b > 0.0))
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="{id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}">"#,
        t = esc(title)
    );
    let _ = write!(svg, r#"<text x="{}" y="18" font-size="15" font-weight="bold">{}</text>"#, ml, esc(title));
    if pts.is_empty() {
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="13">no data</text></svg>"#, ml + 20.0, h / 2.0);
        return svg;
    }
    let f = |v: f64, log: bool| if log { v.log10() } else { v };
    let mut x0 = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let mut x1 = pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let mut y0 = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut y1 = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if !y.log {
        y0 = y0.min(0.0);
    } else {
        y0 = 10f64.powf(y0.log10().floor());
        y1 = 10f64.powf(y1.log10().ceil());
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    if !x.ticks.is_empty() {
        x0 = x0.min(x.ticks[0].0);
        x1 = x1.max(x.ticks[x.ticks.len() - 1].0);
    }
    let (fx0, fx1, fy0, fy1) = (f(x0, x.log), f(x1, x.log), f(y0, y.log), f(y1, y.log));
    let px = |v: f64| ml + (f(v, x.log) - fx0) / (fx1 - fx0) * (w - ml - mr);
    let py = |v: f64| h - mb - (f(v, y.log) - fy0) / (fy1 - fy0) * (h - mt - mb);
    // grid + ticks
    let xt = if x.ticks.is_empty() { nice_ticks(x0, x1, x.log) } else { x.ticks.clone() };
    for (v, l) in xt.iter().filter(|(v, _)| *v >= x0 && *v <= x1) {
        let xx = px(*v);
        let _ = write!(
            svg,
            r##"<line x1="{xx:.1}" y1="{}" x2="{xx:.1}" y2="{}" stroke="#ddd"/><text x="{xx:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
            mt,
            h - mb,
            h - mb + 15.0,
            esc(l)
        );
    }
    for (v, l) in nice_ticks(y0, y1, y.log) {
        let yy = py(v);
        let _ = write!(
            svg,
            r##"<line x1="{ml}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            w - mr,
            ml - 5.0,
            yy + 4.0,
            esc(&l)
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{ml}" y="{mt}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        w - ml - mr,
        h - mt - mb
    );
    let _ = write!(svg, r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#, ml + (w - ml - mr) / 2.0, h - 12.0, esc(&x.label));
    let _ = write!(
        svg,
        r#"<text x="14" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"#,
        mt + (h - mt - mb) / 2.0,
        mt + (h - mt - mb) / 2.0,
        esc(&y.label)
    );
    for (i, s) in series.iter().enumerate() {
        let p: Vec<String> = s
            .points
            .iter()
            .filter(|(a, b)| a.is_finite() && b.is_finite() && (!x.log || *a > 0.0) && (!y.log || *b > 0.0))
            .map(|&(a, b)| format!("{:.1},{:.1}", px(a), py(b.max(y0))))
            .collect();
        let dash = if s.dashed { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = write!(
            svg,
            r#"<polyline class="series" data-name="{}" fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"><title>{}</title></polyline>"#,
            esc(&s.name),
            s.color,
            p.join(" "),
            esc(&s.name)
        );
        let ly = mt + 10.0 + i as f64 * 16.0;
        let lx = w - mr + 10.0;
        let _ = write!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}" font-size="11">{}</text>"#,
            lx + 20.0,
            s.color,
            lx + 25.0,
            ly + 4.0,
            esc(&truncate(&s.name, 24))
        );
    }
    svg.push_str("</svg>");
    svg
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

fn run_label(r: &RunResult, path: &Path) -> String {
    let file = path.file_stem().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{} · {}", r.workload.name, file)
}

/// Render the page.
pub fn render(runs: &[(PathBuf, RunResult)]) -> String {
    let mut spectrum = Vec::new();
    let mut thr = Vec::new();
    let mut p99 = Vec::new();
    for (i, (path, r)) in runs.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        // Rates of very short intervals (phase boundaries) are noise: plot whole-ish seconds.
        let ts: Vec<&crate::results::Second> = r
            .timeseries
            .iter()
            .scan(0.0f64, |prev, s| {
                let d = s.t_s - *prev;
                *prev = s.t_s;
                Some((d, s))
            })
            .filter(|(d, _)| *d >= 0.25)
            .map(|(_, s)| s)
            .collect();
        let name = run_label(r, path);
        let to_x = |pts: &Vec<(f64, f64)>| -> Vec<(f64, f64)> {
            pts.iter().map(|&(p, v)| ((1.0 / (1.0 - p / 100.0)).min(SPECTRUM_X_MAX), v / 1000.0)).collect()
        };
        spectrum.push(Series { name: format!("{name} publish"), color: c, dashed: false, points: to_x(&r.spectrum.publish) });
        if !r.spectrum.end_to_end.is_empty() {
            spectrum.push(Series { name: format!("{name} e2e"), color: c, dashed: true, points: to_x(&r.spectrum.end_to_end) });
        }
        thr.push(Series {
            name: format!("{name} publish"),
            color: c,
            dashed: false,
            points: ts.iter().map(|s| (s.t_s, s.publish_records_per_s)).collect(),
        });
        if r.timeseries.iter().any(|s| s.consume_records_per_s > 0.0) {
            thr.push(Series {
                name: format!("{name} consume"),
                color: c,
                dashed: true,
                points: ts.iter().map(|s| (s.t_s, s.consume_records_per_s)).collect(),
            });
        }
        p99.push(Series {
            name: format!("{name} publish p99"),
            color: c,
            dashed: false,
            points: ts.iter().filter(|s| s.publish_p99_us > 0.0).map(|s| (s.t_s, s.publish_p99_us / 1000.0)).collect(),
        });
        if r.timeseries.iter().any(|s| s.e2e_p99_us > 0.0) {
            p99.push(Series {
                name: format!("{name} e2e p99"),
                color: c,
                dashed: true,
                points: ts.iter().filter(|s| s.e2e_p99_us > 0.0).map(|s| (s.t_s, s.e2e_p99_us / 1000.0)).collect(),
            });
        }
    }
    let pct_ticks: Vec<(f64, String)> = [(1.0, "0%"), (10.0, "90%"), (100.0, "99%"), (1e3, "99.9%"), (1e4, "99.99%"), (1e5, "99.999%"), (1e6, "99.9999%")]
        .iter()
        .map(|(v, l)| (*v, l.to_string()))
        .collect();
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>loadgen report</title><style>");
    html.push_str("body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:13px;margin:12px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}.chart{display:block;margin:18px 0}.warn{color:#b00}");
    html.push_str("</style></head><body>\n<h1>loadgen report</h1>\n");
    let _ = writeln!(html, "<p>{} run(s). Latency is measured from each record's <em>intended</em> send time (open loop, coordinated-omission-correct). Max is plotted at 99.9999%.</p>", runs.len());
    html.push_str("<table id=\"summary\"><tr><th>run</th><th>target</th><th>complete</th><th>measured s</th><th>publish rec/s</th><th>MB/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>e2e p99 ms</th><th>events/day</th><th>commit</th></tr>\n");
    for (path, r) in runs {
        let l = &r.publish.latency_us;
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{} {} fsync={}</td><td class=\"{}\">{}</td><td>{:.1}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3e}</td><td class=\"l\">{}</td></tr>",
            esc(&run_label(r, path)),
            esc(&r.target.kind),
            esc(&r.target.bootstrap),
            esc(&r.target.fsync),
            if r.complete { "" } else { "warn" },
            if r.complete { "yes" } else { "NO" },
            r.duration_s,
            r.publish.records_per_s,
            r.publish.bytes_per_s / 1e6,
            r.publish.errors,
            l.p50 / 1e3,
            l.p99 / 1e3,
            l.p999 / 1e3,
            l.max / 1e3,
            r.end_to_end.latency_us.p99 / 1e3,
            r.projection.events_per_day,
            esc(&r.environment.git_commit.chars().take(12).collect::<String>())
        );
    }
    html.push_str("</table>\n");
    html.push_str(&line_chart(
        "chart-spectrum",
        "Latency by percentile (publish solid, end-to-end dashed)",
        &Axis { label: "percentile (x = 1/(1−p), log scale)".into(), log: true, ticks: pct_ticks },
        &Axis { label: "latency (ms, log scale)".into(), log: true, ticks: vec![] },
        &spectrum,
    ));
    html.push_str(&line_chart(
        "chart-throughput",
        "Throughput over time (publish solid, consume dashed)",
        &Axis { label: "time since start (s)".into(), log: false, ticks: vec![] },
        &Axis { label: "records/s".into(), log: false, ticks: vec![] },
        &thr,
    ));
    html.push_str(&line_chart(
        "chart-p99",
        "p99 latency per second (publish solid, end-to-end dashed)",
        &Axis { label: "time since start (s)".into(), log: false, ticks: vec![] },
        &Axis { label: "p99 (ms, log scale)".into(), log: true, ticks: vec![] },
        &p99,
    ));
    html.push_str("<h2>Environment</h2><table><tr><th>run</th><th>CPU</th><th>cores</th><th>memory GiB</th><th>kernel</th><th>disk MB/s</th><th>fdatasync p50 µs</th><th>loopback MB/s</th></tr>\n");
    for (path, r) in runs {
        let e = &r.environment;
        let c = r.calibration.as_ref();
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{:.1}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&run_label(r, path)),
            esc(&e.cpu_model),
            e.cores,
            e.memory_bytes as f64 / (1u64 << 30) as f64,
            esc(&e.kernel),
            c.map(|c| format!("{:.0}", c.disk_seq_write_bytes_per_s / 1e6)).unwrap_or_else(|| "–".into()),
            c.map(|c| format!("{:.0}", c.fdatasync_us.p50)).unwrap_or_else(|| "–".into()),
            c.map(|c| format!("{:.0}", c.loopback_bytes_per_s / 1e6)).unwrap_or_else(|| "–".into()),
        );
    }
    html.push_str("</table>\n");
    html.push_str(&search_tables(runs));
    html.push_str("</body></html>\n");
    html
}

/// The max-rate search trace of every run that searched: each trial's target, achieved rate,
/// p99 and verdict, then the confirmed answer and the latency at half of it.
pub fn search_tables(runs: &[(PathBuf, RunResult)]) -> String {
    let mut html = String::new();
    for (path, r) in runs {
        let Some(s) = &r.search else { continue };
        let _ = writeln!(
            html,
            "<h2 id=\"search\">Max-rate search: {}</h2><p>p99 bound {} ms; trials of {} s, acks counted up to {} s after the window; {}</p>",
            esc(&run_label(r, path)),
            trim(s.p99_bound_us / 1e3),
            trim(s.trial_seconds),
            trim(s.ack_grace_s),
            esc(&s.rule)
        );
        html.push_str("<table class=\"search\"><tr><th>#</th><th>stage</th><th>attempt</th><th>target rec/s</th><th>achieved rec/s</th><th>achieved %</th><th>p99 ms</th><th>unacked</th><th>trial</th><th>rate verdict</th></tr>\n");
        for (i, t) in s.trials.iter().enumerate() {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                i + 1,
                esc(&t.stage),
                t.attempt,
                t.target_rate,
                t.achieved_rate,
                100.0 * t.achieved_rate / t.target_rate.max(1e-9),
                fmt_num(t.p99_us / 1e3),
                t.unacknowledged,
                if t.ok { "pass" } else { "fail" },
                esc(t.verdict.as_deref().unwrap_or(""))
            );
        }
        html.push_str("</table>\n");
        let _ = writeln!(
            html,
            "<p>{}</p>",
            if s.confirmed {
                format!("max sustainable rate {:.0} rec/s = {:.3e} events/day (confirmed by a full-length run)", s.max_rate, s.max_rate * 86_400.0)
            } else {
                "no rate confirmed by a full-length run".into()
            }
        );
        if let Some(h) = &s.half_rate {
            let _ = writeln!(
                html,
                "<p>at half of it, {:.0} rec/s = {:.3e} events/day: publish p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms; end-to-end p99 {} ms</p>",
                h.target_rate,
                h.events_per_day,
                fmt_num(h.latency_us.p50 / 1e3),
                fmt_num(h.latency_us.p99 / 1e3),
                fmt_num(h.latency_us.p999 / 1e3),
                fmt_num(h.latency_us.max / 1e3),
                fmt_num(h.end_to_end_latency_us.p99 / 1e3)
            );
        }
    }
    html
}

/// Load result files and write the report.
pub fn report_files(files: &[PathBuf], out: &Path) -> Result<(), String> {
    let mut runs = Vec::new();
    for f in files {
        runs.push((f.clone(), RunResult::load(f)?));
    }
    let html = render(&runs);
    if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    std::fs::write(out, html).map_err(|e| format!("cannot write {}: {e}", out.display()))
}
