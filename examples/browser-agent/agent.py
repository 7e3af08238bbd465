"""An example browser_login agent, standard library only.

    python3 agent.py LOGIN_URL [GO_FILE]

It drives the sandbox's Chromium over CDP (GREXAL_BROWSER_CDP_URL), opens the login page,
asks for a takeover (POST /v1/takeovers on the sidecar's socket), waits until the user has
logged in (GET /v1/takeovers/{id}/wait, a long poll), then prints the logged-in page.
With GO_FILE it first waits for that file to exist (the demo creates it once it listens to
the platform's events, which are not stored for late subscribers).
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


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def sidecar(method, path, body=None, timeout=30):
    """One request to grexal-sidecar on GREXAL_SIDECAR_SOCKET; (status, JSON)."""
    conn = UnixHTTPConnection(os.environ["GREXAL_SIDECAR_SOCKET"], timeout)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    return resp.status, json.loads(raw) if raw else None


class Cdp:
    """A CDP session on one page over a minimal WebSocket client (RFC 6455)."""

    def __init__(self, ws_url):
        parts = urllib.parse.urlsplit(ws_url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            byte = self.sock.recv(1)
            if not byte:
                raise OSError("CDP handshake failed")
            head += byte
        if not head.startswith(b"HTTP/1.1 101"):
            raise OSError("CDP refused the WebSocket")
        self.next_id = 0

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise OSError("CDP connection closed")
            buf += chunk
        return buf

    def _send(self, text):
        payload, mask = text.encode(), os.urandom(4)
        n = len(payload)
        head = (struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else
                struct.pack("!BBH", 0x81, 0xFE, n) if n < 65536 else
                struct.pack("!BBQ", 0x81, 0xFF, n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _recv(self):
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._exact(8))[0]
            payload = self._exact(n)
            if b0 & 0x0F == 0x8:
                raise OSError("CDP connection closed")
            message += payload
            if b0 & 0x80:
                return json.loads(message)

    def call(self, method, **params):
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = self._recv()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error'].get('message')}")
                return msg["result"]

    def evaluate(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def goto(self, url):
        self.evaluate("window.__old = true")
        self.call("Page.navigate", url=url)
        for _ in range(400):
            try:
                if self.evaluate("document.readyState === 'complete' && !window.__old"):
                    return
            except (RuntimeError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{url} did not load")


def main():
    login_url = sys.argv[1]
    status, browser = sidecar("GET", "/v1/browser")
    if status != 200:
        sys.exit(f"agent: no browser here ({browser['error']['code']}): needs runtime.sandbox_template = desktop")
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(browser["cdp_http_url"]).netloc, timeout=10)
    conn.request("GET", "/json/list")
    page = next(t for t in json.loads(conn.getresponse().read()) if t["type"] == "page")
    cdp = Cdp(page["webSocketDebuggerUrl"])
    if len(sys.argv) > 2:
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.05)

    print(f"agent: opening {login_url}", flush=True)
    cdp.goto(login_url)
    status, takeover = sidecar("POST", "/v1/takeovers", {
        "connection_id": CONNECTION,
        "reason": "Please log in to Example Site so I can read your dashboard.",
        "timeout_seconds": 600,
    })
    if status != 201:
        sys.exit(f"agent: takeover refused: {takeover['error']['code']}")
    print(f"agent: asked for a takeover ({takeover['takeover_id']}); waiting for the user...", flush=True)
    while True:
        status, waited = sidecar("GET", f"/v1/takeovers/{takeover['takeover_id']}/wait?timeout_seconds=30",
                                 timeout=60)
        if status != 200:
            sys.exit(f"agent: the takeover ended without a login: {waited['error']['code']}")
        if waited["state"] == "ended":
            break
    print(f"agent: the user is done (completed by {waited['by']}); resuming", flush=True)
    # The button may be pressed while the login's redirect is still loading: let it settle.
    login_path = urllib.parse.urlsplit(login_url).path
    for _ in range(200):
        try:
            here = cdp.evaluate("[location.pathname, document.readyState]")
        except (RuntimeError, KeyError):
            here = None
        if here and here[1] == "complete" and here[0] != login_path:
            break
        time.sleep(0.05)
    text = cdp.evaluate("document.body.innerText").strip()
    print(f"agent: the page at {cdp.evaluate('location.href')} now says:", flush=True)
    for line in filter(None, (l.strip() for l in text.splitlines())):
        print(f"agent:   {line}", flush=True)
    sys.exit(0 if text.startswith("Welcome,") else 1)


if __name__ == "__main__":
    main()
