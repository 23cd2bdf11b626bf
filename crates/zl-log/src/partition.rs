//! One topic-partition — Kafka's `Partition`/`UnifiedLog`: the composition of the parts below,
//! and the public API (`append`, `read*`, `on_durable`, `flush`, retention, DeleteRecords, ...).
//!
//! The parts, one Kafka idea each: `loader.rs` (`LogLoader`: recovery at open, whose
//! result [`Partition::open`] assembles), `local_log.rs` (`LocalLog`: the segments, roll,
//! read planning, which segments retention and DeleteRecords remove), `producer_state.rs`
//! (`ProducerStateManager`: idempotent producers' sequences), `group_commit.rs` (the one
//! sync slot, the leader's write + fdatasync, durable waiters, poison). This file keeps offset
//! assignment, the read loop, the log start checkpoint, the high watermark and its waiters.
//!
//! Locking: `state` (segments, producer state, staged bytes) is held while an append assigns
//! offsets and writes or stages; `sync` (durable offset, in-flight flags, poison) is held only
//! briefly. Lock order is start_checkpoint → state → sync; the group-commit leader never holds
//! either lock while it writes and fdatasyncs. A read takes the state lock only to check its
//! offset and collect the segments' files and servable limits: it reads batch headers without
//! it. Retention and DeleteRecords (which hold `start_checkpoint`, the only lock under which
//! segments leave the list) choose segments under the state lock and unlink them, and fsync the
//! directory, without it.
//!
//! Write path in `group` mode: an append copies its (patched) batches into the partition's
//! staging buffer under the state lock and issues no system call. The group-commit leader takes
//! the staged bytes and submits write + fdatasync + recovery-point note as one io_uring chain,
//! so one submission carries every append the sync covers. Nothing staged is servable (the high
//! watermark only moves after the sync) or acknowledged. Appends of at least
//! `LogConfig::appender_write_bytes` are written by their appender *outside* the state lock,
//! concurrently with each other (O_DIRECT for the aligned middle with `LogConfig::direct_io`,
//! else the page cache plus a writeback kick): the offsets and position are assigned and the
//! write registered in `SyncState::unlocked` under the lock; a sync waits for the writes
//! registered before it took its snapshot, and a roll or close waits for them all. Staged bytes
//! beyond [`STAGING_BYTES_MAX`] and those pending at a roll or close are written under the
//! lock. A write never overlaps a leader's write in flight (the leader's zero-fill must land
//! first).
//! Before it stages, an append reserves the file space its bytes will occupy
//! (`IoFile::reserve`: fallocate, in [`RESERVE_BYTES`] steps), so a full disk fails that append
//! with ENOSPC and nothing else (the partition stays usable). A staged write that still fails
//! (EIO) poisons the partition: its offsets were already handed out.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::group_commit::{DurableWaiters, SyncState, UnlockedWrite};
use super::loader::{self, Recovered};
use super::local_log::LocalLog;
use super::producer_state::{is_idempotent, Checked, ProducerStateManager};
use super::segment::{self, Segment};
use super::txn_index::{self, AbortedTxn, TxnIndex};
use super::{now_ms, AppendError, DeleteRecordsError, Durability, FetchError, LogConfig, Notifier, RecoveryError};
use zl_io::{Io, IoFile};
use zl_record as record;

pub use super::group_commit::{DurableCallback, RESERVE_BYTES, STAGING_BYTES_MAX};

pub(crate) const RECOVERY_POINT: &str = "recovery-point";

/// `never` / `interval` modes: once this many bytes of the active segment were written since
/// the last request, the next writeback is requested (`sync_file_range(WRITE)`, on the sync
/// pool, never on the appending thread). Without it a segment's bytes stay dirty in the page
/// cache until its roll, whose fdatasync (under the state lock, the appender waiting) then
/// wrote up to a whole segment: 128 MB per partition, several partitions rolling together,
/// stalled every append for 0.3-2.5 s every few seconds at ~150 MB/s (the versus runs of
/// 2026-12-07, results/versus/20261207T182702Z). Kafka flushes a rolled segment in the
/// background; here the roll still syncs (a sealed segment is durable, see `roll`) but finds
/// at most about this much left to write.
pub(crate) const WRITE_BEHIND_BYTES: u64 = 4 << 20;
pub(crate) const RP_MAGIC: u32 = 0x5250_0001;
/// The log start offset checkpoint (DeleteRecords, retention): replaced atomically (a new file
/// written and fsynced beside it, renamed over it, the directory fsynced), so after a crash it
/// holds either the old or the new offset, whole.
pub const LOG_START_CHECKPOINT: &str = "log-start-offset";
pub(crate) const LOG_START_CHECKPOINT_TMP: &str = "log-start-offset.tmp";
pub(crate) const LS_MAGIC: u32 = 0x4C53_0001;

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// Offset after the appended batches: wait for this to become durable.
    pub next_offset: u64,
    pub log_start_offset: u64,
    /// The batch was a retry of one already stored (idempotent producer): nothing was written.
    pub duplicate: bool,
}

/// A byte range of a segment file holding whole batches, ready for sendfile.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<dyn IoFile>,
    pub position: u64,
    pub len: u64,
}

/// Result of a read: file ranges plus the partition's offsets at the time of the read.
#[derive(Debug, Clone, Default)]
pub struct ReadSlice {
    pub ranges: Vec<FileRange>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// The last stable offset at the read (issue 20): first offset of the earliest open
    /// transaction, or the high watermark.
    pub last_stable_offset: u64,
    /// read_committed reads: the aborted transactions of the range returned.
    pub aborted: Option<Vec<AbortedTxn>>,
}

