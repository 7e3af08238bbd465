//! Starting each child and waiting until its probe passes: the display (Xvfb or Xvnc,
//! display number chosen by the server through `-displayfd`), x11vnc, Chromium.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tracing::{debug, info, warn};

use super::child::{pid_alive, ChildHandle};
use super::xauth::XAuthority;
use super::{probe, CdpEndpoint, ChromiumSandbox, DesktopConfig, DesktopError, DisplayBackend};
use crate::relay::VncTarget;

/// How often probes retry while a child starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// The children's whole environment: nothing of the daemon's leaks into them.
const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Longest `-displayfd` answer ("N\n").
const MAX_DISPLAYFD: usize = 16;
/// Chromium's profile lock files, removed only when their owner is gone.
const SINGLETON_FILES: [&str; 3] = ["SingletonLock", "SingletonSocket", "SingletonCookie"];

/// A started display server.
pub(crate) struct Display {
    pub(crate) child: ChildHandle,
    pub(crate) number: u32,
    /// With Xvnc the display server is also the VNC server.
    pub(crate) vnc: Option<VncTarget>,
}

fn base_command(cfg: &DesktopConfig, program: &Path) -> Command {
    let mut cmd = Command::new(program);
    // The run dir, not the daemon's cwd: an unprivileged child may not be able to enter
    // the daemon's (e.g. /root), and nothing should resolve paths against it anyway.
    cmd.env_clear()
        .env("PATH", CHILD_PATH)
        .current_dir(&cfg.run_dir);
    let user = cfg.run_as;
    let fd_limit = crate::spawn::fd_limit();
    let daemon = nix::unistd::getpid().as_raw();
    // SAFETY: between fork and exec only async-signal-safe calls are allowed: these are
    // plain system calls (close_range/fcntl, setgroups, setgid, setuid, sigaction,
    // sigprocmask, prctl, getppid) and nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            // First, so the hooks added after this one (`-displayfd`'s) can hand a child
            // the one fd it is meant to get: like the agent, a child gets no fd the
            // daemon inherited, and it may run as the agent's user.
            crate::spawn::cloexec_from_3(fd_limit);
            if let Some(user) = user {
                // Our own switch instead of `Command::uid`/`gid`: std clears supplementary
                // groups only best-effort (it ignores EPERM), and a child that kept root's
                // groups could still use their files. Here a failed `setgroups` fails the
                // spawn.
                nix::unistd::setgroups(&[])?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(user.gid))?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(user.uid))?;
            }
            // After the switch: glibc's set*id calls may rely on its internal signal
            // handlers.
            crate::spawn::reset_signals();
            // After the switch too, which clears it.
            crate::spawn::die_with_daemon(daemon)
        });
    }
    cmd
}

/// Races a probe against the child's exit, so a child that dies at startup fails fast.
async fn ready<T>(
    child: &ChildHandle,
    probe: impl std::future::Future<Output = Result<T, DesktopError>>,
) -> Result<T, DesktopError> {
    tokio::select! {
        result = probe => result,
        exit = child.wait() => Err(DesktopError::ExitedDuringStart { child: child.name, status: exit.to_string() }),
    }
}

/// Stops `child` if `result` is an error, so a failed start leaves nothing running.
async fn or_stop<T>(
    child: &ChildHandle,
    grace: Duration,
    result: Result<T, DesktopError>,
) -> Result<T, DesktopError> {
    if result.is_err() {
        child.stop(grace).await;
    }
    result
}

