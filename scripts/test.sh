#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, property and integration tests against the
# real binary and the real desktop stack. Installs what it needs first (as root on a
# fresh Debian 12 machine).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "$(basename "$0"): needs a Rust toolchain (rustup.rs: Rust >= 1.85, with rustfmt and clippy)" >&2; exit 1; }
scripts/install-packages.sh test

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Integration tests start Chromium, Xvfb and friends; two cores do not take many at once.
# (Examples are benchmarks: clippy above builds them; they hold no tests.)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --lib --bins --tests -- --test-threads=2 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
