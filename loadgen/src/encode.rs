//! Hot-path record generation: payload pool, keys, and a record batch v2 encoder that writes
//! records straight into the batch buffer (no per-record allocation) and stamps each value's
//! first 8 bytes with the record's intended send time (wall-clock µs, big-endian) for end-to-end
//! latency. Output is byte-compatible with `zl_record::build` (tested below).

use zl_record::{compute_crc, BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD};
use rand::{Rng, SeedableRng};

use crate::produce::{Codec, Compressor};
use crate::workload::{KeyDistributor, Workload};

/// Small, fast PRNG for the hot path (xorshift64*).
#[derive(Debug, Clone)]
pub struct FastRng(u64);

impl FastRng {
    pub fn new(seed: u64) -> FastRng {
        FastRng(seed | 1)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0), Lemire's multiply-shift.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Pre-generated random payloads (OMB's `randomizedPayloadPoolSize`), so generating a record
/// costs one copy, not random number generation.
pub struct PayloadPool {
    payloads: Vec<Vec<u8>>,
}

impl PayloadPool {
    pub fn new(size: usize, count: usize, random_ratio: f64, seed: u64) -> PayloadPool {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let random_len = ((size as f64) * random_ratio.clamp(0.0, 1.0)).round() as usize;
        let payloads = (0..count.max(1))
            .map(|_| {
                let mut p = vec![0u8; size];
                rng.fill(&mut p[..random_len]);
                p
            })
            .collect();
        PayloadPool { payloads }
    }
    pub fn from_file_bytes(bytes: Vec<u8>) -> PayloadPool {
        PayloadPool { payloads: vec![bytes] }
    }
    pub fn for_workload(w: &Workload, seed: u64) -> Result<PayloadPool, String> {
        match &w.payload_file {
            Some(f) => {
                let bytes = std::fs::read(f).map_err(|e| format!("cannot read payloadFile {f:?}: {e}"))?;
                if bytes.is_empty() || bytes.len() > crate::workload::MESSAGE_SIZE_MAX as usize {
                    return Err(format!("payloadFile {f:?} has {} bytes; want 1..=16 MiB", bytes.len()));
                }
                Ok(PayloadPool::from_file_bytes(bytes))
            }
            None => Ok(PayloadPool::new(
                w.message_size as usize,
                w.randomized_payload_pool_size as usize,
                w.random_bytes_ratio.unwrap_or(1.0),
                seed,
            )),
        }
    }
    pub fn message_size(&self) -> usize {
        self.payloads[0].len()
    }
    #[inline]
    pub fn get(&self, i: u64) -> &[u8] {
        &self.payloads[(i % self.payloads.len() as u64) as usize]
    }
    pub fn len(&self) -> usize {
        self.payloads.len()
    }
    /// The longest payload's length.
    pub fn max_len(&self) -> usize {
        self.payloads.iter().map(Vec::len).max().unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }
}

/// Kafka's default partitioner hash (murmur2, as in `org.apache.kafka.common.utils.Utils`).
pub fn murmur2(data: &[u8]) -> i32 {
    let len = data.len();
    let m: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= k >> 24;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(m);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    h as i32
}

/// Kafka's partition for a key: `toPositive(murmur2(key)) % partitions`.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

/// Chooses keys (and so partitions) per the workload's key distributor.
pub struct KeyGen {
    kind: KeyDistributor,
    keys: Vec<Vec<u8>>,
    key_partition: Vec<u32>,
    /// Zipf CDF over key ranks (only for `Zipf`).
    cdf: Vec<f64>,
    rr: u64,
    rng: FastRng,
    partitions: u32,
    sticky: u32,
}

