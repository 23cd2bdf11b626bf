//! The loadgen over the project's own broker's secured listeners (issue 18's `SSL://`,
//! `SASL_PLAINTEXT://`, `SASL_SSL://`): the `broker` binary is started with a PLAINTEXT, an SSL,
//! a SASL_PLAINTEXT and a SASL_SSL listener (port 0 each; the bound ports read from its log),
//! a throwaway CA made by the `openssl` CLI, client certificates required (`--tls-client-ca`),
//! and a credentials file with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 entries for one user. Short
//! runs (2,000 rec/s, 1 s warmup + 2 s) over SSL (CA file, host name checked, client certificate),
//! SASL_PLAINTEXT with SCRAM-SHA-512, SASL_SSL with PLAIN, and SASL_SSL with SCRAM-SHA-256
//! (credentials from the environment, consumers in a consumer group): every scheduled record is
//! acknowledged and consumed back, and what the loadgen counts as acknowledged over the run is
//! what the broker stored (Σ high watermarks, asked over the PLAINTEXT listener). A wrong
//! password exits 2 naming the broker and the mechanism, a TLS client without a certificate is
//! refused (exit 2), and the password is in no output, result, interval log or report.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the `openssl` CLI is needed to make the test certificates (apt-get install openssl)");
    assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A throwaway CA (`ca.pem`), a server certificate for 127.0.0.1/localhost (`server.pem`,
/// `server.key`) and a client certificate (`client.pem`, `client.key`) in `dir`.
fn make_pki(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=loadgen test CA"]);
    openssl(dir, &a);
    for (name, ext) in
        [("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"), ("client", "extendedKeyUsage=clientAuth\n")]
    {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, subj, pem, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("/CN={name}"), format!("{name}.pem"), format!("{name}.ext"));
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &a);
        openssl(dir, &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem, "-days", "2", "-extfile", &ext]);
    }
}

/// The broker binary and its listeners by protocol name; killed on drop.
struct Broker {
    child: Child,
    listeners: std::collections::HashMap<String, SocketAddr>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of `log` without ANSI colour sequences.
fn plain_text(log: &Path) -> String {
    let raw = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn start_broker(dir: &Path, users: &Path) -> Broker {
    const PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
    let listeners: Vec<String> = PROTOCOLS.iter().map(|p| format!("{p}://127.0.0.1:0")).collect();
    let log = dir.join("broker.log");
    let child = Command::new(broker_bin())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--durability", "never", "--listeners", &listeners.join(",")])
        .arg("--tls-cert")
        .arg(dir.join("server.pem"))
        .arg("--tls-key")
        .arg(dir.join("server.key"))
        .arg("--tls-client-ca")
        .arg(dir.join("ca.pem"))
        .arg("--sasl-users")
        .arg(users)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn broker");
    let mut b = Broker { child, listeners: Default::default() };
    // Bound ports: one `listening listener=PROTO://ip:port` line per listener.
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.listeners.len() < PROTOCOLS.len() {
        assert!(b.child.try_wait().unwrap().is_none(), "broker exited: {}", plain_text(&log));
        assert!(Instant::now() < deadline, "broker did not report its listeners: {}", plain_text(&log));
        std::thread::sleep(Duration::from_millis(20));
        for l in plain_text(&log).lines().filter_map(|l| l.split_once("listener=").map(|(_, r)| r.split_whitespace().next().unwrap_or(""))) {
            if let Some((proto, addr)) = l.split_once("://") {
                b.listeners.insert(proto.to_string(), addr.parse().expect("listener address"));
            }
        }
    }
    b
}

/// Σ high watermarks of a topic's partitions, asked over the PLAINTEXT listener.
fn high_watermarks(addr: SocketAddr, topic: &str, partitions: i32) -> i64 {
    let mut c = loadgen::client::Conn::connect(addr, Duration::from_secs(5)).unwrap();
    let ids: Vec<i32> = (0..partitions).collect();
    c.list_offsets(topic, &ids, -1).unwrap().values().sum()
}

struct Case<'a> {
    out: &'a Path,
    broker: &'a Broker,
}

impl Case<'_> {
    /// A short `loadgen run` (debug builds: 2,000 rec/s) to the listener of `protocol`,
    /// result in `<out>/<name>.json`, per-run topics kept to be read back.
    fn run(&self, name: &str, protocol: &str, bootstrap: Option<String>, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let bootstrap = bootstrap.unwrap_or_else(|| self.broker.listeners[protocol].to_string());
        let json = self.out.join(format!("{name}.json"));
        let mut cmd = bin();
        cmd.args(["run", "-w", "smoke", "--quiet", "--no-calibrate", "--rate", "2000", "--duration", "2", "--warmup", "1", "--drain", "20"])
            .args(["--bootstrap", &bootstrap, "--keep-topics", "--topic-prefix", name, "--security-protocol", protocol])
            .arg("-o")
            .arg(&json)
            .args(extra)
            .env_remove("LOADGEN_SASL_USERNAME")
            .env_remove("LOADGEN_SASL_PASSWORD");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().expect("spawn loadgen");
        std::fs::write(self.out.join(format!("{name}.stdout")), &o.stdout).unwrap();
        std::fs::write(self.out.join(format!("{name}.stderr")), &o.stderr).unwrap();
        o
    }

