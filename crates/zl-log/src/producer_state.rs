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
//! Expiry, as Kafka's `producer.id.expiration.ms` (`LogConfig::producer_id_expiration_ms`,
//! default 1 day): a producer that has appended nothing for that long, and which has no open
//! transaction, is forgotten ([`ProducerStateManager::expire`], run by the log maintenance
//! thread), which bounds the map by the producers active in the window; a later batch of it is
//! accepted with any sequence, as for a new producer. Unlike Kafka, idleness counts from the
//! broker's clock at the producer's last append (recovery counts from the open), not from the
//! batches' timestamps: a producer whose clock lags a day would otherwise lose its state at
//! every pass. Not here: Kafka's snapshot files (the state is rebuilt from the log at open).
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
    /// Broker time (ms) of its last append (or of the open that recovered it): expiry counts
    /// from it.
    last_active_ms: i64,
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
    /// Record a stored batch (recovery, at broker time `now_ms`; non-idempotent batches are
    /// ignored).
    pub(crate) fn track(&mut self, info: &BatchInfo, now_ms: i64) {
        if !is_idempotent(info) {
            return;
        }
        track_producer_one(self.producers.entry(info.producer_id).or_default(), info, now_ms);
    }

    /// Check the batches of one append (`assigned`: their offsets assigned, in log order)
    /// against the state as it will be after the earlier ones. A retry of a stored batch is
    /// `Checked::Duplicate` when it is the append's only batch and an error otherwise.
    pub(crate) fn check(&self, assigned: &[BatchInfo], now_ms: i64) -> Result<Checked, AppendError> {
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
            track_producer_one(&mut p, a, now_ms);
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

    /// Forget producers whose last append was at least `max_idle_ms` before `now_ms`, except
    /// those for which `keep` holds (an open transaction). Returns how many went.
    pub(crate) fn expire(&mut self, now_ms: i64, max_idle_ms: u64, keep: impl Fn(i64) -> bool) -> usize {
        let before = self.producers.len();
        let idle = i64::try_from(max_idle_ms).unwrap_or(i64::MAX);
        self.producers.retain(|&pid, p| {
            p.as_ref().is_some_and(|p| now_ms.saturating_sub(p.last_active_ms) < idle) || keep(pid)
        });
        before - self.producers.len()
    }

    /// Producers tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
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
fn track_producer_one(slot: &mut Option<ProducerState>, info: &BatchInfo, now_ms: i64) {
    let last = info.base_sequence.wrapping_add(info.last_offset_delta);
    let p = slot.get_or_insert_with(|| ProducerState {
        epoch: info.producer_epoch,
        last_seq: -1,
        recent: VecDeque::new(),
        last_active_ms: now_ms,
    });
    p.last_active_ms = p.last_active_ms.max(now_ms);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, seq: i32, offset: i64) -> BatchInfo {
        BatchInfo {
            base_offset: offset,
            size_bytes: 100,
            attributes: 0,
            last_offset_delta: 0,
            base_timestamp: 1_000,
            max_timestamp: 1_000,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: seq,
            record_count: 1,
        }
    }

    #[test]
    fn idle_producers_expire_unless_kept_and_a_later_batch_starts_over() {
        let day = 24 * 3600 * 1000;
        let now = 10 * day as i64;
        let mut m = ProducerStateManager::default();
        m.track(&batch(1, 0, 0), now - day as i64); // idle exactly the window: expires
        m.track(&batch(2, 0, 1), now - day as i64 - 5); // idle longer, but kept (open transaction)
        m.track(&batch(3, 0, 2), now - day as i64 + 1); // just inside the window
        m.track(&batch(3, 1, 3), now - 2 * day as i64); // an earlier clock later does not make it idle
        assert_eq!(m.expire(now, day, |pid| pid == 2), 1);
        assert_eq!(m.len(), 2);
        assert_eq!(m.epoch_and_sequence(1), None);
        assert_eq!(m.epoch_and_sequence(3), Some((0, 1)));
        // Producer 1 is new again: any sequence is accepted, its old batch is no duplicate.
        assert!(matches!(m.check(&[batch(1, 7, 4)], now), Ok(Checked::Accepted(_))));
        assert!(matches!(m.check(&[batch(1, 0, 4)], now), Ok(Checked::Accepted(_))));
        // Producer 3 still has its state: its retry is a duplicate, a gap is refused.
        assert!(matches!(m.check(&[batch(3, 1, 4)], now), Ok(Checked::Duplicate { base_offset: 3, .. })));
        assert!(matches!(m.check(&[batch(3, 5, 4)], now), Err(AppendError::OutOfOrderSequence { expected: 2, got: 5 })));
        // An append renews a producer's window.
        if let Ok(Checked::Accepted(pending)) = m.check(&[batch(3, 2, 4)], now + day as i64 - 2) {
            m.commit(pending);
        }
        assert_eq!(m.expire(now + day as i64, day, |_| false), 1, "producer 2 goes once no longer kept; 3 was renewed");
        assert_eq!(m.epoch_and_sequence(3), Some((0, 2)));
    }
}
