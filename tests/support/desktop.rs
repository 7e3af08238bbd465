//! Helpers for the desktop tests against the real stack (tests/desktop*.rs): the desktop's
//! config, a one-page HTTP server, CDP, what a pid listens on, waits on status and events,
//! and a shutdown that checks every child is gone.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::Browser;
use futures_util::StreamExt;
use grexal_sidecar::desktop::{
    ChromiumSandbox, Desktop, DesktopConfig, DesktopStatus, DisplayBackend, RestartPolicy, RunAs,
};
use grexal_sidecar::platform::events::PlatformEvent;
use grexal_sidecar::relay::VncTarget;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

pub const TITLE: &str = "grexal desktop test page";

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
