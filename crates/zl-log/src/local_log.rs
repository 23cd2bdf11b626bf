//! The list of segments of one partition — Kafka's `LocalLog` (with the segment selection of
//! its `UnifiedLog` retention and `deleteRecords`).
//!
//! [`LocalLog`] holds the segments in base-offset order; the last is the active one, the only
//! one appended to. It plans reads (which segment holds an offset, its file and servable end,
//! index lookups in the file a read holds), decides and performs the roll (the active segment
//! sealed, synced and indexed, a new one created at the log end), chooses the segments
//! retention and DeleteRecords remove (always from the front, never the active one), and
//! answers the timestamp search ([`Partition::offset_for_timestamp`]). The partition's state
//! lock guards it; the disk I/O of a read, of an unlink and of the directory fsync after it runs
//! without that lock (see [`super::partition`]).
//!
//! Asserts: a partition always has a segment; a new segment starts exactly at the log end, above
//! the active segment's base; segments leave only from the front and never the active one; a
//! compacted copy replaces a sealed segment at the same base. Relative offsets are u32: a batch
//! whose last offset the active segment cannot hold rolls it first ([`LocalLog::needs_roll`]),
//! and `Segment::track_batch` refuses (an error) what it still cannot represent.

use std::io;
use std::sync::{Arc, MutexGuard};

use super::partition::{encode_recovery_point, lock, Partition, State};
use super::segment::{self, Segment};
use super::{AppendError, Durability, FetchError};
use zl_io::IoFile;

/// A part of a read: a segment's file, its base offset, and the end of what may be served.
pub(crate) type ReadPart = (Arc<dyn IoFile>, u64, u64);

/// The segments of one partition, in base-offset order (at least one; the last is active).
#[derive(Debug)]
pub(crate) struct LocalLog {
    segments: Vec<Segment>,
}

