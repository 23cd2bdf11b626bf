//! Throughput of the broker over loopback: pipelined Produce (100-byte records) and Fetch.
//!
//! ```text
//! cargo run --release -p engine --example broker_bench -- --durability never
//! cargo run --release -p engine --example broker_bench -- --durability group --fetch-seconds 5
//! ```
//!
//! By default the broker is embedded (same process, its own threads) on an ephemeral port with
//! a temporary data directory; `--addr` points the clients at an external broker instead.
//! Producers: `--connections` threads, each keeping `--inflight` Produce requests (acks=-1) in
//! flight, each request one batch of `--batch-bytes` of 100-byte records to one partition
//! (partitions rotate). Consumers: one thread per connection fetching its partitions from
//! offset 0 to the end and around again, for `--fetch-seconds`.

/// The broker's process allocator (`io::sys::GuardedAlloc`), installed by this binary as the broker
/// binary does (a library never installs one): hostile array counts must not abort it.
#[global_allocator]
static GLOBAL: engine::io::sys::GuardedAlloc = engine::io::sys::GuardedAlloc;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use engine::broker::{Broker, BrokerConfig};
use engine::log::Durability;
use engine::record::{self, build};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "never")]
    durability: Durability,
    /// External broker; default: embedded.
    #[arg(long)]
    addr: Option<SocketAddr>,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    #[arg(long, default_value_t = 256 << 10)]
    batch_bytes: usize,
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of the fetch phase (0 = skip).
    #[arg(long, default_value_t = 5.0)]
    fetch_seconds: f64,
    /// Per-partition max bytes of a Fetch.
    #[arg(long, default_value_t = 8 << 20)]
    fetch_partition_bytes: i32,
    /// Embedded broker: large produce batches (>= 256 KiB, group durability) with O_DIRECT
    /// (`--direct-io true`) or through the page cache (the default).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    direct_io: bool,
    /// Embedded broker: walk every produced record (the default, as the broker does) or only
    /// check batch headers and CRCs (`--validate-records false`: measures what the walk costs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    validate_records: bool,
    /// Codec of the produced batches: none or lz4 (built once per connection).
    #[arg(long, default_value = "none")]
    compression: String,
    /// Data directory for the embedded broker (default: a temporary one).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

const TOPIC: &str = "bench";
const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;

fn frame<R: Request>(cid: i32, version: i16, req: &R) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(cid)
        .with_client_id(Some(StrBytes::from_static_str("broker_bench")));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    header.encode(&mut buf, R::header_version(version)).expect("encode header");
    req.encode(&mut buf, version).expect("encode request");
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size)?;
    let n = i32::from_be_bytes(size) as usize;
    buf.resize(n, 0);
    s.read_exact(buf)
}

fn produce_conn(addr: SocketAddr, conn: usize, args: Arc<Args>, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let per_batch = (args.batch_bytes / (args.record_bytes + 8)).max(1);
    let plain = build::simple_batch(per_batch, args.record_bytes, engine::log::now_ms());
    let batch = Bytes::from(match args.compression.as_str() {
        "none" => plain,
        "lz4" => build::compressed(&plain, 3),
        other => panic!("--compression {other}: none or lz4"),
    });
    // Pre-encode one request per partition this connection writes to.
    let parts: Vec<i32> = (0..args.partitions).filter(|p| *p as usize % args.connections == conn % args.connections).collect();
    let parts = if parts.is_empty() { vec![(conn as i32) % args.partitions] } else { parts };
    let frames: Vec<Vec<u8>> = parts
        .iter()
        .map(|&p| {
            let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![PartitionProduceData::default().with_index(p).with_records(Some(batch.clone()))])]);
            frame(0, PRODUCE_V, &req)
        })
        .collect();
    let mut next = 0usize;
    let mut outstanding = 0usize;
    let mut rbuf = Vec::new();
    loop {
        while outstanding < args.inflight && !stop.load(Ordering::Relaxed) {
            let f = &frames[next % frames.len()];
            next += 1;
            s.write_all(f).expect("send produce");
            outstanding += 1;
        }
        if outstanding == 0 {
            break;
        }
        read_frame(&mut s, &mut rbuf).expect("produce response");
        let mut b = Bytes::from(std::mem::take(&mut rbuf));
        ResponseHeader::decode(&mut b, ProduceResponse::header_version(PRODUCE_V)).expect("header");
        let r = ProduceResponse::decode(&mut b, PRODUCE_V).expect("produce response");
        for t in &r.responses {
            for p in &t.partition_responses {
                assert_eq!(p.error_code, 0, "produce error on partition {}", p.index);
            }
        }
        outstanding -= 1;
        if !stop.load(Ordering::Relaxed) {
            acked.fetch_add(per_batch as u64, Ordering::Relaxed);
        }
    }
}

fn fetch_conn(addr: SocketAddr, conn: usize, args: Arc<Args>, stop: Arc<AtomicBool>, bytes: Arc<AtomicU64>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let parts: Vec<i32> = (0..args.partitions).filter(|p| *p as usize % args.connections == conn % args.connections).collect();
    let mut offsets = vec![0i64; parts.len()];
    let mut rbuf = Vec::new();
    let mut cid = 0;
    while !stop.load(Ordering::Relaxed) {
        cid += 1;
        let topics = vec![FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str(TOPIC))).with_partitions(
            parts
                .iter()
                .zip(&offsets)
                .map(|(&p, &o)| FetchPartition::default().with_partition(p).with_fetch_offset(o).with_partition_max_bytes(args.fetch_partition_bytes))
                .collect(),
        )];
        let req = FetchRequest::default()
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_session_epoch(-1)
            .with_topics(topics);
        s.write_all(&frame(cid, FETCH_V, &req)).expect("send fetch");
        // One reused buffer (no per-response allocation or zeroing) and a hand walk of the
        // v12 response: the client costs one kernel→user copy per record byte, no more.
        read_frame(&mut s, &mut rbuf).expect("fetch response");
        let got = walk_fetch_v12(&rbuf, &mut offsets).expect("well-formed fetch response");
        bytes.fetch_add(got, Ordering::Relaxed);
    }
}

