//! The real binary end to end: `run` opens a bundle sealed by `seal`, writes every mode,
//! starts a Python agent as `nobody`, and returns its exit code; bad bundles are refused
//! before anything is written or started; a newer bundle pushed later replaces the
//! credentials and an older one is refused; an agent that cannot start is reported to the
//! platform as `agent_exited`; a boot that fails, or is stopped by a signal, after the
//! credentials were written leaves none of them behind. `run --desktop` is in
//! `run_e2e_desktop.rs`.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::*;

const SANDBOX: &str = "sbx-e2e-1";
const OPENAI_KEY: &str = "CANARY-openai-5f1e0c9d";
const SMTP_PASSWORD: &str = "CANARY-smtp-a17b22";
const GITHUB_TOKEN: &str = "CANARY-gho-99f0e1";
const KEY_BYTES: &str = "-----BEGIN KEY-----\nCANARY-keyfile-3c3c\n-----END KEY-----\n";
const CANARIES: &[&str] = &[
    OPENAI_KEY,
    SMTP_PASSWORD,
    GITHUB_TOKEN,
    "CANARY-keyfile-3c3c",
    "CANARY-v2-openai",
];

fn manifest() -> serde_json::Value {
    json!({
        "manifest_version": 1,
        "entrypoint": "agent.py",
        "some_future_key": {"ignored": true},
        "runtime": {"language": "python", "timeout_seconds": 60},
        "connections": [
            {"id": "openai", "display_name": "OpenAI", "auth_mode": "secret_input", "delivery": "env",
             "fields": [{"name": "api_key", "label": "API key", "secret": true},
                        {"name": "org", "label": "Org", "secret": false, "env_var": "OPENAI_ORG_ID"}]},
            {"id": "smtp", "display_name": "Mail", "auth_mode": "secret_input", "delivery": "file",
             "fields": [{"name": "username", "label": "User", "secret": false},
                        {"name": "password", "label": "Password", "secret": true}]},
            {"id": "github", "display_name": "GitHub", "auth_mode": "oauth_redirect",
             "provider": {"auth_url": "https://github.com/login/oauth/authorize",
                          "token_url": "https://github.com/login/oauth/access_token", "scopes": ["repo"]}},
            {"id": "deploy_key", "display_name": "Deploy key", "auth_mode": "file_upload",
             "accepted_extensions": [".pem"], "max_size_bytes": 65536, "description": "SSH key"},
            {"id": "bank", "display_name": "Bank", "auth_mode": "browser_login", "login_url": "https://bank.example/login"}
        ]
    })
}

fn credentials(openai_key: &str) -> serde_json::Value {
    use base64::Engine;
    json!({"connections": {
        "openai": {"fields": {"api_key": openai_key, "org": "org-42"}},
        "smtp": {"fields": {"username": "agent@example.test", "password": SMTP_PASSWORD}},
        "github": {"access_token": GITHUB_TOKEN, "token_type": "bearer", "expires_at": 4102444800u64, "scope": "repo"},
        "deploy_key": {"filename": "deploy.pem", "mime_type": "application/x-pem-file",
                       "content_base64": base64::engine::general_purpose::STANDARD.encode(KEY_BYTES)}
    }})
}

struct Fixture {
    dir: tempfile::TempDir,
    keys: SealedFixture,
}

