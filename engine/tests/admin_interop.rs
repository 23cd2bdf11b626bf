//! Admin APIs (DeleteGroups, OffsetDelete, DescribeConfigs, CreatePartitions, DescribeLogDirs,
//! DescribeCluster) against the real broker: confluent-kafka's AdminClient through
//! `tests/interop/admin.py`, kafka-python's KafkaAdminClient through
//! `tests/interop/admin_kafka_python.py`, and wire-level requests (kafka-protocol) where
//! confluent-kafka has no call (OffsetDelete) or to check codes.

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use common::{require_tool, start_broker, Client};
use engine::log::Durability;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

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
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("admin.py output {stdout:?}: {e}"))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}


#[test]
fn delete_groups_with_confluent_kafka_is_durable_and_refuses_active_and_unknown_groups() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();
    let r = python(&["groups-setup", "--bootstrap", &addr, "--topic", "t"]);
    assert_eq!(r["read"], 10, "{r}");
    assert_eq!(r["committed"], serde_json::json!([10]), "{r}");
    assert_eq!(r["deleted"]["gone"], "ok", "{r}");
    assert_eq!(r["deleted"]["busy"], "NON_EMPTY_GROUP", "{r}");
    assert_eq!(r["deleted"]["never"], "GROUP_ID_NOT_FOUND", "{r}");

    // After a restart the deleted group stays deleted: no offsets, not listed, unknown.
    broker.shutdown().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();
    let r = python(&["groups-check", "--bootstrap", &addr]);
    assert_eq!(r["deleted_again"]["gone"], "GROUP_ID_NOT_FOUND", "{r}");
    let groups: Vec<&str> = r["groups"].as_array().unwrap().iter().map(|g| g.as_str().unwrap()).collect();
    assert!(!groups.contains(&"gone"), "{r}");
    assert!(groups.contains(&"busy"), "{r}");
    let mut c = Client::connect(broker.local_addr());
    assert_eq!(committed(&mut c, "gone", "t", 0), -1);
    broker.shutdown().unwrap();
}

fn committed(c: &mut Client, group: &str, topic: &str, partition: i32) -> i64 {
    let req = OffsetFetchRequest::default().with_group_id(GroupId(s(group))).with_topics(Some(vec![
        OffsetFetchRequestTopic::default().with_name(TopicName(s(topic))).with_partition_indexes(vec![partition]),
    ]));
    let resp = c.call(5, &req);
    assert_eq!(resp.error_code, 0);
    resp.topics[0].partitions[0].committed_offset
}

fn commit(c: &mut Client, group: &str, generation: i32, member: &str, topic: &str, parts: &[(i32, i64)]) -> Vec<i16> {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(s(topic))).with_partitions(
            parts
                .iter()
                .map(|&(p, o)| OffsetCommitRequestPartition::default().with_partition_index(p).with_committed_offset(o))
                .collect(),
        )]);
    let resp = c.call(7, &req);
    resp.topics[0].partitions.iter().map(|p| p.error_code).collect()
}

fn offset_delete(c: &mut Client, group: &str, topic: &str, parts: &[i32]) -> OffsetDeleteResponse {
    let req = OffsetDeleteRequest::default().with_group_id(GroupId(s(group))).with_topics(vec![
        OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(parts.iter().map(|&p| OffsetDeleteRequestPartition::default().with_partition_index(p)).collect()),
    ]);
    c.call(0, &req)
}

/// A consumer-protocol subscription (version 0) to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut v = Vec::new();
    v.extend_from_slice(&0i16.to_be_bytes());
    v.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        v.extend_from_slice(&(t.len() as i16).to_be_bytes());
        v.extend_from_slice(t.as_bytes());
    }
    v.extend_from_slice(&(-1i32).to_be_bytes()); // user data: null
    Bytes::from(v)
}

