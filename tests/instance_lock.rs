//! One daemon per socket and per credentials root: a second `dev` in the same project, or a
//! second `run` given the same socket or credentials root, exits 75 and leaves the first
//! one's socket and files alone; a socket something still listens on is never taken over.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

const MANIFEST: &str = r#"{"manifest_version":1,"connections":[
  {"id":"openai","display_name":"OpenAI","auth_mode":"secret_input","delivery":"env",
   "fields":[{"name":"api_key","label":"K","secret":true}]},
  {"id":"smtp","display_name":"SMTP","auth_mode":"secret_input","delivery":"file",
   "fields":[{"name":"password","label":"P","secret":true}]}]}"#;
const CONNECTIONS: &str = r#"{"connections":{"openai":{"fields":{"api_key":"sk-canary"}},
  "smtp":{"fields":{"password":"pw-canary"}}}}"#;

/// A dev project in `dir`: grexal.json and .grexal/connections.json.
fn project(dir: &Path) {
    write(&dir.join("grexal.json"), MANIFEST, 0o644);
    write(&dir.join(".grexal/connections.json"), CONNECTIONS, 0o600);
}

/// `grexal-sidecar dev` with the default paths, run in `dir`.
fn dev(dir: &Path) -> std::process::Command {
    let mut cmd = command();
    cmd.current_dir(dir).arg("dev");
    cmd
}

/// `run` with a manifest that declares no connection, its paths in `dir` and the socket
/// and credentials root given.
fn run(dir: &Path, socket: &Path, credentials: &Path) -> std::process::Command {
    write(
        &dir.join("empty.json"),
        r#"{"manifest_version":1,"connections":[]}"#,
        0o644,
    );
    let mut cmd = command();
    cmd.args(["run", "--sandbox-id", "t", "--manifest"])
        .arg(dir.join("empty.json"))
        .arg("--socket")
        .arg(socket)
        .arg("--credentials-dir")
        .arg(credentials)
        .arg("--env-file")
        .arg(dir.join(format!(
            "{}.env",
            socket.file_name().unwrap().to_string_lossy()
        )))
        .arg("--public-key-out")
        .arg(dir.join(format!(
            "{}.pub",
            socket.file_name().unwrap().to_string_lossy()
        )));
    cmd
}

/// Exit code and stderr of a second daemon that is expected to give up at once.
fn refused(cmd: &mut std::process::Command) -> (Option<i32>, String) {
    let out = run_to_end(cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn connect(socket: &Path, id: &str) -> serde_json::Value {
    let resp = http_unix(socket, "GET", &format!("/v1/connections/{id}"), None).expect("connect");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    resp.json()
}

#[test]
fn a_second_dev_in_the_same_project_is_refused_and_the_first_keeps_everything() {
    let dir = open_tempdir();
    project(dir.path());
    let grexal = dir.path().join(".grexal");
    let socket = grexal.join("sidecar.sock");
    let password = grexal.join("credentials/smtp/password");
    let mut first = Daemon::spawn(
        dev(dir.path()),
        dir.path().join("first.log"),
        socket.clone(),
    );
    first.wait_ready(Duration::from_secs(10));
    assert!(password.exists());

    let (code, stderr) = refused(dev(dir.path()).args(["--", "true"]));
    assert_eq!(
        code,
        Some(75),
        "the second dev was not refused; its log:\n{stderr}"
    );
    let pid = first.child.id();
    assert!(
        stderr.contains("already running") && stderr.contains(&format!("pid {pid}")),
        "the refusal does not name the first daemon (pid {pid}):\n{stderr}"
    );
    // The first daemon is untouched: its socket answers, its files are there.
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first daemon died"
    );
    assert_eq!(connect(&socket, "smtp")["password"], "pw-canary");
    assert_eq!(
        std::fs::read_to_string(&password).expect("the first's file"),
        "pw-canary"
    );
    assert!(std::fs::read_to_string(grexal.join("agent.env"))
        .expect("the first's env file")
        .contains("OPENAI_API_KEY"),);

    // Once the first has stopped, the lock file it leaves behind stops nobody.
    first.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(15)), 0);
    assert!(!password.exists(), "the first did not wipe its files");
    assert!(grexal.join("sidecar.sock.lock").exists());
    let out = run_to_end(dev(dir.path()).args(["--", "true"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_second_run_with_the_same_socket_is_refused() {
    let dir = open_tempdir();
    let socket = dir.path().join("s.sock");
    let mut first = Daemon::spawn(
        run(dir.path(), &socket, &dir.path().join("creds-a")),
        dir.path().join("first.log"),
        socket.clone(),
    );
    first.wait_ready(Duration::from_secs(10));
    let (code, stderr) =
        refused(run(dir.path(), &socket, &dir.path().join("creds-b")).args(["--", "true"]));
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first daemon died"
    );
    assert_eq!(
        http_unix(&socket, "GET", "/healthz", None)
            .expect("healthz")
            .status,
        200
    );
}

#[test]
fn a_second_run_sharing_the_credentials_root_behind_another_socket_is_refused() {
    let dir = open_tempdir();
    project(dir.path());
    let first_socket = dir.path().join("a.sock");
    let root = dir.path().join("creds");
    let mut cmd = dev(dir.path());
    cmd.arg("--socket")
        .arg(&first_socket)
        .arg("--credentials-dir")
        .arg(&root);
    let mut first = Daemon::spawn(cmd, dir.path().join("first.log"), first_socket.clone());
    first.wait_ready(Duration::from_secs(10));

    let mut second = dev(dir.path());
    second
        .arg("--socket")
        .arg(dir.path().join("b.sock"))
        .arg("--credentials-dir")
        .arg(&root)
        .args(["--env-file"])
        .arg(dir.path().join("b.env"))
        .args(["--", "true"]);
    let (code, stderr) = refused(&mut second);
    assert_eq!(code, Some(75), "{stderr}");
    assert!(
        stderr.contains("credentials root") && stderr.contains("in use"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("smtp/password")).expect("the first's file"),
        "pw-canary"
    );
    assert_eq!(connect(&first_socket, "smtp")["password"], "pw-canary");
}

/// A socket file another program listens on (no lock of ours next to it: an older daemon,
/// something else entirely) is not unlinked: the daemon exits 75 and the listener keeps
/// its socket.
#[test]
fn a_socket_something_listens_on_is_not_taken_over() {
    let dir = open_tempdir();
    let socket = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let (code, stderr) =
        refused(run(dir.path(), &socket, &dir.path().join("creds")).args(["--", "true"]));
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("something is listening"), "{stderr}");
    let _client = std::os::unix::net::UnixStream::connect(&socket).expect("still ours");
    listener.accept().expect("accepted");

    // Once nobody listens, the file is stale and replaced.
    drop(listener);
    let out = run_to_end(run(dir.path(), &socket, &dir.path().join("creds")).args(["--", "true"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
