//! SASL and ACLs with real clients over a SASL_PLAINTEXT listener (issue 18): confluent-kafka
//! and kafka-python (`tests/interop/security.py`), kafkajs (`tests/interop/js/security.js`),
//! kcat (Debian's librdkafka 2.0.2), and the broker's own wire checks (nothing served before
//! authentication, v0 handshake raw tokens, a failed login answered SASL_AUTHENTICATION_FAILED
//! and closed).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{require_tool, run};
use engine::broker::auth::{acl, credentials, parse_listeners, scram, Mechanism, SecurityProtocol};
use engine::broker::{Broker, BrokerConfig, BrokerHandle};
use engine::log::Durability;

/// PLAIN admin (super user), alice and u (password p: a 4-byte PLAIN token); SCRAM-SHA-256
/// bob; SCRAM-SHA-512 carol.
fn users_file(dir: &Path) -> std::path::PathBuf {
    let bob = scram::ScramCredential::from_password(scram::ScramHash::Sha256, "bob-secret", b"bob-salt-0123456", 4096);
    let carol = scram::ScramCredential::from_password(scram::ScramHash::Sha512, "carol-secret", b"carol-salt-01234", 4096);
    let text = format!(
        "PLAIN admin admin-secret\nPLAIN alice alice-secret\nPLAIN u p\n{}\n{}\n",
        credentials::scram_line(Mechanism::ScramSha256, "bob", &bob),
        credentials::scram_line(Mechanism::ScramSha512, "carol", &carol)
    );
    let f = dir.join("users");
    std::fs::write(&f, text).unwrap();
    f
}

fn start_secured(data: &Path, work: &Path, authorizer: bool) -> BrokerHandle {
    let mut cfg = BrokerConfig::new(data.to_path_buf(), Durability::Group);
    cfg.listeners = parse_listeners("PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0").unwrap();
    cfg.security.sasl_users_file = Some(users_file(work));
    cfg.security.authorizer = authorizer;
    cfg.security.super_users = vec!["User:admin".into()];
    Broker::start(cfg).expect("broker starts")
}

fn sasl_addr(b: &BrokerHandle) -> String {
    b.listener_addr(SecurityProtocol::SaslPlaintext).unwrap().to_string()
}

fn python_json(client: &str, bootstrap: &str, allowed: &str, denied: &str) -> serde_json::Value {
    let py = require_tool("python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/security.py");
    let out = run(
        Command::new(py).arg(&script).args([client, "--bootstrap", bootstrap, "--allowed", allowed, "--denied", denied]),
        None,
        Duration::from_secs(400),
    );
    let out = String::from_utf8(out).unwrap();
    println!("{client}: {out}");
    serde_json::from_str(out.lines().last().expect("one JSON line")).unwrap()
}

