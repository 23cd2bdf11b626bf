//! The consumer group protocol (KIP-848) on the wire, against the real broker: a member joins
//! with ConsumerGroupHeartbeat and gets the topic's partitions by topic id (resolved through
//! Metadata), ConsumerGroupDescribe / ListGroups v5 / DescribeGroups show the group, a classic
//! JoinGroup for it is refused, OffsetCommit/OffsetFetch check the member epoch, and a member
//! that stops heartbeating is removed after the session timeout (its partitions go to the other).

mod common;

use std::time::{Duration, Instant};

use common::{start_broker_with, Client};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const GROUP_ID_NOT_FOUND: i16 = 69;
const UNSUPPORTED_ASSIGNOR: i16 = 112;

fn join(group: &str, member: &str, topic: &str) -> ConsumerGroupHeartbeatRequest {
    let mut r = ConsumerGroupHeartbeatRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.member_epoch = 0;
    r.rebalance_timeout_ms = 30_000;
    r.subscribed_topic_names = Some(vec![TopicName(s(topic))]);
    r.topic_partitions = Some(vec![]);
    r
}

fn heartbeat(group: &str, member: &str, epoch: i32, owned: Option<Vec<TopicPartitions>>) -> ConsumerGroupHeartbeatRequest {
    let mut r = ConsumerGroupHeartbeatRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.member_epoch = epoch;
    r.rebalance_timeout_ms = -1;
    r.topic_partitions = owned;
    r
}

/// Partitions of an assignment (all of one topic here).
fn parts(a: &Option<consumer_group_heartbeat_response::Assignment>) -> Option<Vec<i32>> {
    a.as_ref().map(|a| {
        let mut v: Vec<i32> = a.topic_partitions.iter().flat_map(|t| t.partitions.clone()).collect();
        v.sort();
        v
    })
}

fn owned(a: &Option<consumer_group_heartbeat_response::Assignment>) -> Option<Vec<TopicPartitions>> {
    a.as_ref().map(|a| {
        a.topic_partitions
            .iter()
            .map(|t| {
                let mut tp = TopicPartitions::default();
                tp.topic_id = t.topic_id;
                tp.partitions = t.partitions.clone();
                tp
            })
            .collect()
    })
}

fn commit(c: &mut Client, group: &str, member: &str, epoch: i32, version: i16) -> i16 {
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s(group));
    req.member_id = s(member);
    req.generation_id_or_member_epoch = epoch;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s("orders"));
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = 7;
    t.partitions.push(p);
    req.topics.push(t);
    c.call(version, &req).topics[0].partitions[0].error_code
}

