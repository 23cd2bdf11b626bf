//! `loadgen compare BASE NEW…`: statistical comparison of result sets (the regression gate).
//!
//! Two kinds of input:
//! * loadgen results (`loadgen-result/1` JSON, see `loadgen/schema/result.schema.json`): files or
//!   directories of them, grouped by workload name. Each run contributes one sample per figure
//!   (records/s, publish and end-to-end p50/p99/p99.9, efficiency ratios), so several runs per
//!   side (interleaved A/B runs from `scripts/suite`) are needed for a meaningful interval.
//! * criterion output (`--criterion`): directories holding `<bench>/new/sample.json` (e.g.
//!   `target/criterion` or a copy of it). Each criterion sample (time / iterations) is one sample.
//!
//! Decision: for each figure, the relative change of a statistic (median by default) of NEW vs
//! BASE, with a seeded percentile-bootstrap confidence interval (95% by default) and a
//! Mann–Whitney U p-value. A figure is a regression only when the *whole* interval lies beyond
//! the threshold (default 5%) in the bad direction: throughput down, latency or time up.
//! Noise widens the interval instead of firing the gate.
//!
//! No verdict without evidence: a figure with fewer than [`MIN_UNITS_FOR_VERDICT`] independent
//! runs (or rounds, or pairs) on a side is shown with its interval and the verdict `undecided`.
//!
//! Runs are matched by a fingerprint of every workload parameter (`workload.*` except its name
//! and the searched `target_rate`, plus the target's kind, durability, sink and direct I/O, and the producer's compression, idempotence and headers);
//! runs whose fingerprints differ are refused (the differences are printed) unless `--force`.
//!
//! Calibration (`--normalize auto`): when both sides share the environment fingerprint (CPU
//! model, cores, memory, kernel) the raw figures are compared: two calibrations of one machine
//! differ more than the figures they would normalize. When the environments differ, throughput is
//! also normalized by the in-run calibration (throughput / ceiling, durable latency / fdatasync
//! p50) and printed beside the raw figure; the normalized row decides, the raw one is shown. A
//! calibration whose repeated measurements spread more than [`CALIBRATION_SPREAD_MAX`] (or that
//! has no repeated measurements) is not used; across environments the raw figures then get no
//! verdict.
//!
//! Exit codes: 0 no regression, 1 regression, 2 bad input or refused match (message on stderr),
//! 3 undecided (no regression found, but some gating figure had too few runs for a verdict).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// Arguments of `loadgen compare`.
#[derive(Debug, Clone, clap::Args)]
#[command(about = "Compare benchmark runs with a confidence interval; exit 1 on regression, 2 on bad input, 3 undecided (fewer than 3 runs per side)")]
pub struct CompareArgs {
    /// BASE then NEW… : the first path is the baseline, the rest the new runs (files or directories).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Baseline runs (files or directories); use with --new instead of positional paths.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub base: Vec<PathBuf>,
    /// New runs (files or directories).
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub new: Vec<PathBuf>,
    /// Inputs are criterion output directories (holding <bench>/new/sample.json).
    #[arg(long)]
    pub criterion: bool,
    /// Regression threshold in percent: flag only if the whole interval is beyond it.
    #[arg(long, default_value_t = 5.0, value_name = "PCT")]
    pub threshold_pct: f64,
    /// Confidence level of the interval (and 1 - alpha for Mann–Whitney).
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    /// Seed of the bootstrap (results are reproducible).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Decision method.
    #[arg(long, value_enum, default_value_t = Method::Bootstrap)]
    pub method: Method,
    /// Statistic compared (median resists outlier samples on noisy machines).
    #[arg(long, value_enum, default_value_t = Stat::Median)]
    pub stat: Stat,
    /// Normalize loadgen figures by the in-run calibration.
    #[arg(long, value_enum, default_value_t = Normalize::Auto)]
    pub normalize: Normalize,
    /// Several inputs per side are rounds of an interleaved A/B run, paired by position
    /// (--base A1 A2 A3 --new B1 B2 B3): compare per-round ratios B_i / A_i.
    #[arg(long)]
    pub paired: bool,
    /// Figures / benchmarks whose name contains this string are reported but never fail the
    /// comparison (e.g. fdatasync-bound benchmarks on a shared disk). Repeatable.
    #[arg(long, value_name = "SUBSTRING")]
    pub informational: Vec<String>,
    /// Only compare figures / benchmarks whose name contains this string.
    #[arg(long)]
    pub filter: Option<String>,
    /// Also write the verdicts as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Compare runs whose workload fingerprints differ (the differences are still printed).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Regression when the bootstrap interval lies entirely beyond the threshold.
    Bootstrap,
    /// Regression when Mann–Whitney p < 1 - confidence and the point change is beyond the threshold.
    Mwu,
    /// Both must agree.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stat {
    Median,
    Mean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Normalize {
    /// Only when the two sides' environment fingerprints (CPU model, cores, memory, kernel) differ.
    Auto,
    Always,
    Never,
}

/// Which way is good for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// Bad input: missing file, unreadable JSON, missing fields, nothing to compare.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

fn bad(msg: impl Into<String>) -> InputError {
    InputError(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// Median (mean of the two middle values for even counts). `xs` must be non-empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn stat_of(stat: Stat, xs: &[f64]) -> f64 {
    match stat {
        Stat::Median => median(xs),
        Stat::Mean => mean(xs),
    }
}

/// Percentile-bootstrap interval of `stat(new) / stat(base) - 1`, resampling each side
/// independently with replacement. Returns (low, high).
pub fn bootstrap_ci(base: &[f64], new: &[f64], stat: Stat, confidence: f64, resamples: usize, seed: u64) -> (f64, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let resamples = resamples.max(100);
    let mut ratios = Vec::with_capacity(resamples);
    let mut rb = vec![0.0; base.len()];
    let mut rn = vec![0.0; new.len()];
    for _ in 0..resamples {
        for x in rb.iter_mut() {
            *x = base[rng.gen_range(0..base.len())];
        }
        for x in rn.iter_mut() {
            *x = new[rng.gen_range(0..new.len())];
        }
        let sb = stat_of(stat, &rb);
        let sn = stat_of(stat, &rn);
        if sb != 0.0 && sb.is_finite() && sn.is_finite() {
            ratios.push(sn / sb - 1.0);
        }
    }
    if ratios.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    percentile_interval(&ratios, confidence)
}

/// The central `confidence` interval of sorted bootstrap replicates (NaN when there are none).
fn percentile_interval(sorted: &[f64], confidence: f64) -> (f64, f64) {
    let alpha = (1.0 - confidence).clamp(0.0, 1.0);
    let at = |q: f64| {
        let i = (q * (sorted.len().max(1) - 1) as f64).round() as usize;
        sorted.get(i.min(sorted.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
    };
    (at(alpha / 2.0), at(1.0 - alpha / 2.0))
}

/// Mann–Whitney U test (two-sided, normal approximation with tie correction).
/// Returns (U of `new`, p-value). p = 1 when either side is empty or all values tie.
pub fn mann_whitney(base: &[f64], new: &[f64]) -> (f64, f64) {
    let (n1, n2) = (base.len() as f64, new.len() as f64);
    if base.is_empty() || new.is_empty() {
        return (0.0, 1.0);
    }
    let mut all: Vec<(f64, bool)> = base.iter().map(|&x| (x, false)).chain(new.iter().map(|&x| (x, true))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let mut rank_new = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        for item in &all[i..=j] {
            if item.1 {
                rank_new += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_new - n2 * (n2 + 1.0) / 2.0;
    let mu = n1 * n2 / 2.0;
    let nn = n1 + n2;
    let var = n1 * n2 / 12.0 * ((nn + 1.0) - tie_term / (nn * (nn - 1.0)));
    if var <= 0.0 {
        return (u, 1.0);
    }
    // Continuity correction.
    let z = ((u - mu).abs() - 0.5).max(0.0) / var.sqrt();
    (u, (2.0 * (1.0 - normal_cdf(z))).clamp(0.0, 1.0))
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, |error| < 1.5e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}

/// Outcome for one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Regression,
    Improvement,
    /// The interval reaches inside the threshold: no decision either way.
    NoChange,
    /// Too few independent runs (or no usable basis) for any verdict: figures only.
    Undecided,
}

/// One compared figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub group: String,
    pub figure: String,
    pub unit: String,
    #[serde(skip)]
    pub better: Better,
    pub base_n: usize,
    pub new_n: usize,
    pub base_stat: f64,
    pub new_stat: f64,
    /// stat(new) / stat(base) - 1.
    pub change: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub mwu_p: f64,
    pub verdict: Verdict,
    /// "raw" or "normalized" (by the in-run calibration).
    pub basis: &'static str,
    /// False for a raw figure shown beside its normalized form: it never fails the comparison.
    pub gating: bool,
}

/// Settings of the decision, independent of the CLI.
#[derive(Debug, Clone, Copy)]
pub struct Decide {
    pub threshold: f64,
    pub confidence: f64,
    pub resamples: usize,
    pub seed: u64,
    pub method: Method,
    pub stat: Stat,
}

impl Default for Decide {
    fn default() -> Self {
        Decide { threshold: 0.05, confidence: 0.95, resamples: 10_000, seed: 1, method: Method::Bootstrap, stat: Stat::Median }
    }
}

/// Compare two sample sets of one figure.
pub fn compare_samples(group: &str, figure: &str, unit: &str, better: Better, base: &[f64], new: &[f64], d: &Decide) -> Comparison {
    assert!(!base.is_empty() && !new.is_empty(), "compare_samples needs samples on both sides");
    let base_stat = stat_of(d.stat, base);
    let new_stat = stat_of(d.stat, new);
    let change = if base_stat != 0.0 { new_stat / base_stat - 1.0 } else { f64::NAN };
    // A seed per figure, derived from the name, so adding a figure does not move the others.
    let fig_seed = d.seed ^ fnv1a(group.as_bytes()) ^ fnv1a(figure.as_bytes()).rotate_left(17);
    let (ci_low, ci_high) = bootstrap_ci(base, new, d.stat, d.confidence, d.resamples, fig_seed);
    let (_, mwu_p) = mann_whitney(base, new);
    let verdict = decide(better, change, ci_low, ci_high, mwu_p, base.len().min(new.len()), d);
    Comparison {
        group: group.to_string(),
        figure: figure.to_string(),
        unit: unit.to_string(),
        better,
        base_n: base.len(),
        new_n: new.len(),
        base_stat,
        new_stat,
        change,
        ci_low,
        ci_high,
        mwu_p,
        verdict,
        basis: "raw",
        gating: true,
    }
}

/// Fewer independent units (samples, rounds or pairs) per side than this never yield a verdict:
/// a bootstrap over two values only restates them, and Mann–Whitney cannot reach p < 0.05.
pub const MIN_UNITS_FOR_VERDICT: usize = 3;

/// The decision rule shared by pooled, clustered and paired comparisons. `units` is the number
/// of independent units on the smaller side.
fn decide(better: Better, change: f64, ci_low: f64, ci_high: f64, mwu_p: f64, units: usize, d: &Decide) -> Verdict {
    if units < MIN_UNITS_FOR_VERDICT {
        return Verdict::Undecided;
    }
    let alpha = 1.0 - d.confidence;
    let t = d.threshold;
    let (worse_ci, better_ci, point_worse, point_better) = match better {
        Better::Lower => (ci_low > t, ci_high < -t, change > t, change < -t),
        Better::Higher => (ci_high < -t, ci_low > t, change < -t, change > t),
    };
    let significant = mwu_p < alpha;
    let (is_reg, is_imp) = match d.method {
        Method::Bootstrap => (worse_ci, better_ci),
        Method::Mwu => (significant && point_worse, significant && point_better),
        Method::Both => (worse_ci && significant, better_ci && significant),
    };
    if is_reg {
        Verdict::Regression
    } else if is_imp {
        Verdict::Improvement
    } else {
        Verdict::NoChange
    }
}

/// Compare samples that come in clusters (rounds: runs made minutes apart, whose samples share
/// that moment's machine load). The bootstrap resamples whole rounds, and Mann–Whitney compares
/// per-round statistics, so load that moved one round's samples together widens the interval
/// instead of passing for a change. The point estimate is the statistic of all samples pooled.
pub fn compare_clustered(group: &str, figure: &str, unit: &str, better: Better, base: &[Vec<f64>], new: &[Vec<f64>], d: &Decide) -> Comparison {
    assert!(base.iter().all(|c| !c.is_empty()) && new.iter().all(|c| !c.is_empty()) && !base.is_empty() && !new.is_empty());
    let pooled = |cs: &[Vec<f64>]| cs.iter().flatten().copied().collect::<Vec<f64>>();
    let (pb, pn) = (pooled(base), pooled(new));
    let base_stat = stat_of(d.stat, &pb);
    let new_stat = stat_of(d.stat, &pn);
    let change = if base_stat != 0.0 { new_stat / base_stat - 1.0 } else { f64::NAN };
    let mut rng = StdRng::seed_from_u64(d.seed ^ fnv1a(group.as_bytes()) ^ fnv1a(figure.as_bytes()).rotate_left(17));
    let mut ratios = Vec::with_capacity(d.resamples);
    let mut buf = Vec::new();
    for _ in 0..d.resamples.max(100) {
        let mut side = |cs: &[Vec<f64>]| {
            buf.clear();
            for _ in 0..cs.len() {
                buf.extend_from_slice(&cs[rng.gen_range(0..cs.len())]);
            }
            stat_of(d.stat, &buf)
        };
        let sb = side(base);
        let sn = side(new);
        if sb != 0.0 && sb.is_finite() && sn.is_finite() {
            ratios.push(sn / sb - 1.0);
        }
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    let (ci_low, ci_high) = percentile_interval(&ratios, d.confidence);
    let per_round = |cs: &[Vec<f64>]| cs.iter().map(|c| stat_of(d.stat, c)).collect::<Vec<f64>>();
    let (_, mwu_p) = mann_whitney(&per_round(base), &per_round(new));
    let verdict = decide(better, change, ci_low, ci_high, mwu_p, base.len().min(new.len()), d);
    Comparison {
        group: group.to_string(),
        figure: figure.to_string(),
        unit: unit.to_string(),
        better,
        base_n: base.len(),
        new_n: new.len(),
        base_stat,
        new_stat,
        change,
        ci_low,
        ci_high,
        mwu_p,
        verdict,
        basis: "raw",
        gating: true,
    }
}

/// Compare rounds of an interleaved A/B run pairwise: round i of `new` ran right next to round i
/// of `base`, under the same load. The change is the statistic of the per-round ratios
/// stat(new_i) / stat(base_i) - 1; the bootstrap resamples rounds; Mann–Whitney compares the
/// per-round statistics. With few rounds the interval spans all of them: a regression then means
/// every round saw it.
pub fn compare_paired(group: &str, figure: &str, unit: &str, better: Better, base: &[Vec<f64>], new: &[Vec<f64>], d: &Decide) -> Comparison {
    assert!(base.len() == new.len() && !base.is_empty(), "paired comparison needs the same number of rounds per side");
    let per_round = |cs: &[Vec<f64>]| cs.iter().map(|c| stat_of(d.stat, c)).collect::<Vec<f64>>();
    let (rb, rn) = (per_round(base), per_round(new));
    let ratios: Vec<f64> = rb.iter().zip(&rn).map(|(b, n)| n / b - 1.0).filter(|x| x.is_finite()).collect();
    let change = if ratios.is_empty() { f64::NAN } else { stat_of(d.stat, &ratios) };
    let mut rng = StdRng::seed_from_u64(d.seed ^ fnv1a(group.as_bytes()) ^ fnv1a(figure.as_bytes()).rotate_left(17));
    let mut boot = Vec::with_capacity(d.resamples);
    let mut buf = vec![0.0; ratios.len()];
    if !ratios.is_empty() {
        for _ in 0..d.resamples.max(100) {
            for x in buf.iter_mut() {
                *x = ratios[rng.gen_range(0..ratios.len())];
            }
            boot.push(stat_of(d.stat, &buf));
        }
    }
    boot.sort_by(|a, b| a.total_cmp(b));
    let (ci_low, ci_high) = percentile_interval(&boot, d.confidence);
    let (_, mwu_p) = mann_whitney(&rb, &rn);
    let verdict = decide(better, change, ci_low, ci_high, mwu_p, ratios.len(), d);
    Comparison {
        group: group.to_string(),
        figure: figure.to_string(),
        unit: unit.to_string(),
        better,
        base_n: base.len(),
        new_n: new.len(),
        base_stat: stat_of(d.stat, &rb),
        new_stat: stat_of(d.stat, &rn),
        change,
        ci_low,
        ci_high,
        mwu_p,
        verdict,
        basis: "raw",
        gating: true,
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

// ---------------------------------------------------------------------------------------------
// loadgen results
// ---------------------------------------------------------------------------------------------

/// The figures of one loadgen run that compare uses.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub path: String,
    pub workload: String,
    pub fsync: String,
    pub cpu_model: String,
    pub cores: f64,
    /// (name, unit, better, value)
    pub figures: Vec<(String, &'static str, Better, f64)>,
    pub disk_bytes_per_s: Option<f64>,
    pub loopback_bytes_per_s: Option<f64>,
    pub fdatasync_p50_us: Option<f64>,
    /// Every workload parameter (and the target's kind/durability), as `name=value` text.
    pub fingerprint: BTreeMap<String, String>,
    /// CPU model, cores, memory, kernel.
    pub environment: String,
    /// Relative spread (max-min)/median of the calibration's repeated measurements, per
    /// ceiling; None when the calibration has no repeated measurements.
    pub disk_spread: Option<f64>,
    pub loopback_spread: Option<f64>,
    pub fdatasync_spread: Option<f64>,
}

/// A calibration whose repeated measurements spread more than this is not used.
pub const CALIBRATION_SPREAD_MAX: f64 = 0.10;

impl Run {
    pub fn durable(&self) -> bool {
        !matches!(self.fsync.as_str(), "never" | "none" | "")
    }
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Workload fingerprint of a result: every `workload.*` field except `name` and `target_rate`
/// (the rate a search found is an outcome, not a parameter), plus `target.kind`, `target.fsync`,
/// `target.sink` and `target.direct_io`. Numbers are printed so that 2000000 and 2000000.0 match.
pub fn fingerprint(v: &Value) -> BTreeMap<String, String> {
    let show = |x: &Value| match x {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            Some(f) => format!("{f}"),
            None => n.to_string(),
        },
        other => other.to_string(),
    };
    let mut fp = BTreeMap::new();
    if let Some(Value::Object(w)) = v.get("workload") {
        for (k, x) in w {
            if k == "name" || k == "target_rate" || x.is_null() {
                continue;
            }
            fp.insert(format!("workload.{k}"), show(x));
        }
    }
    let target = v.get("target");
    for k in ["kind", "fsync", "sink", "direct_io"] {
        let x = target.and_then(|t| t.get(k)).cloned().unwrap_or(Value::Null);
        let shown = match (k, &x) {
            ("sink", Value::Null) => "false".to_string(),
            (_, Value::Null) => "-".to_string(),
            _ => show(&x),
        };
        fp.insert(format!("target.{k}"), shown);
    }
    // Producer settings (results without a `producer` block ran with the defaults).
    let p = v.get("producer");
    let at = |path: &[&str], default: &str| {
        let mut x = p;
        for k in path {
            x = x.and_then(|y| y.get(*k));
        }
        x.filter(|x| !x.is_null()).map_or_else(|| default.to_string(), show)
    };
    fp.insert("producer.compression".into(), at(&["compression", "codec"], "none"));
    fp.insert("producer.idempotent".into(), at(&["idempotent"], "false"));
    // Transactional runs compare only with runs of the same transaction size.
    fp.insert("producer.transaction_records".into(), at(&["transactions", "records_per_transaction"], "0"));
    let headers = at(&["headers"], "0");
    let headers = if headers == "0" { headers } else { format!("{headers} x {} B", at(&["header_value_bytes"], "?")) };
    fp.insert("producer.headers".into(), headers);
    // Consumers: raw Fetch or a group (results without a `consumer` block consumed with Fetch),
    // and the group's settings.
    let c = v.get("consumer");
    fp.insert("consumer.mode".into(), c.and_then(|c| c.get("mode")).filter(|x| !x.is_null()).map_or_else(|| "fetch".into(), show));
    // What the consumers counted: read_committed skips aborted transactions (older results
    // without the field read uncommitted).
    fp.insert("consumer.isolation_level".into(), c.and_then(|c| c.get("isolation_level")).filter(|x| !x.is_null()).map_or_else(|| "read_uncommitted".into(), show));
    if let Some(g) = c.and_then(|c| c.get("group")) {
        for k in ["assignor", "commit_interval_ms", "heartbeat_interval_ms", "session_timeout_ms", "extra_member_join_s", "extra_member_leave_s"] {
            if let Some(x) = g.get(k).filter(|x| !x.is_null()) {
                fp.insert(format!("consumer.group.{k}"), show(x));
            }
        }
    }
    fp
}

/// Parse one `loadgen-result/1` document.
pub fn parse_run(v: &Value, path: &str) -> Result<Run, InputError> {
    let schema = v.get("schema").and_then(Value::as_str).unwrap_or("");
    if schema != "loadgen-result/1" {
        return Err(bad(format!("{path}: not a loadgen result (schema {schema:?}, want \"loadgen-result/1\")")));
    }
    let need = |p: &[&str]| num(v, p).ok_or_else(|| bad(format!("{path}: missing number {}", p.join("."))));
    let mut figures: Vec<(String, &'static str, Better, f64)> = vec![
        ("publish.records_per_s".into(), "rec/s", Better::Higher, need(&["publish", "records_per_s"])?),
        ("end_to_end.records_per_s".into(), "rec/s", Better::Higher, need(&["end_to_end", "records_per_s"])?),
    ];
    for side in ["publish", "end_to_end"] {
        for (key, label) in [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")] {
            let count = num(v, &[side, "latency_us", "count"]).unwrap_or(1.0);
            if count > 0.0 {
                figures.push((format!("{side}.latency {label}"), "us", Better::Lower, need(&[side, "latency_us", key])?));
            }
        }
    }
    if let Some(Value::Object(eff)) = v.get("efficiency") {
        for (k, val) in eff {
            if let Some(x) = val.as_f64() {
                figures.push((format!("efficiency.{k}"), "ratio", Better::Higher, x));
            }
        }
    }
    let environment = format!(
        "{} x{}, {} GiB, kernel {}",
        text(v, &["environment", "cpu_model"]).unwrap_or_default(),
        num(v, &["environment", "cores"]).unwrap_or(0.0),
        (num(v, &["environment", "memory_bytes"]).unwrap_or(0.0) / (1u64 << 30) as f64).round(),
        text(v, &["environment", "kernel"]).unwrap_or_default()
    );
    let spread = |k: &str| num(v, &["calibration", "spread", k]).filter(|x| x.is_finite() && *x >= 0.0);
    Ok(Run {
        path: path.to_string(),
        workload: text(v, &["workload", "name"]).ok_or_else(|| bad(format!("{path}: missing workload.name")))?,
        fsync: text(v, &["target", "fsync"]).unwrap_or_default(),
        cpu_model: text(v, &["environment", "cpu_model"]).unwrap_or_default(),
        cores: num(v, &["environment", "cores"]).unwrap_or(0.0),
        figures,
        disk_bytes_per_s: num(v, &["calibration", "disk_seq_write_bytes_per_s"]).filter(|x| *x > 0.0),
        loopback_bytes_per_s: num(v, &["calibration", "loopback_bytes_per_s"]).filter(|x| *x > 0.0),
        fdatasync_p50_us: num(v, &["calibration", "fdatasync_us", "p50"]).filter(|x| *x > 0.0),
        fingerprint: fingerprint(v),
        environment,
        disk_spread: spread("disk_seq_write"),
        loopback_spread: spread("loopback"),
        fdatasync_spread: spread("fdatasync_p50"),
    })
}

fn read_json(path: &Path) -> Result<Value, InputError> {
    let bytes = std::fs::read(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("{}: bad JSON: {e}", path.display())))
}

/// Load runs from files and directories (a directory contributes its `*.json` loadgen results;
/// other JSON there is skipped; a named file must be a loadgen result). Incomplete runs
/// (`"complete": false`) are skipped with a note.
pub fn load_runs(paths: &[PathBuf], notes: &mut Vec<String>) -> Result<Vec<Run>, InputError> {
    let mut runs = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| bad(format!("{}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            let before = runs.len();
            for f in files {
                let v = read_json(&f)?;
                if v.get("schema").and_then(Value::as_str) != Some("loadgen-result/1") {
                    notes.push(format!("skipped {} (not a loadgen result)", f.display()));
                    continue;
                }
                push_run(&mut runs, &v, &f, notes)?;
            }
            if runs.len() == before {
                return Err(bad(format!("{}: no loadgen result files in directory", p.display())));
            }
        } else {
            let v = read_json(p)?;
            push_run(&mut runs, &v, p, notes)?;
        }
    }
    Ok(runs)
}

fn push_run(runs: &mut Vec<Run>, v: &Value, p: &Path, notes: &mut Vec<String>) -> Result<(), InputError> {
    if v.get("complete").and_then(Value::as_bool) == Some(false) {
        notes.push(format!("skipped {} (interrupted run: \"complete\": false)", p.display()));
        return Ok(());
    }
    runs.push(parse_run(v, &p.display().to_string())?);
    Ok(())
}

/// The parameters whose values differ between the runs (base and new pooled), one line each:
/// `workload.producer_rate: base 2000000, new 1500000`. Empty when all runs match.
pub fn fingerprint_differences(base: &[Run], new: &[Run]) -> Vec<String> {
    let mut keys: Vec<&String> = base.iter().chain(new).flat_map(|r| r.fingerprint.keys()).collect();
    keys.sort();
    keys.dedup();
    let values = |runs: &[Run], k: &str| {
        let mut vs: Vec<String> = runs.iter().map(|r| r.fingerprint.get(k).cloned().unwrap_or_else(|| "(absent)".into())).collect();
        vs.sort();
        vs.dedup();
        vs
    };
    let mut out = Vec::new();
    for k in keys {
        let (b, n) = (values(base, k), values(new, k));
        if b.len() > 1 || n.len() > 1 || b != n {
            out.push(format!("{k}: base {}, new {}", b.join(" | "), n.join(" | ")));
        }
    }
    out
}

/// Whether the two sides ran in different environments (CPU model, cores, memory, kernel).
/// Calibrated ceilings are not part of it: two calibrations of one machine can differ by more
/// than 2x (loopback 1.5 vs 3.7 GB/s was seen), far more than the figures they would correct.
pub fn environments_differ(base: &[Run], new: &[Run]) -> Option<String> {
    let first = base.first().or(new.first())?;
    let other = base.iter().chain(new).find(|r| r.environment != first.environment)?;
    Some(format!("environments differ ({} vs {})", first.environment, other.environment))
}

/// Normalize a run's figures by its calibration: throughput / ceiling (disk for durable runs,
/// loopback otherwise), durable latency / fdatasync p50. Efficiency ratios are kept. Only the
/// figures that have a normalized form are returned. Err says why the calibration is unusable:
/// missing, without repeated measurements, or spread beyond [`CALIBRATION_SPREAD_MAX`].
pub fn normalized(run: &Run) -> Result<Run, String> {
    let usable = |name: &str, x: Option<f64>, spread: Option<f64>| -> Result<f64, String> {
        let x = x.ok_or_else(|| format!("{}: no calibrated {name}", run.path))?;
        match spread {
            None => Err(format!("{}: calibrated {name} has no repeated measurements", run.path)),
            Some(s) if s > CALIBRATION_SPREAD_MAX => Err(format!(
                "{}: calibrated {name} spread {:.0}% over its repeats (> {:.0}%): not used",
                run.path,
                s * 100.0,
                CALIBRATION_SPREAD_MAX * 100.0
            )),
            Some(_) => Ok(x),
        }
    };
    let ceiling = if run.durable() {
        usable("disk write bandwidth", run.disk_bytes_per_s, run.disk_spread)?
    } else {
        usable("loopback bandwidth", run.loopback_bytes_per_s, run.loopback_spread)?
    };
    let fsync = if run.durable() { Some(usable("fdatasync p50", run.fdatasync_p50_us, run.fdatasync_spread)?) } else { None };
    let mut out = run.clone();
    out.figures = Vec::new();
    for (name, _unit, better, x) in &run.figures {
        if name.ends_with("records_per_s") {
            // Records per second per GB/s of ceiling.
            out.figures.push((format!("{name}/ceiling"), "rec/s per GB/s", *better, x / (ceiling / 1e9)));
        } else if name.contains("latency") {
            if let Some(f) = fsync {
                out.figures.push((format!("{name}/fdatasync"), "x fdatasync", *better, x / f));
            }
        }
    }
    Ok(out)
}

/// The raw figure a normalized figure derives from.
fn raw_name(normalized: &str) -> &str {
    normalized.trim_end_matches("/ceiling").trim_end_matches("/fdatasync")
}

/// Compare loadgen runs workload by workload. Runs whose workload fingerprints differ are
/// refused (bad input listing the differences) unless `force`.
#[allow(clippy::too_many_arguments)]
pub fn compare_runs(base: &[Run], new: &[Run], normalize: Normalize, d: &Decide, paired: bool, filter: Option<&str>, force: bool, notes: &mut Vec<String>) -> Result<Vec<Comparison>, InputError> {
    let group = |runs: &[Run]| {
        let mut m: BTreeMap<String, Vec<Run>> = BTreeMap::new();
        for r in runs {
            m.entry(r.workload.clone()).or_default().push(r.clone());
        }
        m
    };
    let mut gb = group(base);
    let mut gn = group(new);
    if gb.len() == 1 && gn.len() == 1 && gb.keys().next() != gn.keys().next() {
        let (kb, kn) = (gb.keys().next().cloned().unwrap_or_default(), gn.keys().next().cloned().unwrap_or_default());
        notes.push(format!("comparing different workload names {kb:?} (base) and {kn:?} (new): matched by their parameters"));
        let runs = gn.remove(&kn).unwrap_or_default();
        gn.insert(kb, runs);
    }
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for (w, b_runs) in &mut gb {
        let Some(n_runs) = gn.get_mut(w) else {
            notes.push(format!("workload {w:?} only in base: not compared"));
            continue;
        };
        let diffs = fingerprint_differences(b_runs, n_runs);
        if !diffs.is_empty() {
            if force {
                notes.push(format!("{w}: runs differ in workload parameters (compared anyway: --force): {}", diffs.join("; ")));
            } else {
                refused.push(format!("{w}: runs differ in workload parameters:\n  {}", diffs.join("\n  ")));
                continue;
            }
        }
        let env_differ = environments_differ(b_runs, n_runs);
        let norm = match normalize {
            Normalize::Never => false,
            Normalize::Always => true,
            Normalize::Auto => env_differ.is_some(),
        };
        if let Some(why) = &env_differ {
            notes.push(format!("{w}: {why}"));
        }
        // Normalized runs, or why they cannot be had.
        type Sides = (Vec<Run>, Vec<Run>);
        let normed: Option<Result<Sides, String>> = norm.then(|| {
            let b: Result<Vec<Run>, String> = b_runs.iter().map(normalized).collect();
            let n: Result<Vec<Run>, String> = n_runs.iter().map(normalized).collect();
            Ok((b?, n?))
        });
        let raw_decides = match &normed {
            None => true,
            Some(Ok(_)) => {
                notes.push(format!("{w}: normalized by the in-run calibration; raw figures shown beside the normalized ones, which decide"));
                env_differ.is_none()
            }
            Some(Err(why)) => {
                notes.push(format!("{w}: cannot normalize ({why})"));
                if env_differ.is_some() {
                    notes.push(format!("{w}: raw figures from different environments: no verdict"));
                }
                env_differ.is_none()
            }
        };
        let pair = paired && b_runs.len() == n_runs.len();
        if paired && !pair {
            notes.push(format!("{w}: {} base vs {} new runs: cannot pair, comparing unpaired", b_runs.len(), n_runs.len()));
        }
        if b_runs.len() < MIN_UNITS_FOR_VERDICT || n_runs.len() < MIN_UNITS_FOR_VERDICT {
            notes.push(format!(
                "{w}: {} base / {} new runs: fewer than {MIN_UNITS_FOR_VERDICT} independent runs per side give figures and intervals but no verdict; run each side {MIN_UNITS_FOR_VERDICT} or more times (scripts/suite --runs 3)",
                b_runs.len(),
                n_runs.len()
            ));
        }
        let mut names: Vec<(String, &'static str, Better)> = Vec::new();
        for r in b_runs.iter() {
            for (name, unit, better, _) in &r.figures {
                if !names.iter().any(|(n, _, _)| n == name) {
                    names.push((name.clone(), unit, *better));
                }
            }
        }
        let one_figure = |b_runs: &[Run], n_runs: &[Run], name: &str, unit: &'static str, better: Better, notes: &mut Vec<String>| -> Option<Comparison> {
            let pick = |runs: &[Run]| -> Vec<f64> {
                runs.iter().filter_map(|r| r.figures.iter().find(|f| f.0 == name).map(|f| f.3)).filter(|x| x.is_finite()).collect()
            };
            let (bs, ns) = (pick(b_runs), pick(n_runs));
            if bs.is_empty() || ns.is_empty() {
                notes.push(format!("{w}: {name} missing on one side"));
                return None;
            }
            Some(if pair && bs.len() == ns.len() {
                // Runs in file-name (= start time) order: run i of each side ran next to each other.
                let one = |xs: &[f64]| xs.iter().map(|x| vec![*x]).collect::<Vec<Vec<f64>>>();
                compare_paired(w, name, unit, better, &one(&bs), &one(&ns), d)
            } else {
                compare_samples(w, name, unit, better, &bs, &ns, d)
            })
        };
        let normed_runs = match &normed {
            Some(Ok((b, n))) => Some((b, n)),
            _ => None,
        };
        for (name, unit, better) in names {
            if filter.is_some_and(|f| !name.contains(f) && !w.contains(f)) {
                continue;
            }
            let norm_row = normed_runs.and_then(|(nb, nn)| {
                let nf = nb.first()?.figures.iter().find(|f| raw_name(&f.0) == name)?;
                let (nname, nunit, nbetter) = (nf.0.clone(), nf.1, nf.2);
                let mut c = one_figure(nb, nn, &nname, nunit, nbetter, notes)?;
                c.basis = "normalized";
                Some(c)
            });
            let Some(mut raw) = one_figure(b_runs, n_runs, &name, unit, better, notes) else { continue };
            if norm_row.is_some() {
                raw.gating = false;
            } else if !raw_decides && !name.starts_with("efficiency.") {
                // Different environments without a usable calibration: figures only.
                raw.verdict = Verdict::Undecided;
            }
            out.push(raw);
            out.extend(norm_row);
        }
    }
    for w in gn.keys() {
        if !gb.contains_key(w) {
            notes.push(format!("workload {w:?} only in new: not compared"));
        }
    }
    if !refused.is_empty() {
        return Err(bad(format!(
            "refusing to compare runs of different workloads (use --force to compare them anyway):\n{}",
            refused.join("\n")
        )));
    }
    if out.is_empty() {
        return Err(bad("nothing to compare: no workload with figures on both sides"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// criterion output
// ---------------------------------------------------------------------------------------------

/// One criterion benchmark's samples: nanoseconds per iteration.
#[derive(Debug, Clone)]
pub struct CriterionBench {
    pub id: String,
    pub ns_per_iter: Vec<f64>,
    /// ("bytes" | "elements", amount per iteration)
    pub throughput: Option<(String, f64)>,
}

/// Find every `<bench>/new/sample.json` under `root`.
pub fn load_criterion_dir(root: &Path) -> Result<Vec<CriterionBench>, InputError> {
    if !root.is_dir() {
        return Err(bad(format!("{}: not a directory (want criterion output, e.g. target/criterion)", root.display())));
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut guard = 0usize;
    while let Some(dir) = stack.pop() {
        guard += 1;
        if guard > 100_000 {
            return Err(bad(format!("{}: too many directories", root.display())));
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "new" {
                let sample = p.join("sample.json");
                if sample.is_file() {
                    out.push(parse_criterion(&p, root)?);
                }
            } else if name != "base" && name != "report" && name != "change" {
                stack.push(p);
            }
        }
    }
    if out.is_empty() {
        return Err(bad(format!("{}: no criterion samples (*/new/sample.json) found", root.display())));
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn parse_criterion(new_dir: &Path, root: &Path) -> Result<CriterionBench, InputError> {
    let sample = read_json(&new_dir.join("sample.json"))?;
    let arr = |k: &str| -> Result<Vec<f64>, InputError> {
        sample
            .get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .ok_or_else(|| bad(format!("{}: sample.json lacks {k:?}", new_dir.display())))
    };
    let (iters, times) = (arr("iters")?, arr("times")?);
    if iters.len() != times.len() || iters.is_empty() {
        return Err(bad(format!("{}: sample.json iters/times mismatch", new_dir.display())));
    }
    let ns_per_iter: Vec<f64> = iters.iter().zip(&times).filter(|(i, _)| **i > 0.0).map(|(i, t)| t / i).collect();
    let rel = new_dir.parent().unwrap_or(new_dir).strip_prefix(root).unwrap_or(new_dir).display().to_string();
    let mut id = rel;
    let mut throughput = None;
    let bench_json = new_dir.join("benchmark.json");
    if bench_json.is_file() {
        let b = read_json(&bench_json)?;
        if let Some(full) = b.get("full_id").and_then(Value::as_str) {
            id = full.to_string();
        }
        if let Some(Value::Object(t)) = b.get("throughput") {
            for (k, v) in t {
                let amount = v.as_f64().or_else(|| v.get(0).and_then(Value::as_f64));
                if let Some(a) = amount {
                    let kind = if k.to_lowercase().contains("byte") { "bytes" } else { "elements" };
                    throughput = Some((kind.to_string(), a));
                }
            }
        }
    }
    Ok(CriterionBench { id, ns_per_iter, throughput })
}

/// Compare criterion runs. With one directory per side every sample is an observation; with
/// several per side (rounds of an interleaved A/B run) each directory is a cluster
/// ([`compare_clustered`]) and the `n` column counts rounds.
pub fn compare_criterion(base: &[CriterionBench], new: &[CriterionBench], d: &Decide, paired: bool, filter: Option<&str>, notes: &mut Vec<String>) -> Result<Vec<Comparison>, InputError> {
    // One cluster (round) per input directory.
    let pool = |v: &[CriterionBench]| {
        let mut m: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
        for b in v {
            if !b.ns_per_iter.is_empty() {
                m.entry(b.id.clone()).or_default().push(b.ns_per_iter.clone());
            }
        }
        m
    };
    let (pb, pn) = (pool(base), pool(new));
    let mut out = Vec::new();
    for (id, bs) in &pb {
        if filter.is_some_and(|f| !id.contains(f)) {
            continue;
        }
        match pn.get(id) {
            Some(ns) if paired && bs.len() == ns.len() => out.push(compare_paired("criterion", id, "ns/iter", Better::Lower, bs, ns, d)),
            Some(ns) if paired => notes.push(format!("{id}: {} base rounds vs {} new rounds: cannot pair, not compared", bs.len(), ns.len())),
            Some(ns) if bs.len() >= 2 && ns.len() >= 2 => out.push(compare_clustered("criterion", id, "ns/iter", Better::Lower, bs, ns, d)),
            Some(ns) => {
                let flat = |cs: &Vec<Vec<f64>>| cs.iter().flatten().copied().collect::<Vec<f64>>();
                out.push(compare_samples("criterion", id, "ns/iter", Better::Lower, &flat(bs), &flat(ns), d))
            }
            None => notes.push(format!("benchmark {id:?} only in base: not compared")),
        }
    }
    for id in pn.keys() {
        if !pb.contains_key(id) {
            notes.push(format!("benchmark {id:?} only in new: not compared"));
        }
    }
    if out.is_empty() {
        return Err(bad("nothing to compare: no criterion benchmark present on both sides"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn fmt_value(x: f64, unit: &str) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    match unit {
        "ns/iter" => {
            if x >= 1e9 {
                format!("{:.3} s", x / 1e9)
            } else if x >= 1e6 {
                format!("{:.3} ms", x / 1e6)
            } else if x >= 1e3 {
                format!("{:.3} us", x / 1e3)
            } else {
                format!("{x:.1} ns")
            }
        }
        "ratio" | "x fdatasync" => format!("{x:.3}"),
        _ => {
            let (v, s) = if x.abs() >= 1e9 {
                (x / 1e9, "G")
            } else if x.abs() >= 1e6 {
                (x / 1e6, "M")
            } else if x.abs() >= 1e3 {
                (x / 1e3, "k")
            } else {
                (x, "")
            };
            format!("{v:.2}{s} {unit}")
        }
    }
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:+.1}%", x * 100.0)
    } else {
        "-".into()
    }
}

/// Render the comparison table.
pub fn render_table(rows: &[Comparison], d: &Decide) -> String {
    render_table_with(rows, d, &[])
}

fn is_informational(r: &Comparison, informational: &[String]) -> bool {
    informational.iter().any(|i| !i.is_empty() && (r.figure.contains(i.as_str()) || r.group.contains(i.as_str())))
}

/// Regressions that fail the comparison (not informational, not a raw figure shown beside its
/// normalized form).
pub fn gating_regressions<'a>(rows: &'a [Comparison], informational: &[String]) -> Vec<&'a Comparison> {
    rows.iter().filter(|r| r.verdict == Verdict::Regression && r.gating && !is_informational(r, informational)).collect()
}

/// Gating figures that got no verdict (too few runs, or no usable basis).
pub fn gating_undecided<'a>(rows: &'a [Comparison], informational: &[String]) -> Vec<&'a Comparison> {
    rows.iter().filter(|r| r.verdict == Verdict::Undecided && r.gating && !is_informational(r, informational)).collect()
}

/// What the comparison as a whole decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every gating figure was decided and none regressed. Exit 0.
    NoRegression,
    /// At least one gating figure regressed. Exit 1.
    Regression,
    /// No regression among the decided figures, but some gating figure could not be decided.
    /// Exit 3: not a pass.
    Undecided,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::NoRegression => 0,
            Outcome::Regression => 1,
            Outcome::Undecided => 3,
        }
    }
}

pub fn outcome(rows: &[Comparison], informational: &[String]) -> Outcome {
    if !gating_regressions(rows, informational).is_empty() {
        Outcome::Regression
    } else if !gating_undecided(rows, informational).is_empty() {
        Outcome::Undecided
    } else {
        Outcome::NoRegression
    }
}

/// [`render_table`], marking informational figures.
pub fn render_table_with(rows: &[Comparison], d: &Decide, informational: &[String]) -> String {
    let mut s = String::new();
    let header = ["group", "figure", "base", "new", "change", "CI", "MWU p", "n", "verdict"];
    let mut table: Vec<[String; 9]> = vec![header.map(String::from)];
    for r in rows {
        let better = match r.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        };
        let verdict = match r.verdict {
            Verdict::Regression if !r.gating => format!("regression? (raw, shown beside the normalized figure, {better})"),
            Verdict::Regression if is_informational(r, informational) => format!("regression? (informational, {better})"),
            Verdict::Regression => format!("REGRESSION ({better})"),
            Verdict::Improvement => "improved".to_string(),
            Verdict::NoChange => "no significant change".to_string(),
            Verdict::Undecided => "undecided (no verdict)".to_string(),
        };
        table.push([
            if r.basis == "normalized" { format!("{} (normalized)", r.group) } else { r.group.clone() },
            r.figure.clone(),
            fmt_value(r.base_stat, &r.unit),
            fmt_value(r.new_stat, &r.unit),
            pct(r.change),
            format!("[{}, {}]", pct(r.ci_low), pct(r.ci_high)),
            format!("{:.3}", r.mwu_p),
            format!("{}/{}", r.base_n, r.new_n),
            verdict,
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &table {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    for (k, row) in table.iter().enumerate() {
        let line: Vec<String> = row.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
        if k == 0 {
            let _ = writeln!(s, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        }
    }
    let regs = gating_regressions(rows, informational);
    let _ = writeln!(
        s,
        "\nstatistic: {:?} (change = new/base - 1); {:.0}% bootstrap interval, {} resamples, seed {}; threshold {:.1}%; method {:?}",
        d.stat,
        d.confidence * 100.0,
        d.resamples,
        d.seed,
        d.threshold * 100.0,
        d.method
    );
    let undecided = gating_undecided(rows, informational);
    if regs.is_empty() && !undecided.is_empty() {
        let min_n = undecided.iter().map(|r| r.base_n.min(r.new_n)).min().unwrap_or(0);
        let why = if min_n < MIN_UNITS_FOR_VERDICT {
            format!("fewer than {MIN_UNITS_FOR_VERDICT} independent runs per side")
        } else {
            "no usable basis for comparison (see the notes)".to_string()
        };
        let _ = writeln!(
            s,
            "UNDECIDED: no verdict for {} figure(s): {why}. The figures and intervals above are descriptive only; this is not a pass.",
            undecided.len()
        );
    } else if regs.is_empty() {
        let _ = writeln!(s, "no regression: no figure's interval lies beyond the {:.1}% threshold in the bad direction", d.threshold * 100.0);
        let wide = inconclusive(rows, d, informational);
        if !wide.is_empty() {
            let _ = writeln!(
                s,
                "inconclusive: {} figure(s) have intervals reaching beyond the threshold in the bad direction, so a regression of that size is not excluded (more runs narrow it): {}",
                wide.len(),
                wide.iter().map(|r| format!("{} {}", r.figure, fmt_interval(r))).collect::<Vec<_>>().join(", ")
            );
        }
    } else {
        for r in &regs {
            let _ = writeln!(
                s,
                "REGRESSION: {} {} moved {} (interval {}..{}) from {} to {}",
                r.group,
                r.figure,
                pct(r.change),
                pct(r.ci_low),
                pct(r.ci_high),
                fmt_value(r.base_stat, &r.unit),
                fmt_value(r.new_stat, &r.unit)
            );
        }
    }
    s
}

/// Gating figures without a regression verdict whose interval still reaches beyond the
/// threshold in the bad direction: too noisy to exclude a regression of that size.
pub fn inconclusive<'a>(rows: &'a [Comparison], d: &Decide, informational: &[String]) -> Vec<&'a Comparison> {
    rows.iter()
        .filter(|r| r.gating && r.verdict == Verdict::NoChange && !is_informational(r, informational))
        .filter(|r| match r.better {
            Better::Higher => r.ci_low < -d.threshold,
            Better::Lower => r.ci_high > d.threshold,
        })
        .collect()
}

fn fmt_interval(r: &Comparison) -> String {
    format!("[{}, {}]", pct(r.ci_low), pct(r.ci_high))
}

/// Run the comparison; prints the table; returns (rows, notes) or bad input.
pub fn evaluate(args: &CompareArgs) -> Result<(Vec<Comparison>, Vec<String>, Decide), InputError> {
    let (base_paths, new_paths) = if !args.base.is_empty() || !args.new.is_empty() {
        if !args.paths.is_empty() {
            return Err(bad("give either BASE NEW… positionally or --base … --new …, not both"));
        }
        (args.base.clone(), args.new.clone())
    } else {
        match args.paths.split_first() {
            Some((b, rest)) => (vec![b.clone()], rest.to_vec()),
            None => (Vec::new(), Vec::new()),
        }
    };
    if base_paths.is_empty() || new_paths.is_empty() {
        return Err(bad("need a baseline and at least one new run: loadgen compare BASE NEW… (or --base … --new …)"));
    }
    if !(args.threshold_pct >= 0.0 && args.threshold_pct.is_finite()) {
        return Err(bad(format!("bad --threshold-pct {}", args.threshold_pct)));
    }
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        return Err(bad(format!("bad --confidence {}: want a fraction in (0, 1), e.g. 0.95", args.confidence)));
    }
    let d = Decide {
        threshold: args.threshold_pct / 100.0,
        confidence: args.confidence,
        resamples: args.resamples.clamp(100, 1_000_000),
        seed: args.seed,
        method: args.method,
        stat: args.stat,
    };
    let mut notes = Vec::new();
    let rows = if args.criterion {
        let load = |ps: &[PathBuf]| -> Result<Vec<CriterionBench>, InputError> {
            let mut v = Vec::new();
            for p in ps {
                v.extend(load_criterion_dir(p)?);
            }
            Ok(v)
        };
        let (b, n) = (load(&base_paths)?, load(&new_paths)?);
        compare_criterion(&b, &n, &d, args.paired, args.filter.as_deref(), &mut notes)?
    } else {
        let b = load_runs(&base_paths, &mut notes)?;
        let n = load_runs(&new_paths, &mut notes)?;
        if b.is_empty() || n.is_empty() {
            return Err(bad("no complete runs on one side"));
        }
        compare_runs(&b, &n, args.normalize, &d, args.paired, args.filter.as_deref(), args.force, &mut notes)?
    };
    Ok((rows, notes, d))
}

/// `loadgen compare`: exit code 0 (no regression), 1 (regression), 2 (bad input), 3 (undecided).
pub fn run(args: CompareArgs) -> i32 {
    match evaluate(&args) {
        Err(e) => {
            eprintln!("loadgen compare: {e}");
            2
        }
        Ok((rows, notes, d)) => {
            for n in &notes {
                println!("note: {n}");
            }
            print!("{}", render_table_with(&rows, &d, &args.informational));
            let outcome = outcome(&rows, &args.informational);
            if let Some(path) = &args.json_out {
                let doc = serde_json::json!({
                    "threshold": d.threshold, "confidence": d.confidence, "seed": d.seed,
                    "outcome": outcome,
                    "regression": outcome == Outcome::Regression,
                    "notes": notes,
                    "inconclusive": inconclusive(&rows, &d, &args.informational).iter().map(|r| format!("{} {}", r.group, r.figure)).collect::<Vec<_>>(),
                    "informational": args.informational,
                    "figures": rows,
                });
                let written = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string()).and_then(|b| std::fs::write(path, b).map_err(|e| e.to_string()));
                if let Err(e) = written {
                    eprintln!("loadgen compare: cannot write {}: {e}", path.display());
                    return 2;
                }
            }
            outcome.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn producer_settings_are_part_of_the_fingerprint_with_defaults_for_old_results() {
        let old = serde_json::json!({"workload": {"acks": 1}, "target": {"kind": "embedded"}});
        let none = serde_json::json!({"workload": {"acks": 1}, "target": {"kind": "embedded"},
            "producer": {"compression": {"codec": "none"}, "idempotent": false, "headers": 0}});
        let lz4 = serde_json::json!({"workload": {"acks": 1}, "target": {"kind": "embedded"},
            "producer": {"compression": {"codec": "lz4"}, "idempotent": true, "headers": 2, "header_value_bytes": 8}});
        assert_eq!(fingerprint(&old), fingerprint(&none));
        let f = fingerprint(&lz4);
        assert_eq!(f["producer.compression"], "lz4");
        assert_eq!(f["producer.idempotent"], "true");
        assert_eq!(f["producer.headers"], "2 x 8 B");
        assert_eq!(f["consumer.mode"], "fetch");
        let group = serde_json::json!({"workload": {"acks": 1}, "target": {"kind": "embedded"},
            "consumer": {"mode": "group", "group": {"commit_interval_ms": 500, "assignor": "range"}}});
        let g = fingerprint(&group);
        assert_eq!((g["consumer.mode"].as_str(), g["consumer.group.commit_interval_ms"].as_str()), ("group", "500"));
    }

    use super::*;

    /// `n` samples of `center * (1 + u)`, u uniform in [-noise, +noise].
    fn noisy(center: f64, noise: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| center * (1.0 + rng.gen_range(-noise..=noise))).collect()
    }

    fn decide() -> Decide {
        Decide { resamples: 2000, ..Decide::default() }
    }

    #[test]
    fn eight_percent_noise_without_shift_never_flags() {
        // 20 independent trials: not one lucky seed.
        for seed in 0..20 {
            let base = noisy(100.0, 0.08, 10, seed);
            let new = noisy(100.0, 0.08, 10, 1000 + seed);
            for better in [Better::Lower, Better::Higher] {
                let c = compare_samples("g", "f", "us", better, &base, &new, &decide());
                assert_ne!(c.verdict, Verdict::Regression, "seed {seed}: {c:?}");
                assert!(c.ci_low < 0.05 && c.ci_high > -0.05, "interval must reach inside the threshold: {c:?}");
            }
        }
    }

    #[test]
    fn twenty_percent_shift_flags_in_the_bad_direction_only() {
        for seed in 0..20 {
            let base = noisy(100.0, 0.08, 10, seed);
            let slower = noisy(120.0, 0.08, 10, 1000 + seed);
            let c = compare_samples("g", "time", "ns/iter", Better::Lower, &base, &slower, &decide());
            assert_eq!(c.verdict, Verdict::Regression, "seed {seed}: {c:?}");
            assert!(c.ci_low > 0.05 && c.change > 0.1, "{c:?}");
            // The same 20% increase of a throughput figure is an improvement, not a regression.
            let c = compare_samples("g", "rate", "rec/s", Better::Higher, &base, &slower, &decide());
            assert_eq!(c.verdict, Verdict::Improvement, "seed {seed}: {c:?}");
            // Throughput down 20%: regression.
            let lower = noisy(80.0, 0.08, 10, 2000 + seed);
            let c = compare_samples("g", "rate", "rec/s", Better::Higher, &base, &lower, &decide());
            assert_eq!(c.verdict, Verdict::Regression, "seed {seed}: {c:?}");
        }
    }

    #[test]
    fn a_shift_inside_the_threshold_does_not_flag_even_when_certain() {
        // 3% slower with almost no noise: real, but below the 5% threshold.
        let base = noisy(100.0, 0.001, 10, 1);
        let new = noisy(103.0, 0.001, 10, 2);
        let c = compare_samples("g", "t", "ns/iter", Better::Lower, &base, &new, &decide());
        assert_eq!(c.verdict, Verdict::NoChange);
        assert!(c.ci_low > 0.02 && c.ci_high < 0.04, "{c:?}");
        let strict = Decide { threshold: 0.01, ..decide() };
        assert_eq!(compare_samples("g", "t", "ns/iter", Better::Lower, &base, &new, &strict).verdict, Verdict::Regression);
    }

    #[test]
    fn bootstrap_is_reproducible_with_a_seed() {
        let base = noisy(100.0, 0.08, 10, 3);
        let new = noisy(110.0, 0.08, 10, 4);
        let a = bootstrap_ci(&base, &new, Stat::Median, 0.95, 2000, 7);
        let b = bootstrap_ci(&base, &new, Stat::Median, 0.95, 2000, 7);
        assert_eq!(a, b);
        assert!(a.0 < a.1);
    }

    #[test]
    fn mann_whitney_separates_shifted_samples() {
        let base = noisy(100.0, 0.08, 10, 5);
        let new = noisy(130.0, 0.08, 10, 6);
        let (u, p) = mann_whitney(&base, &new);
        assert_eq!(u, 100.0, "every new sample is larger");
        assert!(p < 0.001, "p = {p}");
        let (_, p_same) = mann_whitney(&base, &base);
        assert!(p_same > 0.9, "p = {p_same}");
        let d = Decide { method: Method::Mwu, ..decide() };
        assert_eq!(compare_samples("g", "t", "ns/iter", Better::Lower, &base, &new, &d).verdict, Verdict::Regression);
        let d = Decide { method: Method::Both, ..decide() };
        assert_eq!(compare_samples("g", "t", "ns/iter", Better::Lower, &base, &new, &d).verdict, Verdict::Regression);
    }

    #[test]
    fn normal_cdf_matches_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-6);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-5);
        assert!((normal_cdf(-1.0) - 0.158_655).abs() < 1e-5);
    }

    pub(crate) fn result_json(workload: &str, rps: f64, p99: f64, cpu: &str, disk: f64) -> Value {
        let lat = |p50: f64, p99: f64| serde_json::json!({"count": 1000, "p50": p50, "p90": p99 * 0.8, "p99": p99, "p999": p99 * 1.5, "p9999": p99 * 2.0, "max": p99 * 3.0, "mean": p50});
        serde_json::json!({
            "schema": "loadgen-result/1", "started_at": "2026-11-24T20:00:00Z", "duration_s": 10.0,
            "workload": {"name": workload, "topics": 1, "partitions_per_topic": 1, "message_size": 100, "producer_rate": 0},
            "target": {"kind": "embedded", "bootstrap": "127.0.0.1:9092", "fsync": "group"},
            "environment": {"cpu_model": cpu, "cores": 2, "memory_bytes": 1u64 << 34, "kernel": "6.1", "git_commit": "abc"},
            "calibration": {"disk_seq_write_bytes_per_s": disk, "loopback_bytes_per_s": 4e9, "fdatasync_us": lat(190.0, 400.0),
                "spread": {"disk_seq_write": 0.03, "loopback": 0.04, "fdatasync_p50": 0.05}},
            "publish": {"records": 1000, "bytes": 100000, "errors": 0, "records_per_s": rps, "bytes_per_s": rps * 100.0, "latency_us": lat(p99 / 4.0, p99), "delay_us": lat(1.0, 2.0)},
            "end_to_end": {"records": 1000, "records_per_s": rps, "latency_us": lat(p99 / 3.0, p99 * 1.2)},
            "efficiency": {"disk_write_fraction": rps * 100.0 / disk},
            "projection": {"events_per_day": rps * 86400.0}
        })
    }

    fn runs(center_rps: f64, p99: f64, cpu: &str, disk: f64, n: usize, seed: u64) -> Vec<Run> {
        let r = noisy(center_rps, 0.08, n, seed);
        let l = noisy(p99, 0.08, n, seed + 77);
        r.iter().zip(&l).enumerate().map(|(i, (rps, p))| parse_run(&result_json("max-throughput-100b", *rps, *p, cpu, disk), &format!("run{i}.json")).unwrap()).collect()
    }

    #[test]
    fn loadgen_runs_compare_figure_by_figure() {
        let base = runs(1e6, 1000.0, "cpu A", 6e8, 6, 1);
        let same = runs(1e6, 1000.0, "cpu A", 6e8, 6, 2);
        let mut notes = Vec::new();
        let rows = compare_runs(&base, &same, Normalize::Auto, &decide(), false, None, false, &mut notes).unwrap();
        assert!(rows.iter().any(|r| r.figure == "publish.records_per_s"));
        assert!(rows.iter().any(|r| r.figure == "end_to_end.latency p99.9"));
        assert!(rows.iter().any(|r| r.figure == "efficiency.disk_write_fraction"));
        assert!(rows.iter().all(|r| r.verdict != Verdict::Regression), "{rows:#?}");

        // Throughput 20% down and p99 latency 20% up: both flagged.
        let worse = runs(8e5, 1200.0, "cpu A", 6e8, 6, 3);
        let rows = compare_runs(&base, &worse, Normalize::Auto, &decide(), false, None, false, &mut notes).unwrap();
        let get = |f: &str| rows.iter().find(|r| r.figure == f).unwrap().verdict;
        assert_eq!(get("publish.records_per_s"), Verdict::Regression);
        assert_eq!(get("publish.latency p99"), Verdict::Regression);
        assert!(render_table(&rows, &decide()).contains("REGRESSION: max-throughput-100b publish.records_per_s"));
    }

    #[test]
    fn interleaved_loadgen_runs_compare_paired() {
        // Five A/B pairs whose machine load drifts from pair to pair (+-25%); B is 20% slower.
        let levels = [1.0, 0.8, 1.2, 0.9, 1.1];
        let mk = |f: f64, seed: u64| -> Vec<Run> {
            let jitter = noisy(1.0, 0.03, 5, seed);
            levels.iter().zip(&jitter).enumerate().map(|(i, (l, j))| parse_run(&result_json("smoke", 1e6 * l * j * f, 1000.0, "A", 6e8), &format!("{i}.json")).unwrap()).collect()
        };
        let (a, same, slow) = (mk(1.0, 1), mk(1.0, 2), mk(0.8, 3));
        let mut notes = Vec::new();
        let get = |rows: &[Comparison]| rows.iter().find(|r| r.figure == "publish.records_per_s").unwrap().verdict;
        assert_eq!(get(&compare_runs(&a, &slow, Normalize::Never, &decide(), true, None, false, &mut notes).unwrap()), Verdict::Regression);
        assert_eq!(get(&compare_runs(&a, &same, Normalize::Never, &decide(), true, None, false, &mut notes).unwrap()), Verdict::NoChange);
        // Unpaired, the drift hides the 20% drop.
        assert_eq!(get(&compare_runs(&a, &slow, Normalize::Never, &decide(), false, None, false, &mut notes).unwrap()), Verdict::NoChange);
    }

    #[test]
    fn different_machines_are_normalized_by_calibration() {
        // New machine: disk twice as fast, throughput twice as high: same efficiency, no regression,
        // and no spurious "improvement" either.
        let base = runs(1e6, 1000.0, "cpu A", 6e8, 6, 1);
        let new = runs(2e6, 1000.0, "cpu B", 12e8, 6, 2);
        let mut notes = Vec::new();
        let rows = compare_runs(&base, &new, Normalize::Auto, &decide(), false, None, false, &mut notes).unwrap();
        assert!(notes.iter().any(|n| n.contains("normalized by the in-run calibration")), "{notes:?}");
        let tput = rows.iter().find(|r| r.figure == "publish.records_per_s/ceiling").unwrap();
        assert_eq!(tput.verdict, Verdict::NoChange, "{tput:?}");
        assert!(tput.change.abs() < 0.1);
        // The raw figure is printed beside it (+100%), but does not decide.
        let raw = rows.iter().find(|r| r.figure == "publish.records_per_s").unwrap();
        assert!(!raw.gating && raw.change > 0.5, "{raw:?}");
        assert_eq!(outcome(&rows, &[]), Outcome::NoRegression);
        // Same faster machine but throughput only equal to the old one: efficiency halved -> regression.
        let new_bad = runs(1e6, 1000.0, "cpu B", 12e8, 6, 2);
        let rows = compare_runs(&base, &new_bad, Normalize::Auto, &decide(), false, None, false, &mut notes).unwrap();
        let tput = rows.iter().find(|r| r.figure == "publish.records_per_s/ceiling").unwrap();
        assert_eq!(tput.verdict, Verdict::Regression);
        let eff = rows.iter().find(|r| r.figure == "efficiency.disk_write_fraction").unwrap();
        assert_eq!(eff.verdict, Verdict::Regression);
    }

    fn write_runs(dir: &Path, docs: &[Value]) -> Vec<PathBuf> {
        std::fs::create_dir_all(dir).unwrap();
        docs.iter()
            .enumerate()
            .map(|(i, v)| {
                let p = dir.join(format!("{i}.json"));
                std::fs::write(&p, v.to_string()).unwrap();
                p
            })
            .collect()
    }

    fn cli(paths: Vec<PathBuf>) -> CompareArgs {
        CompareArgs {
            paths,
            base: vec![],
            new: vec![],
            criterion: false,
            threshold_pct: 5.0,
            confidence: 0.95,
            resamples: 2000,
            seed: 1,
            method: Method::Bootstrap,
            stat: Stat::Median,
            normalize: Normalize::Auto,
            paired: false,
            informational: vec![],
            filter: None,
            json_out: None,
            force: false,
        }
    }

    #[test]
    fn one_base_run_against_two_new_runs_is_undecided_not_a_pass() {
        // Regression test: `compare BASE.json NEW1.json NEW2.json` with throughput -27.9% and p99
        // +1400% printed "no regression" and exited 0.
        let dir = tempfile::tempdir().unwrap();
        let base = write_runs(&dir.path().join("b"), &[result_json("smoke", 1e6, 1000.0, "A", 6e8)]);
        let new = write_runs(&dir.path().join("n"), &[result_json("smoke", 7.1e5, 15000.0, "A", 6e8), result_json("smoke", 7.3e5, 15000.0, "A", 6e8)]);
        let mut args = cli(vec![base[0].clone(), new[0].clone(), new[1].clone()]);
        let (rows, notes, d) = evaluate(&args).unwrap();
        assert!(rows.iter().all(|r| r.verdict == Verdict::Undecided), "{rows:#?}");
        let tput = rows.iter().find(|r| r.figure == "publish.records_per_s").unwrap();
        assert!((tput.change + 0.28).abs() < 0.01, "the figures are still given: {tput:?}");
        assert!(notes.iter().any(|n| n.contains("no verdict")), "{notes:?}");
        let table = render_table(&rows, &d);
        assert!(table.contains("UNDECIDED") && !table.contains("no regression"), "{table}");
        let out = dir.path().join("v.json");
        args.json_out = Some(out.clone());
        assert_eq!(run(args), 3);
        let v: Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
        assert_eq!(v["outcome"], "undecided");
        assert_eq!(v["regression"], false);
        // Three runs per side decide.
        write_runs(&dir.path().join("b3"), &(0..3).map(|i| result_json("smoke", 1e6 + i as f64 * 1e3, 1000.0, "A", 6e8)).collect::<Vec<_>>());
        write_runs(&dir.path().join("n3"), &(0..3).map(|i| result_json("smoke", 7.2e5 + i as f64 * 1e3, 15000.0, "A", 6e8)).collect::<Vec<_>>());
        assert_eq!(run(cli(vec![dir.path().join("b3"), dir.path().join("n3")])), 1);
    }

    #[test]
    fn runs_with_different_parameters_are_refused_unless_forced() {
        // Regression test: a --rate 1500000 run was flagged -25% against the 2M default with no
        // word that the targets differ.
        let dir = tempfile::tempdir().unwrap();
        let mk = |rate: f64, rps: f64| {
            let mut v = result_json("max-throughput-100b", rps, 1000.0, "A", 6e8);
            v["workload"]["producer_rate"] = serde_json::json!(rate);
            v["workload"]["target_rate"] = serde_json::json!(rate);
            v
        };
        write_runs(&dir.path().join("b"), &[mk(2e6, 2e6), mk(2e6, 2e6), mk(2e6, 2e6)]);
        write_runs(&dir.path().join("n"), &[mk(1.5e6, 1.5e6), mk(1.5e6, 1.5e6), mk(1.5e6, 1.5e6)]);
        let args = cli(vec![dir.path().join("b"), dir.path().join("n")]);
        let err = evaluate(&args).unwrap_err().to_string();
        assert!(err.contains("workload.producer_rate: base 2000000, new 1500000"), "{err}");
        assert!(err.contains("--force"), "{err}");
        assert_eq!(run(args.clone()), 2);
        let forced = CompareArgs { force: true, ..args };
        let (rows, notes, _) = evaluate(&forced).unwrap();
        assert!(notes.iter().any(|n| n.contains("producer_rate")), "{notes:?}");
        assert_eq!(outcome(&rows, &[]), Outcome::Regression);
        // Every parameter counts: acks, durability, target kind.
        for (path, val) in [(["workload", "acks"], serde_json::json!(1)), (["target", "fsync"], serde_json::json!("never")), (["target", "kind"], serde_json::json!("external"))] {
            let mut a = result_json("smoke", 1e6, 1000.0, "A", 6e8);
            a["workload"]["acks"] = serde_json::json!(-1);
            let mut b = a.clone();
            b[path[0]][path[1]] = val;
            let diffs = fingerprint_differences(&[parse_run(&a, "a").unwrap()], &[parse_run(&b, "b").unwrap()]);
            assert_eq!(diffs.len(), 1, "{path:?}: {diffs:?}");
            assert!(diffs[0].starts_with(&format!("{}.{}", path[0], path[1])), "{diffs:?}");
        }
    }

    #[test]
    fn same_environment_is_not_normalized_even_when_calibrations_disagree() {
        // Regression test: `--normalize auto` turned +1.5% raw throughput into -58.5% because two
        // calibrations of one machine's loopback read 1,506 vs 3,683 MB/s.
        let mk = |rps: f64, loopback: f64| {
            let mut v = result_json("smoke", rps, 1000.0, "A", 6e8);
            v["target"]["fsync"] = serde_json::json!("never");
            v["calibration"]["loopback_bytes_per_s"] = serde_json::json!(loopback);
            parse_run(&v, "x").unwrap()
        };
        let base: Vec<Run> = (0..3).map(|i| mk(1e6 + i as f64 * 1e3, 1.506e9)).collect();
        let new: Vec<Run> = (0..3).map(|i| mk(1.015e6 + i as f64 * 1e3, 3.683e9)).collect();
        let mut notes = Vec::new();
        let rows = compare_runs(&base, &new, Normalize::Auto, &decide(), false, None, false, &mut notes).unwrap();
        assert!(rows.iter().all(|r| r.basis == "raw" && r.gating), "{rows:#?}");
        let tput = rows.iter().find(|r| r.figure == "publish.records_per_s").unwrap();
        assert!((tput.change - 0.015).abs() < 0.005, "{tput:?}");
        assert_eq!(outcome(&rows, &[]), Outcome::NoRegression);
    }

    #[test]
    fn a_wide_interval_is_called_inconclusive_not_silently_passed() {
        let base: Vec<Run> = [1.0e6, 0.6e6, 1.2e6].iter().map(|r| parse_run(&result_json("smoke", *r, 1000.0, "A", 6e8), "b").unwrap()).collect();
        let new: Vec<Run> = [0.9e6, 1.1e6, 0.62e6].iter().map(|r| parse_run(&result_json("smoke", *r, 1000.0, "A", 6e8), "n").unwrap()).collect();
        let mut notes = Vec::new();
        let rows = compare_runs(&base, &new, Normalize::Never, &decide(), false, None, false, &mut notes).unwrap();
        assert_eq!(outcome(&rows, &[]), Outcome::NoRegression);
        let table = render_table(&rows, &decide());
        assert!(table.contains("inconclusive: ") && table.contains("publish.records_per_s ["), "{table}");
    }

    #[test]
    fn a_calibration_that_spread_over_ten_percent_is_not_used() {
        let mk = |cpu: &str, rps: f64, spread: f64| {
            let mut v = result_json("smoke", rps, 1000.0, cpu, 6e8);
            v["calibration"]["spread"]["disk_seq_write"] = serde_json::json!(spread);
            parse_run(&v, cpu).unwrap()
        };
        let base: Vec<Run> = (0..3).map(|i| mk("cpu A", 1e6 + i as f64 * 1e3, 0.02)).collect();
        let noisy_cal: Vec<Run> = (0..3).map(|i| mk("cpu B", 1e6 + i as f64 * 1e3, 0.25)).collect();
        assert!(normalized(&noisy_cal[0]).unwrap_err().contains("spread 25%"));
        let mut notes = Vec::new();
        let rows = compare_runs(&base, &noisy_cal, Normalize::Auto, &decide(), false, None, false, &mut notes).unwrap();
        assert!(notes.iter().any(|n| n.contains("cannot normalize") && n.contains("spread 25%")), "{notes:?}");
        assert!(rows.iter().all(|r| r.basis == "raw"), "{rows:#?}");
        let tput = rows.iter().find(|r| r.figure == "publish.records_per_s").unwrap();
        assert_eq!(tput.verdict, Verdict::Undecided, "raw figures of two environments decide nothing");
        assert_eq!(outcome(&rows, &[]), Outcome::Undecided);
        // A calibration without repeated measurements (older results) is not used either.
        let mut v = result_json("smoke", 1e6, 1000.0, "cpu B", 6e8);
        v["calibration"].as_object_mut().unwrap().remove("spread");
        assert!(normalized(&parse_run(&v, "old").unwrap()).unwrap_err().contains("no repeated measurements"));
    }

    #[test]
    fn bad_input_is_exit_2_and_regression_exit_1() {
        let dir = tempfile::tempdir().unwrap();
        let args = cli;
        assert_eq!(run(args(vec![dir.path().join("missing.json"), dir.path().join("x.json")])), 2);
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, b"{not json").unwrap();
        assert_eq!(run(args(vec![garbage.clone(), garbage])), 2);
        let other = dir.path().join("other.json");
        std::fs::write(&other, br#"{"schema": "something-else"}"#).unwrap();
        assert_eq!(run(args(vec![other.clone(), other])), 2);
        assert_eq!(run(args(vec![])), 2);

        let (bdir, ndir, wdir) = (dir.path().join("base"), dir.path().join("new"), dir.path().join("worse"));
        for d in [&bdir, &ndir, &wdir] {
            std::fs::create_dir(d).unwrap();
        }
        for (i, (b, n)) in noisy(1e6, 0.05, 5, 1).iter().zip(noisy(1e6, 0.05, 5, 2)).enumerate() {
            std::fs::write(bdir.join(format!("{i}.json")), result_json("smoke", *b, 1000.0, "A", 6e8).to_string()).unwrap();
            std::fs::write(ndir.join(format!("{i}.json")), result_json("smoke", n, 1000.0, "A", 6e8).to_string()).unwrap();
            std::fs::write(wdir.join(format!("{i}.json")), result_json("smoke", n * 0.75, 1000.0, "A", 6e8).to_string()).unwrap();
        }
        assert_eq!(run(args(vec![bdir.clone(), ndir.clone()])), 0);
        // Informational figures are reported but do not fail.
        let mut info = args(vec![bdir.clone(), wdir.clone()]);
        info.informational = vec!["records_per_s".into(), "efficiency".into()];
        assert_eq!(run(info), 0);
        let mut grouped = args(vec![]);
        grouped.base = vec![bdir.clone()];
        grouped.new = vec![wdir.clone()];
        let out = dir.path().join("verdict.json");
        grouped.json_out = Some(out.clone());
        assert_eq!(run(grouped), 1);
        let v: Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
        assert_eq!(v["regression"], Value::Bool(true));
        // Interrupted runs are skipped, not compared.
        std::fs::write(ndir.join("zz.json"), {
            let mut v = result_json("smoke", 1.0, 1e9, "A", 6e8);
            v["complete"] = Value::Bool(false);
            v.to_string()
        })
        .unwrap();
        assert_eq!(run(args(vec![bdir, ndir])), 0);
    }

    #[test]
    fn rounds_that_moved_together_do_not_pass_for_a_change() {
        // Three rounds per side; within a round samples are tight, but each round sits at its own
        // load level (here new's rounds happened to be the busier ones). Pooled, that looks like a
        // certain +15%; by rounds it is not.
        let base: Vec<Vec<f64>> = [100.0, 112.0, 95.0].iter().enumerate().map(|(i, c)| noisy(*c, 0.01, 10, i as u64)).collect();
        let new: Vec<Vec<f64>> = [118.0, 104.0, 126.0].iter().enumerate().map(|(i, c)| noisy(*c, 0.01, 10, 10 + i as u64)).collect();
        let flat = |cs: &[Vec<f64>]| cs.iter().flatten().copied().collect::<Vec<f64>>();
        let pooled = compare_samples("g", "t", "ns/iter", Better::Lower, &flat(&base), &flat(&new), &decide());
        assert_eq!(pooled.verdict, Verdict::Regression, "{pooled:?}");
        let by_round = compare_clustered("g", "t", "ns/iter", Better::Lower, &base, &new, &decide());
        assert_eq!(by_round.verdict, Verdict::NoChange, "{by_round:?}");
        // Unpaired, a consistent 20% shift drowns in the rounds' spread; paired with the round it
        // ran next to, it is caught, and the noisy no-shift rounds still are not flagged.
        let slow: Vec<Vec<f64>> = [120.0, 134.0, 114.0].iter().enumerate().map(|(i, c)| noisy(*c, 0.01, 10, 20 + i as u64)).collect();
        let c = compare_paired("g", "t", "ns/iter", Better::Lower, &base, &slow, &decide());
        assert_eq!(c.verdict, Verdict::Regression, "{c:?}");
        assert!(c.ci_low > 0.15 && c.ci_high < 0.25, "{c:?}");
        let c = compare_paired("g", "t", "ns/iter", Better::Lower, &base, &new, &decide());
        assert_eq!(c.verdict, Verdict::NoChange, "{c:?}");
    }

    #[test]
    fn two_pairs_never_make_a_verdict_three_do() {
        // Regression test: an A/A suite run with 2 runs per side flagged p99.9 (+18%, both pairs
        // above the threshold by chance): a bootstrap over two ratios only restates them.
        let base: Vec<Vec<f64>> = vec![vec![100.0], vec![100.0], vec![100.0]];
        let slow: Vec<Vec<f64>> = vec![vec![120.0], vec![118.0], vec![121.0]];
        let c = compare_paired("g", "p99.9", "us", Better::Lower, &base[..2], &slow[..2], &decide());
        assert_eq!(c.verdict, Verdict::Undecided, "{c:?}");
        let c = compare_paired("g", "p99.9", "us", Better::Lower, &base, &slow, &decide());
        assert_eq!(c.verdict, Verdict::Regression, "{c:?}");
        let c = compare_samples("g", "t", "ns/iter", Better::Lower, &[100.0, 100.0], &[130.0, 131.0], &decide());
        assert_eq!(c.verdict, Verdict::Undecided, "{c:?}");
    }

    #[test]
    fn paired_rounds_with_eight_percent_noise_do_not_flag_and_twenty_percent_does() {
        // Each round at its own load level (+-30%), B within +-8% of its A round.
        let mut rng = StdRng::seed_from_u64(99);
        let mut false_flags = 0;
        for trial in 0..20u64 {
            let levels: Vec<f64> = (0..5).map(|_| 100.0 * (1.0 + rng.gen_range(-0.3..0.3))).collect();
            let a: Vec<Vec<f64>> = levels.iter().enumerate().map(|(i, l)| noisy(*l, 0.08, 10, trial * 100 + i as u64)).collect();
            let same: Vec<Vec<f64>> = levels.iter().enumerate().map(|(i, l)| noisy(*l, 0.08, 10, trial * 100 + 50 + i as u64)).collect();
            let slow: Vec<Vec<f64>> = levels.iter().enumerate().map(|(i, l)| noisy(l * 1.2, 0.08, 10, trial * 100 + 70 + i as u64)).collect();
            if compare_paired("g", "t", "ns/iter", Better::Lower, &a, &same, &decide()).verdict == Verdict::Regression {
                false_flags += 1;
            }
            let c = compare_paired("g", "t", "ns/iter", Better::Lower, &a, &slow, &decide());
            assert_eq!(c.verdict, Verdict::Regression, "trial {trial}: {c:?}");
        }
        assert_eq!(false_flags, 0);
    }

    fn write_criterion(root: &Path, id: &str, ns: &[f64]) {
        let d = root.join(id).join("new");
        std::fs::create_dir_all(&d).unwrap();
        let iters: Vec<f64> = (1..=ns.len()).map(|i| (i * 10) as f64).collect();
        let times: Vec<f64> = iters.iter().zip(ns).map(|(i, t)| i * t).collect();
        std::fs::write(d.join("sample.json"), serde_json::json!({"sampling_mode": "Linear", "iters": iters, "times": times}).to_string()).unwrap();
        std::fs::write(
            d.join("benchmark.json"),
            serde_json::json!({"group_id": "g", "function_id": null, "value_str": null, "throughput": {"Bytes": 16384}, "full_id": id, "directory_name": id, "title": id}).to_string(),
        )
        .unwrap();
    }

    #[test]
    fn criterion_directories_compare_the_same_way() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        write_criterion(&a, "append/sim/never", &noisy(1000.0, 0.08, 10, 1));
        write_criterion(&a, "crc32c/16KiB", &noisy(2000.0, 0.08, 10, 2));
        write_criterion(&b, "append/sim/never", &noisy(1000.0, 0.08, 10, 3));
        write_criterion(&b, "crc32c/16KiB", &noisy(2000.0, 0.08, 10, 4));
        write_criterion(&c, "append/sim/never", &noisy(1200.0, 0.08, 10, 5));
        write_criterion(&c, "crc32c/16KiB", &noisy(2000.0, 0.08, 10, 6));
        let loaded = load_criterion_dir(&a).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].throughput, Some(("bytes".to_string(), 16384.0)));
        let mut notes = Vec::new();
        let rows = compare_criterion(&loaded, &load_criterion_dir(&b).unwrap(), &decide(), false, None, &mut notes).unwrap();
        assert!(rows.iter().all(|r| r.verdict != Verdict::Regression), "{rows:#?}");
        let rows = compare_criterion(&loaded, &load_criterion_dir(&c).unwrap(), &decide(), false, None, &mut notes).unwrap();
        let reg: Vec<&str> = rows.iter().filter(|r| r.verdict == Verdict::Regression).map(|r| r.figure.as_str()).collect();
        assert_eq!(reg, vec!["append/sim/never"]);
        assert!(load_criterion_dir(&dir.path().join("nope")).is_err());
        assert!(load_criterion_dir(dir.path().join("a").join("crc32c").as_path()).is_ok());
    }
}
