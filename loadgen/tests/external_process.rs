//! The loadgen against the project's own `broker` binary started as a separate process (built
//! here with cargo if needed): per-run topic created with the workload's partitions, identity
//! recorded, topic deleted at the end.

mod common;
use common::*;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Broker(Child);
impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn loadgen_drives_the_broker_binary_as_an_external_process() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let data = tempfile::tempdir().unwrap();
    let _broker = Broker(
        Command::new(broker_bin())
            .arg("--data-dir")
            .arg(data.path())
            .args(["--listen", &addr.to_string(), "--durability", "never", "--no-auto-create"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn broker"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out_dir = tempfile::tempdir().unwrap();
    let json = out_dir.path().join("r.json");
    let out = run_cli(&[
        "run", "--quiet", "--bootstrap", &addr.to_string(), "--rate", "2000", "--duration", "2", "--warmup", "0", "--partitions", "4",
        "--replication-factor", "1", "-o", json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    validate_against_schema(&json);
    let r = loadgen::results::RunResult::load(&json).unwrap();
    assert_eq!(r.target.kind, "external");
    assert!(r.publish.records >= 3_000 && r.publish.errors == 0, "{:?}", r.publish);
    let id = r.target.identity.as_ref().expect("identity");
    assert_eq!(id.broker_count, 1);
    assert!(id.api_versions.iter().any(|a| a.name == "Fetch"), "{:?}", id.api_versions);
    let topic = &r.target.topics[0];
    assert!(topic.starts_with("loadgen-"), "{topic}");
    // Deleted at the end: the broker no longer lists it.
    let mut c = loadgen::client::Conn::connect(addr, Duration::from_secs(3)).unwrap();
    let md = c.metadata(None, false).unwrap();
    let names: Vec<String> = md.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect();
    assert!(!names.contains(topic), "{topic} still on the broker: {names:?}");
}
