//! Protocol-level behaviour of the broker, driven by a client built on the kafka-protocol crate.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{start_broker, start_broker_with, Client};
use engine::log::Durability;
use engine::record::build;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn produce_req(t: &str, parts: Vec<(i32, Vec<u8>)>, acks: i16) -> ProduceRequest {
    let pd = parts
        .into_iter()
        .map(|(i, b)| PartitionProduceData::default().with_index(i).with_records(Some(Bytes::from(b))))
        .collect();
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic(t)).with_partition_data(pd)])
}

fn fetch_req(t: &str, partition: i32, offset: i64, max_wait_ms: i32, min_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic(t)).with_partitions(vec![FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(10 << 20)])])
}

fn create_topic(c: &mut Client, name: &str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default().with_name(topic(name)).with_num_partitions(partitions).with_replication_factor(1)]);
    let resp = c.call(7, &req);
    assert_eq!(resp.topics[0].error_code, 0, "{:?}", resp.topics[0].error_message);
}

#[test]
fn pipelined_produce_requests_are_answered_in_order_and_appended_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    create_topic(&mut c, "pipe", 1);
    const N: usize = 300;
    // Write every request before reading any response.
    let mut all = Vec::new();
    let mut cids = Vec::new();
    for i in 0..N {
        let batch = build::simple_batch(10, 20, 1_000 + i as i64);
        let (cid, f) = c.frame(PRODUCE_V, &produce_req("pipe", vec![(0, batch)], -1));
        all.extend_from_slice(&f);
        cids.push(cid);
    }
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&all).unwrap());
    for (i, cid) in cids.iter().enumerate() {
        let r = c.recv::<ProduceRequest>(PRODUCE_V, *cid);
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.base_offset, (i * 10) as i64, "request {i} appended out of order");
        // Group durability: the high watermark only moves after an fdatasync, so an answered
        // acks=-1 produce must already be below it.
        let hw = broker.logs().partition("pipe", 0).unwrap().high_watermark();
        assert!(hw >= ((i + 1) * 10) as u64, "request {i} answered before its fdatasync (hw {hw})");
    }
    writer.join().unwrap();
    assert_eq!(broker.logs().partition("pipe", 0).unwrap().high_watermark(), (N * 10) as u64);
    broker.shutdown().unwrap();
}

#[test]
fn acks_zero_gets_no_response_and_its_records_become_visible() {
    // In `group` mode the append is only staged; with nobody waiting for acks, the broker must
    // still drive the group commit that writes it and moves the high watermark.
    for durability in [Durability::Never, Durability::Group] {
        let dir = tempfile::tempdir().unwrap();
        let broker = start_broker(dir.path(), durability, 1);
        let mut c = Client::connect(broker.local_addr());
        c.send(PRODUCE_V, &produce_req("quiet", vec![(0, build::simple_batch(3, 10, 0))], 0));
        // The next response on the wire is the Metadata one.
        let resp = c.call(9, &MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic("quiet")))])));
        assert_eq!(resp.topics[0].error_code, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while broker.logs().partition("quiet", 0).unwrap().high_watermark() < 3 {
            assert!(Instant::now() < deadline, "{durability}: acks=0 batch not visible");
            std::thread::sleep(Duration::from_millis(10));
        }
        let resp = c.call(FETCH_V, &fetch_req("quiet", 0, 0, 0, 1));
        let records = resp.responses[0].partitions[0].records.as_ref().map_or(0, |r| r.len());
        assert!(records > 0, "{durability}: acks=0 records are served");
        broker.shutdown().unwrap();
    }
}

