//! Takeover: the agent asks for a human to log in on the sandbox's browser.
//!
//! [`TakeoverManager`] is the one owner of takeover state (at most one live takeover):
//! request, wait, complete, cancel, time out, the success-condition watcher and the
//! browser-death watch. [`routes`] exposes it on three surfaces: the agent's socket,
//! the platform's control endpoint (bearer token) and the viewer (takeover tokens).
//!
//! Submodules: `manager` (the state machine and the ending order; `manager::viewers`, the
//! viewer's tokens, session and relays), `token` (token generation, hashing, constant-time
//! checks), `condition` (glob and cookie matching, the CDP poller), `browser` (the
//! [`Browser`] seam over `crate::desktop`), `routes` (HTTP).

mod browser;
#[cfg(test)]
mod browser_tests;
pub mod condition;
mod manager;
#[cfg(test)]
mod platform_tests;
pub mod routes;
#[cfg(test)]
mod shutdown_tests;
#[cfg(test)]
mod tests;
mod token;

use std::time::Duration;

use axum::http::StatusCode;
use serde::Serialize;

pub use browser::{Browser, BrowserError};
pub use condition::{normalise_cookie_domain, CookieCondition, Glob, SuccessCondition};
pub use manager::{Grant, TakeoverManager, TakeoverRequest, BRING_TO_FRONT_TIMEOUT};

use crate::relay::{Access, RelayLimits};

/// Limits and timings of takeovers. `Default` is production.
#[derive(Debug, Clone)]
pub struct TakeoverLimits {
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    /// `wait` without `timeout_seconds`, and its maximum.
    pub default_wait: Duration,
    pub max_wait: Duration,
    /// `wait` calls parked at once, on all takeovers (only one is ever live): more are
    /// refused with `too_many_waits`. Each parked wait holds a connection of the agent
    /// socket, and one whose client hung up may stay parked until its `timeout_seconds`
    /// (hyper stops watching for EOF while a request is handled with a pipelined one
    /// behind it); unbounded, such waits could hold every connection slot.
    pub max_waits: usize,
    /// View-only WebSockets at once per takeover (the controlling one is extra).
    pub max_viewers: usize,
    /// How often the success condition is checked over CDP.
    pub condition_poll: Duration,
    /// Ended takeovers remembered (for `wait`, `GET` and the viewer's ended page).
    pub remembered: usize,
    /// Token pairs valid at once per takeover: the first one and the most recent of those
    /// made for event subscribers that arrived while it was live (at least 2). Beyond, the
    /// oldest of those replayed pairs is retired (the first pair never is).
    pub max_token_pairs: usize,
    /// The most `GET /v1/browser` waits for a restarting browser before `503
    /// browser_unavailable` ([`browser_wait_within`] keeps it under the agent API's request
    /// deadline).
    pub browser_wait: Duration,
    pub relay: RelayLimits,
}

/// `GET /v1/browser`'s longest wait for a restarting browser: Chromium's first restart
/// takes its 0.5 s backoff and a start of 1 to 3 s on a loaded 2-core sandbox.
pub const BROWSER_WAIT: Duration = Duration::from_secs(5);

/// The browser wait for an agent API whose request deadline is `request_timeout`:
/// [`BROWSER_WAIT`], but at most half the deadline, so that the agent is told
/// `browser_unavailable` (retry) rather than a bare `request_timeout`.
pub fn browser_wait_within(request_timeout: Duration) -> Duration {
    BROWSER_WAIT.min(request_timeout / 2)
}

impl Default for TakeoverLimits {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(3600),
            default_wait: Duration::from_secs(60),
            max_wait: Duration::from_secs(600),
            max_waits: 16,
            max_viewers: 16,
            condition_poll: Duration::from_millis(200),
            remembered: 32,
            max_token_pairs: 16,
            browser_wait: BROWSER_WAIT,
            relay: RelayLimits::default(),
        }
    }
}

/// Request body limit of every takeover route.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// `reason` limit, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// `success.url_pattern` limit, in bytes.
pub const MAX_PATTERN_BYTES: usize = 2048;
/// `success.cookie.name` / `.domain` limit, in bytes.
pub const MAX_COOKIE_FIELD_BYTES: usize = 256;

/// WebSocket close code sent to viewers when the takeover ends (reason = the outcome).
pub const CLOSE_ENDED: u16 = 4000;
/// WebSocket close code sent to a controlling viewer replaced by a newer one (a reload).
pub const CLOSE_REPLACED: u16 = 4001;

/// How a takeover ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    Cancelled,
    TimedOut,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timed_out",
            Outcome::Failed => "failed",
        }
    }
}

/// Who ended a takeover (`completed` and `cancelled` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    User,
    Platform,
    Condition,
    Agent,
    /// The daemon stopping (a signal, the agent's exit): the takeover is cancelled.
    Shutdown,
}

