//! What the desktop's children (the display, the VNC server, Chromium) inherit from the
//! daemon: only their stdio, and every signal at its default disposition, like the agent.
//! They run as the agent's user, who may take any fd of theirs with `pidfd_getfd`, so an
//! fd the daemon's own launcher left open without `CLOEXEC` must not reach them. And what
//! they leave: nothing of Chromium's temp dir outlives the daemon's clean stop, and no
//! child (the agent included) outlives a daemon killed outright. And where Chromium's
//! shared memory goes when `/dev/shm` is small.
//!
//! Skipped only when Xvnc or Chromium is missing and `CI` is unset.

mod support;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// The fd the launcher hands the daemon without `CLOEXEC`.
const INHERITED_FD: i32 = 9;

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every live process under `root` (not `root` itself), each with its parent.
fn descendants(root: u32) -> Vec<(u32, u32)> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &all {
            if ppid == parent {
                found.push((pid, ppid));
                frontier.push(pid);
            }
        }
    }
    found
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The process's ignored signals (`SigIgn:` in /proc/PID/status).
fn ignored_signals(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0)
}

/// A project with a manifest that declares nothing, for `dev --desktop`.
fn project() -> tempfile::TempDir {
    let dir = open_tempdir();
    write(
        &dir.path().join("grexal.json"),
        r#"{"manifest_version": 1, "connections": []}"#,
        0o644,
    );
    dir
}

/// `dev --desktop` (Chromium without its sandbox) in `dir`, with its run dir and profile.
fn dev_desktop(dir: &Path, run_dir: &Path, profile: &Path) -> std::process::Command {
    let mut cmd = command();
    cmd.current_dir(dir)
        .args(["dev", "--desktop", "--chromium-sandbox", "off"])
        .arg("--desktop-run-dir")
        .arg(run_dir)
        .arg("--browser-profile")
        .arg(profile);
    cmd
}

