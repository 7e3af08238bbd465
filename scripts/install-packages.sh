#!/usr/bin/env bash
# Installs what grexal-sidecar needs on Debian 12, as root. One script shared by the
# desktop sandbox image (images/desktop.Dockerfile) and the test setup, so both run the
# same packages.
#
#   scripts/install-packages.sh runtime   # what a desktop sandbox image needs
#   scripts/install-packages.sh build     # what building the daemon and scripts/demo.sh need:
#                                         # a C linker when `cc` is missing (gcc, libc6-dev:
#                                         # rustc links with `cc`, which rustup does not
#                                         # install) and python3 (the example agents)
#   scripts/install-packages.sh demo      # build + runtime + the test tools (the takeover demo)
#   scripts/install-packages.sh test      # demo + Python's cryptography and the node modules
#                                         # of the headless viewer (needs Node.js >= 20 and npm)
#
# The profile is required: none is picked for you. It runs from any directory; the test
# profile's node modules go into tests/e2e of the clone the script is in.
set -euo pipefail

usage() {
  echo "usage: $0 PROFILE, one of: runtime (the desktop image), build (building and" \
    "scripts/demo.sh), demo (the takeover demo), test (scripts/test.sh)" >&2
  exit 64
}
[ $# -eq 1 ] || usage
profile=$1
# The clone this script is in (only the test profile uses it: the image copies the script
# alone).
repo=$(cd "$(dirname "$0")/.." && pwd)
# fonts-liberation: fonts with Arial's, Times New Roman's and Courier New's metrics, which
# login pages ask for by name. python3: the desktop image's default command runs it.
runtime_pkgs=(xvfb x11vnc tigervnc-standalone-server chromium novnc fonts-dejavu-core
  fonts-liberation ca-certificates python3)
test_pkgs=(websockify x11-utils xdotool curl util-linux iproute2 systemd procps python3-pip)
build_pkgs=(python3)
# Any C compiler driver named `cc` will do; only when there is none is gcc installed.
command -v cc >/dev/null 2>&1 || build_pkgs+=(gcc libc6-dev)

case "$profile" in
  runtime) pkgs=("${runtime_pkgs[@]}") ;;
  build) pkgs=("${build_pkgs[@]}") ;;
  demo | test) pkgs=("${build_pkgs[@]}" "${runtime_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) usage ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-packages: missing ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "install-packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$profile" = test ]; then
  # Python's `cryptography` (with HPKE) checks our bundle format independently.
  if ! python3 -c 'import cryptography.hazmat.primitives.hpke' 2>/dev/null; then
    echo "install-packages: installing Python cryptography"
    python3 -m pip install --quiet --upgrade 'cryptography>=47' 2>/dev/null \
      || python3 -m pip install --quiet --upgrade --break-system-packages 'cryptography>=47'
  fi
  # playwright-core drives the system Chromium as the takeover viewer (no browser download).
  e2e=$repo/tests/e2e
  if [ ! -f "$e2e/package.json" ]; then
    echo "install-packages: the test profile needs the clone's tests/e2e; $e2e/package.json is missing" >&2
    exit 1
  fi
  if [ ! -d "$e2e/node_modules/playwright-core" ]; then
    # Debian 12's own nodejs is 18 and comes without npm; playwright-core needs 20.
    node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$node_major" -lt 20 ] || ! command -v npm >/dev/null; then
      echo "install-packages: the headless viewer (tests/e2e) needs Node.js >= 20 with npm;" \
        "found node $(node --version 2>/dev/null || echo none), npm $(npm --version 2>/dev/null || echo none)." \
        "Install Node.js 20 or later (nodejs.org or NodeSource; Debian 12's is 18) and run again." >&2
      exit 1
    fi
    echo "install-packages: installing tests/e2e node modules"
    (cd "$e2e" && npm ci --no-audit --no-fund --silent)
  fi
fi
