//! The WebSocket <-> VNC relay: one viewer's WebSocket to the desktop's VNC server.
//!
//! Server-to-viewer bytes are forwarded untouched as binary WebSocket messages; viewer-to-server
//! bytes go through [`RfbFilter`], which drops input from view-only viewers and closes the
//! connection on anything it does not understand. A viewer that offers
//! [`PIPELINED_HANDSHAKE_PROTOCOL`] has the RFB handshake done for it next to the server
//! ([`crate::rfb::greeting`]): it is sent the server's handshake messages at once, and its
//! own answers are checked and dropped. The VNC server must be local: a loopback TCP
//! address or a Unix socket.
//!
//! Backpressure: the relay reads the VNC socket only when the previous read has been written
//! to the viewer's socket (one `read_size` buffer in flight, flushed before the next read), so
//! a slow viewer slows the VNC server instead of growing our memory.
//!
//! Idle viewers: one that sends no input for [`RelayLimits::idle_timeout`] is dropped. The
//! deadline is a branch of its own next to the two pumps, so neither pump being stuck keeps
//! it from firing: the server-to-viewer one holding the writer on a viewer that does not
//! read (a Ping is then not answered, and a Close waits for the frame in flight only until
//! the close deadline), or the viewer-to-server one on a VNC server that does not read.
//!
//! Cutting a stream (takeover ends, a newer viewer wins): everything a relay forwards happens
//! inside the one future returned by [`relay`] — no task is spawned — and that future owns both
//! sockets. Hence the guarantee the takeover manager relies on:
//!
//! * after `stop.cancel()`, no input is forwarded any more (the viewer-to-server pump is never
//!   polled again) and nothing new is read from the VNC server: the stop branch is polled
//!   first on every wake-up, and the server-to-viewer pump checks it before every read;
//! * a server frame already being written may finish (bytes read before the stop), so that a
//!   Close frame can follow it; finishing it and sending the Close frame share one short
//!   deadline, [`RelayLimits::stop_timeout`] (10 ms): the takeover's ending, and so the
//!   agent's wait, waits for every relay, and one viewer that does not read must not hold it.
//!   A frame not finished by then leaves the stream invalid WebSocket, so no Close frame is
//!   sent: the connection is just closed, and the viewer page learns the outcome from the
//!   session endpoint;
//! * the relay then returns, closing the VNC socket and shutting the viewer's direction down,
//!   so once the future has completed (or was dropped), not one more byte flows. Only the
//!   tail of the closing handshake outlives it, on a task of its own: reading and discarding
//!   the viewer's last frames until its Close (for at most [`RelayLimits::close_timeout`]),
//!   so that the kernel does not answer unread bytes with an RST that could destroy our Close
//!   frame.
//!
//! [`RelayHandle`] packages this: [`RelayHandle::spawn`] runs [`relay`] on its own task, and
//! [`RelayHandle::shutdown`] cancels and resolves only once that task has ended.
//!
//! WebSocket library: fastwebsockets, for the handshake ([`accept_viewer`]) and the framing.
//! Each server frame is one `writev` of header + the bytes just read from the VNC server, so
//! the relay copies every byte exactly twice (out of the VNC socket, into the viewer's) — the
//! least a relay that reads can do. See `docs/performance.md` for what that buys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fastwebsockets::WebSocketError;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

mod pump;
mod upgrade;
mod upstream;

use crate::rfb::greeting::GreetingError;
pub use crate::rfb::Access;
use crate::rfb::{RfbError, RfbLimits};
use pump::{connect_and_pump, Session};
pub use upgrade::{accept_viewer, PendingViewer, UpgradeError, ViewerSocket};

