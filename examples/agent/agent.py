"""The example agent: reads every pre-collected connection the way an agent would.

Run by ``scripts/demo.sh`` under ``grexal-sidecar run`` (sealed bundle) and works
unchanged under ``grexal-sidecar dev`` (plaintext .grexal/connections.json).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grexal_client import Sidecar  # noqa: E402


def masked(value):
    value = value or ""
    return value[:4] + "…" + f"({len(value)} chars)" if len(value) > 4 else "****"


def main():
    sidecar = Sidecar()
    print(f"agent: running as uid {os.getuid()}, socket {sidecar.path}")
    for c in sidecar.connections():
        print(f"agent: declared {c['id']:<11} {c['auth_mode']:<15} state={c['state']}")

    openai = sidecar.connect("openai")
    print(f"agent: openai.api_key        = {masked(openai.get('api_key'))} (ctx.connect)")
    print(f"agent: env OPENAI_API_KEY    = {masked(os.environ.get('OPENAI_API_KEY'))} (delivery: env)")

    smtp = sidecar.connect("smtp")
    print(f"agent: smtp.username         = {smtp.get('username')}")
    print(f"agent: smtp.password         = {masked(smtp.get('password'))}")

    github = sidecar.connect("github")
    print(f"agent: github.token_type     = {github.get('token_type')}, scope = {github.get('scope')!r}")
    print(f"agent: github.access_token   = {masked(github.get('access_token'))}")

    key = sidecar.connect("deploy_key")
    path = key.get("file_path")
    st = os.stat(path)
    with open(path, "rb") as f:
        first_line = f.readline().decode().strip()
    print(f"agent: deploy_key.file_path  = {path} (mode {oct(st.st_mode & 0o777)}, {key.get('size')} bytes, {key.get('mime_type')})")
    print(f"agent: deploy_key first line = {first_line}")
    # delivery "file": each field is a file beside the other connections' directories.
    smtp_dir = os.path.join(os.path.dirname(os.path.dirname(path)), "smtp")
    print(f"agent: files for smtp        = {sorted(os.listdir(smtp_dir))} (delivery: file)")
    print("agent: all three pre-collected modes read; exiting 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
