#!/bin/sh
# Benchmarks: builds Sluice and runs `sluice-lab bench forward` (64-byte UDP pod to
# pod through the node kernel, an XDP devmap redirect and sluice-engine with one
# worker, trials interleaved; prints a Markdown table). Needs root. Arguments go to
# `sluice-lab bench forward`, e.g. `--trials 5 --seconds 5 --json forward.json`.
set -eu
. "$(dirname "$0")/common.sh"

./scripts/install-deps.sh
cargo build --release -p sluice-engine -p sluice-lab
exec target/release/sluice-lab bench forward "$@"
