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

mod handlers;

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
/// A connection with no complete request for this long is closed (Kafka's
/// connections.max.idle.ms): bounds what a stalled half-frame client holds.
pub const CONNECTION_IDLE_MS_MAX: u64 = 600_000;
/// A response that cannot be written for this long (the client stopped reading) closes the
/// connection instead of parking its writer forever.
pub const SEND_STALL_MS_MAX: u64 = 120_000;
/// Kafka's default message.max.bytes (1 MiB + the 12-byte log overhead).
pub const MESSAGE_MAX_BYTES_DEFAULT: usize = 1_048_588;
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
    pub frame_bytes_max: usize,
    /// Largest record batch a Produce may carry (Kafka's message.max.bytes, default 1048588);
    /// a larger one is refused with MESSAGE_TOO_LARGE. The log's `batch_bytes_max` is raised
    /// to it if lower.
    pub message_max_bytes: usize,
    /// Largest partition count CreateTopics accepts (each partition costs files, fsyncs and a
    /// lock hold while it is created; Kafka answers INVALID_PARTITIONS past such a limit).
    pub partitions_per_topic_max: i32,
}

impl BrokerConfig {
    pub fn new(data_dir: PathBuf, durability: Durability) -> Self {
        BrokerConfig {
            data_dir,
            listen: "127.0.0.1:9092".parse().expect("static addr"),
            // (In group mode the log zero-fills 1 MiB ahead by default: PERF_NOTES.md.)
            log: LogConfig { durability, ..LogConfig::default() },
            auto_create_topics: true,
            default_partitions: 1,
            frame_bytes_max: 100 << 20,
            message_max_bytes: MESSAGE_MAX_BYTES_DEFAULT,
            partitions_per_topic_max: 1_000,
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

thread_local! {
    static CONN_LOCAL_ADDR: Cell<Option<SocketAddr>> = const { Cell::new(None) };
}

/// The local address of the connection whose request this thread is handling (the address a
/// client used to reach us: what Metadata and FindCoordinator advertise).
pub fn current_connection_local_addr() -> Option<SocketAddr> {
    CONN_LOCAL_ADDR.with(|c| c.get())
}

/// State shared by the accept thread and every connection.
pub(crate) struct Shared {
    pub(crate) cfg: BrokerConfig,
    pub(crate) logs: Arc<LogManager>,
    pub(crate) groups: Arc<GroupCoordinator>,
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, Arc<TcpStream>>>,
    next_conn: AtomicU64,
    /// Connection threads (readers and writers) still running.
    threads: AtomicUsize,
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
    logs: Arc<LogManager>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
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
        if cfg.default_partitions < 1 || cfg.default_partitions > cfg.partitions_per_topic_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("default_partitions must be within 1..={}", cfg.partitions_per_topic_max),
            ));
        }
        let logs = LogManager::open(&cfg.data_dir, storage, cfg.log.clone()).map_err(io::Error::other)?;
        let listener = TcpListener::bind(cfg.listen)?;
        let addr = listener.local_addr()?;
        let groups = GroupCoordinator::new(logs.clone())?;
        let shared = Arc::new(Shared {
            cfg,
            logs: logs.clone(),
            groups,
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            threads: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new().name("broker-accept".into()).spawn(move || accept_loop(s, listener))?;
        tracing::info!(%addr, durability = %shared.cfg.log.durability, "broker listening");
        Ok(BrokerHandle { addr, logs, shared, accept: Some(accept) })
    }
}

impl BrokerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn logs(&self) -> &Arc<LogManager> {
        &self.logs
    }
    /// Connections currently open.
    pub fn connection_count(&self) -> usize {
        self.shared.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
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
        // Wake the accept thread with a connection of our own.
        let _ = TcpStream::connect_timeout(&wake_addr(self.addr), std::time::Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
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
        if self.accept.is_some() {
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

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    for conn in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                // EMFILE and friends: back off rather than spin.
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if let Err(e) = start_connection(&shared, stream) {
            tracing::warn!("cannot start connection threads: {e}");
        }
    }
    tracing::debug!("accept loop stopped");
}

fn start_connection(shared: &Arc<Shared>, stream: TcpStream) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(std::time::Duration::from_millis(CONNECTION_IDLE_MS_MAX)))?;
    stream.set_write_timeout(Some(std::time::Duration::from_millis(SEND_STALL_MS_MAX)))?;
    let peer = stream.peer_addr()?;
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
            reader_loop(&s, stream, tx, peer, local);
            s.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    if let Err(e) = reader {
        // The writer exits when `tx` (moved into the failed closure) is dropped.
        shared.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        return Err(e);
    }
    Ok(())
}

fn reader_loop(shared: &Arc<Shared>, stream: Arc<TcpStream>, tx: channel::Sender<Reply>, peer: SocketAddr, local: SocketAddr) {
    CONN_LOCAL_ADDR.with(|c| c.set(Some(local)));
    let mut r = BufReader::with_capacity(CONNECTION_BUFFER_BYTES, &*stream);
    loop {
        let frame = match wire::read_frame(&mut r, shared.cfg.frame_bytes_max) {
            Ok(f) => f,
            Err(FrameError::Closed) => break,
            Err(FrameError::Io(e)) => {
                tracing::debug!(%peer, "connection read ended: {e}");
                break;
            }
            Err(e) => {
                let _ = tx.send(Reply::Close(e.to_string()));
                break;
            }
        };
        let reply = handlers::handle(shared, frame);
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
