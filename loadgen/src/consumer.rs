//! Consumers: one thread per (consumer, leader broker), each long-polling Fetch for its
//! partitions. End-to-end latency = receive time − the intended send time stamped in each
//! value's first 8 bytes (same host clock).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::encode::for_each_value;
use crate::rate::Clock;
use crate::stats::{LocalRecorder, Metrics};

pub struct ConsumerSpec {
    /// The partitions' leader at the start.
    pub addr: SocketAddr,
    /// Brokers to ask for Metadata when a partition's leader is lost.
    pub brokers: Vec<SocketAddr>,
    pub topic: String,
    /// (partition id, starting offset).
    pub partitions: Vec<(i32, i64)>,
    pub max_wait_ms: i32,
}

/// Fetch until `metrics.stop` (or `done`) is set. Errors are counted. Failover: a lost
/// connection or a leadership error (NOT_LEADER_OR_FOLLOWER...) counts one error and marks the
/// partitions' leader unknown; Metadata (backoff 50 ms doubling to 1 s) names the new leader and
/// the partitions are fetched from there, from the offsets reached.
pub fn run_consumer(spec: ConsumerSpec, clock: Clock, metrics: Arc<Metrics>, done: Arc<std::sync::atomic::AtomicBool>) {
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
        if leader.values().any(|l| l.is_none()) && !refresh(&spec.topic, &brokers, &mut leader, &mut unreachable_since, &metrics) && leader.values().all(|l| l.is_none()) {
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
                std::collections::hash_map::Entry::Vacant(v) => Conn::connect(a, Duration::from_secs(2)).map(|c| v.insert(c)),
            };
            // Connected: a failed fetch is a lost leader (one error); unreachable (not yet
            // replaced in Metadata): no error. Either way find the leader again, after a
            // (bounded) pause.
            let r = match conn {
                Ok(c) => c.fetch(&spec.topic, &parts, spec.max_wait_ms, part_max).map_err(|e| (true, e)),
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

/// Metadata from the first broker that answers; the partitions with no known leader get the
/// one it names. Returns whether every partition has a leader again. No broker answering for
/// 5 s fails the run (the cluster is gone, not failing over).
fn refresh(
    topic: &str,
    brokers: &[SocketAddr],
    leader: &mut HashMap<i32, Option<SocketAddr>>,
    unreachable_since: &mut Option<Instant>,
    metrics: &Metrics,
) -> bool {
    let t = [topic.to_string()];
    let Some(md) = brokers.iter().find_map(|a| {
        Conn::connect_with_read_timeout(*a, Duration::from_secs(1), Duration::from_secs(2)).and_then(|mut c| c.metadata(Some(&t), false)).ok()
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
    use crate::client::{read_frame, topic_name};
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
        RequestHeader, ResponseHeader,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
    use std::io::Write;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    const CLOSE: i16 = i16::MIN;

    fn respond<R: Encodable + HeaderVersion>(s: &mut TcpStream, corr: i32, version: i16, r: &R) {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 0]);
        ResponseHeader::default().with_correlation_id(corr).encode(&mut buf, R::header_version(version)).unwrap();
        r.encode(&mut buf, version).unwrap();
        let n = (buf.len() - 4) as u32;
        buf[0..4].copy_from_slice(&n.to_be_bytes());
        s.write_all(&buf).unwrap();
    }

    /// A broker whose Fetch of partition 0 answers `code` (0: `records` once from offset 0, then
    /// nothing; [`CLOSE`]: closes the connection) and whose Metadata names `leader`.
    fn broker(code: i16, records: Option<Bytes>, leader: Option<SocketAddr>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let leader = leader.unwrap_or(addr);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let records = records.clone();
                std::thread::spawn(move || {
                    while let Ok(mut frame) = read_frame(&mut s) {
                        let key = i16::from_be_bytes([frame[0], frame[1]]);
                        let v = i16::from_be_bytes([frame[2], frame[3]]);
                        if key == ApiKey::ApiVersions as i16 {
                            let h = RequestHeader::decode(&mut frame, ApiVersionsRequest::header_version(v)).unwrap();
                            let r = ApiVersionsResponse::default().with_api_keys(vec![
                                ApiVersion::default().with_api_key(ApiKey::Fetch as i16).with_min_version(4).with_max_version(12),
                                ApiVersion::default().with_api_key(ApiKey::Metadata as i16).with_min_version(1).with_max_version(9),
                            ]);
                            respond(&mut s, h.correlation_id, v, &r);
                        } else if key == ApiKey::Metadata as i16 {
                            let h = RequestHeader::decode(&mut frame, MetadataRequest::header_version(v)).unwrap();
                            let r = MetadataResponse::default()
                                .with_brokers(vec![MetadataResponseBroker::default()
                                    .with_node_id(BrokerId(2))
                                    .with_host(StrBytes::from(leader.ip().to_string()))
                                    .with_port(leader.port() as i32)])
                                .with_topics(vec![MetadataResponseTopic::default().with_name(Some(topic_name("t"))).with_partitions(
                                    vec![MetadataResponsePartition::default().with_partition_index(0).with_leader_id(BrokerId(2))],
                                )]);
                            respond(&mut s, h.correlation_id, v, &r);
                        } else if key == ApiKey::Fetch as i16 {
                            let h = RequestHeader::decode(&mut frame, FetchRequest::header_version(v)).unwrap();
                            let req = FetchRequest::decode(&mut frame, v).unwrap();
                            if code == CLOSE {
                                let _ = s.shutdown(Shutdown::Both);
                                return;
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
                            respond(&mut s, h.correlation_id, v, &r);
                        }
                    }
                });
            }
        });
        addr
    }

    fn five_records() -> Bytes {
        let mut b = crate::encode::BatchBuilder::new(4096);
        for i in 0..5 {
            b.append(None, &[7; 20], 0, i, 0, 1000);
        }
        Bytes::from(b.finish().0)
    }

    #[test]
    fn consumer_follows_the_leader_after_not_leader_or_a_lost_connection() {
        for refusal in [6, CLOSE] {
            let b = broker(0, Some(five_records()), None);
            let a = broker(refusal, None, Some(b));
            let metrics = Arc::new(Metrics::new(false));
            let done = Arc::new(AtomicBool::new(false));
            let spec = ConsumerSpec { addr: a, brokers: vec![a], topic: "t".into(), partitions: vec![(0, 0)], max_wait_ms: 10 };
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
