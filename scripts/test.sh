#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, property and integration tests against the
# real binary and the real desktop stack. Installs what it needs first (as root on a
# fresh Debian 12 machine).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-packages.sh test

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Integration tests start Chromium, Xvfb and friends; two cores do not take many at once.
cargo test --all-targets --locked -- --test-threads=2
