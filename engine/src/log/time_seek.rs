//! Seek by timestamp inside one record batch (ListOffsets with a timestamp): Kafka answers the
//! first offset whose *record* timestamp is >= the target (`LogSegment.findOffsetByTimestamp`
//! walks the records of the first batch whose max timestamp reaches it), not the batch's base
//! offset. The batch holds the bytes exactly as the producer sent them, so a compressed batch
//! is decompressed as a stream and its records walked without building them: memory stays at
//! the decoder's buffers whatever the batch decompresses to (a batch with a valid CRC may still
//! be a decompression bomb), and the walk stops at the first record that answers.
//!
//! ```text
//! batch  = base_offset:i64 · length:i32 · leader_epoch:i32 · magic:i8 · crc:u32 · attributes:i16
//!          · last_offset_delta:i32 · base_timestamp:i64 · max_timestamp:i64 · producer_id:i64
//!          · producer_epoch:i16 · base_sequence:i32 · count:i32 · records (compressed or not)
//! record = length:varint · attributes:i8 · timestamp_delta:varlong · offset_delta:varint · …
//! ```

use std::io::{self, BufRead, BufReader, Read};

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Snappy};

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

/// Zig-zag varint (at most 10 bytes) from a stream; None when truncated or too long. Counts
/// the bytes it read into `used`.
fn varlong(r: &mut impl BufRead, used: &mut u64) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).ok()?;
        *used += 1;
        v |= ((b[0] & 0x7f) as u64).checked_shl(shift)?;
        if b[0] & 0x80 == 0 {
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

/// Walk `count` records of a (decompressed) record stream: the first with base_timestamp +
/// delta >= `target`, as (offset delta, timestamp). Only each record's first fields are read;
/// the rest is skipped through a small buffer.
fn walk(records: impl Read, count: i32, base_timestamp: i64, target: i64) -> Result<Option<(i64, i64)>, String> {
    let mut r = BufReader::with_capacity(16 << 10, records);
    for i in 0..count {
        let bad = || format!("record {i} of {count} is malformed");
        let mut used = 0u64;
        let len = u64::try_from(varlong(&mut r, &mut used).ok_or_else(bad)?).map_err(|_| bad())?;
        used = 0;
        let mut attributes = [0u8; 1];
        r.read_exact(&mut attributes).map_err(|_| bad())?;
        used += 1;
        let ts_delta = varlong(&mut r, &mut used).ok_or_else(bad)?;
        let off_delta = varlong(&mut r, &mut used).ok_or_else(bad)?;
        let rest = len.checked_sub(used).ok_or_else(bad)?;
        let ts = base_timestamp.saturating_add(ts_delta);
        if ts >= target {
            return Ok(Some((off_delta, ts)));
        }
        if io::copy(&mut r.by_ref().take(rest), &mut io::sink()).map_err(|e| format!("{}: {e}", bad()))? != rest {
            return Err(bad());
        }
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
    let body = &batch[RECORDS..];
    let found = match attributes & 0x7 {
        0 => walk(body, count, base_timestamp, target),
        1 => walk(flate2::read::MultiGzDecoder::new(body), count, base_timestamp, target),
        2 => {
            // Snappy (rare; xerial framing or raw): kafka-protocol's codec, which decompresses
            // the whole batch in memory.
            let run = |b: &mut Bytes| Ok(walk(&b[..], count, base_timestamp, target));
            Snappy::decompress(&mut Bytes::copy_from_slice(body), run).map_err(|e| format!("cannot decompress the batch: {e}"))?
        }
        3 => walk(lz4::Decoder::new(body).map_err(|e| format!("cannot decompress the batch: {e}"))?, count, base_timestamp, target),
        4 => walk(zstd::stream::read::Decoder::new(body).map_err(|e| format!("cannot decompress the batch: {e}"))?, count, base_timestamp, target),
        c => return Err(format!("unknown compression codec {c}")),
    };
    found.map(|o| o.map(to_offset))
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
        let mut used = 0;
        assert_eq!(varlong(&mut &[0x03u8][..], &mut used), Some(-2));
        assert_eq!(used, 1);
        assert_eq!(varlong(&mut &[0xffu8; 11][..], &mut used), None);
    }

    /// The same 100 records compressed with each codec Kafka clients use (built with
    /// kafka-protocol's encoder), and a zstd batch of a few KiB whose first record holds 64 MiB:
    /// it is skipped through the walker's 16 KiB buffer (by construction: no step of the walk
    /// holds more than one buffer of decompressed bytes), and the second record answers.
    #[test]
    fn compressed_batches_are_walked_as_streams() {
        use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
        let records: Vec<Record> = (0..100)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32, // offset - sequence constant: the encoder keeps one batch
                timestamp: 5_000 + 10 * i,
                key: None,
                value: Some(Bytes::from(vec![b'x'; 50])),
                headers: Default::default(),
            })
            .collect();
        for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut buf = bytes::BytesMut::new();
            RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
            let mut batch = buf.to_vec();
            let info = crate::record::validate(&batch, 1 << 20).unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!((info.record_count, info.size_bytes), (100, batch.len()), "{compression:?}: one batch");
            crate::record::patch_base_offset(&mut batch, 1_000);
            assert_eq!(first_at_or_after(&batch, 5_300).unwrap(), Some((1_030, 5_300)), "{compression:?}");
            assert_eq!(first_at_or_after(&batch, 5_291).unwrap(), Some((1_030, 5_300)), "{compression:?}");
            assert_eq!(first_at_or_after(&batch, 5_991).unwrap(), None, "{compression:?}");
        }
        // Bomb: record 0 (timestamp delta 0) carries a 1 GiB value of zeros; record 1 answers.
        let mut plain = Vec::new();
        let big: u64 = 64 << 20;
        let mut rec0 = vec![0u8, 0, 0, 1]; // attributes, ts delta 0, offset delta 0, key null (-1)
        let mut value_len = Vec::new();
        crate::wire::put_uvarint(&mut value_len, big << 1); // zig-zag varint
        rec0.extend(&value_len);
        let rec0_len = rec0.len() as u64 + big + 1; // + value + header count
        crate::wire::put_uvarint(&mut plain, rec0_len << 1);
        plain.extend(&rec0);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, &plain).unwrap();
        let zero = vec![0u8; 1 << 20];
        for _ in 0..64 {
            std::io::Write::write_all(&mut enc, &zero).unwrap();
        }
        // Record 0's header count, then record 1 (7 bytes: attributes, timestamp delta 5,
        // offset delta 1, null key, 1-byte value, no headers).
        std::io::Write::write_all(&mut enc, &[0, 14, 0, 10, 2, 1, 2, b'v', 0]).unwrap();
        let compressed = enc.finish().unwrap();
        let mut batch = vec![0u8; RECORDS];
        batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&4i16.to_be_bytes());
        batch[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&7_000i64.to_be_bytes());
        batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&7_005i64.to_be_bytes());
        batch[COUNT..COUNT + 4].copy_from_slice(&2i32.to_be_bytes());
        batch.extend(&compressed);
        assert!(compressed.len() < 1 << 20, "the bomb is small: {} bytes", compressed.len());
        assert_eq!(first_at_or_after(&batch, 7_001).unwrap(), Some((1, 7_005)));
    }
}
