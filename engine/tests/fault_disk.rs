//! Disk full and I/O errors: ENOSPC and EIO from appends and fdatasync.
//!
//! * Through `SimIo`: an append that hits ENOSPC or EIO gets a storage error, nothing acknowledged
//!   is lost, and the partition works again once space returns / writes succeed; a failed
//!   fdatasync poisons the partition until it is reopened (no retry: fsyncgate).
//! * For real: ENOSPC on a small tmpfs through `UringIo` (needs root to mount; skipped with a
//!   printed reason otherwise), and the `broker` binary on a full tmpfs: producers get
//!   KAFKA_STORAGE_ERROR, and the broker recovers once space returns.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::io::{CrashMode, Io, SimIo, UringIo};
use engine::log::{AppendError, Durability, LogConfig, LogManager, Notifier, Partition};
use engine::record::{self, build};

fn cfg() -> LogConfig {
    LogConfig {
        durability: Durability::Group,
        segment_bytes_max: 8 * 1024,
        segment_age_max_ms: None,
        retention_bytes_max: None,
        retention_ms: None,
        index_interval_bytes: 512,
        batch_bytes_max: 1 << 20,
        ..LogConfig::default()
    }
}

fn open(io: &SimIo, dir: &str) -> Arc<Partition> {
    Partition::open("t", 0, Path::new(dir), Arc::new(io.clone()), cfg(), Arc::new(Notifier::default())).expect("open")
}

fn batch(tag: u64, n: usize, len: usize) -> Vec<u8> {
    let vals: Vec<Vec<u8>> = (0..n).map(|i| format!("{tag}:{i}:{}", "x".repeat(len)).into_bytes()).collect();
    let recs: Vec<build::Rec<'_>> =
        vals.iter().map(|v| build::Rec { key: None, value: Some(v), timestamp_delta: 0 }).collect();
    build::batch_with(&recs, 1_700_000_000_000, -1, -1, -1)
}

/// Everything served from the start, as (base offset, bytes) per batch, checked for continuity.
fn served(p: &Partition) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = p.log_start_offset();
    let hw = p.high_watermark();
    for _ in 0..100_000 {
        if at >= hw {
            break;
        }
        let bytes = p.read_copy(at as i64, 1 << 20).expect("read");
        assert!(!bytes.is_empty(), "hole at {at} below high watermark {hw}");
        let mut pos = 0;
        for info in record::validate_all(&bytes, 1 << 20).expect("served bytes are valid batches") {
            assert_eq!(info.base_offset as u64, at, "gap or reorder");
            out.push((at, bytes[pos..pos + info.size_bytes].to_vec()));
            pos += info.size_bytes;
            at += info.offset_count();
        }
    }
    assert_eq!(at, hw);
    out
}

/// Assert every acknowledged batch is served byte-identical, in order.
fn assert_acked_present(p: &Partition, acked: &[(u64, Vec<u8>)]) {
    let got = served(p);
    for (base, bytes) in acked {
        let found = got.iter().find(|(b, _)| b == base);
        assert!(found.is_some_and(|(_, g)| g == bytes), "acknowledged batch at {base} lost or changed");
    }
}

/// Five small durable appends: (base offset, batch) of each, all acknowledged.
fn append_five_acked(p: &Partition) -> Vec<(u64, Vec<u8>)> {
    (0..5)
        .map(|i| {
            let mut b = batch(i, 2, 10);
            (p.append_durable(&mut b).expect("append").base_offset, b)
        })
        .collect()
}

fn storage_errno(e: &AppendError) -> Option<i32> {
    match e {
        AppendError::Storage(io) => io.raw_os_error(),
        _ => None,
    }
}

/// `append_durable` the batches `make(0..max)` until one fails, which must be with ENOSPC
/// (`case` names the test case in the message); acknowledged ones go to `acked`. Returns whether
/// an append failed.
fn append_until_enospc(
    p: &Partition,
    acked: &mut Vec<(u64, Vec<u8>)>,
    max: u64,
    case: &str,
    mut make: impl FnMut(u64) -> Vec<u8>,
) -> bool {
    for k in 0..max {
        let mut b = make(k);
        match p.append_durable(&mut b) {
            Ok(info) => acked.push((info.base_offset, b)),
            Err(e) => {
                assert_eq!(storage_errno(&e), Some(libc::ENOSPC), "{case}: want ENOSPC, got {e}");
                return true;
            }
        }
    }
    false
}

