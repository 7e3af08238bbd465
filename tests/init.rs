//! The real binary as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`):
//! the agent's exit code comes back through `unshare`, orphans are reaped, and SIGTERM
//! sent from outside the namespace reaches the agent.
//!
//! The manifest declares no connections, so no bundle and no key are needed. Every path
//! the daemon writes is in a temp dir; its environment is cleared.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_grexal-sidecar");
const DEADLINE: Duration = Duration::from_secs(30);

/// Whether these tests can run here: `unshare` and root (for a PID namespace).
fn can_run() -> bool {
    let ok = Path::new("/usr/bin/unshare").exists() && nix::unistd::geteuid().is_root();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "unshare or root missing and CI is set"
        );
        eprintln!("skipped: needs /usr/bin/unshare and root");
    }
    ok
}

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("grexal.json"),
            br#"{"manifest_version": 1, "connections": []}"#,
        )
        .expect("manifest");
        Sandbox { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `unshare ... grexal-sidecar run ... -- sh -c SCRIPT`.
    fn start(&self, script: &str, extra: &[&str]) -> Daemon {
        self.start_agent(&["sh", "-c", script], extra)
    }

    /// `unshare ... grexal-sidecar run ... -- AGENT...`, stderr drained by a thread.
    fn start_agent(&self, agent: &[&str], extra: &[&str]) -> Daemon {
        let mut command = Command::new("/usr/bin/unshare");
        command
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                BIN,
                "run",
                "--sandbox-id",
                "t",
            ])
            .arg("--manifest")
            .arg(self.path("grexal.json"))
            .arg("--socket")
            .arg(self.path("sidecar.sock"))
            .arg("--credentials-dir")
            .arg(self.path("credentials"))
            .arg("--env-file")
            .arg(self.path("agent.env"))
            .arg("--public-key-out")
            .arg(self.path("sandbox.pub"))
            .args(["--log", "debug"])
            .args(extra)
            .arg("--")
            .args(agent)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn unshare");
        let mut stderr = child.stderr.take().expect("stderr");
        let log = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Daemon {
            child,
            log: Some(log),
        }
    }
}

struct Daemon {
    child: Child,
    log: Option<JoinHandle<String>>,
}