pub(crate) async fn start_display(
    cfg: &DesktopConfig,
    auth: &XAuthority,
) -> Result<Display, DesktopError> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| DesktopError::Io {
        what: "displayfd pipe",
        source: e.into(),
    })?;
    let write_fd = write.as_raw_fd();
    let (w, h, depth) = (cfg.screen.width, cfg.screen.height, cfg.screen.depth);
    let (name, mut cmd, vnc) = match &cfg.backend {
        DisplayBackend::Xvnc { xvnc } => {
            let socket = vnc_socket(cfg);
            remove_if_exists(&socket)?;
            let mut cmd = base_command(cfg, xvnc);
            cmd.arg("-auth")
                .arg(auth.path())
                .args([
                    "-displayfd",
                    &write_fd.to_string(),
                    "-geometry",
                    &format!("{w}x{h}"),
                    "-depth",
                    &depth.to_string(),
                ])
                // RFB only on a 0600 Unix socket: no TCP port at all.
                .args([
                    "-rfbport",
                    "-1",
                    "-rfbunixmode",
                    "0600",
                    "-SecurityTypes",
                    "None",
                    "-nolisten",
                    "tcp",
                ])
                // The desktop's clipboard stays in the desktop: Xvnc would send every copy
                // (Chromium's, perhaps of something from the user's logged-in session) to
                // every client, watchers with a view-only token too, whose input the relay
                // drops but whose output it cannot read. The viewer never uses it. Clients may
                // still send theirs (AcceptCutText). `-noclipboard` keeps a holder of the
                // display's cookie from turning it back on (`vncconfig -set SendCutText=1`).
                .args(["-SendCutText=0", "-noclipboard"])
                // Xvnc blacklists a peer address after 5 connections that did not
                // authenticate, and every client of a Unix socket has the same address: the
                // liveness probe, which hangs up at the security offer every few seconds
                // (or the desktop's user, with a few connections), would get the relay's
                // viewers refused. With security type None there is nothing to guess.
                .arg("-UseBlacklist=0")
                .arg("-rfbunixpath")
                .arg(&socket);
            ("display", cmd, Some(VncTarget::Unix(socket)))
        }
        DisplayBackend::XvfbX11vnc { xvfb, .. } => {
            let mut cmd = base_command(cfg, xvfb);
            cmd.arg("-auth").arg(auth.path()).args([
                "-displayfd",
                &write_fd.to_string(),
                "-screen",
                "0",
                &format!("{w}x{h}x{depth}"),
                "-nolisten",
                "tcp",
            ]);
            ("display", cmd, None)
        }
    };
    // SAFETY: between fork and exec only async-signal-safe calls are allowed; fcntl is.
    // The write end is created close-on-exec so no other concurrent spawn inherits it;
    // here, in this child only, the flag is cleared so the server can write to it.
    unsafe {
        cmd.pre_exec(move || {
            fcntl(write_fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let child = ChildHandle::spawn(name, &mut cmd)?;
    drop(write);
    let started = tokio::time::Instant::now();
    let number = ready(&child, async {
        tokio::time::timeout(cfg.start_timeouts.display, read_display_number(read))
            .await
            .map_err(|_| DesktopError::ProbeTimeout {
                child: name,
                timeout: cfg.start_timeouts.display,
                last: None,
            })?
    })
    .await;
    let number = or_stop(&child, cfg.stop_grace, number).await?;
    let remaining = cfg.start_timeouts.display.saturating_sub(started.elapsed());
    let screen = ready(
        &child,
        probe::poll(name, remaining, PROBE_INTERVAL, || probe::x11(number, auth)),
    )
    .await;
    let screen = or_stop(&child, cfg.stop_grace, screen).await?;
    if let Some(target) = &vnc {
        let rfb = ready(
            &child,
            probe::poll("vnc", cfg.start_timeouts.vnc, PROBE_INTERVAL, || {
                probe::rfb(target)
            }),
        )
        .await;
        let listener = or_stop(&child, cfg.stop_grace, rfb).await?;
        or_stop(
            &child,
            cfg.stop_grace,
            socket_is_own(&child, target, listener),
        )
        .await?;
    }
    info!(
        child = name,
        pid = child.pid,
        display = number,
        width = screen.width,
        height = screen.height,
        "display ready"
    );
    Ok(Display { child, number, vnc })
}

async fn read_display_number(read: OwnedFd) -> Result<u32, DesktopError> {
    let io = |source| DesktopError::Io {
        what: "displayfd read",
        source,
    };
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read).map_err(io)?;
    let mut buf = Vec::with_capacity(MAX_DISPLAYFD);
    let mut chunk = [0u8; MAX_DISPLAYFD];
    while !buf.contains(&b'\n') {
        let n = pipe.read(&mut chunk).await.map_err(io)?;
        if n == 0 || buf.len() + n > MAX_DISPLAYFD {
            return Err(DesktopError::ProbeRejected {
                child: "display",
                reason: "no display number on -displayfd".into(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    std::str::from_utf8(&buf)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| DesktopError::ProbeRejected {
            child: "display",
            reason: "bad display number on -displayfd".into(),
        })
}

/// The RFB socket's name in the run dir; each backend has one VNC server, so they share it.
const VNC_SOCKET: &str = "vnc.sock";
/// Longest Unix socket path: `sun_path` is 108 bytes, NUL included.
const MAX_SOCKET_PATH: usize = 107;
/// Chromium's TMPDIR in the run dir (`DesktopConfig::chromium_tmp`).
pub(crate) const CHROMIUM_TMP: &str = "tmp";
/// The socket Chromium's profile lock (ProcessSingleton) listens on: `SingletonSocket` in
/// a directory it makes in its TMPDIR (`mkdtemp`; Google's build names it
/// `com.google.Chrome.XXXXXX`, shorter).
const SINGLETON_SOCKET_IN_TMP: &str = "/org.chromium.Chromium.XXXXXX/SingletonSocket";
/// The longest run dir whose sockets fit a socket address. Chromium's singleton socket,
/// `{run_dir}/tmp/org.chromium.Chromium.XXXXXX/SingletonSocket`, is the deepest (the VNC
/// socket, `{run_dir}/vnc.sock`, fits whenever it does); Chromium aborts at start when it
/// does not fit ("Socket path too long"). 58 bytes.
pub const MAX_RUN_DIR_BYTES: usize =
    MAX_SOCKET_PATH - 1 - CHROMIUM_TMP.len() - SINGLETON_SOCKET_IN_TMP.len();

/// Refuses a run dir too long for its sockets, before anything is created or spawned: the
/// start would otherwise end in a child's crash or a probe timeout that names no cause.
pub(crate) fn check_run_dir(cfg: &DesktopConfig) -> Result<(), DesktopError> {
    let len = cfg.run_dir.as_os_str().len();
    if len > MAX_RUN_DIR_BYTES {
        return Err(DesktopError::RunDirTooLong {
            dir: cfg.run_dir.clone(),
            len,
            max: MAX_RUN_DIR_BYTES,
        });
    }
    Ok(())
}

/// The RFB socket's path (it fits a socket address: `check_run_dir` passed at start).
pub(crate) fn vnc_socket(cfg: &DesktopConfig) -> PathBuf {
    cfg.run_dir.join(VNC_SOCKET)
}

/// Fails unless the VNC server's socket, which has just answered the probe, is `child`'s:
/// `listener` is the process the probe's connection found listening on it.
fn socket_is_own(
    child: &ChildHandle,
    target: &VncTarget,
    listener: Option<i32>,
) -> Result<(), DesktopError> {
    let VncTarget::Unix(path) = target else {
        return Ok(());
    };
    if listener.is_some_and(|pid| u32::try_from(pid) == Ok(child.pid)) {
        return Ok(());
    }
    Err(DesktopError::ProbeRejected {
        child: "vnc",
        reason: format!(
            "{} was bound by another process, not by {} (pid {})",
            path.display(),
            child.name,
            child.pid
        ),
    })
}

/// Starts x11vnc serving RFB on a Unix socket in the run dir (Xvfb backend only).
///
/// A Unix socket, not a loopback port: only the desktop's user (and root) can connect to
/// it, and no other process can take it first. A picked-and-released port could be bound
/// by another process before x11vnc, which then runs on without listening, and the probe
/// and the relay would reach (and send the user's keystrokes to) that process.
pub(crate) async fn start_x11vnc(
    cfg: &DesktopConfig,
    x11vnc: &Path,
    display: u32,
    auth: &XAuthority,
) -> Result<(ChildHandle, VncTarget), DesktopError> {
    let socket = vnc_socket(cfg);
    remove_if_exists(&socket)?;
    let mut cmd = base_command(cfg, x11vnc);
    cmd.args(["-display", &format!(":{display}"), "-auth"])
        .arg(auth.path())
        // No control over X properties: `-noremote` ignores `x11vnc -R` (which can open a
        // TCP port on every interface, `-R rfbport:N`), `-novncconnect` the VNC_CONNECT
        // property (a reverse connection that hands the desktop to any host). Only holders
        // of the display's cookie could set them; these flags leave them nothing to ask.
        .args(["-noremote", "-novncconnect"])
        .arg("-unixsock")
        .arg(&socket)
        // No TCP at all. `-rfbport 0` alone still leaves libvncserver's IPv6 listener on
        // [::]:5900 (every interface), hence `-rfbportv6 0`; `-noipv6` also skips x11vnc's
        // own IPv6 port search (~5 s). Not `-localhost`: it refuses Unix-socket clients.
        .args(["-rfbport", "0", "-rfbportv6", "0", "-noipv6"])
        // The desktop's selections and cut buffer are never sent to viewers (as Xvnc's
        // `-SendCutText=0`), only received from them; `-noremote` keeps it so.
        .args(["-seldir", "recv"])
        .args(["-nopw", "-forever", "-shared", "-noxdamage"]);
    // SAFETY: between fork and exec only async-signal-safe calls are allowed; umask is a
    // plain system call. x11vnc creates its socket (and nothing else) with the umask's
    // mode: 0600, as Xvnc's.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
            Ok(())
        });
    }
    let child = ChildHandle::spawn("vnc", &mut cmd)?;
    let pid = child.pid;
    let target = VncTarget::Unix(socket);
    let probed = ready(
        &child,
        probe::poll("vnc", cfg.start_timeouts.vnc, PROBE_INTERVAL, || {
            probe::rfb(&target)
        }),
    )
    .await;
    let listener = or_stop(&child, cfg.stop_grace, probed).await?;
    or_stop(
        &child,
        cfg.stop_grace,
        socket_is_own(&child, &target, listener),
    )
    .await?;
    // Its listeners are all set up before it serves a client, and `-noremote` keeps any
    // from being added later, so this is the final list: a build that opens a TCP port
    // anyway is refused rather than trusted.
    let tcp = or_stop(
        &child,
        cfg.stop_grace,
        probe::tcp_listeners(pid, cfg.run_as),
    )
    .await?;
    if let Some(addr) = tcp.first() {
        child.stop(cfg.stop_grace).await;
        return Err(DesktopError::ProbeRejected {
            child: "vnc",
            reason: format!(
                "x11vnc listens on TCP {addr}; it must serve RFB on its Unix socket only"
            ),
        });
    }
    info!(child = "vnc", pid, target = %target, "vnc ready");
    Ok((child, target))
}

/// What runs in the user-namespace probe; it only has to exist and exit 0.
const NAMESPACE_PROBE_PROGRAM: &str = "/bin/true";

/// Resolves `cfg.chromium_sandbox` to `On` or `Off`. `Auto` becomes `On` when Chromium's
/// user is not root and a child running as that user can create a user namespace (what
/// Chromium's namespace sandbox does first; a container's seccomp profile or
/// `kernel.unprivileged_userns_clone=0` forbids it), else `Off` with a warning. `On`
/// fails instead of falling back.
pub(crate) async fn resolve_chromium_sandbox(
    cfg: &DesktopConfig,
) -> Result<ChromiumSandbox, DesktopError> {
    if cfg.chromium_sandbox == ChromiumSandbox::Off {
        return Ok(ChromiumSandbox::Off);
    }
    let uid = cfg
        .run_as
        .map_or_else(|| nix::unistd::geteuid().as_raw(), |user| user.uid);
    let unusable = match uid {
        0 => Some(
            "chromium would run as root, where it refuses its sandbox (set an agent user)"
                .to_string(),
        ),
        _ => probe_user_namespace(cfg).await.err(),
    };
    decide_chromium_sandbox(cfg.chromium_sandbox, uid, unusable)
}

/// The decision, given why the sandbox is unusable (`None`: it is usable).
fn decide_chromium_sandbox(
    mode: ChromiumSandbox,
    uid: u32,
    unusable: Option<String>,
) -> Result<ChromiumSandbox, DesktopError> {
    match (mode, unusable) {
        (ChromiumSandbox::Off, _) => Ok(ChromiumSandbox::Off),
        (_, None) => {
            info!(uid, "chromium runs with its sandbox");
            Ok(ChromiumSandbox::On)
        }
        (ChromiumSandbox::On, Some(reason)) => Err(DesktopError::SandboxUnavailable { reason }),
        (ChromiumSandbox::Auto, Some(reason)) => {
            warn!(uid, %reason, "chromium runs without its sandbox (--chromium-sandbox=on would refuse to start)");
            Ok(ChromiumSandbox::Off)
        }
    }
}

/// Runs a child as Chromium's user that creates the namespaces Chromium's sandbox needs,
/// then exits.
async fn probe_user_namespace(cfg: &DesktopConfig) -> Result<(), String> {
    let mut cmd = base_command(cfg, Path::new(NAMESPACE_PROBE_PROGRAM));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Runs after base_command's user switch (pre_exec hooks run in order). What Chromium's
    // namespace sandbox needs: a user namespace, and in it the capability to create PID
    // and network namespaces (where e.g. AppArmor's unprivileged-userns restriction lets
    // the first succeed but strips the namespace of capabilities).
    // SAFETY: unshare is a plain system call; nothing allocates between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sched::{unshare, CloneFlags};
            unshare(CloneFlags::CLONE_NEWUSER)?;
            unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNET)?;
            Ok(())
        });
    }
    let mut child = crate::reaper::owned()
        .spawn(&mut cmd)
        .map_err(|e| format!("creating a user namespace failed: {e}"))?;
    let status = child.wait().await;
    if let Some(pid) = child.id() {
        crate::reaper::owned().release(pid);
    }
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "the namespace probe ({NAMESPACE_PROBE_PROGRAM}) exited with {s}"
        )),
        Err(e) => Err(format!("waiting for the namespace probe failed: {e}")),
    }
}

