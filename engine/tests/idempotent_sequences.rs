//! Per-(producer, partition) sequence checks of the idempotent producer, against Kafka's
//! `ProducerAppendInfo.checkSequence` / `ProducerStateEntry.findDuplicateBatch` semantics.

/// The broker's process allocator (`io::sys::GuardedAlloc`), installed by this test binary as the broker
/// binary does (a library never installs one): hostile array counts must not abort it.
#[global_allocator]
static GLOBAL: engine::io::sys::GuardedAlloc = engine::io::sys::GuardedAlloc;

use std::sync::Arc;

use engine::io::UringIo;
use engine::log::{AppendError, Durability, LogConfig, LogManager, Partition};
use engine::record::build::{batch_with, Rec};

fn batch(n: usize, pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let vals: Vec<Vec<u8>> = (0..n).map(|i| format!("s{}", seq as i64 + i as i64).into_bytes()).collect();
    let recs: Vec<Rec<'_>> = vals.iter().map(|v| Rec { key: None, value: Some(v), timestamp_delta: 0 }).collect();
    batch_with(&recs, 1_000, pid, epoch, seq)
}

fn partition() -> (tempfile::TempDir, Arc<LogManager>, Arc<Partition>) {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogManager::open(dir.path(), Arc::new(UringIo), LogConfig { durability: Durability::Never, ..LogConfig::default() })
        .unwrap();
    logs.create_topic("t", 1, None).unwrap();
    let p = logs.partition("t", 0).unwrap();
    (dir, logs, p)
}

#[test]
fn in_order_batches_duplicates_and_gaps() {
    let (_d, _l, p) = partition();
    let a = p.append(&mut batch(3, 7, 0, 0)).unwrap();
    let b = p.append(&mut batch(2, 7, 0, 3)).unwrap();
    assert_eq!((a.base_offset, b.base_offset), (0, 3));
    // A retry of a stored batch is acknowledged with its original offsets, nothing written.
    let dup = p.append(&mut batch(3, 7, 0, 0)).unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.base_offset, dup.last_offset), (0, 2));
    assert_eq!(p.log_end_offset(), 5);
    // A gap is out of order; so is a batch overlapping stored ones with different bounds.
    assert!(matches!(p.append(&mut batch(1, 7, 0, 6)), Err(AppendError::OutOfOrderSequence { expected: 5, got: 6 })));
    assert!(matches!(p.append(&mut batch(1, 7, 0, 4)), Err(AppendError::OutOfOrderSequence { .. })));
    // Only the last five batches are remembered (Kafka's window).
    for seq in 5..11 {
        p.append(&mut batch(1, 7, 0, seq)).unwrap();
    }
    assert!(p.append(&mut batch(1, 7, 0, 6)).unwrap().duplicate);
    assert!(matches!(p.append(&mut batch(1, 7, 0, 5)), Err(AppendError::OutOfOrderSequence { .. })));
    assert_eq!(p.log_end_offset(), 11);
}

#[test]
fn epochs_fence_and_reset_sequences() {
    let (_d, _l, p) = partition();
    p.append(&mut batch(2, 9, 1, 0)).unwrap();
    assert!(matches!(p.append(&mut batch(1, 9, 0, 2)), Err(AppendError::ProducerFenced { current: 1, got: 0 })));
    assert!(matches!(p.append(&mut batch(1, 9, 2, 5)), Err(AppendError::OutOfOrderSequence { expected: 0, got: 5 })));
    p.append(&mut batch(1, 9, 2, 0)).unwrap();
    assert_eq!(p.producer_state(9), Some((2, 0)));
}

#[test]
fn a_producer_without_state_is_accepted_at_any_sequence() {
    // Kafka >= 2.x: "If there is no current producer epoch ... accept writes with any sequence
    // number" (e.g. its batches were deleted by retention). Refusing makes the client resend.
    let (_d, _l, p) = partition();
    let a = p.append(&mut batch(2, 11, 0, 500)).unwrap();
    assert!(!a.duplicate);
    p.append(&mut batch(1, 11, 0, 502)).unwrap();
    assert!(p.append(&mut batch(2, 11, 0, 500)).unwrap().duplicate);
    assert_eq!(p.producer_state(11), Some((0, 502)));
}

#[test]
fn several_batches_of_one_producer_in_one_append_are_checked_in_order() {
    let (_d, _l, p) = partition();
    p.append(&mut batch(1, 5, 0, 0)).unwrap();
    let mut two = batch(2, 5, 0, 1);
    two.extend(batch(3, 5, 0, 3));
    let info = p.append(&mut two).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (1, 5));
    assert_eq!(p.producer_state(5), Some((0, 5)));
    // A gap between the two batches of one append is still refused, and nothing is written.
    let mut gap = batch(1, 5, 0, 6);
    gap.extend(batch(1, 5, 0, 8));
    assert!(matches!(p.append(&mut gap), Err(AppendError::OutOfOrderSequence { expected: 7, got: 8 })));
    assert_eq!(p.log_end_offset(), 6);
}

#[test]
fn sequence_wraps_after_i32_max() {
    let (_d, _l, p) = partition();
    p.append(&mut batch(1, 3, 0, i32::MAX)).unwrap();
    p.append(&mut batch(1, 3, 0, 0)).unwrap();
    assert_eq!(p.producer_state(3), Some((0, 0)));
}
