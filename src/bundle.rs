//! The sealed credential bundle (docs/bundle-format.md is the specification).
//!
//! HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
//! ChaCha20-Poly1305, to the sandbox's key; the header (sandbox id, version, expiry,
//! recipient and signer keys) is the HPKE `info`, and the platform signs header and
//! ciphertext with Ed25519, so the sandbox checks origin before it decrypts anything.

use crate::exit::ExitCode;
use crate::secret::SecretBytes;

/// The largest bundle accepted, from a file or the control endpoint.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;

/// A bundle that verified and decrypted.
#[derive(Debug)]
pub struct OpenedBundle {
    pub sandbox_id: String,
    pub version: u64,
    pub issued_at: u64,
    pub expires_at: u64,
    /// The credential document (see `credentials`).
    pub plaintext: SecretBytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("bundle is malformed: {0}")]
    Malformed(String),
    #[error("bundle was altered after signing, or does not decrypt")]
    Tampered,
    #[error("bundle is not signed by a trusted platform key")]
    Untrusted,
    #[error("bundle expired at {expires_at} (now {now})")]
    Expired { expires_at: u64, now: u64 },
    #[error("bundle was sealed for sandbox {found:?}, this is sandbox {expected:?}")]
    WrongSandbox { expected: String, found: String },
    #[error("bundle was sealed to another sandbox key")]
    WrongKey,
    #[error("bundle version {version} is not newer than installed version {installed}")]
    Replayed { version: u64, installed: u64 },
    #[error("bundle is {size} bytes, over the {limit}-byte limit")]
    Oversized { size: usize, limit: usize },
    #[error("bundle format is not supported: {0}")]
    Unsupported(String),
}

impl BundleError {
    /// The stable wire code (control endpoint errors) for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::Malformed(_) => "bundle_malformed",
            BundleError::Tampered => "bundle_tampered",
            BundleError::Untrusted => "bundle_untrusted",
            BundleError::Expired { .. } => "bundle_expired",
            BundleError::WrongSandbox { .. } => "bundle_wrong_sandbox",
            BundleError::WrongKey => "bundle_wrong_key",
            BundleError::Replayed { .. } => "bundle_replayed",
            BundleError::Oversized { .. } => "bundle_oversized",
            BundleError::Unsupported(_) => "bundle_unsupported",
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            BundleError::Malformed(_) => ExitCode::BundleMalformed,
            BundleError::Tampered => ExitCode::BundleTampered,
            BundleError::Untrusted => ExitCode::BundleUntrusted,
            BundleError::Expired { .. } => ExitCode::BundleExpired,
            BundleError::WrongSandbox { .. } => ExitCode::BundleWrongSandbox,
            BundleError::WrongKey => ExitCode::BundleWrongKey,
            BundleError::Replayed { .. } => ExitCode::BundleReplayed,
            BundleError::Oversized { .. } => ExitCode::BundleOversized,
            BundleError::Unsupported(_) => ExitCode::BundleUnsupported,
        }
    }
}

/// Opens bundles for one sandbox.
pub struct Opener {
    pub sandbox_id: String,
    pub sandbox_key: crate::keys::SandboxSecretKey,
    pub trusted: Vec<crate::keys::PlatformPublicKey>,
}

impl Opener {
    /// Verifies and decrypts. `installed` is the version currently installed, if any: a
    /// bundle whose version is not higher is `Replayed`. Checks run cheapest and most
    /// specific first: size, format, signer trust, signature, sandbox id, recipient key,
    /// expiry, version, then decryption.
    pub fn open(&self, _bytes: &[u8], _now_unix: u64, _installed: Option<u64>) -> Result<OpenedBundle, BundleError> {
        todo!("bundle::Opener::open")
    }
}

/// What `seal` needs.
pub struct SealRequest<'a> {
    pub sandbox_id: &'a str,
    pub version: u64,
    pub issued_at: u64,
    pub expires_at: u64,
    pub recipient: &'a crate::keys::SandboxPublicKey,
    pub signer: &'a crate::keys::PlatformSigningKey,
    pub plaintext: &'a [u8],
}

pub fn seal(_req: &SealRequest<'_>) -> Result<Vec<u8>, BundleError> {
    todo!("bundle::seal")
}
