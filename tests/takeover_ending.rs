//! How a takeover ends, over real sockets as in `takeover.rs`: the deadline, the agent's
//! long poll outliving the request timeout, the wait answered once the viewer is cut (not
//! once it has closed, nor once a viewer that stopped reading has taken its frame), the
//! parked waits capped, and an ending that goes on when the client that asked for it hangs
//! up; the complete-to-wait latency measured.

#[path = "support/takeover.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use grexal_sidecar::desktop::DesktopStatus;
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::relay::RelayLimits;
use grexal_sidecar::takeover::TakeoverLimits;
use support::{
    eventually, fake, next_binary, next_close, request_body, start, ws_connect, FakeBrowser,
    FakeVnc, Harness, BANNER, LONG,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::MaybeTlsStream;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn deadline_makes_wait_return_408() {
    let (mut h, _vnc, _browser) = fake().await;
    let (id, control, _) = start(&mut h, &request_body(1)).await;
    let mut ws = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
    assert_eq!(next_binary(&mut ws).await, BANNER);
    let started = Instant::now();
    let waited = h.wait(&id, 30).await;
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
    let refused = tokio::time::timeout(Duration::from_secs(5), h.wait(&id, 600))
        .await
        .expect("refused at once, not parked");
    assert_eq!(
        (refused.status, refused.code()),
        (429, "too_many_waits".to_owned())
    );
    assert_eq!(h.manager.waiters(&id), max);
    // A wait that does not wait (timeout 0) is still answered with the state.
    let now = h.wait(&id, 0).await;
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
/// nothing ends up blocked mid-frame, so stopping it takes the whole stop timeout.
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

/// A VNC server stand-in that floods its first connection (a screen that keeps changing)
/// and sends the others its banner only (a still one). Resolves, with its address, to a
/// signal that fires once a write to the first has made no progress for 200 ms: the viewer
/// behind it has stopped reading, and its relay is stuck on a frame.
async fn vnc_flooding_the_first() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stuck, is_stuck) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut stuck = Some(stuck);
        while let Ok((mut stream, _)) = listener.accept().await {
            let Some(stuck) = stuck.take() else {
                tokio::spawn(async move {
                    let _ = stream.write_all(BANNER).await;
                    // Held open until the relay closes it.
                    let mut sink = tokio::io::sink();
                    let _ = tokio::io::copy(&mut stream, &mut sink).await;
                });
                continue;
            };
            tokio::spawn(async move {
                let chunk = vec![0u8; 64 * 1024];
                let mut stuck = Some(stuck);
                loop {
                    let write = stream.write_all(&chunk);
                    tokio::pin!(write);
                    let wrote =
                        match tokio::time::timeout(Duration::from_millis(200), &mut write).await {
                            Ok(wrote) => wrote,
                            Err(_) => {
                                if let Some(stuck) = stuck.take() {
                                    let _ = stuck.send(());
                                }
                                write.await
                            }
                        };
                    if wrote.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, is_stuck)
}

/// "I've logged in" with a watcher whose socket is full (it stopped reading while the screen
/// changed) and the controlling viewer reading: the agent's wait is answered after the stop
/// deadline, not after the watcher's frame in flight; the controlling viewer still gets
/// its 4000 Close, and the watcher's connection is closed (no Close frame can follow half a
/// frame). The ending waited the whole close timeout (1 s) for the watcher.
#[tokio::test]
async fn a_viewer_that_does_not_read_does_not_hold_up_the_wait() {
    let (vnc, stuck) = vnc_flooding_the_first().await;
    let browser = Arc::new(FakeBrowser {
        vnc,
        status: watch::channel(DesktopStatus::Ready).0,
    });
    let mut h = Harness::start(browser, TakeoverLimits::default()).await;
    let (id, control, view) = start(&mut h, &request_body(300)).await;
    let mut watcher = ws_connect(&h, &id, Some(&view)).await.expect("upgrade");
    tokio::time::timeout(LONG, stuck)
        .await
        .expect("the watcher's socket to fill")
        .expect("the flood");
    let mut ws = ws_connect(&h, &id, Some(&control)).await.expect("upgrade");
    assert_eq!(next_binary(&mut ws).await, BANNER);

    let waited = complete_and_time_the_wait(&h, &id, &control).await;
    // Not a benchmark (the 100 ms goal is measured in docs/performance.md): the bound only
    // has to tell the stop deadline (10 ms) from the close timeout (1 s) the old code waited,
    // with room for a loaded machine.
    assert!(
        waited < RelayLimits::default().close_timeout / 2,
        "the wait took {waited:?} after the click"
    );
    assert_eq!(next_close(&mut ws).await, (4000, "completed".to_owned()));
    // The watcher, reading at last, finds what was queued for it, then the end.
    let MaybeTlsStream::Plain(socket) = watcher.get_mut() else {
        panic!("not a plain TCP stream");
    };
    let mut rest = Vec::new();
    tokio::time::timeout(LONG, socket.read_to_end(&mut rest))
        .await
        .expect("the watcher's connection to be closed")
        .expect("read");
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
    // A relay stuck on a frame holds the ending for its stop timeout: 1 s here, for time to
    // hang up in the middle of it.
    let limits = TakeoverLimits {
        relay: RelayLimits {
            stop_timeout: Duration::from_secs(1),
            ..RelayLimits::default()
        },
        ..TakeoverLimits::default()
    };
    let mut h = Harness::start(browser, limits).await;
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

    let waited = h.wait(&id, 5).await;
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
