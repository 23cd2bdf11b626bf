//! Criterion benchmarks of the engine's hot paths, each with `Throughput` set.
//!
//! * `crc32c/validate/{16KiB,1MiB}`: `record::validate` (header checks + CRC32C) of one batch.
//! * `validate/{crc,records}/{none,lz4,lz4-indep}/{16KiB,1MiB}`: `record::validate_all_with` of a batch of
//!   100 B records, header + CRC only (`crc`) or with every record walked (`records`, what
//!   Produce does), uncompressed and lz4 (throughput in uncompressed bytes).
//! * `batch_header/parse_patch`: header parse + `baseOffset` patch (the per-batch append cost
//!   without the CRC).
//! * `append/{sim,uring}/{never,group,interval}`: `Partition::append_durable` of 16 KiB batches of
//!   100 B records, in memory (SimIo) and on a real temp dir (UringIo), one partition of a
//!   `LogManager` (so `interval` has its background flusher). `append/uring/group-1MiB` is the
//!   1 MiB durable append of issue 2.
//! * `read/index_lookup`: locate the batch holding a random offset in a 64-segment log
//!   (`Partition::read` with a zero byte budget).
//! * `read/fetch_range`: resolve a 1 MiB fetch at a random offset into file ranges.
//! * `fetch/frame_v12_16p`: frame a Fetch v12 response of 16 partitions (`engine::wire::fetch`).
//!
//! Profiles (env `BENCH_PROFILE`): `full` (default; criterion's defaults: 3 s warmup, 5 s
//! measurement, 100 samples) and `quick` (1 s warmup, 3 s measurement, 20 samples: the whole
//! suite in about 1.5 minutes on 2 cores, plus the build). `cargo bench -p bench -- --test` runs each once (CI smoke).
//! Output goes to `target/criterion` unless `CRITERION_HOME` says otherwise.
//!
//! Clock (env `BENCH_CLOCK`): `wall` (default) or `cpu` (CPU time of the benchmarking thread:
//! excludes fdatasync waits and time descheduled; what the CI gate uses on shared machines).

use std::cell::OnceCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bench::BenchClock;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::io::{Io, SimIo, UringIo};
use engine::log::{Durability, LogConfig, LogManager, Partition};
use engine::record;

const MAX_BATCH: usize = 16 << 20;

/// A batch of about `bytes` bytes made of 100-byte records.
fn batch_of(bytes: usize) -> Vec<u8> {
    let count = (bytes / 110).max(1);
    record::build::simple_batch(count, 100, 1_700_000_000_000)
}

fn config() -> Criterion<BenchClock> {
    let c = Criterion::default().with_measurement(BenchClock::from_env());
    match bench::profile() {
        bench::Profile::Quick => c.warm_up_time(Duration::from_millis(1000)).measurement_time(Duration::from_millis(3000)).sample_size(20),
        bench::Profile::Full => c,
    }
}

fn crc32c(c: &mut Criterion<BenchClock>) {
    let mut g = c.benchmark_group("crc32c");
    for (name, size) in [("16KiB", 16usize << 10), ("1MiB", 1 << 20)] {
        let batch = batch_of(size);
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_with_input(BenchmarkId::new("validate", name), &batch, |b, batch| {
            b.iter(|| record::validate(black_box(batch), MAX_BATCH).expect("valid batch"))
        });
    }
    g.finish();
}

/// What Produce's record walk costs (issue 15): `validate_all` of a batch of 100-byte records,
/// header + CRC only (`crc`) against header + CRC + every record walked (`records`), for an
/// uncompressed and an lz4 batch (the lz4 one is decompressed through the walk's window).
fn validate_records(c: &mut Criterion<BenchClock>) {
    let mut g = c.benchmark_group("validate");
    for (name, size) in [("16KiB", 16usize << 10), ("1MiB", 1 << 20)] {
        let plain = batch_of(size);
        // lz4: liblz4's default frame (linked blocks, content checksum); lz4-indep: independent
        // blocks, no content checksum (the xxhash32 of the whole content is then not computed).
        let indep = record::build::lz4_frame(&plain[record::BATCH_HEADER_BYTES..], false, false, false);
        for (codec_name, batch) in [
            ("none", plain.clone()),
            ("lz4", record::build::compressed(&plain, 3)),
            ("lz4-indep", record::build::reframe(&plain, 3, &indep)),
        ] {
            // Throughput in uncompressed bytes, so both codecs compare per record.
            g.throughput(Throughput::Bytes(plain.len() as u64));
            for (what, records) in [("crc", false), ("records", true)] {
                g.bench_with_input(BenchmarkId::new(format!("{what}/{codec_name}"), name), &batch, |b, batch| {
                    b.iter(|| record::validate_all_with(black_box(batch), MAX_BATCH, records).expect("valid batch"))
                });
            }
        }
    }
    g.finish();
}

