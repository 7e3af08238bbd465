//! Launching the agent as its user, forwarding signals to it, and its exit code.
//!
//! Decisions:
//! - **Own process group.** The agent leads a new process group, and every signal we
//!   send goes to the whole group (`killpg`), so the agent's own children (`npx` ->
//!   `node`, `sh -c` -> the real program, a Python worker pool) get it too, even when the
//!   agent does not forward signals itself. On a terminal whose foreground the daemon
//!   holds (`dev` in a shell), that group is made the terminal's foreground group for the
//!   agent's run (`terminal`), as a shell does for a job: the agent can read the terminal
//!   (`input()`, `breakpoint()`), and Ctrl-C reaches its group directly, once; elsewhere
//!   (a sandbox, CI) the terminal, if any, is left alone.
//! - **Forwarding.** Every signal the daemon catches (`STOP_SIGNALS`: SIGTERM, SIGINT,
//!   SIGHUP, SIGQUIT; `FORWARDED_SIGNALS`: SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM, ...; as
//!   tini does, everything catchable but job control, SIGCHLD, SIGPIPE and the daemon's
//!   own faults and limits) is forwarded. SIGTERM and SIGINT mean "stop": they also start
//!   the `stop_timeout` grace period after which the group gets SIGKILL. SIGXCPU (the
//!   daemon's CPU limit) is sent on as SIGTERM; the rest are forwarded only. Cancelling
//!   `stop` does the same as a SIGTERM (without a second SIGTERM if one was already
//!   forwarded). Handlers are installed before the spawn: a PID-1 process without a
//!   handler ignores these signals, and a non-PID-1 one would die of most of them without
//!   forwarding, wiping or stopping the agent.
//! - **SIGCONT.** SIGTERM, SIGINT and SIGQUIT, and the stop, are followed by SIGCONT, as
//!   systemd does: a stopped agent (SIGSTOP, Ctrl-Z, SIGTTIN) would otherwise hold them
//!   pending, unable to act on them, and every stop would wait the whole timeout and end
//!   in SIGKILL (137, not the agent's own code). Not after SIGHUP and the others:
//!   continuing an agent someone stopped on purpose is not theirs to do.
//! - **Leftovers.** When the agent exits, whatever is left of its process group gets
//!   SIGKILL: the run is over, and those processes would otherwise outlive it as
//!   orphans nobody stops (the orphan reaper then reaps them).
//! - **A clean child.** The child starts with every signal at its default disposition
//!   and none blocked (a daemon started with SIGTERM or SIGHUP ignored, e.g. by `nohup`,
//!   would otherwise hand that on through `execve`), with its supplementary groups, gid
//!   and uid set in that order, and with stdin/stdout/stderr as its only fds: Rust opens
//!   every fd `CLOEXEC`, and the child marks every other fd (something the daemon itself
//!   inherited) `CLOEXEC` before `execve` as well. It inherits `RLIMIT_CORE = 0` from
//!   `telemetry::harden_process` on purpose: its memory holds the same credentials.
//!   Its dumpable flag is reset to 1 by `execve` (the kernel does so when the real and
//!   effective ids match), so the agent itself is debuggable as usual.
//!   The working directory is entered before the switch (std's order), as root.
//! - **The environment** never goes through `Command::env`, which leaves copies of every
//!   value in freed memory: `exec` builds the envp in zeroizing buffers before the fork,
//!   and the `pre_exec` hook ends with std's own `execvp` on it.
//! - **It dies with the daemon.** Its parent-death signal is SIGTERM
//!   (`spawn::die_with_daemon`), so a daemon killed outside a PID namespace (`dev`:
//!   `kill -9`, the OOM killer) does not leave it running against a socket nobody serves.
//!   The signal fires when the *thread* that forked the child ends, so every owned child
//!   is forked from one thread that lives as long as the daemon (`reaper`). As PID 1 the
//!   kernel kills the namespace anyway; under systemd, `KillMode` covers the agent's own
//!   children too, which this signal does not reach.

mod env;
mod exec;
mod terminal;
mod user;

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::SignalKind;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use env::{
    build_env, EnvPlan, EnvValue, BROWSER_CDP_URL_VAR, CREDENTIALS_DIR_VAR, PASSED_GREXAL_VARS,
    SOCKET_VAR,
};
pub use user::{resolve, AgentUser};

