//! Security of every broker connection the loadgen opens: TLS (rustls, ring provider) and SASL
//! (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), over Kafka's four listener types (`security.protocol`
//! PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL).
//!
//! One place opens broker connections: [`crate::client::Connector::connect_with_read_timeout`].
//! A `Connector` holds one run's resolved settings (an `Arc<Security>`, resolved by `run` from
//! the workload's `security` block and the CLI overrides; a value passed to everything that
//! connects, never a process-wide setting), wraps the TCP stream with [`connect_stream`] (TLS
//! handshake) and, after ApiVersions, authenticates with [`authenticate`] (SaslHandshake v1 +
//! SaslAuthenticate). Every connection goes through it: bootstrap/metadata, topic creation and
//! deletion, producers (and their Metadata lookups), consumers, ListOffsets.
//!
//! Credentials come from a file (`username=` / `password=` lines) or the environment
//! (`LOADGEN_SASL_USERNAME` / `LOADGEN_SASL_PASSWORD`); they are never written anywhere: the
//! result records the protocol, the mechanism and the TLS switches only ([`Security::info`]),
//! and [`Credentials`]' `Debug` hides the password.
//!
//! TLS streams are shared by two threads on a produce connection (the producer thread writes,
//! the ack reader reads): [`BrokerStream`] keeps the rustls session behind a mutex held only
//! while encrypting or decrypting, never while blocked on the socket (a writer blocked on a full
//! socket must not stop the reader that drains the responses the broker is waiting to send).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

use crate::client::Conn;

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }
    pub fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }
    pub fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(Protocol::Plaintext),
            "SSL" => Ok(Protocol::Ssl),
            "SASL_PLAINTEXT" => Ok(Protocol::SaslPlaintext),
            "SASL_SSL" => Ok(Protocol::SaslSsl),
            _ => Err(format!("security protocol {s:?}: want PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")),
        }
    }
}

/// Kafka's `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for Mechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Mechanism, String> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Mechanism::Plain),
            "SCRAM-SHA-256" => Ok(Mechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(Mechanism::ScramSha512),
            _ => Err(format!("SASL mechanism {s:?}: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")),
        }
    }
}

fn yes() -> bool {
    true
}

/// The workload's `security` block (YAML camelCase), also set by the CLI overrides
/// (`--security-protocol`, `--sasl-mechanism`, `--sasl-credentials-file`, `--tls-ca-file`,
/// `--tls-cert-file`, `--tls-key-file`, `--tls-no-verify-hostname`). Holds no secret: the
/// password is read from the credentials file or the environment when the run starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityConfig {
    #[serde(default)]
    pub protocol: Protocol,
    /// SASL_PLAINTEXT / SASL_SSL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (required with SASL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<Mechanism>,
    /// `username=` / `password=` lines; without it, `LOADGEN_SASL_USERNAME` / `LOADGEN_SASL_PASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_credentials_file: Option<String>,
    /// PEM CA certificates that sign the brokers' certificates (default: the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
    /// PEM client certificate (chain) and its private key, for brokers that ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<String>,
    /// Check that the broker's certificate names the host connected to (Kafka's
    /// `ssl.endpoint.identification.algorithm=https`, its default). false: the chain is still
    /// verified against the CA, only the name is not.
    #[serde(default = "yes")]
    pub tls_verify_hostname: bool,
}

impl Default for SecurityConfig {
    fn default() -> SecurityConfig {
        SecurityConfig {
            protocol: Protocol::Plaintext,
            sasl_mechanism: None,
            sasl_credentials_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_verify_hostname: true,
        }
    }
}

impl SecurityConfig {
    pub fn is_default(&self) -> bool {
        *self == SecurityConfig::default()
    }

    /// Settings that do not fit the protocol are refused (a typo must not silently run
    /// unauthenticated or unencrypted).
    pub fn validate(&self) -> Result<(), String> {
        let p = self.protocol;
        if !p.tls() && (self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || self.tls_key_file.is_some() || !self.tls_verify_hostname) {
            return Err(format!("TLS settings given but the security protocol is {} (want SSL or SASL_SSL)", p.name()));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err("a TLS client certificate needs both --tls-cert-file and --tls-key-file".into());
        }
        if p.sasl() && self.sasl_mechanism.is_none() {
            return Err(format!("security protocol {} needs a SASL mechanism (--sasl-mechanism PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)", p.name()));
        }
        if !p.sasl() && (self.sasl_mechanism.is_some() || self.sasl_credentials_file.is_some()) {
            return Err(format!("SASL settings given but the security protocol is {} (want SASL_PLAINTEXT or SASL_SSL)", p.name()));
        }
        Ok(())
    }
}

