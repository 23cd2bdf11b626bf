#!/usr/bin/env python3
"""confluent-kafka (librdkafka) consumer-group scenarios driven by engine/tests/group_interop.rs.

produce:  Producer (idempotent unless --plain) delivering --count records "v<first+i>" to --topic;
          every delivery report checked; writes "partition offset value" per record to --out.
consume:  a subscribe()d Consumer in --group with auto.offset.reset=earliest, manual synchronous
          commits; reads until --expect records arrived, then keeps polling --linger seconds to
          catch anything extra; writes "topic partition offset value" to --out; closes (leaves).
split:    two Consumers in one group on a topic with 4 partitions holding --count records: both
          must get disjoint halves (and AdminClient must describe the group as Stable with two
          members holding two partitions each); after half the records the second one closes and
          the first must take all four partitions; every record is read exactly once (commits per
          message).
kill:     two Consumers in one group on a 4-partition topic, the second in a child process that
          is SIGKILLed once the group is split (no LeaveGroup): after its session timeout the
          coordinator expires it and the first takes all four partitions.
admin:    AdminClient lists --group among the groups and reports its committed offset --expect
          for --topic partition 0 (ListGroups, OffsetFetch as tools use them).
Exit status is non-zero with a reason on stderr when a scenario's expectation fails.
"""
import argparse
import multiprocessing
import os
import signal
import sys
import time

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def produce(args):
    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "enable.idempotence": not args.plain,
        "message.timeout.ms": 30000,
    })
    delivered, errors = [], []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append((msg.partition(), msg.offset(), msg.value().decode()))

    for i in range(args.first, args.first + args.count):
        # --partitions N spreads records round-robin explicitly: librdkafka's sticky partitioner
        # may put (almost) every unkeyed record in one partition, depending on timing.
        where = {"partition": (i - args.first) % args.partitions} if args.partitions else {}
        p.produce(args.topic, value=("v%d" % i).encode(), on_delivery=on_delivery, **where)
        p.poll(0)
        if args.flush_every and (i - args.first) % args.flush_every == args.flush_every - 1:
            p.flush(30)  # one batch per flush (the replay test needs many batches)
    left = p.flush(60)
    with open(args.out, "w") as f:
        for (part, off, v) in delivered:
            f.write("%d %d %s\n" % (part, off, v))
    if errors or left or len(delivered) != args.count:
        fail("delivery failures: %s, %d undelivered, %d delivered" % (errors[:3], left, len(delivered)))


def consumer(args, group, **extra):
    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 100,
    }
    conf.update(extra)
    return Consumer(conf)


def consume(args):
    c = consumer(args, args.group)
    c.subscribe([args.topic])
    got = []
    deadline = time.time() + args.timeout
    linger_until = None
    while time.time() < deadline:
        if linger_until is None and len(got) >= args.expect:
            linger_until = time.time() + args.linger
        if linger_until is not None and time.time() >= linger_until:
            break
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error() is not None:
            print("consume error: %s" % m.error(), file=sys.stderr)
            continue
        got.append((m.topic(), m.partition(), m.offset(), m.value().decode()))
        c.commit(message=m, asynchronous=False)
    c.close()
    with open(args.out, "w") as f:
        for g in got:
            f.write("%s %d %d %s\n" % g)
    if len(got) < args.expect:
        fail("consumed only %d of %d records" % (len(got), args.expect))


