//! Crash simulation of transactions (issue 20) over `SimIo`: a transactional producer's
//! workload (AddPartitionsToTxn, transactional batches to 1–3 partitions, AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn; every third transaction aborted) through the real
//! `TxnCoordinator` and `LogManager`, cut at every fdatasync in turn: the n-th sync fails (the
//! partition it belongs to is poisoned, the workload stops at its first error) and the
//! machine crashes — dropping every unsynced byte, or keeping a random torn prefix of them.
//! The recovered broker (new `LogManager`, `GroupCoordinator`, `TxnCoordinator`, which
//! completes transactions found in PrepareCommit / PrepareAbort) is checked:
//!
//! * read_committed (the records below each partition's last stable offset, with the
//!   aborted-transactions list applied as a client does) never returns a record of a
//!   transaction the producer aborted, before or after the open transactions are resolved;
//! * once the producer re-initialises (InitProducerId aborts what it left open), every
//!   partition's last stable offset is its high watermark and every transaction is visible
//!   whole or not at all: all its records on all its partitions, or none;
//! * a transaction whose EndTxn(commit) was answered with success is visible whole;
//! * the group's committed offset (from TxnOffsetCommit) is that of the last visible
//!   transaction: offsets and outputs commit atomically (exactly-once).
//!
//! `TXN_CRASH_STRIDE=1` cuts at every sync (the default takes every 3rd, about 100 cuts).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use engine::groups::store::batch_records;
use engine::groups::GroupCoordinator;
use engine::io::{CrashMode, SimIo};
use engine::log::txn_index::{control_marker, Marker};
use engine::log::{Durability, LogConfig, LogManager, Partition};
use engine::record::{self, build};
use engine::txn::{code, PendingOffset, TxnConfig, TxnCoordinator};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DATA: &str = "/data";
const TXNS: usize = 24;
const OUT_PARTITIONS: i32 = 3;

fn cfg() -> LogConfig {
    LogConfig {
        durability: Durability::Group,
        segment_bytes_max: 2_000,
        index_interval_bytes: 128,
        batch_bytes_max: 1 << 20,
        preallocate_bytes: 0,
        scrub_rate_mib: 0,
        ..LogConfig::default()
    }
}

fn txn_cfg() -> TxnConfig {
    // The reaper must not abort anything during the run (timeouts are tested elsewhere).
    TxnConfig { tick_ms: 3_600_000, ..TxnConfig::default() }
}

/// What the workload did and was told.
#[derive(Default, Debug)]
struct Outcome {
    /// Transaction → the values it wrote, per partition.
    written: BTreeMap<usize, BTreeMap<i32, Vec<String>>>,
    aborted: BTreeSet<usize>,
    /// EndTxn(commit) answered NONE.
    acked_commits: BTreeSet<usize>,
    /// The workload stopped at an error (the injected sync failure).
    stopped: bool,
}

