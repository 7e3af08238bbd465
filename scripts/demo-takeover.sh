#!/usr/bin/env bash
# A browser_login takeover on one machine, as the platform, the sandbox and the user would
# run it:
#   1. a local login site on 127.0.0.1 (examples/browser-agent/login_site.py),
#   2. the daemon boots a desktop sandbox (Xvnc + Chromium) for examples/browser-agent,
#   3. the agent opens the login page in the sandbox's Chromium and asks for a takeover,
#   4. the "platform" (this script) reads takeover_requested from the event stream and
#      prints the viewer URL; you open it, log in, and press "I've logged in",
#   5. the agent resumes and prints the logged-in page.
#
#   scripts/demo-takeover.sh              # interactive: you open the viewer URL yourself
#   scripts/demo-takeover.sh --headless   # unattended: a headless Chromium plays the user
#
# As root it installs what it needs (scripts/install-packages.sh demo, or test with --headless:
# Node.js >= 20 with npm must then be there already) first.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

headless=0
case "${1:-}" in
  --headless) headless=1 ;;
  "") ;;
  *) echo "usage: $0 [--headless]" >&2; exit 64 ;;
esac

if [ "$(id -u)" = 0 ]; then
  # The headless user needs the test profile's node modules; a person needs no Node.js.
  if [ "$headless" = 1 ]; then scripts/install-packages.sh test; else scripts/install-packages.sh demo; fi
fi
for tool in cc python3 /usr/bin/Xvnc /usr/bin/chromium /usr/share/novnc/core/rfb.js; do
  command -v "$tool" >/dev/null 2>&1 || [ -e "$tool" ] || {
    echo "demo: $tool is missing; run as root once (it installs packages) or: scripts/install-packages.sh demo" >&2
    exit 1
  }
done
if [ "$headless" = 1 ] && { ! command -v node >/dev/null || [ ! -d tests/e2e/node_modules/playwright-core ]; }; then
  echo "demo: --headless needs node and tests/e2e/node_modules (scripts/install-packages.sh test)" >&2
  exit 1
fi

command -v cargo >/dev/null || { echo "$(basename "$0"): needs a Rust toolchain (rustup.rs: Rust >= 1.85, with rustfmt and clippy)" >&2; exit 1; }
echo "== building grexal-sidecar"
cargo build --quiet --locked
target=${CARGO_TARGET_DIR:-$repo/target}
bin=$target/debug/grexal-sidecar

work=$(mktemp -d /tmp/grexal-takeover-demo.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  # Only what this script started, by PID (the daemon stops its desktop itself).
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
site_port=$(free_port)
control_port=$(free_port)
site=http://127.0.0.1:$site_port

cp -r examples/browser-agent "$work/agent"
rm -rf "$work/agent/__pycache__"
chmod -R a+rX "$work/agent"
# The manifest's login_url is what the viewer shows the user: point it at this run's site.
python3 - "$work/agent/grexal.json" "$site/login" <<'EOF'
import json, sys
path, url = sys.argv[1], sys.argv[2]
m = json.load(open(path))
m["connections"][0]["login_url"] = url
json.dump(m, open(path, "w"), indent=2)
EOF
python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$work/control.token"
chmod 600 "$work/control.token"

echo "== 1. a login site on $site (any username, password demo-password)"
python3 "$work/agent/login_site.py" "$site_port" &
site_pid=$!
pids+=("$site_pid")

user_args=()
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
  user_args=(--agent-user nobody)   # the agent runs unprivileged, as in a sandbox
fi

echo "== 2. the daemon boots a desktop sandbox and starts examples/browser-agent/agent.py"
echo "      (the daemon's log: $work/daemon.log)"
"$bin" run --sandbox-id demo-desktop \
  --manifest "$work/agent/grexal.json" \
  --public-key-out "$work/sandbox.pub" \
  --socket "$work/run/sidecar.sock" \
  --credentials-dir "$work/grexal" \
  --env-file "$work/run/agent.env" \
  --control-listen "127.0.0.1:$control_port" \
  --control-token-file "$work/control.token" \
  --browser-profile "$work/profile" \
  --desktop-run-dir "$work/desktop" \
  --chromium-arg "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1" \
  "${user_args[@]}" \
  -- python3 "$work/agent/agent.py" "$site/login" "$work/go" \
  2>"$work/daemon.log" &
daemon=$!
pids+=("$daemon")

# The platform: subscribes to the event stream, then lets the agent go (events are not
# stored for late subscribers); on takeover_requested it shows the viewer URL, or with
# --headless drives the viewer with tests/e2e/viewer.mjs.
set +e
python3 - "$control_port" "$work/control.token" "$work/go" "$headless" "$repo" "$work" "$target" <<'EOF'
import http.client, json, os, subprocess, sys, time

port, token_file, go_file, headless, repo, work = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5], sys.argv[6]
# Cargo's target dir (CARGO_TARGET_DIR, relative to the repository, or target/).
target = os.path.join(repo, sys.argv[7])
token = open(token_file).read().strip()
deadline = time.time() + 60
while True:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=None)
        conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        if resp.status == 200:
            break
        sys.exit(f"platform: the event stream answered {resp.status}")
    except OSError:
        if time.time() > deadline:
            sys.exit("platform: the control endpoint did not come up; see the daemon's log")
        time.sleep(0.1)
