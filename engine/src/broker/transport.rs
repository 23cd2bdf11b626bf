//! A connection's transport under the network threads: plaintext TCP, or TLS (rustls) on the
//! SSL / SASL_SSL listeners (`--listeners`, or `--tls-listen`). The network thread only sees this small trait on its non-blocking
//! socket, so whatever runs above it (the handlers, SASL in `ConnCtx`) is the same over both.
//!
//! TLS: records are decrypted into rustls's bounded plaintext buffer and read from there; a
//! response is encrypted into rustls's send buffer (bounded by [`TLS_SEND_BUFFER_BYTES`]) and
//! flushed as the socket takes it. Fetch responses cannot be sendfile()d through TLS (this
//! kernel has no kTLS: `/proc/sys/net/ipv4/tcp_available_ulp` lists no `tls`), so the network
//! thread copies their file ranges ([`Transport::zero_copy`] is false).

use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Encrypted bytes rustls may hold unsent per TLS connection; past it the connection's writes
/// wait for the socket (its responses stay queued under the connection's own bounds).
const TLS_SEND_BUFFER_BYTES: usize = 256 << 10;

/// Plaintext bytes to and from one connection's socket.
pub(crate) trait Transport: Send {
    /// Read plaintext into `buf`: `Ok(0)` at the end of the stream, `WouldBlock` when the
    /// socket has nothing more now.
    fn read(&mut self, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize>;
    /// Write plaintext from `bufs`; returns how much was taken (never 0 for non-empty input:
    /// `WouldBlock` instead).
    fn write_vectored(&mut self, sock: &mut TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Send what the transport holds (TLS records): `Ok(true)` when nothing is left.
    fn flush(&mut self, sock: &mut TcpStream) -> io::Result<bool>;
    /// Whether file ranges may go to the socket with sendfile (plaintext only).
    fn zero_copy(&self) -> bool;
    /// A handshake is still under way (TLS before its Finished messages).
    fn handshaking(&self) -> bool;
    /// The connection is being closed: say so if the protocol has a way (TLS close_notify).
    fn close(&mut self, sock: &mut TcpStream);
}

/// Plain TCP.
pub(crate) struct Plain;

impl Transport for Plain {
    fn read(&mut self, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        sock.read(buf)
    }
    fn write_vectored(&mut self, sock: &mut TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sock.write_vectored(bufs)
    }
    fn flush(&mut self, _sock: &mut TcpStream) -> io::Result<bool> {
        Ok(true)
    }
    fn zero_copy(&self) -> bool {
        true
    }
    fn handshaking(&self) -> bool {
        false
    }
    fn close(&mut self, _sock: &mut TcpStream) {}
}

/// TLS over the connection (server side).
pub(crate) struct Tls(rustls::ServerConnection);

impl Tls {
    pub(crate) fn new(cfg: &Arc<rustls::ServerConfig>) -> io::Result<Tls> {
        let mut c = rustls::ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
        c.set_buffer_limit(Some(TLS_SEND_BUFFER_BYTES));
        Ok(Tls(c))
    }
}

impl Transport for Tls {
    fn read(&mut self, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext buffered: take records from the socket.
            match self.0.read_tls(sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = self.0.process_new_packets() {
                        // Send the alert rustls queued, best effort.
                        let _ = self.0.write_tls(sock);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
                    }
                    // Handshake messages to answer: sent now as far as the socket takes them,
                    // the rest when it is writable.
                    if self.0.wants_write() {
                        match self.flush(sock) {
                            Ok(_) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn write_vectored(&mut self, sock: &mut TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.flush(sock)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.0.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // Taken: its records go out now or when the socket is writable again.
        match self.flush(sock) {
            Ok(_) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self, sock: &mut TcpStream) -> io::Result<bool> {
        while self.0.wants_write() {
            match self.0.write_tls(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn zero_copy(&self) -> bool {
        false
    }
    fn handshaking(&self) -> bool {
        self.0.is_handshaking()
    }

    fn close(&mut self, sock: &mut TcpStream) {
        self.0.send_close_notify();
        let _ = self.flush(sock);
    }
}

/// The certificate and key of the SSL / SASL_SSL listeners.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM: the server's certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: CAs whose client certificates are required (client-certificate authentication);
    /// none = no client certificate asked.
    pub client_ca: Option<PathBuf>,
}

/// The rustls server configuration for `t`, or a message naming what is wrong.
pub(crate) fn server_config(t: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = read_certs(&t.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&t.key)
        .map_err(|e| format!("--tls-key {}: no PEM private key ({e})", t.key.display()))?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &t.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca, "--tls-client-ca")? {
                roots.add(c).map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = builder.with_single_cert(certs, key).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    Ok(Arc::new(cfg))
}

/// ring's provider, as loadgen (builds with a C compiler alone). rustls 0.23.48 marks it
/// deprecated for lacking the post-quantum hybrid key exchange, which the Kafka clients do not
/// offer either.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(f: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(f)
        .map_err(|e| format!("{what} {}: {e}", f.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", f.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no PEM certificate", f.display()));
    }
    Ok(certs)
}