impl Daemon {
    /// Waits for `unshare` to exit; on timeout kills it and fails with the daemon's log.
    fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let log = self
                    .log
                    .take()
                    .map(|h| h.join().unwrap_or_default())
                    .unwrap_or_default();
                return (status, log);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let log = self
                    .log
                    .take()
                    .map(|h| h.join().unwrap_or_default())
                    .unwrap_or_default();
                panic!("the daemon did not exit within {DEADLINE:?}; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The host pid of the namespace's PID 1: the child of `unshare`.
    fn pid1(&self) -> i32 {
        let unshare = self.child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = children_of(unshare).first() {
                return *pid;
            }
            assert!(
                Instant::now() < deadline,
                "unshare {unshare} never forked its PID 1"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // `--kill-child` makes unshare take its PID 1 (and with it the namespace) along.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn children_of(parent: u32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(parent)
        {
            found.push(pid);
        }
    }
    found
}

/// Polls for a file the agent creates once it is ready; fails early if the daemon exits.
fn wait_for_file(path: &Path, daemon: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        if let Some(status) = daemon.child.try_wait().expect("try_wait") {
            let log = daemon
                .log
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            panic!(
                "the daemon exited ({status}) before {} appeared; its log:\n{log}",
                path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn agent_exit_code_comes_back_through_pid1() {
    if !can_run() {
        return;
    }
    let sandbox = Sandbox::new();
    for code in [0, 3, 255] {
        // The agent's parent must be the daemon, as PID 1.
        let script = format!("[ \"$PPID\" = 1 ] || exit 93; exit {code}");
        let (status, log) = sandbox.start(&script, &[]).wait();
        assert_eq!(status.code(), Some(code), "status {status}; log:\n{log}");
    }
}

#[test]
fn orphans_of_the_agent_are_reaped_by_pid1() {
    if !can_run() {
        return;
    }
    let sandbox = Sandbox::new();
    // The inner shell leaves a sleep behind and exits: the sleep re-parents to PID 1.
    // Once the sleep exits it is a zombie until PID 1 reaps it; the agent waits for it
    // to vanish from /proc. 92: not re-parented to PID 1; 91: never reaped.
    let script = r#"
        [ "$PPID" = 1 ] || exit 93
        orphan=$(sh -c 'sleep 0.3 >/dev/null 2>&1 & echo $!')
        if read -r line < /proc/$orphan/stat; then
            rest=${line##*")"}
            set -- $rest
            [ "$2" = 1 ] || exit 92
        fi
        i=0
        while [ -e /proc/$orphan ]; do
            i=$((i + 1))
            [ $i -gt 150 ] && exit 91
            sleep 0.1
        done
        exit 0
    "#;
    let (status, log) = sandbox.start(script, &[]).wait();
    assert_eq!(
        status.code(),
        Some(0),
        "status {status} (91: zombie never reaped, 92: not re-parented); log:\n{log}"
    );
}

#[test]
fn sigterm_from_outside_reaches_the_agent() {
    if !can_run() {
        return;
    }
    let sandbox = Sandbox::new();
    let ready = sandbox.path("ready");
    let script = format!(
        "trap 'exit 42' TERM; touch '{}'; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut daemon = sandbox.start(&script, &[]);
    wait_for_file(&ready, &mut daemon);
    let pid1 = daemon.pid1();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid1),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill PID 1");
    let (status, log) = daemon.wait();
    assert_eq!(status.code(), Some(42), "status {status}; log:\n{log}");
}

/// A PID 1 ignores a signal it has no handler for: SIGUSR1, SIGUSR2 and SIGWINCH were
/// dropped, never forwarded. Each reaches the agent now, and the daemon stays up.
#[test]
fn other_signals_to_pid1_reach_the_agent() {
    if !can_run() {
        return;
    }
    let sandbox = Sandbox::new();
    let ready = sandbox.path("ready");
    let got = sandbox.path("got");
    let script = format!(
        "for s in USR1 USR2 WINCH; do trap \"echo $s >> '{got}'\" $s; done; trap 'exit 42' TERM; \
         touch '{}'; while :; do sleep 0.05; done",
        ready.display(),
        got = got.display()
    );
    let mut daemon = sandbox.start(&script, &[]);
    wait_for_file(&ready, &mut daemon);
    let pid1 = nix::unistd::Pid::from_raw(daemon.pid1());
    use nix::sys::signal::Signal;
    for (signal, name) in [
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
        (Signal::SIGWINCH, "WINCH"),
    ] {
        nix::sys::signal::kill(pid1, signal).expect("kill PID 1");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&got).is_ok_and(|text| text.contains(name)) {
            assert!(
                daemon.child.try_wait().expect("try_wait").is_none(),
                "the daemon exited on SIG{name}"
            );
            assert!(
                Instant::now() < deadline,
                "SIG{name} to PID 1 never reached the agent"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    nix::sys::signal::kill(pid1, Signal::SIGTERM).expect("kill PID 1");
    let (status, log) = daemon.wait();
    assert_eq!(status.code(), Some(42), "status {status}; log:\n{log}");
}

#[test]
fn an_agent_ignoring_sigterm_is_killed_after_the_stop_timeout() {
    if !can_run() {
        return;
    }
    let sandbox = Sandbox::new();
    let ready = sandbox.path("ready");
    let script = format!(
        "trap '' TERM; touch '{}'; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut daemon = sandbox.start(&script, &["--stop-timeout", "1"]);
    wait_for_file(&ready, &mut daemon);
    let pid1 = daemon.pid1();
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid1),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill PID 1");
    let (status, log) = daemon.wait();
    assert_eq!(status.code(), Some(137), "status {status}; log:\n{log}");
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "killed before the stop timeout; log:\n{log}"
    );
}

#[test]
fn a_missing_agent_command_exits_127() {
    if !can_run() {
        return;
    }
    let sandbox = Sandbox::new();
    let (status, log) = sandbox
        .start_agent(&["/nonexistent/grexal-agent"], &[])
        .wait();
    assert_eq!(status.code(), Some(127), "status {status}; log:\n{log}");
}
