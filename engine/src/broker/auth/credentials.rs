//! SASL credentials: PLAIN users and SCRAM credentials.
//!
//! `--sasl-users FILE`, one entry a line (`#` comments, blank lines ignored; user names are
//! percent-escaped where they hold `%`, white space or control characters):
//!
//! ```text
//! PLAIN alice alice-secret
//! SCRAM-SHA-256 bob iterations=4096 salt=<base64> stored_key=<base64> server_key=<base64>
//! ```
//!
//! A SCRAM line never holds a password: `broker --scram-credential SCRAM-SHA-256:bob` reads one
//! from stdin and prints the line. AlterUserScramCredentials adds, replaces and deletes SCRAM
//! credentials at run time; they are kept in `<data>/.security/scram` (same line format,
//! written to a temporary file, fdatasynced, renamed over, directory fsynced before the
//! change is applied and answered) and override the file's entry for the same user and
//! mechanism. The file's own entries cannot be deleted through the API (edit the file).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::scram::{ScramCredential, ScramHash, ITERATIONS_MAX, ITERATIONS_MIN};
use super::Mechanism;

pub const SCRAM_FILE: &str = "scram";

/// Percent-escape `%`, white space and control characters (one token per field).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c.is_whitespace() || c.is_control() {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("bad % escape in {s:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad % escape in {s:?}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once unescaped"))
}

/// The file line of a SCRAM credential.
pub fn scram_line(mechanism: Mechanism, user: &str, c: &ScramCredential) -> String {
    format!(
        "{} {} iterations={} salt={} stored_key={} server_key={}",
        mechanism.name(),
        escape(user),
        c.iterations,
        B64.encode(&c.salt),
        B64.encode(&c.stored_key),
        B64.encode(&c.server_key)
    )
}

#[derive(Default)]
struct Parsed {
    plain: HashMap<String, String>,
    scram: BTreeMap<(String, ScramHash), ScramCredential>,
}

fn hash_of(m: Mechanism) -> ScramHash {
    m.scram().expect("a SCRAM mechanism")
}

fn mechanism_of(h: ScramHash) -> Mechanism {
    match h {
        ScramHash::Sha256 => Mechanism::ScramSha256,
        ScramHash::Sha512 => Mechanism::ScramSha512,
    }
}

fn parse(text: &str, origin: &str, allow_plain: bool) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{origin}:{}", n + 1);
        let mut f = line.split_whitespace();
        let mech = f.next().unwrap_or_default();
        let user = unescape(f.next().ok_or_else(|| format!("{}: no user name", at()))?).map_err(|e| format!("{}: {e}", at()))?;
        match Mechanism::parse(mech) {
            Some(Mechanism::Plain) if allow_plain => {
                let password = f.next().ok_or_else(|| format!("{}: PLAIN needs a password", at()))?;
                if f.next().is_some() {
                    return Err(format!("{}: a PLAIN line is: PLAIN <user> <password>", at()));
                }
                p.plain.insert(user, unescape(password).map_err(|e| format!("{}: {e}", at()))?);
            }
            Some(m @ (Mechanism::ScramSha256 | Mechanism::ScramSha512)) => {
                let h = hash_of(m);
                let mut fields: HashMap<&str, &str> = HashMap::new();
                for kv in f {
                    let (k, v) = kv.split_once('=').ok_or_else(|| format!("{}: expected key=value, got {kv:?}", at()))?;
                    if k == "password" {
                        return Err(format!(
                            "{}: SCRAM credentials are stored salted, never as a password (broker --scram-credential {}:{} prints the line)",
                            at(),
                            m.name(),
                            escape(&user)
                        ));
                    }
                    fields.insert(k, v);
                }
                let get = |k: &str| fields.get(k).copied().ok_or_else(|| format!("{}: {} needs {k}=", at(), m.name()));
                let b64 = |k: &str| -> Result<Vec<u8>, String> { B64.decode(get(k)?).map_err(|_| format!("{}: {k} is not base64", at())) };
                let iterations: i32 = get("iterations")?.parse().map_err(|_| format!("{}: iterations is not a number", at()))?;
                if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
                    return Err(format!("{}: iterations must be within {ITERATIONS_MIN}..={ITERATIONS_MAX}", at()));
                }
                let c = ScramCredential { salt: b64("salt")?, iterations, stored_key: b64("stored_key")?, server_key: b64("server_key")? };
                if c.stored_key.len() != h.output_len() || c.server_key.len() != h.output_len() || c.salt.is_empty() {
                    return Err(format!("{}: key lengths do not fit {}", at(), m.name()));
                }
                p.scram.insert((user, h), c);
            }
            _ => {
                return Err(format!(
                    "{}: unknown mechanism {mech:?} ({})",
                    at(),
                    if allow_plain { "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" } else { "SCRAM-SHA-256 or SCRAM-SHA-512" }
                ))
            }
        }
    }
    Ok(p)
}

