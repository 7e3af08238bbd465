//! Takeover on the real desktop (Xvnc + Chromium; skipped only when those are missing and
//! `CI` is unset): RFB through the relay, the URL and cookie success conditions, Chromium
//! restarted mid-takeover, and the takeover failed when its restarts run out.

#[path = "support/condition_site.rs"]
mod condition_site;
#[path = "support/desktop.rs"]
mod desktop_support;
#[path = "support/takeover.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use condition_site::{
    login_site, open_tab, still_live_after_three_polls, until_page_at, until_session_cookie,
};
use desktop_support::sigkill;
use grexal_sidecar::desktop::{Desktop, DesktopConfig, DesktopStatus, RestartPolicy};
use grexal_sidecar::platform::events::EventBus;
use grexal_sidecar::takeover::{Browser, TakeoverLimits};
use support::{eventually, next_binary, next_close, request_body, start, ws_connect, Harness};
use tokio_util::sync::CancellationToken;

/// The desktop tests' config, but with one restart allowed: the second within the window
/// gives up, which fails the takeover.
fn desktop_config(dir: &std::path::Path) -> DesktopConfig {
    DesktopConfig {
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            max_restarts: 1,
            window: Duration::from_secs(300),
            ..RestartPolicy::default()
        },
        ..desktop_support::config(dir)
    }
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
    let waited = h.wait(&id, 30).await;
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
    let waited = h.wait(&id, 30).await;
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
    let waited = h.wait(&id, 60).await;
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
    desktop_support::skip(desktop_support::XVNC_BINARIES)
}
