//! `GET /v1/browser` while Chromium restarts, on the real desktop (Xvnc and Chromium;
//! skipped only when a binary is missing and `CI` is unset). Chromium keeps its CDP port
//! over a restart but not its `/devtools/browser/<id>` path: asked right after Chromium
//! died, the agent's call waits for the new browser and gives its URL, never the dead
//! one's; a restart slower than the wait is `503 browser_unavailable`, saying to retry.

#[path = "support/desktop.rs"]
mod desktop_support;
#[path = "support/takeover.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use desktop_support::*;
use grexal_sidecar::desktop::{Desktop, DesktopConfig, DesktopStatus, RestartPolicy};
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::takeover::{Browser, TakeoverLimits};
use support::{http, Harness, HttpResponse};
use tokio_util::sync::CancellationToken;

/// Long enough for Chromium to restart on a loaded 2-core machine.
const RESTARTED: Duration = Duration::from_secs(60);

/// The id in a browser WebSocket URL (`…/devtools/browser/<id>`).
fn browser_id(ws_url: &str) -> &str {
    ws_url
        .rsplit_once("/devtools/browser/")
        .map(|(_, id)| id)
        .unwrap_or_else(|| panic!("not a browser URL: {ws_url}"))
}

/// The id of the browser that Chromium serving `http_url` names now (its URL's host is
/// the request's `Host`, not the daemon's `127.0.0.1:PORT`).
async fn json_version_id(http_url: &str) -> String {
    let addr = http_url.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to CDP");
    let got = http(stream, "GET", "/json/version", &[], None).await;
    assert_eq!(got.status, 200);
    let ws_url = got.json()["webSocketDebuggerUrl"]
        .as_str()
        .expect("webSocketDebuggerUrl")
        .to_owned();
    browser_id(&ws_url).to_owned()
}

/// The agent's `GET /v1/browser`: 200 and its `cdp_ws_url`.
fn ws_url_of(got: &HttpResponse) -> String {
    assert_eq!(
        got.status,
        200,
        "GET /v1/browser: {}",
        String::from_utf8_lossy(&got.body)
    );
    got.json()["cdp_ws_url"].as_str().expect("ws").to_owned()
}

/// CDP answers at `ws_url` (a dead browser's URL is refused by the new one on its port).
async fn answers(ws_url: &str) {
    use futures_util::StreamExt;
    let (browser, mut handler) = chromiumoxide::Browser::connect(ws_url.to_owned())
        .await
        .unwrap_or_else(|e| panic!("CDP at {ws_url}: {e}"));
    let pump = tokio::spawn(async move { while handler.next().await.is_some() {} });
    browser.version().await.expect("the browser answers");
    pump.abort();
}

async fn start(cfg: DesktopConfig, limits: TakeoverLimits) -> (Arc<Desktop>, Harness) {
    let desktop = Arc::new(
        Desktop::start(cfg, EventBus::new(), CancellationToken::new())
            .await
            .expect("start"),
    );
    let h = Harness::start(desktop.clone() as Arc<dyn Browser>, limits).await;
    (desktop, h)
}

/// Stops the desktop (the harness's servers may still hold it a moment) and checks every
/// child is gone.
async fn stop(desktop: Arc<Desktop>, h: Harness) {
    drop(h);
    let pids = desktop.pids();
    desktop.shutdown().await;
    for pid in [pids.display, pids.chromium] {
        assert!(!pid_alive(pid), "pid {pid} still alive after shutdown");
    }
}

/// Chromium killed, and the agent asks at once, before the supervisor has even seen the
/// exit: the answer is the restarted browser's URL, which its `/json/version` names and
/// which answers CDP. Twice, so that the second restart's backoff is longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_after_chromium_dies_the_browser_endpoint_is_the_new_one() {
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (desktop, h) = start(config(dir.path()), TakeoverLimits::default()).await;
    let mut ws = ws_url_of(&h.agent("GET", "/v1/browser", None).await);
    assert_eq!(
        browser_id(&ws),
        json_version_id(&desktop.cdp().http_url).await
    );

    for round in 1..=2 {
        let before = desktop.pids();
        sigkill(before.chromium);
        let got = h.agent("GET", "/v1/browser", None).await;
        let fresh = ws_url_of(&got);
        assert_ne!(fresh, ws, "round {round}: the dead browser's URL");
        assert_eq!(
            got.json()["cdp_http_url"],
            desktop.cdp().http_url,
            "the port stays"
        );
        assert_eq!(
            browser_id(&fresh),
            json_version_id(&desktop.cdp().http_url).await,
            "round {round}: not the browser running now"
        );
        assert_ne!(desktop.pids().chromium, before.chromium, "round {round}");
        answers(&fresh).await;
        ws = fresh;
    }
    stop(desktop, h).await;
}

/// A restart slower than the wait (its backoff alone is longer): `503 browser_unavailable`
/// after the wait, saying the browser is restarting and to retry, with `Retry-After`; once
/// it is back, the new URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_slower_than_the_wait_is_unavailable_then_the_new_endpoint() {
    if skip(XVNC_BINARIES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = DesktopConfig {
        restart: RestartPolicy {
            initial_backoff: Duration::from_secs(4),
            max_backoff: Duration::from_secs(4),
            max_restarts: 5,
            window: Duration::from_secs(120),
            ..RestartPolicy::default()
        },
        ..config(dir.path())
    };
    let wait = Duration::from_secs(1);
    let limits = TakeoverLimits {
        browser_wait: wait,
        ..TakeoverLimits::default()
    };
    let (desktop, h) = start(cfg, limits).await;
    let ws = ws_url_of(&h.agent("GET", "/v1/browser", None).await);

    sigkill(desktop.pids().chromium);
    let asked = std::time::Instant::now();
    let got = h.agent("GET", "/v1/browser", None).await;
    let took = asked.elapsed();
    assert_eq!(got.status, 503, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.code(), "browser_unavailable");
    let message = got.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("restarting") && message.contains("retry"),
        "{message}"
    );
    assert!(
        got.head.to_ascii_lowercase().contains("retry-after: 1"),
        "no Retry-After: {}",
        got.head
    );
    assert!(
        took >= wait && took < wait + Duration::from_secs(2),
        "answered after {took:?}"
    );

    wait_status(&desktop, RESTARTED, |s| *s == DesktopStatus::Ready).await;
    let fresh = ws_url_of(&h.agent("GET", "/v1/browser", None).await);
    assert_ne!(fresh, ws);
    assert_eq!(
        browser_id(&fresh),
        json_version_id(&desktop.cdp().http_url).await
    );
    answers(&fresh).await;
    stop(desktop, h).await;
}
