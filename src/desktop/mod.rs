//! Supervising the desktop: a display server, a VNC server and Chromium on that display.
//!
//! Start order is display → VNC → Chromium, each ready only after a protocol probe (an X11
//! connection setup, an RFB banner, CDP `/json/version` plus a chromiumoxide session).
//! One supervisor task restarts what dies with exponential backoff (a dead display takes
//! the VNC server and Chromium with it) and gives up after too many restarts in a window.
//! A child that stops answering its probe for the hang timeout is killed and restarted the
//! same way: a hung process never exits.
//! Chromium keeps its profile across restarts, so a user's login survives a crash.
//!
//! Submodules: `child` (spawn, wait, drain, stop one process), `probe` (the readiness
//! protocols), `launch` (each child's command line and start), `cdp` (CDP commands),
//! `front` (which tab a takeover shows),
//! `supervisor` (the restart loop), `liveness` (the probes that find a hung child),
//! `xauth` (the display's cookie), `as_user` (acting as the desktop's user).

mod as_user;
mod cdp;
mod child;
mod front;
mod launch;
mod liveness;
mod probe;
mod supervisor;
mod xauth;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::platform::events::EventBus;
use crate::relay::VncTarget;

pub use launch::MAX_RUN_DIR_BYTES;

/// Which programs provide the display and the VNC server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayBackend {
    /// TigerVNC's Xvnc: display and VNC server in one process, RFB on a 0600 Unix socket
    /// in the run dir and no TCP port at all. The default.
    Xvnc { xvnc: PathBuf },
    /// Xvfb plus x11vnc, RFB on a 0600 Unix socket in the run dir (`-unixsock`) and no TCP
    /// port: x11vnc is refused if it holds a TCP listener once it serves RFB.
    XvfbX11vnc { xvfb: PathBuf, x11vnc: PathBuf },
}

impl Default for DisplayBackend {
    fn default() -> Self {
        DisplayBackend::Xvnc {
            xvnc: PathBuf::from("/usr/bin/Xvnc"),
        }
    }
}

/// The virtual screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screen {
    pub width: u16,
    pub height: u16,
    pub depth: u8,
}

impl Default for Screen {
    fn default() -> Self {
        Screen {
            width: 1280,
            height: 800,
            depth: 24,
        }
    }
}

/// The user the children run as. `None` in `DesktopConfig` runs them as the daemon's
/// own user. With `Some`, every child gets exactly this uid and gid and no supplementary
/// groups; the run dir, the profile and Chromium's HOME are owned by it (see
/// `DesktopError::ForeignDir`), and their parents must be traversable by it. The daemon
/// (root) still reaches the children's sockets and signals them; what only their owner
/// may do without CAP_SYS_PTRACE or CAP_SYS_ADMIN, it does as this user (`as_user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Whether Chromium runs with its own (namespace) sandbox. It needs a non-root user who
/// may create a user namespace: the setuid helper is not shipped, and Chromium refuses its
/// sandbox as root. Without it Chromium runs with `--no-sandbox`, isolated only by the
/// sandbox around the daemon and the user switch (`run_as`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChromiumSandbox {
    /// On when Chromium's user is not root and can create a user namespace (probed at
    /// start); otherwise off, with a warning.
    #[default]
    Auto,
    /// Required: the desktop does not start without it.
    On,
    /// Always `--no-sandbox`.
    Off,
}

/// How long each child may take to pass its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartTimeouts {
    pub display: Duration,
    pub vnc: Duration,
    pub chromium: Duration,
}

impl Default for StartTimeouts {
    fn default() -> Self {
        // Generous: a 2-core sandbox under load starts Chromium in seconds, not 1.
        StartTimeouts {
            display: Duration::from_secs(10),
            vnc: Duration::from_secs(10),
            chromium: Duration::from_secs(30),
        }
    }
}

/// When to restart and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Backoff before the first restart in a window; doubled for each further one.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// More restarts of one child than this within `window` → `Failed`.
    pub max_restarts: u32,
    pub window: Duration,
    /// How long a failed desktop stays stopped before it is started afresh, all of it,
    /// with its restart counts cleared; `None` leaves it failed for good. A run lasts
    /// hours: a burst of crashes (memory pressure, a broken page reloaded in a loop)
    /// should not leave the agent without a browser for the rest of it.
    pub retry_failed_after: Option<Duration>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(300),
            retry_failed_after: Some(Duration::from_secs(300)),
        }
    }
}

