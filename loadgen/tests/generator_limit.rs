//! Knowing who is the bottleneck (issue 19): the result's `generator` block reports each
//! producer thread's CPU, queue depth and lateness, and the summary warns when the generator,
//! not the target, limited the run. Both runs drive the discarding sink (it takes every batch at
//! once, so the target always has headroom): at a rate no generator reaches the warning must
//! appear; at a light rate it must not. One test function so the runs never compete for the CPU.

use loadgen::run::{run, summary_table, RunOptions};
use loadgen::workload::Workload;

fn sink_run(rate: f64) -> (loadgen::results::RunResult, i32) {
    let mut w = Workload::smoke();
    w.producer_rate = rate;
    w.duration_seconds = Some(1.5);
    w.warmup_seconds = Some(0.0);
    w.drain_seconds = 0.5;
    w.linger_ms = 1.0;
    let mut o = RunOptions::new(w);
    o.sink = true;
    o.write = false;
    o.quiet = true;
    let out = run(&o).unwrap_or_else(|e| panic!("{e:?}"));
    (out.result, out.exit_code)
}

const WARNING: &str = "WARNING: the generator, not the target, limited this run";

#[test]
fn generator_limit_is_reported_and_warned() {
    // 50 M rec/s for one producer: far above what one producer thread generates (a release build
    // on a fast core makes ~10-20 M rec/s of 100 B records; 50 M is out of reach).
    let (fast, code) = sink_run(50e6);
    let g = fast.generator.as_ref().expect("generator block");
    assert_eq!(g.producers.len(), 1);
    assert!(g.limited, "{g:?}");
    assert!(!g.reasons.is_empty());
    let p = &g.producers[0];
    // The sink took every batch: nothing waited on a window, the queue stayed far below its bound.
    assert!(p.window_wait_fraction < 0.5 && p.queue_mean_bytes < p.queue_bound_bytes as f64 / 4.0, "{p:?}");
    assert!(p.send_delay_end_ms >= 100.0, "{p:?}");
    assert!(p.cpu_s > 0.0 && p.wall_s > 0.0, "{p:?}");
    assert_eq!(p.queue_bound_bytes, 64 << 20);
    let table = summary_table(&fast);
    assert!(table.contains(WARNING), "{table}");
    // The schedule was not met, and the run says so (the generator limit is no excuse).
    assert_ne!(code, 0);

    // A light rate: the generator keeps up, no warning.
    let (calm, code) = sink_run(5_000.0);
    assert_eq!(code, 0);
    let g = calm.generator.as_ref().expect("generator block");
    assert_eq!(g.producers.len(), 1);
    assert!(!g.limited, "{g:?}");
    assert!(g.reasons.is_empty());
    assert!(g.producers[0].send_delay_end_ms < 100.0, "{g:?}");
    assert!(!summary_table(&calm).contains(WARNING));
    // The block round-trips through the result JSON.
    let back: loadgen::results::RunResult = serde_json::from_str(&serde_json::to_string(&calm).unwrap()).unwrap();
    // (serde_json's float parsing may differ in the last bit: compare the rest exactly.)
    let (b, c) = (back.generator.unwrap(), calm.generator.unwrap());
    assert_eq!((b.limited, &b.reasons, b.producers.len()), (c.limited, &c.reasons, c.producers.len()));
    assert_eq!(b.producers[0].queue_max_bytes, c.producers[0].queue_max_bytes);
    assert!((b.producers[0].cpu_s - c.producers[0].cpu_s).abs() < 1e-9);
}