#[test]
fn confluent_kafka_sasl_plain_scram_and_acls() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let broker = start_secured(data.path(), work.path(), true);
    let r = python_json("confluent", &sasl_addr(&broker), "allowed-ck", "denied-ck");
    assert_eq!(r["create_acls"].as_array().unwrap().len(), 7, "{r}");
    assert_eq!(r["describe_acls"].as_array().unwrap().len(), 7, "{r}");
    assert_eq!(r["alice_create_acls"], "CLUSTER_AUTHORIZATION_FAILED", "{r}");
    for user in ["alice", "bob", "carol"] {
        let u = &r[user];
        assert_eq!(u["produce_allowed"]["delivered"], 3, "{user}: {u}");
        assert_eq!(u["produce_allowed"]["error"], serde_json::Value::Null, "{user}: {u}");
        assert_eq!(u["produce_denied"]["delivered"], 0, "{user}: {u}");
        assert_eq!(u["produce_denied"]["error"], "TOPIC_AUTHORIZATION_FAILED", "{user}: {u}");
        assert!(u["consume_allowed"]["read"].as_u64().unwrap() >= 3, "{user}: {u}");
        assert_eq!(u["consume_allowed"]["commit"], "ok", "{user}: {u}");
        assert_eq!(u["consume_denied"]["error"], "TOPIC_AUTHORIZATION_FAILED", "{user}: {u}");
        assert_eq!(u["group_denied"]["error"], "GROUP_AUTHORIZATION_FAILED", "{user}: {u}");
        assert_eq!(u["wrong_password"], "_AUTHENTICATION", "{user}: {u}");
    }
    assert_eq!(r["alter_scram"], serde_json::json!(["ok"]), "{r}");
    assert_eq!(r["describe_scram"]["dave"], serde_json::json!(["SCRAM_SHA_256 4096", "SCRAM_SHA_512 8192"]), "{r}");
    assert_eq!(r["dave_256"], serde_json::Value::Null, "{r}");
    assert_eq!(r["dave_512"], serde_json::Value::Null, "{r}");
    assert_eq!(r["dave_wrong"], "_AUTHENTICATION", "{r}");
    assert_eq!(r["dave_produce"]["error"], "TOPIC_AUTHORIZATION_FAILED", "{r}");
    assert_eq!(r["dave_512_after_delete"], "_AUTHENTICATION", "{r}");
    assert_eq!(r["delete_acls"], 1, "{r}");
    assert_eq!(r["alice_after_delete"]["error"], "TOPIC_AUTHORIZATION_FAILED", "{r}");
    assert_eq!(r["txn_allowed"], "committed", "{r}");
    assert_eq!(r["txn_denied"], "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", "{r}");
    // Two records and the commit marker.
    assert_eq!(broker.logs().partition("allowed-ck-tx", 0).unwrap().log_end_offset(), 3);
    // Every record acknowledged to alice, bob and carol is stored; none for the denied topic.
    assert_eq!(broker.logs().partition("allowed-ck", 0).unwrap().log_end_offset(), 9);
    assert_eq!(broker.logs().partition("denied-ck", 0).unwrap().log_end_offset(), 0);
    broker.shutdown().unwrap();
}

#[test]
fn kafka_python_sasl_plain_scram_and_acls() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let broker = start_secured(data.path(), work.path(), true);
    let r = python_json("kafka-python", &sasl_addr(&broker), "allowed-kp", "denied-kp");
    assert_eq!(r["create_acls"]["succeeded"], 7, "{r}");
    assert_eq!(r["describe_acls"], 7, "{r}");
    for user in ["alice", "bob", "carol"] {
        let u = &r[user];
        assert_eq!(u["produce_allowed"]["delivered"], 3, "{user}: {u}");
        assert_eq!(u["produce_denied"]["error"], "TopicAuthorizationFailedError", "{user}: {u}");
        assert!(u["consume_allowed"]["read"].as_u64().unwrap() >= 3, "{user}: {u}");
        assert_eq!(u["consume_denied"]["error"], "TopicAuthorizationFailedError", "{user}: {u}");
        // The broker's SASL_AUTHENTICATION_FAILED reaches the client (its log) and it gives up
        // within its bootstrap timeout (kafka-python 3 retries bootstrapping until then).
        assert_eq!(u["wrong_password"], "KafkaTimeoutError after SaslAuthenticationFailedError", "{user}: {u}");
    }
    assert_eq!(r["delete_acls"], 1, "{r}");
    assert_eq!(r["alice_after_delete"]["error"], "TopicAuthorizationFailedError", "{r}");
    assert_eq!(broker.logs().partition("allowed-kp", 0).unwrap().log_end_offset(), 9);
    broker.shutdown().unwrap();
}

