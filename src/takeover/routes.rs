//! The takeover's HTTP routes, on three surfaces:
//!
//! - [`agent_routes`] and [`agent_wait_routes`]: merged into the agent socket's router,
//!   the first under its whole-request deadline, the second (`wait`, a long poll) under a
//!   deadline for reading the request only. Callers are authorized by SO_PEERCRED with
//!   the agent API's [`Policy`] (agent uid, root, the daemon's uid).
//! - [`control_routes`]: merged into the control endpoint's router, *behind* its bearer
//!   middleware (these handlers do no authentication of their own).
//! - [`viewer_routes`]: merged into the same TCP listener's router *outside* the bearer
//!   middleware; authenticated by the takeover's own tokens.
//!
//! Every handler: a span, authorization, one manager call, errors through
//! [`TakeoverError`]'s one mapping. No body, token or cookie is ever logged.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::manager::TakeoverRequest;
use super::{
    normalise_cookie_domain, outcome_error, By, CookieCondition, Glob, Outcome, SuccessCondition,
    TakeoverError, TakeoverManager, TakeoverSnapshot, MAX_BODY_BYTES, MAX_COOKIE_FIELD_BYTES,
    MAX_PATTERN_BYTES, MAX_REASON_CHARS,
};
use crate::api::{Peer, Policy};
use crate::relay;

/// Longest path id looked up; real ids are 22 characters.
const MAX_ID_BYTES: usize = 64;

#[derive(Clone)]
struct AgentState {
    manager: TakeoverManager,
    policy: Policy,
}

/// `POST /v1/takeovers`, `GET /v1/takeovers/{id}`, `POST /v1/takeovers/{id}/cancel`,
/// `GET /v1/browser`: answered at once or after a bounded wait (`BRING_TO_FRONT_TIMEOUT`,
/// `TakeoverLimits::browser_wait`), so the whole request fits a deadline.
pub fn agent_routes<S: Clone + Send + Sync + 'static>(
    manager: TakeoverManager,
    policy: Policy,
) -> Router<S> {
    Router::new()
        .route("/v1/takeovers", post(agent_request))
        .route("/v1/takeovers/{id}", get(agent_get))
        .route("/v1/takeovers/{id}/cancel", post(agent_cancel))
        .route("/v1/browser", get(agent_browser))
        .with_state(AgentState { manager, policy })
}

/// `GET /v1/takeovers/{id}/wait`: a long poll, answered when the takeover ends or the
/// wait's own timeout passes.
pub fn agent_wait_routes<S: Clone + Send + Sync + 'static>(
    manager: TakeoverManager,
    policy: Policy,
) -> Router<S> {
    Router::new()
        .route("/v1/takeovers/{id}/wait", get(agent_wait))
        .with_state(AgentState { manager, policy })
}

/// `GET /v1/takeovers` and `GET /v1/takeovers/{id}` (the state, never a token), `POST
/// /v1/takeovers/{id}/complete` and `/cancel` (`by: "platform"`) for the platform. Mount
/// behind the control endpoint's bearer check.
pub fn control_routes<S: Clone + Send + Sync + 'static>(manager: TakeoverManager) -> Router<S> {
    Router::new()
        .route("/v1/takeovers", get(platform_list))
        .route("/v1/takeovers/{id}", get(platform_get))
        .route("/v1/takeovers/{id}/complete", post(platform_complete))
        .route("/v1/takeovers/{id}/cancel", post(platform_cancel))
        .with_state(manager)
}

/// `GET /takeover/{id}/session`, `POST /takeover/{id}/complete`, `POST
/// /takeover/{id}/cancel`, `GET /takeover/{id}/websocket`. Mount outside the bearer
/// check; the page itself and noVNC's files come from `crate::viewer`.
pub fn viewer_routes<S: Clone + Send + Sync + 'static>(manager: TakeoverManager) -> Router<S> {
    Router::new()
        .route("/takeover/{id}/session", get(viewer_session))
        .route("/takeover/{id}/complete", post(viewer_complete))
        .route("/takeover/{id}/cancel", post(viewer_cancel))
        .route("/takeover/{id}/websocket", get(viewer_websocket))
        .with_state(manager)
}