/// The smallest `/dev/shm` Chromium is left to use. Docker's and Kubernetes' default is
/// 64 MiB, which a heavy page (a single sign-on page, say) fills: the renderer crashes
/// ("Aw, Snap!") in the middle of the user's login.
pub(crate) const MIN_DEV_SHM_BYTES: u64 = 512 * 1024 * 1024;

/// Whether Chromium must keep its shared memory out of `/dev/shm`: it is smaller than
/// [`MIN_DEV_SHM_BYTES`], or missing. Chromium then uses its TMPDIR (`{run_dir}/tmp`).
pub(crate) fn dev_shm_too_small(dev_shm: &Path) -> bool {
    match nix::sys::statvfs::statvfs(dev_shm) {
        Ok(fs) => fs.blocks().saturating_mul(fs.fragment_size()) < MIN_DEV_SHM_BYTES,
        Err(_) => true,
    }
}

/// The Chromium flags we always pass; `--no-sandbox`, `--disable-dev-shm-usage` when
/// `small_dev_shm`, and the caller's extras follow.
pub(crate) fn chromium_args(cfg: &DesktopConfig, small_dev_shm: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-breakpad",
        "--password-store=basic",
        "--test-type",
        "--remote-debugging-address=127.0.0.1",
        "--window-position=0,0",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.push(format!(
        "--window-size={},{}",
        cfg.screen.width, cfg.screen.height
    ));
    args.push(format!("--remote-debugging-port={}", cfg.cdp_port));
    args.push(format!("--user-data-dir={}", cfg.profile_dir.display()));
    // Unless its sandbox was found usable at start (`resolve_chromium_sandbox`): without
    // one Chromium refuses to start.
    if cfg.chromium_sandbox != ChromiumSandbox::On {
        args.push("--no-sandbox".into());
    }
    const NO_DEV_SHM: &str = "--disable-dev-shm-usage";
    if small_dev_shm && !cfg.chromium_extra_args.iter().any(|a| a == NO_DEV_SHM) {
        args.push(NO_DEV_SHM.into());
    }
    args.extend(cfg.chromium_extra_args.iter().cloned());
    args.push(cfg.start_url.clone());
    args
}

