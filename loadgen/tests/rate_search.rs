//! `producerRate: 0` runs a real search (ramp, bisect, confirm) and then measures at the answer.
//! Against the discarding sink the limit is the generator's own capacity in this (debug) build.
//! The trace, the majority rule, the full-length confirmation and the half-rate run are checked.

mod common;

use loadgen::run::{run, RunOptions};
use loadgen::workload::Workload;

#[test]
fn search_ramps_bisects_confirms_and_measures_at_the_answer() {
    let mut w = Workload::load("max-rate-search").unwrap();
    w.producer_rate = 0.0;
    w.search_step_seconds = 0.3;
    w.p99_bound_ms = 200.0;
    w.duration_seconds = Some(1.0);
    w.warmup_seconds = Some(0.0);
    w.partitions_per_topic = 2;
    let mut o = RunOptions::new(w);
    o.sink = true;
    let dir = tempfile::tempdir().unwrap();
    o.output = Some(dir.path().join("search.json"));
    o.quiet = true;
    let out = run(&o).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(out.exit_code, 0);
    // The search block (trials, rule, confirmation, half rate) follows the schema.
    common::validate_against_schema(&dir.path().join("search.json"));
    let r = out.result;
    // The report shows the trace: one row per trial, and the confirmed answer.
    let html = loadgen::html::search_tables(&[(std::path::PathBuf::from("search.json"), r.clone())], &["search.json".to_string()]);
    let s = r.search.clone().expect("search section");
    assert_eq!(html.matches("<tr><td>").count(), s.trials.len(), "{html}");
    assert!(html.contains("confirmed by a full-length run") && html.contains("at half of it"), "{html}");
    let stages: Vec<&str> = s.trials.iter().map(|t| t.stage.as_str()).collect();
    assert!(stages.first() == Some(&"ramp"), "{stages:?}");
    // Ramp x4 up from the start rate while passing (or /4 down while failing).
    let mut ramp_rates: Vec<f64> = s.trials.iter().filter(|t| t.stage == "ramp").map(|t| t.target_rate).collect();
    ramp_rates.dedup();
    assert_eq!(ramp_rates[0], 2_000.0);
    let up = ramp_rates.windows(2).all(|w| (w[1] / w[0] - 4.0).abs() < 1e-9);
    let down = ramp_rates.windows(2).all(|w| (w[0] / w[1] - 4.0).abs() < 1e-9);
    assert!(up || down, "{ramp_rates:?}");
    // Majority rule: every short rate's verdict is on its last trial, after 2 passes or 2
    // failures (or one trial below half its target, which fails the rate at once).
    let mut i = 0;
    while i < s.trials.len() {
        let t = &s.trials[i];
        if t.stage == "confirm" {
            assert_eq!(t.verdict.as_deref(), Some(if t.ok { "pass" } else { "fail" }), "{t:?}");
            // A full-length run passes on the trial rule, every record acknowledged, and a
            // backlog not growing at the window's end.
            let rule = t.achieved_rate >= 0.97 * t.target_rate && t.p99_us <= s.p99_bound_us && t.errors == 0;
            assert_eq!(t.ok, rule && t.unacknowledged == 0 && !t.backlog_growing, "{t:?}");
            i += 1;
            continue;
        }
        let same: Vec<_> = s.trials[i..].iter().take_while(|x| x.target_rate == t.target_rate && x.stage == t.stage).collect();
        let passes = same.iter().filter(|x| x.ok).count();
        let last = same.last().unwrap();
        let at_once = same.len() == 1 && !last.ok && last.achieved_rate < 0.5 * last.target_rate;
        assert!(at_once || (same.len() >= 2 && same.len() <= 3), "{same:?}");
        assert_eq!(last.verdict.as_deref(), Some(if passes >= 2 { "pass" } else { "fail" }), "{same:?}");
        assert!(same[..same.len() - 1].iter().all(|x| x.verdict.is_none()));
        // A passing trial really met the stated rule.
        for x in &same {
            assert_eq!(x.ok, x.achieved_rate >= 0.97 * x.target_rate && x.p99_us <= s.p99_bound_us && x.errors == 0, "{x:?}");
        }
        i += same.len();
    }
    // The full-length runs follow the stated stage: the first at the highest rate that passed
    // short trials, each next one as FullStage says (step down by throughput, then bisection
    // between the highest pass and the lowest failure).
    let short_lo = s.trials.iter().filter(|t| t.stage != "confirm" && t.verdict.as_deref() == Some("pass")).map(|t| t.target_rate).fold(0.0, f64::max);
    let short_hi = s.trials.iter().filter(|t| t.stage != "confirm" && t.verdict.as_deref() == Some("fail")).map(|t| t.target_rate).fold(f64::INFINITY, f64::min);
    // A marginal failure ("retry") is followed by a second run at the same rate, which decides.
    let all_confirms: Vec<_> = s.trials.iter().filter(|t| t.stage == "confirm").collect();
    for (k, c) in all_confirms.iter().enumerate() {
        if c.verdict.as_deref() == Some("retry") {
            assert!(!c.ok && c.attempt == 1 && c.unacknowledged == 0 && !c.backlog_growing, "{c:?}");
            let n = all_confirms.get(k + 1).expect("a repeat after a retry");
            assert!(n.attempt == 2 && n.target_rate == c.target_rate && n.verdict.as_deref() != Some("retry"), "{all_confirms:?}");
        }
    }
    assert!(all_confirms.iter().filter(|t| t.verdict.as_deref() == Some("retry")).count() <= loadgen::run::FULL_RETRIES_MAX);
    let confirms: Vec<_> = all_confirms.into_iter().filter(|t| t.verdict.as_deref() != Some("retry")).collect();
    assert!(!confirms.is_empty() && confirms.len() <= loadgen::run::FULL_RUNS_MAX);
    assert_eq!(confirms[0].target_rate, short_lo, "{confirms:?}");
    let mut stage = loadgen::run::FullStage::new(short_hi, loadgen::run::FULL_RUNS_MAX);
    for (k, c) in confirms.iter().enumerate() {
        let next = stage.next(c.target_rate, c.ok, c.throughput.expect("throughput"), c.p99_us / (s.p99_bound_us));
        match confirms.get(k + 1) {
            Some(n) => assert!((n.target_rate - next.expect("a next run")).abs() < 1e-6, "{confirms:?}"),
            None => assert!(next.is_none(), "{confirms:?}"),
        }
    }
    // Some higher rate failed: a real limit was found.
    assert!(s.trials.iter().any(|t| t.verdict.as_deref() == Some("fail") && t.target_rate > s.max_rate), "{:?}", s.trials);
    // The answer is the highest rate whose full-length run passed, and that run is the measured
    // phase of the result.
    assert!(s.confirmed && s.max_rate >= 2_000.0, "{:?}", s.trials);
    assert_eq!(stage.confirmed(), Some(s.max_rate));
    let best = confirms.iter().filter(|t| t.ok).map(|t| t.target_rate).fold(0.0, f64::max);
    assert!((best - s.max_rate).abs() < 1e-6, "{confirms:?}");
    assert_eq!(r.workload.producer_rate, 0.0);
    assert!((r.workload.target_rate - s.max_rate).abs() < 1e-6);
    assert!(r.complete && r.target_met);
    let acc = r.accounting.as_ref().unwrap();
    assert!(acc.measure.adds_up() && acc.measure.acknowledged == acc.measure.scheduled, "{acc:?}");
    // And the latency at half of it was measured.
    let h = s.half_rate.as_ref().expect("half-rate run");
    assert!((h.target_rate - s.max_rate / 2.0).abs() < 1e-6);
    assert!(h.accounting.adds_up() && h.latency_us.count == h.accounting.acknowledged);
}

