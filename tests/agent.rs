//! `agent::run` with real processes: exit codes, signals, stop, user switch, env, fds.
//!
//! Every test holds `SERIAL`: one of them sends SIGTERM to this test process, and every
//! concurrent `run` would forward it to its own agent.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use grexal_sidecar::agent::{self, AgentError, AgentSpec, EnvPlan};
use grexal_sidecar::exit::ExitCode;
use grexal_sidecar::secret::SecretString;
use tokio_util::sync::CancellationToken;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LONG: Duration = Duration::from_secs(10);

/// A temp dir every user can write to (the agent may run as `nobody`).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

fn base_env() -> Vec<(OsString, OsString)> {
    vec![("PATH".into(), "/usr/bin:/bin".into())]
}

fn sh(script: &str, dir: &Path) -> AgentSpec {
    let plan = EnvPlan {
        socket: &dir.join("sidecar.sock"),
        credentials_dir: &dir.join("creds"),
        browser_cdp_url: None,
        credentials: &[],
        user: None,
    };
    AgentSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        user: None,
        env: agent::build_env(base_env(), &plan).expect("env"),
        cwd: Some(dir.to_path_buf()),
        take_terminal: false,
    }
}

/// The daemon installs its listener at the start of boot and hands it to `run`.
fn signals() -> agent::Signals {
    agent::Signals::install().expect("signal handlers")
}

async fn run(spec: AgentSpec) -> Result<agent::AgentExit, AgentError> {
    tokio::time::timeout(
        Duration::from_secs(30),
        agent::run(spec, signals(), CancellationToken::new(), LONG),
    )
    .await
    .expect("agent::run did not return")
}

async fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[tokio::test]
async fn exit_codes_pass_through() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    for code in [0, 3, 255] {
        let exit = run(sh(&format!("exit {code}"), dir.path()))
            .await
            .expect("run");
        assert_eq!(exit, agent::AgentExit { code, signal: None });
    }
}

#[tokio::test]
async fn death_by_signal_is_128_plus_n() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    for (signal, name) in [(9, "KILL"), (10, "USR1"), (15, "TERM")] {
        let exit = run(sh(&format!("kill -{name} $$"), dir.path()))
            .await
            .expect("run");
        assert_eq!(
            exit,
            agent::AgentExit {
                code: 128 + signal,
                signal: Some(signal)
            },
            "SIG{name}"
        );
    }
}

#[tokio::test]
async fn sigterm_to_the_daemon_is_forwarded() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    let ready = dir.path().join("ready");
    let spec = sh(
        "trap 'exit 42' TERM; touch ready; while :; do sleep 0.05; done",
        dir.path(),
    );
    let task = tokio::spawn(agent::run(spec, signals(), CancellationToken::new(), LONG));
    wait_for_file(&ready).await;
    // The SIGTERM handler was installed before spawning, so this does not kill us.
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM)
        .expect("kill self");
    let exit = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("timely")
        .expect("join")
        .expect("run");
    assert_eq!(
        exit,
        agent::AgentExit {
            code: 42,
            signal: None
        }
    );
}

#[tokio::test]
async fn a_signal_received_before_the_agent_starts_is_forwarded_once_it_does() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    // Without the forward, this agent would run for a minute.
    let spec = sh(
        "trap 'exit 42' TERM; i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; exit 9",
        dir.path(),
    );
    let signals = signals();
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM)
        .expect("kill self");
    let exit = tokio::time::timeout(
        Duration::from_secs(10),
        agent::run(spec, signals, CancellationToken::new(), LONG),
    )
    .await
    .expect("the held SIGTERM reached the agent")
    .expect("run");
    // The forward may land before the shell has set its trap.
    assert!(
        exit.code == 42 || exit.signal == Some(libc::SIGTERM),
        "ended by the forwarded SIGTERM, not on its own: {exit:?}"
    );
}

#[tokio::test]
async fn sighup_is_forwarded_without_starting_the_grace_period() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    let ready = dir.path().join("ready");
    // After the HUP the agent lives on for longer than the stop timeout: SIGHUP is not a
    // stop, so it must not be killed.
    let spec = sh(
        "trap 'touch got' HUP; touch ready; while [ ! -e got ]; do sleep 0.05; done; sleep 0.6; exit 5",
        dir.path(),
    );
    let task = tokio::spawn(agent::run(
        spec,
        signals(),
        CancellationToken::new(),
        Duration::from_millis(200),
    ));
    wait_for_file(&ready).await;
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGHUP)
        .expect("kill self");
    let exit = tokio::time::timeout(LONG, task)
        .await
        .expect("timely")
        .expect("join")
        .expect("run");
    assert_eq!(
        exit,
        agent::AgentExit {
            code: 5,
            signal: None
        }
    );
}