use crate::exit::ExitCode;

/// Everything needed to start the agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The program and its arguments; the program is looked up in the agent's `PATH`.
    pub argv: Vec<OsString>,
    /// The user to switch to; `None` keeps the daemon's.
    pub user: Option<AgentUser>,
    /// The complete environment (see `build_env`); nothing else is inherited.
    pub env: Vec<(OsString, EnvValue)>,
    /// The working directory; `None` keeps the daemon's.
    pub cwd: Option<PathBuf>,
    /// Give the agent's process group the foreground of the daemon's terminal (its stdin)
    /// for the agent's run, when the daemon's group holds it (see `terminal`); `false`
    /// leaves any terminal alone.
    pub take_terminal: bool,
}

/// How the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentExit {
    /// Its exit code, or 128+N when killed by signal N (as shells report it).
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

impl AgentExit {
    fn from_status(status: ExitStatus) -> Self {
        AgentExit {
            code: i32::from(exit_code_for(status)),
            signal: status.signal(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the agent command is empty")]
    EmptyCommand,
    #[error("agent user {user:?} does not exist")]
    UnknownUser { user: String },
    #[error("looking up agent user {user:?} failed")]
    UserLookup {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("switching to agent user {user:?} needs root")]
    SwitchUserNotPermitted { user: String },
    #[error("the agent env var {name:?} has an unusable name or value")]
    InvalidEnv { name: String },
    #[error("the agent's working directory {path} is not usable")]
    Cwd {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("agent command {program:?} not found")]
    NotFound {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("agent command {program:?} is not executable")]
    NotExecutable {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("starting agent command {program:?} failed")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for the agent failed")]
    Wait(#[source] io::Error),
}

impl AgentError {
    /// The daemon's exit code for this failure: like a shell, 127 when the command does
    /// not exist and 126 when it exists but cannot be executed.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            AgentError::NotFound { .. } => ExitCode::AgentNotFound,
            AgentError::NotExecutable { .. } => ExitCode::AgentNotExecutable,
            AgentError::EmptyCommand => ExitCode::Usage,
            AgentError::UnknownUser { .. }
            | AgentError::SwitchUserNotPermitted { .. }
            | AgentError::InvalidEnv { .. }
            | AgentError::Cwd { .. } => ExitCode::Config,
            AgentError::UserLookup { .. } | AgentError::Spawn { .. } | AgentError::Wait(_) => {
                ExitCode::Os
            }
        }
    }

    /// A stable code for the platform (`agent_exited`'s `error.code`), never built from
    /// the command, the user or the environment.
    pub fn public_code(&self) -> &'static str {
        match self {
            AgentError::EmptyCommand => "agent_command_empty",
            AgentError::UnknownUser { .. } => "agent_user_unknown",
            AgentError::UserLookup { .. } => "agent_user_lookup_failed",
            AgentError::SwitchUserNotPermitted { .. } => "agent_user_not_permitted",
            AgentError::InvalidEnv { .. } => "agent_env_invalid",
            AgentError::Cwd { .. } => "agent_cwd_unusable",
            AgentError::NotFound { .. } => "agent_not_found",
            AgentError::NotExecutable { .. } => "agent_not_executable",
            AgentError::Spawn { .. } => "agent_spawn_failed",
            AgentError::Wait(_) => "agent_wait_failed",
        }
    }

    /// Fixed text per code, for the platform: no argv value, user name, variable name or
    /// OS error in it (those are in the daemon's log).
    pub fn public_message(&self) -> &'static str {
        match self {
            AgentError::EmptyCommand => "the agent's command is empty",
            AgentError::UnknownUser { .. } => "the agent's user does not exist",
            AgentError::UserLookup { .. } => "looking up the agent's user failed",
            AgentError::SwitchUserNotPermitted { .. } => "switching to the agent's user needs root",
            AgentError::InvalidEnv { .. } => {
                "an environment variable for the agent has an unusable name or value"
            }
            AgentError::Cwd { .. } => "the agent's working directory is not usable",
            AgentError::NotFound { .. } => "the agent's command was not found",
            AgentError::NotExecutable { .. } => "the agent's command is not executable",
            AgentError::Spawn { .. } => "starting the agent's command failed",
            AgentError::Wait(_) => "waiting for the agent failed",
        }
    }

    fn from_spawn(program: String, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => AgentError::NotFound { program, source },
            Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) | Some(libc::ETXTBSY) => {
                AgentError::NotExecutable { program, source }
            }
            _ => AgentError::Spawn { program, source },
        }
    }
}

