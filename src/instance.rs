//! One daemon per agent socket: the instance lock.
//!
//! Two daemons given the same paths (two `dev` in one project, from two terminals) would
//! share the socket, the credentials root and the env file: the second would swap its
//! credentials over the first's, take over its socket, and on exit wipe the files and
//! remove the socket the first still serves. So at the start of boot, before anything is
//! touched, the daemon takes an exclusive `flock` on `SOCKET.lock`, next to the socket,
//! and holds it until the process exits; a second daemon with the same socket gets
//! `InUse` (exit 75) naming the pid that holds it, which the holder writes into the file.
//!
//! - **Next to the socket**: the socket's directory is one the daemon checks anyway (a
//!   real directory, root's or ours, not writable by group or others: `api::ensure_dir`),
//!   so nobody else can plant or swap the file; under `run` it is the runtime directory
//!   (`/run/grexal`), where lock files belong. The credentials root is guarded as well, by
//!   a lock on its directory (`inject`), for two daemons that share it behind two sockets.
//! - **Never removed**: the file outlives the daemon, on purpose. The lock dies with the
//!   process (however it ends, SIGKILL included), so a leftover file never blocks the next
//!   start; unlinking it at exit would let a daemon that had opened it just before lock an
//!   orphaned inode while a third creates a fresh one, and both would run.
//! - **Held to the very end**: released only when the process exits, after the socket is
//!   removed, so a successor can never bind its socket before the predecessor's shutdown
//!   has removed its own.
//! - A file system without locks (`ENOLCK`, `EOPNOTSUPP`: an old NFS) is warned about and
//!   boot goes on, unguarded, rather than refusing to run there at all.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::exit::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "another grexal-sidecar{} is already running with the socket {socket} (it holds {lock}); \
         stop it first, or give this one its own --socket, --credentials-dir and --env-file",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse {
        socket: String,
        lock: String,
        holder: Option<u32>,
    },
    #[error("lock file {path} {problem}")]
    Unsafe { path: String, problem: String },
    #[error("the socket's directory")]
    Dir(#[source] crate::api::ApiError),
    #[error("cannot create or lock {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl InstanceError {
    /// 75 (EX_TEMPFAIL) for a lock held by another daemon: it is not a mistake in this
    /// one's configuration, and the same command works once the other stops.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            InstanceError::InUse { .. } => ExitCode::InUse,
            InstanceError::Unsafe { .. }
            | InstanceError::Dir(crate::api::ApiError::UnsafeDir { .. }) => ExitCode::Config,
            InstanceError::Dir(_) | InstanceError::Io { .. } => ExitCode::Os,
        }
    }
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct InstanceLock {
    _file: Option<File>,
}

/// The lock file of the daemon whose agent socket is `socket`: `SOCKET.lock`.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the instance lock for `socket` (see the module docs). The socket's directory is
/// created (0755) or checked as `api::bind` does.
pub fn acquire(socket: &Path) -> Result<InstanceLock, InstanceError> {
    let path = lock_path(socket);
    let shown = path.display().to_string();
    let io = |source| InstanceError::Io {
        path: shown.clone(),
        source,
    };
    if let Some(parent) = socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::api::ensure_dir(parent).map_err(InstanceError::Dir)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => InstanceError::Unsafe {
                path: shown.clone(),
                problem: "is a symlink".into(),
            },
            Some(libc::EISDIR) => InstanceError::Unsafe {
                path: shown.clone(),
                problem: "is not a regular file".into(),
            },
            _ => io(e),
        })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(InstanceError::Unsafe {
            path: shown,
            problem: "is not a regular file".into(),
        });
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(InstanceError::Unsafe {
            path: shown,
            problem: "belongs to another user".into(),
        });
    }
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => Err(InstanceError::InUse {
                socket: socket.display().to_string(),
                lock: shown,
                holder: read_pid(&mut file),
            }),
            Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) => {
                tracing::warn!(path = %shown, %error, "this file system cannot lock files: a second daemon with the same socket would not be noticed");
                Ok(InstanceLock { _file: None })
            }
            _ => Err(io(error)),
        };
    }
    // Ours now: the pid a second daemon names. A failure here costs only that name.
    let pid = std::process::id();
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{pid}"));
    if let Err(error) = written {
        tracing::warn!(path = %shown, %error, "cannot record the pid in the lock file");
    }
    tracing::debug!(path = %shown, pid, "instance lock taken");
    Ok(InstanceLock { _file: Some(file) })
}

/// The pid the holder wrote, if it has yet (it writes right after locking).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::traversable_tempdir as dir;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = dir();
        let socket = dir.path().join("run/sidecar.sock");
        let first = acquire(&socket).expect("first");
        let lock = dir.path().join("run/sidecar.sock.lock");
        assert_eq!(
            std::fs::read_to_string(&lock).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert_eq!(
            std::fs::metadata(&lock).unwrap().mode() & 0o777,
            0o600,
            "the lock file is private"
        );
        // Another open file description, as another process would have.
        match acquire(&socket) {
            Err(InstanceError::InUse { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()))
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        // The file stays, and does not stop the next daemon.
        assert!(lock.exists());
        let _again = acquire(&socket).expect("after the first is gone");
    }

    #[test]
    fn a_planted_lock_file_is_refused() {
        let dir = dir();
        let socket = dir.path().join("sidecar.sock");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, lock_path(&socket)).unwrap();
        assert!(matches!(
            acquire(&socket),
            Err(InstanceError::Unsafe { .. })
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");

        let socket = dir.path().join("other.sock");
        std::fs::create_dir(lock_path(&socket)).unwrap();
        assert!(matches!(
            acquire(&socket),
            Err(InstanceError::Unsafe { .. })
        ));
    }
}
