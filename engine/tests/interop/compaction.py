#!/usr/bin/env python3
"""confluent-kafka (librdkafka 2.x from PyPI) against a compacted topic, driven by
engine/tests/compaction.rs. Every wait is bounded. Prints one JSON object.

Creates --topic with cleanup.policy=compact, segment.bytes=2048, delete.retention.ms=1000;
produces 300 updates over keys k0..k9 (one batch each), a tombstone for k9 (in one batch with the
next record), then 60 more updates of k0..k8 (so the tombstone is in a sealed segment); produces one record without a key
(refused: INVALID_RECORD). Then reads the partition from the beginning to the high watermark,
again every 0.5 s until no value of k9 is left (a segment's last record stays, as a tombstone
when superseded) and fewer than a third of the records remain (at most 60 s).
Prints: produced [[offset, key, value|null]], null_key (error name), reads (passes), and
records [[offset, key, value|null]] of the last read.
"""
import argparse
import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    a = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    cfg = {"cleanup.policy": "compact", "segment.bytes": "2048", "delete.retention.ms": "1000"}
    admin.create_topics([NewTopic(a.topic, num_partitions=1, replication_factor=1, config=cfg)])[a.topic].result(30)

    # linger.ms: the tombstone and the record after it go in one batch (each send() flushes), so
    # the tombstone is never a segment's last record (which compaction always keeps).
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 50})
    produced, errors = [], []

    def report(e, m):
        if e:
            errors.append(e.name())
        else:
            v = m.value()
            produced.append([m.offset(), m.key().decode(), v.decode() if v is not None else None])

    def send(key, value):
        p.produce(a.topic, key=key, value=value, partition=0, on_delivery=report)
        p.flush(30)

    for n in range(300):
        send(f"k{n % 10}".encode(), f"k{n % 10}-v{n}".encode())
    p.produce(a.topic, key=b"k9", value=None, partition=0, on_delivery=report)
    for n in range(60):
        send(f"k{n % 9}".encode(), f"k{n % 9}-w{n}".encode())
    if errors or len(produced) != 361:
        print(json.dumps({"error": f"produce failed: {errors}, {len(produced)} delivered"}))
        return
    p.produce(a.topic, key=None, value=b"no key", partition=0, on_delivery=report)
    p.flush(30)
    null_key = errors[0] if errors else "accepted"

    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "cmp", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50})

    read_errors = []

    def read_all():
        lo, hi = c.get_watermark_offsets(TopicPartition(a.topic, 0), timeout=10)
        c.assign([TopicPartition(a.topic, 0, OFFSET_BEGINNING)])
        recs, deadline = [], time.time() + 20
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                read_errors.append(m.error().name())
                continue
            v = m.value()
            recs.append([m.offset(), m.key().decode(), v.decode() if v is not None else None])
            if m.offset() >= hi - 1:
                break
        c.unassign()
        return recs

    reads, recs, deadline, read_stats = 0, [], time.time() + 60, []
    while time.time() < deadline:
        t0 = time.time()
        recs = read_all()
        read_stats.append([len(recs), round(time.time() - t0, 2)])
        reads += 1
        if recs and not any(r[1] == "k9" and r[2] is not None for r in recs) and len(recs) < len(produced) // 3:
            break
        time.sleep(0.5)
    c.close()
    print(json.dumps({"produced": produced, "null_key": null_key, "reads": reads, "read_errors": read_errors[:10], "read_stats": read_stats, "records": recs}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
