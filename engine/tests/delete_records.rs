//! DeleteRecords in the log: the log start offset moves, is checkpointed (durable before the
//! call returns), is recovered at open (never backwards), and nothing below it is served; the
//! checkpoint's crash safety on SimIo (every crash point: the old start or the new one, never
//! below an acknowledged one); a damaged checkpoint is a clear open error.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use engine::io::{CrashMode, Io, SimIo, UringIo};
use engine::log::partition::LOG_START_CHECKPOINT;
use engine::log::{DeleteRecordsError, Durability, FetchError, RecoveryError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str().and_then(|n| n.strip_suffix(".log")).and_then(|s| s.parse().ok()))
        .collect();
    v.sort();
    v
}

fn out_of_range(r: Result<Vec<u8>, FetchError>) -> bool {
    matches!(r, Err(FetchError::OffsetOutOfRange { .. }))
}

#[test]
fn delete_records_moves_the_start_deletes_whole_segments_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let io: Arc<dyn Io> = Arc::new(UringIo);
    // ~6 batches of 3 records per segment.
    let cfg = small_cfg(Durability::Group, 1024);
    let p = open(&io, &dir, &cfg).unwrap();
    for i in 0..40 {
        p.append_durable(&mut tagged_batch(i, 3, 40, 1)).unwrap();
    }
    let hw = p.high_watermark();
    assert_eq!(hw, 120);
    let before = segment_bases(&dir);
    assert!(before.len() >= 5, "{before:?}");
    // A start in the middle of a batch inside the third segment.
    let target = before[2] + 4;
    assert_eq!(p.delete_records(target).unwrap(), target);
    assert_eq!(p.log_start_offset(), target);
    // Durable before the return: the checkpoint file is in place.
    assert!(dir.join(LOG_START_CHECKPOINT).exists());
    // Segments wholly below are gone; the one holding the start stays.
    let after = segment_bases(&dir);
    assert_eq!(after[0], before[2], "{before:?} -> {after:?}");
    assert_eq!(after.len(), before.len() - 2);
    // Nothing below the start is served, even from the segment that still holds it.
    assert!(out_of_range(p.read_copy(target as i64 - 1, 1 << 20)));
    assert!(out_of_range(p.read_copy(before[2] as i64, 1 << 20)));
    assert!(out_of_range(p.read_copy(0, 1 << 20)));
    let from_start = split_batches(&p.read_copy(target as i64, 1 << 20).unwrap());
    assert!(from_start[0].0.base_offset as u64 <= target && from_start[0].0.last_offset() as u64 >= target);
    assert_eq!(p.read(target as i64, 1 << 20, true).unwrap().log_start_offset, target);
    // Appends report the new start.
    assert_eq!(p.append_durable(&mut tagged_batch(99, 1, 8, 1)).unwrap().log_start_offset, target);
    // Above the high watermark: out of range, nothing changes.
    let hw = p.high_watermark();
    assert!(matches!(p.delete_records(hw + 1), Err(DeleteRecordsError::OffsetOutOfRange { .. })));
    // Below the start: no change, the current start answered.
    assert_eq!(p.delete_records(target - 3).unwrap(), target);
    assert_eq!(p.log_start_offset(), target);
    drop(p);

    // A restart (without a clean close) keeps the start, inside its segment.
    let p = open(&io, &dir, &cfg).unwrap();
    assert_eq!(p.log_start_offset(), target);
    assert!(out_of_range(p.read_copy(target as i64 - 1, 1 << 20)));
    assert_eq!(read_all(&p).last().unwrap().0.base_offset as u64, hw - 1);
    // Up to the high watermark: every sealed segment goes, the log stays appendable.
    let hw = p.high_watermark();
    assert_eq!(p.delete_records(hw).unwrap(), hw);
    assert_eq!(p.segment_count(), 1);
    assert!(out_of_range(p.read_copy(hw as i64 - 1, 1 << 20)));
    assert!(p.read_copy(hw as i64, 1 << 20).unwrap().is_empty());
    assert_eq!(p.append_durable(&mut tagged_batch(100, 2, 8, 1)).unwrap().base_offset, hw);
    p.close().unwrap();
    drop(p);
    let p = open(&io, &dir, &cfg).unwrap();
    assert_eq!(p.log_start_offset(), hw);
    assert_eq!(read_all(&p).len(), 1);
}

#[test]
fn retention_never_moves_the_start_backwards() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let mut cfg = small_cfg(Durability::Group, 1024);
    let p = open(&io, &dir, &cfg).unwrap();
    for i in 0..40 {
        p.append_durable(&mut tagged_batch(i, 3, 40, 1)).unwrap();
    }
    let bases = segment_bases(&dir);
    let target = bases[3] + 1;
    p.delete_records(target).unwrap();
    drop(p);
    // Size retention that deletes one more segment: the start stays at the (higher) checkpoint.
    cfg.retention_bytes_max = Some(1);
    let p = open(&io, &dir, &cfg).unwrap();
    assert_eq!(p.log_start_offset(), target);
    let deleted = p.enforce_retention().unwrap();
    assert!(deleted >= 1);
    let first = segment_bases(&dir)[0];
    assert!(first > target);
    // Retention checkpoints the start it moves to before it unlinks.
    assert_eq!(p.log_start_offset(), first);
    drop(p);
    let p = open(&io, &dir, &cfg.clone()).unwrap();
    assert_eq!(p.log_start_offset(), first);
}

