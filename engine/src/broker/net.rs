//! The network threads (issue 18): a fixed set of threads, each multiplexing its share of the
//! connections with epoll (`mio`), reading frames, running handlers and writing responses in
//! request order. Nothing here blocks: a wait (group commit, Fetch long-poll, a group
//! rebalance, an admin request's fsyncs) is a registration whose completion posts the response
//! to the owning thread's inbox and wakes it ([`Responder`]).
//!
//! Per connection: responses leave in request order (one slot per request, filled in any
//! order, sent from the head); reading stops while [`CONNECTION_QUEUE_MAX`] responses are
//! queued or [`CONNECTION_OUT_BYTES_MAX`] response bytes are unsent (a client that does not
//! read its responses stops being read), while a request handed to the blocking pool runs
//! (requests are handled in order), and while the broker-wide request-bytes budget cannot hold
//! its next frame (resumed when bytes are given back, without parking a thread).

use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use super::auth::{SecurityProtocol, Session};
use super::reqstats::{self, Hists, Stamp};
use super::transport::{self, Transport};
use super::{handlers, release_ip, ConnCtx, Reply, Shared, CONNECTION_QUEUE_MAX, SEND_STALL_MS_MAX};
use crate::wire::fetch::FetchFrame;
use crate::wire::{self, FrameError};

/// Unsent response bytes per connection before it stops being read (a Fetch frame counts its
/// whole size; a larger single response is still sent).
pub const CONNECTION_OUT_BYTES_MAX: usize = 4 << 20;
/// Read chunk of each network thread (shared by its connections: an idle connection holds no
/// read buffer; bytes read past a frame the connection cannot handle yet are kept per
/// connection).
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Responses gathered into one writev.
const WRITEV_MAX: usize = 64;
/// A connection's turn: after this many requests handled or bytes read in one go, the thread
/// serves its other ready connections before coming back to it (a producer streaming
/// pipelined batches must not starve the consumers sharing its thread).
const TURN_REQUESTS_MAX: usize = 16;
const TURN_BYTES_MAX: usize = 1 << 20;
const WAKER: Token = Token(usize::MAX);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Job = Box<dyn FnOnce() + Send>;

pub(crate) enum Msg {
    /// A new connection for this thread (counted for its IP already), from a listener of
    /// this security protocol (TLS with this config on SSL / SASL_SSL listeners).
    Conn(std::net::TcpStream, SocketAddr, SecurityProtocol, Option<Arc<rustls::ServerConfig>>),
    /// The response to request `seq` of connection (`key`, `gen`), posted at `posted`.
    Reply { key: usize, gen: u64, seq: u64, reply: Reply, posted: Instant },
    /// Work to run on this thread (a long-poll's re-check).
    Job(Job),
    /// Run `job` on this thread once `at` has passed.
    Timer(Instant, Job),
    /// Request bytes were given back to the broker-wide budget.
    BudgetFreed,
    /// The broker is stopping.
    Stop,
}

/// One network thread as others see it: its inbox and the waker of its poll.
pub(crate) struct NetThread {
    inbox: Mutex<Vec<Msg>>,
    waker: Waker,
    /// Some connection of this thread waits for the request-bytes budget.
    wants_budget: AtomicBool,
    /// Connections served by this thread.
    pub(crate) conns: AtomicUsize,
    /// Produce request latencies handed over by the thread (`reqstats`), taken by the stats
    /// thread.
    lat: Mutex<Hists>,
}

impl NetThread {
    pub(crate) fn post(&self, m: Msg) {
        let mut g = lock(&self.inbox);
        let was_empty = g.is_empty();
        g.push(m);
        drop(g);
        if was_empty {
            // The thread drains the whole inbox per wake: one wake-up per batch of messages.
            let _ = self.waker.wake();
        }
    }

    pub(crate) fn budget_freed(&self) {
        if self.wants_budget.load(Ordering::Acquire) {
            self.post(Msg::BudgetFreed);
        }
    }
}

/// The way back to a connection for a response that is not ready when its handler returns.
/// `send` delivers it (from any thread) to the connection's network thread, which sends it in
/// request order. Dropped without `send`, it closes the connection (a request must never go
/// unanswered silently).
pub struct Responder {
    target: Target,
    sent: bool,
}

enum Target {
    Net { thread: Arc<NetThread>, key: usize, gen: u64, seq: u64 },
    /// Outside a network thread (tests and tools: [`Reply::wait_response`]).
    Channel(std::sync::mpsc::Sender<Reply>),
}

impl Responder {
    fn net(thread: Arc<NetThread>, key: usize, gen: u64, seq: u64) -> Responder {
        Responder { target: Target::Net { thread, key, gen, seq }, sent: false }
    }

