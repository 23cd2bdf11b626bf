//! The partitioned log: segments, sparse indexes, group commit, recovery, retention.
//!
//! Architecture invariant: this module knows nothing about sockets or the Kafka wire protocol.
//! It stores record batch v2 bytes exactly as produced (only `baseOffset` and
//! `partitionLeaderEpoch`, both outside the CRC, are patched) and hands out file ranges.
#![forbid(unsafe_code)]

pub mod cleaner;
mod group_commit;
mod loader;
mod local_log;
pub mod manager;
pub mod scrub;
pub mod partition;
mod producer_state;
pub mod pool;
pub mod segment;
pub mod time_seek;
pub mod txn_index;
pub mod topic_config;

use std::io;
use std::str::FromStr;

pub use manager::{LogManager, Notifier, TopicError};
pub use partition::{AppendInfo, DurableCallback, FileRange, HwWaiter, HwWakeBatch, Partition, ReadSlice};
pub use topic_config::{ConfigError, LiveConfig, TopicConfig};

use zl_record::BatchError;

/// When an append is acknowledged relative to fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge once in the page cache (Kafka's default). A process crash loses nothing
    /// (the page cache survives it); a power cut may lose recent appends.
    Never,
    /// Acknowledge only after an fdatasync that covers the append. Concurrent appends share one
    /// sync; at most one sync is in flight per partition; no artificial delay.
    Group,
    /// Acknowledge at once; a background thread syncs every `ms` milliseconds.
    Interval { ms: u64 },
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Never => write!(f, "never"),
            Durability::Group => write!(f, "group"),
            Durability::Interval { ms } => write!(f, "interval={ms}"),
        }
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(Durability::Never),
            "group" => Ok(Durability::Group),
            _ => match s.strip_prefix("interval=") {
                Some(ms) => match ms.parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(Durability::Interval { ms }),
                    _ => Err(format!("bad interval in durability mode {s:?}: want interval=<ms> with ms > 0")),
                },
                None => Err(format!("unknown durability mode {s:?}: want never, group or interval=<ms>")),
            },
        }
    }
}

/// Kafka's default message.max.bytes (1 MiB + the 12-byte log overhead).
pub const MESSAGE_MAX_BYTES_DEFAULT: usize = 1_048_588;

/// Per-log configuration.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub durability: Durability,
    /// Roll to a new segment before one would exceed this size.
    pub segment_bytes_max: u64,
    /// Roll a segment older than this (by its creation in this process), if set.
    pub segment_age_max_ms: Option<u64>,
    /// Delete whole old segments while the log is larger than this.
    pub retention_bytes_max: Option<u64>,
    /// Delete whole old segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// One sparse index entry per this many bytes of batches.
    pub index_interval_bytes: u32,
    /// Largest batch the log stores or reads (a hard limit; the topic's `max.message.bytes`
    /// may not exceed it).
    pub batch_bytes_max: usize,
    /// Largest batch a Produce may append (Kafka's topic `max.message.bytes`, broker
    /// `message.max.bytes`); a larger one is answered MESSAGE_TOO_LARGE by the broker.
    pub message_max_bytes: usize,
    /// Kafka's `min.insync.replicas`: with a single replica, a value above 1 makes every
    /// acks=all Produce fail with NOT_ENOUGH_REPLICAS, as Kafka does.
    pub min_insync_replicas: u32,
    /// Kafka's `message.timestamp.type=LogAppendTime`: the broker stamps each appended batch
    /// with its append time (max timestamp + the attribute bit, CRC recomputed).
    pub log_append_time: bool,
    /// `group` mode only: zero-fill the active segment this far ahead of its end (written with
    /// the group-commit leader's write, when at most a quarter of the window is being written),
    /// so fdatasyncs overwrite allocated blocks instead of journaling size changes (0 = off).
    /// Default 1 MiB. See engine/PERF_NOTES.md.
    pub preallocate_bytes: u64,
    /// `group` mode only: an append of at least this many bytes is written by its appender,
    /// outside the partition's lock and concurrently with other appends, instead of being
    /// staged for the group-commit leader's write (a sync covers it once its write is over).
    /// Default 256 KiB.
    pub appender_write_bytes: u64,
    /// Those appender writes bypass the page cache (O_DIRECT) for their 4 KiB-aligned middle:
    /// no page-cache copy and no writeback for the fdatasync to wait on, at the price of the
    /// device write in the append itself (the caller waits for it) and of consumers reading
    /// those bytes from the disk. Default off. On the reference VM it gave 1.25-2x the durable
    /// 1 MiB-batch throughput of closed-loop appenders at sustained volume and 1.25-1.45x with 4
    /// producer connections at the broker, but one producer over 4 partitions lost 12 % of its
    /// peak and ~30 % of median latency; see engine/PERF_NOTES.md, session 5.
    pub direct_io: bool,
    /// Walk every record of an appended batch (decompressing it) and refuse one a consumer
    /// could not parse, as Kafka's LogValidator does ([`zl_record::validate_records`]).
    /// Default on; off only to measure what it costs.
    pub validate_records: bool,
    /// Repair on open (`broker --repair`): a partition whose log is damaged below its recovery
    /// point (or in a sealed segment) is truncated at the first invalid batch, every later
    /// segment removed, and exactly what was dropped logged; without it such a partition is not
    /// opened. Default off: truncating acknowledged data is the operator's decision.
    pub repair: bool,
    /// Read rate (MiB/s) of the background scrub that CRC-checks sealed segments
    /// ([`scrub`]); 0 = no scrub. Default 0 here; the broker's default is
    /// `broker::SCRUB_RATE_MIB_DEFAULT`.
    pub scrub_rate_mib: u64,
    /// Kafka's `cleanup.policy`: `compact` (the log cleaner keeps the latest record per key,
    /// [`cleaner`]) and/or `delete` (retention deletes old segments). Default delete only.
    pub compact: bool,
    pub delete: bool,
    /// Kafka's `delete.retention.ms`: a compacted topic's tombstone (null value) is kept this
    /// long after its timestamp, then the cleaner removes it. Default 1 day.
    pub delete_retention_ms: u64,
    /// The log cleaner's read + write rate, MiB/s (0 = unthrottled). Default 32.
    pub cleaner_rate_mib: u64,
    /// Memory bound of the cleaner's key map (Kafka's `log.cleaner.dedupe.buffer.size`).
    /// Default 128 MiB.
    pub cleaner_map_bytes: usize,
    /// Kafka's `producer.id.expiration.ms`: an idempotent producer whose newest batch's
    /// timestamp is this old (and that has no open transaction) is forgotten by the log
    /// maintenance thread (`producer_state`). Default 1 day, as Kafka; `None` keeps every one.
    pub producer_id_expiration_ms: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            durability: Durability::Group,
            segment_bytes_max: 1 << 30,
            segment_age_max_ms: None,
            retention_bytes_max: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            batch_bytes_max: 16 << 20,
            message_max_bytes: MESSAGE_MAX_BYTES_DEFAULT,
            min_insync_replicas: 1,
            log_append_time: false,
            preallocate_bytes: 1 << 20,
            appender_write_bytes: 256 << 10,
            direct_io: false,
            validate_records: true,
            repair: false,
            scrub_rate_mib: 0,
            compact: false,
            delete: true,
            delete_retention_ms: 24 * 3600 * 1000,
            cleaner_rate_mib: 32,
            cleaner_map_bytes: 128 << 20,
            producer_id_expiration_ms: Some(24 * 3600 * 1000),
        }
    }
}

