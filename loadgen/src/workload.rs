//! Workload definitions: YAML files accepting the OpenMessaging Benchmark (OMB) workload fields
//! plus ours. Unknown fields are an error (`deny_unknown_fields`), so a typo never silently runs
//! a different benchmark.
//!
//! OMB fields: `name`, `topics`, `partitionsPerTopic`, `messageSize`, `payloadFile`,
//! `keyDistributor`, `subscriptionsPerTopic`, `producersPerTopic`, `consumerPerSubscription`,
//! `producerRate`, `consumerBacklogSizeGB`, `testDurationMinutes`, `warmupDurationMinutes`,
//! `useRandomizedPayloads`, `randomBytesRatio`, `randomizedPayloadPoolSize`.
//! Ours: `acks`, `durability`, `directIo`, `durationSeconds`, `warmupSeconds`, `drainSeconds`, `batchSize`,
//! `lingerMs`, `maxInFlight`, `keySpace`, `zipfExponent`, `p99BoundMs`, `searchStepSeconds`,
//! `searchStartRate`, `searchHalfRate`.
//! Producer settings: `compression`, `idempotent`, `keys` (`{distribution, count, zipfS}`, an
//! alternative spelling of `keyDistributor`/`keySpace`/`zipfExponent`), `headers`,
//! `headerValueBytes`; `acks` is 0, 1, -1 or `all`; `transactionRecords` (records per
//! transaction, 0 = off; implies `idempotent`) and `transactionalId` (the transactional ids'
//! prefix, default unique per run).
//! Consumers: `isolationLevel` (`read_uncommitted` | `read_committed`, default read_committed
//! when transactional), `consumerMode` (`fetch` | `group`), `consumerGroup`, `commitIntervalMs`,
//! `heartbeatIntervalMs`, `sessionTimeoutMs`, `groupAssignor`, `extraConsumerJoinSeconds`,
//! `extraConsumerLeaveSeconds`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// How record keys (and so partitions) are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum KeyDistributor {
    /// No key; the producer fills one partition's batch, then moves to the next (sticky).
    #[serde(rename = "NO_KEY")]
    NoKey,
    /// Keys cycle through the key space.
    #[serde(rename = "KEY_ROUND_ROBIN")]
    RoundRobin,
    /// Uniformly random key from the key space (OMB's `RANDOM_NANO`).
    #[serde(rename = "RANDOM_NANO", alias = "RANDOM")]
    Random,
    /// Zipf-distributed key (hot keys), exponent `zipfExponent`.
    #[serde(rename = "ZIPF")]
    Zipf,
}

