//! Per-topic configuration: the overrides a topic was created or altered with, under Kafka's key
//! names, validated with the reason a value is refused, persisted with the topic, and the live
//! values each partition reads on its append and retention paths.
//!
//! A topic's configuration is its overrides ([`TopicConfig`]) applied over the broker's
//! defaults (a [`LogConfig`]): [`TopicConfig::apply`]. Only keys this broker honours are
//! accepted; an unknown key, or one it cannot honour, is refused, never stored and ignored.
//! `cleanup.policy` takes `delete`, `compact` or both (compaction: [`super::cleaner`]).
//!
//! On disk: `<data>/topic-configs/<topic>.properties`, `key=value` lines of the overrides,
//! replaced atomically (temp file, fdatasync, rename, directory fsync). A topic without the
//! file has no overrides (topics created before per-topic configuration existed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::LogConfig;
use zl_io::Io;

/// Directory (under the data directory) holding each topic's overrides. Its name has no `-`
/// followed by digits, so it is never taken for a partition directory.
pub const CONFIG_DIR: &str = "topic-configs";
const SUFFIX: &str = ".properties";

/// Kafka's `ConfigDef.Type` of a key (the ids DescribeConfigs v3+ reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// One topic-level key: its name, the broker-level key that gives its default, its type.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub broker_key: &'static str,
    pub ty: KeyType,
    /// Whether a topic may override it (the others are described, read-only).
    pub settable: bool,
}

/// Every topic-level key described, in DescribeConfigs order.
pub const KEYS: &[Key] = &[
    Key { name: "cleanup.policy", broker_key: "log.cleanup.policy", ty: KeyType::List, settable: true },
    Key { name: "retention.ms", broker_key: "log.retention.ms", ty: KeyType::Long, settable: true },
    Key { name: "delete.retention.ms", broker_key: "log.cleaner.delete.retention.ms", ty: KeyType::Long, settable: true },
    Key { name: "retention.bytes", broker_key: "log.retention.bytes", ty: KeyType::Long, settable: true },
    Key { name: "segment.bytes", broker_key: "log.segment.bytes", ty: KeyType::Int, settable: true },
    Key { name: "segment.ms", broker_key: "log.roll.ms", ty: KeyType::Long, settable: true },
    Key { name: "index.interval.bytes", broker_key: "log.index.interval.bytes", ty: KeyType::Int, settable: false },
    Key { name: "max.message.bytes", broker_key: "message.max.bytes", ty: KeyType::Int, settable: true },
    Key { name: "min.insync.replicas", broker_key: "min.insync.replicas", ty: KeyType::Int, settable: true },
    Key { name: "compression.type", broker_key: "compression.type", ty: KeyType::String, settable: true },
    Key {
        name: "message.timestamp.type",
        broker_key: "log.message.timestamp.type",
        ty: KeyType::String,
        settable: true,
    },
];

pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Smallest `segment.bytes` (Kafka's: one legacy record's overhead).
pub const SEGMENT_BYTES_MIN: i64 = 14;

/// Why a configuration value is refused (answered INVALID_CONFIG with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn long_in(key: &str, value: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
    let v = value.trim().parse::<i64>().map_err(|_| {
        ConfigError(format!("Invalid value {value} for configuration {key}: not a number (want an integer in [{min}, {max}])"))
    })?;
    if !(min..=max).contains(&v) {
        return Err(ConfigError(format!("Invalid value {value} for configuration {key}: must be in [{min}, {max}]")));
    }
    Ok(v)
}

