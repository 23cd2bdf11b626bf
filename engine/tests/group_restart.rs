//! Issue 16: consumer-group membership survives a broker restart (graceful SIGTERM and kill -9,
//! `group` durability, same data directory), as Kafka restores groups from the GroupMetadata
//! records of `__consumer_offsets`.
//!
//! The `broker` binary runs as a child process on a fixed 127.0.0.1 port; the group is driven over
//! the wire with the kafka-protocol test client. After the restart the old member's Heartbeat and
//! OffsetCommit (its member id and generation) succeed and DescribeGroups shows it; a member that
//! does not come back expires after its session timeout and the group rebalances, then empties,
//! and the Empty group (with its generation) survives the next restart too.
//!
//! A real client too: a confluent-kafka group consumer (`tests/interop/group_restart.py`) reads N
//! records, keeps running while the broker is restarted, then commits them and reads M new ones:
//! exactly the M new records arrive, no duplicate (before: its commit failed with
//! UNKNOWN_MEMBER_ID, it rejoined and read the N again).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{require_tool, run, spawn_broker_process, Client};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const GROUP: &str = "restart-group";
const TOPIC: &str = "restart-topic";
/// The broker's minimum (group.min.session.timeout.ms default).
const SESSION_MS: i32 = 6_000;
const REBALANCE_MS: i32 = 10_000;
const NONE: i16 = 0;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Graceful,
    Kill9,
}

fn start(dir: &Path, addr: SocketAddr) -> Child {
    spawn_broker_process(dir, addr, &["--durability", "group"], "warn")
}

fn stop(mut child: Child, how: Stop) {
    match how {
        Stop::Graceful => {
            let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill -TERM");
            assert!(st.success());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(st) = child.try_wait().expect("try_wait") {
                    assert!(st.success(), "broker exit after SIGTERM: {st}");
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("broker did not exit after SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Stop::Kill9 => {
            child.kill().expect("SIGKILL broker");
            child.wait().expect("reap broker");
        }
    }
}

fn join_req(member: &str, instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(REBALANCE_MS)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::copy_from_slice(member.as_bytes().get(..1).unwrap_or(b"m")))])
}

/// JoinGroup v5 (a new dynamic member goes through MEMBER_ID_REQUIRED first).
fn join(c: &mut Client, member: &str, instance: Option<&str>) -> JoinGroupResponse {
    let r = c.call(5, &join_req(member, instance));
    if r.error_code != MEMBER_ID_REQUIRED {
        return r;
    }
    c.call(5, &join_req(r.member_id.as_str(), instance))
}

fn sync(c: &mut Client, member: &str, instance: Option<&str>, gen: i32, assign: &[(&str, &[u8])]) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_generation_id(gen)
        .with_assignments(
            assign
                .iter()
                .map(|(m, a)| SyncGroupRequestAssignment::default().with_member_id(s(m)).with_assignment(Bytes::copy_from_slice(a)))
                .collect(),
        );
    c.call(3, &req)
}

fn heartbeat(c: &mut Client, member: &str, gen: i32) -> i16 {
    let req = HeartbeatRequest::default().with_group_id(GroupId(s(GROUP))).with_member_id(s(member)).with_generation_id(gen);
    c.call(4, &req).error_code
}

fn commit(c: &mut Client, member: &str, gen: i32, offset: i64) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(gen)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(s(TOPIC))).with_partitions(vec![
            OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset),
        ])]);
    let r = c.call(8, &req);
    r.topics[0].partitions[0].error_code
}

fn fetch_committed(c: &mut Client) -> i64 {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_indexes(vec![0])]));
    c.call(5, &req).topics[0].partitions[0].committed_offset
}

/// End offset of `__consumer_offsets` (ListOffsets v1, latest).
fn offsets_log_end(c: &mut Client) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(s("__consumer_offsets")))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)])]);
    let r = c.call(1, &req);
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, NONE);
    p.offset
}

type Described = (String, Option<String>, Vec<u8>);

