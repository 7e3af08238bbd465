//! The one validated, immutable configuration, resolved from the command line (flag >
//! env > default) before anything binds or spawns.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{ChromiumSandbox, CommonArgs, DevArgs, DisplayBackend, LogFormat, RunArgs};

/// The longest sandbox id accepted (it is also bound into every bundle).
pub const MAX_SANDBOX_ID_BYTES: usize = 128;

#[derive(Debug, Clone)]
pub struct Config {
    pub manifest: PathBuf,
    pub socket: PathBuf,
    pub credentials_dir: PathBuf,
    pub env_file: PathBuf,
    pub agent_user: Option<String>,
    pub agent_argv: Vec<OsString>,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub stop_timeout: Duration,
    pub api_max_connections: usize,
    pub api_request_timeout: Duration,
    pub force_desktop: bool,
    pub desktop: DesktopSettings,
    pub viewer_idle_timeout: Duration,
    /// `None`: the kernel's autotuning (the flag's 0).
    pub viewer_send_buffer: Option<usize>,
    pub source: CredentialSource,
}

#[derive(Debug, Clone)]
pub struct DesktopSettings {
    pub backend: DisplayBackend,
    pub width: u32,
    pub height: u32,
    pub chromium: PathBuf,
    pub profile: Option<PathBuf>,
    pub chromium_args: Vec<String>,
    pub chromium_sandbox: ChromiumSandbox,
    pub run_dir: PathBuf,
    pub novnc_dir: PathBuf,
}

/// Where credentials come from.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// Production: a sealed bundle, from a file at boot or pushed on the control endpoint.
    Sealed(SealedSource),
    /// Local development: plaintext `.grexal/connections.json`, and the takeover viewer on
    /// loopback for the developer.
    DevFile {
        connections: PathBuf,
        viewer: DevViewerSettings,
    },
}

/// Where `dev` serves a takeover's viewer, and where it says which URL to open.
#[derive(Debug, Clone)]
pub struct DevViewerSettings {
    pub listen: SocketAddr,
    pub url_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SealedSource {
    pub sandbox_id: String,
    pub sandbox_key: Option<PathBuf>,
    pub public_key_out: PathBuf,
    pub platform_keys: Option<PathBuf>,
    pub bundle: Option<PathBuf>,
    pub bundle_timeout: Duration,
    pub control: Option<ControlSettings>,
}

#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    pub public_url: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--sandbox-id must be 1..={MAX_SANDBOX_ID_BYTES} bytes of [A-Za-z0-9._:-]")]
    SandboxId,
    #[error("--control-listen needs --control-token-file")]
    ControlTokenMissing,
    #[error("--viewer-listen must be a loopback address in dev, got {0}")]
    DevViewerNotLoopback(SocketAddr),
    #[error("--screen must be WIDTHxHEIGHT between 320x200 and 7680x4320, got {0:?}")]
    Screen(String),
    #[error("--{flag} must be greater than zero")]
    Zero { flag: &'static str },
    #[error("--viewer-send-buffer must be 0 (autotuned) or {min}..={max} bytes, got {0}", min = MIN_VIEWER_SEND_BUFFER, max = MAX_VIEWER_SEND_BUFFER)]
    ViewerSendBuffer(usize),
    #[error("--public-url must start with http:// or https://, got {0:?}")]
    PublicUrl(String),
    #[error("cannot resolve {path} against the current directory")]
    Path { path: String },
}

/// Bounds of `--viewer-send-buffer` (other than 0). The kernel also caps it at
/// `net.core.wmem_max`.
pub const MIN_VIEWER_SEND_BUFFER: usize = 4096;
pub const MAX_VIEWER_SEND_BUFFER: usize = 16 << 20;

/// Relative paths (`dev`'s defaults under `.grexal/`) are resolved once, against the
/// directory the daemon starts in, so nothing later depends on the current directory.
fn absolute(path: PathBuf) -> Result<PathBuf, ConfigError> {
    std::path::absolute(&path).map_err(|_| ConfigError::Path {
        path: path.display().to_string(),
    })
}

impl Config {
    pub fn from_run(args: RunArgs) -> Result<Self, ConfigError> {
        if !valid_sandbox_id(&args.sandbox_id) {
            return Err(ConfigError::SandboxId);
        }
        let control = match (args.control_listen, args.control_token_file) {
            (None, _) => None,
            (Some(_), None) => return Err(ConfigError::ControlTokenMissing),
            (Some(listen), Some(token_file)) => {
                let public_url = args
                    .public_url
                    .unwrap_or_else(|| format!("http://{listen}"))
                    .trim_end_matches('/')
                    .to_string();
                if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
                    return Err(ConfigError::PublicUrl(public_url));
                }
                Some(ControlSettings {
                    listen,
                    token_file,
                    public_url,
                })
            }
        };
        if args.bundle_timeout == 0 {
            return Err(ConfigError::Zero {
                flag: "bundle-timeout",
            });
        }
        let source = CredentialSource::Sealed(SealedSource {
            sandbox_id: args.sandbox_id,
            sandbox_key: args.sandbox_key,
            public_key_out: args.public_key_out,
            platform_keys: args.platform_key,
            bundle: args.bundle,
            bundle_timeout: Duration::from_secs(args.bundle_timeout),
            control,
        });
        Self::common(
            args.common,
            args.socket,
            args.credentials_dir,
            args.env_file,
            source,
        )
    }

