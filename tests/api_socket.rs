//! The agent API on a real Unix socket: every route and error code, peer authorization by
//! SO_PEERCRED (a real client process of another uid), limits, keep-alive, shutdown.
//! Clients are a raw HTTP/1.1 client (tests/support/api.rs) and curl.

#[path = "support/api.rs"]
mod support_api;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grexal_sidecar::api::{self, ApiLimits, ApiState};
use grexal_sidecar::inject::Owner;
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::store::testing::{inert_injector, manifest, materialized};
use grexal_sidecar::store::Store;
use grexal_sidecar::takeover::{TakeoverLimits, TakeoverManager};
use support_api::Client;
use tokio_util::sync::CancellationToken;

struct Server {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Arc<Store>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
}

struct Options {
    limits: ApiLimits,
    agent_uid: Option<u32>,
    owner: Option<Owner>,
    installed: bool,
    /// Serve the takeover routes too (with no desktop behind them).
    takeovers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: ApiLimits::default(),
            agent_uid: Some(4242),
            owner: None,
            installed: true,
            takeovers: false,
        }
    }
}

/// Every log line of every test in this binary, at debug level, for the canary check.
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

impl Server {
    fn start(options: Options) -> Self {
        capture_logs();
        let dir = tempfile::tempdir().unwrap();
        // Traversable by the other-uid client; `bind` requires it closed to writes.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("run/sidecar.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(Store::new(
            manifest(),
            None,
            inert_injector(),
            EventBus::new(),
        ));
        if options.installed {
            store.install_materialized(materialized(3, "sk-canary-123"));
        }
        let mut state = ApiState::new(store.clone(), options.agent_uid);
        state.limits = options.limits;
        if options.takeovers {
            state.takeovers = Some(TakeoverManager::new(
                store.manifest().clone(),
                None,
                EventBus::new(),
                "http://sidecar.test".into(),
                TakeoverLimits::default(),
            ));
        }
        let stop = CancellationToken::new();
        let listener = runtime
            .block_on(async { api::bind(&path, options.owner) })
            .unwrap();
        let task = runtime.spawn(api::serve(listener, state, stop.clone()));
        // `bind` returned, so the socket accepts connections (into the backlog) already.
        Server {
            _dir: dir,
            path,
            store,
            stop,
            task: Some(task),
            runtime,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.path)
    }

    /// Stops the server and waits for `serve` to return.
    fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            self.runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn curl(socket: &Path, args: &[&str], as_nobody: bool) -> (i32, String) {
    let mut command = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl"]);
        c
    } else {
        Command::new("curl")
    };
    command
        .env_clear()
        .arg("-sS")
        .arg("--unix-socket")
        .arg(socket)
        .args(["-w", "\n%{http_code}"])
        .args(args);
    let output = command.output().expect("run curl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), stdout)
}

/// `(status, body)` from curl's output with `-w "\n%{http_code}"`.
fn split(output: &str) -> (u16, serde_json::Value) {
    let (body, status) = output.rsplit_once('\n').unwrap();
    (
        status.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn running_as_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "peer-uid tests need root (setpriv) and CI is set"
    );
    eprintln!("skipping: peer-uid tests need root");
    false
}