#[test]
fn corrupt_batch_gets_corrupt_message_for_that_partition_only() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 2);
    let mut c = Client::connect(broker.local_addr());
    create_topic(&mut c, "mixed", 2);
    let good = build::simple_batch(5, 10, 0);
    let mut bad = build::simple_batch(5, 10, 0);
    let last = bad.len() - 1;
    bad[last] ^= 0xff; // CRC mismatch
    let r = c.call(PRODUCE_V, &produce_req("mixed", vec![(0, good.clone()), (1, bad)], -1));
    let ps = &r.responses[0].partition_responses;
    assert_eq!((ps[0].index, ps[0].error_code, ps[0].base_offset), (0, 0, 0));
    assert_eq!((ps[1].index, ps[1].error_code), (1, 2), "CORRUPT_MESSAGE");
    // The good partition's batch is readable, the bad one stored nothing.
    let f = c.call(FETCH_V, &fetch_req("mixed", 0, 0, 0, 0));
    assert_eq!(f.responses[0].partitions[0].records.as_ref().unwrap().len(), good.len());
    assert_eq!(broker.logs().partition("mixed", 1).unwrap().high_watermark(), 0);
}

#[test]
fn unknown_api_versions_version_gets_unsupported_version_with_v0_body() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    let mut c = Client::connect(broker.local_addr());
    let (cid, mut f) = c.frame(3, &ApiVersionsRequest::default());
    f[6..8].copy_from_slice(&99i16.to_be_bytes()); // api_version in the header
    c.stream.write_all(&f).unwrap();
    let raw = c.recv_raw().unwrap();
    let mut b = Bytes::from(raw);
    let h = ResponseHeader::decode(&mut b, 0).unwrap();
    assert_eq!(h.correlation_id, cid);
    let r = ApiVersionsResponse::decode(&mut b, 0).unwrap();
    assert_eq!(r.error_code, 35, "UNSUPPORTED_VERSION");
    let produce = r.api_keys.iter().find(|k| k.api_key == 0).expect("Produce advertised");
    assert_eq!((produce.min_version, produce.max_version), (0, 11));
    // The connection stays usable, and v3 answers normally with no default tagged fields.
    let cid = c.send(3, &ApiVersionsRequest::default());
    let raw = c.recv_raw().unwrap();
    assert_eq!(*raw.last().unwrap(), 0, "v3 response must end with an empty tagged-field section");
    let mut b = Bytes::from(raw);
    assert_eq!(ResponseHeader::decode(&mut b, 0).unwrap().correlation_id, cid);
    let r = ApiVersionsResponse::decode(&mut b, 3).unwrap();
    assert_eq!(r.error_code, 0);
    assert!(b.is_empty());
    let fetch = r.api_keys.iter().find(|k| k.api_key == 1).unwrap();
    assert_eq!((fetch.min_version, fetch.max_version), (4, 12));
}

#[test]
fn produce_v2_is_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    let mut c = Client::connect(broker.local_addr());
    // Hand-framed Produce v2: acks=1, timeout, [topic "old", [partition 0, 3 junk bytes]].
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes()); // api key
    body.extend_from_slice(&2i16.to_be_bytes()); // version
    body.extend_from_slice(&41i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(-1i16).to_be_bytes()); // client id null
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&1000i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&3i16.to_be_bytes());
    body.extend_from_slice(b"old");
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&3i32.to_be_bytes());
    body.extend_from_slice(b"xyz");
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    c.stream.write_all(&f).unwrap();
    let raw = c.recv_raw().unwrap();
    assert_eq!(&raw[0..4], &41i32.to_be_bytes());
    // topics(1) name(2+3) partitions(1) index(4) error(2) ...
    let err_at = 4 + 4 + 2 + 3 + 4 + 4;
    assert_eq!(i16::from_be_bytes([raw[err_at], raw[err_at + 1]]), 35);
}

#[test]
fn oversized_frame_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(|c| c.frame_bytes_max = 1 << 20, dir.path());
    let mut c = Client::connect(broker.local_addr());
    // Announce 64 MiB and send nothing more: refused from the size alone.
    c.stream.write_all(&(64i32 << 20).to_be_bytes()).unwrap();
    assert!(c.closed_by_peer(), "oversized frame must close the connection");
    // Others are unaffected.
    let mut ok = Client::connect(broker.local_addr());
    assert_eq!(ok.call(3, &ApiVersionsRequest::default()).error_code, 0);
}

