//! Ctrl-C during the measured phase: the result is written, says `"complete": false`, follows
//! the schema, and the exit code is 130.

mod common;
use common::*;

#[test]
fn ctrl_c_writes_an_incomplete_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["run", "--sink", "--quiet", "--rate", "10000", "--warmup", "0", "--duration", "30", "--out-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let st = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("loadgen did not stop within 20 s of Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    let files = json_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    validate_against_schema(&files[0]);
    let r = loadgen::results::RunResult::load(&files[0]).unwrap();
    assert!(!r.complete);
    assert!(r.duration_s > 0.5 && r.duration_s < 10.0, "{}", r.duration_s);
    assert!(r.publish.records > 5_000);
}

#[test]
fn ctrl_c_before_measuring_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let child = bin()
        .args(["run", "--sink", "--quiet", "--rate", "1000", "--warmup", "30", "--duration", "5", "--out-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted before the measured phase"));
    assert!(json_files(dir.path()).is_empty());
}
