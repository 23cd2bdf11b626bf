//! An in-memory filesystem that separates what is written (the page cache) from what is durable
//! (the disk), so tests can build the "crash image" a power cut would leave behind.
//!
//! Model:
//! * `write_at`/`set_len` change the volatile contents and are queued as pending operations.
//! * `sync_data` applies a file's pending operations to its durable contents (unless a fault is
//!   injected: then it fails with EIO and nothing becomes durable).
//! * Creating, renaming and removing files change the volatile directory; they become durable
//!   only with `sync_dir` of the parent directory (ALICE's missing-directory-fsync bugs).
//! * [`SimIo::crash`] returns a new filesystem holding only durable state, optionally with a
//!   prefix of each file's pending writes applied (the last one torn at a random byte) and a bit
//!   flipped in that unsynced region.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Io, IoFile};

#[derive(Debug, Clone)]
enum Pending {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Contents {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

fn apply(buf: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { pos, data } => {
            let end = *pos as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*pos as usize..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

#[derive(Debug)]
struct SimFile {
    contents: Mutex<Contents>,
    fs: Arc<Shared>,
    path: PathBuf,
}

/// Faults and counters shared by every file of one simulated filesystem.
#[derive(Debug, Default)]
struct Shared {
    /// Fail the sync whose ordinal (1-based, counted over all files) equals this; 0 = never.
    fail_sync_at: AtomicU64,
    /// Milliseconds a failing sync waits (after the failure took effect) before it returns:
    /// widens the window in which another sync of the same file succeeds first.
    fail_report_delay_ms: AtomicU64,
    syncs: AtomicU64,
    /// Bytes of free space; writes that would grow past it fail with ENOSPC. u64::MAX = unlimited.
    space_left: AtomicU64,
    /// Fail every write with EIO while non-zero.
    write_eio: AtomicU64,
    /// `sync_data` panics while set ([`SimIo::set_sync_panic`]).
    sync_panic: std::sync::atomic::AtomicBool,
    /// `sync_data` of a file whose path contains this panics ([`SimIo::set_sync_panic_path`]).
    sync_panic_path: Mutex<Option<String>>,
    /// `read_cached` finds nothing in memory while set ([`SimIo::set_cold_cache`]).
    cold_cache: std::sync::atomic::AtomicBool,
    /// Held shared by every operation that changes a file and exclusively by [`SimIo::crash`],
    /// so a crash image is one instant across all files (not file by file while syncs go on).
    gate: RwLock<()>,
    /// (syncs held, syncs waiting) ([`SimIo::hold_syncs`]) and its condvar.
    held: Mutex<(bool, u64)>,
    held_cv: std::sync::Condvar,
}

impl Shared {
    /// Wait while syncs are held.
    fn wait_released(&self) {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !h.0 {
            return;
        }
        h.1 += 1;
        while h.0 {
            h = self.held_cv.wait(h).unwrap_or_else(|p| p.into_inner());
        }
        h.1 -= 1;
    }

    fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl IoFile for SimFile {
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let _gate = self.fs.enter();
        if self.fs.write_eio.load(Ordering::SeqCst) != 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let mut c = self.contents.lock().expect("sim file lock");
        let end = pos + buf.len() as u64;
        let growth = end.saturating_sub(c.volatile.len() as u64);
        if growth > 0 {
            let left = self.fs.space_left.load(Ordering::SeqCst);
            if left != u64::MAX {
                if growth > left {
                    // Like Linux: the part that fits is written (a short write), then ENOSPC.
                    let fits = buf.len() - (growth - left) as usize;
                    if fits > 0 {
                        let op = Pending::Write { pos, data: buf[..fits].to_vec() };
                        apply(&mut c.volatile, &op);
                        c.pending.push(op);
                    }
                    self.fs.space_left.store(0, Ordering::SeqCst);
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
                self.fs.space_left.store(left - growth, Ordering::SeqCst);
            }
        }
        let op = Pending::Write { pos, data: buf.to_vec() };
        apply(&mut c.volatile, &op);
        c.pending.push(op);
        Ok(())
    }
    fn read_cached(&self, buf: &mut [u8], pos: u64) -> io::Result<Option<usize>> {
        if self.fs.cold_cache.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.read_at(buf, pos).map(Some)
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let c = self.contents.lock().expect("sim file lock");
        let pos = pos as usize;
        if pos >= c.volatile.len() {
            return Ok(0);
        }
        let n = buf.len().min(c.volatile.len() - pos);
        buf[..n].copy_from_slice(&c.volatile[pos..pos + n]);
        Ok(n)
    }
    fn sync_data(&self) -> io::Result<()> {
        assert!(!self.fs.sync_panic.load(Ordering::SeqCst), "SimIo: injected panic in sync_data");
        let hit = {
            let part = self.fs.sync_panic_path.lock().unwrap_or_else(|p| p.into_inner());
            part.as_deref().is_some_and(|part| self.path.to_string_lossy().contains(part))
        };
        assert!(!hit, "SimIo: injected panic in sync_data of {}", self.path.display());
        self.fs.wait_released();
        let _gate = self.fs.enter();
        let n = self.fs.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        let mut c = self.contents.lock().expect("sim file lock");
        if self.fs.fail_sync_at.load(Ordering::SeqCst) == n {
            // As Linux does after a writeback error ("fsyncgate"): the dirty pages are marked
            // clean, so the unsynced writes stay visible but will never reach the disk, and a
            // later successful sync does not bring them back.
            c.pending.clear();
            drop(c);
            drop(_gate);
            let delay = self.fs.fail_report_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                std::thread::sleep(std::time::Duration::from_millis(delay));
            }
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let ops = std::mem::take(&mut c.pending);
        for op in &ops {
            apply(&mut c.durable, op);
        }
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.contents.lock().expect("sim file lock").volatile.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let _gate = self.fs.enter();
        let mut c = self.contents.lock().expect("sim file lock");
        let op = Pending::SetLen(len);
        apply(&mut c.volatile, &op);
        c.pending.push(op);
        Ok(())
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

#[derive(Debug, Default)]
struct Namespace {
    /// Volatile view: path -> file.
    files: BTreeMap<PathBuf, Arc<SimFile>>,
    dirs: BTreeMap<PathBuf, ()>,
    /// Durable view of directory entries (only updated by `sync_dir`).
    durable_files: BTreeMap<PathBuf, Arc<SimFile>>,
    durable_dirs: BTreeMap<PathBuf, ()>,
}

/// Simulated filesystem. Cheap to clone (shares state).
#[derive(Debug, Clone)]
pub struct SimIo {
    ns: Arc<Mutex<Namespace>>,
    shared: Arc<Shared>,
}

/// What a crash does to data that was written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced byte is lost.
    DropUnsynced,
    /// A random prefix of each file's unsynced writes survives, the last one possibly torn.
    Tear,
    /// Like `Tear`, and one bit flips somewhere in the surviving unsynced bytes.
    TearAndFlip,
}

impl Default for SimIo {
    fn default() -> Self {
        Self::new()
    }
}

impl SimIo {
    pub fn new() -> Self {
        let shared = Shared { space_left: AtomicU64::new(u64::MAX), ..Default::default() };
        let mut ns = Namespace::default();
        ns.dirs.insert(PathBuf::from("/"), ());
        ns.durable_dirs.insert(PathBuf::from("/"), ());
        SimIo { ns: Arc::new(Mutex::new(ns)), shared: Arc::new(shared) }
    }

    /// Let a failing sync (see [`SimIo::fail_sync_in`]) return its error only `ms` after the
    /// failure took effect (the pages are already clean): as when the kernel reports a
    /// writeback error to one fdatasync while another, on the same file, finds nothing to do.
    pub fn set_sync_failure_report_delay_ms(&self, ms: u64) {
        self.shared.fail_report_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Make the `n`-th sync from now (1 = the next one) fail with EIO; the writes it would have
    /// made durable are lost for good (they stay readable until a crash).
    pub fn fail_sync_in(&self, n: u64) {
        let now = self.shared.syncs.load(Ordering::SeqCst);
        self.shared.fail_sync_at.store(now + n, Ordering::SeqCst);
    }
    /// While `on`, every `sync_data` waits (a stalled disk) until `hold_syncs(false)`: tests of
    /// what must not wait for an fsync.
    pub fn hold_syncs(&self, on: bool) {
        let mut h = self.shared.held.lock().unwrap_or_else(|p| p.into_inner());
        h.0 = on;
        if !on {
            self.shared.held_cv.notify_all();
        }
    }
    /// Syncs waiting in [`SimIo::hold_syncs`] now.
    pub fn syncs_held(&self) -> u64 {
        self.shared.held.lock().unwrap_or_else(|p| p.into_inner()).1
    }
    /// Number of `sync_data` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::SeqCst)
    }
    /// Limit free space to `bytes` (writes growing files beyond it fail with ENOSPC); `None` = unlimited.
    pub fn set_space_left(&self, bytes: Option<u64>) {
        self.shared.space_left.store(bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
    }
    /// Make every write fail with EIO while `on`.
    pub fn set_write_eio(&self, on: bool) {
        self.shared.write_eio.store(on as u64, Ordering::SeqCst);
    }
    /// Make `read_cached` report every read as needing the disk while `on` (a cold page cache).
    pub fn set_cold_cache(&self, on: bool) {
        self.shared.cold_cache.store(on, Ordering::SeqCst);
    }
    /// Make every `sync_data` panic while `on` (a bug in the caller's sync path, for tests that
    /// the log does not hang its other waiters when a sync unwinds).
    pub fn set_sync_panic(&self, on: bool) {
        self.shared.sync_panic.store(on, Ordering::SeqCst);
    }

    /// Make `sync_data` panic for every file whose path contains `part` (`None`: none), a bug
    /// in one caller's sync path (e.g. the log cleaner's output files, `.cleaned`).
    pub fn set_sync_panic_path(&self, part: Option<&str>) {
        *self.shared.sync_panic_path.lock().unwrap_or_else(|p| p.into_inner()) = part.map(str::to_string);
    }

    /// Durable contents of a file (what a power cut right now would certainly keep).
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let ns = self.ns.lock().expect("sim ns lock");
        ns.durable_files.get(path).map(|f| f.contents.lock().expect("sim file lock").durable.clone())
    }

    /// Flip one bit of a file's durable and volatile contents (bit rot on the platter).
    pub fn flip_durable_bit(&self, path: &Path, byte: usize, bit: u8) -> bool {
        let ns = self.ns.lock().expect("sim ns lock");
        let Some(f) = ns.files.get(path) else { return false };
        let mut c = f.contents.lock().expect("sim file lock");
        if byte >= c.durable.len() || byte >= c.volatile.len() {
            return false;
        }
        c.durable[byte] ^= 1 << (bit % 8);
        c.volatile[byte] ^= 1 << (bit % 8);
        true
    }

    /// The filesystem a power cut right now would leave behind. The original is left untouched
    /// (it keeps running for as long as the test wants, e.g. to let concurrent appenders finish).
    pub fn crash(&self, mode: CrashMode, seed: u64) -> SimIo {
        let mut rng = StdRng::seed_from_u64(seed);
        let _frozen = self.shared.gate.write().unwrap_or_else(|p| p.into_inner());
        let ns = self.ns.lock().expect("sim ns lock");
        let out = SimIo::new();
        {
            let mut new_ns = out.ns.lock().expect("sim ns lock");
            for d in ns.durable_dirs.keys() {
                new_ns.dirs.insert(d.clone(), ());
                new_ns.durable_dirs.insert(d.clone(), ());
            }
            for (path, f) in &ns.durable_files {
                let c = f.contents.lock().expect("sim file lock");
                let mut data = c.durable.clone();
                if mode != CrashMode::DropUnsynced && !c.pending.is_empty() {
                    let keep = rng.gen_range(0..=c.pending.len());
                    let before = data.len();
                    for (i, op) in c.pending[..keep].iter().enumerate() {
                        match op {
                            Pending::Write { pos, data: w } if i + 1 == keep && !w.is_empty() => {
                                let torn = rng.gen_range(1..=w.len());
                                apply(&mut data, &Pending::Write { pos: *pos, data: w[..torn].to_vec() });
                            }
                            op => apply(&mut data, op),
                        }
                    }
                    if mode == CrashMode::TearAndFlip && data.len() > before {
                        let at = rng.gen_range(before..data.len());
                        data[at] ^= 1 << rng.gen_range(0..8);
                    }
                }
                let file = Arc::new(SimFile {
                    contents: Mutex::new(Contents { volatile: data.clone(), durable: data, pending: Vec::new() }),
                    fs: out.shared.clone(),
                    path: path.clone(),
                });
                new_ns.files.insert(path.clone(), file.clone());
                new_ns.durable_files.insert(path.clone(), file);
            }
        }
        out
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

impl Io for SimIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        let mut ns = self.ns.lock().expect("sim ns lock");
        if let Some(f) = ns.files.get(path) {
            return Ok(f.clone());
        }
        if !create {
            return Err(not_found(path));
        }
        if !ns.dirs.contains_key(&parent(path)) {
            return Err(not_found(&parent(path)));
        }
        let f = Arc::new(SimFile { contents: Mutex::new(Contents::default()), fs: self.shared.clone(), path: path.to_path_buf() });
        ns.files.insert(path.to_path_buf(), f.clone());
        Ok(f)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut ns = self.ns.lock().expect("sim ns lock");
        ns.files.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut ns = self.ns.lock().expect("sim ns lock");
        let f = ns.files.remove(from).ok_or_else(|| not_found(from))?;
        ns.files.insert(to.to_path_buf(), f);
        Ok(())
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut ns = self.ns.lock().expect("sim ns lock");
        let mut p = PathBuf::new();
        for comp in path.components() {
            p.push(comp);
            ns.dirs.insert(p.clone(), ());
        }
        Ok(())
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut ns = self.ns.lock().expect("sim ns lock");
        ns.files.retain(|p, _| !p.starts_with(path));
        ns.dirs.retain(|p, _| !p.starts_with(path));
        Ok(())
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let ns = self.ns.lock().expect("sim ns lock");
        if !ns.dirs.contains_key(path) {
            return Err(not_found(path));
        }
        let mut out: Vec<String> = ns
            .files
            .keys()
            .chain(ns.dirs.keys())
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    fn exists(&self, path: &Path) -> bool {
        let ns = self.ns.lock().expect("sim ns lock");
        ns.files.contains_key(path) || ns.dirs.contains_key(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut ns = self.ns.lock().expect("sim ns lock");
        if !ns.dirs.contains_key(path) {
            return Err(not_found(path));
        }
        // Entries directly in `path` become durable as they are now; so does `path` itself and
        // (as on ext4, where a directory's own creation is journaled with its parent) its ancestors.
        let files: HashMap<PathBuf, Arc<SimFile>> =
            ns.files.iter().filter(|(p, _)| p.parent() == Some(path)).map(|(p, f)| (p.clone(), f.clone())).collect();
        ns.durable_files.retain(|p, _| p.parent() != Some(path));
        ns.durable_files.extend(files);
        let subdirs: Vec<PathBuf> = ns.dirs.keys().filter(|p| p.parent() == Some(path)).cloned().collect();
        ns.durable_dirs.retain(|p, _| p.parent() != Some(path) || subdirs.contains(p));
        for d in subdirs {
            ns.durable_dirs.insert(d, ());
        }
        let mut p = PathBuf::new();
        for comp in path.components() {
            p.push(comp);
            ns.durable_dirs.insert(p.clone(), ());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_and_unsynced_creations_vanish_on_crash() {
        let io = SimIo::new();
        io.create_dir_all(Path::new("/d")).unwrap();
        let f = io.open(Path::new("/d/a"), true).unwrap();
        f.write_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        // File exists durably only after the directory sync.
        assert!(!io.crash(CrashMode::DropUnsynced, 1).exists(Path::new("/d/a")));
        io.sync_dir(Path::new("/d")).unwrap();
        f.write_at(b" world", 5).unwrap();
        let after = io.crash(CrashMode::DropUnsynced, 1);
        let g = after.open(Path::new("/d/a"), false).unwrap();
        let mut buf = vec![0; 64];
        let n = g.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"hello");
    }

    #[test]
    fn injected_sync_failure_makes_nothing_durable() {
        let io = SimIo::new();
        io.create_dir_all(Path::new("/d")).unwrap();
        let f = io.open(Path::new("/d/a"), true).unwrap();
        io.sync_dir(Path::new("/d")).unwrap();
        f.write_at(b"x", 0).unwrap();
        io.fail_sync_in(1);
        assert!(f.sync_data().is_err());
        assert_eq!(io.durable_contents(Path::new("/d/a")).unwrap(), b"");
    }

    #[test]
    fn enospc_when_space_runs_out() {
        let io = SimIo::new();
        io.create_dir_all(Path::new("/d")).unwrap();
        let f = io.open(Path::new("/d/a"), true).unwrap();
        io.set_space_left(Some(4));
        f.write_at(b"abcd", 0).unwrap();
        let e = f.write_at(b"e", 4).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        io.set_space_left(Some(2));
        let e = f.write_at(b"efgh", 4).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(f.len().unwrap(), 6, "the part that fits is written, as Linux does");
        f.write_at(b"z", 0).unwrap(); // overwriting needs no space
    }
}
