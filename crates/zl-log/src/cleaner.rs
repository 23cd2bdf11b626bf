//! Log compaction (`cleanup.policy=compact` or `compact,delete`): a background cleaner that
//! keeps the latest record of each key in the sealed segments.
//!
//! One pass over a partition ([`clean_partition`]):
//! 1. **Map.** Reads the sealed segments in order (never the active one), building key → latest
//!    offset, bounded by `LogConfig::cleaner_map_bytes`: when the map is full, the pass cleans only
//!    the segments read completely before that (never aborts). The map also notes each idempotent
//!    producer's last batch.
//! 2. **Rewrite.** Each of those segments is copied into `<base>.log.cleaned` keeping a record
//!    when its key's latest offset is its own (records without a key, and the segment's last
//!    record so that segments stay contiguous, are kept; that last record, when a later one of
//!    its key supersedes it, is kept as a tombstone of its key, so that it can never bring back
//!    a value a later tombstone deleted once that tombstone is gone), and dropping a
//!    latest record that is a tombstone (null value) once its timestamp is older than
//!    `delete.retention.ms`. Records keep their offsets: a batch whose records all survive is
//!    copied byte for byte; otherwise each run of consecutive surviving offsets becomes one batch
//!    (same codec, producer fields and attributes; base sequence advanced to the run's first
//!    record), so offsets stay increasing with gaps *between* batches only, and every batch keeps
//!    the invariants a produced one has (record count = lastOffsetDelta + 1, offset deltas
//!    0, 1, …). Control and transactional batches, and the last batch of each idempotent
//!    producer (the producer state recovery rebuilds from it), are copied untouched.
//! 3. **Swap.** The copy is fsynced, then [`Partition::swap_cleaned`] renames it over the
//!    segment (old indexes removed first, directory fsyncs around the rename, new indexes last).
//!    A crash at any point leaves the old segment or the new one whole; an unfinished `.cleaned`
//!    file is removed when the partition opens. A segment is never left empty (its last record
//!    stays), so compaction never moves the log start offset.
//!
//! I/O (reads and writes) runs at `LogConfig::cleaner_rate_mib` through the scrub's throttle.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::manager::LogManager;
use super::partition::Partition;
use super::scrub::Throttle;
use super::segment::{read_fully, Segment};
use zl_io::IoFile;
use zl_record::{self as record, build, BatchInfo, BATCH_HEADER_BYTES};

/// Suffix of a compaction's output before it is renamed over its segment.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Bytes a map entry costs beyond its key (hash table slot, key vector, offset).
const MAP_ENTRY_OVERHEAD: usize = 64;
/// The cleaner thread looks for work this often.
const CLEANER_TICK: Duration = Duration::from_secs(1);

/// Limits of one cleaning pass.
#[derive(Debug, Clone)]
pub struct CleanLimits {
    /// Read + write rate, bytes per second (`u64::MAX` = unthrottled).
    pub rate_bytes: u64,
    /// Memory bound of the key map.
    pub map_bytes_max: usize,
    pub batch_bytes_max: usize,
    pub index_interval_bytes: u32,
}

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanStats {
    /// Sealed segments the pass covered (read completely into the map).
    pub segments_cleaned: usize,
    /// Segments replaced by a compacted copy (or deleted, left empty).
    pub segments_swapped: usize,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// The map filled before the last sealed segment: a later pass continues.
    pub map_full: bool,
    /// Earliest time (ms) a tombstone kept by this pass becomes removable.
    pub next_tombstone_due_ms: Option<i64>,
    /// End offset of the sealed segments the pass covered.
    pub cleaned_end: u64,
}

/// One record, as parsed from a batch's (decompressed) records section.
struct Rec<'a> {
    attributes: u8,
    timestamp: i64,
    offset: u64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// The header count and headers, as stored.
    headers: &'a [u8],
}

fn bytes_field<'a>(b: &'a [u8], at: &mut usize, end: usize) -> Option<Option<&'a [u8]>> {
    let n = record::read_varint_at(b, at, 5)?;
    if n < 0 {
        return Some(None);
    }
    let stop = at.checked_add(n as usize).filter(|&s| s <= end)?;
    let v = &b[*at..stop];
    *at = stop;
    Some(Some(v))
}