#[test]
fn unknown_api_key_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    let mut c = Client::connect(broker.local_addr());
    let (_, mut f) = c.frame(3, &ApiVersionsRequest::default());
    f[4..6].copy_from_slice(&999i16.to_be_bytes());
    c.stream.write_all(&f).unwrap();
    assert!(c.closed_by_peer());
}

#[test]
fn hostile_array_count_does_not_crash_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    let mut c = Client::connect(broker.local_addr());
    // Metadata v1 whose topic array claims i32::MAX entries in a 14-byte body.
    let mut body = Vec::new();
    body.extend_from_slice(&3i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    body.extend_from_slice(&[0, 1, b'x']);
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    c.stream.write_all(&f).unwrap();
    assert!(c.closed_by_peer());
    let mut ok = Client::connect(broker.local_addr());
    assert_eq!(ok.call(3, &ApiVersionsRequest::default()).error_code, 0);
}

#[test]
fn half_frame_client_does_not_block_others() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut stalled = Client::connect(broker.local_addr());
    stalled.stream.write_all(&100i32.to_be_bytes()).unwrap();
    stalled.stream.write_all(&[0, 3, 0, 1, 0]).unwrap(); // 5 of 100 bytes, then silence
    let mut half_size = Client::connect(broker.local_addr());
    half_size.stream.write_all(&[0, 0]).unwrap(); // half a size prefix
    let started = Instant::now();
    let mut c = Client::connect(broker.local_addr());
    for i in 0..20 {
        let r = c.call(PRODUCE_V, &produce_req("busy", vec![(0, build::simple_batch(2, 10, i))], -1));
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let f = c.call(FETCH_V, &fetch_req("busy", 0, 0, 0, 0));
    assert!(!f.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(stalled);
    drop(half_size);
}

#[test]
fn thousand_concurrent_connections_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    const N: usize = 1000;
    let mut clients: Vec<Client> = (0..N).map(|_| Client::connect(broker.local_addr())).collect();
    let mut cids = Vec::with_capacity(N);
    for c in clients.iter_mut() {
        cids.push(c.send(3, &ApiVersionsRequest::default()));
    }
    for (c, cid) in clients.iter_mut().zip(cids) {
        assert_eq!(c.recv::<ApiVersionsRequest>(3, cid).error_code, 0);
    }
    // Every connection is open at once, and each can still produce.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.connection_count() < N {
        assert!(Instant::now() < deadline, "only {} connections registered", broker.connection_count());
        std::thread::sleep(Duration::from_millis(10));
    }
    for (i, c) in clients.iter_mut().enumerate().step_by(10) {
        let r = c.call(PRODUCE_V, &produce_req("many", vec![(0, build::simple_batch(1, 10, i as i64))], 1));
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    assert_eq!(broker.logs().partition("many", 0).unwrap().high_watermark(), (N / 10) as u64);
}

#[test]
fn fetch_long_poll_wakes_when_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    create_topic(&mut c, "poll", 1);
    let addr = broker.local_addr();
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut p = Client::connect(addr);
        p.call(PRODUCE_V, &produce_req("poll", vec![(0, build::simple_batch(4, 10, 0))], -1));
    });
    let started = Instant::now();
    let f = c.call(FETCH_V, &fetch_req("poll", 0, 0, 10_000, 1));
    let waited = started.elapsed();
    producer.join().unwrap();
    let p = &f.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 4);
    assert!(!p.records.as_ref().unwrap().is_empty());
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "waited {waited:?}");
    // With nothing new, max_wait_ms bounds the wait.
    let started = Instant::now();
    let f = c.call(FETCH_V, &fetch_req("poll", 0, 4, 200, 1));
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert!(f.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
    // Past the end: OFFSET_OUT_OF_RANGE at once.
    let f = c.call(FETCH_V, &fetch_req("poll", 0, 99, 5_000, 1));
    assert_eq!(f.responses[0].partitions[0].error_code, 1);
}