impl ReadSlice {
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }
    /// Copy the ranges' bytes out (for tests and tools; the broker uses sendfile).
    pub fn copy_out(&self) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; self.bytes() as usize];
        let mut at = 0usize;
        for r in &self.ranges {
            r.file.read_exact_at(&mut out[at..at + r.len as usize], r.position)?;
            at += r.len as usize;
        }
        Ok(out)
    }
}

#[derive(Debug)]
pub(crate) struct State {
    /// The segments (Kafka's LocalLog).
    pub(crate) log: LocalLog,
    /// In group mode: position in the active segment up to which data is durable (servable).
    pub(crate) hw_pos: u64,
    pub(crate) producers: ProducerStateManager,
    /// Open and aborted transactions (`txn_index`).
    pub(crate) txn: TxnIndex,
    pub(crate) rp_file: Arc<dyn IoFile>,
    /// Group mode: bytes appended but not yet written, for `[staged_pos, active.size)` of the
    /// active segment.
    pub(crate) staged: Vec<u8>,
    pub(crate) staged_pos: u64,
    /// An emptied staging buffer kept for reuse.
    pub(crate) spare: Vec<u8>,
    /// A damaged batch found by the scrub (offset, segment base, position): never served.
    pub(crate) fence: Option<(u64, u64, u64)>,
    /// First offset served: the first segment's base, or above it after DeleteRecords (the
    /// segment holding it may also hold earlier records, which are never served).
    pub(crate) log_start: u64,
}

impl State {
    pub(crate) fn active(&self) -> &Segment {
        self.log.active()
    }
    pub(crate) fn active_mut(&mut self) -> &mut Segment {
        self.log.active_mut()
    }
    pub(crate) fn next_offset(&self) -> u64 {
        self.log.next_offset()
    }
    pub(crate) fn log_start(&self) -> u64 {
        self.log_start
    }
}

/// A long-poll waiting for a partition's high watermark to advance (the broker's Fetch).
/// Registered with [`Partition::watch_hw`]; woken once per registration, from the thread that
/// advanced the high watermark (under the partition's state lock: `wake` must only post work
/// elsewhere, never take a partition lock).
pub trait HwWaiter: Send + Sync {
    fn wake(&self);
}

thread_local! {
    /// While a [`HwWakeBatch`] is open on this thread: the waiters its high-watermark advances
    /// took, woken when the batch closes.
    static HELD_WAKES: std::cell::RefCell<Option<Vec<Arc<dyn HwWaiter>>>> = const { std::cell::RefCell::new(None) };
}

/// Holds back the [`HwWaiter`] wake-ups of this thread's high-watermark advances until it is
/// dropped, then wakes each waiter taken (a waiter still wakes once per registration; none is
/// lost, none is woken under a partition lock). A Produce request appending to many partitions
/// opens one around its appends, so a long-polling Fetch reads after the request's last append
/// rather than after its first (Kafka likewise completes delayed fetches after a produce
/// request's appends): at 1,000 partitions one fetch then answers the request's records instead
/// of a few of them per read of all 1,000 partitions. Nested batches join the outermost.
pub struct HwWakeBatch {
    outer: bool,
    /// Thread-bound (the held wake-ups are this thread's).
    _not_send: std::marker::PhantomData<*const ()>,
}

impl HwWakeBatch {
    pub fn open() -> HwWakeBatch {
        let outer = HELD_WAKES.with(|h| {
            let mut h = h.borrow_mut();
            h.is_none().then(|| *h = Some(Vec::new())).is_some()
        });
        HwWakeBatch { outer, _not_send: std::marker::PhantomData }
    }
}

impl Drop for HwWakeBatch {
    fn drop(&mut self) {
        if self.outer {
            let held = HELD_WAKES.with(|h| h.borrow_mut().take());
            for w in held.into_iter().flatten() {
                w.wake();
            }
        }
    }
}

/// Wake `w` now, or at the close of this thread's open [`HwWakeBatch`].
fn wake_or_hold(w: Arc<dyn HwWaiter>) {
    let w = HELD_WAKES.with(|h| match h.borrow_mut().as_mut() {
        Some(held) => {
            held.push(w);
            None
        }
        None => Some(w),
    });
    if let Some(w) = w {
        w.wake();
    }
}

/// One topic-partition log.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: u32,
    pub(crate) dir: PathBuf,
    pub(crate) io: Arc<dyn Io>,
    pub(crate) cfg: LogConfig,
    /// The topic's values that AlterConfigs changes live (segment roll, retention, ...): read
    /// from here, not from `cfg`.
    pub(crate) live: super::LiveConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) sync: Mutex<SyncState>,
    /// Signalled when the sync slot frees (roll, close) and on poison.
    pub(crate) sync_cv: Condvar,
    /// Group-commit waiters, by the parity of the sync that covers them: a completing sync
    /// wakes only the appends it covered, plus one of the next sync's to lead it.
    pub(crate) gen_cv: [Condvar; 2],
    /// Signalled when a leader's staged write completes (`SyncState::writing` cleared), when an
    /// appender's unlocked write completes, and on poison.
    pub(crate) write_cv: Condvar,
    pub(crate) poisoned: AtomicBool,
    /// Group-commit fdatasyncs completed, and microseconds spent in them (for benchmarks).
    pub(crate) syncs: AtomicU64,
    pub(crate) sync_us: AtomicU64,
    /// The longest group-commit write + fdatasync since [`Partition::take_sync_max_us`] (µs).
    pub(crate) sync_max_us: AtomicU64,
    /// Retention deletes only segments whose batches all lie below this offset (see
    /// [`Partition::set_retention_floor`]); `u64::MAX` = no floor.
    pub(crate) retention_floor: AtomicU64,
    /// When the partition was opened, and when (ms after that) the recovery point was last noted.
    pub(crate) opened: std::time::Instant,
    pub(crate) last_note_ms: AtomicU64,
    pub(crate) high_watermark: AtomicU64,
    /// First offset of the earliest open transaction (`u64::MAX`: none), kept with `State::txn`.
    pub(crate) first_open_txn: AtomicU64,
    pub(crate) log_start: AtomicU64,
    /// The durable log start offset checkpoint (0 until one is written). Held while one is
    /// written, so checkpoints are written one at a time and never move backwards. Lock order:
    /// `start_checkpoint` → `state` → `sync`.
    pub(crate) start_checkpoint: Mutex<u64>,
    pub(crate) notifier: Arc<Notifier>,
    /// Fetches waiting for this partition's high watermark to move (id → waiter); woken and
    /// cleared by the next advance.
    pub(crate) hw_waiters: Mutex<HashMap<u64, std::sync::Weak<dyn HwWaiter>>>,
    pub(crate) hw_waiter_count: std::sync::atomic::AtomicUsize,
    /// A write-behind job (see [`WRITE_BEHIND_BYTES`]) is queued or running.
    pub(crate) write_behind_busy: Arc<AtomicBool>,
}

