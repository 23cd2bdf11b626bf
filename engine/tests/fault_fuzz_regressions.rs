//! Regression tests for inputs the fuzzers (engine/fuzz) found. Each is named after what broke.

/// The broker's process allocator (`io::sys::GuardedAlloc`), installed by this test binary as the broker
/// binary does (a library never installs one): hostile array counts must not abort it.
#[global_allocator]
static GLOBAL: engine::io::sys::GuardedAlloc = engine::io::sys::GuardedAlloc;

use std::path::Path;
use std::sync::Arc;

use engine::io::{Io, SimIo};
use engine::log::{Durability, LogConfig, Notifier, Partition};

fn put(io: &SimIo, path: &Path, bytes: &[u8]) {
    let f = io.open(path, true).expect("sim open");
    f.write_at(bytes, 0).expect("sim write");
    f.sync_data().expect("sim sync");
}

fn recovery_point(offset: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&0x5250_0001u32.to_be_bytes());
    b[4..12].copy_from_slice(&offset.to_be_bytes());
    let crc = crc32c::crc32c(&b[0..12]);
    b[12..16].copy_from_slice(&crc.to_be_bytes());
    b
}

/// recovery_scan found: a sealed (not last, below the recovery point) segment that is empty and
/// has an empty `.index` was "trusted", and `Partition::open` panicked on `index.last()`.
/// Damaged disk contents must give an error (or a recovered log), never a panic.
#[test]
fn regression_empty_sealed_segment_with_empty_index_panicked_on_open() {
    let io = SimIo::new();
    let dir = Path::new("/d/t-0");
    io.create_dir_all(dir).expect("mkdir");
    put(&io, &dir.join("00000000000000000000.log"), b"");
    put(&io, &dir.join("00000000000000000000.index"), b"");
    put(&io, &dir.join("00000000000000000000.timeindex"), b"");
    put(&io, &dir.join("00000000000000000010.log"), b"");
    put(&io, &dir.join("recovery-point"), &recovery_point(10));
    io.sync_dir(dir).expect("sync dir");
    let cfg = LogConfig { durability: Durability::Group, retention_ms: None, ..LogConfig::default() };
    let r = std::panic::catch_unwind(|| {
        Partition::open("t", 0, dir, Arc::new(io.clone()), cfg.clone(), Arc::new(Notifier::default())).map(drop)
    });
    let r = r.expect("Partition::open must not panic on damaged segment files");
    let e = r.expect_err("segment 10 does not follow an empty segment 0: refuse to open");
    assert!(e.to_string().contains("segment starts at 10"), "unexpected error: {e}");
}

/// recovery_scan found: a segment file named with a base offset near u64::MAX (20 digits parse
/// as u64) overflowed `base + rel_offset` in `Partition::open` (a panic with overflow checks, a
/// silently wrapped offset without). Kafka offsets are i64: such a name is refused.
#[test]
fn regression_segment_base_offset_beyond_i64_overflowed_on_open() {
    let io = SimIo::new();
    let dir = Path::new("/d/t-0");
    io.create_dir_all(dir).expect("mkdir");
    let base = u64::MAX - 1000;
    let mut index = Vec::new();
    index.extend_from_slice(&2000u32.to_be_bytes()); // rel_offset: base + 2000 overflows
    index.extend_from_slice(&0u32.to_be_bytes());
    put(&io, &dir.join(format!("{base:020}.log")), &[0u8; 100]);
    put(&io, &dir.join(format!("{base:020}.index")), &index);
    put(&io, &dir.join(format!("{base:020}.timeindex")), b"");
    put(&io, &dir.join(format!("{:020}.log", u64::MAX - 10)), b"");
    put(&io, &dir.join("recovery-point"), &recovery_point(u64::MAX - 10));
    io.sync_dir(dir).expect("sync dir");
    let cfg = LogConfig { durability: Durability::Group, retention_ms: None, ..LogConfig::default() };
    let r = std::panic::catch_unwind(|| {
        Partition::open("t", 0, dir, Arc::new(io.clone()), cfg.clone(), Arc::new(Notifier::default())).map(drop)
    });
    let e = r.expect("Partition::open must not panic").expect_err("offsets beyond i64::MAX are refused");
    assert!(e.to_string().contains("unexpected file name"), "unexpected error: {e}");
}

/// fault_simulation (long profile, seed 3307578788000398) found: a bit flipped in the
/// partitionLeaderEpoch field of an unsynced batch — the one header field outside the CRC that
/// recovery did not check — survived recovery and was served. The engine writes epoch 0 into
/// every batch it stores, so recovery now treats any other value as damage (a torn tail here).
#[test]
fn regression_bit_flip_in_partition_leader_epoch_was_served_after_recovery() {
    use engine::record::{self, build};
    let io = SimIo::new();
    let dir = Path::new("/d/t-0");
    io.create_dir_all(dir).expect("mkdir");
    let mut good = build::simple_batch(3, 10, 0);
    record::patch_base_offset(&mut good, 0);
    record::patch_leader_epoch(&mut good, 0);
    let mut flipped = build::simple_batch(2, 10, 0);
    record::patch_base_offset(&mut flipped, 3);
    record::patch_leader_epoch(&mut flipped, 0);
    flipped[13] ^= 0x10; // partitionLeaderEpoch, not covered by the CRC
    assert!(record::validate(&flipped, 1 << 20).is_ok(), "the CRC does not see it");
    let mut seg = good.clone();
    seg.extend(&flipped);
    put(&io, &dir.join("00000000000000000000.log"), &seg);
    io.sync_dir(dir).expect("sync dir");
    let cfg = LogConfig { durability: Durability::Group, retention_ms: None, ..LogConfig::default() };
    let p = Partition::open("t", 0, dir, Arc::new(io.clone()), cfg, Arc::new(Notifier::default())).expect("open");
    assert_eq!(p.high_watermark(), 3, "the damaged batch is a torn tail, not served");
    assert_eq!(p.read_copy(0, 1 << 20).expect("read"), good);
}
