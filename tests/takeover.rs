//! Takeover over real sockets: the agent's routes on a Unix socket, control and viewer
//! routes on loopback TCP, WebSockets from tokio-tungstenite, relays to a fake VNC server
//! or to the real desktop (Xvnc + Chromium; skipped only when those are missing and `CI`
//! is unset).

#[path = "support/takeover.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use grexal_sidecar::desktop::{
    ChromiumSandbox, Desktop, DesktopConfig, DesktopStatus, RestartPolicy,
};
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::takeover::{Browser, TakeoverLimits};
use support::{eventually, FakeBrowser, FakeVnc, Harness, BANNER};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const LONG: Duration = Duration::from_secs(30);

async fn fake() -> (Harness, FakeVnc, Arc<FakeBrowser>) {
    let vnc = FakeVnc::start().await;
    let browser = Arc::new(FakeBrowser {
        vnc: vnc.addr,
        status: watch::channel(DesktopStatus::Ready).0,
    });
    let harness = Harness::start(browser.clone(), TakeoverLimits::default()).await;
    (harness, vnc, browser)
}

fn request_body(timeout_s: u64) -> String {
    format!(
        r#"{{"connection_id":"github","reason":"Please log in to GitHub","timeout_seconds":{timeout_s}}}"#
    )
}

async fn start(h: &mut Harness, body: &str) -> (String, String, String) {
    let r = h.agent("POST", "/v1/takeovers", Some(body)).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let info = r.json();
    let ids = h.requested().await;
    assert_eq!(info["takeover_id"], ids.0.as_str());
    assert_eq!(info["state"], "live");
    assert_eq!(
        info["viewer_url"],
        format!("http://{}/takeover/{}", h.http, ids.0)
    );
    // The agent never sees a token.
    assert!(!String::from_utf8_lossy(&r.body).contains(&ids.1));
    assert!(!String::from_utf8_lossy(&r.body).contains(&ids.2));
    ids
}

/// Opens the viewer WebSocket offering `binary` and, if given, the token subprotocol.
async fn ws_connect(h: &Harness, id: &str, token: Option<&str>) -> Result<Ws, WsError> {
    let mut request = h.ws_url(id).into_client_request()?;
    let protocols = match token {
        Some(t) => format!("binary, grexal.v1.{t}"),
        None => "binary".to_owned(),
    };
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().expect("header"));
    let (ws, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("binary")
    );
    Ok(ws)
}

/// The refusal's HTTP status; panics if the server upgraded.
async fn ws_refused(h: &Harness, id: &str, token: Option<&str>) -> u16 {
    match ws_connect(h, id, token).await {
        Ok(_) => panic!("upgraded with token {token:?}"),
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains("RFB"), "{text}");
            assert!(text.contains("\"error\""), "{text}");
            response.status().as_u16()
        }
        Err(other) => panic!("unexpected {other}"),
    }
}

