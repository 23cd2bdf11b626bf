//! Latency statistics on HdrHistogram: microsecond histograms (1 µs .. 1 h, 3 significant
//! digits, as OpenMessaging Benchmark records), shared interval histograms swapped once per
//! second by the collector, and the interval log (.hlog) written at the end.
//!
//! Recording cost matters (the generator must not measure itself): each recording thread owns a
//! [`LocalRecorder`] whose values below 2,048 µs (where HdrHistogram with 3 digits is exact) go
//! to a plain counter array — one increment per record — and which is merged into the shared
//! interval histogram every [`FLUSH_NS`] and when the thread ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::results::Latency;

pub type Hist = Histogram<u64>;

/// Highest trackable latency: one hour in µs (larger values saturate).
pub const HIST_MAX_US: u64 = 3_600_000_000;
/// Values below this are exact in a 3-digit HdrHistogram (its sub-bucket count).
const DENSE_US: usize = 2048;
/// How often recorders merge into the shared interval histograms.
pub const FLUSH_NS: u64 = 50_000_000;

pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("static histogram bounds")
}

/// A thread's own recorder: exact counters below 2,048 µs, a histogram above.
///
/// Above 2,048 µs, equal values in a row are counted and recorded at once (`run_us`,
/// `run_n`): the records of one batch are acknowledged (and a burst's are sent) at one instant
/// and their intended times are nanoseconds apart, so under load — latencies of milliseconds to
/// seconds — tens of consecutive records share a µs value, and one `record_n` per run replaces
/// a histogram bucket lookup per record (a quarter of an overloaded generator's CPU otherwise).
pub struct LocalRecorder {
    dense: Vec<u64>,
    over: Hist,
    run_us: u64,
    run_n: u64,
    last_flush_ns: u64,
}

impl Default for LocalRecorder {
    fn default() -> Self {
        LocalRecorder::new()
    }
}

impl LocalRecorder {
    pub fn new() -> LocalRecorder {
        LocalRecorder { dense: vec![0; DENSE_US], over: new_hist(), run_us: 0, run_n: 0, last_flush_ns: 0 }
    }

    /// Record a latency given in nanoseconds (stored as µs).
    #[inline]
    pub fn record_ns(&mut self, ns: u64) {
        self.record_us(ns / 1000);
    }

    #[inline]
    pub fn record_us(&mut self, us: u64) {
        // No other bookkeeping: one increment is the whole cost for values below 2,048 µs.
        match self.dense.get_mut(us as usize) {
            Some(c) => *c += 1,
            None if us == self.run_us => self.run_n += 1,
            None => {
                self.end_run();
                (self.run_us, self.run_n) = (us, 1);
            }
        }
    }

    /// Record the pending run of equal values above the dense range.
    fn end_run(&mut self) {
        if self.run_n > 0 {
            self.over.saturating_record_n(self.run_us.min(HIST_MAX_US), self.run_n);
            self.run_n = 0;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.run_n == 0 && self.over.is_empty() && self.dense.iter().all(|c| *c == 0)
    }

    /// Merge into `h` and reset.
    pub fn drain_into(&mut self, h: &mut Hist) {
        self.end_run();
        for (v, c) in self.dense.iter_mut().enumerate() {
            if *c > 0 {
                h.saturating_record_n(v as u64, *c);
                *c = 0;
            }
        }
        if !self.over.is_empty() {
            let _ = h.add(&self.over);
            self.over.reset();
        }
    }

    /// Merge into the shared histogram if [`FLUSH_NS`] passed since the last merge (or `force`).
    pub fn maybe_flush(&mut self, shared: &Mutex<Hist>, now_ns: u64, force: bool) {
        if force || now_ns.saturating_sub(self.last_flush_ns) >= FLUSH_NS {
            if !self.is_empty() {
                self.drain_into(&mut lock(shared));
            }
            self.last_flush_ns = now_ns;
        }
    }
}

/// Summary in microseconds of a nanosecond histogram.
pub fn summarize(h: &Hist) -> Latency {
    let us = |v: u64| v as f64;
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        count: h.len(),
        p50: us(h.value_at_quantile(0.5)),
        p90: us(h.value_at_quantile(0.9)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        p9999: us(h.value_at_quantile(0.9999)),
        max: us(h.max()),
        mean: h.mean(),
    }
}

/// The percentile spectrum for the report: (percentile, µs) pairs from p0 to p99.9999 + max.
pub fn spectrum(h: &Hist) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    if h.is_empty() {
        return out;
    }
    let mut p = 0.0f64;
    while p < 0.999_999 {
        out.push((p * 100.0, h.value_at_quantile(p) as f64));
        // Steps halve the remaining distance to 100%: evenly spaced on the 1/(1-p) log axis.
        let remain = 1.0 - p;
        p += remain * (1.0 - 10f64.powf(-0.1));
    }
    out.push((100.0, h.max() as f64));
    out
}