/// The process exit code that reports `status`: the code itself, or 128+N for a death
/// by signal N.
pub fn exit_code_for(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // WEXITSTATUS is 0..=255 already; the mask only documents it.
        return (code & 0xff) as u8;
    }
    match status.signal() {
        Some(signal) => u8::try_from(128 + signal).unwrap_or(u8::MAX),
        None => u8::MAX,
    }
}

/// Starts the agent, forwards `signals` to it, stops it when `stop` is cancelled (SIGTERM,
/// then SIGKILL after `stop_timeout`), and returns how it ended. See the module docs.
///
/// The caller installs `signals` (the daemon does at the start of boot), so a signal
/// that arrives before the agent exists is held and forwarded once it does.
pub async fn run(
    spec: AgentSpec,
    mut signals: Signals,
    stop: CancellationToken,
    stop_timeout: Duration,
) -> Result<AgentExit, AgentError> {
    let program = spec
        .argv
        .first()
        .ok_or(AgentError::EmptyCommand)?
        .to_string_lossy()
        .into_owned();
    if let Some(cwd) = &spec.cwd {
        // Checked here so that a bad cwd (ENOENT from chdir in the child) is not reported
        // as a missing command.
        match std::fs::metadata(cwd) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                let source = io::Error::from_raw_os_error(libc::ENOTDIR);
                return Err(AgentError::Cwd {
                    path: cwd.clone(),
                    source,
                });
            }
            Err(source) => {
                return Err(AgentError::Cwd {
                    path: cwd.clone(),
                    source,
                })
            }
        }
    }

    let terminal = spec.take_terminal.then(terminal::Terminal::ours).flatten();
    if let Some(terminal) = &terminal {
        terminal.prepare();
    }
    // Before the spawn, so no stop of the agent's goes unseen (should it fail, stops only
    // go unreported).
    let mut sigchld = tokio::signal::unix::signal(SignalKind::child()).ok();
    // The terminal is taken back however `run` ends, a failed spawn included (the child may
    // have taken it before its `execve` failed).
    let terminal_guard = terminal::TerminalGuard(terminal);
    let mut child = {
        let mut command = command(&spec, terminal.is_some())?;
        // `command`'s exec hook owns the agent's envp, the only copy of the exposed
        // secrets; it is dropped (zeroized) at the end of this block, right after the spawn.
        crate::reaper::owned()
            .spawn(&mut command)
            .map_err(|source| AgentError::from_spawn(program.clone(), source))?
    };
    let Some(pid) = child.id() else {
        // Unreachable: a freshly spawned, never-waited child always has its pid.
        return Err(AgentError::Wait(io::Error::other(
            "spawned agent has no pid",
        )));
    };
    let guard = GroupGuard { pid };
    info!(pid, program = %program, user = spec.user.as_ref().map(|u| u.name.as_str()), "agent started");
    if terminal.is_some() {
        info!(
            pid,
            "the agent has this terminal: it reads it, and Ctrl-C, Ctrl-\\ and Ctrl-Z go to it"
        );
    }

    // `term_sent`: a SIGTERM or SIGINT went out, the agent is being stopped; a later
    // `stop` must not send a second one. `killed`: SIGKILL went out, nothing is left to arm.
    let mut term_sent = false;
    let mut stop_handled = false;
    let mut killed = false;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(AgentError::Wait)?,
            () = child_changed(&mut sigchld) => terminal::watch_stops(pid, terminal.as_ref()),
            kind = signals.recv() => {
                // SIGXCPU is the daemon's own CPU limit: the agent is stopped as by SIGTERM.
                let kind = if kind == Signal::SIGXCPU { Signal::SIGTERM } else { kind };
                info!(pid, signal = %kind, "forwarding signal to the agent");
                send(pid, kind);
                if matches!(kind, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) {
                    // A stopped agent (SIGSTOP, Ctrl-Z, SIGTTIN) would hold the signal
                    // pending, unable to act on it, until the stop timeout's SIGKILL.
                    send(pid, Signal::SIGCONT);
                }
                if matches!(kind, Signal::SIGTERM | Signal::SIGINT) {
                    term_sent = true;
                    if !killed {
                        arm(&mut kill_at, stop_timeout);
                    }
                }
            }
            _ = stop.cancelled(), if !stop_handled => {
                stop_handled = true;
                if !term_sent {
                    info!(pid, "stopping the agent");
                    send(pid, Signal::SIGTERM);
                    term_sent = true;
                }
                // Even after an earlier SIGTERM: the agent may have been stopped since.
                send(pid, Signal::SIGCONT);
                if !killed {
                    arm(&mut kill_at, stop_timeout);
                }
            }
            _ = sleep_until(kill_at) => {
                warn!(pid, timeout_ms = u64::try_from(stop_timeout.as_millis()).unwrap_or(u64::MAX), "the agent did not stop in time; killing it");
                send(pid, Signal::SIGKILL);
                killed = true;
                kill_at = None;
            }
        }
    };
    drop(terminal_guard);
    drop(guard);
    let exit = AgentExit::from_status(status);
    info!(pid, code = exit.code, signal = exit.signal, "agent exited");
    Ok(exit)
}