/// One workload. Field names follow OMB (camelCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    pub name: String,
    #[serde(default = "one")]
    pub topics: u32,
    #[serde(default = "one")]
    pub partitions_per_topic: u32,
    #[serde(default = "default_message_size")]
    pub message_size: u32,
    /// OMB: a file whose bytes are the payload. If set, `messageSize` is its length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_file: Option<String>,
    #[serde(default = "default_key_distributor")]
    pub key_distributor: KeyDistributor,
    #[serde(default = "one")]
    pub subscriptions_per_topic: u32,
    #[serde(default = "one")]
    pub producers_per_topic: u32,
    #[serde(default = "one")]
    pub consumer_per_subscription: u32,
    /// Records per second over all producers; 0 = search for the highest rate within `p99BoundMs`.
    #[serde(default = "default_rate")]
    pub producer_rate: f64,
    /// If > 0: produce this much with consumers stopped, then measure how fast they drain it.
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_duration_minutes: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_minutes: Option<f64>,
    /// OMB: accepted; payloads always come from a random pool here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_randomized_payloads: Option<bool>,
    /// OMB: fraction of random bytes in each pooled payload (the rest zero). Default 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_bytes_ratio: Option<f64>,
    #[serde(default = "default_pool")]
    pub randomized_payload_pool_size: u32,

    // ---- ours ----
    /// 0 (no response), 1 (leader) or -1 / `all`.
    #[serde(default = "default_acks", deserialize_with = "de_acks")]
    pub acks: i16,
    /// Broker durability for the embedded engine: never | group | interval=<ms>.
    #[serde(default = "default_durability")]
    pub durability: String,
    /// Embedded engine: write produce batches of >= 256 KiB in `group` durability with O_DIRECT
    /// (`true`) or through the page cache (`false`, the engine's default).
    #[serde(default = "default_direct_io")]
    pub direct_io: bool,
    /// Measured phase length in seconds (wins over `testDurationMinutes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Warmup length in seconds (wins over `warmupDurationMinutes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_seconds: Option<f64>,
    /// Upper bound on the drain phase (waiting for acks and consumers to catch up).
    #[serde(default = "default_drain")]
    pub drain_seconds: f64,
    /// Batch size in bytes per partition (Kafka `batch.size`).
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// Linger in milliseconds (Kafka `linger.ms`).
    #[serde(default = "default_linger")]
    pub linger_ms: f64,
    /// Bound on unacknowledged Produce requests per partition.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    /// Distinct keys for the keyed distributors.
    #[serde(default = "default_key_space")]
    pub key_space: u32,
    #[serde(default = "default_zipf")]
    pub zipf_exponent: f64,
    /// For `producerRate: 0`: the p99 publish latency bound of the rate search.
    #[serde(default = "default_p99_bound")]
    pub p99_bound_ms: f64,
    /// For `producerRate: 0`: length of each trial of the search.
    #[serde(default = "default_search_step")]
    pub search_step_seconds: f64,
    /// For `producerRate: 0`: the first rate of the search's ramp (x4 per step).
    #[serde(default = "default_search_start")]
    pub search_start_rate: f64,
    /// For `producerRate: 0`: after the confirmed rate, a full-length run at half of it for the
    /// latency with headroom (default true; `loadgen versus` workloads skip it: their latency
    /// comparison runs both targets at one rate).
    #[serde(default = "yes")]
    pub search_half_rate: bool,
    /// Batch compression: none | gzip | snappy | lz4 | zstd.
    #[serde(default)]
    pub compression: crate::produce::Codec,
    /// Idempotent producer (InitProducerId, sequence numbers, retries that never duplicate).
    #[serde(default)]
    pub idempotent: bool,
    /// Transactional producer: each producer thread commits a transaction every this many
    /// scheduled records (0 = not transactional). Implies `idempotent` (and needs acks all).
    #[serde(default)]
    pub transaction_records: u64,
    /// Prefix of the transactional ids (`<prefix>-<topic>-<producer>`, one per producer
    /// thread); default `loadgen-<run id>` (unique per run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
    /// The consumers' Fetch isolation: `read_uncommitted` | `read_committed`; default
    /// read_committed in a transactional run (`transactionRecords` > 0), else read_uncommitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_level: Option<Isolation>,
    /// Key distribution, count and Zipf exponent in one place; when present it sets
    /// `keyDistributor`, `keySpace` and `zipfExponent` (which must then be absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Keys>,
    /// Headers per record.
    #[serde(default)]
    pub headers: u32,
    /// Bytes of each header's value.
    #[serde(default = "default_header_value_bytes")]
    pub header_value_bytes: u32,
    /// How consumers read: `fetch` (raw Fetch of fixed partitions, the default) or `group` (a
    /// consumer group per subscription: JoinGroup/SyncGroup/Heartbeat/OffsetCommit).
    #[serde(default)]
    pub consumer_mode: ConsumerMode,
    /// Group mode: the group id (one subscription; `<id>-<n>` for several). Default: per run,
    /// `loadgen-<run id>-<workload>-<n>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// Group mode: OffsetCommit every this many ms (and before a rejoin and at the end).
    #[serde(default = "default_commit_interval")]
    pub commit_interval_ms: u64,
    /// Group mode: Heartbeat every this many ms.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_ms: u64,
    /// Group mode: the members' session timeout (brokers accept 6,000..=1,800,000 by default).
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u32,
    /// Group mode: `range` (default) or `roundrobin`.
    #[serde(default)]
    pub group_assignor: crate::group::Assignor,
    /// Group mode: an extra member joins the first subscription's group this many seconds
    /// after the measured window begins (a rebalance under load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_consumer_join_seconds: Option<f64>,
    /// Group mode: the extra member leaves this many seconds after the measured window begins
    /// (another rebalance); without it, it stays to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_consumer_leave_seconds: Option<f64>,
    /// External brokers: TLS and SASL (`protocol`, `saslMechanism`, `saslCredentialsFile`,
    /// `tlsCaFile`, `tlsCertFile`, `tlsKeyFile`, `tlsVerifyHostname`; see `security.rs`).
    #[serde(default, skip_serializing_if = "crate::security::SecurityConfig::is_default")]
    pub security: crate::security::SecurityConfig,
}

/// `isolationLevel`: what the consumers' Fetch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Everything up to the high watermark (isolation level 0).
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
    /// Committed records only: up to the last stable offset, aborted transactions skipped (1).
    #[value(name = "read_committed")]
    ReadCommitted,
}

impl Isolation {
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "read_uncommitted",
            Isolation::ReadCommitted => "read_committed",
        }
    }
}

/// `consumerMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerMode {
    #[default]
    Fetch,
    Group,
}

impl ConsumerMode {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerMode::Fetch => "fetch",
            ConsumerMode::Group => "group",
        }
    }
}

fn default_commit_interval() -> u64 {
    1000
}

