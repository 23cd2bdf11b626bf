//! The classic consumer-group state machine, as Kafka's `GroupCoordinator` implements it.
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all joined / rebalance timeout──▶ CompletingRebalance
//!     ▲                 ▲        │ (no member left)                          │ leader SyncGroup
//!     └─────────────────┼────────┘                                           ▼
//!                       └──── join of a new member / leave / session expiry ── Stable
//! ```
//!
//! One mutex guards every group; a JoinGroup/SyncGroup that must wait for the rebalance gets a
//! ticket under which the state machine later posts its outcome. The broker registers a
//! completion for the ticket ([`StateMachine::join_with`], [`StateMachine::sync_with`]: run on
//! a small pool when the outcome is posted, or with none once the deadline passed): no thread
//! waits. The blocking forms ([`StateMachine::join`], [`StateMachine::sync`]) park on one
//! condvar instead (tests and tools). A reaper thread expires sessions, pending members and rebalance
//! deadlines. Architecture invariant: nothing here blocks while holding the mutex except the
//! condvar wait itself; log appends happen outside it. A transition that must be persisted
//! (a completed rebalance, a group gone Empty, a static member replaced in a Stable group)
//! queues the group's record; the caller drains the queue with [`StateMachine::take_records`]
//! after the call returns and appends it to `__consumer_offsets`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::err;
use super::store::{GroupRecord, MemberRecord};

/// Tunables of the coordinator (Kafka's `group.*` broker settings).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// group.min.session.timeout.ms
    pub session_timeout_min_ms: i32,
    /// group.max.session.timeout.ms
    pub session_timeout_max_ms: i32,
    /// group.initial.rebalance.delay.ms: how long a rebalance of an empty group waits for more
    /// members (0 = complete as soon as every known member has joined).
    pub initial_rebalance_delay_ms: u64,
    /// group.max.size
    pub group_members_max: usize,
    /// Bound on one member's protocol metadata (sum over its protocols) and on one member's
    /// assignment; larger gets MESSAGE_TOO_LARGE.
    pub member_metadata_bytes_max: usize,
    /// offset.metadata.max.bytes
    pub offset_metadata_bytes_max: usize,
    /// How often the reaper checks sessions and rebalance deadlines.
    pub reaper_tick_ms: u64,
    /// group.consumer.session.timeout.ms: a consumer-protocol (KIP-848) member without a
    /// heartbeat for this long is removed and its partitions reassigned.
    pub consumer_session_timeout_ms: i32,
    /// group.consumer.heartbeat.interval.ms: the interval told to consumer-protocol members.
    pub consumer_heartbeat_interval_ms: i32,
    /// Node id, host and port returned by FindCoordinator.
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_min_ms: 6_000,
            session_timeout_max_ms: 1_800_000,
            initial_rebalance_delay_ms: 0,
            group_members_max: 1_000,
            member_metadata_bytes_max: 1 << 20,
            offset_metadata_bytes_max: 4096,
            reaper_tick_ms: 100,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            node_id: 0,
            host: "127.0.0.1".into(),
            port: 9092,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_ticket: Option<u64>,
    sync_ticket: Option<u64>,
    last_heartbeat: Instant,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the deadline to rejoin by.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Instant,
    /// The current rebalance is an initial delay: complete only at the deadline.
    initial_delay: bool,
    /// Records of this group to persist, oldest first (moved to [`Groups`] by the public calls).
    unsaved: Vec<GroupRecord>,
}