/// The next SIGCHLD (any child's: `watch_stops` asks about the agent alone); never, without
/// a listener.
async fn child_changed(sigchld: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(stream) = sigchld {
        if stream.recv().await.is_some() {
            return;
        }
    }
    std::future::pending().await
}

/// Sets the SIGKILL deadline `stop_timeout` from now, unless one is set. A timeout that
/// would take it past the clock's end sets none (the agent is never killed): `Instant +
/// Duration` would panic, and `run` takes any `Duration` (the config bounds the flag).
fn arm(kill_at: &mut Option<Instant>, stop_timeout: Duration) {
    if kill_at.is_none() {
        *kill_at = Instant::now().checked_add(stop_timeout);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends `signal` to the agent's process group. ESRCH (the group is gone) is expected
/// near exit; the leader is not reaped until we wait, so its pid cannot be reused.
fn send(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::Error::ESRCH) => {}
        Err(error) => warn!(pid, signal = %signal, %error, "signalling the agent failed"),
    }
}

/// Kills the rest of the agent's group and releases its pid when `run` ends, whether the
/// agent exited or `run`'s future was dropped (then tokio reaps the killed child).
struct GroupGuard {
    pid: u32,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Ok(raw) = i32::try_from(self.pid) {
            // ESRCH (nothing left) is the usual outcome.
            if killpg(Pid::from_raw(raw), Signal::SIGKILL).is_ok() {
                debug!(
                    pid = self.pid,
                    "killed what was left of the agent's process group"
                );
            }
        }
        crate::reaper::owned().release(self.pid);
    }
}

/// The signals that stop the daemon while no agent runs (during boot, or serving without
/// an agent); forwarded like the others while one does. SIGQUIT (Ctrl-\\) is one: its
/// default action would end the daemon without a shutdown. SIGXCPU, the soft CPU limit
/// reached, is one too: the hard limit's SIGKILL follows, better met after a clean stop.
pub const STOP_SIGNALS: [Signal; 5] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGXCPU,
];

/// The other signals the daemon catches: forwarded to the agent's process group while it
/// runs, otherwise logged and dropped. Everything catchable whose default action would end
/// the daemon, without its shutdown (no wipe, the agent orphaned), or that the agent may
/// want (SIGWINCH, SIGURG, ignored by default), except: SIGCHLD (the daemon's own
/// children); SIGPIPE (ignored by Rust's runtime: the daemon's writes get EPIPE, and one
/// the daemon caused must not reach the agent); SIGTSTP, SIGTTIN, SIGTTOU and SIGCONT (job
/// control of the daemon itself); SIGXFSZ (the daemon's own file size limit: caught and
/// dropped, so the write past it fails with EFBIG and is reported); SIGILL, SIGTRAP,
/// SIGABRT, SIGBUS, SIGFPE, SIGSEGV and SIGSYS (the daemon's own faults, which must keep
/// their default action); and the realtime signals (nothing that launches an agent uses
/// them; tokio cannot listen for the last one).
pub const FORWARDED_SIGNALS: [Signal; 10] = [
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGSTKFLT,
    Signal::SIGURG,
];

