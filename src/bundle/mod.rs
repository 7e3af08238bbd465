//! The sealed credential bundle (docs/bundle-format.md is the specification).
//!
//! HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
//! ChaCha20-Poly1305, to the sandbox's key; the header (sandbox id, version, expiry,
//! recipient and signer keys) is the HPKE `info`, and the platform signs header and
//! ciphertext with Ed25519, so the sandbox checks origin before it decrypts anything.

use crate::exit::ExitCode;
use crate::secret::SecretBytes;

pub mod format;
pub mod suite;

pub use format::{valid_sandbox_id, Header, MAX_SANDBOX_ID_LEN};

/// The largest bundle accepted, from a file or the control endpoint.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;

/// The largest plaintext that fits a bundle with the longest sandbox id.
pub const MAX_PLAINTEXT_BYTES: usize =
    MAX_BUNDLE_BYTES - format::FIXED_OVERHEAD - MAX_SANDBOX_ID_LEN - format::TAG_LEN;

/// How far in the future `issued_at` may lie (clock skew between platform and sandbox)
/// before a bundle is refused.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

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
    pub fn open(
        &self,
        bytes: &[u8],
        now_unix: u64,
        installed: Option<u64>,
    ) -> Result<OpenedBundle, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::Oversized {
                size: bytes.len(),
                limit: MAX_BUNDLE_BYTES,
            });
        }
        let parsed = format::parse(bytes)?;
        let header = &parsed.header;

        // Origin before anything else: an all-zero signature is "unsigned", and only a
        // key on the trusted list may have signed.
        if parsed.signature.iter().all(|&b| b == 0) {
            return Err(BundleError::Untrusted);
        }
        let signer = self
            .trusted
            .iter()
            .find(|k| k.to_bytes() == header.signer)
            .ok_or(BundleError::Untrusted)?;
        let signature = ed25519_dalek::Signature::from_bytes(parsed.signature);
        // verify_strict: no small-order keys, no non-canonical signatures (malleability).
        signer
            .0
            .verify_strict(parsed.signed, &signature)
            .map_err(|_| BundleError::Tampered)?;

        // From here on the header is the platform's word.
        if header.sandbox_id != self.sandbox_id {
            return Err(BundleError::WrongSandbox {
                expected: self.sandbox_id.clone(),
                found: header.sandbox_id.clone(),
            });
        }
        if header.recipient != self.sandbox_key.public_key().0 {
            return Err(BundleError::WrongKey);
        }
        if now_unix > header.expires_at {
            return Err(BundleError::Expired {
                expires_at: header.expires_at,
                now: now_unix,
            });
        }
        if header.issued_at > now_unix.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(BundleError::Malformed(format!(
                "issued_at {} is more than {MAX_CLOCK_SKEW_SECS} s after now ({now_unix}): check the clocks",
                header.issued_at
            )));
        }
        if let Some(installed) = installed {
            if header.version <= installed {
                return Err(BundleError::Replayed {
                    version: header.version,
                    installed,
                });
            }
        }

        let plaintext = suite::open(
            &self.sandbox_key,
            parsed.enc,
            &suite::info(parsed.header_bytes),
            parsed.ciphertext,
        )
        // A signed bundle that does not decrypt was sealed wrongly or altered before
        // signing; either way it is not what it claims.
        .map_err(|_| BundleError::Tampered)?;
        Ok(OpenedBundle {
            sandbox_id: header.sandbox_id.clone(),
            version: header.version,
            issued_at: header.issued_at,
            expires_at: header.expires_at,
            plaintext,
        })
    }
}

/// Reads the header of a bundle WITHOUT verifying anything: for logs and diagnostics
/// only (e.g. "refused bundle version N"); never act on it.
pub fn peek_header(bytes: &[u8]) -> Result<Header, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::Oversized {
            size: bytes.len(),
            limit: MAX_BUNDLE_BYTES,
        });
    }
    format::parse(bytes).map(|p| p.header)
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

/// Seals and signs. Refuses what `open` would refuse structurally: a bad sandbox id,
/// `issued_at > expires_at`, a result over `MAX_BUNDLE_BYTES`.
pub fn seal(req: &SealRequest<'_>) -> Result<Vec<u8>, BundleError> {
    if !valid_sandbox_id(req.sandbox_id) {
        return Err(BundleError::Malformed(format!(
            "sandbox id must be 1..={MAX_SANDBOX_ID_LEN} bytes of [A-Za-z0-9._:-]"
        )));
    }
    if req.issued_at > req.expires_at {
        return Err(BundleError::Malformed(
            "issued_at is after expires_at".into(),
        ));
    }
    let size =
        format::FIXED_OVERHEAD + req.sandbox_id.len() + req.plaintext.len() + format::TAG_LEN;
    if size > MAX_BUNDLE_BYTES {
        return Err(BundleError::Oversized {
            size,
            limit: MAX_BUNDLE_BYTES,
        });
    }
    let header = format::encode_header(&Header {
        sandbox_id: req.sandbox_id.to_owned(),
        version: req.version,
        issued_at: req.issued_at,
        expires_at: req.expires_at,
        recipient: req.recipient.0,
        signer: req.signer.public_key().to_bytes(),
    });
    let (enc, ciphertext) = suite::seal(
        req.recipient,
        &suite::info(&header),
        req.plaintext,
        &mut suite::OsRng,
    )?;
    let mut out = format::encode_body(header, &enc, &ciphertext)?;
    let signature = req.signer.sign(&out);
    out.extend_from_slice(&signature);
    debug_assert_eq!(out.len(), size);
    Ok(out)
}

#[cfg(test)]
mod tests;
