//! The relay's connection to the desktop's VNC server (a loopback TCP address or a Unix
//! socket).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{RelayError, VncTarget};
use crate::rfb::greeting::{self, Greeting, GreetingError};

/// The read half of the VNC connection, boxed: one pump for both kinds of socket (a vtable
/// call per syscall).
pub(super) type UpstreamRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of the VNC connection.
pub(super) type UpstreamWrite = Box<dyn AsyncWrite + Send + Unpin>;

pub(super) enum Upstream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Upstream {
    pub(super) async fn greet(&mut self) -> Result<Greeting, GreetingError> {
        match self {
            Upstream::Tcp(s) => greeting::greet(s).await,
            Upstream::Unix(s) => greeting::greet(s).await,
        }
    }

    pub(super) fn split(self) -> (UpstreamRead, UpstreamWrite) {
        match self {
            Upstream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Upstream::Unix(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
        }
    }
}

/// Connects to the VNC server; the caller bounds how long it may take (a Unix socket whose
/// backlog is full is tried again until then).
pub(super) async fn connect(target: &VncTarget) -> Result<Upstream, RelayError> {
    match target {
        VncTarget::Tcp(addr) => {
            // Checked again here: the enum's variants are public.
            if !addr.ip().is_loopback() {
                return Err(RelayError::NotLoopback(*addr));
            }
            let s = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(RelayError::Connect)?;
            // RFB input events are tiny; Nagle would delay each key press.
            s.set_nodelay(true).map_err(RelayError::Connect)?;
            Ok(Upstream::Tcp(s))
        }
        VncTarget::Unix(path) => {
            let mut pause = UNIX_RETRY_FIRST;
            loop {
                match tokio::net::UnixStream::connect(path).await {
                    Ok(s) => return Ok(Upstream::Unix(s)),
                    // The server's listen backlog is full: Linux refuses a non-blocking
                    // connect to a Unix socket at once with EAGAIN (TCP would retry the SYN
                    // on its own). Xvnc's backlog is small, and a handful of viewers opening
                    // together fill it for the moment it takes the server to accept them.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(UNIX_RETRY_MAX);
                    }
                    Err(e) => return Err(RelayError::Connect(e)),
                }
            }
        }
    }
}

/// The first pause before connecting again to a Unix socket whose backlog was full, doubled
/// after each refusal up to [`UNIX_RETRY_MAX`]: a server that accepts again within
/// milliseconds is not kept waiting long, one that lags costs a wake-up every 50 ms, until
/// the caller's connect timeout.
const UNIX_RETRY_FIRST: Duration = Duration::from_millis(5);
const UNIX_RETRY_MAX: Duration = Duration::from_millis(50);
