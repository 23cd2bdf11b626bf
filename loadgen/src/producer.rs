//! The open-loop generator: one thread per producer. Records are created on their intended
//! schedule ([`crate::rate::Schedule`]) whatever the broker does; they are batched per partition
//! (by size and linger) and handed to a [`Transport`] that pipelines requests with a bounded
//! in-flight window per partition. A slow broker shows up as queueing, which the latency
//! measured from the intended send time includes (coordinated-omission-correct).
//!
//! Bounds: at most `BURST_MAX` records per loop iteration; queued (closed, unsent) batches are
//! bounded by `queued_bytes_max` — beyond it the generator stops generating and the schedule
//! runs ahead, which shows up in `delay` and publish latency.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::encode::{BatchBuilder, KeyGen, PayloadPool};
use crate::rate::{sleep_until, Clock, Schedule};
use crate::stats::{lock, AckRecorder, LocalRecorder, Metrics, HIST_MAX_US};

/// A closed batch ready to send.
pub struct Ready {
    /// Index into the producer's partition list.
    pub partition: u32,
    pub batch: Vec<u8>,
    pub intended: Vec<u64>,
    pub value_bytes: u64,
}

/// Buffers handed back by a transport for reuse (bounded).
#[derive(Default)]
pub struct Spare {
    pub bufs: Vec<Vec<u8>>,
    pub intended: Vec<Vec<u64>>,
}

impl Spare {
    const MAX: usize = 64;
    pub fn put_buf(&mut self, b: Vec<u8>) {
        if self.bufs.len() < Self::MAX {
            self.bufs.push(b);
        }
    }
    pub fn put_intended(&mut self, v: Vec<u64>) {
        if self.intended.len() < Self::MAX {
            self.intended.push(v);
        }
    }
}

