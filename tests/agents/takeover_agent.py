"""The agent of tests/takeover_e2e.rs: a browser_login agent with the standard library only.

    python3 takeover_agent.py SITE_URL GO_FILE

Drives the sandbox's Chromium over CDP (with examples/browser-agent/sidecar_client.py),
asks for two takeovers and checks the login worked each time:

  round 1: /login, POST /v1/takeovers, long-poll wait; the user logs in as alice and
           presses "I've logged in" -> completed by user; the page says "Welcome, alice".
  round 2: /logout, /login, a takeover WITH a success condition; the user logs in as bob
           and presses nothing -> completed by condition; the page says "Welcome, bob".

Progress goes to stdout as JSON lines ({"event": ...}); the test sequences on them. Exit
code 9 when both rounds passed; 1 with {"event": "fail"} otherwise.
"""

import json
import os
import sys
import time

# The example agent's client (copied beside this file by the test).
from sidecar_client import Cdp, page_ws_url, sidecar

CONNECTION = "example_site"
EXIT_PASSED = 9


def say(event, **fields):
    fields["event"] = event
    fields["at"] = time.time()
    print(json.dumps(fields), flush=True)


def fail(message, **fields):
    say("fail", message=message, **fields)
    sys.exit(1)


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
    try:
        run()
    except (OSError, RuntimeError) as e:
        fail(f"{type(e).__name__}: {e}")


def run():
    global SITE
    SITE, go_file = sys.argv[1], sys.argv[2]
    status, browser = sidecar("GET", "/v1/browser")
    if status != 200:
        fail("GET /v1/browser refused", status=status, body=browser)
    if browser["cdp_http_url"] != os.environ.get("GREXAL_BROWSER_CDP_URL"):
        fail("GET /v1/browser disagrees with GREXAL_BROWSER_CDP_URL", browser=browser)
    say("browser", cdp_http_url=browser["cdp_http_url"])
    cdp = Cdp(page_ws_url(browser["cdp_http_url"]))
    # The platform (the test) subscribes to the event stream first, to see every event.
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
