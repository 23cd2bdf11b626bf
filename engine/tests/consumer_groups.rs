//! The group coordinator driven through `groups::handle()` with kafka-protocol-encoded requests,
//! as the broker calls it: join/sync/heartbeat/leave, session expiry, generation errors,
//! committed offsets and producer ids surviving a reopen of the log manager.

/// The broker's process allocator (`io::sys::GuardedAlloc`), installed by this test binary as the broker
/// binary does (a library never installs one): hostile array counts must not abort it.
#[global_allocator]
static GLOBAL: engine::io::sys::GuardedAlloc = engine::io::sys::GuardedAlloc;

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use engine::groups::Reply;
use engine::groups::{self, err, GroupConfig, GroupCoordinator, GroupState};
use engine::io::UringIo;
use engine::log::{Durability, LogConfig, LogManager};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

const SESSION_MS: i32 = 600;
const REBALANCE_MS: i32 = 3_000;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn open_logs(dir: &Path) -> Arc<LogManager> {
    let cfg = LogConfig { durability: Durability::Group, ..LogConfig::default() };
    LogManager::open(dir, Arc::new(UringIo), cfg).expect("open logs")
}

fn coordinator(logs: &Arc<LogManager>) -> Arc<GroupCoordinator> {
    let cfg = GroupConfig { session_timeout_min_ms: 10, reaper_tick_ms: 10, ..GroupConfig::default() };
    GroupCoordinator::with_config(logs.clone(), cfg).expect("coordinator")
}

/// Send raw body bytes through `handle()` and decode the response.
fn call_raw<Resp: Decodable + HeaderVersion>(c: &Arc<GroupCoordinator>, key: i16, v: i16, body: Bytes) -> Resp {
    call_raw_as(c, key, v, v, body)
}

/// As [`call_raw`], decoding the body as version `body_v` (OffsetCommit v0/v1 answer as v2).
fn call_raw_as<Resp: Decodable + HeaderVersion>(
    c: &Arc<GroupCoordinator>,
    key: i16,
    v: i16,
    body_v: i16,
    body: Bytes,
) -> Resp {
    let header = RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(v)
        .with_correlation_id(4242)
        .with_client_id(Some(s("tester")));
    let mut body = body;
    let out = match groups::handle(c, key, v, &header, &mut body) {
        r @ (Reply::Later(_) | Reply::Pending(_)) => r.wait_response().expect("a response"),
        other => panic!("group API gave no response: {other:?}"),
    };
    let mut b = Bytes::from(out);
    let h = ResponseHeader::decode(&mut b, Resp::header_version(v)).expect("response header");
    assert_eq!(h.correlation_id, 4242);
    let r = Resp::decode(&mut b, body_v).expect("response body");
    assert!(b.is_empty(), "trailing bytes in response to api {key} v{v}");
    r
}

fn call<Req: Encodable, Resp: Decodable + HeaderVersion>(c: &Arc<GroupCoordinator>, key: i16, v: i16, req: &Req) -> Resp {
    let mut buf = BytesMut::new();
    req.encode(&mut buf, v).expect("encode request");
    call_raw(c, key, v, buf.freeze())
}

fn join_req(group: &str, member: &str, session_ms: i32, meta: &[u8]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(REBALANCE_MS)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::copy_from_slice(meta))])
}

/// JoinGroup v5; a new member (empty id) goes through MEMBER_ID_REQUIRED first, as in Kafka.
fn join(c: &Arc<GroupCoordinator>, group: &str, member: &str) -> JoinGroupResponse {
    join_with(c, group, join_req(group, member, SESSION_MS, member.as_bytes()))
}

fn join_with(c: &Arc<GroupCoordinator>, _group: &str, mut req: JoinGroupRequest) -> JoinGroupResponse {
    let r: JoinGroupResponse = call(c, 11, 5, &req);
    if r.error_code != err::MEMBER_ID_REQUIRED {
        return r;
    }
    assert!(req.member_id.is_empty());
    req.member_id = r.member_id;
    call(c, 11, 5, &req)
}

/// JoinGroup v9 the way modern clients do it: MEMBER_ID_REQUIRED, then rejoin with the id.
fn join_new_v9(c: &Arc<GroupCoordinator>, group: &str) -> JoinGroupResponse {
    let r: JoinGroupResponse = call(c, 11, 9, &join_req(group, "", SESSION_MS, b"m"));
    assert_eq!(r.error_code, err::MEMBER_ID_REQUIRED);
    assert!(!r.member_id.is_empty());
    call(c, 11, 9, &join_req(group, r.member_id.as_str(), SESSION_MS, b"m"))
}

fn sync(c: &Arc<GroupCoordinator>, group: &str, member: &str, gen: i32, assign: &[(&str, &[u8])]) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id(gen)
        .with_assignments(
            assign
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default().with_member_id(s(m)).with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        );
    call(c, 14, 3, &req)
}

fn heartbeat(c: &Arc<GroupCoordinator>, group: &str, member: &str, gen: i32) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id(gen);
    let r: HeartbeatResponse = call(c, 12, 4, &req);
    r.error_code
}

fn leave(c: &Arc<GroupCoordinator>, group: &str, member: &str) -> LeaveGroupResponse {
    let req = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_members(vec![MemberIdentity::default().with_member_id(s(member))]);
    call(c, 13, 4, &req)
}

fn commit(c: &Arc<GroupCoordinator>, v: i16, group: &str, member: &str, gen: i32, parts: &[(&str, i32, i64)]) -> Vec<i16> {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (t, p, o) in parts {
        let part = OffsetCommitRequestPartition::default()
            .with_partition_index(*p)
            .with_committed_offset(*o)
            .with_committed_metadata(Some(s("meta")));
        match topics.iter_mut().find(|x| x.name.as_str() == *t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(OffsetCommitRequestTopic::default().with_name(TopicName(s(t))).with_partitions(vec![part])),
        }
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(gen)
        .with_member_id(s(member))
        .with_topics(topics);
    let r: OffsetCommitResponse = call(c, 8, v, &req);
    r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect()
}

fn fetch_v1(c: &Arc<GroupCoordinator>, group: &str, topic: &str, parts: &[i32]) -> Vec<i64> {
    let req = OffsetFetchRequest::default().with_group_id(GroupId(s(group))).with_topics(Some(vec![
        OffsetFetchRequestTopic::default().with_name(TopicName(s(topic))).with_partition_indexes(parts.to_vec()),
    ]));
    let r: OffsetFetchResponse = call(c, 9, 1, &req);
    r.topics[0].partitions.iter().map(|p| p.committed_offset).collect()
}

fn fetch_v8(c: &Arc<GroupCoordinator>, group: &str, topic: &str, parts: &[i32]) -> Vec<i64> {
    let req = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(TopicName(s(topic)))
            .with_partition_indexes(parts.to_vec())]))]);
    let r: OffsetFetchResponse = call(c, 9, 8, &req);
    assert_eq!(r.groups.len(), 1);
    r.groups[0].topics[0].partitions.iter().map(|p| p.committed_offset).collect()
}

