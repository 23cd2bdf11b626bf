//! Workload YAML: every shipped file parses; OMB files parse; unknown fields are refused.

use loadgen::workload::{KeyDistributor, Workload};

#[test]
fn shipped_workloads_parse_and_cover_the_required_set() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let w = Workload::load(p.to_str().unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        names.push(w.name.clone());
        // the built-in of the same name is the same workload
        assert_eq!(Workload::load(&w.name).unwrap(), w);
    }
    for want in ["smoke", "max-throughput-100b", "throughput-1kb", "many-partitions-1000", "durable-fsync", "backlog-drain"] {
        assert!(names.iter().any(|n| n == want), "missing workload {want}");
    }
    let m = Workload::load("many-partitions-1000").unwrap();
    assert_eq!(m.total_partitions(), 1000);
    assert_eq!(Workload::load("durable-fsync").unwrap().durability, "group");
    assert!(Workload::load("backlog-drain").unwrap().consumer_backlog_size_gb > 0.0);
    assert_eq!(Workload::load("max-rate-search").unwrap().producer_rate, 0.0);
}

#[test]
fn openmessaging_benchmark_workload_is_accepted() {
    // Verbatim shape of OMB's workloads/1-topic-16-partitions-1kb.yaml plus its optional fields.
    let w = Workload::from_yaml(
        r#"
name: 1 topic / 16 partitions / 1Kb
topics: 1
partitionsPerTopic: 16
keyDistributor: "RANDOM_NANO"
messageSize: 1024
useRandomizedPayloads: true
randomBytesRatio: 0.5
randomizedPayloadPoolSize: 1000
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
warmupDurationMinutes: 1
"#,
    )
    .unwrap();
    assert_eq!(w.key_distributor, KeyDistributor::Random);
    assert_eq!(w.message_size, 1024);
    assert_eq!(w.duration_s(), 900.0);
}

#[test]
fn unknown_fields_are_errors_with_one_line() {
    for (yaml, field) in [
        ("name: a\nproducerRat: 5\n", "producerRat"),
        ("name: a\nlinger: 5\n", "linger"),
        ("name: a\nkeyDistributor: NO_KEY\nfoo: {bar: 1}\n", "foo"),
    ] {
        let e = Workload::from_yaml(yaml).unwrap_err();
        assert!(e.contains(&format!("unknown field `{field}`")), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let e = Workload::from_yaml("name: a\nkeyDistributor: SOMETIMES\n").unwrap_err();
    assert!(e.contains("keyDistributor") || e.contains("unknown variant"), "{e}");
}

#[test]
fn overrides_apply_and_revalidate() {
    let mut w = Workload::smoke();
    let o = loadgen::workload::Overrides { rate: Some(123.0), partitions: Some(7), ..Default::default() };
    o.apply(&mut w).unwrap();
    assert_eq!((w.producer_rate, w.partitions_per_topic), (123.0, 7));
    let bad = loadgen::workload::Overrides { message_size: Some(0), ..Default::default() };
    assert!(bad.apply(&mut w).unwrap_err().contains("messageSize"));
}
