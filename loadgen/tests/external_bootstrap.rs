//! `--bootstrap` drives an already running broker (here the engine started in-process, reached
//! only over TCP like any external Kafka): each run creates its own topics with CreateTopics
//! (per-run names) and deletes them at the end unless `--keep-topics`; `--topic` reuses existing
//! ones (consumers start at the end of what the earlier run wrote). The result names the build
//! and the broker's identity; `--json -q` prints the JSON alone.

mod common;
use common::*;

use std::time::Duration;

/// Non-internal topic names the broker lists (Metadata for all topics).
fn broker_topics(addr: &str) -> Vec<String> {
    let mut c = loadgen::client::Conn::connect(addr.parse().unwrap(), Duration::from_secs(3)).unwrap();
    let md = c.metadata(None, false).unwrap();
    let mut v: Vec<String> = md.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).filter(|n| !n.starts_with("__")).collect();
    v.sort();
    v
}

#[test]
fn bootstrap_drives_a_running_broker_with_per_run_topics() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = engine::broker::BrokerConfig::new(data.path().join("d"), "never".parse().unwrap());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.auto_create_topics = false; // CreateTopics must do it
    let broker = engine::broker::Broker::start(cfg).unwrap();
    let addr = broker.local_addr().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let common = ["run", "-w", "smoke", "--quiet", "--bootstrap", &addr, "--rate", "3000", "--duration", "2", "--warmup", "0", "--partitions", "3"];
    let check = |json: &std::path::Path, stdout: &[u8]| {
        validate_against_schema(json);
        let r = loadgen::results::RunResult::load(json).unwrap();
        assert_eq!(r.target.kind, "external");
        assert_eq!(r.target.direct_io, None, "unknown for an external broker");
        assert_eq!(r.target.bootstrap, addr);
        assert!(r.calibration.is_none(), "no calibration by default for external targets");
        assert_eq!(r.publish.errors, 0);
        assert!(r.publish.records >= 5_000, "{}", r.publish.records);
        // Consumers started at the end offsets: they read this run's records, not the last run's.
        assert!(r.end_to_end.latency_us.count >= 5_000);
        assert!(r.end_to_end.latency_us.max < 10_000_000.0, "{:?}", r.end_to_end.latency_us);
        // Identity: what the broker said about itself.
        let id = r.target.identity.as_ref().expect("target.identity");
        assert_eq!(id.cluster_id.as_deref(), Some("zero-copy-log"));
        assert_eq!((id.broker_count, id.broker_ids.len()), (1, 1));
        assert!(id.brokers[0].ends_with(&format!(":{}", addr.rsplit(':').next().unwrap())), "{:?}", id.brokers);
        for api in ["Produce", "Fetch", "Metadata", "CreateTopics", "DeleteTopics"] {
            assert!(id.api_versions.iter().any(|a| a.name == api && a.max >= a.min), "{api}: {:?}", id.api_versions);
        }
        // Provenance: the build's commit, recorded at build time.
        let p = r.provenance.as_ref().expect("provenance");
        assert_eq!(p.build_commit, env!("LOADGEN_BUILD_COMMIT").trim_end_matches("-dirty"));
        assert_eq!(r.environment.git_commit, env!("LOADGEN_BUILD_COMMIT"));
        assert_eq!(p.loadgen_version, env!("CARGO_PKG_VERSION"));
        // stdout is the JSON document alone.
        let doc: serde_json::Value = serde_json::from_slice(stdout).expect("stdout is JSON only");
        assert_eq!(doc["schema"], "loadgen-result/1");
        r
    };

    // 1. Default: per-run topic, deleted at the end.
    let json = out_dir.path().join("r1.json");
    let out = run_cli(&[&common[..], &["--json", "-o", json.to_str().unwrap()]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r1 = check(&json, &out.stdout);
    assert_eq!(r1.target.topics.len(), 1);
    assert!(r1.target.topics[0].starts_with("loadgen-") && r1.target.topics[0].ends_with("-smoke-0"), "{:?}", r1.target.topics);
    assert!(broker_topics(&addr).is_empty(), "per-run topic deleted: {:?}", broker_topics(&addr));

    // 2. --keep-topics with a prefix and a replication factor: the topic stays.
    let json = out_dir.path().join("r2.json");
    let out = run_cli(&[&common[..], &["--json", "--keep-topics", "--topic-prefix", "bench", "--replication-factor", "1", "-o", json.to_str().unwrap()]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r2 = check(&json, &out.stdout);
    let kept = r2.target.topics[0].clone();
    assert!(kept.starts_with("bench-"), "{kept}");
    assert_ne!(kept, r1.target.topics[0], "topic names are per run");
    assert_eq!(broker_topics(&addr), vec![kept.clone()]);

    // 3. --topic reuses it and leaves it there.
    let json = out_dir.path().join("r3.json");
    let out = run_cli(&[&common[..], &["--json", "--topic", &kept, "-o", json.to_str().unwrap()]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r3 = check(&json, &out.stdout);
    assert_eq!(r3.target.topics, vec![kept.clone()]);
    assert_eq!(broker_topics(&addr), vec![kept]);

    // 4. --topic naming a topic that does not exist: bad input, not created.
    let out = run_cli(&[&common[..], &["--no-write", "--topic", "no-such-topic"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-topic does not exist"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!broker_topics(&addr).contains(&"no-such-topic".to_string()));
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