fn state(c: &GroupCoordinator, g: &str) -> (GroupState, i32, Vec<String>) {
    c.group_summary(g).expect("group exists")
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_members_join_sync_and_rebalance_when_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);

    // First member: generation 1, leader of itself.
    let a = join_new_v9(&c, "g");
    assert_eq!(a.error_code, err::NONE);
    let a_id = a.member_id.as_str().to_string();
    assert_eq!(a.generation_id, 1);
    assert_eq!(a.leader, a.member_id);
    assert_eq!(a.members.len(), 1);
    assert_eq!(a.protocol_name.as_ref().map(|p| p.as_str()), Some("range"));
    let sa = sync(&c, "g", &a_id, 1, &[(&a_id, b"all")]);
    assert_eq!((sa.error_code, &sa.assignment[..]), (err::NONE, &b"all"[..]));
    assert_eq!(state(&c, "g").0, GroupState::Stable);

    // Second member: its join waits until the first rejoins.
    let c2 = c.clone();
    let b_join = thread::spawn(move || join_new_v9(&c2, "g"));
    wait_for("rebalance to start", Duration::from_secs(5), || state(&c, "g").0 == GroupState::PreparingRebalance);
    assert_eq!(heartbeat(&c, "g", &a_id, 1), err::REBALANCE_IN_PROGRESS);
    let a2 = join(&c, "g", &a_id);
    let b = b_join.join().unwrap();
    assert_eq!((a2.error_code, b.error_code), (err::NONE, err::NONE));
    assert_eq!((a2.generation_id, b.generation_id), (2, 2));
    assert_eq!(a2.leader.as_str(), a_id, "the old leader stays leader");
    assert_eq!(a2.members.len(), 2, "the leader gets every member's metadata");
    assert!(b.members.is_empty(), "followers get no member list");
    let b_id = b.member_id.as_str().to_string();

    // Follower's SyncGroup waits for the leader's assignment.
    let c2 = c.clone();
    let b2 = b_id.clone();
    let b_sync = thread::spawn(move || sync(&c2, "g", &b2, 2, &[]));
    thread::sleep(Duration::from_millis(50));
    let sa = sync(&c, "g", &a_id, 2, &[(&a_id, b"p0,p1"), (&b_id, b"p2,p3")]);
    let sb = b_sync.join().unwrap();
    assert_eq!((sa.error_code, &sa.assignment[..]), (err::NONE, &b"p0,p1"[..]));
    assert_eq!((sb.error_code, &sb.assignment[..]), (err::NONE, &b"p2,p3"[..]));
    assert_eq!(heartbeat(&c, "g", &b_id, 2), err::NONE);

    // The leader leaves: the other member rebalances alone and becomes leader.
    let l = leave(&c, "g", &a_id);
    assert_eq!((l.error_code, l.members[0].error_code), (err::NONE, err::NONE));
    assert_eq!(heartbeat(&c, "g", &b_id, 2), err::REBALANCE_IN_PROGRESS);
    let b3 = join(&c, "g", &b_id);
    assert_eq!((b3.error_code, b3.generation_id), (err::NONE, 3));
    assert_eq!(b3.leader.as_str(), b_id);
    assert_eq!(b3.members.len(), 1);
    let sb = sync(&c, "g", &b_id, 3, &[(&b_id, b"p0,p1,p2,p3")]);
    assert_eq!(&sb.assignment[..], b"p0,p1,p2,p3");
    // Leaving twice: unknown member, group unaffected.
    assert_eq!(leave(&c, "g", &a_id).members[0].error_code, err::UNKNOWN_MEMBER_ID);
    assert_eq!(heartbeat(&c, "g", &b_id, 3), err::NONE);
    // Last member leaves: Empty.
    leave(&c, "g", &b_id);
    assert_eq!(state(&c, "g").0, GroupState::Empty);
}

#[test]
fn session_timeout_removes_a_silent_member() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let a = join(&c, "g", "");
    let a_id = a.member_id.as_str().to_string();
    sync(&c, "g", &a_id, 1, &[(&a_id, b"x")]);
    let c2 = c.clone();
    let b_join = thread::spawn(move || join(&c2, "g", ""));
    wait_for("rebalance", Duration::from_secs(5), || state(&c, "g").0 == GroupState::PreparingRebalance);
    let a2 = join(&c, "g", &a_id);
    let b = b_join.join().unwrap();
    let b_id = b.member_id.as_str().to_string();
    assert_eq!(a2.generation_id, 2);
    let c2 = c.clone();
    let b2 = b_id.clone();
    let b_sync = thread::spawn(move || sync(&c2, "g", &b2, 2, &[]));
    sync(&c, "g", &a_id, 2, &[]);
    assert_eq!(b_sync.join().unwrap().error_code, err::NONE);

    // A keeps heartbeating, B goes silent: after B's session timeout A is told to rejoin.
    let started = Instant::now();
    loop {
        let e = heartbeat(&c, "g", &a_id, 2);
        if e == err::REBALANCE_IN_PROGRESS {
            break;
        }
        assert_eq!(e, err::NONE);
        assert!(started.elapsed() < Duration::from_secs(5), "B never expired");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(started.elapsed() >= Duration::from_millis(SESSION_MS as u64 / 2));
    assert!(!state(&c, "g").2.contains(&b_id), "B was removed");
    let a3 = join(&c, "g", &a_id);
    assert_eq!((a3.error_code, a3.generation_id, a3.members.len()), (err::NONE, 3, 1));
    // B comes back with its old identity: unknown.
    assert_eq!(heartbeat(&c, "g", &b_id, 2), err::UNKNOWN_MEMBER_ID);
    assert_eq!(join(&c, "g", &b_id).error_code, err::UNKNOWN_MEMBER_ID);
}

