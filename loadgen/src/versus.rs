//! `loadgen versus`: one workload against several targets, interleaved (A B A B …), and one
//! comparison of the figures with intervals and the ratio to the first target.
//!
//! Every run goes through [`crate::run::run`] (the same machinery as `loadgen run`); its result
//! JSON is kept under `<out>/runs/`. Targets are `NAME=embedded` (a fresh embedded engine per
//! run) or `NAME=host:port[,host:port…]` (an external cluster, e.g. Apache Kafka started by
//! `peers/kafka/kafka-peer`). Per target and figure the table gives the median over the rounds
//! with the min–max range; the ratio to the first target is median/median with a bootstrap
//! interval ([`crate::compare::compare_samples`]). Writes `versus.md`, `versus.json` and
//! `versus.html` into `<out>`. Exit 1 if any run failed or was incomplete (the rest is still
//! written), 2 on bad input.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::compare::{compare_samples, median, Better, Decide};
use crate::results::RunResult;
use crate::run::{run, RunError, RunOptions};
use crate::workload::Overrides;

#[derive(clap::Args)]
pub struct VersusArgs {
    /// Built-in workload name or YAML file.
    #[arg(short, long, default_value = "smoke")]
    pub workload: String,
    /// A target, NAME=embedded or NAME=host:port[,host:port…]; repeat it. The first is the base
    /// of the ratios.
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Rounds; each round runs every target once, in the order given.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Output folder (versus.md, versus.json, versus.html, runs/).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Parent directory of the embedded engine's temporary data dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A title for the table (default: the workload's name).
    #[arg(long)]
    pub title: Option<String>,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// None = embedded engine.
    pub bootstrap: Option<String>,
}

pub fn parse_target(s: &str) -> Result<Target, String> {
    let (name, what) = s.split_once('=').ok_or_else(|| format!("target {s:?} is not NAME=embedded or NAME=host:port[,…]"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        return Err(format!("target name {name:?} must be [A-Za-z0-9._-]+"));
    }
    let bootstrap = match what {
        "embedded" => None,
        "" => return Err(format!("target {name} has no bootstrap")),
        b => Some(b.to_string()),
    };
    Ok(Target { name: name.to_string(), bootstrap })
}

/// A figure of a run: (key, label, unit, better, extractor).
type Extract = fn(&RunResult) -> Option<f64>;
pub const FIGURES: &[(&str, &str, &str, Better, Extract)] = &[
    // A `producerRate: 0` workload: the rate its search found and a full-length run confirmed
    // (absent when not confirmed); its other figures are those of that confirmation run.
    ("max_rps", "max sustainable rate", "records/s", Better::Higher, |r| max_rate(r)),
    ("max_mbps", "max sustainable throughput", "MB/s", Better::Higher, |r| {
        max_rate(r).map(|x| x * r.workload.message_size as f64 / 1e6)
    }),
    ("publish_rps", "publish rate", "records/s", Better::Higher, |r| Some(r.publish.records_per_s)),
    ("publish_mbps", "publish throughput", "MB/s", Better::Higher, |r| Some(r.publish.bytes_per_s / 1e6)),
    ("publish_p50", "publish p50", "ms", Better::Lower, |r| lat(r.publish.latency_us.count, r.publish.latency_us.p50)),
    ("publish_p99", "publish p99", "ms", Better::Lower, |r| lat(r.publish.latency_us.count, r.publish.latency_us.p99)),
    ("publish_p999", "publish p99.9", "ms", Better::Lower, |r| lat(r.publish.latency_us.count, r.publish.latency_us.p999)),
    ("e2e_p50", "end-to-end p50", "ms", Better::Lower, |r| lat(r.end_to_end.latency_us.count, r.end_to_end.latency_us.p50)),
    ("e2e_p99", "end-to-end p99", "ms", Better::Lower, |r| lat(r.end_to_end.latency_us.count, r.end_to_end.latency_us.p99)),
    ("e2e_p999", "end-to-end p99.9", "ms", Better::Lower, |r| lat(r.end_to_end.latency_us.count, r.end_to_end.latency_us.p999)),
    ("consume_mbps", "consume throughput", "MB/s", Better::Higher, |r| {
        if r.consume.records > 0 {
            Some(r.consume.bytes_per_s / 1e6)
        } else {
            None
        }
    }),
    ("drain_mbps", "catch-up consume", "MB/s", Better::Higher, |r| r.drain.as_ref().map(|d| d.bytes_per_s / 1e6)),
    ("publish_errors", "publish errors", "records", Better::Lower, |r| Some(r.publish.errors as f64)),
];

/// The confirmed max sustainable rate of a search run: a rate some search trial passed at, and a
/// full-length run confirmed. (When even `searchStartRate` failed its trials, the run measures
/// that rate full-length; its passing says the max is at least that, not what it is.)
fn max_rate(r: &RunResult) -> Option<f64> {
    r.search.as_ref().filter(|s| s.confirmed && s.max_rate > 0.0 && found(s)).map(|s| s.max_rate)
}

fn found(s: &crate::results::Search) -> bool {
    s.trials.iter().any(|t| t.stage != "confirm" && t.verdict.as_deref() == Some("pass"))
}

/// Figures left out of a search workload's table: its publish rate is the confirmation run's,
/// which the max sustainable rate states.
const SEARCH_HIDES: [&str; 2] = ["publish_rps", "publish_mbps"];

fn lat(count: u64, us: f64) -> Option<f64> {
    (count > 0).then_some(us / 1000.0)
}

/// One cell of the comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub figure: String,
    pub unit: String,
    pub target: String,
    pub samples: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// median / base median, with its bootstrap interval; None for the base or without samples.
    pub ratio: Option<f64>,
    pub ratio_low: Option<f64>,
    pub ratio_high: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Versus {
    pub title: String,
    pub workload: String,
    /// A `producerRate: 0` workload: the p99 publish latency bound of each target's search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_bound_ms: Option<f64>,
    pub rounds: u32,
    pub targets: Vec<String>,
    pub bootstraps: Vec<String>,
    /// Runs that failed or were incomplete: "target round: reason".
    pub failures: Vec<String>,
    /// Before each run after the first: how long the machine took to settle (dirty pages
    /// written back, disks idle), and whether it did.
    pub settle: Vec<Settle>,
    pub runs: Vec<String>,
    pub rows: Vec<Row>,
}

/// The wait before one run ([`settle`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settle {
    /// "target round N".
    pub run: String,
    pub waited_s: f64,
    /// The busiest disk's utilization when the wait gave up; None = settled.
    pub busy_at_start: Option<f64>,
}

