//! End to end: `loadgen run` with no target starts the embedded engine, produces and consumes,
//! prints the summary table and writes a schema-valid result.

mod common;
use common::*;

#[test]
fn loadgen_run_against_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(&[
        "run", "--workload", "smoke", "--quiet", "--duration", "3", "--warmup", "1", "--rate", "5000",
        "--data-dir", dir.path().to_str().unwrap(),
        "--out-dir", dir.path().join("results").to_str().unwrap(), "--label", "e2e",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout {stdout}\nstderr {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("publish") && stdout.contains("end-to-end") && stdout.contains("p99.99"), "{stdout}");
    let files = json_files(&dir.path().join("results/e2e"));
    assert_eq!(files.len(), 1);
    validate_against_schema(&files[0]);
    let r = loadgen::results::RunResult::load(&files[0]).unwrap();
    assert!(r.complete);
    assert_eq!(r.target.kind, "embedded");
    // The default workload runs with the engine's default durability: group commit, acks=all.
    assert_eq!(r.target.fsync, "group");
    // Which write path large durable appends took is part of the target's description.
    assert_eq!(r.target.direct_io, Some(engine::log::LogConfig::default().direct_io));
    assert_eq!(r.workload.acks, -1);
    assert!(r.target.bootstrap.starts_with("127.0.0.1:"));
    // 3 s at 5000 rec/s, all acknowledged without error and all consumed.
    assert!((r.publish.records_per_s - 5000.0).abs() < 500.0, "{}", r.publish.records_per_s);
    // Target met: the throughput is the window's records acknowledged in time per second.
    assert_eq!(Some(r.publish.records_per_s), r.publish.records_in_time_per_s);
    assert_eq!(r.publish.errors, 0);
    assert!(r.end_to_end.latency_us.count > 10_000, "{:?}", r.end_to_end);
    assert!(r.end_to_end.latency_us.p50 > 0.0 && r.end_to_end.latency_us.p50 < 1_000_000.0);
    assert!(r.publish.latency_us.p50 > 0.0);
    // Every scheduled record of the window accounted for, and acknowledged.
    let a = r.accounting.as_ref().expect("accounting");
    assert!(a.measure.adds_up() && a.warmup.adds_up(), "{a:?}");
    assert!((14_990..=15_010).contains(&a.measure.scheduled), "{:?}", a.measure);
    assert_eq!(a.measure.acknowledged, a.measure.scheduled);
    assert_eq!(r.publish.records, a.measure.acknowledged);
    assert_eq!(r.publish.latency_us.count, a.measure.acknowledged);
    assert!(r.target_met);
    // End-to-end: one sample per consumed record of the window, none lost at the end of the
    // drain (the consumers flush before the totals are taken).
    assert_eq!(r.end_to_end.latency_us.count, a.measure.acknowledged, "{:?}", r.end_to_end);
    // Calibration ran by default for the embedded engine, and efficiency ratios came with it.
    assert!(r.calibration.is_some());
    assert!(r.efficiency.disk_write_fraction.unwrap() > 0.0);
    // The embedded engine's temporary data dir is gone.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("loadgen-engine-")).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn durable_acks_wait_for_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(&[
        "run", "--quiet", "--no-calibrate", "--workload", "durable-fsync", "--duration", "2", "--warmup", "0",
        "--rate", "2000", "--data-dir", dir.path().to_str().unwrap(), "-o", dir.path().join("r.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = loadgen::results::RunResult::load(&dir.path().join("r.json")).unwrap();
    assert_eq!(r.target.fsync, "group");
    // Which write path large durable appends took is part of the target's description.
    assert_eq!(r.target.direct_io, Some(engine::log::LogConfig::default().direct_io));
    assert_eq!(r.publish.errors, 0);
    assert!(r.publish.records > 3000);
}
