//! Serving one accepted connection with hyper's HTTP/1.1 server, the same way for the
//! agent's Unix socket and the platform's TCP endpoint: header read timeout (which is also
//! the keep-alive idle timeout), header size and count limits, keep-alive, upgrades (for
//! the viewer's WebSocket), and a graceful stop with a deadline.

use std::convert::Infallible;
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
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            shutdown_grace: Duration::from_secs(2),
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
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
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