#[test]
fn enospc_on_append_is_a_storage_error_and_the_partition_recovers_when_space_returns() {
    let io = SimIo::new();
    let p = open(&io, "/d/t-0");
    let mut acked = Vec::new();
    for i in 0..10 {
        let mut b = batch(i, 4, 100);
        let info = p.append_durable(&mut b).expect("append");
        acked.push((info.base_offset, b));
    }
    io.set_space_left(Some(300));
    let mut failures = 0;
    for i in 10..30 {
        let mut b = batch(i, 4, 100);
        match p.append_durable(&mut b) {
            Ok(info) => acked.push((info.base_offset, b)),
            Err(e) => {
                assert_eq!(storage_errno(&e), Some(libc::ENOSPC), "want ENOSPC, got {e}");
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "space limit never hit");
    assert!(!p.is_poisoned(), "ENOSPC must not poison");
    assert_acked_present(&p, &acked);
    io.set_space_left(None);
    for i in 30..80 {
        let mut b = batch(i, 4, 100);
        let info = p.append_durable(&mut b).expect("append after space returned");
        acked.push((info.base_offset, b));
    }
    assert!(p.segment_count() > 1, "the workload should roll");
    assert_acked_present(&p, &acked);
    for mode in [CrashMode::DropUnsynced, CrashMode::Tear, CrashMode::TearAndFlip] {
        let image = io.crash(mode, 7);
        let q = open(&image, "/d/t-0");
        assert_acked_present(&q, &acked);
    }
    println!("disk-full (SimIo): {failures} ENOSPC append errors, {} acknowledged batches checked, lost = 0", acked.len());
}

/// Regression: an append that hit ENOSPC after a short write left the written part past the end
/// of the log; a later roll sealed it into the segment, and the next open refused the whole
/// partition as "corruption in the middle of the log". Found by fault_simulation seed 28 (once
/// SimIo modelled short writes) and by the real tmpfs test below.
#[test]
fn regression_short_write_on_enospc_sealed_by_roll_blocks_reopen() {
    let io = SimIo::new();
    let p = open(&io, "/d/t-0");
    let mut acked = Vec::new();
    let mut i = 0;
    while p.size_bytes() < 6 * 1024 {
        let mut b = batch(i, 2, 200);
        i += 1;
        acked.push((p.append_durable(&mut b).expect("append").base_offset, b));
    }
    // Group mode reserves space ahead (to the end of the segment here), so appends keep
    // succeeding until one needs a reservation that does not fit.
    io.set_space_left(Some(500));
    let failed = append_until_enospc(&p, &mut acked, 100, "short write", |k| batch(500 + k, 4, 200));
    assert!(failed, "the space limit was never hit");
    io.set_space_left(None);
    let mut small = batch(501, 1, 10);
    acked.push((p.append_durable(&mut small).expect("small append").base_offset, small));
    let segments = p.segment_count();
    for k in 0..10 {
        let mut big = batch(502 + k, 10, 300);
        acked.push((p.append_durable(&mut big).expect("big append").base_offset, big));
        if p.segment_count() > segments {
            break;
        }
    }
    assert!(p.segment_count() > segments, "the big appends roll");
    p.close().expect("close");
    let reopened =
        Partition::open("t", 0, Path::new("/d/t-0"), Arc::new(io.clone()), cfg(), Arc::new(Notifier::default()));
    let q = reopened.expect("reopen after ENOSPC + roll");
    assert_acked_present(&q, &acked);
    let q = open(&io.crash(CrashMode::DropUnsynced, 5), "/d/t-0");
    assert_acked_present(&q, &acked);
}

#[test]
fn enospc_while_rolling_leaves_a_log_that_reopens() {
    // Space runs out at every byte count around a roll: the roll writes indexes and creates the
    // next segment; whichever step fails, the log must keep working and reopen cleanly.
    for left in (0..400).step_by(7) {
        let io = SimIo::new();
        let p = open(&io, "/d/t-0");
        let mut acked = Vec::new();
        let mut i = 0;
        while p.segment_count() == 1 {
            let mut b = batch(i, 3, 200);
            i += 1;
            let info = p.append_durable(&mut b).expect("append");
            acked.push((info.base_offset, b));
        }
        // Fill the new segment to just below the roll threshold.
        loop {
            let mut b = batch(i, 3, 200);
            i += 1;
            if p.segment_count() > 2 {
                break;
            }
            io.set_space_left(Some(left));
            match p.append_durable(&mut b) {
                Ok(info) => acked.push((info.base_offset, b)),
                Err(e) => {
                    assert!(matches!(e, AppendError::Storage(_)), "want a storage error, got {e}");
                    break;
                }
            }
            io.set_space_left(None);
        }
        io.set_space_left(None);
        assert!(!p.is_poisoned());
        for _ in 0..40 {
            let mut b = batch(i, 3, 50);
            i += 1;
            let info = p.append_durable(&mut b).expect("append after space returned");
            acked.push((info.base_offset, b));
        }
        assert_acked_present(&p, &acked);
        p.close().expect("close");
        let q = open(&io.crash(CrashMode::DropUnsynced, left), "/d/t-0");
        assert_acked_present(&q, &acked);
    }
}

/// `never` mode writes in the append itself: EIO fails that append and nothing else.
#[test]
fn eio_on_write_in_never_mode_is_a_storage_error_and_does_not_poison() {
    let io = SimIo::new();
    let never = LogConfig { durability: Durability::Never, ..cfg() };
    let open_never = |io: &SimIo| {
        Partition::open("t", 0, Path::new("/d/t-0"), Arc::new(io.clone()), never.clone(), Arc::new(Notifier::default()))
            .expect("open")
    };
    let p = open_never(&io);
    let mut acked = append_five_acked(&p);
    io.set_write_eio(true);
    let e = p.append_durable(&mut batch(99, 2, 10)).expect_err("EIO append must fail");
    assert_eq!(storage_errno(&e), Some(libc::EIO), "got {e}");
    assert!(!p.is_poisoned());
    io.set_write_eio(false);
    let mut b = batch(100, 2, 10);
    acked.push((p.append_durable(&mut b).expect("append after EIO cleared").base_offset, b));
    assert_acked_present(&p, &acked);
    p.flush().expect("flush");
    assert_acked_present(&open_never(&io.crash(CrashMode::DropUnsynced, 1)), &acked);
}

/// `group` mode stages appends and the group-commit leader writes them: an EIO there comes
/// after offsets were handed out, so the partition is poisoned (as for a failed fdatasync);
/// nothing acknowledged is lost and a reopen recovers.
#[test]
fn eio_on_a_staged_group_write_poisons_and_reopen_recovers() {
    let io = SimIo::new();
    let p = open(&io, "/d/t-0");
    let mut acked = append_five_acked(&p);
    io.set_write_eio(true);
    let e = p.append_durable(&mut batch(99, 2, 10)).expect_err("EIO append must fail");
    assert!(matches!(e, AppendError::Poisoned(_)), "got {e}");
    assert!(p.is_poisoned());
    io.set_write_eio(false);
    assert!(matches!(p.append_durable(&mut batch(100, 2, 10)), Err(AppendError::Poisoned(_))));
    assert_acked_present(&p, &acked);
    drop(p);
    let q = open(&io.crash(CrashMode::DropUnsynced, 1), "/d/t-0");
    assert_acked_present(&q, &acked);
    assert_eq!(q.log_end_offset(), 10, "the failed batch is not in the log");
    let mut b = batch(101, 2, 10);
    acked.push((q.append_durable(&mut b).expect("append after reopen").base_offset, b));
    assert_acked_present(&q, &acked);
}

#[test]
fn failed_fdatasync_poisons_until_reopen_and_loses_nothing_acknowledged() {
    let io = SimIo::new();
    let p = open(&io, "/d/t-0");
    let acked = append_five_acked(&p);
    io.fail_sync_in(1);
    let e = p.append_durable(&mut batch(50, 2, 10)).expect_err("sync failure must fail the append");
    assert!(matches!(e, AppendError::Poisoned(_)), "got {e}");
    assert!(p.is_poisoned());
    // Sticky: no retry, even though the next sync would succeed.
    for i in 0..5 {
        assert!(matches!(p.append(&mut batch(60 + i, 1, 1)), Err(AppendError::Poisoned(_))));
        assert!(matches!(p.append_durable(&mut batch(70 + i, 1, 1)), Err(AppendError::Poisoned(_))));
        assert!(matches!(p.flush(), Err(AppendError::Poisoned(_))));
        assert!(p.close().is_err());
    }
    assert!(p.is_poisoned());
    // What was acknowledged before the failure is still served.
    assert_acked_present(&p, &acked);
    // Reopen: on the crash image (the failed sync made nothing durable) and on the live files.
    for image in [io.crash(CrashMode::DropUnsynced, 3), io.crash(CrashMode::TearAndFlip, 4), io.clone()] {
        let q = open(&image, "/d/t-0");
        assert!(!q.is_poisoned());
        assert_acked_present(&q, &acked);
        let mut b = batch(200, 2, 10);
        q.append_durable(&mut b).expect("append after reopen");
    }
}

#[test]
fn failed_fdatasync_poisons_group_commit_waiters_together() {
    let io = SimIo::new();
    let p = open(&io, "/d/t-0");
    let mut acked = Vec::new();
    for i in 0..3 {
        let mut b = batch(i, 2, 10);
        acked.push((p.append_durable(&mut b).expect("append").base_offset, b));
    }
    // Several appends written, then one sync covering them all fails: none is acknowledged.
    let mut pending = Vec::new();
    for i in 10..14 {
        pending.push(p.append(&mut batch(i, 2, 10)).expect("append to page cache"));
    }
    io.fail_sync_in(1);
    for info in &pending {
        assert!(matches!(p.wait_durable(info.next_offset), Err(AppendError::Poisoned(_))));
    }
    assert_acked_present(&open(&io.crash(CrashMode::DropUnsynced, 9), "/d/t-0"), &acked);
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir, _tmp: tmp })
    }
    fn resize(&self, size: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "remount tmpfs to {size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
    }
}

