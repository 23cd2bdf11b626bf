//! One handler per API. Each takes the decoded header and the body and returns a [`Reply`].
//! A request that cannot be parsed, an unknown API key or an unsupported version (other than
//! for ApiVersions) closes the connection with a logged reason, as Kafka does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use uuid::Uuid;
use kafka_protocol::protocol::StrBytes;

use super::auth::{self, Authz, Operation, ResourceType, SaslState};
use super::{ConnCtx, Reply, Shared, FETCH_WAIT_MS_MAX};
use crate::log::{AppendError, FetchError, Partition, TopicError};
use crate::wire::{self, error, fetch, HeaderError};

mod admin;
mod delete_records;
mod security;

/// API keys routed to the group coordinator (`crate::groups::handle`).
pub const GROUP_API_KEYS: [i16; 14] = [8, 9, 10, 11, 12, 13, 14, 15, 16, 22, 42, 47, 68, 69];

/// (api key, min version, max version) served by the broker itself.
pub const BROKER_APIS: &[(i16, i16, i16)] = &[
    (0, 0, 11), // Produce (0–2 advertised for librdkafka's compression check, answered with UNSUPPORTED_VERSION)
    (1, 4, 12), // Fetch
    (2, 1, 7),  // ListOffsets
    (3, 0, 12), // Metadata
    (18, 0, 4), // ApiVersions
    (19, 2, 7), // CreateTopics
    (20, 1, 6), // DeleteTopics
    (21, 0, 2), // DeleteRecords
    (32, 1, 4), // DescribeConfigs
    (33, 0, 2), // AlterConfigs
    (35, 1, 4), // DescribeLogDirs
    (37, 0, 3), // CreatePartitions
    (44, 0, 1), // IncrementalAlterConfigs
    (60, 0, 2), // DescribeCluster
    (17, 0, 1), // SaslHandshake
    (36, 0, 2), // SaslAuthenticate
    (29, 1, 3), // DescribeAcls
    (30, 1, 3), // CreateAcls
    (31, 1, 3), // DeleteAcls
    (50, 0, 0), // DescribeUserScramCredentials
    (51, 0, 0), // AlterUserScramCredentials
];

