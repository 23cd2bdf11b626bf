//! Recovery: torn tails, mid-log corruption, lost or damaged indexes, and the seeded crash sweep
//! under concurrent group-commit appends on SimIo.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use engine::io::{CrashMode, Io, SimIo, UringIo};
use engine::log::{Durability, LogConfig, LogManager, RecoveryError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn log_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// `batches` durable appends (tags 0..) of `records` records of `value_len` bytes, then a
/// clean close.
fn write_closed_log(io: &Arc<dyn Io>, dir: &Path, cfg: &LogConfig, batches: u64, records: usize, value_len: usize) {
    let p = open(io, dir, cfg).unwrap();
    for i in 0..batches {
        p.append_durable(&mut tagged_batch(i, records, value_len, 1)).unwrap();
    }
    p.close().unwrap();
}

#[test]
fn torn_tail_is_truncated_and_appends_continue_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let cfg = small_cfg(Durability::Group, 1 << 20);
    let (end, size) = {
        let p = open(&io, &dir, &cfg).unwrap();
        for i in 0..20 {
            p.append_durable(&mut tagged_batch(i, 3, 40, 1)).unwrap();
        }
        (p.log_end_offset(), p.size_bytes())
    };
    // A crash in the middle of writing the next batch: only part of it reached the file.
    let log = log_files(&dir, "log").pop().unwrap();
    let torn = tagged_batch(99, 5, 40, 1);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, &torn[..torn.len() / 2]).unwrap();
    drop(f);
    let p = open(&io, &dir, &cfg).unwrap();
    assert_eq!(p.log_end_offset(), end);
    assert_eq!(std::fs::metadata(&log).unwrap().len(), size, "torn tail truncated");
    let info = p.append_durable(&mut tagged_batch(100, 2, 40, 1)).unwrap();
    assert_eq!(info.base_offset, end);
    assert_eq!(read_all(&p).len(), 21);
}

#[test]
fn mid_log_corruption_below_the_recovery_point_refuses_to_open() {
    let tmp = tempfile::tempdir().unwrap();
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let cfg = small_cfg(Durability::Group, 4096);
    for case in ["active", "sealed-without-index", "sealed-header"] {
        let dir = tmp.path().join(format!("{case}-0"));
        write_closed_log(&io, &dir, &cfg, 60, 3, 40);
        let logs = log_files(&dir, "log");
        assert!(logs.len() >= 3);
        let victim = match case {
            "active" => logs.last().unwrap().clone(),
            "sealed-header" => logs[1].clone(),
            _ => {
                let v = logs[1].clone();
                std::fs::remove_file(v.with_extension("index")).unwrap();
                v
            }
        };
        let mut bytes = std::fs::read(&victim).unwrap();
        // Inside a synced batch in the middle of the file, or (sealed-header) in the first
        // batch's length field of a segment whose index is intact.
        let at = if case == "sealed-header" { 10 } else { bytes.len() / 2 };
        bytes[at] ^= 0x10;
        std::fs::write(&victim, &bytes).unwrap();
        match open(&io, &dir, &cfg) {
            Err(RecoveryError::MidLogCorruption { path, recovery_point, .. }) => {
                assert!(path.ends_with(victim.file_name().unwrap().to_str().unwrap()), "{path}");
                assert!(recovery_point > 0);
            }
            other => panic!("{case}: expected MidLogCorruption, got {other:?}"),
        }
        // Refusing is not repairing: the file is untouched.
        assert_eq!(std::fs::read(&victim).unwrap(), bytes);
    }
}

#[test]
fn missing_or_corrupt_index_files_are_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let cfg = small_cfg(Durability::Group, 4096);
    let mut sent = Vec::new();
    {
        let p = open(&io, &dir, &cfg).unwrap();
        for i in 0..150 {
            let b = tagged_batch(i, 1 + (i % 5) as usize, 30, 1_000 + i as i64);
            let info = p.append_durable(&mut b.clone()).unwrap();
            sent.push((info.base_offset, b));
        }
        p.close().unwrap();
    }
    let idx = log_files(&dir, "index");
    assert!(idx.len() >= 4);
    // Missing, emptied, one bit flipped in a position, garbage of the right length.
    std::fs::remove_file(&idx[0]).unwrap();
    std::fs::write(&idx[1], b"").unwrap();
    let mut b = std::fs::read(&idx[2]).unwrap();
    b[8 + 7] ^= 0x04;
    std::fs::write(&idx[2], &b).unwrap();
    let n = std::fs::read(&idx[3]).unwrap().len();
    std::fs::write(&idx[3], vec![0x5a; n]).unwrap();
    std::fs::remove_file(log_files(&dir, "timeindex")[0].clone()).unwrap();

    let p = open(&io, &dir, &cfg).unwrap();
    for (k, (base, b)) in sent.iter().enumerate() {
        let last = sent.get(k + 1).map_or(p.log_end_offset(), |s| s.0);
        for off in *base..last {
            let got = split_batches(&p.read_copy(off as i64, 1).unwrap());
            assert_eq!(got[0].0.base_offset as u64, *base, "lookup of {off}");
            assert!(same_except_patched(&got[0].1, b));
        }
    }
    assert_eq!(p.offset_for_timestamp(1_000 + 77).unwrap().map(|x| x.0), Some(sent[77].0));
    assert!(idx[0].exists(), "missing index rewritten");
    assert!(std::fs::metadata(&idx[1]).unwrap().len() > 0, "empty index rewritten");
}

