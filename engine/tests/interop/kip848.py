#!/usr/bin/env python3
"""confluent-kafka (librdkafka) consumers with group.protocol=consumer (KIP-848), driven by
engine/tests/kip848_interop.rs. Every scenario is bounded by --timeout seconds.

produce:  --count records "v<first+i>" to --topic, round-robin over --partitions partitions,
          every delivery report checked.
group:    consumers of one group on --topic (--partitions partitions, --count records per
          phase): A alone reads phase 1; B joins, phase 2 is produced, both must hold
          partitions (disjoint) and together read it; B closes (leaves), phase 3 is produced and A
          must hold every partition and read it. Offsets are committed synchronously after each
          record, so every record must be read exactly once across the group. --assignor picks
          the server-side assignor (group.remote.assignor).
kill:     A and B (B in a child process, committing after each record) split the partitions; B
          is SIGKILLed (no leave); A must get B's partitions after the coordinator's session
          timeout and read phase 2 entirely; across A and B every record exactly once.
survive:  a member reads phase 1, prints "phase1 read", waits for the file --flag (the test
          restarts the broker on the same address, then creates it), and must read phase 2:
          every record committed exactly once.
resume:   a consumer of --group reads --expect records from --topic (from the committed
          offsets), commits, closes; writes "partition offset value" lines to --out.
Prints one JSON object on success; exits non-zero with a reason on stderr otherwise.
"""
import argparse
import json
import multiprocessing
import os
import signal
import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, Producer


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def produce_phase(args, first, count):
    p = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": 5})
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))

    for i in range(first, first + count):
        p.produce(args.topic, value=("v%d" % i).encode(), partition=(i - first) % args.partitions,
                  on_delivery=on_delivery)
        p.poll(0)
    left = p.flush(30)
    if errors or left:
        fail("delivery failures: %s, %d undelivered" % (errors[:3], left))


def consumer(args, name):
    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "group.protocol": "consumer",
        "client.id": name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    }
    if args.assignor:
        conf["group.remote.assignor"] = args.assignor
    return Consumer(conf)


class Reader:
    """A consumer that commits each record synchronously and remembers what it read."""

    def __init__(self, args, name, seen, tolerant=False):
        self.name, self.seen, self.c = name, seen, consumer(args, name)
        self.tolerant, self.errors = tolerant, []
        self.c.subscribe([args.topic])

    def poll(self, t=0.1):
        m = self.c.poll(t)
        if m is None:
            return
        if m.error() is not None:
            if not self.tolerant:
                fail("%s: %s" % (self.name, m.error()))
            self.errors.append(str(m.error()))
            return
        v = m.value().decode()
        try:
            self.c.commit(message=m, asynchronous=False)
        except KafkaException as e:
            # Not committed: the record will be delivered again (at-least-once); only
            # committed reads count. Allowed only while the broker restarts (--tolerant).
            if not self.tolerant:
                fail("%s: commit failed: %s" % (self.name, e))
            self.errors.append(str(e))
            return
        self.seen.append((v, self.name))

    def parts(self):
        return sorted(tp.partition for tp in self.c.assignment())


def check_once(seen, total):
    values = [v for v, _ in seen]
    dups = sorted({v for v in values if values.count(v) > 1})
    if dups:
        fail("records read more than once: %s" % dups[:5])
    want = {"v%d" % i for i in range(total)}
    missing = sorted(want - set(values))
    if missing:
        fail("records never read: %d, e.g. %s" % (len(missing), missing[:5]))


def wait(deadline, cond, poll, what):
    while not cond():
        if time.time() > deadline:
            fail("timed out waiting for %s" % what)
        poll()


def describe(args, want):
    """AdminClient's view of the group (ConsumerGroupDescribe) must match the consumers'."""
    from confluent_kafka.admin import AdminClient
    a = AdminClient({"bootstrap.servers": args.bootstrap})
    d = a.describe_consumer_groups([args.group])[args.group].result(timeout=20)
    got = {m.client_id: sorted(tp.partition for tp in m.assignment.topic_partitions) for m in d.members}
    if got != want:
        fail("describe_consumer_groups: %s, consumers hold %s" % (got, want))
    kind = str(getattr(d, "type", ""))
    if "CONSUMER" not in kind.upper() or "CLASSIC" in kind.upper():
        fail("describe_consumer_groups: group type %s, want CONSUMER" % kind)
    if args.assignor and d.partition_assignor != args.assignor:
        fail("describe_consumer_groups: assignor %s, want %s" % (d.partition_assignor, args.assignor))
    listed = a.list_consumer_groups().result(timeout=20)
    if args.group not in [g.group_id for g in listed.valid]:
        fail("list_consumer_groups: %s missing" % args.group)
    return {"state": str(d.state), "type": kind, "assignor": d.partition_assignor, "members": got}