async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match tokio::time::timeout(LONG, ws.next())
            .await
            .expect("message in time")
        {
            Some(Ok(Message::Binary(data))) => return data.to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

/// The close frame's (code, reason), skipping any data still in flight.
async fn next_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(LONG, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn control_viewer_gets_rfb_and_is_cut_before_wait_returns() {
    let (mut h, vnc, _browser) = fake().await;
    let (id, control, view) = start(&mut h, &request_body(300)).await;
    let mut ws = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
    assert_eq!(next_binary(&mut ws).await, BANNER);
    let mut viewer = ws_connect(&h, &id, Some(&view))
        .await
        .expect("upgrade view");
    assert_eq!(next_binary(&mut viewer).await, BANNER);

    let session = h
        .public_as("GET", &format!("/takeover/{id}/session"), &view)
        .await;
    assert_eq!(session.status, 200);
    let s = session.json();
    assert_eq!(
        (
            s["access"].as_str(),
            s["state"].as_str(),
            s["display_name"].as_str()
        ),
        (Some("view"), Some("live"), Some("GitHub"))
    );
    assert_eq!(s["reason"], "Please log in to GitHub");
    assert!(session
        .head
        .to_ascii_lowercase()
        .contains("cache-control: no-store"));

    let agent = {
        let socket = h.agent_socket.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
            support::http(
                stream,
                "GET",
                &format!("/v1/takeovers/{id}/wait?timeout_seconds=60"),
                &[],
                None,
            )
            .await
        })
    };
    // The long poll is parked before the user clicks.
    eventually("the wait to be parked", LONG, || {
        h.manager.waiters(&id) == 1
    })
    .await;
    let done = h
        .public_as("POST", &format!("/takeover/{id}/complete"), &control)
        .await;
    assert_eq!(done.status, 200);
    assert_eq!(
        (
            done.json()["state"].as_str(),
            done.json()["outcome"].as_str()
        ),
        (Some("ended"), Some("completed"))
    );
    let waited = agent.await.unwrap();
    assert_eq!(waited.status, 200);
    let w = waited.json();
    assert_eq!(
        (w["state"].as_str(), w["outcome"].as_str(), w["by"].as_str()),
        (Some("ended"), Some("completed"), Some("user"))
    );
    // Both close frames were sent before the wait returned: they are already here.
    for ws in [&mut ws, &mut viewer] {
        let close = tokio::time::timeout(Duration::from_millis(500), next_close(ws))
            .await
            .expect("already closed");
        assert_eq!(close, (4000, "completed".to_owned()));
    }
    assert_eq!(vnc.connections.load(Ordering::SeqCst), 2);

    // The ended takeover's tokens: 410 on session (with the outcome), 401 on the socket.
    let gone = h
        .public_as("GET", &format!("/takeover/{id}/session"), &control)
        .await;
    assert_eq!(
        (gone.status, gone.code()),
        (410, "takeover_ended".to_owned())
    );
    assert_eq!(gone.json()["outcome"], "completed");
    assert_eq!(ws_refused(&h, &id, Some(&control)).await, 401);
    assert_eq!(
        vnc.connections.load(Ordering::SeqCst),
        2,
        "no VNC connection for a refused viewer"
    );
}

#[tokio::test]
async fn tokens_never_reach_the_log() {
    let (mut h, _vnc, _browser) = fake().await;
    let (id, control, view) = start(&mut h, &request_body(300)).await;
    let mut ws = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
    assert_eq!(next_binary(&mut ws).await, BANNER);
    let mut viewer = ws_connect(&h, &id, Some(&view))
        .await
        .expect("upgrade view");
    assert_eq!(next_binary(&mut viewer).await, BANNER);
    assert_eq!(
        h.public_as("GET", &format!("/takeover/{id}/session"), &view)
            .await
            .status,
        200
    );
    assert_eq!(
        h.public_as("POST", &format!("/takeover/{id}/complete"), &view)
            .await
            .status,
        403
    );
    assert_eq!(
        h.public_as("POST", &format!("/takeover/{id}/complete"), &control)
            .await
            .status,
        200
    );
    assert_eq!(ws_refused(&h, &id, Some(&control)).await, 401);
    let log = support::captured_logs().text();
    assert!(
        log.contains("takeover requested") && log.contains("takeover ended"),
        "nothing captured"
    );
    for token in [&control, &view] {
        assert!(!log.contains(token.as_str()), "a token is in the log");
    }
}

