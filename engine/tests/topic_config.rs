//! Per-topic configuration (issue 17): created with CreateTopics, described with its sources,
//! altered live with AlterConfigs / IncrementalAlterConfigs, persisted (kill -9 + restart), and
//! honoured by the partition (segment roll at the topic's segment.bytes, max.message.bytes,
//! message.timestamp.type=LogAppendTime, min.insync.replicas), through confluent-kafka's
//! AdminClient (`tests/interop/admin.py topic-configs`), kafka-python
//! (`tests/interop/admin_kafka_python.py`) and wire-level requests.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use common::{require_tool, spawn_broker_process, start_broker_with, Client};
use engine::io::UringIo;
use engine::log::{LogConfig, LogManager, TopicConfig};
use engine::record::build;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn python(args: &[&str]) -> serde_json::Value {
    let py = require_tool("python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/admin.py");
    let out = Command::new("timeout").arg("120").arg(py).arg(script).args(args).output().expect("run python3");
    assert!(
        out.status.success(),
        "admin.py {args:?} failed ({}):\n{}\n(needs `pip install confluent-kafka`)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn create(c: &mut Client, name: &str, configs: &[(&str, &str)], validate_only: bool) -> (i16, String) {
    let cfgs = configs.iter().map(|(k, v)| CreatableTopicConfig::default().with_name(s(k)).with_value(Some(s(v)))).collect();
    let req = CreateTopicsRequest::default().with_validate_only(validate_only).with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(cfgs)]);
    let r = c.call(7, &req);
    if r.topics[0].error_code == 0 {
        // v5+: the created topic's configuration, each override as DYNAMIC_TOPIC_CONFIG.
        let got = r.topics[0].configs.as_ref().expect("configs in a v7 response");
        for (k, v) in configs {
            assert!(got.iter().any(|e| e.name.as_str() == *k && e.value.as_deref() == Some(*v) && e.config_source == 1), "{k}={v} not in {got:?}");
        }
        assert!(got.iter().any(|e| e.name.as_str() == "cleanup.policy"));
    }
    (r.topics[0].error_code, r.topics[0].error_message.as_ref().map_or(String::new(), |m| m.to_string()))
}

/// (value, source, read_only) of every key of a topic.
fn describe(c: &mut Client, name: &str) -> std::collections::BTreeMap<String, (String, i8, bool)> {
    let req = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default().with_resource_type(2).with_resource_name(s(name))]);
    let r = c.call(4, &req);
    assert_eq!(r.results[0].error_code, 0, "{:?}", r.results[0].error_message);
    r.results[0]
        .configs
        .iter()
        .map(|e| (e.name.to_string(), (e.value.as_deref().unwrap_or("").to_string(), e.config_source, e.read_only)))
        .collect()
}

fn incremental(c: &mut Client, name: &str, ops: &[(&str, i8, Option<&str>)], validate_only: bool) -> (i16, String) {
    let configs = ops
        .iter()
        .map(|(k, op, v)| AlterableConfig::default().with_name(s(k)).with_config_operation(*op).with_value(v.map(s)))
        .collect();
    let req = IncrementalAlterConfigsRequest::default().with_validate_only(validate_only).with_resources(vec![
        AlterConfigsResource::default().with_resource_type(2).with_resource_name(s(name)).with_configs(configs),
    ]);
    let r = c.call(1, &req);
    (r.responses[0].error_code, r.responses[0].error_message.as_ref().map_or(String::new(), |m| m.to_string()))
}

fn produce(c: &mut Client, topic: &str, batch: Vec<u8>, acks: i16) -> (i16, i64, i64) {
    let req = ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default().with_name(TopicName(s(topic))).with_partition_data(vec![PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(Bytes::from(batch)))]),
    ]);
    let r = c.call(9, &req);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset, p.log_append_time_ms)
}

const DYNAMIC_TOPIC: i8 = 1;
const DEFAULT: i8 = 5;
const INVALID_CONFIG: i16 = 40;

