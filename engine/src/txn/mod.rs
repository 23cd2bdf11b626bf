//! The transaction coordinator of this single-node cluster (issue 20): Kafka's transactions
//! (KIP-98, with KIP-447's TxnOffsetCommit), as clients use them with transaction version 1
//! (AddPartitionsToTxn before the first produce to a partition; no KIP-890 part 2 epoch bump
//! per transaction).
//!
//! * State per transactional id ([`TxnMeta`]): producer id and epoch, timeout, state (Kafka's
//!   Empty / Ongoing / PrepareCommit / PrepareAbort / CompleteCommit / CompleteAbort), the
//!   partitions and consumer groups of the open transaction, and the group offsets
//!   TxnOffsetCommit sent (pending: invisible to OffsetFetch until the commit).
//! * Durable: every state change is a record of the internal topic `__transaction_state`
//!   ([`store`]), appended and fsynced (any durability mode) before the request is answered;
//!   at start the latest record of each id is its state, and a transaction found in
//!   PrepareCommit / PrepareAbort is completed (its markers written again: a partition that
//!   already has one just ignores the second, its open transaction being closed).
//! * EndTxn: PrepareCommit/PrepareAbort durable first (the decision), then a control batch
//!   (COMMIT/ABORT marker, `log::txn_index::marker_batch`) appended to every partition of the
//!   transaction and made durable, then (commit) the pending offsets committed to the group
//!   coordinator (a normal, durable `__consumer_offsets` commit), then CompleteCommit /
//!   CompleteAbort durable, then the answer. A failure on the way leaves the transaction in
//!   its Prepare state (COORDINATOR_NOT_AVAILABLE, retried by the client and by the reaper).
//! * Fencing: InitProducerId bumps the epoch (a new producer id when the epoch would
//!   overflow), aborting a transaction the previous producer left open first; requests with
//!   an older epoch get PRODUCER_FENCED (INVALID_PRODUCER_EPOCH for old versions and Produce).
//! * Produce of transactional batches is checked here ([`TxnCoordinator::with_produce`]):
//!   producer id and epoch current, transaction Ongoing, partition added. The check and the
//!   append run under the id's produce gate, a copy of those fields updated after each durable
//!   state change and closed (PrepareCommit / PrepareAbort) before any marker is written, so
//!   no batch lands after its transaction's marker (a "hanging" transaction would hold the
//!   partition's last stable offset forever). Produce runs on a network thread: it never waits
//!   for the id's own lock, which is held across fsyncs.
//! * Timeouts: a `txn-reaper` thread aborts an Ongoing transaction older than its
//!   `transaction.timeout.ms` (bumping the epoch, so the old producer is fenced) and retries
//!   unfinished completions.
//! * Expiration: an id without a transaction (Empty / CompleteCommit / CompleteAbort) not used
//!   for `id_expiration_ms` (Kafka's transactional.id.expiration.ms, 7 days) is forgotten: a
//!   tombstone in `__transaction_state`, durable, then out of the maps; its producer gets
//!   INVALID_PRODUCER_ID_MAPPING and a new InitProducerId starts it over.
//!
//! Locking: the map locks only to find or insert an id's entry or gate; each entry's own mutex
//! is held for a whole operation, including its appends and fsyncs; a gate's only to copy a
//! state into it or for a Produce's check and append (lock order: entry → gate → partition).

mod handle;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use handle::{route, TXN_APIS};

use crate::groups::store::{CommitEntry, Committed};
use crate::groups::GroupCoordinator;
use crate::log::txn_index::{marker_batch, Marker};
use crate::log::{now_ms, AppendError, Durability, LogManager, Partition};

/// The internal topic holding the transaction state (hidden from clients).
pub const TXN_STATE_TOPIC: &str = "__transaction_state";

/// Kafka error codes used here.
pub mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const INVALID_REQUEST: i16 = 42;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
    pub const PRODUCER_FENCED: i16 = 90;
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
}

/// Kafka's transaction states (the names DescribeTransactions / ListTransactions answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
}