/// Everything the desktop needs; `Default` is the production layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesktopConfig {
    pub backend: DisplayBackend,
    pub screen: Screen,
    pub chromium: PathBuf,
    /// Persistent `--user-data-dir`: cookies (the user's logins) live here.
    pub profile_dir: PathBuf,
    pub start_url: String,
    /// Sockets (Xvnc's RFB socket), the display's cookie, Chromium's TMPDIR (`tmp`, made
    /// afresh for each launch, removed when the desktop stops) and Chromium's HOME when
    /// `chromium_home` is unset. At most [`MAX_RUN_DIR_BYTES`] long.
    pub run_dir: PathBuf,
    /// Chromium's HOME (crashpad writes under it); default `{run_dir}/chromium-home`.
    pub chromium_home: Option<PathBuf>,
    /// Chromium's own sandbox; `Desktop::start` resolves `Auto` to `On` or `Off` once.
    pub chromium_sandbox: ChromiumSandbox,
    /// Appended to Chromium's command line (tests add `--host-resolver-rules=...`).
    pub chromium_extra_args: Vec<String>,
    /// Chromium's CDP port on 127.0.0.1. 0: Chromium binds a free one on the first start
    /// (read back from `DevToolsActivePort`), and restarts keep it, so the URL the agent
    /// got in `GREXAL_BROWSER_CDP_URL` stays valid.
    pub cdp_port: u16,
    pub restart: RestartPolicy,
    pub run_as: Option<RunAs>,
    pub start_timeouts: StartTimeouts,
    /// SIGTERM → SIGKILL grace when stopping a child.
    pub stop_grace: Duration,
    /// A child that fails its probe (the one readiness runs) for this long while the
    /// desktop is ready is hung: it is killed and restarted as if it had crashed. `None`:
    /// never probed once started.
    pub hang_timeout: Option<Duration>,
}

