//! Helpers for the desktop tests against the real stack (tests/desktop*.rs): the desktop's
//! config, a one-page HTTP server, CDP, what a pid listens on, waits on status and events,
//! and a shutdown that checks every child is gone.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::network::{CookieParam, TimeSinceEpoch};
use chromiumoxide::cdp::browser_protocol::storage::{GetCookiesParams, SetCookiesParams};
use chromiumoxide::Browser;
use futures_util::StreamExt;
use grexal_sidecar::desktop::{
    ChromiumSandbox, Desktop, DesktopConfig, DesktopPids, DesktopStatus, DisplayBackend,
    RestartPolicy, RunAs,
};
use grexal_sidecar::platform::events::PlatformEvent;
use grexal_sidecar::relay::VncTarget;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

pub const TITLE: &str = "grexal desktop test page";
/// The cookie `plant_committed_cookie` sets, which a restarted Chromium must still have.
pub const COOKIE: &str = "grexal_session_canary";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// True when the test must be skipped (binaries missing and not in CI).
pub fn skip(binaries: &[&str]) -> bool {
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

pub fn config(dir: &Path) -> DesktopConfig {
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
            ..RestartPolicy::default()
        },
        stop_grace: Duration::from_secs(3),
        ..DesktopConfig::default()
    }
}

