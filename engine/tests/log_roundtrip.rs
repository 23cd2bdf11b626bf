//! Append/read round trips across segment rolls, index lookups at every offset, read budgets,
//! retention by size and time, and reopen after a clean close (on SimIo and on a real disk).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use engine::io::{Io, SimIo, UringIo};
use engine::log::{now_ms, Durability, FetchError, Partition};

/// Appends `n` batches of 1..=12 records and returns (base offset, sent bytes) per batch.
fn fill(p: &Partition, n: u64, ts: impl Fn(u64) -> i64) -> Vec<(u64, Vec<u8>)> {
    let mut sent = Vec::new();
    for i in 0..n {
        let records = 1 + (i * 7 % 12) as usize;
        let b = tagged_batch(i, records, 10 + (i % 50) as usize, ts(i));
        let mut buf = b.clone();
        let info = p.append_durable(&mut buf).expect("append");
        assert_eq!(info.last_offset - info.base_offset + 1, records as u64);
        sent.push((info.base_offset, b));
    }
    sent
}

/// read(offset) must return, first, the batch that contains `offset`, for every offset.
fn check_every_offset(p: &Partition, sent: &[(u64, Vec<u8>)]) {
    let end = p.log_end_offset();
    assert_eq!(p.high_watermark(), end);
    let mut k = sent.partition_point(|(b, _)| *b < p.log_start_offset());
    for off in p.log_start_offset()..end {
        while k + 1 < sent.len() && sent[k + 1].0 <= off {
            k += 1;
        }
        let bytes = p.read_copy(off as i64, 1).unwrap_or_else(|e| panic!("read at {off}: {e}"));
        let batches = split_batches(&bytes);
        assert_eq!(batches.len(), 1, "min-one-batch read at {off} with 1 byte budget returns one batch");
        let (info, stored) = &batches[0];
        assert_eq!(info.base_offset as u64, sent[k].0, "read at {off} starts at the batch holding it");
        assert!(info.last_offset() as u64 >= off);
        assert!(same_except_patched(stored, &sent[k].1), "batch at {off} differs from what was sent");
    }
}

#[test]
fn round_trip_across_segment_rolls_with_index_lookup_at_every_offset() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let cfg = small_cfg(Durability::Group, 4096);
    let p = open(&io, Path::new("/data/t-0"), &cfg).unwrap();
    let sent = fill(&p, 300, |_| 1_000);
    assert!(p.segment_count() > 10, "small segments must roll: {} segments", p.segment_count());
    check_every_offset(&p, &sent);
    let all = read_all(&p);
    assert_eq!(all.len(), sent.len());
    for ((info, stored), (base, b)) in all.iter().zip(&sent) {
        assert_eq!(info.base_offset as u64, *base);
        assert!(same_except_patched(stored, b));
    }
    // Reading at the high watermark is empty; past it, out of range.
    let hw = p.high_watermark() as i64;
    assert_eq!(p.read(hw, 1 << 20, true).unwrap().bytes(), 0);
    assert!(matches!(p.read(hw + 1, 1 << 20, true), Err(FetchError::OffsetOutOfRange { .. })));
    assert!(matches!(p.read(-1, 1 << 20, true), Err(FetchError::OffsetOutOfRange { .. })));
}

#[test]
fn read_budget_returns_whole_batches_within_max_bytes() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let p = open(&io, Path::new("/d/t-0"), &small_cfg(Durability::Never, 8192)).unwrap();
    let sent = fill(&p, 120, |_| 5);
    for (start, _) in sent.iter().step_by(7) {
        for budget in [1u64, 100, 700, 3000, 20_000] {
            let slice = p.read(*start as i64, budget, false).unwrap();
            let bytes = slice.copy_out().unwrap();
            assert!(bytes.len() as u64 <= budget, "read of {budget} bytes returned {}", bytes.len());
            let batches = split_batches(&bytes); // whole batches only
            if let Some((first, _)) = batches.first() {
                assert_eq!(first.base_offset as u64, *start);
            }
            for w in batches.windows(2) {
                assert_eq!(w[0].0.last_offset() + 1, w[1].0.base_offset, "contiguous batches");
            }
            // With min_one_batch, a tiny budget still makes progress.
            let one = p.read(*start as i64, budget, true).unwrap();
            assert!(one.bytes() > 0);
        }
    }
}

