//! The desktop against the real stack: Xvnc / Xvfb + x11vnc, and Chromium.
//!
//! Each test has its own display (`-displayfd`), profile and run dir. Tests skip only
//! when a binary is missing and `CI` is unset.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::network::{CookieParam, TimeSinceEpoch};
use chromiumoxide::cdp::browser_protocol::storage::{GetCookiesParams, SetCookiesParams};
use chromiumoxide::Browser;
use futures_util::StreamExt;
use grexal_sidecar::desktop::{
    ChromiumSandbox, Desktop, DesktopConfig, DesktopError, DesktopStatus, DisplayBackend,
    RestartPolicy, RunAs,
};
use grexal_sidecar::platform::events::{EventBus, PlatformEvent};
use grexal_sidecar::relay::VncTarget;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const TITLE: &str = "grexal desktop test page";
const COOKIE: &str = "grexal_session_canary";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// True when the test must be skipped (binaries missing and not in CI).
fn skip(binaries: &[&str]) -> bool {
    let missing: Vec<_> = binaries.iter().filter(|b| !Path::new(b).exists()).collect();
    if missing.is_empty() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {missing:?} are missing"
    );
    eprintln!("skipping: {missing:?} not installed");
    true
}

fn config(dir: &Path) -> DesktopConfig {
    DesktopConfig {
        profile_dir: dir.join("profile"),
        run_dir: dir.join("run"),
        chromium_sandbox: ChromiumSandbox::Off,
        chromium_extra_args: vec![
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1".into(),
        ],
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            max_restarts: 5,
            window: Duration::from_secs(120),
        },
        stop_grace: Duration::from_secs(3),
        ..DesktopConfig::default()
    }
}

/// A one-page HTTP server on 127.0.0.1.
async fn page_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("<!doctype html><html><head><title>{TITLE}</title></head><body>hello</body></html>");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://127.0.0.1:{}/", addr.port())
}

struct Cdp {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

async fn cdp(desktop: &Desktop) -> Cdp {
    let (browser, mut handler) = Browser::connect(desktop.cdp().ws_url)
        .await
        .expect("cdp connect");
    let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
    Cdp { browser, handler }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still "exists" for kill(0); look at its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Local addresses of the TCP sockets `pid` listens on, as /proc hex strings.
fn listening_tcp(pid: u32) -> Vec<String> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(String::from)
        })
        .collect();
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                out.push(cols[1].to_owned());
            }
        }
    }
    out
}

fn is_loopback(local: &str) -> bool {
    let addr = local.split(':').next().unwrap_or_default();
    addr.ends_with("7F") && addr.len() == 8 || addr == "00000000000000000000000001000000"
}

async fn rfb_banner(target: &VncTarget) -> Vec<u8> {
    let mut banner = vec![0u8; 12];
    match target {
        VncTarget::Unix(path) => {
            tokio::net::UnixStream::connect(path)
                .await
                .expect("vnc")
                .read_exact(&mut banner)
                .await
        }
        VncTarget::Tcp(addr) => {
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("vnc")
                .read_exact(&mut banner)
                .await
        }
    }
    .expect("banner");
    banner
}

async fn wait_status(
    desktop: &Desktop,
    timeout: Duration,
    want: impl Fn(&DesktopStatus) -> bool,
) -> DesktopStatus {
    let mut status = desktop.status();
    let matched = matches!(
        tokio::time::timeout(timeout, status.wait_for(|s| want(s))).await,
        Ok(Ok(_))
    );
    let last = status.borrow().clone();
    assert!(matched, "status never matched; last {last:?}");
    last
}

async fn next_event(
    events: &mut broadcast::Receiver<Arc<PlatformEvent>>,
    timeout: Duration,
    want: impl Fn(&PlatformEvent) -> bool,
) -> PlatformEvent {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if want(&event) => return (*event).clone(),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            other => panic!("no matching event: {other:?}"),
        }
    }
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
}

