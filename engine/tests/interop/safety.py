#!/usr/bin/env python3
"""confluent-kafka (librdkafka 2.x from PyPI) probes driven by engine/tests/client_safety.rs.
Each command prints one JSON object on stdout; every wait is bounded.

list-topics        AdminClient.list_topics() and Producer.list_topics() (all-topics Metadata v12)
regex-subscribe    a Consumer subscribed to "^<--topic>.*" (all-topics Metadata) reads one record
delete-internal    AdminClient.delete_topics() of the broker's internal topics: error per topic
produce-times      one Producer batch of --count records with timestamps --ts0 + i * --step
offsets-for-times  Consumer.offsets_for_times(--ts), then the record at that offset (its timestamp)
transactional      Producer with transactional.id: init_transactions(--timeout), the error it fails with
                   (_TIMED_OUT if it only retried)
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient


def out(obj):
    print(json.dumps(obj))
    sys.stdout.flush()


def list_topics(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    p = Producer({"bootstrap.servers": a.bootstrap})
    out({
        "admin": sorted(admin.list_topics(timeout=10).topics.keys()),
        "producer": sorted(p.list_topics(timeout=10).topics.keys()),
    })


def regex_subscribe(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all"})
    p.produce(a.topic + "-1", value=b"by-regex")
    left = p.flush(20)
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "safety-regex", "auto.offset.reset": "earliest"})
    c.subscribe(["^" + a.topic + ".*"])
    got, error = None, None
    t0 = time.time()
    while time.time() - t0 < a.timeout and got is None:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            error = str(m.error())
            break
        got = {"topic": m.topic(), "value": m.value().decode()}
    c.close()
    out({"unflushed": left, "got": got, "error": error})


def delete_internal(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    futures = admin.delete_topics(a.topics.split(","), operation_timeout=5, request_timeout=10)
    res = {}
    for name, f in futures.items():
        try:
            f.result(timeout=15)
            res[name] = {"code": "NO_ERROR"}
        except KafkaException as e:
            err = e.args[0]
            res[name] = {"code": err.name(), "str": err.str()}
    out(res)


def produce_times(a):
    # linger and batch limits so all --count records go out as one batch.
    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "acks": "all",
        "linger.ms": 1000,
        "batch.num.messages": 10000,
        "compression.type": a.compression,
    })
    # The topic's metadata first (auto-creating it): records produced before librdkafka knows
    # the topic wait on its unassigned queue and can reach the partition in two parts, which
    # flush() then sends as two batches (seen once in CI).
    md = p.list_topics(a.topic, timeout=10)
    if a.topic not in md.topics or md.topics[a.topic].error is not None or 0 not in md.topics[a.topic].partitions:
        out({"unflushed": -1, "errors": ["no metadata for %s: %r" % (a.topic, md.topics.get(a.topic))]})
        return
    errors = []
    for i in range(a.count):
        p.produce(a.topic, value=b"r%d" % i, partition=0, timestamp=a.ts0 + i * a.step,
                  on_delivery=lambda err, msg: errors.append(str(err)) if err else None)
    left = p.flush(30)
    out({"unflushed": left, "errors": errors})


def offsets_for_times(a):
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "safety-seek", "enable.auto.commit": False})
    tp = c.offsets_for_times([TopicPartition(a.topic, 0, a.ts)], timeout=10)[0]
    res = {"offset": tp.offset, "error": str(tp.error) if tp.error else None, "timestamp": None}
    if tp.offset >= 0:
        c.assign([TopicPartition(a.topic, 0, tp.offset)])
        deadline = time.time() + 10
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                res["record_offset"] = m.offset()
                res["timestamp"] = m.timestamp()[1]
                break
    c.close()
    out(res)


def transactional(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "transactional.id": "safety-tx"})
    t0 = time.time()
    try:
        p.init_transactions(a.timeout)
        out({"elapsed": time.time() - t0, "code": "NO_ERROR"})
    except KafkaException as e:
        err = e.args[0]
        out({"elapsed": time.time() - t0, "code": err.name(), "fatal": err.fatal(),
             "retriable": err.retriable(), "str": err.str()})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="safety")
    ap.add_argument("--topics", default="__consumer_offsets,__producer_ids")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--ts0", type=int, default=1_700_000_000_000)
    ap.add_argument("--step", type=int, default=10)
    ap.add_argument("--ts", type=int, default=0)
    ap.add_argument("--compression", default="none")
    ap.add_argument("--timeout", type=float, default=10, help="transactional/regex-subscribe: seconds to wait")
    a = ap.parse_args()
    {
        "list-topics": list_topics,
        "regex-subscribe": regex_subscribe,
        "delete-internal": delete_internal,
        "produce-times": produce_times,
        "offsets-for-times": offsets_for_times,
        "transactional": transactional,
    }[a.command](a)


if __name__ == "__main__":
    main()