/// Real ENOSPC: a 1 MiB tmpfs through `UringIo`. Appends of ~40 KiB batches fill it; the write
/// that does not fit is usually *partial* (the kernel writes what fits, then ENOSPC). The
/// partition must report a storage error, keep everything acknowledged, and — after space
/// returns, the log rolls past the failed write, and the broker restarts — reopen cleanly.
#[test]
fn enospc_on_a_real_tmpfs_through_uring_io() {
    let fs = match Tmpfs::mount("1m") {
        Ok(fs) => fs,
        Err(reason) => {
            println!("SKIPPED enospc_on_a_real_tmpfs_through_uring_io: {reason} (needs root)");
            return;
        }
    };
    let data = fs.dir.join("data");
    let cfg = LogConfig { segment_bytes_max: 256 * 1024, ..cfg() };
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let mgr = LogManager::open(&data, io.clone(), cfg.clone()).expect("open");
    let p = mgr.create_topic("full", 1, None).expect("create")[0].clone();
    let mut acked = Vec::new();
    let mut enospc = 0;
    for i in 0..200 {
        let mut b = batch(i, 10, 4000);
        match p.append_durable(&mut b) {
            Ok(info) => acked.push((info.base_offset, b)),
            Err(e) => {
                assert_eq!(storage_errno(&e), Some(libc::ENOSPC), "want ENOSPC, got {e}");
                enospc += 1;
                if enospc >= 3 {
                    break;
                }
            }
        }
    }
    assert!(enospc > 0, "a 1 MiB tmpfs never filled up");
    assert!(!p.is_poisoned(), "ENOSPC must not poison");
    assert_acked_present(&p, &acked);
    fs.resize("16m");
    // One small append (it overwrites only the start of whatever the failed write left past the
    // end of the log), then a large one that does not fit the active segment: the log rolls,
    // sealing the segment that saw the failed write.
    let segments = p.segment_count();
    let mut small = batch(1000, 2, 300);
    let info = p.append_durable(&mut small).expect("small append after space returned");
    acked.push((info.base_offset, small));
    for k in 0..10 {
        let mut big = batch(1001 + k, 60, 4000);
        let info = p.append_durable(&mut big).expect("large append after space returned");
        acked.push((info.base_offset, big));
        if p.segment_count() > segments {
            break;
        }
    }
    assert!(p.segment_count() > segments, "the large appends should roll the log");
    assert_acked_present(&p, &acked);
    mgr.close().expect("clean close");
    drop(p);
    drop(mgr);
    let mgr = LogManager::open(&data, io, cfg).expect("reopen");
    let failed = mgr.failed.lock().expect("failed").clone();
    assert!(failed.is_empty(), "after ENOSPC and a restart, partitions refused to open: {failed:?}");
    let q = mgr.partition("full", 0).expect("partition");
    assert_acked_present(&q, &acked);
    println!(
        "disk-full (tmpfs 1 MiB, UringIo): {enospc} ENOSPC append errors, {} acknowledged batches checked after restart, lost = 0",
        acked.len()
    );
}