impl std::fmt::Display for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.busy_at_start {
            None => write!(f, "{}: settled in {:.1} s", self.run, self.waited_s),
            Some(b) => write!(
                f,
                "{}: NOT settled after {:.0} s (a disk still {:.0} % busy): the previous run's aftermath overlaps this one",
                self.run,
                self.waited_s,
                b * 100.0
            ),
        }
    }
}

/// Build the comparison from per-target results (index = target, in base-first order).
pub fn compare(title: &str, workload: &str, rounds: u32, targets: &[Target], results: &[Vec<RunResult>]) -> Vec<Row> {
    let d = Decide::default();
    let mut rows = Vec::new();
    let search = results.iter().flatten().any(|r| r.search.is_some());
    for &(key, label, unit, better, get) in FIGURES {
        if search && SEARCH_HIDES.contains(&key) {
            continue;
        }
        let samples: Vec<Vec<f64>> =
            results.iter().map(|rs| rs.iter().filter_map(get).filter(|x| x.is_finite()).collect()).collect();
        if samples.iter().all(|s| s.is_empty()) {
            continue;
        }
        if key == "publish_errors" && samples.iter().all(|s| s.iter().all(|&x| x == 0.0)) {
            continue;
        }
        for (i, t) in targets.iter().enumerate() {
            let s = &samples[i];
            if s.is_empty() {
                continue;
            }
            let med = median(s);
            let (mut ratio, mut lo, mut hi) = (None, None, None);
            if i > 0 && !samples[0].is_empty() {
                let c = compare_samples(title, label, unit, better, &samples[0], s, &d);
                if c.change.is_finite() {
                    ratio = Some(c.change + 1.0);
                    lo = Some(c.ci_low + 1.0);
                    hi = Some(c.ci_high + 1.0);
                }
            }
            rows.push(Row {
                figure: label.to_string(),
                unit: unit.to_string(),
                target: t.name.clone(),
                samples: s.clone(),
                median: med,
                min: s.iter().cloned().fold(f64::INFINITY, f64::min),
                max: s.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                ratio,
                ratio_low: lo,
                ratio_high: hi,
            });
        }
    }
    let _ = (workload, rounds);
    rows
}

fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn ratio_text(r: &Row) -> String {
    match (r.ratio, r.ratio_low, r.ratio_high) {
        (Some(m), Some(l), Some(h)) => format!("{m:.2}× [{l:.2}–{h:.2}]"),
        (Some(m), _, _) => format!("{m:.2}×"),
        _ => "base".to_string(),
    }
}

pub fn render_markdown(v: &Versus) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### {}\n", v.title);
    let _ = writeln!(
        s,
        "workload `{}`, {} interleaved round(s); median [min–max] over the rounds; ratio = median / median of `{}` with a 95 % bootstrap interval\n",
        v.workload,
        v.rounds,
        v.targets.first().cloned().unwrap_or_default()
    );
    if let Some(b) = v.p99_bound_ms {
        let _ = writeln!(s, "{}\n", search_note(b));
    }
    let _ = writeln!(s, "| figure | target | median [min–max] | ratio to {} |", v.targets.first().cloned().unwrap_or_default());
    let _ = writeln!(s, "| --- | --- | --- | --- |");
    for r in &v.rows {
        let _ = writeln!(
            s,
            "| {} ({}) | {} | {} [{}–{}] | {} |",
            r.figure,
            r.unit,
            r.target,
            num(r.median),
            num(r.min),
            num(r.max),
            ratio_text(r)
        );
    }
    let unsettled: Vec<&Settle> = v.settle.iter().filter(|x| x.busy_at_start.is_some()).collect();
    if !unsettled.is_empty() {
        let _ = writeln!(s, "\nRuns that started before the machine settled from the previous run (their figures are kept):");
        for f in unsettled {
            let _ = writeln!(s, "- {f}");
        }
    }
    if !v.failures.is_empty() {
        let _ = writeln!(s, "\nFailed or incomplete runs (their figures are excluded):");
        for f in &v.failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

fn search_note(bound_ms: f64) -> String {
    format!(
        "max sustainable rate: per run, the highest rate whose publish p99 stayed within {bound_ms} ms (the loadgen's \
         `producerRate: 0` search: short trials, then a full-length confirmation run); the latency and consume \
         figures are those of that confirmation run, at each target's own rate"
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn render_html(v: &Versus) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}\
         .bar{{display:inline-block;height:10px;background:#4a7}}</style></head><body><h1>{t}</h1>\
         <p>workload <code>{w}</code>, {n} interleaved round(s); median [min–max]; ratio = median / median of <b>{b}</b> (95 % bootstrap interval).</p>\
         <p>targets: {tg}</p><table><tr><th>figure</th><th>target</th><th>median</th><th>min–max</th><th>ratio</th><th></th></tr>",
        t = esc(&v.title),
        w = esc(&v.workload),
        n = v.rounds,
        b = esc(v.targets.first().map(String::as_str).unwrap_or("")),
        tg = v.targets.iter().zip(&v.bootstraps).map(|(t, b)| format!("{} = {}", esc(t), esc(b))).collect::<Vec<_>>().join("; ")
    );
    if let Some(b) = v.p99_bound_ms {
        let _ = write!(s, "<p>{}</p>", esc(&search_note(b)));
    }
    for r in &v.rows {
        let width = (r.ratio.unwrap_or(1.0).clamp(0.0, 5.0) * 60.0) as u32;
        let _ = write!(
            s,
            "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td>{}–{}</td><td>{}</td><td><span class=\"bar\" style=\"width:{}px\"></span></td></tr>",
            esc(&r.figure),
            esc(&r.unit),
            esc(&r.target),
            num(r.median),
            num(r.min),
            num(r.max),
            esc(&ratio_text(r)),
            width
        );
    }
    s.push_str("</table>");
    if !v.failures.is_empty() {
        s.push_str("<h2>Failed or incomplete runs</h2><ul>");
        for f in &v.failures {
            let _ = write!(s, "<li>{}</li>", esc(f));
        }
        s.push_str("</ul>");
    }
    s.push_str("</body></html>\n");
    s
}

/// Longest wait for the machine to settle between runs.
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Let the previous run's aftermath pass before the next run starts, so no target pays for the
/// one before it: its dirty pages written back (`sync`), then every disk under 10 % busy over
/// half a second (/proc/diskstats; a broker that deleted a run's topic is still unlinking GBs
/// of segments, Kafka 60 s after the delete unless `log.segment.delete.delay.ms` says
/// otherwise). Bounded by `max`; returns the seconds waited and, when it gave up, the busiest
/// disk's utilization.
fn settle(max: std::time::Duration) -> (f64, Option<f64>) {
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let deadline = t0 + max;
    match std::process::Command::new("sync").spawn() {
        Ok(mut c) => loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        },
        Err(e) => eprintln!("versus:   cannot run sync ({e}); settling on disk activity only"),
    }
    let mut busy = 1.0;
    while Instant::now() < deadline {
        let (a, ta) = (disk_busy_ms(), Instant::now());
        std::thread::sleep(Duration::from_millis(500));
        let (b, tb) = (disk_busy_ms(), Instant::now());
        let span = (tb - ta).as_secs_f64() * 1000.0;
        busy = a.iter().filter_map(|(dev, ms)| b.iter().find(|(d, _)| d == dev).map(|(_, m)| m.saturating_sub(*ms) as f64 / span)).fold(0.0, f64::max);
        if busy < 0.10 {
            return (t0.elapsed().as_secs_f64(), None);
        }
    }
    (t0.elapsed().as_secs_f64(), Some(busy))
}

/// Milliseconds each block device has spent doing I/O (/proc/diskstats field 13); empty where
/// the file cannot be read (then settling is the `sync` alone).
fn disk_busy_ms() -> Vec<(String, u64)> {
    let text = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f.get(2)?;
            if name.starts_with("loop") || name.starts_with("ram") {
                return None;
            }
            Some((name.to_string(), f.get(12)?.parse().ok()?))
        })
        .collect()
}

