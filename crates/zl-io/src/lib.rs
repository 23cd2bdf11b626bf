//! Storage and socket I/O behind a small trait.
//!
//! * [`Io`] / [`IoFile`]: what the log needs from a filesystem. [`UringIo`] is the real one
//!   (writes and fdatasync through io_uring), [`SimIo`] an in-memory one that models the page
//!   cache vs. the disk, so tests can crash it, tear writes, flip bits and fail syncs.
//! * [`sys`]: the only module in the workspace with `unsafe` (io_uring submission, sendfile,
//!   `send(MSG_MORE)`).
#![deny(unsafe_code)]

pub mod sim;
#[allow(unsafe_code)] // the one module allowed `unsafe`, each block with a `// SAFETY:` comment
pub mod sys;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use sim::{CrashMode, SimIo};

/// A file as the log uses it: positional writes and reads, durability barrier, truncate.
#[allow(clippy::len_without_is_empty)]
pub trait IoFile: Send + Sync + std::fmt::Debug {
    /// Write all of `buf` at `pos` (into the page cache; not durable until [`IoFile::sync_data`]).
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Read up to `buf.len()` bytes at `pos`; returns the count read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// fdatasync: every write completed before this call is durable when it returns Ok.
    fn sync_data(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The OS file descriptor, for zero-copy `sendfile`. `None` for simulated files.
    fn raw_fd(&self) -> Option<RawFd>;
    /// Write `buf` at `pos` (may be empty; only its first `must` bytes are required, the rest
    /// is zero-fill written best effort), fdatasync, and then, only if both succeeded, write
    /// `note` = (file, bytes, position) best effort. Returns the mandatory write's or the
    /// sync's error, else whether all of `buf` was written. The real file does this as one
    /// io_uring submission. `written` runs once the writes are over and the mandatory part
    /// succeeded, before the sync completes (not at all if the mandatory write failed).
    fn write_sync_note(
        &self,
        buf: &[u8],
        must: usize,
        pos: u64,
        note: Option<(&dyn IoFile, &[u8], u64)>,
        written: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        let must = must.min(buf.len());
        if must > 0 {
            self.write_at(&buf[..must], pos)?;
        }
        let all = must == buf.len() || self.write_at(&buf[must..], pos + must as u64).is_ok();
        written();
        self.sync_data()?;
        if let Some((file, bytes, at)) = note {
            let _ = file.write_at(bytes, at);
        }
        Ok(all)
    }
    /// Back `[pos, pos + len)` with allocated space, extending the file (the new bytes read as
    /// zeros), so later writes there cannot fail with ENOSPC. The real file uses fallocate;
    /// this default writes zeros.
    fn reserve(&self, pos: u64, len: u64) -> io::Result<()> {
        self.write_at(&vec![0u8; len as usize], pos)
    }
    /// Hint: start writing `[pos, pos + len)` back to the disk now (no durability promise).
    fn start_writeback(&self, _pos: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// [`IoFile::read_at`], but only from memory: `Ok(None)` when the bytes would have to be
    /// read from the disk (the caller may then read a larger range at once). The default
    /// always reads.
    fn read_cached(&self, buf: &mut [u8], pos: u64) -> io::Result<Option<usize>> {
        self.read_at(buf, pos).map(Some)
    }
    /// [`IoFile::write_at`] for a large write, bypassing the page cache (O_DIRECT) for its
    /// [`DIRECT_ALIGN`]-aligned middle where the file system allows it; the unaligned ends go
    /// through the page cache. Same contract: durable only after [`IoFile::sync_data`]. Writes
    /// to disjoint ranges may run concurrently (no page is written both ways at once: the
    /// middle's pages hold only this write's bytes). The default is `write_at`.
    fn write_direct(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.write_at(buf, pos)
    }

    /// Read exactly `buf.len()` bytes at `pos`.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], pos + done as u64)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
            }
            done += n;
        }
        Ok(())
    }
}

/// A filesystem as the log uses it.
pub trait Io: Send + Sync + std::fmt::Debug {
    /// Open for read and write, creating it when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> bool;
    /// fsync a directory, making creations, renames and removals in it durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Take the exclusive lock of a data directory (`<dir>/.lock`, as Kafka's log directories),
    /// held until the returned file is dropped. `Ok(None)` where there is nothing to lock (the
    /// simulator). Err with kind `WouldBlock` when another holder has it.
    fn lock_dir(&self, _dir: &Path) -> io::Result<Option<std::fs::File>> {
        Ok(None)
    }
}

/// Name of a data directory's lock file.
pub const LOCK_FILE: &str = ".lock";

/// The real filesystem; writes and fdatasync go through a per-thread io_uring
/// (falling back to pwrite/fdatasync where io_uring is unavailable).
#[derive(Debug, Default, Clone, Copy)]
pub struct UringIo;

