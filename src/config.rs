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
    /// `dev`'s default socket would not fit a socket address: `socket` is in a per-user
    /// directory instead, created and checked (like the desktop's) before the bind.
    pub socket_in_dev_dir: bool,
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
    /// `dev`'s per-user default run dir: created 0700 and checked to be ours before the
    /// desktop starts (in /tmp anyone could have made it first).
    pub run_dir_is_dev_default: bool,
    pub novnc_dir: PathBuf,
    pub hang_timeout: Duration,
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
    /// `--public-url`, without a trailing slash. `None`: the daemon uses the address it
    /// bound (`--control-listen` may give port 0).
    pub public_url: Option<String>,
    /// `--control-max-connections`, the platform's reserve included.
    pub max_connections: usize,
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
    #[error("--{flag} must be {min}..={max} {unit}, got {value}", flag = .range.flag, min = .range.min, max = .range.max, unit = .range.unit)]
    OutOfRange { range: FlagRange, value: u64 },
    #[error("--viewer-send-buffer must be 0 (autotuned) or {min}..={max} bytes, got {0}", min = MIN_VIEWER_SEND_BUFFER, max = MAX_VIEWER_SEND_BUFFER)]
    ViewerSendBuffer(usize),
    #[error("--public-url must start with http:// or https://, got {0:?}")]
    PublicUrl(String),
    /// Not echoed: a query may carry a secret of the edge's.
    #[error(
        "--public-url must not have a query ('?') or a fragment ('#'): viewer URLs are made by \
         appending /takeover/{{id}} to it"
    )]
    PublicUrlQuery,
    #[error("cannot resolve {path} against the current directory")]
    Path { path: String },
}

/// The range a numeric flag must be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagRange {
    pub flag: &'static str,
    pub min: u64,
    pub max: u64,
    pub unit: &'static str,
}

impl FlagRange {
    fn check(self, value: u64) -> Result<u64, ConfigError> {
        match (self.min..=self.max).contains(&value) {
            true => Ok(value),
            false => Err(ConfigError::OutOfRange { range: self, value }),
        }
    }

    fn seconds(self, value: u64) -> Result<Duration, ConfigError> {
        self.check(value).map(Duration::from_secs)
    }
}

// Every duration flag has a maximum: each is added to the clock somewhere (hyper adds
// --api-request-timeout unchecked: past the clock's end every connection's task panicked,
// and a huge --stop-timeout panicked the daemon at the first SIGTERM). The maxima are
// far past any sane setting and say so in the README.

/// `--stop-timeout`: 0 (SIGKILL at once) to a day, a sandbox's longest run.
pub const STOP_TIMEOUT: FlagRange = FlagRange {
    flag: "stop-timeout",
    min: 0,
    max: 86_400,
    unit: "seconds",
};
/// `--api-request-timeout`: at most an hour (it is also the keep-alive idle timeout).
pub const API_REQUEST_TIMEOUT: FlagRange = FlagRange {
    flag: "api-request-timeout",
    min: 1,
    max: 3_600,
    unit: "seconds",
};
/// `--viewer-idle-timeout`: at most an hour, a takeover's longest life.
pub const VIEWER_IDLE_TIMEOUT: FlagRange = FlagRange {
    flag: "viewer-idle-timeout",
    min: 1,
    max: 3_600,
    unit: "seconds",
};
/// `--bundle-timeout`: at most a day, a sandbox's longest run.
pub const BUNDLE_TIMEOUT: FlagRange = FlagRange {
    flag: "bundle-timeout",
    min: 1,
    max: 86_400,
    unit: "seconds",
};
/// `--desktop-hang-timeout`: at least 5 s, so that a child on a loaded machine fails
/// several probes before it is killed (a false positive restarts the user's browser); at
/// most an hour.
pub const DESKTOP_HANG_TIMEOUT: FlagRange = FlagRange {
    flag: "desktop-hang-timeout",
    min: 5,
    max: 3_600,
    unit: "seconds",
};
/// Every duration flag of `run` and `dev`.
pub const DURATION_FLAGS: [FlagRange; 5] = [
    STOP_TIMEOUT,
    API_REQUEST_TIMEOUT,
    VIEWER_IDLE_TIMEOUT,
    BUNDLE_TIMEOUT,
    DESKTOP_HANG_TIMEOUT,
];
/// `--api-max-connections`: each connection holds an fd, and far fewer than this fit under
/// the daemon's fd limit; past about 2^61 the connection semaphore panicked, leaving the
/// API dead.
pub const API_MAX_CONNECTIONS: FlagRange = FlagRange {
    flag: "api-max-connections",
    min: 1,
    max: 65_536,
    unit: "connections",
};
/// `--control-max-connections`: at least the platform's reserve and as many again for
/// everyone else (the viewer); at most what `--api-max-connections` takes, for the same
/// reasons (an fd each; the semaphore's own limit).
pub const CONTROL_MAX_CONNECTIONS: FlagRange = FlagRange {
    flag: "control-max-connections",
    min: 2 * crate::platform::control::PLATFORM_RESERVE as u64,
    max: 65_536,
    unit: "connections",
};

