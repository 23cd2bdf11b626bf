//! Transactions with a real client (issue 20): confluent-kafka (librdkafka) through
//! `tests/interop/transactions.py`.
//!
//! * A read-process-write loop (read_committed consumer, transactional producer,
//!   `send_offsets_to_transaction`, every 4th transaction aborted) whose process is killed with
//!   SIGKILL at random points and restarted a bounded number of times: every input record
//!   appears exactly once in the output a read_committed consumer reads, while a
//!   read_uncommitted one sees the aborted and the killed transactions' records too.
//! * The same loop with the *broker* killed (SIGKILL) and restarted mid-run: the transaction
//!   state and the partitions' transaction indexes are recovered, and the result is the same.
//! * A committed and an aborted transaction: read_committed sees only the committed records.
//! * kafka-python and kafkajs (`tests/interop/js/transactions.js`) transactions.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_addr, require_tool, run, spawn_broker_process, start_broker};
use engine::log::Durability;
use rand::Rng;

const INPUT: usize = 5000;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/transactions.py")
}

fn py(args: &[&str], limit: Duration) -> String {
    let out = run(Command::new(require_tool("python3")).arg(script()).args(args), None, limit);
    String::from_utf8(out).unwrap()
}

fn spawn_eos(bootstrap: &str) -> Child {
    Command::new(require_tool("python3"))
        .arg(script())
        .args(["eos", "--bootstrap", bootstrap, "--topic", "in", "--out-topic", "out", "--batch", "50", "--abort-every", "4"])
        .args(["--pause-ms", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eos")
}

/// value → occurrences, and the total, as `count` prints them.
fn count(bootstrap: &str, isolation: &str) -> (HashMap<String, usize>, usize) {
    let out = py(&["count", "--bootstrap", bootstrap, "--topic", "out", "--isolation", isolation, "--seconds", "120"], Duration::from_secs(180));
    let mut m = HashMap::new();
    let mut total = 0;
    for line in out.lines() {
        let (v, n) = line.rsplit_once(' ').unwrap();
        if v == "total" {
            total = n.parse().unwrap();
        } else {
            m.insert(v.to_string(), n.parse().unwrap());
        }
    }
    (m, total)
}

/// Every input record exactly once in the committed output.
fn assert_exactly_once(bootstrap: &str) {
    let (committed, total) = count(bootstrap, "read_committed");
    let missing: Vec<usize> = (0..INPUT).filter(|i| !committed.contains_key(&format!("out:i{i}"))).collect();
    let dups: Vec<(&String, &usize)> = committed.iter().filter(|(_, n)| **n != 1).collect();
    assert!(missing.is_empty(), "{} input records missing from the committed output, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    assert!(dups.is_empty(), "records committed more than once: {:?}", &dups[..dups.len().min(5)]);
    assert_eq!(total, INPUT);
    let (_, uncommitted) = count(bootstrap, "read_uncommitted");
    // Every 4th transaction was aborted: its records are in the log, only read_committed hides them.
    assert!(uncommitted > INPUT, "read_uncommitted sees the aborted records too ({uncommitted} vs {INPUT})");
    println!("transactions_interop: committed {total} records exactly once; read_uncommitted saw {uncommitted}");
}

/// Run the loop, killing it (SIGKILL) at a random point `kills` times, then to its end.
fn run_with_kills(bootstrap: &str, kills: usize, mut between: impl FnMut(usize)) {
    let mut rng = rand::thread_rng();
    let mut interrupted = 0;
    for k in 0..kills {
        let mut child = spawn_eos(bootstrap);
        let at = Instant::now() + Duration::from_millis(rng.gen_range(1500..4000));
        // Poll until the kill time (or an early exit, which is a finished run).
        while Instant::now() < at && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        between(k);
    }
    println!("transactions_interop: {interrupted} of {kills} kills hit a running loop");
    assert!(interrupted >= 2, "the loop finished before the kills: the test exercised nothing ({interrupted} of {kills})");
    py(&["eos", "--bootstrap", bootstrap, "--topic", "in", "--out-topic", "out", "--batch", "50", "--abort-every", "4", "--seconds", "240"], Duration::from_secs(300));
}

#[test]
fn confluent_kafka_read_process_write_is_exactly_once_across_producer_kills() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 3);
    let addr = broker.local_addr().to_string();
    py(&["seed", "--bootstrap", &addr, "--topic", "in", "--count", &INPUT.to_string()], Duration::from_secs(120));
    run_with_kills(&addr, 4, |_| {});
    assert_exactly_once(&addr);
    // Nothing is left open: every partition's last stable offset is its high watermark.
    for p in 0..3 {
        let part = broker.logs().partition("out", p).unwrap();
        assert_eq!(part.last_stable_offset(), part.high_watermark(), "out-{p} has an open transaction");
    }
    broker.shutdown().unwrap();
}

#[test]
fn confluent_kafka_read_process_write_is_exactly_once_across_broker_kills() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let args = ["--durability", "group", "--default-partitions", "3"];
    let mut broker = spawn_broker_process(dir.path(), addr, &args, "warn");
    let bootstrap = addr.to_string();
    py(&["seed", "--bootstrap", &bootstrap, "--topic", "in", "--count", &INPUT.to_string()], Duration::from_secs(120));
    // Each round: the loop runs a while, then the broker is killed and restarted (the loop's
    // process, stuck on its dead connection, is killed too and restarted next round).
    run_with_kills(&bootstrap, 3, |_| {
        broker.kill().unwrap(); // SIGKILL
        broker.wait().unwrap();
        broker = spawn_broker_process(dir.path(), addr, &args, "warn");
    });
    assert_exactly_once(&bootstrap);
    broker.kill().unwrap();
    broker.wait().unwrap();
}

