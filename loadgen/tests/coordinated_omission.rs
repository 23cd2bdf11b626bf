//! Coordinated omission: a sink that stalls must show up in publish latency (measured from the
//! intended send time), not disappear because the generator was blocked too.

use loadgen::run::{run, RunOptions};
use loadgen::workload::Workload;

fn sink_run(stall: Option<(f64, f64)>) -> loadgen::results::RunResult {
    let mut w = Workload::smoke();
    w.producer_rate = 20_000.0;
    w.duration_seconds = Some(3.0);
    w.warmup_seconds = Some(0.0);
    w.linger_ms = 1.0;
    let mut o = RunOptions::new(w);
    o.sink = true;
    o.write = false;
    o.quiet = true;
    o.sink_stall = stall;
    let out = run(&o).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(out.exit_code, 0);
    out.result
}

#[test]
fn stalled_sink_shows_in_publish_latency() {
    // The sink stops taking batches for 500 ms, 1 s into the measured phase.
    let r = sink_run(Some((1.0, 0.5)));
    let lat = &r.publish.latency_us;
    // Records intended during the stall waited up to the full 500 ms.
    assert!(lat.max >= 450_000.0, "max {} µs", lat.max);
    // ~1/6 of the records were intended during the stall, half of those waited > 250 ms: the
    // p99 must show it (a closed-loop measurement would report ~1 ms here).
    assert!(lat.p99 >= 300_000.0, "p99 {} µs", lat.p99);
    assert!(lat.p90 >= 50_000.0, "p90 {} µs", lat.p90);
    // Most records were unaffected.
    assert!(lat.p50 < 50_000.0, "p50 {} µs", lat.p50);
    // The generator itself was blocked, so records were handed over late: delay shows it too.
    assert!(r.publish.delay_us.max >= 400_000.0, "delay max {} µs", r.publish.delay_us.max);
    // And nothing was dropped: the schedule caught up.
    let expected = 20_000.0 * 3.0;
    assert!((r.publish.records as f64) > expected * 0.95, "records {}", r.publish.records);
}

#[test]
fn without_stall_latency_is_small() {
    let r = sink_run(None);
    assert!(r.publish.latency_us.p99 < 100_000.0, "p99 {} µs", r.publish.latency_us.p99);
    assert!(r.publish.latency_us.max < 450_000.0, "max {} µs", r.publish.latency_us.max);
}