#[test]
fn reopen_after_clean_close_restores_everything_on_real_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let cfg = small_cfg(Durability::Group, 16 << 10);
    let (sent, end, segs) = {
        let p = open(&io, &dir, &cfg).unwrap();
        let sent = fill(&p, 400, |i| 1_000 + i as i64);
        p.close().unwrap();
        (sent, p.log_end_offset(), p.segment_count())
    };
    assert!(segs > 3);
    for name in std::fs::read_dir(&dir).unwrap() {
        let name = name.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with(".log") || name.ends_with("index") || name == "recovery-point", "{name}");
    }
    let p = open(&io, &dir, &cfg).unwrap();
    assert_eq!(p.log_end_offset(), end);
    assert_eq!(p.high_watermark(), end);
    assert_eq!(p.segment_count(), segs);
    check_every_offset(&p, &sent);
    assert_eq!(p.offset_for_timestamp(1_000 + 200).unwrap().map(|(o, _)| o), Some(sent[200].0));
    // The reopened log keeps appending where it stopped.
    let mut b = tagged_batch(9_999, 3, 20, 5);
    let info = p.append_durable(&mut b).unwrap();
    assert_eq!(info.base_offset, end);
    assert_eq!(read_all(&p).len(), sent.len() + 1);
    // sendfile-ready ranges carry a real descriptor.
    let slice = p.read(0, 1 << 20, true).unwrap();
    assert!(slice.ranges.iter().all(|r| r.file.raw_fd().is_some()));
}

#[test]
fn retention_by_size_deletes_whole_old_segments_and_moves_log_start() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let mut cfg = small_cfg(Durability::Group, 4096);
    cfg.retention_bytes_max = Some(20_000);
    let dir = Path::new("/d/t-0");
    let p = open(&io, dir, &cfg).unwrap();
    let sent = fill(&p, 300, |_| now_ms());
    let before = p.segment_count();
    let deleted = p.enforce_retention().unwrap();
    assert!(deleted > 0);
    assert_eq!(p.segment_count(), before - deleted);
    assert!(p.size_bytes() <= 20_000, "log is {} bytes after retention", p.size_bytes());
    let start = p.log_start_offset();
    assert!(start > 0);
    // The new log start is a batch (segment) boundary and nothing below it is served.
    assert!(sent.iter().any(|(b, _)| *b == start));
    assert!(matches!(p.read(start as i64 - 1, 100, true), Err(FetchError::OffsetOutOfRange { .. })));
    check_every_offset(&p, &sent);
    let names = sim.clone();
    let logs = engine::io::Io::list_dir(&names, dir).unwrap().into_iter().filter(|n| n.ends_with(".log")).count();
    assert_eq!(logs, p.segment_count(), "deleted segments' files are gone");
    drop(p);
    // Survives a crash: the deletions were made durable.
    let image = sim.crash(engine::io::CrashMode::DropUnsynced, 1);
    let p = open(&sim_io(&image), dir, &cfg).unwrap();
    assert_eq!(p.log_start_offset(), start);
    check_every_offset(&p, &sent);
}

#[test]
fn retention_by_time_deletes_only_segments_older_than_the_limit() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let mut cfg = small_cfg(Durability::Never, 4096);
    cfg.retention_ms = Some(24 * 3600 * 1000);
    let p = open(&io, Path::new("/d/t-0"), &cfg).unwrap();
    let old = now_ms() - 10 * 24 * 3600 * 1000;
    let sent = fill(&p, 200, |i| if i < 100 { old } else { now_ms() });
    let first_new = sent[100].0;
    p.enforce_retention().unwrap();
    let start = p.log_start_offset();
    assert!(start > 0 && start <= first_new, "old segments go, new ones stay (start {start})");
    // Every remaining segment but possibly the one straddling the boundary holds new data only.
    check_every_offset(&p, &sent);
    assert_eq!(p.enforce_retention().unwrap(), 0, "nothing more to delete");
    // All old: everything but the active segment goes.
    let q = open(&io, Path::new("/d/t-1"), &cfg).unwrap();
    fill(&q, 100, |_| old);
    q.enforce_retention().unwrap();
    assert_eq!(q.segment_count(), 1);
}

