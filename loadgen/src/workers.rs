//! Distributed load generation: `loadgen worker --listen ADDR` on each load host, driven by one
//! `loadgen run --workers host:port,…` (the coordinator).
//!
//! Protocol (version [`PROTOCOL`]): frames of a 4-byte big-endian length and one JSON [`Msg`],
//! at most [`FRAME_MAX`] bytes, over one TCP connection per worker. Every read and write has a
//! timeout. The coordinator:
//! 1. sends `hello` [`PINGS`] times; each `welcome` carries the worker's wall clock, and the
//!    exchange with the smallest round trip estimates the worker's clock offset
//!    (offset = worker clock − midpoint of the round trip). An offset beyond
//!    `--max-clock-offset-ms` is refused (exit 2), a tenth of it warns;
//! 2. creates the topics (external cluster) once, then sends each worker `run`: the workload with
//!    the worker's share of the rate, its share of the partitions (`p % n == i`), the topic
//!    names (used as existing topics), and the common start instant converted to the worker's
//!    clock (coordinator now + `--start-lead-ms` + the offset);
//! 3. reads `alive` (every second), `tick` (each closed second of the worker's series) and
//!    finally `done` (the worker's result, exit code and its measured window's HdrHistograms,
//!    V2-deflate serialized and base64-encoded: merged losslessly here) or `error`. A worker
//!    silent for [`LIVENESS`], or whose connection ends before `done`, is lost: the run is
//!    incomplete (`complete: false`, `workers.incomplete_reason`, exit 1), never a smaller total.
//!
//! A worker serves one coordinator at a time, one run per connection; the coordinator's
//! connection closing mid-run aborts the worker's run. Security settings travel inside the
//! workload (`security` block): file paths and credential environment variables are resolved
//! on each worker's host (credentials never cross the control connection).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::results::*;
use crate::run::{Outcome, RunError, RunOptions, WindowHists};
use crate::stats::{new_hist, summarize, Hist};
use crate::workload::Workload;

/// Protocol version; both ends must speak the same.
pub const PROTOCOL: u32 = 1;
/// Largest frame either side accepts (a result with its histograms is far smaller).
pub const FRAME_MAX: usize = 16 << 20;
/// Clock-offset probes per worker.
pub const PINGS: usize = 5;
/// A worker silent this long is lost (it sends `alive` every second).
pub const LIVENESS: Duration = Duration::from_secs(10);
/// Bound on the coordinator's and worker's message queues.
const QUEUE: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    Hello { protocol: u32 },
    Welcome { protocol: u32, wall_us: u64, host: String, version: String },
    Run(Box<WorkerRun>),
    Alive,
    Tick { second: Second },
    Done(Box<WorkerDone>),
    Error { message: String, usage: bool },
    Abort { reason: String },
}

/// What a worker runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRun {
    /// The workload, `producerRate` already this worker's share.
    pub workload: Workload,
    pub bootstrap: Option<String>,
    pub sink: bool,
    /// Topics created by the coordinator (external cluster); empty for the sink.
    pub topics: Vec<String>,
    /// (i, n): partitions `p % n == i`.
    pub share: (u32, u32),
    /// Start of the schedule, µs since the epoch on the worker's clock.
    pub start_wall_us: u64,
}

/// A worker's answer at the end of its run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerDone {
    pub result: RunResult,
    pub exit_code: i32,
    pub publish: String,
    pub censored: String,
    pub delay: String,
    pub e2e: String,
    /// Transactional producer (whole run): commit latency and Produce-ack latency (absent:
    /// not transactional, or a worker of an older version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produce_ack: Option<String>,
}

/// Write one frame (length + JSON).
pub fn write_msg(s: &mut impl Write, m: &Msg) -> Result<(), String> {
    let b = serde_json::to_vec(m).map_err(|e| format!("encode: {e}"))?;
    if b.len() > FRAME_MAX {
        return Err(format!("message of {} bytes exceeds the {} byte frame bound", b.len(), FRAME_MAX));
    }
    s.write_all(&(b.len() as u32).to_be_bytes()).and_then(|_| s.write_all(&b)).and_then(|_| s.flush()).map_err(|e| format!("send: {e}"))
}

/// Read one frame; the stream's read timeout bounds the wait.
pub fn read_msg(s: &mut impl Read) -> Result<Msg, String> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "connection closed".to_string(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "no message within the timeout".to_string(),
        _ => format!("receive: {e}"),
    })?;
    let n = u32::from_be_bytes(len) as usize;
    if n > FRAME_MAX {
        return Err(format!("frame of {n} bytes exceeds the {FRAME_MAX} byte bound"));
    }
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).map_err(|e| format!("receive: {e}"))?;
    serde_json::from_slice(&b).map_err(|e| format!("bad message: {e}"))
}