#[test]
fn consumer_protocol_member_lifecycle_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(
        |cfg| {
            cfg.default_partitions = 4;
            cfg.consumer_session_timeout_ms = 3_000;
            cfg.consumer_heartbeat_interval_ms = 200;
        },
        dir.path(),
    );
    let mut c = Client::connect(broker.local_addr());

    // The topic exists (auto-created by Metadata) and carries a topic id (v10+).
    let mut md = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(s("orders")));
    md.topics = Some(vec![t]);
    md.allow_auto_topic_creation = true;
    let r = c.call(12, &md);
    let id = r.topics[0].topic_id;
    assert!(!id.is_nil(), "{r:?}");
    assert_eq!(r.topics[0].partitions.len(), 4);

    // A first member (v0: the server names it) gets every partition at epoch 1.
    let mut j = join("g", "", "orders");
    j.server_assignor = Some(s("range"));
    let a = c.call(0, &j);
    assert_eq!(a.error_code, 0, "{a:?}");
    let a_id = a.member_id.clone().unwrap().to_string();
    assert!(!a_id.is_empty());
    assert_eq!((a.member_epoch, parts(&a.assignment)), (1, Some(vec![0, 1, 2, 3])));
    assert_eq!(a.heartbeat_interval_ms, 200);
    assert_eq!(a.assignment.as_ref().unwrap().topic_partitions[0].topic_id, id);
    // Metadata resolves the id back to the name (v12 lookup by id).
    let mut by_id = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.topic_id = id;
    t.name = None;
    by_id.topics = Some(vec![t]);
    let r = c.call(12, &by_id);
    assert_eq!(r.topics[0].name.as_ref().map(|n| n.0.to_string()), Some("orders".to_string()), "{r:?}");

    // Errors: a wrong epoch is fenced, an unknown member is unknown, an assignor we lack refused.
    assert_eq!(c.call(1, &heartbeat("g", &a_id, 5, None)).error_code, FENCED_MEMBER_EPOCH);
    assert_eq!(c.call(1, &heartbeat("g", "nobody", 1, None)).error_code, UNKNOWN_MEMBER_ID);
    let mut bad = join("g2", "m", "orders");
    bad.server_assignor = Some(s("sticky"));
    assert_eq!(c.call(1, &bad).error_code, UNSUPPORTED_ASSIGNOR);

    // A second member (v1: client-chosen id): nothing until A revokes.
    let b = c.call(1, &join("g", "member-b", "orders"));
    assert_eq!((b.error_code, b.member_epoch, parts(&b.assignment)), (0, 2, Some(vec![])), "{b:?}");
    // A is told to keep two partitions (its epoch stays 1 while it revokes the others) ...
    let a = c.call(1, &heartbeat("g", &a_id, 1, None));
    assert_eq!((a.error_code, a.member_epoch), (0, 1), "{a:?}");
    let a_parts = parts(&a.assignment).unwrap();
    assert_eq!(a_parts.len(), 2, "{a:?}");
    // ... and B still gets nothing: A has not acknowledged the revocation.
    let b = c.call(1, &heartbeat("g", "member-b", 2, Some(vec![])));
    assert_eq!((b.error_code, parts(&b.assignment)), (0, None), "{b:?}");
    // A reports owning only the two it keeps: it moves to epoch 2, and B gets the others.
    let a = c.call(1, &heartbeat("g", &a_id, 1, owned(&a.assignment)));
    assert_eq!((a.error_code, a.member_epoch), (0, 2), "{a:?}");
    let b = c.call(1, &heartbeat("g", "member-b", 2, Some(vec![])));
    let b_parts = parts(&b.assignment).unwrap();
    assert_eq!(b_parts.len(), 2, "{b:?}");
    assert!(a_parts.iter().all(|p| !b_parts.contains(p)));

    // Describe, list (types filter), describe as a classic group.
    let mut d = ConsumerGroupDescribeRequest::default();
    d.group_ids = vec![GroupId(s("g")), GroupId(s("absent"))];
    let r = c.call(0, &d);
    assert_eq!(r.groups[0].error_code, 0);
    assert_eq!(r.groups[0].group_state.to_string(), "Stable");
    assert_eq!(r.groups[0].assignor_name.to_string(), "range");
    assert_eq!(r.groups[0].members.len(), 2);
    assert_eq!(r.groups[1].error_code, GROUP_ID_NOT_FOUND);
    let mut l = ListGroupsRequest::default();
    l.types_filter = vec![s("consumer")];
    let r = c.call(5, &l);
    let listed: Vec<(String, String)> = r.groups.iter().map(|g| (g.group_id.0.to_string(), g.group_type.to_string())).collect();
    assert_eq!(listed, vec![("g".to_string(), "consumer".to_string())]);
    let mut l = ListGroupsRequest::default();
    l.types_filter = vec![s("classic")];
    assert!(c.call(5, &l).groups.iter().all(|g| g.group_id.0.as_str() != "g"));
    let mut dg = DescribeGroupsRequest::default();
    dg.groups = vec![GroupId(s("g"))];
    let r = c.call(5, &dg);
    assert_eq!((r.groups[0].protocol_type.as_str(), r.groups[0].members.len()), ("consumer", 2));

    // A classic JoinGroup may not take the id of a consumer group with members.
    let mut jg = JoinGroupRequest::default();
    jg.group_id = GroupId(s("g"));
    jg.session_timeout_ms = 10_000;
    jg.rebalance_timeout_ms = 10_000;
    jg.protocol_type = s("consumer");
    let mut p = join_group_request::JoinGroupRequestProtocol::default();
    p.name = s("range");
    jg.protocols.push(p);
    assert_eq!(c.call(5, &jg).error_code, INCONSISTENT_GROUP_PROTOCOL);

    // Offsets: the member epoch is the generation (v9); stale or unknown refused.
    assert_eq!(commit(&mut c, "g", "member-b", 2, 9), 0);
    assert_eq!(commit(&mut c, "g", "member-b", 1, 9), STALE_MEMBER_EPOCH);
    assert_eq!(commit(&mut c, "g", "nobody", 2, 9), UNKNOWN_MEMBER_ID);
    assert_eq!(commit(&mut c, "g", "", -1, 9), UNKNOWN_MEMBER_ID, "a simple commit while the group has members");
    let mut f = OffsetFetchRequest::default();
    let mut fg = OffsetFetchRequestGroup::default();
    fg.group_id = GroupId(s("g"));
    fg.member_id = Some(s("member-b"));
    fg.member_epoch = 2;
    let mut ft = OffsetFetchRequestTopics::default();
    ft.name = TopicName(s("orders"));
    ft.partition_indexes = vec![0];
    fg.topics = Some(vec![ft]);
    f.groups = vec![fg.clone()];
    let r = c.call(9, &f);
    assert_eq!((r.groups[0].error_code, r.groups[0].topics[0].partitions[0].committed_offset), (0, 7));
    fg.member_epoch = 1;
    f.groups = vec![fg];
    assert_eq!(c.call(9, &f).groups[0].error_code, STALE_MEMBER_EPOCH);

    // A stops heartbeating: after the session timeout B is given every partition.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut b_epoch = b.member_epoch;
    let mut b_owned = owned(&b.assignment);
    loop {
        let r = c.call(1, &heartbeat("g", "member-b", b_epoch, b_owned.clone()));
        assert_eq!(r.error_code, 0, "{r:?}");
        b_epoch = r.member_epoch;
        if r.assignment.is_some() {
            b_owned = owned(&r.assignment);
            if parts(&r.assignment) == Some(vec![0, 1, 2, 3]) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "B never got A's partitions: {r:?}");
        std::thread::sleep(Duration::from_millis(100)); // B's heartbeat interval (not a wait for a condition)
    }
    assert_eq!(c.call(1, &heartbeat("g", &a_id, 2, None)).error_code, UNKNOWN_MEMBER_ID, "A was removed");

    // B leaves: the group is empty, and a classic group may then take the id over.
    let left = c.call(1, &heartbeat("g", "member-b", -1, None));
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    let r = c.call(0, &d);
    assert_eq!((r.groups[0].group_state.as_str(), r.groups[0].members.len()), ("Empty", 0));
    assert_eq!(commit(&mut c, "g", "", -1, 9), 0, "a simple commit once the group is empty");
    jg.member_id = s("");
    let r = c.call(3, &jg);
    assert_eq!(r.error_code, 0, "{r:?}");
    // ... and now the consumer protocol may not.
    let r = c.call(1, &join("g", "member-c", "orders"));
    assert_eq!(r.error_code, GROUP_ID_NOT_FOUND, "{r:?}");
    broker.shutdown().unwrap();
}
