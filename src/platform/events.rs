//! Events for the platform, fanned out to every subscriber of the control endpoint's
//! server-sent-event stream. A slow subscriber lags and is told so; it never blocks the
//! daemon.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it is told it lagged.
pub const EVENT_BUFFER: usize = 256;

/// A takeover token carried by an event: serialized as its value (the stream that carries
/// it requires the bearer token), `[REDACTED]` when debug-printed, zeroized on drop.
#[derive(Clone)]
pub struct EventToken(crate::secret::SecretString);

impl EventToken {
    pub fn new(token: &crate::secret::SecretString) -> Self {
        Self(token.clone())
    }

    pub fn expose(&self) -> &str {
        crate::secret::ExposeSecret::expose_secret(&self.0)
    }
}

impl std::fmt::Debug for EventToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl PartialEq for EventToken {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Serialize for EventToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

/// One event. Serialized as `{"type": "...", ...}`; `type` is also the SSE event name.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PlatformEvent {
    /// Credentials of this version are in place.
    CredentialsInstalled { version: u64 },
    /// The agent asked for a human. Tokens are present only on the control endpoint's
    /// stream, which requires the bearer token.
    TakeoverRequested {
        takeover_id: String,
        connection_id: String,
        display_name: String,
        reason: String,
        login_url: Option<String>,
        viewer_url: String,
        control_token: EventToken,
        view_token: EventToken,
        expires_at: u64,
    },
    TakeoverEnded {
        takeover_id: String,
        outcome: String,
        by: Option<String>,
    },
    /// A desktop child (display, vnc, browser) exited and was restarted.
    BrowserRestarted {
        child: String,
        restarts: u32,
        reason: String,
    },
    /// A desktop child could not be brought back.
    DesktopFailed { child: String, reason: String },
    /// The agent exited (`error: None`), or could not be started or waited for: then
    /// `code` is the daemon's own exit code (127, 126, 78, 71, ...) and `error` says why.
    AgentExited {
        code: i32,
        error: Option<EventError>,
    },
}

/// Why something the event reports failed: a stable code and a fixed message, never built
/// from input (a command line, a user name) or an internal error.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventError {
    pub code: &'static str,
    pub message: &'static str,
}

impl PlatformEvent {
    pub fn name(&self) -> &'static str {
        match self {
            PlatformEvent::CredentialsInstalled { .. } => "credentials_installed",
            PlatformEvent::TakeoverRequested { .. } => "takeover_requested",
            PlatformEvent::TakeoverEnded { .. } => "takeover_ended",
            PlatformEvent::BrowserRestarted { .. } => "browser_restarted",
            PlatformEvent::DesktopFailed { .. } => "desktop_failed",
            PlatformEvent::AgentExited { .. } => "agent_exited",
        }
    }
}

/// A cheap, cloneable handle to publish events.
#[derive(Clone, Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<PlatformEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        Self { sender }
    }

    /// Publishes to current subscribers; with none, the event is dropped.
    pub fn publish(&self, event: PlatformEvent) {
        tracing::debug!(event = event.name(), "platform event");
        let _ = self.sender.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PlatformEvent>> {
        self.sender.subscribe()
    }

    /// Whether both handles publish to the same subscribers.
    pub fn same_bus(&self, other: &EventBus) -> bool {
        self.sender.same_channel(&other.sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_serialized_for_the_stream_and_redacted_in_debug() {
        let token = |value: &str| EventToken::new(&crate::secret::SecretString::from(value));
        let event = PlatformEvent::TakeoverRequested {
            takeover_id: "t1".into(),
            connection_id: "site".into(),
            display_name: "Site".into(),
            reason: "log in".into(),
            login_url: None,
            viewer_url: "https://sbx.example/takeover/t1".into(),
            control_token: token("CANARY-control-token"),
            view_token: token("CANARY-view-token"),
            expires_at: 1,
        };
        let debug = format!("{event:?}");
        assert!(!debug.contains("CANARY"), "{debug}");
        assert!(debug.contains("[REDACTED]"), "{debug}");
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(json["control_token"], "CANARY-control-token");
        assert_eq!(json["view_token"], "CANARY-view-token");
        assert_eq!(json["type"], "takeover_requested");
    }

    #[test]
    fn agent_exited_carries_an_error_only_when_the_agent_did_not_run() {
        let ran = PlatformEvent::AgentExited {
            code: 3,
            error: None,
        };
        assert_eq!(
            serde_json::to_value(&ran).unwrap(),
            serde_json::json!({"type": "agent_exited", "code": 3, "error": null})
        );
        let not_run = PlatformEvent::AgentExited {
            code: 127,
            error: Some(EventError {
                code: "agent_not_found",
                message: "the agent's command was not found",
            }),
        };
        assert_eq!(
            serde_json::to_value(&not_run).unwrap(),
            serde_json::json!({"type": "agent_exited", "code": 127, "error":
                {"code": "agent_not_found", "message": "the agent's command was not found"}})
        );
    }
}
