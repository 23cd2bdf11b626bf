//! Seed corpora for the fuzz targets in engine/fuzz, and a check that every seed is a *valid*
//! input (so the fuzzer starts from the accepting paths: a valid batch validates, a segment image
//! recovers to the expected offsets, an encoded client request decodes back).
//!
//! `FUZZ_SEED_DIR=engine/fuzz/corpus cargo test -p engine --test fault_fuzz_seeds` writes the
//! seeds to `<dir>/<target>/seed-*` (scripts/faults/fuzz.sh does this for an empty corpus).

/// The broker's process allocator (`io::sys::GuardedAlloc`), installed by this test binary as the broker
/// binary does (a library never installs one): hostile array counts must not abort it.
#[global_allocator]
static GLOBAL: engine::io::sys::GuardedAlloc = engine::io::sys::GuardedAlloc;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use engine::io::{Io, SimIo};
use engine::log::{Durability, LogConfig, Notifier, Partition};
use engine::record::{self, build};
use kafka_protocol::messages::{self as km, ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

fn batches() -> Vec<Vec<u8>> {
    let k: &[u8] = b"key";
    let recs = [
        build::Rec { key: Some(k), value: Some(b"value"), timestamp_delta: 0 },
        build::Rec { key: None, value: None, timestamp_delta: 5 },
        build::Rec { key: Some(b""), value: Some(b""), timestamp_delta: -1 },
    ];
    vec![
        build::simple_batch(1, 0, 0),
        build::simple_batch(3, 10, 1_700_000_000_000),
        build::batch_with(&recs, 1_000, 42, 1, 0),
        build::batch_with(&recs[..1], 1_000, 42, 1, 3),
    ]
}

/// Batches patched to consecutive offsets from `base`, concatenated.
fn segment_bytes(base: u64, n: usize) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let mut next = base;
    for b in batches().into_iter().cycle().take(n) {
        let mut b = b;
        record::patch_base_offset(&mut b, next as i64);
        record::patch_leader_epoch(&mut b, 0);
        next += record::validate(&b, 1 << 20).expect("valid").offset_count();
        out.extend(b);
    }
    (out, next)
}

/// recovery_scan input: flags, recovery point u16, split u16, delta u16, segment bytes.
fn recovery_input(flags: u8, rp: u16, split: u16, delta: u16, body: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend(rp.to_be_bytes());
    v.extend(split.to_be_bytes());
    v.extend(delta.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn recovery_seeds() -> Vec<Vec<u8>> {
    let (seg, end) = segment_bytes(0, 6);
    let (first, first_end) = segment_bytes(0, 3);
    let (second, _) = segment_bytes(first_end, 3);
    let mut two = first.clone();
    two.extend(&second);
    let (high, _) = segment_bytes(i64::MAX as u64 - 1000, 3);
    vec![
        recovery_input(0, 0, 0, 0, &seg),
        recovery_input(1, end as u16, 0, 0, &seg),
        recovery_input(0, 0, 0, 0, &seg[..seg.len() - 7]), // torn tail
        recovery_input(3, first_end as u16, first.len() as u16, first_end as u16, &two),
        recovery_input(2, 0, first.len() as u16, first_end as u16, &two),
        recovery_input(8, 0, 0, 0, &high),
        recovery_input(0, 0, 0, 0, &[]),
    ]
}

fn frame(api: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka")));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    header.encode(&mut buf, api.request_header_version(version)).expect("encode header");
    body.encode(&mut buf, version).expect("encode body");
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

fn request_seeds() -> Vec<Vec<u8>> {
    let topic = || km::TopicName(StrBytes::from_static_str("fuzz-topic"));
    let records = Bytes::from(batches().concat());
    let mut out = Vec::new();
    for v in [0, 3, 4] {
        let req = km::ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("librdkafka"))
            .with_client_software_version(StrBytes::from_static_str("2.0.2"));
        out.push(frame(ApiKey::ApiVersions, v, &req));
    }
    for v in [1, 4, 9, 12] {
        let req = km::MetadataRequest::default()
            .with_topics(Some(vec![km::metadata_request::MetadataRequestTopic::default().with_name(Some(topic()))]));
        out.push(frame(ApiKey::Metadata, v, &req));
    }
    for v in [3, 7, 9, 11] {
        let part = km::produce_request::PartitionProduceData::default().with_index(0).with_records(Some(records.clone()));
        let td = km::produce_request::TopicProduceData::default().with_name(topic()).with_partition_data(vec![part]);
        let req = km::ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![td]);
        out.push(frame(ApiKey::Produce, v, &req));
    }
    for v in [4, 11, 12] {
        let part = km::fetch_request::FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20);
        let ft = km::fetch_request::FetchTopic::default().with_topic(topic()).with_partitions(vec![part]);
        let req = km::FetchRequest::default().with_max_wait_ms(500).with_min_bytes(1).with_max_bytes(1 << 24).with_topics(vec![ft]);
        out.push(frame(ApiKey::Fetch, v, &req));
    }
    for v in [1, 7] {
        let part = km::list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-2);
        let t = km::list_offsets_request::ListOffsetsTopic::default().with_name(topic()).with_partitions(vec![part]);
        out.push(frame(ApiKey::ListOffsets, v, &km::ListOffsetsRequest::default().with_topics(vec![t])));
    }
    for v in [2, 7] {
        let t = km::create_topics_request::CreatableTopic::default().with_name(topic()).with_num_partitions(3).with_replication_factor(1);
        out.push(frame(ApiKey::CreateTopics, v, &km::CreateTopicsRequest::default().with_topics(vec![t]).with_timeout_ms(1000)));
    }
    for v in [2, 8] {
        let p = km::offset_commit_request::OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(42);
        let t = km::offset_commit_request::OffsetCommitRequestTopic::default().with_name(topic()).with_partitions(vec![p]);
        let req = km::OffsetCommitRequest::default()
            .with_group_id(km::GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(1)
            .with_member_id(StrBytes::from_static_str("m"))
            .with_topics(vec![t]);
        out.push(frame(ApiKey::OffsetCommit, v, &req));
    }
    out
}