/// CLI overrides of the workload's `security` block (flattened into `Overrides`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// Kafka security.protocol: PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL.
    #[arg(long, value_parser = Protocol::from_str)]
    pub security_protocol: Option<Protocol>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
    #[arg(long, value_parser = Mechanism::from_str)]
    pub sasl_mechanism: Option<Mechanism>,
    /// File with username= and password= lines (else LOADGEN_SASL_USERNAME / LOADGEN_SASL_PASSWORD).
    #[arg(long)]
    pub sasl_credentials_file: Option<String>,
    /// PEM CA certificate(s) that sign the brokers' certificates (default: the system's roots).
    #[arg(long)]
    pub tls_ca_file: Option<String>,
    /// PEM client certificate (with --tls-key-file).
    #[arg(long)]
    pub tls_cert_file: Option<String>,
    /// PEM private key of the client certificate.
    #[arg(long)]
    pub tls_key_file: Option<String>,
    /// Do not check that the broker certificate names the host (the chain is still verified).
    #[arg(long)]
    pub tls_no_verify_hostname: bool,
}

impl SecurityArgs {
    pub fn apply(&self, c: &mut SecurityConfig) {
        if let Some(p) = self.security_protocol {
            c.protocol = p;
        }
        if let Some(m) = self.sasl_mechanism {
            c.sasl_mechanism = Some(m);
        }
        if let Some(f) = &self.sasl_credentials_file {
            c.sasl_credentials_file = Some(f.clone());
        }
        if let Some(f) = &self.tls_ca_file {
            c.tls_ca_file = Some(f.clone());
        }
        if let Some(f) = &self.tls_cert_file {
            c.tls_cert_file = Some(f.clone());
        }
        if let Some(f) = &self.tls_key_file {
            c.tls_key_file = Some(f.clone());
        }
        if self.tls_no_verify_hostname {
            c.tls_verify_hostname = false;
        }
    }
}

/// SASL user name and password. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ username: {:?}, password: <hidden> }}", self.username)
    }
}

impl Credentials {
    pub fn new(username: &str, password: &str) -> Credentials {
        Credentials { username: username.into(), password: password.into() }
    }

    /// `username=…` and `password=…` lines (blank lines and `#` comments ignored; the value is
    /// everything after the first `=`, unchanged).
    pub fn parse(text: &str, origin: &str) -> Result<Credentials, String> {
        let (mut user, mut pass) = (None, None);
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            match t.split_once('=') {
                Some((k, v)) if k.trim() == "username" => user = Some(v.trim_end_matches(['\r', '\n']).to_string()),
                Some((k, v)) if k.trim() == "password" => pass = Some(v.trim_end_matches(['\r', '\n']).to_string()),
                // Never echo the line: it may be a password with a typo in its key.
                _ => return Err(format!("{origin} line {}: want username=… or password=…", i + 1)),
            }
        }
        match (user, pass) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Credentials { username: u, password: p }),
            _ => Err(format!("{origin}: needs a non-empty username= and a password= line")),
        }
    }

    /// From the file if given, else the environment.
    pub fn load(file: Option<&str>) -> Result<Credentials, String> {
        if let Some(f) = file {
            let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read SASL credentials file {f}: {e}"))?;
            return Credentials::parse(&text, &format!("SASL credentials file {f}"));
        }
        match (std::env::var("LOADGEN_SASL_USERNAME"), std::env::var("LOADGEN_SASL_PASSWORD")) {
            (Ok(u), Ok(p)) if !u.is_empty() => Ok(Credentials { username: u, password: p }),
            _ => Err("SASL needs credentials: --sasl-credentials-file FILE (username=/password= lines) or the environment \
                      variables LOADGEN_SASL_USERNAME and LOADGEN_SASL_PASSWORD"
                .into()),
        }
    }
}

/// The result's `target.security`: what was used, never a secret (no user name, no password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityInfo {
    /// PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL.
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// TLS protocols only: the trust anchors (`file` = --tls-ca-file, `system`), whether a
    /// client certificate was offered and the host name checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_certificate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify_hostname: Option<bool>,
}

/// Resolved settings: the TLS client configuration (certificates loaded) and the credentials.
#[derive(Debug, Clone)]
pub struct Security {
    pub protocol: Protocol,
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<(Mechanism, Credentials)>,
    info: SecurityInfo,
}

impl Default for Security {
    fn default() -> Security {
        Security { protocol: Protocol::Plaintext, tls: None, sasl: None, info: SecurityInfo::plaintext() }
    }
}

impl SecurityInfo {
    fn plaintext() -> SecurityInfo {
        SecurityInfo { protocol: "PLAINTEXT".into(), sasl_mechanism: None, tls_ca: None, tls_client_certificate: None, tls_verify_hostname: None }
    }
}

