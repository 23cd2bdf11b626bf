#!/usr/bin/env python3
"""confluent-kafka (librdkafka 2.x from PyPI) AdminClient calls, driven by
engine/tests/admin_interop.rs. Every wait is bounded. Each subcommand prints one JSON object.

groups-setup   --topic: produce 10 records to partition 0; group "gone" consumes and commits
               then closes (Empty, with offsets); a consumer of group "busy" stays subscribed
               while delete_consumer_groups(["gone", "busy", "never"]) runs; prints each
               group's outcome ("ok" or the error name) and "gone"'s offsets before deletion.
groups-check   delete_consumer_groups(["gone"]) again and list_consumer_groups(); prints them.
configs        describe_configs of topic --topic (created with 2 partitions), an unknown topic and
               broker 0; prints {resource: {name: [value, source, read_only]}} or the error name.
partitions     create --topic with 1 partition, grow it to 3, then try 2 (shrink), 3 (same),
               an unknown topic and __consumer_offsets; produce to and consume from partition 2;
               prints the outcomes and what Metadata and the consumer saw.
cluster        describe_cluster(); prints the cluster id, controller and nodes.
topic-configs  create --topic with configs (segment.bytes, retention.ms, max.message.bytes), refused
               creations (compact, segment.bytes past an int, an unknown key; validate_only),
               describe_configs, incremental_alter_configs (SET/DELETE/APPEND, validate_only),
               alter_configs (replaces the set) and produce under max.message.bytes; prints
               each outcome as "ok" or [error name, message] and {name: [value, source]}.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewPartitions, NewTopic)


def out(obj):
    print(json.dumps(obj))
    sys.stdout.flush()


def outcome(fut, timeout=30):
    try:
        r = fut.result(timeout=timeout)
        return "ok" if r is None or not hasattr(r, "error") else r
    except KafkaException as e:
        return e.args[0].name()


def consumer(a, group):
    return Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 30000,
        "heartbeat.interval.ms": 500,
    })


def consume_n(c, n, timeout):
    got, deadline = 0, time.time() + timeout
    while got < n and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got += 1
    return got


def groups_setup(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all"})
    for i in range(10):
        p.produce(a.topic, value=b"v%d" % i, partition=0)
    assert p.flush(30) == 0, "records not flushed"
    gone = consumer(a, "gone")
    gone.subscribe([a.topic])
    read = consume_n(gone, 10, 30)
    gone.commit(asynchronous=False)
    committed = [tp.offset for tp in gone.committed([TopicPartition(a.topic, 0)], timeout=10)]
    gone.close()
    busy = consumer(a, "busy")
    busy.subscribe([a.topic])
    consume_n(busy, 1, 30)  # joined and assigned once it has read a record
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    futs = admin.delete_consumer_groups(["gone", "busy", "never"], request_timeout=30)
    res = {g: outcome(f) for g, f in futs.items()}
    busy.close()
    out({"read": read, "committed": committed, "deleted": res})


def groups_check(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    again = {g: outcome(f) for g, f in admin.delete_consumer_groups(["gone"], request_timeout=30).items()}
    listed = admin.list_consumer_groups(request_timeout=30).result(timeout=30)
    out({"deleted_again": again, "groups": sorted(g.group_id for g in listed.valid)})


def create_topic(admin, name, partitions):
    futs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)], request_timeout=30)
    assert outcome(futs[name]) == "ok", "create_topics failed"


def configs(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    create_topic(admin, a.topic, 2)
    res = [ConfigResource("topic", a.topic), ConfigResource("topic", "missing"), ConfigResource("broker", "0")]
    got = {}
    for r, f in admin.describe_configs(res, request_timeout=30).items():
        key = "%s:%s" % (r.restype.name.lower(), r.name)
        try:
            entries = f.result(timeout=30)
            got[key] = {n: [e.value, ConfigSource(e.source).name, e.is_read_only] for n, e in entries.items()}
        except KafkaException as e:
            got[key] = e.args[0].name()
    out(got)


def partitions(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    create_topic(admin, a.topic, 1)
    res = {}
    for label, name, n in [("grow", a.topic, 3), ("shrink", a.topic, 2), ("same", a.topic, 3),
                           ("unknown", "missing", 4), ("internal", "__consumer_offsets", 5)]:
        res[label] = outcome(admin.create_partitions([NewPartitions(name, n)], request_timeout=30)[name])
    md = admin.list_topics(topic=a.topic, timeout=30)
    parts = sorted(md.topics[a.topic].partitions.keys())
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all"})
    p.produce(a.topic, value=b"in-p2", partition=2)
    unflushed = p.flush(30)
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "cp", "enable.auto.commit": False})
    c.assign([TopicPartition(a.topic, 2, 0)])
    seen, deadline = None, time.time() + 30
    while seen is None and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            seen = [m.partition(), m.offset(), m.value().decode()]
    c.close()
    out({"outcomes": res, "partitions": parts, "unflushed": unflushed, "consumed": seen})


def cluster(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    d = admin.describe_cluster(request_timeout=30).result(timeout=30)
    out({"cluster_id": d.cluster_id, "controller": d.controller.id if d.controller else None,
         "nodes": [[n.id, n.host, n.port] for n in d.nodes]})


def detail(fut, timeout=30):
    """'ok', or [error name, message]."""
    try:
        fut.result(timeout=timeout)
        return "ok"
    except KafkaException as e:
        return [e.args[0].name(), e.args[0].str()]


def described(admin, topic):
    r = ConfigResource("topic", topic)
    entries = admin.describe_configs([r], request_timeout=30)[r].result(timeout=30)
    return {n: [e.value, ConfigSource(e.source).name] for n, e in entries.items()}


def topic_configs(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    res = {}

    def create(name, cfg, validate_only=False):
        t = NewTopic(name, num_partitions=1, replication_factor=1, config=cfg)
        return detail(admin.create_topics([t], request_timeout=30, validate_only=validate_only)[name])

    res["create"] = create(a.topic, {"segment.bytes": "1024", "retention.ms": "3600000", "max.message.bytes": "3000"})
    res["compact"] = create("compacted", {"cleanup.policy": "compact"})
    res["too_big"] = create("huge", {"segment.bytes": "4294967296"})
    res["unknown_key"] = create("unknown", {"no.such.config": "1"})
    res["validate_bad"] = create("vbad", {"retention.ms": "-5"}, validate_only=True)
    res["validate_ok"] = create("vok", {"retention.ms": "5"}, validate_only=True)
    res["topics"] = sorted(t for t in admin.list_topics(timeout=30).topics if not t.startswith("__"))
    res["described"] = described(admin, a.topic)

    # Produce under the topic's max.message.bytes (3000): 2000 bytes pass, 5000 do not.
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 0, "message.max.bytes": 100000})
    errs = []
    for n in (2000, 5000):
        p.produce(a.topic, value=b"x" * n, partition=0, on_delivery=lambda e, m: errs.append(e.name() if e else "ok"))
        p.flush(30)
    res["produce"] = list(errs)

    def incremental(name, entries, validate_only=False):
        r = ConfigResource("topic", name, incremental_configs=entries)
        return detail(admin.incremental_alter_configs([r], request_timeout=30, validate_only=validate_only)[r])

    E, OP = ConfigEntry, AlterConfigOpType
    res["inc_validate_only"] = incremental(a.topic, [E("retention.bytes", "1", incremental_operation=OP.SET)], True)
    res["inc"] = incremental(a.topic, [E("max.message.bytes", "6000", incremental_operation=OP.SET),
                                       E("retention.ms", None, incremental_operation=OP.DELETE),
                                       E("message.timestamp.type", "LogAppendTime", incremental_operation=OP.SET)])
    res["inc_append_compact"] = incremental(a.topic, [E("cleanup.policy", "compact", incremental_operation=OP.APPEND)])
    res["inc_append_int"] = incremental(a.topic, [E("segment.bytes", "1", incremental_operation=OP.APPEND)])
    res["inc_unknown_topic"] = incremental("missing", [E("retention.ms", "1", incremental_operation=OP.SET)])
    res["after_inc"] = described(admin, a.topic)
    p.produce(a.topic, value=b"y" * 5000, partition=0, on_delivery=lambda e, m: errs.append(e.name() if e else "ok"))
    p.flush(30)
    res["produce_after"] = errs[2:]
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "tc", "enable.auto.commit": False})
    c.assign([TopicPartition(a.topic, 0, 0)])
    types, deadline = [], time.time() + 30
    while len(types) < 2 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            types.append(m.timestamp()[0])
    c.close()
    res["timestamp_types"] = types

    # Legacy AlterConfigs replaces the whole set: keys not named return to the broker's.
    r = ConfigResource("topic", a.topic, set_config={"retention.bytes": "100000000"})
    res["alter"] = detail(admin.alter_configs([r], request_timeout=30)[r])
    r = ConfigResource("topic", a.topic, set_config={"segment.bytes": "12"})
    res["alter_bad"] = detail(admin.alter_configs([r], request_timeout=30)[r])
    res["after_alter"] = described(admin, a.topic)
    out(res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="t")
    a = ap.parse_args()
    {"groups-setup": groups_setup, "groups-check": groups_check, "configs": configs,
     "partitions": partitions, "cluster": cluster, "topic-configs": topic_configs}[a.cmd](a)


if __name__ == "__main__":
    main()
