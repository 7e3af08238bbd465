//! The viewer's WebSocket handshake, and the socket it leaves the relay.
//!
//! fastwebsockets does the RFC 6455 handshake and framing. We take the upgraded connection
//! back down to its `TcpStream` (hyper keeps the original I/O type, here the `TcpStream`
//! in the HTTP server's write timeout, which the relay does without) so that the relay can
//! write each server frame with one vectored write of header + payload — no copy of the
//! payload into a frame buffer — and bound the socket's send buffer (see
//! [`RelayLimits::viewer_send_buffer`](super::RelayLimits::viewer_send_buffer)).

use std::io::Cursor;
use std::time::Duration;

use axum::http::{header, HeaderValue, Method, Request};
use axum::response::Response;
use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::{Frame, Role, WebSocketRead, WebSocketWrite};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use super::{Handshake, BINARY_PROTOCOL, PIPELINED_HANDSHAKE_PROTOCOL};
use crate::api::server::WriteTimeout;

/// Why a request could not be upgraded to a viewer WebSocket.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    #[error("invalid WebSocket handshake")]
    Handshake(#[source] fastwebsockets::WebSocketError),
}

/// The read half of a viewer socket (boxed: a TCP half, or a generic upgraded stream).
pub(crate) type ViewerRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a viewer socket.
pub(crate) type ViewerWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Accepts a viewer's upgrade: checks the handshake and answers `101 Switching Protocols`,
/// echoing the `binary` subprotocol only when the viewer offered it (noVNC offers none; our
/// page offers `binary`, its token protocol and [`PIPELINED_HANDSHAKE_PROTOCOL`], which are
/// never echoed). The connection is handed over once the response has been sent: await
/// [`PendingViewer::socket`].
pub fn accept_viewer<B>(req: &mut Request<B>) -> Result<(Response, PendingViewer), UpgradeError> {
    if req.method() != Method::GET || !fastwebsockets::upgrade::is_upgrade_request(req) {
        return Err(UpgradeError::NotUpgrade);
    }
    let offered = |protocol: &str| {
        req.headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == protocol)
    };
    let offered_binary = offered(BINARY_PROTOCOL);
    let handshake = if offered(PIPELINED_HANDSHAKE_PROTOCOL) {
        Handshake::Pipelined
    } else {
        Handshake::Forwarded
    };
    let (response, fut) = fastwebsockets::upgrade::upgrade(req).map_err(UpgradeError::Handshake)?;
    let mut response = response.map(axum::body::Body::new);
    if offered_binary {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(BINARY_PROTOCOL),
        );
    }
    Ok((response, PendingViewer { fut, handshake }))
}

/// An accepted upgrade whose response is on its way to the viewer.
pub struct PendingViewer {
    fut: UpgradeFut,
    handshake: Handshake,
}

impl PendingViewer {
    /// Resolves once hyper has handed over the connection. `send_buffer` (bytes) bounds the
    /// kernel's send buffer of a TCP viewer socket; `None` keeps the kernel's autotuning.
    pub async fn socket(
        self,
        send_buffer: Option<usize>,
    ) -> Result<ViewerSocket, fastwebsockets::WebSocketError> {
        let handshake = self.handshake;
        let upgraded = self.fut.await?.into_inner().into_inner();
        // The daemon's servers hand hyper the TcpStream inside a write timeout
        // (`api::server::WriteTimeout`); the relay takes it back out and goes by its own
        // limits: a slow viewer is held back by backpressure, a silent one is dropped.
        let tcp = match upgraded.downcast::<TokioIo<WriteTimeout<TcpStream>>>() {
            Ok(parts) => Ok((parts.io.into_inner().into_inner(), parts.read_buf)),
            Err(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => Ok((parts.io.into_inner(), parts.read_buf)),
                Err(upgraded) => Err(upgraded),
            },
        };
        Ok(match tcp {
            Ok((tcp, read_buf)) => {
                // RFB input events are tiny; Nagle would hold back each key press.
                let _ = tcp.set_nodelay(true);
                // Back to the kernel's default: the control endpoint gives up on a peer
                // that leaves data unacknowledged for its write timeout, and a viewer is
                // governed by the relay's idle timeout instead.
                let _ = nix::sys::socket::setsockopt(
                    &tcp,
                    nix::sys::socket::sockopt::TcpUserTimeout,
                    &0,
                );
                if let Some(bytes) = send_buffer {
                    // Best effort: a refused option leaves the kernel's autotuning in place.
                    let _ = nix::sys::socket::setsockopt(
                        &tcp,
                        nix::sys::socket::sockopt::SndBuf,
                        &bytes,
                    );
                }
                let (read, write) = tcp.into_split();
                // Bytes the viewer sent right behind its handshake, already read by hyper.
                let read: ViewerRead = if read_buf.is_empty() {
                    Box::new(read)
                } else {
                    Box::new(Cursor::new(read_buf).chain(read))
                };
                ViewerSocket {
                    read,
                    write: Box::new(write),
                    handshake,
                }
            }
            Err(upgraded) => {
                // Served over something else than a plain TcpStream (a test's server):
                // framing works the same, the send buffer stays the kernel's.
                tracing::debug!("viewer connection is not a plain TCP socket");
                let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                ViewerSocket {
                    read: Box::new(read),
                    write: Box::new(write),
                    handshake,
                }
            }
        })
    }
}

