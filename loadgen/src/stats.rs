//! Latency statistics on HdrHistogram: nanosecond histograms (1 ns .. 1 h, 3 significant digits),
//! shared interval histograms swapped once per second by the collector, and the interval log
//! (.hlog) written at the end.
//!
//! Recording cost matters (the generator must not measure itself): values that fall into the same
//! HdrHistogram bucket are counted and recorded with one `record_n` ([`RunRecorder`]). This is
//! exact: HdrHistogram cannot tell values of one bucket apart anyway.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::results::Latency;

pub type Hist = Histogram<u64>;

/// Highest trackable latency: one hour in ns (larger values saturate).
pub const HIST_MAX_NS: u64 = 3_600_000_000_000;

pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("static histogram bounds")
}

/// Run-length recorder: consecutive values in the same bucket cost one comparison each.
pub struct RunRecorder<'a> {
    hist: &'a mut Hist,
    lo: u64,
    hi: u64,
    count: u64,
}

impl<'a> RunRecorder<'a> {
    pub fn new(hist: &'a mut Hist) -> Self {
        RunRecorder { hist, lo: 1, hi: 0, count: 0 }
    }
    #[inline]
    pub fn record(&mut self, v: u64) {
        let v = v.clamp(1, HIST_MAX_NS);
        if v >= self.lo && v <= self.hi {
            self.count += 1;
            return;
        }
        self.flush();
        self.lo = self.hist.lowest_equivalent(v);
        self.hi = self.hist.highest_equivalent(v);
        self.count = 1;
    }
    fn flush(&mut self) {
        if self.count > 0 {
            self.hist.saturating_record_n(self.lo, self.count);
            self.count = 0;
        }
    }
}

impl Drop for RunRecorder<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Summary in microseconds of a nanosecond histogram.
pub fn summarize(h: &Hist) -> Latency {
    let us = |ns: u64| ns as f64 / 1000.0;
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
        mean: h.mean() / 1000.0,
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
        out.push((p * 100.0, h.value_at_quantile(p) as f64 / 1000.0));
        // Steps halve the remaining distance to 100%: evenly spaced on the 1/(1-p) log axis.
        let remain = 1.0 - p;
        p += remain * (1.0 - 10f64.powf(-0.1));
    }
    out.push((100.0, h.max() as f64 / 1000.0));
    out
}

/// Counters and interval histograms shared by producers, ack readers, consumers and the collector.
pub struct Metrics {
    pub publish: Mutex<Hist>,
    pub delay: Mutex<Hist>,
    pub e2e: Mutex<Hist>,
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
}

impl Metrics {
    pub fn new(record_latency: bool) -> Metrics {
        Metrics {
            publish: Mutex::new(new_hist()),
            delay: Mutex::new(new_hist()),
            e2e: Mutex::new(new_hist()),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            record_latency,
            stop: AtomicBool::new(false),
            fatal: Mutex::new(None),
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
/// are nanoseconds (HistogramLogProcessor's default unit ratio prints them as milliseconds).
pub fn write_hlog(path: &std::path::Path, start_wall_us: u64, intervals: &[LoggedInterval]) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut ser = V2DeflateSerializer::new();
    let start = std::time::UNIX_EPOCH + Duration::from_micros(start_wall_us);
    let mut b = IntervalLogWriterBuilder::new();
    b.add_comment("loadgen interval log; values in nanoseconds; tags: publish, delay, e2e")
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1e6);
    let mut w = b.begin_log_with(&mut file, &mut ser)?;
    for iv in intervals {
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
    fn run_recorder_equals_individual_records() {
        let mut a = new_hist();
        let mut b = new_hist();
        let values: Vec<u64> = (0..100_000u64).map(|i| 5_000_000 - i * 37 + (i % 7) * 1000).collect();
        {
            let mut r = RunRecorder::new(&mut a);
            for &v in &values {
                r.record(v);
            }
        }
        for &v in &values {
            b.record(v).unwrap();
        }
        assert_eq!(a.len(), b.len());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(a.value_at_quantile(q), b.value_at_quantile(q));
        }
        assert_eq!(a.max(), b.max());
    }

    #[test]
    fn spectrum_is_monotone_and_ends_at_max() {
        let mut h = new_hist();
        for v in 1..10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let s = spectrum(&h);
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(s.last().unwrap().0, 100.0);
    }
}