/// The broker binary on a 2 MiB tmpfs: acks=all producers get KAFKA_STORAGE_ERROR (56) when the
/// disk is full, the broker keeps running, produces succeed again once space returns, and after
/// a restart every acknowledged batch is fetched back.
#[test]
fn broker_on_a_full_tmpfs_answers_kafka_storage_error_and_recovers() {
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{FetchRequest, ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use std::net::{SocketAddr, TcpListener};
    use std::process::Command;

    const KAFKA_STORAGE_ERROR: i16 = 56;
    let fs = match Tmpfs::mount("2m") {
        Ok(fs) => fs,
        Err(reason) => {
            println!("SKIPPED broker_on_a_full_tmpfs_answers_kafka_storage_error_and_recovers: {reason} (needs root)");
            return;
        }
    };
    let data = fs.dir.join("data");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let start = || common::spawn_broker_process(&data, addr, &["--durability", "group"], "error");
    let topic = || TopicName(StrBytes::from_static_str("full"));
    let produce = |c: &mut common::Client, b: &[u8]| {
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(b.to_vec())))])]);
        let r = c.call(9, &req);
        let pr = &r.responses[0].partition_responses[0];
        (pr.error_code, pr.base_offset)
    };
    /// Kills the broker if an assertion fails first (so the tmpfs can be unmounted).
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(start());
    let mut c = common::Client::connect(addr);
    let mut acked: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut storage_errors = 0;
    for i in 0..200 {
        let b = batch(i, 10, 6000);
        match produce(&mut c, &b) {
            (0, base) => acked.push((base, b)),
            (KAFKA_STORAGE_ERROR, _) => {
                storage_errors += 1;
                if storage_errors >= 3 {
                    break;
                }
            }
            (code, _) => panic!("unexpected produce error code {code} on a full disk"),
        }
    }
    assert!(storage_errors > 0, "a 2 MiB tmpfs never filled up");
    assert!(child.0.try_wait().expect("poll broker").is_none(), "the broker died on ENOSPC");
    fs.resize("64m");
    for i in 1000..1010 {
        let b = batch(i, 10, 6000);
        let (code, base) = produce(&mut c, &b);
        assert_eq!(code, 0, "produce after space returned");
        acked.push((base, b));
    }
    drop(c);
    let _ = Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status();
    assert!(child.0.wait().expect("reap").success(), "clean shutdown after ENOSPC");
    let _child = Reap(start());
    let mut c = common::Client::connect(addr);
    let mut served = std::collections::BTreeMap::new();
    let mut at = 0i64;
    for _ in 0..10_000 {
        let req = FetchRequest::default().with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(8 << 20).with_session_epoch(-1).with_topics(
            vec![FetchTopic::default().with_topic(topic()).with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(at)
                .with_partition_max_bytes(4 << 20)])],
        );
        let r = c.call(12, &req);
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        if at >= p.high_watermark {
            break;
        }
        let bytes = p.records.clone().unwrap_or_default();
        assert!(!bytes.is_empty(), "hole at {at}");
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(size) = record::declared_size(&bytes[pos..]) else { break };
            if pos + size as usize > bytes.len() {
                break;
            }
            let info = record::validate(&bytes[pos..], 1 << 20).expect("valid batch");
            assert_eq!(info.base_offset, at, "gap or reorder");
            served.insert(at, bytes[pos..pos + info.size_bytes].to_vec());
            at = info.last_offset() + 1;
            pos += info.size_bytes;
        }
    }
    for (base, sent) in &acked {
        let got = served.get(base).unwrap_or_else(|| panic!("LOST acknowledged batch at {base}"));
        assert!(got[16..] == sent[16..], "batch at {base} changed");
    }
    println!(
        "disk-full (broker on a 2 MiB tmpfs): {storage_errors} KAFKA_STORAGE_ERROR answers, broker kept running, \
         {} acknowledged batches fetched back after restart, lost = 0",
        acked.len()
    );
}

