//! Result JSON (`loadgen-result/1`, `loadgen/schema/result.schema.json`): the types the
//! `compare`, `size` and `report` commands deserialize. Times in microseconds, rates per second,
//! sizes in bytes. Fields beyond the schema are allowed by it and all have serde defaults, so
//! older files still load.
//!
//! Layout on disk: `results/<host-or-label>/<date>-<workload>.json` plus `.hlog` beside it.

use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "loadgen-result/1";

/// A latency summary in microseconds (schema `$defs/latency`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
}

/// One benchmark run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Measured phase only (warmup excluded).
    pub duration_s: f64,
    /// False when the run was interrupted (Ctrl-C) or failed part-way: the figures cover only
    /// what was measured before that.
    #[serde(default = "yes")]
    pub complete: bool,
    /// False when fewer than 97 % of the target rate were acknowledged within the measured
    /// window plus its grace (see [`Accounting`]).
    #[serde(default = "yes")]
    pub target_met: bool,
    /// Where every scheduled record went (absent in files from before accounting existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounting: Option<Accounting>,
    pub workload: WorkloadInfo,
    pub target: Target,
    pub environment: Environment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    pub publish: Publish,
    pub end_to_end: EndToEnd,
    #[serde(default)]
    pub consume: Consume,
    #[serde(default)]
    pub efficiency: Efficiency,
    pub projection: Projection,
    /// One entry per second of the whole run (warmup, measure, drain).
    #[serde(default)]
    pub timeseries: Vec<Second>,
    /// Percentile spectra of the measured phase, for the report.
    #[serde(default)]
    pub spectrum: Spectra,
    /// Present when `producerRate` was 0: the trials of the max-rate search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Search>,
    /// Present for backlog workloads (`consumerBacklogSizeGB` > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
    /// File name of the HdrHistogram interval log written beside this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hlog: Option<String>,
    /// Where the numbers come from: the loadgen build. Absent in older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// The producer settings of the run and what they cost (compression, acks, idempotence,
    /// keys, headers). Absent in older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerInfo>,
    /// How the consumers read (raw Fetch or a consumer group), their lag, re-delivered
    /// records and the group protocol's figures. Absent without consumers and in older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<ConsumerInfo>,
    /// Who limited the run: each producer thread's CPU, queue depth and lateness in the
    /// measured phase, and whether the generator (not the target) was the limit. Absent in
    /// older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorInfo>,
    /// A distributed run (`loadgen run --workers`): the per-worker breakdown, and why the run is
    /// incomplete when a worker was lost or failed. Absent for single-host runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkersInfo>,
}

/// The result's `workers` block (schema `$defs/workers`): a distributed run's workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkersInfo {
    pub count: u32,
    /// Time from the start message to the common start instant (ms).
    pub start_lead_ms: u64,
    /// Clock offsets beyond this were refused.
    pub max_clock_offset_ms: f64,
    /// Set when a worker was lost or failed: the totals lack its records, `complete` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_reason: Option<String>,
    pub workers: Vec<WorkerInfo>,
}

/// One worker of a distributed run: its share and what it measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub address: String,
    pub host: String,
    /// `[i, n]`: partitions `p % n == i` of every topic.
    pub share: Vec<u32>,
    pub partitions_per_topic: u32,
    pub target_rate: f64,
    /// Worker clock − coordinator clock (ms), and the round trip it was estimated over.
    pub clock_offset_ms: f64,
    pub rtt_ms: f64,
    /// `done`, `failed` (error, or exit 1/130) or `lost` (connection ended, or silent).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub complete: bool,
    pub target_met: bool,
    pub records_per_s: f64,
    pub records_in_time_per_s: f64,
    pub publish_p99_us: f64,
    pub delay_p99_us: f64,
    /// The worker's measured-window accounting (absent when it delivered no result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounting: Option<PhaseAccounting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorInfo>,
}

/// The result's `generator` block (schema `$defs/generator`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorInfo {
    /// True when some producer thread, not the target, limited the run (`reasons` says how).
    pub limited: bool,
    pub reasons: Vec<String>,
    pub producers: Vec<GeneratorProducer>,
}

/// One producer thread of the measured phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorProducer {
    /// Thread CPU seconds and wall seconds of its loop; their ratio (1 = one core busy).
    pub cpu_s: f64,
    pub wall_s: f64,
    pub cpu_core_fraction: f64,
    /// Closed batches not yet sent (bytes): time-weighted mean, maximum, bound.
    pub queue_mean_bytes: f64,
    pub queue_max_bytes: u64,
    pub queue_bound_bytes: u64,
    /// Fraction of the time a closed batch waited for an in-flight window (target back-pressure).
    pub window_wait_fraction: f64,
    /// Generation lag behind the schedule: largest, and at the schedule's end (ms).
    pub send_delay_max_ms: f64,
    pub send_delay_end_ms: f64,
}