/// Where batches go: a Kafka connection set, or a discarding sink.
pub trait Transport {
    /// Whether partition `p` may have another request in flight.
    fn can_send(&self, p: u32) -> bool;
    /// Send these batches (one request per broker). May block on socket backpressure. Buffers
    /// it no longer needs go to `spare`.
    fn send(&mut self, batches: Vec<Ready>, spare: &mut Spare) -> Result<(), String>;
    /// Nothing is in flight any more (all sent batches acknowledged or failed).
    fn idle(&self) -> bool;
    /// The drain deadline (clock ns): a send blocked by a broker that stopped reading must
    /// give up by then (the producer accounts what was not sent).
    fn set_deadline(&mut self, _deadline_ns: u64) {}
    /// Work the transport has to do on the producer thread besides `send` (the idempotent
    /// producer's retries); called on every iteration of the producer loop.
    fn poll(&mut self, _spare: &mut Spare) -> Result<(), String> {
        Ok(())
    }
    /// The idempotent producer's (id, epoch) granted by the broker, if any.
    fn producer_identity(&self) -> Option<(i64, i16)> {
        None
    }
    /// Transactional producer: end the open transaction (called when every batch of it was
    /// answered: commit, or abort when a Produce of it failed). The transport accounts its
    /// records (acknowledged only at the commit's answer).
    fn end_transaction(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// What one producer does.
pub struct ProducerSpec {
    pub partitions: u32,
    pub schedule: Schedule,
    /// No record is intended at or after this clock reading.
    pub end_ns: u64,
    /// Give up waiting for acks at this clock reading.
    pub drain_deadline_ns: u64,
    pub batch_bytes: usize,
    pub linger_ns: u64,
    pub queued_bytes_max: usize,
    /// Set to stop generating early (backlog built, search trial over); the batches already
    /// made are still sent and acknowledged.
    pub halt: Arc<std::sync::atomic::AtomicBool>,
    /// Compression, acks, idempotence, headers ([`ProducerSettings::default`] = none of them).
    pub settings: crate::produce::ProducerSettings,
}

const BURST_MAX: u64 = 4096;
/// Deferred generation wakes this long before an open batch's linger deadline (generating a
/// deferred millisecond of records takes ~0.1-0.2 ms on this VM).
const LINGER_MARGIN_NS: u64 = 250_000;

/// Stamp each record with its intended wall-clock time only if consumers will read it;
/// stamping is part of the generated value either way (cost is one 8-byte store).
pub fn run_producer<T: Transport>(
    spec: &ProducerSpec,
    keys: &mut KeyGen,
    pool: &PayloadPool,
    clock: &Clock,
    metrics: &Arc<Metrics>,
    transport: &mut T,
) -> Result<u64, String> {
    let n_parts = spec.partitions as usize;
    let format = crate::encode::BatchFormat {
        codec: spec.settings.codec,
        headers: spec.settings.headers_section(),
        producer_id: transport.producer_identity().map_or(-1, |(id, _)| id),
        producer_epoch: transport.producer_identity().map_or(-1, |(_, e)| e),
        transactional: spec.settings.transaction_records > 0,
    };
    // Transactional producer: the transaction open covers the schedule's records up to
    // `txn_end` (exclusive); generation stops there until the transaction has ended (every batch
    // of it answered, then EndTxn) — the schedule runs on, and the wait shows in latency.
    let txn_n = spec.settings.transaction_records;
    let mut txn_end = if txn_n > 0 { txn_n } else { u64::MAX };
    let mut txn_open = false;
    if spec.settings.idempotent && format.producer_id < 0 && !metrics.stopped() {
        return Err("idempotent producer: the transport has no producer id (InitProducerId was not done)".into());
    }
    let mut open: Vec<BatchBuilder> =
        (0..n_parts).map(|_| BatchBuilder::with_format(spec.batch_bytes.min(1 << 20), format.clone())).collect();
    // Partitions with an open batch, in the order their batch was opened (oldest first).
    let mut open_order: VecDeque<(u32, u64)> = VecDeque::new();
    // Closed batches waiting to be sent, one FIFO per partition, and the partitions that have
    // one (each listed once). Hand-written on the measured hot path (issue 19): the send pass
    // visits only partitions with a waiting batch and takes at most one batch from each, so a
    // partition whose in-flight window is full costs one check per iteration however many of
    // its batches wait — the former single queue was popped and re-pushed whole on every
    // iteration (O(queued batches), up to 64 MiB / batch size of them under load).
    let mut ready = ReadyQueues::new(n_parts);
    // Open batches past their linger (partition, opened_ns): closed in the send pass as soon as
    // their partition can send, held open and growing until then (see the linger pass).
    let mut held: Vec<(u32, u64)> = Vec::new();
    let mut queued_bytes = 0usize;
    let mut next_i: u64 = 0;
    let mut delay = LocalRecorder::new();
    let mut pool_i: u64 = 0;
    // Deferred generation (no key, no transaction, no batch waiting on a window): with one open
    // batch per producer, a record generated before that batch must close (it fills, lingers
    // out, or production ends) is on the wire no sooner than one generated at that moment, so
    // the loop sleeps until then (at most 1 ms) instead of waking for every record due (measured
    // 4,400 wake-ups/s per producer at 1.25 M rec/s, a quarter of its CPU in context switches on
    // this VM). It wakes `LINGER_MARGIN_NS` before a linger deadline, so the records deferred
    // until then are generated before the batch is due, not while it waits. Records keep their
    // intended times (latency is measured from them); a deferred record's batch lingers from
    // that record's intended time (and carries that wall-clock time), and `delay` counts a
    // deferred record late only past the planned wake-up (`needed_from`).
    let lazy = keys.is_sticky() && txn_n == 0;
    let record_bytes_max = (pool.max_len() + format.headers.len() + 18).max(1);
    let mut needed_from: u64 = 0;

    let mut spare = Spare::default();
    let buf_cap = spec.batch_bytes.min(1 << 20) + 1024;
    let close = |p: u32,
                 open: &mut Vec<BatchBuilder>,
                 ready: &mut ReadyQueues,
                 queued_bytes: &mut usize,
                 spare: &mut Spare| {
        let next = spare.bufs.pop().unwrap_or_else(|| Vec::with_capacity(buf_cap));
        let next_intended = spare.intended.pop().unwrap_or_default();
        let (batch, intended, value_bytes) = open[p as usize].finish_into(next, next_intended);
        if let Some(c) = open[p as usize].last_compression {
            metrics.producer.add_compression(c.records, c.raw_bytes, c.compressed_bytes, c.ns);
        }
        *queued_bytes += batch.len();
        ready.push(Ready { partition: p, batch, intended, value_bytes });
    };

    // Records the schedule intends before `end_ns`; a halt (or Ctrl-C, or a fatal error) cuts
    // the schedule where generation stopped. Records due but not generated by the drain
    // deadline are `not_sent`: generation catches up after `end_ns` (a late generator is
    // measured from the intended times) until the deadline.
    let mut limit = spec.schedule.due_by(spec.end_ns.saturating_sub(1));
    let mut halted = false;
    let mut failure = None;
    let (from, until) = metrics.window();
    transport.set_deadline(spec.drain_deadline_ns);
    // Who limits the run (the result's `generator` block): thread CPU, queue depth and
    // window waits (time-weighted, one multiply-add per iteration), generation lag.
    let cpu0 = crate::run::thread_cpu_s();
    let t0 = clock.now_ns();
    let mut load = crate::produce::ProducerLoad {
        start_ns: spec.schedule.intended_ns(0),
        rate: spec.schedule.rate,
        queue_bound_bytes: spec.queued_bytes_max as u64,
        ..Default::default()
    };
    let (mut last_t, mut queue_area, mut wait_ns) = (t0, 0f64, 0u64);
    let mut lag_end_taken = false;
    // The last send pass left a batch whose in-flight window was full (target back-pressure).
    let mut refused = false;
    'gen: loop {
        transport.poll(&mut spare)?;
        let now = clock.now_ns();
        let dt = now.saturating_sub(last_t);
        last_t = now;
        queue_area += queued_bytes as f64 * dt as f64;
        if refused {
            wait_ns += dt; // a batch waited on its window since the last send pass
        }
        if !halted && (metrics.stopped() || spec.halt.load(Ordering::Relaxed)) {
            halted = true;
            limit = next_i;
        }
        if now >= spec.drain_deadline_ns || metrics.stopped() {
            break;
        }
        let producing = next_i < limit;
        let mut generated = 0u64;
        if producing && queued_bytes < spec.queued_bytes_max {
            let due = spec.schedule.due_by(now).min(limit).min(txn_end);
            let burst = due.saturating_sub(next_i).min(BURST_MAX);
            if burst > 0 {
                let now_ms = (clock.wall_us(now) / 1000) as i64;
                for k in 0..burst {
                    let i = next_i + k;
                    let intended = spec.schedule.intended_ns(i);
                    // A deferred record opens its batch at its intended time.
                    let deferred = intended < needed_from;
                    let open_at = if deferred { intended } else { now };
                    let (key, p) = keys.next_key();
                    let b = &mut open[p as usize];
                    let open_ms = if deferred && b.is_empty() { (clock.wall_us(intended) / 1000) as i64 } else { now_ms };
                    if b.is_empty() {
                        open_order.push_back((p, open_at));
                    }
                    pool_i = pool_i.wrapping_add(1);
                    let key_bytes = key.map(|k| keys.key(k));
                    b.append(key_bytes, pool.get(pool_i), clock.wall_us(intended), intended, open_at, open_ms);
                    if metrics.record_latency {
                        delay.record_ns(now.saturating_sub(intended.max(needed_from)));
                    }
                    if b.len_bytes() >= spec.batch_bytes {
                        close(p, &mut open, &mut ready, &mut queued_bytes, &mut spare);
                        if keys.is_sticky() {
                            keys.advance_sticky();
                        }
                    }
                }
                next_i += burst;
                generated = burst;
                if needed_from != 0 && spec.schedule.intended_ns(next_i) >= needed_from {
                    needed_from = 0; // every deferred record is generated
                }
                txn_open |= txn_n > 0;
                metrics.sent.fetch_add(burst, Ordering::Relaxed);
            }
        }
        let producing = next_i < limit;
        // The open transaction has all its records: close its batches, then end it.
        let txn_full = txn_open && (next_i >= txn_end || !producing);
        let lag = if producing { now.saturating_sub(spec.schedule.intended_ns(next_i)) } else { 0 };
        load.send_delay_max_ns = load.send_delay_max_ns.max(lag);
        if !lag_end_taken && (now >= spec.end_ns || !producing) {
            lag_end_taken = true;
            load.send_delay_end_ns = lag;
        }
        load.queue_max_bytes = load.queue_max_bytes.max(queued_bytes as u64);
        // Linger: batches that have waited long enough (or all, once production ended) are due.
        // A due batch is closed only when its partition can send (the send pass below); while
        // its in-flight window is full, or closed batches wait before it, it is held open: it
        // keeps taking records until the window has room or it reaches `batch_bytes`, as Kafka's
        // own producer (its record accumulator) lets a ready batch grow until the sender drains
        // it. Closing it at linger
        // regardless made batches of linger-size against a slow target (a replicated cluster,
        // one request per connection at a time): throughput fell to linger-sized batches per
        // round trip, and a 3-node Kafka that serves 20 k rec/s to ProducerPerformance served
        // this generator under 2 k rec/s.
        let flush_all = !producing || txn_full;
        while let Some(&(p, opened)) = open_order.front() {
            let b = &open[p as usize];
            if b.is_empty() || b.opened_ns != opened {
                open_order.pop_front(); // closed by size since
                continue;
            }
            if !flush_all && now < opened + spec.linger_ns {
                break;
            }
            open_order.pop_front();
            held.push((p, opened));
        }
        // Send what the in-flight windows allow, keeping per-partition order: one request per
        // pass, passes until no waiting batch's window has room (each pass takes at least one
        // batch, so at most `ready`'s batch count of them) — a batch sendable now never waits
        // for the next loop iteration.
        let mut sent_any = false;
        refused = false;
        loop {
            // Due batches whose partition can send now are closed and go in this pass.
            let mut k = 0;
            while k < held.len() {
                let (p, opened) = held[k];
                let b = &open[p as usize];
                if b.is_empty() || b.opened_ns != opened {
                    held.swap_remove(k); // closed by size since (a later batch lingers anew)
                } else if flush_all || (!ready.has(p) && transport.can_send(p)) {
                    held.swap_remove(k);
                    close(p, &mut open, &mut ready, &mut queued_bytes, &mut spare);
                    if keys.is_sticky() {
                        keys.advance_sticky();
                    }
                } else {
                    k += 1;
                }
            }
            if ready.is_empty() {
                break;
            }
            // One batch per partition per request; a partition's later batches wait behind its
            // first (order is kept), as do all batches of a partition whose window is full.
            let (out, refused_now) = ready.take_sendable(|p| transport.can_send(p));
            refused = refused_now;
            if out.is_empty() {
                break;
            }
            for r in &out {
                queued_bytes -= r.batch.len();
            }
            let mut n = [0u64; 2];
            for r in &out {
                for &t in &r.intended {
                    n[(t >= from && t < until) as usize] += 1;
                }
            }
            for (i, a) in metrics.acct.iter().enumerate() {
                a.sent.fetch_add(n[i], Ordering::Relaxed);
            }
            if let Err(e) = transport.send(out, &mut spare) {
                // The batches handed over are in the transport's pending list (timed out
                // when it closes); stop here and account the rest. A send cut off by the
                // drain deadline (a broker that stopped reading) is no failure of its own:
                // its records time out.
                if clock.now_ns() < spec.drain_deadline_ns {
                    failure = Some(e);
                }
                break 'gen;
            }
            sent_any = true;
        }
        // Waiting for the transaction's acks and end, or a held batch waiting for its window,
        // is the target's back-pressure (the result's window wait), not the generator's lateness.
        refused |= txn_full || !held.is_empty();
        delay.maybe_flush(&metrics.delay, now, false);
        if txn_full && ready.is_empty() && open_order.is_empty() && transport.idle() {
            if let Err(e) = transport.end_transaction() {
                failure = Some(e);
                break 'gen;
            }
            txn_open = false;
            txn_end = next_i.saturating_add(txn_n);
            continue;
        }
        if !producing && ready.is_empty() && open_order.is_empty() && held.is_empty() && !txn_full {
            // Drain: wait for the in-flight requests (the deadline is checked at the top).
            if transport.idle() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
            continue;
        }
        if generated == 0 && !sent_any {
            // Idle until the next record is due, the oldest open batch lingers out, or (when
            // blocked on the window) a short while for acks.
            // With the queue of closed batches full, the next record is already due (the
            // schedule runs ahead): waking at its time would spin on the clock until a window
            // frees (measured: 40 % of the thread in clock_gettime); wait for acks instead.
            let queue_full = queued_bytes >= spec.queued_bytes_max;
            let mut deferred = false;
            let due = spec.schedule.intended_ns(next_i);
            let mut wake = if txn_full {
                now + 50_000 // the transaction's acks, then its end
            } else if producing && !queue_full {
                if lazy && ready.is_empty() && held.is_empty() {
                    // The first record that may fill the sticky batch (or the last record of
                    // the schedule), and a new batch's linger.
                    let b = &open[keys.sticky_partition() as usize];
                    let room = spec.batch_bytes.saturating_sub(b.len_bytes());
                    let fill_i = (next_i + (room / record_bytes_max).saturating_sub(1) as u64).min(limit - 1);
                    let mut w = spec.schedule.intended_ns(fill_i).max(due);
                    if b.is_empty() {
                        w = w.min(due.saturating_add(spec.linger_ns.saturating_sub(LINGER_MARGIN_NS)));
                    }
                    deferred = w > due;
                    w
                } else {
                    due
                }
            } else {
                now + 100_000
            };
            if let Some(&(_, opened)) = open_order.front() {
                let linger_end = opened + spec.linger_ns;
                if deferred && linger_end <= wake {
                    // Generate what was deferred before the batch is due (see `lazy`).
                    wake = linger_end.saturating_sub(LINGER_MARGIN_NS).max(due);
                    deferred = wake > due;
                } else {
                    wake = wake.min(linger_end);
                }
            }
            if !ready.is_empty() || !held.is_empty() || queue_full {
                wake = wake.min(now + 50_000);
            }
            wake = wake.min(now + 1_000_000).min(spec.drain_deadline_ns);
            if deferred {
                needed_from = wake;
            }
            sleep_until(clock, wake);
        }
    }
    delay.maybe_flush(&metrics.delay, 0, true);
    let wall = clock.now_ns().saturating_sub(t0).max(1);
    load.wall_s = wall as f64 / 1e9;
    load.cpu_s = match (cpu0, crate::run::thread_cpu_s()) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    load.queue_mean_bytes = queue_area / wall as f64;
    load.window_wait_fraction = wait_ns as f64 / wall as f64;
    metrics.producer.add_load(load);
    // Account the schedule: every record intended is acknowledged, failed, timed out (counted
    // by the transport when it closes) or, from here, not sent.
    let end = clock.now_ns();
    let warm = if from == 0 { 0 } else { spec.schedule.due_by(from - 1).min(limit) };
    let upto = if until == u64::MAX { limit } else { spec.schedule.due_by(until - 1).min(limit) };
    metrics.acct[0].scheduled.fetch_add(limit - (upto - warm), Ordering::Relaxed);
    metrics.acct[1].scheduled.fetch_add(upto - warm, Ordering::Relaxed);
    for p in 0..n_parts as u32 {
        if !open[p as usize].is_empty() {
            close(p, &mut open, &mut ready, &mut queued_bytes, &mut spare);
        }
    }
    for r in ready.iter() {
        record_unacked(metrics, Unacked::NotSent, end, r.intended.iter().copied());
    }
    if next_i < limit {
        record_unsent_range(metrics, end, &spec.schedule, next_i, limit);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(next_i),
    }
}

/// Closed, unsent batches: a FIFO per partition plus the list of partitions that have one.
struct ReadyQueues {
    queues: Vec<VecDeque<Ready>>,
    /// Partitions with a non-empty queue, each once (`listed[p]`).
    active: Vec<u32>,
    listed: Vec<bool>,
    batches: usize,
}

impl ReadyQueues {
    fn new(n_parts: usize) -> ReadyQueues {
        ReadyQueues { queues: (0..n_parts).map(|_| VecDeque::new()).collect(), active: Vec::new(), listed: vec![false; n_parts], batches: 0 }
    }
    fn is_empty(&self) -> bool {
        self.batches == 0
    }
    /// Partition `p` has a closed batch waiting.
    fn has(&self, p: u32) -> bool {
        !self.queues[p as usize].is_empty()
    }
    fn push(&mut self, r: Ready) {
        let p = r.partition as usize;
        if !self.listed[p] {
            self.listed[p] = true;
            self.active.push(r.partition);
        }
        self.queues[p].push_back(r);
        self.batches += 1;
    }
    /// The oldest batch of every listed partition `can_send` allows (at most one each).
    /// O(partitions with a waiting batch); allocates only when something is sendable.
    /// Also says whether some partition's window refused.
    fn take_sendable(&mut self, mut can_send: impl FnMut(u32) -> bool) -> (Vec<Ready>, bool) {
        let mut out = Vec::new();
        let mut refused = false;
        let mut k = 0;
        while k < self.active.len() {
            let p = self.active[k];
            if !can_send(p) {
                refused = true;
                k += 1;
                continue;
            }
            let q = &mut self.queues[p as usize];
            if let Some(r) = q.pop_front() {
                self.batches -= 1;
                out.push(r);
            }
            if q.is_empty() {
                self.listed[p as usize] = false;
                self.active.swap_remove(k);
            } else {
                k += 1;
            }
        }
        (out, refused)
    }
    /// Every waiting batch (any order).
    fn iter(&self) -> impl Iterator<Item = &Ready> {
        self.queues.iter().flatten()
    }
}

/// Record the publish latency of an acknowledged batch: ack − intended, per record, into the
/// acknowledging thread's recorder (flushed to `metrics.publish` / `publish_other` by the
/// caller), and count the records in the accounting of their phase.
pub fn record_ack(metrics: &Metrics, rec: &mut AckRecorder, ack_ns: u64, intended: &[u64], value_bytes: u64) {
    let (from, until) = metrics.window();
    let mut inside = 0u64;
    for &t in intended {
        let w = t >= from && t < until;
        inside += w as u64;
        if metrics.record_latency {
            let r = if w { &mut rec.window } else { &mut rec.other };
            r.record_ns(ack_ns.saturating_sub(t));
        }
    }
    let n = intended.len() as u64;
    let in_time = ack_ns <= metrics.ack_cutoff_ns.load(Ordering::Relaxed);
    for (a, k) in [(&metrics.acct[1], inside), (&metrics.acct[0], n - inside)] {
        if k > 0 {
            a.acked.fetch_add(k, Ordering::Relaxed);
            if in_time {
                a.acked_in_time.fetch_add(k, Ordering::Relaxed);
            }
        }
    }
    metrics.acked.fetch_add(n, Ordering::Relaxed);
    metrics.acked_bytes.fetch_add(value_bytes, Ordering::Relaxed);
}

/// Account records written with acks=0: the broker answers nothing, so they are neither
/// acknowledged nor failed — counted apart (`written_no_ack`), with no latency.
pub fn record_written_no_ack(metrics: &Metrics, intended: &[u64]) {
    let (from, until) = metrics.window();
    let inside = intended.iter().filter(|&&t| t >= from && t < until).count() as u64;
    let n = intended.len() as u64;
    for (a, k) in [(&metrics.acct[1], inside), (&metrics.acct[0], n - inside)] {
        if k > 0 {
            a.written_no_ack.fetch_add(k, Ordering::Relaxed);
        }
    }
}

/// Which outcome a never-acknowledged record had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unacked {
    /// Answered with this Kafka error code (-1: the partition was missing from the answer).
    Failed(i16),
    /// Sent, never answered before the producer gave up.
    TimedOut,
    /// Never written to the transport.
    NotSent,
}