/// Regression (found in review): after a roll, a large (appender-written) first append left the
/// staging position of the *old* segment behind; the next group commit, with nothing staged,
/// credited the new segment with "zeros written" up to that stale position, so later appends
/// skipped their space reservation and a full disk poisoned the partition at the leader's write
/// instead of failing one append with ENOSPC.
#[test]
fn regression_enospc_after_a_roll_by_a_large_append_does_not_poison() {
    for preallocate in [0u64, 1 << 20] {
        let io = SimIo::new();
        let cfg = LogConfig { segment_bytes_max: 2 << 20, preallocate_bytes: preallocate, ..cfg() };
        let p = Partition::open("t", 0, Path::new("/d/t-0"), Arc::new(io.clone()), cfg.clone(), Arc::new(Notifier::default()))
            .expect("open");
        let mut acked = Vec::new();
        let mut i = 0;
        while p.size_bytes() < 1_900_000 {
            let mut b = batch(i, 20, 1000);
            i += 1;
            acked.push((p.append_durable(&mut b).expect("fill").base_offset, b));
        }
        let mut big = batch(10_000, 1, 300_000);
        acked.push((p.append_durable(&mut big).expect("large append").base_offset, big));
        assert_eq!(p.segment_count(), 2, "the large append rolled");
        io.set_space_left(Some(0));
        let case = format!("preallocate {preallocate}");
        let failed = append_until_enospc(&p, &mut acked, 400, &case, |k| batch(20_000 + k, 20, 1000));
        assert!(failed, "{case}: the disk never filled");
        assert!(!p.is_poisoned(), "preallocate {preallocate}: ENOSPC must not poison");
        io.set_space_left(None);
        let mut b = batch(30_000, 2, 10);
        acked.push((p.append_durable(&mut b).expect("append after space returned").base_offset, b));
        assert_acked_present(&p, &acked);
        assert_acked_present(&open(&io.crash(CrashMode::DropUnsynced, 3), "/d/t-0"), &acked);
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 15 (12): a way out of corruption — `--repair` and the scrub — on real files.

/// Write `batches` batches of 20 x 200 B records to `t-0` under `dir` (real files, group mode,
/// closed cleanly: the recovery point covers everything). Returns each batch's (offset, bytes).
fn write_real_log(dir: &Path, batches: u64, segment_bytes_max: u64) -> Vec<(u64, Vec<u8>)> {
    let cfg = LogConfig { segment_bytes_max, ..cfg() };
    let m = LogManager::open(dir, Arc::new(UringIo), cfg).expect("open");
    let p = m.create_topic("t", 1, None).expect("create")[0].clone();
    for tag in 0..batches {
        p.append_durable(&mut batch(tag, 20, 200)).expect("append");
    }
    let stored = served(&p);
    m.close().expect("close");
    stored
}

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open segment");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read byte");
    f.write_all_at(&[b[0] ^ 0x40], at).expect("write byte");
    f.sync_all().expect("sync");
}