/// The subprotocol prefix carrying the viewer's token: `grexal.v1.<base64url token>`.
pub const TOKEN_PROTOCOL_PREFIX: &str = "grexal.v1.";
/// The only subprotocol the server ever echoes (and only when the client offered it).
pub const BINARY_PROTOCOL: &str = "binary";
/// Offered by a viewer that wants the relay to do its RFB handshake with the VNC server
/// (our viewer page; see [`crate::rfb::greeting`]). Never echoed.
pub const PIPELINED_HANDSHAKE_PROTOCOL: &str = "grexal.pipelined-handshake.v1";
/// Longest token accepted from the handshake, in base64url characters.
pub const MAX_TOKEN_LEN: usize = 256;

/// Who does a viewer's RFB handshake with the VNC server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handshake {
    /// The viewer, through the relay: the server's stream reaches it untouched, as through
    /// websockify (noVNC's own page, any RFB client).
    #[default]
    Forwarded,
    /// The relay, next to the server; the viewer is sent the server's handshake messages at
    /// once and saves three round trips before its first pixels.
    Pipelined,
}

/// Errors of one relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("VNC target {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    #[error("connecting to the VNC server timed out")]
    ConnectTimeout,
    #[error("connecting to the VNC server failed")]
    Connect(#[source] std::io::Error),
    #[error("VNC server connection failed")]
    Upstream(#[source] std::io::Error),
    #[error("viewer WebSocket failed")]
    WebSocket(#[source] WebSocketError),
    #[error("viewer sent a text frame")]
    TextFrame,
    #[error("viewer sent a continuation frame outside a fragmented binary message")]
    BadContinuation,
    #[error("viewer sent an unmasked frame (clients must mask every frame)")]
    UnmaskedFrame,
    #[error("viewer sent an invalid control frame: {0}")]
    BadControlFrame(&'static str),
    #[error("viewer frame exceeds the limit of {limit} bytes")]
    FrameTooLarge { limit: usize },
    #[error("viewer sent an invalid RFB stream")]
    Rfb(#[source] RfbError),
    #[error("the RFB handshake with the VNC server timed out")]
    GreetingTimeout,
    #[error("the RFB handshake with the VNC server failed")]
    Greeting(#[source] GreetingError),
    #[error("relay task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Where the desktop's VNC server listens. Only local targets are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VncTarget {
    /// A loopback TCP address (a VNC server with no Unix socket; both desktop backends
    /// have one).
    Tcp(SocketAddr),
    /// A Unix socket (Xvnc `-rfbunixpath`).
    Unix(PathBuf),
}

impl VncTarget {
    /// A TCP target; refuses anything but a loopback address.
    pub fn tcp(addr: SocketAddr) -> Result<Self, RelayError> {
        if !addr.ip().is_loopback() {
            return Err(RelayError::NotLoopback(addr));
        }
        Ok(Self::Tcp(addr))
    }

    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::Unix(path.into())
    }
}

impl std::fmt::Display for VncTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VncTarget::Tcp(a) => write!(f, "tcp:{a}"),
            VncTarget::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Limits of one relay.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// A viewer that sends no input (a binary message) for this long is dropped, whatever
    /// else it does: pings and pongs are not input, and input that cannot be passed on (a
    /// VNC server that stopped reading) is no longer read, so it counts as none. noVNC sends
    /// a FramebufferUpdateRequest after every update, but nothing while the screen is still,
    /// so this must be long enough to watch a still login page.
    pub idle_timeout: Duration,
    /// Largest WebSocket frame accepted from a viewer. The RFB filter reads the stream, so a
    /// message may span frames (a clipboard of up to `rfb.max_cut_text` streams through);
    /// noVNC sends frames of at most 10 KiB. What one viewer can make the daemon hold is
    /// about twice this (fastwebsockets' read buffer, the filtered copy) plus `read_size`.
    pub max_client_message: usize,
    /// RFB limits (ClientCutText length, SetEncodings count).
    pub rfb: RfbLimits,
    /// Size of one read from the VNC server, the only server-to-viewer buffer we hold.
    pub read_size: usize,
    /// Send buffer of a viewer's TCP socket, in bytes (`SO_SNDBUF`; Linux doubles it);
    /// `None` leaves the kernel's autotuning, which lets one slow viewer pin up to
    /// `tcp_wmem`'s maximum (4 MiB) of kernel memory. Bounding it keeps what is queued for
    /// the viewer small and recent (an interactive view wants the newest frame, not a backlog)
    /// and the bytes in cache between our write and the reader. It also caps one viewer's
    /// throughput at about twice this per round trip to the edge: 256 KiB per ms on the
    /// default, far above what a VNC stream needs.
    pub viewer_send_buffer: Option<usize>,
    /// How long connecting to the VNC server may take (a Unix socket whose listen backlog is
    /// full is tried again until then), and then, separately, the relay's RFB handshake with
    /// it for a viewer that asked for one.
    pub connect_timeout: Duration,
    /// How long a Close frame may take once the relay decided to end by itself (idle, an
    /// error, the VNC server gone), the end of a server frame being written first when the
    /// viewer closed; then how long the viewer's own Close is waited for (on a task of its
    /// own, which nothing waits on).
    pub close_timeout: Duration,
    /// The same, when the relay is stopped (the takeover ends, a newer controlling viewer
    /// comes): a frame being written and the Close frame after it must be out by then, or the
    /// connection is closed without a Close frame. Short, because the takeover's ending
    /// waits for every relay before the agent's wait returns (≤ 100 ms after the user's
    /// click is the goal, 8–13 ms measured without a stalled viewer): 10 ms is what a
    /// viewer that keeps up needs for the rest of a frame and the Close frame (a write into
    /// a socket with room takes microseconds; a full one drains a 256 KiB send buffer at
    /// 200 Mbit/s in 10 ms), and all a stalled one may cost. A viewer cut off learns the
    /// outcome from the session endpoint.
    pub stop_timeout: Duration,
    /// A Ping is sent to the viewer this often (when nothing else is being written to it):
    /// a still screen moves no byte either way, and the proxies in front of a viewer (nginx's
    /// `proxy_read_timeout`, a cloud load balancer) close a connection idle for 60 s by
    /// default, flashing "Connection lost" at the user and losing what they type meanwhile.
    /// The browser answers by itself; neither the Ping nor its Pong is input.
    pub keepalive_interval: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            max_client_message: 64 * 1024,
            rfb: RfbLimits::default(),
            read_size: 256 * 1024,
            viewer_send_buffer: Some(128 * 1024),
            connect_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_millis(10),
            keepalive_interval: Duration::from_secs(25),
        }
    }
}

/// Why a relay ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayEnd {
    #[default]
    ViewerClosed,
    UpstreamClosed,
    Stopped,
    Idle,
}

