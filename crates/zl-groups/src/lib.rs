//! Consumer groups, committed offsets and producer ids: Kafka's group coordinator for a
//! single-node cluster (this broker coordinates every group).
//!
//! * [`coordinator`]: the classic group state machine (join/sync/heartbeat/leave, session
//!   expiry by a reaper thread, generation checks).
//! * [`store`]: the durable part: committed offsets and group metadata (each completed
//!   rebalance, each group gone Empty) in `__consumer_offsets`, producer-id blocks in
//!   `__producer_ids`, all appended through the [`LogManager`] and restored at start.
//! * `admin`: DeleteGroups and OffsetDelete (tombstones in `__consumer_offsets`).
//! * this module: [`handle`], the Kafka wire mapping (decode with `kafka-protocol`, encode the
//!   response header + body), and [`GroupCoordinator`], which owns the above.
//!
//! Contract with the broker: the broker routes every request with a group API key here, whatever
//! its version. A version outside [`SUPPORTED_APIS`] gets [`Reply::Close`] (Kafka closes the
//! connection too). Every served request answers with [`Reply::Later`], so the work (including
//! waiting for a rebalance or for an offset commit's fdatasync) runs on the connection's writer
//! thread in request order, as Kafka processes one request per connection at a time.
//! A request body that does not decode gets a response of the same API and version carrying
//! INVALID_REQUEST (42) wherever the response has an error field (OffsetCommit: an empty topic
//! list); decoding never panics.
//!
//! FindCoordinator answers with node 0 and the local address of the connection the request came
//! in on (passed to [`handle_at`] by the broker), falling back to
//! [`GroupConfig::host`]/[`GroupConfig::port`].
#![forbid(unsafe_code)]

mod admin;
pub mod assignor;
pub mod consumer_protocol;
pub mod coordinator;
pub mod store;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use zl_log::{LogManager, Partition};
use zl_wire::decode_offset_commit_v0_v1;
pub use consumer_protocol::topic_id;
use consumer_protocol::{ConsumerConfig, ConsumerGroups, TopicView};
pub use coordinator::{GroupConfig, GroupState};
use coordinator::{JoinArgs, StateMachine};
use store::{Committed, CommitEntry, GroupOffsets};

/// What the coordinator answers a request with. It knows nothing of sockets or of the broker's
/// connection threads: the broker maps it onto its own reply (`broker::Reply`).
pub enum Reply {
    /// Computed later, in request order (the work may wait for an fdatasync): returns the
    /// response header + body, without the 4-byte size prefix. An empty result means the
    /// response could not be encoded (the connection is closed).
    Later(Box<dyn FnOnce() -> Vec<u8> + Send>),
    /// Completed without holding a thread (JoinGroup/SyncGroup waiting for a rebalance): called
    /// at once with the [`Respond`] callback that delivers the response (header + body) when the
    /// outcome is known.
    Pending(Box<dyn FnOnce(Respond) + Send>),
    /// No response: close the connection (after the replies queued before it), logging the reason.
    Close(String),
}

/// Delivers a response (header + body, no size prefix) to the connection that asked, from any
/// thread. Dropped without being called, the broker closes that connection (a request never
/// goes unanswered silently).
pub type Respond = Box<dyn FnOnce(Vec<u8>) + Send>;

impl Reply {
    /// The response bytes this reply comes to, waiting for it on this thread (tests and tools
    /// that call [`handle`] directly). None for `Close` or a pending reply dropped unanswered.
    pub fn wait_response(self) -> Option<Vec<u8>> {
        match self {
            Reply::Later(f) => Some(f()),
            Reply::Pending(f) => {
                let (tx, rx) = std::sync::mpsc::channel();
                f(Box::new(move |v| {
                    let _ = tx.send(v);
                }));
                rx.recv().ok()
            }
            Reply::Close(_) => None,
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Later(_) => write!(f, "Later"),
            Reply::Pending(_) => write!(f, "Pending"),
            Reply::Close(r) => write!(f, "Close({r})"),
        }
    }
}

/// Kafka error codes used here.
pub mod err {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const INVALID_REQUEST: i16 = 42;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
}

/// (api key, min version, max version) of the APIs served here.
pub const SUPPORTED_APIS: &[(i16, i16, i16)] = &[
    (8, 0, 9),  // OffsetCommit (v0/v1 decoded by hand: librdkafka 2.0.2 requires 1–2)
    (9, 1, 9),  // OffsetFetch
    (10, 0, 4), // FindCoordinator
    (11, 0, 9), // JoinGroup
    (12, 0, 4), // Heartbeat
    (13, 0, 5), // LeaveGroup
    (14, 0, 5), // SyncGroup
    (15, 0, 5), // DescribeGroups
    (16, 0, 5), // ListGroups
    (22, 0, 4), // InitProducerId
    (42, 0, 2), // DeleteGroups
    (47, 0, 0), // OffsetDelete
    (68, 0, 1), // ConsumerGroupHeartbeat (KIP-848: consumer_protocol)
    (69, 0, 1), // ConsumerGroupDescribe
];

/// Topics this module owns. Metadata should mark them `is_internal` (as Kafka does for
/// `__consumer_offsets`) so clients leave them out of pattern subscriptions and listings.
pub const INTERNAL_TOPICS: &[&str] = &[store::OFFSETS_TOPIC, store::PRODUCER_IDS_TOPIC];

/// Producer ids reserved durably per `__producer_ids` append.
const PID_BLOCK: i64 = 1000;

/// A committed offset with the `__consumer_offsets` offset of the record that set it.
type Stamped = (Committed, u64);

