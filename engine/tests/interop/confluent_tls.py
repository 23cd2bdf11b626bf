#!/usr/bin/env python3
"""confluent-kafka (librdkafka) over the broker's TLS listener, driven by
engine/tests/tls_listener.rs: an acks=all Producer delivers --count records, then a Consumer in
a consumer group (its coordinator found and joined over TLS) reads them all back and commits.
Prints "delivered N consumed N"; exits non-zero on any delivery error, a missing or corrupted
record, or --timeout passing.
"""
import argparse
import sys
import time

from confluent_kafka import Consumer, Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    tls = {"bootstrap.servers": args.bootstrap, "security.protocol": "ssl", "ssl.ca.location": args.ca}
    if args.cert:
        tls.update({"ssl.certificate.location": args.cert, "ssl.key.location": args.key})
    p = Producer(dict(tls, **{"acks": "all", "linger.ms": 5, "message.timeout.ms": int(args.timeout * 1000)}))
    errors, delivered = [], [0]

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered[0] += 1

    for i in range(args.count):
        while True:
            try:
                p.produce(args.topic, key=b"k%d" % (i % 100), value=b"v%d-%s" % (i, b"z" * (i % 300)), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(args.timeout)
    if errors or left or delivered[0] != args.count:
        print("delivery failed: %d left, %d delivered, errors %s" % (left, delivered[0], errors[:3]), file=sys.stderr)
        sys.exit(1)
    c = Consumer(dict(tls, **{"group.id": "tls-group", "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    c.subscribe([args.topic])
    seen = set()
    deadline = time.time() + args.timeout
    while len(seen) < args.count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            print("consume error: %s" % m.error(), file=sys.stderr)
            sys.exit(1)
        i = int(m.value().split(b"-")[0][1:])
        if m.value() != b"v%d-%s" % (i, b"z" * (i % 300)) or m.key() != b"k%d" % (i % 100):
            print("record %d corrupted" % i, file=sys.stderr)
            sys.exit(1)
        seen.add(i)
    if len(seen) != args.count:
        print("consumed %d of %d" % (len(seen), args.count), file=sys.stderr)
        sys.exit(1)
    c.commit(asynchronous=False)
    c.close()
    print("delivered %d consumed %d" % (delivered[0], len(seen)))


if __name__ == "__main__":
    main()