impl Group {
    fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: Instant::now(),
            initial_delay: false,
            unsaved: Vec::new(),
        }
    }

    /// Kafka's `supportsProtocols`: an empty group accepts any non-empty protocol list; otherwise
    /// the type must match and one protocol must be supported by every other member.
    fn supports(&self, except: &str, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self.members.values().filter(|m| m.id != except).collect();
        if others.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref().is_some_and(|t| t != protocol_type) {
            return false;
        }
        protocols.iter().any(|(p, _)| others.iter().all(|m| m.protocols.iter().any(|(q, _)| q == p)))
    }

    /// Each member votes for its most preferred protocol that every member supports.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(p, _)| p)
            .filter(|p| self.members.values().all(|m| m.protocols.iter().any(|(q, _)| q == *p)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((p, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == p) {
                    v.0 += 1;
                }
            }
        }
        // Highest vote count; ties go to the first member's preference order.
        let mut best: Option<(usize, &String)> = None;
        for v in votes {
            if best.is_none_or(|b| v.0 > b.0) {
                best = Some(v);
            }
        }
        best.map(|(_, p)| p.clone())
    }

    /// The member id currently holding a static `group.instance.id`.
    fn static_member(&self, instance_id: &str) -> Option<&str> {
        self.members.values().find(|m| m.instance_id.as_deref() == Some(instance_id)).map(|m| m.id.as_str())
    }

    /// A request naming `instance_id` with another member id comes from a replaced instance.
    fn fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id.and_then(|i| self.static_member(i)).is_some_and(|id| id != member_id)
    }

    fn max_rebalance_timeout_ms(&self) -> i32 {
        self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0)
    }

    /// The group as persisted (meaningful when Stable or Empty).
    fn record(&self) -> GroupRecord {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupRecord {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: zl_log::now_ms(),
            members: self
                .members
                .values()
                .map(|m| MemberRecord {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: String::new(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// What a parked JoinGroup gets.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata): only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    pub fn error(error: i16, member_id: &str) -> JoinOutcome {
        JoinOutcome { error, generation: -1, member_id: member_id.to_string(), ..Default::default() }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    fn error(error: i16) -> SyncOutcome {
        SyncOutcome { error, ..Default::default() }
    }
}

#[derive(Debug)]
enum Outcome {
    Join(JoinOutcome),
    Sync(SyncOutcome),
}

/// A registered completion of a waiting JoinGroup/SyncGroup: its deadline and the callback
/// (called with the outcome, or None once the deadline passed).
struct TicketWaiter(Instant, Box<dyn FnOnce(Option<Outcome>) + Send>);

impl std::fmt::Debug for TicketWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketWaiter({:?})", self.0)
    }
}

#[derive(Debug, Default)]
pub struct Groups {
    pub groups: HashMap<String, Group>,
    outcomes: HashMap<u64, Outcome>,
    /// Completions registered for tickets (see the module notes).
    waiters: HashMap<u64, TicketWaiter>,
    next_ticket: u64,
    /// Group records to persist, in the order of the transitions that made them.
    records: Vec<(String, GroupRecord)>,
}

/// A JoinGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED and must rejoin with its id.
    pub require_known_member_id: bool,
}

/// Either an answer now or a ticket to wait on.
enum Step<T> {
    Done(T),
    Wait(u64, Instant),
}

pub struct StateMachine {
    pub cfg: GroupConfig,
    inner: Mutex<Groups>,
    cv: Condvar,
    /// Runs registered completions (outside the state lock; they persist group records and
    /// build responses, which may wait for an fsync).
    pool: std::sync::Arc<zl_log::pool::WorkPool>,
}

/// Threads running registered JoinGroup/SyncGroup completions at most.
const COMPLETION_THREADS_MAX: usize = 8;

fn state_lock(m: &Mutex<Groups>) -> MutexGuard<'_, Groups> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Extra time a parked request waits past the deadline the reaper enforces.
const WAIT_SLACK: Duration = Duration::from_secs(5);
/// Upper bound on any parked request.
const WAIT_MAX: Duration = Duration::from_secs(600);

fn bounded(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64).saturating_add(WAIT_SLACK).min(WAIT_MAX)
}

