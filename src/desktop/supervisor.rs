//! The restart loop: wait for any child to exit or hang (`liveness`; a hung child is
//! killed first), work out what must restart (everything if the display is gone), back
//! off, restart, and give up after too many restarts: stop everything, then start it all
//! afresh after a pause (`RestartPolicy::retry_failed_after`).

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::child::{ChildHandle, Exit};
use super::launch::{self, Display};
use super::liveness::{self, Hung, Probe, Watched};
use super::xauth::XAuthority;
use super::{
    CdpEndpoint, Current, DesktopConfig, DesktopError, DesktopPids, DesktopStatus, DisplayBackend,
};
use crate::platform::events::{EventBus, PlatformEvent};
use crate::relay::VncTarget;

/// How long a display probe may take when deciding whether a dead child took the
/// display with it.
const DISPLAY_CHECK: Duration = Duration::from_secs(2);

/// Creates the run dir, the profile and Chromium's HOME (0700, owned by `run_as`).
pub(crate) fn prepare_dirs(cfg: &DesktopConfig) -> Result<(), DesktopError> {
    for dir in [&cfg.run_dir, &cfg.profile_dir, &cfg.chromium_home()] {
        make_private_dir(dir, cfg)?;
    }
    Ok(())
}

/// With `run_as`, a directory that already exists must belong to that user, or be empty
/// (an image may create the profile dir as root ahead of time): it is then chowned. A
/// non-empty one of another owner is refused rather than chowned, since its contents
/// (e.g. a profile written by root) would stay unwritable for the browser, and chowning
/// them recursively as root is a symlink-following hazard in a dir the agent could write.
///
/// The parents are configuration (flags or defaults) and are taken by path; the directory
/// itself is opened with `O_NOFOLLOW` and checked, listed, chowned and chmodded through
/// that descriptor, never by path again, so a symlink swapped in at its name (the run dir
/// belongs to the agent's user) fails the open instead of handing root's chown and chmod
/// whatever it points to.
fn make_private_dir(dir: &Path, cfg: &DesktopConfig) -> Result<(), DesktopError> {
    use crate::inject::fsops;
    use std::os::fd::AsRawFd;
    // The path is named: under `run` it is a flag's value or a default the operator must
    // find to fix (a read-only /run, a missing parent).
    let io = |source| DesktopError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let errno = |e: nix::errno::Errno| io(fsops::errno(e));
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "names no directory of its own (/ or a path ending in ..)",
        )));
    };
    // A bare relative name is in the working directory.
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    // Missing parents 0755: the `run_as` user must traverse them.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(io)?;
    let parent = fsops::open_path_dir(parent).map_err(errno)?;
    let created = match fsops::mkdir(parent.as_raw_fd(), name) {
        Ok(()) => true,
        Err(nix::errno::Errno::EEXIST) => false,
        Err(e) => return Err(errno(e)),
    };
    let opened = match fsops::open_dir(parent.as_raw_fd(), name) {
        Ok(fd) => fd,
        // O_NOFOLLOW | O_DIRECTORY answers ELOOP or ENOTDIR for a symlink.
        Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a directory (a symlink is not followed)",
            )))
        }
        Err(e) => return Err(errno(e)),
    };
    if let Some(user) = cfg.run_as {
        let owner = fsops::fstat(&opened).map_err(errno)?.st_uid;
        if !created && owner != user.uid {
            let empty = fsops::list(opened.as_raw_fd()).map_err(errno)?.is_empty();
            if !empty {
                return Err(DesktopError::ForeignDir {
                    dir: dir.to_path_buf(),
                    owner,
                    user: user.uid,
                });
            }
        }
        let owner = crate::inject::Owner {
            uid: user.uid,
            gid: user.gid,
        };
        fsops::chown(&opened, Some(owner)).map_err(errno)?;
    }
    // An existing directory keeps its mode from before, and the umask may have taken bits
    // from mkdir's: set it.
    fsops::chmod(&opened, 0o700).map_err(errno)?;
    Ok(())
}

/// Makes Chromium's TMPDIR (`{run_dir}/tmp`) afresh: whatever an earlier launch left in
/// it (a killed daemon's Chromium included) removed, then an empty directory, 0700 and
/// owned by Chromium's user. Returns its path.
///
/// The run dir is that user's, so while the desktop runs (the agent, as that user, too)
/// the name can be swapped for a symlink at any moment: `remove_dir_all` removes a symlink
/// rather than following it (and follows none inside), `mkdir` fails on one, and the
/// owner and mode are set through a descriptor opened with `O_NOFOLLOW`, never by path,
/// so nothing a planted link points to is removed, chowned or chmodded.
pub(crate) fn fresh_chromium_tmp(cfg: &DesktopConfig) -> Result<PathBuf, DesktopError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = cfg.chromium_tmp();
    let io = |source| DesktopError::Dir {
        dir: dir.clone(),
        source,
    };
    remove_tree(&dir).map_err(io)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io)?;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&dir)
        .map_err(io)?;
    if let Some(user) = cfg.run_as {
        std::os::unix::fs::fchown(&opened, Some(user.uid), Some(user.gid)).map_err(io)?;
    }
    // The umask may have taken bits from mkdir's mode; none may be added either.
    opened
        .set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(io)?;
    Ok(dir)
}

