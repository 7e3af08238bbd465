//! A takeover requested as the daemon stops, against the real binary (`run --desktop`, no
//! agent, so it serves until the stop signal). Shutdown closes takeovers before the servers
//! stop, and the servers give in-flight requests a grace: a request still in flight then
//! is refused `503 shutting_down`, never handed out live with nothing left to end it. And
//! the desktop stops in order, awaited, whoever still holds it: no "still referenced"
//! warning, and x11vnc (`--display-backend xvfb`) leaves no System V shared memory.
//! Under the daemon, the desktop's own `shutdown` is awaited through a shared handle.

#[path = "support/desktop.rs"]
mod desktop_support;
mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use desktop_support::shm_segments_of;
use grexal_sidecar::desktop::Desktop;
use grexal_sidecar::platform::events::EventBus;
use serde_json::json;
use support::*;
use tokio_util::sync::CancellationToken;

const XVFB_DESKTOP: &[&str] = &["/usr/bin/Xvfb", "/usr/bin/x11vnc", "/usr/bin/chromium"];

const BODY: &str = r#"{"connection_id":"portal","reason":"log in"}"#;

/// What the old shutdown logged when it could not await the desktop's stop.
const NOT_IN_ORDER: &str = "desktop still referenced at shutdown";

/// `run --desktop --display-backend xvfb` with one `browser_login` connection, in a temp
/// dir; returned once it logged "ready" (past boot: the stop signal is then a shutdown's).
struct Run {
    dir: tempfile::TempDir,
    daemon: Daemon,
}