/// What one relay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub end: RelayEnd,
    /// Bytes from the VNC server forwarded to the viewer.
    pub server_bytes: u64,
    /// Binary WebSocket messages sent to the viewer.
    pub server_frames: u64,
    /// Bytes from the viewer forwarded to the VNC server (after filtering).
    pub client_bytes: u64,
    /// Client RFB messages seen, and those dropped by the filter.
    pub client_messages: u64,
    pub dropped_messages: u64,
    /// Most server bytes the relay held at once (read but not yet written to the viewer's
    /// socket); never above `read_size`.
    pub peak_buffered: usize,
    /// A server frame could not be finished before the close deadline, so no Close frame
    /// was sent.
    pub cut_mid_frame: bool,
}

/// Extracts the token from `Sec-WebSocket-Protocol: binary, grexal.v1.<token>`. `None` when
/// absent, malformed (not base64url without padding, empty, longer than [`MAX_TOKEN_LEN`]) or
/// offered more than once. Tokens never travel in the query string.
pub fn token_from_protocols(headers: &axum::http::HeaderMap) -> Option<String> {
    let mut found = None;
    for value in headers.get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL) {
        let value = value.to_str().ok()?;
        for proto in value.split(',').map(str::trim) {
            let Some(token) = proto.strip_prefix(TOKEN_PROTOCOL_PREFIX) else {
                continue;
            };
            let well_formed = !token.is_empty()
                && token.len() <= MAX_TOKEN_LEN
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !well_formed || found.is_some() {
                return None;
            }
            found = Some(token.to_owned());
        }
    }
    found
}