/// Where each scheduled record of a phase ended up. Index 0 of [`Metrics::acct`] holds the
/// records intended outside the measured window (warmup, a trial's own warmup), index 1 those
/// intended inside it (`[window_from_ns, window_until_ns)`). Once every thread of the phase has
/// ended: `scheduled = acked + written_no_ack + failed + timed_out + not_sent` and `sent = acked
/// + written_no_ack + failed + timed_out`, exactly (`written_no_ack` only with acks=0).
#[derive(Default)]
pub struct PhaseAcct {
    /// Records the schedule intended (cut short only by a deliberate halt or Ctrl-C).
    pub scheduled: AtomicU64,
    /// Records written to the transport (in a request).
    pub sent: AtomicU64,
    /// Acknowledged without error.
    pub acked: AtomicU64,
    /// Acknowledged without error by the window's end + grace ([`Metrics::ack_cutoff_ns`]).
    pub acked_in_time: AtomicU64,
    /// Answered with an error (any code), total; by code in [`Metrics::failed_codes`].
    pub failed: AtomicU64,
    /// Sent but unanswered when the producer gave up (drain deadline, lost connection).
    pub timed_out: AtomicU64,
    /// Never written to the transport (the generator was late or blocked at the deadline).
    pub not_sent: AtomicU64,
    /// Written with acks=0: no answer comes, so neither acknowledged nor failed.
    pub written_no_ack: AtomicU64,
}

impl PhaseAcct {
    pub fn reset(&self) {
        for c in [&self.scheduled, &self.sent, &self.acked, &self.acked_in_time, &self.failed, &self.timed_out, &self.not_sent, &self.written_no_ack] {
            c.store(0, Ordering::SeqCst);
        }
    }
}

/// A thread's recorders for acknowledged records: records intended inside the measured window
/// and the others (so the measured latency covers exactly the measured records).
pub struct AckRecorder {
    pub window: LocalRecorder,
    pub other: LocalRecorder,
}

impl Default for AckRecorder {
    fn default() -> Self {
        AckRecorder::new()
    }
}

impl AckRecorder {
    pub fn new() -> AckRecorder {
        AckRecorder { window: LocalRecorder::new(), other: LocalRecorder::new() }
    }
    /// Merge into the shared interval histograms if [`FLUSH_NS`] passed (or `force`).
    pub fn maybe_flush(&mut self, m: &Metrics, now_ns: u64, force: bool) {
        self.window.maybe_flush(&m.publish, now_ns, force);
        self.other.maybe_flush(&m.publish_other, now_ns, force);
    }
}