impl Fixture {
    fn new() -> Self {
        let dir = open_tempdir();
        write(
            &dir.path().join("grexal.json"),
            manifest().to_string(),
            0o644,
        );
        write(
            &dir.path().join("creds.json"),
            credentials(OPENAI_KEY).to_string(),
            0o600,
        );
        let keys = SealedFixture::new(dir.path());
        Fixture { dir, keys }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn bundle(
        &self,
        name: &str,
        creds: &serde_json::Value,
        sandbox: &str,
        version: u64,
    ) -> PathBuf {
        let src = self.path(&format!("{name}.json"));
        write(&src, creds.to_string(), 0o600);
        let out = self.path(name);
        self.keys.seal(&src, sandbox, version, &out);
        out
    }

    /// `run` with everything in the temp dir; the caller adds the bundle and agent.
    fn run_command(&self) -> std::process::Command {
        let mut cmd = command();
        cmd.arg("run")
            .args(["--sandbox-id", SANDBOX])
            .arg("--manifest")
            .arg(self.path("grexal.json"))
            .arg("--sandbox-key")
            .arg(&self.keys.sandbox_key)
            .arg("--platform-key")
            .arg(&self.keys.platform_pub)
            .arg("--socket")
            .arg(self.path("run/sidecar.sock"))
            .arg("--credentials-dir")
            .arg(self.path("creds-root"))
            .arg("--env-file")
            .arg(self.path("run/agent.env"))
            .args(["--log", "debug"]);
        cmd
    }

    fn connection_dirs(&self) -> Vec<String> {
        match std::fs::read_dir(self.path("creds-root")) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => vec![],
        }
    }
}

