//! The desktop against the real stack: Xvnc / Xvfb + x11vnc, and Chromium: it starts and
//! serves CDP and RFB on loopback or a Unix socket only, its children restart on their own
//! (a crashed display takes the others with it) until too many crashes fail it, Chromium's
//! temp dir (its profile lock's socket) goes with each launch, and a bad run dir is refused
//! before anything starts; a takeover's tab is brought to the front. `desktop_users.rs`
//! runs it as another user, `desktop_x_access.rs` checks who may use its display.
//!
//! Each test has its own display (`-displayfd`), profile and run dir. Tests skip only
//! when a binary is missing and `CI` is unset.

#[path = "support/desktop.rs"]
mod desktop_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use desktop_support::*;
use grexal_sidecar::desktop::{Desktop, DesktopError, DesktopStatus, DisplayBackend};
use grexal_sidecar::platform::events::{EventBus, PlatformEvent};
use grexal_sidecar::relay::VncTarget;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xvnc_desktop_starts_serves_cdp_and_vnc_on_loopback_only() {
    init_tracing();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = page_server().await;
    let started = Instant::now();
    let desktop = Desktop::start(
        config(dir.path()),
        EventBus::new(),
        CancellationToken::new(),
    )
    .await
    .expect("start");
    eprintln!("xvnc desktop start-to-ready: {:?}", started.elapsed());
    assert_eq!(*desktop.status().borrow(), DesktopStatus::Ready);
    let display = desktop.display();
    let number = display.strip_prefix(':').expect("display form");
    assert!(Path::new(&format!("/tmp/.X11-unix/X{number}")).exists());

    // VNC: RFB on a Unix socket, and the display server listens on no TCP port at all.
    let target = desktop.vnc_target();
    assert!(matches!(target, VncTarget::Unix(_)), "{target:?}");
    assert!(rfb_banner(&target).await.starts_with(b"RFB 003."));
    let pids = desktop.pids();
    assert_eq!(listening_tcp(pids.display), Vec::<String>::new());

    // CDP: loopback only, and it drives the browser.
    let chromium_listens = listening_tcp(pids.chromium);
    assert!(
        !chromium_listens.is_empty() && chromium_listens.iter().all(|a| is_loopback(a)),
        "{chromium_listens:?}"
    );
    let cdp = cdp(&desktop).await;
    let page = cdp.browser.new_page(url.as_str()).await.expect("new page");
    page.wait_for_navigation().await.expect("navigate");
    assert_eq!(
        page.get_title().await.expect("title").as_deref(),
        Some(TITLE)
    );

    // Shrink and move the window first, so bringing it to the front has work to do.
    let target_id = Some(page.target_id().clone());
    let window = cdp
        .browser
        .execute(
            chromiumoxide::cdp::browser_protocol::browser::GetWindowForTargetParams {
                target_id: target_id.clone(),
            },
        )
        .await
        .expect("window");
    let small = chromiumoxide::cdp::browser_protocol::browser::Bounds {
        left: Some(100),
        top: Some(100),
        width: Some(600),
        height: Some(400),
        window_state: None,
    };
    cdp.browser
        .execute(
            chromiumoxide::cdp::browser_protocol::browser::SetWindowBoundsParams::new(
                window.result.window_id,
                small,
            ),
        )
        .await
        .expect("shrink");
    desktop
        .bring_browser_to_front(None)
        .await
        .expect("bring to front");
    let window = cdp
        .browser
        .execute(
            chromiumoxide::cdp::browser_protocol::browser::GetWindowForTargetParams { target_id },
        )
        .await
        .expect("window");
    let bounds = &window.result.bounds;
    eprintln!("window after bring_browser_to_front: {bounds:?}");
    // Chromium keeps an X11 window that is exactly screen-sized one pixel smaller.
    assert_eq!((bounds.left, bounds.top), (Some(0), Some(0)));
    assert!(
        bounds.width >= Some(1279) && bounds.height >= Some(799),
        "{bounds:?}"
    );
    drop(cdp);
    shutdown_and_check(desktop).await;
}

