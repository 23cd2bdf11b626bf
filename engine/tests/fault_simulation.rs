//! Seeded simulation sweep over `SimIo`: random workloads (appends across topics and partitions,
//! rolls, retention deletes, flushes; with and without segment preallocation) interrupted by faults — a crash that drops unsynced data,
//! tears the last write or flips a bit in an unsynced region, an injected fdatasync failure,
//! ENOSPC or EIO on writes — followed by recovery and a checker:
//!
//! * every acknowledged-durable record is present after the crash, byte-identical and in order;
//! * what is served is a gap-free run of valid batches identical to what was appended at those
//!   offsets (nothing after a hole, nothing corrupt, nothing invented);
//! * a poisoned partition acknowledges nothing after the failure and stays poisoned until reopen;
//! * reopening never panics and never refuses a partition (damage is only in unsynced bytes);
//! * committed offsets never go backwards: standalone OffsetCommits (generation -1) of a few
//!   groups, sent through `groups::handle` as a client would, interleave with the records
//!   workload. After every crash a fresh `GroupCoordinator` on the recovered `LogManager` must
//!   return, for every (group, topic, partition), the last acknowledged-durable commit or one
//!   issued after it (never an older one, never none, never a value nobody committed), and the
//!   recovered offsets as a whole must be the state after some prefix of the commit sequence
//!   (a commit request is atomic and commits apply in order). Between crashes OffsetFetch must
//!   return exactly the last acknowledged commit of each partition.
//!
//! Runs:
//! * CI: `cargo test -p engine --test fault_simulation` — seeds 0..1000 (`FAULT_SEEDS=n` to change).
//! * one seed: `FAULT_SEED=1234 cargo test -p engine --test fault_simulation -- --nocapture`.
//! * long profile: `FAULT_SECONDS=600 cargo test -p engine --test fault_simulation -- --nocapture`
//!   (seeds from a random base, printed, for the given wall time).

/// The broker's process allocator (`io::sys::GuardedAlloc`), installed by this test binary as the broker
/// binary does (a library never installs one): hostile array counts must not abort it.
#[global_allocator]
static GLOBAL: engine::io::sys::GuardedAlloc = engine::io::sys::GuardedAlloc;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use engine::groups::Reply;
use engine::groups::{self, err, store::OFFSETS_TOPIC, GroupCoordinator};
use engine::io::{CrashMode, SimIo};
use engine::log::{AppendError, Durability, LogConfig, LogManager, Partition};
use engine::record::{self, build};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const DATA: &str = "/data";

/// Which fault a seed injects (besides the crash every seed ends with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Crash only.
    None,
    /// One fdatasync (the n-th from the chosen step) fails with EIO.
    SyncFail,
    /// Free space runs out for a while (ENOSPC on appends), then returns.
    Enospc,
    /// Every write fails with EIO for a while, then works again.
    WriteEio,
}

#[derive(Debug, Default)]
struct Figures {
    seeds: u64,
    crashes: u64,
    records_checked: u64,
    batches_checked: u64,
    acked_records: u64,
    sync_failures: u64,
    poisoned_rejections: u64,
    enospc_errors: u64,
    eio_errors: u64,
    retention_deletes: u64,
    lost: u64,
    /// OffsetCommit requests sent.
    commit_requests: u64,
    /// Partition commits answered with error 0.
    commits_acked: u64,
    /// ... of which acknowledged durable (`group` mode; plus those covered by a later flush).
    commits_durable: u64,
    /// OffsetCommit requests answered with COORDINATOR_NOT_AVAILABLE.
    commit_failures: u64,
    /// (group, topic, partition) values compared with the model (live and after crashes).
    offsets_checked: u64,
    /// Committed offsets lost, older than acknowledged, or never committed.
    offset_regressions: u64,
}

/// (group, topic, partition) of a committed offset.
type GKey = (String, String, i32);

/// A committed offset as the test issues it: the metadata is unique per partition commit
/// (`c<n>`), so a value read back names the exact commit that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CVal {
    offset: i64,
    meta: String,
}

/// One OffsetCommit request that may be in `__consumer_offsets` (acknowledged, or failed after
/// its batch was appended: outcome unknown).
#[derive(Debug, Clone)]
struct CommitReq {
    entries: Vec<(GKey, CVal)>,
    acked: bool,
}

/// What the test knows about committed offsets.
#[derive(Debug, Default)]
struct OffsetsModel {
    /// State recovered at the last crash (durable from then on).
    base: BTreeMap<GKey, CVal>,
    /// Commits since then that may be in the log, in the order they were appended.
    history: Vec<CommitReq>,
    /// `history[..durable]` is acknowledged durable.
    durable: usize,
    /// Last offset the simulated client committed per key (the next commit is usually >= it).
    last_issued: BTreeMap<GKey, i64>,
    seq: u64,
}

