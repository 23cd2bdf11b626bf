//! Shared helpers for the broker tests: an embedded broker on an ephemeral port and a tiny
//! blocking Kafka client built on the kafka-protocol crate.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use engine::broker::{Broker, BrokerConfig, BrokerHandle};
use engine::log::Durability;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

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


/// A loopback address free when asked (for a child process that binds it itself).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

/// A child process killed and reaped when dropped.
pub struct Process(pub std::process::Child);
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the `broker` binary as a child process on `addr` with `args` after the data dir and
/// listen address, and wait (bounded) until it accepts connections.
pub fn spawn_broker_process(data_dir: &Path, addr: SocketAddr, args: &[&str], rust_log: &str) -> std::process::Child {
    spawn_broker_process_logging(data_dir, addr, args, rust_log, Stdio::null())
}

/// [`spawn_broker_process`] with the broker's log (stderr) going to `log`.
pub fn spawn_broker_process_logging(data_dir: &Path, addr: SocketAddr, args: &[&str], rust_log: &str, log: Stdio) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", &addr.to_string()])
        .args(args)
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn broker");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}
