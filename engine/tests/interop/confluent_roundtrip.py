#!/usr/bin/env python3
"""confluent-kafka (librdkafka) client driven by engine/tests/confluent_interop.rs.

produce: acks=all Producer delivering --count records (key k<i % 1000>, value v<i>-<padding>);
         every delivery report is checked; writes "partition offset i" per delivered record to
         --out and exits non-zero if any delivery failed.
consume: Consumer with assign() to every partition from the beginning; reads until --count
         records arrived (or --timeout passed); writes "partition offset key value" to --out.
"""
import argparse
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING


def value_of(i):
    return "v%d-%s" % (i, "y" * (i % 37))


def produce(args):
    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "enable.idempotence": False,
        "message.timeout.ms": 60000,
    })
    delivered = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
            return
        i = int(msg.value().decode().split("-")[0][1:])
        delivered.append((msg.partition(), msg.offset(), i))

    for i in range(args.count):
        while True:
            try:
                p.produce(args.topic, key=("k%d" % (i % 1000)).encode(), value=value_of(i).encode(),
                          on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(120)
    with open(args.out, "w") as f:
        for (part, off, i) in delivered:
            f.write("%d %d %d\n" % (part, off, i))
    if errors or left or len(delivered) != args.count:
        print("delivery failures: %d errors (first: %s), %d undelivered, %d delivered"
              % (len(errors), errors[:1], left, len(delivered)), file=sys.stderr)
        return 1
    return 0


def consume(args):
    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "interop-assign",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": 100,
    })
    c.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(args.partitions)])
    got = 0
    deadline = time.time() + args.timeout
    with open(args.out, "w") as f:
        while got < args.count and time.time() < deadline:
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error() is not None:
                    print("consume error: %s" % m.error(), file=sys.stderr)
                    continue
                f.write("%d %d %s %s\n" % (m.partition(), m.offset(), m.key().decode(), m.value().decode()))
                got += 1
    c.close()
    if got < args.count:
        print("consumed only %d of %d" % (got, args.count), file=sys.stderr)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["produce", "consume"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    return produce(args) if args.mode == "produce" else consume(args)


if __name__ == "__main__":
    sys.exit(main())