/// The value of a topic-level key normalized, or why it is refused. `batch_bytes_max` is the
/// log's hard limit on a stored batch (what its readers accept): `max.message.bytes` may not
/// exceed it.
pub fn validate(name: &str, value: &str, batch_bytes_max: usize) -> Result<String, ConfigError> {
    let Some(k) = key(name) else {
        return Err(ConfigError(format!("Unknown topic config name: {name}")));
    };
    if !k.settable {
        return Err(ConfigError(format!("{name} cannot be set per topic on this broker (it is the broker's {})", k.broker_key)));
    }
    let v = match name {
        "cleanup.policy" => {
            let items: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            if items.is_empty() || items.iter().any(|i| *i != "delete" && *i != "compact") {
                return Err(ConfigError(format!(
                    "Invalid value {value} for configuration cleanup.policy: String must be one of: compact, delete"
                )));
            }
            match (items.contains(&"compact"), items.contains(&"delete")) {
                (true, true) => "compact,delete",
                (true, false) => "compact",
                _ => "delete",
            }
            .to_string()
        }
        "delete.retention.ms" => long_in(name, value, 0, i64::MAX)?.to_string(),
        "retention.ms" | "retention.bytes" => long_in(name, value, -1, i64::MAX)?.to_string(),
        // Segment positions are u32 in the indexes: an int (as Kafka's) always fits.
        "segment.bytes" => long_in(name, value, SEGMENT_BYTES_MIN, i32::MAX as i64)?.to_string(),
        "segment.ms" => long_in(name, value, 1, i64::MAX)?.to_string(),
        "max.message.bytes" => {
            let max = batch_bytes_max.min(i32::MAX as usize) as i64;
            long_in(name, value, 0, max).map_err(|e| ConfigError(format!("{e} (this broker's largest stored batch)")))?.to_string()
        }
        "min.insync.replicas" => long_in(name, value, 1, i32::MAX as i64)?.to_string(),
        "compression.type" => match value.trim() {
            "producer" => "producer".to_string(),
            _ => {
                return Err(ConfigError(format!(
                    "Invalid value {value} for configuration compression.type: this broker stores batches as the producer \
                     compressed them (only producer)"
                )))
            }
        },
        "message.timestamp.type" => match value.trim() {
            v @ ("CreateTime" | "LogAppendTime") => v.to_string(),
            _ => {
                return Err(ConfigError(format!(
                    "Invalid value {value} for configuration message.timestamp.type: String must be one of: CreateTime, LogAppendTime"
                )))
            }
        },
        _ => unreachable!("every settable key is validated above"),
    };
    Ok(v)
}

/// A topic's overrides: validated, normalized values by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    values: BTreeMap<&'static str, String>,
}

impl TopicConfig {
    /// From (key, value) pairs, each validated; the first refused one is the error. A key given
    /// twice is refused (as Kafka's CreateTopics does).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        batch_bytes_max: usize,
    ) -> Result<TopicConfig, ConfigError> {
        let mut c = TopicConfig::default();
        for (k, v) in pairs {
            if c.get(k).is_some() {
                return Err(ConfigError(format!("Duplicate configuration key {k}")));
            }
            c.set(k, v, batch_bytes_max)?;
        }
        Ok(c)
    }
    pub fn set(&mut self, name: &str, value: &str, batch_bytes_max: usize) -> Result<(), ConfigError> {
        let v = validate(name, value, batch_bytes_max)?;
        let k = key(name).expect("validated").name;
        self.values.insert(k, v);
        Ok(())
    }
    /// Remove an override (the broker's default applies again). Unknown keys are refused.
    pub fn delete(&mut self, name: &str) -> Result<(), ConfigError> {
        match key(name) {
            Some(k) => {
                self.values.remove(k.name);
                Ok(())
            }
            None => Err(ConfigError(format!("Unknown topic config name: {name}"))),
        }
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.values.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// The broker's defaults `base` with these overrides applied.
    pub fn apply(&self, base: &LogConfig) -> LogConfig {
        let mut c = base.clone();
        let num = |k: &str| self.get(k).and_then(|v| v.parse::<i64>().ok());
        if let Some(v) = num("retention.ms") {
            c.retention_ms = u64::try_from(v).ok();
        }
        if let Some(v) = num("retention.bytes") {
            c.retention_bytes_max = u64::try_from(v).ok();
        }
        if let Some(v) = num("segment.bytes") {
            c.segment_bytes_max = v as u64;
        }
        if let Some(v) = num("segment.ms") {
            c.segment_age_max_ms = Some(v as u64);
        }
        if let Some(v) = num("max.message.bytes") {
            c.message_max_bytes = v as usize;
        }
        if let Some(v) = num("min.insync.replicas") {
            c.min_insync_replicas = v as u32;
        }
        if let Some(v) = self.get("message.timestamp.type") {
            c.log_append_time = v == "LogAppendTime";
        }
        if let Some(v) = self.get("cleanup.policy") {
            c.compact = v.contains("compact");
            c.delete = v.contains("delete");
        }
        if let Some(v) = num("delete.retention.ms") {
            c.delete_retention_ms = v as u64;
        }
        c
    }

    /// The file's text: one `key=value` line per override.
    pub fn to_properties(&self) -> String {
        let mut s = String::from("# zerolog topic configuration overrides (Kafka key names)\n");
        for (k, v) in self.iter() {
            s.push_str(&format!("{k}={v}\n"));
        }
        s
    }

    /// Parse a file written by [`TopicConfig::to_properties`]; every value is validated again.
    pub fn from_properties(text: &str, batch_bytes_max: usize) -> Result<TopicConfig, ConfigError> {
        let pairs = parse_properties(text)?;
        TopicConfig::from_pairs(pairs.iter().map(|(_, k, v)| (k.as_str(), v.as_str())), batch_bytes_max)
    }
}

