//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

/// The broker's process allocator (`io::sys::GuardedAlloc`), installed by this test binary as the broker
/// binary does (a library never installs one): hostile array counts must not abort it.
#[global_allocator]
static GLOBAL: engine::io::sys::GuardedAlloc = engine::io::sys::GuardedAlloc;

use std::path::Path;
use std::sync::Arc;

use engine::io::{Io, SimIo};
use engine::log::{Durability, LogConfig, Notifier, Partition, RecoveryError};
use engine::record::{self, build, BatchInfo};

pub const MAX: usize = 16 << 20;

/// A small config: tiny segments so tests roll often; retention off unless a test sets it.
pub fn small_cfg(durability: Durability, segment_bytes_max: u64) -> LogConfig {
    LogConfig {
        durability,
        segment_bytes_max,
        segment_age_max_ms: None,
        retention_bytes_max: None,
        retention_ms: None,
        index_interval_bytes: 256,
        batch_bytes_max: 1 << 20,
        preallocate_bytes: 0,
        appender_write_bytes: 256 << 10,
        direct_io: false,
        validate_records: true,
        repair: false,
        scrub_rate_mib: 0,
        ..LogConfig::default()
    }
}

pub fn open(io: &Arc<dyn Io>, dir: &Path, cfg: &LogConfig) -> Result<Arc<Partition>, RecoveryError> {
    Partition::open("t", 0, dir, io.clone(), cfg.clone(), Arc::new(Notifier::default()))
}

pub fn sim_io(sim: &SimIo) -> Arc<dyn Io> {
    Arc::new(sim.clone())
}

/// A batch whose records carry `tag` (so tests can tell batches apart) and `records` records
/// of `value_len` bytes each.
pub fn tagged_batch(tag: u64, records: usize, value_len: usize, ts: i64) -> Vec<u8> {
    idempotent_batch(tag, records, value_len, ts, -1, -1, -1)
}

pub fn idempotent_batch(
    tag: u64,
    records: usize,
    value_len: usize,
    ts: i64,
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|i| {
            let mut v = tag.to_be_bytes().to_vec();
            v.extend_from_slice(&(i as u32).to_be_bytes());
            v.resize(value_len.max(12), (tag as u8).wrapping_add(i as u8));
            v
        })
        .collect();
    let recs: Vec<build::Rec<'_>> =
        values.iter().map(|v| build::Rec { key: None, value: Some(v), timestamp_delta: 0 }).collect();
    build::batch_with(&recs, ts, producer_id, epoch, base_sequence)
}

/// Batches of a copied read, each with its bytes.
pub fn split_batches(buf: &[u8]) -> Vec<(BatchInfo, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let info = record::validate(&buf[at..], MAX).expect("stored batch must validate");
        out.push((info, buf[at..at + info.size_bytes].to_vec()));
        at += info.size_bytes;
    }
    out
}

/// Every batch from the log start up to the high watermark, checking offsets are contiguous.
pub fn read_all(p: &Partition) -> Vec<(BatchInfo, Vec<u8>)> {
    let mut out: Vec<(BatchInfo, Vec<u8>)> = Vec::new();
    let mut next = p.log_start_offset();
    let hw = p.high_watermark();
    while next < hw {
        let bytes = p.read_copy(next as i64, 1 << 20).expect("read below the high watermark");
        assert!(!bytes.is_empty(), "read at {next} below hw {hw} returned nothing");
        for (info, b) in split_batches(&bytes) {
            assert!(
                info.base_offset as u64 <= next && info.last_offset() as u64 >= next,
                "batch [{}, {}] does not hold offset {next}",
                info.base_offset,
                info.last_offset()
            );
            if info.base_offset as u64 == next || out.is_empty() {
                next = info.last_offset() as u64 + 1;
                out.push((info, b));
            } else {
                panic!("offset gap: expected batch at {next}, got {}", info.base_offset);
            }
        }
    }
    out
}

/// Stored bytes equal what was sent, except the two fields the log patches (baseOffset,
/// partitionLeaderEpoch), which are outside the CRC.
pub fn same_except_patched(stored: &[u8], sent: &[u8]) -> bool {
    stored.len() == sent.len() && stored[8..12] == sent[8..12] && stored[16..] == sent[16..]
}

mod net;
#[allow(unused_imports)]
pub use net::*;
