//! Kafka wire framing: length-prefixed frames, request headers, response encoding, and the
//! hand-framed zero-copy Fetch response ([`fetch`]).
//!
//! ```text
//! frame    = size:i32 (bytes that follow) · payload
//! request  = api_key:i16 · api_version:i16 · correlation_id:i32 · client_id:nullable string
//!            · [tagged fields, header v2] · body
//! response = correlation_id:i32 · [tagged fields, header v1] · body
//! ```
//!
//! Architecture invariant: nothing here trusts a length from the network before checking it
//! against what is actually there (frame size against `frame_bytes_max` before allocating).
#![forbid(unsafe_code)]

pub mod fetch;

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Kafka error codes used by the broker.
pub mod error {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
}

/// Why a connection is closed while reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer closed the connection")]
    Closed,
    #[error("frame of {size} bytes refused (limit {limit} bytes)")]
    TooLarge { size: i64, limit: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    TooSmall(i32),
    #[error("I/O error reading a frame: {0}")]
    Io(#[from] io::Error),
}

/// Smallest request: api_key, api_version, correlation_id, client_id length.
pub const REQUEST_HEADER_BYTES_MIN: i32 = 10;

/// Read one length-prefixed frame. The size is checked against `frame_bytes_max` before the
/// payload buffer is allocated. A clean EOF before the first size byte is [`FrameError::Closed`].
pub fn read_frame<R: Read>(r: &mut R, frame_bytes_max: usize) -> Result<Vec<u8>, FrameError> {
    let mut size_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut size_buf[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let size = i32::from_be_bytes(size_buf);
    if size < 0 || size as usize > frame_bytes_max {
        return Err(FrameError::TooLarge { size: size as i64, limit: frame_bytes_max });
    }
    if size < REQUEST_HEADER_BYTES_MIN {
        return Err(FrameError::TooSmall(size));
    }
    // Capacity is reserved exactly (the size was checked above) and filled without zeroing.
    let mut buf = Vec::with_capacity(size as usize);
    let got = r.by_ref().take(size as u64).read_to_end(&mut buf)?;
    if got != size as usize {
        return Err(FrameError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-frame")));
    }
    Ok(buf)
}

/// Why a request header could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("malformed request header for API key {api_key} v{api_version}: {reason}")]
    Malformed { api_key: i16, api_version: i16, reason: String },
}

/// Parse the request header at the front of `buf`, leaving `buf` at the body.
pub fn parse_request_header(buf: &mut Bytes) -> Result<(ApiKey, RequestHeader), HeaderError> {
    if buf.len() < 4 {
        return Err(HeaderError::Malformed { api_key: -1, api_version: -1, reason: "short".into() });
    }
    let raw_key = i16::from_be_bytes([buf[0], buf[1]]);
    let api_version = i16::from_be_bytes([buf[2], buf[3]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| HeaderError::UnknownApiKey(raw_key))?;
    let header_version = key.request_header_version(api_version);
    let header = RequestHeader::decode(buf, header_version).map_err(|e| HeaderError::Malformed {
        api_key: raw_key,
        api_version,
        reason: e.to_string(),
    })?;
    Ok((key, header))
}

/// Decode a request body of type `T` at `version`. Bytes after the body are ignored, as
/// Kafka's generated decoders do (`RequestContext::parseRequest` reads the fields a version
/// defines and never checks what remains): librdkafka 2.16 sends its all-topics Metadata v12 as
/// `00 00 00 00 01 00 00` (a 4-byte array-count placeholder of which the first byte is read as
/// the null compact array, then allow_auto_topic_creation 0, include_topic_authorized_operations
/// 0, no tagged fields, and 3 bytes Kafka never reads); refusing them made every current
/// librdkafka client's `list_topics()` fail.
pub fn decode_body<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, String> {
    let v = T::decode(body, version).map_err(|e| e.to_string())?;
    if body.has_remaining() {
        tracing::debug!(version, trailing = body.remaining(), "bytes after the request body ignored (as Kafka does)");
    }
    Ok(v)
}

/// Decode a request body the way the broker's dispatch does, for tests and tools (the client
/// fixtures in `engine/fuzz/seeds/request_decode`): the protocol crate's decoder for each API
/// the broker serves, or the hand decoder of OffsetCommit v0/v1. Returns the bytes left after
/// the body, which the broker ignores as Kafka does ([`decode_body`]). Produce v0–2 is answered
/// UNSUPPORTED_VERSION without a decode, and an API the broker does not serve is refused.
pub fn decode_request_body(api: ApiKey, version: i16, body: &mut Bytes) -> Result<usize, String> {
    use kafka_protocol::messages as m;
    fn d<T: Decodable>(body: &mut Bytes, version: i16) -> Result<(), String> {
        T::decode(body, version).map(drop).map_err(|e| e.to_string())
    }
    match api {
        ApiKey::Produce if version <= 2 => Err(format!("Produce v{version} is answered UNSUPPORTED_VERSION without a decode"))?,
        ApiKey::OffsetCommit if version < 2 => {
            decode_offset_commit_v0_v1(body, version).ok_or("malformed OffsetCommit v0/v1")?;
        }
        ApiKey::Produce => d::<m::ProduceRequest>(body, version)?,
        ApiKey::Fetch => d::<m::FetchRequest>(body, version)?,
        ApiKey::ListOffsets => d::<m::ListOffsetsRequest>(body, version)?,
        ApiKey::Metadata => d::<m::MetadataRequest>(body, version)?,
        ApiKey::ApiVersions => d::<m::ApiVersionsRequest>(body, version)?,
        ApiKey::CreateTopics => d::<m::CreateTopicsRequest>(body, version)?,
        ApiKey::DeleteTopics => d::<m::DeleteTopicsRequest>(body, version)?,
        ApiKey::OffsetCommit => d::<m::OffsetCommitRequest>(body, version)?,
        ApiKey::OffsetFetch => d::<m::OffsetFetchRequest>(body, version)?,
        ApiKey::FindCoordinator => d::<m::FindCoordinatorRequest>(body, version)?,
        ApiKey::JoinGroup => d::<m::JoinGroupRequest>(body, version)?,
        ApiKey::Heartbeat => d::<m::HeartbeatRequest>(body, version)?,
        ApiKey::LeaveGroup => d::<m::LeaveGroupRequest>(body, version)?,
        ApiKey::SyncGroup => d::<m::SyncGroupRequest>(body, version)?,
        ApiKey::DescribeGroups => d::<m::DescribeGroupsRequest>(body, version)?,
        ApiKey::ListGroups => d::<m::ListGroupsRequest>(body, version)?,
        ApiKey::InitProducerId => d::<m::InitProducerIdRequest>(body, version)?,
        ApiKey::ConsumerGroupHeartbeat => d::<m::ConsumerGroupHeartbeatRequest>(body, version)?,
        ApiKey::ConsumerGroupDescribe => d::<m::ConsumerGroupDescribeRequest>(body, version)?,
        ApiKey::AddPartitionsToTxn => d::<m::AddPartitionsToTxnRequest>(body, version)?,
        ApiKey::AddOffsetsToTxn => d::<m::AddOffsetsToTxnRequest>(body, version)?,
        ApiKey::EndTxn => d::<m::EndTxnRequest>(body, version)?,
        ApiKey::TxnOffsetCommit => d::<m::TxnOffsetCommitRequest>(body, version)?,
        ApiKey::DescribeTransactions => d::<m::DescribeTransactionsRequest>(body, version)?,
        ApiKey::ListTransactions => d::<m::ListTransactionsRequest>(body, version)?,
        other => Err(format!("API {other:?} is not served by this broker"))?,
    }
    Ok(body.remaining())
}

/// Encode a response: header (version from `api_key`/`version`) + body, without the size
/// prefix (the connection writer adds it). On an encoding error (a bug: a field set that the
/// version cannot carry) the error is logged and an empty Vec returned, which the writer turns
/// into a closed connection.
pub fn encode_response<T: Encodable>(correlation_id: i32, api_key: impl AsApiKey, version: i16, resp: &T) -> Vec<u8> {
    let Some(api_key) = api_key.as_api_key() else {
        tracing::error!("cannot encode a response for an unknown API key");
        return Vec::new();
    };
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut out = bytes::BytesMut::with_capacity(64);
    let r = header.encode(&mut out, header_version).and_then(|_| resp.encode(&mut out, version));
    match r {
        Ok(()) => out.to_vec(),
        Err(e) => {
            tracing::error!(?api_key, version, "cannot encode response: {e}");
            Vec::new()
        }
    }
}

/// An API key given either as [`ApiKey`] or as the raw `i16` from a request header.
pub trait AsApiKey {
    fn as_api_key(&self) -> Option<ApiKey>;
}

impl AsApiKey for ApiKey {
    fn as_api_key(&self) -> Option<ApiKey> {
        Some(*self)
    }
}

impl AsApiKey for i16 {
    fn as_api_key(&self) -> Option<ApiKey> {
        ApiKey::try_from(*self).ok()
    }
}

/// OffsetCommit v0/v1 (not in kafka-protocol 0.18):
/// v0 `group_id topics[name partitions[index offset metadata]]`;
/// v1 `group_id generation member_id topics[name partitions[index offset timestamp metadata]]`.
pub fn decode_offset_commit_v0_v1(body: &mut Bytes, v: i16) -> Option<OffsetCommitRequest> {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::{GroupId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    fn string(b: &mut Bytes) -> Option<Option<StrBytes>> {
        if b.remaining() < 2 {
            return None;
        }
        let n = b.get_i16();
        if n < 0 {
            return Some(None);
        }
        if b.remaining() < n as usize {
            return None;
        }
        StrBytes::from_utf8(b.split_to(n as usize)).ok().map(Some)
    }
    fn count(b: &mut Bytes, min_item_bytes: usize) -> Option<usize> {
        if b.remaining() < 4 {
            return None;
        }
        let n = b.get_i32();
        // Bound the count by what the remaining bytes could hold (no huge allocations).
        (n >= 0 && (n as usize).saturating_mul(min_item_bytes) <= b.remaining()).then_some(n as usize)
    }
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(string(body)??);
    r.generation_id_or_member_epoch = -1;
    if v == 1 {
        if body.remaining() < 4 {
            return None;
        }
        r.generation_id_or_member_epoch = body.get_i32();
        r.member_id = string(body)??;
    }
    let nt = count(body, 6)?;
    for _ in 0..nt {
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(string(body)??);
        let np = count(body, 14)?;
        for _ in 0..np {
            let mut p = OffsetCommitRequestPartition::default();
            if body.remaining() < 12 {
                return None;
            }
            p.partition_index = body.get_i32();
            p.committed_offset = body.get_i64();
            if v == 1 {
                if body.remaining() < 8 {
                    return None;
                }
                body.get_i64(); // commit timestamp (ignored, as Kafka >= 2.1 does)
            }
            p.committed_metadata = string(body)?;
            t.partitions.push(p);
        }
        r.topics.push(t);
    }
    Some(r)
}

/// Append a Kafka unsigned varint.
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes needed by [`put_uvarint`].
pub fn uvarint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_frame_is_refused_before_reading_payload() {
        let mut data: &[u8] = &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(matches!(read_frame(&mut data, 1 << 20), Err(FrameError::TooLarge { .. })));
        let mut neg: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame(&mut neg, 1 << 20), Err(FrameError::TooLarge { .. })));
        let mut empty: &[u8] = &[];
        assert!(matches!(read_frame(&mut empty, 1 << 20), Err(FrameError::Closed)));
    }

    #[test]
    fn uvarint_roundtrip_lengths() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64] {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            assert_eq!(b.len(), uvarint_len(v));
        }
    }

    #[test]
    fn encode_response_takes_raw_or_typed_api_keys() {
        use kafka_protocol::messages::HeartbeatResponse;
        let r = HeartbeatResponse::default();
        let a = encode_response(5, ApiKey::Heartbeat, 4, &r);
        let b = encode_response(5, 12i16, 4, &r);
        assert_eq!(a, b);
        assert_eq!(&a[0..4], &5i32.to_be_bytes());
        assert_eq!(a[4], 0, "flexible response header: empty tagged fields");
        assert!(encode_response(5, 9999i16, 0, &r).is_empty());
    }

    #[test]
    fn librdkafka_2_16_all_topics_metadata_v12_decodes_as_kafka_does() {
        use kafka_protocol::messages::MetadataRequest;
        // Captured from confluent-kafka 2.16.2 (librdkafka 2.16.0) AdminClient.list_topics().
        let frame: &[u8] = &[
            0, 0, 0, 0x19, 0, 3, 0, 0x0c, 0, 0, 0, 3, 0, 7, b'r', b'd', b'k', b'a', b'f', b'k', b'a', 0, //
            0, 0, 0, 0, 1, 0, 0,
        ];
        let raw = read_frame(&mut &frame[..], 1 << 20).unwrap();
        let mut body = Bytes::from(raw);
        let (key, header) = parse_request_header(&mut body).unwrap();
        assert_eq!((key, header.request_api_version), (ApiKey::Metadata, 12));
        let req: MetadataRequest = decode_body(&mut body, 12).expect("decodes as Kafka's decoder does");
        assert_eq!(req.topics, None, "all topics");
        assert!(!req.allow_auto_topic_creation);
        assert!(!req.include_topic_authorized_operations);
    }

    #[test]
    fn unknown_api_key_is_reported() {
        let mut b = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(parse_request_header(&mut b), Err(HeaderError::UnknownApiKey(0x7f00))));
    }
}
