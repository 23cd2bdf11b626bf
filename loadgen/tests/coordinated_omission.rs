//! Coordinated omission: a sink that stalls must show up in publish latency (measured from the
//! intended send time), not disappear because the generator was blocked too.
//! One test function so the two runs never compete for the CPU with each other.

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
    let calm = sink_run(None);
    // The sink stops taking batches for 500 ms, 1 s into the measured phase.
    let r = sink_run(Some((1.0, 0.5)));
    let lat = &r.publish.latency_us;
    // The record intended as the stall began waited for all of it.
    assert!(lat.max >= 450_000.0, "max {} µs", lat.max);
    // ~1/6 of the records were intended during the stall and half of those waited > 250 ms: the
    // p99 must show it (measuring from the actual send, as a closed loop does, would not).
    assert!(lat.p99 >= 250_000.0, "p99 {} µs", lat.p99);
    // The stall, not the machine's noise, made that tail: the same run without it has a p99
    // well below. (An absolute margin, not a ratio: on a loaded machine the calm p99 itself
    // reaches 100-200 ms in this debug build, and the stall adds >= 250 ms to 1/12 of the records.)
    assert!(lat.p99 >= calm.publish.latency_us.p99 + 150_000.0, "stalled p99 {} vs calm {}", lat.p99, calm.publish.latency_us.p99);
    // The generator itself was blocked, so records were handed over late: delay shows it too.
    assert!(r.publish.delay_us.max >= 200_000.0, "delay max {} µs", r.publish.delay_us.max);
    // Nothing was dropped: the schedule caught up after the stall.
    assert!((r.publish.records as f64) > 20_000.0 * 3.0 * 0.95, "records {}", r.publish.records);
    // Without the stall the same run is fast.
    assert!(calm.publish.latency_us.p50 < 50_000.0, "calm p50 {} µs", calm.publish.latency_us.p50);
    assert!(calm.publish.latency_us.max < lat.max, "calm max {} vs stalled {}", calm.publish.latency_us.max, lat.max);
}
