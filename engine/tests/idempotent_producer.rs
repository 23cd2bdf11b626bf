//! Idempotent producer sequence handling: duplicates, gaps, fencing — and all of it after reopen,
//! including state that lives only in sealed segments with trusted indexes.

mod common;

use std::path::Path;

use common::*;
use engine::io::{CrashMode, SimIo};
use engine::log::{AppendError, Durability};

const PID: i64 = 4242;

#[test]
fn duplicates_are_detected_and_gaps_refused() {
    let sim = SimIo::new();
    let p = open(&sim_io(&sim), Path::new("/d/t-0"), &small_cfg(Durability::Group, 1 << 20)).unwrap();
    assert!(matches!(
        p.append(&mut idempotent_batch(1, 2, 10, 1, PID, 0, 5)),
        Err(AppendError::UnknownProducer(PID))
    ));
    let first = p.append_durable(&mut idempotent_batch(1, 3, 10, 1, PID, 0, 0)).unwrap();
    let second = p.append_durable(&mut idempotent_batch(2, 2, 10, 1, PID, 0, 3)).unwrap();
    let end = p.log_end_offset();
    // A retry of the stored batch: acknowledged with the original offsets, nothing written.
    let dup = p.append_durable(&mut idempotent_batch(1, 3, 10, 1, PID, 0, 0)).unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.base_offset, dup.last_offset), (first.base_offset, first.last_offset));
    let dup = p.append_durable(&mut idempotent_batch(2, 2, 10, 1, PID, 0, 3)).unwrap();
    assert_eq!(dup.base_offset, second.base_offset);
    assert_eq!(p.log_end_offset(), end);
    // A gap in sequence numbers.
    assert!(matches!(
        p.append(&mut idempotent_batch(3, 1, 10, 1, PID, 0, 9)),
        Err(AppendError::OutOfOrderSequence { expected: 5, got: 9 })
    ));
    // Two batches of one producer in one append: the second follows the first.
    let mut two = idempotent_batch(4, 2, 10, 1, PID, 0, 5);
    two.extend(idempotent_batch(5, 1, 10, 1, PID, 0, 7));
    p.append_durable(&mut two).unwrap();
    assert_eq!(p.producer_state(PID), Some((0, 7)));
    // A new epoch starts at 0; the old epoch is fenced.
    assert!(matches!(
        p.append(&mut idempotent_batch(6, 1, 10, 1, PID, 1, 3)),
        Err(AppendError::OutOfOrderSequence { expected: 0, got: 3 })
    ));
    p.append_durable(&mut idempotent_batch(6, 1, 10, 1, PID, 1, 0)).unwrap();
    assert!(matches!(
        p.append(&mut idempotent_batch(7, 1, 10, 1, PID, 0, 8)),
        Err(AppendError::ProducerFenced { current: 1, got: 0 })
    ));
}

#[test]
fn producer_state_survives_reopen_and_crash_across_sealed_segments() {
    let sim = SimIo::new();
    let dir = Path::new("/d/t-0");
    let cfg = small_cfg(Durability::Group, 2048);
    let p = open(&sim_io(&sim), dir, &cfg).unwrap();
    let mut seq = 0;
    for i in 0..4 {
        p.append_durable(&mut idempotent_batch(i, 2, 20, 1, PID, 3, seq)).unwrap();
        seq += 2;
    }
    let last = idempotent_batch(9, 2, 20, 1, PID, 3, seq);
    let last_info = p.append_durable(&mut last.clone()).unwrap();
    seq += 2;
    // Plenty of other traffic so the producer's batches end up in old, sealed segments.
    for i in 0..100 {
        p.append_durable(&mut tagged_batch(100 + i, 3, 40, 1)).unwrap();
    }
    assert!(p.segment_count() > 5);
    p.close().unwrap();
    drop(p);

    for (how, io) in [("clean reopen", sim_io(&sim)), ("crash", sim_io(&sim.crash(CrashMode::Tear, 3)))] {
        let r = open(&io, dir, &cfg).unwrap();
        assert_eq!(r.producer_state(PID), Some((3, seq - 1)), "{how}");
        let dup = r.append_durable(&mut last.clone()).unwrap();
        assert!(dup.duplicate, "{how}: retry after reopen is a duplicate");
        assert_eq!(dup.base_offset, last_info.base_offset);
        assert!(matches!(
            r.append(&mut idempotent_batch(10, 1, 20, 1, PID, 3, seq + 1)),
            Err(AppendError::OutOfOrderSequence { .. })
        ));
        r.append_durable(&mut idempotent_batch(10, 1, 20, 1, PID, 3, seq)).unwrap();
        assert!(matches!(
            r.append(&mut idempotent_batch(11, 1, 20, 1, PID, 2, 0)),
            Err(AppendError::ProducerFenced { .. })
        ));
    }
}
