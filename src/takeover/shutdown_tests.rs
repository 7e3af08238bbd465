//! Takeovers and the daemon's shutdown: a takeover live at shutdown ends `cancelled` by
//! `shutdown`, and one requested while shutdown runs is refused rather than left live with
//! nothing to end it.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::browser::BoxFuture;
use super::tests::{fixture, manifest, request, start, FakeBrowser};
use super::*;
use crate::desktop::{CdpEndpoint, DesktopStatus};
use crate::platform::events::{EventBus, PlatformEvent};
use crate::relay::VncTarget;

/// A browser whose `bring_to_front` says it has started (`entered`), then waits for
/// `release`: a request held there is in flight.
struct HeldFront {
    inner: Arc<FakeBrowser>,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Browser for HeldFront {
    fn cdp(&self) -> CdpEndpoint {
        self.inner.cdp()
    }

    fn serves(&self, cdp: &CdpEndpoint) -> BoxFuture<'_, bool> {
        self.inner.serves(cdp)
    }

    fn vnc_target(&self) -> VncTarget {
        self.inner.vnc_target()
    }

    fn status(&self) -> watch::Receiver<DesktopStatus> {
        self.inner.status()
    }

    fn bring_to_front(
        &self,
        _login_url: Option<String>,
    ) -> BoxFuture<'_, Result<(), BrowserError>> {
        Box::pin(async move {
            self.entered.notify_one();
            self.release.notified().await;
            Ok(())
        })
    }
}

/// A request still bringing the browser to the front when shutdown runs would be live
/// with nothing left to end it: it is refused, and nothing of it is left (no takeover, no
/// event, so no tokens handed out). Later requests are refused too.
#[tokio::test]
async fn a_request_in_flight_when_shutdown_runs_is_refused_and_leaves_nothing() {
    let browser = Arc::new(HeldFront {
        inner: FakeBrowser::new(),
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let bus = EventBus::new();
    let mut events = bus.subscribe();
    let manager = TakeoverManager::new(
        manifest(true),
        Some(browser.clone() as Arc<dyn Browser>),
        bus,
        "https://sbx.example/".into(),
        TakeoverLimits::default(),
    );
    let in_flight = tokio::spawn({
        let manager = manager.clone();
        async move { manager.request(request(300)).await }
    });
    browser.entered.notified().await;
    manager.shutdown().await;
    browser.release.notify_one();
    let refused = in_flight.await.unwrap().unwrap_err();
    assert!(
        matches!(refused, TakeoverError::ShuttingDown),
        "{refused:?}"
    );
    assert_eq!(
        (refused.status(), refused.code()),
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    );
    assert!(manager.list().is_empty());
    assert!(matches!(
        events.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
    browser.release.notify_one();
    assert!(matches!(
        manager.request(request(300)).await,
        Err(TakeoverError::ShuttingDown)
    ));
}

/// The daemon stopping ends the live takeover `cancelled` by `shutdown`, not `failed`
/// (which says the browser died): the parked wait, the platform's event and the state all
/// say so.
#[tokio::test(start_paused = true)]
async fn shutdown_cancels_the_live_takeover() {
    let mut f = fixture();
    let (id, _, _) = start(&mut f, 300).await;
    let wait = tokio::spawn({
        let (manager, id) = (f.manager.clone(), id.clone());
        async move { manager.wait(&id, std::time::Duration::from_secs(60)).await }
    });
    while f.manager.waiters(&id) == 0 {
        tokio::task::yield_now().await;
    }
    f.manager.shutdown().await;
    let waited = wait.await.unwrap().unwrap();
    assert_eq!(
        (waited.state, waited.outcome, waited.by),
        (State::Ended, Some(Outcome::Cancelled), Some(By::Shutdown))
    );
    let ended = f.events.recv().await.unwrap();
    assert_eq!(
        *ended,
        PlatformEvent::TakeoverEnded {
            takeover_id: id.clone(),
            outcome: "cancelled".into(),
            by: Some("shutdown".into()),
        }
    );
    assert_eq!(f.manager.get(&id).unwrap(), waited);
}
