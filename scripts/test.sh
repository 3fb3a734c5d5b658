#!/bin/sh
# Everything CI checks: formatting, lints, build, all tests (the lab tests run as
# root in network namespaces against the release engine), fuzz targets build,
# and no lab namespace left behind.
set -eu
. "$(dirname "$0")/common.sh"

lab_namespaces() {
    ip netns list | awk '{print $1}' | grep -E '^(sl[0-9]+x[0-9]+-|slcni[0-9]+-)' || true
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
    echo "== fuzz targets: build, corpus check, and a short run of each"
    cargo build --release --manifest-path fuzz/Cargo.toml
    cargo test --release --manifest-path fuzz/Cargo.toml
    # Stable builds carry no coverage instrumentation: this replays the seed
    # corpus and then tries 20000 random mutations per target, which still
    # catches panics. Real fuzzing: see fuzz/README.md (cargo +nightly fuzz run).
    for target in wire_parse pipeline_process pipeline_policy; do
        scratch=$(mktemp -d)
        cp "fuzz/corpus/$target"/* "$scratch"/
        "fuzz/target/release/$target" -runs=20000 -max_total_time=60 "$scratch" >/dev/null 2>&1 \
            || { echo "fuzz target $target failed" >&2; rm -rf "$scratch"; exit 1; }
        rm -rf "$scratch"
    done
fi

echo "== lab cleanup"
target/release/sluice-lab cleanup
left=$(lab_namespaces)
if [ -n "$left" ]; then
    echo "test.sh: lab namespaces left behind:" >&2
    echo "$left" >&2
    exit 1
fi
# No steering program may outlive the engine that attached it.
if command -v bpftool >/dev/null 2>&1; then
    xdp_left=$(bpftool prog show 2>/dev/null | grep -E ' name sluice_' || true)
    if [ -n "$xdp_left" ]; then
        echo "test.sh: XDP programs left behind:" >&2
        echo "$xdp_left" >&2
        exit 1
    fi
fi
echo "test.sh: all checks passed"
