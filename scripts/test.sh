#!/bin/sh
# Everything CI checks: formatting, lints, build, all tests (the lab tests run as
# root in network namespaces against the release engine), fuzz targets build,
# and no lab namespace left behind.
set -eu
. "$(dirname "$0")/common.sh"

lab_namespaces() {
    ip netns list | awk '{print $1}' | grep -E '^sl[0-9]+x[0-9]+-' || true
}

# Whatever happens below, remove labs whose test process is gone.
trap 'if [ -x target/release/sluice-lab ]; then target/release/sluice-lab cleanup >/dev/null 2>&1 || true; fi' EXIT

./scripts/install-deps.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build --release"
cargo build --release --workspace
echo "== cargo test --release"
cargo test --workspace --release

if [ -d fuzz ]; then
    echo "== fuzz targets build"
    cargo build --manifest-path fuzz/Cargo.toml
fi

echo "== lab cleanup"
target/release/sluice-lab cleanup
left=$(lab_namespaces)
if [ -n "$left" ]; then
    echo "test.sh: lab namespaces left behind:" >&2
    echo "$left" >&2
    exit 1
fi
echo "test.sh: all checks passed"