#[test]
fn offset_delete_wire_level_deletes_durably_and_refuses_subscribed_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 2);
    let mut c = Client::connect(broker.local_addr());
    for t in ["t", "other"] {
        let req = CreateTopicsRequest::default().with_topics(vec![
            kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s(t)))
                .with_num_partitions(2)
                .with_replication_factor(1),
        ]);
        assert_eq!(c.call(4, &req).topics[0].error_code, 0);
    }
    // A standalone (Empty) group with offsets on t/0, t/1 and other/0.
    assert_eq!(commit(&mut c, "solo", -1, "", "t", &[(0, 5), (1, 7)]), vec![0, 0]);
    assert_eq!(commit(&mut c, "solo", -1, "", "other", &[(0, 3)]), vec![0]);
    // Unknown group, invalid group.
    assert_eq!(offset_delete(&mut c, "nobody", "t", &[0]).error_code, 69); // GROUP_ID_NOT_FOUND
    assert_eq!(offset_delete(&mut c, "", "t", &[0]).error_code, 24); // INVALID_GROUP_ID
    // Empty group: t/0 deleted, t/1 kept; a partition without an offset is no error.
    let r = offset_delete(&mut c, "solo", "t", &[0, 9]);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].partitions.iter().map(|p| p.error_code).collect::<Vec<_>>(), vec![0, 0]);
    assert_eq!(committed(&mut c, "solo", "t", 0), -1);
    assert_eq!(committed(&mut c, "solo", "t", 1), 7);

    // An active consumer group subscribed to t: t's offsets are in use, other's are not.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s("live")))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(subscription(&["t"]))]);
    let j = c.call(3, &join);
    assert_eq!(j.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("live")))
        .with_generation_id(j.generation_id)
        .with_member_id(j.member_id.clone());
    assert_eq!(c.call(3, &sync).error_code, 0);
    let member = j.member_id.to_string();
    assert_eq!(commit(&mut c, "live", j.generation_id, &member, "t", &[(0, 4)]), vec![0]);
    assert_eq!(commit(&mut c, "live", j.generation_id, &member, "other", &[(0, 2), (1, 2)]), vec![0, 0]);
    let r = offset_delete(&mut c, "live", "t", &[0]);
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 86)); // GROUP_SUBSCRIBED_TO_TOPIC
    let r = offset_delete(&mut c, "live", "other", &[1]);
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
    assert_eq!(committed(&mut c, "live", "t", 0), 4);
    assert_eq!(committed(&mut c, "live", "other", 1), -1);
    // DeleteGroups on the live group: NON_EMPTY_GROUP (wire level, v2).
    let d = c.call(2, &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("live")), GroupId(s("zzz"))]));
    assert_eq!(d.results.iter().map(|r| r.error_code).collect::<Vec<_>>(), vec![68, 69]);

    // Deletions survive a restart.
    drop(c);
    broker.shutdown().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 2);
    let mut c = Client::connect(broker.local_addr());
    assert_eq!(committed(&mut c, "solo", "t", 0), -1);
    assert_eq!(committed(&mut c, "solo", "t", 1), 7);
    assert_eq!(committed(&mut c, "solo", "other", 0), 3);
    assert_eq!(committed(&mut c, "live", "t", 0), 4);
    assert_eq!(committed(&mut c, "live", "other", 0), 2);
    assert_eq!(committed(&mut c, "live", "other", 1), -1);
    broker.shutdown().unwrap();
}