impl Security {
    /// Load the certificates and the credentials the settings name. Errors are one line and
    /// never contain a secret.
    pub fn resolve(c: &SecurityConfig) -> Result<Security, String> {
        c.validate()?;
        let mut info = SecurityInfo::plaintext();
        info.protocol = c.protocol.name().into();
        let tls = if c.protocol.tls() {
            info.tls_ca = Some(if c.tls_ca_file.is_some() { "file" } else { "system" }.into());
            info.tls_client_certificate = Some(c.tls_cert_file.is_some());
            info.tls_verify_hostname = Some(c.tls_verify_hostname);
            Some(Arc::new(tls_config(c)?))
        } else {
            None
        };
        let sasl = match c.sasl_mechanism {
            Some(m) if c.protocol.sasl() => {
                info.sasl_mechanism = Some(m.name().into());
                Some((m, Credentials::load(c.sasl_credentials_file.as_deref())?))
            }
            _ => None,
        };
        Ok(Security { protocol: c.protocol, tls, sasl, info })
    }

    /// For tests and library callers: these exact settings.
    pub fn with(protocol: Protocol, tls: Option<rustls::ClientConfig>, sasl: Option<(Mechanism, Credentials)>) -> Security {
        let mut info = SecurityInfo::plaintext();
        info.protocol = protocol.name().into();
        info.sasl_mechanism = sasl.as_ref().map(|(m, _)| m.name().into());
        Security { protocol, tls: tls.map(Arc::new), sasl, info }
    }

    pub fn info(&self) -> SecurityInfo {
        self.info.clone()
    }

    pub fn sasl(&self) -> Option<&(Mechanism, Credentials)> {
        self.sasl.as_ref()
    }
}

/// ring: builds with a C compiler alone (aws-lc-rs also needs cmake and a much longer C build
/// on every fresh CI machine). rustls 0.23.48 marks ring's provider deprecated because it lacks
/// the post-quantum hybrid key exchange; Kafka's JVM TLS (Java 17) does not offer that either,
/// so the handshakes negotiate X25519 / P-256 whichever provider is used.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration: trust anchors from the CA file (or the system's), an
/// optional client certificate, and the host-name switch.
pub fn tls_config(c: &SecurityConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &c.tls_ca_file {
        Some(f) => {
            let certs = read_certs(f, "CA")?;
            for cert in certs {
                roots.add(cert).map_err(|e| format!("CA file {f}: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert); // a malformed system root is skipped, as by other clients
            }
            if roots.is_empty() {
                return Err("no system CA certificates found: give the brokers' CA with --tls-ca-file".into());
            }
        }
    }
    let client_auth = match (&c.tls_cert_file, &c.tls_key_file) {
        (Some(cf), Some(kf)) => {
            let chain = read_certs(cf, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(kf).map_err(|e| format!("TLS key file {kf}: no PEM private key ({e})"))?;
            Some((chain, key))
        }
        _ => None,
    };
    build_tls_config(roots, client_auth, c.tls_verify_hostname)
}

/// The client configuration from loaded parts (also used by the unit tests).
pub fn build_tls_config(
    roots: rustls::RootCertStore,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    verify_hostname: bool,
) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("TLS verifier: {e}"))?;
    let builder = if verify_hostname {
        builder.with_webpki_verifier(verifier)
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoHostnameVerifier(verifier)))
    };
    match client_auth {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| format!("TLS client certificate: {e}")),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn read_certs(f: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(f)
        .map_err(|e| format!("cannot read {what} file {f}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} file {f}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} file {f} holds no PEM certificate"));
    }
    Ok(certs)
}

/// `--tls-no-verify-hostname`: the chain is verified against the trust anchors (webpki checks
/// the chain before the name), only a name mismatch is accepted.
#[derive(Debug)]
struct NoHostnameVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for NoHostnameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The host names addresses were resolved from (see [`remember_host`]): TLS verifies the
/// broker's certificate against the name, as Kafka's clients do, not the IP address.
static HOSTS: Mutex<Vec<(SocketAddr, String)>> = Mutex::new(Vec::new());

/// Bound on remembered host names (brokers of one cluster; the oldest is dropped beyond it).
const HOSTS_MAX: usize = 4096;

/// Remember that `addr` was resolved from `host` (called by `client::resolve`).
pub fn remember_host(addr: SocketAddr, host: &str) {
    let mut h = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    h.retain(|(a, _)| *a != addr);
    if h.len() >= HOSTS_MAX {
        h.remove(0);
    }
    h.push((addr, host.to_string()));
}

/// The name the broker's certificate must carry: the host name `addr` was resolved from, else
/// its IP address. Returned with its text, for messages.
fn server_name(addr: SocketAddr) -> Result<(ServerName<'static>, String), String> {
    let host = HOSTS.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(a, _)| *a == addr).map(|(_, h)| h.clone());
    let h = host.unwrap_or_else(|| addr.ip().to_string());
    let bare = h.trim_start_matches('[').trim_end_matches(']').to_string();
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok((ServerName::IpAddress(ip.into()), bare)),
        Err(_) => ServerName::try_from(bare.clone()).map(|n| (n, bare.clone())).map_err(|e| format!("broker host name {h:?}: {e}")),
    }
}

