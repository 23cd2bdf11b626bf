//! The transaction APIs at the wire (issue 20): coordinator lookup, epochs and fencing,
//! produce checks, read_committed Fetch and ListOffsets, timeouts, restart recovery,
//! Describe/ListTransactions.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{start_broker, Client};
use engine::log::Durability;
use engine::record::{self, build};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn txn_batch(n: usize, pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let vals: Vec<Vec<u8>> = (0..n).map(|i| format!("v{i}").into_bytes()).collect();
    let recs: Vec<build::Rec<'_>> = vals.iter().map(|v| build::Rec { key: None, value: Some(v), timestamp_delta: 0 }).collect();
    let mut b = build::batch_with(&recs, 1, pid, epoch, seq);
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    let crc = record::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn produce(c: &mut Client, id: &str, topic: &str, batch: Vec<u8>) -> i16 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch)))])]);
    c.call(9, &req).responses[0].partition_responses[0].error_code
}

fn init(c: &mut Client, id: &str, timeout_ms: i32, pid: i64, epoch: i16) -> InitProducerIdResponse {
    c.call(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
    )
}

fn add_partition(c: &mut Client, version: i16, id: &str, pid: i64, epoch: i16, topic: &str) -> i16 {
    let r = c.call(
        version,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s(id)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default().with_name(TopicName(s(topic))).with_partitions(vec![0])]),
    );
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

fn end(c: &mut Client, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    c.call(
        3,
        &EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    )
    .error_code
}

/// (high watermark, last stable offset, aborted list, record bytes) of a read_committed Fetch.
type Committed = (i64, i64, Option<Vec<(i64, i64)>>, usize);

fn fetch_committed(c: &mut Client, topic: &str, offset: i64) -> Committed {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(TopicName(s(topic))).with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20)])]);
    let r = c.call(11, &req);
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let aborted = p.aborted_transactions.as_ref().map(|a| a.iter().map(|t| (t.producer_id.0, t.first_offset)).collect());
    (p.high_watermark, p.last_stable_offset, aborted, p.records.as_ref().map_or(0, |b| b.len()))
}

fn latest(c: &mut Client, topic: &str, isolation: i8) -> i64 {
    let req = ListOffsetsRequest::default().with_isolation_level(isolation).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(s(topic)))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)])]);
    c.call(5, &req).topics[0].partitions[0].offset
}

fn describe(c: &mut Client, id: &str) -> describe_transactions_response::TransactionState {
    let r = c.call(0, &DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(id))]));
    r.transaction_states[0].clone()
}