impl StateMachine {
    pub fn new(cfg: GroupConfig) -> StateMachine {
        StateMachine {
            cfg,
            inner: Mutex::new(Groups::default()),
            cv: Condvar::new(),
            pool: zl_log::pool::WorkPool::new("group-completion", COMPLETION_THREADS_MAX),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Groups> {
        state_lock(&self.inner)
    }

    fn ticket(g: &mut Groups) -> u64 {
        g.next_ticket += 1;
        g.next_ticket
    }

    fn post(g: &mut Groups, ticket: Option<u64>, o: Outcome) {
        if let Some(t) = ticket {
            g.outcomes.insert(t, o);
        }
    }

    fn wait(&self, mut g: MutexGuard<'_, Groups>, ticket: u64, deadline: Instant) -> Option<Outcome> {
        loop {
            if let Some(o) = g.outcomes.remove(&ticket) {
                return Some(o);
            }
            let now = Instant::now();
            if now >= deadline {
                // Nobody answered within the bound: forget the ticket so a late post is dropped.
                Self::forget_ticket(&mut g, ticket);
                return None;
            }
            g = self.cv.wait_timeout(g, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Run `job` on the completion pool (JoinGroup/SyncGroup steps and their completions).
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        self.pool.spawn(job);
    }

    fn forget_ticket(g: &mut Groups, ticket: u64) {
        for grp in g.groups.values_mut() {
            for m in grp.members.values_mut() {
                if m.join_ticket == Some(ticket) {
                    m.join_ticket = None;
                }
                if m.sync_ticket == Some(ticket) {
                    m.sync_ticket = None;
                }
            }
        }
    }

    /// Wake the blocking waiters, and hand every posted outcome that has a registered
    /// completion to the completion pool.
    fn notify(&self, g: &mut Groups) {
        self.cv.notify_all();
        if g.waiters.is_empty() {
            return;
        }
        let ready: Vec<u64> = g.waiters.keys().filter(|t| g.outcomes.contains_key(t)).copied().collect();
        for t in ready {
            if let (Some(w), Some(o)) = (g.waiters.remove(&t), g.outcomes.remove(&t)) {
                self.pool.spawn(move || (w.1)(Some(o)));
            }
        }
    }

    /// Registered completions whose deadline passed are called with None (the reaper's tick).
    fn expire_waiters(&self, g: &mut Groups) {
        let now = Instant::now();
        let expired: Vec<u64> = g.waiters.iter().filter(|(_, w)| w.0 <= now).map(|(t, _)| *t).collect();
        for t in expired {
            if let Some(w) = g.waiters.remove(&t) {
                Self::forget_ticket(g, t);
                self.pool.spawn(move || (w.1)(None));
            }
        }
    }

    /// Register `done` for `step`: called at once (on this thread, after the lock is released)
    /// when there is an answer already, else from the completion pool when the outcome is
    /// posted, or with None at the deadline.
    fn register(&self, mut g: MutexGuard<'_, Groups>, step: Step<Outcome>, done: Box<dyn FnOnce(Option<Outcome>) + Send>) {
        match step {
            Step::Done(o) => {
                drop(g);
                done(Some(o));
            }
            Step::Wait(t, deadline) => {
                if let Some(o) = g.outcomes.remove(&t) {
                    drop(g);
                    return done(Some(o));
                }
                g.waiters.insert(t, TicketWaiter(deadline, done));
            }
        }
    }

    // ---------------------------------------------------------------- JoinGroup

    /// [`StateMachine::join`] without waiting: `done` gets the outcome (see
    /// [`StateMachine::register`]).
    pub fn join_with(&self, a: JoinArgs, done: impl FnOnce(JoinOutcome) + Send + 'static) {
        let mut g = self.lock();
        let step = self.join_step(&mut g, &a);
        Self::collect(&mut g, &a.group_id);
        self.notify(&mut g);
        let step = match step {
            Step::Done(o) => Step::Done(Outcome::Join(o)),
            Step::Wait(t, d) => Step::Wait(t, d),
        };
        let member = a.member_id;
        self.register(
            g,
            step,
            Box::new(move |o| {
                done(match o {
                    Some(Outcome::Join(o)) => o,
                    _ => JoinOutcome::error(err::REBALANCE_IN_PROGRESS, &member),
                })
            }),
        );
    }

    pub fn join(&self, a: JoinArgs) -> JoinOutcome {
        let mut g = self.lock();
        let step = self.join_step(&mut g, &a);
        Self::collect(&mut g, &a.group_id);
        self.notify(&mut g);
        match step {
            Step::Done(o) => o,
            Step::Wait(t, deadline) => match self.wait(g, t, deadline) {
                Some(Outcome::Join(o)) => o,
                _ => JoinOutcome::error(err::REBALANCE_IN_PROGRESS, &a.member_id),
            },
        }
    }

    fn join_step(&self, g: &mut Groups, a: &JoinArgs) -> Step<JoinOutcome> {
        let fail = |e| Step::Done(JoinOutcome::error(e, &a.member_id));
        if a.group_id.is_empty() || a.group_id.len() > super::store::GROUP_ID_BYTES_MAX {
            return fail(err::INVALID_GROUP_ID);
        }
        if a.session_timeout_ms < self.cfg.session_timeout_min_ms || a.session_timeout_ms > self.cfg.session_timeout_max_ms {
            return fail(err::INVALID_SESSION_TIMEOUT);
        }
        let meta_bytes: usize = a.protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if meta_bytes > self.cfg.member_metadata_bytes_max {
            return fail(err::MESSAGE_TOO_LARGE);
        }
        let now = Instant::now();
        if !a.member_id.is_empty() && !g.groups.contains_key(&a.group_id) {
            return fail(err::UNKNOWN_MEMBER_ID);
        }
        let ticket = Self::ticket(g);
        let groups = &mut g.groups;
        let group = groups.entry(a.group_id.clone()).or_insert_with(|| Group::new(&a.group_id));
        if group.state == GroupState::Dead {
            return fail(err::COORDINATOR_NOT_AVAILABLE);
        }
        let member_id;
        let mut fenced: Vec<(u64, Outcome)> = Vec::new();
        if !a.member_id.is_empty() && group.fenced(&a.member_id, a.instance_id.as_deref()) {
            return fail(err::FENCED_INSTANCE_ID);
        }
        if a.member_id.is_empty() {
            if !group.supports("", &a.protocol_type, &a.protocols) {
                return fail(err::INCONSISTENT_GROUP_PROTOCOL);
            }
            if group.members.len() + group.pending.len() >= self.cfg.group_members_max {
                return fail(err::GROUP_MAX_SIZE_REACHED);
            }
            let id = format!("{}-{:032x}", a.client_id, rand::random::<u128>());
            let old = a.instance_id.as_deref().and_then(|i| group.static_member(i)).map(str::to_string);
            if let Some(old) = old {
                // Static membership (KIP-345): a restarted instance takes over its old member's
                // place and assignment under a new id; the old id is fenced.
                let mut m = group.members.remove(&old).expect("static member present");
                let stale: Vec<u64> = m.join_ticket.take().into_iter().chain(m.sync_ticket.take()).collect();
                let same = m.protocols == a.protocols;
                m.id = id.clone();
                m.client_id = a.client_id.clone();
                m.last_heartbeat = now;
                group.members.insert(id.clone(), m);
                if group.leader.as_deref() == Some(old.as_str()) {
                    group.leader = Some(id.clone());
                }
                tracing::info!(group = %group.id, old = %old, new = %id, "static member replaced");
                for t in stale {
                    fenced.push((t, Outcome::Join(JoinOutcome::error(err::FENCED_INSTANCE_ID, &old))));
                }
                if same && matches!(group.state, GroupState::Stable | GroupState::CompletingRebalance) {
                    // No rebalance: it gets the current generation (and keeps its assignment).
                    let o = Self::join_outcome(group, &id);
                    if group.state == GroupState::Stable {
                        group.unsaved.push(group.record());
                    }
                    for (t, x) in fenced {
                        Self::post(g, Some(t), x);
                    }
                    return Step::Done(o);
                }
            } else if a.require_known_member_id && a.instance_id.is_none() {
                group.pending.insert(id.clone(), now + Duration::from_millis(a.session_timeout_ms as u64));
                return Step::Done(JoinOutcome::error(err::MEMBER_ID_REQUIRED, &id));
            }
            member_id = id;
        } else if group.pending.contains_key(&a.member_id) {
            if !group.supports(&a.member_id, &a.protocol_type, &a.protocols) {
                return fail(err::INCONSISTENT_GROUP_PROTOCOL);
            }
            group.pending.remove(&a.member_id);
            member_id = a.member_id.clone();
        } else {
            let Some(m) = group.members.get(&a.member_id) else {
                return fail(err::UNKNOWN_MEMBER_ID);
            };
            if !group.supports(&a.member_id, &a.protocol_type, &a.protocols) {
                return fail(err::INCONSISTENT_GROUP_PROTOCOL);
            }
            let same = m.protocols == a.protocols;
            let is_leader = group.leader.as_deref() == Some(a.member_id.as_str());
            let immediate = match group.state {
                GroupState::CompletingRebalance => same,
                GroupState::Stable => same && !is_leader,
                _ => false,
            };
            if immediate {
                // Resend the current generation's answer (a follower retrying its join).
                let m = group.members.get_mut(&a.member_id).expect("checked");
                m.last_heartbeat = now;
                return Step::Done(Self::join_outcome(group, &a.member_id));
            }
            if group.state == GroupState::Empty {
                return fail(err::UNKNOWN_MEMBER_ID);
            }
            member_id = a.member_id.clone();
        }
        // Add or update the member and park its join.
        let old_ticket = group.members.get(&member_id).and_then(|m| m.join_ticket);
        let m = group.members.entry(member_id.clone()).or_insert_with(|| Member {
            id: member_id.clone(),
            instance_id: a.instance_id.clone(),
            client_id: a.client_id.clone(),
            session_timeout_ms: a.session_timeout_ms,
            rebalance_timeout_ms: a.rebalance_timeout_ms,
            protocol_type: a.protocol_type.clone(),
            protocols: Vec::new(),
            assignment: Bytes::new(),
            join_ticket: None,
            sync_ticket: None,
            last_heartbeat: now,
        });
        m.protocols = a.protocols.clone();
        m.session_timeout_ms = a.session_timeout_ms;
        m.rebalance_timeout_ms = a.rebalance_timeout_ms;
        m.protocol_type = a.protocol_type.clone();
        m.last_heartbeat = now;
        m.join_ticket = Some(ticket);
        let wait_ms = a.rebalance_timeout_ms.max(a.session_timeout_ms);
        if group.protocol_type.is_none() || group.members.len() == 1 {
            group.protocol_type = Some(a.protocol_type.clone());
        }
        let group_id = group.id.clone();
        // A duplicate join replaces the older parked one.
        Self::post(g, old_ticket, Outcome::Join(JoinOutcome::error(err::REBALANCE_IN_PROGRESS, &member_id)));
        let group = g.groups.get_mut(&group_id).expect("present");
        if group.leader.is_none() {
            group.leader = Some(member_id.clone());
        }
        let mut outcomes = fenced;
        if group.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(group, &mut outcomes);
        }
        self.maybe_complete_join(group, now, &mut outcomes);
        // The reaper completes the rebalance by its deadline, which an earlier member's longer
        // rebalance timeout may have set later than this member's own.
        let deadline = (now + bounded(wait_ms)).max(group.rebalance_deadline + WAIT_SLACK);
        for (t, o) in outcomes {
            Self::post(g, Some(t), o);
        }
        Step::Wait(ticket, deadline.min(now + WAIT_MAX))
    }

    fn join_outcome(group: &Group, member_id: &str) -> JoinOutcome {
        let leader = group.leader.clone().unwrap_or_default();
        let protocol = group.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            group
                .members
                .values()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata_for(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: err::NONE,
            generation: group.generation,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn prepare_rebalance(&self, group: &mut Group, out: &mut Vec<(u64, Outcome)>) {
        if group.state == GroupState::CompletingRebalance {
            for m in group.members.values_mut() {
                if let Some(t) = m.sync_ticket.take() {
                    out.push((t, Outcome::Sync(SyncOutcome::error(err::REBALANCE_IN_PROGRESS))));
                }
            }
        }
        let now = Instant::now();
        if group.state == GroupState::Empty && self.cfg.initial_rebalance_delay_ms > 0 {
            group.initial_delay = true;
            let delay = self.cfg.initial_rebalance_delay_ms.min(group.max_rebalance_timeout_ms().max(0) as u64);
            group.rebalance_deadline = now + Duration::from_millis(delay);
        } else {
            group.initial_delay = false;
            group.rebalance_deadline = now + Duration::from_millis(group.max_rebalance_timeout_ms().max(0) as u64);
        }
        tracing::debug!(group = %group.id, generation = group.generation, "preparing rebalance");
        group.state = GroupState::PreparingRebalance;
    }

    fn maybe_complete_join(&self, group: &mut Group, now: Instant, out: &mut Vec<(u64, Outcome)>) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = group.members.values().all(|m| m.join_ticket.is_some()) && group.pending.is_empty();
        if (all_joined && !group.initial_delay) || now >= group.rebalance_deadline {
            self.complete_join(group, out);
        }
    }

    fn complete_join(&self, group: &mut Group, out: &mut Vec<(u64, Outcome)>) {
        // Static members stay (their instance may come back); dynamic ones that did not rejoin go.
        let gone: Vec<String> = group
            .members
            .values()
            .filter(|m| m.join_ticket.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %group.id, member = %id, "member did not rejoin in time; removed");
            group.members.remove(&id);
        }
        group.generation = group.generation.wrapping_add(1).max(1);
        group.initial_delay = false;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol = None;
            group.leader = None;
            // As Kafka: an Empty group is persisted as a record without members.
            group.unsaved.push(group.record());
            return;
        }
        group.protocol = group.select_protocol();
        if !group.leader.as_ref().is_some_and(|l| group.members.contains_key(l)) {
            group.leader = group.members.keys().next().cloned();
        }
        group.state = GroupState::CompletingRebalance;
        let now = Instant::now();
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let o = Self::join_outcome(group, &id);
            let m = group.members.get_mut(&id).expect("present");
            m.last_heartbeat = now;
            m.assignment = Bytes::new();
            if let Some(t) = m.join_ticket.take() {
                out.push((t, Outcome::Join(o)));
            }
        }
        tracing::info!(
            group = %group.id, generation = group.generation, members = group.members.len(),
            protocol = ?group.protocol, "rebalance: join complete"
        );
    }

    /// Remove a member (leave, session expiry) and rebalance the rest.
    fn remove_member(&self, group: &mut Group, id: &str, out: &mut Vec<(u64, Outcome)>) {
        let Some(m) = group.members.remove(id) else { return };
        if let Some(t) = m.join_ticket {
            out.push((t, Outcome::Join(JoinOutcome::error(err::UNKNOWN_MEMBER_ID, id))));
        }
        if let Some(t) = m.sync_ticket {
            out.push((t, Outcome::Sync(SyncOutcome::error(err::UNKNOWN_MEMBER_ID))));
        }
        if group.leader.as_deref() == Some(id) {
            group.leader = group.members.keys().next().cloned();
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(group, out);
                // With no member left the rebalance completes at once: the group is Empty.
                self.maybe_complete_join(group, Instant::now(), out);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(group, Instant::now(), out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---------------------------------------------------------------- SyncGroup

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let mut g = self.lock();
        let step =
            self.sync_step(&mut g, group_id, member_id, instance_id, generation, protocol_type, protocol_name, assignments);
        Self::collect(&mut g, group_id);
        self.notify(&mut g);
        match step {
            Step::Done(o) => o,
            Step::Wait(t, deadline) => match self.wait(g, t, deadline) {
                Some(Outcome::Sync(o)) => o,
                _ => self.sync_timed_out(group_id, generation),
            },
        }
    }

    /// [`StateMachine::sync`] without waiting: `done` gets the outcome, or None if the leader
    /// did not send the assignment in time (the caller then calls
    /// [`StateMachine::sync_timed_out`]).
    #[allow(clippy::too_many_arguments)]
    pub fn sync_with(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        done: impl FnOnce(Option<SyncOutcome>) + Send + 'static,
    ) {
        let mut g = self.lock();
        let step =
            self.sync_step(&mut g, group_id, member_id, instance_id, generation, protocol_type, protocol_name, assignments);
        Self::collect(&mut g, group_id);
        self.notify(&mut g);
        let step = match step {
            Step::Done(o) => Step::Done(Outcome::Sync(o)),
            Step::Wait(t, d) => Step::Wait(t, d),
        };
        self.register(
            g,
            step,
            Box::new(move |o| {
                done(match o {
                    Some(Outcome::Sync(o)) => Some(o),
                    _ => None,
                })
            }),
        );
    }

    /// The leader never sent the assignment: start over, as Kafka does for members stuck
    /// awaiting sync.
    pub fn sync_timed_out(&self, group_id: &str, generation: i32) -> SyncOutcome {
        let mut g = self.lock();
        let mut out = Vec::new();
        if let Some(group) = g.groups.get_mut(group_id) {
            if group.state == GroupState::CompletingRebalance && group.generation == generation {
                tracing::warn!(group = %group_id, "leader did not sync in time; rebalancing");
                self.prepare_rebalance(group, &mut out);
            }
        }
        for (t, o) in out {
            Self::post(&mut g, Some(t), o);
        }
        Self::collect(&mut g, group_id);
        self.notify(&mut g);
        SyncOutcome::error(err::REBALANCE_IN_PROGRESS)
    }

    #[allow(clippy::too_many_arguments)]
    fn sync_step(
        &self,
        g: &mut Groups,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Step<SyncOutcome> {
        let fail = |e| Step::Done(SyncOutcome::error(e));
        let ticket = Self::ticket(g);
        let Some(group) = g.groups.get_mut(group_id) else { return fail(err::UNKNOWN_MEMBER_ID) };
        if group.state == GroupState::Dead {
            return fail(err::COORDINATOR_NOT_AVAILABLE);
        }
        if group.fenced(member_id, instance_id) {
            return fail(err::FENCED_INSTANCE_ID);
        }
        let Some(m) = group.members.get(member_id) else { return fail(err::UNKNOWN_MEMBER_ID) };
        if generation != group.generation {
            return fail(err::ILLEGAL_GENERATION);
        }
        if protocol_type.is_some_and(|t| Some(t) != group.protocol_type.as_deref())
            || protocol_name.is_some_and(|p| Some(p) != group.protocol.as_deref())
        {
            return fail(err::INCONSISTENT_GROUP_PROTOCOL);
        }
        // Kafka's pending-sync timeout: the member's rebalance timeout.
        let sync_wait = Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64).min(WAIT_MAX);
        let ok = |group: &Group, assignment: Bytes| SyncOutcome {
            error: err::NONE,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol.clone(),
            assignment,
        };
        match group.state {
            GroupState::Empty => fail(err::UNKNOWN_MEMBER_ID),
            GroupState::Dead => fail(err::COORDINATOR_NOT_AVAILABLE),
            GroupState::PreparingRebalance => fail(err::REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                let m = group.members.get_mut(member_id).expect("checked");
                m.last_heartbeat = Instant::now();
                let a = m.assignment.clone();
                Step::Done(ok(group, a))
            }
            GroupState::CompletingRebalance => {
                let is_leader = group.leader.as_deref() == Some(member_id);
                if is_leader {
                    if assignments.iter().any(|(_, a)| a.len() > self.cfg.member_metadata_bytes_max) {
                        let mut out = Vec::new();
                        self.prepare_rebalance(group, &mut out);
                        for (t, o) in out {
                            Self::post(g, Some(t), o);
                        }
                        return fail(err::MESSAGE_TOO_LARGE);
                    }
                    let mut map: HashMap<String, Bytes> = assignments.into_iter().collect();
                    let mut out = Vec::new();
                    let now = Instant::now();
                    let (pt, pn) = (group.protocol_type.clone(), group.protocol.clone());
                    for m in group.members.values_mut() {
                        m.assignment = map.remove(&m.id).unwrap_or_default();
                        m.last_heartbeat = now;
                        if let Some(t) = m.sync_ticket.take() {
                            out.push((
                                t,
                                Outcome::Sync(SyncOutcome {
                                    error: err::NONE,
                                    protocol_type: pt.clone(),
                                    protocol_name: pn.clone(),
                                    assignment: m.assignment.clone(),
                                }),
                            ));
                        }
                    }
                    group.state = GroupState::Stable;
                    group.unsaved.push(group.record());
                    tracing::info!(group = %group.id, generation = group.generation, "rebalance: stable");
                    let mine = group.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                    let o = ok(group, mine);
                    for (t, x) in out {
                        Self::post(g, Some(t), x);
                    }
                    Step::Done(o)
                } else {
                    let m = group.members.get_mut(member_id).expect("checked");
                    m.last_heartbeat = Instant::now();
                    let old = m.sync_ticket.replace(ticket);
                    Self::post(g, old, Outcome::Sync(SyncOutcome::error(err::REBALANCE_IN_PROGRESS)));
                    Step::Wait(ticket, Instant::now() + sync_wait)
                }
            }
        }
    }

    // ---------------------------------------------------------------- Heartbeat / Leave

    pub fn heartbeat(&self, group_id: &str, member_id: &str, instance_id: Option<&str>, generation: i32) -> i16 {
        let mut g = self.lock();
        let Some(group) = g.groups.get_mut(group_id) else { return err::UNKNOWN_MEMBER_ID };
        if group.fenced(member_id, instance_id) {
            return err::FENCED_INSTANCE_ID;
        }
        match group.state {
            GroupState::Dead => return err::COORDINATOR_NOT_AVAILABLE,
            GroupState::Empty => return err::UNKNOWN_MEMBER_ID,
            _ => {}
        }
        let state = group.state;
        let gen = group.generation;
        let Some(m) = group.members.get_mut(member_id) else { return err::UNKNOWN_MEMBER_ID };
        if generation != gen {
            return err::ILLEGAL_GENERATION;
        }
        m.last_heartbeat = Instant::now();
        match state {
            GroupState::PreparingRebalance => err::REBALANCE_IN_PROGRESS,
            _ => err::NONE,
        }
    }

    /// Remove members. `members` = (member id, instance id); returns each one's error code.
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)]) -> Vec<i16> {
        let mut g = self.lock();
        let mut out = Vec::new();
        let mut codes = Vec::with_capacity(members.len());
        match g.groups.get_mut(group_id) {
            None => codes.extend(members.iter().map(|_| err::UNKNOWN_MEMBER_ID)),
            Some(group) => {
                for (id, instance) in members {
                    let mut id = id.clone();
                    if let Some(inst) = instance {
                        match group.members.values().find(|m| m.instance_id.as_deref() == Some(inst.as_str())) {
                            Some(m) if id.is_empty() || m.id == id => id = m.id.clone(),
                            Some(_) => {
                                codes.push(err::FENCED_INSTANCE_ID);
                                continue;
                            }
                            None => {}
                        }
                    }
                    if group.pending.remove(&id).is_some() {
                        codes.push(err::NONE);
                        self.maybe_complete_join(group, Instant::now(), &mut out);
                    } else if group.members.contains_key(&id) {
                        tracing::info!(group = %group_id, member = %id, "member left");
                        self.remove_member(group, &id, &mut out);
                        codes.push(err::NONE);
                    } else {
                        codes.push(err::UNKNOWN_MEMBER_ID);
                    }
                }
            }
        }
        for (t, o) in out {
            Self::post(&mut g, Some(t), o);
        }
        Self::collect(&mut g, group_id);
        self.notify(&mut g);
        codes
    }

