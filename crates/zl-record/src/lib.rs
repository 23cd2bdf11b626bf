//! Kafka record batch v2: header parsing, validation and offset assignment.
//!
//! Pure code: no I/O. Batches are stored exactly as produced (compressed ones too), but before
//! that [`validate_records`] walks every record (decompressing a compressed batch into a small
//! window, never into one large buffer), as Kafka's LogValidator does: a batch whose CRC is
//! right but whose contents a consumer cannot parse is refused, never stored.
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
#![forbid(unsafe_code)]

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
    #[error("record {index}: {reason}")]
    BadRecord { index: i32, reason: &'static str },
    #[error("{extra} bytes after the last of {count} records")]
    TrailingBytes { count: i32, extra: u64 },
    #[error("{codec} payload cannot be decompressed: {reason}")]
    BadCompression { codec: &'static str, reason: String },
    #[error("records decompress to more than {limit} bytes")]
    DecompressedTooLarge { limit: u64 },
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
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

/// Validate every batch in `buf` (which must consist of whole batches only): header, CRC and
/// every record ([`validate_records`]). Returns the batches' infos in order. Nothing is modified.
pub fn validate_all(buf: &[u8], max_batch_bytes: usize) -> Result<Vec<BatchInfo>, BatchError> {
    validate_all_with(buf, max_batch_bytes, true)
}

/// [`validate_all`], with the record walk optional (`records = false`: header and CRC only; for
/// measuring what the walk costs).
pub fn validate_all_with(buf: &[u8], max_batch_bytes: usize, records: bool) -> Result<Vec<BatchInfo>, BatchError> {
    let mut out = Vec::with_capacity(1);
    let mut at = 0;
    while at < buf.len() {
        let info = validate(&buf[at..], max_batch_bytes)?;
        if records {
            // Right after the CRC: the batch is still in the cache.
            validate_records(&buf[at..at + info.size_bytes], &info)?;
        }
        at += info.size_bytes;
        out.push(info);
    }
    if out.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Record walk (Kafka's DefaultRecord layout, the same for compressed and uncompressed batches):
//
//   length:varint · attributes:i8 · timestampDelta:varlong · offsetDelta:varint
//   · keyLength:varint · key · valueLength:varint · value
//   · headerCount:varint · [headerKeyLength:varint · key · headerValueLength:varint · value]
//
// Hand-written rather than through kafka-protocol's record decoder: this runs on every produced
// batch (the hot path), and the crate's decoder allocates a `Record` (with `Bytes` and a header
// map) per record and decompresses into one unbounded buffer. This walk allocates nothing for an
// uncompressed batch and reads a compressed one through a fixed window.

/// Largest size one batch's records may decompress to: a decompression bomb is refused once it
/// has produced this much, without holding it (the walk reads through a small window). Far
/// above what producers send (librdkafka's `batch.size` is 1 MB of uncompressed records).
pub const DECOMPRESSED_BYTES_MAX: u64 = 64 << 20;
/// Largest zstd window accepted (2^23 = 8 MiB: what zstd levels up to 19 use): a frame declaring
/// a larger one would make the decoder allocate it.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// Window of the streaming decompressors' output, kept per thread and reused (not zeroed and
/// freed per batch). 16 KiB: with C liblz4's decoder a 64 KiB window (lz4's block size) measured
/// slower for large lz4 batches. Reading the decoder's own buffer in place (`BufRead`, no copy)
/// measured slower than this copy: the per-byte refill check then costs more than the memcpy.
const WALK_WINDOW_BYTES: usize = 16 << 10;

thread_local! {
    static WALK_WINDOW: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Why the walk stopped early.
enum Stop {
    /// The records ended before the walk did.
    Eof,
    Fail(BatchError),
}

impl From<BatchError> for Stop {
    fn from(e: BatchError) -> Stop {
        Stop::Fail(e)
    }
}

/// Where the walk reads records from: the batch itself, or a decompressor.
trait Source {
    fn byte(&mut self) -> Result<u8, Stop>;
    fn skip(&mut self, n: u64) -> Result<(), Stop>;
    /// Bytes consumed so far.
    fn pos(&self) -> u64;
    /// Bytes left after the walk (0 = ended exactly); counts at most up to the decompression cap.
    fn rest(&mut self) -> Result<u64, Stop>;
}

struct SliceSource<'a> {
    b: &'a [u8],
    at: usize,
}

impl Source for SliceSource<'_> {
    #[inline]
    fn byte(&mut self) -> Result<u8, Stop> {
        let v = *self.b.get(self.at).ok_or(Stop::Eof)?;
        self.at += 1;
        Ok(v)
    }
    #[inline]
    fn skip(&mut self, n: u64) -> Result<(), Stop> {
        let left = (self.b.len() - self.at) as u64;
        if n > left {
            return Err(Stop::Eof);
        }
        self.at += n as usize;
        Ok(())
    }
    #[inline]
    fn pos(&self) -> u64 {
        self.at as u64
    }
    fn rest(&mut self) -> Result<u64, Stop> {
        Ok((self.b.len() - self.at) as u64)
    }
}

/// A decompressor read through a fixed window; counts what it produced against
/// [`DECOMPRESSED_BYTES_MAX`].
struct ReadSource<R: std::io::Read> {
    r: R,
    codec: &'static str,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    produced: u64,
}

impl<R: std::io::Read> ReadSource<R> {
    fn new(r: R, codec: &'static str) -> Self {
        let mut buf = WALK_WINDOW.with(|w| w.take());
        buf.resize(WALK_WINDOW_BYTES, 0);
        ReadSource { r, codec, buf, lo: 0, hi: 0, produced: 0 }
    }
    /// Refill the window; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, Stop> {
        loop {
            match self.r.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.lo = 0;
                    self.hi = n;
                    self.produced += n as u64;
                    if self.produced > DECOMPRESSED_BYTES_MAX {
                        return Err(Stop::Fail(BatchError::DecompressedTooLarge { limit: DECOMPRESSED_BYTES_MAX }));
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Stop::Fail(BatchError::BadCompression { codec: self.codec, reason: e.to_string() }))
                }
            }
        }
    }
}