fn version_range(api_key: i16) -> Option<(i16, i16)> {
    BROKER_APIS
        .iter()
        .chain(crate::groups::SUPPORTED_APIS.iter())
        .chain(crate::txn::TXN_APIS.iter())
        .find(|(k, _, _)| *k == api_key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// Decode the frame's header and run the API's handler.
pub(crate) fn handle(shared: &Arc<Shared>, ctx: &mut ConnCtx, frame: Vec<u8>) -> Reply {
    if ctx.session.expects_raw_token() {
        // After a v0 SaslHandshake the frames are bare SASL tokens, not requests.
        return auth::sasl::raw_token(shared, ctx, frame);
    }
    if matches!(ctx.session.sasl, SaslState::Failed) {
        return Reply::Close("request after a failed SASL authentication".into());
    }
    let mut body = Bytes::from(frame);
    let (key, header) = match wire::parse_request_header(&mut body) {
        Ok(h) => h,
        Err(HeaderError::UnknownApiKey(k)) => return Reply::Close(format!("unknown API key {k}")),
        Err(e) => return Reply::Close(e.to_string()),
    };
    let version = header.request_api_version;
    let raw_key = key as i16;
    if key == ApiKey::ApiVersions {
        return api_versions(&header, body);
    }
    if !ctx.session.authenticated() && !matches!(key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
        // As Kafka: on a SASL listener nothing else is served before authentication.
        return Reply::Close(format!("{key:?} before SASL authentication on a {} listener", ctx.protocol.name()));
    }
    let az = Authz::new(&shared.security, ctx.session.principal(), ctx.peer.ip());
    if az.enabled() {
        // Authorization of the transaction APIs (and a transactional InitProducerId) first.
        if let Some(reply) = security::txn_request(shared, &az, raw_key, version, &header, &body) {
            return reply;
        }
    }
    // Transaction APIs, and InitProducerId with a transactional id (without: the group
    // coordinator's producer ids).
    if let Some(reply) = crate::txn::route(&shared.txn, raw_key, version, &header, &mut body) {
        return reply;
    }
    if GROUP_API_KEYS.contains(&raw_key) {
        if az.enabled() {
            return security::group_request(shared, ctx, &az, raw_key, version, &header, body);
        }
        return crate::groups::handle_from(&shared.groups, ctx.advertised(), Some(ctx.peer), raw_key, version, &header, &mut body).into();
    }
    match version_range(raw_key) {
        Some((lo, hi)) if (lo..=hi).contains(&version) => {}
        _ => return Reply::Close(format!("unsupported version {version} of API {key:?} ({raw_key})")),
    }
    let cid = header.correlation_id;
    drop(header); // releases its references into the frame (Produce reuses the frame in place)
    let r = match key {
        ApiKey::Produce if version <= 2 => produce_legacy(cid, version, body),
        ApiKey::Produce => produce(shared, &az, cid, version, body, false),
        ApiKey::Fetch => fetch(shared, &az, cid, version, body),
        ApiKey::Metadata => metadata(shared, ctx, &az, cid, version, body, false),
        ApiKey::ListOffsets => list_offsets(shared, &az, cid, version, body),
        ApiKey::CreateTopics => create_topics(shared, &az, cid, version, body),
        ApiKey::DeleteTopics => delete_topics(shared, &az, cid, version, body),
        ApiKey::DeleteRecords => delete_records::delete_records(shared, &az, cid, version, body),
        ApiKey::DescribeConfigs => admin::describe_configs(shared, &az, cid, version, body),
        ApiKey::AlterConfigs => admin::alter_configs(shared, &az, cid, version, body),
        ApiKey::IncrementalAlterConfigs => admin::incremental_alter_configs(shared, &az, cid, version, body),
        ApiKey::CreatePartitions => admin::create_partitions(shared, &az, cid, version, body),
        ApiKey::DescribeLogDirs => admin::describe_log_dirs(shared, &az, cid, version, body),
        ApiKey::DescribeCluster => admin::describe_cluster(shared, ctx, &az, cid, version, body),
        ApiKey::SaslHandshake => auth::sasl::handshake(shared, ctx, cid, version, body),
        ApiKey::SaslAuthenticate => auth::sasl::authenticate(shared, ctx, cid, version, body),
        ApiKey::CreateAcls => security::create_acls(&az, cid, version, body),
        ApiKey::DescribeAcls => security::describe_acls(&az, cid, version, body),
        ApiKey::DeleteAcls => security::delete_acls(&az, cid, version, body),
        ApiKey::DescribeUserScramCredentials => security::describe_scram(&az, cid, version, body),
        ApiKey::AlterUserScramCredentials => security::alter_scram(&az, cid, version, body),
        _ => Err(format!("API {key:?} is not served")),
    };
    r.unwrap_or_else(|reason| Reply::Close(format!("{key:?} v{version}: {reason}")))
}

type Handled = Result<Reply, String>;

/// Topics the broker owns (`crate::groups::INTERNAL_TOPICS`): clients may read
/// `__consumer_offsets` but never write, delete or re-create them — a forged or lost record
/// there rewrites committed offsets or re-grants producer ids, and so loses acknowledged data.
fn is_internal_topic(name: &str) -> bool {
    crate::groups::INTERNAL_TOPICS.contains(&name) || name == crate::txn::TXN_STATE_TOPIC
}

/// Internal topics not shown to clients at all (Kafka clients do not know them): Metadata
/// answers UNKNOWN_TOPIC_OR_PARTITION for them, as Kafka does for its `__cluster_metadata`.
fn is_hidden_topic(name: &str) -> bool {
    name == crate::groups::store::PRODUCER_IDS_TOPIC || name == crate::txn::TXN_STATE_TOPIC
}

// ---------------------------------------------------------------------------------------------
// ApiVersions

fn api_versions(header: &RequestHeader, mut body: Bytes) -> Reply {
    let version = header.request_api_version;
    let api_keys: Vec<ApiVersion> = BROKER_APIS
        .iter()
        .chain(crate::groups::SUPPORTED_APIS.iter())
        .chain(crate::txn::TXN_APIS.iter())
        .map(|&(k, lo, hi)| ApiVersion::default().with_api_key(k).with_min_version(lo).with_max_version(hi))
        .collect();
    if !(0..=4).contains(&version) {
        // As Kafka: UNSUPPORTED_VERSION with a v0 body listing what we support.
        let resp = ApiVersionsResponse::default().with_error_code(error::UNSUPPORTED_VERSION).with_api_keys(api_keys);
        return Reply::Now(wire::encode_response(header.correlation_id, ApiKey::ApiVersions, 0, &resp));
    }
    let code = match wire::decode_body::<ApiVersionsRequest>(&mut body, version) {
        Ok(_) => error::NONE,
        Err(_) => error::INVALID_REQUEST,
    };
    // Defaults for the v3+ tagged fields (features, epoch -1) are omitted by the encoder, which
    // librdkafka 2.0.2 needs.
    let resp = ApiVersionsResponse::default().with_error_code(code).with_api_keys(api_keys);
    Reply::Now(wire::encode_response(header.correlation_id, ApiKey::ApiVersions, version, &resp))
}

// ---------------------------------------------------------------------------------------------
// Produce

fn append_error_code(e: &AppendError) -> i16 {
    match e {
        AppendError::Corrupt(_) => error::CORRUPT_MESSAGE,
        AppendError::Poisoned(_) | AppendError::Storage(_) => error::KAFKA_STORAGE_ERROR,
        AppendError::DuplicateSequence(_) => error::DUPLICATE_SEQUENCE_NUMBER,
        AppendError::OutOfOrderSequence { .. } => error::OUT_OF_ORDER_SEQUENCE_NUMBER,
        AppendError::ProducerFenced { .. } => error::INVALID_PRODUCER_EPOCH,
        AppendError::UnknownProducer(_) => error::UNKNOWN_PRODUCER_ID,
        AppendError::TooManyOffsets { .. } => INVALID_RECORD,
    }
}

fn topic_error_code(e: &TopicError) -> i16 {
    match e {
        TopicError::InvalidName(_) => error::INVALID_TOPIC_EXCEPTION,
        TopicError::AlreadyExists(_) => error::TOPIC_ALREADY_EXISTS,
        TopicError::Unknown(_) => error::UNKNOWN_TOPIC_OR_PARTITION,
        TopicError::InvalidPartitions(_) => error::INVALID_PARTITIONS,
        TopicError::InvalidConfig(_) => error::INVALID_CONFIG,
        TopicError::Recovery(_) | TopicError::Io(_) | TopicError::Locked(_) | TopicError::StoredConfig(_) => {
            error::KAFKA_STORAGE_ERROR
        }
    }
}

/// Kafka's NOT_ENOUGH_REPLICAS.
const NOT_ENOUGH_REPLICAS: i16 = 19;
/// Kafka's INVALID_RECORD (a record a topic cannot take: no key on a compacted topic).
const INVALID_RECORD: i16 = 87;

/// Find a partition, creating the topic when allowed. Err = Kafka error code.
fn resolve_partition(shared: &Shared, topic: &str, partition: i32, create: bool) -> Result<Arc<Partition>, i16> {
    partition_in(&resolve_topic(shared, topic, create)?, partition)
}

/// A topic's partitions (auto-created if `create` and the broker allows it). Produce and Fetch
/// resolve it once per topic of a request, not per partition: at 1,000 partitions the
/// per-partition lookup (the topic map's lock and the topic's reference count, shared by every
/// network thread) was a visible share of the CPU.
fn resolve_topic(shared: &Shared, topic: &str, create: bool) -> Result<crate::log::manager::Topic, i16> {
    match shared.logs.topic(topic) {
        Some(t) => Ok(t),
        None if create && shared.cfg.auto_create_topics => shared.logs.get_or_create(topic, shared.cfg.default_partitions).map_err(|e| {
            tracing::warn!(topic, "auto-create failed: {e}");
            topic_error_code(&e)
        }),
        None => Err(error::UNKNOWN_TOPIC_OR_PARTITION),
    }
}

/// Partition `partition` of a resolved topic.
fn partition_in(t: &crate::log::manager::Topic, partition: i32) -> Result<Arc<Partition>, i16> {
    usize::try_from(partition).ok().and_then(|i| t.get(i).cloned()).ok_or(error::UNKNOWN_TOPIC_OR_PARTITION)
}

/// The declared size of the first batch in `records` larger than `limit` (Kafka's
/// message.max.bytes, checked per batch). A malformed list is left to the log's validation.
fn batch_over(records: &[u8], limit: usize) -> Option<i64> {
    let mut at = 0usize;
    while let Some(size) = records.get(at..).and_then(crate::record::declared_size) {
        if size > limit as i64 {
            return Some(size);
        }
        if size <= 0 {
            return None;
        }
        at = at.saturating_add(size as usize);
    }
    None
}

/// Kafka's INVALID_TXN_STATE.
const INVALID_TXN_STATE: i16 = 48;

/// The transaction checks of a Produce partition's batches, as Kafka's: no control batch from
/// a client (INVALID_RECORD); a transactional batch only in a request with a transactional id
/// (INVALID_TXN_STATE) and, with one, only transactional batches of one producer id and epoch
/// (INVALID_RECORD). `Ok(Some((id, pid, epoch)))`: append through the transaction coordinator.
/// Batches whose headers do not parse are left to the log's validation.
fn txn_produce_check(txn_id: &Option<String>, records: &[u8], max: usize) -> Result<Option<(String, i64, i16)>, i16> {
    let mut at = 0usize;
    let mut producer: Option<(i64, i16)> = None;
    let mut transactional = false;
    let mut plain = false;
    while at < records.len() {
        let Ok(info) = crate::record::parse_header_only(&records[at..], max) else { break };
        if info.is_control() {
            return Err(INVALID_RECORD);
        }
        if info.is_transactional() {
            transactional = true;
            match producer {
                None => producer = Some((info.producer_id, info.producer_epoch)),
                Some(p) if p != (info.producer_id, info.producer_epoch) => return Err(INVALID_RECORD),
                Some(_) => {}
            }
        } else {
            plain = true;
        }
        if info.size_bytes == 0 {
            break;
        }
        at = at.saturating_add(info.size_bytes);
    }
    match (txn_id, transactional) {
        (None, true) => Err(INVALID_TXN_STATE),
        (None, false) => Ok(None),
        (Some(_), _) if plain => Err(INVALID_RECORD),
        (Some(_), false) => Ok(None),
        (Some(id), true) => {
            let (pid, epoch) = producer.unwrap_or((-1, -1));
            Ok(Some((id.clone(), pid, epoch)))
        }
    }
}

/// A partition of a Produce request: index and its records' byte range within the frame body.
type PartitionRecords = (i32, Option<std::ops::Range<usize>>);

struct ProducedPartition {
    index: i32,
    error_code: i16,
    base_offset: i64,
    log_start_offset: i64,
    /// The time the batches were stamped with (message.timestamp.type=LogAppendTime), or -1.
    log_append_time: i64,
    /// Wait for this to be durable before answering (group durability).
    wait: Option<(Arc<Partition>, u64)>,
}

/// `on_pool`: run on the blocking pool (a topic it names is created here); else a request
/// that would auto-create a topic is handed to the pool whole ([`Reply::Pool`]): creating makes
/// directories and fsyncs, which must not hold up the network thread's other connections.
fn produce(shared: &Arc<Shared>, az: &Authz, cid: i32, version: i16, body: Bytes, on_pool: bool) -> Handled {
    let body_start = body.as_ptr() as usize;
    // Decode from a clone so that, once the request is dropped, `body` is the only reference
    // to the frame and can be turned back into a mutable buffer without copying.
    let req: ProduceRequest = wire::decode_body(&mut body.clone(), version)?;
    let acks = req.acks;
    // Transactional batches are appended only within their transaction (`crate::txn`).
    let txn_id: Option<String> = req.transactional_id.as_ref().map(|t| t.0.to_string());
    // (topic, [(partition, record byte range within body)])
    let mut plan: Vec<(String, Vec<PartitionRecords>)> = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let parts = t
            .partition_data
            .into_iter()
            .map(|p| {
                let range = p.records.as_ref().and_then(|r| {
                    let start = (r.as_ptr() as usize).checked_sub(body_start)?;
                    Some(start..start.checked_add(r.len())?)
                });
                (p.index, range)
            })
            .collect();
        plan.push((t.name.0.to_string(), parts));
    }
    if !on_pool
        && shared.cfg.auto_create_topics
        && plan.iter().any(|(t, _)| {
            shared.logs.topic(t).is_none()
                && !is_internal_topic(t)
                && az.allows(Operation::Write, ResourceType::Topic, t)
                && az.may_create_topic(t)
        })
    {
        drop(plan);
        let (shared, az) = (shared.clone(), az.clone());
        return Ok(Reply::Pool(Box::new(move || {
            produce(&shared, &az, cid, version, body, true).unwrap_or_else(|reason| Reply::Close(format!("Produce v{version}: {reason}")))
        })));
    }
    let mut buf: BytesMut = match body.try_into_mut() {
        Ok(b) => b,
        Err(shared_body) => BytesMut::from(&shared_body[..]),
    };
    let mut results: Vec<(String, Vec<ProducedPartition>)> = Vec::with_capacity(plan.len());
    // A transactional id needs Write on it (as Kafka: every partition refused otherwise).
    let txn_denied = txn_id.as_ref().is_some_and(|t| !az.allows(Operation::Write, ResourceType::TransactionalId, t));
    // Long-polling fetches are woken once this request's appends are all in, not at the first
    // (`HwWakeBatch`: at 1,000 partitions a fetch per few records would re-read them all).
    let wakes = crate::log::HwWakeBatch::open();
    for (topic, parts) in plan {
        let mut out = Vec::with_capacity(parts.len());
        let write_ok = az.allows(Operation::Write, ResourceType::Topic, &topic);
        let may_create = write_ok && az.may_create_topic(&topic);
        // Resolved at the first partition that gets that far, then reused.
        let mut resolved: Option<Result<crate::log::manager::Topic, i16>> = None;
        for (index, range) in parts {
            let mut r = ProducedPartition {
                index,
                error_code: 0,
                base_offset: -1,
                log_start_offset: -1,
                log_append_time: -1,
                wait: None,
            };
            if txn_denied {
                r.error_code = auth::codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
                out.push(r);
                continue;
            }
            if !write_ok {
                r.error_code = error::TOPIC_AUTHORIZATION_FAILED;
                out.push(r);
                continue;
            }
            if is_internal_topic(&topic) {
                // As Kafka's ReplicaManager: "Cannot append to internal topic".
                tracing::debug!(topic, index, "produce to an internal topic refused");
                r.error_code = error::INVALID_TOPIC_EXCEPTION;
                out.push(r);
                continue;
            }
            let part = match resolved.get_or_insert_with(|| resolve_topic(shared, &topic, may_create)).as_ref().map_err(|&c| c).and_then(|t| partition_in(t, index)) {
                Ok(p) => p,
                Err(code) => {
                    r.error_code = code;
                    out.push(r);
                    continue;
                }
            };
            let records = match range.and_then(|rg| buf.get_mut(rg)) {
                Some(b) => b,
                None => {
                    r.error_code = error::CORRUPT_MESSAGE;
                    out.push(r);
                    continue;
                }
            };
            let live = part.live();
            let limit = live.message_max_bytes();
            if let Some(size) = batch_over(records, limit) {
                // The topic's max.message.bytes (default: the broker's message.max.bytes):
                // answered MESSAGE_TOO_LARGE, which clients do not retry (CORRUPT_MESSAGE
                // would be retried until their delivery timeout).
                tracing::debug!(topic, index, size, limit, "produce refused: batch too large");
                r.error_code = error::MESSAGE_TOO_LARGE;
                out.push(r);
                continue;
            }
            if acks == -1 && live.min_insync_replicas() > 1 {
                // One replica is in sync (this broker): as Kafka, acks=all is refused below
                // the topic's min.insync.replicas.
                r.error_code = NOT_ENOUGH_REPLICAS;
                out.push(r);
                continue;
            }
            if live.compact() && crate::log::cleaner::has_null_key(records, part.config().batch_bytes_max) {
                // As Kafka's LogValidator: "Compacted topic cannot accept message without key".
                tracing::debug!(topic, index, "produce refused: a record without a key on a compacted topic");
                r.error_code = INVALID_RECORD;
                out.push(r);
                continue;
            }
            if live.log_append_time() {
                // A second CRC pass (and a third in the log's validation), only for topics
                // with message.timestamp.type=LogAppendTime.
                let now = crate::log::now_ms();
                if crate::record::stamp_log_append_time(records, now, part.config().batch_bytes_max) {
                    r.log_append_time = now;
                }
            }
            let appended = match txn_produce_check(&txn_id, records, part.config().batch_bytes_max) {
                Err(code) => {
                    tracing::debug!(topic, index, code, "transactional produce refused");
                    r.error_code = code;
                    out.push(r);
                    continue;
                }
                // Checked and appended under the transaction's produce gate (never waiting for the
                // coordinator's fsyncs): no batch of it lands after its marker.
                Ok(Some((id, pid, epoch))) => match shared.txn.with_produce(&id, pid, epoch, &topic, index, || part.append(records)) {
                    Ok(a) => a,
                    Err(code) => {
                        tracing::debug!(topic, index, code, "transactional produce refused by the coordinator");
                        r.error_code = code;
                        out.push(r);
                        continue;
                    }
                },
                Ok(None) => part.append(records),
            };
            match appended {
                Ok(info) => {
                    r.base_offset = info.base_offset as i64;
                    r.log_start_offset = info.log_start_offset as i64;
                    r.wait = Some((part, info.next_offset));
                }
                Err(AppendError::DuplicateSequence(off)) => {
                    // A retried batch already stored: acknowledged with its original offset.
                    r.base_offset = off;
                    r.log_start_offset = part.log_start_offset() as i64;
                    r.wait = Some((part.clone(), part.log_end_offset()));
                }
                Err(e) => {
                    tracing::debug!(topic, index, "produce refused: {e}");
                    r.error_code = append_error_code(&e);
                }
            }
            out.push(r);
        }
        results.push((topic, out));
    }
    drop(wakes);
    if acks == 0 {
        // No response to carry an error: as Kafka does, close the connection so the producer
        // notices (and refreshes its metadata).
        let failed = results.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t, p))).find(|(_, p)| p.error_code != 0);
        if let Some((t, p)) = failed {
            return Ok(Reply::Close(format!("acks=0 produce to {t}-{} failed with error {}", p.index, p.error_code)));
        }
        // Group mode: appends are staged until a group commit writes and syncs them; nobody
        // else may be waiting, so this connection's writer thread drives it (no response).
        let is_group = |p: &ProducedPartition| {
            p.wait.as_ref().is_some_and(|(part, _)| part.config().durability == crate::log::Durability::Group)
        };
        let waits: Vec<(String, ProducedPartition)> = results
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .filter(|(_, p)| is_group(p))
            .collect();
        if waits.is_empty() {
            return Ok(Reply::Nothing);
        }
        // Registered completions: the connection's later responses wait behind this slot
        // until the covering syncs are over; a failure closes the connection.
        return Ok(Reply::Pending(Box::new(move |responder| {
            struct Acks0 {
                left: usize,
                failed: Option<String>,
                responder: Option<super::Responder>,
            }
            let state = Arc::new(std::sync::Mutex::new(Acks0 { left: waits.len(), failed: None, responder: Some(responder) }));
            for (topic, mut p) in waits {
                let Some((part, next)) = p.wait.take() else { continue };
                let st = state.clone();
                let index = p.index;
                part.on_durable(
                    next,
                    Box::new(move |r| {
                        let mut g = st.lock().unwrap_or_else(|p| p.into_inner());
                        if let Err(e) = r {
                            g.failed.get_or_insert_with(|| format!("acks=0 produce to {topic}-{index} failed: {e}"));
                        }
                        g.left -= 1;
                        if g.left == 0 {
                            let reply = match g.failed.take() {
                                Some(reason) => Reply::Close(reason),
                                None => Reply::Nothing,
                            };
                            if let Some(resp) = g.responder.take() {
                                drop(g);
                                resp.send(reply);
                            }
                        }
                    }),
                );
            }
        })));
    }
    let finish = move |mut results: Vec<(String, Vec<ProducedPartition>)>| -> Vec<u8> {
        let mut responses = Vec::with_capacity(results.len());
        for (topic, parts) in results.drain(..) {
            let mut prs = Vec::with_capacity(parts.len());
            for mut p in parts {
                if let Some((part, next)) = p.wait.take() {
                    if let Err(e) = part.wait_durable(next) {
                        tracing::warn!(topic, p.index, "durable wait failed: {e}");
                        p.error_code = append_error_code(&e);
                        p.base_offset = -1;
                    }
                }
                prs.push(
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(p.error_code)
                        .with_base_offset(p.base_offset)
                        .with_log_append_time_ms(p.log_append_time)
                        .with_log_start_offset(p.log_start_offset),
                );
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partition_responses(prs),
            );
        }
        let resp = ProduceResponse::default().with_responses(responses);
        wire::encode_response(cid, ApiKey::Produce, version, &resp)
    };
    let needs_wait = results.iter().any(|(_, ps)| ps.iter().any(|p| p.wait.is_some()))
        && shared.cfg.log.durability == crate::log::Durability::Group;
    if needs_wait {
        // Each partition's covering fdatasync completes a registration; the last one builds
        // the response (no thread waits).
        Ok(Reply::Pending(Box::new(move |responder| {
            type Finish = Box<dyn FnOnce(Vec<(String, Vec<ProducedPartition>)>) -> Vec<u8> + Send>;
            struct Waiting {
                results: Vec<(String, Vec<ProducedPartition>)>,
                left: usize,
                finish: Option<Finish>,
                responder: Option<super::Responder>,
            }
            let mut results = results;
            let mut waits = Vec::new();
            for (ti, (_, parts)) in results.iter_mut().enumerate() {
                for (pi, p) in parts.iter_mut().enumerate() {
                    if let Some(w) = p.wait.take() {
                        waits.push((ti, pi, w));
                    }
                }
            }
            let state = Arc::new(std::sync::Mutex::new(Waiting {
                results,
                left: waits.len() + 1,
                finish: Some(Box::new(finish) as Finish),
                responder: Some(responder),
            }));
            let done = move |st: &Arc<std::sync::Mutex<Waiting>>| {
                let mut g = st.lock().unwrap_or_else(|p| p.into_inner());
                g.left -= 1;
                if g.left == 0 {
                    let results = std::mem::take(&mut g.results);
                    let (Some(finish), Some(resp)) = (g.finish.take(), g.responder.take()) else { return };
                    drop(g);
                    resp.send(Reply::Now(finish(results)));
                }
            };
            for (ti, pi, (part, next)) in waits {
                let st = state.clone();
                let topic = part.topic.clone();
                part.on_durable(
                    next,
                    Box::new(move |r| {
                        if let Err(e) = r {
                            let mut g = st.lock().unwrap_or_else(|p| p.into_inner());
                            let p = &mut g.results[ti].1[pi];
                            tracing::warn!(topic, p.index, "durable wait failed: {e}");
                            p.error_code = append_error_code(&e);
                            p.base_offset = -1;
                        }
                        done(&st);
                    }),
                );
            }
            done(&state);
        })))
    } else {
        Ok(Reply::Now(finish(results)))
    }
}

