//! The Kafka-protocol broker: listener, per-connection reader/writer, one handler per API.
//!
//! Contract used by the load generator (embedded mode) and tests:
//! `Broker::start(BrokerConfig) -> io::Result<BrokerHandle>`, `BrokerHandle::local_addr()`,
//! `BrokerHandle::logs()`, `BrokerHandle::shutdown()`.
//!
//! Threads: one accept thread; per connection a reader (reads frames, decodes, runs the handler
//! — Produce appends happen here, so pipelined produce requests append in order) and a writer
//! (sends [`Reply`]s strictly in request order; `Later`/`Stream` replies block only their own
//! connection). Between them a bounded queue of [`CONNECTION_QUEUE_MAX`] replies: a client that
//! does not read its responses stops being read (backpressure).
//!
//! Resource bounds (each a [`BrokerConfig`] field and a `broker` flag): a request frame's size
//! (`frame_bytes_max`); the bytes of all request frames being read or handled at once
//! (`request_bytes_in_flight_max`: a reader whose frame does not fit waits, without reading,
//! until others finish); the time a frame may take to arrive once it started
//! (`request_timeout_ms`) and a connection may stay without one (`connection_idle_ms`);
//! connections in total and per client IP (`connections_max`, `connections_per_ip_max`: more
//! are accepted and closed at once, logged once per interval).

pub mod auth;
mod handlers;
pub mod properties;
pub use handlers::BROKER_APIS;

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, TryRecvError};

use crate::groups::GroupCoordinator;
use crate::io::{Io, UringIo};
use crate::log::{Durability, LogConfig, LogManager};
use crate::wire::{self, FrameError};

/// Replies queued per connection before the reader stops reading (backpressure).
pub const CONNECTION_QUEUE_MAX: usize = 128;
/// Read and write buffer of each connection (large frames bypass it).
const CONNECTION_BUFFER_BYTES: usize = 16 << 10;
/// Stack of each connection thread: small, so 1,000 connections (2,000 threads) are cheap.
const CONNECTION_STACK_BYTES: usize = 256 << 10;
/// Largest Fetch max_wait_ms honoured (bounds how long a writer can be parked).
pub const FETCH_WAIT_MS_MAX: i32 = 60_000;
/// Default of `connection_idle_ms`: a connection with no request for this long is closed
/// (Kafka's connections.max.idle.ms default, 10 minutes).
pub const CONNECTION_IDLE_MS_DEFAULT: u64 = 600_000;
/// Default of `request_timeout_ms`: once a frame's first byte arrived, all of it must within
/// this (a slowloris client sending a byte a second is closed).
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default of `request_bytes_in_flight_max`: request frames read or handled at once.
pub const REQUEST_BYTES_IN_FLIGHT_DEFAULT: usize = 256 << 20;
/// Default of `connections_max` (each connection costs two threads and a descriptor).
pub const CONNECTIONS_MAX_DEFAULT: usize = 4_096;
/// Default of `connections_per_ip_max` (tests and load generators connect from one loopback
/// address; lower it when clients come from many hosts).
pub const CONNECTIONS_PER_IP_MAX_DEFAULT: usize = 4_096;
/// Refused connections and accept failures are logged at most once per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Longest pause of the accept loop after accept fails (EMFILE: out of descriptors).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A response that cannot be written for this long (the client stopped reading) closes the
/// connection instead of parking its writer forever.
pub const SEND_STALL_MS_MAX: u64 = 120_000;
/// Default read rate of the background scrub of sealed segments (`LogConfig::scrub_rate_mib`).
pub const SCRUB_RATE_MIB_DEFAULT: u64 = 8;
/// Kafka's default message.max.bytes (1 MiB + the 12-byte log overhead).
pub const MESSAGE_MAX_BYTES_DEFAULT: usize = crate::log::MESSAGE_MAX_BYTES_DEFAULT;
/// How long `BrokerHandle::shutdown` waits for connection threads to finish.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// Port 0 = ephemeral.
    pub listen: SocketAddr,
    pub log: LogConfig,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    /// Largest request frame (Kafka's socket.request.max.bytes); a larger size prefix closes the
    /// connection before anything is allocated.
    pub frame_bytes_max: usize,
    /// Bytes of request frames being read or handled at once, broker-wide (Kafka's
    /// queued.max.request.bytes). Must be >= `frame_bytes_max`.
    pub request_bytes_in_flight_max: usize,
    /// A frame must arrive whole within this once its first byte did.
    pub request_timeout_ms: u64,
    /// A connection with no request for this long is closed (connections.max.idle.ms).
    pub connection_idle_ms: u64,
    /// Connections open at once; more are accepted and closed (max.connections).
    pub connections_max: usize,
    /// Connections open at once from one IP address (max.connections.per.ip).
    pub connections_per_ip_max: usize,
    /// Largest record batch a Produce may carry (Kafka's message.max.bytes, default 1048588);
    /// a larger one is refused with MESSAGE_TOO_LARGE. The log's `batch_bytes_max` is raised
    /// to it if lower.
    pub message_max_bytes: usize,
    /// Largest partition count CreateTopics accepts (each partition costs files, fsyncs and a
    /// lock hold while it is created; Kafka answers INVALID_PARTITIONS past such a limit).
    pub partitions_per_topic_max: i32,
    /// Listeners (Kafka's `listeners`): empty = one PLAINTEXT listener on `listen`.
    pub listeners: Vec<auth::Listener>,
    /// SASL credentials, the authorizer, super users (`auth`).
    pub security: auth::SecurityConfig,
}

