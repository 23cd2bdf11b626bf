//! `loadgen report RESULT.json…` (or `--base … --new …`): one self-contained HTML page (no
//! scripts, no external assets) with inline SVG charts: the latency percentile spectrum (x =
//! 1/(1−p) on a log axis, every run overlaid), throughput and p99 over time (log y, so a 20 k
//! rec/s run stays readable beside a 2 M one), one panel per run with its own linear scale and
//! its phase boundaries, and tables: summary (target vs achieved, consume rate, send delay),
//! workload parameters, provenance/target identity, backlog drain, environment, and — with
//! `--base`/`--new` — what `loadgen compare` decided, each figure's interval drawn against the
//! threshold.
//!
//! Every run gets a unique key `R1`, `R2`, … used in all legends (never cut off); the run table
//! maps keys to the files. Chart elements carry stable ids (`chart-spectrum`,
//! `chart-throughput`, `chart-p99`, `chart-run-<k>`, `chart-compare`) and one `<polyline
//! class="series">` per plotted series; phase boundaries are `<line class="phase">`. The
//! headless-browser test relies on them.

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

/// A vertical marker on a chart (phase boundary): x, label, color.
pub struct Marker {
    pub x: f64,
    pub label: String,
    pub color: &'static str,
}

/// A line chart as an inline `<svg>` element.
pub fn line_chart(id: &str, title: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    line_chart_with(id, title, x, y, series, &[])
}