/// A valid token on a request that is not a WebSocket handshake (a plain GET, a wrong
/// version, no key): 400 `bad_request`, no upgrade, no VNC connection.
#[tokio::test]
async fn broken_handshakes_are_refused_with_bad_request() {
    let (mut h, vnc, _browser) = fake().await;
    let (id, control, _) = start(&mut h, &request_body(300)).await;
    let protocol = format!("binary, grexal.v1.{control}");
    let target = format!("/takeover/{id}/websocket");
    let upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket")];
    let key = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("plain GET", vec![]),
        (
            "wrong version",
            vec![upgrade[0], upgrade[1], key, ("Sec-WebSocket-Version", "8")],
        ),
        (
            "no key",
            vec![upgrade[0], upgrade[1], ("Sec-WebSocket-Version", "13")],
        ),
    ];
    for (what, mut headers) in cases {
        headers.push(("Sec-WebSocket-Protocol", &protocol));
        let r = h.public("GET", &target, &headers).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request".to_owned()),
            "{what}"
        );
    }
    let r = h
        .public(
            "POST",
            &target,
            &[
                upgrade[0],
                upgrade[1],
                key,
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Protocol", &protocol),
            ],
        )
        .await;
    assert_ne!(r.status, 101, "a POST must not upgrade");
    assert_eq!(vnc.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bad_tokens_are_refused_before_any_upgrade() {
    let (mut h, vnc, _browser) = fake().await;
    let (id, control, view) = start(&mut h, &request_body(300)).await;
    assert_eq!(ws_refused(&h, &id, None).await, 401);
    assert_eq!(ws_refused(&h, &id, Some("AAAAwrongtokenAAAA")).await, 401);
    assert_eq!(ws_refused(&h, "otherid", Some(&control)).await, 401);
    assert_eq!(vnc.connections.load(Ordering::SeqCst), 0);

    let none = h
        .public("GET", &format!("/takeover/{id}/session"), &[])
        .await;
    assert_eq!((none.status, none.code()), (401, "unauthorized".to_owned()));
    let wrong = h
        .public_as("GET", &format!("/takeover/{id}/session"), "nope")
        .await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (401, "unauthorized".to_owned())
    );
    let viewer_complete = h
        .public_as("POST", &format!("/takeover/{id}/complete"), &view)
        .await;
    assert_eq!(
        (viewer_complete.status, viewer_complete.code()),
        (403, "forbidden".to_owned())
    );
    let viewer_cancel = h
        .public_as("POST", &format!("/takeover/{id}/cancel"), &view)
        .await;
    assert_eq!(viewer_cancel.status, 403);
    assert_eq!(
        h.agent("GET", &format!("/v1/takeovers/{id}"), None)
            .await
            .json()["state"],
        "live"
    );

    // "I can't log in".
    let cancel = h
        .public_as("POST", &format!("/takeover/{id}/cancel"), &control)
        .await;
    assert_eq!(cancel.status, 200);
    let waited = h
        .agent("GET", &format!("/v1/takeovers/{id}/wait"), None)
        .await;
    assert_eq!(
        (waited.status, waited.code()),
        (409, "takeover_cancelled".to_owned())
    );
    assert_eq!(waited.json()["takeover"]["by"], "user");
    let again = h
        .public_as("POST", &format!("/takeover/{id}/complete"), &control)
        .await;
    assert_eq!(
        (again.status, again.code()),
        (410, "takeover_ended".to_owned())
    );
}

#[tokio::test]
async fn deadline_makes_wait_return_408() {
    let (mut h, _vnc, _browser) = fake().await;
    let (id, control, _) = start(&mut h, &request_body(1)).await;
    let mut ws = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
    assert_eq!(next_binary(&mut ws).await, BANNER);
    let started = Instant::now();
    let waited = h
        .agent(
            "GET",
            &format!("/v1/takeovers/{id}/wait?timeout_seconds=30"),
            None,
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        (waited.status, waited.code()),
        (408, "takeover_timeout".to_owned())
    );
    assert_eq!(waited.json()["takeover"]["outcome"], "timed_out");
    assert_eq!(next_close(&mut ws).await, (4000, "timed_out".to_owned()));
}