/// The records of a batch (header `info`) from its plain records section.
fn parse_records<'a>(plain: &'a [u8], info: &BatchInfo) -> Result<Vec<Rec<'a>>, String> {
    let mut out = Vec::with_capacity(info.record_count.max(0) as usize);
    let mut at = 0;
    for i in 0..info.record_count {
        let bad = || format!("record {i} of the batch at offset {} does not parse", info.base_offset);
        let len = record::read_varint_at(plain, &mut at, 5).filter(|&l| l >= 0).ok_or_else(bad)? as usize;
        let end = at.checked_add(len).filter(|&e| e <= plain.len()).ok_or_else(bad)?;
        let attributes = *plain.get(at).ok_or_else(bad)?;
        at += 1;
        let ts_delta = record::read_varint_at(plain, &mut at, 10).ok_or_else(bad)?;
        let off_delta = record::read_varint_at(plain, &mut at, 5).ok_or_else(bad)?;
        let key = bytes_field(plain, &mut at, end).ok_or_else(bad)?;
        let value = bytes_field(plain, &mut at, end).ok_or_else(bad)?;
        if at > end || off_delta < 0 {
            return Err(bad());
        }
        out.push(Rec {
            attributes,
            timestamp: info.base_timestamp.saturating_add(ts_delta),
            offset: (info.base_offset + off_delta) as u64,
            key,
            value,
            headers: &plain[at..end],
        });
        at = end;
    }
    Ok(out)
}

/// A stored record: offset, key, value.
pub type KeyedRecord = (u64, Option<Vec<u8>>, Option<Vec<u8>>);

/// The records of the complete, validated batch `batch` (decompressed if need be): offset, key,
/// value. For tests and tools.
pub fn records_of(batch: &[u8], batch_bytes_max: usize) -> Result<Vec<KeyedRecord>, String> {
    let info = record::validate(batch, batch_bytes_max).map_err(|e| e.to_string())?;
    let plain = record::records_plain(batch, &info).map_err(|e| e.to_string())?;
    let recs = parse_records(&plain, &info)?;
    Ok(recs.into_iter().map(|r| (r.offset, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec))).collect())
}

/// Whether a record of the batches `buf` has no key (refused on a compacted topic). A batch
/// that does not parse is left to the log's validation (false here).
pub fn has_null_key(buf: &[u8], batch_bytes_max: usize) -> bool {
    let mut at = 0;
    while at < buf.len() {
        let Ok(info) = record::parse_header(&buf[at..], batch_bytes_max) else { return false };
        let batch = &buf[at..at + info.size_bytes];
        if compactable(&info) {
            let Ok(plain) = record::records_plain(batch, &info) else { return false };
            let Ok(recs) = parse_records(&plain, &info) else { return false };
            if recs.iter().any(|r| r.key.is_none()) {
                return true;
            }
        }
        at += info.size_bytes;
    }
    false
}