/// A one-page HTTP server on 127.0.0.1.
pub async fn page_server() -> String {
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

pub struct Cdp {
    pub browser: Browser,
    handler: tokio::task::JoinHandle<()>,
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

pub async fn cdp(desktop: &Desktop) -> Cdp {
    let (browser, mut handler) = Browser::connect(desktop.cdp().ws_url)
        .await
        .expect("cdp connect");
    let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
    Cdp { browser, handler }
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie still "exists" for kill(0); look at its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Local addresses of the TCP sockets `pid` listens on, as /proc hex strings.
pub fn listening_tcp(pid: u32) -> Vec<String> {
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

pub fn is_loopback(local: &str) -> bool {
    let addr = local.split(':').next().unwrap_or_default();
    addr.ends_with("7F") && addr.len() == 8 || addr == "00000000000000000000000001000000"
}

pub async fn rfb_banner(target: &VncTarget) -> Vec<u8> {
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

pub async fn wait_status(
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

pub async fn next_event(
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

/// The next `browser_restarted`: its child, restart count and reason.
pub async fn next_restart(
    events: &mut broadcast::Receiver<Arc<PlatformEvent>>,
    timeout: Duration,
) -> (String, u32, String) {
    let event = next_event(events, timeout, |e| {
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
    (child, restarts, reason)
}

/// Checks that the display restarted and took everything on it along (killed or hung, the
/// same checks): a new display and Chromium, the old Chromium gone, and RFB and CDP
/// answering again. Returns the new pids.
pub async fn assert_display_restarted(desktop: &Desktop, before: &DesktopPids) -> DesktopPids {
    let after = desktop.pids();
    assert_ne!(after.display, before.display);
    assert_ne!(after.chromium, before.chromium);
    assert!(!pid_alive(before.chromium));
    assert!(rfb_banner(&desktop.vnc_target())
        .await
        .starts_with(b"RFB 003."));
    let cdp = cdp(desktop).await;
    cdp.browser
        .version()
        .await
        .expect("cdp after display restart");
    after
}

/// Checks that x11vnc restarted alone: a new one serving RFB, the display and the agent's
/// browser left as they were. Returns the new pids.
pub async fn assert_vnc_restarted_alone(desktop: &Desktop, before: &DesktopPids) -> DesktopPids {
    let after = desktop.pids();
    assert_ne!(after.vnc, before.vnc);
    assert_eq!(
        (after.display, after.chromium),
        (before.display, before.chromium),
        "the display and the agent's browser are left alone"
    );
    assert!(rfb_banner(&desktop.vnc_target())
        .await
        .starts_with(b"RFB 003."));
    after
}

/// The directory of Chromium's profile lock socket: `SingletonSocket` in the profile links
/// to the socket in it.
pub fn singleton_dir(profile: &Path) -> PathBuf {
    let socket = std::fs::read_link(profile.join("SingletonSocket")).expect("SingletonSocket");
    socket
        .parent()
        .expect("the socket's directory")
        .to_path_buf()
}

pub fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
}

pub async fn shutdown_and_check(desktop: Desktop) {
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
pub fn xvfb_x11vnc() -> DisplayBackend {
    DisplayBackend::XvfbX11vnc {
        xvfb: "/usr/bin/Xvfb".into(),
        x11vnc: "/usr/bin/x11vnc".into(),
    }
}

/// What a desktop on the default backend, Xvnc, runs.
pub const XVNC_BINARIES: &[&str] = &["/usr/bin/Xvnc", "/usr/bin/chromium"];

/// What a desktop on the Xvfb + x11vnc backend runs.
pub const XVFB_X11VNC_BINARIES: &[&str] =
    &["/usr/bin/Xvfb", "/usr/bin/x11vnc", "/usr/bin/chromium"];

/// [`config`] on the Xvfb + x11vnc backend.
pub fn xvfb_x11vnc_config(dir: &Path) -> DesktopConfig {
    DesktopConfig {
        backend: xvfb_x11vnc(),
        ..config(dir)
    }
}

pub const NOBODY: u32 = 65534;

/// A temp dir the unprivileged desktop user can traverse (tempfile makes it 0700 root).
pub fn traversable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// The unprivileged user the desktop runs as in these tests.
pub const NOBODY_USER: RunAs = RunAs {
    uid: NOBODY,
    gid: NOBODY,
};

/// Opens the test page in a new tab over CDP and checks its title: the browser renders.
pub async fn check_page_renders(desktop: &Desktop, url: &str) {
    let cdp = cdp(desktop).await;
    let page = cdp.browser.new_page(url).await.expect("new page");
    page.wait_for_navigation().await.expect("navigate");
    assert_eq!(
        page.get_title().await.expect("title").as_deref(),
        Some(TITLE)
    );
}

/// True when the test must be skipped because it cannot switch users (not root, CI unset).
pub fn skip_unless_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    assert!(std::env::var_os("CI").is_none(), "CI is set but not root");
    eprintln!("skipping: switching to another user needs root");
    true
}

/// Whether any of Chromium's cookie database files contains `needle`.
pub fn cookie_db_contains(profile: &Path, needle: &[u8]) -> bool {
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

/// Sets `COOKIE` on the page server at `url` and waits until Chromium has written it to the
/// cookie database in `profile`: a restarted Chromium has it only if it kept the profile.
pub async fn plant_committed_cookie(desktop: &Desktop, url: &str, profile: &Path) {
    {
        let cdp = cdp(desktop).await;
        let page = cdp.browser.new_page(url).await.expect("page");
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
    while !cookie_db_contains(profile, COOKIE.as_bytes()) {
        assert!(
            Instant::now() < deadline,
            "cookie never reached the cookie database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the browser (over CDP) holds `COOKIE` for 127.0.0.1.
pub async fn has_cookie(desktop: &Desktop) -> bool {
    let cdp = cdp(desktop).await;
    let cookies = cdp
        .browser
        .execute(GetCookiesParams::default())
        .await
        .expect("cookies")
        .result
        .cookies;
    cookies
        .iter()
        .any(|c| c.name == COOKIE && c.domain == "127.0.0.1")
}

/// How many System V shared memory segments `pid` created that still exist.
pub fn shm_segments_of(pid: u32) -> usize {
    let table = std::fs::read_to_string("/proc/sysvipc/shm").expect("/proc/sysvipc/shm");
    table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(4) == Some(pid.to_string().as_str()))
        .count()
}
