//! Children the daemon owns, and (when PID 1) the orphans it must reap.
//!
//! Exactly one owner waits on each child: tokio's `Child::wait` for the ones we spawn.
//! A blanket `waitpid(-1)` would steal their exit statuses, so every spawn goes through
//! `owned().spawn`, which records the pid while holding the registry lock; the orphan
//! reaper only reaps zombies that are not in the registry, deciding and reaping under
//! that same lock, so a child being spawned right now is never taken. It never calls
//! `waitpid(-1)`: only `waitpid(pid, WNOHANG)` on a pid it saw as our zombie.
//!
//! A child spawned any other way (`std::process::Command`, a library that forks) is not
//! in the registry and its status may be reaped from under it: spawn through `owned()`.
//! Every owned child is forked on one thread of its own (`Forker`), so that its
//! parent-death signal is tied to the daemon's life, not to a tokio thread's.
//!
//! Which zombies are ours: `/proc/[pid]/stat` entries whose parent is us and whose state
//! is `Z`. (`/proc/self/task/*/children` would be cheaper but needs
//! `CONFIG_PROC_CHILDREN`, which common kernels, including this project's CI, lack.)
//! The scan needs the `/proc` of our own PID namespace (`unshare --mount-proc`, or any
//! container runtime); with a foreign `/proc` it finds nothing and reaps nothing.

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// The backstop interval of the orphan reaper, in case a SIGCHLD was coalesced with one
/// tokio consumed first or arrived while a pass was running.
pub const REAP_INTERVAL: Duration = Duration::from_secs(5);

/// A `/proc/[pid]/stat` line is a few hundred bytes; anything longer is not a stat line.
const MAX_STAT_BYTES: u64 = 4096;

/// The pids of children some task of ours waits on.
#[derive(Debug, Default)]
pub struct OwnedChildren {
    pids: Mutex<HashSet<u32>>,
}

/// The process-wide registry.
pub fn owned() -> &'static OwnedChildren {
    static OWNED: OnceLock<OwnedChildren> = OnceLock::new();
    OWNED.get_or_init(OwnedChildren::default)
}

impl OwnedChildren {
    /// Spawns `command` and records its pid before any reaper can look at it. The fork
    /// happens on the forking thread (see [`Forker`]); the calling thread waits for it,
    /// as it waits for the child's `execve` in `Command::spawn` anyway. Must be called
    /// inside a tokio runtime, whose reactor then watches the child.
    pub fn spawn(
        &self,
        command: &mut tokio::process::Command,
    ) -> std::io::Result<tokio::process::Child> {
        let mut pids = self.lock();
        let child = Forker::get().spawn(command)?;
        if let Some(pid) = child.id() {
            pids.insert(pid);
        }
        Ok(child)
    }

