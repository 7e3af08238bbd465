//! The platform's view of takeovers, through the control endpoint's router: the event
//! stream (a takeover live when the platform subscribes is told first, with tokens of its
//! own) and the bearer routes that read a takeover's state.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use futures_util::StreamExt;
use tower::ServiceExt;

use super::manager::TakeoverRequest;
use super::tests::{manifest, FakeBrowser};
use super::*;
use crate::platform::control::{router, BearerToken, ControlState};
use crate::platform::events::{EventBus, PlatformEvent};
use crate::relay::Access;
use crate::store::testing::inert_injector;
use crate::store::Store;

const BEARER: &str = "0123456789abcdef0123";

/// A control endpoint's router over a takeover manager with a fake browser, both on one
/// event bus (as the daemon wires them).
struct Platform {
    app: Router,
    manager: TakeoverManager,
    bus: EventBus,
}

fn platform() -> Platform {
    let bus = EventBus::new();
    let manifest = manifest(true);
    let store = Arc::new(Store::new(
        (*manifest).clone(),
        None,
        inert_injector(),
        bus.clone(),
    ));
    let manager = TakeoverManager::new(
        manifest,
        Some(FakeBrowser::new() as Arc<dyn Browser>),
        bus.clone(),
        "https://sbx.example".into(),
        TakeoverLimits::default(),
    );
    let mut state = ControlState::new(
        store,
        BearerToken::from_bytes(BEARER.as_bytes()).unwrap(),
        "sbx".into(),
        crate::keys::SandboxPublicKey([7; 32]),
    );
    state.takeovers = Some(manager.clone());
    Platform {
        app: router(state),
        manager,
        bus,
    }
}

fn request() -> TakeoverRequest {
    TakeoverRequest {
        connection_id: "github".into(),
        reason: "log in please".into(),
        timeout: Some(Duration::from_secs(300)),
        success: None,
    }
}

/// One event as the stream carried it: its SSE name and its data.
type Seen = (String, serde_json::Value);

impl Platform {
    async fn get(&self, path: &str, bearer: bool) -> axum::response::Response {
        let mut request = Request::get(path);
        if bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {BEARER}"));
        }
        self.app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> (StatusCode, serde_json::Value) {
        let response = self.get(path, true).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// Subscribes to `GET /v1/events`, then publishes a marker and returns every event the
    /// stream carried up to it: what the subscription began with, and what came live.
    async fn subscribe(&self) -> Vec<Seen> {
        let response = self.get("/v1/events", true).await;
        assert_eq!(response.status(), StatusCode::OK);
        self.read_until_marker(response.into_body()).await
    }

    async fn read_until_marker(&self, body: Body) -> Vec<Seen> {
        const MARKER: u64 = 424242;
        self.bus
            .publish(PlatformEvent::CredentialsInstalled { version: MARKER });
        let mut body = body.into_data_stream();
        let mut text = String::new();
        let mut seen = Vec::new();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("the stream carries the marker")
                .expect("the stream is open")
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some((block, rest)) = text.split_once("\n\n") {
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str::<serde_json::Value>(d).unwrap());
                    }
                }
                text = rest.to_owned();
                if let (Some(name), Some(data)) = (name, data) {
                    if data["version"] == MARKER {
                        return seen;
                    }
                    seen.push((name, data));
                }
            }
        }
    }
}

/// The tokens of a `takeover_requested` seen on the stream.
fn tokens(seen: &Seen) -> (String, String) {
    assert_eq!(seen.0, "takeover_requested", "{seen:?}");
    let token = |field: &str| seen.1[field].as_str().unwrap().to_owned();
    (token("control_token"), token("view_token"))
}

/// The tokens of the `takeover_requested` that `rx` hears next, as the bus published it.
async fn published_tokens(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<PlatformEvent>>,
) -> (String, String) {
    let PlatformEvent::TakeoverRequested {
        control_token,
        view_token,
        ..
    } = &*rx.recv().await.unwrap()
    else {
        panic!("the request was published")
    };
    (
        control_token.expose().to_owned(),
        view_token.expose().to_owned(),
    )
}

fn access(manager: &TakeoverManager, id: &str, token: &str) -> Result<Access, &'static str> {
    manager
        .authorize(id, token)
        .map(|g| g.access)
        .map_err(|e| e.code())
}

