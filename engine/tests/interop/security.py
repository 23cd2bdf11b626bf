#!/usr/bin/env python3
"""SASL and ACLs through real Python clients, driven by engine/tests/security_interop.rs.

The broker runs with a SASL_PLAINTEXT listener, --sasl-users (PLAIN admin / alice, SCRAM-SHA-256
bob, SCRAM-SHA-512 carol), --authorizer and --super-users User:admin. Every wait is bounded.
Each subcommand prints one JSON object.

confluent   (confluent-kafka, current librdkafka)
  As admin: create topics --allowed and --denied, CreateAcls (User:alice/bob/carol: Write and
  Read on topics prefixed --allowed, Read on groups prefixed "g-"), DescribeAcls.
  For alice (PLAIN), bob (SCRAM-SHA-256), carol (SCRAM-SHA-512): produce 3 records to --allowed
  (delivery reports), produce to --denied (the error), consume --allowed in group g-<user>
  (records read), consume --denied (the error).
  A wrong password (each mechanism): the error the client reports.
  AlterUserScramCredentials (dave, SCRAM-SHA-256 and -512), DescribeUserScramCredentials, dave
  logs in with each (list_topics) and is denied a produce (no ACL); bob's transactional
  producer commits with Write on its transactional id and is refused without; then DeleteAcls
  of alice's Write: alice's next produce is denied.
kafka-python (kafka-python) the same checks, CreateAcls/DescribeAcls/DeleteAcls through its
  KafkaAdminClient.
"""
import argparse
import json
import logging
import sys
import time

TOPIC_AUTHORIZATION_FAILED = "TOPIC_AUTHORIZATION_FAILED"


def out(obj):
    print(json.dumps(obj, sort_keys=True))
    sys.stdout.flush()


USERS = [("alice", "alice-secret", "PLAIN"), ("bob", "bob-secret", "SCRAM-SHA-256"), ("carol", "carol-secret", "SCRAM-SHA-512")]
ADMIN = ("admin", "admin-secret", "PLAIN")


# ------------------------------------------------------------------------------------- confluent

def ck_conf(a, user, password, mechanism, **extra):
    c = {
        "bootstrap.servers": a.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }
    c.update(extra)
    return c


def ck_produce(a, cred, topic, n):
    """(delivered, first error name or None)"""
    from confluent_kafka import Producer
    errors, delivered = [], []

    def cb(err, msg):
        if err is not None:
            errors.append(err.name())
        else:
            delivered.append(msg.offset())

    p = Producer(ck_conf(a, *cred, **{"acks": "all", "message.timeout.ms": 15000, "retries": 0}))
    for i in range(n):
        p.produce(topic, value=b"v%d" % i, on_delivery=cb)
    left = p.flush(30)
    return {"delivered": len(delivered), "error": errors[0] if errors else None, "unflushed": left}


def ck_consume(a, cred, topic, group, want):
    from confluent_kafka import Consumer, KafkaException
    c = Consumer(ck_conf(a, *cred, **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                      "session.timeout.ms": 10000}))
    c.subscribe([topic])
    got, err, deadline = 0, None, time.time() + 30
    while got < want and err is None and time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            err = m.error().name()
        else:
            got += 1
    committed = None
    if got and err is None:
        try:
            c.commit(asynchronous=False)
            committed = "ok"
        except KafkaException as e:
            committed = e.args[0].name()
    c.close()
    return {"read": got, "error": err, "commit": committed}


def ck_login_error(a, user, password, mechanism):
    """Connect with these credentials; the error reported through error_cb (an authentication
    failure is reported there as _AUTHENTICATION; list_topics itself only sees the connection
    go down), or None when list_topics succeeded."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka import KafkaException
    errs = []
    admin = AdminClient(ck_conf(a, user, password, mechanism, error_cb=lambda e: errs.append(e.name())))
    try:
        admin.list_topics(timeout=10)
        return None
    except KafkaException as e:
        failed = e.args[0].name()
    deadline = time.time() + 10
    while not errs and time.time() < deadline:
        admin.poll(0.2)
    return "_AUTHENTICATION" if "_AUTHENTICATION" in errs else (errs[0] if errs else failed)


def ck_txn(a, cred, txn_id, topic, n):
    """A transactional producer: init, n records, commit. The outcome, or the error's name."""
    from confluent_kafka import Producer, KafkaException
    p = Producer(ck_conf(a, *cred, **{"transactional.id": txn_id, "transaction.timeout.ms": 30000}))
    try:
        p.init_transactions(30)
        p.begin_transaction()
        for i in range(n):
            p.produce(topic, value=b"t%d" % i)
        p.commit_transaction(30)
        return "committed"
    except KafkaException as e:
        return e.args[0].name()


