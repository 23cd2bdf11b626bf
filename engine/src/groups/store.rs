//! Durable state of the group coordinator, kept in internal topics of the [`LogManager`].
//!
//! * `__consumer_offsets` (1 partition): committed offsets, one record per partition, in
//!   Kafka's own key/value layout (offset-commit key version 1, value version 3), so the log
//!   reads like Kafka's. The latest record for a key wins; a null value deletes.
//! * `__producer_ids` (1 partition): producer-id blocks. Each record's value is the (exclusive)
//!   end of a block of ids reserved before any id of it is handed out, so ids stay unique across
//!   restarts (a restart skips the rest of the last block).
//!
//! Both are appended with [`Partition::append_durable`], so they follow the log's durability
//! mode, and are read back in full when the coordinator starts.
//!
//! ```text
//! offset key   : i16 version=1 | str16 group | str16 topic | i32 partition
//! offset value : i16 version=3 | i64 offset | i32 leader_epoch | str16 metadata
//!                | i64 commit_timestamp
//! pid value    : i16 version=0 | i64 block_end
//! ```
//!
//! Architecture invariant: records are written uncompressed by this module only; restore skips
//! (and logs) anything it cannot parse rather than refusing to start.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::log::{now_ms, LogManager, Partition, TopicError};
use crate::record::{self, build};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
pub const PRODUCER_IDS_TOPIC: &str = "__producer_ids";

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;
const PID_VALUE_VERSION: i16 = 0;
/// Bytes read per step while restoring.
const RESTORE_READ_BYTES: u64 = 1 << 20;
/// Largest batch restore accepts (batch lengths are i32 on the wire).
const BATCH_BYTES_MAX: usize = i32::MAX as usize;

/// A committed offset as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// One partition's commit inside an OffsetCommit request.
#[derive(Debug, Clone)]
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub committed: Committed,
}

pub type GroupOffsets = HashMap<(String, i32), Committed>;

fn topic_err(e: TopicError) -> io::Error {
    match e {
        TopicError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Open (creating if needed) the single partition of an internal topic.
pub fn internal_partition(logs: &LogManager, name: &str) -> io::Result<Arc<Partition>> {
    logs.get_or_create(name, 1).map_err(topic_err)?;
    logs.partition(name, 0)
        .ok_or_else(|| io::Error::other(format!("internal topic {name} has no partition 0")))
}

fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            let n = s.len().min(i16::MAX as usize);
            out.extend_from_slice(&(n as i16).to_be_bytes());
            out.extend_from_slice(&s.as_bytes()[..n]);
        }
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + group.len() + topic.len());
    k.extend_from_slice(&OFFSET_KEY_VERSION.to_be_bytes());
    put_str(&mut k, Some(group));
    put_str(&mut k, Some(topic));
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub fn offset_value(c: &Committed) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    v.extend_from_slice(&OFFSET_VALUE_VERSION.to_be_bytes());
    v.extend_from_slice(&c.offset.to_be_bytes());
    v.extend_from_slice(&c.leader_epoch.to_be_bytes());
    put_str(&mut v, Some(c.metadata.as_deref().unwrap_or("")));
    v.extend_from_slice(&c.commit_timestamp_ms.to_be_bytes());
    v
}

/// Cursor over big-endian fields; every getter is bounds-checked.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes(b.try_into().expect("4")))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8).map(|b| i64::from_be_bytes(b.try_into().expect("8")))
    }
    fn str16(&mut self) -> Option<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Some(None);
        }
        let b = self.take(n as usize)?;
        Some(Some(String::from_utf8(b.to_vec()).ok()?))
    }
    fn varlong(&mut self) -> Option<i64> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let b = *self.take(1)?.first()?;
            z |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        None
    }
    /// A varint-length-prefixed byte string (-1 = null).
    fn var_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        let n = self.varlong()?;
        if n < 0 {
            return Some(None);
        }
        Some(Some(self.take(usize::try_from(n).ok()?)?))
    }
}

/// `(group, topic, partition)` of an offset-commit key; `None` for other key types.
pub fn parse_offset_key(k: &[u8]) -> Option<(String, String, i32)> {
    let mut c = Cur(k);
    let v = c.i16()?;
    if v != 0 && v != 1 {
        return None;
    }
    let g = c.str16()??;
    let t = c.str16()??;
    let p = c.i32()?;
    Some((g, t, p))
}

pub fn parse_offset_value(v: &[u8]) -> Option<Committed> {
    let mut c = Cur(v);
    let ver = c.i16()?;
    let offset = c.i64()?;
    let leader_epoch = if ver >= 3 { c.i32()? } else { -1 };
    let metadata = c.str16()?;
    let commit_timestamp_ms = c.i64()?;
    Some(Committed { offset, leader_epoch, metadata, commit_timestamp_ms })
}

/// Key/value pairs of the records of one uncompressed v2 batch (`None` if it cannot be parsed).
#[allow(clippy::type_complexity)]
pub fn batch_records(batch: &[u8]) -> Option<Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>> {
    let info = record::validate(batch, BATCH_BYTES_MAX).ok()?;
    if info.compression() != 0 || info.is_control() {
        return None;
    }
    let mut c = Cur(&batch[record::BATCH_HEADER_BYTES..info.size_bytes]);
    let mut out = Vec::with_capacity(info.record_count.max(0) as usize);
    for _ in 0..info.record_count {
        let len = c.varlong()?;
        let mut r = Cur(c.take(usize::try_from(len).ok()?)?);
        r.take(1)?; // attributes
        r.varlong()?; // timestamp delta
        r.varlong()?; // offset delta
        let key = r.var_bytes()?.map(<[u8]>::to_vec);
        let value = r.var_bytes()?.map(<[u8]>::to_vec);
        out.push((key, value));
    }
    Some(out)
}