#[test]
fn unknown_topic_with_auto_create_off_is_unknown_topic_or_partition() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(|c| c.auto_create_topics = false, dir.path());
    let mut c = Client::connect(broker.local_addr());
    let r = c.call(PRODUCE_V, &produce_req("nope", vec![(0, build::simple_batch(1, 1, 0))], 1));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 3);
    let m = c.call(12, &MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic("nope")))])));
    assert_eq!(m.topics[0].error_code, 3);
    assert!(broker.logs().topic("nope").is_none());
}

#[test]
fn list_offsets_earliest_latest_and_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    let mut c = Client::connect(broker.local_addr());
    for i in 0..5i64 {
        c.call(PRODUCE_V, &produce_req("ts", vec![(0, build::simple_batch(10, 10, 1_000 * (i + 1)))], 1));
    }
    let query = |c: &mut Client, ts: i64| {
        let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic("ts"))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(ts)])]);
        let r = c.call(7, &req);
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        (p.offset, p.timestamp)
    };
    assert_eq!(query(&mut c, -2).0, 0);
    assert_eq!(query(&mut c, -1).0, 50);
    assert_eq!(query(&mut c, 3_000), (20, 3_000));
    assert_eq!(query(&mut c, 2_500), (20, 3_000));
    assert_eq!(query(&mut c, -3), (40, 5_000));
    assert_eq!(query(&mut c, 99_999).0, -1);
    // Exact to the record inside one batch (Kafka: the first offset whose record timestamp is
    // >= the target): 100 records with timestamps 10_000 + 10 i at offsets 50..150.
    let recs: Vec<build::Rec> = (0..100).map(|i| build::Rec { key: None, value: Some(b"v"), timestamp_delta: i * 10 }).collect();
    c.call(PRODUCE_V, &produce_req("ts", vec![(0, build::batch_with(&recs, 10_000, -1, -1, -1))], 1));
    assert_eq!(query(&mut c, 10_300), (80, 10_300));
    assert_eq!(query(&mut c, 10_295), (80, 10_300));
    assert_eq!(query(&mut c, 10_990), (149, 10_990));
    assert_eq!(query(&mut c, -3), (149, 10_990), "MAX_TIMESTAMP: the record carrying it");
    assert_eq!(query(&mut c, 10_991).0, -1);
}

#[test]
fn every_advertised_version_round_trips_through_the_protocol_crate() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    for v in 0..=4 {
        let r = c.call(v, &ApiVersionsRequest::default());
        assert_eq!(r.error_code, 0, "ApiVersions v{v}");
    }
    for v in 0..=12 {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic("sweep")))]))
            .with_allow_auto_topic_creation(true);
        let r = c.call(v, &req);
        assert_eq!(r.brokers.len(), 1, "Metadata v{v}");
        assert_eq!(r.brokers[0].port as u16, broker.local_addr().port());
        assert_eq!((r.topics[0].error_code, r.topics[0].partitions.len()), (0, 1), "Metadata v{v}");
    }
    let mut expected_offset = 0;
    for v in 3..=11 {
        let r = c.call(v, &produce_req("sweep", vec![(0, build::simple_batch(2, 10, 5))], -1));
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, expected_offset), "Produce v{v}");
        expected_offset += 2;
    }
    for v in 4..=12 {
        let r = c.call(v, &fetch_req("sweep", 0, 0, 0, 0));
        let p = &r.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, expected_offset), "Fetch v{v}");
        assert!(!p.records.as_ref().unwrap().is_empty(), "Fetch v{v}");
    }
    for v in 1..=7 {
        let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic("sweep"))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)])]);
        let r = c.call(v, &req);
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, expected_offset), "ListOffsets v{v}");
    }
    for v in 2..=7 {
        let name = format!("sweep-{v}");
        let req = CreateTopicsRequest::default().with_timeout_ms(1000).with_topics(vec![CreatableTopic::default()
            .with_name(topic(&name))
            .with_num_partitions(2)
            .with_replication_factor(1)]);
        let r = c.call(v, &req);
        assert_eq!(r.topics[0].error_code, 0, "CreateTopics v{v}: {:?}", r.topics[0].error_message);
        let again = c.call(v, &req);
        assert_eq!(again.topics[0].error_code, 36, "CreateTopics v{v}: TOPIC_ALREADY_EXISTS");
        let huge = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(topic("sweep-huge"))
            .with_num_partitions(5_000)
            .with_replication_factor(1)]);
        assert_eq!(c.call(v, &huge).topics[0].error_code, 37, "CreateTopics v{v}: INVALID_PARTITIONS");
        assert_eq!(broker.logs().topic(&name).unwrap().len(), 2);
    }
    for v in 1..=6 {
        let name = format!("sweep-{}", v + 1);
        let req = if v >= 6 {
            DeleteTopicsRequest::default().with_timeout_ms(1000).with_topics(vec![DeleteTopicState::default().with_name(Some(topic(&name)))])
        } else {
            DeleteTopicsRequest::default().with_timeout_ms(1000).with_topic_names(vec![topic(&name)])
        };
        let r = c.call(v, &req);
        assert_eq!(r.responses[0].error_code, 0, "DeleteTopics v{v}");
        assert!(broker.logs().topic(&name).is_none());
        assert_eq!(c.call(v, &req).responses[0].error_code, 3, "DeleteTopics v{v}: unknown topic");
    }
    broker.shutdown().unwrap();
}

