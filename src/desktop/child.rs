//! One supervised child process: spawned through the reaper's registry in a process
//! group of its own, waited on by exactly one task (its watcher), its output drained into
//! tracing, stopped with SIGTERM to it, then SIGKILL to its whole process group.
//!
//! Signals go through the watcher task, the only place that knows whether the pid has
//! been reaped yet: a pid (or the group it leads) is signalled only while its zombie
//! cannot have been collected, so a recycled pid is never hit. While the leader is not
//! reaped its pid cannot name another process or group.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn, Instrument};

use super::{DesktopError, RunAs};

/// Longest line of child output that is logged; the rest is cut.
const MAX_LOG_LINE: usize = 512;
/// Lines per second logged per stream; a chatty child's excess is counted, not logged.
const MAX_LOG_LINES_PER_SEC: u32 = 50;
/// How long after SIGKILL we still wait before giving up on a child (it is then the
/// watcher's: it keeps waiting and releases the pid when the kernel reports the exit).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How a child ended, as the watcher saw it.
#[derive(Debug, Clone)]
pub(crate) enum Exit {
    Status(ExitStatus),
    /// `wait` itself failed; the child is treated as gone.
    WaitFailed(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Status(status) => write!(f, "{status}"),
            Exit::WaitFailed(error) => write!(f, "wait failed: {error}"),
        }
    }
}

/// Who a signal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recipient {
    /// The child alone: SIGTERM, so Chromium shuts its own helpers down in order.
    Child,
    /// The child's process group: SIGKILL, so the helpers of a Chromium that ignored
    /// SIGTERM (zygote, renderers, GPU process) do not outlive it.
    Group,
}

/// A running (or just exited) child. Dropping the handle does not kill the child; the
/// supervisor always stops children explicitly.
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pub(crate) name: &'static str,
    pub(crate) pid: u32,
    signals: mpsc::UnboundedSender<(Recipient, Signal)>,
    exit: watch::Receiver<Option<Exit>>,
}