    /// Check an OffsetCommit against the group (Kafka's `validateOffsetCommit`); creates the
    /// group (Empty) for a standalone commit to an unknown group.
    pub fn validate_commit(&self, group_id: &str, member_id: &str, instance_id: Option<&str>, generation: i32) -> i16 {
        if group_id.is_empty() || group_id.len() > super::store::GROUP_ID_BYTES_MAX {
            return err::INVALID_GROUP_ID;
        }
        let mut g = self.lock();
        let managed = generation >= 0 || !member_id.is_empty() || instance_id.is_some();
        let Some(group) = g.groups.get_mut(group_id) else {
            if managed {
                return err::ILLEGAL_GENERATION;
            }
            g.groups.insert(group_id.to_string(), Group::new(group_id));
            return err::NONE;
        };
        if group.state == GroupState::Dead {
            return err::COORDINATOR_NOT_AVAILABLE;
        }
        if managed {
            if group.fenced(member_id, instance_id) {
                return err::FENCED_INSTANCE_ID;
            }
            let gen = group.generation;
            let state = group.state;
            let Some(m) = group.members.get_mut(member_id) else { return err::UNKNOWN_MEMBER_ID };
            if generation != gen {
                return err::ILLEGAL_GENERATION;
            }
            if state == GroupState::CompletingRebalance {
                return err::REBALANCE_IN_PROGRESS;
            }
            m.last_heartbeat = Instant::now();
            err::NONE
        } else if !group.members.is_empty() {
            // Only members may commit to a group that has members.
            err::UNKNOWN_MEMBER_ID
        } else {
            err::NONE
        }
    }

