//! The viewer's side of a takeover: its tokens checked (`authorize`), what the page
//! shows (`session`), and the relays the manager owns, attached one controller at a time
//! and up to the cap of view-only ones. Their stopping is step 2 of the ending order (the
//! parent module's docs).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use super::{Phase, TakeoverManager};
use crate::relay::{self, Access, ViewerSocket};
use crate::takeover::token;
use crate::takeover::{SessionInfo, State, TakeoverError, CLOSE_ENDED, CLOSE_REPLACED};

/// What a valid token grants on one live takeover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub takeover_id: String,
    pub access: Access,
}

/// One relay owned by the manager.
pub(super) struct RelaySlot {
    id: u64,
    stop: CancellationToken,
    /// The Close frame the relay sends when stopped; set just before `stop` fires.
    close: Arc<OnceLock<(u16, String)>>,
    task: JoinHandle<()>,
}

impl RelaySlot {
    fn stop(&self, code: u16, reason: &str) {
        let _ = self.close.set((code, reason.to_owned()));
        self.stop.cancel();
    }

    /// Stops the relay and waits until its task has ended.
    pub(super) async fn shutdown(self, code: u16, reason: &str) {
        self.stop(code, reason);
        if let Err(error) = self.task.await {
            warn!(relay = self.id, %error, "relay task failed");
        }
    }
}

/// A future that runs one relay given its stop token and close frame.
pub(crate) type RelayRun = Box<
    dyn FnOnce(
            CancellationToken,
            Arc<OnceLock<(u16, String)>>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send,
>;

impl TakeoverManager {
    /// Checks a viewer's token: a grant while the takeover is live; `Ended` for either
    /// token of an ended (or ending) takeover; `Unauthorized` otherwise (an unknown id
    /// included, so ids cannot be probed).
    pub fn authorize(&self, id: &str, token: &str) -> Result<Grant, TakeoverError> {
        if !token::well_formed(token) {
            return Err(TakeoverError::Unauthorized);
        }
        let registry = self.registry();
        let record = registry.find(id).ok_or(TakeoverError::Unauthorized)?;
        let access = record
            .hashes()
            .check(token)
            .ok_or(TakeoverError::Unauthorized)?;
        match &registry.live {
            Some(live) if live.record.id == id => match live.phase {
                Phase::Live => Ok(Grant {
                    takeover_id: id.to_owned(),
                    access,
                }),
                Phase::Ending(ending) => Err(TakeoverError::Ended(Box::new(
                    record.snapshot(Some(ending)),
                ))),
            },
            _ => Err(TakeoverError::Ended(Box::new(
                record.snapshot(record.ended()),
            ))),
        }
    }

    /// What the viewer page shows, for a token that `authorize` accepted.
    pub fn session(&self, grant: &Grant) -> Result<SessionInfo, TakeoverError> {
        let registry = self.registry();
        let record = registry
            .find(&grant.takeover_id)
            .ok_or(TakeoverError::Unauthorized)?;
        let ending = record.ended();
        Ok(SessionInfo {
            takeover_id: record.id.clone(),
            connection_id: record.connection_id.clone(),
            display_name: record.display_name.clone(),
            reason: record.reason.clone(),
            login_url: record.login_url.clone(),
            access: grant.access.into(),
            state: if ending.is_some() {
                State::Ended
            } else {
                State::Live
            },
            outcome: ending.map(|e| e.0),
            expires_at: record.expires_at,
        })
    }

    /// Refuses a new view-only viewer over the cap (checked before upgrading; `attach`
    /// checks again).
    pub fn check_viewer_capacity(&self, grant: &Grant) -> Result<(), TakeoverError> {
        if grant.access == Access::Control {
            return Ok(());
        }
        let registry = self.registry();
        match &registry.live {
            Some(live) if live.record.id == grant.takeover_id => {
                let running = live
                    .viewers
                    .iter()
                    .filter(|s| !s.task.is_finished())
                    .count();
                if running >= self.shared.limits.max_viewers {
                    return Err(TakeoverError::TooManyViewers);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Runs the relay for an upgraded WebSocket.
    pub(crate) async fn attach_websocket(&self, grant: Grant, socket: ViewerSocket) {
        let Some(browser) = self.shared.browser.clone() else {
            return;
        };
        let limits = self.shared.limits.relay.clone();
        let access = grant.access;
        // The socket is needed either by the relay or, if refused, for the close frame.
        let socket = Arc::new(Mutex::new(Some(socket)));
        let for_relay = socket.clone();
        let run: RelayRun = Box::new(move |stop, close| {
            Box::pin(async move {
                let Some(ws) = for_relay.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                    return;
                };
                // Read now: the VNC server may have moved after a desktop restart.
                let target = browser.vnc_target();
                let stop_close = move || {
                    close
                        .get()
                        .cloned()
                        .unwrap_or((CLOSE_ENDED, "stopped".to_owned()))
                };
                let _ =
                    relay::relay_with_stop_close(ws, &target, access, &limits, stop, stop_close)
                        .await;
            })
        });
        if let Err(refusal) = self.attach(grant, run) {
            let ws = socket.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(ws) = ws {
                let (code, reason) = refusal;
                ws.close(code, &reason, self.shared.limits.relay.close_timeout)
                    .await;
            }
        }
    }

    /// Registers and spawns a relay for `grant`. A controlling relay first stops and
    /// awaits the previous controlling one (a reload: one controller at a time). Refused
    /// with a close code and reason when the takeover is no longer live or is full.
    pub(crate) fn attach(&self, grant: Grant, run: RelayRun) -> Result<(), (u16, String)> {
        let mut registry = self.registry();
        let relay_id = registry.next_relay;
        registry.next_relay += 1;
        let live = match registry.live.as_mut() {
            Some(live) if live.record.id == grant.takeover_id => live,
            _ => {
                let outcome = registry
                    .find(&grant.takeover_id)
                    .and_then(|r| r.ended())
                    .map_or("ended", |e| e.0.as_str());
                return Err((CLOSE_ENDED, outcome.to_owned()));
            }
        };
        if let Phase::Ending((outcome, _)) = live.phase {
            return Err((CLOSE_ENDED, outcome.as_str().to_owned()));
        }
        let previous = match grant.access {
            Access::Control => live.control.take(),
            Access::ViewOnly => {
                live.viewers.retain(|s| !s.task.is_finished());
                if live.viewers.len() >= self.shared.limits.max_viewers {
                    return Err((1013, "too many viewers".to_owned()));
                }
                None
            }
        };
        let stop = CancellationToken::new();
        let close = Arc::new(OnceLock::new());
        let relay = run(stop.clone(), close.clone());
        let span = tracing::info_span!("takeover_relay", takeover_id = %grant.takeover_id, relay = relay_id, access = ?grant.access);
        let task = tokio::spawn(
            async move {
                if let Some(previous) = previous {
                    debug!(replaced = previous.id, "replacing the controlling viewer");
                    previous.shutdown(CLOSE_REPLACED, "replaced").await;
                }
                // If the takeover ended meanwhile, `stop` is cancelled and the relay
                // only sends its close frame.
                relay.await;
            }
            .instrument(span),
        );
        let slot = RelaySlot {
            id: relay_id,
            stop,
            close,
            task,
        };
        match grant.access {
            Access::Control => live.control = Some(slot),
            Access::ViewOnly => live.viewers.push(slot),
        }
        Ok(())
    }
}
