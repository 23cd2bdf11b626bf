//! Recovery at open — Kafka's `LogLoader`.
//!
//! Finds the partition's segments (`<base>.log`, 20-digit bases), removes what an interrupted
//! operation left (a compaction's unswapped output, a checkpoint's temporary file, segments
//! wholly below the log start checkpoint, indexes of deleted segments), then walks the
//! segments in order: a sealed segment below the recovery point with a valid index is trusted
//! (headers checked from its last index entry only), any other is scanned batch by batch with
//! CRCs and its indexes rebuilt. Damage in the unsynced tail (past the recovery point, in the
//! last segment) is a torn write and is truncated; damage anywhere else is mid-log corruption
//! and refuses the open (or, with `repair`, truncates the log there, loudly). The
//! idempotent-producer state ([`super::producer_state`]) and the transaction index
//! ([`super::txn_index`]) are rebuilt from the batch headers as the walk goes. Everything
//! recovered is made durable before [`load`] returns what [`super::partition::Partition::open`]
//! assembles.
//!
//! Asserts (after the checks that refuse, repair or reset what the disk holds, so a failure is a
//! bug here, never bad disk input): the segments handed over are in increasing base order and
//! contiguous in offsets, and the log end is at or above the log start checkpoint.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::partition::{encode_recovery_point, LOG_START_CHECKPOINT, LOG_START_CHECKPOINT_TMP, LS_MAGIC, RECOVERY_POINT, RP_MAGIC};
use super::producer_state::{is_idempotent, ProducerStateManager};
use super::segment::{self, Segment};
use super::txn_index::{self, TxnIndex};
use super::{LogConfig, RecoveryError};
use zl_io::{Io, IoFile};
use zl_record::BatchInfo;

/// What recovery hands to [`super::partition::Partition::open`]: the segments (at least one;
/// the last is the active one), the producer state and transaction index they hold, the
/// recovery-point file, and the log start checkpoint.
pub(crate) struct Recovered {
    pub(crate) segments: Vec<Segment>,
    pub(crate) producers: ProducerStateManager,
    pub(crate) txn: TxnIndex,
    pub(crate) rp_file: Arc<dyn IoFile>,
    pub(crate) checkpoint: u64,
}