pub(crate) async fn start_chromium(
    cfg: &DesktopConfig,
    display: u32,
    auth: &XAuthority,
) -> Result<(ChildHandle, CdpEndpoint), DesktopError> {
    clear_stale_singleton(&cfg.profile_dir)?;
    // A DevToolsActivePort left by the previous run names a dead port; the probe must
    // only ever read the one this launch writes.
    remove_if_exists(&cfg.profile_dir.join("DevToolsActivePort"))?;
    // Chromium's own temp dir, emptied for each launch: its profile lock makes a directory
    // for its socket in TMPDIR at every start and removes it on no exit we cause (SIGTERM
    // included), so in /tmp, shared by every user, each launch left one behind for good.
    let tmp = super::supervisor::fresh_chromium_tmp(cfg)?;
    let home = cfg.chromium_home();
    let small_dev_shm = dev_shm_too_small(Path::new("/dev/shm"));
    if small_dev_shm {
        info!(
            min_mib = MIN_DEV_SHM_BYTES >> 20,
            "/dev/shm is missing or small: chromium keeps its shared memory in its TMPDIR (--disable-dev-shm-usage); give the sandbox a larger /dev/shm (docker run --shm-size=1g)"
        );
    }
    let mut cmd = base_command(cfg, &cfg.chromium);
    cmd.env("DISPLAY", format!(":{display}"))
        .env("XAUTHORITY", auth.path())
        .env("TMPDIR", &tmp)
        // crashpad writes under $HOME/.config/chromium whatever the profile.
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .args(chromium_args(cfg, small_dev_shm));
    let child = ChildHandle::spawn("chromium", &mut cmd)?;
    let probed = ready(
        &child,
        probe::poll(
            "chromium",
            cfg.start_timeouts.chromium,
            PROBE_INTERVAL,
            || async {
                // Chromium writes DevToolsActivePort only for `--remote-debugging-port=0`
                // (a first start); with the port kept from it (a restart), probe it directly.
                let port = if cfg.cdp_port != 0 {
                    cfg.cdp_port
                } else {
                    probe::devtools_active_port(&cfg.profile_dir)
                        .await
                        .ok_or(DesktopError::ProbeRejected {
                            child: "chromium",
                            reason: "DevToolsActivePort not written yet".into(),
                        })?
                        .0
                };
                let ws_url = probe::cdp_version(port).await?;
                super::cdp::prove(&ws_url).await?;
                Ok(CdpEndpoint {
                    http_url: format!("http://127.0.0.1:{port}"),
                    ws_url,
                })
            },
        ),
    )
    .await;
    let cdp = or_stop(&child, cfg.stop_grace, probed).await?;
    info!(child = "chromium", pid = child.pid, http_url = %cdp.http_url, "chromium ready");
    Ok((child, cdp))
}

