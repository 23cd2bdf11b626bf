//! Mutated requests of every served API and version: the broker never panics (not even in a
//! connection thread), and keeps serving well-formed requests afterwards.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{start_broker, Client};
use engine::log::Durability;
use engine::record::build;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rand::{Rng, SeedableRng};

static PANICS: AtomicUsize = AtomicUsize::new(0);

const ITERATIONS_MAX: usize = 5_000;
const TIME_BUDGET: Duration = Duration::from_secs(20);

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Valid request frames (size prefix included) of every API and version the broker serves.
fn seeds(c: &mut Client) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let batch = Bytes::from(build::simple_batch(3, 20, 0));
    for v in 0..=4 {
        out.push(c.frame(v, &ApiVersionsRequest::default()).1);
    }
    for v in 0..=12 {
        let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name("fz")))]));
        out.push(c.frame(v, &req).1);
    }
    for v in 3..=11 {
        let req = ProduceRequest::default().with_acks(1).with_timeout_ms(1000).with_topic_data(vec![TopicProduceData::default()
            .with_name(name("fz"))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch.clone()))])]);
        out.push(c.frame(v, &req).1);
    }
    for v in 4..=12 {
        let req = FetchRequest::default().with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(1 << 20).with_topics(vec![FetchTopic::default()
            .with_topic(name("fz"))
            .with_partitions(vec![FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20)])]);
        out.push(c.frame(v, &req).1);
    }
    for v in 1..=7 {
        let req = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("fz"))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)])]);
        out.push(c.frame(v, &req).1);
    }
    for v in 2..=7 {
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default().with_name(name("fz2")).with_num_partitions(1).with_replication_factor(1)]);
        out.push(c.frame(v, &req).1);
    }
    for v in 1..=5 {
        out.push(c.frame(v, &DeleteTopicsRequest::default().with_topic_names(vec![name("fz2")])).1);
    }
    out.extend(admin_seeds(c));
    out.extend(consumer_group_seeds(c));
    out
}

/// The consumer group protocol (KIP-848): ConsumerGroupHeartbeat joins by names and by regex,
/// a heartbeat naming owned partitions (by topic id), ConsumerGroupDescribe.
fn consumer_group_seeds(c: &mut Client) -> Vec<Vec<u8>> {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    let mut out = Vec::new();
    let group = || GroupId(StrBytes::from_static_str("fzc"));
    for v in 0..=1 {
        let mut join = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group())
            .with_member_id(StrBytes::from_string(if v == 0 { String::new() } else { format!("fz-member-{v}") }))
            .with_rebalance_timeout_ms(1000)
            .with_server_assignor(Some(StrBytes::from_static_str("range")))
            .with_topic_partitions(Some(vec![]));
        join = if v == 0 {
            join.with_subscribed_topic_names(Some(vec![name("fz")]))
        } else {
            join.with_subscribed_topic_regex(Some(StrBytes::from_static_str("f[a-z]+")))
        };
        out.push(c.frame(v, &join).1);
        let owned = TopicPartitions::default().with_topic_id(engine::groups::topic_id("fz")).with_partitions(vec![0]);
        let hb = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group())
            .with_member_id(StrBytes::from_static_str("fz-member-1"))
            .with_member_epoch(1)
            .with_topic_partitions(Some(vec![owned]));
        out.push(c.frame(v, &hb).1);
        out.push(c.frame(v, &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group()])).1);
    }
    out
}

