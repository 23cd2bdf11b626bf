//! Disk work done outside the locks produce and fetch need (issue 17):
//! * CreateTopics does its file creations and fsyncs without the manager's `topics` lock: while
//!   a creation is held inside a directory fsync, appends and reads on another topic, and topic
//!   lookups, go on; the new topic becomes visible only once it is durable.
//! * Retention and DeleteRecords unlink segments without the partition's state lock: while one
//!   is held inside an unlink, appends and reads on that partition go on.
//! * A read does its disk reads (batch headers) without the state lock: while one is held
//!   inside a read of a segment file, appends to that partition go on.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use engine::io::{Io, IoFile, SimIo};
use engine::log::{Durability, LogManager};

/// SimIo whose `sync_dir` of `data` (or, with `park_unlink`, whose removal of a `.log` file)
/// parks (while `armed`) until released.
#[derive(Debug)]
struct ParkingIo {
    inner: SimIo,
    data: std::path::PathBuf,
    park_unlink: bool,
    /// Park in `read_at` of `.log` files instead.
    park_reads: std::sync::OnceLock<Arc<ParkingIo>>,
    armed: AtomicBool,
    parked: Mutex<bool>,
    release: Mutex<bool>,
    cv: Condvar,
}

impl Io for ParkingIo {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn IoFile>> {
        let f = self.inner.open(path, create)?;
        match self.park_reads.get() {
            Some(me) if path.extension().is_some_and(|e| e == "log") => Ok(Arc::new(ParkingFile { inner: f, io: me.clone() })),
            _ => Ok(f),
        }
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        if self.park_unlink && path.extension().is_some_and(|e| e == "log") {
            self.park();
        }
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        if !self.park_unlink && path == self.data {
            self.park();
        }
        self.inner.sync_dir(path)
    }
}

/// A segment file whose `read_at` parks while its `ParkingIo` is armed.
#[derive(Debug)]
struct ParkingFile {
    inner: Arc<dyn IoFile>,
    io: Arc<ParkingIo>,
}

impl IoFile for ParkingFile {
    fn write_at(&self, buf: &[u8], pos: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, pos)
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        self.io.park();
        self.inner.read_at(buf, pos)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.raw_fd()
    }
    fn write_sync_note(
        &self,
        buf: &[u8],
        must: usize,
        pos: u64,
        note: Option<(&dyn IoFile, &[u8], u64)>,
        written: &mut dyn FnMut(),
    ) -> std::io::Result<bool> {
        self.inner.write_sync_note(buf, must, pos, note, written)
    }
    fn reserve(&self, pos: u64, len: u64) -> std::io::Result<()> {
        self.inner.reserve(pos, len)
    }
}

impl ParkingIo {
    fn new(data: &Path, park_unlink: bool) -> Arc<ParkingIo> {
        Arc::new(ParkingIo {
            inner: SimIo::new(),
            data: data.to_path_buf(),
            park_unlink,
            park_reads: std::sync::OnceLock::new(),
            armed: AtomicBool::new(false),
            parked: Mutex::new(false),
            release: Mutex::new(false),
            cv: Condvar::new(),
        })
    }
    fn park(&self) {
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        *self.parked.lock().unwrap() = true;
        self.cv.notify_all();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut released = self.release.lock().unwrap();
        while !*released && Instant::now() < deadline {
            released = self.cv.wait_timeout(released, Duration::from_millis(100)).unwrap().0;
        }
    }
    /// Wait (bounded) until an operation is parked.
    fn wait_parked(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut parked = self.parked.lock().unwrap();
        while !*parked {
            assert!(Instant::now() < deadline, "{what} never reached the parked operation");
            parked = self.cv.wait_timeout(parked, Duration::from_millis(100)).unwrap().0;
        }
    }
    fn unpark(&self) {
        *self.release.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

#[test]
fn create_topic_does_not_hold_the_topics_lock_while_it_fsyncs() {
    let data = Path::new("/data");
    let io = ParkingIo::new(data, false);
    let logs = LogManager::open(data, io.clone(), small_cfg(Durability::Group, 1 << 20)).unwrap();
    logs.create_topic("busy", 1, None).unwrap();
    let busy = logs.partition("busy", 0).unwrap();
    busy.append_durable(&mut tagged_batch(0, 2, 20, 1)).unwrap();

    io.armed.store(true, Ordering::SeqCst);
    let creator = {
        let logs = logs.clone();
        std::thread::spawn(move || logs.create_topic("new", 3, None).map(|t| t.len()))
    };
    io.wait_parked("create_topic");
    // Meanwhile, on another thread with a bounded wait: lookups, an append and a read on the
    // other topic complete; the new topic is not visible yet.
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            let p = logs.partition("busy", 0).expect("busy is listed");
            let info = p.append_durable(&mut tagged_batch(1, 2, 20, 1)).unwrap();
            let read = read_all(&p).len();
            let names = logs.topic_names();
            let _ = tx.send((info.base_offset, read, names));
        });
    }
    let got = rx.recv_timeout(Duration::from_secs(30));
    assert!(!creator.is_finished(), "the creation finished early: the probe proves nothing");
    io.unpark();
    let (base, read, names) = got.expect("produce/fetch on another topic waited for CreateTopics' fsync");
    assert_eq!((base, read), (2, 2));
    assert!(!names.contains(&"new".to_string()), "a topic was visible before it was durable: {names:?}");
    assert_eq!(creator.join().unwrap().unwrap(), 3);
    assert_eq!(logs.topic("new").unwrap().len(), 3);
    // A second creation of the same name is refused.
    io.armed.store(false, Ordering::SeqCst);
    assert!(logs.create_topic("new", 1, None).is_err());
}

