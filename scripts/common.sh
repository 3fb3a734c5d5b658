# Shared by demo.sh and test.sh: run from the repository root as root, with cargo.

cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "$0: the lab creates network namespaces; run as root (sudo $0)" >&2
    exit 1
fi

# Build in the default ./target: the scripts run binaries from target/release.
unset CARGO_TARGET_DIR

if ! command -v cargo >/dev/null 2>&1; then
    # sudo resets PATH; use the invoking user's rustup toolchain if there is one.
    if [ -n "${SUDO_USER:-}" ]; then
        user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        if [ -x "$user_home/.cargo/bin/cargo" ]; then
            export PATH="$user_home/.cargo/bin:$PATH"
            export RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
        fi
    fi
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "$0: cargo not found; install Rust 1.95 (rustup) or run: sudo env PATH=\"\$PATH\" $0" >&2
    exit 1
fi
