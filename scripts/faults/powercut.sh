#!/usr/bin/env bash
# Power cut on a real filesystem (long profile; needs root, loop devices and fsfreeze).
#
#   scripts/faults/powercut.sh [CUTS=20] [MAX_RUN_MS=3000]
#   FAULT_POWERCUT_TARGET=broker (default): the `broker` binary (--durability group) with acks=all
#       producers (fault_kill9's powercut_broker_producer); after each cut the broker is restarted
#       on the crash image and every acknowledged batch is fetched back (powercut_broker_check).
#   FAULT_POWERCUT_TARGET=engine: the storage engine directly (fault_kill9's kill9_child_writer and
#       kill9_child_check; FAULT_DURABILITY=never shows the method does cut the page cache;
#       FAULT_DIRECT_IO=1 writes batches of up to ~100 KiB outside the partition lock, O_DIRECT;
#       FAULT_RETENTION_BYTES=n deletes segments as it writes).
#
# What it does, per cut (see docs/FAULTS.md, "Power cut", for what this proves and what not):
#   outer.img (in $WORK) -> /dev/loopB -> ext4 "B" mounted at $WORK/B
#   B/inner.img          -> /dev/loopA -> ext4 "A" mounted at $WORK/A   (the data directory)
#   1. A writer (fault_kill9's kill9_child_writer: 3 partitions, one appender thread each,
#      durability group = acknowledged only after fdatasync) appends to $WORK/A/data and logs every
#      acknowledged append to $WORK/acks (on the host filesystem, not on A or B).
#   2. After a random time, `fsfreeze -f B`: from that instant loopA can complete no more writes
#      (its writes into inner.img block on the frozen B), so inner.img holds exactly the writes
#      loopA completed before the cut. Everything still only in A's page cache — unsynced data,
#      an uncommitted ext4 journal transaction — is not in it. That is the power cut.
#   3. Copy inner.img (reads work while frozen): the crash image. Then SIGKILL the writer, thaw B,
#      unmount A, and replace inner.img with the crash image.
#   4. Mount the crash image (ext4 replays its journal), open the log (engine recovery: torn
#      tails truncated, indexes rebuilt) and check every acknowledged record: present,
#      byte-identical, in order (kill9_child_check). The next round continues on this image.
# An fdatasync that was acknowledged before the freeze needed all its writes (data and the
# journal commit for the file size) completed by loopA, so they are in the image; one that was
# still waiting blocks on the frozen B and is never acknowledged. So "lost = 0" is exact.
set -euo pipefail
cuts=${1:-20}
max_run_ms=${2:-3000}
root=$(cd "$(dirname "$0")/../.." && pwd)

if [[ $(id -u) != 0 ]]; then
    echo "SKIPPED powercut: needs root (loop devices, mount, fsfreeze)" >&2
    exit 0
fi
for tool in losetup mkfs.ext4 fsfreeze mount umount; do
    command -v "$tool" >/dev/null || { echo "SKIPPED powercut: $tool not found" >&2; exit 0; }
done

