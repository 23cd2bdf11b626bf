//! `loadgen selftest`: measures the generator itself, as ratios in one run, so the broker and
//! not the tool is what a benchmark measures:
//! 1. peak generation rate against the discarding sink (100 B records, all cores),
//! 2. CPU cost of latency recording at a fixed open-loop rate (recording on vs off, producer
//!    thread CPU time from /proc/thread-self/schedstat),
//! 3. (optional) what the embedded broker absorbs, for the headroom ratio.

use serde::Serialize;

use crate::run::{RunError, RunOptions};
use crate::workload::Workload;

#[derive(Debug, Clone, clap::Args)]
pub struct SelftestArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Open-loop rate for the recording-overhead measurement (records/s).
    #[arg(long, default_value_t = 5e6)]
    pub cpu_rate: f64,
    /// Generator threads for the peak-rate measurement (default: all cores).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Skip the embedded-broker comparison.
    #[arg(long)]
    pub no_broker: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SelftestReport {
    pub message_size: u32,
    pub generator_threads: u32,
    /// Records/s the generator produced into the discarding sink (encoded, CRC'd, recorded).
    pub sink_records_per_s: f64,
    pub sink_bytes_per_s: f64,
    pub cpu_rate: f64,
    /// Producer-thread CPU ns per record with latency recording off / on.
    pub cpu_ns_per_record_off: f64,
    pub cpu_ns_per_record_on: f64,
    /// A/B: (on − off) / off, relative to the generator's own per-record cost. At 5 M rec/s this
    /// difference is within the run-to-run noise of a shared 2-core machine, so it can come out
    /// negative; [`SelftestReport::recording_fraction`] is the stable figure.
    pub recording_overhead_fraction: f64,
    /// Isolated cost of recording one record's latencies (delay + publish), ns, measured over
    /// 20 M records with the same recorder and realistic values.
    pub recording_ns_per_record: f64,
    /// recording_ns_per_record / cpu_ns_per_record_off.
    pub recording_fraction: f64,
    /// (on − off) × cpu_rate: the CPU recording adds, as a fraction of one core.
    pub recording_added_core_fraction: f64,
    /// Achieved rate of the recording-on runs (the schedule must hold for the figure to count).
    pub cpu_run_records_per_s: f64,
    /// Records/s the embedded broker acknowledged when offered more than it can take.
    pub broker_records_per_s: Option<f64>,
    /// sink / broker.
    pub headroom_ratio: Option<f64>,
    pub broker_error: Option<String>,
    /// /proc/loadavg (1, 5, 15 min) at the start and end: other work on a shared machine makes
    /// every figure here lower or noisier; read them with this in mind.
    pub loadavg_start: String,
    pub loadavg_end: String,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn sink_workload(rate: f64, producers: u32, duration: f64) -> Workload {
    let mut w = Workload::smoke();
    w.name = "selftest".into();
    w.partitions_per_topic = 8;
    w.producers_per_topic = producers;
    w.producer_rate = rate;
    w.duration_seconds = Some(duration);
    w.warmup_seconds = Some(0.5);
    w.drain_seconds = 1.0;
    w.batch_size = 256 * 1024;
    w.linger_ms = 1.0;
    w
}

fn sink_opts(w: Workload) -> RunOptions {
    let mut o = RunOptions::new(w);
    o.sink = true;
    o.write = false;
    o.quiet = true;
    o.calibrate = Some(false);
    o
}

/// ns per record to record both of a record's latencies (send delay and publish latency) the way
/// the generator does: delays of a few µs, publish latencies of a few hundred µs.
pub fn recording_microbench(n: u64) -> f64 {
    use crate::stats::LocalRecorder;
    // Realistic values, precomputed so the loop measures recording, not value generation.
    let delays: Vec<u64> = (0..4096u64).map(|i| 3_000 + (i * 37 % 64) * 50).collect();
    let publishes: Vec<u64> = (0..4096u64).map(|i| 250_000 + (i * 7919 % 1000) * 300).collect();
    let mut delay = LocalRecorder::new();
    let mut publish = LocalRecorder::new();
    let pass = |record: bool, delay: &mut LocalRecorder, publish: &mut LocalRecorder| {
        let t = std::time::Instant::now();
        let mut acc = 0u64;
        for i in 0..n as usize {
            let d = std::hint::black_box(delays[i & 4095]);
            let p = std::hint::black_box(publishes[i & 4095]);
            if record {
                delay.record_ns(d);
                publish.record_ns(p);
            } else {
                acc = acc.wrapping_add(d ^ p);
            }
        }
        std::hint::black_box(acc);
        t.elapsed().as_nanos() as f64
    };
    let mut base = f64::INFINITY;
    let mut with = f64::INFINITY;
    for _ in 0..3 {
        base = base.min(pass(false, &mut delay, &mut publish));
        with = with.min(pass(true, &mut delay, &mut publish));
    }
    let mut sink = crate::stats::new_hist();
    delay.drain_into(&mut sink);
    publish.drain_into(&mut sink);
    assert_eq!(sink.len(), 6 * n, "every value recorded");
    ((with - base) / n as f64).max(0.0)
}

/// Run the three measurements. Errors are one line.
pub fn measure(a: &SelftestArgs) -> Result<SelftestReport, String> {
    let loadavg_start = loadavg();
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1));
    let err = |e: RunError| match e {
        RunError::Usage(m) | RunError::Failed(m) => m,
    };
    // 1. Peak: offer far more than can be generated; achieved = generator capacity.
    // No warmup: at 1e9 rec/s a warmup's records alone are more than any generator makes, so
    // the measured window's records would never be generated (the figure read 0).
    let mut pw = sink_workload(1e9, threads, a.duration);
    pw.warmup_seconds = Some(0.0);
    let peak = crate::run::run(&sink_opts(pw)).map_err(err)?;
    let sink_rps = peak.result.publish.records_per_s;
    // 2. Recording overhead at a fixed rate, single generator thread; alternate off/on twice
    //    and keep each side's minimum (noise on a shared machine only adds CPU time).
    let mut off = f64::INFINITY;
    let mut on = f64::INFINITY;
    let mut achieved: f64 = 0.0;
    for round in 0..6 {
        let record = round % 2 == 1;
        let mut o = sink_opts(sink_workload(a.cpu_rate, 1, a.duration));
        o.record_latency = record;
        let r = crate::run::run(&o).map_err(err)?;
        // CPU over the whole producer lifetime / all records it generated (warmup included).
        let total_records: f64 = r
            .result
            .timeseries
            .windows(2)
            .map(|w| w[1].publish_records_per_s * (w[1].t_s - w[0].t_s))
            .sum::<f64>()
            .max(1.0);
        let ns = r.producer_cpu_s * 1e9 / total_records;
        if record {
            achieved = achieved.max(r.result.publish.records_per_s);
            on = on.min(ns);
        } else {
            off = off.min(ns);
        }
    }
    let rec_ns = recording_microbench(20_000_000);
    let mut rep = SelftestReport {
        message_size: 100,
        generator_threads: threads,
        sink_records_per_s: sink_rps,
        sink_bytes_per_s: sink_rps * 100.0,
        cpu_rate: a.cpu_rate,
        cpu_ns_per_record_off: off,
        cpu_ns_per_record_on: on,
        recording_overhead_fraction: (on - off) / off,
        recording_ns_per_record: rec_ns,
        recording_fraction: rec_ns / off,
        recording_added_core_fraction: (on - off) * a.cpu_rate / 1e9,
        cpu_run_records_per_s: achieved,
        broker_records_per_s: None,
        headroom_ratio: None,
        broker_error: None,
        loadavg_start,
        loadavg_end: String::new(),
    };
    // 3. The embedded broker, offered more than it can take (closed by the bounded queue and
    //    in-flight window) for the same duration, no consumers: achieved = what it absorbs.
    if !a.no_broker {
        let mut w = sink_workload(1e9, 1, a.duration);
        w.consumer_per_subscription = 0;
        w.warmup_seconds = Some(0.0); // as for the peak: a warmup at 1e9 rec/s starves the window
        w.max_in_flight = 8;
        let mut o = RunOptions::new(w);
        o.write = false;
        o.quiet = true;
        o.calibrate = Some(false);
        match crate::run::run(&o) {
            Ok(r) => {
                let b = r.result.publish.records_per_s;
                rep.broker_records_per_s = Some(b);
                rep.headroom_ratio = Some(sink_rps / b.max(1.0));
            }
            Err(e) => rep.broker_error = Some(err(e)),
        }
    }
    rep.loadavg_end = loadavg();
    Ok(rep)
}

