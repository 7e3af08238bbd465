//! `dev`: the same socket API and files from plaintext `.grexal/connections.json`, so an
//! agent runs unchanged on a laptop.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::*;

fn example(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/agent")
        .join(path)
}

fn dev_command(dir: &Path, connections: &Path) -> std::process::Command {
    dev_env_command(dir, &example("grexal.json"), connections)
}

/// The process exited 0 (else the failure shows both streams); its stdout and stderr.
fn exited_zero(out: &std::process::Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

fn dev_env_command(dir: &Path, manifest: &Path, connections: &Path) -> std::process::Command {
    let mut cmd = command();
    cmd.arg("dev")
        .arg("--manifest")
        .arg(manifest)
        .arg("--connections")
        .arg(connections)
        .arg("--socket")
        .arg(dir.join("dev.sock"))
        .arg("--credentials-dir")
        .arg(dir.join("creds"))
        .arg("--env-file")
        .arg(dir.join("agent.env"));
    cmd
}

#[test]
fn the_example_agent_runs_unchanged_under_dev() {
    let dir = open_tempdir();
    let mut cmd = dev_command(dir.path(), &example(".grexal/connections.json"));
    cmd.args(["--", "python3"]).arg(example("agent.py"));
    let out = run_to_end(&mut cmd);
    let (stdout, stderr) = exited_zero(&out);
    assert!(
        stdout.contains("all three pre-collected modes read"),
        "{stdout}"
    );
    assert!(
        stdout.contains("first line = -----BEGIN DEV KEY-----"),
        "file_upload from a dev path: {stdout}"
    );
    assert!(
        stdout.contains("'password', 'username'"),
        "delivery file wrote both fields: {stdout}"
    );
    assert_no_canary(
        "dev log",
        &stderr,
        &["sk-dev-local-key", "dev-mail-password", "gho_dev_local"],
    );
}

/// `run` for the example's manifest, opening `bundle` (sealed by `keys` for `sandbox_id`),
/// with its socket, credentials root and env file under `dir/run`, which it makes (in a
/// sandbox the credentials root's parent, /tmp, exists).
fn run_example_command(
    dir: &Path,
    keys: &SealedFixture,
    sandbox_id: &str,
    bundle: &Path,
) -> std::process::Command {
    std::fs::create_dir(dir.join("run")).expect("mkdir run");
    let mut cmd = command();
    cmd.arg("run")
        .args(["--sandbox-id", sandbox_id, "--manifest"])
        .arg(example("grexal.json"))
        .arg("--sandbox-key")
        .arg(&keys.sandbox_key)
        .arg("--platform-key")
        .arg(&keys.platform_pub)
        .arg("--bundle")
        .arg(bundle)
        .arg("--socket")
        .arg(dir.join("run/run.sock"))
        .arg("--credentials-dir")
        .arg(dir.join("run/creds"))
        .arg("--env-file")
        .arg(dir.join("run/agent.env"));
    cmd
}

/// The example's own `.grexal/connections.json`, whose deploy key is a `"path"` entry,
/// sealed as it is: the agent runs unchanged under `run` and reads the key file (the
/// sandbox refused the `"path"` entry, exit 89, before `seal` read the file into the bundle).
#[test]
fn a_dev_connections_file_sealed_runs_the_example_agent_under_run() {
    let dir = open_tempdir();
    let keys = SealedFixture::new(dir.path());
    let bundle = dir.path().join("bundle");
    keys.seal(
        &example(".grexal/connections.json"),
        "sbx-sealed-dev",
        1,
        &bundle,
    );
    let out = run_to_end(
        run_example_command(dir.path(), &keys, "sbx-sealed-dev", &bundle)
            .args(["--", "python3"])
            .arg(example("agent.py")),
    );
    let (stdout, _) = exited_zero(&out);
    assert!(
        stdout.contains("first line = -----BEGIN DEV KEY-----"),
        "the key file reached the sandbox: {stdout}"
    );
}

/// The example client puts a connection id into the request path percent-encoded: an id
/// with `?`, `#` or `/` in it names no connection (`connection_not_found`) instead of
/// another one (`connect("openai?x")` returned openai's credentials).
#[test]
fn the_example_client_encodes_the_connection_id_in_the_path() {
    let dir = open_tempdir();
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
from grexal_client import GrexalError, Sidecar
sidecar = Sidecar()
assert sidecar.connect("openai").get("organization") == "org-dev"
for bad in ["openai?x", "openai#x", "openai/", "x/../openai", "openai%3Fx"]:
    try:
        got = sidecar.connect(bad)
    except GrexalError as e:
        if e.code != "connection_not_found":
            sys.exit(f"{bad!r}: {e.code}")
    else:
        sys.exit(f"{bad!r} returned a connection with {sorted(got.keys())}")
print("every odd id refused")
"#;
    let mut cmd = dev_command(dir.path(), &example(".grexal/connections.json"));
    cmd.args(["--", "python3", "-c", script]).arg(example(""));
    let out = run_to_end(&mut cmd);
    let (stdout, _) = exited_zero(&out);
    assert!(stdout.contains("every odd id refused"), "{stdout}");
}

/// The same document served by `dev` (plaintext) and `run` (sealed) gives the same answers.
#[test]
fn dev_and_run_serve_the_same_answers() {
    let dir = open_tempdir();
    let creds = std::fs::read_to_string(example("credentials.json")).expect("read");
    write(&dir.path().join("connections.json"), &creds, 0o600);
    let keys = SealedFixture::new(dir.path());
    keys.seal(
        &example("credentials.json"),
        "sbx-dev-vs-run",
        1,
        &dir.path().join("bundle"),
    );

    let mut dev = Daemon::spawn(
        dev_command(
            &dir.path().join("dev"),
            &dir.path().join("connections.json"),
        ),
        dir.path().join("dev.log"),
        dir.path().join("dev/dev.sock"),
    );
    let mut run = Daemon::spawn(
        run_example_command(
            dir.path(),
            &keys,
            "sbx-dev-vs-run",
            &dir.path().join("bundle"),
        ),
        dir.path().join("run.log"),
        dir.path().join("run/run.sock"),
    );
    dev.wait_ready(Duration::from_secs(20));
    run.wait_ready(Duration::from_secs(20));

    let list = |d: &Daemon| {
        http_unix(&d.socket, "GET", "/v1/connections", None)
            .expect("list")
            .json()
    };
    assert_eq!(list(&dev), list(&run));
    for id in ["openai", "smtp", "github", "deploy_key", "nope"] {
        let target = format!("/v1/connections/{id}");
        let a = http_unix(&dev.socket, "GET", &target, None).expect("dev");
        let b = http_unix(&run.socket, "GET", &target, None).expect("run");
        assert_eq!(a.status, b.status, "{id}");
        let (mut a, mut b) = (a.json(), b.json());
        if id == "deploy_key" {
            assert!(a["file_path"]
                .as_str()
                .expect("path")
                .ends_with("/deploy_key/deploy.pem"));
            assert!(b["file_path"]
                .as_str()
                .expect("path")
                .ends_with("/deploy_key/deploy.pem"));
            a["file_path"] = serde_json::Value::Null;
            b["file_path"] = serde_json::Value::Null;
        }
        assert_eq!(a, b, "{id}");
    }
}

#[test]
fn missing_credentials_are_reported_by_connection_with_what_to_add() {
    let dir = open_tempdir();
    let partial = serde_json::json!({"connections": {
        "openai": {"fields": {"api_key": "sk-x", "organization": "o"}},
        "smtp": {"fields": {"username": "u", "password": "p"}}
    }});
    write(
        &dir.path().join("connections.json"),
        partial.to_string(),
        0o600,
    );
    let out = run_to_end(
        dev_command(dir.path(), &dir.path().join("connections.json")).args(["--", "true"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    for needle in ["github", "deploy_key", "access_token", "filename"] {
        assert!(stderr.contains(needle), "names {needle}:\n{stderr}");
    }
}

#[test]
fn a_malformed_connections_file_names_the_problem() {
    let dir = open_tempdir();
    let bad = r#"{"connections": {"github": {"access_token": "CANARY-tok-1", "token_type": "bearer", "refresh_token": "CANARY-refresh-2"}}}"#;
    write(&dir.path().join("connections.json"), bad, 0o600);
    let out = run_to_end(
        dev_command(dir.path(), &dir.path().join("connections.json")).args(["--", "true"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("github") && stderr.contains("refresh_token"),
        "{stderr}"
    );
    assert_no_canary("dev error", &stderr, &["CANARY-tok-1", "CANARY-refresh-2"]);
    assert_no_canary(
        "dev stdout",
        &String::from_utf8_lossy(&out.stdout),
        &["CANARY-tok-1", "CANARY-refresh-2"],
    );
}

/// A manifest whose connection `bulk` delivers `n` fields as env vars, and a connections
/// file giving each a value of `len` bytes that starts with a canary.
fn env_fixture(dir: &Path, n: usize, len: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let fields: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"name": format!("f{i}"), "label": "F", "secret": true}))
        .collect();
    let manifest = serde_json::json!({"connections": [
        {"id": "bulk", "display_name": "Bulk", "auth_mode": "secret_input", "delivery": "env",
         "fields": fields}
    ]});
    let values: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            let mut value = format!("CANARY-env-{i:02}-");
            value.push_str(&"v".repeat(len - value.len()));
            (format!("f{i}"), value.into())
        })
        .collect();
    let connections = serde_json::json!({"connections": {"bulk": {"fields": values}}});
    let (m, c) = (dir.join("grexal.json"), dir.join("connections.json"));
    write(&m, manifest.to_string(), 0o644);
    write(&c, connections.to_string(), 0o600);
    (m, c)
}

/// 40 env-delivered fields of 60 000 bytes (2.4 MB) cannot be an agent's environment: the
/// install is refused naming the connection and the limit, and the agent never starts
/// (before, the install succeeded and the agent's execve failed with E2BIG, exit 71).
#[test]
fn env_delivered_fields_over_the_limit_are_refused_at_install() {
    let dir = open_tempdir();
    let (manifest, connections) = env_fixture(dir.path(), 40, 60_000);
    let marker = dir.path().join("agent-ran");
    let out = run_to_end(
        dev_env_command(dir.path(), &manifest, &connections)
            .args(["--", "touch"])
            .arg(&marker),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains(r#"connections["bulk"]"#) && stderr.contains("1048576-byte limit"),
        "names the connection and the limit:\n{stderr}"
    );
    assert!(!marker.exists(), "the agent must not start");
    assert!(
        !dir.path().join("agent.env").exists(),
        "nothing written for the agent"
    );
    for out in [&stderr, &String::from_utf8_lossy(&out.stdout)] {
        assert_no_canary("dev output", out, &["CANARY-env"]);
    }
}

/// When the agent cannot be started, the log says why, from the OS: here env-delivered
/// fields under the limit but over what this smaller stack limit lets execve take (a
/// quarter of it: 256 KiB), so execve fails with E2BIG.
#[test]
fn an_agent_that_cannot_start_is_logged_with_its_cause() {
    use std::os::unix::process::CommandExt;
    let dir = open_tempdir();
    let (manifest, connections) = env_fixture(dir.path(), 5, 60_000);
    let marker = dir.path().join("agent-ran");
    let mut cmd = dev_env_command(dir.path(), &manifest, &connections);
    cmd.args(["--", "touch"]).arg(&marker);
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_STACK, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = 1024 * 1024;
            if libc::setrlimit(libc::RLIMIT_STACK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_to_end(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(71), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("agent could not run"))
        .unwrap_or_else(|| panic!("no agent failure logged:\n{stderr}"));
    assert!(
        line.contains("Argument list too long (os error 7)"),
        "the cause is logged: {line}"
    );
    assert!(!marker.exists());
    assert_no_canary("dev log", &stderr, &["CANARY-env"]);
}

/// A project whose manifest declares no connection.
fn plain_project(dir: &Path) {
    write(&dir.join("grexal.json"), r#"{"connections": []}"#, 0o644);
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Under Ubuntu's default umask (002) `dev` creates `.grexal/` 0700, not 0775 (which its
/// own checks then refused: exit 74), and starts.
#[test]
fn dev_starts_under_a_002_umask_and_makes_grexal_private() {
    use std::os::unix::process::CommandExt;
    let dir = open_tempdir();
    plain_project(dir.path());
    let mut cmd = command();
    cmd.current_dir(dir.path()).args(["dev", "--", "true"]);
    // SAFETY: only umask, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o002);
            Ok(())
        });
    }
    let out = run_to_end(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(mode_of(&dir.path().join(".grexal")), 0o700);
}

/// A `.grexal/` of ours that the umask made group-writable (`mkdir .grexal` under 002)
/// loses its write bits for group and others, with a warning naming it, and `dev` starts.
#[test]
fn dev_removes_group_write_from_an_existing_grexal_of_ours() {
    let dir = open_tempdir();
    plain_project(dir.path());
    let grexal = dir.path().join(".grexal");
    std::fs::create_dir(&grexal).expect("mkdir");
    std::fs::set_permissions(&grexal, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    let out = run_to_end(
        command()
            .current_dir(dir.path())
            .args(["dev", "--", "true"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(mode_of(&grexal), 0o755);
    assert!(
        stderr.contains("writable by group or others") && stderr.contains(".grexal"),
        "{stderr}"
    );
}

/// With `--agent-user`, a `--credentials-dir` that exists and that the agent cannot enter
/// (root's, 0700) is a configuration problem (78) naming it, before the agent starts: it
/// was accepted, and the agent's read of `$GREXAL_CREDENTIALS_DIR/smtp/password` failed
/// with EACCES. One it can enter (0711) is used, and the agent reads the file.
#[test]
fn dev_refuses_a_credentials_dir_the_agent_user_cannot_enter() {
    if skip_unless_root("dev_refuses_a_credentials_dir_the_agent_user_cannot_enter") {
        return;
    }
    let read = r#"cat "$GREXAL_CREDENTIALS_DIR/smtp/password""#;
    let dir = open_tempdir();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).expect("mkdir");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut cmd = dev_command(dir.path(), &example(".grexal/connections.json"));
    cmd.args(["--agent-user", "nobody", "--", "sh", "-c", read]);
    let out = run_to_end(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&creds.display().to_string())
            && stderr.contains("cannot be entered by the agent's user"),
        "{stderr}"
    );
    assert_eq!(mode_of(&creds), 0o700, "left as it is");

    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let out = run_to_end(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "dev-mail-password");
}

/// Under `dev` the same NUL is a problem of `connections.json` (65), not a failed write
/// (74), named by its field and never its value.
#[test]
fn a_nul_in_an_env_delivered_field_is_a_data_error_in_dev() {
    let dir = open_tempdir();
    let connections = dir.path().join("connections.json");
    write(
        &connections,
        r#"{"connections": {
            "openai": {"fields": {"api_key": "sk-CANARY-nul\u0000x", "organization": "o"}},
            "smtp": {"fields": {"username": "u", "password": "p"}},
            "github": {"access_token": "t", "token_type": "bearer"},
            "deploy_key": {"filename": "k.pem", "mime_type": "text/plain", "content_base64": ""}}}"#,
        0o600,
    );
    let out = run_to_end(dev_command(dir.path(), &connections).args(["--", "true"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains(r#"connections["openai"].fields["api_key"]"#) && stderr.contains("NUL"),
        "{stderr}"
    );
    assert_no_canary("dev log", &stderr, &["CANARY-nul"]);
    assert!(!dir.path().join("agent.env").exists());
}

/// `--connections` must name a regular file: /dev/zero (no length to hold the 16 MiB limit
/// against) and a FIFO nobody writes (boot waited on it for good) are refused at once,
/// naming the path.
#[test]
fn connections_that_are_not_a_regular_file_are_refused_at_once() {
    let dir = open_tempdir();
    let fifo = dir.path().join("connections.fifo");
    mkfifo(&fifo);
    for (i, connections) in [Path::new("/dev/zero"), &fifo].into_iter().enumerate() {
        let mut cmd = dev_command(dir.path(), connections);
        cmd.args(["--", "true"]);
        let mut daemon = Daemon::spawn(
            cmd,
            dir.path().join(format!("dev-{i}.log")),
            dir.path().join("dev.sock"),
        );
        let code = daemon.wait_exit(Duration::from_secs(5));
        let log = daemon.log_text();
        assert_eq!(code, 66, "{log}");
        assert!(
            log.contains(&format!(
                "{}: it is not a regular file",
                connections.display()
            )),
            "{log}"
        );
    }
}

/// A stop signal while boot waits in a blocking read (here of a manifest that is a FIFO
/// whose writer never writes) stops `dev` at once, exiting 0 as any stop during boot; it
/// was caught and never acted on, and only SIGKILL ended the daemon.
#[test]
fn a_stop_signal_while_boot_waits_on_a_read_stops_dev() {
    let dir = open_tempdir();
    let manifest = dir.path().join("grexal.fifo");
    mkfifo(&manifest);
    let mut cmd = dev_env_command(dir.path(), &manifest, &dir.path().join("connections.json"));
    cmd.args(["--", "true"]);
    let mut daemon = Daemon::spawn(cmd, dir.path().join("dev.log"), dir.path().join("dev.sock"));
    let _writer = fifo_with_a_silent_writer(&manifest, &mut daemon);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let code = daemon.wait_exit(Duration::from_secs(5));
    let log = daemon.log_text();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("stop signal during boot"), "{log}");
}

/// Under `dev` the file-delivered fields are under `.grexal/credentials/`, not the
/// /tmp/grexal the Grexal docs name: the agent finds them through
/// `GREXAL_CREDENTIALS_DIR`, the root its files are really under.
#[test]
fn the_agent_finds_file_delivered_fields_through_grexal_credentials_dir() {
    let dir = open_tempdir();
    write(
        &dir.path().join("grexal.json"),
        r#"{"connections": [
          {"id": "smtp", "display_name": "Mail", "auth_mode": "secret_input", "delivery": "file",
           "fields": [{"name": "password", "label": "Password", "secret": true}]}]}"#,
        0o644,
    );
    write(
        &dir.path().join(".grexal/connections.json"),
        r#"{"connections": {"smtp": {"fields": {"password": "p4ss"}}}}"#,
        0o600,
    );
    std::fs::set_permissions(
        dir.path().join(".grexal"),
        std::fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");
    let out = run_to_end(command().current_dir(dir.path()).args([
        "dev",
        "--",
        "sh",
        "-c",
        r#"echo "root=$GREXAL_CREDENTIALS_DIR"; cat "$GREXAL_CREDENTIALS_DIR/smtp/password""#,
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let root = dir.path().join(".grexal/credentials");
    assert!(
        stdout.contains(&format!("root={}\n", root.display())) && stdout.ends_with("p4ss"),
        "{stdout}"
    );
}

/// An ordinary developer (uid 4242, no XDG_RUNTIME_DIR) runs `dev` with a desktop: the
/// run dir and the profile default to their own directories, not root's /run/grexal and
/// /var/lib/grexal (EPERM, exit 71), and the agent gets the browser.
#[test]
fn dev_runs_the_desktop_for_a_non_root_developer() {
    use std::os::unix::process::CommandExt;
    if skip_unless_root("dev_runs_the_desktop_for_a_non_root_developer") {
        return;
    }
    let xvnc = Path::new("/usr/bin/Xvnc");
    if !xvnc.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but Xvnc is missing"
        );
        eprintln!("skipping: {} missing", xvnc.display());
        return;
    }
    const DEVELOPER: u32 = 4242;
    let dir = open_tempdir();
    write(
        &dir.path().join("grexal.json"),
        r#"{"runtime": {"sandbox_template": "desktop"}, "connections": [
            {"id": "site", "display_name": "Site", "auth_mode": "browser_login"}]}"#,
        0o644,
    );
    let uid = Some(nix::unistd::Uid::from_raw(DEVELOPER));
    let gid = Some(nix::unistd::Gid::from_raw(DEVELOPER));
    nix::unistd::chown(dir.path(), uid, gid).expect("chown");
    nix::unistd::chown(&dir.path().join("grexal.json"), uid, gid).expect("chown");
    let mut cmd = command();
    cmd.current_dir(dir.path())
        .env("HOME", dir.path())
        .args([
            "dev",
            "--",
            "sh",
            "-c",
            r#"test -n "$GREXAL_BROWSER_CDP_URL""#,
        ])
        .uid(DEVELOPER)
        .gid(DEVELOPER);
    let out = run_to_end(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let profile = dir.path().join(".grexal/chromium-profile");
    let owner = std::fs::metadata(&profile).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    // The run dir is the developer's own, in /tmp; the test removes it.
    let grexal = dir.path().join(".grexal");
    let run_dir = grexal_sidecar::config::dev_desktop_run_dir(None, DEVELOPER, &grexal);
    let _ = std::fs::remove_dir_all(&run_dir);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(owner.ok(), Some(DEVELOPER), "the profile is under .grexal");
    assert!(stderr.contains("desktop ready"), "{stderr}");
}

/// In a project too deep for `.grexal/sidecar.sock` to fit a Unix socket address (107
/// bytes), `dev` puts the socket in a short directory of the user's, per project, and the
/// agent reaches it through GREXAL_SIDECAR_SOCKET: in `$XDG_RUNTIME_DIR` when set, else in
/// /tmp (0700); with `--agent-user`, in /tmp and 0711 so the agent can reach it. Before,
/// the bind failed ("path must be shorter than SUN_LEN", exit 71).
#[test]
fn a_deep_project_gets_a_short_default_socket() {
    use std::os::unix::fs::MetadataExt;
    let dir = open_tempdir();
    let project = dir.path().join("d".repeat(100));
    std::fs::create_dir(&project).expect("mkdir project");
    write(
        &project.join("grexal.json"),
        r#"{"manifest_version": 1, "entrypoint": "agent.py", "connections": []}"#,
        0o644,
    );
    let xdg = dir.path().join("xdg");
    std::fs::create_dir(&xdg).expect("mkdir xdg");
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // Asks for the connection list on the socket it was given; prints the answer's status
    // line and the socket's path.
    let agent = r#"
import os, socket
path = os.environ["GREXAL_SIDECAR_SOCKET"]
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall(b"GET /v1/connections HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n")
print(s.recv(4096).decode().split("\r\n")[0])
print(path)
"#;
    let mut cases = vec![(Some(&xdg), None, 0o700), (None, None, 0o700)];
    if is_root() {
        cases.push((Some(&xdg), Some("nobody"), 0o711));
    }
    for (xdg_dir, user, mode) in cases {
        let mut cmd = command();
        cmd.current_dir(&project).arg("dev");
        if let Some(xdg_dir) = xdg_dir {
            cmd.env("XDG_RUNTIME_DIR", xdg_dir);
        }
        if let Some(user) = user {
            cmd.args(["--agent-user", user]);
        }
        let out = run_to_end(cmd.args(["--", "python3", "-c", agent]));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let case = format!("XDG_RUNTIME_DIR {xdg_dir:?}, agent user {user:?}");
        assert_eq!(out.status.code(), Some(0), "{case}: {stdout}\n{stderr}");
        let mut lines = stdout.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"), "{case}: {stdout}");
        let socket = Path::new(lines.next().expect("the socket's path"));
        assert!(
            socket.as_os_str().len() <= 107 && socket.ends_with("sidecar.sock"),
            "{case}: {socket:?}"
        );
        let parent = socket.parent().expect("parent");
        let name = parent.file_name().unwrap().to_string_lossy().into_owned();
        match (xdg_dir, user) {
            (Some(x), None) => assert!(
                parent.parent() == Some(x.as_path()) && name.starts_with("grexal-sidecar-"),
                "{case}: {socket:?}"
            ),
            _ => assert!(
                parent.parent() == Some(Path::new("/tmp"))
                    && name.starts_with(&format!("grexal-sidecar-{}-", nix::unistd::geteuid())),
                "{case}: {socket:?}"
            ),
        }
        let meta = std::fs::metadata(parent).expect("socket dir");
        assert_eq!(meta.mode() & 0o7777, mode, "{case}");
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw(), "{case}");
        assert!(
            stderr.contains("too long for a Unix socket"),
            "{case}: {stderr}"
        );
        assert!(!socket.exists(), "{case}: the socket is removed at exit");
        // The instance lock's file stays, by design (see `instance`), and nothing else.
        std::fs::remove_file(parent.join("sidecar.sock.lock")).expect("the lock file");
        std::fs::remove_dir(parent).expect("nothing else left in the socket dir");
    }
}

/// A file a `"path"` entry names (the example's deploy key) that group or others may read
/// or write is warned about once, naming the entry, the path and the mode, never its
/// contents; a private one is not.
#[test]
fn a_path_entrys_file_open_to_others_is_warned_about() {
    let dir = open_tempdir();
    let doc = std::fs::read_to_string(example(".grexal/connections.json")).expect("read");
    let connections = dir.path().join("connections.json");
    write(&connections, &doc, 0o600);
    let key = dir.path().join("deploy.pem");
    std::fs::copy(example(".grexal/deploy.pem"), &key).expect("copy");
    for (mode, warned) in [
        (0o644, true),
        (0o640, true),
        (0o620, true),
        (0o602, true),
        (0o600, false),
    ] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let out = run_to_end(dev_command(dir.path(), &connections).args(["--", "true"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{mode:o}: {stderr}");
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| {
                l.contains("this credential file may be read or written by group or others")
            })
            .collect();
        match warned {
            true => {
                assert_eq!(warnings.len(), 1, "{mode:o}, once: {stderr}");
                assert!(
                    warnings[0].contains(&key.display().to_string())
                        && warnings[0].contains(&format!("{mode:04o}"))
                        && warnings[0].contains("deploy_key")
                        && warnings[0].contains("chmod 600"),
                    "{mode:o}: {stderr}"
                );
            }
            false => assert!(warnings.is_empty(), "{mode:o}: {stderr}"),
        }
        assert_no_canary("dev log", &stderr, &["BEGIN DEV KEY", "sk-dev-local-key"]);
    }
}

/// `connections.json` holds plaintext secrets: one that group or others may read or write
/// gets a warning naming the file and its mode (never anything in it), once, and `dev`
/// goes on; a private one gets none.
#[test]
fn a_connections_file_open_to_others_is_warned_about() {
    let dir = open_tempdir();
    let doc = std::fs::read_to_string(example(".grexal/connections.json")).expect("read");
    std::fs::copy(example(".grexal/deploy.pem"), dir.path().join("deploy.pem")).expect("copy");
    let connections = dir.path().join("connections.json");
    // The key file the document names is private; only the document's own mode varies.
    std::fs::set_permissions(
        dir.path().join("deploy.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    for (mode, warned) in [
        (0o644, true),
        (0o620, true),
        (0o604, true),
        (0o602, true),
        (0o600, false),
        (0o400, false),
    ] {
        write(&connections, &doc, mode);
        let out = run_to_end(dev_command(dir.path(), &connections).args(["--", "true"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{mode:o}: {stderr}");
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("readable or writable by group or others"))
            .collect();
        match warned {
            true => {
                assert_eq!(warnings.len(), 1, "{mode:o}, once: {stderr}");
                assert!(
                    warnings[0].contains(&connections.display().to_string())
                        && warnings[0].contains(&format!("{mode:04o}"))
                        && warnings[0].contains("chmod 600"),
                    "{mode:o}: {stderr}"
                );
            }
            false => assert!(warnings.is_empty(), "{mode:o}: {stderr}"),
        }
        assert_no_canary(
            "dev log",
            &stderr,
            &["sk-dev-local-key", "dev-mail-password", "gho_dev_local"],
        );
    }
}
