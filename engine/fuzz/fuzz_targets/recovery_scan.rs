//! Recovery of arbitrary segment bytes: `Partition::open` over a `SimIo` directory holding
//! fuzzer-chosen segment files (and optionally a recovery point and an index) must return Ok or
//! Err, never panic; on Ok, what it serves is a gap-free run of valid batches and it keeps working.
//!
//! Input layout: byte 0 = flags, bytes 1..3 = recovery point (u16), bytes 3..5 = split position
//! (u16), bytes 5..7 = second segment's base offset delta (u16), then the segment bytes.
//! flags bit 0: write a valid recovery-point file; bit 1: split into two segments; bit 2: give the
//! first segment an `.index` made of the bytes after the split; bit 3: base offsets near i64::MAX.
#![no_main]
use std::path::Path;
use std::sync::Arc;

use engine::io::{Io, SimIo};
use engine::log::{Durability, LogConfig, Notifier, Partition};
use engine::record::{self, build};
use libfuzzer_sys::fuzz_target;

fn put(io: &SimIo, path: &Path, bytes: &[u8]) {
    let f = io.open(path, true).expect("sim open");
    f.write_at(bytes, 0).expect("sim write");
    f.sync_data().expect("sim sync");
}

fn cfg() -> LogConfig {
    LogConfig {
        durability: Durability::Group,
        segment_bytes_max: 4096,
        segment_age_max_ms: None,
        retention_bytes_max: None,
        retention_ms: None,
        index_interval_bytes: 64,
        batch_bytes_max: 1 << 16,
        ..LogConfig::default()
    }
}

fn open(io: &SimIo) -> Option<Arc<Partition>> {
    Partition::open("t", 0, Path::new("/d/t-0"), Arc::new(io.clone()), cfg(), Arc::new(Notifier::default())).ok()
}

/// Read everything served; assert it is a gap-free run of well-formed batches, CRC-valid unless
/// `crc_trusted` (a sealed segment below the recovery point with an index is trusted as synced
/// data and not re-checksummed on open, by design, as in Kafka). Returns the end offset.
fn check(p: &Partition, crc_trusted: bool) -> u64 {
    let start = p.log_start_offset();
    let hw = p.high_watermark();
    assert!(start <= hw, "log start {start} > high watermark {hw}");
    assert_eq!(p.log_end_offset(), hw, "after recovery everything is durable");
    let mut at = start;
    for _ in 0..10_000 {
        if at >= hw {
            break;
        }
        let bytes = match p.read_copy(at as i64, 1 << 16) {
            Ok(b) => b,
            Err(e) => panic!("read at {at} below hw {hw} failed after a successful open: {e}"),
        };
        assert!(!bytes.is_empty(), "hole at {at}");
        let mut pos = 0;
        while pos < bytes.len() {
            let info = if crc_trusted {
                record::parse_header(&bytes[pos..], 1 << 16).expect("served bytes are well-formed batches")
            } else {
                record::validate(&bytes[pos..], 1 << 16).expect("served bytes are valid batches")
            };
            assert_eq!(info.base_offset as u64, at, "served offsets must be contiguous");
            at = info.base_offset as u64 + info.offset_count();
            pos += info.size_bytes;
        }
    }
    assert_eq!(at, hw);
    hw
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let flags = data[0];
    let rp = u16::from_be_bytes([data[1], data[2]]) as u64;
    let split = u16::from_be_bytes([data[3], data[4]]) as usize;
    let delta = u16::from_be_bytes([data[5], data[6]]) as u64;
    let body = &data[7..];
    let base0 = if flags & 8 != 0 { i64::MAX as u64 - 1000 } else { 0 };
    let io = SimIo::new();
    let dir = Path::new("/d/t-0");
    io.create_dir_all(dir).expect("mkdir");
    let (seg0, rest) = if flags & 2 != 0 { body.split_at(split.min(body.len())) } else { (body, &[][..]) };
    put(&io, &dir.join(format!("{base0:020}.log")), seg0);
    if flags & 2 != 0 {
        let base1 = base0.saturating_add(delta);
        if base1 != base0 {
            put(&io, &dir.join(format!("{base1:020}.log")), rest);
        }
    }
    if flags & 4 != 0 {
        put(&io, &dir.join(format!("{base0:020}.index")), rest);
        put(&io, &dir.join(format!("{base0:020}.timeindex")), rest.get(..rest.len() / 12 * 12).unwrap_or(&[]));
    }
    if flags & 1 != 0 {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&0x5250_0001u32.to_be_bytes());
        b[4..12].copy_from_slice(&(base0.saturating_add(rp)).to_be_bytes());
        let crc = crc32c::crc32c(&b[0..12]);
        b[12..16].copy_from_slice(&crc.to_be_bytes());
        put(&io, &dir.join("recovery-point"), &b);
    }
    io.sync_dir(dir).expect("sync dir");
    let Some(p) = open(&io) else { return };
    let crc_trusted = flags & 7 == 7;
    let end = check(&p, crc_trusted);
    if end < (i64::MAX as u64) / 2 {
        // The recovered log accepts appends and reopens to the same place plus the new batch.
        let mut b = build::simple_batch(3, 10, 0);
        let info = p.append_durable(&mut b).expect("append after recovery");
        assert_eq!(info.base_offset, end);
        drop(p);
        let q = open(&io).expect("reopen after a clean append");
        assert_eq!(check(&q, crc_trusted), end + 3);
    }
});
