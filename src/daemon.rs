//! Wiring: each subcommand puts the pieces together in order.
//!
//! `run` and `dev` follow the same sequence, the linkerd2-proxy way: resolve and
//! validate everything first (config, manifest, keys), then install credentials, then
//! bind, log what was bound, spawn, and finally start the agent, once everything it
//! expects is in place. Shutdown runs the sequence backwards.
//!
//! Submodule: `inputs` (the keys, the bundle file and `dev`'s connections file boot reads).

mod inputs;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::cli::{Cli, Command};
use crate::config::{Config, CredentialSource, SealedSource};
use crate::exit::ExitCode;
use crate::manifest::Manifest;
use crate::platform::events::{EventBus, PlatformEvent};
use inputs::{install_dev_file, open_keys, read_bundle};

/// Runs a subcommand; returns the process exit code (the agent's own, under `run -- …`).
pub fn dispatch(cli: Cli) -> u8 {
    match cli.command {
        Command::Keygen(args) => crate::tools::keygen(&args).code(),
        Command::Seal(args) => crate::tools::seal(&args).code(),
        Command::Check(args) => crate::check::check(&args).code(),
        Command::Run(args) => match Config::from_run(args) {
            Ok(config) => start(config),
            Err(e) => usage_error(&e),
        },
        Command::Dev(args) => match Config::from_dev(args) {
            Ok(config) => start(config),
            Err(e) => usage_error(&e),
        },
    }
}

fn usage_error(e: &dyn std::error::Error) -> u8 {
    eprintln!("grexal-sidecar: {e}");
    ExitCode::Usage.code()
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `run` and `dev`: tracing and hardening first, then the async sequence.
fn start(config: Config) -> u8 {
    if let Err(e) = crate::telemetry::init(config.log_format, &config.log_filter) {
        eprintln!("grexal-sidecar: {e}");
        return ExitCode::Usage.code();
    }
    if let Err(e) = crate::telemetry::harden_process() {
        // Not fatal (an unprivileged dev run may lack the rights), but said loudly.
        warn!(%e, "process hardening incomplete");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(%e, "cannot start the async runtime");
            return ExitCode::Os.code();
        }
    };
    let code = runtime.block_on(async move {
        // One listener from here to the end: a stop signal during boot stops the boot
        // (the others are dropped), and one after it is held for the agent, never lost
        // (see `agent::Signals`).
        let mut signals = match crate::agent::Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                error!(%e, "installing signal handlers failed");
                return ExitCode::Os.code();
            }
        };
        let mut started = Started::default();
        // Biased: a boot that finished is served (and shut down) even if a signal came
        // at the same moment; the signal stays pending for `serve`.
        let booted = tokio::select! {
            biased;
            booted = boot(config, &mut started) => booted,
            signal = signals.recv_stop() => {
                info!(%signal, "stop signal during boot; undoing what had started");
                started.shutdown().await;
                return ExitCode::Success.code();
            }
        };
        match booted {
            Ok(daemon) => daemon.serve(signals).await,
            Err(e) => {
                error!(code = e.code.code(), "{}", e.message);
                eprintln!("grexal-sidecar: {}", e.message);
                started.shutdown().await;
                e.code.code()
            }
        }
    });
    // Lingering blocking tasks (a stuck stdin read, say) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// A startup failure: the exit code and a message naming the problem (never a value).
struct BootError {
    code: ExitCode,
    message: String,
}

impl BootError {
    fn new(code: ExitCode, message: impl Into<String>) -> Self {
        BootError {
            code,
            message: message.into(),
        }
    }

    fn from_error(code: ExitCode, context: &str, error: &dyn std::error::Error) -> Self {
        BootError::new(
            code,
            format!("{context}: {}", crate::api::error::error_chain(error)),
        )
    }
}

fn store_error(e: &crate::store::StoreError, dev: bool) -> BootError {
    use crate::store::StoreError;
    let code = match e {
        StoreError::Bundle(b) => b.exit_code(),
        StoreError::Contents(_) if dev => ExitCode::Manifest,
        StoreError::Contents(_) => ExitCode::BundleContents,
        // Another user's entry where a connection's files go: the directory is not safe
        // to use, as for the root itself.
        StoreError::Inject(crate::inject::InjectError::Foreign { .. }) => ExitCode::Config,
        StoreError::Inject(_) => ExitCode::Io,
        StoreError::NoOpener => ExitCode::Internal,
    };
    let context = if dev {
        "connections file refused"
    } else {
        "bundle refused"
    };
    BootError::from_error(code, context, e)
}

