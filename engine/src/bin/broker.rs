//! `broker`: serve a data directory over the Kafka protocol.
//!
//! ```text
//! broker --data-dir /var/lib/zcl --listen 127.0.0.1:9092 --durability group
//! broker --config server.properties --message-max-bytes 2097164
//! ```
//!
//! Precedence: a flag given on the command line > the `--config` file (Kafka's key names,
//! [`engine::broker::properties`]) > the built-in default.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use engine::broker::{Broker, BrokerConfig};
use engine::log::Durability;

/// The process allocator (see `engine::io::sys::GuardedAlloc`): installed here, by the binary,
/// never by a library.
#[global_allocator]
static GLOBAL: engine::io::sys::GuardedAlloc = engine::io::sys::GuardedAlloc;

#[derive(Debug, Parser)]
#[command(name = "broker", about = "Kafka-compatible zero-copy partitioned-log broker")]
struct Args {
    /// Directory holding the partitions (<topic>-<partition>/); or `log.dirs` in --config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A server.properties-style file of broker settings under Kafka's key names
    /// (log.retention.ms, log.segment.bytes, message.max.bytes, num.partitions, ...; see
    /// docs/broker.md). Flags given on the command line override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// When appends are acknowledged: never (page cache), group (after a covering fdatasync)
    /// or interval=<ms> (background fdatasync every ms).
    #[arg(long, default_value = "group")]
    durability: Durability,
    /// Partitions of auto-created topics.
    #[arg(long, default_value_t = 1)]
    default_partitions: i32,
    /// Do not create topics on Metadata/Produce for unknown names.
    #[arg(long)]
    no_auto_create: bool,
    /// Largest request frame accepted (Kafka's socket.request.max.bytes); a larger size prefix
    /// closes the connection before anything is allocated.
    #[arg(long, alias = "socket-request-max-bytes", default_value_t = 100 << 20)]
    frame_bytes_max: usize,
    /// Bytes of request frames read or handled at once, broker-wide (at least
    /// --frame-bytes-max). When full, connection readers stop reading until it has room
    /// (backpressure): memory held by requests stays under it whatever clients send.
    #[arg(long, default_value_t = engine::broker::REQUEST_BYTES_IN_FLIGHT_DEFAULT)]
    max_request_bytes_in_flight: usize,
    /// Once a request frame's first byte arrived, the whole frame must arrive within this
    /// (slowloris clients are closed).
    #[arg(long, default_value_t = engine::broker::REQUEST_TIMEOUT_MS_DEFAULT)]
    request_timeout_ms: u64,
    /// A connection with no request for this long is closed (Kafka's connections.max.idle.ms).
    #[arg(long, default_value_t = engine::broker::CONNECTION_IDLE_MS_DEFAULT)]
    connections_max_idle_ms: u64,
    /// A connection to a TLS or SASL listener must finish its TLS handshake and SASL
    /// authentication within this of being accepted, or is closed.
    #[arg(long, default_value_t = engine::broker::HANDSHAKE_TIMEOUT_MS_DEFAULT)]
    handshake_timeout_ms: u64,
    /// Consumer group protocol (KIP-848, group.protocol=consumer): a member without a
    /// heartbeat for this long is removed and its partitions reassigned
    /// (group.consumer.session.timeout.ms).
    #[arg(long, default_value_t = 45_000)]
    group_consumer_session_timeout_ms: i32,
    /// The heartbeat interval consumer-protocol members are told
    /// (group.consumer.heartbeat.interval.ms); below the session timeout.
    #[arg(long, default_value_t = 5_000)]
    group_consumer_heartbeat_interval_ms: i32,
    /// Connections open at once; more are accepted and closed at once (logged once per 10 s).
    #[arg(long, default_value_t = engine::broker::CONNECTIONS_MAX_DEFAULT)]
    max_connections: usize,
    /// Connections open at once from one client IP address; more are accepted and closed.
    #[arg(long, default_value_t = engine::broker::CONNECTIONS_PER_IP_MAX_DEFAULT)]
    max_connections_per_ip: usize,
    /// Largest record batch a Produce may carry (Kafka's message.max.bytes); a larger one is
    /// answered MESSAGE_TOO_LARGE.
    #[arg(long, default_value_t = engine::broker::MESSAGE_MAX_BYTES_DEFAULT)]
    message_max_bytes: usize,
    /// Repair damaged logs on start: a partition whose log is damaged below its recovery point
    /// (or in a sealed segment) is truncated at its first invalid batch, and exactly what is
    /// dropped (segment, byte position, offsets, bytes) is logged. Without it such a partition
    /// is not opened and the error says where the damage is.
    #[arg(long)]
    repair: bool,
    /// Read rate (MiB/s) of the background scrub that CRC-checks sealed segments once an hour
    /// and fences a damaged batch (Fetch answers KAFKA_STORAGE_ERROR there); 0 = off.
    #[arg(long, default_value_t = engine::broker::SCRUB_RATE_MIB_DEFAULT)]
    scrub_rate_mib: u64,
    /// Read + write rate (MiB/s) of the log cleaner that compacts topics with
    /// cleanup.policy=compact; 0 = unthrottled.
    #[arg(long, default_value_t = 32)]
    cleaner_rate_mib: u64,
    /// Write large produce batches (>= 256 KiB, group durability) with O_DIRECT, bypassing the
    /// page cache: more throughput with many concurrent large-batch producers, more latency with
    /// few, and consumers read those batches from the disk (engine/PERF_NOTES.md, session 5).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    direct_io: bool,
    /// Listeners per Kafka's model, replacing --listen: PROTOCOL://host:port[,...] with
    /// PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL (the TLS ones need --tls-cert and --tls-key).
    /// Metadata advertises the listener a client connected to.
    #[arg(long)]
    listeners: Option<String>,
    /// SASL credentials file: `PLAIN <user> <password>` and `SCRAM-SHA-256|512 <user>
    /// iterations=.. salt=.. stored_key=.. server_key=..` lines (see --scram-credential).
    #[arg(long)]
    sasl_users: Option<PathBuf>,
    /// SASL mechanisms offered on SASL listeners (comma-separated; default PLAIN,SCRAM-SHA-256,SCRAM-SHA-512).
    #[arg(long)]
    sasl_mechanisms: Option<String>,
    /// Check every request against the ACLs (CreateAcls/DeleteAcls; kept in the data directory);
    /// deny by default. Without it every request is allowed.
    #[arg(long, alias = "acls")]
    authorizer: bool,
    /// Principals allowed everything when the authorizer is on: User:admin;User:ops.
    #[arg(long)]
    super_users: Option<String>,
    /// Print a --sasl-users line for MECHANISM:USER (SCRAM-SHA-256 or SCRAM-SHA-512, 4096
    /// iterations, random salt) with the password read from stdin, and exit.
    #[arg(long, value_name = "MECHANISM:USER")]
    scram_credential: Option<String>,
    /// Network threads multiplexing every connection (epoll); 0 = the number of cores.
    #[arg(long, default_value_t = 0)]
    network_threads: usize,
    /// Log a line of network counters (connections per network thread, fetch wake-ups,
    /// blocking and sync pool threads) this often, in ms; 0 = never.
    #[arg(long, default_value_t = 0)]
    stats_interval_ms: u64,
    /// An SSL listener on this address besides the others (the same as adding
    /// SSL://ADDR to --listeners; needs --tls-cert and --tls-key). Fetch over TLS copies the
    /// records (no sendfile through TLS).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_listen: Option<SocketAddr>,
    /// PEM certificate chain of the SSL / SASL_SSL listeners (leaf first).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the SSL / SASL_SSL listeners.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates: TLS clients must present a certificate signed by one of them.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

/// `--scram-credential MECHANISM:USER`: the credentials-file line, password from stdin.
fn print_scram_credential(spec: &str) -> ExitCode {
    use engine::broker::auth::{credentials, scram, Mechanism};
    let Some((mech, user)) = spec.split_once(':') else {
        eprintln!("--scram-credential: expected MECHANISM:USER, e.g. SCRAM-SHA-256:alice");
        return ExitCode::FAILURE;
    };
    let Some(hash) = Mechanism::parse(mech).and_then(|m| m.scram()) else {
        eprintln!("--scram-credential: {mech:?} is not SCRAM-SHA-256 or SCRAM-SHA-512");
        return ExitCode::FAILURE;
    };
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("--scram-credential: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\n', '\r']);
    let salt: [u8; 16] = rand::random();
    let c = scram::ScramCredential::from_password(hash, password, &salt, scram::ITERATIONS_MIN);
    println!("{}", credentials::scram_line(Mechanism::parse(mech).expect("parsed above"), user, &c));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    if let Some(spec) = &args.scram_credential {
        return print_scram_credential(spec);
    }
    // Block SIGINT/SIGTERM before any thread starts, so they are only received by sigwait below.
    if let Err(e) = engine::io::sys::block_termination_signals() {
        tracing::warn!("cannot block signals ({e}); shutdown on SIGTERM will not be clean");
    }
    let mut cfg = BrokerConfig::new(PathBuf::new(), args.durability);
    if let Some(file) = &args.config {
        if let Err(e) = engine::broker::properties::apply_file(&mut cfg, file) {
            tracing::error!("cannot start broker: {e}");
            return ExitCode::FAILURE;
        }
    }
    match args.data_dir.clone() {
        Some(d) => cfg.data_dir = d,
        None if cfg.data_dir.as_os_str().is_empty() => {
            tracing::error!("cannot start broker: no data directory: give --data-dir or log.dirs in --config");
            return ExitCode::FAILURE;
        }
        None => {}
    }
    // Flags with a file key apply when given on the command line (else the file's value or
    // the built-in default stays); the others always (their defaults are the built-in ones).
    if given("listen") && args.listeners.is_some() {
        tracing::error!("cannot start broker: give --listen (one PLAINTEXT listener) or --listeners, not both");
        return ExitCode::FAILURE;
    }
    if given("listen") {
        // The flag wins over the file's `listeners`, whatever they were.
        cfg.listen = args.listen;
        cfg.listeners.clear();
    }
    if given("default_partitions") {
        cfg.default_partitions = args.default_partitions;
    }
    if args.no_auto_create {
        cfg.auto_create_topics = false;
    }
    if given("frame_bytes_max") {
        cfg.frame_bytes_max = args.frame_bytes_max;
    }
    if given("max_request_bytes_in_flight") {
        cfg.request_bytes_in_flight_max = args.max_request_bytes_in_flight;
    }
    cfg.request_timeout_ms = args.request_timeout_ms;
    if given("connections_max_idle_ms") {
        cfg.connection_idle_ms = args.connections_max_idle_ms;
    }
    if given("handshake_timeout_ms") {
        cfg.handshake_timeout_ms = args.handshake_timeout_ms;
    }
    if given("group_consumer_session_timeout_ms") {
        cfg.consumer_session_timeout_ms = args.group_consumer_session_timeout_ms;
    }
    if given("group_consumer_heartbeat_interval_ms") {
        cfg.consumer_heartbeat_interval_ms = args.group_consumer_heartbeat_interval_ms;
    }
    if given("max_connections") {
        cfg.connections_max = args.max_connections;
    }
    if given("max_connections_per_ip") {
        cfg.connections_per_ip_max = args.max_connections_per_ip;
    }
    cfg.log.direct_io = args.direct_io;
    if given("message_max_bytes") {
        cfg.message_max_bytes = args.message_max_bytes;
    }
    cfg.log.repair = args.repair;
    cfg.log.scrub_rate_mib = args.scrub_rate_mib;
    cfg.log.cleaner_rate_mib = args.cleaner_rate_mib;
    if let Err(e) = apply_security(&mut cfg, &args) {
        tracing::error!("cannot start broker: {e}");
        return ExitCode::FAILURE;
    }
    cfg.network_threads = args.network_threads;
    cfg.stats_interval_ms = args.stats_interval_ms;
    // Experiment switch (results/net/2026-12-07.md, "e (evidence)"): group-commit write +
    // fdatasync as plain syscalls on the sync thread instead of an io_uring chain.
    if std::env::var_os("ZL_SYNC_SYSCALLS").is_some_and(|v| v == "1") {
        engine::io::sys::set_sync_syscalls(true);
        tracing::info!("ZL_SYNC_SYSCALLS=1: group-commit write + fdatasync as plain syscalls");
    }
    if let (Some(cert), Some(key)) = (args.tls_cert.clone(), args.tls_key.clone()) {
        cfg.tls = Some(engine::broker::TlsConfig { cert, key, client_ca: args.tls_client_ca.clone() });
    }
    if let Some(addr) = args.tls_listen {
        let mut l = cfg.effective_listeners();
        l.push(engine::broker::auth::Listener { protocol: engine::broker::auth::SecurityProtocol::Ssl, addr });
        cfg.listeners = l;
    }
    let broker = match Broker::start(cfg) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("cannot start broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    match engine::io::sys::wait_for_termination_signal() {
        Ok(sig) => tracing::info!(sig, "signal received, shutting down"),
        Err(e) => tracing::error!("sigwait failed: {e}"),
    }
    match broker.shutdown() {
        Ok(()) => {
            tracing::info!("logs flushed; bye");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The security flags into the configuration (listeners, SASL, authorizer).
fn apply_security(cfg: &mut BrokerConfig, args: &Args) -> Result<(), String> {
    use engine::broker::auth;
    if let Some(l) = &args.listeners {
        cfg.listeners = auth::parse_listeners(l).map_err(|e| format!("--listeners: {e}"))?;
    }
    cfg.security.sasl_users_file = args.sasl_users.clone();
    if let Some(m) = &args.sasl_mechanisms {
        cfg.security.sasl_mechanisms = m
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| auth::Mechanism::parse(m).ok_or_else(|| format!("--sasl-mechanisms: unknown mechanism {m:?}")))
            .collect::<Result<_, _>>()?;
    }
    cfg.security.authorizer = args.authorizer;
    if let Some(s) = &args.super_users {
        if !args.authorizer {
            return Err("--super-users needs --authorizer".into());
        }
        cfg.security.super_users = auth::parse_super_users(s).map_err(|e| format!("--super-users: {e}"))?;
    }
    let sasl = cfg.effective_listeners().iter().any(|l| l.protocol.sasl());
    if sasl && args.sasl_users.is_none() {
        tracing::warn!("a SASL listener without --sasl-users: only SCRAM credentials created with AlterUserScramCredentials can log in");
    }
    Ok(())
}