    /// Every scheduled record acknowledged and consumed; the broker's high watermarks equal the
    /// records the loadgen saw acknowledged over the whole run (warmup included).
    fn check(&self, name: &str, o: &Output, protocol: &str, mechanism: Option<&str>, client_cert: bool) {
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        // 5 = the rate target missed: a timing verdict on a shared machine, not checked here.
        assert!(matches!(o.status.code(), Some(0 | 5)), "{name}: exit {:?}\n{text}", o.status.code());
        let json = self.out.join(format!("{name}.json"));
        validate_against_schema(&json);
        let r = loadgen::results::RunResult::load(&json).unwrap();
        assert!(r.complete, "{name}: incomplete\n{text}");
        let m = &r.accounting.as_ref().expect("accounting").measure;
        assert_eq!(m.scheduled, 4_000, "{name}: 2 s at 2,000 rec/s");
        assert_eq!(m.acknowledged, m.scheduled, "{name}: {m:?}");
        let sec = r.target.security.as_ref().expect("target.security");
        assert_eq!(sec.protocol, protocol);
        assert_eq!(sec.sasl_mechanism.as_deref(), mechanism);
        if protocol.ends_with("SSL") {
            assert_eq!(sec.tls_ca.as_deref(), Some("file"), "{sec:?}");
            assert_eq!(sec.tls_verify_hostname, Some(true), "{sec:?}");
            assert_eq!(sec.tls_client_certificate, Some(client_cert), "{sec:?}");
        }
        let acked = r.producer.as_ref().expect("producer").records_acknowledged_total;
        assert_eq!(acked, 6_000, "{name}: 1 s warmup + 2 s at 2,000 rec/s");
        let topic = &r.target.topics[0];
        assert_eq!(high_watermarks(self.broker.listeners["PLAINTEXT"], topic, 4), acked as i64, "{name}: stored vs acknowledged");
        assert_eq!(r.consumer.as_ref().expect("consumer").records_consumed_total, acked, "{name}: consumed back");
    }

    /// Exit 2, every word of `want` in the message, no result written.
    fn refused(&self, name: &str, o: &Output, want: &[&str]) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        for w in want {
            assert!(err.contains(w), "{name}: no {w:?} in: {err}");
        }
        assert!(!self.out.join(format!("{name}.json")).exists(), "{name} wrote a result");
    }
}

