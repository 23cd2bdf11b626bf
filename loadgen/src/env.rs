//! Environment stamp for results: CPU model, cores, memory, kernel, build commit, hostname.

use crate::results::Environment;

pub fn environment() -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    let kernel = read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into());
    let hostname = read_trim("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into());
    Environment {
        cpu_model,
        cores,
        memory_bytes,
        kernel,
        git_commit: git_commit(),
        hostname,
        loadgen_version: env!("CARGO_PKG_VERSION").into(),
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The commit this binary was built from, captured by `build.rs` at build time (`<sha>` or
/// `<sha>-dirty`; `unknown` when built outside a git checkout, e.g. from a source tarball). Not
/// the repository of the current directory: a binary run elsewhere still names its own source.
pub fn git_commit() -> String {
    env!("LOADGEN_BUILD_COMMIT").to_string()
}

/// Build provenance for the result's `provenance` block.
pub fn provenance() -> crate::results::Provenance {
    let c = git_commit();
    let (commit, dirty) = match c.strip_suffix("-dirty") {
        Some(sha) => (sha.to_string(), Some(true)),
        None if c == "unknown" => (c, None),
        None => (c, Some(false)),
    };
    crate::results::Provenance {
        build_commit: commit,
        build_dirty: dirty,
        loadgen_version: env!("CARGO_PKG_VERSION").to_string(),
        source: "build".into(),
    }
}

/// RFC 3339 UTC timestamp of wall-clock microseconds since the epoch.
pub fn rfc3339(wall_us: u64) -> String {
    let secs = wall_us / 1_000_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        (wall_us / 1000) % 1000
    )
}

/// `YYYY-MM-DD` (UTC) for result file names.
pub fn date(wall_us: u64) -> String {
    let (y, m, d) = civil_from_days((wall_us / 86_400_000_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_build_commit_is_fixed_at_build_time() {
        let c = super::git_commit();
        let p = super::provenance();
        assert!(!c.is_empty());
        assert_eq!(p.build_commit == "unknown", p.build_dirty.is_none());
        if c != "unknown" {
            assert!(p.build_commit.len() >= 7 && p.build_commit.chars().all(|x| x.is_ascii_hexdigit()), "{c}");
        }
    }

    #[test]
    fn rfc3339_known_instant() {
        // 2026-11-24T20:10:10.123Z
        assert_eq!(super::rfc3339(1_795_551_010_123_000), "2026-11-24T20:10:10.123Z");
        assert_eq!(super::date(1_795_551_010_123_000), "2026-11-24");
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
