//! The event-driven network layer (issue 18) through real sockets (and a real broker process
//! where threads and memory are measured): a fixed set of network threads, long-polls woken only
//! by their own partitions, responses in request order under pipelining, backpressure from a
//! client that never reads, slowloris and idle timeouts.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{free_addr, spawn_broker_process, start_broker, start_broker_with, Client, Process};
use engine::log::Durability;
use engine::record::build;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn produce_req(t: &str, partition: i32, batch: Vec<u8>, acks: i16) -> ProduceRequest {
    ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(topic(t))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(Bytes::from(batch)))])])
}

/// A fetch of `t` at `offsets` (partition, offset), long-polling up to `max_wait_ms`.
fn fetch_req(t: &str, offsets: &[(i32, i64)], max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic(t)).with_partitions(
            offsets
                .iter()
                .map(|&(p, o)| FetchPartition::default().with_partition(p).with_fetch_offset(o).with_partition_max_bytes(10 << 20))
                .collect(),
        )])
}

fn create_topic(c: &mut Client, name: &str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default().with_name(topic(name)).with_num_partitions(partitions).with_replication_factor(1)]);
    let resp = c.call(7, &req);
    assert_eq!(resp.topics[0].error_code, 0, "{:?}", resp.topics[0].error_message);
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/<pid>/task").count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn many_connections_are_served_by_a_fixed_set_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let broker = Process(spawn_broker_process(dir.path(), addr, &["--durability", "never", "--network-threads", "2"], "warn"));
    let pid = broker.0.id();
    // One request first, so every thread the broker starts on its own is running.
    let mut first = Client::connect(addr);
    assert_eq!(first.call(3, &ApiVersionsRequest::default()).error_code, 0);
    let base = threads_of(pid);
    let mut clients = Vec::new();
    let mut counts = Vec::new();
    for round in 0..4 {
        for _ in 0..150 {
            clients.push(Client::connect(addr));
        }
        let mut cids = Vec::new();
        for c in clients.iter_mut() {
            cids.push(c.send(3, &ApiVersionsRequest::default()));
        }
        for (c, cid) in clients.iter_mut().zip(cids) {
            assert_eq!(c.recv::<ApiVersionsRequest>(3, cid).error_code, 0, "round {round}");
        }
        counts.push(threads_of(pid));
    }
    // 600 connections, every one answered, and no thread per connection: the count stays
    // where it was with one connection.
    for (i, n) in counts.iter().enumerate() {
        assert!(*n <= base, "round {i}: {n} threads with {} connections, {base} with one ({counts:?})", (i + 1) * 150);
    }
}

#[test]
fn long_poll_is_woken_only_by_a_produce_on_its_own_partition() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    let addr = broker.local_addr();
    let mut admin = Client::connect(addr);
    create_topic(&mut admin, "w", 2);
    let (p0, p1) = (broker.logs().partition("w", 0).unwrap(), broker.logs().partition("w", 1).unwrap());

    // A long-poll on partition 0.
    let poller = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let started = Instant::now();
        let f = c.call(FETCH_V, &fetch_req("w", &[(0, 0)], 20_000));
        (f, started.elapsed())
    });
    wait_for("the fetch to register on partition 0", Duration::from_secs(10), || p0.hw_waiters() == 1);
    let before = broker.fetch_wakeups();
    // Produces to partition 1 do not wake it.
    for i in 0..5 {
        let r = admin.call(PRODUCE_V, &produce_req("w", 1, build::simple_batch(3, 10, i), 1));
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    assert_eq!(p1.high_watermark(), 15);
    assert_eq!(broker.fetch_wakeups(), before, "a produce on partition 1 woke the fetch on partition 0");
    assert_eq!(p0.hw_waiters(), 1, "the fetch on partition 0 is still registered");
    assert!(!poller.is_finished());
    // A produce to partition 0 wakes it, once, and it answers with the records.
    admin.call(PRODUCE_V, &produce_req("w", 0, build::simple_batch(4, 10, 0), 1));
    let (f, waited) = poller.join().unwrap();
    let p = &f.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 4);
    assert!(!p.records.as_ref().unwrap().is_empty());
    assert!(waited < Duration::from_secs(20), "answered by the produce, not by max_wait_ms");
    assert_eq!(broker.fetch_wakeups(), before + 1);

    // A fetch spanning both partitions registers on each; a produce on either answers it, and
    // its registration on the other partition is removed.
    let poller = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.call(FETCH_V, &fetch_req("w", &[(0, 4), (1, 15)], 20_000))
    });
    wait_for("the fetch to register on both partitions", Duration::from_secs(10), || p0.hw_waiters() == 1 && p1.hw_waiters() == 1);
    admin.call(PRODUCE_V, &produce_req("w", 1, build::simple_batch(2, 10, 0), 1));
    let f = poller.join().unwrap();
    let parts = &f.responses[0].partitions;
    assert_eq!(parts[1].high_watermark, 17);
    assert!(!parts[1].records.as_ref().unwrap().is_empty());
    assert_eq!(broker.fetch_wakeups(), before + 2);
    wait_for("the registration on partition 0 to be removed", Duration::from_secs(5), || p0.hw_waiters() == 0);
}

