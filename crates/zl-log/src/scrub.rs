//! Background scrub: CRC-check every sealed segment at a bounded read rate, so damage on disk
//! (a flipped bit in data synced long ago) is reported before a consumer meets it.
//!
//! Recovery trusts a sealed segment below the recovery point after checking only its batch
//! headers (a full CRC pass over every segment would make restarts slow), so a flipped byte
//! inside a record would otherwise be served as a corrupt value. The scrub reads each sealed
//! segment once per pass ([`SCRUB_PASS_INTERVAL`]) at `LogConfig::scrub_rate_mib`, checks each
//! batch's length, CRC and offsets (increasing; gaps only below the next segment), and on damage: logs an error naming the segment
//! file, the byte position and the offset; counts it ([`ScrubReport`]); and fences the
//! partition at that offset ([`Partition::fence`]): Fetch from there answers
//! KAFKA_STORAGE_ERROR instead of serving the batch. The way out is `broker --repair`, which
//! truncates there (and logs what it drops).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::manager::LogManager;
use super::segment::read_fully;
use zl_io::IoFile;
use zl_record::{self as record, BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD};

/// A pass starts at most this often (the first right after the logs are opened).
pub const SCRUB_PASS_INTERVAL: Duration = Duration::from_secs(3600);
const CHUNK: usize = 1 << 20;

/// What the scrub found so far (for tests and operators' tools).
#[derive(Debug, Default)]
pub struct ScrubReport {
    /// Bytes of sealed segments checked.
    pub bytes_checked: AtomicU64,
    /// Segments checked (each pass counts again).
    pub segments_checked: AtomicU64,
    /// One line per damaged batch: "<segment path> position <p> offset <o>: <reason>".
    pub damage: Mutex<Vec<String>>,
}

/// Start the scrub thread (rate in MiB/s; 0 = no scrub). It stops when `stop` is set or the
/// manager is gone.
pub(crate) fn start(manager: Weak<LogManager>, stop: Arc<AtomicBool>, report: Arc<ScrubReport>, rate_mib: u64) {
    if rate_mib == 0 {
        return;
    }
    let rate = rate_mib.saturating_mul(1 << 20);
    let spawned = std::thread::Builder::new().name("log-scrub".into()).spawn(move || {
        // Damage already reported is not reported again every pass.
        let mut reported: HashSet<(PathBuf, u64)> = HashSet::new();
        while !stop.load(Ordering::Acquire) {
            let pass = Instant::now();
            let Some(m) = manager.upgrade() else { return };
            let parts = m.all_partitions();
            let max = m.config().batch_bytes_max;
            drop(m);
            let mut throttle = Throttle { rate, started: Instant::now(), bytes: 0 };
            for p in parts {
                let sealed = p.sealed_segments();
                // Each segment's batches lie below the next one's base (the last sealed one's,
                // below the high watermark).
                let limits: Vec<u64> = sealed.iter().skip(1).map(|s| s.0).chain([p.high_watermark()]).collect();
                for ((base, file, size, path), limit) in sealed.into_iter().zip(limits) {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    match check_segment(&*file, base, limit, size, max, &mut throttle, &stop) {
                        Ok(None) => {}
                        Ok(Some((position, offset, reason))) => {
                            p.fence(offset, base, position);
                            if reported.insert((path.clone(), position)) {
                                tracing::error!(
                                    segment = %path.display(), position, offset, reason = %reason,
                                    "scrub: damaged batch in a sealed segment; offsets from {offset} of {}-{} are not served \
                                     (Fetch answers KAFKA_STORAGE_ERROR); stop the broker and restart it with --repair",
                                    p.topic, p.index
                                );
                                report
                                    .damage
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(format!("{} position {position} offset {offset}: {reason}", path.display()));
                            }
                        }
                        Err(e) => tracing::warn!(segment = %path.display(), "scrub: cannot read: {e}"),
                    }
                    report.bytes_checked.fetch_add(size, Ordering::Relaxed);
                    report.segments_checked.fetch_add(1, Ordering::Relaxed);
                }
            }
            while pass.elapsed() < SCRUB_PASS_INTERVAL {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the scrub thread: {e}");
    }
}

/// Keeps the read rate at or under `rate` bytes/s over the pass.
pub(crate) struct Throttle {
    pub(crate) rate: u64,
    pub(crate) started: Instant,
    pub(crate) bytes: u64,
}

impl Throttle {
    pub(crate) fn read(&mut self, n: usize, stop: &AtomicBool) {
        self.bytes += n as u64;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        while self.started.elapsed() < due && !stop.load(Ordering::Acquire) {
            // Saturating: time passes between the check and here (a plain `-` panicked the
            // cleaner thread on a loaded machine).
            std::thread::sleep(due.saturating_sub(self.started.elapsed()).min(Duration::from_millis(100)));
        }
    }
}

/// Check every batch of `[0, size)`: Ok(Some((position, offset, reason))) at the first bad one.
fn check_segment(
    file: &dyn IoFile,
    base: u64,
    gap_limit: u64,
    size: u64,
    batch_bytes_max: usize,
    throttle: &mut Throttle,
    stop: &AtomicBool,
) -> std::io::Result<Option<(u64, u64, String)>> {
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = 0u64;
    let mut pos = 0u64;
    let mut expected = base;
    let mut refill = |buf: &mut Vec<u8>, buf_pos: &mut u64, at: u64, want: usize| -> std::io::Result<()> {
        let want = want.min((size - at) as usize);
        buf.clear();
        buf.resize(want, 0);
        let n = read_fully(file, buf, at)?;
        buf.truncate(n);
        *buf_pos = at;
        throttle.read(n, stop);
        Ok(())
    };
    while pos < size {
        if stop.load(Ordering::Acquire) {
            return Ok(None);
        }
        if pos + BATCH_LOG_OVERHEAD as u64 > buf_pos + buf.len() as u64 {
            refill(&mut buf, &mut buf_pos, pos, CHUNK)?;
        }
        let rel = (pos - buf_pos) as usize;
        let Some(bsize) = record::declared_size(&buf[rel..]) else {
            return Ok(Some((pos, expected, "torn batch header".into())));
        };
        if bsize < BATCH_HEADER_BYTES as i64 || bsize > batch_bytes_max as i64 || pos + bsize as u64 > size {
            return Ok(Some((pos, expected, format!("batch length {bsize} out of bounds"))));
        }
        let bsize = bsize as usize;
        if pos + bsize as u64 > buf_pos + buf.len() as u64 {
            refill(&mut buf, &mut buf_pos, pos, bsize.max(CHUNK))?;
        }
        let rel = (pos - buf_pos) as usize;
        let Some(batch) = buf.get(rel..rel + bsize) else {
            return Ok(Some((pos, expected, "segment shorter than its batches".into())));
        };
        match record::validate(batch, batch_bytes_max) {
            // Offsets may skip forward (compaction), never back nor past the next segment.
            Ok(info) => match super::segment::check_offsets(info.base_offset, info.last_offset(), expected, Some(gap_limit)) {
                Ok(()) => expected = info.last_offset() as u64 + 1,
                Err(why) => return Ok(Some((pos, expected, why))),
            },
            Err(e) => return Ok(Some((pos, expected, e.to_string()))),
        }
        pos += bsize as u64;
    }
    Ok(None)
}
