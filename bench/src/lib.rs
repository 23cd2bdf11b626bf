//! Helpers shared by the benchmarks in `benches/` and the `perf` tool in `src/bin/`.
//!
//! Architecture invariant: nothing here is on the engine's data path; the benchmarks call the
//! engine's public API exactly as the broker does.

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
