//! Helpers for tests/relay*.rs: real VNC servers, a relay route, a WebSocket client adapter,
//! a controlling viewer through the relay to a fake VNC server.
#![allow(dead_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use grexal_sidecar::relay::{
    accept_viewer, token_from_protocols, Access, RelayHandle, RelayLimits, VncTarget,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Skips (returns false) when a binary is missing, unless CI is set: then it fails.
pub fn have(binary: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file()))
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{binary} is required when CI is set"
        );
        eprintln!("skipping: {binary} not installed");
    }
    found
}

/// A child killed by PID on drop.
pub struct Child(pub std::process::Child, pub &'static str);

impl Drop for Child {
    /// SIGTERM first: a killed x11vnc leaves its System V shared memory behind for good,
    /// and enough of that makes every later x11vnc fail to start. SIGKILL if it lingers.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with `-displayfd FD` and returns the display number it chose.
fn spawn_with_displayfd(name: &'static str, mut cmd: std::process::Command) -> (Child, u32) {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
    // pipe() fds are not close-on-exec, so the child inherits `write` under its number.
    cmd.arg("-displayfd").arg(write.as_raw_fd().to_string());
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = Child(
        cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}")),
        name,
    );
    drop(write);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(read);
        let mut s = String::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = f.read(&mut byte) {
            if byte[0] == b'\n' {
                break;
            }
            s.push(byte[0] as char);
        }
        let _ = tx.send(s);
    });
    let display = rx
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{name} wrote no display"));
    let n = display
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}: bad display {display:?}"));
    (child, n)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until the VNC server at `target` greets with `RFB 003.`.
pub async fn wait_rfb(target: &VncTarget) {
    let start = Instant::now();
    loop {
        let mut greeting = [0u8; 12];
        let ok = match target {
            VncTarget::Tcp(a) => match TcpStream::connect(a).await {
                Ok(mut s) => read_greeting(&mut s, &mut greeting).await,
                Err(_) => false,
            },
            VncTarget::Unix(p) => match tokio::net::UnixStream::connect(p).await {
                Ok(mut s) => read_greeting(&mut s, &mut greeting).await,
                Err(_) => false,
            },
        };
        if ok {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "VNC server at {target} never spoke RFB"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read_greeting<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8; 12]) -> bool {
    use tokio::io::AsyncReadExt;
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(buf)).await,
        Ok(Ok(_))
    ) && buf.starts_with(b"RFB 003.")
}

/// Xvfb + x11vnc, on a loopback TCP port or on a Unix socket (as the daemon runs it).
pub struct X11vnc {
    pub target: VncTarget,
    _vnc: Child,
    _xvfb: Child,
}