    pub fn from_dev(args: DevArgs) -> Result<Self, ConfigError> {
        if !args.viewer_listen.ip().is_loopback() {
            return Err(ConfigError::DevViewerNotLoopback(args.viewer_listen));
        }
        let source = CredentialSource::DevFile {
            connections: absolute(args.connections)?,
            viewer: DevViewerSettings {
                listen: args.viewer_listen,
                url_file: absolute(args.takeover_url_file)?,
            },
        };
        Self::common(
            args.common,
            args.socket,
            args.credentials_dir,
            args.env_file,
            source,
        )
    }

    fn common(
        common: CommonArgs,
        socket: PathBuf,
        credentials_dir: PathBuf,
        env_file: PathBuf,
        source: CredentialSource,
    ) -> Result<Self, ConfigError> {
        let (width, height) = parse_screen(&common.screen)?;
        for (flag, value) in [
            ("api-max-connections", common.api_max_connections as u64),
            ("api-request-timeout", common.api_request_timeout),
            ("viewer-idle-timeout", common.viewer_idle_timeout),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { flag });
            }
        }
        let send_buffer = common.viewer_send_buffer;
        if send_buffer != 0
            && !(MIN_VIEWER_SEND_BUFFER..=MAX_VIEWER_SEND_BUFFER).contains(&send_buffer)
        {
            return Err(ConfigError::ViewerSendBuffer(send_buffer));
        }
        Ok(Config {
            manifest: absolute(common.manifest)?,
            socket: absolute(socket)?,
            credentials_dir: absolute(credentials_dir)?,
            env_file: absolute(env_file)?,
            agent_user: common.agent_user,
            agent_argv: common.agent,
            log_format: common.log_format,
            log_filter: common.log,
            stop_timeout: Duration::from_secs(common.stop_timeout),
            api_max_connections: common.api_max_connections,
            api_request_timeout: Duration::from_secs(common.api_request_timeout),
            force_desktop: common.desktop,
            desktop: DesktopSettings {
                backend: common.display_backend,
                width,
                height,
                chromium: common.chromium,
                chromium_sandbox: common.chromium_sandbox,
                profile: common.browser_profile.map(absolute).transpose()?,
                run_dir: absolute(common.desktop_run_dir)?,
                novnc_dir: absolute(common.novnc_dir)?,
                chromium_args: common
                    .chromium_args
                    .into_iter()
                    .filter(|a| !a.is_empty())
                    .collect(),
            },
            viewer_idle_timeout: Duration::from_secs(common.viewer_idle_timeout),
            viewer_send_buffer: (send_buffer > 0).then_some(send_buffer),
            source,
        })
    }
}

pub fn valid_sandbox_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SANDBOX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn parse_screen(text: &str) -> Result<(u32, u32), ConfigError> {
    let bad = || ConfigError::Screen(text.to_string());
    let (w, h) = text.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if !(320..=7680).contains(&w) || !(200..=4320).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids() {
        for (id, ok) in [
            ("sbx-1", true),
            ("a:b.c_d-e", true),
            ("", false),
            ("a/b", false),
            ("a b", false),
            ("é", false),
            (&"x".repeat(128), true),
            (&"x".repeat(129), false),
        ] {
            assert_eq!(valid_sandbox_id(id), ok, "{id:?}");
        }
    }

    #[test]
    fn screens() {
        assert_eq!(parse_screen("1280x800"), Ok((1280, 800)));
        for bad in [
            "1280",
            "x800",
            "1280x",
            "10x10",
            "99999x800",
            "axb",
            "1280x800x24",
        ] {
            assert!(parse_screen(bad).is_err(), "{bad}");
        }
    }

    fn dev_config(extra: &[&str]) -> Result<Config, ConfigError> {
        use clap::Parser;
        let argv = ["grexal-sidecar", "dev"].iter().chain(extra).copied();
        match crate::cli::Cli::try_parse_from(argv)
            .expect("parses")
            .command
        {
            crate::cli::Command::Dev(args) => Config::from_dev(args),
            _ => unreachable!(),
        }
    }

    #[test]
    fn viewer_send_buffer_bounds() {
        let buffer =
            |v: &str| dev_config(&["--viewer-send-buffer", v]).map(|c| c.viewer_send_buffer);
        assert_eq!(
            dev_config(&[]).unwrap().viewer_send_buffer,
            Some(128 * 1024)
        );
        assert_eq!(buffer("0").unwrap(), None);
        assert_eq!(buffer("4096").unwrap(), Some(4096));
        assert_eq!(buffer("16777216").unwrap(), Some(16 << 20));
        for bad in ["1", "4095", "16777217"] {
            let err = buffer(bad).unwrap_err();
            assert!(
                matches!(err, ConfigError::ViewerSendBuffer(_)),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("--viewer-send-buffer"), "{err}");
        }
    }

    #[test]
    fn dev_viewer_is_loopback_only() {
        let viewer = |extra: &[&str]| match dev_config(extra).map(|c| c.source) {
            Ok(CredentialSource::DevFile { viewer, .. }) => Ok(viewer),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let default = viewer(&[]).expect("default");
        assert_eq!(default.listen, "127.0.0.1:0".parse().unwrap());
        assert!(default.url_file.is_absolute());
        assert!(default.url_file.ends_with(".grexal/takeover-url"));
        assert!(viewer(&["--viewer-listen", "[::1]:8100"]).is_ok());
        for outside in ["0.0.0.0:8100", "192.0.2.1:8100", "[::]:8100"] {
            let err = viewer(&["--viewer-listen", outside]).unwrap_err();
            assert_eq!(
                err,
                ConfigError::DevViewerNotLoopback(outside.parse().unwrap())
            );
            assert!(err.to_string().contains("loopback"), "{err}");
        }
    }
}