#[test]
fn topic_configs_with_confluent_kafka_are_validated_described_altered_and_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(|_| {}, dir.path());
    let r = python(&["topic-configs", "--bootstrap", &broker.local_addr().to_string(), "--topic", "tc"]);
    assert_eq!(r["create"], "ok", "{r}");
    assert_eq!(r["compact"][0], "INVALID_CONFIG", "{r}");
    assert!(r["compact"][1].as_str().unwrap().contains("compaction is not supported yet"), "{r}");
    assert_eq!(r["too_big"][0], "INVALID_CONFIG", "{r}");
    let msg = r["too_big"][1].as_str().unwrap();
    assert!(msg.contains("segment.bytes") && msg.contains("4294967296") && msg.contains("2147483647"), "{r}");
    assert_eq!(r["unknown_key"], serde_json::json!(["INVALID_CONFIG", "Unknown topic config name: no.such.config"]), "{r}");
    assert_eq!(r["validate_bad"][0], "INVALID_CONFIG", "{r}");
    assert_eq!(r["validate_ok"], "ok", "{r}");
    // Nothing was created by the refused or validate-only requests.
    assert_eq!(r["topics"], serde_json::json!(["tc"]), "{r}");
    let d = &r["described"];
    assert_eq!(d["segment.bytes"], serde_json::json!(["1024", "DYNAMIC_TOPIC_CONFIG"]), "{r}");
    assert_eq!(d["retention.ms"], serde_json::json!(["3600000", "DYNAMIC_TOPIC_CONFIG"]), "{r}");
    assert_eq!(d["max.message.bytes"], serde_json::json!(["3000", "DYNAMIC_TOPIC_CONFIG"]), "{r}");
    assert_eq!(d["retention.bytes"], serde_json::json!(["-1", "DEFAULT_CONFIG"]), "{r}");
    // max.message.bytes 3000: 2000 bytes stored, 5000 refused; after the SET to 6000, stored.
    assert_eq!(r["produce"], serde_json::json!(["ok", "MSG_SIZE_TOO_LARGE"]), "{r}");
    assert_eq!(r["produce_after"], serde_json::json!(["ok"]), "{r}");
    assert_eq!(r["inc_validate_only"], "ok", "{r}");
    assert_eq!(r["inc"], "ok", "{r}");
    assert_eq!(r["inc_append_compact"][0], "INVALID_CONFIG", "{r}");
    assert_eq!(r["inc_append_int"], serde_json::json!(["INVALID_CONFIG", "Config value append is not allowed for config key: segment.bytes"]), "{r}");
    assert_eq!(r["inc_unknown_topic"][0], "UNKNOWN_TOPIC_OR_PART", "{r}");
    let a = &r["after_inc"];
    assert_eq!(a["retention.bytes"], serde_json::json!(["-1", "DEFAULT_CONFIG"]), "validate_only changed it: {r}");
    assert_eq!(a["retention.ms"], serde_json::json!(["604800000", "DEFAULT_CONFIG"]), "{r}");
    assert_eq!(a["max.message.bytes"], serde_json::json!(["6000", "DYNAMIC_TOPIC_CONFIG"]), "{r}");
    assert_eq!(a["message.timestamp.type"], serde_json::json!(["LogAppendTime", "DYNAMIC_TOPIC_CONFIG"]), "{r}");
    assert_eq!(a["cleanup.policy"], serde_json::json!(["delete", "DEFAULT_CONFIG"]), "a refused APPEND changed it: {r}");
    // The consumer sees CreateTime before the change, LogAppendTime (type 2) after it.
    assert_eq!(r["timestamp_types"], serde_json::json!([1, 2]), "{r}");
    // The topic rolled at its own segment.bytes (1024): each batch above it got a segment.
    assert!(broker.logs().partition("tc", 0).unwrap().segment_count() >= 2, "{r}");
    assert_eq!(r["alter"], "ok", "{r}");
    assert_eq!(r["alter_bad"][0], "INVALID_CONFIG", "{r}");
    let a = &r["after_alter"];
    assert_eq!(a["retention.bytes"], serde_json::json!(["100000000", "DYNAMIC_TOPIC_CONFIG"]), "{r}");
    assert_eq!(a["segment.bytes"], serde_json::json!([(1u64 << 30).to_string(), "DEFAULT_CONFIG"]), "{r}");
    assert_eq!(a["message.timestamp.type"], serde_json::json!(["CreateTime", "DEFAULT_CONFIG"]), "{r}");
    broker.shutdown().unwrap();
}