impl std::fmt::Debug for dyn HwWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HwWaiter")
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a partition lock is a bug; keep serving rather than cascading.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode_start_checkpoint(offset: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&LS_MAGIC.to_be_bytes());
    b[4..12].copy_from_slice(&offset.to_be_bytes());
    let crc = crc32c::crc32c(&b[0..12]);
    b[12..16].copy_from_slice(&crc.to_be_bytes());
    b
}

pub(crate) fn encode_recovery_point(offset: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&RP_MAGIC.to_be_bytes());
    b[4..12].copy_from_slice(&offset.to_be_bytes());
    let crc = crc32c::crc32c(&b[0..12]);
    b[12..16].copy_from_slice(&crc.to_be_bytes());
    b
}

impl Partition {
    /// Open (recovering) or create the partition stored in `dir`.
    pub fn open(
        topic: &str,
        index: u32,
        dir: &Path,
        io: Arc<dyn Io>,
        cfg: LogConfig,
        notifier: Arc<Notifier>,
    ) -> Result<Arc<Partition>, RecoveryError> {
        let Recovered { segments, producers, txn, rp_file, checkpoint } = loader::load(topic, index, dir, &*io, &cfg)?;
        let active = segments.last().expect("segment");
        let next = active.next_offset;
        let hw_pos = active.size;
        let log_start = segments[0].base_offset.max(checkpoint);
        let log = LocalLog::new(segments);
        let first_open_txn = txn.first_open().unwrap_or(u64::MAX);
        Ok(Arc::new(Partition {
            topic: topic.to_string(),
            index,
            dir: dir.to_path_buf(),
            io,
            live: super::LiveConfig::new(&cfg),
            cfg,
            state: Mutex::new(State {
                log,
                hw_pos,
                producers,
                txn,
                rp_file,
                staged: Vec::new(),
                staged_pos: 0,
                spare: Vec::new(),
                fence: None,
                log_start,
            }),
            sync: Mutex::new(SyncState { in_flight: false, writing: None, durable: next, poison: None, gen: 0, covering: 0, unlocked: Default::default(), durable_waiters: DurableWaiters::default(), driving: false }),
            sync_cv: Condvar::new(),
            gen_cv: [Condvar::new(), Condvar::new()],
            write_cv: Condvar::new(),
            poisoned: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            sync_us: AtomicU64::new(0),
            sync_max_us: AtomicU64::new(0),
            // Kafka's convention: topics named `__*` are internal. Their records may be the
            // only copy of state (committed offsets, the producer-id high-water mark), so
            // retention takes nothing until their owner sets a floor (see `groups`).
            retention_floor: AtomicU64::new(if topic.starts_with("__") { 0 } else { u64::MAX }),
            opened: std::time::Instant::now(),
            last_note_ms: AtomicU64::new(0),
            high_watermark: AtomicU64::new(next),
            first_open_txn: AtomicU64::new(first_open_txn),
            log_start: AtomicU64::new(log_start),
            start_checkpoint: Mutex::new(checkpoint),
            notifier,
            hw_waiters: Mutex::new(HashMap::new()),
            hw_waiter_count: std::sync::atomic::AtomicUsize::new(0),
            write_behind_busy: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// The configuration the partition was opened with; the topic-level values that change
    /// live are in [`Partition::live`].
    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }
    /// The partition's storage.
    pub fn io(&self) -> &Arc<dyn Io> {
        &self.io
    }
    pub fn live(&self) -> &super::LiveConfig {
        &self.live
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Offsets below this are servable (durable in `group` mode, written otherwise).
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }
    pub fn log_start_offset(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }
    /// Offset the next append will get.
    pub fn log_end_offset(&self) -> u64 {
        lock(&self.state).next_offset()
    }
    /// Appended but not yet servable (in `group` mode: staged or awaiting its fdatasync).
    pub fn has_unsynced(&self) -> bool {
        self.log_end_offset() > self.high_watermark()
    }
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
    /// Group-commit fdatasyncs completed so far and the total microseconds they took.
    pub fn sync_stats(&self) -> (u64, u64) {
        (self.syncs.load(Ordering::Relaxed), self.sync_us.load(Ordering::Relaxed))
    }
    /// The longest group-commit write + fdatasync (µs) since the last call (stats intervals).
    pub fn take_sync_max_us(&self) -> u64 {
        self.sync_max_us.swap(0, Ordering::Relaxed)
    }
    /// Let retention (size or time) delete only segments whose batches all lie below `offset`.
    /// Internal topics start with a floor of 0 (nothing deleted by size or time): `__transaction_state`
    /// raises it past what its last snapshot superseded (see `engine::txn`); `__consumer_offsets` is
    /// compacted instead, and keeps the floor only until the group coordinator switches a topic
    /// created by an older version to `cleanup.policy=compact` (see `zl_groups`).
    pub fn set_retention_floor(&self, offset: u64) {
        self.retention_floor.store(offset, Ordering::Release);
    }
    pub fn segment_count(&self) -> usize {
        lock(&self.state).log.len()
    }
    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        lock(&self.state).log.size_bytes()
    }

    pub(crate) fn advance_hw(&self, offset: u64) {
        if self.high_watermark.fetch_max(offset, Ordering::AcqRel) < offset {
            self.notifier.bump();
            if self.hw_waiter_count.load(Ordering::Acquire) > 0 {
                let waiters = {
                    let mut w = lock(&self.hw_waiters);
                    self.hw_waiter_count.store(0, Ordering::Release);
                    std::mem::take(&mut *w)
                };
                for w in waiters.into_values().filter_map(|w| w.upgrade()) {
                    wake_or_hold(w);
                }
            }
        }
    }

    /// Wake `waiter` (once) at the next advance of the high watermark. Registering the same
    /// `id` again replaces the earlier registration. The caller re-checks the high watermark
    /// after registering (an advance between its read and this call would be missed).
    pub fn watch_hw(&self, id: u64, waiter: std::sync::Weak<dyn HwWaiter>) {
        let mut w = lock(&self.hw_waiters);
        w.insert(id, waiter);
        self.hw_waiter_count.store(w.len(), Ordering::Release);
    }

    /// Forget the registration `id` (the fetch was answered otherwise).
    pub fn unwatch_hw(&self, id: u64) {
        let mut w = lock(&self.hw_waiters);
        if w.remove(&id).is_some() {
            self.hw_waiter_count.store(w.len(), Ordering::Release);
        }
    }

    /// Fetches registered with [`Partition::watch_hw`] and not woken yet.
    pub fn hw_waiters(&self) -> usize {
        self.hw_waiter_count.load(Ordering::Acquire)
    }

    /// Validate `buf` (one or more whole batches), assign offsets and write it to the active
    /// segment (page cache). In `group` mode the append is not yet durable: call
    /// [`Partition::wait_durable`] (or use [`Partition::append_durable`]). In `group` mode a
    /// write that fails after the offsets were handed out (a staged write in the leader's
    /// chain, or a large append's own write) does not fail this call: it poisons the
    /// partition, and waiting for durability reports that.
    pub fn append(&self, buf: &mut [u8]) -> Result<AppendInfo, AppendError> {
        #[cfg(feature = "slow-append")]
        let started = std::time::Instant::now();
        let infos = record::validate_all_with(buf, self.cfg.batch_bytes_max, self.cfg.validate_records)?;
        if self.is_poisoned() {
            return Err(self.poison_error());
        }
        let total = buf.len() as u64;
        let mut st = lock(&self.state);
        // Re-checked under the lock: a sync may have failed while we waited for it.
        if self.is_poisoned() {
            return Err(self.poison_error());
        }
        // Offsets the append takes (at least one per batch). Relative offsets are u32 (the
        // indexes): an append whose offsets do not fit even a segment of its own (several
        // batches of ~2^31 offsets each) is refused before anything rolls, is assigned or written.
        let count: u64 = infos.iter().map(|i| i.offset_count()).sum();
        if count - 1 > u32::MAX as u64 {
            return Err(AppendError::TooManyOffsets { base: st.next_offset(), count });
        }
        // Roll first, as a sync of its own (see `roll_exclusive`), then re-take the lock.
        while self.needs_roll(&st, total, count) {
            drop(st);
            self.roll_exclusive(total, count)?;
            st = lock(&self.state);
            if self.is_poisoned() {
                return Err(self.poison_error());
            }
        }
        // Invariant: the active segment can index every offset of the append (rolled above if
        // not, and an empty segment holds any append that passed the check above).
        assert!(
            st.active().can_hold(st.next_offset() + count - 1),
            "append of {count} offsets at {} does not fit the active segment based at {}",
            st.next_offset(),
            st.active().base_offset
        );
        // Assign offsets, then check idempotent producers'
        // sequences batch by batch against the state as it will be after the earlier batches.
        let base = st.next_offset();
        let mut assigned = Vec::with_capacity(infos.len());
        let mut next = base;
        for info in &infos {
            let mut a = *info;
            a.base_offset = next as i64;
            next += info.offset_count();
            assigned.push(a);
        }
        // The clock only for idempotent batches (their producers' expiry counts from it).
        let now = if assigned.iter().any(is_idempotent) { now_ms() } else { 0 };
        let pending = match st.producers.check(&assigned, now)? {
            Checked::Accepted(pending) => pending,
            Checked::Duplicate { base_offset, last_offset } => {
                return Ok(AppendInfo { base_offset, last_offset, next_offset: base, log_start_offset: st.log_start(), duplicate: true });
            }
        };
        let position = st.active().size;
        let mut at = 0usize;
        for a in &assigned {
            let b = &mut buf[at..at + a.size_bytes];
            record::patch_base_offset(b, a.base_offset);
            record::patch_leader_epoch(b, segment::LEADER_EPOCH_MAX);
            at += a.size_bytes;
        }
        let mut unlocked = None;
        let mut write_behind = None;
        if self.cfg.durability == Durability::Group {
            // Reserve first: ENOSPC here fails this append alone, before anything is tracked.
            let end = position + total;
            if end > st.active().prealloc_end {
                let seg_max = self.live.segment_bytes().max(end);
                let seg = st.active_mut();
                let from = seg.prealloc_end.max(position);
                // Several large appends' worth at a time (fallocate waits for every O_DIRECT
                // write in flight on the file, and runs under the lock), but on a nearly full
                // disk no more than this append needs plus the usual step.
                let least = (end + RESERVE_BYTES).min(seg_max);
                let want = (end + RESERVE_BYTES.max(4 * total)).min(seg_max);
                let to = match seg.file.reserve(from, want - from) {
                    Ok(()) => want,
                    Err(e) if want > least && e.raw_os_error() == Some(libc::ENOSPC) => {
                        seg.file.reserve(from, least - from).map_err(AppendError::Storage)?;
                        least
                    }
                    Err(e) => return Err(AppendError::Storage(e)),
                };
                seg.prealloc_end = to;
            }
            let large = total >= self.cfg.appender_write_bytes.max(1);
            if large && st.staged.is_empty() {
                // Large: written by this appender after the lock is released (one copy fewer
                // than staging, and concurrent with other appends). Registered first, so no
                // sync covers it before its write is over.
                self.wait_leader_write(Some((st.active().base_offset, position, end)))?;
                lock(&self.sync).unlocked.insert(base, position);
                // From here on the guard deregisters it, however this append ends.
                unlocked = Some((st.active().file.clone(), UnlockedWrite { partition: self, base, result: None }));
            } else {
                // Staged: the group-commit leader writes it with its sync (module notes).
                if st.staged.is_empty() {
                    st.staged_pos = position;
                }
                st.staged.extend_from_slice(buf);
                if st.staged.len() > STAGING_BYTES_MAX || large {
                    self.write_staged(&mut st, false)?;
                }
            }
        } else if let Err(e) = st.active().file.write_at(buf, position) {
            // Nothing is tracked: the bytes past `size` are garbage that the next write
            // overwrites and recovery would truncate.
            return Err(AppendError::Storage(e));
        } else {
            write_behind = self.write_behind_due(&mut st, position + total);
        }
        let interval = self.cfg.index_interval_bytes;
        let mut pos = position;
        let mut at = 0usize;
        for a in &assigned {
            // Invariant: appended batches are contiguous in offsets and bytes at the log end
            // (so the index entries they add increase).
            assert!(
                a.base_offset as u64 == st.next_offset() && pos == st.active().size,
                "append of offset {} at position {pos} does not follow the log end (offset {}, position {})",
                a.base_offset,
                st.next_offset(),
                st.active().size
            );
            if let Err(e) = st.active_mut().track_batch(pos, a, interval) {
                // Checked above (roll or refusal): the bytes are written or staged and their
                // offsets handed out, so a refusal here is a bug that poisons the partition.
                drop(st);
                self.poison(format!("an appended batch cannot be indexed: {e}"));
                return Err(self.poison_error());
            }
            if a.is_transactional() {
                let marker = txn_index::control_marker(&buf[at..at + a.size_bytes], a);
                st.txn.on_batch(a, marker);
                self.first_open_txn.store(st.txn.first_open().unwrap_or(u64::MAX), Ordering::Release);
            }
            pos += a.size_bytes as u64;
            at += a.size_bytes;
        }
        st.producers.commit(pending);
        let log_start = st.log_start();
        if self.cfg.durability != Durability::Group {
            st.hw_pos = st.active().size;
            // Under the state lock, so a reader never sees `hw_pos` and the high watermark disagree.
            self.advance_hw(next);
        }
        drop(st);
        if let Some((file, from, len)) = write_behind {
            self.start_write_behind(file, from, len);
        }
        if let Some((file, mut guard)) = unlocked {
            // As for a staged append whose leader write fails: the append was accepted (its
            // offsets are taken), a failed write poisons (the guard, as it drops), and waiting
            // for durability reports it.
            guard.result = Some(self.write_unlocked(&*file, buf, position));
        }
        #[cfg(feature = "slow-append")]
        zl_io::sys::slow_append_penalty(started.elapsed());
        Ok(AppendInfo { base_offset: base, last_offset: next - 1, next_offset: next, log_start_offset: log_start, duplicate: false })
    }

    /// Under the state lock, after a `never`/`interval` write that ended at `end` of the
    /// active segment: the range whose writeback to request now, if one is due and no request
    /// of this partition is still queued or running (then a later append asks for it all).
    fn write_behind_due(&self, st: &mut State, end: u64) -> Option<(Arc<dyn IoFile>, u64, u64)> {
        let seg = st.active_mut();
        let from = seg.writeback_from.min(end);
        if end - from < WRITE_BEHIND_BYTES || self.write_behind_busy.swap(true, Ordering::AcqRel) {
            return None;
        }
        seg.writeback_from = end;
        Some((seg.file.clone(), from, end - from))
    }

    /// Queue the writeback request chosen by [`Partition::write_behind_due`] on the sync pool.
    /// A hint only: its failure loses nothing (durability is the roll's and the interval
    /// sync's fdatasync, which report errors and poison).
    fn start_write_behind(&self, file: Arc<dyn IoFile>, from: u64, len: u64) {
        let busy = self.write_behind_busy.clone();
        super::pool::sync_pool().spawn(move || {
            let _ = file.start_writeback(from, len);
            busy.store(false, Ordering::Release);
        });
    }

    /// Append and, in `group` mode, wait until an fdatasync covers it.
    pub fn append_durable(&self, buf: &mut [u8]) -> Result<AppendInfo, AppendError> {
        let info = self.append(buf)?;
        self.wait_durable(info.next_offset)?;
        Ok(info)
    }

    /// Block until everything before `next_offset` is durable (group mode); returns at once in
    /// the other modes. Fails if the partition is (or becomes) poisoned first.
    pub fn wait_durable(&self, next_offset: u64) -> Result<(), AppendError> {
        if self.cfg.durability != Durability::Group {
            return if self.is_poisoned() { Err(self.poison_error()) } else { Ok(()) };
        }
        self.sync_to(next_offset)
    }

    /// Call `done` once everything before `next_offset` is durable (group mode) — at once in
    /// the other modes, or if it already is, or with the poison error. Never blocks the
    /// caller: the group commit is driven by one job per partition on
    /// [`super::pool::sync_pool`] (through [`Partition::wait_durable`]'s leader logic, so at
    /// most one fdatasync is in flight per partition, and it starts at once: no added delay).
    pub fn on_durable(self: &Arc<Self>, next_offset: u64, done: DurableCallback) {
        if self.cfg.durability != Durability::Group {
            let r = if self.is_poisoned() { Err(self.poison_error()) } else { Ok(()) };
            return done(r);
        }
        self.on_durable_group(next_offset, done);
    }

    /// Make everything appended so far durable (any mode). Used by the interval flusher and close.
    pub fn flush(&self) -> Result<(), AppendError> {
        let target = self.log_end_offset();
        self.sync_to(target)
    }

    /// File ranges holding whole batches from the batch containing `offset`, up to `max_bytes`
    /// (at least one batch when `min_one_batch`, even if larger). Only offsets below the high
    /// watermark are served.
    ///
    /// The state lock is held only to check the offset and take what the read needs (the
    /// segment's file and servable end, the index floor, the active segment's servable end):
    /// the batch headers are read without it, so a read that misses the page cache does not
    /// hold up appends. (Bytes below a segment's servable end never change; a segment deleted
    /// meanwhile stays readable through its open file.) A cut inside a segment looks up its
    /// in-memory index, and a read spanning segments the next one, under the lock again,
    /// briefly; nothing past the active segment's servable end as of the first lock is served.
    pub fn read(&self, offset: i64, max_bytes: u64, min_one_batch: bool) -> Result<ReadSlice, FetchError> {
        self.read_isolated(offset, max_bytes, min_one_batch, false)
    }

    /// [`Partition::read`] with an isolation level: `committed` (read_committed) serves only
    /// below the last stable offset and lists the aborted transactions of what it returns.
    pub fn read_isolated(&self, offset: i64, max_bytes: u64, min_one_batch: bool, committed: bool) -> Result<ReadSlice, FetchError> {
        let (mut slice, first, floor, offset, active, upto) = {
            let st = lock(&self.state);
            let hw = self.high_watermark();
            let log_start = st.log_start();
            let lso = st.txn.first_open().map_or(hw, |f| f.min(hw));
            let mut slice = ReadSlice {
                ranges: Vec::new(),
                high_watermark: hw,
                log_start_offset: log_start,
                last_stable_offset: lso,
                aborted: None,
            };
            if offset < log_start as i64 || offset > hw as i64 {
                return Err(FetchError::OffsetOutOfRange { requested: offset, log_start, log_end: hw });
            }
            let offset = offset as u64;
            // read_committed: nothing at or past the LSO (a batch boundary: the first batch of
            // the earliest open transaction, or the high watermark).
            let upto = if committed { lso } else { hw };
            if committed {
                slice.aborted = Some(st.txn.aborted_between(offset, upto));
            }
            if offset >= upto {
                return Ok(slice);
            }
            if let Some((bad, _, _)) = st.fence {
                if offset >= bad {
                    return Err(FetchError::Storage(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}-{}: the batch at offset {bad} is damaged (found by the scrub): not served; stop the broker and run it with --repair", self.topic, self.index),
                    )));
                }
            }
            let i = st.log.index_for(offset);
            let seg = st.log.segment(i);
            if offset >= seg.next_offset {
                // Only the last segment can end at or before the offset (below the high watermark).
                return Ok(slice);
            }
            // The active segment's servable end as of this lock, whatever happens after it
            // (what is served must agree with the high watermark answered).
            let active = st.active();
            let group = self.cfg.durability == Durability::Group;
            let active = (active.base_offset, if group { st.hw_pos.min(active.size) } else { active.size });
            let first = st.log.read_part(i, active, st.fence);
            (slice, first, seg.index_floor(offset), offset, active, upto)
        };
        // The LSO cut, when it falls inside a segment the read reaches: the position of the
        // batch at `upto` (found from the index floor, in the file being read).
        let cut = |file: &Arc<dyn IoFile>, base: u64, limit: u64, next: Option<u64>| -> Result<u64, FetchError> {
            if upto < base {
                return Ok(0);
            }
            if next.is_some_and(|n| upto >= n) || upto >= self.high_watermark() {
                return Ok(limit);
            }
            let floor = lock(&self.state).log.index_floor_in(base, file, upto).unwrap_or(0);
            Ok(segment::find_position_from(&**file, upto, floor, limit, self.cfg.batch_bytes_max)?.map_or(limit, |p| p.min(limit)))
        };
        let mut total = 0u64;
        let mut part = Some(first);
        let mut at_first = true;
        while let Some((file, base, limit)) = part.take() {
            let limit = if upto < slice.high_watermark {
                let next = lock(&self.state).log.segment_end(base);
                cut(&file, base, limit, next)?
            } else {
                limit
            };
            let start = if at_first {
                segment::find_position_from(&*file, offset, floor, limit, self.cfg.batch_bytes_max)?
            } else {
                Some(0)
            };
            at_first = false;
            if let Some(start) = start.filter(|&s| s < limit) {
                let budget = max_bytes.saturating_sub(total);
                let end = if limit - start <= budget {
                    limit
                } else if let Some(b) = lock(&self.state).log.index_boundary(base, &file, start, start + budget) {
                    // Cut at a known batch boundary; then walk headers to get closer to the budget.
                    let mut end = b;
                    while end < limit {
                        match segment::read_header(&*file, end, self.cfg.batch_bytes_max)? {
                            Ok(h) if end + h.size_bytes as u64 <= start + budget => end += h.size_bytes as u64,
                            _ => break,
                        }
                    }
                    end
                } else {
                    let mut end = start;
                    while end < limit {
                        match segment::read_header(&*file, end, self.cfg.batch_bytes_max)? {
                            Ok(h) if end + h.size_bytes as u64 <= start + budget => end += h.size_bytes as u64,
                            Ok(h) if end == start && total == 0 && min_one_batch => {
                                end += h.size_bytes as u64;
                                break;
                            }
                            _ => break,
                        }
                    }
                    end
                };
                if end > start {
                    total += end - start;
                    slice.ranges.push(FileRange { file, position: start, len: end - start });
                }
                if end < limit {
                    break;
                }
            }
            // On into the next segment (a read spanning segments takes the lock once per segment).
            if base < active.0 {
                let st = lock(&self.state);
                part = st.log.next_part(base, active, st.fence);
            }
        }
        Ok(slice)
    }