/// Why an append failed. Nothing already stored is touched by a failed append.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("corrupt batch: {0}")]
    Corrupt(#[from] BatchError),
    #[error("partition is poisoned after a failed fdatasync ({0}); reopen required")]
    Poisoned(String),
    #[error("storage error: {0}")]
    Storage(#[source] io::Error),
    #[error("duplicate sequence number (batch already stored at offset {0})")]
    DuplicateSequence(i64),
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than current epoch {current}")]
    ProducerFenced { current: i16, got: i16 },
    #[error("unknown producer id {0} with non-zero sequence")]
    UnknownProducer(i64),
    /// The append's offsets span more than a segment can index (u32 relative offsets).
    #[error("an append of {count} offsets from offset {base} spans more than one segment can index (2^32 offsets)")]
    TooManyOffsets { base: u64, count: u64 },
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange { requested: i64, log_start: u64, log_end: u64 },
    #[error("storage error: {0}")]
    Storage(#[from] io::Error),
}

/// Why DeleteRecords could not move a partition's log start.
#[derive(Debug, thiserror::Error)]
pub enum DeleteRecordsError {
    #[error("offset {requested} is above the high watermark {high_watermark}")]
    OffsetOutOfRange { requested: u64, high_watermark: u64 },
    #[error(transparent)]
    Storage(#[from] AppendError),
}

/// Why a partition could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("I/O error recovering {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(
        "corruption in the middle of the log {path} at byte {position} (offset ~{offset}, below the \
         recovery point {recovery_point}): {reason}; refusing to open this partition rather than \
         silently truncating acknowledged data (restart with --repair to truncate it there)"
    )]
    MidLogCorruption { path: String, position: u64, offset: u64, recovery_point: u64, reason: String },
    #[error("unexpected file name {0:?} in partition directory")]
    BadName(String),
    #[error(
        "the log start offset checkpoint {path} is damaged ({reason}); it is only ever replaced \
         whole, so this is not a torn write: refusing to open this partition (restore the file, or \
         remove it to serve the partition from its first segment again)"
    )]
    BadCheckpoint { path: String, reason: String },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn durability_parses_and_prints() {
        for s in ["never", "group", "interval=50"] {
            assert_eq!(s.parse::<Durability>().unwrap().to_string(), s);
        }
        assert!("interval=0".parse::<Durability>().is_err());
        assert!("always".parse::<Durability>().is_err());
    }
}
