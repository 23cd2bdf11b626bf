//! Malformed produce input is refused with AppendError::Corrupt and leaves stored data untouched.

mod common;

use std::path::Path;

use common::*;
use engine::io::SimIo;
use engine::log::{AppendError, Durability};
use engine::record::BatchError;

#[test]
fn corrupt_batches_are_refused_and_nothing_stored_changes() {
    let sim = SimIo::new();
    let dir = Path::new("/d/t-0");
    let p = open(&sim_io(&sim), dir, &small_cfg(Durability::Group, 1 << 20)).unwrap();
    for i in 0..10 {
        p.append_durable(&mut tagged_batch(i, 3, 30, 1)).unwrap();
    }
    let before = read_all(&p);
    let end = p.log_end_offset();
    let file = dir.join("00000000000000000000.log");
    let durable = sim.durable_contents(&file).unwrap();

    let good = tagged_batch(77, 4, 30, 1);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut b = good.clone();
    *b.last_mut().unwrap() ^= 1;
    cases.push(("bad crc", b));
    let mut b = good.clone();
    b[16] = 1;
    cases.push(("wrong magic", b));
    cases.push(("truncated", good[..good.len() - 3].to_vec()));
    cases.push(("truncated header", good[..30].to_vec()));
    let mut b = good.clone();
    b[57..61].copy_from_slice(&9i32.to_be_bytes());
    cases.push(("count mismatch", b));
    let mut b = good.clone();
    b[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    cases.push(("negative length", b));
    cases.push(("empty", Vec::new()));
    let mut b = good.clone();
    let mut bad = good.clone();
    bad[30] ^= 0x80;
    b.extend_from_slice(&bad);
    cases.push(("good batch followed by a corrupt one", b));
    let mut b = good.clone();
    b.extend_from_slice(&good[..20]);
    cases.push(("trailing garbage", b));

    for (name, mut buf) in cases {
        match p.append_durable(&mut buf) {
            Err(AppendError::Corrupt(e)) => match name {
                "bad crc" => assert!(matches!(e, BatchError::BadCrc { .. })),
                "wrong magic" => assert_eq!(e, BatchError::BadMagic(1)),
                "count mismatch" => assert!(matches!(e, BatchError::CountMismatch { .. })),
                "empty" => assert_eq!(e, BatchError::Empty),
                "truncated" | "truncated header" => assert!(matches!(e, BatchError::Truncated { .. })),
                _ => {}
            },
            other => panic!("{name}: expected AppendError::Corrupt, got {other:?}"),
        }
        assert_eq!(p.log_end_offset(), end, "{name}: no offsets assigned");
    }
    p.flush().unwrap();
    assert_eq!(sim.durable_contents(&file).unwrap(), durable, "stored bytes untouched");
    let after = read_all(&p);
    assert_eq!(after.len(), before.len());
    assert!(after.iter().zip(&before).all(|(a, b)| a.1 == b.1));
    // And the log still takes good input.
    assert_eq!(p.append_durable(&mut good.clone()).unwrap().base_offset, end);
}

#[test]
fn oversized_batch_is_refused() {
    let sim = SimIo::new();
    let mut cfg = small_cfg(Durability::Never, 1 << 20);
    cfg.batch_bytes_max = 1000;
    let p = open(&sim_io(&sim), Path::new("/d/t-0"), &cfg).unwrap();
    let big = tagged_batch(1, 20, 100, 1);
    assert!(matches!(p.append(&mut big.clone()), Err(AppendError::Corrupt(BatchError::BadLength(_)))));
    assert_eq!(p.log_end_offset(), 0);
}
