//! Helpers shared by the engine's integration tests: log-level helpers (partitions on SimIo,
//! tagged and idempotent batches) and broker-level ones (an embedded broker on an ephemeral port,
//! a tiny blocking Kafka client built on the kafka-protocol crate).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use engine::broker::{Broker, BrokerConfig, BrokerHandle};
use engine::io::{Io, SimIo};
use engine::log::{Durability, LogConfig, Notifier, Partition, RecoveryError};
use engine::record::{self, build, BatchInfo};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

pub const MAX: usize = 16 << 20;

/// A small config: tiny segments so tests roll often; retention off unless a test sets it.
pub fn small_cfg(durability: Durability, segment_bytes_max: u64) -> LogConfig {
    LogConfig {
        durability,
        segment_bytes_max,
        segment_age_max_ms: None,
        retention_bytes_max: None,
        retention_ms: None,
        index_interval_bytes: 256,
        batch_bytes_max: 1 << 20,
        preallocate_bytes: 0,
    }
}

pub fn open(io: &Arc<dyn Io>, dir: &Path, cfg: &LogConfig) -> Result<Arc<Partition>, RecoveryError> {
    Partition::open("t", 0, dir, io.clone(), cfg.clone(), Arc::new(Notifier::default()))
}

pub fn sim_io(sim: &SimIo) -> Arc<dyn Io> {
    Arc::new(sim.clone())
}

/// A batch whose records carry `tag` (so tests can tell batches apart) and `records` records
/// of `value_len` bytes each.
pub fn tagged_batch(tag: u64, records: usize, value_len: usize, ts: i64) -> Vec<u8> {
    idempotent_batch(tag, records, value_len, ts, -1, -1, -1)
}

pub fn idempotent_batch(
    tag: u64,
    records: usize,
    value_len: usize,
    ts: i64,
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|i| {
            let mut v = tag.to_be_bytes().to_vec();
            v.extend_from_slice(&(i as u32).to_be_bytes());
            v.resize(value_len.max(12), (tag as u8).wrapping_add(i as u8));
            v
        })
        .collect();
    let recs: Vec<build::Rec<'_>> =
        values.iter().map(|v| build::Rec { key: None, value: Some(v), timestamp_delta: 0 }).collect();
    build::batch_with(&recs, ts, producer_id, epoch, base_sequence)
}

/// Batches of a copied read, each with its bytes.
pub fn split_batches(buf: &[u8]) -> Vec<(BatchInfo, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let info = record::validate(&buf[at..], MAX).expect("stored batch must validate");
        out.push((info, buf[at..at + info.size_bytes].to_vec()));
        at += info.size_bytes;
    }
    out
}

/// Every batch from the log start up to the high watermark, checking offsets are contiguous.
pub fn read_all(p: &Partition) -> Vec<(BatchInfo, Vec<u8>)> {
    let mut out: Vec<(BatchInfo, Vec<u8>)> = Vec::new();
    let mut next = p.log_start_offset();
    let hw = p.high_watermark();
    while next < hw {
        let bytes = p.read_copy(next as i64, 1 << 20).expect("read below the high watermark");
        assert!(!bytes.is_empty(), "read at {next} below hw {hw} returned nothing");
        for (info, b) in split_batches(&bytes) {
            assert!(
                info.base_offset as u64 <= next && info.last_offset() as u64 >= next,
                "batch [{}, {}] does not hold offset {next}",
                info.base_offset,
                info.last_offset()
            );
            if info.base_offset as u64 == next || out.is_empty() {
                next = info.last_offset() as u64 + 1;
                out.push((info, b));
            } else {
                panic!("offset gap: expected batch at {next}, got {}", info.base_offset);
            }
        }
    }
    out
}

/// Stored bytes equal what was sent, except the two fields the log patches (baseOffset,
/// partitionLeaderEpoch), which are outside the CRC.
pub fn same_except_patched(stored: &[u8], sent: &[u8]) -> bool {
    stored.len() == sent.len() && stored[8..12] == sent[8..12] && stored[16..] == sent[16..]
}


pub fn start_broker(dir: &Path, durability: Durability, partitions: i32) -> BrokerHandle {
    let mut cfg = BrokerConfig::new(dir.to_path_buf(), durability);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.default_partitions = partitions;
    Broker::start(cfg).expect("broker starts")
}

pub fn start_broker_with(cfg_fn: impl FnOnce(&mut BrokerConfig), dir: &Path) -> BrokerHandle {
    let mut cfg = BrokerConfig::new(dir.to_path_buf(), Durability::Never);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg_fn(&mut cfg);
    Broker::start(cfg).expect("broker starts")
}

/// A blocking client: encode requests with kafka-protocol, read length-prefixed responses.
pub struct Client {
    pub stream: TcpStream,
    next_cid: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, next_cid: 1 }
    }

    /// Encode a request frame (size prefix included) without sending it.
    pub fn frame<R: Request>(&mut self, version: i16, req: &R) -> (i32, Vec<u8>) {
        let cid = self.next_cid;
        self.next_cid += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(cid)
            .with_client_id(Some(StrBytes::from_static_str("engine-test")));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 0]);
        header.encode(&mut buf, R::header_version(version)).unwrap();
        req.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        (cid, buf.to_vec())
    }

    pub fn send<R: Request>(&mut self, version: i16, req: &R) -> i32 {
        let (cid, f) = self.frame(version, req);
        self.stream.write_all(&f).expect("send");
        cid
    }

    /// Read one raw response frame (without the size prefix). Err on EOF/timeout.
    pub fn recv_raw(&mut self) -> std::io::Result<Vec<u8>> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let n = i32::from_be_bytes(size);
        assert!(n >= 4, "bad response size {n}");
        let mut buf = vec![0u8; n as usize];
        self.stream.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Read a response of request type `R` and check its correlation id.
    pub fn recv<R: Request>(&mut self, version: i16, cid: i32) -> R::Response {
        let raw = self.recv_raw().expect("response");
        let mut b = Bytes::from(raw);
        let hv = <R::Response as HeaderVersion>::header_version(version);
        let h = ResponseHeader::decode(&mut b, hv).expect("response header");
        assert_eq!(h.correlation_id, cid, "responses out of order");
        R::Response::decode(&mut b, version).expect("response body")
    }

    pub fn call<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        let cid = self.send(version, req);
        self.recv::<R>(version, cid)
    }

    /// True if the broker closed the connection (EOF) within the read timeout.
    pub fn closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0)) || matches!(self.stream.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

pub fn api_key_of<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).unwrap()
}

/// Path of an executable on PATH, or panic with a hint (CI installs the interop clients).
pub fn require_tool(name: &str) -> std::path::PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: `apt-get install -y kcat` / `pip install confluent-kafka` (.ci/run does this)");
}

/// Run a command to completion within `limit`, feeding `stdin`; returns stdout.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> Vec<u8> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let feeder = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            pipe.write_all(&data).unwrap();
        })
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out_pipe, &mut v).unwrap();
        v
    });
    let mut err_pipe = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err_pipe, &mut v).unwrap();
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    let out = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success(), "{cmd:?} failed: {status}\n{}", String::from_utf8_lossy(&err));
    out
}