/// Account records that were not acknowledged: counted in their phase's `failed` /
/// `timed_out` / `not_sent`, and their censored latency (`at_ns` − intended) recorded in the
/// phase's censored histogram, so the tail is never silently cut.
pub fn record_unacked(metrics: &Metrics, how: Unacked, at_ns: u64, intended: impl IntoIterator<Item = u64>) {
    let (from, until) = metrics.window();
    let mut n = [0u64; 2];
    {
        let mut h = [lock(&metrics.censored[0]), lock(&metrics.censored[1])];
        // Consecutive records' intended times are 1/rate apart, so many share a µs value (tens
        // per µs at millions of records/s; a generator far behind its schedule gives up on
        // hundreds of millions here): equal values in a row are recorded at once.
        let mut run = (0usize, 0u64, 0u64); // (phase, µs, count)
        for t in intended {
            let i = (t >= from && t < until) as usize;
            n[i] += 1;
            let us = (at_ns.saturating_sub(t) / 1000).clamp(1, HIST_MAX_US);
            if run.2 > 0 && (run.0, run.1) == (i, us) {
                run.2 += 1;
            } else {
                if run.2 > 0 {
                    h[run.0].saturating_record_n(run.1, run.2);
                }
                run = (i, us, 1);
            }
        }
        if run.2 > 0 {
            h[run.0].saturating_record_n(run.1, run.2);
        }
    }
    count_unacked(metrics, how, n);
}

