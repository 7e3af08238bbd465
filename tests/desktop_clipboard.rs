//! The desktop's clipboard stays in the desktop: what Chromium copies (perhaps something the
//! user copied in their logged-in session) never goes out to a VNC client, with either
//! display backend. The relay filters only what viewers send; the server's messages reach
//! every viewer as the server wrote them, view-only watchers included, so the VNC server
//! itself must not send its clipboard. A client straight on the server's socket therefore
//! sees exactly what a watcher would.
//!
//! That the clipboard really held the text is shown by a witness: a second x11vnc on the
//! same display with default options, which does send it. Tests skip only when a binary is
//! missing and `CI` is unset.

#[path = "support/desktop.rs"]
mod desktop_support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::Browser;
use desktop_support::{init_tracing, skip};
use futures_util::StreamExt;
use grexal_sidecar::desktop::{ChromiumSandbox, Desktop, DesktopConfig, DisplayBackend};
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::relay::VncTarget;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// What Chromium copies; each copy appends a number, so every copy is a change.
const CANARY: &str = "grexal-clipboard-canary";
/// How long the witness may take to see the clipboard. x11vnc watches the selections only
/// from a while after its latest client connected (8 s once a window manager's atoms exist,
/// which Chromium creates; 45 s otherwise).
const WITNESS_DEADLINE: Duration = Duration::from_secs(60);
/// How long copies go on after the witness saw one, for our server to send it if it would.
const AFTER_WITNESS: Duration = Duration::from_secs(5);

fn config(dir: &Path, backend: DisplayBackend) -> DesktopConfig {
    DesktopConfig {
        backend,
        profile_dir: dir.join("profile"),
        run_dir: dir.join("run"),
        chromium_sandbox: ChromiumSandbox::Off,
        chromium_extra_args: vec![
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1".into(),
        ],
        stop_grace: Duration::from_secs(3),
        ..DesktopConfig::default()
    }
}

