//! `--bootstrap` drives an already running broker (here the engine started in-process, reached
//! only over TCP like any external Kafka): topics are created with CreateTopics, and a second run
//! reuses them (consumers start at the end of what the first run wrote).

mod common;
use common::*;

#[test]
fn bootstrap_drives_a_running_broker_twice() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = engine::broker::BrokerConfig::new(data.path().join("d"), "never".parse().unwrap());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.auto_create_topics = false; // CreateTopics must do it
    let broker = engine::broker::Broker::start(cfg).unwrap();
    let addr = broker.local_addr().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    for i in 0..2 {
        let json = out_dir.path().join(format!("r{i}.json"));
        let out = run_cli(&[
            "run", "--quiet", "--bootstrap", &addr, "--rate", "3000", "--duration", "2", "--warmup", "0",
            "--partitions", "3", "-o", json.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "run {i}: {}", String::from_utf8_lossy(&out.stderr));
        validate_against_schema(&json);
        let r = loadgen::results::RunResult::load(&json).unwrap();
        assert_eq!(r.target.kind, "external");
        assert_eq!(r.target.direct_io, None, "unknown for an external broker");
        assert_eq!(r.target.bootstrap, addr);
        assert!(r.calibration.is_none(), "no calibration by default for external targets");
        assert_eq!(r.publish.errors, 0);
        assert!(r.publish.records >= 5_000, "{}", r.publish.records);
        // Consumers started at the end offsets: they read this run's records, not the last run's.
        assert!(r.end_to_end.latency_us.count >= 5_000);
        assert!(r.end_to_end.latency_us.max < 10_000_000.0, "{:?}", r.end_to_end.latency_us);
    }
    broker.shutdown().unwrap();
}

#[test]
fn broker_dying_mid_run_gives_an_incomplete_result_and_exit_1() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = engine::broker::BrokerConfig::new(data.path().join("d"), "never".parse().unwrap());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let broker = engine::broker::Broker::start(cfg).unwrap();
    let addr = broker.local_addr().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let json = out_dir.path().join("r.json");
    let child = bin()
        .args(["run", "--quiet", "--bootstrap", &addr, "--rate", "3000", "--duration", "20", "--warmup", "0", "-o"])
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    broker.shutdown().unwrap();
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "loadgen kept running after the broker died");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    validate_against_schema(&json);
    let r = loadgen::results::RunResult::load(&json).unwrap();
    assert!(!r.complete, "a run cut short must not claim to be complete");
}
