//! One segment: a `.log` file of batches, its sparse offset index and time index.
//!
//! ```text
//! <base>.log        batches back to back, exactly as stored (base = 20-digit zero-padded offset)
//! <base>.index      entries of 8 bytes: relative offset u32 BE, file position u32 BE
//! <base>.timeindex  entries of 12 bytes: max timestamp so far i64 BE, relative offset u32 BE
//! ```
//! Index files are written when a segment is sealed (rolled) or the log closes cleanly; the
//! active segment's indexes live in memory and are rebuilt by scanning on open.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zl_io::{Io, IoFile};
use zl_record::{self as record, BatchError, BatchInfo, BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD};

/// Largest partitionLeaderEpoch a stored batch may carry. This single-node log stamps every
/// batch with epoch 0; replication would raise this bound as epochs advance.
pub const LEADER_EPOCH_MAX: i32 = 0;

pub fn log_name(base: u64) -> String {
    format!("{base:020}.log")
}
pub fn index_name(base: u64) -> String {
    format!("{base:020}.index")
}
pub fn time_index_name(base: u64) -> String {
    format!("{base:020}.timeindex")
}

/// A sparse index entry: the batch whose first offset is `base + rel_offset` starts at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub rel_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    pub dir: PathBuf,
    pub file: Arc<dyn IoFile>,
    /// Bytes of whole, valid batches.
    pub size: u64,
    /// Offset after the last batch.
    pub next_offset: u64,
    pub max_timestamp: i64,
    pub index: Vec<IndexEntry>,
    pub time_index: Vec<TimeEntry>,
    bytes_since_index: u64,
    pub created: std::time::Instant,
    /// End of the reserved region of the file; `>= size`. Bytes in `[size, prealloc_end)` are
    /// allocated (fallocate or zeros) and read as zeros, so a later write there cannot fail
    /// with ENOSPC (group mode reserves before it accepts an append; see partition.rs).
    pub prealloc_end: u64,
    /// Group mode: end of the zeros the group-commit leader wrote ahead so that fdatasyncs
    /// overwrite written blocks instead of journaling allocation (see PERF_NOTES.md).
    pub zeroed_end: u64,
    /// `never` / `interval` modes: position below which writeback has been requested
    /// (`Partition::append`'s write-behind), so a roll's fdatasync finds little left to write.
    pub writeback_from: u64,
    /// Sealed segments: offsets may skip forward between batches (compaction removed the
    /// batches in between), but every batch lies below this offset (the next segment's base).
    /// `None` (the active segment, which the cleaner never touches): offsets are contiguous.
    pub gap_limit: Option<u64>,
    /// The last [`RECENT_BATCHES`] batch starts tracked, (base offset, position), newest last:
    /// a consumer at the tail fetches a batch appended since its last fetch and finds its
    /// position here ([`Segment::index_floor`]) instead of walking batch headers, one pread
    /// each, from the sparse index's entry (at 1,000 partitions of ~1-record batches that walk
    /// was the largest user-space cost of a Fetch).
    recent: std::collections::VecDeque<(u64, u64)>,
}

/// How many recent batch starts a segment remembers.
pub const RECENT_BATCHES: usize = 8;

/// Whether a batch `[base, last]` may follow offset `expected` in a segment with `gap_limit`
/// (see [`Segment::gap_limit`]); the reason if not. baseOffset is outside the CRC: these checks
/// are what catches a flipped bit there.
pub fn check_offsets(base: i64, last: i64, expected: u64, gap_limit: Option<u64>) -> Result<(), String> {
    if base < 0 || (base as u64) < expected {
        return Err(format!("offset goes backwards: expected at least {expected}, found {base}"));
    }
    match gap_limit {
        None if base as u64 != expected => Err(format!("offset discontinuity: expected {expected}, found {base}")),
        Some(limit) if last < 0 || last as u64 >= limit => {
            Err(format!("batch [{base}, {last}] reaches the next segment's base offset {limit}"))
        }
        _ => Ok(()),
    }
}

/// Read the 61-byte header of the batch at `position` of `file` (a segment's `.log`).
pub fn read_header(file: &dyn IoFile, position: u64, batch_bytes_max: usize) -> io::Result<Result<BatchInfo, BatchError>> {
    let mut hdr = [0u8; BATCH_HEADER_BYTES];
    let n = read_fully(file, &mut hdr, position)?;
    if n < BATCH_HEADER_BYTES {
        return Ok(Err(BatchError::Truncated { have: n, need: BATCH_HEADER_BYTES }));
    }
    Ok(record::parse_header_only(&hdr, batch_bytes_max))
}

