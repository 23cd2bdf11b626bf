//! Group commit — what Kafka leaves to the OS flush and its `LogFlushStats`, done here per
//! partition: the sync slot, the staged writes, the durable waiters.
//!
//! An append in `group` mode is not yet durable: whoever waits for it ([`Partition::wait_durable`],
//! [`Partition::on_durable`]'s driver job) and finds no sync in flight becomes the leader, takes
//! the staging buffer, writes it and fdatasyncs the active segment (one io_uring chain with the
//! recovery-point note) and wakes the appends it covered; the others wait on the condition
//! variable of the sync that covers them. Rolls and close take the same slot
//! ([`Partition::exclusive_sync`]). Any failed write or fdatasync poisons the partition: every
//! waiter wakes with the error, and no later append or sync is accepted (offsets already handed
//! out cannot be filled in, and a failed writeback is reported once).
//!
//! Asserts: at most one fdatasync in flight per partition (the leader holds the one sync slot);
//! a sync never makes durable an offset past the log end, nor a position past the active
//! segment's end.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::partition::{encode_recovery_point, lock, Partition, State};
use super::AppendError;
use zl_io::IoFile;

/// The group-commit leader refreshes the recovery point at most this often (it is not synced,
/// so the kernel writes it back seconds later anyway; a roll and a clean close sync it).
pub(crate) const RP_NOTE_INTERVAL_MS: u64 = 50;
/// Group mode: staged bytes past this are written by the appender (bounds the buffer when
/// appends run ahead of the syncs, e.g. library users who append without waiting).
pub const STAGING_BYTES_MAX: usize = 4 << 20;
/// Group mode reserves file space at least this far ahead of the appends it accepts.
pub const RESERVE_BYTES: u64 = 1 << 20;
/// The leader keeps a spare staging buffer of at most this capacity for reuse.
pub(crate) const SPARE_BYTES_MAX: usize = 8 << 20;

#[derive(Debug, Default)]
pub(crate) struct SyncState {
    pub(crate) in_flight: bool,
    /// The leader is writing bytes it took from the staging buffer, (segment base, from, to)
    /// including its zero-fill, until that write (not its fdatasync) is over: a write under the
    /// state lock into that range waits for it (the zeros must land first), as do a roll and a
    /// close (which also hold the one sync slot, `exclusive_sync`).
    pub(crate) writing: Option<(u64, u64, u64)>,
    pub(crate) durable: u64,
    pub(crate) poison: Option<String>,
    /// Number of the latest group-commit sync started, and the offset it makes durable
    /// (`u64::MAX` until its leader has taken the staging buffer).
    pub(crate) gen: u64,
    pub(crate) covering: u64,
    /// Appender writes in flight outside the state lock: first offset → position (all in the
    /// active segment). A sync waits for those below the offset it covers before its
    /// fdatasync; a roll and a close wait for all of them.
    pub(crate) unlocked: std::collections::BTreeMap<u64, u64>,
    /// Registered completions ([`Partition::on_durable`]): (offset to cover, callback).
    pub(crate) durable_waiters: DurableWaiters,
    /// A driver job (on [`super::pool::sync_pool`]) is running the group commit for them.
    pub(crate) driving: bool,
}

/// The registered completions of [`Partition::on_durable`].
#[derive(Default)]
pub(crate) struct DurableWaiters(pub(crate) Vec<(u64, DurableCallback)>);

impl std::fmt::Debug for DurableWaiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} durable waiters", self.0.len())
    }
}

/// Completion of [`Partition::on_durable`]: called once, from whichever thread finished the
/// covering fdatasync (or at once), with the outcome.
pub type DurableCallback = Box<dyn FnOnce(Result<(), AppendError>) + Send>;

/// An appender write registered in `SyncState::unlocked` (at offset `base`): deregisters it
/// however the append ends. Its offsets were handed out and later appends may follow it, so a
/// failed write poisons the partition (a hole cannot be filled), and so does a write that never
/// reported (its thread unwound), or every later sync would wait for it forever.
pub(crate) struct UnlockedWrite<'a> {
    pub(crate) partition: &'a Partition,
    pub(crate) base: u64,
    pub(crate) result: Option<io::Result<()>>,
}

impl Drop for UnlockedWrite<'_> {
    fn drop(&mut self) {
        let p = self.partition;
        let mut s = lock(&p.sync);
        s.unlocked.remove(&self.base);
        match self.result.take() {
            // Waiters for the next sync may have been held back by this write.
            Some(Ok(())) => p.write_cv.notify_all(),
            // Poisoning wakes every waiter.
            Some(Err(e)) => p.poison_locked(&mut s, format!("write of an append failed: {e}")),
            None => p.poison_locked(&mut s, "an append stopped before its write was over".into()),
        }
    }
}