/// As [`record_unacked`] (`NotSent`) for the schedule's records `a..b`, never sent: the records
/// sharing a phase and a censored µs value are found from the schedule (`due_by`) and recorded
/// at once — O(distinct µs values), not O(records): a generator far behind its schedule gives
/// up on hundreds of millions of records here.
pub fn record_unsent_range(metrics: &Metrics, at_ns: u64, schedule: &Schedule, a: u64, b: u64) {
    if a >= b {
        return;
    }
    let (from, until) = metrics.window();
    let last_t = schedule.intended_ns(b - 1);
    let mut n = [0u64; 2];
    {
        let mut h = [lock(&metrics.censored[0]), lock(&metrics.censored[1])];
        let mut i = a;
        while i < b {
            let t = schedule.intended_ns(i);
            let ph = (t >= from && t < until) as usize;
            let us = (at_ns.saturating_sub(t) / 1000).clamp(1, HIST_MAX_US);
            // The latest intended time with this µs value: (at − t) / 1000 = us ⇔ t ≤ at − us·1000
            // (also for the clamped top value); 1 is every t above at − 2000.
            let same_us = if us == 1 { u64::MAX } else { at_ns - us * 1000 };
            let same_phase = if ph == 1 { until - 1 } else if t < from { from - 1 } else { u64::MAX };
            let max_t = same_us.min(same_phase);
            let j = if max_t >= last_t { b } else { schedule.due_by(max_t).clamp(i + 1, b) };
            h[ph].saturating_record_n(us, j - i);
            n[ph] += j - i;
            i = j;
        }
    }
    count_unacked(metrics, Unacked::NotSent, n);
}

