//! Directory-fd-relative filesystem operations that never follow a symlink.
//!
//! Every function takes the fd of a directory we opened ourselves and a single path
//! component; nothing here resolves a multi-component path. A symlink at the component is
//! either refused (`open_dir`, `create_file`) or removed as the link itself (`remove_tree`),
//! never followed.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{self, FileStat, Mode, SFlag};
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};

use super::Owner;

/// How deep `remove_tree` descends; we never create subdirectories, so anything deeper
/// was planted.
const MAX_REMOVE_DEPTH: usize = 8;

pub(crate) fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and is owned by no one else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Opens `name` in `dir` as a directory, refusing a symlink (ELOOP) or a non-directory
/// (ENOTDIR).
pub(crate) fn open_dir(dir: RawFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    fcntl::openat(Some(dir), name, flags, Mode::empty()).map(own)
}

/// Opens a directory by absolute path, following symlinks: only for the configured parent
/// of the root, which is trusted configuration.
pub(crate) fn open_path_dir(path: &std::path::Path) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    fcntl::open(path, flags, Mode::empty()).map(own)
}

pub(crate) fn fstat(fd: &OwnedFd) -> Result<FileStat, Errno> {
    stat::fstat(fd.as_raw_fd())
}

/// The type of `name` in `dir` without following it; `None` when it does not exist.
pub(crate) fn lstat_at(dir: RawFd, name: &OsStr) -> Result<Option<FileStat>, Errno> {
    match stat::fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

pub(crate) fn is_symlink(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

/// What a directory entry is, from its `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    /// A FIFO, a socket or a device node.
    Special,
}

impl Kind {
    pub(crate) fn of(st: &FileStat) -> Self {
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Special,
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Special => "a FIFO, socket or device node",
        }
    }
}

/// Whether group or others may write: such a directory can have entries swapped by anyone.
pub(crate) fn is_group_or_world_writable(st: &FileStat) -> bool {
    st.st_mode & 0o022 != 0
}

pub(crate) fn mkdir(dir: RawFd, name: &OsStr) -> Result<(), Errno> {
    stat::mkdirat(Some(dir), name, Mode::from_bits_truncate(0o700))
}

pub(crate) fn chown(fd: &OwnedFd, owner: Option<Owner>) -> Result<(), Errno> {
    match owner {
        Some(o) => unistd::fchown(
            fd.as_raw_fd(),
            Some(Uid::from_raw(o.uid)),
            Some(Gid::from_raw(o.gid)),
        ),
        None => Ok(()),
    }
}

pub(crate) fn chmod(fd: &OwnedFd, mode: u32) -> Result<(), Errno> {
    stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))
}

pub(crate) fn fsync(fd: &OwnedFd) -> Result<(), Errno> {
    unistd::fsync(fd.as_raw_fd())
}

/// Creates `name` in `dir` (which must not exist), writes `content`, sets mode 0600 and the
/// owner, and fsyncs it. `O_EXCL | O_NOFOLLOW` means a planted file or symlink fails the
/// call instead of being written through.
pub(crate) fn create_file(
    dir: RawFd,
    name: &OsStr,
    content: &[u8],
    owner: Option<Owner>,
) -> io::Result<()> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd =
        fcntl::openat(Some(dir), name, flags, Mode::from_bits_truncate(0o600)).map_err(errno)?;
    let fd = own(fd);
    // The umask may have narrowed the mode; set it exactly.
    chmod(&fd, 0o600).map_err(errno)?;
    chown(&fd, owner).map_err(errno)?;
    let mut file = File::from(fd);
    file.write_all(content)?;
    file.sync_all()
}

/// Writes `content` to `path` as a new 0600 file (fsynced) renamed over whatever is
/// there: a reader never sees part of it, and a symlink planted at `path` is replaced,
/// not written through. For files outside the credential tree, e.g. `dev`'s takeover URL.
pub(crate) fn replace_file(path: &std::path::Path, content: &[u8]) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path",
        ));
    };
    let dir = open_path_dir(parent).map_err(errno)?;
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".tmp-{}", std::process::id()));
    unlink(dir.as_raw_fd(), &temp).map_err(errno)?;
    create_file(dir.as_raw_fd(), &temp, content, None)?;
    rename_replace(dir.as_raw_fd(), &temp, name).map_err(|e| {
        let _ = unlink(dir.as_raw_fd(), &temp);
        errno(e)
    })
}

pub(crate) fn rename_noreplace(dir: RawFd, from: &OsStr, to: &OsStr) -> Result<(), Errno> {
    fcntl::renameat2(
        Some(dir),
        from,
        Some(dir),
        to,
        RenameFlags::RENAME_NOREPLACE,
    )
}

pub(crate) fn rename_exchange(dir: RawFd, a: &OsStr, b: &OsStr) -> Result<(), Errno> {
    fcntl::renameat2(Some(dir), a, Some(dir), b, RenameFlags::RENAME_EXCHANGE)
}

pub(crate) fn rename_replace(dir: RawFd, from: &OsStr, to: &OsStr) -> Result<(), Errno> {
    fcntl::renameat(Some(dir), from, Some(dir), to)
}

pub(crate) fn unlink(dir: RawFd, name: &OsStr) -> Result<(), Errno> {
    match unistd::unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir) {
        Err(Errno::ENOENT) => Ok(()),
        other => other,
    }
}

/// The names in a directory, without `.` and `..`.
pub(crate) fn list(dir: RawFd) -> Result<Vec<OsString>, Errno> {
    // A fresh fd for the stream: `Dir` closes what it is given, and "." relative to a
    // directory fd is that directory itself.
    let mut stream = nix::dir::Dir::openat(
        Some(dir),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in stream.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Removes `name` from `dir`: a file or symlink is unlinked (a symlink is never followed);
/// a directory is emptied through fds opened with `O_NOFOLLOW` and then removed. Absent is
/// success.
pub(crate) fn remove_tree(dir: RawFd, name: &OsStr) -> Result<(), Errno> {
    remove_tree_at(dir, name, 0)
}

fn remove_tree_at(dir: RawFd, name: &OsStr, depth: usize) -> Result<(), Errno> {
    match unistd::unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        // Linux answers EISDIR for a directory; some filesystems EPERM.
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(Errno::ELOOP);
    }
    let child = match open_dir(dir, name) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in list(child.as_raw_fd())? {
        remove_tree_at(child.as_raw_fd(), &entry, depth + 1)?;
    }
    drop(child);
    match unistd::unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}
