//! The real binary end to end with `--desktop`: the agent gets the browser from the
//! socket, the desktop runs as the agent's user with only the capabilities the systemd unit
//! grants, and a Ctrl-C on the terminal stops the agent, not the desktop.

#[path = "support/desktop.rs"]
mod desktop_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use desktop_support::shm_segments_of;
use serde_json::json;
use support::*;

const SANDBOX: &str = "sbx-e2e-1";

/// What a desktop under `run` needs here, per backend, and the tools the tests use.
const XVNC_DESKTOP: &[&str] = &["/usr/bin/Xvnc", "/usr/bin/chromium", "/usr/bin/curl"];
const XVFB_DESKTOP: &[&str] = &[
    "/usr/bin/Xvfb",
    "/usr/bin/x11vnc",
    "/usr/bin/chromium",
    "/usr/bin/curl",
];

/// `run --desktop` for a manifest that names no sandbox template (no connections, so
/// neither keys nor a bundle), everything in a temp dir the agent's user can traverse;
/// the agent works in its `out` dir, which anyone may write.
struct DesktopRun {
    dir: tempfile::TempDir,
}

impl DesktopRun {
    fn new() -> Self {
        let dir = open_tempdir();
        write(
            &dir.path().join("grexal.json"),
            r#"{"manifest_version": 1, "connections": []}"#,
            0o644,
        );
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("out dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        DesktopRun { dir }
    }

    /// The manifest names one `browser_login` connection, `bank`, so takeovers can start.
    fn with_bank_login(&self) {
        write(
            &self.path("grexal.json"),
            json!({"manifest_version": 1, "connections": [
                {"id": "bank", "display_name": "Bank", "auth_mode": "browser_login",
                 "login_url": "http://127.0.0.1:9/login"}]})
            .to_string(),
            0o644,
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What the agent left in its `out` dir.
    fn out(&self, name: &str) -> PathBuf {
        self.path("out").join(name)
    }

    /// `[WRAPPER...] grexal-sidecar run --desktop … EXTRA… -- sh -c SCRIPT`, the script
    /// run in `out`.
    fn command(&self, wrapper: &[&str], extra: &[&str], script: &str) -> std::process::Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = std::process::Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => std::process::Command::new(BIN),
        };
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(self.dir.path())
            .args(["run", "--sandbox-id", SANDBOX, "--desktop"])
            .args(["--chromium-sandbox", "off"])
            .arg("--manifest")
            .arg(self.path("grexal.json"))
            .arg("--socket")
            .arg(self.path("run/sidecar.sock"))
            .arg("--credentials-dir")
            .arg(self.path("creds-root"))
            .arg("--env-file")
            .arg(self.path("run/agent.env"))
            .arg("--public-key-out")
            .arg(self.path("run/sandbox.pub"))
            .arg("--browser-profile")
            .arg(self.path("profile"))
            .arg("--desktop-run-dir")
            .arg(self.path("desk"))
            .args(["--log", "debug"])
            .args(extra)
            .args(["--", "sh", "-c"])
            .arg(format!(
                "cd '{}' && {{ {script}\n}}",
                self.path("out").display()
            ));
        cmd
    }

    fn spawn(&self, cmd: std::process::Command) -> Daemon {
        Daemon::spawn(cmd, self.path("daemon.log"), self.path("run/sidecar.sock"))
    }

    /// Waits for `name` to appear in `out` while the daemon runs.
    fn wait_for(&self, name: &str, daemon: &mut Daemon) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.out(name).exists() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "daemon exited with {status} before {name}; log:\n{}",
                    daemon.log_text()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {name} after 60 s; log:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The shipped unit's `CapabilityBoundingSet=`, as `setpriv --bounding-set` takes it.
fn unit_bounding_set() -> String {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/grexal-sidecar.service"),
    )
    .expect("the unit");
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet= in the unit");
    let mut arg = String::from("-all");
    for cap in caps.split_whitespace() {
        let name = cap.strip_prefix("CAP_").expect("CAP_ name").to_lowercase();
        arg.push_str(&format!(",+{name}"));
    }
    arg
}

/// CAP_SYS_PTRACE and CAP_SYS_ADMIN, in a `CapEff:` mask.
const PTRACE_OR_ADMIN: u64 = (1 << 19) | (1 << 21);

/// `run --desktop --agent-user nobody` under `setpriv` with the unit's bounding set (so
/// the daemon has those capabilities and no others), `backend`, and `script` as agent.
fn as_the_unit(fx: &DesktopRun, backend: &str, script: &str) -> Daemon {
    let bounding = unit_bounding_set();
    fx.spawn(fx.command(
        &["setpriv", "--bounding-set", &bounding],
        &["--agent-user", "nobody", "--display-backend", backend],
        script,
    ))
}

/// The daemon's effective capabilities, as its agent (a child) read them into `file`.
fn daemon_capabilities(file: &Path) -> u64 {
    let line = std::fs::read_to_string(file).expect("the agent wrote the daemon's CapEff");
    let hex = line
        .trim()
        .strip_prefix("CapEff:")
        .expect("CapEff line")
        .trim();
    u64::from_str_radix(hex, 16).expect("hex mask")
}

/// What the agent runs first in these tests: the daemon's `CapEff:` into `caps`.
const RECORD_CAPS: &str = "grep CapEff: /proc/$PPID/status > caps";

/// `--desktop` with a manifest that names no desktop template (but a `browser_login`
/// connection): the desktop runs, `GET /v1/browser` answers with the endpoint the agent got
/// in GREXAL_BROWSER_CDP_URL, and `POST /v1/takeovers` starts a takeover, where both
/// answered `sandbox_not_desktop`; nor does the boot warn that they will.
#[test]
fn with_the_desktop_flag_the_agent_gets_the_browser_and_takeovers_from_the_socket() {
    let test = "with_the_desktop_flag_the_agent_gets_the_browser_and_takeovers_from_the_socket";
    if skip_missing(test, XVNC_DESKTOP) {
        return;
    }
    let fx = DesktopRun::new();
    fx.with_bank_login();
    let script = r#"api() { curl -s --unix-socket "$GREXAL_SIDECAR_SOCKET" "$@"; }
        api http://sidecar/v1/browser > browser.json
        echo "$GREXAL_BROWSER_CDP_URL" > cdp_url
        api -X POST -H 'Content-Type: application/json'             -d '{"connection_id": "bank", "reason": "log in"}'             http://sidecar/v1/takeovers > takeover.json"#;
    let mut daemon = fx.spawn(fx.command(&[], &[], script));
    let code = daemon.wait_exit(Duration::from_secs(60));
    let log = daemon.log_text();
    assert_eq!(code, 0, "{log}");
    let read_json = |name: &str| -> serde_json::Value {
        let body = std::fs::read_to_string(fx.out(name)).expect("the agent's curl");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}: {body}"))
    };
    let browser = read_json("browser.json");
    let env_url = std::fs::read_to_string(fx.out("cdp_url")).expect("the agent's env");
    assert!(env_url.trim().starts_with("http://127.0.0.1:"), "{env_url}");
    assert_eq!(browser["cdp_http_url"], env_url.trim(), "{browser}");
    let takeover = read_json("takeover.json");
    assert_eq!(takeover["state"], "live", "{takeover}");
    // No control endpoint: the takeover is made, and its URL says no viewer can reach it.
    let id = takeover["takeover_id"].as_str().expect("an id");
    assert_eq!(
        takeover["viewer_url"],
        format!("http://viewer-unavailable.invalid/takeover/{id}"),
        "{takeover}"
    );
    assert!(
        !log.contains("sandbox_not_desktop"),
        "a warning that no longer holds: {log}"
    );
}