#[test]
fn fetch_honours_partition_and_response_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 2);
    let mut c = Client::connect(broker.local_addr());
    create_topic(&mut c, "sized", 2);
    let batch = build::simple_batch(10, 90, 0); // ~1 KiB
    let n = batch.len();
    for _ in 0..10 {
        for p in 0..2 {
            c.call(PRODUCE_V, &produce_req("sized", vec![(p, batch.clone())], 1));
        }
    }
    let req = |partition_max: i32, response_max: i32| {
        FetchRequest::default().with_max_wait_ms(0).with_max_bytes(response_max).with_session_epoch(-1).with_topics(vec![
            FetchTopic::default().with_topic(topic("sized")).with_partitions(
                (0..2).map(|p| FetchPartition::default().with_partition(p).with_fetch_offset(0).with_partition_max_bytes(partition_max)).collect(),
            ),
        ])
    };
    let sizes = |c: &mut Client, pm: i32, rm: i32| -> Vec<usize> {
        let r = c.call(FETCH_V, &req(pm, rm));
        r.responses[0].partitions.iter().map(|p| p.records.as_ref().map_or(0, |b| b.len())).collect()
    };
    // Whole batches within each partition's limit.
    assert_eq!(sizes(&mut c, (n * 2 + n / 2) as i32, 1 << 20), vec![2 * n, 2 * n]);
    // A limit below one batch still returns the first batch of the first partition only.
    assert_eq!(sizes(&mut c, 10, 1 << 20), vec![n, 0]);
    // The response limit caps the sum across partitions.
    assert_eq!(sizes(&mut c, 1 << 20, (n * 3) as i32), vec![3 * n, 0]);
    assert_eq!(sizes(&mut c, 1 << 20, (n * 13) as i32), vec![10 * n, 3 * n]);
}

#[test]
fn acks_zero_failure_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    let mut c = Client::connect(broker.local_addr());
    let mut bad = build::simple_batch(3, 10, 0);
    bad[30] ^= 1;
    c.send(PRODUCE_V, &produce_req("quiet-bad", vec![(0, bad)], 0));
    assert!(c.closed_by_peer(), "a failed acks=0 produce has no response to carry the error");
}

#[test]
fn shutdown_ends_long_polls_promptly_and_restart_keeps_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    let r = c.call(PRODUCE_V, &produce_req("keep", vec![(0, build::simple_batch(7, 10, 0))], -1));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    // A fetch parked for up to 60 s at the end of the log.
    let cid = c.send(FETCH_V, &fetch_req("keep", 0, 7, 60_000, 1));
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    broker.shutdown().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    // The parked fetch was answered (or the connection closed), not left hanging.
    let _ = c.recv_raw().map(|raw| assert_eq!(&raw[0..4], &cid.to_be_bytes()));
    let broker = start_broker(dir.path(), Durability::Group, 1);
    assert_eq!(broker.logs().partition("keep", 0).unwrap().high_watermark(), 7);
    broker.shutdown().unwrap();
}