#[test]
fn pipelined_slow_and_fast_requests_are_answered_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    create_topic(&mut c, "mix", 2);
    // Slow first (a long-poll with nothing to read: answered after max_wait_ms), then fast
    // ones, a group-commit produce, an admin request run on the blocking pool, and a fetch
    // that the produce before it satisfies.
    let mut frames = Vec::new();
    let mut expect = Vec::new();
    let mut add = |cid_frame: (i32, Vec<u8>), what: &'static str| {
        expect.push((cid_frame.0, what));
        frames.extend_from_slice(&cid_frame.1);
    };
    add(c.frame(FETCH_V, &fetch_req("mix", &[(1, 0)], 400)), "slow fetch (partition 1 stays empty)");
    add(c.frame(3, &ApiVersionsRequest::default()), "api versions");
    add(c.frame(PRODUCE_V, &produce_req("mix", 0, build::simple_batch(5, 10, 0), -1)), "produce");
    add(c.frame(12, &MetadataRequest::default().with_topics(None)), "metadata");
    {
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default().with_name(topic("mix2")).with_num_partitions(3).with_replication_factor(1)]);
        add(c.frame(7, &req), "create topics");
    }
    add(c.frame(FETCH_V, &fetch_req("mix", &[(0, 0)], 10_000)), "fetch after produce");
    add(c.frame(3, &ApiVersionsRequest::default()), "api versions");
    c.stream.write_all(&frames).unwrap();
    let started = Instant::now();
    // Client::recv asserts each response's correlation id: the order is the request order.
    let (f, _) = expect[0];
    let r = c.recv::<FetchRequest>(FETCH_V, f);
    assert!(r.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300), "the slow fetch answered before its max_wait_ms");
    assert_eq!(c.recv::<ApiVersionsRequest>(3, expect[1].0).error_code, 0);
    let p = c.recv::<ProduceRequest>(PRODUCE_V, expect[2].0);
    assert_eq!(p.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(p.responses[0].partition_responses[0].base_offset, 0);
    c.recv::<MetadataRequest>(12, expect[3].0);
    assert_eq!(c.recv::<CreateTopicsRequest>(7, expect[4].0).topics[0].error_code, 0);
    let f = c.recv::<FetchRequest>(FETCH_V, expect[5].0);
    assert_eq!(f.responses[0].partitions[0].high_watermark, 5);
    assert!(!f.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
    assert_eq!(c.recv::<ApiVersionsRequest>(3, expect[6].0).error_code, 0);
    assert!(broker.logs().topic("mix2").is_some());
}

#[test]
fn a_client_that_never_reads_is_throttled_without_growing_memory_or_stalling_others() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let broker = Process(spawn_broker_process(dir.path(), addr, &["--durability", "never", "--network-threads", "1"], "warn"));
    let pid = broker.0.id();
    let mut good = Client::connect(addr);
    create_topic(&mut good, "bp", 1);
    // ~100 KiB of records, so every fetch response is that large.
    for i in 0..10 {
        good.call(PRODUCE_V, &produce_req("bp", 0, build::simple_batch(100, 100, i), 1));
    }
    let base_rss = rss_kib(pid);
    // The hostile client pipelines Metadata and Fetch requests and never reads a response.
    let mut hostile = Client::connect(addr);
    let mut batch = Vec::new();
    for _ in 0..200 {
        batch.extend_from_slice(&hostile.frame(12, &MetadataRequest::default().with_topics(None)).1);
        batch.extend_from_slice(&hostile.frame(FETCH_V, &fetch_req("bp", &[(0, 0)], 0)).1);
    }
    let mut s = hostile.stream.try_clone().unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    // Bounded: up to 2,000 rounds (800,000 requests, ~80 GB of responses if all were served).
    let mut sent_rounds = 0;
    let mut stalled = false;
    for _ in 0..2_000 {
        match s.write_all(&batch) {
            Ok(()) => sent_rounds += 1,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                stalled = true;
                break;
            }
            Err(e) => panic!("hostile write failed: {e}"),
        }
    }
    assert!(stalled, "the broker kept reading a client that never reads ({sent_rounds} rounds of 400 requests)");
    // Meanwhile another connection on the same (single) network thread is served.
    for i in 0..20 {
        let r = good.call(PRODUCE_V, &produce_req("bp", 0, build::simple_batch(1, 10, i), 1));
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        let f = good.call(FETCH_V, &fetch_req("bp", &[(0, 1000 + i)], 0));
        assert_eq!(f.responses[0].partitions[0].error_code, 0);
    }
    let rss = rss_kib(pid);
    assert!(rss < base_rss + 64 * 1024, "broker RSS grew from {base_rss} KiB to {rss} KiB");
}

