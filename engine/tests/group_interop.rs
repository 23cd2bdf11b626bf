//! Consumer groups, committed offsets and the idempotent producer against the real broker with
//! unchanged clients: confluent-kafka (librdkafka) through `tests/interop/consumer_groups.py`,
//! and Debian's kcat (librdkafka 2.0.2) in balanced-consumer mode.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{require_tool, start_broker, Client};
use engine::log::Durability;
use engine::record;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/consumer_groups.py")
}

fn python(args: &[&str]) -> String {
    let py = require_tool("python3");
    let out = Command::new("timeout").arg("120").arg(py).arg(script()).args(args).output().expect("run python3");
    assert!(
        out.status.success(),
        "consumer_groups.py {args:?} failed ({}):\n{}\n(needs `pip install confluent-kafka`)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lines of a script's --out file, split into fields.
fn lines(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

#[test]
fn seed_scenario_group_consumer_resumes_after_its_commit_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = |n: &str| work.path().join(n).to_str().unwrap().to_string();

    let broker = start_broker(dir.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();
    python(&["produce", "--bootstrap", &addr, "--topic", "test", "--count", "50", "--out", &out("p1")]);

    // A consumer in group testconsume with auto.offset.reset=earliest gets every record with
    // its topic, value and offset, committing as it goes.
    python(&["consume", "--bootstrap", &addr, "--topic", "test", "--group", "testconsume", "--expect", "50", "--out", &out("c1")]);
    let got = lines(&work.path().join("c1"));
    assert_eq!(got.len(), 50, "first consumer: {got:?}");
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f[0], "test");
        assert_eq!((f[1].as_str(), f[2].parse::<usize>().unwrap(), f[3].clone()), ("0", i, format!("v{i}")));
    }

    // More records, then a broker restart.
    python(&["produce", "--bootstrap", &addr, "--topic", "test", "--count", "30", "--first", "50", "--out", &out("p2")]);
    broker.shutdown().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();

    // A new consumer in the same group resumes after the committed offset: only the 30 new
    // records, none of the first 50 again (it keeps polling to catch any redelivery).
    python(&[
        "consume", "--bootstrap", &addr, "--topic", "test", "--group", "testconsume", "--expect", "30", "--linger", "3",
        "--out", &out("c2"),
    ]);
    let got = lines(&work.path().join("c2"));
    let offsets: Vec<usize> = got.iter().map(|f| f[2].parse().unwrap()).collect();
    assert_eq!(offsets, (50..80).collect::<Vec<_>>(), "resumed consumer read {got:?}");
    for f in &got {
        assert_eq!(f[3], format!("v{}", f[2]));
    }
    // Tools see the group and its committed position (the next offset to read).
    let said = python(&["admin", "--bootstrap", &addr, "--topic", "test", "--group", "testconsume", "--expect", "80"]);
    assert!(said.contains("admin ok"), "{said}");
    broker.shutdown().unwrap();
}

#[test]
fn two_consumers_split_four_partitions_and_one_takes_over_when_the_other_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 4);
    let addr = broker.local_addr().to_string();
    python(&["produce", "--bootstrap", &addr, "--topic", "four", "--count", "400", "--plain", "--partitions", "4"]);
    let parts: Vec<u64> = (0..4).map(|p| broker.logs().partition("four", p).unwrap().log_end_offset()).collect();
    assert_eq!(parts.iter().sum::<u64>(), 400);
    assert!(parts.iter().all(|&n| n > 0), "every partition holds records: {parts:?}");
    let said = python(&["split", "--bootstrap", &addr, "--topic", "four", "--group", "splitters", "--count", "400"]);
    assert!(said.contains("split ok"), "{said}");
    broker.shutdown().unwrap();
}