/// Where a SCRAM credential comes from (DescribeUserScramCredentials lists both).
pub struct CredentialStore {
    plain: HashMap<String, String>,
    file_scram: BTreeMap<(String, ScramHash), ScramCredential>,
    /// AlterUserScramCredentials' credentials (persisted in `scram_path`).
    dynamic: RwLock<BTreeMap<(String, ScramHash), ScramCredential>>,
    scram_path: PathBuf,
    /// Serializes changes (persist, then apply).
    writing: Mutex<()>,
}

/// A change asked by AlterUserScramCredentials.
pub enum ScramChange {
    Upsert { user: String, hash: ScramHash, credential: ScramCredential },
    Delete { user: String, hash: ScramHash },
}

impl CredentialStore {
    /// Load `users_file` (if any) and `<security_dir>/scram`.
    pub fn open(users_file: Option<&Path>, security_dir: &Path) -> Result<CredentialStore, String> {
        let file = match users_file {
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read SASL users file {}: {e}", f.display()))?;
                parse(&text, &f.display().to_string(), true)?
            }
            None => Parsed::default(),
        };
        let scram_path = security_dir.join(SCRAM_FILE);
        let dynamic = match std::fs::read_to_string(&scram_path) {
            Ok(text) => parse(&text, &scram_path.display().to_string(), false)?.scram,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", scram_path.display())),
        };
        Ok(CredentialStore {
            plain: file.plain,
            file_scram: file.scram,
            dynamic: RwLock::new(dynamic),
            scram_path,
            writing: Mutex::new(()),
        })
    }

    /// Check a PLAIN user's password (constant time in the password).
    pub fn check_plain(&self, user: &str, password: &str) -> bool {
        match self.plain.get(user) {
            Some(p) => super::scram::constant_time_eq(p.as_bytes(), password.as_bytes()),
            None => false,
        }
    }

    pub fn scram(&self, user: &str, hash: ScramHash) -> Option<ScramCredential> {
        let key = (user.to_string(), hash);
        let d = self.dynamic.read().unwrap_or_else(|p| p.into_inner());
        d.get(&key).cloned().or_else(|| self.file_scram.get(&key).cloned())
    }

    /// Every user with SCRAM credentials and their (mechanism, iterations).
    pub fn describe(&self) -> BTreeMap<String, Vec<(Mechanism, i32)>> {
        let d = self.dynamic.read().unwrap_or_else(|p| p.into_inner());
        let mut merged: BTreeMap<(String, ScramHash), i32> = self.file_scram.iter().map(|(k, c)| (k.clone(), c.iterations)).collect();
        merged.extend(d.iter().map(|(k, c)| (k.clone(), c.iterations)));
        let mut out: BTreeMap<String, Vec<(Mechanism, i32)>> = BTreeMap::new();
        for ((user, h), it) in merged {
            out.entry(user).or_default().push((mechanism_of(h), it));
        }
        out
    }

    /// Apply changes durably: Err(message) and nothing changed when a change is not
    /// possible or the file cannot be written and synced. Per-change validation (unknown
    /// credential to delete...) is the caller's; here a delete of a missing entry is an error.
    pub fn apply(&self, changes: Vec<ScramChange>) -> Result<(), String> {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.dynamic.read().unwrap_or_else(|p| p.into_inner()).clone();
        for c in changes {
            match c {
                ScramChange::Upsert { user, hash, credential } => {
                    next.insert((user, hash), credential);
                }
                ScramChange::Delete { user, hash } => {
                    if next.remove(&(user.clone(), hash)).is_none() {
                        return Err(if self.file_scram.contains_key(&(user.clone(), hash)) {
                            format!("the {} credential of {user:?} comes from the --sasl-users file: edit the file", mechanism_of(hash).name())
                        } else {
                            format!("no {} credential for {user:?}", mechanism_of(hash).name())
                        });
                    }
                }
            }
        }
        let mut text = String::from("# SCRAM credentials set by AlterUserScramCredentials (zerolog broker); do not edit while it runs\n");
        for ((user, h), c) in &next {
            text.push_str(&scram_line(mechanism_of(*h), user, c));
            text.push('\n');
        }
        write_durably(&self.scram_path, text.as_bytes())?;
        *self.dynamic.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    pub fn has_file_scram(&self, user: &str, hash: ScramHash) -> bool {
        self.file_scram.contains_key(&(user.to_string(), hash))
    }
}

