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

/// Kafka's `producer.id.expiration.ms`: a producer idle for the window is forgotten (its retry
/// is then a new batch, as in Kafka), one with an open transaction is kept.
#[test]
fn idle_producers_expire_unless_their_transaction_is_open() {
    use engine::log::{now_ms, Notifier};
    let dir = tempfile::tempdir().unwrap();
    let day = 24 * 3600 * 1000;
    let cfg = LogConfig { durability: Durability::Never, producer_id_expiration_ms: Some(day), ..LogConfig::default() };
    let p = Partition::open("t", 0, &dir.path().join("t-0"), Arc::new(UringIo), cfg, Arc::new(Notifier::default())).unwrap();
    p.append(&mut batch(3, 7, 0, 0)).unwrap();
    // A transactional batch of producer 8: its transaction stays open.
    let mut txn = batch(1, 8, 0, 0);
    txn[22] |= 0x10;
    let crc = engine::record::compute_crc(&txn);
    txn[17..21].copy_from_slice(&crc.to_be_bytes());
    p.append(&mut txn).unwrap();
    assert_eq!(p.open_transactions(), vec![(8, 3)]);
    assert_eq!(p.expire_producers(now_ms()), 0, "nobody is idle yet");
    assert!(p.append(&mut batch(3, 7, 0, 0)).unwrap().duplicate);
    assert_eq!(p.expire_producers(now_ms() + day as i64), 1, "producer 7 is idle for the window; 8 has an open transaction");
    assert_eq!(p.producer_state(7), None);
    assert_eq!(p.producer_state(8), Some((0, 0)));
    // Forgotten: its retry is stored as a new batch, and any sequence starts it over.
    let again = p.append(&mut batch(3, 7, 0, 0)).unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.base_offset, 4);
    assert_eq!(p.producer_state(7), Some((0, 2)));
    // Off: nobody expires.
    let cfg = LogConfig { durability: Durability::Never, producer_id_expiration_ms: None, ..LogConfig::default() };
    drop(p);
    let p = Partition::open("t", 0, &dir.path().join("t-0"), Arc::new(UringIo), cfg, Arc::new(Notifier::default())).unwrap();
    assert_eq!(p.expire_producers(i64::MAX), 0);
    assert_eq!(p.producer_state(7), Some((0, 2)));
}
