//! The broker's own share of a Produce request's latency (issue 18's tail evidence), as
//! Kafka's RequestMetrics splits it: per Produce request answered, from the network thread's
//! wake-up in which its last byte was read to its response's last byte handed to the socket,
//! in parts. Each network thread records into histograms of its own (no lock per request) and
//! hands them over every [`FLUSH_EVERY`]; the stats thread merges them per interval and over
//! the run (`--stats-interval-ms`; nothing is recorded without it).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// How often a network thread hands its histograms to the stats thread.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Values above this (µs) are recorded as this.
const MAX_US: u64 = 60_000_000;

/// One request's moments, stamped on its network thread (and `posted` by whoever completed it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    /// The network thread woke (poll returned) in the round that read the request's last byte.
    pub(crate) woke: Instant,
    /// The handler was called (the last byte read).
    pub(crate) read: Instant,
    /// The handler returned (for a group-commit wait: its registrations made).
    pub(crate) handled: Instant,
    /// A reply completed elsewhere (the covering fdatasync's completion) was posted to the
    /// network thread's inbox.
    pub(crate) posted: Option<Instant>,
    /// The reply took its slot on the network thread.
    pub(crate) ready: Option<Instant>,
}

/// The parts, in µs. `total` = `queue` + `local` + `durable` + `wake` + `send`.
pub(crate) struct Hists {
    /// Wake-up → handler called: reading, and the thread's other connections served first.
    queue: Histogram<u64>,
    /// The handler (parse, validate, append).
    local: Histogram<u64>,
    /// Handler returned → reply posted: waiting for the covering fdatasync (0 without one).
    durable: Histogram<u64>,
    /// Reply posted → taken by the network thread: the thread's wake-up (0 without a wait).
    wake: Histogram<u64>,
    /// Reply in its slot → last byte handed to the socket: earlier responses of the
    /// connection, a full socket.
    send: Histogram<u64>,
    total: Histogram<u64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("valid histogram bounds")
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(MAX_US as u128) as u64
}

impl Hists {
    pub(crate) fn new() -> Hists {
        Hists { queue: hist(), local: hist(), durable: hist(), wake: hist(), send: hist(), total: hist() }
    }

    fn all(&self) -> [(&'static str, &Histogram<u64>); 6] {
        [
            ("total", &self.total),
            ("queue", &self.queue),
            ("local", &self.local),
            ("durable", &self.durable),
            ("wake", &self.wake),
            ("send", &self.send),
        ]
    }

    /// The same histograms, in [`Hists::all`]'s order.
    fn all_mut(&mut self) -> [&mut Histogram<u64>; 6] {
        [&mut self.total, &mut self.queue, &mut self.local, &mut self.durable, &mut self.wake, &mut self.send]
    }

    /// A request whose response's last byte was handed to the socket at `sent`.
    pub(crate) fn record(&mut self, s: &Stamp, sent: Instant) {
        // Without a posted reply (answered by the handler itself) there is no wait and no
        // wake-up: everything after the handler is `send`.
        let (posted, ready) = match s.posted {
            Some(p) => {
                let p = p.max(s.handled);
                (p, s.ready.unwrap_or(p).max(p))
            }
            None => (s.handled, s.handled),
        };
        let parts = [
            (&mut self.queue, s.read.saturating_duration_since(s.woke)),
            (&mut self.local, s.handled.saturating_duration_since(s.read)),
            (&mut self.durable, posted.saturating_duration_since(s.handled)),
            (&mut self.wake, ready.saturating_duration_since(posted)),
            (&mut self.send, sent.saturating_duration_since(ready)),
            (&mut self.total, sent.saturating_duration_since(s.woke)),
        ];
        for (h, d) in parts {
            h.saturating_record(us(d));
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.total.len()
    }

    /// Add `other`'s records to these.
    pub(crate) fn add(&mut self, other: &Hists) {
        for (mine, (_, theirs)) in self.all_mut().into_iter().zip(other.all()) {
            // Same bounds on both sides: cannot fail.
            let _ = mine.add(theirs);
        }
    }

    pub(crate) fn reset(&mut self) {
        for h in self.all_mut() {
            h.reset();
        }
    }

    /// `n=N total_us=P50/P99/P99.9/MAX queue_us=… local_us=… durable_us=… wake_us=… send_us=…`
    pub(crate) fn summary(&self) -> String {
        let mut s = format!("n={}", self.count());
        for (name, h) in self.all() {
            let q = |x: f64| if h.is_empty() { 0 } else { h.value_at_quantile(x) };
            let max = if h.is_empty() { 0 } else { h.max() };
            s.push_str(&format!(" {name}_us={}/{}/{}/{}", q(0.5), q(0.99), q(0.999), max));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_and_merge() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let s = Stamp { woke: t0, read: t0 + ms(1), handled: t0 + ms(3), posted: Some(t0 + ms(10)), ready: Some(t0 + ms(14)) };
        let mut a = Hists::new();
        a.record(&s, t0 + ms(20));
        // Without a wait: no durable or wake part (a delay before the slot is filled is `send`).
        let now = Stamp { woke: t0, read: t0, handled: t0 + ms(2), posted: None, ready: Some(t0 + ms(3)) };
        let mut b = Hists::new();
        b.record(&now, t0 + ms(2));
        a.add(&b);
        assert_eq!(a.count(), 2);
        let close = |v: u64, want: u64| v.abs_diff(want) * 100 <= want;
        assert!(close(a.total.max(), 20_000), "{}", a.summary());
        assert!(close(a.durable.max(), 7_000), "{}", a.summary());
        assert!(close(a.wake.max(), 4_000), "{}", a.summary());
        assert!(close(a.send.max(), 6_000), "{}", a.summary());
        assert_eq!(a.durable.min(), 0, "no wait: 0");
        assert_eq!(a.wake.min(), 0, "no wake-up: 0");
        let line = a.summary();
        assert!(line.starts_with("n=2 total_us="), "{line}");
        a.reset();
        assert_eq!(a.count(), 0);
        assert!(a.summary().contains("send_us=0/0/0/0"));
    }
}