/// Alignment of O_DIRECT positions, lengths and buffers (the page size; at least any logical
/// block size in use).
pub const DIRECT_ALIGN: u64 = 4096;
/// [`IoFile::write_direct`] writes a middle smaller than this through the page cache.
const DIRECT_MIN_BYTES: u64 = 64 << 10;

#[derive(Debug)]
struct OsFile {
    file: std::fs::File,
    /// A second descriptor of the same file opened with O_DIRECT (opened on first use; `None`
    /// where the file system refuses O_DIRECT).
    direct: std::sync::OnceLock<Option<std::fs::File>>,
    /// Cleared when an O_DIRECT write is refused (EINVAL): later writes use the page cache.
    direct_ok: std::sync::atomic::AtomicBool,
}

impl OsFile {
    fn new(file: std::fs::File) -> OsFile {
        OsFile { file, direct: std::sync::OnceLock::new(), direct_ok: std::sync::atomic::AtomicBool::new(true) }
    }

    fn direct_fd(&self) -> Option<RawFd> {
        if !self.direct_ok.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let f = self.direct.get_or_init(|| {
            use std::os::unix::fs::OpenOptionsExt;
            // Through /proc so that the new descriptor names this very file, even if it was
            // renamed or unlinked since it was opened.
            let path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
            std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()
        });
        f.as_ref().map(|f| f.as_raw_fd())
    }
}

/// Copy buffers for O_DIRECT writes (callers' buffers are not aligned), shared by every writer:
/// a broker runs a thread per connection, and a buffer per thread would keep memory in
/// proportion to the connections that ever sent a large batch. Kept between writes: at most
/// [`DIRECT_POOL_MAX`] buffers of at most [`DIRECT_BUF_KEEP`] bytes each.
static DIRECT_BUFS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const DIRECT_POOL_MAX: usize = 8;
const DIRECT_BUF_KEEP: usize = 17 << 20;

/// A pooled copy buffer of at least `need` bytes.
fn take_direct_buf(need: usize) -> Vec<u8> {
    let mut pool = DIRECT_BUFS.lock().unwrap_or_else(|p| p.into_inner());
    let v = match pool.iter().position(|v| v.len() >= need) {
        Some(i) => pool.swap_remove(i),
        None => pool.pop().unwrap_or_default(),
    };
    drop(pool);
    if v.len() >= need {
        v
    } else {
        // Whole MiBs: a batch's aligned middle varies by a page with its position, and a buffer
        // sized exactly would be replaced at every slightly larger one.
        vec![0u8; need.next_multiple_of(1 << 20)]
    }
}

fn give_direct_buf(v: Vec<u8>) {
    if v.len() <= DIRECT_BUF_KEEP {
        let mut pool = DIRECT_BUFS.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < DIRECT_POOL_MAX {
            pool.push(v);
        }
    }
}

/// Largest page-cache write [`OsFile::write_at`] makes with a plain `pwrite` (larger ones go
/// through io_uring): results/net/2026-12-07.md, section "c (again)".
pub const PWRITE_MAX: usize = 16 << 10;