/// Produce v0–2 (old message formats): advertised only so that librdkafka enables
/// compression; every partition is refused with UNSUPPORTED_VERSION. Hand-parsed because the
/// protocol crate no longer carries these versions.
fn produce_legacy(cid: i32, version: i16, mut body: Bytes) -> Handled {
    struct R<'a>(&'a mut Bytes);
    impl R<'_> {
        fn take(&mut self, n: usize) -> Result<Bytes, String> {
            if self.0.len() < n {
                return Err("truncated request".into());
            }
            Ok(self.0.split_to(n))
        }
        fn i16(&mut self) -> Result<i16, String> {
            let b = self.take(2)?;
            Ok(i16::from_be_bytes([b[0], b[1]]))
        }
        fn i32(&mut self) -> Result<i32, String> {
            let b = self.take(4)?;
            Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
        fn string(&mut self) -> Result<Bytes, String> {
            let n = self.i16()?;
            self.take(n.max(0) as usize)
        }
    }
    let mut r = R(&mut body);
    let acks = r.i16()?;
    let _timeout = r.i32()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    out.extend_from_slice(&cid.to_be_bytes());
    out.extend_from_slice(&topics.max(0).to_be_bytes());
    for _ in 0..topics.max(0) {
        let name = r.string()?;
        let parts = r.i32()?;
        out.extend_from_slice(&(name.len() as i16).to_be_bytes());
        out.extend_from_slice(&name);
        out.extend_from_slice(&parts.max(0).to_be_bytes());
        for _ in 0..parts.max(0) {
            let index = r.i32()?;
            let n = r.i32()?;
            r.take(n.max(0) as usize)?;
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&error::UNSUPPORTED_VERSION.to_be_bytes());
            out.extend_from_slice(&(-1i64).to_be_bytes()); // base_offset
            if version >= 2 {
                out.extend_from_slice(&(-1i64).to_be_bytes()); // log_append_time
            }
        }
    }
    if version >= 1 {
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
    }
    if acks == 0 {
        return Ok(Reply::Nothing);
    }
    Ok(Reply::Now(out))
}