impl TxnState {
    pub fn from_u8(v: u8) -> Option<TxnState> {
        Some(match v {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }
    pub const ALL: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];
}

/// A group offset sent with TxnOffsetCommit, applied when the transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// The state of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    /// The epoch before the coordinator bumped it to abort (timeout), or -1: the producer may
    /// still re-initialise with it (KIP-360).
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// When the open transaction started (its first AddPartitions/AddOffsets), ms.
    pub start_ms: i64,
    pub update_ms: i64,
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups of the transaction (AddOffsetsToTxn) and their pending offsets.
    pub groups: BTreeMap<String, BTreeMap<(String, i32), PendingOffset>>,
}

impl TxnMeta {
    pub fn new(producer_id: i64, epoch: i16, timeout_ms: i32) -> TxnMeta {
        TxnMeta {
            producer_id,
            epoch,
            last_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            start_ms: -1,
            update_ms: now_ms(),
            partitions: BTreeSet::new(),
            groups: BTreeMap::new(),
        }
    }
}

/// Limits and timing of the coordinator.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// Kafka's transaction.max.timeout.ms: a larger `transaction.timeout.ms` is refused
    /// (INVALID_TRANSACTION_TIMEOUT).
    pub max_timeout_ms: i32,
    /// How often the reaper looks for timed-out transactions.
    pub tick_ms: u64,
    /// Transactional ids kept at most (InitProducerId for a new one beyond: refused).
    pub ids_max: usize,
    /// Partitions (and pending group offsets) per transaction at most.
    pub partitions_per_txn_max: usize,
    /// Offset metadata bytes at most (as OffsetCommit).
    pub offset_metadata_bytes_max: usize,
    /// How often `__transaction_state` is snapshotted when it has sealed segments (below).
    pub snapshot_interval_ms: u64,
    /// Kafka's transactional.id.expiration.ms: an id without a transaction unused this long is
    /// forgotten (so `ids_max` counts live ids only).
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: 900_000,
            tick_ms: 1000,
            ids_max: 100_000,
            partitions_per_txn_max: 10_000,
            offset_metadata_bytes_max: 4096,
            snapshot_interval_ms: 24 * 3600 * 1000,
            id_expiration_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

type Entry = Arc<Mutex<TxnMeta>>;

/// What a transactional Produce checks (see the module notes): the id's producer id, epoch and,
/// while Ongoing, its partitions, as of its last durable state.
#[derive(Debug)]
struct Gate {
    producer_id: i64,
    epoch: i16,
    ongoing: bool,
    partitions: BTreeSet<(String, i32)>,
}

/// The transaction coordinator.
pub struct TxnCoordinator {
    logs: Arc<LogManager>,
    groups: Arc<GroupCoordinator>,
    log: Arc<Partition>,
    cfg: TxnConfig,
    txns: Mutex<HashMap<String, Entry>>,
    gates: Mutex<HashMap<String, Arc<Mutex<Gate>>>>,
    stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Durable in every mode (`wait_durable` returns at once outside group mode).
fn make_durable(p: &Partition, next: u64) -> Result<(), AppendError> {
    if p.config().durability == Durability::Group {
        p.wait_durable(next)
    } else {
        p.flush()
    }
}

impl TxnCoordinator {
    pub fn new(logs: Arc<LogManager>, groups: Arc<GroupCoordinator>) -> io::Result<Arc<TxnCoordinator>> {
        Self::with_config(logs, groups, TxnConfig::default())
    }

