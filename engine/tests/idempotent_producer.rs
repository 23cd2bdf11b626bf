//! Idempotent producer sequence handling: duplicates, gaps, fencing — and all of it after reopen,
//! including state that lives only in sealed segments with trusted indexes.

mod common;

use std::path::Path;

use common::*;
use engine::io::{CrashMode, SimIo};
use engine::log::segment::Segment;
use engine::log::{AppendError, Durability};

const PID: i64 = 4242;

#[test]
fn duplicates_are_detected_and_gaps_refused() {
    let sim = SimIo::new();
    let p = open(&sim_io(&sim), Path::new("/d/t-0"), &small_cfg(Durability::Group, 1 << 20)).unwrap();
    // A producer without state is accepted at any sequence, as Kafka does (see
    // idempotent_sequences.rs); another id here so PID below starts fresh.
    assert!(!p.append_durable(&mut idempotent_batch(1, 2, 10, 1, PID + 1, 0, 5)).unwrap().duplicate);
    let first = p.append_durable(&mut idempotent_batch(1, 3, 10, 1, PID, 0, 0)).unwrap();
    let second = p.append_durable(&mut idempotent_batch(2, 2, 10, 1, PID, 0, 3)).unwrap();
    let end = p.log_end_offset();
    // A retry of the stored batch: acknowledged with the original offsets, nothing written.
    let dup = p.append_durable(&mut idempotent_batch(1, 3, 10, 1, PID, 0, 0)).unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.base_offset, dup.last_offset), (first.base_offset, first.last_offset));
    let dup = p.append_durable(&mut idempotent_batch(2, 2, 10, 1, PID, 0, 3)).unwrap();
    assert_eq!(dup.base_offset, second.base_offset);
    assert_eq!(p.log_end_offset(), end);
    // A gap in sequence numbers.
    assert!(matches!(
        p.append(&mut idempotent_batch(3, 1, 10, 1, PID, 0, 9)),
        Err(AppendError::OutOfOrderSequence { expected: 5, got: 9 })
    ));
    // Two batches of one producer in one append: the second follows the first.
    let mut two = idempotent_batch(4, 2, 10, 1, PID, 0, 5);
    two.extend(idempotent_batch(5, 1, 10, 1, PID, 0, 7));
    p.append_durable(&mut two).unwrap();
    assert_eq!(p.producer_state(PID), Some((0, 7)));
    // A new epoch starts at 0; the old epoch is fenced.
    assert!(matches!(
        p.append(&mut idempotent_batch(6, 1, 10, 1, PID, 1, 3)),
        Err(AppendError::OutOfOrderSequence { expected: 0, got: 3 })
    ));
    p.append_durable(&mut idempotent_batch(6, 1, 10, 1, PID, 1, 0)).unwrap();
    assert!(matches!(
        p.append(&mut idempotent_batch(7, 1, 10, 1, PID, 0, 8)),
        Err(AppendError::ProducerFenced { current: 1, got: 0 })
    ));
}

#[test]
fn producer_state_survives_reopen_and_crash_across_sealed_segments() {
    let sim = SimIo::new();
    let dir = Path::new("/d/t-0");
    let cfg = small_cfg(Durability::Group, 2048);
    let p = open(&sim_io(&sim), dir, &cfg).unwrap();
    let mut seq = 0;
    for i in 0..4 {
        p.append_durable(&mut idempotent_batch(i, 2, 20, 1, PID, 3, seq)).unwrap();
        seq += 2;
    }
    let last = idempotent_batch(9, 2, 20, 1, PID, 3, seq);
    let last_info = p.append_durable(&mut last.clone()).unwrap();
    seq += 2;
    // Plenty of other traffic so the producer's batches end up in old, sealed segments.
    for i in 0..100 {
        p.append_durable(&mut tagged_batch(100 + i, 3, 40, 1)).unwrap();
    }
    assert!(p.segment_count() > 5);
    p.close().unwrap();
    drop(p);

    for (how, io) in [("clean reopen", sim_io(&sim)), ("crash", sim_io(&sim.crash(CrashMode::Tear, 3)))] {
        let r = open(&io, dir, &cfg).unwrap();
        assert_eq!(r.producer_state(PID), Some((3, seq - 1)), "{how}");
        let dup = r.append_durable(&mut last.clone()).unwrap();
        assert!(dup.duplicate, "{how}: retry after reopen is a duplicate");
        assert_eq!(dup.base_offset, last_info.base_offset);
        assert!(matches!(
            r.append(&mut idempotent_batch(10, 1, 20, 1, PID, 3, seq + 1)),
            Err(AppendError::OutOfOrderSequence { .. })
        ));
        r.append_durable(&mut idempotent_batch(10, 1, 20, 1, PID, 3, seq)).unwrap();
        assert!(matches!(
            r.append(&mut idempotent_batch(11, 1, 20, 1, PID, 2, 0)),
            Err(AppendError::ProducerFenced { .. })
        ));
    }
}

