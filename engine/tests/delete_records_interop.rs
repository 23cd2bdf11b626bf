//! DeleteRecords (key 21) against the real broker: confluent-kafka's AdminClient and
//! kafka-python's KafkaAdminClient (`tests/interop/delete_records.py`), the `broker` binary
//! killed with SIGKILL and restarted (the start holds), and the wire level (every version,
//! the codes, Fetch and ListOffsets after it). The Java AdminClient's `deleteRecords` is in
//! peers/java-clients.

mod common;

use std::path::Path;
use std::process::Command;

use common::{free_addr, require_tool, spawn_broker_process, start_broker, Client};
use engine::log::Durability;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn script(args: &[&str]) -> serde_json::Value {
    let py = require_tool("python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/delete_records.py");
    let out = Command::new("timeout").arg("120").arg(py).arg(script).args(args).output().expect("run python3");
    assert!(
        out.status.success(),
        "delete_records.py {args:?} failed ({}):\n{}\n(needs `pip install confluent-kafka kafka-python`)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("delete_records.py output {stdout:?}: {e}"))
}

/// confluent-kafka then kafka-python move the start; a new consumer (earliest) starts there;
/// the broker process is killed with SIGKILL and restarted: the start holds.
#[test]
fn delete_records_with_real_clients_survives_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut child = spawn_broker_process(dir.path(), addr, &["--durability", "group"], "warn");
    let bootstrap = addr.to_string();
    let r = script(&["confluent", "--bootstrap", &bootstrap, "--topic", "dr"]);
    assert_eq!(r["deleted"], serde_json::json!({"dr-0": 4, "dr-1": 10}), "{r}");
    assert_eq!(r["above_hw"]["dr-0"], "OFFSET_OUT_OF_RANGE", "{r}");
    // librdkafka finds no leader in the metadata for these and never sends them (the broker's
    // own code for them is checked at the wire level below).
    assert_eq!(r["unknown_topic"]["no-such-topic-0"], "_NOENT", "{r}");
    assert_eq!(r["unknown_partition"]["dr-7"], "_NOENT", "{r}");
    // INVALID_TOPIC_EXCEPTION (17), librdkafka's name for it.
    assert_eq!(r["internal"]["__consumer_offsets-0"], "TOPIC_EXCEPTION", "{r}");
    assert_eq!(r["earliest"], serde_json::json!({"0": 4, "1": 10}), "{r}");
    assert_eq!(r["latest"], serde_json::json!({"0": 10, "1": 10}), "{r}");
    assert_eq!(r["first"], serde_json::json!([4, "v0-4"]), "{r}");

    let r = script(&["kafka-python", "--bootstrap", &bootstrap, "--topic", "dr"]);
    assert_eq!(r["deleted"], serde_json::json!({"dr-0": 6}), "{r}");
    assert_eq!(r["below_start"], serde_json::json!({"dr-0": 6}), "{r}");
    assert_eq!(r["beginning"], 6, "{r}");
    assert_eq!(r["first"], serde_json::json!([6, "v0-6"]), "{r}");

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut child = spawn_broker_process(dir.path(), addr, &["--durability", "group"], "warn");
    let r = script(&["consume", "--bootstrap", &bootstrap, "--topic", "dr"]);
    assert_eq!(r["earliest"], serde_json::json!({"0": 6, "1": 10}), "{r}");
    assert_eq!(r["latest"], serde_json::json!({"0": 10, "1": 10}), "{r}");
    assert_eq!(r["first"], serde_json::json!([6, "v0-6"]), "{r}");
    child.kill().unwrap();
    child.wait().unwrap();
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn delete(c: &mut Client, version: i16, topic: &str, parts: &[(i32, i64)]) -> Vec<(i64, i16)> {
    let req = DeleteRecordsRequest::default().with_timeout_ms(5000).with_topics(vec![DeleteRecordsTopic::default()
        .with_name(TopicName(s(topic)))
        .with_partitions(parts.iter().map(|&(p, o)| DeleteRecordsPartition::default().with_partition_index(p).with_offset(o)).collect())]);
    let resp = c.call(version, &req);
    assert_eq!(resp.topics.len(), 1);
    resp.topics[0].partitions.iter().map(|p| (p.low_watermark, p.error_code)).collect()
}

fn list_offset(c: &mut Client, topic: &str, ts: i64) -> (i16, i64) {
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(s(topic)))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(ts)])]);
    let resp = c.call(7, &req);
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// (error code, high watermark, log start offset, record bytes) of a Fetch at `offset`.
fn fetch(c: &mut Client, topic: &str, offset: i64) -> (i16, i64, i64, usize) {
    let req = FetchRequest::default().with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(1 << 20).with_topics(vec![
        FetchTopic::default().with_topic(TopicName(s(topic))).with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20)]),
    ]);
    let resp = c.call(11, &req);
    let p = &resp.responses[0].partitions[0];
    (p.error_code, p.high_watermark, p.log_start_offset, p.records.as_ref().map_or(0, |r| r.len()))
}

