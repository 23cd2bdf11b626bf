//! Discarding sink: a [`Transport`] that acknowledges every batch as soon as it is handed over
//! (after an optional stall), without a broker. It measures the generator itself: schedule,
//! keys, payload copy, batch encoding with CRC, and latency recording.

use std::sync::Arc;

use crate::producer::{record_ack, Ready, Spare, Transport};
use crate::rate::{sleep_until, Clock};
use crate::stats::{AckRecorder, Metrics};

pub struct SinkTransport {
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// If set: the first send at or after `.0` blocks until `.1` (clock ns), like a broker that
    /// stops reading its socket. Used to show coordinated omission is accounted for.
    pub stall: Option<(u64, u64)>,
    pub batches: u64,
    pub bytes: u64,
    publish: AckRecorder,
}

impl SinkTransport {
    pub fn new(clock: Clock, metrics: Arc<Metrics>) -> SinkTransport {
        SinkTransport { clock, metrics, stall: None, batches: 0, bytes: 0, publish: AckRecorder::new() }
    }
}

impl Transport for SinkTransport {
    fn can_send(&self, _p: u32) -> bool {
        true
    }
    fn send(&mut self, batches: Vec<Ready>, spare: &mut Spare) -> Result<(), String> {
        if let Some((from, until)) = self.stall {
            if self.clock.now_ns() >= from {
                sleep_until(&self.clock, until);
                self.stall = None;
            }
        }
        let ack = self.clock.now_ns();
        for r in batches {
            self.batches += 1;
            self.bytes += r.batch.len() as u64;
            std::hint::black_box(&r.batch);
            record_ack(&self.metrics, &mut self.publish, ack, &r.intended, r.value_bytes);
            spare.put_buf(r.batch);
            spare.put_intended(r.intended);
        }
        self.publish.maybe_flush(&self.metrics, ack, false);
        Ok(())
    }
    fn idle(&self) -> bool {
        true
    }
    /// No broker grants an id: an idempotent run against the sink encodes producer id 0, epoch
    /// 0 and real sequences, so the generator's cost is the same as against a broker.
    fn producer_identity(&self) -> Option<(i64, i16)> {
        Some((0, 0))
    }
}

impl Drop for SinkTransport {
    fn drop(&mut self) {
        self.publish.maybe_flush(&self.metrics, 0, true);
    }
}