/// Count `n` unacknowledged records per phase as `how`.
fn count_unacked(metrics: &Metrics, how: Unacked, n: [u64; 2]) {
    for (i, a) in metrics.acct.iter().enumerate() {
        if n[i] == 0 {
            continue;
        }
        let c = match how {
            Unacked::Failed(_) => &a.failed,
            Unacked::TimedOut => &a.timed_out,
            Unacked::NotSent => &a.not_sent,
        };
        c.fetch_add(n[i], Ordering::Relaxed);
    }
    if let Unacked::Failed(code) = how {
        metrics.errors.fetch_add(n[0] + n[1], Ordering::Relaxed);
        if n[1] > 0 {
            *metrics.failed_codes.lock().unwrap_or_else(|p| p.into_inner()).entry(code).or_default() += n[1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_hist;

    /// The censored histograms hold exactly the values recorded one by one (runs of equal µs
    /// recorded at once, across the window's edges), and the phase counts are right.
    #[test]
    fn unacked_records_censored_latency_exactly() {
        let m = Metrics::new(true);
        m.start_window(1_000_000, 3_000_000, u64::MAX);
        let at = 10_000_000_000u64;
        // 25 ns apart (40 M rec/s) across the window, plus scattered ones.
        let mut intended: Vec<u64> = (0..200_000u64).map(|i| i * 25).collect();
        intended.extend([7, 2_999_999, 3_000_000, 9_999_999_999, 10_000_000_000]);
        record_unacked(&m, Unacked::NotSent, at, intended.iter().copied());
        let mut want = [new_hist(), new_hist()];
        let mut n = [0u64; 2];
        for &t in &intended {
            let i = (1_000_000..3_000_000).contains(&t) as usize;
            n[i] += 1;
            want[i].saturating_record((at.saturating_sub(t) / 1000).clamp(1, HIST_MAX_US));
        }
        for i in 0..2 {
            assert!(*lock(&m.censored[i]) == want[i], "phase {i} histogram");
            assert_eq!(m.acct[i].not_sent.load(Ordering::Relaxed), n[i], "phase {i} count");
        }
        assert!(n[0] > 0 && n[1] > 0);
    }

    /// The range form records exactly what recording each record one by one records, for
    /// rates above and below 1 per µs, a fractional rate, window edges inside the range, a
    /// give-up instant before some intended times, and the clamped top value.
    #[test]
    fn unsent_range_equals_records_one_by_one() {
        let cases: [(u64, f64, u64, u64, u64, u64, u64); 6] = [
            // (start, rate, a, b, window from, window until, at)
            (1_000, 40e6, 0, 300_000, 2_000_000, 5_000_000, 9_000_000),
            (0, 333_333.3, 5, 3_000, 1_000_000, 4_000_000, 20_000_000),
            (500, 1e9, 0, 50_000, 0, u64::MAX, 40_000),
            (0, 2e6, 0, 20_000, 3_000_000, 6_000_000, 4_000_000),
            (0, 0.5, 0, 4, 0, 3_000_000_000, 7_300_000_000_000_000),
            (7, f64::INFINITY, 0, 1_000, 0, u64::MAX, 5_000_007),
        ];
        for (k, &(start, rate, a, b, from, until, at)) in cases.iter().enumerate() {
            let s = Schedule::new(start, rate);
            let (m1, m2) = (Metrics::new(true), Metrics::new(true));
            m1.start_window(from, until, u64::MAX);
            m2.start_window(from, until, u64::MAX);
            record_unsent_range(&m1, at, &s, a, b);
            record_unacked(&m2, Unacked::NotSent, at, (a..b).map(|i| s.intended_ns(i)));
            for i in 0..2 {
                assert!(*lock(&m1.censored[i]) == *lock(&m2.censored[i]), "case {k} phase {i} histogram");
                let (x, y) = (m1.acct[i].not_sent.load(Ordering::Relaxed), m2.acct[i].not_sent.load(Ordering::Relaxed));
                assert_eq!(x, y, "case {k} phase {i} count");
            }
            assert_eq!(lock(&m1.censored[0]).len() + lock(&m1.censored[1]).len(), b - a, "case {k}");
        }
    }
}
