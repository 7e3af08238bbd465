//! Helpers for the takeover tests: the three route surfaces served for real (the agent's on
//! a Unix socket with SO_PEERCRED, control and viewer on one loopback TCP listener), a raw
//! HTTP/1.1 client, a fake VNC server, and a fake browser; and, shared by tests/takeover*.rs,
//! a takeover started as the agent starts it and the viewer's WebSocket as a browser opens it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::serve::IncomingStream;
use axum::Router;
use futures_util::StreamExt;
use grexal_sidecar::api::{Peer, Policy};
use grexal_sidecar::desktop::{CdpEndpoint, DesktopStatus};
use grexal_sidecar::manifest::{AuthMode, Connection, Delivery, Manifest};
use grexal_sidecar::platform::events::{EventBus, PlatformEvent};
use grexal_sidecar::relay::VncTarget;
use grexal_sidecar::takeover::{routes, Browser, BrowserError, TakeoverLimits, TakeoverManager};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const BANNER: &[u8] = b"RFB 003.008\n";

pub fn manifest() -> Arc<Manifest> {
    Arc::new(Manifest {
        connections: vec![
            Connection {
                id: "github".into(),
                display_name: "GitHub".into(),
                mode: AuthMode::BrowserLogin {
                    login_url: Some("https://github.com/login".into()),
                },
            },
            Connection {
                id: "openai".into(),
                display_name: "OpenAI".into(),
                mode: AuthMode::SecretInput {
                    fields: vec![],
                    delivery: Delivery::default(),
                },
            },
        ],
        sandbox_template: Some("desktop".into()),
    })
}

/// A VNC server stand-in on 127.0.0.1: sends the RFB banner, then holds the connection
/// until the peer closes. Counts connections (a refused viewer must cause none).
pub struct FakeVnc {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl FakeVnc {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if stream.write_all(BANNER).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        Self { addr, connections }
    }
}

/// A browser whose VNC server is a `FakeVnc` and whose status the test drives.
pub struct FakeBrowser {
    pub vnc: SocketAddr,
    pub status: watch::Sender<DesktopStatus>,
}

impl Browser for FakeBrowser {
    fn cdp(&self) -> CdpEndpoint {
        CdpEndpoint {
            http_url: "http://127.0.0.1:9/".into(),
            ws_url: "ws://127.0.0.1:9/devtools/browser/fake".into(),
        }
    }

    /// The fake has one browser, which never restarts.
    fn serves(
        &self,
        _: &CdpEndpoint,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async { true })
    }

    fn vnc_target(&self) -> VncTarget {
        VncTarget::Tcp(self.vnc)
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

#[derive(Clone)]
struct PeerInfo(Peer);

impl Connected<IncomingStream<'_, UnixListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        PeerInfo(Peer::of(stream.io()).expect("SO_PEERCRED"))
    }
}

/// What `api::serve` does per connection: the peer's credentials into every request.
async fn insert_peer(
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    mut request: Request,
    next: Next,
) -> axum::response::Response {
    request.extensions_mut().insert(peer.0);
    next.run(request).await
}

/// Everything logged in this test process: our crate at TRACE, dependencies at DEBUG.
/// Installed as the global subscriber by the first `Harness::start`, before any takeover
/// code runs, so no callsite's interest is cached without it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

pub fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,grexal_sidecar=trace",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

