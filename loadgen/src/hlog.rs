//! Phase markers of the `.hlog` (HdrHistogram interval log).
//!
//! Every interval is tagged `<metric>.<phase>` (`Tag=publish.measure`, `Tag=e2e.warmup`, …):
//! metric `publish` (ack - intended send), `delay` (send - intended send) or `e2e`; phase
//! `setup`, `warmup`, `measure`, `drain` (after the measured phase: latencies still counted),
//! `backlog`, `search`. A standard reader selects the measured window by tag, e.g.
//! `HistogramLogProcessor -i run.hlog -tag publish.measure` (the result's publish latency =
//! the `publish.measure` plus `publish.drain` intervals). Where a phase begins, a comment line
//! `#[Phase: measure, StartTimestamp: 3.001]` (seconds since BaseTime) marks it, for readers that
//! select by time (`-start`/`-end`).

use crate::stats::LoggedInterval;

pub const PHASES: [&str; 6] = ["setup", "warmup", "measure", "drain", "backlog", "search"];

/// The interval tag of `metric` ("publish" | "delay" | "e2e") in `phase` (static: tags live as
/// long as the log).
pub fn tag(metric: &str, phase: &str) -> &'static str {
    macro_rules! tags {
        ($($m:literal),*) => {
            match (metric, phase) {
                $(
                    ($m, "setup") => concat!($m, ".setup"),
                    ($m, "warmup") => concat!($m, ".warmup"),
                    ($m, "measure") => concat!($m, ".measure"),
                    ($m, "drain") => concat!($m, ".drain"),
                    ($m, "backlog") => concat!($m, ".backlog"),
                    ($m, "search") => concat!($m, ".search"),
                )*
                _ => interned(metric, phase),
            }
        };
    }
    tags!("publish", "delay", "e2e")
}

/// A tag for a metric/phase pair not listed above (a phase added later): interned once, at
/// most 64 of them (then "other"), so the log never loses the phase of a new kind of interval.
fn interned(metric: &str, phase: &str) -> &'static str {
    static TAGS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let want = format!("{}.{}", crate::workload::sanitize(metric), crate::workload::sanitize(phase));
    let Ok(mut tags) = TAGS.lock() else { return "other" };
    if let Some(t) = tags.iter().find(|t| **t == want) {
        return t;
    }
    if tags.len() >= 64 {
        return "other";
    }
    let t: &'static str = Box::leak(want.into_boxed_str());
    tags.push(t);
    t
}

/// The phase of a tag written by [`tag`].
pub fn phase_of(tag: &str) -> &str {
    tag.split_once('.').map(|(_, p)| p).unwrap_or(tag)
}

/// The comment to write before `iv` when it starts a new phase (`last` tracks the phase).
pub fn phase_marker(last: &mut String, iv: &LoggedInterval) -> Option<String> {
    let p = phase_of(iv.tag);
    if p == last.as_str() {
        return None;
    }
    *last = p.to_string();
    Some(format!("[Phase: {p}, StartTimestamp: {:.3}]", iv.start_s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn every_metric_and_phase_has_its_own_tag() {
        for m in ["publish", "delay", "e2e"] {
            for p in PHASES {
                assert_eq!(tag(m, p), format!("{m}.{p}"));
                assert_eq!(phase_of(tag(m, p)), p);
            }
        }
        assert_eq!(tag("publish", "confirm"), "publish.confirm");
        assert_eq!(tag("publish", "confirm").as_ptr(), tag("publish", "confirm").as_ptr(), "interned once");
    }

    #[test]
    fn a_standard_reader_extracts_the_measured_window_by_tag() {
        // Warmup intervals with huge latencies, measured ones with small: the measure-tagged
        // intervals alone give the measured totals.
        let mut ivs = Vec::new();
        for (i, (phase, v, n)) in [("warmup", 900_000u64, 10u64), ("warmup", 800_000, 10), ("measure", 1_000, 100), ("measure", 2_000, 100), ("drain", 3_000, 5)].iter().enumerate() {
            let mut h = crate::stats::new_hist();
            h.record_n(*v, *n).unwrap();
            ivs.push(LoggedInterval { tag: tag("publish", phase), start_s: i as f64, duration_s: 1.0, hist: h });
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.hlog");
        crate::stats::write_hlog(&path, 1_700_000_000_000_000, &ivs).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("#[Phase: warmup, StartTimestamp: 0.000]"), "{text}");
        assert!(text.contains("#[Phase: measure, StartTimestamp: 2.000]"), "{text}");
        assert!(text.contains("#[Phase: drain, StartTimestamp: 4.000]"), "{text}");
        assert!(text.contains("#[StartTime: "), "{text}");
        let mut measured = crate::stats::new_hist();
        let mut tags = Vec::new();
        let mut de = Deserializer::new();
        for e in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(ih) = e.unwrap() {
                let t = ih.tag().map(|t| t.as_str().to_string()).unwrap_or_default();
                if t == "publish.measure" {
                    let b64 = base64_decode(ih.encoded_histogram());
                    let h: hdrhistogram::Histogram<u64> = de.deserialize(&mut &b64[..]).unwrap();
                    measured.add(&h).unwrap();
                }
                tags.push(t);
            }
        }
        assert_eq!(tags, vec!["publish.warmup", "publish.warmup", "publish.measure", "publish.measure", "publish.drain"]);
        assert_eq!(measured.len(), 200);
        assert!(measured.max() < 2_100, "warmup excluded: {}", measured.max());
    }

    /// Standard base64 (the .hlog's histogram encoding), for the test only.
    fn base64_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => (c - b'A') as u32,
                b'a'..=b'z' => (c - b'a' + 26) as u32,
                b'0'..=b'9' => (c - b'0' + 52) as u32,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("bad base64 {c}"),
            }
        };
        let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
        let mut out = Vec::new();
        for chunk in bytes.chunks(4) {
            let mut acc = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                acc |= val(*c) << (18 - 6 * i);
            }
            let n = chunk.len() * 6 / 8;
            for i in 0..n {
                out.push((acc >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}
