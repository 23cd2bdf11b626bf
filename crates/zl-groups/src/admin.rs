//! DeleteGroups (key 42) and OffsetDelete (key 47): removing a group's committed offsets and
//! metadata, durably (tombstones in `__consumer_offsets`, which [`super::store`]'s restore
//! honours), with Kafka's checks: only an Empty group may be deleted (NON_EMPTY_GROUP
//! otherwise, GROUP_ID_NOT_FOUND for an unknown one); OffsetDelete refuses the partitions of a
//! topic an active consumer member is subscribed to (GROUP_SUBSCRIBED_TO_TOPIC). An Empty
//! classic group that OffsetDelete leaves without offsets is removed with its metadata (a
//! tombstone for its record), as Kafka's group goes Dead.
//!
//! Ordering: the tombstones are appended under the offsets cache lock (as commits are), so the
//! log order of commits and deletions is the order they apply in memory; a commit appended
//! before a deletion but still waiting for durability is not applied after it (see
//! `Offsets::deleted`). The reply waits for the tombstones' durability (per the log's mode); a
//! storage failure answers COORDINATOR_NOT_AVAILABLE, as a failed commit does.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::*;

use super::coordinator::OffsetDeleteCheck;
use super::{err, lock, store, GroupCoordinator};

/// Tombstones per batch (each well under 1 KiB: far below the log's batch limit).
const TOMBSTONES_PER_BATCH: usize = 1000;

/// A deletion made while commits were in flight: group, partition (`None` = every partition)
/// and the `__consumer_offsets` offset that follows its tombstones.
pub(super) type Deleted = (String, Option<(String, i32)>, u64);

/// Whether a commit of `group`/`key` appended at `base_offset` was deleted after it.
pub(super) fn deleted_after(
    deleted: &[Deleted],
    group: &str,
    key: &(String, i32),
    base_offset: u64,
) -> bool {
    deleted
        .iter()
        .any(|(g, k, at)| g == group && k.as_ref().is_none_or(|k| k == key) && base_offset < *at)
}