impl IntoResponse for TakeoverError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let TakeoverError::BrowserUnavailable(Some(cause)) = &self {
            tracing::warn!(error = %crate::api::error::error_chain(cause), "browser unavailable");
        }
        // `reason` names the field at fault (a fixed text, never the request's).
        let reason = match &self {
            TakeoverError::BadRequest { reason } => Some(*reason),
            _ => None,
        };
        tracing::debug!(
            code = self.code(),
            status = status.as_u16(),
            reason,
            "takeover request refused"
        );
        let mut body =
            serde_json::json!({"error": {"code": self.code(), "message": self.public_message()}});
        if let TakeoverError::Ended(snapshot) = &self {
            body["outcome"] = serde_json::json!(snapshot.outcome);
            body["takeover"] = serde_json::json!(snapshot);
        }
        let mut response = json_response(status, &body);
        if let TakeoverError::BrowserRestarting { .. } = &self {
            // Chromium is mid-restart: a second or two more, usually.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut response = (status, Json(body)).into_response();
    // Session data and outcomes are per-token: never cached by a browser or proxy.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A takeover's state as `wait` reports it: 200 unless it ended other than completed.
fn outcome_response(snapshot: TakeoverSnapshot) -> Response {
    match snapshot
        .outcome
        .and_then(|outcome| outcome_error(outcome, snapshot.by))
    {
        None => json_response(StatusCode::OK, &snapshot),
        Some((status, code, message)) => {
            let body = serde_json::json!({"error": {"code": code, "message": message}, "takeover": snapshot});
            json_response(status, &body)
        }
    }
}

fn path_id(
    id: Result<Path<String>, PathRejection>,
    unknown: TakeoverError,
) -> Result<String, TakeoverError> {
    match id {
        Ok(Path(id)) if id.len() <= MAX_ID_BYTES => Ok(id),
        _ => Err(unknown),
    }
}

fn authorize_peer(state: &AgentState, peer: Option<&Peer>) -> Result<(), TakeoverError> {
    state
        .policy
        .authorize_credentials(peer)
        .map_err(|_| TakeoverError::PeerForbidden)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    connection_id: String,
    reason: String,
    timeout_seconds: Option<u64>,
    success: Option<SuccessBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuccessBody {
    url_pattern: Option<String>,
    cookie: Option<CookieBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CookieBody {
    name: String,
    domain: String,
}

impl RequestBody {
    fn validate(self, max_timeout: Duration) -> Result<TakeoverRequest, TakeoverError> {
        let bad = |reason| TakeoverError::BadRequest { reason };
        if self.reason.chars().count() > MAX_REASON_CHARS {
            return Err(bad("reason"));
        }
        if self.connection_id.len() > MAX_ID_BYTES {
            return Err(TakeoverError::ConnectionNotFound);
        }
        let timeout = match self.timeout_seconds {
            None => None,
            Some(s) if s >= 1 && s <= max_timeout.as_secs() => Some(Duration::from_secs(s)),
            Some(_) => return Err(bad("timeout_seconds")),
        };
        let success = match self.success {
            None => None,
            Some(SuccessBody {
                url_pattern: None,
                cookie: None,
            }) => return Err(bad("success")),
            Some(SuccessBody {
                url_pattern,
                cookie,
            }) => {
                // Brought to the form Chromium reports (lowercase, punycode), or refused
                // when they could never match it (`condition::matching`).
                let url_pattern = match url_pattern {
                    Some(p) if p.is_empty() || p.len() > MAX_PATTERN_BYTES => {
                        return Err(bad("url_pattern"))
                    }
                    Some(p) => Some(Glob::parse(&p).map_err(|_| bad("url_pattern"))?),
                    None => None,
                };
                let cookie = match cookie {
                    Some(c)
                        if [&c.name, &c.domain]
                            .iter()
                            .any(|f| f.is_empty() || f.len() > MAX_COOKIE_FIELD_BYTES) =>
                    {
                        return Err(bad("cookie"))
                    }
                    Some(c) => Some(CookieCondition {
                        domain: normalise_cookie_domain(&c.domain)
                            .map_err(|_| bad("cookie.domain"))?,
                        name: c.name,
                    }),
                    None => None,
                };
                Some(SuccessCondition {
                    url_pattern,
                    cookie,
                })
            }
        };
        Ok(TakeoverRequest {
            connection_id: self.connection_id,
            reason: self.reason,
            timeout,
            success,
        })
    }
}

async fn read_body(body: Body) -> Result<RequestBody, TakeoverError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                TakeoverError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                TakeoverError::BadRequest { reason: "body" }
            }
        })?;
    serde_json::from_slice(&bytes).map_err(|_| TakeoverError::BadRequest { reason: "json" })
}

