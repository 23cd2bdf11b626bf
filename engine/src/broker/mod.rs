//! The Kafka-protocol broker: listeners, network threads (`net`), one handler per API.
//!
//! Contract used by the load generator (embedded mode) and tests:
//! `Broker::start(BrokerConfig) -> io::Result<BrokerHandle>`, `BrokerHandle::local_addr()`,
//! `BrokerHandle::logs()`, `BrokerHandle::shutdown()`.
//!
//! Threads (issue 18; `net`): one accept thread and a fixed set of network threads
//! (`network_threads`, default the core count) multiplexing every connection with epoll; a
//! bounded blocking pool for work that waits (group-coordinator requests, admin requests that
//! fsync). A wait is a registration: a group commit's covering fdatasync
//! ([`crate::log::Partition::on_durable`]), a Fetch long-poll (per-partition
//! [`crate::log::Partition::watch_hw`] plus a timer on its network thread), whose completion
//! hands the response to the connection's network thread ([`Responder`]). Responses leave in
//! request order; a connection with [`CONNECTION_QUEUE_MAX`] responses queued (or
//! `net::CONNECTION_OUT_BYTES_MAX` bytes unsent) is not read (backpressure).
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
mod net;
pub mod properties;
mod reqstats;
mod transport;
pub use transport::TlsConfig;
pub use handlers::BROKER_APIS;
pub use net::{Responder, CONNECTION_OUT_BYTES_MAX};

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::io;

use crate::groups::GroupCoordinator;
use crate::io::{Io, UringIo};
use crate::log::pool::WorkPool;
use crate::log::{Durability, LogConfig, LogManager};

/// Responses queued per connection before it stops being read (backpressure).
pub const CONNECTION_QUEUE_MAX: usize = 128;
/// Largest number of blocking-pool threads (group-coordinator requests wait there for a
/// rebalance, admin requests for their fsyncs); more such requests queue.
pub const BLOCKING_THREADS_MAX: usize = 64;
/// Largest Fetch max_wait_ms honoured (bounds how long a long-poll stays registered).
pub const FETCH_WAIT_MS_MAX: i32 = 60_000;
/// Default of `connection_idle_ms`: a connection with no request for this long is closed
/// (Kafka's connections.max.idle.ms default, 10 minutes).
pub const CONNECTION_IDLE_MS_DEFAULT: u64 = 600_000;
/// Default of `request_timeout_ms`: once a frame's first byte arrived, all of it must within
/// this (a slowloris client sending a byte a second is closed).
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Accept-queue length of each listener (capped by `net.core.somaxconn`): a burst of 1,000
/// connections waits there for the accept thread instead of having its SYNs dropped (the
/// standard library's 128 made 1,000 connects take 3-5 s on a loaded machine: SYN retries).
pub const LISTEN_BACKLOG: i32 = 4_096;
/// Default of `handshake_timeout_ms`: a connection to a TLS or SASL listener must finish its
/// TLS handshake and SASL authentication within this, or is closed.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default of `request_bytes_in_flight_max`: request frames read or handled at once.
pub const REQUEST_BYTES_IN_FLIGHT_DEFAULT: usize = 256 << 20;
/// Default of `connections_max` (each connection costs a descriptor and a few KiB).
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
    /// A connection to a TLS or SASL listener whose TLS handshake or SASL authentication is
    /// not complete this long after it was accepted is closed (a stalled handshake holds a
    /// connection slot no longer than this, whatever `connection_idle_ms` is).
    pub handshake_timeout_ms: u64,
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
    /// Network threads serving all connections (0 = the number of cores).
    pub network_threads: usize,
    /// Log a line of network counters (connections, threads, fetch wake-ups) this often; 0 = never.
    pub stats_interval_ms: u64,
    /// Listeners (Kafka's `listeners`): empty = one PLAINTEXT listener on `listen`.
    pub listeners: Vec<auth::Listener>,
    /// SASL credentials, the authorizer, super users (`auth`).
    pub security: auth::SecurityConfig,
    /// Certificate and key of the SSL / SASL_SSL listeners (`--tls-cert`, `--tls-key`,
    /// optional `--tls-client-ca`); required when there is such a listener.
    pub tls: Option<TlsConfig>,
    /// Consumer group protocol (KIP-848): a member without a heartbeat for this long is
    /// removed (group.consumer.session.timeout.ms, default 45 s) ...
    pub consumer_session_timeout_ms: i32,
    /// ... and the heartbeat interval members are told (group.consumer.heartbeat.interval.ms,
    /// default 5 s; must be below the session timeout).
    pub consumer_heartbeat_interval_ms: i32,
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
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX_DEFAULT,
            message_max_bytes: MESSAGE_MAX_BYTES_DEFAULT,
            partitions_per_topic_max: 1_000,
            network_threads: 0,
            stats_interval_ms: 0,
            listeners: Vec::new(),
            security: auth::SecurityConfig::default(),
            tls: None,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
        }
    }
}