/// `--control-listen 127.0.0.1:0` without `--public-url`: viewer URLs name the port the
/// daemon bound (they named port 0, from the configured address, before).
#[test]
fn viewer_urls_name_the_port_the_control_endpoint_bound() {
    let test = "viewer_urls_name_the_port_the_control_endpoint_bound";
    if skip_missing(test, XVNC_DESKTOP) {
        return;
    }
    let fx = DesktopRun::new();
    fx.with_bank_login();
    write(
        &fx.path("control.token"),
        "test-control-token-0123456789abcdef\n",
        0o600,
    );
    let token = fx.path("control.token").display().to_string();
    let script = r#"curl -s --unix-socket "$GREXAL_SIDECAR_SOCKET" -X POST \
            -H 'Content-Type: application/json' -d '{"connection_id": "bank", "reason": "log in"}' \
            http://sidecar/v1/takeovers > takeover.json"#;
    let extra = [
        "--control-listen",
        "127.0.0.1:0",
        "--control-token-file",
        &token,
    ];
    let mut daemon = fx.spawn(fx.command(&[], &extra, script));
    let code = daemon.wait_exit(Duration::from_secs(60));
    let log = daemon.log_text();
    assert_eq!(code, 0, "{log}");
    let bound: std::net::SocketAddr = log
        .lines()
        .find(|l| l.contains("control endpoint listening"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no bound address in the log: {log}"));
    assert_ne!(bound.port(), 0);
    let body = std::fs::read_to_string(fx.out("takeover.json")).expect("the agent's curl");
    let takeover: serde_json::Value = serde_json::from_str(&body).expect(&body);
    let id = takeover["takeover_id"].as_str().expect(&body);
    assert_eq!(
        takeover["viewer_url"],
        format!("http://{bound}/takeover/{id}"),
        "{takeover}"
    );
}

/// The desktop runs as the agent's user while the daemon has only the capabilities of
/// `systemd/grexal-sidecar.service` (Docker's default set includes them all): no
/// CAP_SYS_PTRACE to read the VNC server's /proc entries, no CAP_SYS_ADMIN. Both backends
/// start, and the agent runs.
#[test]
fn the_desktop_runs_as_the_agent_user_with_only_the_units_capabilities() {
    let test = "the_desktop_runs_as_the_agent_user_with_only_the_units_capabilities";
    if skip_unless_root(test)
        || skip_missing(test, XVNC_DESKTOP)
        || skip_missing(test, XVFB_DESKTOP)
        || skip_missing(test, &["/usr/bin/setpriv"])
    {
        return;
    }
    for backend in ["xvnc", "xvfb"] {
        let fx = DesktopRun::new();
        let script = format!(
            "{RECORD_CAPS}; curl -sf --unix-socket \"$GREXAL_SIDECAR_SOCKET\" \
             http://sidecar/v1/browser > browser.json && touch agent-ran"
        );
        let mut daemon = as_the_unit(&fx, backend, &script);
        let code = daemon.wait_exit(Duration::from_secs(60));
        let log = daemon.log_text();
        assert_eq!(code, 0, "{backend}; log:\n{log}");
        assert!(fx.out("agent-ran").exists(), "{backend}; log:\n{log}");
        let caps = daemon_capabilities(&fx.out("caps"));
        assert_eq!(caps & PTRACE_OR_ADMIN, 0, "the daemon had {caps:#x}");
    }
}

/// A killed x11vnc (the agent user's) leaves its framebuffer's System V segments behind;
/// the daemon removes them when it reaps it, without CAP_SYS_ADMIN, and restarts it.
#[test]
fn with_only_the_units_capabilities_a_killed_x11vnc_leaves_no_shared_memory() {
    let test = "with_only_the_units_capabilities_a_killed_x11vnc_leaves_no_shared_memory";
    if skip_unless_root(test)
        || skip_missing(test, XVFB_DESKTOP)
        || skip_missing(test, &["/usr/bin/setpriv"])
    {
        return;
    }
    let fx = DesktopRun::new();
    let script = format!("{RECORD_CAPS}; touch ready; while [ ! -e done ]; do sleep 0.1; done");
    let mut daemon = as_the_unit(&fx, "xvfb", &script);
    fx.wait_for("ready", &mut daemon);
    let socket = fx.path("desk/vnc.sock").display().to_string();
    let x11vnc = match pids_with_arg(&socket)[..] {
        [pid] => pid,
        ref other => panic!("x11vnc pids: {other:?}; log:\n{}", daemon.log_text()),
    };
    assert!(shm_segments_of(x11vnc) > 0, "x11vnc made no segments");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(x11vnc as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill x11vnc");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let restarted = matches!(pids_with_arg(&socket)[..], [pid] if pid != x11vnc);
        if restarted && daemon.log_text().contains("restarted") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "x11vnc never came back; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = shm_segments_of(x11vnc);
    write(&fx.out("done"), "", 0o644);
    let code = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log_text();
    assert_eq!(
        left, 0,
        "the killed x11vnc's segments are left; log:\n{log}"
    );
    assert_eq!(code, 0, "{log}");
    let caps = daemon_capabilities(&fx.out("caps"));
    assert_eq!(caps & PTRACE_OR_ADMIN, 0, "the daemon had {caps:#x}");
}

/// A SingletonLock left in the profile names a pid that a process of the agent's user,
/// not a browser, now has (pids are reused from one boot to the next): the lock is stale
/// and cleared, which the daemon tells without CAP_SYS_PTRACE.
#[test]
fn with_only_the_units_capabilities_a_lock_naming_a_reused_pid_is_cleared() {
    let test = "with_only_the_units_capabilities_a_lock_naming_a_reused_pid_is_cleared";
    if skip_unless_root(test)
        || skip_missing(test, XVNC_DESKTOP)
        || skip_missing(test, &["/usr/bin/setpriv"])
    {
        return;
    }
    let fx = DesktopRun::new();
    let mut squatter = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["sleep", "120"])
        .spawn()
        .expect("a process of nobody");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let profile = fx.path("profile");
    std::fs::create_dir(&profile).expect("profile");
    std::os::unix::fs::symlink(
        format!("{}-{}", host.trim(), squatter.id()),
        profile.join("SingletonLock"),
    )
    .expect("lock");
    std::os::unix::fs::chown(&profile, Some(NOBODY), Some(NOBODY)).expect("chown");
    let mut daemon = as_the_unit(&fx, "xvnc", &format!("{RECORD_CAPS}; touch agent-ran"));
    let code = daemon.wait_exit(Duration::from_secs(60));
    let _ = squatter.kill();
    let _ = squatter.wait();
    let log = daemon.log_text();
    assert_eq!(code, 0, "{log}");
    assert!(fx.out("agent-ran").exists(), "{log}");
    assert!(log.contains("stale SingletonLock"), "{log}");
    let caps = daemon_capabilities(&fx.out("caps"));
    assert_eq!(caps & PTRACE_OR_ADMIN, 0, "the daemon had {caps:#x}");
}

/// Ctrl-C on the terminal sends SIGINT to the whole foreground process group. The daemon
/// forwards it to the agent, which takes its time to stop; the desktop's children, each
/// in a group of its own, are not hit, so nothing of the desktop dies or restarts meanwhile.
#[test]
fn ctrl_c_on_the_terminal_does_not_kill_the_desktop() {
    use std::os::unix::process::CommandExt;
    let test = "ctrl_c_on_the_terminal_does_not_kill_the_desktop";
    if skip_missing(test, XVNC_DESKTOP) {
        return;
    }
    let fx = DesktopRun::new();
    let script = "trap 'sleep 2; touch stopped; exit 0' INT; touch ready; \
                  while :; do sleep 0.1; done";
    let mut cmd = fx.command(&[], &[], script);
    cmd.process_group(0); // what a shell does for a foreground job
    let mut daemon = fx.spawn(cmd);
    fx.wait_for("ready", &mut daemon);
    let profile = format!("--user-data-dir={}", fx.path("profile").display());
    let chromium = pids_with_arg(&profile);
    assert!(
        !chromium.is_empty(),
        "no Chromium; log:\n{}",
        daemon.log_text()
    );
    // The terminal's Ctrl-C: the daemon leads the foreground group.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("killpg");
    let code = daemon.wait_exit(Duration::from_secs(60));
    let log = daemon.log_text();
    assert_eq!(code, 0, "{log}");
    assert!(fx.out("stopped").exists(), "the agent got SIGINT; {log}");
    let deaths: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("child exited") || l.contains("restarting"))
        .collect();
    assert!(
        deaths.is_empty(),
        "a desktop child died of the terminal's SIGINT:\n{}",
        deaths.join("\n")
    );
    // Stopped by the daemon at the end, the browser's helpers with it.
    for pid in chromium {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
        assert!(
            !running,
            "Chromium process {pid} outlived the daemon: {stat}"
        );
    }
}