/// `key=value` lines (Java properties subset: `#`/`!` comments, blank lines, `=` or `:`
/// separator, surrounding whitespace trimmed): (line number, key, value).
pub fn parse_properties(text: &str) -> Result<Vec<(usize, String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with('!') {
            continue;
        }
        let Some(at) = l.find(['=', ':']) else {
            return Err(ConfigError(format!("line {}: {l:?} is not key=value", i + 1)));
        };
        let (k, v) = (l[..at].trim(), l[at + 1..].trim());
        if k.is_empty() {
            return Err(ConfigError(format!("line {}: empty key", i + 1)));
        }
        out.push((i + 1, k.to_string(), v.to_string()));
    }
    Ok(out)
}

pub fn path(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join(CONFIG_DIR).join(format!("{topic}{SUFFIX}"))
}

/// Topic names with a configuration file under `data_dir`.
pub fn stored_topics(io: &dyn Io, data_dir: &Path) -> std::io::Result<Vec<String>> {
    let dir = data_dir.join(CONFIG_DIR);
    if !io.exists(&dir) {
        return Ok(Vec::new());
    }
    Ok(io.list_dir(&dir)?.into_iter().filter_map(|n| n.strip_suffix(SUFFIX).map(str::to_string)).collect())
}

/// Remove temporary files left by a crash inside [`store`] (the rename never happened: the
/// previous file, if any, is the one in force).
pub fn remove_temporaries(io: &dyn Io, data_dir: &Path) -> std::io::Result<()> {
    let dir = data_dir.join(CONFIG_DIR);
    if !io.exists(&dir) {
        return Ok(());
    }
    for name in io.list_dir(&dir)? {
        if name.ends_with(".tmp") {
            io.remove_file(&dir.join(&name))?;
        }
    }
    Ok(())
}

/// Read a topic's overrides (`None`: no file). A file that cannot be read or parsed is an error
/// naming it.
pub fn load(io: &dyn Io, data_dir: &Path, topic: &str, batch_bytes_max: usize) -> Result<Option<TopicConfig>, String> {
    let p = path(data_dir, topic);
    if !io.exists(&p) {
        return Ok(None);
    }
    let f = io.open(&p, false).map_err(|e| format!("cannot open topic configuration {}: {e}", p.display()))?;
    let len = f.len().map_err(|e| format!("cannot read topic configuration {}: {e}", p.display()))?;
    if len > 1 << 20 {
        return Err(format!("topic configuration {} is {len} bytes, more than 1 MiB: not a file this broker wrote", p.display()));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0).map_err(|e| format!("cannot read topic configuration {}: {e}", p.display()))?;
    let text = String::from_utf8(buf).map_err(|_| format!("topic configuration {} is not UTF-8", p.display()))?;
    TopicConfig::from_properties(&text, batch_bytes_max)
        .map(Some)
        .map_err(|e| format!("invalid topic configuration {}: {e}", p.display()))
}

/// Replace a topic's overrides durably: temp file, fdatasync, rename over, directory fsync.
pub fn store(io: &dyn Io, data_dir: &Path, topic: &str, cfg: &TopicConfig) -> std::io::Result<()> {
    let dir = data_dir.join(CONFIG_DIR);
    if !io.exists(&dir) {
        io.create_dir_all(&dir)?;
        io.sync_dir(data_dir)?;
    }
    let p = path(data_dir, topic);
    let tmp = dir.join(format!("{topic}{SUFFIX}.tmp"));
    let f = io.open(&tmp, true)?;
    f.set_len(0)?;
    f.write_at(cfg.to_properties().as_bytes(), 0)?;
    f.sync_data()?;
    drop(f);
    io.rename(&tmp, &p)?;
    io.sync_dir(&dir)
}

/// Remove a topic's overrides file (if any), durably.
pub fn remove(io: &dyn Io, data_dir: &Path, topic: &str) -> std::io::Result<()> {
    let p = path(data_dir, topic);
    if io.exists(&p) {
        io.remove_file(&p)?;
        io.sync_dir(&data_dir.join(CONFIG_DIR))?;
    }
    Ok(())
}

/// The values a partition reads on its append and retention paths, changed live by
/// AlterConfigs (plain atomic loads: nothing on the hot path takes a lock for them).
#[derive(Debug)]
pub struct LiveConfig {
    segment_bytes: AtomicU64,
    /// `u64::MAX` = no age limit.
    segment_ms: AtomicU64,
    /// `u64::MAX` = unlimited.
    retention_bytes: AtomicU64,
    retention_ms: AtomicU64,
    message_max_bytes: AtomicU64,
    min_insync_replicas: AtomicU32,
    log_append_time: AtomicBool,
    compact: AtomicBool,
    delete: AtomicBool,
    delete_retention_ms: AtomicU64,
}