// ---------------------------------------------------------------------------------------------
// Fetch

/// Largest record bytes in one Fetch response (Kafka's max_bytes is an i32; leave room for the
/// framing and the first-batch-may-exceed rule).
const FETCH_RESPONSE_BYTES_MAX: u64 = 1 << 30;

struct FetchPlanPartition {
    partition: i32,
    fetch_offset: i64,
    max_bytes: u64,
    log: Result<Arc<Partition>, i16>,
}

fn fetch(shared: &Arc<Shared>, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: FetchRequest = wire::decode_body(&mut body, version)?;
    let mut topics: Vec<(String, Vec<FetchPlanPartition>)> = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.topic.0.to_string();
        let read_ok = az.allows(Operation::Read, ResourceType::Topic, &name);
        let resolved = if read_ok { resolve_topic(shared, &name, false) } else { Err(error::TOPIC_AUTHORIZATION_FAILED) };
        let parts = t
            .partitions
            .into_iter()
            .map(|p| FetchPlanPartition {
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as u64,
                log: resolved.as_ref().map_err(|&c| c).and_then(|t| partition_in(t, p.partition)),
            })
            .collect();
        topics.push((name, parts));
    }
    let max_wait = Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    // isolation_level 1 = read_committed: up to the last stable offset, with the aborted
    // transactions of what is returned (issue 20).
    let committed = req.isolation_level == 1;
    let min_bytes = req.min_bytes.max(0) as u64;
    // Capped so the framed size (records + overhead) always fits the i32 size prefix.
    let max_bytes = if req.max_bytes <= 0 { FETCH_RESPONSE_BYTES_MAX } else { (req.max_bytes as u64).min(FETCH_RESPONSE_BYTES_MAX) };
    let shared = shared.clone();
    Ok(Reply::Pending(Box::new(move |responder| {
        let deadline = Instant::now() + max_wait;
        let poster = responder.poster();
        let fw = Arc::new_cyclic(|me| FetchWait {
            id: NEXT_FETCH_WAIT.fetch_add(1, Ordering::Relaxed),
            me: me.clone(),
            shared,
            poster,
            topics,
            cid,
            version,
            max_bytes,
            min_bytes,
            committed,
            deadline,
            responder: std::sync::Mutex::new(Some(responder)),
            armed: AtomicBool::new(false),
            timer_set: AtomicBool::new(false),
        });
        fw.attempt();
    })))
}

