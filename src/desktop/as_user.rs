//! Acting as the desktop's user for the few things only its owner (or a capability the
//! daemon does not have) may do to the desktop's processes: reading the VNC server's
//! `/proc/PID/fd`, and removing the System V segments a killed x11vnc leaves behind.
//!
//! Root may read another user's `/proc/PID/fd` only with `CAP_SYS_PTRACE`, and remove
//! another user's segment only with `CAP_SYS_ADMIN`; neither is in the shipped unit's
//! `CapabilityBoundingSet=` or in Docker's default set, and neither is needed: the kernel
//! lets a process do both to its own user's processes and segments (`/proc/PID/fd`
//! checks the filesystem uid and gid against the target's, `IPC_RMID` the effective uid
//! against the segment's owner). So the work runs on a thread of its own whose effective
//! (and so filesystem) uid and gid are the desktop user's, with `CAP_SETUID` and
//! `CAP_SETGID`, which the daemon needs anyway to start the desktop as that user.
//!
//! Linux keeps credentials per thread. The raw `setresgid`/`setresuid` system calls
//! change only the calling thread's (glibc's wrappers would change every thread of the
//! process), and the thread ends with the work, so no other code ever runs with them.
//! (Changing a thread's effective uid makes the process non-dumpable, which
//! `telemetry::harden_process` has made it already.)

use super::RunAs;

/// Runs `work` on a new thread whose effective and filesystem uid and gid are `user`'s,
/// and returns its result. The real and saved ids stay the daemon's; the thread ends
/// when `work` returns.
pub(crate) fn run<T: Send>(user: RunAs, work: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                become_user(user)?;
                Ok(work())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `work` as `user` when there is one (see [`run`]), else as the daemon itself:
/// without a user switch the desktop's processes are the daemon's own.
pub(crate) fn run_as<T: Send>(
    user: Option<RunAs>,
    work: impl FnOnce() -> T + Send,
) -> std::io::Result<T> {
    match user {
        Some(user) => run(user, work),
        None => Ok(work()),
    }
}

/// Sets this thread's effective gid, then uid (the gid first: changing it needs
/// `CAP_SETGID`, which a thread no longer running as root no longer has in effect).
fn become_user(user: RunAs) -> std::io::Result<()> {
    const UNCHANGED: libc::c_long = -1;
    // SAFETY: plain system calls on integer arguments; they change the credentials of
    // the calling thread only (the raw calls, unlike glibc's wrappers, do not signal the
    // process's other threads to do the same), and this thread is ours alone.
    unsafe {
        if libc::syscall(
            libc::SYS_setresgid,
            UNCHANGED,
            libc::c_long::from(user.gid),
            UNCHANGED,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(
            libc::SYS_setresuid,
            UNCHANGED,
            libc::c_long::from(user.uid),
            UNCHANGED,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// For tests: running code as the daemon runs under the shipped systemd unit or Docker's
/// default capability set, without CAP_SYS_PTRACE and CAP_SYS_ADMIN.
#[cfg(test)]
pub(crate) mod testing {
    /// `struct __user_cap_header_struct` and `struct __user_cap_data_struct`.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    /// CAP_SYS_PTRACE and CAP_SYS_ADMIN (linux/capability.h).
    const DROPPED: [u32; 2] = [19, 21];

    /// Runs `work` on a new thread that lacks CAP_SYS_PTRACE and CAP_SYS_ADMIN (in its
    /// effective, permitted and bounding sets); threads it starts and processes they fork
    /// inherit that. Other threads keep theirs: capabilities are per thread.
    pub(crate) fn without_ptrace_or_admin<T: Send>(work: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let mut header = Header {
                        version: VERSION_3,
                        pid: 0,
                    };
                    let mut data = [Data::default(); 2];
                    // SAFETY: capget/capset read and write the two structs given, which
                    // have the kernel's layout; prctl takes integers. All act on this
                    // thread only.
                    unsafe {
                        assert_eq!(
                            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
                            0,
                            "capget"
                        );
                        for cap in DROPPED {
                            let _ = libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong);
                            data[0].effective &= !(1 << cap);
                            data[0].permitted &= !(1 << cap);
                            data[0].inheritable &= !(1 << cap);
                        }
                        assert_eq!(
                            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
                            0,
                            "capset"
                        );
                    }
                    work()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The effective uid and gid of the calling thread, from the kernel's view of it.
    fn thread_ids() -> (u32, u32) {
        // SAFETY: gettid takes no argument.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
            .expect("thread status");
        let effective = |key: &str| -> u32 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|id| id.parse().ok())
                .expect("id line")
        };
        (effective("Uid:"), effective("Gid:"))
    }

    #[test]
    fn the_work_runs_as_the_user_and_no_other_thread_changes() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI is set but not root");
            eprintln!("skipping: switching to another user needs root");
            return;
        }
        let before = thread_ids();
        let user = RunAs {
            uid: 65534,
            gid: 65534,
        };
        let inside = run(user, thread_ids).expect("as nobody");
        assert_eq!(inside, (65534, 65534));
        assert_eq!(thread_ids(), before, "the calling thread changed");
        assert_eq!(
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw()
            ),
            before,
            "the process changed"
        );
    }
}
