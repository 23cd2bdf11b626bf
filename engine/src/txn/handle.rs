//! The wire mapping of the transaction APIs: InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit, DescribeTransactions,
//! ListTransactions. Every request is answered with `Reply::Later` (on the connection's writer
//! thread, in order), since most wait for an fsync. A body that does not decode closes the
//! connection (as the broker's own handlers do).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{code, PendingOffset, TxnCoordinator, TxnState};
use crate::broker::Reply;
use crate::log::now_ms;
use crate::wire;

/// (api key, min version, max version) served here. AddPartitionsToTxn v4+ is the brokers'
/// batched verification form (clients send v0–v3); EndTxn v5 and the other v5s are
/// transaction version 2 (KIP-890 part 2), which this broker does not advertise.
pub const TXN_APIS: &[(i16, i16, i16)] = &[
    (24, 0, 3), // AddPartitionsToTxn
    (25, 0, 4), // AddOffsetsToTxn
    (26, 0, 4), // EndTxn
    (28, 0, 4), // TxnOffsetCommit
    (65, 0, 0), // DescribeTransactions
    (66, 0, 1), // ListTransactions
];

const INIT_PRODUCER_ID: i16 = 22;

/// PRODUCER_FENCED is new in these versions (KIP-588); older clients get INVALID_PRODUCER_EPOCH.
fn fenced(c: i16, version: i16, first_with_fenced: i16) -> i16 {
    if c == code::PRODUCER_FENCED && version < first_with_fenced {
        code::INVALID_PRODUCER_EPOCH
    } else {
        c
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Whether this request is for the transaction coordinator: a transaction API, or
/// InitProducerId with a transactional id (without one it is the group coordinator's).
/// `None`: not ours.
pub fn route(txn: &Arc<TxnCoordinator>, api_key: i16, version: i16, header: &RequestHeader, body: &mut Bytes) -> Option<Reply> {
    let cid = header.correlation_id;
    if api_key == INIT_PRODUCER_ID {
        let req: InitProducerIdRequest = wire::decode_body(&mut body.clone(), version).ok()?;
        let id = req.transactional_id.as_ref().map(|t| t.0.to_string()).filter(|t| !t.is_empty())?;
        if !(0..=4).contains(&version) {
            return Some(Reply::Close(format!("unsupported version {version} of InitProducerId")));
        }
        let c = txn.clone();
        return Some(Reply::Later(Box::new(move || {
            let mut r = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
            match c.init_producer_id(&id, req.transaction_timeout_ms, req.producer_id.0, req.producer_epoch) {
                Ok((pid, epoch)) => r = r.with_producer_id(ProducerId(pid)).with_producer_epoch(epoch),
                Err(e) => r = r.with_error_code(fenced(e, version, 4)),
            }
            wire::encode_response(cid, ApiKey::InitProducerId, version, &r)
        })));
    }
    let &(_, lo, hi) = TXN_APIS.iter().find(|(k, _, _)| *k == api_key)?;
    if !(lo..=hi).contains(&version) {
        return Some(Reply::Close(format!("unsupported version {version} of transaction API {api_key}")));
    }
    let c = txn.clone();
    let r = match api_key {
        24 => wire::decode_body::<AddPartitionsToTxnRequest>(body, version).map(|q| later(move || add_partitions(&c, q, cid, version))),
        25 => wire::decode_body::<AddOffsetsToTxnRequest>(body, version).map(|q| {
            later(move || {
                let e = c.add_offsets(&q.transactional_id.0, q.producer_id.0, q.producer_epoch, &q.group_id.0);
                let r = AddOffsetsToTxnResponse::default().with_error_code(fenced(e, version, 2));
                wire::encode_response(cid, ApiKey::AddOffsetsToTxn, version, &r)
            })
        }),
        26 => wire::decode_body::<EndTxnRequest>(body, version).map(|q| {
            later(move || {
                let e = c.end_txn(&q.transactional_id.0, q.producer_id.0, q.producer_epoch, q.committed);
                let r = EndTxnResponse::default()
                    .with_error_code(fenced(e, version, 2))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1);
                wire::encode_response(cid, ApiKey::EndTxn, version, &r)
            })
        }),
        28 => wire::decode_body::<TxnOffsetCommitRequest>(body, version).map(|q| later(move || txn_offset_commit(&c, q, cid, version))),
        65 => wire::decode_body::<DescribeTransactionsRequest>(body, version).map(|q| later(move || describe(&c, q, cid, version))),
        66 => wire::decode_body::<ListTransactionsRequest>(body, version).map(|q| later(move || list(&c, q, cid, version))),
        _ => return None,
    };
    Some(r.unwrap_or_else(|e| Reply::Close(format!("transaction API {api_key} v{version}: {e}"))))
}

fn later(f: impl FnOnce() -> Vec<u8> + Send + 'static) -> Reply {
    Reply::Later(Box::new(f))
}

fn add_partitions(c: &TxnCoordinator, q: AddPartitionsToTxnRequest, cid: i32, version: i16) -> Vec<u8> {
    let parts: Vec<(String, i32)> = q
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
        .collect();
    let result = c.add_partitions(&q.v3_and_below_transactional_id.0, q.v3_and_below_producer_id.0, q.v3_and_below_producer_epoch, &parts);
    let mut codes = match result {
        Ok(codes) => codes,
        Err(e) => vec![fenced(e, version, 2); parts.len()],
    }
    .into_iter();
    let topics = q
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            let results = t
                .partitions
                .iter()
                .map(|&p| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(codes.next().unwrap_or(code::NONE))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(t.name).with_results_by_partition(results)
        })
        .collect();
    let r = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics);
    wire::encode_response(cid, ApiKey::AddPartitionsToTxn, version, &r)
}