#[test]
fn search_ramps_down_from_a_start_rate_above_the_limit() {
    // The sink's limit is the generator's (debug build: a few M rec/s; release: 16 M passes on
    // this 2-core VM); start far above either.
    let mut w = Workload::load("max-rate-search").unwrap();
    w.producer_rate = 0.0;
    w.search_start_rate = 256_000_000.0;
    w.search_step_seconds = 0.3;
    w.p99_bound_ms = 200.0;
    w.duration_seconds = Some(1.0);
    w.warmup_seconds = Some(0.0);
    w.partitions_per_topic = 2;
    let mut o = RunOptions::new(w);
    o.sink = true;
    o.write = false;
    o.quiet = true;
    let out = run(&o).unwrap_or_else(|e| panic!("{e:?}"));
    let s = out.result.search.expect("search section");
    let mut ramp: Vec<(f64, Option<String>)> =
        s.trials.iter().filter(|t| t.stage == "ramp" && t.verdict.is_some()).map(|t| (t.target_rate, t.verdict.clone())).collect();
    ramp.dedup();
    // Failing rates /4 down from the start, then the first that passes ends the ramp.
    assert_eq!(ramp[0], (256e6, Some("fail".into())), "{ramp:?}");
    assert!(ramp.windows(2).all(|w| (w[0].0 / w[1].0 - 4.0).abs() < 1e-9), "{ramp:?}");
    assert!(ramp[..ramp.len() - 1].iter().all(|r| r.1.as_deref() == Some("fail")), "{ramp:?}");
    assert_eq!(ramp.last().unwrap().1.as_deref(), Some("pass"), "{ramp:?}");
    // The bisection then stays between the last pass and the failure above it.
    let (lo, hi) = (ramp.last().unwrap().0, ramp[ramp.len() - 2].0);
    assert!(s.trials.iter().filter(|t| t.stage == "bisect").all(|t| t.target_rate > lo && t.target_rate < hi), "{:?}", s.trials);
}