    /// Move a group's unsaved records to the queue [`StateMachine::take_records`] drains.
    fn collect(g: &mut Groups, group_id: &str) {
        if let Some(group) = g.groups.get_mut(group_id) {
            if !group.unsaved.is_empty() {
                let recs = std::mem::take(&mut group.unsaved);
                g.records.extend(recs.into_iter().map(|r| (group_id.to_string(), r)));
            }
        }
    }

    /// The group records queued since the last call, oldest first.
    pub fn take_records(&self) -> Vec<(String, GroupRecord)> {
        std::mem::take(&mut self.lock().records)
    }

    /// Restore a group from its last persisted record: Stable with its members (each with a
    /// fresh session deadline), or Empty with its generation when the record has no members.
    pub fn restore_group(&self, group_id: &str, r: GroupRecord) {
        let now = Instant::now();
        let mut g = self.lock();
        let group = g.groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id));
        group.generation = r.generation;
        group.protocol_type = (!r.protocol_type.is_empty()).then_some(r.protocol_type.clone());
        group.members.clear();
        if r.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol = None;
            group.leader = None;
            return;
        }
        let protocol = r.protocol.clone().unwrap_or_default();
        for m in r.members {
            let member = Member {
                id: m.member_id.clone(),
                instance_id: m.instance_id,
                client_id: m.client_id,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocol_type: r.protocol_type.clone(),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                join_ticket: None,
                sync_ticket: None,
                // A fresh session: a member that never comes back expires after its timeout.
                last_heartbeat: now,
            };
            group.members.insert(m.member_id, member);
        }
        group.protocol = r.protocol;
        group.leader = r.leader.filter(|l| group.members.contains_key(l)).or_else(|| group.members.keys().next().cloned());
        group.state = GroupState::Stable;
    }

    /// Note a group that exists only through restored offsets.
    pub fn ensure_group(&self, group_id: &str) {
        self.lock().groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id));
    }

    /// One reaper pass: expire sessions and pending members, complete overdue rebalances.
    pub fn tick(&self) {
        let mut g = self.lock();
        let now = Instant::now();
        let mut out = Vec::new();
        for group in g.groups.values_mut() {
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    m.join_ticket.is_none()
                        && m.sync_ticket.is_none()
                        && now.saturating_duration_since(m.last_heartbeat)
                            >= Duration::from_millis(m.session_timeout_ms.max(0) as u64)
                })
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %group.id, member = %id, "session timeout; removing member");
                self.remove_member(group, &id, &mut out);
            }
            let before = group.pending.len();
            group.pending.retain(|_, deadline| *deadline > now);
            if group.pending.len() != before {
                self.maybe_complete_join(group, now, &mut out);
            }
            self.maybe_complete_join(group, now, &mut out);
        }
        let ids: Vec<String> = g.groups.iter().filter(|(_, grp)| !grp.unsaved.is_empty()).map(|(id, _)| id.clone()).collect();
        for id in ids {
            Self::collect(&mut g, &id);
        }
        let changed = !out.is_empty();
        for (t, o) in out {
            Self::post(&mut g, Some(t), o);
        }
        if changed {
            self.notify(&mut g);
        }
        self.expire_waiters(&mut g);
    }
}