/// Held by whoever holds the one sync slot (`SyncState::in_flight`) while it syncs, and
/// forgotten when it is done. Dropped only if the holder unwinds (a bug): it frees the slot and
/// poisons, or every appender would wait forever for a sync that is gone.
pub(crate) struct SyncSlot<'a>(&'a Partition);

impl Drop for SyncSlot<'_> {
    fn drop(&mut self) {
        let p = self.0;
        let mut s = lock(&p.sync);
        s.in_flight = false;
        // Its writes were synchronous: none is in flight any more.
        s.writing = None;
        p.poison_locked(&mut s, "a sync stopped before it finished (panicked)".into());
    }
}

impl Partition {
    pub(crate) fn poison_error(&self) -> AppendError {
        let reason = lock(&self.sync).poison.clone().unwrap_or_else(|| "fdatasync failed".into());
        AppendError::Poisoned(reason)
    }

    pub(crate) fn poison(&self, reason: String) {
        self.poison_locked(&mut lock(&self.sync), reason);
    }

    /// [`Partition::poison`] with the sync lock held: the first reason wins; every waiter wakes.
    pub(crate) fn poison_locked(&self, s: &mut SyncState, reason: String) {
        if s.poison.is_none() {
            tracing::error!(topic = %self.topic, partition = self.index, %reason, "partition poisoned");
            s.poison = Some(reason);
        }
        self.poisoned.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Wake every waiter of the sync slot and of the group commit.
    pub(crate) fn wake_all(&self) {
        self.sync_cv.notify_all();
        self.gen_cv[0].notify_all();
        self.gen_cv[1].notify_all();
        self.write_cv.notify_all();
    }

    /// An appender's write outside the state lock (registered in `SyncState::unlocked`, with
    /// an [`UnlockedWrite`] guard that deregisters it).
    pub(crate) fn write_unlocked(&self, file: &dyn IoFile, buf: &[u8], position: u64) -> io::Result<()> {
        if self.cfg.direct_io {
            file.write_direct(buf, position)
        } else {
            file.write_at(buf, position).map(|()| {
                // A hint only (its failure loses nothing): the transfer overlaps the sync in
                // flight; durability is decided by the fdatasync alone.
                let _ = file.start_writeback(position, buf.len() as u64);
            })
        }
    }

    /// [`Partition::on_durable`] in `group` mode: completes `done` at once if it can, else
    /// registers it and starts the driver job unless one runs.
    pub(crate) fn on_durable_group(self: &Arc<Self>, next_offset: u64, done: DurableCallback) {
        let mut s = lock(&self.sync);
        if let Some(reason) = &s.poison {
            let e = AppendError::Poisoned(reason.clone());
            drop(s);
            return done(Err(e));
        }
        if s.durable >= next_offset {
            drop(s);
            return done(Ok(()));
        }
        s.durable_waiters.0.push((next_offset, done));
        if s.driving {
            return;
        }
        s.driving = true;
        drop(s);
        let me = self.clone();
        super::pool::sync_pool().spawn(move || me.drive_durable());
    }

    /// The driver job of [`Partition::on_durable`]: sync up to the highest registered offset,
    /// complete the waiters it covered, and go on while there are more.
    pub(crate) fn drive_durable(&self) {
        loop {
            let target = {
                let mut s = lock(&self.sync);
                match s.durable_waiters.0.iter().map(|(o, _)| *o).max() {
                    Some(t) => t,
                    None => {
                        s.driving = false;
                        return;
                    }
                }
            };
            let result = self.sync_to(target);
            let ready: Vec<DurableCallback> = {
                let mut s = lock(&self.sync);
                let durable = s.durable;
                let failed = s.poison.is_some() || result.is_err();
                let (done, keep): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut s.durable_waiters.0).into_iter().partition(|(o, _)| failed || *o <= durable);
                s.durable_waiters.0 = keep;
                done.into_iter().map(|(_, cb)| cb).collect()
            };
            for cb in ready {
                cb(match &result {
                    Ok(()) if !self.is_poisoned() => Ok(()),
                    _ => Err(self.poison_error()),
                });
            }
        }
    }