#[tokio::test]
async fn stop_sends_sigterm_then_sigkill_after_the_timeout() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();

    // An agent that exits on SIGTERM is not killed.
    let ready = dir.path().join("ready1");
    let spec = sh(
        "trap 'exit 7' TERM; touch ready1; while :; do sleep 0.05; done",
        dir.path(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent::run(
        spec,
        signals(),
        stop.clone(),
        Duration::from_secs(5),
    ));
    wait_for_file(&ready).await;
    stop.cancel();
    let exit = tokio::time::timeout(LONG, task)
        .await
        .expect("timely")
        .expect("join")
        .expect("run");
    assert_eq!(exit.code, 7);

    // An agent that ignores SIGTERM is killed once the timeout passes.
    let ready = dir.path().join("ready2");
    let spec = sh(
        "trap '' TERM; touch ready2; while :; do sleep 0.05; done",
        dir.path(),
    );
    let stop = CancellationToken::new();
    let timeout = Duration::from_millis(400);
    let task = tokio::spawn(agent::run(spec, signals(), stop.clone(), timeout));
    wait_for_file(&ready).await;
    let started = Instant::now();
    stop.cancel();
    let exit = tokio::time::timeout(LONG, task)
        .await
        .expect("timely")
        .expect("join")
        .expect("run");
    let took = started.elapsed();
    assert_eq!(
        exit,
        agent::AgentExit {
            code: 137,
            signal: Some(9)
        }
    );
    assert!(
        took >= timeout,
        "killed after {took:?}, before the {timeout:?} grace period"
    );
}

/// The agent's state letter in /proc (`T`: stopped).
fn state_of(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// An agent that is stopped (SIGSTOP here; Ctrl-Z or SIGTTIN on a terminal) got the
/// stop's SIGTERM, or a forwarded SIGINT, but no SIGCONT: it could not act on it, and the
/// stop waited the whole timeout and SIGKILLed it (137, not its own code). Now it is
/// continued, handles the signal and exits with its own code well before the timeout.
#[tokio::test]
async fn a_stopped_agent_is_continued_to_act_on_the_stop() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    for (case, trap) in [("stop", "TERM"), ("forwarded SIGINT", "INT")] {
        let pid_file = dir.path().join("pid");
        let _ = std::fs::remove_file(&pid_file);
        let spec = sh(
            &format!("trap 'exit 7' {trap}; echo $$ > pid.tmp; mv pid.tmp pid; kill -STOP $$; while :; do sleep 0.05; done"),
            dir.path(),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(agent::run(spec, signals(), stop.clone(), LONG));
        wait_for_file(&pid_file).await;
        let pid = read(pid_file.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while state_of(&pid) != Some('T') {
            assert!(Instant::now() < deadline, "{case}: the agent never stopped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        if trap == "TERM" {
            stop.cancel();
        } else {
            nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGINT)
                .expect("kill self");
        }
        let exit = tokio::time::timeout(LONG + Duration::from_secs(5), task)
            .await
            .expect("timely")
            .expect("join")
            .expect("run");
        assert_eq!(
            exit,
            agent::AgentExit {
                code: 7,
                signal: None
            },
            "{case}: after {:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{case}: took {:?}, the stop timeout is {LONG:?}",
            started.elapsed()
        );
    }
}

/// A stop timeout past the clock's end (nothing bounds `run`'s argument itself) means no
/// SIGKILL: the agent still gets SIGTERM and its exit is returned. Adding it to the clock
/// panicked `run`, and the daemon exited 101 without wiping the credentials.
#[tokio::test]
async fn a_stop_timeout_past_the_clocks_end_still_stops_the_agent() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    let ready = dir.path().join("ready");
    let spec = sh(
        "trap 'exit 7' TERM; touch ready; while :; do sleep 0.05; done",
        dir.path(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent::run(spec, signals(), stop.clone(), Duration::MAX));
    wait_for_file(&ready).await;
    stop.cancel();
    let exit = tokio::time::timeout(LONG, task)
        .await
        .expect("timely")
        .expect("run did not panic")
        .expect("run");
    assert_eq!(exit.code, 7);
}

#[tokio::test]
async fn leftovers_of_the_agents_group_are_killed() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    let exit = run(sh("sleep 30 & echo $! > bg.pid; exit 0", dir.path()))
        .await
        .expect("run");
    assert_eq!(exit.code, 0);
    let pid: i32 = read(dir.path().join("bg.pid")).trim().parse().expect("pid");
    // Killed by the group SIGKILL: gone, or a zombie waiting for its (new) parent.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
            });
        match state.as_deref() {
            None | Some("Z") | Some("X") => break,
            Some(other) => assert!(
                Instant::now() < deadline,
                "background sleep {pid} still {other}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn switches_to_the_agent_user() {
    let _serial = SERIAL.lock().await;
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "switching user needs root, and CI is set"
        );
        eprintln!("skipped: switching user needs root");
        return;
    }
    let dir = scratch();
    let user = agent::resolve("nobody").expect("nobody exists");
    let plan = EnvPlan {
        socket: &dir.path().join("s.sock"),
        credentials_dir: &dir.path().join("creds"),
        browser_cdp_url: None,
        credentials: &[],
        user: Some(&user),
    };
    let spec = AgentSpec {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "id -u > ids; id -g >> ids; id -G >> ids; echo \"$HOME $USER $LOGNAME\" >> ids".into(),
        ],
        env: agent::build_env(base_env(), &plan).expect("env"),
        user: Some(user.clone()),
        cwd: Some(dir.path().to_path_buf()),
        take_terminal: false,
    };
    let exit = run(spec).await.expect("run");
    assert_eq!(exit.code, 0);
    let ids = read(dir.path().join("ids"));
    let lines: Vec<&str> = ids.lines().collect();
    assert_eq!(lines[0], "65534", "{ids}");
    assert_eq!(lines[1], user.gid.to_string(), "{ids}");
    let groups: Vec<u32> = lines[2]
        .split_whitespace()
        .map(|g| g.parse().expect("gid"))
        .collect();
    assert!(!groups.contains(&0), "kept root's group: {ids}");
    assert_eq!(lines[3], format!("{} nobody nobody", user.home.display()));
}