    /// The last stable offset: the first offset of the earliest open transaction, or the high
    /// watermark (issue 20).
    pub fn last_stable_offset(&self) -> u64 {
        self.first_open_txn.load(Ordering::Acquire).min(self.high_watermark())
    }

    /// Open transactions of the partition: (producer id, first offset).
    pub fn open_transactions(&self) -> Vec<(i64, u64)> {
        lock(&self.state).txn.open().collect()
    }

    /// [`Partition::read`] copied into memory.
    pub fn read_copy(&self, offset: i64, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
        Ok(self.read(offset, max_bytes, true)?.copy_out()?)
    }

    /// Largest timestamp in the log with the offset of its batch (ListOffsets MAX_TIMESTAMP).
    pub fn max_timestamp(&self) -> i64 {
        lock(&self.state).log.max_timestamp()
    }

    /// Delete whole old segments beyond the size or time retention. Returns how many.
    ///
    /// The segments are chosen under the state lock; the new log start is checkpointed when it
    /// moves past the checkpoint (so it never moves backwards after a crash, even one before
    /// the unlinks are durable); the unlinks and the directory fsync run outside the state
    /// lock (appends and reads go on meanwhile).
    pub fn enforce_retention(&self) -> Result<usize, AppendError> {
        // Only holders of this lock remove segments (from the front); rolls only add at the back.
        let mut checkpoint = lock(&self.start_checkpoint);
        let (count, new_first) = {
            let st = lock(&self.state);
            let now = now_ms();
            // Never data not yet servable, nor at or above the retention floor.
            let keep_from = self.high_watermark().min(self.retention_floor.load(Ordering::Acquire));
            let count = st.log.retention_count(now, self.live.retention_bytes(), self.live.retention_ms(), keep_from);
            (count, st.log.segment(count).base_offset)
        };
        if count == 0 {
            return Ok(0);
        }
        if new_first > *checkpoint && self.log_start_offset() < new_first {
            self.write_start_checkpoint(new_first)?;
            *checkpoint = new_first;
        }
        let removed: Vec<Segment> = {
            let mut st = lock(&self.state);
            let removed = st.log.remove_front(count);
            st.log_start = st.log_start.max(st.log.first_base());
            // Invariant: retention never moves the log start past what is servable.
            assert!(st.log_start <= self.high_watermark(), "log start {} above the high watermark {}", st.log_start, self.high_watermark());
            self.log_start.store(st.log_start, Ordering::Release);
            removed
        };
        for seg in &removed {
            seg.delete_files(&*self.io).map_err(AppendError::Storage)?;
        }
        self.io.sync_dir(&self.dir).map_err(AppendError::Storage)?;
        Ok(count)
    }