#[test]
fn a_killed_consumer_is_expired_after_its_session_timeout_and_the_other_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 4);
    let addr = broker.local_addr().to_string();
    python(&["produce", "--bootstrap", &addr, "--topic", "four", "--count", "40", "--plain", "--partitions", "4"]);
    let said = python(&["kill", "--bootstrap", &addr, "--topic", "four", "--group", "victims", "--timeout", "60"]);
    assert!(said.contains("kill ok"), "{said}");
    // Expired by the session timeout (6 s), not at once and not never.
    let took: f64 = said.split("partitions ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((4.0..40.0).contains(&took), "took over {took} s after the kill");
    broker.shutdown().unwrap();
}

#[test]
fn kcat_balanced_consumer_reads_everything() {
    let kcat = require_tool("kcat");
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();
    python(&["produce", "--bootstrap", &addr, "--topic", "test", "--count", "100", "--plain"]);
    let run = || {
        let out = Command::new("timeout")
            .args(["60", kcat.to_str().unwrap(), "-b", &addr, "-G", "testconsume", "test"])
            .args(["-X", "auto.offset.reset=earliest", "-e", "-q", "-f", "%t %p %o %s\\n"])
            .output()
            .expect("run kcat");
        assert!(out.status.success(), "kcat failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    let got = run();
    let want: Vec<String> = (0..100).map(|i| format!("test 0 {i} v{i}")).collect();
    assert_eq!(got, want);
    // kcat's auto-commit stored the group's position: a second run in the group reads nothing.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(run(), Vec::<String>::new());
    broker.shutdown().unwrap();
}

#[test]
fn idempotent_producer_batches_replayed_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();
    let produced = work.path().join("p");
    python(&[
        "produce", "--bootstrap", &addr, "--topic", "idem", "--count", "200", "--flush-every", "20", "--out",
        produced.to_str().unwrap(),
    ]);
    let part = broker.logs().partition("idem", 0).unwrap();
    assert_eq!(part.log_end_offset(), 200);

    // The producer's own batches, as stored (librdkafka set producer id, epoch and sequences).
    let stored = part.read_copy(0, 64 << 20).unwrap();
    let mut batches = Vec::new();
    let mut at = 0;
    while at < stored.len() {
        let info = record::validate(&stored[at..], 1 << 30).unwrap();
        assert!(info.producer_id >= 0 && info.base_sequence >= 0, "an idempotent batch: {info:?}");
        batches.push((info, stored[at..at + info.size_bytes].to_vec()));
        at += info.size_bytes;
    }
    assert!(batches.len() >= 6, "want more than 5 batches, got {}", batches.len());

    // Replay the last five batches, as a producer retrying after lost responses would: each is
    // acknowledged with its original offset and nothing is appended.
    let mut c = Client::connect(broker.local_addr());
    let produce = |c: &mut Client, batch: &[u8]| {
        let mut b = batch.to_vec();
        record::patch_base_offset(&mut b, 0);
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default().with_name(TopicName(StrBytes::from_static_str("idem"))).with_partition_data(vec![
                PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(b))),
            ]),
        ]);
        let r = c.call(9, &req);
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    for (info, b) in &batches[batches.len() - 5..] {
        assert_eq!(produce(&mut c, b), (0, info.base_offset), "replayed batch at {}", info.base_offset);
    }
    // A batch older than the five Kafka remembers is out of order, not stored again.
    let (code, _) = produce(&mut c, &batches[0].1);
    assert_eq!(code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER for a stale replay");
    assert_eq!(part.log_end_offset(), 200, "replays stored nothing");

    // After a restart the producer state is rebuilt from the log: replays are still caught.
    drop(c);
    drop(part);
    broker.shutdown().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    let (info, b) = batches.last().unwrap();
    assert_eq!(produce(&mut c, b), (0, info.base_offset));
    assert_eq!(broker.logs().partition("idem", 0).unwrap().log_end_offset(), 200);
    // Every acknowledged record is there exactly once.
    let acked = lines(&produced);
    assert_eq!(acked.len(), 200);
    for (i, f) in acked.iter().enumerate() {
        assert_eq!(f[2], format!("v{i}"));
    }
    broker.shutdown().unwrap();
}