impl KeyGen {
    pub fn new(kind: KeyDistributor, key_space: u32, zipf_exponent: f64, partitions: u32, seed: u64) -> KeyGen {
        let n = if kind == KeyDistributor::NoKey { 0 } else { key_space as usize };
        let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("key-{i}").into_bytes()).collect();
        let key_partition = keys.iter().map(|k| partition_for(k, partitions)).collect();
        let mut cdf = Vec::new();
        if kind == KeyDistributor::Zipf {
            let mut sum = 0.0;
            for r in 1..=n {
                sum += 1.0 / (r as f64).powf(zipf_exponent);
                cdf.push(sum);
            }
            for c in &mut cdf {
                *c /= sum;
            }
        }
        KeyGen { kind, keys, key_partition, cdf, rr: 0, rng: FastRng::new(seed), partitions, sticky: (seed % partitions as u64) as u32 }
    }

    /// Next record's key index (None = no key) and partition. For `NoKey` the partition is the
    /// current sticky one; call [`KeyGen::advance_sticky`] when its batch is closed.
    #[inline]
    pub fn next_key(&mut self) -> (Option<u32>, u32) {
        let k = match self.kind {
            KeyDistributor::NoKey => return (None, self.sticky),
            KeyDistributor::RoundRobin => {
                let k = self.rr % self.keys.len() as u64;
                self.rr += 1;
                k as usize
            }
            KeyDistributor::Random => self.rng.below(self.keys.len() as u64) as usize,
            KeyDistributor::Zipf => {
                let u = self.rng.unit();
                self.cdf.partition_point(|&c| c < u).min(self.keys.len() - 1)
            }
        };
        (Some(k as u32), self.key_partition[k])
    }

    pub fn key(&self, k: u32) -> &[u8] {
        &self.keys[k as usize]
    }

    pub fn is_sticky(&self) -> bool {
        self.kind == KeyDistributor::NoKey
    }

    /// The partition the sticky distributor (no key) currently fills.
    pub fn sticky_partition(&self) -> u32 {
        self.sticky
    }

    pub fn advance_sticky(&mut self) {
        self.sticky = (self.sticky + 1) % self.partitions;
    }
}

#[inline]
fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Zig-zag varint appended to `out`, as record fields are encoded (`put_varint_at` is the encoder).
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut b = [0u8; 10];
    let n = put_varint_at(&mut b, 0, v);
    out.extend_from_slice(&b[..n]);
}

/// Zig-zag varint of `v` written at `out[at..]`; returns the position after it. `out` must
/// have room for 10 bytes from `at` (the caller's fixed stack buffers do).
#[inline]
fn put_varint_at(out: &mut [u8], mut at: usize, v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out[at] = (z as u8) | 0x80;
        z >>= 7;
        at += 1;
    }
    out[at] = z as u8;
    at + 1
}

/// What every batch of a producer carries beyond its records: the codec, the records' headers
/// section and, for the idempotent producer, its id and epoch.
#[derive(Debug, Clone)]
pub struct BatchFormat {
    pub codec: Codec,
    /// Encoded headers section of each record (count varint + pairs); `[0]` = no headers.
    pub headers: Vec<u8>,
    /// -1 = not idempotent.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Transactional producer: the batches carry attribute bit 4 (isTransactional).
    pub transactional: bool,
}

impl Default for BatchFormat {
    fn default() -> BatchFormat {
        BatchFormat { codec: Codec::None, headers: vec![0], producer_id: -1, producer_epoch: -1, transactional: false }
    }
}

/// Compression done while closing one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Compressed {
    pub records: u64,
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub ns: u64,
}

/// An open batch for one partition.
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    base_ts_ms: i64,
    format: BatchFormat,
    /// The next batch's base sequence (idempotent producer; per partition, wraps at i32::MAX).
    next_seq: i32,
    compressor: Option<Compressor>,
    scratch: Vec<u8>,
    /// The last closed batch's compression (None when the codec is none).
    pub last_compression: Option<Compressed>,
    /// Intended send time (ns on the run clock) of each record, in order.
    pub intended: Vec<u64>,
    /// Clock reading when the first record was appended (for linger).
    pub opened_ns: u64,
    pub value_bytes: u64,
}

impl BatchBuilder {
    pub fn new(capacity: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(capacity + BATCH_HEADER_BYTES + 64);
        buf.resize(BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_ts_ms: 0,
            format: BatchFormat::default(),
            next_seq: 0,
            compressor: None,
            scratch: Vec::new(),
            last_compression: None,
            intended: Vec::new(),
            opened_ns: 0,
            value_bytes: 0,
        }
    }

    /// A builder whose batches carry `format` (codec, headers, producer id/epoch).
    pub fn with_format(capacity: usize, format: BatchFormat) -> BatchBuilder {
        let mut b = BatchBuilder::new(capacity);
        b.compressor = (format.codec != Codec::None).then(|| Compressor::new(format.codec));
        b.format = format;
        b
    }

