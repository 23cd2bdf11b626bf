//! The hand-framed Fetch response (versions 4–12), so large record ranges go from the segment
//! file to the socket with sendfile and never through user space. Small ranges (below
//! [`CopyPolicy::copy_below`], up to [`CopyPolicy::copy_max`] bytes per response) are copied
//! from the page cache into the frame's bytes instead (`IoFile::read_cached`, which never waits
//! for the disk; a miss stays a sendfile range), so a response over many partitions with a few
//! small batches each goes out in one `send` rather than two syscalls per partition.
//!
//! ```text
//! size:i32 · correlation_id:i32 · [tags v12] · throttle_time_ms:i32 · error_code:i16 (v7+)
//! · session_id:i32 (v7+) · topics:array{
//!     name:string · partitions:array{
//!       partition_index:i32 · error_code:i16 · high_watermark:i64 · last_stable_offset:i64
//!       · log_start_offset:i64 (v5+) · aborted_transactions:nullable array{producer_id:i64
//!       · first_offset:i64 · [tags v12]} (null for read_uncommitted)
//!       · preferred_read_replica:i32 (v11+) · records:nullable bytes ← sendfile'd ranges
//!       · [tags v12] }
//!     · [tags v12] }
//! · [tags v12]
//! ```
//! v12 is flexible: arrays and strings are compact (uvarint length + 1), tagged fields are one
//! uvarint 0 (no tags). Every size is known before the first byte is sent.

use std::io;
use std::os::fd::RawFd;

use super::put_uvarint;
use zl_io::sys;
use zl_log::FileRange;

/// Largest Fetch version framed here.
pub const FETCH_VERSION_MAX: i16 = 12;
/// Smallest Fetch version framed here.
pub const FETCH_VERSION_MIN: i16 = 4;

/// One partition's part of the response.
#[derive(Debug, Clone)]
pub struct PartitionData {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    /// The last stable offset (`-1`: the high watermark is answered).
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// read_committed: (producer id, first offset) of the aborted transactions in the range
    /// returned; `None` = null (read_uncommitted).
    pub aborted: Option<Vec<(i64, i64)>>,
    /// Whole batches, one range per segment touched. Empty: no records.
    pub records: Vec<FileRange>,
}

impl PartitionData {
    pub fn records_bytes(&self) -> u64 {
        self.records.iter().map(|r| r.len).sum()
    }
}

#[derive(Debug, Clone)]
pub struct TopicData {
    pub name: String,
    pub partitions: Vec<PartitionData>,
}

/// Which record ranges [`build_with`] copies into the frame's bytes instead of sendfile'ing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyPolicy {
    /// A range shorter than this is copied (if it is in the page cache); longer ones are
    /// sendfile'd (zero-copy stays for what it pays for).
    pub copy_below: u64,
    /// At most this many record bytes are copied per response (memory per connection stays
    /// bounded); the ranges after it are sendfile'd.
    pub copy_max: u64,
}

impl CopyPolicy {
    /// Every range sendfile'd (the frame as before copying existed).
    pub const NONE: CopyPolicy = CopyPolicy { copy_below: 0, copy_max: 0 };
    /// What [`build`] uses: ranges under 32 KiB copied, at most 1 MiB per response. Chosen by
    /// measurement (results/net/2026-12-07.md, section "c (again)"): below it a sendfile costs
    /// more than the copy, and at 1,000 partitions with ~150-byte batches every range is one.
    pub const DEFAULT: CopyPolicy = CopyPolicy { copy_below: 32 << 10, copy_max: 1 << 20 };
}

/// A piece of the response on the wire: bytes built here, or a file range sent with sendfile.
#[derive(Debug)]
pub enum Piece {
    Bytes(Vec<u8>),
    File(FileRange),
}

/// A complete Fetch response frame (size prefix included), ready to send.
#[derive(Debug)]
pub struct FetchFrame {
    pub pieces: Vec<Piece>,
    /// Bytes of the whole frame including the 4-byte size prefix.
    pub total_bytes: usize,
    /// Record bytes (sum of the record ranges, copied or not).
    pub records_bytes: u64,
}