#[test]
fn slowloris_and_idle_connections_are_closed_and_active_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(
        |c| {
            c.request_timeout_ms = 500;
            c.connection_idle_ms = 1_500;
        },
        dir.path(),
    );
    let addr = broker.local_addr();
    // Half a size prefix, then nothing.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(&[0, 0]).unwrap();
    // A whole size prefix and part of the frame.
    let mut slow2 = Client::connect(addr);
    let (_, f) = slow2.frame(3, &ApiVersionsRequest::default());
    slow2.stream.write_all(&f[..f.len() - 3]).unwrap();
    // Nothing at all.
    let mut idle = Client::connect(addr);
    let mut active = Client::connect(addr);
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(std::io::Read::read(&mut slow, &mut b), Ok(0) | Err(_)), "slowloris (half prefix) not closed");
    assert!(slow2.closed_by_peer(), "slowloris (half frame) not closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The active connection keeps working past the idle timeout; the idle one is closed.
    while started.elapsed() < Duration::from_millis(2_500) {
        assert_eq!(active.call(3, &ApiVersionsRequest::default()).error_code, 0);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(idle.closed_by_peer(), "idle connection not closed");
    assert_eq!(active.call(3, &ApiVersionsRequest::default()).error_code, 0);
    wait_for("the closed connections to be counted out", Duration::from_secs(5), || broker.connection_count() == 1);
}

fn join_req(member: &str) -> JoinGroupRequest {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("waiters")))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_session_timeout_ms(60_000)
        .with_rebalance_timeout_ms(60_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"m"))])
}

#[test]
fn joins_waiting_for_a_rebalance_hold_no_thread() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let broker = Process(spawn_broker_process(dir.path(), addr, &["--durability", "never", "--network-threads", "2"], "warn"));
    let pid = broker.0.id();
    // Member A alone: joins, leads, syncs: the group is Stable.
    let mut a = Client::connect(addr);
    let ja = a.call(3, &join_req(""));
    assert_eq!(ja.error_code, 0);
    let a_id = ja.member_id.to_string();
    let s = a.call(
        3,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("waiters")))
            .with_generation_id(ja.generation_id)
            .with_member_id(ja.member_id.clone())
            .with_assignments(vec![kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(ja.member_id.clone())
                .with_assignment(Bytes::from_static(b"a"))]),
    );
    assert_eq!(s.error_code, 0);
    let base = threads_of(pid);
    // 200 new members join: each waits until A rejoins (up to A's 60 s rebalance timeout).
    const N: usize = 200;
    let mut waiting: Vec<(Client, i32)> = (0..N)
        .map(|_| {
            let mut c = Client::connect(addr);
            let cid = c.send(3, &join_req(""));
            (c, cid)
        })
        .collect();
    // Every join was read and registered: the group lists them all, none answered yet.
    let mut admin = Client::connect(addr);
    wait_for("the joins to be registered", Duration::from_secs(30), || {
        let d = admin.call(0, &DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_static_str("waiters"))]));
        d.groups[0].members.len() == N + 1
    });
    for (c, _) in waiting.iter() {
        c.stream.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = c.stream.peek(&mut b);
        c.stream.set_nonblocking(false).unwrap();
        assert!(matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock), "a join was answered before the rebalance");
    }
    let during = threads_of(pid);
    // A bounded pool may have started (group completions: at most 8), but no thread per join.
    assert!(during <= base + 8, "{during} threads with {N} joins waiting, {base} before");
    // A rejoins: the rebalance completes and every waiting join is answered.
    let ra = a.call(3, &join_req(&a_id));
    assert_eq!(ra.error_code, 0);
    for (c, cid) in waiting.iter_mut() {
        let r = c.recv::<JoinGroupRequest>(3, *cid);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, ra.generation_id);
    }
}