#[test]
fn member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    // A long session but a short rebalance timeout for A.
    let mut req = join_req("g", "", 10_000, b"a");
    req.rebalance_timeout_ms = 300;
    let a = join_with(&c, "g", req);
    let a_id = a.member_id.as_str().to_string();
    sync(&c, "g", &a_id, 1, &[]);
    // B joins with the same short rebalance timeout; A never rejoins.
    let mut req = join_req("g", "", 10_000, b"b");
    req.rebalance_timeout_ms = 300;
    let started = Instant::now();
    let b = join_with(&c, "g", req);
    assert_eq!(b.error_code, err::NONE);
    assert!(started.elapsed() >= Duration::from_millis(250), "completed before the rebalance timeout");
    assert_eq!((b.generation_id, b.members.len()), (2, 1));
    assert_eq!(b.leader, b.member_id);
    assert_eq!(heartbeat(&c, "g", &a_id, 1), err::UNKNOWN_MEMBER_ID);
}

#[test]
fn generation_and_member_errors_leave_the_group_usable() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    logs.create_topic("t", 2, None).unwrap();
    let c = coordinator(&logs);
    let a = join(&c, "g", "");
    let a_id = a.member_id.as_str().to_string();
    sync(&c, "g", &a_id, 1, &[(&a_id, b"x")]);

    assert_eq!(heartbeat(&c, "g", &a_id, 7), err::ILLEGAL_GENERATION);
    assert_eq!(heartbeat(&c, "g", "nobody", 1), err::UNKNOWN_MEMBER_ID);
    assert_eq!(heartbeat(&c, "no-such-group", "nobody", 1), err::UNKNOWN_MEMBER_ID);
    assert_eq!(sync(&c, "g", &a_id, 0, &[]).error_code, err::ILLEGAL_GENERATION);
    assert_eq!(sync(&c, "g", "nobody", 1, &[]).error_code, err::UNKNOWN_MEMBER_ID);
    assert_eq!(join(&c, "g", "nobody").error_code, err::UNKNOWN_MEMBER_ID);
    assert_eq!(commit(&c, 8, "g", &a_id, 0, &[("t", 0, 5)]), vec![err::ILLEGAL_GENERATION]);
    assert_eq!(commit(&c, 8, "g", "nobody", 1, &[("t", 0, 5)]), vec![err::UNKNOWN_MEMBER_ID]);
    // Only members may commit to a group that has members.
    assert_eq!(commit(&c, 8, "g", "", -1, &[("t", 0, 5)]), vec![err::UNKNOWN_MEMBER_ID]);
    // Unknown topic/partition: that partition only.
    assert_eq!(
        commit(&c, 8, "g", &a_id, 1, &[("t", 0, 5), ("t", 9, 1), ("nope", 0, 1)]),
        vec![err::NONE, err::UNKNOWN_TOPIC_OR_PARTITION, err::UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(fetch_v1(&c, "g", "t", &[0, 1]), vec![5, -1]);
    // Oversized member metadata: refused, group untouched.
    let big = vec![0u8; (1 << 20) + 1];
    let r: JoinGroupResponse = call(&c, 11, 5, &join_req("g", "", SESSION_MS, &big));
    assert_eq!(r.error_code, err::MESSAGE_TOO_LARGE);
    // Inconsistent protocol type from a newcomer.
    let mut other = join_req("g", "", SESSION_MS, b"x");
    other.protocol_type = s("connect");
    let r: JoinGroupResponse = call(&c, 11, 5, &other);
    assert_eq!(r.error_code, err::INCONSISTENT_GROUP_PROTOCOL);
    // Out-of-range session timeout.
    let r: JoinGroupResponse = call(&c, 11, 5, &join_req("g", "", 1, b"x"));
    assert_eq!(r.error_code, err::INVALID_SESSION_TIMEOUT);
    assert_eq!(state(&c, "g"), (GroupState::Stable, 1, vec![a_id.clone()]));
    assert_eq!(heartbeat(&c, "g", &a_id, 1), err::NONE);
    assert_eq!(commit(&c, 8, "g", &a_id, 1, &[("t", 1, 9)]), vec![err::NONE]);
}

#[test]
fn malformed_requests_get_invalid_request_and_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let junk = Bytes::from_static(&[0xff, 0xff, 0xff, 0x7f, 1]);
    let r: JoinGroupResponse = call_raw(&c, 11, 5, junk.clone());
    assert_eq!(r.error_code, err::INVALID_REQUEST);
    let r: HeartbeatResponse = call_raw(&c, 12, 4, junk.clone());
    assert_eq!(r.error_code, err::INVALID_REQUEST);
    let r: SyncGroupResponse = call_raw(&c, 14, 5, junk.clone());
    assert_eq!(r.error_code, err::INVALID_REQUEST);
    let r: OffsetCommitResponse = call_raw(&c, 8, 8, junk.clone());
    assert!(r.topics.is_empty());
    let r: OffsetCommitResponse = call_raw_as(&c, 8, 1, 2, junk.clone());
    assert!(r.topics.is_empty());
    let r: OffsetFetchResponse = call_raw(&c, 9, 7, junk.clone());
    assert_eq!(r.error_code, err::INVALID_REQUEST);
    let r: InitProducerIdResponse = call_raw(&c, 22, 4, Bytes::new());
    assert_eq!(r.error_code, err::INVALID_REQUEST);
    // Still serving.
    assert_eq!(join(&c, "g", "").error_code, err::NONE);
}

/// OffsetCommit v0/v1 (hand-decoded; librdkafka 2.0.2 insists they are advertised).
fn commit_v0_v1(c: &Arc<GroupCoordinator>, v: i16, group: &str, topic: &str, partition: i32, offset: i64) -> i16 {
    let mut b = BytesMut::new();
    let put_str = |b: &mut BytesMut, x: &str| {
        b.put_i16(x.len() as i16);
        b.put_slice(x.as_bytes());
    };
    put_str(&mut b, group);
    if v == 1 {
        b.put_i32(-1);
        put_str(&mut b, "");
    }
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(1);
    b.put_i32(partition);
    b.put_i64(offset);
    if v == 1 {
        b.put_i64(-1);
    }
    put_str(&mut b, "");
    let r: OffsetCommitResponse = call_raw_as(c, 8, v, 2, b.freeze());
    assert_eq!(r.topics.len(), 1);
    assert_eq!(r.topics[0].name.as_str(), topic);
    r.topics[0].partitions[0].error_code
}

