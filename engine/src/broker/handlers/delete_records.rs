//! DeleteRecords (key 21, v0–2): move partitions' log start offsets (Kafka's KIP-107).
//!
//! For each partition: `offset` -1 means the high watermark; any other negative offset, or one
//! above the high watermark, is OFFSET_OUT_OF_RANGE; an unknown topic or partition is
//! UNKNOWN_TOPIC_OR_PARTITION; the internal `__consumer_offsets` is INVALID_TOPIC_EXCEPTION, as
//! Kafka's ReplicaManager answers for internal topics (and the hidden `__producer_ids` is
//! unknown, as Metadata says). `low_watermark` is the log start after the request. The new
//! start is durable (the partition's checkpoint, [`crate::log::Partition::delete_records`])
//! before the response is built, and the work runs on the connection's writer thread
//! (`Reply::Later`): its fsyncs do not hold up reading the connection's next requests.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::*;

use super::{is_hidden_topic, is_internal_topic, resolve_partition, Handled};
use crate::broker::auth::{Authz, Operation, ResourceType};
use crate::broker::{Reply, Shared};
use crate::log::DeleteRecordsError;
use crate::wire::{self, error};

/// `offset` value meaning "up to the high watermark" (Kafka's `DeleteRecordsRequest.HIGH_WATERMARK`).
const HIGH_WATERMARK: i64 = -1;

pub(super) fn delete_records(shared: &Arc<Shared>, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: DeleteRecordsRequest = wire::decode_body(&mut body, version)?;
    let shared = shared.clone();
    let az = az.clone();
    Ok(Reply::Later(Box::new(move || {
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let delete_ok = az.allows(Operation::Delete, ResourceType::Topic, &name);
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let (low, code) = if delete_ok {
                            delete_one(&shared, &name, p.partition_index, p.offset)
                        } else {
                            (-1, error::TOPIC_AUTHORIZATION_FAILED)
                        };
                        DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(low)
                            .with_error_code(code)
                    })
                    .collect();
                DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        let resp = DeleteRecordsResponse::default().with_topics(topics);
        wire::encode_response(cid, ApiKey::DeleteRecords, version, &resp)
    })))
}

/// (low watermark, error code) for one partition.
fn delete_one(shared: &Shared, topic: &str, partition: i32, offset: i64) -> (i64, i16) {
    if is_hidden_topic(topic) {
        return (-1, error::UNKNOWN_TOPIC_OR_PARTITION);
    }
    if is_internal_topic(topic) {
        tracing::warn!(topic, partition, "DeleteRecords on an internal topic: refused");
        return (-1, error::INVALID_TOPIC_EXCEPTION);
    }
    let log = match resolve_partition(shared, topic, partition, false) {
        Ok(log) => log,
        Err(code) => return (-1, code),
    };
    let target = match offset {
        HIGH_WATERMARK => log.high_watermark(),
        o if o < 0 => return (-1, error::OFFSET_OUT_OF_RANGE),
        o => o as u64,
    };
    match log.delete_records(target) {
        Ok(start) => {
            tracing::info!(topic, partition, log_start = start, "DeleteRecords");
            (start as i64, error::NONE)
        }
        Err(DeleteRecordsError::OffsetOutOfRange { .. }) => (-1, error::OFFSET_OUT_OF_RANGE),
        Err(DeleteRecordsError::Storage(e)) => {
            tracing::warn!(topic, partition, "DeleteRecords failed: {e}");
            (-1, error::KAFKA_STORAGE_ERROR)
        }
    }
}