/// Replace `path` durably: temporary file, fdatasync, rename over, directory fsync (the
/// directory is created, and its parent synced, if need be).
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().ok_or_else(|| format!("{} has no directory", path.display()))?;
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| fail("create the directory of", e))?;
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| fail("sync the parent directory of", e))?;
        }
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| fail("create a temporary file for", e))?;
    f.write_all(bytes).map_err(|e| fail("write", e))?;
    f.sync_data().map_err(|e| fail("fdatasync", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| fail("rename into", e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| fail("fsync the directory of", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_dynamic_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let c = ScramCredential::from_password(ScramHash::Sha256, "pw", b"0123456789abcdef", 4096);
        let users = dir.path().join("users");
        std::fs::write(&users, format!("# x\nPLAIN alice a%20b\n{}\n", scram_line(Mechanism::ScramSha256, "bob smith", &c))).unwrap();
        let sec = dir.path().join("data/.security");
        let s = CredentialStore::open(Some(&users), &sec).unwrap();
        assert!(s.check_plain("alice", "a b"));
        assert!(!s.check_plain("alice", "a"));
        assert!(!s.check_plain("nobody", ""));
        assert_eq!(s.scram("bob smith", ScramHash::Sha256), Some(c.clone()));
        assert!(s.apply(vec![ScramChange::Delete { user: "bob smith".into(), hash: ScramHash::Sha256 }]).unwrap_err().contains("file"));
        let c2 = ScramCredential::from_password(ScramHash::Sha512, "pw2", b"salt", 8192);
        s.apply(vec![ScramChange::Upsert { user: "carol".into(), hash: ScramHash::Sha512, credential: c2.clone() }]).unwrap();
        // Persisted: a new store over the same directory sees it.
        let s2 = CredentialStore::open(Some(&users), &sec).unwrap();
        assert_eq!(s2.scram("carol", ScramHash::Sha512), Some(c2));
        assert_eq!(s2.describe().get("carol").unwrap(), &vec![(Mechanism::ScramSha512, 8192)]);
        s2.apply(vec![ScramChange::Delete { user: "carol".into(), hash: ScramHash::Sha512 }]).unwrap();
        assert!(CredentialStore::open(None, &sec).unwrap().scram("carol", ScramHash::Sha512).is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("SCRAM-SHA-256 bob password=x", "never as a password"),
            ("PLAIN alice", "needs a password"),
            ("MD5 a b", "unknown mechanism"),
            ("SCRAM-SHA-256 bob iterations=10 salt=AA== stored_key=AA== server_key=AA==", "iterations"),
        ] {
            let f = dir.path().join("u");
            std::fs::write(&f, text).unwrap();
            let e = CredentialStore::open(Some(&f), dir.path()).err().unwrap();
            assert!(e.contains(want) && e.contains(":1"), "{text}: {e}");
        }
    }
}