fn batch_header(c: &mut Criterion<BenchClock>) {
    let mut g = c.benchmark_group("batch_header");
    let mut batch = batch_of(16 << 10);
    g.throughput(Throughput::Elements(1));
    let mut next = 0i64;
    g.bench_function("parse_patch", |b| {
        b.iter(|| {
            let info = record::parse_header(black_box(&batch), MAX_BATCH).expect("valid header");
            record::patch_base_offset(&mut batch, next);
            next += info.offset_count() as i64;
            black_box(&batch[0..8]);
        })
    });
    g.finish();
}

/// A one-partition log, recreated (outside the timed region) whenever `bytes_max` have been
/// appended, so memory (SimIo) and disk (UringIo) use stay bounded whatever criterion asks.
struct AppendLog {
    uring: bool,
    cfg: LogConfig,
    bytes_max: u64,
    written: u64,
    // Field order: the manager and partition close before the directory is removed.
    partition: Option<Arc<Partition>>,
    manager: Option<Arc<LogManager>>,
    tmp: Option<tempfile::TempDir>,
}

impl AppendLog {
    fn new(uring: bool, durability: Durability, bytes_max: u64) -> AppendLog {
        // Segments larger than `bytes_max`: no roll (a 64 MiB fdatasync) lands in a timed sample;
        // the log is replaced between samples instead.
        let cfg = LogConfig { durability, segment_bytes_max: 1 << 30, retention_ms: None, ..LogConfig::default() };
        let mut l = AppendLog { uring, cfg, bytes_max, written: 0, partition: None, manager: None, tmp: None };
        l.reset();
        l
    }

    fn reset(&mut self) {
        self.partition = None;
        if let Some(m) = self.manager.take() {
            m.close().expect("close log");
        }
        self.tmp = None;
        let (io, dir): (Arc<dyn Io>, PathBuf) = if self.uring {
            let tmp = tempfile::Builder::new().prefix("bench-append").tempdir_in(bench::scratch_dir()).expect("temp dir");
            let dir = tmp.path().to_path_buf();
            self.tmp = Some(tmp);
            (Arc::new(UringIo), dir)
        } else {
            (Arc::new(SimIo::new()), PathBuf::from("/bench"))
        };
        let m = LogManager::open(&dir, io, self.cfg.clone()).expect("open log manager");
        let p = m.create_topic("bench", 1, None).expect("create topic")[0].clone();
        self.manager = Some(m);
        self.partition = Some(p);
        self.written = 0;
    }

    /// Time `iters` durable appends of `batch`.
    fn run(&mut self, clock: &BenchClock, iters: u64, batch: &mut [u8]) -> Duration {
        let mut took = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            if self.written + batch.len() as u64 > self.bytes_max {
                self.reset();
            }
            let room = ((self.bytes_max - self.written) / batch.len() as u64).max(1);
            let n = left.min(room);
            let p = self.partition.as_ref().expect("partition");
            let start = clock.now();
            for _ in 0..n {
                black_box(p.append_durable(batch).expect("append"));
            }
            took += clock.since(start);
            self.written += n * batch.len() as u64;
            left -= n;
        }
        took
    }
}

fn append(c: &mut Criterion<BenchClock>) {
    let clock = BenchClock::from_env();
    let mut g = c.benchmark_group("append");
    // Same iteration count in every sample: appends are long enough, and samples stay comparable.
    g.sampling_mode(criterion::SamplingMode::Flat);
    let modes = [("never", Durability::Never), ("group", Durability::Group), ("interval", Durability::Interval { ms: 10 })];
    let mut batch = batch_of(16 << 10);
    let records = record::validate(&batch, MAX_BATCH).expect("valid").record_count as u64;
    g.throughput(Throughput::Bytes(batch.len() as u64));
    // Logs are created on first use, so a filtered run (`… -- '^append/sim/never$'`) sets up only its own.
    for (io_name, uring) in [("sim", false), ("uring", true)] {
        for (mode_name, mode) in modes {
            // SimIo keeps everything in memory: 256 MiB per log; disk: 512 MiB per temp dir.
            let bytes_max = if uring { 512 << 20 } else { 256 << 20 };
            let mut log: Option<AppendLog> = None;
            g.bench_function(BenchmarkId::new(io_name, mode_name), |b| {
                let log = log.get_or_insert_with(|| AppendLog::new(uring, mode, bytes_max));
                b.iter_custom(|iters| log.run(&clock, iters, &mut batch))
            });
        }
    }
    let mut big = batch_of(1 << 20);
    g.throughput(Throughput::Bytes(big.len() as u64));
    let mut log: Option<AppendLog> = None;
    g.bench_function(BenchmarkId::new("uring", "group-1MiB"), |b| {
        let log = log.get_or_insert_with(|| AppendLog::new(true, Durability::Group, 512 << 20));
        b.iter_custom(|iters| log.run(&clock, iters, &mut big))
    });
    g.finish();
    eprintln!("append: 16 KiB batch = {} B, {records} records of 100 B", batch.len());
}