/// Call `f(key, value)` for every record of `part` below its high watermark, in log order.
pub fn scan_records(part: &Partition, mut f: impl FnMut(Option<&[u8]>, Option<&[u8]>)) -> io::Result<()> {
    let mut next = part.log_start_offset() as i64;
    let hw = part.high_watermark() as i64;
    while next < hw {
        let buf = part.read_copy(next, RESTORE_READ_BYTES).map_err(|e| io::Error::other(e.to_string()))?;
        if buf.is_empty() {
            break;
        }
        let mut at = 0usize;
        let mut advanced = false;
        while at < buf.len() {
            let Ok(info) = record::parse_header(&buf[at..], BATCH_BYTES_MAX) else { break };
            match batch_records(&buf[at..at + info.size_bytes]) {
                Some(recs) => {
                    for (k, v) in &recs {
                        f(k.as_deref(), v.as_deref());
                    }
                }
                None => tracing::warn!(
                    topic = %part.topic, offset = info.base_offset,
                    "skipping unreadable batch in internal topic"
                ),
            }
            next = next.max(info.last_offset() + 1);
            advanced = true;
            at += info.size_bytes;
        }
        if !advanced {
            break;
        }
    }
    Ok(())
}

/// Offsets of every group, as of the end of `__consumer_offsets`.
pub fn restore_offsets(part: &Partition) -> io::Result<HashMap<String, GroupOffsets>> {
    let mut all: HashMap<String, GroupOffsets> = HashMap::new();
    scan_records(part, |k, v| {
        let Some((g, t, p)) = k.and_then(parse_offset_key) else { return };
        match v {
            None => {
                if let Some(m) = all.get_mut(&g) {
                    m.remove(&(t, p));
                }
            }
            Some(v) => {
                if let Some(c) = parse_offset_value(v) {
                    all.entry(g).or_default().insert((t, p), c);
                }
            }
        }
    })?;
    Ok(all)
}

/// Append one batch holding the commits of one OffsetCommit request (atomic: all or none).
/// Not yet durable: the caller waits with [`Partition::wait_durable`]`(info.next_offset)`.
pub fn append_commits(
    part: &Partition,
    group: &str,
    entries: &[CommitEntry],
) -> Result<crate::log::AppendInfo, crate::log::AppendError> {
    let keys: Vec<Vec<u8>> = entries.iter().map(|e| offset_key(group, &e.topic, e.partition)).collect();
    let values: Vec<Vec<u8>> = entries.iter().map(|e| offset_value(&e.committed)).collect();
    let recs: Vec<build::Rec<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| build::Rec { key: Some(k), value: Some(v), timestamp_delta: 0 })
        .collect();
    let mut batch = build::batch_with(&recs, now_ms(), -1, -1, -1);
    part.append(&mut batch)
}

/// End of the last reserved producer-id block (0 if none).
pub fn restore_pid_block_end(part: &Partition) -> io::Result<i64> {
    let mut end = 0i64;
    scan_records(part, |_, v| {
        let Some(v) = v else { return };
        let mut c = Cur(v);
        if c.i16() == Some(PID_VALUE_VERSION) {
            if let Some(e) = c.i64() {
                end = end.max(e);
            }
        }
    })?;
    Ok(end)
}

/// Durably reserve producer ids below `block_end`.
pub fn append_pid_block(part: &Partition, block_end: i64) -> Result<(), crate::log::AppendError> {
    let mut v = Vec::with_capacity(10);
    v.extend_from_slice(&PID_VALUE_VERSION.to_be_bytes());
    v.extend_from_slice(&block_end.to_be_bytes());
    let rec = build::Rec { key: Some(b"producer-id-block"), value: Some(&v), timestamp_delta: 0 };
    let mut batch = build::batch_with(&[rec], now_ms(), -1, -1, -1);
    part.append_durable(&mut batch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_key_and_value_round_trip() {
        let k = offset_key("g", "topic", 7);
        assert_eq!(parse_offset_key(&k), Some(("g".into(), "topic".into(), 7)));
        let c = Committed { offset: 42, leader_epoch: 3, metadata: Some("m".into()), commit_timestamp_ms: 9 };
        assert_eq!(parse_offset_value(&offset_value(&c)), Some(c));
        assert_eq!(parse_offset_key(&k[..k.len() - 1]), None);
    }

    #[test]
    fn batch_records_reads_what_build_writes() {
        let recs = [
            build::Rec { key: Some(b"k1"), value: Some(b"v1"), timestamp_delta: 0 },
            build::Rec { key: Some(b"k2"), value: None, timestamp_delta: 1 },
        ];
        let b = build::batch_with(&recs, 1, -1, -1, -1);
        let got = batch_records(&b).unwrap();
        assert_eq!(got, vec![(Some(b"k1".to_vec()), Some(b"v1".to_vec())), (Some(b"k2".to_vec()), None)]);
    }
}
