//! How long `Partition::open` takes on a large log, from a warm and from a cold page cache.
//!
//!     cargo run --release -p engine --example open_bench -- <dir> <GiB> [idempotent]
//!
//! Writes a log of <GiB> GiB (16 KiB batches of 149 × 100 B records, 1 GiB segments; with
//! `idempotent`, from 4 idempotent producers), closes it, opens it twice (warm), then drops the
//! page cache (`/proc/sys/vm/drop_caches`, needs root; skipped otherwise) and opens it again.
//! `OPEN_BENCH_REUSE=1` reopens the log already in <dir> instead of writing it.
//! Figures: engine/PERF_NOTES.md, "Open time".

use std::sync::Arc;
use std::time::Instant;

use engine::io::{Io, UringIo};
use engine::log::{Durability, LogConfig, Notifier, Partition};
use engine::record::build;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(gib)) = (args.next(), args.next().and_then(|g| g.parse::<u64>().ok())) else {
        eprintln!("usage: open_bench <dir> <GiB> [idempotent]");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let idempotent = args.next().as_deref() == Some("idempotent");
    let reuse = std::env::var("OPEN_BENCH_REUSE").is_ok_and(|v| v == "1");
    let cfg = LogConfig { durability: Durability::Never, retention_ms: None, ..LogConfig::default() };
    let io: Arc<dyn Io> = Arc::new(UringIo);
    let open = || Partition::open("open_bench", 0, &dir, io.clone(), cfg.clone(), Arc::new(Notifier::default())).expect("open");
    if !reuse {
        let _ = std::fs::remove_dir_all(&dir);
        let p = open();
        let value = [7u8; 100];
        let recs: Vec<build::Rec<'_>> = (0..149).map(|_| build::Rec { key: None, value: Some(&value), timestamp_delta: 0 }).collect();
        let plain = build::batch_with(&recs, 0, -1, -1, -1);
        let n = (gib << 30) / plain.len() as u64;
        let t = Instant::now();
        for i in 0..n {
            let mut b = if idempotent {
                build::batch_with(&recs, 0, 1000 + (i % 4) as i64, 0, ((i / 4) * 149) as i32)
            } else {
                plain.clone()
            };
            p.append(&mut b).expect("append");
        }
        p.close().expect("close");
        println!("wrote {n} batches ({} segments) in {:.1} s", p.segment_count(), t.elapsed().as_secs_f64());
    }
    for k in 1..=2 {
        let t = Instant::now();
        let p = open();
        println!("open {k}, warm page cache: {:.3} s (log end {})", t.elapsed().as_secs_f64(), p.log_end_offset());
    }
    let dropped = std::process::Command::new("sh")
        .args(["-c", "sync && echo 3 > /proc/sys/vm/drop_caches"])
        .status()
        .is_ok_and(|s| s.success());
    if !dropped {
        println!("cannot drop the page cache (needs root): no cold figure");
        return;
    }
    let t = Instant::now();
    let p = open();
    println!("open, cold page cache: {:.3} s (log end {})", t.elapsed().as_secs_f64(), p.log_end_offset());
}