#[test]
fn every_route_on_one_keep_alive_connection() {
    let server = Server::start(Options::default());
    let mut client = server.client();
    let cases: &[(&str, u16, &str)] = &[
        ("/healthz", 200, ""),
        ("/readyz", 200, ""),
        ("/v1/connections", 200, ""),
        ("/v1/connections/openai", 200, ""),
        ("/v1/connections/ssh_key", 200, ""),
        ("/v1/connections/google", 503, "credential_missing"),
        ("/v1/connections/portal", 409, "invalid_auth_mode"),
        ("/v1/connections/nope", 404, "connection_not_found"),
        (
            "/v1/connections/..%2F..%2Fetc%2Fpasswd",
            404,
            "connection_not_found",
        ),
        ("/v1/connections/%ZZ", 404, "connection_not_found"),
        // connect("") from an SDK that percent-encodes the id.
        ("/v1/connections/", 404, "connection_not_found"),
        ("/v1/elsewhere", 404, "not_found"),
    ];
    for (path, status, code) in cases {
        let response = client.get(path);
        assert_eq!(
            response.status,
            *status,
            "{path}: {}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{path}"
        );
        if !code.is_empty() {
            assert_eq!(response.code(), *code, "{path}");
            assert!(response.json()["error"]["message"].is_string());
        }
    }
    let response = client.get("/v1/connections/openai");
    assert_eq!(
        response.json(),
        serde_json::json!({"api_key": "sk-canary-123"})
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(
        client.get("/healthz").json(),
        serde_json::json!({"status": "ok"})
    );
    let list = client.get("/v1/connections").json();
    assert_eq!(list["connections"].as_array().unwrap().len(), 4);
    assert!(!list.to_string().contains("sk-canary"));

    client.send(b"DELETE /v1/connections/openai HTTP/1.1\r\nHost: s\r\n\r\n");
    let response = client.read_response().unwrap();
    assert_eq!(
        (response.status, response.code().as_str()),
        (405, "method_not_allowed")
    );

    // Still the same connection after all of the above, including the errors.
    for _ in 0..100 {
        assert_eq!(client.get("/v1/connections/openai").status, 200);
    }

    // The canary was served many times and never logged, at any level.
    let logs = logs();
    assert!(
        logs.contains("credential served"),
        "log capture is not working"
    );
    assert!(!logs.contains("sk-canary"), "a secret reached the log");
}

#[test]
fn readiness_is_a_latch() {
    let server = Server::start(Options {
        installed: false,
        ..Options::default()
    });
    let mut client = server.client();
    let response = client.get("/readyz");
    assert_eq!(
        (response.status, response.code().as_str()),
        (503, "not_ready")
    );
    assert_eq!(
        client.get("/v1/connections/openai").code(),
        "credential_missing"
    );
    server.store.install_materialized(materialized(9, "k"));
    let response = client.get("/readyz");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["credentials_version"], 9);
    assert_eq!(client.get("/v1/connections/openai").status, 200);
    // A later version that withdraws every credential does not make the sandbox unready:
    // the agent runs already, and readiness is a latch.
    server
        .store
        .install_materialized(grexal_sidecar::inject::Materialized {
            version: 10,
            bodies: Default::default(),
            env: Vec::new(),
        });
    let response = client.get("/readyz");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["credentials_version"], 10);
    assert_eq!(
        client.get("/v1/connections/openai").code(),
        "credential_missing"
    );
}

#[test]
fn curl_reads_credentials() {
    let server = Server::start(Options::default());
    let (exit, out) = curl(
        &server.path,
        &["http://sidecar/v1/connections/openai"],
        false,
    );
    assert_eq!(exit, 0, "{out}");
    assert_eq!(
        split(&out),
        (200, serde_json::json!({"api_key": "sk-canary-123"}))
    );
    let (_, out) = curl(&server.path, &["http://sidecar/v1/connections/nope"], false);
    let (status, body) = split(&out);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("connection_not_found"))
    );
    let (_, out) = curl(
        &server.path,
        &[
            "-X",
            "POST",
            "-d",
            "{}",
            "http://sidecar/v1/connections/openai",
        ],
        false,
    );
    assert_eq!(split(&out).0, 405);
}

#[test]
fn peer_of_another_uid_is_forbidden() {
    if !running_as_root() {
        return;
    }
    let server = Server::start(Options::default());
    let mode = std::fs::metadata(&server.path).unwrap().mode() & 0o777;
    assert_eq!(
        mode, 0o666,
        "the socket must be connectable by uid 65534 for this test to mean anything"
    );
    for path in [
        "/v1/connections/openai",
        "/v1/connections",
        "/v1/connections/nope",
    ] {
        let (exit, out) = curl(&server.path, &[&format!("http://sidecar{path}")], true);
        assert_eq!(exit, 0, "{out}");
        let (status, body) = split(&out);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
        assert!(!out.contains("sk-canary"));
    }
    // Liveness and readiness are open to anyone.
    let (_, out) = curl(&server.path, &["http://sidecar/healthz"], true);
    assert_eq!(split(&out).0, 200);
    let (_, out) = curl(&server.path, &["http://sidecar/readyz"], true);
    assert_eq!(split(&out).0, 200);
}

#[test]
fn the_agent_uid_is_allowed() {
    if !running_as_root() {
        return;
    }
    let server = Server::start(Options {
        agent_uid: Some(65534),
        ..Options::default()
    });
    let (exit, out) = curl(
        &server.path,
        &["http://sidecar/v1/connections/openai"],
        true,
    );
    assert_eq!(exit, 0, "{out}");
    assert_eq!(
        split(&out),
        (200, serde_json::json!({"api_key": "sk-canary-123"}))
    );
}

#[test]
fn group_socket_is_closed_to_other_groups() {
    if !running_as_root() {
        return;
    }
    let server = Server::start(Options {
        owner: Some(Owner {
            uid: 4242,
            gid: 4242,
        }),
        ..Options::default()
    });
    let meta = std::fs::metadata(&server.path).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 4242));
    let (exit, _) = curl(&server.path, &["http://sidecar/healthz"], true);
    assert_eq!(exit, 7, "curl should fail to connect (EACCES)");
}

#[test]
fn oversized_body_is_413() {
    let server = Server::start(Options::default());
    let mut client = server.client();
    client.send(b"GET /v1/connections/openai HTTP/1.1\r\nHost: s\r\nContent-Length: 70000\r\n\r\n");
    let response = client.read_response().unwrap();
    assert_eq!(
        (response.status, response.code().as_str()),
        (413, "payload_too_large")
    );
    let (_, out) = curl(
        &server.path,
        &[
            "-X",
            "GET",
            "--data-binary",
            &"x".repeat(65 * 1024),
            "http://sidecar/healthz",
        ],
        false,
    );
    assert_eq!(split(&out).0, 413);
}

