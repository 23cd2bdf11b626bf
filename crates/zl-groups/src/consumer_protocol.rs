//! The consumer group protocol of KIP-848 (`group.protocol=consumer`): ConsumerGroupHeartbeat
//! (API 68) with server-side assignment, member epochs and incremental reconciliation, beside
//! the classic protocol of [`super::coordinator`] (a group id is one or the other).
//!
//! Model (Kafka's `GroupMetadataManager`, `ConsumerGroup`, `CurrentAssignmentBuilder`):
//! * a group has an **epoch**, bumped whenever what the assignor sees changes (a member joins or
//!   leaves, a subscription or the assignor changes, a subscribed topic appears or grows), and a
//!   **target assignment** computed by the assignor for the latest epoch (`assignment_epoch`);
//! * each member has a **member epoch** and reconciles towards its target, one heartbeat at a
//!   time: partitions it holds but is no longer targeted for are **revoked** first (its epoch
//!   stays; the response's assignment leaves them out) and only once the member's heartbeat
//!   reports it no longer owns them (`topic_partitions`) does it move to the new epoch;
//!   partitions it is targeted for but that another member still holds (assigned or pending
//!   revocation) are **unreleased**: they are handed out on a later heartbeat, once free. So a
//!   partition never has two owners at once: `owners` maps each held partition to one member.
//! * a member that sends no heartbeat within the session timeout is removed (its partitions
//!   freed and reassigned); one that does not revoke within its rebalance timeout too.
//!
//! Topics travel by id on the wire (v0/v1); ids are [`topic_id`] of the name. The group state is
//! in memory only: after a restart members get UNKNOWN_MEMBER_ID and rejoin with epoch 0 (their
//! committed offsets are in `__consumer_offsets`, shared with the classic path).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment as HbAssignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::assignor::{self, Assignment, Tp};
use super::err;

/// Error codes of this protocol (Kafka's `Errors`).
pub mod code {
    pub const FENCED_MEMBER_EPOCH: i16 = 110;
    pub const UNRELEASED_INSTANCE_ID: i16 = 111;
    pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
    pub const STALE_MEMBER_EPOCH: i16 = 113;
    pub const INVALID_REGULAR_EXPRESSION: i16 = 128;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
}

/// Longest regular expression accepted in a subscription.
const REGEX_BYTES_MAX: usize = 1024;
/// Topics a member may subscribe to by name.
const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// The id of a topic: derived from its name (crc32c over four salted prefixes), so it is stable
/// across restarts without storing anything. Kafka gives a re-created topic a new id; here a
/// topic deleted and created again under the same name keeps its id.
pub fn topic_id(name: &str) -> Uuid {
    let mut b = [0u8; 16];
    for (i, chunk) in b.chunks_mut(4).enumerate() {
        let seed = crc32c::crc32c(format!("zerolog topic id {i}").as_bytes());
        chunk.copy_from_slice(&crc32c::crc32c_append(seed, name.as_bytes()).to_be_bytes());
    }
    // RFC 4122 version 4 / variant bits: never the nil id or Kafka's reserved ids 0 and 1.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b)
}

/// What the coordinator needs to know about topics.
pub trait TopicView {
    /// Partition count of a topic that exists (internal topics excluded).
    fn partitions(&self, topic: &str) -> Option<i32>;
    /// Names of every user topic (for regular-expression subscriptions and id lookups).
    fn names(&self) -> Vec<String>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberState {
    /// At its target (or waiting for nothing).
    Stable,
    /// Must revoke `revoking` before it may move to the target epoch.
    UnrevokedPartitions,
    /// At the target epoch, but part of its target is still held by other members.
    UnreleasedPartitions,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    epoch: i32,
    previous_epoch: i32,
    state: MemberState,
    topic_names: BTreeSet<String>,
    regex: Option<String>,
    /// `regex` compiled (anchored: a whole-name match).
    regex_compiled: Option<regex::Regex>,
    /// Topics of `regex`, resolved at each heartbeat (so new matching topics join).
    regex_topics: BTreeSet<String>,
    server_assignor: Option<String>,
    rebalance_timeout_ms: i32,
    assigned: BTreeSet<Tp>,
    revoking: BTreeSet<Tp>,
    last_heartbeat: Instant,
    revoke_deadline: Option<Instant>,
    /// The assignment last sent to the member (`None`: resend).
    sent: Option<BTreeSet<Tp>>,
    /// A static member that left with epoch -2: its partitions stay with it until its session
    /// expires or its instance id rejoins.
    left_static: bool,
}

impl Member {
    fn subscribed(&self) -> BTreeSet<String> {
        self.topic_names.union(&self.regex_topics).cloned().collect()
    }
}

#[derive(Debug, Default)]
struct Group {
    epoch: i32,
    assignment_epoch: i32,
    target: Assignment,
    members: BTreeMap<String, Member>,
    /// Every partition held by a member (assigned or pending revocation) → that member.
    owners: HashMap<Tp, String>,
    /// Partition counts of the subscribed topics at the last epoch bump.
    topics: BTreeMap<String, i32>,
    assignor: String,
}

impl Group {
    /// Kafka's `ConsumerGroupState` names.
    fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self.members.values().any(|m| m.state != MemberState::Stable || m.epoch != self.assignment_epoch) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    fn release(&mut self, member: &str, tps: &BTreeSet<Tp>) {
        for tp in tps {
            if self.owners.get(tp).is_some_and(|o| o == member) {
                self.owners.remove(tp);
            }
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            self.release(id, &m.assigned);
            self.release(id, &m.revoking);
            self.epoch += 1;
        }
    }

