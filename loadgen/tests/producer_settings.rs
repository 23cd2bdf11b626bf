//! Producer settings through the real path: the loadgen compresses its own batches (every
//! codec), adds keys and headers, runs idempotent or with acks=0 against the engine broker
//! started here; what the broker stored is read back by the loadgen's own Fetch decoder and by
//! confluent-kafka (librdkafka, an independent decoder), record by record.

mod common;
use common::*;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use loadgen::client::Conn;
use loadgen::results::RunResult;

/// A workload with compressible payloads (half random), 4 partitions, 100 round-robin keys and
/// two 8-byte headers per record.
fn workload(dir: &Path, extra: &str) -> String {
    let p = dir.join("w.yaml");
    std::fs::write(
        &p,
        format!(
            "name: producer-settings\npartitionsPerTopic: 4\nmessageSize: 200\nrandomBytesRatio: 0.5\n\
             keys: {{distribution: round-robin, count: 100}}\nheaders: 2\nheaderValueBytes: 8\n\
             subscriptionsPerTopic: 1\nconsumerPerSubscription: 1\n{extra}"
        ),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

fn run(addr: SocketAddr, dir: &Path, wl: &str, prefix: &str, extra: &[&str]) -> (RunResult, String) {
    let mut args = vec!["--workload", wl, "--rate", "2000", "--duration", "1.5", "--warmup", "0"];
    args.extend(extra);
    let (r, out) = run_kept_topics(addr, prefix, &dir.join(format!("{prefix}.json")), &args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "stdout {stdout}\nstderr {}", String::from_utf8_lossy(&out.stderr));
    (r, stdout)
}

/// Every record stored in `topic` (4 partitions), read with the loadgen's Fetch decoder:
/// (records, key → count, records without exactly 2 headers).
fn read_back(addr: SocketAddr, topic: &str) -> (u64, HashMap<String, u64>, u64) {
    let mut c = Conn::connect(addr, Duration::from_secs(5)).unwrap();
    let ends = c.list_offsets(topic, &[0, 1, 2, 3], -1).unwrap();
    let (mut n, mut keys, mut bad_headers) = (0u64, HashMap::new(), 0u64);
    for p in 0..4 {
        let end = ends[&p];
        let mut off = 0i64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while off < end {
            assert!(Instant::now() < deadline, "{topic}/{p}: read {off} of {end}");
            let r = c.fetch(topic, &[(p, off)], 100, 1 << 20).unwrap();
            let part = &r.responses[0].partitions[0];
            assert_eq!(part.error_code, 0);
            let recs = part.records.clone().unwrap_or_default();
            let (_, _, next) = loadgen::encode::for_each_record(&recs, |rv| {
                n += 1;
                *keys.entry(String::from_utf8_lossy(rv.key.expect("keyed")).into_owned()).or_insert(0) += 1;
                if rv.headers != 2 {
                    bad_headers += 1;
                }
            });
            off = next.expect("a whole batch");
        }
    }
    (n, keys, bad_headers)
}

/// The same with confluent-kafka: (records, key → count, records whose headers are not h0, h1 of 8 bytes).
fn read_back_librdkafka(addr: SocketAddr, topic: &str, expect: u64) -> (u64, HashMap<String, u64>, u64) {
    let script = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition
addr, topic, expect = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": addr, "group.id": "ps-check", "enable.auto.commit": False,
              "api.version.request": True, "check.crcs": True})
c.assign([TopicPartition(topic, p, 0) for p in range(4)])
n, keys, bad = 0, {}, 0
deadline = time.time() + 60
while n < expect and time.time() < deadline:
    for m in c.consume(1000, 1.0):
        if m.error():
            print(json.dumps({"error": str(m.error())})); sys.exit(1)
        n += 1
        k = m.key().decode()
        keys[k] = keys.get(k, 0) + 1
        h = m.headers() or []
        if [x for x, _ in h] != ["h0", "h1"] or any(len(v) != 8 for _, v in h):
            bad += 1
time.sleep(0.5)
for m in c.consume(1000, 0.5):
    if not m.error():
        n += 1
c.close()
print(json.dumps({"count": n, "keys": keys, "bad_headers": bad}))
"#;
    let out = Command::new("python3").args(["-c", script, &addr.to_string(), topic, &expect.to_string()]).output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "confluent-kafka reader failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let keys = v["keys"].as_object().unwrap().iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap())).collect();
    (v["count"].as_u64().unwrap(), keys, v["bad_headers"].as_u64().unwrap())
}

fn check_keys(keys: &HashMap<String, u64>, n: u64) {
    assert_eq!(keys.values().sum::<u64>(), n);
    assert_eq!(keys.len(), 100, "round-robin over 100 keys: {keys:?}");
    assert!(keys.keys().all(|k| k.strip_prefix("key-").and_then(|i| i.parse::<u32>().ok()).is_some_and(|i| i < 100)), "{keys:?}");
}