struct Offsets {
    /// group → (topic, partition) → committed offset, with the `__consumer_offsets` offset of
    /// the record that set it (so concurrent commits apply in log order).
    groups: HashMap<String, HashMap<(String, i32), Stamped>>,
    /// Commits appended but not yet applied (waiting for durability): while there are any,
    /// deletions are noted in `deleted`.
    in_flight: usize,
    /// Offsets deleted (DeleteGroups: partition `None` = the whole group; OffsetDelete) while
    /// commits were in flight, with the `__consumer_offsets` offset of the tombstone: an
    /// in-flight commit appended before it must not be applied after it. Cleared when
    /// `in_flight` returns to zero (so bounded by the commits in flight).
    deleted: Vec<admin::Deleted>,
}

struct Pids {
    next: i64,
    block_end: i64,
}

/// The group coordinator of this broker.
pub struct GroupCoordinator {
    logs: Arc<LogManager>,
    sm: StateMachine,
    /// Groups of the consumer protocol (KIP-848); a group id is there or in `sm`.
    consumer: ConsumerGroups,
    offsets_log: Arc<Partition>,
    pid_log: Arc<Partition>,
    offsets: Mutex<Offsets>,
    /// The last group-metadata value appended for each group. Held while appending group
    /// records, so they reach the log in transition order.
    group_records: Mutex<HashMap<String, Vec<u8>>>,
    pids: Mutex<Pids>,
    stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl GroupCoordinator {
    /// Open the internal topics, restore committed offsets and the producer-id high-water mark,
    /// and start the reaper thread. Uses [`GroupConfig::default`].
    pub fn new(logs: Arc<LogManager>) -> io::Result<Arc<GroupCoordinator>> {
        Self::with_config(logs, GroupConfig::default())
    }

    pub fn with_config(logs: Arc<LogManager>, cfg: GroupConfig) -> io::Result<Arc<GroupCoordinator>> {
        // `__consumer_offsets` is compacted (never deleted by retention); the producer-id topic
        // keeps its high-water mark for good (internal `__*` topics keep everything from open:
        // `Partition::set_retention_floor`).
        let offsets_log = store::offsets_partition(&logs)?;
        let pid_log = store::internal_partition(&logs, store::PRODUCER_IDS_TOPIC)?;
        let restored = store::restore_offsets(&offsets_log)?;
        let restored_groups = store::restore_groups(&offsets_log)?;
        let block_end = store::restore_pid_block_end(&pid_log)?;
        let tick = Duration::from_millis(cfg.reaper_tick_ms.max(1));
        let consumer = ConsumerGroups::new(ConsumerConfig {
            session_timeout_ms: cfg.consumer_session_timeout_ms,
            heartbeat_interval_ms: cfg.consumer_heartbeat_interval_ms,
            max_size: cfg.group_members_max,
        });
        let sm = StateMachine::new(cfg);
        let mut group_records = HashMap::new();
        let mut members = 0usize;
        for (g, r) in restored_groups {
            members += r.members.len();
            group_records.insert(g.clone(), store::group_value(&r));
            sm.restore_group(&g, r);
        }
        tracing::info!(groups = group_records.len(), members, "group metadata restored");
        let mut groups = HashMap::new();
        let mut n = 0usize;
        for (g, offs) in restored {
            sm.ensure_group(&g);
            n += offs.len();
            groups.insert(g, offs.into_iter().map(|(k, c)| (k, (c, 0))).collect());
        }
        tracing::info!(groups = groups.len(), offsets = n, producer_id_next = block_end, "group coordinator restored");
        let c = Arc::new(GroupCoordinator {
            logs,
            sm,
            consumer,
            offsets_log,
            pid_log,
            offsets: Mutex::new(Offsets { groups, in_flight: 0, deleted: Vec::new() }),
            group_records: Mutex::new(group_records),
            pids: Mutex::new(Pids { next: block_end, block_end }),
            stop: Arc::new(AtomicBool::new(false)),
        });
        let weak = Arc::downgrade(&c);
        let stop = c.stop.clone();
        std::thread::Builder::new().name("group-reaper".into()).spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(tick);
                let Some(c) = weak.upgrade() else { break };
                c.sm.tick();
                c.consumer.tick();
                let _ = c.persist_groups();
            }
        })?;
        Ok(c)
    }

    pub fn config(&self) -> &GroupConfig {
        &self.sm.cfg
    }

    /// Stop the reaper thread (it also stops by itself when the coordinator is dropped).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// State, generation and member ids of a group (for tests and tools).
    pub fn group_summary(&self, group: &str) -> Option<(GroupState, i32, Vec<String>)> {
        let g = self.sm.lock();
        g.groups.get(group).map(|g| (g.state, g.generation, g.members.keys().cloned().collect()))
    }

    /// The committed offset of a partition, if any.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        lock(&self.offsets).groups.get(group)?.get(&(topic.to_string(), partition)).map(|(c, _)| c.clone())
    }

    fn group_offsets(&self, group: &str) -> GroupOffsets {
        lock(&self.offsets)
            .groups
            .get(group)
            .map(|m| m.iter().map(|(k, (c, _))| (k.clone(), c.clone())).collect())
            .unwrap_or_default()
    }

    /// Allocate a producer id, reserving a new durable block when the current one is used up.
    pub fn allocate_producer_id(&self) -> io::Result<i64> {
        let mut p = lock(&self.pids);
        if p.next >= p.block_end {
            let end = p.next.max(p.block_end) + PID_BLOCK;
            store::append_pid_block(&self.pid_log, end).map_err(|e| io::Error::other(e.to_string()))?;
            p.block_end = end;
        }
        let id = p.next;
        p.next += 1;
        Ok(id)
    }

    /// Append (durably, per the log's mode) the group records the state machine queued, one
    /// batch each. A storage failure is logged and returned (the state in memory stays as it
    /// is). A record the log refuses as a batch (larger than its batch limit) is skipped with
    /// an error logged: that group then restores as its previous record says.
    fn persist_groups(&self) -> io::Result<()> {
        let mut saved = lock(&self.group_records);
        let recs = self.sm.take_records();
        let mut last = None;
        for (g, r) in recs {
            let v = store::group_value(&r);
            match store::append_groups(&self.offsets_log, &[(g.clone(), Some(v.clone()))]) {
                Ok(info) => {
                    last = Some(info.next_offset);
                    saved.insert(g, v);
                }
                Err(zl_log::AppendError::Corrupt(e)) => {
                    tracing::error!(group = %g, bytes = v.len(), "group metadata not persisted: {e}");
                }
                Err(e) => {
                    tracing::error!(group = %g, "cannot persist group metadata: {e}");
                    return Err(io::Error::other(e.to_string()));
                }
            }
        }
        if let Some(next) = last {
            self.offsets_log.wait_durable(next).map_err(|e| {
                tracing::error!("cannot persist group metadata: {e}");
                io::Error::other(e.to_string())
            })?;
        }
        Ok(())
    }

    /// Durably commit offsets for `group` (the transaction coordinator, when a transaction
    /// with TxnOffsetCommit offsets commits); per-entry error codes as OffsetCommit's.
    pub fn commit_offsets(&self, group: &str, entries: Vec<CommitEntry>) -> Vec<i16> {
        self.commit(group, entries)
    }

    /// OffsetCommit's membership check (generation or member epoch, member id, instance id)
    /// for TxnOffsetCommit, in a classic or a consumer-protocol group. For the latter there is
    /// no OffsetCommit version rule (Kafka checks it only for non-transactional commits): the
    /// check is asked as for OffsetCommit v9.
    pub fn validate_offset_commit(&self, group: &str, member_id: &str, instance_id: Option<&str>, generation: i32) -> i16 {
        match self.consumer.validate_commit(group, member_id, generation, 9) {
            consumer_protocol::Validation::Code(code) => code,
            consumer_protocol::Validation::NotConsumerGroup => self.sm.validate_commit(group, member_id, instance_id, generation),
        }
    }

    /// Validate and durably store the commits of one request; returns per-entry error codes.
    fn commit(&self, group: &str, entries: Vec<CommitEntry>) -> Vec<i16> {
        if group.len() > store::GROUP_ID_BYTES_MAX {
            return vec![err::INVALID_GROUP_ID; entries.len()];
        }
        let mut codes = vec![err::NONE; entries.len()];
        let mut ok = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if e.committed.metadata.as_ref().is_some_and(|m| m.len() > self.sm.cfg.offset_metadata_bytes_max) {
                codes[i] = err::OFFSET_METADATA_TOO_LARGE;
            } else if self.logs.partition(&e.topic, e.partition).is_none() {
                codes[i] = err::UNKNOWN_TOPIC_OR_PARTITION;
            } else {
                ok.push(i);
            }
        }
        if ok.is_empty() {
            return codes;
        }
        let batch: Vec<CommitEntry> = ok.iter().map(|&i| entries[i].clone()).collect();
        // Append under the cache lock so log order = apply order; wait for durability outside.
        let appended = {
            let mut o = lock(&self.offsets);
            let r = store::append_commits(&self.offsets_log, group, &batch);
            if r.is_ok() {
                o.in_flight += 1;
            }
            r
        };
        let was_appended = appended.is_ok();
        let result = appended.and_then(|info| {
            self.offsets_log.wait_durable(info.next_offset)?;
            Ok(info)
        });
        // Leave the in-flight count and apply in one critical section (see `Offsets::deleted`).
        let mut o = lock(&self.offsets);
        if was_appended {
            o.in_flight -= 1;
        }
        match result {
            Ok(info) => {
                let deleted = std::mem::take(&mut o.deleted);
                let g = o.groups.entry(group.to_string()).or_default();
                for e in batch {
                    let k = (e.topic, e.partition);
                    if admin::deleted_after(&deleted, group, &k, info.base_offset) {
                        continue;
                    }
                    if g.get(&k).is_none_or(|(_, at)| *at <= info.base_offset) {
                        g.insert(k, (e.committed, info.base_offset));
                    }
                }
                if g.is_empty() {
                    o.groups.remove(group);
                }
                if o.in_flight > 0 {
                    o.deleted = deleted;
                }
            }
            Err(e) => {
                tracing::error!(group, "offset commit failed: {e}");
                for &i in &ok {
                    codes[i] = err::COORDINATOR_NOT_AVAILABLE;
                }
            }
        }
        codes
    }
}