impl ChildHandle {
    /// Spawns `cmd` with piped output, in a process group of its own, registered as owned
    /// so a PID-1 reaper leaves it alone, and starts its watcher and output drains.
    pub(crate) fn spawn(
        name: &'static str,
        cmd: &mut Command,
    ) -> Result<ChildHandle, DesktopError> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, as the agent has: a Ctrl-C on the daemon's terminal (SIGINT to
            // the foreground group) must not kill the desktop while the agent is told to
            // stop; the daemon stops each child itself. And a group it leads, for `stop`'s
            // SIGKILL to take the child's own children along.
            .process_group(0)
            // The watcher waits on the child, so normally `Child` is dropped only after it
            // was reaped and this is a no-op. If the watcher itself is dropped first (the
            // runtime shutting down, e.g. a test that panicked), the child is killed rather
            // than orphaned.
            .kill_on_drop(true);
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let mut child =
            crate::reaper::owned()
                .spawn(cmd)
                .map_err(|source| DesktopError::Spawn {
                    child: name,
                    program: program.clone(),
                    source,
                })?;
        let Some(pid) = child.id() else {
            // Cannot happen for a freshly spawned child that nobody waited on.
            return Err(DesktopError::Spawn {
                child: name,
                program,
                source: std::io::Error::other("spawned child has no pid"),
            });
        };
        if let Some(out) = child.stdout.take() {
            tokio::spawn(drain(out).instrument(tracing::debug_span!(
                "child_output",
                child = name,
                pid,
                stream = "stdout"
            )));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(drain(err).instrument(tracing::debug_span!(
                "child_output",
                child = name,
                pid,
                stream = "stderr"
            )));
        }
        let (signals, mut signal_rx) = mpsc::unbounded_channel::<(Recipient, Signal)>();
        let (exit_tx, exit) = watch::channel(None);
        let watcher = async move {
            let mut signals_open = true;
            let exit = loop {
                tokio::select! {
                    status = child.wait() => {
                        break match status {
                            Ok(status) => Exit::Status(status),
                            Err(error) => Exit::WaitFailed(error.to_string()),
                        };
                    }
                    signal = signal_rx.recv(), if signals_open => match signal {
                        // `wait` has not returned, so the pid is still ours (at worst a
                        // zombie only we may reap), and so is the group it leads:
                        // signalling either is safe.
                        Some((recipient, signal)) => {
                            let target = Pid::from_raw(pid as i32);
                            let sent = match recipient {
                                Recipient::Child => nix::sys::signal::kill(target, signal),
                                Recipient::Group => nix::sys::signal::killpg(target, signal),
                            };
                            if let Err(error) = sent {
                                debug!(%error, ?signal, ?recipient, "signal not delivered");
                            }
                        }
                        None => signals_open = false,
                    },
                }
            };
            remove_shared_memory_of(pid);
            crate::reaper::owned().release(pid);
            debug!(%exit, "child reaped");
            let _ = exit_tx.send(Some(exit));
        };
        tokio::spawn(watcher.instrument(tracing::debug_span!("child", child = name, pid)));
        debug!(child = name, pid, "child spawned");
        Ok(ChildHandle {
            name,
            pid,
            signals,
            exit,
        })
    }

    /// The exit, if the child has been reaped.
    pub(crate) fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Resolves when the child has exited (immediately if it already has).
    pub(crate) async fn wait(&self) -> Exit {
        let mut exit = self.exit.clone();
        let result = match exit.wait_for(Option::is_some).await {
            Ok(exit) => exit
                .clone()
                .unwrap_or_else(|| Exit::WaitFailed("no status".into())),
            // The watcher is gone without a status: only if the runtime is shutting down.
            Err(_) => Exit::WaitFailed("watcher stopped".into()),
        };
        result
    }

    fn send(&self, recipient: Recipient, signal: Signal) {
        let _ = self.signals.send((recipient, signal));
    }

    /// SIGTERM to the child, then SIGKILL to its process group after `grace`; returns once
    /// the child is reaped (or after a last bounded wait if even SIGKILL seems not to
    /// land).
    pub(crate) async fn stop(&self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let started = Instant::now();
        self.send(Recipient::Child, Signal::SIGTERM);
        if let Ok(exit) = tokio::time::timeout(grace, self.wait()).await {
            debug!(child = self.name, pid = self.pid, %exit, elapsed_ms = started.elapsed().as_millis() as u64, "child stopped");
            return;
        }
        warn!(
            child = self.name,
            pid = self.pid,
            grace_ms = grace.as_millis() as u64,
            "child ignored SIGTERM, killing"
        );
        self.send(Recipient::Group, Signal::SIGKILL);
        self.reaped_after_kill().await;
    }

    /// SIGKILL to the child's process group at once, for a child that stopped answering: a
    /// hung process may never act on SIGTERM (a stopped one does not until it is
    /// continued), and the grace would only add to the time the desktop is down. Its System
    /// V segments go when it is reaped, as any exited child's do. Returns once it is reaped
    /// (or after a last bounded wait).
    pub(crate) async fn kill(&self) {
        if self.exited().is_some() {
            return;
        }
        self.send(Recipient::Group, Signal::SIGKILL);
        self.reaped_after_kill().await;
    }

    async fn reaped_after_kill(&self) {
        if tokio::time::timeout(KILL_WAIT, self.wait()).await.is_err() {
            warn!(
                child = self.name,
                pid = self.pid,
                "child not reaped after SIGKILL"
            );
        }
    }
}

impl Drop for ChildHandle {
    /// A handle dropped while its child runs (a start abandoned on shutdown) must not
    /// leave an orphan: the queued SIGKILL still reaches the watcher, which reaps it.
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.send(Recipient::Group, Signal::SIGKILL);
        }
    }
}

