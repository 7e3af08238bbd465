//! The plaintext credential document: what a bundle decrypts to, and what
//! `.grexal/connections.json` holds in local development (the same shapes).
//!
//! ```json
//! {"connections": {
//!   "openai":  {"fields": {"api_key": "sk-..."}},
//!   "google":  {"access_token": "ya29...", "token_type": "Bearer", "expires_at": 1790000000, "scope": "email"},
//!   "ssh_key": {"filename": "id_ed25519", "mime_type": "text/plain", "content_base64": "..."}
//! }}
//! ```
//! The manifest decides each entry's mode; an entry is validated against it.

use std::collections::BTreeMap;

use crate::manifest::Manifest;
use crate::secret::{SecretBytes, SecretString};

/// Credentials for some of the manifest's connections, validated against it.
#[derive(Debug, Default)]
pub struct CredentialSet {
    pub connections: BTreeMap<String, Credential>,
}

#[derive(Debug)]
pub enum Credential {
    Secret { fields: BTreeMap<String, SecretString> },
    OAuth(OAuthToken),
    File(UploadedFile),
}

#[derive(Debug)]
pub struct OAuthToken {
    pub access_token: SecretString,
    pub token_type: String,
    /// Unix seconds.
    pub expires_at: Option<u64>,
    pub scope: Option<String>,
}

#[derive(Debug)]
pub struct UploadedFile {
    /// The original filename, validated as a safe single path component.
    pub filename: String,
    pub mime_type: String,
    pub content: SecretBytes,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("credential document is not valid JSON: {detail}")]
    Syntax { detail: String },
    /// `location` names the connection and field, never a value.
    #[error("{location}: {problem}")]
    Invalid { location: String, problem: String },
}

/// Where the document comes from; `dev` resolves `"path"` entries relative to a base dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    Bundle,
    DevFile { base_dir: &'a std::path::Path },
}

impl CredentialSet {
    pub fn parse(_json: &[u8], _manifest: &Manifest, _source: Source<'_>) -> Result<Self, CredentialsError> {
        todo!("credentials::parse")
    }

    /// Pre-collected connections of the manifest with no credential here.
    pub fn missing<'m>(&self, manifest: &'m Manifest) -> Vec<&'m crate::manifest::Connection> {
        manifest
            .connections
            .iter()
            .filter(|c| c.mode.is_pre_collected() && !self.connections.contains_key(&c.id))
            .collect()
    }
}