#[test]
fn run_delivers_every_mode_to_an_agent_running_as_nobody() {
    if skip_unless_root("run_delivers_every_mode") {
        return;
    }
    let fx = Fixture::new();
    let bundle = fx.bundle("bundle-v1", &credentials(OPENAI_KEY), SANDBOX, 1);
    let expect = json!({
        "uid": NOBODY,
        "home": "/nonexistent",
        "root": fx.path("creds-root"),
        "absent_env": ["GREXAL_SANDBOX_KEY", "GREXAL_PLATFORM_KEY", "GREXAL_BUNDLE", "GREXAL_CONTROL_LISTEN", "GREXAL_CONTROL_TOKEN_FILE", "GREXAL_SANDBOX_ID"],
        "states": {"openai": ["secret_input", "ready"], "smtp": ["secret_input", "ready"],
                   "github": ["oauth_redirect", "ready"], "deploy_key": ["file_upload", "ready"],
                   "bank": ["browser_login", "interactive"]},
        "openai": {"api_key": OPENAI_KEY, "org": "org-42"},
        "openai_env": {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_ORG_ID": "org-42"},
        "smtp": {"username": "agent@example.test", "password": SMTP_PASSWORD},
        "github": {"access_token": GITHUB_TOKEN, "token_type": "bearer", "expires_at": 4102444800u64, "scope": "repo"},
        "deploy_key": {"filename": "deploy.pem", "mime_type": "application/x-pem-file", "content": KEY_BYTES},
    });
    write(&fx.path("expect.json"), expect.to_string(), 0o644);
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents/check_all.py");

    let mut cmd = fx.run_command();
    // Daemon-only variables that must not reach the agent.
    write(
        &fx.path("control.token"),
        "test-control-token-0123456789abcdef",
        0o600,
    );
    cmd.env("GREXAL_SANDBOX_KEY", &fx.keys.sandbox_key)
        .env("GREXAL_PLATFORM_KEY", &fx.keys.platform_pub)
        .env("GREXAL_SANDBOX_ID", SANDBOX)
        .env("GREXAL_BUNDLE", &bundle)
        // The token file is refused without the endpoint it is for.
        .env(
            "GREXAL_CONTROL_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("GREXAL_CONTROL_TOKEN_FILE", fx.path("control.token"))
        .arg("--bundle")
        .arg(&bundle)
        .args(["--agent-user", "nobody", "--"])
        .arg("python3")
        .arg(&agent)
        .arg(fx.path("expect.json"));
    let mut daemon = Daemon::spawn(cmd, fx.path("daemon.log"), fx.path("run/sidecar.sock"));
    let code = daemon.wait_exit(Duration::from_secs(60));
    let log = daemon.log_text();
    assert_eq!(
        code, 7,
        "the agent's exit code comes back through the daemon; log:\n{log}"
    );
    assert_no_canary("daemon log", &log, CANARIES);
    assert!(
        fx.connection_dirs().is_empty(),
        "credential files wiped on exit: {:?}",
        fx.connection_dirs()
    );
    assert!(!fx.path("run/agent.env").exists(), "env file wiped on exit");
}

/// Each bad bundle: its own exit code and message; nothing written; the agent never starts.
#[test]
fn bad_bundles_are_refused_before_anything_is_written() {
    let fx = Fixture::new();
    let good = std::fs::read(fx.bundle("good", &credentials(OPENAI_KEY), SANDBOX, 1))
        .expect("read bundle");
    let other_keys = SealedFixture::new(&fx.path("other"));

    let mut cases: Vec<(&str, Vec<u8>, i32, &str)> = Vec::new();
    let mut tampered = good.clone();
    let mid = tampered.len() - 80;
    tampered[mid] ^= 0x01;
    cases.push(("tampered", tampered, 81, "altered"));
    cases.push((
        "truncated",
        good[..good.len() / 2].to_vec(),
        80,
        "malformed",
    ));
    cases.push((
        "garbage",
        b"not a bundle at all".to_vec(),
        88,
        "not a grexal bundle",
    ));
    cases.push(("oversized", vec![0u8; 16 * 1024 * 1024 + 1], 87, "limit"));
    let wrong_sandbox =
        std::fs::read(fx.bundle("wrong-sandbox", &credentials(OPENAI_KEY), "sbx-other", 1))
            .expect("read");
    cases.push(("wrong sandbox", wrong_sandbox, 84, "sandbox"));
    // Sealed to another sandbox's key, signed by our trusted platform key.
    let src = fx.path("good.json");
    let out = fx.path("wrong-key");
    let o = run_to_end(
        command()
            .args(["seal", "--credentials"])
            .arg(&src)
            .args(["--sandbox-id", SANDBOX, "--sandbox-pub"])
            .arg(&other_keys.sandbox_pub)
            .arg("--platform-key")
            .arg(&fx.keys.platform_key)
            .arg("--out")
            .arg(&out),
    );
    assert!(o.status.success());
    cases.push(("wrong key", std::fs::read(&out).expect("read"), 85, "key"));
    // Sealed to us but signed by a platform key the image does not trust.
    let out = fx.path("untrusted");
    let o = run_to_end(
        command()
            .args(["seal", "--credentials"])
            .arg(&src)
            .args(["--sandbox-id", SANDBOX, "--sandbox-pub"])
            .arg(&fx.keys.sandbox_pub)
            .arg("--platform-key")
            .arg(&other_keys.platform_key)
            .arg("--out")
            .arg(&out),
    );
    assert!(o.status.success());
    cases.push((
        "untrusted signer",
        std::fs::read(&out).expect("read"),
        82,
        "trusted",
    ));
    // The shortest expiry `seal` makes is one second; wait until it has passed.
    let out = fx.path("expired");
    let o = run_to_end(
        command()
            .args(["seal", "--credentials"])
            .arg(&src)
            .args([
                "--sandbox-id",
                SANDBOX,
                "--expires-in",
                "1",
                "--sandbox-pub",
            ])
            .arg(&fx.keys.sandbox_pub)
            .arg("--platform-key")
            .arg(&fx.keys.platform_key)
            .arg("--out")
            .arg(&out),
    );
    assert!(o.status.success());
    cases.push(("expired", std::fs::read(&out).expect("read"), 83, "expired"));
    // Opens fine, but does not fit the manifest: its plaintext was in memory, and none of
    // it may reach the message.
    let mut mismatched = credentials(OPENAI_KEY);
    mismatched["connections"]["openai"] =
        json!({"access_token": OPENAI_KEY, "token_type": "bearer"});
    let contents = std::fs::read(fx.bundle("contents", &mismatched, SANDBOX, 1)).expect("read");
    cases.push(("contents", contents, 89, "openai"));
    std::thread::sleep(Duration::from_millis(2100));

    for (name, bytes, want_code, want_word) in cases {
        let path = fx.path(&format!("case-{}", name.replace(' ', "-")));
        write(&path, &bytes, 0o600);
        let marker = fx.path(&format!("agent-ran-{}", name.replace(' ', "-")));
        let mut cmd = fx.run_command();
        cmd.arg("--bundle")
            .arg(&path)
            .args(["--", "touch"])
            .arg(&marker);
        let out = run_to_end(&mut cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(want_code),
            "{name}: exit code; stderr:\n{stderr}"
        );
        assert!(
            stderr.to_lowercase().contains(want_word),
            "{name}: message names the problem ({want_word}):\n{stderr}"
        );
        assert!(!marker.exists(), "{name}: the agent must not start");
        assert!(
            fx.connection_dirs().is_empty(),
            "{name}: nothing written, found {:?}",
            fx.connection_dirs()
        );
        assert_no_canary(name, &stderr, CANARIES);
        assert_no_canary(name, &String::from_utf8_lossy(&out.stdout), CANARIES);
    }
}

#[test]
fn a_newer_bundle_pushed_later_replaces_the_credentials_and_an_older_one_is_refused() {
    let fx = Fixture::new();
    let v1 = fx.bundle("v1", &credentials(OPENAI_KEY), SANDBOX, 1);
    let v2 =
        std::fs::read(fx.bundle("v2", &credentials("CANARY-v2-openai"), SANDBOX, 2)).expect("read");
    let v1_again = std::fs::read(&v1).expect("read");
    let token = "test-control-token-0123456789abcdef";
    write(&fx.path("control.token"), token, 0o600);
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");

    let mut cmd = fx.run_command();
    cmd.arg("--bundle")
        .arg(&v1)
        .args([
            "--control-listen",
            &addr.to_string(),
            "--control-token-file",
        ])
        .arg(fx.path("control.token"));
    let mut daemon = Daemon::spawn(cmd, fx.path("daemon.log"), fx.path("run/sidecar.sock"));
    daemon.wait_ready(Duration::from_secs(20));
    daemon.wait_listening(addr, Duration::from_secs(20));

    let connect = |socket: &Path| {
        http_unix(socket, "GET", "/v1/connections/openai", None)
            .expect("connect")
            .json()
    };
    assert_eq!(connect(&daemon.socket)["api_key"], OPENAI_KEY);
    let key_path = fx.path("creds-root/deploy_key/deploy.pem");
    assert!(key_path.exists());

    let identity = http_tcp(addr, "GET", "/v1/identity", Some(token), None).expect("identity");
    assert_eq!(identity.status, 200);
    assert_eq!(identity.json()["sandbox_id"], SANDBOX);
    let unauthorized = http_tcp(
        addr,
        "GET",
        "/v1/identity",
        Some("wrong-token-0123456789abcdef"),
        None,
    )
    .expect("identity");
    assert_eq!(unauthorized.status, 401);

    // What an agent may do to its directory between two pushes: a symlink to a file
    // outside, named to forge a line of the daemon's log, and the directory opened to
    // group and others. It blocked every later push (500 internal) until removed.
    const FORGED: &str = "1999-12-31T23:59:59.000000Z  INFO grexal_sidecar::daemon: FORGED LINE";
    let outside = fx.path("outside");
    std::fs::write(&outside, b"keep").expect("outside");
    let smtp = fx.path("creds-root/smtp");
    std::os::unix::fs::symlink(&outside, smtp.join(format!("evil\n{FORGED}"))).expect("plant");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&smtp, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }

    let pushed = http_tcp(addr, "PUT", "/v1/credentials", Some(token), Some(&v2)).expect("push v2");
    assert_eq!(
        pushed.status,
        200,
        "push v2: {}",
        String::from_utf8_lossy(&pushed.body)
    );
    assert_eq!(pushed.json()["version"], 2);
    assert_eq!(
        connect(&daemon.socket)["api_key"],
        "CANARY-v2-openai",
        "the next ctx.connect returns the new value"
    );
    assert!(key_path.exists(), "file_path is stable across versions");
    let mut smtp_files: Vec<_> = std::fs::read_dir(&smtp)
        .expect("smtp")
        .map(|e| e.expect("entry").file_name())
        .collect();
    smtp_files.sort();
    assert_eq!(
        smtp_files,
        ["password", "username"],
        "the planted link is gone"
    );
    assert_eq!(
        std::fs::read(smtp.join("password")).expect("file"),
        SMTP_PASSWORD.as_bytes()
    );
    assert_eq!(std::fs::read(&outside).expect("outside"), b"keep");
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("replacing a connection directory")
                && l.contains(&format!("example=\"evil\\n{FORGED}\""))),
        "{log}"
    );
    assert!(!log.lines().any(|l| l.starts_with("1999-12-31")), "{log}");

    let replay =
        http_tcp(addr, "PUT", "/v1/credentials", Some(token), Some(&v1_again)).expect("push v1");
    assert_eq!(replay.status, 409);
    assert_eq!(replay.error_code(), "bundle_replayed");
    assert_eq!(
        connect(&daemon.socket)["api_key"],
        "CANARY-v2-openai",
        "a refused push changes nothing"
    );

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), 0);
    assert_no_canary("daemon log", &daemon.log_text(), CANARIES);
    assert!(fx.connection_dirs().is_empty(), "wiped on shutdown");
    assert!(!daemon.socket.exists(), "socket removed on shutdown");
}

