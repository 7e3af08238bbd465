//! `dev` on a terminal (a pseudo-terminal here, the daemon its session leader as a shell's
//! job would lead its group): the agent holds the terminal's foreground, so it can read it
//! and the keyboard's signals reach it; a stopped agent is reported and the terminal taken
//! back.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const MANIFEST: &str = r#"{"manifest_version":1,"connections":[
  {"id":"smtp","display_name":"SMTP","auth_mode":"secret_input","delivery":"file",
   "fields":[{"name":"password","label":"P","secret":true}]}]}"#;
const CONNECTIONS: &str = r#"{"connections":{"smtp":{"fields":{"password":"pw-canary"}}}}"#;

/// `grexal-sidecar dev --stop-timeout 1 -- python3 agent.py` in a project in `dir`, on a
/// fresh pseudo-terminal as its controlling terminal (stdin and stdout; stderr to
/// `daemon.log`).
struct OnTerminal {
    daemon: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    log: std::path::PathBuf,
}

impl OnTerminal {
    fn start(dir: &Path, agent: &str) -> Self {
        write(&dir.join("grexal.json"), MANIFEST, 0o644);
        write(&dir.join(".grexal/connections.json"), CONNECTIONS, 0o600);
        write(&dir.join("agent.py"), agent, 0o644);
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let log = dir.join("daemon.log");
        let mut cmd = command();
        cmd.current_dir(dir)
            .args(["dev", "--stop-timeout", "1", "--", "python3", "agent.py"])
            .stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
            .stdout(Stdio::from(pty.slave))
            .stderr(File::create(&log).expect("log"));
        // SAFETY: setsid and ioctl only, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let daemon = cmd.spawn().expect("spawn dev");
        // The command, and with it our copies of the terminal's side, goes here: the reader
        // then sees the end once the daemon and the agent are gone.
        drop(cmd);
        let master = File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup");
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once no process has the terminal open any more.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnTerminal {
            daemon,
            master,
            output,
            log,
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&mut self, what: &str, found: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !found(self) {
            assert!(
                Instant::now() < deadline,
                "{what} never happened; the terminal showed:\n{}\nthe daemon's log:\n{}",
                self.screen(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn on_screen(&mut self, text: &str) {
        self.wait_for(&format!("{text:?} on the terminal"), |t| {
            t.screen().contains(text)
        });
    }

    /// The terminal's foreground process group (asked on the master side).
    fn foreground(&self) -> i32 {
        nix::unistd::tcgetpgrp(&self.master)
            .expect("tcgetpgrp")
            .as_raw()
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("type");
    }

    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.daemon.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit; the terminal showed:\n{}\nits log:\n{}",
                self.screen(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        if let Ok(None) = self.daemon.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.daemon.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(self.daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
    }
}

fn wiped(dir: &Path) -> bool {
    !dir.join(".grexal/credentials/smtp/password").exists()
        && !dir.join(".grexal/agent.env").exists()
}

/// The agent was a background group of the terminal: its first read (`input()`, pdb) stopped
/// it with SIGTTIN and everything hung without a word. Now it reads the line typed.
#[test]
fn an_agent_reads_its_terminal_under_dev() {
    let dir = open_tempdir();
    // The prompt printed on stdout: input()'s own goes to stderr, the daemon's log here.
    let agent = "print('ready>', flush=True)\nprint('agent got', input())\n";
    let mut term = OnTerminal::start(dir.path(), agent);
    term.on_screen("ready>");
    term.type_keys(b"hello\n");
    term.on_screen("agent got hello");
    assert_eq!(term.exit_code(), Some(0), "{}", term.log_text());
    assert!(wiped(dir.path()));
}

const SLEEPER: &str = "import time\nprint('ready', flush=True)\nwhile True: time.sleep(0.05)\n";

/// Ctrl-C and Ctrl-\ go to the agent's group now, not through the daemon: the agent ends
/// of them and the daemon shuts down as after any exit, with the agent's code (128+N) and
/// nothing left.
#[test]
fn ctrl_c_and_ctrl_backslash_end_the_agent_and_the_daemon_cleanly() {
    for (key, code) in [(b"\x03", 130), (b"\x1c", 131)] {
        let dir = open_tempdir();
        let mut term = OnTerminal::start(dir.path(), SLEEPER);
        term.on_screen("ready");
        term.type_keys(key);
        assert_eq!(term.exit_code(), Some(code), "{}", term.log_text());
        assert!(wiped(dir.path()));
    }
}

/// Ctrl-Z stops the agent's group (it holds the terminal): the daemon says why, takes the
/// terminal back, and a Ctrl-C then reaches the daemon, which forwards it with a SIGCONT:
/// the agent ends, and so does the daemon, cleanly.
#[test]
fn ctrl_z_stops_the_agent_with_a_warning_and_ctrl_c_then_ends_it() {
    let dir = open_tempdir();
    let mut term = OnTerminal::start(dir.path(), SLEEPER);
    term.on_screen("ready");
    let daemon = term.daemon.id() as i32;
    assert_ne!(
        term.foreground(),
        daemon,
        "the agent does not hold the terminal"
    );
    term.type_keys(b"\x1a");
    term.wait_for("the warning", |t| {
        t.log_text()
            .contains("the agent is stopped (SIGTSTP: Ctrl-Z")
    });
    assert_eq!(term.foreground(), daemon, "the terminal was not taken back");
    term.type_keys(b"\x03");
    assert_eq!(term.exit_code(), Some(130), "{}", term.log_text());
    assert!(wiped(dir.path()));
}