def group(args):
    deadline = time.time() + args.timeout
    n, seen, report = args.count, [], {}
    produce_phase(args, 0, n)
    a = Reader(args, "A", seen)
    wait(deadline, lambda: len(seen) >= n, a.poll, "A to read phase 1 (%d of %d)" % (len(seen), n))
    report["phase1_A_partitions"] = a.parts()
    b = Reader(args, "B", seen)

    def both():
        a.poll(0.05)
        b.poll(0.05)

    # B joins: the coordinator moves partitions to it only once A revoked them.
    wait(deadline, lambda: a.parts() and b.parts() and len(a.parts()) + len(b.parts()) == args.partitions,
         both, "the partitions to be split between A and B (A %s, B %s)" % (a.parts(), b.parts()))
    pa, pb = a.parts(), b.parts()
    if set(pa) & set(pb):
        fail("A %s and B %s hold the same partition" % (pa, pb))
    report["split"] = {"A": pa, "B": pb}
    report["described"] = describe(args, {"A": pa, "B": pb})
    produce_phase(args, n, n)
    wait(deadline, lambda: len(seen) >= 2 * n, both, "phase 2 to be read")
    report["phase2_by"] = {k: sum(1 for v, who in seen[n:] if who == k) for k in "AB"}
    if min(report["phase2_by"].values()) == 0:
        fail("phase 2 was not shared: %s" % report["phase2_by"])
    b.c.close()
    wait(deadline, lambda: len(a.parts()) == args.partitions, a.poll, "A to take every partition after B left")
    produce_phase(args, 2 * n, n)
    wait(deadline, lambda: len(seen) >= 3 * n, a.poll, "phase 3 to be read by A")
    end = time.time() + 1.0
    while time.time() < end:
        a.poll(0.1)  # anything read twice shows up here
    a.c.close()
    check_once(seen, 3 * n)
    report["records"] = len(seen)
    print(json.dumps(report))


def _victim(args, ready, go, q):
    seen = []
    b = Reader(args, "B", seen)
    sent = 0
    while True:
        b.poll(0.05)
        while sent < len(seen):
            q.put(seen[sent][0])
            sent += 1
        if b.parts():
            ready.set()


def kill(args):
    deadline = time.time() + args.timeout
    n, seen = args.count, []
    produce_phase(args, 0, n)
    ctx = multiprocessing.get_context("fork")
    ready, go, q = ctx.Event(), ctx.Event(), ctx.Queue()
    a = Reader(args, "A", seen)
    child = ctx.Process(target=_victim, args=(args, ready, go, q), daemon=True)
    child.start()
    from_b = []

    def drain():
        while not q.empty():
            from_b.append((q.get(), "B"))

    def step():
        a.poll(0.05)
        drain()

    try:
        wait(deadline, lambda: ready.is_set() and a.parts() and len(a.parts()) < args.partitions
             and len(seen) + len(from_b) >= n, step, "A and B to split the group and read phase 1")
        # Let B's last commits land, then kill it without a leave.
        end = time.time() + 1.0
        while time.time() < end:
            step()
    finally:
        os.kill(child.pid, signal.SIGKILL)
    killed = time.time()
    child.join(5)
    drain()
    produce_phase(args, n, n)
    wait(deadline, lambda: len(a.parts()) == args.partitions, a.poll, "A to take B's partitions after its session timeout")
    took = time.time() - killed
    wait(deadline, lambda: len(seen) + len(from_b) >= 2 * n, a.poll, "phase 2 to be read by A")
    end = time.time() + 1.0
    while time.time() < end:
        a.poll(0.1)
    a.c.close()
    check_once(seen + from_b, 2 * n)
    print(json.dumps({"records": len(seen) + len(from_b), "read_by_B": len(from_b), "takeover_s": round(took, 1)}))


def resume(args):
    deadline = time.time() + args.timeout
    seen = []
    r = Reader(args, "R", seen)
    wait(deadline, lambda: len(seen) >= args.expect, r.poll, "%d records" % args.expect)
    end = time.time() + 1.0
    while time.time() < end:
        r.poll(0.1)
    r.c.close()
    with open(args.out, "w") as f:
        for v, _ in seen:
            f.write(v + "\n")
    print(json.dumps({"records": len(seen)}))


def survive(args):
    """A member reads phase 1; the broker restarts on the same address (the test creates --flag
    once it is back); the member rejoins and reads phase 2: every record committed once."""
    deadline = time.time() + args.timeout
    n, seen = args.count, []
    produce_phase(args, 0, n)
    r = Reader(args, "R", seen, tolerant=True)
    wait(deadline, lambda: len(seen) >= n, r.poll, "phase 1 to be read")
    print("phase1 read", flush=True)
    wait(deadline, lambda: os.path.exists(args.flag), r.poll, "the broker to restart")
    produce_phase(args, n, n)
    wait(deadline, lambda: len(seen) >= 2 * n, r.poll, "phase 2 to be read after the restart")
    end = time.time() + 1.0
    while time.time() < end:
        r.poll(0.1)
    parts = len(r.c.assignment())
    r.c.close()
    check_once(seen, 2 * n)
    print(json.dumps({"records": len(seen), "partitions": parts, "errors": r.errors[:5]}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["produce", "group", "kill", "resume", "survive"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", default="k848")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--assignor", default="")
    ap.add_argument("--timeout", type=float, default=90)
    ap.add_argument("--out", default="/dev/null")
    ap.add_argument("--flag", default="")
    args = ap.parse_args()
    # group.protocol=consumer is generally available from librdkafka 2.12 (earlier: preview).
    lib = confluent_kafka.libversion()[0]
    if tuple(int(x) for x in lib.split(".")[:2]) < (2, 12):
        fail("librdkafka %s is too old for group.protocol=consumer (need >= 2.12): "
             "pip install -U confluent-kafka" % lib)
    if args.mode == "produce":
        produce_phase(args, args.first, args.count)
        print(json.dumps({"produced": args.count}))
    else:
        {"group": group, "kill": kill, "resume": resume, "survive": survive}[args.mode](args)


if __name__ == "__main__":
    main()