    /// DeleteRecords: move the log start offset up to `offset` (at most the high watermark).
    /// Returns the log start after it (unchanged when `offset` is not above it). The new start
    /// is durable (checkpointed) before this returns Ok; segments wholly below it are then
    /// deleted outside the state lock (a crash before that is finished by the next open). A
    /// segment that also holds records at or above the new start is kept, but nothing below
    /// the start is served from it.
    pub fn delete_records(&self, offset: u64) -> Result<u64, DeleteRecordsError> {
        if self.is_poisoned() {
            return Err(self.poison_error().into());
        }
        let mut checkpoint = lock(&self.start_checkpoint);
        let hw = self.high_watermark();
        if offset > hw {
            return Err(DeleteRecordsError::OffsetOutOfRange { requested: offset, high_watermark: hw });
        }
        let current = self.log_start_offset();
        if offset <= current {
            return Ok(current);
        }
        self.write_start_checkpoint(offset)?;
        *checkpoint = offset;
        let removed: Vec<Segment> = {
            let mut st = lock(&self.state);
            st.log_start = st.log_start.max(offset);
            self.log_start.store(st.log_start, Ordering::Release);
            let below = st.log.count_wholly_below(offset);
            let removed: Vec<Segment> = st.log.remove_front(below);
            let first = st.log.first_base();
            if st.fence.is_some_and(|(_, base, _)| base < first) {
                // The damaged batch was in a deleted segment.
                st.fence = None;
            }
            assert!(st.log_start <= st.next_offset(), "log start {} above the log end {}", st.log_start, st.next_offset());
            assert!(st.log_start <= self.high_watermark(), "log start {} above the high watermark {}", st.log_start, self.high_watermark());
            removed
        };
        // The start is durable already: a failed unlink leaves files the next open removes.
        for seg in &removed {
            if let Err(e) = seg.delete_files(&*self.io) {
                tracing::warn!(topic = %self.topic, partition = self.index, base = seg.base_offset, "deleting a segment below the log start: {e}");
            }
        }
        if !removed.is_empty() {
            if let Err(e) = self.io.sync_dir(&self.dir) {
                tracing::warn!(topic = %self.topic, partition = self.index, "directory fsync after deleting segments: {e}");
            }
        }
        Ok(offset)
    }

