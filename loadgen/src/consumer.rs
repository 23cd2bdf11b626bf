//! Consumers: one thread per (consumer, leader broker), each long-polling Fetch for its
//! partitions (`consumerMode: fetch`), or group members (`consumerMode: group`, [`crate::group`]).
//! End-to-end latency = receive time − the intended send time stamped in each value's first 8
//! bytes (same host clock).
//!
//! [`ConsumerTotals`] is shared by every consumer of a run: per (subscription, topic, partition)
//! the high watermark last seen, the group's consumed position and committed offset (the lag
//! series), and the duplicate accounting: a record at an offset the subscription already consumed
//! (re-delivered after a rebalance from an older committed offset) counts in `duplicates`, never
//! in `consumed` or the end-to-end histograms.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_response::PartitionData;

use crate::client::Conn;
use crate::rate::Clock;
use crate::stats::{new_hist, Hist, LocalRecorder, Metrics};

/// Per (subscription, topic, partition) consumer state.
#[derive(Debug, Clone, Copy)]
pub struct PartState {
    /// Highest high watermark seen: Fetch answers and [`sample_high_watermarks`] (-1: none yet).
    pub high_watermark: i64,
    /// Next offset past the highest record the subscription consumed (its start offset before).
    pub consumed_to: i64,
    /// The group's committed offset (group mode; -1 in fetch mode).
    pub committed: i64,
}

/// Consumer-side counters of a run, shared by every consumer thread (in [`Metrics::consumer`]).
#[derive(Default)]
pub struct ConsumerTotals {
    pub parts: Mutex<HashMap<(u32, String, i32), PartState>>,
    /// Records fetched again at an offset their subscription had already consumed.
    pub duplicates: AtomicU64,
    /// Group mode: set by the run once every group is stable and measuring starts; rebalances
    /// after it count in [`GroupCounters::rebalances`].
    pub started: AtomicBool,
    /// Group mode: the group id of each subscription.
    pub group_ids: Mutex<Vec<String>>,
    /// Highest [`ConsumerTotals::lag`] seen by the sampler since the collector last took it.
    pub lag_peak: Mutex<(Option<i64>, Option<i64>)>,
    /// [`ConsumerTotals::lag`] once the consumers ended (after their final commits).
    pub final_lag: Mutex<Option<(Option<i64>, Option<i64>)>>,
    pub group: GroupCounters,
}

/// A group's generations synced before and after the start.
pub type Generations = (BTreeSet<i32>, BTreeSet<i32>);

/// Member slot → (group, generation, partitions assigned, ready: synced and fetched once).
pub type MemberStatus = HashMap<usize, (String, i32, usize, bool)>;

/// Group-protocol counters (group mode).
pub struct GroupCounters {
    /// Distinct (group, generation) synced before / after [`ConsumerTotals::started`].
    pub generations: Mutex<BTreeMap<String, Generations>>,
    /// Member rejoins after the start: JoinGroup sent → first Fetch answer after SyncGroup (µs).
    pub rebalance_us: Mutex<Hist>,
    pub member_rejoins: AtomicU64,
    /// OffsetCommit round trips (µs), commits answered without error / with an error.
    pub commit_us: Mutex<Hist>,
    pub commits: AtomicU64,
    pub commit_errors: AtomicU64,
    pub heartbeats: AtomicU64,
    /// Error answers and lost connections of the group path (and group members' fetches) by
    /// code; -1 = connection lost or no answer.
    pub errors_by_code: Mutex<BTreeMap<i16, u64>>,
    /// Member slot → (group, generation, partitions assigned, ready: synced and fetched once).
    pub members: Mutex<MemberStatus>,
}

impl Default for GroupCounters {
    fn default() -> Self {
        GroupCounters {
            generations: Mutex::new(BTreeMap::new()),
            rebalance_us: Mutex::new(new_hist()),
            member_rejoins: AtomicU64::new(0),
            commit_us: Mutex::new(new_hist()),
            commits: AtomicU64::new(0),
            commit_errors: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            errors_by_code: Mutex::new(BTreeMap::new()),
            members: Mutex::new(HashMap::new()),
        }
    }
}