pub fn run_versus(a: VersusArgs) -> i32 {
    // Every run: the workload and overrides as `loadgen run` takes them, no calibration, quiet.
    let mut base = match RunOptions::from_cli(&a.workload, &a.overrides, None, a.data_dir.clone()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    base.calibrate = Some(false);
    base.quiet = true;
    let targets: Vec<Target> = match a.targets.iter().map(|t| parse_target(t)).collect() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if a.rounds == 0 {
        eprintln!("error: --rounds must be at least 1");
        return 2;
    }
    let runs_dir = a.out.join("runs");
    if let Err(e) = std::fs::create_dir_all(&runs_dir) {
        eprintln!("error: cannot create {}: {e}", runs_dir.display());
        return 2;
    }
    crate::run::install_ctrlc();
    let base_name = base.workload.name.clone();
    let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); targets.len()];
    // Runs that ended early (e.g. the broker closed the connection): shown, marked, only for a
    // target that has no complete run at all.
    let mut incomplete: Vec<Vec<RunResult>> = vec![Vec::new(); targets.len()];
    let mut failures = Vec::new();
    let mut settles = Vec::new();
    let mut paths = Vec::new();
    for round in 0..a.rounds {
        for (i, t) in targets.iter().enumerate() {
            let mut opts = base.clone();
            // Fresh topics per run on external clusters: nothing left from an earlier round.
            opts.workload.name = format!("{base_name}-{}-r{round}", t.name);
            opts.bootstrap = t.bootstrap.clone();
            let path = runs_dir.join(format!("{}-r{round}.json", t.name));
            opts.output = Some(path.clone());
            if round > 0 || i > 0 {
                let (waited_s, busy_at_start) = settle(SETTLE_MAX);
                let wait = Settle { run: format!("{} round {}", t.name, round + 1), waited_s, busy_at_start };
                eprintln!("versus:   {wait}");
                settles.push(wait);
            }
            eprintln!("versus: round {}/{} target {} ({})", round + 1, a.rounds, t.name, t.bootstrap.as_deref().unwrap_or("embedded"));
            match run(&opts) {
                Ok(o) => {
                    if let Some(se) = &o.result.search {
                        eprintln!(
                            "versus:   max sustainable rate {} ({} trials)",
                            if se.confirmed { format!("{:.0} rec/s", se.max_rate) } else { "NOT CONFIRMED".into() },
                            se.trials.len()
                        );
                    }
                    eprintln!(
                        "versus:   publish {:.0} rec/s {:.1} MB/s, p99 {:.2} ms, errors {}",
                        o.result.publish.records_per_s,
                        o.result.publish.bytes_per_s / 1e6,
                        o.result.publish.latency_us.p99 / 1000.0,
                        o.result.publish.errors
                    );
                    if let Some(p) = &o.path {
                        paths.push(p.display().to_string());
                    }
                    let unfound = o.result.search.as_ref().filter(|se| se.confirmed && !found(se));
                    if !o.result.complete || o.exit_code != 0 || unfound.is_some() {
                        let why = match &o.result.search {
                            Some(se) if !se.confirmed => format!(
                                "max-rate search not confirmed: no full-length run kept p99 within {} ms (exit {})",
                                se.p99_bound_us / 1000.0,
                                o.exit_code
                            ),
                            Some(se) if !found(se) => format!(
                                "max-rate search: even the first rate ({:.0} rec/s) failed its trials; its full-length run \
                                 passed, so the max is at least that, not known (lower searchStartRate)",
                                se.max_rate
                            ),
                            _ => format!("incomplete or failed (exit {})", o.exit_code),
                        };
                        failures.push(format!("{} round {}: {why}", t.name, round + 1));
                        incomplete[i].push(o.result);
                    } else {
                        results[i].push(o.result);
                    }
                }
                Err(RunError::Usage(e)) | Err(RunError::Failed(e)) => {
                    eprintln!("versus:   failed: {e}");
                    failures.push(format!("{} round {}: {e}", t.name, round + 1));
                }
            }
            if crate::run::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                failures.push("interrupted".into());
                break;
            }
        }
        if crate::run::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
    }
    let title = a.title.clone().unwrap_or_else(|| base_name.clone());
    let mut shown = targets.clone();
    for i in 0..targets.len() {
        if results[i].is_empty() && !incomplete[i].is_empty() {
            results[i] = std::mem::take(&mut incomplete[i]);
            shown[i].name = format!("{} (incomplete runs)", targets[i].name);
        }
    }
    let rows = compare(&title, &base_name, a.rounds, &shown, &results);
    let v = Versus {
        title,
        workload: base_name,
        p99_bound_ms: (base.workload.producer_rate == 0.0).then_some(base.workload.p99_bound_ms),
        rounds: a.rounds,
        targets: targets.iter().map(|t| t.name.clone()).collect(),
        bootstraps: targets.iter().map(|t| t.bootstrap.clone().unwrap_or_else(|| "embedded".into())).collect(),
        failures,
        settle: settles,
        runs: paths,
        rows,
    };
    let md = render_markdown(&v);
    println!("{md}");
    let writes = [
        (a.out.join("versus.md"), md),
        (a.out.join("versus.html"), render_html(&v)),
        (a.out.join("versus.json"), serde_json::to_string_pretty(&v).unwrap_or_default()),
    ];
    for (p, text) in writes {
        if let Err(e) = std::fs::write(&p, text) {
            eprintln!("error: cannot write {}: {e}", p.display());
            return 1;
        }
    }
    println!("versus: {} (+ .md, .json, runs/)", a.out.join("versus.html").display());
    if v.failures.is_empty() {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_are_refused() {
        let t = parse_target("ours=embedded").unwrap();
        assert_eq!((t.name.as_str(), t.bootstrap), ("ours", None));
        let t = parse_target("kafka3=127.0.0.1:19192,127.0.0.1:19193").unwrap();
        assert_eq!(t.bootstrap.as_deref(), Some("127.0.0.1:19192,127.0.0.1:19193"));
        assert!(parse_target("embedded").is_err());
        assert!(parse_target("=embedded").is_err());
        assert!(parse_target("a b=embedded").is_err());
        assert!(parse_target("k=").is_err());
    }
}