#[test]
fn coordinator_epochs_fencing_and_read_committed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    // The transaction coordinator is this broker.
    let r = c.call(3, &FindCoordinatorRequest::default().with_key(s("tx")).with_key_type(1));
    assert_eq!((r.error_code, r.node_id.0, r.port), (0, 0, broker.local_addr().port() as i32));
    // Topic "t" (auto-created by a plain produce of one record).
    let plain = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(s("t")))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(build::simple_batch(1, 10, 0))))])]);
    assert_eq!(c.call(9, &plain).responses[0].partition_responses[0].error_code, 0);

    let r = init(&mut c, "tx", 60_000, -1, -1);
    assert_eq!((r.error_code, r.producer_epoch), (0, 0));
    let pid = r.producer_id.0;
    let r = init(&mut c, "tx", 60_000, -1, -1);
    assert_eq!((r.error_code, r.producer_id.0, r.producer_epoch), (0, pid, 1), "a new session bumps the epoch");
    // The old epoch is fenced: PRODUCER_FENCED (v2+), INVALID_PRODUCER_EPOCH before.
    assert_eq!(add_partition(&mut c, 3, "tx", pid, 0, "t"), 90);
    assert_eq!(add_partition(&mut c, 1, "tx", pid, 0, "t"), 47);
    // A transactional batch to a partition not in the transaction: INVALID_TXN_STATE.
    assert_eq!(produce(&mut c, "tx", "t", txn_batch(3, pid, 1, 0)), 48);
    assert_eq!(add_partition(&mut c, 3, "tx", pid, 1, "t"), 0);
    assert_eq!(produce(&mut c, "tx", "t", txn_batch(3, pid, 0, 0)), 47, "old epoch on produce");
    assert_eq!(produce(&mut c, "tx", "t", txn_batch(3, pid, 1, 0)), 0);
    // Open transaction at offsets 1..=3: read_committed stops at 1.
    assert_eq!(latest(&mut c, "t", 0), 4);
    assert_eq!(latest(&mut c, "t", 1), 1);
    let (hw, lso, aborted, bytes) = fetch_committed(&mut c, "t", 1);
    assert_eq!((hw, lso, aborted, bytes), (4, 1, Some(vec![]), 0));
    assert_eq!(describe(&mut c, "tx").transaction_state.as_str(), "Ongoing");
    assert_eq!(end(&mut c, "tx", pid, 1, false), 0, "abort");
    // 1..=3 aborted, marker at 4: read_committed reads up to 5 with the aborted transaction listed.
    let (hw, lso, aborted, bytes) = fetch_committed(&mut c, "t", 0);
    assert_eq!((hw, lso, aborted), (5, 5, Some(vec![(pid, 1)])));
    assert!(bytes > 0);
    assert_eq!(describe(&mut c, "tx").transaction_state.as_str(), "CompleteAbort");
    // Commit a second one.
    assert_eq!(add_partition(&mut c, 3, "tx", pid, 1, "t"), 0);
    assert_eq!(produce(&mut c, "tx", "t", txn_batch(2, pid, 1, 3)), 0);
    assert_eq!(end(&mut c, "tx", pid, 1, true), 0, "commit");
    assert_eq!(end(&mut c, "tx", pid, 1, true), 0, "a retried commit is answered again");
    assert_eq!(end(&mut c, "tx", pid, 1, false), 48, "abort after commit: INVALID_TXN_STATE");
    assert_eq!(latest(&mut c, "t", 1), 8);
    // After the commit, a batch of the finished transaction is refused (no hanging transaction).
    assert_eq!(produce(&mut c, "tx", "t", txn_batch(1, pid, 1, 5)), 48);
    // Operators.
    let r = c.call(1, &ListTransactionsRequest::default().with_state_filters(vec![s("CompleteCommit"), s("Bogus")]).with_duration_filter(-1));
    assert_eq!(r.transaction_states.len(), 1);
    assert_eq!((r.transaction_states[0].transactional_id.0.as_str(), r.transaction_states[0].producer_id.0), ("tx", pid));
    assert_eq!(r.unknown_state_filters, vec![s("Bogus")]);
    let d = c.call(0, &DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s("nope"))]));
    assert_eq!(d.transaction_states[0].error_code, 105, "TRANSACTIONAL_ID_NOT_FOUND");
    // The internal topic is hidden.
    let m = c.call(12, &MetadataRequest::default().with_topics(None));
    assert!(m.topics.iter().all(|t| t.name.as_ref().is_none_or(|n| n.0.as_str() != "__transaction_state")));
    broker.shutdown().unwrap();
}

#[test]
fn a_timed_out_transaction_is_aborted_and_its_producer_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    let r = init(&mut c, "slow", 500, -1, -1);
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    broker.logs().get_or_create("t2", 1).unwrap();
    assert_eq!(add_partition(&mut c, 3, "slow", pid, epoch, "t2"), 0);
    assert_eq!(produce(&mut c, "slow", "t2", txn_batch(4, pid, epoch, 0)), 0);
    // The reaper (every second) aborts it once 500 ms passed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = describe(&mut c, "slow");
        if d.transaction_state.as_str() == "CompleteAbort" {
            assert_eq!(d.producer_epoch, epoch + 1, "the abort bumps the epoch");
            break;
        }
        assert!(Instant::now() < deadline, "transaction not aborted after its timeout: {d:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(end(&mut c, "slow", pid, epoch, true), 90, "the timed-out producer is fenced");
    let (hw, lso, aborted, _) = fetch_committed(&mut c, "t2", 0);
    assert_eq!((hw, lso, aborted), (5, 5, Some(vec![(pid, 0)])));
    // It may re-initialise with its last epoch (KIP-360); a stranger's epoch is fenced.
    assert_eq!(init(&mut c, "slow", 500, pid, epoch + 5).error_code, 90);
    let r = init(&mut c, "slow", 60_000, pid, epoch);
    assert_eq!((r.error_code, r.producer_epoch), (0, epoch + 2));
    broker.shutdown().unwrap();
}

