//! Consumer-group members (`consumerMode: group`): the classic group protocol as Kafka's Java
//! consumer speaks it with an eager assignor — FindCoordinator, JoinGroup (protocol type
//! "consumer", the `range` or `roundrobin` assignor computed here by the leader), SyncGroup
//! (assignments in the standard ConsumerProtocol encoding, so a real Kafka broker accepts them),
//! Heartbeat every heartbeat interval, OffsetFetch for the start position (the run's start offset
//! when the group has none committed), Fetch of the assigned partitions, OffsetCommit every
//! commit interval, before a rejoin and at the end, and LeaveGroup at shutdown.
//!
//! One thread per member; the heartbeat is a timer in the member's loop, which turns at least
//! every Fetch long-poll (`max_wait_ms`, 100 ms), so a heartbeat is at most that late.
//! REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION and UNKNOWN_MEMBER_ID (on Heartbeat, OffsetCommit,
//! SyncGroup) make the member commit what it consumed (when its generation still allows) and
//! rejoin; NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS and a lost
//! coordinator connection make it look the coordinator up again. Every error is counted by code
//! ([`crate::consumer::GroupCounters::errors_by_code`]). Bounded: no coordinator for 30 s, or no
//! assignment for 60 s, fails the run with a message naming the last error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::client::{topic_name, Conn};
use crate::consumer::Ingest;
use crate::rate::Clock;
use crate::stats::{LocalRecorder, Metrics};

/// How the leader spreads partitions over members (Kafka's `RangeAssignor` /
/// `RoundRobinAssignor`, same results for the same members and topics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignor {
    #[default]
    Range,
    #[serde(rename = "roundrobin")]
    RoundRobin,
}

