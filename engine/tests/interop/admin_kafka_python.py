#!/usr/bin/env python3
"""kafka-python's KafkaAdminClient (a second, pure-Python client) against the admin APIs,
driven by engine/tests/admin_interop.rs. Prints one JSON object with what each call returned.

A topic --topic with 2 partitions; a standalone group "kpg" with offsets on both partitions;
delete_group_offsets of partition 0; delete_groups(["kpg", "nope"]); describe_configs of the
topic (all keys); create_partitions to 4, then to 3 (shrink); one record to partition 1 and
describe_log_dirs of it; describe_cluster. Topic configuration: create --topic-c with configs (and
one with cleanup.policy=compact, refused), alter_configs incremental (SET, DELETE) and legacy,
describe_configs (modified only) after each.
"""
import argparse
import json
import sys

from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource
from kafka.structs import OffsetAndMetadata


def name(err):
    return getattr(err, "__name__", type(err).__name__)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="kp")
    a = ap.parse_args()
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=30000)
    admin.create_topics({a.topic: {"num_partitions": 2, "replication_factor": 1}})
    tp0, tp1 = TopicPartition(a.topic, 0), TopicPartition(a.topic, 1)
    admin.alter_group_offsets("kpg", {tp0: OffsetAndMetadata(5, "", -1), tp1: OffsetAndMetadata(6, "", -1)})
    res = {}
    res["delete_offsets"] = {"%s-%d" % (tp.topic, tp.partition): name(e)
                             for tp, e in admin.delete_group_offsets("kpg", [tp0]).items()}
    left = admin.list_group_offsets({"kpg": None})
    left = left.get("kpg", left) if isinstance(left, dict) else left
    res["left"] = sorted("%s-%d:%d" % (tp.topic, tp.partition, om.offset) for tp, om in left.items() if om.offset >= 0)
    res["delete_groups"] = {g: e if isinstance(e, str) else name(e)
                            for g, e in admin.delete_groups(["kpg", "nope"]).items()}
    res["delete_again"] = {g: e if isinstance(e, str) else name(e) for g, e in admin.delete_groups(["kpg"]).items()}
    cfg = admin.describe_configs([ConfigResource("TOPIC", a.topic)], config_filter="all")
    res["configs"] = {k: [v["value"], v["config_source"]] for k, v in cfg["topic"][a.topic].items()}
    res["grow"] = [t.error_code for t in admin.create_partitions({a.topic: 4}, raise_errors=False).results]
    res["shrink"] = [t.error_code for t in admin.create_partitions({a.topic: 3}, raise_errors=False).results]
    res["partitions"] = len(admin.describe_topics([a.topic])[0]["partitions"])
    p = KafkaProducer(bootstrap_servers=a.bootstrap, acks="all")
    p.send(a.topic, b"x" * 100, partition=1).get(30)
    p.close()
    dirs = admin.describe_log_dirs({a.topic: [1]})
    res["log_dirs"] = [[d["log_dir"], d["error_code"], [[t["name"], p["partition_index"], p["partition_size"]]
                                                        for t in d["topics"] for p in t["partitions"]]]
                       for b in dirs for d in b["log_dirs"]]
    tc = a.topic + "-c"
    created = admin.create_topics({tc: {"num_partitions": 1, "replication_factor": 1,
                                        "configs": {"retention.ms": "60000", "segment.bytes": "2048"}},
                                   "kpcompact": {"num_partitions": 1, "replication_factor": 1,
                                                 "configs": {"cleanup.policy": "compact"}}}, raise_errors=False)
    res["create_configs"] = created

    def modified():
        d = admin.describe_configs([ConfigResource("TOPIC", tc)])
        return {k: [v["value"], v["config_source"]] for k, v in d["topic"][tc].items()}

    res["modified"] = modified()
    alt = admin.alter_configs([ConfigResource("TOPIC", tc, {"retention.ms": ("DELETE", None),
                                                             "max.message.bytes": "5000"})], incremental=True)
    res["incremental"] = alt
    res["after_incremental"] = modified()
    alt = admin.alter_configs([ConfigResource("TOPIC", tc, {"retention.bytes": "1000000"})], incremental=False)
    res["legacy"] = alt
    res["after_legacy"] = modified()
    c = admin.describe_cluster()
    res["cluster"] = [c["cluster_id"], c["controller_id"], [[b["broker_id"], b["host"], b["port"]] for b in c["brokers"]]]
    print(json.dumps(res, default=str))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