def split(args):
    a = consumer(args, args.group, **{"client.id": "A"})
    b = consumer(args, args.group, **{"client.id": "B"})
    a.subscribe([args.topic])
    b.subscribe([args.topic])
    seen = {}  # (partition, offset) -> consumer name
    dups = []

    def take(c, name):
        m = c.poll(0.05)
        if m is None or m.error() is not None:
            return
        key = (m.partition(), m.offset())
        if key in seen:
            dups.append((key, seen[key], name))
        seen[key] = name
        c.commit(message=m, asynchronous=False)

    # Phase 1: both members share the topic.
    deadline = time.time() + args.timeout
    split_seen = False
    while time.time() < deadline and len(seen) < args.count // 2:
        take(a, "A")
        take(b, "B")
        pa = {tp.partition for tp in a.assignment()}
        pb = {tp.partition for tp in b.assignment()}
        if len(pa) == 2 and len(pb) == 2 and pa | pb == {0, 1, 2, 3}:
            split_seen = True
    if not split_seen:
        fail("the two consumers never split the 4 partitions 2/2: A=%s B=%s"
             % (sorted(tp.partition for tp in a.assignment()), sorted(tp.partition for tp in b.assignment())))
    if not any(v == "B" for v in seen.values()) or not any(v == "A" for v in seen.values()):
        fail("one consumer read nothing while the group was split")
    # Tools see the live group: DescribeGroups through AdminClient.
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    desc = admin.describe_consumer_groups([args.group])[args.group].result(timeout=20)
    sizes = sorted(len(m.assignment.topic_partitions) for m in desc.members)
    if str(desc.state).split(".")[-1] != "STABLE" or sizes != [2, 2]:
        fail("describe_consumer_groups: state %s, assignment sizes %s" % (desc.state, sizes))
    # Phase 2: B leaves; A must take over all four partitions and finish the topic.
    b.close()
    while time.time() < deadline and len(seen) < args.count:
        take(a, "A")
    pa = sorted(tp.partition for tp in a.assignment())
    # Keep polling a little to catch redeliveries after the handover.
    linger = time.time() + args.linger
    while time.time() < linger:
        take(a, "A")
    a.close()
    if pa != [0, 1, 2, 3]:
        fail("after B left, A has partitions %s, not all four" % pa)
    if dups:
        fail("records read twice across the handover: %s" % dups[:5])
    if len(seen) != args.count:
        fail("read %d distinct records of %d" % (len(seen), args.count))
    print("split ok: A read %d, B read %d" % (sum(v == "A" for v in seen.values()),
                                              sum(v == "B" for v in seen.values())))


def _hold(args, ready):
    c = consumer(args, args.group, **{"client.id": "victim", "session.timeout.ms": 6000})
    c.subscribe([args.topic])
    while True:
        c.poll(0.1)
        if len(c.assignment()) == 2:
            ready.set()


def kill(args):
    ready = multiprocessing.get_context("fork").Event()
    child = multiprocessing.get_context("fork").Process(target=_hold, args=(args, ready), daemon=True)
    child.start()
    a = consumer(args, args.group, **{"client.id": "survivor", "session.timeout.ms": 6000})
    a.subscribe([args.topic])
    deadline = time.time() + args.timeout
    while time.time() < deadline and not (ready.is_set() and len(a.assignment()) == 2):
        a.poll(0.1)
    if not (ready.is_set() and len(a.assignment()) == 2):
        os.kill(child.pid, signal.SIGKILL)
        fail("the group never split 2/2 (survivor has %d)" % len(a.assignment()))
    os.kill(child.pid, signal.SIGKILL)
    killed_at = time.time()
    while time.time() < deadline and len(a.assignment()) != 4:
        a.poll(0.1)
    took = time.time() - killed_at
    n = len(a.assignment())
    a.close()
    child.join(5)
    if n != 4:
        fail("after the kill the survivor has %d partitions" % n)
    print("kill ok: survivor took all four partitions %.1f s after the kill" % took)


def admin(args):
    a = AdminClient({"bootstrap.servers": args.bootstrap})
    listed = a.list_consumer_groups().result(timeout=20)
    names = [g.group_id for g in listed.valid]
    if args.group not in names:
        fail("list_consumer_groups: %s not in %s" % (args.group, names))
    req = [ConsumerGroupTopicPartitions(args.group, [TopicPartition(args.topic, 0)])]
    res = a.list_consumer_group_offsets(req)[args.group].result(timeout=20)
    offs = [tp.offset for tp in res.topic_partitions]
    if offs != [args.expect]:
        fail("list_consumer_group_offsets: %s, want [%d]" % (offs, args.expect))
    print("admin ok: groups %s, offsets %s" % (names, offs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["produce", "consume", "split", "kill", "admin"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", default="testconsume")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--linger", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--partitions", type=int, default=0)
    ap.add_argument("--flush-every", type=int, default=0)
    ap.add_argument("--out", default="/dev/null")
    args = ap.parse_args()
    {"produce": produce, "consume": consume, "split": split, "kill": kill, "admin": admin}[args.mode](args)


if __name__ == "__main__":
    main()