pub fn run_cli(a: SelftestArgs) -> i32 {
    match measure(&a) {
        Ok(r) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                println!(
                    "generator peak into discarding sink: {:.2} M rec/s of {} B ({:.0} MB/s) with {} threads",
                    r.sink_records_per_s / 1e6,
                    r.message_size,
                    r.sink_bytes_per_s / 1e6,
                    r.generator_threads
                );
                println!(
                    "latency recording: {:.2} ns/record (delay + publish, isolated) = {:.1}% of the generator's {:.1} ns/record CPU at {:.2} M rec/s",
                    r.recording_ns_per_record,
                    r.recording_fraction * 100.0,
                    r.cpu_ns_per_record_off,
                    r.cpu_run_records_per_s / 1e6
                );
                println!(
                    "  A/B at that rate: {:.1} ns/record off, {:.1} on ({:+.1}%, {:+.2}% of one core; within run-to-run noise)",
                    r.cpu_ns_per_record_off,
                    r.cpu_ns_per_record_on,
                    r.recording_overhead_fraction * 100.0,
                    r.recording_added_core_fraction * 100.0
                );
                println!("load average (1/5/15 min): {} at start, {} at end", r.loadavg_start, r.loadavg_end);
                match (r.broker_records_per_s, r.headroom_ratio, &r.broker_error) {
                    (Some(b), Some(h), _) => {
                        println!("embedded broker absorbed {:.2} M rec/s → generator headroom {h:.1}x", b / 1e6)
                    }
                    (_, _, Some(e)) => println!("embedded broker: not measured ({e})"),
                    _ => {}
                }
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

pub use run_cli as run;