/// Run a command bounded in time; (exit success, stdout, stderr).
fn run_status(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> (bool, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{cmd:?} did not finish within {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// ACLs written to the data directory before the broker starts (the file CreateAcls keeps).
fn preset_acls(data: &Path, bindings: &[(&str, acl::Operation, acl::ResourceType, acl::PatternType, &str)]) {
    let a = acl::Authorizer::open(&data.join(engine::broker::auth::SECURITY_DIR), vec![]).unwrap();
    let list: Vec<acl::AclBinding> = bindings
        .iter()
        .map(|&(principal, operation, resource_type, pattern, name)| acl::AclBinding {
            resource_type,
            pattern,
            name: name.into(),
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission: acl::Permission::Allow,
        })
        .collect();
    a.create(&list).unwrap();
}

fn kcat_sasl(kcat: &Path, addr: &str, mechanism: &str, user: &str, password: &str) -> Command {
    let mut c = Command::new(kcat);
    c.args(["-b", addr, "-X", "security.protocol=SASL_PLAINTEXT", "-X"])
        .arg(format!("sasl.mechanisms={mechanism}"))
        .args(["-X", &format!("sasl.username={user}"), "-X", &format!("sasl.password={password}")]);
    c
}

/// Debian's kcat (librdkafka 2.0.2): PLAIN produces, SCRAM-SHA-256 consumes, SCRAM-SHA-512 is
/// refused a denied topic, a wrong password fails with the broker's authentication message.
#[test]
fn kcat_sasl_plain_scram_and_acls() {
    use acl::{Operation::*, PatternType::*, ResourceType::*};
    let kcat = require_tool("kcat");
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    preset_acls(
        data.path(),
        &[
            ("User:alice", All, Topic, Prefixed, "kc-allowed"),
            ("User:bob", Read, Topic, Literal, "kc-allowed"),
            ("User:carol", Write, Topic, Literal, "kc-allowed"),
        ],
    );
    let broker = start_secured(data.path(), work.path(), true);
    let addr = sasl_addr(&broker);
    let limit = Duration::from_secs(60);
    let (ok, _, err) = run_status(
        kcat_sasl(&kcat, &addr, "PLAIN", "alice", "alice-secret").args(["-P", "-t", "kc-allowed", "-p", "0"]),
        Some(b"one\ntwo\nthree\n"),
        limit,
    );
    assert!(ok, "alice (PLAIN) produces: {err}");
    let (ok, out, err) = run_status(
        kcat_sasl(&kcat, &addr, "SCRAM-SHA-256", "bob", "bob-secret").args(["-C", "-t", "kc-allowed", "-p", "0", "-o", "beginning", "-e"]),
        None,
        limit,
    );
    assert!(ok, "bob (SCRAM-SHA-256) consumes: {err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["one", "two", "three"]);
    let (ok, _, err) = run_status(
        kcat_sasl(&kcat, &addr, "SCRAM-SHA-512", "carol", "carol-secret").args(["-P", "-t", "kc-allowed", "-p", "0"]),
        Some(b"four\n"),
        limit,
    );
    assert!(ok, "carol (SCRAM-SHA-512) produces: {err}");
    // Bob may read, not write: the producer reports the authorization error.
    let (ok, _, err) = run_status(
        kcat_sasl(&kcat, &addr, "SCRAM-SHA-256", "bob", "bob-secret").args(["-P", "-t", "kc-allowed", "-p", "0"]),
        Some(b"nope\n"),
        limit,
    );
    assert!(!ok && err.contains("Topic authorization failed"), "bob's produce refused: {err}");
    // Carol may not read.
    let (ok, _, err) = run_status(
        kcat_sasl(&kcat, &addr, "SCRAM-SHA-512", "carol", "carol-secret").args(["-C", "-t", "kc-allowed", "-p", "0", "-o", "beginning", "-e"]),
        None,
        limit,
    );
    assert!(!ok && err.contains("Topic authorization failed"), "carol's consume refused: {err}");
    for (mech, user) in [("PLAIN", "alice"), ("SCRAM-SHA-256", "bob"), ("SCRAM-SHA-512", "carol")] {
        let (ok, _, err) = run_status(kcat_sasl(&kcat, &addr, mech, user, "wrong").args(["-L", "-m", "5"]), None, limit);
        assert!(!ok && err.contains("Authentication failed"), "{mech} wrong password: {err}");
    }
    assert_eq!(broker.logs().partition("kc-allowed", 0).unwrap().log_end_offset(), 4, "bob's refused record is not stored");
    broker.shutdown().unwrap();
}

// ------------------------------------------------------------------------------ wire-level checks

use bytes::Bytes;
use common::Client;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn sasl_client(b: &BrokerHandle) -> Client {
    Client::connect(b.listener_addr(SecurityProtocol::SaslPlaintext).unwrap())
}

fn plain_token(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// Nothing but ApiVersions / SaslHandshake / SaslAuthenticate before authentication (anything
/// else closes the connection); a wrong password is answered SASL_AUTHENTICATION_FAILED (58)
/// with a message, then the connection is closed; a right one serves requests, and Metadata
/// advertises the SASL listener the client used.
#[test]
fn sasl_listener_serves_nothing_before_authentication() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let broker = start_secured(data.path(), work.path(), false);
    let sasl = broker.listener_addr(SecurityProtocol::SaslPlaintext).unwrap();

    let mut c = sasl_client(&broker);
    let v = c.call(3, &ApiVersionsRequest::default());
    assert_eq!(v.error_code, 0);
    assert!(v.api_keys.iter().any(|k| k.api_key == 36 && k.max_version == 2), "SaslAuthenticate v0-2 advertised");
    c.send(12, &MetadataRequest::default());
    assert!(c.closed_by_peer(), "Metadata before authentication closes the connection");

    // Unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled list, then closed.
    let mut c = sasl_client(&broker);
    let h = c.call(1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI")));
    assert_eq!(h.error_code, 33);
    assert_eq!(h.mechanisms.iter().map(|m| m.to_string()).collect::<Vec<_>>(), ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert!(c.closed_by_peer());

    // Wrong password.
    let mut c = sasl_client(&broker);
    assert_eq!(c.call(1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).error_code, 0);
    let r = c.call(2, &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(plain_token("alice", "bad"))));
    assert_eq!(r.error_code, 58);
    assert!(r.error_message.unwrap().contains("Invalid username or password"));
    assert!(c.closed_by_peer(), "a failed authentication closes the connection");

    // Right password: served; Metadata advertises the SASL listener.
    let mut c = sasl_client(&broker);
    assert_eq!(c.call(1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).error_code, 0);
    let r = c.call(2, &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(plain_token("alice", "alice-secret"))));
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.session_lifetime_ms, 0, "no re-authentication asked");
    let m = c.call(12, &MetadataRequest::default());
    assert_eq!(m.brokers[0].port, sasl.port() as i32, "the listener the client used is advertised");
    // A second handshake on an authenticated connection: ILLEGAL_SASL_STATE, still served.
    assert_eq!(c.call(1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).error_code, 34);
    assert_eq!(c.call(12, &MetadataRequest::default()).brokers.len(), 1);

    // The PLAINTEXT listener: no SASL there (ILLEGAL_SASL_STATE), Metadata advertises it.
    let plain = broker.listener_addr(SecurityProtocol::Plaintext).unwrap();
    let mut c = Client::connect(plain);
    assert_eq!(c.call(1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).error_code, 34);
    assert_eq!(c.call(12, &MetadataRequest::default()).brokers[0].port, plain.port() as i32);
    broker.shutdown().unwrap();
}

/// SaslHandshake v0 (old clients): the tokens follow as bare frames. PLAIN's success is an
/// empty frame; SCRAM's two rounds are bare frames; a wrong password closes the connection.
#[test]
fn sasl_handshake_v0_raw_tokens() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let broker = start_secured(data.path(), work.path(), false);
    fn raw(c: &mut Client, token: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut f = (token.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(token);
        c.stream.write_all(&f).unwrap();
        let mut size = [0u8; 4];
        c.stream.read_exact(&mut size)?;
        let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
        c.stream.read_exact(&mut buf)?;
        Ok(buf)
    }
    let mut c = sasl_client(&broker);
    assert_eq!(c.call(0, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).error_code, 0);
    assert_eq!(raw(&mut c, &plain_token("alice", "alice-secret")).unwrap(), Vec::<u8>::new(), "PLAIN success: an empty frame");
    assert_eq!(c.call(12, &MetadataRequest::default()).brokers.len(), 1, "authenticated: requests are served");

    let mut c = sasl_client(&broker);
    assert_eq!(c.call(0, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).error_code, 0);
    assert!(raw(&mut c, &plain_token("alice", "wrong-password")).is_err(), "v0: a failure closes the connection");

    // A token shorter than any request header is still a token (not a too-small frame).
    let mut c = sasl_client(&broker);
    assert_eq!(c.call(0, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).error_code, 0);
    assert_eq!(raw(&mut c, &plain_token("u", "p")).unwrap(), Vec::<u8>::new(), "a 4-byte PLAIN token");
    assert_eq!(c.call(12, &MetadataRequest::default()).brokers.len(), 1);

    // SCRAM-SHA-256 over raw frames, the client side computed here (RFC 5802).
    let mut c = sasl_client(&broker);
    assert_eq!(c.call(0, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"))).error_code, 0);
    let first_bare = "n=bob,r=clientnonce123";
    let server_first = String::from_utf8(raw(&mut c, format!("n,,{first_bare}").as_bytes()).unwrap()).unwrap();
    let salt_b64 = server_first.split(',').find_map(|a| a.strip_prefix("s=")).unwrap();
    use base64::Engine;
    let salt = base64::engine::general_purpose::STANDARD.decode(salt_b64).unwrap();
    let nonce = server_first.split(',').find_map(|a| a.strip_prefix("r=")).unwrap();
    let h = scram::ScramHash::Sha256;
    let salted = h.salted_password(b"bob-secret", &salt, 4096);
    let client_key = h.hmac(&salted, b"Client Key");
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let sig = h.hmac(&h.h(&client_key), auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
    let fin = format!("{without_proof},p={}", base64::engine::general_purpose::STANDARD.encode(proof));
    let server_final = String::from_utf8(raw(&mut c, fin.as_bytes()).unwrap()).unwrap();
    let expected = h.hmac(&h.hmac(&salted, b"Server Key"), auth_message.as_bytes());
    assert_eq!(server_final, format!("v={}", base64::engine::general_purpose::STANDARD.encode(expected)));
    assert_eq!(c.call(12, &MetadataRequest::default()).brokers.len(), 1);
    broker.shutdown().unwrap();
}

/// With the authorizer on, the loopback PLAINTEXT listener's principal is User:ANONYMOUS:
/// denied by default (Produce TOPIC_AUTHORIZATION_FAILED, CreateTopics refused, the topic list
/// hidden, DescribeCluster CLUSTER_AUTHORIZATION_FAILED), allowed what ACLs grant it.
#[test]
fn anonymous_plaintext_principal_under_the_authorizer() {
    use acl::{Operation::*, PatternType::*, ResourceType::*};
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    preset_acls(
        data.path(),
        &[
            ("User:ANONYMOUS", Describe, Topic, Literal, "visible"),
            ("User:ANONYMOUS", Create, Topic, Literal, "visible"),
            ("User:ANONYMOUS", Read, Group, Literal, "g848"),
            ("User:ANONYMOUS", Write, TransactionalId, Literal, "tx-ok"),
        ],
    );
    let broker = start_secured(data.path(), work.path(), true);
    broker.logs().create_topic("hidden", 1, None).unwrap();
    let mut c = Client::connect(broker.listener_addr(SecurityProtocol::Plaintext).unwrap());
    let topic = |n: &str| kafka_protocol::messages::create_topics_request::CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(n.into())))
        .with_num_partitions(1)
        .with_replication_factor(1);
    let r = c.call(7, &CreateTopicsRequest::default().with_topics(vec![topic("visible"), topic("other")]).with_timeout_ms(5000));
    assert_eq!(r.topics.iter().map(|t| t.error_code).collect::<Vec<_>>(), [0, 29]);
    let m = c.call(12, &MetadataRequest::default().with_topics(None));
    assert_eq!(m.topics.iter().map(|t| t.name.as_ref().unwrap().to_string()).collect::<Vec<_>>(), ["visible"], "only Describe-able topics listed");
    let named = c.call(
        12,
        &MetadataRequest::default().with_topics(Some(vec![kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("hidden"))))])),
    );
    assert_eq!(named.topics[0].error_code, 29);
    let recs = [engine::record::build::Rec { key: None, value: Some(b"x"), timestamp_delta: 0 }];
    let rec = engine::record::build::batch_with(&recs, 0, -1, -1, -1);
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
        kafka_protocol::messages::produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("visible")))
            .with_partition_data(vec![kafka_protocol::messages::produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(rec)))]),
    ]);
    let r = c.call(9, &produce);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 29, "Describe and Create do not grant Write");
    assert_eq!(broker.logs().partition("visible", 0).unwrap().log_end_offset(), 0);
    assert_eq!(c.call(0, &DescribeClusterRequest::default()).error_code, 31);
    let acls = c.call(3, &DescribeAclsRequest::default().with_resource_type_filter(1).with_pattern_type_filter(1).with_operation(1).with_permission_type(1));
    assert_eq!(acls.error_code, 31, "ACLs are not shown to a principal without Describe on the cluster");

    // KIP-848: ConsumerGroupHeartbeat needs Read on the group and Describe on each subscribed
    // topic; ConsumerGroupDescribe needs Describe on the group.
    let heartbeat = |group: &str, topic: &str| {
        let mut r = ConsumerGroupHeartbeatRequest::default();
        r.group_id = GroupId(StrBytes::from_string(group.into()));
        r.member_id = StrBytes::from_static_str("member-1");
        r.rebalance_timeout_ms = 30_000;
        r.subscribed_topic_names = Some(vec![TopicName(StrBytes::from_string(topic.into()))]);
        r.topic_partitions = Some(vec![]);
        r
    };
    assert_eq!(c.call(1, &heartbeat("other", "visible")).error_code, 30);
    let r = c.call(1, &heartbeat("g848", "hidden"));
    assert_eq!(r.error_code, 29);
    assert!(r.error_message.unwrap().contains("hidden"));
    let r = c.call(1, &heartbeat("g848", "visible"));
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.member_epoch, 1, "joined");
    let d = c.call(0, &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(StrBytes::from_static_str("g848")), GroupId(StrBytes::from_static_str("other"))]));
    assert_eq!(d.groups.iter().map(|g| (g.group_id.to_string(), g.error_code)).collect::<Vec<_>>(), [("g848".to_string(), 0), ("other".to_string(), 30)]);
    assert_eq!(d.groups[0].members.len(), 1, "Read on the group implies Describe");

    // Transactions: Write on the transactional id, Write on the topics added.
    let init = |id: &str| {
        InitProducerIdRequest::default()
            .with_transactional_id(Some(kafka_protocol::messages::TransactionalId(StrBytes::from_string(id.into()))))
            .with_transaction_timeout_ms(60_000)
    };
    assert_eq!(c.call(4, &init("tx-denied")).error_code, 53);
    let ok = c.call(4, &init("tx-ok"));
    assert_eq!(ok.error_code, 0);
    let end = EndTxnRequest::default().with_transactional_id(kafka_protocol::messages::TransactionalId(StrBytes::from_static_str("tx-denied"))).with_committed(true);
    assert_eq!(c.call(3, &end).error_code, 53);
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(kafka_protocol::messages::TransactionalId(StrBytes::from_static_str("tx-ok")))
        .with_v3_and_below_producer_id(ok.producer_id)
        .with_v3_and_below_producer_epoch(ok.producer_epoch)
        .with_v3_and_below_topics(vec![kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("visible")))
            .with_partitions(vec![0])]);
    let r = c.call(3, &add);
    assert_eq!(r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 29, "no Write on the topic");
    // A transaction of the super user admin (over SASL): hidden from ANONYMOUS.
    let mut a = sasl_client(&broker);
    assert_eq!(a.call(1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"))).error_code, 0);
    assert_eq!(a.call(2, &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(plain_token("admin", "admin-secret")))).error_code, 0);
    assert_eq!(a.call(4, &init("tx-admin")).error_code, 0);
    let d = c.call(0, &DescribeTransactionsRequest::default().with_transactional_ids(vec![
        kafka_protocol::messages::TransactionalId(StrBytes::from_static_str("tx-admin")),
        kafka_protocol::messages::TransactionalId(StrBytes::from_static_str("tx-ok")),
    ]));
    assert_eq!(d.transaction_states.iter().map(|t| t.error_code).collect::<Vec<_>>(), [53, 0]);
    let listed = c.call(0, &ListTransactionsRequest::default());
    let ids: Vec<String> = listed.transaction_states.iter().map(|t| t.transactional_id.to_string()).collect();
    assert_eq!(ids, ["tx-ok"], "only the Describe-able (Write implies Describe) transactional ids are listed");
    broker.shutdown().unwrap();
}

