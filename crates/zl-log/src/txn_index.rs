//! Per-partition transaction state (issue 20): the open transactions (which set the last stable
//! offset) and the aborted-transactions index (what a read_committed Fetch returns with its
//! records), as Kafka's ProducerStateManager and transaction index keep them.
//!
//! Both follow the batches alone: a transactional data batch from a producer with no open
//! transaction opens one at its base offset; a control batch (COMMIT or ABORT marker, written by
//! the transaction coordinator) closes it, and an ABORT adds (producer id, first offset, marker
//! offset) to the aborted index. So appends maintain it, and recovery rebuilds it by walking the
//! batch headers it walks anyway (the marker type, in the control record's key, is read from
//! the file for control batches only). Nothing is persisted beside the log.
//!
//! The last stable offset (LSO) is the first offset of the earliest open transaction, or the
//! high watermark when none is open (min of the two). A marker a crash takes back before it was
//! durable re-opens its transaction at recovery; the coordinator, whose decision was durable
//! before any marker was written, writes it again (`engine::txn`).

use std::collections::{BTreeMap, HashMap, VecDeque};

use zl_record::{self as record, BatchInfo, BATCH_HEADER_BYTES};

/// A control record's type (the key: version i16, type i16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

/// Control record key type values.
pub const MARKER_ABORT: i16 = 0;
pub const MARKER_COMMIT: i16 = 1;

/// One aborted transaction of the partition: its producer, first data offset and the offset of
/// its ABORT marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    pub last_offset: u64,
}

#[derive(Debug, Default)]
pub struct TxnIndex {
    /// producer id → first offset of its open transaction.
    open: HashMap<i64, u64>,
    /// first offset → producer id (the earliest is the LSO).
    open_by_first: BTreeMap<u64, i64>,
    /// Aborted transactions in marker (last offset) order.
    aborted: VecDeque<AbortedTxn>,
}

impl TxnIndex {
    /// Account one stored batch. `marker`: the control record's type, for a control batch.
    pub fn on_batch(&mut self, info: &BatchInfo, marker: Option<Marker>) {
        if !info.is_transactional() || info.producer_id < 0 {
            return;
        }
        let pid = info.producer_id;
        if info.is_control() {
            let first = self.open.remove(&pid);
            if let Some(first) = first {
                self.open_by_first.remove(&first);
            }
            if marker == Some(Marker::Abort) {
                if let Some(first) = first {
                    self.aborted.push_back(AbortedTxn {
                        producer_id: pid,
                        first_offset: first,
                        last_offset: info.base_offset as u64,
                    });
                }
            }
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.open.entry(pid) {
            let first = info.base_offset as u64;
            e.insert(first);
            self.open_by_first.insert(first, pid);
        }
    }

    /// First offset of the earliest open transaction.
    pub fn first_open(&self) -> Option<u64> {
        self.open_by_first.keys().next().copied()
    }

    /// Open transactions: (producer id, first offset).
    pub fn open(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.open.iter().map(|(p, f)| (*p, *f))
    }

    /// Aborted transactions a read of `[from, upto)` must report: marker at or after `from`,
    /// first offset below `upto` (as Kafka's collectAbortedTxns).
    pub fn aborted_between(&self, from: u64, upto: u64) -> Vec<AbortedTxn> {
        let i = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted.range(i..).filter(|a| a.first_offset < upto).copied().collect()
    }

    /// Forget aborted transactions wholly below `start` (retention, DeleteRecords): nothing
    /// of them is served any more.
    pub fn trim_below(&mut self, start: u64) {
        while self.aborted.front().is_some_and(|a| a.last_offset < start) {
            self.aborted.pop_front();
        }
    }

    pub fn aborted_len(&self) -> usize {
        self.aborted.len()
    }
}

/// The marker type of a complete control batch (`None` if it holds no readable control key).
pub fn control_marker(batch: &[u8], info: &BatchInfo) -> Option<Marker> {
    if !info.is_control() || info.compression() != 0 || info.size_bytes > batch.len() {
        return None;
    }
    let mut b = &batch[BATCH_HEADER_BYTES..info.size_bytes];
    let _len = varint(&mut b)?;
    b = b.get(1..)?; // attributes
    varint(&mut b)?; // timestamp delta
    varint(&mut b)?; // offset delta
    let key_len = varint(&mut b)?;
    if key_len < 4 {
        return None;
    }
    let k = b.get(..4)?;
    match i16::from_be_bytes([k[2], k[3]]) {
        MARKER_ABORT => Some(Marker::Abort),
        MARKER_COMMIT => Some(Marker::Commit),
        _ => None,
    }
}

fn varint(b: &mut &[u8]) -> Option<i64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let byte = *b.first()?;
        *b = &b[1..];
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

/// A control batch (COMMIT or ABORT marker) of `producer_id`/`epoch`, as Kafka's
/// EndTransactionMarker: attributes control + transactional, one record whose key is
/// (version 0, type) and value (version 0, coordinator epoch). Offsets are assigned on append.
pub fn marker_batch(producer_id: i64, epoch: i16, marker: Marker, coordinator_epoch: i32, now_ms: i64) -> Vec<u8> {
    let kind = match marker {
        Marker::Abort => MARKER_ABORT,
        Marker::Commit => MARKER_COMMIT,
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let rec = record::build::Rec { key: Some(&key), value: Some(&value), timestamp_delta: 0 };
    let mut b = record::build::batch_with(&[rec], now_ms, producer_id, epoch, -1);
    b[21..23].copy_from_slice(&0x30i16.to_be_bytes());
    let crc = record::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: i64, base: i64, attrs: i16) -> BatchInfo {
        BatchInfo {
            base_offset: base,
            size_bytes: 0,
            attributes: attrs,
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
            record_count: 1,
        }
    }

    #[test]
    fn markers_round_trip_and_index_follows_batches() {
        let b = marker_batch(7, 3, Marker::Abort, 0, 1);
        let i = record::validate(&b, 1 << 20).expect("valid marker batch");
        assert!(i.is_control() && i.is_transactional());
        assert_eq!(control_marker(&b, &i), Some(Marker::Abort));
        let c = marker_batch(7, 3, Marker::Commit, 0, 1);
        let ci = record::validate(&c, 1 << 20).expect("valid");
        assert_eq!(control_marker(&c, &ci), Some(Marker::Commit));

        let mut x = TxnIndex::default();
        x.on_batch(&info(1, 10, 0x10), None);
        x.on_batch(&info(2, 11, 0x10), None);
        x.on_batch(&info(1, 12, 0x10), None);
        assert_eq!(x.first_open(), Some(10));
        x.on_batch(&info(1, 13, 0x30), Some(Marker::Abort));
        assert_eq!(x.first_open(), Some(11));
        x.on_batch(&info(2, 14, 0x30), Some(Marker::Commit));
        assert_eq!(x.first_open(), None);
        assert_eq!(x.aborted_between(0, 100), vec![AbortedTxn { producer_id: 1, first_offset: 10, last_offset: 13 }]);
        assert!(x.aborted_between(14, 100).is_empty());
        assert!(x.aborted_between(0, 10).is_empty());
        // A marker without an open transaction (a coordinator retry) changes nothing.
        x.on_batch(&info(1, 15, 0x30), Some(Marker::Abort));
        assert_eq!(x.aborted_len(), 1);
        x.trim_below(14);
        assert_eq!(x.aborted_len(), 0);
    }
}