impl IoFile for OsFile {
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let mut done = 0usize;
        while done < buf.len() {
            // Small writes: pwrite (io_uring would punt a buffered ext4 write to an io-wq
            // worker, two context switches that cost more than the copy). Large ones stay on
            // io_uring, whose worker does the copy on another core while this network thread
            // waits (the 8-partition max-rate A/B consumed 0.85x with pwrite for every size).
            let rest = &buf[done..];
            let n = if rest.len() <= PWRITE_MAX { sys::pwrite(fd, rest, pos + done as u64)? } else { sys::uring_write(fd, rest, pos + done as u64)? };
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
            }
            done += n;
        }
        Ok(())
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        sys::uring_fdatasync(self.file.as_raw_fd())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
    fn write_sync_note(
        &self,
        buf: &[u8],
        must: usize,
        pos: u64,
        note: Option<(&dyn IoFile, &[u8], u64)>,
        written: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        let fd = self.file.as_raw_fd();
        match note {
            Some((file, bytes, at)) => match file.raw_fd() {
                Some(nfd) => sys::uring_write_sync_note(fd, buf, must, pos, Some((nfd, bytes, at)), written),
                None => {
                    let all = sys::uring_write_sync_note(fd, buf, must, pos, None, written)?;
                    let _ = file.write_at(bytes, at);
                    Ok(all)
                }
            },
            None => sys::uring_write_sync_note(fd, buf, must, pos, None, written),
        }
    }
    fn reserve(&self, pos: u64, len: u64) -> io::Result<()> {
        match sys::uring_fallocate(self.file.as_raw_fd(), pos, len) {
            // Filesystems without fallocate: zeros reserve the space as well.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => self.write_at(&vec![0u8; len as usize], pos),
            r => r,
        }
    }
    fn start_writeback(&self, pos: u64, len: u64) -> io::Result<()> {
        sys::uring_start_writeback(self.file.as_raw_fd(), pos, len)
    }
    fn read_cached(&self, buf: &mut [u8], pos: u64) -> io::Result<Option<usize>> {
        sys::pread_cached(self.file.as_raw_fd(), buf, pos)
    }
    fn write_direct(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let end = pos + buf.len() as u64;
        let from = pos.next_multiple_of(DIRECT_ALIGN);
        let to = end / DIRECT_ALIGN * DIRECT_ALIGN;
        let dfd = match self.direct_fd() {
            Some(fd) if to >= from + DIRECT_MIN_BYTES => fd,
            _ => return self.write_at(buf, pos),
        };
        let head = (from - pos) as usize;
        let body = (to - from) as usize;
        if head > 0 {
            self.write_at(&buf[..head], pos)?;
        }
        if end > to {
            self.write_at(&buf[head + body..], to)?;
        }
        let src = &buf[head..head + body];
        let mut v = take_direct_buf(body + DIRECT_ALIGN as usize);
        let at = v.as_ptr().align_offset(DIRECT_ALIGN as usize);
        let aligned = &mut v[at..at + body];
        aligned.copy_from_slice(src);
        let mut done = 0usize;
        let mut failed = None;
        while done < body {
            match sys::uring_write(dfd, &aligned[done..], from + done as u64) {
                Ok(0) => break,
                // A short write that ends off the alignment: the rest goes through the page cache.
                Ok(n) if n % DIRECT_ALIGN as usize != 0 => {
                    done += n;
                    break;
                }
                Ok(n) => done += n,
                Err(e) if done == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                    // Refused (alignment rules stricter than ours): nothing was written.
                    self.direct_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        give_direct_buf(v);
        if let Some(e) = failed {
            return Err(e);
        }
        if done < body {
            self.write_at(&src[done..], from + done as u64)?;
        }
        Ok(())
    }
}

impl Io for UringIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let opts = |noatime: bool| {
            let mut o = std::fs::OpenOptions::new();
            o.read(true).write(true).create(create);
            if noatime {
                o.custom_flags(libc::O_NOATIME);
            }
            o
        };
        // O_NOATIME: a read (sendfile or copy) of a segment being appended to would otherwise
        // update its atime (relatime updates it whenever it is older than the mtime), dirtying
        // the inode on nearly every Fetch. Only the file's owner (or CAP_FOWNER) may ask: EPERM
        // opens it without.
        let file = match opts(true).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => opts(false).open(path)?,
            r => r?,
        };
        Ok(Arc::new(OsFile::new(file)))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        out.sort();
        Ok(out)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
    /// flock(LOCK_EX | LOCK_NB) through std's `File::try_lock`: released by the kernel when the
    /// process dies (no stale lock after kill -9), and conflicting between two open file
    /// descriptions even in one process. The holder's pid is written into the file for the
    /// message a second broker prints.
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<std::fs::File>> {
        use std::io::{Read, Seek, Write};
        let path = dir.join(LOCK_FILE);
        let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        // A lock released by an in-process restart can look held for a moment: a child this
        // process is spawning holds a copy of every descriptor from its fork until its exec
        // (where O_CLOEXEC closes it). So a busy lock is retried for a bounded time before the
        // refusal; a broker that really holds the directory still gets its refusal (seen in
        // tests that restart a broker in-process while another test spawns processes).
        let give_up = std::time::Instant::now() + LOCK_RETRY;
        let mut busy = f.try_lock();
        while matches!(busy, Err(std::fs::TryLockError::WouldBlock)) && std::time::Instant::now() < give_up {
            std::thread::sleep(std::time::Duration::from_millis(10));
            busy = f.try_lock();
        }
        match busy {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { String::new() } else { format!(" (held by pid {holder})") };
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked{who}: another broker is using this data directory", path.display()),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())?;
        Ok(Some(f))
    }
}

/// How long [`Io::lock_dir`] retries a busy data-directory lock before refusing.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Join helper used by the log for sibling files.
pub fn sibling(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_copy_buffers_are_pooled_within_bounds() {
        // Many writers returning buffers (one oversized) leave at most DIRECT_POOL_MAX of them,
        // none over DIRECT_BUF_KEEP; a buffer that is taken is large enough.
        let mut taken: Vec<Vec<u8>> = (0..3 * DIRECT_POOL_MAX).map(|i| take_direct_buf(4096 * (i + 1))).collect();
        taken.push(vec![0u8; DIRECT_BUF_KEEP + 1]);
        for (i, v) in taken.iter().enumerate().take(3 * DIRECT_POOL_MAX) {
            assert!(v.len() >= 4096 * (i + 1));
        }
        for v in taken {
            give_direct_buf(v);
        }
        let pool = DIRECT_BUFS.lock().unwrap();
        assert!(!pool.is_empty() && pool.len() <= DIRECT_POOL_MAX, "pool holds {}", pool.len());
        assert!(pool.iter().all(|v| v.len() <= DIRECT_BUF_KEEP));
    }
}
