//! Durable state of the group coordinator, kept in internal topics of the [`LogManager`].
//!
//! * `__consumer_offsets` (1 partition): committed offsets, one record per partition, in
//!   Kafka's own key/value layout (offset-commit key version 1, value version 3), so the log
//!   reads like Kafka's. The latest record for a key wins; a null value deletes.
//!   Group metadata too (group-metadata key version 2, value version 3): written when a
//!   rebalance completes (SyncGroup of the leader: generation, protocol, leader and every
//!   member with its subscription and assignment) and when the group becomes Empty (a record
//!   with no members), so a restart restores each group as it was last Stable or Empty.
//! * `__producer_ids` (1 partition): producer-id blocks. Each record's value is the (exclusive)
//!   end of a block of ids reserved before any id of it is handed out, so ids stay unique across
//!   restarts (a restart skips the rest of the last block).
//!
//! Both are appended through the [`LogManager`]'s partitions, so they follow the log's durability
//! mode, and are read back in full when the coordinator starts.
//!
//! `__consumer_offsets` is a compacted topic (`cleanup.policy=compact`, as in Kafka): each
//! logical entry has one stable key (offset: group, topic, partition; group metadata: group),
//! every change is a put of that key and every deletion a tombstone (OffsetDelete,
//! DeleteGroups, a group left with no offsets), so the log cleaner keeps exactly the latest
//! state and a replay of the compacted log (latest record per key wins, a tombstone deletes)
//! rebuilds it. No record is ever rewritten to keep state alive: data directories written
//! before (whose "snapshots" were puts of the then-current values) replay the same way, and
//! the topic is switched to `cleanup.policy=compact` when the coordinator opens it.
//!
//! ```text
//! offset key   : i16 version=1 | str16 group | str16 topic | i32 partition
//! offset value : i16 version=3 | i64 offset | i32 leader_epoch | str16 metadata
//!                | i64 commit_timestamp
//! group key    : i16 version=2 | str16 group
//! group value  : i16 version=3 | str16 protocol_type | i32 generation | nstr16 protocol
//!                | nstr16 leader | i64 current_state_timestamp | i32 n | n × member
//! member       : str16 member_id | nstr16 group_instance_id | str16 client_id
//!                | str16 client_host | i32 rebalance_timeout | i32 session_timeout
//!                | bytes32 subscription | bytes32 assignment
//! pid value    : i16 version=0 | i64 block_end
//! ```
//!
//! Architecture invariant: records are written uncompressed by this module only; restore skips
//! (and logs) anything it cannot parse rather than refusing to start.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use zl_log::{now_ms, LogManager, Partition, TopicError};
use zl_record::{self as record, build};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
pub const PRODUCER_IDS_TOPIC: &str = "__producer_ids";

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_KEY_VERSION: i16 = 2;
/// Kafka's GroupMetadataValue v3 (the last non-flexible version; what Kafka writes since 2.3).
const GROUP_VALUE_VERSION: i16 = 3;
const PID_VALUE_VERSION: i16 = 0;
/// Longest group id: keys hold it as a str16, and a longer one would be cut, so two groups could
/// share a key (and compaction merge them). Longer ones are refused with INVALID_GROUP_ID.
pub const GROUP_ID_BYTES_MAX: usize = i16::MAX as usize;
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

/// One member in a group-metadata record (Kafka's `MemberMetadata` of GroupMetadataValue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group as persisted: Stable (members with assignments) or Empty (no members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberRecord>,
}

