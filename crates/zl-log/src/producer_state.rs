//! Idempotent-producer state of one partition — Kafka's `ProducerStateManager` (with the
//! sequence checks of its `ProducerAppendInfo`).
//!
//! Per producer id: the epoch, the last sequence stored, and the (first sequence, last
//! sequence, base offset) of its last [`PRODUCER_RECENT_BATCHES`] batches, so a retried batch
//! is answered with the offset it was stored at instead of being written twice. The state
//! lives in the batch headers: recovery ([`super::loader`]) rebuilds it by tracking every
//! stored batch, and an append checks its batches against it before it writes anything
//! ([`ProducerStateManager::check`]), then records them ([`ProducerStateManager::commit`]).
//!
//! Not here (yet): Kafka's expiry of idle producers (`producer.id.expiration.ms`) and its
//! snapshot files; a producer's state stays for the partition's lifetime in memory and is
//! rebuilt from the log at open.
//!
//! Asserts: at most [`PRODUCER_RECENT_BATCHES`] batches are remembered per producer.

use std::collections::{HashMap, VecDeque};

use super::AppendError;
use zl_record::BatchInfo;

/// Batches remembered per producer for duplicate detection (Kafka keeps 5).
pub const PRODUCER_RECENT_BATCHES: usize = 5;

#[derive(Debug, Clone)]
pub(crate) struct ProducerState {
    epoch: i16,
    last_seq: i32,
    /// (first sequence, last sequence, base offset) of recent batches.
    recent: VecDeque<(i32, i32, u64)>,
}

/// The producer states of one partition (producer id → state).
#[derive(Debug, Default)]
pub(crate) struct ProducerStateManager {
    producers: HashMap<i64, Option<ProducerState>>,
}

/// The outcome of checking an append's batches: either its only batch is a retry of one
/// already stored, or the states the append leaves (to [`ProducerStateManager::commit`] once
/// it is written).
pub(crate) enum Checked {
    Duplicate { base_offset: u64, last_offset: u64 },
    Accepted(Pending),
}

/// Producer states an append will leave, not yet recorded.
#[derive(Default)]
pub(crate) struct Pending(HashMap<i64, Option<ProducerState>>);

impl ProducerStateManager {
    /// Record a stored batch (recovery; non-idempotent batches are ignored).
    pub(crate) fn track(&mut self, info: &BatchInfo) {
        if !is_idempotent(info) {
            return;
        }
        track_producer_one(self.producers.entry(info.producer_id).or_default(), info);
    }

    /// Check the batches of one append (`assigned`: their offsets assigned, in log order)
    /// against the state as it will be after the earlier ones. A retry of a stored batch is
    /// `Checked::Duplicate` when it is the append's only batch and an error otherwise.
    pub(crate) fn check(&self, assigned: &[BatchInfo]) -> Result<Checked, AppendError> {
        let mut touched: HashMap<i64, Option<ProducerState>> = HashMap::new();
        for a in assigned {
            if !is_idempotent(a) {
                continue;
            }
            let current = match touched.get(&a.producer_id) {
                Some(p) => p.clone(),
                None => self.producers.get(&a.producer_id).cloned().flatten(),
            };
            if let Some(dup_offset) = check_sequence(current.as_ref(), a)? {
                if assigned.len() == 1 {
                    return Ok(Checked::Duplicate {
                        base_offset: dup_offset,
                        last_offset: dup_offset + a.last_offset_delta as u64,
                    });
                }
                return Err(AppendError::DuplicateSequence(dup_offset as i64));
            }
            let mut p = current;
            track_producer_one(&mut p, a);
            touched.insert(a.producer_id, p);
        }
        Ok(Checked::Accepted(Pending(touched)))
    }

    /// Record the states an append checked by [`ProducerStateManager::check`] left (after it
    /// was written or staged).
    pub(crate) fn commit(&mut self, pending: Pending) {
        for (pid, p) in pending.0 {
            if p.is_some() {
                self.producers.insert(pid, p);
            }
        }
    }

    /// A producer's (epoch, last sequence).
    pub(crate) fn epoch_and_sequence(&self, producer_id: i64) -> Option<(i16, i32)> {
        self.producers.get(&producer_id).and_then(|p| p.as_ref()).map(|p| (p.epoch, p.last_seq))
    }
}

/// Sequence check for an idempotent batch. `Ok(Some(offset))` = duplicate of a stored batch.
fn check_sequence(producer: Option<&ProducerState>, info: &BatchInfo) -> Result<Option<u64>, AppendError> {
    let last_seq_of = |i: &BatchInfo| i.base_sequence.wrapping_add(i.last_offset_delta);
    match producer {
        // No state for this producer (new, or all its batches went with retention): Kafka (since
        // 2.x, ProducerAppendInfo.checkSequence) accepts any first sequence rather than answering
        // UNKNOWN_PRODUCER_ID, which would make the client reset its sequences and resend.
        None => Ok(None),
        Some(p) => {
            if info.producer_epoch < p.epoch {
                return Err(AppendError::ProducerFenced { current: p.epoch, got: info.producer_epoch });
            }
            if info.producer_epoch > p.epoch {
                if info.base_sequence != 0 {
                    return Err(AppendError::OutOfOrderSequence { expected: 0, got: info.base_sequence });
                }
                return Ok(None);
            }
            if let Some(&(_, _, off)) =
                p.recent.iter().find(|(f, l, _)| *f == info.base_sequence && *l == last_seq_of(info))
            {
                return Ok(Some(off));
            }
            let expected = p.last_seq.wrapping_add(1).max(0);
            if info.base_sequence != expected {
                return Err(AppendError::OutOfOrderSequence { expected, got: info.base_sequence });
            }
            Ok(None)
        }
    }
}

/// A batch from an idempotent producer (one whose sequence the log tracks).
pub(crate) fn is_idempotent(info: &BatchInfo) -> bool {
    info.producer_id >= 0 && info.base_sequence >= 0
}

/// Record a stored idempotent batch in one producer's state (`None` = not seen yet).
fn track_producer_one(slot: &mut Option<ProducerState>, info: &BatchInfo) {
    let last = info.base_sequence.wrapping_add(info.last_offset_delta);
    let p = slot.get_or_insert_with(|| ProducerState { epoch: info.producer_epoch, last_seq: -1, recent: VecDeque::new() });
    if info.producer_epoch != p.epoch {
        p.epoch = info.producer_epoch;
        p.recent.clear();
    }
    p.last_seq = last;
    if p.recent.len() == PRODUCER_RECENT_BATCHES {
        p.recent.pop_front();
    }
    p.recent.push_back((info.base_sequence, last, info.base_offset as u64));
    // Invariant: a bounded memory of recent batches per producer.
    assert!(p.recent.len() <= PRODUCER_RECENT_BATCHES, "producer {} remembers {} batches", info.producer_id, p.recent.len());
}