/// The takeover routes served for real.
pub struct Harness {
    pub manager: TakeoverManager,
    pub events: broadcast::Receiver<Arc<PlatformEvent>>,
    pub agent_socket: PathBuf,
    pub http: SocketAddr,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(browser: Arc<dyn Browser>, limits: TakeoverLimits) -> Self {
        captured_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let bus = EventBus::new();
        let events = bus.subscribe();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = listener.local_addr().expect("addr");
        let manager = TakeoverManager::new(
            manifest(),
            Some(browser),
            bus,
            format!("http://{http}"),
            limits,
        );
        let stop = CancellationToken::new();

        let agent_socket = dir.path().join("sidecar.sock");
        let unix = UnixListener::bind(&agent_socket).expect("bind unix");
        let agent: Router = routes::agent_routes(manager.clone(), Policy::new(None))
            .merge(routes::agent_wait_routes(
                manager.clone(),
                Policy::new(None),
            ))
            .layer(middleware::from_fn(insert_peer));
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(
                unix,
                agent.into_make_service_with_connect_info::<PeerInfo>(),
            )
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await
            .expect("serve agent");
        });

        // In the daemon, control routes sit behind the control endpoint's bearer check.
        let public: Router = Router::new()
            .merge(routes::control_routes(manager.clone()))
            .merge(routes::viewer_routes(manager.clone()))
            .merge(grexal_sidecar::viewer::routes(Default::default()));
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, public)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
                .expect("serve public");
        });
        Self {
            manager,
            events,
            agent_socket,
            http,
            stop,
            _dir: dir,
        }
    }

    /// The next `takeover_requested` event's (id, control token, view token).
    pub async fn requested(&mut self) -> (String, String, String) {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), self.events.recv())
                .await
                .expect("event in time")
                .expect("event");
            if let PlatformEvent::TakeoverRequested {
                takeover_id,
                control_token,
                view_token,
                ..
            } = &*event
            {
                return (
                    takeover_id.clone(),
                    control_token.expose().to_owned(),
                    view_token.expose().to_owned(),
                );
            }
        }
    }

    pub async fn agent(&self, method: &str, target: &str, body: Option<&str>) -> HttpResponse {
        let stream = tokio::net::UnixStream::connect(&self.agent_socket)
            .await
            .expect("connect agent socket");
        http(stream, method, target, &[], body).await
    }

    /// The agent's `GET /v1/takeovers/{id}/wait?timeout_seconds=…`.
    pub async fn wait(&self, id: &str, timeout_seconds: u64) -> HttpResponse {
        let target = format!("/v1/takeovers/{id}/wait?timeout_seconds={timeout_seconds}");
        self.agent("GET", &target, None).await
    }

    pub async fn public(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        let stream = tokio::net::TcpStream::connect(self.http)
            .await
            .expect("connect");
        http(stream, method, target, headers, None).await
    }

    /// A request on the public listener with a takeover token as the bearer.
    pub async fn public_as(&self, method: &str, target: &str, token: &str) -> HttpResponse {
        let bearer = format!("Bearer {token}");
        self.public(method, target, &[("Authorization", &bearer)])
            .await
    }

    pub fn ws_url(&self, id: &str) -> String {
        format!("ws://{}/takeover/{id}/websocket", self.http)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`; reads the whole response.
pub async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    let body = body.unwrap_or("");
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    // Long polls take up to their own timeout; nothing here waits longer than this.
    tokio::time::timeout(Duration::from_secs(120), read_response(&mut stream))
        .await
        .expect("response in time")
}

/// Reads up to the end of the body: by `Content-Length` when given (Chromium's DevTools
/// server keeps the connection open), else to EOF.
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> HttpResponse {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| raw.len() >= split + 4 + n) {
                break;
            }
        }
        let n = stream.read(&mut buf).await.expect("read response");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked: {head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    HttpResponse {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// Polls `f` every 50 ms until it returns true or `deadline` passes.
pub async fn eventually(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !f() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- The takeover and its viewer, as the tests drive them ----

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const LONG: Duration = Duration::from_secs(30);

pub async fn fake() -> (Harness, FakeVnc, Arc<FakeBrowser>) {
    let vnc = FakeVnc::start().await;
    let browser = Arc::new(FakeBrowser {
        vnc: vnc.addr,
        status: watch::channel(DesktopStatus::Ready).0,
    });
    let harness = Harness::start(browser.clone(), TakeoverLimits::default()).await;
    (harness, vnc, browser)
}

pub fn request_body(timeout_s: u64) -> String {
    format!(
        r#"{{"connection_id":"github","reason":"Please log in to GitHub","timeout_seconds":{timeout_s}}}"#
    )
}

pub async fn start(h: &mut Harness, body: &str) -> (String, String, String) {
    let r = h.agent("POST", "/v1/takeovers", Some(body)).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let info = r.json();
    let ids = h.requested().await;
    assert_eq!(info["takeover_id"], ids.0.as_str());
    assert_eq!(info["state"], "live");
    assert_eq!(
        info["viewer_url"],
        format!("http://{}/takeover/{}", h.http, ids.0)
    );
    // The agent never sees a token.
    assert!(!String::from_utf8_lossy(&r.body).contains(&ids.1));
    assert!(!String::from_utf8_lossy(&r.body).contains(&ids.2));
    ids
}

/// Opens the viewer WebSocket offering `binary` and, if given, the token subprotocol.
pub async fn ws_connect(h: &Harness, id: &str, token: Option<&str>) -> Result<Ws, WsError> {
    let mut request = h.ws_url(id).into_client_request()?;
    let protocols = match token {
        Some(t) => format!("binary, grexal.v1.{t}"),
        None => "binary".to_owned(),
    };
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().expect("header"));
    let (ws, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("binary")
    );
    Ok(ws)
}

/// The refusal's HTTP status; panics if the server upgraded.
pub async fn ws_refused(h: &Harness, id: &str, token: Option<&str>) -> u16 {
    match ws_connect(h, id, token).await {
        Ok(_) => panic!("upgraded with token {token:?}"),
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains("RFB"), "{text}");
            assert!(text.contains("\"error\""), "{text}");
            response.status().as_u16()
        }
        Err(other) => panic!("unexpected {other}"),
    }
}

pub async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match tokio::time::timeout(LONG, ws.next())
            .await
            .expect("message in time")
        {
            Some(Ok(Message::Binary(data))) => return data.to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

/// The close frame's (code, reason), skipping any data still in flight.
pub async fn next_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(LONG, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected close, got {other:?}"),
        }
    }
}