fn wall_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// HdrHistogram → V2 deflate → base64 (lossless).
pub fn encode_hist(h: &Hist) -> Result<String, String> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut buf).map_err(|e| format!("serialize histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

pub fn decode_hist(s: &str) -> Result<Hist, String> {
    let b = base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("histogram base64: {e}"))?;
    let h: Hist = Deserializer::new().deserialize(&mut &b[..]).map_err(|e| format!("histogram: {e:?}"))?;
    let mut out = new_hist();
    out.add(&h).map_err(|e| format!("histogram range: {e:?}"))?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Worker

/// `loadgen worker --listen ADDR`: serve coordinators one after the other (forever, or `runs`
/// connections). Returns an exit code.
pub fn serve(listen: &str, runs: Option<u64>) -> i32 {
    let l = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return 2;
        }
    };
    let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.into());
    eprintln!("loadgen worker listening on {addr} (protocol {PROTOCOL})");
    println!("listening {addr}");
    let _ = std::io::stdout().flush();
    let mut served = 0u64;
    for c in l.incoming() {
        let c = match c {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let peer = c.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        match serve_one(c) {
            Ok(()) => eprintln!("coordinator {peer}: run finished"),
            Err(e) => eprintln!("coordinator {peer}: {e}"),
        }
        served += 1;
        if runs.is_some_and(|r| served >= r) {
            break;
        }
    }
    0
}

