//! The two pumps of one relay, server-to-viewer (`down`) and viewer-to-server (`up`), polled
//! by one task (see the parent module for what a stop guarantees).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError, WebSocketRead};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::upgrade::{ViewerRead, ViewerWriter};
use super::upstream::{connect, UpstreamRead, UpstreamWrite};
use super::{Access, Handshake, RelayEnd, RelayError, RelayLimits, RelayStats, VncTarget};
use crate::rfb::greeting::Greeting;
use crate::rfb::RfbFilter;

/// What the two pumps of one relay share.
pub(super) struct Session<'a> {
    pub(super) ws_rx: &'a mut WebSocketRead<ViewerRead>,
    pub(super) ws_tx: &'a Mutex<ViewerWriter>,
    pub(super) access: Access,
    pub(super) handshake: Handshake,
    pub(super) limits: &'a RelayLimits,
    pub(super) stop: &'a CancellationToken,
    pub(super) stats: &'a mut RelayStats,
    /// Set when the pumps let a frame in flight finish (a stop, the viewer's Close): the
    /// Close frame that follows shares its deadline.
    pub(super) close_deadline: &'a mut Option<tokio::time::Instant>,
    /// The answer to the viewer's Close, sent once the pumps are done.
    pub(super) echo: &'a mut Option<Frame<'static>>,
}

pub(super) async fn connect_and_pump(
    session: Session<'_>,
    target: &VncTarget,
) -> Result<RelayEnd, RelayError> {
    let (limits, stop) = (session.limits, session.stop);
    debug!(%target, access = ?session.access, "relay connecting");
    let mut upstream = tokio::select! {
        biased;
        _ = stop.cancelled() => return Ok(RelayEnd::Stopped),
        r = tokio::time::timeout(limits.connect_timeout, connect(target)) => {
            r.map_err(|_| RelayError::ConnectTimeout)??
        }
    };
    let greeting = match session.handshake {
        Handshake::Forwarded => None,
        Handshake::Pipelined => Some(tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(RelayEnd::Stopped),
            r = tokio::time::timeout(limits.connect_timeout, upstream.greet()) => {
                r.map_err(|_| RelayError::GreetingTimeout)?.map_err(RelayError::Greeting)?
            }
        }),
    };
    let (r, w) = upstream.split();
    pump(session, greeting, r, w).await
}