#[test]
fn malformed_request_line_is_400() {
    let server = Server::start(Options::default());
    let mut client = server.client();
    client.send(b"THIS IS NOT HTTP\r\n\r\n");
    let response = client.read_response().expect("a 400 before the close");
    assert_eq!(response.status, 400);
    assert!(client.closed_within(Duration::from_secs(5)));
}

#[test]
fn slow_client_is_cut_off() {
    let timeout = Duration::from_millis(300);
    let server = Server::start(Options {
        limits: ApiLimits::new(16, timeout),
        ..Options::default()
    });
    let mut client = server.client();
    let start = Instant::now();
    client.send(b"GET /v1/connec");
    assert!(
        client.closed_within(Duration::from_secs(5)),
        "the stalled connection was not closed"
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= timeout && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    // A prompt client on another connection is unaffected.
    assert_eq!(server.client().get("/healthz").status, 200);
}

#[test]
fn a_takeover_request_whose_body_stalls_is_408_within_the_request_timeout() {
    let timeout = Duration::from_millis(500);
    let server = Server::start(Options {
        limits: ApiLimits::new(16, timeout),
        takeovers: true,
        ..Options::default()
    });
    // The head arrives whole; the body promises 50 bytes and sends one. `POST
    // /v1/takeovers` reads its body in the handler; the wait, a long poll outside the
    // whole-request deadline, still has its request read under it.
    for (method, target) in [
        ("POST", "/v1/takeovers"),
        ("GET", "/v1/takeovers/abc/wait?timeout_seconds=30"),
    ] {
        let mut client = server.client();
        let start = Instant::now();
        client.send(
            format!(
                "{method} {target} HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\n\
                 Content-Length: 50\r\n\r\n{{"
            )
            .as_bytes(),
        );
        let response = client
            .read_response()
            .unwrap_or_else(|| panic!("{method} {target}: closed without a response"));
        let elapsed = start.elapsed();
        assert_eq!(
            (response.status, response.code().as_str()),
            (408, "request_timeout"),
            "{method} {target}"
        );
        assert_eq!(response.header("cache-control"), Some("no-store"));
        assert!(
            elapsed >= timeout && elapsed < Duration::from_secs(3),
            "{method} {target}: answered after {elapsed:?}"
        );
    }
    // A prompt client is unaffected, and a complete body is read and judged.
    assert_eq!(server.client().get("/healthz").status, 200);
    let mut client = server.client();
    client.send(
        b"POST /v1/takeovers HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\n\
          Content-Length: 2\r\n\r\n{}",
    );
    let response = client.read_response().expect("response");
    assert_eq!(
        (response.status, response.code().as_str()),
        (400, "bad_request")
    );
}

/// A request timeout past the clock's end (nothing bounds `ApiLimits` itself) still
/// serves: hyper adds the header read timeout to the clock unchecked, and every
/// connection's task panicked before answering.
#[test]
fn a_request_timeout_past_the_clocks_end_still_serves() {
    let server = Server::start(Options {
        limits: ApiLimits::new(16, Duration::MAX),
        ..Options::default()
    });
    let mut client = server.client();
    assert_eq!(client.get("/healthz").status, 200);
    assert_eq!(client.get("/v1/connections").status, 200, "keep-alive");
}

#[test]
fn connection_limit_is_enforced() {
    let server = Server::start(Options {
        limits: ApiLimits::new(2, Duration::from_secs(10)),
        ..Options::default()
    });
    // Two connections, each proven accepted and held by a served request.
    let mut held: Vec<Client> = (0..2).map(|_| server.client()).collect();
    for client in &mut held {
        assert_eq!(client.get("/healthz").status, 200);
    }
    let mut third = server.client();
    let response = third.read_response().expect("the refusal");
    assert_eq!(
        (response.status, response.code().as_str()),
        (503, "too_many_connections")
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert!(third.closed_within(Duration::from_secs(5)));
    // Closing one frees its slot.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = server.client();
        use std::io::Write as _;
        // Refused connections may be closed before the write: not an error here.
        let sent = client
            .stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: s\r\n\r\n")
            .is_ok();
        if sent && client.read_response().is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn shutdown_removes_the_socket() {
    let mut server = Server::start(Options::default());
    let mut client = server.client();
    assert_eq!(client.get("/healthz").status, 200);
    assert!(std::fs::symlink_metadata(&server.path)
        .unwrap()
        .file_type()
        .is_socket());
    server.shutdown();
    assert!(!server.path.exists());
    assert!(client.closed_within(Duration::from_secs(5)));
}