/// Bounds of `--viewer-send-buffer` (other than 0). The kernel also caps it at
/// `net.core.wmem_max`.
pub const MIN_VIEWER_SEND_BUFFER: usize = 4096;
pub const MAX_VIEWER_SEND_BUFFER: usize = 16 << 20;

/// `run`'s desktop run dir unless `--desktop-run-dir` says otherwise.
pub const DEFAULT_DESKTOP_RUN_DIR: &str = "/run/grexal/desktop";
/// The longest path of a Unix socket: `sun_path` is 108 bytes, NUL included.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;
/// `dev`'s default agent socket, and its name in the fallback directory.
const DEV_SOCKET: &str = ".grexal/sidecar.sock";
const SOCKET_NAME: &str = "sidecar.sock";

/// Under `dev`, the desktop's default run dir: the developer's own (`/run/grexal` is
/// root's), outside the project so its sockets' paths fit a socket address whatever the
/// project's path, and one per project (a hash of its `.grexal` path) so two projects'
/// desktops do not meet: `$XDG_RUNTIME_DIR/grexal-desktop-HASH` when that is set, absolute
/// and short enough, else `/tmp/grexal-desktop-UID-HASH`.
pub fn dev_desktop_run_dir(
    xdg_runtime_dir: Option<&std::ffi::OsStr>,
    uid: u32,
    grexal: &std::path::Path,
) -> PathBuf {
    dev_user_dir(
        "desktop",
        crate::desktop::MAX_RUN_DIR_BYTES,
        xdg_runtime_dir,
        uid,
        grexal,
    )
}

/// Under `dev`, the agent socket: `.grexal/sidecar.sock` in the project (`default`, made
/// absolute), unless that path is too long for a socket address (a project more than ~85
/// bytes deep); then `sidecar.sock` in a directory of the user's named like the desktop's,
/// `$XDG_RUNTIME_DIR/grexal-sidecar-HASH` or `/tmp/grexal-sidecar-UID-HASH`. With an
/// agent user the runtime dir is passed over: it is the daemon user's own, 0700, and the
/// agent could not reach the socket in it. Returns the path and whether it is the fallback.
pub fn dev_socket(
    default: PathBuf,
    xdg_runtime_dir: Option<&std::ffi::OsStr>,
    uid: u32,
    grexal: &std::path::Path,
) -> (PathBuf, bool) {
    if default.as_os_str().len() <= MAX_SOCKET_PATH_BYTES {
        return (default, false);
    }
    let max_dir = MAX_SOCKET_PATH_BYTES - SOCKET_NAME.len() - 1;
    let dir = dev_user_dir("sidecar", max_dir, xdg_runtime_dir, uid, grexal);
    (dir.join(SOCKET_NAME), true)
}