impl Assignor {
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    /// `members`: (member id, subscribed topics); `partitions`: topic → partition count.
    /// Returns member id → (topic, partitions), every member present (possibly empty).
    pub fn assign(self, members: &[(String, Vec<String>)], partitions: &HashMap<String, i32>) -> HashMap<String, Vec<(String, Vec<i32>)>> {
        let mut out: HashMap<String, Vec<(String, Vec<i32>)>> = members.iter().map(|(m, _)| (m.clone(), Vec::new())).collect();
        let mut topics: Vec<&String> = partitions.keys().collect();
        topics.sort();
        let add = |out: &mut HashMap<String, Vec<(String, Vec<i32>)>>, m: &str, t: &str, p: i32| {
            let v = out.get_mut(m).expect("member present");
            match v.iter_mut().find(|(x, _)| x == t) {
                Some((_, ps)) => ps.push(p),
                None => v.push((t.to_string(), vec![p])),
            }
        };
        match self {
            Assignor::Range => {
                for t in topics {
                    let mut subs: Vec<&String> = members.iter().filter(|(_, ts)| ts.contains(t)).map(|(m, _)| m).collect();
                    subs.sort();
                    if subs.is_empty() {
                        continue;
                    }
                    let n = partitions[t].max(0) as usize;
                    let (per, extra) = (n / subs.len(), n % subs.len());
                    let mut p = 0usize;
                    for (i, m) in subs.iter().enumerate() {
                        let take = per + usize::from(i < extra);
                        for q in p..p + take {
                            add(&mut out, m, t, q as i32);
                        }
                        p += take;
                    }
                }
            }
            Assignor::RoundRobin => {
                let mut ms: Vec<&(String, Vec<String>)> = members.iter().collect();
                ms.sort_by(|a, b| a.0.cmp(&b.0));
                let mut i = 0usize;
                for t in topics {
                    for p in 0..partitions[t].max(0) {
                        // The next member (circularly) subscribed to this topic.
                        for _ in 0..ms.len() {
                            let (m, ts) = ms[i % ms.len()];
                            i += 1;
                            if ts.contains(t) {
                                add(&mut out, m, t, p);
                                break;
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// ConsumerProtocol subscription (version 0: topics, no user data), as Kafka's
/// `ConsumerProtocol.serializeSubscription`: an i16 version, then the struct.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let s = ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| StrBytes::from(t.clone())).collect());
    let mut b = BytesMut::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    s.encode(&mut b, 0).expect("subscription v0 encodes");
    b.freeze()
}

/// The topics of a member's subscription metadata (any version; newer than we know is read as
/// the newest, as Kafka does).
pub fn decode_subscription(mut b: Bytes) -> Result<Vec<String>, String> {
    if b.len() < 2 {
        return Err("subscription metadata shorter than its version".into());
    }
    let v = i16::from_be_bytes([b[0], b[1]]).clamp(0, 3);
    let _ = bytes::Buf::get_i16(&mut b);
    let s = ConsumerProtocolSubscription::decode(&mut b, v).map_err(|e| format!("subscription metadata: {e}"))?;
    Ok(s.topics.into_iter().map(|t| t.to_string()).collect())
}

/// ConsumerProtocol assignment (version 0).
pub fn encode_assignment(parts: &[(String, Vec<i32>)]) -> Bytes {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        parts.iter().map(|(t, ps)| TopicPartition::default().with_topic(topic_name(t)).with_partitions(ps.clone())).collect(),
    );
    let mut b = BytesMut::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    a.encode(&mut b, 0).expect("assignment v0 encodes");
    b.freeze()
}

/// A SyncGroup assignment: (topic, partition) pairs. Empty bytes = nothing assigned.
pub fn decode_assignment(mut b: Bytes) -> Result<Vec<(String, i32)>, String> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    if b.len() < 2 {
        return Err("assignment shorter than its version".into());
    }
    let v = i16::from_be_bytes([b[0], b[1]]).clamp(0, 3);
    let _ = bytes::Buf::get_i16(&mut b);
    let a = ConsumerProtocolAssignment::decode(&mut b, v).map_err(|e| format!("assignment: {e}"))?;
    Ok(a.assigned_partitions.into_iter().flat_map(|tp| tp.partitions.into_iter().map(move |p| (tp.topic.0.to_string(), p))).collect())
}

/// Group settings of a run (from the workload).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub commit_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub assignor: Assignor,
}

pub struct MemberSpec {
    pub group_id: String,
    /// Subscription index (for the shared positions and duplicates).
    pub sub: u32,
    /// Subscribed topics and their partition counts.
    pub topics: Vec<(String, i32)>,
    /// Brokers to ask for the coordinator and for Metadata.
    pub brokers: Vec<SocketAddr>,
    /// Where a partition starts when the group has no committed offset for it.
    pub reset: HashMap<(String, i32), i64>,
    pub settings: GroupSettings,
    pub max_wait_ms: i32,
    /// Fetch isolation level: 0 read_uncommitted, 1 read_committed.
    pub isolation_level: i8,
    /// Join only this many seconds after the measured window began (the extra member).
    pub join_after_s: Option<f64>,
    /// Leave this many seconds after the measured window began.
    pub leave_after_s: Option<f64>,
    /// Slot in [`crate::consumer::GroupCounters::members`].
    pub slot: usize,
    /// Opens the connections (the run's security settings).
    pub connector: crate::client::Connector,
}

/// Why a group call did not succeed.
enum GroupErr {
    /// Rejoin (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, ...).
    Rejoin(i16),
    /// Find the coordinator again (its error code, or -1 for a lost connection).
    Coordinator(i16),
    /// Not recoverable: fail the run.
    Fatal(String),
}

fn classify(code: i16, what: &str, group: &str) -> GroupErr {
    match code {
        // REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, MEMBER_ID_REQUIRED
        22 | 25 | 27 | 79 => GroupErr::Rejoin(code),
        // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
        14..=16 => GroupErr::Coordinator(code),
        _ => GroupErr::Fatal(format!("consumer group {group}: {what} refused with error code {code}")),
    }
}

fn version(c: &Conn, key: ApiKey) -> Result<i16, GroupErr> {
    c.version(key).ok_or_else(|| GroupErr::Fatal(format!("broker {} does not support a usable {key:?} version (consumer groups)", c.addr)))
}

struct Member<'a> {
    spec: &'a MemberSpec,
    metrics: &'a Metrics,
    clock: Clock,
    coord: Option<Conn>,
    member_id: String,
    generation: i32,
    /// Assigned partitions and the next offset to fetch.
    positions: Vec<(String, i32, i64)>,
    /// Last committed position per assigned partition.
    committed: HashMap<(String, i32), i64>,
    leaders: HashMap<(String, i32), SocketAddr>,
    conns: HashMap<SocketAddr, Conn>,
}

impl Member<'_> {
    fn gid(&self) -> GroupId {
        GroupId(StrBytes::from(self.spec.group_id.clone()))
    }

    fn coord(&mut self) -> Result<&mut Conn, GroupErr> {
        self.coord.as_mut().ok_or(GroupErr::Coordinator(-1))
    }

    /// Ask the brokers in turn for the group's coordinator and connect to it.
    fn find_coordinator(&mut self) -> Result<(), GroupErr> {
        let mut last = GroupErr::Coordinator(-1);
        let read_timeout = Duration::from_millis(self.spec.settings.rebalance_timeout_ms.max(0) as u64 + 5_000);
        for b in &self.spec.brokers {
            let Ok(mut c) = self.spec.connector.connect_with_read_timeout(*b, Duration::from_secs(2), Duration::from_secs(5)) else { continue };
            let v = version(&c, ApiKey::FindCoordinator)?;
            let req = FindCoordinatorRequest::default().with_key(StrBytes::from(self.spec.group_id.clone())).with_key_type(0);
            let r: FindCoordinatorResponse = match c.call(ApiKey::FindCoordinator, v, &req) {
                Ok(r) => r,
                Err(_) => continue,
            };
            if r.error_code != 0 {
                last = classify(r.error_code, "FindCoordinator", &self.spec.group_id);
                continue;
            }
            let Ok(addr) = crate::client::resolve(&format!("{}:{}", r.host, r.port)) else { continue };
            match self.spec.connector.connect_with_read_timeout(addr, Duration::from_secs(2), read_timeout) {
                Ok(cc) => {
                    self.coord = Some(cc);
                    return Ok(());
                }
                Err(_) => continue,
            }
        }
        Err(last)
    }

    /// JoinGroup (rejoining with the id a MEMBER_ID_REQUIRED answer gave) and SyncGroup; the
    /// leader computes the assignment. Returns the partitions assigned.
    fn join_and_sync(&mut self) -> Result<Vec<(String, i32)>, GroupErr> {
        let topics: Vec<String> = self.spec.topics.iter().map(|(t, _)| t.clone()).collect();
        let meta = encode_subscription(&topics);
        let s = &self.spec.settings;
        let (session, rebalance, assignor) = (s.session_timeout_ms, s.rebalance_timeout_ms, s.assignor);
        let gid = self.gid();
        let mut attempts = 0;
        let j: JoinGroupResponse = loop {
            attempts += 1;
            let member_id = self.member_id.clone();
            let c = self.coord()?;
            let v = version(c, ApiKey::JoinGroup)?;
            let req = JoinGroupRequest::default()
                .with_group_id(gid.clone())
                .with_session_timeout_ms(session)
                .with_rebalance_timeout_ms(rebalance)
                .with_member_id(StrBytes::from(member_id))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(assignor.name()))
                    .with_metadata(meta.clone())]);
            let j: JoinGroupResponse = c.call(ApiKey::JoinGroup, v, &req).map_err(|_| GroupErr::Coordinator(-1))?;
            // MEMBER_ID_REQUIRED (v4+): rejoin at once with the id given; not an error.
            if j.error_code == 79 && attempts < 3 {
                self.member_id = j.member_id.to_string();
                continue;
            }
            if j.error_code == 25 {
                self.member_id.clear();
            }
            if j.error_code != 0 {
                return Err(classify(j.error_code, "JoinGroup", &self.spec.group_id));
            }
            break j;
        };
        self.member_id = j.member_id.to_string();
        self.generation = j.generation_id;
        let assignments: Vec<SyncGroupRequestAssignment> = if j.leader == j.member_id {
            let mut members = Vec::new();
            for m in &j.members {
                let ts = decode_subscription(m.metadata.clone()).map_err(|e| GroupErr::Fatal(format!("consumer group {}: member {}: {e}", self.spec.group_id, m.member_id)))?;
                members.push((m.member_id.to_string(), ts));
            }
            let counts: HashMap<String, i32> = self.spec.topics.iter().cloned().collect();
            assignor
                .assign(&members, &counts)
                .into_iter()
                .map(|(m, parts)| SyncGroupRequestAssignment::default().with_member_id(StrBytes::from(m)).with_assignment(encode_assignment(&parts)))
                .collect()
        } else {
            Vec::new()
        };
        let (member_id, generation) = (self.member_id.clone(), self.generation);
        let c = self.coord()?;
        let v = version(c, ApiKey::SyncGroup)?;
        let req = SyncGroupRequest::default()
            .with_group_id(gid)
            .with_generation_id(generation)
            .with_member_id(StrBytes::from(member_id))
            .with_assignments(assignments);
        // v5+ name the protocol type and name (absent before).
        let req = if v >= 5 {
            req.with_protocol_type(Some(StrBytes::from_static_str("consumer"))).with_protocol_name(Some(StrBytes::from_static_str(assignor.name())))
        } else {
            req
        };
        let r: SyncGroupResponse = c.call(ApiKey::SyncGroup, v, &req).map_err(|_| GroupErr::Coordinator(-1))?;
        if r.error_code != 0 {
            return Err(classify(r.error_code, "SyncGroup", &self.spec.group_id));
        }
        decode_assignment(r.assignment).map_err(|e| GroupErr::Fatal(format!("consumer group {}: {e}", self.spec.group_id)))
    }

    /// OffsetFetch for the assigned partitions; those without a committed offset start at the
    /// run's start offset.
    fn start_positions(&mut self, parts: &[(String, i32)]) -> Result<(), GroupErr> {
        let mut by_topic: Vec<(String, Vec<i32>)> = Vec::new();
        for (t, p) in parts {
            match by_topic.iter_mut().find(|(x, _)| x == t) {
                Some((_, v)) => v.push(*p),
                None => by_topic.push((t.clone(), vec![*p])),
            }
        }
        let mut committed: HashMap<(String, i32), i64> = HashMap::new();
        if !parts.is_empty() {
            let gid = self.gid();
            let c = self.coord()?;
            let v = version(c, ApiKey::OffsetFetch)?;
            let req = OffsetFetchRequest::default().with_group_id(gid).with_topics(Some(
                by_topic.iter().map(|(t, ps)| OffsetFetchRequestTopic::default().with_name(topic_name(t)).with_partition_indexes(ps.clone())).collect(),
            ));
            let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, v, &req).map_err(|_| GroupErr::Coordinator(-1))?;
            if r.error_code != 0 {
                return Err(classify(r.error_code, "OffsetFetch", &self.spec.group_id));
            }
            for t in r.topics {
                for p in t.partitions {
                    if p.error_code != 0 {
                        return Err(classify(p.error_code, "OffsetFetch", &self.spec.group_id));
                    }
                    if p.committed_offset >= 0 {
                        committed.insert((t.name.0.to_string(), p.partition_index), p.committed_offset);
                    }
                }
            }
        }
        self.positions = parts
            .iter()
            .map(|(t, p)| {
                let k = (t.clone(), *p);
                let off = committed.get(&k).or_else(|| self.spec.reset.get(&k)).copied().unwrap_or(0);
                (t.clone(), *p, off)
            })
            .collect();
        self.committed = committed;
        Ok(())
    }

    fn heartbeat(&mut self) -> Result<(), GroupErr> {
        let (gid, member_id, generation) = (self.gid(), self.member_id.clone(), self.generation);
        let c = self.coord()?;
        let v = version(c, ApiKey::Heartbeat)?;
        let req = HeartbeatRequest::default().with_group_id(gid).with_generation_id(generation).with_member_id(StrBytes::from(member_id));
        let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, v, &req).map_err(|_| GroupErr::Coordinator(-1))?;
        self.metrics.consumer.group.heartbeats.fetch_add(1, Ordering::Relaxed);
        if r.error_code != 0 {
            return Err(classify(r.error_code, "Heartbeat", &self.spec.group_id));
        }
        Ok(())
    }

    /// OffsetCommit of the positions that moved since the last commit (timed).
    fn commit(&mut self) -> Result<(), GroupErr> {
        let moved: Vec<(String, i32, i64)> =
            self.positions.iter().filter(|(t, p, o)| self.committed.get(&(t.clone(), *p)) != Some(o)).cloned().collect();
        if moved.is_empty() || self.generation < 0 {
            return Ok(());
        }
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (t, p, o) in &moved {
            let part = OffsetCommitRequestPartition::default().with_partition_index(*p).with_committed_offset(*o).with_committed_leader_epoch(-1);
            match topics.iter_mut().find(|x| x.name.0.as_str() == t.as_str()) {
                Some(x) => x.partitions.push(part),
                None => topics.push(OffsetCommitRequestTopic::default().with_name(topic_name(t)).with_partitions(vec![part])),
            }
        }
        let (gid, member_id, generation) = (self.gid(), self.member_id.clone(), self.generation);
        let clock = self.clock;
        let c = self.coord()?;
        let v = version(c, ApiKey::OffsetCommit)?;
        let req = OffsetCommitRequest::default()
            .with_group_id(gid)
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from(member_id))
            .with_retention_time_ms(-1)
            .with_topics(topics);
        let t0 = clock.now_ns();
        let r: Result<OffsetCommitResponse, String> = c.call(ApiKey::OffsetCommit, v, &req);
        let us = (clock.now_ns() - t0) / 1000;
        let g = &self.metrics.consumer.group;
        let r = match r {
            Ok(r) => r,
            Err(_) => {
                g.commit_errors.fetch_add(1, Ordering::Relaxed);
                return Err(GroupErr::Coordinator(-1));
            }
        };
        crate::stats::lock(&g.commit_us).saturating_record(us.clamp(1, crate::stats::HIST_MAX_US));
        let code = r.topics.iter().flat_map(|t| t.partitions.iter()).map(|p| p.error_code).find(|c| *c != 0).unwrap_or(0);
        if code != 0 {
            g.commit_errors.fetch_add(1, Ordering::Relaxed);
            return Err(classify(code, "OffsetCommit", &self.spec.group_id));
        }
        g.commits.fetch_add(1, Ordering::Relaxed);
        for (t, p, o) in moved {
            self.metrics.consumer.set_committed(self.spec.sub, &t, p, o);
            self.committed.insert((t, p), o);
        }
        Ok(())
    }

    fn leave(&mut self) {
        if self.member_id.is_empty() {
            return;
        }
        let (gid, member_id) = (self.gid(), self.member_id.clone());
        let Ok(c) = self.coord() else { return };
        let Ok(v) = version(c, ApiKey::LeaveGroup) else { return };
        // v0-2 name the member in `member_id`, v3+ in `members`.
        let req = if v < 3 {
            LeaveGroupRequest::default().with_group_id(gid).with_member_id(StrBytes::from(member_id))
        } else {
            LeaveGroupRequest::default().with_group_id(gid).with_members(vec![MemberIdentity::default().with_member_id(StrBytes::from(member_id))])
        };
        match c.call::<_, LeaveGroupResponse>(ApiKey::LeaveGroup, v, &req) {
            Ok(r) => {
                let code = if r.error_code != 0 { r.error_code } else { r.members.iter().map(|m| m.error_code).find(|c| *c != 0).unwrap_or(0) };
                if code != 0 {
                    self.metrics.consumer.group_error(self.metrics, code);
                }
            }
            Err(_) => self.metrics.consumer.group_error(self.metrics, -1),
        }
    }

    /// Leaders of the assigned partitions from Metadata (first broker that answers).
    fn refresh_leaders(&mut self) -> bool {
        let topics: Vec<String> = {
            let mut t: Vec<String> = self.positions.iter().map(|(t, _, _)| t.clone()).collect();
            t.sort();
            t.dedup();
            t
        };
        if topics.is_empty() {
            return true;
        }
        let Some(md) = self.spec.brokers.iter().find_map(|a| {
            self.spec.connector.connect_with_read_timeout(*a, Duration::from_secs(1), Duration::from_secs(2)).and_then(|mut c| c.metadata(Some(&topics), false)).ok()
        }) else {
            return false;
        };
        let addr_of: HashMap<i32, SocketAddr> =
            md.brokers.iter().filter_map(|b| crate::client::resolve(&format!("{}:{}", b.host, b.port)).ok().map(|a| (b.node_id.0, a))).collect();
        self.leaders.clear();
        for t in &md.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else { continue };
            for p in &t.partitions {
                if let (0, Some(a)) = (p.error_code, addr_of.get(&p.leader_id.0)) {
                    self.leaders.insert((name.clone(), p.partition_index), *a);
                }
            }
        }
        self.positions.iter().all(|(t, p, _)| self.leaders.contains_key(&(t.clone(), *p)))
    }

    /// One Fetch per leader of the assigned partitions; records go through [`Ingest`].
    /// Returns (new records, value bytes, any answer received).
    fn fetch_once(&mut self, ingest: &mut Ingest<'_>, part_max: &mut i32) -> (u64, u64, bool) {
        let mut addrs: Vec<SocketAddr> = self.leaders.values().copied().collect();
        addrs.sort();
        addrs.dedup();
        let (mut got, mut bytes, mut answered, mut stuck) = (0u64, 0u64, false, false);
        let mut lost_leader = false;
        for a in addrs {
            let parts: Vec<(String, i32, i64)> =
                self.positions.iter().filter(|(t, p, _)| self.leaders.get(&(t.clone(), *p)) == Some(&a)).cloned().collect();
            if parts.is_empty() {
                continue;
            }
            let conn = match self.conns.entry(a) {
                std::collections::hash_map::Entry::Occupied(c) => Ok(c.into_mut()),
                std::collections::hash_map::Entry::Vacant(v) => self.spec.connector.connect(a, Duration::from_secs(2)).map(|c| v.insert(c)),
            };
            let r = conn.and_then(|c| c.fetch_many(parts.iter().map(|(t, p, off)| (t.as_str(), *p, *off)), self.spec.max_wait_ms, *part_max, self.spec.isolation_level));
            let resp = match r {
                Ok(r) => r,
                Err(_) => {
                    if !self.metrics.stopped() {
                        self.metrics.consumer.group_error(self.metrics, -1);
                    }
                    self.conns.remove(&a);
                    lost_leader = true;
                    continue;
                }
            };
            answered = true;
            ingest.refresh(&self.clock);
            for t in &resp.responses {
                let topic = t.topic.0.to_string();
                for p in &t.partitions {
                    let Some(slot) = self.positions.iter_mut().find(|(x, q, _)| *x == topic && *q == p.partition_index) else { continue };
                    if p.error_code != 0 {
                        self.metrics.consumer.group_error(self.metrics, p.error_code);
                        if matches!(p.error_code, 3 | 5 | 6 | 74 | 75) {
                            lost_leader = true;
                        }
                        if p.error_code == 1 {
                            slot.2 = p.log_start_offset.max(0);
                        }
                        continue;
                    }
                    let (n, b, st) = ingest.partition(self.spec.sub, &topic, p, &mut slot.2);
                    got += n;
                    bytes += b;
                    stuck |= st;
                }
            }
        }
        if stuck && *part_max < (256 << 20) {
            *part_max *= 2;
        }
        if lost_leader {
            self.leaders.clear();
        }
        (got, bytes, answered)
    }
}