    /// The assignor most members ask for (ties: the first in [`assignor::ASSIGNORS`]); the
    /// default `uniform` when none asks.
    fn choose_assignor(&self) -> String {
        let mut best = (0usize, assignor::ASSIGNORS[0]);
        for name in assignor::ASSIGNORS {
            let n = self.members.values().filter(|m| m.server_assignor.as_deref() == Some(name)).count();
            if n > best.0 {
                best = (n, name);
            }
        }
        best.1.to_string()
    }

    /// Recompute the subscribed topics' partition counts; whether they changed (the caller
    /// bumps the epoch).
    fn refresh_topics(&mut self, topics: &dyn TopicView) -> bool {
        let mut now = BTreeMap::new();
        for m in self.members.values() {
            for t in m.subscribed() {
                if let Some(n) = topics.partitions(&t) {
                    now.insert(t, n);
                }
            }
        }
        if now != self.topics {
            self.topics = now;
            return true;
        }
        false
    }

    fn update_target(&mut self) {
        if self.epoch <= self.assignment_epoch {
            return;
        }
        let assignor = self.choose_assignor();
        let subs: BTreeMap<String, BTreeSet<String>> =
            self.members.iter().map(|(id, m)| (id.clone(), m.subscribed())).collect();
        self.target = assignor::assign(&assignor, &subs, &self.topics, &self.target);
        self.assignor = assignor;
        self.assignment_epoch = self.epoch;
        tracing::info!(epoch = self.epoch, assignor = %self.assignor, members = self.members.len(), "consumer group: new target assignment");
    }

    /// One reconciliation step of a member towards its target (`owned`: the partitions the
    /// member reports owning, when its heartbeat carries them).
    fn reconcile(&mut self, id: &str, owned: Option<&BTreeSet<Tp>>, now: Instant) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let tepoch = self.assignment_epoch;
        let Some(mut m) = self.members.remove(id) else { return };
        if m.state == MemberState::UnrevokedPartitions {
            if owned.is_some_and(|o| o.is_disjoint(&m.revoking)) {
                let done = std::mem::take(&mut m.revoking);
                self.release(id, &done);
                m.revoke_deadline = None;
                m.state = MemberState::Stable;
            } else {
                self.members.insert(id.to_string(), m);
                return;
            }
        }
        if m.epoch < tepoch {
            let revoke: BTreeSet<Tp> = m.assigned.difference(&target).cloned().collect();
            if !revoke.is_empty() {
                m.assigned.retain(|tp| !revoke.contains(tp));
                m.revoking = revoke;
                m.state = MemberState::UnrevokedPartitions;
                let timeout = Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64);
                m.revoke_deadline = Some(now + timeout);
                self.members.insert(id.to_string(), m);
                return;
            }
            m.previous_epoch = m.epoch;
            m.epoch = tepoch;
        }
        // At the target epoch: take every targeted partition nobody else holds.
        let mut missing = false;
        for tp in &target {
            if m.assigned.contains(tp) {
                continue;
            }
            match self.owners.get(tp) {
                Some(o) if o != id => missing = true,
                _ => {
                    self.owners.insert(tp.clone(), id.to_string());
                    m.assigned.insert(tp.clone());
                }
            }
        }
        m.state = if missing { MemberState::UnreleasedPartitions } else { MemberState::Stable };
        self.members.insert(id.to_string(), m);
    }
}

/// A member's partitions and target, as ConsumerGroupDescribe shows them.
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Vec<Tp>,
    pub target_assignment: Vec<Tp>,
}

pub struct DescribedGroup {
    pub state: &'static str,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<DescribedMember>,
}

/// Limits and timings of the protocol (Kafka's `group.consumer.*` broker settings).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
}

/// See [`ConsumerGroups::claim_for_classic`]: the consumer groups' lock, held until dropped.
pub struct ClassicClaim<'a>(#[allow(dead_code)] MutexGuard<'a, HashMap<String, Group>>);