#[test]
fn every_codec_is_stored_and_read_back_intact() {
    let (_engine, addr) = start_engine();
    let dir = tempfile::tempdir().unwrap();
    // lz4 from the workload file; the others from the --compression override.
    let wl = workload(dir.path(), "compression: lz4\n");
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let extra: Vec<&str> = if codec == "lz4" { vec![] } else { vec!["--compression", codec] };
        let (r, stdout) = run(addr, dir.path(), &wl, &format!("c-{codec}"), &extra);
        assert!(r.complete, "{codec}");
        assert_eq!(r.publish.errors, 0, "{codec}");
        let p = r.producer.as_ref().expect("producer block");
        assert_eq!(p.compression.codec, codec);
        assert_eq!(p.headers, 2);
        assert_eq!((p.keys.distribution.as_str(), p.keys.count), ("round-robin", 100));
        // Whole run: what the broker must have (publish.records covers the measured window).
        let acked = p.records_acknowledged_total;
        assert_eq!(acked, p.records_sent_total, "{codec}");
        assert!(acked >= 2000 && acked >= r.publish.records, "{codec}: {acked}");
        if codec == "none" {
            assert_eq!(p.compression.batches, 0);
        } else {
            // Half-random payloads: every codec gains something; the time is reported apart.
            assert!(p.compression.batches > 0 && p.compression.cpu_ns_total > 0, "{codec}: {:?}", p.compression);
            assert!(p.compression.ratio > 1.2, "{codec}: {:?}", p.compression);
            assert!(stdout.contains(&format!("compression {codec}: ratio")), "{stdout}");
        }
        // The loadgen's own consumer decompressed the records during the run (end-to-end
        // latency comes from the stamp inside each value; measured window only).
        assert!(r.end_to_end.records * 10 >= acked * 9, "{codec}: {} of {acked}", r.end_to_end.records);
        let topic = &r.target.topics[0];
        let (n, keys, bad) = read_back(addr, topic);
        assert_eq!(n, acked, "{codec}: stored records = acknowledged records");
        check_keys(&keys, n);
        assert_eq!(bad, 0, "{codec}: every record has its 2 headers");
        let (n2, keys2, bad2) = read_back_librdkafka(addr, topic, acked);
        assert_eq!(n2, acked, "{codec}: confluent-kafka read");
        assert_eq!(keys2, keys, "{codec}: same keys, same counts");
        assert_eq!(bad2, 0, "{codec}: headers as written");
    }
}

#[test]
fn idempotent_run_stores_exactly_what_was_acknowledged() {
    let (_engine, addr) = start_engine();
    let dir = tempfile::tempdir().unwrap();
    let wl = workload(dir.path(), "idempotent: true\nacks: all\n");
    let (r, _) = run(addr, dir.path(), &wl, "idem", &["--compression", "zstd"]);
    assert!(r.complete);
    assert_eq!(r.publish.errors, 0);
    let p = r.producer.as_ref().unwrap();
    assert!(p.idempotent && p.acknowledged);
    let topic = &r.target.topics[0];
    let mut c = Conn::connect(addr, Duration::from_secs(5)).unwrap();
    let ends = c.list_offsets(topic, &[0, 1, 2, 3], -1).unwrap();
    let acked = p.records_acknowledged_total;
    assert!(acked >= 2000 && acked == p.records_sent_total, "{p:?}");
    assert_eq!(ends.values().sum::<i64>() as u64, acked, "high watermarks = acknowledged records");
    assert_eq!(p.duplicate_batches + p.retried_batches, 0, "nothing to retry against a healthy broker");
    let (n, keys, _) = read_back(addr, topic);
    assert_eq!(n, acked);
    check_keys(&keys, n);
    // The idempotent flag without acks=all is refused before any connection.
    let out = run_cli(&["run", "--quiet", "--workload", &wl, "--acks", "1", "--bootstrap", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("idempotent requires acks all"));
}

#[test]
fn acks_zero_counts_records_as_written_not_acknowledged() {
    let (_engine, addr) = start_engine();
    let dir = tempfile::tempdir().unwrap();
    let wl = workload(dir.path(), "");
    let (r, stdout) = run(addr, dir.path(), &wl, "acks0", &["--acks", "0"]);
    assert!(r.complete);
    let p = r.producer.as_ref().unwrap();
    assert!(!p.acknowledged);
    assert_eq!(p.acks, 0);
    assert_eq!(r.publish.records, 0, "nothing is acknowledged with acks=0");
    assert_eq!(r.publish.latency_us.count, 0, "no publish latency exists with acks=0");
    assert!(p.records_written_unacknowledged >= 2000, "{p:?}");
    assert!(stdout.contains("acks=0: ") && stdout.contains("none acknowledged"), "{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("publish ")), "{stdout}");
    // The run's consumers read the written records (measured window only, so not all of them).
    assert!(r.consume.records * 100 >= p.records_written_unacknowledged * 95, "{} consumed", r.consume.records);
    // The broker stored what was written (poll: acks=0 appends are not confirmed to anyone).
    let topic = &r.target.topics[0];
    let mut c = Conn::connect(addr, Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored: i64 = c.list_offsets(topic, &[0, 1, 2, 3], -1).unwrap().values().sum();
        if stored as u64 == p.records_written_unacknowledged {
            break;
        }
        assert!(Instant::now() < deadline, "stored {stored} of {} written", p.records_written_unacknowledged);
        std::thread::sleep(Duration::from_millis(50));
    }
}
