//! Storage-engine throughput in one run (numbers for PERF_NOTES.md, never a timed test):
//!
//! (a) raw sequential write bandwidth of the disk (buffered write + fdatasync per MiB, one final
//!     fdatasync, and O_DIRECT) vs durable `group` append of 1 MiB batches to one partition;
//! (b) 8 concurrent appenders of 16 KiB batches of 100-byte records in `group` mode;
//! (c) CRC32C and full batch validation speed.
//!
//! `cargo run --release -p engine --example append_bench [-- <dir on the disk under test> [MiB [parts]]]`
//! (default dir: `target/bench-tmp`, default volume: 512 MiB per write test; `scripts/storage-bench`
//! runs it with 4 GiB, which the page cache does not absorb).
//!
//! Environment: APPEND_BENCH_ROUNDS (a's rounds, default 5), APPEND_BENCH_APPENDERS (a's
//! concurrent appenders, default 4; 1 always runs too), APPEND_BENCH_DIRECT_IO=0/1 (a's large
//! appends only through the page cache / only with O_DIRECT; default: both, interleaved),
//! APPEND_BENCH_SECS and APPEND_BENCH_PREALLOC_KIB for (b).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::io::{Io, UringIo};
use engine::log::{Durability, LogConfig, Notifier, Partition};
use engine::record::{self, build};

const MIB: usize = 1 << 20;

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// A 1 MiB-aligned-start buffer of `len` bytes inside `v` (O_DIRECT wants aligned memory).
fn aligned(v: &mut [u8], len: usize) -> &mut [u8] {
    let off = (4096 - (v.as_ptr() as usize % 4096)) % 4096;
    &mut v[off..off + len]
}

fn raw_buffered(path: &Path, total: usize, sync_each: bool) -> f64 {
    let _ = std::fs::remove_file(path);
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    let chunk = vec![0xa5u8; MIB];
    let t = Instant::now();
    for _ in 0..total / MIB {
        f.write_all(&chunk).unwrap();
        if sync_each {
            f.sync_data().unwrap();
        }
    }
    f.sync_data().unwrap();
    let r = mib_s(total as u64, t.elapsed());
    let _ = std::fs::remove_file(path);
    r
}

fn raw_direct(path: &Path, total: usize, block: usize, sync_each: bool) -> Option<f64> {
    let _ = std::fs::remove_file(path);
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    let mut v = vec![0x5au8; block + 4096];
    let buf = aligned(&mut v, block);
    let t = Instant::now();
    let mut pos = 0u64;
    while (pos as usize) < total {
        f.write_all_at(buf, pos).ok()?;
        if sync_each {
            f.sync_data().ok()?;
        }
        pos += block as u64;
    }
    f.sync_data().ok()?;
    let r = mib_s(total as u64, t.elapsed());
    let _ = std::fs::remove_file(path);
    Some(r)
}

/// Which `LogConfig::direct_io` settings (a) measures: both, interleaved (default), or only
/// APPEND_BENCH_DIRECT_IO=0 (large appends through the page cache) / =1 (with O_DIRECT).
fn direct_io_modes() -> Vec<bool> {
    match std::env::var("APPEND_BENCH_DIRECT_IO").as_deref() {
        Ok("0") => vec![false],
        Ok("1") => vec![true],
        _ => vec![false, true],
    }
}

fn mode_name(direct_io: bool) -> &'static str {
    if direct_io {
        "O_DIRECT"
    } else {
        "buffered"
    }
}

fn open_partition(
    dir: &Path,
    name: &str,
    segment_bytes_max: u64,
    preallocate_bytes: u64,
    direct_io: bool,
) -> Arc<Partition> {
    let d = dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    let cfg = LogConfig {
        durability: Durability::Group,
        segment_bytes_max,
        retention_ms: None,
        preallocate_bytes,
        direct_io,
        ..LogConfig::default()
    };
    let io: Arc<dyn Io> = Arc::new(UringIo);
    Partition::open(name, 0, &d, io, cfg, Arc::new(Notifier::default())).unwrap()
}