impl<R: std::io::Read> Drop for ReadSource<R> {
    fn drop(&mut self) {
        WALK_WINDOW.with(|w| w.set(std::mem::take(&mut self.buf)));
    }
}

impl<R: std::io::Read> Source for ReadSource<R> {
    #[inline]
    fn byte(&mut self) -> Result<u8, Stop> {
        if self.lo == self.hi && !self.fill()? {
            return Err(Stop::Eof);
        }
        let v = self.buf[self.lo];
        self.lo += 1;
        Ok(v)
    }
    fn skip(&mut self, mut n: u64) -> Result<(), Stop> {
        while n > 0 {
            if self.lo == self.hi && !self.fill()? {
                return Err(Stop::Eof);
            }
            let step = n.min((self.hi - self.lo) as u64);
            self.lo += step as usize;
            n -= step;
        }
        Ok(())
    }
    fn pos(&self) -> u64 {
        self.produced - (self.hi - self.lo) as u64
    }
    fn rest(&mut self) -> Result<u64, Stop> {
        let mut extra = (self.hi - self.lo) as u64;
        self.lo = self.hi;
        while self.fill()? {
            extra += (self.hi - self.lo) as u64;
            self.lo = self.hi;
        }
        Ok(extra)
    }
}

/// A zigzag varint of at most `max_bytes` bytes (5 for Kafka's varint, 10 for its varlong).
#[inline]
fn read_varint<S: Source>(s: &mut S, max_bytes: u32) -> Result<i64, Stop> {
    let mut raw: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = s.byte()?;
        raw |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift >= 7 * max_bytes {
            return Err(Stop::Fail(BatchError::BadRecord { index: -1, reason: "varint too long" }));
        }
    }
    if max_bytes <= 5 {
        let raw = raw as u32;
        return Ok(((raw >> 1) as i32 ^ -((raw & 1) as i32)) as i64);
    }
    Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
}

/// A zigzag varint of at most `max_bytes` bytes (5 for Kafka's varint, 10 for its varlong) at
/// `b[*at..]`, advancing `*at` past it: the record walk's own decoder, for code that parses
/// records from a slice. None if the input ends first or the varint is too long.
pub fn read_varint_at(b: &[u8], at: &mut usize, max_bytes: u32) -> Option<i64> {
    let mut s = SliceSource { b, at: *at };
    let v = read_varint(&mut s, max_bytes).ok()?;
    *at = s.at;
    Some(v)
}