/// A takeover shows the tab of the login page's site, not whichever tab Chromium happens to
/// list first (its order is not the tabs' order, and the first is often the blank start
/// tab, where the user's clicks and keys would go nowhere): the agent opened the login page,
/// then another tab, which is in front; the login page's tab is brought to the front.
/// Without a tab on that site, the tab in front stays in front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_is_brought_to_the_front_on_the_login_sites_tab_else_the_tab_in_front() {
    init_tracing();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let site = page_server().await;
    let login = format!("{site}login");
    let other = "data:text/html,<title>other</title>another tab";
    let desktop = Desktop::start(
        config(dir.path()),
        EventBus::new(),
        CancellationToken::new(),
    )
    .await
    .expect("start");
    let cdp = cdp(&desktop).await;
    let login_page = cdp
        .browser
        .new_page(login.as_str())
        .await
        .expect("login tab");
    let other_page = cdp.browser.new_page(other).await.expect("other tab");
    let login_id = login_page.target_id().as_ref().to_owned();
    let other_id = other_page.target_id().as_ref().to_owned();
    until_visible(&desktop, &other_id).await;

    desktop
        .bring_browser_to_front(Some(&login))
        .await
        .expect("bring to front");
    assert_eq!(
        visible_pages(&desktop).await,
        vec![login_id.clone()],
        "the login page's tab, and it alone, is shown"
    );

    // No tab on the login page's site, or no login_url: the tab in front is not switched.
    cdp_http_get(&desktop, &format!("/json/activate/{other_id}")).await;
    until_visible(&desktop, &other_id).await;
    for login_url in [Some("https://elsewhere.test/login"), None] {
        desktop
            .bring_browser_to_front(login_url)
            .await
            .expect("bring to front");
        assert_eq!(
            visible_pages(&desktop).await,
            vec![other_id.clone()],
            "{login_url:?}"
        );
    }
    drop((login_page, other_page, cdp));
    shutdown_and_check(desktop).await;
}

/// The page targets whose document is visible (the selected tab of each window), asked
/// over CDP's own HTTP list and each page's WebSocket, not through chromiumoxide.
async fn visible_pages(desktop: &Desktop) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&cdp_http_get(desktop, "/json/list").await).expect("json list");
    let mut visible = Vec::new();
    for page in list.as_array().expect("a list") {
        if page["type"] != "page" {
            continue;
        }
        let ws_url = page["webSocketDebuggerUrl"].as_str().expect("ws url");
        if evaluate(ws_url, "document.visibilityState").await == "visible" {
            visible.push(page["id"].as_str().expect("id").to_owned());
        }
    }
    visible
}

async fn until_visible(desktop: &Desktop, id: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while visible_pages(desktop).await != vec![id.to_owned()] {
        assert!(Instant::now() < end, "{id} never alone in front");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `Runtime.evaluate` in a page, by its own WebSocket.
async fn evaluate(ws_url: &str, expression: &str) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("page websocket");
    let call = serde_json::json!({"id": 1, "method": "Runtime.evaluate",
        "params": {"expression": expression, "returnByValue": true}});
    ws.send(Message::text(call.to_string()))
        .await
        .expect("send");
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message.expect("read") else {
            continue;
        };
        let reply: serde_json::Value = serde_json::from_str(&text).expect("json");
        if reply["id"] == 1 {
            return reply["result"]["result"]["value"].clone();
        }
    }
    panic!("the page closed its WebSocket");
}