/// The position of the batch of `file` holding `offset`, walking batch headers from the batch
/// boundary `from` up to `limit`; `None` if none below `limit` holds it.
pub fn find_position_from(
    file: &dyn IoFile,
    offset: u64,
    from: u64,
    limit: u64,
    batch_bytes_max: usize,
) -> io::Result<Option<u64>> {
    let mut pos = from;
    while pos < limit {
        match read_header(file, pos, batch_bytes_max)? {
            Ok(info) => {
                if info.last_offset() as u64 >= offset {
                    return Ok(Some(pos));
                }
                pos += info.size_bytes as u64;
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
    Ok(None)
}

/// Outcome of scanning a segment's bytes.
#[derive(Debug)]
pub struct ScanEnd {
    /// Position after the last valid batch.
    pub valid_end: u64,
    pub next_offset: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<(u64, String)>,
}

/// A batch a segment cannot track: its offsets relative to the segment's base, or its position,
/// do not fit the indexes' u32 fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "batch at offsets {base_offset}..={last_offset} (position {position}) cannot be represented in the segment based at {segment_base}: relative offsets and positions must fit in 32 bits"
)]
pub struct Unrepresentable {
    pub segment_base: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub position: u64,
}

impl Segment {
    pub fn create(io: &dyn Io, dir: &Path, base_offset: u64) -> io::Result<Segment> {
        let file = io.open(&dir.join(log_name(base_offset)), true)?;
        file.set_len(0)?;
        Ok(Segment::with_file(dir, base_offset, file))
    }

    /// A segment of `file` (empty so far in memory: the caller tracks its batches).
    pub fn with_file(dir: &Path, base_offset: u64, file: Arc<dyn IoFile>) -> Segment {
        Segment {
            base_offset,
            dir: dir.to_path_buf(),
            file,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
            recent: std::collections::VecDeque::new(),
            created: std::time::Instant::now(),
            prealloc_end: 0,
            zeroed_end: 0,
            writeback_from: 0,
            gap_limit: None,
        }
    }

    /// Open an existing segment without reading it (the caller scans or loads indexes).
    pub fn open_existing(io: &dyn Io, dir: &Path, base_offset: u64) -> io::Result<Segment> {
        let file = io.open(&dir.join(log_name(base_offset)), false)?;
        Ok(Segment::with_file(dir, base_offset, file))
    }

    /// Whether a batch whose offsets end at `last_offset` can be tracked here: its offsets
    /// relative to the segment's base fit the indexes' u32 (Kafka's
    /// `LogSegment.canConvertToRelativeOffset`; a batch that does not fit needs a new segment,
    /// see `LocalLog::needs_roll`).
    pub fn can_hold(&self, last_offset: u64) -> bool {
        last_offset.checked_sub(self.base_offset).is_some_and(|rel| rel <= u32::MAX as u64)
    }

    /// Record a batch that now occupies `[position, position + info.size_bytes)`. Refused (and
    /// nothing recorded) when its offsets relative to the base, or its position, do not fit the
    /// indexes' u32 fields.
    pub fn track_batch(&mut self, position: u64, info: &BatchInfo, interval: u32) -> Result<(), Unrepresentable> {
        let base = info.base_offset as u64;
        if info.base_offset < 0 || base < self.base_offset || !self.can_hold(info.last_offset() as u64) || position > u32::MAX as u64 {
            return Err(Unrepresentable { segment_base: self.base_offset, base_offset: info.base_offset, last_offset: info.last_offset(), position });
        }
        let rel = (base - self.base_offset) as u32;
        if self.index.is_empty() || self.bytes_since_index >= interval as u64 {
            self.index.push(IndexEntry { rel_offset: rel, position: position as u32 });
            if info.max_timestamp > self.time_index.last().map_or(i64::MIN, |t| t.timestamp) {
                self.time_index.push(TimeEntry { timestamp: info.max_timestamp, rel_offset: rel });
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += info.size_bytes as u64;
        if self.recent.len() == RECENT_BATCHES {
            self.recent.pop_front();
        }
        self.recent.push_back((base, position));
        self.size = position + info.size_bytes as u64;
        self.prealloc_end = self.prealloc_end.max(self.size);
        self.next_offset = info.base_offset as u64 + info.offset_count();
        self.max_timestamp = self.max_timestamp.max(info.max_timestamp);
        Ok(())
    }

    /// Position of the index entry at or before `offset` (a batch start at or before the batch
    /// holding `offset`).
    pub fn index_floor(&self, offset: u64) -> u64 {
        let rel = offset.saturating_sub(self.base_offset) as u32;
        let sparse = match self.index.partition_point(|e| e.rel_offset <= rel) {
            0 => 0,
            i => self.index[i - 1].position as u64,
        };
        // A recent batch starting at or below `offset` is a closer start (both are batch starts
        // at or before the batch holding it).
        match self.recent.iter().rev().find(|&&(base, pos)| base <= offset && pos < self.size) {
            Some(&(_, pos)) => pos.max(sparse),
            None => sparse,
        }
    }

    /// Largest indexed batch-start position that is `<= limit` and `> after`, if any.
    pub fn index_boundary_at_most(&self, after: u64, limit: u64) -> Option<u64> {
        let i = self.index.partition_point(|e| (e.position as u64) <= limit);
        if i == 0 {
            return None;
        }
        let p = self.index[i - 1].position as u64;
        (p > after).then_some(p)
    }

    /// Read the 61-byte header of the batch at `position`.
    pub fn read_header(&self, position: u64, batch_bytes_max: usize) -> io::Result<Result<BatchInfo, BatchError>> {
        read_header(&*self.file, position, batch_bytes_max)
    }

    /// Cut the zero-filled tail off (sealing or clean close): a sealed segment ends exactly
    /// after its last batch. Durable with the next `sync_data`.
    pub fn trim_prealloc(&mut self) -> io::Result<()> {
        if self.prealloc_end.max(self.zeroed_end) > self.size {
            self.file.set_len(self.size)?;
            self.prealloc_end = self.size;
            self.zeroed_end = self.size;
        }
        Ok(())
    }

    /// Forget the in-memory indexes (before a rebuilding scan).
    pub fn reset_indexes(&mut self) {
        self.recent.clear();
        self.index.clear();
        self.time_index.clear();
        self.bytes_since_index = 0;
        self.max_timestamp = -1;
    }

    /// Call `f` with the header of every batch in `[0, end)`, reading headers only
    /// (used to rebuild producer state from segments whose checkpointed index is trusted).
    /// Batches must tile `[0, end)` exactly with
    /// offsets as [`Segment::gap_limit`] allows, or this fails with `InvalidData`.
    ///
    /// A header the page cache holds is read alone. Otherwise small batches are read in windows
    /// of [`WALK_WINDOW_BYTES`] (one sequential read covers many headers; a 61-byte read per
    /// batch is one random disk read each when the cache is cold); after a batch of at least a
    /// quarter window, only the header is read.
    pub fn walk_headers(&self, end: u64, batch_bytes_max: usize, mut f: impl FnMut(&BatchInfo)) -> io::Result<()> {
        let bad = |pos: u64, why: String| io::Error::new(io::ErrorKind::InvalidData, format!("batch at {pos}: {why}"));
        let mut pos = 0;
        let mut expected = self.base_offset;
        let mut window = vec![0u8; WALK_WINDOW_BYTES.min(end as usize)];
        // The file bytes `window[..have]` hold, from position `at`.
        let (mut at, mut have) = (0u64, 0usize);
        let mut last_size = 0usize;
        while pos < end {
            if pos < at || pos + BATCH_HEADER_BYTES as u64 > at + have as u64 {
                // From memory when the page cache has it (no copy of the rest of the window);
                // else a window at once.
                let hdr = BATCH_HEADER_BYTES.min((end - pos) as usize);
                at = pos;
                have = match self.file.read_cached(&mut window[..hdr], pos)? {
                    Some(n) if n == hdr => n,
                    _ => {
                        let want = if last_size >= WALK_WINDOW_BYTES / 4 { BATCH_HEADER_BYTES } else { WALK_WINDOW_BYTES };
                        let len = want.min((end - pos) as usize).min(window.len());
                        read_fully(&*self.file, &mut window[..len], pos)?
                    }
                };
            }
            let from = (pos - at) as usize;
            let info = record::parse_header_only(&window[from..have], batch_bytes_max).map_err(|e| bad(pos, e.to_string()))?;
            last_size = info.size_bytes;
            check_offsets(info.base_offset, info.last_offset(), expected, self.gap_limit).map_err(|why| bad(pos, why))?;
            if pos + info.size_bytes as u64 > end {
                return Err(bad(pos, format!("batch of {} bytes runs past the end {end}", info.size_bytes)));
            }
            f(&info);
            expected = info.base_offset as u64 + info.offset_count();
            pos += info.size_bytes as u64;
        }
        Ok(())
    }

    /// Find the position of the batch containing `offset` (scanning headers from the index
    /// floor). Returns `None` when `offset >= next_offset`.
    pub fn find_position(&self, offset: u64, limit: u64, batch_bytes_max: usize) -> io::Result<Option<u64>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        find_position_from(&*self.file, offset, self.index_floor(offset), limit, batch_bytes_max)
    }

    /// Scan batches from `start` (which must be a batch boundary holding `start_offset`),
    /// rebuilding the in-memory indexes. With `check_crc`, every batch's CRC is verified.
    /// Stops at the first invalid batch or one whose offsets [`Segment::gap_limit`] refuses
    /// (offsets skip forward only in a sealed segment: compaction removes batches and keeps the
    /// others' offsets).
    pub fn scan(
        &mut self,
        start: u64,
        start_offset: u64,
        check_crc: bool,
        batch_bytes_max: usize,
        interval: u32,
        mut on_batch: impl FnMut(&BatchInfo),
    ) -> io::Result<ScanEnd> {
        let file_len = self.file.len()?;
        let mut pos = start;
        let mut expected = start_offset;
        self.recent.clear();
        self.size = start;
        self.next_offset = start_offset;
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_pos = 0u64; // file position of buf[0]
        let chunk = 1usize << 20;
        let stopped = loop {
            if pos == file_len {
                break None;
            }
            // Ensure the header is buffered.
            let need_hdr = (pos - buf_pos) as usize + BATCH_LOG_OVERHEAD;
            if pos < buf_pos || need_hdr > buf.len() {
                buf_pos = pos;
                buf.clear();
                let want = chunk.min((file_len - pos) as usize);
                buf.resize(want, 0);
                let n = read_fully(&*self.file, &mut buf, pos)?;
                buf.truncate(n);
            }
            let rel = (pos - buf_pos) as usize;
            let Some(size) = record::declared_size(&buf[rel..]) else {
                break Some((pos, "torn batch header".to_string()));
            };
            if size < BATCH_HEADER_BYTES as i64 || size > batch_bytes_max as i64 {
                break Some((pos, BatchError::BadLength(size).to_string()));
            }
            let size = size as usize;
            if pos + size as u64 > file_len {
                break Some((pos, format!("torn batch: {} of {} bytes present", file_len - pos, size)));
            }
            if rel + size > buf.len() {
                buf_pos = pos;
                buf.clear();
                let want = size.max(chunk).min((file_len - pos) as usize);
                buf.resize(want, 0);
                let n = read_fully(&*self.file, &mut buf, pos)?;
                buf.truncate(n);
            }
            let rel = (pos - buf_pos) as usize;
            let bytes = &buf[rel..rel + size];
            let res = if check_crc { record::validate(bytes, batch_bytes_max) } else { record::parse_header(bytes, batch_bytes_max) };
            let info = match res {
                Ok(i) => i,
                Err(e) => break Some((pos, e.to_string())),
            };
            // partitionLeaderEpoch is outside the CRC: a flipped bit there is caught only by
            // knowing which epochs this log can hold.
            let epoch = i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
            if !(-1..=LEADER_EPOCH_MAX).contains(&epoch) {
                break Some((pos, format!("partition leader epoch {epoch} out of range")));
            }
            if let Err(why) = check_offsets(info.base_offset, info.last_offset(), expected, self.gap_limit) {
                break Some((pos, why));
            }
            if let Err(e) = self.track_batch(pos, &info, interval) {
                break Some((pos, e.to_string()));
            }
            on_batch(&info);
            expected = self.next_offset;
            pos += size as u64;
        };
        Ok(ScanEnd { valid_end: pos, next_offset: expected, stopped })
    }

    /// Write `.index` and `.timeindex` and sync them (called when sealing or closing).
    pub fn write_indexes(&self, io: &dyn Io) -> io::Result<()> {
        let mut idx = Vec::with_capacity(self.index.len() * 8);
        for e in &self.index {
            idx.extend_from_slice(&e.rel_offset.to_be_bytes());
            idx.extend_from_slice(&e.position.to_be_bytes());
        }
        let mut tidx = Vec::with_capacity(self.time_index.len() * 12);
        for e in &self.time_index {
            tidx.extend_from_slice(&e.timestamp.to_be_bytes());
            tidx.extend_from_slice(&e.rel_offset.to_be_bytes());
        }
        for (name, mut bytes) in [(index_name(self.base_offset), idx), (time_index_name(self.base_offset), tidx)] {
            let crc = crc32c::crc32c(&bytes);
            bytes.extend_from_slice(&INDEX_FOOTER_MAGIC.to_be_bytes());
            bytes.extend_from_slice(&crc.to_be_bytes());
            let f = io.open(&self.dir.join(name), true)?;
            f.set_len(0)?;
            f.write_at(&bytes, 0)?;
            f.sync_data()?;
        }
        Ok(())
    }

    /// Load `.index`/`.timeindex` for a sealed segment of `file_len` bytes. Returns false (and
    /// leaves the indexes empty) when they are missing or inconsistent, so the caller rebuilds.
    pub fn load_indexes(&mut self, io: &dyn Io, file_len: u64) -> io::Result<bool> {
        self.recent.clear();
        self.index.clear();
        self.time_index.clear();
        let read_all = |name: String| -> io::Result<Option<Vec<u8>>> {
            let path = self.dir.join(name);
            if !io.exists(&path) {
                return Ok(None);
            }
            let f = io.open(&path, false)?;
            let mut b = vec![0u8; f.len()? as usize];
            f.read_exact_at(&mut b, 0)?;
            Ok(Some(b))
        };
        let (Some(idx), Some(tidx)) = (read_all(index_name(self.base_offset))?, read_all(time_index_name(self.base_offset))?) else {
            return Ok(false);
        };
        let (Some(idx), Some(tidx)) = (strip_footer(&idx), strip_footer(&tidx)) else {
            return Ok(false);
        };
        // An empty index is no checkpoint (the caller needs its last entry): rebuild by scanning.
        if idx.len() % 8 != 0 || tidx.len() % 12 != 0 || idx.is_empty() {
            return Ok(false);
        }
        // The first entry always describes the segment's first batch (position 0; its offset
        // is above the segment's base when compaction removed the first records).
        if idx.len() >= 8 && idx[4..8] != [0u8; 4] {
            return Ok(false);
        }
        let mut last: Option<IndexEntry> = None;
        for c in idx.chunks_exact(8) {
            let e = IndexEntry {
                rel_offset: u32::from_be_bytes(c[0..4].try_into().expect("4")),
                position: u32::from_be_bytes(c[4..8].try_into().expect("4")),
            };
            if e.position as u64 >= file_len || last.is_some_and(|l| l.rel_offset >= e.rel_offset || l.position >= e.position) {
                self.index.clear();
                return Ok(false);
            }
            last = Some(e);
            self.index.push(e);
        }
        for c in tidx.chunks_exact(12) {
            self.time_index.push(TimeEntry {
                timestamp: i64::from_be_bytes(c[0..8].try_into().expect("8")),
                rel_offset: u32::from_be_bytes(c[8..12].try_into().expect("4")),
            });
        }
        Ok(true)
    }

    /// Remove this segment's files.
    pub fn delete_files(&self, io: &dyn Io) -> io::Result<()> {
        io.remove_file(&self.dir.join(log_name(self.base_offset)))?;
        for name in [index_name(self.base_offset), time_index_name(self.base_offset)] {
            let p = self.dir.join(name);
            if io.exists(&p) {
                io.remove_file(&p)?;
            }
        }
        Ok(())
    }

    /// Earliest offset whose batch may hold a timestamp >= `ts`, from the time index.
    pub fn time_floor_position(&self, ts: i64) -> u64 {
        // Entries hold the running max timestamp; the last entry with timestamp < ts bounds
        // from below where the first batch with max timestamp >= ts can be.
        let i = self.time_index.partition_point(|e| e.timestamp < ts);
        if i == 0 {
            return 0;
        }
        self.index_floor(self.base_offset + self.time_index[i - 1].rel_offset as u64)
    }
}

/// Trailer of `.index`/`.timeindex` files: magic, then CRC-32C of the entries. A torn or
/// bit-rotten index fails the check and is rebuilt from the log.
const INDEX_FOOTER_MAGIC: u32 = 0x4958_0001;
/// [`Segment::walk_headers`] reads small batches' headers this many bytes at a time.
const WALK_WINDOW_BYTES: usize = 256 << 10;

fn strip_footer(b: &[u8]) -> Option<&[u8]> {
    let body_len = b.len().checked_sub(8)?;
    let (body, footer) = b.split_at(body_len);
    let magic = u32::from_be_bytes(footer[0..4].try_into().ok()?);
    let crc = u32::from_be_bytes(footer[4..8].try_into().ok()?);
    (magic == INDEX_FOOTER_MAGIC && crc32c::crc32c(body) == crc).then_some(body)
}

/// Read as many bytes as available into `buf` at `pos` (short only at end of file).
pub fn read_fully(file: &dyn IoFile, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], pos + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

#[cfg(test)]
mod offset_tests {
    use super::check_offsets;

    #[test]
    fn offsets_skip_forward_only_in_a_sealed_segment_and_only_below_the_next_base() {
        // Active segment: contiguous.
        assert!(check_offsets(10, 12, 10, None).is_ok());
        assert!(check_offsets(11, 12, 10, None).unwrap_err().contains("discontinuity"));
        // Sealed (compacted): a gap forward, below the next segment's base.
        assert!(check_offsets(15, 17, 10, Some(20)).is_ok());
        assert!(check_offsets(15, 20, 10, Some(20)).unwrap_err().contains("next segment"));
        // A flipped high bit of baseOffset is caught either way.
        assert!(check_offsets(10 | (1 << 60), (10 | (1 << 60)) + 2, 10, Some(20)).is_err());
        // Never backwards.
        assert!(check_offsets(9, 9, 10, Some(20)).unwrap_err().contains("backwards"));
        assert!(check_offsets(-1, 0, 0, Some(20)).is_err());
    }
}

#[cfg(test)]
mod track_tests {
    use super::*;
    use zl_io::SimIo;

    fn info(base_offset: i64, last_offset_delta: i32) -> BatchInfo {
        BatchInfo {
            base_offset,
            size_bytes: 100,
            attributes: 0,
            last_offset_delta,
            base_timestamp: 1,
            max_timestamp: 1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: last_offset_delta + 1,
        }
    }

    #[test]
    fn track_batch_refuses_what_the_u32_index_fields_cannot_represent() {
        let io = SimIo::new();
        let dir = Path::new("/d");
        io.create_dir_all(dir).unwrap();
        let base = 1000u64;
        let mut seg = Segment::create(&io, dir, base).unwrap();
        let max = base + u32::MAX as u64;
        assert!(seg.can_hold(max) && !seg.can_hold(max + 1) && !seg.can_hold(base - 1));
        // Below the base, past u32 relative offsets (by its base or by its last offset), at a
        // position past u32: refused, and nothing recorded.
        for (b, delta, pos) in [(base as i64 - 1, 0, 0), (max as i64 + 1, 0, 0), (max as i64, 1, 0), (base as i64, 0, 1 << 32), (-1, 0, 0)] {
            let e = seg.track_batch(pos, &info(b, delta), 256).unwrap_err();
            assert_eq!((e.segment_base, e.base_offset), (base, b));
            assert_eq!((seg.size, seg.next_offset, seg.index.len()), (0, base, 0), "a refused batch is not recorded");
        }
        // The last representable offsets are accepted.
        seg.track_batch(0, &info(base as i64, i32::MAX - 1), 256).unwrap();
        seg.track_batch(100, &info(max as i64, 0), 0).unwrap();
        assert_eq!(seg.next_offset, max + 1);
        assert_eq!(seg.index.last().map(|e| e.rel_offset), Some(u32::MAX));
    }

    #[test]
    fn index_floor_finds_recent_batches_exactly_and_falls_back_to_the_sparse_index() {
        let io = SimIo::new();
        let dir = Path::new("/d");
        io.create_dir_all(dir).unwrap();
        let mut seg = Segment::create(&io, dir, 0).unwrap();
        // 50 batches of 2 offsets and 100 bytes each, a sparse index entry every 1,000 bytes.
        for b in 0..50u64 {
            seg.track_batch(b * 100, &info(b as i64 * 2, 1), 1_000).unwrap();
        }
        let sparse = |off: u64| seg.index.iter().rev().find(|e| e.rel_offset as u64 <= off).map_or(0, |e| e.position as u64);
        for off in 0..100u64 {
            let exact = off / 2 * 100;
            let want = if off / 2 >= 50 - RECENT_BATCHES as u64 { exact } else { sparse(off) };
            assert_eq!(seg.index_floor(off), want, "offset {off}");
            assert!(seg.index_floor(off) <= exact);
        }
        // Forgotten with the indexes (a rebuilding scan tracks them again).
        seg.reset_indexes();
        assert_eq!(seg.index_floor(99), 0);
    }
}