/// The broker binary, killed with SIGKILL after a CreateTopics with configs and an
/// IncrementalAlterConfigs, comes back with both: described as DYNAMIC_TOPIC_CONFIG and applied
/// (max.message.bytes refuses, segment.bytes rolls, LogAppendTime stamps).
#[test]
fn topic_config_survives_kill9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr: std::net::SocketAddr =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).parse().unwrap();
    let mut child = spawn_broker_process(&data, addr, &[], "warn");
    let mut c = Client::connect(addr);
    assert_eq!(create(&mut c, "kept", &[("segment.bytes", "4096"), ("max.message.bytes", "2000")], false).0, 0);
    assert_eq!(incremental(&mut c, "kept", &[("message.timestamp.type", 0, Some("LogAppendTime"))], false).0, 0);
    child.kill().unwrap();
    child.wait().unwrap();

    let mut child = spawn_broker_process(&data, addr, &[], "warn");
    let mut c = Client::connect(addr);
    let d = describe(&mut c, "kept");
    assert_eq!(d["segment.bytes"], ("4096".to_string(), DYNAMIC_TOPIC, false));
    assert_eq!(d["max.message.bytes"], ("2000".to_string(), DYNAMIC_TOPIC, false));
    assert_eq!(d["message.timestamp.type"], ("LogAppendTime".to_string(), DYNAMIC_TOPIC, false));
    assert_eq!(d["retention.ms"], ("604800000".to_string(), DEFAULT, false));
    // max.message.bytes: a 3000-byte batch is refused (MESSAGE_TOO_LARGE), smaller ones stored
    // and stamped with the broker's time.
    assert_eq!(produce(&mut c, "kept", build::simple_batch(1, 3000, 1), -1).0, 10);
    let before = engine::log::now_ms();
    let mut stamped = Vec::new();
    for i in 0..20 {
        let (code, base, append_time) = produce(&mut c, "kept", build::simple_batch(3, 300, 1_000 + i), -1);
        assert_eq!((code, base), (0, i * 3));
        assert!(append_time >= before, "log_append_time {append_time}");
        stamped.push(append_time);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // segment.bytes 4096: ~20 KB of ~1 KB batches lie in several segments, none above 4096.
    let part = data.join("kept-0");
    let sizes: Vec<u64> = std::fs::read_dir(&part)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert!(sizes.len() >= 4, "segments {sizes:?}");
    // (the active one may be preallocated ahead; sealed ones are exact)
    let mut sealed = sizes.clone();
    sealed.sort_unstable();
    assert!(sealed[..sealed.len() - 1].iter().all(|&s| s <= 4096 && s > 0), "segments {sizes:?}");
    // The stored batches carry the LogAppendTime attribute and the broker's time.
    let m = LogManager::open(&data, Arc::new(UringIo), LogConfig::default()).unwrap();
    let p = m.partition("kept", 0).unwrap();
    let all = common::read_all(&p);
    assert_eq!(all.len(), 20);
    for ((info, _), t) in all.iter().zip(&stamped) {
        assert_ne!(info.attributes & engine::record::ATTR_LOG_APPEND_TIME, 0);
        assert_eq!(info.max_timestamp, *t);
    }
    m.close().unwrap();
}