/// Runs a blocking read of boot's (a file named by the configuration, which may be a FIFO
/// nobody writes or on a hung file system) on tokio's blocking threads, so the stop signal
/// boot is raced against is still seen: boot is then dropped and the read abandoned (the
/// runtime's shutdown does not wait for it).
async fn blocking<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(read).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Everything bound and spawned, ready to start the agent.
struct Daemon {
    config: Config,
    store: Arc<crate::store::Store>,
    agent_user: Option<crate::agent::AgentUser>,
    started: Started,
}

/// What boot has started so far, recorded as it goes: a boot that fails or is stopped by
/// a signal undoes it with the same `shutdown` as a daemon that ran, so no credential is
/// left on disk and the desktop stops in order.
#[derive(Default)]
struct Started {
    /// Stops the servers (the agent socket, the control endpoint, the dev viewer).
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Closed first at shutdown: the servers take takeover requests from boot on (while
    /// a bundle is awaited, say).
    takeovers: Option<crate::takeover::TakeoverManager>,
    desktop: Option<Arc<crate::desktop::Desktop>>,
    store: Option<Arc<crate::store::Store>>,
    /// The agent socket, once bound by us (a file already at the path is not ours).
    socket: Option<std::path::PathBuf>,
    /// Held until everything above is undone, the socket removed included: a successor
    /// cannot start (and bind its socket) before.
    instance: Option<crate::instance::InstanceLock>,
}

/// Resolves, installs, binds and spawns, recording in `started` what must be undone. It
/// may be dropped at any await (a stop signal): what it started is then in `started`.
async fn boot(config: Config, started: &mut Started) -> Result<Daemon, BootError> {
    prepare_dev_dirs(&config)?;
    // First: a daemon already running with these paths must not see any of them touched.
    let lock = crate::instance::acquire(&config.socket)
        .map_err(|e| BootError::from_error(e.exit_code(), "not starting", &e))?;
    started.instance = Some(lock);
    let path = config.manifest.clone();
    let manifest = blocking(move || Manifest::from_path(&path))
        .await
        .map_err(|e| {
            BootError::from_error(
                e.exit_code(),
                &format!("manifest {}", config.manifest.display()),
                &e,
            )
        })?;
    for w in crate::check::manifest_warnings(&manifest, config.force_desktop) {
        warn!("{w}");
    }
    let agent_user = match &config.agent_user {
        Some(name) => Some(
            crate::agent::AgentUser::resolve(name)
                .map_err(|e| BootError::from_error(ExitCode::Config, "--agent-user", &e))?,
        ),
        None => None,
    };
    let layout = crate::inject::Layout {
        root: config.credentials_dir.clone(),
        owner: agent_user.as_ref().map(|u| u.owner()),
        env_file: Some(config.env_file.clone()),
    };
    let injector = crate::inject::Injector::new(layout).map_err(|e| {
        // A directory that is not safe to use is a configuration problem, not an I/O one.
        let code = match e {
            crate::inject::InjectError::UnsafeRoot { .. } => ExitCode::Config,
            crate::inject::InjectError::InUse { .. } => ExitCode::InUse,
            _ => ExitCode::Io,
        };
        BootError::from_error(code, "credentials directory", &e)
    })?;
    let events = EventBus::new();
    let stop = started.stop.clone();
    let tasks = started.tasks.clone();
    let needs_credentials = manifest
        .connections
        .iter()
        .any(|c| c.mode.is_pre_collected());
    let mut sandbox_public = None;

    let store = match &config.source {
        CredentialSource::Sealed(sealed) => {
            let keys = sealed.clone();
            let (opener, public_key) =
                blocking(move || open_keys(&keys, needs_credentials)).await?;
            sandbox_public = Some(public_key);
            let store = Arc::new(crate::store::Store::new(
                manifest,
                opener,
                injector,
                events.clone(),
            ));
            started.store = Some(store.clone());
            if let Some(path) = &sealed.bundle {
                let bundle = path.clone();
                let bytes = blocking(move || read_bundle(&bundle)).await?;
                let version = store
                    .install_bundle(&bytes, now_unix())
                    .await
                    .map_err(|e| store_error(&e, false))?;
                info!(version, path = %path.display(), "credentials installed from bundle file");
            }
            store
        }
        CredentialSource::DevFile { connections, .. } => {
            let store = Arc::new(crate::store::Store::new(
                manifest,
                None,
                injector,
                events.clone(),
            ));
            started.store = Some(store.clone());
            install_dev_file(&store, connections).await?;
            store
        }
    };

    // The desktop comes up while the platform may still be sealing the bundle; the
    // takeover manager needs it (or its absence, for `sandbox_not_desktop`). This is the
    // one place that decides whether the sandbox is a desktop one: the agent's
    // GREXAL_BROWSER_CDP_URL, `GET /v1/browser` and takeovers all follow from it.
    let desktop = if config.force_desktop || store.manifest().is_desktop() {
        if config.desktop.run_dir_is_dev_default {
            crate::dev_dir::prepare_owned(&config.desktop.run_dir, 0o700)
                .map_err(|e| BootError::from_error(ExitCode::Config, "desktop run dir", &e))?;
        }
        let desktop = Arc::new(start_desktop(&config, agent_user.as_ref(), &events).await?);
        started.desktop = Some(desktop.clone());
        Some(desktop)
    } else {
        None
    };
    // `dev` with a desktop serves the viewer itself, on loopback: the developer is the user.
    let dev_viewer = match (&config.source, &desktop) {
        (CredentialSource::DevFile { viewer, .. }, Some(_)) => {
            let listener = crate::dev_viewer::bind(viewer.listen)
                .await
                .map_err(|e| BootError::from_error(ExitCode::Os, "--viewer-listen", &e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| BootError::from_error(ExitCode::Os, "--viewer-listen", &e))?;
            Some((viewer, listener, addr))
        }
        _ => None,
    };

    let owner = agent_user.as_ref().map(|u| u.owner());
    let listener = crate::api::bind(&config.socket, owner).map_err(|e| {
        let code = match e {
            crate::api::error::ApiError::UnsafeDir { .. } => ExitCode::Config,
            crate::api::error::ApiError::SocketInUse { .. } => ExitCode::InUse,
            _ => ExitCode::Os,
        };
        BootError::from_error(code, &format!("socket {}", config.socket.display()), &e)
    })?;
    started.socket = Some(config.socket.clone());
    info!(socket = %config.socket.display(), "agent socket bound");

    // The control endpoint is bound before the takeover manager is made, and both servers
    // are served after: viewer URLs default to the address it bound, which only the bind
    // knows when `--control-listen` gives port 0.
    let control = match (&config.source, sandbox_public) {
        (
            CredentialSource::Sealed(SealedSource {
                control: Some(control),
                ..
            }),
            Some(public_key),
        ) => Some(bind_control(control, public_key).await?),
        _ => None,
    };
    let public_url = match (&control, &dev_viewer) {
        (Some(control), _) => control.public_url.clone(),
        (_, Some((_, _, addr))) => format!("http://{addr}"),
        // No control endpoint: no viewer can be reached; viewer URLs say so.
        _ => "http://viewer-unavailable.invalid".to_string(),
    };
    let takeover_limits = crate::takeover::TakeoverLimits {
        browser_wait: crate::takeover::browser_wait_within(config.api_request_timeout),
        relay: crate::relay::RelayLimits {
            idle_timeout: config.viewer_idle_timeout,
            viewer_send_buffer: config.viewer_send_buffer,
            ..Default::default()
        },
        ..Default::default()
    };
    let takeovers = crate::takeover::TakeoverManager::new(
        store.manifest().clone(),
        desktop
            .clone()
            .map(|d| d as Arc<dyn crate::takeover::Browser>),
        events.clone(),
        public_url,
        takeover_limits,
    );
    started.takeovers = Some(takeovers.clone());

    let viewer = crate::viewer::ViewerConfig {
        novnc_dir: config.desktop.novnc_dir.clone(),
        ..Default::default()
    };
    if let Some((settings, listener, _)) = dev_viewer {
        let router = crate::platform::control::viewer_router(takeovers.clone(), viewer.clone());
        // No platform here, so no reserve: every slot is the developer's viewer's.
        tasks.spawn(crate::platform::control::serve(
            listener,
            router,
            crate::platform::control::ControlLimits::default(),
            None,
            stop.clone(),
        ));
        tasks.spawn(crate::dev_viewer::announce(
            events.subscribe(),
            settings.url_file.clone(),
            stop.clone(),
        ));
    }

    let mut api_state =
        crate::api::ApiState::new(store.clone(), agent_user.as_ref().map(|u| u.uid));
    api_state.limits =
        crate::api::ApiLimits::new(config.api_max_connections, config.api_request_timeout);
    api_state.takeovers = Some(takeovers.clone());
    tasks.spawn(crate::api::serve(listener, api_state, stop.clone()));

    if let (Some(control), CredentialSource::Sealed(sealed)) = (control, &config.source) {
        let routes = ControlRoutes {
            takeovers: takeovers.clone(),
            viewer,
        };
        serve_control(control, &sealed.sandbox_id, &store, routes, &tasks, &stop);
    }

    if needs_credentials && !store.is_ready() {
        let CredentialSource::Sealed(sealed) = &config.source else {
            return Err(BootError::new(
                ExitCode::Internal,
                "dev credentials missing after install",
            ));
        };
        if sealed.control.is_none() {
            return Err(BootError::new(
                ExitCode::Usage,
                "the manifest declares pre-collected connections: give --bundle, or --control-listen to receive one",
            ));
        }
        info!(
            timeout_s = sealed.bundle_timeout.as_secs(),
            "waiting for a bundle on the control endpoint"
        );
        tokio::select! {
            version = store.wait_installed() => info!(version, "credentials installed from the control endpoint"),
            _ = tokio::time::sleep(sealed.bundle_timeout) => {
                return Err(BootError::new(ExitCode::BundleTimeout, format!("no bundle arrived within {} s", sealed.bundle_timeout.as_secs())));
            }
        }
    }

    if crate::reaper::is_pid1() {
        tasks.spawn(crate::reaper::spawn_orphan_reaper(stop.clone()));
        info!("running as PID 1: reaping orphans");
    }
    Ok(Daemon {
        config,
        store,
        agent_user,
        started: std::mem::take(started),
    })
}

/// `dev`'s own directories, before the instance lock is taken in one of them: the parents
/// of a local credentials dir (`.grexal/`), made private whatever the umask, and the
/// socket's directory of the user's when the project's path is too long for a socket
/// address. In a sandbox (`run`) the root's parent (/tmp) exists, and creating parents in
/// a world-writable directory is exactly what the injector refuses to do.
fn prepare_dev_dirs(config: &Config) -> Result<(), BootError> {
    let mode = crate::dev_dir::private_mode(config.agent_user.is_some());
    if let (CredentialSource::DevFile { .. }, Some(parent)) =
        (&config.source, config.credentials_dir.parent())
    {
        crate::dev_dir::prepare(parent, mode)
            .map_err(|e| BootError::from_error(ExitCode::Io, "dev directory", &e))?;
    }
    if let (true, Some(dir)) = (config.socket_in_dev_dir, config.socket.parent()) {
        crate::dev_dir::prepare_owned(dir, mode)
            .map_err(|e| BootError::from_error(ExitCode::Config, "socket directory", &e))?;
        info!(
            socket = %config.socket.display(),
            "dev: the project's .grexal/sidecar.sock would be too long for a Unix socket \
             address; the socket is in a directory of this user's instead"
        );
    }
    Ok(())
}

/// The desktop's children run as the agent user when there is one: the agent drives this
/// browser over CDP anyway, so it owning the browser, its profile and the run dir gives
/// it nothing new, while Chromium, Xvnc and x11vnc (large parsers of untrusted input:
/// web pages, RFB from viewers) no longer run as root.
fn desktop_config(
    config: &Config,
    agent_user: Option<&crate::agent::AgentUser>,
) -> crate::desktop::DesktopConfig {
    use crate::cli::{ChromiumSandbox, DisplayBackend};
    use crate::desktop::{
        ChromiumSandbox as Sandbox, DesktopConfig, DisplayBackend as Backend, RunAs, Screen,
    };
    let settings = &config.desktop;
    let defaults = DesktopConfig::default();
    DesktopConfig {
        backend: match settings.backend {
            DisplayBackend::Xvnc => Backend::Xvnc {
                xvnc: "/usr/bin/Xvnc".into(),
            },
            DisplayBackend::Xvfb => Backend::XvfbX11vnc {
                xvfb: "/usr/bin/Xvfb".into(),
                x11vnc: "/usr/bin/x11vnc".into(),
            },
        },
        screen: Screen {
            width: settings.width as u16,
            height: settings.height as u16,
            ..defaults.screen
        },
        chromium: settings.chromium.clone(),
        profile_dir: settings
            .profile
            .clone()
            .unwrap_or(defaults.profile_dir.clone()),
        run_dir: settings.run_dir.clone(),
        chromium_home: None,
        chromium_extra_args: settings.chromium_args.clone(),
        chromium_sandbox: match settings.chromium_sandbox {
            ChromiumSandbox::Auto => Sandbox::Auto,
            ChromiumSandbox::On => Sandbox::On,
            ChromiumSandbox::Off => Sandbox::Off,
        },
        hang_timeout: Some(settings.hang_timeout),
        run_as: agent_user.map(|u| RunAs {
            uid: u.uid,
            gid: u.gid,
        }),
        ..defaults
    }
}

async fn start_desktop(
    config: &Config,
    agent_user: Option<&crate::agent::AgentUser>,
    events: &EventBus,
) -> Result<crate::desktop::Desktop, BootError> {
    // Its own stop token: at shutdown the desktop goes last, after the takeover ended and
    // the servers stopped (reverse start order).
    let desktop = crate::desktop::Desktop::start(
        desktop_config(config, agent_user),
        events.clone(),
        CancellationToken::new(),
    )
    .await
    .map_err(|e| BootError::from_error(ExitCode::Os, "desktop", &e))?;
    info!(display = %desktop.display(), cdp = %desktop.cdp().http_url, "desktop ready");
    Ok(desktop)
}

/// What the control endpoint serves besides credentials: takeovers and the viewer.
struct ControlRoutes {
    takeovers: crate::takeover::TakeoverManager,
    viewer: crate::viewer::ViewerConfig,
}

/// The control endpoint bound, its token read, not yet served.
struct BoundControl {
    listener: tokio::net::TcpListener,
    token: crate::platform::control::BearerToken,
    public_key: crate::keys::SandboxPublicKey,
    /// The base of viewer URLs: `--public-url`, else `http://` and the bound address.
    public_url: String,
    /// `--control-max-connections`.
    max_connections: usize,
}

async fn bind_control(
    control: &crate::config::ControlSettings,
    public_key: crate::keys::SandboxPublicKey,
) -> Result<BoundControl, BootError> {
    use crate::platform::control::{self, ControlError};
    let token_file = control.token_file.clone();
    let token = blocking(move || control::BearerToken::load(&token_file))
        .await
        .map_err(|e| {
            // As for a key: a file that is not there or cannot be read is missing input; one
            // that is there but open to others or not a token is a bad configuration.
            let code = match e {
                ControlError::TokenRead { .. } => ExitCode::NoInput,
                _ => ExitCode::Config,
            };
            BootError::from_error(code, "--control-token-file", &e)
        })?;
    let listener = control::bind(control.listen)
        .await
        .map_err(|e| BootError::from_error(ExitCode::Os, "--control-listen", &e))?;
    let public_url = match &control.public_url {
        Some(url) => url.clone(),
        None => {
            let bound = listener
                .local_addr()
                .map_err(|e| BootError::from_error(ExitCode::Os, "--control-listen", &e))?;
            format!("http://{bound}")
        }
    };
    Ok(BoundControl {
        listener,
        token,
        public_key,
        public_url,
        max_connections: control.max_connections,
    })
}

fn serve_control(
    bound: BoundControl,
    sandbox_id: &str,
    store: &Arc<crate::store::Store>,
    routes: ControlRoutes,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    use crate::platform::control;
    let mut state = control::ControlState::new(
        store.clone(),
        bound.token,
        sandbox_id.to_string(),
        bound.public_key,
    );
    state.takeovers = Some(routes.takeovers);
    state.viewer = routes.viewer;
    state.limits.max_connections = bound.max_connections;
    let (limits, token) = (state.limits, state.token.clone());
    let router = control::router(state);
    tasks.spawn(control::serve(
        bound.listener,
        router,
        limits,
        Some(token),
        stop.clone(),
    ));
}

impl Daemon {
    /// Starts the agent (or serves until a signal), then shuts down in reverse order.
    async fn serve(self, mut signals: crate::agent::Signals) -> u8 {
        crate::telemetry::notify_ready();
        info!("ready");
        let code = if self.config.agent_argv.is_empty() {
            let signal = signals.recv_stop().await;
            info!(%signal, "stop signal received");
            ExitCode::Success.code()
        } else {
            self.run_agent(signals).await
        };
        crate::telemetry::notify_stopping();
        self.started.shutdown().await;
        code
    }

    async fn run_agent(&self, signals: crate::agent::Signals) -> u8 {
        let cdp_url = self.started.desktop.as_ref().map(|d| d.cdp().http_url);
        // The snapshot only for this block: held across the agent's whole run, it would
        // keep this version's secrets (every connect body, every env value) in memory long
        // after a newer bundle replaced or withdrew them.
        let env = {
            let snapshot = self.store.snapshot();
            let no_env = Vec::new();
            let credentials = snapshot.as_ref().map(|m| &m.env).unwrap_or(&no_env);
            let plan = crate::agent::EnvPlan {
                socket: &self.config.socket,
                credentials_dir: &self.config.credentials_dir,
                browser_cdp_url: cdp_url.as_deref(),
                credentials,
                user: self.agent_user.as_ref(),
            };
            crate::agent::build_env(std::env::vars_os(), &plan)
        };
        let env = match env {
            Ok(env) => env,
            Err(e) => {
                let error = crate::api::error::error_chain(&e);
                error!(%error, "cannot build the agent's environment");
                return self.agent_not_run(&e);
            }
        };
        let spec = crate::agent::AgentSpec {
            argv: self.config.agent_argv.clone(),
            user: self.agent_user.clone(),
            env,
            cwd: None,
            // `dev` in a shell: the agent may read the terminal (a sandbox has none).
            take_terminal: true,
        };
        let stop = self.started.stop.child_token();
        match crate::agent::run(spec, signals, stop, self.config.stop_timeout).await {
            Ok(exit) => {
                info!(code = exit.code, signal = exit.signal, "agent exited");
                self.store.events().publish(PlatformEvent::AgentExited {
                    code: exit.code,
                    error: None,
                });
                exit.code as u8
            }
            Err(e) => {
                // With its cause: "starting agent command failed" alone does not say that
                // execve said E2BIG or EACCES.
                let error = crate::api::error::error_chain(&e);
                error!(%error, "agent could not run");
                self.agent_not_run(&e)
            }
        }
    }

    /// The agent could not be started (or waited for): the platform is told as for an
    /// exit, with the daemon's exit code and why (a fixed text: no argv, user or variable
    /// in it), before the stream ends with the shutdown. Returns that exit code.
    fn agent_not_run(&self, e: &crate::agent::AgentError) -> u8 {
        let code = e.exit_code().code();
        self.store.events().publish(PlatformEvent::AgentExited {
            code: i32::from(code),
            error: Some(crate::platform::events::EventError {
                code: e.public_code(),
                message: e.public_message(),
            }),
        });
        code
    }
}

impl Started {
    /// Undoes what started, backwards: takeovers close (a live one ends, its viewers are
    /// cut; one requested from here on is refused), the servers stop (the socket file is
    /// removed), then the desktop (Chromium, the VNC server, the display), then the
    /// credential files and env file are wiped.
    async fn shutdown(self) {
        // Before the servers stop: a request still in flight in their grace is refused
        // `shutting_down`, where it would otherwise start a takeover nothing ends.
        if let Some(takeovers) = &self.takeovers {
            takeovers.shutdown().await;
        }
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            warn!("tasks still running after 5 s; exiting anyway");
        }
        if let Some(desktop) = self.desktop {
            // Awaited even if a handle is still held elsewhere (a takeover's watcher
            // that has not yet seen its cancellation): the children stop in order, and
            // x11vnc's shared memory is removed, before the runtime goes.
            desktop.shutdown().await;
        }
        if let Some(store) = self.store {
            if let Err(e) = store.wipe().await {
                error!(%e, "wiping credentials failed");
            }
        }
        if let Some(socket) = self.socket {
            if let Err(e) = std::fs::remove_file(&socket) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(%e, "removing the socket failed");
                }
            }
        }
        info!("stopped");
        // The last thing released (the process's exit would release it as well).
        drop(self.instance);
    }
}
