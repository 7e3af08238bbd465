//! The daemon's log at `--log trace` while a takeover's cookie condition polls a real
//! (headless) Chromium: `Storage.getCookies` answers with every cookie's value, and
//! chromiumoxide and tungstenite would log each message whole at trace. A test binary of
//! its own: it installs the global subscriber (and with it the `log` crate's bridge).
//!
//! Skipped only when Chromium is missing and `CI` is unset.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grexal_sidecar::cli::LogFormat;
use grexal_sidecar::desktop::{CdpEndpoint, DesktopStatus};
use grexal_sidecar::manifest::{AuthMode, Connection, Manifest};
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::relay::VncTarget;
use grexal_sidecar::takeover::{
    Browser, BrowserError, By, CookieCondition, Outcome, SuccessCondition, TakeoverLimits,
    TakeoverManager, TakeoverRequest,
};
use tokio::sync::watch;

const CHROMIUM: &str = "/usr/bin/chromium";
const CANARY: &str = "SESSION-CANARY-5e1f0d";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The headless Chromium as the takeover manager sees a desktop's browser.
struct Headless {
    cdp: CdpEndpoint,
    status: watch::Sender<DesktopStatus>,
}

impl Browser for Headless {
    fn cdp(&self) -> CdpEndpoint {
        self.cdp.clone()
    }
    fn serves(
        &self,
        _: &CdpEndpoint,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        // One headless Chromium, never restarted.
        Box::pin(async { true })
    }
    fn vnc_target(&self) -> VncTarget {
        // No viewer connects in this test.
        VncTarget::Tcp("127.0.0.1:9".parse().expect("addr"))
    }
    fn status(&self) -> watch::Receiver<DesktopStatus> {
        self.status.subscribe()
    }
    fn bring_to_front(
        &self,
        _login_url: Option<String>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BrowserError>> + Send + '_>>
    {
        Box::pin(async { Ok(()) })
    }
}

/// Chromium killed by PID (SIGTERM) when the test ends, however it ends.
struct Chromium(std::process::Child);

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn skip() -> bool {
    if Path::new(CHROMIUM).exists() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {CHROMIUM} is missing"
    );
    eprintln!("skipping: {CHROMIUM} not installed");
    true
}

/// Headless Chromium on an ephemeral CDP port, as the desktop starts it (its own profile
/// and HOME, loopback only); returns it with its CDP endpoint.
fn start_chromium(dir: &Path) -> (Chromium, CdpEndpoint) {
    let profile = dir.join("profile");
    let child = std::process::Command::new(CHROMIUM)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-breakpad",
            "--password-store=basic",
            "--test-type",
            // The browser never looks up an outside name.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .env("HOME", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let chromium = Chromium(child);
    let port_file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&port_file).unwrap_or_default();
        let mut lines = text.lines();
        if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
            let cdp = CdpEndpoint {
                http_url: format!("http://127.0.0.1:{port}"),
                ws_url: format!("ws://127.0.0.1:{port}{path}"),
            };
            return (chromium, cdp);
        }
        assert!(
            Instant::now() < deadline,
            "Chromium wrote no DevToolsActivePort"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A site on 127.0.0.1 whose `/login` sets the session cookie with the canary value.
async fn login_site() -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/login",
        get(|| async {
            (
                [("set-cookie", format!("sid={CANARY}; Path=/; Max-Age=600"))],
                axum::response::Html("<h1>welcome</h1>"),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Opens `url` in a new tab through CDP's HTTP endpoint (`PUT /json/new?url`); returns
/// once Chromium answers with its status line.
async fn open_tab(cdp: &CdpEndpoint, url: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = cdp.http_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect CDP http");
    let request =
        format!("PUT /json/new?{url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("CDP answers")
            .expect("read");
        assert!(n > 0, "CDP closed without answering");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_values_polled_over_cdp_stay_out_of_a_trace_log() {
    if skip() {
        return;
    }
    let logs = Captured::default();
    let writer = logs.clone();
    // What `run --log trace` installs, writing to a buffer instead of stderr.
    grexal_sidecar::telemetry::init_with_writer(LogFormat::Text, "trace", move || writer.clone())
        .expect("init");

    let dir = tempfile::tempdir().expect("tempdir");
    let (chromium, cdp) = start_chromium(dir.path());
    let site = login_site().await;
    let manager = TakeoverManager::new(
        Arc::new(Manifest {
            connections: vec![Connection {
                id: "bank".into(),
                display_name: "Bank".into(),
                mode: AuthMode::BrowserLogin { login_url: None },
            }],
            sandbox_template: Some("desktop".into()),
        }),
        Some(Arc::new(Headless {
            cdp: cdp.clone(),
            status: watch::channel(DesktopStatus::Ready).0,
        })),
        EventBus::new(),
        "http://127.0.0.1:9".into(),
        TakeoverLimits {
            condition_poll: Duration::from_millis(100),
            ..TakeoverLimits::default()
        },
    );
    let info = manager
        .request(TakeoverRequest {
            connection_id: "bank".into(),
            reason: "log in".into(),
            timeout: Some(Duration::from_secs(120)),
            success: Some(SuccessCondition {
                url_pattern: None,
                cookie: Some(CookieCondition {
                    name: "sid".into(),
                    domain: "127.0.0.1".into(),
                }),
            }),
        })
        .await
        .expect("takeover");
    // The condition polls (getCookies, without the cookie yet) before the login, too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    open_tab(&cdp, &format!("{site}/login")).await;
    let ended = manager
        .wait(&info.takeover_id, Duration::from_secs(30))
        .await
        .expect("wait");
    // The daemon's condition code read the canary cookie (by name) over CDP.
    assert_eq!(
        (ended.outcome, ended.by),
        (Some(Outcome::Completed), Some(By::Condition))
    );
    // Proof the log is at trace, for tracing's events and the `log` crate's records.
    tracing::trace!(target: "grexal_sidecar::probe", "tracing-probe");
    log::trace!(target: "grexal_sidecar::probe", "log-probe");
    manager.shutdown().await;
    drop(chromium);

    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("tracing-probe") && logs.contains("log-probe"),
        "the log is not at trace:\n{logs}"
    );
    let leaks: Vec<&str> = logs.lines().filter(|l| l.contains(CANARY)).collect();
    assert!(
        leaks.is_empty(),
        "{} log lines carry the cookie's value, e.g. {:?}",
        leaks.len(),
        leaks.first().map(|l| &l[..l.len().min(300)])
    );
}
