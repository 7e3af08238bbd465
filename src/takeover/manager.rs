//! The takeover state machine: one owner, at most one live takeover.
//!
//! State lives behind one short `std` mutex that is never held across an `.await`;
//! everything slow (bringing the browser to the front, stopping relays, CDP polls) runs
//! outside it. Per takeover, a `watch` channel carries its ending to every waiter.
//!
//! # The order of an ending
//!
//! Whatever ends a takeover (the user's button, the platform, the success condition, the
//! deadline, the agent, the browser failing, shutdown), [`TakeoverManager::end`] does:
//!
//! 1. under the lock: flip the phase to `Ending` — from here `authorize` refuses both
//!    tokens and no new relay can attach — take every relay slot out, and cancel the
//!    takeover's timer and watchers;
//! 2. stop every relay (close frame `4000` + outcome) and **await** each relay task: once
//!    a relay task has ended, its WebSocket and VNC socket are closed and not one more
//!    byte flows (the guarantee of `crate::relay`). All are stopped at once, and each gives
//!    a frame it is still writing `RelayLimits::stop_timeout` (10 ms), so a viewer that does
//!    not read holds this step for no longer than that;
//! 3. under the lock: mark the takeover ended (it moves to the remembered list);
//! 4. publish `TakeoverEnded`;
//! 5. record the ending in the takeover's `done` channel, which wakes the waiters (`wait`,
//!    the agent's long-poll).
//!
//! Steps 3 to 5 are one critical section: nobody sees the event, or the takeover among the
//! ended ones, and then reads its state as still live (lock order: the registry, then a
//! record's `done`).
//!
//! Steps 2 to 5 run on a task of their own, which `end` awaits: a caller that goes away
//! mid-ending (an HTTP client hanging up drops its handler) cannot leave the takeover
//! half ended, with nothing left to finish it.
//!
//! So "on any ending, the viewer's stream is cut and its input stops before the agent's
//! wait returns" holds by construction, and a test checks it with a relay that takes its
//! time to stop.
//!
//! # Telling the platform, late subscribers included
//!
//! `TakeoverRequested` is published under the registry lock, in the same critical section
//! that makes the takeover live, and `TakeoverEnded` in the one that takes it out of the
//! live slot (step 3 above). [`TakeoverManager::subscribe`] subscribes to the events under
//! that lock and looks at the live slot there too: a subscriber that arrives while a
//! takeover is live gets one `TakeoverRequested` for it first (with a pair of tokens made
//! for it, since the plaintext of earlier ones is never kept), and one that arrives
//! before or after learns it from the stream alone. Either way exactly once.
//!
//! The viewer's side (tokens checked, the page's session, relays attached and replaced)
//! is in `viewers`.

mod viewers;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::condition::{self, SuccessCondition};
use super::token::{self, TokenSet};
use super::{
    Browser, By, Outcome, State, TakeoverError, TakeoverInfo, TakeoverLimits, TakeoverSnapshot,
    CLOSE_ENDED,
};
use crate::desktop::{CdpEndpoint, DesktopStatus};
use crate::manifest::{AuthMode, Manifest};
use crate::platform::events::{EventBus, EventToken, PlatformEvent};
use crate::secret::SecretString;

pub use viewers::Grant;
// The state-machine tests hand `attach` relays of their own.
#[cfg(test)]
pub(crate) use viewers::RelayRun;
use viewers::RelaySlot;

/// A validated takeover request (the routes parse and bound the wire form).
#[derive(Debug, Clone)]
pub struct TakeoverRequest {
    pub connection_id: String,
    pub reason: String,
    /// `None`: the default timeout.
    pub timeout: Option<Duration>,
    pub success: Option<SuccessCondition>,
}

type Ending = (Outcome, Option<By>);

/// The most `request` waits for the browser to come to the front. A hung Chromium (stopped,
/// or busy for good) would otherwise hold the agent's request forever. Below the agent
/// API's default 10 s request deadline, so the agent learns `browser_unavailable` rather
/// than a bare `request_timeout`; a healthy browser takes well under a second (up to
/// `desktop::cdp`'s 2 s wait for a page session when attaching is slow).
pub const BRING_TO_FRONT_TIMEOUT: Duration = Duration::from_secs(8);

