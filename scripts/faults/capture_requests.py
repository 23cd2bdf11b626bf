#!/usr/bin/env python3
"""Capture real Kafka client requests: fixtures for the decoder test and fuzz seeds for
request_decode.

    scripts/faults/capture_requests.py BROKER_BINARY OUT_DIR

Starts the broker on a free 127.0.0.1 port and runs every client the tests use, each under
`strace -f -e write=all`: kcat (librdkafka 2.0.2 from apt: produce with none/lz4/zstd, consume,
metadata, a consumer group, seek by timestamp), confluent-kafka (librdkafka 2.x from PyPI:
producer, idempotent producer, consumer, consumer group, AdminClient list/create/delete topics,
offsets_for_times, a transactional producer, a group.protocol=consumer consumer), kafka-python,
aiokafka (PyPI) and kafkajs (npm; found through NODE_PATH). A client that is not installed is
skipped with a message. What each client wrote to each socket is reassembled, split into
length-prefixed request frames, and each distinct frame (prefix included) is written to
OUT_DIR/capture-k<key>-v<version>-<sha1 prefix>, at most PER_KIND frames per (client run, key,
version); OUT_DIR/../request_decode.clients lists which client wrote each file (merged with
what is there). Bounded: every client run has a timeout; the broker is stopped at the end.
"""
import os, re, shutil, signal, socket, subprocess, sys, tempfile, hashlib

SYSCALL = re.compile(r'^(\d+)\s+(?:sendmsg|sendto|write|writev)\((\d+),')
DUMP = re.compile(r'^\s*\|\s+[0-9a-f]{5}\s+((?:[0-9a-f]{2}\s+)+)')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


RETVAL = re.compile(r'=\s+(-?\d+)(?:\s+[A-Z]+.*)?$')


def streams(trace):
    """(pid, fd) -> (bytes written, offsets where each syscall's data starts). strace dumps a
    call's whole buffer, so each chunk is cut to the call's return value (a short or failed
    non-blocking send is retried by the client with the rest)."""
    out, cur, keep = {}, None, 0

    def close_chunk():
        if cur is not None:
            data, starts = out[cur]
            del data[starts[-1] + keep:]

    for line in open(trace, errors="replace"):
        m = SYSCALL.match(line)
        if m:
            close_chunk()
            cur = (m.group(1), m.group(2))
            r = RETVAL.search(line.rstrip())
            keep = max(int(r.group(1)), 0) if r else 0
            data, starts = out.setdefault(cur, (bytearray(), []))
            starts.append(len(data))
            continue
        d = DUMP.match(line)
        if d and cur is not None:
            out[cur][0].extend(bytes(int(h, 16) for h in d.group(1).split()))
    close_chunk()
    return out


def frames(stream, starts):
    """Request frames in a socket's byte stream; a descriptor number may have been another file
    or socket before, so parsing restarts at the next syscall boundary after anything that is
    not a frame."""
    res, at, i = [], 0, 0
    while at + 4 <= len(stream):
        n = int.from_bytes(stream[at:at + 4], "big", signed=True)
        key = int.from_bytes(stream[at + 4:at + 6], "big", signed=True) if at + 6 <= len(stream) else -1
        if 10 <= n <= (1 << 20) and at + 4 + n <= len(stream) and 0 <= key <= 80:
            res.append(bytes(stream[at:at + 4 + n]))
            at += 4 + n
            continue
        while i < len(starts) and starts[i] <= at:
            i += 1
        if i == len(starts):
            break
        at = starts[i]
    return res


