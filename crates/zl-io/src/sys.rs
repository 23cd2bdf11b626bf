//! The workspace's only `unsafe` code: io_uring submissions, `sendfile`, `send(MSG_MORE)`.
//!
//! Each thread that writes owns a small io_uring (created lazily; a small lone page-cache write
//! is a plain `pwrite`, see [`pwrite`]). A submission is one SQE, or a
//! linked chain (the group-commit leader's write → fdatasync → note), followed by waiting for
//! every completion: the caller blocks like it would on `pwrite`, nothing is left in flight
//! when a call returns, and group commit keeps at most one fdatasync in flight per log.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{opcode, types, IoUring};

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

static URING_UNAVAILABLE: AtomicBool = AtomicBool::new(false);
/// Group-commit write + fdatasync as plain syscalls on the calling thread instead of an
/// io_uring chain ([`set_sync_syscalls`]).
static SYNC_SYSCALLS: AtomicBool = AtomicBool::new(false);

/// Experiment switch (issue 18's tail evidence): make [`uring_write_sync_note`] use `pwrite` +
/// `fdatasync` on the calling thread. The io_uring chain's write and fdatasync run on a
/// kernel io-wq worker, so each group commit wakes that worker and then the caller again; the
/// syscalls sleep and wake the caller only. Off by default.
pub fn set_sync_syscalls(on: bool) {
    SYNC_SYSCALLS.store(on, Ordering::Relaxed);
}