    /// A responder whose reply arrives on a channel (tests and tools).
    pub fn channel() -> (Responder, std::sync::mpsc::Receiver<Reply>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (Responder { target: Target::Channel(tx), sent: false }, rx)
    }

    pub fn send(mut self, reply: Reply) {
        self.sent = true;
        self.deliver(reply);
    }

    fn deliver(&self, reply: Reply) {
        match &self.target {
            Target::Net { thread, key, gen, seq } => {
                thread.post(Msg::Reply { key: *key, gen: *gen, seq: *seq, reply, posted: Instant::now() })
            }
            Target::Channel(tx) => {
                let _ = tx.send(reply);
            }
        }
    }

    /// Run `job` on the connection's network thread once `at` has passed.
    pub fn run_at(&self, at: Instant, job: impl FnOnce() + Send + 'static) {
        match &self.target {
            Target::Net { thread, .. } => thread.post(Msg::Timer(at, Box::new(job))),
            Target::Channel(_) => {
                // Tests and tools only: a thread of its own.
                std::thread::spawn(move || {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    job()
                });
            }
        }
    }

    /// A handle that can post jobs to this responder's thread without holding the responder.
    pub(crate) fn poster(&self) -> Poster {
        match &self.target {
            Target::Net { thread, .. } => Poster(Some(thread.clone())),
            Target::Channel(_) => Poster(None),
        }
    }
}

/// Posts jobs to one network thread (see [`Responder::poster`]); without one (tests), runs
/// them on a thread of their own.
#[derive(Clone)]
pub(crate) struct Poster(Option<Arc<NetThread>>);

impl Poster {
    pub(crate) fn run_on_thread(&self, job: impl FnOnce() + Send + 'static) {
        match &self.0 {
            Some(t) => t.post(Msg::Job(Box::new(job))),
            None => {
                std::thread::spawn(job);
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.sent {
            self.deliver(Reply::Close("internal error: a request was dropped without a response".into()));
        }
    }
}

enum Out {
    /// A response: its size prefix and header + body; `at` bytes of prefix + body sent.
    Bytes { size: [u8; 4], body: Vec<u8>, at: usize },
    /// A zero-copy Fetch frame and the position reached in it.
    Frame { frame: FetchFrame, piece: usize, at: u64 },
    /// No response (acks=0).
    Skip,
    /// Close once everything before it is sent.
    Close(String),
}

impl Out {
    fn bytes(&self) -> usize {
        match self {
            Out::Bytes { body, .. } => body.len() + 4,
            Out::Frame { frame, .. } => frame.total_bytes,
            _ => 0,
        }
    }
}

struct Conn {
    sock: TcpStream,
    /// Plaintext or TLS over `sock`.
    transport: Box<dyn Transport>,
    gen: u64,
    ctx: ConnCtx,
    // ---- input
    /// Bytes read past what could be handled yet (kept only while needed).
    stash: Vec<u8>,
    stash_at: usize,
    hdr: [u8; 4],
    hdr_got: usize,
    /// A size prefix read whose frame waits for budget.
    want: Option<usize>,
    /// The frame being read (its bytes taken from the budget) and how much of it arrived.
    frame: Vec<u8>,
    frame_got: usize,
    /// When the current frame's first byte arrived (or its budget was granted).
    started: Option<Instant>,
    /// Last request read or response finished: the idle timeout counts from here.
    idle_since: Instant,
    /// Accepted on a TLS or SASL listener and not yet through its TLS handshake and SASL
    /// authentication: since when (`handshake_timeout_ms` counts from here).
    unauthenticated_since: Option<Instant>,
    can_read: bool,
    read_eof: bool,
    // ---- requests in progress
    /// A request handed to the blocking pool: later frames wait (requests are handled in order).
    pool_seq: Option<u64>,
    closing: bool,
    // ---- output
    head_seq: u64,
    slots: VecDeque<Option<Out>>,
    /// Beside each slot: the moments of a Produce request being timed (`reqstats`).
    stamps: VecDeque<Option<Stamp>>,
    out_bytes: usize,
    can_write: bool,
    /// When a send last found the socket full, while it still is.
    blocked_since: Option<Instant>,
}

impl Conn {
    fn reading_allowed(&self) -> bool {
        !self.closing
            && self.pool_seq.is_none()
            && self.want.is_none()
            && self.slots.len() < CONNECTION_QUEUE_MAX
            && self.out_bytes < CONNECTION_OUT_BYTES_MAX
    }
    fn mid_request(&self) -> bool {
        self.hdr_got > 0 || !self.frame.is_empty()
    }
    fn push_slot(&mut self, out: Option<Out>, stamp: Option<Stamp>) {
        self.slots.push_back(out);
        self.stamps.push_back(stamp);
    }
    /// The head slot is done with: its stamp, if it was timed.
    fn pop_slot(&mut self) -> Option<Stamp> {
        self.slots.pop_front();
        self.head_seq += 1;
        self.stamps.pop_front().flatten()
    }
}

/// Why a connection is closed, and how loudly that is logged.
enum Closing {
    Quiet(String),
    Info(String),
    Warn(String),
}

struct Timer {
    at: Instant,
    id: u64,
    job: Job,
}
impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.id) == (o.at, o.id)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    // Reversed: BinaryHeap is a max-heap, the earliest timer comes first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.id).cmp(&(self.at, self.id))
    }
}