#[tokio::test]
async fn environment_carries_ours_and_not_the_daemons_secrets() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    let mut base = base_env();
    base.push((
        "GREXAL_SANDBOX_KEY".into(),
        "/etc/grexal/sandbox.key".into(),
    ));
    base.push((
        "GREXAL_CONTROL_TOKEN_FILE".into(),
        "/etc/grexal/token".into(),
    ));
    base.push(("GREXAL_TASK_INPUT".into(), "{\"task\":1}".into()));
    base.push(("NOTIFY_SOCKET".into(), "/run/systemd/notify".into()));
    let creds = vec![("SVC_API_KEY".to_owned(), SecretString::from("canary-7f3a"))];
    let socket = dir.path().join("sidecar.sock");
    let plan = EnvPlan {
        socket: &socket,
        credentials_dir: &dir.path().join("creds"),
        browser_cdp_url: Some("http://127.0.0.1:9222"),
        credentials: &creds,
        user: None,
    };
    let spec = AgentSpec {
        argv: vec!["sh".into(), "-c".into(), "env > env.txt".into()],
        env: agent::build_env(base, &plan).expect("env"),
        user: None,
        cwd: Some(dir.path().to_path_buf()),
        take_terminal: false,
    };
    assert!(!format!("{spec:?}").contains("canary-7f3a"));
    assert_eq!(run(spec).await.expect("run").code, 0);
    let env = read(dir.path().join("env.txt"));
    let has = |line: &str| env.lines().any(|l| l == line);
    assert!(
        has(&format!("GREXAL_SIDECAR_SOCKET={}", socket.display())),
        "{env}"
    );
    assert!(has("GREXAL_BROWSER_CDP_URL=http://127.0.0.1:9222"), "{env}");
    assert!(has("GREXAL_TASK_INPUT={\"task\":1}"), "{env}");
    assert!(has("SVC_API_KEY=canary-7f3a"), "{env}");
    for gone in [
        "GREXAL_SANDBOX_KEY",
        "GREXAL_CONTROL_TOKEN_FILE",
        "NOTIFY_SOCKET",
    ] {
        assert!(
            !env.lines().any(|l| l.starts_with(&format!("{gone}="))),
            "{gone} leaked: {env}"
        );
    }
}