/// TCP (with TLS for SSL / SASL_SSL, handshake done within `timeout`) to `addr`.
pub fn connect_stream(sec: &Security, addr: SocketAddr, timeout: Duration, read_timeout: Duration) -> Result<BrokerStream, String> {
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect to broker {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("{addr}: {e}"))?;
    let Some(cfg) = &sec.tls else {
        tcp.set_read_timeout(Some(read_timeout)).map_err(|e| format!("{addr}: {e}"))?;
        return Ok(BrokerStream { tcp, tls: None, rbuf: Vec::new(), rpos: 0, rlen: 0, wbuf: Vec::new() });
    };
    let (name, shown) = server_name(addr)?;
    let mut conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| format!("TLS to broker {addr}: {e}"))?;
    // Plaintext is encrypted as it is written (a whole request at once): no short writes.
    conn.set_buffer_limit(None);
    tcp.set_read_timeout(Some(timeout)).map_err(|e| format!("{addr}: {e}"))?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| format!("{addr}: {e}"))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            let hint = if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                " (is it a TLS listener? --security-protocol must match the listener: SSL/SASL_SSL speak TLS)"
            } else {
                ""
            };
            return Err(format!("TLS handshake with broker {addr} (server name {shown}) failed: {e}{hint}"));
        }
    }
    tcp.set_read_timeout(Some(read_timeout)).map_err(|e| format!("{addr}: {e}"))?;
    tcp.set_write_timeout(None).map_err(|e| format!("{addr}: {e}"))?;
    let tls = Arc::new(TlsShared { conn: Mutex::new(conn), write: Mutex::new(()) });
    Ok(BrokerStream { tcp, tls: Some(tls), rbuf: vec![0; 32 << 10], rpos: 0, rlen: 0, wbuf: Vec::new() })
}

struct TlsShared {
    conn: Mutex<rustls::ClientConnection>,
    /// Held from encryption to the end of the socket write, so TLS records leave in order.
    write: Mutex<()>,
}

/// A broker connection: plain TCP or TLS over it. Clones share the socket (and the TLS
/// session): one thread may read while another writes.
pub struct BrokerStream {
    tcp: TcpStream,
    tls: Option<Arc<TlsShared>>,
    /// TLS: ciphertext read from the socket and not yet handed to rustls, `rbuf[rpos..rlen]`.
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
}

impl BrokerStream {
    pub fn try_clone(&self) -> io::Result<BrokerStream> {
        Ok(BrokerStream {
            tcp: self.tcp.try_clone()?,
            tls: self.tls.clone(),
            rbuf: if self.tls.is_some() { vec![0; 32 << 10] } else { Vec::new() },
            rpos: 0,
            rlen: 0,
            wbuf: Vec::new(),
        })
    }
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp.shutdown(how)
    }
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(t)
    }
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp.set_write_timeout(t)
    }
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

impl Read for BrokerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.clone() else { return self.tcp.read(buf) };
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let mut c = lock(&tls.conn);
                // Ciphertext already read, as far as rustls takes it (its plaintext buffer is
                // bounded: what does not fit waits in rbuf[rpos..rlen]).
                while self.rpos < self.rlen {
                    let mut slice = &self.rbuf[self.rpos..self.rlen];
                    match c.read_tls(&mut slice) {
                        Ok(0) => break,
                        Ok(n) => {
                            self.rpos += n;
                            c.process_new_packets().map_err(tls_err)?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Other => break, // plaintext buffer full
                        Err(e) => return Err(e),
                    }
                }
                match c.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if self.rpos < self.rlen {
                // rustls took nothing more and has nothing to hand out: never spin on it.
                return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS: undecodable data from broker"));
            }
            // Blocking socket read with no lock held (the writer may encrypt meanwhile).
            let n = self.tcp.read(&mut self.rbuf)?;
            self.rpos = 0;
            self.rlen = n;
            if n == 0 {
                let mut c = lock(&tls.conn);
                let _ = c.read_tls(&mut io::empty());
                c.process_new_packets().map_err(tls_err)?;
                // Ok(0) after the broker's close_notify, UnexpectedEof without it.
                return c.reader().read(buf);
            }
        }
    }
}