struct Builder {
    flexible: bool,
    pieces: Vec<Piece>,
    cur: Vec<u8>,
    total: usize,
    policy: CopyPolicy,
    /// Record bytes copied into `cur` so far (bounded by `policy.copy_max`).
    copied: u64,
}

impl Builder {
    fn put(&mut self, b: &[u8]) {
        self.cur.extend_from_slice(b);
    }
    fn i16(&mut self, v: i16) {
        self.put(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.put(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.put(&v.to_be_bytes());
    }
    fn array_len(&mut self, n: usize) {
        if self.flexible {
            put_uvarint(&mut self.cur, n as u64 + 1);
        } else {
            self.i32(n as i32);
        }
    }
    fn null_array(&mut self) {
        if self.flexible {
            put_uvarint(&mut self.cur, 0);
        } else {
            self.i32(-1);
        }
    }
    fn string(&mut self, s: &str) {
        if self.flexible {
            put_uvarint(&mut self.cur, s.len() as u64 + 1);
        } else {
            self.i16(s.len() as i16);
        }
        self.put(s.as_bytes());
    }
    fn bytes_len(&mut self, n: u64) {
        if self.flexible {
            put_uvarint(&mut self.cur, n + 1);
        } else {
            self.i32(n as i32);
        }
    }
    fn no_tags(&mut self) {
        if self.flexible {
            self.cur.push(0);
        }
    }
    /// A record range: copied into the bytes when small, in the page cache and within the
    /// copy budget (a partial hit copies the cached head), else a sendfile piece.
    fn range(&mut self, mut r: FileRange) {
        if r.len < self.policy.copy_below && self.copied + r.len <= self.policy.copy_max {
            let start = self.cur.len();
            self.cur.resize(start + r.len as usize, 0);
            let got = match r.file.read_cached(&mut self.cur[start..], r.position) {
                Ok(Some(n)) => n.min(r.len as usize),
                // A miss or a read error: the sendfile piece below reads it (or fails) as before.
                Ok(None) | Err(_) => 0,
            };
            self.cur.truncate(start + got);
            self.copied += got as u64;
            r.position += got as u64;
            r.len -= got as u64;
            if r.len == 0 {
                return;
            }
        }
        self.file(r);
    }
    fn file(&mut self, r: FileRange) {
        if !self.cur.is_empty() {
            self.total += self.cur.len();
            self.pieces.push(Piece::Bytes(std::mem::take(&mut self.cur)));
        }
        self.total += r.len as usize;
        self.pieces.push(Piece::File(r));
    }
    fn finish(mut self) -> (Vec<Piece>, usize) {
        if !self.cur.is_empty() {
            self.total += self.cur.len();
            self.pieces.push(Piece::Bytes(self.cur));
        }
        (self.pieces, self.total)
    }
}

/// Frame a Fetch response with [`CopyPolicy::DEFAULT`]. `version` must be within 4..=12 (the
/// caller checks). Runs on a network thread: a copy only ever reads the page cache.
pub fn build(correlation_id: i32, version: i16, error_code: i16, topics: Vec<TopicData>) -> FetchFrame {
    build_with(correlation_id, version, error_code, topics, CopyPolicy::DEFAULT)
}

/// [`build`] with an explicit [`CopyPolicy`].
pub fn build_with(correlation_id: i32, version: i16, error_code: i16, topics: Vec<TopicData>, policy: CopyPolicy) -> FetchFrame {
    debug_assert!((FETCH_VERSION_MIN..=FETCH_VERSION_MAX).contains(&version));
    let flexible = version >= 12;
    let mut b = Builder { flexible, pieces: Vec::new(), cur: Vec::with_capacity(256), total: 0, policy, copied: 0 };
    b.i32(0); // size placeholder, patched below
    b.i32(correlation_id);
    b.no_tags(); // response header v1
    b.i32(0); // throttle_time_ms
    if version >= 7 {
        b.i16(error_code);
        b.i32(0); // session_id: no fetch sessions (every request is a full fetch)
    }
    let mut records_bytes = 0u64;
    b.array_len(topics.len());
    for t in topics {
        b.string(&t.name);
        b.array_len(t.partitions.len());
        for p in t.partitions {
            b.i32(p.partition);
            b.i16(p.error_code);
            b.i64(p.high_watermark);
            b.i64(if p.last_stable_offset < 0 { p.high_watermark } else { p.last_stable_offset });
            if version >= 5 {
                b.i64(p.log_start_offset);
            }
            match &p.aborted {
                None => b.null_array(),
                Some(list) => {
                    b.array_len(list.len());
                    for &(producer_id, first_offset) in list {
                        b.i64(producer_id);
                        b.i64(first_offset);
                        b.no_tags();
                    }
                }
            }
            if version >= 11 {
                b.i32(-1); // preferred_read_replica
            }
            let n = p.records_bytes();
            records_bytes += n;
            b.bytes_len(n);
            for r in p.records {
                if r.len > 0 {
                    b.range(r);
                }
            }
            b.no_tags();
        }
        b.no_tags();
    }
    b.no_tags();
    let (mut pieces, total) = b.finish();
    let size = (total - 4) as i32;
    if let Some(Piece::Bytes(first)) = pieces.first_mut() {
        first[0..4].copy_from_slice(&size.to_be_bytes());
    }
    FetchFrame { pieces, total_bytes: total, records_bytes }
}

impl FetchFrame {
    /// Send the frame: built bytes with `send(MSG_MORE)`, record ranges with sendfile (or a
    /// `read_at` copy when the file has no descriptor, as with SimIo).
    pub fn send(&self, sock_fd: RawFd) -> io::Result<()> {
        let n = self.pieces.len();
        for (i, piece) in self.pieces.iter().enumerate() {
            let more = i + 1 < n;
            match piece {
                Piece::Bytes(b) => sys::send_all(sock_fd, b, more)?,
                Piece::File(r) => match r.file.raw_fd() {
                    Some(fd) => sys::sendfile_all(sock_fd, fd, r.position, r.len as usize)?,
                    None => {
                        let mut buf = vec![0u8; (r.len as usize).min(256 << 10)];
                        let mut at = 0u64;
                        while at < r.len {
                            let len = ((r.len - at) as usize).min(buf.len());
                            r.file.read_exact_at(&mut buf[..len], r.position + at)?;
                            sys::send_all(sock_fd, &buf[..len], more || at + (len as u64) < r.len)?;
                            at += len as u64;
                        }
                    }
                },
            }
        }
        Ok(())
    }

    /// Whether every record range has a file descriptor (can go out with sendfile); a frame
    /// over files without one (SimIo) is sent as [`FetchFrame::to_vec`]'s copy instead.
    pub fn zero_copy(&self) -> bool {
        self.pieces.iter().all(|p| match p {
            Piece::Bytes(_) => true,
            Piece::File(r) => r.file.raw_fd().is_some(),
        })
    }

    /// Send on a non-blocking socket from position (`piece`, `at` bytes into it) as far as
    /// the socket takes, advancing the position: `Ok(true)` once the whole frame is sent,
    /// `Ok(false)` when the socket is full (resume when it is writable). Requires
    /// [`FetchFrame::zero_copy`].
    pub fn send_from(&self, sock_fd: RawFd, piece: &mut usize, at: &mut u64) -> io::Result<bool> {
        let n = self.pieces.len();
        while *piece < n {
            let more = *piece + 1 < n;
            let (len, r) = match &self.pieces[*piece] {
                Piece::Bytes(b) => (b.len() as u64, sys::send_some(sock_fd, &b[*at as usize..], more)),
                Piece::File(r) => {
                    let Some(fd) = r.file.raw_fd() else {
                        return Err(io::Error::other("record range without a file descriptor"));
                    };
                    let left = (r.len - *at) as usize;
                    (r.len, sys::sendfile_some(sock_fd, fd, r.position + *at, left))
                }
            };
            if *at >= len {
                *piece += 1;
                *at = 0;
                continue;
            }
            match r {
                Ok(sent) => {
                    *at += sent as u64;
                    if *at >= len {
                        *piece += 1;
                        *at = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The whole frame copied into memory (tests and tools).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.total_bytes);
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::File(r) => {
                    let start = out.len();
                    out.resize(start + r.len as usize, 0);
                    r.file.read_exact_at(&mut out[start..], r.position)?;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zl_io::{Io, SimIo};
    use bytes::Bytes;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    use std::path::Path;
    use std::sync::Arc;

    #[test]
    fn hand_framed_fetch_decodes_with_kafka_protocol_at_every_version() {
        let io = SimIo::new();
        let f = io.open(Path::new("/seg"), true).unwrap();
        let batch = zl_record::build::simple_batch(3, 10, 1000);
        f.write_at(b"xxxx", 0).unwrap();
        f.write_at(&batch, 4).unwrap();
        f.write_at(&batch, 4 + batch.len() as u64).unwrap();
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            let ranges = vec![
                FileRange { file: f.clone(), position: 4, len: batch.len() as u64 },
                FileRange { file: f.clone(), position: 4 + batch.len() as u64, len: batch.len() as u64 },
            ];
            let topics = vec![
                TopicData {
                    name: "t".into(),
                    partitions: vec![
                        PartitionData { partition: 0, error_code: 0, high_watermark: 6, last_stable_offset: -1, log_start_offset: 0, aborted: None, records: ranges },
                        PartitionData { partition: 1, error_code: 1, high_watermark: 0, last_stable_offset: -1, log_start_offset: 0, aborted: None, records: vec![] },
                    ],
                },
                TopicData { name: "other".into(), partitions: vec![] },
            ];
            let frame = build(77, version, 0, topics);
            let bytes = frame.to_vec().unwrap();
            assert_eq!(bytes.len(), frame.total_bytes);
            let size = i32::from_be_bytes(bytes[0..4].try_into().unwrap());
            assert_eq!(size as usize, bytes.len() - 4);
            let mut body = Bytes::from(bytes[4..].to_vec());
            let hv = if version >= 12 { 1 } else { 0 };
            let h = ResponseHeader::decode(&mut body, hv).unwrap();
            assert_eq!(h.correlation_id, 77);
            let r = FetchResponse::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}: trailing bytes");
            assert_eq!(r.responses.len(), 2);
            let p0 = &r.responses[0].partitions[0];
            assert_eq!(p0.high_watermark, 6);
            let recs = p0.records.as_ref().unwrap();
            assert_eq!(recs.len(), batch.len() * 2);
            assert_eq!(&recs[..batch.len()], &batch[..]);
            assert_eq!(r.responses[0].partitions[1].error_code, 1);
            assert_eq!(r.responses[0].partitions[1].records.as_ref().map(|b| b.len()), Some(0));
        }
    }

    fn sent_bytes(frame: &FetchFrame) -> Vec<u8> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let total = frame.total_bytes;
        let reader = std::thread::spawn(move || {
            let mut c = client;
            let mut v = vec![0u8; total];
            c.read_exact(&mut v).unwrap();
            v
        });
        frame.send(server.as_raw_fd()).unwrap();
        reader.join().unwrap()
    }

    fn frame_over(f: &Arc<dyn zl_io::IoFile>, batch: &[u8]) -> FetchFrame {
        let records = vec![
            FileRange { file: f.clone(), position: 3, len: batch.len() as u64 },
            FileRange { file: f.clone(), position: 3 + batch.len() as u64, len: batch.len() as u64 },
        ];
        let p = PartitionData { partition: 0, error_code: 0, high_watermark: 2, last_stable_offset: -1, log_start_offset: 0, aborted: None, records };
        build(9, 12, 0, vec![TopicData { name: "t".into(), partitions: vec![p] }])
    }

    #[test]
    fn send_matches_the_framed_bytes_with_sendfile_and_with_read_at_copies() {
        let batch = zl_record::build::simple_batch(50, 100, 7);
        // Real file: records go out with sendfile.
        let dir = tempfile::tempdir().unwrap();
        let real = zl_io::UringIo.open(&dir.path().join("seg"), true).unwrap();
        // Simulated file: no descriptor, copied with read_at.
        let sim = SimIo::new().open(Path::new("/seg"), true).unwrap();
        for f in [real, sim] {
            f.write_at(b"abc", 0).unwrap();
            f.write_at(&batch, 3).unwrap();
            f.write_at(&batch, 3 + batch.len() as u64).unwrap();
            let frame = frame_over(&f, &batch);
            assert_eq!(sent_bytes(&frame), frame.to_vec().unwrap(), "raw fd: {:?}", f.raw_fd().is_some());
        }
    }

    /// The frame sent from a non-blocking socket with `send_from` (as the network threads do),
    /// resuming whenever the socket is full; bounded by a deadline.
    fn sent_bytes_nonblocking(frame: &FetchFrame) -> Vec<u8> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let total = frame.total_bytes;
        let reader = std::thread::spawn(move || {
            let mut c = client;
            let mut v = vec![0u8; total];
            c.read_exact(&mut v).unwrap();
            v
        });
        let (mut piece, mut at) = (0usize, 0u64);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !frame.send_from(server.as_raw_fd(), &mut piece, &mut at).unwrap() {
            assert!(std::time::Instant::now() < deadline, "send_from did not finish in 30 s");
            std::thread::yield_now();
        }
        reader.join().unwrap()
    }

    /// Record bytes that went into the frame's bytes (not sendfile'd).
    fn copied(frame: &FetchFrame) -> u64 {
        let files: u64 = frame.pieces.iter().map(|p| if let Piece::File(r) = p { r.len } else { 0 }).sum();
        frame.records_bytes - files
    }

    /// `n` partitions over one real segment file, partition i holding `sizes[i % len]` bytes of
    /// batches (whole batches, back to back).
    fn mixed_topics(f: &Arc<dyn zl_io::IoFile>, n: usize, sizes: &[usize]) -> Vec<TopicData> {
        let mut pos = 0u64;
        let mut parts = Vec::new();
        for i in 0..n {
            let want = sizes[i % sizes.len()];
            let batch = zl_record::build::simple_batch((want / 120).max(1), 100, i as i64);
            f.write_at(&batch, pos).unwrap();
            parts.push(PartitionData {
                partition: i as i32,
                error_code: 0,
                high_watermark: 1,
                last_stable_offset: -1,
                log_start_offset: 0,
                aborted: None,
                records: vec![FileRange { file: f.clone(), position: pos, len: batch.len() as u64 }],
            });
            pos += batch.len() as u64;
        }
        vec![TopicData { name: "t".into(), partitions: parts }]
    }

    #[test]
    fn copied_small_ranges_send_the_same_bytes_as_all_sendfile_and_large_ranges_stay_sendfile() {
        let dir = tempfile::tempdir().unwrap();
        let f = zl_io::UringIo.open(&dir.path().join("seg"), true).unwrap();
        // Small (~150 B, ~2 KiB) and large (~200 KiB) ranges interleaved.
        let topics = mixed_topics(&f, 40, &[150, 2_000, 150, 200_000]);
        for version in [4, 11, 12] {
            let all_sendfile = build_with(5, version, 0, topics.clone(), CopyPolicy::NONE);
            let copying = build(5, version, 0, topics.clone());
            assert_eq!(copying.total_bytes, all_sendfile.total_bytes);
            assert_eq!(copying.records_bytes, all_sendfile.records_bytes);
            assert_eq!(copied(&all_sendfile), 0);
            // Every large range is still a file piece, whole; every small one was copied.
            let large: Vec<u64> = topics[0].partitions.iter().map(|p| p.records_bytes()).filter(|&n| n >= CopyPolicy::DEFAULT.copy_below).collect();
            let files: Vec<u64> = copying.pieces.iter().filter_map(|p| if let Piece::File(r) = p { Some(r.len) } else { None }).collect();
            assert_eq!(files, large, "v{version}: the file pieces are exactly the large ranges");
            assert_eq!(copied(&copying), copying.records_bytes - large.iter().sum::<u64>());
            // Between two large ranges the small ones and the headers are one piece.
            assert!(copying.pieces.len() <= 2 * large.len() + 1, "v{version}: {} pieces", copying.pieces.len());
            let want = all_sendfile.to_vec().unwrap();
            assert_eq!(copying.to_vec().unwrap(), want);
            assert_eq!(sent_bytes(&all_sendfile), want, "v{version}: blocking send, all sendfile");
            assert_eq!(sent_bytes(&copying), want, "v{version}: blocking send, copying");
            assert_eq!(sent_bytes_nonblocking(&copying), want, "v{version}: send_from, copying");
            assert_eq!(sent_bytes_nonblocking(&all_sendfile), want, "v{version}: send_from, all sendfile");
        }
    }

    #[test]
    fn a_response_of_only_small_ranges_is_one_piece() {
        let dir = tempfile::tempdir().unwrap();
        let f = zl_io::UringIo.open(&dir.path().join("seg"), true).unwrap();
        let topics = mixed_topics(&f, 1_000, &[150]);
        let frame = build(1, 12, 0, topics.clone());
        assert_eq!(frame.pieces.len(), 1);
        assert_eq!(copied(&frame), frame.records_bytes);
        let want = build_with(1, 12, 0, topics, CopyPolicy::NONE).to_vec().unwrap();
        assert_eq!(sent_bytes_nonblocking(&frame), want);
    }

    #[test]
    fn copied_bytes_per_response_stay_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let f = zl_io::UringIo.open(&dir.path().join("seg"), true).unwrap();
        // 200 partitions of ~20 KiB: ~4 MiB of small ranges, four times the bound.
        let topics = mixed_topics(&f, 200, &[20_000]);
        let policy = CopyPolicy::DEFAULT;
        let frame = build_with(1, 12, 0, topics.clone(), policy);
        assert!(frame.records_bytes > 3 * policy.copy_max);
        let c = copied(&frame);
        assert!(c <= policy.copy_max, "copied {c} > {}", policy.copy_max);
        assert!(c + 20_000 * 2 > policy.copy_max, "copied {c}: the budget was used");
        let bytes: usize = frame.pieces.iter().map(|p| if let Piece::Bytes(b) = p { b.len() } else { 0 }).sum();
        assert!(bytes as u64 <= policy.copy_max + 64 * 1024, "{bytes} bytes held in memory");
        let want = build_with(1, 12, 0, topics.clone(), CopyPolicy::NONE).to_vec().unwrap();
        assert_eq!(sent_bytes(&frame), want);
        // A tighter bound is honoured too.
        let tight = CopyPolicy { copy_below: 32 << 10, copy_max: 50_000 };
        let frame = build_with(1, 12, 0, topics, tight);
        assert!(copied(&frame) <= 50_000 && copied(&frame) > 0);
        assert_eq!(sent_bytes(&frame), want);
    }

    #[test]
    fn a_page_cache_miss_stays_a_file_piece() {
        // SimIo's cold cache: read_cached finds nothing, so nothing is copied and the frame
        // reads the ranges when it is sent.
        let io = SimIo::new();
        let f = io.open(Path::new("/seg"), true).unwrap();
        let topics = mixed_topics(&f, 10, &[150]);
        io.set_cold_cache(true);
        let cold = build(1, 12, 0, topics.clone());
        assert_eq!(copied(&cold), 0);
        assert_eq!(cold.pieces.iter().filter(|p| matches!(p, Piece::File(_))).count(), 10);
        io.set_cold_cache(false);
        let warm = build(1, 12, 0, topics);
        assert_eq!(copied(&warm), warm.records_bytes);
        assert_eq!(cold.to_vec().unwrap(), warm.to_vec().unwrap());
    }
}
