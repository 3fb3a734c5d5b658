#!/bin/sh
# The demo: builds Sluice and runs `sluice-lab demo` (a node and three pods as
# network namespaces on this machine: sluice-agent reads the lab's manifests,
# sluice-cni wires each pod as a runtime would, sluice-engine forwards). Needs root.
# Arguments go to `sluice-lab demo`, e.g. `--pods 4 --workers 2`.
set -eu
. "$(dirname "$0")/common.sh"

./scripts/install-deps.sh
cargo build --release -p sluice-engine -p sluice-agent -p sluice-cni -p sluice-lab -p sluice-cli
exec target/release/sluice-lab demo "$@"