def confluent(a):
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                       NewTopic, ResourcePatternType, ResourceType, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion, UserScramCredentialDeletion)
    from confluent_kafka import KafkaException
    res = {}
    admin = AdminClient(ck_conf(a, *ADMIN))
    for t, f in admin.create_topics([NewTopic(a.allowed, 1), NewTopic(a.denied, 1)]).items():
        f.result(timeout=30)
    acls = []
    for user, _, _ in USERS:
        for op in (AclOperation.WRITE, AclOperation.READ):
            acls.append(AclBinding(ResourceType.TOPIC, a.allowed, ResourcePatternType.PREFIXED, "User:" + user, "*", op,
                                   AclPermissionType.ALLOW))
    acls.append(AclBinding(ResourceType.GROUP, "g-", ResourcePatternType.PREFIXED, "User:*", "*", AclOperation.READ,
                           AclPermissionType.ALLOW))
    res["create_acls"] = [("ok" if f.result(timeout=30) is None else "?") for f in admin.create_acls(acls).values()]
    flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                           AclPermissionType.ANY)
    described = admin.describe_acls(flt).result(timeout=30)
    res["describe_acls"] = sorted("%s %s %s %s %s" % (b.principal, b.operation.name, b.restype.name, b.resource_pattern_type.name,
                                                    b.name) for b in described)
    # A user (not super) may not create ACLs.
    try:
        alice_admin = AdminClient(ck_conf(a, *USERS[0][:3]))
        list(alice_admin.create_acls([acls[0]]).values())[0].result(timeout=30)
        res["alice_create_acls"] = "ok"
    except KafkaException as e:
        res["alice_create_acls"] = e.args[0].name()
    for user, pw, mech in USERS:
        r = {}
        r["produce_allowed"] = ck_produce(a, (user, pw, mech), a.allowed, 3)
        r["produce_denied"] = ck_produce(a, (user, pw, mech), a.denied, 1)
        r["consume_allowed"] = ck_consume(a, (user, pw, mech), a.allowed, "g-" + user, 3)
        r["consume_denied"] = ck_consume(a, (user, pw, mech), a.denied, "g-" + user + "-d", 1)
        r["group_denied"] = ck_consume(a, (user, pw, mech), a.allowed, "other-" + user, 1)
        r["wrong_password"] = ck_login_error(a, user, pw + "x", mech)
        res[user] = r
    # SCRAM credentials through the API, then used.
    ups = [UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"dave-secret"),
           UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"dave-secret")]
    res["alter_scram"] = [("ok" if f.result(timeout=30) is None else "?") for f in admin.alter_user_scram_credentials(ups).values()]
    futs = admin.describe_user_scram_credentials(["dave"])
    d = {k: f.result(timeout=30) for k, f in futs.items()}
    res["describe_scram"] = {u: sorted("%s %d" % (i.mechanism.name, i.iterations) for i in desc.scram_credential_infos)
                             for u, desc in d.items()}
    res["dave_256"] = ck_login_error(a, "dave", "dave-secret", "SCRAM-SHA-256")
    res["dave_512"] = ck_login_error(a, "dave", "dave-secret", "SCRAM-SHA-512")
    res["dave_wrong"] = ck_login_error(a, "dave", "nope", "SCRAM-SHA-256")
    res["dave_produce"] = ck_produce(a, ("dave", "dave-secret", "SCRAM-SHA-256"), a.allowed, 1)
    dels = [UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_512)]
    res["delete_scram"] = [("ok" if f.result(timeout=30) is None else "?") for f in admin.alter_user_scram_credentials(dels).values()]
    res["dave_512_after_delete"] = ck_login_error(a, "dave", "dave-secret", "SCRAM-SHA-512")
    # Transactions: Write on the transactional id (bob has Write on the topics).
    txn_topic = a.allowed + "-tx"
    for f in admin.create_topics([NewTopic(txn_topic, 1)]).values():
        f.result(timeout=30)
    tx_acl = AclBinding(ResourceType.TRANSACTIONAL_ID, "tx-bob", ResourcePatternType.LITERAL, "User:bob", "*",
                        AclOperation.WRITE, AclPermissionType.ALLOW)
    list(admin.create_acls([tx_acl]).values())[0].result(timeout=30)
    res["txn_allowed"] = ck_txn(a, USERS[1], "tx-bob", txn_topic, 2)
    res["txn_denied"] = ck_txn(a, USERS[1], "tx-other", txn_topic, 1)
    # DeleteAcls: alice's Write goes.
    dflt = AclBindingFilter(ResourceType.TOPIC, a.allowed, ResourcePatternType.PREFIXED, "User:alice", "*",
                            AclOperation.WRITE, AclPermissionType.ALLOW)
    deleted = list(admin.delete_acls([dflt]).values())[0].result(timeout=30)
    res["delete_acls"] = len(deleted)
    res["alice_after_delete"] = ck_produce(a, USERS[0], a.allowed, 1)
    out(res)


# ---------------------------------------------------------------------------------- kafka-python

def kp_conf(a, user, password, mechanism):
    return dict(bootstrap_servers=a.bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
                sasl_plain_username=user, sasl_plain_password=password, request_timeout_ms=15000)


