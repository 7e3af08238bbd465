"""The end-to-end test agent: standard library only, over the Unix socket.

Reads every pre-collected mode and checks what ctx.connect returns, the files, their
permissions and ownership, and the env, against the expectations in argv[1]. Exits 7
when everything holds (the test checks that this code comes back through the daemon),
1 with the failures on stderr otherwise.
"""

import http.client
import json
import os
import socket
import stat
import sys


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def get(path):
    conn = UnixHTTP(os.environ["GREXAL_SIDECAR_SOCKET"])
    conn.request("GET", path)
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    return resp.status, body


failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def check_file(path, content, uid):
    try:
        st = os.lstat(path)
    except OSError as e:
        failures.append(f"{path}: {e.strerror}")
        return
    check(stat.S_ISREG(st.st_mode), f"{path} is a regular file")
    check(stat.S_IMODE(st.st_mode) == 0o600, f"{path} mode {oct(st.st_mode)} is 0600")
    check(st.st_uid == uid, f"{path} owned by {st.st_uid}, want {uid}")
    dst = os.lstat(os.path.dirname(path))
    check(stat.S_IMODE(dst.st_mode) == 0o700, f"{os.path.dirname(path)} mode is 0700")
    check(dst.st_uid == uid, f"{os.path.dirname(path)} owned by agent")
    with open(path, "rb") as f:
        check(f.read() == content, f"{path} content")


def main():
    expect = json.load(open(sys.argv[1]))
    uid = os.getuid()
    check(uid == expect["uid"], f"agent runs as uid {uid}, want {expect['uid']}")
    check(os.environ.get("HOME") == expect["home"], "HOME is the agent user's")
    for var in expect["absent_env"]:
        check(var not in os.environ, f"daemon variable {var} leaked into the agent's env")

    status, listing = get("/v1/connections")
    check(status == 200, "list connections")
    states = {c["id"]: (c["auth_mode"], c["state"]) for c in listing["connections"]}
    check(states == {k: tuple(v) for k, v in expect["states"].items()}, f"states {states}")

    # secret_input, delivery env: exactly the declared fields, and env vars.
    status, body = get("/v1/connections/openai")
    check(status == 200 and body == expect["openai"], "openai fields exactly as declared")
    for name, value in expect["openai_env"].items():
        check(os.environ.get(name) == value, f"env {name}")

    # secret_input, delivery file: fields and one file per field.
    status, body = get("/v1/connections/smtp")
    check(status == 200 and body == expect["smtp"], "smtp fields")
    for field, value in expect["smtp"].items():
        check_file(os.path.join(expect["root"], "smtp", field), value.encode(), uid)

    # oauth_redirect: the token fields and nothing else.
    status, body = get("/v1/connections/github")
    check(status == 200 and body == expect["github"], f"github token fields {sorted(body)}")

    # file_upload: the file at /tmp/grexal/{id}/{original_filename}.
    status, body = get("/v1/connections/deploy_key")
    check(status == 200, "deploy_key")
    want_path = os.path.join(expect["root"], "deploy_key", expect["deploy_key"]["filename"])
    check(body.get("file_path") == want_path, f"file_path {body.get('file_path')}")
    check(body.get("filename") == expect["deploy_key"]["filename"], "filename")
    check(body.get("size") == len(expect["deploy_key"]["content"]), "size")
    check(body.get("mime_type") == expect["deploy_key"]["mime_type"], "mime_type")
    check_file(want_path, expect["deploy_key"]["content"].encode(), uid)

    # Grexal's error codes.
    status, body = get("/v1/connections/not_declared")
    check(status == 404 and body["error"]["code"] == "connection_not_found", "connection_not_found")
    status, body = get("/v1/connections/bank")
    check(body.get("error", {}).get("code") == "invalid_auth_mode", "invalid_auth_mode for browser_login")

    if failures:
        for f in failures:
            print("FAIL:", f, file=sys.stderr)
        return 1
    print("check_all: every mode as expected")
    return 7


if __name__ == "__main__":
    sys.exit(main())
