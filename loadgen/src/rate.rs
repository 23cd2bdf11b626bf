//! Open-loop rate schedule: record `i` has an intended send time `start + i / rate`, fixed in
//! advance and never moved by how fast the broker answers. Latency is measured from the intended
//! time (coordinated-omission-correct); how late the generator actually handed the record to the
//! client is recorded separately as `delay` (for a record the producer deferred into its open
//! batch: how late past the planned wake-up, see `producer`).

use std::time::{Duration, Instant};

/// A uniform schedule of intended send times, in nanoseconds since the run's clock origin.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Offset of record 0 from the clock origin.
    pub start_ns: u64,
    /// Records per second; `f64::INFINITY` = as fast as possible (every record due at `start_ns`).
    pub rate: f64,
    /// `1e9 / rate`: one multiplication per record instead of a division (the generator asks
    /// for every record's intended time; at millions of records/s the division showed as 5 % of
    /// the loadgen's CPU).
    ns_per_record: f64,
}

impl Schedule {
    pub fn new(start_ns: u64, rate: f64) -> Schedule {
        assert!(rate > 0.0, "rate must be positive");
        Schedule { start_ns, rate, ns_per_record: 1e9 / rate }
    }

    /// Intended send time of record `i`.
    #[inline]
    pub fn intended_ns(&self, i: u64) -> u64 {
        if self.rate.is_infinite() {
            return self.start_ns;
        }
        // Within 1 ns of start + i / rate (truncated; the precomputed 1e9 / rate rounds) for
        // the first 2^53 ns of schedule, without drift because it is never summed; monotonic in
        // `i` (a product by a positive constant), which `due_by` relies on.
        self.start_ns + (i as f64 * self.ns_per_record) as u64
    }

    /// Number of records whose intended time is `<= now_ns` (i.e. due by `now_ns`).
    #[inline]
    pub fn due_by(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        if self.rate.is_infinite() {
            return u64::MAX;
        }
        let mut n = ((now_ns - self.start_ns) as f64 * self.rate / 1e9) as u64 + 1;
        // Float rounding: make the answer exact against `intended_ns`.
        while n > 0 && self.intended_ns(n - 1) > now_ns {
            n -= 1;
        }
        while self.intended_ns(n) <= now_ns {
            n += 1;
        }
        n
    }
}

/// The run's monotonic clock origin; wall-clock microseconds are derived from the same origin so
/// producers and consumers in this process agree on record timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_wall_us: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let origin_wall_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock { origin: Instant::now(), origin_wall_us }
    }
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
    /// Wall-clock microseconds since the Unix epoch of a clock reading.
    #[inline]
    pub fn wall_us(&self, ns: u64) -> u64 {
        self.origin_wall_us + ns / 1000
    }
    pub fn origin_wall_us(&self) -> u64 {
        self.origin_wall_us
    }
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Sleep until the clock reads `deadline_ns`. Never spins: on a shared 2-core machine a spinning
/// generator would steal the CPU the broker under test needs. The cost is the kernel's timer
/// slack (~50-60 µs late wake-ups), which shows up honestly in `delay_us` and in publish latency
/// (both measured from the intended send time), and makes bursts at high rates larger (cheaper).
pub fn sleep_until(clock: &Clock, deadline_ns: u64) {
    loop {
        let now = clock.now_ns();
        if now >= deadline_ns {
            return;
        }
        std::thread::sleep(Duration::from_nanos(deadline_ns - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_uniform() {
        let s = Schedule::new(1_000, 1_000_000.0);
        for i in 0..10_000u64 {
            assert_eq!(s.intended_ns(i), 1_000 + i * 1_000);
        }
    }

    #[test]
    fn due_by_matches_intended() {
        for rate in [1.0, 3.0, 7_777.0, 1e6, 3.3e6, 1.2e7] {
            let s = Schedule::new(5_000, rate);
            for now in [0u64, 4_999, 5_000, 5_001, 77_777, 1_000_000, 999_999_999, 12_345_678_901] {
                let n = s.due_by(now);
                if now < 5_000 {
                    assert_eq!(n, 0);
                    continue;
                }
                assert!(s.intended_ns(n - 1) <= now, "rate {rate} now {now}");
                assert!(s.intended_ns(n) > now, "rate {rate} now {now}");
            }
        }
    }
}