static NEXT_FETCH_WAIT: AtomicU64 = AtomicU64::new(1);

/// A Fetch long-poll (min_bytes / max_wait_ms) as a registration, not a parked thread: it is
/// registered on each of its partitions ([`Partition::watch_hw`]), so a high-watermark advance
/// wakes only the fetches waiting on that partition, and on a timer of its network thread for
/// max_wait_ms. Every (re-)read runs on the connection's network thread.
struct FetchWait {
    id: u64,
    me: std::sync::Weak<FetchWait>,
    shared: Arc<Shared>,
    poster: super::net::Poster,
    topics: Vec<(String, Vec<FetchPlanPartition>)>,
    cid: i32,
    version: i16,
    max_bytes: u64,
    min_bytes: u64,
    /// read_committed: read up to the last stable offset (which only moves with a marker's
    /// append, whose durability then advances the high watermark and wakes this wait).
    committed: bool,
    deadline: Instant,
    /// Taken by the answer (None once answered).
    responder: std::sync::Mutex<Option<super::Responder>>,
    /// Registered and not woken yet (a wake-up posts one re-read).
    armed: AtomicBool,
    timer_set: AtomicBool,
}

impl crate::log::HwWaiter for FetchWait {
    fn wake(&self) {
        // Called under the advancing partition's state lock: only post the re-read.
        if self.armed.swap(false, Ordering::AcqRel) {
            self.shared.fetch_wakeups.fetch_add(1, Ordering::Relaxed);
            if let Some(me) = self.me.upgrade() {
                self.poster.run_on_thread(move || me.attempt());
            }
        }
    }
}