/// (state, [(member id, instance id, assignment)]) as DescribeGroups v5 shows the group.
fn describe(c: &mut Client) -> (String, Vec<Described>) {
    let r = c.call(5, &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(GROUP))]));
    let g = &r.groups[0];
    assert_eq!(g.error_code, NONE);
    let mut members: Vec<Described> = g
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string()), m.member_assignment.to_vec()))
        .collect();
    members.sort();
    (g.group_state.to_string(), members)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn membership_survives_a_restart(how: Stop) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let broker = start(dir.path(), addr);
    let mut a = Client::connect(addr);
    // The topic the group commits to (auto-created by Metadata).
    let md = a.call(9, &MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(TopicName(s(TOPIC))))]))
        .with_allow_auto_topic_creation(true));
    assert_eq!(md.topics[0].error_code, NONE);

    // A (dynamic) joins alone: generation 1.
    let ja = join(&mut a, "", None);
    assert_eq!(ja.error_code, NONE);
    let a_id = ja.member_id.to_string();
    assert_eq!(sync(&mut a, &a_id, None, ja.generation_id, &[(&a_id, b"all")]).error_code, NONE);
    // B (static, group.instance.id) joins: A is told to rejoin; generation 2 with both.
    let b_join = std::thread::spawn(move || join(&mut Client::connect(addr), "", Some("inst-b")));
    wait_for("A to see the rebalance", Duration::from_secs(20), || heartbeat(&mut a, &a_id, ja.generation_id) == REBALANCE_IN_PROGRESS);
    let ja = join(&mut a, &a_id, None);
    let jb = b_join.join().unwrap();
    assert_eq!((ja.error_code, jb.error_code), (NONE, NONE));
    assert_eq!(ja.generation_id, jb.generation_id);
    let gen = ja.generation_id;
    let b_id = jb.member_id.to_string();
    assert_eq!(ja.leader.as_str(), a_id, "the old member leads");
    let sa = sync(&mut a, &a_id, None, gen, &[(&a_id, b"part-a"), (&b_id, b"part-b")]);
    assert_eq!((sa.error_code, sa.assignment.as_ref()), (NONE, &b"part-a"[..]));
    let mut b = Client::connect(addr);
    let sb = sync(&mut b, &b_id, Some("inst-b"), gen, &[]);
    assert_eq!((sb.error_code, sb.assignment.as_ref()), (NONE, &b"part-b"[..]));
    assert_eq!(commit(&mut a, &a_id, gen, 10), NONE);
    let before = describe(&mut a);
    assert_eq!(before.0, "Stable");

    stop(broker, how);
    let broker = start(dir.path(), addr);
    let mut a = Client::connect(addr);
    // The old member carries on: heartbeat and commit with its member id and generation.
    // Before the fix: UNKNOWN_MEMBER_ID for both, and the group was Empty with no member.
    assert_eq!(heartbeat(&mut a, &a_id, gen), NONE, "{how:?}: heartbeat of the old member");
    assert_eq!(commit(&mut a, &a_id, gen, 20), NONE, "{how:?}: commit of the old member");
    assert_eq!(fetch_committed(&mut a), 20);
    let after = describe(&mut a);
    assert_eq!(after, before, "{how:?}: DescribeGroups after the restart");
    assert_eq!(
        after.1.iter().map(|(id, inst, asg)| (id.as_str(), inst.as_deref(), asg.as_slice())).collect::<Vec<_>>(),
        {
            let mut want = vec![(a_id.as_str(), None, &b"part-a"[..]), (b_id.as_str(), Some("inst-b"), &b"part-b"[..])];
            want.sort();
            want
        }
    );

    // B never comes back: its (fresh) session expires and the group rebalances without it.
    wait_for("B's session to expire", Duration::from_secs(30), || {
        let code = heartbeat(&mut a, &a_id, gen);
        assert!(code == NONE || code == REBALANCE_IN_PROGRESS, "{how:?}: heartbeat {code}");
        code == REBALANCE_IN_PROGRESS
    });
    let ja = join(&mut a, &a_id, None);
    assert_eq!(ja.error_code, NONE);
    assert!(ja.generation_id > gen);
    assert_eq!(ja.members.len(), 1, "only A is left");
    assert_eq!(sync(&mut a, &a_id, None, ja.generation_id, &[(&a_id, b"all")]).error_code, NONE);
    let (state, members) = describe(&mut a);
    assert_eq!((state.as_str(), members.len()), ("Stable", 1));
    // A stops heartbeating: the group goes Empty, and stays Empty (same generation) across a
    // restart; A is no longer known.
    let last_gen = ja.generation_id;
    // (The Empty record is appended just after the state changes: wait for both.)
    let end = offsets_log_end(&mut a);
    wait_for("the group to go Empty", Duration::from_secs(30), || {
        describe(&mut a).0 == "Empty" && offsets_log_end(&mut a) > end
    });
    stop(broker, how);
    let broker = start(dir.path(), addr);
    let mut a = Client::connect(addr);
    assert_eq!(describe(&mut a), ("Empty".to_string(), vec![]));
    assert_eq!(heartbeat(&mut a, &a_id, last_gen), UNKNOWN_MEMBER_ID);
    assert_eq!(fetch_committed(&mut a), 20);
    let j = join(&mut a, "", None);
    assert_eq!(j.error_code, NONE);
    assert!(j.generation_id > last_gen, "generation {} after {last_gen}: the Empty group kept its generation", j.generation_id);
    stop(broker, Stop::Graceful);
}

