//! Consumer-group mode through the real path: `loadgen run --consumer-group` against the engine
//! broker started here (its group coordinator); afterwards confluent-kafka (librdkafka, an
//! independent client) reads the group's committed offsets and the partitions' high watermarks.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use loadgen::results::RunResult;

/// Run a 4-partition, 2-member group workload (plus `extra` YAML lines); returns the result and
/// the exit code.
fn run_group(addr: SocketAddr, dir: &Path, group: &str, extra: &str, secs: &str) -> (RunResult, Option<i32>) {
    let wl = dir.join("w.yaml");
    std::fs::write(
        &wl,
        format!("name: cg\npartitionsPerTopic: 4\nmessageSize: 100\nconsumerPerSubscription: 2\nconsumerMode: group\ncommitIntervalMs: 500\n{extra}"),
    )
    .unwrap();
    let args = ["--workload", wl.to_str().unwrap(), "--rate", "3000", "--duration", secs, "--warmup", "0.5", "--consumer-group", group];
    let (r, out) = run_kept_topics(addr, group, &dir.join(format!("{group}.json")), &args);
    (r, out.status.code())
}

/// confluent-kafka: per partition (committed offset of `group`, high watermark).
fn committed_and_high(addr: SocketAddr, group: &str, topic: &str) -> Vec<(i64, i64)> {
    let script = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition
addr, group, topic = sys.argv[1], sys.argv[2], sys.argv[3]
c = Consumer({"bootstrap.servers": addr, "group.id": group, "enable.auto.commit": False})
out = []
committed = c.committed([TopicPartition(topic, p) for p in range(4)], timeout=20)
for tp in committed:
    if tp.error:
        print(json.dumps({"error": str(tp.error)})); sys.exit(1)
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=20)
    out.append([tp.offset, hi])
c.close()
print(json.dumps(out))
"#;
    let out = Command::new("python3").args(["-c", script, &addr.to_string(), group, topic]).output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "confluent-kafka check failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap()
}

/// What every group run must satisfy: each acknowledged record consumed once by the group
/// (re-deliveries only in `duplicates`), the lag series present and back at 0, the committed
/// offsets equal to the high watermarks (checked by librdkafka).
fn check_accounting(r: &RunResult, addr: SocketAddr, group: &str) {
    let c = r.consumer.as_ref().expect("consumer block");
    assert_eq!(c.mode, "group");
    let p = r.producer.as_ref().unwrap();
    assert!(p.records_acknowledged_total > 3000, "{p:?}");
    assert_eq!(c.records_consumed_total, p.records_acknowledged_total, "every acknowledged record consumed once ({} duplicates apart)", c.duplicates);
    let a = r.accounting.as_ref().unwrap();
    assert!(a.measure.adds_up(), "{a:?}");
    // One end-to-end sample per measured record: duplicates are never counted as new records.
    assert_eq!(r.end_to_end.latency_us.count, a.measure.acknowledged, "{:?}", r.end_to_end);
    let g = c.group.as_ref().expect("group block");
    assert_eq!(g.group_ids, vec![group.to_string()]);
    assert_eq!(g.members, 2);
    assert!(g.commits > 0 && g.heartbeats > 0, "{g:?}");
    assert!(g.commit_latency_us.count >= g.commits, "{g:?}");
    // Lag: a value every second once consumers run, back to 0 after the drain; committed too.
    let lags: Vec<i64> = r.timeseries.iter().filter_map(|s| s.consumer_lag).collect();
    assert!(lags.len() >= 3, "{:?}", r.timeseries);
    assert_eq!(r.timeseries.last().unwrap().consumer_lag, Some(0), "{:?}", r.timeseries);
    assert!(r.timeseries.iter().any(|s| s.committed_lag.is_some_and(|l| l > 0)), "commits trail consumption: {:?}", r.timeseries);
    assert_eq!(c.lag.final_, 0);
    assert_eq!(c.lag.committed_final, Some(0), "{:?}", c.lag);
    let topic = &r.target.topics[0];
    let ch = committed_and_high(addr, group, topic);
    assert_eq!(ch.len(), 4);
    for (i, (committed, high)) in ch.iter().enumerate() {
        assert_eq!(committed, high, "partition {i}: committed offset vs high watermark");
    }
    assert_eq!(ch.iter().map(|(_, h)| *h as u64).sum::<u64>(), p.records_acknowledged_total);
}

