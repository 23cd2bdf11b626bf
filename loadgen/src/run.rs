//! `loadgen run`: target setup (embedded engine, external brokers, or discarding sink),
//! calibration, phases (warmup → measure → drain; backlog; max-rate search), the once-a-second
//! collector (live line, progress bar, interval log), and the result file.
//!
//! Exit codes: 0 ok; 2 bad input (unreachable broker, bad workload, impossible rate/size) with
//! no result file; 1 failure part-way (result written with `"complete": false`); 130 Ctrl-C
//! (result written with `"complete": false`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{prepare_topics, resolve, Conn, KafkaTransport, TopicLayout};
use crate::consumer::{run_consumer, ConsumerSpec};
use crate::encode::{KeyGen, PayloadPool};
use crate::producer::{run_producer, ProducerSpec};
use crate::rate::{sleep_until, Clock, Schedule};
use crate::results::*;
use crate::sink::SinkTransport;
use crate::stats::{self, new_hist, summarize, take, Hist, LoggedInterval, Metrics};
use crate::workload::Workload;

/// Set by the Ctrl-C handler.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Install the Ctrl-C handler once (later calls are no-ops).
pub fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130); // second Ctrl-C: leave now
            }
        });
    });
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workload: Workload,
    /// External brokers, `host:port[,…]`; None = embedded engine.
    pub bootstrap: Option<String>,
    /// Discarding sink instead of a broker (no consumers).
    pub sink: bool,
    /// None = calibrate for the embedded engine only.
    pub calibrate: Option<bool>,
    /// Results root (`results/`); the file goes to `<out_dir>/<label or host>/<date>-<name>.json`.
    pub out_dir: PathBuf,
    pub label: Option<String>,
    /// Exact result path (overrides the layout). `None` with `write` false = do not write.
    pub output: Option<PathBuf>,
    pub write: bool,
    /// Parent of the embedded engine's temporary data dir (default: the system temp dir).
    pub data_dir: Option<PathBuf>,
    pub quiet: bool,
    pub record_latency: bool,
    /// Sink only: stall the sink at (seconds after start, for seconds).
    pub sink_stall: Option<(f64, f64)>,
    /// External cluster: per-run or existing topics (see `external.rs`).
    pub topics: crate::external::TopicOptions,
}

impl RunOptions {
    pub fn new(workload: Workload) -> RunOptions {
        RunOptions {
            workload,
            bootstrap: None,
            sink: false,
            calibrate: None,
            out_dir: PathBuf::from("results"),
            label: None,
            output: None,
            write: true,
            data_dir: None,
            quiet: false,
            record_latency: true,
            sink_stall: None,
            topics: crate::external::TopicOptions { topic_prefix: "loadgen".into(), replication_factor: -1, ..Default::default() },
        }
    }
}

#[derive(Debug)]
pub enum RunError {
    /// Bad input: exit code 2, nothing written.
    Usage(String),
    /// The run could not produce a result (e.g. no rate met the search bound): exit code 1.
    Failed(String),
}

pub struct Outcome {
    pub result: RunResult,
    pub path: Option<PathBuf>,
    pub exit_code: i32,
    /// Generator CPU time (all producer threads), for selftests.
    pub producer_cpu_s: f64,
}

enum Embedded {
    None,
    Broker(engine::broker::BrokerHandle, tempfile::TempDir),
}

struct Setup {
    kind: &'static str,
    bootstrap: String,
    fsync: String,
    layouts: Vec<TopicLayout>,
    calibration: Option<Calibration>,
    embedded: Embedded,
    identity: Option<crate::results::TargetIdentity>,
    /// Deletes the per-run topics of an external cluster when the run ends.
    _cleanup: Option<crate::external::TopicCleanup>,
}