impl BrokerConfig {
    /// The listeners to bind: `listeners`, or PLAINTEXT on `listen` when none is given.
    pub fn effective_listeners(&self) -> Vec<auth::Listener> {
        if self.listeners.is_empty() {
            vec![auth::Listener { protocol: auth::SecurityProtocol::Plaintext, addr: self.listen }]
        } else {
            self.listeners.clone()
        }
    }

    pub fn new(data_dir: PathBuf, durability: Durability) -> Self {
        BrokerConfig {
            data_dir,
            listen: "127.0.0.1:9092".parse().expect("static addr"),
            // (In group mode the log zero-fills 1 MiB ahead by default: PERF_NOTES.md.)
            log: LogConfig { durability, scrub_rate_mib: SCRUB_RATE_MIB_DEFAULT, ..LogConfig::default() },
            auto_create_topics: true,
            default_partitions: 1,
            frame_bytes_max: 100 << 20,
            request_bytes_in_flight_max: REQUEST_BYTES_IN_FLIGHT_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            connection_idle_ms: CONNECTION_IDLE_MS_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX_DEFAULT,
            message_max_bytes: MESSAGE_MAX_BYTES_DEFAULT,
            partitions_per_topic_max: 1_000,
            listeners: Vec::new(),
            security: auth::SecurityConfig::default(),
        }
    }
}

/// A job run on the connection's writer thread that writes one complete frame (size prefix
/// included) to the socket itself: the zero-copy Fetch path.
pub type StreamJob = Box<dyn FnOnce(&TcpStream) -> io::Result<()> + Send>;

/// What a request handler produces. The connection's writer sends replies strictly in request
/// order, so a `Later` may block (group commit, Fetch long-poll, JoinGroup waiting for the
/// rebalance) without reordering responses.
pub enum Reply {
    /// A complete response (response header + body, without the 4-byte size prefix).
    Now(Vec<u8>),
    /// Computed on the connection's writer thread, in order; returns header + body as in `Now`.
    Later(Box<dyn FnOnce() -> Vec<u8> + Send>),
    /// No response (Produce with acks=0).
    Nothing,
    /// No response, but work for the writer thread, in order (acks=0 produce in `group` mode
    /// still drives the group commit that makes its records visible). `Some(reason)` closes
    /// the connection after the replies queued before it.
    Background(Box<dyn FnOnce() -> Option<String> + Send>),
    /// Run on the writer thread, in order; writes a whole frame itself (zero-copy Fetch).
    Stream(StreamJob),
    /// Send the replies queued before this one, then close the connection, logging the reason.
    Close(String),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Now(v) => write!(f, "Now({} bytes)", v.len()),
            Reply::Later(_) => write!(f, "Later"),
            Reply::Nothing => write!(f, "Nothing"),
            Reply::Background(_) => write!(f, "Background"),
            Reply::Stream(_) => write!(f, "Stream"),
            Reply::Close(r) => write!(f, "Close({r})"),
        }
    }
}

