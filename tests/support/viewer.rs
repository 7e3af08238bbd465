//! The viewer's test fixtures: a real Xvnc display, a fake of the takeover side of the
//! contract (session / complete / cancel / websocket relaying to Xvnc's Unix socket), and
//! the headless harness `tests/e2e/viewer.mjs`. The raw HTTP/1.1 client and the
//! simulated user's link are in `viewer_net.rs`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use grexal_sidecar::relay::{
    accept_viewer, relay_with_stop_close, Access, RelayLimits, ViewerSocket, VncTarget,
};
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub const SCREEN: (u32, u32) = (1280, 800);

/// Whether the desktop tools exist; with `CI` set a missing tool is a failure, not a skip.
pub fn tools_present(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools.iter().filter(|t| !Path::new(t).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {missing:?} are missing"
    );
    eprintln!("skipping: {missing:?} missing (set CI to make this fail)");
    false
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn artifacts() -> PathBuf {
    crate::support::artifacts()
}

fn wait_until<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A TigerVNC `Xvnc`: display and VNC server in one process, RFB on a Unix socket only.
pub struct Xvnc {
    child: Child,
    pub display: u32,
    pub socket: PathBuf,
    log: PathBuf,
    extra: Vec<Child>,
}

impl Xvnc {
    pub fn start(dir: &Path) -> Xvnc {
        let socket = dir.join("vnc.sock");
        let log = dir.join("xvnc.log");
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let write_fd = write_end.as_raw_fd();
        let mut cmd = Command::new("/usr/bin/Xvnc");
        cmd.args([
            "-displayfd",
            "3",
            "-geometry",
            &format!("{}x{}", SCREEN.0, SCREEN.1),
            "-depth",
            "24",
        ])
        .args(["-rfbport", "-1", "-rfbunixpath"])
        .arg(&socket)
        .args(["-SecurityTypes", "None", "-nolisten", "tcp"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
        // SAFETY: only async-signal-safe calls between fork and exec, to hand Xvnc fd 3
        // (dup2 leaves the copy without FD_CLOEXEC; when it is fd 3 already, clear it).
        unsafe {
            cmd.pre_exec(move || {
                let rc = if write_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(write_fd, 3)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn Xvnc");
        drop(write_end);
        // Xvnc writes the display number it picked, then a newline.
        let mut reader = std::fs::File::from(read_end);
        let display = std::thread::scope(|s| {
            let h = s.spawn(|| {
                use std::io::Read;
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                while let Ok(1) = reader.read(&mut byte) {
                    if byte[0] == b'\n' {
                        break;
                    }
                    buf.push(byte[0]);
                }
                String::from_utf8_lossy(&buf).trim().parse::<u32>().ok()
            });
            h.join().expect("displayfd reader")
        });
        let mut x = Xvnc {
            child,
            display: 0,
            socket,
            log,
            extra: Vec::new(),
        };
        x.display = display
            .unwrap_or_else(|| panic!("Xvnc gave no display number; log:\n{}", x.log_tail()));
        // Ready means the socket speaks RFB, not that it exists.
        let sock = x.socket.clone();
        wait_until("Xvnc to speak RFB", Duration::from_secs(20), || {
            use std::io::Read;
            let mut s = std::os::unix::net::UnixStream::connect(&sock).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut hello = [0u8; 12];
            s.read_exact(&mut hello).ok()?;
            hello.starts_with(b"RFB 003.").then_some(())
        });
        x
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s.lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DISPLAY", format!(":{}", self.display));
        cmd
    }

    /// Starts `xmessage` centred on the display with a default button (Return presses it);
    /// returns its index for `wait_extra`.
    pub fn xmessage(&mut self, text: &str, out: &Path) -> usize {
        let child = self
            .command("xmessage")
            .args([
                "-center",
                "-buttons",
                "Cancel:1,Sign in:0",
                "-default",
                "Sign in",
                "-print",
                text,
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out).expect("xmessage out"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn xmessage");
        self.extra.push(child);
        let display = self.display;
        wait_until("the xmessage window", Duration::from_secs(10), || {
            let o = Command::new("xdotool")
                .env("DISPLAY", format!(":{display}"))
                .args(["search", "--onlyvisible", "--name", "xmessage"])
                .output()
                .ok()?;
            (o.status.success() && !o.stdout.is_empty()).then_some(())
        });
        self.extra.len() - 1
    }

    /// Waits for an extra child to exit by itself; `None` if it is still running at the deadline.
    pub fn wait_extra(
        &mut self,
        index: usize,
        deadline: Duration,
    ) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.extra[index].try_wait() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// (x, y, width, height) of the first visible window with this name.
    pub fn window(&self, name: &str) -> (i64, i64, i64, i64) {
        let o = self
            .command("xdotool")
            .args([
                "search",
                "--onlyvisible",
                "--name",
                name,
                "getwindowgeometry",
                "--shell",
            ])
            .output()
            .expect("xdotool");
        let text = String::from_utf8_lossy(&o.stdout);
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .expect("geometry")
        };
        (get("X="), get("Y="), get("WIDTH="), get("HEIGHT="))
    }

    pub fn pointer(&self) -> (i64, i64) {
        let o = self
            .command("xdotool")
            .args(["getmouselocation", "--shell"])
            .output()
            .expect("xdotool");
        let text = String::from_utf8_lossy(&o.stdout);
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .expect("coordinate")
        };
        (get("X="), get("Y="))
    }

    pub fn move_pointer(&self, x: i64, y: i64) {
        let st = self
            .command("xdotool")
            .args(["mousemove", &x.to_string(), &y.to_string()])
            .status()
            .expect("xdotool");
        assert!(st.success());
    }
}

impl Drop for Xvnc {
    fn drop(&mut self) {
        // Only the processes this fixture spawned, by their PIDs.
        for c in self
            .extra
            .iter_mut()
            .chain(std::iter::once(&mut self.child))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the fake takeover side saw, and what it answers.
pub struct Fake {
    pub id: String,
    pub control_token: String,
    pub view_token: String,
    pub display_name: String,
    pub reason: String,
    pub login_url: String,
    pub expires_at: u64,
    pub vnc_socket: PathBuf,
    pub outcome: Mutex<Option<String>>,
    pub events: broadcast::Sender<FakeEvent>,
    pub calls: Mutex<HashMap<&'static str, usize>>,
    pub protocols_seen: Mutex<Vec<String>>,
    pub ws_open: AtomicUsize,
    /// How many controlling WebSockets opened (each one's number), and how many of
    /// them were closed with 4001 `replaced`.
    pub controlling: AtomicUsize,
    pub replaced: AtomicUsize,
    /// The path of every request, in the order they arrived.
    pub requests: Mutex<Vec<String>>,
    /// How many of the next `session` requests fail as a proxy in front of an unreachable
    /// sandbox answers: 502 with a page of HTML, not JSON.
    pub session_failures: AtomicUsize,
}

#[derive(Debug, Clone)]
pub enum FakeEvent {
    /// Close every WebSocket with 4000 and this outcome.
    End(String),
    /// Drop every WebSocket without a close frame (a network failure, seen as 1006).
    Drop,
    /// A controlling WebSocket opened: every other controlling one closes with 4001
    /// `replaced`, as the takeover manager does (one controlling viewer at a time).
    Controlling(usize),
}

impl Fake {
    pub fn new(vnc_socket: &Path) -> Arc<Fake> {
        Fake::new_with(vnc_socket, |_| {})
    }

    /// [`Fake::new`] with some of its answers changed by `edit` (a longer reason, an
    /// `expires_at` already past) before it is shared.
    pub fn new_with(vnc_socket: &Path, edit: impl FnOnce(&mut Fake)) -> Arc<Fake> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut fake = Fake {
            id: "tk_test-1".into(),
            control_token: "ctl_4f9a2b7c1d8e3f60a5b4c3d2e1f0a9b8".into(),
            view_token: "view_0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
            display_name: "Example Bank".into(),
            reason: "I need to download your March statement; the bank asks for a login first."
                .into(),
            login_url: "https://bank.example/login".into(),
            expires_at: now + 300,
            vnc_socket: vnc_socket.to_path_buf(),
            outcome: Mutex::new(None),
            events: broadcast::channel(16).0,
            calls: Mutex::new(HashMap::new()),
            protocols_seen: Mutex::new(Vec::new()),
            ws_open: AtomicUsize::new(0),
            controlling: AtomicUsize::new(0),
            replaced: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            session_failures: AtomicUsize::new(0),
        };
        edit(&mut fake);
        Arc::new(fake)
    }

    pub fn calls(&self, what: &'static str) -> usize {
        self.calls
            .lock()
            .expect("lock")
            .get(what)
            .copied()
            .unwrap_or(0)
    }

    fn count(&self, what: &'static str) {
        *self.calls.lock().expect("lock").entry(what).or_default() += 1;
    }

    fn access(&self, headers: &HeaderMap) -> Option<&'static str> {
        let bearer = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        if bearer == self.control_token {
            Some("control")
        } else if bearer == self.view_token {
            Some("view")
        } else {
            None
        }
    }

    fn end(&self, outcome: &str) {
        *self.outcome.lock().expect("lock") = Some(outcome.to_string());
        let _ = self.events.send(FakeEvent::End(outcome.to_string()));
    }

    /// Serves the viewer's routes plus this fake on 127.0.0.1:0; returns the base URL.
    pub async fn serve(self: &Arc<Fake>) -> String {
        let app: Router =
            grexal_sidecar::viewer::routes(grexal_sidecar::viewer::ViewerConfig::default()).merge(
                Router::new()
                    .route("/takeover/{id}/session", get(session))
                    .route(
                        "/takeover/{id}/complete",
                        post(|s, p, h| answer(s, p, h, "completed")),
                    )
                    .route(
                        "/takeover/{id}/cancel",
                        post(|s, p, h| answer(s, p, h, "cancelled")),
                    )
                    .route("/takeover/{id}/websocket", get(websocket))
                    .route("/fake/end/{outcome}", post(fake_end))
                    .route("/fake/drop", post(fake_drop))
                    .route("/fake/cut/{outcome}", post(fake_cut))
                    .with_state(self.clone()),
            );
        let log = self.clone();
        let app = app.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                log.requests
                    .lock()
                    .expect("lock")
                    .push(request.uri().path().to_owned());
                next.run(request)
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": code}})),
    )
        .into_response()
}

async fn session(
    State(f): State<Arc<Fake>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    f.count("session");
    let failing = f
        .session_failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if failing.is_ok() {
        let page = "<html><body><h1>502 Bad Gateway</h1></body></html>";
        return (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            page,
        )
            .into_response();
    }
    let Some(access) = f.access(&headers).filter(|_| id == f.id) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let outcome = f.outcome.lock().expect("lock").clone();
    let body = json!({
        "takeover_id": f.id, "connection_id": "bank", "display_name": f.display_name, "reason": f.reason,
        "login_url": f.login_url, "access": access, "state": if outcome.is_some() { "ended" } else { "live" },
        "outcome": outcome, "expires_at": f.expires_at,
    });
    if outcome.is_some() {
        let mut body = body;
        body["error"] = json!({"code": "takeover_ended", "message": "the takeover has ended"});
        return (StatusCode::GONE, Json(body)).into_response();
    }
    Json(body).into_response()
}

async fn answer(
    State(f): State<Arc<Fake>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    outcome: &str,
) -> Response {
    f.count(if outcome == "completed" {
        "complete"
    } else {
        "cancel"
    });
    match f.access(&headers).filter(|_| id == f.id) {
        None => return error(StatusCode::UNAUTHORIZED, "unauthorized"),
        Some("view") => return error(StatusCode::FORBIDDEN, "forbidden"),
        Some(_) => {}
    }
    if let Some(done) = f.outcome.lock().expect("lock").clone() {
        return (
            StatusCode::GONE,
            Json(json!({"state": "ended", "outcome": done})),
        )
            .into_response();
    }
    f.end(outcome);
    Json(json!({"state": "ended", "outcome": outcome})).into_response()
}

async fn fake_end(State(f): State<Arc<Fake>>, UrlPath(outcome): UrlPath<String>) -> StatusCode {
    f.end(&outcome);
    StatusCode::NO_CONTENT
}

async fn fake_drop(State(f): State<Arc<Fake>>) -> StatusCode {
    let _ = f.events.send(FakeEvent::Drop);
    StatusCode::NO_CONTENT
}

/// The takeover ends with this outcome and every WebSocket is dropped without a Close frame,
/// as the relay does to a viewer whose frame in flight it could not finish in time.
async fn fake_cut(State(f): State<Arc<Fake>>, UrlPath(outcome): UrlPath<String>) -> StatusCode {
    *f.outcome.lock().expect("lock") = Some(outcome);
    let _ = f.events.send(FakeEvent::Drop);
    StatusCode::NO_CONTENT
}

async fn websocket(
    State(f): State<Arc<Fake>>,
    UrlPath(id): UrlPath<String>,
    mut request: axum::extract::Request,
) -> Response {
    f.count("websocket");
    let offered: Vec<String> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    f.protocols_seen.lock().expect("lock").extend(
        offered
            .iter()
            .map(|p| p.split('.').take(2).collect::<Vec<_>>().join(".")),
    );
    // The token is checked before upgrading, as the contract says: no RFB byte otherwise.
    let live = id == f.id && f.outcome.lock().expect("lock").is_none();
    let access = match offered.iter().find_map(|p| p.strip_prefix("grexal.v1.")) {
        Some(t) if live && t == f.control_token => Access::Control,
        Some(t) if live && t == f.view_token => Access::ViewOnly,
        _ => {
            f.count("websocket_refused");
            return error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
    };
    let Ok((response, pending)) = accept_viewer(&mut request) else {
        return error(StatusCode::BAD_REQUEST, "websocket upgrade");
    };
    let events = f.events.subscribe();
    let target = VncTarget::unix(f.vnc_socket.clone());
    let fake = f.clone();
    tokio::spawn(async move {
        let Ok(socket) = pending.socket(None).await else {
            return;
        };
        fake.ws_open.fetch_add(1, Ordering::SeqCst);
        let me = (access == Access::Control).then(|| {
            let me = fake.controlling.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = fake.events.send(FakeEvent::Controlling(me));
            me
        });
        if run_relay(socket, &target, access, me, events).await {
            fake.replaced.fetch_add(1, Ordering::SeqCst);
        }
        fake.ws_open.fetch_sub(1, Ordering::SeqCst);
    });
    response
}

/// The daemon's relay between the viewer and Xvnc, ended as the takeover manager ends it:
/// a `4000 <outcome>` Close frame when the fake takeover ends, or no Close frame at all
/// (the relay dropped, as in a network failure) on `/fake/drop`; `4001 replaced` when a
/// newer controlling socket opens (`controlling`: this one's number). True if replaced.
async fn run_relay(
    socket: ViewerSocket,
    target: &VncTarget,
    access: Access,
    controlling: Option<usize>,
    mut events: broadcast::Receiver<FakeEvent>,
) -> bool {
    let stop = CancellationToken::new();
    let limits = RelayLimits::default();
    let close = Arc::new(std::sync::OnceLock::<(u16, String)>::new());
    let close_reason = close.clone();
    let relay = relay_with_stop_close(socket, target, access, &limits, stop.clone(), move || {
        close_reason
            .get()
            .cloned()
            .unwrap_or((1000, "stopped".to_owned()))
    });
    tokio::pin!(relay);
    loop {
        let (code, reason) = tokio::select! {
            _ = &mut relay => return false,
            ev = events.recv() => match ev {
                Ok(FakeEvent::End(outcome)) => (4000, outcome),
                Ok(FakeEvent::Controlling(newer)) if controlling.is_some_and(|me| me != newer) => {
                    (4001, "replaced".to_owned())
                }
                Ok(FakeEvent::Controlling(_)) => continue,
                // Drop, or the channel gone: the relay is dropped without a Close frame.
                Ok(FakeEvent::Drop) | Err(_) => return false,
            },
        };
        let _ = close.set((code, reason));
        stop.cancel();
        let _ = relay.await;
        return code == 4001;
    }
}

/// The harness's JSON result.
pub struct Harness {
    pub ok: bool,
    pub result: serde_json::Value,
    pub stderr: String,
}

/// Runs `node tests/e2e/viewer.mjs`; the browser's HOME is a temp dir (crashpad writes there).
pub async fn run_harness(
    home: &Path,
    url: &str,
    screenshot: &Path,
    actions: Option<serde_json::Value>,
    until: &str,
) -> Harness {
    run_harness_with(home, url, screenshot, actions, until, &[]).await
}

/// [`run_harness`] with more of the harness's flags (`--viewport`, `--mobile`, `--abort`).
pub async fn run_harness_with(
    home: &Path,
    url: &str,
    screenshot: &Path,
    actions: Option<serde_json::Value>,
    until: &str,
    flags: &[&str],
) -> Harness {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(repo().join("tests/e2e/viewer.mjs"))
        .args([
            "--url",
            url,
            "--until",
            until,
            "--timeout-ms",
            "45000",
            "--screenshot",
        ])
        .arg(screenshot)
        .args(flags)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(actions) = actions {
        let file = home.join(format!(
            "actions-{}.json",
            screenshot
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("x")
        ));
        std::fs::write(&file, actions.to_string()).expect("write actions");
        cmd.arg("--actions").arg(file);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("harness timed out")
        .expect("spawn node");
    let (result, stderr) = crate::support::harness_result(&out.stdout, &out.stderr);
    Harness {
        ok: out.status.success(),
        result,
        stderr,
    }
}