/// Counters and interval histograms shared by producers, ack readers, consumers and the collector.
pub struct Metrics {
    /// Publish latency of acknowledged records intended inside the measured window.
    pub publish: Mutex<Hist>,
    /// Publish latency of the other acknowledged records (warmup).
    pub publish_other: Mutex<Hist>,
    /// Censored latency (intended time → error answer, or → the producer giving up) of records
    /// never acknowledged, by [`PhaseAcct`] index.
    pub censored: [Mutex<Hist>; 2],
    /// Per-phase accounting (index 1 = the measured window).
    pub acct: [PhaseAcct; 2],
    /// Failed records of the measured window by Kafka error code (-1: partition missing from
    /// the answer).
    pub failed_codes: Mutex<std::collections::BTreeMap<i16, u64>>,
    /// The measured window: records intended in `[from, until)` (clock ns) are measured.
    pub window_from_ns: AtomicU64,
    pub window_until_ns: AtomicU64,
    /// Acks after this clock reading do not count as `acked_in_time`.
    pub ack_cutoff_ns: AtomicU64,
    /// Bumped by the collector to ask consumers to flush their recorders now; each consumer
    /// adds 1 to `flush_acks` when it has.
    pub flush_req: AtomicU64,
    pub flush_acks: AtomicU64,
    pub delay: Mutex<Hist>,
    /// End-to-end latency of records intended inside the measured window.
    pub e2e: Mutex<Hist>,
    /// End-to-end latency of the other records.
    pub e2e_other: Mutex<Hist>,
    /// Records handed to the client (appended to a batch).
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub errors: AtomicU64,
    pub consumed: AtomicU64,
    pub consumed_bytes: AtomicU64,
    /// When false, latency values are not recorded at all (for measuring the recording's own cost).
    pub record_latency: bool,
    /// Set on the first fatal error or Ctrl-C; every loop checks it.
    pub stop: AtomicBool,
    pub fatal: Mutex<Option<String>>,
    /// Producer-settings counters (compression, acks=0 writes, idempotent retries).
    pub producer: crate::produce::ProducerTotals,
    /// Consumer positions, lag, duplicates and the group protocol's counters.
    pub consumer: crate::consumer::ConsumerTotals,
}

impl Metrics {
    pub fn new(record_latency: bool) -> Metrics {
        Metrics {
            publish: Mutex::new(new_hist()),
            publish_other: Mutex::new(new_hist()),
            censored: [Mutex::new(new_hist()), Mutex::new(new_hist())],
            acct: [PhaseAcct::default(), PhaseAcct::default()],
            failed_codes: Mutex::new(Default::default()),
            window_from_ns: AtomicU64::new(0),
            window_until_ns: AtomicU64::new(u64::MAX),
            ack_cutoff_ns: AtomicU64::new(u64::MAX),
            flush_req: AtomicU64::new(0),
            flush_acks: AtomicU64::new(0),
            delay: Mutex::new(new_hist()),
            e2e: Mutex::new(new_hist()),
            e2e_other: Mutex::new(new_hist()),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            record_latency,
            stop: AtomicBool::new(false),
            fatal: Mutex::new(None),
            producer: Default::default(),
            consumer: Default::default(),
        }
    }