/// The group coordinator's outcome (it knows nothing of connections) as a connection reply.
impl From<crate::groups::Reply> for Reply {
    fn from(r: crate::groups::Reply) -> Self {
        match r {
            crate::groups::Reply::Later(f) => Reply::Later(f),
            crate::groups::Reply::Close(reason) => Reply::Close(reason),
        }
    }
}

/// What a request handler knows of the connection it serves. One per connection, owned by
/// whoever reads that connection's requests; handlers get it as `&mut` (per-connection
/// state such as an authenticated session belongs here, never in a thread-local).
#[derive(Debug, Clone)]
pub struct ConnCtx {
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address the client connected to (what Metadata and FindCoordinator advertise).
    pub local: SocketAddr,
    /// The security protocol of the listener the client connected to.
    pub protocol: auth::SecurityProtocol,
    /// SASL progress and the authenticated principal.
    pub session: auth::Session,
}

impl ConnCtx {
    /// The local address to advertise (handlers fall back to the configured host when it is
    /// the unspecified address).
    pub fn advertised(&self) -> Option<SocketAddr> {
        Some(self.local)
    }
}

/// State shared by the accept thread and every connection.
pub(crate) struct Shared {
    pub(crate) cfg: BrokerConfig,
    pub(crate) logs: Arc<LogManager>,
    pub(crate) groups: Arc<GroupCoordinator>,
    pub(crate) security: Arc<auth::Security>,
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, Arc<TcpStream>>>,
    next_conn: AtomicU64,
    /// Connection threads (readers and writers) still running.
    threads: AtomicUsize,
    /// Open connections per client address (the registry's count is the total).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Request bytes being read or handled ([`BrokerConfig::request_bytes_in_flight_max`]).
    in_flight: ByteBudget,
}

/// A broker-wide budget of bytes: `acquire` waits (bounded, re-checking the stop flag) until
/// the bytes fit. Never over-committed, so memory held by request frames stays under it.
pub(crate) struct ByteBudget {
    used: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// Bytes held from a [`ByteBudget`]; given back on drop.
pub(crate) struct BudgetPermit<'a> {
    budget: &'a ByteBudget,
    bytes: usize,
}

impl ByteBudget {
    fn new(max: usize) -> ByteBudget {
        ByteBudget { used: Mutex::new(0), freed: Condvar::new(), max }
    }

    /// Wait until `bytes` (<= max) fit; None if `stopping` became true first.
    fn acquire(&self, bytes: usize, stopping: impl Fn() -> bool) -> Option<BudgetPermit<'_>> {
        let bytes = bytes.min(self.max);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used + bytes > self.max {
            if stopping() {
                return None;
            }
            used = self.freed.wait_timeout(used, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
        }
        *used += bytes;
        Some(BudgetPermit { budget: self, bytes })
    }

    pub(crate) fn used(&self) -> usize {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for BudgetPermit<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            *self.budget.used.lock().unwrap_or_else(|p| p.into_inner()) -= self.bytes;
            self.budget.freed.notify_all();
        }
    }
}

/// Counts a connection thread as running until dropped.
struct ThreadGuard(Arc<Shared>);

impl ThreadGuard {
    fn new(shared: &Arc<Shared>) -> ThreadGuard {
        shared.threads.fetch_add(1, Ordering::AcqRel);
        ThreadGuard(shared.clone())
    }
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.0.threads.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

pub struct Broker;

pub struct BrokerHandle {
    addr: SocketAddr,
    /// Every listener with its bound address (port 0 resolved).
    listeners: Vec<auth::Listener>,
    logs: Arc<LogManager>,
    shared: Arc<Shared>,
    accept: Vec<JoinHandle<()>>,
}

impl Broker {
    /// Open the logs under `cfg.data_dir` (recovering them), bind `cfg.listen` and start
    /// accepting connections.
    pub fn start(cfg: BrokerConfig) -> io::Result<BrokerHandle> {
        Broker::start_with_io(cfg, Arc::new(UringIo))
    }

