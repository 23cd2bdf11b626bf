#!/usr/bin/env python3
"""confluent-kafka (librdkafka) transactions against the broker (issue 20).

Modes:
  seed     produce --count input records "i<n>" (key "k<n>") to --topic, acks=all, idempotent
  eos      read-process-write: a read_committed consumer (assign(), committed offsets) on
           --topic, a transactional producer (--txn-id) writing "out:<value>" to --out-topic,
           send_offsets_to_transaction + commit per consumed batch; every --abort-every'th
           transaction is aborted instead (and the consumer rewound to its committed offsets).
           Exits 0 once every input partition's committed position reached its end.
  count    read --topic from the beginning with --isolation (read_committed|read_uncommitted)
           up to its end; prints "<value> <occurrences>" per distinct value, then "total N".
  abort    one committed and one aborted transaction of --count records each to --topic;
           prints the offsets.
"""
import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING


def seed(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    failed = []

    def dr(err, _msg):
        if err is not None:
            failed.append(err)

    for i in range(a.count):
        while True:
            try:
                p.produce(a.topic, key=b"k%d" % i, value=b"i%d" % i, on_delivery=dr)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    if failed or left:
        sys.exit(f"seed: {len(failed)} failed, {left} undelivered: {failed[:3]}")
    print(f"seeded {a.count}")


def partitions(c, topic):
    md = c.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise KafkaException(t.error if t else f"no topic {topic}")
    return [TopicPartition(topic, p) for p in sorted(t.partitions)]


def rewind(c, tps):
    for tp in c.committed(tps, timeout=30):
        c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))


def eos(a):
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    tps = partitions(c, a.topic)
    c.assign(tps)
    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "transactional.id": a.txn_id,
        "transaction.timeout.ms": a.txn_timeout_ms,
        "linger.ms": 5,
    })
    p.init_transactions(60)
    txns = 0
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        msgs = c.consume(num_messages=a.batch, timeout=0.5)
        if not msgs:
            ends = [c.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in tps]
            done = all(tp.offset >= end for tp, end in zip(c.committed(tps, timeout=30), ends))
            if done:
                print(f"eos done after {txns} transactions")
                return
            continue
        if a.pause_ms:
            # Paces the loop so the test's kills land mid-run (a workload knob, not a wait).
            time.sleep(a.pause_ms / 1000)
        p.begin_transaction()
        for m in msgs:
            if m.error():
                raise KafkaException(m.error())
            p.produce(a.out_topic, key=m.key(), value=b"out:" + m.value())
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 60)
        txns += 1
        if a.abort_every and txns % a.abort_every == 0:
            # Flushed first so the aborted records are in the log (librdkafka purges what it
            # has not sent yet on abort): read_committed must hide them, read_uncommitted not.
            p.flush(60)
            p.abort_transaction(60)
            rewind(c, tps)
        else:
            p.commit_transaction(60)
    sys.exit(f"eos: not done within {a.seconds} s")


def count(a):
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": "count-%d" % time.time_ns(),
        "enable.auto.commit": False,
        "isolation.level": a.isolation,
    })
    tps = partitions(c, a.topic)
    c.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in tps])
    ends = [c.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in tps]
    counts = {}
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        for m in c.consume(num_messages=1000, timeout=0.5):
            if m.error():
                raise KafkaException(m.error())
            v = m.value().decode()
            counts[v] = counts.get(v, 0) + 1
        pos = c.position(tps)
        if all(tp.offset >= end for tp, end in zip(pos, ends)):
            break
    else:
        sys.exit(f"count: end {ends} not reached in {a.seconds} s (at {[tp.offset for tp in c.position(tps)]})")
    for v in sorted(counts):
        print(v, counts[v])
    print("total", sum(counts.values()))


def abort(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "transactional.id": a.txn_id, "linger.ms": 5})
    p.init_transactions(60)
    for kind in ("committed", "aborted"):
        p.begin_transaction()
        for i in range(a.count):
            p.produce(a.topic, value=b"%s-%d" % (kind.encode(), i))
        p.flush(60)
        if kind == "committed":
            p.commit_transaction(60)
        else:
            p.abort_transaction(60)
    print("ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["seed", "eos", "count", "abort"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out-topic", default="out")
    ap.add_argument("--group", default="eos")
    ap.add_argument("--txn-id", default="eos-tx")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--abort-every", type=int, default=0)
    ap.add_argument("--pause-ms", type=int, default=0, help="eos: pause before each transaction")
    ap.add_argument("--txn-timeout-ms", type=int, default=60000)
    ap.add_argument("--isolation", default="read_committed")
    ap.add_argument("--seconds", type=float, default=120)
    a = ap.parse_args()
    {"seed": seed, "eos": eos, "count": count, "abort": abort}[a.mode](a)


if __name__ == "__main__":
    main()
