//! Regression tests for inputs the fuzzers (engine/fuzz) found. Each is named after what broke.

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