#[test]
fn delete_records_wire_level_versions_codes_fetch_and_list_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    broker.logs().create_topic("w", 2, None).unwrap();
    let p = broker.logs().partition("w", 0).unwrap();
    for i in 0..10u64 {
        p.append_durable(&mut engine::record::build::batch_with(
            &[engine::record::build::Rec { key: None, value: Some(&i.to_be_bytes()), timestamp_delta: 0 }],
            1000 + i as i64,
            -1,
            -1,
            -1,
        ))
        .unwrap();
    }
    let mut c = Client::connect(broker.local_addr());
    // Advertised: 0-2.
    let versions = c.call(3, &ApiVersionsRequest::default());
    let dr = versions.api_keys.iter().find(|k| k.api_key == 21).expect("DeleteRecords advertised");
    assert_eq!((dr.min_version, dr.max_version), (0, 2));

    assert_eq!(delete(&mut c, 0, "w", &[(0, 3)]), vec![(3, 0)]);
    assert_eq!(delete(&mut c, 1, "w", &[(0, 5)]), vec![(5, 0)]);
    // Below the start: unchanged, the start answered. Above the high watermark, or negative
    // other than -1: OFFSET_OUT_OF_RANGE. Unknown partition: UNKNOWN_TOPIC_OR_PARTITION.
    assert_eq!(delete(&mut c, 2, "w", &[(0, 4), (0, 11), (0, -2), (9, 1)]), vec![(5, 0), (-1, 1), (-1, 1), (-1, 3)]);
    assert_eq!(delete(&mut c, 2, "nope", &[(0, 1)]), vec![(-1, 3)]);
    assert_eq!(delete(&mut c, 2, "__consumer_offsets", &[(0, 0)]), vec![(-1, 17)]);
    assert_eq!(delete(&mut c, 2, "__producer_ids", &[(0, 0)]), vec![(-1, 3)]);

    assert_eq!(list_offset(&mut c, "w", -2), (0, 5));
    assert_eq!(list_offset(&mut c, "w", -1), (0, 10));
    // A timestamp below every record's: the first offset served, not a deleted one.
    assert_eq!(list_offset(&mut c, "w", 0), (0, 5));
    let (code, hw, start, bytes) = fetch(&mut c, "w", 4);
    assert_eq!((code, hw, start, bytes), (1, 10, 5, 0), "Fetch below the start");
    let (code, hw, start, bytes) = fetch(&mut c, "w", 5);
    assert_eq!((code, hw, start), (0, 10, 5));
    assert!(bytes > 0);

    // -1: up to the high watermark; then a restart keeps it.
    assert_eq!(delete(&mut c, 2, "w", &[(0, -1)]), vec![(10, 0)]);
    assert_eq!(fetch(&mut c, "w", 9).0, 1);
    drop(c);
    broker.shutdown().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    assert_eq!(list_offset(&mut c, "w", -2), (0, 10));
    assert_eq!(fetch(&mut c, "w", 9).0, 1);
    broker.shutdown().unwrap();
}

/// A damaged checkpoint at start: that partition's topic is not served (the reason is logged
/// and listed), and neither a CreateTopics nor an auto-create through Produce removes its data.
#[test]
fn a_damaged_checkpoint_keeps_the_topic_out_and_its_data_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    broker.logs().create_topic("w", 1, None).unwrap();
    let p = broker.logs().partition("w", 0).unwrap();
    for i in 0..5u64 {
        p.append_durable(&mut engine::record::build::batch_with(
            &[engine::record::build::Rec { key: None, value: Some(&i.to_be_bytes()), timestamp_delta: 0 }],
            1000,
            -1,
            -1,
            -1,
        ))
        .unwrap();
    }
    p.delete_records(2).unwrap();
    drop(p);
    broker.shutdown().unwrap();
    let ck = dir.path().join("w-0").join(engine::log::partition::LOG_START_CHECKPOINT);
    let mut bytes = std::fs::read(&ck).unwrap();
    bytes[6] ^= 0x10;
    std::fs::write(&ck, &bytes).unwrap();

    let broker = start_broker(dir.path(), Durability::Group, 1);
    let failed = broker.logs().failed.lock().unwrap().clone();
    assert!(failed.iter().any(|f| f.contains("w-0") && f.contains("log-start-offset")), "{failed:?}");
    assert!(broker.logs().topic("w").is_none());
    let err = broker.logs().create_topic("w", 1, None).unwrap_err().to_string();
    assert!(err.contains("refusing to create over it"), "{err}");
    // Auto-create through Metadata/Produce resolves to the same refusal: the data stays.
    assert!(broker.logs().get_or_create("w", 1).is_err());
    assert!(dir.path().join("w-0").join("00000000000000000000.log").exists());
    assert_eq!(std::fs::read(&ck).unwrap(), bytes);
    broker.shutdown().unwrap();
}