    /// [`Broker::start`] over another storage backend (tests: `SimIo` with injected faults;
    /// its files have no descriptor, so Fetch copies with `read_at` instead of sendfile).
    pub fn start_with_io(mut cfg: BrokerConfig, storage: Arc<dyn Io>) -> io::Result<BrokerHandle> {
        cfg.log.batch_bytes_max = cfg.log.batch_bytes_max.max(cfg.message_max_bytes);
        // The broker's message.max.bytes is every topic's default max.message.bytes.
        cfg.log.message_max_bytes = cfg.message_max_bytes;
        if cfg.request_bytes_in_flight_max < cfg.frame_bytes_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "request_bytes_in_flight_max ({}) must be at least frame_bytes_max ({}): a largest frame could never be read",
                    cfg.request_bytes_in_flight_max, cfg.frame_bytes_max
                ),
            ));
        }
        if cfg.request_timeout_ms == 0 || cfg.connection_idle_ms == 0 || cfg.connections_max == 0 || cfg.connections_per_ip_max == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "timeouts and connection limits must be positive"));
        }
        if cfg.default_partitions < 1 || cfg.default_partitions > cfg.partitions_per_topic_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("default_partitions must be within 1..={}", cfg.partitions_per_topic_max),
            ));
        }
        let wanted = cfg.effective_listeners();
        auth::check_available(&wanted).map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
        let logs = LogManager::open(&cfg.data_dir, storage, cfg.log.clone()).map_err(io::Error::other)?;
        let security = auth::Security::open(cfg.security.clone(), &cfg.data_dir).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if let Some((open, limit)) = crate::log::manager::descriptors() {
            tracing::info!(open, limit, "file descriptors after opening the logs");
            if open + crate::log::manager::DESCRIPTORS_RESERVED_MIN > limit {
                tracing::warn!(open, limit, "few file descriptors left for connections: raise the limit (ulimit -n)");
            }
        }
        let mut bound = Vec::with_capacity(wanted.len());
        for l in &wanted {
            let listener = TcpListener::bind(l.addr).map_err(|e| io::Error::new(e.kind(), format!("cannot bind listener {l}: {e}")))?;
            let addr = listener.local_addr()?;
            bound.push((auth::Listener { protocol: l.protocol, addr }, listener));
        }
        let cfg_in_flight = cfg.request_bytes_in_flight_max;
        let addr = bound[0].0.addr;
        let groups = GroupCoordinator::new(logs.clone())?;
        let shared = Arc::new(Shared {
            cfg,
            logs: logs.clone(),
            groups,
            security,
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            threads: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            in_flight: ByteBudget::new(cfg_in_flight),
        });
        let listeners: Vec<auth::Listener> = bound.iter().map(|(l, _)| l.clone()).collect();
        let mut accept = Vec::with_capacity(bound.len());
        for (l, listener) in bound {
            let s = shared.clone();
            let protocol = l.protocol;
            match std::thread::Builder::new().name("broker-accept".into()).spawn(move || accept_loop(s, listener, protocol)) {
                Ok(h) => accept.push(h),
                Err(e) => {
                    // Stop the accept threads already started before failing.
                    let mut h = BrokerHandle { addr, listeners: listeners.clone(), logs, shared, accept };
                    h.stop_listening();
                    return Err(e);
                }
            }
            tracing::info!(listener = %l, durability = %shared.cfg.log.durability, "broker listening");
        }
        Ok(BrokerHandle { addr, listeners, logs, shared, accept })
    }
}