/// x11vnc on a loopback port, or with `unix_dir` on `{unix_dir}/vnc.sock` and no TCP port.
pub async fn start_x11vnc(unix_dir: Option<&Path>) -> X11vnc {
    let mut xvfb = std::process::Command::new("Xvfb");
    xvfb.args(["-screen", "0", "320x240x24", "-nolisten", "tcp"]);
    let (xvfb, display) = spawn_with_displayfd("Xvfb", xvfb);
    let mut vnc = std::process::Command::new("x11vnc");
    vnc.args(["-display", &format!(":{display}")]);
    let target = match unix_dir {
        Some(dir) => {
            let sock = dir.join("vnc.sock");
            vnc.arg("-unixsock")
                .arg(&sock)
                .args(["-rfbport", "0", "-rfbportv6", "0", "-noipv6"]);
            VncTarget::unix(sock)
        }
        None => {
            let port = free_port();
            vnc.args(["-rfbport", &port.to_string(), "-localhost"]);
            VncTarget::tcp(SocketAddr::from(([127, 0, 0, 1], port))).unwrap()
        }
    };
    let vnc = vnc
        .args(["-nopw", "-forever", "-shared", "-noxdamage", "-quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn x11vnc");
    wait_rfb(&target).await;
    X11vnc {
        target,
        _vnc: Child(vnc, "x11vnc"),
        _xvfb: xvfb,
    }
}

/// Xvnc with RFB on a Unix socket only.
pub struct Xvnc {
    pub target: VncTarget,
    _vnc: Child,
}

pub async fn start_xvnc(dir: &Path) -> Xvnc {
    let sock: PathBuf = dir.join("vnc.sock");
    let mut cmd = std::process::Command::new("Xvnc");
    cmd.args([
        "-geometry",
        "320x240",
        "-depth",
        "24",
        "-rfbport",
        "-1",
        "-SecurityTypes",
        "None",
    ])
    .arg("-rfbunixpath")
    .arg(&sock)
    .args(["-nolisten", "tcp"]);
    let (vnc, _display) = spawn_with_displayfd("Xvnc", cmd);
    let target = VncTarget::unix(sock);
    wait_rfb(&target).await;
    Xvnc { target, _vnc: vnc }
}

/// A server with `/relay/{control|view}` calling the relay; each started relay's handle
/// is sent on `handles`. When `token` is set, a handshake offering another token is refused.
pub struct RelayServer {
    pub addr: SocketAddr,
    pub handles: mpsc::UnboundedReceiver<RelayHandle>,
    pub stop: CancellationToken,
}

impl RelayServer {
    /// The relay of the next viewer this server upgraded.
    pub async fn next_relay(&mut self) -> RelayHandle {
        self.handles.recv().await.expect("a relay for the viewer")
    }
}

#[derive(Clone)]
struct RouteState {
    target: VncTarget,
    limits: RelayLimits,
    handles: mpsc::UnboundedSender<RelayHandle>,
    token: Option<String>,
}

async fn route(
    State(st): State<RouteState>,
    UrlPath(mode): UrlPath<String>,
    mut request: axum::extract::Request,
) -> Response {
    let access = match mode.as_str() {
        "control" => Access::Control,
        "view" => Access::ViewOnly,
        _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
    };
    if let Some(want) = &st.token {
        if token_from_protocols(request.headers()).as_deref() != Some(want.as_str()) {
            return axum::http::StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let limits = st.limits.clone();
    let Ok((response, pending)) = accept_viewer(&mut request) else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    tokio::spawn(async move {
        let socket = pending
            .socket(limits.viewer_send_buffer)
            .await
            .expect("upgrade");
        let handle =
            RelayHandle::spawn(socket, st.target, access, limits, CancellationToken::new());
        let _ = st.handles.send(handle);
    });
    response
}

pub async fn start_relay_server(
    target: VncTarget,
    limits: RelayLimits,
    token: Option<String>,
) -> RelayServer {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/relay/{mode}", any(route))
        .with_state(RouteState {
            target,
            limits,
            handles: tx,
            token,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    // Each TcpStream served by the daemon's own `serve_connection`, as the control endpoint
    // does (not axum::serve, which wraps it), so the relay gets the TcpStream back under
    // the upgrade.
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = s.cancelled() => return,
                r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            };
            tokio::spawn(grexal_sidecar::api::serve_connection(
                tcp,
                app.clone(),
                (),
                grexal_sidecar::api::ConnLimits::default(),
                s.clone(),
            ));
        }
    });
    RelayServer {
        addr,
        handles: rx,
        stop,
    }
}

pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to the relay; `protocols` goes into Sec-WebSocket-Protocol if set.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> Result<(Ws, axum::http::Response<Option<Vec<u8>>>), tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    // Eager writes: vnc-rs never flushes, and a test client should not batch anyway.
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().write_buffer_size(0);
    tokio_tungstenite::client_async_with_config(req, tcp, Some(config)).await
}

/// A WebSocket client stream as a byte stream, for vnc-rs.
pub struct WsBytes {
    ws: Ws,
    rx: Bytes,
    eof: bool,
}

impl WsBytes {
    pub fn new(ws: Ws) -> Self {
        Self {
            ws,
            rx: Bytes::new(),
            eof: false,
        }
    }
}

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl AsyncRead for WsBytes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.rx.is_empty() {
                let n = self.rx.len().min(buf.remaining());
                let chunk = self.rx.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.rx = b,
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl AsyncWrite for WsBytes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let ws = Pin::new(&mut self.ws);
        std::task::ready!(Sink::<Message>::poll_ready(ws, cx)).map_err(to_io)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(data)))
            .map_err(to_io)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Sink::<Message>::poll_flush(Pin::new(&mut self.ws), cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Sink::<Message>::poll_close(Pin::new(&mut self.ws), cx).map_err(to_io)
    }
}

