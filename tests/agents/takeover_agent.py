"""The agent of tests/takeover_e2e.rs: a browser_login agent with the standard library only.

    python3 takeover_agent.py SITE_URL GO_FILE

Drives the sandbox's Chromium over CDP (a minimal WebSocket client below), asks for two
takeovers and checks the login worked each time:

  round 1: /login, POST /v1/takeovers, long-poll wait; the user logs in as alice and
           presses "I've logged in" -> completed by user; the page says "Welcome, alice".
  round 2: /logout, /login, a takeover WITH a success condition; the user logs in as bob
           and presses nothing -> completed by condition; the page says "Welcome, bob".

Progress goes to stdout as JSON lines ({"event": ...}); the test sequences on them. Exit
code 9 when both rounds passed; 1 with {"event": "fail"} otherwise.
"""

import base64
import http.client
import json
import os
import socket
import struct
import sys
import time
import urllib.parse

CONNECTION = "example_site"
EXIT_PASSED = 9


def say(event, **fields):
    fields["event"] = event
    fields["at"] = time.time()
    print(json.dumps(fields), flush=True)


def fail(message, **fields):
    say("fail", message=message, **fields)
    sys.exit(1)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def sidecar(method, path, body=None, timeout=30):
    conn = UnixHTTPConnection(os.environ["GREXAL_SIDECAR_SOCKET"], timeout)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    return resp.status, json.loads(raw) if raw else None


# ---- a minimal WebSocket client (RFC 6455): handshake, masked text frames, reading ----

class WebSocket:
    def __init__(self, url, timeout=15):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + ("?" + parts.query if parts.query else "")
        self.sock.sendall(
            (f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk or len(head) > 8192:
                raise OSError("websocket handshake failed")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise OSError("websocket refused: " + head.split(b"\r\n")[0].decode(errors="replace"))

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise OSError("websocket closed")
            buf += chunk
        return buf

    def send_text(self, text):
        payload = text.encode()
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv_text(self):
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._exact(8))[0]
            if n > 16 * 1024 * 1024:
                raise OSError("websocket frame too large")
            payload = self._exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise OSError("websocket closed by peer")
            if opcode in (0x9, 0xA):  # ping/pong: CDP sends none; ignore
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()

    def close(self):
        self.sock.close()


class Cdp:
    """One page target's CDP session."""

    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send_text(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv_text())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def goto(self, url, deadline_s=20):
        # A mark on the old document: the new one has none, so "complete" is the new page's.
        self.evaluate("window.__e2eOld = true")
        self.call("Page.navigate", url=url)
        end = time.time() + deadline_s
        while time.time() < end:
            try:
                state = self.evaluate("[location.href, document.readyState, !!window.__e2eOld]")
            except (RuntimeError, KeyError):
                state = None  # the context is being replaced mid-navigation
            if state and state[1] == "complete" and not state[2]:
                return state[0]
            time.sleep(0.05)
        fail("navigation did not complete", url=url)


def page_ws_url(cdp_http_url):
    parts = urllib.parse.urlsplit(cdp_http_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/json/list")
    targets = json.loads(conn.getresponse().read())
    conn.close()
    pages = [t for t in targets if t.get("type") == "page"]
    if not pages:
        fail("no page target", targets=[t.get("type") for t in targets])
    return pages[0]["webSocketDebuggerUrl"]


def field_rects(cdp):
    # Screen coordinates of the two inputs: window origin + browser chrome + page rect.
    return cdp.evaluate("""(() => {
        const chrome = window.outerHeight - window.innerHeight;
        const r = (id) => { const b = document.getElementById(id).getBoundingClientRect();
          return [Math.round(window.screenX + b.left), Math.round(window.screenY + chrome + b.top),
                  Math.round(b.width), Math.round(b.height)]; };
        return {username: r('username'), password: r('password')};
    })()""")


def takeover_round(cdp, round_no, body, expect_by, expect_user):
    cdp.goto(SITE + "/login")
    posted_at = time.time()
    status, info = sidecar("POST", "/v1/takeovers", body)
    if status != 201:
        fail("takeover request refused", status=status, body=info)
    tid = info["takeover_id"]
    say("takeover", round=round_no, id=tid, posted_at=posted_at, viewer_url=info["viewer_url"])
    # After the request: the browser was brought to the front (maximised) by then.
    say("fields", round=round_no, rects=field_rects(cdp))
    deadline = time.time() + 120
    while True:
        status, waited = sidecar("GET", f"/v1/takeovers/{tid}/wait?timeout_seconds=20", timeout=40)
        if status != 200 or waited.get("state") == "ended" or time.time() > deadline:
            break
    say("waited", round=round_no, id=tid, status=status, body=waited)
    if status != 200 or waited.get("outcome") != "completed" or waited.get("by") != expect_by:
        fail("takeover did not complete as expected", status=status, body=waited)
    text = cdp.evaluate("document.body.innerText")
    url = cdp.evaluate("location.href")
    say("page", round=round_no, url=url, text=text)
    if f"Welcome, {expect_user}" not in (text or ""):
        fail("not logged in after the takeover", text=text)


def main():
    global SITE
    SITE, go_file = sys.argv[1], sys.argv[2]
    status, browser = sidecar("GET", "/v1/browser")
    if status != 200:
        fail("GET /v1/browser refused", status=status, body=browser)
    if browser["cdp_http_url"] != os.environ.get("GREXAL_BROWSER_CDP_URL"):
        fail("GET /v1/browser disagrees with GREXAL_BROWSER_CDP_URL", browser=browser)
    say("browser", cdp_http_url=browser["cdp_http_url"])
    cdp = Cdp(page_ws_url(browser["cdp_http_url"]))
    # The platform (the test) subscribes to the event stream first: events are not kept.
    end = time.time() + 60
    while not os.path.exists(go_file):
        if time.time() > end:
            fail("no go file")
        time.sleep(0.02)

    takeover_round(cdp, 1, {"connection_id": CONNECTION,
                            "reason": "Please log in to Example Site so I can read your inbox"},
                   "user", "alice")
    if not cdp.goto(SITE + "/logout").endswith("/login"):
        fail("logout did not lead back to the login page")
    condition = {"url_pattern": SITE + "/welcome*",
                 "cookie": {"name": "e2e_session", "domain": "127.0.0.1"}}
    takeover_round(cdp, 2, {"connection_id": CONNECTION, "reason": "Log in once more",
                            "timeout_seconds": 120, "success": condition},
                   "condition", "bob")
    say("passed")
    sys.exit(EXIT_PASSED)


SITE = ""

if __name__ == "__main__":
    main()