fn serve_one(mut c: TcpStream) -> Result<(), String> {
    let _ = c.set_nodelay(true);
    c.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    c.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    // Hello probes (bounded), then the run.
    let mut run = None;
    for _ in 0..(PINGS * 4) {
        match read_msg(&mut c)? {
            Msg::Hello { protocol } => {
                if protocol != PROTOCOL {
                    let m = format!("worker speaks protocol {PROTOCOL}, coordinator {protocol}");
                    let _ = write_msg(&mut c, &Msg::Error { message: m.clone(), usage: true });
                    return Err(m);
                }
                write_msg(&mut c, &Msg::Welcome { protocol: PROTOCOL, wall_us: wall_us(), host: host_name(), version: env!("CARGO_PKG_VERSION").into() })?;
            }
            Msg::Run(r) => {
                run = Some(*r);
                break;
            }
            other => return Err(format!("unexpected message before the run: {other:?}")),
        }
    }
    let Some(r) = run else { return Err("no run after the hello probes".into()) };
    let abort = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam::channel::bounded::<Second>(QUEUE);
    let mut opts = RunOptions::new(r.workload);
    opts.bootstrap = r.bootstrap;
    opts.sink = r.sink;
    opts.calibrate = Some(false);
    opts.write = false;
    opts.quiet = true;
    opts.topics.topic = r.topics;
    opts.share = Some(r.share);
    opts.start_wall_us = Some(r.start_wall_us);
    opts.ticks = Some(tx);
    opts.abort = Some(abort.clone());
    eprintln!(
        "run {} share {}/{} at {:.0} rec/s, starts in {:.2} s",
        opts.workload.name,
        r.share.0,
        r.share.1,
        opts.workload.producer_rate,
        (r.start_wall_us as f64 - wall_us() as f64) / 1e6
    );
    // The coordinator's connection ending (or an abort) stops the run.
    let mut rd = c.try_clone().map_err(|e| e.to_string())?;
    let _ = rd.set_read_timeout(None);
    let ab = abort.clone();
    let reader = std::thread::Builder::new()
        .name("coordinator-reader".into())
        .spawn(move || {
            let why = match read_msg(&mut rd) {
                Ok(Msg::Abort { reason }) => format!("aborted by the coordinator: {reason}"),
                Ok(m) => format!("unexpected message during the run: {m:?}"),
                Err(e) => e,
            };
            if !ab.swap(true, Ordering::SeqCst) {
                eprintln!("stopping: coordinator {why}");
            }
        })
        .map_err(|e| e.to_string())?;
    drop(reader); // detached: ends with the connection
    let handle = std::thread::Builder::new()
        .name("worker-run".into())
        .spawn(move || crate::run::run(&opts))
        .map_err(|e| e.to_string())?;
    let mut last_alive = Instant::now();
    let mut send_err = None;
    while !handle.is_finished() {
        if let Ok(s) = rx.recv_timeout(Duration::from_millis(200)) {
            if send_err.is_none() {
                if let Err(e) = write_msg(&mut c, &Msg::Tick { second: s }) {
                    send_err = Some(e);
                    abort.store(true, Ordering::SeqCst);
                }
            }
        }
        if last_alive.elapsed() >= Duration::from_secs(1) && send_err.is_none() {
            last_alive = Instant::now();
            if let Err(e) = write_msg(&mut c, &Msg::Alive) {
                send_err = Some(e);
                abort.store(true, Ordering::SeqCst);
            }
        }
    }
    let out = handle.join().map_err(|_| "the run thread panicked".to_string())?;
    if let Some(e) = send_err {
        return Err(format!("lost the coordinator: {e}"));
    }
    while let Ok(s) = rx.try_recv() {
        write_msg(&mut c, &Msg::Tick { second: s })?;
    }
    let msg = match out {
        Ok(o) => match done_msg(o) {
            Ok(m) => m,
            Err(e) => Msg::Error { message: e, usage: false },
        },
        Err(RunError::Usage(e)) => Msg::Error { message: e, usage: true },
        Err(RunError::Failed(e)) => Msg::Error { message: e, usage: false },
    };
    write_msg(&mut c, &msg)?;
    let _ = c.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn done_msg(o: Outcome) -> Result<Msg, String> {
    let h = o.hists.ok_or("the run has no measured window")?;
    Ok(Msg::Done(Box::new(WorkerDone {
        result: o.result,
        exit_code: o.exit_code,
        publish: encode_hist(&h.publish)?,
        censored: encode_hist(&h.censored)?,
        delay: encode_hist(&h.delay)?,
        e2e: encode_hist(&h.e2e)?,
        commit: h.commit.as_ref().map(encode_hist).transpose()?,
        produce_ack: h.produce_ack.as_ref().map(encode_hist).transpose()?,
    })))
}

// ---------------------------------------------------------------------------------------------
// Coordinator

/// Coordinator settings (`loadgen run --workers …`).
#[derive(Debug, Clone)]
pub struct Coordination {
    pub workers: Vec<String>,
    /// Time between the start message and the common start instant.
    pub start_lead_ms: u64,
    /// Clock offsets beyond this are refused (a tenth of it warns).
    pub max_clock_offset_ms: f64,
}

struct Peer {
    addr: String,
    host: String,
    conn: TcpStream,
    offset_us: i64,
    rtt_us: u64,
}

enum Event {
    Msg(usize, Msg),
    Lost(usize, String),
}

/// Refusals of what a distributed run cannot do (bad input, exit 2).
pub fn check(opts: &RunOptions, n: usize) -> Result<(), String> {
    let w = &opts.workload;
    if n == 0 {
        return Err("--workers is empty".into());
    }
    if w.producer_rate <= 0.0 {
        return Err("the max-rate search (producerRate 0) is not distributed: give a rate (--rate) with --workers, or search on one host".into());
    }
    if w.consumer_backlog_size_gb > 0.0 {
        return Err("backlog workloads (consumerBacklogSizeGB) are not distributed".into());
    }
    if w.consumer_mode == crate::workload::ConsumerMode::Group && w.consumer_per_subscription > 0 {
        return Err("consumer groups are not distributed (each worker consumes its own partitions): use consumerMode fetch with --workers".into());
    }
    if opts.bootstrap.is_none() && !opts.sink {
        return Err("--workers needs a target every worker reaches: --bootstrap host:port (e.g. `broker --listen <address>`) or --sink".into());
    }
    if !opts.topics.topic.is_empty() && opts.topics.topic.len() != w.topics as usize {
        return Err(format!("--topic names {} topics, the workload has {}", opts.topics.topic.len(), w.topics));
    }
    if (w.partitions_per_topic as usize) < n {
        return Err(format!("{} partitions per topic cannot be split over {n} workers (each needs at least one)", w.partitions_per_topic));
    }
    Ok(())
}

fn connect(addr: &str) -> Result<TcpStream, String> {
    let a: Vec<SocketAddr> = addr.to_socket_addrs().map_err(|e| format!("worker {addr}: {e}"))?.collect();
    let mut last = format!("worker {addr}: no address");
    for sa in a {
        match TcpStream::connect_timeout(&sa, Duration::from_secs(5)) {
            Ok(c) => return Ok(c),
            Err(e) => last = format!("worker {addr}: {e}"),
        }
    }
    Err(last)
}

/// Connect and estimate the worker's clock offset (the probe with the smallest round trip).
fn greet(addr: &str) -> Result<Peer, String> {
    let mut c = connect(addr)?;
    let _ = c.set_nodelay(true);
    c.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    c.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut best: Option<(u64, i64)> = None;
    let mut host = String::new();
    for _ in 0..PINGS {
        let t0 = wall_us();
        write_msg(&mut c, &Msg::Hello { protocol: PROTOCOL }).map_err(|e| format!("worker {addr}: {e}"))?;
        match read_msg(&mut c).map_err(|e| format!("worker {addr}: {e}"))? {
            Msg::Welcome { wall_us: tw, host: h, .. } => {
                let t1 = wall_us();
                let rtt = t1.saturating_sub(t0);
                let offset = tw as i64 - (t0 as i64 + t1 as i64) / 2;
                if best.is_none_or(|(r, _)| rtt < r) {
                    best = Some((rtt, offset));
                }
                host = h;
            }
            Msg::Error { message, .. } => return Err(format!("worker {addr}: {message}")),
            m => return Err(format!("worker {addr}: unexpected answer {m:?}")),
        }
    }
    let (rtt_us, offset_us) = best.ok_or_else(|| format!("worker {addr}: no answer"))?;
    Ok(Peer { addr: addr.to_string(), host, conn: c, offset_us, rtt_us })
}

/// The topics the workers produce to: created once here on an external cluster (and deleted at
/// the end unless kept), the workload's names for the sink.
/// Topic names, their cleanup, and the cluster's identity.
type Prepared = (Vec<String>, Option<crate::external::TopicCleanup>, Option<TargetIdentity>);

fn prepare(opts: &RunOptions) -> Result<Prepared, RunError> {
    let w = &opts.workload;
    let Some(b) = &opts.bootstrap else { return Ok((w.topic_names(), None, None)) };
    let connector = crate::client::Connector::new(crate::security::Security::resolve(&w.security).map_err(RunError::Usage)?);
    let addrs: Vec<SocketAddr> = b.split(',').map(|a| crate::client::resolve(a.trim())).collect::<Result<_, _>>().map_err(RunError::Usage)?;
    let mut boot = None;
    let mut last = "--bootstrap is empty".to_string();
    for a in &addrs {
        match connector.connect(*a, Duration::from_secs(3)) {
            Ok(c) => {
                boot = Some(c);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut boot = boot.ok_or(RunError::Usage(last))?;
    let identity = crate::external::identify(&mut boot).map_err(RunError::Usage)?;
    let plan = crate::external::plan(&opts.topics, &w.name, w.topics, &crate::external::run_id()).map_err(RunError::Usage)?;
    let cleanup = plan.delete.then(|| crate::external::TopicCleanup::new(connector.clone(), boot.addr, plan.names.clone(), opts.quiet));
    crate::client::prepare_topics(&mut boot, &plan.names, w.partitions_per_topic, plan.create_with_rf, Duration::from_secs(15))
        .map_err(RunError::Usage)?;
    Ok((plan.names, cleanup, Some(identity)))
}

/// Partitions of one topic that worker `i` of `n` gets.
fn share_count(partitions: u32, i: u32, n: u32) -> u32 {
    (0..partitions).filter(|p| p % n == i).count() as u32
}

/// `loadgen run --workers …`: drive the workers, merge their results. The outcome has the form
/// of a single-host run's (plus the `workers` block).
pub fn coordinate(opts: &RunOptions, co: &Coordination) -> Result<Outcome, RunError> {
    let w = &opts.workload;
    w.validate().map_err(RunError::Usage)?;
    check(opts, co.workers.len()).map_err(RunError::Usage)?;
    crate::run::install_ctrlc();
    let n = co.workers.len() as u32;
    // Greet every worker; refuse clocks too far apart.
    let mut peers = Vec::new();
    for a in &co.workers {
        let p = greet(a).map_err(RunError::Usage)?;
        let off_ms = p.offset_us as f64 / 1e3;
        if off_ms.abs() > co.max_clock_offset_ms {
            return Err(RunError::Usage(format!(
                "worker {a} ({}): clock offset {off_ms:+.1} ms (round trip {:.2} ms) exceeds --max-clock-offset-ms {}: synchronize the hosts' clocks (NTP/PTP)",
                p.host,
                p.rtt_us as f64 / 1e3,
                co.max_clock_offset_ms
            )));
        }
        if off_ms.abs() > co.max_clock_offset_ms / 10.0 && !opts.quiet {
            eprintln!("warning: worker {a} clock offset {off_ms:+.1} ms (the common start and end-to-end latencies are that far apart)");
        }
        peers.push(p);
    }
    let (topics, cleanup, identity) = prepare(opts)?;
    let started_wall_us = wall_us();
    let start = started_wall_us + co.start_lead_ms * 1000;
    let total_rate = w.producer_rate;
    let mut rates = Vec::new();
    for (i, p) in peers.iter_mut().enumerate() {
        let mut wl = w.clone();
        let mine = share_count(w.partitions_per_topic, i as u32, n);
        wl.producer_rate = total_rate * mine as f64 / w.partitions_per_topic as f64;
        rates.push(wl.producer_rate);
        let run = WorkerRun {
            workload: wl,
            bootstrap: opts.bootstrap.clone(),
            sink: opts.sink,
            topics: if opts.sink { Vec::new() } else { topics.clone() },
            share: (i as u32, n),
            start_wall_us: (start as i64 + p.offset_us).max(0) as u64,
        };
        write_msg(&mut p.conn, &Msg::Run(Box::new(run))).map_err(|e| RunError::Usage(format!("worker {}: {e}", p.addr)))?;
    }
    if !opts.quiet {
        eprintln!(
            "{} workers, {:.0} rec/s split by partitions ({}); common start in {} ms",
            n,
            total_rate,
            rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" + "),
            co.start_lead_ms
        );
    }
    // One reader per worker; liveness = a message at least every LIVENESS.
    let (tx, rx) = crossbeam::channel::bounded::<Event>(QUEUE);
    for (i, p) in peers.iter().enumerate() {
        let mut c = p.conn.try_clone().map_err(|e| RunError::Failed(e.to_string()))?;
        let _ = c.set_read_timeout(Some(LIVENESS));
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || loop {
                match read_msg(&mut c) {
                    Ok(m) => {
                        let end = matches!(m, Msg::Done(_) | Msg::Error { .. });
                        if tx.send(Event::Msg(i, m)).is_err() || end {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Event::Lost(i, e));
                        return;
                    }
                }
            })
            .map_err(|e| RunError::Failed(e.to_string()))?;
    }
    drop(tx);
    let expected_s = co.start_lead_ms as f64 / 1e3 + w.warmup_s() + w.duration_s() + w.drain_seconds + 60.0;
    let deadline = Instant::now() + Duration::from_secs_f64(expected_s);
    let mut series: Vec<Vec<Second>> = vec![Vec::new(); peers.len()];
    let mut outcome: Vec<Option<Result<WorkerDone, (String, bool)>>> = vec![None; peers.len()];
    let mut printed = 0usize;
    let mut interrupted = false;
    while outcome.iter().any(|o| o.is_none()) {
        if crate::run::INTERRUPTED.load(Ordering::Relaxed) && !interrupted {
            interrupted = true;
            for p in peers.iter_mut() {
                let _ = write_msg(&mut p.conn, &Msg::Abort { reason: "interrupted (Ctrl-C)".into() });
            }
        }
        let ev = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(ev) => ev,
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    for o in outcome.iter_mut().filter(|o| o.is_none()) {
                        *o = Some(Err((format!("no result within {expected_s:.0} s"), false)));
                    }
                }
                continue;
            }
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
        };
        match ev {
            Event::Msg(i, Msg::Tick { second }) => {
                series[i].push(second);
                // Live line: a second once every worker still running has delivered it.
                let ready = (0..peers.len()).filter(|j| outcome[*j].is_none()).map(|j| series[j].len()).min().unwrap_or(0);
                while printed < ready {
                    if !opts.quiet {
                        let secs: Vec<&Second> = series.iter().filter_map(|s| s.get(printed)).collect();
                        let s = sum_seconds(&secs);
                        eprintln!(
                            "[{:>6.1}s {:<7}] publish {:>10.0} rec/s  p99 ≤ {:>9.0} µs  consume {:>10.0} rec/s  errors {:>4}  ({} workers)",
                            s.t_s,
                            s.phase,
                            s.publish_records_per_s,
                            s.publish_p99_us,
                            s.consume_records_per_s,
                            s.errors,
                            secs.len()
                        );
                    }
                    printed += 1;
                }
            }
            Event::Msg(_, Msg::Alive) => {}
            Event::Msg(i, Msg::Done(d)) => outcome[i] = Some(Ok(*d)),
            Event::Msg(i, Msg::Error { message, usage }) => outcome[i] = Some(Err((message, usage))),
            Event::Msg(i, m) => outcome[i] = Some(Err((format!("unexpected message {m:?}"), false))),
            Event::Lost(i, e) => {
                if outcome[i].is_none() {
                    outcome[i] = Some(Err((format!("connection lost before its result ({e})"), false)));
                }
            }
        }
    }
    drop(cleanup);
    // Every worker refused the run as bad input before measuring: bad input.
    let outs: Vec<Result<WorkerDone, (String, bool)>> =
        outcome.into_iter().map(|o| o.unwrap_or_else(|| Err(("no result".into(), false)))).collect();
    if outs.iter().all(|o| matches!(o, Err((_, true)))) {
        let (a, e) = peers.iter().zip(&outs).find_map(|(p, o)| o.as_ref().err().map(|e| (p.addr.clone(), e.0.clone()))).unwrap_or_default();
        return Err(RunError::Usage(format!("worker {a}: {e}")));
    }
    let mut parts = Vec::new();
    let mut infos = Vec::new();
    let mut reasons = Vec::new();
    for (i, (p, o)) in peers.iter().zip(outs).enumerate() {
        let mut info = WorkerInfo {
            address: p.addr.clone(),
            host: p.host.clone(),
            share: vec![i as u32, n],
            partitions_per_topic: share_count(w.partitions_per_topic, i as u32, n),
            target_rate: rates[i],
            clock_offset_ms: p.offset_us as f64 / 1e3,
            rtt_ms: p.rtt_us as f64 / 1e3,
            status: "done".into(),
            error: None,
            exit_code: None,
            complete: false,
            target_met: false,
            records_per_s: 0.0,
            records_in_time_per_s: 0.0,
            publish_p99_us: 0.0,
            delay_p99_us: 0.0,
            accounting: None,
            generator: None,
        };
        match o {
            Ok(d) => {
                let h = WindowHists {
                    publish: decode_hist(&d.publish)?,
                    censored: decode_hist(&d.censored)?,
                    delay: decode_hist(&d.delay)?,
                    e2e: decode_hist(&d.e2e)?,
                    commit: d.commit.as_deref().map(decode_hist).transpose()?,
                    produce_ack: d.produce_ack.as_deref().map(decode_hist).transpose()?,
                };
                let r = &d.result;
                info.exit_code = Some(d.exit_code);
                info.complete = r.complete;
                info.target_met = r.target_met;
                info.records_per_s = r.publish.records_per_s;
                info.records_in_time_per_s = r.publish.records_in_time_per_s.unwrap_or(0.0);
                info.publish_p99_us = r.publish.latency_us.p99;
                info.delay_p99_us = r.publish.delay_us.p99;
                info.accounting = r.accounting.as_ref().map(|a| a.measure.clone());
                info.generator = r.generator.clone();
                if d.exit_code == 1 || d.exit_code == 130 {
                    info.status = "failed".into();
                    reasons.push(format!("worker {} ({}) failed part-way (exit {})", p.addr, p.host, d.exit_code));
                }
                parts.push((i, d.result, h));
            }
            Err((e, _)) => {
                info.status = if e.starts_with("connection lost") || e.starts_with("no result") { "lost" } else { "failed" }.into();
                reasons.push(format!("worker {} ({}) {}: {e}; its records are not in the totals", p.addr, p.host, info.status));
                info.error = Some(e);
            }
        }
        infos.push(info);
    }
    if parts.is_empty() {
        return Err(RunError::Failed(format!("no worker delivered a result: {}", reasons.join("; "))));
    }
    if interrupted {
        reasons.push("interrupted (Ctrl-C)".into());
    }
    let mut result = merge(w, total_rate, started_wall_us, &parts, &series, identity)?;
    let incomplete_reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    if incomplete_reason.is_some() {
        result.complete = false;
    }
    result.workers = Some(WorkersInfo {
        count: n,
        start_lead_ms: co.start_lead_ms,
        max_clock_offset_ms: co.max_clock_offset_ms,
        incomplete_reason: incomplete_reason.clone(),
        workers: infos,
    });
    let exit_code = if interrupted {
        130
    } else if incomplete_reason.is_some() {
        1
    } else if !result.complete {
        crate::run::EXIT_RECORDS_LOST
    } else if !result.target_met {
        crate::run::EXIT_TARGET_MISSED
    } else {
        0
    };
    if let Some(r) = &incomplete_reason {
        eprintln!("error: run incomplete: {r}");
    }
    let path = if opts.write {
        let p = opts.output.clone().unwrap_or_else(|| crate::run::result_path(opts, started_wall_us));
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| RunError::Usage(format!("cannot create {}: {e}", d.display())))?;
        }
        let tmp = p.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&result).map_err(|e| RunError::Failed(e.to_string()))?;
        std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &p)).map_err(|e| RunError::Usage(format!("cannot write {}: {e}", p.display())))?;
        Some(p)
    } else {
        None
    };
    let mut all = WindowHists { publish: new_hist(), censored: new_hist(), delay: new_hist(), e2e: new_hist(), commit: None, produce_ack: None };
    for (_, _, h) in &parts {
        add_hists(&mut all, h);
    }
    Ok(Outcome { result, path, exit_code, producer_cpu_s: 0.0, hists: Some(all) })
}