    /// Call after the owner's `wait` returned.
    pub fn release(&self, pid: u32) {
        self.lock().remove(&pid);
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.lock().contains(&pid)
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<u32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fork request: the command (given back with the result), and the runtime whose
/// reactor is to watch the child.
struct ForkRequest {
    command: tokio::process::Command,
    runtime: tokio::runtime::Handle,
    reply: std::sync::mpsc::SyncSender<ForkReply>,
}

type ForkReply = (
    tokio::process::Command,
    std::io::Result<tokio::process::Child>,
);

/// The one thread every owned child is forked from. A child's parent-death signal
/// (`spawn::die_with_daemon`) fires when the *thread* that forked it ends, not the
/// process, and tokio's threads may end while the daemon lives: a blocking-pool thread
/// retires after idling, `block_in_place` hands a worker's place to a new thread, and a
/// runtime may be dropped while another goes on (as in tests). This one never ends, so a
/// child is signalled when the daemon dies and only then.
struct Forker {
    requests: std::sync::mpsc::Sender<ForkRequest>,
}

impl Forker {
    fn get() -> &'static Forker {
        static FORKER: OnceLock<Forker> = OnceLock::new();
        FORKER.get_or_init(|| {
            let (requests, incoming) = std::sync::mpsc::channel::<ForkRequest>();
            // A thread that cannot be started leaves every spawn failing with "the forking
            // thread is gone" (below), not the daemon panicking.
            let _ = std::thread::Builder::new()
                .name("grexal-fork".into())
                .spawn(move || {
                    for request in incoming {
                        let mut command = request.command;
                        let result = {
                            let _runtime = request.runtime.enter();
                            command.spawn()
                        };
                        // A caller that is gone has nothing to receive; the child is then
                        // dropped here, and killed if `kill_on_drop` asks for it.
                        let _ = request.reply.send((command, result));
                    }
                });
            Forker { requests }
        })
    }

    fn spawn(
        &self,
        command: &mut tokio::process::Command,
    ) -> std::io::Result<tokio::process::Child> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| std::io::Error::other("a child is spawned outside a tokio runtime"))?;
        let gone = || std::io::Error::other("the forking thread is gone");
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        // Moved there and back: hooks and all, the command stays the caller's (whose
        // `pre_exec` hooks may own what must be dropped after the spawn, as the agent's
        // envp).
        let request = ForkRequest {
            command: std::mem::replace(command, tokio::process::Command::new("")),
            runtime,
            reply,
        };
        self.requests.send(request).map_err(|_| gone())?;
        let (returned, result) = answer.recv().map_err(|_| gone())?;
        *command = returned;
        result
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("prctl(PR_SET_CHILD_SUBREAPER) failed")]
    Subreaper(#[source] nix::Error),
}

/// Whether this process is the init of its PID namespace.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Makes orphaned descendants re-parent to this process instead of to the namespace's
/// init, so the daemon reaps its agent's orphans even when it is not PID 1 (under
/// systemd, in `dev`, and in tests without a PID namespace).
pub fn become_subreaper() -> Result<(), ReaperError> {
    nix::sys::prctl::set_child_subreaper(true).map_err(ReaperError::Subreaper)
}

/// Starts the orphan reaper: on every SIGCHLD and every `REAP_INTERVAL`, reaps the
/// zombie children that are not owned (see the module docs), until `stop`; then one last
/// pass. When not PID 1 it first (before returning) makes the daemon a child subreaper
/// (`become_subreaper`), so the agent's orphans come to us either way. Must be called inside a tokio runtime.
pub fn spawn_orphan_reaper(stop: CancellationToken) -> JoinHandle<()> {
    let span = tracing::info_span!("orphan_reaper", pid1 = is_pid1());
    // Before returning, not in the task: an orphan made right after this call must
    // already re-parent to us.
    if !is_pid1() {
        if let Err(error) = become_subreaper() {
            span.in_scope(|| warn!(%error, "cannot become a child subreaper; orphans go to the namespace's init"));
        }
    }
    tokio::spawn(
        async move {
            // Without a SIGCHLD stream the interval alone still reaps, only later.
            let mut sigchld = match signal(SignalKind::child()) {
                Ok(stream) => Some(stream),
                Err(error) => {
                    warn!(%error, "cannot listen for SIGCHLD; reaping on the interval only");
                    None
                }
            };
            let mut tick = tokio::time::interval(REAP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            info!("orphan reaper started");
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = recv_sigchld(&mut sigchld) => {}
                    _ = tick.tick() => {}
                }
                reap_orphans();
            }
            reap_orphans();
            debug!("orphan reaper stopped");
        }
        .instrument(span),
    )
}

