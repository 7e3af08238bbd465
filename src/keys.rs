//! Key files: the sandbox's X25519 key pair (the bundle is sealed to it) and the
//! platform's Ed25519 key pair (the bundle is signed with it; the image trusts its public
//! half). Files hold one line of standard base64 of the 32 raw key bytes; private key
//! files are written 0600 and never logged.
//!
//! The raw bytes are the RFC 7748 / RFC 8032 encodings every library uses: an X25519
//! private key is its 32-byte scalar (clamped when used), an Ed25519 private key its
//! 32-byte seed. So Python's `cryptography` `from_private_bytes`/`public_bytes_raw` read
//! and write the same files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use zeroize::Zeroizing;

/// A key file is one base64 line: 44 characters and a newline. Anything much larger is
/// not a key file, and we refuse before reading it all.
const MAX_KEY_FILE_BYTES: u64 = 1024;
/// The trusted platform key list: a handful of keys with comments.
const MAX_TRUSTED_FILE_BYTES: u64 = 64 * 1024;
/// A trusted list longer than this is a mistake, not a rotation.
const MAX_TRUSTED_KEYS: usize = 64;
/// Mode bits that must be clear on a private key file: any group or other access.
const PRIVATE_FORBIDDEN_MODE: u32 = 0o077;
/// Mode of private key files we write.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of public key files we write.
pub(crate) const PUBLIC_FILE_MODE: u32 = 0o644;

/// The sandbox's private X25519 key. `Debug` is redacted; zeroized on drop.
pub struct SandboxSecretKey(pub(crate) x25519_dalek::StaticSecret);

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SandboxPublicKey(pub [u8; 32]);

/// The platform's private Ed25519 signing key. `Debug` is redacted; zeroized on drop.
pub struct PlatformSigningKey(pub(crate) ed25519_dalek::SigningKey);

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PlatformPublicKey(pub ed25519_dalek::VerifyingKey);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write key file {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is not one line of base64 encoding 32 bytes")]
    Format { path: String },
    #[error("private key file {path} is readable by group or others (mode {mode:o})")]
    Permissions { path: String, mode: u32 },
    /// A key given inline (not from a file) is not standard base64 of a valid 32-byte key.
    #[error("key is not standard base64 encoding a valid 32-byte key")]
    Encoding,
    #[error("trusted key list {path}, line {line}: not standard base64 of an Ed25519 public key")]
    TrustedLine { path: String, line: usize },
    #[error("trusted key list {path} holds no keys")]
    NoTrustedKeys { path: String },
    #[error("trusted key list {path} holds more than {limit} keys")]
    TooManyTrustedKeys { path: String, limit: usize },
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("key file {path} is larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
}

impl KeyError {
    /// True when the file is simply absent (callers map this to "no input").
    pub fn is_not_found(&self) -> bool {
        matches!(self, KeyError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

impl std::fmt::Debug for SandboxSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SandboxSecretKey([REDACTED])")
    }
}

impl std::fmt::Debug for PlatformSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlatformSigningKey([REDACTED])")
    }
}

impl std::fmt::Debug for SandboxPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SandboxPublicKey({})", self.to_base64())
    }
}

impl std::fmt::Debug for PlatformPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlatformPublicKey({})", self.to_base64())
    }
}

impl SandboxSecretKey {
    pub fn generate() -> Self {
        SandboxSecretKey(x25519_dalek::StaticSecret::random_from_rng(
            rand::rngs::OsRng,
        ))
    }

    /// From the raw 32-byte scalar (as in the key file).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        SandboxSecretKey(x25519_dalek::StaticSecret::from(*bytes))
    }

    pub fn public_key(&self) -> SandboxPublicKey {
        SandboxPublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The raw scalar, for the HPKE layer; the caller zeroizes it.
    pub(crate) fn to_raw(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// Loads a private key file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let raw = read_private_key_file(path)?;
        Ok(SandboxSecretKey::from_bytes(*raw))
    }

    /// Writes the key file 0600, atomically (temp file and rename).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        save_key_file(path, &self.to_raw()[..], PRIVATE_FILE_MODE)
    }
}

impl SandboxPublicKey {
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_key(text.as_bytes())
            .map(|raw| SandboxPublicKey(*raw))
            .ok_or(KeyError::Encoding)
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let raw = read_key_file(path, false)?;
        Ok(SandboxPublicKey(*raw))
    }

    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        save_key_file(path, &self.0, PUBLIC_FILE_MODE)
    }
}