impl Drop for GroupCoordinator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Response header (version from the response type) + body.
fn encode<R: Encodable + HeaderVersion>(correlation_id: i32, version: i16, header_version: i16, body: &R) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    let mut h = ResponseHeader::default();
    h.correlation_id = correlation_id;
    let r = h.encode(&mut buf, header_version).and_then(|_| body.encode(&mut buf, version));
    match r {
        Ok(()) => buf,
        Err(e) => {
            // A bug here (a field the version cannot carry): logged; the empty reply makes the
            // broker's writer close the connection, as for its own handlers.
            tracing::error!(version, "cannot encode group response: {e}");
            Vec::new()
        }
    }
}

fn later<R: Encodable + HeaderVersion + 'static>(
    corr: i32,
    version: i16,
    f: impl FnOnce() -> R + Send + 'static,
) -> Reply {
    Reply::Later(Box::new(move || encode(corr, version, R::header_version(version), &f())))
}

fn decode<T: Decodable>(body: &mut Bytes, version: i16, what: &str) -> Option<T> {
    match T::decode(body, version) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(version, "malformed {what} request: {e}");
            None
        }
    }
}

/// The client id, as the prefix of member ids (bounded so a member id always fits a string).
fn client_id(header: &RequestHeader) -> String {
    let id = header.client_id.as_ref().map(|c| c.as_str()).unwrap_or_default();
    let mut end = id.len().min(255);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    id[..end].to_string()
}

