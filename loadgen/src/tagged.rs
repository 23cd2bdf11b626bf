//! Tolerance for tagged fields in flexible-version responses.
//!
//! Kafka's own decoders skip a tagged field whose tag they do not know for the version at hand
//! (KIP-482: tagged fields are optional and ignorable). The `kafka-protocol` 0.18 decoders do not
//! always: for a tag that a *later* version defines they `bail!("Tag {} is not valid for version
//! {}")` — e.g. Fetch v12..15 with tag 0 at the top level (`NodeEndpoints`, defined from v16), or
//! Produce v9 with tag 0 in a partition (`CurrentLeader`, from v10). Some brokers send those
//! (Tansu 0.6 answers Fetch v12 with a top-level tag 0; librdkafka reads it).
//!
//! [`strip_tagged_fields`] walks a Fetch or Produce response body of a flexible version and
//! rewrites it with every tagged-field section emptied (the loadgen reads none of them), so the
//! crate's decoder can then read it. `client::decode_response` uses it only when the crate's
//! decoder fails, so well-formed responses cost nothing extra.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

/// Reads a response body and copies it to `out` without its tagged fields.
struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    out: BytesMut,
}

impl<'a> Walker<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or_else(|| {
            format!("response truncated: need {n} bytes at offset {} of {}", self.pos, self.buf.len())
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Copy `n` bytes.
    fn copy(&mut self, n: usize) -> Result<(), String> {
        let s = self.take(n)?;
        self.out.put_slice(s);
        Ok(())
    }

    fn uvarint(&mut self) -> Result<u32, String> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let b = self.take(1)?[0];
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return u32::try_from(v).map_err(|_| "unsigned varint beyond 32 bits".to_string());
            }
        }
        Err("unsigned varint longer than 5 bytes".into())
    }

    fn put_uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.out.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.put_u8(v as u8);
    }

    /// Copy an unsigned varint and return it.
    fn copy_uvarint(&mut self) -> Result<u32, String> {
        let v = self.uvarint()?;
        self.put_uvarint(v);
        Ok(v)
    }

    /// Compact string / bytes / nullable forms: length + 1, 0 = null.
    fn copy_compact_bytes(&mut self) -> Result<(), String> {
        let n = self.copy_uvarint()?;
        if n > 0 {
            self.copy(n as usize - 1)?;
        }
        Ok(())
    }

    /// A compact array: returns the element count (0 for null); the caller copies the elements.
    fn copy_compact_array_len(&mut self) -> Result<usize, String> {
        let n = self.copy_uvarint()?;
        Ok(n.saturating_sub(1) as usize)
    }

    /// Skip a tagged-field section, writing an empty one.
    fn drop_tagged_fields(&mut self) -> Result<(), String> {
        let count = self.uvarint()?;
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size = self.uvarint()?;
            self.take(size as usize)?;
        }
        self.put_uvarint(0);
        Ok(())
    }

    /// Bound an element count by the bytes left (every element takes at least one byte), so a
    /// corrupt count cannot make us loop for long.
    fn bounded(&self, n: usize) -> Result<usize, String> {
        if n > self.buf.len() - self.pos {
            return Err(format!("array of {n} elements in {} remaining bytes", self.buf.len() - self.pos));
        }
        Ok(n)
    }
}

/// The body (after the response header) of a Fetch (v12..=16) or Produce (v9..=12) response,
/// without any tagged field. None for other APIs and versions (nothing to do there).
pub fn strip_tagged_fields(key: ApiKey, version: i16, body: &[u8]) -> Option<Result<Bytes, String>> {
    let mut w = Walker { buf: body, pos: 0, out: BytesMut::with_capacity(body.len()) };
    let r = match (key, version) {
        (ApiKey::Fetch, 12..=16) => fetch(&mut w, version),
        (ApiKey::Produce, 9..=12) => produce(&mut w),
        _ => return None,
    };
    Some(r.and_then(|()| {
        if w.pos != body.len() {
            return Err(format!("{} bytes after the end of the {key:?} v{version} response", body.len() - w.pos));
        }
        Ok(w.out.freeze())
    }))
}