#[test]
fn open_transactions_and_decisions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (pid, epoch);
    {
        let broker = start_broker(dir.path(), Durability::Group, 1);
        broker.logs().get_or_create("r", 1).unwrap();
        let mut c = Client::connect(broker.local_addr());
        let r = init(&mut c, "rt", 60_000, -1, -1);
        (pid, epoch) = (r.producer_id.0, r.producer_epoch);
        assert_eq!(add_partition(&mut c, 3, "rt", pid, epoch, "r"), 0);
        assert_eq!(produce(&mut c, "rt", "r", txn_batch(3, pid, epoch, 0)), 0);
        assert_eq!(end(&mut c, "rt", pid, epoch, true), 0);
        assert_eq!(add_partition(&mut c, 3, "rt", pid, epoch, "r"), 0);
        assert_eq!(produce(&mut c, "rt", "r", txn_batch(2, pid, epoch, 3)), 0);
        broker.shutdown().unwrap();
    }
    let broker = start_broker(dir.path(), Durability::Group, 1);
    let mut c = Client::connect(broker.local_addr());
    // 0..=2 committed, marker 3, 4..=5 open: the LSO (rebuilt from the log) is 4.
    assert_eq!(latest(&mut c, "r", 1), 4);
    let d = describe(&mut c, "rt");
    assert_eq!((d.transaction_state.as_str(), d.producer_id.0, d.producer_epoch), ("Ongoing", pid, epoch));
    assert_eq!(d.topics.len(), 1);
    // The producer comes back: its open transaction is aborted first.
    let r = init(&mut c, "rt", 60_000, -1, -1);
    assert_eq!((r.error_code, r.producer_id.0), (0, pid));
    assert!(r.producer_epoch > epoch);
    let (hw, lso, aborted, _) = fetch_committed(&mut c, "r", 0);
    assert_eq!((hw, lso, aborted), (7, 7, Some(vec![(pid, 4)])));
    broker.shutdown().unwrap();
}

fn offset_fetch(c: &mut Client, group: &str, topic: &str) -> i64 {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let r = c.call(
        5,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default().with_name(TopicName(s(topic))).with_partition_indexes(vec![0])])),
    );
    r.topics[0].partitions[0].committed_offset
}

fn txn_offset_commit(c: &mut Client, id: &str, pid: i64, epoch: i16, group: &str, topic: &str, offset: i64) -> i16 {
    use kafka_protocol::messages::txn_offset_commit_request::{TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic};
    let add = c.call(
        3,
        &AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(s(group))),
    );
    assert_eq!(add.error_code, 0);
    let r = c.call(
        3,
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_group_id(GroupId(s(group)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset)])]),
    );
    r.topics[0].partitions[0].error_code
}

#[test]
fn txn_offsets_are_visible_only_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Durability::Group, 1);
    broker.logs().get_or_create("src", 1).unwrap();
    let mut c = Client::connect(broker.local_addr());
    let r = init(&mut c, "off", 60_000, -1, -1);
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    // Aborted: never visible.
    assert_eq!(txn_offset_commit(&mut c, "off", pid, epoch, "g1", "src", 7), 0);
    assert_eq!(offset_fetch(&mut c, "g1", "src"), -1, "pending offsets are not visible");
    assert_eq!(end(&mut c, "off", pid, epoch, false), 0);
    assert_eq!(offset_fetch(&mut c, "g1", "src"), -1, "aborted offsets are never visible");
    // Committed: visible after the commit.
    assert_eq!(txn_offset_commit(&mut c, "off", pid, epoch, "g1", "src", 9), 0);
    assert_eq!(offset_fetch(&mut c, "g1", "src"), -1);
    assert_eq!(end(&mut c, "off", pid, epoch, true), 0);
    assert_eq!(offset_fetch(&mut c, "g1", "src"), 9);
    // A stale epoch cannot commit offsets.
    init(&mut c, "off", 60_000, -1, -1);
    assert_eq!(txn_offset_commit_fenced(&mut c, pid, epoch), 90);
    broker.shutdown().unwrap();
}

fn txn_offset_commit_fenced(c: &mut Client, pid: i64, epoch: i16) -> i16 {
    let r = c.call(
        3,
        &AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s("off")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(s("g1"))),
    );
    r.error_code
}