/// A 64-segment log on disk for the read paths, and seeded random offsets into it.
struct ReadLog {
    _tmp: tempfile::TempDir,
    manager: Arc<LogManager>,
    partition: Arc<Partition>,
    offsets: Vec<i64>,
}

impl ReadLog {
    fn build() -> ReadLog {
        let tmp = tempfile::Builder::new().prefix("bench-read").tempdir_in(bench::scratch_dir()).expect("temp dir");
        let cfg = LogConfig { durability: Durability::Never, segment_bytes_max: 1 << 20, retention_ms: None, ..LogConfig::default() };
        let manager = LogManager::open(tmp.path(), Arc::new(UringIo), cfg).expect("open");
        let partition = manager.create_topic("read", 1, None).expect("topic")[0].clone();
        let mut batch = batch_of(16 << 10);
        while partition.segment_count() < 64 {
            partition.append(&mut batch).expect("append");
        }
        partition.flush().expect("flush");
        let end = partition.high_watermark();
        let mut rng = bench::XorShift::new(0x5eed);
        let offsets = (0..4096).map(|_| (rng.next_u64() % end) as i64).collect();
        ReadLog { _tmp: tmp, manager, partition, offsets }
    }
}

fn read(c: &mut Criterion<BenchClock>) {
    // Built on first use: a filtered run that skips the read benchmarks does not write the log.
    let cell: OnceCell<ReadLog> = OnceCell::new();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("index_lookup", |b| {
        let log = cell.get_or_init(ReadLog::build);
        b.iter(|| {
            i = (i + 1) % log.offsets.len();
            black_box(log.partition.read(log.offsets[i], 0, false).expect("read"))
        })
    });
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("fetch_range", |b| {
        let log = cell.get_or_init(ReadLog::build);
        b.iter(|| {
            i = (i + 1) % log.offsets.len();
            let s = log.partition.read(log.offsets[i], 1 << 20, true).expect("read");
            assert!(!s.ranges.is_empty());
            black_box(s)
        })
    });
    g.finish();

    // Fetch response framing (engine::wire::fetch, v12): 16 partitions of pre-resolved 1 MiB
    // ranges; the record bytes themselves are never touched (they go out with sendfile).
    let mut g = c.benchmark_group("fetch");
    const PARTITIONS: usize = 16;
    g.throughput(Throughput::Elements(PARTITIONS as u64));
    let mut ranges: Option<Vec<Vec<engine::log::FileRange>>> = None;
    g.bench_function("frame_v12_16p", |b| {
        let log = cell.get_or_init(ReadLog::build);
        let ranges = ranges.get_or_insert_with(|| {
            (0..PARTITIONS).map(|p| log.partition.read(log.offsets[p], 1 << 20, true).expect("read").ranges).collect()
        });
        let mut corr = 0i32;
        b.iter(|| {
            corr = corr.wrapping_add(1);
            let partitions = ranges
                .iter()
                .enumerate()
                .map(|(p, r)| engine::wire::fetch::PartitionData {
                    partition: p as i32,
                    error_code: 0,
                    high_watermark: 1 << 20,
                    last_stable_offset: -1,
                    log_start_offset: 0,
                    aborted: None,
                    records: r.clone(),
                })
                .collect();
            let topics = vec![engine::wire::fetch::TopicData { name: "bench".to_string(), partitions }];
            black_box(engine::wire::fetch::build(corr, 12, 0, topics).total_bytes)
        })
    });
    g.finish();
    if let Some(log) = cell.get() {
        eprintln!("read: log of {} segments, {} offsets", log.partition.segment_count(), log.partition.high_watermark());
        log.manager.close().expect("close");
    }
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = crc32c, validate_records, batch_header, append, read
}
criterion_main!(hot_paths);