/// A fake VNC server on loopback TCP: does the server side of the None handshake, then
/// hands the connection to the test.
pub struct FakeVnc {
    pub target: VncTarget,
    pub listener: tokio::net::TcpListener,
}

pub async fn fake_vnc() -> FakeVnc {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = VncTarget::tcp(listener.local_addr().unwrap()).unwrap();
    FakeVnc { target, listener }
}

impl FakeVnc {
    /// Accepts one connection and runs the server half of the handshake.
    pub async fn accept_handshake(&self) -> TcpStream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = tokio::time::timeout(DEADLINE, self.listener.accept())
            .await
            .unwrap()
            .unwrap();
        s.write_all(b"RFB 003.008\n\x01\x01").await.unwrap();
        // In protocol order: a client may wait for each answer before its next message.
        let mut hello = [0u8; 13];
        s.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello, b"RFB 003.008\n\x01");
        s.write_all(&[0, 0, 0, 0]).await.unwrap();
        let mut client_init = [0u8; 1];
        s.read_exact(&mut client_init).await.unwrap();
        assert_eq!(client_init[0], 1, "ClientInit must arrive shared");
        let mut init = vec![
            0, 64, 0, 48, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
        ];
        init.extend_from_slice(&0u32.to_be_bytes());
        s.write_all(&init).await.unwrap();
        s
    }
}

/// The client half of the handshake, sent as raw binary messages.
pub const CLIENT_HANDSHAKE: &[u8] = b"RFB 003.008\n\x01\x00";

/// A controlling viewer through the relay to a fake VNC server, before any RFB byte.
pub async fn control_viewer() -> (FakeVnc, RelayServer, Ws, tokio::net::TcpStream) {
    let fake = fake_vnc().await;
    let server = start_relay_server(fake.target.clone(), RelayLimits::default(), None).await;
    let (ws, _) = ws_connect(server.addr, "/relay/control", None)
        .await
        .unwrap();
    let (up, _) = fake.listener.accept().await.unwrap();
    (fake, server, ws, up)
}

/// A controlling viewer through the relay to a fake VNC server, past the RFB handshake.
pub async fn control_viewer_after_handshake() -> (FakeVnc, RelayServer, Ws, tokio::net::TcpStream) {
    control_viewer_after_handshake_with(RelayLimits::default()).await
}

/// `control_viewer_after_handshake` with the relay under `limits`.
pub async fn control_viewer_after_handshake_with(
    limits: RelayLimits,
) -> (FakeVnc, RelayServer, Ws, tokio::net::TcpStream) {
    viewer_after_handshake("/relay/control", limits).await
}

/// A watcher (view-only) through the relay under `limits`, past the RFB handshake.
pub async fn view_viewer_after_handshake_with(
    limits: RelayLimits,
) -> (FakeVnc, RelayServer, Ws, tokio::net::TcpStream) {
    viewer_after_handshake("/relay/view", limits).await
}

async fn viewer_after_handshake(
    path: &str,
    limits: RelayLimits,
) -> (FakeVnc, RelayServer, Ws, tokio::net::TcpStream) {
    let fake = fake_vnc().await;
    let server = start_relay_server(fake.target.clone(), limits, None).await;
    let (mut ws, _) = ws_connect(server.addr, path, None).await.unwrap();
    ws.send(Message::Binary(CLIENT_HANDSHAKE.to_vec().into()))
        .await
        .unwrap();
    let up = fake.accept_handshake().await;
    (fake, server, ws, up)
}

/// Reads until a Close frame and returns its code.
pub async fn close_code(ws: &mut Ws) -> CloseCode {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => return f.code,
            Some(Ok(_)) => {}
            other => panic!("expected a Close frame, got {other:?}"),
        }
    }
}

/// The next `len` bytes the fake VNC server reads from the relay (within `DEADLINE`).
pub async fn read_upstream(up: &mut tokio::net::TcpStream, len: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = vec![0u8; len];
    tokio::time::timeout(DEADLINE, up.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}