/// Wire level: CreateTopics validate_only with configs, min.insync.replicas above the one
/// replica refuses acks=all (NOT_ENOUGH_REPLICAS) but not acks=1, and broker keys are static.
#[test]
fn wire_level_validate_only_min_insync_and_static_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(|_| {}, dir.path());
    let mut c = Client::connect(broker.local_addr());
    assert_eq!(create(&mut c, "v", &[("retention.ms", "10")], true).0, 0);
    assert!(broker.logs().topic("v").is_none(), "validate_only created the topic");
    let (code, msg) = create(&mut c, "v", &[("max.message.bytes", "999999999")], true);
    assert_eq!(code, INVALID_CONFIG);
    assert!(msg.contains("max.message.bytes"), "{msg}");
    let (code, msg) = create(&mut c, "v", &[("retention.ms", "1"), ("retention.ms", "2")], false);
    assert_eq!(code, INVALID_CONFIG, "{msg:?}");
    assert_eq!(create(&mut c, "isr", &[("min.insync.replicas", "2")], false).0, 0);
    assert_eq!(produce(&mut c, "isr", build::simple_batch(1, 10, 1), -1).0, 19); // NOT_ENOUGH_REPLICAS
    assert_eq!(produce(&mut c, "isr", build::simple_batch(1, 10, 1), 1).0, 0);
    assert_eq!(incremental(&mut c, "isr", &[("min.insync.replicas", 1, None)], false).0, 0);
    assert_eq!(produce(&mut c, "isr", build::simple_batch(1, 10, 1), -1).0, 0);
    // Broker keys: static, refused with the reason.
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(4)
        .with_resource_name(s("0"))
        .with_configs(vec![AlterableConfig::default().with_name(s("log.retention.ms")).with_value(Some(s("1")))])]);
    let r = c.call(1, &req);
    assert_eq!(r.responses[0].error_code, 42, "{:?}", r.responses[0].error_message);
    // Duplicate keys in one resource: INVALID_REQUEST, nothing changed.
    let (code, _) = incremental(&mut c, "isr", &[("retention.ms", 0, Some("5")), ("retention.ms", 0, Some("6"))], false);
    assert_eq!(code, 42);
    assert_eq!(describe(&mut c, "isr")["retention.ms"].1, DEFAULT);
    // Advertised: AlterConfigs 0-2, IncrementalAlterConfigs 0-1.
    let v = c.call(3, &ApiVersionsRequest::default());
    let range = |k: i16| v.api_keys.iter().find(|a| a.api_key == k).map(|a| (a.min_version, a.max_version));
    assert_eq!(range(33), Some((0, 2)));
    assert_eq!(range(44), Some((0, 1)));
    broker.shutdown().unwrap();
}

