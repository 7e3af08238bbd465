//! `dev`'s own directories on the developer's machine.
//!
//! `.grexal/` (the credentials root's parent) is created private whatever the umask: the
//! injector and the socket refuse a directory writable by group or others, and Ubuntu's
//! default umask (002) would make a plain `mkdir` one. An existing one that the umask made
//! group-writable (`mkdir .grexal` before writing `connections.json`, or an earlier `dev`)
//! and that is ours loses its write bits for group and others, with a warning: its mode
//! came from the umask, not from a choice, and the checks that follow are unchanged. One of
//! another owner is left alone for those checks to refuse. `run` never goes through here.
//!
//! The desktop's run dir defaults, under `dev`, to a per-user directory outside the
//! project (its sockets' paths must fit 108 bytes); it is created 0700 and must be ours.
//! So is the agent socket's directory when the project's `.grexal/sidecar.sock` would be
//! too long for a socket address (0711 with `--agent-user`, for the agent to reach it).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum DevDirError {
    #[error("cannot create or open {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} {problem}")]
    Unsafe { path: String, problem: String },
}

/// The mode `dev` gives the directories it creates: 0700, or 0711 when the agent runs as
/// another user (it must traverse `.grexal/` to its socket and credential files).
pub fn private_mode(agent_user: bool) -> u32 {
    if agent_user {
        0o711
    } else {
        0o700
    }
}

/// Creates `dir` (and missing parents) with `mode`, whatever the umask; an existing `dir`
/// of ours that is writable by group or others loses those bits (logged).
pub fn prepare(dir: &Path, mode: u32) -> Result<(), DevDirError> {
    let io = |source| DevDirError::Io {
        path: dir.display().to_string(),
        source,
    };
    let created = match std::fs::symlink_metadata(dir) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(io)?;
            true
        }
        Err(e) => return Err(io(e)),
    };
    // A symlink or a non-directory is left to the checks that follow, which refuse it.
    let Ok(file) = open_dir_nofollow(dir) else {
        return Ok(());
    };
    let meta = file.metadata().map_err(io)?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    let current = meta.mode() & 0o7777;
    if created {
        // The umask may have taken bits `mode` asks for (0711's x for others).
        if current != mode {
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(io)?;
        }
    } else if current & 0o022 != 0 {
        let tightened = current & !0o022;
        file.set_permissions(Permissions::from_mode(tightened))
            .map_err(io)?;
        warn!(
            dir = %dir.display(),
            was = format_args!("{current:o}"),
            now = format_args!("{tightened:o}"),
            "dev: the directory was writable by group or others (the umask?); removed that"
        );
    }
    Ok(())
}

/// Creates a per-user directory of `dev`'s (the desktop's run dir, the socket's fallback
/// directory) with `mode` (0700, or 0711) if absent (its parent must exist:
/// `$XDG_RUNTIME_DIR` or `/tmp`); an existing one must be a directory of ours that gives
/// nobody else more than `mode` does, since in `/tmp` anyone could have made it first.
pub fn prepare_owned(dir: &Path, mode: u32) -> Result<(), DevDirError> {
    let unsafe_dir = |problem: String| DevDirError::Unsafe {
        path: dir.display().to_string(),
        problem,
    };
    let io = |source| DevDirError::Io {
        path: dir.display().to_string(),
        source,
    };
    let created = match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io(e)),
    };
    let file = open_dir_nofollow(dir).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
            unsafe_dir("is a symlink or not a directory".into())
        }
        _ => io(e),
    })?;
    let meta = file.metadata().map_err(io)?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "is owned by uid {}, not by this user ({me}); remove it or give --desktop-run-dir",
            meta.uid()
        )));
    }
    let current = meta.mode() & 0o7777;
    // Read or write for others than `mode` gives is refused, not changed: someone chose it.
    if !created && current & 0o077 & !mode & 0o066 != 0 {
        return Err(unsafe_dir(format!(
            "has mode {current:o}; it must be {mode:04o} (chmod {mode:o} it)"
        )));
    }
    if current != mode {
        // The umask took bits `mode` asks for (0711's x for others), or an earlier run had
        // another agent user or none: only the search bits differ.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io)?;
    }
    Ok(())
}

fn open_dir_nofollow(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_created_dir_and_its_parents_have_the_mode_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a/.grexal");
        let b = tmp.path().join("b/.grexal");
        prepare(&a, 0o700).unwrap();
        prepare(&b, 0o711).unwrap();
        assert_eq!(mode(&a), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&b), 0o711);
    }

    #[test]
    fn an_existing_group_writable_dir_of_ours_loses_its_write_bits() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".grexal");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        prepare(&dir, 0o700).unwrap();
        assert_eq!(mode(&dir), 0o755);
        // A private one is left as it is.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o750)).unwrap();
        prepare(&dir, 0o700).unwrap();
        assert_eq!(mode(&dir), 0o750);
    }

    #[test]
    fn a_symlink_is_left_to_the_checks_that_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, Permissions::from_mode(0o777)).unwrap();
        let link = tmp.path().join(".grexal");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        prepare(&link, 0o700).unwrap();
        assert_eq!(mode(&target), 0o777, "not followed");
    }

    #[test]
    fn an_owned_run_dir_must_be_ours_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("grexal-desktop-x");
        prepare_owned(&dir, 0o700).unwrap();
        assert_eq!(mode(&dir), 0o700);
        prepare_owned(&dir, 0o700).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let err = prepare_owned(&dir, 0o700).unwrap_err().to_string();
        assert!(
            err.contains("grexal-desktop-x") && err.contains("chmod 700"),
            "{err}"
        );
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = prepare_owned(&link, 0o700).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        // For an agent user: 0711 whatever the umask, and no more than that.
        let shared = tmp.path().join("grexal-sidecar-x");
        prepare_owned(&shared, 0o711).unwrap();
        assert_eq!(mode(&shared), 0o711);
        prepare_owned(&shared, 0o711).unwrap();
        std::fs::set_permissions(&shared, Permissions::from_mode(0o751)).unwrap();
        let err = prepare_owned(&shared, 0o711).unwrap_err().to_string();
        assert!(err.contains("chmod 711"), "{err}");
        // With an agent user and then without (or the other way round), only the search
        // bits change.
        std::fs::set_permissions(&shared, Permissions::from_mode(0o711)).unwrap();
        prepare_owned(&shared, 0o700).unwrap();
        assert_eq!(mode(&shared), 0o700);
        prepare_owned(&shared, 0o711).unwrap();
        assert_eq!(mode(&shared), 0o711);
    }

    /// In /tmp anyone may make the directory first: another user's is refused however
    /// private its mode, and left as it is.
    #[test]
    fn an_owned_run_dir_of_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI is set but not root");
            eprintln!("skipping: giving a directory to another user needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("grexal-desktop-squatted");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let err = prepare_owned(&dir, 0o700).unwrap_err().to_string();
        assert!(
            err.contains("grexal-desktop-squatted") && err.contains("owned by uid 65534"),
            "{err}"
        );
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), mode(&dir)), (65534, 0o700), "left as it is");
    }
}
