//! What boot reads from files the configuration names: the keys, the bundle file, `dev`'s
//! connections file. Each failure is a `BootError` with its exit code: a file that is not
//! there or cannot be read is missing input (66); one that is there but wrong is the code
//! of what is wrong in it.

use std::path::Path;

use tracing::{info, warn};

use super::{blocking, store_error, BootError};
use crate::config::SealedSource;
use crate::exit::ExitCode;

/// The sandbox key (loaded, or generated with its public half published) and, when the
/// image trusts a platform key, the bundle opener.
pub(super) fn open_keys(
    sealed: &SealedSource,
    needs_credentials: bool,
) -> Result<(Option<crate::bundle::Opener>, crate::keys::SandboxPublicKey), BootError> {
    use crate::keys::{load_trusted, SandboxSecretKey};
    let trusted = match &sealed.platform_keys {
        Some(path) => Some(load_trusted(path).map_err(|e| key_error("--platform-key", &e))?),
        None if needs_credentials => {
            return Err(BootError::new(
                ExitCode::Usage,
                "--platform-key is required: the manifest declares pre-collected connections",
            ))
        }
        None => None,
    };
    let sandbox_key = match &sealed.sandbox_key {
        Some(path) => SandboxSecretKey::load(path).map_err(|e| key_error("--sandbox-key", &e))?,
        None => {
            let key = SandboxSecretKey::generate();
            write_public_key(&sealed.public_key_out, &key.public_key().to_base64())?;
            info!(path = %sealed.public_key_out.display(), "generated the sandbox key pair; public key written");
            key
        }
    };
    let public_key = sandbox_key.public_key();
    let opener = trusted.map(|trusted| crate::bundle::Opener {
        sandbox_id: sealed.sandbox_id.clone(),
        sandbox_key,
        trusted,
    });
    Ok((opener, public_key))
}

/// A key file that is not there or cannot be read is missing input (66), as for `seal`;
/// one that is there but malformed, or readable by others, is a bad configuration (78).
fn key_error(flag: &str, e: &crate::keys::KeyError) -> BootError {
    let code = match e {
        crate::keys::KeyError::Read { .. } => ExitCode::NoInput,
        _ => ExitCode::Config,
    };
    BootError::from_error(code, flag, e)
}

/// Publishes the generated public key (0644) through a fresh temporary file renamed into
/// place (`keys::write_file_atomic`): nothing planted at a temporary or the final name is
/// written through.
fn write_public_key(path: &Path, base64: &str) -> Result<(), BootError> {
    let fail = |e: std::io::Error| {
        BootError::from_error(ExitCode::Io, &format!("public key {}", path.display()), &e)
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    crate::keys::write_file_atomic(path, format!("{base64}\n").as_bytes(), 0o644).map_err(fail)
}

pub(super) fn read_bundle(path: &Path) -> Result<Vec<u8>, BootError> {
    use std::io::Read;
    let limit = crate::bundle::MAX_BUNDLE_BYTES;
    let file = std::fs::File::open(path).map_err(|e| {
        BootError::from_error(ExitCode::NoInput, &format!("bundle {}", path.display()), &e)
    })?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            BootError::from_error(ExitCode::NoInput, &format!("bundle {}", path.display()), &e)
        })?;
    if bytes.len() > limit {
        let e = crate::bundle::BundleError::Oversized {
            size: bytes.len(),
            limit,
        };
        return Err(BootError::from_error(e.exit_code(), "bundle refused", &e));
    }
    Ok(bytes)
}

pub(super) async fn install_dev_file(
    store: &crate::store::Store,
    path: &Path,
) -> Result<(), BootError> {
    use crate::credentials::{
        missing_hint, read_document_and_mode, CredentialSet, ReadError, Source,
    };
    let manifest = store.manifest().clone();
    let needs = manifest
        .connections
        .iter()
        .any(|c| c.mode.is_pre_collected());
    // Zeroized when dropped: the file is plaintext credentials.
    let file = path.to_path_buf();
    let (bytes, mode) = match blocking(move || read_document_and_mode(&file)).await {
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && !needs => {
            return Ok(())
        }
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut msg = format!("{}: {e}", path.display());
            for c in manifest
                .connections
                .iter()
                .filter(|c| c.mode.is_pre_collected())
            {
                msg.push_str(&format!("\n  {}", missing_hint(c)));
            }
            return Err(BootError::new(ExitCode::NoInput, msg));
        }
        Err(e @ ReadError::TooLarge { .. }) => {
            return Err(BootError::from_error(
                ExitCode::Manifest,
                &path.display().to_string(),
                &e,
            ))
        }
        Err(e) => {
            return Err(BootError::from_error(
                ExitCode::NoInput,
                &path.display().to_string(),
                &e,
            ))
        }
        Ok(read) => read,
    };
    // A warning, not a refusal: it is the developer's own file on their own machine, and
    // the usual umask (022) makes every new file 0644; a refusal would stop nearly every
    // first run. The mode and the path are logged, never anything in the file.
    if mode & 0o066 != 0 {
        warn!(
            path = %path.display(),
            mode = format_args!("{mode:04o}"),
            "dev: the connections file is readable or writable by group or others, and it holds \
             plaintext credentials: chmod 600 it"
        );
    }
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let creds = CredentialSet::parse(&bytes, &manifest, Source::DevFile { base_dir })
        .map_err(|e| BootError::from_error(ExitCode::Manifest, &path.display().to_string(), &e))?;
    let missing = creds.missing(&manifest);
    if !missing.is_empty() {
        let mut msg = format!(
            "{} lacks {} connection(s) the manifest declares:",
            path.display(),
            missing.len()
        );
        for c in missing {
            msg.push_str(&format!("\n  {}", missing_hint(c)));
        }
        return Err(BootError::new(ExitCode::Manifest, msg));
    }
    store
        .install_plaintext(&creds, 1)
        .await
        .map_err(|e| store_error(&e, true))?;
    info!(path = %path.display(), "credentials installed from the dev connections file");
    Ok(())
}