/// Retention (`retention`) or DeleteRecords parked inside the unlink of a segment: appends and
/// reads on the same partition complete meanwhile.
fn unlink_outside_the_state_lock(retention: bool) {
    let dir = Path::new("/data/t-0");
    let io = ParkingIo::new(dir, true);
    let mut cfg = small_cfg(Durability::Group, 1024);
    if retention {
        cfg.retention_bytes_max = Some(2048);
    }
    let dyn_io: Arc<dyn Io> = io.clone();
    let p = open(&dyn_io, dir, &cfg).unwrap();
    for i in 0..30 {
        p.append_durable(&mut tagged_batch(i, 3, 40, 1)).unwrap();
    }
    assert!(p.segment_count() > 3);
    io.armed.store(true, Ordering::SeqCst);
    let remover = {
        let p = p.clone();
        std::thread::spawn(move || if retention { p.enforce_retention().unwrap() as u64 } else { p.delete_records(40).unwrap() })
    };
    io.wait_parked(if retention { "retention" } else { "delete_records" });
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let p = p.clone();
        std::thread::spawn(move || {
            let info = p.append_durable(&mut tagged_batch(100, 2, 20, 1)).unwrap();
            let read = read_all(&p).len();
            let _ = tx.send((info.next_offset, read));
        });
    }
    let got = rx.recv_timeout(Duration::from_secs(30));
    assert!(!remover.is_finished(), "the removal finished early: the probe proves nothing");
    io.unpark();
    let (next, read) = got.expect("an append or read waited for a segment unlink");
    assert_eq!(next, 92);
    assert!(read > 0);
    let removed = remover.join().unwrap();
    if retention {
        assert!(removed >= 1);
    } else {
        assert_eq!(removed, 40);
        assert_eq!(p.log_start_offset(), 40);
    }
}

#[test]
fn retention_unlinks_outside_the_state_lock() {
    unlink_outside_the_state_lock(true);
}

#[test]
fn delete_records_unlinks_outside_the_state_lock() {
    unlink_outside_the_state_lock(false);
}

#[test]
fn a_read_does_its_disk_reads_outside_the_state_lock() {
    let dir = Path::new("/data/t-0");
    let io = ParkingIo::new(dir, false);
    io.park_reads.set(io.clone()).unwrap();
    let cfg = small_cfg(Durability::Group, 1 << 20);
    let dyn_io: Arc<dyn Io> = io.clone();
    let p = open(&dyn_io, dir, &cfg).unwrap();
    for i in 0..30 {
        p.append_durable(&mut tagged_batch(i, 3, 40, 1)).unwrap();
    }
    io.armed.store(true, Ordering::SeqCst);
    let reader = {
        let p = p.clone();
        std::thread::spawn(move || p.read(40, 1 << 20, true).map(|s| s.bytes()))
    };
    io.wait_parked("read");
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let p = p.clone();
        std::thread::spawn(move || {
            let _ = tx.send(p.append_durable(&mut tagged_batch(100, 2, 20, 1)).map(|i| i.base_offset).ok());
        });
    }
    let got = rx.recv_timeout(Duration::from_secs(30));
    assert!(!reader.is_finished(), "the read finished early: the probe proves nothing");
    io.unpark();
    assert_eq!(got.expect("an append waited for a read's disk I/O"), Some(90));
    assert!(reader.join().unwrap().unwrap() > 0);
}