#[test]
fn confluent_kafka_aborted_transaction_is_invisible_to_read_committed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();
    assert_eq!(py(&["abort", "--bootstrap", &addr, "--topic", "ab", "--count", "50"], Duration::from_secs(120)).trim(), "ok");
    let read = |iso: &str| py(&["count", "--bootstrap", &addr, "--topic", "ab", "--isolation", iso, "--seconds", "60"], Duration::from_secs(120));
    let committed = read("read_committed");
    assert!(committed.lines().all(|l| !l.starts_with("aborted-")), "an aborted record was served to read_committed:\n{committed}");
    assert!(committed.ends_with("total 50\n"), "{committed}");
    let uncommitted = read("read_uncommitted");
    assert!(uncommitted.ends_with("total 100\n"), "{uncommitted}");
    // 50 + marker + 50 + marker; nothing open.
    let p = broker.logs().partition("ab", 0).unwrap();
    assert_eq!(p.high_watermark(), 102);
    assert_eq!(p.last_stable_offset(), 102);
    broker.shutdown().unwrap();
}

/// kafka-python: a committed transaction with `send_offsets_to_transaction`, an aborted one,
/// read_committed and read_uncommitted consumers, and the admin client's list_transactions /
/// describe_transactions while the second is open.
#[test]
fn kafka_python_transactions_offsets_and_admin() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    broker.logs().get_or_create("kp-in", 1).unwrap();
    let addr = broker.local_addr().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/transactions_kafka_python.py");
    let out = run(Command::new(require_tool("python3")).arg(script).args(["--bootstrap", &addr, "--topic", "kp"]), None, Duration::from_secs(180));
    let r: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let committed: Vec<String> = (0..10).map(|i| format!("committed-{i}")).collect();
    assert_eq!(r["read_committed"], serde_json::json!(committed), "{r}");
    assert_eq!(r["read_uncommitted"], 20, "{r}");
    assert_eq!(r["listed"], serde_json::json!([["kp-tx", "TransactionState.ONGOING"]]), "{r}");
    assert_eq!(r["described"], serde_json::json!({"state": "TransactionState.ONGOING", "partitions": ["kp-0"]}), "{r}");
    assert_eq!(r["group_offset"], 42, "the offset sent with the committed transaction: {r}");
    broker.shutdown().unwrap();
}

/// kafkajs: two committed transactions (the first with `sendOffsets`) around an aborted one;
/// kafkajs' default read_committed consumer reads only the committed records, a
/// read_uncommitted one all ten, and the group's offset is the one sent with the commit.
#[test]
fn kafkajs_transactions_and_read_committed() {
    let node = require_tool("node");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/js");
    assert!(
        dir.join("node_modules/kafkajs").is_dir(),
        "kafkajs is not installed: run `npm ci --prefix engine/tests/interop/js` (.ci/run does)"
    );
    let data = tempfile::tempdir().unwrap();
    let broker = start_broker(data.path(), Durability::Group, 1);
    let addr = broker.local_addr().to_string();
    let out = run(Command::new(node).arg(dir.join("transactions.js")).args([&addr, "js-txn"]), None, Duration::from_secs(180));
    let out = String::from_utf8(out).unwrap();
    let r: serde_json::Value = serde_json::from_str(out.lines().last().expect("one JSON line")).unwrap();
    assert_eq!(r["error"], serde_json::Value::Null, "{r}");
    assert_eq!(r["committed"], serde_json::json!(["c1", "c2", "c3", "c4", "c5", "c6", "c7"]), "{r}");
    assert_eq!(r["uncommitted"], 10, "{r}");
    assert_eq!(r["offsets"], 42, "{r}");
    // 5 + marker + 3 + marker + 2 + marker; nothing open.
    let p = broker.logs().partition("js-txn", 0).unwrap();
    assert_eq!(p.high_watermark(), 13);
    assert_eq!(p.last_stable_offset(), 13);
    broker.shutdown().unwrap();
}