async fn shutdown_and_check(desktop: Desktop) {
    let pids = desktop.pids();
    desktop.shutdown().await;
    for pid in [Some(pids.display), pids.vnc, Some(pids.chromium)]
        .into_iter()
        .flatten()
    {
        assert!(!pid_alive(pid), "pid {pid} still alive after shutdown");
    }
}

/// The Xvfb + x11vnc backend with Debian's binaries.
fn xvfb_x11vnc() -> DisplayBackend {
    DisplayBackend::XvfbX11vnc {
        xvfb: "/usr/bin/Xvfb".into(),
        x11vnc: "/usr/bin/x11vnc".into(),
    }
}

/// What a desktop on the Xvfb + x11vnc backend runs.
const XVFB_X11VNC_BINARIES: &[&str] = &["/usr/bin/Xvfb", "/usr/bin/x11vnc", "/usr/bin/chromium"];

/// [`config`] on the Xvfb + x11vnc backend.
fn xvfb_x11vnc_config(dir: &Path) -> DesktopConfig {
    DesktopConfig {
        backend: xvfb_x11vnc(),
        ..config(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xvnc_desktop_starts_serves_cdp_and_vnc_on_loopback_only() {
    init_tracing();
    if skip(&["/usr/bin/Xvnc", "/usr/bin/chromium"]) {
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
        .bring_browser_to_front()
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

/// Whether any of Chromium's cookie database files contains `needle`.
fn cookie_db_contains(profile: &Path, needle: &[u8]) -> bool {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("Cookies"))
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(profile, &mut files);
    files.iter().any(|f| {
        std::fs::read(f).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_chromium_restarts_with_its_cookies() {
    init_tracing();
    if skip(&["/usr/bin/Xvnc", "/usr/bin/chromium"]) {
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
    {
        let cdp = cdp(&desktop).await;
        let page = cdp.browser.new_page(url.as_str()).await.expect("page");
        page.wait_for_navigation().await.expect("navigate");
        page.evaluate(format!(
            "document.cookie = '{COOKIE}=1; max-age=3600; path=/'"
        ))
        .await
        .expect("set cookie");
        // Chromium commits cookies to disk every 30 s or after 512 changes: make 600
        // changes on other hosts so the commit happens now.
        let expires = TimeSinceEpoch::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs_f64()
                + 3600.0,
        );
        let fillers = (0..600)
            .map(|i| {
                CookieParam::builder()
                    .name("filler")
                    .value("1")
                    .domain(format!("filler{i}.test"))
                    .path("/")
                    .expires(expires.clone())
                    .build()
                    .expect("cookie")
            })
            .collect();
        cdp.browser
            .execute(SetCookiesParams::new(fillers))
            .await
            .expect("fillers");
    }
    let deadline = Instant::now() + Duration::from_secs(45);
    while !cookie_db_contains(&profile, COOKIE.as_bytes()) {
        assert!(
            Instant::now() < deadline,
            "cookie never reached the cookie database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    sigkill(before.chromium);
    let event = next_event(&mut rx, Duration::from_secs(60), |e| {
        matches!(e, PlatformEvent::BrowserRestarted { .. })
    })
    .await;
    let PlatformEvent::BrowserRestarted {
        child,
        restarts,
        reason,
    } = event
    else {
        unreachable!()
    };
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

    let cdp = cdp(&desktop).await;
    let cookies = cdp
        .browser
        .execute(GetCookiesParams::default())
        .await
        .expect("cookies")
        .result
        .cookies;
    assert!(
        cookies
            .iter()
            .any(|c| c.name == COOKIE && c.domain == "127.0.0.1"),
        "cookie lost over the restart"
    );
    drop(cdp);
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_singleton_lock_of_a_dead_pid_is_cleared() {
    init_tracing();
    if skip(&["/usr/bin/Xvnc", "/usr/bin/chromium"]) {
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
    if skip(&["/usr/bin/Xvnc", "/usr/bin/chromium"]) {
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
    let event = next_event(&mut rx, Duration::from_secs(60), |e| {
        matches!(e, PlatformEvent::BrowserRestarted { .. })
    })
    .await;
    assert!(
        matches!(&event, PlatformEvent::BrowserRestarted { child, .. } if child == "display"),
        "{event:?}"
    );
    let after = desktop.pids();
    assert_ne!(after.display, before.display);
    assert_ne!(after.chromium, before.chromium);
    assert!(!pid_alive(before.chromium));
    assert!(rfb_banner(&desktop.vnc_target())
        .await
        .starts_with(b"RFB 003."));
    let cdp = cdp(&desktop).await;
    cdp.browser
        .version()
        .await
        .expect("cdp after display restart");
    drop(cdp);
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
    let event = next_event(&mut rx, Duration::from_secs(60), |e| {
        matches!(e, PlatformEvent::BrowserRestarted { .. })
    })
    .await;
    assert!(
        matches!(&event, PlatformEvent::BrowserRestarted { child, .. } if child == "vnc"),
        "{event:?}"
    );
    // Killed, it left them; the supervisor removed them when it reaped it (else a few
    // hundred crashes exhaust kernel.shmmni and no x11vnc starts again).
    assert_eq!(shm_segments_of(killed), 0, "the killed x11vnc's segments");
    let after = desktop.pids();
    assert_ne!(after.vnc, before.vnc);
    // The display and the agent's browser were left alone.
    assert_eq!(
        (after.display, after.chromium),
        (before.display, before.chromium)
    );
    assert_eq!(
        desktop.vnc_target(),
        VncTarget::Unix(dir.path().join("run/vnc.sock"))
    );
    assert!(rfb_banner(&desktop.vnc_target())
        .await
        .starts_with(b"RFB 003."));
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

/// How many System V shared memory segments `pid` created that still exist.
fn shm_segments_of(pid: u32) -> usize {
    let table = std::fs::read_to_string("/proc/sysvipc/shm").expect("/proc/sysvipc/shm");
    table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(4) == Some(pid.to_string().as_str()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_crashes_fail_the_desktop() {
    init_tracing();
    if skip(&["/usr/bin/Xvnc", "/usr/bin/chromium"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A Chromium that starts once, then crashes on every launch after `broken` exists.
    let broken = dir.path().join("broken");
    let wrapper = dir.path().join("chromium");
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
        desktop.bring_browser_to_front().await,
        Err(grexal_sidecar::desktop::DesktopError::Failed { .. })
    ));
    desktop.shutdown().await;
}

/// The `Uid:` and `Gid:` lines of /proc/<pid>/status (real, effective, saved, fs) and
/// its `Groups:` line.
fn ids_of(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no {key} in status of {pid}"))
    };
    (line("Uid:"), line("Gid:"), line("Groups:"))
}

const NOBODY: u32 = 65534;

/// A temp dir the unprivileged desktop user can traverse (tempfile makes it 0700 root).
fn traversable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// True when the test must be skipped because it cannot switch users (not root, CI unset).
const NOBODY_USER: RunAs = RunAs {
    uid: NOBODY,
    gid: NOBODY,
};

/// Opens the test page in a new tab over CDP and checks its title: the browser renders.
async fn check_page_renders(desktop: &Desktop, url: &str) {
    let cdp = cdp(desktop).await;
    let page = cdp.browser.new_page(url).await.expect("new page");
    page.wait_for_navigation().await.expect("navigate");
    assert_eq!(
        page.get_title().await.expect("title").as_deref(),
        Some(TITLE)
    );
}

fn skip_unless_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    assert!(std::env::var_os("CI").is_none(), "CI is set but not root");
    eprintln!("skipping: switching to another user needs root");
    true
}

async fn check_runs_as_nobody(cfg: DesktopConfig, dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let url = page_server().await;
    let desktop = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect("start as nobody");
    let pids = desktop.pids();
    let want = format!("{NOBODY} {NOBODY} {NOBODY} {NOBODY}");
    for pid in [Some(pids.display), pids.vnc, Some(pids.chromium)]
        .into_iter()
        .flatten()
    {
        let (uid, gid, groups) = ids_of(pid);
        assert_eq!(uid, want, "Uid of {pid}");
        assert_eq!(gid, want, "Gid of {pid}");
        assert_eq!(groups, "", "supplementary groups of {pid}");
    }
    for sub in ["profile", "run", "run/chromium-home"] {
        let meta = std::fs::metadata(dir.join(sub)).expect("dir");
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "{sub}");
        assert_eq!(meta.mode() & 0o777, 0o700, "{sub}");
    }
    // Chromium wrote its profile as nobody.
    let prefs = std::fs::metadata(dir.join("profile/Default")).expect("profile written");
    assert_eq!(prefs.uid(), NOBODY);

    // The RFB socket (Xvnc's or x11vnc's): the desktop user's alone.
    let VncTarget::Unix(socket) = desktop.vnc_target() else {
        panic!("not a Unix socket: {:?}", desktop.vnc_target())
    };
    let meta = std::fs::metadata(&socket).expect("rfb socket");
    assert_eq!(meta.mode() & 0o777, 0o600, "{}", socket.display());
    assert_eq!(meta.uid(), NOBODY, "{}", socket.display());

    // The daemon (root) reaches the unprivileged VNC server.
    assert!(rfb_banner(&desktop.vnc_target())
        .await
        .starts_with(b"RFB 003."));

    // CDP drives the unprivileged browser.
    check_page_renders(&desktop, url.as_str()).await;
    shutdown_and_check(desktop).await;

    // A second start reuses the dirs nobody now owns, and its profile.
    let desktop = Desktop::start(cfg, EventBus::new(), CancellationToken::new())
        .await
        .expect("restart as nobody");
    assert_eq!(ids_of(desktop.pids().chromium).0, want);
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xvnc_desktop_runs_as_an_unprivileged_user() {
    init_tracing();
    if skip(&["/usr/bin/Xvnc", "/usr/bin/chromium"]) || skip_unless_root() {
        return;
    }
    let dir = traversable_tempdir();
    let mut cfg = config(dir.path());
    cfg.run_as = Some(NOBODY_USER);
    check_runs_as_nobody(cfg, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xvfb_x11vnc_desktop_runs_as_an_unprivileged_user() {
    init_tracing();
    if skip(XVFB_X11VNC_BINARIES) || skip_unless_root() {
        return;
    }
    let dir = traversable_tempdir();
    let mut cfg = xvfb_x11vnc_config(dir.path());
    cfg.run_as = Some(NOBODY_USER);
    check_runs_as_nobody(cfg, dir.path()).await;
}

/// The processes under `root` (itself included), from `/proc/*/stat`'s parent field.
fn process_tree(root: u32) -> Vec<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(all.iter().filter(|&&p| parent_of(p) == Some(parent)));
        i += 1;
    }
    tree
}

/// A process's arguments. Split at spaces too: Chromium's forked children rewrite their
/// title into one space-separated string.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0 || b == b' ')
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_runs_with_its_sandbox_as_an_unprivileged_user() {
    init_tracing();
    if skip(&["/usr/bin/Xvnc", "/usr/bin/chromium"]) || skip_unless_root() {
        return;
    }
    let url = page_server().await;
    let dir = traversable_tempdir();
    let mut cfg = config(dir.path());
    cfg.run_as = Some(NOBODY_USER);
    // Required, so a missing sandbox fails the start instead of falling back.
    cfg.chromium_sandbox = ChromiumSandbox::On;
    let desktop = Desktop::start(cfg, EventBus::new(), CancellationToken::new())
        .await
        .expect("start with chromium's sandbox");
    // A page renders (in a sandboxed renderer) and CDP reads it.
    check_page_renders(&desktop, url.as_str()).await;
    let browser = desktop.pids().chromium;
    let args = cmdline(browser);
    assert!(!args.is_empty(), "browser {browser} has no command line");
    assert!(
        !args.iter().any(|a| a == "--no-sandbox"),
        "browser runs with --no-sandbox: {args:?}"
    );
    // The namespace sandbox: its renderers live in user namespaces of their own.
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let browser_ns = ns(browser).expect("browser's user namespace");
    let renderers: Vec<u32> = process_tree(browser)
        .into_iter()
        .filter(|&p| cmdline(p).iter().any(|a| a == "--type=renderer"))
        .collect();
    assert!(!renderers.is_empty(), "no renderer under {browser}");
    for renderer in &renderers {
        let renderer_ns = ns(*renderer).expect("renderer's user namespace");
        assert_ne!(
            renderer_ns, browser_ns,
            "renderer {renderer} shares the browser's user namespace"
        );
    }
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_mode_as_root() {
    init_tracing();
    if skip(&["/usr/bin/Xvnc", "/usr/bin/chromium"]) || skip_unless_root() {
        return;
    }
    // Required as root: refused before anything is started (the display binary does not
    // exist, so getting further would fail differently).
    let dir = traversable_tempdir();
    let mut cfg = config(dir.path());
    cfg.chromium_sandbox = ChromiumSandbox::On;
    cfg.backend = DisplayBackend::Xvnc {
        xvnc: dir.path().join("no-xvnc"),
    };
    let err = Desktop::start(cfg, EventBus::new(), CancellationToken::new())
        .await
        .expect_err("must refuse");
    assert!(
        matches!(&err, DesktopError::SandboxUnavailable { reason } if reason.contains("root")),
        "{err:?}"
    );
    // Auto as root falls back to --no-sandbox, and the browser starts.
    let mut cfg = config(dir.path());
    cfg.chromium_sandbox = ChromiumSandbox::Auto;
    let desktop = Desktop::start(cfg, EventBus::new(), CancellationToken::new())
        .await
        .expect("auto starts as root");
    let args = cmdline(desktop.pids().chromium);
    assert!(args.iter().any(|a| a == "--no-sandbox"), "{args:?}");
    shutdown_and_check(desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_empty_profile_of_another_user_is_refused() {
    init_tracing();
    if skip_unless_root() {
        return;
    }
    let dir = traversable_tempdir();
    let mut cfg = config(dir.path());
    cfg.run_as = Some(NOBODY_USER);
    // A profile written by root: its files would stay unwritable for nobody.
    std::fs::create_dir(&cfg.profile_dir).expect("profile");
    std::fs::write(cfg.profile_dir.join("Local State"), b"{}").expect("state");
    // A binary that does not exist: had the refusal not come first, the start would fail
    // with a spawn error instead.
    cfg.chromium = dir.path().join("no-chromium");
    cfg.backend = DisplayBackend::Xvnc {
        xvnc: dir.path().join("no-xvnc"),
    };
    let err = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect_err("must refuse");
    assert!(
        matches!(&err, DesktopError::ForeignDir { dir, owner: 0, user: NOBODY } if *dir == cfg.profile_dir),
        "{err:?}"
    );
    // An empty one (an image may create it ahead of time) is adopted.
    std::fs::remove_file(cfg.profile_dir.join("Local State")).expect("rm");
    let err = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect_err("no xvnc");
    assert!(
        matches!(&err, DesktopError::Spawn { child: "display", program, .. } if program.ends_with("/no-xvnc")),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-xvnc"), "{err}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&cfg.profile_dir).expect("profile");
    assert_eq!(meta.uid(), NOBODY);
}

#[tokio::test]
async fn a_run_dir_too_long_for_the_vnc_socket_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    // 107 bytes is the longest socket path; the run dir leaves one byte too few.
    let base = dir.path().display().to_string();
    let pad = 107 - "/vnc.sock".len() - base.len();
    cfg.run_dir = dir.path().join("r".repeat(pad));
    // Programs that do not exist: a start that got as far as spawning would fail otherwise.
    cfg.backend = DisplayBackend::Xvnc {
        xvnc: dir.path().join("no-xvnc"),
    };
    let err = Desktop::start(cfg.clone(), EventBus::new(), CancellationToken::new())
        .await
        .expect_err("must refuse");
    let socket = cfg.run_dir.join("vnc.sock");
    assert!(
        matches!(&err, DesktopError::SocketPathTooLong { path, len: 108, max: 107 } if *path == socket),
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

// ---- Who may use the display and steer the VNC server ----

/// A uid that is neither root nor the desktop's user.
const STRANGER: u32 = 1234;

/// What the tests of this section run besides the desktop: the clients that speak to the
/// display (`x11-utils`, `tigervnc-common`, x11vnc as its own remote control), `setpriv`.
const X_CLIENTS: &[&str] = &[
    "/usr/bin/xprop",
    "/usr/bin/vncconfig",
    "/usr/bin/x11vnc",
    "/usr/bin/setpriv",
];

/// `PROGRAM ARGS...` on `display`, with nothing else in its environment: as `STRANGER`
/// when `xauthority` is `None`, else as root presenting the cookie in `xauthority`.
fn x_client(
    display: &str,
    xauthority: Option<&Path>,
    program: &str,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("10");
    if xauthority.is_none() {
        let id = STRANGER.to_string();
        cmd.args(["setpriv", "--reuid", &id, "--regid", &id, "--clear-groups"]);
    }
    cmd.args(["env", "-i", "PATH=/usr/bin:/bin"])
        .arg(format!("DISPLAY={display}"));
    if let Some(path) = xauthority {
        cmd.arg(format!("XAUTHORITY={}", path.display()));
    }
    cmd.arg(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run an X client")
}

/// A desktop as nobody on `backend`, in `dir`; `None` to skip.
async fn desktop_as_nobody(dir: &Path, backend: DisplayBackend) -> Option<Desktop> {
    let binaries: Vec<&str> = match &backend {
        DisplayBackend::Xvnc { .. } => vec!["/usr/bin/Xvnc", "/usr/bin/chromium"],
        DisplayBackend::XvfbX11vnc { .. } => XVFB_X11VNC_BINARIES.to_vec(),
    };
    if skip(&binaries) || skip(X_CLIENTS) || skip_unless_root() {
        return None;
    }
    let mut cfg = config(dir);
    cfg.backend = backend;
    cfg.run_as = Some(NOBODY_USER);
    Some(
        Desktop::start(cfg, EventBus::new(), CancellationToken::new())
            .await
            .expect("start as nobody"),
    )
}

fn xvnc() -> DisplayBackend {
    DisplayBackend::Xvnc {
        xvnc: "/usr/bin/Xvnc".into(),
    }
}

/// For `within`, checks every 50 ms that `bad` has not happened; panics with what `bad`
/// saw if it has.
async fn never_within(within: Duration, bad: impl Fn() -> Option<String>) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(seen) = bad() {
            panic!("{seen}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_of_the_cookie_open_the_display() {
    init_tracing();
    for backend in [xvnc(), xvfb_x11vnc()] {
        let dir = traversable_tempdir();
        let Some(desktop) = desktop_as_nobody(dir.path(), backend.clone()).await else {
            return;
        };
        let display = desktop.display();
        let xauthority = dir.path().join("run/Xauthority");
        let (stranger, holder) = tokio::task::spawn_blocking({
            let (display, xauthority) = (display.clone(), xauthority.clone());
            move || {
                let args = ["-root", "-len", "1", "WM_NAME"];
                (
                    x_client(&display, None, "xprop", &args),
                    x_client(&display, Some(&xauthority), "xprop", &args),
                )
            }
        })
        .await
        .expect("join");
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(&xauthority).ok();
        shutdown_and_check(desktop).await;
        assert!(
            !stranger.status.success(),
            "{backend:?}: uid {STRANGER} opened {display} without the cookie: {stranger:?}"
        );
        assert!(
            holder.status.success(),
            "{backend:?}: the cookie did not open {display}: {holder:?}"
        );
        let meta = meta.expect("the Xauthority file");
        assert!(meta.is_file());
        assert_eq!(
            (meta.mode() & 0o777, meta.uid(), meta.gid()),
            (0o600, NOBODY, NOBODY),
            "{backend:?}"
        );
    }
}

/// `x11vnc -R rfbport:PORT`, sent over X properties, once by a stranger and once by a
/// holder of the display's cookie, would make x11vnc listen on every interface with no
/// password. It never listens on TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_can_make_x11vnc_listen_on_tcp() {
    init_tracing();
    let dir = traversable_tempdir();
    let Some(desktop) = desktop_as_nobody(dir.path(), xvfb_x11vnc()).await else {
        return;
    };
    let vnc = desktop.pids().vnc.expect("x11vnc");
    let display = desktop.display();
    let xauthority = dir.path().join("run/Xauthority");
    let mut asked = Vec::new();
    for holder in [None, Some(xauthority.as_path())] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let out = tokio::task::spawn_blocking({
            let (display, holder) = (display.clone(), holder.map(Path::to_path_buf));
            move || {
                x_client(
                    &display,
                    holder.as_deref(),
                    "x11vnc",
                    &["-R", &format!("rfbport:{port}")],
                )
            }
        })
        .await
        .expect("join");
        asked.push(out);
        never_within(Duration::from_secs(2), || {
            let listens = listening_tcp(vnc);
            (!listens.is_empty()).then(|| {
                format!("x11vnc listens on TCP {listens:?} after `-R rfbport:{port}` (cookie: {holder:?})")
            })
        })
        .await;
    }
    shutdown_and_check(desktop).await;
    eprintln!("x11vnc -R: {asked:?}");
}

/// Accepts one connection on 127.0.0.1 within `wait`; returns what the peer sent first.
async fn reverse_listener(wait: Duration) -> (u16, tokio::task::JoinHandle<Option<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let (mut stream, _) = tokio::time::timeout(wait, listener.accept())
            .await
            .ok()?
            .ok()?;
        // Accepted: the VNC server connected out. What it sent first, if anything.
        let mut banner = vec![0u8; 12];
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut banner))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        banner.truncate(n);
        Some(banner)
    });
    (port, task)
}

/// `vncconfig -connect`, through Xvnc's VNC extension, would make Xvnc connect out to
/// any host with the live desktop (security None). A stranger cannot open the display.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_make_xvnc_connect_out() {
    init_tracing();
    let dir = traversable_tempdir();
    let Some(desktop) = desktop_as_nobody(dir.path(), xvnc()).await else {
        return;
    };
    let (port, got) = reverse_listener(Duration::from_secs(5)).await;
    let display = desktop.display();
    let out = tokio::task::spawn_blocking(move || {
        x_client(
            &display,
            None,
            "vncconfig",
            &["-connect", &format!("127.0.0.1::{port}")],
        )
    })
    .await
    .expect("join");
    let got = got.await.expect("join");
    shutdown_and_check(desktop).await;
    assert_eq!(got, None, "Xvnc connected out and sent {got:?}; {out:?}");
}

/// The VNC_CONNECT root-window property would make x11vnc connect out (even with
/// `-noremote`). Neither a stranger nor a holder of the display's cookie can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_can_make_x11vnc_connect_out() {
    init_tracing();
    let dir = traversable_tempdir();
    let Some(desktop) = desktop_as_nobody(dir.path(), xvfb_x11vnc()).await else {
        return;
    };
    let display = desktop.display();
    let xauthority = dir.path().join("run/Xauthority");
    let mut results = Vec::new();
    for holder in [None, Some(xauthority.clone())] {
        // x11vnc polls the property a few times a second; a connection comes within 1 s.
        let (port, got) = reverse_listener(Duration::from_secs(5)).await;
        let out = tokio::task::spawn_blocking({
            let (display, holder) = (display.clone(), holder.clone());
            move || {
                x_client(
                    &display,
                    holder.as_deref(),
                    "xprop",
                    &[
                        "-root",
                        "-f",
                        "VNC_CONNECT",
                        "8s",
                        "-set",
                        "VNC_CONNECT",
                        &format!("127.0.0.1:{port}"),
                    ],
                )
            }
        })
        .await
        .expect("join");
        results.push((holder, got.await.expect("join"), out));
    }
    shutdown_and_check(desktop).await;
    for (holder, got, out) in results {
        assert_eq!(
            got, None,
            "x11vnc connected out (cookie: {holder:?}) and sent {got:?}; xprop: {out:?}"
        );
    }
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