/// Waits until the daemon's desktop is up, or panics with its log.
fn wait_desktop_ready(daemon: &mut Daemon) {
    daemon.wait_ready(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !daemon.log_text().contains("desktop ready") {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("daemon exited with {status}; log:\n{}", daemon.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "no desktop after 60 s; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon was started by a launcher that left a root-only file open on fd 9 without
/// `CLOEXEC` and SIGUSR2 ignored: no process under the desktop holds that file, and the
/// children the daemon started do not ignore SIGUSR2.
#[test]
fn desktop_children_inherit_neither_the_daemons_fds_nor_its_ignored_signals() {
    let test = "desktop_children_inherit_neither_the_daemons_fds_nor_its_ignored_signals";
    if skip_missing(test, &["/usr/bin/Xvnc", "/usr/bin/chromium"]) {
        return;
    }
    let dir = project();
    let secret = dir.path().join("launcher-secret");
    write(&secret, "launcher's secret\n", 0o600);
    let file = std::fs::File::open(&secret).expect("open the secret");
    let raw = file.as_raw_fd();
    let mut cmd = dev_desktop(
        dir.path(),
        &dir.path().join("desk"),
        &dir.path().join("profile"),
    );
    // SAFETY: dup2 and signal are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            // dup2's copy is open across execve (no FD_CLOEXEC), as a launcher's fd is.
            if libc::dup2(raw, INHERITED_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::signal(libc::SIGUSR2, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut daemon = Daemon::spawn(
        cmd,
        dir.path().join("daemon.log"),
        dir.path().join(".grexal/sidecar.sock"),
    );
    wait_desktop_ready(&mut daemon);
    let me = daemon.child.id();
    // The daemon itself does hold it: the test's setup worked.
    assert_eq!(
        std::fs::read_link(format!("/proc/{me}/fd/{INHERITED_FD}")).ok(),
        Some(secret.clone())
    );
    let processes = descendants(me);
    let children: Vec<String> = processes
        .iter()
        .filter(|&&(_, ppid)| ppid == me)
        .map(|&(pid, _)| comm(pid))
        .collect();
    assert!(
        children.iter().any(|c| c == "Xvnc") && children.iter().any(|c| c == "chromium"),
        "the desktop's children: {children:?}"
    );
    let mut holders = Vec::new();
    let mut ignoring = Vec::new();
    for &(pid, ppid) in &processes {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten();
        for fd in fds {
            if std::fs::read_link(fd.path()).is_ok_and(|target| target == secret) {
                holders.push(format!("{pid} {} fd {:?}", comm(pid), fd.file_name()));
            }
        }
        let sigusr2 = 1u64 << (libc::SIGUSR2 - 1);
        if ppid == me && ignored_signals(pid) & sigusr2 != 0 {
            ignoring.push(format!("{pid} {}", comm(pid)));
        }
    }
    drop(file);
    assert!(
        holders.is_empty(),
        "processes under the daemon hold its inherited fd: {holders:?}"
    );
    assert!(
        ignoring.is_empty(),
        "children of the daemon ignore SIGUSR2 as the daemon does: {ignoring:?}"
    );
}

/// Chromium's profile lock makes a directory for its socket in TMPDIR and does not remove
/// it when stopped: in /tmp each daemon start left one behind, a root daemon's with its
/// socket in a world-writable directory. Chromium's TMPDIR is the run dir's `tmp`, and the
/// daemon's clean stop (SIGTERM) removes it.
#[test]
fn chromiums_temp_dir_goes_with_the_daemons_clean_stop() {
    let test = "chromiums_temp_dir_goes_with_the_daemons_clean_stop";
    if skip_missing(test, &["/usr/bin/Xvnc", "/usr/bin/chromium"]) {
        return;
    }
    let dir = project();
    let (run_dir, profile) = (dir.path().join("desk"), dir.path().join("profile"));
    let cmd = dev_desktop(dir.path(), &run_dir, &profile);
    let mut daemon = Daemon::spawn(
        cmd,
        dir.path().join("daemon.log"),
        dir.path().join(".grexal/sidecar.sock"),
    );
    wait_desktop_ready(&mut daemon);
    let socket = std::fs::read_link(profile.join("SingletonSocket")).expect("SingletonSocket");
    let singleton = socket.parent().expect("the socket's directory");
    let tmp = run_dir.join("tmp");
    assert_eq!(
        singleton.parent(),
        Some(tmp.as_path()),
        "chromium's singleton dir is not in the run dir's tmp"
    );
    assert!(singleton.is_dir(), "{singleton:?}");

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        daemon.log_text()
    );
    assert!(!singleton.exists(), "{singleton:?} outlived the daemon");
    assert!(!tmp.exists(), "{tmp:?} outlived the daemon");
}

/// Whether `pid` is gone: no such process, or a zombie (exited, not yet reaped by the
/// init it was handed to).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// `dev` killed with SIGKILL (nothing of it runs: no stop, no cleanup) on a desktop, not
/// PID 1 of a namespace: the agent, the display and Chromium with every helper it started
/// go with it, and the next `dev` gets the same profile (an orphaned Chromium held it:
/// "the chromium profile is in use by live process N").
#[test]
fn a_daemon_killed_outright_takes_its_agent_and_desktop_along() {
    let test = "a_daemon_killed_outright_takes_its_agent_and_desktop_along";
    if skip_missing(test, &["/usr/bin/Xvnc", "/usr/bin/chromium"]) {
        return;
    }
    let dir = project();
    let (run_dir, profile) = (dir.path().join("desk"), dir.path().join("profile"));
    let start = |log: &str| {
        let mut cmd = dev_desktop(dir.path(), &run_dir, &profile);
        cmd.args(["--", "sleep", "1000"]);
        let mut daemon = Daemon::spawn(
            cmd,
            dir.path().join(log),
            dir.path().join(".grexal/sidecar.sock"),
        );
        wait_desktop_ready(&mut daemon);
        daemon
    };
    let mut daemon = start("first.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon.log_text().contains("agent started") {
        assert!(
            Instant::now() < deadline,
            "no agent after 30 s; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let me = daemon.child.id();
    let children: Vec<u32> = descendants(me).into_iter().map(|(pid, _)| pid).collect();
    let names: Vec<String> = children.iter().map(|&pid| comm(pid)).collect();
    // The set-up worked: all three are there to be left behind.
    for expected in ["sleep", "Xvnc", "chromium"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    // Whatever outlives the test is stopped by its pid.
    struct Leftovers(Vec<u32>);
    impl Drop for Leftovers {
        fn drop(&mut self) {
            for &pid in &self.0 {
                if !is_gone(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
    let _leftovers = Leftovers(children.clone());

    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = daemon.child.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive: Vec<(u32, String)> = children
            .iter()
            .filter(|&&pid| !is_gone(pid))
            .map(|&pid| (pid, comm(pid)))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "30 s after the daemon was killed, still running: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The same profile comes up again (`start` waits for the desktop), and stops as usual:
    // with the agent's SIGTERM, passed on as its exit code.
    let mut again = start("second.log");
    again.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        again.wait_exit(Duration::from_secs(30)),
        128 + 15,
        "{}",
        again.log_text()
    );
}

/// In a sandbox with Docker's 64 MiB `/dev/shm` (its own mount namespace here), Chromium
/// is started with `--disable-dev-shm-usage`, the daemon says why, and the desktop comes
/// up.
#[test]
fn chromium_keeps_out_of_a_small_dev_shm() {
    let test = "chromium_keeps_out_of_a_small_dev_shm";
    if skip_missing(
        test,
        &["/usr/bin/Xvnc", "/usr/bin/chromium", "/usr/bin/unshare"],
    ) || skip_unless_root(test)
    {
        return;
    }
    let dir = project();
    let mut cmd = std::process::Command::new("unshare");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_grexal-sidecar"))
        .args(["dev", "--desktop", "--chromium-sandbox", "off"])
        .arg("--desktop-run-dir")
        .arg(dir.path().join("desk"))
        .arg("--browser-profile")
        .arg(dir.path().join("profile"));
    let mut daemon = Daemon::spawn(
        cmd,
        dir.path().join("daemon.log"),
        dir.path().join(".grexal/sidecar.sock"),
    );
    wait_desktop_ready(&mut daemon);
    let me = daemon.child.id();
    // `unshare` and `sh` exec, so this is the daemon; its Chromium is its child.
    assert_eq!(comm(me), "grexal-sidecar");
    let browser = descendants(me)
        .into_iter()
        .find(|&(pid, parent)| parent == me && comm(pid) == "chromium")
        .map(|(pid, _)| pid)
        .expect("the daemon's chromium");
    let args = std::fs::read(format!("/proc/{browser}/cmdline")).expect("cmdline");
    let args: Vec<&[u8]> = args.split(|&b| b == 0).collect();
    assert!(
        args.contains(&&b"--disable-dev-shm-usage"[..]),
        "{:?}",
        String::from_utf8_lossy(&args.join(&b' '))
    );
    let log = daemon.log_text();
    assert!(log.contains("/dev/shm is missing or small"), "{log}");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        daemon.log_text()
    );
}
