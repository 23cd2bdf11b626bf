#!/usr/bin/env bash
# Fuzz one target of engine/fuzz for a bounded time, on the stable toolchain.
#
#   scripts/faults/fuzz.sh TARGET SECONDS [libFuzzer args...]
#   TARGET: record_validate | recovery_scan | request_decode   (or "list")
#
# No cargo-fuzz needed: this passes the same SanitizerCoverage flags cargo-fuzz does and links
# libFuzzer through the libfuzzer-sys crate. RUSTC_BOOTSTRAP=1 is set so FUZZ_ASAN=1 can add
# AddressSanitizer (-Zsanitizer=address; slower, and the engine's fuzzed code is safe Rust).
# The corpus lives in engine/fuzz/corpus/TARGET (seeded from valid inputs built by
# engine/tests/fault_fuzz_seeds.rs); crashes go to engine/fuzz/artifacts/TARGET/.
# Exit status: 0 = no crash within the time, non-zero = crash/leak/timeout found (see output).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
fuzz="$root/engine/fuzz"
targets="record_validate recovery_scan request_decode"
if [[ "${1:-}" == "list" || $# -lt 2 ]]; then
    echo "usage: $0 TARGET SECONDS [libFuzzer args]   targets: $targets" >&2
    [[ "${1:-}" == "list" ]] && exit 0 || exit 2
fi
target=$1
seconds=$2
shift 2
case " $targets " in *" $target "*) ;; *) echo "unknown target $target (have: $targets)" >&2; exit 2 ;; esac

export RUSTC_BOOTSTRAP=1
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
if [[ "${FUZZ_ASAN:-0}" == 1 ]]; then
    flags+=" -Zsanitizer=address"
fi
export RUSTFLAGS="$flags"
export CARGO_TARGET_DIR="$fuzz/target"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (as cargo-fuzz does).
triple=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --manifest-path "$fuzz/Cargo.toml" --target "$triple" --bin "$target"

corpus="$fuzz/corpus/$target"
artifacts="$fuzz/artifacts/$target"
mkdir -p "$corpus" "$artifacts"
if [[ -z "$(ls -A "$corpus")" ]]; then
    # Seed corpus: valid batches, segment images and client requests (debug test build, no fuzz flags).
    (cd "$root" && env -u RUSTFLAGS -u CARGO_TARGET_DIR FUZZ_SEED_DIR="$fuzz/corpus" \
        cargo test -q -p engine --test fault_fuzz_seeds >/dev/null)
fi
echo "fuzzing $target for ${seconds}s (corpus $corpus)"
# Checked-in seeds (real client requests captured by scripts/faults/capture_requests.py) are read
# as a second corpus directory; new inputs go to the first.
seeds=()
[[ -d "$fuzz/seeds/$target" ]] && seeds=("$fuzz/seeds/$target")
exec "$CARGO_TARGET_DIR/$triple/release/$target" "$corpus" "${seeds[@]}" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$@"