fn fetch(w: &mut Walker, version: i16) -> Result<(), String> {
    w.copy(4 + 2 + 4)?; // throttle_time_ms, error_code, session_id
    let topics = w.copy_compact_array_len()?;
    for _ in 0..w.bounded(topics)? {
        if version >= 13 {
            w.copy(16)?; // topic_id
        } else {
            w.copy_compact_bytes()?; // topic
        }
        let parts = w.copy_compact_array_len()?;
        for _ in 0..w.bounded(parts)? {
            // partition_index, error_code, high_watermark, last_stable_offset, log_start_offset
            w.copy(4 + 2 + 8 + 8 + 8)?;
            let aborted = w.copy_compact_array_len()?;
            for _ in 0..w.bounded(aborted)? {
                w.copy(8 + 8)?; // producer_id, first_offset
                w.drop_tagged_fields()?;
            }
            w.copy(4)?; // preferred_read_replica
            w.copy_compact_bytes()?; // records
            w.drop_tagged_fields()?;
        }
        w.drop_tagged_fields()?;
    }
    w.drop_tagged_fields()
}

fn produce(w: &mut Walker) -> Result<(), String> {
    let topics = w.copy_compact_array_len()?;
    for _ in 0..w.bounded(topics)? {
        w.copy_compact_bytes()?; // name
        let parts = w.copy_compact_array_len()?;
        for _ in 0..w.bounded(parts)? {
            // index, error_code, base_offset, log_append_time_ms, log_start_offset
            w.copy(4 + 2 + 8 + 8 + 8)?;
            let errs = w.copy_compact_array_len()?;
            for _ in 0..w.bounded(errs)? {
                w.copy(4)?; // batch_index
                w.copy_compact_bytes()?; // batch_index_error_message
                w.drop_tagged_fields()?;
            }
            w.copy_compact_bytes()?; // error_message
            w.drop_tagged_fields()?;
        }
        w.drop_tagged_fields()?;
    }
    w.copy(4)?; // throttle_time_ms
    w.drop_tagged_fields()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::decode_response;
    use kafka_protocol::messages::{FetchResponse, ProduceResponse, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, HeaderVersion};

    /// Builds wire bytes by hand.
    #[derive(Default)]
    struct B(Vec<u8>);
    impl B {
        fn i16(&mut self, v: i16) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(&mut self, v: i32) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(&mut self, v: i64) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn uv(&mut self, mut v: u32) -> &mut Self {
            while v >= 0x80 {
                self.0.push((v as u8) | 0x80);
                v >>= 7;
            }
            self.0.push(v as u8);
            self
        }
        fn compact(&mut self, b: &[u8]) -> &mut Self {
            self.uv(b.len() as u32 + 1);
            self.0.extend_from_slice(b);
            self
        }
        /// A tagged-field section holding `tags` (tag, value bytes).
        fn tags(&mut self, tags: &[(u32, &[u8])]) -> &mut Self {
            self.uv(tags.len() as u32);
            for (t, v) in tags {
                self.uv(*t);
                self.compact_raw(v);
            }
            self
        }
        fn compact_raw(&mut self, v: &[u8]) -> &mut Self {
            self.uv(v.len() as u32);
            self.0.extend_from_slice(v);
            self
        }
    }

    /// A Fetch v12 response frame (header v1 + body) with one topic, one partition, one aborted
    /// transaction and a records blob; `unknown` adds tagged fields the codec does not know at
    /// every level (top-level tag 0 is `NodeEndpoints`, valid only from v16: what Tansu sends).
    fn fetch_v12(corr: i32, unknown: bool) -> Bytes {
        let t = |tags: &'static [(u32, &'static [u8])]| if unknown { tags } else { &[] };
        let mut b = B::default();
        b.i32(corr).tags(t(&[(5, b"hdr")])); // response header v1
        b.i32(0).i16(0).i32(0); // throttle, error, session
        b.uv(2).compact(b"lg-topic"); // one topic
        b.uv(2); // one partition
        b.i32(3).i16(0).i64(42).i64(42).i64(0);
        b.uv(2).i64(7).i64(1).tags(t(&[(9, b"aborted-level")])); // one aborted transaction
        b.i32(-1).compact(b"RECORDS-BLOB");
        b.tags(t(&[(11, b"partition-level"), (20, b"")]));
        b.tags(t(&[(6, b"topic-level")]));
        b.tags(t(&[(0, b"\x01"), (8, b"top-level")]));
        Bytes::from(b.0)
    }

    #[test]
    fn fetch_v12_with_unknown_tagged_fields_at_every_level_decodes() {
        // The crate alone rejects it: the failure seen against Tansu 0.6.
        let mut frame = fetch_v12(7, true);
        ResponseHeader::decode(&mut frame, FetchResponse::header_version(12)).unwrap();
        let err = FetchResponse::decode(&mut frame, 12).unwrap_err().to_string();
        assert!(err.contains("Tag 0 is not valid for version 12"), "{err}");

        for unknown in [false, true] {
            let r: FetchResponse = decode_response(ApiKey::Fetch, 12, 7, fetch_v12(7, unknown)).unwrap();
            assert_eq!(r.responses.len(), 1);
            let t = &r.responses[0];
            assert_eq!(t.topic.0.to_string(), "lg-topic");
            let p = &t.partitions[0];
            assert_eq!((p.partition_index, p.error_code, p.high_watermark), (3, 0, 42));
            assert_eq!(p.aborted_transactions.as_ref().map(|a| a.len()), Some(1));
            assert_eq!(p.records.as_deref(), Some(&b"RECORDS-BLOB"[..]));
        }
        // The wrong correlation id is still an error, not skipped.
        assert!(decode_response::<FetchResponse>(ApiKey::Fetch, 12, 8, fetch_v12(7, true)).is_err());
    }

    #[test]
    fn truncated_or_trailing_bytes_are_errors_not_panics() {
        let mut frame = fetch_v12(1, true);
        ResponseHeader::decode(&mut frame, FetchResponse::header_version(12)).unwrap();
        for cut in 0..frame.len() {
            assert!(matches!(strip_tagged_fields(ApiKey::Fetch, 12, &frame[..cut]), Some(Err(_))), "cut at {cut}");
        }
        let mut longer = frame.to_vec();
        longer.push(0);
        assert!(strip_tagged_fields(ApiKey::Fetch, 12, &longer).unwrap().is_err());
        assert!(strip_tagged_fields(ApiKey::Metadata, 12, &frame).is_none());
    }

    #[test]
    fn produce_v9_with_a_tag_defined_in_v10_decodes() {
        let mut b = B::default();
        b.i32(9).tags(&[]); // header v1
        b.uv(2).compact(b"t"); // one topic
        b.uv(2).i32(0).i16(0).i64(100).i64(-1).i64(0); // one partition
        b.uv(1); // record_errors: empty
        b.uv(0); // error_message: null
        b.tags(&[(0, b"\x00\x00\x00\x01\x00\x00\x00\x02\x00"), (3, b"x")]); // CurrentLeader (v10+) + unknown
        b.tags(&[(4, b"topic")]);
        b.i32(0).tags(&[(0, b"\x01\x00"), (2, b"top")]); // throttle + NodeEndpoints (v10+)
        let frame = Bytes::from(b.0);
        let mut raw = frame.clone();
        ResponseHeader::decode(&mut raw, ProduceResponse::header_version(9)).unwrap();
        let err = ProduceResponse::decode(&mut raw, 9).unwrap_err().to_string();
        assert!(err.contains("Tag 0 is not valid for version 9"), "{err}");
        let r: ProduceResponse = decode_response(ApiKey::Produce, 9, 9, frame).unwrap();
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.index, p.error_code, p.base_offset), (0, 0, 100));
    }
}