/// Whether `signal` stops the daemon when no agent runs (see `STOP_SIGNALS`).
pub fn is_stop(signal: Signal) -> bool {
    STOP_SIGNALS.contains(&signal)
}

/// The daemon's signal listener: `STOP_SIGNALS`, `FORWARDED_SIGNALS` and SIGXFSZ.
///
/// One listener for the daemon's whole life: a listener installed later does not see the
/// signals that came before it (tokio counts them as already seen). Installing it replaces
/// each signal's default action, so none of them can end the daemon past its shutdown,
/// and a PID 1 (which the kernel spares the default action of a signal it has no handler
/// for) forwards them instead of dropping them.
pub struct Signals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    pub fn install() -> io::Result<Self> {
        let mut streams = Vec::new();
        // STOP_SIGNALS first: `recv` polls in this order, so no flood of another signal
        // can hold a stop back.
        for signal in STOP_SIGNALS
            .into_iter()
            .chain(FORWARDED_SIGNALS)
            .chain([Signal::SIGXFSZ])
        {
            streams.push((
                signal,
                tokio::signal::unix::signal(SignalKind::from_raw(signal as i32))?,
            ));
        }
        Ok(Signals { streams })
    }

    /// The next signal received (SIGXFSZ is logged and skipped). Cancel-safe (each
    /// stream's `poll_recv` is).
    pub async fn recv(&mut self) -> Signal {
        loop {
            let signal = std::future::poll_fn(|cx| {
                for (signal, stream) in &mut self.streams {
                    // `Ready(None)`: the runtime is shutting down; that stream is over.
                    if let std::task::Poll::Ready(Some(())) = stream.poll_recv(cx) {
                        return std::task::Poll::Ready(*signal);
                    }
                }
                std::task::Poll::Pending
            })
            .await;
            if signal == Signal::SIGXFSZ {
                warn!("SIGXFSZ: a write went past this process's file size limit (RLIMIT_FSIZE); it fails with EFBIG");
                continue;
            }
            return signal;
        }
    }

    /// The next stop signal (`STOP_SIGNALS`), for when no agent runs to forward the others
    /// to: those are logged and dropped. A signal meant for the agent that came before it
    /// started would only find it without its handlers yet, and most would kill it.
    pub async fn recv_stop(&mut self) -> Signal {
        loop {
            let signal = self.recv().await;
            if is_stop(signal) {
                return signal;
            }
            debug!(%signal, "no agent is running to forward this signal to; ignored");
        }
    }
}

fn command(spec: &AgentSpec, take_terminal: bool) -> Result<tokio::process::Command, AgentError> {
    let (program, args) = spec.argv.split_first().ok_or(AgentError::EmptyCommand)?;
    // The environment is not given to `Command` (see `exec`): the hook below execs with
    // its own envp, and std's is left empty.
    let exec = exec::Exec::new(&spec.argv, &spec.env)?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .process_group(0)
        .kill_on_drop(false);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let ids = match &spec.user {
        Some(user) => switch_ids(user)?,
        None => None,
    };
    let fd_limit = crate::spawn::fd_limit();
    let daemon = nix::unistd::getpid().as_raw();
    // SAFETY: the closure runs in the forked child, after std's own steps (stdio, cwd,
    // process group), and only makes async-signal-safe system calls (getpid, tcsetpgrp,
    // sigaction, sigprocmask, close_range/fcntl, setgroups, setgid, setuid, prctl,
    // getppid), then execvp, the call
    // std's own exec makes at this point (glibc's allocates nothing), on memory allocated
    // before the fork; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            if take_terminal {
                // First, with SIGTTOU still ignored as in the daemon (`reset_signals`
                // comes later), and before the agent's code can read the terminal.
                terminal::Terminal::take_in_child();
            }
            crate::spawn::cloexec_from_3(fd_limit);
            if let Some(ids) = &ids {
                ids.apply()?;
            }
            // After the ids: glibc's set*id calls may rely on its internal signal
            // handlers.
            crate::spawn::reset_signals();
            // After the ids, whose change clears it.
            crate::spawn::die_with_daemon(daemon)?;
            // Last: returns only on failure, which std reports from `spawn` as it
            // reports its own exec's.
            Err(exec.exec())
        });
    }
    Ok(command)
}