/// The admin APIs: DescribeConfigs, DescribeLogDirs, CreatePartitions, DescribeCluster,
/// DeleteGroups, OffsetDelete.
fn admin_seeds(c: &mut Client) -> Vec<Vec<u8>> {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
    let mut out = Vec::new();
    for v in 1..=4 {
        let req = DescribeConfigsRequest::default().with_include_synonyms(true).with_resources(vec![
            DescribeConfigsResource::default().with_resource_type(2).with_resource_name(StrBytes::from_static_str("fz")),
            DescribeConfigsResource::default().with_resource_type(4).with_resource_name(StrBytes::from_static_str("0")),
        ]);
        out.push(c.frame(v, &req).1);
        let req = DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default().with_topic(name("fz")).with_partitions(vec![0])]));
        out.push(c.frame(v, &req).1);
    }
    for v in 0..=3 {
        let req = CreatePartitionsRequest::default()
            .with_validate_only(v % 2 == 0)
            .with_topics(vec![CreatePartitionsTopic::default().with_name(name("fz")).with_count(2)]);
        out.push(c.frame(v, &req).1);
    }
    for v in 0..=2 {
        out.push(c.frame(v, &DescribeClusterRequest::default()).1);
        out.push(c.frame(v, &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_static_str("fzg"))])).1);
    }
    let req = OffsetDeleteRequest::default().with_group_id(GroupId(StrBytes::from_static_str("fzg"))).with_topics(vec![
        OffsetDeleteRequestTopic::default()
            .with_name(name("fz"))
            .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
    ]);
    out.push(c.frame(0, &req).1);
    out
}

fn mutate(rng: &mut rand::rngs::StdRng, seed: &[u8]) -> Vec<u8> {
    let mut body = seed[4..].to_vec();
    match rng.gen_range(0..5) {
        0 => {
            // Flip a few bytes (the API key and version are left alone half of the time).
            for _ in 0..rng.gen_range(1..4) {
                let lo = if rng.gen_bool(0.5) { 4 } else { 0 };
                let i = rng.gen_range(lo..body.len().max(lo + 1)).min(body.len() - 1);
                body[i] ^= rng.gen::<u8>() | 1;
            }
        }
        1 => {
            let n = rng.gen_range(4..body.len().max(5));
            body.truncate(n);
        }
        2 => {
            // A large or negative length/count somewhere.
            if body.len() > 12 {
                let i = rng.gen_range(8..body.len() - 4);
                let v: i32 = *[i32::MAX, -2, 0x7fff, 1 << 24, -1].get(rng.gen_range(0..5)).unwrap_or(&-1);
                body[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
        3 => {
            let extra: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
            body.extend_from_slice(&extra);
        }
        _ => {
            let i = rng.gen_range(8..body.len().max(9)).min(body.len());
            for b in &mut body[i..] {
                *b = rng.gen();
            }
        }
    }
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

#[test]
fn mutated_requests_never_panic_and_the_broker_keeps_serving() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Never, 1);
    let addr = broker.local_addr();
    let mut probe = Client::connect(addr);
    let seeds = seeds(&mut probe);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_f022);
    let started = Instant::now();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let mut sent = 0;
    for _ in 0..ITERATIONS_MAX {
        if started.elapsed() > TIME_BUDGET {
            break;
        }
        let seed = &seeds[rng.gen_range(0..seeds.len())];
        let frame = mutate(&mut rng, seed);
        if conn.write_all(&frame).is_err() {
            conn = std::net::TcpStream::connect(addr).unwrap();
            continue;
        }
        sent += 1;
        // Drain whatever comes back (a response or a close), briefly.
        conn.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let mut buf = [0u8; 65536];
        match conn.read(&mut buf) {
            Ok(0) => conn = std::net::TcpStream::connect(addr).unwrap(),
            Ok(_) => {}
            Err(_) => {
                // Nothing yet (a truncated frame waits for more bytes): start afresh.
                conn = std::net::TcpStream::connect(addr).unwrap();
            }
        }
    }
    eprintln!("{sent} mutated requests in {:?}", started.elapsed());
    assert!(sent > 100, "only {sent} mutated requests sent");
    // Still serving, on a new connection and on the old probe connection.
    let mut c = Client::connect(addr);
    assert_eq!(c.call(3, &ApiVersionsRequest::default()).error_code, 0);
    assert_eq!(probe.call(3, &ApiVersionsRequest::default()).error_code, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a broker thread panicked on network input");
    let t = Instant::now();
    broker.shutdown().unwrap();
    eprintln!("shutdown took {:?}", t.elapsed());
}
