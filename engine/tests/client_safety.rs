//! Issue 15 through real clients: confluent-kafka (PyPI, librdkafka 2.x) driven by
//! `tests/interop/safety.py`, and Debian's kcat (librdkafka 2.0.2).
//! * current librdkafka's all-topics Metadata v12 is answered (list_topics and a regex
//!   subscription work) and `__producer_ids` is not listed;
//! * the internal topics cannot be deleted (TOPIC_AUTHORIZATION_FAILED) or produced to
//!   (INVALID_TOPIC_EXCEPTION, as Kafka's ReplicaManager);
//! * seek by timestamp is exact to the record inside one 100-record batch (uncompressed and lz4)
//!   for both clients;
//! * a transactional producer initializes (issue 20; KIP-848 consumers are served too:
//!   `kip848_interop.rs`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{require_tool, run, start_broker, Client};
use engine::log::Durability;
use engine::record::{self, build};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;

/// Timestamp of the first record; record i has TS0 + 10 * i.
const TS0: i64 = 1_700_000_000_000;

/// Run one command of the script; its JSON answer.
fn safety(args: &[&str]) -> Value {
    let py = require_tool("python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/safety.py");
    let out = run(Command::new(py).arg(&script).args(args), None, Duration::from_secs(120));
    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
}

#[test]
fn current_librdkafka_lists_topics_without_producer_ids() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    broker.logs().create_topic("visible", 2, None).unwrap();
    let addr = broker.local_addr().to_string();
    // Before: "Metadata v12: 3 trailing bytes after the request body", connection closed,
    // list_topics() failed with _TRANSPORT.
    let r = safety(&["list-topics", "--bootstrap", &addr]);
    for who in ["admin", "producer"] {
        let names: Vec<&str> = r[who].as_array().expect("names").iter().filter_map(Value::as_str).collect();
        assert!(names.contains(&"visible"), "{who}: {names:?}");
        assert!(!names.contains(&"__producer_ids"), "{who} lists __producer_ids: {names:?}");
    }
    // kcat (librdkafka 2.0.2, Metadata v4) does not list it either.
    let listing = run(Command::new(require_tool("kcat")).args(["-L", "-b", &addr]), None, Duration::from_secs(60));
    let listing = String::from_utf8_lossy(&listing);
    assert!(listing.contains("topic \"visible\"") && !listing.contains("__producer_ids"), "{listing}");
    // A regex subscription lists all topics too.
    let r = safety(&["regex-subscribe", "--bootstrap", &addr, "--topic", "rx", "--timeout", "30"]);
    assert_eq!(r["got"]["value"], "by-regex", "{r:?}");
    assert_eq!(r["got"]["topic"], "rx-1", "{r:?}");
    broker.shutdown().unwrap();
}

#[test]
fn internal_topics_cannot_be_deleted_or_produced_to_by_clients() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();
    let r = safety(&["delete-internal", "--bootstrap", &addr]);
    for t in ["__consumer_offsets", "__producer_ids"] {
        assert_eq!(r[t]["code"], "TOPIC_AUTHORIZATION_FAILED", "{t}: {r:?}");
        assert!(broker.logs().topic(t).is_some(), "{t} still exists");
    }
    // kcat: the delivery fails with "Invalid topic" and kcat exits non-zero; nothing stored.
    let kcat = require_tool("kcat");
    let end = broker.logs().partition("__consumer_offsets", 0).unwrap().log_end_offset();
    let out = Command::new(&kcat)
        .args(["-P", "-b", &addr, "-t", "__consumer_offsets", "-p", "0", "-X", "message.timeout.ms=10000"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"forged\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kcat produce to __consumer_offsets succeeded: {err}");
    assert!(err.contains("Invalid topic"), "{err}");
    assert_eq!(broker.logs().partition("__consumer_offsets", 0).unwrap().log_end_offset(), end);
    broker.shutdown().unwrap();
}

/// 100 records in one batch, timestamps TS0 + 10 i: record 30's timestamp must find offset
/// 30 (and a timestamp between records 29 and 30 too), through confluent-kafka's
/// offsets_for_times and kcat's `-o s@<ts>`.
fn check_seek(addr: &str, topic: &str) {
    let kcat = require_tool("kcat");
    for (ts, want) in [(TS0 + 300, 30), (TS0 + 295, 30), (TS0, 0), (TS0 + 990, 99)] {
        let r = safety(&["offsets-for-times", "--bootstrap", addr, "--topic", topic, "--ts", &ts.to_string()]);
        assert_eq!(r["offset"], want, "confluent-kafka offsets_for_times({ts}) on {topic}: {r:?}");
        assert_eq!(r["timestamp"], TS0 + 10 * want, "{topic}: {r:?}");
        let out = run(
            Command::new(&kcat).args(["-C", "-b", addr, "-t", topic, "-p", "0", "-o", &format!("s@{ts}"), "-c", "1", "-f", "%o %T\\n"]),
            None,
            Duration::from_secs(60),
        );
        let got = String::from_utf8_lossy(&out).trim().to_string();
        assert_eq!(got, format!("{want} {}", TS0 + 10 * want), "kcat -o s@{ts} on {topic}");
    }
    let r = safety(&["offsets-for-times", "--bootstrap", addr, "--topic", topic, "--ts", &(TS0 + 991).to_string()]);
    assert_eq!(r["offset"], -1, "no record at or after the last timestamp: {r:?}");
}

#[test]
fn seek_by_timestamp_is_exact_to_the_record_for_two_clients() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();
    // Uncompressed: one batch built here.
    let recs: Vec<build::Rec> = (0..100).map(|i| build::Rec { key: None, value: Some(b"v"), timestamp_delta: i * 10 }).collect();
    let batch = build::batch_with(&recs, TS0, -1, -1, -1);
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("seek-none")))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch)))])]);
    let r = Client::connect(broker.local_addr()).call(9, &req);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    // lz4: one batch from librdkafka.
    let r = safety(&["produce-times", "--bootstrap", &addr, "--topic", "seek-lz4", "--compression", "lz4", "--ts0", &TS0.to_string()]);
    assert_eq!(r["unflushed"], 0, "{r:?}");
    for (topic, codec) in [("seek-none", 0), ("seek-lz4", 3)] {
        let p = broker.logs().partition(topic, 0).unwrap();
        let bytes = p.read_copy(0, 1 << 20).unwrap();
        let batches = record::validate_all(&bytes, 1 << 20).unwrap();
        assert_eq!(batches.len(), 1, "{topic}: the 100 records must be one batch");
        assert_eq!((batches[0].offset_count(), batches[0].compression()), (100, codec), "{topic}");
        check_seek(&addr, topic);
    }
    broker.shutdown().unwrap();
}

#[test]
fn transactional_producer_initializes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let r = safety(&["transactional", "--bootstrap", &broker.local_addr().to_string()]);
    // Before issue 15: COORDINATOR_NOT_AVAILABLE: init_transactions(10 s) timed out; then a
    // fatal TRANSACTIONAL_ID_AUTHORIZATION_FAILED; since issue 20 transactions are served
    // (tests/transactions_interop.rs).
    assert_eq!(r["code"], "NO_ERROR", "{r:?}");
    println!("init_transactions took {} s", r["elapsed"]);
    broker.shutdown().unwrap();
}
