#!/usr/bin/env python3
"""DeleteRecords with real clients, driven by engine/tests/delete_records_interop.rs.
Prints one JSON object.

  confluent    --topic T: creates T (2 partitions), produces 10 records to each (acks=all),
               AdminClient.delete_records: T-0 before 4, T-1 before OFFSET_END (-1); then the
               refusals: T-0 before 1000 (above the high watermark), an unknown topic, an
               unknown partition, __consumer_offsets. Reports the low watermarks / error
               names, list_offsets earliest, and what a new consumer (auto.offset.reset
               =earliest) reads first from T-0.
  kafka-python --topic T: KafkaAdminClient.delete_records T-0 before 6 (and 5, below the start:
               answered with the current start), then a KafkaConsumer (earliest) on T-0.
  consume      --topic T: a new confluent consumer (earliest): first offset read on T-0, and
               list_offsets earliest/latest of both partitions (after a restart).
"""
import argparse
import json
import sys
import time
import uuid


def confluent_first_offset(bootstrap, topic, partition):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "dr-" + uuid.uuid4().hex,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition)])
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                raise RuntimeError(str(m.error()))
            return [m.offset(), m.value().decode()]
        raise RuntimeError("no record within 30 s")
    finally:
        c.close()


def confluent_list(admin, topic, partitions, spec):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec
    s = OffsetSpec.earliest() if spec == "earliest" else OffsetSpec.latest()
    fs = admin.list_offsets({TopicPartition(topic, p): s for p in partitions}, request_timeout=30)
    return {str(tp.partition): f.result().offset for tp, f in fs.items()}


def confluent(a):
    from confluent_kafka import KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(a.topic, 2, 1)])[a.topic].result(30)
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 0})
    for part in (0, 1):
        for i in range(10):
            p.produce(a.topic, value=("v%d-%d" % (part, i)).encode(), partition=part)
            p.flush(30)  # one batch per record: the start then falls between batches too
    assert p.flush(30) == 0
    res = {}

    def delete(tps):
        out = {}
        for tp, f in admin.delete_records(tps, request_timeout=30).items():
            key = "%s-%d" % (tp.topic, tp.partition)
            try:
                out[key] = f.result().low_watermark
            except KafkaException as e:
                out[key] = e.args[0].name()
        return out

    res["deleted"] = delete([TopicPartition(a.topic, 0, 4), TopicPartition(a.topic, 1, -1)])
    res["above_hw"] = delete([TopicPartition(a.topic, 0, 1000)])
    res["unknown_topic"] = delete([TopicPartition("no-such-topic", 0, 1)])
    res["unknown_partition"] = delete([TopicPartition(a.topic, 7, 1)])
    res["internal"] = delete([TopicPartition("__consumer_offsets", 0, 0)])
    res["earliest"] = confluent_list(admin, a.topic, [0, 1], "earliest")
    res["latest"] = confluent_list(admin, a.topic, [0, 1], "latest")
    res["first"] = confluent_first_offset(a.bootstrap, a.topic, 0)
    print(json.dumps(res))


def kafka_python(a):
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=30000)
    tp = TopicPartition(a.topic, 0)
    res = {}
    r = admin.delete_records({tp: 6})
    res["deleted"] = {"%s-%d" % (k.topic, k.partition): v["low_watermark"] for k, v in r.items()}
    r = admin.delete_records({tp: 5})
    res["below_start"] = {"%s-%d" % (k.topic, k.partition): v["low_watermark"] for k, v in r.items()}
    c = KafkaConsumer(bootstrap_servers=a.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                      group_id="drk-" + uuid.uuid4().hex, consumer_timeout_ms=30000)
    c.assign([tp])
    res["beginning"] = c.beginning_offsets([tp])[tp]
    for m in c:
        res["first"] = [m.offset, m.value.decode()]
        break
    c.close()
    admin.close()
    print(json.dumps(res))


def consume(a):
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    res = {"earliest": confluent_list(admin, a.topic, [0, 1], "earliest"),
           "latest": confluent_list(admin, a.topic, [0, 1], "latest"),
           "first": confluent_first_offset(a.bootstrap, a.topic, 0)}
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["confluent", "kafka-python", "consume"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    a = ap.parse_args()
    {"confluent": confluent, "kafka-python": kafka_python, "consume": consume}[a.mode](a)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