    /// Record a fatal error (first one wins) and stop everything.
    pub fn fail(&self, msg: String) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(msg);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Start a new measured window: records intended in `[from, until)` are measured, acks after
    /// `cutoff` are late. Resets the per-phase accounting and censored histograms; call only when
    /// no producer or ack reader of the previous phase is running.
    pub fn start_window(&self, from_ns: u64, until_ns: u64, cutoff_ns: u64) {
        self.window_from_ns.store(from_ns, Ordering::SeqCst);
        self.window_until_ns.store(until_ns, Ordering::SeqCst);
        self.ack_cutoff_ns.store(cutoff_ns, Ordering::SeqCst);
        for a in &self.acct {
            a.reset();
        }
        for h in &self.censored {
            lock(h).reset();
        }
        self.failed_codes.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The measured window `(from, until)`.
    #[inline]
    pub fn window(&self) -> (u64, u64) {
        (self.window_from_ns.load(Ordering::Relaxed), self.window_until_ns.load(Ordering::Relaxed))
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Lock a histogram mutex, surviving a poisoned lock (a panicked thread must not hide results).
pub fn lock(m: &Mutex<Hist>) -> std::sync::MutexGuard<'_, Hist> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Take the interval histogram out of `m`, leaving an empty one.
pub fn take(m: &Mutex<Hist>) -> Hist {
    let mut g = lock(m);
    let out = g.clone();
    g.reset();
    out
}

/// One serialized interval of the .hlog.
pub struct LoggedInterval {
    pub tag: &'static str,
    pub start_s: f64,
    pub duration_s: f64,
    pub hist: Hist,
}

/// Write an HdrHistogram interval log (the format of HdrHistogram's `HistogramLogWriter`); values
/// are microseconds (use `HistogramLogProcessor -outputValueUnitRatio 1000` to print ms); the
/// interval max column is in milliseconds.
pub fn write_hlog(path: &std::path::Path, start_wall_us: u64, intervals: &[LoggedInterval]) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut ser = V2DeflateSerializer::new();
    let start = std::time::UNIX_EPOCH + Duration::from_micros(start_wall_us);
    let mut b = IntervalLogWriterBuilder::new();
    b.add_comment("loadgen interval log; values in microseconds; tags <metric>.<phase>: metric publish, delay, e2e; phase setup, warmup, measure, drain, backlog, search (see loadgen/src/hlog.rs)")
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1e3);
    let mut w = b.begin_log_with(&mut file, &mut ser)?;
    let mut phase = String::new();
    for iv in intervals {
        if let Some(c) = crate::hlog::phase_marker(&mut phase, iv) {
            w.write_comment(&c)?;
        }
        w.write_histogram(
            &iv.hist,
            Duration::from_secs_f64(iv.start_s),
            Duration::from_secs_f64(iv.duration_s),
            Tag::new(iv.tag),
        )
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    }
    drop(w);
    std::io::Write::flush(&mut file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_recorder_equals_individual_records() {
        let mut a = new_hist();
        let mut b = new_hist();
        let values: Vec<u64> = (0..100_000u64).map(|i| (i * 7919) % 5_000_000).collect();
        let mut r = LocalRecorder::new();
        for &v in &values {
            r.record_ns(v);
        }
        r.drain_into(&mut a);
        for &v in &values {
            b.record(v / 1000).unwrap();
        }
        assert_eq!(a.len(), b.len());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(a.value_at_quantile(q), b.value_at_quantile(q));
        }
        assert_eq!(a.max(), b.max());
        assert!(r.is_empty());
    }

    /// Runs of equal values above the dense range (as one acknowledged batch gives under load)
    /// end up in the histogram exactly as recorded one by one, also when a flush cuts a run.
    #[test]
    fn runs_above_the_dense_range_are_recorded_exactly() {
        let mut a = new_hist();
        let mut b = new_hist();
        let mut r = LocalRecorder::new();
        // 1 s .. 1.2 s in ns, 30 records per µs, with dense values and a huge one interleaved.
        let mut values: Vec<u64> = (0..60_000u64).map(|i| 1_000_000_000 + i * 33).collect();
        values.extend([5_000, 5_000, 7_200_000_000_000, 3_000_000, 3_000_000, 1_500]);
        values.extend(values.clone());
        for (i, &v) in values.iter().enumerate() {
            r.record_ns(v);
            b.saturating_record((v / 1000).min(HIST_MAX_US));
            if i == 1_000 {
                assert!(!r.is_empty(), "a pending run is not empty");
                r.drain_into(&mut a);
            }
        }
        r.drain_into(&mut a);
        assert!(r.is_empty());
        assert_eq!(a.len(), values.len() as u64);
        assert!(a == b, "histograms differ");
    }

    #[test]
    fn spectrum_is_monotone_and_ends_at_max() {
        let mut h = new_hist();
        for v in 1..10_000u64 {
            h.record(v).unwrap();
        }
        let s = spectrum(&h);
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(s.last().unwrap().0, 100.0);
    }
}
