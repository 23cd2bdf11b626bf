//! `producerRate: 0` runs a real search (ramp, bisect, confirm) and then measures at the answer.
//! Against the discarding sink the limit is the generator's own capacity in this (debug) build.

use loadgen::run::{run, RunOptions};
use loadgen::workload::Workload;

#[test]
fn search_ramps_bisects_confirms_and_measures_at_the_answer() {
    let mut w = Workload::load("max-rate-search").unwrap();
    w.producer_rate = 0.0;
    w.search_step_seconds = 0.6;
    w.p99_bound_ms = 200.0;
    w.duration_seconds = Some(1.0);
    w.warmup_seconds = Some(0.0);
    w.partitions_per_topic = 2;
    let mut o = RunOptions::new(w);
    o.sink = true;
    o.write = false;
    o.quiet = true;
    let out = run(&o).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(out.exit_code, 0);
    let r = out.result;
    let s = r.search.expect("search section");
    let stages: Vec<&str> = s.trials.iter().map(|t| t.stage.as_str()).collect();
    assert!(stages.first() == Some(&"ramp"), "{stages:?}");
    assert!(stages.iter().any(|s| s.starts_with("confirm")), "{stages:?}");
    // Ramp doubles while passing.
    let ramps: Vec<f64> = s.trials.iter().filter(|t| t.stage == "ramp").map(|t| t.target_rate).collect();
    assert!(ramps.windows(2).all(|w| (w[1] / w[0] - 2.0).abs() < 1e-9), "{ramps:?}");
    // The answer passed its confirmation, and some higher rate failed (a real limit was found).
    assert!(s.max_rate >= 2_000.0);
    let confirmed = s.trials.iter().rev().find(|t| t.stage.starts_with("confirm")).unwrap();
    assert!(confirmed.ok && (confirmed.target_rate - s.max_rate).abs() < 1e-6, "{confirmed:?}");
    assert!(s.trials.iter().any(|t| !t.ok && t.target_rate > s.max_rate), "no failing trial above {}", s.max_rate);
    // The measured phase ran at the answer.
    assert_eq!(r.workload.producer_rate, 0.0);
    assert!((r.workload.target_rate - s.max_rate).abs() < 1e-6);
    assert!(r.publish.records_per_s > 0.5 * s.max_rate, "{} vs {}", r.publish.records_per_s, s.max_rate);
}