/// Relays `viewer` to the VNC server at `target` until either side closes, the viewer idles
/// out, an error occurs, or `stop` is cancelled (see the module docs for the exact guarantee).
pub async fn relay(
    viewer: ViewerSocket,
    target: &VncTarget,
    access: Access,
    limits: &RelayLimits,
    stop: CancellationToken,
) -> Result<RelayStats, RelayError> {
    relay_with_stop_close(viewer, target, access, limits, stop, || {
        (1000, "stopped".to_owned())
    })
    .await
}

/// [`relay`], except that when `stop` ends it the viewer's Close frame is `stop_close()`
/// instead of `1000 stopped`: the takeover closes with `4000` and the outcome as reason.
pub async fn relay_with_stop_close(
    viewer: ViewerSocket,
    target: &VncTarget,
    access: Access,
    limits: &RelayLimits,
    stop: CancellationToken,
    stop_close: impl FnOnce() -> (u16, String),
) -> Result<RelayStats, RelayError> {
    let handshake = viewer.handshake();
    let (mut ws_rx, ws_tx) = viewer.split();
    // Pings and Close are handled by the reader below, not by fastwebsockets: it would
    // answer them before the relay could check that they were masked and short.
    ws_rx.set_auto_pong(false);
    ws_rx.set_auto_close(false);
    // fastwebsockets refuses a frame whose length is >= this.
    ws_rx.set_max_message_size(limits.max_client_message.saturating_add(1));
    let ws_tx = Mutex::new(ws_tx);
    let mut stats = RelayStats::default();
    let mut close_deadline = None;
    let mut echo = None;
    let session = Session {
        ws_rx: &mut ws_rx,
        ws_tx: &ws_tx,
        access,
        handshake,
        limits,
        stop: &stop,
        stats: &mut stats,
        close_deadline: &mut close_deadline,
        echo: &mut echo,
    };
    let result = connect_and_pump(session, target).await;
    let close = match &result {
        Ok(RelayEnd::Stopped) => Some((1000, "stopped")),
        Ok(RelayEnd::Idle) => Some((1001, "idle")),
        Ok(RelayEnd::UpstreamClosed) => Some((1000, "vnc server closed")),
        // Answered with `echo`.
        Ok(RelayEnd::ViewerClosed) => None,
        Err(RelayError::TextFrame | RelayError::Rfb(_)) => Some((1008, "policy violation")),
        Err(
            RelayError::BadContinuation
            | RelayError::UnmaskedFrame
            | RelayError::BadControlFrame(_),
        ) => Some((1002, "protocol error")),
        Err(RelayError::FrameTooLarge { .. }) => Some((1009, "message too big")),
        Err(RelayError::WebSocket(_)) => None,
        Err(_) => Some((1011, "vnc server unavailable")),
    };
    let close = match (&result, close) {
        (Ok(RelayEnd::Stopped), _) => Some(stop_close()),
        (_, close) => close.map(|(code, reason)| (code, reason.to_owned())),
    };
    let mut ws_tx = ws_tx.into_inner();
    stats.cut_mid_frame = ws_tx.is_mid_frame();
    let deadline =
        close_deadline.unwrap_or_else(|| tokio::time::Instant::now() + limits.close_timeout);
    // The viewer may be gone or not reading; the Close frame is best effort, bounded (by
    // the stop deadline too if a stop comes meanwhile: the takeover's ending waits for it).
    let stop_timeout = limits.stop_timeout;
    let closing = match (close, echo) {
        // Skipped (by `close`) when a frame could not be finished in time.
        (Some((code, reason)), _) => matches!(
            pump::within(ws_tx.close(code, &reason), deadline, &stop, stop_timeout)
                .await
                .0,
            Some(Ok(true))
        ),
        // The viewer's Close, answered.
        (None, Some(echo)) => matches!(
            pump::within(ws_tx.send_close(echo), deadline, &stop, stop_timeout)
                .await
                .0,
            Some(Ok(true))
        ),
        // The viewer's EOF: our FIN follows.
        (None, None) => matches!(result, Ok(RelayEnd::ViewerClosed)),
    };
    if closing {
        // The VNC socket is already closed and our direction shuts down first, so what is
        // left reads and discards only; the relay is over (and the agent's wait may return)
        // without waiting on the viewer's side of the handshake.
        let drain = tokio::time::Instant::now() + limits.close_timeout;
        tokio::spawn(upgrade::finish_close(ws_tx, ws_rx, drain));
    }
    match result {
        Ok(end) => {
            stats.end = end;
            info!(
                ?end,
                server_bytes = stats.server_bytes,
                client_bytes = stats.client_bytes,
                "relay ended"
            );
            Ok(stats)
        }
        Err(error) => {
            // With its causes: which VNC or handshake failure it was is the useful part.
            warn!(error = %crate::api::error::error_chain(&error), "relay failed");
            Err(error)
        }
    }
}