/// Removes Chromium's TMPDIR, when Chromium stopped (and the desktop with it): its profile
/// lock's directory, whose socket it still listened on until then, and whatever else it
/// left. A failure is logged: the next launch empties it anyway.
pub(crate) fn remove_chromium_tmp(cfg: &DesktopConfig) {
    let dir = cfg.chromium_tmp();
    if let Err(error) = remove_tree(&dir) {
        warn!(dir = %dir.display(), %error, "could not remove chromium's temp dir");
    }
}

/// Removes `path` whatever it is (a directory with its contents, a symlink or a file,
/// never what a symlink points to); nothing there is fine.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The children that are up. Missing ones are started by `start_missing`, in order.
pub(crate) struct Running {
    /// The display's cookie, for every start and probe of this desktop.
    auth: XAuthority,
    display: Option<Display>,
    x11vnc: Option<(ChildHandle, VncTarget)>,
    chromium: Option<(ChildHandle, CdpEndpoint)>,
}

/// What a restart stops and starts again. The display takes everything on it along;
/// x11vnc and Chromium are independent clients of the display, each restarted alone (a
/// VNC server's crash does not cost the agent its browser, nor the browser's the viewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Display,
    Vnc,
    Chromium,
}

impl Running {
    /// Nothing running yet; every child will get `auth`.
    pub(crate) fn new(auth: XAuthority) -> Running {
        Running {
            auth,
            display: None,
            x11vnc: None,
            chromium: None,
        }
    }

    pub(crate) async fn start_missing(&mut self, cfg: &DesktopConfig) -> Result<(), DesktopError> {
        if self.display.is_none() {
            self.display = Some(launch::start_display(cfg, &self.auth).await?);
        }
        let number = self.display.as_ref().map_or(0, |d| d.number);
        if let DisplayBackend::XvfbX11vnc { x11vnc, .. } = &cfg.backend {
            if self.x11vnc.is_none() {
                self.x11vnc = Some(launch::start_x11vnc(cfg, x11vnc, number, &self.auth).await?);
            }
        }
        if self.chromium.is_none() {
            self.chromium = Some(launch::start_chromium(cfg, number, &self.auth).await?);
        }
        Ok(())
    }

    pub(crate) fn current(&self) -> Option<Current> {
        let display = self.display.as_ref()?;
        let (chromium, cdp) = self.chromium.as_ref()?;
        let vnc = match (&display.vnc, &self.x11vnc) {
            (Some(target), _) => target.clone(),
            (None, Some((_, target))) => target.clone(),
            (None, None) => return None,
        };
        Some(Current {
            display: display.number,
            vnc,
            cdp: cdp.clone(),
            pids: DesktopPids {
                display: display.child.pid,
                vnc: self.x11vnc.as_ref().map(|(c, _)| c.pid),
                chromium: chromium.pid,
            },
        })
    }

    /// Stops what a restart at `level` replaces, last-started first.
    async fn stop_for(&mut self, level: Level, cfg: &DesktopConfig) {
        let grace = cfg.stop_grace;
        if matches!(level, Level::Display | Level::Chromium) {
            if let Some((child, _)) = self.chromium.take() {
                child.stop(grace).await;
            }
            // Whether it ran or failed to start: what it left in its TMPDIR goes with it.
            remove_chromium_tmp(cfg);
        }
        if matches!(level, Level::Display | Level::Vnc) {
            if let Some((child, _)) = self.x11vnc.take() {
                child.stop(grace).await;
            }
        }
        if level == Level::Display {
            if let Some(display) = self.display.take() {
                display.child.stop(grace).await;
            }
        }
    }

    pub(crate) async fn stop_all(&mut self, cfg: &DesktopConfig) {
        self.stop_for(Level::Display, cfg).await;
    }