/// A GET to Chromium's CDP HTTP endpoint; the body (by its Content-Length: Chromium keeps
/// the connection open).
async fn cdp_http_get(desktop: &Desktop, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let http = desktop.cdp().http_url;
    let host = http.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect CDP http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if body.len() >= length {
                return body[..length].to_owned();
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut buf))
            .await
            .expect("CDP http answered in time")
            .expect("read");
        assert!(n > 0, "CDP http closed mid-answer");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xvfb_x11vnc_backend_serves_rfb_on_a_unix_socket_and_no_tcp_port() {
    init_tracing();
    if skip(XVFB_X11VNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = xvfb_x11vnc_config(dir.path());
    let started = Instant::now();
    let desktop = Desktop::start(cfg, EventBus::new(), CancellationToken::new())
        .await
        .expect("start");
    eprintln!(
        "xvfb+x11vnc desktop start-to-ready: {:?}",
        started.elapsed()
    );
    let target = desktop.vnc_target();
    // RFB on a Unix socket in the run dir, and neither Xvfb nor x11vnc on any TCP port.
    assert_eq!(target, VncTarget::Unix(dir.path().join("run/vnc.sock")));
    assert!(rfb_banner(&target).await.starts_with(b"RFB 003."));
    let pids = desktop.pids();
    assert_eq!(
        listening_tcp(pids.vnc.expect("x11vnc pid")),
        Vec::<String>::new()
    );
    assert_eq!(listening_tcp(pids.display), Vec::<String>::new());
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_chromium_restarts_with_its_cookies() {
    init_tracing();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = page_server().await;
    let events = EventBus::new();
    let mut rx = events.subscribe();
    let cfg = config(dir.path());
    let profile = cfg.profile_dir.clone();
    let desktop = Desktop::start(cfg, events, CancellationToken::new())
        .await
        .expect("start");
    let before = desktop.pids();
    let cdp_before = desktop.cdp().http_url;
    plant_committed_cookie(&desktop, &url, &profile).await;

    sigkill(before.chromium);
    let (child, restarts, reason) = next_restart(&mut rx, Duration::from_secs(60)).await;
    assert_eq!((child.as_str(), restarts), ("chromium", 1), "{reason}");
    assert!(reason.contains("signal: 9"), "{reason}");
    wait_status(&desktop, Duration::from_secs(5), |s| {
        *s == DesktopStatus::Ready
    })
    .await;
    // The restarted Chromium serves CDP where the agent was told it is.
    assert_eq!(desktop.cdp().http_url, cdp_before);
    let after = desktop.pids();
    assert_ne!(after.chromium, before.chromium);
    assert_eq!(
        after.display, before.display,
        "the display must not restart with chromium"
    );
    assert!(!pid_alive(before.chromium));

    assert!(has_cookie(&desktop).await, "cookie lost over the restart");
    shutdown_and_check(desktop).await;
}

/// Chromium's profile lock makes a directory for its socket in TMPDIR at every launch and
/// removes it on no exit of ours (SIGKILL, SIGTERM): in /tmp, which no one cleans, every
/// launch left one (and its socket) for the sandbox's life. Its TMPDIR is the run dir's
/// `tmp`, made afresh for each launch and removed when the desktop stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromiums_singleton_dir_is_in_the_run_dir_and_goes_with_each_launch() {
    init_tracing();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let events = EventBus::new();
    let mut rx = events.subscribe();
    let cfg = config(dir.path());
    let tmp = cfg.run_dir.join("tmp");
    let desktop = Desktop::start(cfg.clone(), events, CancellationToken::new())
        .await
        .expect("start");
    let first = singleton_dir(&cfg.profile_dir);
    assert_eq!(
        first.parent(),
        Some(tmp.as_path()),
        "chromium's singleton dir is not in the run dir's tmp"
    );
    assert!(first.is_dir(), "{first:?}");

    sigkill(desktop.pids().chromium);
    let (child, restarts, reason) = next_restart(&mut rx, Duration::from_secs(60)).await;
    assert_eq!((child.as_str(), restarts), ("chromium", 1), "{reason}");
    let second = singleton_dir(&cfg.profile_dir);
    assert_ne!(second, first);
    assert_eq!(second.parent(), Some(tmp.as_path()));
    assert!(second.is_dir(), "{second:?}");
    assert!(!first.exists(), "the killed chromium's {first:?} is left");

    shutdown_and_check(desktop).await;
    assert!(
        !second.exists(),
        "the stopped chromium's {second:?} is left"
    );
    assert!(!tmp.exists(), "chromium's TMPDIR {tmp:?} is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_singleton_lock_of_a_dead_pid_is_cleared() {
    init_tracing();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    std::fs::create_dir_all(&cfg.profile_dir).expect("profile");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let mut dead = std::process::Command::new("true").spawn().expect("true");
    let dead_pid = dead.id();
    dead.wait().expect("wait");
    std::os::unix::fs::symlink(
        format!("{}-{dead_pid}", host.trim()),
        cfg.profile_dir.join("SingletonLock"),
    )
    .expect("lock");
    std::os::unix::fs::symlink(
        "/tmp/nonexistent-scoped-dir/SingletonSocket",
        cfg.profile_dir.join("SingletonSocket"),
    )
    .expect("socket");
    std::os::unix::fs::symlink("1234567890", cfg.profile_dir.join("SingletonCookie"))
        .expect("cookie");
    let desktop = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect("start over a stale lock");
    let lock =
        std::fs::read_link(cfg.profile_dir.join("SingletonLock")).expect("chromium's own lock");
    assert!(
        lock.to_string_lossy()
            .ends_with(&format!("-{}", desktop.pids().chromium)),
        "{lock:?}"
    );
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_display_restarts_everything() {
    init_tracing();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let events = EventBus::new();
    let mut rx = events.subscribe();
    let desktop = Desktop::start(config(dir.path()), events, CancellationToken::new())
        .await
        .expect("start");
    let before = desktop.pids();
    sigkill(before.display);
    let (child, _, reason) = next_restart(&mut rx, Duration::from_secs(60)).await;
    assert_eq!(child, "display", "{reason}");
    assert_display_restarted(&desktop, &before).await;
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_x11vnc_restarts_alone_on_its_socket() {
    init_tracing();
    if skip(XVFB_X11VNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = xvfb_x11vnc_config(dir.path());
    let events = EventBus::new();
    let mut rx = events.subscribe();
    let desktop = Desktop::start(cfg, events, CancellationToken::new())
        .await
        .expect("start");
    let before = desktop.pids();
    let killed = before.vnc.expect("x11vnc pid");
    // x11vnc keeps its framebuffer in System V segments and never marks them for removal.
    assert!(shm_segments_of(killed) > 0, "x11vnc made no segments");
    sigkill(killed);
    let (child, _, reason) = next_restart(&mut rx, Duration::from_secs(60)).await;
    assert_eq!(child, "vnc", "{reason}");
    // Killed, it left them; the supervisor removed them when it reaped it (else a few
    // hundred crashes exhaust kernel.shmmni and no x11vnc starts again).
    assert_eq!(shm_segments_of(killed), 0, "the killed x11vnc's segments");
    let after = assert_vnc_restarted_alone(&desktop, &before).await;
    assert_eq!(
        desktop.vnc_target(),
        VncTarget::Unix(dir.path().join("run/vnc.sock"))
    );
    assert_eq!(
        listening_tcp(after.vnc.expect("x11vnc pid")),
        Vec::<String>::new()
    );
    shutdown_and_check(desktop).await;
    assert_eq!(
        shm_segments_of(after.vnc.expect("x11vnc pid")),
        0,
        "the stopped x11vnc's segments"
    );
}

/// A Chromium (a wrapper script in `dir`) that exits 42 at launch while the returned
/// `broken` file exists, and is the real one otherwise. Returns (wrapper, broken).
fn chromium_that_crashes_while_broken(dir: &Path) -> (PathBuf, PathBuf) {
    let broken = dir.join("broken");
    let wrapper = dir.join("chromium");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ -e '{}' ] && exit 42\nexec /usr/bin/chromium \"$@\"\n",
            broken.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    (wrapper, broken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_crashes_fail_the_desktop() {
    init_tracing();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A Chromium that starts once, then crashes on every launch after `broken` exists.
    let (wrapper, broken) = chromium_that_crashes_while_broken(dir.path());
    let mut cfg = config(dir.path());
    cfg.chromium = wrapper;
    cfg.restart.max_restarts = 2;
    let events = EventBus::new();
    let mut rx = events.subscribe();
    let desktop = Desktop::start(cfg, events, CancellationToken::new())
        .await
        .expect("start");
    let pids = desktop.pids();
    std::fs::write(&broken, b"").expect("break");
    sigkill(pids.chromium);
    let status = wait_status(&desktop, Duration::from_secs(30), |s| {
        matches!(s, DesktopStatus::Failed { .. })
    })
    .await;
    eprintln!("final status: {status:?}");
    let event = next_event(&mut rx, Duration::from_secs(5), |e| {
        matches!(e, PlatformEvent::DesktopFailed { .. })
    })
    .await;
    assert!(
        matches!(&event, PlatformEvent::DesktopFailed { child, reason } if child == "chromium" && reason.contains("42")),
        "{event:?}"
    );
    // Giving up stops everything, the display included.
    assert!(!pid_alive(pids.display));
    assert!(matches!(
        desktop.bring_browser_to_front(None).await,
        Err(grexal_sidecar::desktop::DesktopError::Failed { .. })
    ));
    desktop.shutdown().await;
}

/// A failed desktop is not failed for good: after `retry_failed_after` everything is
/// started afresh. While Chromium still cannot start the desktop fails again (and says
/// so again); once it can, the desktop is ready, with new children, and says so as a
/// restart of the whole desktop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_desktop_is_started_afresh_after_a_pause() {
    init_tracing();
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A Chromium that crashes on every launch while `broken` exists.
    let (wrapper, broken) = chromium_that_crashes_while_broken(dir.path());
    let mut cfg = config(dir.path());
    cfg.chromium = wrapper;
    cfg.restart.max_restarts = 1;
    cfg.restart.retry_failed_after = Some(Duration::from_secs(2));
    let events = EventBus::new();
    let mut rx = events.subscribe();
    let desktop = Desktop::start(cfg, events, CancellationToken::new())
        .await
        .expect("start");
    let before = desktop.pids();
    std::fs::write(&broken, b"").expect("break");
    sigkill(before.chromium);
    let failed = |e: &PlatformEvent| matches!(e, PlatformEvent::DesktopFailed { .. });
    next_event(&mut rx, Duration::from_secs(30), failed).await;
    assert!(!pid_alive(before.display), "giving up stops everything");
    // Still broken at the first retry: failed again, and said again.
    let again = next_event(&mut rx, Duration::from_secs(30), failed).await;
    assert!(
        matches!(&again, PlatformEvent::DesktopFailed { child, reason } if child == "chromium" && reason.contains("42")),
        "{again:?}"
    );
    assert!(matches!(
        *desktop.status().borrow(),
        DesktopStatus::Failed { .. }
    ));
    std::fs::remove_file(&broken).expect("mend");
    let restarted = next_event(&mut rx, Duration::from_secs(60), |e| {
        matches!(e, PlatformEvent::BrowserRestarted { .. })
    })
    .await;
    assert!(
        matches!(&restarted, PlatformEvent::BrowserRestarted { child, reason, .. }
            if child == "display" && reason.contains("started afresh") && reason.contains("42")),
        "{restarted:?}"
    );
    wait_status(&desktop, Duration::from_secs(10), |s| {
        matches!(s, DesktopStatus::Ready)
    })
    .await;
    let after = desktop.pids();
    assert_ne!(after.display, before.display);
    assert_ne!(after.chromium, before.chromium);
    assert!(pid_alive(after.display) && pid_alive(after.chromium));
    // And the browser answers: the takeover's first step works again.
    desktop
        .bring_browser_to_front(None)
        .await
        .expect("the browser is back");
    shutdown_and_check(desktop).await;
}

#[tokio::test]
async fn a_run_dir_too_long_for_chromiums_singleton_socket_is_refused_before_anything_starts() {
    // 107 bytes is the longest socket path, and the deepest socket under the run dir is
    // Chromium's profile lock's, `{run_dir}/tmp/org.chromium.Chromium.XXXXXX/SingletonSocket`:
    // the run dir may have 107 - 49 bytes.
    const LONGEST: usize = 107 - "/tmp/org.chromium.Chromium.XXXXXX/SingletonSocket".len();
    assert_eq!(grexal_sidecar::desktop::MAX_RUN_DIR_BYTES, LONGEST);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    let base = dir.path().display().to_string();
    let pad = LONGEST + 1 - base.len() - 1;
    cfg.run_dir = dir.path().join("r".repeat(pad));
    assert_eq!(cfg.run_dir.as_os_str().len(), LONGEST + 1);
    // Programs that do not exist: a start that got as far as spawning would fail otherwise.
    cfg.backend = DisplayBackend::Xvnc {
        xvnc: dir.path().join("no-xvnc"),
    };
    let err = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect_err("must refuse");
    assert!(
        matches!(&err, DesktopError::RunDirTooLong { dir, len, max: LONGEST } if *dir == cfg.run_dir && *len == LONGEST + 1),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("--desktop-run-dir"),
        "the message names the flag: {err}"
    );
    assert!(!cfg.run_dir.exists(), "the run dir was created");

    // One byte shorter fits, and the start goes on (to the missing Xvnc).
    cfg.run_dir = dir.path().join("r".repeat(pad - 1));
    let err = Desktop::start(cfg, EventBus::new(), CancellationToken::new())
        .await
        .expect_err("no xvnc");
    assert!(
        matches!(
            &err,
            DesktopError::Spawn {
                child: "display",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_directory_that_cannot_be_made_is_named() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    // Its parent is a file: no directory can be made there (a read-only /run fails alike).
    std::fs::write(dir.path().join("file"), b"").expect("file");
    cfg.run_dir = dir.path().join("file/desktop");
    cfg.chromium = dir.path().join("no-chromium");
    cfg.backend = DisplayBackend::Xvnc {
        xvnc: dir.path().join("no-xvnc"),
    };
    let err = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect_err("must fail");
    assert!(
        err.to_string().contains(&*cfg.run_dir.to_string_lossy()),
        "the error does not name the directory: {err}"
    );
}
