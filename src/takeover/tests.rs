//! State-machine tests with a fake browser and fake relays, on paused tokio time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::browser::BoxFuture;
use super::manager::{RelayRun, TakeoverRequest};
use super::*;
use crate::desktop::{CdpEndpoint, DesktopStatus};
use crate::manifest::{AuthMode, Connection, Delivery, Manifest};
use crate::platform::events::{EventBus, PlatformEvent};
use crate::relay::{Access, VncTarget};

pub(crate) struct FakeBrowser {
    pub(crate) status: watch::Sender<DesktopStatus>,
    /// What `cdp()` says: the supervisor's last published endpoint.
    pub(crate) cdp: Mutex<CdpEndpoint>,
    /// The browser WebSocket URL the running Chromium answers for; `None`: none answers
    /// (it died).
    pub(crate) running: Mutex<Option<String>>,
    /// `serves` never answers (a stopped Chromium).
    pub(crate) hang_serves: AtomicBool,
    pub(crate) fronts: AtomicUsize,
    pub(crate) fail_front: AtomicBool,
    /// `bring_to_front` never answers (a stopped Chromium).
    pub(crate) hang_front: AtomicBool,
}

/// The fake's endpoint for the browser `id`, on the one port restarts keep.
pub(crate) fn endpoint(id: &str) -> CdpEndpoint {
    CdpEndpoint {
        http_url: "http://127.0.0.1:9".into(),
        ws_url: format!("ws://127.0.0.1:9/devtools/browser/{id}"),
    }
}

impl FakeBrowser {
    pub(crate) fn new() -> Arc<Self> {
        let cdp = endpoint("x");
        Arc::new(Self {
            status: watch::channel(DesktopStatus::Ready).0,
            running: Mutex::new(Some(cdp.ws_url.clone())),
            cdp: Mutex::new(cdp),
            hang_serves: AtomicBool::new(false),
            fronts: AtomicUsize::new(0),
            fail_front: AtomicBool::new(false),
            hang_front: AtomicBool::new(false),
        })
    }

    /// The supervisor's side of a restart done: the new endpoint published, then `Ready`.
    pub(crate) fn restarted(&self, id: &str) {
        let cdp = endpoint(id);
        *self.running.lock().unwrap() = Some(cdp.ws_url.clone());
        *self.cdp.lock().unwrap() = cdp;
        self.status.send_replace(DesktopStatus::Ready);
    }
}

impl Browser for FakeBrowser {
    fn cdp(&self) -> CdpEndpoint {
        self.cdp.lock().unwrap().clone()
    }

    fn serves(&self, cdp: &CdpEndpoint) -> BoxFuture<'_, bool> {
        let ws_url = cdp.ws_url.clone();
        Box::pin(async move {
            if self.hang_serves.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            self.running.lock().unwrap().as_deref() == Some(ws_url.as_str())
        })
    }

    fn vnc_target(&self) -> VncTarget {
        VncTarget::Tcp(([127, 0, 0, 1], 9).into())
    }

    fn status(&self) -> watch::Receiver<DesktopStatus> {
        self.status.subscribe()
    }

    fn bring_to_front(
        &self,
        _login_url: Option<String>,
    ) -> BoxFuture<'_, Result<(), BrowserError>> {
        Box::pin(async move {
            self.fronts.fetch_add(1, Ordering::SeqCst);
            if self.hang_front.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.fail_front.load(Ordering::SeqCst) {
                return Err(BrowserError::Other("no page".into()));
            }
            Ok(())
        })
    }
}

pub(crate) fn manifest(desktop: bool) -> Arc<Manifest> {
    Arc::new(Manifest {
        connections: vec![
            Connection {
                id: "github".into(),
                display_name: "GitHub".into(),
                mode: AuthMode::BrowserLogin {
                    login_url: Some("https://github.com/login".into()),
                },
            },
            Connection {
                id: "openai".into(),
                display_name: "OpenAI".into(),
                mode: AuthMode::SecretInput {
                    fields: vec![],
                    delivery: Delivery::default(),
                },
            },
        ],
        sandbox_template: desktop.then(|| "desktop".to_owned()),
    })
}

