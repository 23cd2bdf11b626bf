//! Test-only scripted Kafka broker on loopback, shared by the unit tests of `client` (producer
//! retries, failover) and `consumer` (consumer failover): it answers ApiVersions with the APIs a
//! test gives and Metadata naming one leader for partition 0 of topic "t"; every other request
//! goes to the test's handler with its frame (header not yet decoded).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::client::{read_frame, topic_name};

/// A script entry that closes the connection instead of answering.
pub const CLOSE: i16 = i16::MIN;

/// What the handler wants after a request.
pub enum Served {
    Continue,
    /// Stop serving this connection (the handler closed or will close it).
    Close,
}

/// Write a response with its header and size prefix.
pub fn respond<R: Encodable + HeaderVersion>(s: &mut TcpStream, corr: i32, version: i16, r: &R) {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0, 0, 0, 0]);
    ResponseHeader::default().with_correlation_id(corr).encode(&mut buf, R::header_version(version)).unwrap();
    r.encode(&mut buf, version).unwrap();
    let n = (buf.len() - 4) as u32;
    buf[0..4].copy_from_slice(&n.to_be_bytes());
    s.write_all(&buf).unwrap();
}

/// Decode a request's header (the frame then holds its body).
pub fn header<Q: HeaderVersion>(frame: &mut Bytes, version: i16) -> RequestHeader {
    RequestHeader::decode(frame, Q::header_version(version)).unwrap()
}

/// Serve every connection (each on its own thread): ApiVersions advertises `apis` (plus
/// Metadata 1..9), Metadata names `leader` (this broker when None) as node 1, the leader of
/// partition 0 of topic "t"; other requests go to `handler(stream, api key, version, frame)`.
pub fn serve<H>(apis: Vec<(ApiKey, i16, i16)>, leader: Option<SocketAddr>, handler: H) -> SocketAddr
where
    H: Fn(&mut TcpStream, i16, i16, Bytes) -> Served + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let leader = leader.unwrap_or(addr);
    let handler = Arc::new(handler);
    let apis = Arc::new(apis);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let (handler, apis) = (handler.clone(), apis.clone());
            std::thread::spawn(move || {
                while let Ok(mut frame) = read_frame(&mut s) {
                    let key = i16::from_be_bytes([frame[0], frame[1]]);
                    let v = i16::from_be_bytes([frame[2], frame[3]]);
                    if key == ApiKey::ApiVersions as i16 {
                        let h = header::<ApiVersionsRequest>(&mut frame, v);
                        let mut keys: Vec<ApiVersion> = apis
                            .iter()
                            .map(|(k, lo, hi)| ApiVersion::default().with_api_key(*k as i16).with_min_version(*lo).with_max_version(*hi))
                            .collect();
                        keys.push(ApiVersion::default().with_api_key(ApiKey::Metadata as i16).with_min_version(1).with_max_version(9));
                        respond(&mut s, h.correlation_id, v, &ApiVersionsResponse::default().with_api_keys(keys));
                    } else if key == ApiKey::Metadata as i16 {
                        let h = header::<MetadataRequest>(&mut frame, v);
                        let r = MetadataResponse::default()
                            .with_brokers(vec![MetadataResponseBroker::default()
                                .with_node_id(BrokerId(1))
                                .with_host(StrBytes::from(leader.ip().to_string()))
                                .with_port(leader.port() as i32)])
                            .with_topics(vec![MetadataResponseTopic::default().with_name(Some(topic_name("t"))).with_partitions(vec![
                                MetadataResponsePartition::default().with_partition_index(0).with_leader_id(BrokerId(1)),
                            ])]);
                        respond(&mut s, h.correlation_id, v, &r);
                    } else if let Served::Close = handler(&mut s, key, v, frame) {
                        return;
                    }
                }
            });
        }
    });
    addr
}
