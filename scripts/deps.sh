#!/usr/bin/env bash
# Installs what huione needs to build and test on Debian: etcd (server + etcdctl),
# protoc (etcd-client's build needs it), curl, iproute2, faketime, prometheus, python3-venv (for the
# test that reads our RPC with Solana's Python client library), and what packaging needs (dpkg,
# binutils, systemd for systemd-analyze). Idempotent; runs apt only if
# something is missing.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The clock tests run a validator with its wall clock shifted.
command -v faketime >/dev/null 2>&1 || need+=(faketime)
# promtool checks and unit-tests the alert rules; the server runs in the alerting test.
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# scripts/package.sh and its test: dpkg-deb, strip/objdump, and systemd-analyze to check the units.
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
{ command -v strip && command -v objdump; } >/dev/null 2>&1 || need+=(binutils)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The RPC compatibility test builds a venv with the Python Solana client library.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing packages: ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "installing: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
        [[ -x "$d/cargo" ]] && export PATH="$d:$PATH"
    done
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (1.89 or newer) with rustup first" >&2
    exit 1
fi
