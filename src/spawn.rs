//! What every child the daemon starts (the agent, the desktop's display, VNC server and
//! Chromium) gets from it through `execve`: stdin, stdout and stderr only, and every
//! signal at its default disposition with none blocked.
//!
//! Rust opens every fd of its own `CLOEXEC`, but the daemon may have inherited others
//! from whatever launched it (a jobserver pipe, a launcher's secret) and signal
//! dispositions set to ignored (`nohup`); `execve` would hand both on. With `--agent-user`
//! every one of these children runs as the agent's user, who may take any fd of theirs
//! with `pidfd_getfd`.
//!
//! It also dies with the daemon ([`die_with_daemon`]).
//!
//! These run in the forked child, in a `pre_exec` hook: only async-signal-safe system
//! calls, nothing allocated. [`fd_limit`] and the daemon's pid are taken before the fork.

/// The highest fd number to sweep when `close_range` is unavailable.
pub(crate) fn fd_limit() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid struct.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok || limit.rlim_cur == libc::RLIM_INFINITY {
        return 65_536;
    }
    libc::c_int::try_from(limit.rlim_cur.min(65_536)).unwrap_or(65_536)
}

/// Marks every fd from 3 up close-on-exec, so the child gets stdin, stdout and stderr
/// only, whatever the daemon itself inherited without `CLOEXEC` (a jobserver pipe, a
/// launcher's fds). Marking instead of closing keeps std's exec-error pipe working, and
/// lets a later `pre_exec` hook clear the flag on the one fd a child is meant to get.
pub(crate) fn cloexec_from_3(fd_limit: libc::c_int) {
    // SAFETY: close_range and fcntl on fd numbers; a number that is not open fails
    // harmlessly with EBADF.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        // Kernels before 5.11: sweep.
        for fd in 3..fd_limit {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Restores every signal's default disposition and an empty signal mask.
///
/// Through the raw `rt_sigaction` system call: glibc's wrappers refuse signals 32 and 33
/// (it uses them internally), yet an ignored 32 or 33 would survive `execve` all the same.
/// An all-zero kernel `struct sigaction` is `SIG_DFL` with no flags and an empty mask
/// whatever the architecture's field order, so a zeroed buffer at least as large as the
/// largest layout serves every architecture.
pub(crate) fn reset_signals() {
    let default = [0u64; 4];
    // SAFETY: rt_sigaction reads a valid buffer of zeroes (SIG_DFL); sigprocmask gets a
    // valid, initialised set. Errors (SIGKILL, SIGSTOP) are ignored on purpose.
    unsafe {
        for signal in 1..=64 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal as libc::c_long,
                default.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8 as libc::c_long,
            );
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Has the kernel send the child SIGTERM when the daemon dies, so that a daemon killed
/// outside a PID namespace (`dev` on a laptop: `kill -9`, the OOM killer, an abort) does
/// not leave its agent, display and Chromium running: an orphaned Chromium holds the
/// profile, and the next start refuses it as in use. As PID 1 the kernel kills the whole
/// namespace anyway. SIGTERM rather than SIGKILL: Chromium then shuts down as on a stop,
/// writing its cookies out and removing its profile lock.
///
/// The signal comes when the *thread* that forked the child ends, so every owned child is
/// forked from one thread that lives as long as the daemon (`reaper::OwnedChildren::spawn`).
/// Call it after the user switch, which clears the setting. `daemon` is the daemon's pid,
/// taken before the fork: a daemon that died before the `prctl` (the child then has
/// another parent) fails the spawn with ESRCH instead of leaving the child behind.
pub(crate) fn die_with_daemon(daemon: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: prctl and getppid are plain system calls; nothing is allocated.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != daemon {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}
