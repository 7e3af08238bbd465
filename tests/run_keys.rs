//! `run`'s key and token files, through the real binary: one that is not there or cannot be
//! read exits 66 (NoInput), naming the flag and the path, as docs/api.md says; one that is
//! there but malformed or open to others exits 78 (Config). And what the control endpoint
//! says of itself: without `--platform-key` it takes no bundle and offers no key to seal
//! one to; with it, the generated key it published.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

const TOKEN: &str = "test-control-token-0123456789abcdef";

/// A manifest with no connections (nothing to wait for) and `run`'s paths in `dir`.
fn run_in(dir: &Path) -> std::process::Command {
    write(
        &dir.join("grexal.json"),
        r#"{"manifest_version": 1, "connections": []}"#,
        0o644,
    );
    let mut cmd = command();
    cmd.args(["run", "--sandbox-id", "sbx-keys"])
        .arg("--manifest")
        .arg(dir.join("grexal.json"))
        .arg("--socket")
        .arg(dir.join("run/sidecar.sock"))
        .arg("--credentials-dir")
        .arg(dir.join("creds"))
        .arg("--env-file")
        .arg(dir.join("run/agent.env"));
    cmd
}

#[test]
fn key_and_token_files_that_are_missing_exit_66_and_bad_ones_78() {
    let dir = open_tempdir();
    let d = dir.path();
    let keys = SealedFixture::new(d);
    write(&d.join("token"), format!("{TOKEN}\n"), 0o600);
    write(&d.join("garbage.key"), "not a key\n", 0o600);
    let sandbox_key_bytes = std::fs::read(&keys.sandbox_key).expect("key");
    write(&d.join("open.key"), sandbox_key_bytes, 0o644);
    write(&d.join("garbage.pub"), "not a key\n", 0o644);
    write(&d.join("open.token"), format!("{TOKEN}\n"), 0o644);
    write(&d.join("short.token"), "short\n", 0o600);
    write(&d.join("a-file"), "", 0o600);
    let path = |name: &str| d.join(name).display().to_string();
    let missing = path("no-such-file");
    // Open fails with ENOTDIR: a file that cannot be read, even by root.
    let unreadable = path("a-file/key");
    let sandbox_key = keys.sandbox_key.display().to_string();
    let public_key_out = path("sandbox.pub");
    let token = path("token");
    let control = |token: &str| {
        vec![
            "--control-listen".to_string(),
            "127.0.0.1:0".into(),
            "--control-token-file".into(),
            token.to_string(),
        ]
    };
    // (flags, exit code, the flag the message names, the path it names)
    let cases: Vec<(Vec<String>, i32, &str, String)> = vec![
        (
            vec!["--sandbox-key".into(), missing.clone()],
            66,
            "--sandbox-key",
            missing.clone(),
        ),
        (
            vec!["--sandbox-key".into(), unreadable.clone()],
            66,
            "--sandbox-key",
            unreadable.clone(),
        ),
        (
            vec![
                "--platform-key".into(),
                missing.clone(),
                "--sandbox-key".into(),
                sandbox_key.clone(),
            ],
            66,
            "--platform-key",
            missing.clone(),
        ),
        (
            [
                control(&missing),
                vec!["--public-key-out".into(), public_key_out.clone()],
            ]
            .concat(),
            66,
            "--control-token-file",
            missing.clone(),
        ),
        (
            vec!["--sandbox-key".into(), path("garbage.key")],
            78,
            "--sandbox-key",
            path("garbage.key"),
        ),
        (
            vec!["--sandbox-key".into(), path("open.key")],
            78,
            "--sandbox-key",
            path("open.key"),
        ),
        (
            vec![
                "--platform-key".into(),
                path("garbage.pub"),
                "--sandbox-key".into(),
                sandbox_key.clone(),
            ],
            78,
            "--platform-key",
            path("garbage.pub"),
        ),
        (
            [
                control(&path("open.token")),
                vec!["--public-key-out".into(), public_key_out.clone()],
            ]
            .concat(),
            78,
            "--control-token-file",
            path("open.token"),
        ),
        (
            [
                control(&path("short.token")),
                vec!["--public-key-out".into(), public_key_out.clone()],
            ]
            .concat(),
            78,
            "--control-token-file",
            path("short.token"),
        ),
    ];
    // The good token and keys boot: the cases above fail on their one bad file.
    let good = [
        control(&token),
        vec![
            "--sandbox-key".into(),
            sandbox_key.clone(),
            "--platform-key".into(),
            keys.platform_pub.display().to_string(),
        ],
    ]
    .concat();
    let out = run_to_end(run_in(d).args(&good).args(["--", "true"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (flags, code, flag, named) in cases {
        let marker = d.join("agent-ran");
        let out = run_to_end(run_in(d).args(&flags).args(["--", "touch"]).arg(&marker));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{flags:?}: {stderr}");
        let message = stderr
            .lines()
            .find(|l| l.starts_with("grexal-sidecar: "))
            .unwrap_or_else(|| panic!("{flags:?}: no message: {stderr}"));
        assert!(
            message.contains(flag) && message.contains(&named),
            "{flags:?}: the message names {flag} and {named}: {message}"
        );
        assert!(!marker.exists(), "{flags:?}: the agent must not start");
        assert_no_canary(&format!("{flags:?}"), &stderr, &[TOKEN]);
    }
}

/// `run` serving its control endpoint on a port of its choosing, until stopped.
struct Served {
    daemon: Daemon,
    addr: SocketAddr,
}

fn serve(dir: &Path, extra: &[&str]) -> Served {
    write(&dir.join("token"), format!("{TOKEN}\n"), 0o600);
    let mut cmd = run_in(dir);
    cmd.args(["--control-listen", "127.0.0.1:0", "--control-token-file"])
        .arg(dir.join("token"))
        .args(extra);
    let log = dir.join(format!("daemon-{}.log", extra.len()));
    let daemon = Daemon::spawn(cmd, log, dir.join("run/sidecar.sock"));
    let addr = control_addr(&daemon);
    Served { daemon, addr }
}

/// The control endpoint's bound address, from the daemon's log line.
fn control_addr(daemon: &Daemon) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = daemon.log_text();
        let addr = log
            .lines()
            .find(|l| l.contains("control endpoint listening"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        if let Some(addr) = addr {
            return addr;
        }
        assert!(Instant::now() < deadline, "no control endpoint: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Served {
    fn identity(&self) -> serde_json::Value {
        let identity =
            http_tcp(self.addr, "GET", "/v1/identity", Some(TOKEN), None).expect("identity");
        assert_eq!(identity.status, 200, "{}", self.daemon.log_text());
        identity.json()
    }
}

#[test]
fn identity_says_whether_bundles_are_taken_and_which_key_to_seal_to() {
    let dir = open_tempdir();
    let d = dir.path();
    let public_key_out: PathBuf = d.join("run/sandbox.pub");
    let out = public_key_out.display().to_string();

    // Without --platform-key (allowed: nothing is pre-collected) no bundle can be opened.
    let served = serve(d, &["--public-key-out", &out]);
    assert_eq!(
        served.identity(),
        serde_json::json!({"sandbox_id": "sbx-keys", "public_key": null,
                           "accepts_bundles": false, "credentials_version": null})
    );
    let pushed = http_tcp(
        served.addr,
        "PUT",
        "/v1/credentials",
        Some(TOKEN),
        Some(b"bundle"),
    )
    .expect("push");
    assert_eq!(
        (pushed.status, pushed.error_code()),
        (409, "bundles_disabled".to_string())
    );
    drop(served);

    // With it, the key generated at boot and published at --public-key-out.
    let keys = SealedFixture::new(d);
    let platform = keys.platform_pub.display().to_string();
    let served = serve(d, &["--public-key-out", &out, "--platform-key", &platform]);
    let identity = served.identity();
    let published = std::fs::read_to_string(&public_key_out).expect("the published key");
    assert_eq!(
        identity,
        serde_json::json!({"sandbox_id": "sbx-keys", "public_key": published.trim(),
                           "accepts_bundles": true, "credentials_version": null})
    );
}
