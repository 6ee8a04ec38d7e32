#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, conformance against a
# real etcd over mutual TLS, multi-member etcd faults, simulator rounds, CLI tests).
# Tests start the etcd servers they need themselves, on free loopback ports, in temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== alert rules (promtool)"
promtool check rules deploy/prometheus/huione.rules.yml
promtool test rules deploy/prometheus/huione.rules.test.yml
echo "== cargo test"
# Two test binaries at a time: the machine has 2 cores, and the etcd fault tests are
# timing-sensitive.
# (It includes a nemesis campaign with 2 minutes of faults on real processes, every machine
# in its own network namespace: crates/nemesis/tests/smoke.rs.)
cargo test --workspace --locked --no-fail-fast -- --test-threads 2