fn sim_broker(io: &engine::io::SimIo, durability: Durability) -> engine::broker::BrokerHandle {
    let mut cfg = engine::broker::BrokerConfig::new("/data".into(), durability);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    engine::broker::Broker::start_with_io(cfg, std::sync::Arc::new(io.clone())).unwrap()
}

#[test]
fn failed_fdatasync_answers_kafka_storage_error_and_stays_poisoned() {
    let io = engine::io::SimIo::new();
    let broker = sim_broker(&io, Durability::Group);
    let mut c = Client::connect(broker.local_addr());
    let ok = c.call(PRODUCE_V, &produce_req("disk", vec![(0, build::simple_batch(3, 10, 0))], -1));
    assert_eq!(ok.responses[0].partition_responses[0].error_code, 0);
    // Fetch over SimIo goes through the read_at copy path.
    let f = c.call(FETCH_V, &fetch_req("disk", 0, 0, 0, 0));
    assert_eq!(f.responses[0].partitions[0].records.as_ref().unwrap().len(), build::simple_batch(3, 10, 0).len());
    io.fail_sync_in(1);
    let r = c.call(PRODUCE_V, &produce_req("disk", vec![(0, build::simple_batch(3, 10, 0))], -1));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 56, "KAFKA_STORAGE_ERROR");
    let again = c.call(PRODUCE_V, &produce_req("disk", vec![(0, build::simple_batch(3, 10, 0))], -1));
    assert_eq!(again.responses[0].partition_responses[0].error_code, 56, "poisoned partition keeps refusing");
    // The acknowledged data is still served.
    let f = c.call(FETCH_V, &fetch_req("disk", 0, 0, 0, 0));
    assert_eq!(f.responses[0].partitions[0].high_watermark, 3);
}

#[test]
fn disk_full_answers_kafka_storage_error_for_that_partition() {
    let io = engine::io::SimIo::new();
    let broker = sim_broker(&io, Durability::Never);
    let mut c = Client::connect(broker.local_addr());
    let ok = c.call(PRODUCE_V, &produce_req("full", vec![(0, build::simple_batch(3, 10, 0))], 1));
    assert_eq!(ok.responses[0].partition_responses[0].error_code, 0);
    io.set_space_left(Some(0));
    let r = c.call(PRODUCE_V, &produce_req("full", vec![(0, build::simple_batch(300, 100, 0))], 1));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 56, "ENOSPC -> KAFKA_STORAGE_ERROR");
    io.set_space_left(None);
    let r = c.call(PRODUCE_V, &produce_req("full", vec![(0, build::simple_batch(3, 10, 0))], 1));
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 3, "nothing from the failed append was kept");
}

#[test]
fn idempotent_batches_map_sequence_errors_to_kafka_codes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    let recs: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8; 10]).collect();
    let batch = |pid: i64, epoch: i16, seq: i32| {
        let r: Vec<build::Rec<'_>> = recs.iter().map(|v| build::Rec { key: None, value: Some(v), timestamp_delta: 0 }).collect();
        build::batch_with(&r, 0, pid, epoch, seq)
    };
    let mut send = |b: Vec<u8>| {
        let r = c.call(PRODUCE_V, &produce_req("idem", vec![(0, b)], -1));
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    assert_eq!(send(batch(1000, 0, 0)), (0, 0));
    assert_eq!(send(batch(1000, 0, 3)), (0, 3));
    assert_eq!(send(batch(1000, 0, 0)), (0, 0), "a retried batch is acknowledged with its original offset");
    assert_eq!(send(batch(1000, 0, 9)), (45, -1), "OUT_OF_ORDER_SEQUENCE_NUMBER");
    assert_eq!(send(batch(1000, 1, 0)), (0, 6), "a new epoch restarts at sequence 0");
    assert_eq!(send(batch(1000, 0, 6)), (47, -1), "INVALID_PRODUCER_EPOCH");
    // No state for this producer: accepted at any sequence, as Kafka >= 2.x does (not
    // UNKNOWN_PRODUCER_ID, which would make the client reset and resend).
    assert_eq!(send(batch(2000, 0, 7)), (0, 9), "a producer without state");
    assert_eq!(send(batch(2000, 0, 7)), (0, 9), "and its retry is a duplicate");
    assert_eq!(broker.logs().partition("idem", 0).unwrap().high_watermark(), 12, "duplicates stored once");
}

