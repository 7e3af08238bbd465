//! Fixtures for `tests/takeover_e2e.rs`, the browser_login takeover with the whole stack:
//! a login site on 127.0.0.1, the real daemon with its desktop, the platform's event
//! stream (SSE), the headless viewer harness `tests/e2e/viewer.mjs`, a little CDP, and
//! the process tree under the daemon.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::{command, free_port, http_unix, is_root, open_tempdir, write, HttpResponse};

pub const CONNECTION: &str = "example_site";
pub use crate::login_site::{LoginSite, COOKIE, PASSWORD};
/// Desktop points inside the login form's fields, whatever the height of Chromium's
/// toolbar: the fields are 220 px tall at fixed page positions (see `LOGIN_PAGE`).
pub const USERNAME_AT: (u32, u32) = (640, 250);
pub const PASSWORD_AT: (u32, u32) = (640, 540);
const CHROMIUM_ARG: &str =
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1";
const LONG: Duration = Duration::from_secs(60);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn artifacts() -> PathBuf {
    crate::support::artifacts()
}

pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// True when the test must be skipped: a tool is missing and `CI` is unset (with `CI`
/// set, a missing tool fails the test).
pub fn skip_without_tools() -> bool {
    let modules = repo().join("tests/e2e/node_modules/playwright-core");
    let tools = [
        PathBuf::from("/usr/bin/chromium"),
        PathBuf::from("/usr/bin/Xvnc"),
        PathBuf::from("/usr/bin/Xvfb"),
        PathBuf::from("/usr/bin/x11vnc"),
        PathBuf::from("/usr/share/novnc/core/rfb.js"),
        modules,
    ];
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| !t.exists())
        .map(|t| t.display().to_string())
        .collect();
    if Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        missing.push("node".into());
    }
    if missing.is_empty() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {missing:?} are missing"
    );
    eprintln!("skipping: {missing:?} missing (set CI to make this fail)");
    true
}

/// One desktop at a time: each test runs a daemon with Xvnc (or Xvfb) and Chromium plus a
/// headless Chromium for the viewer, and the machine may have two cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn wait_until<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---- the daemon with its desktop ----

pub fn manifest(login_url: &str) -> Value {
    json!({
        "manifest_version": 1,
        "entrypoint": "agent.py",
        "runtime": {"language": "python", "timeout_seconds": 600, "sandbox_template": "desktop"},
        "connections": [
            {"id": CONNECTION, "display_name": "Example Site", "auth_mode": "browser_login",
             "login_url": login_url}
        ]
    })
}

/// A line the agent printed (a JSON object with `event`), with when we read it.
#[derive(Debug, Clone)]
pub struct AgentLine {
    pub json: Value,
}

/// `grexal-sidecar run` on a desktop manifest, with the control endpoint on loopback.
/// Stderr (the daemon's log) goes to a file; stdout (the agent's) is read line by line.
pub struct E2eDaemon {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub log: PathBuf,
    pub socket: PathBuf,
    pub control: SocketAddr,
    pub token: String,
    pub go_file: PathBuf,
    agent_rx: mpsc::Receiver<AgentLine>,
    pub agent_out: Arc<Mutex<Vec<String>>>,
}

/// Which subcommand runs the desktop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `run`, with the control endpoint on loopback: the test is the platform.
    Run,
    /// `dev`: no platform; the viewer on loopback, its URL in `takeover-url`.
    Dev,
}

impl E2eDaemon {
    /// `agent`: the Python agent's file and its arguments after SITE and GO_FILE; `None`
    /// runs no agent (the test plays the agent on the socket).
    pub fn start(site: &LoginSite, agent: Option<&Path>) -> E2eDaemon {
        Self::start_as(Mode::Run, site, agent, &[])
    }

