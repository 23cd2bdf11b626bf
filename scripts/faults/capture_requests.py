#!/usr/bin/env python3
"""Capture real Kafka client requests as fuzz seeds for request_decode.

    scripts/faults/capture_requests.py BROKER_BINARY OUT_DIR

Starts the broker on a free 127.0.0.1 port, runs kcat (produce with lz4/zstd/none, consume) and,
if installed, confluent-kafka (acks=all zstd producer, consumer) under
`strace -f -e write=all`, reassembles what each client wrote to each socket, splits it into
length-prefixed request frames and writes each distinct frame (prefix included) to OUT_DIR.
Bounded: every client run has a timeout; the broker is stopped at the end.
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
        traces = []
        for z in ["none", "lz4", "zstd"]:
            t = f"{work}/p-{z}.trace"
            run(["kcat", "-b", addr, "-t", f"cap-{z}", "-P", "-K:", "-z", z, "-l", msgs], t)
            traces.append(t)
            t = f"{work}/c-{z}.trace"
            run(["kcat", "-b", addr, "-t", f"cap-{z}", "-C", "-o", "beginning", "-e", "-q"], t)
            traces.append(t)
        t = f"{work}/l.trace"
        run(["kcat", "-b", addr, "-L"], t)
        traces.append(t)
        try:
            import confluent_kafka  # noqa: F401
            py = (
                "import confluent_kafka as ck\n"
                f"p = ck.Producer({{'bootstrap.servers': '{addr}', 'acks': 'all', 'linger.ms': 5, 'compression.type': 'zstd'}})\n"
                "for i in range(200): p.produce('cap-py', key=str(i), value='v' * i)\n"
                "p.flush(20)\n"
                f"c = ck.Consumer({{'bootstrap.servers': '{addr}', 'group.id': 'capg', 'auto.offset.reset': 'earliest'}})\n"
                "c.assign([ck.TopicPartition('cap-py', i, 0) for i in range(3)])\n"
                "n = 0\n"
                "for _ in range(50):\n"
                "    m = c.poll(0.2)\n"
                "    n += m is not None\n"
                "c.close()\n"
            )
            t = f"{work}/py.trace"
            run([sys.executable, "-c", py], t, timeout=60)
            traces.append(t)
        except ImportError:
            pass
        seen, kinds = set(), {}
        for t in traces:
            if not os.path.exists(t):
                continue
            for data, starts in streams(t).values():
                for fr in frames(data, starts):
                    h = hashlib.sha1(fr).hexdigest()[:16]
                    if h in seen:
                        continue
                    seen.add(h)
                    key = int.from_bytes(fr[4:6], "big")
                    ver = int.from_bytes(fr[6:8], "big")
                    kinds[(key, ver)] = kinds.get((key, ver), 0) + 1
                    with open(os.path.join(out, f"capture-k{key}-v{ver}-{h}"), "wb") as f:
                        f.write(fr)
        print(f"captured {len(seen)} distinct request frames: " +
              ", ".join(f"key {k} v{v} x{n}" for (k, v), n in sorted(kinds.items())))
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
