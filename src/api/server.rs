//! Serving one accepted connection with hyper's HTTP/1.1 server, the same way for the
//! agent's Unix socket and the platform's TCP endpoint: header read timeout (which is also
//! the keep-alive idle timeout), a write timeout ([`WriteTimeout`]), header size and count
//! limits, keep-alive, upgrades (for the viewer's WebSocket), and a graceful stop with a
//! deadline.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::error::ApiError;

/// The longest header read timeout given to hyper, which adds it to the clock unchecked: one
/// past the clock's end panicked every connection's task before it answered. The config
/// bounds `--api-request-timeout` far below; `ConnLimits` itself takes any `Duration`.
const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(86_400 * 365);

/// Per-connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time a client has to send a request's head, from the moment the server is ready to
    /// read it. Also closes idle keep-alive connections after this long.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers); hyper's minimum is 8 KiB.
    pub max_header_bytes: usize,
    /// Most headers in one request.
    pub max_headers: usize,
    /// How long in-flight requests get to finish once the server stops.
    pub shutdown_grace: Duration,
    /// How long one write to the client may wait (the client not reading, or gone without
    /// a word) before the connection is closed. hyper's timeouts only cover reading a
    /// head; without this, a client that sends requests and never reads the answers
    /// holds its connection, and its slot, for good.
    pub write_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            shutdown_grace: Duration::from_secs(2),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// The stop token of the server a request came through, in every request's extensions.
/// A response that would otherwise stream on (the platform's event stream) ends when it
/// fires, so the graceful stop sees it finish instead of cutting it after the grace.
#[derive(Debug, Clone)]
pub struct ServerStop(pub CancellationToken);

/// Serves HTTP/1.1 on `io` with `router` until the client closes, a limit closes it, or
/// `stop` fires (then in-flight requests get `shutdown_grace`). `extensions` (the peer's
/// credentials or address) and [`ServerStop`] are inserted into every request.
pub async fn serve_connection<I, E>(
    io: I,
    router: Router,
    extensions: E,
    limits: ConnLimits,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Clone + Send + Sync + 'static,
{
    let server_stop = ServerStop(stop.clone());
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(extensions.clone());
        request.extensions_mut().insert(server_stop.clone());
        let router = router.clone();
        async move {
            Ok::<Response<Body>, Infallible>(
                router.oneshot(request).await.unwrap_or_else(|e| match e {}),
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.min(MAX_HEADER_READ_TIMEOUT))
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let io = WriteTimeout::new(io, limits.write_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.shutdown_grace, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        // Timeouts, resets and malformed requests end up here; hyper already answered a
        // malformed request with a bare 400. Debug level: a client can cause any number.
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// A connection's I/O whose writes fail with `TimedOut` once one has been pending for
/// `timeout`: from the first `Pending` until the write (or flush, or shutdown) makes
/// progress. Reads pass through. hyper then ends the connection with that error.
///
/// An upgraded connection (the viewer's WebSocket) comes out of hyper as this type: the
/// relay takes the I/O back out with [`WriteTimeout::into_inner`] and applies its own
/// limits (backpressure from a slow viewer is expected there; silence is what ends it).
#[derive(Debug)]
pub struct WriteTimeout<I> {
    io: I,
    timeout: Duration,
    /// Armed at a write's first `Pending`, disarmed when a write makes progress.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteTimeout<I> {
    pub fn new(io: I, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            deadline: None,
        }
    }

    pub fn into_inner(self) -> I {
        self.io
    }

    /// Passes a write's result on, and turns a `Pending` that has lasted `timeout` into
    /// an error. The deadline's timer is polled too, so the task wakes when it passes.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.deadline = None;
            return polled;
        }
        let timeout = self.timeout;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer did not take a write within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, polled)
    }
}

/// What an over-the-limit connection is told before it is closed, written without waiting.
/// Written by hand, so it carries by hand what every error response does (`ApiError`'s
/// `IntoResponse`): JSON and `Cache-Control: no-store`.
pub(crate) fn over_limit_response() -> Vec<u8> {
    let error = ApiError::TooManyConnections;
    let body = error.body();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        error.status().as_u16(),
        error.status().canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    use super::*;

    /// A write may wait for the peer up to the timeout; one that waits longer fails, and
    /// the clock starts again with each write that goes through.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_past_the_timeout_fails_and_progress_restarts_the_clock() {
        let timeout = Duration::from_secs(30);
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut ours = WriteTimeout::new(ours, timeout);
        ours.write_all(&[0; 64]).await.unwrap();
        let reader = tokio::spawn(async move {
            tokio::time::sleep(timeout - Duration::from_secs(1)).await;
            let mut read = [0; 64];
            peer.read_exact(&mut read).await.unwrap();
            peer
        });
        let started = Instant::now();
        ours.write_all(&[1; 64]).await.unwrap();
        assert_eq!(started.elapsed(), timeout - Duration::from_secs(1));
        // The peer is still there, and reads no more.
        let _peer = reader.await.unwrap();
        let started = Instant::now();
        let error = ours.write_all(&[2; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), timeout);
    }
}
