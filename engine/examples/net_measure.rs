//! Client side of `scripts/net-measure` (issue 18): drives a running broker process and reads
//! its threads, memory and CPU from /proc.
//!
//! ```text
//! net_measure idle     --addr A --pid P --conns N        # N idle connections: RSS and threads
//! net_measure accept   --addr A --conns N                # time to connect + first response
//! net_measure wakeups  --addr A --pid P --consumers C --produces N [--rate R] [--broker-log F]
//! net_measure create   --addr A --topic T --partitions N   # create a topic (before a measured run)
//! ```
//! `wakeups`: C long-polling consumers, each on its own partition (of topics of up to 1,000)
//! (max_wait 10 s, re-issued when answered), while one producer sends N acks=1 produce
//! requests one after the other to partition 0 (with `--rate R`: sent on a fixed schedule of R
//! per second, each when its time comes or at once if the previous answer came later). Reports
//! the broker's CPU per produce, the produce latency (send to response: p50/p99/p99.9/max) and,
//! when the broker logs `--stats-interval-ms` lines to F, its fetch wake-ups per produce.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

struct Conn {
    s: TcpStream,
    cid: i32,
}

impl Conn {
    fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Conn { s, cid: 0 })
    }
    fn send<R: Request>(&mut self, v: i16, req: &R) -> std::io::Result<i32> {
        self.cid += 1;
        let h = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(v)
            .with_correlation_id(self.cid)
            .with_client_id(Some(StrBytes::from_static_str("net-measure")));
        let mut b = BytesMut::new();
        b.extend_from_slice(&[0; 4]);
        h.encode(&mut b, R::header_version(v)).expect("encode header");
        req.encode(&mut b, v).expect("encode request");
        let n = (b.len() - 4) as i32;
        b[..4].copy_from_slice(&n.to_be_bytes());
        self.s.write_all(&b)?;
        Ok(self.cid)
    }
    fn recv<R: Request>(&mut self, v: i16) -> std::io::Result<R::Response> {
        let mut size = [0u8; 4];
        self.s.read_exact(&mut size)?;
        let mut buf = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
        self.s.read_exact(&mut buf)?;
        let mut b = Bytes::from(buf);
        ResponseHeader::decode(&mut b, <R::Response as HeaderVersion>::header_version(v)).map_err(std::io::Error::other)?;
        R::Response::decode(&mut b, v).map_err(std::io::Error::other)
    }
    fn call<R: Request>(&mut self, v: i16, req: &R) -> std::io::Result<R::Response> {
        self.send(v, req)?;
        self.recv::<R>(v)
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}
fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name).map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: not a number"))).unwrap_or(default)
}

fn proc_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}
fn proc_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
}
/// utime + stime of the process, in seconds.
fn proc_cpu_s(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0; // USER_HZ
    let u: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (u + st) / tick
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    let addr: SocketAddr = arg(&args, "--addr").expect("--addr").parse().expect("--addr");
    let pid = num(&args, "--pid", 0) as u32;
    match mode.as_str() {
        "idle" => idle(addr, pid, num(&args, "--conns", 10_000) as usize),
        "accept" => accept(addr, num(&args, "--conns", 1_000) as usize),
        "create" => {
            let name = arg(&args, "--topic").expect("--topic");
            let mut c = Conn::connect(addr).expect("connect");
            let r = c
                .call(
                    4,
                    &CreateTopicsRequest::default().with_timeout_ms(60_000).with_topics(vec![CreatableTopic::default()
                        .with_name(topic(&name))
                        .with_num_partitions(num(&args, "--partitions", 1) as i32)
                        .with_replication_factor(1)]),
                )
                .expect("create topic");
            assert_eq!(r.topics[0].error_code, 0, "create topic: {:?}", r.topics[0].error_message);
        }
        "wakeups" => wakeups(
            addr,
            pid,
            num(&args, "--consumers", 1_000) as i32,
            num(&args, "--produces", 1_000),
            arg(&args, "--broker-log"),
            num(&args, "--rate", 0),
        ),
        _ => {
            eprintln!("usage: net_measure idle|accept|wakeups|create --addr A [--pid P] ...");
            std::process::exit(2);
        }
    }
}

fn idle(addr: SocketAddr, pid: u32, n: usize) {
    let mut first = Conn::connect(addr).expect("connect");
    first.call(3, &ApiVersionsRequest::default()).expect("api versions");
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, thr0) = (proc_rss_kib(pid), proc_threads(pid));
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match Conn::connect(addr) {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!("connection {i}: {e}");
                break;
            }
        }
    }
    // One request each, so the broker has registered and served every connection.
    for c in conns.iter_mut() {
        c.send(3, &ApiVersionsRequest::default()).expect("send");
    }
    for c in conns.iter_mut() {
        c.recv::<ApiVersionsRequest>(3).expect("api versions response");
    }
    std::thread::sleep(Duration::from_millis(1_000));
    let (rss1, thr1) = (proc_rss_kib(pid), proc_threads(pid));
    let per = (rss1.saturating_sub(rss0)) as f64 / conns.len().max(1) as f64;
    println!(
        "idle conns={} rss_before_kib={rss0} rss_after_kib={rss1} rss_per_conn_kib={per:.1} threads_before={thr0} threads_after={thr1}",
        conns.len()
    );
}