impl BrokerHandle {
    /// The first listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Every listener with its bound address.
    pub fn listeners(&self) -> &[auth::Listener] {
        &self.listeners
    }
    /// The bound address of the first listener of `protocol`.
    pub fn listener_addr(&self, protocol: auth::SecurityProtocol) -> Option<SocketAddr> {
        self.listeners.iter().find(|l| l.protocol == protocol).map(|l| l.addr)
    }
    pub fn logs(&self) -> &Arc<LogManager> {
        &self.logs
    }
    /// Connections currently open.
    pub fn connection_count(&self) -> usize {
        self.shared.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    /// Request bytes currently read or handled (under `request_bytes_in_flight_max`).
    pub fn request_bytes_in_flight(&self) -> usize {
        self.shared.in_flight.used()
    }
    /// Stop accepting, close connections, wait (bounded) for their threads so that no append
    /// races the close, then flush and checkpoint the logs.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_listening();
        let deadline = std::time::Instant::now() + SHUTDOWN_WAIT;
        while self.shared.threads.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= deadline {
                tracing::warn!(
                    threads = self.shared.threads.load(Ordering::Acquire),
                    "connection threads still running at shutdown; closing the logs anyway"
                );
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.logs.close().map_err(io::Error::other)
    }

    fn stop_listening(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the accept threads with a connection of our own each.
        for l in &self.listeners {
            let _ = TcpStream::connect_timeout(&wake_addr(l.addr), std::time::Duration::from_secs(1));
        }
        for h in self.accept.drain(..) {
            let _ = h.join();
        }
        let conns: Vec<Arc<TcpStream>> =
            self.shared.conns.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, s)| s).collect();
        for c in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wake long-polling fetches so they answer (and see the stop flag) at once.
        self.logs.notifier().bump();
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        if !self.accept.is_empty() {
            self.stop_listening();
        }
    }
}

fn wake_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

/// Counts events and logs them at most once per [`REFUSAL_LOG_INTERVAL`].
struct RateLog {
    what: &'static str,
    count: u64,
    last: Option<Instant>,
}

impl RateLog {
    fn new(what: &'static str) -> RateLog {
        RateLog { what, count: 0, last: None }
    }
    fn hit(&mut self, detail: &dyn std::fmt::Display) {
        self.count += 1;
        if self.last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
            tracing::warn!(count = self.count, "{} (latest: {detail}; logged at most every {:?})", self.what, REFUSAL_LOG_INTERVAL);
            self.count = 0;
            self.last = Some(Instant::now());
        }
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener, protocol: auth::SecurityProtocol) {
    let mut refused = RateLog::new("connections refused");
    let mut failed = RateLog::new("accept failed");
    let mut backoff = Duration::ZERO;
    for conn in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                failed.hit(&e);
                // EMFILE and friends: back off (10 ms doubling to 1 s) rather than spin.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), ACCEPT_BACKOFF_MAX);
                std::thread::sleep(backoff);
                continue;
            }
        };
        backoff = Duration::ZERO;
        if let Some(reason) = over_connection_limits(&shared, &stream) {
            // Accepted and closed at once: the client sees the close instead of a hang.
            refused.hit(&reason);
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        if let Err(e) = start_connection(&shared, stream, protocol) {
            tracing::warn!("cannot start connection threads: {e}");
        }
    }
    tracing::debug!("accept loop stopped");
}

/// Why a new connection must be refused, if it must; otherwise it is counted for its IP.
fn over_connection_limits(shared: &Shared, stream: &TcpStream) -> Option<String> {
    let ip = match stream.peer_addr() {
        Ok(a) => a.ip(),
        Err(e) => return Some(format!("no peer address: {e}")),
    };
    let open = shared.conns.lock().unwrap_or_else(|p| p.into_inner()).len();
    if open >= shared.cfg.connections_max {
        return Some(format!("{open} connections open (connections_max {})", shared.cfg.connections_max));
    }
    let mut per_ip = shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
    let n = per_ip.entry(ip).or_insert(0);
    if *n >= shared.cfg.connections_per_ip_max {
        return Some(format!("{n} connections open from {ip} (connections_per_ip_max {})", shared.cfg.connections_per_ip_max));
    }
    *n += 1;
    None
}