fn default_heartbeat_interval() -> u64 {
    1000
}

fn default_session_timeout() -> u32 {
    10_000
}

/// `keys: {distribution, count, zipfS}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Keys {
    /// none | round-robin | random | zipf.
    pub distribution: String,
    #[serde(default = "default_key_space")]
    pub count: u32,
    #[serde(default = "default_zipf", rename = "zipfS")]
    pub zipf_s: f64,
}

impl Keys {
    /// Parse the CLI form `DIST[:COUNT[:S]]`, e.g. `zipf:1000:1.2`.
    pub fn parse_cli(s: &str) -> Result<Keys, String> {
        let mut it = s.split(':');
        let distribution = it.next().unwrap_or_default().to_string();
        let count = match it.next() {
            Some(c) => c.parse().map_err(|_| format!("--keys {s:?}: count {c:?} is not a number"))?,
            None => default_key_space(),
        };
        let zipf_s = match it.next() {
            Some(z) => z.parse().map_err(|_| format!("--keys {s:?}: zipf exponent {z:?} is not a number"))?,
            None => default_zipf(),
        };
        if it.next().is_some() {
            return Err(format!("--keys {s:?}: want DIST[:COUNT[:S]]"));
        }
        Ok(Keys { distribution, count, zipf_s })
    }

    pub fn distributor(&self) -> Result<KeyDistributor, String> {
        match self.distribution.as_str() {
            "none" => Ok(KeyDistributor::NoKey),
            "round-robin" => Ok(KeyDistributor::RoundRobin),
            "random" => Ok(KeyDistributor::Random),
            "zipf" => Ok(KeyDistributor::Zipf),
            d => Err(format!("keys.distribution must be none, round-robin, random or zipf; got {d:?}")),
        }
    }
}

impl KeyDistributor {
    /// The `keys.distribution` spelling.
    pub fn name(self) -> &'static str {
        match self {
            KeyDistributor::NoKey => "none",
            KeyDistributor::RoundRobin => "round-robin",
            KeyDistributor::Random => "random",
            KeyDistributor::Zipf => "zipf",
        }
    }
}

fn default_header_value_bytes() -> u32 {
    16
}

/// acks as a number (0, 1, -1) or `all`.
fn de_acks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum A {
        N(i16),
        S(String),
    }
    match A::deserialize(d)? {
        A::N(n) => Ok(n),
        A::S(s) => parse_acks(&s).map_err(serde::de::Error::custom),
    }
}

/// `--acks` / `acks:` text: 0, 1, -1 or all.
pub fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "all" | "-1" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err(format!("acks must be 0, 1, -1 or all; got {s:?}")),
    }
}

fn default_search_start() -> f64 {
    2_000.0
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}
fn default_message_size() -> u32 {
    100
}
fn default_key_distributor() -> KeyDistributor {
    KeyDistributor::NoKey
}
fn default_rate() -> f64 {
    10_000.0
}
fn default_pool() -> u32 {
    1000
}
fn default_acks() -> i16 {
    1
}
fn default_durability() -> String {
    "never".into()
}
fn default_direct_io() -> bool {
    zl_log::LogConfig::default().direct_io
}
fn default_drain() -> f64 {
    10.0
}
fn default_batch() -> u32 {
    64 * 1024
}
fn default_linger() -> f64 {
    1.0
}
fn default_in_flight() -> u32 {
    5
}
fn default_key_space() -> u32 {
    10_000
}
fn default_zipf() -> f64 {
    1.0
}
fn default_p99_bound() -> f64 {
    10.0
}
fn default_search_step() -> f64 {
    3.0
}

/// Largest record we generate: a batch must fit the broker's default frame limit comfortably.
pub const MESSAGE_SIZE_MAX: u32 = 16 << 20;
/// Largest rate we accept (records/s over all producers); beyond this the schedule is meaningless.
pub const PRODUCER_RATE_MAX: f64 = 1e9;

/// Workloads shipped in `loadgen/workloads/`, embedded so `--workload smoke` works from anywhere.
pub const BUILTIN: &[(&str, &str)] = &[
    ("smoke", include_str!("../workloads/smoke.yaml")),
    ("max-throughput-100b", include_str!("../workloads/max-throughput-100b.yaml")),
    ("throughput-1kb", include_str!("../workloads/throughput-1kb.yaml")),
    ("many-partitions-1000", include_str!("../workloads/many-partitions-1000.yaml")),
    ("durable-fsync", include_str!("../workloads/durable-fsync.yaml")),
    ("backlog-drain", include_str!("../workloads/backlog-drain.yaml")),
    ("max-rate-search", include_str!("../workloads/max-rate-search.yaml")),
    ("max-sustainable", include_str!("../workloads/max-sustainable.yaml")),
];