impl OffsetsModel {
    fn apply(state: &mut BTreeMap<GKey, CVal>, req: &CommitReq) {
        for (k, v) in &req.entries {
            state.insert(k.clone(), v.clone());
        }
    }
    /// What a running coordinator serves: the base plus every acknowledged commit.
    fn live(&self) -> BTreeMap<GKey, CVal> {
        let mut st = self.base.clone();
        for r in self.history.iter().filter(|r| r.acked) {
            Self::apply(&mut st, r);
        }
        st
    }
    /// The state every crash must keep at least: base plus the acknowledged-durable prefix.
    fn durable_state(&self) -> BTreeMap<GKey, CVal> {
        let mut st = self.base.clone();
        for r in &self.history[..self.durable] {
            Self::apply(&mut st, r);
        }
        st
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Encode `req`, serve it through `groups::handle` as the broker does, decode the response.
fn call<Req: Encodable, Resp: Decodable + HeaderVersion>(
    c: &Arc<GroupCoordinator>,
    key: i16,
    v: i16,
    req: &Req,
) -> Result<Resp, String> {
    let mut buf = BytesMut::new();
    req.encode(&mut buf, v).map_err(|e| format!("encode api {key} v{v}: {e}"))?;
    let header = RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(v)
        .with_correlation_id(77)
        .with_client_id(Some(s("fault-sim")));
    let mut body = buf.freeze();
    let out = match groups::handle(c, key, v, &header, &mut body) {
        r @ (Reply::Later(_) | Reply::Pending(_)) => r.wait_response().expect("a response"),
        other => return Err(format!("api {key} v{v} gave no response: {other:?}")),
    };
    let mut b = Bytes::from(out);
    let h = ResponseHeader::decode(&mut b, Resp::header_version(v)).map_err(|e| format!("api {key} v{v} header: {e}"))?;
    if h.correlation_id != 77 {
        return Err(format!("api {key} v{v}: correlation id {}", h.correlation_id));
    }
    let r = Resp::decode(&mut b, v).map_err(|e| format!("api {key} v{v} body: {e}"))?;
    if !b.is_empty() {
        return Err(format!("api {key} v{v}: {} trailing bytes", b.len()));
    }
    Ok(r)
}

/// What the test knows about one partition.
#[derive(Debug, Default, Clone)]
struct Model {
    /// base offset -> stored bytes (after offset patching) of every batch ever appended.
    batches: BTreeMap<u64, Vec<u8>>,
    /// Offset below which everything was acknowledged durable.
    acked_next: u64,
    /// Offset the next append gets.
    next: u64,
    /// Log start offset (after retention).
    log_start: u64,
    poisoned: bool,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    io: SimIo,
    mgr: Arc<LogManager>,
    cfg: LogConfig,
    topics: Vec<(String, usize)>,
    models: BTreeMap<(String, usize), Model>,
    fault: Fault,
    figures: Figures,
    coord: Arc<GroupCoordinator>,
    groups: Vec<String>,
    offsets: OffsetsModel,
}

fn replay_cmd(seed: u64) -> String {
    format!("env FAULT_SEED={seed} cargo test -p engine --test fault_simulation -- --nocapture")
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let durability = if rng.gen_bool(0.75) { Durability::Group } else { Durability::Never };
        let cfg = LogConfig {
            durability,
            segment_bytes_max: rng.gen_range(600..6_000),
            segment_age_max_ms: None,
            retention_bytes_max: if rng.gen_bool(0.5) { Some(rng.gen_range(2_000..20_000)) } else { None },
            retention_ms: None,
            index_interval_bytes: rng.gen_range(64..1024),
            batch_bytes_max: 1 << 20,
            preallocate_bytes: if rng.gen_bool(0.5) { rng.gen_range(256..8_192) } else { 0 },
            // Half the seeds write some appends outside the partition lock, concurrently.
            appender_write_bytes: if rng.gen_bool(0.5) { rng.gen_range(64..1_024) } else { 256 << 10 },
            direct_io: rng.gen_bool(0.5),
            validate_records: true,
            repair: false,
            scrub_rate_mib: 0,
            ..LogConfig::default()
        };
        let fault = match rng.gen_range(0..10) {
            0..=3 => Fault::None,
            4..=6 => Fault::SyncFail,
            7..=8 => Fault::Enospc,
            _ => Fault::WriteEio,
        };
        let io = SimIo::new();
        let mgr = LogManager::open(Path::new(DATA), Arc::new(io.clone()), cfg.clone()).expect("open empty log");
        let mut topics = Vec::new();
        for t in 0..rng.gen_range(1..=3) {
            let name = format!("t{t}");
            let parts = rng.gen_range(1..=3usize);
            mgr.create_topic(&name, parts as i32, None).expect("create topic");
            topics.push((name, parts));
        }
        let mut models = BTreeMap::new();
        for (name, parts) in &topics {
            for p in 0..*parts {
                models.insert((name.clone(), p), Model::default());
            }
        }
        let groups = (0..rng.gen_range(1..=3)).map(|g| format!("g{g}")).collect();
        let coord = GroupCoordinator::new(mgr.clone()).expect("open group coordinator");
        Sim {
            seed,
            rng,
            io,
            mgr,
            cfg,
            topics,
            models,
            fault,
            figures: Figures::default(),
            coord,
            groups,
            offsets: OffsetsModel::default(),
        }
    }

    fn fail(&self, msg: String) -> ! {
        panic!("seed {}: {msg}\n  replay: {}", self.seed, replay_cmd(self.seed));
    }

    fn pick(&mut self) -> ((String, usize), Arc<Partition>) {
        let (name, parts) = self.topics[self.rng.gen_range(0..self.topics.len())].clone();
        let p = self.rng.gen_range(0..parts);
        let part = self.mgr.partition(&name, p as i32).unwrap_or_else(|| self.fail(format!("{name}-{p} missing")));
        ((name, p), part)
    }

    fn make_batch(&mut self, key: &(String, usize)) -> Vec<u8> {
        let n = self.rng.gen_range(1..=8usize);
        let next = self.models[key].next;
        let values: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let len = self.rng.gen_range(0..120);
                let mut v = format!("{}-{}-{}-{}:", self.seed, key.0, key.1, next + i as u64).into_bytes();
                v.extend((0..len).map(|_| self.rng.gen::<u8>()));
                v
            })
            .collect();
        let recs: Vec<build::Rec<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| build::Rec { key: Some(&v[..4.min(v.len())]), value: Some(v), timestamp_delta: i as i64 })
            .collect();
        build::batch_with(&recs, 1_700_000_000_000 + next as i64, -1, -1, -1)
    }

    /// Classify an append/flush error; any error on a poisoned partition marks the model.
    fn on_error(&mut self, key: &(String, usize), part: &Partition, e: AppendError) {
        match &e {
            AppendError::Poisoned(_) => {
                if !self.models[key].poisoned {
                    self.figures.sync_failures += 1;
                } else {
                    self.figures.poisoned_rejections += 1;
                }
                if !part.is_poisoned() {
                    self.fail(format!("{key:?}: Poisoned error but is_poisoned() is false"));
                }
                self.models.get_mut(key).expect("model").poisoned = true;
            }
            AppendError::Storage(io) => match io.raw_os_error() {
                Some(libc::ENOSPC) => self.figures.enospc_errors += 1,
                Some(libc::EIO) => self.figures.eio_errors += 1,
                _ => self.fail(format!("{key:?}: unexpected storage error {io}")),
            },
            other => self.fail(format!("{key:?}: unexpected append error {other}")),
        }
    }

    fn step(&mut self) {
        let (key, part) = self.pick();
        let poisoned = self.models[&key].poisoned;
        let op = self.rng.gen_range(0..100);
        if trace() {
            eprintln!(
                "step {key:?} op {op} end {} hw {} start {} segs {} poisoned {poisoned}",
                part.log_end_offset(),
                part.high_watermark(),
                part.log_start_offset(),
                part.segment_count()
            );
        }
        match op {
            0..=74 => {
                let mut batch = self.make_batch(&key);
                let durable = op < 50;
                let r = if durable { part.append_durable(&mut batch) } else { part.append(&mut batch) };
                match r {
                    Ok(info) => {
                        if poisoned {
                            self.fail(format!("{key:?}: append acknowledged after the partition was poisoned"));
                        }
                        let m = self.models.get_mut(&key).expect("model");
                        if info.base_offset != m.next {
                            let msg = format!("{key:?}: append got offset {} expected {}", info.base_offset, m.next);
                            self.fail(msg);
                        }
                        m.next = info.next_offset;
                        m.batches.insert(info.base_offset, batch);
                        if durable && self.cfg.durability == Durability::Group {
                            m.acked_next = info.next_offset;
                        }
                    }
                    Err(e) => {
                        // A failed append stores nothing; with durable, the batch may have been
                        // written but never acknowledged: it is unknown, and must not be invented.
                        self.on_error(&key, &part, e);
                        // The log end may have advanced (written, then the sync failed).
                        let end = part.log_end_offset();
                        let prev = self.models[&key].next;
                        if end != prev && !durable {
                            self.fail(format!("{key:?}: failed append moved log end {prev} -> {end}"));
                        }
                        let m = self.models.get_mut(&key).expect("model");
                        if end != m.next {
                            // append_durable wrote the batch and then the wait failed.
                            m.batches.insert(m.next, patched(&batch, m.next));
                            m.next = end;
                        }
                    }
                }
            }
            75..=87 => {
                let end = part.log_end_offset();
                match part.flush() {
                    Ok(()) => {
                        if poisoned {
                            self.fail(format!("{key:?}: flush succeeded after the partition was poisoned"));
                        }
                        self.models.get_mut(&key).expect("model").acked_next = end;
                    }
                    Err(e) => self.on_error(&key, &part, e),
                }
            }
            88..=93 => match part.enforce_retention() {
                Ok(n) => {
                    self.figures.retention_deletes += n as u64;
                    self.models.get_mut(&key).expect("model").log_start = part.log_start_offset();
                }
                Err(e) => self.on_error(&key, &part, e),
            },
            _ => {
                // Read back what is served and check it against the model (no crash needed).
                self.check_served(&key, &part, false);
            }
        }
        if self.models[&key].poisoned && !part.is_poisoned() {
            self.fail(format!("{key:?}: partition no longer poisoned before reopen"));
        }
    }

    /// Read everything served by `part` and compare with the model. Returns records checked.
    fn check_served(&mut self, key: &(String, usize), part: &Partition, after_crash: bool) -> u64 {
        let m = self.models[key].clone();
        let start = part.log_start_offset();
        let hw = part.high_watermark();
        if hw > m.next {
            self.fail(format!("{key:?}: high watermark {hw} beyond anything appended ({})", m.next));
        }
        if after_crash {
            if start > m.log_start {
                self.fail(format!("{key:?}: log start {start} after recovery, was {}", m.log_start));
            }
            if hw < m.acked_next {
                self.figures.lost += m.acked_next - hw;
                self.fail(format!(
                    "{key:?}: LOST acknowledged records: recovered high watermark {hw} < acknowledged {}",
                    m.acked_next
                ));
            }
        }
        let mut at = start;
        let mut records = 0u64;
        let mut reads = 0;
        while at < hw {
            reads += 1;
            if reads > 100_000 {
                self.fail(format!("{key:?}: read loop did not advance"));
            }
            let bytes = match part.read_copy(at as i64, 64 * 1024) {
                Ok(b) => b,
                Err(e) => self.fail(format!("{key:?}: read at {at} (log start {start}, hw {hw}) failed: {e}")),
            };
            if bytes.is_empty() {
                self.fail(format!("{key:?}: read at {at} below high watermark {hw} returned nothing (hole)"));
            }
            let infos = match record::validate_all(&bytes, 1 << 20) {
                Ok(i) => i,
                Err(e) => self.fail(format!("{key:?}: served bytes at {at} are not valid batches: {e}")),
            };
            let mut pos = 0;
            for info in infos {
                let b = &bytes[pos..pos + info.size_bytes];
                pos += info.size_bytes;
                let base = info.base_offset as u64;
                if base != at {
                    self.fail(format!("{key:?}: served batch at offset {base}, expected {at} (gap or reorder)"));
                }
                match m.batches.get(&base) {
                    Some(want) if want[..] == b[..] => {}
                    Some(_) => self.fail(format!("{key:?}: batch at {base} differs from what was appended")),
                    None => self.fail(format!("{key:?}: batch at {base} was never appended")),
                }
                at = base + info.offset_count();
                records += info.record_count as u64;
                self.figures.batches_checked += 1;
            }
        }
        if at != hw {
            self.fail(format!("{key:?}: served batches end at {at}, high watermark is {hw}"));
        }
        self.figures.records_checked += records;
        records
    }

    fn offsets_part(&self) -> Arc<Partition> {
        self.mgr.partition(OFFSETS_TOPIC, 0).unwrap_or_else(|| self.fail(format!("{OFFSETS_TOPIC}-0 missing")))
    }

    /// A consumer-group step: an OffsetCommit (70 %), a flush of `__consumer_offsets` (10 %), its
    /// retention (5 %) or an OffsetFetch of every group checked against the model (15 %).
    fn group_step(&mut self) {
        match self.rng.gen_range(0..100) {
            0..=69 => self.commit_step(),
            70..=79 => {
                let part = self.offsets_part();
                let poisoned = part.is_poisoned();
                let r = part.flush();
                if trace() {
                    eprintln!("flush {OFFSETS_TOPIC}: {r:?}");
                }
                match r {
                    Ok(()) => {
                        if poisoned {
                            self.fail(format!("{OFFSETS_TOPIC}: flush succeeded after it was poisoned"));
                        }
                        // Everything appended so far is durable now.
                        let o = &mut self.offsets;
                        for r in &o.history[o.durable..] {
                            if r.acked {
                                self.figures.commits_durable += r.entries.len() as u64;
                            }
                        }
                        o.durable = o.history.len();
                    }
                    Err(AppendError::Poisoned(_)) => {}
                    Err(AppendError::Storage(e)) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EIO)) => {}
                    Err(e) => self.fail(format!("{OFFSETS_TOPIC}: unexpected flush error {e}")),
                }
            }
            80..=84 => {
                // Retention on the offsets topic, as if the log manager's tick applied it (it does
                // not: the topic is compacted): it must delete nothing (internal topics keep
                // everything from open; docs/FAULTS.md bug 8).
                let part = self.offsets_part();
                let r = part.enforce_retention();
                if trace() {
                    eprintln!("retention {OFFSETS_TOPIC}: {r:?}, log start {} end {}", part.log_start_offset(), part.log_end_offset());
                }
                if let Ok(n) = r {
                    self.figures.retention_deletes += n as u64;
                }
            }
            _ => {
                let v = [2i16, 5, 7, 8][self.rng.gen_range(0..4)];
                let got = self.fetch_all(v);
                let want = self.offsets.live();
                self.figures.offsets_checked += want.len().max(got.len()) as u64;
                if got != want {
                    let bad = diff_keys(&want, &got);
                    self.figures.offset_regressions += bad.len() as u64;
                    self.fail(format!("OffsetFetch v{v} (no crash) differs from the acknowledged commits: {bad:?}"));
                }
            }
        }
    }

    /// One standalone OffsetCommit (generation -1) of 1–3 partitions of one group.
    fn commit_step(&mut self) {
        let group = self.groups[self.rng.gen_range(0..self.groups.len())].clone();
        let mut parts: Vec<(String, usize)> = self.models.keys().cloned().collect();
        parts.shuffle(&mut self.rng);
        parts.truncate(self.rng.gen_range(1..=3));
        let mut entries = Vec::new();
        for (topic, p) in parts {
            let key: GKey = (group.clone(), topic.clone(), p as i32);
            let prev = self.offsets.last_issued.get(&key).copied().unwrap_or(0);
            let end = (self.models[&(topic, p)].next as i64).max(prev);
            // Usually forward (up to the log end); sometimes lower, as after a seek back.
            let offset = if prev > 0 && self.rng.gen_ratio(3, 20) {
                self.rng.gen_range(0..prev)
            } else {
                self.rng.gen_range(prev..=end)
            };
            self.offsets.last_issued.insert(key.clone(), offset);
            self.offsets.seq += 1;
            entries.push((key, CVal { offset, meta: format!("c{}", self.offsets.seq) }));
        }
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for ((_, t, p), v) in &entries {
            let part = OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(v.offset)
                .with_committed_metadata(Some(s(&v.meta)));
            match topics.iter_mut().find(|x| x.name.as_str() == t.as_str()) {
                Some(x) => x.partitions.push(part),
                None => topics.push(OffsetCommitRequestTopic::default().with_name(TopicName(s(t))).with_partitions(vec![part])),
            }
        }
        // The response lists partitions in request order (grouped by topic): reorder the model.
        let order: Vec<(String, i32)> =
            topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.name.as_str().to_string(), p.partition_index))).collect();
        entries.sort_by_key(|((_, t, p), _)| order.iter().position(|o| o.0 == *t && o.1 == *p));
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(s(""))
            .with_topics(topics);
        let v = [2i16, 5, 8][self.rng.gen_range(0..3)];
        let part = self.offsets_part();
        let poisoned = part.is_poisoned();
        let end_before = part.log_end_offset();
        let resp: OffsetCommitResponse = self.call_or_fail(8, v, &req);
        let end_after = part.log_end_offset();
        let codes: Vec<i16> = resp.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
        if trace() {
            eprintln!("commit v{v} {group} {entries:?} -> {codes:?} ({OFFSETS_TOPIC} end {end_before} -> {end_after})");
        }
        self.figures.commit_requests += 1;
        if codes.len() != entries.len() {
            self.fail(format!("OffsetCommit of {} partitions answered {} codes", entries.len(), codes.len()));
        }
        let n = entries.len() as u64;
        if codes.iter().all(|c| *c == err::NONE) {
            if poisoned {
                self.fail(format!("OffsetCommit acknowledged after {OFFSETS_TOPIC} was poisoned"));
            }
            if end_after <= end_before {
                self.fail(format!("OffsetCommit acknowledged but {OFFSETS_TOPIC} did not grow"));
            }
            self.figures.commits_acked += n;
            self.offsets.history.push(CommitReq { entries, acked: true });
            if self.cfg.durability == Durability::Group {
                self.figures.commits_durable += n;
                self.offsets.durable = self.offsets.history.len();
            }
        } else if codes.iter().all(|c| *c == err::COORDINATOR_NOT_AVAILABLE) {
            self.figures.commit_failures += 1;
            if end_after != end_before {
                // Appended, then the durability wait failed: it may or may not survive a crash.
                self.offsets.history.push(CommitReq { entries, acked: false });
            }
        } else {
            self.fail(format!("OffsetCommit answered unexpected error codes {codes:?}"));
        }
    }

    fn call_or_fail<Req: Encodable, Resp: Decodable + HeaderVersion>(&self, key: i16, v: i16, req: &Req) -> Resp {
        call(&self.coord, key, v, req).unwrap_or_else(|e| self.fail(e))
    }

    /// Every committed offset of every group, through OffsetFetch `v` (all topics: null list).
    fn fetch_all(&self, v: i16) -> BTreeMap<GKey, CVal> {
        let mut out = BTreeMap::new();
        let mut put = |g: &str, t: &str, p: i32, offset: i64, meta: Option<&StrBytes>, code: i16| {
            if code != err::NONE {
                self.fail(format!("OffsetFetch v{v} {g} {t}-{p}: error {code}"));
            }
            if offset >= 0 {
                let val = CVal { offset, meta: meta.map(|m| m.as_str().to_string()).unwrap_or_default() };
                out.insert((g.to_string(), t.to_string(), p), val);
            }
        };
        if v >= 8 {
            let req = OffsetFetchRequest::default().with_groups(
                self.groups.iter().map(|g| OffsetFetchRequestGroup::default().with_group_id(GroupId(s(g))).with_topics(None)).collect(),
            );
            let r: OffsetFetchResponse = self.call_or_fail(9, v, &req);
            for rg in &r.groups {
                if rg.error_code != err::NONE {
                    self.fail(format!("OffsetFetch v{v} {}: error {}", rg.group_id.as_str(), rg.error_code));
                }
                for t in &rg.topics {
                    for p in &t.partitions {
                        let (g, tn) = (rg.group_id.as_str(), t.name.as_str());
                        put(g, tn, p.partition_index, p.committed_offset, p.metadata.as_ref(), p.error_code);
                    }
                }
            }
        } else {
            for g in &self.groups {
                let req = OffsetFetchRequest::default().with_group_id(GroupId(s(g))).with_topics(None);
                let r: OffsetFetchResponse = self.call_or_fail(9, v, &req);
                if r.error_code != err::NONE {
                    self.fail(format!("OffsetFetch v{v} {g}: error {}", r.error_code));
                }
                for t in &r.topics {
                    for p in &t.partitions {
                        put(g, t.name.as_str(), p.partition_index, p.committed_offset, p.metadata.as_ref(), p.error_code);
                    }
                }
            }
        }
        out
    }

    /// After a crash: committed offsets never go backwards (see the module comment).
    fn check_offsets_after_crash(&mut self, mode: CrashMode) {
        let v = [2i16, 8][self.rng.gen_range(0..2)];
        let got = self.fetch_all(v);
        let o = &self.offsets;
        let acked = o.durable_state();
        let later = &o.history[o.durable..];
        let keys: BTreeSet<GKey> = acked.keys().chain(got.keys()).cloned().collect();
        let mut bad = Vec::new();
        for k in &keys {
            self.figures.offsets_checked += 1;
            let want = acked.get(k);
            let ok = match got.get(k) {
                None => want.is_none(),
                Some(g) => want == Some(g) || later.iter().any(|r| r.entries.iter().any(|(rk, rv)| rk == k && rv == g)),
            };
            if !ok {
                bad.push(format!("{k:?}: acknowledged {want:?}, recovered {:?}", got.get(k)));
            }
        }
        if !bad.is_empty() {
            self.figures.offset_regressions += bad.len() as u64;
            self.fail(format!("after {mode:?} crash, committed offsets went BACKWARDS (lost, older or invented): {bad:?}"));
        }
        // The log is a prefix: the recovered offsets are the state after base + history[..k]
        // for some k >= durable (requests atomic, applied in order).
        let mut st = acked;
        let mut found = st == got;
        for r in later {
            OffsetsModel::apply(&mut st, r);
            found |= st == got;
        }
        if !found {
            self.fail(format!(
                "after {mode:?} crash, recovered committed offsets are not the state after any prefix of the commits: {got:?}"
            ));
        }
        self.offsets.last_issued = got.iter().map(|(k, v)| (k.clone(), v.offset)).collect();
        self.offsets.base = got;
        self.offsets.history.clear();
        self.offsets.durable = 0;
    }

    /// Crash (or not), reopen from what the disk holds, check every partition.
    fn crash_and_check(&mut self, mode: CrashMode) {
        let crash_seed = self.rng.gen();
        let image = self.io.crash(mode, crash_seed);
        self.figures.crashes += 1;
        for m in self.models.values() {
            self.figures.acked_records += m.acked_next.saturating_sub(m.log_start);
        }
        let reopened = catch_unwind(AssertUnwindSafe(|| {
            LogManager::open(Path::new(DATA), Arc::new(image.clone()), self.cfg.clone())
        }));
        let mgr = match reopened {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => self.fail(format!("reopen after {mode:?} crash failed: {e}")),
            Err(_) => self.fail(format!("reopen after {mode:?} crash panicked")),
        };
        let failed = mgr.failed.lock().expect("failed list").clone();
        if !failed.is_empty() {
            self.fail(format!("after {mode:?} crash, partitions refused to open: {failed:?}"));
        }
        let keys: Vec<_> = self.models.keys().cloned().collect();
        for key in keys {
            let part = mgr
                .partition(&key.0, key.1 as i32)
                .unwrap_or_else(|| self.fail(format!("{key:?} missing after {mode:?} crash")));
            if part.is_poisoned() {
                self.fail(format!("{key:?}: still poisoned after reopen"));
            }
            self.check_served(&key, &part, true);
            // After recovery everything served is durable: it becomes the new acknowledged state.
            let m = self.models.get_mut(&key).expect("model");
            let hw = part.high_watermark();
            if part.log_end_offset() != hw {
                self.fail(format!("{key:?}: log end {} != high watermark {hw} after recovery", part.log_end_offset()));
            }
            let m_after = Model {
                batches: m.batches.range(..hw).map(|(k, v)| (*k, v.clone())).collect(),
                acked_next: hw,
                next: hw,
                log_start: part.log_start_offset(),
                poisoned: false,
            };
            *m = m_after;
        }
        self.io = image;
        self.mgr = mgr.clone();
        // A fresh coordinator restores the committed offsets from the recovered log.
        let coord = match catch_unwind(AssertUnwindSafe(|| GroupCoordinator::new(mgr))) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => self.fail(format!("group coordinator failed to open after {mode:?} crash: {e}")),
            Err(_) => self.fail(format!("group coordinator panicked opening after {mode:?} crash")),
        };
        self.coord = coord;
        self.check_offsets_after_crash(mode);
    }
}

