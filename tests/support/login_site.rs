//! The login site of `tests/takeover_e2e.rs`: a form with large fields at fixed
//! positions, a session cookie, and hooks for the test.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The session cookie's name.
pub const COOKIE: &str = "e2e_session";
/// The one password the site accepts (any username of letters and digits).
pub const PASSWORD: &str = "correct-horse-e2e";

// ---- the login site ----

const LOGIN_PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>Example Site - log in</title>
<style>
 html, body { margin: 0; font: 28px sans-serif; background: #f4f1e8; }
 label { position: absolute; left: 16px; font-size: 22px; color: #444; }
 input { position: absolute; left: 0; width: 100%; box-sizing: border-box; height: 220px;
         font-size: 64px; padding: 0 24px; border: 4px solid #3366aa; background: #fff; }
 #username { top: 40px; } #password { top: 330px; }
 #l-user { top: 8px; } #l-pass { top: 298px; }
 button { position: absolute; top: 580px; left: 16px; font-size: 24px; padding: 8px 32px; }
 .error { position: absolute; top: 640px; left: 16px; color: #a00; }
</style></head><body>
<form method="post" action="/login" autocomplete="off">
 <label id="l-user" for="username">Username</label><input id="username" name="username">
 <label id="l-pass" for="password">Password</label><input id="password" name="password" type="password">
 <button type="submit">Sign in</button>
</form>ERROR</body></html>"#;

/// Cookies set by a page on `localhost` to make Chromium write its cookie store now: it
/// commits every 30 s, or at once after 512 pending changes. A separate host, so that
/// the per-domain limit's evictions never touch the login cookie on 127.0.0.1.
const FILL_PAGE: &str = r#"<!doctype html><html><body><p id="s">filling</p><script>
for (let i = 0; i < 700; i++) document.cookie = 'fill' + i + '=1; Max-Age=3600; Path=/';
document.getElementById('s').textContent = 'filled';
</script></body></html>"#;

#[derive(Default)]
struct SiteState {
    /// Users each `/welcome` was served to with a valid session, in order.
    welcomes: Vec<String>,
    /// What `/whoami` saw: the session's user or "-".
    whoami: Vec<String>,
}

type Hook = Box<dyn Fn() + Send + Sync>;

/// A login site on 127.0.0.1 (one thread per connection, `Connection: close`):
/// `GET /login` a form, `POST /login` sets `e2e_session` (persistent, Max-Age) and
/// redirects to `/welcome` ("Welcome, <user>"), `/logout` clears it. For the test:
/// `/login-direct?user=U`, `/whoami`, `/fill` (see `FILL_PAGE`), `/__wait_welcome?user=U&n=N`
/// (a long poll the harness uses to wait until the browser shows the welcome page) and
/// `POST /__hook` (runs the test's hook, e.g. killing Chromium mid-session).
pub struct LoginSite {
    pub addr: SocketAddr,
    state: Arc<(Mutex<SiteState>, Condvar)>,
    hook: Arc<Mutex<Option<Hook>>>,
}

impl LoginSite {
    pub fn start() -> LoginSite {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind site");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new((Mutex::new(SiteState::default()), Condvar::new()));
        let hook: Arc<Mutex<Option<Hook>>> = Arc::new(Mutex::new(None));
        let (st, hk) = (state.clone(), hook.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (st, hk) = (st.clone(), hk.clone());
                std::thread::spawn(move || {
                    let _ = serve_site(stream, &st, &hk);
                });
            }
        });
        LoginSite { addr, state, hook }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.hook.lock().expect("lock") = Some(Box::new(hook));
    }

    pub fn welcomes(&self) -> Vec<String> {
        self.state.0.lock().expect("lock").welcomes.clone()
    }

    pub fn whoami(&self) -> Vec<String> {
        self.state.0.lock().expect("lock").whoami.clone()
    }
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    cookies: HashMap<String, String>,
    form: HashMap<String, String>,
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_pairs(s: &str, sep: char) -> HashMap<String, String> {
    s.split(sep)
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (url_decode(k), url_decode(v)))
        .collect()
}

fn read_request(stream: &mut TcpStream) -> std::io::Result<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 || raw.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or("/").to_owned();
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(64 * 1024);
    let mut body = raw[split + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Ok(Request {
        method,
        path: path.to_owned(),
        query: parse_pairs(query, '&'),
        cookies: headers
            .get("cookie")
            .map(|c| parse_pairs(c, ';'))
            .unwrap_or_default(),
        form: parse_pairs(&String::from_utf8_lossy(&body), '&'),
    })
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &str) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nCache-Control: no-store\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

fn html() -> Vec<(&'static str, String)> {
    vec![("Content-Type", "text/html; charset=utf-8".into())]
}

fn login_cookie(user: &str) -> (&'static str, String) {
    (
        "Set-Cookie",
        format!("{COOKIE}={user}; Path=/; Max-Age=3600; SameSite=Lax"),
    )
}

fn serve_site(
    mut stream: TcpStream,
    state: &(Mutex<SiteState>, Condvar),
    hook: &Mutex<Option<Hook>>,
) -> std::io::Result<()> {
    let req = read_request(&mut stream)?;
    let user = req.cookies.get(COOKIE).filter(|u| !u.is_empty()).cloned();
    let redirect = |to: &str| ("Location", to.to_owned());
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/login") => {
            let page = LOGIN_PAGE.replace("ERROR", "");
            respond(&mut stream, "200 OK", &html(), &page);
        }
        ("POST", "/login") => {
            let name = req.form.get("username").map(|s| s.trim().to_owned());
            match name {
                Some(name)
                    if !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric())
                        && req.form.get("password").map(String::as_str) == Some(PASSWORD) =>
                {
                    respond(
                        &mut stream,
                        "303 See Other",
                        &[login_cookie(&name), redirect("/welcome")],
                        "",
                    );
                }
                _ => {
                    let page = LOGIN_PAGE
                        .replace("ERROR", "<p class=\"error\">Wrong username or password</p>");
                    respond(&mut stream, "200 OK", &html(), &page);
                }
            }
        }
        ("GET", "/login-direct") => {
            let name = req.query.get("user").cloned().unwrap_or_default();
            respond(
                &mut stream,
                "303 See Other",
                &[login_cookie(&name), redirect("/welcome")],
                "",
            );
        }
        ("GET", "/welcome") => match user {
            Some(user) => {
                let page = format!(
                    "<!doctype html><html><head><title>Example Site - welcome</title></head>\
                     <body style=\"font: 48px sans-serif; background: #e8f4e8\"><h1>Welcome, {user}</h1>\
                     <p>You are logged in.</p></body></html>"
                );
                respond(&mut stream, "200 OK", &html(), &page);
                let (lock, cv) = state;
                lock.lock().expect("lock").welcomes.push(user);
                cv.notify_all();
            }
            None => respond(&mut stream, "303 See Other", &[redirect("/login")], ""),
        },
        ("GET", "/logout") => respond(
            &mut stream,
            "303 See Other",
            &[
                ("Set-Cookie", format!("{COOKIE}=; Path=/; Max-Age=0")),
                redirect("/login"),
            ],
            "",
        ),
        ("GET", "/whoami") => {
            let who = user.unwrap_or_else(|| "-".into());
            let page = format!("<!doctype html><html><body><h1>user: {who}</h1></body></html>");
            respond(&mut stream, "200 OK", &html(), &page);
            let (lock, cv) = state;
            lock.lock().expect("lock").whoami.push(who);
            cv.notify_all();
        }
        ("GET", "/fill") => respond(&mut stream, "200 OK", &html(), FILL_PAGE),
        ("GET", "/__wait_welcome") => {
            let want = req.query.get("user").cloned().unwrap_or_default();
            let n: usize = req.query.get("n").and_then(|n| n.parse().ok()).unwrap_or(1);
            let (lock, cv) = state;
            let guard = lock.lock().expect("lock");
            let (guard, _) = cv
                .wait_timeout_while(guard, Duration::from_secs(30), |s| {
                    s.welcomes.iter().filter(|u| **u == want).count() < n
                })
                .expect("lock");
            let met = guard.welcomes.iter().filter(|u| **u == want).count() >= n;
            drop(guard);
            let cors = ("Access-Control-Allow-Origin", "*".to_owned());
            if met {
                respond(&mut stream, "200 OK", &[cors], "ok");
            } else {
                respond(&mut stream, "504 Gateway Timeout", &[cors], "no welcome");
            }
        }
        ("POST", "/__hook") => {
            if let Some(hook) = hook.lock().expect("lock").as_ref() {
                hook();
            }
            respond(&mut stream, "200 OK", &[], "ok");
        }
        _ => respond(&mut stream, "404 Not Found", &[], "not found"),
    }
    Ok(())
}