/// Recover (or create) the partition stored in `dir`.
pub(crate) fn load(topic: &str, index: u32, dir: &Path, io: &dyn Io, cfg: &LogConfig) -> Result<Recovered, RecoveryError> {
        let e = io_err(dir);
        let fresh = !io.exists(dir);
        io.create_dir_all(dir).map_err(&e)?;
        if fresh {
            if let Some(parent) = dir.parent() {
                io.sync_dir(parent).map_err(&e)?;
            }
        }
        let rp_path = dir.join(RECOVERY_POINT);
        let rp_file = io.open(&rp_path, true).map_err(&e)?;
        let recovery_point = read_recovery_point(&*rp_file);

        let names = io.list_dir(dir).map_err(&e)?;
        // A compaction's output not swapped in before a crash: the segment it was cleaning is
        // whole (the swap is a rename), so the partial copy goes.
        for name in names.iter().filter(|n| n.ends_with(super::cleaner::CLEANED_SUFFIX)) {
            tracing::info!(topic, partition = index, file = %name, "removing an unfinished compaction output");
            io.remove_file(&dir.join(name)).map_err(&e)?;
        }
        let mut bases = Vec::new();
        for name in &names {
            if let Some(stem) = name.strip_suffix(".log") {
                match stem.parse::<u64>() {
                    // Kafka offsets are i64: a larger base (20 digits can hold one) is no segment of ours.
                    Ok(b) if stem.len() == 20 && b <= i64::MAX as u64 => bases.push(b),
                    _ => return Err(RecoveryError::BadName(name.clone())),
                }
            }
        }
        bases.sort_unstable();
        // A checkpoint replacement a crash interrupted: the old checkpoint is still whole.
        let tmp = dir.join(LOG_START_CHECKPOINT_TMP);
        if io.exists(&tmp) {
            io.remove_file(&tmp).map_err(&e)?;
        }
        let checkpoint = read_start_checkpoint(io, dir)?;
        // Segments wholly below the log start (DeleteRecords deletes them after its checkpoint
        // is durable; a crash may have come between): deleted before recovery reads them.
        while bases.len() > 1 && bases[1] <= checkpoint {
            let base = bases.remove(0);
            tracing::info!(topic, partition = index, base, checkpoint, "removing a segment below the log start");
            for name in [segment::log_name(base), segment::index_name(base), segment::time_index_name(base)] {
                let path = dir.join(name);
                if io.exists(&path) {
                    io.remove_file(&path).map_err(&e)?;
                }
            }
        }
        // Index files of segments below the first one: left by a crash (or an error) between
        // deleting a retired segment's `.log` and its indexes (retention deletes from the
        // front). Best effort: they are never read. Any other stray index is left as evidence.
        for name in &names {
            let stem = name.strip_suffix(".index").or_else(|| name.strip_suffix(".timeindex"));
            if let Some(base) = stem.filter(|s| s.len() == 20).and_then(|s| s.parse::<u64>().ok()) {
                if bases.first().is_some_and(|&first| base < first) {
                    tracing::info!(topic, partition = index, file = %name, "removing the index of a deleted segment");
                    let _ = io.remove_file(&dir.join(name));
                }
            }
        }

        let mut producers = ProducerStateManager::default();
        // Recovered producers' idleness (expiry) counts from this open.
        let opened_ms = super::now_ms();
        // The transaction index, folded in one segment at a time from its transactional
        // batches (position, header), so recovery holds one segment's worth of them at most.
        let mut txn = TxnIndex::default();
        let mut txn_batches: Vec<(u64, BatchInfo)> = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
        if bases.is_empty() {
            segments.push(Segment::create(io, dir, 0).map_err(&e)?);
        }
        let last_i = bases.len().saturating_sub(1);
        let mut repaired = false;
        for (i, &base) in bases.iter().enumerate() {
            if let Some(prev) = segments.last().filter(|p| cfg.repair && !repaired && p.next_offset != base) {
                tracing::error!(
                    topic, partition = index, segment = %dir.join(segment::log_name(base)).display(), offset = prev.next_offset,
                    "REPAIR: segment starts at {base} but the previous one ends at {}: it and every later segment are dropped",
                    prev.next_offset
                );
                repaired = true;
            }
            if repaired {
                // Everything after a repaired (truncated) segment goes.
                for name in [segment::log_name(base), segment::index_name(base), segment::time_index_name(base)] {
                    let path = dir.join(&name);
                    if io.exists(&path) {
                        let len = io.open(&path, false).and_then(|f| f.len()).unwrap_or(0);
                        tracing::error!(topic, partition = index, file = %path.display(), bytes = len, "REPAIR: removing a segment file after the truncation point");
                        io.remove_file(&path).map_err(&e)?;
                    }
                }
                continue;
            }
            let mut seg = Segment::open_existing(io, dir, base).map_err(&e)?;
            // A sealed segment may have been compacted: gaps, below the next segment's base.
            seg.gap_limit = bases.get(i + 1).copied();
            let seg_path = dir.join(segment::log_name(base));
            let file_len = seg.file.len().map_err(&e)?;
            let is_last = i == last_i;
            let sealed_below_rp = !is_last && bases[i + 1] <= recovery_point;
            if let Some(prev) = segments.last() {
                // Compaction keeps each segment's last offset: no gap between segments (a
                // missing segment is detected here).
                if prev.next_offset != base {
                    return Err(RecoveryError::MidLogCorruption {
                        path: seg_path.display().to_string(),
                        position: 0,
                        offset: base,
                        recovery_point,
                        reason: format!("segment starts at {base} but the previous one ends at {}", prev.next_offset),
                    });
                }
            }
            let interval = cfg.index_interval_bytes;
            let max = cfg.batch_bytes_max;
            let mut trusted = None;
            // Repair checks every batch's CRC (damage the scrub found in a sealed segment is
            // invisible to the header-only walk of a trusted one).
            if sealed_below_rp && !cfg.repair && seg.load_indexes(io, file_len).map_err(&e)? {
                // Trust the checkpointed index; scan headers only from its last entry. If that
                // tail does not check out, the index is stale or damaged: rebuild it below.
                let last = *seg.index.last().expect("non-empty index");
                let (index, time_index) = (seg.index.clone(), seg.time_index.clone());
                let end = seg
                    .scan(last.position as u64, base + last.rel_offset as u64, false, max, u32::MAX, |_| {})
                    .map_err(&e)?;
                if end.stopped.is_none() {
                    seg.index = index;
                    seg.time_index = time_index;
                    seg.max_timestamp = seg.time_index.last().map_or(-1, |t| t.timestamp).max(seg.max_timestamp);
                    // Idempotent producer state lives in the batch headers. A header that
                    // does not parse sends the segment to the full (CRC-checking) scan below,
                    // which reports where the damage is.
                    // Tracked once the walk is through: one that fails partway leaves the state
                    // as it was, and the rescan below tracks every batch.
                    let mut walked = Vec::new();
                    let mut txns = Vec::new();
                    let mut at = 0u64;
                    let walk = seg.walk_headers(end.valid_end, max, |info| {
                        if is_idempotent(info) {
                            walked.push(*info);
                        }
                        if info.is_transactional() {
                            txns.push((at, *info));
                        }
                        at += info.size_bytes as u64;
                    });
                    match walk {
                        Ok(()) => {
                            walked.iter().for_each(|info| producers.track(info, opened_ms));
                            txn_batches.extend(txns);
                            trusted = Some(end);
                        }
                        Err(err) => tracing::warn!(path = %seg_path.display(), "{err}; rescanning"),
                    }
                } else {
                    tracing::warn!(path = %seg_path.display(), "index inconsistent with the log; rebuilding");
                }
            }
            let end = match trusted {
                Some(end) => end,
                None => {
                    seg.reset_indexes();
                    let mut at = 0u64;
                    let end = seg
                        .scan(0, base, true, max, interval, |info| {
                            producers.track(info, opened_ms);
                            if info.is_transactional() {
                                txn_batches.push((at, *info));
                            }
                            at += info.size_bytes as u64;
                        })
                        .map_err(&e)?;
                    if !is_last && end.stopped.is_none() {
                        seg.write_indexes(io).map_err(&e)?;
                    }
                    end
                }
            };
            if let Some((position, reason)) = end.stopped {
                if cfg.repair && (end.next_offset < recovery_point || !is_last) {
                    let later: u64 = bases[i + 1..]
                        .iter()
                        .map(|b| io.open(&dir.join(segment::log_name(*b)), false).and_then(|f| f.len()).unwrap_or(0))
                        .sum();
                    tracing::error!(
                        topic, partition = index, segment = %seg_path.display(), position, offset = end.next_offset, reason = %reason,
                        dropped_bytes_in_segment = file_len - position, later_segments = bases.len() - 1 - i, later_bytes = later,
                        "REPAIR: truncating the log at its first invalid batch: offsets from {} on are dropped: {} bytes of \
                         this segment and {} later segment(s) of {} bytes",
                        end.next_offset, file_len - position, bases.len() - 1 - i, later
                    );
                    seg.file.set_len(end.valid_end).map_err(&e)?;
                    seg.file.sync_data().map_err(&e)?;
                    if !is_last {
                        let _ = io.remove_file(&dir.join(segment::index_name(base)));
                        let _ = io.remove_file(&dir.join(segment::time_index_name(base)));
                    }
                    repaired = true;
                    fold_txn_batches(&mut txn, &seg, &mut txn_batches, max).map_err(&e)?;
                    segments.push(seg);
                    continue;
                }
                if end.next_offset < recovery_point || !is_last {
                    // Data below the recovery point was synced: damage there is not a torn tail.
                    return Err(RecoveryError::MidLogCorruption {
                        path: seg_path.display().to_string(),
                        position,
                        offset: end.next_offset,
                        recovery_point,
                        reason,
                    });
                }
                tracing::warn!(
                    path = %seg_path.display(), position, reason = %reason,
                    "truncating torn tail of {} bytes", file_len - position
                );
                seg.file.set_len(end.valid_end).map_err(&e)?;
            }
            fold_txn_batches(&mut txn, &seg, &mut txn_batches, max).map_err(&e)?;
            segments.push(seg);
        }
        if cfg.repair && !repaired && segments.last().expect("segment").next_offset < recovery_point {
            let seg = segments.last().expect("segment");
            tracing::error!(
                topic, partition = index, segment = %dir.join(segment::log_name(seg.base_offset)).display(),
                "REPAIR: the log ends at offset {} before its recovery point {recovery_point} (synced data is missing); continuing from {}",
                seg.next_offset, seg.next_offset
            );
            repaired = true;
        }
        if segments.last().expect("segment").next_offset < recovery_point && !repaired {
            let seg = segments.last().expect("segment");
            return Err(RecoveryError::MidLogCorruption {
                path: dir.join(segment::log_name(seg.base_offset)).display().to_string(),
                position: seg.size,
                offset: seg.next_offset,
                recovery_point,
                reason: "log ends before its recovery point: synced data is missing".into(),
            });
        }
        if checkpoint > segments.last().expect("segment").next_offset {
            // The log ends below its start (in `never`/`interval` mode a power cut can take
            // back records DeleteRecords moved past): as Kafka, start over empty at the log
            // start, which never moves backwards. Every record there was deleted already.
            tracing::warn!(
                topic, partition = index, log_end = segments.last().expect("segment").next_offset, checkpoint,
                "the log ends below its log start offset checkpoint: starting empty at the checkpoint"
            );
            for seg in segments.drain(..) {
                seg.delete_files(io).map_err(&e)?;
            }
            txn = TxnIndex::default();
            io.sync_dir(dir).map_err(&e)?;
            segments.push(Segment::create(io, dir, checkpoint).map_err(&e)?);
        }
        // Everything recovered is made durable before it is served.
        let active = segments.last().expect("segment");
        active.file.sync_data().map_err(&e)?;
        let next = active.next_offset;
        rp_file.write_at(&encode_recovery_point(next), 0).map_err(&e)?;
        rp_file.sync_data().map_err(&e)?;
        io.sync_dir(dir).map_err(&e)?;

        // Invariants of what is handed over (each was refused, repaired or reset above when the
        // disk did not satisfy it): segments in increasing base order, contiguous in offsets,
        // the log end at or above the log start.
        assert!(
            segments.windows(2).all(|w| w[0].base_offset < w[1].base_offset && w[0].next_offset == w[1].base_offset),
            "recovered segments of {topic}-{index} are not contiguous in offsets"
        );
        assert!(next >= checkpoint, "recovered log end {next} of {topic}-{index} below its log start {checkpoint}");
        Ok(Recovered { segments, producers, txn, rp_file, checkpoint })
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io { path: path.display().to_string(), source }
}

