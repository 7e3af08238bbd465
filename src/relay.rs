//! TODO

/// Where the VNC server listens: loopback TCP or a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VncTarget {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}
