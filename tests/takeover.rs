//! Takeover over real sockets: the agent's routes on a Unix socket, control and viewer
//! routes on loopback TCP, WebSockets from tokio-tungstenite, relays to a fake VNC server.
//! Here the viewer's side: its tokens, its handshake, the controlling viewer replaced, and
//! the agent's errors. How a takeover ends and its wait returns is in `takeover_ending.rs`,
//! the real desktop (Xvnc + Chromium) in `takeover_desktop.rs`.

#[path = "support/takeover.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use grexal_sidecar::desktop::DesktopStatus;
use support::{
    eventually, fake, next_binary, next_close, request_body, start, ws_connect, ws_refused, BANNER,
    LONG,
};

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
    let r = h.wait(&id, 601).await;
    assert_eq!(r.status, 400);
    let r = h.wait(&id, 0).await;
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
