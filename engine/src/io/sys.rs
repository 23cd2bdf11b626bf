//! The workspace's only `unsafe` code: io_uring submissions, `sendfile`, `send(MSG_MORE)`.
//!
//! Each thread that writes owns a small io_uring (created lazily). A submission is one SQE
//! followed by `submit_and_wait(1)`: the caller blocks like it would on `pwrite`, but the kernel
//! path is io_uring's, and group commit keeps at most one fdatasync in flight per log.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{opcode, types, IoUring};

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

static URING_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Run one SQE on this thread's ring and return the CQE result.
fn run_one(entry: io_uring::squeue::Entry) -> Option<io::Result<i32>> {
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
        // SAFETY: the entry's buffer pointer (if any) refers to memory borrowed by our caller for
        // the whole duration of this function, and we wait for the completion before returning,
        // so the kernel never touches the buffer after it is released. The queue has 8 slots and
        // we only ever have one entry in flight per ring, so the push cannot overflow.
        let pushed = unsafe { ring.submission().push(&entry) };
        if pushed.is_err() {
            return Some(Err(io::Error::other("io_uring submission queue full")));
        }
        loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Some(Err(e)),
            }
            if let Some(cqe) = ring.completion().next() {
                let res = cqe.result();
                return Some(if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res) });
            }
        }
    })
}

/// Positional write through io_uring. Returns the number of bytes written (may be short).
pub fn uring_write(fd: RawFd, buf: &[u8], pos: u64) -> io::Result<usize> {
    let len = buf.len().min(1 << 30) as u32;
    let entry = opcode::Write::new(types::Fd(fd), buf.as_ptr(), len).offset(pos).build();
    match run_one(entry) {
        Some(r) => r.map(|n| n as usize),
        None => {
            // SAFETY: `buf` is a valid readable slice of at least `len` bytes for the call.
            let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), len as usize, pos as libc::off_t) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }
    }
}

/// fdatasync through io_uring. A negative completion is returned as the error (never retried).
pub fn uring_fdatasync(fd: RawFd) -> io::Result<()> {
    let entry = opcode::Fsync::new(types::Fd(fd)).flags(types::FsyncFlags::DATASYNC).build();
    match run_one(entry) {
        Some(r) => r.map(|_| ()),
        None => {
            // SAFETY: fdatasync takes only a descriptor; an invalid one yields EBADF, not UB.
            let rc = unsafe { libc::fdatasync(fd) };
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
