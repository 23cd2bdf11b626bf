//! The TLS listener (`--tls-listen`, issue 18's stretch goal) through real clients: Debian's
//! kcat and PyPI confluent-kafka (both librdkafka over OpenSSL) produce and consume over TLS
//! (Fetch takes the copying path there), the same records read back over the plaintext
//! listener; with `--tls-client-ca` a client without a certificate is refused and one with a
//! certificate signed by that CA is served. Certificates are made by the `openssl` CLI.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{require_tool, run, start_broker_with};
use engine::broker::auth::{Listener, SecurityProtocol};
use engine::broker::{BrokerConfig, TlsConfig};
use engine::log::Durability;

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut c = Command::new(require_tool("openssl"));
    c.current_dir(dir).args(args);
    run(&mut c, None, Duration::from_secs(60));
}

/// A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate.
fn make_pki(dir: &Path) -> Pki {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=zerolog test CA"]);
    openssl(dir, &a);
    for (name, ext) in
        [("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"), ("client", "extendedKeyUsage=clientAuth\n")]
    {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let mut a = vec!["req"];
        a.extend(ec);
        let (key, csr, subj) = (format!("{name}.key"), format!("{name}.csr"), format!("/CN={name}"));
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &a);
        let (pem, ext) = (format!("{name}.pem"), format!("{name}.ext"));
        openssl(
            dir,
            &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem, "-days", "2", "-extfile", &ext],
        );
    }
    Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// A PLAINTEXT and an SSL listener (port 0 each) with the test certificate.
fn with_tls(c: &mut BrokerConfig, pki: &Pki, client_ca: bool) {
    let any = "127.0.0.1:0".parse().unwrap();
    c.listeners =
        vec![Listener { protocol: SecurityProtocol::Plaintext, addr: any }, Listener { protocol: SecurityProtocol::Ssl, addr: any }];
    c.tls = Some(tls_cfg(pki, client_ca));
}

fn tls_cfg(pki: &Pki, client_ca: bool) -> TlsConfig {
    TlsConfig {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: client_ca.then(|| pki.ca.clone()),
    }
}

fn kcat_tls(kcat: &Path, addr: &str, pki: &Pki, with_cert: bool) -> Command {
    let mut c = Command::new(kcat);
    c.args(["-b", addr, "-X", "security.protocol=ssl", "-X"]).arg(format!("ssl.ca.location={}", pki.ca.display()));
    if with_cert {
        c.arg("-X").arg(format!("ssl.certificate.location={}", pki.client_cert.display()));
        c.arg("-X").arg(format!("ssl.key.location={}", pki.client_key.display()));
    }
    c
}

/// Records as kcat prints them with `-f '%k\t%s\n'`, sorted.
fn sorted_lines(out: Vec<u8>) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8(out).unwrap().lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn kcat_produces_and_consumes_over_tls_and_the_records_match_the_plaintext_listener() {
    let kcat = require_tool("kcat");
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(
        |c| {
            c.log.durability = Durability::Group;
            c.default_partitions = 2;
            with_tls(c, &pki, false);
        },
        dir.path(),
    );
    let tls_addr = broker.listener_addr(SecurityProtocol::Ssl).expect("TLS listener").to_string();
    let plain_addr = broker.local_addr().to_string();
    const N: usize = 20_000;
    let mut input = String::new();
    let mut expect = Vec::with_capacity(N);
    for i in 0..N {
        let (k, v) = (format!("key-{}", i % 101), format!("value-{i}-{}", "t".repeat(i % 200)));
        input.push_str(&format!("{k}:{v}\n"));
        expect.push(format!("{k}\t{v}"));
    }
    expect.sort();
    let mut p = kcat_tls(&kcat, &tls_addr, &pki, false);
    p.args(["-P", "-K:", "-t", "tls-topic", "-X", "linger.ms=10", "-X", "acks=all"]);
    run(&mut p, Some(input.as_bytes()), Duration::from_secs(180));
    // Over TLS: Fetch responses are copied through the TLS session (no sendfile).
    let mut c = kcat_tls(&kcat, &tls_addr, &pki, false);
    c.args(["-C", "-t", "tls-topic", "-o", "beginning", "-e", "-f", "%k\t%s\n"]);
    let over_tls = sorted_lines(run(&mut c, None, Duration::from_secs(180)));
    assert_eq!(over_tls.len(), N, "records read back over TLS");
    assert!(over_tls == expect, "records read over TLS differ from those produced");
    // The same log over the plaintext listener (sendfile path).
    let mut c = Command::new(&kcat);
    c.args(["-b", &plain_addr, "-C", "-t", "tls-topic", "-o", "beginning", "-e", "-f", "%k\t%s\n"]);
    assert!(sorted_lines(run(&mut c, None, Duration::from_secs(180))) == expect, "plaintext read differs");
}