/// Both directions as two futures polled by one task; the first to finish ends the relay.
async fn pump(
    session: Session<'_>,
    greeting: Option<Greeting>,
    mut upstream_r: UpstreamRead,
    mut upstream_w: UpstreamWrite,
) -> Result<RelayEnd, RelayError> {
    let Session {
        ws_rx,
        ws_tx,
        access,
        handshake: _,
        limits,
        stop,
        stats,
        close_deadline,
        echo,
    } = session;
    let mut filter = match greeting {
        Some(_) => RfbFilter::answered(access, limits.rfb),
        None => RfbFilter::with_limits(access, limits.rfb),
    };
    let mut down_stats = (0u64, 0u64, 0usize);
    let mut up_stats = (0u64, 0u64, 0u64);
    // `down` reads nothing new from the VNC server once this is cancelled: on a stop, or when
    // the viewer closes.
    let halt = stop.child_token();
    // When the viewer last sent input, as time since `started`: set by `up`, read by the
    // idle branch of the select below, which `up` being stuck (on a writer held by a frame
    // the viewer does not read, on a VNC server that does not read) cannot keep from firing.
    let started = tokio::time::Instant::now();
    let last_input = AtomicU64::new(0);

    let down = async {
        // The server's handshake, as the relay received it: one message per frame.
        for message in greeting.iter().flat_map(|g| &g.messages) {
            ws_tx
                .lock()
                .await
                .send(Frame::binary(Payload::Borrowed(message)))
                .await
                .map_err(RelayError::WebSocket)?;
            down_stats.0 += message.len() as u64;
            down_stats.1 += 1;
        }
        // One buffer for the whole relay, never zero-filled: `read_buf` reads into its spare
        // capacity, and the frame borrows it until the viewer's socket has taken it all.
        let mut buf = BytesMut::with_capacity(limits.read_size);
        loop {
            buf.clear();
            // Checked before every read, never during a write: a stop lets the frame being
            // written finish (so that a Close frame can follow it) and reads nothing new.
            let n = tokio::select! {
                biased;
                _ = halt.cancelled() => return Ok(RelayEnd::Stopped),
                r = upstream_r.read_buf(&mut buf) => r.map_err(RelayError::Upstream)?,
            };
            if n == 0 {
                return Ok(RelayEnd::UpstreamClosed);
            }
            down_stats.2 = down_stats.2.max(n);
            // The next read waits until this frame is in the viewer's socket: backpressure.
            ws_tx
                .lock()
                .await
                .send(Frame::binary(Payload::Borrowed(&buf)))
                .await
                .map_err(RelayError::WebSocket)?;
            down_stats.0 += n as u64;
            down_stats.1 += 1;
        }
    };

    let up = async {
        let mut out = Vec::with_capacity(4096);
        // Inside a binary message sent as several frames.
        let mut fragmented = false;
        // Nothing is ever owed: pings and Close are answered below (auto_pong/auto_close off).
        let mut send_obligation =
            |frame: Frame<'static>| async move { ws_tx.lock().await.send(frame).await };
        loop {
            // Ends with the viewer gone: `Some` Close frame to answer it with, `None` at EOF.
            let mut frame = match ws_rx.read_frame(&mut send_obligation).await {
                Err(WebSocketError::UnexpectedEOF) => return Ok(None),
                Err(WebSocketError::FrameTooLarge) => {
                    return Err(RelayError::FrameTooLarge {
                        limit: limits.max_client_message,
                    })
                }
                Err(e) => return Err(RelayError::WebSocket(e)),
                Ok(frame) => frame,
            };
            if !was_masked(&mut frame) {
                return Err(RelayError::UnmaskedFrame);
            }
            match frame.opcode {
                OpCode::Binary if !fragmented => fragmented = !frame.fin,
                OpCode::Continuation if fragmented => fragmented = !frame.fin,
                OpCode::Binary | OpCode::Continuation => return Err(RelayError::BadContinuation),
                OpCode::Text => return Err(RelayError::TextFrame),
                // RFC 6455 §5.5: control frames carry at most 125 bytes.
                OpCode::Close | OpCode::Ping | OpCode::Pong
                    if frame.payload.len() > MAX_CONTROL_PAYLOAD =>
                {
                    return Err(RelayError::BadControlFrame("longer than 125 bytes"));
                }
                // Answered once `down` has finished its frame (see the select below), not
                // here: the writer may be held by a frame the viewer does not read.
                OpCode::Close => return Ok(Some(close_echo(&frame.payload)?)),
                // Pings and pongs are not input. A pong is sent only if the writer is free:
                // a busy one may be stuck on a viewer that does not read, and waiting for it
                // would stop this pump from reading (RFC 6455 §5.5.3 lets us answer only the
                // most recent Ping anyway).
                OpCode::Ping => {
                    if let Ok(mut writer) = ws_tx.try_lock() {
                        let pong = Frame::pong(Payload::Owned(frame.payload.to_vec()));
                        writer.send(pong).await.map_err(RelayError::WebSocket)?;
                    }
                    continue;
                }
                OpCode::Pong => continue,
            }
            last_input.store(nanos(started.elapsed()), Ordering::Relaxed);
            out.clear();
            let fed = filter.feed(&frame.payload, &mut out);
            let fs = filter.stats();
            up_stats.1 = fs.messages;
            up_stats.2 = fs.dropped;
            // Forward what came before a bad message? No: the stream is closed on error, and
            // a partial forward could only confuse the server.
            fed.map_err(RelayError::Rfb)?;
            if !out.is_empty() {
                upstream_w
                    .write_all(&out)
                    .await
                    .map_err(RelayError::Upstream)?;
                up_stats.0 += out.len() as u64;
            }
        }
    };

    // Fires once the viewer has sent no input for `idle_timeout`, whatever `up` is doing.
    let idle = async {
        loop {
            let since = started + Duration::from_nanos(last_input.load(Ordering::Relaxed));
            let deadline = idle_deadline(since, limits.idle_timeout);
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };

    // Pings the viewer every `keepalive_interval`, if the writer is free: a busy one is
    // writing the screen already (or stuck on a viewer that does not read, which the idle
    // branch deals with). Ends only with an error.
    let keepalive = async {
        let every = limits.keepalive_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Ok(mut writer) = ws_tx.try_lock() {
                let ping = Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[]));
                if let Err(e) = writer.send(ping).await {
                    return Err(RelayError::WebSocket(e));
                }
            }
        }
    };

    let end = {
        tokio::pin!(up, down, idle, keepalive);
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                // Input stops here: `up` is never polled again. A server frame being written
                // may finish, within the stop deadline; `down` then sees the stop.
                let deadline = tokio::time::Instant::now() + limits.stop_timeout;
                let finished = let_frame_finish(down.as_mut(), deadline, stop, limits);
                *close_deadline = Some(finished.await);
                Ok(RelayEnd::Stopped)
            }
            r = &mut up => match r {
                Ok(Some(answer)) => {
                    // The viewer is leaving: nothing new is read for it, and the frame being
                    // written may finish, within the close deadline, so that the answer to
                    // its Close can follow.
                    halt.cancel();
                    let deadline = tokio::time::Instant::now() + limits.close_timeout;
                    let finished = let_frame_finish(down.as_mut(), deadline, stop, limits);
                    *close_deadline = Some(finished.await);
                    *echo = Some(answer);
                    Ok(RelayEnd::ViewerClosed)
                }
                // EOF: nothing more can reach the viewer.
                Ok(None) => Ok(RelayEnd::ViewerClosed),
                Err(e) => Err(e),
            },
            r = &mut down => r,
            () = &mut idle => Ok(RelayEnd::Idle),
            r = &mut keepalive => r,
        }
    };
    stats.server_bytes = down_stats.0;
    stats.server_frames = down_stats.1;
    stats.peak_buffered = down_stats.2;
    stats.client_bytes = up_stats.0;
    stats.client_messages = up_stats.1;
    stats.dropped_messages = up_stats.2;
    end
}