/// An RFB client that never asks for pixels: after the handshake a server has nothing to
/// send it but a bell or its clipboard. It keeps all it receives.
struct Watcher {
    received: Arc<Mutex<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Watcher {
    /// Through the handshake (security None, shared) and SetEncodings (Raw only: no
    /// extended clipboard, as any plain client; a server sends those the clipboard whole).
    async fn connect(socket: &Path) -> Watcher {
        let mut s = tokio::net::UnixStream::connect(socket)
            .await
            .expect("connect to the VNC socket");
        let mut banner = [0u8; 12];
        s.read_exact(&mut banner).await.expect("banner");
        assert!(banner.starts_with(b"RFB 003."), "{banner:?}");
        s.write_all(b"RFB 003.008\n").await.expect("version");
        let count = s.read_u8().await.expect("security count");
        let mut types = vec![0u8; usize::from(count)];
        s.read_exact(&mut types).await.expect("security types");
        assert!(types.contains(&1), "no security type None: {types:?}");
        s.write_all(&[1]).await.expect("choose None");
        assert_eq!(s.read_u32().await.expect("security result"), 0);
        s.write_all(&[1]).await.expect("ClientInit, shared");
        let mut init = [0u8; 20];
        s.read_exact(&mut init).await.expect("ServerInit");
        let name_len = s.read_u32().await.expect("name length");
        let mut name = vec![0u8; name_len as usize];
        s.read_exact(&mut name).await.expect("name");
        s.write_all(&[2, 0, 0, 1, 0, 0, 0, 0])
            .await
            .expect("SetEncodings");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Watcher { received, reader }
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().expect("lock").clone()
    }
}

/// The server-to-client messages in `bytes` (no FramebufferUpdate: none was asked for):
/// the texts of its ServerCutTexts, and what could not be parsed.
fn cut_texts(bytes: &[u8]) -> (Vec<String>, Vec<u8>) {
    let mut texts = Vec::new();
    let mut rest = bytes;
    loop {
        match rest.first() {
            None => return (texts, Vec::new()),
            // Bell.
            Some(2) => rest = &rest[1..],
            Some(3) if rest.len() >= 8 => {
                let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
                let end = (8 + len).min(rest.len());
                texts.push(String::from_utf8_lossy(&rest[8..end]).into_owned());
                rest = &rest[end..];
            }
            Some(_) => return (texts, rest.to_vec()),
        }
    }
}

/// A second x11vnc on the display, with default selection handling, killed by PID on drop
/// (SIGTERM: a killed x11vnc leaves System V shared memory behind).
struct Witness(std::process::Child);

impl Drop for Witness {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_witness(display: &str, xauthority: &Path, socket: &Path, log: &Path) -> Witness {
    let child = std::process::Command::new("/usr/bin/x11vnc")
        .args(["-display", display, "-auth"])
        .arg(xauthority)
        .arg("-unixsock")
        .arg(socket)
        .args(["-rfbport", "0", "-rfbportv6", "0", "-noipv6"])
        .args(["-nopw", "-forever", "-shared", "-noxdamage"])
        .args(["-noremote", "-novncconnect"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("witness log"))
        .spawn()
        .expect("spawn the witness x11vnc");
    let mut witness = Witness(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = tokio::net::UnixStream::connect(socket).await {
            let mut banner = [0u8; 12];
            let read = tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut banner));
            if matches!(read.await, Ok(Ok(_))) && banner.starts_with(b"RFB 003.") {
                return witness;
            }
        }
        if let Ok(Some(status)) = witness.0.try_wait() {
            panic!(
                "the witness x11vnc exited ({status:?}, signal {:?}): {}",
                status.signal(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the witness x11vnc never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Copies `text` in Chromium as a user would (select it, copy), which puts it on the X
/// clipboard; true when the copy command succeeded.
async fn copy_in_chromium(page: &chromiumoxide::Page, text: &str) -> bool {
    let script = format!(
        "(() => {{ let p = document.getElementById('c'); \
         if (!p) {{ p = document.createElement('p'); p.id = 'c'; document.body.append(p); }} \
         p.textContent = {}; getSelection().selectAllChildren(p); \
         return document.execCommand('copy'); }})()",
        serde_json::Value::from(text)
    );
    let params = EvaluateParams::builder()
        .expression(script)
        // execCommand('copy') needs a user's gesture.
        .user_gesture(true)
        .return_by_value(true)
        .build()
        .expect("params");
    page.evaluate(params)
        .await
        .expect("evaluate")
        .into_value::<bool>()
        .unwrap_or(false)
}

async fn clipboard_never_reaches_vnc_clients(backend: DisplayBackend) {
    init_tracing();
    let mut tools = vec!["/usr/bin/chromium", "/usr/bin/x11vnc"];
    match &backend {
        DisplayBackend::Xvnc { .. } => tools.extend(["/usr/bin/Xvnc", "/usr/bin/vncconfig"]),
        DisplayBackend::XvfbX11vnc { .. } => tools.push("/usr/bin/Xvfb"),
    }
    if skip(&tools) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let desktop = Desktop::start(
        config(dir.path(), backend.clone()),
        EventBus::new(),
        CancellationToken::new(),
    )
    .await
    .expect("start");
    let display = desktop.display();
    let xauthority = dir.path().join("run/Xauthority");
    let VncTarget::Unix(socket) = desktop.vnc_target() else {
        panic!("the VNC server is not on a Unix socket");
    };
    // Ours first: x11vnc's clock for watching the selections starts at its latest client.
    let ours = Watcher::connect(&socket).await;

    // Xvnc: not even a holder of the display's cookie turns the sending back on.
    let override_attempt = if matches!(backend, DisplayBackend::Xvnc { .. }) {
        let vncconfig = |args: &[&str]| {
            std::process::Command::new("/usr/bin/vncconfig")
                .args(["-display", &display])
                .args(args)
                .env_clear()
                .env("XAUTHORITY", &xauthority)
                .output()
                .expect("vncconfig")
        };
        vncconfig(&["-set", "SendCutText=1"]);
        let now = vncconfig(&["-get", "SendCutText"]);
        Some(String::from_utf8_lossy(&now.stdout).trim().to_owned())
    } else {
        None
    };

    let witness_socket: PathBuf = dir.path().join("witness.sock");
    let witness_log = dir.path().join("witness.log");
    let _witness = start_witness(&display, &xauthority, &witness_socket, &witness_log).await;
    let witness = Watcher::connect(&witness_socket).await;

    let (browser, mut handler) = Browser::connect(desktop.cdp().ws_url)
        .await
        .expect("cdp connect");
    let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let page = browser.new_page("about:blank").await.expect("page");

    let started = Instant::now();
    let mut seen_at = None;
    let mut copies = 0;
    loop {
        copies += 1;
        assert!(
            copy_in_chromium(&page, &format!("{CANARY}-{copies}")).await,
            "Chromium's copy command failed"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        if seen_at.is_none()
            && cut_texts(&witness.received())
                .0
                .iter()
                .any(|t| t.contains(CANARY))
        {
            seen_at = Some(Instant::now());
        }
        match seen_at {
            Some(at) if at.elapsed() >= AFTER_WITNESS => break,
            Some(_) => {}
            None => assert!(
                started.elapsed() < WITNESS_DEADLINE,
                "{backend:?}: the witness x11vnc saw no copy in {WITNESS_DEADLINE:?}, so the \
                 clipboard was never set; witness log:\n{}",
                std::fs::read_to_string(&witness_log).unwrap_or_default()
            ),
        }
    }
    let received = ours.received();
    drop((ours, witness));
    handler.abort();
    drop(browser);
    desktop.shutdown().await;

    eprintln!(
        "{backend:?}: {copies} copies, the witness saw one after {:?}",
        seen_at.map(|at| at - started)
    );
    let (texts, unparsed) = cut_texts(&received);
    assert_eq!(
        texts,
        Vec::<String>::new(),
        "{backend:?}: the VNC server sent its clipboard to a client"
    );
    assert!(
        unparsed.is_empty(),
        "{backend:?}: unexpected server messages {unparsed:?}"
    );
    if let Some(now) = override_attempt {
        assert_eq!(now, "0", "vncconfig turned Xvnc's SendCutText back on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xvnc_never_sends_the_desktops_clipboard_to_a_client() {
    clipboard_never_reaches_vnc_clients(DisplayBackend::Xvnc {
        xvnc: "/usr/bin/Xvnc".into(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x11vnc_never_sends_the_desktops_clipboard_to_a_client() {
    clipboard_never_reaches_vnc_clients(DisplayBackend::XvfbX11vnc {
        xvfb: "/usr/bin/Xvfb".into(),
        x11vnc: "/usr/bin/x11vnc".into(),
    })
    .await;
}
