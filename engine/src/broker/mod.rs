//! The Kafka-protocol broker: listener, per-connection reader/writer, one handler per API.
//!
//! Contract used by the load generator (embedded mode) and tests:
//! `Broker::start(BrokerConfig) -> io::Result<BrokerHandle>`, `BrokerHandle::local_addr()`,
//! `BrokerHandle::logs()`, `BrokerHandle::shutdown()`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::log::{Durability, LogConfig, LogManager};

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// Port 0 = ephemeral.
    pub listen: SocketAddr,
    pub log: LogConfig,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub frame_bytes_max: usize,
}

impl BrokerConfig {
    pub fn new(data_dir: PathBuf, durability: Durability) -> Self {
        BrokerConfig {
            data_dir,
            listen: "127.0.0.1:9092".parse().expect("static addr"),
            log: LogConfig { durability, ..LogConfig::default() },
            auto_create_topics: true,
            default_partitions: 1,
            frame_bytes_max: 100 << 20,
        }
    }
}

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
}

pub struct Broker;

pub struct BrokerHandle {
    addr: SocketAddr,
    logs: Arc<LogManager>,
}

impl Broker {
    pub fn start(_cfg: BrokerConfig) -> io::Result<BrokerHandle> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "broker not implemented yet"))
    }
}

impl BrokerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn logs(&self) -> &Arc<LogManager> {
        &self.logs
    }
    /// Stop accepting, close connections, flush and checkpoint the logs.
    pub fn shutdown(self) -> io::Result<()> {
        self.logs.close().map_err(io::Error::other)
    }
}