#[test]
fn without_a_bundle_the_agent_waits_for_one_pushed_on_the_control_endpoint() {
    let fx = Fixture::new();
    let bundle =
        std::fs::read(fx.bundle("v1", &credentials(OPENAI_KEY), SANDBOX, 1)).expect("read");
    let token = "test-control-token-0123456789abcdef";
    write(&fx.path("control.token"), token, 0o600);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let marker = fx.path("agent-ran");

    let mut cmd = fx.run_command();
    cmd.args([
        "--control-listen",
        &addr.to_string(),
        "--control-token-file",
    ])
    .arg(fx.path("control.token"))
    .args([
        "--",
        "sh",
        "-c",
        "test -n \"$OPENAI_API_KEY\" && touch \"$0\"; exit 5",
    ])
    .arg(&marker);
    let mut daemon = Daemon::spawn(cmd, fx.path("daemon.log"), fx.path("run/sidecar.sock"));
    // The control endpoint answers before any bundle; the agent has not started.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let identity = loop {
        if let Ok(r) = http_tcp(addr, "GET", "/v1/identity", Some(token), None) {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "control endpoint never answered:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        identity.json()["credentials_version"],
        serde_json::Value::Null
    );
    assert!(!marker.exists(), "agent must wait for credentials");
    let pushed =
        http_tcp(addr, "PUT", "/v1/credentials", Some(token), Some(&bundle)).expect("push");
    assert_eq!(pushed.status, 200);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), 5);
    assert!(
        marker.exists(),
        "agent started with the pushed credentials in its env"
    );
}

