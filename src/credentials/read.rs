//! Reading the files of local development: `dev`'s `connections.json` and the files its
//! `"path"` entries name (which `seal` reads too). Only regular files are read, opened
//! without blocking and judged by what was opened; their bytes go straight into memory
//! that is zeroized when dropped.

use zeroize::{Zeroize, Zeroizing};

use super::file::{into_secret, too_big};
use super::{invalid, CredentialsError, MAX_CREDENTIALS_BYTES};
use crate::secret::SecretBytes;

/// Why [`read_document`] could not read a document.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read it")]
    Io(#[source] std::io::Error),
    #[error("it is over the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("it is not a regular file")]
    NotRegular,
}

/// Reads a plaintext credential document (`dev`'s `.grexal/connections.json`), at most
/// [`MAX_CREDENTIALS_BYTES`], into memory that is zeroized when dropped. The buffer is
/// sized once from the file's length and never grows (a grown buffer would free a copy of
/// the plaintext unzeroized); a file that grows while it is read is refused. Only a
/// regular file is read (a device or a FIFO has no length to check the limit against):
/// it is opened without blocking and judged by what was opened.
pub fn read_document(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    read_document_and_mode(path).map(|(bytes, _)| bytes)
}

/// [`read_document`], with the permission bits of the file that was read (so a caller can
/// judge them without a second lookup of the path).
pub fn read_document_and_mode(
    path: &std::path::Path,
) -> Result<(Zeroizing<Vec<u8>>, u32), ReadError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut file = open_nonblocking(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    let len = meta.len();
    if len > MAX_CREDENTIALS_BYTES as u64 {
        return Err(ReadError::TooLarge {
            limit: MAX_CREDENTIALS_BYTES,
        });
    }
    // One byte more than the file: reading into it means the file grew.
    let mut buf = Zeroizing::new(vec![0u8; len as usize + 1]);
    let mut filled = 0;
    loop {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled == buf.len() {
                    return Err(ReadError::Io(std::io::Error::other(
                        "the file grew while it was read",
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    buf.truncate(filled);
    Ok((buf, meta.permissions().mode() & 0o7777))
}

/// Opens `path` for reading with O_NONBLOCK, so a FIFO (or a device) is opened at once
/// rather than waiting for a writer, and can be refused for what it is. Reads of a regular
/// file are unaffected by the flag.
fn open_nonblocking(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

pub(super) fn read_dev_file(
    loc: &str,
    base_dir: &std::path::Path,
    rel: &str,
    max_size: u64,
) -> Result<SecretBytes, CredentialsError> {
    read_local_file(loc, base_dir, rel, max_size, || too_big(loc, max_size))
}

/// [`read_dev_file`] with the error for a file over `max_size` given by the caller.
pub(super) fn read_local_file(
    loc: &str,
    base_dir: &std::path::Path,
    rel: &str,
    max_size: u64,
    too_big: impl Fn() -> CredentialsError,
) -> Result<SecretBytes, CredentialsError> {
    use std::io::Read;
    let rel_path = std::path::Path::new(rel);
    if rel.is_empty() || rel_path.is_absolute() {
        return Err(invalid(
            loc,
            "must be a relative path (relative to the directory of connections.json)",
        ));
    }
    let full = base_dir.join(rel_path);
    let io_problem =
        |e: std::io::Error| invalid(loc, format!("cannot read {}: {e}", full.display()));
    // Symlinks are followed: the path is the developer's own, in their own file.
    let file = open_nonblocking(&full).map_err(io_problem)?;
    let meta = file.metadata().map_err(io_problem)?;
    if !meta.is_file() {
        return Err(invalid(
            loc,
            format!("{} is not a regular file", full.display()),
        ));
    }
    if meta.len() > max_size {
        return Err(too_big());
    }
    // A warning, as for connections.json itself: the developer's own file (a private key,
    // say), made 0644 by the usual umask. Its path and mode are logged, never its contents.
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o066 != 0 {
        tracing::warn!(
            path = %full.display(),
            mode = format_args!("{mode:04o}"),
            "{loc}: this credential file may be read or written by group or others: chmod 600 it"
        );
    }
    // The file may grow between the check and the read: read at most one byte too many.
    let mut buf = Vec::with_capacity(usize::try_from(max_size).unwrap_or(0).saturating_add(1));
    file.take(max_size + 1)
        .read_to_end(&mut buf)
        .map_err(io_problem)?;
    if buf.len() as u64 > max_size {
        buf.zeroize();
        return Err(too_big());
    }
    Ok(into_secret(buf))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::tests::manifest;
    use super::super::{Credential, CredentialSet, CredentialsError, Source};
    use super::{read_document, ReadError};
    use crate::secret::ExposeSecret;

    #[test]
    fn dev_file_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("keys")).expect("mkdir");
        std::fs::write(dir.path().join("keys/id.pem"), b"key-bytes").expect("write");
        std::fs::write(dir.path().join("big.pem"), [0u8; 17]).expect("write");
        let m = manifest();
        let dev = Source::DevFile {
            base_dir: dir.path(),
        };
        let set = CredentialSet::parse(
            json!({"connections": {"ssh_key": {"path": "keys/id.pem"}}})
                .to_string()
                .as_bytes(),
            &m,
            dev,
        )
        .expect("dev path");
        let Some(Credential::File(f)) = set.connections.get("ssh_key") else {
            panic!()
        };
        assert_eq!(
            (f.filename.as_str(), f.content.expose_secret()),
            ("id.pem", &b"key-bytes"[..])
        );

        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "too big",
                json!({"connections": {"ssh_key": {"path": "big.pem"}}}),
                "larger than max_size_bytes",
            ),
            (
                "absolute",
                json!({"connections": {"ssh_key": {"path": "/etc/hostname", "filename": "a.pem"}}}),
                "relative path",
            ),
            (
                "missing",
                json!({"connections": {"ssh_key": {"path": "nope.pem"}}}),
                "cannot read",
            ),
            (
                "directory",
                json!({"connections": {"ssh_key": {"path": "keys", "filename": "a.pem"}}}),
                "not a regular file",
            ),
            (
                "both",
                json!({"connections": {"ssh_key": {"path": "keys/id.pem", "content_base64": "aGk="}}}),
                "not both",
            ),
        ];
        for (name, doc, want) in cases {
            match CredentialSet::parse(doc.to_string().as_bytes(), &m, dev) {
                Err(CredentialsError::Invalid { problem, .. }) => {
                    assert!(problem.contains(want), "{name}: {problem}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    /// What is not a regular file is refused without reading it and without waiting: a FIFO
    /// nobody writes (opening it waited for a writer for good) and /dev/zero (through a
    /// symlink), as the document
    /// and as a `dev` file's `"path"`.
    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.pem");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.pem")).expect("symlink");
        let base = dir.path().to_path_buf();
        let (done, results) = std::sync::mpsc::channel();
        // On a thread: a hang must fail the test, not stop it.
        std::thread::spawn(move || {
            let m = manifest();
            for target in ["fifo.pem", "zero.pem"] {
                let document = read_document(&base.join(target)).map(|_| ());
                let doc = json!({"connections": {"ssh_key": {"path": target}}}).to_string();
                let path =
                    CredentialSet::parse(doc.as_bytes(), &m, Source::DevFile { base_dir: &base })
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                let _ = done.send((target, document, path));
            }
        });
        for _ in 0..2 {
            let (target, document, path) = results
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("refused without waiting");
            assert!(
                matches!(document, Err(ReadError::NotRegular)),
                "{target}: {document:?}"
            );
            let err = path.expect_err(target);
            assert!(err.contains("is not a regular file"), "{target}: {err}");
        }
    }
}