impl Workload {
    /// The consumers' Fetch isolation: `isolationLevel`, by default read_committed in a
    /// transactional run (records of aborted or open transactions never counted as consumed),
    /// else read_uncommitted.
    pub fn isolation(&self) -> Isolation {
        match self.isolation_level {
            Some(i) => i,
            None if self.transaction_records > 0 => Isolation::ReadCommitted,
            None => Isolation::ReadUncommitted,
        }
    }

    /// [`Self::isolation`] as the Fetch field: 0 read_uncommitted, 1 read_committed.
    pub fn isolation_level(&self) -> i8 {
        match self.isolation() {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => 1,
        }
    }

    /// Parse and validate YAML text. The error is one line.
    pub fn from_yaml(text: &str) -> Result<Workload, String> {
        let mut w: Workload = serde_yaml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        if w.keys.is_some() {
            // `keys` replaces the three OMB-style fields: refuse both spellings at once.
            let v: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
            for f in ["keyDistributor", "keySpace", "zipfExponent"] {
                if v.get(f).is_some() {
                    return Err(format!("give either keys or {f}, not both"));
                }
            }
        }
        w.apply_keys()?;
        w.validate()?;
        Ok(w)
    }

    /// A built-in name (see [`BUILTIN`]) or a path to a YAML file.
    pub fn load(name_or_path: &str) -> Result<Workload, String> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Workload::from_yaml(text).map_err(|e| format!("built-in workload {name_or_path}: {e}"));
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            format!("cannot read workload {name_or_path:?}: {e} (built-ins: {})", names.join(", "))
        })?;
        Workload::from_yaml(&text).map_err(|e| format!("workload {}: {e}", path.display()))
    }

    pub fn smoke() -> Workload {
        Workload::load("smoke").expect("built-in smoke workload is valid")
    }

    /// Copy `keys` (when given) into `keyDistributor`, `keySpace` and `zipfExponent`.
    pub fn apply_keys(&mut self) -> Result<(), String> {
        if let Some(k) = &self.keys {
            self.key_distributor = k.distributor()?;
            self.key_space = k.count;
            self.zipf_exponent = k.zipf_s;
        }
        Ok(())
    }

    /// Check ranges; an impossible rate or size is refused here, before any connection.
    pub fn validate(&self) -> Result<(), String> {
        self.security.validate()?;
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if self.topics == 0 || self.topics > 10_000 {
            return Err(format!("topics must be in 1..=10000, got {}", self.topics));
        }
        if self.partitions_per_topic == 0 || self.partitions_per_topic > 100_000 {
            return Err(format!("partitionsPerTopic must be in 1..=100000, got {}", self.partitions_per_topic));
        }
        if self.payload_file.is_none() && (self.message_size == 0 || self.message_size > MESSAGE_SIZE_MAX) {
            return Err(format!("messageSize must be in 1..={MESSAGE_SIZE_MAX} bytes, got {}", self.message_size));
        }
        if !self.producer_rate.is_finite() || self.producer_rate < 0.0 || self.producer_rate > PRODUCER_RATE_MAX {
            return Err(format!(
                "producerRate must be 0 (search) or a positive rate up to {PRODUCER_RATE_MAX:e} records/s, got {}",
                self.producer_rate
            ));
        }
        let bytes_per_s = self.producer_rate * self.message_size as f64;
        if bytes_per_s > 100e9 {
            return Err(format!("producerRate × messageSize = {bytes_per_s:.3e} B/s is impossible (> 100 GB/s)"));
        }
        if self.producers_per_topic == 0 || self.producers_per_topic > 64 {
            return Err(format!("producersPerTopic must be in 1..=64, got {}", self.producers_per_topic));
        }
        if self.consumer_per_subscription > 64 || self.subscriptions_per_topic > 16 {
            return Err("consumerPerSubscription must be <= 64 and subscriptionsPerTopic <= 16".into());
        }
        if !(self.acks == 0 || self.acks == 1 || self.acks == -1) {
            return Err(format!("acks must be 0, 1 or -1 (all), got {}", self.acks));
        }
        if self.transaction_records > 0 && self.acks != -1 {
            return Err(format!("transactionRecords requires acks all (-1), got acks {}", self.acks));
        }
        if self.transactional_id.as_ref().is_some_and(|t| t.is_empty() || t.len() > 200) {
            return Err("transactionalId must be 1..=200 characters".into());
        }
        if self.idempotent && self.acks != -1 {
            return Err(format!("idempotent requires acks all (-1), got acks {}", self.acks));
        }
        if (self.idempotent || self.transaction_records > 0) && self.max_in_flight > 5 {
            return Err(format!("idempotent allows at most 5 requests in flight per partition (Kafka's bound), got maxInFlight {}", self.max_in_flight));
        }
        if self.headers > 1000 || self.header_value_bytes > 1 << 20 {
            return Err(format!(
                "headers must be <= 1000 and headerValueBytes <= 1048576, got {} and {}",
                self.headers, self.header_value_bytes
            ));
        }
        self.durability.parse::<zl_log::Durability>()?;
        for (field, v) in [
            ("durationSeconds", self.duration_seconds),
            ("warmupSeconds", self.warmup_seconds),
            ("testDurationMinutes", self.test_duration_minutes),
            ("warmupDurationMinutes", self.warmup_duration_minutes),
        ] {
            if let Some(v) = v {
                if !v.is_finite() || !(0.0..=7.0 * 86_400.0).contains(&v) {
                    return Err(format!("{field} must be between 0 and one week, got {v}"));
                }
            }
        }
        if self.duration_s() <= 0.0 {
            return Err("the measured phase must last more than 0 seconds".into());
        }
        if self.batch_size < 64 || self.batch_size > 64 << 20 {
            return Err(format!("batchSize must be in 64..=67108864 bytes, got {}", self.batch_size));
        }
        if !self.linger_ms.is_finite() || self.linger_ms < 0.0 || self.linger_ms > 60_000.0 {
            return Err(format!("lingerMs must be in 0..=60000, got {}", self.linger_ms));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1024 {
            return Err(format!("maxInFlight must be in 1..=1024, got {}", self.max_in_flight));
        }
        if self.key_space == 0 || self.key_space > 10_000_000 {
            return Err(format!("keySpace must be in 1..=10000000, got {}", self.key_space));
        }
        if !self.zipf_exponent.is_finite() || self.zipf_exponent <= 0.0 || self.zipf_exponent > 10.0 {
            return Err(format!("zipfExponent must be in (0, 10], got {}", self.zipf_exponent));
        }
        if !self.p99_bound_ms.is_finite() || self.p99_bound_ms <= 0.0 {
            return Err(format!("p99BoundMs must be > 0, got {}", self.p99_bound_ms));
        }
        if self.randomized_payload_pool_size == 0 || self.randomized_payload_pool_size > 1_000_000 {
            return Err("randomizedPayloadPoolSize must be in 1..=1000000".into());
        }
        if let Some(r) = self.random_bytes_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("randomBytesRatio must be in [0, 1], got {r}"));
            }
        }
        if self.consumer_mode == ConsumerMode::Group {
            if self.commit_interval_ms == 0 || self.commit_interval_ms > 3_600_000 {
                return Err(format!("commitIntervalMs must be in 1..=3600000, got {}", self.commit_interval_ms));
            }
            if self.session_timeout_ms < 1000 || self.session_timeout_ms > 1_800_000 {
                return Err(format!("sessionTimeoutMs must be in 1000..=1800000, got {}", self.session_timeout_ms));
            }
            if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.session_timeout_ms as u64 {
                return Err(format!(
                    "heartbeatIntervalMs must be > 0 and below sessionTimeoutMs ({}), got {}",
                    self.session_timeout_ms, self.heartbeat_interval_ms
                ));
            }
            if let Some(g) = &self.consumer_group {
                if g.is_empty() || g.len() > 200 {
                    return Err("consumerGroup must be 1..=200 characters".into());
                }
            }
        } else if self.consumer_group.is_some() || self.extra_consumer_join_seconds.is_some() || self.extra_consumer_leave_seconds.is_some() {
            return Err("consumerGroup and extraConsumerJoinSeconds/LeaveSeconds need consumerMode: group".into());
        }
        for (field, v) in [("extraConsumerJoinSeconds", self.extra_consumer_join_seconds), ("extraConsumerLeaveSeconds", self.extra_consumer_leave_seconds)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(format!("{field} must be >= 0"));
            }
        }
        if let (Some(j), Some(l)) = (self.extra_consumer_join_seconds, self.extra_consumer_leave_seconds) {
            if l <= j {
                return Err(format!("extraConsumerLeaveSeconds ({l}) must be after extraConsumerJoinSeconds ({j})"));
            }
        }
        if !self.consumer_backlog_size_gb.is_finite() || self.consumer_backlog_size_gb < 0.0 {
            return Err("consumerBacklogSizeGB must be >= 0".into());
        }
        if !self.drain_seconds.is_finite() || self.drain_seconds < 0.0 {
            return Err("drainSeconds must be >= 0".into());
        }
        if !self.search_step_seconds.is_finite() || self.search_step_seconds < 0.1 || self.search_step_seconds > 3600.0 {
            return Err(format!("searchStepSeconds must be in [0.1, 3600], got {}", self.search_step_seconds));
        }
        if !self.search_start_rate.is_finite() || self.search_start_rate < 1.0 || self.search_start_rate > PRODUCER_RATE_MAX {
            return Err(format!("searchStartRate must be in [1, {PRODUCER_RATE_MAX:e}], got {}", self.search_start_rate));
        }
        Ok(())
    }

    /// Measured phase length.
    pub fn duration_s(&self) -> f64 {
        self.duration_seconds.unwrap_or_else(|| self.test_duration_minutes.unwrap_or(0.25) * 60.0)
    }

    /// Warmup length.
    pub fn warmup_s(&self) -> f64 {
        self.warmup_seconds.unwrap_or_else(|| self.warmup_duration_minutes.unwrap_or(0.0) * 60.0)
    }

    pub fn total_partitions(&self) -> u32 {
        self.topics * self.partitions_per_topic
    }

    pub fn topic_names(&self) -> Vec<String> {
        (0..self.topics).map(|t| format!("{}-{t}", sanitize(&self.name))).collect()
    }
}