/// Opens `GET /v1/events` and returns once the response head arrived (the subscription
/// exists from then on), with the stream positioned after it.
fn subscribe(addr: std::net::SocketAddr, token: &str) -> std::io::BufReader<std::net::TcpStream> {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "GET /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .expect("request");
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).expect("header");
    }
    reader
}

/// The (name, data) of every event in a raw chunked SSE body.
fn sse_events(raw: &str) -> Vec<(String, serde_json::Value)> {
    let mut name = String::new();
    let mut events = Vec::new();
    for line in raw.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            let data = serde_json::from_str(d).unwrap_or(serde_json::Value::Null);
            events.push((std::mem::take(&mut name), data));
        }
    }
    events
}

/// An agent that cannot be started (its command missing: 127; there but not executable:
/// 126) is reported to the platform as for an exit: `agent_exited` with the daemon's exit
/// code and why, as the stream's last event before it ends, with nothing of the command
/// line in it.
#[test]
fn an_agent_that_cannot_start_is_reported_as_agent_exited() {
    let fx = Fixture::new();
    let bundle =
        std::fs::read(fx.bundle("v1", &credentials(OPENAI_KEY), SANDBOX, 1)).expect("read");
    let token = "test-control-token-0123456789abcdef";
    write(&fx.path("control.token"), token, 0o600);
    write(&fx.path("not-executable"), "#!/bin/sh\nexit 0\n", 0o644);
    let cases = [
        (
            fx.path("CANARY-no-such-agent"),
            127,
            "agent_not_found",
            "the agent's command was not found",
        ),
        (
            fx.path("not-executable"),
            126,
            "agent_not_executable",
            "the agent's command is not executable",
        ),
    ];
    for (program, exit, code, message) in cases {
        let addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut cmd = fx.run_command();
        cmd.args([
            "--control-listen",
            &addr.to_string(),
            "--control-token-file",
        ])
        .arg(fx.path("control.token"))
        .arg("--")
        .arg(&program)
        .arg("--secret=CANARY-argv");
        let mut daemon = Daemon::spawn(cmd, fx.path("daemon.log"), fx.path("run/sidecar.sock"));
        // No bundle yet: the agent waits for one, so the stream is open before it starts.
        daemon.wait_listening(addr, Duration::from_secs(20));
        let mut events = subscribe(addr, token);
        let pushed =
            http_tcp(addr, "PUT", "/v1/credentials", Some(token), Some(&bundle)).expect("push");
        assert_eq!(pushed.status, 200, "{}", daemon.log_text());

        let mut rest = Vec::new();
        let read = std::io::Read::read_to_end(&mut events, &mut rest);
        let rest = String::from_utf8_lossy(&rest);
        let log = daemon.log_text();
        assert!(read.is_ok(), "{code}: {read:?} after {rest:?}\n{log}");
        assert!(
            rest.ends_with("0\r\n\r\n"),
            "{code}: no last chunk: {rest:?}"
        );
        assert_eq!(daemon.wait_exit(Duration::from_secs(20)), exit, "{log}");
        let seen = sse_events(&rest);
        let last = seen
            .last()
            .unwrap_or_else(|| panic!("{code}: no event: {rest:?}"));
        assert_eq!(
            last,
            &(
                "agent_exited".to_owned(),
                json!({"type": "agent_exited", "code": exit,
                       "error": {"code": code, "message": message}})
            ),
            "{code}: {seen:?}\n{log}"
        );
        assert!(!rest.contains("CANARY"), "{code}: {rest}");
        assert_no_canary(code, &rest, CANARIES);
    }
}