fn txn_offset_commit(c: &TxnCoordinator, q: TxnOffsetCommitRequest, cid: i32, version: i16) -> Vec<u8> {
    let offsets: Vec<(String, i32, PendingOffset)> = q
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    PendingOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    },
                )
            })
        })
        .collect();
    let n = offsets.len();
    let member = (q.member_id.as_str(), q.group_instance_id.as_ref().map(|s| s.as_str()), q.generation_id);
    let result = c.txn_offset_commit(&q.transactional_id.0, &q.group_id.0, q.producer_id.0, q.producer_epoch, member, offsets);
    let mut codes = match result {
        Ok(codes) => codes,
        Err(e) => vec![fenced(e, version, 2); n],
    }
    .into_iter();
    let topics = q
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(code::NONE))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(parts)
        })
        .collect();
    let r = TxnOffsetCommitResponse::default().with_topics(topics);
    wire::encode_response(cid, ApiKey::TxnOffsetCommit, version, &r)
}

fn describe(c: &TxnCoordinator, q: DescribeTransactionsRequest, cid: i32, version: i16) -> Vec<u8> {
    let states = q
        .transactional_ids
        .into_iter()
        .map(|id| match c.describe(&id.0) {
            None => TransactionState::default().with_transactional_id(id).with_error_code(code::TRANSACTIONAL_ID_NOT_FOUND),
            Some(m) => {
                let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
                for (t, p) in &m.partitions {
                    by_topic.entry(t.as_str()).or_default().push(*p);
                }
                let topics = by_topic
                    .into_iter()
                    .map(|(t, ps)| TopicData::default().with_topic(TopicName(s(t))).with_partitions(ps))
                    .collect();
                TransactionState::default()
                    .with_transactional_id(id)
                    .with_transaction_state(s(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.epoch)
                    .with_topics(topics)
            }
        })
        .collect();
    let r = DescribeTransactionsResponse::default().with_transaction_states(states);
    wire::encode_response(cid, ApiKey::DescribeTransactions, version, &r)
}

fn list(c: &TxnCoordinator, q: ListTransactionsRequest, cid: i32, version: i16) -> Vec<u8> {
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for f in &q.state_filters {
        match TxnState::ALL.iter().find(|st| st.name() == f.as_str()) {
            Some(st) => states.push(*st),
            None => unknown.push(f.clone()),
        }
    }
    let now = now_ms();
    let mut listed: Vec<(String, super::TxnMeta)> = c
        .list()
        .into_iter()
        .filter(|(_, m)| states.is_empty() || states.contains(&m.state))
        .filter(|(_, m)| q.producer_id_filters.is_empty() || q.producer_id_filters.iter().any(|p| p.0 == m.producer_id))
        // v1: only transactions running longer than the filter (−1: all).
        .filter(|(_, m)| q.duration_filter < 0 || (m.start_ms >= 0 && now - m.start_ms > q.duration_filter))
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let out = listed
        .into_iter()
        .map(|(id, m)| {
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(s(&id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(s(m.state.name()))
        })
        .collect();
    let r = ListTransactionsResponse::default().with_unknown_state_filters(unknown).with_transaction_states(out);
    wire::encode_response(cid, ApiKey::ListTransactions, version, &r)
}