pub(crate) fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConsumerTotals {
    /// Register a partition's start position (before any consumer fetches it).
    pub fn init_partition(&self, sub: u32, topic: &str, partition: i32, start: i64, group: bool) {
        locked(&self.parts).insert(
            (sub, topic.to_string(), partition),
            PartState { high_watermark: -1, consumed_to: start, committed: if group { start } else { -1 } },
        );
    }

    /// Σ over partitions of high watermark − consumed position, and (group mode) high
    /// watermark − committed offset; None when there is no partition (no consumers).
    pub fn lag(&self) -> (Option<i64>, Option<i64>) {
        let g = locked(&self.parts);
        if g.is_empty() {
            return (None, None);
        }
        let mut lag = 0i64;
        let mut committed = 0i64;
        let mut any_committed = false;
        for p in g.values() {
            if p.high_watermark < 0 {
                continue;
            }
            lag += (p.high_watermark - p.consumed_to).max(0);
            if p.committed >= 0 {
                any_committed = true;
                committed += (p.high_watermark - p.committed).max(0);
            }
        }
        (Some(lag), any_committed.then_some(committed))
    }

    /// Note the current lag in the peak the next [`ConsumerTotals::take_lag`] reports.
    pub fn sample_lag(&self) {
        let (l, c) = self.lag();
        let mut p = locked(&self.lag_peak);
        p.0 = p.0.max(l);
        p.1 = p.1.max(c);
    }

    /// The lag for one second of the series: the highest of the samples since the last call
    /// and now.
    pub fn take_lag(&self) -> (Option<i64>, Option<i64>) {
        self.sample_lag();
        std::mem::take(&mut *locked(&self.lag_peak))
    }

    pub fn set_committed(&self, sub: u32, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = locked(&self.parts).get_mut(&(sub, topic.to_string(), partition)) {
            p.committed = p.committed.max(offset);
        }
    }

    /// Count an error of the group path by code (and in the run's error count).
    pub fn group_error(&self, metrics: &Metrics, code: i16) {
        *locked(&self.group.errors_by_code).entry(code).or_insert(0) += 1;
        metrics.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A member synced `generation` of `group`.
    pub fn generation_synced(&self, group: &str, generation: i32) {
        let started = self.started.load(Ordering::SeqCst);
        let mut g = locked(&self.group.generations);
        let e = g.entry(group.to_string()).or_default();
        if !e.0.contains(&generation) && !e.1.contains(&generation) {
            if started { e.1.insert(generation) } else { e.0.insert(generation) };
        }
    }

    /// (generations before the start, rebalances after it), over all groups.
    pub fn generation_counts(&self) -> (u64, u64) {
        let g = locked(&self.group.generations);
        (g.values().map(|e| e.0.len() as u64).sum(), g.values().map(|e| e.1.len() as u64).sum())
    }

    /// Every registered member of each group in `groups` (with `members` members each) synced
    /// the same generation and fetched once, and every partition is assigned.
    pub fn groups_stable(&self, groups: &[(String, usize, usize)]) -> bool {
        let m = locked(&self.group.members);
        groups.iter().all(|(id, members, partitions)| {
            let mine: Vec<&(String, i32, usize, bool)> = m.values().filter(|x| &x.0 == id).collect();
            mine.len() == *members
                && mine.iter().all(|x| x.3 && x.1 == mine[0].1)
                && mine.iter().map(|x| x.2).sum::<usize>() == *partitions
        })
    }
}

/// Every `every`, until `done`: ListOffsets (latest = high watermark) of every partition from
/// its leader at the start, noted for every subscription. The lag series then also sees records
/// no consumer fetched yet (during a rebalance, or a consumer that fell behind), not only the
/// high watermark the consumers' own Fetch answers carry. A leader that does not answer is
/// skipped (the consumers' answers still update the partition).
pub fn sample_high_watermarks(
    connector: crate::client::Connector,
    topics: Vec<(String, Vec<(i32, SocketAddr)>)>,
    subs: u32,
    every: Duration,
    metrics: Arc<Metrics>,
    done: Arc<AtomicBool>,
) {
    let mut conns: HashMap<SocketAddr, Conn> = HashMap::new();
    // Counted among the run's consumer threads: answers flush requests (it records nothing).
    let mut flush_seen = metrics.flush_req.load(Ordering::SeqCst);
    while !metrics.stopped() && !done.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        for (topic, leaders) in &topics {
            let mut addrs: Vec<SocketAddr> = leaders.iter().map(|(_, a)| *a).collect();
            addrs.sort();
            addrs.dedup();
            for a in addrs {
                let parts: Vec<i32> = leaders.iter().filter(|(_, x)| *x == a).map(|(p, _)| *p).collect();
                let c = match conns.entry(a) {
                    std::collections::hash_map::Entry::Occupied(c) => c.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => match connector.connect_with_read_timeout(a, Duration::from_secs(1), Duration::from_secs(2)) {
                        Ok(c) => v.insert(c),
                        Err(_) => continue,
                    },
                };
                match c.list_offsets(topic, &parts, -1) {
                    Ok(hw) => {
                        let mut g = locked(&metrics.consumer.parts);
                        for s in 0..subs {
                            for (p, off) in &hw {
                                if let Some(e) = g.get_mut(&(s, topic.clone(), *p)) {
                                    e.high_watermark = e.high_watermark.max(*off);
                                }
                            }
                        }
                    }
                    Err(_) => {
                        conns.remove(&a);
                    }
                }
            }
        }
        metrics.consumer.sample_lag();
        let next = t0 + every;
        loop {
            let req = metrics.flush_req.load(Ordering::SeqCst);
            if req != flush_seen {
                flush_seen = req;
                metrics.flush_acks.fetch_add(1, Ordering::SeqCst);
            }
            if Instant::now() >= next || metrics.stopped() || done.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    metrics.flush_acks.fetch_add(1, Ordering::SeqCst);
}

/// Records of one partition's Fetch answer, accounted for a subscription: the high watermark is
/// noted; records the subscription already consumed count as duplicates; the others are counted
/// (returned) and their end-to-end latency recorded. `pos` (the fetcher's next offset) advances.
pub struct Ingest<'a> {
    pub metrics: &'a Metrics,
    pub rec: &'a mut LocalRecorder,
    pub rec_other: &'a mut LocalRecorder,
    /// Measured window, wall-clock µs.
    pub from_us: u64,
    pub until_us: u64,
    pub now_us: u64,
}

impl Ingest<'_> {
    /// Take the receive time and the measured window now (after the Fetch answer arrived: a
    /// window read before a long-poll may be the previous phase's).
    pub fn refresh(&mut self, clock: &Clock) {
        let (from, until) = self.metrics.window();
        self.from_us = clock.wall_us(from);
        self.until_us = if until == u64::MAX { u64::MAX } else { clock.wall_us(until) };
        self.now_us = clock.wall_us(clock.now_ns());
    }

    /// Returns (new records, their value bytes, a batch larger than the partition limit).
    pub fn partition(&mut self, sub: u32, topic: &str, p: &PartitionData, pos: &mut i64) -> (u64, u64, bool) {
        let m = self.metrics;
        let Some(records) = &p.records else {
            self.note_hw(sub, topic, p.partition_index, p.high_watermark, *pos);
            return (0, 0, false);
        };
        // Claim the offset range of the whole batches atomically, so two members fetching the
        // same partition around a rebalance never both count a record as new.
        let next = crate::encode::next_offset(records);
        let claimed_from = {
            let mut g = locked(&m.consumer.parts);
            let e = g.entry((sub, topic.to_string(), p.partition_index)).or_insert(PartState {
                high_watermark: -1,
                consumed_to: *pos,
                committed: -1,
            });
            e.high_watermark = e.high_watermark.max(p.high_watermark);
            let from = e.consumed_to;
            if let Some(n) = next {
                e.consumed_to = e.consumed_to.max(n);
            }
            from
        };
        let (mut fresh, mut dups, mut bytes) = (0u64, 0u64, 0u64);
        let record_latency = m.record_latency;
        let (from_us, until_us, now_us) = (self.from_us, self.until_us, self.now_us);
        let (rec, rec_other) = (&mut *self.rec, &mut *self.rec_other);
        // read_committed: the records of aborted transactions are skipped (a read_uncommitted
        // answer lists no aborted transaction).
        let mut aborted = crate::encode::AbortedFilter::new(p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)));
        let (n, whole, next2) = crate::encode::for_each_committed_record(records, &mut aborted, |r| {
            if r.offset < claimed_from {
                dups += 1;
                return;
            }
            fresh += 1;
            bytes += r.value.len() as u64;
            if record_latency && r.value.len() >= 8 {
                let stamp = u64::from_be_bytes(r.value[..8].try_into().expect("8 bytes"));
                let h = if stamp >= from_us && stamp < until_us { &mut *rec } else { &mut *rec_other };
                h.record_us(now_us.saturating_sub(stamp));
            }
        });
        // A compressed batch that did not decompress counts its records without visiting them.
        fresh += n.saturating_sub(fresh + dups);
        if dups > 0 {
            m.consumer.duplicates.fetch_add(dups, Ordering::Relaxed);
        }
        if let Some(nx) = next2 {
            *pos = (*pos).max(nx);
        }
        (fresh, bytes, whole == 0 && !records.is_empty())
    }

    fn note_hw(&self, sub: u32, topic: &str, partition: i32, hw: i64, pos: i64) {
        let mut g = locked(&self.metrics.consumer.parts);
        let e = g.entry((sub, topic.to_string(), partition)).or_insert(PartState { high_watermark: -1, consumed_to: pos, committed: -1 });
        e.high_watermark = e.high_watermark.max(hw);
    }
}

