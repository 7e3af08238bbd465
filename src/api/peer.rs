//! Who is on the other end of a Unix socket connection (SO_PEERCRED, read once at accept),
//! and who may do what.

use super::error::ApiError;

/// The peer's credentials as the kernel reported them when it connected. Inserted into
/// every request's extensions by the connection that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Peer {
    /// SO_PEERCRED of an accepted connection.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Self> {
        let cred = stream.peer_cred()?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        })
    }
}

/// Who may read credentials and the list of connections: root, the agent's uid, and the
/// daemon's own uid (in `dev` the daemon runs as the developer, who runs the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub agent_uid: Option<u32>,
    pub daemon_uid: u32,
}

impl Policy {
    pub fn new(agent_uid: Option<u32>) -> Self {
        Policy {
            agent_uid,
            daemon_uid: nix::unistd::geteuid().as_raw(),
        }
    }

    pub fn may_read_credentials(&self, peer: &Peer) -> bool {
        peer.uid == 0 || peer.uid == self.daemon_uid || Some(peer.uid) == self.agent_uid
    }

    pub fn authorize_credentials(&self, peer: Option<&Peer>) -> Result<(), ApiError> {
        match peer {
            Some(peer) if self.may_read_credentials(peer) => Ok(()),
            Some(peer) => Err(ApiError::Forbidden { uid: peer.uid }),
            // A request without a peer did not come through `serve` (a misconfigured
            // router); refuse rather than guess.
            None => Err(ApiError::Forbidden { uid: u32::MAX }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_table() {
        let policy = Policy {
            agent_uid: Some(1000),
            daemon_uid: 0,
        };
        let peer = |uid| Peer {
            uid,
            gid: uid,
            pid: None,
        };
        for (uid, allowed) in [(0, true), (1000, true), (1001, false), (65534, false)] {
            assert_eq!(
                policy.may_read_credentials(&peer(uid)),
                allowed,
                "uid {uid}"
            );
        }
        let dev = Policy {
            agent_uid: None,
            daemon_uid: 501,
        };
        assert!(dev.may_read_credentials(&peer(501)));
        assert!(!dev.may_read_credentials(&peer(502)));
        assert!(matches!(
            dev.authorize_credentials(None),
            Err(ApiError::Forbidden { .. })
        ));
    }
}