#[test]
fn describe_configs_with_confluent_kafka_answers_what_the_broker_applies() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start_broker_with(
        |c| {
            c.log.retention_ms = Some(3_600_000);
            c.log.segment_bytes_max = 8 << 20;
        },
        dir.path(),
    );
    let addr = broker.local_addr().to_string();
    let r = python(&["configs", "--bootstrap", &addr, "--topic", "cfg"]);
    let t = &r["topic:cfg"];
    // Topic keys are alterable (read_only false) but index.interval.bytes; broker keys are static.
    assert_eq!(t["retention.ms"], serde_json::json!(["3600000", "STATIC_BROKER_CONFIG", false]), "{r}");
    assert_eq!(t["segment.bytes"], serde_json::json!([(8 << 20).to_string(), "STATIC_BROKER_CONFIG", false]), "{r}");
    assert_eq!(t["retention.bytes"], serde_json::json!(["-1", "DEFAULT_CONFIG", false]), "{r}");
    assert_eq!(t["index.interval.bytes"], serde_json::json!(["4096", "DEFAULT_CONFIG", true]), "{r}");
    assert_eq!(t["cleanup.policy"][0], "delete", "{r}");
    assert_eq!(t["max.message.bytes"][0], engine::broker::MESSAGE_MAX_BYTES_DEFAULT.to_string(), "{r}");
    assert_eq!(t["min.insync.replicas"][0], "1", "{r}");
    assert_eq!(t["segment.ms"][0], i64::MAX.to_string(), "{r}");
    assert_eq!(r["topic:missing"], "UNKNOWN_TOPIC_OR_PART", "{r}");
    let b = &r["broker:0"];
    assert_eq!(b["log.retention.ms"], serde_json::json!(["3600000", "STATIC_BROKER_CONFIG", true]), "{r}");
    assert_eq!(b["message.max.bytes"][0], engine::broker::MESSAGE_MAX_BYTES_DEFAULT.to_string(), "{r}");
    assert_eq!(b["num.partitions"][0], "1", "{r}");

    // Wire level: the requested keys only, with synonyms; a foreign broker id is refused.
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let mut c = Client::connect(broker.local_addr());
    let req = DescribeConfigsRequest::default().with_include_synonyms(true).with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("cfg"))
            .with_configuration_keys(Some(vec![s("retention.ms")])),
        DescribeConfigsResource::default().with_resource_type(4).with_resource_name(s("7")),
    ]);
    let resp = c.call(4, &req);
    let cfg = &resp.results[0];
    assert_eq!(cfg.error_code, 0);
    assert_eq!(cfg.configs.len(), 1);
    assert_eq!(cfg.configs[0].name.as_str(), "retention.ms");
    // Synonyms in precedence order: the static broker value, then the built-in default.
    let syn: Vec<(&str, Option<&str>, i8)> =
        cfg.configs[0].synonyms.iter().map(|y| (y.name.as_str(), y.value.as_deref(), y.source)).collect();
    assert_eq!(syn, vec![("log.retention.ms", Some("3600000"), 4), ("log.retention.ms", Some("604800000"), 5)]);
    assert_eq!(resp.results[1].error_code, 42); // INVALID_REQUEST
    broker.shutdown().unwrap();
}

#[test]
fn create_partitions_with_confluent_kafka_grows_durably_and_refuses_shrink_and_internal() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();
    let r = python(&["partitions", "--bootstrap", &addr, "--topic", "grow"]);
    let o = &r["outcomes"];
    assert_eq!(o["grow"], "ok", "{r}");
    assert_eq!(o["shrink"], "INVALID_PARTITIONS", "{r}");
    assert_eq!(o["same"], "INVALID_PARTITIONS", "{r}");
    assert_eq!(o["unknown"], "UNKNOWN_TOPIC_OR_PART", "{r}");
    assert_eq!(o["internal"], "TOPIC_AUTHORIZATION_FAILED", "{r}");
    assert_eq!(r["partitions"], serde_json::json!([0, 1, 2]), "{r}");
    assert_eq!(r["unflushed"], 0, "{r}");
    assert_eq!(r["consumed"], serde_json::json!([2, 0, "in-p2"]), "{r}");
    assert_eq!(broker.logs().topic("__consumer_offsets").unwrap().len(), 1);

    // After a restart the topic has its 3 partitions, with the record in partition 2.
    broker.shutdown().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let t = broker.logs().topic("grow").expect("topic survives");
    assert_eq!(t.len(), 3);
    assert_eq!(t[2].high_watermark(), 1);
    broker.shutdown().unwrap();
}

