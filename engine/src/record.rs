//! Kafka record batch v2: header parsing, validation and offset assignment.
//!
//! Pure code: no I/O, no allocation on the validation path. Records inside a batch are never
//! iterated on the append path (compressed batches are stored exactly as produced).
//!
//! ```text
//! offset  size  field                  covered by CRC
//!      0     8  baseOffset             no   (patched by the log on append)
//!      8     4  batchLength            no   (bytes after this field)
//!     12     4  partitionLeaderEpoch   no
//!     16     1  magic (= 2)            no
//!     17     4  crc (CRC-32C)          no
//!     21     2  attributes             yes
//!     23     4  lastOffsetDelta        yes
//!     27     8  baseTimestamp          yes
//!     35     8  maxTimestamp           yes
//!     43     8  producerId             yes
//!     51     2  producerEpoch          yes
//!     53     4  baseSequence           yes
//!     57     4  recordCount            yes
//!     61     …  records                yes
//! ```

/// Size of the fixed batch header (through `recordCount`).
pub const BATCH_HEADER_BYTES: usize = 61;
/// `baseOffset` + `batchLength`: the bytes not counted by `batchLength`.
pub const BATCH_LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

/// Why a batch was refused. Maps to Kafka's CORRUPT_MESSAGE (or INVALID_RECORD) in the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("truncated batch: {have} bytes, need {need}")]
    Truncated { have: usize, need: usize },
    #[error("unsupported magic {0} (only record batch v2 is accepted)")]
    BadMagic(i8),
    #[error("batch length {0} out of bounds")]
    BadLength(i64),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("record count {count} does not match lastOffsetDelta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("empty batch list")]
    Empty,
}

/// Fields of a validated batch header that the log needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    /// Total size in bytes including the 12-byte log overhead.
    pub size_bytes: usize,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchInfo {
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x7) as u8
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    /// Offsets this batch occupies.
    pub fn offset_count(&self) -> u64 {
        self.last_offset_delta as u64 + 1
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
}

#[inline]
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
#[inline]
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
#[inline]
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Size of the batch starting at `buf[0]` as declared by its header (including the 12-byte overhead),
/// or `None` if fewer than 12 bytes are available. Does not validate.
pub fn declared_size(buf: &[u8]) -> Option<i64> {
    if buf.len() < BATCH_LOG_OVERHEAD {
        return None;
    }
    Some(be_i32(buf, 8) as i64 + BATCH_LOG_OVERHEAD as i64)
}

/// Parse the header of the batch at the start of `buf` without checking the CRC.
/// `buf` may hold more bytes after the batch.
pub fn parse_header(buf: &[u8], max_batch_bytes: usize) -> Result<BatchInfo, BatchError> {
    let info = parse_header_only(buf, max_batch_bytes)?;
    if buf.len() < info.size_bytes {
        return Err(BatchError::Truncated { have: buf.len(), need: info.size_bytes });
    }
    Ok(info)
}

/// Parse and check the fixed 61-byte header at the start of `buf` (magic, length bounds, count)
/// without requiring the rest of the batch to be present. Used to walk stored batches by header.
pub fn parse_header_only(buf: &[u8], max_batch_bytes: usize) -> Result<BatchInfo, BatchError> {
    if buf.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated { have: buf.len(), need: BATCH_HEADER_BYTES });
    }
    let magic = buf[16] as i8;
    if magic != 2 {
        return Err(BatchError::BadMagic(magic));
    }
    let size = be_i32(buf, 8) as i64 + BATCH_LOG_OVERHEAD as i64;
    if size < BATCH_HEADER_BYTES as i64 || size > max_batch_bytes as i64 {
        return Err(BatchError::BadLength(size));
    }
    let size = size as usize;
    let info = BatchInfo {
        base_offset: be_i64(buf, 0),
        size_bytes: size,
        attributes: be_i16(buf, 21),
        last_offset_delta: be_i32(buf, 23),
        base_timestamp: be_i64(buf, 27),
        max_timestamp: be_i64(buf, 35),
        producer_id: be_i64(buf, 43),
        producer_epoch: be_i16(buf, 51),
        base_sequence: be_i32(buf, 53),
        record_count: be_i32(buf, 57),
    };
    if info.record_count < 1 || info.last_offset_delta != info.record_count - 1 {
        return Err(BatchError::CountMismatch {
            count: info.record_count,
            last_offset_delta: info.last_offset_delta,
        });
    }
    Ok(info)
}

/// CRC-32C of the CRC-covered part of a complete batch.
#[inline]
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Fully validate the batch at the start of `buf` (header bounds, count, CRC).
pub fn validate(buf: &[u8], max_batch_bytes: usize) -> Result<BatchInfo, BatchError> {
    let info = parse_header(buf, max_batch_bytes)?;
    let batch = &buf[..info.size_bytes];
    let stored = be_u32(batch, 17);
    let computed = compute_crc(batch);
    if stored != computed {
        return Err(BatchError::BadCrc { stored, computed });
    }
    Ok(info)
}