#[tokio::test]
async fn child_starts_with_default_signals_and_only_stdio() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    // SAFETY: SIG_IGN for SIGUSR2, which nothing in this test binary uses.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGUSR2,
            nix::sys::signal::SigHandler::SigIgn,
        )
        .expect("ignore");
    }
    // An fd without CLOEXEC, as a daemon might inherit one from its launcher.
    let leaked = nix::fcntl::fcntl(2, nix::fcntl::FcntlArg::F_DUPFD(200)).expect("dup");
    let exit = run(sh(
        "grep -E '^Sig(Ign|Blk)' /proc/self/status > sig; ls /proc/self/fd > fds",
        dir.path(),
    ))
    .await;
    nix::unistd::close(leaked).expect("close");
    assert_eq!(exit.expect("run").code, 0);
    let sig = read(dir.path().join("sig"));
    for line in sig.lines() {
        assert!(line.ends_with("0000000000000000"), "not default: {line}");
    }
    assert_eq!(sig.lines().count(), 2, "{sig}");
    let fds: Vec<i32> = read(dir.path().join("fds"))
        .split_whitespace()
        .map(|f| f.parse().expect("fd"))
        .collect();
    // 0-2, plus the directory `ls` itself is reading.
    assert!(fds.iter().all(|fd| *fd <= 3), "inherited fds: {fds:?}");
}

#[tokio::test]
async fn launch_failures_are_specific() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    let mut spec = sh("exit 0", dir.path());

    spec.argv = vec!["/nonexistent/grexal-agent".into()];
    let error = run(spec.clone()).await.expect_err("missing binary");
    assert!(matches!(error, AgentError::NotFound { .. }), "{error:?}");
    assert_eq!(error.exit_code(), ExitCode::AgentNotFound);
    assert_eq!(error.exit_code().code(), 127);

    spec.argv = vec!["no-such-agent-command-grexal".into()];
    let error = run(spec.clone()).await.expect_err("missing in PATH");
    assert!(matches!(error, AgentError::NotFound { .. }), "{error:?}");

    let not_exec = dir.path().join("agent.sh");
    std::fs::write(&not_exec, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    spec.argv = vec![not_exec.into()];
    let error = run(spec.clone()).await.expect_err("not executable");
    assert!(
        matches!(error, AgentError::NotExecutable { .. }),
        "{error:?}"
    );
    assert_eq!(error.exit_code().code(), 126);

    spec.argv = vec!["true".into()];
    spec.cwd = Some(dir.path().join("missing-dir"));
    let error = run(spec.clone()).await.expect_err("bad cwd");
    assert!(matches!(error, AgentError::Cwd { .. }), "{error:?}");

    spec.argv = Vec::new();
    let error = run(spec).await.expect_err("empty");
    assert!(matches!(error, AgentError::EmptyCommand), "{error:?}");
}

/// A bare program name is looked up by `execvp`'s rules in the agent's own `PATH`, not the
/// daemon's: found in a directory only the agent's `PATH` names, an empty entry meaning the
/// agent's working directory, and a script without `#!` run under `/bin/sh`.
#[tokio::test]
async fn a_bare_program_name_is_found_in_the_agents_path() {
    let _serial = SERIAL.lock().await;
    let dir = scratch();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let script = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    script(bin.join("grexal-path-probe"), "#!/bin/sh\nexit 5\n");
    script(bin.join("grexal-no-shebang"), "exit 6\n");
    script(dir.path().join("grexal-in-cwd"), "#!/bin/sh\nexit 7\n");
    let with_path = |argv0: &str, path: String| {
        let mut spec = sh("exit 0", dir.path());
        spec.argv = vec![argv0.into()];
        for (name, value) in &mut spec.env {
            if name == "PATH" {
                *value = agent::EnvValue::Plain(path.clone().into());
            }
        }
        spec
    };
    let agents_path = format!("{}:/usr/bin:/bin", bin.display());
    for (argv0, path, code) in [
        ("grexal-path-probe", agents_path.clone(), 5),
        ("grexal-no-shebang", agents_path, 6),
        ("grexal-in-cwd", ":/usr/bin:/bin".to_owned(), 7),
    ] {
        let exit = run(with_path(argv0, path)).await.expect(argv0);
        assert_eq!(exit.code, code, "{argv0}");
    }
    // Not in the agent's PATH: not found, whatever the daemon's holds.
    let error = run(with_path("grexal-path-probe", "/usr/bin:/bin".to_owned()))
        .await
        .expect_err("not in the agent's PATH");
    assert!(matches!(error, AgentError::NotFound { .. }), "{error:?}");
}