/// Through the daemon's agent router (`api::serve`), with a request timeout far shorter
/// than the wait: the long poll outlives it, and the other takeover routes answer under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_agent_socket_the_wait_outlives_the_request_timeout() {
    use grexal_sidecar::api::{self, ApiLimits, ApiState};
    use grexal_sidecar::store::{testing::inert_injector, Store};
    use grexal_sidecar::takeover::TakeoverManager;

    let request_timeout = Duration::from_millis(500);
    let vnc = FakeVnc::start().await;
    let browser = Arc::new(FakeBrowser {
        vnc: vnc.addr,
        status: watch::channel(DesktopStatus::Ready).0,
    });
    let manager = TakeoverManager::new(
        support::manifest(),
        Some(browser),
        EventBus::new(),
        "http://sidecar.test".into(),
        TakeoverLimits::default(),
    );
    let store = Arc::new(Store::new(
        (*support::manifest()).clone(),
        None,
        inert_injector(),
        EventBus::new(),
    ));
    let mut state = ApiState::new(store, None);
    state.limits = ApiLimits::new(8, request_timeout);
    state.takeovers = Some(manager.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("sidecar.sock");
    let listener = api::bind(&socket, None).expect("bind");
    let stop = CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, state, stop.clone()));
    let agent = |method: &'static str, target: String, body: Option<String>| {
        let socket = socket.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
            support::http(stream, method, &target, &[], body.as_deref()).await
        }
    };

    let created = agent("POST", "/v1/takeovers".into(), Some(request_body(300))).await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let id = created.json()["takeover_id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let wait = tokio::spawn(agent(
        "GET",
        format!("/v1/takeovers/{id}/wait?timeout_seconds=60"),
        None,
    ));
    eventually("the wait to be parked", LONG, || manager.waiters(&id) == 1).await;
    tokio::time::sleep(request_timeout * 3).await;
    assert_eq!(manager.waiters(&id), 1, "the wait was cut");
    let cancelled = agent("POST", format!("/v1/takeovers/{id}/cancel"), None).await;
    assert_eq!(cancelled.status, 200);
    let waited = wait.await.unwrap();
    assert!(started.elapsed() > request_timeout * 3);
    assert_eq!(
        (waited.status, waited.code()),
        (409, "takeover_cancelled".to_owned())
    );
    assert_eq!(waited.json()["takeover"]["by"], "agent");
    stop.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn agent_surface_errors_and_conflict() {
    let (mut h, _vnc, browser) = fake().await;
    let cases: &[(&str, u16, &str)] = &[
        (
            r#"{"connection_id":"nope","reason":"r"}"#,
            404,
            "connection_not_found",
        ),
        (
            r#"{"connection_id":"openai","reason":"r"}"#,
            409,
            "invalid_auth_mode",
        ),
        (
            r#"{"connection_id":"github","reason":"r","extra":true}"#,
            400,
            "bad_request",
        ),
        (
            r#"{"connection_id":"github","reason":"r","timeout_seconds":0}"#,
            400,
            "bad_request",
        ),
        (r#"{"connection_id":"github""#, 400, "bad_request"),
        (
            r#"{"connection_id":"github","reason":"r","success":{}}"#,
            400,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        let r = h.agent("POST", "/v1/takeovers", Some(body)).await;
        assert_eq!((r.status, r.code().as_str()), (*status, *code), "{body}");
    }
    let huge = format!(
        r#"{{"connection_id":"github","reason":"{}"}}"#,
        "x".repeat(17 * 1024)
    );
    let r = h.agent("POST", "/v1/takeovers", Some(&huge)).await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large".to_owned()));

    let (id, _, _) = start(&mut h, &request_body(300)).await;
    let second = h
        .agent("POST", "/v1/takeovers", Some(&request_body(300)))
        .await;
    assert_eq!(
        (second.status, second.code()),
        (409, "takeover_conflict".to_owned())
    );
    let r = h
        .agent(
            "GET",
            &format!("/v1/takeovers/{id}/wait?timeout_seconds=601"),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = h
        .agent(
            "GET",
            &format!("/v1/takeovers/{id}/wait?timeout_seconds=0"),
            None,
        )
        .await;
    assert_eq!((r.status, r.json()["state"].as_str()), (200, Some("live")));
    assert_eq!(
        h.agent("GET", "/v1/takeovers/nope", None).await.code(),
        "takeover_not_found"
    );
    let b = h.agent("GET", "/v1/browser", None).await;
    assert_eq!(
        (b.status, b.json()["cdp_ws_url"].as_str()),
        (200, Some("ws://127.0.0.1:9/devtools/browser/fake"))
    );

    // The platform completes it (control endpoint route).
    let r = h
        .public("POST", &format!("/v1/takeovers/{id}/complete"), &[])
        .await;
    assert_eq!((r.status, r.json()["by"].as_str()), (200, Some("platform")));
    // The agent cancels the next one.
    let (id2, _, _) = start(&mut h, &request_body(300)).await;
    let r = h
        .agent("POST", &format!("/v1/takeovers/{id2}/cancel"), None)
        .await;
    assert_eq!(
        (
            r.status,
            r.json()["outcome"].as_str(),
            r.json()["by"].as_str()
        ),
        (200, Some("cancelled"), Some("agent"))
    );

    // A failed browser: no new takeover, no CDP endpoint.
    browser.status.send_replace(DesktopStatus::Failed {
        reason: "gone".into(),
    });
    let r = h
        .agent("POST", "/v1/takeovers", Some(&request_body(300)))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (503, "browser_unavailable".to_owned())
    );
    assert_eq!(h.agent("GET", "/v1/browser", None).await.status, 503);
}

#[tokio::test]
async fn reload_replaces_the_controlling_viewer() {
    let (mut h, vnc, browser) = fake().await;
    let (id, control, _) = start(&mut h, &request_body(300)).await;
    let mut first = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
    assert_eq!(next_binary(&mut first).await, BANNER);
    let mut second = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
    assert_eq!(next_close(&mut first).await, (4001, "replaced".to_owned()));
    assert_eq!(next_binary(&mut second).await, BANNER);
    assert_eq!(vnc.connections.load(Ordering::SeqCst), 2);

    // The browser dies for good: the takeover fails and the viewer is told.
    browser.status.send_replace(DesktopStatus::Failed {
        reason: "gone".into(),
    });
    let waited = h
        .agent("GET", &format!("/v1/takeovers/{id}/wait"), None)
        .await;
    assert_eq!(
        (waited.status, waited.code()),
        (502, "takeover_failed".to_owned())
    );
    assert_eq!(next_close(&mut second).await, (4000, "failed".to_owned()));
}

/// Parks the agent's wait on takeover `id`, then clicks "I've logged in" as the viewer with
/// `control`; returns how long after the click the wait was answered (both answers 200).
async fn complete_and_time_the_wait(h: &Harness, id: &str, control: &str) -> Duration {
    let socket = h.agent_socket.clone();
    let target = format!("/v1/takeovers/{id}/wait?timeout_seconds=60");
    let agent = tokio::spawn(async move {
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let r = support::http(stream, "GET", &target, &[], None).await;
        (r, Instant::now())
    });
    eventually("the wait to be parked", LONG, || h.manager.waiters(id) == 1).await;
    let clicked = Instant::now();
    let done = h
        .public_as("POST", &format!("/takeover/{id}/complete"), control)
        .await;
    assert_eq!(done.status, 200);
    let (answer, returned) = agent.await.unwrap();
    assert_eq!(answer.status, 200);
    returned.duration_since(clicked)
}

/// "I've logged in" → the agent's long-poll returns. Prints the figures; asserts nothing
/// about them (run with `--nocapture` to see them).
#[tokio::test]
async fn measure_complete_to_wait_latency() {
    let (mut h, _vnc, _browser) = fake().await;
    let mut samples = Vec::new();
    for _ in 0..25 {
        let (id, control, _) = start(&mut h, &request_body(300)).await;
        let mut ws = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
        assert_eq!(next_binary(&mut ws).await, BANNER);
        samples.push(complete_and_time_the_wait(&h, &id, &control).await);
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "complete -> wait returned: n={} min={:.3} ms p50={:.3} ms p90={:.3} ms max={:.3} ms",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[samples.len() - 1])
    );
}

/// The agent's wait is answered once the viewer is cut, not once the viewer has finished the
/// WebSocket closing handshake: a viewer that reads nothing (a stalled network) would hold it
/// for the whole close timeout (1 s). It still gets the Close frame when it reads again.
#[tokio::test]
async fn wait_does_not_wait_for_a_silent_viewers_handshake() {
    let (mut h, _vnc, _browser) = fake().await;
    let (id, control, _) = start(&mut h, &request_body(300)).await;
    let mut ws = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
    assert_eq!(next_binary(&mut ws).await, BANNER);
    let waited = complete_and_time_the_wait(&h, &id, &control).await;
    assert!(
        waited < Duration::from_millis(500),
        "the wait took {waited:?}: it waited on the viewer"
    );
    // The viewer, reading now, finds the Close frame with the outcome.
    assert_eq!(next_close(&mut ws).await, (4000, "completed".to_owned()));
}

/// At most 16 waits are parked at once; the next is refused at once with `429
/// too_many_waits`. A client that sends a wait with a request pipelined behind it and hangs
/// up leaves the wait parked (hyper does not watch for EOF while a request is handled
/// with more bytes buffered) until its `timeout_seconds`: retried, such a client held
/// every connection slot of the agent socket.
#[tokio::test]
async fn parked_waits_are_capped() {
    use tokio::io::AsyncWriteExt;
    let (mut h, _vnc, _browser) = fake().await;
    let (id, _, _) = start(&mut h, &request_body(300)).await;
    let max = TakeoverLimits::default().max_waits;
    assert_eq!(max, 16, "as docs/api.md says");
    let mut parked = Vec::new();
    for _ in 0..max {
        let mut stream = tokio::net::UnixStream::connect(&h.agent_socket)
            .await
            .unwrap();
        let request = format!(
            "GET /v1/takeovers/{id}/wait?timeout_seconds=600 HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        parked.push(stream);
    }
    eventually("every wait to be parked", LONG, || {
        h.manager.waiters(&id) == max
    })
    .await;
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        h.agent(
            "GET",
            &format!("/v1/takeovers/{id}/wait?timeout_seconds=600"),
            None,
        ),
    )
    .await
    .expect("refused at once, not parked");
    assert_eq!(
        (refused.status, refused.code()),
        (429, "too_many_waits".to_owned())
    );
    assert_eq!(h.manager.waiters(&id), max);
    // A wait that does not wait (timeout 0) is still answered with the state.
    let now = h
        .agent(
            "GET",
            &format!("/v1/takeovers/{id}/wait?timeout_seconds=0"),
            None,
        )
        .await;
    assert_eq!(
        (now.status, now.json()["state"].as_str()),
        (200, Some("live"))
    );
    // The parked waits return when the takeover ends, and a wait on an ended takeover is
    // answered at once.
    let cancelled = h
        .agent("POST", &format!("/v1/takeovers/{id}/cancel"), None)
        .await;
    assert_eq!(cancelled.status, 200);
    eventually("the waits to return", LONG, || h.manager.waiters(&id) == 0).await;
    let ended = h
        .agent("GET", &format!("/v1/takeovers/{id}/wait"), None)
        .await;
    assert_eq!(
        (ended.status, ended.code()),
        (409, "takeover_cancelled".to_owned())
    );
    drop(parked);
}

/// A VNC server stand-in that floods whoever connects: a relay to a viewer that reads
/// nothing ends up blocked mid-frame, so stopping it takes the whole close timeout (1 s).
async fn flooding_vnc() -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0u8; 64 * 1024];
                while stream.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    addr
}