impl FetchWait {
    fn partitions(&self) -> impl Iterator<Item = (&FetchPlanPartition, &Arc<Partition>)> {
        self.topics.iter().flat_map(|(_, ps)| ps.iter()).filter_map(|p| p.log.as_ref().ok().map(|l| (p, l)))
    }

    /// Read the partitions; answer if min_bytes is met, an error or the deadline came, else
    /// (re-)register. Runs on the connection's network thread.
    fn attempt(self: &Arc<Self>) {
        loop {
            let mut slot = self.responder.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                return;
            }
            let seen: Vec<u64> = self.partitions().map(|(_, l)| readable_end(l, self.committed)).collect();
            let expired = Instant::now() >= self.deadline || self.shared.stopping();
            let (data, bytes, any_error) = collect_fetch(&self.topics, self.max_bytes, self.committed);
            if bytes >= self.min_bytes.max(1) || any_error || expired || self.min_bytes == 0 {
                let responder = slot.take();
                drop(slot);
                self.armed.store(false, Ordering::Release);
                for (_, l) in self.partitions() {
                    l.unwatch_hw(self.id);
                }
                if let Some(r) = responder {
                    r.send(Reply::Frame(fetch::build(self.cid, self.version, error::NONE, data)));
                }
                return;
            }
            drop(data);
            if !self.timer_set.swap(true, Ordering::AcqRel) {
                let me = self.clone();
                if let Some(r) = slot.as_ref() {
                    r.run_at(self.deadline, move || me.attempt());
                }
            }
            drop(slot);
            self.armed.store(true, Ordering::Release);
            let weak: std::sync::Weak<dyn crate::log::HwWaiter> = self.me.clone();
            for (_, l) in self.partitions() {
                l.watch_hw(self.id, weak.clone());
            }
            // An advance between the read and the registration would be missed: look again.
            let moved = self.partitions().zip(seen).any(|((_, l), end)| readable_end(l, self.committed) != end);
            if !moved || !self.armed.swap(false, Ordering::AcqRel) {
                return;
            }
        }
    }
}

/// Read every requested partition once. Returns the response data, record bytes, and whether
/// any partition has an error (which answers at once, as Kafka does).
fn collect_fetch(topics: &[(String, Vec<FetchPlanPartition>)], max_bytes: u64, committed: bool) -> (Vec<fetch::TopicData>, u64, bool) {
    let mut out = Vec::with_capacity(topics.len());
    let mut total = 0u64;
    let mut any_error = false;
    for (name, parts) in topics {
        let mut pd = Vec::with_capacity(parts.len());
        for p in parts {
            let mut d = fetch::PartitionData {
                partition: p.partition,
                error_code: error::NONE,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                aborted: None,
                records: Vec::new(),
            };
            match &p.log {
                Err(code) => {
                    d.error_code = *code;
                    any_error = true;
                }
                Ok(log) => {
                    let budget = p.max_bytes.min(max_bytes.saturating_sub(total));
                    match log.read_isolated(p.fetch_offset, budget, total == 0, committed) {
                        Ok(slice) => {
                            d.high_watermark = slice.high_watermark as i64;
                            d.last_stable_offset = slice.last_stable_offset as i64;
                            d.aborted = slice
                                .aborted
                                .as_ref()
                                .map(|a| a.iter().map(|t| (t.producer_id, t.first_offset as i64)).collect());
                            d.log_start_offset = slice.log_start_offset as i64;
                            total += slice.bytes();
                            d.records = slice.ranges;
                        }
                        Err(FetchError::OffsetOutOfRange { log_start, log_end, .. }) => {
                            d.error_code = error::OFFSET_OUT_OF_RANGE;
                            d.high_watermark = log_end as i64;
                            d.log_start_offset = log_start as i64;
                            any_error = true;
                        }
                        Err(FetchError::Storage(e)) => {
                            tracing::warn!(topic = %name, partition = p.partition, "fetch read failed: {e}");
                            d.error_code = error::KAFKA_STORAGE_ERROR;
                            any_error = true;
                        }
                    }
                }
            }
            pd.push(d);
        }
        out.push(fetch::TopicData { name: name.clone(), partitions: pd });
    }
    (out, total, any_error)
}

