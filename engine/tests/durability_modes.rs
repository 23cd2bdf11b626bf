//! What each durability mode promises across a power cut (SimIo crash image).

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use engine::io::{CrashMode, Io, SimIo, UringIo};
use engine::log::{Durability, LogManager};

#[test]
fn interval_mode_acks_at_once_and_the_background_flusher_makes_it_durable() {
    let sim = SimIo::new();
    let cfg = small_cfg(Durability::Interval { ms: 20 }, 1 << 20);
    let m = LogManager::open(Path::new("/data"), sim_io(&sim), cfg.clone()).unwrap();
    let t = m.create_topic("t", 1, None).unwrap();
    let syncs = sim.sync_count();
    let mut sent = Vec::new();
    for i in 0..20 {
        let b = tagged_batch(i, 2, 20, 1);
        sent.push((t[0].append_durable(&mut b.clone()).unwrap().base_offset, b));
    }
    assert_eq!(sim.sync_count(), syncs, "interval mode acknowledges without syncing");
    assert_eq!(t[0].high_watermark(), t[0].log_end_offset(), "readable at once");
    // Within a few intervals the flusher has synced everything.
    let deadline = Instant::now() + Duration::from_secs(10);
    let image = loop {
        let image = sim.crash(CrashMode::DropUnsynced, 1);
        let m2 = LogManager::open(Path::new("/data"), sim_io(&image), cfg.clone()).unwrap();
        let n = m2.topic("t").map_or(0, |t| read_all(&t[0]).len());
        if n == sent.len() {
            break image;
        }
        assert!(Instant::now() < deadline, "interval flusher never made the appends durable");
        std::thread::sleep(Duration::from_millis(10));
    };
    let m2 = LogManager::open(Path::new("/data"), sim_io(&image), cfg).unwrap();
    let stored = read_all(&m2.topic("t").unwrap()[0]);
    assert!(stored.iter().zip(&sent).all(|(s, (b, bytes))| s.0.base_offset as u64 == *b && same_except_patched(&s.1, bytes)));
}

#[test]
fn never_mode_is_durable_only_after_flush_or_close() {
    let sim = SimIo::new();
    let dir = Path::new("/d/t-0");
    let cfg = small_cfg(Durability::Never, 1 << 20);
    let p = open(&sim_io(&sim), dir, &cfg).unwrap();
    let syncs = sim.sync_count();
    for i in 0..10 {
        p.append_durable(&mut tagged_batch(i, 2, 20, 1)).unwrap();
    }
    assert_eq!(sim.sync_count(), syncs);
    let lost = open(&sim_io(&sim.crash(CrashMode::DropUnsynced, 1)), dir, &cfg).unwrap();
    assert_eq!(lost.log_end_offset(), 0, "a power cut loses never-mode appends that were not flushed");
    p.close().unwrap();
    let kept = open(&sim_io(&sim.crash(CrashMode::DropUnsynced, 1)), dir, &cfg).unwrap();
    assert_eq!(kept.log_end_offset(), p.log_end_offset());
    assert_eq!(read_all(&kept).len(), 10);
}

/// `never` mode asks the kernel to write the active segment back as it grows (write-behind,
/// a few MiB at a time, on the sync pool): a roll's fdatasync then no longer finds up to a
/// whole segment of dirty pages to write while every append of the partition waits (stalls
/// of 0.3-2.5 s at ~150 MB/s before). Real disk: the page cache's own count of the segment's
/// dirty pages (cachestat) drops to 0 for all but the last step within seconds, long before
/// the kernel's 30 s dirty expiry would have written them.
#[test]
fn never_mode_writes_a_growing_segment_back_behind_its_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    let cfg = small_cfg(Durability::Never, 1 << 30);
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let p = open(&io, &dir, &cfg).unwrap();
    let mut written = 0usize;
    let mut tag = 0;
    while written < 40 << 20 {
        let mut b = tagged_batch(tag, 1000, 1000, 1);
        written += b.len();
        p.append(&mut b).unwrap();
        tag += 1;
    }
    let seg = std::fs::File::open(dir.join(format!("{:020}.log", 0))).unwrap();
    // The last write-behind step may still be pending (it is requested once 4 MiB are due).
    let settled = (written - (8 << 20)) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = engine::io::sys::cachestat(seg.as_raw_fd(), 0, settled).unwrap();
        if st.dirty == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never mode: {} of the first {settled} bytes' pages still dirty 10 s after the appends ({st:?})",
            st.dirty
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_all(&p).len(), tag as usize);
}

/// Group mode stages an append until a group commit writes and syncs it: nothing staged is
/// served, and a caller that never waits still sees its records written by the background
/// group commit of the log manager.
#[test]
fn group_mode_serves_nothing_staged_and_commits_unwaited_appends_in_the_background() {
    let sim = SimIo::new();
    let cfg = small_cfg(Durability::Group, 1 << 20);
    let m = LogManager::open(Path::new("/data"), sim_io(&sim), cfg.clone()).unwrap();
    let p = m.create_topic("t", 1, None).unwrap()[0].clone();
    let first = p.append_durable(&mut tagged_batch(0, 2, 20, 1)).unwrap();
    let syncs = sim.sync_count();
    let mut sent = Vec::new();
    for i in 1..=10 {
        let b = tagged_batch(i, 2, 20, 1);
        sent.push((p.append(&mut b.clone()).unwrap().base_offset, b));
    }
    // Immediately after: staged, not written, not served.
    if sim.sync_count() == syncs {
        assert_eq!(p.high_watermark(), first.next_offset);
        assert!(p.has_unsynced());
        let slice = p.read(first.next_offset as i64, 1 << 20, true).unwrap();
        assert_eq!(slice.bytes(), 0, "staged bytes are not served");
    }
    // Without anyone waiting, the background commit writes and syncs them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.has_unsynced() {
        assert!(Instant::now() < deadline, "unwaited group-mode appends never became visible");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sim.sync_count() > syncs);
    let image = sim.crash(CrashMode::DropUnsynced, 3);
    let m2 = LogManager::open(Path::new("/data"), sim_io(&image), cfg).unwrap();
    let stored = read_all(&m2.topic("t").unwrap()[0]);
    assert_eq!(stored.len(), 11);
    assert!(stored[1..].iter().zip(&sent).all(|(s, (b, bytes))| s.0.base_offset as u64 == *b && same_except_patched(&s.1, bytes)));
}

/// The background group commit follows each partition's own durability: a topic created in
/// `group` mode under a `never` default still gets its unwaited appends written and visible.
#[test]
fn background_group_commit_follows_a_per_topic_override() {
    let sim = SimIo::new();
    let m = LogManager::open(Path::new("/data"), sim_io(&sim), small_cfg(Durability::Never, 1 << 20)).unwrap();
    let p = m.create_topic("g", 1, Some(small_cfg(Durability::Group, 1 << 20))).unwrap()[0].clone();
    let info = p.append(&mut tagged_batch(1, 2, 20, 1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.high_watermark() < info.next_offset {
        assert!(Instant::now() < deadline, "a group-mode topic under a never default never became visible");
        std::thread::sleep(Duration::from_millis(20));
    }
}
