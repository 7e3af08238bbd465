//! noVNC's files, confined under its web root.
//!
//! The requested path is untrusted: it is checked lexically first (relative, no `.`/`..`,
//! no empty components, no NUL or backslash, a known extension), then resolved with
//! `canonicalize` and must still lie under the canonical root (so a symlink cannot lead
//! out), then opened with `O_NOFOLLOW` and checked on the open descriptor to be a regular
//! file within the size limit.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::ViewerError;

/// Longest request path, and most components in it (noVNC's deepest file has 5).
const MAX_PATH_BYTES: usize = 512;
const MAX_COMPONENTS: usize = 12;
const MAX_COMPONENT_BYTES: usize = 255;

pub struct File {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// The content type for a file name, or `None` when that kind of file is not served.
pub fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "json" => "application/json",
        _ => return None,
    })
}

/// The lexical check: a relative path of plain components, or `None`.
pub fn safe_relative(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES || path.starts_with('/') {
        return None;
    }
    if path
        .bytes()
        .any(|b| b == 0 || b == b'\\' || b.is_ascii_control())
    {
        return None;
    }
    let mut out = PathBuf::new();
    for (n, part) in path.split('/').enumerate() {
        // Hidden files are never noVNC's; this also rules out `.` and `..`.
        if n >= MAX_COMPONENTS
            || part.is_empty()
            || part.len() > MAX_COMPONENT_BYTES
            || part.starts_with('.')
        {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

/// Reads `path` (as captured from the URL, already percent-decoded) under `root`.
pub async fn read(root: &Path, path: &str, max_bytes: u64) -> Result<File, ViewerError> {
    let rel = safe_relative(path).ok_or(ViewerError::NotFound)?;
    let content_type = content_type(path).ok_or(ViewerError::NotFound)?;
    let root = root.to_path_buf();
    // Blocking file-system calls, off the async workers.
    let bytes = tokio::task::spawn_blocking(move || read_confined(&root, &rel, max_bytes))
        .await
        .map_err(|e| ViewerError::Read(std::io::Error::other(e)))??;
    Ok(File {
        bytes,
        content_type,
    })
}

pub(super) fn read_confined(
    root: &Path,
    rel: &Path,
    max_bytes: u64,
) -> Result<Vec<u8>, ViewerError> {
    let not_found_or = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound
        | std::io::ErrorKind::NotADirectory
        | std::io::ErrorKind::PermissionDenied => ViewerError::NotFound,
        _ => ViewerError::Read(e),
    };
    let root = root.canonicalize().map_err(not_found_or)?;
    let full = root.join(rel).canonicalize().map_err(not_found_or)?;
    if !full.starts_with(&root) || full == root {
        return Err(ViewerError::NotFound);
    }
    // `full` has no symlinks left; O_NOFOLLOW makes a swap of its last component fail.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&full)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                ViewerError::NotFound
            } else {
                not_found_or(e)
            }
        })?;
    let meta = file.metadata().map_err(ViewerError::Read)?;
    if !meta.is_file() {
        return Err(ViewerError::NotFound);
    }
    if meta.len() > max_bytes {
        return Err(ViewerError::TooLarge { limit: max_bytes });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after fstat: never read past the limit.
    file.by_ref()
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(ViewerError::Read)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ViewerError::TooLarge { limit: max_bytes });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lexical_check() {
        let cases: &[(&str, bool)] = &[
            ("core/rfb.js", true),
            ("vendor/pako/lib/zlib/inflate.js", true),
            ("app/images/icons/novnc-16x16.png", true),
            ("", false),
            ("/etc/passwd", false),
            ("../etc/passwd", false),
            ("core/../../etc/passwd", false),
            ("core/./rfb.js", false),
            ("core//rfb.js", false),
            ("core/", false),
            (".hidden.js", false),
            ("core\\..\\rfb.js", false),
            ("core/rfb.js\0.png", false),
            ("core/\nrfb.js", false),
            ("a/b/c/d/e/f/g/h/i/j/k/l/m.js", false),
        ];
        for (path, ok) in cases {
            assert_eq!(safe_relative(path).is_some(), *ok, "{path:?}");
        }
    }

    #[test]
    fn content_types() {
        let cases: &[(&str, Option<&str>)] = &[
            ("core/rfb.js", Some("text/javascript; charset=utf-8")),
            ("app/styles/base.css", Some("text/css; charset=utf-8")),
            ("vnc.html", Some("text/html; charset=utf-8")),
            ("a.SVG", Some("image/svg+xml")),
            ("a.png", Some("image/png")),
            ("a.woff", Some("font/woff")),
            ("app/locale/de.json", Some("application/json")),
            ("utils/novnc_proxy", None),
            ("utils/validate.pl", None),
            ("app/sounds/bell.mp3", None),
            ("noext", None),
        ];
        for (name, want) in cases {
            assert_eq!(content_type(name), *want, "{name:?}");
        }
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("core")).expect("mkdir");
        std::fs::write(root.join("core/rfb.js"), "export default 1;\n").expect("write");
        std::fs::write(root.join("big.js"), vec![b'x'; 100]).expect("write");
        std::fs::write(dir.path().join("secret.js"), "outside").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.js"), root.join("out.js"))
            .expect("symlink");
        std::os::unix::fs::symlink(root.join("core/rfb.js"), root.join("in.js")).expect("symlink");
        std::os::unix::fs::symlink(dir.path(), root.join("up")).expect("symlink");
        std::fs::create_dir(root.join("dir.js")).expect("mkdir");
        dir
    }

    #[tokio::test]
    async fn confinement() {
        let dir = tree();
        let root = dir.path().join("root");
        let ok = read(&root, "core/rfb.js", 1000).await.expect("served");
        assert_eq!(ok.bytes, b"export default 1;\n");
        assert_eq!(ok.content_type, "text/javascript; charset=utf-8");
        // A symlink that stays inside the root is fine.
        assert!(read(&root, "in.js", 1000).await.is_ok());
        for bad in [
            "out.js",
            "up/secret.js",
            "dir.js",
            "missing.js",
            "../secret.js",
            "core/rfb.js/x.js",
        ] {
            assert!(
                matches!(read(&root, bad, 1000).await, Err(ViewerError::NotFound)),
                "{bad}"
            );
        }
        assert!(matches!(
            read(&root, "big.js", 99).await,
            Err(ViewerError::TooLarge { .. })
        ));
        assert!(read(&root, "big.js", 100).await.is_ok());
        assert!(matches!(
            read(&dir.path().join("nope"), "core/rfb.js", 1000).await,
            Err(ViewerError::NotFound)
        ));
    }

    proptest! {
        #[test]
        fn accepted_paths_stay_relative_and_plain(path in "[a-z./\\\\\\x00%-]{0,40}") {
            if let Some(rel) = safe_relative(&path) {
                prop_assert!(rel.is_relative());
                for c in rel.components() {
                    prop_assert!(matches!(c, std::path::Component::Normal(_)), "{:?}", c);
                }
                prop_assert!(!path.contains('\0') && !path.contains('\\'));
            }
        }
    }
}