#[test]
fn group_mode_serves_only_synced_batches() {
    let sim = SimIo::new();
    let p = open(&sim_io(&sim), Path::new("/d/t-0"), &small_cfg(Durability::Group, 1 << 20)).unwrap();
    let first = p.append_durable(&mut tagged_batch(1, 2, 20, 1)).unwrap();
    // Written to the page cache but not yet covered by a sync: not visible to readers.
    let pending = p.append(&mut tagged_batch(2, 3, 20, 1)).unwrap();
    assert_eq!(p.high_watermark(), first.next_offset);
    let visible = split_batches(&p.read_copy(0, 1 << 20).unwrap());
    assert_eq!(visible.len(), 1, "the unsynced batch is not served");
    assert!(matches!(p.read(pending.base_offset as i64 + 1, 100, true), Err(FetchError::OffsetOutOfRange { .. })));
    p.wait_durable(pending.next_offset).unwrap();
    assert_eq!(p.high_watermark(), pending.next_offset);
    assert_eq!(split_batches(&p.read_copy(0, 1 << 20).unwrap()).len(), 2);
}

/// `IoFile::write_direct` on a real disk: O_DIRECT for the aligned middle, the page cache for
/// the ends, at every kind of position and length, beside buffered writes of the neighbouring
/// bytes; the file must read back exactly as a byte model of the writes.
#[test]
fn direct_writes_at_unaligned_positions_read_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let f = UringIo.open(&tmp.path().join("f"), true).unwrap();
    let mut model = vec![0u8; 0];
    let mut pos = 0u64;
    // (length, direct?): small writes go buffered between the large ones, so the pages at each
    // boundary are shared by a buffered write and the end of a direct one.
    let plan = [
        (300_000usize, true),
        (77, false),
        (4096 * 20, true),
        (1, false),
        (65_535 + 4096, true),
        (5_000, true), // middle too small for O_DIRECT: all buffered
        (1 << 20, true),
        (4095, false),
        (200_001, true),
    ];
    for (k, &(len, direct)) in plan.iter().enumerate() {
        let buf: Vec<u8> = (0..len).map(|i| (i as u64 * 31 + k as u64 * 7 + (i as u64 >> 12)) as u8).collect();
        if direct {
            f.write_direct(&buf, pos).unwrap();
        } else {
            f.write_at(&buf, pos).unwrap();
        }
        model.extend_from_slice(&buf);
        pos += len as u64;
    }
    f.sync_data().unwrap();
    assert_eq!(f.len().unwrap(), pos);
    let mut got = vec![0u8; model.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got == model, "file differs from the writes");
    // And through a fresh descriptor (page cache or disk, whichever holds it now).
    let again = std::fs::read(tmp.path().join("f")).unwrap();
    assert!(again == model);
}

/// Large appends written by their appenders outside the partition lock, concurrently (with
/// O_DIRECT and without), interleaved with small staged appends from other threads: every
/// acknowledged batch is stored in offset order, byte-identical, and survives a reopen.
#[test]
fn concurrent_unlocked_large_appends_round_trip_on_disk() {
    // A lost wakeup would hang the appenders: fail after a generous bound instead.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let body = std::thread::spawn(move || {
        concurrent_unlocked_large_appends();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(()) => body.join().unwrap(),
        // The body panicked (its sender dropped): report its panic.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => body.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("concurrent appends still waiting after 120 s"),
    }
}