/// The broker binary on `data` with `args`; returns its stderr once it has listened and been
/// asked `fetch` (a closure over its address) — then it is killed.
fn broker_binary<T>(data: &Path, args: &[&str], fetch: impl FnOnce(std::net::SocketAddr) -> T) -> (T, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = data.with_extension("stderr");
    // Plain text (no ANSI colours) so tests can match `field=value`.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &addr.to_string(), "--no-auto-create"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn broker");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "broker exited: {}", std::fs::read_to_string(&log).unwrap());
        assert!(std::time::Instant::now() < deadline, "broker did not listen");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = fetch(addr);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    // Strip ANSI colour sequences (ESC [ ... m).
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    (out, plain)
}

/// Fetch `t-0` from `offset`: (error code, batches' (base offset, record count), every served
/// batch's CRC right).
fn fetch_t0(addr: std::net::SocketAddr, offset: i64) -> (i16, Vec<(i64, i32)>, bool) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut c = common::Client::connect(addr);
    let req = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(10 << 20).with_session_epoch(-1).with_topics(vec![
        FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str("t"))).with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(10 << 20)]),
    ]);
    let r = c.call(12, &req);
    let p = &r.responses[0].partitions[0];
    let recs = p.records.clone().unwrap_or_default();
    let (mut at, mut batches, mut crc_ok) = (0, Vec::new(), true);
    while at < recs.len() {
        let info = record::parse_header(&recs[at..], 1 << 20).expect("served batch headers are valid");
        crc_ok &= record::validate(&recs[at..], 1 << 20).is_ok();
        batches.push((info.base_offset, info.record_count));
        at += info.size_bytes;
    }
    (p.error_code, batches, crc_ok)
}

