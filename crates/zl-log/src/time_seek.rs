//! Seek by timestamp inside one record batch (ListOffsets with a timestamp): Kafka answers the
//! first offset whose *record* timestamp is >= the target (`LogSegment.findOffsetByTimestamp`
//! walks the records of the first batch whose max timestamp reaches it), not the batch's base
//! offset. The batch holds the bytes exactly as the producer sent them; its records are walked
//! by [`zl_record::first_record_at_or_after`], the same decompressing walk Produce validates
//! with (same codecs, same decompression limits): memory stays at the decoder's window whatever
//! the batch decompresses to (a batch with a valid CRC may still be a decompression bomb), and
//! the walk stops at the first record that answers.

use zl_record as record;

/// The first record of `batch` (one whole v2 batch, as stored) whose timestamp is >= `target`:
/// (its offset, its timestamp). `Ok(None)` when no record reaches it.
pub fn first_at_or_after(batch: &[u8], target: i64) -> Result<Option<(u64, i64)>, String> {
    first_at_or_after_from(batch, target, 0)
}

/// [`first_at_or_after`] among the records at offset `from` or later (the log start offset
/// may fall inside a batch: the records below it are deleted).
pub fn first_at_or_after_from(batch: &[u8], target: i64, from: u64) -> Result<Option<(u64, i64)>, String> {
    let info = record::parse_header(batch, batch.len()).map_err(|e| format!("stored batch: {e}"))?;
    let to_offset = |(index, ts): (i32, i64)| (info.base_offset.saturating_add(index as i64).max(0) as u64, ts);
    // Index of the first record at or after `from` (0 when the batch starts there or later).
    let first = from.saturating_sub(info.base_offset.max(0) as u64).min(i32::MAX as u64) as i32;
    if first > info.last_offset_delta {
        return Ok(None);
    }
    if info.attributes & record::ATTR_LOG_APPEND_TIME != 0 {
        // Every record carries the batch's max timestamp: the first record answers.
        if info.max_timestamp < target {
            return Ok(None);
        }
        return Ok(Some(to_offset((first, info.max_timestamp))));
    }
    let found =
        record::first_record_at_or_after_from(batch, &info, target, first).map_err(|e| format!("stored batch: {e}"))?;
    Ok(found.map(to_offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zl_record::build;
    use bytes::Bytes;

    #[test]
    fn finds_the_first_record_at_or_after_the_target_inside_one_batch() {
        // 100 records, timestamps 1000, 1010, …, 1990 (deltas 0, 10, …).
        let recs: Vec<build::Rec> =
            (0..100).map(|i| build::Rec { key: None, value: Some(b"v"), timestamp_delta: i * 10 }).collect();
        let mut batch = build::batch_with(&recs, 1000, -1, -1, -1);
        zl_record::patch_base_offset(&mut batch, 500);
        assert_eq!(first_at_or_after(&batch, 1300).unwrap(), Some((530, 1300)));
        assert_eq!(first_at_or_after(&batch, 1301).unwrap(), Some((531, 1310)));
        assert_eq!(first_at_or_after(&batch, 0).unwrap(), Some((500, 1000)));
        assert_eq!(first_at_or_after(&batch, 1990).unwrap(), Some((599, 1990)));
        assert_eq!(first_at_or_after(&batch, 1991).unwrap(), None);
        // From a log start inside the batch: records below it are no answer.
        assert_eq!(first_at_or_after_from(&batch, 0, 550).unwrap(), Some((550, 1500)));
        assert_eq!(first_at_or_after_from(&batch, 1300, 520).unwrap(), Some((530, 1300)));
        assert_eq!(first_at_or_after_from(&batch, 1300, 400).unwrap(), Some((530, 1300)));
        assert_eq!(first_at_or_after_from(&batch, 0, 600).unwrap(), None);
        // Truncated records are an error, not a panic.
        assert!(first_at_or_after(&batch[..80], 1991).is_err());
    }

    /// The same 100 records compressed with each codec Kafka clients use (built with
    /// kafka-protocol's encoder), and a zstd batch of a few KiB whose first record holds 60 MiB
    /// (under the walk's 64 MiB decompression cap): it is skipped through the walker's 16 KiB
    /// window (by construction: no step of the walk holds more than one window of decompressed
    /// bytes), and the second record answers.
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
            let info = zl_record::validate(&batch, 1 << 20).unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!((info.record_count, info.size_bytes), (100, batch.len()), "{compression:?}: one batch");
            zl_record::patch_base_offset(&mut batch, 1_000);
            assert_eq!(first_at_or_after(&batch, 5_300).unwrap(), Some((1_030, 5_300)), "{compression:?}");
            assert_eq!(first_at_or_after(&batch, 5_291).unwrap(), Some((1_030, 5_300)), "{compression:?}");
            assert_eq!(first_at_or_after(&batch, 5_991).unwrap(), None, "{compression:?}");
        }
        // Bomb: record 0 (timestamp delta 0) carries a 60 MiB value of zeros; record 1 answers.
        // Past the walk's 64 MiB cap (70 MiB), the same batch is refused rather than walked.
        for (mib, answer) in [(60u64, true), (70, false)] {
            let mut plain = Vec::new();
            let big: u64 = mib << 20;
            let mut rec0 = vec![0u8, 0, 0, 1]; // attributes, ts delta 0, offset delta 0, key null (-1)
            let mut value_len = Vec::new();
            zl_record::put_varint(&mut value_len, big as i64); // zig-zag varint
            rec0.extend(&value_len);
            let rec0_len = rec0.len() as u64 + big + 1; // + value + header count
            zl_record::put_varint(&mut plain, rec0_len as i64);
            plain.extend(&rec0);
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            std::io::Write::write_all(&mut enc, &plain).unwrap();
            let zero = vec![0u8; 1 << 20];
            for _ in 0..mib {
                std::io::Write::write_all(&mut enc, &zero).unwrap();
            }
            // Record 0's header count, then record 1 (7 bytes: attributes, timestamp delta 5,
            // offset delta 1, null key, 1-byte value, no headers).
            std::io::Write::write_all(&mut enc, &[0, 14, 0, 10, 2, 1, 2, b'v', 0]).unwrap();
            let compressed = enc.finish().unwrap();
            // A real header (2 records, timestamps 7000 and 7005, zstd) over the hand-made payload.
            let two = [0, 5].map(|d| build::Rec { key: None, value: Some(b"v"), timestamp_delta: d });
            let batch = build::reframe(&build::batch_with(&two, 7_000, -1, -1, -1), 4, &compressed);
            assert!(compressed.len() < 1 << 20, "the bomb is small: {} bytes", compressed.len());
            let found = first_at_or_after(&batch, 7_001);
            if answer {
                assert_eq!(found.unwrap(), Some((1, 7_005)));
            } else {
                let e = found.unwrap_err();
                assert!(e.contains("decompress to more than"), "{e}");
            }
        }
    }
}