#[test]
fn large_durable_batches_read_back_exactly_with_and_without_direct_io() {
    // Group durability: batches of >= 256 KiB are written by their appender (with
    // `direct_io`, their aligned middle with O_DIRECT), smaller ones through the staging buffer.
    // Mixed, at positions that are not page-aligned, they must read back byte for byte, before
    // and after a restart.
    for direct_io in [true, false] {
        large_durable_batches_round_trip(direct_io);
    }
}

fn large_durable_batches_round_trip(direct_io: bool) {
    let start = |dir: &std::path::Path| {
        start_broker_with(
            |c| {
                c.log.durability = Durability::Group;
                c.log.direct_io = direct_io;
            },
            dir,
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let mut sent = Vec::new();
    for i in 0..8i64 {
        sent.push(if i % 2 == 0 {
            build::simple_batch(2_000 + 37 * i as usize, 200, 1_000 + i) // ~420 KiB: direct
        } else {
            build::simple_batch(3 + i as usize, 50, 1_000 + i) // small: staged
        });
    }
    assert!(sent[0].len() >= 256 << 10 && sent[1].len() < 4096);
    let fetch_all = |c: &mut Client| -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < sent.iter().map(Vec::len).sum::<usize>() {
            let offset = common::split_batches(&got).last().map_or(0, |(i, _)| i.last_offset() + 1);
            let r = c.call(FETCH_V, &fetch_req("big", 0, offset, 0, 1));
            let p = &r.responses[0].partitions[0];
            assert_eq!(p.error_code, 0);
            let b = p.records.clone().unwrap_or_default();
            assert!(!b.is_empty(), "fetch at {offset} returned nothing");
            got.extend_from_slice(&b);
        }
        got
    };
    let check = |got: &[u8]| {
        let batches = common::split_batches(got);
        assert_eq!(batches.len(), sent.len());
        let mut next = 0i64;
        for ((info, stored), s) in batches.iter().zip(&sent) {
            assert_eq!(info.base_offset, next);
            assert!(common::same_except_patched(stored, s), "direct_io {direct_io}: batch at {next} differs from what was produced");
            next = info.last_offset() + 1;
        }
    };
    {
        let broker = start(dir.path());
        let mut c = Client::connect(broker.local_addr());
        for b in &sent {
            let r = c.call(PRODUCE_V, &produce_req("big", vec![(0, b.clone())], -1));
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        }
        check(&fetch_all(&mut c));
        broker.shutdown().unwrap();
    }
    let broker = start(dir.path());
    let mut c = Client::connect(broker.local_addr());
    check(&fetch_all(&mut c));
    broker.shutdown().unwrap();
}

/// Issue 15 (5): batches whose CRC is right but whose records cannot be parsed (garbage under
/// every codec, a wrong record length, a wrong key length, a decompression bomb) are refused
/// with CORRUPT_MESSAGE and store nothing; the connection stays up and the next good batch is
/// stored at offset 0 and read back whole.
#[test]
fn poison_batches_with_a_valid_crc_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    create_topic(&mut c, "poison", 1);
    let plain = build::simple_batch(5, 10, 1_000);
    let recs = &plain[engine::record::BATCH_HEADER_BYTES..];
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut r = recs.to_vec();
        f(&mut r);
        build::reframe(&plain, 0, &r)
    };
    let mut poisons: Vec<(String, Vec<u8>)> = Vec::new();
    for (codec, name) in [(1u8, "gzip"), (2, "snappy"), (3, "lz4"), (4, "zstd")] {
        poisons.push((format!("garbage {name}"), build::reframe(&plain, codec, &[0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])));
        poisons.push((format!("{name} of a bad record length"), build::compressed(&with(&|r| r[0] = 40), codec)));
        // Snappy compresses at most ~21:1, so its bomb is a raw block declaring 1 GiB.
        let bomb = if codec == 2 { vec![0x80, 0x80, 0x80, 0x80, 0x04, 0, 0, 0] } else { build::compress(codec, &vec![0u8; 80 << 20]) };
        assert!(bomb.len() < 1 << 20, "{name} bomb of {} bytes", bomb.len());
        poisons.push((format!("{name} bomb"), build::reframe(&plain, codec, &bomb)));
    }
    poisons.push(("record length too large".into(), with(&|r| r[0] = 34)));
    poisons.push(("key length into the value".into(), with(&|r| r[4] = 10)));
    for (what, batch) in poisons {
        engine::record::validate(&batch, 16 << 20).unwrap_or_else(|e| panic!("{what}: the CRC must be valid: {e}"));
        let r = c.call(PRODUCE_V, &produce_req("poison", vec![(0, batch)], -1));
        assert_eq!(r.responses[0].partition_responses[0].error_code, 2, "{what}: CORRUPT_MESSAGE");
        assert_eq!(broker.logs().partition("poison", 0).unwrap().log_end_offset(), 0, "{what}: nothing stored");
    }
    for codec in [0u8, 3] {
        let good = if codec == 0 { plain.clone() } else { build::compressed(&plain, codec) };
        let r = c.call(PRODUCE_V, &produce_req("poison", vec![(0, good.clone())], -1));
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, if codec == 0 { 0 } else { 5 }));
    }
    let f = c.call(FETCH_V, &fetch_req("poison", 0, 0, 0, 0));
    let got = f.responses[0].partitions[0].records.clone().unwrap();
    let infos = engine::record::validate_all(&got, 16 << 20).unwrap();
    assert_eq!(infos.iter().map(|i| (i.base_offset, i.record_count, i.compression())).collect::<Vec<_>>(), vec![(0, 5, 0), (5, 5, 3)]);
}