impl Run {
    fn start() -> Self {
        let dir = open_tempdir();
        let p = |name: &str| dir.path().join(name);
        write(
            &p("grexal.json"),
            json!({"manifest_version": 1, "connections": [
                {"id": "portal", "display_name": "Portal", "auth_mode": "browser_login",
                 "login_url": "http://127.0.0.1:9/login"}]})
            .to_string(),
            0o644,
        );
        let mut cmd = command();
        cmd.args(["run", "--sandbox-id", "sbx-stop-race", "--desktop"])
            .args(["--chromium-sandbox", "off", "--display-backend", "xvfb"])
            .arg("--manifest")
            .arg(p("grexal.json"))
            .arg("--socket")
            .arg(p("run/sidecar.sock"))
            .arg("--credentials-dir")
            .arg(p("creds"))
            .arg("--env-file")
            .arg(p("run/agent.env"))
            .arg("--public-key-out")
            .arg(p("run/sandbox.pub"))
            .arg("--browser-profile")
            .arg(p("profile"))
            .arg("--desktop-run-dir")
            .arg(p("desk"))
            .args(["--log", "info"]);
        let mut daemon = Daemon::spawn(cmd, p("daemon.log"), p("run/sidecar.sock"));
        daemon.wait_ready(Duration::from_secs(60));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !daemon
            .log_text()
            .lines()
            .any(|l| l.trim_end().ends_with(" ready"))
        {
            assert!(
                Instant::now() < deadline,
                "never ready; log:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Run { dir, daemon }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/sidecar.sock")
    }

    /// The one x11vnc of this desktop (it is given the run dir's VNC socket).
    fn x11vnc(&self) -> u32 {
        let socket = self.dir.path().join("desk/vnc.sock");
        match pids_with_arg(&socket.display().to_string())[..] {
            [pid] => pid,
            ref other => panic!("x11vnc pids: {other:?}; log:\n{}", self.daemon.log_text()),
        }
    }

    /// SIGTERM, then the exit code and the log once the daemon has exited.
    fn stop(&mut self) -> (i32, String) {
        self.daemon.signal(nix::sys::signal::Signal::SIGTERM);
        let code = self.daemon.wait_exit(Duration::from_secs(60));
        (code, self.daemon.log_text())
    }

    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.daemon.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `POST /v1/takeovers`'s head, on a connection of its own; the body is up to the caller.
fn takeover_head(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "POST /v1/takeovers HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        BODY.len()
    )
    .expect("head");
    stream
}

fn send_body_and_read(mut stream: UnixStream) -> HttpResponse {
    stream.write_all(BODY.as_bytes()).expect("body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("response");
    parse_response(&raw).expect("an HTTP response")
}

/// The checks every shutdown here must pass: exit 0, "stopped", the desktop's stop awaited
/// (no fallback to a drop), and not one of `x11vnc`'s segments left.
fn assert_stopped_in_order(code: i32, log: &str, x11vnc: u32) {
    assert_eq!(code, 0, "{log}");
    assert!(
        !log.contains(NOT_IN_ORDER),
        "the desktop was not stopped in order:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.trim_end().ends_with(" stopped")),
        "{log}"
    );
    assert_eq!(
        shm_segments_of(x11vnc),
        0,
        "x11vnc {x11vnc}'s shared memory outlived the daemon; log:\n{log}"
    );
}

/// A request whose body arrives after the stop signal (read in the servers' grace) is
/// judged after takeovers closed: `503 shutting_down`, and nothing of it was made (no
/// takeover, no event); the desktop then stops in order.
#[test]
fn a_takeover_request_read_after_the_stop_signal_is_refused_shutting_down() {
    let test = "a_takeover_request_read_after_the_stop_signal_is_refused_shutting_down";
    if skip_missing(test, XVFB_DESKTOP) {
        return;
    }
    let mut run = Run::start();
    let x11vnc = run.x11vnc();
    assert!(shm_segments_of(x11vnc) > 0, "x11vnc made no segments");
    let stream = takeover_head(&run.socket());
    // The head alone is in: the handler waits for the body, and the request is in flight.
    std::thread::sleep(Duration::from_millis(200));
    run.daemon.signal(nix::sys::signal::Signal::SIGTERM);
    run.wait_for_log("stop signal received");
    // Well inside the servers' 2 s grace, well after shutdown closed takeovers.
    std::thread::sleep(Duration::from_millis(300));
    let answer = send_body_and_read(stream);
    let code = run.daemon.wait_exit(Duration::from_secs(60));
    let log = run.daemon.log_text();
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (503, "shutting_down"),
        "{}\nlog:\n{log}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        log.contains("takeover refused: shutting down"),
        "the refusal is not logged:\n{log}"
    );
    assert!(
        !log.contains("takeover requested"),
        "a takeover was made after the stop signal:\n{log}"
    );
    assert_stopped_in_order(code, &log, x11vnc);
}

/// The stop signal 30 ms after the request, while it is bringing the browser to the front:
/// it is refused `shutting_down` or, if it became live before takeovers closed, it is ended
/// by the shutdown; either way the desktop stops in order. Three rounds: the race lands
/// on either side.
#[test]
fn a_takeover_requested_as_the_daemon_stops_is_refused_or_ended() {
    let test = "a_takeover_requested_as_the_daemon_stops_is_refused_or_ended";
    if skip_missing(test, XVFB_DESKTOP) {
        return;
    }
    for round in 0..3 {
        let mut run = Run::start();
        let x11vnc = run.x11vnc();
        let socket = run.socket();
        let (sent, was_sent) = std::sync::mpsc::channel();
        let request = std::thread::spawn(move || {
            let stream = takeover_head(&socket);
            sent.send(()).expect("the test waits");
            send_body_and_read(stream)
        });
        // From the request being on its way, not from the thread's start (which a loaded
        // machine may delay past the stop, leaving nothing to race).
        was_sent.recv().expect("the request's thread");
        std::thread::sleep(Duration::from_millis(30));
        let (code, log) = run.stop();
        let answer = request.join().expect("the request's thread");
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        eprintln!("round {round}: {} {body}", answer.status);
        match answer.status {
            201 => {
                let json = answer.json();
                assert_eq!(json["state"], "live", "round {round}: {body}");
                let id = json["takeover_id"].as_str().expect("takeover_id");
                assert!(
                    log.contains(&format!("takeover ended takeover_id={id}")),
                    "round {round}: takeover {id} was handed out live and never ended:\n{log}"
                );
            }
            503 => assert_eq!(
                answer.error_code(),
                "shutting_down",
                "round {round}: {body}\nlog:\n{log}"
            ),
            other => panic!("round {round}: {other} {body}\nlog:\n{log}"),
        }
        assert_stopped_in_order(code, &log, x11vnc);
    }
}

/// What the daemon relies on: the desktop's stop is awaited through a shared handle. With
/// another handle still held (a takeover's watcher, say), `shutdown` returns once Chromium,
/// x11vnc and Xvfb are gone, x11vnc's segments with them; a second call waits for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desktop_stops_while_another_handle_still_holds_it() {
    desktop_support::init_tracing();
    if desktop_support::skip(XVFB_DESKTOP) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let desktop = Desktop::start(
        desktop_support::xvfb_x11vnc_config(dir.path()),
        EventBus::new(),
        CancellationToken::new(),
    )
    .await
    .expect("start");
    let desktop = Arc::new(desktop);
    let held = desktop.clone();
    let pids = desktop.pids();
    let x11vnc = pids.vnc.expect("x11vnc pid");
    assert!(shm_segments_of(x11vnc) > 0, "x11vnc made no segments");
    desktop.shutdown().await;
    for pid in [pids.chromium, x11vnc, pids.display] {
        assert!(
            !desktop_support::pid_alive(pid),
            "pid {pid} still alive after shutdown"
        );
    }
    assert_eq!(shm_segments_of(x11vnc), 0, "x11vnc's segments");
    tokio::time::timeout(Duration::from_secs(1), held.shutdown())
        .await
        .expect("a second shutdown has nothing to wait for");
}