#[test]
fn pipelined_group_requests_of_a_connection_are_handled_one_at_a_time() {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    create_topic(&mut c, "committed", 1);
    let group = || GroupId(StrBytes::from_static_str("serial"));
    // Each OffsetCommit is followed at once (pipelined, same write) by an OffsetFetch: as in
    // Kafka, the fetch is handled after the commit completed, so it sees the offset.
    let mut frames = Vec::new();
    let mut cids = Vec::new();
    for offset in 1..=20i64 {
        let commit = OffsetCommitRequest::default().with_group_id(group()).with_generation_id_or_member_epoch(-1).with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic("committed"))
                .with_partitions(vec![OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset)]),
        ]);
        let (cc, f) = c.frame(7, &commit);
        frames.extend_from_slice(&f);
        let fetch = OffsetFetchRequest::default()
            .with_group_id(group())
            .with_topics(Some(vec![OffsetFetchRequestTopic::default().with_name(topic("committed")).with_partition_indexes(vec![0])]));
        let (fc, f) = c.frame(7, &fetch);
        frames.extend_from_slice(&f);
        cids.push((offset, cc, fc));
    }
    c.stream.write_all(&frames).unwrap();
    for (offset, cc, fc) in cids {
        let r = c.recv::<OffsetCommitRequest>(7, cc);
        assert_eq!(r.topics[0].partitions[0].error_code, 0, "commit of {offset}");
        let f = c.recv::<OffsetFetchRequest>(7, fc);
        assert_eq!(f.error_code, 0);
        assert_eq!(f.topics[0].partitions[0].committed_offset, offset, "the fetch pipelined behind the commit of {offset}");
    }
}

/// Releases held syncs when dropped (before the broker is shut down, even on a failed assert).
struct Release(engine::io::SimIo);
impl Drop for Release {
    fn drop(&mut self) {
        self.0.hold_syncs(false);
    }
}

/// `call` on a thread of its own, answered within `limit` or None.
fn call_within<R: kafka_protocol::protocol::Request + Send + 'static>(mut c: Client, version: i16, req: R, limit: Duration) -> Option<R::Response>
where
    R::Response: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(c.call(version, &req));
    });
    rx.recv_timeout(limit).ok()
}

fn nothing_to_read(c: &Client) -> bool {
    c.stream.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = c.stream.peek(&mut b);
    c.stream.set_nonblocking(false).unwrap();
    matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn a_topic_auto_create_does_not_hold_up_the_network_thread() {
    let io = engine::io::SimIo::new();
    let mut cfg = engine::broker::BrokerConfig::new("/data".into(), Durability::Never);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.network_threads = 1;
    cfg.default_partitions = 1;
    cfg.auto_create_topics = true;
    let broker = engine::broker::Broker::start_with_io(cfg, std::sync::Arc::new(io.clone())).unwrap();
    let addr = broker.local_addr();
    let mut admin = Client::connect(addr);
    create_topic(&mut admin, "existing", 1);
    let release = Release(io.clone());
    let md = |t: &str| {
        MetadataRequest::default().with_allow_auto_topic_creation(true).with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(Some(topic(t))),
        ]))
    };
    for (round, new_topic) in ["auto-by-metadata", "auto-by-produce"].into_iter().enumerate() {
        // A stalled disk: the auto-create's fsyncs wait.
        io.hold_syncs(true);
        let mut a = Client::connect(addr);
        let (first, mut frames) =
            if round == 0 { a.frame(12, &md(new_topic)) } else { a.frame(PRODUCE_V, &produce_req(new_topic, 0, build::simple_batch(3, 10, 0), 1)) };
        // Pipelined behind it: answered after it.
        let (second, f) = a.frame(3, &ApiVersionsRequest::default());
        frames.extend_from_slice(&f);
        a.stream.write_all(&frames).unwrap();
        wait_for("the auto-create to wait for its fsync", Duration::from_secs(10), || io.syncs_held() >= 1);
        // Another connection on the same (single) network thread is served meanwhile.
        let b = Client::connect(addr);
        let r = call_within(b, PRODUCE_V, produce_req("existing", 0, build::simple_batch(2, 10, round as i64), 1), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("round {round}: a produce to an existing topic waited for another connection's auto-create"));
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        let b = Client::connect(addr);
        let m = call_within(b, 12, md("existing"), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("round {round}: a Metadata request waited for another connection's auto-create"));
        assert_eq!(m.topics[0].error_code, 0);
        // The auto-creating connection's requests are not answered before the create completes.
        assert!(nothing_to_read(&a), "round {round}: answered before the auto-create's fsync");
        assert!(broker.logs().topic(new_topic).is_none());
        io.hold_syncs(false);
        if round == 0 {
            let r = a.recv::<MetadataRequest>(12, first);
            assert_eq!(r.topics[0].error_code, 0);
            assert_eq!(r.topics[0].partitions.len(), 1);
        } else {
            let r = a.recv::<ProduceRequest>(PRODUCE_V, first);
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
            assert_eq!(r.responses[0].partition_responses[0].base_offset, 0);
            assert_eq!(broker.logs().partition(new_topic, 0).unwrap().high_watermark(), 3);
        }
        assert_eq!(a.recv::<ApiVersionsRequest>(3, second).error_code, 0);
        assert!(broker.logs().topic(new_topic).is_some());
    }
    assert_eq!(broker.logs().partition("existing", 0).unwrap().high_watermark(), 4);
    drop(release);
}
