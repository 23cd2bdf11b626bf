//! Every request frame captured from the real clients the tests use decodes with the broker's
//! decoder (`wire::read_frame`, `wire::parse_request_header`, `wire::decode_request_body`) at a
//! version the broker advertises, with nothing left after the body — except the one quirk Kafka
//! itself tolerates: librdkafka >= 2.16's all-topics Metadata (v9+) carries 3 bytes after its
//! body (a 4-byte array-count placeholder of which Kafka's decoder reads 1 byte). And each
//! frame replayed against a live broker is answered, not dropped.
//!
//! The fixtures are `engine/fuzz/seeds/request_decode/capture-k<key>-v<version>-<hash>` (also the
//! request_decode fuzz seeds), listed with their client in `request_decode.clients`; regenerate
//! with `scripts/faults/capture_requests.py target/debug/broker engine/fuzz/seeds/request_decode`
//! (docs/FAULTS.md). Clients: kcat (librdkafka 2.0.2, apt), confluent-kafka (librdkafka 2.x,
//! PyPI), kafka-python, aiokafka (PyPI), kafkajs (npm).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bytes::Bytes;
use engine::wire;
use kafka_protocol::messages::{ApiKey, MetadataRequest};
use kafka_protocol::protocol::Decodable;

const CLIENTS: [&str; 5] = ["kcat", "confluent-kafka", "kafka-python", "aiokafka", "kafkajs"];

fn advertised(key: i16) -> Option<(i16, i16)> {
    engine::broker::BROKER_APIS
        .iter()
        .chain(engine::groups::SUPPORTED_APIS.iter())
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

#[test]
fn every_captured_client_request_decodes_with_the_broker_decoder() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/request_decode");
    let manifest = std::fs::read_to_string(dir.with_extension("clients")).expect("request_decode.clients");
    let mut per_client: BTreeMap<&str, BTreeSet<i16>> = BTreeMap::new();
    let mut quirks = 0;
    let mut decoded = 0;
    for line in manifest.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, client) = line.split_once(' ').expect("'file client' line");
        let client = client.trim();
        let client = *CLIENTS.iter().find(|c| **c == client).unwrap_or_else(|| panic!("{name}: unknown client {client}"));
        let raw = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let frame = wire::read_frame(&mut &raw[..], 1 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut body = Bytes::from(frame);
        let (api, header) = wire::parse_request_header(&mut body).unwrap_or_else(|e| panic!("{name} ({client}): {e}"));
        let v = header.request_api_version;
        if api != ApiKey::ApiVersions {
            let (lo, hi) = advertised(api as i16).unwrap_or_else(|| panic!("{name} ({client}): {api:?} is not advertised"));
            assert!((lo..=hi).contains(&v), "{name} ({client}): {api:?} v{v} outside the advertised {lo}..={hi}");
        }
        let rest = body.clone();
        let trailing = wire::decode_request_body(api, v, &mut body).unwrap_or_else(|e| panic!("{name} ({client}): {api:?} v{v}: {e}"));
        if trailing != 0 {
            // Only librdkafka's all-topics Metadata quirk, exactly.
            let all_topics = MetadataRequest::decode(&mut rest.clone(), v).map(|m| m.topics.is_none()).unwrap_or(false);
            assert!(
                client == "confluent-kafka" && api == ApiKey::Metadata && v >= 9 && all_topics && body[..] == [1, 0, 0],
                "{name} ({client}): {api:?} v{v}: {trailing} bytes after the body: {:02x?}",
                &body[..]
            );
            quirks += 1;
        }
        decoded += 1;
        per_client.entry(client).or_default().insert(api as i16);
    }
    println!("client fixtures: {decoded} frames decoded, {quirks} with librdkafka's Metadata trailing bytes; API keys per client: {per_client:?}");
    for c in CLIENTS {
        let keys = per_client.get(c).unwrap_or_else(|| panic!("no fixture from {c}"));
        for key in [0, 1, 3, 18] {
            assert!(keys.contains(&key), "{c}: no fixture of API key {key} (Produce, Fetch, Metadata, ApiVersions expected)");
        }
    }
    assert!(quirks >= 1, "the librdkafka 2.16 all-topics Metadata v12 frame must be among the fixtures");
}

/// Every captured frame, replayed byte for byte on its own connection to a live broker, is
/// answered (a response carrying its correlation id) rather than closing the connection —
/// except acks=0 Produce (no response by design) and JoinGroup/SyncGroup, which may park for a
/// rebalance timeout.
#[test]
fn every_captured_client_request_is_answered_by_the_broker() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/request_decode");
    let manifest = std::fs::read_to_string(dir.with_extension("clients")).expect("request_decode.clients");
    let data = tempfile::tempdir().unwrap();
    let broker = common::start_broker(data.path(), engine::log::Durability::Group, 3);
    let addr = broker.local_addr();
    let mut handles = Vec::new();
    for line in manifest.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, client) = line.split_once(' ').expect("'file client' line");
        let (name, client) = (name.to_string(), client.trim().to_string());
        let raw = std::fs::read(dir.join(&name)).unwrap();
        let mut body = Bytes::from(raw[4..].to_vec());
        let (api, header) = wire::parse_request_header(&mut body).unwrap();
        let acks0 = api == ApiKey::Produce
            && kafka_protocol::messages::ProduceRequest::decode(&mut body.clone(), header.request_api_version).unwrap().acks == 0;
        if acks0 || api == ApiKey::JoinGroup || api == ApiKey::SyncGroup {
            continue;
        }
        handles.push(std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(&raw).unwrap();
            let mut size = [0u8; 4];
            s.read_exact(&mut size).unwrap_or_else(|e| panic!("{name} ({client}) {api:?}: no response: {e}"));
            let mut resp = vec![0u8; i32::from_be_bytes(size) as usize];
            s.read_exact(&mut resp).unwrap();
            assert_eq!(&resp[..4], &header.correlation_id.to_be_bytes(), "{name} ({client}): correlation id");
            api
        }));
    }
    let answered: BTreeSet<i16> = handles.into_iter().map(|h| h.join().expect("replay thread") as i16).collect();
    println!("client fixtures replayed: API keys answered {answered:?}");
    broker.shutdown().unwrap();
}