/// Every consumer-protocol group of the broker.
pub struct ConsumerGroups {
    cfg: ConsumerConfig,
    groups: Mutex<HashMap<String, Group>>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn error(code: i16, message: &str) -> ConsumerGroupHeartbeatResponse {
    let mut r = ConsumerGroupHeartbeatResponse::default();
    r.error_code = code;
    r.error_message = Some(s(message));
    r
}

/// What [`ConsumerGroups::validate_commit`] decided.
pub enum Validation {
    /// Not a consumer-protocol group: the classic rules apply.
    NotConsumerGroup,
    Code(i16),
}

impl ConsumerGroups {
    pub fn new(cfg: ConsumerConfig) -> ConsumerGroups {
        ConsumerGroups { cfg, groups: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `group` is a consumer-protocol group.
    pub fn exists(&self, group: &str) -> bool {
        self.lock().contains_key(group)
    }

    /// A classic JoinGroup may take over the id of an Empty consumer group (Kafka converts it);
    /// one with members answers INCONSISTENT_GROUP_PROTOCOL (None). While the returned claim is
    /// held, the classic join step (which creates the classic group) runs: a concurrent first
    /// ConsumerGroupHeartbeat of the same id, which asks the classic side under the same lock,
    /// then sees either no classic group or one with a member, never both kinds for one id.
    /// Hold it only for a step that does not block (lock order: consumer groups, then the
    /// classic state machine).
    pub fn claim_for_classic(&self, group: &str) -> Option<ClassicClaim<'_>> {
        let mut g = self.lock();
        match g.get(group) {
            None => {}
            Some(grp) if grp.members.is_empty() => {
                g.remove(group);
            }
            Some(_) => return None,
        }
        Some(ClassicClaim(g))
    }

    /// DeleteGroups of a consumer group: Some(code) when the id is one (an Empty one is
    /// removed and NONE returned: the caller then deletes its offsets).
    pub fn delete_if_empty(&self, group: &str) -> Option<i16> {
        let mut g = self.lock();
        let grp = g.get(group)?;
        if !grp.members.is_empty() {
            return Some(err::NON_EMPTY_GROUP);
        }
        g.remove(group);
        Some(err::NONE)
    }

    /// The topics the members of a consumer group subscribe to (OffsetDelete), if it is one.
    pub fn subscribed_topics(&self, group: &str) -> Option<Vec<String>> {
        let g = self.lock();
        let grp = g.get(group)?;
        let mut v: Vec<String> = grp.members.values().flat_map(|m| m.subscribed()).collect();
        v.sort();
        v.dedup();
        Some(v)
    }

    /// OffsetCommit by a member (Kafka's `ConsumerGroup.validateOffsetCommit`): a commit with
    /// epoch < 0 and no member id (admin, or a consumer outside group management) only while
    /// the group is empty; otherwise the member must exist (UNKNOWN_MEMBER_ID), commit with
    /// OffsetCommit v9+ (UNSUPPORTED_VERSION) and name its current epoch (STALE_MEMBER_EPOCH).
    pub fn validate_commit(&self, group: &str, member_id: &str, epoch: i32, version: i16) -> Validation {
        let g = self.lock();
        let Some(grp) = g.get(group) else { return Validation::NotConsumerGroup };
        if epoch < 0 && grp.members.is_empty() {
            return Validation::Code(err::NONE);
        }
        let Some(m) = grp.members.get(member_id) else { return Validation::Code(err::UNKNOWN_MEMBER_ID) };
        if version < 9 {
            return Validation::Code(err::UNSUPPORTED_VERSION);
        }
        if epoch != m.epoch {
            return Validation::Code(code::STALE_MEMBER_EPOCH);
        }
        Validation::Code(err::NONE)
    }

    /// OffsetFetch v9+ naming a member (Kafka's `ConsumerGroup.validateOffsetFetch`).
    pub fn validate_fetch(&self, group: &str, member_id: Option<&str>, epoch: i32) -> i16 {
        let g = self.lock();
        let (Some(grp), Some(member_id)) = (g.get(group), member_id) else { return err::NONE };
        if epoch < 0 && member_id.is_empty() {
            return err::NONE;
        }
        match grp.members.get(member_id) {
            None => err::UNKNOWN_MEMBER_ID,
            Some(m) if m.epoch != epoch => code::STALE_MEMBER_EPOCH,
            Some(_) => err::NONE,
        }
    }

    /// (group id, state) of every consumer-protocol group.
    pub fn list(&self) -> Vec<(String, &'static str)> {
        self.lock().iter().map(|(id, g)| (id.clone(), g.state())).collect()
    }

    pub fn describe(&self, group: &str) -> Option<DescribedGroup> {
        let g = self.lock();
        let grp = g.get(group)?;
        let members = grp
            .members
            .values()
            .map(|m| DescribedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                rack_id: m.rack_id.clone(),
                member_epoch: m.epoch,
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                subscribed_topic_names: m.topic_names.iter().cloned().collect(),
                subscribed_topic_regex: m.regex.clone(),
                assignment: m.assigned.iter().cloned().collect(),
                target_assignment: grp.target.get(&m.id).map(|t| t.iter().cloned().collect()).unwrap_or_default(),
            })
            .collect();
        Some(DescribedGroup {
            state: grp.state(),
            epoch: grp.epoch,
            assignment_epoch: grp.assignment_epoch,
            assignor: if grp.assignor.is_empty() { grp.choose_assignor() } else { grp.assignor.clone() },
            members,
        })
    }