pub(crate) struct Fixture {
    pub(crate) manager: TakeoverManager,
    pub(crate) browser: Arc<FakeBrowser>,
    pub(crate) events: broadcast::Receiver<Arc<PlatformEvent>>,
}

fn fixture_with(limits: TakeoverLimits) -> Fixture {
    let browser = FakeBrowser::new();
    let bus = EventBus::new();
    let events = bus.subscribe();
    let manager = TakeoverManager::new(
        manifest(true),
        Some(browser.clone() as Arc<dyn Browser>),
        bus,
        "https://sbx.example/".into(),
        limits,
    );
    Fixture {
        manager,
        browser,
        events,
    }
}

pub(crate) fn fixture() -> Fixture {
    fixture_with(TakeoverLimits::default())
}

pub(crate) fn request(timeout_s: u64) -> TakeoverRequest {
    TakeoverRequest {
        connection_id: "github".into(),
        reason: "log in please".into(),
        timeout: Some(Duration::from_secs(timeout_s)),
        success: None,
    }
}

/// Requests a takeover and returns (id, control token, view token) from the event.
pub(crate) async fn start(f: &mut Fixture, timeout_s: u64) -> (String, String, String) {
    let info = f.manager.request(request(timeout_s)).await.unwrap();
    let event = f.events.recv().await.unwrap();
    let PlatformEvent::TakeoverRequested {
        takeover_id,
        viewer_url,
        control_token,
        view_token,
        ..
    } = &*event
    else {
        panic!("unexpected event {:?}", event.name());
    };
    assert_eq!(takeover_id, &info.takeover_id);
    assert_eq!(
        viewer_url,
        &format!("https://sbx.example/takeover/{takeover_id}")
    );
    assert_eq!(info.viewer_url, *viewer_url);
    (
        info.takeover_id,
        control_token.expose().to_owned(),
        view_token.expose().to_owned(),
    )
}

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, line: String) {
    log.lock().unwrap().push(line);
}

/// A relay stand-in: logs its start, waits for stop, takes `stop_delay` to stop, logs the
/// close frame it would send.
fn fake_relay(log: Log, name: &'static str, stop_delay: Duration) -> RelayRun {
    Box::new(move |stop, close| {
        Box::pin(async move {
            push(&log, format!("{name} started"));
            stop.cancelled().await;
            tokio::time::sleep(stop_delay).await;
            let (code, reason) = close.get().cloned().unwrap_or((0, "none".into()));
            push(&log, format!("{name} stopped {code} {reason}"));
        })
    })
}

