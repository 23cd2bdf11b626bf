//! The transactional producer (`--transaction-records N`) through the real binaries: the
//! project's `broker` as an external process, `loadgen run --bootstrap` driving it. A record
//! counts as acknowledged only when its transaction committed: what the run reports as
//! acknowledged is exactly what a read_committed consumer reads, and a broker frozen past the
//! drain deadline leaves the open transaction's records unacknowledged; a producer fenced
//! mid-run (another takes its transactional id) fails the run loudly.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use loadgen::client::Conn;
use loadgen::encode::{for_each_committed_record, AbortedFilter};
use loadgen::results::RunResult;


/// Data records (control batches skipped) a consumer with this isolation level (0 =
/// read_uncommitted, 1 = read_committed) reads from `topic`'s partitions 0..n, from offset 0
/// up to each partition's last stable offset (read_committed) or high watermark; and the
/// aborted transactions the broker listed. read_committed skips the records of the aborted
/// transactions with the product's filter (the one loadgen's consumers use):
/// [`AbortedFilter`].
fn count_records(addr: &str, topic: &str, n: i32, isolation: i8) -> (u64, usize) {
    let mut c = Conn::connect(addr.parse().unwrap(), Duration::from_secs(5)).unwrap();
    let mut next: Vec<i64> = vec![0; n as usize];
    let mut end: Vec<Option<i64>> = vec![None; n as usize];
    let mut records = 0u64;
    // The aborted transactions listed: (producer id, first offset) per partition.
    let mut listed: Vec<std::collections::BTreeSet<(i64, i64)>> = vec![Default::default(); n as usize];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open: Vec<i32> = (0..n).filter(|&p| end[p as usize].is_none_or(|e| next[p as usize] < e)).collect();
        if open.is_empty() {
            return (records, listed.iter().map(|l| l.len()).sum());
        }
        assert!(Instant::now() < deadline, "reading {topic} did not finish within 30 s (next {next:?}, end {end:?})");
        let r = c.fetch_many(open.iter().map(|&p| (topic, p, next[p as usize])), 100, 1 << 20, isolation).unwrap();
        for t in &r.responses {
            for p in &t.partitions {
                assert_eq!(p.error_code, 0, "Fetch {topic}/{}", p.partition_index);
                let i = p.partition_index as usize;
                let stable = if isolation == 1 { p.last_stable_offset } else { p.high_watermark };
                end[i] = Some(stable);
                let aborted: Vec<(i64, i64)> = p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)).collect();
                if isolation == 0 {
                    assert!(aborted.is_empty(), "read_uncommitted lists no aborted transaction");
                }
                listed[i].extend(aborted.iter().copied());
                let Some(b) = &p.records else { continue };
                let from = next[i];
                let (_, _, nx) = for_each_committed_record(b, &mut AbortedFilter::new(aborted), |rec| {
                    if rec.offset >= from && rec.offset < stable {
                        records += 1;
                    }
                });
                if let Some(nx) = nx {
                    next[i] = next[i].max(nx.min(stable));
                }
            }
        }
    }
}

fn create_topic(addr: &str, topic: &str, partitions: i32) {
    let mut c = Conn::connect(addr.parse().unwrap(), Duration::from_secs(5)).unwrap();
    c.create_topics(&[topic.to_string()], partitions, 1).unwrap();
}

/// Run loadgen against `broker` (its result file validated against the schema). With
/// `freeze_at`, the broker is SIGSTOPped when that live line of the measured phase appears.
fn run(broker: &Broker, args: &[&str], freeze_at: Option<usize>) -> (i32, String, RunResult) {
    match freeze_at {
        Some(n) => run_with(broker, args, Some((n, &|| broker.signal("-STOP")))),
        None => run_with(broker, args, None),
    }
}

