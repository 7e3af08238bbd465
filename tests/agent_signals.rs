//! The real binary (`dev`, not PID 1) and the signals it is sent: each catchable one is
//! forwarded to the agent or stops the daemon cleanly, and none ends the daemon by its
//! default action (which would leave the plaintext files on disk and the agent orphaned).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::*;

const MANIFEST: &str = r#"{"manifest_version":1,"connections":[
  {"id":"smtp","display_name":"SMTP","auth_mode":"secret_input","delivery":"file",
   "fields":[{"name":"password","label":"P","secret":true}]}]}"#;
const CONNECTIONS: &str = r#"{"connections":{"smtp":{"fields":{"password":"pw-canary"}}}}"#;

/// A dev project in `dir`: grexal.json and .grexal/connections.json.
fn project(dir: &Path) {
    write(&dir.join("grexal.json"), MANIFEST, 0o644);
    write(&dir.join(".grexal/connections.json"), CONNECTIONS, 0o600);
}

/// `dev` in `dir` with the default paths, started and ready.
fn dev(dir: &Path, agent: &[&str]) -> Daemon {
    let mut cmd = command();
    cmd.current_dir(dir).arg("dev").args(agent);
    let mut daemon = Daemon::spawn(
        cmd,
        dir.join("daemon.log"),
        dir.join(".grexal/sidecar.sock"),
    );
    daemon.wait_ready(Duration::from_secs(10));
    daemon
}

fn wait_until(what: &str, daemon: &mut Daemon, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        if let Some(status) = daemon.child.try_wait().expect("try_wait") {
            panic!(
                "the daemon ended ({status}) waiting for {what}; log:\n{}",
                daemon.log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The files the daemon wipes at its shutdown.
fn left_on_disk(dir: &Path) -> Vec<&'static str> {
    [
        (".grexal/credentials/smtp/password", "credential file"),
        (".grexal/agent.env", "env file"),
        (".grexal/sidecar.sock", "socket"),
    ]
    .into_iter()
    .filter(|(path, _)| dir.join(path).exists())
    .map(|(_, what)| what)
    .collect()
}

/// The signals forwarded besides SIGTERM, SIGINT and SIGHUP, by name (Python's) and number.
const FORWARDED: [(&str, Signal); 10] = [
    ("SIGUSR1", Signal::SIGUSR1),
    ("SIGUSR2", Signal::SIGUSR2),
    ("SIGQUIT", Signal::SIGQUIT),
    ("SIGWINCH", Signal::SIGWINCH),
    ("SIGALRM", Signal::SIGALRM),
    ("SIGVTALRM", Signal::SIGVTALRM),
    ("SIGPROF", Signal::SIGPROF),
    ("SIGIO", Signal::SIGIO),
    ("SIGPWR", Signal::SIGPWR),
    ("SIGURG", Signal::SIGURG),
];

/// SIGUSR1, SIGQUIT (Ctrl-\ on a terminal) and the like killed a daemon that is not PID 1
/// by their default action: the agent ran on as an orphan and the credential file, the env
/// file and the socket stayed on disk. Each now reaches the agent, the daemon lives on, and
/// a SIGTERM still ends everything with the agent's code and nothing left.
#[test]
fn every_forwarded_signal_reaches_the_agent_and_the_daemon_lives_on() {
    let dir = open_tempdir();
    project(dir.path());
    let names: Vec<&str> = FORWARDED.iter().map(|(name, _)| *name).collect();
    let agent = format!(
        "import os, signal, sys, time\n\
         def got(name):\n    return lambda *_: open('got', 'a').write(name + '\\n')\n\
         for name in {names:?}:\n    signal.signal(getattr(signal, name), got(name))\n\
         signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n\
         open('ready', 'w').close()\n\
         while True: time.sleep(0.05)\n"
    );
    write(&dir.path().join("agent.py"), agent, 0o644);
    let mut daemon = dev(dir.path(), &["--", "python3", "agent.py"]);
    let got = dir.path().join("got");
    wait_until("the agent's handlers", &mut daemon, || {
        dir.path().join("ready").exists()
    });
    for (name, signal) in FORWARDED {
        daemon.signal(signal);
        wait_until(&format!("{name} at the agent"), &mut daemon, || {
            std::fs::read_to_string(&got).is_ok_and(|text| text.lines().any(|l| l == name))
        });
    }
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 7);
    assert_eq!(left_on_disk(dir.path()), Vec::<&str>::new());
}

/// Without an agent, SIGQUIT stops the daemon like SIGTERM (clean shutdown, exit 0,
/// nothing left), and a signal meant for an agent is ignored.
#[test]
fn without_an_agent_quit_stops_cleanly_and_the_others_are_ignored() {
    let dir = open_tempdir();
    project(dir.path());
    let mut daemon = dev(dir.path(), &[]);
    for signal in [
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGALRM,
    ] {
        daemon.signal(signal);
    }
    // Still serving after them.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        daemon.child.try_wait().expect("try_wait").is_none(),
        "the daemon ended; log:\n{}",
        daemon.log_text()
    );
    let resp = http_unix(&daemon.socket, "GET", "/v1/connections/smtp", None).expect("connect");
    assert_eq!(resp.status, 200);
    daemon.signal(Signal::SIGQUIT);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
    assert_eq!(left_on_disk(dir.path()), Vec::<&str>::new());
}

/// An agent that is stopped (SIGSTOP, Ctrl-Z, or SIGTTIN from reading a terminal) got the
/// forwarded SIGTERM but never a SIGCONT, so it could not act on it: every stop waited the
/// whole --stop-timeout and ended in SIGKILL (exit 137 instead of the agent's own).
#[test]
fn a_stopped_agent_is_continued_to_act_on_sigterm() {
    let dir = open_tempdir();
    project(dir.path());
    let agent = "import os, signal, sys\n\
                 signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n\
                 open('agent.pid', 'w').write(str(os.getpid()))\n\
                 os.kill(os.getpid(), signal.SIGSTOP)\n\
                 while True: signal.pause()\n";
    write(&dir.path().join("agent.py"), agent, 0o644);
    let mut daemon = dev(
        dir.path(),
        &["--stop-timeout", "30", "--", "python3", "agent.py"],
    );
    let stopped = || {
        std::fs::read_to_string(dir.path().join("agent.pid"))
            .ok()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .and_then(|stat| Some(stat.rsplit_once(')')?.1.trim_start().starts_with('T')))
            .unwrap_or(false)
    };
    wait_until("the agent's stop", &mut daemon, stopped);
    let sent = Instant::now();
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)), 3);
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert_eq!(left_on_disk(dir.path()), Vec::<&str>::new());
}
