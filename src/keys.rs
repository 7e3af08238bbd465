//! Key files: the sandbox's X25519 key pair (the bundle is sealed to it) and the
//! platform's Ed25519 key pair (the bundle is signed with it; the image trusts its public
//! half). Files hold one line of standard base64 of the 32 raw key bytes; private key
//! files are written 0600 and never logged.

use std::path::Path;

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
}

impl SandboxSecretKey {
    pub fn generate() -> Self {
        todo!()
    }
    pub fn public_key(&self) -> SandboxPublicKey {
        todo!()
    }
    pub fn load(_path: &Path) -> Result<Self, KeyError> {
        todo!()
    }
    pub fn save(&self, _path: &Path) -> Result<(), KeyError> {
        todo!()
    }
}
