//! The durable transaction state: one record per state change of a transactional id in the
//! internal topic `__transaction_state` (1 partition), the whole state each time, so the latest
//! record of an id is its state (restore keeps the last one per key).
//!
//! ```text
//! key   : i16 version=0 | str16 transactional_id
//! value : i16 version=0 | i64 producer_id | i16 epoch | i16 last_epoch | i32 timeout_ms
//!         | i8 state | i64 start_ms | i64 update_ms
//!         | i32 n × (str16 topic | i32 partition)                      partitions
//!         | i32 n × (str16 group | i32 m × (str16 topic | i32 partition | i64 offset
//!                    | i32 leader_epoch | nstr16 metadata))           groups and pending offsets
//! ```
//!
//! A record that does not parse is skipped with a warning (the previous one stands).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;

use super::{TxnMeta, TxnState};
use crate::log::Partition;
use crate::record::build;

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// The longest string a record holds (a 16-bit length); the coordinator refuses longer ids and
/// groups, and topics and metadata are shorter (249 and 4,096 bytes at most).
pub const STR_BYTES_MAX: usize = i16::MAX as usize;

fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            let n = s.len().min(STR_BYTES_MAX);
            out.extend_from_slice(&(n as i16).to_be_bytes());
            out.extend_from_slice(&s.as_bytes()[..n]);
        }
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

pub fn key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + id.len());
    k.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_str(&mut k, Some(id));
    k
}

pub fn value(m: &TxnMeta) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    v.extend_from_slice(&m.producer_id.to_be_bytes());
    v.extend_from_slice(&m.epoch.to_be_bytes());
    v.extend_from_slice(&m.last_epoch.to_be_bytes());
    v.extend_from_slice(&m.timeout_ms.to_be_bytes());
    v.push(m.state as u8);
    v.extend_from_slice(&m.start_ms.to_be_bytes());
    v.extend_from_slice(&m.update_ms.to_be_bytes());
    v.extend_from_slice(&(m.partitions.len() as i32).to_be_bytes());
    for (t, p) in &m.partitions {
        put_str(&mut v, Some(t));
        v.extend_from_slice(&p.to_be_bytes());
    }
    v.extend_from_slice(&(m.groups.len() as i32).to_be_bytes());
    for (g, offs) in &m.groups {
        put_str(&mut v, Some(g));
        v.extend_from_slice(&(offs.len() as i32).to_be_bytes());
        for ((t, p), o) in offs {
            put_str(&mut v, Some(t));
            v.extend_from_slice(&p.to_be_bytes());
            v.extend_from_slice(&o.offset.to_be_bytes());
            v.extend_from_slice(&o.leader_epoch.to_be_bytes());
            put_str(&mut v, o.metadata.as_deref());
        }
    }
    v
}

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
    fn i8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
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
    /// A count, bounded by the bytes left (each element takes at least `min` bytes).
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n.checked_mul(min)? <= self.0.len()).then_some(n)
    }
}

pub fn parse_key(k: &[u8]) -> Option<String> {
    let mut c = Cur(k);
    if c.i16()? != KEY_VERSION {
        return None;
    }
    c.str16()?
}

pub fn parse_value(v: &[u8]) -> Option<TxnMeta> {
    let mut c = Cur(v);
    if c.i16()? != VALUE_VERSION {
        return None;
    }
    let producer_id = c.i64()?;
    let epoch = c.i16()?;
    let last_epoch = c.i16()?;
    let timeout_ms = c.i32()?;
    let state = TxnState::from_u8(c.i8()?)?;
    let start_ms = c.i64()?;
    let update_ms = c.i64()?;
    let mut partitions = BTreeSet::new();
    for _ in 0..c.count(6)? {
        let t = c.str16()??;
        partitions.insert((t, c.i32()?));
    }
    let mut groups = BTreeMap::new();
    for _ in 0..c.count(6)? {
        let g = c.str16()??;
        let mut offs = BTreeMap::new();
        for _ in 0..c.count(20)? {
            let t = c.str16()??;
            let p = c.i32()?;
            let offset = c.i64()?;
            let leader_epoch = c.i32()?;
            let metadata = c.str16()?;
            offs.insert((t, p), super::PendingOffset { offset, leader_epoch, metadata });
        }
        groups.insert(g, offs);
    }
    Some(TxnMeta { producer_id, epoch, last_epoch, timeout_ms, state, start_ms, update_ms, partitions, groups })
}

/// Append one state record (not yet durable: see `TxnCoordinator::persist`).
pub fn append(part: &Partition, id: &str, m: &TxnMeta) -> Result<crate::log::AppendInfo, crate::log::AppendError> {
    let k = key(id);
    let v = value(m);
    let rec = build::Rec { key: Some(&k), value: Some(&v), timestamp_delta: 0 };
    let mut batch = build::batch_with(&[rec], crate::log::now_ms(), -1, -1, -1);
    part.append(&mut batch)
}

/// Append a tombstone (null value) for `id`: an expired transactional id (restore drops it).
pub fn append_tombstone(part: &Partition, id: &str) -> Result<crate::log::AppendInfo, crate::log::AppendError> {
    let k = key(id);
    let rec = build::Rec { key: Some(&k), value: None, timestamp_delta: 0 };
    let mut batch = build::batch_with(&[rec], crate::log::now_ms(), -1, -1, -1);
    part.append(&mut batch)
}

/// The latest state of every transactional id in the log.
pub fn restore(part: &Partition) -> io::Result<HashMap<String, TxnMeta>> {
    let mut all = HashMap::new();
    crate::groups::store::scan_records(part, |k, v| {
        let Some(id) = k.and_then(parse_key) else { return };
        match v.map(parse_value) {
            None => {
                all.remove(&id);
            }
            Some(Some(m)) => {
                all.insert(id, m);
            }
            Some(None) => tracing::warn!(transactional_id = %id, "skipping unreadable transaction state record"),
        }
    })?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_record_round_trips() {
        let mut m = TxnMeta::new(42, 3, 60_000);
        m.state = TxnState::PrepareCommit;
        m.last_epoch = 2;
        m.start_ms = 5;
        m.partitions.insert(("out".into(), 3));
        m.groups.entry("g".into()).or_default().insert(
            ("in".into(), 1),
            super::super::PendingOffset { offset: 99, leader_epoch: -1, metadata: Some("m".into()) },
        );
        let back = parse_value(&value(&m)).expect("parses");
        assert_eq!(back, m);
        assert_eq!(parse_key(&key("tx-1")).as_deref(), Some("tx-1"));
        assert!(parse_value(&value(&m)[..20]).is_none());
    }
}