pub(crate) fn read_recovery_point(f: &dyn IoFile) -> u64 {
    let mut b = [0u8; 16];
    match segment::read_fully(f, &mut b, 0) {
        Ok(16) => {}
        _ => return 0,
    }
    let magic = u32::from_be_bytes(b[0..4].try_into().expect("4"));
    let crc = u32::from_be_bytes(b[12..16].try_into().expect("4"));
    if magic != RP_MAGIC || crc32c::crc32c(&b[0..12]) != crc {
        return 0;
    }
    u64::from_be_bytes(b[4..12].try_into().expect("8"))
}

/// The log start checkpoint in `dir`: 0 when there is none; a file that is not exactly a valid
/// checkpoint is an error (it is only ever replaced whole, so damage is not a torn write).
fn read_start_checkpoint(io: &dyn Io, dir: &Path) -> Result<u64, RecoveryError> {
    let path = dir.join(LOG_START_CHECKPOINT);
    if !io.exists(&path) {
        return Ok(0);
    }
    let bad = |reason: String| RecoveryError::BadCheckpoint { path: path.display().to_string(), reason };
    let f = io.open(&path, false).map_err(|e| bad(e.to_string()))?;
    let len = f.len().map_err(|e| bad(e.to_string()))?;
    if len != 16 {
        return Err(bad(format!("{len} bytes, want 16")));
    }
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b, 0).map_err(|e| bad(e.to_string()))?;
    let magic = u32::from_be_bytes(b[0..4].try_into().expect("4"));
    let crc = u32::from_be_bytes(b[12..16].try_into().expect("4"));
    if magic != LS_MAGIC {
        return Err(bad(format!("bad magic {magic:#x}")));
    }
    if crc32c::crc32c(&b[0..12]) != crc {
        return Err(bad("checksum mismatch".into()));
    }
    let offset = u64::from_be_bytes(b[4..12].try_into().expect("8"));
    if offset > i64::MAX as u64 {
        return Err(bad(format!("offset {offset} out of range")));
    }
    Ok(offset)
}

/// Fold a recovered segment's transactional batches (position, header; in log order, all valid)
/// into the transaction index and clear them; a control batch's marker type is read from the
/// segment.
fn fold_txn_batches(txn: &mut TxnIndex, seg: &Segment, batches: &mut Vec<(u64, BatchInfo)>, batch_bytes_max: usize) -> io::Result<()> {
    for (pos, info) in batches.drain(..) {
        if info.base_offset as u64 >= seg.next_offset {
            break;
        }
        let marker = if info.is_control() {
            let size = info.size_bytes.min(batch_bytes_max);
            let mut b = vec![0u8; size];
            seg.file.read_exact_at(&mut b, pos)?;
            txn_index::control_marker(&b, &info)
        } else {
            None
        };
        txn.on_batch(&info, marker);
    }
    Ok(())
}