/// Topic names allow `[a-zA-Z0-9._-]`.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '-' }).collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Command-line overrides of the common fields (applied after loading, then re-validated).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Records per second over all producers (0 = search the max rate within --p99-bound-ms).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Record value size in bytes.
    #[arg(long)]
    pub message_size: Option<u32>,
    /// Partitions per topic.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Topics.
    #[arg(long)]
    pub topics: Option<u32>,
    /// Measured phase in seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Warmup in seconds.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Producers per topic.
    #[arg(long)]
    pub producers: Option<u32>,
    /// Consumers per subscription (0 = no consumers).
    #[arg(long)]
    pub consumers: Option<u32>,
    /// Batch size in bytes.
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Linger in ms.
    #[arg(long)]
    pub linger_ms: Option<f64>,
    /// acks: 0 (no response), 1, or -1/all.
    #[arg(long, allow_hyphen_values = true, value_parser = parse_acks)]
    pub acks: Option<i16>,
    /// Batch compression: none | gzip | snappy | lz4 | zstd.
    #[arg(long)]
    pub compression: Option<crate::produce::Codec>,
    /// Idempotent producer (needs acks all).
    #[arg(long)]
    pub idempotent: bool,
    /// Transactional producer: records per transaction (0 = off; implies --idempotent).
    #[arg(long)]
    pub transaction_records: Option<u64>,
    /// Prefix of the transactional ids (default: unique per run).
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// Consumers' Fetch isolation: read_uncommitted | read_committed (default read_committed
    /// with --transaction-records, else read_uncommitted).
    #[arg(long)]
    pub isolation_level: Option<Isolation>,
    /// Keys: DIST[:COUNT[:S]], DIST = none | round-robin | random | zipf (e.g. zipf:1000:1.1).
    #[arg(long, value_parser = Keys::parse_cli)]
    pub keys: Option<Keys>,
    /// Headers per record, optionally with each value's size: N[:BYTES] (e.g. 3:32).
    #[arg(long)]
    pub headers: Option<String>,
    /// Embedded broker durability: never | group | interval=<ms>.
    #[arg(long)]
    pub durability: Option<String>,
    /// Embedded broker: large durable batches with O_DIRECT (true) or buffered (false, default).
    #[arg(long)]
    pub direct_io: Option<bool>,
    /// p99 bound for the rate search, in ms.
    #[arg(long)]
    pub p99_bound_ms: Option<f64>,
    /// Max unacknowledged requests per partition.
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Seconds after the measured window to wait for outstanding acks (drainSeconds).
    #[arg(long)]
    pub drain: Option<f64>,
    /// Judged seconds of each max-rate search trial (searchStepSeconds).
    #[arg(long)]
    pub search_step: Option<f64>,
    /// Consumers: fetch (raw Fetch, default) or group (a consumer group per subscription).
    #[arg(long, value_enum)]
    pub consumer_mode: Option<ConsumerMode>,
    /// Consumer group id (implies --consumer-mode group).
    #[arg(long)]
    pub consumer_group: Option<String>,
    /// Group mode: OffsetCommit interval in ms (commitIntervalMs).
    #[arg(long)]
    pub commit_interval_ms: Option<u64>,
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
}