/// What a request handler produces. The connection's network thread sends responses strictly
/// in request order, whenever each becomes ready.
pub enum Reply {
    /// A complete response (response header + body, without the 4-byte size prefix).
    Now(Vec<u8>),
    /// Computed on the blocking pool (it may block: a group rebalance, an fsync); returns
    /// header + body as in `Now`.
    Later(Box<dyn FnOnce() -> Vec<u8> + Send>),
    /// The handler itself, run again on the blocking pool because it would block (a topic
    /// auto-created by Metadata or Produce makes directories and fsyncs): the `Reply` it
    /// returns there is delivered as if the handler had returned it on the network thread. The
    /// connection's later requests wait for it, as for `Later`.
    Pool(Box<dyn FnOnce() -> Reply + Send>),
    /// No response (Produce with acks=0).
    Nothing,
    /// A Fetch response frame (size prefix included), sent by the network thread with
    /// sendfile for its record ranges (zero-copy).
    Frame(crate::wire::fetch::FetchFrame),
    /// Completed later without holding a thread: called at once on the network thread with the
    /// [`Responder`] that delivers the reply (any `Reply`) when it is ready.
    Pending(Box<dyn FnOnce(Responder) + Send>),
    /// Send the replies queued before this one, then close the connection, logging the reason.
    Close(String),
    /// A complete response (as `Now`), then, this long after it, close the connection, logging
    /// the reason (a failed SASL authentication). Nothing more is read from the connection;
    /// the handler answers `Close` to any request read before this reply was delivered.
    NowThenClose(Vec<u8>, String, Duration),
}

impl Reply {
    /// The response bytes (header + body) this reply comes to, waiting for it on this thread:
    /// tests and tools that call handlers directly. None for `Nothing`, `Close` and a frame
    /// that cannot be read.
    pub fn wait_response(self) -> Option<Vec<u8>> {
        match self {
            Reply::Now(v) | Reply::NowThenClose(v, _, _) => Some(v),
            Reply::Later(f) => Some(f()),
            Reply::Pool(f) => f().wait_response(),
            Reply::Nothing | Reply::Close(_) => None,
            Reply::Frame(f) => f.to_vec().ok().map(|mut v| v.split_off(4)),
            Reply::Pending(f) => {
                let (r, rx) = Responder::channel();
                f(r);
                rx.recv().ok().and_then(Reply::wait_response)
            }
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Now(v) => write!(f, "Now({} bytes)", v.len()),
            Reply::Later(_) => write!(f, "Later"),
            Reply::Pool(_) => write!(f, "Pool"),
            Reply::Nothing => write!(f, "Nothing"),
            Reply::Frame(fr) => write!(f, "Frame({} bytes)", fr.total_bytes),
            Reply::Pending(_) => write!(f, "Pending"),
            Reply::Close(r) => write!(f, "Close({r})"),
            Reply::NowThenClose(v, r, d) => write!(f, "NowThenClose({} bytes, {r}, after {d:?})", v.len()),
        }
    }
}

