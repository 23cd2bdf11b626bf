//! Every request frame captured from the real clients the tests use decodes with the broker's
//! decoder (`wire::read_frame`, `wire::parse_request_header`, `wire::decode_request_body`) at a
//! version the broker advertises, with nothing left after the body — except the one quirk Kafka
//! itself tolerates: librdkafka >= 2.16's all-topics Metadata (v9+) carries 3 bytes after its
//! body (a 4-byte array-count placeholder of which Kafka's decoder reads 1 byte).
//!
//! The fixtures are `engine/fuzz/seeds/request_decode/capture-k<key>-v<version>-<hash>` (also the
//! request_decode fuzz seeds), listed with their client in `request_decode.clients`; regenerate
//! with `scripts/faults/capture_requests.py target/debug/broker engine/fuzz/seeds/request_decode`
//! (docs/FAULTS.md). Clients: kcat (librdkafka 2.0.2, apt), confluent-kafka (librdkafka 2.x,
//! PyPI), kafka-python, aiokafka (PyPI), kafkajs (npm).

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
