#!/usr/bin/env bash
# Instruction counts of the pipeline under callgrind.
#
#   perf/profile.sh [MILLIONS] [CASE ...]
#
# Builds perf/src/bin/pipeline-loop.rs (release profile, with debug info) and
# runs it under `valgrind --tool=callgrind` once per case (default: the IPv4
# UDP 64-byte forward, 1 million frames; `all` for every case). Collection is
# on only inside `sluice_pipeline::process` and the engine-style verdict
# counting. Per case it prints the instructions per frame of both and the top
# functions by self and inclusive cost, summed per function symbol by
# perf/cg_functions.py (callgrind_annotate splits a function into one row per
# source file it inlines; its per-line view is still there with
# `callgrind_annotate --auto=yes FILE`). Callgrind counts are deterministic:
# rerun after a change and compare.
#
# Output files: $OUT (default target-perf/callgrind)/callgrind.<case>.out and
# <case>.annotate.txt. CASE is a name from `sluice_perf::cases()` or `mixed`.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-perf}"
OUT="${OUT:-$CARGO_TARGET_DIR/callgrind}"
MILLIONS="${1:-1}"
shift || true
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(ipv4_udp_64B_fwd)
if [ "${CASES[0]}" = all ]; then
    CASES=(ipv4_udp_64B_fwd ipv6_udp_fwd ipv4_tcp_fwd arp_reply nd_gateway drop_spoofed
        ipv4_udp_64B_fwd_policy1k ipv4_udp_64B_new ipv4_udp_64B_new_policy1k mixed)
fi

cargo build --release -p sluice-perf --bin pipeline-loop >&2
BIN="$CARGO_TARGET_DIR/release/pipeline-loop"
mkdir -p "$OUT"

for case in "${CASES[@]}"; do
    file="$OUT/callgrind.$case.out"
    # Count only inside process() and the engine-style verdict counting
    # (drops[reason.index()] += 1): setup and the fixture copy stay out.
    valgrind --tool=callgrind --callgrind-out-file="$file" \
        --toggle-collect='sluice_pipeline::process' \
        --toggle-collect='sluice_perf::Counters::count' \
        "$BIN" "$MILLIONS" "$case" 2>"$OUT/valgrind.$case.log" >&2
    frames=$((MILLIONS * 1000000))
    {
        echo "== $case: $frames frames"
        python3 perf/cg_functions.py "$file" "$frames" 12
    } | tee "$OUT/$case.annotate.txt"
done