/// `browser_endpoint`: how long one check that the browser serves its endpoint may take
/// (a healthy one answers `/json/version` in a millisecond or two), and the pause before
/// the next while the desktop says it is ready.
const CDP_CHECK: Duration = Duration::from_secs(1);
const CDP_RECHECK: Duration = Duration::from_millis(100);

/// The immutable facts of one takeover, shared by the live entry, the remembered list
/// and the waiters.
#[derive(Debug)]
struct Record {
    id: String,
    connection_id: String,
    display_name: String,
    reason: String,
    login_url: Option<String>,
    expires_at: u64,
    /// Every token pair issued for this takeover (hashes only). Lock order: the registry,
    /// then this.
    hashes: Mutex<TokenSet>,
    /// `Some` once the takeover has ended (step 5 of the ending order).
    done: watch::Sender<Option<Ending>>,
}

impl Record {
    fn snapshot(&self, ending: Option<Ending>) -> TakeoverSnapshot {
        TakeoverSnapshot {
            takeover_id: self.id.clone(),
            state: if ending.is_some() {
                State::Ended
            } else {
                State::Live
            },
            connection_id: self.connection_id.clone(),
            expires_at: self.expires_at,
            outcome: ending.map(|e| e.0),
            by: ending.and_then(|e| e.1),
        }
    }

    fn ended(&self) -> Option<Ending> {
        *self.done.borrow()
    }