/// `__transaction_state` snapshot: after it, retention deletes the segments below it and a
/// restart still restores every transactional id as it was.
#[test]
fn transaction_state_snapshot_lets_retention_delete_and_restores_every_id() {
    use engine::groups::GroupCoordinator;
    use engine::io::SimIo;
    use engine::log::{LogConfig, LogManager};
    use engine::txn::{TxnCoordinator, TxnState};
    let cfg = LogConfig {
        durability: Durability::Group,
        segment_bytes_max: 1_000,
        retention_bytes_max: Some(1),
        preallocate_bytes: 0,
        scrub_rate_mib: 0,
        ..LogConfig::default()
    };
    let io = SimIo::new();
    let open = || {
        let mgr = LogManager::open(std::path::Path::new("/d"), std::sync::Arc::new(io.clone()), cfg.clone()).unwrap();
        let groups = GroupCoordinator::new(mgr.clone()).unwrap();
        let txn = TxnCoordinator::new(mgr.clone(), groups.clone()).unwrap();
        (mgr, groups, txn)
    };
    let (mgr, groups, txn) = open();
    mgr.create_topic("sn", 1, None).unwrap();
    let mut want = Vec::new();
    for i in 0..40 {
        let id = format!("snap-{i}");
        let (pid, _) = txn.init_producer_id(&id, 60_000, -1, -1).unwrap();
        let (pid2, epoch) = txn.init_producer_id(&id, 60_000, pid, 0).unwrap();
        assert_eq!(pid2, pid);
        if i % 2 == 0 {
            txn.add_partitions(&id, pid, epoch, &[("sn".to_string(), 0)]).unwrap();
        }
        want.push((id, pid, epoch, if i % 2 == 0 { TxnState::Ongoing } else { TxnState::Empty }));
    }
    let log = mgr.partition("__transaction_state", 0).unwrap();
    let segments = log.segment_count();
    assert!(segments > 2, "the state log rolled: {segments} segments");
    // Internal topics keep everything until their owner sets a floor.
    log.enforce_retention().unwrap();
    assert_eq!(log.segment_count(), segments);
    assert_eq!(txn.snapshot().unwrap(), 40);
    log.enforce_retention().unwrap();
    assert!(log.segment_count() < segments, "retention deleted what the snapshot superseded");
    txn.shutdown();
    groups.shutdown();
    mgr.close().unwrap();
    drop((txn, groups, mgr));
    let (mgr, groups, txn) = open();
    for (id, pid, epoch, state) in &want {
        let m = txn.describe(id).unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!((m.producer_id, m.epoch, m.state), (*pid, *epoch, *state), "{id}");
    }
    txn.shutdown();
    groups.shutdown();
    mgr.close().unwrap();
}

/// Ids and groups longer than a state record can hold (16-bit length) are refused, not cut
/// short (two ids sharing their first 32,767 bytes would share one state).
#[test]
fn overlong_transactional_id_and_group_are_refused() {
    use engine::groups::GroupCoordinator;
    use engine::io::SimIo;
    use engine::log::{LogConfig, LogManager};
    use engine::txn::{code, TxnCoordinator};
    let mgr = LogManager::open(std::path::Path::new("/d"), std::sync::Arc::new(SimIo::new()), LogConfig::default()).unwrap();
    let groups = GroupCoordinator::new(mgr.clone()).unwrap();
    let txn = TxnCoordinator::new(mgr.clone(), groups.clone()).unwrap();
    let long = "x".repeat(40_000);
    assert_eq!(txn.init_producer_id(&long, 60_000, -1, -1), Err(code::INVALID_REQUEST));
    assert!(txn.describe(&long).is_none());
    let (pid, epoch) = txn.init_producer_id("short", 60_000, -1, -1).unwrap();
    assert_eq!(txn.add_offsets("short", pid, epoch, &long), code::INVALID_REQUEST);
    assert_eq!(txn.add_offsets("short", pid, epoch, "g"), code::NONE);
    txn.shutdown();
    groups.shutdown();
    mgr.close().unwrap();
}