def kp_produce(a, cred, topic, n):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError
    p = KafkaProducer(acks="all", retries=0, max_block_ms=15000, **kp_conf(a, *cred))
    ok, err = 0, None
    for i in range(n):
        try:
            p.send(topic, b"v%d" % i).get(timeout=20)
            ok += 1
        except KafkaError as e:
            err = type(e).__name__
            break
    p.close(timeout=5)
    return {"delivered": ok, "error": err}


def kp_consume(a, cred, topic, group, want, assign=False):
    """Subscribe (or, with assign, read partition 0 directly: kafka-python raises a fetch's
    TOPIC_AUTHORIZATION_FAILED, while a subscription to a topic Metadata refuses just gets no
    assignment)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    c = KafkaConsumer(group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **kp_conf(a, *cred))
    if assign:
        c.assign([TopicPartition(topic, 0)])
    else:
        c.subscribe([topic])
    got, err, deadline = 0, None, time.time() + 30
    try:
        while got < want and time.time() < deadline:
            batch = c.poll(timeout_ms=500)
            got += sum(len(v) for v in batch.values())
    except KafkaError as e:
        err = type(e).__name__
    c.close()
    return {"read": got, "error": err}


class Captured(logging.Handler):
    def __init__(self):
        super().__init__()
        self.text = []

    def emit(self, record):
        self.text.append(record.getMessage())


def kp_login_error(a, user, password, mechanism):
    """kafka-python 3 logs the broker's SASL_AUTHENTICATION_FAILED (error 58) on each bootstrap
    attempt and gives up after bootstrap_timeout_ms with KafkaTimeoutError: both are returned."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError
    cap = Captured()
    logging.getLogger("kafka").addHandler(cap)
    try:
        c = KafkaAdminClient(bootstrap_timeout_ms=5000, **kp_conf(a, user, password, mechanism))
        c.list_topics()
        c.close()
        return None
    except KafkaError as e:
        seen = "SaslAuthenticationFailedError" if any("SaslAuthenticationFailedError" in t for t in cap.text) else "-"
        return "%s after %s" % (type(e).__name__, seen)
    finally:
        logging.getLogger("kafka").removeHandler(cap)


def kafka_python(a):
    from kafka import KafkaAdminClient
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, NewTopic,
                             ResourcePattern, ResourcePatternFilter, ResourceType)
    res = {}
    admin = KafkaAdminClient(**kp_conf(a, *ADMIN))
    admin.create_topics([NewTopic(a.allowed, 1, 1), NewTopic(a.denied, 1, 1)])
    acls = []
    for user, _, _ in USERS:
        for op in (ACLOperation.WRITE, ACLOperation.READ):
            acls.append(ACL("User:" + user, "*", op, ACLPermissionType.ALLOW,
                            ResourcePattern(ResourceType.TOPIC, a.allowed, ACLResourcePatternType.PREFIXED)))
    acls.append(ACL("User:*", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                    ResourcePattern(ResourceType.GROUP, "g-", ACLResourcePatternType.PREFIXED)))
    r = admin.create_acls(acls)
    res["create_acls"] = {"succeeded": len(r["succeeded"]), "failed": [str(f) for f in r["failed"]]}
    found, err = admin.describe_acls(ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                                               permission_type=ACLPermissionType.ANY,
                                               resource_pattern=ResourcePatternFilter(ResourceType.ANY, None,
                                                                                      ACLResourcePatternType.ANY)))
    res["describe_acls"] = len(found)
    for user, pw, mech in USERS:
        r = {}
        r["produce_allowed"] = kp_produce(a, (user, pw, mech), a.allowed, 3)
        r["produce_denied"] = kp_produce(a, (user, pw, mech), a.denied, 1)
        r["consume_allowed"] = kp_consume(a, (user, pw, mech), a.allowed, "g-kp-" + user, 3)
        r["consume_denied"] = kp_consume(a, (user, pw, mech), a.denied, "g-kp-" + user + "-d", 1, assign=True)
        r["wrong_password"] = kp_login_error(a, user, pw + "x", mech)
        res[user] = r
    dflt = ACLFilter(principal="User:alice", host="*", operation=ACLOperation.WRITE,
                     permission_type=ACLPermissionType.ALLOW,
                     resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, a.allowed, ACLResourcePatternType.PREFIXED))
    deleted = admin.delete_acls([dflt])
    res["delete_acls"] = sum(len(matches) for _, matches, _ in deleted)
    res["alice_after_delete"] = kp_produce(a, USERS[0], a.allowed, 1)
    admin.close()
    out(res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("client", choices=["confluent", "kafka-python"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--allowed", required=True)
    ap.add_argument("--denied", required=True)
    a = ap.parse_args()
    {"confluent": confluent, "kafka-python": kafka_python}[a.client](a)


if __name__ == "__main__":
    main()
