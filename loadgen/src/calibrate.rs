//! Calibration: hardware ceilings measured in the same run (~2 s): sequential write bandwidth and
//! fdatasync latency of the data directory's disk, loopback TCP bandwidth, memory copy bandwidth.
//! Results carry `efficiency` = measured / ceiling, which survives noisy machines better than
//! raw figures.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::results::{Calibration, CalibrationSpread};
use crate::stats::{new_hist, summarize};

/// Time budgets per measurement.
pub struct Budget {
    pub disk_bytes_max: u64,
    pub disk_time: Duration,
    pub fsync_time: Duration,
    pub fsync_count_max: u32,
    pub loopback_time: Duration,
    pub memcpy_time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            disk_bytes_max: 256 << 20,
            disk_time: Duration::from_millis(700),
            fsync_time: Duration::from_millis(500),
            fsync_count_max: 500,
            loopback_time: Duration::from_millis(500),
            memcpy_time: Duration::from_millis(250),
        }
    }
}

/// Each ceiling is measured this many times (interleaved, each with a third of the budget); the
/// result is the median and `spread` the (max - min) / median of the repeats. `loadgen compare`
/// does not normalize by a ceiling that spread more than 10%.
pub const REPEATS: usize = 3;

pub fn calibrate(data_dir: &Path, budget: &Budget) -> std::io::Result<Calibration> {
    let t0 = Instant::now();
    std::fs::create_dir_all(data_dir)?;
    let part = Budget {
        disk_bytes_max: budget.disk_bytes_max / REPEATS as u64,
        disk_time: budget.disk_time / REPEATS as u32,
        fsync_time: budget.fsync_time / REPEATS as u32,
        fsync_count_max: (budget.fsync_count_max / REPEATS as u32).max(5),
        loopback_time: budget.loopback_time / REPEATS as u32,
        memcpy_time: budget.memcpy_time / REPEATS as u32,
    };
    let (mut disk, mut fsync, mut loopback, mut memcpy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        disk.push(disk_seq_write(data_dir, &part)?);
        fsync.push(fdatasync_latency(data_dir, &part)?);
        loopback.push(loopback_bandwidth(part.loopback_time)?);
        memcpy.push(memcpy_bandwidth(part.memcpy_time));
    }
    let fsync_p50: Vec<f64> = fsync.iter().map(|l| l.p50).collect();
    // The fdatasync summary reported is the repeat with the median p50.
    let mid = {
        let mut idx: Vec<usize> = (0..fsync.len()).collect();
        idx.sort_by(|a, b| fsync_p50[*a].total_cmp(&fsync_p50[*b]));
        idx[idx.len() / 2]
    };
    Ok(Calibration {
        disk_seq_write_bytes_per_s: median(&disk),
        fdatasync_us: fsync[mid].clone(),
        loopback_bytes_per_s: median(&loopback),
        memcpy_bytes_per_s: median(&memcpy),
        data_dir: data_dir.display().to_string(),
        took_s: t0.elapsed().as_secs_f64(),
        spread: Some(CalibrationSpread {
            repeats: REPEATS as u32,
            disk_seq_write: spread(&disk),
            fdatasync_p50: spread(&fsync_p50),
            loopback: spread(&loopback),
            memcpy: spread(&memcpy),
        }),
    })
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// (max - min) / median of the repeats.
pub fn spread(xs: &[f64]) -> f64 {
    let m = median(xs);
    let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    if m > 0.0 {
        (hi - lo) / m
    } else {
        f64::INFINITY
    }
}

/// Write 1 MiB chunks until the byte or time budget runs out, then fdatasync; bandwidth counts
/// the sync (the data must reach the disk, not only the page cache).
fn disk_seq_write(dir: &Path, b: &Budget) -> std::io::Result<f64> {
    let f = tempfile::NamedTempFile::new_in(dir)?;
    let mut file = f.as_file();
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut written = 0u64;
    while written < b.disk_bytes_max && t.elapsed() < b.disk_time {
        file.write_all(&chunk)?;
        written += chunk.len() as u64;
        if written.is_multiple_of(32 << 20) {
            file.sync_data()?;
        }
    }
    file.sync_data()?;
    Ok(written as f64 / t.elapsed().as_secs_f64())
}

/// 4 KiB append + fdatasync, repeated.
fn fdatasync_latency(dir: &Path, b: &Budget) -> std::io::Result<crate::results::Latency> {
    let f = tempfile::NamedTempFile::new_in(dir)?;
    let mut file = f.as_file();
    let block = vec![0xa5u8; 4096];
    let mut h = new_hist();
    let t = Instant::now();
    let mut n = 0;
    while n < b.fsync_count_max && (t.elapsed() < b.fsync_time || n < 5) {
        file.write_all(&block)?;
        let s = Instant::now();
        file.sync_data()?;
        h.saturating_record(s.elapsed().as_micros() as u64);
        n += 1;
    }
    Ok(summarize(&h))
}

/// One TCP connection over 127.0.0.1, 1 MiB writes, receiver discards.
fn loopback_bandwidth(time: Duration) -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let chunk = vec![1u8; 1 << 20];
    let t = Instant::now();
    while t.elapsed() < time {
        s.write_all(&chunk)?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let total = reader.join().map_err(|_| std::io::Error::other("loopback reader panicked"))??;
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

/// Copy a 32 MiB buffer (beyond the caches) repeatedly.
pub fn memcpy_bandwidth(time: Duration) -> f64 {
    let src = vec![7u8; 32 << 20];
    let mut dst = vec![0u8; 32 << 20];
    let t = Instant::now();
    let mut bytes = 0u64;
    while t.elapsed() < time || bytes == 0 {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        bytes += src.len() as u64;
    }
    bytes as f64 / t.elapsed().as_secs_f64()
}
