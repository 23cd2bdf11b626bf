//! The crate map of ARCHITECTURE.md ("Crates"), checked: each workspace crate depends (normal
//! dependencies) only on the workspace crates its row allows, every crate root but `zl-io`'s
//! forbids `unsafe`, and no library installs a process allocator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// ARCHITECTURE.md's table: crate → the workspace crates it may depend on (normal dependencies;
/// the optional ones are listed apart).
fn allowed() -> BTreeMap<&'static str, (&'static [&'static str], &'static [&'static str])> {
    BTreeMap::from([
        ("zl-record", (&[][..], &[][..])),
        ("zl-io", (&[][..], &[][..])),
        ("zl-log", (&["zl-record", "zl-io"][..], &[][..])),
        ("zl-wire", (&["zl-io", "zl-log"][..], &[][..])),
        ("zl-groups", (&["zl-record", "zl-log", "zl-wire"][..], &[][..])),
        ("engine", (&["zl-record", "zl-io", "zl-log", "zl-wire", "zl-groups"][..], &[][..])),
        // The embedded broker only through the feature `embedded`.
        ("loadgen", (&["zl-record", "zl-log"][..], &["engine"][..])),
        ("bench", (&["engine", "loadgen"][..], &[][..])),
    ])
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("engine/ has a parent").to_path_buf()
}

#[test]
fn workspace_crates_depend_only_on_what_the_map_allows() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    let allowed = allowed();
    let listed: BTreeSet<String> = allowed.keys().map(|k| k.to_string()).collect();
    assert_eq!(members, listed, "the workspace's crates and ARCHITECTURE.md's table differ");
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().expect("name");
        let (normal, optional) = allowed[name];
        for d in p["dependencies"].as_array().expect("dependencies") {
            let dep = d["name"].as_str().expect("dependency name");
            if !members.contains(dep) || d["kind"].as_str() == Some("dev") {
                continue;
            }
            let ok = if d["optional"].as_bool() == Some(true) { optional } else { normal };
            assert!(
                ok.contains(&dep),
                "{name} depends on {dep} ({}, optional: {}): not allowed by ARCHITECTURE.md's crate map",
                d["kind"].as_str().unwrap_or("normal"),
                d["optional"]
            );
        }
    }
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_zl_io_may_use_unsafe_and_no_library_installs_an_allocator() {
    let root = workspace_root();
    // Crate roots (libraries and binaries) that must forbid `unsafe`.
    let roots = [
        "crates/zl-record/src/lib.rs",
        "crates/zl-log/src/lib.rs",
        "crates/zl-wire/src/lib.rs",
        "crates/zl-groups/src/lib.rs",
        "engine/src/lib.rs",
        "engine/src/bin/broker.rs",
        "loadgen/src/lib.rs",
        "loadgen/src/main.rs",
        "bench/src/lib.rs",
    ];
    for r in roots {
        let text = std::fs::read_to_string(root.join(r)).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert!(text.contains("#![forbid(unsafe_code)]"), "{r} does not forbid unsafe_code");
    }
    let io = std::fs::read_to_string(root.join("crates/zl-io/src/lib.rs")).expect("zl-io's root");
    assert!(io.contains("#![deny(unsafe_code)]"), "zl-io does not deny unsafe_code outside its sys module");
    // Library sources: an allocator only for their own unit-test binary (`#[cfg(test)]` above it).
    let mut files = Vec::new();
    for dir in ["crates/zl-record/src", "crates/zl-io/src", "crates/zl-log/src", "crates/zl-wire/src", "crates/zl-groups/src", "loadgen/src", "bench/src"] {
        sources(&root.join(dir), &mut files);
    }
    sources(&root.join("engine/src"), &mut files);
    files.retain(|f| !f.ends_with("engine/src/bin/broker.rs"));
    assert!(files.len() > 20, "found only {} library sources under {}", files.len(), root.display());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.trim_start().starts_with("#[global_allocator]") {
                let prev = if i > 0 { lines[i - 1].trim() } else { "" };
                assert_eq!(prev, "#[cfg(test)]", "{}:{}: a library installs a process allocator", f.display(), i + 1);
            }
        }
    }
}
