//! How a Fetch response's record ranges are best sent, by range size: every range sendfile'd
//! (`CopyPolicy::NONE`) against every range copied from the page cache into the frame's bytes,
//! over a loopback socket (a reader thread drains it). Prints the process CPU (utime+stime, both
//! threads) per range and per MiB, so the copy threshold of `CopyPolicy::DEFAULT` can be chosen
//! by measurement (results/net/2026-12-07.md, section "c (again)").
//!
//!   cargo run --release -p zl-wire --example fetch_copy [-- SECONDS_PER_CASE]
use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use zl_io::Io;
use zl_log::FileRange;
use zl_wire::fetch::{self, CopyPolicy, PartitionData, TopicData};

fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let f: Vec<&str> = s[s.rfind(')').expect("stat") + 2..].split(' ').collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2.0);
    let hz = 100.0; // CLK_TCK on Linux
    let dir = tempfile::tempdir().expect("tempdir");
    let f = zl_io::UringIo.open(&dir.path().join("seg"), true).expect("open");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    std::thread::spawn(move || {
        let mut c = client;
        let mut buf = vec![0u8; 1 << 20];
        while c.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
    });
    let ranges_per_frame = 64usize;
    println!("range_bytes policy      us_cpu_per_range ms_cpu_per_MiB");
    for size in [256usize, 1 << 10, 4 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10] {
        let data = vec![7u8; size * ranges_per_frame];
        f.write_at(&data, 0).expect("write");
        let ranges: Vec<FileRange> = (0..ranges_per_frame)
            .map(|i| FileRange { file: f.clone(), position: (i * size) as u64, len: size as u64 })
            .collect();
        let topics = || {
            vec![TopicData {
                name: "t".into(),
                partitions: ranges
                    .iter()
                    .enumerate()
                    .map(|(p, r)| PartitionData { partition: p as i32, error_code: 0, high_watermark: 1, last_stable_offset: -1, log_start_offset: 0, aborted: None, records: vec![r.clone()] })
                    .collect(),
            }]
        };
        for (name, policy) in [("sendfile", CopyPolicy::NONE), ("copy", CopyPolicy { copy_below: u64::MAX, copy_max: u64::MAX })] {
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let t0 = cpu_ticks();
            let mut frames = 0u64;
            while Instant::now() < end {
                let frame = fetch::build_with(1, 12, 0, topics(), policy);
                frame.send(server.as_raw_fd()).expect("send");
                frames += 1;
            }
            let cpu = (cpu_ticks() - t0) as f64 / hz;
            let n = (frames * ranges_per_frame as u64) as f64;
            let mib = n * size as f64 / (1 << 20) as f64;
            println!("{size:>11} {name:<11} {:>16.2} {:>14.3}", cpu * 1e6 / n, cpu * 1e3 / mib);
        }
    }
}
