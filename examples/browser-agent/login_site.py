"""A local login site for the takeover demo (standard library only).

    python3 login_site.py PORT

GET /login: a form (large fields at fixed positions, so a scripted click lands in them);
POST /login: any username of letters and digits with the password `demo-password` sets a
session cookie and redirects to /welcome ("Welcome, <user>"); /logout clears it.
Listens on 127.0.0.1 only.
"""

import http.server
import re
import sys
import urllib.parse

PASSWORD = "demo-password"
COOKIE = "demo_session"

LOGIN = """<!doctype html><html><head><meta charset="utf-8"><title>Example Site - log in</title>
<style>
 html, body { margin: 0; font: 28px sans-serif; background: #f4f1e8; }
 label { position: absolute; left: 16px; font-size: 22px; color: #444; }
 input { position: absolute; left: 0; width: 100%; box-sizing: border-box; height: 220px;
         font-size: 64px; padding: 0 24px; border: 4px solid #3366aa; background: #fff; }
 #username { top: 40px; } #password { top: 330px; }
 #l-user { top: 8px; } #l-pass { top: 298px; }
 button { position: absolute; top: 580px; left: 16px; font-size: 24px; padding: 8px 32px; }
 .note { position: absolute; top: 640px; left: 16px; color: #555; font-size: 20px; }
</style></head><body>
<form method="post" action="/login" autocomplete="off">
 <label id="l-user" for="username">Username</label><input id="username" name="username">
 <label id="l-pass" for="password">Password (demo-password)</label><input id="password" name="password" type="password">
 <button type="submit">Sign in</button>
</form><p class="note">NOTE</p></body></html>"""


class Site(http.server.BaseHTTPRequestHandler):
    def send(self, status, body="", headers=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        try:
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The browser hung up mid-response (a reload, a tab closed): nothing to tell it.
            self.close_connection = True

    def user(self):
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and value:
                return value
        return None

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/login":
            self.send(200, LOGIN.replace("NOTE", "Any username; the password is demo-password."))
        elif path == "/welcome" and self.user():
            self.send(200, f"<!doctype html><html><head><title>Example Site - welcome</title></head>"
                           f"<body style='font: 48px sans-serif; background: #e8f4e8'>"
                           f"<h1>Welcome, {self.user()}</h1><p>You are logged in.</p></body></html>")
        elif path == "/logout":
            self.send(303, headers=[("Set-Cookie", f"{COOKIE}=; Path=/; Max-Age=0"), ("Location", "/login")])
        else:
            self.send(303, headers=[("Location", "/login")])

    def do_POST(self):
        length = min(int(self.headers.get("Content-Length", "0") or 0), 64 * 1024)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode(errors="replace"))
        user = form.get("username", [""])[0].strip()
        if re.fullmatch(r"[A-Za-z0-9]{1,32}", user) and form.get("password", [""])[0] == PASSWORD:
            cookie = f"{COOKIE}={user}; Path=/; Max-Age=3600; SameSite=Lax"
            self.send(303, headers=[("Set-Cookie", cookie), ("Location", "/welcome")])
        else:
            self.send(200, LOGIN.replace("NOTE", "Wrong username or password."))

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Site).serve_forever()