/// Producer state is rebuilt from the headers of sealed segments; with a cold page cache those
/// are read in windows instead of one header at a time. Both ways, with small batches and
/// batches larger than a quarter window mixed, rebuild the same state: every producer's
/// sequence, duplicates of its last batch recognised, the log unchanged.
#[test]
fn producer_state_rebuilt_alike_from_a_cold_or_warm_page_cache() {
    let sim = SimIo::new();
    let dir = Path::new("/d/t-0");
    let cfg = small_cfg(Durability::Group, 1 << 20);
    let p = open(&sim_io(&sim), dir, &cfg).unwrap();
    let mut seqs = [0i32; 3];
    let mut last = Vec::new();
    for i in 0..400u64 {
        let k = (i % 3) as usize;
        // Mostly small; every 7th batch ~100 KB (past a quarter of the 256 KiB window).
        let (records, len) = if i % 7 == 0 { (2, 50_000) } else { (1 + (i % 4) as usize, 30 + (i % 90) as usize) };
        let b = idempotent_batch(i, records, len, 1, 7000 + k as i64, 1, seqs[k]);
        let info = p.append_durable(&mut b.clone()).unwrap();
        seqs[k] += records as i32;
        if i >= 397 {
            last.push((k, b, info.base_offset));
        }
    }
    assert!(p.segment_count() >= 4, "several sealed segments");
    let before = read_all(&p);
    p.close().unwrap();
    drop(p);
    // Each segment's header walk, cold (windows) and warm (header by header): the same batches.
    let io = sim_io(&sim);
    let mut walked = 0;
    for name in io.list_dir(dir).unwrap().iter().filter(|n| n.ends_with(".log")) {
        let base: u64 = name.trim_end_matches(".log").parse().unwrap();
        let seg = Segment::open_existing(&*io, dir, base).unwrap();
        let len = seg.file.len().unwrap();
        let mut walks = Vec::new();
        for cold in [false, true] {
            sim.set_cold_cache(cold);
            let mut seen = Vec::new();
            seg.walk_headers(len, 1 << 20, |i| seen.push((i.base_offset, i.size_bytes)))
                .unwrap_or_else(|e| panic!("cold {cold}: walk of {name} failed: {e}"));
            walks.push(seen);
        }
        sim.set_cold_cache(false);
        assert_eq!(walks[0], walks[1], "{name}");
        walked += walks[0].len();
    }
    assert_eq!(walked, before.len(), "the walks cover every batch");
    for cold in [false, true] {
        sim.set_cold_cache(cold);
        let r = open(&sim_io(&sim), dir, &cfg).unwrap();
        sim.set_cold_cache(false);
        for (k, seq) in seqs.iter().enumerate() {
            assert_eq!(r.producer_state(7000 + k as i64), Some((1, seq - 1)), "cold {cold}: producer {k}");
        }
        for (_, b, base) in &last {
            let dup = r.append(&mut b.clone()).unwrap();
            assert!(dup.duplicate && dup.base_offset == *base, "cold {cold}: retry recognised");
        }
        assert_eq!(read_all(&r).len(), before.len());
    }
}