/// A byte flipped in the active segment below the recovery point: without --repair the
/// partition is not opened and the log says where and how to repair; with --repair it is
/// truncated at the damaged batch, the log names the segment, position, offset and bytes
/// dropped, and every batch before it is served intact.
#[test]
fn repair_truncates_at_the_first_invalid_batch_and_reports_what_it_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let stored = write_real_log(&data, 10, 1 << 30);
    let seg = data.join("t-0/00000000000000000000.log");
    // Batch 6 starts after six batches; flip a byte inside its records.
    let batch_len = stored[0].1.len() as u64;
    let at = 6 * batch_len + 100;
    flip_byte(&seg, at);

    let ((code, _, _), log) = broker_binary(&data, &[], |a| fetch_t0(a, 0));
    assert_ne!(code, 0, "a damaged partition was served");
    assert!(log.contains("corruption in the middle of the log") && log.contains("--repair"), "unclear report:\n{log}");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 10 * batch_len, "nothing may be truncated without --repair");

    let ((code, batches, crc_ok), log) = broker_binary(&data, &["--repair"], |a| fetch_t0(a, 0));
    assert_eq!((code, crc_ok), (0, true));
    assert_eq!(batches, (0..6).map(|i| (i * 20, 20)).collect::<Vec<_>>(), "everything before the damage is served");
    let line = log.lines().find(|l| l.contains("REPAIR")).unwrap_or_else(|| panic!("no REPAIR line:\n{log}"));
    for want in ["00000000000000000000.log", &format!("position={}", 6 * batch_len), "offset=120", &format!("dropped_bytes_in_segment={}", 4 * batch_len)] {
        assert!(line.contains(want), "REPAIR line lacks {want:?}: {line}");
    }
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 6 * batch_len);
    // The served bytes are the stored ones.
    let m = LogManager::open(&data, Arc::new(UringIo), cfg()).unwrap();
    let p = m.partition("t", 0).unwrap();
    assert_eq!(served(&p), stored[..6].to_vec());
    println!("fault_disk: repair: {line}");
}