static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

/// Start `n` network threads; returns their handles and join handles.
pub(crate) fn start(shared: &Arc<Shared>, n: usize) -> io::Result<Vec<(Arc<NetThread>, std::thread::JoinHandle<()>)>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let thread =
            Arc::new(NetThread {
                inbox: Mutex::new(Vec::new()),
                waker,
                wants_budget: AtomicBool::new(false),
                conns: AtomicUsize::new(0),
                lat: Mutex::new(Hists::new()),
            });
        let mut worker = Worker {
            shared: shared.clone(),
            me: thread.clone(),
            poll,
            conns: slab::Slab::new(),
            scratch: vec![0u8; READ_CHUNK_BYTES],
            timers: BinaryHeap::new(),
            next_timer: 0,
            budget_waiters: Vec::new(),
            dirty: Vec::new(),
            timing: shared.cfg.stats_interval_ms > 0,
            woke: Instant::now(),
            lat: Hists::new(),
            lat_flushed: Instant::now(),
        };
        let h = std::thread::Builder::new().name(format!("net-{i}")).spawn(move || worker.run())?;
        out.push((thread, h));
    }
    Ok(out)
}

struct Worker {
    shared: Arc<Shared>,
    me: Arc<NetThread>,
    poll: Poll,
    conns: slab::Slab<Conn>,
    scratch: Vec<u8>,
    timers: BinaryHeap<Timer>,
    next_timer: u64,
    budget_waiters: Vec<(usize, u64)>,
    dirty: Vec<usize>,
    /// Produce requests are timed (`--stats-interval-ms` given).
    timing: bool,
    /// When the current round's poll returned.
    woke: Instant,
    /// This thread's Produce latencies since its last hand-over to `me.lat`.
    lat: Hists,
    lat_flushed: Instant,
}

