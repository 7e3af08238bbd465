//! A hung desktop child, on the real stack (Xvnc / Xvfb + x11vnc, and Chromium; skipped
//! only when a binary is missing and `CI` is unset): a child stopped with SIGSTOP never
//! exits, and only its probes can tell. Stopped for the hang timeout, it is killed and
//! restarted like a crashed one (`browser_restarted` saying it hung), and the agent's
//! `GET /v1/browser` never gives the stopped browser's URL, and leads to a browser that
//! answers again. A healthy desktop, probed all
//! along, is left alone, and so is a viewer connected to its VNC server.
//!
//! Every test stops processes only through a guard that continues them when dropped.

#[path = "support/desktop.rs"]
mod desktop_support;
#[path = "support/takeover.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use desktop_support::*;
use grexal_sidecar::desktop::{Desktop, DesktopConfig, DesktopStatus};
use grexal_sidecar::platform::events::{EventBus, PlatformEvent};
use grexal_sidecar::relay::VncTarget;
use grexal_sidecar::takeover::{Browser, TakeoverLimits};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{captured_logs, Harness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The shortest hang timeout the flag takes: probes every 1.7 s, each allowed 2.5 s.
const HANG: Duration = Duration::from_secs(5);
/// Long enough for the hang to be found (about 11 s with `HANG`) and the child restarted.
const RESTARTED: Duration = Duration::from_secs(60);

/// A process stopped with SIGSTOP. Dropped, it is continued, so that a test that fails
/// (the supervisor never killed it) leaves nothing stopped behind; the desktop's shutdown
/// then stops it for good.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

fn hang_config(cfg: DesktopConfig) -> DesktopConfig {
    DesktopConfig {
        hang_timeout: Some(HANG),
        ..cfg
    }
}

/// The next `browser_restarted`, the first restart: its child and reason.
async fn restarted(events: &mut broadcast::Receiver<Arc<PlatformEvent>>) -> (String, String) {
    let (child, restarts, reason) = next_restart(events, RESTARTED).await;
    assert_eq!(restarts, 1, "{child}: {reason}");
    (child, reason)
}

/// Whether the daemon's log has the supervisor's warning that `child` (`pid`) hung.
fn warned_hung(child: &str, pid: u32) -> bool {
    captured_logs().text().lines().any(|line| {
        line.contains("WARN")
            && line.contains("child stopped answering its probes, killing it")
            && line.contains(&format!("child=\"{child}\""))
            && line.contains(&format!("pid={pid} "))
    })
}

/// The daemon's last log lines about the desktop, for a failure's message.
fn log_tail() -> String {
    let text = captured_logs().text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("desktop"))
        .collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// How often the daemon logged that `pid` answered its liveness probe.
fn answered_probes(pid: u32) -> usize {
    captured_logs()
        .text()
        .lines()
        .filter(|line| {
            line.contains("child answered its probe") && line.ends_with(&format!("pid={pid}"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_chromium_is_restarted_with_its_profile_and_the_browser_endpoint_answers() {
    captured_logs();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = page_server().await;
    let events = EventBus::new();
    let mut rx = events.subscribe();
    let cfg = hang_config(config(dir.path()));
    let profile = cfg.profile_dir.clone();
    let stop = CancellationToken::new();
    let desktop = Arc::new(
        Desktop::start(cfg, events, stop.clone())
            .await
            .expect("start"),
    );
    let h = Harness::start(
        desktop.clone() as Arc<dyn Browser>,
        TakeoverLimits::default(),
    )
    .await;
    plant_committed_cookie(&desktop, &url, &profile).await;
    let before = desktop.pids();
    let endpoint = h.agent("GET", "/v1/browser", None).await;
    assert_eq!(endpoint.status, 200);
    let ws_before = endpoint.json()["cdp_ws_url"]
        .as_str()
        .expect("ws")
        .to_owned();

    let stopped = Stopped::new(before.chromium);
    // Stopped, it takes the connection and never answers: the agent is not handed its URL
    // (it would hang in the agent's hands) but told to retry, or, should the restart have
    // beaten the wait, given the new one.
    let endpoint = h.agent("GET", "/v1/browser", None).await;
    if endpoint.status == 200 {
        assert_ne!(endpoint.json()["cdp_ws_url"], ws_before.as_str());
    } else {
        assert_eq!(endpoint.status, 503);
        assert_eq!(endpoint.code(), "browser_unavailable");
        let message = endpoint.json()["error"]["message"].clone();
        assert!(
            message.as_str().is_some_and(|m| m.contains("restarting")),
            "{message}"
        );
    }
    let (child, reason) = restarted(&mut rx).await;
    assert_eq!(child, "chromium", "{reason}");
    assert!(reason.starts_with("chromium hung: "), "{reason}");
    assert!(warned_hung("chromium", before.chromium));
    drop(stopped);
    wait_status(&desktop, Duration::from_secs(5), |s| {
        *s == DesktopStatus::Ready
    })
    .await;
    let after = desktop.pids();
    assert_ne!(after.chromium, before.chromium);
    assert!(
        !pid_alive(before.chromium),
        "the hung chromium was not killed"
    );
    assert_eq!(after.display, before.display, "only chromium restarts");

    // The agent is led to the new browser, which answers, on the same port.
    let endpoint = h.agent("GET", "/v1/browser", None).await;
    assert_eq!(endpoint.status, 200);
    let ws_after = endpoint.json()["cdp_ws_url"]
        .as_str()
        .expect("ws")
        .to_owned();
    assert_ne!(ws_after, ws_before);
    assert_eq!(endpoint.json()["cdp_http_url"], desktop.cdp().http_url);
    let (browser, mut handler) = chromiumoxide::Browser::connect(ws_after)
        .await
        .expect("CDP at the endpoint GET /v1/browser gives");
    let pump = tokio::spawn(async move {
        use futures_util::StreamExt;
        while handler.next().await.is_some() {}
    });
    browser.version().await.expect("the new browser answers");
    pump.abort();
    // Same profile: the login survives.
    assert!(has_cookie(&desktop).await, "cookie lost over the restart");

    drop(h);
    stop.cancel();
    if let Ok(desktop) = Arc::try_unwrap(desktop) {
        shutdown_and_check(desktop).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_xvnc_restarts_the_display_and_everything_on_it() {
    captured_logs();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let events = EventBus::new();
    let mut rx = events.subscribe();
    let desktop = Desktop::start(
        hang_config(config(dir.path())),
        events,
        CancellationToken::new(),
    )
    .await
    .expect("start");
    let before = desktop.pids();

    let stopped = Stopped::new(before.display);
    // Chromium stalls with its display; the display is the one named and restarted.
    let (child, reason) = restarted(&mut rx).await;
    assert_eq!(child, "display", "{reason}");
    assert!(reason.starts_with("display hung: "), "{reason}");
    assert!(warned_hung("display", before.display));
    drop(stopped);
    wait_status(&desktop, Duration::from_secs(5), |s| {
        *s == DesktopStatus::Ready
    })
    .await;
    assert_display_restarted(&desktop, &before).await;
    assert!(!pid_alive(before.display), "the hung Xvnc was not killed");
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_x11vnc_is_restarted_alone_and_its_shared_memory_removed() {
    captured_logs();
    if skip(XVFB_X11VNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let events = EventBus::new();
    let mut rx = events.subscribe();
    let desktop = Desktop::start(
        hang_config(xvfb_x11vnc_config(dir.path())),
        events,
        CancellationToken::new(),
    )
    .await
    .expect("start");
    let before = desktop.pids();
    let x11vnc = before.vnc.expect("x11vnc pid");
    assert!(shm_segments_of(x11vnc) > 0, "x11vnc made no segments");

    let stopped = Stopped::new(x11vnc);
    let (child, reason) = restarted(&mut rx).await;
    assert_eq!(child, "vnc", "{reason}");
    assert!(reason.starts_with("vnc hung: "), "{reason}");
    assert!(warned_hung("vnc", x11vnc));
    drop(stopped);
    // Stopped, it could not act on SIGTERM; killed, it left its segments, which the
    // supervisor removed when it reaped it.
    assert!(!pid_alive(x11vnc), "the hung x11vnc was not killed");
    assert_eq!(shm_segments_of(x11vnc), 0, "the killed x11vnc's segments");
    wait_status(&desktop, Duration::from_secs(5), |s| {
        *s == DesktopStatus::Ready
    })
    .await;
    assert_vnc_restarted_alone(&desktop, &before).await;
    shutdown_and_check(desktop).await;
}

/// A viewer through the whole RFB handshake (3.8, security None, a shared session), as
/// the relay connects on a viewer's behalf.
async fn rfb_viewer(target: &VncTarget) -> UnixStream {
    let VncTarget::Unix(path) = target else {
        panic!("the VNC server is on a Unix socket: {target}")
    };
    let mut vnc = UnixStream::connect(path).await.expect("connect");
    let mut banner = [0u8; 12];
    vnc.read_exact(&mut banner).await.expect("banner");
    if &banner == b"RFB 003.003\n" {
        // How Xvnc refuses a blacklisted peer: RFB 3.3, security type 0 and the reason.
        let refused = vnc.read_u32().await.expect("security type") == 0;
        let mut reason = String::new();
        let _ = vnc.read_to_string(&mut reason).await;
        panic!("the VNC server speaks RFB 3.3 (refused: {refused}): {reason:?}");
    }
    vnc.write_all(b"RFB 003.008\n").await.expect("version");
    let count = vnc.read_u8().await.expect("security types");
    let mut types = vec![0u8; usize::from(count)];
    vnc.read_exact(&mut types).await.expect("security types");
    assert!(types.contains(&1), "no security type None: {types:?}");
    vnc.write_all(&[1]).await.expect("choose None");
    assert_eq!(vnc.read_u32().await.expect("SecurityResult"), 0);
    vnc.write_all(&[1]).await.expect("ClientInit, shared");
    let mut init = [0u8; 24];
    vnc.read_exact(&mut init).await.expect("ServerInit");
    let name = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
    let mut name = vec![0u8; name as usize];
    vnc.read_exact(&mut name).await.expect("desktop name");
    vnc
}

/// Whether the server still serves `vnc`: a framebuffer update for a full request.
async fn still_served(vnc: &mut UnixStream) -> bool {
    // FramebufferUpdateRequest, not incremental, 16x16 at 0,0.
    let request = [3, 0, 0, 0, 0, 0, 0, 16, 0, 16];
    if vnc.write_all(&request).await.is_err() {
        return false;
    }
    let reply = tokio::time::timeout(Duration::from_secs(10), vnc.read_u8()).await;
    matches!(reply, Ok(Ok(0)))
}

/// Four hang timeouts of a healthy desktop under its probes, a viewer connected: nothing
/// restarts, the status never leaves Ready, the viewer is still served and a new one
/// taken, and the probes did run (each child answered several).
async fn healthy_desktop_is_left_alone(cfg: DesktopConfig) {
    let events = EventBus::new();
    let mut rx = events.subscribe();
    let desktop = Desktop::start(hang_config(cfg), events, CancellationToken::new())
        .await
        .expect("start");
    let before = desktop.pids();
    let mut viewer = rfb_viewer(&desktop.vnc_target()).await;
    let mut status = desktop.status();
    status.mark_unchanged();
    let changed = tokio::time::timeout(4 * HANG, status.changed()).await;
    assert!(
        changed.is_err(),
        "the status changed to {:?}; the log:\n{}",
        *status.borrow(),
        log_tail()
    );
    assert_eq!(desktop.pids(), before, "a healthy child was restarted");
    assert!(
        matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Empty)),
        "an event was published"
    );
    assert!(
        still_served(&mut viewer).await,
        "the viewer was cut off by the probes"
    );
    // Xvnc blacklists a peer that connects without authenticating too often, and every
    // client of its socket is one peer: the probes must not get the next viewer refused.
    let mut next = rfb_viewer(&desktop.vnc_target()).await;
    assert!(still_served(&mut next).await, "a new viewer was refused");
    drop(next);
    for pid in [Some(before.display), before.vnc, Some(before.chromium)]
        .into_iter()
        .flatten()
    {
        let answered = answered_probes(pid);
        assert!(answered >= 4, "pid {pid} answered {answered} probes");
    }
    drop(viewer);
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_xvnc_desktop_is_left_alone_by_its_probes() {
    captured_logs();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_desktop_is_left_alone(config(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_xvfb_x11vnc_desktop_is_left_alone_by_its_probes() {
    captured_logs();
    if skip(XVFB_X11VNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_desktop_is_left_alone(xvfb_x11vnc_config(dir.path())).await;
}