pub struct ConsumerSpec {
    /// Subscription index (its own consumed positions and duplicates).
    pub sub: u32,
    /// The partitions' leader at the start.
    pub addr: SocketAddr,
    /// Brokers to ask for Metadata when a partition's leader is lost.
    pub brokers: Vec<SocketAddr>,
    pub topic: String,
    /// (partition id, starting offset).
    pub partitions: Vec<(i32, i64)>,
    pub max_wait_ms: i32,
    /// Fetch isolation level: 0 read_uncommitted, 1 read_committed.
    pub isolation_level: i8,
    /// Opens the connections (the run's security settings).
    pub connector: crate::client::Connector,
}

/// Fetch until `metrics.stop` (or `done`) is set. Errors are counted. Failover: a lost
/// connection or a leadership error (NOT_LEADER_OR_FOLLOWER...) counts one error and marks the
/// partitions' leader unknown; Metadata (backoff 50 ms doubling to 1 s) names the new leader and
/// the partitions are fetched from there, from the offsets reached.
pub fn run_consumer(spec: ConsumerSpec, clock: Clock, metrics: Arc<Metrics>, done: Arc<AtomicBool>) {
    let mut conns: HashMap<SocketAddr, Conn> = HashMap::new();
    // partition id → leader (None: unknown, to look up).
    let mut leader: HashMap<i32, Option<SocketAddr>> = spec.partitions.iter().map(|(p, _)| (*p, Some(spec.addr))).collect();
    let mut brokers = spec.brokers.clone();
    if !brokers.contains(&spec.addr) {
        brokers.insert(0, spec.addr);
    }
    let mut backoff_ms = 50u64;
    let mut unreachable_since = None;
    let mut offsets = spec.partitions.clone();
    let mut part_max: i32 = 8 << 20;
    let mut rec = LocalRecorder::new();
    let mut rec_other = LocalRecorder::new();
    let mut flush_seen = metrics.flush_req.load(Ordering::SeqCst);
    while !metrics.stopped() && !done.load(Ordering::Relaxed) {
        if leader.values().any(|l| l.is_none()) && !refresh(&spec.connector, &spec.topic, &brokers, &mut leader, &mut unreachable_since, &metrics) && leader.values().all(|l| l.is_none()) {
            // Nothing to fetch meanwhile: wait (bounded) before asking again.
            std::thread::sleep(Duration::from_millis(backoff_ms));
            backoff_ms = (backoff_ms * 2).min(1000);
        }
        let mut addrs: Vec<SocketAddr> = leader.values().flatten().copied().collect();
        addrs.sort();
        addrs.dedup();
        let mut responses = Vec::new();
        let mut failed = false;
        for a in addrs {
            let parts: Vec<(i32, i64)> = offsets.iter().filter(|(p, _)| leader.get(p).copied().flatten() == Some(a)).copied().collect();
            let conn = match conns.entry(a) {
                std::collections::hash_map::Entry::Occupied(c) => Ok(c.into_mut()),
                std::collections::hash_map::Entry::Vacant(v) => spec.connector.connect(a, Duration::from_secs(2)).map(|c| v.insert(c)),
            };
            // Connected: a failed fetch is a lost leader (one error); unreachable (not yet
            // replaced in Metadata): no error. Either way find the leader again, after a
            // (bounded) pause.
            let r = match conn {
                Ok(c) => c.fetch_many(parts.iter().map(|&(p, off)| (spec.topic.as_str(), p, off)), spec.max_wait_ms, part_max, spec.isolation_level).map_err(|e| (true, e)),
                Err(e) => Err((false, e)),
            };
            match r {
                Ok(resp) => responses.push(resp),
                Err((lost, _)) => {
                    if metrics.stopped() || done.load(Ordering::Relaxed) {
                        break;
                    }
                    if lost {
                        metrics.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    failed = true;
                    conns.remove(&a);
                    for (p, _) in &parts {
                        leader.insert(*p, None);
                    }
                }
            }
        }
        if failed {
            std::thread::sleep(Duration::from_millis(backoff_ms));
            backoff_ms = (backoff_ms * 2).min(1000);
        } else if !responses.is_empty() {
            backoff_ms = 50;
        }
        let now_ns = clock.now_ns();
        let now_us = clock.wall_us(now_ns);
        // Records stamped inside the measured window go to the measured histogram.
        let (from, until) = metrics.window();
        let (from_us, until_us) = (clock.wall_us(from), if until == u64::MAX { u64::MAX } else { clock.wall_us(until) });
        let mut got = 0u64;
        let mut bytes = 0u64;
        let mut stuck = false;
        let mut ingest = Ingest { metrics: &metrics, rec: &mut rec, rec_other: &mut rec_other, from_us, until_us, now_us };
        for resp in &responses {
            for t in &resp.responses {
                for p in &t.partitions {
                    let Some(slot) = offsets.iter_mut().find(|(id, _)| *id == p.partition_index) else { continue };
                    if p.error_code != 0 {
                        metrics.errors.fetch_add(1, Ordering::Relaxed);
                        // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER,
                        // FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH: the leader moved.
                        if matches!(p.error_code, 3 | 5 | 6 | 74 | 75) {
                            leader.insert(p.partition_index, None);
                        }
                        if p.error_code == 1 {
                            // OFFSET_OUT_OF_RANGE: restart from the log start.
                            slot.1 = p.log_start_offset.max(0);
                        }
                        continue;
                    }
                    let (n, b, st) = ingest.partition(spec.sub, &spec.topic, p, &mut slot.1);
                    got += n;
                    bytes += b;
                    stuck |= st;
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

/// Metadata from the first broker that answers; the partitions with no known leader get the
/// one it names. Returns whether every partition has a leader again. No broker answering for
/// 5 s fails the run (the cluster is gone, not failing over).
fn refresh(
    connector: &crate::client::Connector,
    topic: &str,
    brokers: &[SocketAddr],
    leader: &mut HashMap<i32, Option<SocketAddr>>,
    unreachable_since: &mut Option<Instant>,
    metrics: &Metrics,
) -> bool {
    let t = [topic.to_string()];
    let Some(md) = brokers.iter().find_map(|a| {
        connector.connect_with_read_timeout(*a, Duration::from_secs(1), Duration::from_secs(2)).and_then(|mut c| c.metadata(Some(&t), false)).ok()
    }) else {
        let since = *unreachable_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= Duration::from_secs(5) && !metrics.stopped() {
            metrics.fail(format!("consumer: connection lost and no broker answers Metadata for 5 s (topic {topic})"));
        }
        return false;
    };
    *unreachable_since = None;
    let addr_of: HashMap<i32, SocketAddr> =
        md.brokers.iter().filter_map(|b| crate::client::resolve(&format!("{}:{}", b.host, b.port)).ok().map(|a| (b.node_id.0, a))).collect();
    let Some(mt) = md.topics.iter().find(|x| x.name.as_ref().map(|n| n.0.as_str()) == Some(topic)) else { return false };
    for p in &mt.partitions {
        if let Some(slot @ None) = leader.get_mut(&p.partition_index) {
            if p.error_code == 0 {
                *slot = addr_of.get(&p.leader_id.0).copied();
            }
        }
    }
    leader.values().all(|l| l.is_some())
}

#[cfg(test)]
mod tests {
    //! Consumer failover against scripted brokers on loopback: the real consumer, sockets and
    //! Fetch decoding. Broker A refuses (NOT_LEADER_OR_FOLLOWER, or closes the connection) and
    //! its Metadata names broker B, which serves the records.
    use super::*;
    use crate::client::topic_name;
    use crate::testbroker::{header, respond, serve, Served, CLOSE};
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
    use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse};
    use kafka_protocol::protocol::Decodable;
    use std::net::Shutdown;

    /// A scripted broker (`crate::testbroker`) whose Fetch of partition 0 answers `code` (0:
    /// `records` once from offset 0, then nothing; [`CLOSE`]: closes the connection) and whose
    /// Metadata names `leader`.
    fn broker(code: i16, records: Option<Bytes>, leader: Option<SocketAddr>) -> SocketAddr {
        serve(vec![(ApiKey::Fetch, 4, 12)], leader, move |s, key, v, mut frame| {
            if key != ApiKey::Fetch as i16 {
                return Served::Continue;
            }
            let h = header::<FetchRequest>(&mut frame, v);
            let req = FetchRequest::decode(&mut frame, v).unwrap();
            if code == CLOSE {
                let _ = s.shutdown(Shutdown::Both);
                return Served::Close;
            }
            let off = req.topics[0].partitions[0].fetch_offset;
            let data = if code == 0 && off == 0 { records.clone() } else { None };
            if data.is_none() {
                std::thread::sleep(Duration::from_millis(10)); // a short long-poll
            }
            let r = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(topic_name("t"))
                .with_partitions(vec![PartitionData::default()
                    .with_partition_index(0)
                    .with_error_code(code)
                    .with_high_watermark(5)
                    .with_records(data)])]);
            respond(s, h.correlation_id, v, &r);
            Served::Continue
        })
    }

    fn five_records() -> Bytes {
        let mut b = crate::encode::BatchBuilder::new(4096);
        for i in 0..5 {
            b.append(None, &[7; 20], 0, i, 0, 1000);
        }
        Bytes::from(b.finish().0)
    }

    /// Records 0..5 fetched by one member, then again (from an older committed offset) by another
    /// while a third fetch brings 5..10: the re-delivered ones count as duplicates only.
    #[test]
    fn records_fetched_twice_count_once_and_as_duplicates() {
        let metrics = Metrics::new(true);
        metrics.consumer.init_partition(0, "t", 0, 0, true);
        let batch = |base: i64| {
            let mut b = crate::encode::BatchBuilder::new(4096);
            for i in 0..5 {
                b.append(None, &[7; 20], 0, i, 0, 1000);
            }
            let mut v = b.finish().0;
            v[0..8].copy_from_slice(&base.to_be_bytes());
            PartitionData::default().with_partition_index(0).with_high_watermark(10).with_records(Some(Bytes::from(v)))
        };
        let (mut rec, mut other) = (LocalRecorder::new(), LocalRecorder::new());
        let mut ingest = Ingest { metrics: &metrics, rec: &mut rec, rec_other: &mut other, from_us: 0, until_us: u64::MAX, now_us: 2000 };
        let (mut pos_a, mut pos_b) = (0i64, 0i64);
        assert_eq!(ingest.partition(0, "t", &batch(0), &mut pos_a).0, 5);
        assert_eq!(ingest.partition(0, "t", &batch(0), &mut pos_b).0, 0, "re-delivered: not new");
        assert_eq!(metrics.consumer.duplicates.load(Ordering::SeqCst), 5);
        assert_eq!(ingest.partition(0, "t", &batch(5), &mut pos_b).0, 5);
        assert_eq!((pos_a, pos_b), (5, 10));
        let mut h = crate::stats::new_hist();
        rec.drain_into(&mut h);
        assert_eq!(h.len(), 10, "one end-to-end sample per distinct record");
        assert_eq!(metrics.consumer.lag(), (Some(0), Some(10)));
    }

    #[test]
    fn consumer_follows_the_leader_after_not_leader_or_a_lost_connection() {
        for refusal in [6, CLOSE] {
            let b = broker(0, Some(five_records()), None);
            let a = broker(refusal, None, Some(b));
            let metrics = Arc::new(Metrics::new(false));
            let done = Arc::new(AtomicBool::new(false));
            let spec = ConsumerSpec { sub: 0, addr: a, brokers: vec![a], topic: "t".into(), partitions: vec![(0, 0)], max_wait_ms: 10, isolation_level: 0, connector: crate::client::Connector::plaintext() };
            let (m, d) = (metrics.clone(), done.clone());
            let h = std::thread::spawn(move || run_consumer(spec, Clock::new(), m, d));
            let deadline = Instant::now() + Duration::from_secs(10);
            while metrics.consumed.load(Ordering::SeqCst) < 5 {
                assert!(Instant::now() < deadline, "consumed {} of 5 (refusal {refusal})", metrics.consumed.load(Ordering::SeqCst));
                assert_eq!(metrics.fatal(), None);
                std::thread::sleep(Duration::from_millis(5));
            }
            done.store(true, Ordering::SeqCst);
            h.join().unwrap();
            assert_eq!(metrics.fatal(), None, "failover is not fatal");
            assert_eq!(metrics.consumed.load(Ordering::SeqCst), 5, "each record once");
            assert!(metrics.errors.load(Ordering::SeqCst) >= 1, "the refusal is counted");
        }
    }
}