fn topic_err(e: TopicError) -> io::Error {
    match e {
        TopicError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Open (creating if needed) `__consumer_offsets` as a compacted topic: created with
/// `cleanup.policy=compact`; one created without it (by an older broker) is altered to it,
/// durably, before anything is read (so retention never deletes a live key's only record).
pub fn offsets_partition(logs: &LogManager) -> io::Result<Arc<Partition>> {
    let batch_max = logs.config().batch_bytes_max;
    let mut cfg = logs.topic_config(OFFSETS_TOPIC);
    if logs.topic(OFFSETS_TOPIC).is_none() {
        cfg.set("cleanup.policy", "compact", batch_max).map_err(|e| io::Error::other(e.to_string()))?;
        match logs.create_topic_with_config(OFFSETS_TOPIC, 1, cfg) {
            Ok(_) | Err(TopicError::AlreadyExists(_)) => {}
            Err(e) => return Err(topic_err(e)),
        }
        cfg = logs.topic_config(OFFSETS_TOPIC);
    }
    if cfg.get("cleanup.policy") != Some("compact") {
        let was = cfg.get("cleanup.policy").unwrap_or("the broker's default").to_string();
        cfg.set("cleanup.policy", "compact", batch_max).map_err(|e| io::Error::other(e.to_string()))?;
        logs.alter_topic_config(OFFSETS_TOPIC, cfg).map_err(topic_err)?;
        tracing::info!(was, "{OFFSETS_TOPIC} switched to cleanup.policy=compact");
    }
    logs.partition(OFFSETS_TOPIC, 0)
        .ok_or_else(|| io::Error::other(format!("internal topic {OFFSETS_TOPIC} has no partition 0")))
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

fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    // Bounded by the coordinator's member_metadata_bytes_max (far below i32::MAX).
    let n = b.len().min(i32::MAX as usize);
    out.extend_from_slice(&(n as i32).to_be_bytes());
    out.extend_from_slice(&b[..n]);
}

pub fn group_key(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + group.len());
    k.extend_from_slice(&GROUP_KEY_VERSION.to_be_bytes());
    put_str(&mut k, Some(group));
    k
}

pub fn group_value(g: &GroupRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&GROUP_VALUE_VERSION.to_be_bytes());
    put_str(&mut v, Some(&g.protocol_type));
    v.extend_from_slice(&g.generation.to_be_bytes());
    put_str(&mut v, g.protocol.as_deref());
    put_str(&mut v, g.leader.as_deref());
    v.extend_from_slice(&g.state_timestamp_ms.to_be_bytes());
    v.extend_from_slice(&(g.members.len() as i32).to_be_bytes());
    for m in &g.members {
        put_str(&mut v, Some(&m.member_id));
        put_str(&mut v, m.instance_id.as_deref());
        put_str(&mut v, Some(&m.client_id));
        put_str(&mut v, Some(&m.client_host));
        v.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
        v.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
        put_bytes32(&mut v, &m.subscription);
        put_bytes32(&mut v, &m.assignment);
    }
    v
}

/// The group of a group-metadata key; `None` for other key types.
pub fn parse_group_key(k: &[u8]) -> Option<String> {
    let mut c = Cur(k);
    if c.i16()? != GROUP_KEY_VERSION {
        return None;
    }
    let g = c.str16()??;
    c.0.is_empty().then_some(g)
}

/// A group-metadata value of version 0–4 (4 is Kafka's first flexible version: compact strings,
/// arrays and bytes, tagged fields); `None` if malformed.
pub fn parse_group_value(v: &[u8]) -> Option<GroupRecord> {
    let mut c = Cur(v);
    let ver = c.i16()?;
    if !(0..=4).contains(&ver) {
        return None;
    }
    let flex = ver >= 4;
    let protocol_type = c.gstr(flex)??;
    let generation = c.i32()?;
    let protocol = c.gstr(flex)?;
    let leader = c.gstr(flex)?;
    let state_timestamp_ms = if ver >= 2 { c.i64()? } else { -1 };
    let n = if flex { c.uvarint()?.checked_sub(1)? as i64 } else { c.i32()? as i64 };
    // Each member takes at least 12 bytes: a count larger than the rest could hold is malformed.
    if n < 0 || (n as usize).saturating_mul(12) > c.0.len() {
        return None;
    }
    let mut members = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let member_id = c.gstr(flex)??;
        let instance_id = if ver >= 3 { c.gstr(flex)? } else { None };
        let client_id = c.gstr(flex)??;
        let client_host = c.gstr(flex)??;
        let session;
        let rebalance;
        if ver >= 1 {
            rebalance = c.i32()?;
            session = c.i32()?;
        } else {
            session = c.i32()?;
            rebalance = session;
        }
        let subscription = c.gbytes(flex)?;
        let assignment = c.gbytes(flex)?;
        if flex {
            c.skip_tags()?;
        }
        members.push(MemberRecord {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: rebalance,
            session_timeout_ms: session,
            subscription,
            assignment,
        });
    }
    if flex {
        c.skip_tags()?;
    }
    Some(GroupRecord { protocol_type, generation, protocol, leader, state_timestamp_ms, members })
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
    /// Unsigned varint (flexible versions' lengths), at most 32 bits.
    fn uvarint(&mut self) -> Option<u32> {
        let mut z: u32 = 0;
        for i in 0..5 {
            let b = *self.take(1)?.first()?;
            z |= ((b & 0x7f) as u32).checked_shl(7 * i)?;
            if b < 0x80 {
                return Some(z);
            }
        }
        None
    }
    /// A string: str16 or, in flexible versions, compact (uvarint length + 1; 0 = null).
    fn gstr(&mut self, flex: bool) -> Option<Option<String>> {
        if !flex {
            return self.str16();
        }
        let n = self.uvarint()?;
        if n == 0 {
            return Some(None);
        }
        let b = self.take(n as usize - 1)?;
        Some(Some(String::from_utf8(b.to_vec()).ok()?))
    }
    /// Non-null bytes: i32 length or, in flexible versions, compact (uvarint length + 1).
    fn gbytes(&mut self, flex: bool) -> Option<Bytes> {
        let n = if flex { usize::try_from(self.uvarint()?.checked_sub(1)?).ok()? } else { usize::try_from(self.i32()?).ok()? };
        Some(Bytes::copy_from_slice(self.take(n)?))
    }
    /// Skip a tagged-field section (flexible versions).
    fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let n = self.uvarint()?;
            self.take(n as usize)?;
        }
        Some(())
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