/// The same APIs through kafka-python's KafkaAdminClient (a second client, pure Python).
#[test]
fn admin_apis_with_kafka_python() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let py = require_tool("python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/admin_kafka_python.py");
    let out = Command::new("timeout")
        .arg("120")
        .arg(py)
        .arg(script)
        .args(["--bootstrap", &broker.local_addr().to_string(), "--topic", "kp"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "admin_kafka_python.py failed ({}):\n{}\n(needs `pip install kafka-python`)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["delete_offsets"]["kp-0"], "NoError", "{r}");
    assert_eq!(r["left"], serde_json::json!(["kp-1:6"]), "{r}");
    assert_eq!(r["delete_groups"]["kpg"], "OK", "{r}");
    assert_eq!(r["delete_groups"]["nope"], "GroupIdNotFoundError", "{r}");
    assert_eq!(r["delete_again"]["kpg"], "GroupIdNotFoundError", "{r}");
    assert_eq!(r["configs"]["retention.ms"], serde_json::json!(["604800000", "DEFAULT_CONFIG"]), "{r}");
    assert_eq!(r["configs"]["max.message.bytes"][0], engine::broker::MESSAGE_MAX_BYTES_DEFAULT.to_string(), "{r}");
    assert_eq!(r["grow"], serde_json::json!([0]), "{r}");
    assert_eq!(r["shrink"], serde_json::json!([37]), "{r}"); // INVALID_PARTITIONS
    assert_eq!(r["partitions"], 4, "{r}");
    let size = broker.logs().partition("kp", 1).unwrap().size_bytes();
    assert!(size > 100, "{size}");
    let data_dir = dir.path().display().to_string();
    assert_eq!(r["log_dirs"], serde_json::json!([[data_dir, 0, [["kp", 1, size]]]]), "{r}");
    let port = broker.local_addr().port();
    assert_eq!(r["cluster"], serde_json::json!(["zero-copy-log", 0, [[0, "127.0.0.1", port]]]), "{r}");
    assert_eq!(broker.logs().topic("kp").unwrap().len(), 4);
    // Topic configuration through kafka-python: created with configs (one compacted),
    // altered incrementally (SET + DELETE) and with the legacy AlterConfigs.
    let codes: Vec<(String, i64)> = r["create_configs"]["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["error_code"].as_i64().unwrap()))
        .collect();
    assert_eq!(codes, vec![("kp-c".to_string(), 0), ("kpcompact".to_string(), 0)], "{r}");
    assert!(broker.logs().topic("kpcompact").is_some());
    let dynamic = |v: &str| serde_json::json!([v, "DYNAMIC_TOPIC_CONFIG"]);
    assert_eq!(r["modified"], serde_json::json!({"retention.ms": dynamic("60000"), "segment.bytes": dynamic("2048")}), "{r}");
    assert_eq!(r["incremental"]["topic"]["kp-c"], "OK", "{r}");
    assert_eq!(r["after_incremental"], serde_json::json!({"segment.bytes": dynamic("2048"), "max.message.bytes": dynamic("5000")}), "{r}");
    assert_eq!(r["legacy"]["topic"]["kp-c"], "OK", "{r}");
    assert_eq!(r["after_legacy"]["retention.bytes"], dynamic("1000000"), "{r}");
    let live = broker.logs().partition("kp-c", 0).unwrap();
    assert_eq!((live.live().segment_bytes(), live.live().message_max_bytes(), live.live().retention_bytes()), (2048, 5000, Some(1_000_000)));
    broker.shutdown().unwrap();
}

/// CreatePartitions is durable when it returns: a power cut right after keeps every new
/// partition (the simulated disk drops whatever was not fsynced), and the topic loads.
#[test]
fn added_partitions_survive_a_power_cut() {
    use engine::io::{CrashMode, SimIo};
    use engine::log::{LogConfig, LogManager};
    use std::sync::Arc;
    let dir = Path::new("/data");
    let cfg = LogConfig { durability: Durability::Group, ..LogConfig::default() };
    for (i, mode) in [CrashMode::DropUnsynced, CrashMode::Tear, CrashMode::TearAndFlip].into_iter().enumerate() {
        let sim = SimIo::new();
        let logs = LogManager::open(dir, Arc::new(sim.clone()), cfg.clone()).unwrap();
        logs.create_topic("t", 2, None).unwrap();
        assert!(matches!(logs.add_partitions("t", 2), Err(engine::log::TopicError::InvalidPartitions(2))));
        assert_eq!(logs.add_partitions("t", 5).unwrap().len(), 5);
        assert_eq!(logs.topic("t").unwrap().len(), 5);
        let image = sim.crash(mode, 11 + i as u64);
        let logs2 = LogManager::open(dir, Arc::new(image), cfg.clone()).unwrap();
        assert!(logs2.failed.lock().unwrap().is_empty(), "{mode:?}: {:?}", logs2.failed.lock().unwrap());
        assert_eq!(logs2.topic("t").map(|t| t.len()), Some(5), "{mode:?}");
    }
}

#[test]
fn describe_cluster_with_confluent_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    let r = python(&["cluster", "--bootstrap", &broker.local_addr().to_string()]);
    let port = broker.local_addr().port();
    assert_eq!(r, serde_json::json!({"cluster_id": "zero-copy-log", "controller": 0, "nodes": [[0, "127.0.0.1", port]]}));
    // Wire level: controllers asked of a broker endpoint → MISMATCHED_ENDPOINT_TYPE (v1+).
    let mut c = Client::connect(broker.local_addr());
    let resp = c.call(1, &DescribeClusterRequest::default().with_endpoint_type(2));
    assert_eq!(resp.error_code, 114);
    broker.shutdown().unwrap();
}

/// DeleteGroups and OffsetDelete are durable when answered: a power cut right after (the
/// simulated disk drops, tears or flips whatever was not fsynced) does not bring back what
/// they deleted, and keeps what they did not.
#[test]
fn group_deletions_survive_a_power_cut() {
    use bytes::BytesMut;
    use engine::groups::Reply;
    use engine::groups::{self, GroupConfig, GroupCoordinator};
    use engine::io::{CrashMode, SimIo};
    use engine::log::{LogConfig, LogManager};
    use kafka_protocol::protocol::Encodable;
    use std::sync::Arc;

    fn commit_standalone(c: &Arc<GroupCoordinator>, group: &str, parts: &[(i32, i64)]) {
        let req = OffsetCommitRequest::default().with_group_id(GroupId(s(group))).with_generation_id_or_member_epoch(-1).with_topics(
            vec![OffsetCommitRequestTopic::default().with_name(TopicName(s("t"))).with_partitions(
                parts
                    .iter()
                    .map(|&(p, o)| OffsetCommitRequestPartition::default().with_partition_index(p).with_committed_offset(o))
                    .collect(),
            )],
        );
        let mut buf = BytesMut::new();
        req.encode(&mut buf, 2).unwrap();
        let header = RequestHeader::default().with_request_api_key(8).with_request_api_version(2).with_correlation_id(1);
        match groups::handle(c, 8, 2, &header, &mut buf.freeze()) {
            Reply::Later(f) => assert!(!f().is_empty()),
            _ => panic!("OffsetCommit gave no deferred reply"),
        }
    }

    let dir = Path::new("/data");
    let cfg = LogConfig { durability: Durability::Group, ..LogConfig::default() };
    let gcfg = || GroupConfig { reaper_tick_ms: 10, ..GroupConfig::default() };
    for (i, mode) in [CrashMode::DropUnsynced, CrashMode::Tear, CrashMode::TearAndFlip].into_iter().enumerate() {
        let sim = SimIo::new();
        let logs = LogManager::open(dir, Arc::new(sim.clone()), cfg.clone()).unwrap();
        logs.create_topic("t", 2, None).unwrap();
        let c = GroupCoordinator::with_config(logs.clone(), gcfg()).unwrap();
        commit_standalone(&c, "gone", &[(0, 10), (1, 11)]);
        commit_standalone(&c, "kept", &[(0, 20), (1, 21)]);
        assert_eq!(c.committed("kept", "t", 1).map(|x| x.offset), Some(21));
        assert_eq!(c.delete_offsets("kept", &[("t".to_string(), 1)]), (0, vec![0]));
        assert_eq!(c.delete_group("gone"), 0);
        c.shutdown();
        let image = sim.crash(mode, 21 + i as u64);
        let logs2 = LogManager::open(dir, Arc::new(image), cfg.clone()).unwrap();
        let c2 = GroupCoordinator::with_config(logs2, gcfg()).unwrap();
        assert!(c2.group_summary("gone").is_none(), "{mode:?}: deleted group restored");
        assert_eq!(c2.delete_group("gone"), 69, "{mode:?}"); // GROUP_ID_NOT_FOUND
        assert_eq!(c2.committed("gone", "t", 0), None, "{mode:?}");
        assert_eq!(c2.committed("kept", "t", 0).map(|x| x.offset), Some(20), "{mode:?}");
        assert_eq!(c2.committed("kept", "t", 1), None, "{mode:?}");
        c2.shutdown();
    }
}

#[test]
fn create_partitions_wire_level_validate_only_assignments_duplicates_and_advertised() {
    use kafka_protocol::messages::create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic};
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    let mut c = Client::connect(broker.local_addr());
    let versions = c.call(3, &ApiVersionsRequest::default());
    for (key, lo, hi) in [(32, 1, 4), (35, 1, 4), (37, 0, 3), (42, 0, 2), (47, 0, 0), (60, 0, 2)] {
        let v = versions.api_keys.iter().find(|k| k.api_key == key).unwrap_or_else(|| panic!("API {key} not advertised"));
        assert_eq!((v.min_version, v.max_version), (lo, hi), "API {key}");
    }
    broker.logs().create_topic("w", 1, None).unwrap();
    let topic = |n: i32| CreatePartitionsTopic::default().with_name(TopicName(s("w"))).with_count(n).with_assignments(None);
    let codes = |r: CreatePartitionsResponse| r.results.iter().map(|t| t.error_code).collect::<Vec<_>>();
    let r = c.call(3, &CreatePartitionsRequest::default().with_validate_only(true).with_topics(vec![topic(3)]));
    assert_eq!(codes(r), vec![0]);
    assert_eq!(broker.logs().topic("w").unwrap().len(), 1, "validate_only created partitions");
    let bad = topic(3).with_assignments(Some(vec![
        CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(0)]),
        CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)]),
    ]));
    assert_eq!(codes(c.call(3, &CreatePartitionsRequest::default().with_topics(vec![bad]))), vec![39]);
    let short = topic(3).with_assignments(Some(vec![CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(0)])]));
    assert_eq!(codes(c.call(3, &CreatePartitionsRequest::default().with_topics(vec![short]))), vec![39]);
    assert_eq!(codes(c.call(3, &CreatePartitionsRequest::default().with_topics(vec![topic(2), topic(3)]))), vec![42, 42]);
    assert_eq!(codes(c.call(3, &CreatePartitionsRequest::default().with_topics(vec![topic(1_001)]))), vec![37]);
    assert_eq!(broker.logs().topic("w").unwrap().len(), 1);
    let ok = topic(3).with_assignments(Some(vec![
        CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(0)]),
        CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(0)]),
    ]));
    assert_eq!(codes(c.call(0, &CreatePartitionsRequest::default().with_topics(vec![ok]))), vec![0]);
    assert_eq!(broker.logs().topic("w").unwrap().len(), 3);
    broker.shutdown().unwrap();
}