target=${FAULT_POWERCUT_TARGET:-broker}
# The writer/checker: the fault_kill9 test binary (debug build); the broker binary.
artifact() {
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]==sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
bin=$(cd "$root" && cargo test -p engine --test fault_kill9 --no-run --message-format=json 2>/dev/null | artifact fault_kill9)
[[ -x "$bin" ]] || { echo "cannot build the fault_kill9 test binary" >&2; exit 1; }
broker=$(cd "$root" && cargo build -p engine --bin broker --message-format=json 2>/dev/null | artifact broker)
[[ -x "$broker" ]] || { echo "cannot build the broker binary" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export FAULT_BROKER_ADDR="127.0.0.1:$port"

WORK=$(mktemp -d /tmp/faults-powercut.XXXXXX)
umount_retry() {
    for _ in $(seq 100); do
        umount "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    umount "$1"
}
loopB="" loopA="" writer="" bpid=""
cleanup() {
    set +e
    [[ -n "$writer" ]] && kill -9 "$writer" 2>/dev/null
    [[ -n "$bpid" ]] && kill -9 "$bpid" 2>/dev/null
    fsfreeze -u "$WORK/B" 2>/dev/null
    [[ -n "$writer" ]] && wait "$writer" 2>/dev/null
    [[ -n "$bpid" ]] && wait "$bpid" 2>/dev/null
    mountpoint -q "$WORK/A" && umount_retry "$WORK/A"
    [[ -n "$loopA" ]] && losetup -d "$loopA" 2>/dev/null
    mountpoint -q "$WORK/B" && umount_retry "$WORK/B"
    [[ -n "$loopB" ]] && losetup -d "$loopB" 2>/dev/null
    if [[ "${keep:-0}" == 1 ]]; then echo "kept $WORK for inspection" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

mkdir -p "$WORK/A" "$WORK/B"
truncate -s 1G "$WORK/outer.img"
loopB=$(losetup -f --show "$WORK/outer.img")
mkfs.ext4 -q "$loopB"
mount "$loopB" "$WORK/B"
truncate -s 256M "$WORK/B/inner.img"
mkfs.ext4 -q -F "$WORK/B/inner.img"

mount_a() {
    loopA=$(losetup -f --show "$WORK/B/inner.img")
    mount -t ext4 "$loopA" "$WORK/A"
    mkdir -p "$WORK/A/data"
}
# (umount_retry: io_uring tears a killed process's files down asynchronously, so A may be busy briefly.)
umount_a() {
    umount_retry "$WORK/A"
    losetup -d "$loopA" 2>/dev/null || true   # may already be auto-cleared
    loopA=""
}

export FAULT_DATA_DIR="$WORK/A/data" FAULT_ACKS="$WORK/acks" FAULT_DURABILITY=${FAULT_DURABILITY:-group} FAULT_WRITER_SECONDS=60
start_broker() {
    "$broker" --data-dir "$WORK/A/data" --listen "$FAULT_BROKER_ADDR" --durability "$FAULT_DURABILITY" \
        >>"$WORK/broker.log" 2>&1 &
    bpid=$!
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$bpid" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$WORK/broker.log" >&2
    echo "broker did not start" >&2
    keep=1
    exit 1
}
stop_broker() {
    kill -TERM "$bpid"
    wait "$bpid" || { tail -20 "$WORK/broker.log" >&2; echo "broker did not shut down cleanly" >&2; keep=1; exit 1; }
    bpid=""
}
mount_a
started=$(date +%s)
for ((i = 1; i <= cuts; i++)); do
    if [[ $target == broker ]]; then
        start_broker
        "$bin" --ignored --exact broker_kill9::powercut_broker_producer --test-threads=1 >/dev/null 2>"$WORK/writer.err" &
    else
        "$bin" --ignored --exact kill9_child_writer --test-threads=1 >/dev/null 2>"$WORK/writer.err" &
    fi
    writer=$!
    sleep "$(awk -v r="$RANDOM" -v m="$max_run_ms" 'BEGIN { printf "%.3f", (200 + r % m) / 1000 }')"
    if ! kill -0 "$writer" 2>/dev/null; then
        cat "$WORK/writer.err" >&2
        echo "writer died before cut $i" >&2
        keep=1
        exit 1
    fi
    fsfreeze -f "$WORK/B"                      # the power cut
    cp --sparse=always "$WORK/B/inner.img" "$WORK/cut.img"
    kill -9 "$writer"
    [[ -n "$bpid" ]] && kill -9 "$bpid"
    fsfreeze -u "$WORK/B"
    wait "$writer" 2>/dev/null || true
    writer=""
    if [[ -n "$bpid" ]]; then wait "$bpid" 2>/dev/null || true; bpid=""; fi
    umount_a
    mv "$WORK/cut.img" "$WORK/B/inner.img"     # continue from the crash image
    mount_a                                     # ext4 journal replay
    if [[ $target == broker ]]; then
        start_broker                            # engine recovery on the crash image
        check=broker_kill9::powercut_broker_check
    else
        check=kill9_child_check
    fi
    if ! out=$("$bin" --ignored --exact "$check" --nocapture --test-threads=1 2>&1); then
        echo "$out" >&2
        echo "POWER CUT CHECK FAILED at cut $i" >&2
        keep=1
        exit 1
    fi
    [[ $target == broker ]] && stop_broker
    echo "cut $i: $(grep 'powercut check' <<<"$out")"
done
acked=$(wc -l <"$WORK/acks")
echo "powercut ($target): cuts $cuts, acknowledged appends logged $acked, lost = 0 ($(( $(date +%s) - started )) s)"
