//! The command line: clap definitions. Raw arguments become one validated
//! `config::Config` (see `config`) before anything binds or spawns.
//!
//! Precedence: flag > environment variable > default. Secrets never travel in argv:
//! keys, tokens and bundles are always file paths.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "grexal-sidecar",
    version,
    about = "The in-sandbox daemon of Grexal: sealed credentials, ctx.connect over a Unix socket, \
             the agent as a supervised child, and the desktop browser with takeover.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the sealed bundle, write credentials, serve the socket API, then start the agent
    /// (after `--`) as a supervised child. Without an agent command, serve until stopped.
    Run(RunArgs),
    /// Local development: plaintext credentials from .grexal/connections.json, the same
    /// socket API and files, the agent (after `--`) started the same way.
    Dev(DevArgs),
    /// Validate a grexal.json and print what it declares.
    Check(CheckArgs),
    /// Generate a sandbox (X25519) or platform (Ed25519) key pair.
    Keygen(KeygenArgs),
    /// Seal a credential document into a bundle for one sandbox (for platforms, demos, tests).
    // `--version` here is the bundle version, so this subcommand has no version flag.
    #[command(disable_version_flag = true)]
    Seal(SealArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DisplayBackend {
    /// Xvnc: display and VNC server in one process, RFB on a Unix socket, no TCP port.
    Xvnc,
    /// Xvfb plus x11vnc: RFB on a Unix socket, no TCP port.
    Xvfb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChromiumSandbox {
    /// On when Chromium's user is not root and may create a user namespace, else off.
    Auto,
    /// Required: the desktop does not start without it.
    On,
    /// Always --no-sandbox.
    Off,
}

/// Options shared by `run` and `dev`.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The agent's manifest.
    #[arg(long, env = "GREXAL_MANIFEST", default_value = "grexal.json")]
    pub manifest: PathBuf,

    /// The agent's user (name or uid): it runs the agent and owns the credential files.
    /// On a desktop sandbox the display, VNC server and Chromium run as this user too
    /// (the agent drives that browser over CDP anyway); it owns the browser profile and
    /// the desktop run dir. Without it they run as the daemon's user.
    #[arg(long, env = "GREXAL_AGENT_USER")]
    pub agent_user: Option<String>,

    /// Log format on stderr.
    #[arg(long, env = "GREXAL_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. `info` or `grexal_sidecar=debug`.
    /// Whatever it says, the dependencies that log whole messages at debug and trace
    /// (chromiumoxide, tungstenite, async_tungstenite, reqwest) are held at info: their
    /// messages carry cookie values and other payloads.
    #[arg(long, env = "GREXAL_LOG", default_value = "info")]
    pub log: String,

    /// Seconds the agent gets between a forwarded SIGTERM and SIGKILL at shutdown, 0..=86400.
    #[arg(long, env = "GREXAL_STOP_TIMEOUT", default_value_t = 10)]
    pub stop_timeout: u64,

    /// Most simultaneous connections on the agent socket, 1..=65536.
    #[arg(long, env = "GREXAL_API_MAX_CONNECTIONS", default_value_t = 256)]
    pub api_max_connections: u64,

    /// Seconds a client may take to send a whole request on the agent socket, 1..=3600.
    #[arg(long, env = "GREXAL_API_REQUEST_TIMEOUT", default_value_t = 10)]
    pub api_request_timeout: u64,

    /// Run the desktop (display, VNC server, Chromium) even if the manifest's
    /// runtime.sandbox_template is not "desktop"; the agent then gets the browser and
    /// takeovers as on a desktop sandbox. In the environment variable: true or false, 1 or
    /// 0, yes or no, on or off.
    #[arg(long, env = "GREXAL_DESKTOP", value_parser = clap::builder::BoolishValueParser::new())]
    pub desktop: bool,

    /// Display and VNC server to run on a desktop sandbox.
    #[arg(
        long,
        env = "GREXAL_DISPLAY_BACKEND",
        value_enum,
        default_value = "xvnc"
    )]
    pub display_backend: DisplayBackend,

    /// Screen size of the desktop, WIDTHxHEIGHT, from 320x200 to 7680x4320.
    #[arg(long, env = "GREXAL_SCREEN", default_value = "1280x800")]
    pub screen: String,

    /// The Chromium binary.
    #[arg(long, env = "GREXAL_CHROMIUM", default_value = "/usr/bin/chromium")]
    pub chromium: PathBuf,

    /// Chromium's persistent profile directory (the logged-in session lives here).
    /// Default: /var/lib/grexal/chromium-profile; under `dev`, .grexal/chromium-profile.
    #[arg(long, env = "GREXAL_BROWSER_PROFILE")]
    pub browser_profile: Option<PathBuf>,

    /// Chromium's own sandbox. auto: on when Chromium runs as a non-root user (the agent
    /// user) who may create a user namespace, checked at start, otherwise off with a
    /// warning; on: the desktop does not start without it; off: always --no-sandbox.
    #[arg(
        long,
        env = "GREXAL_CHROMIUM_SANDBOX",
        value_enum,
        default_value = "auto"
    )]
    pub chromium_sandbox: ChromiumSandbox,

    /// Extra argument for Chromium (repeatable), e.g. a --host-resolver-rules for tests.
    /// In the environment variable, one argument per line.
    #[arg(
        long = "chromium-arg",
        env = "GREXAL_CHROMIUM_ARGS",
        value_delimiter = '\n',
        allow_hyphen_values = true
    )]
    pub chromium_args: Vec<String>,

    /// Directory for the desktop's sockets, the display's Xauthority file, Chromium's HOME
    /// and its temp dir (at most 58 bytes: Chromium's profile-lock socket in it,
    /// tmp/org.chromium.Chromium.XXXXXX/SingletonSocket, must fit a Unix socket address).
    /// Default: /run/grexal/desktop; under `dev`, a directory of this user's,
    /// $XDG_RUNTIME_DIR/grexal-desktop-HASH or /tmp/grexal-desktop-UID-HASH (HASH: of the
    /// project's .grexal path).
    #[arg(long, env = "GREXAL_DESKTOP_RUN_DIR")]
    pub desktop_run_dir: Option<PathBuf>,

    /// Seconds a desktop child (display, VNC server, Chromium) may keep failing its probe
    /// while the desktop is up before it is taken for hung, killed and restarted
    /// (`browser_restarted`), 5..=3600. Each child is probed every 5 s (more often below
    /// 15 s), and a probe may take up to 5 s.
    #[arg(long, env = "GREXAL_DESKTOP_HANG_TIMEOUT", default_value_t = 30)]
    pub desktop_hang_timeout: u64,

    /// noVNC's web root (Debian's `novnc` package), served to takeover viewers.
    #[arg(long, env = "GREXAL_NOVNC_DIR", default_value = "/usr/share/novnc")]
    pub novnc_dir: PathBuf,

    /// Seconds a takeover viewer may stay silent before it is dropped, 1..=3600.
    #[arg(long, env = "GREXAL_VIEWER_IDLE_TIMEOUT", default_value_t = 300)]
    pub viewer_idle_timeout: u64,

    /// Send buffer of each takeover viewer's TCP socket, in bytes (Linux doubles it); 0
    /// leaves it to the kernel's autotuning. Bounds what is queued for a viewer and keeps
    /// the relay fast; raise it if the edge is far (it caps a viewer at ~2x this per RTT).
    #[arg(long, env = "GREXAL_VIEWER_SEND_BUFFER", default_value_t = 128 * 1024)]
    pub viewer_send_buffer: usize,

    /// The agent command and its arguments.
    #[arg(last = true, value_name = "AGENT_CMD")]
    pub agent: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// This sandbox's id, 1..=128 bytes of [A-Za-z0-9._:-]; a bundle sealed for another id
    /// is refused.
    #[arg(long, env = "GREXAL_SANDBOX_ID")]
    pub sandbox_id: String,

    /// The sandbox's private key file. Without it a key pair is generated at boot and the
    /// public key written to --public-key-out and, with --platform-key, served on the
    /// control endpoint.
    #[arg(long, env = "GREXAL_SANDBOX_KEY")]
    pub sandbox_key: Option<PathBuf>,

    /// Where to write the generated public key (0644, through a fresh temporary file renamed
    /// into place: a symlink planted there is replaced, never written through); the file is
    /// left there when the daemon exits. Refused with --sandbox-key: no key is generated
    /// then.
    #[arg(
        long,
        env = "GREXAL_PUBLIC_KEY_OUT",
        default_value = "/run/grexal/sandbox.pub",
        conflicts_with = "sandbox_key"
    )]
    pub public_key_out: PathBuf,

    /// The platform's public key(s) this image trusts, one base64 key per line. Without it
    /// no bundle is accepted (allowed only when the manifest declares no pre-collected
    /// connection).
    #[arg(long, env = "GREXAL_PLATFORM_KEY")]
    pub platform_key: Option<PathBuf>,

    /// The sealed bundle to open at boot (needs --sandbox-key: a key generated at boot is
    /// one no bundle was sealed to). Without it the daemon waits for one on the control
    /// endpoint before starting the agent.
    #[arg(long, env = "GREXAL_BUNDLE", requires = "sandbox_key")]
    pub bundle: Option<PathBuf>,

    /// Seconds to wait for a pushed bundle before giving up (exit code 90),
    /// 1..=86400. Only with --control-listen and without --bundle:
    /// otherwise nothing is waited for.
    #[arg(
        long,
        env = "GREXAL_BUNDLE_TIMEOUT",
        default_value_t = 300,
        requires = "control_listen",
        conflicts_with = "bundle"
    )]
    pub bundle_timeout: u64,

    /// The agent socket (HTTP/1.1 + JSON); its path reaches the agent as GREXAL_SIDECAR_SOCKET.
    #[arg(
        long,
        env = "GREXAL_SOCKET",
        default_value = "/run/grexal/sidecar.sock"
    )]
    pub socket: PathBuf,

    /// Root of the credential files, /tmp/grexal/{connection_id}/...
    #[arg(long, env = "GREXAL_CREDENTIALS_DIR", default_value = "/tmp/grexal")]
    pub credentials_dir: PathBuf,

    /// The env file (systemd EnvironmentFile syntax) with the env-delivered fields.
    #[arg(long, env = "GREXAL_ENV_FILE", default_value = "/run/grexal/agent.env")]
    pub env_file: PathBuf,

    /// Address of the platform's control endpoint (TCP). Off unless set; without it a
    /// desktop sandbox still makes takeovers, but no viewer can reach them (their viewer
    /// URL is http://viewer-unavailable.invalid/...).
    #[arg(long, env = "GREXAL_CONTROL_LISTEN", requires = "control_token_file")]
    pub control_listen: Option<SocketAddr>,

    /// File holding the control endpoint's bearer token (required with --control-listen,
    /// refused without it).
    #[arg(long, env = "GREXAL_CONTROL_TOKEN_FILE", requires = "control_listen")]
    pub control_token_file: Option<PathBuf>,

    /// Base URL (http:// or https://, with no query or fragment) under which the
    /// platform's edge reaches the control endpoint; viewer URLs are built from it. Defaults
    /// to http:// and the address the control endpoint bound (the port chosen when
    /// --control-listen gave port 0); refused without --control-listen. It may have a
    /// path, but the daemon serves /takeover/... and /v1/... at its root: the edge must
    /// strip the path, mapping {public_url}/... to /... on the control endpoint, and must
    /// pass WebSocket upgrades through to the daemon as HTTP/1.1 Upgrade requests.
    #[arg(long, env = "GREXAL_PUBLIC_URL", requires = "control_listen")]
    pub public_url: Option<String>,

    /// Most simultaneous connections on the control endpoint, the viewer's included,
    /// 32..=65536; the last 16 are kept for the platform's requests (under /v1/, with the
    /// bearer token). Behind an edge that opens a connection per request in flight, each
    /// viewer page load takes over 40 at once. Refused without --control-listen.
    #[arg(
        long,
        env = "GREXAL_CONTROL_MAX_CONNECTIONS",
        default_value_t = 256,
        requires = "control_listen"
    )]
    pub control_max_connections: u64,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Plaintext credentials for local development. If group or others may read or write
    /// it, or a file a "path" entry names, a warning says so (chmod 600 it).
    #[arg(
        long,
        env = "GREXAL_DEV_CONNECTIONS",
        default_value = ".grexal/connections.json"
    )]
    pub connections: PathBuf,

    /// The agent socket; its path reaches the agent as GREXAL_SIDECAR_SOCKET. Default:
    /// .grexal/sidecar.sock, or when that path is too long for a Unix socket address (107
    /// bytes; a project more than ~85 bytes deep) sidecar.sock in a directory of this
    /// user's, $XDG_RUNTIME_DIR/grexal-sidecar-HASH (not with --agent-user) or
    /// /tmp/grexal-sidecar-UID-HASH, created 0700 (0711 with --agent-user).
    #[arg(long, env = "GREXAL_SOCKET")]
    pub socket: Option<PathBuf>,

    /// Root of the credential files.
    #[arg(
        long,
        env = "GREXAL_CREDENTIALS_DIR",
        default_value = ".grexal/credentials"
    )]
    pub credentials_dir: PathBuf,

    /// The env file with the env-delivered fields.
    #[arg(long, env = "GREXAL_ENV_FILE", default_value = ".grexal/agent.env")]
    pub env_file: PathBuf,

    /// Where a takeover's viewer is served when the desktop runs (port 0: any free port).
    /// Loopback only: in `dev` you are the user, on this machine.
    #[arg(long, env = "GREXAL_DEV_VIEWER_LISTEN", default_value = "127.0.0.1:0")]
    pub viewer_listen: SocketAddr,

    /// While a takeover is live, this file (0600) holds the viewer URL to open, with its
    /// token; it is also printed when stderr is a terminal.
    #[arg(
        long,
        env = "GREXAL_DEV_TAKEOVER_URL_FILE",
        default_value = ".grexal/takeover-url"
    )]
    pub takeover_url_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The manifest to validate.
    #[arg(default_value = "grexal.json")]
    pub path: PathBuf,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyKind {
    /// X25519: bundles are sealed to it (sandbox.key, sandbox.pub).
    Sandbox,
    /// Ed25519: bundles are signed with it (platform.key, platform.pub).
    Platform,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Which key pair.
    #[arg(long, value_enum)]
    pub kind: KeyKind,

    /// Directory to write `{kind}.key` (0600) and `{kind}.pub` into.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,

    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    /// The credential document (JSON, `{"connections": {...}}`).
    #[arg(long)]
    pub credentials: PathBuf,

    /// The sandbox id the bundle is for.
    #[arg(long)]
    pub sandbox_id: String,

    /// The sandbox's public key file.
    #[arg(long)]
    pub sandbox_pub: PathBuf,

    /// The platform's private key file (signs the bundle).
    #[arg(long)]
    pub platform_key: PathBuf,

    /// The bundle version; each newer bundle for a sandbox must be higher.
    #[arg(long, default_value_t = 1)]
    pub version: u64,

    /// Seconds from now until the bundle expires.
    #[arg(long, default_value_t = 3600)]
    pub expires_in: u64,

    /// Where to write the bundle.
    #[arg(long)]
    pub out: PathBuf,
}