/// Walk `count` records; Ok(None) only if each parses, its fields fit in its declared length
/// exactly, offset deltas are 0, 1, 2, ... and nothing follows the last record. With `until` =
/// (timestamp, index), the walk stops at the first record at or after that index whose
/// timestamp is >= it (checked up to there): Ok(Some((its index, its timestamp))).
fn walk_records<S: Source>(
    s: &mut S,
    count: i32,
    base_timestamp: i64,
    until: Option<(i64, i32)>,
) -> Result<Option<(i32, i64)>, BatchError> {
    let mut index = 0;
    let result = (|| -> Result<Option<(i32, i64)>, Stop> {
        let bad = |index: i32, reason: &'static str| Stop::Fail(BatchError::BadRecord { index, reason });
        while index < count {
            let len = read_varint(s, 5)?;
            if len < 0 {
                return Err(bad(index, "negative record length"));
            }
            let start = s.pos();
            let end = start + len as u64;
            let _attributes = s.byte()?;
            let ts_delta = read_varint(s, 10)?;
            let Some(ts) = base_timestamp.checked_add(ts_delta) else {
                return Err(bad(index, "timestamp delta overflows"));
            };
            if read_varint(s, 5)? != index as i64 {
                return Err(bad(index, "offset delta is not the record's index in the batch"));
            }
            if until.is_some_and(|(t, from)| ts >= t && index >= from) {
                return Ok(Some((index, ts)));
            }
            for negative in ["negative key length", "negative value length"] {
                let n = read_varint(s, 5)?;
                if n < -1 {
                    return Err(bad(index, negative));
                }
                if n > 0 {
                    if s.pos() + n as u64 > end {
                        return Err(bad(index, "key or value runs past the record's length"));
                    }
                    s.skip(n as u64)?;
                }
            }
            let headers = read_varint(s, 5)?;
            if headers < 0 {
                return Err(bad(index, "negative header count"));
            }
            for _ in 0..headers {
                let k = read_varint(s, 5)?;
                if k < 0 {
                    return Err(bad(index, "negative header key length"));
                }
                s.skip(k as u64)?;
                let v = read_varint(s, 5)?;
                if v < -1 {
                    return Err(bad(index, "negative header value length"));
                }
                if v > 0 {
                    s.skip(v as u64)?;
                }
                if s.pos() > end {
                    return Err(bad(index, "headers run past the record's length"));
                }
            }
            if s.pos() != end {
                return Err(bad(index, "record length does not match its contents"));
            }
            index += 1;
        }
        let extra = s.rest()?;
        if extra != 0 {
            return Err(Stop::Fail(BatchError::TrailingBytes { count, extra }));
        }
        Ok(None)
    })();
    match result {
        Ok(found) => Ok(found),
        Err(Stop::Eof) => Err(BatchError::BadRecord { index, reason: "records end inside this record" }),
        Err(Stop::Fail(BatchError::BadRecord { index: -1, reason })) => Err(BatchError::BadRecord { index, reason }),
        Err(Stop::Fail(e)) => Err(e),
    }
}

/// xerial snappy-java framing (what Kafka's Java clients write): a 16-byte header, then blocks
/// of `length:u32 · raw snappy`. Kafka also accepts plain raw snappy (librdkafka writes it).
const SNAPPY_JAVA_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";

/// Snappy has no streaming raw format: each block is decompressed whole, after checking its
/// declared length against what is left of [`DECOMPRESSED_BYTES_MAX`].
fn snappy_decompress(data: &[u8]) -> Result<Vec<u8>, BatchError> {
    let bad = |reason: String| BatchError::BadCompression { codec: "snappy", reason };
    let mut out = Vec::new();
    let block = |b: &[u8], out: &mut Vec<u8>| -> Result<(), BatchError> {
        let n = snap::raw::decompress_len(b).map_err(|e| bad(e.to_string()))?;
        if (out.len() + n) as u64 > DECOMPRESSED_BYTES_MAX {
            return Err(BatchError::DecompressedTooLarge { limit: DECOMPRESSED_BYTES_MAX });
        }
        let at = out.len();
        out.resize(at + n, 0);
        let got = snap::raw::Decoder::new().decompress(b, &mut out[at..]).map_err(|e| bad(e.to_string()))?;
        out.truncate(at + got);
        Ok(())
    };
    if data.len() >= 16 && &data[..8] == SNAPPY_JAVA_MAGIC {
        let mut at = 16;
        while at < data.len() {
            let Some(len) = data.get(at..at + 4).map(|l| u32::from_be_bytes(l.try_into().expect("4 bytes")) as usize) else {
                return Err(bad("truncated block length".into()));
            };
            at += 4;
            let Some(b) = data.get(at..at.saturating_add(len)) else {
                return Err(bad("truncated block".into()));
            };
            block(b, &mut out)?;
            at += len;
        }
    } else {
        block(data, &mut out)?;
    }
    Ok(out)
}

