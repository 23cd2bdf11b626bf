//! A Kafka-protocol client built for measurement, on the `kafka-protocol` crate's codecs:
//! ApiVersions (version negotiation), Metadata, CreateTopics (if offered), Produce (pipelined:
//! a writer that never waits for acks and a reader thread per connection), Fetch (long-poll) and
//! ListOffsets. Blocking sockets and threads: no async runtime between the clock and the wire.
//!
//! Invariant: responses on a connection arrive in request order (Kafka guarantees it), so the
//! produce reader matches each response with the oldest pending request and checks the
//! correlation id.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName, TransactionalId,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::producer::{record_ack, record_unacked, record_written_no_ack, Ready, Spare, Transport, Unacked};
use crate::rate::Clock;
use crate::security::BrokerStream;
use crate::stats::{AckRecorder, Metrics};

/// Largest response frame we accept.
const FRAME_BYTES_MAX: usize = 256 << 20;

/// Versions we speak, per API: (min, max). The negotiated version is the highest both sides
/// support. Produce < 3 and Fetch < 4 predate record batch v2; Produce 13 / Fetch 13 switch to
/// topic ids.
const OURS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    // The transactional producer (`transactionRecords`): the client versions before KIP-890's
    // implicit partition adds (AddPartitionsToTxn v4+ is broker-to-broker; EndTxn v5 bumps the
    // epoch on every transaction).
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 4),
    // Consumer groups (`group.rs`): the classic protocol, before OffsetFetch's batched groups (v8)
    // and FindCoordinator's batched keys (v4).
    (ApiKey::FindCoordinator, 1, 3),
    (ApiKey::JoinGroup, 2, 9),
    (ApiKey::SyncGroup, 1, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from(s.to_string()))
}

fn str_of(t: &TopicName) -> String {
    t.0.to_string()
}

/// Encode a request with its header and 4-byte size prefix.
pub fn encode_request<R: Encodable + HeaderVersion>(key: ApiKey, version: i16, corr: i32, req: &R) -> Result<Vec<u8>, String> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("loadgen")));
    // Sized up front and handed over without a copy: a Produce frame carries its batches (up
    // to megabytes), and growing the buffer and then copying it out cost 5 % of the loadgen's
    // CPU at 2.5 M records/s.
    let size = header.compute_size(R::header_version(version)).map_err(|e| format!("encode header: {e}"))?
        + req.compute_size(version).map_err(|e| format!("encode {key:?} v{version}: {e}"))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.extend_from_slice(&[0, 0, 0, 0]);
    header.encode(&mut buf, R::header_version(version)).map_err(|e| format!("encode header: {e}"))?;
    req.encode(&mut buf, version).map_err(|e| format!("encode {key:?} v{version}: {e}"))?;
    let len = (buf.len() - 4) as u32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(Vec::from(buf))
}

/// Read one response frame (without the size prefix).
pub fn read_frame<S: Read>(s: &mut S) -> std::io::Result<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > FRAME_BYTES_MAX {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad frame length {len}")));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// Decode a response frame: header (checking the correlation id) then body.
pub fn decode_response<R: Decodable + HeaderVersion>(key: ApiKey, version: i16, corr: i32, mut frame: Bytes) -> Result<R, String> {
    let header = ResponseHeader::decode(&mut frame, R::header_version(version))
        .map_err(|e| format!("decode {key:?} response header: {e}"))?;
    if header.correlation_id != corr {
        return Err(format!("{key:?}: correlation id {} but expected {corr}", header.correlation_id));
    }
    let body = frame.clone();
    match R::decode(&mut frame, version) {
        Ok(r) => Ok(r),
        // The crate rejects some tagged fields Kafka's decoders skip: drop them and retry.
        Err(e) => match crate::tagged::strip_tagged_fields(key, version, &body) {
            Some(Ok(mut clean)) => R::decode(&mut clean, version)
                .map_err(|e2| format!("decode {key:?} v{version} response: {e} (without its tagged fields: {e2})")),
            Some(Err(why)) => Err(format!("decode {key:?} v{version} response: {e} ({why})")),
            None => Err(format!("decode {key:?} v{version} response: {e}")),
        },
    }
}

/// A request/response connection with negotiated versions.
pub struct Conn {
    pub addr: SocketAddr,
    stream: BrokerStream,
    corr: i32,
    versions: HashMap<i16, (i16, i16)>,
}

/// Resolve `host:port`; the error is one line. The host name is remembered for TLS (the
/// broker's certificate is checked against it, see `security::remember_host`).
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let a = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve broker address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("broker address {addr:?} resolves to nothing"))?;
    if let Some((host, _)) = addr.rsplit_once(':') {
        crate::security::remember_host(a, host);
    }
    Ok(a)
}

/// Opens broker connections with one run's security settings (TLS, SASL): the connection
/// factory every part of a run holds (producers' transports, consumers, group members, setup,
/// topic cleanup). A value, not a process-wide setting: a `loadgen worker` serving runs with
/// different settings, or two runs in one process, each use their own.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    security: Arc<crate::security::Security>,
}

impl Connector {
    pub fn new(security: crate::security::Security) -> Connector {
        Connector { security: Arc::new(security) }
    }

    /// PLAINTEXT, no SASL.
    pub fn plaintext() -> Connector {
        Connector::default()
    }

    pub fn security(&self) -> &crate::security::Security {
        &self.security
    }

    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<Conn, String> {
        self.connect_with_read_timeout(addr, timeout, Duration::from_secs(30))
    }

    /// [`Connector::connect`] with a bound on each response wait (a stopped broker accepts the
    /// TCP connection but never answers). The one place broker connections are opened: TLS
    /// handshake, ApiVersions, then SASL, with this connector's settings.
    pub fn connect_with_read_timeout(&self, addr: SocketAddr, timeout: Duration, read_timeout: Duration) -> Result<Conn, String> {
        let sec = &*self.security;
        let stream = crate::security::connect_stream(sec, addr, timeout, read_timeout)?;
        let mut c = Conn { addr, stream, corr: 0, versions: HashMap::new() };
        let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default()).map_err(|e| {
            let hint = if sec.protocol.tls() { "" } else { " (a TLS listener? --security-protocol SSL or SASL_SSL)" };
            format!("broker {addr} did not answer ApiVersions: {e}{hint}")
        })?;
        if r.error_code != 0 {
            return Err(format!("broker {addr}: ApiVersions error code {}", r.error_code));
        }
        for k in r.api_keys {
            c.versions.insert(k.api_key, (k.min_version, k.max_version));
        }
        if let Some((mechanism, creds)) = sec.sasl() {
            crate::security::authenticate(&mut c, *mechanism, creds)?;
        }
        Ok(c)
    }
}