fn release_ip(shared: &Shared, ip: IpAddr) {
    let mut per_ip = shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = per_ip.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_ip.remove(&ip);
        }
    }
}

fn start_connection(shared: &Arc<Shared>, stream: TcpStream, protocol: auth::SecurityProtocol) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    let r = start_connection_threads(shared, stream, peer, protocol);
    if r.is_err() {
        release_ip(shared, peer.ip());
    }
    r
}

fn start_connection_threads(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr, protocol: auth::SecurityProtocol) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    // Reads wake at least this often, to enforce the request deadline and the idle timeout.
    stream.set_read_timeout(Some(read_tick(&shared.cfg)))?;
    stream.set_write_timeout(Some(std::time::Duration::from_millis(SEND_STALL_MS_MAX)))?;
    let local = stream.local_addr()?;
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = channel::bounded::<Reply>(CONNECTION_QUEUE_MAX);
    // One descriptor per connection, shared by the reader, the writer and the registry.
    let stream = Arc::new(stream);
    let wstream = stream.clone();
    shared.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(id, stream.clone());
    let wguard = ThreadGuard::new(shared);
    let writer = std::thread::Builder::new()
        .name(format!("conn-{id}-w"))
        .stack_size(CONNECTION_STACK_BYTES)
        .spawn(move || {
            let _guard = wguard;
            writer_loop(rx, wstream, peer)
        });
    if let Err(e) = writer {
        shared.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        return Err(e);
    }
    let s = shared.clone();
    let rguard = ThreadGuard::new(shared);
    let reader = std::thread::Builder::new()
        .name(format!("conn-{id}-r"))
        .stack_size(CONNECTION_STACK_BYTES)
        .spawn(move || {
            let _guard = rguard;
            let ctx = ConnCtx { peer, local, protocol, session: auth::Session::new(protocol) };
            reader_loop(&s, stream, tx, ctx);
            s.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            release_ip(&s, peer.ip());
        });
    if let Err(e) = reader {
        // The writer exits when `tx` (moved into the failed closure) is dropped.
        shared.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        return Err(e);
    }
    Ok(())
}