    /// `extra`: more daemon flags (e.g. another display backend).
    pub fn start_as(
        mode: Mode,
        site: &LoginSite,
        agent: Option<&Path>,
        extra: &[&str],
    ) -> E2eDaemon {
        let dir = open_tempdir();
        let p = |name: &str| dir.path().join(name);
        write(
            &p("grexal.json"),
            manifest(&format!("{}/login", site.url())).to_string(),
            0o644,
        );
        let token = format!("e2e-control-token-{}", free_port());
        let control: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let socket = p("run/sidecar.sock");
        let mut cmd = command();
        match mode {
            Mode::Run => {
                write(&p("control.token"), &token, 0o600);
                cmd.arg("run")
                    .args(["--sandbox-id", "sbx-takeover-e2e"])
                    .arg("--public-key-out")
                    .arg(p("keys/sandbox.pub"))
                    .arg("--control-listen")
                    .arg(control.to_string())
                    .arg("--control-token-file")
                    .arg(p("control.token"));
            }
            Mode::Dev => {
                cmd.arg("dev")
                    .arg("--connections")
                    .arg(p("connections.json"))
                    .args(["--viewer-listen", "127.0.0.1:0"])
                    .arg("--takeover-url-file")
                    .arg(p("takeover-url"));
            }
        }
        cmd.arg("--manifest")
            .arg(p("grexal.json"))
            .arg("--socket")
            .arg(&socket)
            .arg("--credentials-dir")
            .arg(p("creds"))
            .arg("--env-file")
            .arg(p("run/agent.env"))
            .arg("--browser-profile")
            .arg(p("profile"))
            .arg("--desktop-run-dir")
            .arg(p("desktop"))
            .arg(format!("--chromium-arg={CHROMIUM_ARG}"))
            .args(["--log", "info,grexal_sidecar=debug"])
            .args(extra);
        let go_file = p("go");
        if let Some(agent) = agent {
            // Beside it, the example agent's client, which it imports.
            let client = repo().join("examples/browser-agent/sidecar_client.py");
            for (from, to) in [
                (agent, p("agent.py")),
                (client.as_path(), p("sidecar_client.py")),
            ] {
                std::fs::copy(from, &to).expect("copy agent");
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                    .expect("chmod agent");
            }
            let script = p("agent.py");
            if is_root() {
                // The agent and the desktop run unprivileged, as in a sandbox, and Chromium
                // keeps its own sandbox: required, so the whole cycle is run with it.
                cmd.args(["--agent-user", "nobody", "--chromium-sandbox", "on"]);
            }
            cmd.arg("--")
                .arg("python3")
                .arg(&script)
                .arg(site.url())
                .arg(&go_file);
        }
        let log = p("daemon.log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn grexal-sidecar");
        let mut d = E2eDaemon {
            dir,
            child,
            log,
            socket,
            control,
            token,
            go_file,
            agent_rx: mpsc::channel().1,
            agent_out: Arc::default(),
        };
        let stdout = d.child.stdout.take().expect("stdout");
        d.agent_rx = read_agent_lines(stdout, d.agent_out.clone());
        d
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything useful when a test fails.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- agent stdout:\n{}\n--- daemon log:\n{}",
            self.agent_out.lock().expect("lock").join("\n"),
            self.log_text()
        )
    }

    /// Ready: the control endpoint's event stream answers (bound after the desktop is up).
    pub fn events(&mut self) -> Sse {
        let end = Instant::now() + LONG;
        loop {
            match Sse::connect(self.control, &self.token) {
                Ok(sse) => return sse,
                Err(e) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "daemon exited early ({status}): {e}\n{}",
                            self.diagnostics()
                        );
                    }
                    assert!(
                        Instant::now() < end,
                        "control endpoint not ready: {e}\n{}",
                        self.diagnostics()
                    );
                    std::thread::sleep(Duration::from_millis(25));
                }
            }
        }
    }

    /// The next line the agent printed with this `event`, skipping others.
    pub fn agent_event(&self, event: &str, timeout: Duration) -> Value {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.agent_rx.recv_timeout(left) {
                Ok(line) if line.json["event"] == event => return line.json,
                Ok(line) if line.json["event"] == "fail" => {
                    panic!("the agent failed: {}\n{}", line.json, self.diagnostics())
                }
                Ok(_) => continue,
                Err(_) => panic!(
                    "no agent event {event:?} within {timeout:?}\n{}",
                    self.diagnostics()
                ),
            }
        }
    }

    /// An HTTP request on the agent socket (as root: allowed by the socket's policy).
    pub fn agent(&self, method: &str, target: &str, body: Option<&Value>) -> HttpResponse {
        let body = body.map(|b| b.to_string());
        http_unix(
            &self.socket,
            method,
            target,
            body.as_deref().map(str::as_bytes),
        )
        .unwrap_or_else(|e| panic!("{method} {target}: {e}\n{}", self.diagnostics()))
    }

    /// As the agent, asks for a takeover of the login connection (201, else the test
    /// fails); its id.
    pub fn request_takeover(&self, reason: &str, timeout_seconds: u64) -> String {
        let body = json!({"connection_id": CONNECTION, "reason": reason, "timeout_seconds": timeout_seconds});
        let r = self.agent("POST", "/v1/takeovers", Some(&body));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()["takeover_id"].as_str().expect("id").to_owned()
    }

    /// Opens the login site's `/login` in the desktop's Chromium and waits (up to
    /// `deadline` each) until CDP lists the page and `fields`, a JS array whose third item
    /// is `document.readyState`, says it has loaded. Returns CDP's HTTP address and the
    /// page's URL.
    pub fn open_login_page(
        &self,
        site: &LoginSite,
        fields: &str,
        deadline: Duration,
    ) -> (String, String) {
        let cdp = self.cdp_http();
        let login = format!("{}/login", site.url());
        open_tab(&cdp, &login);
        wait_until("the login page", deadline, || {
            pages(&cdp)
                .iter()
                .any(|p| p["url"] == login.as_str())
                .then_some(())
        });
        wait_until("the login form", deadline, || {
            (evaluate(&cdp, &login, fields)[2] == "complete").then_some(())
        });
        (cdp, login)
    }

    pub fn cdp_http(&self) -> String {
        let r = self.agent("GET", "/v1/browser", None);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["cdp_http_url"]
            .as_str()
            .expect("cdp_http_url")
            .to_owned()
    }

    /// Waits for exit, returning the exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or_else(|| {
                    panic!("killed by a signal ({status})\n{}", self.diagnostics())
                });
            }
            assert!(
                Instant::now() < end,
                "daemon still running after {timeout:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM and the orderly shutdown (the desktop's children stopped by the daemon).
    pub fn stop(&mut self) -> i32 {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        self.wait_exit(Duration::from_secs(30))
    }
}

