#!/usr/bin/env bash
# The whole cycle on one machine, as the platform and the sandbox would run it:
#   1. the platform and the sandbox each make a key pair,
#   2. the platform seals the user's credentials for this one sandbox,
#   3. the daemon opens the bundle, writes files and env, serves the socket,
#   4. the example agent (examples/agent/agent.py) reads all three pre-collected modes.
#
#   scripts/demo.sh            # the pre-collected modes
#   scripts/demo.sh takeover   # a browser_login takeover on a desktop sandbox (you log in)
#   scripts/demo.sh takeover --headless   # the same, unattended (a headless viewer logs in)
#
# As root it installs what it needs first (scripts/install-packages.sh build: a C linker
# when `cc` is missing, python3); the takeover demo installs its own (demo-takeover.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = takeover ]; then
  shift
  exec scripts/demo-takeover.sh "$@"
fi

command -v cargo >/dev/null || { echo "$(basename "$0"): needs a Rust toolchain (rustup.rs: Rust >= 1.85, with rustfmt and clippy)" >&2; exit 1; }
# As root it installs what it needs: a C linker for rustc (when `cc` is missing) and python3.
if [ "$(id -u)" = 0 ]; then
  scripts/install-packages.sh build
fi
command -v cc >/dev/null || { echo "demo: rustc needs a C linker, cc; run as root once (it installs gcc) or: scripts/install-packages.sh build" >&2; exit 1; }
command -v python3 >/dev/null || { echo "demo: python3 is needed for the example agent; run as root once or: scripts/install-packages.sh build" >&2; exit 1; }
echo "== building grexal-sidecar"
cargo build --quiet --locked
bin=${CARGO_TARGET_DIR:-$PWD/target}/debug/grexal-sidecar

work=$(mktemp -d /tmp/grexal-demo.XXXXXX)
chmod 755 "$work"
cp -r examples/agent "$work/agent"
chmod -R a+rX "$work/agent"

echo "== 1. keys: the platform signs, the sandbox decrypts"
"$bin" keygen --kind platform --out-dir "$work/platform"
"$bin" keygen --kind sandbox --out-dir "$work/sandbox"

echo "== 2. the platform seals examples/agent/credentials.json for sandbox demo-sandbox"
"$bin" seal --credentials examples/agent/credentials.json --sandbox-id demo-sandbox \
  --sandbox-pub "$work/sandbox/sandbox.pub" --platform-key "$work/platform/platform.key" \
  --version 1 --expires-in 600 --out "$work/bundle"

user_args=()
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
  user_args=(--agent-user nobody)   # the agent runs unprivileged; files are owned by it
fi

echo "== 3+4. the daemon opens the bundle, writes credentials, then starts the agent"
set +e
"$bin" run --sandbox-id demo-sandbox \
  --manifest "$work/agent/grexal.json" \
  --sandbox-key "$work/sandbox/sandbox.key" \
  --platform-key "$work/platform/platform.pub" \
  --bundle "$work/bundle" \
  --socket "$work/run/sidecar.sock" \
  --credentials-dir "$work/grexal" \
  --env-file "$work/run/agent.env" \
  "${user_args[@]}" \
  -- python3 "$work/agent/agent.py"
code=$?
set -e
echo "== the agent exited with $code; the daemon wiped the credentials on exit:"
if [ -e "$work/grexal" ]; then ls -la "$work/grexal"; else echo "   $work/grexal is gone"; fi
rm -rf "$work"
exit $code