/// Validate every batch in `buf` (which must consist of whole batches only).
/// Returns the batches' infos in order. Nothing is modified.
pub fn validate_all(buf: &[u8], max_batch_bytes: usize) -> Result<Vec<BatchInfo>, BatchError> {
    let mut out = Vec::with_capacity(1);
    let mut at = 0;
    while at < buf.len() {
        let info = validate(&buf[at..], max_batch_bytes)?;
        at += info.size_bytes;
        out.push(info);
    }
    if out.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(out)
}

/// Set `baseOffset` (outside the CRC: the CRC stays valid).
#[inline]
pub fn patch_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Set `partitionLeaderEpoch` (outside the CRC).
#[inline]
pub fn patch_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Builds uncompressed v2 batches. Used by tests, benchmarks and the load generator's encoder.
pub mod build {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    /// A record: key, value and headers-less.
    pub struct Rec<'a> {
        pub key: Option<&'a [u8]>,
        pub value: Option<&'a [u8]>,
        pub timestamp_delta: i64,
    }

    /// Encode an uncompressed batch with the given records and producer fields.
    pub fn batch_with(
        records: &[Rec<'_>],
        base_timestamp: i64,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + records.len() * 32);
        out.resize(BATCH_HEADER_BYTES, 0);
        let mut max_ts = base_timestamp;
        let mut rec = Vec::with_capacity(64);
        for (i, r) in records.iter().enumerate() {
            rec.clear();
            rec.push(0); // attributes
            put_varint(&mut rec, r.timestamp_delta);
            put_varint(&mut rec, i as i64);
            match r.key {
                Some(k) => {
                    put_varint(&mut rec, k.len() as i64);
                    rec.extend_from_slice(k);
                }
                None => put_varint(&mut rec, -1),
            }
            match r.value {
                Some(v) => {
                    put_varint(&mut rec, v.len() as i64);
                    rec.extend_from_slice(v);
                }
                None => put_varint(&mut rec, -1),
            }
            put_varint(&mut rec, 0); // headers
            put_varint(&mut out, rec.len() as i64);
            out.extend_from_slice(&rec);
            max_ts = max_ts.max(base_timestamp + r.timestamp_delta);
        }
        let n = records.len() as i32;
        let batch_length = (out.len() - BATCH_LOG_OVERHEAD) as i32;
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        out[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        out[16] = 2;
        out[21..23].copy_from_slice(&0i16.to_be_bytes());
        out[23..27].copy_from_slice(&(n - 1).to_be_bytes());
        out[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
        out[35..43].copy_from_slice(&max_ts.to_be_bytes());
        out[43..51].copy_from_slice(&producer_id.to_be_bytes());
        out[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
        out[53..57].copy_from_slice(&base_sequence.to_be_bytes());
        out[57..61].copy_from_slice(&n.to_be_bytes());
        let crc = compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// `count` records of `value_len` bytes each (value byte = i as u8), no key, no producer id.
    pub fn simple_batch(count: usize, value_len: usize, base_timestamp: i64) -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; value_len]).collect();
        let recs: Vec<Rec<'_>> = values
            .iter()
            .map(|v| Rec { key: None, value: Some(v), timestamp_delta: 0 })
            .collect();
        batch_with(&recs, base_timestamp, -1, -1, -1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batch_validates_and_patch_keeps_crc() {
        let mut b = build::simple_batch(10, 100, 1_000);
        let info = validate(&b, 1 << 20).unwrap();
        assert_eq!(info.record_count, 10);
        assert_eq!(info.size_bytes, b.len());
        patch_base_offset(&mut b, 123_456);
        patch_leader_epoch(&mut b, 7);
        let info = validate(&b, 1 << 20).unwrap();
        assert_eq!(info.base_offset, 123_456);
        assert_eq!(info.last_offset(), 123_465);
    }

    #[test]
    fn every_bad_input_is_refused() {
        let good = build::simple_batch(3, 10, 0);
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        assert!(matches!(validate(&bad_crc, 1 << 20), Err(BatchError::BadCrc { .. })));
        let mut bad_magic = good.clone();
        bad_magic[16] = 1;
        assert_eq!(validate(&bad_magic, 1 << 20), Err(BatchError::BadMagic(1)));
        assert!(matches!(validate(&good[..good.len() - 1], 1 << 20), Err(BatchError::Truncated { .. })));
        assert!(matches!(validate(&good[..20], 1 << 20), Err(BatchError::Truncated { .. })));
        let mut bad_len = good.clone();
        bad_len[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(validate(&bad_len, 1 << 20), Err(BatchError::BadLength(_))));
        assert!(matches!(validate(&good, 20), Err(BatchError::BadLength(_))));
        let mut bad_count = good.clone();
        bad_count[57..61].copy_from_slice(&5i32.to_be_bytes());
        assert!(matches!(validate(&bad_count, 1 << 20), Err(BatchError::CountMismatch { .. })));
        assert_eq!(validate_all(&[], 1 << 20), Err(BatchError::Empty));
    }

    #[test]
    fn validate_all_walks_concatenated_batches() {
        let mut buf = build::simple_batch(2, 5, 0);
        buf.extend(build::simple_batch(4, 5, 0));
        let infos = validate_all(&buf, 1 << 20).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[1].record_count, 4);
    }
}