/// The result's `consumer` block (schema `$defs/consumer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsumerInfo {
    /// "fetch" | "group".
    pub mode: String,
    /// Distinct records consumed over the whole run (warmup and drain included), per
    /// subscription summed: compare with `producer.records_acknowledged_total` × subscriptions.
    pub records_consumed_total: u64,
    /// The consumers' Fetch isolation: "read_uncommitted" | "read_committed" (absent in older
    /// results: read_uncommitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_level: Option<String>,
    /// Records fetched again at an offset their subscription had already consumed (after a
    /// rebalance, from an older committed offset): never counted in `consume` or `end_to_end`.
    pub duplicates: u64,
    /// Consumer lag over the run (records; the per-second values are in `timeseries`).
    pub lag: LagInfo,
    /// Group mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagInfo {
    /// Largest and last per-second Σ(high watermark − consumed position).
    pub max: i64,
    #[serde(rename = "final")]
    pub final_: i64,
    /// Group mode: the same against the committed offsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_max: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_final: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// One group per subscription.
    pub group_ids: Vec<String>,
    /// Members per group at the start (the extra member not included).
    pub members: u32,
    /// "range" | "roundrobin".
    pub assignor: String,
    pub commit_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u32,
    /// Seconds after the measured window began when the extra member joined / left, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_member_join_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_member_leave_s: Option<f64>,
    /// Generations the groups went through while forming, before measuring started.
    pub generations_at_start: u64,
    /// Rebalances (new generations) after the groups were stable at the start.
    pub rebalances: u64,
    /// Member rejoins after the start and their duration: JoinGroup sent → first Fetch answer
    /// after SyncGroup (µs).
    pub member_rejoins: u64,
    pub rebalance_duration_us: Latency,
    /// OffsetCommit requests answered without error / with an error (or unanswered), and the
    /// round trip of every answered one (µs).
    pub commits: u64,
    pub commit_errors: u64,
    pub commit_latency_us: Latency,
    pub heartbeats: u64,
    /// Error answers of the group path by Kafka code (-1: connection lost or no answer);
    /// REBALANCE_IN_PROGRESS (27) is the protocol announcing a rebalance.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub errors_by_code: std::collections::BTreeMap<String, u64>,
}

/// The result's `producer` block (schema `$defs/producer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProducerInfo {
    /// 0, 1 or -1 (all).
    pub acks: i16,
    /// False for acks=0: no record was acknowledged; `publish` then counts nothing and has no
    /// latency, and `records_written_unacknowledged` says what was written to the socket.
    pub acknowledged: bool,
    #[serde(default)]
    pub records_written_unacknowledged: u64,
    /// Whole run (warmup and drain included, unlike `publish`): records generated, and records
    /// acknowledged — what the target must have stored.
    #[serde(default)]
    pub records_sent_total: u64,
    #[serde(default)]
    pub records_acknowledged_total: u64,
    pub idempotent: bool,
    /// Idempotent producer: batches sent again (same sequence) after a retriable error, and
    /// batches the broker already had (DUPLICATE_SEQUENCE_NUMBER, counted as acknowledged).
    #[serde(default)]
    pub retried_batches: u64,
    #[serde(default)]
    pub duplicate_batches: u64,
    /// Failover: produce connections lost, Metadata lookups for partitions with no known
    /// leader, partitions moved to another leader.
    #[serde(default)]
    pub connections_lost: u64,
    #[serde(default)]
    pub metadata_refreshes: u64,
    #[serde(default)]
    pub leader_changes: u64,
    /// Transactional producer (`transactionRecords` > 0). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<TransactionsInfo>,
    pub compression: CompressionInfo,
    pub keys: KeysInfo,
    /// Headers per record and the bytes of each header value.
    pub headers: u32,
    #[serde(default)]
    pub header_value_bytes: u32,
}

/// The transactional producer over the whole run (warmup, search trials and drain included).
/// A record counts as acknowledged only once its Produce was acknowledged and its transaction
/// committed (its publish latency runs to the commit's answer); records of an aborted
/// transaction are failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransactionsInfo {
    /// Scheduled records per transaction (the last one of a phase may have fewer).
    pub records_per_transaction: u64,
    pub committed: u64,
    pub aborted: u64,
    /// EndTxn(commit) round trip of the committed transactions, µs.
    pub commit_latency_us: Latency,
    /// Intended send time → Produce acknowledged (before the commit), every record whose
    /// Produce was acknowledged, µs. Absent in older results.
    #[serde(default)]
    pub produce_ack_latency_us: Latency,
}

