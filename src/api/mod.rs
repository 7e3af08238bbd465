//! The agent's API: HTTP/1.1 + JSON on a Unix socket, behind `ctx.connect(id)`.
//! docs/api.md documents every route and error code.
//!
//! - `bind` creates the socket safely (no planted symlink or file is followed or deleted);
//! - `serve` accepts connections, reads each peer's SO_PEERCRED once, and serves each
//!   connection with hyper under per-connection limits;
//! - `routes` holds the handlers, `error` the one mapping of errors to the wire,
//!   `peer` who may call what.
//!
//! Over the connection limit, a connection is accepted, told `503 too_many_connections`
//! (written without waiting) and closed at once: a client gets a clear answer instead of
//! hanging in the backlog, and the daemon never holds more than the limit's fds.

pub mod error;
pub mod peer;
pub mod ratelimit;
pub mod routes;
pub(crate) mod server;

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use error::ApiError;
pub use peer::{Peer, Policy};
pub use ratelimit::LogLimiter;
pub use routes::router;
pub use server::{serve_connection, ConnLimits};

use crate::inject::Owner;
use crate::store::Store;

/// The agent API's request body limit.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Most simultaneous connections; more are told 503 and closed.
    pub max_connections: usize,
    /// Time for a request's head (also the keep-alive idle timeout) and, separately, for
    /// the rest of the request to be handled.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub conn: ConnLimits,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            request_timeout: Duration::from_secs(10),
            max_body_bytes: MAX_BODY_BYTES,
            conn: ConnLimits::default(),
        }
    }
}

impl ApiLimits {
    /// `--api-max-connections` and `--api-request-timeout`.
    pub fn new(max_connections: usize, request_timeout: Duration) -> Self {
        let mut limits = Self {
            max_connections,
            request_timeout,
            ..Self::default()
        };
        limits.conn.header_read_timeout = request_timeout;
        limits
    }
}

/// What every handler of the agent API can reach. Later routes (desktop, takeovers) add
/// their own fields here.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub policy: Policy,
    pub limits: ApiLimits,
    pub log_limiter: Arc<LogLimiter>,
    /// The takeover routes (`/v1/takeovers…`, `/v1/browser`), when the daemon runs them.
    pub takeovers: Option<crate::takeover::TakeoverManager>,
}

impl ApiState {
    /// `agent_uid`: the agent's uid, allowed to read credentials besides root and the
    /// daemon's own uid.
    pub fn new(store: Arc<Store>, agent_uid: Option<u32>) -> Self {
        Self {
            store,
            policy: Policy::new(agent_uid),
            limits: ApiLimits::default(),
            log_limiter: Arc::new(LogLimiter::default()),
            takeovers: None,
        }
    }
}

/// Creates the agent socket at `path`.
///
/// The parent directory is created 0755 if missing; an existing one must be a real
/// directory (not a symlink) owned by root or us and not writable by group or others, so
/// nobody can swap the socket between bind and chmod. A stale socket is removed; any
/// other file there (a planted symlink, a regular file) is refused, never followed or
/// deleted. A socket file is stale only if nobody listens on it (connecting is refused):
/// one that a live daemon (or anything else) serves is refused with `SocketInUse`, never
/// taken over. With an `owner`, the socket is 0660 and its group is the agent's; without,
/// it is 0666. Either way, reading credentials is authorized per connection by SO_PEERCRED.
pub fn bind(path: &Path, owner: Option<Owner>) -> Result<UnixListener, ApiError> {
    let shown = || path.display().to_string();
    let io = |source| ApiError::Socket {
        path: shown(),
        source,
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::env::current_dir().map_err(io)?,
    };
    ensure_dir(&parent)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if listened_on(path).map_err(io)? {
                return Err(ApiError::SocketInUse { path: shown() });
            }
            tracing::info!(path = %path.display(), "removing stale socket");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
        }
        Ok(_) => return Err(ApiError::NotASocket { path: shown() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    let mode = if owner.is_some() { 0o660 } else { 0o666 };
    // The parent is ours and closed to others, so the path still names our socket.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    if let Some(owner) = owner {
        std::os::unix::fs::chown(path, None, Some(owner.gid)).map_err(io)?;
    }
    tracing::info!(path = %path.display(), mode = format_args!("{mode:o}"), "agent socket bound");
    Ok(listener)
}