    /// The running children and their probes, in start order. With Xvnc the display is
    /// also the VNC server, and answers both.
    fn watched(&self) -> Vec<Watched> {
        let mut watched = Vec::with_capacity(3);
        if let Some(display) = &self.display {
            let mut probes = vec![Probe::X11(display.number)];
            probes.extend(display.vnc.clone().map(Probe::Rfb));
            watched.push(Watched {
                child: display.child.name,
                pid: display.child.pid,
                probes,
            });
        }
        if let Some((child, target)) = &self.x11vnc {
            watched.push(Watched {
                child: child.name,
                pid: child.pid,
                probes: vec![Probe::Rfb(target.clone())],
            });
        }
        if let Some((child, cdp)) = &self.chromium {
            watched.push(Watched {
                child: child.name,
                pid: child.pid,
                probes: vec![Probe::Cdp(cdp.port())],
            });
        }
        watched
    }

    /// SIGKILLs the hung child (see `ChildHandle::kill`).
    async fn kill(&self, hung: &Hung) {
        let handle = [
            self.display.as_ref().map(|d| &d.child),
            self.x11vnc.as_ref().map(|(c, _)| c),
            self.chromium.as_ref().map(|(c, _)| c),
        ]
        .into_iter()
        .flatten()
        .find(|c| c.pid == hung.pid);
        if let Some(child) = handle {
            child.kill().await;
        }
    }
}

/// Why the supervisor woke up.
enum Failure {
    Exited(&'static str, u32, Exit),
    Hung(Hung),
}

/// Resolves with the child's exit; never, if there is no child.
async fn exit_of(child: Option<&ChildHandle>) -> Failure {
    match child {
        Some(child) => Failure::Exited(child.name, child.pid, child.wait().await),
        None => std::future::pending().await,
    }
}

/// Resolves when a running child is hung; never, with no hang timeout.
async fn hung_of(running: &Running, hang: Option<Duration>) -> Failure {
    match hang {
        Some(hang) => {
            Failure::Hung(liveness::until_hung(&running.watched(), &running.auth, hang).await)
        }
        None => std::future::pending().await,
    }
}

pub(crate) struct Supervisor {
    pub(crate) cfg: DesktopConfig,
    pub(crate) events: EventBus,
    pub(crate) running: Running,
    pub(crate) status: watch::Sender<DesktopStatus>,
    pub(crate) current: watch::Sender<Current>,
    pub(crate) cancel: CancellationToken,
}

impl Supervisor {
    pub(crate) async fn run(mut self) {
        let mut recent: HashMap<&'static str, VecDeque<Instant>> = HashMap::new();
        let mut totals: HashMap<&'static str, u32> = HashMap::new();
        'supervise: loop {
            // Probing starts afresh (no failures counted) after every restart.
            let failure = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break 'supervise,
                exit = exit_of(self.running.display.as_ref().map(|d| &d.child)) => exit,
                exit = exit_of(self.running.x11vnc.as_ref().map(|(c, _)| c)) => exit,
                exit = exit_of(self.running.chromium.as_ref().map(|(c, _)| c)) => exit,
                hung = hung_of(&self.running, self.cfg.hang_timeout) => hung,
            };
            let (mut failed, mut reason) = match failure {
                Failure::Exited(child, pid, exit) => {
                    warn!(child, pid, status = %exit, "child exited");
                    (child, format!("{child} exited: {exit}"))
                }
                Failure::Hung(hung) => {
                    warn!(
                        child = hung.child,
                        pid = hung.pid,
                        failures = hung.failures,
                        silent_s = hung.silent.as_secs(),
                        last = %hung.last,
                        "child stopped answering its probes, killing it"
                    );
                    self.running.kill(&hung).await;
                    (hung.child, hung.reason())
                }
            };
            loop {
                let level = self.level_for(failed).await;
                if level == Level::Display {
                    failed = "display";
                }
                let window = recent.entry(failed).or_default();
                let now = Instant::now();
                while window
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.cfg.restart.window)
                {
                    window.pop_front();
                }
                window.push_back(now);
                let in_window = window.len() as u32;
                if in_window > self.cfg.restart.max_restarts {
                    error!(child = failed, restarts = in_window - 1, %reason, "too many restarts, giving up");
                    self.running.stop_all(&self.cfg).await;
                    self.status.send_replace(DesktopStatus::Failed {
                        reason: reason.clone(),
                    });
                    self.events.publish(PlatformEvent::DesktopFailed {
                        child: failed.to_owned(),
                        reason: reason.clone(),
                    });
                    let Some(pause) = self.cfg.restart.retry_failed_after else {
                        return;
                    };
                    // Not for good: after a pause, everything is started afresh (the display
                    // is gone, so `level_for` says all of it), counted as a first restart.
                    info!(
                        retry_in_s = pause.as_secs(),
                        "the desktop is stopped; it is started afresh after a pause"
                    );
                    tokio::select! {
                        _ = self.cancel.cancelled() => break 'supervise,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    recent.clear();
                    reason = format!(
                        "started afresh {} s after the desktop failed: {reason}",
                        pause.as_secs()
                    );
                    continue;
                }
                self.status.send_replace(DesktopStatus::Restarting {
                    child: failed.to_owned(),
                });
                let backoff = backoff(&self.cfg, in_window);
                info!(
                    child = failed,
                    backoff_ms = backoff.as_millis() as u64,
                    "restarting"
                );
                tokio::select! {
                    _ = self.cancel.cancelled() => break 'supervise,
                    _ = tokio::time::sleep(backoff) => {}
                }
                self.running.stop_for(level, &self.cfg).await;
                // A start abandoned on cancellation drops its child handle, which kills it.
                let started = tokio::select! {
                    _ = self.cancel.cancelled() => break 'supervise,
                    started = self.running.start_missing(&self.cfg) => started,
                };
                match started {
                    Ok(()) => {
                        let restarts = totals.entry(failed).or_default();
                        *restarts += 1;
                        if let Some(now) = self.running.current() {
                            self.current.send_replace(now);
                        }
                        self.status.send_replace(DesktopStatus::Ready);
                        info!(child = failed, restarts = *restarts, "restarted");
                        self.events.publish(PlatformEvent::BrowserRestarted {
                            child: failed.to_owned(),
                            restarts: *restarts,
                            reason,
                        });
                        break;
                    }
                    Err(error) => {
                        warn!(child = error.child(), %error, "restart failed");
                        failed = error.child();
                        reason = format!("{failed} failed to restart: {error}");
                    }
                }
            }
        }
        self.running.stop_all(&self.cfg).await;
        info!("desktop stopped");
    }

    /// What must restart after `failed` died: if the display no longer answers, all of it.
    async fn level_for(&self, failed: &str) -> Level {
        let Some(display) = &self.running.display else {
            return Level::Display;
        };
        if failed == "display" || display.child.exited().is_some() {
            return Level::Display;
        }
        let alive = tokio::time::timeout(
            DISPLAY_CHECK,
            super::probe::x11(display.number, &self.running.auth),
        )
        .await;
        if !matches!(alive, Ok(Ok(_))) {
            return Level::Display;
        }
        match failed {
            "vnc" => Level::Vnc,
            _ => Level::Chromium,
        }
    }
}

