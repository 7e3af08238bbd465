//! `GET /v1/browser` through a browser restart, with the fake browser on paused time: the
//! endpoint given is always one the running browser serves, never the dead one's; the
//! wait is bounded by `TakeoverLimits::browser_wait`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::tests::{endpoint, fixture};
use super::*;
use crate::desktop::DesktopStatus;

/// Chromium is restarting (the supervisor said so): the call waits for the restart and
/// gives the new browser's endpoint.
#[tokio::test(start_paused = true)]
async fn a_restarting_browser_is_waited_for_and_the_new_endpoint_given() {
    let f = fixture();
    *f.browser.running.lock().unwrap() = None;
    f.browser.status.send_replace(DesktopStatus::Restarting {
        child: "chromium".into(),
    });
    let started = Instant::now();
    let manager = f.manager.clone();
    let call = tokio::spawn(async move { manager.browser_endpoint().await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!call.is_finished(), "answered while the browser restarted");
    f.browser.restarted("y");
    let got = call.await.expect("join").expect("the new endpoint");
    assert_eq!(got, endpoint("y"));
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
}

/// Chromium has just died and the supervisor has not seen it yet: the desktop still says
/// `Ready` with the dead browser's endpoint. That endpoint is not given; the call waits
/// through the restart for the new one.
#[tokio::test(start_paused = true)]
async fn a_dead_browser_not_yet_seen_by_the_supervisor_gives_no_stale_endpoint() {
    let f = fixture();
    *f.browser.running.lock().unwrap() = None;
    let manager = f.manager.clone();
    let call = tokio::spawn(async move { manager.browser_endpoint().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !call.is_finished(),
        "answered with the dead browser's endpoint"
    );
    f.browser.status.send_replace(DesktopStatus::Restarting {
        child: "chromium".into(),
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!call.is_finished());
    f.browser.restarted("y");
    assert_eq!(
        call.await.expect("join").expect("the new endpoint"),
        endpoint("y")
    );
}

/// A restart that takes longer than the wait, and a hung browser whose check never
/// answers: 503 `browser_unavailable`, saying it is restarting, after exactly the wait.
#[tokio::test(start_paused = true)]
async fn a_browser_not_back_in_time_is_unavailable_after_the_wait() {
    let f = fixture();
    f.browser.status.send_replace(DesktopStatus::Restarting {
        child: "chromium".into(),
    });
    let started = Instant::now();
    let got = f.manager.browser_endpoint().await;
    assert!(
        matches!(got, Err(TakeoverError::BrowserRestarting { after }) if after == BROWSER_WAIT),
        "{got:?}"
    );
    assert_eq!(started.elapsed(), BROWSER_WAIT);
    let error = got.unwrap_err();
    assert_eq!(
        (error.status().as_u16(), error.code()),
        (503, "browser_unavailable")
    );
    assert!(error.public_message().contains("restarting"));
    assert!(error.public_message().contains("retry"));

    f.browser.status.send_replace(DesktopStatus::Ready);
    f.browser.hang_serves.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let got = f.manager.browser_endpoint().await;
    assert!(
        matches!(got, Err(TakeoverError::BrowserRestarting { .. })),
        "{got:?}"
    );
    assert_eq!(started.elapsed(), BROWSER_WAIT);
}

/// A desktop that gives up while the call waits: `browser_unavailable` at once, not after
/// the wait.
#[tokio::test(start_paused = true)]
async fn a_desktop_failing_during_the_wait_is_unavailable_at_once() {
    let f = fixture();
    f.browser.status.send_replace(DesktopStatus::Restarting {
        child: "chromium".into(),
    });
    let manager = f.manager.clone();
    let call = tokio::spawn(async move { manager.browser_endpoint().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    f.browser.status.send_replace(DesktopStatus::Failed {
        reason: "gone".into(),
    });
    let got = call.await.expect("join");
    assert!(
        matches!(got, Err(TakeoverError::BrowserUnavailable(None))),
        "{got:?}"
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
}

/// The wait stays under the agent API's request deadline (half of it), so the agent is
/// told to retry rather than `request_timeout`.
#[test]
fn the_wait_is_under_the_request_deadline() {
    for (deadline_s, want_ms) in [(10, 5000), (3600, 5000), (8, 4000), (1, 500)] {
        assert_eq!(
            browser_wait_within(Duration::from_secs(deadline_s)),
            Duration::from_millis(want_ms),
            "deadline {deadline_s} s"
        );
    }
}
