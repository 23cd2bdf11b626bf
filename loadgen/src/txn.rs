//! The transactional producer (`transactionRecords` > 0): the transactional id's coordinator
//! (FindCoordinator key type 1), InitProducerId with the id, AddPartitionsToTxn before a
//! partition's first batch of each transaction, EndTxn when the transaction's records were all
//! acknowledged. A record counts as acknowledged only when its Produce was acknowledged AND its
//! transaction committed (latency: intended send time → commit answered); the records of an
//! aborted transaction are failed with the code that aborted it.
//!
//! Coordinator errors that clear by themselves (COORDINATOR_LOAD_IN_PROGRESS 14,
//! COORDINATOR_NOT_AVAILABLE 15, NOT_COORDINATOR 16 — the coordinator is looked up again —,
//! CONCURRENT_TRANSACTIONS 51) are retried for at most [`RETRY_MAX`] (and never past the drain
//! deadline); any other error (PRODUCER_FENCED 90, INVALID_PRODUCER_EPOCH 47,
//! INVALID_TXN_STATE 48, …) fails the run loudly, its records never acknowledged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::{Conn, Connector};
use crate::producer::{record_ack, record_unacked, Unacked};
use crate::rate::Clock;
use crate::stats::{AckRecorder, Metrics};

/// Transaction timeout asked for in InitProducerId (Kafka's producer default).
pub const TXN_TIMEOUT_MS: i32 = 60_000;
/// A coordinator refusal that clears by itself is retried this long at most.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Records acknowledged by their Produce and waiting for their transaction's end (shared with
/// the transport's ack readers).
#[derive(Debug, Default)]
pub struct TxnHeld {
    held: Mutex<Vec<(Vec<u64>, u64)>>,
    /// Produce-ack latency (intended send time → Produce answered, µs) of the held records,
    /// whole run; merged into `ProducerTotals::produce_ack_us` when the transport closes.
    produce_ack: Mutex<Option<crate::stats::Hist>>,
    /// The first error code a Produce of the open transaction was answered with (0: none): the
    /// transaction aborts.
    failed: AtomicI16,
}

impl TxnHeld {
    pub fn hold(&self, intended: Vec<u64>, value_bytes: u64, ack_ns: u64) {
        {
            let mut h = self.produce_ack.lock().unwrap_or_else(|p| p.into_inner());
            let h = h.get_or_insert_with(crate::stats::new_hist);
            for &t in &intended {
                h.saturating_record((ack_ns.saturating_sub(t) / 1000).clamp(1, crate::stats::HIST_MAX_US));
            }
        }
        self.held.lock().unwrap_or_else(|p| p.into_inner()).push((intended, value_bytes));
    }
    /// Hand the Produce-ack latencies recorded so far to the run's totals.
    pub fn flush_produce_ack(&self, m: &Metrics) {
        if let Some(h) = self.produce_ack.lock().unwrap_or_else(|p| p.into_inner()).take() {
            m.producer.add_produce_ack(&h);
        }
    }
    pub fn fail(&self, code: i16) {
        let code = if code == 0 { -1 } else { code };
        let _ = self.failed.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
    }
    fn take(&self) -> Vec<(Vec<u64>, u64)> {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()))
    }
    /// The transport closes with this transaction open: its acknowledged records were never
    /// committed — failed with the code a Produce of it got, else timed out.
    pub fn settle_unended(&self, m: &Metrics, at_ns: u64) {
        let code = self.failed.load(Ordering::SeqCst);
        let how = if code != 0 { Unacked::Failed(code) } else { Unacked::TimedOut };
        for (intended, _) in self.take() {
            record_unacked(m, how, at_ns, intended);
        }
    }
}

/// Why a coordinator request did not succeed.
enum CallErr {
    /// The drain deadline came first (a broker that stopped answering): not a failure of its own.
    Deadline(String),
    /// Refused (code) or unreachable for [`RETRY_MAX`]: fails the run.
    Fatal(i16, String),
}