/// How often a blocked read wakes up: the request deadline is enforced within this.
fn read_tick(cfg: &BrokerConfig) -> Duration {
    Duration::from_millis(cfg.request_timeout_ms.min(cfg.connection_idle_ms).clamp(1, 1_000))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Read one request frame within the connection's bounds: the size prefix may take up to
/// `connection_idle_ms` to start arriving; once it has, the whole frame must arrive within
/// `request_timeout_ms`; the frame's bytes are taken from the broker-wide budget before they
/// are allocated (waiting, without reading, while the budget is full). `Ok(None)`: the peer
/// closed the connection between frames, or the broker is stopping.
fn read_request<'s, R: Read>(shared: &'s Shared, r: &mut R) -> Result<Option<(Vec<u8>, BudgetPermit<'s>)>, FrameError> {
    let idle = Duration::from_millis(shared.cfg.connection_idle_ms);
    let deadline_after = Duration::from_millis(shared.cfg.request_timeout_ms);
    let waiting = Instant::now();
    let mut started: Option<Instant> = None;
    let late = |started: Option<Instant>| -> Result<(), FrameError> {
        match started {
            Some(t) if t.elapsed() > deadline_after => Err(FrameError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("request not complete within {} ms (request_timeout_ms)", shared.cfg.request_timeout_ms),
            ))),
            _ => Ok(()),
        }
    };
    let mut size_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        if shared.stopping() {
            return Ok(None);
        }
        match r.read(&mut size_buf[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                started.get_or_insert_with(Instant::now);
                got += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                if started.is_none() && waiting.elapsed() >= idle {
                    return Err(FrameError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("idle for {} ms (connection_idle_ms)", shared.cfg.connection_idle_ms),
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
        late(started)?;
    }
    let size = i32::from_be_bytes(size_buf);
    if size < 0 || size as usize > shared.cfg.frame_bytes_max {
        return Err(FrameError::TooLarge { size: size as i64, limit: shared.cfg.frame_bytes_max });
    }
    if size < wire::REQUEST_HEADER_BYTES_MIN {
        return Err(FrameError::TooSmall(size));
    }
    let size = size as usize;
    let Some(permit) = shared.in_flight.acquire(size, || shared.stopping()) else {
        return Ok(None);
    };
    // Time spent waiting for the budget is the broker's, not the client's.
    let started = Some(Instant::now());
    // Zeroed: large frames come from calloc'd (untouched, lazily mapped) memory, small ones
    // cost a memset of a few KiB. Fallible: under an address-space or memory limit a frame the
    // budget allows may still not be allocatable; that connection is closed, the broker lives
    // (`vec![0u8; size]` aborted the process: "memory allocation of 94371840 bytes failed").
    let Some(mut buf) = crate::io::sys::try_zeroed_vec(size) else {
        return Err(FrameError::Io(io::Error::new(io::ErrorKind::OutOfMemory, format!("cannot allocate a {size}-byte request frame"))));
    };
    let mut have = 0;
    while have < size {
        match r.read(&mut buf[have..]) {
            Ok(0) => return Err(FrameError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-frame"))),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
            Err(e) => return Err(e.into()),
        }
        late(started)?;
        if shared.stopping() {
            return Ok(None);
        }
    }
    Ok(Some((buf, permit)))
}

fn reader_loop(shared: &Arc<Shared>, stream: Arc<TcpStream>, tx: channel::Sender<Reply>, mut ctx: ConnCtx) {
    let peer = ctx.peer;
    let mut r = BufReader::with_capacity(CONNECTION_BUFFER_BYTES, &*stream);
    loop {
        let (frame, permit) = match read_request(shared, &mut r) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                tracing::info!(%peer, "closing connection: {e}");
                break;
            }
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::OutOfMemory => {
                tracing::warn!(%peer, "closing connection: {e}");
                break;
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!(%peer, "connection read ended: {e}");
                break;
            }
            Err(e) => {
                let _ = tx.send(Reply::Close(e.to_string()));
                break;
            }
        };
        let reply = handlers::handle(shared, &mut ctx, frame);
        // The frame is consumed by its handler: its bytes go back to the budget before this
        // reader may block on a full reply queue.
        drop(permit);
        let closing = matches!(reply, Reply::Close(_));
        if tx.send(reply).is_err() || closing {
            break;
        }
    }
}

fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    w.write_all(&(payload.len() as i32).to_be_bytes())?;
    w.write_all(payload)
}

fn writer_loop(rx: channel::Receiver<Reply>, stream: Arc<TcpStream>, peer: SocketAddr) {
    let mut out = BufWriter::with_capacity(CONNECTION_BUFFER_BYTES, &*stream);
    let result: io::Result<()> = (|| loop {
        let reply = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => {
                out.flush()?;
                match rx.recv() {
                    Ok(r) => r,
                    Err(_) => return Ok(()),
                }
            }
            Err(TryRecvError::Disconnected) => return Ok(()),
        };
        match reply {
            Reply::Now(v) => {
                if v.is_empty() {
                    return Err(io::Error::other("response could not be encoded"));
                }
                write_frame(&mut out, &v)?
            }
            Reply::Later(f) => {
                out.flush()?;
                let v = f();
                if v.is_empty() {
                    return Err(io::Error::other("response could not be encoded"));
                }
                write_frame(&mut out, &v)?
            }
            Reply::Nothing => {}
            Reply::Background(job) => {
                if let Some(reason) = job() {
                    out.flush()?;
                    tracing::warn!(%peer, "closing connection: {reason}");
                    return Ok(());
                }
            }
            Reply::Stream(job) => {
                out.flush()?;
                job(&stream)?;
            }
            Reply::Close(reason) => {
                out.flush()?;
                tracing::warn!(%peer, "closing connection: {reason}");
                return Ok(());
            }
        }
    })();
    if let Err(e) = result {
        tracing::debug!(%peer, "connection write ended: {e}");
    }
    let _ = out.flush();
    let _ = stream.shutdown(Shutdown::Both);
}