impl Write for BrokerStream {
    /// TLS: the whole buffer is encrypted and written (or an error returned), so `write`
    /// never writes part of it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.clone() else { return self.tcp.write(buf) };
        let _order = lock(&tls.write);
        self.wbuf.clear();
        {
            let mut c = lock(&tls.conn);
            c.writer().write_all(buf)?;
            while c.wants_write() {
                c.write_tls(&mut self.wbuf)?;
            }
        }
        self.tcp.write_all(&self.wbuf)?;
        if self.wbuf.capacity() > (4 << 20) {
            self.wbuf = Vec::new(); // one huge request must not pin its buffer
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// SaslHandshake v1 + SaslAuthenticate with the settings' mechanism, on a connection that has
/// negotiated its API versions. A refusal is an error naming the broker's message.
pub fn authenticate(c: &mut Conn, mechanism: Mechanism, creds: &Credentials) -> Result<(), String> {
    let addr = c.addr;
    let hv = c.version(ApiKey::SaslHandshake).filter(|v| *v >= 1).ok_or_else(|| {
        format!("broker {addr} does not offer SaslHandshake v1 (is it a SASL listener? --security-protocol must match the listener)")
    })?;
    let av = c
        .version(ApiKey::SaslAuthenticate)
        .ok_or_else(|| format!("broker {addr} does not offer SaslAuthenticate (is it a SASL listener?)"))?;
    let r: SaslHandshakeResponse = c
        .call(ApiKey::SaslHandshake, hv, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism.name())))
        .map_err(|e| format!("SASL handshake with broker {addr} failed: {e}"))?;
    if r.error_code != 0 {
        let offered: Vec<String> = r.mechanisms.iter().map(|m| m.to_string()).collect();
        return Err(format!(
            "SASL handshake with broker {addr} refused {} (error code {}); the broker offers: {}",
            mechanism.name(),
            r.error_code,
            if offered.is_empty() { "nothing".into() } else { offered.join(", ") }
        ));
    }
    let mut step = |token: Vec<u8>| -> Result<Bytes, String> {
        let r: SaslAuthenticateResponse = c
            .call(ApiKey::SaslAuthenticate, av, &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)))
            .map_err(|e| format!("SASL authentication failed at broker {addr} ({}): {e}", mechanism.name()))?;
        if r.error_code != 0 {
            return Err(format!(
                "SASL authentication failed at broker {addr} ({}): {} (error code {})",
                mechanism.name(),
                r.error_message.map(|m| m.to_string()).unwrap_or_else(|| "no message".into()),
                r.error_code
            ));
        }
        Ok(r.auth_bytes)
    };
    match mechanism {
        Mechanism::Plain => {
            // RFC 4616: authzid NUL authcid NUL passwd.
            let mut t = Vec::with_capacity(2 + creds.username.len() + creds.password.len());
            t.push(0);
            t.extend_from_slice(creds.username.as_bytes());
            t.push(0);
            t.extend_from_slice(creds.password.as_bytes());
            step(t)?;
        }
        Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
            let hash = if mechanism == Mechanism::ScramSha256 { ScramHash::Sha256 } else { ScramHash::Sha512 };
            let mut s = Scram::new(hash, creds, &random_nonce());
            let server_first = step(s.client_first().into_bytes())?;
            let server_first = std::str::from_utf8(&server_first).map_err(|_| format!("broker {addr}: SCRAM server-first message is not UTF-8"))?;
            let fin = s.client_final(server_first).map_err(|e| format!("SASL authentication with broker {addr} ({}): {e}", mechanism.name()))?;
            let server_final = step(fin.into_bytes())?;
            let server_final = std::str::from_utf8(&server_final).map_err(|_| format!("broker {addr}: SCRAM server-final message is not UTF-8"))?;
            s.verify_server_final(server_final).map_err(|e| format!("SASL authentication with broker {addr} ({}): {e}", mechanism.name()))?;
        }
    }
    Ok(())
}

fn random_nonce() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        match self {
            ScramHash::Sha256 => {
                let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut m = <Hmac<sha2::Sha512> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }
    fn h(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            ScramHash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
    /// RFC 5802 Hi(): PBKDF2 with HMAC of this hash.
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut out);
                out
            }
            ScramHash::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// Most PBKDF2 iterations a server may ask for (Kafka allows 4096..16384; a hostile server must
/// not make the client spin for minutes).
const SCRAM_ITERATIONS_MAX: u32 = 1 << 20;