#[test]
fn committed_offsets_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a_id = {
        let logs = open_logs(dir.path());
        logs.create_topic("t", 4, None).unwrap();
        let c = coordinator(&logs);
        assert_eq!(fetch_v8(&c, "standalone", "t", &[0]), vec![-1]);
        assert_eq!(commit(&c, 2, "standalone", "", -1, &[("t", 0, 10), ("t", 1, 11)]), vec![0, 0]);
        assert_eq!(commit(&c, 8, "standalone", "", -1, &[("t", 1, 21)]), vec![0]);
        assert_eq!(commit_v0_v1(&c, 0, "old", "t", 2, 30), err::NONE);
        assert_eq!(commit_v0_v1(&c, 1, "old", "t", 3, 31), err::NONE);
        assert_eq!(commit_v0_v1(&c, 1, "old", "nope", 0, 1), err::UNKNOWN_TOPIC_OR_PARTITION);
        // A managed group's commit.
        let a = join(&c, "managed", "");
        let a_id = a.member_id.as_str().to_string();
        sync(&c, "managed", &a_id, 1, &[]);
        assert_eq!(commit(&c, 7, "managed", &a_id, 1, &[("t", 3, 99)]), vec![0]);
        assert_eq!(fetch_v1(&c, "standalone", "t", &[0, 1, 2]), vec![10, 21, -1]);
        drop(c);
        logs.close().unwrap();
        a_id
    };
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    assert_eq!(fetch_v1(&c, "standalone", "t", &[0, 1, 2, 3]), vec![10, 21, -1, -1]);
    assert_eq!(fetch_v8(&c, "standalone", "t", &[0, 1]), vec![10, 21]);
    assert_eq!(fetch_v1(&c, "old", "t", &[2, 3]), vec![30, 31]);
    assert_eq!(fetch_v1(&c, "managed", "t", &[3]), vec![99]);
    assert_eq!(fetch_v1(&c, "never", "t", &[0]), vec![-1]);
    // Fetch of all partitions (topics = null, v2+).
    let r: OffsetFetchResponse = call(&c, 9, 5, &OffsetFetchRequest::default().with_group_id(GroupId(s("standalone"))).with_topics(None));
    let all: Vec<(String, i32, i64)> = r
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str().to_string(), p.partition_index, p.committed_offset)))
        .collect();
    assert_eq!(all, vec![("t".into(), 0, 10), ("t".into(), 1, 21)]);
    // Restored groups are listed and can be committed to again: the standalone ones Empty, the
    // managed one Stable with its member (its group metadata record), which commits as before.
    let r: ListGroupsResponse = call(&c, 16, 4, &ListGroupsRequest::default());
    let listed: Vec<(&str, &str)> = r.groups.iter().map(|g| (g.group_id.as_str(), g.group_state.as_str())).collect();
    assert_eq!(listed, vec![("managed", "Stable"), ("old", "Empty"), ("standalone", "Empty")]);
    assert_eq!(commit(&c, 8, "managed", &a_id, 1, &[("t", 3, 100)]), vec![0]);
    assert_eq!(fetch_v1(&c, "managed", "t", &[3]), vec![100]);
    assert_eq!(commit(&c, 8, "standalone", "", -1, &[("t", 0, 11)]), vec![0]);
}

#[test]
fn producer_ids_stay_unique_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _round in 0..3 {
        let logs = open_logs(dir.path());
        let c = coordinator(&logs);
        for _ in 0..5 {
            let r: InitProducerIdResponse = call(&c, 22, 4, &InitProducerIdRequest::default().with_transactional_id(None));
            assert_eq!((r.error_code, r.producer_epoch), (err::NONE, 0));
            assert!(seen.insert(r.producer_id.0), "producer id {} handed out twice", r.producer_id.0);
        }
        // Epoch bump for a known producer (KIP-360) keeps the id.
        let pid = *seen.iter().max().unwrap();
        let r: InitProducerIdResponse =
            call(&c, 22, 4, &InitProducerIdRequest::default().with_transactional_id(None).with_producer_id(ProducerId(pid)).with_producer_epoch(0));
        assert_eq!((r.producer_id.0, r.producer_epoch), (pid, 1));
        // Transactions are refused.
        let r: InitProducerIdResponse = call(
            &c,
            22,
            1,
            &InitProducerIdRequest::default().with_transactional_id(Some(TransactionalId(s("tx")))),
        );
        assert_eq!(r.error_code, err::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
        drop(c);
        logs.close().unwrap();
    }
    assert_eq!(seen.len(), 15);
}

#[test]
fn unsupported_versions_and_foreign_keys_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let header = RequestHeader::default().with_correlation_id(1);
    for (key, v) in [(11, 10), (9, 0), (8, 10), (16, 6), (68, 2), (0, 3)] {
        let r = groups::handle(&c, key, v, &header, &mut Bytes::new());
        assert!(matches!(r, Reply::Close(_)), "api {key} v{v}: {r:?}");
    }
    // Every advertised version answers, even an empty (malformed) body, without panicking.
    for &(key, lo, hi) in groups::SUPPORTED_APIS {
        for v in lo..=hi {
            match groups::handle(&c, key, v, &header, &mut Bytes::new()) {
                r @ (Reply::Later(_) | Reply::Pending(_)) => {
                    assert!(r.wait_response().is_some_and(|b| b.len() >= 4), "api {key} v{v}: no response")
                }
                other => panic!("api {key} v{v}: {other:?}"),
            }
        }
    }
}