/// Whether something listens on the socket file at `path`: only a refused connection
/// (`ECONNREFUSED`: the file of a socket nobody listens on any more) or a file gone
/// meanwhile says no. The connect does not block: a listener whose backlog is full
/// (`EAGAIN`) is as alive as one that accepts, and a stopped one must not hang the boot.
/// The daemon's instance lock makes sure no daemon binds the path between this check and
/// the unlink that follows it.
fn listened_on(path: &Path) -> std::io::Result<bool> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) | Err(nix::Error::EAGAIN) | Err(nix::Error::EINPROGRESS) => Ok(true),
        Err(nix::Error::ECONNREFUSED) | Err(nix::Error::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates the socket's directory `dir` (0755) if missing; an existing one must be a real
/// directory owned by root or us and not writable by group or others.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), ApiError> {
    let unsafe_dir = |problem: &str| ApiError::UnsafeDir {
        path: dir.display().to_string(),
        problem: problem.to_owned(),
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|source| ApiError::Socket {
                    path: dir.display().to_string(),
                    source,
                })?;
            // Re-check what is there now: `create` follows a symlink planted meanwhile.
            ensure_dir_exists_safe(dir, &unsafe_dir)
        }
        Err(source) => Err(ApiError::Socket {
            path: dir.display().to_string(),
            source,
        }),
        Ok(_) => ensure_dir_exists_safe(dir, &unsafe_dir),
    }
}

fn ensure_dir_exists_safe(
    dir: &Path,
    unsafe_dir: &dyn Fn(&str) -> ApiError,
) -> Result<(), ApiError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| ApiError::Socket {
        path: dir.display().to_string(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("is a symlink"));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(unsafe_dir("is owned by another user"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir("is writable by group or others"));
    }
    Ok(())
}

/// Serves the agent API on `listener` until `stop` fires; then stops accepting, gives
/// in-flight requests a short grace, and removes the socket file.
pub async fn serve(listener: UnixListener, state: ApiState, stop: CancellationToken) {
    let limits = state.limits;
    let mut conn_limits = limits.conn;
    conn_limits.header_read_timeout = limits.request_timeout;
    let app = router(state.clone());
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let over_limit = server::over_limit_response();
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of fds or similar: back off briefly instead of spinning.
                    if let Some(suppressed) = state.log_limiter.check() {
                        tracing::warn!(%error, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let _ = stream.try_write(&over_limit);
            if let Some(suppressed) = state.log_limiter.check() {
                tracing::warn!(
                    limit = limits.max_connections,
                    suppressed,
                    "connection refused: too many connections"
                );
            }
            continue;
        };
        let peer = match Peer::of(&stream) {
            Ok(peer) => peer,
            Err(error) => {
                tracing::warn!(%error, "cannot read peer credentials; closing");
                continue;
            }
        };
        let span = tracing::debug_span!("api_conn", uid = peer.uid, pid = peer.pid);
        tracker.spawn(
            {
                let app = app.clone();
                let stop = stop.clone();
                async move {
                    server::serve_connection(stream, app, peer, conn_limits, stop).await;
                    drop(permit);
                }
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
    remove_socket(&listener);
}

fn remove_socket(listener: &UnixListener) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let Some(path) = addr.as_pathname() else {
        return;
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if let Err(error) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), %error, "cannot remove socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::traversable_tempdir as dir;

    #[tokio::test]
    async fn bind_creates_parent_and_replaces_stale_socket() {
        let dir = dir();
        let path = dir.path().join("run/grexal/sidecar.sock");
        let first = bind(&path, None).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o666);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o755
        );
        drop(first);
        // The stale socket file is still there; nobody listens, so binding again
        // replaces it.
        let _second = bind(&path, Some(Owner { uid: 0, gid: 65534 })).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(meta.gid(), 65534);
        } else {
            assert!(
                std::env::var_os("CI").is_none(),
                "the gid check needs root, CI is set"
            );
        }
    }

    #[tokio::test]
    async fn bind_refuses_a_socket_something_listens_on() {
        let dir = dir();
        let path = dir.path().join("sidecar.sock");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        assert!(matches!(
            bind(&path, None),
            Err(ApiError::SocketInUse { .. })
        ));
        // Still the live one's file, and it still accepts.
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert!(live.accept().is_ok());
    }

    #[tokio::test]
    async fn bind_refuses_planted_files() {
        let dir = dir();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            bind(&link, None),
            Err(ApiError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(matches!(
            bind(&target, None),
            Err(ApiError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");

        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        let linked_dir = dir.path().join("linked");
        std::os::unix::fs::symlink(&real, &linked_dir).unwrap();
        assert!(matches!(
            bind(&linked_dir.join("s.sock"), None),
            Err(ApiError::UnsafeDir { .. })
        ));

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            bind(&open.join("s.sock"), None),
            Err(ApiError::UnsafeDir { .. })
        ));
    }
}
