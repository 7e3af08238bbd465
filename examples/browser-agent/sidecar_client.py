"""What a browser_login agent needs, standard library only: requests to grexal-sidecar on
its Unix socket (GREXAL_SIDECAR_SOCKET), and a CDP session on one page of the sandbox's
Chromium over a minimal WebSocket client (RFC 6455).

Used by agent.py here and by the agent of tests/takeover_e2e.rs.
"""

import base64
import http.client
import json
import os
import socket
import struct
import time
import urllib.parse

# Larger frames are refused: CDP answers here are small.
MAX_FRAME = 16 * 1024 * 1024


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
    headers = {"Content-Type": "application/json"} if data else {}
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    return resp.status, json.loads(raw) if raw else None


class WebSocket:
    """A client: the handshake, masked text frames out, text messages in."""

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
            if n > MAX_FRAME:
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


def page_ws_url(cdp_http_url):
    """The CDP WebSocket URL of the browser's first page (not the omnibox popup & co.)."""
    parts = urllib.parse.urlsplit(cdp_http_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/json/list")
    targets = json.loads(conn.getresponse().read())
    conn.close()
    pages = [t for t in targets if t.get("type") == "page"]
    if not pages:
        raise RuntimeError(f"no page target among {[t.get('type') for t in targets]}")
    return pages[0]["webSocketDebuggerUrl"]


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
        """Navigates and waits for the new document to be complete; returns where it landed."""
        # A mark on the old document: the new one has none, so "complete" is the new page's.
        self.evaluate("window.__oldDocument = true")
        self.call("Page.navigate", url=url)
        end = time.time() + deadline_s
        while time.time() < end:
            try:
                state = self.evaluate("[location.href, document.readyState, !!window.__oldDocument]")
            except (RuntimeError, KeyError):
                state = None  # the context is being replaced mid-navigation
            if state and state[1] == "complete" and not state[2]:
                return state[0]
            time.sleep(0.05)
        raise RuntimeError(f"{url} did not load within {deadline_s} s")