#[test]
fn describe_list_and_find_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let a = join(&c, "g", "");
    let a_id = a.member_id.as_str().to_string();
    sync(&c, "g", &a_id, 1, &[(&a_id, b"assigned")]);
    let r: DescribeGroupsResponse = call(
        &c,
        15,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g")), GroupId(s("missing"))]),
    );
    assert_eq!(r.groups[0].group_state.as_str(), "Stable");
    assert_eq!(r.groups[0].protocol_type.as_str(), "consumer");
    assert_eq!(r.groups[0].protocol_data.as_str(), "range");
    assert_eq!(r.groups[0].members[0].member_id.as_str(), a_id);
    assert_eq!(r.groups[0].members[0].client_id.as_str(), "tester");
    assert_eq!(&r.groups[0].members[0].member_assignment[..], b"assigned");
    assert_eq!((r.groups[1].group_state.as_str(), r.groups[1].error_code), ("Dead", err::NONE));
    let r: ListGroupsResponse = call(&c, 16, 4, &ListGroupsRequest::default().with_states_filter(vec![s("Stable")]));
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].group_state.as_str(), "Stable");
    let r: ListGroupsResponse = call(&c, 16, 0, &ListGroupsRequest::default());
    assert_eq!(r.groups.len(), 1);
    for v in 0..=3 {
        let r: FindCoordinatorResponse = call(&c, 10, v, &FindCoordinatorRequest::default().with_key(s("g")));
        assert_eq!((r.error_code, r.node_id.0, r.port), (err::NONE, 0, 9092));
    }
    let r: FindCoordinatorResponse =
        call(&c, 10, 4, &FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")]));
    assert_eq!(r.coordinators.len(), 2);
    assert_eq!(r.coordinators[1].key.as_str(), "h");
}

#[test]
fn leader_that_never_syncs_sends_followers_back_to_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let mut req = join_req("g", "", 10_000, b"a");
    req.rebalance_timeout_ms = 200;
    let a = join_with(&c, "g", req.clone());
    let a_id = a.member_id.as_str().to_string();
    sync(&c, "g", &a_id, 1, &[]);
    let c2 = c.clone();
    let mut req_b = req.clone();
    req_b.protocols[0].metadata = Bytes::from_static(b"b");
    let b_join = thread::spawn(move || join_with(&c2, "g", req_b));
    wait_for("rebalance", Duration::from_secs(5), || state(&c, "g").0 == GroupState::PreparingRebalance);
    let a2: JoinGroupResponse = call(&c, 11, 5, &join_req("g", &a_id, 10_000, b"a"));
    let b = b_join.join().unwrap();
    assert_eq!((a2.generation_id, b.generation_id), (2, 2));
    // The follower syncs; the leader never does: the follower is bounded and told to rejoin.
    let started = Instant::now();
    let sb = sync(&c, "g", b.member_id.as_str(), 2, &[]);
    assert_eq!(sb.error_code, err::REBALANCE_IN_PROGRESS);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(state(&c, "g").0, GroupState::PreparingRebalance);
}

#[test]
fn static_member_restart_takes_its_place_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let static_join = |member: &str, inst: &str| -> JoinGroupResponse {
        let mut req = join_req("g", member, SESSION_MS, inst.as_bytes());
        req.group_instance_id = Some(s(inst));
        call(&c, 11, 7, &req)
    };
    // Static members join without MEMBER_ID_REQUIRED.
    let a = static_join("", "inst-a");
    assert_eq!((a.error_code, a.generation_id), (err::NONE, 1));
    let a_id = a.member_id.as_str().to_string();
    sync(&c, "g", &a_id, 1, &[(&a_id, b"mine")]);
    let c2 = c.clone();
    let b_join = thread::spawn(move || join(&c2, "g", ""));
    wait_for("rebalance", Duration::from_secs(5), || state(&c, "g").0 == GroupState::PreparingRebalance);
    let a2 = static_join(&a_id, "inst-a");
    let b = b_join.join().unwrap();
    assert_eq!((a2.generation_id, b.generation_id), (2, 2));
    let b_id = b.member_id.as_str().to_string();
    let c2 = c.clone();
    let b2 = b_id.clone();
    let b_sync = thread::spawn(move || sync(&c2, "g", &b2, 2, &[]));
    sync(&c, "g", &a_id, 2, &[(&a_id, b"a-part"), (&b_id, b"b-part")]);
    assert_eq!(&b_sync.join().unwrap().assignment[..], b"b-part");

    // Instance A restarts: a new member id, same generation, no rebalance, same assignment.
    let a3 = static_join("", "inst-a");
    assert_eq!(a3.error_code, err::NONE);
    assert_eq!(a3.generation_id, 2, "no new generation");
    let a3_id = a3.member_id.as_str().to_string();
    assert_ne!(a3_id, a_id);
    assert_eq!(state(&c, "g").0, GroupState::Stable);
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(&a3_id))
        .with_group_instance_id(Some(s("inst-a")))
        .with_generation_id(2);
    let sa: SyncGroupResponse = call(&c, 14, 3, &req);
    assert_eq!((sa.error_code, &sa.assignment[..]), (err::NONE, &b"a-part"[..]));
    // The old incarnation is fenced.
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(&a_id))
        .with_group_instance_id(Some(s("inst-a")))
        .with_generation_id(2);
    let r: HeartbeatResponse = call(&c, 12, 3, &hb);
    assert_eq!(r.error_code, err::FENCED_INSTANCE_ID);
    assert_eq!(static_join(&a_id, "inst-a").error_code, err::FENCED_INSTANCE_ID);
    // B never noticed.
    assert_eq!(heartbeat(&c, "g", &b_id, 2), err::NONE);

    // The replacement was persisted: after a reopen the group is Stable with A's new id, and
    // the old incarnation is still fenced.
    drop(c);
    logs.close().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let (st, gen, mut ids) = state(&c, "g");
    ids.sort();
    let mut want = vec![a3_id.clone(), b_id.clone()];
    want.sort();
    assert_eq!((st, gen, ids), (GroupState::Stable, 2, want));
    assert_eq!(heartbeat(&c, "g", &a3_id, 2), err::NONE);
    let r: HeartbeatResponse = call(&c, 12, 3, &hb);
    assert_eq!(r.error_code, err::FENCED_INSTANCE_ID);
}