    /// Replace the log start checkpoint with `offset`: a new file written and fsynced, renamed
    /// over the old one, the directory fsynced. A failed fsync poisons the partition.
    fn write_start_checkpoint(&self, offset: u64) -> Result<(), AppendError> {
        let tmp = self.dir.join(LOG_START_CHECKPOINT_TMP);
        if self.io.exists(&tmp) {
            self.io.remove_file(&tmp).map_err(AppendError::Storage)?;
        }
        let f = self.io.open(&tmp, true).map_err(AppendError::Storage)?;
        f.write_at(&encode_start_checkpoint(offset), 0).map_err(AppendError::Storage)?;
        if let Err(e) = f.sync_data() {
            self.poison(format!("fdatasync of the log start checkpoint failed: {e}"));
            return Err(self.poison_error());
        }
        drop(f);
        self.io.rename(&tmp, &self.dir.join(LOG_START_CHECKPOINT)).map_err(AppendError::Storage)?;
        if let Err(e) = self.io.sync_dir(&self.dir) {
            self.poison(format!("directory fsync of the log start checkpoint failed: {e}"));
            return Err(self.poison_error());
        }
        Ok(())
    }

    /// Sync everything and write the active segment's indexes (clean shutdown).
    pub fn close(&self) -> Result<(), AppendError> {
        if self.is_poisoned() {
            return Err(self.poison_error());
        }
        // One fdatasync covers everything: staged bytes are written first, the rest was
        // written by its append (sealed segments were synced when they rolled).
        self.exclusive_sync(|| {
            let mut st = lock(&self.state);
            self.write_staged(&mut st, true)?;
            st.active_mut().trim_prealloc().map_err(AppendError::Storage)?;
            if let Err(e) = st.active().file.sync_data() {
                self.poison(format!("fdatasync failed while closing: {e}"));
                return Err(self.poison_error());
            }
            // Everything is durable and servable (waiters wake when the sync slot is released).
            let end = st.next_offset();
            st.hw_pos = st.active().size;
            {
                let mut s = lock(&self.sync);
                s.durable = s.durable.max(end);
            }
            self.advance_hw(end);
            st.active().write_indexes(&*self.io).map_err(AppendError::Storage)?;
            // The recovery point is the log end.
            st.rp_file.write_at(&encode_recovery_point(end), 0).map_err(AppendError::Storage)?;
            if let Err(e) = st.rp_file.sync_data() {
                self.poison(format!("fdatasync of recovery point failed while closing: {e}"));
                return Err(self.poison_error());
            }
            Ok(())
        })
    }

