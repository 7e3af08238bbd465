//! The control endpoint's bearer token: read from a file only its owner may access, and
//! compared by its SHA-256 in constant time.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ControlError;
use crate::secret::{secret_bytes, ExposeSecret, SecretBytes};

/// Shortest accepted bearer token.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Largest accepted token file.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The bearer token. `Debug` is redacted; only its SHA-256 is compared, in constant time,
/// so neither its bytes nor its length leak through timing.
pub struct BearerToken {
    digest: [u8; 32],
    // Kept (zeroized on drop) only so nothing else holds the plaintext.
    _token: SecretBytes,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken([REDACTED])")
    }
}

impl BearerToken {
    /// Reads the token from a file that only its owner may access. Surrounding whitespace
    /// (a trailing newline) is not part of the token.
    pub fn load(path: &Path) -> Result<Self, ControlError> {
        let shown = || path.display().to_string();
        let read = |source| ControlError::TokenRead {
            path: shown(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.mode() & 0o077 != 0 {
            return Err(ControlError::TokenPermissions {
                path: shown(),
                mode: meta.mode() & 0o7777,
            });
        }
        let format = || ControlError::TokenFormat {
            path: shown(),
            min: MIN_TOKEN_BYTES,
            max: MAX_TOKEN_FILE_BYTES,
        };
        if meta.len() > MAX_TOKEN_FILE_BYTES {
            return Err(format());
        }
        let raw = secret_bytes(std::fs::read(path).map_err(read)?);
        Self::from_bytes(raw.expose_secret()).ok_or_else(format)
    }

    /// `None` if the token (trimmed) is shorter than `MIN_TOKEN_BYTES` or contains
    /// whitespace inside.
    pub fn from_bytes(raw: &[u8]) -> Option<Self> {
        let token = raw.trim_ascii();
        if token.len() < MIN_TOKEN_BYTES || token.iter().any(|b| !b.is_ascii_graphic()) {
            return None;
        }
        Some(Self {
            digest: Sha256::digest(token).into(),
            _token: secret_bytes(token.to_vec()),
        })
    }

    /// Checks an `Authorization` header value (`Bearer <token>`).
    pub fn verify(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(given) = bearer_credentials(value) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(given.trim_ascii()).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// What follows the `Bearer` scheme in an `Authorization` value, surrounding whitespace
/// trimmed; `None` for another scheme. The scheme is case-insensitive (RFC 9110 §11.1:
/// `bearer`, `BEARER` and `Bearer` are one scheme), and one space ends it.
pub fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"Bearer";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    let credentials = rest.strip_prefix(b" ")?;
    scheme
        .eq_ignore_ascii_case(SCHEME)
        .then(|| credentials.trim_ascii())
}