fn setup(opts: &RunOptions) -> Result<Setup, RunError> {
    let w = &opts.workload;
    let topics = w.topic_names();
    if opts.sink {
        let calibration = if opts.calibrate == Some(true) {
            let dir = opts.data_dir.clone().unwrap_or_else(std::env::temp_dir);
            Some(
                crate::calibrate::calibrate(&dir, &crate::calibrate::Budget::default())
                    .map_err(|e| RunError::Usage(format!("calibration in {} failed: {e}", dir.display())))?,
            )
        } else {
            None
        };
        return Ok(Setup {
            kind: "sink",
            bootstrap: "sink".into(),
            fsync: "n/a".into(),
            layouts: topics
                .iter()
                .map(|t| TopicLayout {
                    topic: t.clone(),
                    leaders: (0..w.partitions_per_topic as i32).map(|p| (p, SocketAddr::from(([0, 0, 0, 0], 0)))).collect(),
                })
                .collect(),
            calibration,
            embedded: Embedded::None,
            identity: None,
            _cleanup: None,
        });
    }
    let (kind, boot_addrs, fsync, embedded, cal_dir) = match &opts.bootstrap {
        Some(b) => {
            let addrs: Vec<SocketAddr> = b
                .split(',')
                .map(|a| resolve(a.trim()))
                .collect::<Result<_, _>>()
                .map_err(RunError::Usage)?;
            if addrs.is_empty() {
                return Err(RunError::Usage("--bootstrap is empty".into()));
            }
            let dir = opts.data_dir.clone().unwrap_or_else(|| opts.out_dir.clone());
            ("external", addrs, "unknown".to_string(), Embedded::None, dir)
        }
        None => {
            let durability: engine::log::Durability = w.durability.parse().map_err(RunError::Usage)?;
            let parent = opts.data_dir.clone().unwrap_or_else(std::env::temp_dir);
            std::fs::create_dir_all(&parent)
                .map_err(|e| RunError::Usage(format!("cannot create data dir {}: {e}", parent.display())))?;
            let tmp = tempfile::Builder::new()
                .prefix("loadgen-engine-")
                .tempdir_in(&parent)
                .map_err(|e| RunError::Usage(format!("cannot create a data dir in {}: {e}", parent.display())))?;
            let mut cfg = engine::broker::BrokerConfig::new(tmp.path().join("data"), durability);
            cfg.listen = "127.0.0.1:0".parse().expect("static addr");
            cfg.default_partitions = w.partitions_per_topic as i32;
            cfg.log.direct_io = w.direct_io;
            let h = engine::broker::Broker::start(cfg)
                .map_err(|e| RunError::Usage(format!("embedded broker failed to start: {e}")))?;
            let addr = h.local_addr();
            let dir = tmp.path().to_path_buf();
            ("embedded", vec![addr], durability.to_string(), Embedded::Broker(h, tmp), dir)
        }
    };
    let bootstrap = boot_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let calibration = if opts.calibrate.unwrap_or(kind == "embedded") {
        if !opts.quiet {
            eprintln!("calibrating (disk {}, loopback, memory)…", cal_dir.display());
        }
        Some(
            crate::calibrate::calibrate(&cal_dir, &crate::calibrate::Budget::default())
                .map_err(|e| RunError::Usage(format!("calibration in {} failed: {e}", cal_dir.display())))?,
        )
    } else {
        None
    };
    // First reachable bootstrap broker.
    let mut last_err = String::new();
    let mut boot = None;
    for a in &boot_addrs {
        match Conn::connect(*a, Duration::from_secs(3)) {
            Ok(c) => {
                boot = Some(c);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let mut boot = boot.ok_or(RunError::Usage(last_err))?;
    let identity = Some(crate::external::identify(&mut boot).map_err(RunError::Usage)?);
    let (topics, rf, cleanup) = if kind == "external" {
        let plan = crate::external::plan(&opts.topics, &w.name, w.topics, &crate::external::run_id()).map_err(RunError::Usage)?;
        let cleanup = plan.delete.then(|| crate::external::TopicCleanup::new(boot.addr, plan.names.clone(), opts.quiet));
        (plan.names, plan.create_with_rf, cleanup)
    } else {
        (topics, Some(-1), None)
    };
    let layouts = prepare_topics(&mut boot, &topics, w.partitions_per_topic, rf, Duration::from_secs(15)).map_err(RunError::Usage)?;
    Ok(Setup { kind, bootstrap, fsync, layouts, calibration, embedded, identity, _cleanup: cleanup })
}

/// Per-second bookkeeping: interval histograms, counters, the time series and the .hlog.
struct Collector {
    clock: Clock,
    metrics: Arc<Metrics>,
    t0_ns: u64,
    last_ns: u64,
    last_acked: u64,
    last_consumed: u64,
    last_errors: u64,
    series: Vec<Second>,
    hlog: Vec<LoggedInterval>,
    total_publish: Hist,
    total_delay: Hist,
    total_e2e: Hist,
    measured_acked: u64,
    measured_consumed: u64,
    measured_s: f64,
    subscriptions: u64,
    quiet: bool,
    bar: Option<ProgressBar>,
}

struct Tick {
    publish: Hist,
    acked: u64,
    errors: u64,
}

impl Collector {
    fn new(clock: Clock, metrics: Arc<Metrics>, subscriptions: u64, quiet: bool) -> Collector {
        let now = clock.now_ns();
        Collector {
            clock,
            metrics,
            t0_ns: now,
            last_ns: now,
            last_acked: 0,
            last_consumed: 0,
            last_errors: 0,
            series: Vec::new(),
            hlog: Vec::new(),
            total_publish: new_hist(),
            total_delay: new_hist(),
            total_e2e: new_hist(),
            measured_acked: 0,
            measured_consumed: 0,
            measured_s: 0.0,
            subscriptions,
            quiet,
            bar: None,
        }
    }

    fn set_phase_bar(&mut self, phase: &str, secs: f64) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let b = ProgressBar::new((secs.max(0.0) * 10.0) as u64);
        b.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {elapsed}/{duration}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_prefix(phase.to_string());
        self.bar = Some(b);
    }

    /// Close the interval ending now. `measured`: its latencies count in the result; `rate_counted`:
    /// its acks count towards the measured throughput.
    fn tick(&mut self, phase: &str, measured: bool, rate_counted: bool) -> Tick {
        let now = self.clock.now_ns();
        let dur_s = ((now - self.last_ns) as f64 / 1e9).max(1e-9);
        let start_s = (self.last_ns - self.t0_ns) as f64 / 1e9;
        let m = &self.metrics;
        let publish = take(&m.publish);
        let delay = take(&m.delay);
        let e2e = take(&m.e2e);
        let acked = m.acked.load(Ordering::Relaxed);
        let consumed = m.consumed.load(Ordering::Relaxed);
        let errors = m.errors.load(Ordering::Relaxed);
        let d_acked = acked - self.last_acked;
        let d_consumed = consumed - self.last_consumed;
        let d_errors = errors - self.last_errors;
        if measured {
            let _ = self.total_publish.add(&publish);
            let _ = self.total_delay.add(&delay);
            let _ = self.total_e2e.add(&e2e);
        }
        if rate_counted {
            self.measured_acked += d_acked;
            self.measured_consumed += d_consumed;
            self.measured_s += dur_s;
        }
        let sent = m.sent.load(Ordering::Relaxed);
        let backlog = if self.subscriptions > 0 { (sent * self.subscriptions) as i64 - consumed as i64 } else { 0 };
        let sec = Second {
            t_s: (now - self.t0_ns) as f64 / 1e9,
            phase: phase.to_string(),
            publish_records_per_s: d_acked as f64 / dur_s,
            consume_records_per_s: d_consumed as f64 / dur_s,
            publish_p99_us: if publish.is_empty() { 0.0 } else { publish.value_at_quantile(0.99) as f64 },
            e2e_p99_us: if e2e.is_empty() { 0.0 } else { e2e.value_at_quantile(0.99) as f64 },
            errors: d_errors,
            backlog,
        };
        if !self.quiet {
            let line = format!(
                "[{:>6.1}s {:<7}] publish {:>10.0} rec/s  p99 {:>9}  e2e p99 {:>9}  consume {:>10.0} rec/s  errors {:>4}  backlog {}",
                sec.t_s,
                phase,
                sec.publish_records_per_s,
                fmt_us(sec.publish_p99_us),
                fmt_us(sec.e2e_p99_us),
                sec.consume_records_per_s,
                d_errors,
                backlog
            );
            match &self.bar {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
        for (tag, h) in [("publish", &publish), ("delay", &delay), ("e2e", &e2e)] {
            if !h.is_empty() {
                self.hlog.push(LoggedInterval { tag: crate::hlog::tag(tag, phase), start_s, duration_s: dur_s, hist: h.clone() });
            }
        }
        self.series.push(sec);
        self.last_ns = now;
        self.last_acked = acked;
        self.last_consumed = consumed;
        self.last_errors = errors;
        Tick { publish, acked: d_acked, errors: d_errors }
    }

    /// Sleep until the next tick (1 s after the last, or `boundary_ns` if sooner), updating the bar.
    fn wait(&self, boundary_ns: u64) {
        let target = (self.last_ns + 1_000_000_000).min(boundary_ns.max(self.last_ns + 1_000_000));
        while self.clock.now_ns() < target {
            if self.metrics.stopped() || INTERRUPTED.load(Ordering::Relaxed) {
                return;
            }
            if let Some(b) = &self.bar {
                b.inc(1);
            }
            let step = (target - self.clock.now_ns().min(target)).min(100_000_000);
            sleep_until(&self.clock, self.clock.now_ns() + step);
        }
    }

    fn due(&self, boundary_ns: u64) -> bool {
        let now = self.clock.now_ns();
        now >= boundary_ns || now >= self.last_ns + 1_000_000_000
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

struct Producers {
    handles: Vec<JoinHandle<(Result<u64, String>, f64)>>,
    halt: Arc<AtomicBool>,
}

impl Producers {
    fn finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }
    /// Join; returns total producer CPU seconds.
    fn join(self, metrics: &Metrics) -> f64 {
        let mut cpu = 0.0;
        for h in self.handles {
            match h.join() {
                Ok((Ok(_), c)) => cpu += c,
                Ok((Err(e), c)) => {
                    cpu += c;
                    metrics.fail(e);
                }
                Err(_) => metrics.fail("a producer thread panicked".into()),
            }
        }
        cpu
    }
}

/// CPU time of the calling thread in seconds (from /proc/thread-self/schedstat), if available.
pub fn thread_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse::<u64>().ok().map(|ns| ns as f64 / 1e9)
}

struct Ctx<'a> {
    opts: &'a RunOptions,
    setup: &'a Setup,
    clock: Clock,
    metrics: Arc<Metrics>,
    pool: Arc<PayloadPool>,
}

impl Ctx<'_> {
    fn spawn_producers(&self, rate: f64, start_ns: u64, end_ns: u64, drain_deadline_ns: u64) -> Result<Producers, String> {
        let w = &self.opts.workload;
        let n = (w.topics * w.producers_per_topic) as f64;
        let per = rate / n;
        let halt = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for (ti, layout) in self.setup.layouts.iter().enumerate() {
            for j in 0..w.producers_per_topic {
                let seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((ti as u64) << 32) ^ j as u64 ^ start_ns;
                let mut keys = KeyGen::new(w.key_distributor, w.key_space, w.zipf_exponent, w.partitions_per_topic, seed);
                let spec = ProducerSpec {
                    partitions: w.partitions_per_topic,
                    schedule: Schedule::new(start_ns + (j as f64 * 1e9 / rate) as u64 % 1_000_000, per),
                    end_ns,
                    drain_deadline_ns,
                    batch_bytes: w.batch_size as usize,
                    linger_ns: (w.linger_ms * 1e6) as u64,
                    queued_bytes_max: 64 << 20,
                    halt: halt.clone(),
                    settings: crate::produce::ProducerSettings::of(w),
                };
                let (clock, metrics, pool) = (self.clock, self.metrics.clone(), self.pool.clone());
                let h = if self.opts.sink {
                    let mut t = SinkTransport::new(clock, metrics.clone());
                    if let Some((at, dur)) = self.opts.sink_stall {
                        let from = start_ns + (at * 1e9) as u64;
                        t.stall = Some((from, from + (dur * 1e9) as u64));
                    }
                    std::thread::Builder::new().name(format!("producer-{ti}-{j}")).spawn(move || {
                        let c0 = thread_cpu_s().unwrap_or(0.0);
                        let r = run_producer(&spec, &mut keys, &pool, &clock, &metrics, &mut t);
                        (r, thread_cpu_s().unwrap_or(0.0) - c0)
                    })
                } else {
                    let mut t = KafkaTransport::connect_with(layout, &spec.settings, w.max_in_flight, clock, metrics.clone())?;
                    std::thread::Builder::new().name(format!("producer-{ti}-{j}")).spawn(move || {
                        let c0 = thread_cpu_s().unwrap_or(0.0);
                        let r = run_producer(&spec, &mut keys, &pool, &clock, &metrics, &mut t);
                        let cpu = thread_cpu_s().unwrap_or(0.0) - c0;
                        t.close();
                        (r, cpu)
                    })
                }
                .map_err(|e| format!("spawn producer: {e}"))?;
                handles.push(h);
            }
        }
        Ok(Producers { handles, halt })
    }

    /// Start consumers for every subscription; partitions spread over a subscription's consumers.
    fn spawn_consumers(&self, start: &[Vec<(i32, i64)>], done: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
        let w = &self.opts.workload;
        let mut hs = Vec::new();
        if self.opts.sink || w.consumer_per_subscription == 0 {
            return hs;
        }
        for _s in 0..w.subscriptions_per_topic {
            for (ti, layout) in self.setup.layouts.iter().enumerate() {
                for c in 0..w.consumer_per_subscription {
                    // group this consumer's partitions by leader
                    let mut by_leader: Vec<(SocketAddr, Vec<(i32, i64)>)> = Vec::new();
                    for (k, (pid, addr)) in layout.leaders.iter().enumerate() {
                        if k as u32 % w.consumer_per_subscription != c {
                            continue;
                        }
                        let off = start[ti].iter().find(|(p, _)| p == pid).map(|x| x.1).unwrap_or(0);
                        match by_leader.iter_mut().find(|(a, _)| a == addr) {
                            Some((_, v)) => v.push((*pid, off)),
                            None => by_leader.push((*addr, vec![(*pid, off)])),
                        }
                    }
                    for (addr, partitions) in by_leader {
                        let spec = ConsumerSpec { addr, topic: layout.topic.clone(), partitions, max_wait_ms: 100 };
                        let (clock, metrics, done) = (self.clock, self.metrics.clone(), done.clone());
                        if let Ok(h) = std::thread::Builder::new().name("consumer".into()).spawn(move || run_consumer(spec, clock, metrics, done)) {
                            hs.push(h);
                        }
                    }
                }
            }
        }
        hs
    }

    /// Latest offsets of every partition (where consumers start).
    fn end_offsets(&self) -> Result<Vec<Vec<(i32, i64)>>, String> {
        let mut out = Vec::new();
        for layout in &self.setup.layouts {
            if self.opts.sink {
                out.push(Vec::new());
                continue;
            }
            let mut offs = Vec::new();
            let mut addrs: Vec<SocketAddr> = layout.leaders.iter().map(|(_, a)| *a).collect();
            addrs.dedup();
            for a in addrs {
                let parts: Vec<i32> = layout.leaders.iter().filter(|(_, x)| *x == a).map(|(p, _)| *p).collect();
                let m = crate::retry::list_offsets_settled(a, &layout.topic, &parts, -1, Duration::from_secs(30))?;
                offs.extend(m);
            }
            out.push(offs);
        }
        Ok(out)
    }

    fn consumers_caught_up(&self) -> bool {
        let w = &self.opts.workload;
        if self.opts.sink || w.consumer_per_subscription == 0 {
            return true;
        }
        let m = &self.metrics;
        // acks=0: nothing is acknowledged; consumers catch up with what was written.
        let produced = m.acked.load(Ordering::Relaxed) + m.producer.written_unacknowledged.load(Ordering::Relaxed);
        m.consumed.load(Ordering::Relaxed) >= produced * w.subscriptions_per_topic as u64
    }

    /// Stop requested (fatal error or Ctrl-C); on Ctrl-C also tells every thread to stop.
    fn halted(&self) -> bool {
        if INTERRUPTED.load(Ordering::Relaxed) {
            self.metrics.stop.store(true, Ordering::SeqCst);
            return true;
        }
        self.metrics.stopped()
    }
}

/// Run one benchmark.
pub fn run(opts: &RunOptions) -> Result<Outcome, RunError> {
    let w = &opts.workload;
    w.validate().map_err(RunError::Usage)?;
    if opts.sink && w.consumer_backlog_size_gb > 0.0 {
        return Err(RunError::Usage("the discarding sink cannot build a consumer backlog".into()));
    }
    let pool = Arc::new(PayloadPool::for_workload(w, 7).map_err(RunError::Usage)?);
    install_ctrlc();
    let setup = setup(opts)?;
    let clock = Clock::new();
    let metrics = Arc::new(Metrics::new(opts.record_latency));
    let ctx = Ctx { opts, setup: &setup, clock, metrics: metrics.clone(), pool };
    let subs = if opts.sink { 0 } else { (w.subscriptions_per_topic * w.consumer_per_subscription.min(1)) as u64 };
    let mut col = Collector::new(clock, metrics.clone(), subs, opts.quiet);
    let started_wall_us = clock.wall_us(col.t0_ns);
    let done = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    let mut producer_cpu_s = 0.0;
    let mut search: Option<Search> = None;
    let mut drain: Option<Drain> = None;
    let mut measure_started = false;
    let mut target_rate = w.producer_rate;

    let body = (|| -> Result<(), String> {
        let start_offsets = ctx.end_offsets()?;
        let backlog_mode = w.consumer_backlog_size_gb > 0.0;
        if !backlog_mode {
            consumers = ctx.spawn_consumers(&start_offsets, &done);
        }
        if w.producer_rate == 0.0 {
            let s = search_max_rate(&ctx, &mut col)?;
            target_rate = s.max_rate;
            search = Some(s);
        }
        if ctx.halted() {
            return Ok(());
        }
        if backlog_mode {
            let backlog_bytes = (w.consumer_backlog_size_gb * 1e9) as u64;
            let s0 = clock.now_ns() + 50_000_000;
            let prods = ctx.spawn_producers(target_rate, s0, u64::MAX / 4, u64::MAX / 4)?;
            col.set_phase_bar("backlog", backlog_bytes as f64 / (target_rate * w.message_size as f64));
            while !ctx.halted() && metrics.acked_bytes.load(Ordering::Relaxed) < backlog_bytes {
                col.wait(u64::MAX);
                if col.due(u64::MAX) {
                    col.tick("backlog", false, false);
                }
            }
            if ctx.halted() {
                prods.halt.store(true, Ordering::SeqCst);
                producer_cpu_s += prods.join(&metrics);
                return Ok(());
            }
            let backlog_records = metrics.acked.load(Ordering::Relaxed);
            let backlog_bytes = metrics.acked_bytes.load(Ordering::Relaxed);
            col.tick("backlog", false, false);
            measure_started = true;
            let d0 = clock.now_ns();
            let c0 = metrics.consumed.load(Ordering::Relaxed);
            let cb0 = metrics.consumed_bytes.load(Ordering::Relaxed);
            consumers = ctx.spawn_consumers(&start_offsets, &done);
            let deadline = d0 + (w.drain_seconds * 1e9) as u64;
            col.set_phase_bar("drain", w.drain_seconds);
            let mut caught_up = false;
            while !ctx.halted() {
                col.wait(deadline);
                if col.due(deadline) {
                    col.tick("drain", true, true);
                }
                // Caught up with the backlog (producers keep going, as in OMB).
                if metrics.consumed.load(Ordering::Relaxed) - c0 >= backlog_records * w.subscriptions_per_topic as u64 {
                    caught_up = true;
                    break;
                }
                if clock.now_ns() >= deadline {
                    break;
                }
            }
            col.tick("drain", true, true);
            prods.halt.store(true, Ordering::SeqCst);
            let drain_s = (clock.now_ns() - d0) as f64 / 1e9;
            let consumed = metrics.consumed.load(Ordering::Relaxed) - c0;
            drain = Some(Drain {
                backlog_records,
                backlog_bytes,
                drain_s,
                records_per_s: consumed as f64 / drain_s,
                bytes_per_s: (metrics.consumed_bytes.load(Ordering::Relaxed) - cb0) as f64 / drain_s,
                caught_up,
            });
            producer_cpu_s += prods.join(&metrics);
            return Ok(());
        }
        // warmup → measure → drain
        let s0 = clock.now_ns() + 50_000_000;
        let warm_end = s0 + (w.warmup_s() * 1e9) as u64;
        let meas_end = warm_end + (w.duration_s() * 1e9) as u64;
        let drain_deadline = meas_end + (w.drain_seconds * 1e9) as u64;
        let prods = ctx.spawn_producers(target_rate, s0, meas_end, drain_deadline)?;
        sleep_until(&clock, s0);
        col.tick("setup", false, false);
        if warm_end > s0 {
            col.set_phase_bar("warmup", w.warmup_s());
            while !ctx.halted() && clock.now_ns() < warm_end {
                col.wait(warm_end);
                if col.due(warm_end) {
                    col.tick("warmup", false, false);
                }
            }
        }
        if ctx.halted() {
            prods.halt.store(true, Ordering::SeqCst);
            producer_cpu_s += prods.join(&metrics);
            return Ok(());
        }
        measure_started = true;
        col.set_phase_bar("measure", w.duration_s());
        while !ctx.halted() && clock.now_ns() < meas_end {
            col.wait(meas_end);
            if col.due(meas_end) {
                col.tick("measure", true, true);
            }
        }
        col.set_phase_bar("drain", w.drain_seconds);
        while !(ctx.halted() || prods.finished() && ctx.consumers_caught_up()) && clock.now_ns() < drain_deadline {
            col.wait(drain_deadline);
            if col.due(drain_deadline) {
                col.tick("drain", true, false);
            }
        }
        col.tick("drain", true, false);
        producer_cpu_s += prods.join(&metrics);
        Ok(())
    })();
    if let Err(e) = body {
        metrics.fail(e);
    }
    done.store(true, Ordering::SeqCst);
    if let Some(b) = col.bar.take() {
        b.finish_and_clear();
    }
    for c in consumers {
        let _ = c.join();
    }
    let fatal = metrics.fatal();
    let interrupted = INTERRUPTED.load(Ordering::Relaxed);
    let summary = setup_summary(&setup);
    drop(ctx);
    if let Embedded::Broker(h, tmp) = setup.embedded {
        if let Err(e) = h.shutdown() {
            metrics.fail(format!("embedded broker shutdown: {e}"));
        }
        drop(tmp);
    }
    if !measure_started {
        // Nothing measured: no result file.
        if interrupted {
            return Err(RunError::Usage("interrupted before the measured phase; no result written".into()));
        }
        let msg = fatal.unwrap_or_else(|| "run ended before the measured phase".into());
        // Connection problems before measuring are bad input (unreachable broker); others failed runs.
        return Err(if msg.contains("no rate kept") { RunError::Failed(msg) } else { RunError::Usage(msg) });
    }
    let complete = fatal.is_none() && !interrupted;
    let result = build_result(opts, &summary, &col, started_wall_us, complete, target_rate, search, drain);
    let exit_code = if interrupted {
        130
    } else if fatal.is_some() {
        1
    } else {
        0
    };
    if let Some(e) = &fatal {
        eprintln!("error: {e}");
    }
    let path = if opts.write {
        let p = write_result(opts, &result, &col, started_wall_us).map_err(RunError::Usage)?;
        Some(p)
    } else {
        None
    };
    let mut result = result;
    if let Some(p) = &path {
        result.hlog = Some(hlog_name(p));
    }
    Ok(Outcome { result, path, exit_code, producer_cpu_s })
}

struct SetupSummary {
    kind: String,
    bootstrap: String,
    fsync: String,
    calibration: Option<Calibration>,
    identity: Option<crate::results::TargetIdentity>,
    topics: Vec<String>,
}

fn setup_summary(s: &Setup) -> SetupSummary {
    SetupSummary {
        kind: s.kind.into(),
        bootstrap: s.bootstrap.clone(),
        fsync: s.fsync.clone(),
        calibration: s.calibration.clone(),
        identity: s.identity.clone(),
        topics: s.layouts.iter().map(|l| l.topic.clone()).collect(),
    }
}

/// The `producerRate: 0` search: ramp (doubling from 2,000 rec/s) until a rate fails, bisect
/// (geometric) between the last pass and the first failure down to 10%, then confirm the answer
/// with a repeat trial (stepping down 10% if it fails). A rate fails when a trial and its retry
/// both fail.
fn search_max_rate(ctx: &Ctx<'_>, col: &mut Collector) -> Result<Search, String> {
    let w = &ctx.opts.workload;
    let bound_us = w.p99_bound_ms * 1000.0;
    let mut trials: Vec<Trial> = Vec::new();
    let mut trial = |stage: &str, rate: f64, col: &mut Collector| -> Result<Trial, String> {
        // Each trial: 1 s (at most a third of the trial) of its own warmup, excluded from its
        // p99 and achieved rate, then the judged part.
        let secs = w.search_step_seconds;
        let warm = (secs / 3.0).min(1.0);
        let s0 = ctx.clock.now_ns() + 20_000_000;
        let judged_from = s0 + (warm * 1e9) as u64;
        let end = judged_from + (secs * 1e9) as u64;
        let drain = end + 2_000_000_000;
        col.set_phase_bar("search", secs + warm);
        let prods = ctx.spawn_producers(rate, s0, end, drain)?;
        let mut h = new_hist();
        let mut acked = 0;
        let mut errors = 0;
        let mut judged = false;
        while !(ctx.halted() || prods.finished() && ctx.clock.now_ns() >= end) {
            let now = ctx.clock.now_ns();
            let boundary = if now < judged_from { judged_from } else if now < end { end } else { drain };
            col.wait(boundary);
            if col.due(boundary) || prods.finished() {
                let t = col.tick("search", false, false);
                if judged {
                    let _ = h.add(&t.publish);
                    acked += t.acked;
                    errors += t.errors;
                }
                judged = ctx.clock.now_ns() >= judged_from;
            }
        }
        let t = col.tick("search", false, false);
        let _ = h.add(&t.publish);
        acked += t.acked;
        errors += t.errors;
        prods.join(&ctx.metrics);
        let achieved = acked as f64 / secs;
        let p99 = if h.is_empty() { f64::INFINITY } else { h.value_at_quantile(0.99) as f64 };
        let ok = p99 <= bound_us && achieved >= 0.95 * rate && errors == 0;
        let tr = Trial { stage: stage.into(), target_rate: rate, achieved_rate: achieved, p99_us: p99.min(1e12), errors, ok };
        if !ctx.opts.quiet {
            eprintln!(
                "search {stage:<7} target {rate:>10.0} rec/s  achieved {achieved:>10.0}  p99 {}  -> {}",
                fmt_us(tr.p99_us),
                if ok { "pass" } else { "fail" }
            );
        }
        trials.push(tr.clone());
        Ok(tr)
    };
    let mut lo = 0.0f64;
    let mut hi = f64::INFINITY;
    let mut r = 2_000.0;
    // A failure counts only if a retry at the same rate fails too: one noisy second on a shared
    // machine must not end the search.
    let mut passes = |stage: &str, rate: f64, col: &mut Collector| -> Result<bool, String> {
        Ok(trial(stage, rate, col)?.ok || (!ctx.halted() && trial(&format!("{stage}-retry"), rate, col)?.ok))
    };
    while r <= crate::workload::PRODUCER_RATE_MAX && !ctx.halted() {
        if passes("ramp", r, col)? {
            lo = r;
            r *= 2.0;
        } else {
            hi = r;
            break;
        }
    }
    let mut steps = 0;
    while lo > 0.0 && hi.is_finite() && hi / lo > 1.1 && steps < 5 && !ctx.halted() {
        let mid = (lo * hi).sqrt();
        if passes("bisect", mid, col)? {
            lo = mid;
        } else {
            hi = mid;
        }
        steps += 1;
    }
    let mut confirmed = false;
    for _ in 0..3 {
        if lo <= 0.0 || ctx.halted() {
            break;
        }
        if passes("confirm", lo, col)? {
            confirmed = true;
            break;
        }
        lo *= 0.9;
    }
    if !confirmed && !ctx.halted() {
        return Err(format!("no rate kept p99 publish latency within {} ms (lowest tried 2000 rec/s)", w.p99_bound_ms));
    }
    Ok(Search { p99_bound_us: bound_us, trials, max_rate: lo })
}

#[allow(clippy::too_many_arguments)]
fn build_result(
    opts: &RunOptions,
    s: &SetupSummary,
    col: &Collector,
    started_wall_us: u64,
    complete: bool,
    target_rate: f64,
    search: Option<Search>,
    drain: Option<Drain>,
) -> RunResult {
    let w = &opts.workload;
    let dur = col.measured_s.max(1e-9);
    let msg = w.message_size as u64;
    let records = col.measured_acked;
    let records_per_s = records as f64 / dur;
    let bytes_per_s = records_per_s * msg as f64;
    let consume_rps = col.measured_consumed as f64 / dur;
    let e2e = summarize(&col.total_e2e);
    let efficiency = match &s.calibration {
        Some(c) => Efficiency {
            disk_write_fraction: Some(bytes_per_s / c.disk_seq_write_bytes_per_s),
            loopback_fraction: (s.kind != "sink").then(|| (bytes_per_s + consume_rps * msg as f64) / c.loopback_bytes_per_s),
            memcpy_fraction: Some(bytes_per_s / c.memcpy_bytes_per_s),
        },
        None => Efficiency::default(),
    };
    RunResult {
        schema: SCHEMA.into(),
        started_at: crate::env::rfc3339(started_wall_us),
        duration_s: col.measured_s,
        complete,
        workload: WorkloadInfo {
            name: w.name.clone(),
            topics: w.topics,
            partitions_per_topic: w.partitions_per_topic,
            message_size: w.message_size,
            producer_rate: w.producer_rate,
            target_rate,
            key_distributor: format!("{:?}", w.key_distributor),
            producers: w.topics * w.producers_per_topic,
            consumers: if opts.sink { 0 } else { w.topics * w.subscriptions_per_topic * w.consumer_per_subscription },
            batch_size: w.batch_size,
            linger_ms: w.linger_ms,
            max_in_flight: w.max_in_flight,
            acks: w.acks,
            warmup_s: w.warmup_s(),
        },
        target: Target {
            kind: if s.kind == "sink" { "embedded".into() } else { s.kind.clone() },
            bootstrap: s.bootstrap.clone(),
            fsync: s.fsync.clone(),
            sink: s.kind == "sink",
            direct_io: (s.kind == "embedded").then_some(w.direct_io),
            identity: s.identity.clone(),
            topics: s.topics.clone(),
        },
        environment: crate::env::environment(),
        calibration: s.calibration.clone(),
        publish: Publish {
            records,
            bytes: records * msg,
            errors: col.series.iter().filter(|x| x.phase == "measure" || x.phase == "drain").map(|x| x.errors).sum(),
            records_per_s,
            bytes_per_s,
            latency_us: summarize(&col.total_publish),
            delay_us: summarize(&col.total_delay),
        },
        end_to_end: EndToEnd { records: e2e.count, records_per_s: consume_rps, latency_us: e2e },
        consume: Consume {
            records: col.measured_consumed,
            bytes: col.measured_consumed * msg,
            records_per_s: consume_rps,
            bytes_per_s: consume_rps * msg as f64,
        },
        efficiency,
        projection: Projection { events_per_day: records_per_s * 86_400.0, bytes_per_day: bytes_per_s * 86_400.0 },
        timeseries: col.series.clone(),
        spectrum: Spectra { publish: stats::spectrum(&col.total_publish), end_to_end: stats::spectrum(&col.total_e2e) },
        search,
        drain,
        hlog: None,
        provenance: Some(crate::env::provenance()),
        producer: Some(col.metrics.producer.summary(
            &crate::produce::ProducerSettings::of(w),
            crate::results::KeysInfo {
                distribution: w.key_distributor.name().into(),
                count: if w.key_distributor == crate::workload::KeyDistributor::NoKey { 0 } else { w.key_space },
                zipf_s: (w.key_distributor == crate::workload::KeyDistributor::Zipf).then_some(w.zipf_exponent),
            },
            col.metrics.sent.load(Ordering::Relaxed),
            col.metrics.acked.load(Ordering::Relaxed),
        )),
    }
}

fn hlog_name(json: &Path) -> String {
    json.with_extension("hlog").file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `results/<label or host>/<date>-<workload>.json` (+ `.hlog`); never overwrites (adds `-2`, `-3`…).
pub fn result_path(opts: &RunOptions, started_wall_us: u64) -> PathBuf {
    if let Some(p) = &opts.output {
        return p.clone();
    }
    let host = opts.label.clone().unwrap_or_else(|| crate::env::environment().hostname);
    let dir = opts.out_dir.join(crate::workload::sanitize(&host));
    let stem = format!("{}-{}", crate::env::date(started_wall_us), crate::workload::sanitize(&opts.workload.name));
    let mut p = dir.join(format!("{stem}.json"));
    let mut n = 2;
    while p.exists() {
        p = dir.join(format!("{stem}-{n}.json"));
        n += 1;
    }
    p
}

fn write_result(opts: &RunOptions, r: &RunResult, col: &Collector, started_wall_us: u64) -> Result<PathBuf, String> {
    let path = result_path(opts, started_wall_us);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let hlog = path.with_extension("hlog");
    stats::write_hlog(&hlog, started_wall_us, &col.hlog).map_err(|e| format!("cannot write {}: {e}", hlog.display()))?;
    let mut r = r.clone();
    r.hlog = Some(hlog_name(&path));
    let json = serde_json::to_string_pretty(&r).map_err(|e| format!("serialize result: {e}"))?;
    // Write then rename: a crash never leaves a half-written file under the final name.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The summary table printed at the end of a run.
pub fn summary_table(r: &RunResult) -> String {
    let mut s = String::new();
    let l = |x: &Latency| {
        format!(
            "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            fmt_us(x.p50),
            fmt_us(x.p90),
            fmt_us(x.p99),
            fmt_us(x.p999),
            fmt_us(x.p9999),
            fmt_us(x.max),
            fmt_us(x.mean)
        )
    };
    s.push_str(&format!(
        "workload {} ({} B, {} partitions, target {:.0} rec/s) on {} {} fsync={}{}\n",
        r.workload.name,
        r.workload.message_size,
        r.workload.topics * r.workload.partitions_per_topic,
        r.workload.target_rate,
        r.target.kind,
        r.target.bootstrap,
        r.target.fsync,
        if r.complete { "" } else { "  [INCOMPLETE]" }
    ));
    s.push_str(&format!(
        "measured {:.1} s: publish {:.0} rec/s ({:.1} MB/s), consume {:.0} rec/s, errors {}, {:.3e} events/day\n",
        r.duration_s,
        r.publish.records_per_s,
        r.publish.bytes_per_s / 1e6,
        r.consume.records_per_s,
        r.publish.errors,
        r.projection.events_per_day
    ));
    s.push_str(&format!(
        "{:<14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "latency", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"
    ));
    if let Some(p) = r.producer.as_ref().filter(|p| !p.acknowledged) {
        s.push_str(&format!(
            "acks=0: {} records written to the socket, none acknowledged: no publish throughput or latency exists\n",
            p.records_written_unacknowledged
        ));
    } else {
        s.push_str(&format!("{:<14} {}\n", "publish", l(&r.publish.latency_us)));
    }
    s.push_str(&format!("{:<14} {}\n", "send delay", l(&r.publish.delay_us)));
    s.push_str(&format!("{:<14} {}\n", "end-to-end", l(&r.end_to_end.latency_us)));
    if let Some(c) = r.producer.as_ref().map(|p| &p.compression).filter(|c| c.codec != "none") {
        s.push_str(&format!(
            "compression {}: ratio {:.2}, {:.0} ns/batch, {:.1} ns/record, {:.3} s on producer threads (apart from send)\n",
            c.codec,
            c.ratio,
            c.ns_per_batch,
            c.ns_per_record,
            c.cpu_ns_total as f64 / 1e9
        ));
    }
    if let Some(c) = &r.calibration {
        s.push_str(&format!(
            "calibration: disk {:.0} MB/s, fdatasync p50 {} p99 {}, loopback {:.0} MB/s, memcpy {:.0} MB/s\n",
            c.disk_seq_write_bytes_per_s / 1e6,
            fmt_us(c.fdatasync_us.p50),
            fmt_us(c.fdatasync_us.p99),
            c.loopback_bytes_per_s / 1e6,
            c.memcpy_bytes_per_s / 1e6
        ));
        let e = &r.efficiency;
        s.push_str(&format!(
            "efficiency: disk {:.4}  loopback {:.4}  memcpy {:.4}\n",
            e.disk_write_fraction.unwrap_or(0.0),
            e.loopback_fraction.unwrap_or(0.0),
            e.memcpy_fraction.unwrap_or(0.0)
        ));
    }
    if let Some(se) = &r.search {
        s.push_str(&format!("max rate within p99 {}: {:.0} rec/s ({} trials)\n", fmt_us(se.p99_bound_us), se.max_rate, se.trials.len()));
    }
    if let Some(d) = &r.drain {
        s.push_str(&format!(
            "backlog {} records drained in {:.1} s: {:.0} rec/s ({:.1} MB/s){}\n",
            d.backlog_records,
            d.drain_s,
            d.records_per_s,
            d.bytes_per_s / 1e6,
            if d.caught_up { "" } else { " (did not catch up)" }
        ));
    }
    s
}
