//! Authentication and authorization, per Kafka's model.
//!
//! * Listeners ([`Listener`]): `PLAINTEXT://host:port`, `SASL_PLAINTEXT://…` (and the `SSL`,
//!   `SASL_SSL` names, refused until the network layer has TLS). Each connection knows the
//!   [`SecurityProtocol`] of the listener it came in on ([`super::ConnCtx::protocol`]).
//! * SASL ([`sasl`]): SaslHandshake v0–1 + SaslAuthenticate v0–2 (and v0's raw tokens), PLAIN
//!   and SCRAM-SHA-256/512 ([`scram`], RFC 5802/7677). Credentials ([`credentials`]): a file
//!   (`--sasl-users`: PLAIN passwords, SCRAM salted keys) and AlterUserScramCredentials
//!   (persisted under `<data>/.security/scram`, fsynced, applied live).
//! * Authorization ([`acl`]): Kafka's ACL bindings, super users, deny by default when the
//!   authorizer is on; CreateAcls / DescribeAcls / DeleteAcls persisted under
//!   `<data>/.security/acls`. Off (the default), every request is allowed, as before.
//!
//! A connection's session ([`Session`]) lives in its `ConnCtx`: on a PLAINTEXT listener the
//! principal is `User:ANONYMOUS` from the start; on a SASL listener it is unset until
//! SaslAuthenticate succeeds, and nothing but ApiVersions / SaslHandshake / SaslAuthenticate is
//! served before (anything else closes the connection, as Kafka does).

pub mod acl;
pub mod credentials;
pub mod sasl;
pub mod scram;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use acl::{Authorizer, Operation, ResourceType};
pub use credentials::CredentialStore;

/// Kafka error codes of authorization (kept here, beside their only user).
pub mod codes {
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const SECURITY_DISABLED: i16 = 54;
    pub const RESOURCE_NOT_FOUND: i16 = 91;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const UNACCEPTABLE_CREDENTIAL: i16 = 93;
    pub const DUPLICATE_RESOURCE: i16 = 92;
}

/// The principal of every connection on a PLAINTEXT listener (Kafka's `User:ANONYMOUS`).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Kafka's security protocols (`security.protocol`, listener names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        Some(match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }
}

/// One listener: a security protocol and the address it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.protocol.name(), self.addr)
    }
}

/// Parse Kafka's `listeners` value: `PROTOCOL://host:port[,…]` (the listener name is the
/// protocol name; an empty host binds every interface, as Kafka). TLS listeners are parsed but
/// refused by [`check_available`] until the network layer serves TLS.
pub fn parse_listeners(s: &str) -> Result<Vec<Listener>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, hostport) =
            item.split_once("://").ok_or_else(|| format!("listener {item:?}: expected PROTOCOL://host:port"))?;
        let protocol = SecurityProtocol::parse(name).ok_or_else(|| {
            format!("listener {item:?}: unknown security protocol {name:?} (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)")
        })?;
        let hostport = if hostport.starts_with(':') { format!("0.0.0.0{hostport}") } else { hostport.to_string() };
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("listener {item:?}: cannot resolve {hostport:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("listener {item:?}: {hostport:?} resolves to no address"))?;
        if out.iter().any(|l: &Listener| l.addr == addr && addr.port() != 0) {
            return Err(format!("listener {item:?}: address {addr} given twice"));
        }
        out.push(Listener { protocol, addr });
    }
    if out.is_empty() {
        return Err("no listener given".into());
    }
    Ok(out)
}

/// Refuse listeners this broker cannot serve yet (TLS belongs to the network layer).
pub fn check_available(listeners: &[Listener]) -> Result<(), String> {
    match listeners.iter().find(|l| l.protocol.tls()) {
        Some(l) => Err(format!("listener {l}: {} is not available yet (this broker has no TLS yet)", l.protocol.name())),
        None => Ok(()),
    }
}

/// SASL mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512];
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
    pub fn parse(s: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }
    pub fn scram(self) -> Option<scram::ScramHash> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha256 => Some(scram::ScramHash::Sha256),
            Mechanism::ScramSha512 => Some(scram::ScramHash::Sha512),
        }
    }
}

/// Security settings of a broker ([`super::BrokerConfig::security`]).
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// `--sasl-users`: PLAIN users and SCRAM credentials ([`credentials`] for the format).
    pub sasl_users_file: Option<PathBuf>,
    /// SASL mechanisms offered on SASL listeners (empty = all three).
    pub sasl_mechanisms: Vec<Mechanism>,
    /// `--authorizer`: check every request against the ACLs (deny by default).
    pub authorizer: bool,
    /// `--super-users`: principals allowed everything (`User:admin`).
    pub super_users: Vec<String>,
}

impl SecurityConfig {
    pub fn mechanisms(&self) -> Vec<Mechanism> {
        if self.sasl_mechanisms.is_empty() { Mechanism::ALL.to_vec() } else { self.sasl_mechanisms.clone() }
    }
}

/// Parse `--super-users`: `User:a;User:b` (Kafka's separator; commas accepted too).
pub fn parse_super_users(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in s.split([';', ',']).map(str::trim).filter(|p| !p.is_empty()) {
        acl::check_principal(p)?;
        out.push(p.to_string());
    }
    Ok(out)
}

/// The broker's security state, shared by every connection.
pub struct Security {
    pub cfg: SecurityConfig,
    pub credentials: CredentialStore,
    /// None: no authorizer (everything allowed).
    pub authorizer: Option<Authorizer>,
}