impl GroupCoordinator {
    /// Append the tombstones of `offsets` (and of the group record when `group_too`); called
    /// with the offsets cache lock held. Returns the log offset to wait for.
    fn append_tombstones(&self, group: &str, offsets: &[(String, i32)], group_too: bool) -> Result<u64, String> {
        let mut end = None;
        let mut chunks: Vec<&[(String, i32)]> = offsets.chunks(TOMBSTONES_PER_BATCH).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            if chunk.is_empty() && !(group_too && i == last) {
                continue;
            }
            let info = store::append_tombstones(&self.offsets_log, group, chunk, group_too && i == last)
                .map_err(|e| e.to_string())?;
            end = Some(info.next_offset);
        }
        end.ok_or_else(|| "nothing to append".to_string())
    }

    /// Delete an Empty group: its metadata and every committed offset. Returns the error code.
    pub fn delete_group(&self, group: &str) -> i16 {
        let wait_for = {
            // Lock order: offsets, group records, state machine (as `persist_groups`).
            let mut o = lock(&self.offsets);
            let mut saved = lock(&self.group_records);
            // A consumer-protocol group (KIP-848): only an Empty one; it has no classic twin.
            let consumer = self.consumer.delete_if_empty(group);
            if let Some(code) = consumer.filter(|c| *c != err::NONE) {
                return code;
            }
            let code = self.sm.remove_empty_group(group);
            if code != err::NONE && !(consumer.is_some() && code == err::GROUP_ID_NOT_FOUND) {
                return code;
            }
            saved.remove(group);
            let keys: Vec<(String, i32)> = o.groups.remove(group).map(|m| m.into_keys().collect()).unwrap_or_default();
            match self.append_tombstones(group, &keys, true) {
                Ok(end) => {
                    if o.in_flight > 0 {
                        o.deleted.push((group.to_string(), None, end));
                    }
                    end
                }
                Err(e) => {
                    tracing::error!(group, "cannot delete group: {e}");
                    return err::COORDINATOR_NOT_AVAILABLE;
                }
            }
        };
        match self.offsets_log.wait_durable(wait_for) {
            Ok(()) => {
                tracing::info!(group, "group deleted");
                err::NONE
            }
            Err(e) => {
                tracing::error!(group, "group deletion not durable: {e}");
                err::COORDINATOR_NOT_AVAILABLE
            }
        }
    }

    /// Delete committed offsets of a group. Returns the group-level error code and, per
    /// requested partition, its error code (in request order).
    pub fn delete_offsets(&self, group: &str, partitions: &[(String, i32)]) -> (i16, Vec<i16>) {
        // Checked under the offsets cache lock (order: offsets, then the state machine), so no
        // commit is appended between the check and the tombstones.
        let mut o = lock(&self.offsets);
        let subscribed = self.consumer.subscribed_topics(group);
        let classic = subscribed.is_none();
        let check = match subscribed {
            Some(ts) if ts.is_empty() => OffsetDeleteCheck::All,
            Some(ts) => OffsetDeleteCheck::ExceptTopics(Some(ts)),
            None => self.sm.offset_delete_check(group),
        };
        let empty_classic = classic && check == OffsetDeleteCheck::All;
        let except = match check {
            OffsetDeleteCheck::Error(code) => return (code, vec![err::NONE; partitions.len()]),
            OffsetDeleteCheck::All => Some(Vec::new()),
            OffsetDeleteCheck::ExceptTopics(ts) => ts,
        };
        let in_use = |t: &str| except.as_ref().is_none_or(|ts| ts.iter().any(|x| x == t));
        let codes: Vec<i16> =
            partitions.iter().map(|(t, _)| if in_use(t) { err::GROUP_SUBSCRIBED_TO_TOPIC } else { err::NONE }).collect();
        let wait_for = {
            let Some(offs) = o.groups.get(group) else { return (err::NONE, codes) };
            let mut keys: Vec<(String, i32)> = Vec::new();
            for (k, code) in partitions.iter().zip(&codes) {
                if *code == err::NONE && offs.contains_key(k) && !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
            if keys.is_empty() {
                return (err::NONE, codes);
            }
            // An Empty classic group left with no offsets is removed with its metadata (Kafka's
            // `cleanupGroupMetadata`: the group goes Dead and its record gets a tombstone), so
            // it is not restored by a restart either (lock order: offsets, group records, state
            // machine, as `delete_group`).
            let mut saved = lock(&self.group_records);
            let emptied =
                empty_classic && offs.len() == keys.len() && self.sm.remove_empty_group(group) == err::NONE;
            if emptied {
                saved.remove(group);
                tracing::info!(group, "offsets deleted: the Empty group has none left and is removed");
            }
            // Held while appending, as `delete_group` does (group records reach the log in order).
            let appended = self.append_tombstones(group, &keys, emptied);
            drop(saved);
            match appended {
                Ok(end) => {
                    if let Some(offs) = o.groups.get_mut(group) {
                        for k in &keys {
                            offs.remove(k);
                        }
                        if offs.is_empty() {
                            o.groups.remove(group);
                        }
                    }
                    if o.in_flight > 0 {
                        for k in keys {
                            o.deleted.push((group.to_string(), Some(k), end));
                        }
                    }
                    end
                }
                Err(e) => {
                    tracing::error!(group, "cannot delete offsets: {e}");
                    return (err::COORDINATOR_NOT_AVAILABLE, codes);
                }
            }
        };
        drop(o);
        match self.offsets_log.wait_durable(wait_for) {
            Ok(()) => (err::NONE, codes),
            Err(e) => {
                tracing::error!(group, "offset deletion not durable: {e}");
                (err::COORDINATOR_NOT_AVAILABLE, codes)
            }
        }
    }
}

pub(super) fn delete_groups(c: &GroupCoordinator, req: Option<DeleteGroupsRequest>) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    let Some(req) = req else { return resp };
    for g in req.groups_names {
        let code = c.delete_group(g.as_str());
        let mut r = DeletableGroupResult::default();
        r.group_id = g;
        r.error_code = code;
        resp.results.push(r);
    }
    resp
}

pub(super) fn offset_delete(c: &GroupCoordinator, req: Option<OffsetDeleteRequest>) -> OffsetDeleteResponse {
    let mut resp = OffsetDeleteResponse::default();
    let Some(req) = req else {
        resp.error_code = err::INVALID_REQUEST;
        return resp;
    };
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.as_str().to_string(), p.partition_index)))
        .collect();
    let (code, codes) = c.delete_offsets(req.group_id.as_str(), &parts);
    resp.error_code = code;
    if code != err::NONE {
        return resp;
    }
    let mut codes = codes.into_iter();
    for t in req.topics {
        let mut rt = OffsetDeleteResponseTopic::default();
        for p in t.partitions {
            let mut rp = OffsetDeleteResponsePartition::default();
            rp.partition_index = p.partition_index;
            rp.error_code = codes.next().unwrap_or(err::NONE);
            rt.partitions.push(rp);
        }
        rt.name = t.name;
        resp.topics.push(rt);
    }
    resp
}