#[test]
fn latest_versions_as_the_java_client_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    logs.create_topic("t", 1, None).unwrap();
    let c = coordinator(&logs);
    let a = join_new_v9(&c, "g");
    assert_eq!(a.protocol_type.as_ref().map(|p| p.as_str()), Some("consumer"));
    let id = a.member_id.as_str().to_string();
    let sync_v5 = |name: &str| -> SyncGroupResponse {
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s(&id))
            .with_generation_id(1)
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s(name)))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&id))
                .with_assignment(Bytes::from_static(b"x"))]);
        call(&c, 14, 5, &req)
    };
    assert_eq!(sync_v5("roundrobin").error_code, err::INCONSISTENT_GROUP_PROTOCOL);
    let r = sync_v5("range");
    assert_eq!((r.error_code, r.protocol_name.as_ref().map(|p| p.as_str())), (err::NONE, Some("range")));
    assert_eq!(commit(&c, 8, "g", &id, 1, &[("t", 0, 3)]), vec![err::NONE]);
    assert_eq!(fetch_v8(&c, "g", "t", &[0]), vec![3]);
    let leave = LeaveGroupRequest::default().with_group_id(GroupId(s("g"))).with_members(vec![MemberIdentity::default()
        .with_member_id(s(&id))
        .with_reason(Some(s("the consumer is being closed")))]);
    let r: LeaveGroupResponse = call(&c, 13, 5, &leave);
    assert_eq!((r.error_code, r.members[0].error_code), (err::NONE, err::NONE));
    assert_eq!(state(&c, "g").0, GroupState::Empty);
}

#[test]
fn hostile_array_count_in_a_join_is_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let mut req = join_req("g", "", SESSION_MS, b"");
    req.protocols.clear();
    let mut buf = BytesMut::new();
    req.encode(&mut buf, 5).unwrap();
    let n = buf.len();
    buf[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes()); // the protocols array count
    let r: JoinGroupResponse = call_raw(&c, 11, 5, buf.freeze());
    assert_eq!(r.error_code, err::INVALID_REQUEST);
    assert_eq!(join(&c, "g", "").error_code, err::NONE);
}

/// A power cut right after the OffsetCommit / InitProducerId responses: in `group` mode both were
/// fdatasynced before the answer, so the crash image keeps them.
#[test]
fn acknowledged_commits_and_producer_ids_survive_a_power_cut() {
    use engine::io::{CrashMode, SimIo};
    let dir = Path::new("/data");
    let cfg = LogConfig { durability: Durability::Group, ..LogConfig::default() };
    let sim = SimIo::new();
    let logs = LogManager::open(dir, Arc::new(sim.clone()), cfg.clone()).unwrap();
    logs.create_topic("t", 1, None).unwrap();
    let c = coordinator(&logs);
    let mut pids = Vec::new();
    for (i, mode) in [CrashMode::DropUnsynced, CrashMode::Tear, CrashMode::TearAndFlip].into_iter().enumerate() {
        assert_eq!(commit(&c, 8, "g", "", -1, &[("t", 0, 100 + i as i64)]), vec![err::NONE]);
        let r: InitProducerIdResponse = call(&c, 22, 4, &InitProducerIdRequest::default().with_transactional_id(None));
        pids.push(r.producer_id.0);
        let image = sim.crash(mode, 7 + i as u64);
        let logs2 = LogManager::open(dir, Arc::new(image), cfg.clone()).unwrap();
        let c2 = coordinator(&logs2);
        assert_eq!(fetch_v1(&c2, "g", "t", &[0]), vec![100 + i as i64], "{mode:?}");
        let r: InitProducerIdResponse = call(&c2, 22, 4, &InitProducerIdRequest::default().with_transactional_id(None));
        assert!(!pids.contains(&r.producer_id.0), "{mode:?}: producer id {} reused", r.producer_id.0);
    }
}

/// Every record of `__consumer_offsets` below its high watermark: (offset key or group key
/// decoded as "group/topic/partition" or "group", whether it has a value).
fn offsets_log_records(logs: &LogManager) -> Vec<(String, bool)> {
    use groups::store::{parse_group_key, parse_offset_key, scan_records};
    let part = logs.partition(groups::store::OFFSETS_TOPIC, 0).unwrap();
    let mut out = Vec::new();
    scan_records(&part, |k, v| {
        let k = k.unwrap_or_default();
        let name = match (parse_offset_key(k), parse_group_key(k)) {
            (Some((g, t, p)), _) => format!("{g}/{t}/{p}"),
            (_, Some(g)) => g,
            _ => format!("{k:?}"),
        };
        out.push((name, v.is_some()));
    })
    .unwrap();
    out
}

fn compacted_cfg() -> LogConfig {
    // Tiny segments so the cleaner has sealed ones to compact; tombstones removable at once.
    LogConfig { durability: Durability::Group, segment_bytes_max: 2048, delete_retention_ms: 0, ..LogConfig::default() }
}