/// One producer thread's transactional state.
pub struct Txn {
    pub id: String,
    pub held: Arc<TxnHeld>,
    connector: Connector,
    brokers: Vec<SocketAddr>,
    coord: Option<Conn>,
    /// index → added to the open transaction.
    added: Vec<bool>,
    any_added: bool,
    /// An AddPartitionsToTxn was cut off by the drain deadline: no batch is sent any more (the
    /// batches not sent already took their sequence numbers; one sent after them would be out
    /// of order).
    pub cut_off: bool,
    rec: AckRecorder,
}

fn code_name(c: i16) -> &'static str {
    match c {
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        47 => "INVALID_PRODUCER_EPOCH",
        48 => "INVALID_TXN_STATE",
        49 => "INVALID_PRODUCER_ID_MAPPING",
        50 => "INVALID_TRANSACTION_TIMEOUT",
        51 => "CONCURRENT_TRANSACTIONS",
        53 => "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        90 => "PRODUCER_FENCED",
        _ => "error",
    }
}

fn retriable(c: i16) -> bool {
    matches!(c, 14 | 15 | 16 | 51)
}

impl Txn {
    /// Find the coordinator of `id`, InitProducerId with it; `n` partitions. Returns the state
    /// and the (producer id, epoch).
    pub fn init(connector: &Connector, brokers: Vec<SocketAddr>, id: String, n: usize) -> Result<(Txn, (i64, i16)), String> {
        let mut t = Txn {
            id,
            held: Arc::new(TxnHeld::default()),
            connector: connector.clone(),
            brokers,
            coord: None,
            added: vec![false; n],
            any_added: false,
            cut_off: false,
            rec: AckRecorder::new(),
        };
        let deadline = std::time::Instant::now() + RETRY_MAX;
        let pid = loop {
            let id = t.id.clone();
            let r = t.coordinator().and_then(|c| c.init_producer_id_with(Some(&id), TXN_TIMEOUT_MS));
            match r {
                Ok(pid) => break pid,
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(format!("transactional id {:?}: InitProducerId: {e}", t.id));
                }
                Err(_) => {
                    t.coord = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        Ok((t, pid))
    }

    pub fn added(&self, idx: u32) -> bool {
        self.added[idx as usize]
    }

    /// The coordinator connection, looked up (FindCoordinator key type 1, asking the brokers
    /// in turn) when there is none.
    fn coordinator(&mut self) -> Result<&mut Conn, String> {
        if self.coord.is_none() {
            let mut last = format!("no broker of {:?} answered FindCoordinator", self.brokers);
            for b in &self.brokers {
                let Ok(mut c) = self.connector.connect_with_read_timeout(*b, Duration::from_secs(5), Duration::from_secs(10)) else { continue };
                let Some(v) = c.version(ApiKey::FindCoordinator) else {
                    last = format!("broker {b} does not support FindCoordinator v1..3");
                    continue;
                };
                let req = FindCoordinatorRequest::default().with_key(StrBytes::from(self.id.clone())).with_key_type(1);
                let r: FindCoordinatorResponse = match c.call(ApiKey::FindCoordinator, v, &req) {
                    Ok(r) => r,
                    Err(e) => {
                        last = e;
                        continue;
                    }
                };
                if r.error_code != 0 {
                    last = format!("FindCoordinator (transaction) refused by broker {b}: {} ({})", code_name(r.error_code), r.error_code);
                    continue;
                }
                let addr = crate::client::resolve(&format!("{}:{}", r.host, r.port))?;
                match self.connector.connect_with_read_timeout(addr, Duration::from_secs(5), Duration::from_secs(30)) {
                    Ok(cc) => {
                        self.coord = Some(cc);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            if self.coord.is_none() {
                return Err(last);
            }
        }
        Ok(self.coord.as_mut().expect("set above"))
    }

    /// One coordinator request, retried on the codes that clear by themselves; `code` reads
    /// the answer's error code.
    fn call<Q, R>(&mut self, key: ApiKey, req: &Q, code: impl Fn(&R) -> i16, clock: Clock, deadline_ns: u64) -> Result<R, CallErr>
    where
        Q: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
        R: kafka_protocol::protocol::Decodable + kafka_protocol::protocol::HeaderVersion,
    {
        let bound = clock.now_ns().saturating_add(RETRY_MAX.as_nanos() as u64);
        let give_up = bound.min(deadline_ns);
        let mut backoff_ms = 5u64;
        loop {
            let now = clock.now_ns();
            // Giving up because the drain deadline comes first is no failure of its own.
            let past = |what: String| if deadline_ns <= bound { CallErr::Deadline(what) } else { CallErr::Fatal(-1, what) };
            if now >= give_up {
                return Err(past(format!("{key:?} for transactional id {:?}: no answer in time", self.id)));
            }
            let attempt = match self.coordinator() {
                Ok(c) => {
                    let left = Duration::from_nanos(give_up.saturating_sub(now).max(1_000_000));
                    let _ = c.set_read_timeout(Some(left));
                    match c.version(key) {
                        Some(v) => c.call::<Q, R>(key, v, req),
                        None => return Err(CallErr::Fatal(35, format!("coordinator {} does not support {key:?} v0..", c.addr))),
                    }
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok(r) if code(&r) == 0 => return Ok(r),
                Ok(r) if retriable(code(&r)) => {
                    if matches!(code(&r), 15 | 16) {
                        self.coord = None;
                    }
                    if clock.now_ns() >= give_up {
                        let c = code(&r);
                        let what = format!("{key:?} for transactional id {:?} still refused: {} ({c})", self.id, code_name(c));
                        return Err(match past(what) {
                            CallErr::Fatal(_, w) => CallErr::Fatal(c, w),
                            d => d,
                        });
                    }
                }
                Ok(r) => {
                    let c = code(&r);
                    return Err(CallErr::Fatal(c, format!("{key:?} for transactional id {:?} refused: {} ({c})", self.id, code_name(c))));
                }
                Err(e) => {
                    // Connection lost or unanswered: look the coordinator up again.
                    self.coord = None;
                    if clock.now_ns() >= deadline_ns {
                        return Err(CallErr::Deadline(e));
                    }
                }
            }
            // Short: CONCURRENT_TRANSACTIONS is what Kafka answers AddPartitionsToTxn until the
            // previous transaction's markers are written (Kafka's producer retries it every 20 ms).
            let left = give_up.saturating_sub(clock.now_ns());
            std::thread::sleep(Duration::from_nanos((backoff_ms * 1_000_000).min(left)));
            backoff_ms = (backoff_ms * 2).min(20);
        }
    }

    /// AddPartitionsToTxn for these (index, partition id)s. On error: how their records count
    /// (timed out at the deadline, failed otherwise) and the message.
    pub fn add_partitions(
        &mut self,
        topic: &TopicName,
        parts: &[(u32, i32)],
        (pid, epoch): (i64, i16),
        clock: Clock,
        deadline_ns: u64,
    ) -> Result<(), (Unacked, String)> {
        let mut ids: Vec<i32> = parts.iter().map(|(_, p)| *p).collect();
        ids.sort_unstable();
        ids.dedup();
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from(self.id.clone())))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default().with_name(topic.clone()).with_partitions(ids)]);
        // The first per-partition error that is not OPERATION_NOT_ATTEMPTED (55: another
        // partition's error stopped it).
        let code = |r: &AddPartitionsToTxnResponse| {
            let codes = r.results_by_topic_v3_and_below.iter().flat_map(|t| t.results_by_partition.iter().map(|p| p.partition_error_code));
            let mut first = 0;
            for c in codes {
                if c != 0 && (first == 0 || first == 55) {
                    first = c;
                }
            }
            if first == 0 {
                r.error_code
            } else {
                first
            }
        };
        match self.call(ApiKey::AddPartitionsToTxn, &req, code, clock, deadline_ns) {
            Ok(_) => {
                for (i, _) in parts {
                    self.added[*i as usize] = true;
                }
                self.any_added = true;
                Ok(())
            }
            Err(CallErr::Deadline(e)) => {
                self.cut_off = true;
                Err((Unacked::TimedOut, e))
            }
            Err(CallErr::Fatal(c, e)) => Err((Unacked::Failed(c), e)),
        }
    }

    /// The producer closes with a transaction open (the drain deadline came first): abort it,
    /// as Kafka's producer does on close, so the broker need not wait for the transaction
    /// timeout (its records are already accounted as not acknowledged). One try, bounded by
    /// `wait`; a failure is only logged.
    pub fn abort_open(&mut self, (pid, epoch): (i64, i16), wait: Duration) {
        if !self.any_added {
            return;
        }
        self.any_added = false;
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from(self.id.clone())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(false);
        let Some(c) = self.coord.as_mut() else { return };
        let _ = c.set_read_timeout(Some(wait));
        let r = match c.version(ApiKey::EndTxn) {
            Some(v) => c.call::<_, EndTxnResponse>(ApiKey::EndTxn, v, &req).map(|r| r.error_code),
            None => return,
        };
        match r {
            Ok(0) => {}
            Ok(code) => tracing::warn!("transactional id {:?}: abort of the open transaction at close answered {} ({code})", self.id, code_name(code)),
            Err(e) => tracing::warn!("transactional id {:?}: abort of the open transaction at close: {e}", self.id),
        }
    }

    /// End the open transaction (nothing to do when it has no partition): commit when every
    /// Produce of it was acknowledged — its records then count as acknowledged at the commit's
    /// answer and the EndTxn round trip is the commit latency —, else abort (its records fail
    /// with the code). An EndTxn cut off by the drain deadline leaves the records timed out;
    /// a refusal fails the run.
    pub fn end(&mut self, (pid, epoch): (i64, i16), metrics: &Arc<Metrics>, clock: Clock, deadline_ns: u64) -> Result<(), String> {
        if !self.any_added {
            return Ok(());
        }
        let code = self.held.failed.swap(0, Ordering::SeqCst);
        let held = self.held.take();
        let commit = code == 0;
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from(self.id.clone())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        let t0 = clock.now_ns();
        let r = self.call(ApiKey::EndTxn, &req, |r: &EndTxnResponse| r.error_code, clock, deadline_ns);
        let at = clock.now_ns();
        self.added.iter_mut().for_each(|a| *a = false);
        self.any_added = false;
        match r {
            Ok(_) if commit => {
                for (intended, value_bytes) in &held {
                    record_ack(metrics, &mut self.rec, at, intended, *value_bytes);
                }
                self.rec.maybe_flush(metrics, at, true);
                metrics.producer.add_commit(at - t0);
                Ok(())
            }
            Ok(_) => {
                for (intended, _) in held {
                    record_unacked(metrics, Unacked::Failed(code), at, intended);
                }
                metrics.producer.txn_aborted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(CallErr::Deadline(_)) => {
                self.cut_off = true;
                for (intended, _) in held {
                    record_unacked(metrics, Unacked::TimedOut, at, intended);
                }
                Ok(())
            }
            Err(CallErr::Fatal(c, e)) => {
                let how = if commit { Unacked::Failed(c) } else { Unacked::Failed(code) };
                for (intended, _) in held {
                    record_unacked(metrics, how, at, intended);
                }
                let e = format!("transaction not {}: {e}", if commit { "committed" } else { "aborted" });
                metrics.fail(e.clone());
                Err(e)
            }
        }
    }
}