impl PlatformSigningKey {
    pub fn generate() -> Self {
        PlatformSigningKey(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// From the raw 32-byte seed (as in the key file).
    pub fn from_bytes(seed: [u8; 32]) -> Self {
        // This by-value copy is zeroized when `seed` drops.
        let seed = Zeroizing::new(seed);
        PlatformSigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    pub fn public_key(&self) -> PlatformPublicKey {
        PlatformPublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.0.sign(message).to_bytes()
    }

    /// Loads a private key file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let raw = read_private_key_file(path)?;
        Ok(PlatformSigningKey::from_bytes(*raw))
    }

    /// Writes the key file 0600, atomically (temp file and rename).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let seed = Zeroizing::new(self.0.to_bytes());
        save_key_file(path, &seed[..], PRIVATE_FILE_MODE)
    }
}

impl PlatformPublicKey {
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.as_bytes())
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Refuses bytes that are not a valid Ed25519 point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(PlatformPublicKey)
            .map_err(|_| KeyError::Encoding)
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let raw = decode_key(text.as_bytes()).ok_or(KeyError::Encoding)?;
        PlatformPublicKey::from_bytes(&raw)
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let raw = read_key_file(path, false)?;
        PlatformPublicKey::from_bytes(&raw).map_err(|_| KeyError::Format {
            path: display(path),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        save_key_file(path, self.0.as_bytes(), PUBLIC_FILE_MODE)
    }
}

/// Loads the trusted platform keys: one base64 key per line; blank lines and lines
/// starting with `#` (after leading whitespace) are ignored; surrounding whitespace on a
/// line is ignored. An empty list is an error: it would refuse every bundle.
pub fn load_trusted(path: &Path) -> Result<Vec<PlatformPublicKey>, KeyError> {
    let bytes = read_limited(path, MAX_TRUSTED_FILE_BYTES, false)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::Format {
        path: display(path),
    })?;
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = PlatformPublicKey::from_base64(line).map_err(|_| KeyError::TrustedLine {
            path: display(path),
            line: index + 1,
        })?;
        if keys.len() == MAX_TRUSTED_KEYS {
            return Err(KeyError::TooManyTrustedKeys {
                path: display(path),
                limit: MAX_TRUSTED_KEYS,
            });
        }
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(KeyError::NoTrustedKeys {
            path: display(path),
        });
    }
    Ok(keys)
}

/// Decodes one key line: standard padded base64 of exactly 32 bytes, optionally followed
/// by one `\n` or `\r\n`. The decoded buffer is zeroized on every path.
fn decode_key(text: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let text = text
        .strip_suffix(b"\r\n")
        .or_else(|| text.strip_suffix(b"\n"))
        .unwrap_or(text);
    let decoded = Zeroizing::new(BASE64.decode(text).ok()?);
    let mut raw = Zeroizing::new([0u8; 32]);
    if decoded.len() != raw.len() {
        return None;
    }
    raw.copy_from_slice(&decoded);
    Some(raw)
}

fn read_key_file(path: &Path, private: bool) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let bytes = read_limited(path, MAX_KEY_FILE_BYTES, private)?;
    decode_key(&bytes).ok_or_else(|| KeyError::Format {
        path: display(path),
    })
}

fn read_private_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    read_key_file(path, true)
}