/// Serve one group-coordinator request. `body` is the request after its header. FindCoordinator
/// answers with the configured host and port (see [`handle_at`]).
pub fn handle(
    coord: &Arc<GroupCoordinator>,
    api_key: i16,
    api_version: i16,
    header: &RequestHeader,
    body: &mut Bytes,
) -> Reply {
    handle_at(coord, None, api_key, api_version, header, body)
}

/// [`handle`] for a request that arrived on a connection to `local`: FindCoordinator
/// advertises that address (the one the client could reach).
pub fn handle_at(
    coord: &Arc<GroupCoordinator>,
    local: Option<std::net::SocketAddr>,
    api_key: i16,
    api_version: i16,
    header: &RequestHeader,
    body: &mut Bytes,
) -> Reply {
    handle_from(coord, local, None, api_key, api_version, header, body)
}

/// [`handle_at`] knowing the client's address `peer` too: a consumer-protocol member's
/// client host (ConsumerGroupDescribe), "/<ip>" as Kafka shows it.
pub fn handle_from(
    coord: &Arc<GroupCoordinator>,
    local: Option<std::net::SocketAddr>,
    peer: Option<std::net::SocketAddr>,
    api_key: i16,
    api_version: i16,
    header: &RequestHeader,
    body: &mut Bytes,
) -> Reply {
    let c = coord.clone();
    let corr = header.correlation_id;
    let v = api_version;
    let supported = SUPPORTED_APIS.iter().any(|&(k, lo, hi)| k == api_key && (lo..=hi).contains(&v));
    if !supported {
        return Reply::Close(format!("unsupported version {api_version} of group API {api_key}"));
    }
    match api_key {
        8 => {
            let req = if v < 2 { decode_offset_commit_v0_v1(body, v) } else { decode::<OffsetCommitRequest>(body, v, "OffsetCommit") };
            let wire_v = v.max(2); // v0/v1 responses are laid out as v2
            let hv = OffsetCommitResponse::header_version(v);
            Reply::Later(Box::new(move || {
                let resp = match req {
                    Some(req) => offset_commit(&c, req, v),
                    None => OffsetCommitResponse::default(),
                };
                encode(corr, wire_v, hv, &resp)
            }))
        }
        9 => {
            let req = decode::<OffsetFetchRequest>(body, v, "OffsetFetch");
            later(corr, v, move || match req {
                Some(req) => offset_fetch(&c, req, v),
                None => {
                    let mut r = OffsetFetchResponse::default();
                    if v >= 2 {
                        r.error_code = err::INVALID_REQUEST;
                    }
                    r
                }
            })
        }
        10 => {
            let req = decode::<FindCoordinatorRequest>(body, v, "FindCoordinator");
            later(corr, v, move || find_coordinator(&c, req, v, local))
        }
        11 => {
            let req = decode::<JoinGroupRequest>(body, v, "JoinGroup");
            let client = client_id(header);
            // Waits for the rebalance as a registration: the outcome's completion answers.
            let hv = JoinGroupResponse::header_version(v);
            Reply::Pending(Box::new(move |responder| {
                let c2 = c.clone();
                c.sm.spawn(move || match req {
                    Some(req) => join_group_with(&c2, req, v, client, move |r| responder(encode(corr, v, hv, &r))),
                    None => responder(encode(
                        corr,
                        v,
                        hv,
                        &join_response(coordinator::JoinOutcome::error(err::INVALID_REQUEST, ""), v),
                    )),
                })
            }))
        }
        12 => {
            let req = decode::<HeartbeatRequest>(body, v, "Heartbeat");
            later(corr, v, move || {
                let mut r = HeartbeatResponse::default();
                r.error_code = match req {
                    Some(req) => c.sm.heartbeat(
                        req.group_id.as_str(),
                        req.member_id.as_str(),
                        req.group_instance_id.as_ref().map(|i| i.as_str()),
                        req.generation_id,
                    ),
                    None => err::INVALID_REQUEST,
                };
                r
            })
        }
        13 => {
            let req = decode::<LeaveGroupRequest>(body, v, "LeaveGroup");
            later(corr, v, move || leave_group(&c, req, v))
        }
        14 => {
            let req = decode::<SyncGroupRequest>(body, v, "SyncGroup");
            let hv = SyncGroupResponse::header_version(v);
            Reply::Pending(Box::new(move |responder| {
                let c2 = c.clone();
                c.sm.spawn(move || sync_group_with(&c2, req, v, move |r| responder(encode(corr, v, hv, &r))))
            }))
        }
        15 => {
            let req = decode::<DescribeGroupsRequest>(body, v, "DescribeGroups");
            later(corr, v, move || describe_groups(&c, req, v))
        }
        16 => {
            let req = decode::<ListGroupsRequest>(body, v, "ListGroups");
            later(corr, v, move || list_groups(&c, req, v))
        }
        22 => {
            let req = decode::<InitProducerIdRequest>(body, v, "InitProducerId");
            later(corr, v, move || init_producer_id(&c, req))
        }
        42 => {
            let req = decode::<DeleteGroupsRequest>(body, v, "DeleteGroups");
            later(corr, v, move || admin::delete_groups(&c, req))
        }
        47 => {
            let req = decode::<OffsetDeleteRequest>(body, v, "OffsetDelete");
            later(corr, v, move || admin::offset_delete(&c, req))
        }
        68 => {
            let req = decode::<ConsumerGroupHeartbeatRequest>(body, v, "ConsumerGroupHeartbeat");
            let client = client_id(header);
            let host = peer.map(|p| format!("/{}", p.ip())).unwrap_or_default();
            later(corr, v, move || match req {
                Some(req) => consumer_heartbeat(&c, req, v, &client, &host),
                None => {
                    let mut r = ConsumerGroupHeartbeatResponse::default();
                    r.error_code = err::INVALID_REQUEST;
                    r
                }
            })
        }
        69 => {
            let req = decode::<ConsumerGroupDescribeRequest>(body, v, "ConsumerGroupDescribe");
            later(corr, v, move || consumer_group_describe(&c, req))
        }
        _ => Reply::Close(format!("API key {api_key} is not a group API")),
    }
}

