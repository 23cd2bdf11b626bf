#!/usr/bin/env python3
"""kafka-python transactions against the broker (issue 20): a committed transaction (with
send_offsets_to_transaction for a group), an aborted one, read back by read_committed and
read_uncommitted consumers; the admin client's list_transactions / describe_transactions while
the second is open. Prints one JSON object."""
import argparse
import json
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata


def read(bootstrap, topic, isolation):
    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    vals = []
    deadline = time.monotonic() + 60
    while c.position(tp) < end and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            vals += [r.value.decode() for r in recs]
    c.close()
    return vals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    a = ap.parse_args()
    p = KafkaProducer(bootstrap_servers=a.bootstrap, transactional_id="kp-tx")
    p.init_transactions()
    p.begin_transaction()
    for i in range(10):
        p.send(a.topic, b"committed-%d" % i)
    p.send_offsets_to_transaction({TopicPartition("kp-in", 0): OffsetAndMetadata(42, "", -1)}, "kp-group")
    p.commit_transaction()
    p.begin_transaction()
    for i in range(10):
        p.send(a.topic, b"aborted-%d" % i)
    p.flush()
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    listed = [(t.transactional_id, str(t.state)) for ts in admin.list_transactions().values() for t in ts]
    desc = admin.describe_transactions(["kp-tx"])["kp-tx"]
    described = {"state": str(desc.state), "partitions": sorted(f"{tp.topic}-{tp.partition}" for tp in desc.topic_partitions)}
    p.abort_transaction()
    p.close()
    committed_offset = admin.list_group_offsets("kp-group")["kp-group"].get(TopicPartition("kp-in", 0))
    admin.close()
    print(json.dumps({
        "read_committed": read(a.bootstrap, a.topic, "read_committed"),
        "read_uncommitted": len(read(a.bootstrap, a.topic, "read_uncommitted")),
        "listed": listed,
        "described": described,
        "group_offset": committed_offset.offset if committed_offset else None,
    }))


if __name__ == "__main__":
    main()