/// The credentials are written before the socket is bound: a boot that fails there wipes
/// them, and leaves alone the file that was in the socket's way (it is not ours).
#[test]
fn a_boot_that_fails_after_the_credentials_were_written_wipes_them() {
    let fx = Fixture::new();
    let bundle = fx.bundle("v1", &credentials(OPENAI_KEY), SANDBOX, 1);
    std::fs::create_dir_all(fx.path("run")).expect("mkdir run");
    write(&fx.path("run/sidecar.sock"), "not a socket", 0o644);
    let marker = fx.path("agent-ran");
    let mut cmd = fx.run_command();
    cmd.arg("--bundle")
        .arg(&bundle)
        .args(["--", "touch"])
        .arg(&marker);
    let mut daemon = Daemon::spawn(cmd, fx.path("daemon.log"), fx.path("run/sidecar.sock"));
    let code = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log_text();
    assert_eq!(code, 71, "the bind failure's exit code; log:\n{log}");
    assert!(
        log.contains("credentials installed from bundle file"),
        "{log}"
    );
    assert!(
        fx.connection_dirs().is_empty(),
        "credential files wiped: {:?}",
        fx.connection_dirs()
    );
    assert!(!fx.path("run/agent.env").exists(), "env file wiped");
    assert_eq!(
        std::fs::read_to_string(fx.path("run/sidecar.sock")).expect("still there"),
        "not a socket"
    );
    assert!(!marker.exists(), "the agent never started");
    assert_no_canary("daemon log", &log, CANARIES);
}