/// The client side of a SCRAM exchange (RFC 5802, RFC 7677), without channel binding (`n,,`).
pub struct Scram {
    hash: ScramHash,
    password: String,
    nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

/// RFC 5802 saslname: `=` and `,` escaped.
fn saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

impl Scram {
    pub fn new(hash: ScramHash, creds: &Credentials, nonce: &str) -> Scram {
        let client_first_bare = format!("n={},r={nonce}", saslname(&creds.username));
        Scram {
            hash,
            password: creds.password.clone(),
            nonce: nonce.into(),
            client_first_bare,
            server_signature: None,
        }
    }

    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// The client-final message for this server-first message; keeps the expected server
    /// signature.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, String> {
        let (mut r, mut s, mut i) = (None, None, None);
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => r = Some(v),
                Some(("s", v)) => s = Some(v),
                Some(("i", v)) => i = Some(v),
                Some(("m", _)) => return Err("the server asks for a mandatory SCRAM extension we do not know".into()),
                _ => {}
            }
        }
        let (Some(r), Some(s), Some(i)) = (r, s, i) else {
            return Err(format!("malformed SCRAM server-first message {server_first:?}"));
        };
        if !r.starts_with(&self.nonce) || r.len() <= self.nonce.len() {
            return Err("the server's SCRAM nonce does not extend ours".into());
        }
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode(s).map_err(|_| "the server's SCRAM salt is not base64".to_string())?;
        let iterations: u32 = i.parse().map_err(|_| format!("the server's SCRAM iteration count {i:?} is not a number"))?;
        if iterations == 0 || iterations > SCRAM_ITERATIONS_MAX {
            return Err(format!("the server's SCRAM iteration count {iterations} is outside 1..={SCRAM_ITERATIONS_MAX}"));
        }
        let h = self.hash;
        let salted = h.hi(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.h(&client_key);
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", b64.encode(proof)))
    }

    /// Check the server-final message: the server proves it knows the password's keys. A
    /// mismatch is an error (the broker may be an impostor), as is a server error (`e=`).
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), String> {
        use base64::Engine;
        let expected = self.server_signature.as_ref().ok_or("SCRAM server-final before client-final")?;
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(format!("the server refused: {e}"));
        }
        let v = server_final
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or_else(|| format!("malformed SCRAM server-final message {server_final:?}"))?;
        let got = base64::engine::general_purpose::STANDARD.decode(v).map_err(|_| "the server signature is not base64".to_string())?;
        if got != *expected {
            return Err("the server's SCRAM signature does not match: the broker does not know this user's credentials (impostor?)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn scram_sha256_rfc7677_vector() {
        let creds = Credentials::new("user", "pencil");
        let mut s = Scram::new(ScramHash::Sha256, &creds, "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(s.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = s.client_final("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").unwrap();
        assert_eq!(fin, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        s.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
    }

    #[test]
    fn scram_wrong_server_signature_fails_loudly() {
        let creds = Credentials::new("user", "pencil");
        let mut s = Scram::new(ScramHash::Sha256, &creds, "rOprNGfwEbeRWgbNEkqO");
        s.client_final("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").unwrap();
        let e = s.verify_server_final("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let e = s.verify_server_final("e=invalid-proof").unwrap_err();
        assert!(e.contains("invalid-proof"), "{e}");
    }

    #[test]
    fn scram_refuses_a_nonce_it_did_not_start() {
        let creds = Credentials::new("user", "pencil");
        let mut s = Scram::new(ScramHash::Sha512, &creds, "abc");
        assert!(s.client_final("r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").unwrap_err().contains("nonce"));
        assert!(s.client_final("r=abc123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0").unwrap_err().contains("iteration"));
        assert!(s.client_final("r=abc123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").unwrap().starts_with("c=biws,r=abc123,p="));
    }

    #[test]
    fn saslname_escapes() {
        let s = Scram::new(ScramHash::Sha256, &Credentials::new("a=b,c", "x"), "n");
        assert_eq!(s.client_first(), "n,,n=a=3Db=2Cc,r=n");
    }

    #[test]
    fn credentials_file_parses_and_never_echoes_a_line() {
        let c = Credentials::parse("# comment\nusername=alice\npassword=s3=cr,et\n", "f").unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.password, "s3=cr,et");
        assert!(!format!("{c:?}").contains("s3=cr"));
        let e = Credentials::parse("username=alice\npasword=hunter2\n", "f").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(Credentials::parse("username=alice\n", "f").is_err());
    }

    fn data(name: &str) -> String {
        format!("{}/tests/data/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    /// A TLS server on loopback (certificate for `broker.test` only, signed by tests/data/tls/ca.pem)
    /// that answers every size-prefixed frame with the same frame.
    fn tls_echo_server() -> SocketAddr {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(data("server.pem")).unwrap().map(|c| c.unwrap()).collect();
        let key = PrivateKeyDer::from_pem_file(data("server.key")).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for tcp in l.incoming().flatten() {
                let cfg = cfg.clone();
                std::thread::spawn(move || {
                    let mut s = rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), tcp);
                    while let Ok(f) = crate::client::read_frame(&mut s) {
                        let mut out = (f.len() as u32).to_be_bytes().to_vec();
                        out.extend_from_slice(&f);
                        if s.write_all(&out).and_then(|_| s.flush()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn ssl(ca: &str, verify_hostname: bool) -> Security {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(data(ca)).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        Security::with(Protocol::Ssl, Some(build_tls_config(roots, None, verify_hostname).unwrap()), None)
    }

    /// The certificate names broker.test: connecting to 127.0.0.1 fails the name check unless
    /// it is switched off; the chain is checked either way; a remembered host name is used.
    #[test]
    fn hostname_verification_and_its_switch() {
        let addr = tls_echo_server();
        let t = Duration::from_secs(10);
        let e = connect_stream(&ssl("ca.pem", true), addr, t, t).err().expect("name mismatch refused");
        assert!(e.contains("not valid for name \"127.0.0.1\""), "{e}");
        connect_stream(&ssl("ca.pem", false), addr, t, t).expect("name not checked");
        let e = connect_stream(&ssl("other-ca.pem", false), addr, t, t).err().expect("unknown issuer refused");
        assert!(e.contains("UnknownIssuer"), "{e}");
        remember_host(addr, "broker.test");
        connect_stream(&ssl("ca.pem", true), addr, t, t).expect("the host name the address came from is verified");
    }

    /// Security settings are a value each `Connector` holds, not a process setting: in one
    /// process, at the same time, a plaintext connector reaches a plaintext broker while an SSL
    /// connector fails the TLS handshake against it and completes one against a TLS server.
    #[test]
    fn connectors_carry_their_own_settings_side_by_side() {
        use crate::client::Connector;
        let plain_broker = crate::testbroker::serve(vec![], None, |_, _, _, _| crate::testbroker::Served::Close);
        let tls_server = tls_echo_server();
        let (plain, tls) = (Connector::plaintext(), Connector::new(ssl("ca.pem", false)));
        let t = Duration::from_secs(5);
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (p, s) = (plain.clone(), tls.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        p.connect(plain_broker, t).expect("plaintext connector, plaintext broker");
                        let e = s.connect(plain_broker, t).err().expect("TLS to a plaintext broker fails");
                        assert!(e.contains("TLS") || e.contains("tls") || e.contains("handshake"), "{e}");
                        connect_stream(s.security(), tls_server, t, t).expect("the SSL connector's handshake");
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(plain.security().protocol, Protocol::Plaintext);
        assert_eq!(tls.security().protocol, Protocol::Ssl);
    }

    /// One thread writes requests (sizes from 10 B to 1 MiB) while another reads the answers on
    /// a clone of the same TLS stream, as a produce connection does; every byte comes back.
    #[test]
    fn a_tls_stream_is_written_and_read_by_two_threads() {
        let addr = tls_echo_server();
        let t = Duration::from_secs(30);
        let mut w = connect_stream(&ssl("ca.pem", false), addr, t, t).unwrap();
        assert!(w.is_tls());
        let mut r = w.try_clone().unwrap();
        const N: usize = 120;
        let size = |i: usize| [10, 1000, 70_000, 1 << 20][i % 4];
        let reader = std::thread::spawn(move || {
            for i in 0..N {
                let f = crate::client::read_frame(&mut r).expect("answer");
                assert_eq!(f.len(), size(i), "frame {i}");
                assert!(f.iter().all(|b| *b == i as u8), "frame {i} content");
            }
        });
        for i in 0..N {
            let mut f = (size(i) as u32).to_be_bytes().to_vec();
            f.resize(4 + size(i), i as u8);
            w.write_all(&f).unwrap();
        }
        reader.join().unwrap();
    }

    /// The workload's `security` block, its unknown fields refused, and the CLI overrides.
    #[test]
    fn workload_security_block_and_cli_overrides() {
        let w = crate::workload::Workload::from_yaml(
            "name: x\nsecurity:\n  protocol: SASL_SSL\n  saslMechanism: SCRAM-SHA-512\n  tlsCaFile: ca.pem\n  tlsVerifyHostname: false\n",
        )
        .unwrap();
        assert_eq!(w.security.protocol, Protocol::SaslSsl);
        assert_eq!(w.security.sasl_mechanism, Some(Mechanism::ScramSha512));
        assert_eq!(w.security.tls_ca_file.as_deref(), Some("ca.pem"));
        assert!(!w.security.tls_verify_hostname);
        let e = crate::workload::Workload::from_yaml("name: x\nsecurity:\n  protocol: SSL\n  password: x\n").unwrap_err();
        assert!(e.contains("unknown field `password`"), "{e}");
        let mut w = crate::workload::Workload::from_yaml("name: x\n").unwrap();
        assert!(w.security.is_default());
        let o = crate::workload::Overrides {
            security: SecurityArgs {
                security_protocol: Some(Protocol::SaslPlaintext),
                sasl_mechanism: Some(Mechanism::Plain),
                ..Default::default()
            },
            ..Default::default()
        };
        o.apply(&mut w).unwrap();
        assert_eq!((w.security.protocol, w.security.sasl_mechanism), (Protocol::SaslPlaintext, Some(Mechanism::Plain)));
        let o = crate::workload::Overrides { security: SecurityArgs { tls_no_verify_hostname: true, ..Default::default() }, ..Default::default() };
        assert!(o.apply(&mut w).unwrap_err().contains("TLS settings"), "a TLS switch on a plaintext protocol is refused");
    }

    /// A SASL server on loopback (one connection): ApiVersions, SaslHandshake enabling only
    /// `enabled`, then SCRAM-SHA-256 whose server-final is signed with the keys of `sign_with`
    /// (the client's password: an honest broker; another: an impostor). It does not check the
    /// client's proof: the test is about the client's check of the server.
    fn sasl_server(enabled: &'static str, sign_with: &'static str) -> SocketAddr {
        use bytes::{BufMut, BytesMut};
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader};
        use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
        fn respond<R: Encodable + HeaderVersion>(s: &mut TcpStream, corr: i32, v: i16, r: &R) {
            let mut b = BytesMut::new();
            b.put_u32(0);
            ResponseHeader::default().with_correlation_id(corr).encode(&mut b, R::header_version(v)).unwrap();
            r.encode(&mut b, v).unwrap();
            let n = (b.len() - 4) as u32;
            b[0..4].copy_from_slice(&n.to_be_bytes());
            s.write_all(&b).unwrap();
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut scram: Option<Scram> = None;
            while let Ok(mut f) = crate::client::read_frame(&mut s) {
                let key = i16::from_be_bytes([f[0], f[1]]);
                let v = i16::from_be_bytes([f[2], f[3]]);
                if key == ApiKey::ApiVersions as i16 {
                    let h = RequestHeader::decode(&mut f, ApiVersionsRequest::header_version(v)).unwrap();
                    let r = ApiVersionsResponse::default().with_api_keys(vec![
                        ApiVersion::default().with_api_key(ApiKey::SaslHandshake as i16).with_min_version(0).with_max_version(1),
                        ApiVersion::default().with_api_key(ApiKey::SaslAuthenticate as i16).with_min_version(0).with_max_version(2),
                    ]);
                    respond(&mut s, h.correlation_id, v, &r);
                } else if key == ApiKey::SaslHandshake as i16 {
                    let h = RequestHeader::decode(&mut f, SaslHandshakeRequest::header_version(v)).unwrap();
                    let q = SaslHandshakeRequest::decode(&mut f, v).unwrap();
                    let code = if q.mechanism.as_str() == enabled { 0 } else { 33 }; // UNSUPPORTED_SASL_MECHANISM
                    let r = SaslHandshakeResponse::default().with_error_code(code).with_mechanisms(vec![StrBytes::from_static_str(enabled)]);
                    respond(&mut s, h.correlation_id, v, &r);
                } else if key == ApiKey::SaslAuthenticate as i16 {
                    let h = RequestHeader::decode(&mut f, SaslAuthenticateRequest::header_version(v)).unwrap();
                    let q = SaslAuthenticateRequest::decode(&mut f, v).unwrap();
                    let msg = String::from_utf8(q.auth_bytes.to_vec()).unwrap();
                    let out = match scram.as_mut() {
                        None => {
                            let cnonce = msg.split(",r=").nth(1).unwrap().to_string();
                            let server_first = format!("r={cnonce}srv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
                            let mut k = Scram::new(ScramHash::Sha256, &Credentials::new("u", sign_with), &cnonce);
                            k.client_final(&server_first).unwrap();
                            scram = Some(k);
                            server_first
                        }
                        Some(k) => {
                            use base64::Engine;
                            format!("v={}", base64::engine::general_purpose::STANDARD.encode(k.server_signature.as_ref().unwrap()))
                        }
                    };
                    respond(&mut s, h.correlation_id, v, &SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(out)));
                }
            }
        });
        addr
    }

    /// Through a real connection: the broker's signature checked (an impostor's refused), and a
    /// mechanism the broker does not enable refused with the list it offers.
    #[test]
    fn sasl_over_the_wire_checks_the_server_and_names_enabled_mechanisms() {
        let creds = Credentials::new("u", "right");
        let t = Duration::from_secs(10);
        let mut c = Conn::connect(sasl_server("SCRAM-SHA-256", "right"), t).unwrap();
        authenticate(&mut c, Mechanism::ScramSha256, &creds).expect("an honest broker");
        let mut c = Conn::connect(sasl_server("SCRAM-SHA-256", "other"), t).unwrap();
        let e = authenticate(&mut c, Mechanism::ScramSha256, &creds).unwrap_err();
        assert!(e.contains("signature does not match"), "{e}");
        let mut c = Conn::connect(sasl_server("PLAIN", "right"), t).unwrap();
        let e = authenticate(&mut c, Mechanism::ScramSha512, &creds).unwrap_err();
        assert!(e.contains("refused SCRAM-SHA-512") && e.contains("offers: PLAIN"), "{e}");
    }

    #[test]
    fn settings_that_do_not_fit_the_protocol_are_refused() {
        let mut c = SecurityConfig { tls_ca_file: Some("x".into()), ..Default::default() };
        assert!(c.validate().unwrap_err().contains("TLS settings"));
        c.protocol = Protocol::Ssl;
        c.validate().unwrap();
        c.protocol = Protocol::SaslSsl;
        assert!(c.validate().unwrap_err().contains("SASL mechanism"));
        c.sasl_mechanism = Some(Mechanism::Plain);
        c.validate().unwrap();
        c.tls_cert_file = Some("c".into());
        assert!(c.validate().unwrap_err().contains("--tls-key-file"));
        assert_eq!("sasl_ssl".parse::<Protocol>().unwrap(), Protocol::SaslSsl);
        assert!("TLS".parse::<Protocol>().is_err());
    }
}