/// 2 members on 4 partitions, nobody joins or leaves: every record once, no rebalance.
fn steady(addr: SocketAddr, dir: &Path, group: &str) {
    let (r, code) = run_group(addr, dir, group, "", "2");
    assert_eq!(code, Some(0), "{:?}", r.consumer);
    check_accounting(&r, addr, group);
    let c = r.consumer.as_ref().unwrap();
    let g = c.group.as_ref().unwrap();
    // Nobody joined or left while measuring: no rebalance, nothing delivered twice.
    assert_eq!(g.rebalances, 0, "{g:?}");
    assert_eq!(g.member_rejoins, 0, "{g:?}");
    assert!(g.generations_at_start >= 1, "{g:?}");
    assert_eq!(c.duplicates, 0);
}

/// A third member joins 0.7 s into the window and leaves at 2 s: two rebalances, measured, and
/// the accounting still adds up. Returns the result file.
fn churn(addr: SocketAddr, dir: &Path, group: &str) -> std::path::PathBuf {
    let (r, code) = run_group(addr, dir, group, "extraConsumerJoinSeconds: 0.7\nextraConsumerLeaveSeconds: 2\n", "3.5");
    assert!(matches!(code, Some(0) | Some(5)), "exit {code:?}: {:?}", r.consumer);
    check_accounting(&r, addr, group);
    let g = r.consumer.as_ref().unwrap().group.as_ref().unwrap();
    // The join and the leave each start a new generation; every member rejoins, timed.
    assert!(g.rebalances >= 2, "{g:?}");
    assert!(g.member_rejoins >= 2, "{g:?}");
    assert_eq!(g.rebalance_duration_us.count, g.member_rejoins, "{g:?}");
    assert!(g.rebalance_duration_us.max > 0.0);
    assert_eq!(g.extra_member_join_s, Some(0.7));
    dir.join(format!("{group}.json"))
}

#[test]
fn a_group_consumes_every_record_once_and_commits_the_high_watermarks() {
    let (_engine, addr) = start_engine();
    let dir = tempfile::tempdir().unwrap();
    steady(addr, dir.path(), "cg-steady");
}

#[test]
fn a_member_joining_and_leaving_mid_run_rebalances_and_the_accounting_still_adds_up() {
    let (_engine, addr) = start_engine();
    let dir = tempfile::tempdir().unwrap();
    let json = churn(addr, dir.path(), "cg-churn");

    // The report shows the lag series and the consumers' table; headless Chromium renders it.
    let html_path = dir.path().join("report.html");
    let out = run_cli(&["report", json.to_str().unwrap(), "-o", html_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("<svg id=\"chart-lag\""), "no lag chart");
    let lag = &html[html.find("chart-lag").unwrap()..html.find("id=\"consumers\"").unwrap()];
    assert!(lag.contains(">R1 lag<") && lag.contains(">R1 committed lag<"), "lag series missing from the legend");
    assert_eq!(lag.matches("<polyline class=\"series\"").count(), 2);
    assert!(html.contains("<th>rebalances</th>") && html.contains("<th>commit p99 ms</th>"));
    assert!(!html.contains('…'), "a label was cut off");
    if let Some(dom) = chromium_dom(&html_path) {
        assert!(dom.contains("id=\"chart-lag\"") && dom.contains("id=\"consumers\""), "lag chart or consumers table not in the rendered DOM");
    }
}

/// The same two runs against Apache Kafka's group coordinator. Needs a Kafka:
/// `KAFKA_PEER_PORT=25092 peers/kafka/kafka-peer start single`, then
/// `LOADGEN_KAFKA_BOOTSTRAP=127.0.0.1:25092 cargo test -p loadgen --test consumer_group -- --ignored`.
#[test]
#[ignore = "needs Apache Kafka at LOADGEN_KAFKA_BOOTSTRAP (peers/kafka/kafka-peer start single)"]
fn against_apache_kafka() {
    let boot = std::env::var("LOADGEN_KAFKA_BOOTSTRAP").expect("LOADGEN_KAFKA_BOOTSTRAP=host:port of an Apache Kafka broker");
    let addr: SocketAddr = boot.parse().expect("LOADGEN_KAFKA_BOOTSTRAP is host:port");
    let dir = tempfile::tempdir().unwrap();
    // Group ids unique per test run (a Kafka outlives the test).
    let id = std::process::id();
    steady(addr, dir.path(), &format!("cg-steady-{id}"));
    churn(addr, dir.path(), &format!("cg-churn-{id}"));
}
