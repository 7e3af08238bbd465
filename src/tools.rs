//! The offline tools for platforms, demos and tests: `keygen` and `seal`.
//!
//! Both print what they did on stdout (paths, public keys, a one-line bundle summary) and
//! never a private key or a credential value; errors go to stderr with an `ExitCode`.

use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::bundle::{self, SealRequest, MAX_PLAINTEXT_BYTES};
use crate::cli::{KeyKind, KeygenArgs, SealArgs};
use crate::exit::ExitCode;
use crate::keys::{self, KeyError, PlatformSigningKey, SandboxPublicKey, SandboxSecretKey};

/// Mode of a bundle file we write: it is encrypted, but it still names the sandbox.
const BUNDLE_FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("{path} already exists (use --force to overwrite)")]
    Exists { path: String },
    #[error("cannot create directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot read credential file {path}")]
    ReadCredentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential file {path} is {size} bytes, over the {limit}-byte limit")]
    CredentialsTooLarge {
        path: String,
        size: u64,
        limit: usize,
    },
    /// `detail` is the JSON error's category and position, never its text (which can
    /// quote a value from the document).
    #[error("credential file {path} is not valid: {detail}")]
    CredentialsInvalid { path: String, detail: String },
    /// A `"path"` entry that cannot be embedded; the source names the connection.
    #[error("credential file {path}")]
    CredentialsEntry {
        path: String,
        #[source]
        source: crate::credentials::CredentialsError,
    },
    #[error("{0}")]
    Usage(String),
    #[error("cannot seal the bundle")]
    Seal(#[source] bundle::BundleError),
    #[error("cannot write bundle {path}")]
    WriteBundle {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ToolsError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ToolsError::Exists { .. } | ToolsError::Usage(_) => ExitCode::Usage,
            ToolsError::CreateDir { .. } | ToolsError::WriteBundle { .. } => ExitCode::Io,
            // Not there or cannot be read (as for `run`'s keys); there but wrong is 78.
            ToolsError::Key(KeyError::Read { .. }) => ExitCode::NoInput,
            ToolsError::Key(KeyError::Write { .. }) => ExitCode::Io,
            ToolsError::Key(_) => ExitCode::Config,
            ToolsError::ReadCredentials { .. } => ExitCode::NoInput,
            ToolsError::CredentialsTooLarge { .. }
            | ToolsError::CredentialsInvalid { .. }
            | ToolsError::CredentialsEntry { .. } => ExitCode::Manifest,
            ToolsError::Seal(e) => e.exit_code(),
        }
    }
}

/// `grexal-sidecar keygen`: prints what it wrote; errors on stderr with an exit code.
pub fn keygen(args: &KeygenArgs) -> ExitCode {
    report("keygen", run_keygen(args))
}

/// `grexal-sidecar seal`.
pub fn seal(args: &SealArgs) -> ExitCode {
    report("seal", run_seal(args))
}

fn report(tool: &str, result: Result<(), ToolsError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::Success,
        Err(error) => {
            // The chain holds paths and OS errors only; no error here carries a secret.
            let mut message = format!("grexal-sidecar {tool}: error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            error.exit_code()
        }
    }
}

fn run_keygen(args: &KeygenArgs) -> Result<(), ToolsError> {
    let name = match args.kind {
        KeyKind::Sandbox => "sandbox",
        KeyKind::Platform => "platform",
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.out_dir)
        .map_err(|source| ToolsError::CreateDir {
            path: args.out_dir.display().to_string(),
            source,
        })?;
    let (key_path, pub_path) = key_paths(&args.out_dir, args.kind);
    if !args.force {
        for path in [&key_path, &pub_path] {
            // symlink_metadata: a dangling symlink is "existing" too.
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(ToolsError::Exists {
                    path: path.display().to_string(),
                });
            }
        }
    }
    let public = match args.kind {
        KeyKind::Sandbox => {
            let key = SandboxSecretKey::generate();
            key.save(&key_path)?;
            let public = key.public_key();
            public.save(&pub_path)?;
            public.to_base64()
        }
        KeyKind::Platform => {
            let key = PlatformSigningKey::generate();
            key.save(&key_path)?;
            let public = key.public_key();
            public.save(&pub_path)?;
            public.to_base64()
        }
    };
    println!("wrote {} (private, mode 0600)", key_path.display());
    println!("wrote {}", pub_path.display());
    println!("{name} public key: {public}");
    Ok(())
}