/// Removes the System V shared memory segments `pid` created. x11vnc makes ~40 of them
/// for its framebuffer and never marks them for removal: killed (a crash, or our SIGKILL
/// after the grace period), it leaves them behind for good, and a few hundred restarts
/// reach the kernel's limit on segments (`kernel.shmmni`, 4096), after which no x11vnc
/// starts ("shmget: No space left on device"). Called right after the reap, while the pid
/// cannot have been reused; a segment still attached (the X server's side) goes when it
/// is detached.
///
/// Only a segment's owner may remove it without CAP_SYS_ADMIN, so the segments of the
/// desktop's user are removed as that user (`as_user`).
fn remove_shared_memory_of(pid: u32) {
    let Ok(table) = std::fs::read_to_string("/proc/sysvipc/shm") else {
        return;
    };
    let segments = segments_created_by(&table, pid);
    let mut owners: Vec<RunAs> = Vec::new();
    for segment in &segments {
        if !owners.contains(&segment.owner) {
            owners.push(segment.owner);
        }
    }
    let me = nix::unistd::geteuid().as_raw();
    let mut removed = 0usize;
    for owner in owners {
        let ids: Vec<i32> = segments
            .iter()
            .filter(|s| s.owner == owner)
            .map(|s| s.shmid)
            .collect();
        let remove = || {
            ids.iter()
                // SAFETY: IPC_RMID takes no buffer; a segment gone meanwhile is EINVAL/EIDRM.
                .filter(
                    |&&id| unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } == 0,
                )
                .count()
        };
        let done = if owner.uid == me {
            Ok(remove())
        } else {
            super::as_user::run(owner, remove)
        };
        match done {
            Ok(n) => removed += n,
            Err(error) => {
                warn!(uid = owner.uid, %error, "cannot remove the exited child's shared memory as its owner")
            }
        }
    }
    if removed > 0 {
        debug!(removed, "removed the exited child's shared memory segments");
    }
}

/// One System V shared memory segment and its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    shmid: i32,
    owner: RunAs,
}

/// The segments in `/proc/sysvipc/shm` (`table`) whose creator is `pid`.
fn segments_created_by(table: &str, pid: u32) -> Vec<Segment> {
    // Columns: key shmid perms size cpid lpid nattch uid gid cuid cgid ...
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| fields.get(i)?.parse::<u32>().ok();
            let shmid = fields.get(1)?.parse::<i32>().ok()?;
            let owner = RunAs {
                uid: number(7)?,
                gid: number(8)?,
            };
            (number(4)? == pid).then_some(Segment { shmid, owner })
        })
        .collect()
}

/// Reads a child's stream to the end so the child never blocks on a full pipe; logs
/// lines at debug, each cut to `MAX_LOG_LINE`, at most `MAX_LOG_LINES_PER_SEC`.
async fn drain(mut stream: impl AsyncRead + Unpin) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::with_capacity(MAX_LOG_LINE);
    let mut cut = false;
    let mut window = Instant::now();
    let mut logged = 0u32;
    let mut dropped = 0u64;
    let mut emit = |line: &mut Vec<u8>, cut: &mut bool| {
        if window.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 {
                debug!(dropped, "child output lines not logged (rate limit)");
            }
            window = Instant::now();
            logged = 0;
            dropped = 0;
        }
        if logged < MAX_LOG_LINES_PER_SEC {
            logged += 1;
            let text = String::from_utf8_lossy(line);
            // Debug: the line is the child's (Chromium's, run as the agent's user), and a
            // `\r` or an escape sequence in it must not reach our log as it is.
            debug!(line = ?text.trim_end(), truncated = *cut, "child output");
        } else {
            dropped += 1;
        }
        line.clear();
        *cut = false;
    };
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buf[..n] {
            if byte == b'\n' {
                emit(&mut line, &mut cut);
            } else if line.len() < MAX_LOG_LINE {
                line.push(byte);
            } else {
                cut = true;
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, &mut cut);
    }
}