/// The end of what a fetch may read: the last stable offset for read_committed, else the
/// high watermark.
fn readable_end(log: &Partition, committed: bool) -> u64 {
    if committed { log.last_stable_offset() } else { log.high_watermark() }
}

// ---------------------------------------------------------------------------------------------
// Metadata

/// `on_pool`: as for [`produce`] (a topic auto-created here makes directories and fsyncs).
fn metadata(shared: &Arc<Shared>, ctx: &ConnCtx, az: &Authz, cid: i32, version: i16, mut body: Bytes, on_pool: bool) -> Handled {
    let whole = body.clone();
    let req: MetadataRequest = wire::decode_body(&mut body, version)?;
    let local = ctx.advertised();
    let host = match local {
        Some(a) if !a.ip().is_unspecified() => a.ip().to_string(),
        _ => "127.0.0.1".to_string(),
    };
    let port = local.map_or(shared.cfg.listen.port(), |a| a.port()) as i32;
    let broker = MetadataResponseBroker::default().with_node_id(BrokerId(0)).with_host(StrBytes::from_string(host)).with_port(port);
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    // Listing every topic shows only those the principal may Describe (as Kafka).
    let all = || {
        shared
            .logs
            .topic_names()
            .into_iter()
            .filter(|n| !is_hidden_topic(n) && az.allows(Operation::Describe, ResourceType::Topic, n))
            .map(Ok)
            .collect()
    };
    // A topic named, or asked for by id (v10+: the consumer group protocol hands out ids).
    let names: Vec<Result<String, Uuid>> = match req.topics {
        None => all(),
        Some(ts) if ts.is_empty() && version == 0 => all(),
        Some(ts) => ts
            .into_iter()
            .map(|t| match t.name {
                Some(n) if !n.is_empty() || t.topic_id.is_nil() => Ok(n.0.to_string()),
                _ => Err(t.topic_id),
            })
            .collect(),
    };
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        let name = match name {
            Ok(n) => n,
            Err(id) => match shared.logs.topic_names().into_iter().find(|n| !is_hidden_topic(n) && crate::groups::topic_id(n) == id) {
                Some(n) => n,
                None => {
                    topics.push(MetadataResponseTopic::default().with_topic_id(id).with_error_code(error::UNKNOWN_TOPIC_ID));
                    continue;
                }
            },
        };
        // Internal logs (e.g. the group coordinator's offsets log) are named "__…", as in Kafka.
        let mut t = MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
            .with_is_internal(name.starts_with("__"));
        if version >= 10 {
            t = t.with_topic_id(crate::groups::topic_id(&name));
        }
        let found = match shared.logs.topic(&name) {
            _ if is_hidden_topic(&name) => Err(error::UNKNOWN_TOPIC_OR_PARTITION),
            _ if !az.allows(Operation::Describe, ResourceType::Topic, &name) => Err(error::TOPIC_AUTHORIZATION_FAILED),
            Some(t) => Ok(t),
            None if allow_create && shared.cfg.auto_create_topics && az.may_create_topic(&name) => {
                if !on_pool {
                    let (shared, ctx, az) = (shared.clone(), ctx.clone(), az.clone());
                    return Ok(Reply::Pool(Box::new(move || {
                        metadata(&shared, &ctx, &az, cid, version, whole, true)
                            .unwrap_or_else(|reason| Reply::Close(format!("Metadata v{version}: {reason}")))
                    })));
                }
                shared.logs.get_or_create(&name, shared.cfg.default_partitions).map_err(|e| topic_error_code(&e))
            }
            None => Err(error::UNKNOWN_TOPIC_OR_PARTITION),
        };
        match found {
            Ok(parts) => {
                let ps = (0..parts.len() as i32)
                    .map(|i| {
                        MetadataResponsePartition::default()
                            .with_partition_index(i)
                            .with_leader_id(BrokerId(0))
                            .with_leader_epoch(0)
                            .with_replica_nodes(vec![BrokerId(0)])
                            .with_isr_nodes(vec![BrokerId(0)])
                    })
                    .collect();
                t = t.with_partitions(ps);
            }
            Err(code) => t = t.with_error_code(code),
        }
        topics.push(t);
    }
    let resp = MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(StrBytes::from_static_str("zero-copy-log")))
        .with_controller_id(BrokerId(0))
        .with_topics(topics);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::Metadata, version, &resp)))
}

// ---------------------------------------------------------------------------------------------
// ListOffsets

const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