/// fdatasync(2) on the calling thread; an error is returned as it is (never retried).
fn fdatasync_sys(fd: RawFd) -> io::Result<()> {
    // SAFETY: fdatasync takes only a descriptor; an invalid one yields EBADF, not UB.
    if unsafe { libc::fdatasync(fd) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Run one SQE on this thread's ring and return the CQE result.
fn run_one(entry: io_uring::squeue::Entry) -> Option<io::Result<i32>> {
    let results = run_chain(std::slice::from_ref(&entry), &mut |_, _| {})?;
    Some(results.and_then(|r| match r.first() {
        Some(&(_, res)) if res < 0 => Err(io::Error::from_raw_os_error(-res)),
        Some(&(_, res)) => Ok(res),
        None => Err(io::Error::other("io_uring: completion missing")),
    }))
}

/// Completion tags for [`uring_write_sync_note`]'s chain.
const TAG_WRITE: u64 = 1;
const TAG_SYNC: u64 = 2;
const TAG_NOTE: u64 = 3;

/// Write `buf` at `pos` of `fd`, fdatasync `fd`, then (only if both succeeded) write `note` at
/// its position in its file: one linked io_uring chain, one submission, so the group-commit
/// leader pays one `io_uring_enter` for the batch of writes it covers plus its sync.
///
/// Only the first `must` bytes of `buf` have to be written (the rest is zero-fill ahead, best
/// effort). Returns the outcome of the mandatory write and of the sync; the note is best effort
/// (its error is dropped). A short write breaks the chain; the rest of the mandatory part is
/// then written and synced one call at a time. A negative sync completion is the sync's error
/// (the caller poisons, never retries). `Ok(true)` when all of `buf` was written.
/// `written` runs as soon as every write to `buf`'s range is over and the mandatory part
/// succeeded (before the sync completes); not at all if the mandatory write failed.
pub fn uring_write_sync_note(
    fd: RawFd,
    buf: &[u8],
    must: usize,
    pos: u64,
    note: Option<(RawFd, &[u8], u64)>,
    written: &mut dyn FnMut(),
) -> io::Result<bool> {
    let must = must.min(buf.len());
    if URING_UNAVAILABLE.load(Ordering::Relaxed) || SYNC_SYSCALLS.load(Ordering::Relaxed) || buf.len() > (1 << 30) {
        return write_sync_note_plain(fd, buf, must, pos, note, written);
    }
    let mut entries = Vec::with_capacity(3);
    if !buf.is_empty() {
        let w = opcode::Write::new(types::Fd(fd), buf.as_ptr(), buf.len() as u32).offset(pos).build();
        entries.push(w.flags(io_uring::squeue::Flags::IO_LINK).user_data(TAG_WRITE));
    }
    let sync = opcode::Fsync::new(types::Fd(fd)).flags(types::FsyncFlags::DATASYNC).build().user_data(TAG_SYNC);
    if let Some((nfd, nbuf, npos)) = note {
        entries.push(sync.flags(io_uring::squeue::Flags::IO_LINK));
        let len = nbuf.len().min(1 << 20) as u32;
        entries.push(opcode::Write::new(types::Fd(nfd), nbuf.as_ptr(), len).offset(npos).build().user_data(TAG_NOTE));
    } else {
        entries.push(sync);
    }
    let full = buf.len() as i32;
    let mut on_cqe = |tag: u64, res: i32| {
        if tag == TAG_WRITE && res == full {
            written();
        }
    };
    let Some(results) = run_chain(&entries, &mut on_cqe) else {
        return write_sync_note_plain(fd, buf, must, pos, note, written);
    };
    let results = results?;
    let get = |tag: u64| results.iter().find(|(t, _)| *t == tag).map(|(_, r)| *r);
    if !buf.is_empty() {
        match get(TAG_WRITE) {
            Some(n) if n < 0 => return Err(io::Error::from_raw_os_error(-n)),
            Some(n) if (n as usize) < buf.len() => {
                // Short write (e.g. no space for the zero-fill): the chain was cancelled after
                // it. Finish the mandatory part, then sync, one step at a time.
                let n = (n as usize).min(must);
                write_sync_note_plain(fd, &buf[n..must], must - n, pos + n as u64, note, written)?;
                return Ok(false);
            }
            Some(_) => {}
            None => return Err(io::Error::other("io_uring: write completion missing")),
        }
    }
    match get(TAG_SYNC) {
        Some(r) if r < 0 => Err(io::Error::from_raw_os_error(-r)),
        Some(_) => Ok(true),
        None => Err(io::Error::other("io_uring: fdatasync completion missing")),
    }
}

/// [`uring_write_sync_note`] one call at a time.
fn write_sync_note_plain(
    fd: RawFd,
    buf: &[u8],
    must: usize,
    pos: u64,
    note: Option<(RawFd, &[u8], u64)>,
    written: &mut dyn FnMut(),
) -> io::Result<bool> {
    let sys = SYNC_SYSCALLS.load(Ordering::Relaxed);
    let write = |b: &[u8], at: u64| if sys { pwrite(fd, b, at) } else { uring_write(fd, b, at) };
    let mut done = 0usize;
    let mut all = true;
    while done < buf.len() {
        match write(&buf[done..], pos + done as u64) {
            Ok(0) if done < must => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
            Ok(n) if n > 0 => done += n,
            Err(e) if done < must => return Err(e),
            // Past the mandatory part: the zero-fill is best effort.
            _ => {
                all = false;
                break;
            }
        }
    }
    written();
    if sys {
        fdatasync_sys(fd)?;
    } else {
        uring_fdatasync(fd)?;
    }
    if let Some((nfd, nbuf, npos)) = note {
        let _ = if sys { pwrite(nfd, nbuf, npos) } else { uring_write(nfd, nbuf, npos) };
    }
    Ok(all)
}

/// Submit `entries` (a linked chain) on this thread's ring with one `io_uring_enter` and wait
/// for all their completions; returns (user_data, result) pairs. `None` if io_uring is
/// unavailable. Every entry's buffer must stay borrowed by the caller for the whole call.
fn run_chain(entries: &[io_uring::squeue::Entry], on_cqe: &mut dyn FnMut(u64, i32)) -> Option<io::Result<Vec<(u64, i32)>>> {
    if URING_UNAVAILABLE.load(Ordering::Relaxed) {
        return None;
    }
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            match IoUring::new(8) {
                Ok(r) => *slot = Some(r),
                Err(e) => {
                    tracing::warn!("io_uring unavailable ({e}); falling back to pwrite/fdatasync");
                    URING_UNAVAILABLE.store(true, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let ring = slot.as_mut().expect("ring initialised above");
        if entries.len() > 8 {
            return Some(Err(io::Error::other("io_uring chain longer than the queue")));
        }
        // SAFETY: every entry's buffer pointer refers to memory our caller borrows for the
        // whole duration of this function, and we wait for all completions before returning,
        // so the kernel never touches a buffer after it is released. Nothing else is in flight
        // on this thread's ring (each call waits for all of its completions), and the queue
        // has 8 slots, checked above, so the pushes cannot overflow.
        let pushed = unsafe { ring.submission().push_multiple(entries) };
        if pushed.is_err() {
            return Some(Err(io::Error::other("io_uring submission queue full")));
        }
        let mut out = Vec::with_capacity(entries.len());
        while out.len() < entries.len() {
            match ring.submit_and_wait(entries.len() - out.len()) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EBUSY)) => {
                    std::thread::yield_now();
                    continue;
                }
                Err(e) if ring.submission().is_empty() => {
                    // The kernel took the entries: they are in flight and may still read our
                    // caller's buffers, so we must not return before their completions arrive.
                    tracing::warn!("io_uring wait failed ({e}); waiting for the completions");
                    std::thread::yield_now();
                    continue;
                }
                Err(e) => {
                    // Nothing was submitted: discard the ring so the pushed entries can never be
                    // submitted after our caller's buffers are gone (a stale write would land
                    // whatever that memory then holds); the next call builds a fresh ring.
                    *slot = None;
                    return Some(Err(e));
                }
            }
            for cqe in ring.completion() {
                on_cqe(cqe.user_data(), cqe.result());
                out.push((cqe.user_data(), cqe.result()));
            }
        }
        Some(Ok(out))
    })
}

