"""An example browser_login agent, standard library only.

    python3 agent.py LOGIN_URL [GO_FILE]

It drives the sandbox's Chromium over CDP (GREXAL_BROWSER_CDP_URL), opens the login page,
asks for a takeover (POST /v1/takeovers on the sidecar's socket), waits until the user has
logged in (GET /v1/takeovers/{id}/wait, a long poll), then prints the logged-in page.
With GO_FILE it first waits for that file to exist (the demo creates it once it listens to
the platform's events, which are not stored for late subscribers).
"""

import os
import sys
import time
import urllib.parse

from sidecar_client import Cdp, page_ws_url, sidecar

CONNECTION = "example_site"


def main():
    login_url = sys.argv[1]
    status, browser = sidecar("GET", "/v1/browser")
    if status != 200:
        sys.exit(f"agent: no browser here ({browser['error']['code']}): needs runtime.sandbox_template = desktop")
    cdp = Cdp(page_ws_url(browser["cdp_http_url"]))
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
        takeover_id = urllib.parse.quote(takeover["takeover_id"], safe="")
        status, waited = sidecar("GET", f"/v1/takeovers/{takeover_id}/wait?timeout_seconds=30",
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