// ------------------------------------------------------------------ OffsetCommit

fn offset_commit(c: &GroupCoordinator, req: OffsetCommitRequest, v: i16) -> OffsetCommitResponse {
    let group = req.group_id.as_str();
    let epoch = req.generation_id_or_member_epoch;
    let code = match c.consumer.validate_commit(group, req.member_id.as_str(), epoch, v) {
        consumer_protocol::Validation::Code(code) => code,
        consumer_protocol::Validation::NotConsumerGroup => {
            c.sm.validate_commit(group, req.member_id.as_str(), req.group_instance_id.as_ref().map(|s| s.as_str()), epoch)
        }
    };
    let now = zl_log::now_ms();
    let mut entries = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            entries.push(CommitEntry {
                topic: t.name.as_str().to_string(),
                partition: p.partition_index,
                committed: Committed {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.as_str().to_string()),
                    commit_timestamp_ms: now,
                },
            });
        }
    }
    let codes = if code != err::NONE { vec![code; entries.len()] } else { c.commit(group, entries) };
    let mut codes = codes.into_iter();
    let mut resp = OffsetCommitResponse::default();
    for t in req.topics {
        let mut rt = OffsetCommitResponseTopic::default();
        rt.name = t.name;
        for p in t.partitions {
            let mut rp = OffsetCommitResponsePartition::default();
            rp.partition_index = p.partition_index;
            rp.error_code = codes.next().unwrap_or(err::NONE);
            rt.partitions.push(rp);
        }
        resp.topics.push(rt);
    }
    resp
}

// ------------------------------------------------------------------ OffsetFetch

/// (topic, [(partition, committed or None)]) for the requested partitions or, when `topics` is
/// `None`, every committed partition of the group.
#[allow(clippy::type_complexity)]
fn fetch_offsets(
    c: &GroupCoordinator,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<(i32, Option<Committed>)>)> {
    let offs = c.group_offsets(group);
    match topics {
        Some(ts) => ts
            .into_iter()
            .map(|(t, ps)| {
                let parts = ps.into_iter().map(|p| (p, offs.get(&(t.clone(), p)).cloned())).collect();
                (t, parts)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> = Default::default();
            for ((t, p), cm) in offs {
                by_topic.entry(t).or_default().push((p, Some(cm)));
            }
            by_topic
                .into_iter()
                .map(|(t, mut ps)| {
                    ps.sort_by_key(|(p, _)| *p);
                    (t, ps)
                })
                .collect()
        }
    }
}

fn offset_fetch(c: &GroupCoordinator, req: OffsetFetchRequest, v: i16) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if v >= 8 {
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter().map(|t| (t.name.as_str().to_string(), t.partition_indexes)).collect()
            });
            let mut rg = OffsetFetchResponseGroup::default();
            // v9: a consumer-protocol member names itself and its epoch.
            let code = c.consumer.validate_fetch(g.group_id.as_str(), g.member_id.as_ref().map(|m| m.as_str()), g.member_epoch);
            if code != err::NONE {
                rg.error_code = code;
                rg.group_id = g.group_id;
                resp.groups.push(rg);
                continue;
            }
            for (t, parts) in fetch_offsets(c, g.group_id.as_str(), topics) {
                let mut rt = OffsetFetchResponseTopics::default();
                rt.name = TopicName(s(&t));
                for (p, cm) in parts {
                    let mut rp = OffsetFetchResponsePartitions::default();
                    rp.partition_index = p;
                    rp.committed_offset = cm.as_ref().map_or(-1, |c| c.offset);
                    rp.committed_leader_epoch = cm.as_ref().map_or(-1, |c| c.leader_epoch);
                    rp.metadata = Some(s(cm.as_ref().and_then(|c| c.metadata.as_deref()).unwrap_or("")));
                    rt.partitions.push(rp);
                }
                rg.topics.push(rt);
            }
            rg.group_id = g.group_id;
            resp.groups.push(rg);
        }
        return resp;
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter().map(|t| (t.name.as_str().to_string(), t.partition_indexes)).collect()
    });
    for (t, parts) in fetch_offsets(c, req.group_id.as_str(), topics) {
        let mut rt = OffsetFetchResponseTopic::default();
        rt.name = TopicName(s(&t));
        for (p, cm) in parts {
            let mut rp = OffsetFetchResponsePartition::default();
            rp.partition_index = p;
            rp.committed_offset = cm.as_ref().map_or(-1, |c| c.offset);
            if v >= 5 {
                rp.committed_leader_epoch = cm.as_ref().map_or(-1, |c| c.leader_epoch);
            }
            rp.metadata = Some(s(cm.as_ref().and_then(|c| c.metadata.as_deref()).unwrap_or("")));
            rt.partitions.push(rp);
        }
        resp.topics.push(rt);
    }
    resp
}

// ------------------------------------------------------------------ FindCoordinator