/// Issue 15 (6): a batch above message.max.bytes is answered MESSAGE_TOO_LARGE (10), which
/// clients do not retry, not CORRUPT_MESSAGE; one at the limit is stored.
#[test]
fn batch_above_message_max_bytes_gets_message_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    assert_eq!(engine::broker::MESSAGE_MAX_BYTES_DEFAULT, 1_048_588);
    let mut c = Client::connect(broker.local_addr());
    create_topic(&mut c, "big", 1);
    let too_large = build::simple_batch(1, 2 << 20, 0);
    let r = c.call(PRODUCE_V, &produce_req("big", vec![(0, too_large)], -1));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 10, "MESSAGE_TOO_LARGE");
    // 20 MiB: above the log's own 16 MiB bound too; still MESSAGE_TOO_LARGE.
    let huge = build::simple_batch(1, 20 << 20, 0);
    let r = c.call(PRODUCE_V, &produce_req("big", vec![(0, huge)], -1));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 10, "MESSAGE_TOO_LARGE");
    assert_eq!(broker.logs().partition("big", 0).unwrap().log_end_offset(), 0);
    // Exactly at the limit (the 12-byte log overhead included): stored.
    let fit = ((1 << 20) - 100..).map(|n| build::simple_batch(1, n, 0)).find(|b| b.len() >= 1_048_588).unwrap();
    assert_eq!(fit.len(), 1_048_588);
    let r = c.call(PRODUCE_V, &produce_req("big", vec![(0, fit)], -1));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    // The limit is configurable.
    drop(c);
    broker.shutdown().unwrap();
    let broker = start_broker_with(|c| c.message_max_bytes = 4 << 20, dir.path());
    let mut c = Client::connect(broker.local_addr());
    let r = c.call(PRODUCE_V, &produce_req("big", vec![(0, build::simple_batch(1, 2 << 20, 0))], -1));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}