#[tracing::instrument(level = "debug", name = "takeover_request", skip_all)]
async fn agent_request(
    State(state): State<AgentState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TakeoverError> {
    authorize_peer(&state, peer.as_deref())?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(TakeoverError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let request = read_body(body)
        .await?
        .validate(state.manager.limits().max_timeout)?;
    let info = state.manager.request(request).await?;
    Ok(json_response(StatusCode::CREATED, &info))
}

#[tracing::instrument(level = "debug", name = "takeover_get", skip_all)]
async fn agent_get(
    State(state): State<AgentState>,
    peer: Option<Extension<Peer>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, TakeoverError> {
    authorize_peer(&state, peer.as_deref())?;
    let id = path_id(id, TakeoverError::NotFound)?;
    Ok(json_response(StatusCode::OK, &state.manager.get(&id)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    timeout_seconds: Option<u64>,
}

#[tracing::instrument(level = "debug", name = "takeover_wait", skip_all)]
async fn agent_wait(
    State(state): State<AgentState>,
    peer: Option<Extension<Peer>>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, TakeoverError> {
    authorize_peer(&state, peer.as_deref())?;
    let id = path_id(id, TakeoverError::NotFound)?;
    let Ok(Query(query)) = query else {
        return Err(TakeoverError::BadRequest { reason: "query" });
    };
    let limits = state.manager.limits();
    let max_wait = match query.timeout_seconds {
        None => limits.default_wait,
        Some(s) if s <= limits.max_wait.as_secs() => Duration::from_secs(s),
        Some(_) => {
            return Err(TakeoverError::BadRequest {
                reason: "timeout_seconds",
            })
        }
    };
    Ok(outcome_response(state.manager.wait(&id, max_wait).await?))
}

#[tracing::instrument(level = "debug", name = "takeover_cancel", skip_all)]
async fn agent_cancel(
    State(state): State<AgentState>,
    peer: Option<Extension<Peer>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, TakeoverError> {
    authorize_peer(&state, peer.as_deref())?;
    let id = path_id(id, TakeoverError::NotFound)?;
    // The request deadline (or the client going away) may drop this handler mid-ending;
    // the manager runs each ending on a task of its own, so it still finishes.
    Ok(json_response(
        StatusCode::OK,
        &state.manager.cancel(&id, By::Agent).await?,
    ))
}

#[derive(Serialize)]
struct BrowserInfo {
    cdp_http_url: String,
    cdp_ws_url: String,
}

#[tracing::instrument(level = "debug", name = "browser", skip_all)]
async fn agent_browser(
    State(state): State<AgentState>,
    peer: Option<Extension<Peer>>,
) -> Result<Response, TakeoverError> {
    authorize_peer(&state, peer.as_deref())?;
    let cdp = state.manager.browser_endpoint().await?;
    Ok(json_response(
        StatusCode::OK,
        &BrowserInfo {
            cdp_http_url: cdp.http_url,
            cdp_ws_url: cdp.ws_url,
        },
    ))
}

#[derive(Serialize)]
struct TakeoverList {
    takeovers: Vec<TakeoverSnapshot>,
}

#[tracing::instrument(level = "debug", name = "platform_list", skip_all)]
async fn platform_list(State(manager): State<TakeoverManager>) -> Response {
    json_response(
        StatusCode::OK,
        &TakeoverList {
            takeovers: manager.list(),
        },
    )
}

#[tracing::instrument(level = "debug", name = "platform_get", skip_all)]
async fn platform_get(
    State(manager): State<TakeoverManager>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, TakeoverError> {
    let id = path_id(id, TakeoverError::NotFound)?;
    Ok(json_response(StatusCode::OK, &manager.get(&id)?))
}

#[tracing::instrument(level = "debug", name = "platform_complete", skip_all)]
async fn platform_complete(
    State(manager): State<TakeoverManager>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, TakeoverError> {
    let id = path_id(id, TakeoverError::NotFound)?;
    Ok(json_response(
        StatusCode::OK,
        &manager.complete(&id, By::Platform).await?,
    ))
}

#[tracing::instrument(level = "debug", name = "platform_cancel", skip_all)]
async fn platform_cancel(
    State(manager): State<TakeoverManager>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, TakeoverError> {
    let id = path_id(id, TakeoverError::NotFound)?;
    Ok(json_response(
        StatusCode::OK,
        &manager.cancel(&id, By::Platform).await?,
    ))
}

/// The token from `Authorization: Bearer <token>` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Result<&str, TakeoverError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(TakeoverError::Unauthorized);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| crate::platform::control::bearer_credentials(v.as_bytes()))
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or(TakeoverError::Unauthorized)
}

#[tracing::instrument(level = "debug", name = "viewer_session", skip_all)]
async fn viewer_session(
    State(manager): State<TakeoverManager>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, TakeoverError> {
    let id = path_id(id, TakeoverError::Unauthorized)?;
    let grant = manager.authorize(&id, bearer(&headers)?)?;
    Ok(json_response(StatusCode::OK, &manager.session(&grant)?))
}

#[derive(Serialize)]
struct EndedBody {
    takeover_id: String,
    state: super::State,
    outcome: Option<Outcome>,
    by: Option<By>,
}

async fn viewer_end(
    manager: TakeoverManager,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    outcome: Outcome,
) -> Result<Response, TakeoverError> {
    let id = path_id(id, TakeoverError::Unauthorized)?;
    let grant = manager.authorize(&id, bearer(&headers)?)?;
    if grant.access != relay::Access::Control {
        return Err(TakeoverError::Forbidden);
    }
    let snapshot = manager.end(&id, outcome, Some(By::User)).await?;
    let body = EndedBody {
        takeover_id: snapshot.takeover_id,
        state: snapshot.state,
        outcome: snapshot.outcome,
        by: snapshot.by,
    };
    Ok(json_response(StatusCode::OK, &body))
}

#[tracing::instrument(level = "debug", name = "viewer_complete", skip_all)]
async fn viewer_complete(
    State(manager): State<TakeoverManager>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, TakeoverError> {
    viewer_end(manager, id, headers, Outcome::Completed).await
}

#[tracing::instrument(level = "debug", name = "viewer_cancel", skip_all)]
async fn viewer_cancel(
    State(manager): State<TakeoverManager>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, TakeoverError> {
    viewer_end(manager, id, headers, Outcome::Cancelled).await
}

/// Authorizes from `Sec-WebSocket-Protocol: binary, grexal.v1.<token>` BEFORE upgrading:
/// a refused viewer gets a JSON error and no upgrade, so not one RFB byte.
#[tracing::instrument(level = "debug", name = "viewer_websocket", skip_all)]
async fn viewer_websocket(
    State(manager): State<TakeoverManager>,
    id: Result<Path<String>, PathRejection>,
    mut request: axum::extract::Request,
) -> Result<Response, TakeoverError> {
    let id = path_id(id, TakeoverError::Unauthorized)?;
    let token =
        relay::token_from_protocols(request.headers()).ok_or(TakeoverError::Unauthorized)?;
    // A browser cannot read a refused handshake's status anyway; the page learns that
    // the takeover ended from `session` (410). Here every refusal is the same 401.
    let grant = manager
        .authorize(&id, &token)
        .map_err(|error| match error {
            TakeoverError::Ended(_) => TakeoverError::Unauthorized,
            other => other,
        })?;
    let (response, pending) =
        relay::accept_viewer(&mut request).map_err(|_| TakeoverError::BadRequest {
            reason: "websocket upgrade",
        })?;
    manager.check_viewer_capacity(&grant)?;
    tracing::debug!(access = ?grant.access, "viewer connected");
    let send_buffer = manager.limits().relay.viewer_send_buffer;
    tokio::spawn(async move {
        match pending.socket(send_buffer).await {
            Ok(socket) => manager.attach_websocket(grant, socket).await,
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> Result<TakeoverRequest, TakeoverError> {
        let parsed: RequestBody = serde_json::from_value(json)
            .map_err(|_| TakeoverError::BadRequest { reason: "json" })?;
        parsed.validate(Duration::from_secs(3600))
    }

    #[test]
    fn request_body_table() {
        use serde_json::json;
        let long_reason = "é".repeat(MAX_REASON_CHARS + 1);
        let ok_reason = "é".repeat(MAX_REASON_CHARS);
        let long_pattern = "a".repeat(MAX_PATTERN_BYTES + 1);
        let cases: Vec<(serde_json::Value, Result<(), &str>)> = vec![
            (json!({"connection_id": "c", "reason": "r"}), Ok(())),
            (json!({"connection_id": "c", "reason": ok_reason}), Ok(())),
            (
                json!({"connection_id": "c", "reason": long_reason}),
                Err("bad_request"),
            ),
            (json!({"connection_id": "c"}), Err("bad_request")),
            (
                json!({"connection_id": "c", "reason": "r", "extra": 1}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "timeout_seconds": 0}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "timeout_seconds": 1}),
                Ok(()),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "timeout_seconds": 3600}),
                Ok(()),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "timeout_seconds": 3601}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "timeout_seconds": -1}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "success": {}}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "success": {"url_pattern": "https://x/*"}}),
                Ok(()),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "success": {"url_pattern": ""}}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "success": {"url_pattern": long_pattern}}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "success": {"cookie": {"name": "s", "domain": "x.com"}}}),
                Ok(()),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "success": {"cookie": {"name": "", "domain": "x.com"}}}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "success": {"cookie": {"name": "s"}}}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "success": {"cookie": {"name": "s", "domain": "x", "path": "/"}}}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "c", "reason": "r", "success": {"url_pattern": "*", "x": 1}}),
                Err("bad_request"),
            ),
            (
                json!({"connection_id": "x".repeat(65), "reason": "r"}),
                Err("connection_not_found"),
            ),
        ];
        for (input, want) in cases {
            let got = body(input.clone()).map(|_| ()).map_err(|e| e.code());
            assert_eq!(got, want, "{input}");
        }
    }

    /// What Chromium reports is lowercase and punycode: the API brings a pattern's scheme
    /// and host, and a cookie's domain, to that form, and refuses a domain that could never
    /// be a cookie's, naming the field.
    #[test]
    fn patterns_and_cookie_domains_take_chromiums_form() {
        use serde_json::json;
        let ok = body(json!({"connection_id": "c", "reason": "r", "success": {
            "url_pattern": "HTTPS://Bücher.Example/Konto*",
            "cookie": {"name": "Session", "domain": ".Bücher.example"}}}))
        .expect("accepted");
        let success = ok.success.expect("condition");
        let glob = success.url_pattern.expect("pattern");
        assert!(glob.matches("https://xn--bcher-kva.example/Konto/1"));
        assert!(
            !glob.matches("https://xn--bcher-kva.example/konto/1"),
            "the path stays as written"
        );
        let cookie = success.cookie.expect("cookie");
        assert_eq!(
            (cookie.name.as_str(), cookie.domain.as_str()),
            ("Session", "xn--bcher-kva.example")
        );
        assert!(cookie.matches("Session", ".xn--bcher-kva.example"));

        for domain in [
            "https://bank.example",
            "bank.example/",
            "bank.example:443",
            "bank example",
            "bank.example\n",
            ".",
            "..",
            "*.bank.example",
        ] {
            let got = body(json!({"connection_id": "c", "reason": "r",
                "success": {"cookie": {"name": "s", "domain": domain}}}));
            assert!(
                matches!(
                    got,
                    Err(TakeoverError::BadRequest {
                        reason: "cookie.domain"
                    })
                ),
                "{domain:?}: {got:?}"
            );
        }
        let got = body(json!({"connection_id": "c", "reason": "r",
            "success": {"url_pattern": "https://bü*.example/*"}}));
        assert!(
            matches!(
                got,
                Err(TakeoverError::BadRequest {
                    reason: "url_pattern"
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn bearer_table() {
        let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
            (vec![], None),
            (vec!["Bearer abc"], Some("abc")),
            (vec!["Basic abc"], None),
            // The scheme is case-insensitive (RFC 9110 §11.1).
            (vec!["bearer abc"], Some("abc")),
            (vec!["BEARER abc"], Some("abc")),
            (vec!["bEaReR  abc "], Some("abc")),
            (vec!["Bearerabc"], None),
            (vec!["Bearers abc"], None),
            (vec!["Bearer a", "Bearer b"], None),
        ];
        for (values, want) in cases {
            let mut headers = HeaderMap::new();
            for v in &values {
                headers.append(header::AUTHORIZATION, v.parse().unwrap());
            }
            assert_eq!(bearer(&headers).ok(), want, "{values:?}");
        }
    }
}