/// The ids the child switches to, or `None` when it already runs as the user (a
/// non-root daemon launching "itself").
fn switch_ids(user: &AgentUser) -> Result<Option<Ids>, AgentError> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 {
        if user.uid == euid && user.gid == nix::unistd::getegid().as_raw() {
            return Ok(None);
        }
        return Err(AgentError::SwitchUserNotPermitted {
            user: user.name.clone(),
        });
    }
    Ok(Some(Ids {
        uid: user.uid,
        gid: user.gid,
        groups: user.groups.clone(),
    }))
}

struct Ids {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl Ids {
    /// Groups first (needs CAP_SETGID), then the gid, then the uid (which drops the
    /// capabilities the first two need).
    fn apply(&self) -> io::Result<()> {
        // SAFETY: plain system calls on a valid, fully built slice.
        unsafe {
            if libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(self.gid) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setuid(self.uid) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_table() {
        let cases: &[(i32, u8)] = &[
            (0, 0),          // exit 0
            (3 << 8, 3),     // exit 3
            (255 << 8, 255), // exit 255
            (9, 137),        // SIGKILL
            (15, 143),       // SIGTERM
            (6 | 0x80, 134), // SIGABRT with a core dump
        ];
        for (raw, want) in cases {
            assert_eq!(
                exit_code_for(ExitStatus::from_raw(*raw)),
                *want,
                "raw status {raw:#x}"
            );
        }
    }

    /// What the platform is told of an agent that could not run: a stable code and a fixed
    /// message, neither carrying the command, the user or the variable it was about.
    #[test]
    fn public_codes_and_messages_carry_no_input() {
        let os = || io::Error::from_raw_os_error(libc::ENOENT);
        let program = || "CANARY-program --token=CANARY".to_string();
        let errors = [
            AgentError::EmptyCommand,
            AgentError::UnknownUser {
                user: "CANARY-user".into(),
            },
            AgentError::UserLookup {
                user: "CANARY-user".into(),
                source: nix::Error::ENOENT,
            },
            AgentError::SwitchUserNotPermitted {
                user: "CANARY-user".into(),
            },
            AgentError::InvalidEnv {
                name: "CANARY_VAR".into(),
            },
            AgentError::Cwd {
                path: "/CANARY".into(),
                source: os(),
            },
            AgentError::NotFound {
                program: program(),
                source: os(),
            },
            AgentError::NotExecutable {
                program: program(),
                source: os(),
            },
            AgentError::Spawn {
                program: program(),
                source: os(),
            },
            AgentError::Wait(os()),
        ];
        let mut codes = std::collections::HashSet::new();
        for error in &errors {
            let (code, message) = (error.public_code(), error.public_message());
            assert!(codes.insert(code), "{code} twice");
            assert!(code.starts_with("agent_"), "{code}");
            assert!(!message.is_empty(), "{code}");
            for text in [code, message] {
                assert!(!text.to_lowercase().contains("canary"), "{text}");
            }
        }
        assert_eq!(errors[6].public_code(), "agent_not_found");
        assert_eq!(errors[7].public_code(), "agent_not_executable");
    }

    #[test]
    fn spawn_errors_map_to_shell_codes() {
        let cases = [
            (libc::ENOENT, ExitCode::AgentNotFound),
            (libc::EACCES, ExitCode::AgentNotExecutable),
            (libc::ENOEXEC, ExitCode::AgentNotExecutable),
            (libc::EPERM, ExitCode::Os),
        ];
        for (errno, want) in cases {
            let error = AgentError::from_spawn("x".into(), io::Error::from_raw_os_error(errno));
            assert_eq!(error.exit_code(), want, "errno {errno}");
        }
    }
}