impl Worker {
    fn tick(&self) -> Duration {
        super::read_tick(&self.shared.cfg)
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let tick = self.tick();
        let mut next_sweep = Instant::now() + tick;
        loop {
            let now = Instant::now();
            let mut timeout = next_sweep.saturating_duration_since(now);
            if let Some(t) = self.timers.peek() {
                timeout = timeout.min(t.at.saturating_duration_since(now));
            }
            if !self.dirty.is_empty() {
                // Connections whose turn ended with work left: look for events, don't wait.
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("network thread poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            self.woke = Instant::now();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let key = ev.token().0;
                if let Some(c) = self.conns.get_mut(key) {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        c.can_read = true;
                    }
                    if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                        c.can_write = true;
                    }
                    self.dirty.push(key);
                }
            }
            let msgs = std::mem::take(&mut *lock(&self.me.inbox));
            let mut stop = false;
            for m in msgs {
                match m {
                    Msg::Conn(s, peer, protocol, tls) => self.add_conn(s, peer, protocol, tls),
                    Msg::Reply { key, gen, seq, reply, posted } => self.deliver(key, gen, seq, reply, Some(posted)),
                    Msg::Job(job) => job(),
                    Msg::Timer(at, job) => {
                        self.next_timer += 1;
                        self.timers.push(Timer { at, id: self.next_timer, job });
                    }
                    Msg::BudgetFreed => self.retry_budget(),
                    Msg::Stop => stop = true,
                }
            }
            let now = Instant::now();
            while self.timers.peek().is_some_and(|t| t.at <= now) {
                if let Some(t) = self.timers.pop() {
                    (t.job)();
                }
            }
            if stop || self.shared.stopping() {
                self.close_all();
                self.flush_latency();
                return;
            }
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for key in dirty.drain(..) {
                self.drive(key);
            }
            // Connections marked during the drives (a turn ended with input left): next round.
            let mut marked = std::mem::replace(&mut self.dirty, dirty);
            self.dirty.append(&mut marked);
            if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + tick;
            }
            if self.timing && self.lat.count() > 0 && self.lat_flushed.elapsed() >= reqstats::FLUSH_EVERY {
                self.flush_latency();
            }
        }
    }

    /// Hand this thread's Produce latencies to the stats thread (one lock per hand-over).
    fn flush_latency(&mut self) {
        lock(&self.me.lat).add(&self.lat);
        self.lat.reset();
        self.lat_flushed = Instant::now();
    }

    fn add_conn(&mut self, s: std::net::TcpStream, peer: SocketAddr, protocol: SecurityProtocol, tls: Option<Arc<rustls::ServerConfig>>) {
        let local = match s.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(%peer, "connection lost before it was served: {e}");
                self.forget(peer);
                return;
            }
        };
        if let Err(e) = s.set_nonblocking(true) {
            tracing::warn!(%peer, "cannot make the socket non-blocking: {e}");
            self.forget(peer);
            return;
        }
        let _ = s.set_nodelay(true);
        let transport: Box<dyn Transport> = match tls {
            None => Box::new(transport::Plain),
            Some(cfg) => match transport::Tls::new(&cfg) {
                Ok(t) => Box::new(t),
                Err(e) => {
                    tracing::warn!(%peer, "cannot start TLS: {e}");
                    self.forget(peer);
                    return;
                }
            },
        };
        let mut sock = TcpStream::from_std(s);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE) {
            tracing::warn!(%peer, "cannot register the connection: {e}");
            self.forget(peer);
            return;
        }
        let now = Instant::now();
        let unauthenticated_since = (transport.handshaking() || protocol.sasl()).then_some(now);
        entry.insert(Conn {
            sock,
            transport,
            gen: NEXT_GEN.fetch_add(1, Ordering::Relaxed),
            ctx: ConnCtx { peer, local, protocol, session: Session::new(protocol) },
            stash: Vec::new(),
            stash_at: 0,
            hdr: [0; 4],
            hdr_got: 0,
            want: None,
            frame: Vec::new(),
            frame_got: 0,
            started: None,
            idle_since: now,
            unauthenticated_since,
            can_read: true,
            read_eof: false,
            pool_seq: None,
            closing: false,
            head_seq: 0,
            slots: VecDeque::new(),
            stamps: VecDeque::new(),
            out_bytes: 0,
            can_write: true,
            blocked_since: None,
        });
        self.me.conns.fetch_add(1, Ordering::AcqRel);
        self.dirty.push(key);
    }

    /// A connection counted at accept that will not be served.
    fn forget(&self, peer: SocketAddr) {
        self.shared.open_conns.fetch_sub(1, Ordering::AcqRel);
        release_ip(&self.shared, peer.ip());
    }

    fn close(&mut self, key: usize, why: Closing) {
        if !self.conns.contains(key) {
            return;
        }
        let mut c = self.conns.remove(key);
        let peer = c.ctx.peer;
        match why {
            Closing::Quiet(r) => tracing::debug!(%peer, "connection ended: {r}"),
            Closing::Info(r) => tracing::info!(%peer, "closing connection: {r}"),
            Closing::Warn(r) => tracing::warn!(%peer, "closing connection: {r}"),
        }
        c.transport.close(&mut c.sock);
        let _ = self.poll.registry().deregister(&mut c.sock);
        let _ = c.sock.shutdown(Shutdown::Both);
        if !c.frame.is_empty() {
            self.shared.in_flight.release(c.frame.len());
        }
        self.me.conns.fetch_sub(1, Ordering::AcqRel);
        self.forget(peer);
    }

    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close(k, Closing::Quiet("broker stopping".into()));
        }
    }

    /// Read, handle and write for a connection until nothing more can be done now.
    fn drive(&mut self, key: usize) {
        loop {
            if let Err(why) = self.write(key) {
                return self.close(key, why);
            }
            let handled = match self.read(key) {
                Ok(n) => n,
                Err(why) => {
                    // Send what is ready before a protocol-level close; errors close at once.
                    return self.close(key, why);
                }
            };
            if handled == 0 {
                break;
            }
        }
        if let Err(why) = self.write(key) {
            return self.close(key, why);
        }
        if let Some(c) = self.conns.get(key) {
            if c.read_eof && c.slots.is_empty() && !c.mid_request() {
                self.close(key, Closing::Quiet("peer closed the connection".into()));
            }
        }
    }

    /// Read frames and run their handlers while the connection may be read; returns how many
    /// requests were handled (0 also when its turn ended: it is marked for the next round).
    fn read(&mut self, key: usize) -> Result<usize, Closing> {
        let mut handled = 0;
        let mut taken = 0;
        loop {
            let Some(c) = self.conns.get_mut(key) else { return Ok(handled) };
            if !c.reading_allowed() || self.shared.stopping() {
                return Ok(handled);
            }
            if handled >= TURN_REQUESTS_MAX || taken >= TURN_BYTES_MAX {
                self.dirty.push(key);
                return Ok(0);
            }
            // Input: kept bytes first, then the socket.
            let from_stash = c.stash_at < c.stash.len();
            let n;
            if from_stash {
                n = c.stash.len() - c.stash_at;
            } else {
                if !c.can_read || c.read_eof {
                    return Ok(handled);
                }
                // A large frame's body is read straight into the frame.
                let direct = !c.frame.is_empty() && c.frame.len() - c.frame_got >= self.scratch.len();
                let r = if direct {
                    c.transport.read(&mut c.sock, &mut c.frame[c.frame_got..])
                } else {
                    c.transport.read(&mut c.sock, &mut self.scratch)
                };
                match r {
                    Ok(0) => {
                        c.read_eof = true;
                        if c.mid_request() || c.want.is_some() {
                            return Err(Closing::Quiet("connection closed mid-frame".into()));
                        }
                        return Ok(handled);
                    }
                    Ok(k) if direct => {
                        taken += k;
                        c.frame_got += k;
                        if c.frame_got == c.frame.len() {
                            self.handle_frame(key);
                            handled += 1;
                        }
                        continue;
                    }
                    Ok(k) => {
                        taken += k;
                        n = k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        c.can_read = false;
                        return Ok(handled);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Closing::Quiet(format!("read failed: {e}"))),
                }
            }
            // Consume the input.
            let mut pos = 0;
            while pos < n {
                let Some(c) = self.conns.get_mut(key) else { return Ok(handled) };
                if !c.reading_allowed() {
                    break;
                }
                let input: &[u8] =
                    if from_stash { &c.stash[c.stash_at..c.stash_at + n] } else { &self.scratch[..n] };
                if c.frame.is_empty() {
                    let take = (4 - c.hdr_got).min(n - pos);
                    c.hdr[c.hdr_got..c.hdr_got + take].copy_from_slice(&input[pos..pos + take]);
                    if c.hdr_got == 0 {
                        c.started = Some(Instant::now());
                    }
                    c.hdr_got += take;
                    pos += take;
                    if c.hdr_got == 4 {
                        c.hdr_got = 0;
                        let size = i32::from_be_bytes(c.hdr);
                        let cfg = &self.shared.cfg;
                        // After a v0 SaslHandshake, frames are bare SASL tokens (no header).
                        let min = if c.ctx.session.expects_raw_token() { 1 } else { wire::REQUEST_HEADER_BYTES_MIN };
                        let bad = if size < 0 || size as usize > cfg.frame_bytes_max {
                            Some(FrameError::TooLarge { size: size as i64, limit: cfg.frame_bytes_max })
                        } else if size < min {
                            Some(FrameError::TooSmall(size))
                        } else {
                            None
                        };
                        if let Some(e) = bad {
                            // As before: the replies before it go out, then the close.
                            self.push_close(key, e.to_string());
                            pos = n;
                            break;
                        }
                        c.want = Some(size as usize);
                        if !self.take_budget(key) {
                            break;
                        }
                    }
                } else {
                    let c = self.conns.get_mut(key).expect("present");
                    let input: &[u8] =
                        if from_stash { &c.stash[c.stash_at..c.stash_at + n] } else { &self.scratch[..n] };
                    let take = (c.frame.len() - c.frame_got).min(n - pos);
                    let at = c.frame_got;
                    // Disjoint fields: copy via a temporary split.
                    let (frame, src) = (&mut c.frame, &input[pos..pos + take]);
                    frame[at..at + take].copy_from_slice(src);
                    c.frame_got += take;
                    pos += take;
                    if c.frame_got == c.frame.len() {
                        self.handle_frame(key);
                        handled += 1;
                    }
                }
            }
            // Keep what was not consumed.
            let Some(c) = self.conns.get_mut(key) else { return Ok(handled) };
            if from_stash {
                c.stash_at += pos;
                if c.stash_at >= c.stash.len() {
                    c.stash = Vec::new();
                    c.stash_at = 0;
                }
            } else if pos < n {
                c.stash = self.scratch[pos..n].to_vec();
                c.stash_at = 0;
            }
            if pos < n {
                return Ok(handled);
            }
        }
    }

    /// Take the budget for the connection's pending frame and allocate it; false if it must
    /// wait (registered to be retried when bytes are given back).
    fn take_budget(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else { return false };
        let Some(size) = c.want else { return true };
        if !self.shared.in_flight.try_acquire(size) {
            self.me.wants_budget.store(true, Ordering::Release);
            self.budget_waiters.push((key, c.gen));
            // A release between the check and the flag would be missed: look once more.
            if !self.shared.in_flight.try_acquire(size) {
                return false;
            }
            self.budget_waiters.pop();
        }
        let Some(buf) = crate::io::sys::try_zeroed_vec(size) else {
            self.shared.in_flight.release(size);
            c.want = None;
            self.push_close(key, format!("cannot allocate a {size}-byte request frame"));
            return false;
        };
        c.want = None;
        c.frame = buf;
        c.frame_got = 0;
        // Time spent waiting for the budget is the broker's, not the client's.
        c.started = Some(Instant::now());
        true
    }

    fn retry_budget(&mut self) {
        self.me.wants_budget.store(false, Ordering::Release);
        let waiters = std::mem::take(&mut self.budget_waiters);
        let mut still = Vec::new();
        for (key, gen) in waiters {
            if self.conns.get(key).is_none_or(|c| c.gen != gen) {
                continue;
            }
            if !still.is_empty() {
                still.push((key, gen));
                continue;
            }
            if self.take_budget(key) {
                self.dirty.push(key);
            } else {
                // take_budget registered it again; keep the order of the rest.
                still.append(&mut self.budget_waiters);
            }
        }
        if !still.is_empty() {
            self.me.wants_budget.store(true, Ordering::Release);
        }
        self.budget_waiters = still;
    }

    fn push_close(&mut self, key: usize, reason: String) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let seq = c.head_seq + c.slots.len() as u64;
        c.push_slot(Some(Out::Close(reason)), None);
        c.closing = true;
        let _ = seq;
    }

    /// The connection's frame is complete: run its handler.
    fn handle_frame(&mut self, key: usize) {
        let c = self.conns.get_mut(key).expect("present");
        let frame = std::mem::take(&mut c.frame);
        let size = frame.len();
        c.frame_got = 0;
        c.started = None;
        c.idle_since = Instant::now();
        let seq = c.head_seq + c.slots.len() as u64;
        let api = (!c.ctx.session.expects_raw_token() && frame.len() >= 2).then(|| i16::from_be_bytes([frame[0], frame[1]]));
        let pooled = api.is_some_and(|a| POOL_APIS.contains(&a));
        // Produce (API 0) requests are timed: the broker's share of the publish latency.
        let read = (self.timing && api == Some(0)).then(Instant::now);
        c.push_slot(None, None);
        if pooled {
            // Slow (fsyncs, many files): on the blocking pool; this connection's later
            // requests wait for it, so requests are still handled in order.
            c.pool_seq = Some(seq);
            let mut ctx = c.ctx.clone();
            let shared = self.shared.clone();
            let responder = Responder::net(self.me.clone(), key, c.gen, seq);
            self.shared.pool.spawn(move || {
                let reply = handlers::handle(&shared, &mut ctx, frame);
                shared.in_flight.release(size);
                responder.send(reply);
            });
            return;
        }
        let gen = c.gen;
        let reply = handlers::handle(&self.shared, &mut c.ctx, frame);
        if let Some(read) = read {
            let stamp = Stamp { woke: self.woke.min(read), read, handled: Instant::now(), posted: None, ready: None };
            if let Some(s) = c.stamps.back_mut() {
                *s = Some(stamp);
            }
        }
        // The frame is consumed by its handler: its bytes go back to the budget.
        self.shared.in_flight.release(size);
        self.deliver(key, gen, seq, reply, None);
    }

    /// Put the response to request `seq` in its slot (or start the work that will); `posted`:
    /// when another thread posted it.
    fn deliver(&mut self, key: usize, gen: u64, seq: u64, reply: Reply, posted: Option<Instant>) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.gen != gen || seq < c.head_seq {
            return;
        }
        if c.pool_seq == Some(seq) {
            // Its later requests may be handled now.
            c.pool_seq = None;
            self.dirty.push(key);
        }
        let idx = (seq - c.head_seq) as usize;
        if idx >= c.slots.len() {
            return;
        }
        let out = match reply {
            Reply::Now(v) if v.is_empty() => Out::Close("response could not be encoded".into()),
            Reply::Now(v) => Out::Bytes { size: (v.len() as i32).to_be_bytes(), body: v, at: 0 },
            Reply::Nothing => Out::Skip,
            Reply::Close(r) => {
                c.closing = true;
                Out::Close(r)
            }
            Reply::NowThenClose(v, r, after) => {
                // Nothing after this request is read. The close takes the next slot, filled
                // by a timer `after` from now (a request read before this reply was ready has
                // that slot already, and gets a Close: see `Reply::NowThenClose`).
                c.closing = true;
                if idx + 1 == c.slots.len() {
                    c.push_slot(None, None);
                    let responder = Responder::net(self.me.clone(), key, gen, seq + 1);
                    let job = move || responder.send(Reply::Close(r));
                    self.me.post(Msg::Timer(Instant::now() + after, Box::new(job)));
                }
                Out::Bytes { size: (v.len() as i32).to_be_bytes(), body: v, at: 0 }
            }
            Reply::Frame(frame) if frame.zero_copy() && c.transport.zero_copy() => Out::Frame { frame, piece: 0, at: 0 },
            Reply::Frame(frame) => match frame.to_vec() {
                // SimIo files and TLS connections: copied (the frame carries its own size
                // prefix).
                Ok(mut v) if v.len() >= 4 => {
                    let body = v.split_off(4);
                    Out::Bytes { size: [v[0], v[1], v[2], v[3]], body, at: 0 }
                }
                Ok(_) => Out::Close("empty fetch frame".into()),
                Err(e) => Out::Close(format!("fetch read failed: {e}")),
            },
            Reply::Later(f) => {
                // On the blocking pool; the connection's later requests wait for it (as in
                // Kafka, one request of a connection is handled at a time: an OffsetFetch
                // pipelined behind an OffsetCommit sees it, a LeaveGroup follows the commit).
                c.pool_seq = Some(seq);
                let responder = Responder::net(self.me.clone(), key, gen, seq);
                self.shared.pool.spawn(move || {
                    let v = f();
                    responder.send(Reply::Now(v));
                });
                return;
            }
            Reply::Pool(f) => {
                // A handler that would block here (a topic auto-create): run on the blocking
                // pool, its reply delivered to this slot; later requests wait, as for `Later`.
                c.pool_seq = Some(seq);
                let responder = Responder::net(self.me.clone(), key, gen, seq);
                self.shared.pool.spawn(move || responder.send(f()));
                return;
            }
            Reply::Pending(f) => {
                let responder = Responder::net(self.me.clone(), key, gen, seq);
                f(responder);
                return;
            }
        };
        c.out_bytes += out.bytes();
        c.slots[idx] = Some(out);
        if let Some(Some(s)) = c.stamps.get_mut(idx) {
            s.ready = Some(Instant::now());
            s.posted = posted.or(s.posted);
        }
        if idx == 0 {
            self.dirty.push(key);
        }
    }

    /// Send ready responses from the head, in order, as far as the socket takes them.
    fn write(&mut self, key: usize) -> Result<(), Closing> {
        // What the transport still holds (TLS records) goes first.
        if let Some(c) = self.conns.get_mut(key) {
            if c.can_write {
                match c.transport.flush(&mut c.sock) {
                    // Writable and nothing held back: not stalled (any queued send below
                    // records a new stall if the socket is full again).
                    Ok(true) => c.blocked_since = None,
                    Ok(false) => {
                        c.can_write = false;
                        c.blocked_since.get_or_insert_with(Instant::now);
                        return Ok(());
                    }
                    Err(e) => return Err(Closing::Quiet(format!("write failed: {e}"))),
                }
            }
        }
        loop {
            let Some(c) = self.conns.get_mut(key) else { return Ok(()) };
            match c.slots.front() {
                None | Some(None) => return Ok(()),
                Some(Some(Out::Skip)) => {
                    // No response (acks=0): not timed.
                    c.pop_slot();
                    continue;
                }
                Some(Some(Out::Close(r))) => return Err(Closing::Warn(r.clone())),
                Some(Some(_)) if !c.can_write => return Ok(()),
                Some(Some(Out::Frame { .. })) => {
                    let fd = c.sock.as_raw_fd();
                    let Some(Some(Out::Frame { frame, piece, at })) = c.slots.front_mut() else { unreachable!() };
                    match frame.send_from(fd, piece, at) {
                        Ok(true) => {
                            let n = frame.total_bytes;
                            c.out_bytes -= n;
                            if let Some(s) = c.pop_slot() {
                                self.lat.record(&s, Instant::now());
                            }
                            c.blocked_since = None;
                            c.idle_since = Instant::now();
                        }
                        Ok(false) => {
                            c.can_write = false;
                            c.blocked_since.get_or_insert_with(Instant::now);
                            return Ok(());
                        }
                        Err(e) => return Err(Closing::Quiet(format!("write failed: {e}"))),
                    }
                }
                Some(Some(Out::Bytes { .. })) => {
                    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(WRITEV_MAX * 2);
                    for s in c.slots.iter() {
                        let Some(Out::Bytes { size, body, at }) = s else { break };
                        if slices.len() + 2 > WRITEV_MAX * 2 {
                            break;
                        }
                        if *at < 4 {
                            slices.push(IoSlice::new(&size[*at..]));
                            slices.push(IoSlice::new(body));
                        } else {
                            slices.push(IoSlice::new(&body[*at - 4..]));
                        }
                    }
                    let r = c.transport.write_vectored(&mut c.sock, &slices);
                    drop(slices);
                    match r {
                        Ok(mut n) => {
                            c.blocked_since = None;
                            while n > 0 {
                                let Some(Some(Out::Bytes { body, at, .. })) = c.slots.front_mut() else { break };
                                let left = body.len() + 4 - *at;
                                if n >= left {
                                    n -= left;
                                    c.out_bytes -= body.len() + 4;
                                    if let Some(s) = c.pop_slot() {
                                        self.lat.record(&s, Instant::now());
                                    }
                                    c.idle_since = Instant::now();
                                } else {
                                    *at += n;
                                    n = 0;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            c.can_write = false;
                            c.blocked_since.get_or_insert_with(Instant::now);
                            return Ok(());
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Closing::Quiet(format!("write failed: {e}"))),
                    }
                }
            }
            // Space freed in the queue: reading may resume (the caller loops).
        }
    }

    /// Request deadlines (slowloris), idle connections, stalled sends.
    fn sweep(&mut self) {
        let cfg = &self.shared.cfg;
        let request_timeout = Duration::from_millis(cfg.request_timeout_ms);
        let idle = Duration::from_millis(cfg.connection_idle_ms);
        let stall = Duration::from_millis(SEND_STALL_MS_MAX);
        let handshake = Duration::from_millis(cfg.handshake_timeout_ms);
        let mut doomed = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            if let Some(t) = c.unauthenticated_since {
                if !c.transport.handshaking() && c.ctx.session.authenticated() {
                    c.unauthenticated_since = None;
                } else if t.elapsed() >= handshake {
                    let what = if c.transport.handshaking() { "TLS handshake" } else { "SASL authentication" };
                    doomed.push((key, Closing::Info(format!("{what} not complete within {} ms (handshake_timeout_ms)", cfg.handshake_timeout_ms))));
                    continue;
                }
            }
            if c.want.is_none() {
                if let Some(t) = c.started {
                    if (c.mid_request()) && t.elapsed() > request_timeout {
                        doomed.push((
                            key,
                            Closing::Info(format!("request not complete within {} ms (request_timeout_ms)", cfg.request_timeout_ms)),
                        ));
                        continue;
                    }
                }
            }
            if !c.mid_request() && c.want.is_none() && c.slots.is_empty() && c.idle_since.elapsed() >= idle {
                doomed.push((key, Closing::Info(format!("idle for {} ms (connection_idle_ms)", cfg.connection_idle_ms))));
                continue;
            }
            if c.blocked_since.is_some_and(|t| t.elapsed() >= stall) {
                doomed.push((key, Closing::Info(format!("a response could not be sent for {SEND_STALL_MS_MAX} ms"))));
            }
        }
        for (key, why) in doomed {
            self.close(key, why);
        }
    }
}