/// A viewer's WebSocket connection after the handshake, not yet framed.
pub struct ViewerSocket {
    pub(crate) read: ViewerRead,
    pub(crate) write: ViewerWrite,
    /// What the viewer asked for in its handshake.
    pub(crate) handshake: Handshake,
}

impl std::fmt::Debug for ViewerSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewerSocket")
    }
}

impl ViewerSocket {
    /// Who does this viewer's RFB handshake with the VNC server.
    pub fn handshake(&self) -> Handshake {
        self.handshake
    }

    /// Frames the connection: the viewer's frames in, ours out.
    pub(crate) fn split(self) -> (WebSocketRead<ViewerRead>, ViewerWriter) {
        let (read, mut write) =
            fastwebsockets::after_handshake_split(self.read, self.write, Role::Server);
        // Header and payload in one writev: the payload is never copied into a frame buffer.
        write.set_writev(true);
        (
            read,
            ViewerWriter {
                ws: write,
                mid_frame: false,
            },
        )
    }

    /// Refuses the viewer after the handshake: a Close frame and the closing handshake, all
    /// within `timeout`.
    pub async fn close(self, code: u16, reason: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let (reader, mut writer) = self.split();
        if let Ok(Ok(true)) = tokio::time::timeout_at(deadline, writer.close(code, reason)).await {
            tokio::spawn(finish_close(writer, reader, deadline));
        }
    }
}

/// The server side of the viewer's WebSocket: binary frames out, Close at the end.
///
/// Remembers whether a frame was cut off half-written (its future dropped by a stop): after
/// that the stream is no longer valid WebSocket, so no Close frame may follow it.
pub(crate) struct ViewerWriter {
    ws: WebSocketWrite<ViewerWrite>,
    mid_frame: bool,
}

impl ViewerWriter {
    /// Sends one frame; `mid_frame` stays set if this future is dropped before it finishes.
    pub(crate) async fn send(
        &mut self,
        frame: Frame<'_>,
    ) -> Result<(), fastwebsockets::WebSocketError> {
        self.mid_frame = true;
        self.ws.write_frame(frame).await?;
        self.mid_frame = false;
        Ok(())
    }

    pub(crate) fn is_mid_frame(&self) -> bool {
        self.mid_frame
    }

    /// Sends a Close frame unless a frame was cut off half-written or Close was already sent;
    /// `Ok(true)` when this call sent it.
    pub(crate) async fn close(
        &mut self,
        code: u16,
        reason: &str,
    ) -> Result<bool, fastwebsockets::WebSocketError> {
        // A Close reason is at most 123 bytes; ours are short ASCII, cut to be safe.
        let reason = truncate_utf8(reason, 123);
        self.send_close(Frame::close(code, reason.as_bytes())).await
    }

    /// Sends `close` (a Close frame) under the same conditions as [`ViewerWriter::close`].
    pub(crate) async fn send_close(
        &mut self,
        close: Frame<'_>,
    ) -> Result<bool, fastwebsockets::WebSocketError> {
        if self.mid_frame || self.ws.is_closed() {
            return Ok(false);
        }
        self.send(close).await?;
        self.ws.flush().await?;
        Ok(true)
    }
}

/// Ends the closing handshake once our Close frame is out: shuts our direction down (FIN),
/// then reads and discards whatever the viewer still sends — nothing is forwarded — until its
/// Close, its FIN or `deadline`. Closing a socket with unread bytes makes the kernel answer
/// with RST, and an RST can destroy our Close frame before the viewer has read it.
pub(crate) async fn finish_close(
    writer: ViewerWriter,
    mut reader: WebSocketRead<ViewerRead>,
    deadline: tokio::time::Instant,
) {
    // Dropping the write half of a TcpStream shuts it down.
    drop(writer);
    let mut ignore = |_: Frame<'static>| async { Ok::<(), fastwebsockets::WebSocketError>(()) };
    let drain = async {
        while let Ok(frame) = reader.read_frame(&mut ignore).await {
            if frame.opcode == fastwebsockets::OpCode::Close {
                break;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, drain).await;
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