/// Parse a Fetch v12 response (one topic) in place: advance `offsets` past the last batch of
/// each partition (wrapping to 0 at the high watermark); returns the record bytes.
fn walk_fetch_v12(b: &[u8], offsets: &mut [i64]) -> Option<u64> {
    struct Cur<'a>(&'a [u8], usize);
    impl Cur<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let s = self.0.get(self.1..self.1 + n)?;
            self.1 += n;
            Some(s)
        }
        fn uvarint(&mut self) -> Option<u64> {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let byte = *self.take(1)?.first()?;
                v |= ((byte & 0x7f) as u64) << shift;
                if byte < 0x80 {
                    return Some(v);
                }
                shift += 7;
            }
        }
        fn i16(&mut self) -> Option<i16> {
            Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
        }
        fn i64(&mut self) -> Option<i64> {
            Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
    }
    let mut c = Cur(b, 0);
    c.take(4 + 1 + 4)?; // correlation id, header tags, throttle
    if c.i16()? != 0 {
        return None;
    }
    c.take(4)?; // session id
    let topics = c.uvarint()?.checked_sub(1)?;
    let mut total = 0u64;
    for _ in 0..topics {
        let name_len = c.uvarint()?.checked_sub(1)? as usize;
        c.take(name_len)?;
        let parts = c.uvarint()?.checked_sub(1)? as usize;
        for i in 0..parts {
            c.take(4)?; // partition index
            if c.i16()? != 0 {
                return None;
            }
            let hw = c.i64()?;
            c.take(8 + 8)?; // last stable offset, log start offset
            if let Some(n) = c.uvarint()?.checked_sub(1) {
                c.take(n as usize * 17)?; // aborted transactions (producer id, first offset, tags)
            }
            c.take(4)?; // preferred read replica
            let n = c.uvarint()?.saturating_sub(1) as usize;
            let recs = c.take(n)?;
            total += n as u64;
            let mut at = 0usize;
            let mut next = *offsets.get(i)?;
            while at < recs.len() {
                let Ok(h) = record::parse_header(&recs[at..], 64 << 20) else { break };
                next = h.last_offset() + 1;
                at += h.size_bytes;
            }
            offsets[i] = if next >= hw { 0 } else { next };
            c.uvarint()?; // partition tags (none)
        }
        c.uvarint()?; // topic tags
    }
    Some(total)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.to_string()))
        .unwrap_or_default();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("cpu: {cpu}; cores: {cores}; {mem}; kernel {}; commit {commit}", kernel.trim())
}

fn main() {
    let args = Arc::new(Args::parse());
    let (addr, broker) = match args.addr {
        Some(a) => (a, None),
        None => {
            let dir = match &args.data_dir {
                Some(d) => d.clone(),
                None => std::env::temp_dir().join(format!("broker_bench-{}", std::process::id())),
            };
            let mut cfg = BrokerConfig::new(dir, args.durability);
            cfg.listen = "127.0.0.1:0".parse().expect("addr");
            cfg.default_partitions = args.partitions;
            cfg.log.direct_io = args.direct_io;
            cfg.log.validate_records = args.validate_records;
            let b = Broker::start(cfg).expect("broker");
            (b.local_addr(), Some(b))
        }
    };
    println!("# broker_bench: {}", machine());
    let per_batch = (args.batch_bytes / (args.record_bytes + 8)).max(1);
    println!(
        "# durability={} direct_io={} validate_records={} compression={} connections={} partitions={} records/batch={} record_bytes={} inflight={} (embedded={})",
        args.durability,
        args.direct_io,
        args.validate_records,
        args.compression,
        args.connections,
        args.partitions,
        per_batch,
        args.record_bytes,
        args.inflight,
        broker.is_some()
    );

    // Produce phase.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..args.connections)
        .map(|c| {
            let (a, s, k) = (args.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || produce_conn(addr, c, a, s, k))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let n = acked.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("producer thread");
    }
    let rate = n as f64 / secs;
    println!(
        "produce: {n} records in {secs:.2} s = {:.2} M records/s, {:.0} MB/s of record payload",
        rate / 1e6,
        rate * args.record_bytes as f64 / 1e6
    );

    if args.fetch_seconds > 0.0 {
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let handles: Vec<_> = (0..args.connections.min(args.partitions as usize))
            .map(|c| {
                let (a, s, k) = (args.clone(), stop.clone(), bytes.clone());
                std::thread::spawn(move || fetch_conn(addr, c, a, s, k))
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(args.fetch_seconds));
        let n = bytes.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("fetch thread");
        }
        println!("fetch: {n} record bytes in {secs:.2} s = {:.2} GB/s", n as f64 / secs / 1e9);
    }
    if let Some(b) = broker {
        let dir = b.logs().dir().to_path_buf();
        b.shutdown().expect("shutdown");
        if args.data_dir.is_none() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