/// `threads` appenders each appending `batch` (cloned) with append_durable until `total` bytes.
fn group_append(
    dir: &Path,
    name: &str,
    batch: &[u8],
    threads: usize,
    total: u64,
    direct_io: bool,
) -> (f64, u64, Duration) {
    let p = open_partition(dir, name, 1 << 30, 0, direct_io);
    let written = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (p, written, batch) = (p.clone(), written.clone(), batch.to_vec());
            std::thread::spawn(move || {
                let mut buf = batch.clone();
                let mut n = 0u64;
                while written.fetch_add(buf.len() as u64, Ordering::Relaxed) < total {
                    buf.copy_from_slice(&batch);
                    p.append_durable(&mut buf).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let batches: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let took = t.elapsed();
    let bytes = batches * batch.len() as u64;
    let (syncs, sync_us) = p.sync_stats();
    println!(
        "(a) {name}: {syncs} group syncs, {:.1} batches per sync, mean fdatasync {:.0} us",
        batches as f64 / syncs.max(1) as f64,
        sync_us as f64 / syncs.max(1) as f64
    );
    drop(p);
    let _ = std::fs::remove_dir_all(dir.join(name));
    (mib_s(bytes, took), batches, took)
}

/// 8 appenders of small batches for `secs`; returns (records/s, batches/s, MiB/s).
fn small_appends(
    dir: &Path,
    threads: usize,
    secs: f64,
    preallocate_bytes: u64,
) -> (f64, f64, f64, usize) {
    let batch = build::simple_batch(1, 100, 0);
    let per = batch.len() - record::BATCH_HEADER_BYTES; // bytes per record
    let records = (16 * 1024 - record::BATCH_HEADER_BYTES) / per;
    let batch = build::simple_batch(records, 100, 1_700_000_000_000);
    // 16 KiB appends are staged (below `appender_write_bytes`): direct_io does not apply.
    let p = open_partition(dir, "small", 1 << 30, preallocate_bytes, false);
    // Diagnostic: APPEND_BENCH_PREZERO_MIB=N writes and syncs N MiB of zeros into the segment
    // before the clock starts (what the sync costs when no append allocates anything).
    if let Some(mib) = std::env::var("APPEND_BENCH_PREZERO_MIB").ok().and_then(|v| v.parse::<usize>().ok()) {
        let f = OpenOptions::new().write(true).open(dir.join("small").join("00000000000000000000.log")).unwrap();
        let zeros = vec![0u8; MIB];
        for i in 0..mib {
            f.write_at(&zeros, (i * MIB) as u64).unwrap();
        }
        f.sync_all().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (p, stop, batch) = (p.clone(), stop.clone(), batch.clone());
            std::thread::spawn(move || {
                let mut buf = batch.clone();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    buf.copy_from_slice(&batch);
                    p.append_durable(&mut buf).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let batches: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let took = t.elapsed().as_secs_f64();
    let (syncs, sync_us) = p.sync_stats();
    println!(
        "(b) preallocate {} KiB: {syncs} group syncs: {:.1} batches per sync, mean fdatasync {:.0} us, cycle {:.0} us",
        preallocate_bytes >> 10,
        batches as f64 / syncs.max(1) as f64,
        sync_us as f64 / syncs.max(1) as f64,
        took * 1e6 / syncs.max(1) as f64
    );
    drop(p);
    let _ = std::fs::remove_dir_all(dir.join("small"));
    let recs = batches as f64 * records as f64;
    (
        recs / took,
        batches as f64 / took,
        batches as f64 * batch.len() as f64 / MIB as f64 / took,
        records,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| "target/bench-tmp".into()),
    );
    let total_mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let total = total_mib * MIB;
    // Optional third argument: which parts to run, e.g. `b` or `ac` (default: all).
    let parts = args.get(3).cloned().unwrap_or_else(|| "abc".into());
    std::fs::create_dir_all(&dir).unwrap();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "append_bench: dir {} volume {total_mib} MiB | cpu {cpu} x{} | kernel {} | loadavg {}",
        dir.display(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // (c) first: CPU only.
    if parts.contains('c') {
        let buf = vec![0x3cu8; MIB];
        let t = Instant::now();
        let mut x = 0u32;
        let rounds = 2048;
        for _ in 0..rounds {
            x ^= crc32c::crc32c(&buf);
        }
        let crc_gbs = rounds as f64 * MIB as f64 / 1e9 / t.elapsed().as_secs_f64();
        let small = build::simple_batch(150, 100, 0);
        let t = Instant::now();
        let n = 50_000;
        for _ in 0..n {
            x ^= record::validate(std::hint::black_box(&small), 1 << 20)
                .unwrap()
                .record_count as u32;
        }
        let val_gbs = n as f64 * small.len() as f64 / 1e9 / t.elapsed().as_secs_f64();
        println!("(c) crc32c over 1 MiB buffers: {crc_gbs:.1} GB/s; validate() of {} B batches: {val_gbs:.1} GB/s (goal >= 8 GB/s) [{x}]", small.len());
    }
    // (a) raw disk vs durable group append of 1 MiB batches, interleaved in rounds (the disk
    // of a shared VM drifts over seconds: only figures taken side by side compare).
    if parts.contains('a') {
        let raw_file = dir.join("raw.bin");
        let big = build::simple_batch(MIB / 1100, 1024, 0);
        let big_len = big.len();
        let rounds: usize = std::env::var("APPEND_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
        let many: usize = std::env::var("APPEND_BENCH_APPENDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
        let modes = direct_io_modes();
        let mut ratios: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); modes.len()];
        for round in 1..=rounds {
            let raw_final = raw_buffered(&raw_file, total, false);
            let raw_each = raw_buffered(&raw_file, total, true);
            let direct = raw_direct(&raw_file, total, MIB, false);
            let direct_each = raw_direct(&raw_file, total, MIB, true);
            println!(
                "(a) round {round}: raw buffered + final fdatasync {raw_final:.0} MiB/s, buffered + fdatasync per MiB {raw_each:.0}, O_DIRECT 1 MiB qd 1 + final fdatasync {}, O_DIRECT + fdatasync per MiB {}",
                direct.map_or("n/a".into(), |d| format!("{d:.0}")),
                direct_each.map_or("n/a".into(), |d| format!("{d:.0}")),
            );
            let raw = raw_final.max(raw_each).max(direct.unwrap_or(0.0));
            let raw_durable = raw_each.max(direct_each.unwrap_or(0.0));
            for (m, &dio) in modes.iter().enumerate() {
                for threads in [1usize, many] {
                    let (bw, batches, took) = group_append(&dir, &format!("big{threads}"), &big, threads, total as u64, dio);
                    println!(
                        "(a) round {round}: group append of {big_len} B batches, {threads} appender(s), {}: {bw:.0} MiB/s ({batches} batches in {:.2} s) = {:.2}x best raw, {:.2}x best raw with fdatasync per MiB",
                        mode_name(dio),
                        took.as_secs_f64(),
                        bw / raw,
                        bw / raw_durable
                    );
                    if threads == many {
                        ratios[m].0.push(bw / raw);
                        ratios[m].1.push(bw / raw_durable);
                    }
                }
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        for (m, &dio) in modes.iter().enumerate() {
            let default = if dio == LogConfig::default().direct_io { ", the default" } else { "" };
            println!(
                "(a) {many} appenders, {}{default}, median of {rounds} rounds: {:.2}x best raw (goal >= 0.85x), {:.2}x best raw with fdatasync per MiB",
                mode_name(dio),
                median(&mut ratios[m].0),
                median(&mut ratios[m].1)
            );
        }
    }
    // (b) small batches, 8 appenders.
    if parts.contains('b') {
        // APPEND_BENCH_PREALLOC_KIB=1024 (comma list) and APPEND_BENCH_SECS pick the runs.
        let preallocs: Vec<u64> = std::env::var("APPEND_BENCH_PREALLOC_KIB")
            .map(|v| v.split(',').filter_map(|k| k.trim().parse::<u64>().ok()).map(|k| k << 10).collect())
            .unwrap_or_else(|_| vec![0, 1 << 20, 4 << 20]);
        let secs: f64 = std::env::var("APPEND_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0);
        for prealloc in preallocs {
            let (rps, bps, mbs, per) = small_appends(&dir, 8, secs, prealloc);
            println!(
                "(b) 8 appenders x 16 KiB batches ({per} x 100 B records), group, preallocate {} KiB: {:.2} M records/s, {bps:.0} batches/s, {mbs:.0} MiB/s (goal >= 3 M records/s)",
                prealloc >> 10,
                rps / 1e6
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