/// `initial * 2^(n-1)`, capped, for the n-th restart in the window.
fn backoff(cfg: &DesktopConfig, n: u32) -> Duration {
    let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
    cfg.restart
        .initial_backoff
        .saturating_mul(factor)
        .min(cfg.restart.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut cfg = DesktopConfig::default();
        cfg.restart.initial_backoff = Duration::from_millis(100);
        cfg.restart.max_backoff = Duration::from_millis(1000);
        let got: Vec<u64> = (1..=6)
            .map(|n| backoff(&cfg, n).as_millis() as u64)
            .collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&cfg, u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn chromiums_tmp_is_made_empty_and_private_and_a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = DesktopConfig {
            run_dir: dir.path().join("run"),
            ..DesktopConfig::default()
        };
        std::fs::create_dir(&cfg.run_dir).expect("run dir");
        let tmp = cfg.chromium_tmp();
        // What an earlier launch left.
        std::fs::create_dir_all(tmp.join("org.chromium.Chromium.AAAAAA")).expect("left");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(fresh_chromium_tmp(&cfg).expect("fresh"), tmp);
        let meta = std::fs::symlink_metadata(&tmp).expect("tmp");
        assert!(meta.is_dir() && meta.mode() & 0o777 == 0o700, "{meta:?}");
        assert_eq!(std::fs::read_dir(&tmp).expect("read").count(), 0);

        // The name swapped for a link to a directory elsewhere: the link goes, what it
        // pointed to stays as it was.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("elsewhere");
        std::fs::write(elsewhere.join("keep"), b"").expect("keep");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::remove_dir(&tmp).expect("rmdir");
        std::os::unix::fs::symlink(&elsewhere, &tmp).expect("link");
        fresh_chromium_tmp(&cfg).expect("fresh over a link");
        assert!(std::fs::symlink_metadata(&tmp).expect("tmp").is_dir());
        assert!(elsewhere.join("keep").exists());
        let kept = std::fs::metadata(&elsewhere).expect("elsewhere");
        assert_eq!(kept.mode() & 0o777, 0o755);

        // Stopped: gone, and nothing there is no error.
        remove_chromium_tmp(&cfg);
        assert!(std::fs::symlink_metadata(&tmp).is_err());
        remove_chromium_tmp(&cfg);
    }
}