fn accept(addr: SocketAddr, n: usize) {
    let t = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Conn::connect(addr).expect("connect"));
    }
    for c in conns.iter_mut() {
        c.send(3, &ApiVersionsRequest::default()).expect("send");
    }
    for c in conns.iter_mut() {
        c.recv::<ApiVersionsRequest>(3).expect("response");
    }
    println!("accept conns={n} ms={:.1}", t.elapsed().as_secs_f64() * 1e3);
}

fn last_wakeups(log: &Option<String>) -> Option<u64> {
    let raw = std::fs::read_to_string(log.as_ref()?).ok()?;
    // The broker's log may be coloured: drop ANSI escape sequences (ESC [ ... letter).
    let mut text = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(ch) = it.next() {
        if ch == '\x1b' {
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            text.push(ch);
        }
    }
    let at = text.rfind("fetch_wakeups=")?;
    text[at + "fetch_wakeups=".len()..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn wakeups(addr: SocketAddr, pid: u32, consumers: i32, produces: u64, log: Option<String>, rate: u64) {
    // Topics of up to 1,000 partitions (the broker's per-topic limit): consumer p on partition
    // p % 1000 of topic p / 1000; the producer on partition 0 of the first.
    const PER_TOPIC: i32 = 1_000;
    let base = format!("wake-{}", std::process::id());
    let topic_of = move |i: i32| format!("{base}-{i}");
    let name = topic_of(0);
    let mut admin = Conn::connect(addr).expect("connect");
    for t in 0..(consumers.max(1) + PER_TOPIC - 1) / PER_TOPIC {
        let r = admin
            .call(
                4,
                &CreateTopicsRequest::default().with_timeout_ms(60_000).with_topics(vec![CreatableTopic::default()
                    .with_name(topic(&topic_of(t)))
                    .with_num_partitions((consumers - t * PER_TOPIC).clamp(1, PER_TOPIC))
                    .with_replication_factor(1)]),
            )
            .expect("create topic");
        assert_eq!(r.topics[0].error_code, 0, "create topic: {:?}", r.topics[0].error_message);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for p in 0..consumers {
        let (stop, answered, name, connected) = (stop.clone(), answered.clone(), topic_of(p / PER_TOPIC), connected.clone());
        let p = p % PER_TOPIC;
        handles.push(
            std::thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || {
                    let mut c = match Conn::connect(addr) {
                        Ok(c) => c,
                        Err(e) => {
                            eprintln!("consumer {p}: connect: {e}");
                            return;
                        }
                    };
                    connected.fetch_add(1, Ordering::Relaxed);
                    c.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut offset = 0i64;
                    while !stop.load(Ordering::Acquire) {
                        let req = FetchRequest::default()
                            .with_max_wait_ms(10_000)
                            .with_min_bytes(1)
                            .with_max_bytes(1 << 20)
                            .with_session_epoch(-1)
                            .with_topics(vec![FetchTopic::default().with_topic(topic(&name)).with_partitions(vec![
                                FetchPartition::default().with_partition(p).with_fetch_offset(offset).with_partition_max_bytes(1 << 20),
                            ])]);
                        let Ok(r) = c.call(12, &req) else { return };
                        if let Some(part) = r.responses.first().and_then(|t| t.partitions.first()) {
                            if part.records.as_ref().is_some_and(|r| !r.is_empty()) {
                                offset = part.high_watermark;
                            }
                        }
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .expect("spawn consumer"),
        );
    }
    // Let every consumer's first long-poll register.
    std::thread::sleep(Duration::from_millis(2_000 + consumers as u64));
    let w0 = last_wakeups(&log);
    let cpu0 = proc_cpu_s(pid);
    let mut prod = Conn::connect(addr).expect("producer connect");
    let batch = engine::record::build::simple_batch(1, 100, 0);
    let t = Instant::now();
    let mut lat_us: Vec<u64> = Vec::with_capacity(produces as usize);
    for i in 0..produces {
        if rate > 0 {
            let due = t + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let sent = Instant::now();
        let req = ProduceRequest::default().with_acks(1).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(&name))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch.clone())))])]);
        let r = prod.call(9, &req).expect("produce");
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        lat_us.push(sent.elapsed().as_micros() as u64);
    }
    let wall = t.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    let pct = |q: f64| lat_us.get(((lat_us.len() as f64 * q) as usize).min(lat_us.len().saturating_sub(1))).copied().unwrap_or(0) as f64 / 1e3;
    let cpu = proc_cpu_s(pid) - cpu0;
    std::thread::sleep(Duration::from_millis(600));
    let w1 = last_wakeups(&log);
    let per = match (w0, w1) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) as f64 / produces as f64),
        _ => "n/a".into(),
    };
    println!(
        "wakeups consumers={consumers} connected={} produces={produces} wall_s={wall:.2} produce_per_s={:.0} broker_cpu_ms_per_produce={:.3} wakeups_per_produce={per} produce_ms_p50={:.3} p99={:.3} p99.9={:.3} max={:.3}",
        connected.load(Ordering::Relaxed),
        produces as f64 / wall,
        cpu * 1e3 / produces as f64,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    stop.store(true, Ordering::Release);
    drop(prod);
    drop(admin);
    // The consumers end at their next answer (within max_wait); not joined (bounded exit).
    let _ = handles;
}
