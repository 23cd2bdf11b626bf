//! The open-loop schedule holds its rate: records/s per measured second match the target.

use loadgen::rate::{Clock, Schedule};
use loadgen::run::{run, RunOptions};
use loadgen::workload::Workload;

#[test]
fn schedule_is_exact_and_never_drifts() {
    for rate in [1.0, 999.0, 50_000.0, 3_000_000.0] {
        let s = Schedule::new(0, rate);
        // After one simulated hour the schedule is still on time (no accumulated rounding).
        let hour = 3600 * 1_000_000_000u64;
        let due = s.due_by(hour);
        let want = (3600.0 * rate) as u64 + 1;
        assert!(due.abs_diff(want) <= 1, "rate {rate}: {due} vs {want}");
    }
}

#[test]
fn generator_keeps_the_target_rate() {
    let mut w = Workload::smoke();
    w.producer_rate = 50_000.0;
    w.duration_seconds = Some(3.0);
    w.warmup_seconds = Some(0.0);
    let mut o = RunOptions::new(w);
    o.sink = true;
    o.write = false;
    o.quiet = true;
    let r = run(&o).unwrap_or_else(|e| panic!("{e:?}")).result;
    let rate = r.publish.records_per_s;
    assert!((rate - 50_000.0).abs() / 50_000.0 < 0.03, "achieved {rate}");
    // Every full measured second is within 5% of the target.
    let full: Vec<_> = r.timeseries.windows(2).filter(|p| p[1].phase == "measure" && p[1].t_s - p[0].t_s > 0.9).map(|p| p[1].publish_records_per_s).collect();
    assert!(full.len() >= 2, "{:?}", r.timeseries);
    for x in full {
        assert!((x - 50_000.0).abs() / 50_000.0 < 0.05, "second at {x} rec/s");
    }
}

#[test]
fn clock_wall_time_is_consistent() {
    let c = Clock::new();
    let a = c.wall_us(c.now_ns());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = c.wall_us(c.now_ns());
    assert!((19_000..200_000).contains(&(b - a)), "{}", b - a);
}