/// Entry point of the binary.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` print to stdout and succeed; a bad command line is
            // a usage error, 64 as documented, not clap's own 2.
            let code = match e.use_stderr() {
                true => crate::exit::ExitCode::Usage.code(),
                false => 0,
            };
            // Nothing more can be said if stderr itself is gone.
            let _ = e.print();
            return std::process::ExitCode::from(code);
        }
    };
    std::process::ExitCode::from(crate::daemon::dispatch(cli))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn run(extra: &[&str]) -> Result<(), ErrorKind> {
        let argv = ["grexal-sidecar", "run", "--sandbox-id", "s"]
            .iter()
            .chain(extra);
        Cli::try_parse_from(argv).map(|_| ()).map_err(|e| e.kind())
    }

    /// A flag that would be silently ignored next to (or without) another is refused by
    /// clap, so the mistake is seen at once instead of in a daemon that does something else.
    #[test]
    fn flags_that_would_be_ignored_are_refused() {
        let listen = ["--control-listen", "127.0.0.1:1"];
        let token = ["--control-token-file", "/t"];
        let key = ["--sandbox-key", "/k"];
        let bundle = ["--bundle", "/b"];
        // Each case: groups of arguments, and what clap makes of them together.
        type Case<'a> = (&'a [&'a [&'a str]], Result<(), ErrorKind>);
        let cases: &[Case] = &[
            (&[&token], Err(ErrorKind::MissingRequiredArgument)),
            (
                &[&["--public-url", "https://e"]],
                Err(ErrorKind::MissingRequiredArgument),
            ),
            (&[&listen], Err(ErrorKind::MissingRequiredArgument)),
            (
                &[&key, &["--public-key-out", "/p"]],
                Err(ErrorKind::ArgumentConflict),
            ),
            (&[&bundle], Err(ErrorKind::MissingRequiredArgument)),
            (
                &[&["--bundle-timeout", "5"]],
                Err(ErrorKind::MissingRequiredArgument),
            ),
            (
                &[&["--control-max-connections", "64"]],
                Err(ErrorKind::MissingRequiredArgument),
            ),
            (
                &[&key, &bundle, &listen, &token, &["--bundle-timeout", "5"]],
                Err(ErrorKind::ArgumentConflict),
            ),
            // What each goes with.
            (&[], Ok(())),
            (&[&listen, &token, &["--public-url", "https://e"]], Ok(())),
            (&[&listen, &token, &["--bundle-timeout", "5"]], Ok(())),
            (
                &[&listen, &token, &["--control-max-connections", "64"]],
                Ok(()),
            ),
            (&[&["--public-key-out", "/p"]], Ok(())),
            (&[&key, &bundle], Ok(())),
            (&[&key, &bundle, &listen, &token], Ok(())),
        ];
        for (groups, want) in cases {
            let args: Vec<&str> = groups.iter().flat_map(|g| g.iter().copied()).collect();
            assert_eq!(run(&args), *want, "{args:?}");
        }
    }
}
