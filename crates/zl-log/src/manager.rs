//! All partitions under one data directory: `<data>/<topic>-<partition>/`, as Kafka lays them out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::topic_config::{self, ConfigError, TopicConfig};
use super::{Durability, LogConfig, Partition, RecoveryError};
use zl_io::Io;

/// Wakes long-polling readers when any partition's high watermark advances.
#[derive(Debug, Default)]
pub struct Notifier {
    epoch: Mutex<u64>,
    cv: Condvar,
}

impl Notifier {
    pub fn bump(&self) {
        let mut e = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        *e += 1;
        self.cv.notify_all();
    }
    pub fn epoch(&self) -> u64 {
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Wait until the epoch differs from `seen` or `deadline` passes; returns the epoch.
    pub fn wait_past(&self, seen: u64, deadline: Instant) -> u64 {
        let mut e = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        while *e == seen {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            e = self.cv.wait_timeout(e, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        *e
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("invalid topic name {0:?}: use 1-249 characters of [a-zA-Z0-9._-], not '.' or '..'")]
    InvalidName(String),
    #[error("topic {0:?} already exists")]
    AlreadyExists(String),
    #[error("unknown topic {0:?}")]
    Unknown(String),
    #[error("invalid partition count {0}: want 1..=100000")]
    InvalidPartitions(i64),
    #[error("cannot lock the data directory: {0}; refusing to start (two brokers on one directory lose acknowledged records)")]
    Locked(std::io::Error),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("{0}")]
    InvalidConfig(#[from] ConfigError),
    /// A stored topic configuration that cannot be read or parsed (refuses the start).
    #[error("{0}")]
    StoredConfig(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Descriptors a new partition holds open (its active segment and its recovery-point file).
pub const DESCRIPTORS_PER_PARTITION: u64 = 2;
/// Descriptors kept free for connections and segment rolls when creating topics: at least
/// this many, or a tenth of the process's limit if more.
pub const DESCRIPTORS_RESERVED_MIN: u64 = 256;

/// Refuse to create `partitions` partitions when their descriptors would leave less than the
/// reserve under RLIMIT_NOFILE (read from /proc/self/limits; skipped where that is unknown).
fn descriptor_headroom(partitions: u64) -> Result<(), TopicError> {
    let Some((open, limit)) = descriptors() else { return Ok(()) };
    let reserve = DESCRIPTORS_RESERVED_MIN.max(limit / 10);
    let need = partitions * DESCRIPTORS_PER_PARTITION;
    if open + need + reserve > limit {
        return Err(TopicError::Io(std::io::Error::other(format!(
            "{partitions} partitions need {need} file descriptors; {open} of the limit {limit} (RLIMIT_NOFILE) are open and \
             {reserve} are kept for connections: raise the limit (ulimit -n) or create fewer partitions"
        ))));
    }
    Ok(())
}

/// (descriptors open, soft RLIMIT_NOFILE) of this process.
pub fn descriptors() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft = limits.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?;
    let limit = soft.parse::<u64>().ok()?; // "unlimited" -> None: nothing to check
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some((open, limit))
}

pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// A topic's partitions, index = partition id.
pub type Topic = Arc<Vec<Arc<Partition>>>;

#[derive(Debug)]
pub struct LogManager {
    dir: PathBuf,
    io: Arc<dyn Io>,
    default_cfg: LogConfig,
    topics: RwLock<BTreeMap<String, Topic>>,
    /// Each topic's configuration overrides (absent: none), as persisted under
    /// `<dir>/topic-configs/`. Changed under `topic_changes`.
    configs: RwLock<BTreeMap<String, TopicConfig>>,
    /// Serializes changes of a topic's partition set that open files outside the `topics`
    /// lock ([`LogManager::add_partitions`]) with topic creation and deletion.
    topic_changes: Mutex<()>,
    notifier: Arc<Notifier>,
    stop: Arc<AtomicBool>,
    /// Partitions that failed recovery, with the reason (they are not served).
    pub failed: Mutex<Vec<String>>,
    /// Compacted partitions the log cleaner gave up on after cleaning one panicked (a bug),
    /// with the panic's message: skipped until the broker restarts, as Kafka's uncleanable
    /// partitions; the cleaner goes on with the others.
    uncleanable: Mutex<BTreeMap<(String, u32), String>>,
    /// What the background scrub checked and found ([`super::scrub`]).
    pub scrub: Arc<super::scrub::ScrubReport>,
    /// The data directory's exclusive lock (`Io::lock_dir`), held until `close` or drop.
    lock: Mutex<Option<std::fs::File>>,
}

impl LogManager {
    /// Open every partition under `dir` (recovering each), creating `dir` if needed.
    /// A partition that fails recovery is left out and reported, not silently repaired.
    /// The directory is locked first: a second LogManager (another broker process) on the
    /// same directory gets [`TopicError::Locked`] and opens nothing.
    pub fn open(dir: &Path, io: Arc<dyn Io>, cfg: LogConfig) -> Result<Arc<LogManager>, TopicError> {
        io.create_dir_all(dir)?;
        let lock = io.lock_dir(dir).map_err(TopicError::Locked)?;
        let notifier = Arc::new(Notifier::default());
        let mut found: BTreeMap<String, BTreeMap<u32, PathBuf>> = BTreeMap::new();
        for name in io.list_dir(dir)? {
            let Some((topic, part)) = name.rsplit_once('-') else { continue };
            let Ok(p) = part.parse::<u32>() else { continue };
            if !valid_topic_name(topic) || io.list_dir(&dir.join(&name)).is_err() {
                continue;
            }
            found.entry(topic.to_string()).or_default().insert(p, dir.join(&name));
        }
        // Topic configurations: a file that cannot be read or parsed refuses the start (the
        // topic would otherwise run with settings nobody chose); one whose topic has no
        // partition directory is left by a crash inside a create or delete and is removed.
        let mut configs = BTreeMap::new();
        topic_config::remove_temporaries(&*io, dir)?;
        for topic in topic_config::stored_topics(&*io, dir)? {
            if !found.contains_key(&topic) {
                tracing::warn!(topic, "removing the configuration of a topic with no partitions (an interrupted create or delete)");
                topic_config::remove(&*io, dir, &topic)?;
                continue;
            }
            if let Some(c) = topic_config::load(&*io, dir, &topic, cfg.batch_bytes_max).map_err(TopicError::StoredConfig)? {
                configs.insert(topic, c);
            }
        }
        let mut topics = BTreeMap::new();
        let mut failed = Vec::new();
        for (topic, parts) in found {
            let tcfg = configs.get(&topic).map_or_else(|| cfg.clone(), |c: &TopicConfig| c.apply(&cfg));
            let mut v = Vec::new();
            let mut ok = true;
            for (i, (p, path)) in parts.into_iter().enumerate() {
                if p as usize != i {
                    failed.push(format!("{topic}: partition {i} directory missing"));
                    ok = false;
                    break;
                }
                match Partition::open(&topic, p, &path, io.clone(), tcfg.clone(), notifier.clone()) {
                    Ok(part) => v.push(part),
                    Err(e) => {
                        tracing::error!("{topic}-{p}: {e}");
                        failed.push(format!("{topic}-{p}: {e}"));
                        ok = false;
                    }
                }
            }
            if ok {
                topics.insert(topic, Arc::new(v));
            }
        }
        let m = Arc::new(LogManager {
            dir: dir.to_path_buf(),
            io,
            default_cfg: cfg,
            topics: RwLock::new(topics),
            configs: RwLock::new(configs),
            topic_changes: Mutex::new(()),
            notifier,
            stop: Arc::new(AtomicBool::new(false)),
            failed: Mutex::new(failed),
            uncleanable: Mutex::new(BTreeMap::new()),
            scrub: Default::default(),
            lock: Mutex::new(lock),
        });
        m.start_background();
        super::scrub::start(Arc::downgrade(&m), m.stop.clone(), m.scrub.clone(), m.default_cfg.scrub_rate_mib);
        super::cleaner::start(Arc::downgrade(&m), m.stop.clone());
        Ok(m)
    }

    fn start_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        let tick_ms = match self.default_cfg.durability {
            Durability::Interval { ms } => ms.min(1000),
            _ => 1000,
        };
        let spawned = std::thread::Builder::new().name("log-maintenance".into()).spawn(move || {
            let mut last_retention = Instant::now();
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(tick_ms));
                let Some(m) = weak.upgrade() else { break };
                let parts = m.all_partitions();
                // Each partition by its own durability (a topic may override the default).
                for p in &parts {
                    let what = match p.config().durability {
                        Durability::Interval { .. } => "interval flush",
                        // Group mode stages appends until a waiter's group commit writes them;
                        // a caller that never waits still gets its records written and visible.
                        Durability::Group if p.has_unsynced() && !p.is_poisoned() => "background group commit",
                        _ => continue,
                    };
                    if let Err(e) = p.flush() {
                        tracing::warn!("{}-{}: {what}: {e}", p.topic, p.index);
                    }
                }
                if last_retention.elapsed() >= Duration::from_secs(5) {
                    last_retention = Instant::now();
                    let now = super::now_ms();
                    for p in &parts {
                        let expired = p.expire_producers(now);
                        if expired > 0 {
                            tracing::debug!("{}-{}: {expired} idle producer(s) expired", p.topic, p.index);
                        }
                        // `cleanup.policy=compact` alone: no segment is deleted for its age or size.
                        if !p.live().delete() {
                            continue;
                        }
                        if let Err(e) = p.enforce_retention() {
                            tracing::warn!("{}-{}: retention: {e}", p.topic, p.index);
                        }
                    }
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start log maintenance thread: {e}");
        }
    }

    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }
    pub fn config(&self) -> &LogConfig {
        &self.default_cfg
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn topic(&self, name: &str) -> Option<Topic> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }
    /// The partitions the log cleaner skips because cleaning them panicked: (topic, partition,
    /// the panic's message).
    pub fn uncleanable_partitions(&self) -> Vec<(String, u32, String)> {
        let u = self.uncleanable.lock().unwrap_or_else(|p| p.into_inner());
        u.iter().map(|((t, p), why)| (t.clone(), *p, why.clone())).collect()
    }

    pub(crate) fn mark_uncleanable(&self, topic: &str, partition: u32, why: String) {
        self.uncleanable.lock().unwrap_or_else(|p| p.into_inner()).insert((topic.to_string(), partition), why);
    }

    pub fn partition(&self, topic: &str, p: i32) -> Option<Arc<Partition>> {
        let t = self.topic(topic)?;
        usize::try_from(p).ok().and_then(|i| t.get(i).cloned())
    }
    pub fn topic_names(&self) -> Vec<String> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().flat_map(|t| t.iter().cloned()).collect()
    }

    /// Create a topic with `partitions` partitions (durable before it returns), with `cfg`
    /// (not persisted: tests of per-topic log settings) or else the broker's defaults. The
    /// partitions are created and fsynced without the `topics` lock (topic changes are
    /// serialized by `topic_changes`), so produce and fetch on other topics go on meanwhile; the
    /// topic is inserted, visible to them, once it is durable.
    pub fn create_topic(&self, name: &str, partitions: i32, cfg: Option<LogConfig>) -> Result<Topic, TopicError> {
        self.create(name, partitions, cfg, TopicConfig::default())
    }

    /// Create a topic with `partitions` partitions and the configuration overrides `overrides`
    /// (durable before it returns: the configuration file is written first, so a crash leaves
    /// either no topic or one with its configuration; a stray file is removed at the next open).
    pub fn create_topic_with_config(&self, name: &str, partitions: i32, overrides: TopicConfig) -> Result<Topic, TopicError> {
        self.create(name, partitions, None, overrides)
    }

    fn create(&self, name: &str, partitions: i32, base: Option<LogConfig>, overrides: TopicConfig) -> Result<Topic, TopicError> {
        if !valid_topic_name(name) {
            return Err(TopicError::InvalidName(name.to_string()));
        }
        if !(1..=100_000).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(partitions as i64));
        }
        let _changes = self.topic_changes.lock().unwrap_or_else(|p| p.into_inner());
        if self.topic(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        // A directory of this name that is not a served topic is one whose recovery failed at
        // start (a damaged log or checkpoint): creating over it would fail and then remove it.
        if let Some(p) = (0..partitions).find(|p| self.io.exists(&self.dir.join(format!("{name}-{p}")))) {
            return Err(TopicError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{}: the directory of {name}-{p} exists but the topic is not served (its recovery failed at start, \
                     see the log): refusing to create over it",
                    self.dir.display()
                ),
            )));
        }
        let cfg = overrides.apply(base.as_ref().unwrap_or(&self.default_cfg));
        descriptor_headroom(partitions as u64)?;
        if overrides.is_empty() {
            // A file left by a failed creation or deletion of this name must not configure
            // the new topic (removed, durably, only when there is one).
            topic_config::remove(&*self.io, &self.dir, name)?;
        } else {
            topic_config::store(&*self.io, &self.dir, name, &overrides)?;
        }
        let mut v = Vec::with_capacity(partitions as usize);
        for p in 0..partitions as u32 {
            let path = self.dir.join(format!("{name}-{p}"));
            match Partition::open(name, p, &path, self.io.clone(), cfg.clone(), self.notifier.clone()) {
                Ok(part) => v.push(part),
                Err(e) => {
                    // Refused whole: close what was opened and remove every directory made.
                    drop(v);
                    for q in 0..=p {
                        let _ = self.io.remove_dir_all(&self.dir.join(format!("{name}-{q}")));
                    }
                    let _ = self.io.sync_dir(&self.dir);
                    let _ = topic_config::remove(&*self.io, &self.dir, name);
                    tracing::warn!(topic = name, partitions, "topic creation failed at partition {p}, removed what was created: {e}");
                    return Err(e.into());
                }
            }
        }
        self.io.sync_dir(&self.dir)?;
        let t: Topic = Arc::new(v);
        // Configuration first, then the topic: a reader that sees the topic sees its overrides.
        {
            let mut configs = self.configs.write().unwrap_or_else(|p| p.into_inner());
            if overrides.is_empty() {
                configs.remove(name);
            } else {
                configs.insert(name.to_string(), overrides);
            }
        }
        self.topics.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Get or create (with `partitions`) a topic.
    pub fn get_or_create(&self, name: &str, partitions: i32) -> Result<Topic, TopicError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        match self.create_topic(name, partitions, None) {
            Err(TopicError::AlreadyExists(_)) => self.topic(name).ok_or_else(|| TopicError::Unknown(name.into())),
            r => r,
        }
    }

    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let _changes = self.topic_changes.lock().unwrap_or_else(|p| p.into_inner());
        let t = self
            .topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        for p in t.iter() {
            p.delete()?;
        }
        self.configs.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        topic_config::remove(&*self.io, &self.dir, name)?;
        Ok(())
    }

    /// Grow `name` to `count` partitions (CreatePartitions), durable before it returns: the new
    /// partitions (with the topic's configuration) are opened and the data directory fsynced
    /// without the `topics` lock, so produce and fetch on every topic go on meanwhile; the
    /// grown topic is swapped in at the end. `count` must exceed the current count.
    pub fn add_partitions(&self, name: &str, count: i32) -> Result<Topic, TopicError> {
        let _changes = self.topic_changes.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.topic(name).ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        if !(1..=100_000).contains(&count) || (count as usize) <= old.len() {
            return Err(TopicError::InvalidPartitions(count as i64));
        }
        descriptor_headroom((count as usize - old.len()) as u64)?;
        let cfg = self.topic_config(name).apply(&self.default_cfg);
        let mut v: Vec<Arc<Partition>> = old.iter().cloned().collect();
        let opened = (old.len() as u32..count as u32).try_for_each(|p| {
            let path = self.dir.join(format!("{name}-{p}"));
            v.push(Partition::open(name, p, &path, self.io.clone(), cfg.clone(), self.notifier.clone())?);
            Ok::<(), TopicError>(())
        });
        if let Err(e) = opened.and_then(|()| self.io.sync_dir(&self.dir).map_err(TopicError::from)) {
            // Leave no partial partition set behind (a restart would serve it): the directory
            // of the partition that failed to open, then the opened ones, highest first, so
            // what is on disk stays a gap-free prefix (a gap fails the whole topic at start).
            let failed = self.dir.join(format!("{name}-{}", v.len()));
            if self.io.exists(&failed) {
                if let Err(d) = self.io.remove_dir_all(&failed).and_then(|()| self.io.sync_dir(&self.dir)) {
                    tracing::error!("{}: cannot remove after a failed CreatePartitions: {d}", failed.display());
                }
            }
            for p in v[old.len()..].iter().rev() {
                if let Err(d) = p.delete() {
                    tracing::error!("{name}-{}: cannot remove after a failed CreatePartitions: {d}", p.index);
                }
            }
            return Err(e);
        }
        let t: Topic = Arc::new(v);
        self.topics.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), t.clone());
        tracing::info!(topic = name, from = old.len(), to = count, "partitions added");
        Ok(t)
    }

    /// A topic's configuration overrides (empty: none, or no such topic).
    pub fn topic_config(&self, name: &str) -> TopicConfig {
        self.configs.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned().unwrap_or_default()
    }

    /// Replace a topic's configuration overrides: persisted (atomically) first, then applied
    /// to its running partitions. Validation is the caller's (a [`TopicConfig`] holds only
    /// validated values).
    pub fn alter_topic_config(&self, name: &str, overrides: TopicConfig) -> Result<(), TopicError> {
        let _changes = self.topic_changes.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self.topic(name).ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        topic_config::store(&*self.io, &self.dir, name, &overrides)?;
        let cfg = overrides.apply(&self.default_cfg);
        self.configs.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), overrides);
        for p in topic.iter() {
            p.live().set(&cfg);
        }
        tracing::info!(topic = name, "topic configuration changed");
        Ok(())
    }

    /// Flush and checkpoint every partition (clean shutdown). Returns the first error.
    pub fn close(&self) -> Result<(), super::AppendError> {
        self.stop.store(true, Ordering::Release);
        let mut first = Ok(());
        for p in self.all_partitions() {
            if let Err(e) = p.close() {
                tracing::warn!("{}-{}: close: {e}", p.topic, p.index);
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        // Everything is flushed: another broker may open the directory now.
        drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()).take());
        first
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