/// Decode a request body of one of the api keys the seeds use (the fuzz target decodes every key).
fn decode_body(api: ApiKey, buf: &mut Bytes, v: i16) {
    let r = match api {
        ApiKey::ApiVersions => km::ApiVersionsRequest::decode(buf, v).map(drop),
        ApiKey::Metadata => km::MetadataRequest::decode(buf, v).map(drop),
        ApiKey::Produce => km::ProduceRequest::decode(buf, v).map(drop),
        ApiKey::Fetch => km::FetchRequest::decode(buf, v).map(drop),
        ApiKey::ListOffsets => km::ListOffsetsRequest::decode(buf, v).map(drop),
        ApiKey::CreateTopics => km::CreateTopicsRequest::decode(buf, v).map(drop),
        ApiKey::OffsetCommit => km::OffsetCommitRequest::decode(buf, v).map(drop),
        other => panic!("no seed decoder for {other:?}"),
    };
    r.unwrap_or_else(|e| panic!("{api:?} v{v}: seed does not decode: {e}"));
}

/// Record batches from the Produce requests of real clients (kcat, confluent-kafka, kafka-python,
/// aiokafka, kafkajs: none, gzip, lz4, zstd) captured into engine/fuzz/seeds/request_decode by
/// scripts/faults/capture_requests.py.
fn captured_produce_batches() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/request_decode");
    let mut names: Vec<_> = std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    names.sort();
    let mut out = Vec::new();
    for path in names.iter().filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("capture-k0-"))) {
        let raw = std::fs::read(path).expect("read captured frame");
        let frame = engine::wire::read_frame(&mut &raw[..], 1 << 20).expect("captured frame");
        let mut buf = Bytes::from(frame);
        let (_, header) = engine::wire::parse_request_header(&mut buf).expect("captured header");
        let req = km::ProduceRequest::decode(&mut buf, header.request_api_version).expect("captured Produce decodes");
        for t in req.topic_data {
            for p in t.partition_data {
                if let Some(r) = p.records {
                    out.push(r.to_vec());
                }
            }
        }
    }
    out
}

fn write_seeds(dir: &Path, target: &str, seeds: &[Vec<u8>]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("mkdir corpus");
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(d.join(format!("seed-{i:03}")), s).expect("write seed");
    }
}

#[test]
fn fuzz_seeds_are_valid_inputs() {
    // record_validate: every seed (and their concatenation) validates.
    let mut rv = batches();
    rv.push(batches().concat());
    for b in &rv {
        let infos = record::validate_all(b, 1 << 20).expect("seed batch validates");
        assert_eq!(infos.iter().map(|i| i.size_bytes).sum::<usize>(), b.len());
    }
    // Real clients' batches (compressed too) are valid for the engine. A few captured frames
    // carry bytes strace read after the client's other threads reused the buffer (bad CRC):
    // they stay fuzz seeds for request_decode but are not counted here.
    let captured = captured_produce_batches();
    let valid: Vec<Vec<u8>> = captured.iter().filter(|b| record::validate_all(b, 1 << 20).is_ok()).cloned().collect();
    let codecs: std::collections::BTreeSet<u8> =
        valid.iter().map(|b| record::validate(b, 1 << 20).expect("valid").compression()).collect();
    println!("captured Produce batches: {} ({} valid), compression codecs {codecs:?}", captured.len(), valid.len());
    assert!(valid.len() * 2 >= captured.len(), "most captured client batches must validate");
    assert!(codecs.len() >= 2, "expected uncompressed and compressed real batches, got codecs {codecs:?}");
    rv.extend(valid);
    // recovery_scan: the plain six-batch segment recovers to its end offset.
    let (seg, end) = segment_bytes(0, 6);
    let io = SimIo::new();
    let dir = Path::new("/d/t-0");
    io.create_dir_all(dir).expect("mkdir");
    let f = io.open(&dir.join("00000000000000000000.log"), true).expect("open");
    f.write_at(&seg, 0).expect("write");
    f.sync_data().expect("sync");
    io.sync_dir(dir).expect("sync dir");
    let cfg = LogConfig { durability: Durability::Group, retention_ms: None, ..LogConfig::default() };
    let p = Partition::open("t", 0, dir, Arc::new(io), cfg, Arc::new(Notifier::default())).expect("recover seed");
    assert_eq!(p.high_watermark(), end);
    // request_decode: every encoded request decodes back with kafka-protocol.
    let reqs = request_seeds();
    for r in &reqs {
        let frame = engine::wire::read_frame(&mut &r[..], 1 << 20).expect("seed is one whole frame");
        let mut buf = Bytes::from(frame);
        let (api, header) = engine::wire::parse_request_header(&mut buf).expect("header parses");
        let version = header.request_api_version;
        decode_body(api, &mut buf, version);
        assert!(buf.is_empty(), "{api:?} v{version}: trailing bytes");
    }
    if let Ok(dir) = std::env::var("FUZZ_SEED_DIR") {
        let dir = PathBuf::from(dir);
        write_seeds(&dir, "record_validate", &rv);
        write_seeds(&dir, "recovery_scan", &recovery_seeds());
        // Plus a pipelined stream of several frames, as a client sends them.
        let mut rd = reqs.clone();
        rd.push(reqs[..5].concat());
        write_seeds(&dir, "request_decode", &rd);
        println!("wrote seed corpora to {}", dir.display());
    }
}
