//! Records the commit the loadgen binary is built from (`LOADGEN_BUILD_COMMIT`, read with
//! `env!` in `env.rs`): `git rev-parse HEAD` of this source tree, with `-dirty` when tracked
//! files differ from it. Without git or a `.git` (a source tarball) it is `unknown`, unless
//! the build sets `LOADGEN_GIT_COMMIT` (e.g. a packager who knows the commit).

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new("git").arg("-C").arg(dir).args(args).stderr(std::process::Stdio::null()).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&manifest);
    println!("cargo:rerun-if-env-changed=LOADGEN_GIT_COMMIT");
    let commit = if let Ok(c) = std::env::var("LOADGEN_GIT_COMMIT") {
        c
    } else {
        // Only a repository whose top level contains this crate counts: a tarball unpacked
        // inside some other repository must not record that repository's HEAD.
        let top = git(dir, &["rev-parse", "--show-toplevel"]);
        let ours = top.as_deref().is_some_and(|t| dir.canonicalize().ok().zip(Path::new(t).canonicalize().ok()).is_some_and(|(d, t)| d.starts_with(&t) && t.join("loadgen").join("build.rs").is_file()));
        match (ours, git(dir, &["rev-parse", "HEAD"])) {
            (true, Some(c)) if !c.is_empty() => {
                // Rebuild when HEAD moves, the index changes or sources change (dirty flag).
                if let Some(g) = git(dir, &["rev-parse", "--absolute-git-dir"]) {
                    println!("cargo:rerun-if-changed={g}/HEAD");
                    println!("cargo:rerun-if-changed={g}/index");
                    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
                        if let Some(common) = git(dir, &["rev-parse", "--git-common-dir"]) {
                            let common = if Path::new(&common).is_absolute() { common } else { format!("{}/{common}", dir.display()) };
                            println!("cargo:rerun-if-changed={common}/{r}");
                        }
                    }
                }
                if let Some(t) = &top {
                    for d in ["loadgen/src", "engine/src", "crates", "loadgen/Cargo.toml", "engine/Cargo.toml", "Cargo.lock"] {
                        println!("cargo:rerun-if-changed={t}/{d}");
                    }
                }
                let dirty = git(dir, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
                if dirty {
                    format!("{c}-dirty")
                } else {
                    c
                }
            }
            _ => "unknown".to_string(),
        }
    };
    println!("cargo:rustc-env=LOADGEN_BUILD_COMMIT={commit}");
}