fn add(a: &mut Hist, b: &Hist) {
    // Same bounds on both sides (new_hist), so nothing is out of range.
    let _ = a.add(b);
}

fn add_opt(a: &mut Option<Hist>, b: &Option<Hist>) {
    if let Some(b) = b {
        add(a.get_or_insert_with(new_hist), b);
    }
}

/// Every histogram of `b` merged into `a` (lossless).
fn add_hists(a: &mut WindowHists, b: &WindowHists) {
    add(&mut a.publish, &b.publish);
    add(&mut a.censored, &b.censored);
    add(&mut a.delay, &b.delay);
    add(&mut a.e2e, &b.e2e);
    add_opt(&mut a.commit, &b.commit);
    add_opt(&mut a.produce_ack, &b.produce_ack);
}

/// One second of the merged series: rates, errors, backlog and lag summed; p99 the largest of
/// the workers' (an upper bound: per-second histograms are not sent, the totals are exact).
fn sum_seconds(secs: &[&Second]) -> Second {
    let mut s = secs.first().map(|s| (*s).clone()).unwrap_or(Second {
        t_s: 0.0,
        phase: String::new(),
        publish_records_per_s: 0.0,
        consume_records_per_s: 0.0,
        publish_p99_us: 0.0,
        e2e_p99_us: 0.0,
        errors: 0,
        backlog: 0,
        consumer_lag: None,
        committed_lag: None,
    });
    for o in secs.iter().skip(1) {
        s.publish_records_per_s += o.publish_records_per_s;
        s.consume_records_per_s += o.consume_records_per_s;
        s.publish_p99_us = s.publish_p99_us.max(o.publish_p99_us);
        s.e2e_p99_us = s.e2e_p99_us.max(o.e2e_p99_us);
        s.errors += o.errors;
        s.backlog += o.backlog;
        s.consumer_lag = match (s.consumer_lag, o.consumer_lag) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        s.committed_lag = match (s.committed_lag, o.committed_lag) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
    s
}

fn sum_acct(a: &mut PhaseAccounting, b: &PhaseAccounting) {
    a.scheduled += b.scheduled;
    a.sent += b.sent;
    a.acknowledged += b.acknowledged;
    a.acknowledged_in_time += b.acknowledged_in_time;
    a.failed += b.failed;
    for (k, v) in &b.failed_by_code {
        *a.failed_by_code.entry(k.clone()).or_default() += v;
    }
    a.timed_out += b.timed_out;
    a.not_sent += b.not_sent;
    a.written_unacknowledged += b.written_unacknowledged;
}

/// The workers' results as one of the same form: counts summed, histograms merged, the
/// per-second series summed by second, generator threads listed together.
fn merge(
    w: &Workload,
    total_rate: f64,
    started_wall_us: u64,
    parts: &[(usize, RunResult, WindowHists)],
    series: &[Vec<Second>],
    identity: Option<TargetIdentity>,
) -> Result<RunResult, RunError> {
    let mut r = parts[0].1.clone();
    let mut h = WindowHists { publish: new_hist(), censored: new_hist(), delay: new_hist(), e2e: new_hist(), commit: None, produce_ack: None };
    let mut acct = Accounting::default();
    let (mut in_time, mut in_window, mut incl_drain, mut consume_rps, mut e2e_rps) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut gen = GeneratorInfo::default();
    let mut duration_s: f64 = 0.0;
    r.complete = true;
    for (i, p, ph) in parts {
        add_hists(&mut h, ph);
        if let Some(a) = &p.accounting {
            acct.ack_grace_s = a.ack_grace_s;
            sum_acct(&mut acct.warmup, &a.warmup);
            sum_acct(&mut acct.measure, &a.measure);
        }
        r.complete &= p.complete;
        duration_s = duration_s.max(p.duration_s);
        in_time += p.publish.records_in_time_per_s.unwrap_or(0.0);
        in_window += p.publish.acks_in_window_per_s.unwrap_or(0.0);
        incl_drain += p.publish.records_per_s_incl_drain.unwrap_or(0.0);
        consume_rps += p.consume.records_per_s;
        e2e_rps += p.end_to_end.records_per_s;
        if let Some(g) = &p.generator {
            gen.limited |= g.limited;
            gen.reasons.extend(g.reasons.iter().map(|x| format!("worker {i}: {x}")));
            gen.producers.extend(g.producers.iter().cloned());
        }
        if *i != parts[0].0 {
            r.workload.producers += p.workload.producers;
            r.workload.consumers += p.workload.consumers;
            r.publish.records += p.publish.records;
            r.publish.bytes += p.publish.bytes;
            r.publish.errors += p.publish.errors;
            r.consume.records += p.consume.records;
            r.consume.bytes += p.consume.bytes;
            if let (Some(a), Some(b)) = (&mut r.producer, &p.producer) {
                a.records_written_unacknowledged += b.records_written_unacknowledged;
                a.records_sent_total += b.records_sent_total;
                a.records_acknowledged_total += b.records_acknowledged_total;
                a.retried_batches += b.retried_batches;
                a.duplicate_batches += b.duplicate_batches;
                a.connections_lost += b.connections_lost;
                a.metadata_refreshes += b.metadata_refreshes;
                a.leader_changes += b.leader_changes;
                if let (Some(x), Some(y)) = (&mut a.transactions, &b.transactions) {
                    // Counts add up; the latencies are set from the merged histograms below.
                    x.committed += y.committed;
                    x.aborted += y.aborted;
                }
                let (c, d) = (&mut a.compression, &b.compression);
                c.batches += d.batches;
                c.records += d.records;
                c.uncompressed_bytes += d.uncompressed_bytes;
                c.compressed_bytes += d.compressed_bytes;
                c.cpu_ns_total += d.cpu_ns_total;
            }
            if let (Some(a), Some(b)) = (&mut r.consumer, &p.consumer) {
                a.records_consumed_total += b.records_consumed_total;
                a.duplicates += b.duplicates;
                a.lag.max += b.lag.max;
                a.lag.final_ += b.lag.final_;
            }
        }
    }
    if let Some(c) = r.producer.as_mut().map(|p| &mut p.compression) {
        c.ns_per_batch = if c.batches > 0 { c.cpu_ns_total as f64 / c.batches as f64 } else { 0.0 };
        c.ns_per_record = if c.records > 0 { c.cpu_ns_total as f64 / c.records as f64 } else { 0.0 };
        c.ratio = if c.compressed_bytes > 0 { c.uncompressed_bytes as f64 / c.compressed_bytes as f64 } else { 1.0 };
    }
    if let Some(t) = r.producer.as_mut().and_then(|p| p.transactions.as_mut()) {
        // Merged from every worker's histograms (lossless); none recorded: the empty summary,
        // as a single run reports it.
        t.commit_latency_us = h.commit.as_ref().map(summarize).unwrap_or_default();
        t.produce_ack_latency_us = h.produce_ack.as_ref().map(summarize).unwrap_or_default();
    }
    acct.measure.unacknowledged_latency_us = summarize(&h.censored);
    r.started_at = crate::env::rfc3339(started_wall_us);
    r.duration_s = duration_s;
    r.target_met = in_time >= crate::run::TARGET_FRACTION * total_rate;
    r.accounting = Some(acct);
    r.workload.producer_rate = total_rate;
    r.workload.target_rate = total_rate;
    let msg = w.message_size as f64;
    let rps = if r.target_met { in_time } else { in_window };
    r.publish.records_per_s = rps;
    r.publish.bytes_per_s = rps * msg;
    r.publish.records_in_time_per_s = Some(in_time);
    r.publish.acks_in_window_per_s = Some(in_window);
    r.publish.records_per_s_incl_drain = Some(incl_drain);
    r.publish.latency_us = summarize(&h.publish);
    r.publish.delay_us = summarize(&h.delay);
    let e2e = summarize(&h.e2e);
    r.end_to_end = EndToEnd { records: e2e.count, records_per_s: e2e_rps, latency_us: e2e };
    r.consume.records_per_s = consume_rps;
    r.consume.bytes_per_s = consume_rps * msg;
    r.efficiency = Efficiency::default();
    r.calibration = None;
    r.projection = Projection { events_per_day: rps * 86_400.0, bytes_per_day: rps * msg * 86_400.0 };
    r.spectrum = Spectra { publish: crate::stats::spectrum(&h.publish), end_to_end: crate::stats::spectrum(&h.e2e) };
    let longest = series.iter().map(|s| s.len()).max().unwrap_or(0);
    r.timeseries = (0..longest).map(|k| sum_seconds(&series.iter().filter_map(|s| s.get(k)).collect::<Vec<_>>())).collect();
    r.generator = Some(gen);
    r.hlog = None;
    if identity.is_some() {
        r.target.identity = identity;
    }
    Ok(r)
}

impl From<String> for RunError {
    fn from(e: String) -> RunError {
        RunError::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_round_trip_losslessly() {
        let mut h = new_hist();
        for v in [1u64, 7, 250, 2_048, 99_999, 3_600_000_000] {
            h.record(v).unwrap();
        }
        let back = decode_hist(&encode_hist(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn frames_round_trip_and_oversized_frames_are_refused() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &Msg::Abort { reason: "x".into() }).unwrap();
        match read_msg(&mut &buf[..]).unwrap() {
            Msg::Abort { reason } => assert_eq!(reason, "x"),
            m => panic!("{m:?}"),
        }
        let mut big = ((FRAME_MAX + 1) as u32).to_be_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(read_msg(&mut &big[..]).unwrap_err().contains("exceeds"));
        assert_eq!(read_msg(&mut &b"\0\0"[..]).unwrap_err(), "connection closed");
    }

    #[test]
    fn partitions_split_covers_every_partition_once() {
        for parts in 1..20 {
            for n in 1..=parts.min(5) {
                let total: u32 = (0..n).map(|i| share_count(parts, i, n)).sum();
                assert_eq!(total, parts);
                assert!((0..n).all(|i| share_count(parts, i, n) >= 1));
            }
        }
    }
}