/// Compression of the loadgen's own batches over the whole run (warmup included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressionInfo {
    /// none | gzip | snappy | lz4 | zstd.
    pub codec: String,
    pub batches: u64,
    pub records: u64,
    /// Records section bytes before and after compression.
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
    /// Time in the compressor on the producer threads (monotonic clock around each call; the
    /// thread is busy compressing, so this is its CPU time unless it was descheduled). Not part
    /// of publish latency accounting by itself: the send path is measured separately.
    pub cpu_ns_total: u64,
    pub ns_per_batch: f64,
    pub ns_per_record: f64,
    /// uncompressed / compressed (1 when nothing was compressed).
    pub ratio: f64,
}

/// How record keys were chosen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeysInfo {
    /// none | round-robin | random | zipf.
    pub distribution: String,
    /// Distinct keys (0 for none).
    pub count: u32,
    /// Zipf exponent (only for zipf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipf_s: Option<f64>,
}

/// The loadgen build that produced a result (captured at build time, see `loadgen/build.rs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// Commit of the source tree the binary was built from; "unknown" outside a git checkout.
    pub build_commit: String,
    /// Tracked files differed from `build_commit` at build time; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_dirty: Option<bool>,
    pub loadgen_version: String,
    /// "build": captured by build.rs when the binary was compiled.
    pub source: String,
}

/// What the target broker said about itself (ApiVersions, Metadata); absent for the sink.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetIdentity {
    /// Metadata cluster id (null when the broker reports none).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Metadata controller id (-1 when the broker reports none).
    pub controller_id: i32,
    /// Broker ids, sorted.
    pub broker_ids: Vec<i32>,
    pub broker_count: u32,
    /// Each broker as `id@host:port` (with `rack` when reported).
    pub brokers: Vec<String>,
    /// The API versions the bootstrap broker advertised: (api key, name, min, max).
    pub api_versions: Vec<ApiVersionRange>,
    /// Software name/version of the broker, when it reports one. Kafka's ApiVersions carries
    /// software name/version only in the request (v3+), so no broker reports one today: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiVersionRange {
    pub key: i16,
    pub name: String,
    pub min: i16,
    pub max: i16,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkloadInfo {
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    pub message_size: u32,
    /// Records/s target; 0 = find the max sustainable rate (then `search.max_rate` is the answer
    /// and the measured phase ran at that rate).
    pub producer_rate: f64,
    /// The rate the measured phase actually targeted (= `producer_rate` unless searched).
    #[serde(default)]
    pub target_rate: f64,
    #[serde(default)]
    pub key_distributor: String,
    #[serde(default)]
    pub producers: u32,
    #[serde(default)]
    pub consumers: u32,
    #[serde(default)]
    pub batch_size: u32,
    #[serde(default)]
    pub linger_ms: f64,
    #[serde(default)]
    pub max_in_flight: u32,
    #[serde(default)]
    pub acks: i16,
    #[serde(default)]
    pub warmup_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Target {
    /// "embedded" | "external". The discarding sink (no broker) is in-process: "embedded" with
    /// `sink: true` and bootstrap "sink".
    pub kind: String,
    pub bootstrap: String,
    /// Durability of the embedded engine ("never", "group", "interval=<ms>") or "unknown".
    pub fsync: String,
    /// True when no broker was involved (discarding sink: measures the generator only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sink: bool,
    /// The embedded engine's `LogConfig::direct_io` (large `group` appends with O_DIRECT);
    /// absent for external brokers and the sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_io: Option<bool>,
    /// What the broker reported about itself (ApiVersions, Metadata); absent for the sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<TargetIdentity>,
    /// The topics the run produced to (per-run names on external clusters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// External brokers: the security protocol, SASL mechanism and TLS switches used (never a
    /// user name or password). Absent for the embedded engine, the sink and older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<crate::security::SecurityInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Environment {
    pub cpu_model: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub kernel: String,
    pub git_commit: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub loadgen_version: String,
}

/// Hardware ceilings measured in the same run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Calibration {
    pub disk_seq_write_bytes_per_s: f64,
    pub fdatasync_us: Latency,
    pub loopback_bytes_per_s: f64,
    pub memcpy_bytes_per_s: f64,
    /// Directory whose disk was measured.
    #[serde(default)]
    pub data_dir: String,
    #[serde(default)]
    pub took_s: f64,
    /// How far the repeated measurements of each ceiling spread; absent in older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<CalibrationSpread>,
}