#[test]
fn group_membership_survives_a_graceful_restart() {
    membership_survives_a_restart(Stop::Graceful);
}

#[test]
fn group_membership_survives_kill9() {
    membership_survives_a_restart(Stop::Kill9);
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/group_restart.py")
}

fn python_produce(addr: SocketAddr, prefix: &str, count: usize) {
    let out = run(
        Command::new(require_tool("python3")).arg(script()).args([
            "produce",
            "--bootstrap",
            &addr.to_string(),
            "--prefix",
            prefix,
            "--count",
            &count.to_string(),
        ]),
        None,
        Duration::from_secs(60),
    );
    let v: serde_json::Value = serde_json::from_slice(&out).expect("produce output");
    assert_eq!(v["unflushed"], 0, "{v}");
}

fn client_keeps_its_place_across_a_restart(how: Stop) {
    const N: usize = 10;
    const M: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let go = dir.path().join("go");
    let data = dir.path().join("data");
    let mut broker = Some(start(&data, addr));
    python_produce(addr, "old", N);
    let mut consumer = Command::new(require_tool("python3"))
        .arg(script())
        .args(["consume", "--bootstrap", &addr.to_string(), "--first", &N.to_string(), "--then", &M.to_string()])
        .arg("--go")
        .arg(&go)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn consumer");
    let stdout = consumer.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let result = (|| {
        let first = rx.recv_timeout(Duration::from_secs(90)).map_err(|e| format!("no 'consumed' line: {e}"))?;
        if first != format!("consumed {N}") {
            return Err(format!("consumer: {first}"));
        }
        stop(broker.take().unwrap(), how);
        broker = Some(start(&data, addr));
        std::fs::write(&go, b"go").unwrap();
        python_produce(addr, "new", M);
        let line = rx.recv_timeout(Duration::from_secs(150)).map_err(|e| format!("no result line: {e}"))?;
        serde_json::from_str::<serde_json::Value>(&line).map_err(|e| format!("{e}: {line}"))
    })();
    let _ = consumer.kill();
    let _ = consumer.wait();
    if let Some(b) = broker {
        stop(b, Stop::Graceful);
    }
    let r = result.unwrap_or_else(|e| panic!("{how:?}: {e}"));
    let old: Vec<String> = (0..N).map(|i| format!("old-{i}")).collect();
    let new: Vec<String> = (0..M).map(|i| format!("new-{i}")).collect();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().expect("array").iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect()
    };
    assert_eq!(strings(&r["before"]), old, "{how:?}: {r}");
    assert_eq!(r["committed"], true, "{how:?}: the commit after the restart: {r}");
    // Exactly the M new records, each once: no record read before the restart again.
    assert_eq!(strings(&r["after"]), new, "{how:?}: {r}");
}

#[test]
fn confluent_consumer_keeps_its_place_across_kill9() {
    client_keeps_its_place_across_a_restart(Stop::Kill9);
}

#[test]
fn confluent_consumer_keeps_its_place_across_a_graceful_restart() {
    client_keeps_its_place_across_a_restart(Stop::Graceful);
}
