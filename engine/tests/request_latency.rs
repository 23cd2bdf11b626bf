//! The broker's Produce request latency in its stats lines (issue 18's tail evidence): the
//! broker binary with `--stats-interval-ms`, a real client (confluent-kafka / librdkafka)
//! sending exactly N Produce requests (one record each, flushed one at a time), then the
//! stats lines must count N requests, over the run and summed over the intervals, with
//! ordered quantiles and parts consistent with the durability mode. No timing thresholds.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_addr, require_tool, spawn_broker_process_logging, Process};

const N: u64 = 40;

const PRODUCE_EACH: &str = r#"
import sys
from confluent_kafka import Producer
addr, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = Producer({"bootstrap.servers": addr, "acks": "all", "linger.ms": 0, "enable.idempotence": False})
errs = []
def cb(err, msg):
    if err:
        errs.append(str(err))
for i in range(n):
    p.produce(topic, value=b"x" * 100, on_delivery=cb)
    if p.flush(30) != 0:
        sys.exit(f"record {i} not delivered within 30 s")
if errs:
    sys.exit("delivery failed: " + ", ".join(errs))
"#;

/// One `produce latency window=… n=… total_us=a/b/c/d …` line: n, and each part's
/// [p50, p99, p99.9, max].
struct Line {
    n: u64,
    parts: BTreeMap<String, [u64; 4]>,
}

fn parse(line: &str) -> Line {
    let mut n = None;
    let mut parts = BTreeMap::new();
    for word in line.split_whitespace() {
        let Some((k, v)) = word.split_once('=') else { continue };
        if k == "n" {
            n = Some(v.parse().unwrap_or_else(|_| panic!("n in {line}")));
        } else if let Some(part) = k.strip_suffix("_us") {
            let q: Vec<u64> = v.split('/').map(|x| x.parse().unwrap_or_else(|_| panic!("{k} in {line}"))).collect();
            assert_eq!(q.len(), 4, "{line}");
            parts.insert(part.to_string(), [q[0], q[1], q[2], q[3]]);
        }
    }
    Line { n: n.unwrap_or_else(|| panic!("no n= in {line}")), parts }
}

/// The stats lines of `window` in the broker's log so far (ANSI colours dropped).
fn lines(log: &Path, window: &str) -> Vec<Line> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let marker = format!("produce latency window={window} ");
    text.lines()
        .filter_map(|l| l.find(&marker).map(|at| l[at + marker.len()..].to_string()))
        .map(|rest| parse(&strip_ansi(&rest)))
        .collect()
}

/// `s` without ANSI colour sequences (ESC [ ... letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn run_mode(durability: &str) {
    let py = require_tool("python3");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("broker.log");
    let addr = free_addr();
    let _broker = Process(spawn_broker_process_logging(
        &dir.path().join("data"),
        addr,
        &["--durability", durability, "--stats-interval-ms", "100"],
        "info",
        Stdio::from(std::fs::File::create(&log).unwrap()),
    ));
    // The topic first (auto-created by Metadata), so that every Produce request is timed on
    // a network thread.
    common::Client::connect(addr).call(
        12,
        &kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(kafka_protocol::messages::TopicName("lat".to_string().into()))),
        ])),
    );
    let out = Command::new("timeout")
        .arg("120")
        .arg(&py)
        .args(["-c", PRODUCE_EACH, &addr.to_string(), "lat", &N.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "confluent-kafka producer failed ({}):\n{}\n(needs `pip install confluent-kafka`)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Every response was received by the client; the stats thread reports within a few
    // intervals.
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        if let Some(last) = lines(&log, "run").pop() {
            if last.n >= N {
                break last;
            }
        }
        assert!(Instant::now() < deadline, "no stats line counting {N} produce requests:\n{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(run.n, N, "{durability}: one timed request per Produce request sent");
    let intervals: u64 = lines(&log, "interval").iter().map(|l| l.n).sum();
    assert_eq!(intervals, N, "{durability}: the intervals add up to the run");
    let total = run.parts["total"];
    for (name, q) in &run.parts {
        assert!(q[0] <= q[1] && q[1] <= q[2] && q[2] <= q[3], "{durability} {name}: quantiles out of order: {q:?}");
        // Each part of a request is at most its total (same histogram buckets).
        assert!(q[3] <= total[3], "{durability} {name}: max {} above the total's {}", q[3], total[3]);
    }
    for name in ["total", "queue", "local", "durable", "wake", "send"] {
        assert!(run.parts.contains_key(name), "{durability}: no {name}_us");
    }
    assert!(total[3] > 0, "{durability}: a request took no time at all? {total:?}");
    if durability == "never" {
        // Answered by the handler itself: nothing waited for a sync or a wake-up.
        assert_eq!(run.parts["durable"][3], 0, "never: no fdatasync wait");
        assert_eq!(run.parts["wake"][3], 0, "never: no reply posted from another thread");
    } else {
        // acks=-1 responses wait for their covering fdatasync on the sync pool.
        assert!(run.parts["durable"][3] > 0, "group: no request waited for an fdatasync? {:?}", run.parts["durable"]);
    }
}

#[test]
fn produce_latency_is_reported_per_request_in_group_mode() {
    run_mode("group");
}

#[test]
fn produce_latency_is_reported_per_request_in_never_mode() {
    run_mode("never");
}