/// A SIGTERM while the desktop is starting (here a "Chromium" that never answers CDP, so
/// the start would otherwise wait out its 30 s probe) stops the boot at once: the agent
/// never starts, the desktop's children are stopped and the credentials wiped.
#[test]
fn a_stop_signal_during_boot_stops_it_without_starting_the_agent() {
    let xvnc = Path::new("/usr/bin/Xvnc");
    if !xvnc.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but Xvnc is missing"
        );
        eprintln!(
            "skipping: {} missing (set CI to make this fail)",
            xvnc.display()
        );
        return;
    }
    let fx = Fixture::new();
    let bundle = fx.bundle("v1", &credentials(OPENAI_KEY), SANDBOX, 1);
    let pid_file = fx.path("chromium.pid");
    let fake_chromium = fx.path("chromium");
    write(
        &fake_chromium,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nexec sleep 120\n",
            pid_file.display()
        ),
        0o755,
    );
    let marker = fx.path("agent-ran");
    let mut cmd = fx.run_command();
    cmd.arg("--bundle")
        .arg(&bundle)
        .arg("--desktop")
        .arg("--chromium")
        .arg(&fake_chromium)
        .arg("--browser-profile")
        .arg(fx.path("profile"))
        .arg("--desktop-run-dir")
        .arg(fx.path("desk"))
        .args(["--", "touch"])
        .arg(&marker);
    let mut daemon = Daemon::spawn(cmd, fx.path("daemon.log"), fx.path("run/sidecar.sock"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let chromium_pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the desktop never started Chromium; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        fx.path("run/agent.env").exists(),
        "the credentials are in place before the desktop starts"
    );
    let signalled = std::time::Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let code = daemon.wait_exit(Duration::from_secs(15));
    let log = daemon.log_text();
    assert_eq!(code, 0, "a requested stop; log:\n{log}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "stopped at once, not after the probe gave up ({:?}); log:\n{log}",
        signalled.elapsed()
    );
    assert!(log.contains("stop signal during boot"), "{log}");
    assert!(!marker.exists(), "the agent never started; log:\n{log}");
    assert!(
        fx.connection_dirs().is_empty(),
        "credential files wiped: {:?}",
        fx.connection_dirs()
    );
    assert!(!fx.path("run/agent.env").exists(), "env file wiped");
    assert!(!fx.path("run/sidecar.sock").exists(), "no socket left");
    // Killed with the abandoned start (a zombie only until init reaps it).
    let state = std::fs::read_to_string(format!("/proc/{chromium_pid}/stat")).unwrap_or_default();
    let running = state
        .rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
    assert!(!running, "the desktop's Chromium is stopped: {state}");
    assert_no_canary("daemon log", &log, CANARIES);
}