impl Conn {
    /// A PLAINTEXT connection (tests and tools); a run's connections go through its
    /// [`Connector`], which carries the run's security settings.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, String> {
        Connector::plaintext().connect(addr, timeout)
    }

    /// Bound the wait for the next response (None: wait forever).
    pub fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_read_timeout(d)
    }

    pub fn try_clone_stream(&self) -> std::io::Result<BrokerStream> {
        self.stream.try_clone()
    }

    /// Highest version of `key` both sides speak, or None.
    pub fn version(&self, key: ApiKey) -> Option<i16> {
        let (_, lo, hi) = OURS.iter().find(|(k, _, _)| *k == key)?;
        let (blo, bhi) = self.versions.get(&(key as i16))?;
        let v = (*hi).min(*bhi);
        (v >= *lo && v >= *blo).then_some(v)
    }

    /// The API versions the broker advertised: (api key, min, max), by key.
    pub fn advertised(&self) -> Vec<(i16, i16, i16)> {
        let mut v: Vec<(i16, i16, i16)> = self.versions.iter().map(|(k, (lo, hi))| (*k, *lo, *hi)).collect();
        v.sort();
        v
    }

    fn need(&self, key: ApiKey) -> Result<i16, String> {
        self.version(key).ok_or_else(|| format!("broker {} does not support a usable {key:?} version", self.addr))
    }

    fn next_corr(&mut self) -> i32 {
        self.corr = self.corr.wrapping_add(1);
        self.corr
    }

    pub fn call<Q: Encodable + HeaderVersion, R: Decodable + HeaderVersion>(&mut self, key: ApiKey, version: i16, req: &Q) -> Result<R, String> {
        let corr = self.next_corr();
        let frame = encode_request(key, version, corr, req)?;
        self.stream.write_all(&frame).map_err(|e| format!("send {key:?} to {}: {e}", self.addr))?;
        let resp = read_frame(&mut self.stream).map_err(|e| format!("read {key:?} response from {}: {e}", self.addr))?;
        decode_response(key, version, corr, resp)
    }

    pub fn metadata(&mut self, topics: Option<&[String]>, auto_create: bool) -> Result<MetadataResponse, String> {
        let v = self.need(ApiKey::Metadata)?;
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| ts.iter().map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t)))).collect()))
            // Before v4 the field does not exist (the broker's setting decides).
            .with_allow_auto_topic_creation(auto_create || v < 4);
        self.call(ApiKey::Metadata, v, &req)
    }

    /// CreateTopics if the broker offers it; "already exists" is fine. `replication_factor` -1 =
    /// the broker's default (CreateTopics v4+; 1 for older versions). Returns false if the API
    /// is not offered (the caller then relies on auto-creation).
    pub fn create_topics(&mut self, topics: &[String], partitions: i32, replication_factor: i16) -> Result<bool, String> {
        let Some(v) = self.version(ApiKey::CreateTopics) else { return Ok(false) };
        let rf = if replication_factor == -1 && v < 4 { 1 } else { replication_factor };
        let req = CreateTopicsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| CreatableTopic::default().with_name(topic_name(t)).with_num_partitions(partitions).with_replication_factor(rf))
                    .collect(),
            )
            .with_timeout_ms(10_000);
        let r: CreateTopicsResponse = self.call(ApiKey::CreateTopics, v, &req)?;
        for t in r.topics {
            // 36 = TOPIC_ALREADY_EXISTS
            if t.error_code != 0 && t.error_code != 36 {
                return Err(format!(
                    "cannot create topic {}: error code {} {}",
                    str_of(&t.name),
                    t.error_code,
                    t.error_message.map(|m| m.to_string()).unwrap_or_default()
                ));
            }
        }
        Ok(true)
    }

    /// DeleteTopics. Err when the broker does not offer it or refuses a topic (the message
    /// names the topics left behind).
    pub fn delete_topics(&mut self, topics: &[String]) -> Result<(), String> {
        let v = self.need(ApiKey::DeleteTopics)?;
        let req = DeleteTopicsRequest::default().with_topic_names(topics.iter().map(|t| topic_name(t)).collect()).with_timeout_ms(4_000);
        let r: DeleteTopicsResponse = self.call(ApiKey::DeleteTopics, v, &req)?;
        let failed: Vec<String> = r
            .responses
            .iter()
            // 3 = UNKNOWN_TOPIC_OR_PARTITION: already gone.
            .filter(|t| t.error_code != 0 && t.error_code != 3)
            .map(|t| {
                let why = if t.error_code == 7 { ": REQUEST_TIMED_OUT, deletion requested but not confirmed within 4 s" } else { "" };
                format!("{} (error code {}{why})", t.name.as_ref().map(str_of).unwrap_or_default(), t.error_code)
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("DeleteTopics refused: {}", failed.join(", ")))
        }
    }

    /// InitProducerId for an idempotent (non-transactional) producer: (producer id, epoch).
    /// Errors a coordinator clears by itself (COORDINATOR_LOAD_IN_PROGRESS 14, COORDINATOR_NOT_AVAILABLE
    /// 15, NOT_COORDINATOR 16, CONCURRENT_TRANSACTIONS 51 — a freshly started Kafka answers 14
    /// for a while) are retried every 100 ms for up to 30 s, as Kafka's producer does.
    pub fn init_producer_id(&mut self) -> Result<(i64, i16), String> {
        self.init_producer_id_with(None, -1)
    }

    /// InitProducerId, for a transactional producer with its transactional id and transaction
    /// timeout (sent to the id's coordinator); retried as [`Conn::init_producer_id`].
    pub fn init_producer_id_with(&mut self, transactional_id: Option<&str>, timeout_ms: i32) -> Result<(i64, i16), String> {
        let v = self.need(ApiKey::InitProducerId)?;
        let req = InitProducerIdRequest::default()
            .with_transactional_id(transactional_id.map(|t| TransactionalId(StrBytes::from(t.to_string()))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let deadline = Instant::now() + Duration::from_secs(30);
        let r: InitProducerIdResponse = loop {
            let r: InitProducerIdResponse = self.call(ApiKey::InitProducerId, v, &req)?;
            if matches!(r.error_code, 14 | 15 | 16 | 51) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            break r;
        };
        if r.error_code != 0 {
            return Err(format!("InitProducerId refused by broker {}: error code {}", self.addr, r.error_code));
        }
        if r.producer_id.0 < 0 || r.producer_epoch < 0 {
            return Err(format!("InitProducerId from broker {}: invalid producer id {} epoch {}", self.addr, r.producer_id.0, r.producer_epoch));
        }
        Ok((r.producer_id.0, r.producer_epoch))
    }

    /// ListOffsets: `timestamp` -1 = latest, -2 = earliest.
    pub fn list_offsets(&mut self, topic: &str, partitions: &[i32], timestamp: i64) -> Result<HashMap<i32, i64>, String> {
        let v = self.need(ApiKey::ListOffsets)?;
        let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| ListOffsetsPartition::default().with_partition_index(p).with_timestamp(timestamp).with_current_leader_epoch(-1))
                    .collect(),
            )]);
        let r: ListOffsetsResponse = self.call(ApiKey::ListOffsets, v, &req)?;
        let mut out = HashMap::new();
        for t in r.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(format!("ListOffsets {topic}/{}: error code {}", p.partition_index, p.error_code));
                }
                out.insert(p.partition_index, p.offset);
            }
        }
        Ok(out)
    }

    /// Fetch one topic's partitions: `parts` are (partition, offset).
    pub fn fetch(&mut self, topic: &str, parts: &[(i32, i64)], max_wait_ms: i32, partition_max_bytes: i32) -> Result<FetchResponse, String> {
        self.fetch_many(parts.iter().map(|&(p, off)| (topic, p, off)), max_wait_ms, partition_max_bytes, 0)
    }

    /// Fetch several topics' partitions in one request: `parts` are (topic, partition, offset);
    /// `isolation_level` 0 = read_uncommitted, 1 = read_committed (up to the last stable offset,
    /// the aborted transactions listed: [`crate::encode::AbortedFilter`]).
    pub fn fetch_many<'a>(
        &mut self,
        parts: impl IntoIterator<Item = (&'a str, i32, i64)>,
        max_wait_ms: i32,
        partition_max_bytes: i32,
        isolation_level: i8,
    ) -> Result<FetchResponse, String> {
        let v = self.need(ApiKey::Fetch)?;
        self.call(ApiKey::Fetch, v, &fetch_request(parts, max_wait_ms, partition_max_bytes).with_isolation_level(isolation_level))
    }
}

