//! The directories the injector holds open: the credentials root and the env file's
//! directory, each opened once by its configured path, checked, and from then on used only
//! through its fd.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::FileStat;
use nix::unistd::geteuid;

use super::{fsops, InjectError, Owner};

/// A directory we hold open, with the parent fd and name it was opened under (to remove
/// it on `wipe` when we created it).
pub(super) struct HeldDir {
    pub(super) fd: OwnedFd,
    pub(super) parent: OwnedFd,
    pub(super) name: OsString,
    pub(super) path: PathBuf,
    pub(super) created: bool,
}

/// How a directory that does not exist yet is created.
#[derive(Clone, Copy)]
pub(super) enum CreateAs {
    /// 0700, owned by the agent's user: the credentials root.
    Private,
    /// 0755, owned by the daemon: the env file's directory, which by default is also the
    /// agent socket's (`/run/grexal`), so the agent must traverse it but not own it.
    Shared,
}

/// Opens (creating 0700 if absent) the directory `path`, and checks it is safe to use:
/// a real directory, not a symlink, owned by root, the daemon's euid or the owner, and
/// not group/world writable; an existing credentials root must also be searchable by the
/// owner.
pub(super) fn open_safe_dir(
    path: &Path,
    owner: Option<Owner>,
    create_as: CreateAs,
) -> Result<HeldDir, InjectError> {
    let unsafe_root = |problem: &str| InjectError::UnsafeRoot {
        path: path.display().to_string(),
        problem: problem.to_owned(),
    };
    let dir_err = |e: Errno| InjectError::Dir {
        path: path.display().to_string(),
        source: fsops::errno(e),
    };
    if !path.is_absolute() {
        return Err(unsafe_root("must be an absolute path"));
    }
    let (Some(parent_path), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(unsafe_root("must name a directory below /"));
    };
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(unsafe_root("must not contain .."));
    }
    let parent = fsops::open_path_dir(parent_path).map_err(dir_err)?;
    let created = match fsops::mkdir(parent.as_raw_fd(), name) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(dir_err(e)),
    };
    let fd = match fsops::open_dir(parent.as_raw_fd(), name) {
        Ok(fd) => fd,
        // O_NOFOLLOW | O_DIRECTORY answers ELOOP or ENOTDIR for a symlink, depending on
        // the kernel; lstat tells which it was.
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
            let link = fsops::lstat_at(parent.as_raw_fd(), name)
                .ok()
                .flatten()
                .is_some_and(|st| fsops::is_symlink(&st));
            return Err(unsafe_root(if link {
                "is a symlink"
            } else {
                "is not a directory"
            }));
        }
        Err(e) => return Err(dir_err(e)),
    };
    // Judge the directory we actually opened, not the path, so a swap after the check
    // cannot matter.
    let st = fsops::fstat(&fd).map_err(dir_err)?;
    if !fsops::is_dir(&st) {
        return Err(unsafe_root("is not a directory"));
    }
    let euid = geteuid().as_raw();
    let owner_ok = st.st_uid == 0 || st.st_uid == euid || owner.is_some_and(|o| o.uid == st.st_uid);
    if !owner_ok {
        return Err(unsafe_root(&format!(
            "is owned by uid {}, not by root, the daemon or the agent's user",
            st.st_uid
        )));
    }
    if fsops::is_group_or_world_writable(&st) {
        return Err(unsafe_root(&format!(
            "is writable by group or others (mode {:o})",
            st.st_mode & 0o7777
        )));
    }
    if let (false, CreateAs::Private, Some(owner)) = (created, create_as, owner) {
        // An existing root is used as it is (one the operator made is never chowned: it
        // may hold more than our files); the agent must be able to enter it, or it finds
        // every file with EACCES while the boot reports success.
        if !can_search(&st, owner) {
            return Err(unsafe_root(&format!(
                "cannot be entered by the agent's user (uid {}, gid {}): it is owned by uid {} \
                 gid {} with mode {:o}; make it the agent user's, or searchable by its group \
                 or by others",
                owner.uid,
                owner.gid,
                st.st_uid,
                st.st_gid,
                st.st_mode & 0o7777
            )));
        }
    }
    if created {
        if st.st_uid != euid {
            return Err(unsafe_root("was replaced while it was being created"));
        }
        match create_as {
            CreateAs::Private => {
                fsops::chmod(&fd, 0o700).map_err(dir_err)?;
                fsops::chown(&fd, owner).map_err(dir_err)?;
            }
            CreateAs::Shared => fsops::chmod(&fd, 0o755).map_err(dir_err)?,
        }
    }
    Ok(HeldDir {
        fd,
        parent,
        name: name.to_os_string(),
        path: path.to_path_buf(),
        created,
    })
}

/// Whether `owner` may search (enter) the directory `st`, by the permission bits of the
/// class it falls in: the user's if it owns it, else the group's if it is its primary
/// group, else the others'. Its supplementary groups and ACLs are not looked at (the
/// injector knows only the uid and gid): a root the agent could enter only through them
/// is refused, a clear error at boot rather than a failure at use.
fn can_search(st: &FileStat, owner: Owner) -> bool {
    let bit = if st.st_uid == owner.uid {
        0o100
    } else if st.st_gid == owner.gid {
        0o010
    } else {
        0o001
    };
    st.st_mode & bit != 0
}
