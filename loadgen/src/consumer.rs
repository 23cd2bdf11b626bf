//! Consumers: one thread per (consumer, leader broker), each long-polling Fetch for its
//! partitions. End-to-end latency = receive time − the intended send time stamped in each
//! value's first 8 bytes (same host clock).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::client::Conn;
use crate::encode::for_each_value;
use crate::rate::Clock;
use crate::stats::{LocalRecorder, Metrics};

pub struct ConsumerSpec {
    pub addr: SocketAddr,
    pub topic: String,
    /// (partition id, starting offset).
    pub partitions: Vec<(i32, i64)>,
    pub max_wait_ms: i32,
}

/// Fetch until `metrics.stop` (or `done`) is set. Errors are counted; a lost connection is fatal.
pub fn run_consumer(spec: ConsumerSpec, clock: Clock, metrics: Arc<Metrics>, done: Arc<std::sync::atomic::AtomicBool>) {
    let mut conn = match Conn::connect(spec.addr, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => return metrics.fail(e),
    };
    let mut offsets = spec.partitions.clone();
    let mut part_max: i32 = 8 << 20;
    let mut rec = LocalRecorder::new();
    let mut rec_other = LocalRecorder::new();
    let mut flush_seen = metrics.flush_req.load(Ordering::SeqCst);
    while !metrics.stopped() && !done.load(Ordering::Relaxed) {
        let resp = match conn.fetch(&spec.topic, &offsets, spec.max_wait_ms, part_max) {
            Ok(r) => r,
            Err(e) => {
                if !metrics.stopped() && !done.load(Ordering::Relaxed) {
                    metrics.fail(format!("consumer: {e}"));
                }
                return;
            }
        };
        let now_ns = clock.now_ns();
        let now_us = clock.wall_us(now_ns);
        // Records stamped inside the measured window go to the measured histogram.
        let (from, until) = metrics.window();
        let (from_us, until_us) = (clock.wall_us(from), if until == u64::MAX { u64::MAX } else { clock.wall_us(until) });
        let mut got = 0u64;
        let mut bytes = 0u64;
        let mut stuck = false;
        {
            for t in &resp.responses {
                for p in &t.partitions {
                    let Some(slot) = offsets.iter_mut().find(|(id, _)| *id == p.partition_index) else { continue };
                    if p.error_code != 0 {
                        metrics.errors.fetch_add(1, Ordering::Relaxed);
                        if p.error_code == 1 {
                            // OFFSET_OUT_OF_RANGE: restart from the log start.
                            slot.1 = p.log_start_offset.max(0);
                        }
                        continue;
                    }
                    let Some(records) = &p.records else { continue };
                    let (n, whole, next) = for_each_value(records, |v| {
                        bytes += v.len() as u64;
                        if metrics.record_latency && v.len() >= 8 {
                            let stamp = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                            let r = if stamp >= from_us && stamp < until_us { &mut rec } else { &mut rec_other };
                            r.record_us(now_us.saturating_sub(stamp));
                        }
                    });
                    got += n;
                    if let Some(next) = next {
                        slot.1 = slot.1.max(next);
                    }
                    if whole == 0 && !records.is_empty() {
                        stuck = true;
                    }
                }
            }
        }
        if stuck && part_max < (256 << 20) {
            part_max *= 2; // a batch larger than the partition limit: ask for more
        }
        // Counts first, then samples: whoever sees the count caught up and then asks for a
        // flush (flush_req) gets every sample of those records.
        metrics.consumed.fetch_add(got, Ordering::SeqCst);
        metrics.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
        let req = metrics.flush_req.load(Ordering::SeqCst);
        let force = req != flush_seen;
        rec.maybe_flush(&metrics.e2e, now_ns, force);
        rec_other.maybe_flush(&metrics.e2e_other, now_ns, force);
        if force {
            flush_seen = req;
            metrics.flush_acks.fetch_add(1, Ordering::SeqCst);
        }
    }
    rec.maybe_flush(&metrics.e2e, 0, true);
    rec_other.maybe_flush(&metrics.e2e_other, 0, true);
    metrics.flush_acks.fetch_add(1, Ordering::SeqCst);
}