fn transactional_batch(values: &[String], pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let recs: Vec<build::Rec<'_>> = values.iter().map(|v| build::Rec { key: None, value: Some(v.as_bytes()), timestamp_delta: 0 }).collect();
    let mut b = build::batch_with(&recs, 1_000, pid, epoch, seq);
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    let crc = record::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn open(io: &SimIo) -> (Arc<LogManager>, Arc<GroupCoordinator>, Arc<TxnCoordinator>) {
    let mgr = LogManager::open(Path::new(DATA), Arc::new(io.clone()), cfg()).expect("open the log");
    let groups = GroupCoordinator::new(mgr.clone()).expect("group coordinator");
    let txn = TxnCoordinator::with_config(mgr.clone(), groups.clone(), txn_cfg()).expect("transaction coordinator");
    (mgr, groups, txn)
}

/// Run the workload until its end or its first error.
fn workload(io: &SimIo, seed: u64, fail_sync: Option<u64>) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let mgr = LogManager::open(Path::new(DATA), Arc::new(io.clone()), cfg()).expect("open the log");
    mgr.create_topic("in", 1, None).expect("in");
    mgr.create_topic("out", OUT_PARTITIONS, None).expect("out");
    let groups = GroupCoordinator::new(mgr.clone()).expect("group coordinator");
    let txn = TxnCoordinator::with_config(mgr.clone(), groups.clone(), txn_cfg()).expect("transaction coordinator");
    let mut out = Outcome::default();
    let (pid, epoch) = txn.init_producer_id("tx", 60_000, -1, -1).expect("init");
    if let Some(n) = fail_sync {
        io.fail_sync_in(n);
    }
    let mut seq: HashMap<i32, i32> = HashMap::new();
    'txns: for i in 0..TXNS {
        let mut parts: Vec<i32> = (0..OUT_PARTITIONS).filter(|_| rng.gen_bool(0.6)).collect();
        if parts.is_empty() {
            parts.push(rng.gen_range(0..OUT_PARTITIONS));
        }
        let req: Vec<(String, i32)> = parts.iter().map(|p| ("out".to_string(), *p)).collect();
        match txn.add_partitions("tx", pid, epoch, &req) {
            Ok(codes) if codes.iter().all(|&c| c == code::NONE) => {}
            _ => {
                out.stopped = true;
                break;
            }
        }
        for &p in &parts {
            for b in 0..rng.gen_range(1..=2) {
                let n = rng.gen_range(1..=4);
                let values: Vec<String> = (0..n).map(|j| format!("t{i}-p{p}-b{b}-r{j}")).collect();
                let s = seq.entry(p).or_insert(0);
                let mut batch = transactional_batch(&values, pid, epoch, *s);
                let part = mgr.partition("out", p).expect("out partition");
                // Recorded before the append: a batch whose answer is lost may still be stored.
                out.written.entry(i).or_default().entry(p).or_default().extend(values.iter().cloned());
                let appended = txn.with_produce("tx", pid, epoch, "out", p, || part.append(&mut batch));
                match appended {
                    Ok(Ok(info)) => {
                        *s += n;
                        if part.wait_durable(info.next_offset).is_err() {
                            out.stopped = true;
                            break 'txns;
                        }
                    }
                    _ => {
                        out.stopped = true;
                        break 'txns;
                    }
                }
            }
        }
        if txn.add_offsets("tx", pid, epoch, "g") != code::NONE {
            out.stopped = true;
            break;
        }
        let offs = vec![("in".to_string(), 0, PendingOffset { offset: i as i64 + 1, leader_epoch: -1, metadata: None })];
        match txn.txn_offset_commit("tx", "g", pid, epoch, ("", None, -1), offs) {
            Ok(codes) if codes.iter().all(|&c| c == code::NONE) => {}
            _ => {
                out.stopped = true;
                break;
            }
        }
        let commit = i % 3 != 0;
        if !commit {
            out.aborted.insert(i);
        }
        let c = txn.end_txn("tx", pid, epoch, commit);
        if c != code::NONE {
            out.stopped = true;
            break;
        }
        if commit {
            out.acked_commits.insert(i);
        }
    }
    txn.shutdown();
    groups.shutdown();
    out
}

/// The values a read_committed client gets from `part`: batches below the last stable offset,
/// skipping those of aborted transactions (the aborted list, as Kafka's consumers apply it).
fn read_committed(part: &Partition) -> Vec<String> {
    let mut values = Vec::new();
    let mut next = part.log_start_offset() as i64;
    let mut aborted_pids: HashSet<i64> = HashSet::new();
    loop {
        let slice = part.read_isolated(next, 1 << 20, true, true).expect("read_committed");
        let mut pending: Vec<(i64, u64)> =
            slice.aborted.as_ref().expect("read_committed answers the aborted list").iter().map(|a| (a.producer_id, a.first_offset)).collect();
        pending.sort_by_key(|a| a.1);
        let bytes = slice.copy_out().expect("copy");
        if bytes.is_empty() {
            return values;
        }
        let mut at = 0usize;
        while at < bytes.len() {
            let info = record::validate(&bytes[at..], 1 << 20).expect("served batch validates");
            let batch = &bytes[at..at + info.size_bytes];
            at += info.size_bytes;
            assert!(info.last_offset() < slice.last_stable_offset as i64, "a batch at or past the LSO was served to read_committed");
            while pending.first().is_some_and(|a| a.1 as i64 <= info.last_offset()) {
                aborted_pids.insert(pending.remove(0).0);
            }
            next = info.last_offset() + 1;
            if info.is_control() {
                if control_marker(batch, &info) == Some(Marker::Abort) {
                    aborted_pids.remove(&info.producer_id);
                }
                continue;
            }
            if info.is_transactional() && aborted_pids.contains(&info.producer_id) {
                continue;
            }
            for (_, v) in batch_records(batch).expect("uncompressed records") {
                values.push(String::from_utf8(v.expect("value")).unwrap());
            }
        }
    }
}

