#!/usr/bin/env python3
"""confluent-kafka (librdkafka) Producer sending one record larger than the broker's
message.max.bytes (the client's own limit raised so that the batch reaches the broker), then a
small one. Driven by engine/tests/confluent_interop.rs.

Prints "error <name> <seconds>" for the large record's delivery report and "small ok <offset>"
for the small one; exits non-zero if the large record was not refused or the small one failed.
"""
import argparse
import sys
import time

from confluent_kafka import Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--bytes", type=int, required=True)
    args = ap.parse_args()
    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "message.max.bytes": 100000000,
        "batch.size": 100000000,
        "message.timeout.ms": 300000,
        "compression.type": "none",
    })
    reports = []
    p.produce(args.topic, value=b"x" * args.bytes, on_delivery=lambda err, msg: reports.append((err, msg)))
    started = time.time()
    # Bounded: the delivery timeout is 300 s; a non-retried refusal arrives in well under 60 s.
    while not reports and time.time() - started < 60:
        p.poll(0.1)
    if not reports:
        print("no delivery report for the large record within 60 s", file=sys.stderr)
        return 1
    err, _ = reports[0]
    if err is None:
        print("the large record was acknowledged", file=sys.stderr)
        return 1
    print("error %s %.2f" % (err.name(), time.time() - started))
    reports.clear()
    p.produce(args.topic, value=b"small", on_delivery=lambda err, msg: reports.append((err, msg)))
    p.flush(30)
    if not reports or reports[0][0] is not None:
        print("small record not delivered: %r" % (reports,), file=sys.stderr)
        return 1
    print("small ok %d" % reports[0][1].offset())
    return 0


if __name__ == "__main__":
    sys.exit(main())
