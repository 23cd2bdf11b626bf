//! Seek by timestamp inside one record batch (ListOffsets with a timestamp): Kafka answers the
//! first offset whose *record* timestamp is >= the target (`LogSegment.findOffsetByTimestamp`
//! walks the records of the first batch whose max timestamp reaches it), not the batch's base
//! offset. The batch holds the bytes exactly as the producer sent them, so a compressed batch
//! is decompressed (kafka-protocol's codecs) and its records walked without building them.
//!
//! ```text
//! batch  = base_offset:i64 · length:i32 · leader_epoch:i32 · magic:i8 · crc:u32 · attributes:i16
//!          · last_offset_delta:i32 · base_timestamp:i64 · max_timestamp:i64 · producer_id:i64
//!          · producer_epoch:i16 · base_sequence:i32 · count:i32 · records (compressed or not)
//! record = length:varint · attributes:i8 · timestamp_delta:varlong · offset_delta:varint · …
//! ```

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};

const ATTRIBUTES: usize = 21;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const COUNT: usize = 57;
const RECORDS: usize = 61;
/// Attribute bit 3: LogAppendTime (every record's timestamp is the batch's max timestamp).
const LOG_APPEND_TIME: i16 = 1 << 3;

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Zig-zag varint (at most 10 bytes); None when truncated or too long.
fn varlong(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

/// Walk `count` records: the first with base_timestamp + delta >= `target`, as
/// (offset delta, timestamp).
fn walk(records: &[u8], count: i32, base_timestamp: i64, target: i64) -> Result<Option<(i64, i64)>, String> {
    let mut pos = 0usize;
    for i in 0..count {
        let bad = || format!("record {i} of {count} is malformed");
        let len = varlong(records, &mut pos).ok_or_else(bad)?;
        let start = pos;
        let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).filter(|e| *e <= records.len()).ok_or_else(bad)?;
        pos += 1; // attributes
        let ts_delta = varlong(records, &mut pos).ok_or_else(bad)?;
        let off_delta = varlong(records, &mut pos).ok_or_else(bad)?;
        if pos > end {
            return Err(bad());
        }
        let ts = base_timestamp.saturating_add(ts_delta);
        if ts >= target {
            return Ok(Some((off_delta, ts)));
        }
        pos = end;
    }
    Ok(None)
}

/// The first record of `batch` (one whole v2 batch, as stored) whose timestamp is >= `target`:
/// (its offset, its timestamp). `Ok(None)` when no record reaches it.
pub fn first_at_or_after(batch: &[u8], target: i64) -> Result<Option<(u64, i64)>, String> {
    if batch.len() < RECORDS {
        return Err(format!("batch of {} bytes is shorter than its header", batch.len()));
    }
    let base_offset = be_i64(batch, 0);
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES], batch[ATTRIBUTES + 1]]);
    let base_timestamp = be_i64(batch, BASE_TIMESTAMP);
    let max_timestamp = be_i64(batch, MAX_TIMESTAMP);
    let count = i32::from_be_bytes(batch[COUNT..COUNT + 4].try_into().expect("4 bytes"));
    let to_offset = |(delta, ts): (i64, i64)| (base_offset.saturating_add(delta).max(0) as u64, ts);
    if attributes & LOG_APPEND_TIME != 0 {
        // Every record carries the batch's max timestamp: the first record answers.
        if max_timestamp < target || count <= 0 {
            return Ok(None);
        }
        return Ok(Some(to_offset((0, max_timestamp))));
    }
    let codec = attributes & 0x7;
    if codec == 0 {
        return walk(&batch[RECORDS..], count, base_timestamp, target).map(|o| o.map(to_offset));
    }
    // Compressed: kafka-protocol's codecs (not a hot path: one batch per timestamp lookup).
    let mut body = Bytes::copy_from_slice(&batch[RECORDS..]);
    let run = |b: &mut Bytes| Ok(walk(b, count, base_timestamp, target));
    let r = match codec {
        1 => Gzip::decompress(&mut body, run),
        2 => Snappy::decompress(&mut body, run),
        3 => Lz4::decompress(&mut body, run),
        4 => Zstd::decompress(&mut body, run),
        c => return Err(format!("unknown compression codec {c}")),
    };
    r.map_err(|e| format!("cannot decompress the batch: {e}"))?.map(|o| o.map(to_offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::build;

    #[test]
    fn finds_the_first_record_at_or_after_the_target_inside_one_batch() {
        // 100 records, timestamps 1000, 1010, …, 1990 (deltas 0, 10, …).
        let recs: Vec<build::Rec> =
            (0..100).map(|i| build::Rec { key: None, value: Some(b"v"), timestamp_delta: i * 10 }).collect();
        let mut batch = build::batch_with(&recs, 1000, -1, -1, -1);
        crate::record::patch_base_offset(&mut batch, 500);
        assert_eq!(first_at_or_after(&batch, 1300).unwrap(), Some((530, 1300)));
        assert_eq!(first_at_or_after(&batch, 1301).unwrap(), Some((531, 1310)));
        assert_eq!(first_at_or_after(&batch, 0).unwrap(), Some((500, 1000)));
        assert_eq!(first_at_or_after(&batch, 1990).unwrap(), Some((599, 1990)));
        assert_eq!(first_at_or_after(&batch, 1991).unwrap(), None);
        // Truncated records are an error, not a panic.
        assert!(first_at_or_after(&batch[..80], 1991).is_err());
    }

    #[test]
    fn varlong_decodes_zigzag_and_refuses_overlong_input() {
        let mut p = 0;
        assert_eq!(varlong(&[0x03], &mut p), Some(-2));
        let mut p = 0;
        assert_eq!(varlong(&[0xff; 11], &mut p), None);
    }
}