#[test]
fn a_damaged_checkpoint_refuses_to_open_and_a_leftover_temp_file_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let cfg = small_cfg(Durability::Group, 1024);
    for case in ["short", "crc", "magic", "temp-only"] {
        let dir = tmp.path().join(format!("{case}-0"));
        let p = open(&io, &dir, &cfg).unwrap();
        for i in 0..10 {
            p.append_durable(&mut tagged_batch(i, 3, 40, 1)).unwrap();
        }
        p.delete_records(7).unwrap();
        drop(p);
        let ck = dir.join(LOG_START_CHECKPOINT);
        let mut bytes = std::fs::read(&ck).unwrap();
        match case {
            "short" => bytes.truncate(9),
            "crc" => bytes[8] ^= 1,
            "magic" => bytes[0] ^= 0x80,
            _ => {
                // A replacement a crash interrupted (garbage, never renamed): the checkpoint holds.
                std::fs::write(dir.join("log-start-offset.tmp"), b"torn").unwrap();
                let p = open(&io, &dir, &cfg).unwrap();
                assert_eq!(p.log_start_offset(), 7);
                assert!(!dir.join("log-start-offset.tmp").exists());
                continue;
            }
        }
        std::fs::write(&ck, &bytes).unwrap();
        match open(&io, &dir, &cfg) {
            Err(e @ RecoveryError::BadCheckpoint { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(LOG_START_CHECKPOINT), "{case}: {msg}");
            }
            other => panic!("{case}: want BadCheckpoint, got {other:?}"),
        }
    }
}

#[test]
fn a_log_that_ends_below_its_checkpoint_starts_empty_at_the_checkpoint() {
    // `never` mode: DeleteRecords up to the written end, then a power cut takes the unsynced
    // records back; the start must not move backwards.
    let sim = SimIo::new();
    let dir = Path::new("/data/t-0");
    let cfg = small_cfg(Durability::Never, 1 << 20);
    let p = open(&sim_io(&sim), dir, &cfg).unwrap();
    for i in 0..5 {
        p.append(&mut tagged_batch(i, 2, 20, 1)).unwrap();
    }
    p.flush().unwrap();
    for i in 5..10 {
        p.append(&mut tagged_batch(i, 2, 20, 1)).unwrap();
    }
    assert_eq!(p.delete_records(16).unwrap(), 16);
    let image = sim.crash(CrashMode::DropUnsynced, 1);
    drop(p);
    let r = open(&sim_io(&image), dir, &cfg).unwrap();
    assert_eq!(r.log_start_offset(), 16);
    assert_eq!(r.log_end_offset(), 16);
    assert!(out_of_range(r.read_copy(10, 1 << 20)));
    assert_eq!(r.append_durable(&mut tagged_batch(50, 1, 8, 1)).unwrap().base_offset, 16);
}

#[test]
fn a_failed_checkpoint_sync_poisons_and_acknowledges_nothing() {
    // (SimIo cannot fail a directory fsync; a failed one poisons the same way.)
    for nth in 1..=1 {
        let sim = SimIo::new();
        let dir = Path::new("/data/t-0");
        let cfg = small_cfg(Durability::Group, 1024);
        let p = open(&sim_io(&sim), dir, &cfg).unwrap();
        for i in 0..20 {
            p.append_durable(&mut tagged_batch(i, 3, 40, 1)).unwrap();
        }
        // The checkpoint's file fsync fails.
        sim.fail_sync_in(nth);
        assert!(matches!(p.delete_records(30), Err(DeleteRecordsError::Storage(_))), "sync {nth}");
        assert_eq!(p.log_start_offset(), 0, "sync {nth}: the start moved without a durable checkpoint");
        assert!(p.is_poisoned());
        assert!(p.delete_records(30).is_err());
        drop(p);
        // Reopened: the old start or the new one (the rename may have reached the disk).
        let r = open(&sim_io(&sim.crash(CrashMode::DropUnsynced, nth)), dir, &cfg).unwrap();
        assert!([0, 30].contains(&r.log_start_offset()), "sync {nth}: {}", r.log_start_offset());
        assert_eq!(r.high_watermark(), 60);
    }
}