/// "I've logged in", and the user's browser goes away while the relays are being stopped:
/// hyper drops the request's handler, but the takeover still ends — the agent's wait
/// returns with the outcome, a new takeover can be requested, and later endings of this one
/// answer at once.
#[tokio::test]
async fn a_client_hanging_up_mid_complete_still_ends_the_takeover() {
    use tokio::io::AsyncWriteExt;
    let browser = Arc::new(FakeBrowser {
        vnc: flooding_vnc().await,
        status: watch::channel(DesktopStatus::Ready).0,
    });
    let mut h = Harness::start(browser, TakeoverLimits::default()).await;
    let (id, control, _) = start(&mut h, &request_body(300)).await;
    // The controlling viewer never reads: the flood fills the socket buffers.
    let _ws = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut client = TcpStream::connect(h.http).await.expect("connect");
    let request = format!(
        "POST /takeover/{id}/complete HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {control}\r\nContent-Length: 0\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.expect("write");
    // The ending has started (the tokens are refused) and is stuck on the relay: hang up.
    eventually("the ending to start", LONG, || {
        h.manager.authorize(&id, &control).is_err()
    })
    .await;
    drop(client);

    let waited = h
        .agent(
            "GET",
            &format!("/v1/takeovers/{id}/wait?timeout_seconds=5"),
            None,
        )
        .await;
    let w = waited.json();
    assert_eq!(
        (
            waited.status,
            w["state"].as_str(),
            w["outcome"].as_str(),
            w["by"].as_str()
        ),
        (200, Some("ended"), Some("completed"), Some("user"))
    );
    let got = h.agent("GET", &format!("/v1/takeovers/{id}"), None).await;
    assert_eq!(got.json()["state"], "ended");
    let (next, _, _) = start(&mut h, &request_body(300)).await;
    assert_ne!(next, id);
    // The platform's complete and cancel, and the agent's cancel, answer at once.
    let quick = Duration::from_secs(5);
    for action in ["complete", "cancel"] {
        let r = tokio::time::timeout(
            quick,
            h.public("POST", &format!("/v1/takeovers/{id}/{action}"), &[]),
        )
        .await
        .expect("the platform's answer in time");
        assert_eq!((r.status, r.code()), (410, "takeover_ended".to_owned()));
    }
    let r = tokio::time::timeout(
        quick,
        h.agent("POST", &format!("/v1/takeovers/{id}/cancel"), None),
    )
    .await
    .expect("the agent's answer in time");
    assert_eq!((r.status, r.code()), (410, "takeover_ended".to_owned()));
    tokio::time::timeout(quick, h.manager.shutdown())
        .await
        .expect("shutdown in time");
}

// ---- the real desktop ----

fn desktop_config(dir: &std::path::Path) -> DesktopConfig {
    DesktopConfig {
        profile_dir: dir.join("profile"),
        run_dir: dir.join("run"),
        chromium_sandbox: ChromiumSandbox::Off,
        chromium_extra_args: vec![
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1".into(),
        ],
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            // One restart is fine; the second within the window gives up.
            max_restarts: 1,
            window: Duration::from_secs(300),
        },
        stop_grace: Duration::from_secs(3),
        ..DesktopConfig::default()
    }
}