impl Default for DesktopConfig {
    fn default() -> Self {
        DesktopConfig {
            backend: DisplayBackend::default(),
            screen: Screen::default(),
            chromium: PathBuf::from("/usr/bin/chromium"),
            profile_dir: PathBuf::from("/var/lib/grexal/chromium-profile"),
            start_url: "about:blank".into(),
            run_dir: PathBuf::from("/run/grexal/desktop"),
            chromium_home: None,
            chromium_sandbox: ChromiumSandbox::Auto,
            chromium_extra_args: Vec::new(),
            cdp_port: 0,
            restart: RestartPolicy::default(),
            run_as: None,
            start_timeouts: StartTimeouts::default(),
            stop_grace: Duration::from_secs(5),
            // Generous: a loaded 2-core sandbox may be slow to answer, and a false
            // positive restarts the user's browser.
            hang_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl DesktopConfig {
    pub(crate) fn chromium_home(&self) -> PathBuf {
        self.chromium_home
            .clone()
            .unwrap_or_else(|| self.run_dir.join("chromium-home"))
    }

    /// Chromium's TMPDIR, where its profile lock's socket lives.
    pub(crate) fn chromium_tmp(&self) -> PathBuf {
        self.run_dir.join(launch::CHROMIUM_TMP)
    }
}

/// Where CDP answers (loopback only). Changes when Chromium restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdpEndpoint {
    pub http_url: String,
    pub ws_url: String,
}

impl CdpEndpoint {
    /// The port of `http_url` (always `http://127.0.0.1:{port}`, built by `start_chromium`).
    pub(crate) fn port(&self) -> u16 {
        self.http_url
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .expect("start_chromium builds http_url with a port")
    }
}

/// The supervisor's view of the desktop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesktopStatus {
    Starting,
    Ready,
    /// `child` died (or failed to come back) and is being restarted.
    Restarting {
        child: String,
    },
    /// Gave up; nothing of the desktop is running.
    Failed {
        reason: String,
    },
}

/// The pids of the running children (for diagnostics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesktopPids {
    pub display: u32,
    /// The separate VNC server (x11vnc); `None` with Xvnc, which is the display.
    pub vnc: Option<u32>,
    pub chromium: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    #[error("cannot start {child} ({program})")]
    Spawn {
        child: &'static str,
        /// The program run, so a missing package or a wrong path is plain.
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{child} exited while starting: {status}")]
    ExitedDuringStart { child: &'static str, status: String },
    #[error("{child} did not become ready within {timeout:?}")]
    ProbeTimeout {
        child: &'static str,
        timeout: Duration,
        #[source]
        last: Option<Box<DesktopError>>,
    },
    #[error("probing {child} failed")]
    Probe {
        child: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{child} answered its probe wrongly: {reason}")]
    ProbeRejected { child: &'static str, reason: String },
    #[error("chromium's sandbox is required (--chromium-sandbox=on) but unavailable: {reason}")]
    SandboxUnavailable { reason: String },
    #[error("the chromium profile is in use by live process {pid}")]
    ProfileInUse { pid: i32 },
    /// A non-empty desktop directory owned by another user than `run_as`.
    #[error("{dir} belongs to uid {owner}, not to the desktop's user {user}, and is not empty")]
    ForeignDir { dir: PathBuf, owner: u32, user: u32 },
    #[error("the desktop run dir {dir} is {len} bytes; at most {max} leave Chromium's socket in it (tmp/org.chromium.Chromium.XXXXXX/SingletonSocket) short enough for a Unix socket address (shorten --desktop-run-dir)", dir = dir.display())]
    RunDirTooLong {
        dir: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("create desktop directory {}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("CDP command failed")]
    Cdp {
        #[source]
        source: chromiumoxide::error::CdpError,
    },
    /// Chromium took the connection but did not answer (a hung or stopped browser).
    #[error("CDP {what} did not answer within {after:?}")]
    CdpTimeout { what: &'static str, after: Duration },
    #[error("chromium has no page target")]
    NoPage,
    #[error("the desktop has failed: {reason}")]
    Failed { reason: String },
}

impl DesktopError {
    /// The child this error is about, for restart accounting.
    pub(crate) fn child(&self) -> &'static str {
        match self {
            DesktopError::Spawn { child, .. }
            | DesktopError::ExitedDuringStart { child, .. }
            | DesktopError::ProbeTimeout { child, .. }
            | DesktopError::Probe { child, .. }
            | DesktopError::ProbeRejected { child, .. } => child,
            DesktopError::ProfileInUse { .. }
            | DesktopError::SandboxUnavailable { .. }
            | DesktopError::Cdp { .. }
            | DesktopError::CdpTimeout { .. }
            | DesktopError::NoPage => "chromium",
            DesktopError::Io { .. }
            | DesktopError::Dir { .. }
            | DesktopError::RunDirTooLong { .. }
            | DesktopError::ForeignDir { .. }
            | DesktopError::Failed { .. } => "desktop",
        }
    }
}

/// What the supervisor publishes after every (re)start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Current {
    pub(crate) display: u32,
    pub(crate) vnc: VncTarget,
    pub(crate) cdp: CdpEndpoint,
    pub(crate) pids: DesktopPids,
}

/// A running desktop. Dropping it stops the children (without waiting); prefer
/// `shutdown`.
#[derive(Debug)]
pub struct Desktop {
    current: watch::Receiver<Current>,
    status: watch::Receiver<DesktopStatus>,
    screen: Screen,
    cancel: CancellationToken,
    /// `None` once a `shutdown` has seen the supervisor end. Behind a lock so `shutdown`
    /// takes `&self`: whoever owns the desktop stops it, and waits for the stop, while
    /// others (a takeover's watcher, say) still hold a handle on it.
    supervisor: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Desktop {
    /// Starts display, VNC server and Chromium in order, each after the previous one
    /// passed its probe, then supervises them until `stop` is cancelled or `shutdown`.
    /// A failed start stops whatever had started.
    pub async fn start(
        mut cfg: DesktopConfig,
        events: EventBus,
        stop: CancellationToken,
    ) -> Result<Desktop, DesktopError> {
        let span = tracing::info_span!("desktop");
        let started = tokio::time::Instant::now();
        let (status_tx, status) = watch::channel(DesktopStatus::Starting);
        // Checked before anything is created or spawned.
        launch::check_run_dir(&cfg)?;
        supervisor::prepare_dirs(&cfg)?;
        // Once, not per restart: a restarted Chromium keeps the mode it started with.
        cfg.chromium_sandbox = launch::resolve_chromium_sandbox(&cfg)
            .instrument(span.clone())
            .await?;
        let auth = xauth::XAuthority::create(&cfg.run_dir, cfg.run_as)?;
        let mut running = supervisor::Running::new(auth);
        if let Err(error) = running.start_missing(&cfg).instrument(span.clone()).await {
            running.stop_all(&cfg).await;
            return Err(error);
        }
        let Some(now) = running.current() else {
            running.stop_all(&cfg).await;
            return Err(DesktopError::Failed {
                reason: "start left a child missing".into(),
            });
        };
        // Restarts reuse the port Chromium bound. Choosing a free port here and handing it
        // over instead leaves a window in which another socket can take it, and Chromium
        // then runs without CDP.
        if cfg.cdp_port == 0 {
            cfg.cdp_port = now.cdp.port();
        }
        tracing::info!(parent: &span, display = now.display, elapsed_ms = started.elapsed().as_millis() as u64, "desktop ready");
        let (current_tx, current) = watch::channel(now);
        status_tx.send_replace(DesktopStatus::Ready);
        let cancel = stop.child_token();
        let screen = cfg.screen;
        let task = supervisor::Supervisor {
            cfg,
            events,
            running,
            status: status_tx,
            current: current_tx,
            cancel: cancel.clone(),
        };
        let supervisor = tokio::spawn(task.run().instrument(span));
        Ok(Desktop {
            current,
            status,
            screen,
            cancel,
            supervisor: tokio::sync::Mutex::new(Some(supervisor)),
        })
    }

    /// The current CDP endpoint (it changes when Chromium restarts).
    pub fn cdp(&self) -> CdpEndpoint {
        self.current.borrow().cdp.clone()
    }

    /// Whether `cdp` is the endpoint of the Chromium running now: its `/json/version`
    /// names the same browser WebSocket URL. The port outlives a restart, the URL's
    /// `/devtools/browser/<id>` does not; between a crash and the supervisor's next
    /// `Restarting`, `cdp()` still names the dead browser. Unbounded: a hung Chromium takes
    /// the connection and never answers, so the caller sets the time.
    pub async fn serves(&self, cdp: &CdpEndpoint) -> bool {
        probe::cdp_version(cdp.port())
            .await
            .is_ok_and(|ws_url| ws_url == cdp.ws_url)
    }

    /// Where the VNC server listens now.
    pub fn vnc_target(&self) -> VncTarget {
        self.current.borrow().vnc.clone()
    }

    /// The X display, `":N"` (the number may change if the display restarts).
    pub fn display(&self) -> String {
        format!(":{}", self.current.borrow().display)
    }

    pub fn pids(&self) -> DesktopPids {
        self.current.borrow().pids
    }

    pub fn status(&self) -> watch::Receiver<DesktopStatus> {
        self.status.clone()
    }

    /// Shows a page maximised (full screen without a window manager) and in front, so the
    /// user sees the login page on the VNC view: a tab on `login_url`'s site if there is one,
    /// else the tab already showing (see `front`), never an arbitrary one.
    pub async fn bring_browser_to_front(
        &self,
        login_url: Option<&str>,
    ) -> Result<(), DesktopError> {
        if let DesktopStatus::Failed { reason } = &*self.status.borrow() {
            return Err(DesktopError::Failed {
                reason: reason.clone(),
            });
        }
        let ws_url = self.cdp().ws_url;
        cdp::bring_to_front(&ws_url, self.screen, login_url).await
    }

    /// Stops Chromium, the VNC server and the display, in that order (SIGTERM, then
    /// SIGKILL after the grace period), waiting on each, whoever else still holds the
    /// desktop: a stop left to the last handle's drop is not awaited, and the runtime's
    /// teardown then kills the children instead (SIGKILL to the leader alone, x11vnc's
    /// shared memory left behind). A second call waits for the same stop.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let mut supervisor = self.supervisor.lock().await;
        if let Some(task) = supervisor.as_mut() {
            // Awaited through `&mut`: a call cut short leaves the handle for the next one.
            let ended = task.await;
            *supervisor = None;
            if let Err(error) = ended {
                tracing::error!(%error, "desktop supervisor panicked");
            }
        }
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
