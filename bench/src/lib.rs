//! Helpers shared by the benchmarks in `benches/` and the `perf` tool in `src/bin/`.
//!
//! Architecture invariant: nothing here is on the engine's data path; the benchmarks call the
//! engine's public API exactly as the broker does.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// How long criterion measures: `BENCH_PROFILE=quick` or `full` (default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// 1 s warmup, 3 s measurement, 20 samples per benchmark.
    Quick,
    /// criterion's defaults.
    Full,
}

/// The profile chosen by the `BENCH_PROFILE` environment variable (unset or unknown = full,
/// with a warning for unknown values).
pub fn profile() -> Profile {
    match std::env::var("BENCH_PROFILE").as_deref() {
        Ok("quick") => Profile::Quick,
        Ok("full") | Ok("") | Err(_) => Profile::Full,
        Ok(other) => {
            eprintln!("BENCH_PROFILE={other:?} is not quick or full: using full");
            Profile::Full
        }
    }
}

/// Where benchmarks on a real filesystem create their temporary directories:
/// `BENCH_SCRATCH_DIR` if set, else the system temp dir. Point it at the disk you want measured.
pub fn scratch_dir() -> PathBuf {
    std::env::var_os("BENCH_SCRATCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

/// Tiny seeded generator for benchmark inputs (no dependency, reproducible).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_seeded_and_spreads() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        let xs: Vec<u64> = (0..1000).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..1000).map(|_| b.next_u64()).collect::<Vec<_>>());
        let low_half = xs.iter().filter(|x| **x % 100 < 50).count();
        assert!((400..600).contains(&low_half), "{low_half}");
    }
}

/// Which clock the benchmarks read: `BENCH_CLOCK=wall` (default) or `cpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockKind {
    /// Elapsed real time: what a client waits (includes fdatasync waits and time descheduled).
    Wall,
    /// CPU time of the benchmarking thread (`CLOCK_THREAD_CPUTIME_ID`): excludes time spent
    /// waiting or descheduled, so it barely moves when neighbours load a shared machine. Work
    /// done by other threads (the interval flusher, io-wq workers) is not counted.
    Cpu,
}

/// The clock chosen by `BENCH_CLOCK`.
pub fn clock_kind() -> ClockKind {
    match std::env::var("BENCH_CLOCK").as_deref() {
        Ok("cpu") => ClockKind::Cpu,
        Ok("wall") | Ok("") | Err(_) => ClockKind::Wall,
        Ok(other) => {
            eprintln!("BENCH_CLOCK={other:?} is not wall or cpu: using wall");
            ClockKind::Wall
        }
    }
}

/// CPU time consumed by the calling thread, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`, exact to
/// the nanosecond: unlike `/proc/thread-self/schedstat`, it does not lag by up to a scheduler tick).
pub fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A criterion measurement reading the clock chosen by `BENCH_CLOCK`; values are `Duration`s
/// either way, so reports and `loadgen compare --criterion` read the same units.
#[derive(Debug, Clone, Copy)]
pub struct BenchClock {
    pub kind: ClockKind,
}

/// A point on a [`BenchClock`].
#[derive(Debug, Clone, Copy)]
pub enum ClockStart {
    Wall(std::time::Instant),
    Cpu(u64),
}

impl BenchClock {
    pub fn from_env() -> Self {
        BenchClock { kind: clock_kind() }
    }
    pub fn now(&self) -> ClockStart {
        match self.kind {
            ClockKind::Wall => ClockStart::Wall(std::time::Instant::now()),
            ClockKind::Cpu => ClockStart::Cpu(thread_cpu_ns()),
        }
    }
    pub fn since(&self, start: ClockStart) -> std::time::Duration {
        match start {
            ClockStart::Wall(t) => t.elapsed(),
            ClockStart::Cpu(ns) => std::time::Duration::from_nanos(thread_cpu_ns().saturating_sub(ns)),
        }
    }
}

static WALL: criterion::measurement::WallTime = criterion::measurement::WallTime;

impl criterion::measurement::Measurement for BenchClock {
    type Intermediate = ClockStart;
    type Value = std::time::Duration;
    fn start(&self) -> ClockStart {
        self.now()
    }
    fn end(&self, i: ClockStart) -> std::time::Duration {
        self.since(i)
    }
    fn add(&self, a: &std::time::Duration, b: &std::time::Duration) -> std::time::Duration {
        *a + *b
    }
    fn zero(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    fn to_f64(&self, v: &std::time::Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        WALL.formatter()
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn cpu_clock_counts_work_not_sleep() {
        let c = BenchClock { kind: ClockKind::Cpu };
        let t = c.now();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let slept = c.since(t);
        assert!(slept < std::time::Duration::from_millis(20), "sleep counted as CPU: {slept:?}");
        let t = c.now();
        let spin_until = std::time::Instant::now() + std::time::Duration::from_millis(30);
        let mut x = 0u64;
        while std::time::Instant::now() < spin_until {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let spun = c.since(t);
        assert!(spun >= std::time::Duration::from_millis(5), "spinning not counted: {spun:?}");
        // Resolution: a few microseconds of work are visible (no scheduler-tick granularity).
        let t = c.now();
        let mut y = 0u64;
        for i in 0..20_000u64 {
            y = y.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(y);
        assert!(c.since(t) > std::time::Duration::ZERO);
    }
}
