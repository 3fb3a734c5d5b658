#!/bin/sh
# The demo: builds Sluice and runs `sluice-lab demo` (a node and three pods as
# network namespaces on this machine, forwarded by sluice-engine). Needs root.
# Arguments go to `sluice-lab demo`, e.g. `--pods 4 --workers 2`.
set -eu
. "$(dirname "$0")/common.sh"

./scripts/install-deps.sh
cargo build --release -p sluice-engine -p sluice-lab -p sluice-cli
exec target/release/sluice-lab demo "$@"