/// `__consumer_offsets` is a compacted topic: after the log cleaner has compacted it (and
/// removed the tombstones, `delete.retention.ms` 0), a restart restores every committed offset
/// (a quiet one written once, before many commits of a busy group), a quiet Stable group, and
/// nothing that OffsetDelete or DeleteGroups removed; a malformed group record is skipped.
#[test]
fn offsets_and_groups_survive_restart_after_compaction_and_deletions_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let open = || LogManager::open(dir.path(), Arc::new(UringIo), compacted_cfg()).unwrap();
    let logs = open();
    logs.create_topic("t", 4, None).unwrap();
    let c = coordinator(&logs);
    assert_eq!(
        logs.topic_config("__consumer_offsets").get("cleanup.policy"),
        Some("compact"),
        "the offsets topic is created compacted"
    );
    // A quiet Stable group with a long session, and a quiet offset.
    let a = join_with(&c, "quiet", join_req("quiet", "", 60_000, b"m"));
    let a_id = a.member_id.as_str().to_string();
    assert_eq!(sync(&c, "quiet", &a_id, a.generation_id, &[(&a_id, b"asg")]).error_code, err::NONE);
    assert_eq!(commit(&c, 8, "lonely", "", -1, &[("t", 0, 7)]), vec![err::NONE]);
    // Offsets deleted by OffsetDelete (partitions 0 and 1 of "del") and by DeleteGroups ("gone").
    assert_eq!(commit(&c, 8, "del", "", -1, &[("t", 0, 10), ("t", 1, 11), ("t", 2, 12)]), vec![err::NONE; 3]);
    assert_eq!(commit(&c, 8, "gone", "", -1, &[("t", 0, 20), ("t", 3, 23)]), vec![err::NONE; 2]);
    for i in 0..150 {
        assert_eq!(commit(&c, 8, "busy", "", -1, &[("t", (i % 4) as i32, i)]), vec![err::NONE]);
    }
    assert_eq!(c.delete_offsets("del", &[("t".into(), 0), ("t".into(), 1)]), (err::NONE, vec![err::NONE; 2]));
    assert_eq!(c.delete_group("gone"), err::NONE);
    // A group record that does not parse (garbage value): skipped at restore, which still starts.
    // (Compaction keeps only a key's latest record: one after a good record would replace it.)
    let part = logs.partition("__consumer_offsets", 0).unwrap();
    groups::store::append_groups(&part, &[("junk".to_string(), Some(vec![0, 3, 0xff, 0xff, 1]))]).unwrap();
    // More commits: the tombstones end up in sealed segments, which the cleaner compacts.
    for i in 150..300 {
        assert_eq!(commit(&c, 8, "busy", "", -1, &[("t", (i % 4) as i32, i)]), vec![err::NONE]);
    }
    let appended = offsets_log_records(&logs).len();
    assert!(part.segment_count() > 10, "{} segments", part.segment_count());
    let deleted = ["del/t/0", "del/t/1", "gone/t/0", "gone/t/3", "gone"];
    // The background cleaner compacts (1 s tick): wait until the deleted keys have no value left
    // and most superseded records are gone.
    wait_for("the log cleaner to compact __consumer_offsets", Duration::from_secs(60), || {
        let recs = offsets_log_records(&logs);
        recs.len() < appended / 4 && !recs.iter().any(|(k, v)| *v && deleted.contains(&k.as_str()))
    });
    let recs = offsets_log_records(&logs);
    assert!(
        recs.iter().filter(|(k, _)| deleted.contains(&k.as_str())).count() < deleted.len(),
        "tombstones past delete.retention.ms were removed: {recs:?}"
    );
    drop(c);
    logs.close().unwrap();
    drop((part, logs));

    let logs = open();
    assert_eq!(logs.topic_config("__consumer_offsets").get("cleanup.policy"), Some("compact"));
    let c = coordinator(&logs);
    assert_eq!(fetch_v1(&c, "lonely", "t", &[0]), vec![7]);
    assert_eq!(fetch_v1(&c, "busy", "t", &[0, 1, 2, 3]), vec![296, 297, 298, 299]);
    assert_eq!(fetch_v1(&c, "del", "t", &[0, 1, 2]), vec![-1, -1, 12], "OffsetDelete'd offsets stay deleted");
    assert_eq!(fetch_v1(&c, "gone", "t", &[0, 3]), vec![-1, -1], "a deleted group's offsets stay deleted");
    assert!(c.group_summary("gone").is_none(), "a deleted group stays deleted");
    assert!(c.group_summary("junk").is_none(), "an unreadable group record is skipped");
    assert_eq!(state(&c, "quiet"), (GroupState::Stable, a.generation_id, vec![a_id.clone()]));
    assert_eq!(heartbeat(&c, "quiet", &a_id, a.generation_id), err::NONE);
    let r: DescribeGroupsResponse = call(&c, 15, 5, &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("quiet"))]));
    assert_eq!(&r.groups[0].members[0].member_assignment[..], b"asg");
}

/// OffsetDelete of the last offsets of an Empty group removes the group too, with a tombstone
/// for its metadata record (Kafka's `cleanupGroupMetadata`: the group goes Dead), so a restart
/// does not bring it back; one with offsets left stays Empty.
#[test]
fn offset_delete_of_an_empty_groups_last_offsets_removes_the_group_durably() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    logs.create_topic("t", 2, None).unwrap();
    let c = coordinator(&logs);
    // "e": Stable (its record is written before SyncGroup answers), then Empty after the leave.
    let a = join_with(&c, "e", join_req("e", "", 60_000, b"m"));
    let a_id = a.member_id.as_str().to_string();
    assert_eq!(sync(&c, "e", &a_id, a.generation_id, &[(&a_id, b"asg")]).error_code, err::NONE);
    assert_eq!(leave(&c, "e", &a_id).error_code, err::NONE);
    assert_eq!(state(&c, "e").0, GroupState::Empty);
    assert_eq!(commit(&c, 8, "e", "", -1, &[("t", 0, 1), ("t", 1, 2)]), vec![err::NONE; 2]);
    assert_eq!(commit(&c, 8, "solo", "", -1, &[("t", 0, 3)]), vec![err::NONE]);
    assert_eq!(c.delete_offsets("e", &[("t".into(), 0)]), (err::NONE, vec![err::NONE]));
    assert_eq!(state(&c, "e").0, GroupState::Empty, "offsets left: the group stays");
    assert_eq!(c.delete_offsets("e", &[("t".into(), 1)]), (err::NONE, vec![err::NONE]));
    assert!(c.group_summary("e").is_none(), "no offsets left: the Empty group is removed");
    assert_eq!(c.delete_offsets("solo", &[("t".into(), 0)]), (err::NONE, vec![err::NONE]));
    assert!(c.group_summary("solo").is_none());
    let last_e = offsets_log_records(&logs).into_iter().rfind(|(k, _)| k == "e");
    assert_eq!(last_e, Some(("e".to_string(), false)), "the group's last record is a tombstone");
    drop(c);
    logs.close().unwrap();
    drop(logs);
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    assert!(c.group_summary("e").is_none(), "the removed group came back after a restart");
    assert!(c.group_summary("solo").is_none());
    assert_eq!(fetch_v1(&c, "e", "t", &[0, 1]), vec![-1, -1]);
}

/// A group id is a str16 in `__consumer_offsets` keys: one longer than 32,767 bytes (possible in
/// flexible request versions) is refused with INVALID_GROUP_ID rather than cut (two groups
/// would then share a key); the longest allowed one survives a restart under its own name.
#[test]
fn a_group_id_too_long_for_a_key_is_refused_and_the_longest_one_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    logs.create_topic("t", 1, None).unwrap();
    let c = coordinator(&logs);
    let long = "g".repeat(32_768);
    assert_eq!(commit(&c, 8, &long, "", -1, &[("t", 0, 1)]), vec![err::INVALID_GROUP_ID]);
    let r: JoinGroupResponse = call(&c, 11, 9, &join_req(&long, "", SESSION_MS, b"m"));
    assert_eq!(r.error_code, err::INVALID_GROUP_ID);
    assert!(c.group_summary(&long).is_none());
    let max = "g".repeat(32_767);
    assert_eq!(commit(&c, 8, &max, "", -1, &[("t", 0, 5)]), vec![err::NONE]);
    drop(c);
    logs.close().unwrap();
    drop(logs);
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    assert_eq!(c.committed(&max, "t", 0).map(|x| x.offset), Some(5));
}