    /// Remove this partition's directory (DeleteTopics). The caller drops it from its maps first.
    /// Sealed segments (base offset, file, size, path) for the scrub.
    pub fn sealed_segments(&self) -> Vec<(u64, Arc<dyn IoFile>, u64, PathBuf)> {
        let st = lock(&self.state);
        st.log
            .sealed()
            .iter()
            .map(|s| (s.base_offset, s.file.clone(), s.size, self.dir.join(segment::log_name(s.base_offset))))
            .collect()
    }

    /// Swap the compacted copy `cleaned` (a synced file holding the batches `new` tracks) in for
    /// the sealed segment based at `base`, if that segment is still the one the cleaner read
    /// (`old`; retention may have deleted it): else the copy is removed and false returned.
    /// Crash-safe order: the old indexes are removed (durably) first, so no crash pairs them
    /// with the new log; the rename replaces the log atomically and a directory fsync makes it
    /// durable; the new indexes are written last (a crash before that rebuilds them by
    /// scanning). Under the state lock so that retention cannot delete the segment in between
    /// (cleaning is rare; its directory fsyncs are the price).
    pub(crate) fn swap_cleaned(&self, base: u64, old: &Arc<dyn IoFile>, cleaned: &Path, mut new: Segment) -> io::Result<bool> {
        let mut st = lock(&self.state);
        let Some(i) = st.log.sealed_holding(base, old) else {
            drop(st);
            self.io.remove_file(cleaned)?;
            return Ok(false);
        };
        for name in [segment::index_name(base), segment::time_index_name(base)] {
            let p = self.dir.join(name);
            if self.io.exists(&p) {
                self.io.remove_file(&p)?;
            }
        }
        self.io.sync_dir(&self.dir)?;
        self.io.rename(cleaned, &self.dir.join(segment::log_name(base)))?;
        self.io.sync_dir(&self.dir)?;
        new.write_indexes(&*self.io)?;
        // Retention by time counts from the newest record the segment was written with.
        new.max_timestamp = new.max_timestamp.max(st.log.segment(i).max_timestamp);
        st.log.replace_sealed(i, new);
        Ok(true)
    }