/// The group coordinator's outcome (it knows nothing of connections) as a connection reply.
impl From<crate::groups::Reply> for Reply {
    fn from(r: crate::groups::Reply) -> Self {
        match r {
            crate::groups::Reply::Later(f) => Reply::Later(f),
            crate::groups::Reply::Pending(f) => {
                Reply::Pending(Box::new(move |responder: Responder| f(Box::new(move |v| responder.send(Reply::Now(v))))))
            }
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

/// State shared by the accept thread, the network threads and the handlers.
pub(crate) struct Shared {
    pub(crate) cfg: BrokerConfig,
    pub(crate) logs: Arc<LogManager>,
    pub(crate) groups: Arc<GroupCoordinator>,
    pub(crate) security: Arc<auth::Security>,
    /// The transaction coordinator (issue 20).
    pub(crate) txn: Arc<crate::txn::TxnCoordinator>,
    stop: AtomicBool,
    /// Connections open (counted at accept, until closed).
    open_conns: AtomicUsize,
    next_conn: AtomicU64,
    /// Open connections per client address.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Request bytes being read or handled ([`BrokerConfig::request_bytes_in_flight_max`]).
    in_flight: ByteBudget,
    /// Work that blocks: group-coordinator requests, admin requests that fsync.
    pub(crate) pool: Arc<WorkPool>,
    net: OnceLock<Vec<Arc<net::NetThread>>>,
    /// Fetch long-polls woken by a high-watermark advance (each wake-up re-reads that fetch's
    /// partitions on its network thread): the wake-ups-per-produce measurement.
    pub(crate) fetch_wakeups: AtomicU64,
}

/// A broker-wide budget of bytes, never over-committed, so memory held by request frames
/// stays under it. Non-blocking: a network thread whose frame does not fit stops reading that
/// connection and is woken when bytes are given back.
pub(crate) struct ByteBudget {
    used: Mutex<usize>,
    max: usize,
    threads: OnceLock<Vec<Arc<net::NetThread>>>,
}

impl ByteBudget {
    fn new(max: usize) -> ByteBudget {
        ByteBudget { used: Mutex::new(0), max, threads: OnceLock::new() }
    }

    /// Take `bytes` (<= max) if they fit now.
    pub(crate) fn try_acquire(&self, bytes: usize) -> bool {
        let bytes = bytes.min(self.max);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if *used + bytes > self.max {
            return false;
        }
        *used += bytes;
        true
    }

    /// Give back bytes taken with [`ByteBudget::try_acquire`].
    pub(crate) fn release(&self, bytes: usize) {
        let bytes = bytes.min(self.max);
        if bytes == 0 {
            return;
        }
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) -= bytes;
        if let Some(t) = self.threads.get() {
            net::wake_budget_waiters(t);
        }
    }

    pub(crate) fn used(&self) -> usize {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
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
    /// One accept thread per listener.
    accept: Vec<JoinHandle<()>>,
    net: Vec<JoinHandle<()>>,
    stats: Option<JoinHandle<()>>,
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
        if cfg.request_timeout_ms == 0
            || cfg.connection_idle_ms == 0
            || cfg.handshake_timeout_ms == 0
            || cfg.connections_max == 0 || cfg.connections_per_ip_max == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "timeouts and connection limits must be positive"));
        }
        if cfg.default_partitions < 1 || cfg.default_partitions > cfg.partitions_per_topic_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("default_partitions must be within 1..={}", cfg.partitions_per_topic_max),
            ));
        }
        let wanted = cfg.effective_listeners();
        // TLS: certificates checked before anything is opened (a bad file fails the start).
        let tls = match (&cfg.tls, wanted.iter().find(|l| l.protocol.tls())) {
            (Some(t), Some(_)) => Some(transport::server_config(t).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?),
            (None, Some(l)) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("listener {l} needs a certificate and key (--tls-cert, --tls-key)")))
            }
            (_, None) => None,
        };
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
            crate::io::sys::set_listen_backlog(&listener, LISTEN_BACKLOG)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot set the accept queue of listener {l}: {e}")))?;
            let addr = listener.local_addr()?;
            bound.push((auth::Listener { protocol: l.protocol, addr }, listener));
        }
        let cfg_in_flight = cfg.request_bytes_in_flight_max;
        let addr = bound[0].0.addr;
        if cfg.consumer_heartbeat_interval_ms < 1 || cfg.consumer_heartbeat_interval_ms >= cfg.consumer_session_timeout_ms {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the consumer group heartbeat interval must be positive and below the session timeout",
            ));
        }
        let group_cfg = crate::groups::GroupConfig {
            consumer_session_timeout_ms: cfg.consumer_session_timeout_ms,
            consumer_heartbeat_interval_ms: cfg.consumer_heartbeat_interval_ms,
            ..Default::default()
        };
        let groups = GroupCoordinator::with_config(logs.clone(), group_cfg)?;
        let txn = crate::txn::TxnCoordinator::new(logs.clone(), groups.clone())?;
        let shared = Arc::new(Shared {
            cfg,
            logs: logs.clone(),
            groups,
            security,
            txn,
            stop: AtomicBool::new(false),
            open_conns: AtomicUsize::new(0),
            next_conn: AtomicU64::new(0),
            per_ip: Mutex::new(HashMap::new()),
            in_flight: ByteBudget::new(cfg_in_flight),
            pool: WorkPool::new("broker-blocking", BLOCKING_THREADS_MAX),
            net: OnceLock::new(),
            fetch_wakeups: AtomicU64::new(0),
        });
        let n = match shared.cfg.network_threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let started = net::start(&shared, n)?;
        let (threads, joins): (Vec<_>, Vec<_>) = started.into_iter().unzip();
        let _ = shared.in_flight.threads.set(threads.clone());
        let _ = shared.net.set(threads);
        let listeners: Vec<auth::Listener> = bound.iter().map(|(l, _)| l.clone()).collect();
        let mut handle = BrokerHandle { addr, listeners, logs, shared: shared.clone(), accept: Vec::new(), net: joins, stats: None };
        for (l, listener) in bound {
            let s = shared.clone();
            let protocol = l.protocol;
            let tls = if protocol.tls() { tls.clone() } else { None };
            match std::thread::Builder::new().name("broker-accept".into()).spawn(move || accept_loop(s, listener, protocol, tls)) {
                Ok(h) => handle.accept.push(h),
                Err(e) => {
                    // Stop the threads already started before failing.
                    handle.stop_listening();
                    return Err(e);
                }
            }
            tracing::info!(listener = %l, "listening");
        }
        handle.stats = if shared.cfg.stats_interval_ms > 0 {
            let s = shared.clone();
            match std::thread::Builder::new().name("broker-stats".into()).spawn(move || stats_loop(s)) {
                Ok(h) => Some(h),
                Err(e) => {
                    handle.stop_listening();
                    return Err(e);
                }
            }
        } else {
            None
        };
        tracing::info!(%addr, durability = %shared.cfg.log.durability, network_threads = n, "broker listening");
        Ok(handle)
    }
}