/// A login site on 127.0.0.1: `/done` is the page after login, `/set-cookie?v=V` sets the
/// session cookie to V.
async fn login_site() -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/login",
            get(|| async { axum::response::Html("<h1>login</h1>") }),
        )
        .route(
            "/done",
            get(|| async { axum::response::Html("<h1>welcome</h1>") }),
        )
        .route(
            "/set-cookie",
            get(
                |axum::extract::Query(q): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| async move {
                    let v = q.get("v").map_or("s3cret", String::as_str);
                    (
                        [("set-cookie", format!("session={v}; Path=/; Max-Age=600"))],
                        axum::response::Html("<h1>set</h1>"),
                    )
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Opens `url` in a new tab through CDP's HTTP endpoint.
async fn open_tab(desktop: &Desktop, url: &str) {
    let cdp = desktop.cdp();
    let host = cdp
        .http_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let stream = TcpStream::connect(&host).await.expect("connect CDP http");
    let r = support::http(stream, "PUT", &format!("/json/new?{url}"), &[], None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// Not a readiness wait: three poll periods of the success condition in which a wrong match
/// would have ended the takeover; then it must still be live.
async fn still_live_after_three_polls(h: &mut Harness, id: &str, why: &str) {
    tokio::time::sleep(Duration::from_millis(600)).await;
    let state = h.agent("GET", &format!("/v1/takeovers/{id}"), None).await;
    assert_eq!(state.json()["state"], "live", "{why}");
}

/// Waits until a page target of the browser is at `url` (`/json/list`).
async fn until_page_at(desktop: &Desktop, url: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let host = desktop.cdp().http_url;
        let host = host.trim_start_matches("http://").trim_end_matches('/');
        let stream = TcpStream::connect(host).await.expect("connect CDP http");
        let r = support::http(stream, "GET", "/json/list", &[], None).await;
        let pages: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        let at = |p: &serde_json::Value| p["type"] == "page" && p["url"] == url;
        if pages.as_array().is_some_and(|a| a.iter().any(at)) {
            break;
        }
        assert!(Instant::now() < end, "no page reached {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the browser holds the `session` cookie with value `v` (read over CDP).
async fn until_session_cookie(desktop: &Desktop, v: &str) {
    let (browser, mut handler) = chromiumoxide::Browser::connect(desktop.cdp().ws_url)
        .await
        .expect("CDP connects");
    let pump = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let cookies = browser.get_cookies().await.expect("getCookies");
        if cookies.iter().any(|c| c.name == "session" && c.value == v) {
            break;
        }
        assert!(Instant::now() < end, "the session cookie never became {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pump.abort();
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_desktop_rfb_condition_restart_and_failure() {
    if skip_desktop() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = CancellationToken::new();
    let desktop = Arc::new(
        Desktop::start(desktop_config(dir.path()), EventBus::new(), stop.clone())
            .await
            .expect("desktop starts"),
    );
    let mut h = Harness::start(
        desktop.clone() as Arc<dyn Browser>,
        TakeoverLimits::default(),
    )
    .await;
    let site = login_site().await;

    // 1. RFB from the real Xvnc through the relay; the URL condition completes it. A tab
    // already at a matching URL when the takeover starts proves nothing.
    open_tab(&desktop, &format!("{site}/done?x=0")).await;
    until_page_at(&desktop, &format!("{site}/done?x=0")).await;
    let body = format!(
        r#"{{"connection_id":"github","reason":"r","timeout_seconds":120,"success":{{"url_pattern":"{site}/done*"}}}}"#
    );
    let (id, control, _) = start(&mut h, &body).await;
    let mut ws = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
    let banner = next_binary(&mut ws).await;
    assert!(banner.starts_with(b"RFB 003."), "{banner:?}");
    open_tab(&desktop, &format!("{site}/login")).await;
    still_live_after_three_polls(
        &mut h,
        &id,
        "/login must not match, nor the /done tab that was there at the start",
    )
    .await;
    open_tab(&desktop, &format!("{site}/done?x=1")).await;
    let waited = h
        .agent(
            "GET",
            &format!("/v1/takeovers/{id}/wait?timeout_seconds=30"),
            None,
        )
        .await;
    assert_eq!(
        waited.status,
        200,
        "{}",
        String::from_utf8_lossy(&waited.body)
    );
    assert_eq!(
        (
            waited.json()["outcome"].as_str(),
            waited.json()["by"].as_str()
        ),
        (Some("completed"), Some("condition"))
    );
    assert_eq!(next_close(&mut ws).await, (4000, "completed".to_owned()));

    // 2. The cookie condition: the cookie the site set before the takeover (a login page's
    // pre-login session) proves nothing; the login changing its value does.
    open_tab(&desktop, &format!("{site}/set-cookie?v=anonymous")).await;
    until_session_cookie(&desktop, "anonymous").await;
    let body = r#"{"connection_id":"github","reason":"r","timeout_seconds":120,"success":{"cookie":{"name":"session","domain":"127.0.0.1"}}}"#;
    let (id, _, _) = start(&mut h, body).await;
    still_live_after_three_polls(
        &mut h,
        &id,
        "a cookie that was there at the start must not complete it",
    )
    .await;
    open_tab(&desktop, &format!("{site}/set-cookie?v=user-42")).await;
    let waited = h
        .agent(
            "GET",
            &format!("/v1/takeovers/{id}/wait?timeout_seconds=30"),
            None,
        )
        .await;
    assert_eq!(
        (
            waited.json()["outcome"].as_str(),
            waited.json()["by"].as_str()
        ),
        (Some("completed"), Some("condition"))
    );

    // 3. Chromium killed mid-takeover: it restarts and the takeover goes on.
    let (id, control, _) = start(&mut h, &request_body(120)).await;
    let before = desktop.pids().chromium;
    sigkill(before);
    let status = desktop.status();
    eventually("chromium restarted", Duration::from_secs(60), || {
        desktop.pids().chromium != before && *status.borrow() == DesktopStatus::Ready
    })
    .await;
    assert_eq!(
        h.agent("GET", &format!("/v1/takeovers/{id}"), None)
            .await
            .json()["state"],
        "live"
    );
    let mut ws = ws_connect(&h, &id, Some(&control))
        .await
        .expect("reconnect");
    assert!(next_binary(&mut ws).await.starts_with(b"RFB 003."));

    // 4. Restarts exhausted: the takeover fails and the wait says so.
    sigkill(desktop.pids().chromium);
    let waited = h
        .agent(
            "GET",
            &format!("/v1/takeovers/{id}/wait?timeout_seconds=60"),
            None,
        )
        .await;
    assert_eq!(
        (waited.status, waited.code()),
        (502, "takeover_failed".to_owned())
    );
    // A failed desktop stops its VNC server too, so the relay may have ended first
    // ("vnc server closed"); either way the stream is closed and the page learns why.
    let (code, reason) = next_close(&mut ws).await;
    assert!(
        (code, reason.as_str()) == (4000, "failed") || code == 1000,
        "{code} {reason}"
    );
    let gone = h
        .public_as("GET", &format!("/takeover/{id}/session"), &control)
        .await;
    assert_eq!(
        (gone.status, gone.json()["outcome"].as_str()),
        (410, Some("failed"))
    );

    drop(h);
    stop.cancel();
    if let Ok(desktop) = Arc::try_unwrap(desktop) {
        desktop.shutdown().await;
    }
}

fn skip_desktop() -> bool {
    support::skip(&["/usr/bin/Xvnc", "/usr/bin/chromium"])
}