/// Walk every record of the complete batch `batch` (whose header `info` was validated),
/// decompressing it if needed. See the module documentation.
pub fn validate_records(batch: &[u8], info: &BatchInfo) -> Result<(), BatchError> {
    walk_batch(batch, info, None).map(|_| ())
}

/// The first record of the complete batch `batch` (header `info`) whose timestamp is >=
/// `target`: (its index in the batch, its timestamp), or None when none reaches it. The records
/// are read as [`validate_records`] reads them (same decompression, same limits, memory bounded
/// by the decoder's window whatever the batch decompresses to) and the walk stops at the answer.
/// Record timestamps only: LogAppendTime is the caller's business.
pub fn first_record_at_or_after(batch: &[u8], info: &BatchInfo, target: i64) -> Result<Option<(i32, i64)>, BatchError> {
    walk_batch(batch, info, Some((target, 0)))
}

/// [`first_record_at_or_after`] among the records from index `from` on (records below a log
/// start offset that falls inside the batch are not answers).
pub fn first_record_at_or_after_from(
    batch: &[u8],
    info: &BatchInfo,
    target: i64,
    from: i32,
) -> Result<Option<(i32, i64)>, BatchError> {
    walk_batch(batch, info, Some((target, from)))
}

/// The records section of the complete batch `batch` (header `info`), decompressed if need be
/// (at most [`DECOMPRESSED_BYTES_MAX`] bytes; a larger one is refused). For the log cleaner,
/// which rewrites records (the produce path walks them through a window instead).
pub fn records_plain<'a>(batch: &'a [u8], info: &BatchInfo) -> Result<std::borrow::Cow<'a, [u8]>, BatchError> {
    use std::io::Read;
    let recs = &batch[BATCH_HEADER_BYTES..info.size_bytes];
    let bad = |codec: &'static str| move |e: std::io::Error| BatchError::BadCompression { codec, reason: e.to_string() };
    let mut out = Vec::new();
    let read = |r: &mut dyn Read, out: &mut Vec<u8>, codec: &'static str| -> Result<(), BatchError> {
        r.take(DECOMPRESSED_BYTES_MAX + 1).read_to_end(out).map_err(bad(codec))?;
        if out.len() as u64 > DECOMPRESSED_BYTES_MAX {
            return Err(BatchError::DecompressedTooLarge { limit: DECOMPRESSED_BYTES_MAX });
        }
        Ok(())
    };
    match info.compression() {
        0 => return Ok(std::borrow::Cow::Borrowed(recs)),
        1 => read(&mut flate2::read::MultiGzDecoder::new(recs), &mut out, "gzip")?,
        2 => out = snappy_decompress(recs)?,
        3 => read(&mut lz4_flex::frame::FrameDecoder::new(recs), &mut out, "lz4")?,
        4 => {
            let mut d = zstd::stream::read::Decoder::with_buffer(recs).map_err(bad("zstd"))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(bad("zstd"))?;
            read(&mut d, &mut out, "zstd")?
        }
        c => return Err(BatchError::UnknownCodec(c)),
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// The one decompressing record walk (Produce validation and seek by timestamp).
fn walk_batch(batch: &[u8], info: &BatchInfo, until: Option<(i64, i32)>) -> Result<Option<(i32, i64)>, BatchError> {
    let recs = &batch[BATCH_HEADER_BYTES..info.size_bytes];
    let count = info.record_count;
    let ts = info.base_timestamp;
    let bad = |codec: &'static str| move |e: std::io::Error| BatchError::BadCompression { codec, reason: e.to_string() };
    match info.compression() {
        0 => walk_records(&mut SliceSource { b: recs, at: 0 }, count, ts, until),
        1 => walk_records(&mut ReadSource::new(flate2::read::MultiGzDecoder::new(recs), "gzip"), count, ts, until),
        2 => {
            let plain = snappy_decompress(recs)?;
            walk_records(&mut SliceSource { b: &plain, at: 0 }, count, ts, until)
        }
        3 => {
            // lz4_flex rather than the `lz4` crate (C liblz4's streaming decoder): measured 2.5×
            // faster here (issue 15; see bench `validate/records/lz4`). It checks the frame's
            // header checksum, block and content checksums, and decodes linked blocks.
            let d = lz4_flex::frame::FrameDecoder::new(recs);
            walk_records(&mut ReadSource::new(d, "lz4"), count, ts, until)
        }
        4 => {
            let mut d = zstd::stream::read::Decoder::with_buffer(recs).map_err(bad("zstd"))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(bad("zstd"))?;
            walk_records(&mut ReadSource::new(d, "zstd"), count, ts, until)
        }
        c => Err(BatchError::UnknownCodec(c)),
    }
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

/// Attribute bit of the timestamp type (set: LogAppendTime).
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;

/// Kafka's `message.timestamp.type=LogAppendTime`: stamp every batch of `buf` (whole batches)
/// with `now` as its max timestamp and set the timestamp-type attribute bit, recomputing the
/// CRC. Only a batch whose CRC checks is stamped: stamping stops at the first one that does
/// not (or is malformed), which the log's own validation then refuses, so a corrupt batch is
/// never given a valid CRC. Returns whether every batch was stamped.
pub fn stamp_log_append_time(buf: &mut [u8], now: i64, max_batch_bytes: usize) -> bool {
    let mut at = 0usize;
    while at < buf.len() {
        let Ok(info) = validate(&buf[at..], max_batch_bytes) else { return false };
        let batch = &mut buf[at..at + info.size_bytes];
        batch[21..23].copy_from_slice(&(info.attributes | ATTR_LOG_APPEND_TIME).to_be_bytes());
        batch[35..43].copy_from_slice(&now.to_be_bytes());
        let crc = compute_crc(batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        at += info.size_bytes;
    }
    true
}

/// Append `v` as a zigzag varint (Kafka's record fields): the one encoder the batch builder and
/// the log cleaner's rewrite share.
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Builds uncompressed v2 batches. Used by tests, benchmarks and the load generator's encoder.
pub mod build {
    use super::*;

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

    /// Compress `data` with Kafka codec `codec` (1 gzip, 2 snappy (raw, as librdkafka writes
    /// it), 3 lz4 (frame format), 4 zstd).
    pub fn compress(codec: u8, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match codec {
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).expect("in-memory gzip");
                e.finish().expect("in-memory gzip")
            }
            2 => snap::raw::Encoder::new().compress_vec(data).expect("in-memory snappy"),
            3 => {
                let mut e = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4 encoder");
                e.write_all(data).expect("in-memory lz4");
                let (out, r) = e.finish();
                r.expect("in-memory lz4");
                out
            }
            4 => zstd::encode_all(data, 3).expect("in-memory zstd"),
            c => panic!("no such codec {c}"),
        }
    }

    /// An LZ4 frame of `data` with 64 KiB blocks, linked or independent, with or without block
    /// and content checksums (the frame's options a decoder must handle).
    pub fn lz4_frame(data: &[u8], linked: bool, block_checksums: bool, content_checksum: bool) -> Vec<u8> {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        use std::io::Write;
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(if linked { BlockMode::Linked } else { BlockMode::Independent })
            .block_checksums(block_checksums)
            .content_checksum(content_checksum);
        let mut e = FrameEncoder::with_frame_info(info, Vec::new());
        e.write_all(data).expect("in-memory lz4");
        e.finish().expect("in-memory lz4")
    }

    /// The batch `plain` (built above) with `payload` as its records section and codec `codec`
    /// in its attributes, length and CRC recomputed: a well-formed header over any payload.
    pub fn reframe(plain: &[u8], codec: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = plain[..BATCH_HEADER_BYTES].to_vec();
        out.extend_from_slice(payload);
        let batch_length = (out.len() - BATCH_LOG_OVERHEAD) as i32;
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        let attributes = (be_i16(&out, 21) & !0x7) | codec as i16;
        out[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// The uncompressed batch `plain` compressed with `codec`.
    pub fn compressed(plain: &[u8], codec: u8) -> Vec<u8> {
        reframe(plain, codec, &compress(codec, &plain[BATCH_HEADER_BYTES..]))
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
    fn read_varint_at_decodes_what_put_varint_writes_and_refuses_short_or_long_input() {
        let values = [0i64, 1, -1, 63, -64, 64, 300, -300, i32::MAX as i64, i32::MIN as i64];
        let mut buf = Vec::new();
        for v in values {
            put_varint(&mut buf, v);
        }
        put_varint(&mut buf, i64::MIN);
        let mut at = 0;
        for v in values {
            assert_eq!(read_varint_at(&buf, &mut at, 5), Some(v));
        }
        assert_eq!(read_varint_at(&buf, &mut at, 10), Some(i64::MIN));
        assert_eq!(at, buf.len());
        // Input ending inside a varint, and a varint longer than allowed.
        let mut at = 0;
        assert_eq!(read_varint_at(&[0x80, 0x80], &mut at, 5), None);
        let mut at = 0;
        assert_eq!(read_varint_at(&[0x80; 6], &mut at, 5), None);
        // A varlong (10 bytes) is too long for a varint.
        let mut at = 0;
        assert_eq!(read_varint_at(&buf[buf.len() - 10..], &mut at, 5), None);
    }

    #[test]
    fn log_append_time_stamps_valid_batches_only() {
        let mut two = build::simple_batch(3, 10, 1_000);
        two.extend(build::simple_batch(2, 10, 2_000));
        assert!(stamp_log_append_time(&mut two, 9_999, 1 << 20));
        let infos = validate_all(&two, 1 << 20).expect("still valid");
        for i in &infos {
            assert_eq!(i.max_timestamp, 9_999);
            assert_ne!(i.attributes & ATTR_LOG_APPEND_TIME, 0);
        }
        let mut bad = build::simple_batch(1, 10, 1_000);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(!stamp_log_append_time(&mut bad, 9_999, 1 << 20));
        assert!(validate(&bad, 1 << 20).is_err(), "a corrupt batch keeps its bad CRC");
    }

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
    fn records_of_every_codec_validate() {
        let plain = build::batch_with(
            &[
                build::Rec { key: Some(b"k1"), value: Some(&[7; 100]), timestamp_delta: 0 },
                build::Rec { key: None, value: None, timestamp_delta: 5 },
                build::Rec { key: Some(b""), value: Some(b"v"), timestamp_delta: -3 },
            ],
            1_000,
            -1,
            -1,
            -1,
        );
        validate_all(&plain, 1 << 20).unwrap();
        for codec in 1..=4 {
            let b = build::compressed(&plain, codec);
            let infos = validate_all(&b, 1 << 20).unwrap_or_else(|e| panic!("codec {codec}: {e}"));
            assert_eq!(infos[0].compression(), codec);
            assert_eq!(infos[0].record_count, 3);
        }
        // Java's snappy framing (xerial): header, then length-prefixed raw blocks.
        let raw = build::compress(2, &plain[BATCH_HEADER_BYTES..]);
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        framed.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        framed.extend_from_slice(&raw);
        validate_all(&build::reframe(&plain, 2, &framed), 1 << 20).unwrap();
    }

    /// A batch with a valid CRC whose records a consumer cannot parse.
    #[test]
    fn broken_records_under_a_valid_crc_are_refused() {
        let plain = build::simple_batch(5, 10, 0);
        let recs = &plain[BATCH_HEADER_BYTES..];
        // Each record: len(1) attr(1) ts(1) off(1) key=-1 (1) vlen(1) value(10) headers(1) = 16 + 1.
        assert_eq!(recs.len(), 5 * 17);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut r = recs.to_vec();
            f(&mut r);
            build::reframe(&plain, 0, &r)
        };
        let refused = |b: &[u8]| validate_all(b, 1 << 20).unwrap_err();
        // Record length one too large / too small.
        assert!(matches!(refused(&with(&|r| r[0] = 34)), BatchError::BadRecord { index: 0, .. }));
        assert!(matches!(refused(&with(&|r| r[17] = 30)), BatchError::BadRecord { index: 1, .. }));
        // Key length 5 (zigzag 10) where the key is null: runs into the value.
        assert!(matches!(refused(&with(&|r| r[4] = 10)), BatchError::BadRecord { index: 0, .. }));
        // Key length -2.
        assert!(matches!(refused(&with(&|r| r[4] = 3)), BatchError::BadRecord { index: 0, .. }));
        // Offset delta 3 in record 1.
        assert!(matches!(refused(&with(&|r| r[17 + 3] = 6)), BatchError::BadRecord { index: 1, .. }));
        // Negative header count.
        assert!(matches!(refused(&with(&|r| r[16] = 1)), BatchError::BadRecord { index: 0, .. }));
        // Varint too long.
        assert!(matches!(refused(&with(&|r| r[2..8].fill(0xff))), BatchError::BadRecord { index: 0, .. }));
        // Fewer records than the header says; bytes after the last one.
        assert!(matches!(refused(&with(&|r| r.truncate(4 * 17))), BatchError::BadRecord { index: 4, .. }));
        assert!(matches!(refused(&with(&|r| r.push(0))), BatchError::TrailingBytes { count: 5, extra: 1 }));
        // Garbage under every codec; an unknown codec.
        for codec in 1..=4 {
            let e = refused(&build::reframe(&plain, codec, b"this is not compressed at all, not even a little"));
            assert!(matches!(e, BatchError::BadCompression { .. } | BatchError::BadRecord { .. }), "codec {codec}: {e}");
            // Well compressed, broken records inside.
            let inner = with(&|r| r[0] = 34);
            let e = refused(&build::compressed(&inner, codec));
            assert!(matches!(e, BatchError::BadRecord { index: 0, .. }), "codec {codec}: {e}");
        }
        assert_eq!(refused(&build::reframe(&plain, 5, recs)), BatchError::UnknownCodec(5));
    }

    /// 100 MiB of zeros compress to ~100 KiB: refused once 64 MiB came out, holding only a window.
    #[test]
    fn decompression_bombs_are_refused() {
        let plain = build::simple_batch(1, 10, 0);
        let zeros = vec![0u8; (DECOMPRESSED_BYTES_MAX + (1 << 20)) as usize];
        for codec in 1..=4 {
            let bomb = build::reframe(&plain, codec, &build::compress(codec, &zeros));
            assert!(bomb.len() < 8 << 20, "codec {codec}: {} bytes", bomb.len());
            let e = validate_all(&bomb, 16 << 20).unwrap_err();
            // Zeros parse as records (length 0 is refused first) or hit the cap.
            assert!(matches!(e, BatchError::DecompressedTooLarge { .. } | BatchError::BadRecord { .. }), "codec {codec}: {e}");
        }
        // A record stream that is valid until the cap: one record whose value is 70 MiB.
        let big = vec![1u8; (DECOMPRESSED_BYTES_MAX + (6 << 20)) as usize];
        let plain = build::batch_with(&[build::Rec { key: None, value: Some(&big), timestamp_delta: 0 }], 0, -1, -1, -1);
        for codec in 1..=4 {
            let bomb = build::compressed(&plain, codec);
            let e = validate_all(&bomb, 16 << 20).unwrap_err();
            assert_eq!(e, BatchError::DecompressedTooLarge { limit: DECOMPRESSED_BYTES_MAX }, "codec {codec}");
        }
    }

    /// LZ4 frames with independent or linked 64 KiB blocks, with and without block and content
    /// checksums (and liblz4's defaults: linked, content checksum, what `build::compress`
    /// writes), several blocks each; a flipped checksum byte is refused.
    #[test]
    fn lz4_frame_variants_and_checksums() {
        let plain = build::simple_batch(2_000, 100, 0); // ~220 KiB: 4 blocks of 64 KiB
        let recs = &plain[BATCH_HEADER_BYTES..];
        let frame = |linked, block_checksums, content_checksum| build::lz4_frame(recs, linked, block_checksums, content_checksum);
        for (name, payload) in [
            ("independent+block", frame(false, true, false)),
            ("independent", frame(false, false, false)),
            ("linked+content", frame(true, false, true)),
            ("lz4 crate", build::compress(3, recs)),
        ] {
            validate_all(&build::reframe(&plain, 3, &payload), 1 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // Last byte of a block-checksummed frame's first block checksum: header 7 bytes, then
        // block length (4), block, checksum (4).
        let mut java = frame(false, true, false);
        let first = u32::from_le_bytes(java[7..11].try_into().unwrap()) as usize & 0x7fff_ffff;
        java[7 + 4 + first + 3] ^= 1;
        let e = validate_all(&build::reframe(&plain, 3, &java), 1 << 20).unwrap_err();
        assert!(matches!(e, BatchError::BadCompression { codec: "lz4", .. }), "{e}");
        // Content checksum: the frame's last 4 bytes.
        let mut content = frame(true, false, true);
        *content.last_mut().unwrap() ^= 1;
        let e = validate_all(&build::reframe(&plain, 3, &content), 1 << 20).unwrap_err();
        assert!(matches!(e, BatchError::BadCompression { codec: "lz4", .. }), "{e}");
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