/// Positional write through io_uring. Returns the number of bytes written (may be short).
pub fn uring_write(fd: RawFd, buf: &[u8], pos: u64) -> io::Result<usize> {
    let len = buf.len().min(1 << 30) as u32;
    let entry = opcode::Write::new(types::Fd(fd), buf.as_ptr(), len).offset(pos).build();
    match run_one(entry) {
        Some(r) => r.map(|n| n as usize),
        None => pwrite(fd, buf, pos),
    }
}

/// Positional write with pwrite(2) (the page-cache write of a lone append: io_uring would punt
/// a buffered ext4 write to an io-wq worker, two context switches per write, while the caller
/// waits anyway). Returns the number of bytes written (may be short); EINTR is retried.
pub fn pwrite(fd: RawFd, buf: &[u8], pos: u64) -> io::Result<usize> {
    let len = buf.len().min(1 << 30);
    loop {
        // SAFETY: `buf` is a valid readable slice of at least `len` bytes for the call.
        let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), len, pos as libc::off_t) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// fdatasync through io_uring. A negative completion is returned as the error (never retried).
pub fn uring_fdatasync(fd: RawFd) -> io::Result<()> {
    let entry = opcode::Fsync::new(types::Fd(fd)).flags(types::FsyncFlags::DATASYNC).build();
    match run_one(entry) {
        Some(r) => r.map(|_| ()),
        None => fdatasync_sys(fd),
    }
}

