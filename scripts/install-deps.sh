#!/bin/sh
# Installs the system packages Sluice needs on Debian 12 (as root). Idempotent:
# when everything is already installed it returns without touching apt.
set -eu

PACKAGES="clang llvm libbpf-dev libelf-dev zlib1g-dev m4 pkg-config linux-libc-dev
iproute2 iputils-ping iperf3 ethtool netsniff-ng bpftool procps util-linux
iptables nftables sockperf
containerd containernetworking-plugins busybox-static
python3 curl nginx-light
dnsmasq-base
chromium prometheus"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    case "$status" in
        ii*) ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing:$missing; run as root (sudo $0)" >&2
    exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y --no-install-recommends $missing