/// Crash images taken at random moments while DeleteRecords, appends and rolls run
/// concurrently: the recovered start is one a DeleteRecords asked for (or the initial one),
/// at least every start acknowledged before the image, and nothing below it is served.
#[test]
fn crash_sweep_the_log_start_is_old_or_new_and_never_below_an_acknowledged_one() {
    let points: u64 = std::env::var("CRASH_POINTS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let modes = [CrashMode::DropUnsynced, CrashMode::Tear, CrashMode::TearAndFlip];
    // Points where the image kept a start above the initial one, and where it kept one above
    // the acknowledged start (a DeleteRecords in flight at the crash).
    let (mut moved, mut in_flight) = (0, 0);
    for seed in 0..points {
        let mut rng = StdRng::seed_from_u64(seed);
        let mode = modes[(seed % 3) as usize];
        let sim = SimIo::new();
        let dir = Path::new("/data/t-0");
        let cfg = small_cfg(Durability::Group, rng.gen_range(600..3000));
        let p = open(&sim_io(&sim), dir, &cfg).unwrap();
        for i in 0..20 {
            p.append_durable(&mut tagged_batch(i, 2, 30, 1)).unwrap();
        }
        // Acknowledged starts are recorded under this lock; the image is taken under it too.
        let acked = Arc::new(Mutex::new(0u64));
        let asked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0]));
        let stop = Arc::new(AtomicBool::new(false));
        let appender = {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    p.append_durable(&mut tagged_batch(1000 + i, 2, 30, 1)).unwrap();
                }
            })
        };
        let deletes_done = Arc::new(AtomicU64::new(0));
        let deleter = {
            let (p, acked, asked, done) = (p.clone(), acked.clone(), asked.clone(), deletes_done.clone());
            let steps: Vec<u64> = (0..rng.gen_range(1..8)).map(|_| rng.gen_range(1..6)).collect();
            std::thread::spawn(move || {
                for step in steps {
                    let target = (p.log_start_offset() + step).min(p.high_watermark());
                    asked.lock().unwrap().push(target);
                    let got = p.delete_records(target).expect("delete_records in a healthy sim");
                    assert!(got >= target);
                    let mut a = acked.lock().unwrap();
                    *a = (*a).max(got);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let wait_for = rng.gen_range(0..4);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while deletes_done.load(Ordering::SeqCst) < wait_for && !deleter.is_finished() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let (image, acked_at_crash, asked_at_crash) = {
            let a = acked.lock().unwrap();
            let image = sim.crash(mode, seed);
            let asked = asked.lock().unwrap().clone();
            (image, *a, asked)
        };
        stop.store(true, Ordering::SeqCst);
        deleter.join().unwrap();
        appender.join().unwrap();
        drop(p);
        let r = open(&sim_io(&image), dir, &cfg).unwrap_or_else(|e| panic!("seed {seed} {mode:?}: recovery failed: {e}"));
        let start = r.log_start_offset();
        assert!(start >= acked_at_crash, "seed {seed} {mode:?}: start {start} below the acknowledged {acked_at_crash}");
        assert!(asked_at_crash.contains(&start), "seed {seed} {mode:?}: start {start} was never asked for ({asked_at_crash:?})");
        moved += (start > 0) as u32;
        in_flight += (start > acked_at_crash) as u32;
        if start > 0 {
            assert!(out_of_range(r.read_copy(start as i64 - 1, 1 << 20)), "seed {seed}: served below the start");
        }
        // Everything from the start to the high watermark reads, and the log goes on.
        read_all(&r);
        let next = r.log_end_offset();
        assert_eq!(r.append_durable(&mut tagged_batch(u64::MAX, 1, 8, 1)).unwrap().base_offset, next);
    }
    println!("log start crash sweep: {points} points, {moved} recovered a moved start, {in_flight} one above the acknowledged start");
    assert!(moved > 0, "no crash point saw a moved start: the sweep tests nothing");
}

#[test]
fn timestamp_lookups_never_answer_a_deleted_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let cfg = small_cfg(Durability::Group, 1024);
    let p = open(&io, &dir, &cfg).unwrap();
    // Batch i: 3 records at timestamp 1000 + i, except batch 13 (below the start, in the
    // segment that will hold it) at 5000, and a last batch at 4500.
    let mut base_of = Vec::new();
    for i in 0..30u64 {
        let ts = if i == 13 { 5000 } else { 1000 + i as i64 };
        base_of.push(p.append_durable(&mut tagged_batch(i, 3, 40, ts)).unwrap().base_offset);
    }
    let last = p.append_durable(&mut tagged_batch(99, 3, 40, 4500)).unwrap().base_offset;
    let bases = segment_bases(&dir);
    // The start: inside batch 14 (offsets 42..45), in the segment that also holds batch 13.
    let target = base_of[14] + 1;
    let holder = *bases.iter().rev().find(|&&b| b <= target).unwrap();
    assert!(holder <= base_of[13], "batch 13 must share the start's segment: {bases:?}");
    p.delete_records(target).unwrap();
    // Below every timestamp: the start itself (inside its batch), not a deleted record.
    assert_eq!(p.offset_for_timestamp(0).unwrap().map(|x| x.0), Some(target));
    assert_eq!(p.offset_for_timestamp(1014).unwrap().map(|x| x.0), Some(target));
    assert_eq!(p.offset_for_timestamp(1015).unwrap().map(|x| x.0), Some(base_of[15]));
    // Only the deleted batch 13 reaches 5000; 4000 is first reached after it at the end.
    assert_eq!(p.offset_for_timestamp(5000).unwrap(), None);
    assert_eq!(p.offset_for_timestamp(4000).unwrap().map(|x| x.0), Some(last));
}