impl By {
    pub fn as_str(self) -> &'static str {
        match self {
            By::User => "user",
            By::Platform => "platform",
            By::Condition => "condition",
            By::Agent => "agent",
            By::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Live,
    Ended,
}

/// What `POST /v1/takeovers` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TakeoverInfo {
    pub takeover_id: String,
    pub state: State,
    pub connection_id: String,
    pub expires_at: u64,
    pub viewer_url: String,
}

/// A takeover's state at one instant (no token, no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TakeoverSnapshot {
    pub takeover_id: String,
    pub state: State,
    pub connection_id: String,
    pub expires_at: u64,
    pub outcome: Option<Outcome>,
    pub by: Option<By>,
}

/// What the viewer's `session` route shows (no token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    pub takeover_id: String,
    pub connection_id: String,
    pub display_name: String,
    pub reason: String,
    pub login_url: Option<String>,
    pub access: AccessName,
    pub state: State,
    pub outcome: Option<Outcome>,
    pub expires_at: u64,
}

/// `access` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessName {
    Control,
    View,
}

impl From<Access> for AccessName {
    fn from(access: Access) -> Self {
        match access {
            Access::Control => AccessName::Control,
            Access::ViewOnly => AccessName::View,
        }
    }
}

/// Everything a takeover call can fail with. `code()`/`status()` are the one mapping to
/// the wire; `Display` and sources are for our log only.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("connection is not declared")]
    ConnectionNotFound,
    #[error("takeover is not valid for a {mode} connection")]
    InvalidAuthMode { mode: &'static str },
    #[error("this sandbox has no desktop")]
    SandboxNotDesktop,
    #[error("another takeover is live")]
    Conflict,
    #[error("bad request: {reason}")]
    BadRequest { reason: &'static str },
    #[error("request body over the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("the browser is unavailable")]
    BrowserUnavailable(#[source] Option<BrowserError>),
    /// The browser is restarting (or hung, about to be) and was not back within the wait.
    #[error("the browser did not come back within {after:?}")]
    BrowserRestarting { after: Duration },
    #[error("no such takeover")]
    NotFound,
    #[error("missing or wrong takeover token")]
    Unauthorized,
    #[error("this token may only view")]
    Forbidden,
    #[error("the takeover has ended")]
    Ended(Box<TakeoverSnapshot>),
    #[error("too many viewers")]
    TooManyViewers,
    #[error("too many waits")]
    TooManyWaits,
    #[error("peer may not use takeovers")]
    PeerForbidden,
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl TakeoverError {
    pub fn code(&self) -> &'static str {
        match self {
            TakeoverError::ConnectionNotFound => "connection_not_found",
            TakeoverError::InvalidAuthMode { .. } => "invalid_auth_mode",
            TakeoverError::SandboxNotDesktop => "sandbox_not_desktop",
            TakeoverError::Conflict => "takeover_conflict",
            TakeoverError::BadRequest { .. } => "bad_request",
            TakeoverError::PayloadTooLarge { .. } => "payload_too_large",
            TakeoverError::BrowserUnavailable(_) | TakeoverError::BrowserRestarting { .. } => {
                "browser_unavailable"
            }
            TakeoverError::NotFound => "takeover_not_found",
            TakeoverError::Unauthorized => "unauthorized",
            TakeoverError::Forbidden | TakeoverError::PeerForbidden => "forbidden",
            TakeoverError::Ended(_) => "takeover_ended",
            TakeoverError::TooManyViewers => "too_many_viewers",
            TakeoverError::TooManyWaits => "too_many_waits",
            TakeoverError::ShuttingDown => "shutting_down",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            TakeoverError::ConnectionNotFound | TakeoverError::NotFound => StatusCode::NOT_FOUND,
            TakeoverError::InvalidAuthMode { .. }
            | TakeoverError::SandboxNotDesktop
            | TakeoverError::Conflict => StatusCode::CONFLICT,
            TakeoverError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            TakeoverError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            TakeoverError::BrowserUnavailable(_)
            | TakeoverError::BrowserRestarting { .. }
            | TakeoverError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            TakeoverError::Unauthorized => StatusCode::UNAUTHORIZED,
            TakeoverError::Forbidden | TakeoverError::PeerForbidden => StatusCode::FORBIDDEN,
            TakeoverError::Ended(_) => StatusCode::GONE,
            TakeoverError::TooManyViewers | TakeoverError::TooManyWaits => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// Fixed text per code, never built from input or internal errors.
    pub fn public_message(&self) -> &'static str {
        match self {
            TakeoverError::ConnectionNotFound => {
                "no connection with this id is declared in grexal.json"
            }
            TakeoverError::InvalidAuthMode { .. } => {
                "takeovers are only for browser_login connections"
            }
            TakeoverError::SandboxNotDesktop => "this sandbox has no desktop",
            TakeoverError::Conflict => "another takeover is live; wait for it or cancel it",
            TakeoverError::BadRequest { .. } => "malformed request",
            TakeoverError::PayloadTooLarge { .. } => "request body too large",
            TakeoverError::BrowserUnavailable(_) => "the browser is not available",
            TakeoverError::BrowserRestarting { .. } => {
                "the browser is restarting; retry in a few seconds"
            }
            TakeoverError::NotFound => "no such takeover",
            TakeoverError::Unauthorized => "a valid takeover token is required",
            TakeoverError::Forbidden => "this token may only view the takeover",
            TakeoverError::PeerForbidden => "this process may not use takeovers",
            TakeoverError::Ended(_) => "the takeover has ended",
            TakeoverError::TooManyViewers => "too many viewers on this takeover",
            TakeoverError::TooManyWaits => "too many waits on takeovers at once",
            TakeoverError::ShuttingDown => "the sidecar is shutting down; no takeover was created",
        }
    }
}

/// The wire code and status for a takeover that ended with `outcome` (ended `by`), as
/// `wait` returns it (`None`: 200, no error).
pub fn outcome_error(
    outcome: Outcome,
    by: Option<By>,
) -> Option<(StatusCode, &'static str, &'static str)> {
    match outcome {
        Outcome::Completed => None,
        Outcome::TimedOut => Some((
            StatusCode::REQUEST_TIMEOUT,
            "takeover_timeout",
            "nobody completed the takeover in time",
        )),
        Outcome::Cancelled if by == Some(By::Shutdown) => Some((
            StatusCode::CONFLICT,
            "takeover_cancelled",
            "the takeover was cancelled: the sandbox is stopping",
        )),
        Outcome::Cancelled => Some((
            StatusCode::CONFLICT,
            "takeover_cancelled",
            "the takeover was cancelled",
        )),
        Outcome::Failed => Some((
            StatusCode::BAD_GATEWAY,
            "takeover_failed",
            "the browser failed during the takeover",
        )),
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    #[test]
    fn wire_table() {
        let snapshot = TakeoverSnapshot {
            takeover_id: "t".into(),
            state: State::Ended,
            connection_id: "c".into(),
            expires_at: 1,
            outcome: Some(Outcome::Completed),
            by: Some(By::User),
        };
        let cases: Vec<(TakeoverError, u16, &str)> = vec![
            (
                TakeoverError::ConnectionNotFound,
                404,
                "connection_not_found",
            ),
            (
                TakeoverError::InvalidAuthMode {
                    mode: "secret_input",
                },
                409,
                "invalid_auth_mode",
            ),
            (TakeoverError::SandboxNotDesktop, 409, "sandbox_not_desktop"),
            (TakeoverError::Conflict, 409, "takeover_conflict"),
            (
                TakeoverError::BadRequest { reason: "x" },
                400,
                "bad_request",
            ),
            (
                TakeoverError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                TakeoverError::BrowserUnavailable(None),
                503,
                "browser_unavailable",
            ),
            (
                TakeoverError::BrowserRestarting {
                    after: Duration::from_secs(5),
                },
                503,
                "browser_unavailable",
            ),
            (TakeoverError::NotFound, 404, "takeover_not_found"),
            (TakeoverError::Unauthorized, 401, "unauthorized"),
            (TakeoverError::Forbidden, 403, "forbidden"),
            (TakeoverError::PeerForbidden, 403, "forbidden"),
            (
                TakeoverError::Ended(Box::new(snapshot)),
                410,
                "takeover_ended",
            ),
            (TakeoverError::TooManyViewers, 429, "too_many_viewers"),
            (TakeoverError::TooManyWaits, 429, "too_many_waits"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{code}");
            assert_eq!(error.code(), code);
            assert!(!error.public_message().is_empty());
        }
        let outcomes = [
            (Outcome::Completed, Some(By::User), None),
            (Outcome::TimedOut, None, Some((408, "takeover_timeout"))),
            (
                Outcome::Cancelled,
                Some(By::User),
                Some((409, "takeover_cancelled")),
            ),
            (
                Outcome::Cancelled,
                Some(By::Shutdown),
                Some((409, "takeover_cancelled")),
            ),
            (Outcome::Failed, None, Some((502, "takeover_failed"))),
        ];
        for (outcome, by, want) in outcomes {
            let got = outcome_error(outcome, by).map(|(s, c, _)| (s.as_u16(), c));
            assert_eq!(got, want, "{outcome:?} by {by:?}");
        }
        let message = |by| outcome_error(Outcome::Cancelled, Some(by)).map(|(_, _, m)| m);
        assert_eq!(
            message(By::Shutdown),
            Some("the takeover was cancelled: the sandbox is stopping")
        );
        assert_eq!(message(By::Agent), Some("the takeover was cancelled"));
        assert_eq!(serde_json::to_value(By::Shutdown).unwrap(), "shutdown");
    }
}
