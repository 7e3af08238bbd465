//! Materialising credentials for the agent: files under the credentials root
//! (`/tmp/grexal/{connection_id}/...`), env vars, and an env file for other launchers.
//!
//! The daemon runs as root in a world-writable /tmp, so every path is opened relative to
//! a directory fd with `O_NOFOLLOW`, no directory someone else planted is reused, every
//! file is written to a temporary name and renamed into place, and an install either
//! completes or leaves the previous version untouched.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::credentials::CredentialSet;
use crate::manifest::Manifest;
use crate::secret::{SecretBytes, SecretString};

/// The uid/gid that owns everything written for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct Layout {
    /// The credentials root, `/tmp/grexal` by default.
    pub root: PathBuf,
    /// Owner of the root, the connection dirs and files; `None` keeps the daemon's own.
    pub owner: Option<Owner>,
    /// Where to write the env file (systemd EnvironmentFile syntax), if anywhere.
    pub env_file: Option<PathBuf>,
}

/// The result of an install: what the API serves and what the agent's env gets.
#[derive(Debug)]
pub struct Materialized {
    pub version: u64,
    /// Per connection id with a credential: the JSON object `ctx.connect(id)` returns,
    /// serialized once at install time so a request is a copy of these bytes.
    pub bodies: BTreeMap<String, SecretBytes>,
    /// Env vars for `delivery: "env"` fields, in manifest order.
    pub env: Vec<(String, SecretString)>,
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("unsafe credentials root {path}: {problem}")]
    UnsafeRoot { path: String, problem: String },
    #[error("connection {connection}: {problem}")]
    Unsafe { connection: String, problem: String },
    #[error("writing credentials for connection {connection} failed")]
    Io {
        connection: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct Injector {
    pub layout: Layout,
}

impl Injector {
    /// Creates (or validates) the root: a real directory, not a symlink, owned by root or
    /// the owner, mode 0700.
    pub fn new(_layout: Layout) -> Result<Self, InjectError> {
        todo!("inject::Injector::new")
    }

    /// Writes every credential of `creds` as version `version`, replacing the previous
    /// version atomically per connection directory. On error, nothing of the new version is
    /// left behind and the previous version is untouched.
    pub fn install(&self, _manifest: &Manifest, _creds: &CredentialSet, _version: u64) -> Result<Materialized, InjectError> {
        todo!("inject::Injector::install")
    }

    /// Removes every file and directory this injector wrote (on exit).
    pub fn wipe(&self) -> Result<(), InjectError> {
        todo!("inject::Injector::wipe")
    }
}