impl Overrides {
    pub fn apply(&self, w: &mut Workload) -> Result<(), String> {
        if let Some(v) = self.rate {
            w.producer_rate = v;
        }
        if let Some(v) = self.message_size {
            w.message_size = v;
            w.payload_file = None;
        }
        if let Some(v) = self.partitions {
            w.partitions_per_topic = v;
        }
        if let Some(v) = self.topics {
            w.topics = v;
        }
        if let Some(v) = self.duration {
            w.duration_seconds = Some(v);
        }
        if let Some(v) = self.drain {
            w.drain_seconds = v;
        }
        if let Some(v) = self.search_step {
            w.search_step_seconds = v;
        }
        if let Some(v) = self.consumer_mode {
            w.consumer_mode = v;
        }
        if let Some(v) = &self.consumer_group {
            w.consumer_mode = ConsumerMode::Group;
            w.consumer_group = Some(v.clone());
        }
        if let Some(v) = self.commit_interval_ms {
            w.commit_interval_ms = v;
        }
        if let Some(v) = self.warmup {
            w.warmup_seconds = Some(v);
        }
        if let Some(v) = self.producers {
            w.producers_per_topic = v;
        }
        if let Some(v) = self.consumers {
            w.consumer_per_subscription = v;
        }
        if let Some(v) = self.batch_size {
            w.batch_size = v;
        }
        if let Some(v) = self.linger_ms {
            w.linger_ms = v;
        }
        if let Some(v) = self.acks {
            w.acks = v;
        }
        if let Some(v) = &self.durability {
            w.durability = v.clone();
        }
        if let Some(v) = self.direct_io {
            w.direct_io = v;
        }
        if let Some(v) = self.p99_bound_ms {
            w.p99_bound_ms = v;
        }
        if let Some(v) = self.max_in_flight {
            w.max_in_flight = v;
        }
        if let Some(v) = self.compression {
            w.compression = v;
        }
        if self.idempotent {
            w.idempotent = true;
        }
        if let Some(n) = self.transaction_records {
            w.transaction_records = n;
        }
        if let Some(t) = &self.transactional_id {
            w.transactional_id = Some(t.clone());
        }
        if let Some(i) = self.isolation_level {
            w.isolation_level = Some(i);
        }
        if let Some(k) = &self.keys {
            w.keys = Some(k.clone());
            w.apply_keys()?;
        }
        self.security.apply(&mut w.security);
        if let Some(h) = &self.headers {
            let bad = || format!("--headers {h:?}: want N[:BYTES]");
            let (n, b) = h.split_once(':').map_or((h.as_str(), None), |(n, b)| (n, Some(b)));
            w.headers = n.parse().map_err(|_| bad())?;
            if let Some(b) = b {
                w.header_value_bytes = b.parse().map_err(|_| bad())?;
            }
        }
        w.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `isolationLevel`: read_committed by default when transactional, else read_uncommitted;
    /// set explicitly either way; any other spelling refused.
    #[test]
    fn isolation_level_defaults_to_read_committed_when_transactional() {
        let w = |y: &str| Workload::from_yaml(&format!("name: x\nacks: all\n{y}"));
        assert_eq!(w("").unwrap().isolation_level(), 0);
        assert_eq!(w("transactionRecords: 100\n").unwrap().isolation(), Isolation::ReadCommitted);
        assert_eq!(w("transactionRecords: 100\n").unwrap().isolation_level(), 1);
        assert_eq!(w("transactionRecords: 100\nisolationLevel: read_uncommitted\n").unwrap().isolation_level(), 0);
        assert_eq!(w("isolationLevel: read_committed\n").unwrap().isolation_level(), 1);
        assert!(w("isolationLevel: committed\n").is_err());
    }

    #[test]
    fn builtins_parse() {
        for (name, text) in BUILTIN {
            Workload::from_yaml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn omb_workload_parses() {
        let w = Workload::from_yaml(
            "name: 1 topic / 100 partitions / 1kb\ntopics: 1\npartitionsPerTopic: 100\nmessageSize: 1024\n\
             payloadFile: payload/payload-1Kb.data\nsubscriptionsPerTopic: 1\nconsumerPerSubscription: 1\n\
             producersPerTopic: 1\nproducerRate: 50000\nconsumerBacklogSizeGB: 0\ntestDurationMinutes: 15\n\
             warmupDurationMinutes: 1\nkeyDistributor: NO_KEY\n",
        )
        .unwrap();
        assert_eq!(w.partitions_per_topic, 100);
        assert_eq!(w.duration_s(), 900.0);
        assert_eq!(w.warmup_s(), 60.0);
    }

    #[test]
    fn unknown_field_is_refused() {
        let e = Workload::from_yaml("name: x\nmesageSize: 100\n").unwrap_err();
        assert!(e.contains("unknown field `mesageSize`"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn impossible_values_are_refused() {
        assert!(Workload::from_yaml("name: x\nproducerRate: -5\n").unwrap_err().contains("producerRate"));
        assert!(Workload::from_yaml("name: x\nmessageSize: 0\n").unwrap_err().contains("messageSize"));
        assert!(Workload::from_yaml("name: x\nmessageSize: 1000000000\n").unwrap_err().contains("messageSize"));
        assert!(Workload::from_yaml("name: x\ndurability: sometimes\n").unwrap_err().contains("durability"));
        assert!(Workload::from_yaml("name: x\nacks: 3\n").unwrap_err().contains("acks"));
    }

    #[test]
    fn producer_settings_parse_and_override() {
        let w = Workload::from_yaml("name: x\nacks: all\ncompression: zstd\nidempotent: true\nkeys: {distribution: zipf, count: 50, zipfS: 1.3}\nheaders: 2\n").unwrap();
        assert_eq!((w.acks, w.compression, w.idempotent, w.headers), (-1, crate::produce::Codec::Zstd, true, 2));
        assert_eq!((w.key_distributor, w.key_space, w.zipf_exponent), (KeyDistributor::Zipf, 50, 1.3));
        assert_eq!(Workload::from_yaml("name: x\nacks: 0\n").unwrap().acks, 0);
        let e = Workload::from_yaml("name: x\nkeys: {distribution: zipf}\nkeySpace: 5\n").unwrap_err();
        assert!(e.contains("either keys or keySpace"), "{e}");
        assert!(Workload::from_yaml("name: x\nkeys: {distribution: hashed}\n").unwrap_err().contains("keys.distribution"));
        assert!(Workload::from_yaml("name: x\nidempotent: true\nacks: 1\n").unwrap_err().contains("idempotent requires acks all"));
        assert!(Workload::from_yaml("name: x\ncompression: brotli\n").is_err());
        let mut w = Workload::from_yaml("name: x\nacks: -1\n").unwrap();
        Overrides {
            compression: Some(crate::produce::Codec::Lz4),
            idempotent: true,
            keys: Some(Keys::parse_cli("round-robin:7").unwrap()),
            headers: Some("4:32".into()),
            ..Default::default()
        }
        .apply(&mut w)
        .unwrap();
        assert_eq!((w.compression, w.idempotent, w.key_distributor, w.key_space), (crate::produce::Codec::Lz4, true, KeyDistributor::RoundRobin, 7));
        assert_eq!((w.headers, w.header_value_bytes), (4, 32));
        assert!(Overrides { headers: Some("x".into()), ..Default::default() }.apply(&mut w).unwrap_err().contains("--headers"));
        assert_eq!(parse_acks("all"), Ok(-1));
        assert!(parse_acks("2").is_err());
    }

    #[test]
    fn consumer_settings_parse_validate_and_override() {
        let w = Workload::from_yaml("name: x\n").unwrap();
        assert_eq!((w.consumer_mode, w.commit_interval_ms, w.group_assignor), (ConsumerMode::Fetch, 1000, crate::group::Assignor::Range));
        let w = Workload::from_yaml("name: x\nconsumerMode: group\ncommitIntervalMs: 250\ngroupAssignor: roundrobin\nextraConsumerJoinSeconds: 1\n").unwrap();
        assert_eq!((w.consumer_mode, w.commit_interval_ms, w.group_assignor), (ConsumerMode::Group, 250, crate::group::Assignor::RoundRobin));
        assert!(Workload::from_yaml("name: x\nconsumerGroup: g\n").unwrap_err().contains("consumerMode: group"));
        assert!(Workload::from_yaml("name: x\nconsumerMode: group\nheartbeatIntervalMs: 20000\n").unwrap_err().contains("heartbeatIntervalMs"));
        assert!(Workload::from_yaml("name: x\nconsumerMode: group\ncommitIntervalMs: 0\n").unwrap_err().contains("commitIntervalMs"));
        let e = Workload::from_yaml("name: x\nconsumerMode: group\nextraConsumerJoinSeconds: 2\nextraConsumerLeaveSeconds: 1\n").unwrap_err();
        assert!(e.contains("must be after"), "{e}");
        assert!(Workload::from_yaml("name: x\nconsumerMode: groups\n").is_err());
        let mut w = Workload::from_yaml("name: x\n").unwrap();
        Overrides { consumer_group: Some("g1".into()), commit_interval_ms: Some(100), ..Default::default() }.apply(&mut w).unwrap();
        assert_eq!((w.consumer_mode, w.consumer_group.as_deref(), w.commit_interval_ms), (ConsumerMode::Group, Some("g1"), 100));
    }

    #[test]
    fn direct_io_follows_the_engine_default_the_yaml_and_the_flag() {
        let w = Workload::from_yaml("name: x\n").unwrap();
        assert_eq!(w.direct_io, zl_log::LogConfig::default().direct_io);
        let mut w = Workload::from_yaml("name: x\ndirectIo: false\n").unwrap();
        assert!(!w.direct_io);
        Overrides { direct_io: Some(true), ..Default::default() }.apply(&mut w).unwrap();
        assert!(w.direct_io);
    }
}