/// FAULT_TRACE=1 prints every step and fault (for replaying a failing seed).
fn trace() -> bool {
    std::env::var_os("FAULT_TRACE").is_some()
}

/// Keys whose committed value differs between `want` and `got`.
fn diff_keys(want: &BTreeMap<GKey, CVal>, got: &BTreeMap<GKey, CVal>) -> Vec<String> {
    let keys: BTreeSet<&GKey> = want.keys().chain(got.keys()).collect();
    keys.into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| format!("{k:?}: want {:?} got {:?}", want.get(k), got.get(k)))
        .collect()
}

/// Stored bytes of `batch` as appended at `base`.
fn patched(batch: &[u8], base: u64) -> Vec<u8> {
    let mut b = batch.to_vec();
    record::patch_base_offset(&mut b, base as i64);
    record::patch_leader_epoch(&mut b, 0);
    b
}

/// One seed: 1–3 rounds of (workload with a fault window, crash, recover, check).
fn run_seed(seed: u64) -> Figures {
    let mut sim = Sim::new(seed);
    let rounds = sim.rng.gen_range(1..=3);
    for _ in 0..rounds {
        let steps = sim.rng.gen_range(5..120);
        let fault_at = sim.rng.gen_range(0..steps);
        let fault_len = sim.rng.gen_range(1..20);
        for i in 0..steps {
            if i == fault_at {
                if trace() {
                    eprintln!("fault {:?} at step {i} for {fault_len} steps", sim.fault);
                }
                match sim.fault {
                    Fault::None => {}
                    Fault::SyncFail => {
                        let n = sim.rng.gen_range(1..4);
                        sim.io.fail_sync_in(n);
                    }
                    Fault::Enospc => {
                        let left = sim.rng.gen_range(0..3_000);
                        sim.io.set_space_left(Some(left));
                    }
                    Fault::WriteEio => sim.io.set_write_eio(true),
                }
            }
            if i == fault_at + fault_len {
                sim.io.set_space_left(None);
                sim.io.set_write_eio(false);
            }
            if sim.rng.gen_ratio(1, 5) {
                sim.group_step();
            } else {
                sim.step();
            }
        }
        sim.io.set_space_left(None);
        sim.io.set_write_eio(false);
        let mode = match sim.rng.gen_range(0..3) {
            0 => CrashMode::DropUnsynced,
            1 => CrashMode::Tear,
            _ => CrashMode::TearAndFlip,
        };
        if trace() {
            eprintln!("crash {mode:?}");
        }
        sim.crash_and_check(mode);
    }
    sim.figures.seeds = 1;
    sim.figures
}