/// The agent asked for a human before the platform's stream was (re)connected: at boot, or
/// during a reconnect after a network blip. The platform still learns of it, first thing,
/// with tokens that open the viewer; the tokens given before stay valid (a user's open
/// viewer keeps working), and every token dies with the takeover.
#[tokio::test]
async fn a_platform_that_subscribes_while_a_takeover_is_live_is_told_of_it_first() {
    let p = platform();
    let mut earlier = p.bus.subscribe();
    let info = p.manager.request(request()).await.unwrap();
    let first = published_tokens(&mut earlier).await;

    let seen = p.subscribe().await;
    assert_eq!(
        seen.len(),
        1,
        "one takeover_requested and nothing else: {seen:?}"
    );
    let (name, data) = &seen[0];
    assert_eq!(name, "takeover_requested");
    assert_eq!(data["type"], "takeover_requested");
    assert_eq!(data["takeover_id"], info.takeover_id);
    assert_eq!(data["connection_id"], "github");
    assert_eq!(data["display_name"], "GitHub");
    assert_eq!(data["reason"], "log in please");
    assert_eq!(data["login_url"], "https://github.com/login");
    assert_eq!(data["viewer_url"], info.viewer_url);
    assert_eq!(data["expires_at"], info.expires_at);
    let replayed = tokens(&seen[0]);
    assert_ne!(replayed.0, first.0, "a fresh control token");
    assert_ne!(replayed.1, first.1, "a fresh view token");

    // A second subscriber gets its own pair; every pair opens the viewer.
    let again = tokens(&p.subscribe().await[0]);
    let id = info.takeover_id.as_str();
    for (control, view) in [&first, &replayed, &again] {
        assert_eq!(access(&p.manager, id, control), Ok(Access::Control));
        assert_eq!(access(&p.manager, id, view), Ok(Access::ViewOnly));
    }

    p.manager.complete(id, By::Platform).await.unwrap();
    for (control, view) in [&first, &replayed, &again] {
        assert_eq!(access(&p.manager, id, control), Err("takeover_ended"));
        assert_eq!(access(&p.manager, id, view), Err("takeover_ended"));
    }
    // Once it has ended, a new subscriber is told nothing of it.
    assert_eq!(p.subscribe().await, Vec::<Seen>::new());
}

/// Subscribing and requesting at the same moment, many times over: each subscriber hears
/// of the takeover exactly once, never missed and never twice (the snapshot and the
/// subscription are taken under the lock the request publishes under).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_racing_a_request_hears_of_it_exactly_once() {
    for round in 0..200 {
        let p = Arc::new(platform());
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let requester = {
            let (p, barrier) = (p.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                p.manager.request(request()).await.unwrap()
            })
        };
        let subscriber = {
            let (p, barrier) = (p.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                // A varying head start for the request, so both orders and the moments in
                // between all come up.
                for _ in 0..round % 16 {
                    tokio::task::yield_now().await;
                }
                p.get("/v1/events", true).await
            })
        };
        let info = requester.await.unwrap();
        let response = subscriber.await.unwrap();
        let seen = p.read_until_marker(response.into_body()).await;
        let told: Vec<_> = seen
            .iter()
            .filter(|(name, data)| {
                name == "takeover_requested" && data["takeover_id"] == info.takeover_id
            })
            .collect();
        assert_eq!(told.len(), 1, "round {round}: {seen:?}");
        let (control, _) = tokens(told[0]);
        assert_eq!(
            access(&p.manager, &info.takeover_id, &control),
            Ok(Access::Control)
        );
    }
}

/// A platform reconnecting in a loop cannot grow a takeover's tokens without bound: 16
/// pairs are valid at once. Past that, each new pair retires the oldest one made for a
/// subscriber; the takeover's first pair (the one a user's viewer most likely holds) stays.
#[tokio::test]
async fn token_pairs_are_bounded_and_the_first_pair_is_never_retired() {
    let p = platform();
    let max = TakeoverLimits::default().max_token_pairs;
    assert_eq!(max, 16);
    let mut earlier = p.bus.subscribe();
    let info = p.manager.request(request()).await.unwrap();
    let id = info.takeover_id.as_str();
    let (first, _) = published_tokens(&mut earlier).await;
    let mut replays = Vec::new();
    for _ in 0..max {
        replays.push(tokens(&p.subscribe().await[0]));
    }
    // The first pair plus `max` replays: one over, so the oldest replay went.
    assert_eq!(access(&p.manager, id, &first), Ok(Access::Control));
    assert_eq!(access(&p.manager, id, &replays[0].0), Err("unauthorized"));
    assert_eq!(access(&p.manager, id, &replays[0].1), Err("unauthorized"));
    for (control, view) in &replays[1..] {
        assert_eq!(access(&p.manager, id, control), Ok(Access::Control));
        assert_eq!(access(&p.manager, id, view), Ok(Access::ViewOnly));
    }
}