fn find_coordinator(
    c: &GroupCoordinator,
    req: Option<FindCoordinatorRequest>,
    v: i16,
    local: Option<std::net::SocketAddr>,
) -> FindCoordinatorResponse {
    let cfg = c.config();
    let host = match local {
        Some(a) if !a.ip().is_unspecified() => a.ip().to_string(),
        _ => cfg.host.clone(),
    };
    let port = local.map_or(cfg.port, |a| a.port() as i32);
    let mut resp = FindCoordinatorResponse::default();
    let Some(req) = req else {
        if v < 4 {
            resp.error_code = err::INVALID_REQUEST;
        }
        return resp;
    };
    // Key type 1 = transaction coordinator: this broker too (`crate::txn`, issue 20). Other key
    // types do not exist here.
    let (code, message) = match req.key_type {
        0 | 1 => (err::NONE, ""),
        _ => (err::INVALID_REQUEST, "unknown coordinator key type"),
    };
    if v >= 4 {
        for key in req.coordinator_keys {
            let mut co = Coordinator::default();
            co.key = key;
            co.error_code = code;
            if code == err::NONE {
                co.node_id = BrokerId(cfg.node_id);
                co.host = s(&host);
                co.port = port;
            } else {
                co.node_id = BrokerId(-1);
                co.error_message = Some(s(message));
            }
            resp.coordinators.push(co);
        }
    } else {
        resp.error_code = code;
        if code == err::NONE {
            resp.node_id = BrokerId(cfg.node_id);
            resp.host = s(&host);
            resp.port = port;
        } else {
            resp.node_id = BrokerId(-1);
            if v >= 1 {
                resp.error_message = Some(s(message));
            }
        }
    }
    resp
}

// ------------------------------------------------------------------ Join / Sync / Leave

fn join_response(o: coordinator::JoinOutcome, v: i16) -> JoinGroupResponse {
    let mut r = JoinGroupResponse::default();
    r.error_code = o.error;
    r.generation_id = o.generation;
    if v >= 7 {
        r.protocol_type = o.protocol_type.map(|t| s(&t));
        r.protocol_name = o.protocol_name.map(|p| s(&p));
    } else {
        r.protocol_name = Some(s(o.protocol_name.as_deref().unwrap_or("")));
    }
    r.leader = s(&o.leader);
    r.member_id = s(&o.member_id);
    for (id, instance, meta) in o.members {
        let mut m = JoinGroupResponseMember::default();
        m.member_id = s(&id);
        if v >= 5 {
            m.group_instance_id = instance.map(|i| s(&i));
        }
        m.metadata = meta;
        r.members.push(m);
    }
    r
}

/// JoinGroup without a waiting thread: the state machine's step runs on the blocking pool,
/// and a wait for the rebalance is a registered completion ([`StateMachine::join_with`]); the
/// response goes to `done` (persisting a changed group first, as [`join_group`]).
fn join_group_with(
    c: &Arc<GroupCoordinator>,
    req: JoinGroupRequest,
    v: i16,
    client_id: String,
    done: impl FnOnce(JoinGroupResponse) + Send + 'static,
) {
    let Some(claim) = c.consumer.claim_for_classic(req.group_id.as_str()) else {
        // A consumer-protocol (KIP-848) group with members: the classic protocol may not join
        // it (Kafka's answer without the upgrade path).
        return done(join_response(coordinator::JoinOutcome::error(err::INCONSISTENT_GROUP_PROTOCOL, req.member_id.as_str()), v));
    };
    let args = join_args(req, v, client_id);
    let c2 = c.clone();
    // Set while the step runs under the claim: an outcome known at once is answered from the
    // completion pool, not under the consumer groups' lock (persisting may fsync).
    let in_step = Arc::new(AtomicBool::new(true));
    let in_step2 = in_step.clone();
    let finish = move |o| {
        let _ = c2.persist_groups();
        done(join_response(o, v))
    };
    let c3 = c.clone();
    // Called on the completion pool (the step takes the state lock; a completion persists
    // group records, an fsync): never on a network thread.
    c.sm.join_with(args, move |o| {
        if in_step2.load(Ordering::Acquire) {
            c3.sm.spawn(move || finish(o));
        } else {
            finish(o);
        }
    });
    drop(claim);
    in_step.store(false, Ordering::Release);
}

/// SyncGroup as [`join_group_with`].
fn sync_group_with(c: &Arc<GroupCoordinator>, req: Option<SyncGroupRequest>, v: i16, done: impl FnOnce(SyncGroupResponse) + Send + 'static) {
    let Some(req) = req else {
        let mut r = SyncGroupResponse::default();
        r.error_code = err::INVALID_REQUEST;
        return done(r);
    };
    let c2 = c.clone();
    let group_id = req.group_id.as_str().to_string();
    let generation = req.generation_id;
    c.sm.sync_with(
        req.group_id.as_str(),
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|i| i.as_str()),
        req.generation_id,
        req.protocol_type.as_ref().map(|p| p.as_str()),
        req.protocol_name.as_ref().map(|p| p.as_str()),
        req.assignments.into_iter().map(|a| (a.member_id.as_str().to_string(), a.assignment)).collect(),
        move |o| {
            let o = o.unwrap_or_else(|| c2.sm.sync_timed_out(&group_id, generation));
            done(sync_response(&c2, o, v))
        },
    );
}

fn join_args(req: JoinGroupRequest, v: i16, client_id: String) -> JoinArgs {
    JoinArgs {
        group_id: req.group_id.as_str().to_string(),
        member_id: req.member_id.as_str().to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.as_str().to_string()),
        client_id,
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if v == 0 { req.session_timeout_ms } else { req.rebalance_timeout_ms },
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req.protocols.into_iter().map(|p| (p.name.as_str().to_string(), p.metadata)).collect(),
        require_known_member_id: v >= 4,
    }
}