/// `$XDG_RUNTIME_DIR/grexal-{kind}-HASH` when that is set, absolute and leaves the result
/// at most `max_len` bytes, else `/tmp/grexal-{kind}-UID-HASH` (HASH: of the project's
/// `.grexal` path, so each project has its own).
fn dev_user_dir(
    kind: &str,
    max_len: usize,
    xdg_runtime_dir: Option<&std::ffi::OsStr>,
    uid: u32,
    grexal: &std::path::Path,
) -> PathBuf {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(grexal.as_os_str().as_bytes());
    let hash = hex::encode(&digest[..8]);
    if let Some(xdg) = xdg_runtime_dir
        .map(std::path::Path::new)
        .filter(|p| p.is_absolute())
    {
        let dir = xdg.join(format!("grexal-{kind}-{hash}"));
        if dir.as_os_str().len() <= max_len {
            return dir;
        }
    }
    PathBuf::from(format!("/tmp/grexal-{kind}-{uid}-{hash}"))
}

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
        // Checked with or without the endpoint, like --bundle-timeout: clap refuses the flag
        // without --control-listen, but not its default.
        let control_max_connections =
            CONTROL_MAX_CONNECTIONS.check(args.control_max_connections)?;
        let control = match (args.control_listen, args.control_token_file) {
            (None, _) => None,
            (Some(_), None) => return Err(ConfigError::ControlTokenMissing),
            (Some(listen), Some(token_file)) => {
                let public_url = args
                    .public_url
                    .map(|url| url.trim_end_matches('/').to_string());
                if let Some(url) = public_url
                    .as_ref()
                    .filter(|u| !(u.starts_with("http://") || u.starts_with("https://")))
                {
                    return Err(ConfigError::PublicUrl(url.clone()));
                }
                // `{public_url}/takeover/{id}` would put the path inside the query or the
                // fragment, and the edge would see a request for the base URL itself.
                if public_url.as_ref().is_some_and(|u| u.contains(['?', '#'])) {
                    return Err(ConfigError::PublicUrlQuery);
                }
                Some(ControlSettings {
                    listen,
                    token_file,
                    public_url,
                    // At most 65536: it fits.
                    max_connections: usize::try_from(control_max_connections).unwrap_or(usize::MAX),
                })
            }
        };
        let bundle_timeout = BUNDLE_TIMEOUT.seconds(args.bundle_timeout)?;
        let source = CredentialSource::Sealed(SealedSource {
            sandbox_id: args.sandbox_id,
            sandbox_key: args.sandbox_key,
            public_key_out: args.public_key_out,
            platform_keys: args.platform_key,
            bundle: args.bundle,
            bundle_timeout,
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
        let default_socket = args.socket.is_none();
        let socket = absolute(args.socket.unwrap_or_else(|| PathBuf::from(DEV_SOCKET)))?;
        let (socket, socket_in_dev_dir) = match default_socket {
            true => dev_socket(
                socket,
                // The agent user could not reach the runtime dir: the daemon user's, 0700.
                std::env::var_os("XDG_RUNTIME_DIR")
                    .filter(|_| args.common.agent_user.is_none())
                    .as_deref(),
                nix::unistd::geteuid().as_raw(),
                &absolute(PathBuf::from(".grexal"))?,
            ),
            false => (socket, false),
        };
        let source = CredentialSource::DevFile {
            connections: absolute(args.connections)?,
            viewer: DevViewerSettings {
                listen: args.viewer_listen,
                url_file: absolute(args.takeover_url_file)?,
            },
        };
        let mut config = Self::common(
            args.common,
            socket,
            args.credentials_dir,
            args.env_file,
            source,
        )?;
        config.socket_in_dev_dir = socket_in_dev_dir;
        Ok(config)
    }

    fn common(
        common: CommonArgs,
        socket: PathBuf,
        credentials_dir: PathBuf,
        env_file: PathBuf,
        source: CredentialSource,
    ) -> Result<Self, ConfigError> {
        let (width, height) = parse_screen(&common.screen)?;
        let stop_timeout = STOP_TIMEOUT.seconds(common.stop_timeout)?;
        let api_request_timeout = API_REQUEST_TIMEOUT.seconds(common.api_request_timeout)?;
        let viewer_idle_timeout = VIEWER_IDLE_TIMEOUT.seconds(common.viewer_idle_timeout)?;
        let hang_timeout = DESKTOP_HANG_TIMEOUT.seconds(common.desktop_hang_timeout)?;
        let api_max_connections = API_MAX_CONNECTIONS.check(common.api_max_connections)?;
        // `run`'s desktop paths are the image's; `dev`'s are the developer's own.
        let dev = matches!(source, CredentialSource::DevFile { .. });
        let mut profile = common.browser_profile.map(absolute).transpose()?;
        let (run_dir, run_dir_is_dev_default) = match common.desktop_run_dir {
            Some(dir) => (absolute(dir)?, false),
            None if dev => (
                dev_desktop_run_dir(
                    std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
                    nix::unistd::geteuid().as_raw(),
                    &absolute(PathBuf::from(".grexal"))?,
                ),
                true,
            ),
            None => (PathBuf::from(DEFAULT_DESKTOP_RUN_DIR), false),
        };
        if dev && profile.is_none() {
            profile = Some(absolute(PathBuf::from(".grexal/chromium-profile"))?);
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
            socket_in_dev_dir: false,
            credentials_dir: absolute(credentials_dir)?,
            env_file: absolute(env_file)?,
            agent_user: common.agent_user,
            agent_argv: common.agent,
            log_format: common.log_format,
            log_filter: common.log,
            stop_timeout,
            // At most 65536: it fits.
            api_max_connections: usize::try_from(api_max_connections).unwrap_or(usize::MAX),
            api_request_timeout,
            force_desktop: common.desktop,
            desktop: DesktopSettings {
                backend: common.display_backend,
                width,
                height,
                chromium: common.chromium,
                chromium_sandbox: common.chromium_sandbox,
                profile,
                run_dir,
                run_dir_is_dev_default,
                novnc_dir: absolute(common.novnc_dir)?,
                hang_timeout,
                chromium_args: common
                    .chromium_args
                    .into_iter()
                    .filter(|a| !a.is_empty())
                    .collect(),
            },
            viewer_idle_timeout,
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

    fn run_config(extra: &[&str]) -> Result<Config, ConfigError> {
        use clap::Parser;
        let argv = ["grexal-sidecar", "run", "--sandbox-id", "sbx-1"]
            .iter()
            .chain(extra)
            .copied();
        match crate::cli::Cli::try_parse_from(argv)
            .expect("parses")
            .command
        {
            crate::cli::Command::Run(args) => Config::from_run(args),
            _ => unreachable!(),
        }
    }

    #[test]
    fn numeric_flags_are_bounded() {
        let ranges = DURATION_FLAGS
            .iter()
            .chain([&API_MAX_CONNECTIONS, &CONTROL_MAX_CONNECTIONS]);
        for range in ranges {
            let flag = format!("--{}", range.flag);
            // With the control endpoint, which --bundle-timeout needs.
            let config = |value: u64| {
                let value = value.to_string();
                let control = ["--control-listen", "127.0.0.1:0"];
                run_config(&[
                    &flag,
                    &value,
                    control[0],
                    control[1],
                    "--control-token-file",
                    "t",
                ])
            };
            for good in [range.min, range.max] {
                assert!(config(good).is_ok(), "{flag} {good}");
            }
            let mut bad = vec![range.max + 1, u64::MAX];
            bad.extend(range.min.checked_sub(1));
            for value in bad {
                let err = config(value).unwrap_err();
                assert_eq!(
                    err,
                    ConfigError::OutOfRange {
                        range: *range,
                        value
                    }
                );
                let text = err.to_string();
                assert!(
                    text.contains(&flag)
                        && text.contains(&format!("{}..={}", range.min, range.max)),
                    "{text}"
                );
            }
        }
        let control = run_config(&[
            "--control-listen",
            "127.0.0.1:0",
            "--control-token-file",
            "t",
        ])
        .map(|c| match c.source {
            CredentialSource::Sealed(s) => s.control.map(|c| c.max_connections),
            _ => unreachable!(),
        });
        assert_eq!(control, Ok(Some(256)));
        let config = run_config(&[]).unwrap();
        assert_eq!(config.stop_timeout, Duration::from_secs(10));
        assert_eq!(config.api_max_connections, 256);
        assert_eq!(config.api_request_timeout, Duration::from_secs(10));
        assert_eq!(config.viewer_idle_timeout, Duration::from_secs(300));
        assert_eq!(config.desktop.hang_timeout, Duration::from_secs(30));
    }

    /// `--public-url` is the base of every `viewer_url` (`{base}/takeover/{id}`): a query or
    /// a fragment in it would swallow that path, so it is refused, naming the flag (and not
    /// echoing the query, which may hold a secret).
    #[test]
    fn public_urls() {
        let public_url = |url: &str| {
            run_config(&[
                "--control-listen",
                "127.0.0.1:0",
                "--control-token-file",
                "t",
                "--public-url",
                url,
            ])
            .map(|c| match c.source {
                CredentialSource::Sealed(s) => s.control.and_then(|c| c.public_url),
                _ => unreachable!(),
            })
        };
        for (given, kept) in [
            ("https://edge.example", "https://edge.example"),
            ("https://edge.example/", "https://edge.example"),
            (
                "http://127.0.0.1:8080/sbx-1//",
                "http://127.0.0.1:8080/sbx-1",
            ),
        ] {
            assert_eq!(public_url(given), Ok(Some(kept.to_owned())), "{given}");
        }
        for bad in [
            "https://edge.example?sig=CANARY",
            "https://edge.example/base/?sig=CANARY",
            "https://edge.example?",
            "https://edge.example/#CANARY",
            "https://edge.example#",
            "https://edge.example/a#b?c",
        ] {
            let err = public_url(bad).unwrap_err();
            assert_eq!(err, ConfigError::PublicUrlQuery, "{bad}");
            let text = err.to_string();
            assert!(
                text.contains("--public-url") && !text.contains("CANARY"),
                "{text}"
            );
        }
        assert_eq!(
            public_url("ftp://edge.example"),
            Err(ConfigError::PublicUrl("ftp://edge.example".into()))
        );
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
    fn dev_desktop_paths_are_the_developers_own() {
        let config = dev_config(&[]).unwrap();
        let profile = config.desktop.profile.expect("a dev default");
        assert!(profile.is_absolute() && profile.ends_with(".grexal/chromium-profile"));
        assert!(config.desktop.run_dir_is_dev_default);
        assert!(!config.desktop.run_dir.starts_with("/run/grexal"));
        let given = dev_config(&["--desktop-run-dir", "/tmp/d", "--browser-profile", "/tmp/p"])
            .unwrap()
            .desktop;
        assert_eq!(
            (given.run_dir.as_path(), given.profile.as_deref()),
            (
                std::path::Path::new("/tmp/d"),
                Some(std::path::Path::new("/tmp/p"))
            )
        );
        assert!(!given.run_dir_is_dev_default);
    }

    #[test]
    fn dev_desktop_run_dir_is_per_user_per_project_and_fits_a_socket_address() {
        let a = std::path::Path::new("/home/dev/a/.grexal");
        let b = std::path::Path::new("/home/dev/b/.grexal");
        let xdg = Some(std::ffi::OsStr::new("/run/user/1000"));
        let in_xdg = dev_desktop_run_dir(xdg, 1000, a);
        assert!(in_xdg.starts_with("/run/user/1000/"), "{in_xdg:?}");
        assert!(in_xdg.to_str().unwrap().contains("grexal-desktop-"));
        assert_eq!(in_xdg, dev_desktop_run_dir(xdg, 1000, a), "stable");
        assert_ne!(in_xdg, dev_desktop_run_dir(xdg, 1000, b), "per project");
        // Unset, relative or too long: /tmp, with the uid.
        let long = "/".to_string() + &"x".repeat(90);
        for xdg in [None, Some("run/user/1000"), Some(long.as_str())] {
            let dir = dev_desktop_run_dir(xdg.map(std::ffi::OsStr::new), 1000, a);
            assert!(
                dir.to_str()
                    .unwrap()
                    .starts_with("/tmp/grexal-desktop-1000-"),
                "{xdg:?}: {dir:?}"
            );
            assert!(dir.as_os_str().len() <= crate::desktop::MAX_RUN_DIR_BYTES);
        }
        // Short enough whatever the uid.
        for xdg in [None, Some("/run/user/4294967295")] {
            let dir = dev_desktop_run_dir(xdg.map(std::ffi::OsStr::new), u32::MAX, a);
            assert!(
                dir.as_os_str().len() <= crate::desktop::MAX_RUN_DIR_BYTES,
                "{dir:?}"
            );
        }
    }

    #[test]
    fn dev_socket_falls_back_to_a_short_directory_only_when_its_default_is_too_long() {
        let xdg = Some(std::ffi::OsStr::new("/run/user/1000"));
        let project = |len: usize| {
            let dir = "/".to_string() + &"p".repeat(len - 1);
            (
                PathBuf::from(format!("{dir}/{DEV_SOCKET}")),
                PathBuf::from(format!("{dir}/.grexal")),
            )
        };
        // 107 bytes fit, 108 do not.
        let fits = 107 - DEV_SOCKET.len() - 1;
        let (socket, grexal) = project(fits);
        assert_eq!(socket.as_os_str().len(), 107);
        assert_eq!(
            dev_socket(socket.clone(), xdg, 1000, &grexal),
            (socket, false)
        );
        let (socket, grexal) = project(fits + 1);
        let (in_xdg, fallback) = dev_socket(socket.clone(), xdg, 1000, &grexal);
        assert!(fallback);
        assert!(
            in_xdg.starts_with("/run/user/1000") && in_xdg.ends_with("sidecar.sock"),
            "{in_xdg:?}"
        );
        assert!(
            in_xdg.to_str().unwrap().contains("/grexal-sidecar-"),
            "{in_xdg:?}"
        );
        let (in_tmp, _) = dev_socket(socket, None, 1000, &grexal);
        assert!(
            in_tmp.starts_with("/tmp") && in_tmp.ends_with("sidecar.sock"),
            "{in_tmp:?}"
        );
        assert!(
            in_tmp.to_str().unwrap().contains("/grexal-sidecar-1000-"),
            "{in_tmp:?}"
        );
        // Per project, and short enough whatever the runtime dir.
        let (other, other_grexal) = project(fits + 2);
        assert_ne!(dev_socket(other, None, 1000, &other_grexal).0, in_tmp);
        let long_xdg = "/".to_string() + &"x".repeat(90);
        let (socket, grexal) = project(200);
        let (path, _) = dev_socket(socket, Some(long_xdg.as_ref()), 1000, &grexal);
        assert!(path.starts_with("/tmp"), "{path:?}");
        assert!(path.as_os_str().len() <= MAX_SOCKET_PATH_BYTES);
        // A socket given is taken as it is, even too long (the bind then says so).
        let long = format!("/{}/s.sock", "l".repeat(120));
        let config = dev_config(&["--socket", &long]).unwrap();
        assert_eq!(
            (config.socket.to_str(), config.socket_in_dev_dir),
            (Some(long.as_str()), false)
        );
        let config = dev_config(&[]).unwrap();
        assert!(config.socket.ends_with(DEV_SOCKET) && !config.socket_in_dev_dir);
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