impl BrokerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Every listener with its bound address (the first is `local_addr`).
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
        self.shared.open_conns.load(Ordering::Acquire)
    }
    /// Fetch long-polls woken by a high-watermark advance so far.
    pub fn fetch_wakeups(&self) -> u64 {
        self.shared.fetch_wakeups.load(Ordering::Relaxed)
    }
    /// Request bytes currently read or handled (under `request_bytes_in_flight_max`).
    pub fn request_bytes_in_flight(&self) -> usize {
        self.shared.in_flight.used()
    }
    /// Stop accepting, close connections, wait (bounded) for the network threads and for the
    /// blocking pool's and group-commit drivers' jobs, so that no append races the close; then
    /// flush and checkpoint the logs.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_listening();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        loop {
            let busy = self.shared.pool.busy() + crate::log::pool::sync_pool().busy();
            if busy == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(busy, "blocking jobs still running at shutdown; closing the logs anyway");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.logs.close().map_err(io::Error::other)
    }

    fn stop_listening(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the accept threads with a connection of our own each.
        for l in &self.listeners {
            let _ = TcpStream::connect_timeout(&wake_addr(l.addr), Duration::from_secs(1));
        }
        for h in self.accept.drain(..) {
            let _ = h.join();
        }
        if let Some(threads) = self.shared.net.get() {
            for t in threads {
                t.post(net::Msg::Stop);
            }
        }
        for h in self.net.drain(..) {
            let _ = h.join();
        }
        if let Some(h) = self.stats.take() {
            let _ = h.join();
        }
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

fn accept_loop(shared: Arc<Shared>, listener: TcpListener, protocol: auth::SecurityProtocol, tls: Option<Arc<rustls::ServerConfig>>) {
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
        let Ok(peer) = stream.peer_addr() else {
            shared.open_conns.fetch_sub(1, Ordering::AcqRel);
            continue;
        };
        let threads = shared.net.get().expect("network threads start before the accept thread");
        let n = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        net::pick(threads, n).post(net::Msg::Conn(stream, peer, protocol, tls.clone()));
    }
    tracing::debug!("accept loop stopped");
}