impl Security {
    /// Load the credentials file and the persisted SCRAM credentials and ACLs of `data_dir`.
    pub fn open(cfg: SecurityConfig, data_dir: &Path) -> Result<Arc<Security>, String> {
        let dir = data_dir.join(SECURITY_DIR);
        let credentials = CredentialStore::open(cfg.sasl_users_file.as_deref(), &dir)?;
        let authorizer = if cfg.authorizer { Some(Authorizer::open(&dir, cfg.super_users.clone())?) } else { None };
        Ok(Arc::new(Security { cfg, credentials, authorizer }))
    }

    /// Is `principal` allowed `op` on the resource? Always true without an authorizer.
    pub fn allowed(&self, principal: &str, host: std::net::IpAddr, op: Operation, rt: ResourceType, name: &str) -> bool {
        match &self.authorizer {
            None => true,
            Some(a) => a.authorize(principal, host, op, rt, name),
        }
    }
}

/// What a handler needs to authorize one request: the security state, the connection's
/// principal and host. Cheap to clone into a `Reply::Later` closure.
#[derive(Clone)]
pub struct Authz {
    security: Arc<Security>,
    principal: String,
    host: std::net::IpAddr,
}

impl Authz {
    pub fn new(security: &Arc<Security>, principal: &str, host: std::net::IpAddr) -> Authz {
        Authz { security: security.clone(), principal: principal.to_string(), host }
    }
    /// Is an authorizer configured (else everything is allowed)?
    pub fn enabled(&self) -> bool {
        self.security.authorizer.is_some()
    }
    pub fn allows(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        self.security.allowed(&self.principal, self.host, op, rt, name)
    }
    /// Is `op` allowed on some resource of type `rt` (Kafka's authorizeByResourceType, for
    /// KIP-679's idempotent producers)?
    pub fn allows_some(&self, op: Operation, rt: ResourceType) -> bool {
        match &self.security.authorizer {
            None => true,
            Some(a) => a.authorize_some(&self.principal, self.host, op, rt),
        }
    }
    pub fn allows_cluster(&self, op: Operation) -> bool {
        self.allows(op, ResourceType::Cluster, acl::CLUSTER_NAME)
    }
    /// Kafka's check for creating a topic: Create on the cluster or on the topic.
    pub fn may_create_topic(&self, name: &str) -> bool {
        self.allows_cluster(Operation::Create) || self.allows(Operation::Create, ResourceType::Topic, name)
    }
    pub fn principal(&self) -> &str {
        &self.principal
    }
    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }
}

/// Directory under the data directory holding `acls` and `scram` (no `-` in the name, so the
/// log manager never takes it for a partition).
pub const SECURITY_DIR: &str = ".security";

/// Where a SASL exchange stands on one connection.
#[derive(Debug, Default, Clone)]
pub enum SaslState {
    /// No handshake yet.
    #[default]
    Start,
    /// Handshake done: the next token starts `mechanism`. `raw`: SaslHandshake v0, tokens come
    /// as bare size-prefixed frames instead of SaslAuthenticate requests.
    Handshaken { mechanism: Mechanism, raw: bool },
    /// SCRAM: server-first sent, waiting for client-final.
    ScramFirst { server: Box<scram::ScramServer>, raw: bool },
    /// Authenticated (or a PLAINTEXT connection).
    Done,
    /// Authentication failed: the connection is being closed.
    Failed,
}

/// The security side of one connection (in [`super::ConnCtx`]).
#[derive(Debug, Default, Clone)]
pub struct Session {
    /// The authenticated principal (`User:name`); None until SASL authentication succeeds.
    pub principal: Option<String>,
    pub sasl: SaslState,
}

impl Session {
    /// A new connection's session on a listener of `protocol`.
    pub fn new(protocol: SecurityProtocol) -> Session {
        if protocol.sasl() {
            Session::default()
        } else {
            Session { principal: Some(ANONYMOUS.to_string()), sasl: SaslState::Done }
        }
    }
    pub fn authenticated(&self) -> bool {
        self.principal.is_some()
    }
    /// The principal for authorization (ANONYMOUS before authentication, which only the SASL
    /// APIs reach).
    pub fn principal(&self) -> &str {
        self.principal.as_deref().unwrap_or(ANONYMOUS)
    }
    /// After a v0 handshake the next frames are raw SASL tokens.
    pub fn expects_raw_token(&self) -> bool {
        matches!(self.sasl, SaslState::Handshaken { raw: true, .. } | SaslState::ScramFirst { raw: true, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse_like_kafka() {
        let l = parse_listeners("PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9093").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(l[1].protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(l[1].addr, "127.0.0.1:9093".parse().unwrap());
        assert_eq!(parse_listeners("sasl_ssl://:0").unwrap()[0].addr, "0.0.0.0:0".parse().unwrap());
        let tls = parse_listeners("SSL://127.0.0.1:0").unwrap();
        assert!(check_available(&tls).unwrap_err().contains("not available yet"), "TLS refused clearly");
        assert!(parse_listeners("FOO://127.0.0.1:1").unwrap_err().contains("unknown security protocol"));
        assert!(parse_listeners("127.0.0.1:1").unwrap_err().contains("PROTOCOL://"));
        assert!(parse_listeners("PLAINTEXT://127.0.0.1:9,SASL_PLAINTEXT://127.0.0.1:9").is_err());
        assert!(parse_listeners("").is_err());
    }

    #[test]
    fn super_users_parse() {
        assert_eq!(parse_super_users("User:admin;User:ops").unwrap(), vec!["User:admin", "User:ops"]);
        assert!(parse_super_users("admin").is_err());
    }
}