/// Whether `pid` names a live process (a zombie counts as live; EPERM means it exists).
pub(crate) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_picked_by_their_creator() {
        let table = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
         0    1835017   600                  5120 31859 31856      0     0     0     0     0 1795601154 1795601154 1795601154                     0                     0
         0    1835018   600               4096000 31859 31856      1 65534 65534 65534 65534 1795601154 1795601154 1795601154               4096000                     0
         0    1835019   600                  4096 31856 31859      0     0     0     0     0 1795601154 1795601154 1795601154                     0                     0
";
        let segment = |shmid, uid| Segment {
            shmid,
            owner: RunAs { uid, gid: uid },
        };
        assert_eq!(
            segments_created_by(table, 31859),
            [segment(1835017, 0), segment(1835018, 65534)]
        );
        assert_eq!(segments_created_by(table, 31856), [segment(1835019, 0)]);
        assert!(segments_created_by(table, 1).is_empty());
        assert!(segments_created_by("", 31859).is_empty());
    }

    #[tokio::test]
    async fn chatty_child_does_not_block_and_exit_is_reported() {
        // 4 MiB of output on both streams would fill any pipe if nobody drained it.
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "head -c 4194304 /dev/zero | tr '\\0' 'x'; head -c 4194304 /dev/zero >&2; exit 3",
        ]);
        let child = ChildHandle::spawn("test", &mut cmd).expect("spawn");
        let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("child finished");
        match exit {
            Exit::Status(status) => assert_eq!(status.code(), Some(3)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!crate::reaper::owned().contains(child.pid));
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "trap '' TERM; touch \"$1\"; while :; do sleep 0.05; done",
            "sh",
        ])
        .arg(&ready);
        let child = ChildHandle::spawn("test", &mut cmd).expect("spawn");
        assert!(crate::reaper::owned().contains(child.pid));
        // Only once the trap is installed does SIGTERM test the escalation.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "child never got ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        child.stop(Duration::from_millis(300)).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        match child.exited() {
            Some(Exit::Status(status)) => {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(status.signal(), Some(libc::SIGKILL));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!pid_alive(child.pid as i32) || !crate::reaper::owned().contains(child.pid));
    }

    /// Whether `pid` runs (a zombie, killed but not yet reaped by whoever inherited it,
    /// does not).
    fn runs(pid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    }

    /// A `sh` child running `prelude` and then a `sleep` of its own in the background,
    /// once both run: the child and the grandchild's pid.
    async fn spawn_with_grandchild(prelude: &str) -> (ChildHandle, i32) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (grandchild, ready) = (dir.path().join("grandchild"), dir.path().join("ready"));
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            &format!("{prelude}sleep 600 & echo $! > \"$1\"; touch \"$2\"; wait"),
            "sh",
        ])
        .arg(&grandchild)
        .arg(&ready);
        let child = ChildHandle::spawn("test", &mut cmd).expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "child never got ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let grandchild: i32 = std::fs::read_to_string(&grandchild)
            .expect("pid")
            .trim()
            .parse()
            .expect("pid");
        (child, grandchild)
    }

    /// Fails unless `grandchild` ends within 5 s of the `what` that should have ended it
    /// (killing it then, so that a failed test leaves nothing behind).
    async fn assert_ends(grandchild: i32, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs(grandchild) {
            if Instant::now() > deadline {
                let _ = nix::sys::signal::kill(Pid::from_raw(grandchild), Signal::SIGKILL);
                panic!("the child's own child {grandchild} outlived the {what}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A child that ignores SIGTERM, with a child of its own that does too (Chromium's
    /// helpers): the SIGKILL goes to the group, so neither outlives the stop.
    #[tokio::test]
    async fn stop_kills_the_childs_own_children_with_it() {
        let (child, grandchild) = spawn_with_grandchild("trap '' TERM; ").await;
        assert!(runs(grandchild));
        child.stop(Duration::from_millis(300)).await;
        assert_ends(grandchild, "stop").await;
    }

    /// A stopped child (SIGSTOP: it cannot act on SIGTERM) is killed at once, with its own
    /// children, without waiting out a grace period.
    #[tokio::test]
    async fn kill_ends_a_stopped_child_and_its_group_at_once() {
        let (child, grandchild) = spawn_with_grandchild("").await;
        nix::sys::signal::kill(Pid::from_raw(child.pid as i32), Signal::SIGSTOP).expect("stop");
        let started = Instant::now();
        child.kill().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        match child.exited() {
            Some(Exit::Status(status)) => {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(status.signal(), Some(libc::SIGKILL));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_ends(grandchild, "kill").await;
    }

    #[test]
    fn child_is_killed_when_the_runtime_drops_its_watcher() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let pid = runtime.block_on(async {
            let mut cmd = Command::new("/bin/sleep");
            cmd.arg("60");
            let child = ChildHandle::spawn("test", &mut cmd).expect("spawn");
            let pid = child.pid;
            // Leak the handle: only the runtime's shutdown can end the watcher now.
            std::mem::forget(child);
            pid
        });
        drop(runtime);
        // Killed: gone, or a zombie nobody is left to reap in this test process.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            if stat.is_empty() || state == Some(Some('Z')) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "child {pid} survived its runtime: {stat}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