fn list_offsets(shared: &Shared, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: ListOffsetsRequest = wire::decode_body(&mut body, version)?;
    let epoch = if version >= 4 { 0 } else { -1 };
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let describe_ok = az.allows(Operation::Describe, ResourceType::Topic, &name);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(epoch);
            let log = if describe_ok { resolve_partition(shared, &name, p.partition_index, false) } else { Err(error::TOPIC_AUTHORIZATION_FAILED) };
            match log {
                Err(code) => r = r.with_error_code(code),
                Ok(log) => match p.timestamp {
                    // read_committed (isolation level 1): the last stable offset, as Kafka.
                    LATEST_TIMESTAMP => r = r.with_offset(readable_end(&log, req.isolation_level == 1) as i64),
                    EARLIEST_TIMESTAMP => r = r.with_offset(log.log_start_offset() as i64),
                    MAX_TIMESTAMP => {
                        let ts = log.max_timestamp();
                        if ts >= 0 {
                            // The first record carrying the max timestamp.
                            if let Ok(Some((off, _))) = log.offset_for_timestamp(ts) {
                                r = r.with_offset(off as i64).with_timestamp(ts);
                            }
                        }
                    }
                    ts if ts >= 0 => match log.offset_for_timestamp(ts) {
                        Ok(Some((off, found_ts))) => r = r.with_offset(off as i64).with_timestamp(found_ts),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(topic = %name, "offset_for_timestamp failed: {e}");
                            r = r.with_error_code(error::KAFKA_STORAGE_ERROR);
                        }
                    },
                    _ => r = r.with_error_code(error::INVALID_REQUEST),
                },
            }
            parts.push(r);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(TopicName(StrBytes::from_string(name))).with_partitions(parts));
    }
    let resp = ListOffsetsResponse::default().with_topics(topics);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::ListOffsets, version, &resp)))
}

// ---------------------------------------------------------------------------------------------
// CreateTopics / DeleteTopics

fn create_topics(shared: &Shared, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: CreateTopicsRequest = wire::decode_body(&mut body, version)?;
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let partitions = if t.num_partitions == -1 {
            if t.assignments.is_empty() { shared.cfg.default_partitions } else { t.assignments.len() as i32 }
        } else {
            t.num_partitions
        };
        let mut r = CreatableTopicResult::default().with_name(t.name.clone());
        // The topic's configuration, validated whole (INVALID_CONFIG names the key, the value
        // and what is allowed); honoured by the created topic, persisted with it.
        let overrides = crate::log::TopicConfig::from_pairs(
            t.configs.iter().map(|c| (c.name.as_str(), c.value.as_ref().map_or("", |v| v.as_str()))),
            shared.logs.config().batch_bytes_max,
        );
        let outcome = if !az.may_create_topic(&name) {
            Err((error::TOPIC_AUTHORIZATION_FAILED, "Authorization failed.".to_string()))
        } else if partitions > shared.cfg.partitions_per_topic_max {
            Err((
                error::INVALID_PARTITIONS,
                format!("{partitions} partitions exceed this broker's limit of {}", shared.cfg.partitions_per_topic_max),
            ))
        } else if is_hidden_topic(&name) {
            // As Kafka for its __cluster_metadata.
            Err((error::INVALID_REQUEST, format!("Creation of internal topic {name} is prohibited.")))
        } else if !(t.replication_factor == -1 || t.replication_factor == 1) {
            Err((error::INVALID_REPLICATION_FACTOR, format!("replication factor {} > 1 brokers", t.replication_factor)))
        } else if let Err(e) = &overrides {
            Err((error::INVALID_CONFIG, e.to_string()))
        } else if req.validate_only {
            if !crate::log::manager::valid_topic_name(&name) {
                Err((error::INVALID_TOPIC_EXCEPTION, format!("invalid topic name {name:?}")))
            } else if shared.logs.topic(&name).is_some() {
                Err((error::TOPIC_ALREADY_EXISTS, format!("topic {name:?} already exists")))
            } else if !(1..=100_000).contains(&partitions) {
                Err((error::INVALID_PARTITIONS, format!("invalid partition count {partitions}")))
            } else {
                Ok(())
            }
        } else {
            shared
                .logs
                .create_topic_with_config(&name, partitions, overrides.clone().unwrap_or_default())
                .map(|_| ())
                .map_err(|e| (topic_error_code(&e), e.to_string()))
        };
        match outcome {
            Ok(()) => {
                if version >= 5 {
                    let configs = admin::created_topic_configs(shared, &overrides.unwrap_or_default());
                    r = r.with_num_partitions(partitions).with_replication_factor(1).with_configs(Some(configs));
                }
            }
            Err((code, msg)) => {
                r = r.with_error_code(code).with_error_message(Some(StrBytes::from_string(msg)));
            }
        }
        results.push(r);
    }
    let resp = CreateTopicsResponse::default().with_topics(results);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::CreateTopics, version, &resp)))
}

fn delete_topics(shared: &Shared, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: DeleteTopicsRequest = wire::decode_body(&mut body, version)?;
    let names: Vec<Option<TopicName>> = if version >= 6 {
        req.topics.into_iter().map(|t| t.name).collect()
    } else {
        req.topic_names.into_iter().map(Some).collect()
    };
    let mut results = Vec::with_capacity(names.len());
    for name in names {
        let mut r = DeletableTopicResult::default();
        match name {
            None => r = r.with_error_code(error::UNKNOWN_TOPIC_OR_PARTITION),
            Some(n) if !az.allows(Operation::Delete, ResourceType::Topic, &n.0) => {
                r = r.with_error_code(error::TOPIC_AUTHORIZATION_FAILED).with_name(Some(n));
                if version >= 5 {
                    r = r.with_error_message(Some(StrBytes::from_static_str("Authorization failed.")));
                }
            }
            Some(n) if is_internal_topic(&n.0) => {
                // Kafka leaves this to its authorizer (only a cluster admin may delete internal
                // topics); here nobody may: deleting __producer_ids re-grants producer ids after
                // a restart (acknowledged records then lost as duplicates), deleting
                // __consumer_offsets loses every group's committed offsets.
                tracing::warn!(topic = %n.0, "client tried to delete an internal topic: refused");
                r = r.with_error_code(error::TOPIC_AUTHORIZATION_FAILED);
                if version >= 5 {
                    r = r.with_error_message(Some(StrBytes::from_string(format!(
                        "internal topic {} holds the broker's state and cannot be deleted",
                        n.0
                    ))));
                }
                r = r.with_name(Some(n));
            }
            Some(n) => {
                if let Err(e) = shared.logs.delete_topic(&n.0) {
                    r = r.with_error_code(topic_error_code(&e));
                    if version >= 5 {
                        r = r.with_error_message(Some(StrBytes::from_string(e.to_string())));
                    }
                }
                r = r.with_name(Some(n));
            }
        }
        results.push(r);
    }
    let resp = DeleteTopicsResponse::default().with_responses(results);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::DeleteTopics, version, &resp)))
}
