//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

pub fn run_cli(args: &[&str]) -> Output {
    bin().args(args).output().expect("spawn loadgen")
}

/// The result schema, versioned with the loadgen (`loadgen/schema/result.schema.json`).
/// Nothing outside the repository is consulted.
pub fn schema_path() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/result.schema.json");
    assert!(p.is_file(), "result schema missing at {}", p.display());
    p
}

/// Validate a JSON file against the result schema with python3 `jsonschema` (Draft 2020-12).
pub fn validate_against_schema(json: &std::path::Path) {
    let script = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
jsonschema.Draft202012Validator.check_schema(schema)
errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
for e in errors:
    print("schema violation at", list(e.absolute_path), ":", e.message)
sys.exit(1 if errors else 0)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(schema_path())
        .arg(json)
        .output()
        .expect("python3 (with jsonschema: pip install jsonschema) is needed for schema validation");
    assert!(
        out.status.success(),
        "{} does not follow the schema:\n{}{}",
        json.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `*.json` under `dir`, recursively.
pub fn json_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(json_files(&p));
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
    out
}

/// The DOM of `html` as headless Chromium renders it, or None when no Chromium is installed and
/// `LOADGEN_SKIP_BROWSER` is set (without it, a missing Chromium fails the test). Bounded: the
/// browser is killed after 60 s.
pub fn chromium_dom(html: &std::path::Path) -> Option<String> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists());
    let Some(chromium) = chromium else {
        if std::env::var_os("LOADGEN_SKIP_BROWSER").is_some() {
            eprintln!("LOADGEN_SKIP_BROWSER set and no chromium: skipping the browser half");
            return None;
        }
        panic!("headless Chromium not found: apt-get install -y chromium (or set LOADGEN_SKIP_BROWSER=1)");
    };
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An engine broker started in the test process (durability `never`, port 0 on loopback) and
/// its data directory, removed after the broker stops (on drop).
pub struct Engine(Option<engine::broker::BrokerHandle>, #[allow(dead_code)] tempfile::TempDir);
impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.shutdown();
        }
    }
}

pub fn start_engine() -> (Engine, std::net::SocketAddr) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = engine::broker::BrokerConfig::new(tmp.path().join("data"), engine::log::Durability::Never);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let h = engine::broker::Broker::start(cfg).unwrap();
    let addr = h.local_addr();
    (Engine(Some(h), tmp), addr)
}

/// `loadgen run --quiet --no-calibrate` plus `args` against `addr`, on per-run topics named
/// after `prefix` that stay after the run (`--keep-topics`, to be read back), its result
/// written to `out`: the result (which must exist and follow the schema) and the process output.
pub fn run_kept_topics(addr: std::net::SocketAddr, prefix: &str, out: &std::path::Path, args: &[&str]) -> (loadgen::results::RunResult, Output) {
    let a = addr.to_string();
    let mut all = vec!["run", "--quiet", "--no-calibrate", "--bootstrap", &a, "--keep-topics", "--topic-prefix", prefix, "-o", out.to_str().unwrap()];
    all.extend(args);
    let o = run_cli(&all);
    assert!(out.is_file(), "no result: {}", String::from_utf8_lossy(&o.stderr));
    validate_against_schema(out);
    (loadgen::results::RunResult::load(out).unwrap(), o)
}

/// Path of the engine's `broker` binary in this target dir, built with cargo (same profile).
pub fn broker_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "engine", "--bin", "broker"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    if let Some(target) = dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    assert!(cmd.status().expect("cargo build the broker").success(), "cargo build -p engine --bin broker failed");
    let bin = dir.join("broker");
    assert!(bin.is_file(), "{} missing", bin.display());
    bin
}

/// The project's `broker` as an external process (durability never, 2 partitions per topic,
/// a loopback port, its own data dir); SIGCONT + SIGKILL on drop, whatever the test did to it.
pub struct Broker {
    pub child: std::process::Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(broker_bin())
            .args(["--durability", "never", "--default-partitions", "2", "--listen", &addr, "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start broker");
        let b = Broker { child, addr, _dir: dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&b.addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "broker did not listen on {} within 20 s", b.addr);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        b
    }
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(st.success(), "kill {sig}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