/// A data directory written by the previous broker (`__consumer_offsets` created without a
/// configuration, so `cleanup.policy=delete`; periodic snapshots re-appending every live offset
/// and group record; retention below the last snapshot's start) loads as it was: the snapshot
/// records replay as puts. The topic is switched to `cleanup.policy=compact` (persisted), and
/// after compaction and another restart the state is still the same.
#[test]
fn a_data_dir_of_the_snapshot_format_loads_and_becomes_compacted() {
    use groups::store::{self, CommitEntry, Committed, GroupRecord, MemberRecord};
    let dir = tempfile::tempdir().unwrap();
    let old_cfg = LogConfig { retention_bytes_max: Some(4096), retention_ms: None, ..compacted_cfg() };
    let committed = |o: i64| Committed { offset: o, leader_epoch: -1, metadata: Some("m".into()), commit_timestamp_ms: 1 };
    let entry = |t: &str, p: i32, o: i64| CommitEntry { topic: t.into(), partition: p, committed: committed(o) };
    let group = GroupRecord {
        protocol_type: "consumer".into(),
        generation: 3,
        protocol: Some("range".into()),
        leader: Some("m-1".into()),
        state_timestamp_ms: 5,
        members: vec![MemberRecord {
            member_id: "m-1".into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 60_000,
            session_timeout_ms: 60_000,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from_static(b"asg"),
        }],
    };
    {
        // What the old coordinator wrote, with its own record encoding (the one `store` keeps).
        let logs = LogManager::open(dir.path(), Arc::new(UringIo), old_cfg.clone()).unwrap();
        logs.create_topic("t", 4, None).unwrap();
        logs.create_topic("__consumer_offsets", 1, None).unwrap();
        let part = logs.partition("__consumer_offsets", 0).unwrap();
        let wait = |r: Result<engine::log::AppendInfo, engine::log::AppendError>| {
            part.wait_durable(r.unwrap().next_offset).unwrap();
        };
        wait(store::append_commits(&part, "quiet", &[entry("t", 0, 7)]));
        wait(store::append_groups(&part, &[("g".into(), Some(store::group_value(&group)))]));
        wait(store::append_commits(&part, "del", &[entry("t", 1, 1)]));
        wait(store::append_tombstones(&part, "del", &[("t".into(), 1)], false));
        for i in 0..200 {
            wait(store::append_commits(&part, "busy", &[entry("t", i % 4, i as i64)]));
        }
        // The old snapshot: every live offset and group record re-appended, then retention
        // allowed below its start (`set_retention_floor`).
        let floor = part.log_end_offset();
        wait(store::append_commits(&part, "quiet", &[entry("t", 0, 7)]));
        wait(store::append_commits(&part, "busy", &(0..4).map(|p| entry("t", p, 196 + p as i64)).collect::<Vec<_>>()));
        wait(store::append_groups(&part, &[("g".into(), Some(store::group_value(&group)))]));
        wait(store::append_commits(&part, "busy", &[entry("t", 0, 500)]));
        part.set_retention_floor(floor);
        assert!(part.enforce_retention().unwrap() > 0, "the old retention deleted segments below the snapshot");
        assert!(part.log_start_offset() > 0);
        logs.close().unwrap();
    }
    let check = |c: &Arc<GroupCoordinator>| {
        assert_eq!(fetch_v1(c, "quiet", "t", &[0]), vec![7]);
        assert_eq!(fetch_v1(c, "busy", "t", &[0, 1, 2, 3]), vec![500, 197, 198, 199]);
        assert_eq!(fetch_v1(c, "del", "t", &[1]), vec![-1]);
        assert_eq!(state(c, "g"), (GroupState::Stable, 3, vec!["m-1".to_string()]));
    };
    let logs = LogManager::open(dir.path(), Arc::new(UringIo), compacted_cfg()).unwrap();
    assert_eq!(logs.topic_config("__consumer_offsets").get("cleanup.policy"), None, "written by the old broker");
    let c = coordinator(&logs);
    check(&c);
    assert_eq!(logs.topic_config("__consumer_offsets").get("cleanup.policy"), Some("compact"));
    // New commits (each one batch) until the snapshot records are in sealed segments the cleaner
    // compacts.
    let part = logs.partition("__consumer_offsets", 0).unwrap();
    let sealed = part.segment_count();
    for i in 0..60 {
        assert_eq!(commit(&c, 8, "other", "", -1, &[("t", 0, i)]), vec![err::NONE]);
    }
    assert!(part.segment_count() > sealed + 1);
    let before = offsets_log_records(&logs);
    wait_for("the log cleaner to compact __consumer_offsets", Duration::from_secs(60), || {
        offsets_log_records(&logs).len() < before.len() / 2
    });
    drop(c);
    logs.close().unwrap();
    drop((part, logs));
    let logs = LogManager::open(dir.path(), Arc::new(UringIo), compacted_cfg()).unwrap();
    assert_eq!(logs.topic_config("__consumer_offsets").get("cleanup.policy"), Some("compact"), "persisted");
    let c = coordinator(&logs);
    check(&c);
    assert_eq!(fetch_v1(&c, "other", "t", &[0]), vec![59]);
}

#[test]
fn a_huge_client_id_still_gives_an_encodable_member_id() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let header = RequestHeader::default().with_correlation_id(9).with_client_id(Some(s(&"x".repeat(32_000))));
    let mut body = BytesMut::new();
    join_req("g", "", SESSION_MS, b"m").encode(&mut body, 3).unwrap();
    let out = match groups::handle(&c, 11, 3, &header, &mut body.freeze()) {
        r @ (Reply::Later(_) | Reply::Pending(_)) => r.wait_response().expect("a response"),
        other => panic!("{other:?}"),
    };
    let mut b = Bytes::from(out);
    ResponseHeader::decode(&mut b, 0).unwrap();
    let r = JoinGroupResponse::decode(&mut b, 3).unwrap();
    assert_eq!(r.error_code, err::NONE);
    assert!(r.member_id.len() < 300);
}