fn run_seed_reporting(seed: u64) -> Figures {
    match catch_unwind(AssertUnwindSafe(|| run_seed(seed))) {
        Ok(f) => f,
        Err(p) => {
            eprintln!("FAULT SIMULATION FAILED at seed {seed}\n  replay: {}", replay_cmd(seed));
            std::panic::resume_unwind(p)
        }
    }
}

fn add(total: &mut Figures, f: Figures) {
    total.seeds += f.seeds;
    total.crashes += f.crashes;
    total.records_checked += f.records_checked;
    total.batches_checked += f.batches_checked;
    total.acked_records += f.acked_records;
    total.sync_failures += f.sync_failures;
    total.poisoned_rejections += f.poisoned_rejections;
    total.enospc_errors += f.enospc_errors;
    total.eio_errors += f.eio_errors;
    total.retention_deletes += f.retention_deletes;
    total.lost += f.lost;
    total.commit_requests += f.commit_requests;
    total.commits_acked += f.commits_acked;
    total.commits_durable += f.commits_durable;
    total.commit_failures += f.commit_failures;
    total.offsets_checked += f.offsets_checked;
    total.offset_regressions += f.offset_regressions;
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

#[test]
fn seeded_fault_simulation_sweep() {
    let started = Instant::now();
    let mut total = Figures::default();
    let label;
    if let Some(seed) = env_u64("FAULT_SEED") {
        label = format!("seed {seed}");
        add(&mut total, run_seed_reporting(seed));
    } else if let Some(secs) = env_u64("FAULT_SECONDS") {
        let base: u64 = env_u64("FAULT_SEED_BASE").unwrap_or_else(|| rand::thread_rng().gen::<u32>() as u64 * 1_000_000);
        label = format!("seeds from {base} for {secs} s");
        let deadline = started + Duration::from_secs(secs);
        let mut seed = base;
        // Bounded by time; the seed counter bounds it too.
        while Instant::now() < deadline && seed < base + 100_000_000 {
            add(&mut total, run_seed_reporting(seed));
            seed += 1;
        }
    } else {
        let n = env_u64("FAULT_SEEDS").unwrap_or(1000);
        label = format!("seeds 0..{n}");
        for seed in 0..n {
            add(&mut total, run_seed_reporting(seed));
        }
    }
    let f = &total;
    println!(
        "fault_simulation ({label}): seeds {}, crashes {}, batches checked {}, records checked {}, \
         acknowledged records at crash {}, fdatasync failures {}, rejected while poisoned {}, ENOSPC {}, EIO {}, \
         segments deleted by retention {}, lost = {}; offset commits: {} requests, {} partition commits \
         acknowledged ({} durable), {} requests failed, committed offsets checked {}, regressions = {} ({:.1} s)",
        f.seeds,
        f.crashes,
        f.batches_checked,
        f.records_checked,
        f.acked_records,
        f.sync_failures,
        f.poisoned_rejections,
        f.enospc_errors,
        f.eio_errors,
        f.retention_deletes,
        f.lost,
        f.commit_requests,
        f.commits_acked,
        f.commits_durable,
        f.commit_failures,
        f.offsets_checked,
        f.offset_regressions,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(f.lost, 0);
    assert_eq!(f.offset_regressions, 0);
    assert!(f.seeds >= 1);
}