/// Lets `down`, which reads nothing new by now, finish the frame it is writing, until
/// `deadline`, or the stop deadline if a stop comes first. Returns the deadline, which the
/// Close frame that follows shares.
async fn let_frame_finish(
    down: impl Future<Output = Result<RelayEnd, RelayError>>,
    deadline: tokio::time::Instant,
    stop: &CancellationToken,
    limits: &RelayLimits,
) -> tokio::time::Instant {
    within(down, deadline, stop, limits.stop_timeout).await.1
}

/// Runs `fut` until `deadline`, brought forward to `stop_timeout` after `stop` fires (at
/// once if it has): whatever the relay is finishing, a stop does not wait longer. Returns its
/// output if it finished in time, and the deadline that applied.
pub(super) async fn within<F: Future>(
    fut: F,
    deadline: tokio::time::Instant,
    stop: &CancellationToken,
    stop_timeout: Duration,
) -> (Option<F::Output>, tokio::time::Instant) {
    tokio::pin!(fut);
    tokio::select! {
        biased;
        r = tokio::time::timeout_at(deadline, &mut fut) => (r.ok(), deadline),
        _ = stop.cancelled() => {
            let deadline = deadline.min(tokio::time::Instant::now() + stop_timeout);
            (tokio::time::timeout_at(deadline, fut).await.ok(), deadline)
        }
    }
}

/// When a viewer that sent its last input at `since` is dropped. An idle timeout that would
/// take it past the clock's end (`Instant + Duration` panics) means about never, as tokio's
/// own timers do: the config bounds the flag, `RelayLimits` itself takes any `Duration`.
fn idle_deadline(since: tokio::time::Instant, idle_timeout: Duration) -> tokio::time::Instant {
    const ABOUT_NEVER: Duration = Duration::from_secs(86_400 * 365 * 30);
    since
        .checked_add(idle_timeout)
        .unwrap_or_else(|| since + ABOUT_NEVER)
}

/// A duration in nanoseconds, for an atomic (584 years fit).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// RFC 6455 §5.5: the longest payload of a Close, Ping or Pong frame.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The Close frame that answers a viewer's Close (RFC 6455 §5.5.1: echo its status code), or
/// why its Close is malformed (§7.4: a 1-byte body, a code no endpoint may send, a reason
/// that is not UTF-8).
fn close_echo(payload: &[u8]) -> Result<Frame<'static>, RelayError> {
    match payload {
        [] => Ok(Frame::close_raw(Payload::Owned(Vec::new()))),
        [_] => Err(RelayError::BadControlFrame("a Close body of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !fastwebsockets::CloseCode::from(code).is_allowed() {
                return Err(RelayError::BadControlFrame(
                    "a Close code not allowed on the wire",
                ));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(RelayError::BadControlFrame(
                    "a Close reason that is not UTF-8",
                ));
            }
            Ok(Frame::close(code, &[]))
        }
    }
}

/// Whether a viewer's frame carried a masking key. RFC 6455 §5.1: a server must close the
/// connection on an unmasked client frame (masking is what keeps a hostile page from
/// steering the bytes a proxy on the path sees). fastwebsockets unmasks client frames but
/// accepts unmasked ones, and keeps the key private; its header formatter still shows it.
fn was_masked(frame: &mut Frame<'_>) -> bool {
    // Longest header: 2 bytes, an 8-byte length, a 4-byte key.
    let mut head = [0u8; 14];
    frame.fmt_head(&mut head);
    head[1] & 0x80 != 0
}