/// (max - min) / median of a calibration's repeated measurements, per ceiling.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CalibrationSpread {
    pub repeats: u32,
    pub disk_seq_write: f64,
    pub fdatasync_p50: f64,
    pub loopback: f64,
    pub memcpy: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Publish {
    /// Records acknowledged without error during the measured phase (and its drain).
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
    /// The throughput the target achieved: when it kept up (`target_met`),
    /// `records_in_time_per_s` (the offered rate it sustained); when it did not,
    /// `acks_in_window_per_s` (its real rate). Never the offered rate of a target that fell
    /// behind. Backlog runs: every acknowledged record over the producers' whole run.
    pub records_per_s: f64,
    pub bytes_per_s: f64,
    /// Records scheduled in the window and acknowledged by its end + `accounting.ack_grace_s`,
    /// per second of the window: the figure `target_met` (>= 97 % of the target) and the search
    /// judge. Absent in older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_in_time_per_s: Option<f64>,
    /// Acks the target delivered during the measured window (records of any phase: one behind
    /// schedule spends the window's start on the warmup's backlog), per second of the window.
    /// Absent in older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks_in_window_per_s: Option<f64>,
    /// Records of the window acknowledged at any time (the drain included) per second of the
    /// window: what `records_per_s` was before 2026-12-07. Equals `records_per_s` when the
    /// target kept up; NOT a throughput when it fell behind (the drain's acks are counted
    /// against the window's length). Absent in older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_per_s_incl_drain: Option<f64>,
    /// ack time − intended send time (coordinated-omission-correct).
    pub latency_us: Latency,
    /// actual send (hand-off to the client) − intended send time.
    pub delay_us: Latency,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndToEnd {
    pub records: u64,
    pub records_per_s: f64,
    /// consumer receive time − the record's intended send time (carried in the value's first
    /// 8 bytes as wall-clock µs; same host clock).
    pub latency_us: Latency,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Consume {
    pub records: u64,
    pub bytes: u64,
    pub records_per_s: f64,
    pub bytes_per_s: f64,
}

/// measured / calibrated ceiling. Absent when no calibration ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Efficiency {
    /// Produced bytes/s (record values + batch overhead) / sequential disk write bandwidth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_write_fraction: Option<f64>,
    /// (produced + consumed) bytes/s on the wire / loopback TCP bandwidth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loopback_fraction: Option<f64>,
    /// Produced bytes/s / memory copy bandwidth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcpy_fraction: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Projection {
    /// publish.records_per_s × 86 400.
    pub events_per_day: f64,
    #[serde(default)]
    pub bytes_per_day: f64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the run started (end of the interval).
    pub t_s: f64,
    /// "warmup" | "measure" | "drain" | "backlog" | "search".
    pub phase: String,
    pub publish_records_per_s: f64,
    pub consume_records_per_s: f64,
    pub publish_p99_us: f64,
    pub e2e_p99_us: f64,
    pub errors: u64,
    /// Records produced but not yet consumed (0 without consumers).
    pub backlog: i64,
    /// Consumer lag in this second: Σ over partitions (and subscriptions) of the high watermark
    /// − the consumed position, the highest of the samples taken every 250 ms and at the tick
    /// (high watermarks from ListOffsets and the consumers' Fetch answers). Absent without
    /// consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_lag: Option<i64>,
    /// Group mode: Σ of high watermark − the group's committed offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_lag: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Spectra {
    /// (percentile in %, latency µs), percentile strictly increasing, last = 100 (max).
    pub publish: Vec<(f64, f64)>,
    pub end_to_end: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Search {
    pub p99_bound_us: f64,
    /// Every trial in order, including the full-length confirmation runs (stage "confirm").
    pub trials: Vec<Trial>,
    /// The rate the search settled on: the highest rate whose trials passed (majority rule),
    /// confirmed by a passing full-length run at that rate (see `confirmed`).
    pub max_rate: f64,
    /// How a rate's verdict is reached from its trials.
    #[serde(default)]
    pub rule: String,
    /// Judged seconds of a search trial (after its own warmup).
    #[serde(default)]
    pub trial_seconds: f64,
    /// Acks of records scheduled in a trial's window count only if they arrive by the window's
    /// end plus this grace.
    #[serde(default)]
    pub ack_grace_s: f64,
    /// True when a full-length run at `max_rate` passed; false: no full-length run passed (the
    /// result's figures are those of the last, failed, one).
    #[serde(default)]
    pub confirmed: bool,
    /// The latency at half the max rate (a full-length run), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_rate: Option<HalfRate>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Trial {
    /// "ramp" | "bisect" | "confirm" (a full-length run at the found rate).
    pub stage: String,
    /// 1-based attempt at this rate (majority rule: up to 3).
    #[serde(default)]
    pub attempt: u32,
    pub target_rate: f64,
    /// Records scheduled inside the window and acknowledged by its end + grace, per second of
    /// the window.
    pub achieved_rate: f64,
    /// p99 of publish latency over every record scheduled in the window: acknowledged ones and
    /// (censored) unacknowledged ones.
    pub p99_us: f64,
    pub errors: u64,
    /// Records scheduled in the window and not acknowledged (failed, timed out, not sent).
    #[serde(default)]
    pub unacknowledged: u64,
    /// achieved >= 97 % of target, p99 within the bound, no errors.
    pub ok: bool,
    /// The rate's verdict once decided by this trial ("pass" / "fail"), else absent; "retry": a
    /// full-length run that failed by latency alone, repeated at the same rate (the repeat's `p99_us` is over both runs' records, which decide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// Acks (records of any phase) per second of the window: what the target delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    /// A full-length run whose backlog was still growing at the window's end (a failure even
    /// with p99 within the bound).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backlog_growing: bool,
}

/// A full-length run at half the found max rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HalfRate {
    pub target_rate: f64,
    /// Records of the window acknowledged by its end + grace, per second (as `publish.records_per_s`).
    pub records_per_s: f64,
    pub events_per_day: f64,
    pub latency_us: Latency,
    pub end_to_end_latency_us: Latency,
    pub complete: bool,
    pub accounting: PhaseAccounting,
}

/// Where every scheduled record went: per phase, `scheduled = acknowledged + failed +
/// timed_out + not_sent` and `sent = acknowledged + failed + timed_out`, exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Accounting {
    /// Acks of measured records count as in time (towards `target_met`) up to the end of the
    /// measured window plus this many seconds.
    pub ack_grace_s: f64,
    pub warmup: PhaseAccounting,
    pub measure: PhaseAccounting,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseAccounting {
    /// Records the open-loop schedule intended in this phase.
    pub scheduled: u64,
    /// Records written to the broker.
    pub sent: u64,
    /// Acknowledged without error (at any time before the drain deadline).
    pub acknowledged: u64,
    /// Acknowledged by the end of the window + `ack_grace_s`.
    pub acknowledged_in_time: u64,
    /// Answered with an error.
    pub failed: u64,
    /// Failed records by Kafka error code (-1: partition missing from the answer).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub failed_by_code: std::collections::BTreeMap<String, u64>,
    /// Sent, still unanswered when the producer gave up (drain deadline or lost connection).
    pub timed_out: u64,
    /// Never sent: the generator was late or blocked when the drain deadline came.
    pub not_sent: u64,
    /// acks=0 only: written to the broker, which answers nothing — never acknowledged by
    /// design, so not counted as acknowledged nor as lost.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub written_unacknowledged: u64,
    /// Censored latency of the records not acknowledged: intended time → error answer, or →
    /// the moment the producer gave up. Its count = failed + timed_out + not_sent.
    pub unacknowledged_latency_us: Latency,
}

impl PhaseAccounting {
    pub fn unacknowledged(&self) -> u64 {
        self.failed + self.timed_out + self.not_sent
    }
    /// The identities every accounting must satisfy.
    pub fn adds_up(&self) -> bool {
        self.scheduled == self.acknowledged + self.written_unacknowledged + self.unacknowledged()
            && self.sent == self.acknowledged + self.written_unacknowledged + self.failed + self.timed_out
            && self.unacknowledged_latency_us.count == self.unacknowledged()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Drain {
    pub backlog_records: u64,
    pub backlog_bytes: u64,
    pub drain_s: f64,
    pub records_per_s: f64,
    pub bytes_per_s: f64,
    /// False if consumers did not catch up within `drainSeconds`.
    pub caught_up: bool,
}

impl RunResult {
    pub fn load(path: &std::path::Path) -> Result<RunResult, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let r: RunResult =
            serde_json::from_str(&text).map_err(|e| format!("{} is not a loadgen result: {e}", path.display()))?;
        if r.schema != SCHEMA {
            return Err(format!("{}: schema {:?}, expected {SCHEMA:?}", path.display(), r.schema));
        }
        Ok(r)
    }
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