    /// Expire members whose session timed out and members that did not revoke in time.
    pub fn tick(&self) {
        let now = Instant::now();
        let session = Duration::from_millis(self.cfg.session_timeout_ms.max(1) as u64);
        let mut g = self.lock();
        for (gid, grp) in g.iter_mut() {
            let expired: Vec<(String, &'static str)> = grp
                .members
                .values()
                .filter_map(|m| {
                    if now.duration_since(m.last_heartbeat) > session {
                        Some((m.id.clone(), "session timeout"))
                    } else if m.revoke_deadline.is_some_and(|d| now > d) {
                        Some((m.id.clone(), "revocation not acknowledged within the rebalance timeout"))
                    } else {
                        None
                    }
                })
                .collect();
            for (id, why) in expired {
                tracing::info!(group = %gid, member = %id, "consumer group member removed: {why}");
                grp.remove_member(&id);
            }
            if grp.epoch > grp.assignment_epoch && !grp.members.is_empty() {
                grp.update_target();
            }
        }
    }

    /// Serve one ConsumerGroupHeartbeat. `classic_free` tells whether the classic coordinator
    /// lets this id become a consumer group (no classic group with members); it is asked only
    /// when the group does not exist yet.
    pub fn heartbeat(
        &self,
        req: ConsumerGroupHeartbeatRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
        topics: &dyn TopicView,
        classic_free: impl FnOnce(&str) -> bool,
    ) -> ConsumerGroupHeartbeatResponse {
        let group_id = req.group_id.as_str().to_string();
        let member_id = req.member_id.as_str().to_string();
        let epoch = req.member_epoch;
        let instance_id = req.instance_id.as_ref().map(|i| i.as_str().to_string());
        // Request validation (Kafka's throwIfConsumerGroupHeartbeatRequestIsInvalid).
        if group_id.is_empty() {
            return error(err::INVALID_GROUP_ID, "GroupId can't be empty.");
        }
        if group_id.len() > super::store::GROUP_ID_BYTES_MAX {
            return error(err::INVALID_GROUP_ID, "GroupId is longer than 32767 bytes.");
        }
        if instance_id.as_deref() == Some("") {
            return error(err::INVALID_REQUEST, "InstanceId can't be empty.");
        }
        if version >= 1 && member_id.is_empty() {
            return error(err::INVALID_REQUEST, "MemberId can't be empty.");
        }
        if version == 0 && epoch != 0 && member_id.is_empty() {
            return error(err::INVALID_REQUEST, "MemberId can't be empty.");
        }
        if epoch < -2 {
            return error(err::INVALID_REQUEST, &format!("MemberEpoch {epoch} is invalid."));
        }
        if epoch == -2 && instance_id.is_none() {
            return error(err::INVALID_REQUEST, "InstanceId can't be null when MemberEpoch is -2.");
        }
        if epoch == 0 {
            if req.rebalance_timeout_ms == -1 {
                return error(err::INVALID_REQUEST, "RebalanceTimeoutMs must be provided in first request.");
            }
            if req.topic_partitions.as_ref().is_none_or(|t| !t.is_empty()) {
                return error(err::INVALID_REQUEST, "TopicPartitions must be empty when (re-)joining.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return error(err::INVALID_REQUEST, "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.");
            }
        }
        if let Some(a) = req.server_assignor.as_ref().map(|a| a.as_str()) {
            if !assignor::ASSIGNORS.contains(&a) {
                return error(
                    code::UNSUPPORTED_ASSIGNOR,
                    &format!("ServerAssignor {a} is not supported. Supported assignors: {}.", assignor::ASSIGNORS.join(", ")),
                );
            }
        }
        if req.subscribed_topic_names.as_ref().is_some_and(|t| t.len() > SUBSCRIBED_TOPICS_MAX) {
            return error(err::INVALID_REQUEST, &format!("more than {SUBSCRIBED_TOPICS_MAX} subscribed topics"));
        }
        let regex = match req.subscribed_topic_regex.as_ref().map(|r| r.as_str()) {
            None | Some("") => None,
            Some(r) if r.len() > REGEX_BYTES_MAX => {
                return error(code::INVALID_REGULAR_EXPRESSION, &format!("SubscribedTopicRegex longer than {REGEX_BYTES_MAX} bytes"));
            }
            Some(r) => match regex::Regex::new(&format!("^(?:{r})$")) {
                Ok(re) => Some((r.to_string(), re)),
                Err(e) => return error(code::INVALID_REGULAR_EXPRESSION, &format!("SubscribedTopicRegex `{r}` is not a valid regular expression: {e}")),
            },
        };
        let owned: Option<BTreeSet<Tp>> = req.topic_partitions.as_ref().map(|tps| {
            let mut by_id: HashMap<Uuid, String> = HashMap::new();
            if !tps.is_empty() {
                for n in topics.names() {
                    by_id.insert(topic_id(&n), n);
                }
            }
            let mut set = BTreeSet::new();
            for t in tps {
                // Partitions of a topic that no longer exists cannot be owned by anyone else.
                if let Some(name) = by_id.get(&t.topic_id) {
                    for p in &t.partitions {
                        set.insert((name.clone(), *p));
                    }
                }
            }
            set
        });

        let now = Instant::now();
        let mut groups = self.lock();
        if !groups.contains_key(&group_id) {
            if epoch != 0 {
                // Kafka: an unknown group with a member epoch other than 0.
                return error(err::UNKNOWN_MEMBER_ID, &format!("Group {group_id} does not have member {member_id} (unknown group)."));
            }
            if !classic_free(&group_id) {
                return error(err::GROUP_ID_NOT_FOUND, &format!("Group {group_id} is not a consumer group (it uses the classic protocol)."));
            }
            groups.insert(group_id.clone(), Group::default());
        }
        let grp = groups.get_mut(&group_id).expect("inserted");
        let mut member_id = member_id;
        let mut joined = false;

        // Leaving.
        if epoch == -1 || epoch == -2 {
            let Some(m) = grp.members.get(&member_id) else {
                return error(err::UNKNOWN_MEMBER_ID, &format!("Group {group_id} does not have member {member_id}."));
            };
            if m.instance_id.is_some() && m.instance_id != instance_id && instance_id.is_some() {
                return error(err::FENCED_INSTANCE_ID, "The instance id does not match the member.");
            }
            if epoch == -2 {
                let m = grp.members.get_mut(&member_id).expect("exists");
                m.left_static = true;
                m.last_heartbeat = now;
                tracing::info!(group = %group_id, member = %member_id, "consumer group static member left temporarily");
            } else {
                grp.remove_member(&member_id); // bumps the epoch
                grp.refresh_topics(topics);
                grp.update_target();
                tracing::info!(group = %group_id, member = %member_id, epoch = grp.epoch, "consumer group member left");
            }
            let mut r = ConsumerGroupHeartbeatResponse::default();
            r.member_id = Some(s(&member_id));
            r.member_epoch = epoch;
            r.heartbeat_interval_ms = 0;
            return r;
        }

        if epoch == 0 {
            if member_id.is_empty() {
                member_id = uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string();
            }
            // A static instance: replace a member that left with -2 (it keeps the partitions and
            // epoch of the instance); another live member holding it → UNRELEASED_INSTANCE_ID.
            let mut inherited: Option<Member> = None;
            if let Some(iid) = &instance_id {
                let holder = grp.members.values().find(|m| m.instance_id.as_deref() == Some(iid)).map(|m| (m.id.clone(), m.left_static));
                match holder {
                    Some((hid, _)) if hid == member_id => {}
                    Some((hid, true)) => inherited = grp.members.remove(&hid),
                    Some((hid, false)) => {
                        return error(
                            code::UNRELEASED_INSTANCE_ID,
                            &format!("Static member {hid} with instance id {iid} is still active; it must leave first."),
                        );
                    }
                    None => {}
                }
            }
            if grp.members.contains_key(&member_id) {
                // A rejoin of a known member (after an error, fenced): start over.
                grp.remove_member(&member_id);
                grp.epoch -= 1; // bumped once below, as for any join
            }
            if inherited.is_none() && grp.members.len() >= self.cfg.max_size {
                return error(err::GROUP_MAX_SIZE_REACHED, &format!("The consumer group has reached its maximum capacity of {} members.", self.cfg.max_size));
            }
            let mut m = Member {
                id: member_id.clone(),
                instance_id: instance_id.clone(),
                rack_id: None,
                client_id: client_id.to_string(),
                client_host: client_host.to_string(),
                epoch: 0,
                previous_epoch: -1,
                state: MemberState::Stable,
                topic_names: BTreeSet::new(),
                regex: None,
                regex_compiled: None,
                regex_topics: BTreeSet::new(),
                server_assignor: None,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                assigned: BTreeSet::new(),
                revoking: BTreeSet::new(),
                last_heartbeat: now,
                revoke_deadline: None,
                sent: None,
                left_static: false,
            };
            if let Some(old) = inherited {
                for tp in old.assigned.iter().chain(old.revoking.iter()) {
                    grp.owners.insert(tp.clone(), member_id.clone());
                }
                m.assigned = old.assigned;
                m.revoking = old.revoking;
                m.state = old.state;
                m.epoch = old.epoch;
                m.previous_epoch = old.previous_epoch;
                m.revoke_deadline = old.revoke_deadline;
                m.topic_names = old.topic_names;
                m.regex = old.regex;
                m.regex_compiled = old.regex_compiled;
                m.server_assignor = old.server_assignor;
                if let Some(t) = grp.target.remove(&old.id) {
                    grp.target.insert(member_id.clone(), t);
                }
                tracing::info!(group = %group_id, member = %member_id, replaced = %old.id, "consumer group static member rejoined");
            } else {
                joined = true;
                tracing::info!(group = %group_id, member = %member_id, "consumer group member joined");
            }
            grp.members.insert(member_id.clone(), m);
        } else {
            let Some(m) = grp.members.get(&member_id) else {
                return error(err::UNKNOWN_MEMBER_ID, &format!("Group {group_id} does not have member {member_id}."));
            };
            if m.instance_id.is_some() && instance_id.is_some() && m.instance_id != instance_id {
                return error(err::FENCED_INSTANCE_ID, "The instance id does not match the member.");
            }
            if epoch > m.epoch {
                return error(code::FENCED_MEMBER_EPOCH, &format!("The member epoch {epoch} is larger than the expected {}.", m.epoch));
            }
            if epoch < m.epoch {
                // A lost response: the previous epoch is fine if what it owns is still assigned.
                let ok = epoch == m.previous_epoch && owned.as_ref().is_none_or(|o| o.is_subset(&m.assigned));
                if !ok {
                    return error(code::FENCED_MEMBER_EPOCH, &format!("The member epoch {epoch} is smaller than the expected {}.", m.epoch));
                }
            }
        }

        // Update the member from the request.
        let m = grp.members.get_mut(&member_id).expect("member present");
        m.last_heartbeat = now;
        m.left_static = false;
        m.client_id = client_id.to_string();
        if req.rack_id.is_some() {
            m.rack_id = req.rack_id.as_ref().map(|r| r.as_str().to_string());
        }
        if req.rebalance_timeout_ms > 0 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        let mut changed = joined;
        if let Some(names) = &req.subscribed_topic_names {
            let names: BTreeSet<String> = names.iter().map(|n| n.as_str().to_string()).collect();
            changed |= names != m.topic_names;
            m.topic_names = names;
        }
        if req.subscribed_topic_regex.is_some() {
            let r = regex.as_ref().map(|(r, _)| r.clone());
            changed |= r != m.regex;
            m.regex = r;
            m.regex_compiled = regex.map(|(_, re)| re);
        }
        let matched: BTreeSet<String> = match &m.regex_compiled {
            Some(re) => topics.names().into_iter().filter(|n| !n.starts_with("__") && re.is_match(n)).collect(),
            None => BTreeSet::new(),
        };
        changed |= matched != m.regex_topics;
        m.regex_topics = matched;
        if let Some(a) = &req.server_assignor {
            let a = a.as_str().to_string();
            changed |= m.server_assignor.as_deref() != Some(a.as_str());
            m.server_assignor = Some(a);
        }
        if grp.refresh_topics(topics) || changed {
            grp.epoch += 1;
        }
        grp.update_target();
        grp.reconcile(&member_id, owned.as_ref(), now);

        let m = grp.members.get_mut(&member_id).expect("member present");
        let full = epoch == 0 || (req.topic_partitions.is_some() && req.subscribed_topic_names.is_some() && req.rebalance_timeout_ms != -1);
        let mut r = ConsumerGroupHeartbeatResponse::default();
        r.member_id = Some(s(&member_id));
        r.member_epoch = m.epoch;
        r.heartbeat_interval_ms = self.cfg.heartbeat_interval_ms;
        if full || m.sent.as_ref() != Some(&m.assigned) {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in &m.assigned {
                by_topic.entry(t.as_str()).or_default().push(*p);
            }
            let mut a = HbAssignment::default();
            for (t, ps) in by_topic {
                let mut tp = TopicPartitions::default();
                tp.topic_id = topic_id(t);
                tp.partitions = ps;
                a.topic_partitions.push(tp);
            }
            r.assignment = Some(a);
            m.sent = Some(m.assigned.clone());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as ReqTp;
    use kafka_protocol::messages::{GroupId, TopicName};

    struct Topics(BTreeMap<String, i32>);
    impl TopicView for Topics {
        fn partitions(&self, t: &str) -> Option<i32> {
            self.0.get(t).copied()
        }
        fn names(&self) -> Vec<String> {
            self.0.keys().cloned().collect()
        }
    }

    fn groups() -> ConsumerGroups {
        ConsumerGroups::new(ConsumerConfig { session_timeout_ms: 45_000, heartbeat_interval_ms: 5_000, max_size: 10 })
    }

    fn topics() -> Topics {
        Topics([("t".to_string(), 4)].into_iter().collect())
    }

    fn join(id: &str) -> ConsumerGroupHeartbeatRequest {
        let mut r = ConsumerGroupHeartbeatRequest::default();
        r.group_id = GroupId(s("g"));
        r.member_id = s(id);
        r.member_epoch = 0;
        r.rebalance_timeout_ms = 30_000;
        r.subscribed_topic_names = Some(vec![TopicName(s("t"))]);
        r.topic_partitions = Some(vec![]);
        r
    }

    fn hb(id: &str, epoch: i32, owned: &[i32]) -> ConsumerGroupHeartbeatRequest {
        let mut r = ConsumerGroupHeartbeatRequest::default();
        r.group_id = GroupId(s("g"));
        r.member_id = s(id);
        r.member_epoch = epoch;
        r.rebalance_timeout_ms = -1;
        let mut tp = ReqTp::default();
        tp.topic_id = topic_id("t");
        tp.partitions = owned.to_vec();
        r.topic_partitions = Some(vec![tp]);
        r
    }

    fn send(g: &ConsumerGroups, r: ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
        g.heartbeat(r, 1, "client", "", &topics(), |_| true)
    }

    fn parts(r: &ConsumerGroupHeartbeatResponse) -> Option<Vec<i32>> {
        r.assignment.as_ref().map(|a| a.topic_partitions.iter().flat_map(|t| t.partitions.clone()).collect())
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_revoked_it() {
        let g = groups();
        let a = send(&g, join("a"));
        assert_eq!((a.error_code, a.member_epoch, parts(&a)), (0, 1, Some(vec![0, 1, 2, 3])));
        // b joins: the target splits the partitions, but b gets none until a revokes.
        let b = send(&g, join("b"));
        assert_eq!((b.error_code, b.member_epoch), (0, 2));
        assert_eq!(parts(&b), Some(vec![]), "b is given nothing a still owns");
        // a's heartbeat: told to keep two (revoke the others), epoch unchanged.
        let a = send(&g, hb("a", 1, &[0, 1, 2, 3]));
        assert_eq!(a.member_epoch, 1);
        let kept = parts(&a).unwrap();
        assert_eq!(kept.len(), 2);
        // b again before a acknowledged: still nothing.
        let b = send(&g, hb("b", 2, &[]));
        assert_eq!(parts(&b).unwrap_or_default(), Vec::<i32>::new());
        // a acknowledges (owns only the kept ones): moves to epoch 2.
        let a = send(&g, hb("a", 1, &kept));
        assert_eq!(a.member_epoch, 2);
        // b now receives the released partitions.
        let b = send(&g, hb("b", 2, &[]));
        let mut got = parts(&b).unwrap();
        got.extend(&kept);
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert_eq!(g.describe("g").unwrap().state, "Stable");
    }

    #[test]
    fn epochs_are_validated() {
        let g = groups();
        send(&g, join("a"));
        assert_eq!(send(&g, hb("a", 7, &[])).error_code, code::FENCED_MEMBER_EPOCH);
        assert_eq!(send(&g, hb("zz", 1, &[])).error_code, err::UNKNOWN_MEMBER_ID);
        let mut bad = join("c");
        bad.server_assignor = Some(s("sticky"));
        assert_eq!(send(&g, bad).error_code, code::UNSUPPORTED_ASSIGNOR);
        let mut v1 = join("");
        v1.member_id = s("");
        assert_eq!(send(&g, v1.clone()).error_code, err::INVALID_REQUEST);
        // v0: the server generates the member id.
        let r = g.heartbeat(v1, 0, "client", "", &topics(), |_| true);
        assert_eq!(r.error_code, 0);
        assert!(!r.member_id.unwrap().is_empty());
    }

    #[test]
    fn leaving_frees_the_partitions_for_the_others() {
        let g = groups();
        send(&g, join("a"));
        send(&g, join("b"));
        let a = send(&g, hb("a", 1, &[0, 1, 2, 3]));
        let kept = parts(&a).unwrap();
        send(&g, hb("a", 1, &kept));
        let mut leave = hb("a", -1, &[]);
        leave.topic_partitions = None;
        assert_eq!(send(&g, leave).member_epoch, -1);
        let mut b = send(&g, hb("b", 2, &[]));
        // b first moves to the new epoch, then has everything.
        for _ in 0..3 {
            if parts(&b).is_some_and(|p| p.len() == 4) {
                break;
            }
            let owned = parts(&b).unwrap_or_default();
            b = send(&g, hb("b", b.member_epoch, &owned));
        }
        assert_eq!(parts(&b), Some(vec![0, 1, 2, 3]));
    }

    #[test]
    fn static_member_keeps_its_partitions_across_a_restart() {
        let g = groups();
        let mut j = join("a");
        j.instance_id = Some(s("i1"));
        let a = send(&g, j.clone());
        assert_eq!(parts(&a), Some(vec![0, 1, 2, 3]));
        // Another member id with the same instance while a is live: refused.
        let mut j2 = j.clone();
        j2.member_id = s("a2");
        assert_eq!(send(&g, j2.clone()).error_code, code::UNRELEASED_INSTANCE_ID);
        let mut leave = hb("a", -2, &[]);
        leave.instance_id = Some(s("i1"));
        assert_eq!(send(&g, leave).member_epoch, -2);
        let r = send(&g, j2);
        assert_eq!((r.error_code, r.member_epoch, parts(&r)), (0, 1, Some(vec![0, 1, 2, 3])));
    }

    #[test]
    fn classic_groups_keep_their_id() {
        let g = groups();
        let r = g.heartbeat(join("a"), 1, "c", "", &topics(), |_| false);
        assert_eq!(r.error_code, err::GROUP_ID_NOT_FOUND);
        assert!(!g.exists("g"));
    }

    #[test]
    fn regex_subscriptions_match_whole_names_and_bad_ones_are_refused() {
        let g = groups();
        let topics = Topics([("t".to_string(), 2), ("tx".to_string(), 1), ("__consumer_offsets".to_string(), 50)].into_iter().collect());
        let mut j = join("a");
        j.subscribed_topic_names = None;
        j.subscribed_topic_regex = Some(s("t|__.*"));
        let r = g.heartbeat(j.clone(), 1, "c", "", &topics, |_| true);
        let names: Vec<Uuid> = r.assignment.unwrap().topic_partitions.iter().map(|t| t.topic_id).collect();
        assert_eq!(names, vec![topic_id("t")], "only `t` matches whole, internal topics never");
        // A matching topic created later is picked up on a heartbeat that does not repeat the regex.
        let more = Topics([("t".to_string(), 2), ("tx".to_string(), 1), ("__x".to_string(), 1)].into_iter().collect());
        let mut h = hb("a", 1, &[0, 1]);
        h.subscribed_topic_regex = None;
        assert_eq!(g.heartbeat(h.clone(), 1, "c", "", &more, |_| true).member_epoch, 1, "`__x` never matches");
        let mut j2 = join("r");
        j2.group_id = GroupId(s("g2"));
        j2.subscribed_topic_names = None;
        j2.subscribed_topic_regex = Some(s("t.*"));
        let before = Topics([("t".to_string(), 2)].into_iter().collect());
        let r = g.heartbeat(j2, 1, "c", "", &before, |_| true);
        assert_eq!(r.member_epoch, 1);
        let after = Topics([("t".to_string(), 2), ("tz".to_string(), 1)].into_iter().collect());
        let mut h = hb("r", 1, &[0, 1]);
        h.group_id = GroupId(s("g2"));
        let r = g.heartbeat(h, 1, "c", "", &after, |_| true);
        assert_eq!(r.member_epoch, 2, "the new topic `tz` bumped the epoch");
        let ids: Vec<Uuid> = r.assignment.unwrap().topic_partitions.iter().map(|t| t.topic_id).collect();
        assert!(ids.contains(&topic_id("tz")), "{ids:?}");
        j.member_id = s("b");
        j.subscribed_topic_regex = Some(s("(unclosed"));
        assert_eq!(g.heartbeat(j, 1, "c", "", &topics, |_| true).error_code, code::INVALID_REGULAR_EXPRESSION);
    }

    #[test]
    fn a_member_that_does_not_revoke_in_time_is_removed() {
        let g = groups();
        let mut j = join("a");
        j.rebalance_timeout_ms = 1;
        send(&g, j);
        send(&g, join("b"));
        let a = send(&g, hb("a", 1, &[0, 1, 2, 3]));
        assert_eq!(parts(&a).unwrap().len(), 2, "a must revoke two");
        let deadline = Instant::now() + Duration::from_secs(10);
        while g.describe("g").unwrap().members.len() == 2 {
            assert!(Instant::now() < deadline, "a never removed");
            std::thread::sleep(Duration::from_millis(5)); // the reaper's tick
            g.tick();
        }
        assert_eq!(send(&g, hb("a", 1, &[0, 1])).error_code, err::UNKNOWN_MEMBER_ID);
        let b = send(&g, hb("b", 2, &[]));
        let b = send(&g, hb("b", b.member_epoch, &parts(&b).unwrap_or_default()));
        assert_eq!(b.member_epoch, 3);
        assert_eq!(g.describe("g").unwrap().members[0].assignment.len(), 4);
    }

    #[test]
    fn topic_ids_are_stable_and_distinct() {
        assert_eq!(topic_id("a"), topic_id("a"));
        assert_ne!(topic_id("a"), topic_id("b"));
        assert!(!topic_id("").is_nil());
    }
}