/// [`run`] with `act` done when live line `n` of the measured phase appears.
fn run_with(broker: &Broker, args: &[&str], act: Option<(usize, &dyn Fn())>) -> (i32, String, RunResult) {
    let freeze_at = act.map(|(n, _)| n);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let mut child = bin()
        .args(["run", "-w", "smoke", "--bootstrap", &broker.addr, "--no-calibrate", "-o"])
        .arg(&out)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut seen = 0;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" measure]") {
                seen += 1;
                if Some(seen) == freeze_at {
                    let _ = tx.send(());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if let Some((_, act)) = act {
        // The action is triggered by the run's own progress, not by a sleep.
        rx.recv_timeout(Duration::from_secs(30)).expect("loadgen never reached the measured phase");
        act();
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loadgen did not end within 90 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(out.is_file(), "no result written; stderr:\n{stderr}");
    validate_against_schema(&out);
    let r = RunResult::load(&out).unwrap();
    (status.code().unwrap_or(-1), format!("{stdout}\n{stderr}"), r)
}

#[test]
fn acknowledged_records_are_exactly_what_read_committed_reads() {
    let broker = Broker::start();
    create_topic(&broker.addr, "txn-a", 2);
    // One producer, 2,000 rec/s for 0.5 s of warmup + 2 s: 5,000 records, 50 transactions of 100.
    let (code, out, r) = run(
        &broker,
        &[
            "--rate", "2000", "--warmup", "0.5", "--duration", "2", "--drain", "5", "--partitions", "2",
            "--topic", "txn-a", "--keep-topics", "--transaction-records", "100", "--transactional-id", "acct-test",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}");
    let p = r.producer.as_ref().expect("producer block");
    let t = p.transactions.as_ref().expect("transactions block");
    assert!(p.idempotent, "transactions imply idempotence");
    assert_eq!(t.records_per_transaction, 100);
    assert_eq!(p.records_acknowledged_total, 5_000, "{out}");
    assert_eq!(t.committed, 50, "{t:?}");
    assert_eq!(t.aborted, 0);
    assert_eq!(t.commit_latency_us.count, 50, "one commit latency per committed transaction");
    assert_eq!(t.produce_ack_latency_us.count, 5_000, "one Produce-ack latency per record");
    assert!(out.contains("transactions: 50 committed, 0 aborted"), "{out}");
    let (committed, aborted) = count_records(&broker.addr, "txn-a", 2, 1);
    assert_eq!(aborted, 0, "no transaction was aborted");
    assert_eq!(committed, p.records_acknowledged_total, "read_committed reads exactly the acknowledged records");
    let (all, _) = count_records(&broker.addr, "txn-a", 2, 0);
    assert_eq!(all, committed, "nothing beyond the committed records was written");
    let c = r.consumer.as_ref().expect("consumer block");
    assert_eq!(c.records_consumed_total, p.records_acknowledged_total, "the run's consumers read exactly the acknowledged records");
    assert_eq!(c.isolation_level.as_deref(), Some("read_committed"), "a transactional run's consumers read committed by default");
}

#[test]
fn broker_frozen_past_the_drain_deadline_leaves_the_open_transaction_unacknowledged() {
    let broker = Broker::start();
    // Transactions of 1,000 records at 2,000 rec/s (one every 0.5 s); the broker frozen 1 s
    // into the window until the end, 1 s of drain.
    let (code, out, r) = run(
        &broker,
        &["--rate", "2000", "--warmup", "0.5", "--duration", "3", "--drain", "1", "--partitions", "2", "--transaction-records", "1000"],
        Some(1),
    );
    assert_eq!(code, 4, "exit status for lost records; {out}");
    assert!(!r.complete);
    let a = r.accounting.as_ref().expect("accounting");
    for ph in [&a.warmup, &a.measure] {
        assert!(ph.adds_up(), "{ph:?}");
        assert_eq!(ph.unacknowledged_latency_us.count, ph.failed + ph.timed_out + ph.not_sent, "{ph:?}");
    }
    let p = r.producer.as_ref().expect("producer block");
    let t = p.transactions.as_ref().expect("transactions block");
    // Only whole committed transactions count: the open one's records (some of them answered
    // by Produce before the freeze) are never acknowledged.
    assert_eq!(p.records_acknowledged_total, t.committed * 1000, "{t:?} {a:?}");
    assert_eq!(a.warmup.acknowledged + a.measure.acknowledged, p.records_acknowledged_total);
    assert!(t.committed >= 1 && t.committed < 7, "{t:?}");
    assert!(a.measure.timed_out + a.measure.not_sent > 0, "{:?}", a.measure);
    assert_eq!(a.measure.failed, 0, "a frozen broker fails nothing: its records time out or are never sent");
}

#[test]
fn producer_fenced_mid_run_fails_loudly_and_acknowledges_only_committed_transactions() {
    let broker = Broker::start();
    create_topic(&broker.addr, "txn-f", 2);
    // Transactions of 200 records at 1,000 rec/s (five a second) for 0.5 s of warmup + 4 s;
    // at the first live line of the measured phase another producer takes the transactional
    // id (InitProducerId with it; the one producer thread's id is `<prefix>-0-0`): the broker
    // bumps the epoch and aborts the open transaction.
    let fence = || {
        let mut c = Conn::connect(broker.addr.parse().unwrap(), Duration::from_secs(5)).unwrap();
        c.init_producer_id_with(Some("fence-test-0-0"), 60_000).expect("the second producer takes the transactional id");
    };
    let (code, out, r) = run_with(
        &broker,
        &[
            "--rate", "1000", "--warmup", "0.5", "--duration", "4", "--drain", "5", "--partitions", "2",
            "--topic", "txn-f", "--keep-topics", "--transaction-records", "200", "--transactional-id", "fence-test",
        ],
        Some((1, &fence)),
    );
    assert_ne!(code, 0, "a fenced producer fails the run; {out}");
    assert!(out.contains("PRODUCER_FENCED") || out.contains("INVALID_PRODUCER_EPOCH"), "the failure names the fencing; {out}");
    assert!(!r.complete, "{out}");
    let a = r.accounting.as_ref().expect("accounting");
    for ph in [&a.warmup, &a.measure] {
        assert!(ph.adds_up(), "{ph:?}");
        assert_eq!(ph.unacknowledged_latency_us.count, ph.failed + ph.timed_out + ph.not_sent, "{ph:?}");
    }
    let p = r.producer.as_ref().expect("producer block");
    let t = p.transactions.as_ref().expect("transactions block");
    // Fenced before the window ended: fewer than the 22 transactions of the schedule committed,
    // and the fenced transaction's records (Produce-acknowledged or not) were never acknowledged.
    assert!(t.committed >= 1 && t.committed < 22, "{t:?}");
    assert_eq!(p.records_acknowledged_total, t.committed * 200, "{t:?} {a:?}");
    assert_eq!(a.warmup.acknowledged + a.measure.acknowledged, p.records_acknowledged_total);
    assert!(a.measure.failed + a.measure.timed_out > 0, "the fenced transaction's records are failed or timed out: {:?}", a.measure);
    assert_eq!(t.commit_latency_us.count, t.committed, "{t:?}");
    let (committed, aborted) = count_records(&broker.addr, "txn-f", 2, 1);
    assert_eq!(committed, p.records_acknowledged_total, "read_committed reads exactly the acknowledged records");
    let (all, _) = count_records(&broker.addr, "txn-f", 2, 0);
    assert!(aborted >= 1 && all > committed, "the fenced transaction's records are in the log, aborted ({aborted} listed, {all} records)");
    // The run's own consumers (read_committed in a transactional run) count only the committed
    // records, never those of the aborted transaction.
    let c = r.consumer.as_ref().expect("consumer block");
    assert_eq!(c.records_consumed_total, p.records_acknowledged_total, "the run's consumers read exactly the acknowledged records; {out}");
}