/// (transaction → visible values per partition) of the out topic, read_committed.
fn visible(mgr: &LogManager) -> BTreeMap<usize, BTreeMap<i32, Vec<String>>> {
    let mut m: BTreeMap<usize, BTreeMap<i32, Vec<String>>> = BTreeMap::new();
    for p in 0..OUT_PARTITIONS {
        let part = mgr.partition("out", p).expect("out partition after recovery");
        for v in read_committed(&part) {
            let i: usize = v[1..v.find('-').unwrap()].parse().unwrap();
            m.entry(i).or_default().entry(p).or_default().push(v);
        }
    }
    m
}

fn check(image: &SimIo, out: &Outcome, what: &str) {
    let (mgr, groups, txn) = open(image);
    // Before the producer comes back: nothing aborted is served.
    let before = visible(&mgr);
    for i in before.keys() {
        assert!(!out.aborted.contains(i), "{what}: aborted transaction {i} visible to read_committed after recovery");
        assert!(out.written.contains_key(i), "{what}: values of an unknown transaction {i}");
    }
    // The producer re-initialises: what it left open is aborted.
    txn.init_producer_id("tx", 60_000, -1, -1).expect("re-init after recovery");
    for p in 0..OUT_PARTITIONS {
        let part = mgr.partition("out", p).unwrap();
        assert_eq!(part.last_stable_offset(), part.high_watermark(), "{what}: out-{p} still has an open transaction");
    }
    let after = visible(&mgr);
    let mut last_visible = None;
    for (i, parts) in &out.written {
        match after.get(i) {
            None => assert!(!out.acked_commits.contains(i), "{what}: acknowledged commit of transaction {i} lost"),
            Some(seen) => {
                assert!(!out.aborted.contains(i), "{what}: aborted transaction {i} visible");
                assert_eq!(seen, parts, "{what}: transaction {i} only partly visible");
                last_visible = Some(*i);
            }
        }
    }
    for (i, parts) in &before {
        assert_eq!(after.get(i), Some(parts), "{what}: transaction {i} was visible, then changed");
    }
    let committed = groups.committed("g", "in", 0).map(|c| c.offset);
    assert_eq!(
        committed,
        last_visible.map(|i| i as i64 + 1),
        "{what}: committed offset does not match the last visible transaction (outputs and offsets not atomic)"
    );
    txn.shutdown();
    groups.shutdown();
}

#[test]
fn transactions_survive_a_crash_at_every_sync() {
    let seed = 20;
    let dry = SimIo::new();
    let full = workload(&dry, seed, None);
    assert!(!full.stopped && full.acked_commits.len() == TXNS - TXNS / 3, "the workload runs through without faults: {full:?}");
    check(&dry.crash(CrashMode::DropUnsynced, 1), &full, "after the full run");
    // Syncs the workload makes after its InitProducerId (the first cut point).
    let base = {
        let io = SimIo::new();
        let _ = workload(&io, seed, Some(u64::MAX / 2));
        io.sync_count()
    };
    let stride: u64 = std::env::var("TXN_CRASH_STRIDE").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut cuts = 0;
    let mut n = 1;
    while n < base {
        for (k, mode) in [CrashMode::DropUnsynced, CrashMode::Tear].into_iter().enumerate() {
            let io = SimIo::new();
            let out = workload(&io, seed, Some(n));
            let image = io.crash(mode, n * 2 + k as u64);
            check(&image, &out, &format!("sync {n} failed, crash {mode:?} (stopped: {})", out.stopped));
            cuts += 1;
        }
        n += stride;
    }
    println!("txn_crash: {cuts} crash images checked over {base} syncs (stride {stride})");
    assert!(cuts >= 20, "too few cut points: {cuts}");
}