fn concurrent_unlocked_large_appends() {
    for direct_io in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t-0");
        let io: Arc<dyn Io> = Arc::new(UringIo);
        let mut cfg = small_cfg(Durability::Group, 4 << 20);
        cfg.preallocate_bytes = 64 << 10;
        cfg.appender_write_bytes = 100_000;
        cfg.direct_io = direct_io;
        let p = open(&io, &dir, &cfg).unwrap();
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut sent = Vec::new();
                    for i in 0..24u64 {
                        let tag = t << 32 | i;
                        // Threads 0-2 append large batches of odd sizes, thread 3 small ones.
                        let b = if t < 3 {
                            tagged_batch(tag, 1 + (i % 3) as usize, 100_000 + (i * 7_919 + t * 4_099) as usize % 200_000, 1)
                        } else {
                            tagged_batch(tag, 3, 40 + i as usize, 1)
                        };
                        let info = p.append_durable(&mut b.clone()).unwrap();
                        sent.push((info.base_offset, b));
                    }
                    sent
                })
            })
            .collect();
        let mut sent: Vec<(u64, Vec<u8>)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        sent.sort_by_key(|s| s.0);
        assert!(p.segment_count() > 2, "the appends roll segments while writes are in flight");
        let check = |p: &Partition| {
            let got = read_all(p);
            assert_eq!(got.len(), sent.len(), "direct_io {direct_io}");
            for (g, s) in got.iter().zip(&sent) {
                assert_eq!(g.0.base_offset as u64, s.0);
                assert!(same_except_patched(&g.1, &s.1), "direct_io {direct_io}: batch at {} differs", s.0);
            }
        };
        check(&p);
        p.close().unwrap();
        drop(p);
        let p = open(&io, &dir, &cfg).unwrap();
        check(&p);
    }
}

/// A data directory is locked by its LogManager (`<dir>/.lock`, flock): a second open is
/// refused with `TopicError::Locked` and opens nothing; once the first is closed, it opens.
#[test]
fn a_data_directory_is_locked_while_a_log_manager_has_it_open() {
    use engine::log::{LogConfig, LogManager, TopicError};
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { durability: Durability::Group, ..LogConfig::default() };
    let first = LogManager::open(dir.path(), Arc::new(UringIo), cfg.clone()).expect("first open");
    first.create_topic("t", 1, None).unwrap();
    match LogManager::open(dir.path(), Arc::new(UringIo), cfg.clone()) {
        Err(TopicError::Locked(e)) => {
            assert!(e.to_string().contains(&format!("held by pid {}", std::process::id())), "{e}");
        }
        other => panic!("second open of a locked directory: {:?}", other.map(|_| ())),
    }
    first.close().unwrap();
    let second = LogManager::open(dir.path(), Arc::new(UringIo), cfg).expect("open after close");
    assert!(second.topic("t").is_some());
    second.close().unwrap();
}

/// A high-watermark waiter woken inside an `HwWakeBatch` is woken when the batch closes, once,
/// and not before; outside one it is woken at the advance (the Produce handler opens one around
/// a request's appends).
#[test]
fn hw_wake_batch_holds_wakeups_until_it_closes() {
    use engine::log::{HwWaiter, HwWakeBatch};
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Count(AtomicUsize);
    impl HwWaiter for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let cfg = small_cfg(Durability::Never, 1 << 20);
    let parts: Vec<Arc<Partition>> = (0..3).map(|i| open(&io, Path::new(&format!("/data/t-{i}")), &cfg).unwrap()).collect();
    let w = Arc::new(Count(AtomicUsize::new(0)));
    let weak: std::sync::Weak<dyn HwWaiter> = Arc::downgrade(&(w.clone() as Arc<dyn HwWaiter>));
    let append = |p: &Partition| p.append_durable(&mut tagged_batch(1, 1, 10, 1_000)).expect("append");
    for p in &parts {
        p.watch_hw(7, weak.clone());
    }
    {
        let _outer = HwWakeBatch::open();
        {
            let _nested = HwWakeBatch::open();
            append(&parts[0]);
        }
        append(&parts[1]);
        assert_eq!(w.0.load(Ordering::SeqCst), 0, "held until the outermost batch closes");
        assert_eq!(parts[0].hw_waiters() + parts[1].hw_waiters(), 0, "taken from the partitions at the advance");
        assert_eq!(parts[2].hw_waiters(), 1);
    }
    assert_eq!(w.0.load(Ordering::SeqCst), 2, "each advance's wake-up delivered at the close");
    // Without a batch: at the advance.
    append(&parts[2]);
    assert_eq!(w.0.load(Ordering::SeqCst), 3);
}