/// Allocate `[pos, pos + len)` of `fd` (fallocate mode 0: blocks reserved, the file extended,
/// contents read as zeros), so later writes there cannot fail for lack of space.
pub fn uring_fallocate(fd: RawFd, pos: u64, len: u64) -> io::Result<()> {
    let entry = opcode::Fallocate::new(types::Fd(fd), len).offset(pos).mode(0).build();
    match run_one(entry) {
        Some(r) => r.map(|_| ()),
        None => {
            // SAFETY: fallocate takes only integers; a bad descriptor yields EBADF, not UB.
            let rc = unsafe { libc::fallocate(fd, 0, pos as libc::off_t, len as libc::off_t) };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    }
}

/// Start writeback of `[pos, pos + len)` without waiting for it (sync_file_range with
/// SYNC_FILE_RANGE_WRITE). Not a durability barrier: only lets the transfer of a large write
/// overlap with other work, so the fdatasync that follows has less left to do.
pub fn uring_start_writeback(fd: RawFd, pos: u64, len: u64) -> io::Result<()> {
    let len32 = len.min(u32::MAX as u64) as u32;
    let flags = libc::SYNC_FILE_RANGE_WRITE;
    let entry = opcode::SyncFileRange::new(types::Fd(fd), len32).offset(pos).flags(flags).build();
    match run_one(entry) {
        Some(r) => r.map(|_| ()),
        None => {
            // SAFETY: sync_file_range takes only integers; a bad descriptor yields EBADF, not UB.
            let rc = unsafe { libc::sync_file_range(fd, pos as libc::off64_t, len as libc::off64_t, flags) };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    }
}

/// Page-cache state of a file range ([`cachestat`]), in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStat {
    pub cached: u64,
    pub dirty: u64,
    pub writeback: u64,
}

/// The page cache's view of `[pos, pos + len)` of `fd` (Linux ≥ 6.5 `cachestat(2)`): pages
/// cached, dirty (not yet sent to the disk) and under writeback. For tests and diagnostics.
pub fn cachestat(fd: RawFd, pos: u64, len: u64) -> io::Result<CacheStat> {
    // The syscall number is 451 on every architecture (the unified table); libc 0.2.191 does
    // not name it for x86_64 glibc.
    const SYS_CACHESTAT: libc::c_long = 451;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let range = Range { off: pos, len };
    let mut st = Stat::default();
    // SAFETY: `range` and `st` are live, properly aligned #[repr(C)] values of the layouts
    // cachestat(2) reads and writes (struct cachestat_range, struct cachestat) for the whole
    // call; flags must be 0.
    let rc = unsafe { libc::syscall(SYS_CACHESTAT, fd, &range as *const Range, &mut st as *mut Stat, 0u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(CacheStat { cached: st.nr_cache, dirty: st.nr_dirty, writeback: st.nr_writeback })
}

/// Read into `buf` at `pos` only if the data is in the page cache (preadv2 with RWF_NOWAIT):
/// `Ok(None)` when it would have to wait for the disk (or RWF_NOWAIT is unsupported).
pub fn pread_cached(fd: RawFd, buf: &mut [u8], pos: u64) -> io::Result<Option<usize>> {
    let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: `iov` describes `buf`, a valid writable slice that outlives the call.
    let n = unsafe { libc::preadv2(fd, &iov, 1, pos as libc::off_t, libc::RWF_NOWAIT) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(None),
        _ => Err(e),
    }
}

/// Send `len` bytes of file `file_fd` starting at `pos` to socket `sock_fd` with sendfile(2),
/// without copying them through user space. Blocks until all are sent or an error occurs.
pub fn sendfile_all(sock_fd: RawFd, file_fd: RawFd, pos: u64, len: usize) -> io::Result<()> {
    let mut off: libc::off_t = pos as libc::off_t;
    let mut left = len;
    while left > 0 {
        // SAFETY: `off` is a valid, exclusively borrowed off_t; both descriptors are plain ints
        // (a stale one yields EBADF rather than UB).
        let n = unsafe { libc::sendfile(sock_fd, file_fd, &mut off, left) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sendfile: file shorter than range"));
        }
        left -= n as usize;
    }
    Ok(())
}

/// One non-blocking sendfile(2) step for the network threads: sends up to `len` bytes of
/// `file_fd` from `pos` to the (non-blocking) socket; returns how many were sent, or
/// `WouldBlock` when the socket buffer is full (resume when writable).
pub fn sendfile_some(sock_fd: RawFd, file_fd: RawFd, pos: u64, len: usize) -> io::Result<usize> {
    loop {
        let mut off: libc::off_t = pos as libc::off_t;
        // SAFETY: `off` is a valid, exclusively borrowed off_t; both descriptors are plain ints
        // (a stale one yields EBADF rather than UB).
        let n = unsafe { libc::sendfile(sock_fd, file_fd, &mut off, len) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 && len > 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sendfile: file shorter than range"));
        }
        return Ok(n as usize);
    }
}

/// One non-blocking send(2) step (`MSG_MORE` when `more`): bytes sent, or `WouldBlock`.
pub fn send_some(sock_fd: RawFd, buf: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | if more { libc::MSG_MORE } else { 0 };
    loop {
        // SAFETY: the pointer/length pair describes the live `buf`.
        let n = unsafe { libc::send(sock_fd, buf.as_ptr().cast(), buf.len(), flags) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(n as usize);
    }
}

/// Send all of `buf` on a socket; with `more` set, pass MSG_MORE so the kernel coalesces it
/// with the data that follows (the spliced record bytes of a Fetch response).
pub fn send_all(sock_fd: RawFd, buf: &[u8], more: bool) -> io::Result<()> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer/length pair describes the live remainder of `buf`.
        let n = unsafe { libc::send(sock_fd, buf[done..].as_ptr().cast(), buf.len() - done, flags) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Test-only slowdown on the append path (feature `slow-append`): spins for a fifth of the time
/// the append took, a deliberate 20% regression the CI gate must flag.
#[cfg(feature = "slow-append")]
pub fn slow_append_penalty(append_took: std::time::Duration) {
    let until = std::time::Instant::now() + append_took / 5;
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Block SIGINT and SIGTERM in the calling thread (and every thread it spawns afterwards), so
/// that [`wait_for_termination_signal`] can receive them synchronously. Call first in `main`.
pub fn block_termination_signals() -> io::Result<()> {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use; the pointers
    // passed are valid for the calls; a null old-set pointer is allowed by pthread_sigmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// Wait until SIGINT or SIGTERM arrives (they must be blocked: [`block_termination_signals`]).
/// Returns the signal number.
pub fn wait_for_termination_signal() -> io::Result<i32> {
    // SAFETY: as above; `sig` is a valid out-pointer for sigwait.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut sig: libc::c_int = 0;
        let rc = libc::sigwait(&set, &mut sig);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(sig)
    }
}

/// Allocations at least this large are served by `mmap(MAP_NORESERVE)` (see [`GuardedAlloc`]).
pub const HUGE_ALLOC_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

/// The process allocator: the system one, except that allocations of [`HUGE_ALLOC_BYTES`] or
/// more reserve address space with `mmap(MAP_NORESERVE)` instead of committing memory.
///
/// Why: the protocol crate's decoders pre-size a `Vec` from an array count read off the wire
/// (`Vec::with_capacity(n)`, n up to 2^31), which with the system allocator fails and aborts
/// the process (a remote crash from a 20-byte request). With address space merely reserved,
/// that allocation succeeds, the decoder runs out of input after at most a frame's worth of
/// elements (frames are bounded by `frame_bytes_max`), fails with an error, and the mapping is
/// released. Only touched pages ever use memory.
pub struct GuardedAlloc;

fn is_huge(size: usize, align: usize) -> bool {
    size >= HUGE_ALLOC_BYTES && align <= PAGE_BYTES
}

fn map_noreserve(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with a null hint has no preconditions; failure is
    // reported as MAP_FAILED, which we turn into null (allocation failure).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every method upholds GlobalAlloc's contract: huge blocks come from mmap (page-aligned,
// which satisfies any align <= PAGE_BYTES, and zero-filled) and are returned with munmap of the
// same size (the layout given back to dealloc/realloc is the one used to allocate); all other
// blocks are delegated to `System` unchanged.
unsafe impl std::alloc::GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            map_noreserve(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees (non-zero size layout).
            unsafe { std::alloc::System.alloc(layout) }
        }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            map_noreserve(layout.size()) // anonymous mappings are zero-filled
        } else {
            // SAFETY: as in `alloc`.
            unsafe { std::alloc::System.alloc_zeroed(layout) }
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if is_huge(layout.size(), layout.align()) {
            // SAFETY: `ptr` came from `map_noreserve(layout.size())` (same layout ⇒ same branch).
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from System with this layout.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if !is_huge(layout.size(), layout.align()) && !is_huge(new_size, layout.align()) {
            // SAFETY: both old and new blocks belong to System.
            return unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { std::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: fresh allocation through our own `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least min(old, new) bytes long.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` was allocated by us with `layout`.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

/// Set a listening socket's accept-queue length (`listen(2)` again on a socket that listens
/// already: Linux takes the new backlog). The standard library listens with 128, which a
/// burst of connections overflows while the accept thread waits for a core: the SYNs past it
/// are dropped and their clients retry after 1 s, then 3 s (the kernel caps `backlog` at
/// `net.core.somaxconn`).
pub fn set_listen_backlog(listener: &std::net::TcpListener, backlog: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `listen` takes a descriptor and an int; the descriptor is the listener's own,
    // open for the duration of the call (borrowed), and no memory is passed.
    let r = unsafe { libc::listen(listener.as_raw_fd(), backlog) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A zero-filled buffer of `len` bytes, or `None` when the memory cannot be had (an
/// address-space or memory limit): `vec![0u8; len]` would abort the process instead. Large
/// buffers come from `alloc_zeroed` (calloc / fresh mmap: pages are touched only as they are
/// filled), as `vec![0u8; len]` does.
pub fn try_zeroed_vec(len: usize) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(len).ok()?;
    // SAFETY: `layout` has a non-zero size (checked above).
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` was allocated by the global allocator with exactly `layout` (size `len`,
    // align 1, as `Vec<u8>` with capacity `len` uses), and all `len` bytes are initialised
    // (zeroed); ownership passes to the Vec, which frees it with the same layout.
    Some(unsafe { Vec::from_raw_parts(p, len, len) })
}

/// The unit tests below need the allocator installed (only the test binary; a library never does).
#[cfg(test)]
#[global_allocator]
static GLOBAL: GuardedAlloc = GuardedAlloc;

#[cfg(test)]
mod tests {
    #[test]
    fn huge_wire_sized_reservation_does_not_abort() {
        // What the protocol crate does with a hostile array count: ~150 GB of capacity.
        let mut v: Vec<[u8; 72]> = Vec::with_capacity(i32::MAX as usize);
        assert!(v.capacity() >= i32::MAX as usize);
        for i in 0..1000u32 {
            v.push([i as u8; 72]);
        }
        assert_eq!(v[999][0], (999u32 & 0xff) as u8);
        drop(v);
        let z = vec![0u8; 2 << 30]; // zeroed huge block: untouched pages read as zero
        assert_eq!(z[(1 << 30) + 12345], 0);
    }

    #[test]
    fn write_sync_note_as_syscalls_writes_syncs_and_notes() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.path().join("seg")).unwrap();
        let n = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.path().join("note")).unwrap();
        // The switch is process-wide; the other tests here do not write files.
        super::set_sync_syscalls(true);
        let mut called = 0;
        let all = super::uring_write_sync_note(f.as_raw_fd(), b"hello, zeros", 5, 3, Some((n.as_raw_fd(), b"rp", 1)), &mut || called += 1);
        super::set_sync_syscalls(false);
        assert!(all.unwrap(), "every byte written");
        assert_eq!(called, 1, "`written` once");
        assert_eq!(std::fs::read(dir.path().join("seg")).unwrap(), b"\0\0\0hello, zeros");
        assert_eq!(std::fs::read(dir.path().join("note")).unwrap(), b"\0rp");
    }
}