fn grant(id: &str, access: Access) -> Grant {
    Grant {
        takeover_id: id.to_owned(),
        access,
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_ends_as_timed_out() {
    let mut f = fixture();
    let (id, _, _) = start(&mut f, 5).await;
    let started = tokio::time::Instant::now();
    let snapshot = f.manager.wait(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(snapshot.state, State::Ended);
    assert_eq!(snapshot.outcome, Some(Outcome::TimedOut));
    assert_eq!(snapshot.by, None);
    let event = f.events.recv().await.unwrap();
    assert_eq!(
        *event,
        PlatformEvent::TakeoverEnded {
            takeover_id: id.clone(),
            outcome: "timed_out".into(),
            by: None
        }
    );
    assert_eq!(f.browser.fronts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn wait_returns_live_state_after_max_wait() {
    let mut f = fixture();
    let (id, _, _) = start(&mut f, 300).await;
    let started = tokio::time::Instant::now();
    let snapshot = f.manager.wait(&id, Duration::from_secs(2)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(snapshot.state, State::Live);
    assert_eq!(snapshot.outcome, None);
    assert!(matches!(
        f.manager.wait("nope", Duration::ZERO).await,
        Err(TakeoverError::NotFound)
    ));
}

#[tokio::test(start_paused = true)]
async fn one_live_takeover_at_a_time() {
    let mut f = fixture();
    let (id, _, _) = start(&mut f, 300).await;
    let second = f.manager.request(request(300)).await;
    assert!(matches!(second, Err(TakeoverError::Conflict)), "{second:?}");
    let cancelled = f.manager.cancel(&id, By::Agent).await.unwrap();
    assert_eq!(
        (cancelled.outcome, cancelled.by),
        (Some(Outcome::Cancelled), Some(By::Agent))
    );
    let _ = f.events.recv().await;
    let (again, _, _) = start(&mut f, 300).await;
    assert_ne!(again, id);
    // The old one is remembered as ended; ending it again says so.
    let old = f.manager.complete(&id, By::Platform).await;
    let Err(TakeoverError::Ended(snapshot)) = old else {
        panic!("{old:?}")
    };
    assert_eq!(snapshot.outcome, Some(Outcome::Cancelled));
    assert!(matches!(
        f.manager.complete("unknown", By::Platform).await,
        Err(TakeoverError::NotFound)
    ));
}

#[tokio::test(start_paused = true)]
async fn request_validation() {
    let f = fixture();
    let mut bad = request(300);
    bad.connection_id = "nope".into();
    assert!(matches!(
        f.manager.request(bad).await,
        Err(TakeoverError::ConnectionNotFound)
    ));
    let mut secret = request(300);
    secret.connection_id = "openai".into();
    assert!(matches!(
        f.manager.request(secret).await,
        Err(TakeoverError::InvalidAuthMode {
            mode: "secret_input"
        })
    ));
    assert!(matches!(
        f.manager.request(request(0)).await,
        Err(TakeoverError::BadRequest { .. })
    ));
    assert!(matches!(
        f.manager.request(request(3601)).await,
        Err(TakeoverError::BadRequest { .. })
    ));

    // Without a browser (no desktop was started) it is not a desktop sandbox, whatever
    // the manifest says.
    let no_browser = TakeoverManager::new(
        manifest(true),
        None,
        EventBus::new(),
        "x".into(),
        TakeoverLimits::default(),
    );
    assert!(matches!(
        no_browser.request(request(300)).await,
        Err(TakeoverError::SandboxNotDesktop)
    ));
    assert!(matches!(
        no_browser.browser_endpoint().await,
        Err(TakeoverError::SandboxNotDesktop)
    ));

    f.browser.fail_front.store(true, Ordering::SeqCst);
    assert!(matches!(
        f.manager.request(request(300)).await,
        Err(TakeoverError::BrowserUnavailable(Some(_)))
    ));
    f.browser.fail_front.store(false, Ordering::SeqCst);
    f.browser.status.send_replace(DesktopStatus::Failed {
        reason: "gone".into(),
    });
    assert!(matches!(
        f.manager.request(request(300)).await,
        Err(TakeoverError::BrowserUnavailable(None))
    ));
    assert!(matches!(
        f.manager.browser_endpoint().await,
        Err(TakeoverError::BrowserUnavailable(None))
    ));
    // Nothing was left live by the refusals.
    f.browser.status.send_replace(DesktopStatus::Ready);
    assert!(f.manager.request(request(300)).await.is_ok());
    assert_eq!(
        f.manager.browser_endpoint().await.unwrap().ws_url,
        "ws://127.0.0.1:9/devtools/browser/x"
    );
}

/// A browser that never answers: the request gives up after `BRING_TO_FRONT_TIMEOUT` as
/// `browser_unavailable`, and leaves nothing behind (no live takeover, no event).
#[tokio::test(start_paused = true)]
async fn a_hung_browser_is_unavailable_in_bounded_time() {
    let mut f = fixture();
    f.browser.hang_front.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    // Bounded here too, so that a request that never answers fails this test.
    let got = tokio::time::timeout(BRING_TO_FRONT_TIMEOUT * 2, f.manager.request(request(300)))
        .await
        .expect("the request answered");
    assert!(
        matches!(
            got,
            Err(TakeoverError::BrowserUnavailable(Some(
                BrowserError::TimedOut { .. }
            )))
        ),
        "{got:?}"
    );
    assert_eq!(started.elapsed(), BRING_TO_FRONT_TIMEOUT);
    assert!(f.manager.list().is_empty());
    assert!(matches!(
        f.events.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
    f.browser.hang_front.store(false, Ordering::SeqCst);
    start(&mut f, 300).await;
}

/// `--desktop` starts the desktop for a manifest that names no desktop template: the
/// browser it was given is served, not refused as `sandbox_not_desktop`.
#[tokio::test(start_paused = true)]
async fn a_desktop_started_by_flag_serves_the_browser_and_takeovers() {
    let browser = FakeBrowser::new();
    let manager = TakeoverManager::new(
        manifest(false),
        Some(browser.clone() as Arc<dyn Browser>),
        EventBus::new(),
        "x".into(),
        TakeoverLimits::default(),
    );
    assert_eq!(
        manager.browser_endpoint().await.expect("browser").ws_url,
        "ws://127.0.0.1:9/devtools/browser/x"
    );
    let info = manager.request(request(300)).await.expect("takeover");
    assert_eq!(info.state, State::Live);
}

#[tokio::test(start_paused = true)]
async fn tokens_are_valid_only_while_live() {
    let mut f = fixture();
    let (id, control, view) = start(&mut f, 300).await;
    assert_eq!(
        f.manager.authorize(&id, &control).unwrap().access,
        Access::Control
    );
    assert_eq!(
        f.manager.authorize(&id, &view).unwrap().access,
        Access::ViewOnly
    );
    let session = f
        .manager
        .session(&f.manager.authorize(&id, &view).unwrap())
        .unwrap();
    assert_eq!(session.access, AccessName::View);
    assert_eq!(session.display_name, "GitHub");
    assert_eq!(
        session.login_url.as_deref(),
        Some("https://github.com/login")
    );
    assert!(matches!(
        f.manager.authorize(&id, "wrong"),
        Err(TakeoverError::Unauthorized)
    ));
    assert!(matches!(
        f.manager.authorize(&id, ""),
        Err(TakeoverError::Unauthorized)
    ));
    assert!(matches!(
        f.manager.authorize(&id, "a=b"),
        Err(TakeoverError::Unauthorized)
    ));
    assert!(matches!(
        f.manager.authorize("other", &control),
        Err(TakeoverError::Unauthorized)
    ));
    // No token in anything the agent or a log could see.
    let info = f.manager.get(&id).unwrap();
    let shown = format!(
        "{info:?} {:?} {}",
        f.manager,
        serde_json::to_string(&info).unwrap()
    );
    assert!(!shown.contains(&control) && !shown.contains(&view));

    f.manager.complete(&id, By::User).await.unwrap();
    let _ended = f.events.recv().await.unwrap();
    for token in [&control, &view] {
        let Err(TakeoverError::Ended(snapshot)) = f.manager.authorize(&id, token) else {
            panic!()
        };
        assert_eq!(snapshot.outcome, Some(Outcome::Completed));
    }
    assert!(matches!(
        f.manager.authorize(&id, "wrong"),
        Err(TakeoverError::Unauthorized)
    ));
    // A new takeover's tokens are not the old one's.
    let (id2, control2, _) = start(&mut f, 300).await;
    assert!(matches!(
        f.manager.authorize(&id2, &control),
        Err(TakeoverError::Unauthorized)
    ));
    assert!(f.manager.authorize(&id2, &control2).is_ok());
}

#[tokio::test(start_paused = true)]
async fn relays_are_stopped_before_waiters_wake() {
    let mut f = fixture();
    let (id, _, _) = start(&mut f, 300).await;
    let log: Log = Arc::default();
    let slow = Duration::from_millis(700);
    f.manager
        .attach(
            grant(&id, Access::Control),
            fake_relay(log.clone(), "control", slow),
        )
        .unwrap();
    f.manager
        .attach(
            grant(&id, Access::ViewOnly),
            fake_relay(log.clone(), "view", slow * 2),
        )
        .unwrap();
    tokio::task::yield_now().await;

    let waiter = {
        let (manager, id, log) = (f.manager.clone(), id.clone(), log.clone());
        tokio::spawn(async move {
            let snapshot = manager.wait(&id, Duration::from_secs(60)).await.unwrap();
            push(&log, format!("wait returned {:?}", snapshot.outcome));
        })
    };
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let ended = f.manager.complete(&id, By::User).await.unwrap();
    assert_eq!(
        started.elapsed(),
        slow * 2,
        "complete returns once the slowest relay stopped"
    );
    assert_eq!(
        (ended.outcome, ended.by),
        (Some(Outcome::Completed), Some(By::User))
    );
    waiter.await.unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "control started",
            "view started",
            "control stopped 4000 completed",
            "view stopped 4000 completed",
            "wait returned Some(Completed)",
        ]
    );
    // The event was out before the waiter woke.
    assert!(
        matches!(&*f.events.try_recv().unwrap(), PlatformEvent::TakeoverEnded { outcome, .. } if outcome == "completed")
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_also_stops_relays_first() {
    let mut f = fixture();
    let (id, _, _) = start(&mut f, 3).await;
    let log: Log = Arc::default();
    f.manager
        .attach(
            grant(&id, Access::Control),
            fake_relay(log.clone(), "control", Duration::from_secs(1)),
        )
        .unwrap();
    let snapshot = f.manager.wait(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(snapshot.outcome, Some(Outcome::TimedOut));
    assert_eq!(
        log.lock().unwrap().last().unwrap(),
        "control stopped 4000 timed_out"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_controller_replaces_the_old_one() {
    let mut f = fixture();
    let (id, _, _) = start(&mut f, 300).await;
    let log: Log = Arc::default();
    f.manager
        .attach(
            grant(&id, Access::Control),
            fake_relay(log.clone(), "first", Duration::from_millis(300)),
        )
        .unwrap();
    tokio::task::yield_now().await;
    f.manager
        .attach(
            grant(&id, Access::Control),
            fake_relay(log.clone(), "second", Duration::ZERO),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        log.lock().unwrap().clone(),
        [
            "first started",
            "first stopped 4001 replaced",
            "second started"
        ],
        "the old controller is gone before the new one starts"
    );
    f.manager.cancel(&id, By::Platform).await.unwrap();
    assert_eq!(
        log.lock().unwrap().last().unwrap(),
        "second stopped 4000 cancelled"
    );
    // Attaching to an ended takeover is refused with its outcome.
    let refused = f.manager.attach(
        grant(&id, Access::Control),
        fake_relay(log.clone(), "late", Duration::ZERO),
    );
    assert_eq!(refused.err(), Some((CLOSE_ENDED, "cancelled".to_owned())));
}

#[tokio::test(start_paused = true)]
async fn view_connections_are_capped() {
    let mut f = fixture_with(TakeoverLimits {
        max_viewers: 2,
        ..TakeoverLimits::default()
    });
    let (id, _, view) = start(&mut f, 300).await;
    let log: Log = Arc::default();
    for _ in 0..2 {
        f.manager
            .attach(
                grant(&id, Access::ViewOnly),
                fake_relay(log.clone(), "view", Duration::ZERO),
            )
            .unwrap();
    }
    let g = f.manager.authorize(&id, &view).unwrap();
    assert!(matches!(
        f.manager.check_viewer_capacity(&g),
        Err(TakeoverError::TooManyViewers)
    ));
    let third = f
        .manager
        .attach(g, fake_relay(log.clone(), "view", Duration::ZERO));
    assert_eq!(third.err().map(|e| e.0), Some(1013));
    // The controller is not counted.
    f.manager
        .attach(
            grant(&id, Access::Control),
            fake_relay(log, "control", Duration::ZERO),
        )
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn parked_waits_are_capped() {
    let mut f = fixture_with(TakeoverLimits {
        max_waits: 2,
        ..TakeoverLimits::default()
    });
    let (id, _, _) = start(&mut f, 300).await;
    let park = |f: &Fixture| {
        let (manager, id) = (f.manager.clone(), id.clone());
        tokio::spawn(async move { manager.wait(&id, Duration::from_secs(60)).await })
    };
    let parked = |f: &Fixture, n: usize| {
        let (manager, id) = (f.manager.clone(), id.clone());
        async move {
            for _ in 0..1000 {
                if manager.waiters(&id) == n {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!("{} waits parked, not {n}", manager.waiters(&id));
        }
    };
    let first = park(&f);
    let second = park(&f);
    parked(&f, 2).await;
    let third = f.manager.wait(&id, Duration::from_secs(60)).await;
    assert!(
        matches!(third, Err(TakeoverError::TooManyWaits)),
        "{third:?}"
    );
    // A wait that does not park still answers.
    let now = f.manager.wait(&id, Duration::ZERO).await.unwrap();
    assert_eq!(now.state, State::Live);
    // A wait that goes away (its client gone) gives its place back.
    first.abort();
    let _ = first.await;
    let replacement = park(&f);
    parked(&f, 2).await;
    f.manager.cancel(&id, By::Agent).await.unwrap();
    for waited in [second, replacement] {
        let snapshot = waited.await.unwrap().unwrap();
        assert_eq!(snapshot.outcome, Some(Outcome::Cancelled));
    }
    // Ended: answered at once, uncounted.
    let ended = f.manager.wait(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(ended.outcome, Some(Outcome::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn browser_failure_ends_the_takeover_but_a_restart_does_not() {
    let mut f = fixture();
    let (id, _, _) = start(&mut f, 300).await;
    f.browser.status.send_replace(DesktopStatus::Restarting {
        child: "chromium".into(),
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.browser.status.send_replace(DesktopStatus::Ready);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.manager.get(&id).unwrap().state, State::Live);
    f.browser.status.send_replace(DesktopStatus::Failed {
        reason: "too many restarts".into(),
    });
    let snapshot = f.manager.wait(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        (snapshot.outcome, snapshot.by),
        (Some(Outcome::Failed), None)
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_endings_agree_on_one_outcome() {
    let mut f = fixture();
    let (id, _, _) = start(&mut f, 300).await;
    let log: Log = Arc::default();
    f.manager
        .attach(
            grant(&id, Access::Control),
            fake_relay(log, "control", Duration::from_millis(200)),
        )
        .unwrap();
    tokio::task::yield_now().await;
    let (a, b) = tokio::join!(
        f.manager.complete(&id, By::User),
        f.manager.cancel(&id, By::Agent)
    );
    let a = a.unwrap();
    let Err(TakeoverError::Ended(b)) = b else {
        panic!("{b:?}")
    };
    assert_eq!(a, *b);
    assert_eq!(a.outcome, Some(Outcome::Completed));
}

/// An HTTP client that hangs up while its `complete` is stopping the relays drops the
/// handler's future; the ending runs on regardless, in the same order: the relay is
/// stopped, then the takeover ends and the waiters wake.
#[tokio::test(start_paused = true)]
async fn an_ending_finishes_when_its_caller_goes_away() {
    let mut f = fixture();
    let (id, _, _) = start(&mut f, 300).await;
    let log: Log = Arc::default();
    let slow = Duration::from_millis(100);
    f.manager
        .attach(
            grant(&id, Access::Control),
            fake_relay(log.clone(), "control", slow),
        )
        .unwrap();
    tokio::task::yield_now().await;

    let started = tokio::time::Instant::now();
    let dropped =
        tokio::time::timeout(Duration::from_millis(10), f.manager.complete(&id, By::User)).await;
    assert!(dropped.is_err(), "the caller went away mid-ending");
    let snapshot = f.manager.wait(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        (snapshot.state, snapshot.outcome, snapshot.by),
        (State::Ended, Some(Outcome::Completed), Some(By::User))
    );
    assert_eq!(
        started.elapsed(),
        slow,
        "the ending finished as soon as the relay had stopped"
    );
    assert_eq!(
        *log.lock().unwrap(),
        ["control started", "control stopped 4000 completed"]
    );
    assert_eq!(
        *f.events.try_recv().unwrap(),
        PlatformEvent::TakeoverEnded {
            takeover_id: id.clone(),
            outcome: "completed".into(),
            by: Some("user".into())
        }
    );
    // Nothing is left wedged: a later ending answers at once, a new takeover can start.
    let Err(TakeoverError::Ended(again)) = f.manager.cancel(&id, By::Agent).await else {
        panic!("the takeover had ended")
    };
    assert_eq!(*again, snapshot);
    assert_eq!(started.elapsed(), slow);
    f.manager.request(request(300)).await.unwrap();
}
