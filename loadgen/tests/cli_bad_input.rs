//! Bad input: a clear one-line error, exit code 2, no panic, no result file.

mod common;
use common::*;

fn assert_usage_error(args: &[&str], needle: &str) {
    let out_dir = tempfile::tempdir().unwrap();
    let mut all: Vec<&str> = vec!["run", "--quiet", "--no-calibrate", "--out-dir", out_dir.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run_cli(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "args {args:?}: stderr {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(json_files(out_dir.path()).is_empty(), "a result file was written for bad input");
}

#[test]
fn unreachable_broker() {
    // Port 1 on loopback: nothing listens there.
    assert_usage_error(&["--bootstrap", "127.0.0.1:1"], "cannot connect to broker 127.0.0.1:1");
}

#[test]
fn unresolvable_broker() {
    assert_usage_error(&["--bootstrap", "no-such-host.invalid:9092"], "cannot resolve broker address");
}

#[test]
fn unknown_workload_field() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("w.yaml");
    std::fs::write(&f, "name: typo\npartitionsPerTopic: 2\nmessageSise: 100\n").unwrap();
    assert_usage_error(&["--workload", f.to_str().unwrap(), "--sink"], "unknown field `messageSise`");
}

#[test]
fn missing_workload_file() {
    assert_usage_error(&["--workload", "/nonexistent/w.yaml", "--sink"], "cannot read workload");
}

#[test]
fn impossible_rate() {
    assert_usage_error(&["--sink", "--rate=-5"], "producerRate");
    assert_usage_error(&["--sink", "--rate", "1e15"], "producerRate");
    assert_usage_error(&["--sink", "--rate", "NaN"], "producerRate");
}

#[test]
fn impossible_size() {
    assert_usage_error(&["--sink", "--message-size", "0"], "messageSize");
    assert_usage_error(&["--sink", "--message-size", "4000000000"], "messageSize");
    // rate × size beyond any machine
    assert_usage_error(&["--sink", "--message-size", "16000000", "--rate", "100000"], "impossible");
}

#[test]
fn bad_durability() {
    assert_usage_error(&["--sink", "--durability", "sometimes"], "durability");
}

#[test]
fn report_of_missing_file() {
    let out = run_cli(&["report", "/nonexistent.json", "-o", "/tmp/x.html"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: cannot read /nonexistent.json"));
}