/// The log layer: a topic's overrides are applied at creation and on reopen, rolled at its
/// segment.bytes; a deleted topic's file goes with it; a damaged file refuses the open with
/// its path, and a stray one (interrupted create) is removed.
#[test]
fn log_manager_persists_applies_and_refuses_damaged_configs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { retention_ms: None, ..LogConfig::default() };
    let m = LogManager::open(dir.path(), Arc::new(UringIo), cfg.clone()).unwrap();
    let over = TopicConfig::from_pairs([("segment.bytes", "2048")], cfg.batch_bytes_max).unwrap();
    let p = m.create_topic_with_config("small", 1, over.clone()).unwrap()[0].clone();
    for i in 0..40 {
        p.append(&mut build::simple_batch(2, 200, i)).unwrap();
    }
    p.flush().unwrap();
    assert!(p.segment_count() >= 8, "{} segments", p.segment_count());
    // retention.bytes altered live: the next retention pass deletes the oldest segments down to
    // it (whole segments, never the active one), and the log start moves.
    let before = p.segment_count();
    let live = TopicConfig::from_pairs([("segment.bytes", "2048"), ("retention.bytes", "4096")], cfg.batch_bytes_max).unwrap();
    m.alter_topic_config("small", live).unwrap();
    assert!(p.enforce_retention().unwrap() > 0);
    assert!(p.segment_count() < before && p.size_bytes() <= 4096 + 2048, "{} segments, {} bytes", p.segment_count(), p.size_bytes());
    assert!(p.log_start_offset() > 0);
    m.alter_topic_config("small", over.clone()).unwrap();
    m.create_topic("gone", 1, None).unwrap();
    m.alter_topic_config("gone", over.clone()).unwrap();
    m.delete_topic("gone").unwrap();
    m.close().unwrap();
    drop(m);
    let cfg_dir = dir.path().join("topic-configs");
    assert!(!cfg_dir.join("gone.properties").exists());
    // A stray file (its topic has no partitions) is removed on open.
    std::fs::write(cfg_dir.join("stray.properties"), "retention.ms=1\n").unwrap();
    std::fs::write(cfg_dir.join("small.properties.tmp"), "torn").unwrap();
    let m = LogManager::open(dir.path(), Arc::new(UringIo), cfg.clone()).unwrap();
    assert_eq!(m.topic_config("small"), over);
    assert_eq!(m.partition("small", 0).unwrap().live().segment_bytes(), 2048);
    assert!(!cfg_dir.join("stray.properties").exists());
    assert!(!cfg_dir.join("small.properties.tmp").exists());
    m.close().unwrap();
    drop(m);
    std::fs::write(cfg_dir.join("small.properties"), "segment.bytes=banana\n").unwrap();
    let err = LogManager::open(dir.path(), Arc::new(UringIo), cfg).unwrap_err().to_string();
    assert!(err.contains("small.properties") && err.contains("segment.bytes"), "{err}");
}

/// A power cut right after each of CreateTopics (with configs), an alter and a delete keeps
/// exactly what was acknowledged: the simulated disk drops everything not fsynced.
#[test]
fn topic_configs_survive_a_power_cut() {
    use engine::io::{CrashMode, SimIo};
    let sim = SimIo::new();
    let cfg = LogConfig::default();
    let dir = Path::new("/data");
    let reopen = |image: &SimIo| LogManager::open(dir, common::sim_io(image), cfg.clone()).unwrap();
    let m = LogManager::open(dir, common::sim_io(&sim), cfg.clone()).unwrap();
    let a = TopicConfig::from_pairs([("segment.bytes", "4096"), ("retention.ms", "-1")], cfg.batch_bytes_max).unwrap();
    m.create_topic_with_config("a", 2, a.clone()).unwrap();
    let after_create = reopen(&sim.crash(CrashMode::DropUnsynced, 1));
    assert_eq!(after_create.topic_config("a"), a);
    assert_eq!(after_create.partition("a", 1).unwrap().live().segment_bytes(), 4096);
    assert_eq!(after_create.partition("a", 1).unwrap().live().retention_ms(), None);

    let a2 = TopicConfig::from_pairs([("message.timestamp.type", "LogAppendTime")], cfg.batch_bytes_max).unwrap();
    m.alter_topic_config("a", a2.clone()).unwrap();
    let after_alter = reopen(&sim.crash(CrashMode::DropUnsynced, 2));
    assert_eq!(after_alter.topic_config("a"), a2);
    assert!(after_alter.partition("a", 0).unwrap().live().log_append_time());
    assert_eq!(after_alter.partition("a", 0).unwrap().live().segment_bytes(), cfg.segment_bytes_max);

    m.delete_topic("a").unwrap();
    let after_delete = reopen(&sim.crash(CrashMode::DropUnsynced, 3));
    assert!(after_delete.topic("a").is_none());
    assert!(after_delete.topic_config("a").is_empty());
    // Re-created without configs: none of the old ones come back.
    m.create_topic("a", 1, None).unwrap();
    let again = reopen(&sim.crash(CrashMode::DropUnsynced, 4));
    assert!(again.topic_config("a").is_empty());
    assert_eq!(again.partition("a", 0).unwrap().live().segment_bytes(), cfg.segment_bytes_max);
}