/// `HEAD /v1/events` (axum's `get` answers HEAD too) gets the stream's head but no
/// subscription: no token pair is minted for a stream nobody reads, so a probe or a
/// monitor sending HEAD in a loop retires no pair a viewer holds.
#[tokio::test]
async fn head_on_the_event_stream_mints_no_token_pair() {
    let p = platform();
    let info = p.manager.request(request()).await.unwrap();
    let id = info.takeover_id.as_str();
    // The oldest pair that can be retired: the first made for a subscriber.
    let held = tokens(&p.subscribe().await[0]);
    let max = TakeoverLimits::default().max_token_pairs;
    for _ in 0..max {
        let request = Request::head("/v1/events")
            .header(header::AUTHORIZATION, format!("Bearer {BEARER}"))
            .body(Body::empty())
            .unwrap();
        let response = p.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let body = tokio::time::timeout(
            Duration::from_secs(10),
            axum::body::to_bytes(response.into_body(), 1 << 20),
        )
        .await
        .expect("HEAD's body ends at once")
        .unwrap();
        assert!(body.is_empty(), "{body:?}");
    }
    assert_eq!(access(&p.manager, id, &held.0), Ok(Access::Control));
    assert_eq!(access(&p.manager, id, &held.1), Ok(Access::ViewOnly));
    // A GET still gets the live takeover, with a pair of its own.
    let replayed = tokens(&p.subscribe().await[0]);
    assert_ne!(replayed, held);
}

/// `GET /v1/takeovers` and `GET /v1/takeovers/{id}` on the control endpoint: the state the
/// agent's socket shows, bearer-protected, and never a token.
#[tokio::test]
async fn the_platform_reads_takeovers_without_their_tokens() {
    let p = platform();
    assert_eq!(
        p.get_json("/v1/takeovers").await,
        (StatusCode::OK, serde_json::json!({"takeovers": []}))
    );
    let mut earlier = p.bus.subscribe();
    let first = p.manager.request(request()).await.unwrap();
    let stream_tokens = tokens(&p.subscribe().await[0]);
    let published = published_tokens(&mut earlier).await;

    let live = serde_json::json!({
        "takeover_id": first.takeover_id, "state": "live", "connection_id": "github",
        "expires_at": first.expires_at, "outcome": null, "by": null,
    });
    let path = format!("/v1/takeovers/{}", first.takeover_id);
    assert_eq!(p.get_json(&path).await, (StatusCode::OK, live.clone()));
    assert_eq!(
        p.get_json(&path).await.1,
        serde_json::to_value(p.manager.get(&first.takeover_id).unwrap()).unwrap(),
        "the agent socket's view of a takeover"
    );
    let (status, list) = p.get_json("/v1/takeovers").await;
    assert_eq!(
        (status, &list),
        (StatusCode::OK, &serde_json::json!({"takeovers": [live]}))
    );
    let shown = list.to_string();
    for token in [
        &published.0,
        &published.1,
        &stream_tokens.0,
        &stream_tokens.1,
    ] {
        assert!(!shown.contains(token), "a token in {shown}");
    }

    // Ended ones are listed after the live one, newest first.
    p.manager
        .complete(&first.takeover_id, By::Platform)
        .await
        .unwrap();
    let second = p.manager.request(request()).await.unwrap();
    let (_, list) = p.get_json("/v1/takeovers").await;
    let listed: Vec<_> = list["takeovers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["takeover_id"].clone(),
                t["state"].clone(),
                t["by"].clone(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                second.takeover_id.clone().into(),
                "live".into(),
                serde_json::Value::Null
            ),
            (
                first.takeover_id.clone().into(),
                "ended".into(),
                "platform".into()
            ),
        ]
    );

    // Bearer-protected; an unknown id is the agent socket's 404.
    assert_eq!(
        p.get("/v1/takeovers", false).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(p.get(&path, false).await.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = p.get_json("/v1/takeovers/no-such-takeover").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("takeover_not_found"))
    );
}