/// A crash between deleting a retired segment's `.log` and its index files leaves the indexes
/// behind: the next open removes them (and keeps everything else).
#[test]
fn index_files_of_a_deleted_segment_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let cfg = small_cfg(Durability::Group, 4096);
    write_closed_log(&io, &dir, &cfg, 100, 2, 30);
    let logs = log_files(&dir, "log");
    assert!(logs.len() >= 3);
    // As retention of the oldest segment would, stopped after its first deletion.
    std::fs::remove_file(&logs[0]).unwrap();
    let (index, timeindex) = (logs[0].with_extension("index"), logs[0].with_extension("timeindex"));
    assert!(index.exists() && timeindex.exists());
    let p = open(&io, &dir, &cfg).unwrap();
    assert!(!index.exists() && !timeindex.exists(), "the deleted segment's indexes are gone");
    assert_eq!(log_files(&dir, "index").len(), logs.len() - 1, "the other segments keep theirs");
    assert_eq!(p.log_end_offset(), 200, "100 batches of 2 records");
}

#[test]
fn log_manager_reopens_topics_from_a_crash_image() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let cfg = small_cfg(Durability::Group, 4096);
    let m = LogManager::open(Path::new("/data"), io, cfg.clone()).unwrap();
    let t = m.create_topic("orders", 3, None).unwrap();
    let mut acked = Vec::new();
    for i in 0..90u64 {
        let p = &t[(i % 3) as usize];
        let b = tagged_batch(i, 2, 30, 1);
        let info = p.append_durable(&mut b.clone()).unwrap();
        acked.push(((i % 3) as usize, info.base_offset, b));
    }
    let image = sim.crash(CrashMode::TearAndFlip, 7);
    drop(m);
    let m = LogManager::open(Path::new("/data"), sim_io(&image), cfg).unwrap();
    assert!(m.failed.lock().unwrap().is_empty());
    assert_eq!(m.topic_names(), vec!["orders".to_string()]);
    let t = m.topic("orders").unwrap();
    let stored: Vec<_> = t.iter().map(|p| read_all(p)).collect();
    for (part, base, b) in &acked {
        let s = stored[*part].iter().find(|(i, _)| i.base_offset as u64 == *base).expect("acked batch present");
        assert!(same_except_patched(&s.1, b));
    }
}

/// An acknowledged batch: its base offset and the bytes sent.
type Acked = (u64, Vec<u8>);

