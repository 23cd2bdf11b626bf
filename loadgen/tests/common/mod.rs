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
