//! Seeded simulation sweep over `SimIo`: random workloads (appends across topics and partitions,
//! rolls, retention deletes, flushes; with and without segment preallocation) interrupted by faults — a crash that drops unsynced data,
//! tears the last write or flips a bit in an unsynced region, an injected fdatasync failure,
//! ENOSPC or EIO on writes — followed by recovery and a checker:
//!
//! * every acknowledged-durable record is present after the crash, byte-identical and in order;
//! * what is served is a gap-free run of valid batches identical to what was appended at those
//!   offsets (nothing after a hole, nothing corrupt, nothing invented);
//! * a poisoned partition acknowledges nothing after the failure and stays poisoned until reopen;
//! * reopening never panics and never refuses a partition (damage is only in unsynced bytes).
//!
//! Runs:
//! * CI: `cargo test -p engine --test fault_simulation` — seeds 0..1000 (`FAULT_SEEDS=n` to change).
//! * one seed: `FAULT_SEED=1234 cargo test -p engine --test fault_simulation -- --nocapture`.
//! * long profile: `FAULT_SECONDS=600 cargo test -p engine --test fault_simulation -- --nocapture`
//!   (seeds from a random base, printed, for the given wall time).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::io::{CrashMode, SimIo};
use engine::log::{AppendError, Durability, LogConfig, LogManager, Partition};
use engine::record::{self, build};
use rand::rngs::StdRng;
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
        Sim { seed, rng, io, mgr, cfg, topics, models, fault, figures: Figures::default() }
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
        self.mgr = mgr;
    }
}

/// FAULT_TRACE=1 prints every step and fault (for replaying a failing seed).
fn trace() -> bool {
    std::env::var_os("FAULT_TRACE").is_some()
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
            sim.step();
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
         segments deleted by retention {}, lost = {} ({:.1} s)",
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
        started.elapsed().as_secs_f64()
    );
    assert_eq!(f.lost, 0);
    assert!(f.seeds >= 1);
}