impl Drop for E2eDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Orderly first, so the daemon stops Xvnc and Chromium itself.
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_agent_lines(
    stdout: ChildStdout,
    all: Arc<Mutex<Vec<String>>>,
) -> mpsc::Receiver<AgentLine> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            all.lock().expect("lock").push(line.clone());
            if let Ok(json) = serde_json::from_str::<Value>(&line) {
                if json.get("event").is_some() {
                    let _ = tx.send(AgentLine { json });
                }
            }
        }
    });
    rx
}

// ---- the platform's event stream ----

/// One server-sent event with the wall-clock time it was read.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: Value,
    pub at_ms: f64,
}

/// `GET /v1/events` read in a thread; events arrive on a channel.
pub struct Sse {
    rx: mpsc::Receiver<Event>,
    pub seen: Vec<Event>,
}

impl Sse {
    /// Returns once the response head arrived: the subscription exists from then on.
    fn connect(addr: SocketAddr, token: &str) -> std::io::Result<Sse> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        )?;
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status)?;
        if !status.contains(" 200 ") {
            return Err(std::io::Error::other(format!("events: {}", status.trim())));
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
        }
        reader.get_ref().set_read_timeout(None)?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Chunked transfer: chunk-size lines are neither `event:` nor `data:`.
            let mut name = String::new();
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    let data = serde_json::from_str(d.trim()).unwrap_or(Value::Null);
                    let event = Event {
                        name: std::mem::take(&mut name),
                        data,
                        at_ms: now_ms(),
                    };
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Sse {
            rx,
            seen: Vec::new(),
        })
    }

    /// The next event named `name` (others are kept in `seen`).
    pub fn next(&mut self, name: &str, timeout: Duration) -> Event {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if event.name == name {
                        return event;
                    }
                }
                Err(_) => panic!(
                    "no {name:?} event within {timeout:?}; seen: {:?}",
                    self.seen.iter().map(|e| &e.name).collect::<Vec<_>>()
                ),
            }
        }
    }
}

// ---- the viewer harness ----

pub struct HarnessRun {
    pub ok: bool,
    pub result: Value,
    pub stderr: String,
    pub started_ms: f64,
}

impl HarnessRun {
    pub fn action_time(&self, kind: &str, which: &str) -> f64 {
        self.result["action_times"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["type"] == kind))
            .and_then(|t| t[which].as_f64())
            .unwrap_or_else(|| panic!("no {kind} action time in {}", self.result))
    }
}