#[test]
fn confluent_kafka_produces_and_consumes_in_a_group_over_tls() {
    let py = require_tool("python3");
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(
        |c| {
            c.log.durability = Durability::Group;
            c.default_partitions = 3;
            with_tls(c, &pki, true);
        },
        dir.path(),
    );
    let tls_addr = broker.listener_addr(SecurityProtocol::Ssl).expect("TLS listener").to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/confluent_tls.py");
    let mut c = Command::new(py);
    c.arg(&script).args(["--bootstrap", &tls_addr, "--topic", "tls-group-topic", "--count", "5000"]);
    c.arg("--ca").arg(&pki.ca).arg("--cert").arg(&pki.client_cert).arg("--key").arg(&pki.client_key);
    let out = String::from_utf8(run(&mut c, None, Duration::from_secs(240))).unwrap();
    assert_eq!(out.trim(), "delivered 5000 consumed 5000");
    assert_eq!(broker.logs().topic("tls-group-topic").expect("topic").len(), 3);
}

#[test]
fn a_client_without_a_certificate_is_refused_when_the_listener_requires_one() {
    let kcat = require_tool("kcat");
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(
        |c| {
            c.log.durability = Durability::Never;
            with_tls(c, &pki, true);
        },
        dir.path(),
    );
    let tls_addr = broker.listener_addr(SecurityProtocol::Ssl).expect("TLS listener").to_string();
    // No client certificate: the handshake fails, kcat gets no metadata within its timeout.
    let mut c = kcat_tls(&kcat, &tls_addr, &pki, false);
    c.args(["-L", "-m", "5"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "kcat -L without a certificate did not give up");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(!status.success(), "metadata served without a client certificate: {}", String::from_utf8_lossy(&out.stdout));
    // With the certificate: served.
    let mut c = kcat_tls(&kcat, &tls_addr, &pki, true);
    c.args(["-L", "-m", "20"]);
    let out = String::from_utf8(run(&mut c, None, Duration::from_secs(60))).unwrap();
    assert!(out.contains(&format!("broker 0 at {tls_addr}")), "metadata over TLS should advertise the TLS listener: {out}");
}

#[test]
fn sasl_plain_over_tls_authenticates_on_a_sasl_ssl_listener() {
    let kcat = require_tool("kcat");
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let users = certs.path().join("users");
    std::fs::write(&users, "PLAIN alice alice-secret\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(
        |c| {
            c.listeners = vec![Listener { protocol: SecurityProtocol::SaslSsl, addr: "127.0.0.1:0".parse().unwrap() }];
            c.tls = Some(tls_cfg(&pki, false));
            c.security.sasl_users_file = Some(users.clone());
        },
        dir.path(),
    );
    let addr = broker.listener_addr(SecurityProtocol::SaslSsl).expect("SASL_SSL listener").to_string();
    let sasl = |c: &mut Command, password: &str| {
        c.args(["-b", &addr, "-X", "security.protocol=sasl_ssl", "-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username=alice"]);
        c.arg("-X").arg(format!("sasl.password={password}"));
        c.arg("-X").arg(format!("ssl.ca.location={}", pki.ca.display()));
    };
    let mut p = Command::new(&kcat);
    sasl(&mut p, "alice-secret");
    p.args(["-P", "-t", "sasl-tls", "-X", "acks=all"]);
    run(&mut p, Some(b"one\ntwo\nthree\n"), Duration::from_secs(120));
    let mut c = Command::new(&kcat);
    sasl(&mut c, "alice-secret");
    c.args(["-C", "-t", "sasl-tls", "-o", "beginning", "-e", "-f", "%s\n"]);
    assert_eq!(String::from_utf8(run(&mut c, None, Duration::from_secs(120))).unwrap(), "one\ntwo\nthree\n");
    // A wrong password over the same TLS listener: no metadata.
    let mut c = Command::new(&kcat);
    sasl(&mut c, "wrong");
    c.args(["-L", "-m", "5"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = c.output().unwrap();
    assert!(!out.status.success(), "metadata served with a wrong password: {}", String::from_utf8_lossy(&out.stdout));
}

/// Whether the broker closed `s` (EOF or reset) before `limit`.
fn closed_within(s: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let mut b = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut b) {
            Ok(0) => return true,
            // An answer to what was sent (a SaslHandshake response): keep reading.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn stalled_tls_handshakes_and_sasl_exchanges_are_closed_after_the_handshake_timeout() {
    use common::Client;
    use kafka_protocol::messages::{ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest};
    use kafka_protocol::protocol::StrBytes;
    use std::io::Write;
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let users = certs.path().join("users");
    std::fs::write(&users, "PLAIN alice alice-secret\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(
        |c| {
            let any = "127.0.0.1:0".parse().unwrap();
            c.listeners = vec![
                Listener { protocol: SecurityProtocol::Plaintext, addr: any },
                Listener { protocol: SecurityProtocol::Ssl, addr: any },
                Listener { protocol: SecurityProtocol::SaslPlaintext, addr: any },
            ];
            c.tls = Some(tls_cfg(&pki, false));
            c.security.sasl_users_file = Some(users.clone());
            c.handshake_timeout_ms = 1_000;
            // Far longer than the test: a close within it is the handshake timeout's.
            c.connection_idle_ms = 600_000;
        },
        dir.path(),
    );
    let tls = broker.listener_addr(SecurityProtocol::Ssl).unwrap();
    let sasl = broker.listener_addr(SecurityProtocol::SaslPlaintext).unwrap();
    let plain = broker.listener_addr(SecurityProtocol::Plaintext).unwrap();
    // TLS: nothing sent; half a ClientHello (a record header announcing 512 bytes, 9 of them).
    let mut silent = std::net::TcpStream::connect(tls).unwrap();
    let mut half = std::net::TcpStream::connect(tls).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0]).unwrap();
    // SASL: nothing sent; a handshake and then no authentication.
    let mut sasl_silent = std::net::TcpStream::connect(sasl).unwrap();
    let mut sasl_half = Client::connect(sasl);
    let h = sasl_half.call(1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")));
    assert_eq!(h.error_code, 0);
    // Controls: a SASL connection that authenticates and a plaintext one, both idle after.
    let mut authed = Client::connect(sasl);
    assert_eq!(authed.call(1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).error_code, 0);
    let a = authed.call(1, &SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from_static(b"\0alice\0alice-secret")));
    assert_eq!(a.error_code, 0, "{:?}", a.error_message);
    let mut idle_plain = Client::connect(plain);
    let limit = Duration::from_secs(15);
    assert!(closed_within(&mut silent, limit), "a TLS connection that sent nothing was not closed");
    assert!(closed_within(&mut half, limit), "a TLS connection stalled mid-ClientHello was not closed");
    assert!(closed_within(&mut sasl_silent, limit), "a SASL connection that sent nothing was not closed");
    assert!(closed_within(&mut sasl_half.stream, limit), "a SASL connection stalled after its handshake was not closed");
    // Past the handshake timeout, the authenticated and the plaintext connections are served.
    let deadline = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(authed.call(3, &ApiVersionsRequest::default()).error_code, 0);
    assert_eq!(idle_plain.call(3, &ApiVersionsRequest::default()).error_code, 0);
}