/// [`line_chart`] with vertical markers (phase boundaries).
pub fn line_chart_with(id: &str, title: &str, x: &Axis, y: &Axis, series: &[Series], markers: &[Marker]) -> String {
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
    // Phase boundaries before the first plotted point (setup, warmup) widen the x range.
    for m in markers.iter().filter(|m| m.x.is_finite() && (!x.log || m.x > 0.0)) {
        x0 = x0.min(m.x);
        x1 = x1.max(m.x);
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
    for (k, m) in markers.iter().enumerate().filter(|(_, m)| m.x >= x0 && m.x <= x1) {
        let xx = px(m.x);
        // Stagger labels so neighbouring boundaries do not overprint.
        let ly = mt + 12.0 + (k % 3) as f64 * 12.0;
        // Near the right edge the label goes left of the line, inside the plot.
        let near_right = xx > w - mr - 60.0;
        let _ = write!(
            svg,
            r##"<line class="phase" x1="{xx:.1}" y1="{mt}" x2="{xx:.1}" y2="{}" stroke="{}" stroke-dasharray="2 3"/><text x="{:.1}" y="{ly:.1}" font-size="10" fill="{}"{}>{}</text>"##,
            h - mb,
            m.color,
            if near_right { xx - 3.0 } else { xx + 3.0 },
            m.color,
            if near_right { r#" text-anchor="end""# } else { "" },
            esc(&m.label)
        );
    }
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
            esc(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Unique labels for the runs' files: the shortest trailing part of the path (1, 2, … components)
/// that tells them apart (the full path if nothing shorter does).
pub fn file_labels(paths: &[PathBuf]) -> Vec<String> {
    let comps: Vec<Vec<String>> = paths.iter().map(|p| p.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect()).collect();
    let longest = comps.iter().map(|c| c.len()).max().unwrap_or(1).max(1);
    for n in 1..=longest {
        let labels: Vec<String> = comps.iter().map(|c| c[c.len().saturating_sub(n)..].join("/")).collect();
        let mut sorted = labels.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() == labels.len() {
            return labels;
        }
    }
    paths.iter().map(|p| p.display().to_string()).collect()
}

/// Run keys (`R1`, `R2`, …): unique by construction, used in every legend.
fn key(i: usize) -> String {
    format!("R{}", i + 1)
}

/// Where the phase changes in a run's time series: (time s, new phase).
fn phase_boundaries(r: &RunResult) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut prev: Option<(&str, f64)> = None;
    for s in &r.timeseries {
        match prev {
            None => out.push((0.0, s.phase.clone())),
            Some((p, t)) if p != s.phase => out.push((t, s.phase.clone())),
            _ => {}
        }
        prev = Some((&s.phase, s.t_s));
    }
    out
}

/// What `loadgen compare` decided for the report's base-vs-new view.
pub struct CompareView {
    pub rows: Vec<crate::compare::Comparison>,
    pub notes: Vec<String>,
    pub outcome: crate::compare::Outcome,
    pub threshold: f64,
    pub confidence: f64,
}

/// Compare `base` with `new` as `loadgen compare --base … --new …` would (defaults).
pub fn compare_view(base: &[PathBuf], new: &[PathBuf], force: bool) -> Result<CompareView, String> {
    use crate::compare::*;
    let args = CompareArgs {
        paths: vec![],
        base: base.to_vec(),
        new: new.to_vec(),
        criterion: false,
        threshold_pct: 5.0,
        confidence: 0.95,
        resamples: 10_000,
        seed: 1,
        method: Method::Bootstrap,
        stat: Stat::Median,
        normalize: Normalize::Auto,
        paired: false,
        informational: vec![],
        filter: None,
        json_out: None,
        force,
    };
    let (rows, notes, d) = evaluate(&args).map_err(|e| e.to_string())?;
    let outcome = outcome(&rows, &[]);
    Ok(CompareView { rows, notes, outcome, threshold: d.threshold, confidence: d.confidence })
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:+.1}%", x * 100.0)
    } else {
        "–".into()
    }
}

/// The base-vs-new section: a chart of each figure's change with its interval against the
/// threshold band, and the table of numbers and verdicts.
fn compare_section(c: &CompareView) -> String {
    use crate::compare::{Outcome, Verdict};
    let mut html = String::new();
    let (decision, class) = match c.outcome {
        Outcome::NoRegression => ("no regression: every gating figure decided, none beyond the threshold in the bad direction", ""),
        Outcome::Regression => ("REGRESSION: at least one gating figure's whole interval lies beyond the threshold in the bad direction", "warn"),
        Outcome::Undecided => ("UNDECIDED: no verdict for some figures (fewer than 3 runs per side, or no usable basis); not a pass", "warn"),
    };
    let _ = writeln!(
        html,
        "<h2>Base vs new</h2>\n<p id=\"compare-outcome\" class=\"{class}\"><b>{}</b> (as <code>loadgen compare</code>: median change new/base − 1, {:.0}% bootstrap interval, threshold ±{:.1}%).</p>",
        esc(decision),
        c.confidence * 100.0,
        c.threshold * 100.0
    );
    if !c.notes.is_empty() {
        html.push_str("<ul class=\"notes\">");
        for n in &c.notes {
            let _ = write!(html, "<li>{}</li>", esc(n));
        }
        html.push_str("</ul>\n");
    }
    // Chart: one row per figure.
    let row_h = 22.0;
    let (w, ml, mr, mt) = (760.0, 300.0, 20.0, 28.0);
    let h = mt + row_h * c.rows.len() as f64 + 30.0;
    let span = c
        .rows
        .iter()
        .flat_map(|r| [r.ci_low.abs(), r.ci_high.abs(), r.change.abs()])
        .filter(|x| x.is_finite())
        .fold(c.threshold * 3.0, f64::max)
        // Beyond ±50% the axis would squeeze the changes that matter near the threshold:
        // longer intervals are clipped at the edge (an arrow) and given in full in the table.
        .min(0.5_f64.max(c.threshold * 3.0))
        * 1.1;
    let px = |v: f64| ml + (v.clamp(-span, span) + span) / (2.0 * span) * (w - ml - mr);
    let _ = write!(html, r#"<svg id="chart-compare" class="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="change with interval per figure">"#);
    let _ = write!(html, r#"<text x="{ml}" y="16" font-size="13" font-weight="bold">change new vs base, with {:.0}% interval (shaded: ±threshold)</text>"#, c.confidence * 100.0);
    let _ = write!(
        html,
        r##"<rect x="{:.1}" y="{mt}" width="{:.1}" height="{:.1}" fill="#eee"/><line x1="{:.1}" y1="{mt}" x2="{:.1}" y2="{:.1}" stroke="#888"/>"##,
        px(-c.threshold),
        px(c.threshold) - px(-c.threshold),
        row_h * c.rows.len() as f64,
        px(0.0),
        px(0.0),
        mt + row_h * c.rows.len() as f64
    );
    for t in [-span / 1.1, -span / 2.2, span / 2.2, span / 1.1] {
        let _ = write!(html, r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#, px(t), h - 10.0, pct(t));
    }
    for (i, r) in c.rows.iter().enumerate() {
        let y = mt + row_h * i as f64 + row_h / 2.0;
        let color = match r.verdict {
            Verdict::Regression if r.gating => "#d62728",
            Verdict::Improvement => "#2ca02c",
            Verdict::Undecided => "#ff7f0e",
            _ => "#1f77b4",
        };
        let basis = if r.basis == "normalized" { " (normalized)" } else { "" };
        let _ = write!(html, r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{} · {}{basis}</text>"#, ml - 6.0, y + 4.0, esc(&r.group), esc(&r.figure));
        if r.ci_low.is_finite() && r.ci_high.is_finite() {
            let _ = write!(html, r#"<line class="interval" x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"/>"#, px(r.ci_low), px(r.ci_high));
            let limit = span / 1.1;
            if r.ci_high > limit {
                let _ = write!(html, r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="{color}" text-anchor="end">▶ {}</text>"#, px(limit), y - 4.0, pct(r.ci_high));
            }
            if r.ci_low < -limit {
                let _ = write!(html, r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="{color}">◀ {}</text>"#, px(-limit), y - 4.0, pct(r.ci_low));
            }
        }
        if r.change.is_finite() {
            let _ = write!(html, r#"<circle cx="{:.1}" cy="{y:.1}" r="4" fill="{color}"><title>{} {}</title></circle>"#, px(r.change), esc(&r.figure), pct(r.change));
        }
    }
    html.push_str("</svg>\n");
    html.push_str("<table id=\"compare\"><tr><th>group</th><th>figure</th><th>basis</th><th>base</th><th>new</th><th>change</th><th>interval</th><th>n base/new</th><th>verdict</th></tr>\n");
    for r in &c.rows {
        let verdict = match r.verdict {
            Verdict::Regression if !r.gating => "regression? (raw, not gating)",
            Verdict::Regression => "REGRESSION",
            Verdict::Improvement => "improved",
            Verdict::NoChange => "no significant change",
            Verdict::Undecided => "undecided (no verdict)",
        };
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>[{}, {}]</td><td>{}/{}</td><td class=\"l{}\">{}</td></tr>",
            esc(&r.group),
            esc(&r.figure),
            r.basis,
            fmt_num(r.base_stat),
            fmt_num(r.new_stat),
            pct(r.change),
            pct(r.ci_low),
            pct(r.ci_high),
            r.base_n,
            r.new_n,
            if r.verdict == Verdict::Regression && r.gating { " warn" } else { "" },
            verdict
        );
    }
    html.push_str("</table>\n");
    html
}

/// Render the page.
pub fn render(runs: &[(PathBuf, RunResult)]) -> String {
    render_with(runs, None)
}

/// Render the page, with the base-vs-new view when `compare` is given.
pub fn render_with(runs: &[(PathBuf, RunResult)], compare: Option<&CompareView>) -> String {
    let labels = file_labels(&runs.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>());
    let mut spectrum = Vec::new();
    let mut thr = Vec::new();
    let mut p99 = Vec::new();
    let mut lag = Vec::new();
    let mut panels = String::new();
    for (i, (_, r)) in runs.iter().enumerate() {
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
        let name = key(i);
        let to_x = |pts: &Vec<(f64, f64)>| -> Vec<(f64, f64)> {
            pts.iter().map(|&(p, v)| ((1.0 / (1.0 - p / 100.0)).min(SPECTRUM_X_MAX), v / 1000.0)).collect()
        };
        spectrum.push(Series { name: format!("{name} publish"), color: c, dashed: false, points: to_x(&r.spectrum.publish) });
        if !r.spectrum.end_to_end.is_empty() {
            spectrum.push(Series { name: format!("{name} e2e"), color: c, dashed: true, points: to_x(&r.spectrum.end_to_end) });
        }
        let publish = Series {
            name: format!("{name} publish"),
            color: c,
            dashed: false,
            points: ts.iter().map(|s| (s.t_s, s.publish_records_per_s)).collect(),
        };
        let consume = r.timeseries.iter().any(|s| s.consume_records_per_s > 0.0).then(|| Series {
            name: format!("{name} consume"),
            color: c,
            dashed: true,
            points: ts.iter().map(|s| (s.t_s, s.consume_records_per_s)).collect(),
        });
        // Per-run panel: its own linear scale, the target and the phase boundaries.
        let mut own = vec![Series { name: "publish".into(), color: c, dashed: false, points: publish.points.clone() }];
        if let Some(cs) = &consume {
            own.push(Series { name: "consume".into(), color: "#555", dashed: true, points: cs.points.clone() });
        }
        let target = if r.workload.target_rate > 0.0 { r.workload.target_rate } else { r.workload.producer_rate };
        if target > 0.0 && !ts.is_empty() {
            let (t0, t1) = (ts[0].t_s, ts[ts.len() - 1].t_s);
            own.push(Series { name: format!("target {}", fmt_num(target)), color: "#999", dashed: true, points: vec![(t0, target), (t1, target)] });
        }
        let markers: Vec<Marker> = phase_boundaries(r).into_iter().map(|(t, p)| Marker { x: t, label: p, color: "#666" }).collect();
        panels.push_str(&line_chart_with(
            &format!("chart-run-{}", i + 1),
            &format!("{name} ({}): records/s over time, phases marked", labels[i]),
            &Axis { label: "time since start (s)".into(), log: false, ticks: vec![] },
            &Axis { label: "records/s".into(), log: false, ticks: vec![] },
            &own,
            &markers,
        ));
        thr.push(publish);
        thr.extend(consume);
        p99.push(Series {
            name: format!("{name} publish p99"),
            color: c,
            dashed: false,
            points: ts.iter().filter(|s| s.publish_p99_us > 0.0).map(|s| (s.t_s, s.publish_p99_us / 1000.0)).collect(),
        });
        // Consumer lag (records): every second's value, including short intervals (a rebalance
        // shows there), on a linear scale (0 is the value that matters most).
        if r.timeseries.iter().any(|s| s.consumer_lag.is_some()) {
            lag.push(Series {
                name: format!("{name} lag"),
                color: c,
                dashed: false,
                points: r.timeseries.iter().filter_map(|s| s.consumer_lag.map(|l| (s.t_s, l as f64))).collect(),
            });
        }
        if r.timeseries.iter().any(|s| s.committed_lag.is_some()) {
            lag.push(Series {
                name: format!("{name} committed lag"),
                color: c,
                dashed: true,
                points: r.timeseries.iter().filter_map(|s| s.committed_lag.map(|l| (s.t_s, l as f64))).collect(),
            });
        }
        if r.timeseries.iter().any(|s| s.e2e_p99_us > 0.0) {
            p99.push(Series {
                name: format!("{name} e2e p99"),
                color: c,
                dashed: true,
                points: ts.iter().filter(|s| s.e2e_p99_us > 0.0).map(|s| (s.t_s, s.e2e_p99_us / 1000.0)).collect(),
            });
        }
    }
    // Phase boundaries on the overlays: each run's own, in its color, when there are few runs.
    let overlay_markers: Vec<Marker> = if runs.len() <= 3 {
        runs.iter()
            .enumerate()
            .flat_map(|(i, (_, r))| {
                let c = COLORS[i % COLORS.len()];
                phase_boundaries(r).into_iter().filter(|(t, _)| *t > 0.0).map(move |(t, p)| Marker { x: t, label: format!("{} {p}", key(i)), color: c })
            })
            .collect()
    } else {
        Vec::new()
    };
    let pct_ticks: Vec<(f64, String)> = [(1.0, "0%"), (10.0, "90%"), (100.0, "99%"), (1e3, "99.9%"), (1e4, "99.99%"), (1e5, "99.999%"), (1e6, "99.9999%")]
        .iter()
        .map(|(v, l)| (*v, l.to_string()))
        .collect();
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>loadgen report</title><style>");
    html.push_str("body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:13px;margin:12px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}.chart{display:block;margin:18px 0}.warn{color:#b00}");
    html.push_str("</style></head><body>\n<h1>loadgen report</h1>\n");
    let _ = writeln!(html, "<p>{} run(s), keyed R1 to R{} in every chart and table. Latency is measured from each record's <em>intended</em> send time (open loop, coordinated-omission-correct); send delay = actual − intended send time. Max is plotted at 99.9999%. Achieved below 97% of the target is marked.</p>", runs.len(), runs.len());
    html.push_str("<table id=\"summary\"><tr><th>key</th><th>file</th><th>target</th><th>complete</th><th>measured s</th><th>target rec/s</th><th>achieved rec/s</th><th>of target</th><th>consume rec/s</th><th>MB/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>send delay p99 ms</th><th>send delay max ms</th><th>e2e p99 ms</th><th>events/day</th></tr>\n");
    for (i, (_, r)) in runs.iter().enumerate() {
        let l = &r.publish.latency_us;
        let target = if r.workload.target_rate > 0.0 { r.workload.target_rate } else { r.workload.producer_rate };
        let frac = if target > 0.0 { r.publish.records_per_s / target } else { f64::NAN };
        let short = frac.is_finite() && (frac < 0.97 || !r.target_met);
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{} {} fsync={}</td><td class=\"{}\">{}</td><td>{:.1}</td><td>{}</td><td>{:.0}</td><td class=\"{}\">{}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3e}</td></tr>",
            key(i),
            esc(&labels[i]),
            esc(&r.target.kind),
            esc(&r.target.bootstrap),
            esc(&r.target.fsync),
            if r.complete { "" } else { "warn" },
            if r.complete { "yes" } else { "NO" },
            r.duration_s,
            if target > 0.0 { format!("{target:.0}") } else { "search".into() },
            r.publish.records_per_s,
            if short { "warn" } else { "" },
            if frac.is_finite() { format!("{:.1}%{}", frac * 100.0, if short { " (short)" } else { "" }) } else { "–".into() },
            r.consume.records_per_s,
            r.publish.bytes_per_s / 1e6,
            r.publish.errors,
            l.p50 / 1e3,
            l.p99 / 1e3,
            l.p999 / 1e3,
            l.max / 1e3,
            r.publish.delay_us.p99 / 1e3,
            r.publish.delay_us.max / 1e3,
            r.end_to_end.latency_us.p99 / 1e3,
            r.projection.events_per_day,
        );
    }
    html.push_str("</table>\n");
    if let Some(c) = compare {
        html.push_str(&compare_section(c));
    }
    html.push_str(&line_chart(
        "chart-spectrum",
        "Latency by percentile (publish solid, end-to-end dashed)",
        &Axis { label: "percentile (x = 1/(1−p), log scale)".into(), log: true, ticks: pct_ticks },
        &Axis { label: "latency (ms, log scale)".into(), log: true, ticks: vec![] },
        &spectrum,
    ));
    html.push_str(&line_chart_with(
        "chart-throughput",
        "Throughput over time (publish solid, consume dashed; log scale)",
        &Axis { label: "time since start (s)".into(), log: false, ticks: vec![] },
        &Axis { label: "records/s (log scale)".into(), log: true, ticks: vec![] },
        &thr,
        &overlay_markers,
    ));
    html.push_str(&line_chart_with(
        "chart-p99",
        "p99 latency per second (publish solid, end-to-end dashed)",
        &Axis { label: "time since start (s)".into(), log: false, ticks: vec![] },
        &Axis { label: "p99 (ms, log scale)".into(), log: true, ticks: vec![] },
        &p99,
        &overlay_markers,
    ));
    if !lag.is_empty() {
        html.push_str(&line_chart_with(
            "chart-lag",
            "Consumer lag per second (records behind; vs committed offsets dashed)",
            &Axis { label: "time since start (s)".into(), log: false, ticks: vec![] },
            &Axis { label: "records behind".into(), log: false, ticks: vec![] },
            &lag,
            &overlay_markers,
        ));
    }
    if runs.iter().any(|(_, r)| r.consumer.is_some()) {
        html.push_str(&consumer_table(runs));
    }
    html.push_str("<h2>Each run on its own scale</h2>\n");
    html.push_str(&panels);
    html.push_str("<h2>Workload parameters</h2><table id=\"workload\"><tr><th>key</th><th>workload</th><th>message B</th><th>topics × partitions</th><th>producers</th><th>consumers</th><th>batch B</th><th>linger ms</th><th>acks</th><th>max in flight</th><th>keys</th><th>durability</th><th>direct I/O</th><th>warmup s</th><th>rate (0 = search)</th></tr>\n");
    for (i, (_, r)) in runs.iter().enumerate() {
        let w = &r.workload;
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{} × {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{:.0}</td></tr>",
            key(i),
            esc(&w.name),
            w.message_size,
            w.topics,
            w.partitions_per_topic,
            w.producers,
            w.consumers,
            w.batch_size,
            w.linger_ms,
            w.acks,
            w.max_in_flight,
            esc(&w.key_distributor),
            esc(&r.target.fsync),
            r.target.direct_io.map(|d| d.to_string()).unwrap_or_else(|| "–".into()),
            w.warmup_s,
            w.producer_rate
        );
    }
    html.push_str("</table>\n");
    // The max-rate search trace table goes here (a separate function renders `r.search`).
    if runs.iter().any(|(_, r)| r.drain.is_some()) {
        html.push_str("<h2>Backlog drain</h2><table id=\"drain\"><tr><th>key</th><th>backlog records</th><th>backlog MB</th><th>drain s</th><th>rec/s</th><th>MB/s</th><th>caught up</th></tr>\n");
        for (i, (_, r)) in runs.iter().enumerate() {
            if let Some(d) = &r.drain {
                let _ = writeln!(
                    html,
                    "<tr><td class=\"l\">{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.0}</td><td>{:.1}</td><td class=\"{}\">{}</td></tr>",
                    key(i),
                    d.backlog_records,
                    d.backlog_bytes as f64 / 1e6,
                    d.drain_s,
                    d.records_per_s,
                    d.bytes_per_s / 1e6,
                    if d.caught_up { "" } else { "warn" },
                    if d.caught_up { "yes" } else { "NO" }
                );
            }
        }
        html.push_str("</table>\n");
    }
    html.push_str("<h2>Provenance and target</h2><table id=\"provenance\"><tr><th>key</th><th>build commit</th><th>loadgen</th><th>started</th><th>cluster id</th><th>brokers</th><th>APIs advertised</th><th>topics</th></tr>\n");
    for (i, (_, r)) in runs.iter().enumerate() {
        let (commit, version) = match &r.provenance {
            Some(p) => (format!("{}{}", p.build_commit.chars().take(12).collect::<String>(), if p.build_dirty == Some(true) { "-dirty" } else { "" }), p.loadgen_version.clone()),
            None => (r.environment.git_commit.chars().take(18).collect(), r.environment.loadgen_version.clone()),
        };
        let id = r.target.identity.as_ref();
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            key(i),
            esc(&commit),
            esc(&version),
            esc(&r.started_at),
            esc(&id.and_then(|x| x.cluster_id.clone()).unwrap_or_else(|| "–".into())),
            esc(&id.map(|x| format!("{} ({})", x.broker_count, x.brokers.join(", "))).unwrap_or_else(|| "–".into())),
            id.map(|x| x.api_versions.len().to_string()).unwrap_or_else(|| "–".into()),
            esc(&r.target.topics.join(", "))
        );
    }
    html.push_str("</table>\n");
    html.push_str("<h2>Environment</h2><table><tr><th>key</th><th>CPU</th><th>cores</th><th>memory GiB</th><th>kernel</th><th>disk MB/s</th><th>fdatasync p50 µs</th><th>loopback MB/s</th><th>calibration spread (disk / loopback)</th></tr>\n");
    for (i, (_, r)) in runs.iter().enumerate() {
        let e = &r.environment;
        let c = r.calibration.as_ref();
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{:.1}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            key(i),
            esc(&e.cpu_model),
            e.cores,
            e.memory_bytes as f64 / (1u64 << 30) as f64,
            esc(&e.kernel),
            c.map(|c| format!("{:.0}", c.disk_seq_write_bytes_per_s / 1e6)).unwrap_or_else(|| "–".into()),
            c.map(|c| format!("{:.0}", c.fdatasync_us.p50)).unwrap_or_else(|| "–".into()),
            c.map(|c| format!("{:.0}", c.loopback_bytes_per_s / 1e6)).unwrap_or_else(|| "–".into()),
            c.and_then(|c| c.spread.as_ref()).map(|s| format!("{:.0}% / {:.0}%", s.disk_seq_write * 100.0, s.loopback * 100.0)).unwrap_or_else(|| "–".into()),
        );
    }
    html.push_str("</table>\n");
    html.push_str(&search_tables(runs, &labels));
    html.push_str("</body></html>\n");
    html
}

/// The max-rate search trace of every run that searched: each trial's target, achieved rate,
/// p99 and verdict, then the confirmed answer and the latency at half of it.
/// `labels`: the runs' file labels (`file_labels`), shown after their keys R1, R2, ….
/// Consumers of each run: mode, lag, re-delivered records and the group protocol's figures.
fn consumer_table(runs: &[(PathBuf, RunResult)]) -> String {
    let mut html = String::from("<h2>Consumers</h2><table id=\"consumers\"><tr><th>key</th><th>mode</th><th>group</th><th>members</th><th>assignor</th><th>commit interval ms</th><th>rebalances</th><th>member rejoins</th><th>rebalance p50 ms</th><th>rebalance max ms</th><th>commits</th><th>commit p50 ms</th><th>commit p99 ms</th><th>commit errors</th><th>duplicates</th><th>lag max</th><th>lag final</th><th>committed lag max</th><th>committed lag final</th><th>group errors by code</th></tr>\n");
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "–".into());
    for (i, (_, r)) in runs.iter().enumerate() {
        let Some(c) = &r.consumer else { continue };
        let g = c.group.as_ref();
        let ms = |f: &dyn Fn(&crate::results::GroupInfo) -> f64| g.map(|g| format!("{:.1}", f(g) / 1e3)).unwrap_or_else(|| "–".into());
        let n = |f: &dyn Fn(&crate::results::GroupInfo) -> String| g.map(f).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            key(i),
            esc(&c.mode),
            esc(&n(&|g| g.group_ids.join(", "))),
            n(&|g| g.members.to_string()),
            n(&|g| g.assignor.clone()),
            n(&|g| g.commit_interval_ms.to_string()),
            n(&|g| g.rebalances.to_string()),
            n(&|g| g.member_rejoins.to_string()),
            ms(&|g| g.rebalance_duration_us.p50),
            ms(&|g| g.rebalance_duration_us.max),
            n(&|g| g.commits.to_string()),
            ms(&|g| g.commit_latency_us.p50),
            ms(&|g| g.commit_latency_us.p99),
            if g.is_some_and(|g| g.commit_errors > 0) { "warn" } else { "" },
            n(&|g| g.commit_errors.to_string()),
            if c.duplicates > 0 { "warn" } else { "" },
            c.duplicates,
            c.lag.max,
            if c.lag.final_ > 0 { "warn" } else { "" },
            c.lag.final_,
            opt(c.lag.committed_max),
            opt(c.lag.committed_final),
            esc(&n(&|g| g.errors_by_code.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "))),
        );
    }
    html.push_str("</table>\n");
    html
}

pub fn search_tables(runs: &[(PathBuf, RunResult)], labels: &[String]) -> String {
    let mut html = String::new();
    for (i, (_, r)) in runs.iter().enumerate() {
        let Some(s) = &r.search else { continue };
        let _ = writeln!(
            html,
            "<h2 id=\"search\">Max-rate search: {}</h2><p>p99 bound {} ms; trials of {} s, acks counted up to {} s after the window; {}</p>",
            esc(&format!("{} {}", key(i), labels.get(i).map_or("", String::as_str))),
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
    report_files_with(files, None, out)
}

/// [`report_files`], with a base-vs-new view of `(base, new)` result files (also plotted).
pub fn report_files_with(files: &[PathBuf], compare: Option<(&[PathBuf], &[PathBuf], bool)>, out: &Path) -> Result<(), String> {
    let mut all: Vec<PathBuf> = Vec::new();
    let view = match compare {
        Some((base, new, force)) => {
            all.extend(base.iter().cloned());
            all.extend(new.iter().cloned());
            Some(compare_view(base, new, force)?)
        }
        None => None,
    };
    all.extend(files.iter().cloned());
    if all.is_empty() {
        return Err("no result files: loadgen report FILE… or --base FILE… --new FILE…".into());
    }
    let mut runs = Vec::new();
    for f in &all {
        if f.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            inner.sort();
            for p in inner {
                if let Ok(r) = RunResult::load(&p) {
                    runs.push((p, r));
                }
            }
        } else {
            runs.push((f.clone(), RunResult::load(f)?));
        }
    }
    let html = render_with(&runs, view.as_ref());
    if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    std::fs::write(out, html).map_err(|e| format!("cannot write {}: {e}", out.display()))
}
