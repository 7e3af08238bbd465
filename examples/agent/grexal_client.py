"""A minimal client of grexal-sidecar's socket API, standard library only.

It does what the SDK's ``ctx.connect(id)`` does: one HTTP/1.1 request over the Unix
socket named by ``GREXAL_SIDECAR_SOCKET``, and an object with ``.get(field)``.
"""

import http.client
import json
import os
import socket
import urllib.parse


class GrexalError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Connection:
    def __init__(self, values):
        self._values = values

    def get(self, field):
        return self._values.get(field)

    def keys(self):
        return list(self._values)


class Sidecar:
    def __init__(self, path=None):
        self.path = path or os.environ.get("GREXAL_SIDECAR_SOCKET")
        if not self.path:
            raise GrexalError("missing_env", "GREXAL_SIDECAR_SOCKET is not set")

    def request(self, method, target, body=None, timeout=10):
        conn = _UnixConnection(self.path, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            payload = json.loads(resp.read() or b"null")
        finally:
            conn.close()
        if resp.status >= 400:
            err = (payload or {}).get("error", {})
            raise GrexalError(err.get("code", "http_%d" % resp.status), err.get("message", ""))
        return payload

    def connect(self, connection_id):
        # Percent-encoded, "/" included: an id with "?", "#" or "/" in it must name no
        # connection, never another one ("openai?x" would otherwise ask for "openai").
        path = "/v1/connections/" + urllib.parse.quote(connection_id, safe="")
        return Connection(self.request("GET", path))

    def connections(self):
        return self.request("GET", "/v1/connections")["connections"]