/// Without `--sandbox-key`, the generated public key is published through a fresh
/// temporary file: a symlink planted at the old predictable temporary name
/// (`sandbox.pub.tmp`) or at the final name is never written through, and the published
/// key is a regular file holding the key.
#[test]
fn the_generated_public_key_is_not_written_through_planted_symlinks() {
    let dir = open_tempdir();
    let d = dir.path();
    write(&d.join("grexal.json"), r#"{"connections": []}"#, 0o644);
    let victims = [d.join("victim-tmp"), d.join("victim-final")];
    for victim in &victims {
        write(victim, "precious\n", 0o644);
    }
    let out_dir = d.join("pub");
    std::fs::create_dir(&out_dir).expect("mkdir");
    std::os::unix::fs::symlink(&victims[0], out_dir.join("sandbox.pub.tmp")).expect("symlink");
    std::os::unix::fs::symlink(&victims[1], out_dir.join("sandbox.pub")).expect("symlink");

    let out = run_to_end(
        command()
            .arg("run")
            .args(["--sandbox-id", SANDBOX, "--manifest"])
            .arg(d.join("grexal.json"))
            .arg("--public-key-out")
            .arg(out_dir.join("sandbox.pub"))
            .arg("--socket")
            .arg(d.join("run/sidecar.sock"))
            .arg("--credentials-dir")
            .arg(d.join("creds-root"))
            .arg("--env-file")
            .arg(d.join("run/agent.env"))
            .args(["--", "true"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for victim in &victims {
        assert_eq!(
            std::fs::read_to_string(victim).expect("victim"),
            "precious\n",
            "{} was written through a planted symlink",
            victim.display()
        );
    }
    let published = out_dir.join("sandbox.pub");
    let meta = std::fs::symlink_metadata(&published).expect("published key");
    assert!(meta.file_type().is_file(), "a regular file, not a symlink");
    let key = std::fs::read_to_string(&published).expect("read key");
    assert_eq!(key.len(), 45, "one base64 key and a newline: {key:?}");
    assert!(key.ends_with('\n'));
    // The planted symlink at the old temporary name is left alone, not followed.
    assert!(out_dir.join("sandbox.pub.tmp").is_symlink());
}

/// Under `run` a credentials root writable by group or others is refused as it was, and
/// left as it is (only `dev` tightens its own `.grexal/`); the refusal is a configuration
/// problem (78), not a failed write (74).
#[test]
fn run_refuses_a_group_writable_credentials_root_as_a_config_problem() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let fx = Fixture::new();
    let bundle = fx.bundle("v1", &credentials(OPENAI_KEY), SANDBOX, 1);
    std::fs::create_dir(fx.path("creds-root")).expect("mkdir");
    std::fs::set_permissions(
        fx.path("creds-root"),
        std::fs::Permissions::from_mode(0o775),
    )
    .expect("chmod");
    let marker = fx.path("agent-ran");
    let mut cmd = fx.run_command();
    cmd.arg("--bundle")
        .arg(&bundle)
        .args(["--", "touch"])
        .arg(&marker);
    let out = run_to_end(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("writable by group or others"), "{stderr}");
    let mode = std::fs::metadata(fx.path("creds-root"))
        .expect("root")
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o775, "run changes no mode");
    assert!(!marker.exists());
}

/// A NUL in an env-delivered field is a problem of the bundle's contents (89), named by
/// its field and never its value, found before anything is written (it was a failed
/// write, 74, once the env file was being written).
#[test]
fn a_nul_in_an_env_delivered_field_is_a_contents_error() {
    let fx = Fixture::new();
    let bundle = fx.bundle("v1", &credentials("CANARY-nul\u{0}x"), SANDBOX, 1);
    let mut cmd = fx.run_command();
    cmd.arg("--bundle").arg(&bundle).args(["--", "true"]);
    let out = run_to_end(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(89), "{stderr}");
    assert!(
        stderr.contains(r#"connections["openai"].fields["api_key"]"#) && stderr.contains("NUL"),
        "{stderr}"
    );
    assert_no_canary("daemon log", &stderr, &["CANARY-nul"]);
    assert!(fx.connection_dirs().is_empty());
    assert!(!fx.path("run/agent.env").exists());
}

/// The same under `run` for a `--bundle` that is a FIFO whose writer never writes: SIGTERM
/// stops the boot at once (exit 0), the agent never starts.
#[test]
fn a_stop_signal_while_boot_waits_on_the_bundle_stops_run() {
    let fx = Fixture::new();
    let fifo = fx.path("bundle.fifo");
    mkfifo(&fifo);
    let marker = fx.path("agent-ran");
    let mut cmd = fx.run_command();
    cmd.arg("--bundle")
        .arg(&fifo)
        .args(["--", "touch"])
        .arg(&marker);
    let mut daemon = Daemon::spawn(cmd, fx.path("daemon.log"), fx.path("run/sidecar.sock"));
    let _writer = fifo_with_a_silent_writer(&fifo, &mut daemon);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let code = daemon.wait_exit(Duration::from_secs(5));
    let log = daemon.log_text();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("stop signal during boot"), "{log}");
    assert!(!marker.exists());
}