/// A transactional Produce (on a network thread) never waits for the coordinator's fsyncs: with
/// the disk stalled under an AddPartitionsToTxn of the same transactional id (its lock held
/// across the fsync), a produce to a partition already added goes through; one to the
/// partition being added is refused until that is durable, and the stalled request completes
/// once the disk is back.
#[test]
fn transactional_produce_does_not_wait_for_a_stalled_coordinator_fsync() {
    use engine::groups::GroupCoordinator;
    use engine::io::SimIo;
    use engine::log::{LogConfig, LogManager};
    use engine::txn::{code, TxnCoordinator};
    use std::sync::mpsc;
    let io = SimIo::new();
    let mgr = LogManager::open(std::path::Path::new("/d"), std::sync::Arc::new(io.clone()), LogConfig::default()).unwrap();
    let groups = GroupCoordinator::new(mgr.clone()).unwrap();
    let txn = TxnCoordinator::new(mgr.clone(), groups.clone()).unwrap();
    mgr.create_topic("g", 2, None).unwrap();
    let (pid, epoch) = txn.init_producer_id("stall", 60_000, -1, -1).unwrap();
    txn.add_partitions("stall", pid, epoch, &[("g".to_string(), 0)]).unwrap();

    io.hold_syncs(true);
    let t2 = txn.clone();
    let adding = std::thread::spawn(move || t2.add_partitions("stall", pid, epoch, &[("g".to_string(), 1)]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while io.syncs_held() == 0 {
        assert!(Instant::now() < deadline, "the AddPartitionsToTxn never reached its fsync");
        std::thread::yield_now();
    }
    let (tx, rx) = mpsc::channel();
    let t3 = txn.clone();
    std::thread::spawn(move || {
        let added = t3.with_produce("stall", pid, epoch, "g", 0, || "appended");
        let adding = t3.with_produce("stall", pid, epoch, "g", 1, || "appended");
        let stale = t3.with_produce("stall", pid, epoch - 1, "g", 0, || "appended");
        let _ = tx.send((added, adding, stale));
    });
    let (added, adding_now, stale) = rx.recv_timeout(Duration::from_secs(30)).expect("a produce waited for the stalled fsync");
    assert_eq!(added, Ok("appended"));
    assert_eq!(adding_now, Err(code::INVALID_TXN_STATE), "a partition is not writable before it is durably added");
    assert_eq!(stale, Err(code::INVALID_PRODUCER_EPOCH));
    assert!(!adding.is_finished(), "the AddPartitionsToTxn was still waiting for its fsync");
    io.hold_syncs(false);
    assert_eq!(adding.join().unwrap(), Ok(vec![code::NONE]));
    assert_eq!(txn.with_produce("stall", pid, epoch, "g", 1, || "appended"), Ok("appended"));
    txn.shutdown();
    groups.shutdown();
    mgr.close().unwrap();
}

/// A transactional id without a transaction, unused for `id_expiration_ms`, is forgotten
/// (durably: still gone after a restart); one with an open transaction is not; the expired
/// id's producer is refused and a new InitProducerId starts it over.
#[test]
fn idle_transactional_ids_expire_durably() {
    use engine::groups::GroupCoordinator;
    use engine::io::SimIo;
    use engine::log::{LogConfig, LogManager};
    use engine::txn::{code, TxnConfig, TxnCoordinator, TxnState};
    let io = SimIo::new();
    let open = |cfg: TxnConfig| {
        let mgr = LogManager::open(std::path::Path::new("/d"), std::sync::Arc::new(io.clone()), LogConfig::default()).unwrap();
        let groups = GroupCoordinator::new(mgr.clone()).unwrap();
        let txn = TxnCoordinator::with_config(mgr.clone(), groups.clone(), cfg).unwrap();
        (mgr, groups, txn)
    };
    let (mgr, groups, txn) = open(TxnConfig { id_expiration_ms: 300, tick_ms: 20, ..TxnConfig::default() });
    mgr.create_topic("x", 1, None).unwrap();
    let (old_pid, old_epoch) = txn.init_producer_id("idle", 60_000, -1, -1).unwrap();
    let (busy_pid, busy_epoch) = txn.init_producer_id("busy", 60_000, -1, -1).unwrap();
    txn.add_partitions("busy", busy_pid, busy_epoch, &[("x".to_string(), 0)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while txn.describe("idle").is_some() {
        assert!(Instant::now() < deadline, "the idle transactional id never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(txn.describe("busy").map(|m| m.state), Some(TxnState::Ongoing), "an open transaction does not expire");
    assert_eq!(txn.add_partitions("idle", old_pid, old_epoch, &[("x".to_string(), 0)]), Err(code::INVALID_PRODUCER_ID_MAPPING));
    assert_eq!(txn.with_produce("idle", old_pid, old_epoch, "x", 0, || ()), Err(code::INVALID_PRODUCER_ID_MAPPING));
    txn.shutdown();
    groups.shutdown();
    mgr.close().unwrap();
    drop((txn, groups, mgr));

    let (mgr, groups, txn) = open(TxnConfig::default());
    assert!(txn.describe("idle").is_none(), "the expiry is durable");
    assert_eq!(txn.describe("busy").map(|m| (m.producer_id, m.state)), Some((busy_pid, TxnState::Ongoing)));
    let (new_pid, epoch) = txn.init_producer_id("idle", 60_000, -1, -1).unwrap();
    assert_ne!(new_pid, old_pid, "an expired id starts over with a new producer id");
    assert_eq!(epoch, 0);
    txn.shutdown();
    groups.shutdown();
    mgr.close().unwrap();
}