/// Spawns `node tests/e2e/viewer.mjs` (headless Chromium, its own HOME).
pub fn spawn_harness(
    home: &Path,
    url: &str,
    name: &str,
    actions: &Value,
) -> (std::process::Child, f64) {
    std::fs::create_dir_all(home).expect("home");
    let actions_file = home.join(format!("actions-{name}.json"));
    std::fs::write(&actions_file, actions.to_string()).expect("actions");
    let started = now_ms();
    let child = Command::new("node")
        .arg(repo().join("tests/e2e/viewer.mjs"))
        .args(["--url", url, "--timeout-ms", "45000", "--screenshot"])
        .arg(artifacts().join(format!("takeover-e2e-{name}.png")))
        .arg("--actions")
        .arg(&actions_file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    (child, started)
}

pub fn finish_harness(child: std::process::Child, started_ms: f64) -> HarnessRun {
    let out = child.wait_with_output().expect("harness output");
    let (result, stderr) = crate::support::harness_result(&out.stdout, &out.stderr);
    HarnessRun {
        ok: out.status.success(),
        result,
        stderr,
        started_ms,
    }
}

pub fn run_harness(home: &Path, url: &str, name: &str, actions: &Value) -> HarnessRun {
    let (child, started) = spawn_harness(home, url, name, actions);
    finish_harness(child, started)
}

/// The viewer link from a `takeover_requested` event, with the token from `token_field`
/// (`control_token` or `view_token`) in its fragment.
pub fn viewer_url(event: &Event, token_field: &str) -> String {
    format!(
        "{}#token={}",
        event.data["viewer_url"].as_str().expect("viewer_url"),
        event.data[token_field].as_str().expect("token")
    )
}

/// The harness ran to its end and the viewer page broke no CSP rule.
pub fn check_harness(run: &HarnessRun, what: &str, d: &E2eDaemon) {
    assert!(
        run.ok,
        "{what}: the viewer harness failed: {}\n{}\n{}",
        run.result,
        run.stderr,
        d.diagnostics()
    );
    assert_eq!(
        run.result["csp_violations"],
        json!([]),
        "{what}: CSP violations"
    );
}

/// Click into both fields and type; Enter submits the form.
pub fn login_actions(user: &str) -> Vec<Value> {
    vec![
        json!({"type": "click", "x": USERNAME_AT.0, "y": USERNAME_AT.1}),
        json!({"type": "type", "text": user}),
        json!({"type": "click", "x": PASSWORD_AT.0, "y": PASSWORD_AT.1}),
        json!({"type": "type", "text": PASSWORD}),
        json!({"type": "press", "key": "Enter"}),
    ]
}

// ---- CDP, from the test ----

/// Reads one response: the head, then the body by its Content-Length (Chromium's
/// DevTools server and a WebSocket refusal may keep the connection open).
fn read_response(s: &mut TcpStream) -> (u16, Vec<u8>, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= split + 4 + length {
                let body = raw[split + 4..split + 4 + length].to_vec();
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return (status, body, raw);
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (0, Vec::new(), raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

/// One request to Chromium's DevTools HTTP endpoint; (status, body).
pub fn cdp_request(cdp_http: &str, method: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let addr = cdp_http.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let (status, body, _) = read_response(&mut s);
    if status == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((status, body))
}

fn cdp_get(cdp_http: &str, path: &str) -> Value {
    let (status, body) = cdp_request(cdp_http, "GET", path).expect("cdp http");
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("cdp json")
}

/// `/json/list`, pages only (the omnibox popup and others are other types).
pub fn pages(cdp_http: &str) -> Vec<Value> {
    cdp_get(cdp_http, "/json/list")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["type"] == "page")
        .collect()
}

/// Opens a new tab on `url` through CDP's HTTP endpoint.
pub fn open_tab(cdp_http: &str, url: &str) {
    let (status, body) =
        cdp_request(cdp_http, "PUT", &format!("/json/new?{url}")).expect("json/new");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// `Runtime.evaluate` in the first page whose URL starts with `url_prefix`.
pub fn evaluate(cdp_http: &str, url_prefix: &str, expression: &str) -> Value {
    use tokio_tungstenite::tungstenite::{connect, Message};
    let page = pages(cdp_http)
        .into_iter()
        .find(|p| p["url"].as_str().is_some_and(|u| u.starts_with(url_prefix)))
        .unwrap_or_else(|| panic!("no page at {url_prefix}"));
    let ws_url = page["webSocketDebuggerUrl"].as_str().expect("ws url");
    let (mut ws, _) = connect(ws_url).expect("cdp websocket");
    let call = json!({"id": 1, "method": "Runtime.evaluate",
                      "params": {"expression": expression, "returnByValue": true}});
    ws.send(Message::text(call.to_string())).expect("send");
    loop {
        let msg = ws.read().expect("cdp read");
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text).expect("cdp json");
            if v["id"] == 1 {
                let _ = ws.close(None);
                return v["result"]["result"]["value"].clone();
            }
        }
    }
}

// ---- the process tree ----

/// (pid, ppid, comm) of every process, from /proc.
fn processes() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        out.push((pid, ppid, comm));
    }
    out
}

/// The daemon's Chromium: its child whose comm is `chromium`.
pub fn chromium_pid(daemon: u32) -> Option<u32> {
    processes()
        .into_iter()
        .find(|(_, ppid, comm)| *ppid == daemon && comm == "chromium")
        .map(|(pid, _, _)| pid)
}

pub fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
}

// ---- the viewer's WebSocket, raw ----

/// A WebSocket handshake on the viewer route with these subprotocols; returns the status
/// line's code and everything the server sent (it must not contain an RFB byte).
pub fn ws_handshake(addr: SocketAddr, id: &str, protocols: Option<&str>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let protocols = protocols
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /takeover/{id}/websocket HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{protocols}\r\n"
    )
    .expect("write");
    let (status, _, raw) = read_response(&mut s);
    (status, raw)
}