fn sync_response(c: &GroupCoordinator, o: coordinator::SyncOutcome, v: i16) -> SyncGroupResponse {
    let mut r = SyncGroupResponse::default();
    r.error_code = o.error;
    // The leader's SyncGroup completed the rebalance: persist the Stable group before answering
    // (Kafka answers COORDINATOR_NOT_AVAILABLE when that write fails; the member rejoins).
    if c.persist_groups().is_err() && o.error == err::NONE {
        r.error_code = err::COORDINATOR_NOT_AVAILABLE;
        return r;
    }
    if v >= 5 {
        r.protocol_type = o.protocol_type.map(|p| s(&p));
        r.protocol_name = o.protocol_name.map(|p| s(&p));
    }
    r.assignment = o.assignment;
    r
}

fn leave_group(c: &GroupCoordinator, req: Option<LeaveGroupRequest>, v: i16) -> LeaveGroupResponse {
    let mut r = LeaveGroupResponse::default();
    let Some(req) = req else {
        r.error_code = err::INVALID_REQUEST;
        return r;
    };
    if v < 3 {
        let codes = c.sm.leave(req.group_id.as_str(), &[(req.member_id.as_str().to_string(), None)]);
        let _ = c.persist_groups();
        r.error_code = codes.first().copied().unwrap_or(err::NONE);
        return r;
    }
    let members: Vec<(String, Option<String>)> = req
        .members
        .iter()
        .map(|m| (m.member_id.as_str().to_string(), m.group_instance_id.as_ref().map(|i| i.as_str().to_string())))
        .collect();
    let codes = c.sm.leave(req.group_id.as_str(), &members);
    let _ = c.persist_groups();
    for (m, code) in req.members.into_iter().zip(codes) {
        let mut mr = MemberResponse::default();
        mr.member_id = m.member_id;
        mr.group_instance_id = m.group_instance_id;
        mr.error_code = code;
        r.members.push(mr);
    }
    r
}

// ------------------------------------------------------------------ Describe / List

fn describe_groups(c: &GroupCoordinator, req: Option<DescribeGroupsRequest>, v: i16) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    let Some(req) = req else { return r };
    for id in req.groups {
        let mut d = DescribedGroup::default();
        if v >= 3 {
            d.authorized_operations = i32::MIN;
        }
        if let Some(cg) = c.consumer.describe(id.as_str()) {
            // A consumer-protocol group, as Kafka describes one through this API.
            d.group_state = s(cg.state);
            d.protocol_type = s("consumer");
            d.protocol_data = s(&cg.assignor);
            for m in cg.members {
                let mut dm = DescribedGroupMember::default();
                dm.member_id = s(&m.member_id);
                if v >= 4 {
                    dm.group_instance_id = m.instance_id.as_deref().map(s);
                }
                dm.client_id = s(&m.client_id);
                dm.client_host = s(&m.client_host);
                dm.member_metadata = classic_subscription(&m.subscribed_topic_names);
                dm.member_assignment = classic_assignment(&m.assignment);
                d.members.push(dm);
            }
            d.group_id = id;
            r.groups.push(d);
            continue;
        }
        // Lock order: consumer groups before the classic state machine (as the heartbeat).
        let g = c.sm.lock();
        match g.groups.get(id.as_str()) {
            None => d.group_state = s(GroupState::Dead.name()),
            Some(grp) => {
                d.group_state = s(grp.state.name());
                d.protocol_type = s(grp.protocol_type.as_deref().unwrap_or(""));
                let protocol = grp.protocol.clone().unwrap_or_default();
                if matches!(grp.state, GroupState::Stable | GroupState::CompletingRebalance) {
                    d.protocol_data = s(&protocol);
                }
                for m in grp.members.values() {
                    let mut dm = DescribedGroupMember::default();
                    dm.member_id = s(&m.id);
                    if v >= 4 {
                        dm.group_instance_id = m.instance_id.as_ref().map(|i| s(i));
                    }
                    dm.client_id = s(&m.client_id);
                    dm.client_host = s("");
                    if grp.state != GroupState::PreparingRebalance {
                        dm.member_metadata =
                            m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, b)| b.clone()).unwrap_or_default();
                    }
                    if grp.state == GroupState::Stable {
                        dm.member_assignment = m.assignment.clone();
                    }
                    d.members.push(dm);
                }
            }
        }
        d.group_id = id;
        r.groups.push(d);
    }
    r
}

fn list_groups(c: &GroupCoordinator, req: Option<ListGroupsRequest>, v: i16) -> ListGroupsResponse {
    let mut r = ListGroupsResponse::default();
    let Some(req) = req else {
        r.error_code = err::INVALID_REQUEST;
        return r;
    };
    let filter: Vec<String> = req.states_filter.iter().map(|s| s.as_str().to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.as_str().to_lowercase()).collect();
    // (id, protocol type, state, group type): classic groups and consumer-protocol groups.
    let mut all: Vec<(String, String, String, &'static str)> = c
        .consumer
        .list()
        .into_iter()
        .map(|(id, state)| (id, "consumer".to_string(), state.to_string(), "consumer"))
        .collect();
    {
        let g = c.sm.lock();
        for (id, grp) in g.groups.iter() {
            if all.iter().any(|(i, ..)| i == id) {
                continue; // an Empty classic entry left behind by a consumer group's offsets
            }
            all.push((id.clone(), grp.protocol_type.clone().unwrap_or_default(), grp.state.name().to_string(), "classic"));
        }
    }
    all.sort();
    for (id, protocol_type, state, kind) in all {
        if !filter.is_empty() && !filter.contains(&state.to_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t == kind) {
            continue;
        }
        let mut l = ListedGroup::default();
        l.group_id = GroupId(s(&id));
        l.protocol_type = s(&protocol_type);
        if v >= 4 {
            l.group_state = s(&state);
        }
        if v >= 5 {
            l.group_type = s(kind);
        }
        r.groups.push(l);
    }
    r
}

// ------------------------------------------------------------------ consumer protocol (KIP-848)

/// Topics as the consumer protocol sees them: user topics of the log manager.
struct LogTopics<'a>(&'a LogManager);