/// A batch holding `recs` (consecutive offsets), with `orig`'s producer fields and codec.
fn rebuild_batch(orig: &[u8], info: &BatchInfo, recs: &[&Rec<'_>]) -> Vec<u8> {
    let first = recs[0];
    let base_ts = recs.iter().map(|r| r.timestamp).min().unwrap_or(first.timestamp);
    let mut plain = Vec::new();
    let mut body = Vec::new();
    let mut max_ts = base_ts;
    for (i, r) in recs.iter().enumerate() {
        body.clear();
        body.push(r.attributes);
        record::put_varint(&mut body, r.timestamp - base_ts);
        record::put_varint(&mut body, i as i64);
        for f in [r.key, r.value] {
            match f {
                Some(b) => {
                    record::put_varint(&mut body, b.len() as i64);
                    body.extend_from_slice(b);
                }
                None => record::put_varint(&mut body, -1),
            }
        }
        body.extend_from_slice(r.headers);
        record::put_varint(&mut plain, body.len() as i64);
        plain.extend_from_slice(&body);
        max_ts = max_ts.max(r.timestamp);
    }
    let codec = info.compression();
    let payload = if codec == 0 { plain } else { build::compress(codec, &plain) };
    let mut out = orig[..BATCH_HEADER_BYTES].to_vec();
    out.extend_from_slice(&payload);
    let n = recs.len() as i32;
    out[0..8].copy_from_slice(&(first.offset as i64).to_be_bytes());
    let batch_length = (out.len() - record::BATCH_LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[23..27].copy_from_slice(&(n - 1).to_be_bytes());
    out[27..35].copy_from_slice(&base_ts.to_be_bytes());
    // LogAppendTime: the batch's max timestamp is the append time; keep it.
    if info.attributes & record::ATTR_LOG_APPEND_TIME == 0 {
        out[35..43].copy_from_slice(&max_ts.to_be_bytes());
    }
    if info.base_sequence >= 0 {
        let seq = info.base_sequence.wrapping_add((first.offset - info.base_offset as u64) as i32);
        out[53..57].copy_from_slice(&seq.to_be_bytes());
    }
    out[57..61].copy_from_slice(&n.to_be_bytes());
    let crc = record::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Walk the batches of `[0, size)` of `file` (CRC-checked): `f(batch bytes, header, throttle)`.
/// Ok(false) when stopped.
fn for_each_batch(
    file: &dyn IoFile,
    size: u64,
    lim: &CleanLimits,
    throttle: &mut Throttle,
    stop: &AtomicBool,
    mut f: impl FnMut(&[u8], &BatchInfo, &mut Throttle) -> io::Result<()>,
) -> io::Result<bool> {
    let bad = |pos: u64, why: String| io::Error::new(io::ErrorKind::InvalidData, format!("batch at {pos}: {why}"));
    let mut pos = 0u64;
    let mut buf = Vec::new();
    while pos < size {
        if stop.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut hdr = [0u8; BATCH_HEADER_BYTES];
        if read_fully(file, &mut hdr, pos)? < BATCH_HEADER_BYTES {
            return Err(bad(pos, "truncated header".into()));
        }
        let info = record::parse_header_only(&hdr, lim.batch_bytes_max).map_err(|e| bad(pos, e.to_string()))?;
        if pos + info.size_bytes as u64 > size {
            return Err(bad(pos, "runs past the segment's end".into()));
        }
        buf.resize(info.size_bytes, 0);
        if read_fully(file, &mut buf, pos)? < info.size_bytes {
            return Err(bad(pos, "truncated".into()));
        }
        // A damaged batch is never rewritten as a valid one: the scrub and --repair handle it.
        record::validate(&buf, lim.batch_bytes_max).map_err(|e| bad(pos, e.to_string()))?;
        throttle.read(info.size_bytes, stop);
        f(&buf, &info, throttle)?;
        pos += info.size_bytes as u64;
    }
    Ok(true)
}

/// Whether the batch's records are subject to compaction (others are copied untouched).
fn compactable(info: &BatchInfo) -> bool {
    !info.is_control() && !info.is_transactional()
}

/// One cleaning pass over `p`'s sealed segments (see the module documentation). `now_ms` and
/// `delete_retention_ms` decide which tombstones go. Returns early (Ok, partial) when `stop`
/// is set. An I/O error leaves every segment whole (old or new).
pub fn clean_partition(
    p: &Partition,
    now_ms: i64,
    delete_retention_ms: u64,
    lim: &CleanLimits,
    stop: &AtomicBool,
) -> io::Result<CleanStats> {
    let mut stats = CleanStats::default();
    let sealed = p.sealed_segments();
    let mut throttle = Throttle { rate: lim.rate_bytes.max(1), started: Instant::now(), bytes: 0 };
    // 1. The map: key → latest offset; producer id → base offset of its last batch.
    let mut map: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut map_bytes = 0usize;
    let mut last_batch: HashMap<i64, u64> = HashMap::new();
    let mut covered = 0;
    'segments: for (_, file, size, _) in &sealed {
        let mut full = false;
        let done = for_each_batch(&**file, *size, lim, &mut throttle, stop, |batch, info, _| {
            if full {
                return Ok(());
            }
            if info.producer_id >= 0 {
                last_batch.insert(info.producer_id, info.base_offset as u64);
            }
            if !compactable(info) {
                return Ok(());
            }
            let plain = record::records_plain(batch, info).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let recs = parse_records(&plain, info).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            for r in recs {
                let Some(k) = r.key else { continue };
                if let Some(o) = map.get_mut(k) {
                    *o = r.offset;
                } else {
                    if map_bytes + k.len() + MAP_ENTRY_OVERHEAD > lim.map_bytes_max {
                        // Entries already in the map stay true (a later record of their key
                        // exists); this segment is not cleaned in this pass.
                        full = true;
                        return Ok(());
                    }
                    map_bytes += k.len() + MAP_ENTRY_OVERHEAD;
                    map.insert(k.to_vec(), r.offset);
                }
            }
            Ok(())
        })?;
        if !done {
            return Ok(stats);
        }
        if full {
            stats.map_full = true;
            break 'segments;
        }
        covered += 1;
    }
    stats.segments_cleaned = covered;
    // 2. Rewrite each covered segment.
    let horizon = now_ms.saturating_sub(delete_retention_ms.min(i64::MAX as u64) as i64);
    for (base, file, size, path) in sealed.into_iter().take(covered) {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let cleaned_path = dir.join(format!("{}{CLEANED_SUFFIX}", super::segment::log_name(base)));
        let io = p.io();
        let out_file = io.open(&cleaned_path, true)?;
        out_file.set_len(0)?;
        let mut new = Segment::with_file(&dir, base, out_file.clone());
        let mut removed = 0u64;
        let mut tombstones = 0u64;
        let mut at = 0u64;
        let mut next_due: Option<i64> = None;
        let mut read_bytes = 0u64;
        let mut emptied = 0u64;
        let done = for_each_batch(&*file, size, lim, &mut throttle, stop, |batch, info, throttle| {
            read_bytes += batch.len() as u64;
            // The segment's last record is always kept: the segment still ends at the next
            // one's base, so a segment missing from the middle of the log is still detected.
            let seg_last = (read_bytes == size).then(|| info.last_offset() as u64);
            let keep_whole = !compactable(info) || last_batch.get(&info.producer_id) == Some(&(info.base_offset as u64));
            let mut outs: Vec<Vec<u8>> = Vec::new();
            if keep_whole {
                outs.push(batch.to_vec());
            } else {
                let plain = record::records_plain(batch, info).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let recs = parse_records(&plain, info).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let append_time = info.attributes & record::ATTR_LOG_APPEND_TIME != 0;
                // The segment's last record, superseded by a later record of its key, stays as a
                // tombstone of its key: replayed, it changes nothing (the later record follows);
                // kept as it was, it would bring the value back once a later tombstone is removed.
                let last_emptied = recs.iter().find(|r| seg_last == Some(r.offset)).and_then(|r| {
                    let k = r.key?;
                    let superseded = map.get(k).is_some_and(|&latest| latest > r.offset);
                    (superseded && r.value.is_some()).then_some(Rec { value: None, ..*r })
                });
                let mut keep: Vec<&Rec<'_>> = Vec::with_capacity(recs.len());
                for r in &recs {
                    if seg_last == Some(r.offset) {
                        match &last_emptied {
                            Some(t) => {
                                emptied += 1;
                                keep.push(t);
                            }
                            None => keep.push(r),
                        }
                        continue;
                    }
                    let Some(k) = r.key else {
                        keep.push(r);
                        continue;
                    };
                    if map.get(k).is_some_and(|&latest| latest > r.offset) {
                        removed += 1;
                        continue;
                    }
                    if r.value.is_none() {
                        let ts = if append_time { info.max_timestamp } else { r.timestamp };
                        if ts < horizon {
                            tombstones += 1;
                            removed += 1;
                            continue;
                        }
                        let due = ts.saturating_add(delete_retention_ms.min(i64::MAX as u64) as i64);
                        next_due = Some(next_due.map_or(due, |d: i64| d.min(due)));
                    }
                    keep.push(r);
                }
                if keep.len() == recs.len() && last_emptied.is_none() {
                    outs.push(batch.to_vec());
                } else {
                    // Runs of consecutive offsets.
                    let mut start = 0;
                    for i in 1..=keep.len() {
                        if i == keep.len() || keep[i].offset != keep[i - 1].offset + 1 {
                            outs.push(rebuild_batch(batch, info, &keep[start..i]));
                            start = i;
                        }
                    }
                }
            }
            for b in outs {
                let bi = record::validate(&b, lim.batch_bytes_max).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                out_file.write_at(&b, at)?;
                throttle.read(b.len(), stop);
                new.track_batch(at, &bi, lim.index_interval_bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                at += b.len() as u64;
            }
            Ok(())
        });
        let done = match done {
            Ok(d) => d,
            Err(e) => {
                let _ = io.remove_file(&cleaned_path);
                return Err(e);
            }
        };
        if !done || (removed == 0 && emptied == 0) {
            // Stopped, or nothing to remove: the segment stays as it is.
            io.remove_file(&cleaned_path)?;
            if !done {
                return Ok(stats);
            }
            continue;
        }
        // Never empty (the segment's last record stays): the log start offset never moves.
        if let Err(e) = out_file.sync_data() {
            let _ = io.remove_file(&cleaned_path);
            return Err(e);
        }
        let swapped = p.swap_cleaned(base, &file, &cleaned_path, new)?;
        if swapped {
            stats.segments_swapped += 1;
            stats.records_removed += removed;
            stats.tombstones_removed += tombstones;
        }
        if let Some(d) = next_due {
            stats.next_tombstone_due_ms = Some(stats.next_tombstone_due_ms.map_or(d, |x| x.min(d)));
        }
    }
    Ok(stats)
}

/// Start the cleaner thread: every [`CLEANER_TICK`] it cleans each compacted partition whose
/// sealed segments changed since its last pass (or whose kept tombstones became due). Stops
/// when `stop` is set or the manager is gone.
pub(crate) fn start(manager: Weak<LogManager>, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new().name("log-cleaner".into()).spawn(move || {
        // (topic, partition) → (sealed end cleaned, segment count, next tombstone due).
        let mut last: HashMap<(String, u32), (u64, usize, Option<i64>)> = HashMap::new();
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(CLEANER_TICK);
            let Some(m) = manager.upgrade() else { return };
            let parts = m.all_partitions();
            let cfg = m.config().clone();
            // Partitions whose cleaning panicked: skipped.
            let uncleanable = m.uncleanable_partitions();
            drop(m);
            for p in parts {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                if !p.live().compact() || uncleanable.iter().any(|(t, i, _)| *t == p.topic && *i == p.index) {
                    continue;
                }
                let sealed = p.sealed_segments();
                let end = sealed.last().map_or(0, |(b, _, s, _)| b + s);
                let now = super::now_ms();
                let key = (p.topic.clone(), p.index);
                if let Some((e, n, due)) = last.get(&key) {
                    if *e == end && *n == sealed.len() && due.is_none_or(|d| now < d) {
                        continue;
                    }
                }
                let lim = CleanLimits {
                    rate_bytes: if cfg.cleaner_rate_mib == 0 { u64::MAX } else { cfg.cleaner_rate_mib.saturating_mul(1 << 20) },
                    map_bytes_max: cfg.cleaner_map_bytes,
                    batch_bytes_max: cfg.batch_bytes_max,
                    index_interval_bytes: cfg.index_interval_bytes,
                };
                // A panic here is a bug; it must not stop compaction of every other partition
                // for the broker's lifetime (the thread would end): the partition is marked
                // uncleanable and skipped, as Kafka's LogCleaner does.
                let cleaned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    clean_partition(&p, now, p.live().delete_retention_ms(), &lim, &stop)
                }));
                let cleaned = match cleaned {
                    Ok(r) => r,
                    Err(panic) => {
                        let why = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "a panic without a message".into());
                        tracing::error!(
                            topic = %p.topic, partition = p.index,
                            "log cleaner: cleaning panicked ({why}); the partition is uncleanable until the broker restarts, the others are still cleaned"
                        );
                        if let Some(m) = manager.upgrade() {
                            m.mark_uncleanable(&p.topic, p.index, why);
                        }
                        continue;
                    }
                };
                match cleaned {
                    Ok(st) => {
                        if st.segments_swapped > 0 {
                            tracing::info!(
                                topic = %p.topic, partition = p.index, segments = st.segments_swapped,
                                records_removed = st.records_removed, tombstones_removed = st.tombstones_removed,
                                "compacted"
                            );
                        }
                        if st.map_full {
                            tracing::warn!(
                                topic = %p.topic, partition = p.index, segments = st.segments_cleaned,
                                "log cleaner: the key map (log cleaner map bytes) filled: only the first segments were cleaned"
                            );
                        }
                        // Re-read: a swap changed the sizes.
                        let sealed = p.sealed_segments();
                        let end = sealed.last().map_or(0, |(b, _, s, _)| b + s);
                        // A full map: the next pass waits for new sealed segments (it would stop at the
                        // same place); tombstones kept: it runs again when the first is due.
                        let due = st.next_tombstone_due_ms;
                        last.insert(key, (end, sealed.len(), due));
                    }
                    Err(e) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, "log cleaner: {e}");
                        last.insert(key, (end, sealed.len(), Some(now + 60_000)));
                    }
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the log cleaner thread: {e}");
    }
}