fn run_seal(args: &SealArgs) -> Result<(), ToolsError> {
    if !bundle::valid_sandbox_id(&args.sandbox_id) {
        return Err(ToolsError::Usage(format!(
            "--sandbox-id must be 1..={} characters of [A-Za-z0-9._:-]",
            bundle::MAX_SANDBOX_ID_LEN
        )));
    }
    if args.expires_in == 0 {
        return Err(ToolsError::Usage(
            "--expires-in must be at least 1 second".into(),
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ToolsError::Usage("the system clock is before 1970".into()))?
        .as_secs();
    let expires_at = now
        .checked_add(args.expires_in)
        .ok_or_else(|| ToolsError::Usage("--expires-in is too large".into()))?;

    let plaintext = read_credentials(&args.credentials)?;
    let (plaintext, embedded) = embed_paths(&args.credentials, plaintext)?;
    let recipient = SandboxPublicKey::load(&args.sandbox_pub)?;
    let signer = PlatformSigningKey::load(&args.platform_key)?;
    let sealed = bundle::seal(&SealRequest {
        sandbox_id: &args.sandbox_id,
        version: args.version,
        issued_at: now,
        expires_at,
        recipient: &recipient,
        signer: &signer,
        plaintext: &plaintext,
    })
    .map_err(ToolsError::Seal)?;
    keys::write_file_atomic(&args.out, &sealed, BUNDLE_FILE_MODE).map_err(|source| {
        ToolsError::WriteBundle {
            path: args.out.display().to_string(),
            source,
        }
    })?;
    for file in embedded {
        println!(
            "embedded {} ({} bytes) as connection {}'s content_base64",
            file.path, file.size, file.id
        );
    }
    println!(
        "sealed bundle for sandbox {} version {} expires_at {} ({} s) size {} bytes -> {}",
        args.sandbox_id,
        args.version,
        expires_at,
        args.expires_in,
        sealed.len(),
        args.out.display()
    );
    Ok(())
}

/// Reads the credential document into a zeroizing buffer and checks its shape: UTF-8
/// JSON whose top level is an object with a `connections` object. Entries are not
/// checked (seal has no manifest); their values are skipped, never copied.
fn read_credentials(path: &Path) -> Result<Zeroizing<Vec<u8>>, ToolsError> {
    let display = || path.display().to_string();
    let read_err = |source| ToolsError::ReadCredentials {
        path: display(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(ToolsError::ReadCredentials {
            path: display(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    let limit = MAX_PLAINTEXT_BYTES;
    let too_large = |size| ToolsError::CredentialsTooLarge {
        path: display(),
        size,
        limit,
    };
    if meta.len() > limit as u64 {
        return Err(too_large(meta.len()));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() > limit {
        return Err(too_large(buf.len() as u64));
    }
    check_document(&buf).map_err(|detail| ToolsError::CredentialsInvalid {
        path: display(),
        detail,
    })?;
    Ok(buf)
}

/// A document written for `dev` may give a file entry's content as `"path"` (relative to its
/// directory), which a sandbox refuses: the file is read as `dev` reads it and sealed in its
/// place as `content_base64` (see `credentials::embed_paths`).
fn embed_paths(
    path: &Path,
    plaintext: Zeroizing<Vec<u8>>,
) -> Result<(Zeroizing<Vec<u8>>, Vec<crate::credentials::Embedded>), ToolsError> {
    let base_dir = path.parent().unwrap_or(Path::new(""));
    // The most a file can be and still fit, base64-encoded, in the document.
    let max_file = (MAX_PLAINTEXT_BYTES / 4 * 3) as u64;
    match crate::credentials::embed_paths(&plaintext, base_dir, max_file) {
        Ok(None) => Ok((plaintext, Vec::new())),
        Ok(Some(with)) if with.document.len() > MAX_PLAINTEXT_BYTES => {
            Err(ToolsError::CredentialsInvalid {
                path: path.display().to_string(),
                detail: format!(
                    "with the files of its \"path\" entries it is {} bytes, over the {}-byte limit",
                    with.document.len(),
                    MAX_PLAINTEXT_BYTES
                ),
            })
        }
        Ok(Some(with)) => Ok((with.document, with.files)),
        Err(source) => Err(ToolsError::CredentialsEntry {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The document's shape, with every value skipped (`IgnoredAny`) rather than parsed.
#[derive(serde::Deserialize)]
struct DocumentShape {
    #[allow(dead_code)]
    connections: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

fn check_document(bytes: &[u8]) -> Result<(), String> {
    if std::str::from_utf8(bytes).is_err() {
        return Err("not UTF-8".into());
    }
    match serde_json::from_slice::<DocumentShape>(bytes) {
        Ok(_) => Ok(()),
        Err(e) => {
            let what = match e.classify() {
                serde_json::error::Category::Syntax => "not JSON",
                serde_json::error::Category::Eof => "JSON ends early",
                serde_json::error::Category::Data => {
                    "expected an object with a \"connections\" object"
                }
                serde_json::error::Category::Io => "read error",
            };
            Err(format!("{what} (line {}, column {})", e.line(), e.column()))
        }
    }
}

/// The default key file paths `keygen` writes, for callers that build paths.
pub fn key_paths(out_dir: &Path, kind: KeyKind) -> (PathBuf, PathBuf) {
    let name = match kind {
        KeyKind::Sandbox => "sandbox",
        KeyKind::Platform => "platform",
    };
    (
        out_dir.join(format!("{name}.key")),
        out_dir.join(format!("{name}.pub")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_shape_table() {
        let cases: &[(&[u8], bool)] = &[
            (br#"{"connections":{}}"#, true),
            (
                br#"{"connections":{"a":{"fields":{"k":"v"}}},"extra":1}"#,
                true,
            ),
            (br#"{"connections":[]}"#, false),
            (br#"{"connections":"SECRET-CANARY"}"#, false),
            (br#"{}"#, false),
            (br#"[]"#, false),
            (b"not json", false),
            (br#"{"connections":{"#, false),
            (b"{\"connections\":{\"a\":\"\xff\"}}", false),
        ];
        for (input, ok) in cases {
            let result = check_document(input);
            assert_eq!(result.is_ok(), *ok, "{:?}", String::from_utf8_lossy(input));
            if let Err(detail) = result {
                assert!(!detail.contains("CANARY"), "{detail}");
            }
        }
    }
}