/// TLS listeners are parsed but refused until the broker has TLS, with a clear message.
#[test]
fn tls_listeners_are_refused_clearly() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = BrokerConfig::new(data.path().to_path_buf(), Durability::Never);
    cfg.listeners = parse_listeners("PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0").unwrap();
    let e = Broker::start(cfg).err().expect("refused");
    assert!(e.to_string().contains("SASL_SSL is not available yet"), "{e}");
}

/// The binary: `--listen` and `--listeners` together are refused; SSL listeners are refused
/// with the reason; `--super-users` needs `--authorizer`.
#[test]
fn broker_binary_refuses_conflicting_security_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (args, want) in [
        (vec!["--listen", "127.0.0.1:0", "--listeners", "SASL_PLAINTEXT://127.0.0.1:0"], "not both"),
        (vec!["--listeners", "SSL://127.0.0.1:0"], "SSL is not available yet"),
        (vec!["--super-users", "User:admin"], "--super-users needs --authorizer"),
        (vec!["--listeners", "KERBEROS://127.0.0.1:0"], "unknown security protocol"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_broker")).args(["--data-dir", data]).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn kafkajs_sasl_plain_scram_and_acls() {
    let node = require_tool("node");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/js");
    assert!(
        dir.join("node_modules/kafkajs").is_dir(),
        "kafkajs is not installed: run `npm ci --prefix engine/tests/interop/js` (.ci/run does)"
    );
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let broker = start_secured(data.path(), work.path(), true);
    let out = run(Command::new(node).arg(dir.join("security.js")).args([&sasl_addr(&broker), "allowed-js", "denied-js"]), None, Duration::from_secs(400));
    let out = String::from_utf8(out).unwrap();
    println!("kafkajs: {out}");
    let r: serde_json::Value = serde_json::from_str(out.lines().last().expect("one JSON line")).unwrap();
    assert_eq!(r["create_acls"], true, "{r}");
    assert_eq!(r["describe_acls"], 9, "{r}");
    for user in ["alice", "bob", "carol"] {
        let u = &r[user];
        assert_eq!(u["produce_allowed"], serde_json::json!({"delivered": 3, "error": null}), "{user}: {u}");
        assert_eq!(u["produce_denied"]["error"], "TOPIC_AUTHORIZATION_FAILED", "{user}: {u}");
        assert_eq!(u["consume_allowed"], serde_json::json!({"read": 3, "error": null}), "{user}: {u}");
        assert_eq!(u["consume_denied"]["error"], "TOPIC_AUTHORIZATION_FAILED", "{user}: {u}");
        assert_eq!(u["wrong_password"], "KafkaJSSASLAuthenticationError", "{user}: {u}");
    }
    assert_eq!(r["delete_acls"], 1, "{r}");
    assert_eq!(r["alice_after_delete"]["error"], "TOPIC_AUTHORIZATION_FAILED", "{r}");
    assert_eq!(broker.logs().partition("allowed-js", 0).unwrap().log_end_offset(), 9);
    broker.shutdown().unwrap();
}