fn opt(v: Option<u64>) -> u64 {
    v.unwrap_or(u64::MAX)
}
fn unopt(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

impl LiveConfig {
    pub fn new(c: &LogConfig) -> LiveConfig {
        let l = LiveConfig {
            segment_bytes: AtomicU64::new(0),
            segment_ms: AtomicU64::new(0),
            retention_bytes: AtomicU64::new(0),
            retention_ms: AtomicU64::new(0),
            message_max_bytes: AtomicU64::new(0),
            min_insync_replicas: AtomicU32::new(1),
            log_append_time: AtomicBool::new(false),
            compact: AtomicBool::new(false),
            delete: AtomicBool::new(true),
            delete_retention_ms: AtomicU64::new(0),
        };
        l.set(c);
        l
    }
    pub fn set(&self, c: &LogConfig) {
        let r = Ordering::Relaxed;
        self.segment_bytes.store(c.segment_bytes_max, r);
        self.segment_ms.store(opt(c.segment_age_max_ms), r);
        self.retention_bytes.store(opt(c.retention_bytes_max), r);
        self.retention_ms.store(opt(c.retention_ms), r);
        self.message_max_bytes.store(c.message_max_bytes as u64, r);
        self.min_insync_replicas.store(c.min_insync_replicas, r);
        self.log_append_time.store(c.log_append_time, r);
        self.compact.store(c.compact, r);
        self.delete.store(c.delete, r);
        self.delete_retention_ms.store(c.delete_retention_ms, r);
    }
    /// `cleanup.policy` has `compact`: the cleaner compacts the sealed segments.
    pub fn compact(&self) -> bool {
        self.compact.load(Ordering::Relaxed)
    }
    /// `cleanup.policy` has `delete`: retention deletes old segments.
    pub fn delete(&self) -> bool {
        self.delete.load(Ordering::Relaxed)
    }
    pub fn delete_retention_ms(&self) -> u64 {
        self.delete_retention_ms.load(Ordering::Relaxed)
    }
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes.load(Ordering::Relaxed)
    }
    pub fn segment_ms(&self) -> Option<u64> {
        unopt(self.segment_ms.load(Ordering::Relaxed))
    }
    pub fn retention_bytes(&self) -> Option<u64> {
        unopt(self.retention_bytes.load(Ordering::Relaxed))
    }
    pub fn retention_ms(&self) -> Option<u64> {
        unopt(self.retention_ms.load(Ordering::Relaxed))
    }
    pub fn message_max_bytes(&self) -> usize {
        self.message_max_bytes.load(Ordering::Relaxed) as usize
    }
    pub fn min_insync_replicas(&self) -> u32 {
        self.min_insync_replicas.load(Ordering::Relaxed)
    }
    pub fn log_append_time(&self) -> bool {
        self.log_append_time.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_with_reasons() {
        let m = 16 << 20;
        assert_eq!(validate("retention.ms", "-1", m).unwrap(), "-1");
        assert!(validate("retention.ms", "-2", m).unwrap_err().0.contains("[-1, "));
        let e = validate("segment.bytes", "4294967296", m).unwrap_err().0;
        assert!(e.contains("segment.bytes") && e.contains("4294967296") && e.contains("2147483647"), "{e}");
        assert!(validate("segment.bytes", "13", m).is_err());
        assert_eq!(validate("cleanup.policy", "compact", m).unwrap(), "compact");
        assert_eq!(validate("cleanup.policy", "delete, compact", m).unwrap(), "compact,delete");
        assert!(validate("cleanup.policy", "compact,shred", m).unwrap_err().0.contains("compact, delete"));
        assert!(validate("delete.retention.ms", "-1", m).is_err());
        assert_eq!(validate("cleanup.policy", " delete ", m).unwrap(), "delete");
        assert!(validate("max.message.bytes", &(m + 1).to_string(), m).is_err());
        assert!(validate("no.such.key", "1", m).unwrap_err().0.contains("Unknown topic config name"));
        assert!(validate("index.interval.bytes", "1", m).is_err());
        assert!(validate("message.timestamp.type", "Bogus", m).is_err());
        assert!(TopicConfig::from_pairs([("retention.ms", "1"), ("retention.ms", "2")], m).is_err());
    }

    #[test]
    fn applies_and_round_trips() {
        let m = 16 << 20;
        let c = TopicConfig::from_pairs(
            [("segment.bytes", "1024"), ("retention.ms", "-1"), ("message.timestamp.type", "LogAppendTime")],
            m,
        )
        .unwrap();
        let l = c.apply(&LogConfig::default());
        assert_eq!(l.segment_bytes_max, 1024);
        assert_eq!(l.retention_ms, None);
        assert!(l.log_append_time);
        assert_eq!(TopicConfig::from_properties(&c.to_properties(), m).unwrap(), c);
        assert!(TopicConfig::from_properties("segment.bytes=abc\n", m).is_err());
        assert!(TopicConfig::from_properties("garbage line\n", m).is_err());
    }
}