    /// Open `__transaction_state`, restore every transactional id, complete the transactions
    /// a crash left in PrepareCommit / PrepareAbort, and start the reaper.
    pub fn with_config(logs: Arc<LogManager>, groups: Arc<GroupCoordinator>, cfg: TxnConfig) -> io::Result<Arc<TxnCoordinator>> {
        let log = crate::groups::store::internal_partition(&logs, TXN_STATE_TOPIC)?;
        let restored = store::restore(&log)?;
        let c = Arc::new(TxnCoordinator { logs, groups, log, cfg, txns: Mutex::new(HashMap::new()), gates: Mutex::new(HashMap::new()), stop: Arc::new(AtomicBool::new(false)) });
        let mut open = 0usize;
        let mut completed = 0usize;
        for (id, mut m) in restored {
            if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                tracing::info!(transactional_id = %id, state = m.state.name(), "completing a transaction interrupted by the restart");
                match c.complete(&id, &mut m) {
                    Ok(()) => completed += 1,
                    Err(code) => tracing::error!(transactional_id = %id, code, "cannot complete the transaction yet: retried by the reaper"),
                }
            }
            if m.state == TxnState::Ongoing {
                open += 1;
            }
            c.set_gate(&id, &m);
            lock(&c.txns).insert(id, Arc::new(Mutex::new(m)));
        }
        tracing::info!(ids = lock(&c.txns).len(), open, completed, "transaction coordinator restored");
        c.maybe_snapshot();
        let weak = Arc::downgrade(&c);
        let stop = c.stop.clone();
        let tick = Duration::from_millis(c.cfg.tick_ms.max(1));
        let snapshot_every = Duration::from_millis(c.cfg.snapshot_interval_ms.max(1));
        std::thread::Builder::new().name("txn-reaper".into()).spawn(move || {
            let mut last_snapshot = std::time::Instant::now();
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(tick);
                let Some(c) = weak.upgrade() else { break };
                c.tick();
                if last_snapshot.elapsed() >= snapshot_every {
                    c.maybe_snapshot();
                    last_snapshot = std::time::Instant::now();
                }
            }
        })?;
        Ok(c)
    }

    pub fn config(&self) -> &TxnConfig {
        &self.cfg
    }

    /// [`TxnCoordinator::snapshot`] when the log has sealed segments (which retention may
    /// then delete): `__transaction_state` is not compacted (`__consumer_offsets` is).
    fn maybe_snapshot(&self) {
        if self.log.segment_count() > 1 {
            if let Err(e) = self.snapshot() {
                tracing::error!("snapshot of the transaction state failed: {e}");
            }
        }
    }

    /// Rewrite the current state of every transactional id at the end of
    /// `__transaction_state` (durably), then let retention delete what lies wholly below where
    /// the snapshot began. Each record is appended under its id's lock, so a state change of
    /// that id is appended after it (the latest record stays the state). Returns the records.
    pub fn snapshot(&self) -> Result<usize, AppendError> {
        let floor = self.log.log_end_offset();
        let entries: Vec<(String, Entry)> = lock(&self.txns).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut n = 0;
        for (id, e) in entries {
            let m = lock(&e);
            if m.producer_id >= 0 {
                store::append(&self.log, &id, &m)?;
                n += 1;
            }
        }
        self.log.flush()?;
        self.log.set_retention_floor(floor);
        tracing::info!(records = n, "transaction state snapshot written");
        Ok(n)
    }

    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn entry(&self, id: &str) -> Option<Entry> {
        lock(&self.txns).get(id).cloned()
    }

    /// Append `m` as the state of `id`, make it durable, and copy it into the id's produce gate
    /// (every state change persists before anything else happens, markers included).
    fn persist(&self, id: &str, m: &TxnMeta) -> Result<(), i16> {
        let r = store::append(&self.log, id, m).and_then(|info| make_durable(&self.log, info.next_offset));
        r.map_err(|e| {
            tracing::error!(transactional_id = %id, "cannot persist the transaction state: {e}");
            code::COORDINATOR_NOT_AVAILABLE
        })?;
        self.set_gate(id, m);
        Ok(())
    }

    /// Copy `m` into the produce gate of `id` (waits for a Produce appending under it).
    fn set_gate(&self, id: &str, m: &TxnMeta) {
        let gate = lock(&self.gates)
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Gate { producer_id: -1, epoch: -1, ongoing: false, partitions: BTreeSet::new() })))
            .clone();
        let mut g = lock(&gate);
        g.producer_id = m.producer_id;
        g.epoch = m.epoch;
        g.ongoing = m.state == TxnState::Ongoing;
        if !g.ongoing {
            g.partitions.clear();
        } else if g.partitions != m.partitions {
            g.partitions.clone_from(&m.partitions);
        }
    }

    /// Write the markers of a transaction in PrepareCommit / PrepareAbort, commit its group
    /// offsets (commit), and persist CompleteCommit / CompleteAbort.
    fn complete(&self, id: &str, m: &mut TxnMeta) -> Result<(), i16> {
        let commit = match m.state {
            TxnState::PrepareCommit => true,
            TxnState::PrepareAbort => false,
            _ => return Ok(()),
        };
        let marker = if commit { Marker::Commit } else { Marker::Abort };
        let now = now_ms();
        let mut waits = Vec::with_capacity(m.partitions.len());
        for (topic, p) in &m.partitions {
            let Some(part) = self.logs.partition(topic, *p) else {
                tracing::warn!(transactional_id = %id, topic, partition = p, "partition of the transaction is gone: no marker");
                continue;
            };
            let mut batch = marker_batch(m.producer_id, m.epoch, marker, 0, now);
            match part.append(&mut batch) {
                Ok(info) => waits.push((part, info.next_offset)),
                Err(e) => {
                    tracing::error!(transactional_id = %id, topic, partition = p, "cannot write the transaction marker: {e}");
                    return Err(code::COORDINATOR_NOT_AVAILABLE);
                }
            }
        }
        for (part, next) in waits {
            if let Err(e) = make_durable(&part, next) {
                tracing::error!(transactional_id = %id, topic = %part.topic, partition = part.index, "transaction marker not durable: {e}");
                return Err(code::COORDINATOR_NOT_AVAILABLE);
            }
        }
        if commit {
            for (group, offs) in &m.groups {
                if offs.is_empty() {
                    continue;
                }
                let entries: Vec<CommitEntry> = offs
                    .iter()
                    .map(|((t, p), o)| CommitEntry {
                        topic: t.clone(),
                        partition: *p,
                        committed: Committed {
                            offset: o.offset,
                            leader_epoch: o.leader_epoch,
                            metadata: o.metadata.clone(),
                            commit_timestamp_ms: now,
                        },
                    })
                    .collect();
                let codes = self.groups.commit_offsets(group, entries);
                if codes.contains(&code::COORDINATOR_NOT_AVAILABLE) {
                    tracing::error!(transactional_id = %id, group, "cannot commit the transaction's offsets");
                    return Err(code::COORDINATOR_NOT_AVAILABLE);
                }
            }
        }
        m.state = if commit { TxnState::CompleteCommit } else { TxnState::CompleteAbort };
        m.partitions.clear();
        m.groups.clear();
        m.start_ms = -1;
        m.update_ms = now_ms();
        self.persist(id, m)
    }

    /// Bump the epoch to abort, as Kafka on a timeout (the old producer is fenced; it may
    /// re-initialise with its epoch, `last_epoch`).
    fn abort_bumped(&self, id: &str, m: &mut TxnMeta) -> Result<(), i16> {
        if m.epoch < i16::MAX - 1 {
            m.last_epoch = m.epoch;
            m.epoch += 1;
        }
        m.state = TxnState::PrepareAbort;
        m.update_ms = now_ms();
        self.persist(id, m)?;
        self.complete(id, m)
    }

    /// InitProducerId with a transactional id: (producer id, epoch) or an error code
    /// (PRODUCER_FENCED for a stale producer id/epoch).
    pub fn init_producer_id(&self, id: &str, timeout_ms: i32, pid: i64, epoch: i16) -> Result<(i64, i16), i16> {
        // The state records hold ids as 16-bit-length strings (`store`).
        if id.is_empty() || id.len() > store::STR_BYTES_MAX {
            return Err(code::INVALID_REQUEST);
        }
        if timeout_ms <= 0 || timeout_ms > self.cfg.max_timeout_ms {
            return Err(code::INVALID_TRANSACTION_TIMEOUT);
        }
        let entry = {
            let mut map = lock(&self.txns);
            match map.get(id) {
                Some(e) => e.clone(),
                None => {
                    if map.len() >= self.cfg.ids_max {
                        tracing::warn!(limit = self.cfg.ids_max, "transactional id refused: too many transactional ids");
                        return Err(code::COORDINATOR_NOT_AVAILABLE);
                    }
                    let e = Arc::new(Mutex::new(TxnMeta::new(-1, -1, timeout_ms)));
                    map.insert(id.to_string(), e.clone());
                    e
                }
            }
        };
        let mut m = lock(&entry);
        if !lock(&self.txns).get(id).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            // The reaper expired the id between the lookup and the lock (it was unused for
            // `id_expiration_ms`): retriable, the next attempt starts it over.
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        }
        if m.producer_id < 0 {
            let new_pid = self.groups.allocate_producer_id().map_err(|e| {
                tracing::error!("cannot allocate a producer id: {e}");
                code::COORDINATOR_NOT_AVAILABLE
            })?;
            *m = TxnMeta::new(new_pid, 0, timeout_ms);
            self.persist(id, &m)?;
            return Ok((m.producer_id, m.epoch));
        }
        if pid >= 0 {
            let known = pid == m.producer_id && (epoch == m.epoch || (m.last_epoch >= 0 && epoch == m.last_epoch));
            if !known {
                return Err(code::PRODUCER_FENCED);
            }
        }
        match m.state {
            TxnState::Ongoing => self.abort_bumped(id, &mut m)?,
            TxnState::PrepareCommit | TxnState::PrepareAbort => self.complete(id, &mut m)?,
            _ => {}
        }
        if m.epoch >= i16::MAX - 1 {
            m.producer_id = self.groups.allocate_producer_id().map_err(|_| code::COORDINATOR_NOT_AVAILABLE)?;
            m.epoch = 0;
        } else {
            m.epoch += 1;
        }
        m.last_epoch = -1;
        m.timeout_ms = timeout_ms;
        m.state = TxnState::Empty;
        m.partitions.clear();
        m.groups.clear();
        m.start_ms = -1;
        m.update_ms = now_ms();
        self.persist(id, &m)?;
        Ok((m.producer_id, m.epoch))
    }

    /// The checks every request of a transaction makes: Err(code) to answer.
    fn check_producer(m: &TxnMeta, pid: i64, epoch: i16) -> Result<(), i16> {
        if m.producer_id < 0 || m.producer_id != pid {
            return Err(code::INVALID_PRODUCER_ID_MAPPING);
        }
        if m.epoch != epoch {
            return Err(code::PRODUCER_FENCED);
        }
        Ok(())
    }

    /// Enter (or stay in) Ongoing.
    fn begin(m: &mut TxnMeta) -> Result<bool, i16> {
        match m.state {
            TxnState::Ongoing => Ok(false),
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(code::CONCURRENT_TRANSACTIONS),
            _ => {
                m.state = TxnState::Ongoing;
                m.start_ms = now_ms();
                m.partitions.clear();
                m.groups.clear();
                Ok(true)
            }
        }
    }

    /// AddPartitionsToTxn: per-partition codes (all NONE, or the failing ones with their code
    /// and the others OPERATION_NOT_ATTEMPTED), or one code for all.
    pub fn add_partitions(&self, id: &str, pid: i64, epoch: i16, parts: &[(String, i32)]) -> Result<Vec<i16>, i16> {
        let entry = self.entry(id).ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        let mut m = lock(&entry);
        Self::check_producer(&m, pid, epoch)?;
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(code::CONCURRENT_TRANSACTIONS);
        }
        let codes: Vec<i16> = parts
            .iter()
            .map(|(t, p)| {
                if t.starts_with("__") {
                    code::TOPIC_AUTHORIZATION_FAILED
                } else if self.logs.partition(t, *p).is_none() {
                    code::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    code::NONE
                }
            })
            .collect();
        if codes.iter().any(|&c| c != code::NONE) {
            return Ok(codes.into_iter().map(|c| if c == code::NONE { code::OPERATION_NOT_ATTEMPTED } else { c }).collect());
        }
        let new: Vec<&(String, i32)> = parts.iter().filter(|k| !m.partitions.contains(*k)).collect();
        let began = m.state != TxnState::Ongoing;
        if !began && new.is_empty() {
            return Ok(codes);
        }
        if m.partitions.len() + new.len() > self.cfg.partitions_per_txn_max {
            tracing::warn!(transactional_id = %id, limit = self.cfg.partitions_per_txn_max, "AddPartitionsToTxn refused: too many partitions");
            return Err(code::INVALID_REQUEST);
        }
        let mut next = m.clone();
        Self::begin(&mut next)?;
        next.partitions.extend(new.into_iter().cloned());
        next.update_ms = now_ms();
        self.persist(id, &next)?;
        *m = next;
        Ok(codes)
    }

    /// AddOffsetsToTxn: the group joins the transaction (its TxnOffsetCommit offsets are
    /// committed with it).
    pub fn add_offsets(&self, id: &str, pid: i64, epoch: i16, group: &str) -> i16 {
        let Some(entry) = self.entry(id) else { return code::INVALID_PRODUCER_ID_MAPPING };
        let mut m = lock(&entry);
        if let Err(c) = Self::check_producer(&m, pid, epoch) {
            return c;
        }
        if group.is_empty() || group.len() > store::STR_BYTES_MAX {
            return code::INVALID_REQUEST;
        }
        if m.state == TxnState::Ongoing && m.groups.contains_key(group) {
            return code::NONE;
        }
        let mut next = m.clone();
        if let Err(c) = Self::begin(&mut next) {
            return c;
        }
        next.groups.entry(group.to_string()).or_default();
        next.update_ms = now_ms();
        if let Err(c) = self.persist(id, &next) {
            return c;
        }
        *m = next;
        code::NONE
    }

    /// TxnOffsetCommit: the offsets wait in the transaction until it commits. Returns one code
    /// for the request (Err) or per offset.
    #[allow(clippy::too_many_arguments)]
    pub fn txn_offset_commit(
        &self,
        id: &str,
        group: &str,
        pid: i64,
        epoch: i16,
        member: (&str, Option<&str>, i32),
        offsets: Vec<(String, i32, PendingOffset)>,
    ) -> Result<Vec<i16>, i16> {
        let entry = self.entry(id).ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        let mut m = lock(&entry);
        Self::check_producer(&m, pid, epoch)?;
        if m.state != TxnState::Ongoing || !m.groups.contains_key(group) {
            return Err(code::INVALID_TXN_STATE);
        }
        let (member_id, instance, generation) = member;
        let g = self.groups.validate_offset_commit(group, member_id, instance, generation);
        if g != code::NONE {
            return Err(g);
        }
        let codes: Vec<i16> = offsets
            .iter()
            .map(|(t, p, o)| {
                if o.metadata.as_ref().is_some_and(|s| s.len() > self.cfg.offset_metadata_bytes_max) {
                    code::OFFSET_METADATA_TOO_LARGE
                } else if self.logs.partition(t, *p).is_none() {
                    code::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    code::NONE
                }
            })
            .collect();
        let mut next = m.clone();
        let pending = next.groups.entry(group.to_string()).or_default();
        for ((t, p, o), c) in offsets.into_iter().zip(&codes) {
            if *c == code::NONE {
                pending.insert((t, p), o);
            }
        }
        if pending.len() > self.cfg.partitions_per_txn_max {
            return Err(code::INVALID_REQUEST);
        }
        next.update_ms = now_ms();
        self.persist(id, &next)?;
        *m = next;
        Ok(codes)
    }

    /// EndTxn: commit or abort the open transaction (markers durable before the answer).
    pub fn end_txn(&self, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
        let Some(entry) = self.entry(id) else { return code::INVALID_PRODUCER_ID_MAPPING };
        let mut m = lock(&entry);
        if let Err(c) = Self::check_producer(&m, pid, epoch) {
            return c;
        }
        let r = match (m.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = m.clone();
                next.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
                next.update_ms = now_ms();
                match self.persist(id, &next) {
                    Ok(()) => {
                        *m = next;
                        self.complete(id, &mut m)
                    }
                    Err(c) => Err(c),
                }
            }
            // A retry of a request whose answer was lost, or finishing after a failure.
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => self.complete(id, &mut m),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => Err(code::CONCURRENT_TRANSACTIONS),
            _ => Err(code::INVALID_TXN_STATE),
        };
        r.err().unwrap_or(code::NONE)
    }

    /// Run `append` for a transactional Produce to `topic`-`partition` if the transaction
    /// allows it; the id's produce gate is held meanwhile, never its lock (see the module notes).
    pub fn with_produce<R>(&self, id: &str, pid: i64, epoch: i16, topic: &str, partition: i32, append: impl FnOnce() -> R) -> Result<R, i16> {
        let gate = lock(&self.gates).get(id).cloned().ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        let g = lock(&gate);
        if g.producer_id < 0 || g.producer_id != pid {
            return Err(code::INVALID_PRODUCER_ID_MAPPING);
        }
        if g.epoch != epoch {
            return Err(code::INVALID_PRODUCER_EPOCH);
        }
        if !g.ongoing || !g.partitions.contains(&(topic.to_string(), partition)) {
            return Err(code::INVALID_TXN_STATE);
        }
        Ok(append())
    }

    /// The state of one transactional id (DescribeTransactions).
    pub fn describe(&self, id: &str) -> Option<TxnMeta> {
        let e = self.entry(id)?;
        let m = lock(&e).clone();
        (m.producer_id >= 0).then_some(m)
    }

    /// Every transactional id and its state (ListTransactions).
    pub fn list(&self) -> Vec<(String, TxnMeta)> {
        let entries: Vec<(String, Entry)> = lock(&self.txns).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        entries
            .into_iter()
            .map(|(k, e)| (k, lock(&e).clone()))
            .filter(|(_, m)| m.producer_id >= 0)
            .collect()
    }

    /// Abort timed-out transactions; finish completions that failed. Entries busy with a
    /// request are looked at on the next tick.
    pub fn tick(&self) {
        let entries: Vec<(String, Entry)> = lock(&self.txns).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let now = now_ms();
        for (id, e) in entries {
            let Ok(mut m) = e.try_lock() else { continue };
            match m.state {
                TxnState::Ongoing if m.start_ms >= 0 && now - m.start_ms > m.timeout_ms as i64 => {
                    tracing::info!(transactional_id = %id, timeout_ms = m.timeout_ms, "transaction timed out: aborting");
                    if let Err(c) = self.abort_bumped(&id, &mut m) {
                        tracing::warn!(transactional_id = %id, code = c, "abort of a timed-out transaction failed: retried");
                    }
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    let _ = self.complete(&id, &mut m);
                }
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    if m.producer_id >= 0 && now - m.update_ms > self.cfg.id_expiration_ms =>
                {
                    self.expire(&id, &e, &mut m);
                }
                _ => {}
            }
        }
    }

    /// Forget an id unused for `id_expiration_ms` (its lock held by the caller): a durable
    /// tombstone, then out of both maps (lock order: entry → txns map → gates map).
    fn expire(&self, id: &str, entry: &Entry, m: &mut TxnMeta) {
        let r = store::append_tombstone(&self.log, id).and_then(|info| make_durable(&self.log, info.next_offset));
        if let Err(e) = r {
            tracing::warn!(transactional_id = %id, "cannot expire the transactional id: {e}");
            return;
        }
        tracing::info!(transactional_id = %id, producer_id = m.producer_id, "transactional id expired");
        // A request holding a clone of the entry finds it uninitialised (and InitProducerId
        // looks the id up again).
        *m = TxnMeta::new(-1, -1, m.timeout_ms);
        let mut map = lock(&self.txns);
        if map.get(id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(id);
            lock(&self.gates).remove(id);
        }
    }
}

impl Drop for TxnCoordinator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