/// APIs handled on the blocking pool (they create, delete or fsync files), with the
/// connection's later requests waiting for them.
const POOL_APIS: &[i16] = &[
    19, // CreateTopics
    20, // DeleteTopics
    30, // CreateAcls (the ACL file is replaced durably)
    31, // DeleteAcls
    51, // AlterUserScramCredentials (the credentials file is replaced durably)
    33, // AlterConfigs
    35, // DescribeLogDirs (walks every segment's size)
    37, // CreatePartitions
    44, // IncrementalAlterConfigs
];

/// The request-bytes budget's view for the net threads: bytes given back wake threads with
/// connections waiting for it.
pub(crate) fn wake_budget_waiters(threads: &[Arc<NetThread>]) {
    for t in threads {
        t.budget_freed();
    }
}

/// Which thread gets connection number `n`: round robin.
pub(crate) fn pick(threads: &[Arc<NetThread>], n: u64) -> &Arc<NetThread> {
    &threads[(n % threads.len() as u64) as usize]
}

/// Connections per thread (stats).
pub(crate) fn per_thread(threads: &[Arc<NetThread>]) -> Vec<usize> {
    threads.iter().map(|t| t.conns.load(Ordering::Acquire)).collect()
}

/// The Produce latencies the threads handed over since the last call, merged (stats).
pub(crate) fn take_latency(threads: &[Arc<NetThread>], into: &mut Hists) {
    for t in threads {
        let mut g = lock(&t.lat);
        into.add(&g);
        g.reset();
    }
}