/// One crash point: `threads` appenders run durable group-commit appends; at a random moment
/// the filesystem is crashed; the crash image must recover with every acknowledged batch.
/// With `mixed`, a quarter of the batches are large (written by the appender, not staged),
/// interleaved with small staged ones, and the leader zero-fills ahead of them.
/// Returns the number of acknowledged batches checked.
fn crash_point(seed: u64, threads: usize, mode: CrashMode, mixed: bool) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = SimIo::new();
    let dir = Path::new("/data/t-0");
    // Tiny segments so crashes also land in the middle of rolls.
    let mut cfg = if mixed {
        small_cfg(Durability::Group, rng.gen_range(600_000..2_000_000))
    } else {
        small_cfg(Durability::Group, rng.gen_range(600..3000))
    };
    // Half the points run with zero-filled preallocation ahead of the writes.
    if mixed {
        cfg.preallocate_bytes = rng.gen_range(16_384..65_536);
    } else if rng.gen_bool(0.5) {
        cfg.preallocate_bytes = rng.gen_range(1024..8192);
    }
    // Half the small-batch points write a share of their appends outside the partition lock,
    // concurrently, as large appends are (syncs must not cover a write still in flight).
    if !mixed && rng.gen_bool(0.5) {
        cfg.appender_write_bytes = rng.gen_range(150..700);
    }
    let p = open(&sim_io(&sim), dir, &cfg).unwrap();
    let per_thread: u64 = rng.gen_range(4..16);
    let crash_after: u64 = rng.gen_range(0..=per_thread * threads as u64);
    // Acks are recorded under this lock; the crash image is taken under it too, so an ack
    // counts only if it happened before the image was taken.
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (p, acked, started) = (p.clone(), acked.clone(), started.clone());
            let sizes: Vec<(usize, usize)> = (0..per_thread)
                .map(|_| {
                    if mixed && rng.gen_bool(0.25) {
                        (1, rng.gen_range(262_144..300_000))
                    } else {
                        (rng.gen_range(1..6), rng.gen_range(8..120))
                    }
                })
                .collect();
            std::thread::spawn(move || {
                for (i, (records, len)) in sizes.into_iter().enumerate() {
                    let tag = (t as u64) << 32 | i as u64;
                    let sent = tagged_batch(tag, records, len, 1);
                    started.fetch_add(1, Ordering::SeqCst);
                    let info = p.append_durable(&mut sent.clone()).expect("append in a healthy sim");
                    acked.lock().unwrap().push((info.base_offset, sent));
                }
            })
        })
        .collect();
    while started.load(Ordering::SeqCst) < crash_after && !workers.iter().all(|w| w.is_finished()) {
        std::thread::yield_now();
    }
    let (image, acked_at_crash) = {
        let a = acked.lock().unwrap();
        let image = sim.crash(mode, seed);
        (image, a.clone())
    };
    for w in workers {
        w.join().unwrap();
    }
    // The full log as the still-running original has it: the recovered log must be a prefix.
    p.flush().unwrap();
    let original = read_all(&p);
    drop(p);

    let r = open(&sim_io(&image), dir, &cfg).unwrap_or_else(|e| panic!("seed {seed} {mode:?}: recovery failed: {e}"));
    let recovered = read_all(&r);
    assert!(recovered.len() <= original.len());
    for (k, (got, want)) in recovered.iter().zip(&original).enumerate() {
        assert_eq!(got.1, want.1, "seed {seed} {mode:?}: recovered batch {k} differs from the original log");
    }
    for (base, sent) in &acked_at_crash {
        let k = recovered.partition_point(|(i, _)| (i.base_offset as u64) < *base);
        let Some((info, stored)) = recovered.get(k).filter(|(i, _)| i.base_offset as u64 == *base) else {
            panic!("seed {seed} {mode:?}: acknowledged batch at {base} lost (recovered up to {})", r.log_end_offset());
        };
        assert_eq!(info.base_offset as u64, *base);
        assert!(same_except_patched(stored, sent), "seed {seed}: acknowledged batch at {base} changed");
    }
    // Recovery leaves a usable log: the next append lands right after the recovered prefix.
    let next = r.log_end_offset();
    assert_eq!(r.append_durable(&mut tagged_batch(u64::MAX, 1, 8, 1)).unwrap().base_offset, next);
    acked_at_crash.len()
}

#[test]
fn crash_sweep_group_commit_loses_no_acknowledged_batch() {
    let points: u64 = std::env::var("CRASH_POINTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1200);
    let modes = [CrashMode::DropUnsynced, CrashMode::Tear, CrashMode::TearAndFlip];
    let started = std::time::Instant::now();
    let mut checked = 0usize;
    let mut mixed_points = 0;
    for seed in 0..points {
        let threads = 2 + (seed % 3) as usize;
        // Every 8th point mixes large appender-written batches with small staged ones.
        let mixed = seed % 8 == 7;
        mixed_points += mixed as u64;
        checked += crash_point(seed, threads, modes[(seed % 3) as usize], mixed);
    }
    println!(
        "crash sweep: {points} crash points ({mixed_points} with large batches mixed in; 2-4 concurrent appenders, group commit, \
         modes DropUnsynced/Tear/TearAndFlip), {checked} acknowledged batches checked, lost = 0, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(checked > points as usize, "the sweep must actually acknowledge batches before crashing");
}

#[test]
fn preallocated_zero_tail_is_trimmed_on_roll_and_close_and_recovered_after_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let mut cfg = small_cfg(Durability::Group, 16 << 10);
    cfg.preallocate_bytes = 4 << 10;
    let mut sent = Vec::new();
    {
        let p = open(&io, &dir, &cfg).unwrap();
        for i in 0..200 {
            let b = tagged_batch(i, 4, 50, 1);
            sent.push((p.append_durable(&mut b.clone()).unwrap().base_offset, b));
        }
        assert!(p.segment_count() > 3);
        let on_disk: u64 = log_files(&dir, "log").iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
        assert!(on_disk > p.size_bytes(), "the active segment is zero-filled ahead of its batches");
        p.close().unwrap();
        // Every segment, sealed or closed, ends exactly after its last batch.
        let total: u64 = log_files(&dir, "log").iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
        assert_eq!(total, p.size_bytes());
    }
    let p = open(&io, &dir, &cfg).unwrap();
    let got = read_all(&p);
    assert_eq!(got.len(), sent.len());
    assert!(got.iter().zip(&sent).all(|(g, s)| g.0.base_offset as u64 == s.0 && same_except_patched(&g.1, &s.1)));
    // A crash (no close) leaves the zero tail: recovery truncates it and keeps every batch.
    for i in 0..20 {
        p.append_durable(&mut tagged_batch(1000 + i, 4, 50, 1)).unwrap();
    }
    let end = p.log_end_offset();
    let size = p.size_bytes();
    drop(p);
    let p = open(&io, &dir, &cfg).unwrap();
    assert_eq!(p.log_end_offset(), end);
    assert_eq!(p.size_bytes(), size);
    let total: u64 = log_files(&dir, "log").iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert_eq!(total, size, "zero tail truncated by recovery");
}