    /// Group commit: the first waiter to find no sync in flight becomes the leader, syncs
    /// everything written so far, and wakes everyone it covered.
    pub(crate) fn sync_to(&self, target: u64) -> Result<(), AppendError> {
        let mut s = lock(&self.sync);
        loop {
            if let Some(reason) = &s.poison {
                return Err(AppendError::Poisoned(reason.clone()));
            }
            if s.durable >= target {
                return Ok(());
            }
            if s.in_flight {
                // Covered by the sync in flight (its leader took our bytes), or by the next one.
                // While the leader has not taken the buffer yet (`covering` MAX), wait for its
                // end and look again.
                let g = if target <= s.covering { s.gen } else { s.gen + 1 };
                s = self.gen_cv[(g & 1) as usize].wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.in_flight = true;
            s.gen += 1;
            s.covering = u64::MAX;
            drop(s);
            let slot = SyncSlot(self);
            let result = self.sync_once();
            std::mem::forget(slot);
            s = lock(&self.sync);
            s.in_flight = false;
            match result {
                Ok(offset) => s.durable = s.durable.max(offset),
                Err(e) => self.poison_locked(&mut s, format!("write or fdatasync failed: {e}")),
            }
            // The appends this sync covered, and one waiter for the next sync to lead it (it
            // finds the slot free, or taken by someone who will wake the rest).
            self.gen_cv[(s.gen & 1) as usize].notify_all();
            self.gen_cv[((s.gen + 1) & 1) as usize].notify_one();
            self.sync_cv.notify_all();
        }
    }

    /// Write the staged bytes and fdatasync the active segment (one io_uring chain, followed
    /// by the recovery-point note); returns the offset made durable.
    pub(crate) fn sync_once(&self) -> io::Result<u64> {
        let (file, offset, base, pos, mut staged, must, staged_pos, rp_file) = {
            let mut st = lock(&self.state);
            let spare = std::mem::take(&mut st.spare);
            let mut staged = std::mem::replace(&mut st.staged, spare);
            let must = staged.len();
            let staged_pos = st.staged_pos;
            st.staged_pos += staged.len() as u64;
            let mut s = lock(&self.sync);
            // Invariant: at most one fdatasync in flight per partition (its leader holds the slot).
            assert!(s.in_flight, "a group-commit sync started without holding the partition's one sync slot");
            // Not while appender writes are in flight: this leader waits for them before it
            // writes, and its zero range would hold off large appends landing there meanwhile.
            if s.unlocked.is_empty() {
                self.zero_fill_ahead(&mut st, &mut staged);
            }
            let a = st.active();
            s.covering = a.next_offset;
            if !staged.is_empty() {
                // Set under the state lock: a roll that takes the lock after us waits for it.
                s.writing = Some((a.base_offset, staged_pos, staged_pos + staged.len() as u64));
            }
            drop(s);
            (a.file.clone(), a.next_offset, a.base_offset, a.size, staged, must, staged_pos, st.rp_file.clone())
        };
        // Appender writes registered before our snapshot (under the state lock, which we held)
        // are covered by this sync: wait until they are over. They are in flight already, so
        // this waits for the device, not for more appends; later ones are not waited for.
        {
            let mut s = lock(&self.sync);
            while s.poison.is_none() && s.unlocked.first_key_value().is_some_and(|(&o, _)| o < offset) {
                s = self.write_cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if let Some(reason) = &s.poison {
                let e = io::Error::other(reason.clone());
                s.writing = None;
                self.write_cv.notify_all();
                return Err(e);
            }
        }
        // Written only after the sync succeeds; not synced itself: a stale recovery point only
        // weakens mid-log corruption detection, and it never runs ahead of synced data.
        let note = encode_recovery_point(offset);
        let now_ms = self.opened.elapsed().as_millis() as u64;
        let note_due = now_ms.saturating_sub(self.last_note_ms.load(Ordering::Relaxed)) >= RP_NOTE_INTERVAL_MS;
        if note_due {
            self.last_note_ms.store(now_ms, Ordering::Relaxed);
        }
        let note = note_due.then_some((&*rp_file, &note[..], 0));
        let started = std::time::Instant::now();
        // The write is over before the sync is: let writes that wait for it (large appends,
        // an overfull staging buffer) go on while the fdatasync runs.
        let mut written = || {
            let mut s = lock(&self.sync);
            s.writing = None;
            self.write_cv.notify_all();
        };
        let result = file.write_sync_note(&staged, must, staged_pos, note, &mut written);
        let staged_len = staged.len();
        if !staged.is_empty() {
            let mut s = lock(&self.sync);
            if let Err(e) = &result {
                // Before `writing` clears: a write waiting for this one must not go on beside a
                // hole where these bytes should be.
                self.poison_locked(&mut s, format!("write or fdatasync failed: {e}"));
            }
            s.writing = None;
            self.write_cv.notify_all();
        }
        let all_written = result?;
        let took = started.elapsed().as_micros() as u64;
        self.sync_us.fetch_add(took, Ordering::Relaxed);
        self.sync_max_us.fetch_max(took, Ordering::Relaxed);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = lock(&self.state);
            if staged.capacity() <= SPARE_BYTES_MAX && staged.capacity() > st.spare.capacity() {
                staged.clear();
                st.spare = staged;
            }
            // Invariant: a sync makes durable only what was written (durable offset <= log end),
            // so the high watermark never passes the log end.
            assert!(offset <= st.next_offset(), "synced offset {offset} is past the log end {}", st.next_offset());
            if st.active().base_offset == base {
                assert!(pos <= st.active().size, "synced position {pos} is past the segment's end {}", st.active().size);
                st.hw_pos = st.hw_pos.max(pos);
                let zeros_end = staged_pos + staged_len as u64;
                let seg = st.active_mut();
                // The zeros this write carried are allocated: appends landing there need no
                // reservation of their own. Only if there were zeros, all were written, and no
                // trim (close) has cut them off since.
                if all_written && staged_len > must && seg.zeroed_end >= zeros_end {
                    seg.prealloc_end = seg.prealloc_end.max(zeros_end);
                }
            }
            // Under the state lock, consistent with `hw_pos` for readers.
            self.advance_hw(offset);
        }
        Ok(offset)
    }

    /// Preallocation in group mode: when the zeros written ahead of the active segment's end
    /// run short, append the next window of zeros to the leader's buffer (which ends at the
    /// segment's end), so they are written and synced with it and later syncs overwrite
    /// allocated blocks. Skipped for large writes (the window would not be reused).
    pub(crate) fn zero_fill_ahead(&self, st: &mut State, buf: &mut Vec<u8>) {
        let window = self.cfg.preallocate_bytes;
        if window == 0 || buf.is_empty() || buf.len() as u64 > window / 4 {
            return;
        }
        let max = self.live.segment_bytes();
        let seg = st.active_mut();
        let end = seg.size;
        if seg.zeroed_end >= end + window / 8 || end >= max {
            return;
        }
        let to = (end + window).min(max);
        buf.resize(buf.len() + (to - end) as usize, 0);
        // Zeros past the last batch: recovery stops there (batchLength 0) and truncates. Not a
        // reservation (this write may still fail for lack of space; appends reserve their own).
        seg.zeroed_end = to;
    }

    /// Wait until no leader write is in flight (`range` None: before a sync that must cover
    /// every byte appended so far; then no appender write either), or none overlapping
    /// `range` = (segment base, from, to).
    pub(crate) fn wait_leader_write(&self, range: Option<(u64, u64, u64)>) -> Result<(), AppendError> {
        let mut s = lock(&self.sync);
        loop {
            let blocked = match (s.writing, range) {
                (_, None) if !s.unlocked.is_empty() => true,
                (None, _) => false,
                (Some(_), None) => true,
                (Some((wb, wf, wt)), Some((b, f, t))) => wb == b && f < wt && wf < t,
            };
            if !blocked {
                break;
            }
            s = self.write_cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        match &s.poison {
            Some(reason) => Err(AppendError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Write the staged bytes now, under the state lock. With `for_sync`, first wait for any
    /// leader write in flight (so a sync that follows covers every byte appended so far);
    /// otherwise only for one overlapping these bytes. A failure poisons: the bytes' offsets
    /// were already handed out.
    pub(crate) fn write_staged(&self, st: &mut State, for_sync: bool) -> Result<(), AppendError> {
        let range = (st.active().base_offset, st.staged_pos, st.staged_pos + st.staged.len() as u64);
        self.wait_leader_write((!for_sync).then_some(range))?;
        if st.staged.is_empty() {
            return Ok(());
        }
        let result = st.active().file.write_at(&st.staged, st.staged_pos);
        st.staged_pos += st.staged.len() as u64;
        st.staged.clear();
        if let Err(e) = result {
            self.poison(format!("write of staged appends failed: {e}"));
            return Err(self.poison_error());
        }
        Ok(())
    }

    /// Run `f` as the partition's one sync in flight: wait for the group commit's leader to
    /// finish, hold off the next one, and let them go after. A roll or close fdatasyncs outside
    /// the group commit; run concurrently with a leader's fdatasync of the same file, only one
    /// of the two would be told of a writeback error (Linux reports it once), and the other
    /// could acknowledge or seal data the failed writeback dropped.
    pub(crate) fn exclusive_sync<T>(&self, f: impl FnOnce() -> Result<T, AppendError>) -> Result<T, AppendError> {
        {
            let mut s = lock(&self.sync);
            loop {
                if let Some(reason) = &s.poison {
                    return Err(AppendError::Poisoned(reason.clone()));
                }
                if !s.in_flight {
                    s.in_flight = true;
                    break;
                }
                s = self.sync_cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }
        let slot = SyncSlot(self);
        let result = f();
        std::mem::forget(slot);
        let mut s = lock(&self.sync);
        s.in_flight = false;
        // Appends that arrived meanwhile wait for a sync that has not started: one must lead it.
        self.wake_all();
        result
    }
}