/// Replays a compacted log started over when a segment changed under the scan.
const REPLAY_ATTEMPTS: usize = 10;


/// Replay `part` into a fresh `T` with `f`, consistently with respect to the log cleaner: a scan
/// that read an old segment (a value) and then a segment compacted meanwhile (its tombstone
/// removed) would bring the value back, so a scan during which a sealed segment changed is
/// started over (a pass swaps each segment once; after [`REPLAY_ATTEMPTS`] the replay fails
/// with an error rather than return a state that may be wrong).
pub fn replay<T: Default>(part: &Partition, mut f: impl FnMut(&mut T, Option<&[u8]>, Option<&[u8]>)) -> io::Result<T> {
    for _ in 0..REPLAY_ATTEMPTS {
        // The sealed segments (base offset, file): a cleaner swap changes the file. The files
        // are held, so a new one can never reuse an old one's address.
        let before = part.sealed_segments();
        let mut t = T::default();
        scan_records(part, |k, v| f(&mut t, k, v))?;
        let after = part.sealed_segments();
        let same = before.len() == after.len()
            && before.iter().zip(&after).all(|(a, b)| a.0 == b.0 && Arc::ptr_eq(&a.1, &b.1));
        if same {
            return Ok(t);
        }
        tracing::info!(topic = %part.topic, "a segment was compacted during the replay: replaying again");
    }
    Err(io::Error::other(format!(
        "{}-{}: segments kept changing during {REPLAY_ATTEMPTS} replays (the log cleaner); cannot restore a consistent state",
        part.topic, part.index
    )))
}

/// Apply one `__consumer_offsets` record to the offsets of every group (other keys ignored).
pub fn apply_offset_record(all: &mut HashMap<String, GroupOffsets>, k: Option<&[u8]>, v: Option<&[u8]>) {
    let Some((g, t, p)) = k.and_then(parse_offset_key) else { return };
    match v {
        None => {
            if let Some(m) = all.get_mut(&g) {
                m.remove(&(t, p));
                if m.is_empty() {
                    // No offsets left (OffsetDelete, DeleteGroups): the group is known
                    // only if it has a metadata record.
                    all.remove(&g);
                }
            }
        }
        Some(v) => {
            if let Some(c) = parse_offset_value(v) {
                all.entry(g).or_default().insert((t, p), c);
            }
        }
    }
}

/// Offsets of every group, as of the end of `__consumer_offsets`.
pub fn restore_offsets(part: &Partition) -> io::Result<HashMap<String, GroupOffsets>> {
    replay(part, apply_offset_record)
}

/// The latest metadata record of every group in `__consumer_offsets` (a tombstone removes it;
/// a record that does not parse is skipped with a warning, leaving the previous one).
pub fn restore_groups(part: &Partition) -> io::Result<HashMap<String, GroupRecord>> {
    replay(
        part,
        |all: &mut HashMap<String, GroupRecord>, k, v| {
            let Some(g) = k.and_then(parse_group_key) else { return };
            match v {
                None => {
                    all.remove(&g);
                }
                Some(v) => match parse_group_value(v) {
                    Some(r) => {
                        all.insert(g, r);
                    }
                    None => tracing::warn!(group = %g, "skipping unreadable group metadata record"),
                },
            }
        },
    )
}