fn remove_if_exists(path: &Path) -> Result<(), DesktopError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DesktopError::Io {
            what: "remove stale file",
            source,
        }),
    }
}

/// The owner recorded in a `SingletonLock` target, `hostname-pid`.
pub(crate) fn parse_singleton_lock(target: &str) -> Option<(&str, i32)> {
    let (host, pid) = target.rsplit_once('-')?;
    let pid: i32 = pid.parse().ok()?;
    (pid > 0).then_some((host, pid))
}

/// Whether `pid` is a live Chromium (not merely a live process that reused the pid), by
/// its command name: `/proc/PID/comm` is readable whoever owns the process, unlike
/// `/proc/PID/exe`, which root may read for another user's process only with
/// CAP_SYS_PTRACE. Chromium's is "chromium" (Google's build: "chrome").
fn is_live_chromium(pid: i32) -> bool {
    if !pid_alive(pid) || is_zombie(pid) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.contains("chrom"),
        // Gone meanwhile, or /proc hides it (`hidepid`): if it is alive, be safe and
        // assume it is a browser holding the profile.
        Err(_) => pid_alive(pid),
    }
}

/// Removes Chromium's singleton files when the process that created them is gone;
/// refuses to start over a live owner (a second browser on one profile corrupts it).
pub(crate) fn clear_stale_singleton(profile: &Path) -> Result<(), DesktopError> {
    let lock = profile.join("SingletonLock");
    let target = match std::fs::read_link(&lock) {
        Ok(target) => Some(target),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // Exists but is not a symlink (or unreadable): no owner can be named.
        Err(_) => Some(PathBuf::new()),
    };
    let Some(target) = target else {
        // No lock: dangling SingletonSocket/Cookie without it are stale by definition.
        return remove_singletons(profile);
    };
    let target = target.to_string_lossy().into_owned();
    let host = hostname();
    match parse_singleton_lock(&target) {
        // A lock from another host name: the profile outlived a sandbox (its host name
        // changes); only one desktop per sandbox uses the profile, so it is stale.
        Some((lock_host, pid)) if Some(lock_host) == host.as_deref() && is_live_chromium(pid) => {
            return Err(DesktopError::ProfileInUse { pid });
        }
        Some((lock_host, pid)) => debug!(lock_host, pid, "stale SingletonLock"),
        None => warn!("unparseable SingletonLock, removing"),
    }
    remove_singletons(profile)
}

/// Whether `pid` has exited and waits to be reaped: it holds no profile. A Chromium
/// orphaned by a daemon killed outright is reaped by whatever init it is handed to, which
/// may take its time (or never get to it).
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // `pid (comm) state …`; comm may hold spaces and parentheses.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// The host name Chromium writes into `SingletonLock` (the UTS node name).
pub(crate) fn hostname() -> Option<String> {
    nix::sys::utsname::uname()
        .ok()
        .map(|u| u.nodename().to_string_lossy().into_owned())
}

fn remove_singletons(profile: &Path) -> Result<(), DesktopError> {
    for name in SINGLETON_FILES {
        let path = profile.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            remove_if_exists(&path)?;
            info!(file = name, "removed stale chromium singleton file");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