async fn recv_sigchld(stream: &mut Option<tokio::signal::unix::Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// One pass: reaps every zombie child of ours that is not owned, and returns how many.
///
/// The `/proc` scan runs without the registry lock; the decision (not owned) and the
/// `waitpid(pid, WNOHANG)` run under it. That suffices: a zombie's pid cannot be reused
/// before it is reaped, and an owned child that was a zombie before its `spawn` recorded
/// it is, once we hold the lock, either recorded (skipped) or already reaped by std's
/// failed-spawn cleanup (`ECHILD`).
pub fn reap_orphans() -> usize {
    let zombies = zombie_children(std::process::id());
    if zombies.is_empty() {
        return 0;
    }
    let pids = owned().lock();
    let mut reaped = 0;
    for pid in zombies {
        if pids.contains(&pid) {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                reaped += 1;
                debug!(pid, code, "reaped orphan");
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                reaped += 1;
                debug!(pid, signal = %signal, "reaped orphan");
            }
            // Not a zombie after all, or no longer ours (reaped elsewhere): nothing to do.
            Ok(_) | Err(nix::Error::ECHILD) => {}
            Err(error) => warn!(pid, %error, "waitpid on an orphan failed"),
        }
    }
    reaped
}

/// The pids of zombie processes whose parent is `parent`, from `/proc`. Entries that
/// vanish or cannot be read during the scan are skipped.
fn zombie_children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut zombies = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some(stat) = read_stat(pid) else { continue };
        if let Some((state, ppid)) = parse_stat(&stat) {
            if state == 'Z' && ppid == parent {
                zombies.push(pid);
            }
        }
    }
    zombies
}

fn read_stat(pid: u32) -> Option<String> {
    let file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut text = String::new();
    file.take(MAX_STAT_BYTES).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Parses the state and the parent pid out of a `/proc/[pid]/stat` line:
/// `pid (comm) S ppid ...`. `comm` may contain spaces and parentheses, so the fields
/// start after the last `)`.
fn parse_stat(line: &str) -> Option<(char, u32)> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let mut state_chars = fields.next()?.chars();
    let state = state_chars.next()?;
    if state_chars.next().is_some() {
        return None;
    }
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child set to die with the daemon, spawned through `owned()` by a thread that then
    /// ends (with its runtime: a test's, a retired blocking-pool thread): it lives on, as
    /// the parent-death signal follows the forking thread, which is not the caller's.
    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        let pid = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut command = tokio::process::Command::new("sleep");
                command.arg("30");
                let daemon = nix::unistd::getpid().as_raw();
                // SAFETY: prctl and getppid are plain system calls.
                unsafe {
                    command.pre_exec(move || crate::spawn::die_with_daemon(daemon));
                }
                let child = owned().spawn(&mut command).expect("spawn");
                child.id().expect("pid")
            })
        })
        .join()
        .expect("the asking thread");
        // A SIGTERM sent at the thread's end would have arrived by now.
        std::thread::sleep(Duration::from_millis(300));
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = status
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned));
        let target = Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(target, None);
        owned().release(pid);
        assert_eq!(state.as_deref(), Some("S"), "{status}");
    }

    #[test]
    fn parse_stat_table() {
        let cases: &[(&str, Option<(char, u32)>)] = &[
            ("42 (sleep) Z 1 42 42 0 -1 4194564 0", Some(('Z', 1))),
            ("7 (a b) S 3 7 7 0", Some(('S', 3))),
            ("7 (evil) Z 1) R 99 7 7 0", Some(('R', 99))),
            ("7 ()) Z 12 7", Some(('Z', 12))),
            ("7 (x) Z", None),
            ("7 (x) ZZ 1", None),
            ("7 (x) Z notanumber", None),
            ("no paren at all", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_stat(line), *want, "line {line:?}");
        }
    }

    #[test]
    fn own_stat_parses_with_our_parent() {
        let stat = read_stat(std::process::id()).expect("own stat");
        let (state, ppid) = parse_stat(&stat).expect("parse own stat");
        assert!(matches!(state, 'R' | 'S'), "state {state}");
        assert_eq!(ppid, std::os::unix::process::parent_id());
    }

    proptest::proptest! {
        #[test]
        fn parse_stat_never_panics(line in ".{0,300}") {
            let _ = parse_stat(&line);
        }
    }
}
