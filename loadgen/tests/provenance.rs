//! Provenance: a loadgen binary run from inside another git repository records the commit it was
//! built from (captured by build.rs), not that repository's HEAD; `run --json -q` prints the
//! result JSON and nothing else on stdout.

mod common;
use common::*;

#[test]
fn result_names_the_build_commit_wherever_it_runs_and_json_is_alone_on_stdout() {
    let other = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").arg("-C").arg(other.path()).args(args).output().expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    std::fs::write(other.path().join("f"), "x").unwrap();
    git(&["add", "f"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "other"]);
    let other_head = git(&["rev-parse", "HEAD"]);

    let out = bin()
        .current_dir(other.path())
        .args(["run", "--sink", "--json", "-q", "--no-write", "--rate", "5000", "--duration", "1", "--warmup", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON alone ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let recorded = doc["environment"]["git_commit"].as_str().unwrap().to_string();
    assert_eq!(recorded, env!("LOADGEN_BUILD_COMMIT"));
    assert!(!recorded.starts_with(&other_head), "recorded the current directory's repository");
    assert_eq!(doc["provenance"]["build_commit"].as_str().unwrap(), recorded.trim_end_matches("-dirty"));
    assert_eq!(doc["provenance"]["loadgen_version"], env!("CARGO_PKG_VERSION"));
    // -q with --json: no human summary anywhere.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("measured "), "{}", String::from_utf8_lossy(&out.stderr));

    // Without -q the human summary goes to stderr; stdout is still the JSON alone.
    let out = bin().args(["run", "--sink", "--json", "--no-write", "--rate", "5000", "--duration", "1", "--warmup", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("measured "), "{}", String::from_utf8_lossy(&out.stderr));
}