    /// The base sequence the next closed batch gets.
    pub fn next_sequence(&self) -> i32 {
        self.next_seq
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Append one record. `stamp_us` overwrites the value's first 8 bytes (if it has 8).
    /// Hand-written on the generator's hot path (every record passes here): the fields before
    /// the key and before the value are put together on the stack and appended with one copy
    /// each, instead of a capacity-checked push per byte.
    #[inline]
    pub fn append(&mut self, key: Option<&[u8]>, value: &[u8], stamp_us: u64, intended_ns: u64, now_ns: u64, now_ms: i64) {
        if self.count == 0 {
            self.base_ts_ms = now_ms;
            self.opened_ns = now_ns;
        }
        let delta = self.count as i64;
        let klen = key.map_or(-1, |k| k.len() as i64);
        let vlen = value.len() as i64;
        let hdrs = self.format.headers.len();
        let body = 1 + 1 + varint_len(delta) + varint_len(klen) + key.map_or(0, |k| k.len()) + varint_len(vlen)
            + value.len()
            + hdrs;
        // length, attributes, timestampDelta = 0, offsetDelta, key length: at most 5 + 1 + 1 +
        // 10 + 10 bytes.
        let mut head = [0u8; 32];
        let mut n = put_varint_at(&mut head, 0, body as i64);
        head[n] = 0; // attributes
        head[n + 1] = 0; // timestampDelta
        n = put_varint_at(&mut head, n + 2, delta);
        n = put_varint_at(&mut head, n, klen);
        let b = &mut self.buf;
        b.reserve(body + 5);
        b.extend_from_slice(&head[..n]);
        if let Some(k) = key {
            b.extend_from_slice(k);
        }
        let mut vhead = [0u8; 10];
        let vn = put_varint_at(&mut vhead, 0, vlen);
        b.extend_from_slice(&vhead[..vn]);
        let at = b.len();
        b.extend_from_slice(value);
        if value.len() >= 8 {
            b[at..at + 8].copy_from_slice(&stamp_us.to_be_bytes());
        }
        b.extend_from_slice(&self.format.headers);
        self.count += 1;
        self.value_bytes += value.len() as u64;
        self.intended.push(intended_ns);
    }

    /// Close the batch: fill the header and CRC. Returns the batch bytes and the records'
    /// intended times; the builder is left empty for reuse.
    pub fn finish(&mut self) -> (Vec<u8>, Vec<u64>, u64) {
        let cap = self.buf.capacity();
        self.finish_into(Vec::with_capacity(cap), Vec::new())
    }

    /// As [`BatchBuilder::finish`], continuing in recycled buffers (no allocation, no page
    /// faults on fresh memory on the hot path).
    /// With a codec, the records section is compressed here (timed into `last_compression`).
    pub fn finish_into(&mut self, mut next: Vec<u8>, mut next_intended: Vec<u64>) -> (Vec<u8>, Vec<u64>, u64) {
        assert!(self.count > 0, "finish of an empty batch");
        next.clear();
        next_intended.clear();
        let mut out = std::mem::replace(&mut self.buf, next);
        self.buf.resize(BATCH_HEADER_BYTES, 0);
        let n = self.count as i32;
        self.last_compression = None;
        if let Some(c) = &mut self.compressor {
            let t0 = std::time::Instant::now();
            self.scratch.clear();
            let raw = out.len() - BATCH_HEADER_BYTES;
            match c.compress(&out[BATCH_HEADER_BYTES..], &mut self.scratch) {
                Ok(()) => {
                    out.truncate(BATCH_HEADER_BYTES);
                    out.extend_from_slice(&self.scratch);
                    self.last_compression = Some(Compressed {
                        records: n as u64,
                        raw_bytes: raw as u64,
                        compressed_bytes: self.scratch.len() as u64,
                        ns: t0.elapsed().as_nanos() as u64,
                    });
                }
                // The codecs fail only on allocation-level problems: send this batch
                // uncompressed (still a valid batch) rather than lose it; the result's
                // compression counters show fewer compressed batches than batches.
                Err(e) => tracing::warn!("{e}; batch sent uncompressed"),
            }
        }
        let codec_bits = if self.last_compression.is_some() { self.format.codec.attribute_bits() } else { 0 };
        let codec_bits = codec_bits | if self.format.transactional { 0x10 } else { 0 };
        let (pid, epoch, seq) = if self.format.producer_id >= 0 {
            let seq = self.next_seq;
            // Kafka's sequences wrap from i32::MAX to 0.
            self.next_seq = ((self.next_seq as i64 + n as i64) % (i32::MAX as i64 + 1)) as i32;
            (self.format.producer_id, self.format.producer_epoch, seq)
        } else {
            (-1, -1, -1)
        };
        let batch_length = (out.len() - BATCH_LOG_OVERHEAD) as i32;
        out[0..8].copy_from_slice(&0i64.to_be_bytes());
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        out[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        out[16] = 2;
        out[21..23].copy_from_slice(&codec_bits.to_be_bytes());
        out[23..27].copy_from_slice(&(n - 1).to_be_bytes());
        out[27..35].copy_from_slice(&self.base_ts_ms.to_be_bytes());
        out[35..43].copy_from_slice(&self.base_ts_ms.to_be_bytes());
        out[43..51].copy_from_slice(&pid.to_be_bytes());
        out[51..53].copy_from_slice(&epoch.to_be_bytes());
        out[53..57].copy_from_slice(&seq.to_be_bytes());
        out[57..61].copy_from_slice(&n.to_be_bytes());
        let crc = compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        let intended = std::mem::replace(&mut self.intended, next_intended);
        let value_bytes = self.value_bytes;
        self.count = 0;
        self.value_bytes = 0;
        (out, intended, value_bytes)
    }
}

/// Decode a zig-zag varint at `at`; returns (value, next position).
/// The one-byte case inline (most record fields: attributes, deltas, key length): the consumer
/// walks every record it reads with this.
#[inline(always)]
pub fn get_varint(b: &[u8], at: usize) -> Option<(i64, usize)> {
    let byte = *b.get(at)?;
    if byte < 0x80 {
        let z = byte as u64;
        return Some((((z >> 1) as i64) ^ -((z & 1) as i64), at + 1));
    }
    get_varint_long(b, at)
}

#[inline(never)]
fn get_varint_long(b: &[u8], mut at: usize) -> Option<(i64, usize)> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *b.get(at)?;
        at += 1;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some((((z >> 1) as i64) ^ -((z & 1) as i64), at))
}

/// One record as read back from a batch.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: u32,
    /// The record's offset (batch base offset + its offset delta).
    pub offset: i64,
}

