#!/usr/bin/env bash
# Every benchmark, in one run, with its peer or floor measured alongside (ratios, not
# absolute times: these machines are shared and noisy). Figures go to docs/performance.md.
#
#   scripts/bench.sh            # all of them
#   scripts/bench.sh boot       # or one: boot | connect | relay
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
command -v cargo >/dev/null || { echo "$(basename "$0"): needs a Rust toolchain (rustup.rs: Rust >= 1.85, with rustfmt and clippy)" >&2; exit 1; }
scripts/install-packages.sh test >/dev/null
cargo build --release --locked --bins --examples 2>&1 | tail -1
release=${CARGO_TARGET_DIR:-$PWD/target}/release
bin=$release/grexal-sidecar

if [ "$what" = all ] || [ "$what" = boot ]; then
  echo "== boot to ready (50 connections' files written), every process on CPU 0"
  "$release"/examples/boot_bench --runs 30 --bin "$bin"
fi

if [ "$what" = all ] || [ "$what" = connect ]; then
  echo "== ctx.connect over the socket of a real daemon (both on CPU 0) vs a tmpfs file read"
  work=$(mktemp -d /tmp/grexal-bench.XXXXXX)
  "$bin" keygen --kind sandbox --out-dir "$work" >/dev/null
  "$bin" keygen --kind platform --out-dir "$work" >/dev/null
  "$bin" seal --credentials examples/agent/credentials.json --sandbox-id bench \
    --sandbox-pub "$work/sandbox.pub" --platform-key "$work/platform.key" --out "$work/bundle" >/dev/null
  # Latency with daemon and clients pinned to one CPU; throughput with both cores.
  for pin in "taskset -c 0" ""; do
  echo "-- ${pin:-unpinned (2 cores)}"
  $pin "$bin" run --sandbox-id bench --manifest examples/agent/grexal.json \
    --sandbox-key "$work/sandbox.key" --platform-key "$work/platform.pub" --bundle "$work/bundle" \
    --socket "$work/sidecar.sock" --credentials-dir "$work/creds" --env-file "$work/agent.env" \
    --log warn --api-max-connections 256 &
  daemon=$!
  for _ in $(seq 100); do [ -S "$work/sidecar.sock" ] && break; sleep 0.05; done
  $pin "$release"/examples/connect_bench "$work/sidecar.sock" openai || true
  kill -TERM "$daemon"; wait "$daemon" || true
  done
  rm -rf "$work"
fi

if [ "$what" = all ] || [ "$what" = relay ]; then
  echo "== relay: throughput, round trip, CPU, memory vs websockify and direct TCP, on CPU 0"
  echo "-- upstream on loopback TCP (websockify's usual case)"
  "$release"/examples/relay_bench --peer websockify
  echo "-- upstream on a Unix socket (Xvnc's, the daemon's default)"
  "$release"/examples/relay_bench --peer websockify --upstream unix
fi