impl LocalLog {
    pub(crate) fn new(segments: Vec<Segment>) -> LocalLog {
        assert!(!segments.is_empty(), "a partition always has a segment");
        LocalLog { segments }
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments.last().expect("a partition always has a segment")
    }
    pub(crate) fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("a partition always has a segment")
    }
    /// Offset the next append will get.
    pub(crate) fn next_offset(&self) -> u64 {
        self.active().next_offset
    }
    pub(crate) fn len(&self) -> usize {
        self.segments.len()
    }
    pub(crate) fn first_base(&self) -> u64 {
        self.segments[0].base_offset
    }
    /// Every segment but the active one.
    pub(crate) fn sealed(&self) -> &[Segment] {
        &self.segments[..self.segments.len() - 1]
    }
    pub(crate) fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.segments.iter().map(|s| s.max_timestamp).max().unwrap_or(-1)
    }

    /// Index of the segment that holds `offset` (the last whose base is at or below it).
    pub(crate) fn index_for(&self, offset: u64) -> usize {
        self.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1)
    }
    pub(crate) fn segment(&self, i: usize) -> &Segment {
        &self.segments[i]
    }
    fn position_of(&self, base: u64) -> Option<usize> {
        self.segments.binary_search_by_key(&base, |s| s.base_offset).ok()
    }
    /// The segment based at `base` if `file` is still its file (compaction may have swapped a
    /// new file in since a read was planned: its index describes that file, not the one read).
    fn holding(&self, base: u64, file: &Arc<dyn IoFile>) -> Option<&Segment> {
        let seg = &self.segments[self.position_of(base)?];
        std::ptr::addr_eq(Arc::as_ptr(&seg.file), Arc::as_ptr(file)).then_some(seg)
    }

    /// Segment `i`'s file, base offset and servable end for a read planned when the active
    /// segment was `active` = (base, servable end): the fence, and that end, apply.
    pub(crate) fn read_part(&self, i: usize, active: (u64, u64), fence: Option<(u64, u64, u64)>) -> ReadPart {
        let seg = &self.segments[i];
        let limit = match seg.base_offset.cmp(&active.0) {
            std::cmp::Ordering::Less => seg.size,
            std::cmp::Ordering::Equal => active.1.min(seg.size),
            // Created after the read was planned: nothing there is covered by its high watermark.
            std::cmp::Ordering::Greater => 0,
        };
        // Nothing from the damaged batch on is served.
        let limit = match fence {
            Some((_, base, pos)) if base == seg.base_offset => limit.min(pos),
            Some((_, base, _)) if base < seg.base_offset => 0,
            _ => limit,
        };
        (seg.file.clone(), seg.base_offset, limit)
    }

    /// The part after the segment based at `base` (`None`: it is the last, or gone).
    pub(crate) fn next_part(&self, base: u64, active: (u64, u64), fence: Option<(u64, u64, u64)>) -> Option<ReadPart> {
        let i = self.position_of(base)?;
        (i + 1 < self.segments.len()).then(|| self.read_part(i + 1, active, fence))
    }

    /// [`Segment::index_boundary_at_most`] of the segment based at `base` (`None` if it is gone
    /// or `file` is no longer its file).
    pub(crate) fn index_boundary(&self, base: u64, file: &Arc<dyn IoFile>, after: u64, limit: u64) -> Option<u64> {
        self.holding(base, file)?.index_boundary_at_most(after, limit)
    }

    /// The index floor of `offset` in the segment based at `base`, if `file` is still its file.
    pub(crate) fn index_floor_in(&self, base: u64, file: &Arc<dyn IoFile>, offset: u64) -> Option<u64> {
        Some(self.holding(base, file)?.index_floor(offset))
    }

    /// The base of the segment after the one based at `base` (`None`: it is the last).
    pub(crate) fn segment_end(&self, base: u64) -> Option<u64> {
        let i = self.position_of(base)?;
        self.segments.get(i + 1).map(|s| s.base_offset)
    }

    /// The first segment that may hold the answer to a timestamp search for `ts`: its newest
    /// record reaches `ts`, it holds offsets at or above `start`, and it is not based below
    /// `from_base` (where a search resumes). With its index.
    pub(crate) fn time_seek_start(&self, ts: i64, start: u64, from_base: Option<u64>) -> Option<(usize, &Segment)> {
        self.segments
            .iter()
            .enumerate()
            .find(|(_, seg)| seg.max_timestamp >= ts && seg.next_offset > start && from_base.is_none_or(|b| seg.base_offset >= b))
    }

    /// Whether an append of `total` bytes taking `count` offsets must first roll the active
    /// segment: by size, by age, or because its last offset would not fit the active segment's
    /// u32 relative offsets (Kafka's roll on offset overflow). An empty segment never rolls.
    pub(crate) fn needs_roll(&self, total: u64, count: u64, segment_bytes: u64, segment_ms: Option<u64>) -> bool {
        let a = self.active();
        let old = segment_ms.is_some_and(|ms| a.created.elapsed().as_millis() as u64 >= ms);
        let overflow = !a.can_hold(a.next_offset + count.max(1) - 1);
        a.size > 0 && (a.size + total > segment_bytes || old || overflow)
    }

    /// Start `new` as the active segment (a roll: the old one is sealed).
    pub(crate) fn push(&mut self, new: Segment) {
        let old = self.active();
        // Invariant: segments are contiguous in offsets and their bases strictly increase.
        assert!(
            new.base_offset == old.next_offset && new.base_offset > old.base_offset,
            "new segment at {} after segment {} ending at {}",
            new.base_offset,
            old.base_offset,
            old.next_offset
        );
        self.segments.push(new);
    }

    /// How many segments from the front retention deletes: while the log is over
    /// `retention_bytes` or the oldest segment's newest record is older than `retention_ms`
    /// (before `now_ms`), and the segment after it starts at or below `keep_from`. Never the
    /// active segment.
    pub(crate) fn retention_count(&self, now_ms: i64, retention_bytes: Option<u64>, retention_ms: Option<u64>, keep_from: u64) -> usize {
        let mut total = self.size_bytes();
        let mut count = 0;
        while self.segments.len() - count > 1 {
            let oldest = &self.segments[count];
            let by_size = retention_bytes.is_some_and(|max| total > max);
            let by_time = retention_ms.is_some_and(|ms| oldest.max_timestamp >= 0 && oldest.max_timestamp < now_ms - ms as i64);
            if !(by_size || by_time) || self.segments[count + 1].base_offset > keep_from {
                break;
            }
            total -= oldest.size;
            count += 1;
        }
        count
    }

    /// How many segments from the front lie wholly below `offset` (never the active one).
    pub(crate) fn count_wholly_below(&self, offset: u64) -> usize {
        let n = self.segments.len();
        (0..n - 1).take_while(|&i| self.segments[i + 1].base_offset <= offset).count()
    }

    /// Take the first `count` segments out of the list (their files are the caller's to delete).
    pub(crate) fn remove_front(&mut self, count: usize) -> Vec<Segment> {
        // Invariant: segments leave from the front only, and never the active one.
        assert!(count < self.segments.len(), "removing {count} of {} segments would remove the active one", self.segments.len());
        self.segments.drain(..count).collect()
    }

    /// The sealed segment based at `base` whose file is `file`, if it is still in the list.
    pub(crate) fn sealed_holding(&self, base: u64, file: &Arc<dyn IoFile>) -> Option<usize> {
        let same = |a: &Arc<dyn IoFile>| std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(file));
        self.sealed().iter().position(|s| s.base_offset == base && same(&s.file))
    }

    /// Replace sealed segment `i` by `new` (a compacted copy: same base, same last offset).
    pub(crate) fn replace_sealed(&mut self, i: usize, new: Segment) {
        let old = &self.segments[i];
        assert!(
            i + 1 < self.segments.len() && new.base_offset == old.base_offset && new.next_offset <= old.next_offset,
            "replacing segment {} with one at {}..{} (was ..{})",
            old.base_offset,
            new.base_offset,
            new.next_offset,
            old.next_offset
        );
        self.segments[i] = new;
    }
}