/// A byte flipped in a sealed segment is not caught by recovery (it trusts checkpointed
/// indexes and headers); the scrub finds it, reports segment/position/offset, and the batch is
/// no longer served: Fetch from before it stops short of it, Fetch at it answers
/// KAFKA_STORAGE_ERROR (56) — never the corrupt value.
#[test]
fn scrub_reports_a_damaged_sealed_segment_and_fences_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // ~4.5 KiB batches, 16 KiB segments: 3 batches per segment, several sealed segments.
    let stored = write_real_log(&data, 12, 16 * 1024);
    let batch_len = stored[0].1.len() as u64;
    let seg = data.join("t-0/00000000000000000000.log");
    flip_byte(&seg, batch_len + 200); // inside batch 1 (offsets 20..39)

    // Without the scrub (--scrub-rate-mib 0) the corrupt batch is served as if nothing happened.
    let ((code, batches, crc_ok), _) = broker_binary(&data, &["--scrub-rate-mib", "0"], |a| fetch_t0(a, 0));
    assert_eq!(code, 0);
    assert!(batches.len() > 1 && !crc_ok, "without the scrub the damaged batch is served");

    let ((before, at, after), log) = broker_binary(&data, &["--scrub-rate-mib", "64"], |a| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let at = fetch_t0(a, 20);
            if at.0 != 0 || std::time::Instant::now() >= deadline {
                return (fetch_t0(a, 0), at, fetch_t0(a, 60));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    assert_eq!(at.0, 56, "Fetch at the damaged batch: KAFKA_STORAGE_ERROR\n{log}");
    assert_eq!(before, (0, vec![(0, 20)], true), "Fetch from before the damage stops short of it");
    assert_eq!(after.0, 56, "offsets after the damage are fenced too");
    let line = log.lines().find(|l| l.contains("scrub: damaged batch")).unwrap_or_else(|| panic!("no scrub line:\n{log}"));
    for want in ["00000000000000000000.log", &format!("position={batch_len}"), "offset=20", "CRC mismatch"] {
        assert!(line.contains(want), "scrub line lacks {want:?}: {line}");
    }
    println!("fault_disk: scrub: {line}");

    // The way out: --repair truncates at the damaged batch (dropping the later segments) and
    // serves what is before it; the scrub then finds nothing.
    let ((code, batches, crc_ok), log) = broker_binary(&data, &["--repair", "--scrub-rate-mib", "64"], |a| {
        std::thread::sleep(std::time::Duration::from_millis(500));
        fetch_t0(a, 0)
    });
    assert_eq!((code, batches, crc_ok), (0, vec![(0, 20)], true), "{log}");
    let line = log.lines().find(|l| l.contains("REPAIR: truncating")).unwrap_or_else(|| panic!("no REPAIR line:\n{log}"));
    assert!(line.contains("offset=20") && line.contains(&format!("position={batch_len}")), "{line}");
    assert!(log.lines().filter(|l| l.contains("REPAIR: removing")).count() >= 3, "later segments not reported:\n{log}");
    assert!(!log.contains("scrub: damaged"), "{log}");
}

/// A sealed segment missing from the middle of the log (an operator's slip): without --repair
/// the partition is not opened; with it the log ends where the gap starts, the segments after
/// the gap are removed and reported, and everything before is served.
#[test]
fn repair_drops_the_segments_after_a_missing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let stored = write_real_log(&data, 12, 16 * 1024);
    let dir = data.join("t-0");
    let mut bases: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_string_lossy().strip_suffix(".log").and_then(|s| s.parse().ok()))
        .collect();
    bases.sort_unstable();
    assert!(bases.len() >= 4, "{bases:?}");
    let gone = bases[2];
    std::fs::remove_file(dir.join(format!("{gone:020}.log"))).unwrap();

    let ((code, _, _), log) = broker_binary(&data, &[], |a| fetch_t0(a, 0));
    assert_ne!(code, 0, "a partition with a missing segment was served");
    assert!(log.contains("--repair"), "{log}");

    let (served_batches, log) = broker_binary(&data, &["--repair"], |a| {
        let mut all = Vec::new();
        let mut at = 0i64;
        for _ in 0..100 {
            let (code, batches, crc_ok) = fetch_t0(a, at);
            assert_eq!((code, crc_ok), (0, true));
            let Some(&(last, n)) = batches.last() else { break };
            all.extend(batches);
            at = last + n as i64;
        }
        all
    });
    let expected: Vec<(i64, i32)> = stored.iter().take_while(|(o, _)| *o < gone).map(|(o, _)| (*o as i64, 20)).collect();
    assert_eq!(served_batches, expected, "{log}");
    assert!(log.contains(&format!("segment starts at {}", bases[3])), "{log}");
    println!("fault_disk: missing segment {gone}: repaired to offsets 0..{gone}");
}