/// A relay running on its own task, owned by the takeover manager.
#[derive(Debug)]
pub struct RelayHandle {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<RelayStats, RelayError>>,
}

impl RelayHandle {
    /// Spawns [`relay`]; `stop` may be a child of the daemon's root token.
    pub fn spawn(
        viewer: ViewerSocket,
        target: VncTarget,
        access: Access,
        limits: RelayLimits,
        stop: CancellationToken,
    ) -> Self {
        let span = tracing::info_span!("relay", %target, ?access);
        let token = stop.clone();
        let task = tokio::spawn(
            async move { relay(viewer, &target, access, &limits, token).await }.instrument(span),
        );
        Self { stop, task }
    }

    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the relay and resolves once its task has ended: from then on no byte flows in
    /// either direction. Takes at most `stop_timeout` after the relay notices the cancel.
    pub async fn shutdown(self) -> Result<RelayStats, RelayError> {
        self.stop.cancel();
        self.task.await.map_err(RelayError::Task)?
    }

    /// Waits for the relay to end by itself.
    pub async fn wait(self) -> Result<RelayStats, RelayError> {
        self.task.await.map_err(RelayError::Task)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_target_must_be_loopback() {
        let table: [(&str, bool); 5] = [
            ("127.0.0.1:5900", true),
            ("127.1.2.3:5900", true),
            ("[::1]:5900", true),
            ("10.0.0.1:5900", false),
            ("[::]:5900", false),
        ];
        for (addr, ok) in table {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(VncTarget::tcp(addr).is_ok(), ok, "{addr}");
        }
    }

    #[test]
    fn token_from_protocols_table() {
        let long = format!("grexal.v1.{}", "a".repeat(MAX_TOKEN_LEN + 1));
        let table: Vec<(Vec<&str>, Option<&str>)> = vec![
            (vec![], None),
            (vec!["binary"], None),
            (vec!["binary, grexal.v1.abc_DEF-123"], Some("abc_DEF-123")),
            (vec!["grexal.v1.tok"], Some("tok")),
            (vec!["binary", "grexal.v1.tok"], Some("tok")),
            (vec!["grexal.v1."], None),
            (vec!["grexal.v1.a=="], None),
            (vec!["grexal.v1.a+b"], None),
            (vec!["grexal.v1.a, grexal.v1.b"], None),
            (vec!["grexal.v2.tok"], None),
            (vec![long.as_str()], None),
        ];
        for (values, want) in table {
            let mut headers = axum::http::HeaderMap::new();
            for v in &values {
                headers.append(
                    axum::http::header::SEC_WEBSOCKET_PROTOCOL,
                    v.parse().unwrap(),
                );
            }
            assert_eq!(
                token_from_protocols(&headers).as_deref(),
                want,
                "{values:?}"
            );
        }
    }
}
