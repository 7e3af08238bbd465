//! The agent's `grexal.json`: its connections and runtime, validated.
//!
//! Keys we do not use are ignored (the manifest carries many that are not ours); what we
//! do use is validated strictly, and every error names the connection and the field.

use std::path::Path;

/// The manifest size limit; a `grexal.json` is a few KiB in practice.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// The platform's maximum for `file_upload.max_size_bytes`.
pub const MAX_UPLOAD_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub connections: Vec<Connection>,
    /// `runtime.sandbox_template`, e.g. `"desktop"`.
    pub sandbox_template: Option<String>,
}

/// A declared connection. `id` is validated as a safe single path component
/// (`[A-Za-z0-9_-]`, 1..=64 bytes, not starting with `-`), so it can name a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: String,
    pub display_name: String,
    pub mode: AuthMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    SecretInput {
        fields: Vec<SecretField>,
        delivery: Delivery,
    },
    OauthRedirect {
        provider: OauthProvider,
    },
    FileUpload {
        accepted_extensions: Vec<String>,
        max_size_bytes: u64,
        description: Option<String>,
    },
    BrowserLogin {
        login_url: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretField {
    pub name: String,
    pub label: String,
    pub secret: bool,
    /// The env var name under `delivery: "env"`: the field's `env_var` key, or the default
    /// upper-snake `{CONNECTION_ID}_{FIELD_NAME}`. Always resolved, whatever the delivery.
    pub env_var: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    #[default]
    RuntimeObject,
    Env,
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthProvider {
    pub auth_url: String,
    pub token_url: String,
    pub scopes: Vec<String>,
}

impl AuthMode {
    /// The wire name: `secret_input`, `oauth_redirect`, `file_upload`, `browser_login`.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMode::SecretInput { .. } => "secret_input",
            AuthMode::OauthRedirect { .. } => "oauth_redirect",
            AuthMode::FileUpload { .. } => "file_upload",
            AuthMode::BrowserLogin { .. } => "browser_login",
        }
    }

    /// True for the modes whose credential is collected before the sandbox starts.
    pub fn is_pre_collected(&self) -> bool {
        !matches!(self, AuthMode::BrowserLogin { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("manifest is not valid JSON: {detail}")]
    Syntax { detail: String },
    /// A declaration is invalid; `location` names the connection and field, e.g.
    /// `connections[2] (id "github").fields[0].name`.
    #[error("{location}: {problem}")]
    Invalid { location: String, problem: String },
}

impl Manifest {
    pub fn from_path(_path: &Path) -> Result<Self, ManifestError> {
        todo!("manifest::from_path")
    }

    pub fn parse(_bytes: &[u8]) -> Result<Self, ManifestError> {
        todo!("manifest::parse")
    }

    pub fn connection(&self, id: &str) -> Option<&Connection> {
        self.connections.iter().find(|c| c.id == id)
    }

    pub fn is_desktop(&self) -> bool {
        self.sandbox_template.as_deref() == Some("desktop")
    }
}
