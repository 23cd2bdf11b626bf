//! Offsets relative to a segment's base are u32 (the indexes' fields): a batch whose offsets
//! would not fit the active segment rolls it first (Kafka's roll on offset overflow), an append
//! that cannot fit even a segment of its own is refused cleanly, and reads and recovery return
//! the right offsets on both sides of the roll. Batches claiming ~2^31 offsets each (headers
//! only: record validation off, as `LogConfig::validate_records = false` allows) reach the
//! boundary through the real append path in a few appends. On SimIo and on a real disk.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use engine::io::{Io, SimIo, UringIo};
use engine::log::{AppendError, Durability, LogConfig, Partition};
use engine::record;

/// Offsets a batch claiming the largest record count takes (record count = lastOffsetDelta+1
/// = i32::MAX).
const HUGE: u64 = i32::MAX as u64;

/// A one-record batch whose header claims `count` records (CRC recomputed): it takes `count`
/// offsets. Only accepted with record validation off.
fn claiming(tag: u64, count: u64) -> Vec<u8> {
    let mut b = tagged_batch(tag, 1, 16, 1_000);
    let n = count as i32;
    b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
    b[57..61].copy_from_slice(&n.to_be_bytes());
    let crc = record::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn cfg() -> LogConfig {
    LogConfig { validate_records: false, ..small_cfg(Durability::Group, 1 << 20) }
}

/// (base offset, offsets taken) of every batch appended, in order.
type Sent = Vec<(u64, u64)>;

fn append(p: &Partition, sent: &mut Sent, tag: u64, count: u64) {
    let info = p.append_durable(&mut claiming(tag, count)).unwrap_or_else(|e| panic!("append of {count} offsets: {e}"));
    assert_eq!(info.last_offset - info.base_offset + 1, count);
    sent.push((info.base_offset, count));
}

/// Every batch reads back at its base offset, at its last offset and (for a huge one) in its
/// middle, and a full read walks them all in order.
fn check(p: &Partition, sent: &Sent) {
    let (last_base, last_count) = *sent.last().unwrap();
    assert_eq!(p.log_end_offset(), last_base + last_count);
    assert_eq!(p.high_watermark(), p.log_end_offset());
    for &(base, count) in sent {
        for off in [base, base + count / 2, base + count - 1] {
            let bytes = p.read_copy(off as i64, 1).unwrap_or_else(|e| panic!("read at {off}: {e}"));
            let batches = split_batches(&bytes);
            assert_eq!(batches[0].0.base_offset as u64, base, "read at {off} must start at the batch holding it");
        }
    }
    let all = read_all(p);
    let got: Sent = all.iter().map(|(i, _)| (i.base_offset as u64, i.offset_count())).collect();
    assert_eq!(&got, sent);
}

fn run(io: &Arc<dyn Io>, dir: &Path, delete_indexes: impl Fn()) {
    let p = open(io, dir, &cfg()).unwrap();
    let mut sent = Sent::new();
    // Two batches of ~2^31 offsets: offsets 0 ..= 2^32 - 3 in the first segment.
    append(&p, &mut sent, 1, HUGE);
    append(&p, &mut sent, 2, HUGE);
    assert_eq!(p.log_end_offset(), 2 * HUGE);
    // Relative offsets u32::MAX - 1 and u32::MAX: still representable, no roll.
    append(&p, &mut sent, 3, 1);
    append(&p, &mut sent, 4, 1);
    assert_eq!(sent[3].0, u32::MAX as u64);
    assert_eq!(p.segment_count(), 1, "a batch whose offsets fit the active segment must not roll it");
    // Relative offset 2^32: does not fit; the segment rolls at that offset.
    append(&p, &mut sent, 5, 1);
    assert_eq!(sent[4].0, 1 << 32);
    assert_eq!(p.segment_count(), 2, "a batch whose offsets do not fit the active segment must roll it");
    // A huge batch fits the new segment.
    append(&p, &mut sent, 6, HUGE);
    assert_eq!(p.segment_count(), 2);
    // A huge batch whose last offset does not fit (relative 2^31 + 2^31 - 2 + ... > u32::MAX).
    append(&p, &mut sent, 7, HUGE);
    append(&p, &mut sent, 8, HUGE);
    assert_eq!(p.segment_count(), 3, "a batch whose last offset does not fit must roll");
    assert_eq!(sent[7].0, sent[6].0 + HUGE);
    check(&p, &sent);

    // An append of three huge batches cannot fit any segment: refused, nothing written.
    let end = p.log_end_offset();
    let mut three: Vec<u8> = [9, 10, 11].iter().flat_map(|&t| claiming(t, HUGE)).collect();
    match p.append(&mut three) {
        Err(AppendError::TooManyOffsets { base, count }) => {
            assert_eq!((base, count), (end, 3 * HUGE));
        }
        other => panic!("an append spanning more than 2^32 offsets must be refused, got {other:?}"),
    }
    assert_eq!(p.log_end_offset(), end);
    assert_eq!(p.segment_count(), 3, "a refused append rolls nothing");
    assert!(!p.is_poisoned());
    append(&p, &mut sent, 12, 3);
    check(&p, &sent);

    // Recovery: from the checkpointed indexes, then with the indexes gone (rebuilt by scanning).
    p.close().unwrap();
    drop(p);
    let p = open(io, dir, &cfg()).unwrap();
    assert_eq!(p.segment_count(), 3);
    check(&p, &sent);
    p.close().unwrap();
    drop(p);
    delete_indexes();
    let p = open(io, dir, &cfg()).unwrap();
    assert_eq!(p.segment_count(), 3);
    check(&p, &sent);
    append(&p, &mut sent, 13, 1);
    check(&p, &sent);
}

#[test]
fn offset_overflow_rolls_the_segment_and_reads_and_recovery_return_the_right_offsets_simio() {
    let sim = SimIo::new();
    let io = sim_io(&sim);
    let dir = Path::new("/data/t-0");
    run(&io, dir, || {
        for name in io.list_dir(dir).unwrap() {
            if name.ends_with(".index") || name.ends_with(".timeindex") {
                io.remove_file(&dir.join(name)).unwrap();
            }
        }
    });
}

#[test]
fn offset_overflow_rolls_the_segment_and_reads_and_recovery_return_the_right_offsets_real_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let dir = tmp.path().join("t-0");
    run(&io, &dir, || {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "index" || x == "timeindex") {
                std::fs::remove_file(path).unwrap();
            }
        }
    });
}