// ---------------------------------------------------------------- DeleteGroups / OffsetDelete

/// What [`StateMachine::offset_delete_check`] found for an OffsetDelete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetDeleteCheck {
    /// A group-level error (GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, INVALID_GROUP_ID).
    Error(i16),
    /// Empty group: every requested partition may be deleted.
    All,
    /// Consumer group with members: offsets of these topics are in use
    /// (GROUP_SUBSCRIBED_TO_TOPIC); `None` = subscriptions unknown, treat every topic as used.
    ExceptTopics(Option<Vec<String>>),
}

/// Topics of a consumer-protocol subscription (`i16 version | i32 n | n × str16 topic | ...`,
/// the same prefix in every version); `None` if it does not parse.
fn subscription_topics(meta: &[u8]) -> Option<Vec<String>> {
    let mut at = 2usize;
    let n = i32::from_be_bytes(meta.get(at..at + 4)?.try_into().ok()?);
    at += 4;
    if n < 0 {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let len = i16::from_be_bytes(meta.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        let len = usize::try_from(len).ok()?;
        out.push(std::str::from_utf8(meta.get(at..at + len)?).ok()?.to_string());
        at += len;
    }
    Some(out)
}

impl StateMachine {
    /// DeleteGroups for one group (Kafka's `GroupCoordinator.handleDeleteGroups`): an Empty group
    /// is removed (with any group record not yet persisted) and NONE returned — the caller then
    /// writes its tombstones; a group with members or rebalancing gets NON_EMPTY_GROUP; an
    /// unknown or Dead group GROUP_ID_NOT_FOUND.
    pub fn remove_empty_group(&self, group_id: &str) -> i16 {
        if group_id.is_empty() {
            return err::INVALID_GROUP_ID;
        }
        let mut g = self.lock();
        let code = match g.groups.get(group_id) {
            None => err::GROUP_ID_NOT_FOUND,
            Some(grp) if grp.state == GroupState::Dead => err::GROUP_ID_NOT_FOUND,
            Some(grp) if grp.state != GroupState::Empty || !grp.members.is_empty() => err::NON_EMPTY_GROUP,
            Some(_) => err::NONE,
        };
        if code == err::NONE {
            g.groups.remove(group_id);
            // A queued record persisted after the tombstone would bring the group back.
            g.records.retain(|(id, _)| id != group_id);
        }
        code
    }

    /// OffsetDelete's group check (Kafka's `GroupCoordinator.handleDeleteOffsets`).
    pub fn offset_delete_check(&self, group_id: &str) -> OffsetDeleteCheck {
        if group_id.is_empty() {
            return OffsetDeleteCheck::Error(err::INVALID_GROUP_ID);
        }
        let g = self.lock();
        let Some(grp) = g.groups.get(group_id) else { return OffsetDeleteCheck::Error(err::GROUP_ID_NOT_FOUND) };
        match grp.state {
            GroupState::Dead => OffsetDeleteCheck::Error(err::GROUP_ID_NOT_FOUND),
            GroupState::Empty if grp.members.is_empty() => OffsetDeleteCheck::All,
            _ if grp.protocol_type.as_deref() != Some("consumer") => OffsetDeleteCheck::Error(err::NON_EMPTY_GROUP),
            _ => {
                // The union of the members' subscriptions for the selected protocol; unknown
                // while no protocol is selected (a rebalance) or if one does not parse.
                let Some(protocol) = grp.protocol.as_deref() else { return OffsetDeleteCheck::ExceptTopics(None) };
                let mut topics = Vec::new();
                for m in grp.members.values() {
                    match subscription_topics(&m.metadata_for(protocol)) {
                        Some(ts) => topics.extend(ts),
                        None => return OffsetDeleteCheck::ExceptTopics(None),
                    }
                }
                topics.sort();
                topics.dedup();
                OffsetDeleteCheck::ExceptTopics(Some(topics))
            }
        }
    }
}