/// Reads a whole small file into a zeroizing buffer. The type and mode checks use the
/// opened descriptor, so a file swapped between check and read is still the one checked.
fn read_limited(path: &Path, limit: u64, private: bool) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let read_err = |source| KeyError::Read {
        path: display(path),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.file_type().is_file() {
        return Err(KeyError::NotRegular {
            path: display(path),
        });
    }
    let mode = meta.mode() & 0o7777;
    if private && mode & PRIVATE_FORBIDDEN_MODE != 0 {
        return Err(KeyError::Permissions {
            path: display(path),
            mode,
        });
    }
    if meta.len() > limit {
        return Err(KeyError::TooLarge {
            path: display(path),
            limit,
        });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    // `take(limit + 1)` guards against a file that grows after the size check.
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > limit {
        return Err(KeyError::TooLarge {
            path: display(path),
            limit,
        });
    }
    Ok(buf)
}

fn save_key_file(path: &Path, raw: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut line = Zeroizing::new(BASE64.encode(raw));
    line.push('\n');
    write_file_atomic(path, line.as_bytes(), mode).map_err(|source| KeyError::Write {
        path: display(path),
        source,
    })
}

/// Writes `contents` to `path` atomically with exactly `mode`: a fresh temp file in the
/// same directory (O_EXCL, O_NOFOLLOW, so nothing pre-planted is written through), fsync,
/// rename over the target (which replaces a symlink rather than following it), fsync the
/// directory. On failure the temp file is removed and the target is untouched.
pub(crate) fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_key_table() {
        let good = BASE64.encode([7u8; 32]);
        let cases: Vec<(String, bool)> = vec![
            (good.clone(), true),
            (format!("{good}\n"), true),
            (format!("{good}\r\n"), true),
            (format!("{good}\n\n"), false),
            (format!(" {good}"), false),
            (good.trim_end_matches('=').to_string(), false),
            (BASE64.encode([7u8; 31]), false),
            (BASE64.encode([7u8; 33]), false),
            (String::new(), false),
            ("not base64!".to_string(), false),
        ];
        for (input, ok) in cases {
            assert_eq!(
                decode_key(input.as_bytes()).is_some(),
                ok,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn round_trips_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SandboxSecretKey::generate();
        let path = dir.path().join("sandbox.key");
        sk.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = SandboxSecretKey::load(&path).unwrap();
        assert_eq!(loaded.public_key(), sk.public_key());

        let pk_path = dir.path().join("sandbox.pub");
        sk.public_key().save(&pk_path).unwrap();
        assert_eq!(SandboxPublicKey::load(&pk_path).unwrap(), sk.public_key());

        let signer = PlatformSigningKey::generate();
        let spath = dir.path().join("platform.key");
        signer.save(&spath).unwrap();
        assert_eq!(
            PlatformSigningKey::load(&spath).unwrap().public_key(),
            signer.public_key()
        );
        let ppath = dir.path().join("platform.pub");
        signer.public_key().save(&ppath).unwrap();
        assert_eq!(
            PlatformPublicKey::load(&ppath).unwrap(),
            signer.public_key()
        );
    }

    #[test]
    fn refuses_group_or_other_readable_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        SandboxSecretKey::generate().save(&path).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match SandboxSecretKey::load(&path) {
                Err(KeyError::Permissions { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o}: {other:?}"),
            }
            assert!(matches!(
                PlatformSigningKey::load(&path),
                Err(KeyError::Permissions { .. })
            ));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(SandboxSecretKey::load(&path).is_ok());
    }

    #[test]
    fn debug_is_redacted() {
        let sk = SandboxSecretKey::from_bytes([0x41; 32]);
        let b64 = BASE64.encode([0x41; 32]);
        assert!(!format!("{sk:?}").contains(&b64));
        assert!(format!("{sk:?}").contains("REDACTED"));
        let pk = PlatformSigningKey::from_bytes([0x42; 32]);
        assert!(format!("{pk:?}").contains("REDACTED"));
        assert!(!format!("{pk:?}").contains(&BASE64.encode([0x42; 32])));
    }

    #[test]
    fn trusted_list() {
        let dir = tempfile::tempdir().unwrap();
        let a = PlatformSigningKey::generate().public_key();
        let b = PlatformSigningKey::generate().public_key();
        let path = dir.path().join("trusted");
        let text = format!(
            "# platform keys\n\n  {}  \n# rotated in 2026\n{}\n{}\n",
            a.to_base64(),
            b.to_base64(),
            a.to_base64()
        );
        std::fs::write(&path, text).unwrap();
        assert_eq!(load_trusted(&path).unwrap(), vec![a, b]);

        std::fs::write(&path, format!("{}\nnope\n", a.to_base64())).unwrap();
        assert!(matches!(
            load_trusted(&path),
            Err(KeyError::TrustedLine { line: 2, .. })
        ));
        std::fs::write(&path, "# nothing\n\n").unwrap();
        assert!(matches!(
            load_trusted(&path),
            Err(KeyError::NoTrustedKeys { .. })
        ));
        let missing = load_trusted(&dir.path().join("missing")).unwrap_err();
        assert!(missing.is_not_found());
    }

    #[test]
    fn atomic_write_replaces_symlink_not_target() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write_file_atomic(&link, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