#[test]
fn the_loadgen_runs_over_our_brokers_ssl_sasl_plaintext_and_sasl_ssl_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let client = ["--tls-ca-file", d.join("ca.pem").to_str().unwrap(), "--tls-cert-file", d.join("client.pem").to_str().unwrap(), "--tls-key-file", d.join("client.key").to_str().unwrap()]
        .map(str::to_string);
    let client: Vec<&str> = client.iter().map(String::as_str).collect();
    // A password of this run only, in the broker's PLAIN entry, in its SCRAM entry (as salted
    // keys) and in the loadgen's credentials file — and nowhere in the loadgen's output.
    let password = format!("pw-{}-{:x}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let mut entries = format!("PLAIN loadgen {password}\n");
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let mut scram = Command::new(broker_bin())
            .args(["--scram-credential", &format!("{mechanism}:loadgen")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn broker --scram-credential");
        std::io::Write::write_all(&mut scram.stdin.take().unwrap(), password.as_bytes()).unwrap();
        let scram = scram.wait_with_output().unwrap();
        assert!(scram.status.success(), "broker --scram-credential failed");
        entries.push_str(&String::from_utf8(scram.stdout).unwrap());
    }
    let users = d.join("users");
    std::fs::write(&users, entries).unwrap();
    let creds = d.join("loadgen.credentials");
    std::fs::write(&creds, format!("username=loadgen\npassword={password}\n")).unwrap();
    let creds = creds.to_str().unwrap();

    let broker = start_broker(d, &users);
    let out = d.join("results");
    std::fs::create_dir(&out).unwrap();
    let case = Case { out: &out, broker: &broker };

    // SSL: CA file, host name verification on (the certificate names IP 127.0.0.1), and the
    // client certificate the listener requires.
    let o = case.run("ssl", "SSL", None, &client, &[]);
    case.check("ssl", &o, "SSL", None, true);
    // The same by host name: "localhost" is checked against the certificate's DNS name.
    let o = case.run("ssl-localhost", "SSL", Some(format!("localhost:{}", broker.listeners["SSL"].port())), &client, &[]);
    case.check("ssl-localhost", &o, "SSL", None, true);
    let o = case.run("sasl-plaintext-scram512", "SASL_PLAINTEXT", None, &["--sasl-mechanism", "SCRAM-SHA-512", "--sasl-credentials-file", creds], &[]);
    case.check("sasl-plaintext-scram512", &o, "SASL_PLAINTEXT", Some("SCRAM-SHA-512"), false);
    let mut a = vec!["--sasl-mechanism", "PLAIN", "--sasl-credentials-file", creds];
    a.extend(&client);
    let o = case.run("sasl-ssl-plain", "SASL_SSL", None, &a, &[]);
    case.check("sasl-ssl-plain", &o, "SASL_SSL", Some("PLAIN"), true);
    // SASL_SSL + SCRAM-SHA-256, credentials from the environment, consumers in a consumer group:
    // the group coordinator's connections are secured too.
    let env = [("LOADGEN_SASL_USERNAME", "loadgen"), ("LOADGEN_SASL_PASSWORD", password.as_str())];
    let mut a = vec!["--sasl-mechanism", "SCRAM-SHA-256", "--consumer-mode", "group"];
    a.extend(&client);
    let o = case.run("sasl-ssl-scram256-group", "SASL_SSL", None, &a, &env);
    case.check("sasl-ssl-scram256-group", &o, "SASL_SSL", Some("SCRAM-SHA-256"), true);
    let json = out.join("sasl-ssl-scram256-group.json");
    assert_eq!(loadgen::results::RunResult::load(&json).unwrap().consumer.expect("consumer").mode, "group");

    // A wrong password (credentials from the environment): exit 2 naming broker and mechanism.
    let wrong = format!("wrong-{password}");
    let env = [("LOADGEN_SASL_USERNAME", "loadgen"), ("LOADGEN_SASL_PASSWORD", wrong.as_str())];
    let o = case.run("wrong-scram512", "SASL_PLAINTEXT", None, &["--sasl-mechanism", "SCRAM-SHA-512"], &env);
    let at = broker.listeners["SASL_PLAINTEXT"].to_string();
    case.refused("wrong-scram512", &o, &["SASL authentication failed", &at, "SCRAM-SHA-512"]);
    let mut a = vec!["--sasl-mechanism", "PLAIN"];
    a.extend(&client);
    let o = case.run("wrong-plain", "SASL_SSL", None, &a, &env);
    let at = broker.listeners["SASL_SSL"].to_string();
    case.refused("wrong-plain", &o, &["SASL authentication failed", &at, "PLAIN"]);
    // mTLS: without a client certificate the listener refuses the connection.
    let o = case.run("ssl-no-client-cert", "SSL", None, &client[..2], &[]);
    case.refused("ssl-no-client-cert", &o, &[&broker.listeners["SSL"].to_string()]);

    // The password is in no file the loadgen wrote (results, .hlog interval logs, the HTML
    // report) nor in its output.
    let report = bin().args(["report"]).args(json_files(&out)).arg("-o").arg(out.join("report.html")).output().unwrap();
    assert!(report.status.success(), "loadgen report: {}", String::from_utf8_lossy(&report.stderr));
    let files: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.iter().any(|f| f.extension().is_some_and(|x| x == "hlog")), "no interval log written: {files:?}");
    assert!(files.iter().any(|f| f.extension().is_some_and(|x| x == "html")));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(!bytes.windows(password.len()).any(|w| w == password.as_bytes()), "the password is in {}", f.display());
    }
}