def run(cmd, trace, timeout=30, stdin=None):
    full = ["strace", "-f", "-qq", "-e", "trace=sendmsg,sendto,write,writev", "-e", "write=all", "-o", trace] + cmd
    try:
        subprocess.run(full, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


PER_KIND = 3

PY_CONFLUENT = """
import sys, time
import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic
addr = sys.argv[1]
p = ck.Producer({'bootstrap.servers': addr, 'acks': 'all', 'linger.ms': 5, 'compression.type': 'zstd'})
for i in range(200): p.produce('cap-py', key=str(i), value='v' * i, timestamp=1700000000000 + i)
p.flush(20)
ip = ck.Producer({'bootstrap.servers': addr, 'enable.idempotence': True, 'compression.type': 'lz4'})
for i in range(50): ip.produce('cap-py', value=b'i%d' % i)
ip.flush(20)
a = AdminClient({'bootstrap.servers': addr})
a.list_topics(timeout=10)
p.list_topics(timeout=10)
for f in a.create_topics([NewTopic('cap-py-del', 2, 1)]).values(): f.result(10)
for f in a.delete_topics(['cap-py-del'], operation_timeout=5).values(): f.result(10)
c = ck.Consumer({'bootstrap.servers': addr, 'group.id': 'capg', 'auto.offset.reset': 'earliest'})
c.assign([ck.TopicPartition('cap-py', i, 0) for i in range(3)])
c.offsets_for_times([ck.TopicPartition('cap-py', 0, 1700000000050)], timeout=10)
for _ in range(30): c.poll(0.1)
c.close()
g = ck.Consumer({'bootstrap.servers': addr, 'group.id': 'capg-sub', 'auto.offset.reset': 'earliest'})
g.subscribe(['cap-py'])
t0 = time.time()
while time.time() - t0 < 8:
    m = g.poll(0.2)
    if m is not None and not m.error(): g.commit(m, asynchronous=False); break
g.close()
t = ck.Producer({'bootstrap.servers': addr, 'transactional.id': 'cap-tx'})
try: t.init_transactions(5)
except Exception: pass
k = ck.Consumer({'bootstrap.servers': addr, 'group.id': 'capg-848', 'group.protocol': 'consumer'})
k.subscribe(['cap-py'])
for _ in range(10): k.poll(0.1)
"""

PY_KAFKA_PYTHON = """
import sys, time
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
addr = sys.argv[1]
p = KafkaProducer(bootstrap_servers=addr, acks='all', compression_type='gzip', linger_ms=5)
for i in range(100): p.send('cap-kp', key=b'%d' % i, value=b'v' * i, timestamp_ms=1700000000000 + i)
p.flush(20); p.close(5)
a = KafkaAdminClient(bootstrap_servers=addr)
a.list_topics()
a.create_topics([NewTopic('cap-kp-del', 2, 1)])
a.delete_topics(['cap-kp-del'])
a.close()
c = KafkaConsumer(bootstrap_servers=addr, group_id='capg-kp', auto_offset_reset='earliest', consumer_timeout_ms=8000)
c.subscribe(['cap-kp'])
for m in c:
    c.commit(); break
c.offsets_for_times({TopicPartition('cap-kp', 0): 1700000000050})
c.close()
"""

PY_AIOKAFKA = """
import sys, asyncio
from aiokafka import AIOKafkaProducer, AIOKafkaConsumer, TopicPartition
addr = sys.argv[1]
async def main():
    p = AIOKafkaProducer(bootstrap_servers=addr, acks='all', enable_idempotence=True)
    await p.start()
    for i in range(50): await p.send('cap-aio', key=b'%d' % i, value=b'v' * i, timestamp_ms=1700000000000 + i)
    await p.flush(); await p.stop()
    c = AIOKafkaConsumer('cap-aio', bootstrap_servers=addr, group_id='capg-aio', auto_offset_reset='earliest', enable_auto_commit=False)
    await c.start()
    try:
        r = await asyncio.wait_for(c.getmany(timeout_ms=3000), 10)
        await c.commit()
        await c.offsets_for_times({TopicPartition('cap-aio', 0): 1700000000010})
    finally:
        await c.stop()
asyncio.run(main())
"""

JS_KAFKAJS = """
const { Kafka, logLevel } = require('kafkajs');
const kafka = new Kafka({ clientId: 'cap-js', brokers: [process.argv[2]], logLevel: logLevel.NOTHING });
(async () => {
  const admin = kafka.admin(); await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'cap-js', numPartitions: 2 }, { topic: 'cap-js-del' }] });
  await admin.listTopics();
  await admin.deleteTopics({ topics: ['cap-js-del'] });
  const p = kafka.producer(); await p.connect();
  await p.send({ topic: 'cap-js', acks: -1, messages: Array.from({ length: 50 }, (_, i) => ({ key: 'k' + i, value: 'v' + i, timestamp: String(1700000000000 + i) })) });
  await p.disconnect();
  await admin.fetchTopicOffsetsByTimestamp('cap-js', 1700000000010);
  await admin.disconnect();
  const c = kafka.consumer({ groupId: 'capg-js' }); await c.connect();
  await c.subscribe({ topic: 'cap-js', fromBeginning: true });
  let n = 0;
  await c.run({ eachMessage: async () => { n++; } });
  await new Promise(r => setTimeout(r, 6000));
  await c.disconnect();
  process.exit(0);
})().catch(e => { console.error(e); process.exit(1); });
"""


def main():
    broker, out = sys.argv[1], sys.argv[2]
    if not shutil.which("strace") or not shutil.which("kcat"):
        print("SKIPPED capture: strace and kcat are needed", file=sys.stderr)
        return 0
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="faults-capture.")
    port = free_port()
    addr = f"127.0.0.1:{port}"
    b = subprocess.Popen([broker, "--data-dir", f"{work}/data", "--listen", addr, "--durability", "group",
                          "--default-partitions", "3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                subprocess.run(["sleep", "0.05"])
        msgs = f"{work}/msgs.txt"
        with open(msgs, "w") as f:
            for i in range(300):
                f.write(f"key{i}:value-{i}-" + "x" * (i % 50) + "\n")
        runs = []  # (client, trace file)

        def traced(client, cmd, timeout=30):
            t = f"{work}/{len(runs)}.trace"
            run(cmd, t, timeout)
            runs.append((client, t))

        for z in ["none", "lz4", "zstd"]:
            traced("kcat", ["kcat", "-b", addr, "-t", f"cap-{z}", "-P", "-K:", "-z", z, "-l", msgs])
            traced("kcat", ["kcat", "-b", addr, "-t", f"cap-{z}", "-C", "-o", "beginning", "-e", "-q"])
        traced("kcat", ["kcat", "-b", addr, "-L"])
        traced("kcat", ["kcat", "-b", addr, "-C", "-t", "cap-none", "-p", "0", "-o", "s@0", "-c", "1", "-q"])
        traced("kcat", ["kcat", "-b", addr, "-G", "capg-kcat", "cap-none", "-c", "20", "-q"], timeout=15)

        def python(client, module, script, timeout=60):
            try:
                __import__(module)
            except ImportError:
                print(f"SKIPPED {client}: python module {module} is not installed", file=sys.stderr)
                return
            path = f"{work}/run-{client}.py"  # not "aiokafka.py": it would import itself
            with open(path, "w") as f:
                f.write(script)
            traced(client, [sys.executable, path, addr], timeout)

        python("confluent-kafka", "confluent_kafka", PY_CONFLUENT, timeout=90)
        python("kafka-python", "kafka", PY_KAFKA_PYTHON)
        python("aiokafka", "aiokafka", PY_AIOKAFKA)
        node = shutil.which("node")
        if node and subprocess.run([node, "-e", "require('kafkajs')"], stderr=subprocess.DEVNULL).returncode == 0:
            path = f"{work}/kafkajs.js"
            with open(path, "w") as f:
                f.write(JS_KAFKAJS)
            traced("kafkajs", [node, path, addr], timeout=60)
        else:
            print("SKIPPED kafkajs: node or the kafkajs package (NODE_PATH) is missing", file=sys.stderr)

        manifest_path = os.path.join(os.path.dirname(os.path.abspath(out)), os.path.basename(os.path.abspath(out)) + ".clients")
        manifest = {}
        if os.path.exists(manifest_path):
            for line in open(manifest_path):
                if line.strip() and not line.startswith("#"):
                    name, client = line.split(None, 1)
                    manifest[name] = client.strip()
        seen, kinds, per = set(manifest), {}, {}
        for run_no, (client, t) in enumerate(runs):
            if not os.path.exists(t):
                continue
            for data, starts in streams(t).values():
                for fr in frames(data, starts):
                    h = hashlib.sha1(fr).hexdigest()[:16]
                    key = int.from_bytes(fr[4:6], "big")
                    ver = int.from_bytes(fr[6:8], "big")
                    name = f"capture-k{key}-v{ver}-{h}"
                    if name in seen or per.get((run_no, key, ver), 0) >= PER_KIND:
                        continue
                    seen.add(name)
                    per[(run_no, key, ver)] = per.get((run_no, key, ver), 0) + 1
                    kinds[(client, key, ver)] = kinds.get((client, key, ver), 0) + 1
                    manifest[name] = client
                    with open(os.path.join(out, name), "wb") as f:
                        f.write(fr)
        with open(manifest_path, "w") as f:
            f.write("# file  client (written by scripts/faults/capture_requests.py)\n")
            for name in sorted(manifest):
                f.write(f"{name} {manifest[name]}\n")
        print(f"captured {sum(kinds.values())} new distinct request frames: " +
              ", ".join(f"{c} key {k} v{v} x{n}" for (c, k, v), n in sorted(kinds.items())))
    finally:
        b.send_signal(signal.SIGTERM)
        try:
            b.wait(10)
        except subprocess.TimeoutExpired:
            b.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