impl TopicView for LogTopics<'_> {
    fn partitions(&self, topic: &str) -> Option<i32> {
        if topic.starts_with("__") {
            return None;
        }
        self.0.topic(topic).map(|p| p.len() as i32)
    }
    fn names(&self) -> Vec<String> {
        self.0.topic_names().into_iter().filter(|n| !n.starts_with("__")).collect()
    }
}

fn consumer_heartbeat(
    c: &GroupCoordinator,
    req: ConsumerGroupHeartbeatRequest,
    v: i16,
    client: &str,
    host: &str,
) -> ConsumerGroupHeartbeatResponse {
    let topics = LogTopics(&c.logs);
    // A new consumer group may take the id of an Empty classic group (one left by committed
    // offsets, or whose members all left), never of one with members.
    c.consumer.heartbeat(req, v, client, host, &topics, |g| c.sm.remove_empty_group(g) != err::NON_EMPTY_GROUP)
}

/// ConsumerProtocolAssignment v0 (what DescribeGroups shows for a consumer-protocol member).
fn classic_assignment(parts: &[(String, i32)]) -> Bytes {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (t, p) in parts {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
    for (t, ps) in by_topic {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        b.extend_from_slice(t.as_bytes());
        b.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        for p in ps {
            b.extend_from_slice(&p.to_be_bytes());
        }
    }
    b.extend_from_slice(&(-1i32).to_be_bytes()); // user data: null
    Bytes::from(b)
}

/// ConsumerProtocolSubscription v0.
fn classic_subscription(topics: &[String]) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        b.extend_from_slice(t.as_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

fn consumer_group_describe(c: &GroupCoordinator, req: Option<ConsumerGroupDescribeRequest>) -> ConsumerGroupDescribeResponse {
    use consumer_group_describe_response as cgd;
    let mut r = ConsumerGroupDescribeResponse::default();
    let Some(req) = req else { return r };
    let assignment = |parts: &[(String, i32)]| {
        let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
        for (t, p) in parts {
            by_topic.entry(t.as_str()).or_default().push(*p);
        }
        let mut a = cgd::Assignment::default();
        for (t, ps) in by_topic {
            let mut tp = cgd::TopicPartitions::default();
            tp.topic_id = topic_id(t);
            tp.topic_name = TopicName(s(t));
            tp.partitions = ps;
            a.topic_partitions.push(tp);
        }
        a
    };
    for id in req.group_ids {
        let mut d = cgd::DescribedGroup::default();
        d.authorized_operations = i32::MIN;
        match c.consumer.describe(id.as_str()) {
            Some(g) => {
                d.group_state = s(g.state);
                d.group_epoch = g.epoch;
                d.assignment_epoch = g.assignment_epoch;
                d.assignor_name = s(&g.assignor);
                for m in g.members {
                    let mut dm = cgd::Member::default();
                    dm.member_id = s(&m.member_id);
                    dm.instance_id = m.instance_id.as_deref().map(s);
                    dm.rack_id = m.rack_id.as_deref().map(s);
                    dm.member_epoch = m.member_epoch;
                    dm.client_id = s(&m.client_id);
                    dm.client_host = s(&m.client_host);
                    dm.subscribed_topic_names = m.subscribed_topic_names.iter().map(|t| TopicName(s(t))).collect();
                    dm.subscribed_topic_regex = m.subscribed_topic_regex.as_deref().map(s);
                    dm.assignment = assignment(&m.assignment);
                    dm.target_assignment = assignment(&m.target_assignment);
                    dm.member_type = 1; // consumer protocol
                    d.members.push(dm);
                }
            }
            None => {
                let classic = c.sm.lock().groups.get(id.as_str()).is_some_and(|g| g.state != GroupState::Dead);
                d.error_code = err::GROUP_ID_NOT_FOUND;
                d.error_message = Some(s(&if classic {
                    format!("Group {} is not a consumer group.", id.as_str())
                } else {
                    format!("Group {} not found.", id.as_str())
                }));
                d.group_state = s(GroupState::Dead.name());
            }
        }
        d.group_id = id;
        r.groups.push(d);
    }
    r
}

// ------------------------------------------------------------------ InitProducerId

fn init_producer_id(c: &GroupCoordinator, req: Option<InitProducerIdRequest>) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    let Some(req) = req else {
        r.error_code = err::INVALID_REQUEST;
        return r;
    };
    if req.transactional_id.is_some() {
        // The broker routes InitProducerId with a transactional id to `crate::txn`; the group
        // coordinator alone (tests, tools) refuses it clearly (non-retriable).
        r.error_code = err::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return r;
    }
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let known = pid >= 0 && pid < lock(&c.pids).next;
    if known && (0..i16::MAX - 1).contains(&epoch) {
        // KIP-360: an idempotent producer bumps its epoch to reset its sequences.
        r.producer_id = ProducerId(pid);
        r.producer_epoch = epoch + 1;
        return r;
    }
    match c.allocate_producer_id() {
        Ok(id) => {
            r.producer_id = ProducerId(id);
            r.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!("cannot allocate a producer id: {e}");
            r.error_code = err::COORDINATOR_NOT_AVAILABLE;
        }
    }
    r
}