/// Why a new connection must be refused, if it must; otherwise it is counted for its IP.
fn over_connection_limits(shared: &Shared, stream: &TcpStream) -> Option<String> {
    let ip = match stream.peer_addr() {
        Ok(a) => a.ip(),
        Err(e) => return Some(format!("no peer address: {e}")),
    };
    let open = shared.open_conns.load(Ordering::Acquire);
    if open >= shared.cfg.connections_max {
        return Some(format!("{open} connections open (connections_max {})", shared.cfg.connections_max));
    }
    let mut per_ip = shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
    let n = per_ip.entry(ip).or_insert(0);
    if *n >= shared.cfg.connections_per_ip_max {
        return Some(format!("{n} connections open from {ip} (connections_per_ip_max {})", shared.cfg.connections_per_ip_max));
    }
    *n += 1;
    shared.open_conns.fetch_add(1, Ordering::AcqRel);
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

/// How often each network thread checks request deadlines, idle connections and stalled
/// sends: they are enforced within this.
fn read_tick(cfg: &BrokerConfig) -> Duration {
    Duration::from_millis(cfg.request_timeout_ms.min(cfg.connection_idle_ms).min(cfg.handshake_timeout_ms).clamp(1, 1_000))
}

/// `stats_interval_ms`: one line of network counters per interval (measurements and tests).
fn stats_loop(shared: Arc<Shared>) {
    let every = Duration::from_millis(shared.cfg.stats_interval_ms);
    let mut next = Instant::now() + every;
    let (mut interval, mut run) = (reqstats::Hists::new(), reqstats::Hists::new());
    while !shared.stopping() {
        std::thread::sleep(Duration::from_millis(20).min(every));
        if Instant::now() < next {
            continue;
        }
        next += every;
        let per_thread = shared.net.get().map(|t| net::per_thread(t)).unwrap_or_default();
        // Group-commit fdatasyncs of every partition so far and their total time (a tail
        // latency's share of disk time: the difference of two lines is an interval's mean), and the
        // longest one of the interval.
        let (mut syncs, mut sync_us, mut sync_max_us) = (0u64, 0u64, 0u64);
        for name in shared.logs.topic_names() {
            for p in shared.logs.topic(&name).iter().flat_map(|t| t.iter()) {
                let (n, us) = p.sync_stats();
                syncs += n;
                sync_us += us;
                sync_max_us = sync_max_us.max(p.take_sync_max_us());
            }
        }
        tracing::info!(
            connections = shared.open_conns.load(Ordering::Acquire),
            fetch_wakeups = shared.fetch_wakeups.load(Ordering::Relaxed),
            blocking_threads = shared.pool.threads(),
            sync_threads = crate::log::pool::sync_pool().threads(),
            request_bytes = shared.in_flight.used(),
            syncs,
            sync_us,
            sync_max_us,
            "net stats per_thread={per_thread:?}"
        );
        // The broker's share of each Produce request's latency (docs/broker.md, "Stats").
        if let Some(t) = shared.net.get() {
            net::take_latency(t, &mut interval);
        }
        run.add(&interval);
        tracing::info!("produce latency window=interval {}", interval.summary());
        tracing::info!("produce latency window=run {}", run.summary());
        interval.reset();
    }
}
