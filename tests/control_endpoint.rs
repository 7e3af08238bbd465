//! The platform's control endpoint on a real loopback TCP port: bearer token, identity,
//! bundle pushes, the event stream. Requests go through curl (the token from a file, never
//! argv); the event stream is read with a raw TCP client.
//!
//! `bundle_push_*` tests need the real bundle, keys, credentials and inject modules and the
//! `seal` tool (they panic on `todo!()` until those land).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use grexal_sidecar::bundle::{Opener, MAX_BUNDLE_BYTES};
use grexal_sidecar::inject::{Injector, Layout};
use grexal_sidecar::keys::{PlatformPublicKey, SandboxPublicKey, SandboxSecretKey};
use grexal_sidecar::manifest::{AuthMode, Connection, Delivery, Manifest, SecretField};
use grexal_sidecar::platform::control::{self, BearerToken, ControlLimits, ControlState};
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::store::testing::{inert_injector, manifest, materialized};
use grexal_sidecar::store::Store;
use grexal_sidecar::takeover::{TakeoverLimits, TakeoverManager};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-0123456789abcdef";
const SANDBOX_ID: &str = "sbx-control-test";

struct Endpoint {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    store: Arc<Store>,
    stop: CancellationToken,
    /// `control::serve`, which returns once every connection is over.
    server: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn write_private(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn start(store: Store, public_key: SandboxPublicKey, dir: tempfile::TempDir) -> Endpoint {
    start_with(store, public_key, dir, ControlLimits::default())
}

fn start_with(
    store: Store,
    public_key: SandboxPublicKey,
    dir: tempfile::TempDir,
    limits: ControlLimits,
) -> Endpoint {
    start_configured(store, public_key, dir, limits, |_| {})
}

/// `start_with`, with `configure` run on the state before the router is made.
fn start_configured(
    store: Store,
    public_key: SandboxPublicKey,
    dir: tempfile::TempDir,
    limits: ControlLimits,
    configure: impl FnOnce(&mut ControlState),
) -> Endpoint {
    let token_path = dir.path().join("control.token");
    write_private(&token_path, format!("{TOKEN}\n").as_bytes());
    write_private(
        &dir.path().join("auth.header"),
        format!("Authorization: Bearer {TOKEN}").as_bytes(),
    );
    write_private(
        &dir.path().join("wrong.header"),
        b"Authorization: Bearer not-the-token-at-all",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(store);
    let mut state = ControlState::new(
        store.clone(),
        BearerToken::load(&token_path).unwrap(),
        SANDBOX_ID.into(),
        public_key,
    );
    state.limits = limits;
    configure(&mut state);
    let token = state.token.clone();
    let stop = CancellationToken::new();
    let listener = runtime
        .block_on(control::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = runtime.spawn(control::serve(
        listener,
        control::router(state),
        limits,
        Some(token),
        stop.clone(),
    ));
    Endpoint {
        dir,
        addr,
        store,
        stop,
        server,
        runtime,
    }
}

fn simple() -> Endpoint {
    let store = Store::new(manifest(), None, inert_injector(), EventBus::new());
    start(
        store,
        SandboxPublicKey([9; 32]),
        tempfile::tempdir().unwrap(),
    )
}

impl Endpoint {
    /// curl with `auth` = "auth" (the right token), "wrong", or "" (none).
    fn curl(&self, auth: &str, args: &[&str], path: &str) -> (u16, serde_json::Value) {
        let mut command = Command::new("curl");
        command.env_clear().args(["-sS", "-w", "\n%{http_code}"]);
        if !auth.is_empty() {
            command.arg("-H").arg(format!(
                "@{}",
                self.dir.path().join(format!("{auth}.header")).display()
            ));
        }
        command
            .args(args)
            .arg(format!("http://{}{path}", self.addr));
        let output = command.output().expect("run curl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (
            status.parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn put_bundle(&self, bundle: &Path) -> (u16, serde_json::Value) {
        let data = format!("@{}", bundle.display());
        self.curl(
            "auth",
            &[
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &data,
            ],
            "/v1/credentials",
        )
    }

    /// Opens the event stream and returns a line reader positioned after the headers.
    fn events(&self) -> BufReader<TcpStream> {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                return reader;
            }
        }
    }
}

/// Reads the (chunked) SSE stream until an event named `name`; returns its data line.
fn next_event(reader: &mut BufReader<TcpStream>, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut line = String::new();
    let mut current = String::new();
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(event) = line.trim_end().strip_prefix("event: ") {
            current = event.to_owned();
        } else if let Some(data) = line.trim_end().strip_prefix("data: ") {
            if current == name {
                return data.to_owned();
            }
        }
    }
    panic!("no {name} event");
}

#[test]
fn requests_without_the_right_token_are_401() {
    let endpoint = simple();
    for path in ["/v1/identity", "/v1/events", "/v1/credentials"] {
        for auth in ["", "wrong"] {
            let method = if path == "/v1/credentials" {
                "PUT"
            } else {
                "GET"
            };
            let (status, body) = endpoint.curl(auth, &["-X", method, "--max-time", "5"], path);
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("unauthorized")),
                "{method} {path} auth={auth:?}"
            );
        }
    }
    // Nor does a stranger learn which routes exist: a wrong method or an unknown path
    // under /v1/ is 401 too, and only with the token 405 or 404.
    for (method, path, with_token) in [
        ("POST", "/v1/identity", 405),
        ("GET", "/v1/credentials", 405),
        ("GET", "/v1/no-such-route", 404),
    ] {
        for auth in ["", "wrong"] {
            let (status, body) = endpoint.curl(auth, &["-X", method, "--max-time", "5"], path);
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("unauthorized")),
                "{method} {path} auth={auth:?}"
            );
        }
        let (status, _) = endpoint.curl("auth", &["-X", method, "--max-time", "5"], path);
        assert_eq!(status, with_token, "{method} {path} with the token");
    }
}

