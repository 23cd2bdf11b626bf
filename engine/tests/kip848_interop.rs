//! The consumer group protocol (KIP-848) with an unchanged client: confluent-kafka (librdkafka
//! 2.16) with `group.protocol=consumer`, through `tests/interop/kip848.py`: members joining,
//! leaving and being killed, each record read exactly once across the group; both server-side
//! assignors; committed offsets shared with classic consumers and kept across a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require_tool, start_broker_with};
use engine::broker::{BrokerConfig, BrokerHandle};
use engine::log::Durability;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop").join(name)
}

fn run(name: &str, args: &[&str]) -> serde_json::Value {
    let py = require_tool("python3");
    let out = Command::new("timeout").arg("150").arg(py).arg(script(name)).args(args).output().expect("run python3");
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\n{}\n(needs `pip install confluent-kafka`)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {stdout}"))
}

/// A broker with 6 partitions per topic and a 6 s consumer-protocol session timeout.
fn broker(dir: &Path, durability: Durability) -> BrokerHandle {
    start_broker_with(
        |cfg: &mut BrokerConfig| {
            cfg.log.durability = durability;
            cfg.default_partitions = 6;
            cfg.consumer_session_timeout_ms = 6_000;
            cfg.consumer_heartbeat_interval_ms = 500;
        },
        dir,
    )
}

fn group_scenario(assignor: &str) {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), Durability::Never);
    let addr = b.local_addr().to_string();
    let r = run(
        "kip848.py",
        &["group", "--bootstrap", &addr, "--topic", "orders", "--group", "g", "--assignor", assignor, "--count", "300"],
    );
    println!("{r}");
    assert_eq!(r["records"], 900, "{r}");
    assert_eq!(r["phase1_A_partitions"], serde_json::json!([0, 1, 2, 3, 4, 5]), "{r}");
    // Balanced split between the two members, as both assignors do for one topic.
    assert_eq!(r["split"]["A"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["split"]["B"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["described"]["assignor"], assignor, "{r}");
    b.shutdown().unwrap();
}

#[test]
fn members_join_and_leave_with_the_uniform_assignor_and_every_record_is_read_once() {
    group_scenario("uniform");
}

#[test]
fn members_join_and_leave_with_the_range_assignor_and_every_record_is_read_once() {
    group_scenario("range");
}

#[test]
fn a_killed_member_loses_its_partitions_after_the_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), Durability::Never);
    let addr = b.local_addr().to_string();
    let r = run("kip848.py", &["kill", "--bootstrap", &addr, "--topic", "orders", "--group", "victims", "--count", "300"]);
    println!("{r}");
    assert_eq!(r["records"], 600, "{r}");
    assert!(r["read_by_B"].as_u64().unwrap() > 0, "the victim read its share before the kill: {r}");
    // Removed by the 6 s session timeout: not at once (no leave was sent), and not never.
    let took = r["takeover_s"].as_f64().unwrap();
    assert!((4.0..60.0).contains(&took), "took over {took} s after the kill");
    b.shutdown().unwrap();
}

/// Values v<first>..v<first+n> in the order read.
fn values(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn committed_offsets_are_shared_with_classic_consumers_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = |n: &str| work.path().join(n).to_str().unwrap().to_string();
    let b = broker(dir.path(), Durability::Group);
    let addr = b.local_addr().to_string();
    let produce = |addr: &str, first: usize, n: usize| {
        let (first, n) = (first.to_string(), n.to_string());
        run("kip848.py", &["produce", "--bootstrap", addr, "--topic", "shared", "--first", &first, "--count", &n]);
    };
    let sorted = |mut v: Vec<String>| {
        v.sort_by_key(|s| s[1..].parse::<usize>().unwrap());
        v
    };
    let want = |first: usize, n: usize| (first..first + n).map(|i| format!("v{i}")).collect::<Vec<_>>();

    // A consumer-protocol member reads 60 and commits.
    produce(&addr, 0, 60);
    run("kip848.py", &["resume", "--bootstrap", &addr, "--topic", "shared", "--group", "shared", "--expect", "60", "--out", &out("c1")]);
    assert_eq!(sorted(values(&work.path().join("c1"))), want(0, 60));

    // A classic consumer of the same group id resumes from those commits: only the new 30.
    produce(&addr, 60, 30);
    let classic = Command::new("timeout")
        .arg("120")
        .arg(require_tool("python3"))
        .arg(script("consumer_groups.py"))
        .args(["consume", "--bootstrap", &addr, "--topic", "shared", "--group", "shared", "--expect", "30"])
        .args(["--out", &out("c2")])
        .output()
        .unwrap();
    assert!(classic.status.success(), "classic consumer: {}", String::from_utf8_lossy(&classic.stderr));
    let got: Vec<String> = values(&work.path().join("c2")).iter().map(|l| l.split(' ').nth(3).unwrap().to_string()).collect();
    assert_eq!(sorted(got), want(60, 30));

    // Restart: the consumer-protocol member resumes after the classic member's commits.
    produce(&addr, 90, 20);
    b.shutdown().unwrap();
    let b = broker(dir.path(), Durability::Group);
    let addr = b.local_addr().to_string();
    run("kip848.py", &["resume", "--bootstrap", &addr, "--topic", "shared", "--group", "shared", "--expect", "20", "--out", &out("c3")]);
    assert_eq!(sorted(values(&work.path().join("c3"))), want(90, 20));
    b.shutdown().unwrap();
}

#[test]
fn a_running_member_rejoins_after_a_broker_restart_and_reads_on() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let flag = work.path().join("restarted");
    let b = broker(dir.path(), Durability::Group);
    let addr = b.local_addr();
    let mut child = Command::new("timeout")
        .arg("150")
        .arg(require_tool("python3"))
        .arg(script("kip848.py"))
        .args(["survive", "--bootstrap", &addr.to_string(), "--topic", "live", "--group", "live", "--count", "200"])
        .arg("--flag")
        .arg(&flag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "phase1 read", "the member did not read phase 1");
    // Restart on the same address: the member's group is gone from memory, its offsets are not.
    b.shutdown().unwrap();
    let b = start_broker_with(
        |cfg: &mut BrokerConfig| {
            cfg.listen = addr;
            cfg.log.durability = Durability::Group;
            cfg.default_partitions = 6;
            cfg.consumer_session_timeout_ms = 6_000;
            cfg.consumer_heartbeat_interval_ms = 500;
        },
        dir.path(),
    );
    std::fs::write(&flag, b"").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "survive failed ({status}): {err}");
    let r: serde_json::Value = serde_json::from_str(rest.lines().last().unwrap_or_default()).unwrap();
    println!("{r}");
    assert_eq!((r["records"].as_u64(), r["partitions"].as_u64()), (Some(400), Some(6)), "{r}");
    // The restarted broker knows the group only because the member rejoined it (then left).
    let mut c = common::Client::connect(addr);
    let mut d = kafka_protocol::messages::ConsumerGroupDescribeRequest::default();
    d.group_ids = vec![kafka_protocol::messages::GroupId(kafka_protocol::protocol::StrBytes::from_static_str("live"))];
    let g = &c.call(0, &d).groups[0];
    assert_eq!((g.error_code, g.group_state.as_str(), g.group_epoch > 0), (0, "Empty", true), "{g:?}");
    b.shutdown().unwrap();
}
