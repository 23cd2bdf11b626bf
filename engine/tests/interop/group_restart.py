#!/usr/bin/env python3
"""confluent-kafka (librdkafka 2.x from PyPI) across a broker restart, driven by
engine/tests/group_restart.rs. Every wait is bounded.

produce   --count records "<prefix>-<i>" to partition 0 of --topic (acks=all); prints {"unflushed": n}
consume   a group consumer (manual commits) reads --first records and prints the line
          "consumed <n>"; it keeps polling until the file --go exists (the broker is restarted
          meanwhile), then commits what it read (synchronously, retrying) and polls until it has
          seen the --then records "<--new-prefix>-<i>"; prints one JSON object: the values read
          before and after --go and the commit errors.
"""
import argparse
import json
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer


def out(obj):
    print(json.dumps(obj))
    sys.stdout.flush()


def produce(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "enable.idempotence": False})
    for i in range(a.count):
        p.produce(a.topic, value=("%s-%d" % (a.prefix, i)).encode(), partition=0)
    out({"unflushed": p.flush(30)})


def consume(a):
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 30000,
        "heartbeat.interval.ms": 500,
    })
    c.subscribe([a.topic])
    before, after, commit_errors, errors = [], [], [], []
    deadline = time.time() + a.timeout
    while len(before) < a.first and time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            errors.append(str(m.error()))
            continue
        before.append(m.value().decode())
    print("consumed %d" % len(before))
    sys.stdout.flush()
    # Keep running (heartbeats, fetches) while the broker is restarted.
    while not os.path.exists(a.go) and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            after.append(m.value().decode())
    committed = False
    for _ in range(20):
        if time.time() >= deadline:
            break
        try:
            c.commit(asynchronous=False)
            committed = True
            break
        except KafkaException as e:
            commit_errors.append(str(e.args[0]))
            # Let the client recover (rejoin) before the next attempt.
            end = time.time() + 1
            while time.time() < end:
                m = c.poll(0.1)
                if m is not None and not m.error():
                    after.append(m.value().decode())
    want = set("%s-%d" % (a.new_prefix, i) for i in range(a.then))
    while not want.issubset(after) and time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            errors.append(str(m.error()))
            continue
        after.append(m.value().decode())
    c.close()
    out({"before": before, "after": after, "committed": committed, "commit_errors": commit_errors, "errors": errors})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="restart")
    ap.add_argument("--group", default="restart-group")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--prefix", default="old")
    ap.add_argument("--first", type=int, default=10)
    ap.add_argument("--then", type=int, default=5)
    ap.add_argument("--new-prefix", default="new")
    ap.add_argument("--go", default="")
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    {"produce": produce, "consume": consume}[a.command](a)


if __name__ == "__main__":
    main()