    fn hashes(&self) -> MutexGuard<'_, TokenSet> {
        // Like the registry's: every critical section is one push or one scan.
        self.hashes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Phase {
    Live,
    Ending(Ending),
}

struct Live {
    record: Arc<Record>,
    phase: Phase,
    /// Cancels the timer and the watchers.
    tasks: CancellationToken,
    control: Option<RelaySlot>,
    viewers: Vec<RelaySlot>,
}

#[derive(Default)]
struct Registry {
    live: Option<Live>,
    /// Ended takeovers, oldest first, at most `limits.remembered`.
    ended: VecDeque<Arc<Record>>,
    next_relay: u64,
    /// Set by `shutdown`: no takeover starts after it (`ShuttingDown`).
    closed: bool,
}

impl Registry {
    fn find(&self, id: &str) -> Option<&Arc<Record>> {
        match &self.live {
            Some(live) if live.record.id == id => Some(&live.record),
            _ => self.ended.iter().find(|r| r.id == id),
        }
    }
}

struct Shared {
    manifest: Arc<Manifest>,
    browser: Option<Arc<dyn Browser>>,
    events: EventBus,
    public_url: String,
    limits: TakeoverLimits,
    registry: Mutex<Registry>,
    /// One permit per parked `wait` (`limits.max_waits`).
    waits: tokio::sync::Semaphore,
}

/// The one owner of takeover state. Cheap to clone (a handle).
#[derive(Clone)]
pub struct TakeoverManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TakeoverManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TakeoverManager")
            .field("public_url", &self.shared.public_url)
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TakeoverManager {
    /// `browser`: `None` when the sandbox has no desktop (then `GET /v1/browser` and
    /// takeovers answer `sandbox_not_desktop`). `public_url`: the base of
    /// viewer URLs (the control endpoint's public address), without a trailing slash.
    pub fn new(
        manifest: Arc<Manifest>,
        browser: Option<Arc<dyn Browser>>,
        events: EventBus,
        public_url: String,
        limits: TakeoverLimits,
    ) -> Self {
        let public_url = public_url.trim_end_matches('/').to_owned();
        let waits = tokio::sync::Semaphore::new(limits.max_waits);
        Self {
            shared: Arc::new(Shared {
                manifest,
                browser,
                events,
                public_url,
                limits,
                registry: Mutex::new(Registry::default()),
                waits,
            }),
        }
    }

    pub fn limits(&self) -> &TakeoverLimits {
        &self.shared.limits
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock leaves consistent data (every critical section
        // is a few assignments), so a poisoned lock is used as is.
        self.shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The desktop's browser. Whether the sandbox is a desktop one was decided once, by
    /// whoever started (or did not start) the desktop (`daemon::boot`: the manifest's
    /// `sandbox_template` or `--desktop`): a browser given here is served, whatever the
    /// manifest says.
    fn desktop(&self) -> Result<&Arc<dyn Browser>, TakeoverError> {
        self.shared
            .browser
            .as_ref()
            .ok_or(TakeoverError::SandboxNotDesktop)
    }

    /// The CDP endpoint, for `GET /v1/browser`: only one the running browser serves. While
    /// Chromium restarts (the desktop not `Ready`, or `Ready` with the endpoint of a browser
    /// that has just died, which the supervisor has not seen yet) it waits, at most
    /// `limits.browser_wait`, for the new one: a stale `cdp_ws_url` (the port stays, the
    /// `/devtools/browser/<id>` path does not) would only fail in the agent's hands. Not
    /// back in time, or hung: `BrowserRestarting`, which tells the agent to retry.
    pub async fn browser_endpoint(&self) -> Result<CdpEndpoint, TakeoverError> {
        let browser = self.desktop()?.clone();
        let wait = self.shared.limits.browser_wait;
        let deadline = tokio::time::Instant::now() + wait;
        let mut status = browser.status();
        loop {
            let ready = match &*status.borrow_and_update() {
                DesktopStatus::Failed { .. } => {
                    return Err(TakeoverError::BrowserUnavailable(None))
                }
                DesktopStatus::Ready => true,
                DesktopStatus::Starting | DesktopStatus::Restarting { .. } => false,
            };
            if ready {
                let cdp = browser.cdp();
                let check = deadline.min(tokio::time::Instant::now() + CDP_CHECK);
                if let Ok(true) = tokio::time::timeout_at(check, browser.serves(&cdp)).await {
                    return Ok(cdp);
                }
            }
            // Until the status moves (Restarting, then Ready with the new endpoint); when
            // it is Ready, also after a short pause, should the check have failed by chance.
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    debug!(wait_ms = wait.as_millis() as u64, "browser endpoint: not back in time");
                    return Err(TakeoverError::BrowserRestarting { after: wait });
                }
                changed = status.changed() => {
                    if changed.is_err() {
                        // The desktop is gone (the daemon is stopping).
                        return Err(TakeoverError::BrowserUnavailable(None));
                    }
                }
                _ = tokio::time::sleep(CDP_RECHECK), if ready => {}
            }
        }
    }

    /// Starts a takeover: validates, brings the browser to the front, starts the deadline
    /// and watchers, and publishes `TakeoverRequested` (the only place the tokens go).
    pub async fn request(&self, request: TakeoverRequest) -> Result<TakeoverInfo, TakeoverError> {
        let limits = &self.shared.limits;
        let timeout = request.timeout.unwrap_or(limits.default_timeout);
        if timeout < Duration::from_secs(1) || timeout > limits.max_timeout {
            return Err(TakeoverError::BadRequest {
                reason: "timeout_seconds",
            });
        }
        let connection = self
            .shared
            .manifest
            .connection(&request.connection_id)
            .ok_or(TakeoverError::ConnectionNotFound)?;
        let AuthMode::BrowserLogin { login_url } = &connection.mode else {
            return Err(TakeoverError::InvalidAuthMode {
                mode: connection.mode.name(),
            });
        };
        let browser = self.desktop()?.clone();
        if self.registry().live.is_some() {
            return Err(TakeoverError::Conflict);
        }
        if matches!(*browser.status().borrow(), DesktopStatus::Failed { .. }) {
            return Err(TakeoverError::BrowserUnavailable(None));
        }
        // Two concurrent requests may both get here; only one wins the insert below, and
        // bringing the browser to the front twice is harmless. Nothing exists yet (no
        // record, no tokens, no event): a failure or timeout here leaves nothing behind,
        // and the abandoned call's CDP connection closes as its future is dropped.
        match tokio::time::timeout(
            BRING_TO_FRONT_TIMEOUT,
            browser.bring_to_front(login_url.clone()),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(TakeoverError::BrowserUnavailable(Some(e))),
            Err(_) => {
                return Err(TakeoverError::BrowserUnavailable(Some(
                    super::BrowserError::TimedOut {
                        after: BRING_TO_FRONT_TIMEOUT,
                    },
                )))
            }
        }

        let id = token::new_id();
        let (control_token, view_token, pair) = token::new_pair();
        let expires_at = unix_now() + timeout.as_secs();
        let record = Arc::new(Record {
            id: id.clone(),
            connection_id: connection.id.clone(),
            display_name: connection.display_name.clone(),
            reason: request.reason,
            login_url: login_url.clone(),
            expires_at,
            hashes: Mutex::new(TokenSet::new(pair, limits.max_token_pairs)),
            done: watch::channel(None).0,
        });
        let tasks = CancellationToken::new();
        {
            let mut registry = self.registry();
            // A request that was in flight when `shutdown` ran (bringing the browser to
            // the front, or read in the servers' grace) would otherwise be live with
            // nothing left to end it. Refused before anything is published or kept.
            if registry.closed {
                info!(connection_id = %record.connection_id, "takeover refused: shutting down");
                return Err(TakeoverError::ShuttingDown);
            }
            if registry.live.is_some() {
                return Err(TakeoverError::Conflict);
            }
            registry.live = Some(Live {
                record: record.clone(),
                phase: Phase::Live,
                tasks: tasks.clone(),
                control: None,
                viewers: Vec::new(),
            });
            // Under the lock that made it live: see "Telling the platform" above.
            self.shared
                .events
                .publish(self.requested_event(&record, &control_token, &view_token));
        }
        info!(
            takeover_id = %id,
            connection_id = %record.connection_id,
            timeout_s = timeout.as_secs(),
            condition = request.success.is_some(),
            "takeover requested"
        );
        self.spawn_watchers(&record, timeout, request.success, browser, &tasks);
        Ok(TakeoverInfo {
            takeover_id: id,
            state: State::Live,
            connection_id: record.connection_id.clone(),
            expires_at,
            viewer_url: self.viewer_url(&record.id),
        })
    }

    fn viewer_url(&self, id: &str) -> String {
        format!("{}/takeover/{}", self.shared.public_url, id)
    }

    /// The event that hands a token pair to the platform (the only place tokens go).
    fn requested_event(
        &self,
        record: &Record,
        control_token: &SecretString,
        view_token: &SecretString,
    ) -> PlatformEvent {
        PlatformEvent::TakeoverRequested {
            takeover_id: record.id.clone(),
            connection_id: record.connection_id.clone(),
            display_name: record.display_name.clone(),
            reason: record.reason.clone(),
            login_url: record.login_url.clone(),
            viewer_url: self.viewer_url(&record.id),
            control_token: EventToken::new(control_token),
            view_token: EventToken::new(view_token),
            expires_at: record.expires_at,
        }
    }

    /// Subscribes to `events` (the bus this manager publishes to) and, under the same lock
    /// as every takeover event, looks at the live takeover: if one is live, also returns a
    /// `TakeoverRequested` for it, with a token pair made for this subscriber, to deliver
    /// before anything from the receiver. So a subscriber learns of each takeover exactly
    /// once, whenever it arrives. A takeover that is ending gets no new pair (its tokens
    /// are refused already); the subscriber sees its `TakeoverEnded`.
    pub fn subscribe(
        &self,
        events: &EventBus,
    ) -> (
        tokio::sync::broadcast::Receiver<Arc<PlatformEvent>>,
        Option<PlatformEvent>,
    ) {
        debug_assert!(
            events.same_bus(&self.shared.events),
            "the manager publishes to another bus"
        );
        let registry = self.registry();
        let receiver = events.subscribe();
        let live = match &registry.live {
            Some(live) if matches!(live.phase, Phase::Live) => &live.record,
            _ => return (receiver, None),
        };
        let (control_token, view_token, pair) = token::new_pair();
        let (retired, pairs) = {
            let mut hashes = live.hashes();
            (hashes.issue(pair), hashes.len())
        };
        if retired {
            warn!(takeover_id = %live.id, pairs, "token pairs at their limit: the oldest replayed pair is retired");
        }
        info!(takeover_id = %live.id, pairs, "live takeover replayed to a new event subscriber");
        let event = self.requested_event(live, &control_token, &view_token);
        (receiver, Some(event))
    }

    /// The deadline, the browser-status watch and (if given) the success condition.
    fn spawn_watchers(
        &self,
        record: &Arc<Record>,
        timeout: Duration,
        success: Option<SuccessCondition>,
        browser: Arc<dyn Browser>,
        tasks: &CancellationToken,
    ) {
        let span = tracing::info_span!("takeover", takeover_id = %record.id);
        let deadline = tokio::time::Instant::now() + timeout;
        let (me, id, stop) = (self.clone(), record.id.clone(), tasks.clone());
        tokio::spawn(
            async move {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(deadline) => {}
                }
                let _ = me.end(&id, Outcome::TimedOut, None).await;
            }
            .instrument(span.clone()),
        );

        let (me, id, stop) = (self.clone(), record.id.clone(), tasks.clone());
        let mut status = browser.status();
        tokio::spawn(
            async move {
                loop {
                    let failed = match &*status.borrow_and_update() {
                        DesktopStatus::Failed { .. } => true,
                        // Restarting: the user's view drops and reconnects; keep going.
                        DesktopStatus::Ready
                        | DesktopStatus::Starting
                        | DesktopStatus::Restarting { .. } => false,
                    };
                    if failed {
                        warn!("browser failed during takeover");
                        break;
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        changed = status.changed() => if changed.is_err() {
                            // The desktop is gone (daemon shutting down).
                            break;
                        }
                    }
                }
                let _ = me.end(&id, Outcome::Failed, None).await;
            }
            .instrument(span.clone()),
        );

        if let Some(condition) = success {
            let (me, id, stop) = (self.clone(), record.id.clone(), tasks.clone());
            let poll = self.shared.limits.condition_poll;
            tokio::spawn(
                async move {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = condition::wait_until_met(&condition, browser.as_ref(), poll) => {}
                    }
                    info!("success condition met");
                    let _ = me.end(&id, Outcome::Completed, Some(By::Condition)).await;
                }
                .instrument(span),
            );
        }
    }

    /// The live takeover, if any, then the remembered ended ones, newest first.
    pub fn list(&self) -> Vec<TakeoverSnapshot> {
        let registry = self.registry();
        let live = registry.live.iter().map(|l| &l.record);
        live.chain(registry.ended.iter().rev())
            .map(|record| record.snapshot(record.ended()))
            .collect()
    }

    /// The current state, without waiting.
    pub fn get(&self, id: &str) -> Result<TakeoverSnapshot, TakeoverError> {
        let registry = self.registry();
        let record = registry.find(id).ok_or(TakeoverError::NotFound)?;
        Ok(record.snapshot(record.ended()))
    }

    /// Returns as soon as the takeover has ended (after its relays are stopped), or after
    /// `max_wait` with its current (live) state. At most `limits.max_waits` are parked at
    /// once (`TooManyWaits`); one that need not park (ended, or a `max_wait` of zero)
    /// answers at once whatever the count.
    pub async fn wait(
        &self,
        id: &str,
        max_wait: Duration,
    ) -> Result<TakeoverSnapshot, TakeoverError> {
        let record = self
            .registry()
            .find(id)
            .cloned()
            .ok_or(TakeoverError::NotFound)?;
        if record.ended().is_some() || max_wait.is_zero() {
            return Ok(record.snapshot(record.ended()));
        }
        // Held until this future ends or is dropped (the client went away).
        let _parked = self.shared.waits.try_acquire().map_err(|_| {
            debug!(takeover_id = %record.id, "wait refused: too many parked");
            TakeoverError::TooManyWaits
        })?;
        let mut done = record.done.subscribe();
        debug!(takeover_id = %record.id, max_wait_s = max_wait.as_secs(), "wait parked");
        let _ = tokio::time::timeout(max_wait, done.wait_for(Option::is_some)).await;
        Ok(record.snapshot(record.ended()))
    }

    /// How many `wait` calls are parked on this takeover (diagnostics, tests).
    pub fn waiters(&self, id: &str) -> usize {
        self.registry()
            .find(id)
            .map_or(0, |r| r.done.receiver_count())
    }

    /// Ends the takeover as completed (by the user, the platform, the condition).
    pub async fn complete(&self, id: &str, by: By) -> Result<TakeoverSnapshot, TakeoverError> {
        self.end(id, Outcome::Completed, Some(by)).await
    }

    /// Ends the takeover as cancelled (by the user, the platform, the agent).
    pub async fn cancel(&self, id: &str, by: By) -> Result<TakeoverSnapshot, TakeoverError> {
        self.end(id, Outcome::Cancelled, Some(by)).await
    }

    /// The daemon is shutting down: from here on `request` refuses (`ShuttingDown`), and
    /// the live takeover, if any, ends `cancelled` by `shutdown` (nothing failed: the
    /// sandbox is stopping). Both under one lock, so no takeover can become live after
    /// this has looked.
    pub async fn shutdown(&self) {
        let id = {
            let mut registry = self.registry();
            registry.closed = true;
            registry.live.as_ref().map(|l| l.record.id.clone())
        };
        if let Some(id) = id {
            let _ = self.end(&id, Outcome::Cancelled, Some(By::Shutdown)).await;
        }
    }

    /// Ends a live takeover; see the module docs for the order. A takeover that has
    /// already ended (or is ending) answers `Ended` with its outcome, once it is final.
    pub async fn end(
        &self,
        id: &str,
        outcome: Outcome,
        by: Option<By>,
    ) -> Result<TakeoverSnapshot, TakeoverError> {
        let started = tokio::time::Instant::now();
        // Step 1.
        let (record, slots) = {
            let mut registry = self.registry();
            let record = registry.find(id).cloned().ok_or(TakeoverError::NotFound)?;
            match registry.live.as_mut() {
                Some(live) if live.record.id == id && matches!(live.phase, Phase::Live) => {
                    live.phase = Phase::Ending((outcome, by));
                    live.tasks.cancel();
                    let mut slots: Vec<RelaySlot> = live.viewers.drain(..).collect();
                    slots.extend(live.control.take());
                    (record, Some(slots))
                }
                _ => (record, None),
            }
        };
        let Some(slots) = slots else {
            // Ended or ending: report the final outcome once it is final.
            let mut done = record.done.subscribe();
            let _ = done.wait_for(Option::is_some).await;
            return Err(TakeoverError::Ended(Box::new(
                record.snapshot(record.ended()),
            )));
        };
        // Steps 2 to 5 run on a task of their own. The caller may be dropped at any await
        // (an HTTP client that hangs up drops its handler), and an ending cut short there
        // would stay `Ending` for good: the timer and the watchers are cancelled already,
        // so nothing else would ever finish it.
        let (me, for_finish) = (self.clone(), record.clone());
        let finish = tokio::spawn(
            async move { me.finish(for_finish, slots, (outcome, by), started).await }
                .in_current_span(),
        );
        match finish.await {
            Ok(snapshot) => Ok(snapshot),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Cancelled: the runtime is shutting down under us.
            Err(error) => {
                warn!(takeover_id = %record.id, %error, "takeover ending interrupted");
                Ok(record.snapshot(record.ended()))
            }
        }
    }

    /// Steps 2 to 5 of an ending (see the module docs), after `end` has taken the relay
    /// slots out under the lock.
    async fn finish(
        &self,
        record: Arc<Record>,
        slots: Vec<RelaySlot>,
        (outcome, by): Ending,
        started: tokio::time::Instant,
    ) -> TakeoverSnapshot {
        // Step 2: cut every stream and wait until each relay task is over.
        let relays = slots.len();
        // `join_all` polls every shutdown once before waiting: all stops fire first.
        futures_util::future::join_all(
            slots
                .into_iter()
                .map(|s| s.shutdown(CLOSE_ENDED, outcome.as_str())),
        )
        .await;
        // Step 3.
        {
            let mut registry = self.registry();
            if registry
                .live
                .as_ref()
                .is_some_and(|l| l.record.id == record.id)
            {
                registry.live = None;
            }
            registry.ended.push_back(record.clone());
            while registry.ended.len() > self.shared.limits.remembered {
                registry.ended.pop_front();
            }
            // Step 4, under the lock of step 3: a subscriber that found this takeover
            // live (and was told of it) is also told it ended.
            self.shared.events.publish(PlatformEvent::TakeoverEnded {
                takeover_id: record.id.clone(),
                outcome: outcome.as_str().to_owned(),
                by: by.map(|b| b.as_str().to_owned()),
            });
            // Step 5, still under it: whoever read the event, or finds the takeover among
            // the ended ones, reads it ended with its outcome (`get`, `list`, a viewer's
            // session), never `live` with no outcome.
            record.done.send_replace(Some((outcome, by)));
        }
        info!(
            takeover_id = %record.id,
            outcome = outcome.as_str(),
            by = by.map(By::as_str),
            relays,
            stop_ms = started.elapsed().as_millis() as u64,
            "takeover ended"
        );
        record.snapshot(Some((outcome, by)))
    }
}