open(go_file, "w").close()
print("== 3. the platform listens to the sandbox's events", flush=True)

def drive(url):
    actions = [
        {"type": "click", "x": 640, "y": 250}, {"type": "type", "text": "demo"},
        {"type": "click", "x": 640, "y": 540}, {"type": "type", "text": "demo-password"},
        {"type": "press", "key": "Enter"},
        {"type": "complete"}, {"type": "wait_state", "state": "ended"},
    ]
    path = os.path.join(work, "actions.json")
    json.dump(actions, open(path, "w"))
    shot = os.path.join(target, "e2e-artifacts", "demo-takeover.png")
    print("   (--headless) a headless Chromium opens the viewer, logs in as 'demo' and presses I've logged in", flush=True)
    out = subprocess.run(["node", os.path.join(repo, "tests/e2e/viewer.mjs"), "--url", url,
                          "--actions", path, "--screenshot", shot],
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"], "HOME": work})
    result = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
    if out.returncode != 0:
        print(f"   the viewer harness failed: {out.stderr.strip()}", flush=True)
    else:
        print(f"   first pixels after {result.get('first_pixels_ms')} ms; the viewer shows: "
              f"{result.get('state')}/{result.get('outcome')}; screenshot: {shot}", flush=True)

def events():
    try:
        yield from resp
    except KeyboardInterrupt:
        sys.exit(130)

name = None
for raw in events():
    line = raw.decode(errors="replace").rstrip("\r\n")
    if line.startswith("event:"):
        name = line[6:].strip()
    elif line.startswith("data:"):
        data = json.loads(line[5:])
        if name == "takeover_requested":
            url = f"{data['viewer_url']}#token={data['control_token']}"
            print("== 4. takeover_requested: the agent needs a human to log in", flush=True)
            print(f"   reason: {data['reason']}", flush=True)
            if headless:
                drive(url)
            else:
                print("", flush=True)
                print("   Open this URL in a browser on this machine:", flush=True)
                print(f"     {url}", flush=True)
                print("   log in as any user (letters and digits) with the password demo-password,", flush=True)
                print("   then press \"I've logged in\". (Ctrl-C to stop.)", flush=True)
                print("   On another machine: ssh -L {0}:127.0.0.1:{0} this-host, then open the same URL.".format(port), flush=True)
                print("   No browser at hand? Run unattended: scripts/demo-takeover.sh --headless", flush=True)
                print("", flush=True)
        elif name == "takeover_ended":
            print(f"== 5. takeover_ended: {data['outcome']} by {data.get('by')}", flush=True)
        elif name == "agent_exited":
            sys.exit(0)
EOF
platform=$?
wait "$daemon"
code=$?
set -e
pids=("$site_pid")   # the daemon and the platform have exited
if [ "$platform" != 0 ] || [ "$code" != 0 ]; then
  echo "== the agent exited with $code; the daemon's log:" >&2
  tail -n 30 "$work/daemon.log" >&2
fi
echo "== the agent exited with $code"
exit "$code"