    /// Stop serving from the damaged batch at `offset` (in the segment based at `base`, at
    /// byte `position`) on: Fetch there answers a storage error instead of a corrupt value.
    pub fn fence(&self, offset: u64, base: u64, position: u64) {
        let mut st = lock(&self.state);
        if st.fence.is_none_or(|(o, _, _)| offset < o) {
            st.fence = Some((offset, base, position));
        }
    }

    /// The damaged offset fenced by the scrub, if any.
    pub fn fenced_at(&self) -> Option<u64> {
        lock(&self.state).fence.map(|(o, _, _)| o)
    }

    pub fn delete(&self) -> io::Result<()> {
        self.io.remove_dir_all(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            self.io.sync_dir(parent)?;
        }
        Ok(())
    }

    /// Forget idempotent producers idle for `producer_id_expiration_ms` as of `now_ms` (never
    /// one with an open transaction). Returns how many went.
    pub fn expire_producers(&self, now_ms: i64) -> usize {
        let Some(max_idle) = self.cfg.producer_id_expiration_ms else { return 0 };
        let mut st = lock(&self.state);
        let st = &mut *st;
        let open: Vec<i64> = st.txn.open().map(|(pid, _)| pid).collect();
        st.producers.expire(now_ms, max_idle, |pid| open.contains(&pid))
    }

    /// Current producer (epoch, last sequence) for tests and InitProducerId.
    pub fn producer_state(&self, producer_id: i64) -> Option<(i16, i32)> {
        lock(&self.state).producers.epoch_and_sequence(producer_id)
    }
}