/// One raw request without a token, `Connection: close`: the status line and headers
/// (lower-cased, without `date`, which differs by the second) and the body.
fn raw_request(addr: SocketAddr, method: &str, path: &str) -> (Vec<String>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut stream, &mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole response");
    let head = head
        .lines()
        .map(str::to_ascii_lowercase)
        .filter(|line| !line.starts_with("date:"))
        .collect();
    (head, body.to_owned())
}

/// A stranger's 401 is the same response whatever the method and path under `/v1/`: no
/// `Allow` header telling which methods a route takes (axum's 405 fallback added one
/// outside the bearer check: `allow: GET,HEAD` on a POST to `/v1/identity`), and the same
/// body. The viewer's routes keep answering as docs/api.md says, without the bearer.
#[test]
fn a_strangers_401_is_the_same_whatever_the_route() {
    let store = Store::new(manifest(), None, inert_injector(), EventBus::new());
    let takeovers = TakeoverManager::new(
        Arc::new(manifest()),
        None,
        EventBus::new(),
        "http://edge.example".into(),
        TakeoverLimits::default(),
    );
    let endpoint = start_configured(
        store,
        SandboxPublicKey([9; 32]),
        tempfile::tempdir().unwrap(),
        ControlLimits::default(),
        |state| state.takeovers = Some(takeovers),
    );
    let requests = [
        ("GET", "/v1/identity"),
        ("POST", "/v1/identity"),
        ("GET", "/v1/credentials"),
        ("GET", "/v1/takeovers/x/complete"),
        ("POST", "/v1/takeovers/x/complete"),
        ("DELETE", "/v1/takeovers"),
        ("GET", "/v1/no-such-route"),
    ];
    let first = raw_request(endpoint.addr, requests[0].0, requests[0].1);
    assert_eq!(first.0[0], "http/1.1 401 unauthorized", "{first:?}");
    assert!(first.1.contains(r#""code":"unauthorized""#), "{}", first.1);
    for (method, path) in &requests[1..] {
        let (head, body) = raw_request(endpoint.addr, method, path);
        assert!(
            !head.iter().any(|line| line.starts_with("allow:")),
            "{method} {path}: {head:?}"
        );
        assert_eq!((&head, &body), (&first.0, &first.1), "{method} {path}");
    }
    // The viewer's routes need no bearer: a wrong method there is the documented 405, and
    // a stranger's session request the documented 401 of a bad takeover token.
    let (head, body) = raw_request(endpoint.addr, "GET", "/takeover/x/complete");
    assert_eq!(head[0], "http/1.1 405 method not allowed", "{head:?}");
    assert!(body.contains(r#""code":"method_not_allowed""#), "{body}");
    let (head, body) = raw_request(endpoint.addr, "GET", "/takeover/x/session");
    assert_eq!(head[0], "http/1.1 401 unauthorized", "{head:?}");
    assert!(body.contains(r#""code":"unauthorized""#), "{body}");
}

/// A daemon with no bundle opener (`run` without `--platform-key`) says it takes no
/// bundle, and offers no key to seal one to: a push would only be refused with
/// `bundles_disabled`.
#[test]
fn identity() {
    let endpoint = simple();
    let (status, body) = endpoint.curl("auth", &[], "/v1/identity");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"sandbox_id": SANDBOX_ID, "public_key": null,
                           "accepts_bundles": false, "credentials_version": null})
    );
    endpoint.store.install_materialized(materialized(12, "k"));
    assert_eq!(
        endpoint.curl("auth", &[], "/v1/identity").1["credentials_version"],
        12
    );
    assert_eq!(endpoint.curl("auth", &[], "/v1/nope").0, 404);
}

/// On a daemon that takes bundles (one that takes none says `bundles_disabled` first,
/// whatever the push).
#[test]
fn oversized_bundle_is_413() {
    let keys = keys();
    let endpoint = with_opener(&keys);
    let big = endpoint.dir.path().join("big");
    std::fs::write(&big, vec![0u8; MAX_BUNDLE_BYTES + 1]).unwrap();
    let (status, body) = endpoint.put_bundle(&big);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("bundle_oversized"))
    );
    let (status, body) = endpoint.curl(
        "auth",
        &["-X", "PUT", "-H", "Content-Type: text/plain", "--data", "x"],
        "/v1/credentials",
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
}

#[test]
fn events_stream_delivers_credentials_installed() {
    let endpoint = simple();
    let mut events = endpoint.events();
    endpoint.store.install_materialized(materialized(21, "k"));
    let data: serde_json::Value =
        serde_json::from_str(&next_event(&mut events, "credentials_installed")).unwrap();
    assert_eq!(
        data,
        serde_json::json!({"type": "credentials_installed", "version": 21})
    );
}

/// "The stream ends when the daemon stops": when the endpoint stops, the event stream's
/// body ends with its last chunk (not cut off after the shutdown grace, which a client
/// cannot tell from a lost connection), and the endpoint stops at once.
#[test]
fn the_event_stream_ends_with_its_last_chunk_when_the_endpoint_stops() {
    let mut endpoint = simple();
    let grace = grexal_sidecar::api::ConnLimits::default().shutdown_grace;
    let mut events = endpoint.events();
    endpoint.store.install_materialized(materialized(3, "k"));
    next_event(&mut events, "credentials_installed");

    // Published just before the stop, as the daemon publishes `agent_exited` and then
    // stops: it still goes out before the stream ends.
    endpoint.store.install_materialized(materialized(4, "k"));
    let started = Instant::now();
    endpoint.stop.cancel();
    let mut rest = Vec::new();
    let read = std::io::Read::read_to_end(&mut events, &mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(read.is_ok(), "{read:?} after {rest:?}");
    assert!(
        rest.contains(r#""version":4"#),
        "the event published before the stop was lost: {rest:?}"
    );
    assert!(rest.ends_with("0\r\n\r\n"), "no last chunk: {rest:?}");
    let server = &mut endpoint.server;
    endpoint
        .runtime
        .block_on(async { tokio::time::timeout(grace * 2, server).await })
        .expect("the endpoint stops")
        .unwrap();
    let stopped_in = started.elapsed();
    assert!(
        stopped_in < grace / 2,
        "the endpoint took {stopped_in:?} to stop (its grace is {grace:?})"
    );
}

/// A client that pipelines requests and never reads the answers leaves hyper blocked
/// writing, where no head timeout applies. It is disconnected once a write has waited for
/// the write timeout, so it cannot sit on a connection slot: with a single slot, the
/// platform still gets in. (No reserve for the platform here: the one slot is anyone's, as
/// a general slot is, and the write timeout alone must free it.)
#[test]
fn a_client_that_never_reads_cannot_hold_a_connection_slot() {
    let mut limits = ControlLimits {
        max_connections: 1,
        platform_reserve: 0,
        ..ControlLimits::default()
    };
    limits.conn.header_read_timeout = Duration::from_secs(1);
    limits.conn.write_timeout = Duration::from_millis(500);
    let store = Store::new(manifest(), None, inert_injector(), EventBus::new());
    let endpoint = start_with(
        store,
        SandboxPublicKey([9; 32]),
        tempfile::tempdir().unwrap(),
        limits,
    );

    // No token needed: each request is answered with a small 401.
    let mut never_reads = TcpStream::connect(endpoint.addr).unwrap();
    never_reads.set_nonblocking(true).unwrap();
    let request = b"GET /v1/identity HTTP/1.1\r\nhost: x\r\n\r\n";
    let started = Instant::now();
    let mut sent = 0usize;
    let closed = loop {
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        match never_reads.write(request) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => break Some(e),
        }
    };
    eprintln!(
        "the client sent {sent} bytes and read none; after {:?}: {closed:?}",
        started.elapsed()
    );

    let (status, body) = endpoint.curl("auth", &["--max-time", "5"], "/v1/identity");
    assert_eq!(
        (status, body["sandbox_id"].as_str()),
        (200, Some(SANDBOX_ID)),
        "the platform was locked out: {body}"
    );
    assert!(
        closed.is_some(),
        "the client that never reads was still connected after 10 s"
    );
}

/// A keep-alive connection to the endpoint, one request at a time.
struct Conn(BufReader<TcpStream>);

/// A whole response: status, head lines (lower-cased), body.
type Answer = (u16, Vec<String>, String);

impl Conn {
    fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self(BufReader::new(stream))
    }

    /// `GET path`, with `Authorization: {auth}` if given, and its answer.
    fn get(&mut self, path: &str, auth: Option<&str>) -> Answer {
        self.request(path, auth).unwrap()
    }

    fn request(&mut self, path: &str, auth: Option<&str>) -> std::io::Result<Answer> {
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        write!(
            self.0.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
        )?;
        self.answer()
    }

    /// The next response (with a `Content-Length`) on the connection.
    fn answer(&mut self) -> std::io::Result<Answer> {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if self.0.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            match line.trim_end() {
                "" => break,
                line => head.push(line.to_ascii_lowercase()),
            }
        }
        let status = head[0].split(' ').nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .iter()
            .find_map(|h| h.strip_prefix("content-length: "))
            .unwrap_or_else(|| panic!("no content-length: {head:?}"))
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        std::io::Read::read_exact(&mut self.0, &mut body)?;
        Ok((status, head, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Whether the server has closed the connection (nothing more to read).
    fn closed(&mut self) -> bool {
        matches!(self.0.fill_buf().map(|b| b.is_empty()), Ok(true))
    }
}

fn code(body: &str) -> String {
    let body: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Behind an edge that opens an upstream connection per request in flight, one viewer page
/// load takes over 40 connections at once (its ~42 noVNC modules), and two or three took
/// every slot of the control listener, the platform's calls and event stream then refused
/// with them. The last slots are the platform's: with every other one held by the viewer's
/// static files, another viewer request is refused `503 too_many_connections` and its
/// connection closed, and so is a request under `/v1/` without the token or with a wrong
/// one; the platform's calls and its event stream get in, up to the reserve, past which a
/// connection is refused as soon as it is accepted. A viewer connection closed makes room
/// for a viewer again.
#[test]
fn the_platform_gets_in_while_viewers_hold_every_other_connection_slot() {
    let limits = ControlLimits {
        max_connections: 5,
        platform_reserve: 2,
        ..ControlLimits::default()
    };
    // One bus: the event stream opens with the takeover manager's state.
    let events = EventBus::new();
    let takeovers = TakeoverManager::new(
        Arc::new(manifest()),
        None,
        events.clone(),
        "http://edge.example".into(),
        TakeoverLimits::default(),
    );
    let endpoint = start_configured(
        Store::new(manifest(), None, inert_injector(), events),
        SandboxPublicKey([9; 32]),
        tempfile::tempdir().unwrap(),
        limits,
        |state| state.takeovers = Some(takeovers),
    );
    let viewer_file = "/takeover/assets/viewer.js";
    let bearer = format!("Bearer {TOKEN}");

    // The three general slots, each held by a viewer's keep-alive connection.
    let mut viewers: Vec<Conn> = (0..3)
        .map(|_| {
            let mut viewer = Conn::open(endpoint.addr);
            assert_eq!(viewer.get(viewer_file, None).0, 200);
            viewer
        })
        .collect();
    for (path, auth) in [
        (viewer_file, None),
        ("/takeover/x/session", None),
        ("/v1/identity", None),
        ("/v1/identity", Some("Bearer not-the-token-at-all")),
    ] {
        let mut conn = Conn::open(endpoint.addr);
        let (status, head, body) = conn.get(path, auth);
        assert_eq!(
            (status, code(&body).as_str()),
            (503, "too_many_connections"),
            "{path} {auth:?}: {head:?} {body}"
        );
        assert!(head.iter().any(|h| h == "connection: close"), "{head:?}");
        assert!(conn.closed(), "{path} {auth:?}: the connection stays open");
    }

    // The platform: calls (two on one connection) and its event stream.
    let mut platform = Conn::open(endpoint.addr);
    for _ in 0..2 {
        let (status, _, body) = platform.get("/v1/identity", Some(&bearer));
        assert_eq!(status, 200, "the platform was refused: {body}");
        assert!(body.contains(SANDBOX_ID), "{body}");
    }
    let _events = endpoint.events();

    // Every slot taken: refused at once, before any request.
    let (status, _, body) = Conn::open(endpoint.addr).answer().unwrap();
    assert_eq!(
        (status, code(&body).as_str()),
        (503, "too_many_connections")
    );

    // A viewer leaves: a general slot is free (once the server has seen the close).
    drop(viewers.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Until then, refused at accept: the answer, or a reset if the request came late.
        match Conn::open(endpoint.addr).request(viewer_file, None) {
            Ok((200, _, _)) => break,
            other => assert!(Instant::now() < deadline, "no room for a viewer: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- Tests that need the real bundle/keys/credentials/inject modules and `seal`. ----

struct Keys {
    dir: tempfile::TempDir,
    platform_public: PlatformPublicKey,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let b64 = |bytes: &[u8]| {
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    let sandbox_secret: [u8; 32] = rand::random();
    let sandbox_public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(sandbox_secret));
    write_private(
        &dir.path().join("sandbox.key"),
        b64(&sandbox_secret).as_bytes(),
    );
    std::fs::write(
        dir.path().join("sandbox.pub"),
        b64(sandbox_public.as_bytes()),
    )
    .unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    write_private(
        &dir.path().join("platform.key"),
        b64(&signing.to_bytes()).as_bytes(),
    );
    Keys {
        dir,
        platform_public: PlatformPublicKey(signing.verifying_key()),
    }
}

fn seal(keys: &Keys, version: u64, api_key: &str) -> PathBuf {
    let credentials = keys.dir.path().join(format!("creds-{version}.json"));
    let doc = serde_json::json!({"connections": {"openai": {"fields": {"api_key": api_key}}}});
    write_private(&credentials, doc.to_string().as_bytes());
    let out = keys.dir.path().join(format!("bundle-{version}"));
    let output = Command::new(env!("CARGO_BIN_EXE_grexal-sidecar"))
        .env_clear()
        .arg("seal")
        .arg("--credentials")
        .arg(&credentials)
        .args([
            "--sandbox-id",
            SANDBOX_ID,
            "--version",
            &version.to_string(),
        ])
        .arg("--sandbox-pub")
        .arg(keys.dir.path().join("sandbox.pub"))
        .arg("--platform-key")
        .arg(keys.dir.path().join("platform.key"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "seal failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn with_opener(keys: &Keys) -> Endpoint {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest {
        connections: vec![Connection {
            id: "openai".into(),
            display_name: "OpenAI".into(),
            mode: AuthMode::SecretInput {
                fields: vec![SecretField {
                    name: "api_key".into(),
                    label: "API key".into(),
                    secret: true,
                    env_var: "OPENAI_API_KEY".into(),
                }],
                delivery: Delivery::RuntimeObject,
            },
        }],
        sandbox_template: None,
    };
    let sandbox_key = SandboxSecretKey::load(&keys.dir.path().join("sandbox.key")).unwrap();
    let public_key = sandbox_key.public_key();
    let opener = Opener {
        sandbox_id: SANDBOX_ID.into(),
        sandbox_key,
        trusted: vec![keys.platform_public],
    };
    let injector = Injector::new(Layout {
        root: dir.path().join("grexal"),
        owner: None,
        env_file: None,
    })
    .unwrap();
    start(
        Store::new(manifest, Some(opener), injector, EventBus::new()),
        public_key,
        dir,
    )
}

/// With an opener, identity gives the sandbox's public key to seal to.
#[test]
fn identity_with_an_opener_gives_the_key_to_seal_to() {
    let keys = keys();
    let endpoint = with_opener(&keys);
    let public = SandboxSecretKey::load(&keys.dir.path().join("sandbox.key"))
        .unwrap()
        .public_key();
    let (status, body) = endpoint.curl("auth", &[], "/v1/identity");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"sandbox_id": SANDBOX_ID, "public_key": public.to_base64(),
                           "accepts_bundles": true, "credentials_version": null})
    );
}

#[test]
fn bundle_push_installs_and_refuses_replays() {
    let keys = keys();
    let endpoint = with_opener(&keys);
    let mut events = endpoint.events();
    let v1 = seal(&keys, 1, "sk-one");
    let (status, body) = endpoint.put_bundle(&v1);
    assert_eq!((status, &body), (200, &serde_json::json!({"version": 1})));
    let data: serde_json::Value =
        serde_json::from_str(&next_event(&mut events, "credentials_installed")).unwrap();
    assert_eq!(data["version"], 1);
    assert_eq!(
        endpoint.curl("auth", &[], "/v1/identity").1["credentials_version"],
        1
    );
    let served = endpoint.store.connect("openai").unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&served).unwrap()["api_key"],
        "sk-one"
    );

    let (status, body) = endpoint.put_bundle(&v1);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("bundle_replayed"))
    );

    let v2 = seal(&keys, 2, "sk-two");
    assert_eq!(
        endpoint.put_bundle(&v2),
        (200, serde_json::json!({"version": 2}))
    );
    let served = endpoint.store.connect("openai").unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&served).unwrap()["api_key"],
        "sk-two"
    );
}

/// A media type is case-insensitive and may carry parameters: both spellings install.
#[test]
fn bundle_push_takes_any_spelling_of_the_octet_stream_media_type() {
    let keys = keys();
    let endpoint = with_opener(&keys);
    for (version, content_type) in [
        (1, "Application/Octet-Stream"),
        (2, "application/octet-stream; x-origin=platform"),
    ] {
        let bundle = seal(&keys, version, "sk-spelled");
        let data = format!("@{}", bundle.display());
        let (status, body) = endpoint.curl(
            "auth",
            &[
                "-X",
                "PUT",
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
                &data,
            ],
            "/v1/credentials",
        );
        assert_eq!(
            (status, &body),
            (200, &serde_json::json!({"version": version})),
            "{content_type}"
        );
    }
}

#[test]
fn bundle_push_refuses_tampered_and_garbage() {
    let keys = keys();
    let endpoint = with_opener(&keys);
    let v1 = seal(&keys, 1, "sk-one");
    let mut bytes = std::fs::read(&v1).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = keys.dir.path().join("tampered");
    std::fs::write(&tampered, &bytes).unwrap();
    let (status, body) = endpoint.put_bundle(&tampered);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("bundle_tampered"))
    );
    let garbage = keys.dir.path().join("garbage");
    std::fs::write(&garbage, b"not a bundle").unwrap();
    let (status, body) = endpoint.put_bundle(&garbage);
    // Long enough for the prefix, so its magic is judged: not a grexal bundle.
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bundle_unsupported")),
        "{body}"
    );
    let short = keys.dir.path().join("short");
    std::fs::write(&short, b"GRXB").unwrap();
    let (status, body) = endpoint.put_bundle(&short);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bundle_malformed")),
        "{body}"
    );
    assert_eq!(endpoint.store.version(), None);
    let _ = &endpoint.runtime;
}