/// Run one group member until `done` (or `metrics.stop`, or its leave time): see the module doc.
pub fn run_member(spec: MemberSpec, clock: Clock, metrics: Arc<Metrics>, done: Arc<AtomicBool>) {
    let m = &*metrics;
    let ct = &m.consumer;
    let quit = || m.stopped() || done.load(Ordering::Relaxed);
    let at_window = |s: Option<f64>| -> Option<u64> {
        let from = m.window().0;
        s.and_then(|s| (from > 0).then(|| from + (s * 1e9) as u64))
    };
    let mut flush_seen = m.flush_req.load(Ordering::SeqCst);
    // The extra member: wait (bounded by the run) for its join time.
    if spec.join_after_s.is_some() {
        loop {
            if quit() {
                m.flush_acks.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if at_window(spec.join_after_s).is_some_and(|t| clock.now_ns() >= t) {
                break;
            }
            idle_ack_flush(m, &mut flush_seen);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut me = Member {
        spec: &spec,
        metrics: m,
        clock,
        coord: None,
        member_id: String::new(),
        generation: -1,
        positions: Vec::new(),
        committed: HashMap::new(),
        leaders: HashMap::new(),
        conns: HashMap::new(),
    };
    let mut rec = LocalRecorder::new();
    let mut rec_other = LocalRecorder::new();
    let mut need_join = true;
    // JoinGroup sent, first Fetch answer after SyncGroup not yet received.
    let mut rebalance_from: Option<u64> = None;
    let hb_every = spec.settings.heartbeat_interval_ms * 1_000_000;
    let commit_every = spec.settings.commit_interval_ms * 1_000_000;
    let (mut next_hb, mut next_commit) = (0u64, 0u64);
    let mut part_max: i32 = 8 << 20;
    let mut backoff_ms = 50u64;
    let mut no_coordinator_since: Option<Instant> = None;
    let mut unassigned_since = Instant::now();
    let mut last_err = String::from("none");
    let fail = |why: String| m.fail(why);
    while !quit() {
        if at_window(spec.leave_after_s).is_some_and(|t| clock.now_ns() >= t) {
            break;
        }
        if me.coord.is_none() {
            match me.find_coordinator() {
                Ok(()) => {}
                Err(e) => {
                    if let GroupErr::Fatal(msg) = e {
                        fail(msg);
                        break;
                    }
                    let code = match e {
                        GroupErr::Coordinator(c) | GroupErr::Rejoin(c) => c,
                        GroupErr::Fatal(_) => -1,
                    };
                    ct.group_error(m, code);
                    last_err = format!("FindCoordinator: error code {code}");
                    if no_coordinator_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(30) {
                        fail(format!("consumer group {}: no coordinator for 30 s (last: {last_err})", spec.group_id));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(backoff_ms));
                    backoff_ms = (backoff_ms * 2).min(1000);
                    continue;
                }
            }
        }
        let mut result: Result<(), GroupErr> = Ok(());
        // A Heartbeat or OffsetCommit was answered (the coordinator works again).
        let mut contacted = false;
        let mut commit_failed = false;
        if need_join {
            if unassigned_since.elapsed() > Duration::from_secs(60) {
                fail(format!("consumer group {}: no assignment for 60 s (last: {last_err})", spec.group_id));
                break;
            }
            rebalance_from.get_or_insert_with(|| clock.now_ns());
            locked_members(m).remove(&spec.slot);
            result = match me.join_and_sync() {
                Ok(parts) => me.start_positions(&parts).map(|()| parts),
                Err(e) => Err(e),
            }
            .map(|parts| {
                need_join = false;
                no_coordinator_since = None;
                backoff_ms = 50;
                ct.generation_synced(&spec.group_id, me.generation);
                locked_members(m).insert(spec.slot, (spec.group_id.clone(), me.generation, parts.len(), parts.is_empty()));
                if parts.is_empty() {
                    finish_rebalance(m, &mut rebalance_from, clock);
                }
                let now = clock.now_ns();
                next_hb = now + hb_every;
                next_commit = now + commit_every;
            });
            me.leaders.clear();
        } else {
            let now = clock.now_ns();
            if now >= next_hb {
                next_hb = now + hb_every;
                result = me.heartbeat();
                contacted = true;
            }
            if result.is_ok() && now >= next_commit {
                next_commit = now + commit_every;
                result = me.commit();
                commit_failed = result.is_err();
                contacted = true;
            }
        }
        if let Err(e) = result {
            match e {
                GroupErr::Fatal(msg) => {
                    fail(msg);
                    break;
                }
                GroupErr::Rejoin(code) => {
                    // REBALANCE_IN_PROGRESS is the protocol working, not a failure: counted by
                    // code but not in the run's error count.
                    if code == 27 {
                        *crate::consumer::locked(&ct.group.errors_by_code).entry(27).or_insert(0) += 1;
                    } else {
                        ct.group_error(m, code);
                    }
                    last_err = format!("error code {code}");
                    if !need_join {
                        // Commit what was consumed before giving the partitions up (accepted while
                        // the group prepares the rebalance with this generation; an error is
                        // counted by `commit`, and the next owner re-reads from the older offset:
                        // those records come back as duplicates).
                        if code == 27 && !commit_failed {
                            let _ = me.commit();
                        }
                        need_join = true;
                    }
                    if code == 25 {
                        me.member_id.clear();
                    }
                    me.positions.clear();
                    continue;
                }
                GroupErr::Coordinator(code) => {
                    ct.group_error(m, code);
                    last_err = format!("coordinator error code {code}");
                    me.coord = None;
                    // Kafka answers NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS for a while
                    // after creating __consumer_offsets: back off (50 ms doubling to 1 s).
                    if no_coordinator_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(30) {
                        fail(format!("consumer group {}: no usable coordinator for 30 s (last: {last_err})", spec.group_id));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(backoff_ms));
                    backoff_ms = (backoff_ms * 2).min(1000);
                    continue;
                }
            }
        }
        if need_join {
            continue;
        }
        if contacted {
            no_coordinator_since = None;
            backoff_ms = 50;
        }
        unassigned_since = Instant::now();
        if me.positions.is_empty() {
            std::thread::sleep(Duration::from_millis(spec.max_wait_ms.max(1) as u64));
        } else {
            if me.leaders.is_empty() && !me.refresh_leaders() {
                std::thread::sleep(Duration::from_millis(backoff_ms));
                backoff_ms = (backoff_ms * 2).min(1000);
                if me.leaders.is_empty() {
                    continue;
                }
            }
            let mut ingest = Ingest { metrics: m, rec: &mut rec, rec_other: &mut rec_other, from_us: 0, until_us: 0, now_us: 0 };
            let (got, bytes, answered) = me.fetch_once(&mut ingest, &mut part_max);
            m.consumed.fetch_add(got, Ordering::SeqCst);
            m.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
            if answered && rebalance_from.is_some() {
                finish_rebalance(m, &mut rebalance_from, clock);
                if let Some(x) = locked_members(m).get_mut(&spec.slot) {
                    x.3 = true;
                }
            }
        }
        let now_ns = clock.now_ns();
        let req = m.flush_req.load(Ordering::SeqCst);
        let force = req != flush_seen;
        rec.maybe_flush(&m.e2e, now_ns, force);
        rec_other.maybe_flush(&m.e2e_other, now_ns, force);
        if force {
            flush_seen = req;
            m.flush_acks.fetch_add(1, Ordering::SeqCst);
        }
    }
    // Final commit, then leave (a leaving member's partitions go to the others from here).
    if !need_join && me.coord.is_some() {
        if let Err(GroupErr::Rejoin(c) | GroupErr::Coordinator(c)) = me.commit() {
            ct.group_error(m, c);
        }
    }
    me.leave();
    locked_members(m).remove(&spec.slot);
    rec.maybe_flush(&m.e2e, 0, true);
    rec_other.maybe_flush(&m.e2e_other, 0, true);
    // A member that left before the end keeps answering the run's flush requests (it has
    // nothing more), so the run never waits for it.
    while !quit() {
        idle_ack_flush(m, &mut flush_seen);
        std::thread::sleep(Duration::from_millis(10));
    }
    m.flush_acks.fetch_add(1, Ordering::SeqCst);
}

fn idle_ack_flush(m: &Metrics, seen: &mut u64) {
    let req = m.flush_req.load(Ordering::SeqCst);
    if req != *seen {
        *seen = req;
        m.flush_acks.fetch_add(1, Ordering::SeqCst);
    }
}

fn locked_members(m: &Metrics) -> std::sync::MutexGuard<'_, crate::consumer::MemberStatus> {
    crate::consumer::locked(&m.consumer.group.members)
}

/// First Fetch answer after a (re)join: the rebalance as this member saw it ended.
fn finish_rebalance(m: &Metrics, from: &mut Option<u64>, clock: Clock) {
    if let Some(t0) = from.take() {
        if m.consumer.started.load(Ordering::SeqCst) {
            let us = (clock.now_ns().saturating_sub(t0) / 1000).clamp(1, crate::stats::HIST_MAX_US);
            crate::stats::lock(&m.consumer.group.rebalance_us).saturating_record(us);
            m.consumer.group.member_rejoins.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbroker::{header, respond, serve, Served};
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
    use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
    use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    use std::sync::Mutex;

    /// What the scripted coordinator saw.
    #[derive(Default)]
    struct Seen {
        joins: u32,
        /// The records were served; the next Heartbeat answers ILLEGAL_GENERATION once.
        served: bool,
        illegal_sent: bool,
        committed: Vec<i64>,
        left: bool,
    }

    /// A scripted group coordinator (`crate::testbroker`) for one member of group "g" on topic
    /// "t" (1 partition): JoinGroup answers follow `join` then 0 (each success a new
    /// generation, the member its leader); the first Heartbeat after the records were served
    /// answers ILLEGAL_GENERATION, the others 0; SyncGroup echoes the leader's assignment;
    /// OffsetFetch knows no committed offset; Fetch serves 5 records at offset 0.
    fn coordinator(join: Vec<i16>) -> (SocketAddr, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        let join = Mutex::new(join.into_iter());
        let apis = vec![
            (ApiKey::FindCoordinator, 0, 3),
            (ApiKey::JoinGroup, 0, 7),
            (ApiKey::SyncGroup, 0, 5),
            (ApiKey::Heartbeat, 0, 4),
            (ApiKey::LeaveGroup, 0, 4),
            (ApiKey::OffsetCommit, 0, 8),
            (ApiKey::OffsetFetch, 0, 7),
            (ApiKey::Fetch, 4, 12),
        ];
        let addr_cell: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let a2 = addr_cell.clone();
        let addr = serve(apis, None, move |s, key, v, mut frame| {
            let me = a2.lock().unwrap().expect("address set");
            match ApiKey::try_from(key) {
                Ok(ApiKey::FindCoordinator) => {
                    let h = header::<FindCoordinatorRequest>(&mut frame, v);
                    let r = FindCoordinatorResponse::default()
                        .with_node_id(BrokerId(1))
                        .with_host(StrBytes::from(me.ip().to_string()))
                        .with_port(me.port() as i32);
                    respond(s, h.correlation_id, v, &r);
                }
                Ok(ApiKey::JoinGroup) => {
                    let h = header::<JoinGroupRequest>(&mut frame, v);
                    let req = JoinGroupRequest::decode(&mut frame, v).unwrap();
                    let code = join.lock().unwrap().next().unwrap_or(0);
                    let mut seen = s2.lock().unwrap();
                    let r = if code == 0 {
                        seen.joins += 1;
                        let m = StrBytes::from_static_str("m-1");
                        JoinGroupResponse::default()
                            .with_generation_id(seen.joins as i32)
                            .with_protocol_name(Some(req.protocols[0].name.clone()))
                            .with_leader(m.clone())
                            .with_member_id(m.clone())
                            .with_members(vec![JoinGroupResponseMember::default().with_member_id(m).with_metadata(req.protocols[0].metadata.clone())])
                    } else {
                        JoinGroupResponse::default().with_error_code(code)
                    };
                    respond(s, h.correlation_id, v, &r);
                }
                Ok(ApiKey::SyncGroup) => {
                    let h = header::<SyncGroupRequest>(&mut frame, v);
                    let req = SyncGroupRequest::decode(&mut frame, v).unwrap();
                    let a = req.assignments.first().map(|a| a.assignment.clone()).unwrap_or_default();
                    respond(s, h.correlation_id, v, &SyncGroupResponse::default().with_assignment(a));
                }
                Ok(ApiKey::Heartbeat) => {
                    let h = header::<HeartbeatRequest>(&mut frame, v);
                    let mut seen = s2.lock().unwrap();
                    let code = if seen.served && !seen.illegal_sent {
                        seen.illegal_sent = true;
                        22
                    } else {
                        0
                    };
                    respond(s, h.correlation_id, v, &HeartbeatResponse::default().with_error_code(code));
                }
                Ok(ApiKey::OffsetFetch) => {
                    let h = header::<OffsetFetchRequest>(&mut frame, v);
                    // No committed offset (-1): the member starts at the run's start offset.
                    use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
                    let r = OffsetFetchResponse::default().with_topics(vec![OffsetFetchResponseTopic::default()
                        .with_name(topic_name("t"))
                        .with_partitions(vec![OffsetFetchResponsePartition::default().with_partition_index(0).with_committed_offset(-1)])]);
                    respond(s, h.correlation_id, v, &r);
                }
                Ok(ApiKey::OffsetCommit) => {
                    let h = header::<OffsetCommitRequest>(&mut frame, v);
                    let req = OffsetCommitRequest::decode(&mut frame, v).unwrap();
                    s2.lock().unwrap().committed.push(req.topics[0].partitions[0].committed_offset);
                    let r = OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
                        .with_name(topic_name("t"))
                        .with_partitions(vec![OffsetCommitResponsePartition::default().with_partition_index(0)])]);
                    respond(s, h.correlation_id, v, &r);
                }
                Ok(ApiKey::LeaveGroup) => {
                    let h = header::<LeaveGroupRequest>(&mut frame, v);
                    s2.lock().unwrap().left = true;
                    respond(s, h.correlation_id, v, &LeaveGroupResponse::default());
                }
                Ok(ApiKey::Fetch) => {
                    let h = header::<FetchRequest>(&mut frame, v);
                    let req = FetchRequest::decode(&mut frame, v).unwrap();
                    let off = req.topics[0].partitions[0].fetch_offset;
                    if off == 0 {
                        s2.lock().unwrap().served = true;
                    }
                    let data = (off == 0).then(|| {
                        let mut b = crate::encode::BatchBuilder::new(4096);
                        for i in 0..5 {
                            b.append(None, &[7; 20], 0, i, 0, 1000);
                        }
                        Bytes::from(b.finish().0)
                    });
                    if data.is_none() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let r = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                        .with_topic(topic_name("t"))
                        .with_partitions(vec![PartitionData::default().with_partition_index(0).with_high_watermark(5).with_records(data)])]);
                    respond(s, h.correlation_id, v, &r);
                }
                _ => return Served::Close,
            }
            Served::Continue
        });
        *addr_cell.lock().unwrap() = Some(addr);
        (addr, seen)
    }

    /// NOT_COORDINATOR on the first JoinGroup: find the coordinator again; ILLEGAL_GENERATION on
    /// a Heartbeat after the records were consumed: rejoin (a new generation, timed) without a
    /// commit (the generation is gone), so the records come again from the start offset: they
    /// count as duplicates, not as consumed. Both codes counted, the final commit at the high
    /// watermark, LeaveGroup at the end.
    #[test]
    fn a_member_refinds_the_coordinator_and_rejoins_on_the_error_codes() {
        let (addr, seen) = coordinator(vec![16]);
        let metrics = Arc::new(Metrics::new(true));
        metrics.consumer.init_partition(0, "t", 0, 0, true);
        metrics.consumer.started.store(true, Ordering::SeqCst);
        let done = Arc::new(AtomicBool::new(false));
        let spec = MemberSpec {
            group_id: "g".into(),
            sub: 0,
            topics: vec![("t".into(), 1)],
            brokers: vec![addr],
            reset: [(("t".to_string(), 0), 0)].into_iter().collect(),
            settings: GroupSettings { commit_interval_ms: 50, heartbeat_interval_ms: 30, session_timeout_ms: 6000, rebalance_timeout_ms: 6000, assignor: Assignor::Range },
            max_wait_ms: 10,
            isolation_level: 0,
            join_after_s: None,
            leave_after_s: None,
            slot: 0,
            connector: crate::client::Connector::plaintext(),
        };
        let (m, d) = (metrics.clone(), done.clone());
        let h = std::thread::spawn(move || run_member(spec, Clock::new(), m, d));
        let deadline = Instant::now() + Duration::from_secs(10);
        let dups = || metrics.consumer.duplicates.load(Ordering::SeqCst);
        while !(seen.lock().unwrap().joins >= 2 && dups() >= 5) {
            assert!(Instant::now() < deadline, "joins {} consumed {}", seen.lock().unwrap().joins, metrics.consumed.load(Ordering::SeqCst));
            assert_eq!(metrics.fatal(), None);
            std::thread::sleep(Duration::from_millis(5));
        }
        done.store(true, Ordering::SeqCst);
        h.join().unwrap();
        assert_eq!(metrics.fatal(), None);
        assert_eq!(metrics.consumed.load(Ordering::SeqCst), 5, "each record once");
        assert_eq!(dups(), 5, "the re-delivered records are duplicates");
        let codes = crate::consumer::locked(&metrics.consumer.group.errors_by_code).clone();
        assert_eq!(codes.get(&16), Some(&1), "{codes:?}");
        assert_eq!(codes.get(&22), Some(&1), "{codes:?}");
        assert_eq!(metrics.consumer.generation_counts(), (0, 2));
        assert!(metrics.consumer.group.member_rejoins.load(Ordering::SeqCst) >= 2);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.committed.last(), Some(&5), "{:?}", seen.committed);
        assert!(seen.left, "LeaveGroup at the end");
        assert_eq!(metrics.consumer.lag(), (Some(0), Some(0)));
    }

    fn members(n: usize, topics: &[&str]) -> Vec<(String, Vec<String>)> {
        (0..n).map(|i| (format!("m{i}"), topics.iter().map(|t| t.to_string()).collect())).collect()
    }

    #[test]
    fn range_gives_contiguous_ranges_first_members_one_more() {
        let counts: HashMap<String, i32> = [("t".to_string(), 5)].into_iter().collect();
        let a = Assignor::Range.assign(&members(2, &["t"]), &counts);
        assert_eq!(a["m0"], vec![("t".to_string(), vec![0, 1, 2])]);
        assert_eq!(a["m1"], vec![("t".to_string(), vec![3, 4])]);
        let a = Assignor::Range.assign(&members(3, &["t"]), &counts);
        assert_eq!(a["m2"], vec![("t".to_string(), vec![4])]);
    }

    #[test]
    fn roundrobin_alternates_over_all_partitions() {
        let counts: HashMap<String, i32> = [("a".to_string(), 2), ("b".to_string(), 2)].into_iter().collect();
        let a = Assignor::RoundRobin.assign(&members(3, &["a", "b"]), &counts);
        assert_eq!(a["m0"], vec![("a".to_string(), vec![0]), ("b".to_string(), vec![1])]);
        assert_eq!(a["m1"], vec![("a".to_string(), vec![1])]);
        assert_eq!(a["m2"], vec![("b".to_string(), vec![0])]);
        let total: usize = a.values().flat_map(|v| v.iter().map(|(_, p)| p.len())).sum();
        assert_eq!(total, 4);
    }

    #[test]
    fn consumer_protocol_round_trips_in_kafkas_layout() {
        let s = encode_subscription(&["t1".into(), "t2".into()]);
        // version 0, array of 2 strings
        assert_eq!(&s[..6], &[0, 0, 0, 0, 0, 2]);
        assert_eq!(decode_subscription(s).unwrap(), vec!["t1".to_string(), "t2".to_string()]);
        let a = encode_assignment(&[("t1".into(), vec![0, 3])]);
        assert_eq!(decode_assignment(a).unwrap(), vec![("t1".to_string(), 0), ("t1".to_string(), 3)]);
        assert_eq!(decode_assignment(Bytes::new()).unwrap(), vec![]);
    }
}