/// Parse `count` records from a (decompressed) records section; stops at the first malformed one.
fn walk_records(r: &[u8], base_offset: i64, count: u64, n: &mut u64, f: &mut impl FnMut(RecordView<'_>)) {
    let mut p = 0usize;
    for _ in 0..count {
        let Some((len, q)) = get_varint(r, p) else { return };
        let end = q + len.max(0) as usize;
        if len < 0 || end > r.len() {
            return;
        }
        let rec = &r[..end];
        // attributes(1), timestampDelta, offsetDelta, key, value, headers
        let mut at = q + 1;
        let Some((_, a)) = get_varint(rec, at) else { return };
        let Some((offset_delta, a)) = get_varint(rec, a) else { return };
        at = a;
        let Some((klen, a)) = get_varint(rec, at) else { return };
        let key = if klen >= 0 {
            let Some(k) = rec.get(a..a + klen as usize) else { return };
            at = a + klen as usize;
            Some(k)
        } else {
            at = a;
            None
        };
        let Some((vlen, a)) = get_varint(rec, at) else { return };
        let Some(value) = (vlen >= 0).then(|| rec.get(a..a + vlen as usize)).flatten() else { return };
        at = a + vlen as usize;
        let headers = get_varint(rec, at).map_or(0, |(h, _)| h.max(0) as u32);
        f(RecordView { key, value, headers, offset: base_offset + offset_delta });
        *n += 1;
        p = end;
    }
}

/// Walk the whole batches in a Fetch response's records and call `f` for each user record
/// (compressed batches are decompressed). Returns (records, bytes of whole batches, next
/// offset). A trailing partial batch is ignored (Kafka allows it). A compressed batch that does
/// not decompress counts its records without visiting them.
pub fn for_each_record(records: &[u8], f: impl FnMut(RecordView<'_>)) -> (u64, u64, Option<i64>) {
    for_each_committed_record(records, &mut AbortedFilter::default(), f)
}

/// A read_committed consumer's view of one partition's Fetch answer, as Kafka's consumer: the
/// answer lists the aborted transactions (producer id, first offset) overlapping the records;
/// a transactional batch of such a producer, from that first offset up to the producer's abort
/// control batch, belongs to the aborted transaction and is skipped. Empty (nothing skipped)
/// for a read_uncommitted answer, which lists none.
#[derive(Debug, Default)]
pub struct AbortedFilter {
    /// Aborted transactions not reached yet: (first offset, producer id), ascending.
    pending: Vec<(i64, i64)>,
    /// Producers whose aborted transaction is open at the read position.
    aborting: std::collections::HashSet<i64>,
}

impl AbortedFilter {
    /// From a Fetch answer's `aborted_transactions`: (producer id, first offset).
    pub fn new(aborted: impl IntoIterator<Item = (i64, i64)>) -> AbortedFilter {
        let mut pending: Vec<(i64, i64)> = aborted.into_iter().map(|(pid, first)| (first, pid)).collect();
        pending.sort_unstable();
        pending.dedup();
        // Consumed from the front: keep it reversed so the next one is the last.
        pending.reverse();
        AbortedFilter { pending, aborting: Default::default() }
    }

    /// Whether the batch (its last offset, producer id, attributes) is skipped; called for each
    /// batch in log order. Control batches are skipped too (they hold no user records); an
    /// abort marker ends its producer's aborted transaction.
    pub fn skip(&mut self, last_offset: i64, producer: i64, attributes: i16) -> bool {
        let control = attributes & 0x20 != 0;
        let transactional = attributes & 0x10 != 0;
        if !transactional {
            return control;
        }
        while let Some(&(_, pid)) = self.pending.last().filter(|(first, _)| *first <= last_offset) {
            self.pending.pop();
            self.aborting.insert(pid);
        }
        if control {
            self.aborting.remove(&producer);
            return true;
        }
        self.aborting.contains(&producer)
    }
}

/// [`for_each_record`] skipping the batches `filter` skips (aborted transactions); the next
/// offset still goes past them.
pub fn for_each_committed_record(records: &[u8], filter: &mut AbortedFilter, mut f: impl FnMut(RecordView<'_>)) -> (u64, u64, Option<i64>) {
    let mut at = 0usize;
    let mut n = 0u64;
    let mut next_offset = None;
    while records.len() - at >= BATCH_HEADER_BYTES {
        let b = &records[at..];
        let size = i32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize + BATCH_LOG_OVERHEAD;
        if size < BATCH_HEADER_BYTES || size > b.len() {
            break;
        }
        let batch = &b[..size];
        let base_offset = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
        let last_delta = i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes"));
        next_offset = Some(base_offset + last_delta as i64 + 1);
        let count = i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes")).max(0) as u64;
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        let producer = i64::from_be_bytes(batch[43..51].try_into().expect("8 bytes"));
        let body = &batch[BATCH_HEADER_BYTES..];
        if filter.skip(base_offset + last_delta as i64, producer, attributes) {
            // a control batch (no user records) or one of an aborted transaction
        } else if attributes & 0x7 != 0 {
            let codec = Codec::ALL.get((attributes & 0x7) as usize).copied();
            match codec.map(|c| crate::produce::decompress(c, body)) {
                Some(Ok(plain)) => walk_records(&plain, base_offset, count, &mut n, &mut f),
                _ => n += count,
            }
        } else {
            walk_records(body, base_offset, count, &mut n, &mut f);
        }
        at += size;
    }
    (n, at as u64, next_offset)
}

/// The offset after the last whole batch in a Fetch answer's records (batch headers only; a
/// trailing partial batch is ignored, as in [`for_each_record`]).
pub fn next_offset(records: &[u8]) -> Option<i64> {
    let mut at = 0usize;
    let mut next = None;
    while records.len() - at >= BATCH_HEADER_BYTES {
        let b = &records[at..];
        let size = i32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize + BATCH_LOG_OVERHEAD;
        if size < BATCH_HEADER_BYTES || size > b.len() {
            break;
        }
        let base_offset = i64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
        let last_delta = i32::from_be_bytes(b[23..27].try_into().expect("4 bytes"));
        next = Some(base_offset + last_delta as i64 + 1);
        at += size;
    }
    next
}

/// [`for_each_record`] visiting values only.
pub fn for_each_value(records: &[u8], mut f: impl FnMut(&[u8])) -> (u64, u64, Option<i64>) {
    for_each_record(records, |r| f(r.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zl_record::build;

    /// read_committed: the batches of an aborted transaction (interleaved with another
    /// producer's committed one) are skipped up to its abort marker; the producer's next
    /// transaction, the other producer's and non-transactional records count; control batches
    /// never do; the next offset goes past everything.
    #[test]
    fn aborted_filter_skips_only_the_aborted_transaction() {
        let batch = |base: i64, pid: i64, n: usize, attributes: i16| {
            let v = [1u8; 10];
            let recs: Vec<build::Rec<'_>> = (0..n).map(|_| build::Rec { key: None, value: Some(&v[..]), timestamp_delta: 0 }).collect();
            let mut b = build::batch_with(&recs, 0, pid, 0, 0);
            b[0..8].copy_from_slice(&base.to_be_bytes());
            b[21..23].copy_from_slice(&attributes.to_be_bytes());
            b
        };
        let (txn, control) = (0x10, 0x30);
        let log: Vec<u8> = [
            batch(0, 7, 2, txn),     // pid 7: aborted
            batch(2, 8, 2, txn),     // pid 8: committed
            batch(4, 7, 1, control), // pid 7's abort marker
            batch(5, 8, 1, control), // pid 8's commit marker
            batch(6, 7, 2, txn),     // pid 7's next transaction (not aborted)
            batch(8, 9, 3, 0),       // not transactional
        ]
        .concat();
        let mut offsets = Vec::new();
        let (n, whole, next) = for_each_committed_record(&log, &mut AbortedFilter::new([(7, 0)]), |r| offsets.push(r.offset));
        assert_eq!((n, whole, next), (7, log.len() as u64, Some(11)));
        assert_eq!(offsets, vec![2, 3, 6, 7, 8, 9, 10]);
        // Read from the middle of the aborted transaction (first offset before the answer).
        let from2 = &log[batch(0, 7, 2, txn).len()..];
        assert_eq!(for_each_committed_record(from2, &mut AbortedFilter::new([(7, 0)]), |_| ()).0, 7);
        // read_uncommitted lists nothing: every data record counts, control batches still not.
        assert_eq!(for_each_record(&log, |_| ()).0, 9);
    }

    #[test]
    fn encoder_matches_engine_builder() {
        let values: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; 100 + i]).collect();
        let key = b"key-7".to_vec();
        let mut b = BatchBuilder::new(1 << 16);
        for (i, v) in values.iter().enumerate() {
            let k = if i % 2 == 0 { Some(&key[..]) } else { None };
            // stamp the same bytes the value already has so the output is comparable
            let stamp = u64::from_be_bytes(v[..8].try_into().unwrap());
            b.append(k, v, stamp, i as u64, 0, 1_000);
        }
        let (ours, intended, vb) = b.finish();
        assert_eq!(intended, (0..50).collect::<Vec<u64>>());
        assert_eq!(vb, values.iter().map(|v| v.len() as u64).sum::<u64>());
        let recs: Vec<build::Rec<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| build::Rec { key: if i % 2 == 0 { Some(&key[..]) } else { None }, value: Some(v), timestamp_delta: 0 })
            .collect();
        let theirs = build::batch_with(&recs, 1_000, -1, -1, -1);
        assert_eq!(ours, theirs);
        zl_record::validate(&ours, 1 << 20).unwrap();
        // decode it back
        let mut seen = Vec::new();
        let (n, bytes, next) = for_each_value(&ours, |v| seen.push(v.to_vec()));
        assert_eq!((n, bytes as usize, next), (50, ours.len(), Some(50)));
        assert_eq!(seen, values);
    }

    /// Every codec, with keys, headers and producer id/epoch/sequences, decodes with an
    /// independent decoder (kafka-protocol's, which checks the CRC) to the records appended, and
    /// with the engine's Produce validation (header, CRC, every record decompressed and walked); sequences advance per partition batch by batch.
    #[test]
    fn compressed_idempotent_batches_with_headers_decode_independently() {
        use crate::produce::ProducerSettings;
        let headers = ProducerSettings { headers: 3, header_value_bytes: 5, ..Default::default() }.headers_section();
        for codec in Codec::ALL {
            let format = BatchFormat { codec, headers: headers.clone(), producer_id: 4242, producer_epoch: 7, transactional: false };
            let mut b = BatchBuilder::with_format(1 << 16, format);
            let mut expected_seq = 0;
            for batch_no in 0..3 {
                assert_eq!(b.next_sequence(), expected_seq);
                let n = 20 + batch_no * 7;
                for i in 0..n {
                    let key = format!("key-{i}");
                    b.append(Some(key.as_bytes()), &[(i % 7) as u8; 64], u64::from_be_bytes([(i % 7) as u8; 8]), i as u64, 0, 5_000);
                }
                let (batch, _, _) = b.finish();
                assert_eq!(b.last_compression.is_some(), codec != Codec::None, "{codec:?}");
                zl_record::validate_all(&batch, 1 << 20).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
                let attrs = i16::from_be_bytes([batch[21], batch[22]]);
                assert_eq!(attrs & 7, codec as i16);
                let mut buf = bytes::Bytes::from(batch.clone());
                let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
                    .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
                assert_eq!(set.records.len(), n as usize);
                for (i, r) in set.records.iter().enumerate() {
                    assert_eq!(r.producer_id, 4242);
                    assert_eq!(r.producer_epoch, 7);
                    assert_eq!(r.sequence, expected_seq + i as i32, "{codec:?}");
                    assert_eq!(r.offset, i as i64);
                    assert_eq!(r.timestamp, 5_000);
                    assert_eq!(r.key.as_deref(), Some(format!("key-{i}").as_bytes()));
                    assert_eq!(r.value.as_deref(), Some(&[(i % 7) as u8; 64][..]));
                    let hs: Vec<(String, usize)> =
                        r.headers.iter().map(|(k, v)| (k.to_string(), v.as_ref().map_or(0, |v| v.len()))).collect();
                    assert_eq!(hs, vec![("h0".into(), 5), ("h1".into(), 5), ("h2".into(), 5)]);
                }
                // And the loadgen's own reader.
                let mut keys = Vec::new();
                let (m, _, _) = for_each_record(&batch, |r| {
                    assert_eq!(r.headers, 3);
                    keys.push(String::from_utf8(r.key.unwrap().to_vec()).unwrap());
                });
                assert_eq!(m, n as u64);
                assert_eq!(keys, (0..n).map(|i| format!("key-{i}")).collect::<Vec<_>>());
                expected_seq += n;
            }
        }
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut b = BatchBuilder::with_format(1024, BatchFormat { producer_id: 1, producer_epoch: 0, ..Default::default() });
        b.next_seq = i32::MAX - 1;
        for _ in 0..3 {
            b.append(None, b"v", 0, 0, 0, 0);
        }
        let (batch, _, _) = b.finish();
        assert_eq!(i32::from_be_bytes(batch[53..57].try_into().unwrap()), i32::MAX - 1);
        assert_eq!(b.next_sequence(), 1, "MAX-1, MAX, 0 used; next is 1");
    }

    #[test]
    fn stamp_lands_in_value_prefix() {
        let mut b = BatchBuilder::new(1024);
        b.append(None, &[0u8; 100], 0x0102_0304_0506_0708, 0, 0, 0);
        let (batch, _, _) = b.finish();
        let mut got = 0;
        for_each_value(&batch, |v| got = u64::from_be_bytes(v[..8].try_into().unwrap()));
        assert_eq!(got, 0x0102_0304_0506_0708);
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let mut g = KeyGen::new(KeyDistributor::Zipf, 1000, 1.0, 10, 42);
        let mut hits = [0u32; 1000];
        for _ in 0..100_000 {
            let (k, _) = g.next_key();
            hits[k.unwrap() as usize] += 1;
        }
        assert!(hits[0] > 10 * hits[100], "{} vs {}", hits[0], hits[100]);
    }
}
