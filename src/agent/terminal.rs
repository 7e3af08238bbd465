//! The daemon's terminal handed to the agent, as a shell hands it to a foreground job.
//!
//! The agent leads a process group of its own (see the module above), which on the
//! developer's terminal (`dev`) is a background group: its first read of the terminal
//! (`input()`, `breakpoint()`, pdb) stopped it with SIGTTIN, and everything hung without a
//! word. So when the daemon's stdin is a terminal whose foreground group is the daemon's
//! own, the agent's group is made the terminal's foreground group for the agent's run:
//!
//! - **In the child, before `execve`**: the agent cannot read the terminal before it holds
//!   it. A background process changing the foreground group gets SIGTTOU unless it ignores
//!   it: the daemon ignores SIGTTOU from then on, the child inherits that through the fork,
//!   makes the call, and only then resets every signal to its default (`spawn`).
//! - **The daemon ignores SIGTTOU** for the rest of its life: it takes the terminal back,
//!   and logs to it, from the background; with `stty tostop` a log line would stop it.
//! - **Taken back** when the agent ends (or its spawn fails, or `run` is dropped), before
//!   the daemon's shutdown, so the shell gets its terminal back from a live group.
//! - **Keyboard signals** (Ctrl-C, Ctrl-\, Ctrl-Z) now go to the agent's group directly,
//!   not through the daemon: the daemon shuts down when the agent exits of them, as after
//!   any exit. An agent that handles SIGINT and goes on is not stopped by Ctrl-C (as any
//!   foreground program), and Ctrl-C starts no `--stop-timeout`.
//! - **A stopped agent** (Ctrl-Z's SIGTSTP, SIGTTIN or SIGTTOU from a terminal it does not
//!   hold, SIGSTOP) is noticed (SIGCHLD, `waitid(WSTOPPED | WCONTINUED)`, which reaps
//!   nothing), logged with the reason, and the terminal is taken back, so Ctrl-C reaches
//!   the daemon again (which forwards it with a SIGCONT: the agent ends); an agent
//!   continued from elsewhere (`kill -CONT`) gets the terminal back.
//!
//! When stdin is not a terminal (a sandbox, CI) or the daemon does not hold its
//! foreground (started in the background, `&`), nothing here happens.

use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{info, warn};

/// The terminal on the daemon's stdin, held by the daemon's process group.
#[derive(Debug, Clone, Copy)]
pub(super) struct Terminal {
    daemon_group: libc::pid_t,
}

impl Terminal {
    /// The daemon's terminal, when it is stdin and the daemon's group holds its foreground.
    pub(super) fn ours() -> Option<Terminal> {
        // SAFETY: queries on fd 0, whatever it is.
        let (tty, foreground, own) =
            unsafe { (libc::isatty(0) == 1, libc::tcgetpgrp(0), libc::getpgrp()) };
        (tty && foreground > 0 && foreground == own).then_some(Terminal { daemon_group: own })
    }

    /// Before the spawn: SIGTTOU ignored by the daemon from now on (see the module docs).
    pub(super) fn prepare(&self) {
        // SAFETY: SIG_IGN is not a handler; nothing else in the daemon handles SIGTTOU.
        if let Err(error) = unsafe {
            nix::sys::signal::signal(Signal::SIGTTOU, nix::sys::signal::SigHandler::SigIgn)
        } {
            warn!(%error, "cannot ignore SIGTTOU");
        }
    }

    /// In the forked child, before `execve`: its own group (std made it) takes the
    /// foreground. Async-signal-safe: two system calls. A failure leaves the agent in the
    /// background, as before.
    pub(super) fn take_in_child() {
        // SAFETY: plain system calls on fd 0.
        unsafe {
            libc::tcsetpgrp(0, libc::getpid());
        }
    }

    /// The daemon's group takes the foreground back, unless it has it.
    fn take_back(&self) {
        // SAFETY: plain system calls on fd 0; SIGTTOU is ignored (`prepare`).
        unsafe {
            if libc::tcgetpgrp(0) != self.daemon_group {
                libc::tcsetpgrp(0, self.daemon_group);
            }
        }
    }

    /// The agent's group gets the foreground again, if the daemon's holds it.
    fn hand_to(&self, agent: libc::pid_t) {
        // SAFETY: as `take_back`.
        unsafe {
            if libc::tcgetpgrp(0) == self.daemon_group {
                libc::tcsetpgrp(0, agent);
            }
        }
    }
}

/// Gives the terminal back to the daemon's group when dropped.
pub(super) struct TerminalGuard(pub(super) Option<Terminal>);

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if let Some(terminal) = &self.0 {
            terminal.take_back();
        }
    }
}

/// After a SIGCHLD: reports the agent's stops and continues (never its exit, which stays
/// for its owner's `wait`), taking the terminal back on a stop and handing it over again
/// on a continue.
pub(super) fn watch_stops(pid: u32, terminal: Option<&Terminal>) {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return;
    };
    loop {
        let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WCONTINUED | WaitPidFlag::WNOHANG;
        match waitid(Id::Pid(Pid::from_raw(raw)), flags) {
            Ok(WaitStatus::Stopped(_, signal)) => {
                let held = terminal.is_some_and(|t| {
                    t.take_back();
                    true
                });
                warn!(
                    pid,
                    %signal,
                    "the agent is stopped ({}): it does nothing until it is continued \
                     (`kill -CONT -{pid}`); a SIGTERM or SIGINT to the daemon{} continues \
                     and stops it",
                    why(signal),
                    if held { " (Ctrl-C on this terminal, which is the daemon's again)" } else { "" },
                );
            }
            Ok(WaitStatus::Continued(_)) => {
                info!(pid, "the agent continued");
                if let Some(terminal) = terminal {
                    terminal.hand_to(raw);
                }
            }
            // StillAlive: nothing (more) to report; an error: the agent is gone.
            _ => return,
        }
    }
}

fn why(signal: Signal) -> &'static str {
    match signal {
        Signal::SIGTSTP => "SIGTSTP: Ctrl-Z on its terminal",
        Signal::SIGTTIN => "SIGTTIN: it read from a terminal whose foreground it does not hold",
        Signal::SIGTTOU => {
            "SIGTTOU: it wrote to a terminal whose foreground it does not hold (stty tostop), or changed its settings"
        }
        Signal::SIGSTOP => "SIGSTOP, sent by someone",
        _ => "a stop signal",
    }
}
