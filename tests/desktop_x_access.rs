//! Who may use the desktop's display and steer its VNC server: only holders of the
//! display's cookie open it, and no one can make x11vnc listen on TCP or either VNC server
//! connect out. Real stack, as in `desktop.rs`.

#[path = "support/desktop.rs"]
mod desktop_support;

use std::path::Path;
use std::time::{Duration, Instant};

use desktop_support::*;
use grexal_sidecar::desktop::{Desktop, DisplayBackend};
use grexal_sidecar::platform::events::EventBus;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

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
