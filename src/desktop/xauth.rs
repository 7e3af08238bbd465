//! The display's MIT-MAGIC-COOKIE-1: only a client that presents it may open the display.
//!
//! Without `-auth` an X server lets every local process connect, and whoever holds the
//! display holds the desktop: it can read the screen and type into Chromium, tell x11vnc
//! over X properties to listen on every interface or to connect out (`x11vnc -R`,
//! `VNC_CONNECT`), or Xvnc through its VNC extension to connect out (`vncconfig
//! -connect`), handing the live desktop, with the user's login on it, to any host.
//!
//! One random cookie per desktop start, from the OS's generator, in an Xauthority file
//! (0600, owned by the desktop's user) in the desktop's private run dir. The display
//! server reads it with `-auth`, x11vnc with `-auth`, Chromium through `XAUTHORITY`, and
//! the daemon's own probe sends it. Its one entry matches any display (family `Wild`, no
//! display number), so a display restarted on a new number keeps the same file. The
//! cookie is never logged: `Debug` prints it redacted.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use zeroize::Zeroizing;

use super::{DesktopError, RunAs};

/// The authorization protocol X servers and Xlib/xcb know.
const PROTOCOL: &[u8] = b"MIT-MAGIC-COOKIE-1";
/// MIT-MAGIC-COOKIE-1's cookie length (what `xauth generate` makes).
const COOKIE_BYTES: usize = 16;
/// The Xauthority family that matches any address (`FamilyWild` in Xauth.h).
const FAMILY_WILD: u16 = 0xffff;
/// The file's name in the run dir.
const FILE_NAME: &str = "Xauthority";

/// The display's cookie and the file that holds it.
pub(crate) struct XAuthority {
    path: PathBuf,
    cookie: Zeroizing<[u8; COOKIE_BYTES]>,
}

impl std::fmt::Debug for XAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XAuthority")
            .field("path", &self.path)
            .field("cookie", &"[REDACTED]")
            .finish()
    }
}

impl XAuthority {
    /// Makes a fresh cookie and writes it to `{run_dir}/Xauthority` for `user` (the
    /// daemon's own user when `None`). The run dir is the desktop user's, who could have
    /// put anything at that name: the file is written under a new name that cannot have
    /// existed (`O_EXCL`, so a planted symlink is never followed), chowned, then renamed
    /// over whatever was there.
    pub(crate) fn create(run_dir: &Path, user: Option<RunAs>) -> Result<XAuthority, DesktopError> {
        let io = |source| DesktopError::Io {
            what: "write the display's Xauthority file",
            source,
        };
        let mut cookie = Zeroizing::new([0u8; COOKIE_BYTES]);
        rand::rngs::OsRng.fill_bytes(cookie.as_mut());
        let path = run_dir.join(FILE_NAME);
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let temp = run_dir.join(format!(".{FILE_NAME}.{}", hex::encode(suffix)));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temp)?;
            if let Some(user) = user {
                std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.gid))?;
            }
            file.write_all(&entry(cookie.as_ref()))?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(io(error));
        }
        Ok(XAuthority { path, cookie })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The X11 connection setup request that presents the cookie: little-endian,
    /// protocol 11.0, then the protocol name and the cookie, each padded to 4 bytes.
    pub(crate) fn setup_request(&self) -> Zeroizing<Vec<u8>> {
        setup_request(PROTOCOL, self.cookie.as_ref())
    }
}

/// One Xauthority entry (the format libXau reads): family, address, display number,
/// protocol name and data, each but the family a big-endian u16 length and its bytes.
fn entry(cookie: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(64));
    out.extend_from_slice(&FAMILY_WILD.to_be_bytes());
    for field in [&b""[..], b"", PROTOCOL, cookie] {
        out.extend_from_slice(&(field.len() as u16).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// The 12-byte X11 setup header followed by the padded authorization name and data.
pub(crate) fn setup_request(name: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
    let pad = |n: usize| (4 - n % 4) % 4;
    let mut out = Zeroizing::new(Vec::with_capacity(12 + name.len() + data.len() + 6));
    out.extend_from_slice(&[b'l', 0, 11, 0, 0, 0]);
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    for field in [name, data] {
        out.extend_from_slice(field);
        out.extend(std::iter::repeat_n(0, pad(field.len())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn setup_requests() {
        // No authorization: the bare 12-byte header.
        assert_eq!(
            setup_request(b"", b"").as_slice(),
            [b'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // 18-byte name padded to 20, 16-byte cookie needs no padding.
        let cookie = [7u8; 16];
        let request = setup_request(PROTOCOL, &cookie);
        assert_eq!(&request[..12], [b'l', 0, 11, 0, 0, 0, 18, 0, 16, 0, 0, 0]);
        assert_eq!(&request[12..30], PROTOCOL);
        assert_eq!(&request[30..32], [0, 0]);
        assert_eq!(&request[32..], cookie);
        // Odd lengths are padded each on its own.
        assert_eq!(
            setup_request(b"abc", b"x").as_slice(),
            [b'l', 0, 11, 0, 0, 0, 3, 0, 1, 0, 0, 0, b'a', b'b', b'c', 0, b'x', 0, 0, 0]
        );
    }

    #[test]
    fn the_file_holds_one_wildcard_entry_with_a_fresh_cookie_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A symlink planted where the file goes is replaced, its target left alone.
        let target = dir.path().join("target");
        std::fs::write(&target, b"untouched").expect("target");
        std::os::unix::fs::symlink(&target, dir.path().join(FILE_NAME)).expect("plant");
        let first = XAuthority::create(dir.path(), None).expect("create");
        let bytes = std::fs::read(first.path()).expect("read");
        let meta = std::fs::symlink_metadata(first.path()).expect("meta");
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        assert_eq!(std::fs::read(&target).expect("target"), b"untouched");
        let mut want = vec![0xff, 0xff, 0, 0, 0, 0, 0, 18];
        want.extend_from_slice(PROTOCOL);
        want.extend_from_slice(&[0, 16]);
        want.extend_from_slice(first.cookie.as_ref());
        assert_eq!(bytes, want);
        // Nothing else is left in the dir (no temp file), and the cookie is not logged.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(format!("{first:?}").contains("[REDACTED]"));
        assert!(!format!("{first:?}").contains(&format!("{:?}", first.cookie.as_ref())));
        // Another start, another cookie.
        let second = XAuthority::create(dir.path(), None).expect("create again");
        assert_ne!(first.cookie.as_ref(), second.cookie.as_ref());
    }
}