/// Append one batch of group-metadata records (`None` = tombstone). Not yet durable: the
/// caller waits with [`Partition::wait_durable`]`(info.next_offset)`.
pub fn append_groups(
    part: &Partition,
    groups: &[(String, Option<Vec<u8>>)],
) -> Result<zl_log::AppendInfo, zl_log::AppendError> {
    let keys: Vec<Vec<u8>> = groups.iter().map(|(g, _)| group_key(g)).collect();
    let recs: Vec<build::Rec<'_>> = keys
        .iter()
        .zip(groups)
        .map(|(k, (_, v))| build::Rec { key: Some(k), value: v.as_deref(), timestamp_delta: 0 })
        .collect();
    let mut batch = build::batch_with(&recs, now_ms(), -1, -1, -1);
    part.append(&mut batch)
}

/// Append one batch holding the commits of one OffsetCommit request (atomic: all or none).
/// Not yet durable: the caller waits with [`Partition::wait_durable`]`(info.next_offset)`.
pub fn append_commits(
    part: &Partition,
    group: &str,
    entries: &[CommitEntry],
) -> Result<zl_log::AppendInfo, zl_log::AppendError> {
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

/// Append one batch of tombstones (null values) for the given committed offsets of `group`,
/// and for the group's metadata record too when `group_too` (DeleteGroups / OffsetDelete).
/// Not yet durable: the caller waits with [`Partition::wait_durable`]`(info.next_offset)`.
pub fn append_tombstones(
    part: &Partition,
    group: &str,
    offsets: &[(String, i32)],
    group_too: bool,
) -> Result<zl_log::AppendInfo, zl_log::AppendError> {
    let mut keys: Vec<Vec<u8>> = offsets.iter().map(|(t, p)| offset_key(group, t, *p)).collect();
    if group_too {
        keys.push(group_key(group));
    }
    let recs: Vec<build::Rec<'_>> =
        keys.iter().map(|k| build::Rec { key: Some(k), value: None, timestamp_delta: 0 }).collect();
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
pub fn append_pid_block(part: &Partition, block_end: i64) -> Result<(), zl_log::AppendError> {
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
    fn group_key_and_value_round_trip_and_reject_garbage() {
        let k = group_key("g1");
        assert_eq!(parse_group_key(&k), Some("g1".into()));
        assert_eq!(parse_offset_key(&k), None, "a group key is not an offset key");
        assert_eq!(parse_group_key(&offset_key("g", "t", 0)), None);
        let r = GroupRecord {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp_ms: 123,
            members: vec![MemberRecord {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 3000,
                session_timeout_ms: 6000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let v = group_value(&r);
        assert_eq!(parse_group_value(&v), Some(r.clone()));
        for n in 0..v.len() {
            assert_eq!(parse_group_value(&v[..n]), None, "truncated at {n}");
        }
        let mut huge = v.clone();
        // Member count of 2^31-1: refused without allocating.
        let at = 2 + 2 + 8 + 4 + 2 + 5 + 2 + 2 + 8;
        huge[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(parse_group_value(&huge), None);
        let empty = GroupRecord { members: vec![], protocol: None, leader: None, ..r.clone() };
        assert_eq!(parse_group_value(&group_value(&empty)), Some(empty));

        // Version 4 (flexible), as a newer Kafka writes it, with a tagged field in a member.
        let cs = |v: &mut Vec<u8>, s: Option<&str>| match s {
            None => v.push(0),
            Some(s) => {
                v.push(s.len() as u8 + 1);
                v.extend_from_slice(s.as_bytes());
            }
        };
        let mut v4 = 4i16.to_be_bytes().to_vec();
        cs(&mut v4, Some("consumer"));
        v4.extend_from_slice(&7i32.to_be_bytes());
        cs(&mut v4, Some("range"));
        cs(&mut v4, Some("m1"));
        v4.extend_from_slice(&123i64.to_be_bytes());
        v4.push(2); // one member
        cs(&mut v4, Some("m1"));
        cs(&mut v4, Some("i1"));
        cs(&mut v4, Some("c"));
        cs(&mut v4, Some("/127.0.0.1"));
        v4.extend_from_slice(&3000i32.to_be_bytes());
        v4.extend_from_slice(&6000i32.to_be_bytes());
        cs(&mut v4, Some("sub"));
        cs(&mut v4, Some("asg"));
        v4.extend_from_slice(&[1, 9, 2, 0xaa, 0xbb]); // one unknown tagged field
        v4.push(0); // no top-level tagged fields
        assert_eq!(parse_group_value(&v4), Some(r));
        for n in 0..v4.len() {
            assert_eq!(parse_group_value(&v4[..n]), None, "v4 truncated at {n}");
        }
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