/// A consumer's FetchRequest (read_uncommitted, no fetch session, at most 64 MiB) for `parts`:
/// (topic, partition, offset), grouped by topic in the order of their first appearance.
pub fn fetch_request<'a>(parts: impl IntoIterator<Item = (&'a str, i32, i64)>, max_wait_ms: i32, partition_max_bytes: i32) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (t, p, off) in parts {
        let fp = FetchPartition::default()
            .with_partition(p)
            .with_fetch_offset(off)
            .with_partition_max_bytes(partition_max_bytes)
            .with_current_leader_epoch(-1)
            .with_log_start_offset(-1);
        match topics.iter_mut().find(|x| x.topic.0.as_str() == t) {
            Some(x) => x.partitions.push(fp),
            None => topics.push(FetchTopic::default().with_topic(topic_name(t)).with_partitions(vec![fp])),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(64 << 20)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Partition leadership of a topic, from Metadata.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub topic: String,
    /// partition id → leader address.
    pub leaders: Vec<(i32, SocketAddr)>,
}

/// Create (or auto-create) the topics and wait until every partition has a leader.
/// `replication_factor`: Some(rf) = create them (-1 = the broker's default), None = they must
/// already exist (`--topic`): never created here.
pub fn prepare_topics(boot: &mut Conn, topics: &[String], partitions: u32, replication_factor: Option<i16>, timeout: Duration) -> Result<Vec<TopicLayout>, String> {
    let existing = replication_factor.is_none();
    let created = match replication_factor {
        Some(rf) => boot.create_topics(topics, partitions as i32, rf)?,
        None => true, // no auto-creation either
    };
    let deadline = Instant::now() + timeout;
    loop {
        let md = boot.metadata(Some(topics), !created)?;
        let brokers: HashMap<i32, String> =
            md.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
        let mut out = Vec::new();
        let mut missing = None;
        for name in topics {
            let Some(t) = md.topics.iter().find(|t| t.name.as_ref().map(str_of).as_deref() == Some(name.as_str())) else {
                missing = Some(format!("topic {name} missing from metadata"));
                break;
            };
            // 3 = UNKNOWN_TOPIC_OR_PARTITION
            if existing && t.error_code == 3 {
                return Err(format!("topic {name} does not exist (--topic reuses existing topics; without it the run creates its own)"));
            }
            if t.error_code != 0 {
                missing = Some(format!("topic {name}: metadata error code {}", t.error_code));
                continue;
            }
            if (t.partitions.len() as u32) < partitions {
                missing = Some(format!(
                    "topic {name} has {} partitions, workload wants {partitions} (delete it or change the workload)",
                    t.partitions.len()
                ));
                if t.partitions.len() as u32 > 0 && created {
                    // Existing topic with fewer partitions: cannot fix it from here.
                    return Err(missing.unwrap_or_default());
                }
                continue;
            }
            let mut leaders = Vec::new();
            for p in t.partitions.iter().filter(|p| (p.partition_index as u32) < partitions) {
                match brokers.get(&p.leader_id.0) {
                    Some(a) if p.error_code == 0 => {
                        // Advertised host may be unresolvable from here (e.g. a container name):
                        // fall back to the bootstrap address for single-broker setups.
                        let addr = resolve(a).unwrap_or(boot.addr);
                        leaders.push((p.partition_index, addr));
                    }
                    _ => missing = Some(format!("{name}/{} has no leader yet", p.partition_index)),
                }
            }
            leaders.sort_by_key(|(p, _)| *p);
            out.push(TopicLayout { topic: name.clone(), leaders });
        }
        if missing.is_none() {
            return Ok(out);
        }
        if Instant::now() >= deadline {
            return Err(missing.unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One batch of an in-flight produce request.
struct PendingBatch {
    /// Index into the transport's partition list.
    idx: u32,
    pid: i32,
    intended: Vec<u64>,
    value_bytes: u64,
    /// Idempotent producer: the batch bytes, kept to send again unchanged (same sequence), and
    /// the sends so far.
    retry: Option<(Bytes, u32)>,
}

/// Metadata for an in-flight produce request, queued to the connection's reader.
struct Pending {
    corr: i32,
    batches: Vec<PendingBatch>,
}

struct ProduceConn {
    addr: SocketAddr,
    stream: BrokerStream,
    corr: i32,
    tx: crossbeam::channel::Sender<Pending>,
    /// The producer thread's handle on the reader's queue: after the reader ended (connection
    /// lost) the producer takes the unanswered requests back from it, with no race.
    rx: crossbeam::channel::Receiver<Pending>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Set by the reader when the connection is lost (not when closing on purpose).
    dead: Arc<AtomicBool>,
}

/// Sends of one batch at most (the first included) before it counts as failed.
const SENDS_MAX: u32 = 10;

/// Error codes after which the idempotent producer sends a batch again (same sequence): only
/// conditions a later try can clear.
fn retriable(code: i16) -> bool {
    // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT,
    // NETWORK_EXCEPTION, NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, KAFKA_STORAGE_ERROR.
    matches!(code, 3 | 5 | 6 | 7 | 13 | 19 | 20 | 56)
}

/// Error codes that mean the partition's leader is not where we sent it: the producer looks it
/// up again (Metadata) before the partition takes another batch. UNKNOWN_TOPIC_OR_PARTITION,
/// LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH.
fn leadership(code: i16) -> bool {
    matches!(code, 3 | 5 | 6 | 74 | 75)
}

const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// What a request unanswered on a lost connection counts as (non-idempotent producer).
const NETWORK_EXCEPTION: i16 = 13;

/// Metadata refresh backoff while a partition has no reachable leader: from the first to the
/// last value, doubling.
const REFRESH_BACKOFF_MS: (u64, u64) = (50, 1000);

/// Pipelined Produce to the partition leaders of one topic: the producer thread writes requests
/// without waiting; one reader thread per connection records acks. At most `max_in_flight`
/// requests per partition are unacknowledged.
///
/// acks=0: the broker sends no response, so nothing is in flight: records written are counted
/// in `metrics.producer.written_unacknowledged`, never as acknowledged, and the reader only
/// watches for the connection being closed (how a broker reports a failed acks=0 produce).
///
/// Idempotent producer: batches carry the producer id/epoch and per-partition sequences (see
/// [`crate::encode::BatchFormat`]); a batch refused with a retriable error is sent again with
/// its bytes unchanged (so the same sequence) and its partition takes no new batch until the
/// retries are settled; DUPLICATE_SEQUENCE_NUMBER means the broker already has it (counted as
/// acknowledged); OUT_OF_ORDER_SEQUENCE_NUMBER outside a retry fails the run.
///
/// Failover (acks ≠ 0): a leadership error ([`leadership`]) or a lost connection marks the
/// partition's leader unknown ("stale": it takes no batch); the producer thread, in
/// [`Transport::poll`], asks any reachable broker for Metadata (backoff 50 ms doubling to 1 s),
/// connects to the new leader and moves the partition there. Batches unanswered on a lost
/// connection: the idempotent producer sends them again to the new leader byte for byte (same
/// sequence; the broker deduplicates one that was written); a non-idempotent producer counts
/// them failed with NETWORK_EXCEPTION (13) — sending them again could write them twice, which
/// a non-idempotent Kafka producer with retries also risks; we count instead of duplicating. A
/// partition with no reachable leader waits (its batches queue in the producer) until the drain
/// deadline; what is still unsent then is `not_sent`, what is unanswered `timed_out`.
pub struct KafkaTransport {
    /// Opens this transport's connections (the run's security settings).
    connector: Connector,
    topic: TopicName,
    /// index → partition id.
    partition_ids: Vec<i32>,
    /// index → connection (None: no reachable leader yet).
    conn_of: Vec<Option<usize>>,
    conns: Vec<ProduceConn>,
    in_flight: Arc<Vec<AtomicU32>>,
    /// index → batches waiting to be sent again or being sent again.
    retrying: Arc<Vec<AtomicU32>>,
    /// index → the leader must be looked up again before the partition takes a batch.
    stale: Arc<Vec<AtomicBool>>,
    stale_any: Arc<AtomicBool>,
    outstanding: Arc<AtomicU64>,
    max_in_flight: u32,
    acks: i16,
    version: i16,
    identity: Option<(i64, i16)>,
    /// Set by `close`: the readers' connections end on purpose (not a lost broker).
    closing: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// Writes give up at this clock reading (the drain deadline).
    deadline_ns: u64,
    /// Batches to send again (idempotent producer), in the order they were queued; written by
    /// the producer thread — the only writer of the sockets — in [`Transport::poll`].
    retries: Arc<std::sync::Mutex<Vec<PendingBatch>>>,
    retry_waiting: Arc<AtomicBool>,
    /// Brokers to ask for Metadata (the first leaders, then every broker Metadata named).
    known: Vec<SocketAddr>,
    next_refresh: Instant,
    backoff_ms: u64,
    /// Since when no broker answered Metadata (None: the last lookup was answered).
    unreachable_since: Option<Instant>,
    /// The transactional producer's state (None: not transactional), and its id as Produce
    /// requests carry it.
    txn: Option<crate::txn::Txn>,
    txn_id: Option<TransactionalId>,
}

/// No broker answering Metadata for this long fails the run (the whole cluster is gone, not a
/// failover).
const UNREACHABLE_MAX: Duration = Duration::from_secs(5);

/// What the ack reader of one connection shares with the transport.
struct ReaderCtx {
    addr: SocketAddr,
    version: i16,
    acks: i16,
    clock: Clock,
    metrics: Arc<Metrics>,
    in_flight: Arc<Vec<AtomicU32>>,
    retrying: Arc<Vec<AtomicU32>>,
    stale: Arc<Vec<AtomicBool>>,
    stale_any: Arc<AtomicBool>,
    outstanding: Arc<AtomicU64>,
    closing: Arc<AtomicBool>,
    retries: Arc<std::sync::Mutex<Vec<PendingBatch>>>,
    retry_waiting: Arc<AtomicBool>,
    dead: Arc<AtomicBool>,
    /// Transactional producer: acknowledged batches wait here for their transaction's end.
    txn: Option<Arc<crate::txn::TxnHeld>>,
}

/// A batch that will not be acknowledged: account it and release its partition's window.
fn settle_unacked(m: &Metrics, in_flight: &[AtomicU32], retrying: &[AtomicU32], b: PendingBatch, how: Unacked, at_ns: u64) {
    record_unacked(m, how, at_ns, b.intended.iter().copied());
    if b.retry.as_ref().is_some_and(|(_, s)| *s > 1) {
        retrying[b.idx as usize].fetch_sub(1, Ordering::SeqCst);
    }
    in_flight[b.idx as usize].fetch_sub(1, Ordering::SeqCst);
}

/// Queue a batch to be sent again unchanged (idempotent producer); its partition takes no new
/// batch meanwhile.
fn requeue(retrying: &[AtomicU32], retries: &std::sync::Mutex<Vec<PendingBatch>>, waiting: &AtomicBool, bs: Vec<PendingBatch>) {
    if bs.is_empty() {
        return;
    }
    for b in &bs {
        if b.retry.as_ref().is_some_and(|(_, s)| *s == 1) {
            retrying[b.idx as usize].fetch_add(1, Ordering::SeqCst);
        }
    }
    retries.lock().unwrap_or_else(|p| p.into_inner()).extend(bs);
    waiting.store(true, Ordering::SeqCst);
}

impl KafkaTransport {
    pub fn connect(layout: &TopicLayout, acks: i16, max_in_flight: u32, clock: Clock, metrics: Arc<Metrics>) -> Result<KafkaTransport, String> {
        let settings = crate::produce::ProducerSettings { acks, ..Default::default() };
        KafkaTransport::connect_with(layout, &settings, max_in_flight, clock, metrics, &Connector::plaintext())
    }

    /// As [`KafkaTransport::connect`], with the producer settings (acks, idempotence: an
    /// idempotent producer asks the first reachable partition leader for its producer id).
    /// Partitions whose leader cannot be reached start stale (they wait for a leader); at
    /// least one leader must be reachable.
    pub fn connect_with(
        layout: &TopicLayout,
        settings: &crate::produce::ProducerSettings,
        max_in_flight: u32,
        clock: Clock,
        metrics: Arc<Metrics>,
        connector: &Connector,
    ) -> Result<KafkaTransport, String> {
        let n = layout.leaders.len();
        let mut t = KafkaTransport {
            connector: connector.clone(),
            topic: topic_name(&layout.topic),
            partition_ids: layout.leaders.iter().map(|(p, _)| *p).collect(),
            conn_of: vec![None; n],
            conns: Vec::new(),
            in_flight: Arc::new((0..n).map(|_| AtomicU32::new(0)).collect()),
            retrying: Arc::new((0..n).map(|_| AtomicU32::new(0)).collect()),
            stale: Arc::new((0..n).map(|_| AtomicBool::new(false)).collect()),
            stale_any: Arc::new(AtomicBool::new(false)),
            outstanding: Arc::new(AtomicU64::new(0)),
            max_in_flight,
            acks: settings.acks,
            version: i16::MAX,
            identity: None,
            closing: Arc::new(AtomicBool::new(false)),
            metrics,
            clock,
            deadline_ns: u64::MAX,
            retries: Arc::new(std::sync::Mutex::new(Vec::new())),
            retry_waiting: Arc::new(AtomicBool::new(false)),
            known: Vec::new(),
            next_refresh: Instant::now(),
            backoff_ms: REFRESH_BACKOFF_MS.0,
            unreachable_since: None,
            txn: None,
            txn_id: None,
        };
        if settings.transaction_records > 0 {
            // The transactional id's coordinator grants the producer id (and fences an older
            // producer with the same id) before any leader connection asks for one.
            let id = settings.transactional_id.clone().ok_or("transactional producer without a transactional id")?;
            let boot: Vec<SocketAddr> = layout.leaders.iter().map(|(_, a)| *a).collect();
            let (txn, pid) = crate::txn::Txn::init(&t.connector, boot, id, n)?;
            t.metrics.producer.producer_id.store(pid.0 as u64, Ordering::Relaxed);
            t.identity = Some(pid);
            t.txn_id = Some(TransactionalId(StrBytes::from(txn.id.clone())));
            t.txn = Some(txn);
        }
        let mut first_err = None;
        for (i, (_, a)) in layout.leaders.iter().enumerate() {
            if !t.known.contains(a) {
                t.known.push(*a);
            }
            match t.conn_to(*a, settings.idempotent) {
                Ok(ci) => t.conn_of[i] = Some(ci),
                Err(e) => {
                    first_err.get_or_insert(e);
                    t.stale[i].store(true, Ordering::SeqCst);
                    t.stale_any.store(true, Ordering::SeqCst);
                }
            }
        }
        if (t.conns.is_empty() && n > 0) || (t.acks == 0 && first_err.is_some()) {
            // acks=0 does not follow leaders (a lost acks=0 connection fails the run).
            return Err(first_err.unwrap_or_else(|| "no partition leader reachable".into()));
        }
        Ok(t)
    }

    /// The live connection to `addr`, opened if needed (the first one negotiates the Produce
    /// version and, for an idempotent producer, gets the producer id).
    fn conn_to(&mut self, addr: SocketAddr, idempotent: bool) -> Result<usize, String> {
        if let Some(i) = self.conns.iter().position(|c| c.addr == addr && !c.dead.load(Ordering::SeqCst)) {
            return Ok(i);
        }
        let mut c = self.connector.connect(addr, Duration::from_secs(5))?;
        let v = c.need(ApiKey::Produce)?;
        if self.conns.is_empty() && self.version == i16::MAX {
            self.version = v;
        } else if v < self.version || c.version(ApiKey::Produce).is_none() {
            return Err(format!("broker {addr} speaks Produce up to v{v}, the other leaders v{}", self.version));
        }
        if idempotent && self.identity.is_none() {
            let id = c.init_producer_id()?;
            self.metrics.producer.producer_id.store(id.0 as u64, Ordering::Relaxed);
            self.identity = Some(id);
        }
        let stream = c.try_clone_stream().map_err(|e| format!("{addr}: {e}"))?;
        let rstream = c.try_clone_stream().map_err(|e| format!("{addr}: {e}"))?;
        rstream.set_read_timeout(None).map_err(|e| format!("{addr}: {e}"))?;
        let (tx, rx) = crossbeam::channel::unbounded::<Pending>();
        let dead = Arc::new(AtomicBool::new(false));
        let ctx = ReaderCtx {
            addr,
            version: self.version,
            acks: self.acks,
            clock: self.clock,
            metrics: self.metrics.clone(),
            in_flight: self.in_flight.clone(),
            retrying: self.retrying.clone(),
            stale: self.stale.clone(),
            stale_any: self.stale_any.clone(),
            outstanding: self.outstanding.clone(),
            closing: self.closing.clone(),
            retries: self.retries.clone(),
            retry_waiting: self.retry_waiting.clone(),
            dead: dead.clone(),
            txn: self.txn.as_ref().map(|t| t.held.clone()),
        };
        let rrx = rx.clone();
        let reader = std::thread::Builder::new()
            .name(format!("ack-{addr}"))
            .spawn(move || ack_reader(ctx, rstream, rrx))
            .map_err(|e| format!("spawn: {e}"))?;
        let pc = ProduceConn { addr, stream, corr: c.corr, tx, rx, reader: Some(reader), dead };
        // Reuse the slot of a dead connection to the same broker (already taken over).
        match self.conns.iter().position(|c| c.addr == addr && c.reader.is_none()) {
            Some(i) => {
                self.conns[i] = pc;
                Ok(i)
            }
            None => {
                self.conns.push(pc);
                Ok(self.conns.len() - 1)
            }
        }
    }

    /// Close the connections and join the readers; requests still unanswered and batches
    /// still waiting to be sent again are accounted as timed out.
    pub fn close(mut self) {
        self.closing.store(true, Ordering::SeqCst);
        for c in &mut self.conns {
            let _ = c.stream.shutdown(Shutdown::Both);
            if let Some(r) = c.reader.take() {
                let _ = r.join();
            }
        }
        let now = self.clock.now_ns();
        for c in &self.conns {
            while let Ok(p) = c.rx.try_recv() {
                for b in &p.batches {
                    record_unacked(&self.metrics, Unacked::TimedOut, now, b.intended.iter().copied());
                }
            }
        }
        for b in std::mem::take(&mut *self.retries.lock().unwrap_or_else(|p| p.into_inner())) {
            record_unacked(&self.metrics, Unacked::TimedOut, now, b.intended.iter().copied());
        }
        if let Some(t) = &mut self.txn {
            // The open transaction never ended: its records are not acknowledged (failed with
            // the code a Produce of it got, else timed out); the broker is asked to abort it.
            t.held.settle_unended(&self.metrics, now);
            t.held.flush_produce_ack(&self.metrics);
            t.abort_open(self.identity.unwrap_or((-1, -1)), Duration::from_secs(2));
        }
    }

    /// Batches that cannot go where they were headed (lost connection, no leader): sent again
    /// later (idempotent) or failed with NETWORK_EXCEPTION; their partitions turn stale.
    fn reroute(&mut self, batches: Vec<PendingBatch>) {
        let now = self.clock.now_ns();
        let mut again = Vec::new();
        for b in batches {
            self.stale[b.idx as usize].store(true, Ordering::SeqCst);
            self.stale_any.store(true, Ordering::SeqCst);
            match &b.retry {
                Some((_, s)) if *s < SENDS_MAX => again.push(b),
                _ => settle_unacked(&self.metrics, &self.in_flight, &self.retrying, b, Unacked::Failed(NETWORK_EXCEPTION), now),
            }
        }
        requeue(&self.retrying, &self.retries, &self.retry_waiting, again);
    }

    /// Take over the connections whose reader ended on a lost connection: their unanswered
    /// requests are rerouted and their partitions turn stale.
    fn reap_dead(&mut self) {
        for ci in 0..self.conns.len() {
            if !self.conns[ci].dead.load(Ordering::SeqCst) || self.conns[ci].reader.is_none() {
                continue;
            }
            if let Some(r) = self.conns[ci].reader.take() {
                let _ = r.join();
            }
            let mut lost = Vec::new();
            while let Ok(p) = self.conns[ci].rx.try_recv() {
                self.outstanding.fetch_sub(1, Ordering::SeqCst);
                lost.extend(p.batches);
            }
            for i in 0..self.conn_of.len() {
                if self.conn_of[i] == Some(ci) {
                    self.conn_of[i] = None;
                    self.stale[i].store(true, Ordering::SeqCst);
                    self.stale_any.store(true, Ordering::SeqCst);
                }
            }
            self.metrics.producer.connections_lost.fetch_add(1, Ordering::Relaxed);
            self.reroute(lost);
        }
    }

    /// Look up the leaders of the stale partitions (bounded: one Metadata round per backoff
    /// step) and move them to their new leader's connection.
    fn refresh_leaders(&mut self) {
        if !self.stale_any.load(Ordering::Acquire) || Instant::now() < self.next_refresh {
            return;
        }
        self.metrics.producer.metadata_refreshes.fetch_add(1, Ordering::Relaxed);
        let topic = self.topic.0.to_string();
        let mut md = None;
        let mut last_err = String::new();
        for a in self.known.clone() {
            let r = self.connector.connect_with_read_timeout(a, Duration::from_secs(1), Duration::from_secs(2))
                .and_then(|mut c| c.metadata(Some(std::slice::from_ref(&topic)), false));
            match r {
                Ok(m) => {
                    md = Some(m);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let mut still = false;
        if md.is_some() {
            self.unreachable_since = None;
        } else {
            let since = *self.unreachable_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= UNREACHABLE_MAX && !self.metrics.stopped() {
                let list: Vec<String> = self.known.iter().map(|a| a.to_string()).collect();
                // The last error says why (e.g. "SASL authentication failed …" on reconnect).
                self.metrics.fail(format!(
                    "connection lost and no broker answers Metadata for {} s (tried {}; last: {last_err})",
                    UNREACHABLE_MAX.as_secs(),
                    list.join(", ")
                ));
            }
        }
        if let Some(md) = md {
            let mut brokers: HashMap<i32, SocketAddr> = HashMap::new();
            for b in &md.brokers {
                if let Ok(a) = resolve(&format!("{}:{}", b.host, b.port)) {
                    brokers.insert(b.node_id.0, a);
                    if !self.known.contains(&a) {
                        self.known.push(a);
                    }
                }
            }
            let t = md.topics.iter().find(|t| t.name.as_ref().map(str_of).as_deref() == Some(topic.as_str()));
            for i in 0..self.partition_ids.len() {
                if !self.stale[i].load(Ordering::SeqCst) {
                    continue;
                }
                let leader = t
                    .and_then(|t| t.partitions.iter().find(|p| p.partition_index == self.partition_ids[i]))
                    .filter(|p| p.error_code == 0)
                    .and_then(|p| brokers.get(&p.leader_id.0).copied());
                let conn = leader.and_then(|a| self.conn_to(a, self.identity.is_some()).ok());
                match conn {
                    Some(ci) => {
                        if self.conn_of[i] != Some(ci) {
                            self.metrics.producer.leader_changes.fetch_add(1, Ordering::Relaxed);
                        }
                        self.conn_of[i] = Some(ci);
                        self.stale[i].store(false, Ordering::SeqCst);
                    }
                    None => still = true,
                }
            }
        } else {
            still = true;
        }
        if still {
            self.next_refresh = Instant::now() + Duration::from_millis(self.backoff_ms);
            self.backoff_ms = (self.backoff_ms * 2).min(REFRESH_BACKOFF_MS.1);
        } else {
            self.stale_any.store(false, Ordering::SeqCst);
            // A reader may have marked another partition meanwhile.
            if self.stale.iter().any(|s| s.load(Ordering::SeqCst)) {
                self.stale_any.store(true, Ordering::SeqCst);
            }
            self.backoff_ms = REFRESH_BACKOFF_MS.0;
            self.next_refresh = Instant::now();
        }
    }

    /// Write one Produce request with these batches on connection `ci`. Returns the request's
    /// records (for acks=0 accounting) and hands the batch buffers it no longer needs to `spare`.
    /// A connection found lost reroutes the batches (see [`KafkaTransport::reroute`]).
    fn write_request(&mut self, ci: usize, batches: Vec<(PendingBatch, Bytes)>, spare: &mut Spare) -> Result<(), String> {
        if self.acks != 0 && self.conns[ci].dead.load(Ordering::SeqCst) {
            for (m, _) in &batches {
                if m.retry.as_ref().is_none_or(|(_, sends)| *sends == 1) {
                    self.in_flight[m.idx as usize].fetch_add(1, Ordering::SeqCst);
                }
            }
            self.reroute(batches.into_iter().map(|(m, _)| m).collect());
            return Ok(());
        }
        let conn = &mut self.conns[ci];
        conn.corr = conn.corr.wrapping_add(1);
        let corr = conn.corr;
        let mut parts = Vec::with_capacity(batches.len());
        let mut metas = Vec::with_capacity(batches.len());
        for (m, bytes) in batches {
            parts.push(PartitionProduceData::default().with_index(m.pid).with_records(Some(bytes)));
            metas.push(m);
        }
        let mut req = ProduceRequest::default()
            .with_transactional_id(self.txn_id.clone())
            .with_acks(self.acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default().with_name(self.topic.clone()).with_partition_data(parts)]);
        let frame = encode_request(ApiKey::Produce, self.version, corr, &req)?;
        // The frame holds a copy: take the batch buffers back for reuse (not those kept for a
        // retry: they are shared).
        for t in &mut req.topic_data {
            for p in &mut t.partition_data {
                if let Some(b) = p.records.take() {
                    if b.is_unique() {
                        spare.put_buf(Vec::from(b));
                    }
                }
            }
        }
        if self.deadline_ns != u64::MAX {
            // A broker that stops reading must not block this write past the deadline.
            let left = self.deadline_ns.saturating_sub(self.clock.now_ns()).max(1_000_000);
            conn.stream.set_write_timeout(Some(Duration::from_nanos(left))).map_err(|e| format!("{}: {e}", conn.addr))?;
        }
        if self.acks == 0 {
            conn.stream.write_all(&frame).map_err(|e| format!("send Produce to broker {}: {e}", conn.addr))?;
            let n: u64 = metas.iter().map(|m| m.intended.len() as u64).sum();
            self.metrics.producer.written_unacknowledged.fetch_add(n, Ordering::Relaxed);
            for m in metas {
                record_written_no_ack(&self.metrics, &m.intended);
                spare.put_intended(m.intended);
            }
            return Ok(());
        }
        for m in &metas {
            if m.retry.as_ref().is_none_or(|(_, sends)| *sends == 1) {
                self.in_flight[m.idx as usize].fetch_add(1, Ordering::SeqCst);
            }
        }
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        // The reader holds a clone of the receiver until the producer takes the connection
        // over (`reap_dead`), so this send cannot fail while the connection is ours.
        conn.tx.send(Pending { corr, batches: metas }).map_err(|_| format!("ack reader for {} is gone", conn.addr))?;
        if let Err(e) = conn.stream.write_all(&frame) {
            if self.clock.now_ns() >= self.deadline_ns || e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut {
                return Err(format!("send Produce to broker {}: {e}", conn.addr));
            }
            // Lost connection: the reader sees it end and the request is taken back from its
            // queue by `reap_dead`.
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        Ok(())
    }

    /// Send the batches queued for another try (per connection, in the order they were
    /// queued; at most one batch per partition per request). Batches of a stale partition, and
    /// those behind them, wait.
    fn send_retries(&mut self, spare: &mut Spare) -> Result<(), String> {
        if self.acks == 0 {
            return Ok(());
        }
        self.reap_dead();
        self.refresh_leaders();
        if self.identity.is_none() {
            return Ok(()); // only the idempotent producer retries
        }
        // A plain load first: this runs on every producer loop iteration.
        if !self.retry_waiting.load(Ordering::Acquire) || !self.retry_waiting.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let queued: Vec<PendingBatch> = std::mem::take(&mut *self.retries.lock().unwrap_or_else(|p| p.into_inner()));
        let mut wait = Vec::new();
        let mut held = std::collections::HashSet::new();
        let mut by_conn: Vec<Vec<PendingBatch>> = (0..self.conns.len()).map(|_| Vec::new()).collect();
        for m in queued {
            let i = m.idx as usize;
            match self.conn_of[i] {
                Some(ci) if !held.contains(&m.idx) && !self.stale[i].load(Ordering::SeqCst) => by_conn[ci].push(m),
                _ => {
                    held.insert(m.idx);
                    wait.push(m);
                }
            }
        }
        if !wait.is_empty() {
            let mut q = self.retries.lock().unwrap_or_else(|p| p.into_inner());
            // Keep them ahead of anything a reader queued meanwhile (per-partition order).
            wait.append(&mut q);
            *q = wait;
            self.retry_waiting.store(true, Ordering::SeqCst);
        }
        for (ci, mut queued) in by_conn.into_iter().enumerate() {
            while !queued.is_empty() {
                let mut this = Vec::new();
                let mut later = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for mut m in queued {
                    if seen.insert(m.idx) {
                        let Some((bytes, sends)) = m.retry.as_mut() else { continue };
                        *sends += 1;
                        let b = bytes.clone();
                        self.metrics.producer.retried_batches.fetch_add(1, Ordering::Relaxed);
                        this.push((m, b));
                    } else {
                        later.push(m);
                    }
                }
                self.write_request(ci, this, spare)?;
                queued = later;
            }
        }
        Ok(())
    }
}

/// A batch the broker acknowledged: its records count as acknowledged now, or — transactional
/// producer — when their transaction commits.
fn produce_acked(ctx: &ReaderCtx, rec: &mut AckRecorder, ack_ns: u64, intended: Vec<u64>, value_bytes: u64) {
    match &ctx.txn {
        Some(t) => t.hold(intended, value_bytes, ack_ns),
        None => record_ack(&ctx.metrics, rec, ack_ns, &intended, value_bytes),
    }
}

fn ack_reader(ctx: ReaderCtx, mut stream: BrokerStream, rx: crossbeam::channel::Receiver<Pending>) {
    let mut rec = AckRecorder::new();
    ack_loop(&ctx, &mut stream, &rx, &mut rec);
    rec.maybe_flush(&ctx.metrics, 0, true);
    // Requests never answered stay in the queue: the transport takes them over (a lost
    // connection, `reap_dead`) or times them out (`close`).
    if !ctx.closing.load(Ordering::SeqCst) {
        ctx.dead.store(true, Ordering::SeqCst);
    }
}

fn ack_loop(ctx: &ReaderCtx, stream: &mut BrokerStream, rx: &crossbeam::channel::Receiver<Pending>, rec: &mut AckRecorder) {
    let (addr, metrics) = (ctx.addr, &ctx.metrics);
    loop {
        let frame = match read_frame(stream) {
            Ok(f) => f,
            Err(e) => {
                // acks≠0: a lost connection is taken over by the producer thread (its requests
                // rerouted to the partitions' new leaders, see `KafkaTransport::reap_dead`).
                if ctx.acks == 0 && !ctx.closing.load(Ordering::SeqCst) && !metrics.stopped() {
                    metrics.fail(format!(
                        "connection to broker {addr} lost: {e} (with acks=0 a broker closes the connection when a produce fails)"
                    ));
                }
                return;
            }
        };
        let ack_ns = ctx.clock.now_ns();
        let Ok(p) = rx.try_recv() else {
            metrics.fail(format!("broker {addr} sent a response nobody asked for"));
            return;
        };
        let resp: ProduceResponse = match decode_response(ApiKey::Produce, ctx.version, p.corr, frame) {
            Ok(r) => r,
            Err(e) => {
                metrics.fail(format!("broker {addr}: {e}"));
                for b in &p.batches {
                    record_unacked(metrics, Unacked::TimedOut, ack_ns, b.intended.iter().copied());
                }
                return;
            }
        };
        let mut codes: HashMap<i32, i16> = HashMap::new();
        for t in &resp.responses {
            for pr in &t.partition_responses {
                codes.insert(pr.index, pr.error_code);
            }
        }
        let mut again = Vec::new();
        for b in p.batches {
            let code = codes.get(&b.pid).copied();
            let idx = b.idx as usize;
            let sends = b.retry.as_ref().map(|(_, s)| *s);
            if code.is_some_and(leadership) {
                // The leader moved: look it up again before the partition takes a batch.
                ctx.stale[idx].store(true, Ordering::SeqCst);
                ctx.stale_any.store(true, Ordering::SeqCst);
            }
            match code {
                Some(0) => produce_acked(ctx, rec, ack_ns, b.intended, b.value_bytes),
                Some(DUPLICATE_SEQUENCE_NUMBER) if sends.is_some() => {
                    // The broker already has this batch (an earlier send of it was written).
                    metrics.producer.duplicate_batches.fetch_add(1, Ordering::Relaxed);
                    produce_acked(ctx, rec, ack_ns, b.intended, b.value_bytes);
                }
                Some(c) if sends.is_some_and(|s| s < SENDS_MAX)
                    && (retriable(c) || c == OUT_OF_ORDER_SEQUENCE_NUMBER && ctx.retrying[idx].load(Ordering::SeqCst) > 0) =>
                {
                    // Sent again unchanged; a later batch of the partition refused as out of
                    // order because an earlier one is being retried follows it.
                    if sends == Some(1) {
                        ctx.retrying[idx].fetch_add(1, Ordering::SeqCst);
                    }
                    again.push(b);
                    continue;
                }
                Some(OUT_OF_ORDER_SEQUENCE_NUMBER) if sends.is_some() => {
                    if let Some(t) = &ctx.txn {
                        t.fail(OUT_OF_ORDER_SEQUENCE_NUMBER);
                    }
                    record_unacked(metrics, Unacked::Failed(OUT_OF_ORDER_SEQUENCE_NUMBER), ack_ns, b.intended.iter().copied());
                    metrics.fail(format!(
                        "broker {addr}: partition {} refused a batch with OUT_OF_ORDER_SEQUENCE_NUMBER (45): the broker lost or \
                         skipped records of this idempotent producer",
                        b.pid
                    ));
                }
                other => {
                    if sends.is_some() && other.is_some_and(retriable) {
                        metrics.fail(format!("broker {addr}: partition {} still refuses a batch after {SENDS_MAX} sends (error code {})", b.pid, other.unwrap_or(-1)));
                    }
                    if let Some(t) = &ctx.txn {
                        t.fail(other.unwrap_or(-1));
                    }
                    record_unacked(metrics, Unacked::Failed(other.unwrap_or(-1)), ack_ns, b.intended.iter().copied());
                }
            }
            if sends.is_some_and(|s| s > 1) {
                ctx.retrying[idx].fetch_sub(1, Ordering::SeqCst);
            }
            ctx.in_flight[idx].fetch_sub(1, Ordering::SeqCst);
        }
        if !again.is_empty() {
            ctx.retries.lock().unwrap_or_else(|p| p.into_inner()).extend(again);
            ctx.retry_waiting.store(true, Ordering::SeqCst);
        }
        rec.maybe_flush(metrics, ack_ns, false);
        ctx.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Transport for KafkaTransport {
    fn can_send(&self, p: u32) -> bool {
        self.in_flight[p as usize].load(Ordering::Acquire) < self.max_in_flight
            && self.retrying[p as usize].load(Ordering::Acquire) == 0
            && !self.stale[p as usize].load(Ordering::Acquire)
    }

    fn send(&mut self, batches: Vec<Ready>, spare: &mut Spare) -> Result<(), String> {
        self.send_retries(spare)?;
        if let Some(t) = &mut self.txn {
            if t.cut_off {
                // The drain deadline cut the transaction off: nothing more is sent.
                let now = self.clock.now_ns();
                for r in &batches {
                    record_unacked(&self.metrics, Unacked::TimedOut, now, r.intended.iter().copied());
                }
                return Ok(());
            }
            // AddPartitionsToTxn before a partition's first batch of the transaction.
            let new: Vec<u32> = batches.iter().map(|r| r.partition).filter(|&p| !t.added(p)).collect();
            if !new.is_empty() {
                let pids: Vec<(u32, i32)> = new.iter().map(|&p| (p, self.partition_ids[p as usize])).collect();
                let topic = self.topic.clone();
                if let Err((how, e)) = t.add_partitions(&topic, &pids, self.identity.unwrap_or((-1, -1)), self.clock, self.deadline_ns) {
                    // Not sent: the batches are accounted here (timed out at the drain deadline,
                    // else failed with the coordinator's code).
                    let now = self.clock.now_ns();
                    for r in &batches {
                        record_unacked(&self.metrics, how, now, r.intended.iter().copied());
                    }
                    // Cut off by the drain deadline: no failure of its own (the producer ends
                    // at the deadline); a refusal fails the run.
                    return if how == Unacked::TimedOut { Ok(()) } else { Err(e) };
                }
            }
        }
        let keep = self.identity.is_some();
        let mut by_conn: Vec<Vec<(PendingBatch, Bytes)>> = (0..self.conns.len()).map(|_| Vec::new()).collect();
        let mut lost = Vec::new();
        for r in batches {
            let bytes = Bytes::from(r.batch);
            let m = PendingBatch {
                idx: r.partition,
                pid: self.partition_ids[r.partition as usize],
                intended: r.intended,
                value_bytes: r.value_bytes,
                retry: keep.then(|| (bytes.clone(), 1)),
            };
            match self.conn_of[r.partition as usize] {
                Some(ci) => by_conn[ci].push((m, bytes)),
                None => lost.push((m, bytes)),
            }
        }
        if !lost.is_empty() {
            // No leader (stale partitions take no batch: only reached if one turned stale
            // between `can_send` and here).
            for (m, _) in &lost {
                self.in_flight[m.idx as usize].fetch_add(1, Ordering::SeqCst);
            }
            self.reroute(lost.into_iter().map(|(m, _)| m).collect());
        }
        for (ci, rs) in by_conn.into_iter().enumerate() {
            if !rs.is_empty() {
                self.write_request(ci, rs, spare)?;
            }
        }
        Ok(())
    }

    fn poll(&mut self, spare: &mut Spare) -> Result<(), String> {
        self.send_retries(spare)
    }

    fn idle(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) == 0 && !self.retry_waiting.load(Ordering::SeqCst)
    }

    fn producer_identity(&self) -> Option<(i64, i16)> {
        self.identity
    }

    fn end_transaction(&mut self) -> Result<(), String> {
        match &mut self.txn {
            Some(t) => t.end(self.identity.unwrap_or((-1, -1)), &self.metrics, self.clock, self.deadline_ns),
            None => Ok(()),
        }
    }

    fn set_deadline(&mut self, deadline_ns: u64) {
        self.deadline_ns = deadline_ns;
    }
}

#[cfg(test)]
mod tests {
    //! The idempotent producer's retries against a scripted broker on loopback: the real
    //! transport, sockets and ack reader; the broker answers each Produce with the next error
    //! code of its script and records the batches it was sent.
    use super::*;
    use crate::testbroker::{header, respond, serve, Served, CLOSE};
    use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    use std::sync::Mutex;

    const PRODUCE_V: i16 = 8;

    /// A scripted broker (`crate::testbroker`): Produce answers follow `script` (then 0;
    /// [`CLOSE`] closes the connection unanswered); InitProducerId answers
    /// COORDINATOR_LOAD_IN_PROGRESS twice, then producer 77 epoch 3; Metadata names `leader`
    /// (this broker when None) as the leader of partition 0 of topic "t". Returns the address
    /// and the batches received, in order.
    fn scripted_broker_led(script: Vec<i16>, leader: Option<SocketAddr>) -> (SocketAddr, Arc<Mutex<Vec<Bytes>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let script = Mutex::new(script.into_iter());
        let init_calls = AtomicU32::new(0);
        let apis = vec![(ApiKey::Produce, 3, PRODUCE_V), (ApiKey::InitProducerId, 0, 1)];
        let addr = serve(apis, leader, move |s, key, v, mut frame| {
            if key == ApiKey::InitProducerId as i16 {
                let h = header::<InitProducerIdRequest>(&mut frame, v);
                // A coordinator still loading first (Kafka answers 14 after a start).
                let code = if init_calls.fetch_add(1, Ordering::SeqCst) < 2 { 14 } else { 0 };
                let r = InitProducerIdResponse::default().with_error_code(code).with_producer_id(ProducerId(77)).with_producer_epoch(3);
                respond(s, h.correlation_id, v, &r);
            } else if key == ApiKey::Produce as i16 {
                let h = header::<ProduceRequest>(&mut frame, v);
                let req = ProduceRequest::decode(&mut frame, v).unwrap();
                let t = &req.topic_data[0];
                let p = &t.partition_data[0];
                g.lock().unwrap().push(p.records.clone().unwrap());
                let code = script.lock().unwrap().next().unwrap_or(0);
                if req.acks == 0 {
                    // No response; a refused acks=0 produce closes the connection.
                    if code != 0 {
                        let _ = s.shutdown(Shutdown::Both);
                        return Served::Close;
                    }
                    return Served::Continue;
                }
                if code == CLOSE {
                    let _ = s.shutdown(Shutdown::Both);
                    return Served::Close;
                }
                let r = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(vec![PartitionProduceResponse::default().with_index(p.index).with_error_code(code)])]);
                respond(s, h.correlation_id, v, &r);
            }
            Served::Continue
        });
        (addr, got)
    }

    fn scripted_broker(script: Vec<i16>) -> (SocketAddr, Arc<Mutex<Vec<Bytes>>>) {
        scripted_broker_led(script, None)
    }

    /// Produce one 10-record batch through an idempotent transport; wait (bounded) until
    /// nothing is in flight or the run failed.
    fn produce_once(script: Vec<i16>) -> (Arc<Metrics>, Vec<Bytes>) {
        let (addr, got) = scripted_broker(script);
        let layout = TopicLayout { topic: "t".into(), leaders: vec![(0, addr)] };
        let metrics = Arc::new(Metrics::new(true));
        let settings = crate::produce::ProducerSettings { acks: -1, idempotent: true, ..Default::default() };
        let mut t = KafkaTransport::connect_with(&layout, &settings, 5, Clock::new(), metrics.clone(), &Connector::plaintext()).unwrap();
        assert_eq!(t.producer_identity(), Some((77, 3)));
        let format = crate::encode::BatchFormat { producer_id: 77, producer_epoch: 3, ..Default::default() };
        let mut b = crate::encode::BatchBuilder::with_format(4096, format);
        for i in 0..10 {
            b.append(None, &[i as u8; 20], 0, i, 0, 1000);
        }
        let (batch, intended, vb) = b.finish();
        let mut spare = Spare::default();
        t.send(vec![Ready { partition: 0, batch, intended, value_bytes: vb }], &mut spare).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(t.idle() || metrics.stopped()) {
            assert!(Instant::now() < deadline, "transport never went idle");
            t.poll(&mut spare).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        t.close();
        let got = got.lock().unwrap().clone();
        (metrics, got)
    }

    fn base_sequence(batch: &[u8]) -> (i64, i16, i32) {
        (
            i64::from_be_bytes(batch[43..51].try_into().unwrap()),
            i16::from_be_bytes(batch[51..53].try_into().unwrap()),
            i32::from_be_bytes(batch[53..57].try_into().unwrap()),
        )
    }

    #[test]
    fn a_retried_batch_keeps_its_sequence() {
        // NOT_LEADER_OR_FOLLOWER, then REQUEST_TIMED_OUT, then success.
        let (m, got) = produce_once(vec![6, 7, 0]);
        assert_eq!(m.fatal(), None);
        assert_eq!(got.len(), 3, "sent three times");
        assert!(got.iter().all(|b| b == &got[0]), "byte for byte the same batch each time");
        assert_eq!(base_sequence(&got[0]), (77, 3, 0));
        assert_eq!(m.acked.load(Ordering::SeqCst), 10, "acknowledged once");
        assert_eq!(m.errors.load(Ordering::SeqCst), 0);
        assert_eq!(m.producer.retried_batches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn duplicate_sequence_counts_as_acknowledged() {
        let (m, got) = produce_once(vec![7, DUPLICATE_SEQUENCE_NUMBER]);
        assert_eq!(m.fatal(), None);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], got[1]);
        assert_eq!(m.acked.load(Ordering::SeqCst), 10);
        assert_eq!(m.producer.duplicate_batches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn out_of_order_sequence_fails_the_run() {
        let (m, got) = produce_once(vec![OUT_OF_ORDER_SEQUENCE_NUMBER]);
        assert_eq!(got.len(), 1, "not retried");
        let f = m.fatal().expect("the run failed");
        assert!(f.contains("OUT_OF_ORDER_SEQUENCE_NUMBER"), "{f}");
        assert_eq!(m.acked.load(Ordering::SeqCst), 0);
        assert_eq!(m.errors.load(Ordering::SeqCst), 10);
    }

    /// acks=0: written records are counted as written, never acknowledged, nothing waits for a
    /// response; a broker closing the connection (how it reports a failed acks=0 produce)
    /// fails the run.
    #[test]
    fn acks_zero_counts_writes_and_a_closed_connection_fails_the_run() {
        for (script, fails) in [(vec![0, 0], false), (vec![0, 6], true)] {
            let (addr, got) = scripted_broker(script);
            let layout = TopicLayout { topic: "t".into(), leaders: vec![(0, addr)] };
            let metrics = Arc::new(Metrics::new(true));
            let settings = crate::produce::ProducerSettings { acks: 0, ..Default::default() };
            let mut t = KafkaTransport::connect_with(&layout, &settings, 1, Clock::new(), metrics.clone(), &Connector::plaintext()).unwrap();
            let mut spare = Spare::default();
            for _ in 0..2 {
                let mut b = crate::encode::BatchBuilder::new(4096);
                for i in 0..10 {
                    b.append(None, &[1; 20], 0, i, 0, 1000);
                }
                let (batch, intended, vb) = b.finish();
                assert!(t.can_send(0), "acks=0 has no in-flight window to fill");
                t.send(vec![Ready { partition: 0, batch, intended, value_bytes: vb }], &mut spare).unwrap();
                assert!(t.idle(), "nothing in flight with acks=0");
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while got.lock().unwrap().len() < 2 || fails && !metrics.stopped() {
                assert!(Instant::now() < deadline, "broker got {} requests", got.lock().unwrap().len());
                std::thread::sleep(Duration::from_millis(1));
            }
            t.close();
            assert_eq!(metrics.producer.written_unacknowledged.load(Ordering::SeqCst), 20);
            assert_eq!(metrics.acked.load(Ordering::SeqCst), 0);
            match metrics.fatal() {
                Some(f) => assert!(fails && f.contains("acks=0"), "{f}"),
                None => assert!(!fails, "a closed acks=0 connection must fail the run"),
            }
        }
    }

    #[test]
    fn a_refusal_that_never_clears_fails_after_the_bounded_sends() {
        let (m, got) = produce_once(vec![6; 50]);
        assert_eq!(got.len(), SENDS_MAX as usize);
        assert!(m.fatal().expect("failed").contains("still refuses"));
        assert_eq!(m.acked.load(Ordering::SeqCst), 0);
    }

    /// Send `n` 10-record batches of partition 0 one after the other through a transport
    /// first led by `addr`, waiting (bounded) for each to settle. Checks the run accounting:
    /// every record sent ends acknowledged, failed or timed out.
    fn produce_batches(addr: SocketAddr, idempotent: bool, n: usize) -> Arc<Metrics> {
        let layout = TopicLayout { topic: "t".into(), leaders: vec![(0, addr)] };
        let metrics = Arc::new(Metrics::new(true));
        let settings = crate::produce::ProducerSettings { acks: -1, idempotent, ..Default::default() };
        let mut t = KafkaTransport::connect_with(&layout, &settings, 5, Clock::new(), metrics.clone(), &Connector::plaintext()).unwrap();
        let format = match t.producer_identity() {
            Some((id, e)) => crate::encode::BatchFormat { producer_id: id, producer_epoch: e, ..Default::default() },
            None => crate::encode::BatchFormat::default(),
        };
        let mut spare = Spare::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut b = crate::encode::BatchBuilder::with_format(4096, format);
        for k in 0..n {
            for i in 0..10 {
                b.append(None, &[k as u8; 20], 0, i, 0, 1000);
            }
            let (batch, intended, vb) = b.finish();
            while !t.can_send(0) {
                assert!(Instant::now() < deadline, "partition 0 never took a batch again");
                t.poll(&mut spare).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            t.send(vec![Ready { partition: 0, batch, intended, value_bytes: vb }], &mut spare).unwrap();
            while !(t.idle() || metrics.stopped()) {
                assert!(Instant::now() < deadline, "transport never went idle");
                t.poll(&mut spare).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        t.close();
        let a = &metrics.acct[1];
        let l = |x: &AtomicU64| x.load(Ordering::SeqCst);
        assert_eq!(l(&a.acked) + l(&a.failed) + l(&a.timed_out), 10 * n as u64, "every record accounted once");
        assert_eq!(l(&metrics.acked), l(&a.acked));
        metrics
    }

    /// NOT_LEADER_OR_FOLLOWER from the first leader, whose Metadata now names a second broker:
    /// the idempotent producer sends the batch there unchanged and it is acknowledged there.
    #[test]
    fn not_leader_moves_the_partition_to_the_new_leader() {
        let (b_addr, b_got) = scripted_broker(vec![]);
        let (a_addr, a_got) = scripted_broker_led(vec![6], Some(b_addr));
        let m = produce_batches(a_addr, true, 2);
        assert_eq!(m.fatal(), None);
        let (a_got, b_got) = (a_got.lock().unwrap().clone(), b_got.lock().unwrap().clone());
        assert_eq!(a_got.len(), 1, "refused once by the old leader, then nothing more sent there");
        assert_eq!(b_got.len(), 2, "the retried batch and the next one go to the new leader");
        assert_eq!(b_got[0], a_got[0], "byte for byte the same batch (same sequence)");
        assert_eq!(base_sequence(&b_got[1]).2, 10, "the next batch follows in sequence");
        assert_eq!(m.acked.load(Ordering::SeqCst), 20);
        assert_eq!(m.errors.load(Ordering::SeqCst), 0);
        assert_eq!(m.producer.leader_changes.load(Ordering::SeqCst), 1);
        assert_eq!(m.producer.retried_batches.load(Ordering::SeqCst), 1);
    }

    /// Without idempotence the refused batch counts as failed with its code (no resend that
    /// could duplicate it) and the next batch goes to the new leader.
    #[test]
    fn not_leader_without_idempotence_fails_the_batch_and_follows_the_leader() {
        let (b_addr, b_got) = scripted_broker(vec![]);
        let (a_addr, a_got) = scripted_broker_led(vec![6], Some(b_addr));
        let m = produce_batches(a_addr, false, 2);
        assert_eq!(m.fatal(), None);
        assert_eq!(a_got.lock().unwrap().len(), 1);
        assert_eq!(b_got.lock().unwrap().len(), 1);
        assert_eq!(m.acked.load(Ordering::SeqCst), 10);
        assert_eq!(m.errors.load(Ordering::SeqCst), 10);
        assert_eq!(m.failed_codes.lock().unwrap().get(&6).copied(), Some(10));
        assert_eq!(m.producer.leader_changes.load(Ordering::SeqCst), 1);
    }

    /// The leader's connection closes with a request unanswered: the idempotent producer
    /// reconnects to the leader Metadata names and sends the batch again unchanged; without
    /// idempotence the batch counts as failed (NETWORK_EXCEPTION) and production goes on.
    #[test]
    fn a_lost_connection_is_taken_over_by_the_new_leader() {
        for idempotent in [true, false] {
            let (b_addr, b_got) = scripted_broker(vec![]);
            let (a_addr, a_got) = scripted_broker_led(vec![CLOSE], Some(b_addr));
            let m = produce_batches(a_addr, idempotent, 2);
            assert_eq!(m.fatal(), None, "a lost connection is no longer fatal");
            let (a_got, b_got) = (a_got.lock().unwrap().clone(), b_got.lock().unwrap().clone());
            assert_eq!(a_got.len(), 1);
            assert_eq!(m.producer.connections_lost.load(Ordering::SeqCst), 1);
            if idempotent {
                assert_eq!(b_got.len(), 2);
                assert_eq!(b_got[0], a_got[0], "same bytes, same sequence");
                assert_eq!(m.acked.load(Ordering::SeqCst), 20);
                assert_eq!(m.errors.load(Ordering::SeqCst), 0);
            } else {
                assert_eq!(b_got.len(), 1);
                assert_eq!(m.acked.load(Ordering::SeqCst), 10);
                assert_eq!(m.failed_codes.lock().unwrap().get(&NETWORK_EXCEPTION).copied(), Some(10));
            }
        }
    }

    /// A leader unreachable at start: the partition waits (stale) and moves to the leader
    /// Metadata names; the run does not fail at connect.
    #[test]
    fn an_unreachable_leader_at_start_is_waited_for() {
        let (b_addr, b_got) = scripted_broker(vec![]);
        let (a_addr, _a_got) = scripted_broker_led(vec![], Some(b_addr));
        // A dead address first (bound then released), then the live broker A.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let layout = TopicLayout { topic: "t".into(), leaders: vec![(0, dead), (1, a_addr)] };
        let metrics = Arc::new(Metrics::new(true));
        let settings = crate::produce::ProducerSettings { acks: -1, ..Default::default() };
        let mut t = KafkaTransport::connect_with(&layout, &settings, 5, Clock::new(), metrics.clone(), &Connector::plaintext()).unwrap();
        assert!(!t.can_send(0), "partition 0 has no reachable leader yet");
        let mut spare = Spare::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.can_send(0) {
            assert!(Instant::now() < deadline, "partition 0 never got a leader");
            t.poll(&mut spare).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut b = crate::encode::BatchBuilder::new(4096);
        b.append(None, &[1; 20], 0, 0, 0, 1000);
        let (batch, intended, vb) = b.finish();
        t.send(vec![Ready { partition: 0, batch, intended, value_bytes: vb }], &mut spare).unwrap();
        while !t.idle() {
            assert!(Instant::now() < deadline, "never acknowledged");
            t.poll(&mut spare).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        t.close();
        assert_eq!(b_got.lock().unwrap().len(), 1, "sent to the leader Metadata named");
        assert_eq!(metrics.acked.load(Ordering::SeqCst), 1);
    }

    /// One run of the real `run_producer` + `KafkaTransport` (no key, one partition, 100 B,
    /// acks=-1, 64 KiB batches; `run_ns` of schedule at `rate`, then up to `drain_ns`) against
    /// a scripted broker that answers each Produce after `service`, one at a time per
    /// connection.
    struct ScriptedRun {
        /// Records the producer generated.
        made: u64,
        metrics: Arc<Metrics>,
        /// Records per batch, in the order the broker received them.
        batch_records: Vec<i32>,
        /// Voluntary context switches of the generator thread during `run_producer`.
        switches: u64,
    }

    fn produce_to_scripted_broker(rate: f64, run_ns: u64, linger_ns: u64, drain_ns: u64, service: Duration) -> ScriptedRun {
        let got = Arc::new(Mutex::new(Vec::<i32>::new()));
        let g = got.clone();
        let addr = serve(vec![(ApiKey::Produce, 3, PRODUCE_V)], None, move |s, key, v, mut frame| {
            if key == ApiKey::Produce as i16 {
                let h = header::<ProduceRequest>(&mut frame, v);
                let req = ProduceRequest::decode(&mut frame, v).unwrap();
                let t = &req.topic_data[0];
                let p = &t.partition_data[0];
                let records = p.records.as_ref().unwrap();
                g.lock().unwrap().push(i32::from_be_bytes(records[57..61].try_into().unwrap()));
                if !service.is_zero() {
                    std::thread::sleep(service);
                }
                let r = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(vec![PartitionProduceResponse::default().with_index(p.index)])]);
                respond(s, h.correlation_id, v, &r);
            }
            Served::Continue
        });
        let layout = TopicLayout { topic: "t".into(), leaders: vec![(0, addr)] };
        let metrics = Arc::new(Metrics::new(true));
        let clock = Clock::new();
        let settings = crate::produce::ProducerSettings { acks: -1, ..Default::default() };
        let mut t = KafkaTransport::connect_with(&layout, &settings, 1, clock, metrics.clone(), &Connector::plaintext()).unwrap();
        let start = clock.now_ns() + 10_000_000;
        let end = start + run_ns;
        let spec = crate::producer::ProducerSpec {
            partitions: 1,
            schedule: crate::rate::Schedule::new(start, rate),
            end_ns: end,
            drain_deadline_ns: end + drain_ns,
            batch_bytes: 64 << 10,
            linger_ns,
            queued_bytes_max: 64 << 20,
            halt: Arc::new(AtomicBool::new(false)),
            settings,
        };
        let mut keys = crate::encode::KeyGen::new(crate::workload::KeyDistributor::NoKey, 1, 1.0, 1, 1);
        let pool = crate::encode::PayloadPool::new(100, 16, 1.0, 1);
        let s0 = voluntary_switches();
        let made = crate::producer::run_producer(&spec, &mut keys, &pool, &clock, &metrics, &mut t).unwrap();
        let switches = voluntary_switches() - s0;
        t.close();
        let batch_records = got.lock().unwrap().clone();
        ScriptedRun { made, metrics, batch_records, switches }
    }

    /// Voluntary context switches of the calling thread so far.
    fn voluntary_switches() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = s.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn batches_grow_while_a_slow_target_holds_the_window() {
        // A target that serves one Produce per connection at a time and takes 10 ms for each
        // (as a replicated Kafka does with acks=all: it mutes the connection until the followers
        // have the batch). The 10 ms sleep is that service time, not a wait for a condition.
        // At 4,000 rec/s with 1 ms linger and one request in flight, batches closed at linger
        // would hold ~4 records: 100 requests/s x 4 = 400 rec/s, a tenth of the schedule.
        // Held open while the window is full, they grow to what arrived meanwhile (~40 records)
        // and every record is acknowledged.
        let r = produce_to_scripted_broker(4000.0, 1_500_000_000, 1_000_000, 3_000_000_000, Duration::from_millis(10));
        let a = &r.metrics.acct[1];
        let (scheduled, acked) = (a.scheduled.load(Ordering::SeqCst), a.acked.load(Ordering::SeqCst));
        let sizes = &r.batch_records;
        assert_eq!(r.made, 6000);
        assert_eq!(
            (scheduled, acked, a.timed_out.load(Ordering::SeqCst), a.not_sent.load(Ordering::SeqCst)),
            (6000, 6000, 0, 0),
            "every record acknowledged by the drain deadline; {} batches, largest {} records",
            sizes.len(),
            sizes.iter().max().unwrap_or(&0)
        );
        let largest = sizes.iter().copied().max().unwrap_or(0);
        assert!(largest >= 20, "batches grew past linger size (~4 records) while the window was full: largest {largest} of {}", sizes.len());
    }

    #[test]
    fn the_generator_sleeps_until_its_batch_must_close_not_until_the_next_record() {
        // 20,000 rec/s of 100 B, no key, one partition, 64 KiB batches (~590 records, one
        // every ~30 ms), linger 100 ms, against a target that answers at once. A generator that
        // wakes for every record due sleeps once per record: ~20,000 sleeps in the second (fewer
        // only if each 50 µs sleep overshoots by more than its own length). One that defers
        // generation until the open batch can fill sleeps ~1,000 times (at most 1 ms at a time).
        // Every record is still acknowledged, in full batches.
        let r = produce_to_scripted_broker(20_000.0, 1_000_000_000, 100_000_000, 5_000_000_000, Duration::ZERO);
        let a = &r.metrics.acct[1];
        assert_eq!(r.made, 20_000);
        assert_eq!(
            (a.scheduled.load(Ordering::SeqCst), a.acked.load(Ordering::SeqCst), a.timed_out.load(Ordering::SeqCst), a.not_sent.load(Ordering::SeqCst)),
            (20_000, 20_000, 0, 0)
        );
        let mut sizes = r.batch_records.clone();
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2];
        assert!(median >= 500, "batches stay full (~590 records): median {median} of {} batches", sizes.len());
        let sleeps = r.switches;
        assert!(sleeps < 3_000, "{sleeps} voluntary switches of the generator thread for 20,000 records in ~{} batches", sizes.len());
    }
}

#[cfg(test)]
mod fetch_request_tests {
    use super::*;

    #[test]
    fn fetch_request_groups_partitions_by_topic_in_first_seen_order() {
        let req = fetch_request([("b", 1, 10), ("a", 0, 5), ("b", 0, 7)], 100, 1 << 20);
        let got: Vec<(String, Vec<(i32, i64)>)> = req
            .topics
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.iter().map(|p| (p.partition, p.fetch_offset)).collect()))
            .collect();
        assert_eq!(got, vec![("b".to_string(), vec![(1, 10), (0, 7)]), ("a".to_string(), vec![(0, 5)])]);
        assert_eq!(req.max_wait_ms, 100);
        assert!(req.topics.iter().flat_map(|t| &t.partitions).all(|p| p.partition_max_bytes == 1 << 20 && p.log_start_offset == -1));
        // A consumer's request: no replica, read_uncommitted, no session.
        assert_eq!((req.replica_id, req.isolation_level, req.session_id, req.session_epoch), (BrokerId(-1), 0, 0, -1));
    }
}