impl Partition {
    /// Offset and timestamp of the first record whose timestamp is >= `ts` (exact to the
    /// record, as Kafka: the batch is found through the time index and batch headers, then its
    /// records are walked, decompressed if need be), or `None` if there is none below the high
    /// watermark.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>, FetchError> {
        let bad = |e: String| FetchError::Storage(io::Error::new(io::ErrorKind::InvalidData, e));
        // (segment base offset, position) to resume the batch search from, after a batch whose
        // max timestamp reached `ts` but none of whose records did (a producer's max timestamp
        // is not checked against its records), or after a segment without an answer.
        // The position holds only in the same file (compaction may swap a new one in).
        type Resume = (u64, u64, Option<Arc<dyn IoFile>>);
        let mut resume: Option<Resume> = None;
        loop {
            // Under the lock, no I/O: the first segment that may hold the answer.
            let (file, base, limit, mut pos, start, hw) = {
                let st = lock(&self.state);
                let hw = self.high_watermark();
                // Records below the log start are deleted: never an answer.
                let start = st.log_start;
                let n = st.log.len();
                let group = self.cfg.durability == Durability::Group;
                let found = st.log.time_seek_start(ts, start, resume.as_ref().map(|(b, _, _)| *b));
                let Some((i, seg)) = found else { return Ok(None) };
                // Staged bytes of the active segment are not in the file yet.
                let limit = if i + 1 == n && group { st.hw_pos.min(seg.size) } else { seg.size };
                let pos = match &resume {
                    Some((b, pos, Some(f))) if *b == seg.base_offset && std::ptr::addr_eq(Arc::as_ptr(f), Arc::as_ptr(&seg.file)) => *pos,
                    _ => seg.time_floor_position(ts),
                };
                (seg.file.clone(), seg.base_offset, limit, pos, start, hw)
            };
            // Without the lock: the first batch from there whose max timestamp reaches `ts`.
            let mut found = None;
            while pos < limit {
                let h = segment::read_header(&*file, pos, self.cfg.batch_bytes_max)?.map_err(|e| bad(e.to_string()))?;
                if h.base_offset as u64 >= hw {
                    return Ok(None);
                }
                if h.max_timestamp >= ts && h.last_offset() as u64 >= start {
                    found = Some((pos, h.size_bytes));
                    break;
                }
                pos += h.size_bytes as u64;
            }
            let Some((pos, size)) = found else {
                // Nothing in this segment: the next ones.
                resume = Some((base + 1, 0, None));
                continue;
            };
            // Read that batch and find the exact record, as Kafka does (the first offset whose
            // record timestamp is >= ts, not the batch's base offset).
            let mut batch = vec![0u8; size];
            if super::segment::read_fully(&*file, &mut batch, pos)? < size {
                return Err(bad(format!("batch at position {pos} is truncated")));
            }
            match super::time_seek::first_at_or_after_from(&batch, ts, start).map_err(bad)? {
                Some(found) => return Ok(Some(found)),
                None => resume = Some((base, pos + size as u64, Some(file.clone()))),
            }
        }
    }

    /// Whether an append of `total` bytes taking `count` offsets must first roll the active
    /// segment.
    pub(crate) fn needs_roll(&self, st: &State, total: u64, count: u64) -> bool {
        st.log.needs_roll(total, count, self.live.segment_bytes(), self.live.segment_ms())
    }

    /// Roll the active segment if an append of `total` bytes still needs it, as the one sync in
    /// flight. Called without the state lock (a leader in flight may need it to finish).
    pub(crate) fn roll_exclusive(&self, total: u64, count: u64) -> Result<(), AppendError> {
        self.exclusive_sync(|| {
            let mut st = lock(&self.state);
            if self.needs_roll(&st, total, count) {
                self.roll(&mut st)
            } else {
                Ok(())
            }
        })
    }

    /// Seal the active segment (sync it, write its indexes) and start a new one. Only as the
    /// one sync in flight ([`Partition::roll_exclusive`]).
    pub(crate) fn roll(&self, st: &mut MutexGuard<'_, State>) -> Result<(), AppendError> {
        // Invariant: a roll fdatasyncs as the partition's one sync in flight.
        assert!(lock(&self.sync).in_flight, "a roll started without holding the partition's one sync slot");
        if self.is_poisoned() {
            return Err(self.poison_error());
        }
        self.write_staged(st, true)?;
        // A sealed segment ends exactly after its last batch (trim made durable by the sync
        // below, before the next segment exists), or recovery would refuse it.
        st.active_mut().trim_prealloc().map_err(AppendError::Storage)?;
        let old = st.active();
        let next = old.next_offset;
        // Invariant: segment base offsets strictly increase (a rolled segment holds a batch).
        assert!(next > old.base_offset, "roll of segment {} at offset {next}: base offsets must increase", old.base_offset);
        // A failed write (e.g. a short write then ENOSPC) may have left bytes past the last
        // batch; sealed, they would read as corruption in the middle of the log on reopen.
        if old.file.len().map_err(AppendError::Storage)? > old.size {
            old.file.set_len(old.size).map_err(AppendError::Storage)?;
        }
        if let Err(e) = old.file.sync_data() {
            self.poison(format!("fdatasync failed while rolling: {e}"));
            return Err(self.poison_error());
        }
        old.write_indexes(&*self.io).map_err(AppendError::Storage)?;
        let new = Segment::create(&*self.io, &self.dir, next).map_err(AppendError::Storage)?;
        if let Err(e) = self.io.sync_dir(&self.dir) {
            self.poison(format!("fsync of the partition directory failed while rolling: {e}"));
            return Err(self.poison_error());
        }
        st.rp_file.write_at(&encode_recovery_point(next), 0).map_err(AppendError::Storage)?;
        if let Err(e) = st.rp_file.sync_data() {
            self.poison(format!("fdatasync of recovery point failed: {e}"));
            return Err(self.poison_error());
        }
        st.log.push(new);
        st.hw_pos = 0;
        // Nothing is staged (written above); the next staged append sets its own position.
        st.staged_pos = 0;
        {
            let mut s = lock(&self.sync);
            s.durable = s.durable.max(next);
            self.wake_all();
        }
        self.advance_hw(next);
        Ok(())
    }
}
